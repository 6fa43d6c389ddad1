//! `GET /streams/{stream}`, `GET /all`, `GET /streams/{stream}/{revision}`: JSON pages and
//! NDJSON replays.

use serde_json::{json, Value};

use crate::support::{ndjson, positions, revisions, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_pages_forward_and_backward() {
    let s = TestServer::start();
    s.append_many("s-1", 10).await;
    let v = s.get("/streams/s-1?limit=4").await.json();
    assert_eq!(revisions(&v), [0, 1, 2, 3]);
    assert_eq!(
        (v["next"].clone(), v["end"].clone()),
        (json!(4), json!(false))
    );
    let v = s.get("/streams/s-1?from=8&limit=4").await.json();
    assert_eq!(revisions(&v), [8, 9]);
    assert_eq!(
        (v["next"].clone(), v["end"].clone()),
        (json!(10), json!(true))
    );
    let v = s.get("/streams/s-1?from=start&limit=100").await.json();
    assert_eq!(revisions(&v).len(), 10);
    // from=end forward: nothing yet, the value to poll from.
    let v = s.get("/streams/s-1?from=end").await.json();
    assert_eq!(revisions(&v), Vec::<u64>::new());
    assert_eq!(
        (v["next"].clone(), v["end"].clone()),
        (json!(10), json!(true))
    );
    // Backward: from the end by default.
    let v = s
        .get("/streams/s-1?direction=backward&limit=3")
        .await
        .json();
    assert_eq!(revisions(&v), [9, 8, 7]);
    assert_eq!(
        (v["next"].clone(), v["end"].clone()),
        (json!(6), json!(false))
    );
    let v = s.get("/streams/s-1?direction=backward&from=2").await.json();
    assert_eq!(revisions(&v), [2, 1, 0]);
    assert_eq!(
        (v["next"].clone(), v["end"].clone()),
        (Value::Null, json!(true))
    );
    let v = s
        .get("/streams/s-1?direction=backward&from=start")
        .await
        .json();
    assert_eq!(revisions(&v), [0]);
    // Following `next` pages through everything exactly once.
    let mut seen = Vec::new();
    let mut from = "start".to_owned();
    loop {
        let v = s
            .get(&format!("/streams/s-1?from={from}&limit=3"))
            .await
            .json();
        seen.extend(revisions(&v));
        if v["end"] == true {
            break;
        }
        from = v["next"].to_string();
    }
    assert_eq!(seen, (0..10).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_parameters_are_validated() {
    let s = TestServer::start();
    s.append_many("s", 1).await;
    for q in [
        "limit=0",
        "limit=10001",
        "limit=abc",
        "from=-1",
        "from=soon",
        "direction=sideways",
        "types=A",
        "category=x",
        "bogus=1",
        "limit=1&limit=2",
    ] {
        s.get(&format!("/streams/s?{q}"))
            .await
            .assert_error(400, "invalid_request");
    }
    for q in ["limit=0", "include_system=maybe", "from=x", "nope=1"] {
        s.get(&format!("/all?{q}"))
            .await
            .assert_error(400, "invalid_request");
    }
    assert_eq!(s.get("/streams/s?limit=10000").await.status, 200);
    assert_eq!(s.get("/streams/s?limit=1").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_and_deleted_streams() {
    let s = TestServer::start();
    s.get("/streams/never")
        .await
        .assert_error(404, "stream_not_found");
    s.get_with("/streams/never", &[("accept", "application/x-ndjson")])
        .await
        .assert_error(404, "stream_not_found");
    s.get("/streams/never/0")
        .await
        .assert_error(404, "stream_not_found");
    s.append_many("gone", 2).await;
    assert_eq!(s.call("DELETE", "/streams/gone", &[], "").await.status, 204);
    s.get("/streams/gone")
        .await
        .assert_error(410, "stream_deleted");
    s.get_with("/streams/gone", &[("accept", "application/x-ndjson")])
        .await
        .assert_error(410, "stream_deleted");
    s.get("/streams/gone/0")
        .await
        .assert_error(410, "stream_deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_event_by_revision() {
    let s = TestServer::start();
    s.append_many("one", 3).await;
    let e = s.get("/streams/one/2").await;
    assert_eq!(e.status, 200);
    assert_eq!(e.json()["revision"], 2);
    assert_eq!(e.json()["data"], json!({"i": 2}));
    s.get("/streams/one/3").await.assert_error(404, "not_found");
    s.get("/streams/one/x")
        .await
        .assert_error(400, "invalid_request");
    s.get("/streams/one/-1")
        .await
        .assert_error(400, "invalid_request");
    // Hidden by metadata: not found.
    let r = s
        .call_typed(
            "PUT",
            "/streams/one/metadata",
            "application/json",
            r#"{"truncate_before":2}"#,
        )
        .await;
    assert_eq!(r.status, 200);
    s.get("/streams/one/1").await.assert_error(404, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_pages_and_filters() {
    let s = TestServer::start();
    s.append(
        "order-1",
        r#"[{"type":"OrderPlaced"},{"type":"OrderShipped"}]"#,
    )
    .await;
    s.append("user-1", r#"{"type":"UserCreated"}"#).await;
    s.append("order-2", r#"{"type":"OrderPlaced"}"#).await;
    s.append("order", r#"{"type":"Other"}"#).await;
    s.append("orders-9", r#"{"type":"OrderPlaced"}"#).await;
    let v = s.get("/all").await.json();
    assert_eq!(positions(&v), [0, 1, 2, 3, 4, 5]);
    assert_eq!(
        (v["next"].clone(), v["end"].clone()),
        (json!(6), json!(true))
    );
    let v = s.get("/all?limit=2&from=1").await.json();
    assert_eq!(positions(&v), [1, 2]);
    assert_eq!(
        (v["next"].clone(), v["end"].clone()),
        (json!(3), json!(false))
    );
    let v = s.get("/all?direction=backward&limit=2").await.json();
    assert_eq!(positions(&v), [5, 4]);
    assert_eq!(v["next"], 3);
    let v = s.get("/all?direction=backward&from=1").await.json();
    assert_eq!(positions(&v), [1, 0]);
    assert_eq!(
        (v["next"].clone(), v["end"].clone()),
        (Value::Null, json!(true))
    );
    // Filters.
    assert_eq!(
        positions(&s.get("/all?types=OrderPlaced").await.json()),
        [0, 3, 5]
    );
    assert_eq!(
        positions(&s.get("/all?types=OrderPlaced,UserCreated").await.json()),
        [0, 2, 3, 5]
    );
    assert_eq!(
        positions(&s.get("/all?category=order").await.json()),
        [0, 1, 3, 4]
    );
    assert_eq!(
        positions(&s.get("/all?category=order&types=OrderShipped").await.json()),
        [1]
    );
    assert_eq!(
        positions(&s.get("/all?stream_prefix=order-").await.json()),
        [0, 1, 3]
    );
    assert_eq!(
        positions(&s.get("/all?stream_prefix=orders").await.json()),
        [5]
    );
    // A filtered page skips positions; `next` continues after the last one returned.
    let v = s.get("/all?types=OrderPlaced&limit=2").await.json();
    assert_eq!(positions(&v), [0, 3]);
    assert_eq!(v["end"], false);
    let next = v["next"].as_u64().unwrap();
    assert!(next > 3 && next <= 5, "{next}");
    let v = s
        .get(&format!("/all?types=OrderPlaced&limit=2&from={next}"))
        .await
        .json();
    assert_eq!(positions(&v), [5]);
    assert_eq!(v["end"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_streams_only_with_include_system() {
    let s = TestServer::start();
    s.append("s", r#"{"type":"A"}"#).await;
    let r = s
        .call_typed(
            "PUT",
            "/streams/s/metadata",
            "application/json",
            r#"{"max_count":5}"#,
        )
        .await;
    assert_eq!(r.status, 200);
    let plain = s.get("/all").await.json();
    assert_eq!(plain["events"].as_array().unwrap().len(), 1);
    let with = s.get("/all?include_system=true").await.json();
    let events = with["events"].as_array().unwrap();
    assert_eq!(events.len(), 2);
    assert!(events[1]["stream"].as_str().unwrap().starts_with('$'));
    assert_eq!(events[1]["position"], 1);
    // `$`-streams can be read directly (admin).
    let name = events[1]["stream"].as_str().unwrap().replace('$', "%24");
    assert_eq!(s.get(&format!("/streams/{name}")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ndjson_replays_everything_without_a_limit_cap() {
    let s = TestServer::start();
    s.append_many("big-1", 12_000).await;
    s.append("other-1", r#"{"type":"Other","data":"line\nbreak"}"#)
        .await;
    s.append_many("big-1", 100).await;
    let r = s
        .get_with("/streams/big-1", &[("accept", "application/x-ndjson")])
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
    let lines = ndjson(&r.body);
    assert_eq!(lines.len(), 12_100);
    for (i, e) in lines.iter().enumerate() {
        assert_eq!(e["revision"], i as u64);
    }
    // `limit` does not cap a replay; `from` and `direction` apply.
    let r = s
        .get_with(
            "/streams/big-1?from=12090&limit=1",
            &[("accept", "application/x-ndjson")],
        )
        .await;
    assert_eq!(ndjson(&r.body).len(), 10);
    let r = s
        .get_with(
            "/streams/big-1?direction=backward&from=4",
            &[("accept", "application/x-ndjson")],
        )
        .await;
    let revs: Vec<u64> = ndjson(&r.body)
        .iter()
        .map(|e| e["revision"].as_u64().unwrap())
        .collect();
    assert_eq!(revs, [4, 3, 2, 1, 0]);
    // /all with filters.
    let r = s
        .get_with("/all", &[("accept", "application/x-ndjson")])
        .await;
    let all = ndjson(&r.body);
    assert_eq!(all.len(), 12_101);
    assert!(all
        .windows(2)
        .all(|w| w[0]["position"].as_u64() < w[1]["position"].as_u64()));
    let r = s
        .get_with("/all?types=Other", &[("accept", "application/x-ndjson")])
        .await;
    let other = ndjson(&r.body);
    assert_eq!(other.len(), 1);
    assert_eq!(other[0]["data"], "line\nbreak");
    let r = s
        .get_with("/all?from=end", &[("accept", "application/x-ndjson")])
        .await;
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ndjson_lines_stay_single_lines() {
    let s = TestServer::start();
    s.append(
        "pretty",
        "{\"type\":\"T\",\"data\":{\n  \"a\": 1,\r\n  \"b\": [\n 2\n ]\n}}",
    )
    .await;
    let r = s
        .get_with("/streams/pretty", &[("accept", "application/x-ndjson")])
        .await;
    let text = r.text();
    assert_eq!(text.matches('\n').count(), 1, "{text:?}");
    assert_eq!(ndjson(&r.body)[0]["data"], json!({"a": 1, "b": [2]}));
    // The JSON page keeps the text exactly.
    assert!(s
        .get("/streams/pretty")
        .await
        .text()
        .contains("{\n  \"a\": 1,\r\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_negotiation() {
    let s = TestServer::start();
    s.append_many("s", 2).await;
    for accept in [
        "*/*",
        "application/json",
        "text/html",
        "application/json, text/plain;q=0.5",
    ] {
        let r = s.get_with("/streams/s", &[("accept", accept)]).await;
        assert_eq!(
            r.header("content-type"),
            Some("application/json"),
            "{accept}"
        );
        assert!(r.json()["events"].is_array());
    }
    let r = s
        .get_with(
            "/streams/s",
            &[("accept", "application/json;q=0.1, application/x-ndjson")],
        )
        .await;
    assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
}
