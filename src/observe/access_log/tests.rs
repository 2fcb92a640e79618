//! Tests of `access_log`.
#![allow(clippy::unwrap_used)]

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;

use serde_json::Value;

use super::*;

fn record<'a>(path: &'a str) -> Record<'a> {
    Record {
        time: UNIX_EPOCH + Duration::from_millis(1_795_446_245_123),
        request_id: "req-1",
        client_ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)),
        method: "GET",
        host: "api.example.com",
        path,
        status: 200,
        bytes_in: 17,
        bytes_out: 1024,
        duration: Duration::from_micros(1234),
        route: Some("r1"),
        consumer: None,
        upstream_target: Some("127.0.0.1:9001"),
        upstream_duration: Some(Duration::from_micros(900)),
        close_reason: None,
        geo: None,
        trace: None,
        ai: None,
    }
}

fn line(rec: &Record<'_>) -> String {
    let mut out = Vec::new();
    format_line(&mut out, rec);
    String::from_utf8(out).unwrap()
}

fn json_str(s: &str) -> String {
    let mut out = Vec::new();
    write_json_str(&mut out, s);
    String::from_utf8(out).unwrap()
}

fn time(ms_since_epoch: u64) -> String {
    let mut out = Vec::new();
    write_time(&mut out, UNIX_EPOCH + Duration::from_millis(ms_since_epoch));
    String::from_utf8(out).unwrap()
}

/// A log file under the temp dir, removed when dropped.
struct TempLog(PathBuf);

impl TempLog {
    fn new(name: &str) -> TempLog {
        let path = std::env::temp_dir().join(format!(
            "ferrogate-access-{}-{name}.log",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&path);
        TempLog(path)
    }

    fn open(&self) -> AccessLog {
        AccessLog::open(&LogTarget::File(self.0.clone())).unwrap()
    }

    fn lines(&self) -> Vec<Value> {
        read_lines(&self.0)
    }
}

impl Drop for TempLog {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn read_lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "cut line in {text:?}"
    );
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn record_is_one_json_line_with_every_field() {
    let text = line(&record("/users/42"));
    assert!(
        text.ends_with("}\n") && text.matches('\n').count() == 1,
        "{text}"
    );
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["time"], "2026-11-23T15:04:05.123Z");
    assert_eq!(v["request_id"], "req-1");
    assert_eq!(v["client_ip"], "192.0.2.7");
    assert_eq!(v["method"], "GET");
    assert_eq!(v["host"], "api.example.com");
    assert_eq!(v["path"], "/users/42");
    assert_eq!(v["status"], 200);
    assert_eq!(v["bytes_in"], 17);
    assert_eq!(v["bytes_out"], 1024);
    assert_eq!(v["duration_ms"], 1.234);
    assert_eq!(v["route"], "r1");
    assert_eq!(v["upstream"], "127.0.0.1:9001");
    assert_eq!(v["upstream_ms"], 0.9);
    assert_eq!(v.as_object().unwrap().len(), 13);
}

#[test]
fn fields_keep_the_documented_order() {
    let text = line(&record("/"));
    let keys = [
        "time",
        "request_id",
        "client_ip",
        "method",
        "host",
        "path",
        "status",
        "bytes_in",
        "bytes_out",
        "duration_ms",
        "route",
        "upstream",
        "upstream_ms",
    ];
    let positions: Vec<usize> = keys
        .iter()
        .map(|k| text.find(&format!("\"{k}\":")).unwrap())
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
}

#[test]
fn missing_route_and_upstream_are_null() {
    let rec = Record {
        route: None,
        consumer: None,
        upstream_target: None,
        upstream_duration: None,
        close_reason: None,
        ..record("/")
    };
    let v: Value = serde_json::from_str(&line(&rec)).unwrap();
    assert!(v["route"].is_null());
    assert!(v["upstream"].is_null());
    assert!(v["upstream_ms"].is_null());
}

#[test]
fn ipv6_client_is_written_in_text_form() {
    let rec = Record {
        client_ip: IpAddr::V6(Ipv6Addr::LOCALHOST),
        ..record("/")
    };
    let v: Value = serde_json::from_str(&line(&rec)).unwrap();
    assert_eq!(v["client_ip"], "::1");
}

