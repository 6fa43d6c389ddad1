//! Helpers of the consumer-group tests: a restartable node and request shorthands.

use std::path::Path;
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use axum::Router;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use strata_server::{App, Config, GroupOptions};
use strata_store::{FsyncPolicy, Store};
use tower::ServiceExt;

use crate::support::{Reply, TestServer};

/// A server over a store directory that outlives it (for restarts), with small group tuning.
pub struct Node {
    pub app: App,
    router: Router,
}

pub fn options() -> GroupOptions {
    GroupOptions {
        window: 64,
        checkpoint_interval: Duration::from_millis(100),
        ..GroupOptions::default()
    }
}

impl Node {
    pub fn open(dir: &Path, options: GroupOptions) -> Node {
        let mut config = Config::new(dir);
        config.store.fsync = FsyncPolicy::Never;
        let store = Store::open(dir, config.store_options()).expect("open store");
        let app = App::with_group_options(store, &config, options);
        Node {
            router: app.router(),
            app,
        }
    }

    /// Stops the groups (saving checkpoints) and closes the store, like a graceful shutdown.
    pub async fn stop(self) {
        self.app.stop_groups().await;
        self.app.store().close().unwrap();
    }
}

/// Something that serves requests: the shared harness or a [`Node`].
pub trait Serve {
    fn router(&self) -> Router;
}

impl Serve for Node {
    fn router(&self) -> Router {
        self.router.clone()
    }
}

impl Serve for TestServer {
    fn router(&self) -> Router {
        self.app.router()
    }
}

pub async fn call(s: &impl Serve, method: &str, uri: &str, body: Option<Value>) -> Reply {
    let mut req = Request::builder().method(method).uri(uri);
    let body = match body {
        Some(v) => {
            req = req.header("content-type", "application/json");
            Body::from(v.to_string())
        }
        None => Body::empty(),
    };
    let res = s
        .router()
        .oneshot(req.body(body).unwrap())
        .await
        .expect("infallible");
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body,
    }
}

pub async fn append(s: &impl Serve, stream: &str, n: usize) {
    let events: Vec<Value> = (0..n)
        .map(|i| json!({"type": "T", "data": {"i": i}}))
        .collect();
    let r = call(
        s,
        "POST",
        &format!("/streams/{stream}"),
        Some(json!(events)),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.text());
}

pub async fn create(s: &impl Serve, group: &str, settings: Value) -> Value {
    let r = call(s, "PUT", &format!("/groups/{group}"), Some(settings)).await;
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()
}

pub async fn poll(s: &impl Serve, group: &str, max: usize, wait_ms: u64) -> Vec<Value> {
    let r = call(
        s,
        "POST",
        &format!("/groups/{group}/poll?max={max}&wait_ms={wait_ms}"),
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["messages"].as_array().unwrap().clone()
}

pub fn ids(messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .map(|m| m["ack_id"].as_str().unwrap().to_owned())
        .collect()
}

pub fn datas(messages: &[Value]) -> Vec<u64> {
    messages
        .iter()
        .map(|m| m["event"]["data"]["i"].as_u64().unwrap())
        .collect()
}

pub async fn ack(s: &impl Serve, group: &str, ids: &[String]) -> Value {
    let r = call(
        s,
        "POST",
        &format!("/groups/{group}/ack"),
        Some(json!({ "ack_ids": ids })),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

pub async fn nack(s: &impl Serve, group: &str, ids: &[String], action: &str) -> Value {
    let r = call(
        s,
        "POST",
        &format!("/groups/{group}/nack"),
        Some(json!({ "ack_ids": ids, "action": action })),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

pub async fn show(s: &impl Serve, group: &str) -> Value {
    let r = call(s, "GET", &format!("/groups/{group}"), None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

pub async fn parked(s: &impl Serve, group: &str) -> Vec<Value> {
    let r = call(s, "GET", &format!("/groups/{group}/parked"), None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["parked"].as_array().unwrap().clone()
}

/// Waits until `n` events are parked, up to 20 s.
pub async fn wait_parked(s: &impl Serve, group: &str, n: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let p = parked(s, group).await;
        if p.len() >= n {
            return p;
        }
        assert!(tokio::time::Instant::now() < deadline, "parked: {p:?}");
        // Polling lets the group take expired deliveries back.
        assert!(poll(s, group, 10, 100).await.is_empty());
    }
}

/// Waits until `n` long polls of `group` are parked waiting for events (its `waiting_polls`
/// gauge), up to 20 s, and returns the group. A counted poll is registered for the group's
/// next wake-up: whatever should end it from then on (an append, an ack, a delete, ...) must
/// reach it, and without one it would sit out its whole `wait_ms`.
pub async fn wait_waiting_polls(s: &impl Serve, group: &str, n: u64) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let g = show(s, group).await;
        if g["waiting_polls"].as_u64() == Some(n) {
            return g;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never {n} waiting poll(s): {g}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Polls until `n` messages arrived (ack timeouts are short in these tests), up to 20 s.
pub async fn poll_until(s: &impl Serve, group: &str, n: usize) -> Vec<Value> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while got.len() < n {
        assert!(tokio::time::Instant::now() < deadline, "only {got:?}");
        got.extend(poll(s, group, n - got.len(), 1000).await);
    }
    got
}
