//! Connection handling over a real listener: header-read and idle timeouts, the connection
//! cap, and the JSON bodies of the answers sent before a request could be parsed.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use strata_server::{Config, Server};
use strata_store::FsyncPolicy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A server on a free loopback port, configured by `configure`.
struct Running {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<strata_server::Result<()>>>,
    _dir: tempfile::TempDir,
}

impl Running {
    async fn start(configure: impl FnOnce(&mut Config)) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Config::new(dir.path());
        c.listen = "127.0.0.1:0".into();
        c.store.fsync = FsyncPolicy::Never;
        configure(&mut c);
        let server = Server::bind(c).await.unwrap();
        let addr = server.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        Running {
            addr,
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
        }
    }

    async fn connect(&self) -> TcpStream {
        TcpStream::connect(self.addr).await.unwrap()
    }

    /// Stops the server and asserts a clean shutdown.
    async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task.take().unwrap();
        let result = tokio::time::timeout(Duration::from_secs(10), task).await;
        assert!(matches!(result, Ok(Ok(Ok(())))), "{result:?}");
    }
}

/// One response: status, lower-cased head, body.
#[derive(Debug)]
struct Reply {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {:?} / {}",
                self.head,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    #[track_caller]
    fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert!(
            self.head.contains("content-type: application/json\r\n"),
            "{}",
            self.head
        );
        let v = self.json();
        assert_eq!(v["error"], code, "{v}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    }
}

/// Reads one response with a `Content-Length` body; `None` when the connection ends first.
async fn read_reply(tcp: &mut TcpStream) -> Option<Reply> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        match tcp.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status = head.get(9..12)?.parse().ok()?;
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .map_or(0, |v| v.trim().parse().unwrap_or(0));
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let mut chunk = [0u8; 4096];
        match tcp.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    Some(Reply { status, head, body })
}

/// True when the server closes the connection within `within` (EOF or reset), false when it
/// is still open then. Anything the server sends meanwhile fails the test.
async fn closed_within(tcp: &mut TcpStream, within: Duration) -> bool {
    let mut chunk = [0u8; 1024];
    match tokio::time::timeout(within, tcp.read(&mut chunk)).await {
        Err(_) => false,
        Ok(Ok(0)) | Ok(Err(_)) => true,
        Ok(Ok(n)) => panic!(
            "unexpected bytes: {:?}",
            String::from_utf8_lossy(&chunk[..n])
        ),
    }
}

