//! File types of AI routes: a route's `ai` block (docs/ai-gateway.md).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

use super::Unknown;

/// A route's `ai`: the route answers the OpenAI-compatible API (`/chat/completions`,
/// `/embeddings`, `/models` under its path) from model providers, or, with `prompt`, a plain
/// REST endpoint built on one model alias.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RouteAi {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// Model providers by name.
    #[serde(default)]
    pub providers: BTreeMap<String, AiProvider>,
    /// Model aliases clients name in `model` (`fast`, `smart`), each mapped to provider
    /// models.
    #[serde(default)]
    pub models: BTreeMap<String, AiModel>,
    /// Price per million tokens, by provider model name, for the cost metric.
    #[serde(default)]
    pub prices: BTreeMap<String, AiPrice>,
    /// The largest `max_tokens` a request may ask for; larger is refused with 400. Also sent
    /// when a request names none.
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// The model aliases each consumer may use, by consumer name (default: every alias for
    /// every caller).
    #[serde(default)]
    pub consumers: BTreeMap<String, AiConsumer>,
    /// Token and spend budgets, each counted by a rate-limit policy: checked against an
    /// estimate before a request and settled with its real count after it.
    #[serde(default)]
    pub budgets: Vec<AiBudget>,
    /// Instead of the OpenAI-compatible API: a plain endpoint that fills a prompt template
    /// from the JSON body and answers with the model's text in one field.
    #[serde(default)]
    pub prompt: Option<AiPrompt>,
    /// Exact-match cache of non-streamed answers.
    #[serde(default)]
    pub cache: Option<AiCache>,
}

/// `ai.providers.NAME`: one model provider.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct AiProvider {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// `openai` (OpenAI or any OpenAI-compatible server), `azure` (Azure OpenAI) or
    /// `anthropic` (the Messages API).
    #[serde(default)]
    pub kind: Option<String>,
    /// Base URL (`http://` or `https://`): `https://api.openai.com/v1`, an Azure resource
    /// (`https://NAME.openai.azure.com`), `https://api.anthropic.com`.
    #[serde(default)]
    pub url: Option<String>,
    /// The provider's API key, inline (prefer `api_key_env`).
    #[serde(default)]
    pub api_key: Option<String>,
    /// The environment variable holding the provider's API key.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// `azure`: the `api-version` query parameter (default `2024-06-01`).
    #[serde(default)]
    pub api_version: Option<String>,
    /// `azure`: the deployment of each model name (default: the model name itself).
    #[serde(default)]
    pub deployments: BTreeMap<String, String>,
    /// `anthropic`: the `anthropic-version` field (default `2023-06-01`).
    #[serde(default)]
    pub anthropic_version: Option<String>,
    /// Time until the response head, and for a stream its first token (default 30s).
    #[serde(default)]
    pub first_token_timeout: Option<String>,
    /// Time until the whole answer has arrived (default 10m).
    #[serde(default)]
    pub timeout: Option<String>,
}

/// `ai.models.ALIAS`: the provider models behind an alias.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct AiModel {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// Provider models sharing the traffic by weight.
    #[serde(default)]
    pub targets: Vec<AiTarget>,
    /// Tried in order when the chosen target answers 429 or 5xx, times out, cannot be
    /// reached, or its stream fails before the first token.
    #[serde(default)]
    pub fallback: Vec<AiTarget>,
}

/// One provider model of an alias.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct AiTarget {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// A name of `ai.providers`.
    #[serde(default)]
    pub provider: Option<String>,
    /// The model name the provider knows.
    #[serde(default)]
    pub model: Option<String>,
    /// Share of the alias's traffic (default 1).
    #[serde(default)]
    pub weight: Option<u32>,
    /// How tokens are counted when the provider reports no usage: `o200k_base`,
    /// `cl100k_base` (OpenAI's BPE encodings) or `estimate` (one token per four bytes).
    /// Default: `o200k_base` for the gpt-4o, gpt-4.1, gpt-4.5, gpt-5, o1, o3 and o4 families,
    /// `cl100k_base` for every other model.
    #[serde(default)]
    pub tokenizer: Option<String>,
}

/// `ai.prices.MODEL`: price per million tokens.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct AiPrice {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// Price of a million input (prompt) tokens.
    #[serde(default)]
    pub input: Option<f64>,
    /// Price of a million output (completion) tokens.
    #[serde(default)]
    pub output: Option<f64>,
}

/// `ai.consumers.NAME`: what one consumer may use.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct AiConsumer {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// The model aliases the consumer may name.
    #[serde(default)]
    pub models: Vec<String>,
}

/// One budget of `ai.budgets`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct AiBudget {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// The `rate_limiting.policies` entry that counts it (a `fixed_window` or a `quota`):
    /// its limit, window and key (consumer, client address, header…) and its store (local
    /// or Redis) are the budget's.
    #[serde(default)]
    pub policy: Option<String>,
    /// What is counted: `total_tokens` (default), `input_tokens`, `output_tokens` or `cost`
    /// (in millionths of the price table's currency).
    #[serde(default)]
    pub counts: Option<String>,
    /// Output tokens assumed at admission when a request names no `max_tokens` (default 256).
    #[serde(default)]
    pub estimate_output: Option<u64>,
}

/// `ai.prompt`: a plain REST endpoint on one model alias.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct AiPrompt {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// The model alias used.
    #[serde(default)]
    pub model: Option<String>,
    /// A system message sent before the user message.
    #[serde(default)]
    pub system: Option<String>,
    /// The user message; `{{field}}` is replaced by that field of the JSON body.
    #[serde(default)]
    pub template: Option<String>,
    /// The field of the answer holding the model's text (default `result`).
    #[serde(default)]
    pub output: Option<String>,
}

/// `ai.cache`: exact-match cache of non-streamed answers.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct AiCache {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// How long an answer is kept (default 5m).
    #[serde(default)]
    pub ttl: Option<String>,
    /// Answers kept at most (default 1000).
    #[serde(default)]
    pub max_entries: Option<u64>,
    /// `false` shares answers between consumers (default `true`: keyed per consumer).
    #[serde(default)]
    pub per_consumer: Option<bool>,
}
