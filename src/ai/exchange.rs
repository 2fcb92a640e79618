//! One exchange of an `ai` route with its providers: the alias's targets in order (one
//! picked by weight, then the fallback chain), each tried until one answers; a stream is
//! relayed event by event from its first token on, and once a token has reached the client
//! nothing falls back any more (a later failure is an error event in the stream).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde_json::Value;
use tokio::sync::mpsc;

use super::budget::Charges;
use super::front::{Checked, Endpoint};
use super::openai::Outbound;
use super::sse;
use super::usage::{self, Usage};
use super::{anthropic, openai, ApiError};
use crate::config::model::{AiProvider, AiProviderKind, AiRoute, AiTarget, AiTokenizer};
use crate::observe::metrics::{AiExchange, AiMetrics};

/// A provider's error answer larger than this is cut (it is only read for its message).
const MAX_ERROR_BODY: usize = 64 * 1024;
/// A whole (non-streamed) answer larger than this is refused.
const MAX_ANSWER: usize = 32 << 20;
/// Relayed events waiting for a slow client at most, before the provider is read again.
const STREAM_BUFFER: usize = 16;

/// An `ai` route's providers, client and metrics, compiled once per snapshot.
pub struct Service {
    pub route: Arc<str>,
    pub ai: Arc<AiRoute>,
    http: reqwest::Client,
    metrics: AiMetrics,
    pub cache: Option<super::cache::AnswerCache>,
    /// The route's budgets, in order.
    pub budgets: Vec<super::budget::Budget>,
}

/// What an exchange learned, for the access log: written by the exchange (for a stream,
/// by the task relaying it, before the stream ends), read when the log line is written.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub alias: String,
    pub provider: String,
    pub model: String,
    pub usage: Option<Usage>,
    pub ttft: Option<Duration>,
    /// Targets tried.
    pub attempts: u32,
    pub cache_hit: Option<bool>,
}

/// The exchange's record, shared with a stream's relay task.
pub type SharedTally = Arc<Mutex<Tally>>;

/// What the client gets.
pub enum Answer {
    /// A whole JSON answer.
    Full {
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
    },
    /// Server-sent events as they come (the first ones already waiting).
    Stream { rest: mpsc::Receiver<Bytes> },
}

/// Why an attempt failed, and whether the next target may be tried.
#[derive(Debug)]
struct Failed {
    error: ApiError,
    fallback: bool,
}

impl Failed {
    fn retryable(error: ApiError) -> Self {
        Failed {
            error,
            fallback: true,
        }
    }
}

/// Who asked, for budgets, caches and metrics.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    pub consumer: Option<&'a str>,
}

