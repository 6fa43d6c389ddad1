//! Connections: the accept loop, the connection cap, per-connection timeouts, and JSON bodies
//! for the answers hyper sends on its own before a request could be parsed.
//!
//! - **Cap.** At most [`ConnectionLimits::max_connections`] connections are served at once: the
//!   accept loop takes a slot before it accepts, so connections over the cap wait in the
//!   kernel's listen backlog until one closes (the client's connect succeeds; its request is
//!   answered once a slot frees; once the backlog is full the kernel refuses or drops new
//!   attempts).
//! - **Header-read timeout.** A request head (request line and headers) must be complete within
//!   [`ConnectionLimits::header_read_timeout`] of the connection being accepted, or on a
//!   kept-alive connection of the first byte of that request; otherwise the connection is closed
//!   without an answer (slowloris).
//! - **Idle timeout.** A kept-alive connection with no request in flight and no byte of a next
//!   request is closed after [`ConnectionLimits::idle_timeout`].
//! - A request in flight has no deadline here: an SSE subscription, an NDJSON replay or a
//!   long poll lasts as long as its response does (and a request body as long as the handler
//!   reads it).
//! - **JSON for hyper's own answers.** hyper answers a request it cannot parse by itself, with
//!   an empty body: 400 (malformed), 414 (request target too long), 431 (head over
//!   [`MAX_HEAD_BYTES`] or more than [`MAX_HEADERS`] fields). The connection's I/O wrapper
//!   recognises exactly these bodiless answers as they are written and sends the API's JSON
//!   error shape instead (`invalid_request`, same status, `Connection: close`).
//!
//! Graceful shutdown ([`crate::App::begin_shutdown`]): the accept loop stops (the listener is
//! closed, new connections are refused), every connection finishes its request in flight and
//! closes, and [`serve`] returns once all connections are gone.
//!
//! **TLS** (when the server has a certificate, `crate::tls`): the accept loop only accepts;
//! the handshake runs in the connection's own task and counts against the header-read timeout
//! (a client that connects and never completes its ClientHello is dropped when the timeout
//! runs out, and the handshake plus the first request head must fit in it together). A client
//! that sends plain HTTP to the TLS port gets a JSON 400 (`invalid_request`, "this port
//! serves HTTPS") and the connection is closed. ALPN picks the protocol: `h2` is served as
//! HTTP/2, anything else as HTTP/1.1. Without TLS a connection is HTTP/1.1, or HTTP/2 with prior
//! knowledge (h2c) when its first bytes are HTTP/2's connection preface: the gRPC clients of
//! the KurrentDB protocol (`crate::grpc`) connect that way.
//!
//! **gRPC.** A request with `content-type: application/grpc...` goes to the gRPC services
//! (`crate::grpc`), every other request to the HTTP API's router.
//!
//! **HTTP/2** differs from HTTP/1.1 in these points:
//! - the cap counts connections, and one HTTP/2 connection carries up to 200 concurrent
//!   requests (streams; hyper's default);
//! - the header-read timeout covers the handshake and the first request only: HTTP/2 clients
//!   send frames of their own (PING, WINDOW_UPDATE, SETTINGS) between requests, so bytes do not
//!   start a new header timer; a connection with no request in flight is closed after the
//!   idle timeout whatever frames arrive;
//! - the request head limit is HPACK's header list size: [`MAX_HEAD_BYTES`] plus 32 bytes per
//!   field (answered by the h2 library with a bodiless 431), and a head over
//!   [`MAX_HEAD_BYTES`] or [`MAX_HEADERS`] fields as counted here gets the JSON 431;
//! - graceful shutdown sends GOAWAY and lets the requests in flight finish.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response};
use axum::Router;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify, Semaphore};
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::app::App;
use crate::config::ConnectionLimits;
use crate::grpc::{self, GrpcRouter};
use crate::tls::ALPN_H2;

/// Largest request head (request line and headers) in bytes: hyper's default read buffer,
/// set explicitly so that the 431 message can name it. Over it: 431.
pub(crate) const MAX_HEAD_BYTES: usize = 8192 + 4096 * 100;
/// Most header fields in one request (hyper's default). Over it: 431.
pub(crate) const MAX_HEADERS: usize = 100;
/// HTTP/2's limit on a request's header list (HPACK size: name + value + 32 per field).
const H2_MAX_HEADER_LIST_SIZE: u32 = (MAX_HEAD_BYTES + 32 * MAX_HEADERS) as u32;

