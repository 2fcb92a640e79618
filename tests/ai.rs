//! The AI gateway end to end: `ai` routes in front of local providers that speak OpenAI's,
//! Azure's and Anthropic's protocols over real HTTP on 127.0.0.1 (tests/support/ai_providers.rs).
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use support::ai_providers::{gated, Provider, Script};
use support::*;

/// A gateway whose route at `/v1/` has the `ai` block `ai` (indented under `ai:`); `top`
/// goes before `routes:`.
fn gateway(top: &str, ai: &str) -> TestGateway {
    let yaml = format!(
        "workers: 1\nlisteners: [{{address: 127.0.0.1:0}}]\nadmin: {{address: 127.0.0.1:0}}\n{top}routes:\n  - name: llm\n    match: {{path: {{prefix: /v1/}}}}\n    ai:\n{ai}"
    );
    TestGateway::start(&yaml)
}

/// An `ai` block with one OpenAI-compatible provider `p` at `url` and alias `fast` → `tiny`.
fn one_provider(url: &str) -> String {
    format!(
        "      providers: {{p: {{kind: openai, url: '{url}/v1'}}}}\n      models: {{fast: {{targets: [{{provider: p, model: tiny}}]}}}}\n"
    )
}

async fn post(
    addr: std::net::SocketAddr,
    path: &str,
    body: &Value,
    fields: &[(&str, &str)],
) -> Got {
    let mut req = Request::post(path)
        .header("host", "a")
        .header("content-type", "application/json");
    for (n, v) in fields {
        req = req.header(*n, *v);
    }
    send(
        addr,
        req.body(Full::new(Bytes::from(body.to_string()))).unwrap(),
    )
    .await
}

fn chat(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say hello"}]})
}

fn json_of(got: &Got) -> Value {
    serde_json::from_slice(&got.body).unwrap_or_else(|_| panic!("not JSON: {}", got.text()))
}

/// The `data:` payloads of an event stream.
fn events(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

async fn metrics(gw: &TestGateway) -> String {
    get(gw.admin.unwrap(), "admin", "/metrics").await.text()
}

/// The value of the first metrics line that starts with `name{` and has every label.
fn metric(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| labels.iter().all(|x| l.contains(x)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn a_chat_completion_passes_through_with_the_provider_model_and_exact_usage() {
    let p = Provider::start(Script::OpenAi).await;
    let priced = format!(
        "{}      prices: {{tiny: {{input: 1.0, output: 2.0}}}}\n",
        one_provider(&p.url())
    );
    let gw = gateway("", &priced);
    let got = post(gw.addr, "/v1/chat/completions", &chat("fast", false), &[]).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text());
    let v = json_of(&got);
    assert_eq!(v["choices"][0]["message"]["content"], "Hello there!");
    assert_eq!(v["usage"]["prompt_tokens"], 11);
    let seen = p.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path_and_query, "/v1/chat/completions");
    assert_eq!(seen[0].body["model"], "tiny");
    assert!(
        seen[0].headers.get("authorization").is_none(),
        "no key configured"
    );
    let m = metrics(&gw).await;
    let tokens = "ferrogate_ai_tokens_total";
    let exact = [
        "provider=\"p\"",
        "model=\"tiny\"",
        "alias=\"fast\"",
        "estimated=\"false\"",
    ];
    let input = [&exact[..], &["direction=\"input\""]].concat();
    let output = [&exact[..], &["direction=\"output\""]].concat();
    assert_eq!(metric(&m, tokens, &input), Some(11.0), "{m}");
    assert_eq!(metric(&m, tokens, &output), Some(3.0), "{m}");
    // 11 input tokens at 1.0 and 3 output tokens at 2.0 per million.
    let cost = metric(&m, "ferrogate_ai_cost_total", &exact[..3]).unwrap();
    assert!((cost - 17e-6).abs() < 1e-12, "{m}");
    assert!(
        m.contains(
            "ferrogate_ai_time_to_first_token_seconds_count{provider=\"p\",model=\"tiny\"} 1"
        ),
        "{m}"
    );
}

#[tokio::test]
async fn a_stream_is_relayed_with_usage_asked_for_and_its_usage_chunk_hidden() {
    let p = Provider::start(Script::OpenAi).await;
    let gw = gateway("", &one_provider(&p.url()));
    let got = post(gw.addr, "/v1/chat/completions", &chat("fast", true), &[]).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.header("content-type"), Some("text/event-stream"));
    let ev = events(&got.text());
    assert_eq!(ev.last().map(String::as_str), Some("[DONE]"));
    let text: String = ev
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(text, "Hello there!");
    assert!(
        !got.text().contains("\"usage\""),
        "the client did not ask: {}",
        got.text()
    );
    assert_eq!(
        p.requests()[0].body["stream_options"]["include_usage"],
        true
    );
    let m = metrics(&gw).await;
    let labels = ["direction=\"output\"", "estimated=\"false\""];
    assert_eq!(
        metric(&m, "ferrogate_ai_tokens_total", &labels),
        Some(3.0),
        "{m}"
    );
}

