//! The HTTP client of the generator: [`Target`] (where the load goes) and [`Conn`] (one
//! keep-alive connection).
//!
//! A minimal HTTP/1.1 client over tokio's `TcpStream` ([`Conn`]), not hyper or ureq. The load
//! generator shares the machine's two cores with the server it measures, so every cycle it
//! spends is taken from the server: requests are pre-rendered byte strings written with one
//! `write`, responses are parsed in place in one reusable buffer (status, `Content-Length`,
//! `Transfer-Encoding: chunked` — all this server ever sends), and each client task owns one
//! keep-alive connection for the whole run, so there is no pool, no header map and no
//! allocation per request. hyper's client (via `hyper-util`) would bring those costs, and ureq
//! (the client of the `strata` commands) is blocking: 64 clients would be 64 threads, and their
//! context switches would be measured instead of the server. The price is ~200 lines that understand only what they need to.
//!
//! `https://` servers are reached through rustls ([`Stream::Tls`]: tokio-rustls, `ring`,
//! ALPN `http/1.1`), trusting the CA certificates of `--ca-cert`, or without it Mozilla's roots
//! compiled in (webpki-roots: nothing is looked up on the machine or the network). Each
//! connection does one TLS handshake when it opens; the scenarios keep their connections for
//! the whole run, so the handshake cost is paid once per client.

use std::fmt::Write as _;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::error::{Error, Result};

/// Where the load goes: the one address `--server` resolved to.
pub(crate) struct Target {
    pub(crate) addr: SocketAddr,
    /// `host:port` as given, for the `Host` header.
    pub(crate) authority: String,
    /// The URL's path prefix (no trailing `/`), usually empty.
    pub(crate) base: String,
    /// The `Authorization` header line (with CRLF), or empty.
    pub(crate) auth_line: String,
    /// For an `https://` server: the TLS client and the name the certificate must carry.
    pub(crate) tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl Target {
    /// Parses `http://host[:port][/prefix]` or `https://...` and resolves it once; for
    /// `https://`, trusts the certificates of the PEM file `ca_cert`, or Mozilla's roots.
    pub(crate) async fn resolve(
        url: &str,
        token: Option<&str>,
        ca_cert: Option<&Path>,
    ) -> Result<Target> {
        let (rest, tls, default_port) = if let Some(rest) = url.strip_prefix("http://") {
            (rest, false, 80)
        } else if let Some(rest) = url.strip_prefix("https://") {
            (rest, true, 443)
        } else {
            return Err(Error::Usage(format!(
                "--server must be an http:// or https:// URL: {url:?}"
            )));
        };
        if ca_cert.is_some() && !tls {
            return Err(Error::Usage(
                "--ca-cert is for https:// servers only".into(),
            ));
        }
        let (authority, base) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.is_empty() || authority.contains('@') {
            return Err(Error::Usage(format!("bad --server URL {url:?}")));
        }
        let port = authority.rsplit_once(':').filter(|(h, p)| {
            !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(':')
        });
        let with_port = if port.is_some() {
            authority.to_owned()
        } else {
            format!("{authority}:{default_port}")
        };
        let tls = if tls {
            let host = port.map_or(authority, |(h, _)| h);
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let name = ServerName::try_from(host.to_owned())
                .map_err(|e| Error::Usage(format!("bad host in --server {url:?}: {e}")))?;
            Some((connector(ca_cert)?, name))
        } else {
            None
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
            tls,
        })
    }

