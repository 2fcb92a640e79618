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
    /// The authenticated consumer (or token subject).
    pub consumer: Option<&'a str>,
    pub upstream_target: Option<&'a str>,
    pub upstream_duration: Option<Duration>,
    /// Why a WebSocket tunnel ended (its line is written then); `None` for other requests.
    pub close_reason: Option<&'a str>,
    /// The client's location, when the request looked it up: its known fields.
    pub geo: Option<&'a crate::geo::Location>,
    /// The trace id and the request's span id (32 and 16 hex digits), with `tracing`.
    pub trace: Option<(&'a str, &'a str)>,
    /// On an `ai` route: the model exchange.
    pub ai: Option<&'a AiFields<'a>>,
}

/// The fields of an `ai` route's line, under `"ai"`.
#[derive(Debug, Clone)]
pub struct AiFields<'a> {
    pub alias: &'a str,
    pub provider: &'a str,
    pub model: &'a str,
    pub tokens_in: u64,
    pub tokens_out: u64,
    /// The counts are the gateway's estimate, not the provider's.
    pub estimated: bool,
    pub ttft: Option<Duration>,
    /// Providers tried.
    pub attempts: u32,
    pub cache_hit: Option<bool>,
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
    if let Some(consumer) = rec.consumer {
        out.extend_from_slice(b",\"consumer\":");
        write_json_str(out, consumer);
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
    if let Some(reason) = rec.close_reason {
        out.extend_from_slice(b",\"close_reason\":");
        write_json_str(out, reason);
    }
    if let Some(loc) = rec.geo {
        write_geo(out, loc);
    }
    if let Some((trace_id, span_id)) = rec.trace {
        out.extend_from_slice(b",\"trace_id\":");
        write_json_str(out, trace_id);
        out.extend_from_slice(b",\"span_id\":");
        write_json_str(out, span_id);
    }
    if let Some(ai) = rec.ai {
        write_ai(out, ai);
    }
    out.extend_from_slice(b"}\n");
}

/// `"ai":{…}`: alias, provider, model, token counts, time to first token.
fn write_ai(out: &mut Vec<u8>, ai: &AiFields<'_>) {
    let mut num = itoa::Buffer::new();
    out.extend_from_slice(b",\"ai\":{\"alias\":");
    write_json_str(out, ai.alias);
    out.extend_from_slice(b",\"provider\":");
    write_json_str(out, ai.provider);
    out.extend_from_slice(b",\"model\":");
    write_json_str(out, ai.model);
    out.extend_from_slice(b",\"tokens_in\":");
    out.extend_from_slice(num.format(ai.tokens_in).as_bytes());
    out.extend_from_slice(b",\"tokens_out\":");
    out.extend_from_slice(num.format(ai.tokens_out).as_bytes());
    out.extend_from_slice(b",\"tokens_estimated\":");
    out.extend_from_slice(if ai.estimated { b"true" } else { b"false" });
    out.extend_from_slice(b",\"attempts\":");
    out.extend_from_slice(num.format(ai.attempts).as_bytes());
    out.extend_from_slice(b",\"ttft_ms\":");
    match ai.ttft {
        Some(d) => write_millis(out, d),
        None => out.extend_from_slice(b"null"),
    }
    if let Some(hit) = ai.cache_hit {
        out.extend_from_slice(b",\"cache_hit\":");
        out.extend_from_slice(if hit { b"true" } else { b"false" });
    }
    out.push(b'}');
}

/// `"geo":{…}` with the fields of `loc` that are known.
fn write_geo(out: &mut Vec<u8>, loc: &crate::geo::Location) {
    use crate::config::model::GeoField;
    out.extend_from_slice(b",\"geo\":{");
    let mut first = true;
    let mut text = String::new();
    for field in [
        GeoField::Country,
        GeoField::Continent,
        GeoField::Subdivision,
        GeoField::Asn,
        GeoField::Label,
    ] {
        let Some(v) = loc.text(field) else { continue };
        if !first {
            out.push(b',');
        }
        first = false;
        write_json_str(out, field.name());
        out.push(b':');
        text.clear();
        v.push_to(&mut text);
        write_json_str(out, &text);
    }
    out.push(b'}');
}

/// A JSON string literal. Quotes, backslashes and control characters (and DEL, which
/// terminals act on) are escaped; other UTF-8 passes through as is.
pub(crate) fn write_json_str(out: &mut Vec<u8>, s: &str) {
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

/// `time` in RFC 3339 UTC with milliseconds, as the access log writes it.
pub fn rfc3339(time: SystemTime) -> String {
    let mut out = Vec::with_capacity(24);
    write_time(&mut out, time);
    String::from_utf8_lossy(&out).into_owned()
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

mod sampling;

pub use sampling::LogSampling;

#[cfg(test)]
mod tests;