#[tokio::test]
async fn a_client_that_asks_for_usage_gets_the_usage_chunk() {
    let p = Provider::start(Script::OpenAi).await;
    let gw = gateway("", &one_provider(&p.url()));
    let mut body = chat("fast", true);
    body["stream_options"] = json!({"include_usage": true});
    let got = post(gw.addr, "/v1/chat/completions", &body, &[]).await;
    let usage: Vec<Value> = events(&got.text())
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter(|c| c["usage"].is_object())
        .collect();
    assert_eq!(usage.len(), 1, "{}", got.text());
    assert_eq!(usage[0]["usage"]["completion_tokens"], 3);
}

#[tokio::test]
async fn a_stream_reaches_the_client_event_by_event() {
    let (p, go) = gated().await;
    let gw = gateway("", &one_provider(&p.url()));
    let stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::post("/v1/chat/completions")
        .header("host", "a")
        .body(Full::new(Bytes::from(chat("fast", true).to_string())))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), tx.send_request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let mut seen = String::new();
    for word in ["Hello", " there", "!"] {
        // The provider sends the next chunk only after this one was read through the
        // gateway: a gateway that buffered would never deliver it.
        let want = format!("\"content\":\"{word}\"");
        while !seen.contains(&want) {
            let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
                .await
                .unwrap_or_else(|_| panic!("{word:?} did not arrive; got {seen}"))
                .unwrap()
                .unwrap();
            if let Ok(d) = frame.into_data() {
                seen.push_str(&String::from_utf8_lossy(&d));
            }
        }
        go.send(()).await.unwrap();
    }
    let rest = body.collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&rest).ends_with("data: [DONE]\n\n"));
}

/// Input and output tokens of the metrics marked estimated, after one streamed and one
/// whole chat answer from a provider that reports no usage through an `ai` block.
async fn estimated_tokens(ai: &str) -> (Option<f64>, Option<f64>) {
    let gw = gateway("", ai);
    let got = post(gw.addr, "/v1/chat/completions", &chat("fast", true), &[]).await;
    assert_eq!(got.status, StatusCode::OK);
    let got = post(gw.addr, "/v1/chat/completions", &chat("fast", false), &[]).await;
    assert_eq!(got.status, StatusCode::OK);
    let m = metrics(&gw).await;
    let count = |direction: &str| {
        let d = format!("direction=\"{direction}\"");
        let labels = [d.as_str(), "estimated=\"true\""];
        metric(&m, "ferrogate_ai_tokens_total", &labels)
    };
    (count("input"), count("output"))
}

#[tokio::test]
async fn without_provider_usage_the_tokens_are_estimated_and_marked() {
    let p = Provider::start(Script::OpenAiNoUsage).await;
    // The model `tiny` is counted in cl100k_base. The prompt, as OpenAI counts it: 3 tokens
    // of framing per message plus its role (1) and text ("Be brief." 3, "Say hello" 2),
    // and 3 priming the answer: 16. "Hello there!" is 3 tokens. Each of the two answers.
    let (input, output) = estimated_tokens(&one_provider(&p.url())).await;
    assert_eq!(input, Some(32.0));
    assert_eq!(output, Some(6.0));
}

#[tokio::test]
async fn a_target_with_tokenizer_estimate_counts_a_token_per_four_bytes() {
    let p = Provider::start(Script::OpenAiNoUsage).await;
    let ai = format!(
        "      providers: {{p: {{kind: openai, url: '{}/v1'}}}}\n      models: {{fast: {{targets: [{{provider: p, model: gpt-4o, tokenizer: estimate}}]}}}}\n",
        p.url()
    );
    // Per message 4 and 3 by bytes for each text (9 bytes); "Hello there!" is 12 bytes.
    let (input, output) = estimated_tokens(&ai).await;
    assert_eq!(input, Some(28.0));
    assert_eq!(output, Some(6.0));
}

