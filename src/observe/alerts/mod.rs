//! Alerting: rules evaluated on the traffic history (and on upstream health) at a fixed
//! interval, each alert's state (pending, firing, resolved), and notifications of its
//! changes (`notify.rs`), sent off the request path.
//!
//! One rule is one alert. Its condition is checked at every evaluation; holding, the alert
//! is pending, and fires once it has held for the rule's `for`. A firing alert is notified
//! when it fires, again every `repeat_every` while it fires, and once when it resolves.
//! States live in memory: a restart forgets them (a firing alert fires again after its
//! `for`).

mod notify;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;

use crate::config::model::{AlertRule, AlertScope, AlertSettings, Metric};
use crate::observe::history::{Dimension, History};
use crate::observe::metrics::AlertMetrics;

/// Resolved alerts kept for `GET /alerts`.
const RECENT: usize = 100;

/// What alert rules read of the upstream groups of the running configuration.
pub trait Upstreams {
    /// The target labels (`IP:PORT`) of group `name`.
    fn targets(&self, name: &str) -> Vec<Arc<str>>;
    /// Its targets that may take a request now; none for an unknown group.
    fn healthy(&self, name: &str) -> Option<usize>;
}

/// An alert as `GET /alerts` and the notifications show it.
#[derive(Debug, Clone, Serialize)]
pub struct AlertView {
    pub rule: String,
    pub severity: &'static str,
    pub state: &'static str,
    pub metric: String,
    pub scope: Scope,
    pub condition: String,
    /// The window, in seconds.
    pub window: u64,
    /// The last value evaluated (none where the metric had no value).
    pub value: Option<f64>,
    /// When the alert entered its state (unix seconds).
    pub since: u64,
    pub fired_at: Option<u64>,
    pub resolved_at: Option<u64>,
    pub summary: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Scope {
    pub dimension: &'static str,
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Pending,
    Firing,
}

/// One active alert.
#[derive(Debug)]
struct Active {
    phase: Phase,
    /// When the condition started holding (unix ms).
    since: u64,
    fired_at: Option<u64>,
    /// When notifiers were last told of it firing (unix ms).
    notified: u64,
    /// When Alertmanager receivers were last told (they must hear again before `endsAt`).
    refreshed: u64,
    value: Option<f64>,
}

/// Alert states, kept across reloads (by rule name).
pub struct Alerting {
    active: Mutex<HashMap<String, Active>>,
    recent: Mutex<VecDeque<AlertView>>,
    notifier: notify::Sender,
    metrics: AlertMetrics,
}

impl Alerting {
    pub fn new(metrics: AlertMetrics) -> Result<Alerting, String> {
        Ok(Alerting {
            active: Mutex::new(HashMap::new()),
            recent: Mutex::new(VecDeque::new()),
            notifier: notify::Sender::new(metrics.clone())?,
            metrics,
        })
    }

    /// Evaluates every rule at `now` (unix ms) and sends what changed; notifications run
    /// on `runtime`.
    pub fn evaluate(
        &self,
        settings: &AlertSettings,
        history: Option<&History>,
        upstreams: &dyn Upstreams,
        now: u64,
        runtime: &tokio::runtime::Handle,
    ) {
        let mut active = lock(&self.active);
        active.retain(|name, _| settings.rules.iter().any(|r| &r.name == name));
        for rule in &settings.rules {
            let value = value(rule, history, upstreams, now);
            let holds = value.is_some_and(|v| {
                if rule.above {
                    v > rule.threshold
                } else {
                    v < rule.threshold
                }
            });
            let hold_ms = rule.hold.as_millis() as u64;
            match (active.get_mut(&rule.name), holds) {
                (None, false) => {}
                (None, true) => {
                    let mut a = Active {
                        phase: Phase::Pending,
                        since: now,
                        fired_at: None,
                        notified: 0,
                        refreshed: 0,
                        value,
                    };
                    if hold_ms == 0 {
                        self.fire(settings, rule, &mut a, now, runtime);
                    }
                    active.insert(rule.name.clone(), a);
                }
                (Some(a), true) => {
                    a.value = value;
                    match a.phase {
                        Phase::Pending if now.saturating_sub(a.since) >= hold_ms => {
                            self.fire(settings, rule, a, now, runtime)
                        }
                        Phase::Pending => {}
                        Phase::Firing => self.repeat(settings, rule, a, now, runtime),
                    }
                }
                (Some(a), false) => {
                    a.value = value;
                    if a.phase == Phase::Firing {
                        let view = view(rule, a, "resolved", Some(now));
                        self.notifier.send(settings, rule, &view, now, runtime);
                        let mut recent = lock(&self.recent);
                        if recent.len() == RECENT {
                            recent.pop_back();
                        }
                        recent.push_front(view);
                    }
                    active.remove(&rule.name);
                }
            }
        }
        let firing = active.values().filter(|a| a.phase == Phase::Firing).count();
        self.metrics.firing.set(firing as i64);
        self.metrics.pending.set((active.len() - firing) as i64);
    }

    fn fire(
        &self,
        settings: &AlertSettings,
        rule: &AlertRule,
        a: &mut Active,
        now: u64,
        runtime: &tokio::runtime::Handle,
    ) {
        a.phase = Phase::Firing;
        a.fired_at = Some(now);
        a.notified = now;
        a.refreshed = now;
        tracing::warn!(
            alert = %rule.name,
            value = a.value.unwrap_or(f64::NAN),
            "alert firing: {} of {} {}",
            rule.metric.name(),
            describe_scope(&rule.scope),
            condition(rule),
        );
        let view = view(rule, a, "firing", None);
        self.notifier.send(settings, rule, &view, now, runtime);
    }