impl Service {
    pub fn new(
        route: &str,
        ai: Arc<AiRoute>,
        metrics: AiMetrics,
        budgets: Vec<super::budget::Budget>,
    ) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| e.to_string())?;
        let cache = ai.cache.map(super::cache::AnswerCache::new);
        let targets = ai
            .models
            .values()
            .flat_map(|a| a.targets.iter().chain(&a.fallback));
        super::usage::warm(targets.map(|t| t.tokenizer));
        Ok(Service {
            route: Arc::from(route),
            ai,
            http,
            metrics,
            cache,
            budgets,
        })
    }

    /// The targets of `alias` in the order they are tried: one of `targets` picked by
    /// weight, then the `fallback` chain.
    fn order(&self, alias: &str) -> Vec<&AiTarget> {
        let Some(a) = self.ai.models.get(alias) else {
            return Vec::new();
        };
        let total: u64 = a.targets.iter().map(|t| u64::from(t.weight)).sum();
        let mut roll = fastrand::u64(0..total.max(1));
        let mut out = Vec::with_capacity(1 + a.fallback.len());
        for t in &a.targets {
            if roll < u64::from(t.weight) {
                out.push(t);
                break;
            }
            roll -= u64::from(t.weight);
        }
        out.extend(a.fallback.iter());
        out
    }

    /// Runs the exchange for a checked request.
    pub async fn exchange(
        &self,
        endpoint: Endpoint,
        req: &Checked,
        caller: Caller<'_>,
        tally: &SharedTally,
        charges: Charges,
    ) -> Result<Answer, ApiError> {
        let mut charges = Some(charges);
        let result = self
            .attempts(endpoint, req, caller, tally, &mut charges)
            .await;
        // A stream's relay settles its charges when it ends; anything else settles here.
        if let Some(c) = charges.filter(|c| !c.is_empty()) {
            let t = tally.lock().map(|t| t.clone()).unwrap_or_default();
            match (&result, t.usage) {
                (Ok(_), Some(u)) => c.settle(Some((u, &t.model))).await,
                _ => c.settle(None).await,
            }
        }
        result
    }

    async fn attempts(
        &self,
        endpoint: Endpoint,
        req: &Checked,
        caller: Caller<'_>,
        tally: &SharedTally,
        charges: &mut Option<Charges>,
    ) -> Result<Answer, ApiError> {
        let started = Instant::now();
        let mut last = ApiError::upstream(StatusCode::BAD_GATEWAY, "no provider could answer");
        let order = self.order(&req.alias);
        let consumer = caller.consumer.unwrap_or("");
        for (i, target) in order.iter().enumerate() {
            let Some(p) = self.ai.providers.get(target.provider) else {
                continue;
            };
            if let Ok(mut t) = tally.lock() {
                t.alias.clone_from(&req.alias);
                t.provider.clone_from(&p.name);
                t.model.clone_from(&target.model);
                t.attempts += 1;
            }
            let anthropic = matches!(p.kind, AiProviderKind::Anthropic { .. });
            if anthropic && endpoint == Endpoint::Embeddings {
                last = ApiError::invalid("this model has no embeddings");
                continue;
            }
            let out = match anthropic {
                true => anthropic::request(p, &target.model, req)?,
                false => openai::request(p, endpoint, &target.model, req)?,
            };
            let result = match req.stream {
                true => {
                    let tok = target.tokenizer;
                    self.stream(p, tok, out, req, started, tally, consumer, charges)
                        .await
                }
                false => {
                    let tok = target.tokenizer;
                    self.whole(p, tok, out, endpoint, req, started, tally, consumer)
                        .await
                }
            };
            let more = i + 1 < order.len();
            match result {
                Ok(answer) => {
                    self.metrics.attempt(&self.route, &p.name, "ok");
                    return Ok(answer);
                }
                Err(f) if f.fallback && more => {
                    tracing::debug!(provider = %p.name, "falling back: {}", f.error.message);
                    self.metrics.attempt(&self.route, &p.name, "fallback");
                    last = f.error;
                }
                Err(f) => {
                    self.metrics.attempt(&self.route, &p.name, "failed");
                    return Err(f.error);
                }
            }
        }
        Err(last)
    }

    /// Sends `out` and waits for the response head, within the first-token limit.
    async fn send(&self, p: &AiProvider, out: Outbound) -> Result<reqwest::Response, Failed> {
        let call = self
            .http
            .post(&out.url)
            .headers(out.headers)
            .body(out.body)
            .send();
        let resp = match tokio::time::timeout(p.first_token_timeout.min(p.timeout), call).await {
            Err(_) => {
                let e = ApiError::upstream(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!("the provider {} did not answer in time", p.name),
                );
                return Err(Failed::retryable(e));
            }
            Ok(Err(e)) => {
                // The URL (and so no key) is all reqwest's message can hold.
                let e = ApiError::upstream(
                    StatusCode::BAD_GATEWAY,
                    format!("cannot reach the provider {}: {}", p.name, e.without_url()),
                );
                return Err(Failed::retryable(e));
            }
            Ok(Ok(r)) => r,
        };
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(refusal(p, resp).await)
    }

    #[allow(clippy::too_many_arguments)]
    async fn whole(
        &self,
        p: &AiProvider,
        tokenizer: AiTokenizer,
        out: Outbound,
        endpoint: Endpoint,
        req: &Checked,
        started: Instant,
        tally: &SharedTally,
        consumer: &str,
    ) -> Result<Answer, Failed> {
        // Each attempt has its own limits; the time to the first token is the client's.
        let deadline = tokio::time::Instant::now() + p.timeout;
        let mut resp = self.send(p, out).await?;
        let mut body = Vec::new();
        while let Some(chunk) = next_chunk(&mut resp, deadline, &p.name, "finish")
            .await
            .map_err(Failed::retryable)?
        {
            if body.len() + chunk.len() > MAX_ANSWER {
                let e = ApiError::upstream(StatusCode::BAD_GATEWAY, "the answer is too large");
                return Err(Failed::retryable(e));
            }
            body.extend_from_slice(&chunk);
        }
        let ttft = started.elapsed();
        let answer: Value = serde_json::from_slice(&body).map_err(|_| {
            Failed::retryable(ApiError::upstream(
                StatusCode::BAD_GATEWAY,
                format!("the provider {} answered with something not JSON", p.name),
            ))
        })?;
        let (body, usage) = match p.kind {
            AiProviderKind::Anthropic { .. } => {
                let (v, u) = anthropic::translate_answer(&answer, crate::timer::unix_seconds());
                (Bytes::from(v.to_string()), u)
            }
            _ => {
                let usage = openai::usage_of(&answer, req, endpoint, tokenizer);
                (Bytes::from(body), usage)
            }
        };
        self.settle(tally, usage, Some(ttft), None, consumer);
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        Ok(Answer::Full {
            status: StatusCode::OK,
            headers,
            body,
        })
    }

    /// Opens a stream: reads until the first event the client gets, falling back on any
    /// failure until then; then relays the rest from a task of its own.
    #[allow(clippy::too_many_arguments)]
    async fn stream(
        &self,
        p: &AiProvider,
        tokenizer: AiTokenizer,
        out: Outbound,
        req: &Checked,
        started: Instant,
        tally: &SharedTally,
        consumer: &str,
        charges: &mut Option<Charges>,
    ) -> Result<Answer, Failed> {
        // Each attempt has its own limits; the time to the first token is the client's.
        let begun = tokio::time::Instant::now();
        let first_deadline = begun + p.first_token_timeout.min(p.timeout);
        let total_deadline = begun + p.timeout;
        let mut resp = self.send(p, out).await?;
        let mut state = Translator::new(p, req.wants_usage);
        let mut reader = sse::Reader::default();
        let mut events = Vec::new();
        let mut first = Vec::new();
        while first.is_empty() {
            let read = next_chunk(&mut resp, first_deadline, &p.name, "send a first token");
            let Some(chunk) = read.await.map_err(Failed::retryable)? else {
                let e = ApiError::upstream(
                    StatusCode::BAD_GATEWAY,
                    format!("the stream of {} ended before its first token", p.name),
                );
                return Err(Failed::retryable(e));
            };
            reader
                .feed(&chunk, &mut events)
                .map_err(|m| Failed::retryable(ApiError::upstream(StatusCode::BAD_GATEWAY, m)))?;
            for ev in events.drain(..) {
                state.event(&ev, &mut first).map_err(Failed::retryable)?;
            }
        }
        let ttft = started.elapsed();
        if let Ok(mut t) = tally.lock() {
            t.ttft = Some(ttft);
        }
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let relay = Relay {
            resp,
            state,
            reader,
            deadline: total_deadline,
            tx,
            tally: tally.clone(),
            metrics: self.metrics.clone(),
            route: self.route.clone(),
            price: self.ai.prices.get(&tally_model(tally)).copied(),
            consumer: consumer.to_owned(),
            tokenizer,
            messages: req.body["messages"].clone(),
            first_at: Instant::now(),
            charges: charges.take(),
            provider: p.name.clone(),
        };
        // The channel is new and empty: the first events always fit.
        let _ = relay.tx.try_send(Bytes::from(first));
        tokio::spawn(relay.run(ttft));
        Ok(Answer::Stream { rest: rx })
    }

    /// Records a finished exchange: the tally for the log, the metrics.
    fn settle(
        &self,
        tally: &SharedTally,
        usage: Usage,
        ttft: Option<Duration>,
        generation: Option<Duration>,
        consumer: &str,
    ) {
        let Ok(mut t) = tally.lock() else {
            return;
        };
        t.usage = Some(usage);
        t.ttft = ttft.or(t.ttft);
        let price = self.ai.prices.get(&t.model);
        record(&self.metrics, &self.route, &t, consumer, price, generation);
    }
}

