//! Throughput and latency benchmarks of `strata-store`, each compared against a raw-disk
//! baseline measured in the same run (the machine is shared and noisy: ratios and medians of
//! repetitions are what to read, not single numbers).
//!
//! ```sh
//! cargo bench --bench store -- <baseline|append|batch|replay|reads|open|correlation|scavenge|all> [--quick]
//! ```
//!
//! Data lives under `target/bench-data` (override with `STRATA_BENCH_DIR`), which must be on the
//! same file system as the repository, not tmpfs; every repetition uses a fresh directory and
//! everything is removed at the end. See `docs/performance.md` for the method and the figures.

use std::fs::{self, OpenOptions};
use std::hint::black_box;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use strata_store::{
    AllFilter, Direction, ExpectedRevision, FsyncPolicy, NewEvent, Options, ReadFrom, Store,
};

type BoxResult<T> = Result<T, Box<dyn std::error::Error>>;

const MIB: u64 = 1024 * 1024;
/// Size of the JSON payload of every benchmark event.
const PAYLOAD: usize = 256;
const SCENARIOS: [&str; 8] = [
    "baseline",
    "append",
    "batch",
    "replay",
    "reads",
    "open",
    "correlation",
    "scavenge",
];

#[path = "store/correlation.rs"]
mod correlation;
#[path = "store/scavenge.rs"]
mod scavenge;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("open-child") {
        let dir = args.get(1).expect("open-child <dir>");
        if let Err(e) = open_child(Path::new(dir)) {
            eprintln!("open-child failed: {e}");
            std::process::exit(1);
        }
        return;
    }
    // `cargo bench` appends `--bench`; ignore it and any other flag we do not know.
    let quick = args.iter().any(|a| a == "--quick");
    let scenario = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .cloned()
        .unwrap_or_else(|| "all".into());
    let list: Vec<&str> = match scenario.as_str() {
        "all" => SCENARIOS.to_vec(),
        s if SCENARIOS.contains(&s) => SCENARIOS.iter().copied().filter(|x| *x == s).collect(),
        other => {
            eprintln!(
                "unknown scenario {other:?}; use one of: {} all [--quick]",
                SCENARIOS.join(" ")
            );
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&list, quick) {
        eprintln!("benchmark failed: {e}");
        std::process::exit(1);
    }
}

struct Bench {
    quick: bool,
    base: PathBuf,
}

fn run(list: &[&str], quick: bool) -> BoxResult<()> {
    let base = std::env::var_os("STRATA_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-data"));
    fs::create_dir_all(&base)?;
    let base = base.canonicalize()?;
    let fs_type = print_machine(&base, quick);
    if fs_type == "tmpfs" || fs_type == "ramfs" {
        return Err(format!(
            "{} is on {fs_type}: fsync numbers would be meaningless; set STRATA_BENCH_DIR",
            base.display()
        )
        .into());
    }
    let bench = Bench { quick, base };
    let mut result = Ok(());
    for s in list {
        let t = Instant::now();
        println!("\n## {s}\n");
        println!("load average at start: {}", loadavg());
        let r = match *s {
            "baseline" => bench.baseline(),
            "append" => bench.append(),
            "batch" => bench.batch(),
            "replay" => bench.replay(),
            "reads" => bench.reads(),
            "open" => bench.open(),
            "correlation" => bench.correlation(),
            "scavenge" => bench.scavenge(),
            _ => Ok(()),
        };
        println!(
            "\n_{s}: {:.0} s, load average at end: {}_",
            t.elapsed().as_secs_f64(),
            loadavg()
        );
        if let Err(e) = r {
            result = Err(e);
            break;
        }
    }
    // Leave nothing behind (the per-repetition directories are removed as they finish).
    let _ = fs::remove_dir(&bench.base);
    result
}

// ---------------------------------------------------------------------------------------------
// Machine description

fn print_machine(base: &Path, quick: bool) -> String {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let (device, fs_type, mount) = mount_of(base);
    let dev_name = device.trim_start_matches("/dev/").to_owned();
    let rotational = fs::read_to_string(format!("/sys/block/{dev_name}/queue/rotational"))
        .map(|s| {
            if s.trim() == "1" {
                "rotational"
            } else {
                "non-rotational"
            }
        })
        .unwrap_or("unknown");
    println!(
        "# strata-store benchmarks{}\n",
        if quick { " (--quick)" } else { "" }
    );
    println!("| machine | |");
    println!("|---|---|");
    println!("| CPU | {cpu} |");
    println!("| nproc | {nproc} |");
    println!("| memory | {mem_gib:.1} GiB |");
    println!("| kernel | {} |", kernel.trim());
    println!("| data dir | {} |", base.display());
    println!("| file system | {fs_type} on {device} ({rotational}), mounted at {mount} |");
    println!("| build | release (`cargo bench`) |");
    fs_type
}

/// (device, fs type, mount point) of the longest mount point that is a prefix of `path`.
fn mount_of(path: &Path) -> (String, String, String) {
    let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
    let mut best: Option<(String, String, String)> = None;
    for line in mounts.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 3 {
            continue;
        }
        let mp = Path::new(f[1]);
        if path.starts_with(mp) && best.as_ref().is_none_or(|b| f[1].len() > b.2.len()) {
            best = Some((f[0].to_owned(), f[2].to_owned(), f[1].to_owned()));
        }
    }
    best.unwrap_or_else(|| ("?".into(), "?".into(), "?".into()))
}

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Statistics and tables

