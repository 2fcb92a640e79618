//! Tests of the HTTP/2 flood guard: the frame walker, the meter, the IO wrapper, and a real
//! hyper HTTP/2 server behind the guard facing honest and hostile clients.
#![allow(clippy::unwrap_used)]

use super::*;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use proptest::prelude::*;
use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const OFF: H2GuardLimits = H2GuardLimits {
    max_resets_per_sec: u32::MAX,
    max_pings_per_sec: u32::MAX,
    max_settings_per_sec: u32::MAX,
    max_continuations_per_block: u32::MAX,
    max_header_block_bytes: u32::MAX,
    max_empty_frames: u32::MAX,
    max_priority_or_window_updates_per_sec: u32::MAX,
};

/// `:method GET`, `:scheme http`, `:path /` (static table), `:authority localhost` (literal).
const GET_ROOT: &[u8] = b"\x82\x86\x84\x01\x09localhost";

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap();
    let mut f = len.to_be_bytes()[1..].to_vec();
    f.extend_from_slice(&[kind, flags]);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn repeat(frame: &[u8], times: usize) -> Vec<u8> {
    frame.repeat(times)
}

fn head(kind: u8, flags: u8, stream: u32, len: u32) -> Head {
    Head {
        len,
        kind,
        flags,
        stream,
        pad: 0,
    }
}

fn walk(frames: &mut Frames, bytes: &[u8]) -> Vec<Head> {
    let mut heads = Vec::new();
    frames
        .feed(bytes, |e| {
            if let Event::Head(h) = e {
                heads.push(h);
            }
            Ok::<(), Infallible>(())
        })
        .unwrap();
    heads
}

/// Feeds `times` copies of `head` at instant `at`; the first trip, if any.
fn send(meter: &mut Meter, head: Head, times: usize, at: Instant) -> Result<(), Trip> {
    (0..times).try_for_each(|_| meter.inbound(head, &mut || at))
}

// ----- frame walker -----

#[test]
fn frame_headers_after_the_preface_are_read() {
    let mut wire = PREFACE.to_vec();
    wire.extend(frame(HEADERS, END_HEADERS, 1, GET_ROOT));
    wire.extend(frame(PING, ACK, 0, &[0; 8]));
    let heads = walk(&mut Frames::client(), &wire);
    assert_eq!(
        heads,
        [head(HEADERS, END_HEADERS, 1, 14), head(PING, ACK, 0, 8)]
    );
}

#[test]
fn reserved_stream_id_bit_is_ignored() {
    let mut wire = PREFACE.to_vec();
    wire.extend(frame(RST_STREAM, 0, 0x8000_0003, &[0, 0, 0, 8]));
    assert_eq!(walk(&mut Frames::client(), &wire)[0].stream, 3);
}

#[test]
fn wrong_preface_stops_the_walk() {
    let mut frames = Frames::client();
    let mut wire = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec();
    wire.extend(frame(PING, 0, 0, &[0; 8]));
    assert!(walk(&mut frames, &wire).is_empty());
    assert_eq!(frames.step, Step::Lost);
}

#[test]
fn largest_frame_length_is_skipped_whole() {
    let mut wire = PREFACE.to_vec();
    wire.extend([0xff, 0xff, 0xff, DATA, 0, 0, 0, 0, 1]);
    wire.resize(wire.len() + 0xff_ffff, 0);
    wire.extend(frame(PING, 0, 0, &[0; 8]));
    let heads = walk(&mut Frames::client(), &wire);
    assert_eq!(heads, [head(DATA, 0, 1, 0xff_ffff), head(PING, 0, 0, 8)]);
}

#[test]
fn padded_frame_is_reported_once_its_pad_length_arrives() {
    let mut frames = Frames::client();
    let wire = [PREFACE.to_vec(), frame(DATA, PADDED, 1, &[4, 0, 0, 0, 0])].concat();
    assert!(walk(&mut frames, &wire[..PREFACE.len() + HEAD_LEN]).is_empty());
    let heads = walk(&mut frames, &wire[PREFACE.len() + HEAD_LEN..]);
    assert_eq!(heads[0].pad, 4);
    assert_eq!(heads[0].content_len(), 0);
}

#[test]
fn frame_boundary_is_known_on_the_server_side() {
    let mut frames = Frames::server();
    let settings = frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100]);
    assert!(frames.at_frame_boundary());
    walk(&mut frames, &settings[..11]);
    assert!(!frames.at_frame_boundary());
    walk(&mut frames, &settings[11..]);
    assert!(frames.at_frame_boundary());
}

fn any_frame() -> impl Strategy<Value = (u8, u8, u32, Vec<u8>)> {
    (
        0u8..12,
        any::<u8>(),
        any::<u32>(),
        proptest::collection::vec(any::<u8>(), 0..48),
    )
}