const GET_HEALTH: &[u8] = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_header_is_cut_off_after_the_header_timeout() {
    let server = Running::start(|c| {
        c.connections.header_read_timeout = Duration::from_millis(300);
        c.connections.idle_timeout = Duration::from_secs(30);
    })
    .await;
    // Slowloris: one header line every 100 ms, never the blank line.
    let mut tcp = server.connect().await;
    tcp.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut closed = false;
    for i in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if tcp
            .write_all(format!("X-Slow-{i}: 1\r\n").as_bytes())
            .await
            .is_err()
        {
            closed = true;
            break;
        }
        if closed_within(&mut tcp, Duration::from_millis(1)).await {
            closed = true;
            break;
        }
    }
    assert!(closed, "a header trickled over 5 s was still being read");
    // A connection that sends nothing at all is cut off too.
    let mut silent = server.connect().await;
    assert!(closed_within(&mut silent, Duration::from_secs(5)).await);
    // A prompt client is served.
    let mut tcp = server.connect().await;
    tcp.write_all(GET_HEALTH).await.unwrap();
    assert_eq!(read_reply(&mut tcp).await.map(|r| r.status), Some(200));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let server = Running::start(|c| {
        c.connections.header_read_timeout = Duration::from_secs(30);
        c.connections.idle_timeout = Duration::from_millis(300);
    })
    .await;
    let mut tcp = server.connect().await;
    for _ in 0..3 {
        // Requests spaced under the idle timeout keep the connection.
        tcp.write_all(GET_HEALTH).await.unwrap();
        assert_eq!(read_reply(&mut tcp).await.map(|r| r.status), Some(200));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        closed_within(&mut tcp, Duration::from_secs(5)).await,
        "an idle keep-alive connection stayed open"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_in_flight_outlive_the_idle_timeout() {
    let server = Running::start(|c| {
        c.connections.header_read_timeout = Duration::from_millis(300);
        c.connections.idle_timeout = Duration::from_millis(300);
        // No SSE keepalive within the test: the response alone keeps the connection.
        c.keepalive_interval = Duration::from_secs(60);
    })
    .await;
    let post = |stream: &str, body: &str| {
        format!(
            "POST /streams/{stream} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    // A subscription silent for 4 idle timeouts.
    let mut sse = server.connect().await;
    sse.write_all(b"GET /streams/live-1 HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = sse.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // A consumer-group long poll waiting 4 idle timeouts.
    let mut admin = server.connect().await;
    let group = r#"{"source":"live-1"}"#;
    admin
        .write_all(
            format!(
                "PUT /groups/g1 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{group}",
                group.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    assert_eq!(read_reply(&mut admin).await.map(|r| r.status), Some(201));
    let mut poll = server.connect().await;
    poll.write_all(b"POST /groups/g1/poll?wait_ms=1200 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // Both still there: the poll answers (empty) and the subscription gets the next event.
    let polled = read_reply(&mut poll).await.expect("the long poll was cut");
    assert_eq!(polled.status, 200);
    assert_eq!(polled.json()["messages"], serde_json::json!([]));
    let mut writer = server.connect().await;
    writer
        .write_all(post("live-1", r#"{"type":"Late"}"#).as_bytes())
        .await
        .unwrap();
    assert_eq!(read_reply(&mut writer).await.map(|r| r.status), Some(201));
    let mut seen = String::new();
    while !seen.contains("Late") {
        let n = tokio::time::timeout(Duration::from_secs(5), sse.read(&mut buf))
            .await
            .expect("no event on the subscription")
            .unwrap();
        assert!(n > 0, "the subscription was closed: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    drop(sse);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_wait_until_one_closes() {
    let server = Running::start(|c| {
        c.connections.max_connections = 2;
        c.connections.header_read_timeout = Duration::from_secs(30);
        c.connections.idle_timeout = Duration::from_secs(30);
    })
    .await;
    let mut first = server.connect().await;
    let mut second = server.connect().await;
    for tcp in [&mut first, &mut second] {
        tcp.write_all(GET_HEALTH).await.unwrap();
        assert_eq!(read_reply(tcp).await.map(|r| r.status), Some(200));
    }
    // The third is left in the listen backlog: its request is not answered...
    let mut third = server.connect().await;
    third.write_all(GET_HEALTH).await.unwrap();
    let waited = tokio::time::timeout(Duration::from_millis(500), read_reply(&mut third)).await;
    assert!(waited.is_err(), "connection 3 of 2 was served: {waited:?}");
    // ... until one of the others closes.
    drop(first);
    let served = tokio::time::timeout(Duration::from_secs(5), read_reply(&mut third)).await;
    assert_eq!(served.ok().flatten().map(|r| r.status), Some(200));
    // The second is still served meanwhile.
    second.write_all(GET_HEALTH).await.unwrap();
    assert_eq!(read_reply(&mut second).await.map(|r| r.status), Some(200));
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unparsable_requests_get_json_errors() {
    let server = Running::start(|_| {}).await;
    let cases: Vec<(Vec<u8>, u16)> = vec![
        // Headers over the limit: one huge field, or too many fields.
        (
            format!(
                "GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
                "a".repeat(500_000)
            )
            .into_bytes(),
            431,
        ),
        (
            format!(
                "GET /health HTTP/1.1\r\nHost: x\r\n{}\r\n",
                (0..200)
                    .map(|i| format!("X-{i}: a\r\n"))
                    .collect::<String>()
            )
            .into_bytes(),
            431,
        ),
        // A request target over the limit.
        (
            format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(70_000)).into_bytes(),
            414,
        ),
        // Not HTTP.
        (b"GET /he alth HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), 400),
        (b"\x01\x02 nonsense\r\n\r\n".to_vec(), 400),
    ];
    for (request, status) in cases {
        let mut tcp = server.connect().await;
        // The server may answer and close before it has read everything.
        let _ = tcp.write_all(&request).await;
        let reply = tokio::time::timeout(Duration::from_secs(5), read_reply(&mut tcp))
            .await
            .expect("no answer")
            .expect("closed without an answer");
        reply.assert_error(status, "invalid_request");
        assert!(
            reply.head.contains("connection: close\r\n"),
            "{}",
            reply.head
        );
    }
    server.shutdown().await;
}
