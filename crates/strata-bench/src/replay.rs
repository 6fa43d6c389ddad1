//! The `replay` scenario (NDJSON replay of `/all`) and [`fill`], which appends batches to bring
//! the log (or a category) to a size.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use crate::append::append_body;
use crate::args::BenchArgs;
use crate::error::{Error, Result};
use crate::http::{http_error, task_failed, Target};
use crate::probe::{CpuProbe, CpuUse};
use crate::report::{count_bar, fmt_num, Report};

/// The result of an NDJSON replay.
pub(crate) struct ReplayRun {
    pub(crate) lines: u64,
    pub(crate) bytes: u64,
    pub(crate) secs: f64,
    pub(crate) first_byte_ms: f64,
    pub(crate) cpu: CpuUse,
}

impl ReplayRun {
    pub(crate) fn rate(&self) -> f64 {
        self.lines as f64 / self.secs
    }

    pub(crate) fn summary(&self) -> String {
        format!(
            "{} events in {:.2} s: {} events/s, {} MB/s ({} B per line), first byte after {} ms",
            fmt_num(self.lines as f64),
            self.secs,
            fmt_num(self.rate()),
            fmt_num(self.bytes as f64 / 1e6 / self.secs),
            fmt_num(self.bytes as f64 / self.lines.max(1) as f64),
            fmt_num(self.first_byte_ms),
        ) + &self.cpu.summary(self.lines / 1000, "1,000 events")
    }

    pub(crate) fn record(&self, report: &mut Report) {
        let config = format!("/all, last {} events", fmt_num(self.lines as f64));
        report.add("replay", &config, "events/s", self.rate());
        report.add(
            "replay",
            &config,
            "MB/s",
            self.bytes as f64 / 1e6 / self.secs,
        );
        report.add(
            "replay",
            &config,
            "time to first byte ms",
            self.first_byte_ms,
        );
        report.add("replay", &config, "seconds", self.secs);
        self.cpu
            .record(report, "replay", &config, self.lines / 1000, "1,000 events");
    }
}

/// Fills the log up to `events` events if needed, then replays the last `events` of `/all`.
pub(crate) async fn replay(target: &Arc<Target>, tag: &str, args: &BenchArgs) -> Result<ReplayRun> {
    let (events, payload_bytes) = (args.events, args.payload);
    let next = |info: &serde_json::Value| info["next_position"].as_u64().unwrap_or(0);
    let have = next(&target.get_json("/info").await?);
    if have < events {
        fill(
            target,
            &format!("{tag}-fill"),
            events - have,
            payload_bytes,
            "filling the log to replay",
        )
        .await?;
    }
    let end = next(&target.get_json("/info").await?);
    let from = end.saturating_sub(events);
    let request = target.request(
        "GET",
        &format!("/all?from={from}"),
        "Accept: application/x-ndjson\r\n",
        None,
    );
    let bar = count_bar("replay (NDJSON)", events);
    let mut conn = target.connect().await?;
    let cpu = CpuProbe::start(args.server_pid);
    let t0 = Instant::now();
    conn.send(&request).await?;
    let head = conn.head().await?;
    let mut first_byte = None;
    let (mut lines, mut bytes, mut shown) = (0u64, 0u64, 0u64);
    if head.status != 200 {
        let mut body = Vec::new();
        conn.body(head, |d| {
            body.extend_from_slice(d);
            true
        })
        .await?;
        return Err(http_error(head.status, &body));
    }
    conn.body(head, |d| {
        first_byte.get_or_insert_with(|| t0.elapsed());
        lines += d.iter().filter(|&&b| b == b'\n').count() as u64;
        bytes += d.len() as u64;
        if lines - shown >= 50_000 {
            bar.set_position(lines);
            shown = lines;
        }
        true
    })
    .await?;
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu.stop();
    bar.finish_and_clear();
    Ok(ReplayRun {
        lines,
        bytes,
        secs,
        cpu,
        first_byte_ms: first_byte.unwrap_or_default().as_secs_f64() * 1e3,
    })
}

/// Appends at least `n` events (batches of up to 1,000 over 4 connections, to the streams
/// `{streams}-0` to `{streams}-3`); returns how many were appended (`n` rounded up to whole
/// batches).
pub(crate) async fn fill(
    target: &Arc<Target>,
    streams: &str,
    n: u64,
    payload_bytes: usize,
    label: &str,
) -> Result<u64> {
    const CONNS: u64 = 4;
    let batch = n.clamp(1, 1000);
    let bar = count_bar(label, n);
    let batches = n.div_ceil(batch);
    let left = Arc::new(AtomicU64::new(batches));
    let mut tasks = Vec::new();
    for c in 0..CONNS {
        let request = target.request(
            "POST",
            &format!("/streams/{streams}-{c}"),
            "",
            Some(&append_body(batch as usize, payload_bytes, c as usize)),
        );
        let (target, left, bar) = (target.clone(), left.clone(), bar.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = target.connect().await?;
            while left
                .fetch_update(Relaxed, Relaxed, |l| l.checked_sub(1))
                .is_ok()
            {
                let (status, body) = conn.exchange(&request).await?;
                if status != 201 {
                    return Err(http_error(status, &body));
                }
                bar.inc(batch);
            }
            Ok::<_, Error>(())
        }));
    }
    for t in tasks {
        t.await.map_err(|e| task_failed("fill task", e))??;
    }
    bar.finish_and_clear();
    Ok(batches * batch)
}
