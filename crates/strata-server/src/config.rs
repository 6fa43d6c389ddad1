//! How a server is set up: where the data lives, where to listen, durability, auth, limits.

use std::path::PathBuf;
use std::time::Duration;

use strata_store::{Limits, Options};

use crate::auth::Auth;
use crate::projections::ProjectionOptions;
use crate::scavenge::ScavengeConfig;
use crate::tls::TlsFiles;

/// Everything [`crate::Server::bind`] needs. Start from [`Config::new`] and adjust fields.
#[derive(Clone, Debug)]
pub struct Config {
    /// The data directory (created if missing). Default `./strata-data`.
    pub data_dir: PathBuf,
    /// `host:port` to listen on. Default `127.0.0.1:2113`; port 0 picks a free port.
    pub listen: String,
    /// Options the store is opened with (fsync policy, segment size, rebuild progress, ...).
    /// Its `limits` are replaced by the ones derived from [`Config::limits`].
    pub store: Options,
    /// Bearer-token authentication; off when it holds no token.
    pub auth: Auth,
    /// Serve HTTPS with this certificate chain and key (HTTP/1.1 and HTTP/2 by ALPN); plain
    /// HTTP/1.1 when `None`.
    pub tls: Option<TlsFiles>,
    /// Allow a non-loopback listen address with auth off or without TLS.
    pub insecure: bool,
    /// Request size limits.
    pub limits: HttpLimits,
    /// Connection limits: header-read and idle timeouts, the most connections served at once.
    pub connections: ConnectionLimits,
    /// An SSE response that has sent nothing for this long sends a `: keepalive` comment.
    /// Default 15 s (docs/http-api.md: at least every 15 s).
    pub keepalive_interval: Duration,
    /// After the shutdown signal, how long open connections may take to finish before the
    /// server stops waiting for them and closes the store. Default 10 s.
    pub shutdown_grace: Duration,
    /// How hosted projections checkpoint and their JavaScript sandbox limits.
    pub projections: ProjectionOptions,
    /// After the store opened, check every frame of its sealed segments in the background at
    /// most this many bytes per second, so that damage in history nobody reads is found (and
    /// shown by `/health`) soon after a start. `None`: no check. Default 32 MiB/s.
    pub check_history: Option<u64>,
    /// Scavenging: the schedule (default none) and the default throttle.
    pub scavenge: ScavengeConfig,
}

impl Config {
    /// The defaults of docs/http-api.md ("Running"), serving `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Config {
            data_dir: data_dir.into(),
            listen: "127.0.0.1:2113".into(),
            store: Options::default(),
            auth: Auth::default(),
            tls: None,
            insecure: false,
            limits: HttpLimits::default(),
            connections: ConnectionLimits::default(),
            keepalive_interval: Duration::from_secs(15),
            shutdown_grace: Duration::from_secs(10),
            projections: ProjectionOptions::default(),
            check_history: Some(32 << 20),
            scavenge: ScavengeConfig::default(),
        }
    }

    /// The store options with the limits of [`Config::limits`] applied, and (unless the
    /// options bring their own) a damage hook that logs each damaged range at error level.
    pub fn store_options(&self) -> Options {
        let mut options = self.store.clone();
        options.limits = self.limits.store_limits();
        if options.on_damage.is_none() {
            options.on_damage = Some(crate::ops::damage_hook());
        }
        options
    }
}

impl Default for Config {
    fn default() -> Self {
        Config::new("./strata-data")
    }
}

/// Limits on connections, against clients that hold connections without using them
/// (slowloris, idle keep-alive floods). A response in flight (an SSE subscription, an NDJSON
/// replay, a consumer-group long poll) is never cut by these timeouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// How long a client has to send a complete request head (request line and headers): from
    /// the accepted connection, or on a kept-alive connection from the first byte of the next
    /// request. Over it the connection is closed without an answer. Default 10 s.
    pub header_read_timeout: Duration,
    /// How long a kept-alive connection may wait, with no request in flight and no byte of a
    /// next request received, before the server closes it. Default 60 s.
    pub idle_timeout: Duration,
    /// Most connections served at once. Further connections are not accepted until one
    /// closes: they wait in the kernel's listen backlog (connecting succeeds, the request is
    /// answered once a slot frees), and once the backlog is full new connection attempts are
    /// refused or dropped by the kernel. Default 10,000; at least 1.
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
        }
    }
}

/// Size limits on requests (docs/http-api.md, "Security").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    /// Largest request body in bytes (default 16 MiB). Larger: 413.
    pub max_body_bytes: usize,
    /// Largest event (`data` plus `metadata` bytes, after base64 decoding; default 4 MiB).
    /// Larger: 413.
    pub max_event_bytes: usize,
    /// Most events in one append (default 10,000). More: 413.
    pub max_events_per_append: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_body_bytes: 16 * 1024 * 1024,
            max_event_bytes: 4 * 1024 * 1024,
            max_events_per_append: 10_000,
        }
    }
}

impl HttpLimits {
    /// The store's limits matching these (the server checks first, so that oversized input is
    /// a 413 rather than the store's 400).
    pub fn store_limits(&self) -> Limits {
        Limits {
            max_event_size: self.max_event_bytes,
            max_events_per_append: self.max_events_per_append,
            ..Limits::default()
        }
    }
}
