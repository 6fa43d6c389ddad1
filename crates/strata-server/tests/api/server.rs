//! A real listener: `Server::bind` / `run`, the loopback rule, graceful shutdown.

use std::time::Duration;

use strata_server::{Config, Error, Server};
use strata_store::FsyncPolicy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends one HTTP/1.1 request with `Connection: close` and returns the raw response.
async fn http(addr: std::net::SocketAddr, request: &str) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tcp.read_to_end(&mut out).await.unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

fn config(dir: &std::path::Path) -> Config {
    let mut c = Config::new(dir);
    c.listen = "127.0.0.1:0".into();
    c.store.fsync = FsyncPolicy::Never;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_over_tcp_and_shuts_down_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::bind(config(dir.path())).await.unwrap();
    let addr = server.local_addr();
    assert_ne!(addr.port(), 0);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    let body = r#"{"type":"T","data":{"x":1}}"#;
    let response = http(
        addr,
        &format!(
            "POST /streams/tcp-1 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");
    assert!(
        response
            .to_ascii_lowercase()
            .contains("location: /streams/tcp-1/0"),
        "{response}"
    );
    // 413 from the Content-Length alone, before the body is sent.
    let response = http(
        addr,
        "POST /streams/tcp-1 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 999999999\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(response.contains("payload_too_large"));
    // An open SSE subscription must not hold up the shutdown.
    let mut sse = TcpStream::connect(addr).await.unwrap();
    sse.write_all(b"GET /all HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = sse.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    stop.send(()).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(5), running).await;
    assert!(matches!(result, Ok(Ok(Ok(())))), "{result:?}");
    // The store was closed: the directory can be opened again and holds the event.
    let store = strata_store::Store::open(dir.path(), Default::default()).unwrap();
    assert_eq!(store.next_position(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_loopback_needs_auth_and_tls_or_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.listen = "0.0.0.0:0".into();
    match Server::bind(c.clone()).await {
        Err(e @ Error::InsecureListen { .. }) => {
            let message = e.to_string();
            assert!(message.contains("--tls-cert"), "{message}");
            assert!(message.contains("--auth-token"), "{message}");
            assert!(message.contains("--insecure"), "{message}");
        }
        Err(e) => panic!("expected InsecureListen, got {e}"),
        Ok(_) => panic!("expected InsecureListen, got a server"),
    }
    c.insecure = true;
    drop(Server::bind(c.clone()).await.unwrap());
    c.insecure = false;
    // Auth alone is not enough: without TLS the tokens would cross the network in clear.
    c.auth.add_admin_token("t");
    match Server::bind(c.clone()).await {
        Err(e @ Error::InsecureListen { .. }) => {
            let message = e.to_string();
            assert!(message.contains("without TLS"), "{message}");
            assert!(!message.contains("--auth-token"), "{message}");
        }
        Err(e) => panic!("expected InsecureListen, got {e}"),
        Ok(_) => panic!("expected InsecureListen, got a server"),
    }
    c.insecure = true;
    drop(Server::bind(c).await.unwrap());
    // Auth with TLS binds without --insecure: tests/tls.rs (it needs a certificate).
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_listen_addresses_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = config(dir.path());
    c.listen = "not an address".into();
    assert!(matches!(Server::bind(c).await, Err(Error::Bind { .. })));
}
