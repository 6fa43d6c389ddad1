//! `/projections`: create/update, refused scripts, status and state, partitions, faults (throw,
//! infinite loop, memory bomb) isolated from the rest, stop/start/reset/delete, restart of the
//! server resuming from the checkpoint, metrics, auth.

use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use axum::Router;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use strata_server::{App, Config, Role};
use strata_store::{FsyncPolicy, Store};
use tower::ServiceExt;

use crate::support::{Reply, TestServer};

const JS: &str = "application/javascript";

const COUNT_ALL: &str =
    "fromAll().when({ $init: () => ({ n: 0 }), $any: (s, e) => { s.n += 1; return s; } });";

const TOTALS: &str = r#"fromCategory('order')
  .partitionBy(e => e.data.customer)
  .when({
    $init: () => ({ count: 0, total: 0 }),
    OrderPlaced: (s, e) => { s.count += 1; s.total += e.data.total; return s; },
  });"#;

const FRAGILE: &str = r#"fromStream('feed').when({
  $init: () => ({ n: 0 }),
  Tick: (s, e) => { s.n += 1; return s; },
  Poison: (s, e) => { throw new Error('cannot digest ' + e.data.what); },
});"#;

async fn put(server: &TestServer, name: &str, source: &str) -> Reply {
    server
        .call(
            "PUT",
            &format!("/projections/{name}"),
            &[("content-type", JS)],
            source,
        )
        .await
}

async fn post(server: &TestServer, uri: &str) -> Reply {
    server.call("POST", uri, &[], "").await
}