/// `frame` made to keep the rules the guard enforces (fixed lengths, windows, no table
/// size update nor pseudo-header field at the start of a block), whatever else it holds.
fn lawful((kind, flags, stream, mut payload): (u8, u8, u32, Vec<u8>)) -> (u8, u8, u32, Vec<u8>) {
    match kind {
        PRIORITY => payload.resize(5, 0),
        RST_STREAM | WINDOW_UPDATE => payload.resize(4, 0),
        PING => payload.resize(8, 0),
        SETTINGS if flags & ACK != 0 => payload.clear(),
        SETTINGS => {
            payload.truncate(payload.len() / 6 * 6);
            payload.chunks_mut(6).for_each(|e| e[2] &= 0x7f);
        }
        // Zeros: no padding, no priority weight, literal fields with empty names.
        HEADERS => payload.fill(0),
        _ => {}
    }
    (kind, flags, stream, payload)
}

fn wire_and_heads(frames: &[(u8, u8, u32, Vec<u8>)]) -> (Vec<u8>, Vec<Head>) {
    let mut wire = PREFACE.to_vec();
    let mut heads = Vec::new();
    for (kind, flags, stream, payload) in frames {
        wire.extend(frame(*kind, *flags, *stream, payload));
        let mut h = head(
            *kind,
            *flags,
            stream & 0x7fff_ffff,
            u32::try_from(payload.len()).unwrap(),
        );
        if h.is_padded() {
            h.pad = payload.first().copied().unwrap_or(0);
        }
        heads.push(h);
    }
    (wire, heads)
}

/// Every event of `wire` fed whole, and the heads counted by a meter without limits.
fn events_of(wire: &[u8], at: Instant) -> (Vec<Event>, Meter) {
    let (mut events, mut meter) = (Vec::new(), Meter::new(OFF));
    Frames::client()
        .feed(wire, |e| {
            events.push(e);
            match e {
                Event::Head(h) => meter.inbound(h, &mut || at),
                _ => Ok(()),
            }
        })
        .unwrap();
    (events, meter)
}

proptest! {
    #[test]
    fn any_split_of_a_frame_sequence_reads_the_same_events_and_counts(
        frames in proptest::collection::vec(any_frame(), 0..24),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..16),
    ) {
        let (wire, expected) = wire_and_heads(&frames);
        let at = Instant::now();
        let (whole_events, whole) = events_of(&wire, at);

        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(wire.len() + 1)).collect();
        points.sort_unstable();
        points.push(wire.len());
        let (mut walker, mut meter, mut events, mut from) =
            (Frames::client(), Meter::new(OFF), Vec::new(), 0);
        for to in points {
            walker
                .feed(&wire[from..to], |e| {
                    events.push(e);
                    match e {
                        Event::Head(h) => meter.inbound(h, &mut || at),
                        _ => Ok(()),
                    }
                })
                .unwrap();
            from = to;
        }
        let heads: Vec<Head> = events
            .iter()
            .filter_map(|e| match e {
                Event::Head(h) => Some(*h),
                _ => None,
            })
            .collect();
        prop_assert_eq!(heads, expected);
        prop_assert_eq!(events, whole_events);
        prop_assert_eq!(meter, whole);
    }
}

// ----- meter -----

#[test]
fn pings_beyond_the_limit_in_one_second_trip() {
    let (mut m, t) = (Meter::new(H2GuardLimits::default()), Instant::now());
    assert_eq!(send(&mut m, head(PING, 0, 0, 8), 100, t), Ok(()));
    assert_eq!(send(&mut m, head(PING, 0, 0, 8), 1, t), Err(Trip::Pings));
}

#[test]
fn ping_acks_are_not_counted() {
    let (mut m, t) = (Meter::new(H2GuardLimits::default()), Instant::now());
    assert_eq!(send(&mut m, head(PING, ACK, 0, 8), 10_000, t), Ok(()));
}

#[test]
fn pings_at_the_limit_every_second_never_trip() {
    let (mut m, t) = (Meter::new(H2GuardLimits::default()), Instant::now());
    for second in 0..5 {
        let at = t + Duration::from_secs(second);
        assert_eq!(send(&mut m, head(PING, 0, 0, 8), 100, at), Ok(()));
    }
}

#[test]
fn settings_beyond_the_limit_in_one_second_trip() {
    let (mut m, t) = (Meter::new(H2GuardLimits::default()), Instant::now());
    assert_eq!(send(&mut m, head(SETTINGS, 0, 0, 0), 100, t), Ok(()));
    assert_eq!(
        send(&mut m, head(SETTINGS, 0, 0, 0), 1, t),
        Err(Trip::Settings)
    );
}

#[test]
fn settings_acks_are_not_counted() {
    let (mut m, t) = (Meter::new(H2GuardLimits::default()), Instant::now());
    assert_eq!(send(&mut m, head(SETTINGS, ACK, 0, 0), 10_000, t), Ok(()));
}

