//! The KurrentDB (EventStoreDB) client protocol: gRPC services on the HTTP API's listener, so
//! that the official KurrentDB client libraries work against Strata unchanged. One more way into
//! the same store: every service calls the same [`App`] and [`strata_store::Store`] the HTTP
//! handlers call (docs/kurrentdb-compatibility.md lists what maps and how).
//!
//! - **Routing.** `conn` hands every request whose `content-type` starts with
//!   `application/grpc` to [`GrpcRouter::call`]; the router picks the mounted service by the
//!   path's first segment (`/event_store.client.streams.Streams/Read`). An unknown service
//!   answers `UNIMPLEMENTED` at once (so does an unknown method of a known service, answered by
//!   tonic's generated code).
//! - **Mounting.** [`mounted`] is the one list of services. Each service lives in its own
//!   module and is mounted with [`Mounted::new`]; ServerFeatures (`features`) lists the methods of
//!   exactly the mounted services, read from the compiled descriptor set, so a service added to
//!   the list is advertised without more code.
//! - **Code generation.** `build.rs` compiles every `.proto` file of `proto/` (protox, no
//!   `protoc`); [`proto`] holds the generated messages and server traits, by package.
//! - **Shared helpers** for the services: [`status`] (store errors → `tonic::Status` with the
//!   `exception` metadata the clients match), [`auth`] (credentials → [`crate::auth::Principal`]),
//!   [`convert`] (ids, positions, recorded events → `ReadResp`), [`channel`] (server-streaming
//!   answers fed by a bounded channel).

// tonic's services answer `Result<_, tonic::Status>` (176 bytes); boxing it at every helper
// would only move the cost to every call site.
#![allow(clippy::result_large_err)]

pub(crate) mod auth;
pub(crate) mod channel;
pub(crate) mod convert;
mod features;
mod gossip;
mod persistent;
mod projections;
pub(crate) mod status;
mod streams;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, Response};
use tonic::server::NamedService;

use crate::app::App;

/// The code generated from `proto/*.proto`, one module per package
/// (`proto::event_store::client::streams`, ...).
#[allow(
    dead_code,
    missing_docs,
    unreachable_pub,
    clippy::all,
    clippy::pedantic,
    clippy::doc_lazy_continuation,
    clippy::large_enum_variant
)]
pub(crate) mod proto {
    include!(concat!(env!("OUT_DIR"), "/grpc_protos.rs"));

    /// The encoded descriptor set of every compiled `.proto` file (ServerFeatures reads the
    /// method names of the mounted services from it).
    pub(crate) const DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/grpc_descriptor.bin"));
}

/// The services served, in the order ServerFeatures lists them (ServerFeatures itself is
/// added last by [`GrpcRouter::new`]).
fn mounted(app: &App) -> Vec<Mounted> {
    vec![
        Mounted::new(streams::server(app)),
        Mounted::new(gossip::server(app)).open_to_all(),
        Mounted::new(persistent::PersistentService::server(app.clone()))
            .with_features(persistent::FEATURES),
        Mounted::new(projections::ProjectionsService::server(app.clone())),
    ]
}

/// The `host:port` a call was addressed to (`:authority`, or `Host`; the listener's address
/// without either), in the extensions of every call.
#[derive(Clone, Debug)]
pub(crate) struct CallAuthority(pub(crate) String);

/// Features of a service's methods for ServerFeatures: `(method, features)`, method names as
/// in the `.proto` file or in lower case.
pub(crate) type MethodFeatures = &'static [(&'static str, &'static [&'static str])];

/// Whether `request` is a gRPC call: `content-type: application/grpc` (or `+proto` & co).
pub(crate) fn is_grpc<B>(request: &Request<B>) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// A boxed call of one mounted service.
type Call = Pin<Box<dyn Future<Output = Response<Body>> + Send>>;
/// One mounted service as a function of the request.
type Handler = Arc<dyn Fn(Request<Body>) -> Call + Send + Sync>;

