//! `strata bench`: an HTTP load generator for a running server.
//!
//! Scenarios (`--scenario`, default `all`, or a comma-separated list; every one is repeated `--runs` times, the runs
//! interleaved so that drifting load from other users of the machine hits every scenario alike):
//!
//! - `append`: N clients (`--clients`, default 1, 16, 64), each on its own keep-alive
//!   connection, appending one event (256 B JSON `data`, `Expected-Revision` absent = `any`) per
//!   request to its own stream, back to back, for `--duration`. Durable as the server's fsync
//!   policy says (default `always`: fsynced before the `201`). Same workload as the embedded
//!   `cargo bench --bench store -- append`, so the two rates can be compared.
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
//!   time) while `--rate` events/s are appended for `--duration` ([`projection`] module).
//!
//! For each it prints events/s and latency percentiles (nearest rank) per run, then Markdown
//! tables with the median, min and max over the runs, on stdout; progress goes to stderr.
//!
//! The generator only ever connects to the address of `--server` (resolved once).
//!
//! ## The client
//!
//! A minimal HTTP/1.1 client over tokio's `TcpStream` ([`Conn`]), not hyper or ureq. The load
//! generator shares the machine's two cores with the server it measures, so every cycle it
//! spends is taken from the server: requests are pre-rendered byte strings written with one
//! `write`, responses are parsed in place in one reusable buffer (status, `Content-Length`,
//! `Transfer-Encoding: chunked` — all this server ever sends), and each client task owns one
//! keep-alive connection for the whole run, so there is no pool, no header map and no
//! allocation per request. hyper's client (via `hyper-util`) would bring those costs plus a
//! second HTTP stack to the binary, and ureq (already used by the client commands) is
//! blocking: 64 clients would be 64 threads, and their context switches would be measured
//! instead of the server. The price is ~200 lines that understand only what they need to.

use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Barrier;

use crate::cli::ClientArgs;
use crate::error::{Error, Result};

mod projection;

/// `strata bench` options.
#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Which scenarios to run (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "all")]
    pub scenario: Vec<Scenario>,
    /// Client counts of the single-event `append` scenario (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    pub clients: Vec<usize>,
    /// Client counts of the `batch` scenario (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,4")]
    pub batch_clients: Vec<usize>,
    /// Events per request in the `batch` scenario.
    #[arg(long, default_value_t = 100)]
    pub batch_size: usize,
    /// Seconds each `append` / `batch` configuration and the `sse` scenario run.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Events replayed by the `replay` scenario (the log is filled up to this many first).
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,
    /// Events per second the `sse` publisher appends.
    #[arg(long, default_value_t = 1000)]
    pub rate: u32,
    /// Bytes of JSON `data` per event in `append`, `batch` and the replay's filling.
    #[arg(long, default_value_t = 256)]
    pub payload: usize,
    /// Repetitions of every selected scenario; the tables give median, min and max.
    #[arg(long, default_value_t = 1)]
    pub runs: usize,
    /// Worker threads of the generator's own tokio runtime. Few: it shares the machine with
    /// the server it measures.
    #[arg(long, default_value_t = 1)]
    pub client_threads: usize,
    /// Events pre-loaded for the `group` scenario (every consumer count drains all of them).
    #[arg(long, default_value_t = 100_000)]
    pub group_events: u64,
    /// Consumer counts of the `group` scenario (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
    pub group_consumers: Vec<usize>,
    /// Most events per poll in the `group` scenarios (the server allows up to 1,000).
    #[arg(long, default_value_t = 100)]
    pub group_max: usize,
    /// Long-polling consumers of the `group-latency` scenario.
    #[arg(long, default_value_t = 4)]
    pub latency_consumers: usize,
    /// PID of the server when it runs on this machine: the report then adds the CPU time the
    /// server and the generator spent per request (Linux, from `/proc/*/task/*/schedstat`).
    #[arg(long)]
    pub server_pid: Option<u32>,
}

/// A `--scenario` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// Durable single-event appends by N concurrent clients.
    Append,
    /// Durable batched appends.
    Batch,
    /// NDJSON replay of `/all`.
    Replay,
    /// Append → SSE delivery latency at a fixed rate.
    Sse,
    /// Consumer group: pre-loaded events drained by 1, 4, 16 consumers (poll + batch ack).
    Group,
    /// Append → consumer-group delivery latency at a fixed rate, consumers long-polling.
    GroupLatency,
    /// A JavaScript projection: catch-up rate over the log, lag under a live load.
    Projection,
    /// All of the above.
    All,
}

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
        let target =
            Arc::new(Target::resolve(&args.client.server, args.client.token.as_deref()).await?);
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
    let selected =
        |s: Scenario| args.scenario.contains(&s) || args.scenario.contains(&Scenario::All);
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
            let r = sse(target, &tag, args.rate, duration).await?;
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
    }
    report.footer = format!("load average after: {}", loadavg());
    Ok(report)
}

// ---------------------------------------------------------------------------------------------
// The HTTP client

/// Where the load goes: the one address `--server` resolved to.
struct Target {
    addr: SocketAddr,
    /// `host:port` as given, for the `Host` header.
    authority: String,
    /// The URL's path prefix (no trailing `/`), usually empty.
    base: String,
    /// The `Authorization` header line (with CRLF), or empty.
    auth_line: String,
}

