//! The command line: subcommands, flags, and their `STRATA_*` environment variables.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use strata_store::FsyncPolicy;

/// Strata: an append-only event store.
#[derive(Debug, Parser)]
#[command(name = "strata", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server. Prints `listening on http://ADDR` (`https://` with TLS) once bound.
    Serve(ServeArgs),
    /// Append one event (or, without --type, the JSON body as given) to a stream.
    Append(AppendArgs),
    /// Read a stream or the whole log; prints one event JSON per line.
    Read(ReadArgs),
    /// Follow a stream or the whole log live (Server-Sent Events); one event JSON per line.
    Tail(TailArgs),
    /// Check a data directory offline: every frame's CRC and every index file. Lists each
    /// damaged range (file, offset, length, positions); exits 1 when anything is wrong.
    Verify(VerifyArgs),
    /// Repair a data directory offline (the server stopped): damaged bytes move into
    /// DIR/quarantine/<timestamp>/, the store opens writable again; prints what was lost and kept.
    Repair(RepairArgs),
    /// Manage consumer groups (persistent subscriptions with competing consumers).
    Group(GroupArgs),
    /// Consume a group: long-poll, print (or run a command on) each event, ack it.
    Consume(ConsumeArgs),
    /// Manage JavaScript projections: create, list, show, state, stop, start, reset, delete.
    #[command(subcommand)]
    Projection(crate::projection::ProjectionCommand),
    /// Reclaim disk space on a running server: start a scavenge (or follow the one running)
    /// and show its progress until it ends. Ctrl-C leaves it running; --stop stops it.
    Scavenge(ScavengeArgs),
}

#[derive(Debug, Args)]
pub struct ScavengeArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Throttle of the run: MiB read + written per second (0 = unthrottled). Default: the
    /// server's (`strata serve --scavenge-max-mb-per-s`).
    #[arg(long, value_name = "MIB")]
    pub max_mb_per_s: Option<f64>,
    /// Stop the running scavenge instead (a later one finishes the job); prints its status.
    #[arg(long, conflicts_with = "max_mb_per_s")]
    pub stop: bool,
    /// Print the status of the last or current scavenge and exit.
    #[arg(long, conflicts_with_all = ["stop", "max_mb_per_s"])]
    pub status: bool,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Data directory (created if missing).
    #[arg(long, env = "STRATA_DATA_DIR", default_value = "./strata-data")]
    pub data_dir: PathBuf,
    /// Address to listen on; port 0 picks a free port (the bound address is printed).
    #[arg(long, env = "STRATA_LISTEN", default_value = "127.0.0.1:2113")]
    pub listen: String,
    /// When appends are fsynced: `always` (before acknowledging), `interval:<ms>`, or `never`.
    #[arg(long, env = "STRATA_FSYNC", default_value = "always", value_parser = parse_fsync)]
    pub fsync: FsyncPolicy,
    /// Require this bearer token (admin role); repeatable. In the environment: comma-separated.
    #[arg(
        long = "auth-token",
        env = "STRATA_AUTH_TOKEN",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub auth_tokens: Vec<String>,
    /// A tokens file: lines of `<token> <role> [<stream-prefix>...]`, role admin, write or read.
    #[arg(long, env = "STRATA_TOKENS_FILE")]
    pub tokens_file: Option<PathBuf>,
    /// Serve HTTPS (HTTP/1.1 and HTTP/2 by ALPN) with this PEM certificate chain (server
    /// certificate first, then intermediates). Needs --tls-key.
    #[arg(
        long,
        env = "STRATA_TLS_CERT",
        value_name = "PEM",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert (PKCS#8, RSA or EC). Needs --tls-cert.
    #[arg(
        long,
        env = "STRATA_TLS_KEY",
        value_name = "PEM",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// Allow listening on a non-loopback address with authentication off or without TLS.
    #[arg(long, env = "STRATA_INSECURE")]
    pub insecure: bool,
    /// Largest request body, in bytes.
    #[arg(long, env = "STRATA_MAX_BODY_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Largest event (data plus metadata), in bytes.
    #[arg(long, env = "STRATA_MAX_EVENT_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_event_bytes: usize,
    /// Most events in one append.
    #[arg(long, env = "STRATA_MAX_EVENTS_PER_APPEND", default_value_t = 10_000)]
    pub max_events_per_append: usize,
    /// Seconds a client has to send a complete request head (request line and headers), from
    /// connecting or, on a kept-alive connection, from the first byte of the request.
    #[arg(long, env = "STRATA_HEADER_READ_TIMEOUT", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub header_read_timeout: u64,
    /// Seconds a kept-alive connection may stay idle (no request in flight) before it is closed.
    #[arg(long, env = "STRATA_IDLE_TIMEOUT", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub idle_timeout: u64,
    /// Most connections served at once; more wait in the listen backlog until one closes.
    #[arg(long, env = "STRATA_MAX_CONNECTIONS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections: u64,
    /// Segment file size at which a new segment is started, in bytes.
    #[arg(long, env = "STRATA_SEGMENT_SIZE", default_value_t = 256 * 1024 * 1024)]
    pub segment_size: u64,
    /// Seconds open connections get to finish after SIGTERM / Ctrl-C.
    #[arg(long, env = "STRATA_SHUTDOWN_GRACE", default_value_t = 10)]
    pub shutdown_grace: u64,
    /// Memory limit of each projection's JavaScript heap (every partition's state included), MiB.
    #[arg(long, env = "STRATA_PROJECTION_MEMORY_MB", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub projection_memory_mb: u64,
    /// Time limit of one projection handler call (or partitionBy, or a state read), ms.
    #[arg(long, env = "STRATA_PROJECTION_EVENT_TIMEOUT_MS", default_value_t = 250, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub projection_event_timeout_ms: u64,
    /// Log level on stderr: error, warn, info, debug or trace.
    #[arg(long, env = "STRATA_LOG", default_value = "info")]
    pub log_level: tracing::Level,
    /// After start, check every frame of the sealed segments in the background at most this
    /// many MiB/s, so damage in history nobody reads is found soon; 0 turns the check off.
    #[arg(long, env = "STRATA_CHECK_HISTORY_MB_PER_S", default_value_t = 32)]
    pub check_history_mb_per_s: u64,
    /// Run a scavenge (space reclamation) every this many hours, the first one that long after
    /// the start; fractions allowed (0.5 = every 30 minutes). 0: never (the default).
    #[arg(
        long,
        env = "STRATA_SCAVENGE_INTERVAL",
        value_name = "HOURS",
        default_value_t = 0.0
    )]
    pub scavenge_interval: f64,
    /// Throttle of scheduled scavenges and of those started without their own: MiB read +
    /// written per second; 0 = unthrottled.
    #[arg(long, env = "STRATA_SCAVENGE_MAX_MB_PER_S", default_value_t = (strata_server::DEFAULT_SCAVENGE_BYTES_PER_S >> 20) as f64)]
    pub scavenge_max_mb_per_s: f64,
}

