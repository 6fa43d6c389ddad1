//! End-to-end: `strata serve --tls-cert --tls-key` — HTTPS with HTTP/1.1 and HTTP/2 chosen by
//! ALPN, SSE over both, plain HTTP and unknown CAs refused while the server goes on serving,
//! the TLS handshake under the header-read timeout, the non-loopback rule (auth and TLS, or
//! --insecure), and the client commands with `https://` and `--ca-cert` — against the real
//! binary, with a CA and a server certificate made by the test (rcgen).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use strata_suite::{strata_binary, ServerProcess, START_TIMEOUT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long any one network step of these tests may take.
const STEP: Duration = Duration::from_secs(20);

/// A CA and a server certificate it signed (for `localhost` and `127.0.0.1`), as PEM files.
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Pki {
    /// Makes a new CA named `name` and a server certificate in `dir`.
    fn new(dir: &Path, name: &str) -> Pki {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
        };
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("Strata test CA {name}"));
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let server_key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "strata test server");
        let server_cert = params.signed_by(&server_key, &issuer).unwrap();
        let pki = Pki {
            ca: dir.join(format!("{name}-ca.pem")),
            cert: dir.join(format!("{name}-cert.pem")),
            key: dir.join(format!("{name}-key.pem")),
        };
        std::fs::write(&pki.ca, ca_cert.pem()).unwrap();
        std::fs::write(&pki.cert, server_cert.pem()).unwrap();
        // PKCS#8 `PRIVATE KEY`.
        std::fs::write(&pki.key, server_key.serialize_pem()).unwrap();
        pki
    }

    /// The `serve` flags of this certificate.
    fn serve_flags(&self) -> Vec<&str> {
        vec![
            "--tls-cert",
            self.cert.to_str().unwrap(),
            "--tls-key",
            self.key.to_str().unwrap(),
        ]
    }
}

/// A `strata serve` over TLS on 127.0.0.1 with `pki`'s certificate and `extra` flags.
fn start_tls(data: &Path, pki: &Pki, extra: &[&str]) -> ServerProcess {
    let mut flags = pki.serve_flags();
    flags.extend_from_slice(&["--log-level", "warn", "--fsync", "never"]);
    flags.extend_from_slice(extra);
    let server = ServerProcess::start(strata_binary(), data, &flags, START_TIMEOUT).unwrap();
    assert!(
        server.base_url.starts_with("https://127.0.0.1:"),
        "{}",
        server.base_url
    );
    server
}