#[test]
fn resets_beyond_the_limit_in_one_second_trip() {
    let (mut m, t) = (Meter::new(H2GuardLimits::default()), Instant::now());
    assert_eq!(send(&mut m, head(RST_STREAM, 0, 1, 4), 500, t), Ok(()));
    assert_eq!(
        send(&mut m, head(RST_STREAM, 0, 1, 4), 1, t),
        Err(Trip::Resets)
    );
}

#[test]
fn continuations_beyond_the_limit_in_one_block_trip() {
    let (mut m, t) = (Meter::new(H2GuardLimits::default()), Instant::now());
    send(&mut m, head(HEADERS, 0, 1, 3), 1, t).unwrap();
    assert_eq!(send(&mut m, head(CONTINUATION, 0, 1, 1), 32, t), Ok(()));
    assert_eq!(
        send(&mut m, head(CONTINUATION, 0, 1, 1), 1, t),
        Err(Trip::Continuations)
    );
}

#[test]
fn each_header_block_has_its_own_continuation_count() {
    let (mut m, t) = (Meter::new(H2GuardLimits::default()), Instant::now());
    for stream in [1, 3, 5] {
        send(&mut m, head(HEADERS, 0, stream, 3), 1, t).unwrap();
        send(&mut m, head(CONTINUATION, 0, stream, 1), 31, t).unwrap();
        let last = head(CONTINUATION, END_HEADERS, stream, 1);
        assert_eq!(send(&mut m, last, 1, t), Ok(()));
    }
}

#[test]
fn header_block_bytes_beyond_the_limit_trip() {
    let (mut m, t) = (Meter::new(H2GuardLimits::default()), Instant::now());
    send(&mut m, head(HEADERS, 0, 1, 16_384), 1, t).unwrap();
    assert_eq!(send(&mut m, head(CONTINUATION, 0, 1, 16_384), 3, t), Ok(()));
    assert_eq!(
        send(&mut m, head(CONTINUATION, END_HEADERS, 1, 1), 1, t),
        Err(Trip::HeaderBlockBytes)
    );
}

#[test]
fn header_block_bytes_exclude_padding_and_priority() {
    let limits = H2GuardLimits {
        max_header_block_bytes: 10,
        ..H2GuardLimits::default()
    };
    let (mut m, t) = (Meter::new(limits), Instant::now());
    let mut padded = head(
        HEADERS,
        END_HEADERS | PADDED | PRIORITY_FLAG,
        1,
        1 + 5 + 10 + 200,
    );
    padded.pad = 200;
    assert_eq!(send(&mut m, padded, 1, t), Ok(()));
}

#[test]
fn consecutive_empty_frames_beyond_the_limit_trip() {
    let (mut m, t) = (Meter::new(H2GuardLimits::default()), Instant::now());
    assert_eq!(send(&mut m, head(DATA, 0, 1, 0), 100, t), Ok(()));
    assert_eq!(
        send(&mut m, head(DATA, 0, 1, 0), 1, t),
        Err(Trip::EmptyFrames)
    );
}

#[test]
fn a_frame_with_content_ends_a_run_of_empty_frames() {
    let (mut m, t) = (Meter::new(H2GuardLimits::default()), Instant::now());
    for _ in 0..10 {
        send(&mut m, head(DATA, 0, 1, 0), 100, t).unwrap();
        send(&mut m, head(DATA, 0, 1, 1), 1, t).unwrap();
    }
    assert_eq!(m.empty_run, 0);
}

#[test]
fn empty_frames_with_end_stream_are_not_counted() {
    let (mut m, t) = (Meter::new(H2GuardLimits::default()), Instant::now());
    assert_eq!(send(&mut m, head(DATA, END_STREAM, 1, 0), 1000, t), Ok(()));
}

#[test]
fn padded_frame_without_content_counts_as_empty() {
    let (mut m, t) = (Meter::new(H2GuardLimits::default()), Instant::now());
    let mut padding_only = head(DATA, PADDED, 1, 5);
    padding_only.pad = 4;
    assert_eq!(send(&mut m, padding_only, 100, t), Ok(()));
    assert_eq!(send(&mut m, padding_only, 1, t), Err(Trip::EmptyFrames));
}

#[test]
fn empty_continuations_count_whatever_their_flags() {
    let limits = H2GuardLimits {
        max_continuations_per_block: u32::MAX,
        ..H2GuardLimits::default()
    };
    let (mut m, t) = (Meter::new(limits), Instant::now());
    send(&mut m, head(HEADERS, 0, 1, 3), 1, t).unwrap();
    let empty = head(CONTINUATION, 0x1, 1, 0);
    assert_eq!(send(&mut m, empty, 100, t), Ok(()));
    assert_eq!(send(&mut m, empty, 1, t), Err(Trip::EmptyFrames));
}

