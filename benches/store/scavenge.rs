//! The `scavenge` scenario: an unthrottled scavenge's throughput against the raw sequential
//! write bandwidth of the same directory, measured in the same repetition. Half of the events
//! are removable (their streams soft-deleted); the scavenge then rewrites every sealed segment
//! to about half its size and merges the halves. Throughput is the sealed bytes processed per
//! second (`bytes_before / s`: what a scavenge of that much history takes); the bytes written
//! per second are shown beside it.
//!
//! Then the impact of a throttled scavenge: on a fresh store of the same kind reopened with
//! `FsyncPolicy::Always`, one thread's durable single-event appends and one thread's stream
//! reads for 2 s idle, then for 2 s while a scavenge throttled to [`THROTTLE`] runs: p99 of
//! each against idle.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use strata_store::{
    Direction, ExpectedRevision, FsyncPolicy, NewEvent, ReadFrom, ScavengeOptions, Store,
};

use super::{
    bulk_build, median, options, payload, progress, quantile, raw_seq, target_line, Bench,
    BoxResult, Table, MIB, PAYLOAD,
};

/// The throttle of the impact measurement: bytes read and written per second.
const THROTTLE: u64 = 16 * MIB;

/// Builds a store of `appends` appends of 10 events into 2,000 streams, half of them
/// soft-deleted.
fn build(dir: &std::path::Path, appends: u64) -> BoxResult<()> {
    let streams = 1000;
    let store = Store::open(dir, options(FsyncPolicy::Never, 16 * MIB))?;
    let name = |k: u64| {
        let s = k % (2 * streams);
        if s.is_multiple_of(2) {
            format!("keep-{s}")
        } else {
            format!("gone-{s}")
        }
    };
    bulk_build(&store, 0, appends, 10, 2, &name)?;
    for s in (1..2 * streams).step_by(2) {
        store.delete_stream(&format!("gone-{s}"), ExpectedRevision::Any, false)?;
    }
    store.close()?;
    Ok(())
}

/// One appender (durable, single events) and one reader (10-event pages of the kept streams)
/// for `dur`: their sorted latencies in µs.
fn load(store: &Store, dur: Duration) -> BoxResult<(Vec<u32>, Vec<u32>)> {
    let us = |t: Instant| t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
    let (mut a, mut r) = std::thread::scope(|s| -> BoxResult<(Vec<u32>, Vec<u32>)> {
        let appender = s.spawn(|| -> Result<Vec<u32>, String> {
            let data = payload(PAYLOAD, 7);
            let mut lat = Vec::new();
            let end = Instant::now() + dur;
            while Instant::now() < end {
                let t = Instant::now();
                store
                    .append(
                        "live",
                        ExpectedRevision::Any,
                        vec![NewEvent::json("BenchEvent", data.clone())],
                    )
                    .map_err(|e| e.to_string())?;
                lat.push(us(t));
            }
            Ok(lat)
        });
        let reader = s.spawn(|| -> Result<Vec<u32>, String> {
            let mut lat = Vec::new();
            let mut k = 0u64;
            let end = Instant::now() + dur;
            while Instant::now() < end {
                let name = format!("keep-{}", (k * 7919 % 1000) * 2);
                k += 1;
                let t = Instant::now();
                store
                    .read_stream(&name, ReadFrom::Start, Direction::Forward, 10)
                    .map_err(|e| e.to_string())?;
                lat.push(us(t));
            }
            Ok(lat)
        });
        let a = appender.join().map_err(|_| "appender panicked")??;
        let r = reader.join().map_err(|_| "reader panicked")??;
        Ok((a, r))
    })?;
    a.sort_unstable();
    r.sort_unstable();
    Ok((a, r))
}

