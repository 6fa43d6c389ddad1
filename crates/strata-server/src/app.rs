//! The state every handler shares ([`App`]) and the route table.
//!
//! The route table is the single list of `(method, path)` pairs the server answers; the router is
//! built from it and the OpenAPI document is checked against it. Consumer groups (`/groups/...`)
//! live in [`crate::groups`]; projections (`/projections/...`) in [`crate::projections`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::handler::Handler;
use axum::middleware;
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::Router;
use strata_store::Store;
use tokio::sync::watch;

use crate::auth::Auth;
use crate::config::{Config, HttpLimits};
use crate::error::{Error, Result};
use crate::groups::{self, GroupOptions, Groups};
use crate::metrics::Metrics;
use crate::projections::Projections;
use crate::scavenge::Scavenger;
use crate::{append, causation, metrics, openapi, ops, read, read_placement, streams};

/// The shared state of the HTTP handlers: the store, auth, limits, metrics, the shutdown flag.
/// Cheap to clone. Build a router for it with [`App::router`].
#[derive(Clone)]
pub struct App {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    auth: Auth,
    limits: HttpLimits,
    metrics: Metrics,
    keepalive_interval: Duration,
    started: Instant,
    shutdown: watch::Sender<bool>,
    groups: Groups,
    projections: Arc<Projections>,
    scavenger: Scavenger,
}

impl App {
    /// State serving `store` with the auth, limits and keepalive interval of `config`. The store
    /// should have been opened with [`Config::store_options`] so that its limits match.
    pub fn new(store: Store, config: &Config) -> Self {
        App::with_group_options(store, config, GroupOptions::default())
    }

    /// [`App::new`] with the consumer-group engine tuned by `options` (window size,
    /// checkpoint interval). Groups are loaded from the store on first use, or at once by
    /// [`App::start_groups`].
    pub fn with_group_options(store: Store, config: &Config, options: GroupOptions) -> Self {
        App {
            inner: Arc::new(Inner {
                groups: Groups::new(store.clone(), options),
                projections: Arc::new(Projections::load(store.clone(), config.projections.clone())),
                scavenger: Scavenger::new(store.clone(), config.scavenge.clone()),
                store,
                auth: config.auth.clone(),
                limits: config.limits,
                metrics: Metrics::default(),
                keepalive_interval: config.keepalive_interval,
                started: Instant::now(),
                shutdown: watch::Sender::new(false),
            }),
        }
    }

    /// The router of the whole API (see `route_table` for the list), with the JSON 404/405
    /// fallbacks and the authentication and metrics middleware.
    pub fn router(&self) -> Router {
        let mut router = Router::new();
        for route in routes() {
            router = router.route(route.path, route.handler);
        }
        router
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed)
            // One middleware, not one per concern: axum applies a router's layers to every
            // route, and each layer costs every request a boxed service clone and a boxed
            // future. It counts every response (metrics), auth's 401s included.
            .layer(middleware::from_fn_with_state(self.clone(), metrics::track))
            // The web console (`/`, `/ui/...`) is merged after the layer: its static page needs
            // no token (the page asks for one for its API calls), and it is not in the route
            // table, which is the API's (and the OpenAPI document's) list.
            .merge(crate::console::router())
            .with_state(self.clone())
    }

    /// Ends the streamed responses (NDJSON replays, SSE subscriptions) so that a graceful
    /// shutdown does not wait for them forever. Idempotent.
    pub fn begin_shutdown(&self) {
        self.inner.shutdown.send_replace(true);
    }

    /// Loads the consumer groups from the store and starts their background tasks (done
    /// lazily by the first group request otherwise).
    pub async fn start_groups(&self) -> Result<()> {
        self.inner.groups.start().await
    }

    /// Stops the consumer groups' background tasks and saves their checkpoints. Call before
    /// closing the store; group requests answer 503 afterwards. Idempotent.
    pub async fn stop_groups(&self) {
        self.inner.groups.shutdown().await
    }

    pub(crate) fn groups(&self) -> &Groups {
        &self.inner.groups
    }

    pub(crate) fn groups_window(&self) -> usize {
        self.inner.groups.options().window
    }

    /// The store served.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The hosted projections.
    pub(crate) fn projections(&self) -> &Arc<Projections> {
        &self.inner.projections
    }

    /// Stops every projection with a final checkpoint (graceful shutdown; blocking).
    pub fn stop_projections(&self) {
        self.inner.projections.shutdown();
    }

    /// The scavenger (`/admin/scavenge`, the schedule).
    pub(crate) fn scavenger(&self) -> &Scavenger {
        &self.inner.scavenger
    }

    /// Stops a running scavenge and joins its thread; none starts afterwards (shutdown, before
    /// closing the store; blocking).
    pub fn stop_scavenging(&self) {
        self.inner.scavenger.close();
    }

    pub(crate) fn auth(&self) -> &Auth {
        &self.inner.auth
    }

    pub(crate) fn limits(&self) -> &HttpLimits {
        &self.inner.limits
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub(crate) fn keepalive_interval(&self) -> Duration {
        self.inner.keepalive_interval
    }

    pub(crate) fn uptime(&self) -> Duration {
        self.inner.started.elapsed()
    }

    /// Resolves once [`App::begin_shutdown`] was called.
    pub(crate) async fn shutting_down(&self) {
        let mut rx = self.inner.shutdown.subscribe();
        // The sender lives in `self`, so `wait_for` only returns once the flag is set.
        let _ = rx.wait_for(|stop| *stop).await;
    }

    /// Runs a blocking store call on tokio's blocking pool and maps its error.
    pub(crate) async fn blocking<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> strata_store::Result<T> + Send + 'static,
    {
        let store = self.inner.store.clone();
        run_blocking("store task failed", move || f(&store))
            .await?
            .map_err(|e| self.store_error(e))
    }

    /// Runs a store read: inline on this async worker when it is `small` (a bounded lookup in
    /// mapped data) and inline reads have been fast, else on the blocking pool like
    /// [`App::blocking`] (see [`crate::read_placement`] for why and for the guard against page
    /// faults that go to the disk).
    pub(crate) async fn read<T, F>(&self, small: bool, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> strata_store::Result<T> + Send + 'static,
    {
        if small && read_placement::shared().inline() {
            let store = &self.inner.store;
            return read_placement::inline(|| f(store)).map_err(|e| self.store_error(e));
        }
        self.blocking(f).await
    }

    /// Maps a store error to its API error: corruption and I/O errors are 500, or 503
    /// `unavailable` once the store has turned read-only because of them.
    pub(crate) fn store_error(&self, e: strata_store::Error) -> Error {
        Error::from_store(e, &self.inner.store.health())
    }
}

/// Runs `f` on tokio's blocking pool (CPU work or blocking I/O that must not hold an async
/// worker). Should `f` panic, the answer is a 500 `internal` whose message starts with `what`.
pub(crate) async fn run_blocking<T, F>(what: &str, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("{what}: {e}")))
}

