//! The `read` scenario: N clients (`--read-clients`, 16), each on its own keep-alive
//! connection, reading whole `--read-stream-events`-event streams (10) chosen at random among
//! `--read-streams` (100,000) as JSON pages, back to back, for `--duration`.
//!
//! The streams are filled first, once per server, with one batched append each
//! (`Expected-Revision: no_stream`, so a rerun or an interrupted filling never doubles a
//! stream); a marker stream written last records that the set is complete, and later runs
//! against the same server skip the filling.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Barrier;

use crate::append::append_body;
use crate::args::BenchArgs;
use crate::error::{Error, Result};
use crate::http::{http_error, join_all, task_failed, Target};
use crate::probe::{CpuProbe, CpuUse};
use crate::report::{count_bar, fmt_num, micros, tick, timed_bar, Latencies, Report};

/// Connections the filling uses (enough for group commit to batch their appends).
const FILL_CONNS: u64 = 16;

/// The result of a `read` run.
pub(crate) struct ReadRun {
    pub(crate) requests: u64,
    pub(crate) events_per_stream: u64,
    pub(crate) secs: f64,
    pub(crate) lat: Latencies,
    pub(crate) cpu: CpuUse,
}

impl ReadRun {
    fn rate(&self) -> f64 {
        (self.requests * self.events_per_stream) as f64 / self.secs
    }

    pub(crate) fn summary(&self) -> String {
        format!(
            "{} events/s ({} stream reads/s), latency p50 {} / p99 {} / p99.9 {} µs",
            fmt_num(self.rate()),
            fmt_num(self.requests as f64 / self.secs),
            fmt_num(self.lat.q(0.5)),
            fmt_num(self.lat.q(0.99)),
            fmt_num(self.lat.q(0.999)),
        ) + &self.cpu.summary(self.requests, "request")
    }

    pub(crate) fn record(&self, report: &mut Report, config: &str) {
        report.add("read", config, "events/s", self.rate());
        report.add(
            "read",
            config,
            "stream reads/s",
            self.requests as f64 / self.secs,
        );
        report.add("read", config, "p50 µs", self.lat.q(0.5));
        report.add("read", config, "p99 µs", self.lat.q(0.99));
        report.add("read", config, "p99.9 µs", self.lat.q(0.999));
        self.cpu
            .record(report, "read", config, self.requests, "request");
    }
}

/// The name prefix of the read set: fixed per (count, size) so that every run against one
/// server reads the same streams.
fn set_prefix(streams: u64, events: u64) -> String {
    format!("benchread{streams}x{events}")
}

/// Makes sure the read set exists (filling it if its marker stream is missing).
pub(crate) async fn ensure_read_set(target: &Arc<Target>, args: &BenchArgs) -> Result<()> {
    let (streams, events) = (args.read_streams, args.read_stream_events);
    let prefix = set_prefix(streams, events);
    let marker = format!("{prefix}-done");
    let mut conn = target.connect().await?;
    let (status, body) = conn
        .exchange(&target.request("GET", &format!("/streams/{marker}"), "", None))
        .await?;
    match status {
        200 => return Ok(()),
        404 => {}
        _ => return Err(http_error(status, &body)),
    }
    let bar = count_bar("filling the read streams", streams);
    let next = Arc::new(AtomicU64::new(0));
    let body = Arc::new(append_body(events as usize, args.payload, 0));
    let mut tasks = Vec::new();
    for _ in 0..FILL_CONNS.min(streams) {
        let (target, next, bar, body) = (target.clone(), next.clone(), bar.clone(), body.clone());
        let prefix = prefix.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = target.connect().await?;
            loop {
                let i = next.fetch_add(1, Relaxed);
                if i >= streams {
                    return Ok::<_, Error>(());
                }
                let request = target.request(
                    "POST",
                    &format!("/streams/{prefix}-{i}"),
                    "Expected-Revision: no_stream\r\n",
                    Some(&body),
                );
                let (status, answer) = conn.exchange(&request).await?;
                // 409: filled by an earlier, interrupted run.
                if status != 201 && status != 409 {
                    return Err(http_error(status, &answer));
                }
                bar.inc(1);
            }
        }));
    }
    for t in tasks {
        t.await.map_err(|e| task_failed("fill task", e))??;
    }
    bar.finish_and_clear();
    let (status, body) = conn
        .exchange(&target.request(
            "POST",
            &format!("/streams/{marker}"),
            "",
            Some(&append_body(1, 40, 0)),
        ))
        .await?;
    if status != 201 {
        return Err(http_error(status, &body));
    }
    Ok(())
}

