//! Validation of the `tracing` and `history` sections.

use std::time::Duration;

use super::file;
use super::model::{HistorySettings, OtlpProtocol, TracingSettings};
use super::validate::{opt_duration, Errors};

/// Validates `tracing`; the exporter is built when the snapshot is.
pub(super) fn settings(errs: &mut Errors, t: &file::Tracing) -> TracingSettings {
    errs.unknown_in("tracing", &t);
    errs.unknown_in("tracing.otlp", &t.otlp);
    let ratio = t.sample_ratio.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&ratio) {
        errs.push("tracing.sample_ratio", "a share between 0 and 1");
    }
    let slower_than = t.sample_slower_than.as_ref().map(|_| {
        opt_duration(
            errs,
            "tracing.sample_slower_than",
            &t.sample_slower_than,
            Duration::MAX,
        )
    });
    let protocol = match t.otlp.protocol.as_deref() {
        None | Some("http") => OtlpProtocol::Http,
        Some("grpc") => OtlpProtocol::Grpc,
        Some(other) => {
            errs.push(
                "tracing.otlp.protocol",
                format!("unknown protocol {other:?}; use http or grpc"),
            );
            OtlpProtocol::Http
        }
    };
    let endpoint = endpoint(errs, &t.otlp.endpoint, protocol);
    let mut headers = Vec::new();
    for (name, value) in &t.otlp.headers {
        let at = format!("tracing.otlp.headers.{name}");
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            errs.push(at, "not a valid field name");
        } else if http::HeaderValue::from_str(value).is_err() {
            errs.push(at, "not a valid field value");
        } else {
            headers.push((name.to_ascii_lowercase(), value.clone()));
        }
    }
    let queue_size = t.queue_size.unwrap_or(4096);
    let batch_size = t.batch_size.unwrap_or(512);
    for (key, n) in [("queue_size", queue_size), ("batch_size", batch_size)] {
        if n == 0 || n > 1_000_000 {
            errs.push(format!("tracing.{key}"), "between 1 and 1000000");
        }
    }
    let service_name = t.service_name.clone().unwrap_or_else(|| "ferrogate".into());
    if service_name.is_empty() {
        errs.push("tracing.service_name", "empty name");
    }
    TracingSettings {
        sample_ratio: ratio,
        sample_errors: t.sample_errors.unwrap_or(true),
        sample_slower_than: slower_than,
        service_name,
        endpoint,
        protocol,
        headers,
        timeout: opt_duration(
            errs,
            "tracing.otlp.timeout",
            &t.otlp.timeout,
            Duration::from_secs(10),
        ),
        queue_size,
        batch_size,
        export_interval: opt_duration(
            errs,
            "tracing.export_interval",
            &t.export_interval,
            Duration::from_secs(1),
        ),
    }
}

/// Validates `history`.
pub(super) fn history(errs: &mut Errors, h: &file::History) -> HistorySettings {
    errs.unknown_in("history", &h);
    let day = Duration::from_secs(24 * 3600);
    let keep_fine = opt_duration(errs, "history.keep_10s", &h.keep_10s, day);
    let keep_coarse = opt_duration(errs, "history.keep_1m", &h.keep_1m, 30 * day);
    for (key, d) in [("keep_10s", keep_fine), ("keep_1m", keep_coarse)] {
        if d < Duration::from_secs(60) || d > 400 * day {
            errs.push(format!("history.{key}"), "between 1m and 400d");
        }
    }
    let max_names = h.max_names.unwrap_or(100);
    if max_names == 0 || max_names > 100_000 {
        errs.push("history.max_names", "between 1 and 100000");
    }
    HistorySettings {
        keep_fine,
        keep_coarse,
        max_names,
    }
}

/// The URL spans are sent to: with HTTP, `/v1/traces` when no path is given.
fn endpoint(errs: &mut Errors, given: &str, protocol: OtlpProtocol) -> String {
    let at = "tracing.otlp.endpoint";
    let uri = match given.parse::<http::Uri>() {
        Ok(u) if matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some() => u,
        _ => {
            errs.push(at, format!("{given:?} is not an http:// or https:// URL"));
            return given.to_owned();
        }
    };
    let bare = matches!(uri.path(), "" | "/");
    match protocol {
        OtlpProtocol::Http if bare => format!("{}/v1/traces", given.trim_end_matches('/')),
        OtlpProtocol::Grpc if !bare => {
            errs.push(at, "a gRPC endpoint has no path");
            given.to_owned()
        }
        _ => given.to_owned(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::config::parse;
    use std::path::Path;

    fn errors(tracing: &str) -> String {
        let yaml = format!(
            "listeners: [{{address: 127.0.0.1:0}}]\nupstreams: {{u: {{targets: [{{address: 127.0.0.1:9}}]}}}}\nroutes: [{{upstream: u}}]\ntracing: {tracing}\n"
        );
        match parse(&yaml, Path::new(".")) {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn every_problem_of_the_tracing_section_is_reported_with_its_key_path() {
        let e = errors(
            "{sample_ratio: 2, sample_slower_than: soon, batch_size: 0, \
             otlp: {endpoint: 'ftp://x', protocol: thrift, headers: {'a b': x}}, colour: red}",
        );
        for part in [
            "tracing.sample_ratio: a share between 0 and 1",
            "tracing.sample_slower_than: invalid duration",
            "tracing.batch_size: between 1 and 1000000",
            "tracing.otlp.endpoint: \"ftp://x\" is not an http:// or https:// URL",
            "tracing.otlp.protocol: unknown protocol \"thrift\"",
            "tracing.otlp.headers.a b: not a valid field name",
            "tracing.colour",
        ] {
            assert!(e.contains(part), "{part} missing from:\n{e}");
        }
        assert!(
            errors("{otlp: {endpoint: 'http://127.0.0.1:4317/x', protocol: grpc}}")
                .contains("a gRPC endpoint has no path")
        );
        assert_eq!(errors("{otlp: {endpoint: 'http://127.0.0.1:4318'}}"), "");
    }
}
