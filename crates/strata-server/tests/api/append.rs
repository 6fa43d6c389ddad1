//! `POST /streams/{stream}`.

use serde_json::{json, Value};

use crate::support::{event_types, page_events, positions, revisions, TestServer};

const ID1: &str = "6f1c7a5e-0c1b-4d5e-9d7a-1b2c3d4e5f60";
const ID2: &str = "7f1c7a5e-0c1b-4d5e-9d7a-1b2c3d4e5f61";
const ID3: &str = "8f1c7a5e-0c1b-4d5e-9d7a-1b2c3d4e5f62";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn append_one_event_and_read_it_back_exactly() {
    let s = TestServer::start();
    let data =
        r#"{"total": 99.0, "zeta": 1, "alpha": [1.50, 2e3], "big": 12345678901234567890123}"#;
    let r = s
        .post(
            "/streams/order-42",
            &format!(r#"{{"type": "OrderPlaced", "data": {data}, "metadata": {{"correlation_id": "abc"}}}}"#),
            &[],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.header("location"), Some("/streams/order-42/0"));
    assert_eq!(
        r.json(),
        json!({"stream": "order-42", "first_revision": 0, "last_revision": 0, "first_position": 0, "last_position": 0})
    );
    let page = s.get("/streams/order-42").await;
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-type"), Some("application/json"));
    // The data text comes back byte for byte (number spelling, key order, big integers).
    assert!(
        page.text().contains(&format!(r#""data":{data}"#)),
        "{}",
        page.text()
    );
    let v = page.json();
    let e = &v["events"][0];
    assert_eq!(e["stream"], "order-42");
    assert_eq!(e["revision"], 0);
    assert_eq!(e["position"], 0);
    assert_eq!(e["type"], "OrderPlaced");
    assert_eq!(e["metadata"], json!({"correlation_id": "abc"}));
    assert!(uuid::Uuid::parse_str(e["id"].as_str().unwrap()).is_ok());
    let ts = e["timestamp"].as_str().unwrap();
    assert_eq!(ts.len(), "2026-11-22T05:00:00.123456Z".len(), "{ts}");
    assert!(ts.ends_with('Z') && ts.as_bytes()[10] == b'T' && ts.as_bytes()[19] == b'.');
    assert_eq!(v["next"], 1);
    assert_eq!(v["end"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_contiguous_and_in_order() {
    let s = TestServer::start();
    s.append("other", r#"{"type":"X"}"#).await;
    let r = s
        .append(
            "order-1",
            r#"[{"type":"A","data":1},{"type":"B","data":2},{"type":"C","data":3}]"#,
        )
        .await;
    assert_eq!(
        r,
        json!({"stream": "order-1", "first_revision": 0, "last_revision": 2, "first_position": 1, "last_position": 3})
    );
    let v = s.get("/streams/order-1").await.json();
    assert_eq!(event_types(&v), ["A", "B", "C"]);
    assert_eq!(positions(&v), [1, 2, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_with_one_bad_event_writes_nothing() {
    let s = TestServer::start();
    for body in [
        r#"[{"type":"A"},{"type":"B","unknown":1}]"#,
        r#"[{"type":"A"},{"type":""}]"#,
        r#"[{"type":"A"},{"data":1}]"#,
        r#"[{"type":"A"},{"type":"B","data":1,"data_base64":"AA=="}]"#,
        r#"[{"type":"A","id":"6f1c7a5e-0c1b-4d5e-9d7a-1b2c3d4e5f60"},{"type":"B","id":"6f1c7a5e-0c1b-4d5e-9d7a-1b2c3d4e5f60"}]"#,
    ] {
        s.post("/streams/s", body, &[])
            .await
            .assert_error(400, "invalid_request");
    }
    s.get("/streams/s")
        .await
        .assert_error(404, "stream_not_found");
    assert_eq!(s.app.store().next_position(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_are_400() {
    let s = TestServer::start();
    for body in [
        "",
        "{",
        "[]",
        "42",
        "\"x\"",
        "null",
        r#"{"type":"A"} trailing"#,
        r#"{"type":1}"#,
        r#"{"type":"A","id":"nope"}"#,
    ] {
        s.post("/streams/s", body, &[])
            .await
            .assert_error(400, "invalid_request");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_events_round_trip_as_base64() {
    let s = TestServer::start();
    s.append("blobs", r#"{"type":"Blob","data_base64":"AJ+Slg=="}"#)
        .await;
    let e = &s.get("/streams/blobs/0").await.json();
    assert_eq!(e["data_base64"], "AJ+Slg==");
    assert!(e.get("data").is_none());
    assert_eq!(e["metadata"], Value::Null);
    s.post(
        "/streams/blobs",
        r#"{"type":"Blob","data_base64":"not base64!"}"#,
        &[],
    )
    .await
    .assert_error(400, "invalid_request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_and_metadata_are_optional() {
    let s = TestServer::start();
    s.append("s", r#"{"type":"Empty"}"#).await;
    s.append("s", r#"{"type":"Nulls","data":null,"metadata":null}"#)
        .await;
    for e in page_events(&s.get("/streams/s").await.json()) {
        assert_eq!(e["data"], Value::Null);
        assert_eq!(e["metadata"], Value::Null);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expected_revision() {
    let s = TestServer::start();
    let post = |h: &'static str| {
        let s = &s;
        async move {
            s.post(
                "/streams/acc-1",
                r#"{"type":"T"}"#,
                &[("expected-revision", h)],
            )
            .await
        }
    };
    // stream_exists on a missing stream.
    let v = post("stream_exists")
        .await
        .assert_error(409, "wrong_expected_revision");
    assert_eq!(
        (v["expected"].clone(), v["actual"].clone()),
        (json!("stream_exists"), json!("no_stream"))
    );
    let v = post("0").await.assert_error(409, "wrong_expected_revision");
    assert_eq!(
        (v["expected"].clone(), v["actual"].clone()),
        (json!(0), json!("no_stream"))
    );
    assert_eq!(post("no_stream").await.status, 201);
    let v = post("no_stream")
        .await
        .assert_error(409, "wrong_expected_revision");
    assert_eq!(
        (v["expected"].clone(), v["actual"].clone()),
        (json!("no_stream"), json!(0))
    );
    assert_eq!(post("0").await.status, 201);
    let v = post("0").await.assert_error(409, "wrong_expected_revision");
    assert_eq!(
        (v["expected"].clone(), v["actual"].clone()),
        (json!(0), json!(1))
    );
    assert_eq!(post("stream_exists").await.status, 201);
    assert_eq!(post("any").await.status, 201);
    assert_eq!(post("3").await.status, 201);
    for bad in ["-1", "latest", "1.5", ""] {
        post(bad).await.assert_error(400, "invalid_request");
    }
    assert_eq!(page_events(&s.get("/streams/acc-1").await.json()).len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_appends_with_the_same_expected_revision_have_one_winner() {
    let s = std::sync::Arc::new(TestServer::start());
    s.append("race", r#"{"type":"Init"}"#).await;
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.post(
                "/streams/race",
                &format!(r#"{{"type":"T","data":{i}}}"#),
                &[("expected-revision", "0")],
            )
            .await
            .status
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [201, 409, 409, 409, 409, 409, 409, 409]);
    let v = s.get("/streams/race").await.json();
    assert_eq!(revisions(&v), [0, 1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_retries() {
    let s = TestServer::start();
    let batch = format!(r#"[{{"id":"{ID1}","type":"A"}},{{"id":"{ID2}","type":"B"}}]"#);
    let first = s.post("/streams/pay-1", &batch, &[]).await;
    assert_eq!(first.status, 201);
    s.append("pay-1", r#"{"type":"Later"}"#).await;
    // The same run again: 200 with the original body, nothing written.
    let retry = s.post("/streams/pay-1", &batch, &[]).await;
    assert_eq!(retry.status, 200, "{}", retry.text());
    assert_eq!(retry.json(), first.json());
    assert_eq!(retry.header("location"), Some("/streams/pay-1/0"));
    // With an exact expected revision: must start right after it.
    let retry = s
        .post(
            "/streams/pay-1",
            &batch,
            &[("expected-revision", "no_stream")],
        )
        .await;
    assert_eq!(retry.status, 200, "{}", retry.text());
    s.post("/streams/pay-1", &batch, &[("expected-revision", "1")])
        .await
        .assert_error(409, "duplicate_event_id");
    // Some ids new, some old: 409.
    let mixed = format!(r#"[{{"id":"{ID2}","type":"B"}},{{"id":"{ID3}","type":"C"}}]"#);
    let v = s
        .post("/streams/pay-1", &mixed, &[])
        .await
        .assert_error(409, "duplicate_event_id");
    assert_eq!(v["id"], ID2);
    // Not as the same run (order differs): 409.
    let reordered = format!(r#"[{{"id":"{ID2}","type":"B"}},{{"id":"{ID1}","type":"A"}}]"#);
    s.post("/streams/pay-1", &reordered, &[])
        .await
        .assert_error(409, "duplicate_event_id");
    // A sub-run of the original is still "the same events": 200.
    let single = format!(r#"{{"id":"{ID2}","type":"B"}}"#);
    let r = s.post("/streams/pay-1", &single, &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["first_revision"], 1);
    // Ids are per stream.
    let other = s.post("/streams/pay-2", &batch, &[]).await;
    assert_eq!(other.status, 201);
    assert_eq!(page_events(&s.get("/streams/pay-1").await.json()).len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_names() {
    let s = TestServer::start();
    s.post("/streams/$system", r#"{"type":"T"}"#, &[])
        .await
        .assert_error(400, "invalid_request");
    s.post("/streams/%24%24order", r#"{"type":"T"}"#, &[])
        .await
        .assert_error(400, "invalid_request");
    s.post("/streams/a%0Ab", r#"{"type":"T"}"#, &[])
        .await
        .assert_error(400, "invalid_request");
    let long = "a".repeat(256);
    s.post(&format!("/streams/{long}"), r#"{"type":"T"}"#, &[])
        .await
        .assert_error(400, "invalid_request");
    let ok = "a".repeat(255);
    assert_eq!(
        s.post(&format!("/streams/{ok}"), r#"{"type":"T"}"#, &[])
            .await
            .status,
        201
    );
    // Percent-encoded names, including '/' and non-ASCII, round-trip.
    let r = s
        .post("/streams/t%C3%A9st%2Fx%20y", r#"{"type":"T"}"#, &[])
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(r.header("location"), Some("/streams/t%C3%A9st%2Fx%20y/0"));
    assert_eq!(
        s.get("/streams/t%C3%A9st%2Fx%20y/0").await.json()["stream"],
        "tést/x y"
    );
    // Types: 1-255 bytes.
    let t = "t".repeat(256);
    s.post("/streams/s", &format!(r#"{{"type":"{t}"}}"#), &[])
        .await
        .assert_error(400, "invalid_request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_type_must_be_json() {
    let s = TestServer::start();
    let body = r#"{"type":"T"}"#;
    s.call("POST", "/streams/s", &[], body)
        .await
        .assert_error(415, "unsupported_media_type");
    s.call_typed("POST", "/streams/s", "text/plain", body)
        .await
        .assert_error(415, "unsupported_media_type");
    s.call_typed(
        "POST",
        "/streams/s",
        "application/x-www-form-urlencoded",
        body,
    )
    .await
    .assert_error(415, "unsupported_media_type");
    let r = s
        .call_typed(
            "POST",
            "/streams/s",
            "application/json; charset=utf-8",
            body,
        )
        .await;
    assert_eq!(r.status, 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_limits_are_413() {
    let s = TestServer::with(|c| {
        c.limits.max_body_bytes = 4096;
        c.limits.max_event_bytes = 1000;
        c.limits.max_events_per_append = 10;
    });
    // Announced too large: refused before reading.
    s.call(
        "POST",
        "/streams/s",
        &[
            ("content-type", "application/json"),
            ("content-length", "999999"),
        ],
        r#"{"type":"T"}"#,
    )
    .await
    .assert_error(413, "payload_too_large");
    // Too large without a Content-Length (chunked).
    let big = format!(r#"{{"type":"T","data":"{}"}}"#, "x".repeat(5000));
    s.post("/streams/s", &big, &[])
        .await
        .assert_error(413, "payload_too_large");
    // One event over the event limit.
    let event = format!(r#"{{"type":"T","data":"{}"}}"#, "x".repeat(1001));
    s.post("/streams/s", &event, &[])
        .await
        .assert_error(413, "payload_too_large");
    let meta = format!(
        r#"{{"type":"T","data":"{}","metadata":"{}"}}"#,
        "x".repeat(500),
        "y".repeat(500)
    );
    s.post("/streams/s", &meta, &[])
        .await
        .assert_error(413, "payload_too_large");
    // Too many events.
    let many = format!("[{}]", [r#"{"type":"T"}"#; 11].join(","));
    s.post("/streams/s", &many, &[])
        .await
        .assert_error(413, "payload_too_large");
    let ten = format!("[{}]", [r#"{"type":"T"}"#; 10].join(","));
    assert_eq!(s.post("/streams/s", &ten, &[]).await.status, 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_limits_accept_10000_events() {
    let s = TestServer::start();
    let many = format!("[{}]", vec![r#"{"type":"T","data":0}"#; 10_000].join(","));
    let r = s.append("bulk", &many).await;
    assert_eq!(r["last_revision"], 9999);
    let too_many = format!("[{}]", vec![r#"{"type":"T"}"#; 10_001].join(","));
    s.post("/streams/bulk", &too_many, &[])
        .await
        .assert_error(413, "payload_too_large");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_count_of_tiny_events_is_413_without_reading_them_all() {
    let s = TestServer::with(|c| c.limits.max_events_per_append = 10);
    // A million events (~13 MB, under the body limit) and a tail that is not JSON: only a
    // parser that stops at event 11 answers 413 (reading on would find the tail: 400).
    let mut body = String::with_capacity(13_000_100);
    body.push('[');
    for _ in 0..1_000_000 {
        body.push_str(r#"{"type":"T"},"#);
    }
    body.push_str("not JSON");
    assert!(body.len() < 16 * 1024 * 1024);
    let v = s
        .post("/streams/flood", &body, &[])
        .await
        .assert_error(413, "payload_too_large");
    assert!(v["message"].as_str().unwrap().contains("10"), "{v}");
    s.get("/streams/flood")
        .await
        .assert_error(404, "stream_not_found");
    // Small and large bodies within the limits (inline and blocking-pool parsing) append.
    let ten = format!("[{}]", [r#"{"type":"T"}"#; 10].join(","));
    assert_eq!(s.post("/streams/flood", &ten, &[]).await.status, 201);
    let big = format!(r#"[{{"type":"T","data":"{}"}}]"#, "x".repeat(200 * 1024));
    let r = s.post("/streams/flood", &big, &[]).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["first_revision"], 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appending_to_deleted_streams() {
    let s = TestServer::start();
    s.append("soft", r#"[{"type":"A"},{"type":"B"}]"#).await;
    assert_eq!(s.call("DELETE", "/streams/soft", &[], "").await.status, 204);
    // Re-created by an append, revisions continue.
    let r = s
        .post(
            "/streams/soft",
            r#"{"type":"C"}"#,
            &[("expected-revision", "no_stream")],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["first_revision"], 2);
    let v = s.get("/streams/soft").await.json();
    assert_eq!(v["events"].as_array().unwrap().len(), 1);
    assert_eq!(v["events"][0]["revision"], 2);

    s.append("hard", r#"{"type":"A"}"#).await;
    assert_eq!(
        s.call("DELETE", "/streams/hard?hard=true", &[], "")
            .await
            .status,
        204
    );
    s.post("/streams/hard", r#"{"type":"A"}"#, &[])
        .await
        .assert_error(410, "stream_deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_query_parameters_are_400() {
    let s = TestServer::start();
    s.post("/streams/s?x=1", r#"{"type":"A"}"#, &[])
        .await
        .assert_error(400, "invalid_request");
}
