//! `strata-bench`: an HTTP load generator for a running Strata server, in its own crate and
//! binary (not part of the shipped `strata` binary). Run it as
//! `cargo run --release -p strata-bench -- [OPTIONS]`; `docs/performance.md` has the methods and
//! the results.
//!
//! Scenarios (`--scenario`, default `all`, or a comma-separated list; every one is repeated `--runs` times, the runs
//! interleaved so that drifting load from other users of the machine hits every scenario alike):
//!
//! - `append`: N clients (`--clients`, default 1, 16, 64), each on its own keep-alive
//!   connection, appending one event (256 B JSON `data`, `Expected-Revision` absent = `any`) per
//!   request to its own stream, back to back, for `--duration`. Durable as the server's fsync
//!   policy says (default `always`: fsynced before the `201`). Same workload as the embedded
//!   `cargo bench --bench store -- append`, so the two rates can be compared.
//! - `read`: `--read-clients` (16) clients, each on its own keep-alive connection, reading
//!   whole streams of `--read-stream-events` (10) events as JSON pages, each read a stream picked
//!   at random among `--read-streams` (100,000), back to back, for `--duration`. The streams are
//!   filled first (one batched append each, once per server: later runs reuse them).
//! - `conflict`: `--racers` (16) clients appending single events to ONE fresh stream with an
//!   exact `Expected-Revision`, each retrying with the `actual` revision of the `409` it gets;
//!   successes/s next to the raw fsync rate of the data directory's file system measured just
//!   before (`--fsync-dir`, default the `data_dir` of `GET /info`); afterwards the stream is
//!   read back and checked (dense, one event per success, no revision won twice).
//! - `batch`: the same with `--batch-size` (100) events per request, `--batch-clients` (1, 4).
//! - `replay`: makes sure the log holds at least `--events` (1M) events, appending batches if
//!   it does not, then replays the last `--events` events of `/all` as NDJSON
//!   (`Accept: application/x-ndjson`), counting lines as they stream in.
//! - `sse`: a subscriber on a fresh stream (`Accept: text/event-stream`) and a publisher that
//!   appends `--rate` (1,000) events/s for `--duration`, open loop (on a fixed schedule, over a
//!   few connections, so a slow acknowledgement does not delay the next send), each event
//!   carrying its send time. The latency is from just before the request is written to the
//!   arrival of the event on the subscription; it includes the durable commit.
//! - `group`: fills a fresh category with `--group-events` (100,000) events (batches of 1,000),
//!   then for each consumer count of `--group-consumers` (1, 4, 16) creates a fresh consumer
//!   group on it (`from: start`, ordering `none`) and lets that many consumers, each on its own
//!   keep-alive connection, poll (`max` = `--group-max`, 100) and ack each batch with one
//!   request, until every event is acked: events/s delivered and acked, poll latency, polls per
//!   event, redeliveries.
//! - `group-latency`: `--latency-consumers` (4) consumers long-poll a fresh group (`wait_ms`
//!   5,000) while a publisher appends `--rate` events/s as in `sse`; the latency is from just
//!   before the append request is written to the arrival of the poll answer that contains the
//!   event (the durable commit and the consumer's round trip included); and, per event, the
//!   arrival minus the moment its append was acknowledged: what group delivery adds.
//! - `projection`: a counting JavaScript projection over `fromAll()` catching up with a log of
//!   at least `--events` events (events folded per second), then its lag (in events and in
//!   time) while `--rate` events/s are appended for `--duration` (`projection` module).
//!
//! - `scavenge` and `bookkeeping` (only when named; the server needs small segments): append
//!   and read p99 while a throttled scavenge runs vs idle, and the disk used by the server's
//!   own `$`-streams under a projection and a group over time (`scavenge` module).
//!
//! Every scenario also reports the CPU time the server (given `--server-pid`) and the generator
//! spent per operation, from `/proc` (`probe`).
//!
//! For each it prints events/s and latency percentiles (nearest rank) per run, then Markdown
//! tables with the median, min and max over the runs, on stdout; progress goes to stderr.
//!
//! The generator only ever connects to the address of `--server` (resolved once).
//!
//! ## Modules
//!
//! - `http`: the minimal HTTP/1.1 client (its module docs say why it is hand-written).
//! - `probe`: the `/proc` probes (CPU time of the server and of the generator, load average).
//! - `report`: latencies, progress bars, the Markdown tables.
//! - One module per workload: `append` (`append` and `batch`), `read`, `conflict`, `replay`, `sse` (and the
//!   fixed-rate publisher), `group` (`group` and `group-latency`), `projection`, `scavenge`
//!   (`scavenge` and `bookkeeping`).