/// Polls `GET /projections/{name}` until `pred` holds (10 s deadline).
async fn wait_for(server: &TestServer, name: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = server.get(&format!("/projections/{name}")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        if pred(&v) {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting on {name}: {v}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until `name` has applied the event at `position`.
async fn wait_position(server: &TestServer, name: &str, position: u64) -> Value {
    wait_for(server, name, |v| {
        v["position"].as_u64().is_some_and(|p| p >= position) || v["status"] == "faulted"
    })
    .await
}

/// Appends an `OrderPlaced` of `customer` for `total` to `stream`; returns the append result.
async fn place_order(server: &TestServer, stream: &str, customer: &str, total: u64) -> Value {
    let event = json!({"type": "OrderPlaced", "data": {"customer": customer, "total": total}});
    server.append(stream, &event.to_string()).await
}

async fn state(server: &TestServer, name: &str) -> Value {
    let r = server.get(&format!("/projections/{name}/state")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_creates_then_updates_and_lists() {
    let server = TestServer::start();
    let a = server.append("feed", r#"{"type":"Tick"}"#).await;
    let created = put(&server, "count", COUNT_ALL).await;
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(created.header("location"), Some("/projections/count"));
    let body = created.json();
    assert_eq!(body["name"], "count");
    assert_eq!(body["status"], "running");
    assert_eq!(body["query"], COUNT_ALL);
    assert_eq!(body["reads"], json!({"kind": "all"}));
    assert!(body["error"].is_null());
    let p = wait_position(&server, "count", a["last_position"].as_u64().unwrap()).await;
    assert_eq!(p["lag"], 0, "{p}");
    assert_eq!(state(&server, "count").await, json!({"n": 1}));

    // The same source: 200, nothing changes.
    let same = put(&server, "count", COUNT_ALL).await;
    assert_eq!(same.status, 200);
    assert_eq!(same.json()["incarnation"], body["incarnation"]);
    // text/javascript is accepted too; a new source is a new incarnation rebuilt from the start.
    let doubled =
        "fromAll().when({ $init: () => ({ n: 0 }), $any: (s, e) => { s.n += 2; return s; } });";
    let updated = server
        .call_typed(
            "PUT",
            "/projections/count",
            "text/javascript; charset=utf-8",
            doubled,
        )
        .await;
    assert_eq!(updated.status, 200, "{}", updated.text());
    assert_ne!(updated.json()["incarnation"], body["incarnation"]);
    wait_for(&server, "count", |v| v["events_processed"] == 1).await;
    assert_eq!(state(&server, "count").await, json!({"n": 2}));

    let totals = put(&server, "order-totals%202", TOTALS).await;
    assert_eq!(totals.status, 201);
    assert_eq!(
        totals.header("location"),
        Some("/projections/order-totals%202")
    );
    let list = server.get("/projections").await;
    assert_eq!(list.status, 200);
    let names: Vec<Value> = list.json()["projections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            for field in ["name", "status", "position", "lag", "error"] {
                assert!(p.get(field).is_some(), "{field} missing in {p}");
            }
            p["name"].clone()
        })
        .collect();
    assert_eq!(names, vec![json!("count"), json!("order-totals 2")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_scripts_and_bad_requests() {
    let server = TestServer::start();
    let syntax = put(
        &server,
        "bad",
        "fromAll()\n  .when({\n    $any: (s, e) => { s.n += ; },\n  });",
    )
    .await;
    let body = syntax.assert_error(400, "invalid_request");
    assert_eq!(body["line"], 3, "{body}");
    // Runs but defines no projection: 400 without a line.
    let body = put(&server, "bad", "const x = 1;")
        .await
        .assert_error(400, "invalid_request");
    assert!(body.get("line").is_none(), "{body}");
    // Nothing was created.
    server
        .get("/projections/bad")
        .await
        .assert_error(404, "not_found");
    server
        .call_typed("PUT", "/projections/x", "application/json", COUNT_ALL)
        .await
        .assert_error(415, "unsupported_media_type");
    server
        .call("PUT", "/projections/x", &[], COUNT_ALL)
        .await
        .assert_error(415, "unsupported_media_type");
    put(&server, "%24system", COUNT_ALL)
        .await
        .assert_error(400, "invalid_request");
    put(&server, &"n".repeat(256), COUNT_ALL)
        .await
        .assert_error(400, "invalid_request");
    for uri in ["/projections/nope", "/projections/nope/state"] {
        server.get(uri).await.assert_error(404, "not_found");
    }
    for verb in ["stop", "start", "reset"] {
        post(&server, &format!("/projections/nope/{verb}"))
            .await
            .assert_error(404, "not_found");
    }
    server
        .call("DELETE", "/projections/nope", &[], "")
        .await
        .assert_error(404, "not_found");
    server
        .get("/projections?bogus=1")
        .await
        .assert_error(400, "invalid_request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_state_by_key() {
    let server = TestServer::start();
    place_order(&server, "order-1", "c-1", 30).await;
    place_order(&server, "order-2", "c-2", 12).await;
    let last = place_order(&server, "order-3", "c-1", 8).await;
    place_order(&server, "invoice-1", "c-1", 100).await;
    assert_eq!(put(&server, "totals", TOTALS).await.status, 201);
    let p = wait_position(&server, "totals", last["last_position"].as_u64().unwrap()).await;
    assert_eq!(p["partitioned"], true);
    assert_eq!(p["partitions"], 2);
    assert_eq!(p["reads"], json!({"kind": "category", "name": "order"}));
    let c1 = server.get("/projections/totals/state?partition=c-1").await;
    assert_eq!(c1.status, 200);
    assert_eq!(c1.json(), json!({"count": 2, "total": 38}));
    server
        .get("/projections/totals/state?partition=c-9")
        .await
        .assert_error(404, "not_found");
    // Without ?partition: every partition's state.
    assert_eq!(
        state(&server, "totals").await,
        json!({"c-1": {"count": 2, "total": 38}, "c-2": {"count": 1, "total": 12}})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_are_isolated_and_reported_with_the_position() {
    let server = TestServer::start();
    assert_eq!(put(&server, "fragile", FRAGILE).await.status, 201);
    assert_eq!(put(&server, "count", COUNT_ALL).await.status, 201);
    let spin = "fromStream('feed').when({ Tick: (s, e) => { while (true) {} } });";
    let hog = "fromStream('feed').when({ Tick: (s, e) => { const a = []; while (true) { a.push(new Array(100000).fill(7)); } } });";
    assert_eq!(put(&server, "spin", spin).await.status, 201);
    assert_eq!(put(&server, "hog", hog).await.status, 201);
    let first = server.append("feed", r#"{"type":"Tick"}"#).await["last_position"]
        .as_u64()
        .unwrap();
    server.append("feed", r#"{"type":"Tick"}"#).await;
    let poison = server
        .append("feed", r#"{"type":"Poison","data":{"what":"arsenic"}}"#)
        .await["last_position"]
        .as_u64()
        .unwrap();
    server.append("feed", r#"{"type":"Tick"}"#).await;

    let p = wait_for(&server, "fragile", |v| v["status"] == "faulted").await;
    assert!(
        p["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cannot digest arsenic"),
        "{p}"
    );
    assert_eq!(p["error"]["position"], poison, "{p}");
    assert_eq!(p["position"], poison - 1, "{p}");
    assert_eq!(state(&server, "fragile").await, json!({"n": 2}));
    for name in ["spin", "hog"] {
        let p = wait_for(&server, name, |v| v["status"] == "faulted").await;
        assert_eq!(p["error"]["position"], first, "{p}");
        assert!(
            p["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{p}"
        );
    }
    // The rest keeps working.
    let last = server.append("other", r#"{"type":"Tick"}"#).await;
    let c = wait_position(&server, "count", last["last_position"].as_u64().unwrap()).await;
    assert_eq!(c["status"], "running");
    assert_eq!(state(&server, "count").await, json!({"n": 5}));
    assert_eq!(server.get("/health").await.status, 200);
    // Faulted stays faulted; start retries the failing event (and faults again).
    let again = post(&server, "/projections/fragile/start").await;
    assert_eq!(again.status, 200, "{}", again.text());
    let p = wait_for(&server, "fragile", |v| v["status"] == "faulted").await;
    assert_eq!(p["error"]["position"], poison);
    // Stop clears the fault.
    let stopped = post(&server, "/projections/fragile/stop").await;
    assert_eq!(stopped.status, 200);
    assert_eq!(stopped.json()["status"], "stopped");
    assert!(stopped.json()["error"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_start_reset_delete() {
    let server = TestServer::start();
    put(&server, "count", COUNT_ALL).await;
    let a = server.append("feed", r#"{"type":"Tick"}"#).await;
    wait_position(&server, "count", a["last_position"].as_u64().unwrap()).await;

    let stopped = post(&server, "/projections/count/stop").await;
    assert_eq!(stopped.status, 200);
    assert_eq!(stopped.json()["status"], "stopped");
    assert_eq!(stopped.json()["checkpoint_position"], a["last_position"]);
    server.append("feed", r#"{"type":"Tick"}"#).await;
    let p = server.get("/projections/count").await.json();
    assert_eq!(p["status"], "stopped");
    assert!(p["lag"].as_u64().unwrap() >= 1, "{p}");
    assert_eq!(state(&server, "count").await, json!({"n": 1}));

    let started = post(&server, "/projections/count/start").await;
    assert_eq!(started.status, 200);
    assert_eq!(started.json()["status"], "running");
    wait_for(&server, "count", |v| v["events_processed"] == 2).await;
    assert_eq!(state(&server, "count").await, json!({"n": 2}));

    let before = server.get("/projections/count").await.json();
    let reset = post(&server, "/projections/count/reset").await;
    assert_eq!(reset.status, 200);
    assert_ne!(reset.json()["incarnation"], before["incarnation"]);
    // A reset keeps the generation (the seed of emitted-event ids).
    assert_eq!(reset.json()["generation"], before["generation"]);
    wait_for(&server, "count", |v| v["events_processed"] == 2).await;
    assert_eq!(state(&server, "count").await, json!({"n": 2}));

    let deleted = server.call("DELETE", "/projections/count", &[], "").await;
    assert_eq!(deleted.status, 204);
    server
        .get("/projections/count")
        .await
        .assert_error(404, "not_found");
    // Its checkpoints went with it.
    assert_eq!(server.get("/streams/%24projection-count").await.status, 410);
    // The name can be used again, from scratch.
    assert_eq!(put(&server, "count", COUNT_ALL).await.status, 201);
    wait_for(&server, "count", |v| v["events_processed"] == 2).await;
}

async fn put_as(server: &TestServer, token: &str) -> Reply {
    server
        .call(
            "PUT",
            "/projections/count",
            &[("content-type", JS), ("authorization", token)],
            COUNT_ALL,
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_auth() {
    let server = TestServer::with(|c| {
        c.auth.add_token("adm", Role::Admin, vec![]);
        c.auth.add_token("r", Role::Read, vec![]);
        c.auth.add_token("w", Role::Write, vec![]);
        c.auth
            .add_token("scoped", Role::Read, vec!["order-".into()]);
    });
    let auth = |t: &'static str| format!("Bearer {t}");
    let (adm, r, w, scoped) = (auth("adm"), auth("r"), auth("w"), auth("scoped"));
    put_as(&server, &r).await.assert_error(403, "forbidden");
    put_as(&server, &w).await.assert_error(403, "forbidden");
    assert_eq!(put_as(&server, &adm).await.status, 201);
    assert_eq!(server.get_as("/projections/count", &r).await.status, 200);
    assert_eq!(
        server.get_as("/projections/count/state", &r).await.status,
        200
    );
    server
        .get_as("/projections", &scoped)
        .await
        .assert_error(403, "forbidden");
    server
        .call_as("POST", "/projections/count/stop", &r)
        .await
        .assert_error(403, "forbidden");
    let metrics = server.get_as("/metrics", &r).await.text();
    assert!(
        metrics.contains("strata_projection_lag{projection=\"count\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("strata_projection_status{projection=\"count\",status=\"running\"} 1"));
    assert!(metrics.contains("strata_projection_events_processed_total{projection=\"count\"}"));
}

/// An App over a data directory, restartable (the harness's TestServer owns its directory).
struct Host {
    app: App,
    router: Router,
}

impl Host {
    fn open(dir: &std::path::Path) -> Host {
        let mut config = Config::new(dir);
        config.store.fsync = FsyncPolicy::Never;
        let store = Store::open(dir, config.store_options()).unwrap();
        let app = App::new(store, &config);
        Host {
            router: app.router(),
            app,
        }
    }

    async fn call(&self, method: &str, uri: &str, ct: Option<&str>, body: &str) -> (u16, Value) {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        let res = self
            .router
            .clone()
            .oneshot(req.body(Body::from(body.to_owned())).unwrap())
            .await
            .unwrap();
        let status = res.status().as_u16();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// Appends a `Tick` to `feed`.
    async fn tick(&self) {
        self.call(
            "POST",
            "/streams/feed",
            Some("application/json"),
            r#"{"type":"Tick"}"#,
        )
        .await;
    }

    async fn wait(&self, name: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (_, v) = self
                .call("GET", &format!("/projections/{name}"), None, "")
                .await;
            if pred(&v) {
                return v;
            }
            assert!(tokio::time::Instant::now() < deadline, "timed out: {v}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn close(self) {
        let app = self.app.clone();
        tokio::task::spawn_blocking(move || app.stop_projections())
            .await
            .unwrap();
        let store = self.app.store().clone();
        drop(self);
        tokio::task::spawn_blocking(move || store.close())
            .await
            .unwrap()
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_from_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let host = Host::open(dir.path());
    for name in ["count", "paused"] {
        let (status, _) = host
            .call("PUT", &format!("/projections/{name}"), Some(JS), COUNT_ALL)
            .await;
        assert_eq!(status, 201);
    }
    for _ in 0..3 {
        host.tick().await;
    }
    host.wait("count", |v| v["events_processed"] == 3).await;
    host.wait("paused", |v| v["events_processed"] == 3).await;
    let (status, _) = host
        .call("POST", "/projections/paused/stop", None, "")
        .await;
    assert_eq!(status, 200);
    host.close().await;

    let host = Host::open(dir.path());
    // Restored from the checkpoint at once: the 3 events are not applied again.
    let (_, p) = host.call("GET", "/projections/count", None, "").await;
    assert_eq!(p["events_processed"], 3, "{p}");
    assert_eq!(p["status"], "running");
    let (_, s) = host.call("GET", "/projections/count/state", None, "").await;
    assert_eq!(s, json!({"n": 3}));
    let (_, paused) = host.call("GET", "/projections/paused", None, "").await;
    assert_eq!(paused["status"], "stopped", "{paused}");
    host.tick().await;
    let p = host.wait("count", |v| v["events_processed"] == 4).await;
    assert_eq!(p["status"], "running");
    let (_, s) = host.call("GET", "/projections/count/state", None, "").await;
    assert_eq!(s, json!({"n": 4}));
    let (_, s) = host
        .call("GET", "/projections/paused/state", None, "")
        .await;
    assert_eq!(s, json!({"n": 3}));
    host.close().await;
}