    /// Tells the notifiers again of a firing alert, when its time has come: every
    /// `repeat_every`, and Alertmanager more often (it ends an alert it has not heard of).
    fn repeat(
        &self,
        settings: &AlertSettings,
        rule: &AlertRule,
        a: &mut Active,
        now: u64,
        runtime: &tokio::runtime::Handle,
    ) {
        let repeat = settings.repeat_every.as_millis() as u64;
        let refresh = notify::refresh_every(settings).as_millis() as u64;
        let view = view(rule, a, "firing", None);
        if now.saturating_sub(a.notified) >= repeat {
            a.notified = now;
            a.refreshed = now;
            self.notifier.send(settings, rule, &view, now, runtime);
        } else if now.saturating_sub(a.refreshed) >= refresh {
            a.refreshed = now;
            self.notifier.refresh(settings, rule, &view, now, runtime);
        }
    }

    /// Active alerts (firing first, then by rule) and recently resolved ones (newest first).
    pub fn views(&self, settings: Option<&AlertSettings>) -> (Vec<AlertView>, Vec<AlertView>) {
        let active = lock(&self.active);
        let mut out: Vec<AlertView> = settings
            .into_iter()
            .flat_map(|s| s.rules.iter())
            .filter_map(|rule| {
                let a = active.get(&rule.name)?;
                let state = match a.phase {
                    Phase::Pending => "pending",
                    Phase::Firing => "firing",
                };
                Some(view(rule, a, state, None))
            })
            .collect();
        out.sort_by(|a, b| b.state.cmp(a.state).then_with(|| a.rule.cmp(&b.rule)));
        let recent = lock(&self.recent).iter().cloned().collect();
        (out, recent)
    }
}

/// The value of a rule's metric at `now` (unix ms): over its window, or its relative
/// change against the window `change_over` before.
fn value(
    rule: &AlertRule,
    history: Option<&History>,
    ups: &dyn Upstreams,
    now: u64,
) -> Option<f64> {
    if rule.metric == Metric::HealthyTargets {
        return ups.healthy(rule.scope.name()).map(|n| n as f64);
    }
    let history = history?;
    let now_s = now / 1000;
    let window = rule.window.as_secs().max(1);
    let over = |to: u64| -> Option<f64> {
        let from = to.saturating_sub(window);
        let (dim, names) = names(&rule.scope, ups);
        let names: Vec<&str> = names.iter().map(|n| &**n).collect();
        let point = history.window(dim, &names, from, to).ok()?;
        // Whole 10-second points: the first starts before `from`.
        let seconds = to - from / crate::observe::history::FINE * crate::observe::history::FINE;
        point.value(rule.metric, seconds)
    };
    let now_value = over(now_s)?;
    match rule.change_over {
        None => Some(now_value),
        Some(back) => {
            let before = over(now_s.saturating_sub(back.as_secs()))?;
            (before != 0.0).then(|| (now_value - before) / before)
        }
    }
}

/// The history dimension and names a scope reads: a group reads its targets.
fn names(scope: &AlertScope, ups: &dyn Upstreams) -> (Dimension, Vec<Arc<str>>) {
    match scope {
        AlertScope::Gateway => (Dimension::Gateway, vec![Arc::from("")]),
        AlertScope::Route(n) => (Dimension::Route, vec![Arc::from(n.as_str())]),
        AlertScope::Target(n) => (Dimension::Target, vec![Arc::from(n.as_str())]),
        AlertScope::Consumer(n) => (Dimension::Consumer, vec![Arc::from(n.as_str())]),
        AlertScope::Upstream(n) => (Dimension::Target, ups.targets(n)),
    }
}

fn view(rule: &AlertRule, a: &Active, state: &'static str, resolved: Option<u64>) -> AlertView {
    AlertView {
        rule: rule.name.clone(),
        severity: rule.severity.as_str(),
        state,
        metric: rule.metric.name(),
        scope: Scope {
            dimension: rule.scope.dimension(),
            name: rule.scope.name().to_owned(),
        },
        condition: condition(rule),
        window: rule.window.as_secs(),
        value: a.value.filter(|v| v.is_finite()),
        since: resolved.unwrap_or(match a.fired_at {
            Some(f) if state == "firing" => f,
            _ => a.since,
        }) / 1000,
        fired_at: a.fired_at.map(|t| t / 1000),
        resolved_at: resolved.map(|t| t / 1000),
        summary: rule.summary.clone().unwrap_or_else(|| {
            format!(
                "{} of {} {}",
                rule.metric.name(),
                describe_scope(&rule.scope),
                condition(rule)
            )
        }),
    }
}

fn condition(rule: &AlertRule) -> String {
    let side = if rule.above { "above" } else { "below" };
    match rule.change_over {
        None => format!("{side} {}", rule.threshold),
        Some(d) => format!(
            "changed {side} {} against {} before",
            rule.threshold,
            describe(d)
        ),
    }
}

fn describe_scope(scope: &AlertScope) -> String {
    match scope {
        AlertScope::Gateway => "the gateway".into(),
        other => format!("{} {}", other.dimension(), other.name()),
    }
}

fn describe(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
