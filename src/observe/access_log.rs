//! The JSON access log: one line per finished request, buffered per worker thread and
//! written in whole buffers to stdout, stderr or an append-only file.
//!
//! Buffering is per thread, not per log: a worker formats lines into its own buffer and
//! hands the buffer to the writer when it reaches 16 KiB, when that thread calls
//! [`AccessLog::flush`] (each worker does every ~200 ms and when it stops), or when the
//! thread ends. A flush on one thread never writes another thread's lines, so every thread
//! that logs must flush on its own. Whole buffers are written under one lock, so lines from
//! different workers never interleave.

use std::cell::RefCell;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::model::LogTarget;

/// Buffered bytes at which a thread hands its buffer to the writer: one lock per ~16 KiB.
const HAND_OVER_AT: usize = 16 * 1024;
/// Room for the last line past the threshold, so the buffer rarely grows.
const BUFFER_CAPACITY: usize = HAND_OVER_AT + 4 * 1024;

thread_local! {
    static PENDING: RefCell<Pending> = const {
        RefCell::new(Pending { sink: None, buf: Vec::new() })
    };
}

/// An open access log. Shared by all workers (`Arc<AccessLog>`).
#[derive(Debug)]
pub struct AccessLog {
    sink: Arc<Sink>,
}

/// What one log line says about a finished request. Built only when the log is on.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// When the request head arrived.
    pub time: SystemTime,
    pub request_id: &'a str,
    pub client_ip: IpAddr,
    pub method: &'a str,
    pub host: &'a str,
    /// The request path; anything from a `?` on is dropped, since queries may hold secrets.
    pub path: &'a str,
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub duration: Duration,
    pub route: Option<&'a str>,
    pub upstream_target: Option<&'a str>,
    pub upstream_duration: Option<Duration>,
}

#[derive(Debug)]
struct Sink {
    out: Mutex<Output>,
    /// The file to open again on [`AccessLog::reopen`]; `None` for stdout and stderr.
    path: Option<PathBuf>,
    /// Set after a failed write, so a full disk logs one warning, not one per buffer.
    failing: AtomicBool,
}

#[derive(Debug)]
enum Output {
    Stdout,
    Stderr,
    File(File),
}

/// One thread's formatted lines and the log they belong to.
struct Pending {
    sink: Option<Arc<Sink>>,
    buf: Vec<u8>,
}

impl AccessLog {
    /// Opens the target; a file is created if missing and always appended to.
    pub fn open(target: &LogTarget) -> io::Result<AccessLog> {
        let (out, path) = match target {
            LogTarget::Stdout => (Output::Stdout, None),
            LogTarget::Stderr => (Output::Stderr, None),
            LogTarget::File(path) => (Output::File(open_append(path)?), Some(path.clone())),
        };
        Ok(AccessLog {
            sink: Arc::new(Sink {
                out: Mutex::new(out),
                path,
                failing: AtomicBool::new(false),
            }),
        })
    }

    /// Opens the file again by its path, for log rotation that moves the old file away.
    /// Lines go to the old file until the new one is open; stdout and stderr are left as is.
    pub fn reopen(&self) -> io::Result<()> {
        if let Some(path) = &self.sink.path {
            let file = open_append(path)?;
            *self.sink.out.lock().unwrap_or_else(PoisonError::into_inner) = Output::File(file);
        }
        Ok(())
    }

    /// Formats one line into this thread's buffer; takes the writer lock only when the
    /// buffer is full.
    pub fn write(&self, rec: &Record<'_>) {
        let buffered = PENDING.try_with(|cell| {
            let Ok(mut pending) = cell.try_borrow_mut() else {
                return false;
            };
            let same_log = pending
                .sink
                .as_ref()
                .is_some_and(|s| Arc::ptr_eq(s, &self.sink));
            if !same_log {
                // Lines of a previous log (before a reload) go to that log, in order.
                pending.hand_over();
                pending.sink = Some(self.sink.clone());
            }
            if pending.buf.capacity() == 0 {
                pending.buf.reserve(BUFFER_CAPACITY);
            }
            format_line(&mut pending.buf, rec);
            if pending.buf.len() >= HAND_OVER_AT {
                pending.hand_over();
            }
            true
        });
        if !matches!(buffered, Ok(true)) {
            // The thread is exiting (its buffer is gone): write this line on its own.
            let mut line = Vec::with_capacity(512);
            format_line(&mut line, rec);
            self.sink.write_all(&line);
        }
    }

    /// Writes the lines buffered by the calling thread (whichever log they belong to).
    /// Each worker calls this on its own thread; it cannot reach other threads' buffers.
    pub fn flush(&self) {
        flush_current_thread();
    }
}

/// Writes the lines buffered by the calling thread and releases its hold on their log.
/// Call it where a worker may have logged but the access log is now off.
pub fn flush_current_thread() {
    let _ = PENDING.try_with(|cell| {
        if let Ok(mut pending) = cell.try_borrow_mut() {
            pending.hand_over();
            pending.sink = None;
        }
    });
}