/// A small xorshift generator: the clients' random stream choice, without a dependency.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// `clients` connections reading random whole streams of the read set for `dur`.
pub(crate) async fn timed_reads(
    target: &Arc<Target>,
    clients: usize,
    args: &BenchArgs,
    dur: Duration,
) -> Result<ReadRun> {
    let (streams, events) = (args.read_streams, args.read_stream_events);
    let prefix = set_prefix(streams, events);
    // Pre-rendered requests: the generator's CPU per read stays small.
    let requests: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..streams)
            .map(|i| {
                target.request(
                    "GET",
                    &format!("/streams/{prefix}-{i}"),
                    "Accept: application/json\r\n",
                    None,
                )
            })
            .collect(),
    );
    let label = format!("read, {clients} clients");
    let cpu = CpuProbe::start(args.server_pid);
    let barrier = Arc::new(Barrier::new(clients + 1));
    let count = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(clients);
    for c in 0..clients {
        let (target, barrier, count, requests) = (
            target.clone(),
            barrier.clone(),
            count.clone(),
            requests.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let conn = target.connect().await;
            barrier.wait().await;
            let mut conn = conn?;
            let mut rng = XorShift(0x9E37_79B9_7F4A_7C15 ^ ((c as u64 + 1) << 32));
            let mut lat = Vec::with_capacity(1 << 18);
            let start = Instant::now();
            let deadline = start + dur;
            let mut done = 0u64;
            while Instant::now() < deadline {
                let request = &requests[(rng.next() % requests.len() as u64) as usize];
                let t0 = Instant::now();
                conn.send(request).await?;
                let head = conn.head().await?;
                let mut tail = [0u8; 12];
                let mut body_len = 0usize;
                conn.body(head, |d| {
                    // The last bytes: a whole stream's page ends with `"end":true}`.
                    let n = d.len().min(tail.len());
                    tail.copy_within(n.., 0);
                    let keep = tail.len() - n;
                    tail[keep..].copy_from_slice(&d[d.len() - n..]);
                    body_len += d.len();
                    true
                })
                .await?;
                if head.status != 200 || !tail.ends_with(b"\"end\":true}") {
                    return Err(http_error(
                        head.status,
                        format!("read of a whole stream: {body_len} bytes, not a whole page")
                            .as_bytes(),
                    ));
                }
                lat.push(micros(t0.elapsed()));
                done += 1;
                count.fetch_add(events, Relaxed);
            }
            Ok::<_, Error>((done, lat, start, Instant::now()))
        }));
    }
    barrier.wait().await;
    let start = Instant::now();
    let bar = timed_bar(&label, dur);
    let ticker = tick(bar.clone(), start, count.clone());
    let (results, failure) = join_all(tasks, "read task").await;
    ticker.abort();
    let _ = ticker.await;
    bar.finish_and_clear();
    let cpu = cpu.stop();
    if let Some(e) = failure {
        return Err(e);
    }
    let first = results.iter().map(|r| r.2).min().unwrap_or(start);
    let last = results.iter().map(|r| r.3).max().unwrap_or(start);
    let done: u64 = results.iter().map(|r| r.0).sum();
    Ok(ReadRun {
        requests: done,
        events_per_stream: events,
        secs: last.duration_since(first).as_secs_f64(),
        lat: Latencies::new(results.into_iter().flat_map(|r| r.1).collect()),
        cpu,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xorshift_spreads() {
        let mut r = XorShift(42);
        let picks: std::collections::HashSet<u64> = (0..1000).map(|_| r.next() % 100).collect();
        assert!(picks.len() > 90);
    }
}
