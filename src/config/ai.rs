//! Validation of a route's `ai` block into its model (docs/ai-gateway.md): providers, model
//! aliases with weighted targets and fallbacks, prices, caps, per-consumer models, budgets,
//! the prompt endpoint and the answer cache; every problem reported with its key path.

use std::collections::BTreeMap;
use std::time::Duration;

use super::file;
use super::model::RateLimiting;
use super::validate::{opt_duration, Errors};

const DEFAULT_FIRST_TOKEN: Duration = Duration::from_secs(30);
const DEFAULT_TOTAL: Duration = Duration::from_secs(600);
const DEFAULT_AZURE_VERSION: &str = "2024-06-01";
const DEFAULT_ANTHROPIC_VERSION: &str = "2023-06-01";

/// A route's `ai` block, validated.
#[derive(Debug, Clone, Default)]
pub struct AiRoute {
    pub providers: Vec<AiProvider>,
    /// Aliases by name.
    pub models: BTreeMap<String, AiAlias>,
    /// Price per million tokens by provider model.
    pub prices: BTreeMap<String, AiPrice>,
    pub max_tokens: Option<u32>,
    /// Aliases each named consumer may use; a consumer not listed may use every alias when
    /// the map is empty, none otherwise.
    pub consumers: BTreeMap<String, Vec<String>>,
    pub budgets: Vec<AiBudget>,
    pub prompt: Option<AiPrompt>,
    pub cache: Option<AiCacheSettings>,
}

/// One model provider.
#[derive(Clone)]
pub struct AiProvider {
    pub name: String,
    pub kind: AiProviderKind,
    /// Base URL without a trailing `/`.
    pub url: String,
    /// The API key; never logged, shown by the admin API only as a fingerprint.
    pub key: Option<String>,
    pub first_token_timeout: Duration,
    pub timeout: Duration,
}

impl std::fmt::Debug for AiProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AiProvider")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("url", &self.url)
            .field("key", &self.key.as_ref().map(|_| "<set>"))
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AiProviderKind {
    OpenAi,
    Azure {
        api_version: String,
        deployments: BTreeMap<String, String>,
    },
    Anthropic {
        version: String,
    },
}

/// The provider models behind one alias.
#[derive(Debug, Clone, Default)]
pub struct AiAlias {
    pub targets: Vec<AiTarget>,
    pub fallback: Vec<AiTarget>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AiTarget {
    /// Index into `AiRoute::providers`.
    pub provider: usize,
    pub model: String,
    pub weight: u32,
    /// How tokens are counted when the provider reports no usage.
    pub tokenizer: AiTokenizer,
}

/// A token count's method where a provider reports no usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AiTokenizer {
    /// OpenAI's encoding of gpt-4o, gpt-4.1, gpt-4.5, gpt-5 and the o-series.
    O200kBase,
    /// OpenAI's encoding of gpt-4, gpt-3.5 and text-embedding-3 / ada-002; the default for
    /// other models, whose own tokenizers it only approximates.
    Cl100kBase,
    /// One token per four bytes of text.
    Estimate,
}

impl AiTokenizer {
    /// The encoding of `model`'s family (a provider prefix such as `openai/` is ignored).
    pub fn of_model(model: &str) -> Self {
        let name = model
            .rsplit('/')
            .next()
            .unwrap_or(model)
            .to_ascii_lowercase();
        let name = name.strip_prefix("chat").unwrap_or(&name);
        let o200k = ["gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5"]
            .iter()
            .any(|p| name.starts_with(p))
            || ["o1", "o3", "o4"]
                .iter()
                .any(|p| name == *p || name.starts_with(&format!("{p}-")));
        match o200k {
            true => AiTokenizer::O200kBase,
            false => AiTokenizer::Cl100kBase,
        }
    }