fn parse_fsync(s: &str) -> Result<FsyncPolicy, String> {
    s.parse()
}

/// How to reach the server (client commands).
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// Base URL of the server: `http://HOST:PORT` or `https://HOST:PORT`.
    #[arg(long, env = "STRATA_SERVER", default_value = "http://127.0.0.1:2113")]
    pub server: String,
    /// With an https:// server: trust the CA certificate(s) in this PEM file instead of the
    /// built-in Mozilla roots (for a server whose certificate a private CA signed).
    #[arg(long, env = "STRATA_CA_CERT", value_name = "PEM")]
    pub ca_cert: Option<PathBuf>,
    /// Bearer token, when the server requires one.
    #[arg(long, env = "STRATA_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

#[derive(Debug, Args)]
pub struct AppendArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The stream to append to.
    pub stream: String,
    /// Event type. With it, DATA is the event's `data` (any JSON); without it, DATA is the whole
    /// request body: an event object `{"type", "data", ...}` or an array of them.
    #[arg(long = "type")]
    pub event_type: Option<String>,
    /// `any`, `no_stream`, `stream_exists`, or the stream's exact last revision.
    #[arg(long)]
    pub expected_revision: Option<String>,
    /// Event id (a UUID) making a retry idempotent; generated by the server when absent.
    #[arg(long, requires = "event_type")]
    pub id: Option<String>,
    /// Event metadata (any JSON).
    #[arg(long, requires = "event_type")]
    pub metadata: Option<String>,
    /// The JSON; read from stdin when absent.
    pub data: Option<String>,
}

/// A stream, or `--all`.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct Target {
    /// The stream.
    pub stream: Option<String>,
    /// The whole log instead of one stream.
    #[arg(long)]
    pub all: bool,
}