/// A rustls client trusting only the CA in `ca`, offering `alpn`.
fn client_config(ca: &Path, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A TLS connection to the server at `addr`, verified as `127.0.0.1`.
async fn tls_connect(
    addr: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::IpAddress(addr.ip().into());
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
}

/// One HTTPS connection speaking the protocol ALPN chose.
enum Https {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl Https {
    /// Connects, handshakes, and starts the connection's driver task.
    async fn connect(addr: std::net::SocketAddr, config: Arc<rustls::ClientConfig>) -> Https {
        let tls = tokio::time::timeout(STEP, tls_connect(addr, config))
            .await
            .expect("TLS connect timed out")
            .expect("TLS connect");
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        let io = TokioIo::new(tls);
        if h2 {
            let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .unwrap();
            tokio::spawn(conn);
            Https::H2(send)
        } else {
            let (send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(conn);
            Https::H1(send)
        }
    }

    /// Sends `method path` with `headers` and an optional JSON body; the response head.
    async fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Response<Incoming> {
        let uri = match self {
            // HTTP/2 carries the scheme and authority as pseudo-headers.
            Https::H2(_) => format!("https://127.0.0.1{path}"),
            Https::H1(_) => path.to_owned(),
        };
        let mut request = Request::builder().method(method).uri(uri);
        if let Https::H1(_) = self {
            request = request.header("host", "127.0.0.1");
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if body.is_some() {
            request = request.header("content-type", "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default().to_owned())))
            .unwrap();
        let sent = async {
            match self {
                Https::H1(send) => send.send_request(request).await,
                Https::H2(send) => send.send_request(request).await,
            }
        };
        tokio::time::timeout(STEP, sent)
            .await
            .expect("request timed out")
            .expect("request failed")
    }

    /// `send` and the whole body as JSON, with the response's status and HTTP version.
    async fn json(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> (u16, Version, Value) {
        let response = self.send(method, path, &[], body).await;
        let status = response.status().as_u16();
        let version = response.version();
        let bytes = tokio::time::timeout(STEP, response.into_body().collect())
            .await
            .expect("body timed out")
            .unwrap()
            .to_bytes();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&bytes)));
        (status, version, value)
    }
}

const H2: &[u8] = b"h2";
const HTTP1: &[u8] = b"http/1.1";

#[tokio::test]
async fn https_serves_http1_and_http2_negotiated_by_alpn() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "main");
    let server = start_tls(&dir.path().join("data"), &pki, &[]);

    // A client offering only http/1.1 gets HTTP/1.1.
    let tls = tls_connect(server.addr, client_config(&pki.ca, &[HTTP1]))
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(HTTP1));
    let mut h1 = Https::connect(server.addr, client_config(&pki.ca, &[HTTP1])).await;
    assert!(matches!(h1, Https::H1(_)));
    let (status, version, body) = h1
        .json(
            "POST",
            "/streams/tls-1",
            Some(r#"{"type": "Over", "data": {"via": "http/1.1"}}"#),
        )
        .await;
    assert_eq!((status, version), (201, Version::HTTP_11), "{body}");
    // Kept alive: a second request on the same connection.
    let (status, _, health) = h1.json("GET", "/health", None).await;
    assert_eq!(status, 200, "{health}");

    // A client offering h2 first gets HTTP/2.
    let tls = tls_connect(server.addr, client_config(&pki.ca, &[H2, HTTP1]))
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(H2));
    let mut h2 = Https::connect(server.addr, client_config(&pki.ca, &[H2, HTTP1])).await;
    assert!(matches!(h2, Https::H2(_)));
    let (status, version, body) = h2
        .json(
            "POST",
            "/streams/tls-1",
            Some(r#"{"type": "Over", "data": {"via": "h2"}}"#),
        )
        .await;
    assert_eq!((status, version), (201, Version::HTTP_2), "{body}");
    // Two requests at once on the one HTTP/2 connection.
    let mut other = match &h2 {
        Https::H2(send) => Https::H2(send.clone()),
        Https::H1(_) => unreachable!(),
    };
    let (a, b) = tokio::join!(
        h2.json("GET", "/streams/tls-1?limit=10", None),
        other.json("GET", "/streams/tls-1/0", None)
    );
    assert_eq!((a.0, a.1), (200, Version::HTTP_2), "{}", a.2);
    let vias: Vec<&Value> = a.2["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["data"]["via"])
        .collect();
    assert_eq!(vias, [&json!("http/1.1"), &json!("h2")]);
    assert_eq!(b.0, 200, "{}", b.2);
    assert_eq!(b.2["data"]["via"], "http/1.1");

    // A client without ALPN is served HTTP/1.1.
    let mut plain_alpn = Https::connect(server.addr, client_config(&pki.ca, &[])).await;
    assert!(matches!(plain_alpn, Https::H1(_)));
    let (status, version, _) = plain_alpn.json("GET", "/health", None).await;
    assert_eq!((status, version), (200, Version::HTTP_11));
}

/// Reads SSE body frames until one carries `needle`; the text read.
async fn sse_until(body: &mut Incoming, needle: &str) -> String {
    let mut text = String::new();
    let read = async {
        while !text.contains(needle) {
            let frame = body
                .frame()
                .await
                .expect("the SSE response ended")
                .expect("SSE body error");
            if let Ok(data) = frame.into_data() {
                text.push_str(&String::from_utf8_lossy(&data));
            }
        }
    };
    tokio::time::timeout(STEP, read)
        .await
        .unwrap_or_else(|_| panic!("no {needle:?} in the SSE response"));
    text
}

#[tokio::test]
async fn sse_over_tls_delivers_live_events_on_both_protocols() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "sse");
    let server = start_tls(&dir.path().join("data"), &pki, &[]);
    let mut writer = Https::connect(server.addr, client_config(&pki.ca, &[HTTP1])).await;
    let (status, _, body) = writer
        .json(
            "POST",
            "/streams/live",
            Some(r#"{"type": "Before", "data": {}}"#),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    for (alpn, version) in [(H2, Version::HTTP_2), (HTTP1, Version::HTTP_11)] {
        let mut reader = Https::connect(server.addr, client_config(&pki.ca, &[alpn])).await;
        let response = reader
            .send(
                "GET",
                "/streams/live",
                &[("accept", "text/event-stream")],
                None,
            )
            .await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.version(), version);
        assert!(response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"));
        let mut body = response.into_body();
        // Catch-up first, then an event appended while subscribed.
        sse_until(&mut body, "\"Before\"").await;
        let live_type = format!(
            "Live{}",
            String::from_utf8_lossy(alpn).replace(['/', '.'], "")
        );
        let event = json!({"type": live_type, "data": {"n": 1}}).to_string();
        let (status, _, appended) = writer.json("POST", "/streams/live", Some(&event)).await;
        assert_eq!(status, 201, "{appended}");
        let text = sse_until(&mut body, &format!("\"{live_type}\"")).await;
        assert!(text.contains("event: "), "{text}");
    }
}

#[tokio::test]
async fn plain_http_and_unknown_cas_are_refused_and_the_server_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "good");
    let other = Pki::new(dir.path(), "other");
    let server = start_tls(&dir.path().join("data"), &pki, &[]);

    // Plain HTTP to the TLS port: a JSON 400 saying so, then the connection closes.
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(STEP, tcp.read_to_end(&mut answer))
        .await
        .expect("the connection was not closed")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    let body: Value = serde_json::from_str(answer.split_once("\r\n\r\n").unwrap().1).unwrap();
    assert_eq!(body["error"], "invalid_request");
    assert!(
        body["message"].as_str().unwrap().contains("HTTPS"),
        "{body}"
    );
    // The plain-HTTP support client sees the same answer.
    server
        .client()
        .get("/health")
        .assert_error(400, "invalid_request");

    // A client that trusts another CA refuses the server's certificate.
    let refused = tls_connect(server.addr, client_config(&other.ca, &[H2, HTTP1])).await;
    let error = refused.expect_err("a certificate of an unknown CA was accepted");
    assert!(
        error.to_string().contains("UnknownIssuer") || error.to_string().contains("issuer"),
        "{error}"
    );

    // Meanwhile everyone else is served.
    let mut good = Https::connect(server.addr, client_config(&pki.ca, &[H2])).await;
    let (status, _, health) = good.json("GET", "/health", None).await;
    assert_eq!(status, 200, "{health}");
}