mod append;
mod args;
mod conflict;
mod error;
mod group;
mod http;
mod probe;
mod projection;
mod read;
mod replay;
mod report;
mod scavenge;
mod sse;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use crate::append::timed_appends;
pub use crate::args::{BenchArgs, ClientArgs, Scenario};
pub use crate::error::{Error, Result};
use crate::group::{fill_category, group_drain, group_latency};
use crate::http::Target;
use crate::probe::loadavg;
use crate::replay::replay;
use crate::report::{fmt_num, Report};
use crate::sse::sse;

/// Runs the selected scenarios and prints the results.
pub fn run(args: BenchArgs) -> Result<ExitCode> {
    if args.duration <= 0.0 || !args.duration.is_finite() {
        return Err(Error::Usage("--duration must be positive".into()));
    }
    if args.runs == 0 || args.client_threads == 0 || args.rate == 0 || args.batch_size == 0 {
        return Err(Error::Usage(
            "--runs, --client-threads, --rate and --batch-size must be at least 1".into(),
        ));
    }
    if args.read_clients == 0 || args.racers == 0 || args.read_streams == 0 {
        return Err(Error::Usage(
            "--read-clients, --racers and --read-streams must be at least 1".into(),
        ));
    }
    if args.clients.contains(&0)
        || args.batch_clients.contains(&0)
        || args.group_consumers.contains(&0)
        || args.latency_consumers == 0
    {
        return Err(Error::Usage(
            "client and consumer counts must be at least 1".into(),
        ));
    }
    if args.group_max == 0 || args.group_events == 0 {
        return Err(Error::Usage(
            "--group-max and --group-events must be at least 1".into(),
        ));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads)
        .enable_all()
        .thread_name("strata-bench")
        .build()?;
    runtime.block_on(async move {
        let target = Arc::new(
            Target::resolve(
                &args.client.server,
                args.client.token.as_deref(),
                args.client.ca_cert.as_deref(),
            )
            .await?,
        );
        let report = run_all(&target, &args, true).await?;
        report.print();
        Ok(ExitCode::SUCCESS)
    })
}

