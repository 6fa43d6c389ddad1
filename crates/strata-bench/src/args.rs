//! The command line of `strata-bench`: which scenarios, how many clients, how long.

use clap::{Args, ValueEnum};

/// How to reach the server.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// Base URL of the server: `http://HOST:PORT` or `https://HOST:PORT`.
    #[arg(long, env = "STRATA_SERVER", default_value = "http://127.0.0.1:2113")]
    pub server: String,
    /// With an https:// server: trust the CA certificate(s) in this PEM file instead of the
    /// built-in Mozilla roots.
    #[arg(long, env = "STRATA_CA_CERT", value_name = "PEM")]
    pub ca_cert: Option<std::path::PathBuf>,
    /// Bearer token, when the server requires one.
    #[arg(long, env = "STRATA_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// `strata-bench` options.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// `--server`, `--ca-cert` and `--token`.
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
    /// Client count of the `read` scenario.
    #[arg(long, default_value_t = 16)]
    pub read_clients: usize,
    /// Streams the `read` scenario picks from at random (filled once per server).
    #[arg(long, default_value_t = 100_000)]
    pub read_streams: u64,
    /// Events in each stream of the `read` scenario (each read returns all of them).
    #[arg(long, default_value_t = 10)]
    pub read_stream_events: u64,
    /// Racers of the `conflict` scenario.
    #[arg(long, default_value_t = 16)]
    pub racers: usize,
    /// Directory whose file system's raw fsync rate the `conflict` scenario measures (a
    /// scratch file is written and removed there). Default: the server's data directory as
    /// `GET /info` reports it, when that path exists on this machine.
    #[arg(long, value_name = "DIR")]
    pub fsync_dir: Option<std::path::PathBuf>,
    /// PID of the server when it runs on this machine: the report then adds the CPU time the
    /// server and the generator spent per request (Linux, from `/proc/<pid>/stat`).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// `scavenge`: MiB of events written then soft-deleted before the measured phases.
    #[arg(long, default_value_t = 256)]
    pub scavenge_garbage_mb: u64,
    /// `scavenge`: the throttle asked for, MiB/s (0 = unthrottled); default the server's.
    #[arg(long)]
    pub scavenge_mb_per_s: Option<f64>,
    /// `bookkeeping`: partitions of the projection (events spread over them round-robin); 0:
    /// the control run, the same events without projection and group.
    #[arg(long, default_value_t = 3000)]
    pub bk_partitions: u64,
    /// `bookkeeping`: bytes of padding in each partition's state (the state's size).
    #[arg(long, default_value_t = 0)]
    pub bk_state_pad: usize,
    /// `bookkeeping`: seconds between two samples of the bytes on disk.
    #[arg(long, default_value_t = 5.0)]
    pub bk_sample: f64,
    /// `bookkeeping`: start a scavenge every this many seconds during the run (0 = never).
    #[arg(long, default_value_t = 0.0)]
    pub scavenge_every: f64,
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
    /// Whole 10-event stream reads (JSON pages) by N clients, streams picked at random.
    Read,
    /// Racers on one stream with exact expected revisions, retrying on 409.
    Conflict,
    /// Append → SSE delivery latency at a fixed rate.
    Sse,
    /// Consumer group: pre-loaded events drained by 1, 4, 16 consumers (poll + batch ack).
    Group,
    /// Append → consumer-group delivery latency at a fixed rate, consumers long-polling.
    GroupLatency,
    /// A JavaScript projection: catch-up rate over the log, lag under a live load.
    Projection,
    /// Append and read p99 while a throttled scavenge runs vs idle (not part of `all`: the
    /// server needs small segments).
    Scavenge,
    /// Disk used by the server's `$`-streams under a projection and a group, with or without
    /// scavenges (not part of `all`).
    Bookkeeping,
    /// All of the above but `scavenge` and `bookkeeping`.
    All,
}