#[tokio::test]
async fn a_connection_without_a_client_hello_is_dropped_after_the_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "slow");
    let server = start_tls(
        &dir.path().join("data"),
        &pki,
        &["--header-read-timeout", "1"],
    );
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    // Half a ClientHello record header: the handshake starts but never completes.
    let mut partial = TcpStream::connect(server.addr).await.unwrap();
    partial.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
    for conn in [&mut silent, &mut partial] {
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(STEP, conn.read(&mut buf))
            .await
            .expect("the server kept a connection without a handshake open");
        // Closed (EOF, or a reset), with nothing sent.
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
    // A prompt client is served.
    let mut good = Https::connect(server.addr, client_config(&pki.ca, &[HTTP1])).await;
    assert_eq!(good.json("GET", "/health", None).await.0, 200);
}

/// Runs `strata ARGS...` (a client command) and returns (success, stdout, stderr).
fn strata(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(strata_binary())
        .args(args)
        .env_remove("STRATA_SERVER")
        .env_remove("STRATA_CA_CERT")
        .env_remove("STRATA_TOKEN")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn cli_append_and_read_over_https_with_ca_cert() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "cli");
    let server = start_tls(&dir.path().join("data"), &pki, &[]);
    let url = server.base_url.clone();
    let ca = pki.ca.to_str().unwrap();
    let (ok, out, err) = strata(&[
        "append",
        "--server",
        &url,
        "--ca-cert",
        ca,
        "cli-1",
        "--type",
        "Made",
        r#"{"k": 1}"#,
    ]);
    assert!(ok, "append failed: {err}");
    let ack: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(ack["first_revision"], 0, "{ack}");
    for extra in [&[][..], &["--limit", "5"][..]] {
        let mut args = vec!["read", "--server", &url, "--ca-cert", ca, "cli-1"];
        args.extend_from_slice(extra);
        let (ok, out, err) = strata(&args);
        assert!(ok, "read {extra:?} failed: {err}");
        let event: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
        assert_eq!(event["type"], "Made");
        assert_eq!(event["data"], json!({"k": 1}));
    }
    // Without --ca-cert the built-in roots do not know the test CA: refused, nothing written.
    let (ok, _, err) = strata(&[
        "append",
        "--server",
        &url,
        "cli-1",
        "--type",
        "Made",
        r#"{"k": 2}"#,
    ]);
    assert!(!ok, "an unknown CA was trusted");
    assert!(
        err.to_lowercase().contains("certificate") || err.contains("issuer"),
        "{err}"
    );
    // Plain http:// to the TLS port: the server's JSON 400.
    let plain = url.replace("https://", "http://");
    let (ok, _, err) = strata(&["read", "--server", &plain, "cli-1"]);
    assert!(!ok);
    assert!(err.contains("400") && err.contains("HTTPS"), "{err}");
    // A --ca-cert that is not a certificate.
    let (ok, _, err) = strata(&[
        "read",
        "--server",
        &url,
        "--ca-cert",
        pki.key.to_str().unwrap(),
        "cli-1",
    ]);
    assert!(!ok);
    assert!(
        err.contains("--ca-cert") && err.contains("no certificate"),
        "{err}"
    );
}

