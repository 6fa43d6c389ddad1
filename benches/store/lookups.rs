//! The `lookups` scenario: whether lookups slow down as sealed segments accumulate. Stores of
//! the same history (10-event streams, 64-byte payloads: about 22,000 streams, as many as fill
//! 2,000 segments of 16 KiB) cut into 10, 200 and 2,000 sealed segments, plus one of 1,999
//! segments of 16 KiB (the worst case of the merged chain: 19 merged files and 9 segments to
//! probe, where 2,000 has 2 files). Each repetition opens each store twice, without and with
//! merged index files (`Options::merge_indexes`; with: `Store::merge_indexes` first), reads
//! every stream once (warm-up: pages mapped, index files checked), then measures from one
//! thread: random whole-stream reads (p50/p99), the head of a stream that does not exist (the
//! worst lookup: every probe misses) and single-event appends to new streams (the writer looks
//! the new stream's head and metadata up before it writes). The ratios to the 10-segment
//! store, in the same run, are what to read.

use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

use std::sync::Arc;

use strata_store::file_io::{AppendFile, FileIo, StdFileIo};
use strata_store::{Direction, ExpectedRevision, FsyncPolicy, NewEvent, Options, ReadFrom, Store};

use super::{median, options, progress, quantile, segments, Bench, BoxResult, Rng, Table};

/// Segment size of the 2,000-segment store.
const SMALL_SEGMENT: u64 = 16 * 1024;
/// Payload bytes per event: about 11 streams of 10 events per 16 KiB segment.
const EVENT_BYTES: usize = 64;

fn opts(merge: bool, segment_size: u64) -> Options {
    Options {
        merge_indexes: merge,
        ..options(FsyncPolicy::Never, segment_size)
    }
}

fn name(k: u64) -> String {
    format!("account-{k}")
}

/// The file system without fsyncs, for building the stores quickly (2,000 seals with three
/// fsyncs each take minutes on a loaded virtual disk); the measurements use the real one.
struct NoSync;

impl FileIo for NoSync {
    fn open_append(&self, path: &Path) -> std::io::Result<Box<dyn AppendFile>> {
        Ok(Box::new(NoSyncFile(StdFileIo.open_append(path)?)))
    }

    fn write_new_file(&self, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        std::fs::write(path, bytes)
    }
}

struct NoSyncFile(Box<dyn AppendFile>);

impl AppendFile for NoSyncFile {
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.0.write_all(buf)
    }

    fn sync_data(&mut self) -> std::io::Result<()> {
        Ok(())
    }

    fn truncate(&mut self, len: u64) -> std::io::Result<()> {
        self.0.truncate(len)
    }
}

/// Appends 10-event streams with segments of `segment_size`: `streams` of them, or (`None`)
/// until `sealed` segments are sealed. Returns the number of sealed segments, of streams, and
/// the bytes of the segment files.
fn build(
    dir: &Path,
    segment_size: u64,
    streams: Option<u64>,
    sealed: usize,
) -> BoxResult<(usize, u64, u64)> {
    let store = Store::open(
        dir,
        Options {
            file_io: Arc::new(NoSync),
            ..opts(false, segment_size)
        },
    )?;
    let json = format!("\"{}\"", "x".repeat(EVENT_BYTES - 2));
    let mut k = 0;
    loop {
        let done = match streams {
            Some(n) => k == n,
            None => store.info().segment_count > sealed,
        };
        if done {
            break;
        }
        let events = (0..10).map(|_| NewEvent::json("e", json.clone())).collect();
        store.append(&name(k), ExpectedRevision::NoStream, events)?;
        k += 1;
    }
    store.flush()?;
    let count = store.info().segment_count - 1;
    store.close()?;
    let bytes = segments(dir).iter().map(|s| s.1).sum();
    Ok((count, k, bytes))
}

