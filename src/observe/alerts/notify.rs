//! Alert notifications: the document each notifier kind takes, sent by tasks of their own
//! so that a slow or broken receiver never holds up an evaluation, let alone a request.
//! At most `MAX_IN_FLIGHT` notifications are under way; past that, new ones are dropped
//! and counted.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::AlertView;
use crate::cache::date::rfc3339_ms;
use crate::config::model::{AlertRule, AlertSettings, NotifierKind, NotifierSettings};
use crate::observe::metrics::AlertMetrics;
use crate::webhook::{post, Post};

const MAX_IN_FLIGHT: usize = 64;

/// Alertmanager ends an alert it has not heard of by its `endsAt`: a firing alert is sent
/// to it again this often, with `endsAt` four times as far.
pub(super) fn refresh_every(settings: &AlertSettings) -> Duration {
    settings
        .repeat_every
        .min(Duration::from_secs(60))
        .max(settings.evaluate_every)
}

pub(super) struct Sender {
    client: reqwest::Client,
    in_flight: Arc<AtomicUsize>,
    metrics: AlertMetrics,
}

impl Sender {
    pub(super) fn new(metrics: AlertMetrics) -> Result<Sender, String> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("ferrogate/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("alert notifications: {e}"))?;
        Ok(Sender {
            client,
            in_flight: Arc::new(AtomicUsize::new(0)),
            metrics,
        })
    }

    /// Tells every notifier of `rule` of `alert` (at `now`, unix ms).
    pub(super) fn send(
        &self,
        settings: &AlertSettings,
        rule: &AlertRule,
        alert: &AlertView,
        now: u64,
        runtime: &tokio::runtime::Handle,
    ) {
        for n in rule
            .notify
            .iter()
            .filter_map(|i| settings.notifiers.get(*i))
        {
            self.spawn(n, document(n, settings, alert, now), runtime);
        }
    }

    /// Tells the Alertmanager notifiers of `rule` that `alert` still fires.
    pub(super) fn refresh(
        &self,
        settings: &AlertSettings,
        rule: &AlertRule,
        alert: &AlertView,
        now: u64,
        runtime: &tokio::runtime::Handle,
    ) {
        for n in rule
            .notify
            .iter()
            .filter_map(|i| settings.notifiers.get(*i))
        {
            if n.kind == NotifierKind::Alertmanager {
                self.spawn(n, document(n, settings, alert, now), runtime);
            }
        }
    }

    fn spawn(&self, n: &NotifierSettings, body: Value, runtime: &tokio::runtime::Handle) {
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= MAX_IN_FLIGHT {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            self.metrics.notified(&n.name, "dropped");
            crate::warn_throttled!(
                "alert notification to {} dropped: too many in flight",
                n.name
            );
            return;
        }
        let url = match n.kind {
            NotifierKind::Alertmanager => format!("{}/api/v2/alerts", n.url),
            _ => n.url.clone(),
        };
        let n = n.clone();
        let client = self.client.clone();
        let in_flight = self.in_flight.clone();
        let metrics = self.metrics.clone();
        runtime.spawn(async move {
            let sent = post(
                &client,
                Post {
                    url: &url,
                    body: body.to_string().into_bytes(),
                    secret: &n.secret,
                    fields: &[],
                    timeout: n.timeout,
                    max_attempts: n.max_attempts,
                },
            )
            .await;
            in_flight.fetch_sub(1, Ordering::AcqRel);
            match sent {
                Ok(()) => metrics.notified(&n.name, "sent"),
                Err(why) => {
                    metrics.notified(&n.name, "failed");
                    // The URL may hold a secret (Slack): the notifier is named instead.
                    tracing::warn!("alert notification to {} failed: {why}", n.name);
                }
            }
        });
    }
}

/// What notifier `n` is sent for `alert`.
fn document(n: &NotifierSettings, settings: &AlertSettings, alert: &AlertView, now: u64) -> Value {
    match n.kind {
        NotifierKind::Webhook => json!({
            "version": 1,
            "status": alert.state,
            "alerts": [alert],
        }),
        NotifierKind::Slack => json!({ "text": slack_text(alert) }),
        NotifierKind::Alertmanager => {
            let mut labels = json!({
                "alertname": alert.rule,
                "severity": alert.severity,
                "source": "ferrogate",
            });
            if !alert.scope.name.is_empty() {
                labels[alert.scope.dimension] = json!(alert.scope.name);
            }
            let ends = match alert.resolved_at {
                Some(t) => t * 1000,
                None => now + 4 * refresh_every(settings).as_millis() as u64,
            };
            let mut annotations = json!({
                "summary": alert.summary,
                "condition": format!("{} {}", alert.metric, alert.condition),
            });
            if let Some(v) = alert.value {
                annotations["value"] = json!(v.to_string());
            }
            json!([{
                "labels": labels,
                "annotations": annotations,
                "startsAt": rfc3339_ms(alert.fired_at.unwrap_or(now / 1000) * 1000),
                "endsAt": rfc3339_ms(ends),
            }])
        }
    }
}

fn slack_text(alert: &AlertView) -> String {
    let mark = if alert.state == "resolved" {
        ":large_green_circle:"
    } else {
        ":red_circle:"
    };
    let value = alert
        .value
        .map_or(String::new(), |v| format!(" (value {})", round(v)));
    format!(
        "{mark} [{}] {} ({}): {}{value}",
        alert.state.to_uppercase(),
        alert.rule,
        alert.severity,
        alert.summary
    )
}

/// Four significant digits, for people.
fn round(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return v.to_string();
    }
    let digits = (3 - v.abs().log10().floor() as i32).max(0) as usize;
    format!("{v:.digits$}")
}