#[test]
fn one_ping_per_data_or_headers_we_sent_is_not_counted() {
    let limits = H2GuardLimits {
        max_pings_per_sec: 0,
        ..H2GuardLimits::default()
    };
    let (mut m, t) = (Meter::new(limits), Instant::now());
    for sent in [head(HEADERS, END_HEADERS, 1, 20), head(DATA, 0, 1, 100)] {
        m.outbound(sent);
        assert_eq!(send(&mut m, head(PING, 0, 0, 8), 1, t), Ok(()));
    }
    assert_eq!(send(&mut m, head(PING, 0, 0, 8), 1, t), Err(Trip::Pings));
}

#[test]
fn window_updates_beyond_the_limit_in_one_second_trip() {
    let (mut m, t) = (Meter::new(H2GuardLimits::default()), Instant::now());
    let update = head(WINDOW_UPDATE, 0, 0, 4);
    assert_eq!(send(&mut m, update, 1000, t), Ok(()));
    assert_eq!(
        send(&mut m, update, 1, t),
        Err(Trip::PriorityOrWindowUpdates)
    );
}

#[test]
fn priority_frames_share_the_window_update_limit() {
    let (mut m, t) = (Meter::new(H2GuardLimits::default()), Instant::now());
    send(&mut m, head(PRIORITY, 0, 1, 5), 500, t).unwrap();
    send(&mut m, head(WINDOW_UPDATE, 0, 0, 4), 500, t).unwrap();
    assert_eq!(
        send(&mut m, head(PRIORITY, 0, 3, 5), 1, t),
        Err(Trip::PriorityOrWindowUpdates)
    );
}

#[test]
fn window_updates_earned_by_data_we_sent_are_not_counted() {
    let (mut m, t) = (Meter::new(H2GuardLimits::default()), Instant::now());
    for _ in 0..1000 {
        m.outbound(head(DATA, 0, 1, 16_384));
    }
    let update = head(WINDOW_UPDATE, 0, 1, 4);
    assert_eq!(send(&mut m, update, 2000 + 1000, t), Ok(()));
    assert_eq!(
        send(&mut m, update, 1, t),
        Err(Trip::PriorityOrWindowUpdates)
    );
}

#[test]
fn empty_data_we_sent_earns_no_window_updates() {
    let mut m = Meter::new(H2GuardLimits::default());
    m.outbound(head(DATA, END_STREAM, 1, 0));
    assert_eq!(m.window_update_credit, 0);
}

#[test]
fn clock_is_read_only_for_rate_limited_frames() {
    let (mut m, t) = (Meter::new(H2GuardLimits::default()), Instant::now());
    let mut reads = 0;
    let mut clock = || {
        reads += 1;
        t
    };
    for h in [
        head(HEADERS, END_HEADERS, 1, 14),
        head(DATA, END_STREAM, 1, 100),
        head(PING, ACK, 0, 8),
        head(GOAWAY, 0, 0, 8),
    ] {
        m.inbound(h, &mut clock).unwrap();
    }
    m.inbound(head(PING, 0, 0, 8), &mut clock).unwrap();
    assert_eq!(reads, 1);
}

#[test]
fn last_stream_is_the_highest_client_stream_opened() {
    let (mut m, t) = (Meter::new(H2GuardLimits::default()), Instant::now());
    for stream in [1, 7, 3, 8] {
        send(&mut m, head(HEADERS, END_HEADERS, stream, 14), 1, t).unwrap();
    }
    assert_eq!(m.last_stream, 7);
}

// ----- the IO wrapper -----

fn guard(limits: H2GuardLimits) -> (DuplexStream, H2Guard<DuplexStream>) {
    let (client, server) = duplex(1 << 16);
    (client, H2Guard::new(server, limits))
}

/// Reads from the guard until it fails; the error kind.
async fn read_until_error(io: &mut H2Guard<DuplexStream>) -> io::ErrorKind {
    let mut buf = vec![0u8; 4096];
    loop {
        match io.read(&mut buf).await {
            Ok(0) => panic!("end of stream instead of an error"),
            Ok(_) => {}
            Err(e) => return e.kind(),
        }
    }
}

fn ping_flood(stream: u32) -> Vec<u8> {
    let mut wire = PREFACE.to_vec();
    wire.extend(frame(HEADERS, END_HEADERS | END_STREAM, stream, GET_ROOT));
    wire.extend(repeat(&frame(PING, 0, 0, &[0; 8]), 101));
    wire
}

fn goaway(last_stream: u32) -> Vec<u8> {
    let mut payload = last_stream.to_be_bytes().to_vec();
    payload.extend(ENHANCE_YOUR_CALM.to_be_bytes());
    frame(GOAWAY, 0, 0, &payload)
}