#[test]
fn non_loopback_listen_needs_auth_and_tls_unless_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "wide");
    let data = dir.path().join("data");
    // Auth without TLS: refused, naming the TLS flags.
    let refused = ServerProcess::start_on(
        strata_binary(),
        &data,
        "0.0.0.0:0",
        &["--auth-token", "secret", "--log-level", "warn"],
        START_TIMEOUT,
    );
    let error = refused
        .err()
        .expect("0.0.0.0 with auth but without TLS started");
    let error = error.to_string();
    assert!(
        error.contains("without TLS") && error.contains("--tls-cert"),
        "{error}"
    );
    // TLS without auth: refused, naming the auth flags.
    let mut flags = pki.serve_flags();
    flags.extend_from_slice(&["--log-level", "warn"]);
    let refused =
        ServerProcess::start_on(strata_binary(), &data, "0.0.0.0:0", &flags, START_TIMEOUT);
    let error = refused
        .err()
        .expect("0.0.0.0 with TLS but without auth started");
    let error = error.to_string();
    assert!(
        error.contains("authentication off") && error.contains("--auth-token"),
        "{error}"
    );
    // Both: it starts, without --insecure.
    flags.extend_from_slice(&["--auth-token", "secret"]);
    let server =
        ServerProcess::start_on(strata_binary(), &data, "0.0.0.0:0", &flags, START_TIMEOUT)
            .expect("auth and TLS must allow 0.0.0.0");
    assert!(
        server.base_url.starts_with("https://0.0.0.0:"),
        "{}",
        server.base_url
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut c = Https::connect(server.connect_addr(), client_config(&pki.ca, &[H2])).await;
        let response = c
            .send("GET", "/info", &[("authorization", "Bearer secret")], None)
            .await;
        assert_eq!(response.status(), 200);
        let response = c.send("GET", "/info", &[], None).await;
        assert_eq!(response.status(), 401);
    });
}