impl Target {
    /// Parses `http://host[:port][/prefix]` and resolves it once.
    async fn resolve(url: &str, token: Option<&str>) -> Result<Target> {
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            Error::Usage(format!(
                "--server must be an http:// URL (the generator speaks plain HTTP/1.1): {url:?}"
            ))
        })?;
        let (authority, base) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(Error::Usage(format!("bad --server URL {url:?}")));
        }
        let with_port = if authority.rsplit_once(':').is_some_and(|(h, p)| {
            !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(':')
        }) {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        let addr = tokio::net::lookup_host(with_port.as_str())
            .await?
            .next()
            .ok_or_else(|| Error::Usage(format!("{authority} resolves to no address")))?;
        Ok(Target {
            addr,
            authority: authority.to_owned(),
            base: base.to_owned(),
            auth_line: token
                .map(|t| format!("Authorization: Bearer {t}\r\n"))
                .unwrap_or_default(),
        })
    }

    /// A complete request: request line, `Host`, auth, `extra` header lines (each ending in
    /// CRLF), and for a body `Content-Type: application/json` and `Content-Length`.
    fn request(&self, method: &str, path: &str, extra: &str, body: Option<&[u8]>) -> Vec<u8> {
        let mut head = format!(
            "{method} {}{path} HTTP/1.1\r\nHost: {}\r\n{}{extra}",
            self.base, self.authority, self.auth_line
        );
        if let Some(body) = body {
            let _ = write!(
                head,
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            );
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        out.extend_from_slice(body.unwrap_or_default());
        out
    }

    async fn connect(&self) -> Result<Conn<TcpStream>> {
        let tcp = TcpStream::connect(self.addr).await?;
        // Requests are written whole; do not let Nagle hold back the next one.
        tcp.set_nodelay(true)?;
        Ok(Conn::new(tcp))
    }

    /// `GET path` as JSON (on a connection of its own).
    async fn get_json(&self, path: &str) -> Result<serde_json::Value> {
        let mut conn = self.connect().await?;
        let (status, body) = conn
            .exchange(&self.request("GET", path, "Accept: application/json\r\n", None))
            .await?;
        if !(200..300).contains(&status) {
            return Err(http_error(status, &body));
        }
        serde_json::from_slice(&body)
            .map_err(|e| Error::Io(io::Error::other(format!("GET {path}: not JSON: {e}"))))
    }

    /// The counters of `GET /metrics` the reports use (`None` if unavailable).
    async fn counters(&self) -> Option<Counters> {
        let mut conn = self.connect().await.ok()?;
        let (status, body) = conn
            .exchange(&self.request("GET", "/metrics", "", None))
            .await
            .ok()?;
        if status != 200 {
            return None;
        }
        let text = String::from_utf8(body).ok()?;
        let value = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        };
        Some(Counters {
            appends: value("strata_appends_total")?,
            commits: value("strata_commits_total")?,
            fsyncs: value("strata_fsyncs_total")?,
            fsync_seconds: value("strata_fsync_duration_seconds_sum")?,
        })
    }
}

/// Store counters from `/metrics`, to relate a run to group commit and fsync latency.
#[derive(Clone, Copy, Debug)]
struct Counters {
    appends: f64,
    commits: f64,
    fsyncs: f64,
    fsync_seconds: f64,
}

impl Counters {
    /// (appends per group commit, fsyncs per append, mean fsync ms) between two snapshots.
    fn between(before: Option<Counters>, after: Option<Counters>) -> Option<(f64, f64, f64)> {
        let (b, a) = (before?, after?);
        let appends = a.appends - b.appends;
        let commits = a.commits - b.commits;
        let fsyncs = a.fsyncs - b.fsyncs;
        if appends <= 0.0 || commits <= 0.0 {
            return None;
        }
        let mean_fsync_ms = if fsyncs > 0.0 {
            (a.fsync_seconds - b.fsync_seconds) / fsyncs * 1e3
        } else {
            0.0
        };
        Some((appends / commits, fsyncs / appends, mean_fsync_ms))
    }
}

/// A generator task that panicked or was cancelled.
fn task_failed(what: &str, e: tokio::task::JoinError) -> Error {
    Error::Io(io::Error::other(format!("{what} failed: {e}")))
}

fn http_error(status: u16, body: &[u8]) -> Error {
    Error::Http {
        status,
        message: String::from_utf8_lossy(body).trim().to_owned(),
    }
}

/// How a response body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BodyKind {
    Length(usize),
    Chunked,
}

/// A parsed response head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Head {
    status: u16,
    body: BodyKind,
}

/// One keep-alive HTTP/1.1 connection with its read buffer (module docs: why hand-written).
struct Conn<S> {
    io: S,
    buf: Vec<u8>,
    /// `buf[start..end]` is received and not yet consumed.
    start: usize,
    end: usize,
}