#[tokio::test]
async fn tripped_guard_fails_reads_with_connection_aborted() {
    let (mut client, mut io) = guard(H2GuardLimits::default());
    client.write_all(&ping_flood(1)).await.unwrap();
    assert_eq!(
        read_until_error(&mut io).await,
        io::ErrorKind::ConnectionAborted
    );
    assert_eq!(
        read_until_error(&mut io).await,
        io::ErrorKind::ConnectionAborted
    );
}

#[tokio::test]
async fn trip_is_readable_through_the_handle() {
    let (mut client, mut io) = guard(H2GuardLimits::default());
    let handle = io.trip_handle();
    assert_eq!(handle.get(), None);
    client.write_all(&ping_flood(1)).await.unwrap();
    read_until_error(&mut io).await;
    assert_eq!(
        (io.tripped(), handle.get()),
        (Some(Trip::Pings), Some(Trip::Pings))
    );
}

#[tokio::test]
async fn goaway_before_any_server_frame_comes_after_an_empty_settings() {
    let (mut client, mut io) = guard(H2GuardLimits::default());
    client.write_all(&ping_flood(5)).await.unwrap();
    read_until_error(&mut io).await;
    drop(io);
    let mut sent = Vec::new();
    client.read_to_end(&mut sent).await.unwrap();
    assert_eq!(sent, [frame(SETTINGS, 0, 0, &[]), goaway(5)].concat());
}

#[tokio::test]
async fn goaway_follows_the_frames_hyper_wrote() {
    let (mut client, mut io) = guard(H2GuardLimits::default());
    let settings = frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100]);
    io.write_all(&settings).await.unwrap();
    client.write_all(&ping_flood(3)).await.unwrap();
    read_until_error(&mut io).await;
    drop(io);
    let mut sent = Vec::new();
    client.read_to_end(&mut sent).await.unwrap();
    assert_eq!(sent, [settings, goaway(3)].concat());
}

#[tokio::test]
async fn no_goaway_inside_a_frame_hyper_is_writing() {
    let (mut client, mut io) = guard(H2GuardLimits::default());
    let settings = frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100]);
    io.write_all(&settings[..11]).await.unwrap();
    client.write_all(&ping_flood(1)).await.unwrap();
    read_until_error(&mut io).await;
    drop(io);
    let mut sent = Vec::new();
    client.read_to_end(&mut sent).await.unwrap();
    assert_eq!(sent, settings[..11]);
}

#[tokio::test]
async fn writes_after_a_trip_are_refused() {
    let (mut client, mut io) = guard(H2GuardLimits::default());
    client.write_all(&ping_flood(1)).await.unwrap();
    read_until_error(&mut io).await;
    let err = io
        .write_all(&frame(PING, ACK, 0, &[0; 8]))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
}

proptest! {
    #[test]
    fn bytes_pass_through_unchanged_whatever_the_read_sizes(
        frames in proptest::collection::vec(any_frame().prop_map(lawful), 0..32),
        sizes in proptest::collection::vec(1usize..64, 1..8),
    ) {
        let (wire, _) = wire_and_heads(&frames);
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let read = rt.block_on(async {
            let (mut client, mut io) = guard(OFF);
            client.write_all(&wire).await.unwrap();
            client.shutdown().await.unwrap();
            let (mut read, mut turn) = (Vec::new(), 0);
            loop {
                let mut buf = vec![0u8; sizes[turn % sizes.len()]];
                turn += 1;
                match io.read(&mut buf).await.unwrap() {
                    0 => break read,
                    n => read.extend_from_slice(&buf[..n]),
                }
            }
        });
        prop_assert_eq!(read, wire);
    }
}

// ----- a real hyper server behind the guard -----

const BIG: usize = 4 << 20;

struct Server {
    addr: SocketAddr,
    /// One handle per accepted connection, in accept order.
    trips: mpsc::UnboundedReceiver<TripHandle>,
}

async fn answer(
    req: http::Request<hyper::body::Incoming>,
) -> Result<http::Response<Full<Bytes>>, Infallible> {
    let body = match req.uri().path() {
        "/big" => Bytes::from(vec![7u8; BIG]),
        _ => Bytes::from_static(b"ok"),
    };
    Ok(http::Response::new(Full::new(body)))
}

async fn serve(limits: H2GuardLimits, tune: fn(&mut http2::Builder<TokioExecutor>)) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, trips) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let io = H2Guard::new(stream, limits);
            let _ = tx.send(io.trip_handle());
            let mut builder = http2::Builder::new(TokioExecutor::new());
            tune(&mut builder);
            tokio::spawn(async move {
                let _ = builder
                    .serve_connection(TokioIo::new(io), service_fn(answer))
                    .await;
            });
        }
    });
    Server { addr, trips }
}

fn as_is<B>(_: &mut B) {}

type ClientBuilder = hyper::client::conn::http2::Builder<TokioExecutor>;

async fn client(
    addr: SocketAddr,
    tune: fn(&mut ClientBuilder),
) -> hyper::client::conn::http2::SendRequest<Empty<Bytes>> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let mut builder = ClientBuilder::new(TokioExecutor::new());
    tune(&mut builder);
    let (send, conn) = builder.handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    send
}