fn record(
    metrics: &AiMetrics,
    route: &Arc<str>,
    t: &Tally,
    consumer: &str,
    price: Option<&crate::config::model::AiPrice>,
    generation: Option<Duration>,
) {
    let u = t.usage.unwrap_or_default();
    metrics.exchange(&AiExchange {
        route,
        alias: &t.alias,
        provider: &t.provider,
        model: &t.model,
        consumer,
        input: u.input,
        output: u.output,
        estimated: u.estimated,
        cost: u.cost(price),
        ttft: t.ttft,
        generation,
    });
}

fn tally_model(tally: &SharedTally) -> String {
    tally.lock().map(|t| t.model.clone()).unwrap_or_default()
}

/// The next chunk of a provider's answer, `None` at its end; a timeout at `deadline` or a
/// broken answer is an error naming `provider` (and what it did not `finish` in time).
async fn next_chunk(
    resp: &mut reqwest::Response,
    deadline: tokio::time::Instant,
    provider: &str,
    what: &str,
) -> Result<Option<Bytes>, ApiError> {
    match tokio::time::timeout_at(deadline, resp.chunk()).await {
        Err(_) => Err(ApiError::upstream(
            StatusCode::GATEWAY_TIMEOUT,
            format!("the provider {provider} did not {what} in time"),
        )),
        // The URL (and so no key) is all reqwest's message can hold; it is left out too.
        Ok(Err(e)) => Err(ApiError::upstream(
            StatusCode::BAD_GATEWAY,
            format!(
                "the answer of the provider {provider} broke: {}",
                e.without_url()
            ),
        )),
        Ok(Ok(c)) => Ok(c),
    }
}

