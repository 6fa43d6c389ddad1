//! The consumer-group scenarios: `group` (a pre-loaded category drained by N consumers, poll and
//! batch ack) and `group-latency` (append → delivery latency to long-polling consumers).

use std::io;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Barrier;

use crate::args::BenchArgs;
use crate::error::{Error, Result};
use crate::http::{http_error, join_all, task_failed, Conn, Stream, Target};
use crate::probe::{CpuProbe, CpuUse};
use crate::replay::fill;
use crate::report::{count_bar, fmt_num, micros, Latencies, Report};
use crate::sse::{publish, SseRun};

/// A poll answer, as far as the generator needs it (the events are skipped, not built).
#[derive(serde::Deserialize)]
pub(crate) struct PollAnswer<'a> {
    #[serde(borrow)]
    pub(crate) messages: Vec<PollMessage<'a>>,
}

#[derive(serde::Deserialize)]
pub(crate) struct PollMessage<'a> {
    #[serde(borrow)]
    pub(crate) ack_id: &'a str,
    pub(crate) delivery: u64,
    pub(crate) event: PollEvent,
}

#[derive(serde::Deserialize)]
pub(crate) struct PollEvent {
    pub(crate) data: PollData,
}

/// The `data` of a bench event: `seq` and `sent_ns` only in `BenchTick` events (latency runs).
#[derive(serde::Deserialize)]
pub(crate) struct PollData {
    #[serde(default)]
    pub(crate) seq: Option<u64>,
    #[serde(default)]
    pub(crate) sent_ns: Option<u64>,
}