async fn get(
    send: &mut hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    addr: SocketAddr,
    path: &str,
) -> Bytes {
    let req = http::Request::get(format!("http://{addr}{path}"))
        .body(Empty::new())
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    assert_eq!(resp.status(), http::StatusCode::OK);
    resp.into_body().collect().await.unwrap().to_bytes()
}

/// Writes the preface, an empty SETTINGS and `flood` at once and reads until the server
/// closes; the error code of the GOAWAY it sent, if any.
async fn flood(addr: SocketAddr, flood: Vec<u8>) -> Option<u32> {
    let (mut rd, mut wr) = TcpStream::connect(addr).await.unwrap().into_split();
    let wire = [PREFACE.to_vec(), frame(SETTINGS, 0, 0, &[]), flood].concat();
    // The server stops reading when it cuts the connection, so this write may fail.
    let _writer = tokio::spawn(async move {
        let _ = wr.write_all(&wire).await;
        wr
    });
    let mut got = Vec::new();
    let _ = rd.read_to_end(&mut got).await;
    goaway_code(&got)
}

fn goaway_code(mut bytes: &[u8]) -> Option<u32> {
    let mut code = None;
    while bytes.len() >= HEAD_LEN {
        let h = Head::parse(bytes[..HEAD_LEN].try_into().unwrap());
        let end = (HEAD_LEN + h.len as usize).min(bytes.len());
        if h.kind == GOAWAY && end >= HEAD_LEN + 8 {
            code = Some(u32::from_be_bytes(bytes[13..17].try_into().unwrap()));
        }
        bytes = &bytes[end..];
    }
    code
}

async fn cut_off_within(
    server: &mut Server,
    limit: Duration,
    wire: Vec<u8>,
) -> (Option<u32>, Option<Trip>) {
    let code = tokio::time::timeout(limit, flood(server.addr, wire))
        .await
        .expect("connection still open");
    (code, server.trips.recv().await.unwrap().get())
}

#[tokio::test]
async fn honest_client_makes_200_requests() {
    let mut server = serve(H2GuardLimits::default(), as_is).await;
    let mut send = client(server.addr, as_is).await;
    for _ in 0..200 {
        assert_eq!(get(&mut send, server.addr, "/").await, "ok");
    }
    assert_eq!(server.trips.recv().await.unwrap().get(), None);
}

#[tokio::test]
async fn window_updates_answering_our_data_do_not_trip() {
    // Ten updates a second would be crossed many times over by a download through 16 KiB
    // windows, were the updates the data earned counted.
    let limits = H2GuardLimits {
        max_priority_or_window_updates_per_sec: 10,
        ..H2GuardLimits::default()
    };
    let mut server = serve(limits, as_is).await;
    let mut send = client(server.addr, |b| {
        b.initial_stream_window_size(16 * 1024);
    })
    .await;
    for _ in 0..2 {
        assert_eq!(get(&mut send, server.addr, "/big").await.len(), BIG);
    }
    assert_eq!(server.trips.recv().await.unwrap().get(), None);
}

#[tokio::test]
async fn bandwidth_probing_pings_do_not_trip() {
    // hyper's adaptive window, like gRPC's, sends a PING per round trip while data flows.
    let limits = H2GuardLimits {
        max_pings_per_sec: 0,
        ..H2GuardLimits::default()
    };
    let mut server = serve(limits, as_is).await;
    let mut send = client(server.addr, |b| {
        b.adaptive_window(true);
    })
    .await;
    for _ in 0..2 {
        assert_eq!(get(&mut send, server.addr, "/big").await.len(), BIG);
    }
    assert_eq!(server.trips.recv().await.unwrap().get(), None);
}

#[tokio::test]
async fn ping_flood_is_cut_off_with_enhance_your_calm() {
    let mut server = serve(H2GuardLimits::default(), as_is).await;
    let pings = repeat(&frame(PING, 0, 0, &[0; 8]), 10_000);
    let outcome = cut_off_within(&mut server, Duration::from_secs(1), pings).await;
    assert_eq!(outcome, (Some(ENHANCE_YOUR_CALM), Some(Trip::Pings)));
}

#[tokio::test]
async fn settings_flood_is_cut_off_with_enhance_your_calm() {
    let mut server = serve(H2GuardLimits::default(), as_is).await;
    let settings = repeat(&frame(SETTINGS, 0, 0, &[]), 10_000);
    let outcome = cut_off_within(&mut server, Duration::from_secs(2), settings).await;
    assert_eq!(outcome, (Some(ENHANCE_YOUR_CALM), Some(Trip::Settings)));
}