fn bad_response(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("bad HTTP response: {what}"),
    )
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    fn new(io: S) -> Self {
        Conn {
            io,
            buf: vec![0; 64 * 1024],
            start: 0,
            end: 0,
        }
    }

    async fn send(&mut self, request: &[u8]) -> io::Result<()> {
        self.io.write_all(request).await
    }

    /// Reads more bytes into the buffer (compacting or growing it as needed).
    async fn fill(&mut self) -> io::Result<()> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                let len = self.buf.len();
                self.buf.resize(len * 2, 0);
            }
        }
        let n = self.io.read(&mut self.buf[self.end..]).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection",
            ));
        }
        self.end += n;
        Ok(())
    }

    /// Consumes the next line (up to CRLF) and returns it without the CRLF, as a range of
    /// `buf` valid until the next read.
    async fn line(&mut self) -> io::Result<std::ops::Range<usize>> {
        let mut scanned = 0;
        loop {
            let avail = &self.buf[self.start + scanned..self.end];
            if let Some(i) = avail.windows(2).position(|w| w == b"\r\n") {
                let range = self.start..self.start + scanned + i;
                self.start = range.end + 2;
                return Ok(range);
            }
            scanned = (self.end - self.start).saturating_sub(1);
            if scanned > 64 * 1024 {
                return Err(bad_response("a line over 64 KiB"));
            }
            self.fill().await?;
        }
    }

    /// Reads a response head.
    async fn head(&mut self) -> io::Result<Head> {
        let status_line = self.line().await?;
        let status = parse_status(&self.buf[status_line])?;
        let mut length = None;
        let mut chunked = false;
        loop {
            let range = self.line().await?;
            let line = &self.buf[range];
            if line.is_empty() {
                break;
            }
            let colon = line
                .iter()
                .position(|&b| b == b':')
                .ok_or_else(|| bad_response("a header line without ':'"))?;
            let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
            if name.eq_ignore_ascii_case(b"content-length") {
                length = Some(parse_decimal(value).ok_or_else(|| bad_response("Content-Length"))?);
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                chunked = value
                    .split(|&b| b == b',')
                    .any(|v| v.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            }
        }
        let body = match (chunked, length) {
            (true, _) => BodyKind::Chunked,
            (false, Some(n)) => BodyKind::Length(n),
            // 1xx, 204 and 304 have no body; the server sends a length with everything else.
            (false, None) if status < 200 || status == 204 || status == 304 => BodyKind::Length(0),
            (false, None) => return Err(bad_response("a body delimited by closing")),
        };
        Ok(Head { status, body })
    }

    /// Reads `n` body bytes, handing them to `sink` as they arrive. `false` from the sink
    /// stops reading (the connection is then unusable).
    async fn take(
        &mut self,
        mut n: usize,
        sink: &mut impl FnMut(&[u8]) -> bool,
    ) -> io::Result<bool> {
        while n > 0 {
            if self.start == self.end {
                self.fill().await?;
            }
            let take = n.min(self.end - self.start);
            let more = sink(&self.buf[self.start..self.start + take]);
            self.start += take;
            n -= take;
            if !more {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Reads the body of `head`, handing the data to `sink` as it arrives; `Ok(false)` if the
    /// sink stopped it early.
    async fn body(&mut self, head: Head, mut sink: impl FnMut(&[u8]) -> bool) -> io::Result<bool> {
        match head.body {
            BodyKind::Length(n) => self.take(n, &mut sink).await,
            BodyKind::Chunked => loop {
                let range = self.line().await?;
                let line = &self.buf[range];
                let hex = line.split(|&b| b == b';').next().unwrap_or_default();
                let size = parse_hex(hex.trim_ascii()).ok_or_else(|| bad_response("chunk size"))?;
                if size == 0 {
                    // Trailers, then the empty line.
                    while !self.line().await?.is_empty() {}
                    return Ok(true);
                }
                if !self.take(size, &mut sink).await? {
                    return Ok(false);
                }
                if !self.line().await?.is_empty() {
                    return Err(bad_response("no CRLF after a chunk"));
                }
            },
        }
    }

    /// Sends `request` and returns the status and the whole body.
    async fn exchange(&mut self, request: &[u8]) -> io::Result<(u16, Vec<u8>)> {
        self.send(request).await?;
        let head = self.head().await?;
        let mut body = Vec::new();
        self.body(head, |d| {
            body.extend_from_slice(d);
            true
        })
        .await?;
        Ok((head.status, body))
    }

    /// Appends one JSON event (`body`) to `stream`; the `201` answer's body, any other status
    /// an error (the fixed-rate publishers).
    async fn append_one(&mut self, target: &Target, stream: &str, body: &str) -> Result<Vec<u8>> {
        let (status, answer) = self
            .exchange(&target.request(
                "POST",
                &format!("/streams/{stream}"),
                "",
                Some(body.as_bytes()),
            ))
            .await?;
        if status != 201 {
            return Err(http_error(status, &answer));
        }
        Ok(answer)
    }
}

fn parse_status(line: &[u8]) -> io::Result<u16> {
    let rest = line
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| line.strip_prefix(b"HTTP/1.0 "))
        .ok_or_else(|| bad_response("not HTTP/1.x"))?;
    rest.get(..3)
        .and_then(parse_decimal)
        .and_then(|s| u16::try_from(s).ok())
        .ok_or_else(|| bad_response("status code"))
}

fn parse_decimal(s: &[u8]) -> Option<usize> {
    if s.is_empty() || s.len() > 18 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0, |n, &b| n * 10 + usize::from(b - b'0')))
}

