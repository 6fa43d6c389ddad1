//! The server's life: bind, open the store, serve, shut down gracefully, close the store.
//!
//! Connections are accepted and served by `conn` (connection cap, header-read and idle
//! timeouts: [`Config::connections`]; HTTPS with HTTP/2 when [`Config::tls`] is set).
//!
//! Shutdown, when the signal future resolves: stop accepting connections; end streamed
//! responses (SSE subscriptions, NDJSON replays) at a message boundary; let in-flight requests
//! — appends above all — finish (at most [`Config::shutdown_grace`]; long polls of consumer
//! groups return at once); then stop the consumer groups, saving their checkpoints; then stop
//! the projections, each writing a final checkpoint (a panic there makes `run` fail, so the
//! process exits non-zero); then stop a running scavenge (joining its thread); then close the
//! store — always, even after a failure above — which waits for queued appends and syncs the
//! log.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use strata_store::Store;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::app::App;
use crate::config::{Config, ConnectionLimits};
use crate::conn;
use crate::error::{Error, Result};
use crate::tls;

/// A bound server with its store open, ready to [`Server::run`].
pub struct Server {
    listener: TcpListener,
    local_addr: SocketAddr,
    app: App,
    shutdown_grace: Duration,
    connections: ConnectionLimits,
    tls: Option<TlsAcceptor>,
    /// Bytes/s of the background history check [`Server::run`] starts (`None`: none).
    check_history: Option<u64>,
}

impl Server {
    /// Resolves and checks the listen address (a non-loopback address needs auth and TLS, or
    /// `insecure`), reads the TLS certificate and key, binds the address, and opens the store
    /// (on the blocking pool: recovery may rebuild index files).
    pub async fn bind(config: Config) -> Result<Server> {
        let bind_error = |source| Error::Bind {
            addr: config.listen.clone(),
            source,
        };
        let addr = tokio::net::lookup_host(config.listen.as_str())
            .await
            .map_err(bind_error)?
            .next()
            .ok_or_else(|| {
                bind_error(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "the address resolves to nothing",
                ))
            })?;
        let auth = config.auth.is_enabled();
        let tls = config.tls.is_some();
        let allowed = addr.ip().is_loopback() || (auth && tls) || config.insecure;
        if !allowed {
            return Err(Error::InsecureListen { addr, auth, tls });
        }
        // Bad certificate or key files fail the start before anything is bound or opened.
        let acceptor = config.tls.as_ref().map(tls::acceptor).transpose()?;
        let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
        let local_addr = listener.local_addr().map_err(bind_error)?;
        let dir = config.data_dir.clone();
        let options = config.store_options();
        let store = tokio::task::spawn_blocking(move || Store::open(dir, options))
            .await
            .map_err(|e| Error::Internal(format!("opening the store failed: {e}")))?
            .map_err(Error::Store)?;
        tracing::info!(
            addr = %local_addr,
            data_dir = %config.data_dir.display(),
            next_position = store.next_position(),
            damaged_ranges = store.damage().len(),
            auth = config.auth.is_enabled(),
            tls,
            "store open"
        );
        let app = App::new(store, &config);
        // Consumer groups resume at once (feeding their windows, saving checkpoints); if their
        // state cannot be read now, group requests retry and report the error.
        if let Err(e) = app.start_groups().await {
            tracing::warn!(error = %e, "consumer groups could not be loaded");
        }
        Ok(Server {
            listener,
            local_addr,
            app,
            shutdown_grace: config.shutdown_grace,
            connections: config.connections,
            tls: acceptor,
            check_history: config.check_history.filter(|&r| r > 0),
        })
    }

    /// Whether the server speaks HTTPS ([`Config::tls`]).
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The base URL of the bound address: `https://ADDR` with TLS, `http://ADDR` without.
    pub fn url(&self) -> String {
        let scheme = if self.is_tls() { "https" } else { "http" };
        format!("{scheme}://{}", self.local_addr)
    }

    /// The address actually bound (with the real port when the configured one was 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The handlers' state (and through it the store).
    pub fn app(&self) -> &App {
        &self.app
    }

    /// Serves until `shutdown` resolves, then shuts down gracefully (module docs) and closes
    /// the store. `Ok` means everything acknowledged is durable.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<()> {
        let Server {
            listener,
            app,
            shutdown_grace,
            connections,
            tls,
            check_history,
            ..
        } = self;
        let history_check = check_history.and_then(|rate| HistoryCheck::spawn(app.store(), rate));
        let scavenge_schedule = app
            .scavenger()
            .interval()
            .map(|every| tokio::spawn(crate::scavenge::schedule(app.scavenger().clone(), every)));
        let signal_app = app.clone();
        let signal = tokio::spawn(async move {
            shutdown.await;
            tracing::info!("shutting down: finishing in-flight requests");
            signal_app.begin_shutdown();
        });
        // Returns once shutdown began and every connection has closed.
        let serving = conn::serve(listener, app.clone(), connections, tls);
        let grace_app = app.clone();
        let grace = async move {
            grace_app.shutting_down().await;
            tokio::time::sleep(shutdown_grace).await;
        };
        let served: Result<()> = tokio::select! {
            () = serving => Ok(()),
            () = grace => {
                tracing::warn!(?shutdown_grace, "connections still open after the grace period; closing anyway");
                Ok(())
            }
        };
        signal.abort();
        // Consumer groups: stop their tasks and save their checkpoints before the store closes.
        app.stop_groups().await;
        // Projections checkpoint before the store closes.
        let projections_app = app.clone();
        let stopped = on_blocking_pool("stopping the projections", move || {
            projections_app.stop_projections()
        })
        .await;
        if let Some(schedule) = scavenge_schedule {
            schedule.abort();
        }
        // A running scavenge stops (between two chunks) and its thread ends before the store
        // closes; logged when it fails, the store closes regardless.
        let scavenge_app = app.clone();
        let _ = on_blocking_pool("stopping the scavenge", move || {
            scavenge_app.stop_scavenging()
        })
        .await;
        if let Some(check) = history_check {
            // Logged when it fails; the store closes regardless.
            let _ = on_blocking_pool("stopping the history check", move || check.stop()).await;
        }
        // The store closes even when that failed: acknowledged appends must be synced.
        let store = app.store().clone();
        let closed = tokio::task::spawn_blocking(move || store.close())
            .await
            .map_err(|e| Error::Internal(format!("closing the store failed: {e}")))?
            .map_err(Error::Store);
        match (&served, &stopped, &closed) {
            (Ok(()), Ok(()), Ok(())) => tracing::info!("store closed; bye"),
            _ => tracing::error!(?served, ?stopped, ?closed, "shutdown was not clean"),
        }
        served.and(stopped).and(closed)
    }
}

