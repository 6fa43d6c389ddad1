//! The `sse` scenario (append → SSE delivery latency at a fixed rate) and the open-loop,
//! fixed-rate publisher it shares with `group-latency`.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::http::{http_error, join_all, parse_decimal, task_failed, Target};
use crate::probe::{CpuProbe, CpuUse};
use crate::report::{fmt_num, micros, tick, timed_bar, Latencies, Report};

/// The result of an append → SSE delivery run.
pub(crate) struct SseRun {
    pub(crate) sent: u64,
    pub(crate) delivered: u64,
    pub(crate) secs: f64,
    pub(crate) delivery: Latencies,
    pub(crate) ack: Latencies,
    /// How far behind its schedule each send went out (tokio's timer has 1 ms granularity).
    pub(crate) lag: Latencies,
    /// Per event, delivery time minus the time its append was acknowledged (0 when the
    /// delivery came first), when measured: what delivery adds to the durable append.
    pub(crate) after_ack: Option<Latencies>,
    /// CPU of the server and the generator while publishing (per event sent).
    pub(crate) cpu: CpuUse,
}

impl SseRun {
    pub(crate) fn summary(&self) -> String {
        let after_ack = self.after_ack.as_ref().map_or_else(String::new, |l| {
            format!(
                "; delivery after append ack p50 {} / p99 {} µs",
                fmt_num(l.q(0.5)),
                fmt_num(l.q(0.99))
            )
        });
        let main = format!(
            "{}/{} delivered at {}/s; delivery p50 {} / p99 {} / p99.9 {} / max {} µs; append ack p50 {} / p99 {} µs; send lag behind schedule p99 {} µs",
            self.delivered,
            self.sent,
            fmt_num(self.sent as f64 / self.secs),
            fmt_num(self.delivery.q(0.5)),
            fmt_num(self.delivery.q(0.99)),
            fmt_num(self.delivery.q(0.999)),
            fmt_num(self.delivery.q(1.0)),
            fmt_num(self.ack.q(0.5)),
            fmt_num(self.ack.q(0.99)),
            fmt_num(self.lag.q(0.99)),
        );
        main + &after_ack + &self.cpu.summary(self.sent, "event")
    }

    pub(crate) fn record(&self, report: &mut Report, scenario: &str, config: &str) {
        let mut rows = vec![
            ("delivered / sent", self.delivered as f64 / self.sent as f64),
            ("delivery p50 µs", self.delivery.q(0.5)),
            ("delivery p99 µs", self.delivery.q(0.99)),
            ("delivery p99.9 µs", self.delivery.q(0.999)),
            ("delivery max µs", self.delivery.q(1.0)),
            ("append ack p50 µs", self.ack.q(0.5)),
            ("append ack p99 µs", self.ack.q(0.99)),
            ("send lag behind schedule p99 µs", self.lag.q(0.99)),
        ];
        if let Some(l) = &self.after_ack {
            rows.push(("delivery after append ack p50 µs", l.q(0.5)));
            rows.push(("delivery after append ack p99 µs", l.q(0.99)));
        }
        for (metric, value) in rows {
            report.add(scenario, config, metric, value);
        }
        self.cpu
            .record(report, scenario, config, self.sent, "event");
    }
}

/// Publisher connections of the SSE scenario: enough that one slow acknowledgement (a slow
/// fsync) does not hold back the sends scheduled after it.
pub(crate) const SSE_PUBLISHERS: u64 = 16;

/// `rate` events/s for `dur` appended to a fresh stream while a subscriber on it measures
/// each event's delay from send to delivery.
pub(crate) async fn sse(
    target: &Arc<Target>,
    tag: &str,
    rate: u32,
    dur: Duration,
    server_pid: Option<u32>,
) -> Result<SseRun> {
    let stream = format!("{tag}-sse");
    let total = ((dur.as_secs_f64() * f64::from(rate)).round() as u64).max(1);
    let clock = Instant::now();
    // The subscriber: connected and answered (headers received) before the first send.
    let mut sub = target.connect().await?;
    sub.send(&target.request(
        "GET",
        &format!("/streams/{stream}?from=start"),
        "Accept: text/event-stream\r\n",
        None,
    ))
    .await?;
    let head = sub.head().await?;
    if head.status != 200 {
        return Err(http_error(head.status, b"(SSE subscription refused)"));
    }
    let subscriber = tokio::spawn(async move {
        let mut delays = Vec::with_capacity(total as usize);
        let mut partial = Vec::new();
        let read = sub.body(head, |d| {
            let now = clock.elapsed().as_nanos() as u64;
            partial.extend_from_slice(d);
            let mut consumed = 0;
            while let Some(nl) = partial[consumed..].iter().position(|&b| b == b'\n') {
                let line = &partial[consumed..consumed + nl];
                consumed += nl + 1;
                if let Some(sent) = line.strip_prefix(b"data: ").and_then(sent_ns) {
                    delays.push(micros(Duration::from_nanos(now.saturating_sub(sent))));
                }
            }
            partial.drain(..consumed);
            (delays.len() as u64) < total
        });
        // Everything sent arrives within the run plus a few seconds, or is counted as lost.
        let _ = tokio::time::timeout(dur + Duration::from_secs(5), read).await;
        delays
    });

    let published = publish(
        target,
        &stream,
        rate,
        dur,
        clock,
        "sse delivery",
        server_pid,
    )
    .await;
    let published = match published {
        Ok(p) => p,
        Err(e) => {
            subscriber.abort();
            return Err(e);
        }
    };
    let delays = subscriber.await.map_err(|e| task_failed("subscriber", e))?;
    Ok(published.run(delays))
}