/// One measurement of one store: (read p50, read p99, absent-head p99, new-stream append p99),
/// µs.
fn measure(
    dir: &Path,
    streams: u64,
    segment_size: u64,
    merge: bool,
    reads: usize,
    appends: usize,
    seed: u64,
) -> BoxResult<[f64; 4]> {
    let store = Store::open(dir, opts(merge, segment_size))?;
    if merge {
        store.merge_indexes()?;
    }
    let mut rng = Rng(seed | 1);
    // Warm-up: every stream read once (pages mapped, index files checked).
    for k in 0..streams {
        black_box(store.read_stream(&name(k), ReadFrom::Start, Direction::Forward, 100)?);
    }
    let mut lat = Vec::with_capacity(reads);
    for _ in 0..reads {
        let k = rng.next() % streams;
        let t = Instant::now();
        let page = store.read_stream(&name(k), ReadFrom::Start, Direction::Forward, 100)?;
        lat.push(t.elapsed().as_nanos().min(u128::from(u32::MAX)) as u32);
        if page.events.len() != 10 {
            return Err(format!("{}: {} events", name(k), page.events.len()).into());
        }
    }
    lat.sort_unstable();
    let (p50, p99) = (quantile(&lat, 0.5), quantile(&lat, 0.99));
    // A quarter as many: without merged files one costs milliseconds at 2,000 segments.
    let mut heads = Vec::with_capacity(reads / 4);
    for i in 0..reads / 4 {
        let absent = format!("absent-{seed}-{i}");
        let t = Instant::now();
        let head = store.head(&absent)?;
        heads.push(t.elapsed().as_nanos().min(u128::from(u32::MAX)) as u32);
        if head.last_revision.is_some() {
            return Err(format!("{absent} exists").into());
        }
    }
    heads.sort_unstable();
    let mut adds = Vec::with_capacity(appends);
    for i in 0..appends {
        let fresh = format!("new-{seed}-{merge}-{i}");
        let t = Instant::now();
        store.append(
            &fresh,
            ExpectedRevision::NoStream,
            vec![NewEvent::json("e", "{}")],
        )?;
        adds.push(t.elapsed().as_nanos().min(u128::from(u32::MAX)) as u32);
    }
    adds.sort_unstable();
    store.close()?;
    let us = |ns: f64| ns / 1000.0;
    Ok([
        us(p50),
        us(p99),
        us(quantile(&heads, 0.99)),
        us(quantile(&adds, 0.99)),
    ])
}

impl Bench {
    pub(super) fn lookups(&self) -> BoxResult<()> {
        let reads = if self.quick { 5_000 } else { 20_000 };
        let appends = if self.quick { 500 } else { 2_000 };
        // 2,000 segments of 16 KiB first: its streams and bytes give the other stores' (the
        // same streams, cut into 200 and 10 segments). 1,999 segments: the worst case of the
        // merged chain (1 + 9 + 9 merged files and 9 segments, where 2,000 has 2 files).
        let mut dirs = Vec::new();
        let (mut streams, mut total) = (None, 0);
        for (target, small) in [(2000, true), (1999, true), (200, false), (10, false)] {
            let dir = self.fresh_dir()?;
            let t = Instant::now();
            let segment_size = if small {
                SMALL_SEGMENT
            } else {
                (total / target as u64).max(4096)
            };
            let want = if target == 1999 { None } else { streams };
            let (sealed, k, bytes) = build(dir.path(), segment_size, want, target)?;
            if streams.is_none() {
                (streams, total) = (Some(k), bytes);
            }
            progress(format!(
                "lookups: {sealed} sealed segments of {} KiB, {k} streams, built in {:.1} s",
                segment_size / 1024,
                t.elapsed().as_secs_f64()
            ));
            dirs.push((sealed, dir, segment_size, k));
        }
        dirs.reverse();
        let sizes = dirs.len();
        const METRICS: [&str; 4] = [
            "read p50 µs",
            "read p99 µs",
            "absent head p99 µs",
            "new-stream append p99 µs",
        ];
        // vals[size][merge][metric] = per-repetition values.
        let mut vals = vec![vec![vec![Vec::new(); 4]; 2]; sizes];
        for rep in 0..self.reps(true) {
            progress(format!("lookups rep {}", rep + 1));
            // Alternating configurations, so that load swings hit all alike.
            for (i, (_, dir, segment_size, streams)) in dirs.iter().enumerate() {
                for merge in [false, true] {
                    let seed = 0xA5A5 ^ ((rep as u64) << 8) ^ i as u64;
                    let m = measure(
                        dir.path(),
                        *streams,
                        *segment_size,
                        merge,
                        reads,
                        appends,
                        seed,
                    )?;
                    for (j, v) in m.iter().enumerate() {
                        vals[i][usize::from(merge)][j].push(*v);
                    }
                }
            }
        }
        let mut t = Table::new(format!(
            "Lookups by number of sealed segments (the same {} streams × 10 events in each store), 1 thread, {reads} reads, {} absent heads and {appends} new-stream appends per repetition",
            streams.unwrap_or(0),
            reads / 4
        ));
        for (i, (n, _, _, _)) in dirs.iter().enumerate() {
            for merge in [false, true] {
                let label = format!(
                    "{n} segments, {}",
                    if merge { "merged" } else { "not merged" }
                );
                for (j, metric) in METRICS.iter().enumerate() {
                    t.row(
                        label.clone(),
                        *metric,
                        vals[i][usize::from(merge)][j].clone(),
                    );
                }
            }
        }
        t.print();
        println!("\nRatios of medians to the 10-segment store (target ≤ 1.5 merged at 2,000):\n");
        println!("| metric | segments | not merged | merged |");
        println!("|---|--:|--:|--:|");
        for (j, metric) in METRICS.iter().enumerate() {
            for i in 1..sizes {
                let ratio = |merge: usize| median(&vals[i][merge][j]) / median(&vals[0][merge][j]);
                println!(
                    "| {metric} | {} | {:.2} | {:.2} |",
                    dirs[i].0,
                    ratio(0),
                    ratio(1)
                );
            }
        }
        Ok(())
    }
}