/// Runs every selected scenario `args.runs` times; prints one line per measurement to stderr
/// when `verbose`.
async fn run_all(target: &Arc<Target>, args: &BenchArgs, verbose: bool) -> Result<Report> {
    let info = target.get_json("/info").await?;
    let fsync = info["fsync"].as_str().unwrap_or("?").to_owned();
    let mut report = Report::new(format!(
        "server {} (fsync {fsync}), {} client thread(s), {} run(s), load average before: {}",
        target.authority,
        args.client_threads,
        args.runs,
        loadavg()
    ));
    // Where the conflict scenario measures the raw fsync rate: the server's data directory
    // when it is on this machine.
    let fsync_dir = args.fsync_dir.clone().or_else(|| {
        info["data_dir"]
            .as_str()
            .map(std::path::PathBuf::from)
            .filter(|d| d.is_dir())
    });
    let selected =
        |s: Scenario| args.scenario.contains(&s) || args.scenario.contains(&Scenario::All);
    let named = |s: Scenario| args.scenario.contains(&s);
    let duration = Duration::from_secs_f64(args.duration);
    // Stream names unique to this invocation: earlier runs against the same server do not
    // interfere (the SSE subscriber, in particular, starts on a fresh stream).
    let prefix = format!(
        "bench{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0)
    );
    let say = |line: String| {
        if verbose {
            eprintln!("{line}");
        }
    };
    for run in 0..args.runs {
        let tag = format!("{prefix}-r{run}");
        if selected(Scenario::Append) {
            for &clients in &args.clients {
                let config = format!("{clients} client{}", if clients == 1 { "" } else { "s" });
                let r = timed_appends(target, &tag, clients, 1, args, duration).await?;
                say(format!(
                    "run {}: append, {config}: {}",
                    run + 1,
                    r.summary()
                ));
                r.record(&mut report, "append", &config);
            }
        }
        if selected(Scenario::Read) {
            read::ensure_read_set(target, args).await?;
            let config = format!(
                "{} clients, {}-event streams among {}",
                args.read_clients,
                args.read_stream_events,
                fmt_num(args.read_streams as f64)
            );
            let r = read::timed_reads(target, args.read_clients, args, duration).await?;
            say(format!("run {}: read, {config}: {}", run + 1, r.summary()));
            r.record(&mut report, &config);
        }
        if selected(Scenario::Conflict) {
            let config = format!("{} racers, one stream", args.racers);
            let r =
                conflict::conflict(target, &tag, args.racers, args, duration, fsync_dir.clone())
                    .await?;
            say(format!(
                "run {}: conflict, {config}: {}",
                run + 1,
                r.summary()
            ));
            r.record(&mut report, &config);
        }
        if selected(Scenario::Batch) {
            for &clients in &args.batch_clients {
                let config = format!(
                    "{clients} client{}, {} events/request",
                    if clients == 1 { "" } else { "s" },
                    args.batch_size
                );
                let r =
                    timed_appends(target, &tag, clients, args.batch_size, args, duration).await?;
                say(format!("run {}: batch, {config}: {}", run + 1, r.summary()));
                r.record(&mut report, "batch", &config);
            }
        }
        if selected(Scenario::Replay) {
            let r = replay(target, &tag, args).await?;
            say(format!("run {}: replay: {}", run + 1, r.summary()));
            r.record(&mut report);
        }
        if selected(Scenario::Sse) {
            let r = sse(target, &tag, args.rate, duration, args.server_pid).await?;
            say(format!("run {}: sse: {}", run + 1, r.summary()));
            r.record(
                &mut report,
                "sse",
                &format!("{} events/s", fmt_num(f64::from(args.rate))),
            );
        }
        // Categories are the part of a stream name before its first '-': one per run, without
        // a '-' of its own.
        let category = format!("{prefix}r{run}");
        if selected(Scenario::Group) {
            let cat = format!("{category}g");
            fill_category(target, &cat, args.group_events, args.payload).await?;
            for &consumers in &args.group_consumers {
                let config = format!(
                    "{consumers} consumer{}, max {}",
                    if consumers == 1 { "" } else { "s" },
                    args.group_max
                );
                let r = group_drain(target, &cat, consumers, args).await?;
                say(format!("run {}: group, {config}: {}", run + 1, r.summary()));
                r.record(&mut report, &config);
            }
        }
        if selected(Scenario::GroupLatency) {
            let cat = format!("{category}l");
            let r = group_latency(target, &cat, args, duration).await?;
            say(format!("run {}: group-latency: {}", run + 1, r.summary()));
            r.record(
                &mut report,
                "group-latency",
                &format!(
                    "{} events/s, {} long-polling consumers",
                    fmt_num(f64::from(args.rate)),
                    args.latency_consumers
                ),
            );
        }
        if selected(Scenario::Projection) {
            let r = projection::projection(target, &tag, args, duration).await?;
            say(format!("run {}: projection: {}", run + 1, r.summary()));
            r.record(&mut report, args.events, args.rate);
        }
        if named(Scenario::Scavenge) {
            let line = scavenge::scavenge(target, &tag, args, duration, &mut report).await?;
            say(format!("run {}: scavenge: {line}", run + 1));
        }
        if named(Scenario::Bookkeeping) {
            let line =
                scavenge::bookkeeping(target, &format!("{category}k"), args, duration, &mut report)
                    .await?;
            say(format!("run {}: bookkeeping: {line}", run + 1));
        }
    }
    report.footer = format!("load average after: {}", loadavg());
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every scenario, briefly, against a real server on 127.0.0.1.
    #[test]
    fn scenarios_against_a_server() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut config = strata_server::Config::new(dir.path());
            config.listen = "127.0.0.1:0".into();
            // Small segments: the scavenge scenarios need sealed ones.
            config.store.segment_size = 256 << 10;
            let server = strata_server::Server::bind(config).await.unwrap();
            let url = format!("http://{}", server.local_addr());
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let serving = tokio::spawn(server.run(async {
                let _ = stopped.await;
            }));
            let args = BenchArgs {
                client: ClientArgs {
                    server: url.clone(),
                    token: None,
                    ca_cert: None,
                },
                scenario: vec![Scenario::All, Scenario::Scavenge, Scenario::Bookkeeping],
                clients: vec![1, 4],
                batch_clients: vec![2],
                batch_size: 10,
                duration: 0.3,
                events: 3000,
                rate: 200,
                payload: 100,
                runs: 1,
                client_threads: 1,
                server_pid: Some(std::process::id()),
                group_events: 2500,
                group_consumers: vec![1, 3],
                group_max: 100,
                latency_consumers: 2,
                read_clients: 3,
                read_streams: 50,
                read_stream_events: 10,
                racers: 4,
                fsync_dir: None,
                scavenge_garbage_mb: 1,
                scavenge_mb_per_s: None,
                bk_partitions: 30,
                bk_state_pad: 10,
                bk_sample: 0.2,
                scavenge_every: 0.3,
            };
            let target = Arc::new(Target::resolve(&url, None, None).await.unwrap());
            let report = run_all(&target, &args, false).await.unwrap();
            let value = |s: &str, m: &str| {
                report
                    .rows
                    .iter()
                    .find(|r| r.0 == s && r.2 == m)
                    .map(|r| r.3[0])
                    .unwrap_or_else(|| panic!("no {s} {m}"))
            };
            assert!(value("append", "events/s") > 0.0);
            assert!(value("batch", "events/s") > 0.0);
            assert!(value("append", "appends per group commit") >= 1.0);
            assert!(value("append", "server CPU µs per request") > 0.0);
            assert!(value("append", "generator CPU µs per request") > 0.0);
            assert!(value("read", "events/s") > 0.0);
            assert!(value("read", "server CPU µs per request") > 0.0);
            assert!(value("conflict", "successes/s") > 0.0);
            assert_eq!(value("conflict", "anomalies"), 0.0);
            assert!(value("conflict", "successes / raw fsync") > 0.0);
            assert!(value("sse", "server CPU µs per event") > 0.0);
            assert!(value("replay", "events/s") > 0.0);
            let replayed = report.rows.iter().find(|r| r.0 == "replay").unwrap();
            assert_eq!(replayed.1, "/all, last 3,000 events");
            assert_eq!(value("sse", "delivered / sent"), 1.0);
            assert!(value("sse", "delivery p99 µs") > 0.0);
            assert!(value("group", "events/s (delivered + acked)") > 0.0);
            let drained = report
                .rows
                .iter()
                .filter(|r| r.0 == "group" && r.2 == "redelivered");
            assert_eq!(drained.count(), 2, "one row per consumer count");
            assert_eq!(value("group-latency", "delivered / sent"), 1.0);
            assert!(value("group-latency", "delivery p99 µs") > 0.0);
            assert!(value("group-latency", "delivery after append ack p99 µs") >= 0.0);
            assert!(value("projection", "events/s") > 0.0);
            assert!(value("projection", "lag max events") >= 0.0);
            assert!(value("scavenge", "append p99 ratio") > 0.0);
            assert!(value("scavenge", "scavenge MiB reclaimed") > 0.0);
            assert!(value("bookkeeping", "events appended") > 0.0);
            assert!(value("bookkeeping", "disk growth MiB at the end") > 0.0);
            stop.send(()).unwrap();
            serving.await.unwrap().unwrap();
        });
    }
}