/// Filters of `--all`.
#[derive(Debug, Args)]
pub struct AllFilters {
    /// `--all` only: comma-separated event types to keep.
    #[arg(long, conflicts_with = "stream")]
    pub types: Option<String>,
    /// `--all` only: keep events of streams in this category.
    #[arg(long, conflicts_with = "stream")]
    pub category: Option<String>,
    /// `--all` only: keep events of streams whose name starts with this.
    #[arg(long, conflicts_with = "stream")]
    pub stream_prefix: Option<String>,
    /// `--all` only: keep the events of one flow (`metadata.correlation_id` equal to this).
    #[arg(long, conflicts_with = "stream")]
    pub correlation_id: Option<String>,
}

#[derive(Debug, Args)]
pub struct ReadArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub target: Target,
    /// Revision (stream) or position (--all) to start at, or `start` / `end`.
    #[arg(long)]
    pub from: Option<String>,
    /// At most this many events (one page, 1-10000). Without it: everything, streamed.
    #[arg(long)]
    pub limit: Option<u32>,
    /// `forward` or `backward`.
    #[arg(long)]
    pub direction: Option<String>,
    #[command(flatten)]
    pub filters: AllFilters,
}

#[derive(Debug, Args)]
pub struct TailArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub target: Target,
    /// Where to start: `end` (only new events, the default), `start`, or a revision/position.
    #[arg(long, default_value = "end")]
    pub from: String,
    #[command(flatten)]
    pub filters: AllFilters,
}

#[derive(Debug, Args)]
pub struct GroupArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(subcommand)]
    pub command: GroupCommand,
}

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Create a group (no change when it exists with the same settings).
    Create(GroupCreateArgs),
    /// List the groups with their state (checkpoint, in flight, parked, lag).
    List(GroupListArgs),
    /// Show a group's settings and state.
    Show(GroupShowArgs),
    /// Delete a group and its state (checkpoint, parked events).
    Delete(GroupNameArg),
    /// List a group's parked (dead-lettered) events, one JSON per line.
    Parked(GroupNameArg),
    /// Re-queue a group's parked events for delivery.
    ReplayParked(GroupNameArg),
}

/// How events are ordered among a group's consumers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Ordering {
    /// Any event may be in flight at any time: most parallelism.
    None,
    /// An event is not handed out while an earlier event of its stream is in flight.
    #[value(name = "per_stream", alias = "per-stream")]
    PerStream,
}

impl Ordering {
    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Ordering::None => "none",
            Ordering::PerStream => "per_stream",
        }
    }
}

#[derive(Debug, Args)]
pub struct GroupCreateArgs {
    /// The group's name.
    pub name: String,
    /// What the group consumes: `$all`, a stream name, or `category:<name>`.
    #[arg(long)]
    pub source: String,
    /// Where a new group starts: `start`, `end`, or a position (`$all`, category) / revision.
    #[arg(long)]
    pub from: Option<String>,
    /// Milliseconds a consumer has to ack an event before it is redelivered.
    #[arg(long)]
    pub ack_timeout_ms: Option<u64>,
    /// Deliveries after which an unacked event is parked.
    #[arg(long)]
    pub max_deliveries: Option<u32>,
    /// `none` or `per_stream`.
    #[arg(long, value_enum)]
    pub ordering: Option<Ordering>,
}

#[derive(Debug, Args)]
pub struct GroupListArgs {
    /// Print the server's JSON (one group per line) instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct GroupShowArgs {
    /// The group's name.
    pub name: String,
    /// Also list the parked events.
    #[arg(long)]
    pub parked: bool,
    /// Print the server's JSON instead of `key: value` lines.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct GroupNameArg {
    /// The group's name.
    pub name: String,
}

/// What to do with an event whose command failed (`--exec`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum NackAction {
    /// Redeliver it (it is parked once it reaches the group's max_deliveries).
    Retry,
    /// Park it now (dead letter; `strata group replay-parked` re-queues it).
    Park,
    /// Drop it: never delivered to this group again.
    Skip,
}