impl Bench {
    pub(super) fn scavenge(&self) -> BoxResult<()> {
        let appends: u64 = if self.quick { 20_000 } else { 60_000 };
        let per_append = 10;
        let streams = 1000;
        let mut processed = Vec::new();
        let mut written = Vec::new();
        let mut raw = Vec::new();
        let mut ratio = Vec::new();
        let mut reclaimed = Vec::new();
        for rep in 0..self.reps(false) {
            progress(format!("scavenge rep {}: building", rep + 1));
            let dir = self.fresh_dir()?;
            build(dir.path(), appends)?;
            let store = Store::open(dir.path(), options(FsyncPolicy::Never, 16 * MIB))?;
            progress(format!("scavenge rep {}: scavenging", rep + 1));
            let t = Instant::now();
            let p = store.scavenge(ScavengeOptions::default(), &mut |_| {})?;
            let secs = t.elapsed().as_secs_f64();
            let mb_in = p.bytes_before as f64 / 1e6 / secs;
            // What it wrote: the new files of the segments rewritten and merged.
            let mb_out = p.bytes_after as f64 / 1e6 / secs;
            store.close()?;
            drop(store);
            progress(format!("scavenge rep {}: raw sequential writes", rep + 1));
            let seq = raw_seq(dir.path(), p.bytes_before.max(64 * MIB))?;
            processed.push(mb_in);
            written.push(mb_out);
            raw.push(seq);
            ratio.push(mb_in / seq);
            reclaimed.push(p.bytes_reclaimed as f64 / p.bytes_before.max(1) as f64 * 100.0);
        }
        let mut t = Table::new(format!(
            "Scavenge, unthrottled: {appends} appends of {per_append} events of 256 B into {} streams (16 MiB segments), half of the streams soft-deleted; against raw sequential writes of as many bytes in the same directory",
            2 * streams
        ));
        t.row("scavenge", "sealed MB processed / s", processed);
        t.row("scavenge", "MB of new files / s (≈ written)", written);
        t.row("scavenge", "% of the sealed bytes reclaimed", reclaimed);
        t.row("raw disk", "sequential write MB/s", raw);
        t.row("ratio", "scavenge / raw sequential", ratio.clone());
        t.print();
        println!();
        let r = median(&ratio);
        target_line(
            "scavenge throughput vs sequential write bandwidth",
            r,
            "≥ 0.5",
            r >= 0.5,
        );
        self.scavenge_impact(appends)
    }

    /// Append and read p99 while a throttled scavenge runs, against idle (module docs).
    fn scavenge_impact(&self, appends: u64) -> BoxResult<()> {
        let dur = Duration::from_secs(2);
        let mut rows: [Vec<f64>; 8] = Default::default();
        for rep in 0..self.reps(false) {
            progress(format!("scavenge impact rep {}: building", rep + 1));
            let dir = self.fresh_dir()?;
            build(dir.path(), appends)?;
            let store = Store::open(dir.path(), options(FsyncPolicy::Always, 16 * MIB))?;
            progress(format!("scavenge impact rep {}: idle", rep + 1));
            let (a0, r0) = load(&store, dur)?;
            progress(format!(
                "scavenge impact rep {}: during a scavenge",
                rep + 1
            ));
            let stop = Arc::new(AtomicBool::new(false));
            let (a1, r1) = std::thread::scope(|s| -> BoxResult<_> {
                let scav = s.spawn(|| {
                    let opts = ScavengeOptions {
                        max_bytes_per_s: Some(THROTTLE),
                        stop: stop.clone(),
                    };
                    store.scavenge(opts, &mut |_| {})
                });
                let loaded = load(&store, dur);
                stop.store(true, Ordering::Release);
                scav.join().map_err(|_| "scavenge panicked")??;
                loaded
            })?;
            rows[0].push(quantile(&a0, 0.50));
            rows[1].push(quantile(&a1, 0.50));
            rows[2].push(quantile(&a0, 0.99));
            rows[3].push(quantile(&a1, 0.99));
            rows[4].push(quantile(&a1, 0.99) / quantile(&a0, 0.99));
            rows[5].push(quantile(&r0, 0.99));
            rows[6].push(quantile(&r1, 0.99));
            rows[7].push(quantile(&r1, 0.99) / quantile(&r0, 0.99));
            store.close()?;
        }
        let [m0, m1, a0, a1, ar, r0, r1, rr] = rows;
        let mut t = Table::new(format!(
            "Throttled scavenge ({} MiB/s read + write) under load: 1 thread of durable single-event appends and 1 thread of 10-event stream reads, 2 s idle then 2 s during the scavenge",
            THROTTLE / MIB
        ));
        t.row("idle", "append p50 µs", m0);
        t.row("scavenging", "append p50 µs", m1);
        t.row("idle", "append p99 µs", a0);
        t.row("scavenging", "append p99 µs", a1);
        t.row("ratio", "append p99 scavenging / idle", ar.clone());
        t.row("idle", "stream read p99 µs", r0);
        t.row("scavenging", "stream read p99 µs", r1);
        t.row("ratio", "stream read p99 scavenging / idle", rr.clone());
        t.print();
        println!();
        let (a, r) = (median(&ar), median(&rr));
        target_line(
            "append p99 during a throttled scavenge vs idle",
            a,
            "≤ 2",
            a <= 2.0,
        );
        target_line(
            "stream read p99 during a throttled scavenge vs idle",
            r,
            "≤ 2",
            r <= 2.0,
        );
        Ok(())
    }
}