/// A service on the router: its full gRPC name (`event_store.client.streams.Streams`) and how
/// to call it.
pub(crate) struct Mounted {
    name: &'static str,
    handler: Handler,
    /// Served without credentials (Gossip, ServerFeatures).
    open: bool,
    features: MethodFeatures,
}

impl Mounted {
    /// Mounts a tonic-generated server (`StreamsServer::new(...)` and the like).
    pub(crate) fn new<S>(service: S) -> Mounted
    where
        S: tower::Service<
                Request<Body>,
                Response = Response<tonic::body::Body>,
                Error = Infallible,
            > + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        let handler: Handler = Arc::new(move |request| {
            let mut service = service.clone();
            Box::pin(async move {
                // Generated servers are always ready; `call` alone is enough.
                match tower::Service::call(&mut service, request).await {
                    Ok(response) => response.map(Body::new),
                    Err(never) => match never {},
                }
            })
        });
        Mounted {
            name: S::NAME,
            handler,
            open: false,
            features: &[],
        }
    }

    /// Served without credentials even when auth is on.
    pub(crate) fn open_to_all(mut self) -> Mounted {
        self.open = true;
        self
    }

    /// The features ServerFeatures lists for some of this service's methods (e.g. `create`
    /// with `["stream", "all"]`).
    #[allow(dead_code)] // For services with features (persistent subscriptions).
    pub(crate) fn with_features(mut self, features: MethodFeatures) -> Mounted {
        self.features = features;
        self
    }
}

/// The gRPC services of the listener. Cheap to clone.
#[derive(Clone)]
pub(crate) struct GrpcRouter {
    app: App,
    services: Arc<[Mounted]>,
    /// The listener's address, the [`CallAuthority`] of calls that name none.
    local: Arc<str>,
}

impl GrpcRouter {
    /// Every service of [`mounted`], plus ServerFeatures listing them (itself included), for
    /// the listener at `local`.
    pub(crate) fn new(app: &App, local: Option<std::net::SocketAddr>) -> GrpcRouter {
        let mut services = mounted(app);
        let mut listed: Vec<(&'static str, MethodFeatures)> =
            services.iter().map(|s| (s.name, s.features)).collect();
        listed.push((features::SERVICE_NAME, &[]));
        services.push(Mounted::new(features::server(app, &listed)).open_to_all());
        GrpcRouter {
            app: app.clone(),
            services: services.into(),
            local: local.map_or_else(|| "127.0.0.1:2113".into(), |a| a.to_string().into()),
        }
    }

    /// Answers one gRPC request: the mounted service named by the path (after authentication,
    /// unless it is open to all), or `UNIMPLEMENTED`.
    pub(crate) fn call(&self, mut request: Request<Body>) -> Call {
        let authority = request
            .uri()
            .authority()
            .map(|a| a.as_str().to_owned())
            .or_else(|| {
                request
                    .headers()
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| self.local.to_string());
        request.extensions_mut().insert(CallAuthority(authority));
        let service = request
            .uri()
            .path()
            .strip_prefix('/')
            .and_then(|p| p.split_once('/'))
            .map(|(service, _)| service);
        match service.and_then(|name| self.services.iter().find(|s| s.name == name)) {
            Some(mounted) if mounted.open => (mounted.handler)(request),
            Some(mounted) => match auth::authenticate(self.app.auth(), request.headers()) {
                Ok(principal) => {
                    request.extensions_mut().insert(principal);
                    (mounted.handler)(request)
                }
                Err(status) => Box::pin(std::future::ready(status.into_http::<Body>())),
            },
            None => {
                let message = format!(
                    "unknown gRPC service {:?}: Strata serves {}",
                    service.unwrap_or(""),
                    self.services
                        .iter()
                        .map(|s| s.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                let response = tonic::Status::unimplemented(message).into_http::<Body>();
                Box::pin(std::future::ready(response))
            }
        }
    }
}