fn sorted(v: &[f64]) -> Vec<f64> {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s
}

fn median(v: &[f64]) -> f64 {
    let s = sorted(v);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// The `q`-quantile (0..=1) of sorted latencies, nearest rank.
fn quantile(sorted_lat: &[u32], q: f64) -> f64 {
    if sorted_lat.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted_lat.len() as f64).ceil() as usize).clamp(1, sorted_lat.len());
    f64::from(sorted_lat[rank - 1])
}

fn fmt_num(x: f64) -> String {
    if !x.is_finite() {
        return "–".into();
    }
    if x.fract() == 0.0 && x.abs() < 100_000.0 {
        return format!("{x:.0}");
    }
    let a = x.abs();
    if a >= 100_000.0 {
        let s = format!("{:.0}", x);
        let (sign, digits) = s.strip_prefix('-').map_or(("", s.as_str()), |d| ("-", d));
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        format!("{sign}{out}")
    } else if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 0.1 {
        format!("{x:.2}")
    } else {
        format!("{x:.4}")
    }
}

/// A table of `config | metric | median | min | max`, values per repetition.
struct Table {
    title: String,
    rows: Vec<(String, String, Vec<f64>)>,
}

impl Table {
    fn new(title: impl Into<String>) -> Table {
        Table {
            title: title.into(),
            rows: Vec::new(),
        }
    }

    fn row(&mut self, config: impl Into<String>, metric: impl Into<String>, vals: Vec<f64>) {
        self.rows.push((config.into(), metric.into(), vals));
    }

    fn print(&self) {
        println!("\n{}\n", self.title);
        println!("| config | metric | median | min | max | reps |");
        println!("|---|---|--:|--:|--:|--:|");
        for (config, metric, vals) in &self.rows {
            let s = sorted(vals);
            println!(
                "| {config} | {metric} | {} | {} | {} | {} |",
                fmt_num(median(vals)),
                fmt_num(*s.first().unwrap_or(&f64::NAN)),
                fmt_num(*s.last().unwrap_or(&f64::NAN)),
                vals.len()
            );
        }
    }
}

fn target_line(name: &str, measured: f64, goal: &str, met: bool) {
    println!(
        "- **{name}**: {} (target {goal}) → **{}**",
        fmt_num(measured),
        if met { "met" } else { "NOT met" }
    );
}

// ---------------------------------------------------------------------------------------------
// Helpers

impl Bench {
    fn reps(&self, short: bool) -> usize {
        match (self.quick, short) {
            (true, _) => 3,
            (false, true) => 5,
            (false, false) => 3,
        }
    }

    fn fresh_dir(&self) -> BoxResult<tempfile::TempDir> {
        Ok(tempfile::Builder::new()
            .prefix("rep-")
            .tempdir_in(&self.base)?)
    }

    fn duration(&self) -> Duration {
        if self.quick {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(3)
        }
    }
}

fn progress(msg: impl AsRef<str>) {
    eprintln!("  .. {}", msg.as_ref());
}

/// A JSON document of exactly `size` bytes.
fn payload(size: usize, seed: u64) -> Vec<u8> {
    let head = format!("{{\"seq\":{seed},\"kind\":\"bench\",\"pad\":\"");
    let tail = "\"}";
    let pad = size.saturating_sub(head.len() + tail.len());
    let mut s = head.into_bytes();
    s.extend(std::iter::repeat_n(b'x', pad));
    s.extend_from_slice(tail.as_bytes());
    s
}

fn options(fsync: FsyncPolicy, segment_size: u64) -> Options {
    Options {
        fsync,
        segment_size,
        ..Options::default()
    }
}

/// A small deterministic RNG (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn dir_size(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// (first position, path, length) of the segment files of a data directory, in log order.
fn segments(dir: &Path) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let first = name.strip_suffix(".seg")?.parse::<u64>().ok()?;
                    Some((first, e.metadata().ok()?.len()))
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort_unstable();
    out
}

// ---------------------------------------------------------------------------------------------
// Raw disk baselines