#[tokio::test]
async fn embeddings_and_models_are_served() {
    let p = Provider::start(Script::OpenAi).await;
    let gw = gateway("", &one_provider(&p.url()));
    let body = json!({"model": "fast", "input": "some text"});
    let got = post(gw.addr, "/v1/embeddings", &body, &[]).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text());
    assert_eq!(json_of(&got)["data"][0]["embedding"], json!([0.1, 0.2]));
    assert_eq!(p.requests()[0].path_and_query, "/v1/embeddings");
    let got = get(gw.addr, "a", "/v1/models").await;
    assert_eq!(json_of(&got)["data"][0]["id"], "fast");
}

#[tokio::test]
async fn azure_gets_its_deployment_url_api_version_and_api_key() {
    std::env::set_var("FERROGATE_TEST_AZURE_KEY", "azure-secret-1");
    let p = Provider::start(Script::OpenAi).await;
    let ai = format!(
        "      providers: {{az: {{kind: azure, url: '{}', api_key_env: FERROGATE_TEST_AZURE_KEY, api_version: 2024-10-21, deployments: {{gpt-4o: prod-4o}}}}}}\n      models: {{fast: {{targets: [{{provider: az, model: gpt-4o}}]}}}}\n",
        p.url()
    );
    let gw = gateway("", &ai);
    let got = post(gw.addr, "/v1/chat/completions", &chat("fast", false), &[]).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text());
    let seen = &p.requests()[0];
    assert_eq!(
        seen.path_and_query,
        "/openai/deployments/prod-4o/chat/completions?api-version=2024-10-21"
    );
    assert_eq!(seen.headers["api-key"], "azure-secret-1");
    assert!(seen.headers.get("authorization").is_none());
}

fn anthropic_block(url: &str) -> String {
    std::env::set_var("FERROGATE_TEST_ANTHROPIC_KEY", "sk-ant-secret-2");
    format!(
        "      providers: {{claude: {{kind: anthropic, url: '{url}', api_key_env: FERROGATE_TEST_ANTHROPIC_KEY}}}}\n      models: {{smart: {{targets: [{{provider: claude, model: claude-x}}]}}}}\n"
    )
}

#[tokio::test]
async fn anthropic_requests_and_answers_are_translated_both_ways() {
    let p = Provider::start(Script::Anthropic).await;
    let gw = gateway("", &anthropic_block(&p.url()));
    let got = post(gw.addr, "/v1/chat/completions", &chat("smart", false), &[]).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text());
    let v = json_of(&got);
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["content"], "Hello there!");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 21, "completion_tokens": 6, "total_tokens": 27})
    );
    let seen = &p.requests()[0];
    assert_eq!(seen.path_and_query, "/v1/messages");
    assert_eq!(seen.headers["x-api-key"], "sk-ant-secret-2");
    assert_eq!(seen.headers["anthropic-version"], "2023-06-01");
    assert_eq!(seen.body["system"], "Be brief.");
    assert_eq!(seen.body["max_tokens"], 4096);
    assert_eq!(
        seen.body["messages"],
        json!([{"role": "user", "content": [{"type": "text", "text": "Say hello"}]}])
    );
}

