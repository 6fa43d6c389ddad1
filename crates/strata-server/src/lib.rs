//! # strata-server
//!
//! Strata's HTTP server: the contract of `docs/http-api.md` served
//! with axum + tokio on top of the embedded engine, [`strata_store`].
//!
//! Data flows one way: request → handler → [`strata_store::Store`] → response. Each concept of the
//! API lives in the module named after it.
//!
//! **Handlers** answer requests, one resource each:
//!
//! | module | what |
//! |---|---|
//! | `append` | `POST /streams/{stream}`: event bodies, `Expected-Revision`, idempotency |
//! | `read` | `GET /streams/{stream}`, `GET /all`, one event: the JSON page, and the dispatch to `replay` / `subscribe` |
//! | `replay` | the NDJSON representation of a read: a streamed replay without a limit cap |
//! | `subscribe` | the SSE representation of a read: catch-up subscriptions with `Last-Event-ID` resume |
//! | `streams` | the stream listing, deletion, stream metadata |
//! | `causation` | `GET /events/{id}/causes`, `/effects`: the causation chain from the correlation index |
//! | `ops` | `/health`, `/info`, `/metrics` |
//! | `openapi` | `GET /openapi.json` |
//! | `groups` | consumer groups: settings, the dispatcher, durable state, the engine; `groups::http` the endpoints |
//! | `projections` | hosted JavaScript projections, their registry; `projections::http` the endpoints |
//! | `grpc` | the KurrentDB (EventStoreDB) gRPC client protocol on the same listener: the router of its services (`grpc::streams`, gossip, server features) and their shared helpers |
//! | `scavenge` | space reclamation: one run at a time on its own thread, its status, schedule and metrics; `scavenge::http` the `/admin/scavenge` endpoints |
//!
//! **Helpers** are what handlers share:
//!
//! | module | what |
//! |---|---|
//! | `path` | path parameters, percent-decoded, and their extractors (`StreamPath`, `EventPath`, `GroupPath`, `ProjectionName`) |
//! | `stream_name` | name checks: streams, and what every name of the API shares |
//! | `query` | query strings, plain-digit numbers, the parameters and source of a read |
//! | `read_placement` | whether a small read runs inline on the async worker or on the blocking pool (adaptive, against page faults) |
//! | `headers` | request headers: `Accept` negotiation, `Last-Event-ID`, `Expected-Revision` |
//! | `flow_headers` | the `Correlation-Id` / `Causation-Id` headers of an append, filled into event metadata |
//! | `body` | request bodies within their limits; the channel body of streamed responses and its page sizer |
//! | `response` | JSON responses with their status; the headers of streamed responses |
//! | `event_json` | the event JSON writer |
//! | `until_damage` | pages that end before a damaged event (the next page answers it) |
//! | `live_feed` | the loop of every live reader of the log (SSE, group feeders): read, then wait for commits |
//! | `metrics` | the server's counters and the Prometheus text of `GET /metrics` |
//! | [`auth`] | bearer tokens, roles and stream prefixes |
//! | [`error`] | [`Error`]: every failure, with its HTTP status and the API's JSON error shape |
//! | `app` | the shared state of every handler ([`App`]), blocking-pool calls, and the route table (the one helper that names the handlers) |
//!
//! **The server** around them: [`config`] ([`Config`]: data directory, listen address, fsync
//! policy, auth, TLS, limits), `server` ([`Server`]: binds, opens the store, serves until
//! shutdown, closes the store), `conn` (the accept loop: connection cap, header-read and idle
//! timeouts, the TLS handshake, HTTP/1.1 and HTTP/2 (h2c too), JSON for hyper's own error
//! answers, gRPC requests to `grpc`) and
//! `tls` ([`TlsFiles`]: the certificate and key, the rustls acceptor with ALPN).
//!
//! The import rule: a handler imports helpers only, never another handler, so that what two
//! handlers share has one home among the helpers. The one exception is `read` calling
//! `replay::replay` and `subscribe::subscribe`: a read is one resource with three
//! representations chosen by `Accept`, and `read` is where the choice is made. Within
//! `groups` and `projections`, `http` also uses its own domain modules (`super::...`).
//!
//! Small reads (a stream page, an unfiltered `/all` page, one event) run inline on the async
//! worker while they are fast, on the blocking pool after one faulted (`read_placement`); so do
//! the live feeds' reads at the live tail (`live_feed`).
//! Other blocking store calls (large or filtered reads, listing, heads, deletes, metadata) run
//! on tokio's blocking pool;
//! appends wait for the group commit with [`strata_store::Store::append_async`]. Streamed
//! responses (NDJSON, SSE) are fed through small bounded channels: a slow client makes its
//! producer wait and read the log again later, never grow a queue.
//!
//! ```no_run
//! # async fn run() -> Result<(), strata_server::Error> {
//! let config = strata_server::Config::new("./strata-data");
//! let server = strata_server::Server::bind(config).await?;
//! println!("listening on {}", server.url());
//! // Serve until the future resolves (the binary passes SIGTERM / Ctrl-C).
//! server.run(std::future::pending()).await
//! # }
//! ```

mod app;
mod append;
pub mod auth;
mod body;
mod causation;
pub mod config;
mod conn;
mod console;
pub mod error;
mod event_json;
mod flow_headers;
mod groups;
mod grpc;
mod headers;
mod live_feed;
mod metrics;
mod openapi;
mod ops;
mod path;
mod projections;
mod query;
mod read;
mod read_placement;
mod replay;
mod response;
mod scavenge;
mod server;
mod stream_name;
mod streams;
mod subscribe;
mod tls;
mod until_damage;

pub use app::App;
pub use auth::{Auth, Role};
pub use config::{Config, ConnectionLimits, HttpLimits};
pub use error::{Error, Result};
pub use groups::GroupOptions;
pub use openapi::document as openapi_document;
pub use projections::ProjectionOptions;
pub use scavenge::{ScavengeConfig, DEFAULT_MAX_BYTES_PER_S as DEFAULT_SCAVENGE_BYTES_PER_S};
pub use server::{serve, Server};
pub use strata_store::timestamp::format_timestamp;
pub use tls::TlsFiles;

/// The `(method, path template)` of every route the router serves, in the order registered.
/// The OpenAPI document describes exactly these (checked by a test).
pub fn routes() -> Vec<(&'static str, &'static str)> {
    app::route_table()
}