/// Parses a poll answer.
pub(crate) fn poll_answer(body: &[u8]) -> Result<PollAnswer<'_>> {
    serde_json::from_slice(body).map_err(|e| {
        Error::Io(io::Error::other(format!(
            "unexpected poll answer ({e}): {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        )))
    })
}

/// `{"ack_ids":[...]}` for `messages`.
pub(crate) fn ack_body(messages: &[PollMessage<'_>]) -> Vec<u8> {
    let mut body = String::with_capacity(16 + messages.len() * 40);
    body.push_str("{\"ack_ids\":[");
    for (i, m) in messages.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        // Ack ids are opaque but plain ASCII tokens; escape anyway.
        body.push_str(&serde_json::Value::from(m.ack_id).to_string());
    }
    body.push_str("]}");
    body.into_bytes()
}

/// `PUT /groups/{name}`: a group on category `cat` from its start (ack timeout 60 s, ordering
/// `none`); 200 or 201 expected.
pub(crate) async fn create_group(target: &Target, name: &str, cat: &str) -> Result<()> {
    let settings = format!(
        "{{\"source\":\"category:{cat}\",\"from\":\"start\",\"ack_timeout_ms\":60000,\"ordering\":\"none\"}}"
    );
    let mut conn = target.connect().await?;
    conn.call(
        &target.request(
            "PUT",
            &format!("/groups/{name}"),
            "",
            Some(settings.as_bytes()),
        ),
        |status| status == 201 || status == 200,
    )
    .await?;
    Ok(())
}

/// `POST /groups/{name}/ack` on `conn`.
pub(crate) async fn ack(
    conn: &mut Conn<Stream>,
    target: &Target,
    name: &str,
    messages: &[PollMessage<'_>],
) -> Result<()> {
    let (status, body) = conn
        .exchange(&target.request(
            "POST",
            &format!("/groups/{name}/ack"),
            "",
            Some(&ack_body(messages)),
        ))
        .await?;
    if !(200..300).contains(&status) {
        return Err(http_error(status, &body));
    }
    Ok(())
}

/// Appends `n` events to the streams `{cat}-0..3` of a fresh category.
pub(crate) async fn fill_category(
    target: &Arc<Target>,
    cat: &str,
    n: u64,
    payload: usize,
) -> Result<u64> {
    fill(target, cat, n, payload, "filling a category for groups").await
}

/// The result of draining a group.
pub(crate) struct GroupRun {
    /// Events acked (each once).
    pub(crate) events: u64,
    pub(crate) secs: f64,
    pub(crate) polls: u64,
    /// Deliveries with `delivery` > 1 (none expected: the ack timeout is 60 s).
    pub(crate) redelivered: u64,
    /// Latency of the polls that returned events, µs.
    pub(crate) poll_lat: Latencies,
    pub(crate) cpu: CpuUse,
}

impl GroupRun {
    pub(crate) fn rate(&self) -> f64 {
        self.events as f64 / self.secs
    }

    pub(crate) fn summary(&self) -> String {
        format!(
            "{} events delivered and acked in {:.2} s: {} events/s; {} events per poll, poll p50 {} / p99 {} µs, {} redelivered",
            fmt_num(self.events as f64),
            self.secs,
            fmt_num(self.rate()),
            fmt_num(self.events as f64 / self.polls.max(1) as f64),
            fmt_num(self.poll_lat.q(0.5)),
            fmt_num(self.poll_lat.q(0.99)),
            self.redelivered,
        ) + &self.cpu.summary(self.events / 1000, "1,000 events")
    }

    pub(crate) fn record(&self, report: &mut Report, config: &str) {
        report.add("group", config, "events/s (delivered + acked)", self.rate());
        report.add(
            "group",
            config,
            "events per poll",
            self.events as f64 / self.polls.max(1) as f64,
        );
        report.add("group", config, "poll p50 µs", self.poll_lat.q(0.5));
        report.add("group", config, "poll p99 µs", self.poll_lat.q(0.99));
        report.add("group", config, "redelivered", self.redelivered as f64);
        self.cpu
            .record(report, "group", config, self.events / 1000, "1,000 events");
    }
}

/// A fresh group on category `cat` (holding `args.group_events` events, rounded up as
/// [`fill`] does), drained by `consumers` consumers: poll, then ack the batch with one request.
pub(crate) async fn group_drain(
    target: &Arc<Target>,
    cat: &str,
    consumers: usize,
    args: &BenchArgs,
) -> Result<GroupRun> {
    let total = args.group_events.div_ceil(args.group_events.clamp(1, 1000))
        * args.group_events.clamp(1, 1000);
    let name = format!("{cat}-c{consumers}");
    create_group(target, &name, cat).await?;
    let poll = target.request(
        "POST",
        &format!("/groups/{name}/poll?max={}&wait_ms=200", args.group_max),
        "Content-Length: 0\r\n",
        None,
    );
    let bar = count_bar(&format!("group, {consumers} consumers"), total);
    let acked = Arc::new(AtomicU64::new(0));
    // ns after `start` at which the last event was acked.
    let finished = Arc::new(AtomicU64::new(0));
    let barrier = Arc::new(Barrier::new(consumers + 1));
    let start = Arc::new(std::sync::OnceLock::<Instant>::new());
    let cpu = CpuProbe::start(args.server_pid);
    let mut tasks = Vec::new();
    for _ in 0..consumers {
        let (target, poll, name, acked, finished, barrier, start, bar) = (
            target.clone(),
            poll.clone(),
            name.clone(),
            acked.clone(),
            finished.clone(),
            barrier.clone(),
            start.clone(),
            bar.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let conn = target.connect().await;
            barrier.wait().await;
            let mut conn = conn?;
            let t0 = *start.get_or_init(Instant::now);
            let (mut polls, mut redelivered, mut lat) = (0u64, 0u64, Vec::new());
            while acked.load(Relaxed) < total {
                let sent = Instant::now();
                let (status, body) = conn.exchange(&poll).await?;
                if status != 200 {
                    return Err(http_error(status, &body));
                }
                polls += 1;
                let answer = poll_answer(&body)?;
                if answer.messages.is_empty() {
                    continue;
                }
                // Latency of polls that brought events (an empty one waited out `wait_ms`).
                lat.push(micros(sent.elapsed()));
                redelivered += answer.messages.iter().filter(|m| m.delivery > 1).count() as u64;
                ack(&mut conn, &target, &name, &answer.messages).await?;
                let n = answer.messages.len() as u64;
                let before = acked.fetch_add(n, Relaxed);
                bar.inc(n);
                if before < total && before + n >= total {
                    finished.store(t0.elapsed().as_nanos() as u64, Relaxed);
                }
            }
            Ok::<_, Error>((polls, redelivered, lat))
        }));
    }
    barrier.wait().await;
    let (results, failure) = join_all(tasks, "consumer").await;
    let polls = results.iter().map(|r| r.0).sum();
    let redelivered = results.iter().map(|r| r.1).sum();
    let lat = results.into_iter().flat_map(|r| r.2).collect();
    let cpu = cpu.stop();
    bar.finish_and_clear();
    if let Some(e) = failure {
        return Err(e);
    }
    Ok(GroupRun {
        events: acked.load(Relaxed),
        secs: finished.load(Relaxed) as f64 / 1e9,
        polls,
        redelivered,
        poll_lat: Latencies::new(lat),
        cpu,
    })
}

/// `args.latency_consumers` consumers long-poll a fresh group on category `cat` while
/// `args.rate` events/s are appended to `{cat}-0` for `dur`: each event's delay from its send
/// to the arrival of the poll answer that contains it (first deliveries only).
pub(crate) async fn group_latency(
    target: &Arc<Target>,
    cat: &str,
    args: &BenchArgs,
    dur: Duration,
) -> Result<SseRun> {
    let name = format!("{cat}-lat");
    create_group(target, &name, cat).await?;
    let total = ((dur.as_secs_f64() * f64::from(args.rate)).round() as u64).max(1);
    let clock = Instant::now();
    let poll = target.request(
        "POST",
        &format!("/groups/{name}/poll?max={}&wait_ms=5000", args.group_max),
        "Content-Length: 0\r\n",
        None,
    );
    let received = Arc::new(AtomicU64::new(0));
    // (delay µs, seq, arrival ns) of first deliveries, from every consumer.
    let delays = Arc::new(std::sync::Mutex::new(Vec::with_capacity(total as usize)));
    let mut consumers = Vec::new();
    for _ in 0..args.latency_consumers {
        let (target, poll, name, received, delays) = (
            target.clone(),
            poll.clone(),
            name.clone(),
            received.clone(),
            delays.clone(),
        );
        // Connected (and polling) before the first send.
        let mut conn = target.connect().await?;
        consumers.push(tokio::spawn(async move {
            loop {
                let (status, body) = conn.exchange(&poll).await?;
                let now = clock.elapsed().as_nanos() as u64;
                if status != 200 {
                    return Err::<(), _>(http_error(status, &body));
                }
                let answer = poll_answer(&body)?;
                if answer.messages.is_empty() {
                    continue;
                }
                if let Ok(mut d) = delays.lock() {
                    for m in &answer.messages {
                        if let (1, Some(sent), Some(seq)) =
                            (m.delivery, m.event.data.sent_ns, m.event.data.seq)
                        {
                            let delay = micros(Duration::from_nanos(now.saturating_sub(sent)));
                            d.push((delay, seq, now));
                        }
                    }
                }
                received.fetch_add(answer.messages.len() as u64, Relaxed);
                ack(&mut conn, &target, &name, &answer.messages).await?;
            }
        }));
    }
    let published = publish(
        target,
        &format!("{cat}-0"),
        args.rate,
        dur,
        clock,
        "group delivery",
        args.server_pid,
    )
    .await;
    // Everything sent is delivered within a few seconds, or counted as lost.
    let deadline = Instant::now() + Duration::from_secs(5);
    while published.is_ok()
        && received.load(Relaxed) < total
        && Instant::now() < deadline
        && !consumers.iter().any(|c| c.is_finished())
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The consumers loop until stopped (the last ones sit in a long poll): a finished one
    // failed; the others are stopped here.
    let mut failure = None;
    for c in consumers {
        if c.is_finished() {
            match c.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failure = failure.or(Some(e)),
                Err(e) => failure = failure.or(Some(task_failed("consumer", e))),
            }
        } else {
            c.abort();
        }
    }
    let published = published?;
    if let Some(e) = failure {
        return Err(e);
    }
    let delays = std::mem::take(
        &mut *delays
            .lock()
            .map_err(|_| Error::Io(io::Error::other("a consumer panicked")))?,
    );
    let after_ack = delays
        .iter()
        .filter_map(|&(_, seq, arrived)| {
            let acked = published.acked_at.get(seq as usize)?.load(Relaxed);
            (acked > 0).then(|| micros(Duration::from_nanos(arrived.saturating_sub(acked))))
        })
        .collect();
    let mut run = published.run(delays.into_iter().map(|d| d.0).collect());
    run.after_ack = Some(Latencies::new(after_ack));
    Ok(run)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_answers_and_ack_bodies() {
        let body = br#"{"messages":[{"ack_id":"a.1.1","delivery":1,"event":{"id":"x","data":{"seq":1,"sent_ns":77}}},{"ack_id":"b.2.1","delivery":2,"event":{"data":{"seq":2,"pad":"xx"}}}]}"#;
        let answer = poll_answer(body).unwrap();
        assert_eq!(answer.messages.len(), 2);
        assert_eq!(answer.messages[0].event.data.sent_ns, Some(77));
        assert_eq!(answer.messages[1].event.data.sent_ns, None);
        assert_eq!(answer.messages[1].delivery, 2);
        assert_eq!(
            ack_body(&answer.messages),
            br#"{"ack_ids":["a.1.1","b.2.1"]}"#
        );
        assert!(poll_answer(b"{}").is_err());
    }
}