/// Appends `size` bytes (4 KiB unless said otherwise) with `write` + `fdatasync` for `dur`:
/// (ops/s, sorted latencies in µs).
fn raw_fsync(dir: &Path, dur: Duration, size: usize) -> BoxResult<(f64, Vec<u32>)> {
    let path = dir.join("raw-fsync.dat");
    let mut f = OpenOptions::new().create(true).append(true).open(&path)?;
    let buf = vec![0xA5u8; size];
    let mut lat = Vec::new();
    let start = Instant::now();
    while start.elapsed() < dur {
        let t = Instant::now();
        f.write_all(&buf)?;
        f.sync_data()?;
        lat.push(t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
    }
    let rate = lat.len() as f64 / start.elapsed().as_secs_f64();
    drop(f);
    fs::remove_file(&path)?;
    lat.sort_unstable();
    Ok((rate, lat))
}

/// Writes `total` bytes in 1 MiB `write`s with an `fdatasync` every 8 MiB and at the end: MB/s.
fn raw_seq(dir: &Path, total: u64) -> BoxResult<f64> {
    let path = dir.join("raw-seq.dat");
    let mut f = OpenOptions::new().create(true).append(true).open(&path)?;
    let buf: Vec<u8> = (0..MIB).map(|i| (i * 31 % 251) as u8).collect();
    let start = Instant::now();
    let mut written = 0;
    while written < total {
        f.write_all(&buf)?;
        written += MIB;
        if written % (8 * MIB) == 0 {
            f.sync_data()?;
        }
    }
    f.sync_data()?;
    let mbps = written as f64 / 1e6 / start.elapsed().as_secs_f64();
    drop(f);
    fs::remove_file(&path)?;
    Ok(mbps)
}

impl Bench {
    fn seq_total(&self) -> u64 {
        if self.quick {
            64 * MIB
        } else {
            512 * MIB
        }
    }

    fn baseline(&self) -> BoxResult<()> {
        let mut ops = Vec::new();
        let mut p50 = Vec::new();
        let mut p99 = Vec::new();
        let mut seq = Vec::new();
        for rep in 0..self.reps(true) {
            progress(format!("baseline rep {}", rep + 1));
            let dir = self.fresh_dir()?;
            let (rate, lat) = raw_fsync(dir.path(), self.duration(), 4096)?;
            ops.push(rate);
            p50.push(quantile(&lat, 0.50));
            p99.push(quantile(&lat, 0.99));
            seq.push(raw_seq(dir.path(), self.seq_total())?);
        }
        let mut t = Table::new(format!(
            "Raw disk: 4 KiB append `write`+`fdatasync` for {} s; sequential {} MiB in 1 MiB writes, fdatasync every 8 MiB and at the end",
            self.duration().as_secs(),
            self.seq_total() / MIB
        ));
        t.row("write+fdatasync 4 KiB", "ops/s", ops);
        t.row("write+fdatasync 4 KiB", "p50 µs", p50);
        t.row("write+fdatasync 4 KiB", "p99 µs", p99);
        t.row("sequential 1 MiB writes", "MB/s", seq);
        t.print();
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Appends

/// What one timed append run measured.
struct AppendRun {
    events: u64,
    appends: u64,
    secs: f64,
    /// Sorted per-append latencies, µs.
    lat: Vec<u32>,
    fsyncs: u64,
    commits: u64,
    bytes: u64,
    data_bytes: u64,
}

impl AppendRun {
    /// Several runs as one (rates over the summed time).
    fn merge(runs: Vec<AppendRun>) -> AppendRun {
        let mut out = AppendRun {
            events: 0,
            appends: 0,
            secs: 0.0,
            lat: Vec::new(),
            fsyncs: 0,
            commits: 0,
            bytes: 0,
            data_bytes: 0,
        };
        for r in runs {
            out.events += r.events;
            out.appends += r.appends;
            out.secs += r.secs;
            out.lat.extend(r.lat);
            out.fsyncs += r.fsyncs;
            out.commits += r.commits;
            out.bytes += r.bytes;
            out.data_bytes += r.data_bytes;
        }
        out.lat.sort_unstable();
        out
    }

    fn events_per_sec(&self) -> f64 {
        self.events as f64 / self.secs
    }
}

/// `threads` writers each appending `per_append` events of `PAYLOAD` bytes to their own stream
/// (`ExpectedRevision::Any`) for `dur`, durably.
fn timed_appends(
    store: &Store,
    threads: usize,
    per_append: usize,
    dur: Duration,
) -> BoxResult<AppendRun> {
    let before = store.stats();
    let barrier = Arc::new(Barrier::new(threads + 1));
    type Out = (u64, Vec<u32>, Instant, Instant);
    let results = std::thread::scope(|s| -> BoxResult<Vec<Out>> {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let barrier = barrier.clone();
                s.spawn(move || -> Result<Out, String> {
                    let stream = format!("writer-{t}");
                    let data = payload(PAYLOAD, t as u64);
                    let mut lat = Vec::with_capacity(1 << 16);
                    let mut n = 0u64;
                    barrier.wait();
                    let start = Instant::now();
                    let deadline = start + dur;
                    while Instant::now() < deadline {
                        let events: Vec<NewEvent> = (0..per_append)
                            .map(|_| NewEvent::json("BenchEvent", data.clone()))
                            .collect();
                        let t0 = Instant::now();
                        store
                            .append(&stream, ExpectedRevision::Any, events)
                            .map_err(|e| e.to_string())?;
                        lat.push(t0.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                        n += 1;
                    }
                    Ok((n, lat, start, Instant::now()))
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
    let after = store.stats();
    // The run lasted from the first writer's start to the last writer's last acknowledgement.
    let start = results.iter().map(|r| r.2).min().ok_or("no threads")?;
    let end = results.iter().map(|r| r.3).max().ok_or("no threads")?;
    let secs = end.duration_since(start).as_secs_f64();
    let appends: u64 = results.iter().map(|r| r.0).sum();
    let mut lat: Vec<u32> = results.into_iter().flat_map(|r| r.1).collect();
    lat.sort_unstable();
    Ok(AppendRun {
        events: appends * per_append as u64,
        appends,
        secs,
        lat,
        fsyncs: after.fsyncs - before.fsyncs,
        commits: after.commits - before.commits,
        bytes: after.bytes - before.bytes,
        data_bytes: appends * (per_append * PAYLOAD) as u64,
    })
}

impl Bench {
    fn append(&self) -> BoxResult<()> {
        let dur = self.duration();
        // The store's frame of one benchmark event: 64 B header, "writer-N", "BenchEvent", data.
        const FRAME: usize = 64 + 8 + 10 + PAYLOAD;
        // (label, writers, policy). The first is measured interleaved with the raw baselines;
        // the `Never` ones are diagnostics: the CPU ceiling of the append path without fsync.
        let configs: [(&str, usize, FsyncPolicy); 5] = [
            ("1 writer", 1, FsyncPolicy::Always),
            ("16 writers", 16, FsyncPolicy::Always),
            ("64 writers", 64, FsyncPolicy::Always),
            (
                "diagnostic: 1 writer, FsyncPolicy::Never",
                1,
                FsyncPolicy::Never,
            ),
            (
                "diagnostic: 64 writers, FsyncPolicy::Never",
                64,
                FsyncPolicy::Never,
            ),
        ];
        let (mut raw_ops, mut raw_p50, mut raw_p99) = (Vec::new(), Vec::new(), Vec::new());
        let (mut small_ops, mut small_p50) = (Vec::new(), Vec::new());
        // Per config: events/s, p50, p99, fsyncs/append, appends/commit.
        let mut m: Vec<[Vec<f64>; 5]> = configs.iter().map(|_| Default::default()).collect();
        let (mut ratio_1, mut ratio_1_small, mut ratio_64) = (Vec::new(), Vec::new(), Vec::new());
        for rep in 0..self.reps(true) {
            let dir = self.fresh_dir()?;
            let mut rates = Vec::new();
            let (mut raw, mut raw_small) = (0.0, 0.0);
            for (i, &(label, w, policy)) in configs.iter().enumerate() {
                progress(format!("append rep {}: {label}", rep + 1));
                let sub = dir.path().join(format!("store-{i}"));
                let store = Store::open(&sub, options(policy, 256 * MIB))?;
                let r = if i == 0 {
                    // Three slices of raw 4 KiB, raw frame-sized and store appends, interleaved
                    // so that load from other users of the machine hits all three alike.
                    let slice = dur / 3;
                    let (mut n4, mut l4, mut ns, mut ls) = (0.0, Vec::new(), 0.0, Vec::new());
                    let mut runs = Vec::new();
                    for _ in 0..3 {
                        let (r4, lat4) = raw_fsync(dir.path(), slice, 4096)?;
                        n4 += r4 * slice.as_secs_f64();
                        l4.extend(lat4);
                        let (rs, lats) = raw_fsync(dir.path(), slice, FRAME)?;
                        ns += rs * slice.as_secs_f64();
                        ls.extend(lats);
                        runs.push(timed_appends(&store, 1, 1, slice)?);
                    }
                    raw = n4 / (3.0 * slice.as_secs_f64());
                    raw_small = ns / (3.0 * slice.as_secs_f64());
                    l4.sort_unstable();
                    ls.sort_unstable();
                    raw_ops.push(raw);
                    raw_p50.push(quantile(&l4, 0.5));
                    raw_p99.push(quantile(&l4, 0.99));
                    small_ops.push(raw_small);
                    small_p50.push(quantile(&ls, 0.5));
                    AppendRun::merge(runs)
                } else {
                    timed_appends(&store, w, 1, dur)?
                };
                store.close()?;
                drop(store);
                fs::remove_dir_all(&sub)?;
                m[i][0].push(r.events_per_sec());
                m[i][1].push(quantile(&r.lat, 0.5));
                m[i][2].push(quantile(&r.lat, 0.99));
                m[i][3].push(r.fsyncs as f64 / r.appends as f64);
                m[i][4].push(r.appends as f64 / r.commits.max(1) as f64);
                rates.push(r.events_per_sec());
            }
            ratio_1.push(rates[0] / raw);
            ratio_1_small.push(rates[0] / raw_small);
            ratio_64.push(rates[2] / rates[0]);
        }
        let mut t = Table::new(format!(
            "Single-event appends ({PAYLOAD} B JSON, one stream per writer, ExpectedRevision::Any, {} s per run; durable = FsyncPolicy::Always unless marked)",
            dur.as_secs()
        ));
        t.row("raw 4 KiB write+fdatasync", "ops/s", raw_ops);
        t.row("raw 4 KiB write+fdatasync", "p50 µs", raw_p50);
        t.row("raw 4 KiB write+fdatasync", "p99 µs", raw_p99);
        t.row(format!("raw {FRAME} B write+fdatasync"), "ops/s", small_ops);
        t.row(
            format!("raw {FRAME} B write+fdatasync"),
            "p50 µs",
            small_p50,
        );
        for (i, (label, _, _)) in configs.iter().enumerate() {
            let [rate, p50, p99, fpa, apc] = m[i].clone();
            t.row(*label, "events/s", rate);
            t.row(*label, "p50 µs", p50);
            t.row(*label, "p99 µs", p99);
            t.row(*label, "fsyncs per append", fpa);
            t.row(*label, "appends per group commit", apc);
        }
        t.row("ratio", "1 writer / raw 4 KiB fsync rate", ratio_1.clone());
        t.row(
            "ratio",
            format!("1 writer / raw {FRAME} B fsync rate"),
            ratio_1_small.clone(),
        );
        t.row("ratio", "64 writers / 1 writer", ratio_64.clone());
        t.print();
        println!("\nTargets (median of per-repetition ratios):\n");
        let r1 = median(&ratio_1);
        target_line(
            "1 writer / raw 4 KiB write+fdatasync",
            r1,
            "≥ 0.85",
            r1 >= 0.85,
        );
        let r1s = median(&ratio_1_small);
        target_line(
            &format!("1 writer / raw {FRAME} B write+fdatasync (same bytes per op)"),
            r1s,
            "≥ 0.85",
            r1s >= 0.85,
        );
        let r64 = median(&ratio_64);
        target_line("64 writers / 1 writer", r64, "≥ 20", r64 >= 20.0);
        Ok(())
    }

    fn batch(&self) -> BoxResult<()> {
        // The `Never` configurations are diagnostics: the CPU ceiling of the batch path.
        let configs: [(&str, usize, FsyncPolicy); 4] = [
            ("1 writer", 1, FsyncPolicy::Always),
            ("4 writers", 4, FsyncPolicy::Always),
            (
                "diagnostic: 1 writer, FsyncPolicy::Never",
                1,
                FsyncPolicy::Never,
            ),
            (
                "diagnostic: 4 writers, FsyncPolicy::Never",
                4,
                FsyncPolicy::Never,
            ),
        ];
        // One append's frames: 100 × (64 B header + "writer-N" + "BenchEvent" + data).
        const BATCH_BYTES: usize = 100 * (64 + 8 + 10 + PAYLOAD);
        let dur = self.duration();
        let (mut raw, mut raw_batch) = (Vec::new(), Vec::new());
        // Per config: events/s, payload MB/s, written MB/s, p50 ms, p99 ms, written/raw,
        // payload/raw, appends/commit.
        let mut m: Vec<[Vec<f64>; 8]> = configs.iter().map(|_| Default::default()).collect();
        for rep in 0..self.reps(true) {
            let dir = self.fresh_dir()?;
            progress(format!("batch rep {}: raw sequential", rep + 1));
            let seq = raw_seq(dir.path(), self.seq_total())?;
            raw.push(seq);
            progress(format!(
                "batch rep {}: raw {BATCH_BYTES} B write+fdatasync",
                rep + 1
            ));
            let (ops, _) = raw_fsync(dir.path(), dur, BATCH_BYTES)?;
            raw_batch.push(ops * BATCH_BYTES as f64 / 1e6);
            for (i, &(label, w, policy)) in configs.iter().enumerate() {
                progress(format!("batch rep {}: {label}", rep + 1));
                let sub = dir.path().join(format!("store-{i}"));
                let store = Store::open(&sub, options(policy, 256 * MIB))?;
                let r = timed_appends(&store, w, 100, dur)?;
                store.close()?;
                drop(store);
                fs::remove_dir_all(&sub)?;
                let payload_mbps = r.data_bytes as f64 / 1e6 / r.secs;
                let written_mbps = r.bytes as f64 / 1e6 / r.secs;
                m[i][0].push(r.events_per_sec());
                m[i][1].push(payload_mbps);
                m[i][2].push(written_mbps);
                m[i][3].push(quantile(&r.lat, 0.5) / 1000.0);
                m[i][4].push(quantile(&r.lat, 0.99) / 1000.0);
                m[i][5].push(written_mbps / seq);
                m[i][6].push(payload_mbps / seq);
                m[i][7].push(r.appends as f64 / r.commits.max(1) as f64);
            }
        }
        let mut t = Table::new(format!(
            "Batched appends (100 × {PAYLOAD} B events per append, {} s per run; durable = FsyncPolicy::Always unless marked) against raw sequential writes",
            dur.as_secs()
        ));
        t.row(
            "raw sequential (1 MiB writes, fdatasync per 8 MiB)",
            "MB/s",
            raw,
        );
        t.row(
            format!("raw {BATCH_BYTES} B write+fdatasync (one append's bytes per sync)"),
            "MB/s",
            raw_batch,
        );
        for (i, (label, _, _)) in configs.iter().enumerate() {
            let [ev, pay, wr, p50, p99, rw, rp, apc] = m[i].clone();
            t.row(*label, "events/s", ev);
            t.row(*label, "payload MB/s", pay);
            t.row(*label, "written MB/s (stats.bytes)", wr);
            t.row(*label, "append p50 ms", p50);
            t.row(*label, "append p99 ms", p99);
            t.row(*label, "appends per group commit", apc);
            t.row(*label, "written / raw sequential", rw);
            t.row(*label, "payload / raw sequential", rp);
        }
        t.print();
        println!("\nTargets (median of per-repetition ratios of bytes written):\n");
        for (i, (label, _, policy)) in configs.iter().enumerate() {
            if *policy != FsyncPolicy::Always {
                continue;
            }
            let r = median(&m[i][5]);
            target_line(
                &format!("{label}: written MB/s / raw sequential MB/s"),
                r,
                "≥ 0.60",
                r >= 0.60,
            );
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Building large stores

/// Appends `appends` appends of `per_append` events, the `k`-th to stream `name(k)`, with
/// `FsyncPolicy::Never`, from `threads` client threads; then flushes. Returns events/s.
fn bulk_build(
    store: &Store,
    first_append: u64,
    appends: u64,
    per_append: usize,
    threads: u64,
    name: &(dyn Fn(u64) -> String + Sync),
) -> BoxResult<f64> {
    let start = Instant::now();
    std::thread::scope(|s| -> BoxResult<()> {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || -> Result<(), String> {
                    let data = payload(PAYLOAD, t);
                    let mut k = first_append + t;
                    while k < first_append + appends {
                        let events: Vec<NewEvent> = (0..per_append)
                            .map(|_| NewEvent::json("BenchEvent", data.clone()))
                            .collect();
                        store
                            .append(&name(k), ExpectedRevision::Any, events)
                            .map_err(|e| e.to_string())?;
                        k += threads;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| "builder thread panicked")??;
        }
        Ok(())
    })?;
    store.flush()?;
    Ok((appends * per_append as u64) as f64 / start.elapsed().as_secs_f64())
}

// ---------------------------------------------------------------------------------------------
// Replay

impl Bench {
    fn replay(&self) -> BoxResult<()> {
        let n_events: u64 = if self.quick { 100_000 } else { 1_000_000 };
        let configs = [
            ("256 MiB segments", 256 * MIB),
            ("16 MiB segments", 16 * MIB),
        ];
        let mut summary = Vec::new();
        let mut t = Table::new(format!(
            "Replay of {} events ({PAYLOAD} B JSON, 100 per append, 10,000 streams) from page cache",
            fmt_num(n_events as f64)
        ));
        for (label, seg) in configs {
            let dir = self.fresh_dir()?;
            let store = Store::open(dir.path(), options(FsyncPolicy::Never, seg))?;
            progress(format!("replay: building {n_events} events, {label}"));
            let build = bulk_build(&store, 0, n_events / 100, 100, 2, &|k| {
                format!("stream-{}", k % 10_000)
            })?;
            let info = store.info();
            let segs = segments(dir.path());
            let open_events = n_events - segs.last().map_or(0, |s| s.0);
            let cfg = format!(
                "{label}: {} sealed + open ({} events in open)",
                info.segment_count - 1,
                fmt_num(open_events as f64)
            );
            // Warm-up pass (the bytes were just written, so this mostly faults in the maps).
            store.replay(0, |v| {
                black_box(v.data.len());
            })?;
            let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
            for rep in 0..self.reps(true) {
                progress(format!("replay {label} rep {}", rep + 1));
                let t0 = Instant::now();
                let mut n = 0u64;
                let mut bytes = 0usize;
                let next = store.replay(0, |v| {
                    n += 1;
                    bytes += v.data.len() + v.stream.len();
                })?;
                black_box(bytes);
                a.push(n as f64 / t0.elapsed().as_secs_f64());
                assert_eq!((n, next), (n_events, n_events));

                let t0 = Instant::now();
                let mut n = 0u64;
                let mut from = ReadFrom::Start;
                let filter = AllFilter::default();
                loop {
                    let page = store.read_all(from, Direction::Forward, 10_000, &filter)?;
                    n += page.events.len() as u64;
                    black_box(&page.events);
                    if page.end {
                        break;
                    }
                    from = ReadFrom::At(page.next.ok_or("forward page without next")?);
                }
                b.push(n as f64 / t0.elapsed().as_secs_f64());
                assert_eq!(n, n_events);

                let t0 = Instant::now();
                let mut sub = store.subscribe_all(0, AllFilter::default());
                let mut n = 0u64;
                loop {
                    let batch = sub.poll(10_000)?;
                    if batch.is_empty() {
                        break;
                    }
                    n += batch.len() as u64;
                    black_box(&batch);
                }
                c.push(n as f64 / t0.elapsed().as_secs_f64());
                assert_eq!(n, n_events);
            }
            store.close()?;
            summary.push((label, median(&a)));
            t.row(&cfg, "build (FsyncPolicy::Never) events/s", vec![build]);
            t.row(&cfg, "(a) Store::replay events/s", a);
            t.row(&cfg, "(b) read_all pages of 10,000 events/s", b);
            t.row(&cfg, "(c) Subscription::poll(10,000) events/s", c);
        }
        t.print();
        println!("\nTargets:\n");
        for (label, r) in summary {
            target_line(
                &format!("Store::replay, {label}, events/s"),
                r,
                "≥ 5,000,000",
                r >= 5e6,
            );
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Stream reads

impl Bench {
    fn reads(&self) -> BoxResult<()> {
        let streams: u64 = if self.quick { 20_000 } else { 1_000_000 };
        let reads_per_rep: usize = if self.quick { 20_000 } else { 200_000 };
        // --quick uses small segments so that sealed segments are read too.
        let segment_size = if self.quick { 16 * MIB } else { 256 * MIB };
        let dir = self.fresh_dir()?;
        let store = Store::open(dir.path(), options(FsyncPolicy::Never, segment_size))?;
        progress(format!("reads: building {streams} streams × 10 events"));
        let name = |k: u64| format!("account-{k}");
        let t0 = Instant::now();
        // In chunks, so that a slow machine shows progress.
        let chunk = (streams / 10).max(1);
        let mut built = 0;
        let mut rates = Vec::new();
        while built < streams {
            let n = chunk.min(streams - built);
            rates.push(bulk_build(&store, built, n, 10, 4, &name)?);
            built += n;
            progress(format!(
                "  {built} streams after {:.0} s",
                t0.elapsed().as_secs_f64()
            ));
        }
        let build_secs = t0.elapsed().as_secs_f64();
        let segs = segments(dir.path());
        let open_first = segs.last().map_or(0, |s| s.0);
        println!(
            "\nbuilt {} streams × 10 events = {} events in {build_secs:.0} s ({} events/s, FsyncPolicy::Never, 4 client threads); {} sealed segments + open segment from position {} ({} MiB on disk)",
            fmt_num(streams as f64),
            fmt_num((streams * 10) as f64),
            fmt_num((streams * 10) as f64 / build_secs),
            segs.len() - 1,
            fmt_num(open_first as f64),
            dir_size(dir.path()) / MIB
        );
        let mut t = Table::new(format!(
            "Random whole-stream reads, read_stream(name, Start, Forward, 100) of 10-event streams among {} streams, 1 thread, {} reads per repetition",
            fmt_num(streams as f64),
            fmt_num(reads_per_rep as f64)
        ));
        // Per class (all, sealed, open): reads/s (all only), p50, p99, p99.9, count.
        let classes = [
            "all reads",
            "sealed segments (index files)",
            "open segment (memtable)",
        ];
        let mut m: Vec<[Vec<f64>; 4]> = classes.iter().map(|_| Default::default()).collect();
        let mut rate = Vec::new();
        // Warm-up: touch every index file and some frames.
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for _ in 0..10_000 {
            let k = rng.next() % streams;
            black_box(store.read_stream(&name(k), ReadFrom::Start, Direction::Forward, 100)?);
        }
        for rep in 0..self.reps(true) {
            progress(format!("reads rep {}", rep + 1));
            let mut rng = Rng(0xD1B5_4A32_D192_ED03 ^ (rep as u64 + 1));
            let mut lat: [Vec<u32>; 3] = Default::default();
            let t0 = Instant::now();
            for _ in 0..reads_per_rep {
                let k = rng.next() % streams;
                let stream = name(k);
                let t = Instant::now();
                let page = store.read_stream(&stream, ReadFrom::Start, Direction::Forward, 100)?;
                let us = t.elapsed().as_micros().min(u128::from(u32::MAX)) as u32;
                if page.events.len() != 10 {
                    return Err(format!("{stream}: {} events", page.events.len()).into());
                }
                let class = if page.events[0].position >= open_first {
                    2
                } else {
                    1
                };
                lat[0].push(us);
                lat[class].push(us);
            }
            rate.push(reads_per_rep as f64 / t0.elapsed().as_secs_f64());
            for (i, l) in lat.iter_mut().enumerate() {
                l.sort_unstable();
                m[i][0].push(quantile(l, 0.5));
                m[i][1].push(quantile(l, 0.99));
                m[i][2].push(quantile(l, 0.999));
                m[i][3].push(l.len() as f64);
            }
        }
        store.close()?;
        drop(store);
        t.row("all reads", "reads/s", rate);
        for (i, class) in classes.iter().enumerate() {
            let [p50, p99, p999, n] = m[i].clone();
            t.row(*class, "p50 µs", p50);
            t.row(*class, "p99 µs", p99);
            t.row(*class, "p99.9 µs", p999);
            t.row(*class, "reads", n);
        }
        t.print();
        println!("\nTargets:\n");
        let p99 = median(&m[0][1]);
        target_line(
            "p99 of one 10-event stream read, µs",
            p99,
            "< 1000",
            p99 < 1000.0,
        );
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Open

fn vm_kb(field: &str) -> u64 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// The hidden `open-child <dir>` subcommand: open, report, close.
fn open_child(dir: &Path) -> BoxResult<()> {
    let rss_before = vm_kb("VmRSS:");
    let t0 = Instant::now();
    let store = Store::open(dir, Options::default())?;
    let secs = t0.elapsed().as_secs_f64();
    let rss_after = vm_kb("VmRSS:");
    let anon_after = vm_kb("RssAnon:");
    let hwm = vm_kb("VmHWM:");
    let next = store.next_position();
    store.close()?;
    println!(
        "OPEN secs={secs} rss_before_kb={rss_before} rss_after_kb={rss_after} anon_after_kb={anon_after} hwm_kb={hwm} events={next}"
    );
    Ok(())
}

fn parse_child(out: &str, key: &str) -> Option<f64> {
    out.lines()
        .find(|l| l.starts_with("OPEN "))?
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

/// Appends one 100-event batch to `stream-{k % 10000}` (bulk building, no threads).
fn one_batch(store: &Store, k: u64, data: &[u8]) -> BoxResult<()> {
    let events: Vec<NewEvent> = (0..100)
        .map(|_| NewEvent::json("BenchEvent", data.to_vec()))
        .collect();
    store.append(
        &format!("stream-{}", k % 10_000),
        ExpectedRevision::Any,
        events,
    )?;
    Ok(())
}

impl Bench {
    /// Opens `dir` in `child_reps` fresh child processes: (ms, RSS before, RSS after, RssAnon
    /// after, peak RSS), MiB, per child.
    fn open_children(&self, dir: &Path, expect: u64) -> BoxResult<[Vec<f64>; 5]> {
        let child_reps = if self.quick { 3 } else { 7 };
        let exe = std::env::current_exe()?;
        let mut out: [Vec<f64>; 5] = Default::default();
        for _ in 0..child_reps {
            let o = Command::new(&exe).arg("open-child").arg(dir).output()?;
            let stdout = String::from_utf8_lossy(&o.stdout);
            if !o.status.success() {
                return Err(format!(
                    "open-child failed: {}{}",
                    stdout,
                    String::from_utf8_lossy(&o.stderr)
                )
                .into());
            }
            let get =
                |k| parse_child(&stdout, k).ok_or_else(|| format!("bad child output {stdout:?}"));
            if get("events")? as u64 != expect {
                return Err(
                    format!("child saw {} events, expected {expect}", get("events")?).into(),
                );
            }
            out[0].push(get("secs")? * 1000.0);
            out[1].push(get("rss_before_kb")? / 1024.0);
            out[2].push(get("rss_after_kb")? / 1024.0);
            out[3].push(get("anon_after_kb")? / 1024.0);
            out[4].push(get("hwm_kb")? / 1024.0);
        }
        Ok(out)
    }

    fn open(&self) -> BoxResult<()> {
        let sizes: Vec<u64> = if self.quick {
            vec![300_000, 1_000_000]
        } else {
            vec![1_000_000, 3_000_000, 10_000_000]
        };
        // --quick uses small segments so that several are sealed.
        let segment_size = if self.quick { 32 * MIB } else { 256 * MIB };
        let fixed_open: u64 = if self.quick { 20_000 } else { 100_000 };
        let dir = self.fresh_dir()?;
        let data = payload(PAYLOAD, 7);
        let mut t = Table::new(format!(
            "Store::open of stores of growing history ({PAYLOAD} B events, 100 per append, 10,000 streams, {} MiB segments), each open in a fresh child process (Options::default()), page cache warm",
            segment_size / MIB
        ));
        let mut k = 0u64; // appends so far (= events / 100)
        let mut opens = Vec::new();
        for &size in &sizes {
            let store = Store::open(dir.path(), options(FsyncPolicy::Never, segment_size))?;
            progress(format!("open: growing the store past {size} events"));
            let t0 = Instant::now();
            let start_k = k;
            if size / 100 > k {
                bulk_build(&store, k, size / 100 - k, 100, 2, &|k| {
                    format!("stream-{}", k % 10_000)
                })?;
                k = size / 100;
            }
            // Up to the next seal, then a fixed number of events into the new open segment, so
            // that every store has the same open segment and differs only in its history.
            let sealed = store.info().segment_count;
            while store.info().segment_count == sealed {
                one_batch(&store, k, &data)?;
                k += 1;
            }
            let last_first = store.next_position() - 100;
            let target = last_first + fixed_open;
            while store.next_position() < target {
                one_batch(&store, k, &data)?;
                k += 1;
            }
            store.flush()?;
            let rate = ((k - start_k) * 100) as f64 / t0.elapsed().as_secs_f64();
            store.close()?;
            drop(store);
            for full in [false, true] {
                if full {
                    // Fill the open segment to within 1 MiB of the segment size: the worst case.
                    let store = Store::open(dir.path(), options(FsyncPolicy::Never, segment_size))?;
                    let sealed = store.info().segment_count;
                    loop {
                        let segs = segments(dir.path());
                        let open_len = segs.last().map_or(0, |s| s.1);
                        if open_len + MIB >= segment_size {
                            break;
                        }
                        one_batch(&store, k, &data)?;
                        k += 1;
                    }
                    if store.info().segment_count != sealed {
                        return Err("segment sealed while filling the open segment".into());
                    }
                    store.close()?;
                }
                let events = k * 100;
                let segs = segments(dir.path());
                let open_seg = segs.last().map_or(0, |s| s.1);
                let open_events = events - segs.last().map_or(0, |s| s.0);
                let cfg = format!(
                    "{} events: {} sealed, open segment {} MiB / {} events, {} MiB on disk",
                    fmt_num(events as f64),
                    segs.len() - 1,
                    open_seg / MIB,
                    fmt_num(open_events as f64),
                    dir_size(dir.path()) / MIB
                );
                progress(format!("open: measuring {cfg}"));
                let [ms, rss0, rss, anon, hwm] = self.open_children(dir.path(), events)?;
                opens.push((events, open_events, median(&ms), median(&rss)));
                if !full {
                    t.row(&cfg, "build events/s (Never)", vec![rate]);
                }
                t.row(&cfg, "Store::open ms", ms);
                t.row(&cfg, "RSS before open MiB", rss0);
                t.row(&cfg, "RSS after open MiB", rss);
                t.row(&cfg, "  of which anonymous (heap) MiB", anon);
                t.row(&cfg, "peak RSS during open (VmHWM) MiB", hwm);
            }
        }
        t.print();
        println!("\nTargets:\n");
        for (events, open_events, ms, rss) in opens {
            target_line(
                &format!(
                    "open of {} events ({} in the open segment), ms (RSS after open {rss:.0} MiB)",
                    fmt_num(events as f64),
                    fmt_num(open_events as f64)
                ),
                ms,
                "< 1000",
                ms < 1000.0,
            );
        }
        Ok(())
    }
}