impl NackAction {
    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            NackAction::Retry => "retry",
            NackAction::Park => "park",
            NackAction::Skip => "skip",
        }
    }
}

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The group to consume.
    pub group: String,
    /// Most events per poll (the server caps it; 1,000 by default).
    #[arg(long, default_value_t = 100)]
    pub max: u32,
    /// How long one poll waits for events when none are ready, in milliseconds.
    #[arg(long, default_value_t = 5000)]
    pub wait_ms: u64,
    /// Stop after handling this many events (acked or nacked).
    #[arg(long)]
    pub count: Option<u64>,
    /// Stop at the first poll that returns nothing (after waiting --wait-ms).
    #[arg(long)]
    pub until_empty: bool,
    /// With --exec: what to do with an event whose command exits non-zero.
    #[arg(long, value_enum, default_value = "retry")]
    pub nack_action: NackAction,
    /// Run this command once per event (the event JSON on stdin; STRATA_EVENT_ID, STRATA_STREAM,
    /// STRATA_REVISION, STRATA_POSITION, STRATA_EVENT_TYPE, STRATA_DELIVERY, STRATA_ACK_ID and
    /// STRATA_GROUP in the environment); ack on exit code 0, nack with --nack-action otherwise.
    /// Must be the last option: every argument after it belongs to the command. Also:
    /// `strata consume GROUP [OPTIONS] -- CMD ARGS...`.
    #[arg(
        long,
        num_args = 1..,
        allow_hyphen_values = true,
        value_name = "CMD",
        conflicts_with = "command"
    )]
    pub exec: Vec<String>,
    /// The command to run per event, after `--` (same as --exec).
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The data directory to check.
    #[arg(long, env = "STRATA_DATA_DIR")]
    pub data_dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct RepairArgs {
    /// The data directory to repair (no server may be running on it).
    #[arg(long, env = "STRATA_DATA_DIR")]
    pub data_dir: PathBuf,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn serve_defaults() {
        let cli = Cli::try_parse_from(["strata", "serve"]).unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(args.listen, "127.0.0.1:2113");
        assert_eq!(args.data_dir, PathBuf::from("./strata-data"));
        assert_eq!(args.fsync, FsyncPolicy::Always);
        assert!(args.auth_tokens.is_empty());
    }

    #[test]
    fn serve_flags() {
        let cli = Cli::try_parse_from([
            "strata",
            "serve",
            "--fsync",
            "interval:5",
            "--auth-token",
            "a",
            "--auth-token",
            "b",
            "--insecure",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(args.auth_tokens, ["a", "b"]);
        assert!(args.insecure);
        assert!(Cli::try_parse_from(["strata", "serve", "--fsync", "sometimes"]).is_err());
    }

    #[test]
    fn read_needs_a_target() {
        assert!(Cli::try_parse_from(["strata", "read"]).is_err());
        assert!(Cli::try_parse_from(["strata", "read", "s", "--all"]).is_err());
        assert!(Cli::try_parse_from(["strata", "read", "--all", "--types", "A"]).is_ok());
        assert!(Cli::try_parse_from(["strata", "read", "s", "--types", "A"]).is_err());
        assert!(Cli::try_parse_from(["strata", "tail", "s"]).is_ok());
    }

    #[test]
    fn group_create_flags() {
        let cli = Cli::try_parse_from([
            "strata",
            "group",
            "create",
            "g",
            "--source",
            "category:order",
            "--from",
            "end",
            "--ack-timeout-ms",
            "500",
            "--max-deliveries",
            "3",
            "--ordering",
            "per_stream",
        ])
        .unwrap();
        let Command::Group(GroupArgs {
            command: GroupCommand::Create(args),
            ..
        }) = cli.command
        else {
            panic!("not group create")
        };
        assert_eq!(args.source, "category:order");
        assert_eq!(args.ordering, Some(Ordering::PerStream));
        assert_eq!(args.ack_timeout_ms, Some(500));
        assert!(Cli::try_parse_from(["strata", "group", "create", "g"]).is_err());
        assert!(Cli::try_parse_from(["strata", "group", "replay-parked", "g"]).is_ok());
    }

    #[test]
    fn consume_commands() {
        let parse = |args: &[&str]| match Cli::try_parse_from(args).map(|c| c.command) {
            Ok(Command::Consume(c)) => Ok(c),
            Ok(_) => panic!("not consume"),
            Err(e) => Err(e),
        };
        let c = parse(&["strata", "consume", "g", "--exec", "sh", "-c", "cat"]).unwrap();
        assert_eq!(c.exec, ["sh", "-c", "cat"]);
        let c = parse(&["strata", "consume", "g", "--count", "3", "--", "wc", "-l"]).unwrap();
        assert_eq!(c.command, ["wc", "-l"]);
        assert_eq!(c.count, Some(3));
        // Everything after --exec is the command, options included.
        let c = parse(&["strata", "consume", "g", "--exec", "a", "--max", "1"]).unwrap();
        assert_eq!(c.exec, ["a", "--max", "1"]);
        let c = parse(&["strata", "consume", "g", "--nack-action", "park"]).unwrap();
        assert_eq!(c.nack_action, NackAction::Park);
        assert!(c.exec.is_empty() && c.command.is_empty());
    }
}
