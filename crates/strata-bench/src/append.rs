//! The `append` and `batch` scenarios: N clients appending back to back (closed loop), one
//! event or `--batch-size` events per request, each to its own stream; plus the request bodies
//! every filling of the log uses.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Barrier;

use crate::args::BenchArgs;
use crate::error::{Error, Result};
use crate::http::{http_error, join_all, Counters, Target};
use crate::probe::{CpuProbe, CpuUse};
use crate::report::{fmt_num, micros, tick, timed_bar, Latencies, Report};

/// A JSON document of exactly `size` bytes (at least ~40).
pub(crate) fn payload(size: usize, seed: usize) -> String {
    let head = format!("{{\"seq\":{seed},\"kind\":\"bench\",\"pad\":\"");
    let pad = size.saturating_sub(head.len() + 2);
    format!("{head}{}\"}}", "x".repeat(pad))
}

/// The body of one append: one event object, or an array of `n` of them.
pub(crate) fn append_body(n: usize, payload_bytes: usize, seed: usize) -> Vec<u8> {
    let event = format!(
        "{{\"type\":\"BenchEvent\",\"data\":{}}}",
        payload(payload_bytes, seed)
    );
    if n == 1 {
        return event.into_bytes();
    }
    let mut body = String::with_capacity(n * (event.len() + 1) + 2);
    body.push('[');
    for i in 0..n {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&event);
    }
    body.push(']');
    body.into_bytes()
}

/// The result of a closed-loop append run.
pub(crate) struct TimedRun {
    pub(crate) events: u64,
    pub(crate) requests: u64,
    pub(crate) secs: f64,
    pub(crate) lat: Latencies,
    /// (appends per group commit, fsyncs per append, mean fsync ms) from `/metrics`.
    pub(crate) store: Option<(f64, f64, f64)>,
    pub(crate) cpu: CpuUse,
}

impl TimedRun {
    pub(crate) fn rate(&self) -> f64 {
        self.events as f64 / self.secs
    }

    pub(crate) fn summary(&self) -> String {
        let mut s = format!(
            "{} events/s ({} requests/s), latency p50 {} / p99 {} / p99.9 {} µs",
            fmt_num(self.rate()),
            fmt_num(self.requests as f64 / self.secs),
            fmt_num(self.lat.q(0.5)),
            fmt_num(self.lat.q(0.99)),
            fmt_num(self.lat.q(0.999)),
        );
        if let Some((per_commit, _, fsync_ms)) = self.store {
            let _ = write!(
                s,
                "; {} appends per group commit, mean fsync {} ms",
                fmt_num(per_commit),
                fmt_num(fsync_ms)
            );
        }
        s + &self.cpu.summary(self.requests, "request")
    }

    pub(crate) fn record(&self, report: &mut Report, scenario: &str, config: &str) {
        report.add(scenario, config, "events/s", self.rate());
        report.add(scenario, config, "p50 µs", self.lat.q(0.5));
        report.add(scenario, config, "p99 µs", self.lat.q(0.99));
        report.add(scenario, config, "p99.9 µs", self.lat.q(0.999));
        if let Some((per_commit, per_append, fsync_ms)) = self.store {
            report.add(scenario, config, "appends per group commit", per_commit);
            report.add(scenario, config, "fsyncs per append", per_append);
            report.add(scenario, config, "mean fsync ms", fsync_ms);
        }
        self.cpu
            .record(report, scenario, config, self.requests, "request");
    }
}

/// `clients` connections, each appending `per_request` events per request to its own stream,
/// back to back, for `dur`.
pub(crate) async fn timed_appends(
    target: &Arc<Target>,
    tag: &str,
    clients: usize,
    per_request: usize,
    args: &BenchArgs,
    dur: Duration,
) -> Result<TimedRun> {
    let payload_bytes = args.payload;
    let label = if per_request == 1 {
        format!("append, {clients} clients")
    } else {
        format!("batch x{per_request}, {clients} clients")
    };
    let before = target.counters().await;
    let cpu = CpuProbe::start(args.server_pid);
    let barrier = Arc::new(Barrier::new(clients + 1));
    let count = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(clients);
    for c in 0..clients {
        let stream = format!(
            "{tag}-{}{per_request}-c{c}",
            if per_request == 1 { "a" } else { "b" }
        );
        let request = target.request(
            "POST",
            &format!("/streams/{stream}"),
            "",
            Some(&append_body(per_request, payload_bytes, c)),
        );
        let (target, barrier, count) = (target.clone(), barrier.clone(), count.clone());
        tasks.push(tokio::spawn(async move {
            // Connect before the clock starts.
            let conn = target.connect().await;
            barrier.wait().await;
            let mut conn = conn?;
            let mut lat = Vec::with_capacity(1 << 16);
            let start = Instant::now();
            let deadline = start + dur;
            let mut requests = 0u64;
            let mut error = None;
            while Instant::now() < deadline {
                let t0 = Instant::now();
                conn.send(&request).await?;
                let head = conn.head().await?;
                if head.status == 201 || head.status == 200 {
                    conn.body(head, |_| true).await?;
                } else {
                    let mut body = Vec::new();
                    conn.body(head, |d| {
                        body.extend_from_slice(d);
                        true
                    })
                    .await?;
                    error = Some(http_error(head.status, &body));
                    break;
                }
                lat.push(micros(t0.elapsed()));
                requests += 1;
                count.fetch_add(per_request as u64, Relaxed);
            }
            match error {
                Some(e) => Err(e),
                None => Ok::<_, Error>((requests, lat, start, Instant::now())),
            }
        }));
    }
    barrier.wait().await;
    let start = Instant::now();
    let bar = timed_bar(&label, dur);
    let ticker = tick(bar.clone(), start, count.clone());
    let (results, failure) = join_all(tasks, "client task").await;
    ticker.abort();
    let _ = ticker.await;
    bar.finish_and_clear();
    let cpu = cpu.stop();
    if let Some(e) = failure {
        return Err(e);
    }
    let after = target.counters().await;
    // From the first client's start to the last client's last acknowledgement.
    let first = results.iter().map(|r| r.2).min().unwrap_or(start);
    let last = results.iter().map(|r| r.3).max().unwrap_or(start);
    let requests: u64 = results.iter().map(|r| r.0).sum();
    let lat = Latencies::new(results.into_iter().flat_map(|r| r.1).collect());
    Ok(TimedRun {
        events: requests * per_request as u64,
        requests,
        secs: last.duration_since(first).as_secs_f64(),
        lat,
        store: Counters::between(before, after),
        cpu,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies() {
        assert_eq!(payload(256, 3).len(), 256);
        let one: serde_json::Value = serde_json::from_slice(&append_body(1, 256, 0)).unwrap();
        assert_eq!(one["type"], "BenchEvent");
        let many: serde_json::Value = serde_json::from_slice(&append_body(100, 256, 0)).unwrap();
        assert_eq!(many.as_array().unwrap().len(), 100);
    }
}
