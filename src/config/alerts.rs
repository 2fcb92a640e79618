//! Validation of the `alerts` section.

use std::time::Duration;

use super::file;
use super::model::{
    AlertRule, AlertScope, AlertSettings, Metric, NotifierKind, NotifierSettings, Severity,
};
use super::validate::{opt_duration, secret_or_env, Errors};

/// Validates `alerts`: rules name routes and groups that exist (`routes`, `upstreams`)
/// and read the history only where there is one.
pub(super) fn settings(
    errs: &mut Errors,
    a: &file::Alerts,
    routes: &[String],
    upstreams: &[String],
    history: bool,
) -> AlertSettings {
    errs.unknown_in("alerts", &a);
    let evaluate_every = opt_duration(
        errs,
        "alerts.evaluate_every",
        &a.evaluate_every,
        Duration::from_secs(10),
    );
    if !(Duration::from_millis(100)..=Duration::from_secs(600)).contains(&evaluate_every) {
        errs.push("alerts.evaluate_every", "between 100ms and 10m");
    }
    let repeat_every = opt_duration(
        errs,
        "alerts.repeat_every",
        &a.repeat_every,
        Duration::from_secs(4 * 3600),
    );
    if repeat_every < Duration::from_secs(1) {
        errs.push("alerts.repeat_every", "at least 1s");
    }
    let notifiers: Vec<NotifierSettings> = a
        .notifiers
        .iter()
        .map(|(name, n)| notifier(errs, name, n))
        .collect();
    let mut rules: Vec<AlertRule> = Vec::with_capacity(a.rules.len());
    for (i, r) in a.rules.iter().enumerate() {
        let at = format!("alerts.rules[{i}]");
        let rule = rule(errs, &at, r, &notifiers, routes, upstreams, history);
        if rules.iter().any(|o| o.name == rule.name) {
            errs.push(format!("{at}.name"), format!("{:?} is taken", rule.name));
        }
        rules.push(rule);
    }
    AlertSettings {
        evaluate_every,
        repeat_every,
        notifiers,
        rules,
    }
}

fn notifier(errs: &mut Errors, name: &str, n: &file::Notifier) -> NotifierSettings {
    let at = format!("alerts.notifiers.{name}");
    errs.unknown_in(&at, n);
    let kind = match n.kind.as_str() {
        "webhook" => NotifierKind::Webhook,
        "slack" => NotifierKind::Slack,
        "alertmanager" => NotifierKind::Alertmanager,
        other => {
            errs.push(
                format!("{at}.kind"),
                format!("unknown kind {other:?}; use webhook, slack or alertmanager"),
            );
            NotifierKind::Webhook
        }
    };
    let url = match (&n.url, &n.url_env) {
        (Some(u), None) => u.clone(),
        (None, Some(var)) => match std::env::var(var) {
            Ok(v) if !v.is_empty() => v,
            _ => {
                errs.push(
                    format!("{at}.url_env"),
                    format!("the environment variable {var} is not set"),
                );
                String::new()
            }
        },
        _ => {
            errs.push(&at, "needs exactly one of url and url_env");
            String::new()
        }
    };
    if !url.is_empty() {
        let good = url
            .parse::<http::Uri>()
            .is_ok_and(|u| matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some());
        if !good {
            // The value itself may be a secret (a Slack URL): not repeated.
            errs.push(format!("{at}.url"), "not an http:// or https:// URL");
        }
    }
    let secret = if kind == NotifierKind::Webhook {
        secret_or_env(errs, &at, n.secret.as_ref(), n.secret_env.as_ref(), 16)
    } else {
        if n.secret.is_some() || n.secret_env.is_some() {
            errs.push(&at, "only a webhook notifier signs with a secret");
        }
        Vec::new()
    };
    let max_attempts = n.max_attempts.unwrap_or(5);
    if !(1..=20).contains(&max_attempts) {
        errs.push(format!("{at}.max_attempts"), "must be 1 to 20");
    }
    let url = match kind {
        NotifierKind::Alertmanager => url.trim_end_matches('/').to_owned(),
        _ => url,
    };
    NotifierSettings {
        name: name.to_owned(),
        kind,
        url,
        secret,
        timeout: opt_duration(
            errs,
            &format!("{at}.timeout"),
            &n.timeout,
            Duration::from_secs(5),
        ),
        max_attempts,
    }
}