impl Sink {
    fn write_all(&self, buf: &[u8]) {
        let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        let result = match &mut *out {
            Output::Stdout => {
                let mut stdout = io::stdout().lock();
                stdout.write_all(buf).and_then(|()| stdout.flush())
            }
            Output::Stderr => io::stderr().lock().write_all(buf),
            Output::File(file) => file.write_all(buf),
        };
        drop(out);
        match result {
            Ok(()) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("access log is writable again");
                }
            }
            Err(e) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "access log write failed, lines are lost until it recovers: {e}"
                    );
                }
            }
        }
    }
}

impl Pending {
    fn hand_over(&mut self) {
        if let Some(sink) = &self.sink {
            if !self.buf.is_empty() {
                sink.write_all(&self.buf);
            }
        }
        self.buf.clear();
    }
}

impl Drop for Pending {
    /// A worker thread that ends without a last flush still gets its lines written.
    fn drop(&mut self) {
        self.hand_over();
    }
}

fn open_append(path: &std::path::Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

fn format_line(out: &mut Vec<u8>, rec: &Record<'_>) {
    out.extend_from_slice(b"{\"time\":\"");
    write_time(out, rec.time);
    out.extend_from_slice(b"\",\"request_id\":");
    write_json_str(out, rec.request_id);
    out.extend_from_slice(b",\"client_ip\":\"");
    // An address's text form has nothing to escape; writing to a Vec cannot fail.
    let _ = write!(out, "{}", rec.client_ip);
    out.extend_from_slice(b"\",\"method\":");
    write_json_str(out, rec.method);
    out.extend_from_slice(b",\"host\":");
    write_json_str(out, rec.host);
    out.extend_from_slice(b",\"path\":");
    let path = rec
        .path
        .split_once('?')
        .map_or(rec.path, |(path, _query)| path);
    write_json_str(out, path);
    let mut num = itoa::Buffer::new();
    out.extend_from_slice(b",\"status\":");
    out.extend_from_slice(num.format(rec.status).as_bytes());
    out.extend_from_slice(b",\"bytes_in\":");
    out.extend_from_slice(num.format(rec.bytes_in).as_bytes());
    out.extend_from_slice(b",\"bytes_out\":");
    out.extend_from_slice(num.format(rec.bytes_out).as_bytes());
    out.extend_from_slice(b",\"duration_ms\":");
    write_millis(out, rec.duration);
    out.extend_from_slice(b",\"route\":");
    match rec.route {
        Some(route) => write_json_str(out, route),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"upstream\":");
    match rec.upstream_target {
        Some(target) => write_json_str(out, target),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"upstream_ms\":");
    match rec.upstream_duration {
        Some(d) => write_millis(out, d),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b"}\n");
}

/// A JSON string literal. Quotes, backslashes and control characters (and DEL, which
/// terminals act on) are escaped; other UTF-8 passes through as is.
fn write_json_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    out.push(b'"');
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x00..=0x1f | 0x7f => &[],
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if short.is_empty() {
            let hex = [
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ];
            out.extend_from_slice(&hex);
        } else {
            out.extend_from_slice(short);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Milliseconds with microsecond precision (`1.234`), written from integers so no float
/// formatting runs per line.
fn write_millis(out: &mut Vec<u8>, d: Duration) {
    let micros = d.as_micros();
    let mut num = itoa::Buffer::new();
    out.extend_from_slice(num.format(micros / 1000).as_bytes());
    let frac = (micros % 1000) as u16;
    out.extend_from_slice(&[
        b'.',
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ]);
}

/// RFC 3339 UTC with milliseconds: `2026-11-23T15:04:05.123Z`. Times before 1970 (a
/// clock set far back) are written as the epoch.
fn write_time(out: &mut Vec<u8>, time: SystemTime) {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = since.as_secs();
    let (year, month, day) = civil_from_days(secs / 86_400);
    let in_day = secs % 86_400;
    if year < 10_000 {
        push_digits(out, year / 100);
        push_digits(out, year % 100);
    } else {
        out.extend_from_slice(itoa::Buffer::new().format(year).as_bytes());
    }
    out.push(b'-');
    push_digits(out, month);
    out.push(b'-');
    push_digits(out, day);
    out.push(b'T');
    push_digits(out, in_day / 3600);
    out.push(b':');
    push_digits(out, in_day % 3600 / 60);
    out.push(b':');
    push_digits(out, in_day % 60);
    let millis = since.subsec_millis();
    out.extend_from_slice(&[
        b'.',
        b'0' + (millis / 100) as u8,
        b'0' + (millis / 10 % 10) as u8,
        b'0' + (millis % 10) as u8,
        b'Z',
    ]);
}

/// Two decimal digits of a value below 100.
fn push_digits(out: &mut Vec<u8>, v: u64) {
    debug_assert!(v < 100, "two digits asked for {v}");
    out.extend_from_slice(&[b'0' + (v / 10 % 10) as u8, b'0' + (v % 10) as u8]);
}

/// Year, month and day of a count of days since 1970-01-01 in the proleptic Gregorian
/// calendar. Counts in 400-year eras (146 097 days) of years starting on 1 March, so the
/// leap day is the last day of its year and month lengths follow a fixed pattern.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Days from 0000-03-01 to 1970-01-01.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    // Month counted from March (0) to February (11).
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
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
            upstream_target: Some("127.0.0.1:9001"),
            upstream_duration: Some(Duration::from_micros(900)),
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
            upstream_target: None,
            upstream_duration: None,
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
}
