//! The `alerts` section: rules evaluated on the traffic history and the notifiers they
//! tell, as written.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

use super::Unknown;

/// Alerting: rules over the traffic history (and upstream health), and where their state
/// changes are sent.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Alerts {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// How often every rule is evaluated (default 10s).
    #[serde(default)]
    pub evaluate_every: Option<String>,
    /// A firing alert is notified again this often while it fires (default 4h).
    #[serde(default)]
    pub repeat_every: Option<String>,
    /// Where alerts are sent, by name.
    #[serde(default)]
    pub notifiers: BTreeMap<String, Notifier>,
    /// The rules.
    #[serde(default)]
    pub rules: Vec<AlertRule>,
}

/// `alerts.notifiers.NAME`: one receiver of alert notifications.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Notifier {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// `webhook` (JSON, HMAC signed), `slack` (a Slack-compatible incoming webhook) or
    /// `alertmanager` (the Alertmanager v2 API).
    pub kind: String,
    /// Where to send: the webhook or Slack URL, or the Alertmanager's base URL
    /// (`http://HOST:9093`).
    #[serde(default)]
    pub url: Option<String>,
    /// The environment variable holding the URL instead (a Slack URL is a secret).
    #[serde(default)]
    pub url_env: Option<String>,
    /// `webhook`: the HMAC-SHA256 key of the `Ferrogate-Signature` field (at least 16
    /// bytes).
    #[serde(default)]
    pub secret: Option<String>,
    /// `webhook`: the environment variable holding the key instead.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// One attempt waits at most this long (default 5s).
    #[serde(default)]
    pub timeout: Option<String>,
    /// Attempts per notification before it is given up, with exponential backoff between
    /// them (default 5).
    #[serde(default)]
    pub max_attempts: Option<u32>,
}

/// `alerts.rules[]`: a condition on one metric of one scope.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct AlertRule {
    #[serde(flatten)]
    #[schemars(skip)]
    pub unknown: Unknown,
    /// The rule's name (unique): the alert's name in notifications.
    pub name: String,
    /// What is watched: `requests`, `rps`, `errors` (5xx answers), `error_ratio` (5xx share),
    /// `4xx`, `5xx`, `rate_limited`, `bytes_in`, `bytes_out`, `p50`, `p90`, `p95`, `p99`
    /// (milliseconds), or `healthy_targets` (of an `upstream`).
    pub metric: String,
    /// Scope: this route (by name).
    #[serde(default)]
    pub route: Option<String>,
    /// Scope: this upstream group (its targets together).
    #[serde(default)]
    pub upstream: Option<String>,
    /// Scope: this target (`IP:PORT`).
    #[serde(default)]
    pub target: Option<String>,
    /// Scope: this consumer.
    #[serde(default)]
    pub consumer: Option<String>,
    /// The condition holds while the value is above this.
    #[serde(default)]
    pub above: Option<f64>,
    /// The condition holds while the value is below this.
    #[serde(default)]
    pub below: Option<f64>,
    /// The value is the metric over this last stretch of time, in whole 10-second points
    /// (default 1m).
    #[serde(default)]
    pub window: Option<String>,
    /// Compare the relative change (0.5 = +50 %) of the metric against the same window
    /// this long before, instead of the metric itself.
    #[serde(default)]
    pub change_over: Option<String>,
    /// The condition must hold this long before the alert fires (default 0s).
    #[serde(default, rename = "for")]
    pub for_: Option<String>,
    /// `info`, `warning` (default) or `critical`.
    #[serde(default)]
    pub severity: Option<String>,
    /// The notifiers told (default: all).
    #[serde(default)]
    pub notify: Option<Vec<String>>,
    /// A line for people, sent with the alert.
    #[serde(default)]
    pub summary: Option<String>,
}