/// A refused attempt: the provider's error in the OpenAI shape, with its `retry-after`;
/// 429 and 5xx fall back, other refusals are the client's to see.
async fn refusal(p: &AiProvider, mut resp: reqwest::Response) -> Failed {
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let mut body = Vec::new();
    let read = async {
        while let Ok(Some(c)) = resp.chunk().await {
            body.extend_from_slice(&c);
            if body.len() > MAX_ERROR_BODY {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), read).await;
    let mut error = match p.kind {
        AiProviderKind::Anthropic { .. } => anthropic::error_of(status, &body),
        _ => openai::error_of(status, &body),
    };
    error.retry_after = retry_after;
    let fallback = status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error();
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        // The gateway's key was refused: not the client's credential, so not the client's
        // status either.
        tracing::warn!(provider = %p.name, "the provider refused the gateway's key ({status})");
        error.status = StatusCode::BAD_GATEWAY;
        error.message = format!("the provider {} refused the gateway's credentials", p.name);
    }
    Failed { error, fallback }
}

/// A stream's translation into OpenAI chunks.
enum Translator {
    OpenAi(openai::Stream),
    Anthropic(anthropic::Stream),
}

impl Translator {
    fn new(p: &AiProvider, wants_usage: bool) -> Self {
        match p.kind {
            AiProviderKind::Anthropic { .. } => Translator::Anthropic(anthropic::Stream {
                wants_usage,
                created: crate::timer::unix_seconds(),
                ..Default::default()
            }),
            _ => Translator::OpenAi(openai::Stream {
                wants_usage,
                ..Default::default()
            }),
        }
    }