    /// A complete request: request line, `Host`, auth, `extra` header lines (each ending in
    /// CRLF), and for a body `Content-Type: application/json` and `Content-Length`.
    pub(crate) fn request(
        &self,
        method: &str,
        path: &str,
        extra: &str,
        body: Option<&[u8]>,
    ) -> Vec<u8> {
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

    /// A new connection (with its TLS handshake done for an `https://` server).
    pub(crate) async fn connect(&self) -> Result<Conn<Stream>> {
        let tcp = TcpStream::connect(self.addr).await?;
        // Requests are written whole; do not let Nagle hold back the next one.
        tcp.set_nodelay(true)?;
        let stream = match &self.tls {
            None => Stream::Plain(tcp),
            Some((connector, name)) => {
                Stream::Tls(Box::new(connector.connect(name.clone(), tcp).await?))
            }
        };
        Ok(Conn::new(stream))
    }

    /// `GET path` as JSON (on a connection of its own).
    pub(crate) async fn get_json(&self, path: &str) -> Result<serde_json::Value> {
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
    pub(crate) async fn counters(&self) -> Option<Counters> {
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

/// The TLS client: rustls on `ring`, ALPN `http/1.1`, trusting `ca_cert`'s certificates or
/// Mozilla's roots.
fn connector(ca_cert: Option<&Path>) -> Result<TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_cert {
        Some(path) => {
            let bad = |what: String| Error::Usage(format!("--ca-cert {}: {what}", path.display()));
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| bad(e.to_string()))?;
            if certs.is_empty() {
                return Err(bad(
                    "no certificate in it (expected PEM `CERTIFICATE` blocks)".into(),
                ));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| bad(e.to_string()))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Usage(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

/// A connection's byte stream: plain TCP or TLS over TCP.
pub(crate) enum Stream {
    /// `http://`.
    Plain(TcpStream),
    /// `https://` (boxed: the TLS state is large).
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Store counters from `/metrics`, to relate a run to group commit and fsync latency.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Counters {
    pub(crate) appends: f64,
    pub(crate) commits: f64,
    pub(crate) fsyncs: f64,
    pub(crate) fsync_seconds: f64,
}

impl Counters {
    /// (appends per group commit, fsyncs per append, mean fsync ms) between two snapshots.
    pub(crate) fn between(
        before: Option<Counters>,
        after: Option<Counters>,
    ) -> Option<(f64, f64, f64)> {
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
pub(crate) fn task_failed(what: &str, e: tokio::task::JoinError) -> Error {
    Error::Io(io::Error::other(format!("{what} failed: {e}")))
}

/// Awaits every task: the results of those that succeeded, and the first failure (an error a
/// task returned, or a task that panicked or was cancelled: `what` names the tasks).
pub(crate) async fn join_all<T>(
    tasks: Vec<tokio::task::JoinHandle<Result<T>>>,
    what: &str,
) -> (Vec<T>, Option<Error>) {
    let mut results = Vec::with_capacity(tasks.len());
    let mut failure = None;
    for t in tasks {
        match t.await {
            Ok(Ok(r)) => results.push(r),
            Ok(Err(e)) => failure = failure.or(Some(e)),
            Err(e) => failure = failure.or(Some(task_failed(what, e))),
        }
    }
    (results, failure)
}

pub(crate) fn http_error(status: u16, body: &[u8]) -> Error {
    Error::Http {
        status,
        message: String::from_utf8_lossy(body).trim().to_owned(),
    }
}

/// How a response body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BodyKind {
    Length(usize),
    Chunked,
}

/// A parsed response head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Head {
    pub(crate) status: u16,
    pub(crate) body: BodyKind,
}

/// One keep-alive HTTP/1.1 connection with its read buffer (module docs: why hand-written).
pub(crate) struct Conn<S> {
    pub(crate) io: S,
    pub(crate) buf: Vec<u8>,
    /// `buf[start..end]` is received and not yet consumed.
    pub(crate) start: usize,
    pub(crate) end: usize,
}

pub(crate) fn bad_response(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("bad HTTP response: {what}"),
    )
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    pub(crate) fn new(io: S) -> Self {
        Conn {
            io,
            buf: vec![0; 64 * 1024],
            start: 0,
            end: 0,
        }
    }

    pub(crate) async fn send(&mut self, request: &[u8]) -> io::Result<()> {
        self.io.write_all(request).await
    }

    /// Reads more bytes into the buffer (compacting or growing it as needed).
    pub(crate) async fn fill(&mut self) -> io::Result<()> {
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
    pub(crate) async fn line(&mut self) -> io::Result<std::ops::Range<usize>> {
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
    pub(crate) async fn head(&mut self) -> io::Result<Head> {
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
    pub(crate) async fn take(
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
    pub(crate) async fn body(
        &mut self,
        head: Head,
        mut sink: impl FnMut(&[u8]) -> bool,
    ) -> io::Result<bool> {
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
    pub(crate) async fn exchange(&mut self, request: &[u8]) -> io::Result<(u16, Vec<u8>)> {
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

    /// Sends `request`; the whole body of an answer whose status `ok` accepts, any other answer
    /// an [`Error::Http`].
    pub(crate) async fn call(
        &mut self,
        request: &[u8],
        ok: impl Fn(u16) -> bool,
    ) -> Result<Vec<u8>> {
        let (status, body) = self.exchange(request).await?;
        if !ok(status) {
            return Err(http_error(status, &body));
        }
        Ok(body)
    }

    /// Appends one JSON event (`body`) to `stream`; the `201` answer's body, any other status
    /// an error (the fixed-rate publishers).
    pub(crate) async fn append_one(
        &mut self,
        target: &Target,
        stream: &str,
        body: &str,
    ) -> Result<Vec<u8>> {
        let request = target.request(
            "POST",
            &format!("/streams/{stream}"),
            "",
            Some(body.as_bytes()),
        );
        self.call(&request, |status| status == 201).await
    }
}

pub(crate) fn parse_status(line: &[u8]) -> io::Result<u16> {
    let rest = line
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| line.strip_prefix(b"HTTP/1.0 "))
        .ok_or_else(|| bad_response("not HTTP/1.x"))?;
    rest.get(..3)
        .and_then(parse_decimal)
        .and_then(|s| u16::try_from(s).ok())
        .ok_or_else(|| bad_response("status code"))
}

pub(crate) fn parse_decimal(s: &[u8]) -> Option<usize> {
    if s.is_empty() || s.len() > 18 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0, |n, &b| n * 10 + usize::from(b - b'0')))
}

pub(crate) fn parse_hex(s: &[u8]) -> Option<usize> {
    if s.is_empty() || s.len() > 15 {
        return None;
    }
    s.iter().try_fold(0usize, |n, &b| {
        let d = (b as char).to_digit(16)?;
        Some(n * 16 + d as usize)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(parse_hex(b"1aF"), Some(0x1af));
        assert_eq!(parse_hex(b"x"), None);
        assert_eq!(parse_decimal(b"0042"), Some(42));
        assert_eq!(parse_status(b"HTTP/1.1 201 Created").unwrap(), 201);
        assert!(parse_status(b"SPDY 200").is_err());
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
        let t = Target::resolve("http://127.0.0.1:9/x/", Some("tok"), None)
            .await
            .unwrap();
        assert!(t.tls.is_none());
        assert_eq!(t.addr, "127.0.0.1:9".parse().unwrap());
        let req = String::from_utf8(t.request("POST", "/streams/s", "", Some(b"{}"))).unwrap();
        assert_eq!(
            req,
            "POST /x/streams/s HTTP/1.1\r\nHost: 127.0.0.1:9\r\nAuthorization: Bearer tok\r\n\
             Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
        );
        let t = Target::resolve("https://127.0.0.1", None, None)
            .await
            .unwrap();
        assert_eq!(t.addr, "127.0.0.1:443".parse().unwrap());
        assert!(t.tls.is_some());
        let t = Target::resolve("https://localhost:8443", None, None)
            .await
            .unwrap();
        assert_eq!(t.addr.port(), 8443);
        assert!(Target::resolve("ftp://127.0.0.1", None, None)
            .await
            .is_err());
        assert!(Target::resolve("http://", None, None).await.is_err());
        let missing = Path::new("/nonexistent/ca.pem");
        let e = Target::resolve("https://127.0.0.1", None, Some(missing))
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("--ca-cert"), "{e}");
        // --ca-cert with a plain http:// server is a mistake.
        assert!(Target::resolve("http://127.0.0.1", None, Some(missing))
            .await
            .is_err());
    }
}
