//! What the traffic history costs on disk: writes one day of points for `ROUTES` routes (and
//! the gateway's own) as the collector does, each point with requests spread over a
//! realistic latency range: the 10-second points into one fresh `history.redb`, the minute
//! points into another, and prints each file's size per route and day, and what a route
//! holds on disk with the default retention (a day of 10-second points, 30 days of minute
//! points). Then reads one route's day of 10-second points, and every route's, and prints
//! how long each read took.
//!
//! Usage: cargo run --release --example history_disk -- [ROUTES=100] [DIR=target/history-disk]

use std::sync::Arc;
use std::time::Duration;

use ferrogate::observe::history::{Dimension, Point, Sketch, Store, COARSE, FINE};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let routes: usize = args.next().map_or(Ok(100), |a| a.parse())?;
    let dir = std::path::PathBuf::from(args.next().unwrap_or("target/history-disk".into()));
    let _ = std::fs::remove_dir_all(&dir);
    let day = 24 * 3600;
    // The defaults: 10-second points for a day, minute points for 30 days.
    let keep = (Duration::from_secs(day), Duration::from_secs(30 * day));
    let fine = Store::open(Some(&dir.join("fine")), keep.0, keep.1)?;
    let coarse = Store::open(Some(&dir.join("coarse")), keep.0, keep.1)?;
    let names: Vec<(Dimension, Arc<str>)> = std::iter::once((Dimension::Gateway, Arc::from("")))
        .chain((0..routes).map(|i| (Dimension::Route, Arc::from(format!("route-{i}")))))
        .collect();
    let start = 1_800_000_000 / day * day;
    let mut rng = fastrand::Rng::with_seed(7);
    let mut minute: Vec<((Dimension, Arc<str>), Point)> = Vec::new();
    for interval in (start..start + day).step_by(FINE as usize) {
        let points: Vec<_> = names
            .iter()
            .map(|n| (n.clone(), point(&mut rng, 100)))
            .collect();
        if minute.is_empty() {
            minute = points.clone();
        } else {
            for (m, (_, p)) in minute.iter_mut().zip(&points) {
                m.1.merge(p);
            }
        }
        fine.write(FINE, interval, &points)?;
        if (interval + FINE) % COARSE == 0 {
            coarse.write(
                COARSE,
                interval / COARSE * COARSE,
                &std::mem::take(&mut minute),
            )?;
        }
    }
    drop((fine, coarse));
    let fine = Store::open(Some(&dir.join("fine")), keep.0, keep.1)?;
    let timed = |name: Option<&str>| -> Result<(usize, Duration), Box<dyn std::error::Error>> {
        let began = std::time::Instant::now();
        let points = fine.read(FINE, Dimension::Route, name, start, start + day)?;
        Ok((points.len(), began.elapsed()))
    };
    let (one, one_took) = timed(Some("route-7"))?;
    let (all, all_took) = timed(None)?;
    drop(fine);
    let n = routes as u64 + 1;
    let size = |d: &str| std::fs::metadata(dir.join(d).join("history.redb")).map(|m| m.len() / n);
    let (fine, coarse) = (size("fine")?, size("coarse")?);
    println!("routes={routes}");
    println!(
        "10 s points, one day: {fine} bytes per route ({} points)",
        day / FINE
    );
    println!(
        "1 min points, one day: {coarse} bytes per route ({} points)",
        day / COARSE
    );
    println!(
        "held per route at the default retention (1 day of 10 s, 30 days of 1 min): {:.1} MB",
        (fine + 30 * coarse) as f64 / 1e6
    );
    println!("reading one route's day of 10 s points: {one} points in {one_took:?}");
    println!("reading every route's day of 10 s points: {all} points in {all_took:?}");
    Ok(())
}

/// A 10-second point of a route taking `n` requests: mostly 2xx, a few 4xx and 5xx,
/// latencies spread from about 1 ms to 500 ms.
fn point(rng: &mut fastrand::Rng, n: u64) -> Point {
    let mut p = Point {
        requests: n,
        bytes_in: n * 200,
        bytes_out: n * 2_000,
        ..Point::default()
    };
    p.classes = [0, n - n / 10, 0, n / 20, n / 20];
    let mut latency = Sketch::default();
    for _ in 0..n {
        // Log-uniform between 1 ms and 500 ms.
        let micros = (1_000.0 * 500f64.powf(rng.f64())) as u64;
        latency.add(micros);
    }
    p.latency = latency;
    p
}