/// Accepts connections on `listener` and serves `app` on them (over TLS when `tls` is given)
/// until [`App::begin_shutdown`]; then stops accepting and returns once every connection has
/// closed (module docs).
pub(crate) async fn serve(
    listener: TcpListener,
    app: App,
    limits: ConnectionLimits,
    tls: Option<TlsAcceptor>,
) {
    let router = app.router();
    let grpc = GrpcRouter::new(&app, listener.local_addr().ok());
    let slots = Arc::new(Semaphore::new(
        limits.max_connections.clamp(1, Semaphore::MAX_PERMITS),
    ));
    // Every connection task holds a receiver; `closed()` resolves once they are all gone.
    let (all_closed_tx, all_closed_rx) = watch::channel(());
    let stop_app = app.clone();
    let stop = async move { stop_app.shutting_down().await };
    tokio::pin!(stop);
    loop {
        let slot = tokio::select! {
            biased;
            () = &mut stop => break,
            slot = Arc::clone(&slots).acquire_owned() => slot,
        };
        let Ok(slot) = slot else {
            // The semaphore is never closed; should it be, stop accepting rather than spin.
            break;
        };
        let accepted = tokio::select! {
            biased;
            () = &mut stop => break,
            accepted = listener.accept() => accepted,
        };
        let accepted_at = Instant::now();
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                accept_error(e).await;
                continue;
            }
        };
        // Small SSE messages and responses must not wait for Nagle's algorithm.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
        let router = Routers {
            http: router.clone(),
            grpc: grpc.clone(),
        };
        let app = app.clone();
        let all_closed = all_closed_rx.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => {
                    serve_connection(tcp, Protocol::Plain, accepted_at, router, &app, limits).await;
                }
                Some(acceptor) => {
                    let deadline = accepted_at + limits.header_read_timeout;
                    if let Some(tls) = handshake(&acceptor, tcp, deadline, &app).await {
                        let protocol = match tls.get_ref().1.alpn_protocol() {
                            Some(ALPN_H2) => Protocol::Http2,
                            _ => Protocol::Http1,
                        };
                        serve_connection(tls, protocol, accepted_at, router, &app, limits).await;
                    }
                }
            }
            tracing::trace!(%peer, "connection closed");
            drop(slot);
            drop(all_closed);
        });
    }
    drop(listener);
    drop(all_closed_rx);
    all_closed_tx.closed().await;
}

/// Runs the TLS handshake on `tcp` until `deadline` (the connection's header-read deadline);
/// `None` when it failed, timed out or the server began shutting down (the connection is then
/// dropped). A first byte that cannot begin a TLS record but can begin an HTTP request is
/// answered with [`plain_http_refusal`] instead.
async fn handshake(
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
    deadline: Instant,
    app: &App,
) -> Option<TlsStream<TcpStream>> {
    let work = async {
        let mut first = [0u8; 1];
        let n = tcp.peek(&mut first).await?;
        // Every TLS connection starts with a handshake record (content type 22).
        if n == 1 && first[0].is_ascii_uppercase() {
            plain_http_refusal(tcp, deadline).await;
            return Ok(None);
        }
        acceptor.accept(tcp).await.map(Some)
    };
    tokio::select! {
        done = tokio::time::timeout_at(deadline, work) => match done {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "TLS handshake failed");
                None
            }
            Err(_) => {
                tracing::debug!("closing a connection: no TLS handshake within the header-read timeout");
                None
            }
        },
        () = app.shutting_down() => None,
    }
}

/// Answers a plain-HTTP request sent to the TLS port with a JSON 400 and closes the
/// connection; the request is read and discarded first (until `deadline` at most) so that
/// closing does not reset the connection before the client reads the answer.
async fn plain_http_refusal(mut tcp: TcpStream, deadline: Instant) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = serde_json::json!({
        "error": "invalid_request",
        "message": "this port serves HTTPS: the request was sent as plain HTTP (use an https:// URL)",
    })
    .to_string();
    let answer = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    );
    let exchange = async {
        // The head of the request, as far as it has arrived (it is not parsed).
        let mut buf = [0u8; 4096];
        let _ = tcp.read(&mut buf).await?;
        tcp.write_all(answer.as_bytes()).await?;
        tcp.shutdown().await?;
        // Drain until the client closes, so that unread bytes do not turn the close into a
        // reset.
        let mut drained = 0usize;
        while drained < (1 << 20) {
            match tcp.read(&mut buf).await? {
                0 => break,
                n => drained += n,
            }
        }
        io::Result::Ok(())
    };
    let _ = tokio::time::timeout_at(deadline, exchange).await;
}

