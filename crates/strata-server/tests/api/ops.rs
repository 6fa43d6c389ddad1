//! `/health`, `/info`, `/metrics`, `/openapi.json`, unknown routes and methods, storage faults.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::Value;
use strata_store::file_io::{AppendFile, FileIo, StdFileIo};

use crate::support::{page_events, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_info_metrics() {
    let s = TestServer::start();
    let r = s.get("/health").await;
    assert_eq!(
        (r.status, r.json()),
        (200, serde_json::json!({"status": "ok"}))
    );
    s.append_many("m-1", 3).await;
    let info = s.get("/info").await.json();
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(info["next_position"], 3);
    assert_eq!(info["last_position"], 2);
    assert_eq!(info["segment_count"], 1);
    assert!(info["bytes_on_disk"].as_u64().unwrap() > 0);
    assert!(info["uptime_seconds"].is_u64());
    assert_eq!(info["data_dir"], s.dir.path().display().to_string());
    assert_eq!(info["fsync"], "never");
    let _ = s.get("/streams/m-1").await;
    let r = s.get("/metrics").await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    let text = r.text();
    for needle in [
        "strata_appends_total 1\n",
        "strata_events_written_total 3\n",
        "# TYPE strata_fsync_duration_seconds histogram\n",
        "strata_fsync_duration_seconds_bucket{le=\"+Inf\"}",
        "strata_append_duration_seconds_count 1\n",
        "strata_subscriptions_open 0\n",
        "strata_log_next_position 3\n",
        "strata_http_requests_total{route=\"/streams/{stream}\",method=\"POST\",status=\"201\"} 1\n",
        "strata_http_requests_total{route=\"/streams/{stream}\",method=\"GET\",status=\"200\"} 1\n",
        "strata_http_request_duration_seconds_count{route=\"/info\",method=\"GET\"} 1\n",
        "strata_events_read_total 3\n",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    let bytes: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("strata_bytes_written_total "))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(bytes > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_and_methods_are_json() {
    let s = TestServer::start();
    for uri in [
        "/",
        "/nope",
        "/streams/a/b/c",
        "/groups/g",
        "/projections/p",
    ] {
        s.get(uri).await.assert_error(404, "not_found");
    }
    let r = s.call("PATCH", "/streams/s", &[], "").await;
    r.assert_error(405, "method_not_allowed");
    let allow = r.header("allow").unwrap_or_default().to_owned();
    assert!(
        allow.contains("GET") && allow.contains("POST") && allow.contains("DELETE"),
        "{allow}"
    );
    s.call("POST", "/all", &[], "")
        .await
        .assert_error(405, "method_not_allowed");
    s.call("DELETE", "/health", &[], "")
        .await
        .assert_error(405, "method_not_allowed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_covers_the_router() {
    let s = TestServer::start();
    let r = s.get("/openapi.json").await;
    assert_eq!(r.status, 200);
    let doc = r.json();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    for (method, path) in strata_server::routes() {
        let op = &paths[path][method.to_lowercase()];
        assert!(op.is_object(), "{method} {path} undocumented");
        assert!(op["responses"].is_object());
        // The route really exists: a request to it is not the router's 404.
        if path.contains("{group}") {
            // Group routes answer 404 `not_found` for an unknown group: make one exist.
            let r = s
                .call_typed(
                    "PUT",
                    "/groups/doc-g",
                    "application/json",
                    r#"{"source":"$all"}"#,
                )
                .await;
            assert!(r.status == 200 || r.status == 201, "{}", r.text());
        }
        let mut uri = path
            .replace("{stream}", "doc-1")
            .replace("{revision}", "0")
            .replace("{group}", "doc-g");
        if uri.ends_with("/poll") {
            uri.push_str("?wait_ms=0");
        }
        let reply = s.call(method, &uri, &[], "").await;
        // The router's fallback 404 says "no resource at"; a routed 404 names what is missing.
        let message = serde_json::from_slice::<Value>(&reply.body)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_owned))
            .unwrap_or_default();
        assert!(
            !(reply.status == 404 && message.starts_with("no resource at")),
            "{method} {path} is not routed"
        );
        assert_ne!(reply.status, 405, "{method} {path}");
    }
}

/// How writes fail once a [`SwitchIo`] is switched on.
#[derive(Clone, Copy, PartialEq)]
enum Fault {
    /// An I/O error: the store turns read-only.
    Io,
    /// A short write, then `ENOSPC`, as on a full disk (whose free space then reads 0).
    Full,
}

/// Writes fail with `fault` while `on` is set.
struct SwitchIo {
    on: Arc<AtomicBool>,
    fault: Fault,
}

struct SwitchFile {
    inner: Box<dyn AppendFile>,
    on: Arc<AtomicBool>,
    fault: Fault,
}

impl FileIo for SwitchIo {
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn AppendFile>> {
        Ok(Box::new(SwitchFile {
            inner: StdFileIo.open_append(path)?,
            on: self.on.clone(),
            fault: self.fault,
        }))
    }

    fn available_space(&self, _dir: &Path) -> io::Result<u64> {
        let full = self.fault == Fault::Full && self.on.load(Ordering::SeqCst);
        Ok(if full { 0 } else { u64::MAX })
    }
}

impl AppendFile for SwitchFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        if self.on.load(Ordering::SeqCst) {
            return Err(match self.fault {
                Fault::Io => io::Error::other("injected: I/O error"),
                Fault::Full => {
                    // A short write, then the error, as a real full disk does.
                    self.inner.write_all(&buf[..buf.len() / 2])?;
                    io::Error::from(io::ErrorKind::StorageFull)
                }
            });
        }
        self.inner.write_all(buf)
    }
    fn sync_data(&mut self) -> io::Result<()> {
        self.inner.sync_data()
    }
    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.inner.truncate(len)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_faults_are_503_and_reads_go_on() {
    let fail = Arc::new(AtomicBool::new(false));
    let io = SwitchIo {
        on: fail.clone(),
        fault: Fault::Io,
    };
    let s = TestServer::with(move |c| c.store.file_io = Arc::new(io));
    s.append_many("f-1", 2).await;
    fail.store(true, Ordering::SeqCst);
    s.post("/streams/f-1", r#"{"type":"T"}"#, &[])
        .await
        .assert_error(503, "unavailable");
    s.post("/streams/f-1", r#"{"type":"T"}"#, &[])
        .await
        .assert_error(503, "unavailable");
    s.call("DELETE", "/streams/f-1", &[], "")
        .await
        .assert_error(503, "unavailable");
    let h = s.get("/health").await;
    let v = h.assert_error(503, "unavailable");
    assert_eq!(v["status"], "read_only");
    assert_eq!(s.get("/info").await.json()["status"], "read_only");
    assert!(s
        .get("/metrics")
        .await
        .text()
        .contains("strata_read_only 1\n"));
    // Reads still work.
    assert_eq!(page_events(&s.get("/streams/f-1").await.json()).len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_507_health_disk_full_reads_go_on_and_appends_resume_once_space_is_free() {
    let full = Arc::new(AtomicBool::new(false));
    let io = SwitchIo {
        on: full.clone(),
        fault: Fault::Full,
    };
    let s = TestServer::with(move |c| c.store.file_io = Arc::new(io));
    s.append_many("d-1", 2).await;
    full.store(true, Ordering::SeqCst);
    for _ in 0..2 {
        let v = s
            .post("/streams/d-1", r#"{"type":"T"}"#, &[])
            .await
            .assert_error(507, "insufficient_storage");
        let message = v["message"].as_str().unwrap_or_default();
        assert!(message.contains("disk full"), "{message}");
    }
    s.call("DELETE", "/streams/d-1", &[], "")
        .await
        .assert_error(507, "insufficient_storage");
    let v = s
        .get("/health")
        .await
        .assert_error(503, "insufficient_storage");
    assert_eq!(v["status"], "disk_full");
    assert_eq!(s.get("/info").await.json()["status"], "disk_full");
    let metrics = s.get("/metrics").await.text();
    assert!(metrics.contains("strata_disk_full 1\n"), "{metrics}");
    assert!(metrics.contains("strata_read_only 0\n"), "{metrics}");
    // Reads go on, and see only what was acknowledged.
    assert_eq!(page_events(&s.get("/streams/d-1").await.json()).len(), 2);
    // Space is freed: the next append succeeds, with no restart, and the store is healthy.
    full.store(false, Ordering::SeqCst);
    assert_eq!(s.get("/health").await.status, 200);
    let r = s.post("/streams/d-1", r#"{"type":"T"}"#, &[]).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["first_revision"], 2, "{}", r.text());
    let h = s.get("/health").await;
    assert_eq!(h.status, 200, "{}", h.text());
    assert_eq!(h.json()["status"], "ok");
    assert!(s
        .get("/metrics")
        .await
        .text()
        .contains("strata_disk_full 0\n"));
    assert_eq!(page_events(&s.get("/streams/d-1").await.json()).len(), 3);
}