fn parse_hex(s: &[u8]) -> Option<usize> {
    if s.is_empty() || s.len() > 15 {
        return None;
    }
    s.iter().try_fold(0usize, |n, &b| {
        let d = (b as char).to_digit(16)?;
        Some(n * 16 + d as usize)
    })
}

// ---------------------------------------------------------------------------------------------
// Measurements

/// A JSON document of exactly `size` bytes (at least ~40).
fn payload(size: usize, seed: usize) -> String {
    let head = format!("{{\"seq\":{seed},\"kind\":\"bench\",\"pad\":\"");
    let pad = size.saturating_sub(head.len() + 2);
    format!("{head}{}\"}}", "x".repeat(pad))
}

/// The body of one append: one event object, or an array of `n` of them.
fn append_body(n: usize, payload_bytes: usize, seed: usize) -> Vec<u8> {
    let event = format!(
        "{{\"type\":\"BenchEvent\",\"data\":{}}}",
        payload(payload_bytes, seed)
    );
    if n == 1 {
        return event.into_bytes();
    }
    let mut body = String::with_capacity(n * (event.len() + 1) + 2);
    body.push('[');
    for i in 0..n {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&event);
    }
    body.push(']');
    body.into_bytes()
}

/// Latencies in µs, sorted, and their nearest-rank quantiles.
struct Latencies(Vec<u32>);

impl Latencies {
    fn new(mut v: Vec<u32>) -> Self {
        v.sort_unstable();
        Latencies(v)
    }

    fn q(&self, q: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        let rank = (q * self.0.len() as f64).ceil() as usize;
        f64::from(self.0[rank.clamp(1, self.0.len()) - 1])
    }
}

fn micros(d: Duration) -> u32 {
    d.as_micros().min(u128::from(u32::MAX)) as u32
}

/// A progress bar over a fixed time, showing the running rate.
fn timed_bar(label: &str, len: Duration) -> ProgressBar {
    let bar = ProgressBar::new(len.as_millis() as u64);
    if let Ok(style) = ProgressStyle::with_template("{prefix:<34} [{bar:30}] {msg}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(label.to_owned());
    bar
}

/// Updates `bar` with the elapsed time and `count`'s rate until aborted.
fn tick(bar: ProgressBar, start: Instant, count: Arc<AtomicU64>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_millis(200));
        loop {
            every.tick().await;
            let secs = start.elapsed().as_secs_f64();
            bar.set_position(start.elapsed().as_millis() as u64);
            let n = count.load(Relaxed);
            bar.set_message(format!(
                "{} events, {}/s",
                fmt_num(n as f64),
                fmt_num(n as f64 / secs)
            ));
        }
    })
}

/// CPU time of all live threads of a process, in ns, from `/proc/<pid>/task/*/schedstat`
/// (`pid` may be `self`). `None` where that is not available.
fn cpu_ns(pid: &str) -> Option<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}

/// Measures the CPU time the server (given its PID) and this process spend during a run.
struct CpuProbe {
    server_pid: Option<String>,
    server: Option<u64>,
    client: Option<u64>,
}

/// CPU seconds used during a run by the server (if its PID was given) and by the generator.
#[derive(Clone, Copy, Default)]
struct CpuUse {
    server: Option<f64>,
    client: Option<f64>,
}

impl CpuProbe {
    fn start(server_pid: Option<u32>) -> CpuProbe {
        let server_pid = server_pid.map(|p| p.to_string());
        CpuProbe {
            server: server_pid.as_deref().and_then(cpu_ns),
            server_pid,
            client: cpu_ns("self"),
        }
    }

    fn stop(self) -> CpuUse {
        let spent = |before: Option<u64>, after: Option<u64>| {
            Some(after?.saturating_sub(before?) as f64 / 1e9)
        };
        CpuUse {
            server: spent(self.server, self.server_pid.as_deref().and_then(cpu_ns)),
            client: spent(self.client, cpu_ns("self")),
        }
    }
}

impl CpuUse {
    /// "; server CPU x µs, generator CPU y µs per <unit>" for the parts known.
    fn summary(&self, units: u64, unit: &str) -> String {
        let per = |s: f64| fmt_num(s * 1e6 / units.max(1) as f64);
        match (self.server, self.client) {
            (Some(s), Some(c)) => format!(
                "; CPU per {unit}: server {} µs, generator {} µs",
                per(s),
                per(c)
            ),
            (None, Some(c)) => format!("; generator CPU per {unit}: {} µs", per(c)),
            _ => String::new(),
        }
    }

    fn record(&self, report: &mut Report, scenario: &str, config: &str, units: u64, unit: &str) {
        let per = |s: f64| s * 1e6 / units.max(1) as f64;
        if let Some(s) = self.server {
            report.add(
                scenario,
                config,
                &format!("server CPU µs per {unit}"),
                per(s),
            );
        }
        if let Some(c) = self.client {
            report.add(
                scenario,
                config,
                &format!("generator CPU µs per {unit}"),
                per(c),
            );
        }
    }
}

/// The result of a closed-loop append run.
struct TimedRun {
    events: u64,
    requests: u64,
    secs: f64,
    lat: Latencies,
    /// (appends per group commit, fsyncs per append, mean fsync ms) from `/metrics`.
    store: Option<(f64, f64, f64)>,
    cpu: CpuUse,
}