#[tokio::test]
async fn rapid_reset_is_cut_off_with_enhance_your_calm() {
    // h2's own cap on resets of streams not yet accepted would act first on this burst.
    fn tune(b: &mut http2::Builder<TokioExecutor>) {
        b.max_pending_accept_reset_streams(1_000_000);
    }
    let mut server = serve(H2GuardLimits::default(), tune).await;
    let wire: Vec<u8> = (0..5_000u32)
        .flat_map(|i| {
            let stream = 2 * i + 1;
            [
                frame(HEADERS, END_HEADERS | END_STREAM, stream, GET_ROOT),
                frame(RST_STREAM, 0, stream, &[0, 0, 0, 8]),
            ]
            .concat()
        })
        .collect();
    let outcome = cut_off_within(&mut server, Duration::from_secs(2), wire).await;
    assert_eq!(outcome, (Some(ENHANCE_YOUR_CALM), Some(Trip::Resets)));
}

#[tokio::test]
async fn continuation_flood_is_cut_off_with_enhance_your_calm() {
    // With a 1 MiB header list h2 admits 80 CONTINUATIONs per block; the guard, 32.
    fn tune(b: &mut http2::Builder<TokioExecutor>) {
        b.max_header_list_size(1 << 20);
    }
    let mut server = serve(H2GuardLimits::default(), tune).await;
    // A literal value announced as 100_000 bytes that the CONTINUATIONs keep extending.
    let mut block = b"\x82\x86\x84\x00\x01x\x7f".to_vec();
    block.extend([0xa1, 0x8c, 0x06]); // 100_000 - 127 in HPACK's 7-bit groups
    let mut wire = frame(HEADERS, END_STREAM, 1, &block);
    wire.extend(repeat(&frame(CONTINUATION, 0, 1, &[b'a'; 100]), 10_000));
    let outcome = cut_off_within(&mut server, Duration::from_secs(2), wire).await;
    assert_eq!(
        outcome,
        (Some(ENHANCE_YOUR_CALM), Some(Trip::Continuations))
    );
}

// ----- protocol rules -----

fn events(wire: &[u8]) -> Vec<Event> {
    events_of(wire, Instant::now()).0
}

#[test]
fn settings_entries_are_reported_one_by_one() {
    let mut wire = PREFACE.to_vec();
    wire.extend(frame(
        SETTINGS,
        0,
        0,
        &[0, 3, 0, 0, 0, 100, 0, 4, 0x80, 0, 0, 0],
    ));
    wire.extend(frame(SETTINGS, ACK, 0, &[]));
    assert_eq!(
        events(&wire),
        [
            Event::Head(head(SETTINGS, 0, 0, 12)),
            Event::Setting(3, 100),
            Event::Setting(4, 0x8000_0000),
            Event::Head(head(SETTINGS, ACK, 0, 0)),
        ]
    );
}

#[test]
fn table_size_updates_at_the_block_start_are_reported_past_padding_and_priority() {
    let mut payload = vec![2, 0, 0, 0, 0, 16]; // pad length, priority fields
    payload.extend([0x3f, 0xe2, 0x1f, 0x20, 0x82, 0, 0]); // 4097, 0, :method GET, padding
    let mut wire = PREFACE.to_vec();
    wire.extend(frame(
        HEADERS,
        END_HEADERS | PADDED | PRIORITY_FLAG,
        1,
        &payload,
    ));
    wire.extend(frame(PING, 0, 0, &[0; 8]));
    let got = events(&wire);
    assert_eq!(
        got[1..],
        [
            Event::TableSizeUpdate(4097),
            Event::TableSizeUpdate(0),
            Event::PseudoFieldFirst,
            Event::Head(head(PING, 0, 0, 8)),
        ]
    );
}

#[test]
fn table_size_update_after_a_field_is_not_reported() {
    let mut wire = PREFACE.to_vec();
    wire.extend(frame(HEADERS, END_HEADERS, 1, &[0x82, 0x3f, 0xe2, 0x1f]));
    assert_eq!(
        events(&wire),
        [
            Event::Head(head(HEADERS, END_HEADERS, 1, 4)),
            Event::PseudoFieldFirst
        ]
    );
}

#[test]
fn hpack_integers_decode_as_rfc_7541_shows() {
    assert_eq!(hpack_int(&[0x0a], 5), Some((10, 1)));
    assert_eq!(hpack_int(&[0x1f, 0x9a, 0x0a], 5), Some((1337, 3)));
    assert_eq!(hpack_int(&[0x2a], 8), Some((42, 1)));
    assert_eq!(hpack_int(&[0x1f, 0x9a], 5), None);
    assert_eq!(
        hpack_int(&[0x1f, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01], 5),
        Some((u32::MAX, 7))
    );
}

