//! The `correlation` scenario: what the correlation index costs appends. One run, two configs
//! per repetition, alternating: events whose metadata carries `correlation_id` and
//! `causation_id` (indexed: three postings per event) against events whose metadata has the
//! same size and shape under other keys (not indexed). The ratio of their events/s is the cost.
//! The two stores are open side by side and written in alternating slices (six each per
//! repetition), so that the disk's latency swings and other users' load hit both alike.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use strata_store::{ExpectedRevision, FsyncPolicy, NewEvent, Store};

use super::{median, options, payload, progress, Bench, BoxResult, Table, MIB, PAYLOAD};

/// `threads` writers appending `per_append` events each time for `dur`; the metadata keys are
/// `correlation_id` / `causation_id` when `indexed`, else `xorrelation_id` / `xausation_id`
/// (same bytes); `round` keeps the flows and causation ids of successive slices apart.
/// Returns (events, seconds).
fn run(
    store: &Store,
    threads: usize,
    per_append: usize,
    dur: Duration,
    indexed: bool,
    round: u64,
) -> BoxResult<(u64, f64)> {
    let barrier = Arc::new(Barrier::new(threads + 1));
    let (corr, caus) = if indexed {
        ("correlation_id", "causation_id")
    } else {
        ("xorrelation_id", "xausation_id")
    };
    let results = std::thread::scope(|s| -> BoxResult<Vec<(u64, Instant, Instant)>> {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let barrier = barrier.clone();
                s.spawn(move || -> Result<(u64, Instant, Instant), String> {
                    let stream = format!("writer-{t}");
                    let data = payload(PAYLOAD, t as u64);
                    let first = round << 32;
                    let mut n = first;
                    barrier.wait();
                    let start = Instant::now();
                    let deadline = start + dur;
                    while Instant::now() < deadline {
                        let events: Vec<NewEvent> = (0..per_append)
                            .map(|i| {
                                // A flow of 10 appends; each event caused by a (made-up) id.
                                let meta = format!(
                                    r#"{{"{corr}":"flow-{t}-{:012}","{caus}":"6f1c7a5e-0c1b-4d5e-9d7a-{:012x}","user":"bench"}}"#,
                                    n / 10,
                                    (n * per_append as u64 + i as u64) & 0xffff_ffff_ffff
                                );
                                NewEvent::json("BenchEvent", data.clone()).with_metadata(meta)
                            })
                            .collect();
                        store
                            .append(&stream, ExpectedRevision::Any, events)
                            .map_err(|e| e.to_string())?;
                        n += 1;
                    }
                    Ok(((n - first) * per_append as u64, start, Instant::now()))
                })
            })
            .collect();
        barrier.wait();
        let mut out = Vec::new();
        for h in handles {
            out.push(h.join().map_err(|_| "writer thread panicked")??);
        }
        Ok(out)
    })?;
    let start = results.iter().map(|r| r.1).min().ok_or("no threads")?;
    let end = results.iter().map(|r| r.2).max().ok_or("no threads")?;
    let events: u64 = results.iter().map(|r| r.0).sum();
    Ok((events, end.duration_since(start).as_secs_f64()))
}

impl Bench {
    pub(super) fn correlation(&self) -> BoxResult<()> {
        let configs: [(&str, usize, usize, FsyncPolicy); 3] = [
            (
                "4 writers × 1 event, FsyncPolicy::Always",
                4,
                1,
                FsyncPolicy::Always,
            ),
            (
                "1 writer × 100 events, FsyncPolicy::Always",
                1,
                100,
                FsyncPolicy::Always,
            ),
            (
                "diagnostic: 4 writers × 100 events, FsyncPolicy::Never (CPU ceiling)",
                4,
                100,
                FsyncPolicy::Never,
            ),
        ];
        const SLICES: u64 = 6;
        let slice = self.duration() / 2;
        // Per config: [indexed events/s, unindexed events/s, ratio].
        let mut m: Vec<[Vec<f64>; 3]> = configs.iter().map(|_| Default::default()).collect();
        for rep in 0..self.reps(true) {
            let dir = self.fresh_dir()?;
            for (i, &(label, threads, per_append, policy)) in configs.iter().enumerate() {
                progress(format!("correlation rep {}: {label}", rep + 1));
                let subs = [
                    dir.path().join(format!("indexed-{i}")),
                    dir.path().join(format!("plain-{i}")),
                ];
                let stores = [
                    Store::open(&subs[0], options(policy, 256 * MIB))?,
                    Store::open(&subs[1], options(policy, 256 * MIB))?,
                ];
                // (events, seconds) of the indexed and of the unindexed store.
                let mut sums = [(0u64, 0.0f64); 2];
                for round in 0..SLICES {
                    // Alternate which goes first, so that neither always runs on a warmer cache.
                    let order = if (round + rep as u64).is_multiple_of(2) {
                        [0, 1]
                    } else {
                        [1, 0]
                    };
                    for k in order {
                        let (events, secs) =
                            run(&stores[k], threads, per_append, slice, k == 0, round)?;
                        sums[k].0 += events;
                        sums[k].1 += secs;
                    }
                }
                for (store, sub) in stores.into_iter().zip(&subs) {
                    store.close()?;
                    drop(store);
                    std::fs::remove_dir_all(sub)?;
                }
                let indexed = sums[0].0 as f64 / sums[0].1;
                let plain = sums[1].0 as f64 / sums[1].1;
                m[i][0].push(indexed);
                m[i][1].push(plain);
                m[i][2].push(indexed / plain);
            }
        }
        let mut t = Table::new(format!(
            "Correlation index: appends whose metadata carries correlation_id + causation_id (indexed) vs the same metadata under other keys (not indexed); {PAYLOAD} B data; per repetition and store {SLICES} alternating slices of {:.1} s",
            slice.as_secs_f64()
        ));
        for (i, (label, ..)) in configs.iter().enumerate() {
            let [ix, plain, ratio] = m[i].clone();
            t.row(*label, "indexed events/s", ix);
            t.row(*label, "not indexed events/s", plain);
            t.row(*label, "indexed / not indexed", ratio);
        }
        t.print();
        println!("\nMedian ratios (indexed / not indexed events/s, same run):\n");
        for (i, (label, ..)) in configs.iter().enumerate() {
            println!("- {label}: {:.3}", median(&m[i][2]));
        }
        Ok(())
    }
}