impl TimedRun {
    fn rate(&self) -> f64 {
        self.events as f64 / self.secs
    }

    fn summary(&self) -> String {
        let mut s = format!(
            "{} events/s ({} requests/s), latency p50 {} / p99 {} / p99.9 {} µs",
            fmt_num(self.rate()),
            fmt_num(self.requests as f64 / self.secs),
            fmt_num(self.lat.q(0.5)),
            fmt_num(self.lat.q(0.99)),
            fmt_num(self.lat.q(0.999)),
        );
        if let Some((per_commit, _, fsync_ms)) = self.store {
            let _ = write!(
                s,
                "; {} appends per group commit, mean fsync {} ms",
                fmt_num(per_commit),
                fmt_num(fsync_ms)
            );
        }
        s + &self.cpu.summary(self.requests, "request")
    }

    fn record(&self, report: &mut Report, scenario: &str, config: &str) {
        report.add(scenario, config, "events/s", self.rate());
        report.add(scenario, config, "p50 µs", self.lat.q(0.5));
        report.add(scenario, config, "p99 µs", self.lat.q(0.99));
        report.add(scenario, config, "p99.9 µs", self.lat.q(0.999));
        if let Some((per_commit, per_append, fsync_ms)) = self.store {
            report.add(scenario, config, "appends per group commit", per_commit);
            report.add(scenario, config, "fsyncs per append", per_append);
            report.add(scenario, config, "mean fsync ms", fsync_ms);
        }
        self.cpu
            .record(report, scenario, config, self.requests, "request");
    }
}

/// `clients` connections, each appending `per_request` events per request to its own stream,
/// back to back, for `dur`.
async fn timed_appends(
    target: &Arc<Target>,
    tag: &str,
    clients: usize,
    per_request: usize,
    args: &BenchArgs,
    dur: Duration,
) -> Result<TimedRun> {
    let payload_bytes = args.payload;
    let label = if per_request == 1 {
        format!("append, {clients} clients")
    } else {
        format!("batch x{per_request}, {clients} clients")
    };
    let before = target.counters().await;
    let cpu = CpuProbe::start(args.server_pid);
    let barrier = Arc::new(Barrier::new(clients + 1));
    let count = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(clients);
    for c in 0..clients {
        let stream = format!(
            "{tag}-{}{per_request}-c{c}",
            if per_request == 1 { "a" } else { "b" }
        );
        let request = target.request(
            "POST",
            &format!("/streams/{stream}"),
            "",
            Some(&append_body(per_request, payload_bytes, c)),
        );
        let (target, barrier, count) = (target.clone(), barrier.clone(), count.clone());
        tasks.push(tokio::spawn(async move {
            // Connect before the clock starts.
            let conn = target.connect().await;
            barrier.wait().await;
            let mut conn = conn?;
            let mut lat = Vec::with_capacity(1 << 16);
            let start = Instant::now();
            let deadline = start + dur;
            let mut requests = 0u64;
            let mut error = None;
            while Instant::now() < deadline {
                let t0 = Instant::now();
                conn.send(&request).await?;
                let head = conn.head().await?;
                if head.status == 201 || head.status == 200 {
                    conn.body(head, |_| true).await?;
                } else {
                    let mut body = Vec::new();
                    conn.body(head, |d| {
                        body.extend_from_slice(d);
                        true
                    })
                    .await?;
                    error = Some(http_error(head.status, &body));
                    break;
                }
                lat.push(micros(t0.elapsed()));
                requests += 1;
                count.fetch_add(per_request as u64, Relaxed);
            }
            match error {
                Some(e) => Err(e),
                None => Ok::<_, Error>((requests, lat, start, Instant::now())),
            }
        }));
    }
    barrier.wait().await;
    let start = Instant::now();
    let bar = timed_bar(&label, dur);
    let ticker = tick(bar.clone(), start, count.clone());
    let mut results = Vec::with_capacity(clients);
    let mut failure = None;
    for t in tasks {
        match t.await {
            Ok(Ok(r)) => results.push(r),
            Ok(Err(e)) => failure = failure.or(Some(e)),
            Err(e) => failure = failure.or(Some(task_failed("client task", e))),
        }
    }
    ticker.abort();
    let _ = ticker.await;
    bar.finish_and_clear();
    let cpu = cpu.stop();
    if let Some(e) = failure {
        return Err(e);
    }
    let after = target.counters().await;
    // From the first client's start to the last client's last acknowledgement.
    let first = results.iter().map(|r| r.2).min().unwrap_or(start);
    let last = results.iter().map(|r| r.3).max().unwrap_or(start);
    let requests: u64 = results.iter().map(|r| r.0).sum();
    let lat = Latencies::new(results.into_iter().flat_map(|r| r.1).collect());
    Ok(TimedRun {
        events: requests * per_request as u64,
        requests,
        secs: last.duration_since(first).as_secs_f64(),
        lat,
        store: Counters::between(before, after),
        cpu,
    })
}

/// The result of an NDJSON replay.
struct ReplayRun {
    lines: u64,
    bytes: u64,
    secs: f64,
    first_byte_ms: f64,
    cpu: CpuUse,
}