/// What to do after `accept` failed: nothing for an error of that one connection; otherwise
/// (e.g. out of file descriptors) log it and pause for a second so that the loop does not
/// spin while the cause lasts.
async fn accept_error(e: io::Error) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accept failed; retrying in 1 s (is the open-files limit below --max-connections?)");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// The HTTP version a connection is served with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// HTTP/1.1 (TLS without ALPN `h2`).
    Http1,
    /// HTTP/2 (TLS with ALPN `h2`).
    Http2,
    /// Plain TCP: HTTP/1.1, or HTTP/2 with prior knowledge when the connection starts with
    /// HTTP/2's preface (told apart by its first bytes).
    Plain,
}

/// The first bytes of HTTP/2's connection preface (`PRI * HTTP/2.0...`): no HTTP/1.1 method is
/// `PRI`.
const H2_PREFACE_START: &[u8] = b"PRI ";

/// What a connection serves: the HTTP API's router and the gRPC services.
#[derive(Clone)]
pub(crate) struct Routers {
    /// The HTTP API.
    pub(crate) http: Router,
    /// The gRPC services (requests with a gRPC content type).
    pub(crate) grpc: GrpcRouter,
}

/// Serves HTTP on one connection, accepted at `accepted_at`, until it closes, the client is
/// too slow (header-read timeout) or idle too long (idle timeout), or the server shuts down
/// gracefully.
pub(crate) async fn serve_connection<I>(
    io: I,
    protocol: Protocol,
    accepted_at: Instant,
    router: Routers,
    app: &App,
    limits: ConnectionLimits,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new(accepted_at, protocol));
    let io = TokioIo::new(Watched {
        io,
        activity: Arc::clone(&activity),
        // hyper's bodiless automatic answers are HTTP/1 text; HTTP/2 frames are left alone.
        rewrites: protocol != Protocol::Http2,
        sniff: protocol == Protocol::Plain,
        rewrite: None,
    });
    let service = ConnService {
        router,
        activity: Arc::clone(&activity),
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder = match protocol {
        Protocol::Http1 => builder.http1_only(),
        Protocol::Http2 => builder.http2_only(),
        // hyper-util's auto builder reads the preface itself and picks the version.
        Protocol::Plain => builder,
    };
    builder
        .http1()
        // Timeouts are kept here (see `Activity`), not by hyper's own header timer, which
        // would also bound the idle time between requests.
        .header_read_timeout(None)
        .max_buf_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS);
    builder
        .http2()
        .timer(TokioTimer::new())
        // HPACK counts 32 bytes per field on top of name and value: this lets every head that
        // fits HTTP/1.1's limit through to the exact check of `oversized_head`.
        .max_header_list_size(H2_MAX_HEADER_LIST_SIZE);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let stop = app.shutting_down();
    tokio::pin!(stop);
    let mut stopping = false;
    loop {
        let deadline = activity.deadline(&limits);
        tokio::select! {
            served = conn.as_mut() => {
                if let Err(e) = served {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            () = sleep_until(deadline) => {
                if activity.deadline(&limits).is_some_and(|d| d <= Instant::now()) {
                    tracing::debug!(
                        reading_head = activity.reading_head(),
                        "closing a connection: header-read or idle timeout"
                    );
                    return;
                }
            }
            () = activity.changed.notified() => {}
            () = &mut stop, if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// What one connection is doing, for its timeouts: requests in flight, when it last became
/// idle, when the head of the next request started arriving. Times are milliseconds since
/// `epoch`, plus one (0 = unset).
struct Activity {
    epoch: Instant,
    /// HTTP/2: bytes between requests are frames of the protocol, not a request head. Set
    /// when the connection starts (TLS with ALPN `h2`), or by its first bytes (plain TCP).
    h2: AtomicBool,
    in_flight: AtomicUsize,
    /// When the connection last went idle: accepted, or the last response finished.
    idle_since: AtomicU64,
    /// When the first byte of the next request head arrived (0: none yet).
    head_since: AtomicU64,
    /// Woken when the deadline may have moved earlier or appeared.
    changed: Notify,
}

impl Activity {
    fn new(epoch: Instant, protocol: Protocol) -> Activity {
        Activity {
            epoch,
            h2: AtomicBool::new(protocol == Protocol::Http2),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(1),
            // A new connection is there to send a request: the header timeout runs at once.
            head_since: AtomicU64::new(1),
            changed: Notify::new(),
        }
    }

    /// `now` as a stamp.
    fn stamp(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.epoch).as_millis())
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1)
    }

    fn at(&self, stamp: u64) -> Instant {
        self.epoch + Duration::from_millis(stamp.saturating_sub(1))
    }

    /// The connection turned out to be HTTP/2 (prior knowledge on plain TCP).
    fn set_h2(&self) {
        self.h2.store(true, Ordering::Release);
    }

    fn reading_head(&self) -> bool {
        self.head_since.load(Ordering::Acquire) != 0
    }

    /// When the connection is to be closed unless something happens first; `None` while a
    /// request is in flight.
    fn deadline(&self, limits: &ConnectionLimits) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        match self.head_since.load(Ordering::Acquire) {
            0 => Some(self.at(self.idle_since.load(Ordering::Acquire)) + limits.idle_timeout),
            head => Some(self.at(head) + limits.header_read_timeout),
        }
    }

    /// Bytes arrived at `now`: with no request in flight, they start the next request's head
    /// (HTTP/1.1 only: module docs).
    fn bytes_read(&self, now: Instant) {
        if !self.h2.load(Ordering::Acquire)
            && self.in_flight.load(Ordering::Acquire) == 0
            && self
                .head_since
                .compare_exchange(0, self.stamp(now), Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.changed.notify_one();
        }
    }

    /// A request head was parsed and handed to the router: no deadline until its response is
    /// done.
    fn request_started(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_since.store(0, Ordering::Release);
        InFlight(Arc::clone(self))
    }

    /// A response finished (or was dropped) at `now`: idle from then on if it was the last.
    fn request_finished(&self, now: Instant) {
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle_since.store(self.stamp(now), Ordering::Release);
            self.head_since.store(0, Ordering::Release);
            self.changed.notify_one();
        }
    }
}

