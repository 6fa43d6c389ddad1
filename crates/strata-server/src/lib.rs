//! # strata-server
//!
//! Strata's HTTP server: the contract of `docs/http-api.md` served
//! with axum + tokio on top of the embedded engine, [`strata_store`].
//!
//! Data flows one way: request → handler → [`strata_store::Store`] → response. Each concept of the
//! API lives in the module named after it:
//!
//! | module | what |
//! |---|---|
//! | [`config`] | [`Config`]: data directory, listen address, fsync policy, auth, limits |
//! | `server` | [`Server`]: binds, opens the store, serves until shutdown, closes the store |
//! | `conn` | the accept loop: connection cap, header-read and idle timeouts, JSON for hyper's own error answers |
//! | `app` | the shared state of every handler ([`App`]) and the route table |
//! | `append` | `POST /streams/{stream}`: event bodies, `Expected-Revision`, idempotency |
//! | `read` | `GET /streams/{stream}`, `GET /all`, one event: parameters and JSON pages |
//! | `replay` | the NDJSON representation: a streamed replay without a limit cap |
//! | `subscribe` | the SSE representation: catch-up subscriptions with `Last-Event-ID` resume |
//! | `streams` | the stream listing, deletion, stream metadata |
//! | `groups` | consumer groups: settings, the dispatcher, durable state, the engine, endpoints |
//! | `projections` | `/projections/...`: hosted JavaScript projections, their registry |
//! | `ops` | `/health`, `/info`, `/metrics` |
//! | `path`, `stream_name`, `query`, `body`, `event_json` | path parameters, name checks, query strings, bodies, the event JSON writer |
//! | [`auth`] | bearer tokens, roles and stream prefixes |
//! | `openapi` | `GET /openapi.json` |
//! | [`error`] | [`Error`]: every failure, with its HTTP status and the API's JSON error shape |
//!
//! Blocking store calls (reads, listing, heads, deletes, metadata) run on tokio's blocking pool;
//! appends wait for the group commit with [`strata_store::Store::append_async`]. Streamed
//! responses (NDJSON, SSE) are fed through small bounded channels: a slow client makes its
//! producer wait and read the log again later, never grow a queue.
//!
//! ```no_run
//! # async fn run() -> Result<(), strata_server::Error> {
//! let config = strata_server::Config::new("./strata-data");
//! let server = strata_server::Server::bind(config).await?;
//! println!("listening on http://{}", server.local_addr());
//! // Serve until the future resolves (the binary passes SIGTERM / Ctrl-C).
//! server.run(std::future::pending()).await
//! # }
//! ```

mod app;
mod append;
pub mod auth;
mod body;
pub mod config;
mod conn;
pub mod error;
mod event_json;
mod groups;
mod live_feed;
mod metrics;
mod openapi;
mod ops;
mod path;
mod projections;
mod query;
mod read;
mod replay;
mod server;
mod stream_name;
mod streams;
mod subscribe;

pub use app::App;
pub use auth::{Auth, Role};
pub use config::{Config, ConnectionLimits, HttpLimits};
pub use error::{Error, Result};
pub use groups::GroupOptions;
pub use openapi::document as openapi_document;
pub use projections::ProjectionOptions;
pub use server::{serve, Server};
pub use strata_store::timestamp::format_timestamp;

/// The `(method, path template)` of every route the router serves, in the order registered.
/// The OpenAPI document describes exactly these (checked by a test).
pub fn routes() -> Vec<(&'static str, &'static str)> {
    app::route_table()
}