impl ReplayRun {
    fn rate(&self) -> f64 {
        self.lines as f64 / self.secs
    }

    fn summary(&self) -> String {
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

    fn record(&self, report: &mut Report) {
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
async fn replay(target: &Arc<Target>, tag: &str, args: &BenchArgs) -> Result<ReplayRun> {
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
    let bar = ProgressBar::new(events);
    if let Ok(style) =
        ProgressStyle::with_template("{prefix:<34} [{bar:30}] {human_pos}/{human_len} {per_sec}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix("replay (NDJSON)");
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
async fn fill(
    target: &Arc<Target>,
    streams: &str,
    n: u64,
    payload_bytes: usize,
    label: &str,
) -> Result<u64> {
    const CONNS: u64 = 4;
    let batch = n.clamp(1, 1000);
    let bar = ProgressBar::new(n);
    if let Ok(style) =
        ProgressStyle::with_template("{prefix:<34} [{bar:30}] {human_pos}/{human_len} {per_sec}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(label.to_owned());
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

/// The result of an append → SSE delivery run.
struct SseRun {
    sent: u64,
    delivered: u64,
    secs: f64,
    delivery: Latencies,
    ack: Latencies,
    /// How far behind its schedule each send went out (tokio's timer has 1 ms granularity).
    lag: Latencies,
    /// Per event, delivery time minus the time its append was acknowledged (0 when the
    /// delivery came first), when measured: what delivery adds to the durable append.
    after_ack: Option<Latencies>,
}

impl SseRun {
    fn summary(&self) -> String {
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
        main + &after_ack
    }

    fn record(&self, report: &mut Report, scenario: &str, config: &str) {
        report.add(
            scenario,
            config,
            "delivered / sent",
            self.delivered as f64 / self.sent as f64,
        );
        report.add(scenario, config, "delivery p50 µs", self.delivery.q(0.5));
        report.add(scenario, config, "delivery p99 µs", self.delivery.q(0.99));
        report.add(
            scenario,
            config,
            "delivery p99.9 µs",
            self.delivery.q(0.999),
        );
        report.add(scenario, config, "delivery max µs", self.delivery.q(1.0));
        report.add(scenario, config, "append ack p50 µs", self.ack.q(0.5));
        report.add(scenario, config, "append ack p99 µs", self.ack.q(0.99));
        report.add(
            scenario,
            config,
            "send lag behind schedule p99 µs",
            self.lag.q(0.99),
        );
        if let Some(l) = &self.after_ack {
            report.add(
                scenario,
                config,
                "delivery after append ack p50 µs",
                l.q(0.5),
            );
            report.add(
                scenario,
                config,
                "delivery after append ack p99 µs",
                l.q(0.99),
            );
        }
    }
}

/// Publisher connections of the SSE scenario: enough that one slow acknowledgement (a slow
/// fsync) does not hold back the sends scheduled after it.
const SSE_PUBLISHERS: u64 = 16;

/// `rate` events/s for `dur` appended to a fresh stream while a subscriber on it measures
/// each event's delay from send to delivery.
async fn sse(target: &Arc<Target>, tag: &str, rate: u32, dur: Duration) -> Result<SseRun> {
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

    let published = publish(target, &stream, rate, dur, clock, "sse delivery").await;
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
struct Published {
    sent: u64,
    secs: f64,
    /// Append acknowledgement latencies, µs.
    acks: Vec<u32>,
    /// How late each send went out, µs.
    lag: Vec<u32>,
    /// Per `seq`: when its append was acknowledged, ns since the clock (0: not acknowledged).
    acked_at: Arc<Vec<AtomicU64>>,
}

impl Published {
    /// The run, given the delivery delays (µs) the subscriber(s) measured.
    fn run(self, delays: Vec<u32>) -> SseRun {
        SseRun {
            sent: self.sent,
            delivered: delays.len() as u64,
            secs: self.secs,
            delivery: Latencies::new(delays),
            ack: Latencies::new(self.acks),
            lag: Latencies::new(self.lag),
            after_ack: None,
        }
    }
}

/// Appends `rate` events/s to `stream` for `dur` on a fixed schedule over [`SSE_PUBLISHERS`]
/// connections (open loop), each event's `data` carrying its `seq` and `sent_ns` (ns since
/// `clock`, taken just before its request is written).
async fn publish(
    target: &Arc<Target>,
    stream: &str,
    rate: u32,
    dur: Duration,
    clock: Instant,
    label: &str,
) -> Result<Published> {
    let total = ((dur.as_secs_f64() * f64::from(rate)).round() as u64).max(1);
    let bar = timed_bar(label, dur);
    let acked_at: Arc<Vec<AtomicU64>> = Arc::new((0..total).map(|_| AtomicU64::new(0)).collect());
    let sent = Arc::new(AtomicU64::new(0));
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
    let (mut acks, mut lag, mut failure) = (Vec::new(), Vec::new(), None);
    for p in publishers {
        match p.await {
            Ok(Ok((a, l))) => {
                acks.extend(a);
                lag.extend(l);
            }
            Ok(Err(e)) => failure = failure.or(Some(e)),
            Err(e) => failure = failure.or(Some(task_failed("publisher", e))),
        }
    }
    let secs = start.elapsed().as_secs_f64();
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
    })
}

/// The `sent_ns` of an SSE `data:` line (the event JSON, whose `data` is the publisher's).
fn sent_ns(event_json: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"sent_ns\":";
    let at = event_json.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let digits = &event_json[at..];
    let len = digits.iter().take_while(|b| b.is_ascii_digit()).count();
    parse_decimal(&digits[..len]).map(|n| n as u64)
}

// ---------------------------------------------------------------------------------------------
// Consumer groups

/// A poll answer, as far as the generator needs it (the events are skipped, not built).
#[derive(serde::Deserialize)]
struct PollAnswer<'a> {
    #[serde(borrow)]
    messages: Vec<PollMessage<'a>>,
}

#[derive(serde::Deserialize)]
struct PollMessage<'a> {
    #[serde(borrow)]
    ack_id: &'a str,
    delivery: u64,
    event: PollEvent,
}

#[derive(serde::Deserialize)]
struct PollEvent {
    data: PollData,
}

/// The `data` of a bench event: `seq` and `sent_ns` only in `BenchTick` events (latency runs).
#[derive(serde::Deserialize)]
struct PollData {
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    sent_ns: Option<u64>,
}

/// Parses a poll answer.
fn poll_answer(body: &[u8]) -> Result<PollAnswer<'_>> {
    serde_json::from_slice(body).map_err(|e| {
        Error::Io(io::Error::other(format!(
            "unexpected poll answer ({e}): {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        )))
    })
}

/// `{"ack_ids":[...]}` for `messages`.
fn ack_body(messages: &[PollMessage<'_>]) -> Vec<u8> {
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

/// `PUT /groups/{name}` with `settings`; 200 or 201 expected.
async fn create_group(target: &Target, name: &str, settings: &str) -> Result<()> {
    let mut conn = target.connect().await?;
    let (status, body) = conn
        .exchange(&target.request(
            "PUT",
            &format!("/groups/{name}"),
            "",
            Some(settings.as_bytes()),
        ))
        .await?;
    if status != 201 && status != 200 {
        return Err(http_error(status, &body));
    }
    Ok(())
}

/// `POST /groups/{name}/ack` on `conn`.
async fn ack(
    conn: &mut Conn<TcpStream>,
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
async fn fill_category(target: &Arc<Target>, cat: &str, n: u64, payload: usize) -> Result<u64> {
    fill(target, cat, n, payload, "filling a category for groups").await
}

/// The result of draining a group.
struct GroupRun {
    /// Events acked (each once).
    events: u64,
    secs: f64,
    polls: u64,
    /// Deliveries with `delivery` > 1 (none expected: the ack timeout is 60 s).
    redelivered: u64,
    /// Latency of the polls that returned events, µs.
    poll_lat: Latencies,
    cpu: CpuUse,
}

impl GroupRun {
    fn rate(&self) -> f64 {
        self.events as f64 / self.secs
    }

    fn summary(&self) -> String {
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

    fn record(&self, report: &mut Report, config: &str) {
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
async fn group_drain(
    target: &Arc<Target>,
    cat: &str,
    consumers: usize,
    args: &BenchArgs,
) -> Result<GroupRun> {
    let total = args.group_events.div_ceil(args.group_events.clamp(1, 1000))
        * args.group_events.clamp(1, 1000);
    let name = format!("{cat}-c{consumers}");
    create_group(
        target,
        &name,
        &format!(
            "{{\"source\":\"category:{cat}\",\"from\":\"start\",\"ack_timeout_ms\":60000,\"ordering\":\"none\"}}"
        ),
    )
    .await?;
    let poll = target.request(
        "POST",
        &format!("/groups/{name}/poll?max={}&wait_ms=200", args.group_max),
        "Content-Length: 0\r\n",
        None,
    );
    let label = format!("group, {consumers} consumers");
    let bar = ProgressBar::new(total);
    if let Ok(style) =
        ProgressStyle::with_template("{prefix:<34} [{bar:30}] {human_pos}/{human_len} {per_sec}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(label);
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
    let (mut polls, mut redelivered, mut lat, mut failure) = (0, 0, Vec::new(), None);
    for t in tasks {
        match t.await {
            Ok(Ok((p, r, l))) => {
                polls += p;
                redelivered += r;
                lat.extend(l);
            }
            Ok(Err(e)) => failure = failure.or(Some(e)),
            Err(e) => failure = failure.or(Some(task_failed("consumer", e))),
        }
    }
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
async fn group_latency(
    target: &Arc<Target>,
    cat: &str,
    args: &BenchArgs,
    dur: Duration,
) -> Result<SseRun> {
    let name = format!("{cat}-lat");
    create_group(
        target,
        &name,
        &format!(
            "{{\"source\":\"category:{cat}\",\"from\":\"start\",\"ack_timeout_ms\":60000,\"ordering\":\"none\"}}"
        ),
    )
    .await?;
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

// ---------------------------------------------------------------------------------------------
// Reporting

/// Per (scenario, config, metric), one value per run; printed as median (min–max).
struct Report {
    header: String,
    footer: String,
    rows: Vec<(String, String, String, Vec<f64>)>,
}

impl Report {
    fn new(header: String) -> Self {
        Report {
            header,
            footer: String::new(),
            rows: Vec::new(),
        }
    }

    fn add(&mut self, scenario: &str, config: &str, metric: &str, value: f64) {
        match self
            .rows
            .iter_mut()
            .find(|r| r.0 == scenario && r.1 == config && r.2 == metric)
        {
            Some(row) => row.3.push(value),
            None => self
                .rows
                .push((scenario.into(), config.into(), metric.into(), vec![value])),
        }
    }

    fn print(&self) {
        println!("\n{}\n", self.header);
        let mut scenario = None;
        for (s, config, metric, values) in &self.rows {
            if scenario != Some(s) {
                scenario = Some(s);
                println!("\n### {s}\n");
                println!("| config | metric | median | min | max |");
                println!("|---|---|--:|--:|--:|");
            }
            let mut v = values.clone();
            v.sort_by(f64::total_cmp);
            let median = if v.len() % 2 == 1 {
                v[v.len() / 2]
            } else {
                (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
            };
            println!(
                "| {config} | {metric} | {} | {} | {} |",
                fmt_num(median),
                fmt_num(v[0]),
                fmt_num(v[v.len() - 1])
            );
        }
        println!("\n{}", self.footer);
    }
}

/// `1,234,567` for large numbers, 1–2 decimals for small ones.
fn fmt_num(x: f64) -> String {
    if !x.is_finite() {
        return "—".into();
    }
    if x.abs() < 10.0 {
        return format!("{x:.2}");
    }
    if x.abs() < 100.0 {
        return format!("{x:.1}");
    }
    let digits = (x.round() as i64).unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if x < 0.0 {
        out.insert(0, '-');
    }
    out
}

/// The 1-minute load average (Linux), for the record.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(fmt_num(1_234_567.4), "1,234,567");
        assert_eq!(fmt_num(123.0), "123");
        assert_eq!(fmt_num(42.25), "42.2");
        assert_eq!(fmt_num(0.5), "0.50");
        assert_eq!(parse_hex(b"1aF"), Some(0x1af));
        assert_eq!(parse_hex(b"x"), None);
        assert_eq!(parse_decimal(b"0042"), Some(42));
        assert_eq!(parse_status(b"HTTP/1.1 201 Created").unwrap(), 201);
        assert!(parse_status(b"SPDY 200").is_err());
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        let l = Latencies::new((1..=1000).rev().collect());
        assert_eq!(l.q(0.5), 500.0);
        assert_eq!(l.q(0.99), 990.0);
        assert_eq!(l.q(0.999), 999.0);
        assert_eq!(l.q(1.0), 1000.0);
        assert!(Latencies::new(Vec::new()).q(0.5).is_nan());
    }

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

    #[test]
    fn bodies_and_timestamps() {
        assert_eq!(payload(256, 3).len(), 256);
        let one: serde_json::Value = serde_json::from_slice(&append_body(1, 256, 0)).unwrap();
        assert_eq!(one["type"], "BenchEvent");
        let many: serde_json::Value = serde_json::from_slice(&append_body(100, 256, 0)).unwrap();
        assert_eq!(many.as_array().unwrap().len(), 100);
        let line =
            br#"{"id":"x","stream":"s","data":{"seq":7,"sent_ns":123456789},"metadata":null}"#;
        assert_eq!(sent_ns(line), Some(123_456_789));
        assert_eq!(sent_ns(b"{}"), None);
    }

    #[tokio::test]
    async fn responses_are_parsed() {
        let (client, mut server) = tokio::io::duplex(16);
        let mut conn = Conn::new(client);
        let answers = b"HTTP/1.1 201 Created\r\ncontent-length: 5\r\nx: y\r\n\r\nhello\
            HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n\
            HTTP/1.1 204 No Content\r\n\r\n";
        let writer = tokio::spawn(async move {
            server.write_all(answers).await.unwrap();
            server
        });
        let (status, body) = conn.exchange(b"").await.unwrap();
        assert_eq!((status, body.as_slice()), (201, &b"hello"[..]));
        let (status, body) = conn.exchange(b"").await.unwrap();
        assert_eq!(
            (status, body.as_slice()),
            (200, &b"abc0123456789abcdef"[..])
        );
        let (status, body) = conn.exchange(b"").await.unwrap();
        assert_eq!((status, body.len()), (204, 0));
        drop(writer.await.unwrap());
        assert!(conn.head().await.is_err());
    }

    #[tokio::test]
    async fn urls() {
        let t = Target::resolve("http://127.0.0.1:9/x/", Some("tok"))
            .await
            .unwrap();
        assert_eq!(t.addr, "127.0.0.1:9".parse().unwrap());
        let req = String::from_utf8(t.request("POST", "/streams/s", "", Some(b"{}"))).unwrap();
        assert_eq!(
            req,
            "POST /x/streams/s HTTP/1.1\r\nHost: 127.0.0.1:9\r\nAuthorization: Bearer tok\r\n\
             Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
        );
        assert!(Target::resolve("https://127.0.0.1", None).await.is_err());
        assert!(Target::resolve("http://", None).await.is_err());
    }

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
                },
                scenario: vec![Scenario::All],
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
            };
            let target = Arc::new(Target::resolve(&url, None).await.unwrap());
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
            stop.send(()).unwrap();
            serving.await.unwrap().unwrap();
        });
    }
}