/// One request in flight, from its parsed head until its response body is finished or
/// dropped.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_finished(Instant::now());
    }
}

/// The router as a hyper service, marking each request in flight until its response body is
/// done.
#[derive(Clone)]
struct ConnService {
    router: Routers,
    activity: Arc<Activity>,
}

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = Response<Tracked>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Tracked>, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let in_flight = self.activity.request_started();
        if let Some(response) = oversized_head(&request)
            .map(head_too_large)
            .or_else(|| too_many_fields(&request))
        {
            let response = response.map(|body| Tracked {
                body,
                _in_flight: in_flight,
            });
            return Box::pin(std::future::ready(Ok(response)));
        }
        let request = request.map(Body::new);
        if grpc::is_grpc(&request) {
            let response = self.router.grpc.call(request);
            return Box::pin(async move {
                Ok(response.await.map(|body| Tracked {
                    body,
                    _in_flight: in_flight,
                }))
            });
        }
        let response = tower::Service::call(&mut self.router.http.clone(), request);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| Tracked {
                body,
                _in_flight: in_flight,
            }))
        })
    }
}

/// The size of `request`'s head as sent (request line and header fields, give or take
/// optional whitespace) when it is over [`MAX_HEAD_BYTES`]. hyper refuses a head that does not
/// fit its read buffer, but that buffer may grow past its nominal maximum before a head is
/// complete, so the limit is checked here too, exactly.
fn oversized_head<B>(request: &Request<B>) -> Option<usize> {
    let target = request
        .uri()
        .path_and_query()
        .map_or_else(|| request.uri().to_string().len(), |p| p.as_str().len());
    // "METHOD target HTTP/1.1\r\n", "name: value\r\n" each, "\r\n".
    let mut size = request.method().as_str().len() + 1 + target + 11 + 2;
    for (name, value) in request.headers() {
        size += name.as_str().len() + 2 + value.len() + 2;
    }
    (size > MAX_HEAD_BYTES).then_some(size)
}

/// A 431 for a request with more than [`MAX_HEADERS`] header fields (hyper enforces this for
/// HTTP/1.1 before the request gets here; for HTTP/2 it is checked here).
fn too_many_fields<B>(request: &Request<B>) -> Option<Response<Body>> {
    let fields = request.headers().len();
    (fields > MAX_HEADERS).then(|| {
        head_too_large_because(format!(
            "the request has {fields} header fields, over the limit of {MAX_HEADERS}"
        ))
    })
}

/// The 431 of [`oversized_head`], closing the connection like hyper's own.
fn head_too_large(size: usize) -> Response<Body> {
    head_too_large_because(format!(
        "the request head is too large: {size} bytes, over the limit of {MAX_HEAD_BYTES} bytes \
         of request line and headers"
    ))
}

/// A 431 `invalid_request` with `message`, closing the connection.
fn head_too_large_because(message: String) -> Response<Body> {
    let body = serde_json::json!({
        "error": "invalid_request",
        "message": message,
    })
    .to_string();
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = axum::http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
    let headers = response.headers_mut();
    headers.insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    headers.insert(
        axum::http::header::CONNECTION,
        axum::http::HeaderValue::from_static("close"),
    );
    response
}