/// One entry of the route table.
pub(crate) struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub handler: MethodRouter<App>,
}

pub(crate) fn route<H, T>(method: &'static str, path: &'static str, handler: H) -> Route
where
    H: Handler<T, App>,
    T: 'static,
{
    let filter = match method {
        "POST" => MethodFilter::POST,
        "PUT" => MethodFilter::PUT,
        "DELETE" => MethodFilter::DELETE,
        // GET answers HEAD too.
        _ => MethodFilter::GET.or(MethodFilter::HEAD),
    };
    Route {
        method,
        path,
        handler: on(filter, handler),
    }
}

/// Every route the server answers; the projection routes come from their own module.
pub(crate) fn routes() -> Vec<Route> {
    let mut routes = vec![
        route("GET", "/health", ops::health),
        route("GET", "/info", ops::info),
        route("GET", "/metrics", ops::metrics),
        route("GET", "/openapi.json", openapi::serve),
        route("GET", "/streams", streams::list),
        route("GET", "/all", read::read_all),
        route("GET", "/streams/{stream}", read::read_stream),
        route("POST", "/streams/{stream}", append::append),
        route("DELETE", "/streams/{stream}", streams::delete),
        route("GET", "/streams/{stream}/metadata", streams::get_metadata),
        route("PUT", "/streams/{stream}/metadata", streams::put_metadata),
        route("GET", "/streams/{stream}/{revision}", read::read_event),
        route("GET", "/events/{id}/causes", causation::causes),
        route("GET", "/events/{id}/effects", causation::effects),
        route("GET", "/groups", groups::http::list),
        route("PUT", "/groups/{group}", groups::http::put),
        route("GET", "/groups/{group}", groups::http::get),
        route("DELETE", "/groups/{group}", groups::http::delete),
        route("POST", "/groups/{group}/poll", groups::http::poll),
        route("POST", "/groups/{group}/ack", groups::http::ack),
        route("POST", "/groups/{group}/nack", groups::http::nack),
        route("GET", "/groups/{group}/parked", groups::http::parked),
        route(
            "POST",
            "/groups/{group}/parked/replay",
            groups::http::replay,
        ),
    ];
    routes.extend(crate::projections::http::routes());
    routes.extend([
        route("POST", "/admin/scavenge", crate::scavenge::http::start),
        route("GET", "/admin/scavenge", crate::scavenge::http::status),
        route("DELETE", "/admin/scavenge", crate::scavenge::http::stop),
    ]);
    routes
}

/// `(method, path)` of every route.
pub(crate) fn route_table() -> Vec<(&'static str, &'static str)> {
    routes().into_iter().map(|r| (r.method, r.path)).collect()
}

/// Fallback for unknown paths: JSON 404 `not_found`.
async fn not_found(req: Request) -> Error {
    Error::NotFound(format!("no resource at {}", req.uri().path()))
}

/// Fallback for a known path with another method: JSON 405 (axum adds the `Allow` header).
async fn method_not_allowed(req: Request) -> Error {
    Error::MethodNotAllowed(format!(
        "{} is not allowed on {}",
        req.method(),
        req.uri().path()
    ))
}
