//! The `projection` scenario: how fast a JavaScript projection folds.
//!
//! 1. **Catch-up**: the log is filled to at least `--events` events (as for `replay`), then a
//!    counting projection over `fromAll()` (`$any` handler: every user event reaches the
//!    JavaScript; the state is `{n, last}`: events counted, position of the last one) is
//!    created with `PUT /projections/{name}`; its state is polled every [`CATCH_UP_POLL`] until
//!    `last` reaches the last user event that existed before the `PUT`. Rate = `n` / time from
//!    the `PUT` to that poll (the `PUT` includes compiling the script). The server's own
//!    `events_per_second` is read once it has caught up and reported beside it.
//! 2. **Live lag**: with the projection caught up, `--rate` events/s are appended for
//!    `--duration` (open loop, as in `sse`), while the state is sampled every [`LIVE_POLL`].
//!    At each sample, lag in events = acknowledged appends the projection had not applied yet;
//!    lag in time = the age of the oldest of them (0 when it had applied every acknowledged
//!    event).
//!
//! Progress is read from `GET /projections/{name}/state`, not `GET /projections/{name}`: the
//! state is published together with the position it reflects (whole batches), and reading it
//! takes only the state lock. The projection is deleted at the end of each run.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::args::BenchArgs;
use crate::error::{Error, Result};
use crate::http::{http_error, join_all, task_failed, Conn, Stream, Target};
use crate::probe::{CpuProbe, CpuUse};
use crate::replay::fill;
use crate::report::{count_bar, fmt_num, tick, timed_bar, Latencies, Report};

/// Name prefix of the projection; the run's tag follows.
const SCRIPT: &str = "fromAll().when({ $init: () => ({ n: 0, last: -1 }), \
     $any: (s, e) => { s.n += 1; s.last = e.position; return s; } });";

/// Polling interval while catching up.
const CATCH_UP_POLL: Duration = Duration::from_millis(5);
/// Sampling interval of the live phase.
const LIVE_POLL: Duration = Duration::from_millis(5);
/// How often the catch-up loop checks that the projection did not fault.
const STATUS_CHECK: Duration = Duration::from_secs(2);
/// Publisher connections of the live phase (see `SSE_PUBLISHERS`).
const PUBLISHERS: u64 = 16;
/// Longest wait for the projection to catch up or to apply the last live event.
const PATIENCE: Duration = Duration::from_secs(600);

/// One run of the scenario.
pub(crate) struct ProjectionRun {
    /// Events folded during the catch-up.
    pub(crate) events: u64,
    /// Seconds from the `PUT` to the projection reaching the head.
    pub(crate) secs: f64,
    /// The server's `events_per_second` when the catch-up ended.
    pub(crate) server_rate: Option<f64>,
    pub(crate) cpu: CpuUse,
    /// Events appended during the live phase.
    pub(crate) live_events: u64,
    /// Sampled lag in events.
    pub(crate) lag_events: Latencies,
    /// Sampled lag in time, µs.
    pub(crate) lag_time: Latencies,
}

impl ProjectionRun {
    pub(crate) fn rate(&self) -> f64 {
        self.events as f64 / self.secs
    }

    pub(crate) fn summary(&self) -> String {
        format!(
            "catch-up: {} events in {:.2} s: {} events/s (server's own rate {}){}; live at {} events: lag p50 {} / p99 {} / max {} events, {} / {} / {} ms ({} samples)",
            fmt_num(self.events as f64),
            self.secs,
            fmt_num(self.rate()),
            self.server_rate.map(fmt_num).unwrap_or_else(|| "?".into()),
            self.cpu.summary(self.events / 1000, "1,000 events"),
            fmt_num(self.live_events as f64),
            fmt_num(self.lag_events.q(0.5)),
            fmt_num(self.lag_events.q(0.99)),
            fmt_num(self.lag_events.q(1.0)),
            fmt_num(self.lag_time.q(0.5) / 1e3),
            fmt_num(self.lag_time.q(0.99) / 1e3),
            fmt_num(self.lag_time.q(1.0) / 1e3),
            self.lag_events.0.len(),
        )
    }

    pub(crate) fn record(&self, report: &mut Report, min_events: u64, rate: u32) {
        // Keyed by `--events`, not by the events folded: the log grows from run to run.
        let config = format!(
            "catch-up, count over fromAll(), log of ≥ {} events",
            fmt_num(min_events as f64)
        );
        report.add("projection", &config, "events/s", self.rate());
        report.add("projection", &config, "events folded", self.events as f64);
        if let Some(r) = self.server_rate {
            report.add("projection", &config, "server-reported events/s", r);
        }
        report.add("projection", &config, "seconds", self.secs);
        self.cpu.record(
            report,
            "projection",
            &config,
            self.events / 1000,
            "1,000 events",
        );
        let config = format!("live, {} events/s", fmt_num(f64::from(rate)));
        for (q, label) in [(0.5, "p50"), (0.99, "p99"), (1.0, "max")] {
            report.add(
                "projection",
                &config,
                &format!("lag {label} events"),
                self.lag_events.q(q),
            );
        }
        for (q, label) in [(0.5, "p50"), (0.99, "p99"), (1.0, "max")] {
            report.add(
                "projection",
                &config,
                &format!("lag {label} ms"),
                self.lag_time.q(q) / 1e3,
            );
        }
    }
}