/// Requests per second of `GET /health` by `clients` concurrent clients for `duration`: each
/// client keeps one connection (`keep_alive`) or opens a new one per request (TCP, plus the TLS
/// handshake when `tls` is given).
async fn health_rate(
    addr: std::net::SocketAddr,
    tls: Option<Arc<rustls::ClientConfig>>,
    keep_alive: bool,
    clients: usize,
    duration: Duration,
) -> f64 {
    async fn connect(
        addr: std::net::SocketAddr,
        tls: &Option<Arc<rustls::ClientConfig>>,
    ) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
        match tls {
            Some(config) => match Https::connect(addr, config.clone()).await {
                Https::H1(send) => send,
                Https::H2(_) => unreachable!("offered http/1.1 only"),
            },
            None => {
                let tcp = TcpStream::connect(addr).await.unwrap();
                tcp.set_nodelay(true).unwrap();
                let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                    .await
                    .unwrap();
                tokio::spawn(conn);
                send
            }
        }
    }
    let deadline = tokio::time::Instant::now() + duration;
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let tls = tls.clone();
        tasks.push(tokio::spawn(async move {
            let mut done = 0u64;
            let mut send = connect(addr, &tls).await;
            while tokio::time::Instant::now() < deadline {
                if !keep_alive {
                    send = connect(addr, &tls).await;
                }
                let request = Request::get("/health")
                    .header("host", "127.0.0.1")
                    .body(Full::new(Bytes::new()))
                    .unwrap();
                let response = send.send_request(request).await.unwrap();
                assert_eq!(response.status(), 200);
                response.into_body().collect().await.unwrap();
                done += 1;
            }
            done
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await.unwrap();
    }
    total as f64 / duration.as_secs_f64()
}

/// The cost of TLS: `GET /health` requests per second over plain HTTP and HTTPS, on kept-alive
/// connections and with a new connection (and handshake) per request, against two servers
/// started side by side. Prints a table; asserts nothing about speed. Run with
/// `cargo test --release --test tls -- --ignored --nocapture tls_cost` (docs/performance.md).
#[test]
#[ignore = "a measurement, not a test: run it by hand"]
fn tls_cost() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path(), "cost");
    let plain = ServerProcess::start(
        strata_binary(),
        &dir.path().join("plain"),
        &["--log-level", "warn", "--fsync", "never"],
        START_TIMEOUT,
    )
    .unwrap();
    let tls = start_tls(&dir.path().join("tls"), &pki, &[]);
    let config = client_config(&pki.ca, &[HTTP1]);
    let seconds: u64 = std::env::var("TLS_COST_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let duration = Duration::from_secs(seconds);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("GET /health, requests/s over {seconds} s each (client: one thread)");
    println!("| clients | connection | http | https | https / http |");
    println!("|---|---|---|---|---|");
    for clients in [1, 8] {
        for keep_alive in [true, false] {
            let (http, https) = runtime.block_on(async {
                let http = health_rate(plain.addr, None, keep_alive, clients, duration).await;
                let https = health_rate(
                    tls.addr,
                    Some(config.clone()),
                    keep_alive,
                    clients,
                    duration,
                )
                .await;
                (http, https)
            });
            let how = if keep_alive {
                "kept alive"
            } else {
                "new per request"
            };
            println!(
                "| {clients} | {how} | {http:.0} | {https:.0} | {:.2} |",
                https / http
            );
        }
    }
}