fn rule(
    errs: &mut Errors,
    at: &str,
    r: &file::AlertRule,
    notifiers: &[NotifierSettings],
    routes: &[String],
    upstreams: &[String],
    history: bool,
) -> AlertRule {
    errs.unknown_in(at, r);
    if r.name.is_empty() {
        errs.push(format!("{at}.name"), "empty name");
    }
    let metric = Metric::parse(&r.metric).unwrap_or_else(|| {
        errs.push(
            format!("{at}.metric"),
            format!(
                "unknown metric {:?}; use {} or healthy_targets",
                r.metric,
                Metric::HISTORY_NAMES
            ),
        );
        Metric::Requests
    });
    let scopes: Vec<AlertScope> = [
        r.route.clone().map(AlertScope::Route),
        r.upstream.clone().map(AlertScope::Upstream),
        r.target.clone().map(AlertScope::Target),
        r.consumer.clone().map(AlertScope::Consumer),
    ]
    .into_iter()
    .flatten()
    .collect();
    let scope = match scopes.as_slice() {
        [] => AlertScope::Gateway,
        [one] => one.clone(),
        _ => {
            errs.push(at, "at most one of route, upstream, target and consumer");
            AlertScope::Gateway
        }
    };
    match &scope {
        AlertScope::Route(n) if !routes.contains(n) => {
            errs.push(format!("{at}.route"), format!("no route named {n:?}"));
        }
        AlertScope::Upstream(n) if !upstreams.contains(n) => {
            errs.push(format!("{at}.upstream"), format!("no upstream named {n:?}"));
        }
        _ => {}
    }
    if metric == Metric::HealthyTargets {
        if !matches!(scope, AlertScope::Upstream(_)) {
            errs.push(format!("{at}.metric"), "healthy_targets needs an upstream");
        }
        if r.change_over.is_some() {
            errs.push(format!("{at}.change_over"), "not for healthy_targets");
        }
    } else if !history {
        errs.push(
            format!("{at}.metric"),
            "reads the traffic history: add a `history` section",
        );
    }
    let (above, threshold) = match (r.above, r.below) {
        (Some(t), None) => (true, t),
        (None, Some(t)) => (false, t),
        _ => {
            errs.push(at, "needs exactly one of above and below");
            (true, 0.0)
        }
    };
    if !threshold.is_finite() {
        errs.push(at, "the threshold is not a number");
    }
    let window = opt_duration(
        errs,
        &format!("{at}.window"),
        &r.window,
        Duration::from_secs(60),
    );
    if !(Duration::from_secs(1)..=Duration::from_secs(24 * 3600)).contains(&window) {
        errs.push(format!("{at}.window"), "between 1s and 24h");
    }
    let change_over = r.change_over.as_ref().map(|_| {
        let d = opt_duration(
            errs,
            &format!("{at}.change_over"),
            &r.change_over,
            Duration::ZERO,
        );
        if d < window {
            errs.push(
                format!("{at}.change_over"),
                "at least the window (the two windows would overlap)",
            );
        }
        d
    });
    let severity = match r.severity.as_deref() {
        None | Some("warning") => Severity::Warning,
        Some("info") => Severity::Info,
        Some("critical") => Severity::Critical,
        Some(other) => {
            errs.push(
                format!("{at}.severity"),
                format!("unknown severity {other:?}; use info, warning or critical"),
            );
            Severity::Warning
        }
    };
    let notify = match &r.notify {
        None => (0..notifiers.len()).collect(),
        Some(names) => names
            .iter()
            .enumerate()
            .filter_map(|(j, n)| {
                let found = notifiers.iter().position(|x| &x.name == n);
                if found.is_none() {
                    errs.push(
                        format!("{at}.notify[{j}]"),
                        format!("no notifier named {n:?}"),
                    );
                }
                found
            })
            .collect(),
    };
    AlertRule {
        name: r.name.clone(),
        metric,
        scope,
        above,
        threshold,
        window,
        change_over,
        hold: opt_duration(errs, &format!("{at}.for"), &r.for_, Duration::ZERO),
        severity,
        notify,
        summary: r.summary.clone(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::config::parse;
    use std::path::Path;

    fn errors(extra: &str) -> String {
        let yaml = format!(
            "listeners: [{{address: 127.0.0.1:0}}]\nupstreams: {{u: {{targets: [{{address: 127.0.0.1:9}}]}}}}\nroutes: [{{name: api, upstream: u}}]\n{extra}"
        );
        match parse(&yaml, Path::new(".")) {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn every_problem_of_the_alerts_section_is_reported_with_its_key_path() {
        let e = errors(
            "history: {}\nalerts:\n  evaluate_every: 1ms\n  colour: red\n  notifiers:\n    \
             hook: {kind: webhook, url: 'ftp://x', secret: short}\n    \
             chat: {kind: sms, url: 'http://127.0.0.1:9'}\n    \
             am: {kind: alertmanager, secret: 0123456789abcdef0, url: 'http://127.0.0.1:9093'}\n  \
             rules:\n    \
             - {name: a, metric: errors_ratio, route: nope, above: 1}\n    \
             - {name: a, metric: rps, above: 1, below: 2, window: soon, notify: [pager]}\n    \
             - {name: b, metric: healthy_targets, route: api, below: 1, severity: urgent}\n    \
             - {name: c, metric: p99, upstream: missing, consumer: x, above: 800}\n    \
             - {name: d, metric: rps, below: 1, window: 1m, change_over: 10s}\n",
        );
        for part in [
            "alerts.evaluate_every: between 100ms and 10m",
            "alerts.colour: unknown key",
            "alerts.notifiers.hook.url: not an http:// or https:// URL",
            "alerts.notifiers.hook: the secret must be at least 16 bytes",
            "alerts.notifiers.chat.kind: unknown kind \"sms\"",
            "alerts.notifiers.am: only a webhook notifier signs with a secret",
            "alerts.rules[0].metric: unknown metric \"errors_ratio\"",
            "alerts.rules[0].route: no route named \"nope\"",
            "alerts.rules[1].name: \"a\" is taken",
            "alerts.rules[1]: needs exactly one of above and below",
            "alerts.rules[1].window: invalid duration",
            "alerts.rules[1].notify[0]: no notifier named \"pager\"",
            "alerts.rules[2].metric: healthy_targets needs an upstream",
            "alerts.rules[2].severity: unknown severity \"urgent\"",
            "alerts.rules[3]: at most one of route, upstream, target and consumer",
            "alerts.rules[4].change_over: at least the window",
        ] {
            assert!(e.contains(part), "missing {part:?} in:\n{e}");
        }
    }

    #[test]
    fn a_rule_on_the_history_needs_the_history_and_a_health_rule_does_not() {
        let e = errors("alerts: {rules: [{name: a, metric: rps, above: 1}]}\n");
        assert!(
            e.contains("alerts.rules[0].metric: reads the traffic history"),
            "{e}"
        );
        let ok = errors(
            "alerts: {rules: [{name: a, metric: healthy_targets, upstream: u, below: 1}]}\n",
        );
        assert_eq!(ok, "");
    }

    #[test]
    fn a_secret_in_the_environment_is_read_and_an_unset_one_named() {
        let e = errors(
            "alerts: {notifiers: {h: {kind: webhook, url: 'http://127.0.0.1:9', \
             secret_env: FERROGATE_TEST_UNSET_ALERT_SECRET}}}\n",
        );
        assert!(
            e.contains("alerts.notifiers.h.secret_env: the environment variable FERROGATE_TEST_UNSET_ALERT_SECRET is not set"),
            "{e}"
        );
    }
}