/// What a poll of the state tells.
#[derive(Clone, Copy, Debug)]
struct Sample {
    /// Log position of the last applied event.
    position: Option<u64>,
    /// Events applied.
    processed: u64,
}

impl Sample {
    /// `{n, last}`, or `null` before the first event.
    pub(crate) fn parse(v: &serde_json::Value) -> Sample {
        Sample {
            position: v["last"].as_u64(),
            processed: v["n"].as_u64().unwrap_or(0),
        }
    }
}

/// `GET /projections/{name}/state` on `conn`.
async fn poll(target: &Target, conn: &mut Conn<Stream>, request: &[u8]) -> Result<Sample> {
    let (status, body) = conn.exchange(request).await?;
    if status != 200 {
        return Err(http_error(status, &body));
    }
    let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
        Error::Io(io::Error::other(format!(
            "GET /projections/.../state on {}: not JSON: {e}",
            target.authority
        )))
    })?;
    Ok(Sample::parse(&v))
}

/// The position of the last user event, `None` in an empty log.
async fn last_user_position(target: &Target) -> Result<Option<u64>> {
    let page = target
        .get_json("/all?from=end&direction=backward&limit=1")
        .await?;
    Ok(page["events"][0]["position"].as_u64())
}

/// Runs the scenario once.
pub(crate) async fn projection(
    target: &Arc<Target>,
    tag: &str,
    args: &BenchArgs,
    dur: Duration,
) -> Result<ProjectionRun> {
    let next = |info: &serde_json::Value| info["next_position"].as_u64().unwrap_or(0);
    let have = next(&target.get_json("/info").await?);
    if have < args.events {
        fill(
            target,
            tag,
            args.events - have,
            args.payload,
            "filling the log",
        )
        .await?;
    }
    let head = last_user_position(target).await?;
    let name = format!("{tag}-count");
    let path = format!("/projections/{name}");
    let get = target.request(
        "GET",
        &format!("{path}/state"),
        "Accept: application/json\r\n",
        None,
    );
    let mut put = format!(
        "PUT {}{path} HTTP/1.1\r\nHost: {}\r\n{}Content-Type: application/javascript\r\nContent-Length: {}\r\n\r\n",
        target.base,
        target.authority,
        target.auth_line,
        SCRIPT.len()
    )
    .into_bytes();
    put.extend_from_slice(SCRIPT.as_bytes());

    // Catch-up.
    let bar = count_bar("projection catch-up", head.map_or(0, |h| h + 1));
    let mut conn = target.connect().await?;
    let cpu = CpuProbe::start(args.server_pid);
    let t0 = Instant::now();
    let (status, body) = conn.exchange(&put).await?;
    if status != 201 {
        return Err(http_error(status, &body));
    }
    let mut next_check = STATUS_CHECK;
    let caught_up = loop {
        let s = poll(target, &mut conn, &get).await?;
        if let Some(p) = s.position {
            bar.set_position(p);
        }
        if head.is_none_or(|h| s.position.is_some_and(|p| p >= h)) {
            break s;
        }
        if t0.elapsed() > PATIENCE {
            return Err(Error::Io(io::Error::other(
                "the bench projection did not catch up within 10 minutes",
            )));
        }
        if t0.elapsed() >= next_check {
            // Rarely: a faulted projection would otherwise be waited for in vain.
            next_check += STATUS_CHECK;
            let status = target.get_json(&path).await?;
            if status["status"] != "running" {
                return Err(Error::Io(io::Error::other(format!(
                    "the bench projection is not running: {status}"
                ))));
            }
        }
        tokio::time::sleep(CATCH_UP_POLL).await;
    };
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu.stop();
    bar.finish_and_clear();
    let server_rate = target.get_json(&path).await?;
    if server_rate["status"] != "running" {
        return Err(Error::Io(io::Error::other(format!(
            "the bench projection is not running: {server_rate}"
        ))));
    }
    let server_rate = server_rate["events_per_second"].as_f64();

    let live = live_lag(target, tag, args.rate, dur, &get).await;
    // Clean up whatever happened.
    let _ = conn
        .exchange(&target.request("DELETE", &path, "", None))
        .await;
    let (live_events, lag_events, lag_time) = live?;
    Ok(ProjectionRun {
        events: caught_up.processed,
        secs,
        server_rate,
        cpu,
        live_events,
        lag_events,
        lag_time,
    })
}