#[test]
fn rule_breaches_trip_with_the_error_code_rfc_9113_names() {
    let mut m = Meter::new(H2GuardLimits::default());
    let mut clock = Instant::now;
    let mut check = |e| m.event(e, &mut clock).map_err(|t| (t, t.code()));
    for bad in [
        head(PING, 0, 0, 7),
        head(PING, ACK, 0, 9),
        head(WINDOW_UPDATE, 0, 0, 3),
        head(RST_STREAM, 0, 1, 5),
        head(PRIORITY, 0, 1, 4),
        head(SETTINGS, 0, 0, 7),
        head(SETTINGS, ACK, 0, 6),
    ] {
        assert_eq!(
            check(Event::Head(bad)),
            Err((Trip::FrameSize, FRAME_SIZE_ERROR)),
            "{bad:?}"
        );
    }
    assert_eq!(
        check(Event::Setting(4, 1 << 31)),
        Err((Trip::InitialWindowSize, FLOW_CONTROL_ERROR))
    );
    assert_eq!(check(Event::Setting(4, (1 << 31) - 1)), Ok(()));
    assert_eq!(
        check(Event::TableSizeUpdate(4097)),
        Err((Trip::TableSizeUpdate, COMPRESSION_ERROR))
    );
    assert_eq!(check(Event::TableSizeUpdate(4096)), Ok(()));
    assert_eq!(
        check(Event::BadPreface),
        Err((Trip::BadPreface, PROTOCOL_ERROR))
    );
    assert_eq!(check(Event::Head(head(PING, 0, 0, 8))), Ok(()));
}

#[tokio::test]
async fn rule_breach_is_answered_with_a_goaway_of_its_error_code() {
    let (mut client, mut io) = guard(H2GuardLimits::default());
    let mut wire = PREFACE.to_vec();
    wire.extend(frame(PING, 0, 0, &[0; 5]));
    client.write_all(&wire).await.unwrap();
    read_until_error(&mut io).await;
    assert_eq!(io.tripped(), Some(Trip::FrameSize));
    drop(io);
    let mut sent = Vec::new();
    client.read_to_end(&mut sent).await.unwrap();
    assert_eq!(goaway_code(&sent), Some(FRAME_SIZE_ERROR));
}

#[tokio::test]
async fn bytes_that_are_not_the_preface_are_answered_with_protocol_error() {
    let (mut client, mut io) = guard(H2GuardLimits::default());
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    read_until_error(&mut io).await;
    assert_eq!(io.tripped(), Some(Trip::BadPreface));
    drop(io);
    let mut sent = Vec::new();
    client.read_to_end(&mut sent).await.unwrap();
    assert_eq!(goaway_code(&sent), Some(PROTOCOL_ERROR));
}

#[test]
fn pseudo_field_first_in_a_block_is_reported_whatever_names_it() {
    let literal = [&[0x00, 0x05][..], b":path", &[0x01, b'/']].concat();
    let indexing = [&[0x40, 0x05][..], b":path", &[0x01, b'/']].concat();
    let huffman = [0x00, 0x84, 0xb9, 0x58, 0xd3, 0x3f, 0x01, b'/'];
    let after_size_update = [0x20, 0x84];
    for (what, block) in [
        ("static index", &[0x84][..]),
        ("static name", &[0x04, 0x01, b'/'][..]),
        ("literal", &literal[..]),
        ("literal with indexing", &indexing[..]),
        ("huffman", &huffman[..]),
        ("after a size update", &after_size_update[..]),
    ] {
        let mut wire = PREFACE.to_vec();
        wire.extend(frame(HEADERS, END_HEADERS, 1, block));
        assert!(
            events(&wire).contains(&Event::PseudoFieldFirst),
            "{what}: {:?}",
            events(&wire)
        );
    }
    let regular = [&[0x00, 0x01][..], b"x", &[0x01, b'/']].concat();
    for (what, block) in [
        ("regular static", &[0x0f, 0x0d, 0x01, b'2'][..]),
        ("regular literal", &regular[..]),
        ("dynamic", &[0xbe][..]),
    ] {
        let mut wire = PREFACE.to_vec();
        wire.extend(frame(HEADERS, END_HEADERS, 1, block));
        assert!(
            !events(&wire).contains(&Event::PseudoFieldFirst),
            "{what}: {:?}",
            events(&wire)
        );
    }
}

#[test]
fn pseudo_field_first_trips_only_in_a_trailer_section() {
    let mut m = Meter::new(H2GuardLimits::default());
    let mut clock = Instant::now;
    let opens = head(HEADERS, END_HEADERS, 1, 10);
    m.event(Event::Head(opens), &mut clock).unwrap();
    m.event(Event::PseudoFieldFirst, &mut clock).unwrap();
    let trailers = head(HEADERS, END_HEADERS | END_STREAM, 1, 10);
    m.event(Event::Head(trailers), &mut clock).unwrap();
    assert_eq!(
        m.event(Event::PseudoFieldFirst, &mut clock),
        Err(Trip::TrailerPseudoField)
    );
    assert_eq!(Trip::TrailerPseudoField.code(), PROTOCOL_ERROR);
}
