//! Token and spend budgets of an `ai` route, counted by rate-limit policies: a request is
//! admitted against an estimate of its weight (input tokens from its text, output tokens
//! from its `max_tokens`) and settled with the real count once the answer has ended (the
//! difference charged or given back), so a budget is exact after the fact and never
//! overrun by more than one request's estimate error.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use super::front::Checked;
use super::usage::{self, Usage};
use super::ApiError;
use crate::config::model::{AiCounts, AiPrice, AiRoute};
use crate::ratelimit::key::KeyContext;
use crate::ratelimit::spec::Decision;
use crate::ratelimit::Policy;

static LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit-tokens");
static REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining-tokens");
static RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset-tokens");

/// One budget of the route, compiled.
pub struct Budget {
    pub policy: Arc<Policy>,
    pub counts: AiCounts,
    pub estimate_output: u64,
}

/// What one request was charged, to settle when its answer ends.
#[derive(Default)]
pub struct Charges {
    list: Vec<Charge>,
    /// The first token budget's decision, for the `x-ratelimit-*-tokens` fields.
    tokens: Option<Decision>,
    ai: Option<Arc<AiRoute>>,
}

struct Charge {
    policy: Arc<Policy>,
    key: Vec<u8>,
    counts: AiCounts,
    charged: u64,
}

/// A request's weight under a budget.
fn weight(counts: AiCounts, u: &Usage, price: Option<&AiPrice>) -> u64 {
    match counts {
        AiCounts::Total => u.total(),
        AiCounts::Input => u.input,
        AiCounts::Output => u.output,
        // In millionths of the currency, rounded up.
        AiCounts::Cost => (u.cost(price) * 1_000_000.0).ceil() as u64,
    }
}

/// The price of the alias's first target, for a cost estimate before routing.
fn first_price<'a>(ai: &'a AiRoute, alias: &str) -> Option<&'a AiPrice> {
    let t = ai.models.get(alias)?.targets.first()?;
    ai.prices.get(&t.model)
}

/// Admits `req` under every budget, in order; a refusal gives back what the budgets before
/// it counted. `Err` carries the error and the fields to answer with.
pub async fn admit(
    budgets: &[Budget],
    ai: &Arc<AiRoute>,
    ctx: &KeyContext<'_>,
    req: &Checked,
) -> Result<Charges, (ApiError, HeaderMap)> {
    let mut charges = Charges {
        ai: Some(ai.clone()),
        ..Charges::default()
    };
    let input = usage::estimate_messages(&req.body["messages"]);
    let price = first_price(ai, &req.alias);
    for b in budgets {
        let estimate = Usage {
            input,
            output: req.max_tokens.unwrap_or(b.estimate_output),
            estimated: true,
        };
        let w = weight(b.counts, &estimate, price);
        let key = b.policy.key_of(ctx);
        let decision = match b.policy.consume(&key, w).await {
            Ok(d) => d,
            Err(()) => {
                charges.refund().await;
                let e = ApiError::upstream(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the token budget cannot be checked now",
                );
                return Err((e, HeaderMap::new()));
            }
        };
        if b.counts != AiCounts::Cost && charges.tokens.is_none() {
            charges.tokens = Some(decision);
        }
        if !decision.allowed {
            let mut headers = HeaderMap::new();
            write_fields(&mut headers, charges.tokens.as_ref().unwrap_or(&decision));
            charges.refund().await;
            let what = match b.counts {
                AiCounts::Cost => "spend",
                _ => "token",
            };
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                format!(
                    "{what} budget {} exhausted: limit {}, remaining {}, this request needs about {w}",
                    b.policy.name, decision.limit, decision.remaining
                ),
            );
            e.code = Some(match b.counts {
                AiCounts::Cost => "insufficient_quota".to_owned(),
                _ => "rate_limit_exceeded".to_owned(),
            });
            e.retry_after = decision.retry_after.map(|d| d.as_secs().max(1));
            return Err((e, headers));
        }
        charges.list.push(Charge {
            policy: b.policy.clone(),
            key,
            counts: b.counts,
            charged: w,
        });
    }
    Ok(charges)
}

impl Charges {
    /// `x-ratelimit-limit-tokens`, `-remaining-tokens`, `-reset-tokens`, as OpenAI writes them.
    pub fn write_fields(&self, headers: &mut HeaderMap) {
        if let Some(d) = &self.tokens {
            write_fields(headers, d);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Settles every charge with the real usage of the answer by `model` (`None`: no answer,
    /// everything is given back).
    pub async fn settle(self, used: Option<(Usage, &str)>) {
        let price = match (&self.ai, used) {
            (Some(ai), Some((_, model))) => ai.prices.get(model).copied(),
            _ => None,
        };
        for c in &self.list {
            let real = used.map_or(0, |(u, _)| weight(c.counts, &u, price.as_ref()));
            let delta = i64::try_from(real).unwrap_or(i64::MAX)
                - i64::try_from(c.charged).unwrap_or(i64::MAX);
            c.policy.settle(&c.key, delta).await;
        }
    }

    async fn refund(&mut self) {
        let list = std::mem::take(&mut self.list);
        for c in &list {
            let back = i64::try_from(c.charged).unwrap_or(i64::MAX);
            c.policy.settle(&c.key, -back).await;
        }
    }
}

fn write_fields(headers: &mut HeaderMap, d: &Decision) {
    headers.insert(LIMIT.clone(), HeaderValue::from(d.limit));
    headers.insert(REMAINING.clone(), HeaderValue::from(d.remaining));
    if let Ok(v) = HeaderValue::from_str(&reset_text(d.reset)) {
        headers.insert(RESET.clone(), v);
    }
}

/// A wait as OpenAI writes it: `250ms`, `12s`, `6m0s`, `1h2m3s`.
pub fn reset_text(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let s = d.as_secs() + u64::from(d.subsec_millis() > 0);
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, m, s) => format!("{h}h{m}m{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_times_are_written_as_openai_does() {
        assert_eq!(reset_text(Duration::from_millis(250)), "250ms");
        assert_eq!(reset_text(Duration::from_millis(11_200)), "12s");
        assert_eq!(reset_text(Duration::from_secs(360)), "6m0s");
        assert_eq!(reset_text(Duration::from_secs(3723)), "1h2m3s");
    }
}