/// The live phase: `rate` events/s for `dur` while sampling the projection. Returns the events
/// appended and the sampled lags (events; µs).
async fn live_lag(
    target: &Arc<Target>,
    tag: &str,
    rate: u32,
    dur: Duration,
    get: &[u8],
) -> Result<(u64, Latencies, Latencies)> {
    let stream = format!("{tag}-live");
    let total = ((dur.as_secs_f64() * f64::from(rate)).round() as u64).max(1);
    let clock = Instant::now();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // The sampler: (time since `clock` in µs, sample), until told to stop.
    let sampler = {
        let (target, stop, get) = (target.clone(), stop.clone(), get.to_vec());
        tokio::spawn(async move {
            let mut conn = target.connect().await?;
            let mut samples = Vec::new();
            let mut every = tokio::time::interval(LIVE_POLL);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !stop.load(Relaxed) {
                every.tick().await;
                let s = poll(&target, &mut conn, &get).await?;
                samples.push((clock.elapsed().as_micros() as u64, s));
            }
            Ok::<_, Error>(samples)
        })
    };
    let bar = timed_bar("projection lag under load", dur);
    let sent = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let ticker = tick(bar.clone(), start, sent.clone());
    let period = Duration::from_secs_f64(1.0 / f64::from(rate));
    let mut publishers = Vec::new();
    for k in 0..PUBLISHERS.min(total) {
        let (target, stream, sent) = (target.clone(), stream.clone(), sent.clone());
        publishers.push(tokio::spawn(async move {
            let mut conn = target.connect().await?;
            // (position, ack time since `clock` in µs)
            let mut acks = Vec::new();
            let mut i = k;
            while i < total {
                let due = start + period.mul_f64(i as f64);
                tokio::time::sleep_until(due.into()).await;
                let body = format!("{{\"type\":\"BenchLive\",\"data\":{{\"seq\":{i}}}}}");
                let answer = conn.append_one(&target, &stream, &body).await?;
                let acked = clock.elapsed().as_micros() as u64;
                let v: serde_json::Value = serde_json::from_slice(&answer)
                    .map_err(|e| Error::Io(io::Error::other(format!("append answer: {e}"))))?;
                let position = v["first_position"].as_u64().ok_or_else(|| {
                    Error::Io(io::Error::other("append answer without first_position"))
                })?;
                acks.push((position, acked));
                sent.fetch_add(1, Relaxed);
                i += PUBLISHERS;
            }
            Ok::<_, Error>(acks)
        }));
    }
    let (acks, mut failure) = join_all(publishers, "publisher").await;
    let mut acks: Vec<(u64, u64)> = acks.into_iter().flatten().collect();
    let published_until = clock.elapsed().as_micros() as u64;
    ticker.abort();
    let _ = ticker.await;
    bar.finish_and_clear();
    // Let the projection apply the last event (sampling on), then stop the sampler.
    let last = acks.iter().map(|a| a.0).max();
    if failure.is_none() {
        let mut conn = target.connect().await?;
        let t = Instant::now();
        loop {
            let s = poll(target, &mut conn, get).await?;
            if last.is_none_or(|l| s.position.is_some_and(|p| p >= l)) {
                break;
            }
            if t.elapsed() > PATIENCE {
                failure = Some(Error::Io(io::Error::other(
                    "the bench projection did not apply the live events within 10 minutes",
                )));
                break;
            }
            tokio::time::sleep(LIVE_POLL).await;
        }
    }
    stop.store(true, Relaxed);
    let samples = sampler
        .await
        .map_err(|e| task_failed("sampler", e))
        .and_then(|r| r);
    if let Some(e) = failure {
        return Err(e);
    }
    let samples = samples?;
    // Samples taken while the load ran (the first tick fires at once, before any append).
    let window: Vec<&(u64, Sample)> = samples
        .iter()
        .filter(|(t, _)| *t <= published_until)
        .collect();
    acks.sort_unstable();
    let (lag_events, lag_time) = window
        .iter()
        .map(|(t, s)| unapplied(&acks, *t, s.position))
        .unzip();
    Ok((
        acks.len() as u64,
        Latencies::new(lag_events),
        Latencies::new(lag_time),
    ))
}

/// At time `t`, with the projection's last applied position `applied`: how many events
/// acknowledged by then were not applied yet, and how long (µs) the oldest of them had been
/// waiting (0 if none). `acks` are `(position, ack time)` sorted by position.
fn unapplied(acks: &[(u64, u64)], t: u64, applied: Option<u64>) -> (u32, u32) {
    let from = match applied {
        Some(p) => acks.partition_point(|a| a.0 <= p),
        None => 0,
    };
    let (count, oldest) = acks[from..]
        .iter()
        .filter(|a| a.1 <= t)
        .fold((0u32, 0u64), |(n, age), a| (n + 1, age.max(t - a.1)));
    (count, oldest.min(u64::from(u32::MAX)) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_counts_acknowledged_unapplied_events_and_the_oldest_age() {
        let acks = [(10, 100), (11, 105), (12, 120), (13, 118)];
        // Everything applied.
        assert_eq!(unapplied(&acks, 200, Some(13)), (0, 0));
        // 12 and 13 pending at 130: the older ack is 13's (118).
        assert_eq!(unapplied(&acks, 130, Some(11)), (2, 12));
        // At 119 only 13 was acknowledged.
        assert_eq!(unapplied(&acks, 119, Some(11)), (1, 1));
        // Nothing applied yet.
        assert_eq!(unapplied(&acks, 110, None), (2, 10));
        assert_eq!(unapplied(&[], 110, None), (0, 0));
    }
}