    fn parse(name: &str) -> Option<Self> {
        match name {
            "o200k_base" => Some(AiTokenizer::O200kBase),
            "cl100k_base" => Some(AiTokenizer::Cl100kBase),
            "estimate" => Some(AiTokenizer::Estimate),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct AiPrice {
    pub input: f64,
    pub output: f64,
}

/// What a budget counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AiCounts {
    Total,
    Input,
    Output,
    /// Cost in millionths of the price table's currency.
    Cost,
}

/// A budget: what a rate-limit policy counts for the route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AiBudget {
    /// The `rate_limiting.policies` entry (checked to be a fixed window or a quota).
    pub policy: String,
    pub counts: AiCounts,
    pub estimate_output: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AiPrompt {
    pub model: String,
    pub system: Option<String>,
    pub template: String,
    pub output: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AiCacheSettings {
    pub ttl: Duration,
    pub max_entries: u64,
    pub per_consumer: bool,
}

/// A route's `ai` block at `at`.
pub(super) fn route(errs: &mut Errors, at: &str, a: &file::RouteAi) -> AiRoute {
    errs.unknown_in(at, a);
    if a.providers.is_empty() {
        errs.push(
            format!("{at}.providers"),
            "at least one provider is required",
        );
    }
    let providers: Vec<AiProvider> = a
        .providers
        .iter()
        .map(|(name, p)| provider(errs, &format!("{at}.providers.{name}"), name, p))
        .collect();
    if a.models.is_empty() {
        errs.push(
            format!("{at}.models"),
            "at least one model alias is required",
        );
    }
    let models = a
        .models
        .iter()
        .map(|(name, m)| {
            let at = format!("{at}.models.{name}");
            errs.unknown_in(&at, m);
            if m.targets.is_empty() {
                errs.push(format!("{at}.targets"), "at least one target is required");
            }
            let mut list = |key: &str, ts: &[file::AiTarget]| -> Vec<AiTarget> {
                ts.iter()
                    .enumerate()
                    .filter_map(|(i, t)| target(errs, &format!("{at}.{key}[{i}]"), t, &providers))
                    .collect()
            };
            let alias = AiAlias {
                targets: list("targets", &m.targets),
                fallback: list("fallback", &m.fallback),
            };
            (name.clone(), alias)
        })
        .collect();
    let prices = a
        .prices
        .iter()
        .map(|(model, p)| {
            let at = format!("{at}.prices.{model}");
            errs.unknown_in(&at, p);
            let mut side = |key: &str, v: Option<f64>| match v {
                Some(x) if x.is_finite() && x >= 0.0 => x,
                Some(_) => {
                    errs.push(format!("{at}.{key}"), "must be a number of 0 or more");
                    0.0
                }
                None => {
                    errs.push(format!("{at}.{key}"), "is required");
                    0.0
                }
            };
            let price = AiPrice {
                input: side("input", p.input),
                output: side("output", p.output),
            };
            (model.clone(), price)
        })
        .collect();
    if a.max_tokens == Some(0) {
        errs.push(format!("{at}.max_tokens"), "must be more than 0");
    }
    let consumers = a
        .consumers
        .iter()
        .map(|(name, c)| {
            let at = format!("{at}.consumers.{name}");
            errs.unknown_in(&at, c);
            for (i, m) in c.models.iter().enumerate() {
                if !a.models.contains_key(m) {
                    errs.push(
                        format!("{at}.models[{i}]"),
                        format!("unknown model alias {m:?}"),
                    );
                }
            }
            (name.clone(), c.models.clone())
        })
        .collect();
    let budgets = a
        .budgets
        .iter()
        .enumerate()
        .filter_map(|(i, b)| budget(errs, &format!("{at}.budgets[{i}]"), b))
        .collect();
    let prompt = a.prompt.as_ref().map(|p| {
        let at = format!("{at}.prompt");
        errs.unknown_in(&at, p);
        let model = p.model.clone().unwrap_or_default();
        if model.is_empty() {
            errs.push(format!("{at}.model"), "is required");
        } else if !a.models.contains_key(&model) {
            errs.push(
                format!("{at}.model"),
                format!("unknown model alias {model:?}"),
            );
        }
        let template = p.template.clone().unwrap_or_default();
        if template.is_empty() {
            errs.push(format!("{at}.template"), "is required");
        } else if !placeholders_closed(&template) {
            errs.push(format!("{at}.template"), "a `{{` without its `}}`");
        }
        AiPrompt {
            model,
            system: p.system.clone(),
            template,
            output: p.output.clone().unwrap_or_else(|| "result".to_owned()),
        }
    });
    let cache = a.cache.as_ref().map(|c| {
        let at = format!("{at}.cache");
        errs.unknown_in(&at, c);
        let ttl = opt_duration(errs, &format!("{at}.ttl"), &c.ttl, Duration::from_secs(300));
        if c.max_entries == Some(0) {
            errs.push(format!("{at}.max_entries"), "must be more than 0");
        }
        AiCacheSettings {
            ttl,
            max_entries: c.max_entries.unwrap_or(1000),
            per_consumer: c.per_consumer.unwrap_or(true),
        }
    });
    AiRoute {
        providers,
        models,
        prices,
        max_tokens: a.max_tokens,
        consumers,
        budgets,
        prompt,
        cache,
    }
}

fn provider(errs: &mut Errors, at: &str, name: &str, p: &file::AiProvider) -> AiProvider {
    errs.unknown_in(at, p);
    let kind = match p.kind.as_deref() {
        Some("openai") => AiProviderKind::OpenAi,
        Some("azure") => AiProviderKind::Azure {
            api_version: (p.api_version.clone()).unwrap_or_else(|| DEFAULT_AZURE_VERSION.into()),
            deployments: p.deployments.clone(),
        },
        Some("anthropic") => AiProviderKind::Anthropic {
            version: (p.anthropic_version.clone())
                .unwrap_or_else(|| DEFAULT_ANTHROPIC_VERSION.into()),
        },
        Some(k) => {
            errs.push(
                format!("{at}.kind"),
                format!("unknown provider kind {k:?}; use openai, azure or anthropic"),
            );
            AiProviderKind::OpenAi
        }
        None => {
            errs.push(
                format!("{at}.kind"),
                "is required (openai, azure or anthropic)",
            );
            AiProviderKind::OpenAi
        }
    };
    let azure = matches!(kind, AiProviderKind::Azure { .. });
    let anthropic = matches!(kind, AiProviderKind::Anthropic { .. });
    for (key, set, allowed) in [
        ("api_version", p.api_version.is_some(), azure),
        ("deployments", !p.deployments.is_empty(), azure),
        (
            "anthropic_version",
            p.anthropic_version.is_some(),
            anthropic,
        ),
    ] {
        if set && !allowed {
            errs.push(format!("{at}.{key}"), "not allowed with this kind");
        }
    }
    let url = p.url.clone().unwrap_or_default();
    match url.parse::<http::Uri>() {
        _ if url.is_empty() => errs.push(format!("{at}.url"), "is required"),
        Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() => {}
        _ => errs.push(
            format!("{at}.url"),
            format!("invalid URL {url:?}; use http://HOST:PORT/PATH or https://…"),
        ),
    }
    let key = match (&p.api_key, &p.api_key_env) {
        (Some(k), None) => Some(k.clone()),
        (None, Some(var)) => match std::env::var(var) {
            Ok(v) if !v.is_empty() => Some(v),
            _ => {
                errs.push(
                    format!("{at}.api_key_env"),
                    format!("the environment variable {var} is not set"),
                );
                None
            }
        },
        (Some(_), Some(_)) => {
            errs.push(at, "one of api_key and api_key_env, not both");
            None
        }
        (None, None) => None,
    };
    if key.is_none() && (azure || anthropic) && p.api_key_env.is_none() {
        errs.push(at, "needs api_key_env (or api_key)");
    }
    let first_token_timeout = opt_duration(
        errs,
        &format!("{at}.first_token_timeout"),
        &p.first_token_timeout,
        DEFAULT_FIRST_TOKEN,
    );
    let timeout = opt_duration(errs, &format!("{at}.timeout"), &p.timeout, DEFAULT_TOTAL);
    for (key, d) in [
        ("first_token_timeout", first_token_timeout),
        ("timeout", timeout),
    ] {
        if d.is_zero() {
            errs.push(format!("{at}.{key}"), "must be more than 0");
        }
    }
    AiProvider {
        name: name.to_owned(),
        kind,
        url: url.trim_end_matches('/').to_owned(),
        key,
        first_token_timeout,
        timeout,
    }
}

fn target(
    errs: &mut Errors,
    at: &str,
    t: &file::AiTarget,
    providers: &[AiProvider],
) -> Option<AiTarget> {
    errs.unknown_in(at, t);
    let model = t.model.clone().unwrap_or_default();
    if model.is_empty() {
        errs.push(format!("{at}.model"), "is required");
    }
    if t.weight == Some(0) {
        errs.push(format!("{at}.weight"), "must be more than 0");
    }
    let tokenizer = match t.tokenizer.as_deref() {
        None => AiTokenizer::of_model(&model),
        Some(name) => AiTokenizer::parse(name).unwrap_or_else(|| {
            errs.push(
                format!("{at}.tokenizer"),
                format!("unknown tokenizer {name:?} (o200k_base, cl100k_base or estimate)"),
            );
            AiTokenizer::Estimate
        }),
    };
    let provider = match &t.provider {
        None => {
            errs.push(format!("{at}.provider"), "is required");
            None
        }
        Some(name) => {
            let found = providers.iter().position(|p| &p.name == name);
            if found.is_none() {
                errs.push(
                    format!("{at}.provider"),
                    format!("unknown provider {name:?}"),
                );
            }
            found
        }
    }?;
    Some(AiTarget {
        provider,
        model,
        weight: t.weight.unwrap_or(1),
        tokenizer,
    })
}

fn budget(errs: &mut Errors, at: &str, b: &file::AiBudget) -> Option<AiBudget> {
    errs.unknown_in(at, b);
    let counts = match b.counts.as_deref() {
        None | Some("total_tokens") => AiCounts::Total,
        Some("input_tokens") => AiCounts::Input,
        Some("output_tokens") => AiCounts::Output,
        Some("cost") => AiCounts::Cost,
        Some(c) => {
            errs.push(
                format!("{at}.counts"),
                format!("unknown {c:?}; use total_tokens, input_tokens, output_tokens or cost"),
            );
            AiCounts::Total
        }
    };
    let Some(policy) = b.policy.clone() else {
        errs.push(
            format!("{at}.policy"),
            "is required (a rate_limiting.policies name)",
        );
        return None;
    };
    Some(AiBudget {
        policy,
        counts,
        estimate_output: b.estimate_output.unwrap_or(256),
    })
}

/// The budgets of `ai` routes name policies that exist and can settle a count afterwards.
pub(super) fn check_budgets(errs: &mut Errors, routes: &[file::Route], rl: &RateLimiting) {
    use crate::ratelimit::spec::Algorithm;
    for (i, r) in routes.iter().enumerate() {
        let budgets = r.ai.iter().flat_map(|a| a.budgets.iter().enumerate());
        for (j, b) in budgets {
            let Some(name) = &b.policy else { continue };
            let at = format!("routes[{i}].ai.budgets[{j}].policy");
            match rl.policies.iter().find(|p| &p.name == name) {
                None => errs.push(at, format!("no rate-limit policy named {name:?}")),
                Some(p) => {
                    if !matches!(
                        p.algorithm,
                        Algorithm::FixedWindow { .. } | Algorithm::Quota { .. }
                    ) {
                        errs.push(at, "a budget's policy must be a fixed_window or a quota");
                    }
                }
            }
        }
    }
}

/// Whether every `{{` of a template has its `}}`.
fn placeholders_closed(template: &str) -> bool {
    let mut rest = template;
    while let Some(at) = rest.find("{{") {
        match rest[at + 2..].find("}}") {
            Some(end) => rest = &rest[at + 2 + end + 2..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::AiTokenizer;
    use crate::config::parse;

    fn errors(yaml: &str) -> Vec<String> {
        match parse(yaml, std::path::Path::new(".")) {
            Ok(_) => Vec::new(),
            Err(errs) => errs.0.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn every_ai_mistake_is_reported_with_its_key_path() {
        let yaml = "
routes:
  - match: {path: {prefix: /v1/}}
    retry: {attempts: 2}
    ai:
      providers:
        a: {kind: azure, url: 'ftp://x', anthropic_version: v, first_token_timeout: soon}
        b: {kind: llama, url: http://127.0.0.1:1, api_key_env: FERROGATE_TEST_UNSET_AI_KEY}
      models:
        fast: {targets: [{provider: c, model: m}, {provider: b, weight: 0, tokenizer: p50k}]}
        smart: {}
      prices: {m: {input: -1}}
      max_tokens: 0
      consumers: {alice: {models: [slow]}}
      budgets: [{counts: words, policy: nope}, {}]
      prompt: {model: nope, template: 'Say {{text'}
";
        let errs = errors(yaml);
        for want in [
            "routes[0].retry: not allowed with ai",
            "routes[0].ai.providers.a.url: invalid URL",
            "routes[0].ai.providers.a.anthropic_version: not allowed with this kind",
            "routes[0].ai.providers.a.first_token_timeout: invalid duration",
            "routes[0].ai.providers.a: needs api_key_env",
            "routes[0].ai.providers.b.kind: unknown provider kind \"llama\"",
            "routes[0].ai.providers.b.api_key_env: the environment variable FERROGATE_TEST_UNSET_AI_KEY is not set",
            "routes[0].ai.models.fast.targets[0].provider: unknown provider \"c\"",
            "routes[0].ai.models.fast.targets[1].model: is required",
            "routes[0].ai.models.fast.targets[1].weight: must be more than 0",
            "routes[0].ai.models.fast.targets[1].tokenizer: unknown tokenizer \"p50k\"",
            "routes[0].ai.models.smart.targets: at least one target is required",
            "routes[0].ai.prices.m.input: must be a number of 0 or more",
            "routes[0].ai.prices.m.output: is required",
            "routes[0].ai.max_tokens: must be more than 0",
            "routes[0].ai.consumers.alice.models[0]: unknown model alias \"slow\"",
            "routes[0].ai.budgets[0].counts: unknown \"words\"",
            "routes[0].ai.budgets[0].policy: no rate-limit policy named \"nope\"",
            "routes[0].ai.budgets[1].policy: is required",
            "routes[0].ai.prompt.model: unknown model alias \"nope\"",
            "routes[0].ai.prompt.template: a `{{` without its `}}`",
        ] {
            assert!(
                errs.iter().any(|e| e.starts_with(want)),
                "missing {want:?} in {errs:#?}"
            );
        }
    }

    #[test]
    fn an_ai_route_with_one_openai_compatible_provider_loads() {
        let yaml = "
listeners: [{address: 127.0.0.1:0}]
routes:
  - match: {path: {prefix: /v1/}}
    ai:
      providers: {local: {kind: openai, url: 'http://127.0.0.1:9103/v1/'}}
      models: {fast: {targets: [{provider: local, model: tiny}]}}
";
        let c = parse(yaml, std::path::Path::new(".")).expect("valid");
        let ai = c.routes[0].ai.as_ref().expect("ai");
        assert_eq!(ai.providers[0].url, "http://127.0.0.1:9103/v1");
        assert_eq!(ai.models["fast"].targets[0].model, "tiny");
        assert_eq!(
            ai.models["fast"].targets[0].tokenizer,
            AiTokenizer::Cl100kBase
        );
    }

    #[test]
    fn the_tokenizer_follows_the_model_family_unless_configured() {
        for (model, want) in [
            ("gpt-4o-mini", AiTokenizer::O200kBase),
            ("gpt-4.1", AiTokenizer::O200kBase),
            ("openai/o3-mini", AiTokenizer::O200kBase),
            ("o1", AiTokenizer::O200kBase),
            ("chatgpt-4o-latest", AiTokenizer::O200kBase),
            ("gpt-4-turbo", AiTokenizer::Cl100kBase),
            ("gpt-3.5-turbo", AiTokenizer::Cl100kBase),
            ("text-embedding-3-small", AiTokenizer::Cl100kBase),
            ("llama3.2", AiTokenizer::Cl100kBase),
            ("o1x", AiTokenizer::Cl100kBase),
        ] {
            assert_eq!(AiTokenizer::of_model(model), want, "{model}");
        }
        let yaml = "
listeners: [{address: 127.0.0.1:0}]
routes:
  - match: {path: {prefix: /v1/}}
    ai:
      providers: {local: {kind: openai, url: 'http://127.0.0.1:9103/v1'}}
      models: {fast: {targets: [{provider: local, model: gpt-4o, tokenizer: estimate}]}}
";
        let c = parse(yaml, std::path::Path::new(".")).expect("valid");
        let t = &c.routes[0].ai.as_ref().expect("ai").models["fast"].targets[0];
        assert_eq!(t.tokenizer, AiTokenizer::Estimate);
    }
}