#[tokio::test]
async fn anthropic_tool_calls_are_translated_both_ways() {
    let p = Provider::start(Script::Anthropic).await;
    let gw = gateway("", &anthropic_block(&p.url()));
    let body = json!({"model": "smart", "messages": [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": null, "tool_calls": [{"id": "toolu_0", "type": "function",
            "function": {"name": "weather", "arguments": "{\"city\":\"Lyon\"}"}}]},
        {"role": "tool", "tool_call_id": "toolu_0", "content": "18C"},
        {"role": "user", "content": "And Paris?"}],
        "tools": [{"type": "function", "function": {"name": "weather", "description": "Weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]});
    let got = post(gw.addr, "/v1/chat/completions", &body, &[]).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text());
    let v = json_of(&got);
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    let call = &v["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["id"], "toolu_1");
    assert_eq!(call["function"]["name"], "weather");
    assert_eq!(
        serde_json::from_str::<Value>(call["function"]["arguments"].as_str().unwrap()).unwrap(),
        json!({"city": "Paris"})
    );
    let sent = &p.requests()[0].body;
    assert_eq!(
        sent["tools"][0]["input_schema"]["properties"]["city"]["type"],
        "string"
    );
    assert_eq!(
        sent["messages"][1]["content"][0],
        json!({"type": "tool_use", "id": "toolu_0", "name": "weather", "input": {"city": "Lyon"}})
    );
    // The tool result and the next user message are one user turn.
    assert_eq!(
        sent["messages"][2]["content"][0],
        json!({"type": "tool_result", "tool_use_id": "toolu_0", "content": "18C"})
    );
    assert_eq!(sent["messages"][2]["content"][1]["text"], "And Paris?");

    // Streamed: the tool call arrives as tool_calls deltas with the arguments in pieces.
    let mut body = body;
    body["stream"] = json!(true);
    let got = post(gw.addr, "/v1/chat/completions", &body, &[]).await;
    let chunks: Vec<Value> = events(&got.text())
        .iter()
        .filter_map(|e| serde_json::from_str(e).ok())
        .collect();
    let args: String = chunks
        .iter()
        .filter_map(|c| {
            c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(args, "{\"city\": \"Paris\"}");
    let first = chunks
        .iter()
        .find(|c| c["choices"][0]["delta"]["tool_calls"].is_array())
        .unwrap();
    assert_eq!(
        first["choices"][0]["delta"]["tool_calls"][0]["id"],
        "toolu_1"
    );
    assert!(chunks
        .iter()
        .any(|c| c["choices"][0]["finish_reason"] == "tool_calls"));
}

#[tokio::test]
async fn an_anthropic_stream_becomes_openai_chunks_with_exact_usage() {
    let p = Provider::start(Script::Anthropic).await;
    let gw = gateway("", &anthropic_block(&p.url()));
    let mut body = chat("smart", true);
    body["stream_options"] = json!({"include_usage": true});
    let got = post(gw.addr, "/v1/chat/completions", &body, &[]).await;
    assert_eq!(got.status, StatusCode::OK);
    let ev = events(&got.text());
    assert_eq!(ev.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = ev
        .iter()
        .filter_map(|e| serde_json::from_str(e).ok())
        .collect();
    assert!(chunks
        .iter()
        .all(|c| c["object"] == "chat.completion.chunk"));
    let text: String = chunks
        .iter()
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(text, "Hello there!");
    assert!(chunks
        .iter()
        .any(|c| c["choices"][0]["finish_reason"] == "stop"));
    let usage = chunks.iter().find(|c| c["usage"].is_object()).unwrap();
    assert_eq!(
        usage["usage"],
        json!({"prompt_tokens": 21, "completion_tokens": 6, "total_tokens": 27})
    );
    assert_eq!(p.requests()[0].body["stream"], true);
    let m = metrics(&gw).await;
    assert_eq!(
        metric(
            &m,
            "ferrogate_ai_tokens_total",
            &[
                "model=\"claude-x\"",
                "direction=\"input\"",
                "estimated=\"false\""
            ]
        ),
        Some(21.0),
        "{m}"
    );
}

#[tokio::test]
async fn provider_errors_take_the_openai_shape_with_retry_after() {
    let p = Provider::start(Script::Fail {
        status: 529,
        retry_after: None,
        anthropic: true,
    })
    .await;
    let gw = gateway("", &anthropic_block(&p.url()));
    let got = post(gw.addr, "/v1/chat/completions", &chat("smart", false), &[]).await;
    assert_eq!(got.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(json_of(&got)["error"]["type"], "overloaded_error");
    let p = Provider::start(Script::Fail {
        status: 429,
        retry_after: Some(7),
        anthropic: true,
    })
    .await;
    let gw = gateway("", &anthropic_block(&p.url()));
    let got = post(gw.addr, "/v1/chat/completions", &chat("smart", false), &[]).await;
    assert_eq!(got.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(got.header("retry-after"), Some("7"));
    let v = json_of(&got);
    assert_eq!(v["error"]["type"], "rate_limit_error");
    assert_eq!(v["error"]["message"], "provider says no");
}

/// `fast` → `first`, falling back to `second` (an OpenAI-compatible provider that answers).
fn with_fallback(first: &str, second: &str, first_token_timeout: &str) -> String {
    format!(
        "      providers:\n        one: {{kind: openai, url: '{first}/v1', first_token_timeout: {first_token_timeout}}}\n        two: {{kind: openai, url: '{second}/v1', first_token_timeout: {first_token_timeout}}}\n      models: {{fast: {{targets: [{{provider: one, model: a}}], fallback: [{{provider: two, model: b}}]}}}}\n"
    )
}

async fn falls_back(script: Script, stream: bool) {
    let bad = Provider::start(script).await;
    let good = Provider::start(Script::OpenAi).await;
    let gw = gateway("", &with_fallback(&bad.url(), &good.url(), "1s"));
    let got = post(gw.addr, "/v1/chat/completions", &chat("fast", stream), &[]).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text());
    assert!(
        got.text().contains("Hello") || got.text().contains("there"),
        "{}",
        got.text()
    );
    assert_eq!(bad.count(), 1);
    assert_eq!(good.count(), 1);
    assert_eq!(good.requests()[0].body["model"], "b");
    let m = metrics(&gw).await;
    assert_eq!(
        metric(
            &m,
            "ferrogate_ai_attempts_total",
            &["provider=\"one\"", "outcome=\"fallback\""]
        ),
        Some(1.0),
        "{m}"
    );
}

#[tokio::test]
async fn a_429_falls_back_to_the_next_target() {
    falls_back(
        Script::Fail {
            status: 429,
            retry_after: Some(1),
            anthropic: false,
        },
        false,
    )
    .await;
}

#[tokio::test]
async fn a_5xx_falls_back_to_the_next_target() {
    falls_back(
        Script::Fail {
            status: 503,
            retry_after: None,
            anthropic: false,
        },
        true,
    )
    .await;
}

#[tokio::test]
async fn a_provider_without_a_first_token_in_time_falls_back() {
    falls_back(Script::Hang, true).await;
}

#[tokio::test]
async fn a_stream_that_ends_before_its_first_token_falls_back() {
    falls_back(Script::StreamEndsEarly, true).await;
}

#[tokio::test]
async fn an_unreachable_provider_falls_back() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let good = Provider::start(Script::OpenAi).await;
    let gw = gateway("", &with_fallback(&dead, &good.url(), "2s"));
    let got = post(gw.addr, "/v1/chat/completions", &chat("fast", false), &[]).await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text());
    assert_eq!(good.count(), 1);
}

#[tokio::test]
async fn a_client_error_from_the_provider_does_not_fall_back() {
    let bad = Provider::start(Script::Fail {
        status: 400,
        retry_after: None,
        anthropic: false,
    })
    .await;
    let good = Provider::start(Script::OpenAi).await;
    let gw = gateway("", &with_fallback(&bad.url(), &good.url(), "2s"));
    let got = post(gw.addr, "/v1/chat/completions", &chat("fast", false), &[]).await;
    assert_eq!(got.status, StatusCode::BAD_REQUEST);
    assert_eq!(good.count(), 0);
}

#[tokio::test]
async fn after_the_first_token_a_failure_is_an_error_event_and_never_a_fallback() {
    for script in [
        Script::StreamBreaksAfterFirst,
        Script::AnthropicErrorAfterFirst,
    ] {
        let anthropic = matches!(script, Script::AnthropicErrorAfterFirst);
        let bad = Provider::start(script).await;
        let good = Provider::start(Script::OpenAi).await;
        let kind = if anthropic {
            "anthropic, api_key: k"
        } else {
            "openai"
        };
        let path = if anthropic { "" } else { "/v1" };
        let ai = format!(
            "      providers:\n        one: {{kind: {kind}, url: '{}{path}'}}\n        two: {{kind: openai, url: '{}/v1'}}\n      models: {{fast: {{targets: [{{provider: one, model: a}}], fallback: [{{provider: two, model: b}}]}}}}\n",
            bad.url(),
            good.url()
        );
        let gw = gateway("", &ai);
        let got = post(gw.addr, "/v1/chat/completions", &chat("fast", true), &[]).await;
        assert_eq!(got.status, StatusCode::OK);
        let ev = events(&got.text());
        assert!(ev.iter().any(|e| e.contains("Hel")), "{}", got.text());
        let last: Value = serde_json::from_str(ev.last().unwrap()).unwrap();
        assert!(last["error"]["message"].is_string(), "{}", got.text());
        assert_eq!(good.count(), 0, "no fallback once a token was sent");
    }
}

#[tokio::test]
async fn malformed_requests_get_400_in_the_openai_shape_and_never_reach_a_provider() {
    let p = Provider::start(Script::OpenAi).await;
    let ai = format!("{}      max_tokens: 100\n", one_provider(&p.url()));
    let gw = gateway("", &ai);
    let cases: Vec<(Bytes, u16, &str)> = vec![
        (Bytes::from_static(b"{not json"), 400, "invalid_request_error"),
        (Bytes::from(json!({"messages": [{"role": "user", "content": "x"}]}).to_string()), 400, "invalid_request_error"),
        (Bytes::from(json!({"model": "fast"}).to_string()), 400, "invalid_request_error"),
        (Bytes::from(json!({"model": "fast", "messages": [{"role": "wizard", "content": "x"}]}).to_string()), 400, "invalid_request_error"),
        (Bytes::from(json!({"model": "fast", "max_tokens": 5000, "messages": [{"role": "user", "content": "x"}]}).to_string()), 400, "invalid_request_error"),
        (Bytes::from(json!({"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]}).to_string()), 404, "invalid_request_error"),
    ];
    for (body, status, kind) in cases {
        let req = Request::post("/v1/chat/completions")
            .header("host", "a")
            .body(Full::new(body.clone()))
            .unwrap();
        let got = send(gw.addr, req).await;
        assert_eq!(got.status.as_u16(), status, "{body:?}: {}", got.text());
        assert_eq!(json_of(&got)["error"]["type"], kind, "{body:?}");
        assert!(json_of(&got)["error"]["message"].is_string());
    }
    let got = post(gw.addr, "/v1/nowhere", &chat("fast", false), &[]).await;
    assert_eq!(got.status, StatusCode::NOT_FOUND);
    assert_eq!(p.count(), 0);
    // The cap is sent when the request names none.
    post(gw.addr, "/v1/chat/completions", &chat("fast", false), &[]).await;
    assert_eq!(p.requests()[0].body["max_tokens"], 100);
}

#[tokio::test]
async fn consumers_see_and_use_only_their_models() {
    let p = Provider::start(Script::OpenAi).await;
    let hash = |k: &str| ferrogate::auth::apikey::hash_key(k.as_bytes());
    let top = format!(
        "consumers:\n  alice: {{api_keys: ['{}']}}\n  bob: {{api_keys: ['{}']}}\nauth:\n  methods:\n    keys: {{api_key: {{header: X-Api-Key}}}}\n",
        hash("alice-key-123"),
        hash("bob-key-456")
    );
    let ai = format!(
        "      providers: {{p: {{kind: openai, url: '{}/v1'}}}}\n      models:\n        fast: {{targets: [{{provider: p, model: tiny}}]}}\n        smart: {{targets: [{{provider: p, model: big}}]}}\n      consumers: {{alice: {{models: [fast, smart]}}, bob: {{models: [fast]}}}}\n    auth: {{methods: [keys]}}\n",
        p.url()
    );
    let gw = gateway(&top, &ai);
    let got = post(gw.addr, "/v1/chat/completions", &chat("smart", false), &[]).await;
    assert_eq!(got.status, StatusCode::UNAUTHORIZED);
    let got = post(
        gw.addr,
        "/v1/chat/completions",
        &chat("smart", false),
        &[("x-api-key", "bob-key-456")],
    )
    .await;
    assert_eq!(got.status, StatusCode::NOT_FOUND);
    assert_eq!(json_of(&got)["error"]["code"], "model_not_found");
    let got = post(
        gw.addr,
        "/v1/chat/completions",
        &chat("smart", false),
        &[("x-api-key", "alice-key-123")],
    )
    .await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(p.count(), 1);
    let got = request(
        gw.addr,
        "GET",
        "/v1/models",
        &[("x-api-key", "bob-key-456")],
    )
    .await;
    let ids: Vec<Value> = json_of(&got)["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].clone())
        .collect();
    assert_eq!(ids, vec![json!("fast")]);
    let m = metrics(&gw).await;
    assert!(
        metric(
            &m,
            "ferrogate_ai_requests_total",
            &["consumer=\"alice\"", "alias=\"smart\""]
        ) == Some(1.0),
        "{m}"
    );
}

#[tokio::test]
async fn provider_keys_never_reach_clients_or_the_access_log() {
    let dir = support::tempdir::Dir::new("ai-log");
    let log = dir.path.join("access.log");
    let p = Provider::start(Script::Fail {
        status: 401,
        retry_after: None,
        anthropic: true,
    })
    .await;
    let good = Provider::start(Script::Anthropic).await;
    let top = format!("access_log: {{target: \"{}\"}}\n", log.display());
    std::env::set_var("FERROGATE_TEST_ANTHROPIC_KEY", "sk-ant-secret-2");
    let ai = format!(
        "      providers:\n        bad: {{kind: anthropic, url: '{}', api_key_env: FERROGATE_TEST_ANTHROPIC_KEY}}\n        good: {{kind: anthropic, url: '{}', api_key_env: FERROGATE_TEST_ANTHROPIC_KEY}}\n      models:\n        a: {{targets: [{{provider: bad, model: m}}]}}\n        b: {{targets: [{{provider: good, model: m}}]}}\n",
        p.url(),
        good.url()
    );
    let gw = gateway(&top, &ai);
    let refused = post(gw.addr, "/v1/chat/completions", &chat("a", false), &[]).await;
    assert_eq!(
        refused.status,
        StatusCode::BAD_GATEWAY,
        "the gateway's key, not the client's"
    );
    let ok = post(gw.addr, "/v1/chat/completions", &chat("b", true), &[]).await;
    assert_eq!(ok.status, StatusCode::OK);
    for got in [&refused, &ok] {
        assert!(!got.text().contains("sk-ant-secret-2"));
        assert!(!format!("{:?}", got.headers).contains("sk-ant-secret-2"));
    }
    let mut text = String::new();
    assert!(
        eventually(Duration::from_secs(5), || {
            text = std::fs::read_to_string(&log).unwrap_or_default();
            let done = text.lines().count() >= 2;
            async move { done }
        })
        .await
    );
    assert!(!text.contains("sk-ant-secret-2"), "{text}");
    let line: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(line["ai"]["provider"], "good");
    assert_eq!(line["ai"]["tokens_in"], 21);
    assert_eq!(line["ai"]["tokens_out"], 6);
    assert!(line["ai"]["ttft_ms"].is_number(), "{line}");
}

#[tokio::test]
async fn a_prompt_endpoint_wraps_a_template_and_an_alias_into_a_plain_api() {
    let p = Provider::start(Script::OpenAi).await;
    let yaml = format!(
        "workers: 1\nlisteners: [{{address: 127.0.0.1:0}}]\nroutes:\n  - match: {{path: {{exact: /summarize}}, methods: [POST]}}\n    ai:\n{}      prompt: {{model: fast, system: 'You summarize.', template: 'Summarize in {{{{lines}}}} lines: {{{{text}}}}', output: summary}}\n",
        one_provider(&p.url())
    );
    let gw = TestGateway::start(&yaml);
    let got = post(
        gw.addr,
        "/summarize",
        &json!({"text": "A long story.", "lines": 2}),
        &[],
    )
    .await;
    assert_eq!(got.status, StatusCode::OK, "{}", got.text());
    assert_eq!(json_of(&got), json!({"summary": "Hello there!"}));
    let sent = &p.requests()[0].body;
    assert_eq!(sent["model"], "tiny");
    assert_eq!(sent["messages"][0]["content"], "You summarize.");
    assert_eq!(
        sent["messages"][1]["content"],
        "Summarize in 2 lines: A long story."
    );
    let got = post(gw.addr, "/summarize", &json!({"lines": 2}), &[]).await;
    assert_eq!(got.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        json_of(&got)["error"]["message"],
        "the body has no field \"text\""
    );
    assert_eq!(p.count(), 1);
}

#[tokio::test]
async fn the_answer_cache_serves_the_same_request_once_per_consumer() {
    let p = Provider::start(Script::OpenAi).await;
    let ai = format!(
        "{}      cache: {{ttl: 1m, max_entries: 10}}\n",
        one_provider(&p.url())
    );
    let gw = gateway("", &ai);
    let first = post(gw.addr, "/v1/chat/completions", &chat("fast", false), &[]).await;
    assert_eq!(
        first.header("cache-status"),
        Some("ferrogate; fwd=miss; stored")
    );
    // The same request with its keys in another order.
    let reordered =
        json!({"messages": chat("fast", false)["messages"], "stream": false, "model": "fast"});
    let second = post(gw.addr, "/v1/chat/completions", &reordered, &[]).await;
    assert_eq!(second.header("cache-status"), Some("ferrogate; hit"));
    assert_eq!(second.body, first.body);
    assert_eq!(p.count(), 1);
    let streamed = post(gw.addr, "/v1/chat/completions", &chat("fast", true), &[]).await;
    assert_eq!(
        streamed.header("cache-status"),
        None,
        "streams are not cached"
    );
    assert_eq!(p.count(), 2);
}

/// A budget of 40 tokens a minute per client address (policy `tpm`, stored as `store`),
/// with requests asking for at most 10 output tokens.
fn budget_config(top_extra: &str, store: &str, url: &str) -> (String, String) {
    let top = format!(
        "{top_extra}rate_limiting:\n  policies:\n    tpm: {{algorithm: fixed_window, limit: 40, window: 1h, key: [client_ip]{store}}}\n"
    );
    let ai = format!(
        "{}      budgets: [{{policy: tpm, counts: total_tokens}}]\n",
        one_provider(url)
    );
    (top, ai)
}

fn small(stream: bool) -> Value {
    let mut body = chat("fast", stream);
    body["max_tokens"] = json!(10);
    body
}

#[tokio::test]
async fn a_token_budget_admits_on_the_estimate_and_settles_the_real_count() {
    let p = Provider::start(Script::OpenAi).await;
    let (top, ai) = budget_config("", "", &p.url());
    let gw = gateway(&top, &ai);
    // The estimate: 14 input tokens (two short messages) + 10 asked for = 24; the real
    // count: 11 + 3 = 14.
    let first = post(gw.addr, "/v1/chat/completions", &small(false), &[]).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.header("x-ratelimit-limit-tokens"), Some("40"));
    assert_eq!(first.header("x-ratelimit-remaining-tokens"), Some("16"));
    assert!(first
        .header("x-ratelimit-reset-tokens")
        .unwrap()
        .ends_with('s'));
    // Settled at 14: the second (streamed) request sees 14 + 24 counted.
    let second = post(gw.addr, "/v1/chat/completions", &small(true), &[]).await;
    assert_eq!(second.status, StatusCode::OK);
    assert_eq!(second.header("x-ratelimit-remaining-tokens"), Some("2"));
    // Settled at 28 when the stream ended: 28 + 24 is over 40.
    let third = post(gw.addr, "/v1/chat/completions", &small(false), &[]).await;
    assert_eq!(
        third.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        third.text()
    );
    assert_eq!(json_of(&third)["error"]["type"], "rate_limit_error");
    assert_eq!(third.header("x-ratelimit-remaining-tokens"), Some("12"));
    assert!(third.header("retry-after").is_some());
    assert_eq!(p.count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_share_a_token_budget_through_redis() {
    let redis = support::redis::RedisServer::start();
    let p = Provider::start(Script::OpenAi).await;
    let top = format!("redis: {{url: \"{}\", timeout: 1s}}\n", redis.url());
    // Fail closed: while an instance's Redis link is not up yet (or a call is slowed past
    // its timeout on a loaded machine) it answers 503, never admits on a local count.
    let store = ", store: redis, on_redis_error: reject";
    let (top, ai) = budget_config(&top, store, &p.url());
    let one = gateway(&top, &ai);
    let two = gateway(&top, &ai);
    // 503s reach no provider and count nothing: sent again until Redis answers.
    let post = |addr, stream| async move {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let got = post(addr, "/v1/chat/completions", &small(stream), &[]).await;
            if got.status != StatusCode::SERVICE_UNAVAILABLE || std::time::Instant::now() > deadline
            {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let a = post(one.addr, false).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.header("x-ratelimit-remaining-tokens"), Some("16"));
    let b = post(two.addr, true).await;
    assert_eq!(b.status, StatusCode::OK);
    assert_eq!(
        b.header("x-ratelimit-remaining-tokens"),
        Some("2"),
        "the other instance's count is seen"
    );
    let c = post(one.addr, false).await;
    assert_eq!(c.status, StatusCode::TOO_MANY_REQUESTS, "{}", c.text());
    assert_eq!(c.header("x-ratelimit-remaining-tokens"), Some("12"));
    assert_eq!(p.count(), 2);
}