/// What an open-loop publisher did.
pub(crate) struct Published {
    pub(crate) sent: u64,
    pub(crate) secs: f64,
    /// Append acknowledgement latencies, µs.
    pub(crate) acks: Vec<u32>,
    /// How late each send went out, µs.
    pub(crate) lag: Vec<u32>,
    /// Per `seq`: when its append was acknowledged, ns since the clock (0: not acknowledged).
    pub(crate) acked_at: Arc<Vec<AtomicU64>>,
    pub(crate) cpu: CpuUse,
}

impl Published {
    /// The run, given the delivery delays (µs) the subscriber(s) measured.
    pub(crate) fn run(self, delays: Vec<u32>) -> SseRun {
        SseRun {
            sent: self.sent,
            delivered: delays.len() as u64,
            secs: self.secs,
            delivery: Latencies::new(delays),
            ack: Latencies::new(self.acks),
            lag: Latencies::new(self.lag),
            after_ack: None,
            cpu: self.cpu,
        }
    }
}

/// Appends `rate` events/s to `stream` for `dur` on a fixed schedule over [`SSE_PUBLISHERS`]
/// connections (open loop), each event's `data` carrying its `seq` and `sent_ns` (ns since
/// `clock`, taken just before its request is written).
pub(crate) async fn publish(
    target: &Arc<Target>,
    stream: &str,
    rate: u32,
    dur: Duration,
    clock: Instant,
    label: &str,
    server_pid: Option<u32>,
) -> Result<Published> {
    let total = ((dur.as_secs_f64() * f64::from(rate)).round() as u64).max(1);
    let bar = timed_bar(label, dur);
    let acked_at: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
    let sent = Arc::new(AtomicU64::new(0));
    let cpu = CpuProbe::start(server_pid);
    let start = Instant::now();
    let ticker = tick(bar.clone(), start, sent.clone());
    let period = Duration::from_secs_f64(1.0 / f64::from(rate));
    let mut publishers = Vec::new();
    for k in 0..SSE_PUBLISHERS.min(total) {
        let (target, stream, sent, acked_at) = (
            target.clone(),
            stream.to_owned(),
            sent.clone(),
            acked_at.clone(),
        );
        publishers.push(tokio::spawn(async move {
            let mut conn = target.connect().await?;
            let (mut acks, mut lag) = (Vec::new(), Vec::new());
            let mut i = k;
            while i < total {
                let due = start + period.mul_f64(i as f64);
                tokio::time::sleep_until(due.into()).await;
                let now = Instant::now();
                lag.push(micros(now.duration_since(due)));
                let body = format!(
                    "{{\"type\":\"BenchTick\",\"data\":{{\"seq\":{i},\"sent_ns\":{}}}}}",
                    clock.elapsed().as_nanos()
                );
                conn.append_one(&target, &stream, &body).await?;
                acks.push(micros(now.elapsed()));
                acked_at[i as usize].store(clock.elapsed().as_nanos() as u64, Relaxed);
                sent.fetch_add(1, Relaxed);
                i += SSE_PUBLISHERS;
            }
            Ok::<_, Error>((acks, lag))
        }));
    }
    let (results, failure) = join_all(publishers, "publisher").await;
    let (mut acks, mut lag) = (Vec::new(), Vec::new());
    for (a, l) in results {
        acks.extend(a);
        lag.extend(l);
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu.stop();
    ticker.abort();
    let _ = ticker.await;
    bar.finish_and_clear();
    if let Some(e) = failure {
        return Err(e);
    }
    Ok(Published {
        sent: sent.load(Relaxed),
        secs,
        acks,
        lag,
        acked_at,
        cpu,
    })
}

/// The `sent_ns` of an SSE `data:` line (the event JSON, whose `data` is the publisher's).
pub(crate) fn sent_ns(event_json: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"sent_ns\":";
    let at = event_json.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let digits = &event_json[at..];
    let len = digits.iter().take_while(|b| b.is_ascii_digit()).count();
    parse_decimal(&digits[..len]).map(|n| n as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        let line =
            br#"{"id":"x","stream":"s","data":{"seq":7,"sent_ns":123456789},"metadata":null}"#;
        assert_eq!(sent_ns(line), Some(123_456_789));
        assert_eq!(sent_ns(b"{}"), None);
    }
}
