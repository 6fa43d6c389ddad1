//! The `correlation` scenario: what the correlation index costs appends. One run, two configs
//! per repetition, alternating: events whose metadata carries `correlation_id` and
//! `causation_id` (indexed: three postings per event) against events whose metadata has the
//! same size and shape under other keys (not indexed). The ratio of their events/s is the cost.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use strata_store::{ExpectedRevision, FsyncPolicy, NewEvent, Store};

use super::{median, options, payload, progress, Bench, BoxResult, Table, MIB, PAYLOAD};

/// `threads` writers appending `per_append` events each time for `dur`; the metadata keys are
/// `correlation_id` / `causation_id` when `indexed`, else `xorrelation_id` / `xausation_id`
/// (same bytes). Returns events/s.
fn run(
    store: &Store,
    threads: usize,
    per_append: usize,
    dur: Duration,
    indexed: bool,
) -> BoxResult<f64> {
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
                    let mut n = 0u64;
                    barrier.wait();
                    let start = Instant::now();
                    let deadline = start + dur;
                    while Instant::now() < deadline {
                        let events: Vec<NewEvent> = (0..per_append)
                            .map(|i| {
                                // A flow of 10 appends; each event caused by a (made-up) id.
                                let meta = format!(
                                    r#"{{"{corr}":"flow-{t}-{:08}","{caus}":"6f1c7a5e-0c1b-4d5e-9d7a-{:012x}","user":"bench"}}"#,
                                    n / 10,
                                    n * per_append as u64 + i as u64
                                );
                                NewEvent::json("BenchEvent", data.clone()).with_metadata(meta)
                            })
                            .collect();
                        store
                            .append(&stream, ExpectedRevision::Any, events)
                            .map_err(|e| e.to_string())?;
                        n += 1;
                    }
                    Ok((n * per_append as u64, start, Instant::now()))
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
    Ok(events as f64 / end.duration_since(start).as_secs_f64())
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
        let dur = self.duration();
        // Per config: [indexed events/s, unindexed events/s, ratio].
        let mut m: Vec<[Vec<f64>; 3]> = configs.iter().map(|_| Default::default()).collect();
        for rep in 0..self.reps(true) {
            let dir = self.fresh_dir()?;
            for (i, &(label, threads, per_append, policy)) in configs.iter().enumerate() {
                let mut pair = [0.0; 2];
                // Alternate which goes first, so that neither always runs on a warmer cache.
                let order = if rep % 2 == 0 {
                    [true, false]
                } else {
                    [false, true]
                };
                for indexed in order {
                    progress(format!(
                        "correlation rep {}: {label}, {}",
                        rep + 1,
                        if indexed { "indexed" } else { "not indexed" }
                    ));
                    let sub = dir.path().join(format!("store-{i}-{indexed}"));
                    let store = Store::open(&sub, options(policy, 256 * MIB))?;
                    pair[usize::from(!indexed)] = run(&store, threads, per_append, dur, indexed)?;
                    store.close()?;
                    drop(store);
                    std::fs::remove_dir_all(&sub)?;
                }
                m[i][0].push(pair[0]);
                m[i][1].push(pair[1]);
                m[i][2].push(pair[0] / pair[1]);
            }
        }
        let mut t = Table::new(format!(
            "Correlation index: appends whose metadata carries correlation_id + causation_id (indexed) vs the same metadata under other keys (not indexed); {PAYLOAD} B data, {} s per run",
            dur.as_secs()
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