    fn event(&mut self, ev: &sse::Event, out: &mut Vec<u8>) -> Result<(), ApiError> {
        match self {
            Translator::OpenAi(s) => s.event(ev, out),
            Translator::Anthropic(s) => s.event(ev, out),
        }
    }

    fn done(&self) -> bool {
        match self {
            Translator::OpenAi(s) => s.done,
            Translator::Anthropic(s) => s.done,
        }
    }

    /// The provider's usage, or a count of the prompt's and the relayed text's tokens.
    fn usage(&self, tokenizer: AiTokenizer, messages: &Value) -> Usage {
        let (usage, text) = match self {
            Translator::OpenAi(s) => (s.usage, &s.text_bytes),
            Translator::Anthropic(s) => (s.usage, &s.text_bytes),
        };
        usage.unwrap_or_else(|| Usage {
            input: usage::count_messages(tokenizer, messages),
            output: usage::count(tokenizer, text),
            estimated: true,
        })
    }
}

/// The rest of a stream, relayed from a task of its own.
struct Relay {
    resp: reqwest::Response,
    state: Translator,
    reader: sse::Reader,
    deadline: tokio::time::Instant,
    tx: mpsc::Sender<Bytes>,
    tally: SharedTally,
    metrics: AiMetrics,
    route: Arc<str>,
    price: Option<crate::config::model::AiPrice>,
    consumer: String,
    tokenizer: AiTokenizer,
    /// The prompt, counted at the end only if the provider reports no usage.
    messages: Value,
    first_at: Instant,
    charges: Option<Charges>,
    provider: String,
}

impl Relay {
    async fn run(mut self, ttft: Duration) {
        let mut events = Vec::new();
        let failure = loop {
            let read = next_chunk(&mut self.resp, self.deadline, &self.provider, "finish");
            let chunk = match read.await {
                Err(e) => break Some(e),
                Ok(None) => match self.state.done() {
                    true => break None,
                    false => {
                        if let Some(ev) = self.reader.finish() {
                            events.push(ev);
                        }
                        let mut out = Vec::new();
                        for ev in events.drain(..) {
                            let _ = self.state.event(&ev, &mut out);
                        }
                        if !out.is_empty() {
                            let _ = self.tx.send(Bytes::from(out)).await;
                        }
                        match self.state.done() {
                            true => break None,
                            false => {
                                break Some(ApiError::upstream(
                                    StatusCode::BAD_GATEWAY,
                                    "the provider's stream ended early",
                                ))
                            }
                        }
                    }
                },
                Ok(Some(c)) => c,
            };
            if let Err(m) = self.reader.feed(&chunk, &mut events) {
                break Some(ApiError::upstream(StatusCode::BAD_GATEWAY, m));
            }
            let mut out = Vec::new();
            let mut failed = None;
            for ev in events.drain(..) {
                if let Err(e) = self.state.event(&ev, &mut out) {
                    failed = Some(e);
                    break;
                }
            }
            if !out.is_empty() && self.tx.send(Bytes::from(out)).await.is_err() {
                // The client left: the provider's stream is dropped, and so cancelled.
                break None;
            }
            if failed.is_some() {
                break failed;
            }
        };
        if let Some(e) = failure {
            tracing::warn!(route = %self.route, "an ai stream failed after its first token: {}", e.message);
            let _ = self.tx.send(e.event()).await;
        }
        let usage = self.state.usage(self.tokenizer, &self.messages);
        let mut model = String::new();
        if let Ok(mut t) = self.tally.lock() {
            t.usage = Some(usage);
            t.ttft = Some(ttft);
            let generation = Some(self.first_at.elapsed());
            let price = self.price.as_ref();
            let consumer = &self.consumer;
            record(&self.metrics, &self.route, &t, consumer, price, generation);
            model.clone_from(&t.model);
        }
        if let Some(c) = self.charges.take() {
            c.settle(Some((usage, &model))).await;
        }
        // Dropping the sender ends the client's stream, after the tally is written.
    }
}