#[test]
fn query_string_is_not_logged() {
    let v: Value = serde_json::from_str(&line(&record("/login?token=secret&x=1"))).unwrap();
    assert_eq!(v["path"], "/login");
    assert!(!line(&record("/login?token=secret")).contains("secret"));
}

#[test]
fn durations_are_milliseconds_with_microsecond_digits() {
    let mut out = Vec::new();
    for d in [0, 5, 999, 1000, 1234, 61_000_007] {
        write_millis(&mut out, Duration::from_micros(d));
        out.push(b' ');
    }
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "0.000 0.005 0.999 1.000 1.234 61000.007 "
    );
}

#[test]
fn quotes_and_backslashes_are_escaped() {
    assert_eq!(json_str(r#"/a"b\c"#), r#""/a\"b\\c""#);
}

#[test]
fn control_bytes_are_escaped() {
    assert_eq!(json_str("a\nb\rc\td"), r#""a\nb\rc\td""#);
    assert_eq!(
        json_str("\u{0}\u{1}\u{1b}[31m\u{1f}\u{7f}"),
        r#""\u0000\u0001\u001b[31m\u001f\u007f""#
    );
}

#[test]
fn unicode_passes_through_unchanged() {
    assert_eq!(
        json_str("/caf\u{e9}/\u{1f600}/\u{2028}"),
        "\"/caf\u{e9}/\u{1f600}/\u{2028}\""
    );
}

#[test]
fn hostile_strings_round_trip_through_json() {
    let nasty: String = (0u8..=0x7f)
        .map(char::from)
        .chain("\"\\\u{e9}\u{1f600}\u{feff}".chars())
        .collect();
    let rec = Record {
        request_id: &nasty,
        method: &nasty,
        host: &nasty,
        route: Some(&nasty),
        consumer: None,
        upstream_target: Some(&nasty),
        ..record(&nasty)
    };
    let text = line(&rec);
    assert_eq!(
        text.matches('\n').count(),
        1,
        "a raw newline would split the line"
    );
    let v: Value = serde_json::from_str(&text).unwrap();
    let without_query = nasty.split_once('?').unwrap().0;
    assert_eq!(v["path"], without_query);
    for key in ["request_id", "method", "host", "route", "upstream"] {
        assert_eq!(v[key], nasty.as_str(), "{key}");
    }
}

#[test]
fn log_can_be_shared_across_workers() {
    fn shareable<T: Send + Sync>() {}
    shareable::<AccessLog>();
}

#[test]
fn epoch_is_formatted_as_1970() {
    assert_eq!(time(0), "1970-01-01T00:00:00.000Z");
}

#[test]
fn known_timestamp_is_formatted_in_utc_with_millis() {
    assert_eq!(time(1_795_446_245_123), "2026-11-23T15:04:05.123Z");
}

#[test]
fn leap_day_is_formatted() {
    assert_eq!(time(1_709_251_199_999), "2024-02-29T23:59:59.999Z");
    assert_eq!(
        time(951_868_800_000 - 86_400_000),
        "2000-02-29T00:00:00.000Z"
    );
}

#[test]
fn century_without_leap_day_rolls_into_march() {
    // 2100-02-28T12:00:00Z plus one day.
    assert_eq!(
        time(4_107_499_200_000 + 86_400_000),
        "2100-03-01T12:00:00.000Z"
    );
}

#[test]
fn time_before_epoch_is_written_as_epoch() {
    let mut out = Vec::new();
    write_time(&mut out, UNIX_EPOCH - Duration::from_secs(1));
    assert_eq!(out, b"1970-01-01T00:00:00.000Z");
}

#[test]
fn civil_dates_match_a_day_by_day_calendar() {
    let (mut y, mut m, mut d) = (1970u64, 1u64, 1u64);
    for days in 0..200_000u64 {
        assert_eq!(civil_from_days(days), (y, m, d), "day {days}");
        let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let month_len = match m {
            2 if leap => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        };
        d += 1;
        if d > month_len {
            d = 1;
            m += 1;
            if m > 12 {
                m = 1;
                y += 1;
            }
        }
    }
}

#[test]
fn file_receives_lines_on_flush() {
    let tmp = TempLog::new("flush");
    let log = tmp.open();
    log.write(&record("/a"));
    log.write(&record("/b"));
    assert!(tmp.lines().is_empty(), "lines wait in the thread buffer");
    log.flush();
    let lines = tmp.lines();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["path"], "/a");
    assert_eq!(lines[1]["path"], "/b");
}

#[test]
fn file_is_appended_to_not_truncated() {
    let tmp = TempLog::new("append");
    std::fs::write(&tmp.0, "{\"earlier\":true}\n").unwrap();
    let log = tmp.open();
    log.write(&record("/a"));
    log.flush();
    let lines = tmp.lines();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["earlier"], true);
}

#[test]
fn full_buffer_is_written_without_flush() {
    let tmp = TempLog::new("full");
    let log = tmp.open();
    let mut written = 0;
    while tmp.lines().is_empty() {
        log.write(&record("/x"));
        written += 1;
        assert!(written < 1000, "nothing written after {written} lines");
    }
    let line_len = line(&record("/x")).len();
    assert!(written * line_len >= HAND_OVER_AT);
    assert_eq!(tmp.lines().len(), written);
    flush_current_thread();
}

#[test]
fn ending_thread_writes_its_buffered_lines() {
    let tmp = TempLog::new("thread-exit");
    let log = Arc::new(tmp.open());
    let worker = log.clone();
    std::thread::spawn(move || {
        worker.write(&record("/a"));
        worker.write(&record("/b"));
    })
    .join()
    .unwrap();
    assert_eq!(tmp.lines().len(), 2);
}

#[test]
fn switching_logs_writes_the_previous_logs_lines_there() {
    let (old, new) = (TempLog::new("old"), TempLog::new("new"));
    let (old_log, new_log) = (old.open(), new.open());
    old_log.write(&record("/old"));
    new_log.write(&record("/new"));
    assert_eq!(old.lines().len(), 1);
    assert!(new.lines().is_empty());
    new_log.flush();
    assert_eq!(new.lines()[0]["path"], "/new");
}

#[test]
fn lines_from_many_threads_are_never_interleaved() {
    let tmp = TempLog::new("threads");
    let log = Arc::new(tmp.open());
    let long_path = format!("/{}", "p".repeat(3000));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let log = log.clone();
            let path = format!("{long_path}/{t}");
            std::thread::spawn(move || {
                for _ in 0..500 {
                    log.write(&record(&path));
                }
                log.flush();
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let lines = tmp.lines();
    assert_eq!(lines.len(), 2000);
    for t in 0..4 {
        let want = format!("{long_path}/{t}");
        assert_eq!(
            lines.iter().filter(|v| v["path"] == want.as_str()).count(),
            500
        );
    }
}

#[test]
fn reopen_follows_a_moved_file() {
    let (tmp, moved) = (TempLog::new("rotate"), TempLog::new("rotated"));
    let log = tmp.open();
    log.write(&record("/before"));
    log.flush();
    std::fs::rename(&tmp.0, &moved.0).unwrap();
    log.reopen().unwrap();
    log.write(&record("/after"));
    log.flush();
    assert_eq!(moved.lines()[0]["path"], "/before");
    assert_eq!(tmp.lines()[0]["path"], "/after");
    assert_eq!(tmp.lines().len(), 1);
}

#[test]
fn known_geo_fields_are_written_and_unknown_ones_left_out() {
    let loc = crate::geo::Location {
        country: crate::geo::Code::new("DE"),
        asn: Some(64512),
        label: Some(crate::geo::Label::from("eu")),
        ..Default::default()
    };
    let rec = Record {
        geo: Some(&loc),
        ..record("/")
    };
    let v: Value = serde_json::from_str(&line(&rec)).unwrap();
    assert_eq!(v["geo"]["country"], "DE");
    assert_eq!(v["geo"]["asn"], "64512");
    assert_eq!(v["geo"]["label"], "eu");
    assert!(v["geo"].get("continent").is_none());
    assert!(v.get("geo").is_some());
    assert!(serde_json::from_str::<Value>(&line(&record("/")))
        .unwrap()
        .get("geo")
        .is_none());
}