/// A response body that keeps its request in flight until it is finished or dropped.
struct Tracked {
    body: Body,
    _in_flight: InFlight,
}

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The connection's I/O: reports bytes read to [`Activity`], and replaces hyper's bodiless
/// automatic error answers with JSON ones ([`json_for_automatic_answer`]).
struct Watched<I> {
    io: I,
    activity: Arc<Activity>,
    /// Whether writes are checked for hyper's automatic answers (HTTP/1.1 only).
    rewrites: bool,
    /// Plain TCP before the first bytes arrived: they tell HTTP/2 (prior knowledge) from
    /// HTTP/1.1.
    sniff: bool,
    /// A replacement being written: its bytes, how many are written, and how many bytes of
    /// hyper's original answer to report as written once it is done.
    rewrite: Option<(Vec<u8>, usize, usize)>,
}

impl<I: AsyncWrite + Unpin> Watched<I> {
    /// Writes the pending replacement; `Ready(Ok(n))` with the original answer's length once
    /// all of it is written.
    fn poll_rewrite(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        while let Some((bytes, written, _)) = self.rewrite.as_mut() {
            if *written == bytes.len() {
                let claimed = self.rewrite.take().map_or(0, |(_, _, claimed)| claimed);
                return Poll::Ready(Ok(claimed));
            }
            match Pin::new(&mut self.io).poll_write(cx, &bytes[*written..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => *written += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(0))
    }

    /// Starts a rewrite if `buf` begins with one of hyper's automatic answers.
    fn check(&mut self, buf: &[u8]) {
        if self.rewrites && self.rewrite.is_none() {
            if let Some((claimed, replacement)) = json_for_automatic_answer(buf) {
                self.rewrite = Some((replacement, 0, claimed));
            }
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let first = &buf.filled()[before..];
            // Only the timeout bookkeeping and the rewrites depend on this (hyper-util tells the
            // versions apart itself), so a preface split before its fourth byte may be missed.
            if self.sniff && first.len() >= H2_PREFACE_START.len() {
                self.sniff = false;
                if first.starts_with(H2_PREFACE_START) {
                    self.activity.set_h2();
                    self.rewrites = false;
                }
            }
            self.activity.bytes_read(Instant::now());
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check(buf);
        if self.rewrite.is_some() {
            return self.poll_rewrite(cx);
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Some(first) = bufs.iter().find(|b| !b.is_empty()) {
            self.check(first);
        }
        if self.rewrite.is_some() {
            return self.poll_rewrite(cx);
        }
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// If `buf` starts with one of hyper's automatic error answers (a complete `HTTP/1.1 400`,
/// `414` or `431` head with `content-length: 0` and no `content-type`: the router never
/// answers these statuses without a JSON body), returns the length of that head and the
/// answer to send instead: the same status line and headers, with the API's JSON error body.
fn json_for_automatic_answer(buf: &[u8]) -> Option<(usize, Vec<u8>)> {
    let status = buf.strip_prefix(b"HTTP/1.1 ")?.get(..3)?;
    let message = match status {
        b"400" => {
            "malformed HTTP request: the request line or a header could not be parsed".to_owned()
        }
        b"414" => "the request target (path and query) is too long".to_owned(),
        b"431" => format!(
            "the request head is too large: at most {MAX_HEAD_BYTES} bytes of request line and \
             headers and at most {MAX_HEADERS} header fields"
        ),
        _ => return None,
    };
    let head_len = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = &buf[..head_len];
    let lines: Vec<&[u8]> = head[..head_len - 4].split(|&b| b == b'\n').collect();
    let header = |line: &[u8], name: &[u8]| {
        line.len() > name.len() && line[..name.len()].eq_ignore_ascii_case(name)
    };
    let bodiless = lines
        .iter()
        .any(|l| header(l, b"content-length:") && l[15..].trim_ascii() == b"0");
    let typed = lines.iter().any(|l| header(l, b"content-type:"));
    if !bodiless || typed {
        return None;
    }
    let body = serde_json::json!({"error": "invalid_request", "message": message}).to_string();
    let mut out = Vec::with_capacity(head_len + body.len() + 64);
    for (i, line) in lines.iter().enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if i > 0 && header(line, b"content-length:") {
            continue;
        }
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
        if i == 0 {
            out.extend_from_slice(b"content-type: application/json\r\n");
            out.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
        }
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.as_bytes());
    Some((head_len, out))
}

#[cfg(test)]
mod tests;
