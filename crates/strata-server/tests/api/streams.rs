//! `GET /streams`, `DELETE /streams/{stream}`, stream metadata.

use serde_json::{json, Value};

use crate::support::{page_events, revisions, TestServer};

fn names(v: &Value) -> Vec<String> {
    v["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_owned())
        .collect()
}

async fn put_meta(s: &TestServer, stream: &str, body: &str) -> crate::support::Reply {
    s.call_typed(
        "PUT",
        &format!("/streams/{stream}/metadata"),
        "application/json",
        body,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_is_sorted_paged_and_filtered() {
    let s = TestServer::start();
    for name in ["b-2", "a-1", "c-3", "a-2", "gone-1"] {
        s.append(name, r#"{"type":"T"}"#).await;
    }
    s.append("a-1", r#"{"type":"T"}"#).await;
    assert_eq!(
        s.call("DELETE", "/streams/gone-1", &[], "").await.status,
        204
    );
    assert_eq!(put_meta(&s, "b-2", r#"{"max_count":1}"#).await.status, 200);
    let v = s.get("/streams").await.json();
    assert_eq!(names(&v), ["a-1", "a-2", "b-2", "c-3"]);
    assert_eq!(v["next"], Value::Null);
    assert_eq!(
        v["streams"][0],
        json!({"name": "a-1", "last_revision": 1, "last_position": 5})
    );
    let v = s.get("/streams?limit=2").await.json();
    assert_eq!(names(&v), ["a-1", "a-2"]);
    assert_eq!(v["next"], "a-2");
    let v = s.get("/streams?limit=2&after=a-2").await.json();
    assert_eq!(names(&v), ["b-2", "c-3"]);
    let v = s.get("/streams?prefix=a-").await.json();
    assert_eq!(names(&v), ["a-1", "a-2"]);
    for q in ["limit=0", "limit=10001", "limit=x", "sort=desc"] {
        s.get(&format!("/streams?{q}"))
            .await
            .assert_error(400, "invalid_request");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletes() {
    let s = TestServer::start();
    s.call("DELETE", "/streams/never", &[], "")
        .await
        .assert_error(404, "stream_not_found");
    s.append_many("del-1", 3).await;
    // Expected-Revision is honoured.
    let v = s
        .call(
            "DELETE",
            "/streams/del-1",
            &[("expected-revision", "1")],
            "",
        )
        .await
        .assert_error(409, "wrong_expected_revision");
    assert_eq!(
        (v["expected"].clone(), v["actual"].clone()),
        (json!(1), json!(2))
    );
    let r = s
        .call(
            "DELETE",
            "/streams/del-1",
            &[("expected-revision", "2")],
            "",
        )
        .await;
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
    s.call("DELETE", "/streams/del-1", &[], "")
        .await
        .assert_error(410, "stream_deleted");
    // Soft-deleted events stay hidden after re-creation.
    s.append("del-1", r#"{"type":"Again"}"#).await;
    let v = s.get("/streams/del-1").await.json();
    assert_eq!(v["events"].as_array().unwrap().len(), 1);
    assert_eq!(v["events"][0]["revision"], 3);
    // Hard delete: a tombstone, even after a soft one.
    assert_eq!(
        s.call("DELETE", "/streams/del-1?hard=true", &[], "")
            .await
            .status,
        204
    );
    s.get("/streams/del-1")
        .await
        .assert_error(410, "stream_deleted");
    s.post(
        "/streams/del-1",
        r#"{"type":"T"}"#,
        &[("expected-revision", "no_stream")],
    )
    .await
    .assert_error(410, "stream_deleted");
    s.call("DELETE", "/streams/del-1?hard=maybe", &[], "")
        .await
        .assert_error(400, "invalid_request");
    s.call("DELETE", "/streams/$x", &[], "")
        .await
        .assert_error(400, "invalid_request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_round_trips_and_limits_reads() {
    let s = TestServer::start();
    let r = s.get("/streams/m-1/metadata").await;
    assert_eq!((r.status, r.json()), (200, json!({})));
    s.append_many("m-1", 10).await;
    let body = r#"{"max_count":3,"custom":{"owner":"team-a","n":[1,2]}}"#;
    let r = put_meta(&s, "m-1", body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), serde_json::from_str::<Value>(body).unwrap());
    assert_eq!(s.get("/streams/m-1/metadata").await.json(), r.json());
    let v = s.get("/streams/m-1").await.json();
    assert_eq!(revisions(&v), [7, 8, 9]);
    // Replaced, not merged.
    assert_eq!(
        put_meta(&s, "m-1", r#"{"truncate_before":8}"#).await.status,
        200
    );
    assert_eq!(
        s.get("/streams/m-1/metadata").await.json(),
        json!({"truncate_before": 8})
    );
    let v = s
        .get_with("/streams/m-1", &[("accept", "application/x-ndjson")])
        .await;
    assert_eq!(crate::support::ndjson(&v.body).len(), 2);
    assert_eq!(
        put_meta(&s, "m-1", r#"{"max_age_seconds":0}"#).await.status,
        200
    );
    // Errors.
    put_meta(&s, "m-1", r#"{"max_count":-1}"#)
        .await
        .assert_error(400, "invalid_request");
    put_meta(&s, "m-1", r#"{"colour":"red"}"#)
        .await
        .assert_error(400, "invalid_request");
    put_meta(&s, "m-1", "nope")
        .await
        .assert_error(400, "invalid_request");
    s.call_typed("PUT", "/streams/m-1/metadata", "text/plain", "{}")
        .await
        .assert_error(415, "unsupported_media_type");
    put_meta(&s, "$m", "{}")
        .await
        .assert_error(400, "invalid_request");
    // Metadata may be set before the stream exists.
    assert_eq!(put_meta(&s, "m-2", r#"{"max_count":1}"#).await.status, 200);
    s.append_many("m-2", 3).await;
    assert_eq!(page_events(&s.get("/streams/m-2").await.json()).len(), 1);
    // Tombstoned streams: 410.
    assert_eq!(
        s.call("DELETE", "/streams/m-2?hard=true", &[], "")
            .await
            .status,
        204
    );
    s.get("/streams/m-2/metadata")
        .await
        .assert_error(410, "stream_deleted");
    put_meta(&s, "m-2", "{}")
        .await
        .assert_error(410, "stream_deleted");
}
