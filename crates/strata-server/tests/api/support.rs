//! In-process harness: the real router over a real store in a temporary directory, driven with
//! `tower::ServiceExt::oneshot` (no sockets), plus an SSE message reader.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Request};
use axum::Router;
use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::Value;
use strata_server::{App, Config};
use strata_store::{FsyncPolicy, Store};
use tower::ServiceExt;

pub struct TestServer {
    pub app: App,
    router: Router,
    pub dir: tempfile::TempDir,
}

/// A complete response.
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the API error shape and code, returns the body.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) -> Value {
        assert_eq!(self.status, status, "body: {}", self.text());
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{}",
            self.text()
        );
        let v = self.json();
        assert_eq!(v["error"], code, "{v}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
        v
    }
}

impl TestServer {
    pub fn start() -> TestServer {
        TestServer::with(|_| {})
    }

    pub fn with(configure: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = Config::new(dir.path());
        config.store.fsync = FsyncPolicy::Never;
        configure(&mut config);
        let store = Store::open(dir.path(), config.store_options()).expect("open store");
        let app = App::new(store, &config);
        TestServer {
            router: app.router(),
            app,
            dir,
        }
    }

    /// Sends a request and returns the raw response (body not read).
    pub async fn send(&self, req: Request<Body>) -> axum::response::Response {
        self.router.clone().oneshot(req).await.expect("infallible")
    }

    /// Sends a request and reads the whole response.
    pub async fn call(
        &self,
        method: &str,
        uri: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = self
            .send(req.body(Body::from(body.to_owned())).expect("request"))
            .await;
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let body = res.into_body().collect().await.expect("body").to_bytes();
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, uri: &str) -> Reply {
        self.call("GET", uri, &[], "").await
    }

    pub async fn get_with(&self, uri: &str, headers: &[(&str, &str)]) -> Reply {
        self.call("GET", uri, headers, "").await
    }

    /// `method uri` with `body` as `Content-Type: content_type`.
    pub async fn call_typed(
        &self,
        method: &str,
        uri: &str,
        content_type: &str,
        body: &str,
    ) -> Reply {
        self.call(method, uri, &[("content-type", content_type)], body)
            .await
    }

    /// `method uri` without a body, with `Authorization: authorization`.
    pub async fn call_as(&self, method: &str, uri: &str, authorization: &str) -> Reply {
        self.call(method, uri, &[("authorization", authorization)], "")
            .await
    }

    /// `GET uri` with `Authorization: authorization`.
    pub async fn get_as(&self, uri: &str, authorization: &str) -> Reply {
        self.get_with(uri, &[("authorization", authorization)])
            .await
    }

    /// POSTs JSON with `Content-Type: application/json` and the extra headers.
    pub async fn post(&self, uri: &str, body: &str, headers: &[(&str, &str)]) -> Reply {
        let mut all = vec![("content-type", "application/json")];
        all.extend_from_slice(headers);
        self.call("POST", uri, &all, body).await
    }

    /// Appends and asserts 201.
    pub async fn append(&self, stream: &str, body: &str) -> Value {
        let r = self.post(&format!("/streams/{stream}"), body, &[]).await;
        assert_eq!(r.status, 201, "{}", r.text());
        r.json()
    }

    /// Appends `n` events `{"type": "T", "data": {"i": i}}` in batches.
    pub async fn append_many(&self, stream: &str, n: usize) {
        let mut i = 0;
        while i < n {
            let k = (n - i).min(5000);
            let events: Vec<String> = (i..i + k)
                .map(|j| format!(r#"{{"type":"T","data":{{"i":{j}}}}}"#))
                .collect();
            self.append(stream, &format!("[{}]", events.join(",")))
                .await;
            i += k;
        }
    }

    /// Opens an SSE subscription.
    pub async fn subscribe(&self, uri: &str, headers: &[(&str, &str)]) -> Sse {
        let mut req = Request::builder()
            .uri(uri)
            .header("accept", "text/event-stream");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = self.send(req.body(Body::empty()).expect("request")).await;
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-type"], "text/event-stream");
        Sse {
            body: res.into_body(),
            buf: String::new(),
        }
    }
}

/// One SSE message (or comment).
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub event: String,
    pub id: Option<String>,
    pub data: String,
    pub comment: Option<String>,
}

impl Message {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).expect("SSE data is JSON")
    }
}

/// Reads SSE messages from a response body.
pub struct Sse {
    body: Body,
    buf: String,
}

impl Sse {
    /// The next block (message or comment), or `None` when the stream ended or `timeout` passed.
    pub async fn next_block(&mut self, timeout: Duration) -> Option<Message> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut m = Message {
                    event: String::new(),
                    id: None,
                    data: String::new(),
                    comment: None,
                };
                for line in block.lines() {
                    if let Some(c) = line.strip_prefix(':') {
                        m.comment = Some(c.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        m.event = v.to_owned();
                    } else if let Some(v) = line.strip_prefix("id: ") {
                        m.id = Some(v.to_owned());
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        if !m.data.is_empty() {
                            m.data.push('\n');
                        }
                        m.data.push_str(v);
                    }
                }
                return Some(m);
            }
            let frame = tokio::time::timeout_at(deadline, self.body.frame()).await;
            match frame {
                Ok(Some(Ok(f))) => {
                    if let Ok(data) = f.into_data() {
                        self.buf
                            .push_str(std::str::from_utf8(&data).expect("UTF-8"));
                    }
                }
                _ => return None,
            }
        }
    }

    /// The next message that is not a comment.
    pub async fn next_message(&mut self, timeout: Duration) -> Option<Message> {
        loop {
            let m = self.next_block(timeout).await?;
            if m.comment.is_none() {
                return Some(m);
            }
        }
    }

    /// True when the response ended (within `timeout`).
    pub async fn ended(&mut self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.body.frame()).await {
                Ok(None) => return true,
                Ok(Some(_)) => continue,
                Err(_) => return false,
            }
        }
    }
}

/// The `events` array of a page.
pub fn page_events(page: &Value) -> &Vec<Value> {
    page["events"].as_array().unwrap()
}

/// The types of a page's events.
pub fn event_types(page: &Value) -> Vec<&str> {
    page_events(page)
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect()
}

/// The revisions of a page's events.
pub fn revisions(page: &Value) -> Vec<u64> {
    page_events(page)
        .iter()
        .map(|e| e["revision"].as_u64().unwrap())
        .collect()
}

/// The positions of a page's events.
pub fn positions(page: &Value) -> Vec<u64> {
    page_events(page)
        .iter()
        .map(|e| e["position"].as_u64().unwrap())
        .collect()
}

/// Parses NDJSON lines.
pub fn ndjson(body: &[u8]) -> Vec<Value> {
    std::str::from_utf8(body)
        .expect("UTF-8")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line ({e}): {l}")))
        .collect()
}

pub const SECOND: Duration = Duration::from_secs(1);
