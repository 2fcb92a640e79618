//! Metrics of alerting (`alerts`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotifierLabel {
    pub notifier: String,
    /// `sent`, `failed` (every attempt failed) or `dropped` (too many in flight).
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Default)]
pub struct AlertMetrics {
    /// `ferrogate_alerts_firing`: alerts firing now.
    pub firing: Gauge,
    /// `ferrogate_alerts_pending`: alerts whose condition holds, not yet for long enough.
    pub pending: Gauge,
    /// `ferrogate_alert_notifications_total{notifier,outcome}`.
    pub notifications: Family<NotifierLabel, Counter>,
}

impl AlertMetrics {
    pub(super) fn register(&self, registry: &mut Registry) {
        registry.register(
            "ferrogate_alerts_firing",
            "Alerts firing now",
            self.firing.clone(),
        );
        registry.register(
            "ferrogate_alerts_pending",
            "Alerts whose condition holds, not yet for their `for` duration",
            self.pending.clone(),
        );
        registry.register(
            "ferrogate_alert_notifications",
            "Alert notifications by notifier and outcome",
            self.notifications.clone(),
        );
    }

    pub fn notified(&self, notifier: &str, outcome: &'static str) {
        self.notifications
            .get_or_create(&NotifierLabel {
                notifier: notifier.to_owned(),
                outcome,
            })
            .inc();
    }
}