/// Runs a blocking shutdown step on tokio's blocking pool and waits for it. A panic in the
/// step (or its cancellation) is logged and returned as [`Error::Internal`], so that the
/// shutdown is reported as not clean and the process exits non-zero.
async fn on_blocking_pool(what: &'static str, step: impl FnOnce() + Send + 'static) -> Result<()> {
    tokio::task::spawn_blocking(step).await.map_err(|e| {
        tracing::error!(error = %e, "{what} failed");
        Error::Internal(format!("{what} failed: {e}"))
    })
}

/// Binds per `config` and serves until `shutdown` resolves ([`Server::bind`] + [`Server::run`]).
pub async fn serve(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    Server::bind(config).await?.run(shutdown).await
}

/// The background check of the sealed segments ([`strata_store::Store::check_sealed`]) on a
/// thread of its own, at most `rate` bytes/s; damage it finds is recorded by the store (and
/// logged through `Options::on_damage`). [`Server::run`] starts it and stops it (joining the
/// thread, which holds a handle of the store) before closing the store.
struct HistoryCheck {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl HistoryCheck {
    fn spawn(store: &strata_store::Store, rate: u64) -> Option<HistoryCheck> {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (store, flag) = (store.clone(), stop.clone());
        let spawned = std::thread::Builder::new()
            .name("strata-check".into())
            .spawn(move || {
                let started = std::time::Instant::now();
                match store.check_sealed(Some(rate), &flag) {
                    Ok(r) if r.stopped => {}
                    Ok(r) => tracing::info!(
                        segments = r.segments,
                        bytes = r.bytes,
                        damage_found = r.damage_found,
                        seconds = started.elapsed().as_secs_f64(),
                        "history check done"
                    ),
                    Err(e) => tracing::warn!(error = %e, "history check failed"),
                }
            });
        match spawned {
            Ok(thread) => Some(HistoryCheck { stop, thread }),
            Err(e) => {
                tracing::warn!(error = %e, "history check not started");
                None
            }
        }
    }

    /// Stops the check and waits for its thread (a slice of at most a few MiB).
    fn stop(self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        if self.thread.join().is_err() {
            tracing::error!("the history check panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_shutdown_step_is_an_error() {
        assert!(on_blocking_pool("a step", || {}).await.is_ok());
        let failed = on_blocking_pool("a step", || panic!("boom")).await;
        match failed {
            Err(Error::Internal(message)) => assert!(message.contains("a step"), "{message}"),
            other => panic!("expected an internal error, got {other:?}"),
        }
    }
}
