//! Consumer groups (docs/http-api.md, "Consumer groups"): settings, poll/ack/nack, timeouts, parking and
//! replay, per-stream ordering, long polls, restarts, deletion, metrics.

use std::time::Duration;

use serde_json::{json, Value};
use strata_server::GroupOptions;
use strata_store::Store;

use crate::groups_support::*;
use crate::support::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_is_idempotent_validates_and_refuses_conflicts() {
    let s = TestServer::start();
    let g = create(&s, "billing", json!({"source": "category:order"})).await;
    assert_eq!(g["name"], "billing");
    assert_eq!(g["source"], "category:order");
    assert_eq!(g["from"], "start");
    assert_eq!(g["ack_timeout_ms"], 30000);
    assert_eq!(g["max_deliveries"], 5);
    assert_eq!(g["ordering"], "none");
    assert_eq!(g["settings"]["source"], "category:order");
    for k in ["in_flight", "parked"] {
        assert_eq!(g[k], 0, "{k}: {g}");
    }
    assert!(g["checkpoint"].is_u64() && g["lag"].is_u64(), "{g}");
    // Identical: 200, nothing changes.
    let r = call(
        &s,
        "PUT",
        "/groups/billing",
        Some(json!({"source": "category:order", "from": "start", "ordering": "none"})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    // Mutable settings: 200 with the new values.
    let r = call(
        &s,
        "PUT",
        "/groups/billing",
        Some(json!({"source": "category:order", "ack_timeout_ms": 1000, "max_deliveries": 2})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["ack_timeout_ms"], 1000);
    assert_eq!(show(&s, "billing").await["max_deliveries"], 2);
    // Source, from or ordering: 409.
    for body in [
        json!({"source": "$all", "ack_timeout_ms": 1000, "max_deliveries": 2}),
        json!({"source": "category:order", "from": 5, "ack_timeout_ms": 1000, "max_deliveries": 2}),
        json!({"source": "category:order", "ordering": "per_stream", "ack_timeout_ms": 1000, "max_deliveries": 2}),
    ] {
        call(&s, "PUT", "/groups/billing", Some(body))
            .await
            .assert_error(409, "conflict");
    }
    // Bad bodies and names: 400.
    for body in [
        json!({"source": "$all", "bogus": 1}),
        json!({"source": "$all", "ack_timeout_ms": 0}),
        json!({"source": "$all", "max_deliveries": 0}),
        json!({"source": "$all", "ordering": "global"}),
        json!({"source": "$all", "from": "later"}),
        json!({"source": "$secret"}),
        json!({}),
    ] {
        call(&s, "PUT", "/groups/other", Some(body))
            .await
            .assert_error(400, "invalid_request");
    }
    call(&s, "PUT", "/groups/a$b", Some(json!({"source": "$all"})))
        .await
        .assert_error(400, "invalid_request");
    let r = s
        .call("PUT", "/groups/x", &[("content-type", "text/plain")], "{}")
        .await;
    r.assert_error(415, "unsupported_media_type");
    // Unknown groups: 404 everywhere.
    call(&s, "GET", "/groups/nope", None)
        .await
        .assert_error(404, "not_found");
    call(&s, "POST", "/groups/nope/poll?wait_ms=0", None)
        .await
        .assert_error(404, "not_found");
    call(&s, "DELETE", "/groups/nope", None)
        .await
        .assert_error(404, "not_found");
    call(&s, "GET", "/groups/nope/parked", None)
        .await
        .assert_error(404, "not_found");
    // The listing.
    create(&s, "audit", json!({"source": "$all", "from": "end"})).await;
    let list = call(&s, "GET", "/groups", None).await.json();
    let names: Vec<&str> = list["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["audit", "billing"]);
    call(&s, "GET", "/groups?x=1", None)
        .await
        .assert_error(400, "invalid_request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_and_ack_advance_the_checkpoint() {
    let s = TestServer::start();
    append(&s, "user-1", 1).await;
    append(&s, "order-1", 3).await;
    create(&s, "g", json!({"source": "category:order"})).await;
    let m = poll(&s, "g", 10, 5000).await;
    assert_eq!(datas(&m), [0, 1, 2]);
    assert!(m.iter().all(|m| m["delivery"] == 1));
    let e = &m[0]["event"];
    assert_eq!(e["stream"], "order-1");
    assert_eq!(e["revision"], 0);
    assert_eq!(e["position"], 1);
    assert_eq!(e["type"], "T");
    assert!(e["id"].is_string() && e["timestamp"].is_string());
    assert_eq!(e["metadata"], Value::Null);
    let g = show(&s, "g").await;
    assert_eq!(g["in_flight"], 3);
    assert_eq!(g["checkpoint"], 1);
    // Category sources count lag in log positions.
    assert!(g["lag"].as_u64().unwrap() >= 3, "{g}");
    // Nothing else is ready.
    assert!(poll(&s, "g", 10, 0).await.is_empty());
    assert_eq!(
        ack(&s, "g", &ids(&m)).await,
        json!({"acked": 3, "ignored": 0})
    );
    let g = show(&s, "g").await;
    assert_eq!(g["in_flight"], 0);
    assert!(g["checkpoint"].as_u64().unwrap() >= 4, "{g}");
    // Acking again is a harmless no-op.
    assert_eq!(
        ack(&s, "g", &ids(&m)).await,
        json!({"acked": 0, "ignored": 3})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_poll_ack_and_nack_requests_are_400() {
    let s = TestServer::start();
    create(&s, "g", json!({"source": "$all"})).await;
    for uri in [
        "/groups/g/poll?max=0",
        "/groups/g/poll?max=1001",
        "/groups/g/poll?wait_ms=60001",
        "/groups/g/poll?wait_ms=-1",
        "/groups/g/poll?limit=3",
    ] {
        call(&s, "POST", uri, None)
            .await
            .assert_error(400, "invalid_request");
    }
    for (path, body) in [
        ("ack", json!({"ack_ids": []})),
        ("ack", json!({"ack_ids": ["x"], "extra": true})),
        ("ack", json!(["x"])),
        ("nack", json!({"ack_ids": []})),
        ("nack", json!({"ack_ids": ["x"], "action": "drop"})),
    ] {
        call(&s, "POST", &format!("/groups/g/{path}"), Some(body))
            .await
            .assert_error(400, "invalid_request");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_ack_ids_are_400_and_nothing_is_acked() {
    let s = TestServer::start();
    append(&s, "order-1", 2).await;
    create(&s, "g", json!({"source": "order-1"})).await;
    let m = poll(&s, "g", 10, 5000).await;
    assert_eq!(m.len(), 2);
    let good = ids(&m);
    // A well-formed id of this group for a cursor never delivered.
    let parts: Vec<&str> = good[0].split('.').collect();
    let never = format!("{}.ff.1", parts[0]);
    let other_generation = format!("0000000000000001.{}.{}", parts[1], parts[2]);
    let bad = vec![
        good[0].clone(),
        "garbage".into(),
        never.clone(),
        other_generation.clone(),
    ];
    let r = call(&s, "POST", "/groups/g/ack", Some(json!({ "ack_ids": bad }))).await;
    let body = r.assert_error(400, "invalid_request");
    assert_eq!(
        body["unknown_ack_ids"],
        json!(["garbage", never, other_generation])
    );
    assert_eq!(show(&s, "g").await["in_flight"], 2, "nothing was acked");
    let r = call(
        &s,
        "POST",
        "/groups/g/nack",
        Some(json!({ "ack_ids": ["garbage"], "action": "skip" })),
    )
    .await;
    r.assert_error(400, "invalid_request");
    assert_eq!(ack(&s, "g", &good).await["acked"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_timeout_redelivers_with_the_next_delivery_number() {
    let s = TestServer::start();
    append(&s, "order-1", 1).await;
    create(&s, "g", json!({"source": "$all", "ack_timeout_ms": 200})).await;
    let first = poll(&s, "g", 10, 5000).await;
    assert_eq!(first[0]["delivery"], 1);
    // Not acked: the long poll is woken by the timeout and gets it again.
    let again = poll_until(&s, "g", 1).await;
    assert_eq!(again[0]["delivery"], 2);
    assert_eq!(again[0]["event"]["id"], first[0]["event"]["id"]);
    assert_ne!(again[0]["ack_id"], first[0]["ack_id"]);
    // The first delivery's ack still acks the event: it was processed.
    assert_eq!(ack(&s, "g", &ids(&first)).await["acked"], 1);
    assert_eq!(ack(&s, "g", &ids(&again)).await["acked"], 0);
    let g = show(&s, "g").await;
    assert_eq!(g["in_flight"], 0);
    assert_eq!(g["stats"]["redeliveries"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nack_retry_park_and_skip() {
    let s = TestServer::start();
    append(&s, "order-1", 3).await;
    create(&s, "g", json!({"source": "order-1"})).await;
    let m = poll(&s, "g", 10, 5000).await;
    let id = ids(&m);
    assert_eq!(
        nack(&s, "g", &id[0..1], "retry").await,
        json!({"nacked": 1, "ignored": 0})
    );
    // The same delivery again is stale.
    assert_eq!(
        nack(&s, "g", &id[0..1], "retry").await,
        json!({"nacked": 0, "ignored": 1})
    );
    let r = poll(&s, "g", 10, 5000).await;
    assert_eq!(datas(&r), [0]);
    assert_eq!(r[0]["delivery"], 2);
    assert_eq!(nack(&s, "g", &id[1..2], "park").await["nacked"], 1);
    assert_eq!(nack(&s, "g", &id[2..3], "skip").await["nacked"], 1);
    let p = parked(&s, "g").await;
    assert_eq!(p.len(), 1);
    assert_eq!(p[0]["cursor"], 1);
    assert_eq!(p[0]["stream"], "order-1");
    assert_eq!(p[0]["revision"], 1);
    assert_eq!(p[0]["event_id"], m[1]["event"]["id"]);
    assert_eq!(p[0]["type"], "T");
    assert_eq!(p[0]["delivery"], 1);
    assert_eq!(p[0]["reason"], "nacked");
    assert!(p[0]["parked_at"].as_str().unwrap().ends_with('Z'));
    ack(&s, "g", &ids(&r)).await;
    let g = show(&s, "g").await;
    assert_eq!(g["parked"], 1);
    assert_eq!(g["checkpoint"], 3, "parked and skipped count as done");
    assert_eq!(g["in_flight"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_deliveries_parks_and_replay_delivers_again() {
    let s = TestServer::start();
    append(&s, "order-1", 2).await;
    create(
        &s,
        "g",
        json!({"source": "category:order", "max_deliveries": 2, "ack_timeout_ms": 200}),
    )
    .await;
    let m = poll(&s, "g", 1, 5000).await;
    nack(&s, "g", &ids(&m), "retry").await;
    let m = poll(&s, "g", 1, 5000).await;
    assert_eq!((datas(&m)[0], m[0]["delivery"].as_u64()), (0, Some(2)));
    // The second delivery times out: max_deliveries reached, parked.
    let next = poll(&s, "g", 1, 5000).await;
    assert_eq!(datas(&next), [1]);
    ack(&s, "g", &ids(&next)).await;
    let p = wait_parked(&s, "g", 1).await;
    assert_eq!(p.len(), 1);
    assert_eq!(p[0]["reason"], "max_deliveries");
    assert_eq!(p[0]["delivery"], 2);
    let r = call(&s, "POST", "/groups/g/parked/replay", Some(json!({}))).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"replayed": 1, "missing": 0, "remaining": 0})
    );
    assert!(parked(&s, "g").await.is_empty());
    let again = poll(&s, "g", 10, 5000).await;
    assert_eq!(datas(&again), [0]);
    assert_eq!(again[0]["delivery"], 1, "delivery count reset");
    assert_eq!(ack(&s, "g", &ids(&again)).await["acked"], 1);
    let g = show(&s, "g").await;
    assert_eq!(
        (g["parked"].as_u64(), g["replaying"].as_u64()),
        (Some(0), Some(0))
    );
    // Nothing to replay: 200 with zero.
    let r = call(&s, "POST", "/groups/g/parked/replay", None).await;
    assert_eq!(r.json()["replayed"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_stream_ordering_holds_back_later_events_of_a_busy_stream() {
    let s = TestServer::start();
    append(&s, "order-a", 2).await;
    append(&s, "order-b", 1).await;
    create(
        &s,
        "g",
        json!({"source": "category:order", "ordering": "per_stream"}),
    )
    .await;
    let m = poll(&s, "g", 10, 5000).await;
    let got: Vec<(String, u64)> = m
        .iter()
        .map(|m| {
            (
                m["event"]["stream"].as_str().unwrap().to_owned(),
                m["event"]["revision"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, [("order-a".to_owned(), 0), ("order-b".to_owned(), 0)]);
    assert!(poll(&s, "g", 10, 0).await.is_empty());
    // A retry keeps the stream blocked: the retried event comes first.
    nack(&s, "g", &ids(&m[0..1]), "retry").await;
    let r = poll(&s, "g", 10, 5000).await;
    assert_eq!((r.len(), r[0]["event"]["revision"].as_u64()), (1, Some(0)));
    ack(&s, "g", &ids(&r)).await;
    let next = poll(&s, "g", 10, 5000).await;
    assert_eq!(next.len(), 1);
    assert_eq!(next[0]["event"]["stream"], "order-a");
    assert_eq!(next[0]["event"]["revision"], 1);
}

/// The poll is parked (counted by the `waiting_polls` gauge, in the group and in `/metrics`)
/// before the append: only a wake-up can end it with the event, since a poll nothing wakes
/// returns empty when its `wait_ms` is over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_is_woken_by_an_append() {
    let s = std::sync::Arc::new(TestServer::start());
    create(&*s, "g", json!({"source": "order-9"})).await;
    assert_eq!(show(&*s, "g").await["waiting_polls"], 0);
    let poller = {
        let s = s.clone();
        tokio::spawn(async move { poll(&*s, "g", 10, 30_000).await })
    };
    wait_waiting_polls(&*s, "g", 1).await;
    let metrics = call(&*s, "GET", "/metrics", None).await.text();
    assert!(
        metrics.contains("strata_group_waiting_polls{group=\"g\"} 1\n"),
        "{metrics}"
    );
    append(&*s, "order-9", 1).await;
    let m = poller.await.unwrap();
    assert_eq!(datas(&m), [0], "the append did not wake the long poll");
    assert_eq!(show(&*s, "g").await["waiting_polls"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_long_polls() {
    let s = std::sync::Arc::new(TestServer::start());
    create(&*s, "g", json!({"source": "$all"})).await;
    let poller = {
        let s = s.clone();
        tokio::spawn(async move { poll(&*s, "g", 10, 60_000).await })
    };
    wait_waiting_polls(&*s, "g", 1).await;
    s.app.begin_shutdown();
    // Ended by the shutdown, not by its 60 s wait (30 s: a hang guard).
    let m = tokio::time::timeout(Duration::from_secs(30), poller)
        .await
        .expect("the long poll outlived the shutdown")
        .unwrap();
    assert!(m.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_resumes_from_the_checkpoint_and_redelivers_unacked_events() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::open(dir.path(), options());
    append(&node, "order-1", 6).await;
    create(
        &node,
        "g",
        json!({"source": "$all", "ack_timeout_ms": 60000}),
    )
    .await;
    let m = poll(&node, "g", 6, 5000).await;
    assert_eq!(datas(&m), [0, 1, 2, 3, 4, 5]);
    let id = ids(&m);
    // 0, 1, 3 acked; 4 parked; 2 and 5 unacked, 5 delivered twice.
    ack(&node, "g", &[id[0].clone(), id[1].clone(), id[3].clone()]).await;
    nack(&node, "g", &id[4..5], "park").await;
    nack(&node, "g", &id[5..6], "retry").await;
    let m5 = poll(&node, "g", 6, 5000).await;
    assert_eq!((datas(&m5), m5[0]["delivery"].as_u64()), (vec![5], Some(2)));
    node.stop().await;

    let node = Node::open(dir.path(), options());
    let g = show(&node, "g").await;
    assert_eq!(g["checkpoint"], 2);
    assert_eq!(g["parked"], 1);
    assert_eq!(g["ack_timeout_ms"], 60000);
    let m = poll_until(&node, "g", 2).await;
    assert_eq!(datas(&m), [2, 5], "only the unacked events come back");
    // Delivery counts above 1 survive the restart.
    let deliveries: Vec<u64> = m.iter().map(|m| m["delivery"].as_u64().unwrap()).collect();
    assert_eq!(deliveries, [1, 3]);
    // An ack id from before the restart still acks its event.
    assert_eq!(ack(&node, "g", &id[2..3]).await["acked"], 1);
    ack(&node, "g", &ids(&m)).await;
    assert_eq!(parked(&node, "g").await[0]["cursor"], 4);
    // A replayed parked event survives a restart until it is acked again.
    let r = call(&node, "POST", "/groups/g/parked/replay", None).await;
    assert_eq!(r.json()["replayed"], 1);
    node.stop().await;

    let node = Node::open(dir.path(), options());
    let g = show(&node, "g").await;
    assert_eq!(
        (g["parked"].as_u64(), g["replaying"].as_u64()),
        (Some(0), Some(1))
    );
    let m = poll_until(&node, "g", 1).await;
    assert_eq!(datas(&m), [4]);
    ack(&node, "g", &ids(&m)).await;
    assert!(poll(&node, "g", 10, 0).await.is_empty());
    node.stop().await;

    let node = Node::open(dir.path(), options());
    let g = show(&node, "g").await;
    assert!(g["checkpoint"].as_u64().unwrap() >= 6, "{g}");
    assert_eq!(g["replaying"], 0);
    assert!(poll(&node, "g", 10, 0).await.is_empty());
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_are_saved_by_the_checkpointer_without_a_clean_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::open(dir.path(), options());
    append(&node, "order-1", 3).await;
    create(&node, "g", json!({"source": "order-1"})).await;
    let m = poll(&node, "g", 3, 5000).await;
    ack(&node, "g", &ids(&m)).await;
    // The checkpointer saves within its interval (100 ms here); wait for the record.
    let store = node.app.store().clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let all = store
            .read_all(
                strata_store::ReadFrom::Start,
                strata_store::Direction::Forward,
                1000,
                &strata_store::AllFilter {
                    include_system: true,
                    ..Default::default()
                },
            )
            .unwrap();
        if all.events.iter().any(|e| e.event_type == "Checkpoint") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no checkpoint saved"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // No stop_groups: the store is closed under the tasks (as after a crash, nothing else is
    // saved).
    node.app.store().close().unwrap();
    drop(store);
    drop(node);
    // The group tasks notice the closed store and release it (and the directory lock).
    loop {
        match Store::open(dir.path(), Default::default()) {
            Ok(store) => break drop(store),
            Err(e) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "store stays locked: {e}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    let node = Node::open(dir.path(), options());
    assert_eq!(show(&node, "g").await["checkpoint"], 3);
    assert!(poll(&node, "g", 10, 0).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_are_independent() {
    let s = TestServer::start();
    append(&s, "order-1", 2).await;
    create(&s, "a", json!({"source": "order-1"})).await;
    create(&s, "b", json!({"source": "order-1"})).await;
    let ma = poll(&s, "a", 10, 5000).await;
    ack(&s, "a", &ids(&ma)).await;
    let mb = poll(&s, "b", 10, 5000).await;
    assert_eq!(datas(&mb), [0, 1]);
    // b's ack ids mean nothing to a.
    call(
        &s,
        "POST",
        "/groups/a/ack",
        Some(json!({ "ack_ids": ids(&mb) })),
    )
    .await
    .assert_error(400, "invalid_request");
    assert_eq!(show(&s, "a").await["checkpoint"], 2);
    assert_eq!(show(&s, "b").await["checkpoint"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_frees_the_state_and_recreate_starts_afresh() {
    let s = std::sync::Arc::new(TestServer::start());
    append(&*s, "order-1", 2).await;
    create(&*s, "g", json!({"source": "order-1"})).await;
    let m = poll(&*s, "g", 10, 5000).await;
    ack(&*s, "g", &ids(&m[0..1])).await;
    nack(&*s, "g", &ids(&m[1..2]), "park").await;
    let poller = {
        let s = s.clone();
        tokio::spawn(async move { call(&*s, "POST", "/groups/g/poll?wait_ms=30000", None).await })
    };
    // The poll waits before the delete: the delete must wake it (else it would answer 200
    // with nothing after its 30 s).
    wait_waiting_polls(&*s, "g", 1).await;
    let r = call(&*s, "DELETE", "/groups/g", None).await;
    assert_eq!(r.status, 204, "{}", r.text());
    let pending = poller.await.unwrap();
    pending.assert_error(404, "not_found");
    call(&*s, "GET", "/groups/g", None)
        .await
        .assert_error(404, "not_found");
    call(
        &*s,
        "POST",
        "/groups/g/ack",
        Some(json!({"ack_ids": ids(&m)})),
    )
    .await
    .assert_error(404, "not_found");
    // The state streams are tombstoned.
    let r = call(&*s, "GET", "/all?include_system=true&limit=1000", None)
        .await
        .json();
    let state: Vec<String> = r["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["stream"].as_str().unwrap().to_owned())
        .filter(|n| n.starts_with("$group-"))
        .collect();
    assert!(!state.is_empty());
    for stream in state {
        let r = call(
            &*s,
            "GET",
            &format!("/streams/{}", stream.replace('$', "%24")),
            None,
        )
        .await;
        r.assert_error(410, "stream_deleted");
    }
    let g = create(&*s, "g", json!({"source": "order-1"})).await;
    assert_eq!(
        (g["checkpoint"].as_u64(), g["parked"].as_u64()),
        (Some(0), Some(0))
    );
    let again = poll(&*s, "g", 10, 5000).await;
    assert_eq!(datas(&again), [0, 1]);
    assert!(again.iter().all(|m| m["delivery"] == 1));
    // Ack ids of the old incarnation are unknown.
    call(
        &*s,
        "POST",
        "/groups/g/ack",
        Some(json!({"ack_ids": ids(&m[0..1])})),
    )
    .await
    .assert_error(400, "invalid_request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_sources_use_revisions_and_from_end_is_resolved_at_creation() {
    let s = TestServer::start();
    append(&s, "user-1", 2).await;
    append(&s, "order-1", 3).await;
    create(&s, "from1", json!({"source": "order-1", "from": 1})).await;
    assert_eq!(datas(&poll(&s, "from1", 10, 5000).await), [1, 2]);
    let g = create(&s, "tail", json!({"source": "order-1", "from": "end"})).await;
    assert_eq!(g["start"], 3);
    assert_eq!(g["from"], "end");
    assert!(poll(&s, "tail", 10, 0).await.is_empty());
    let all = create(&s, "alltail", json!({"source": "$all", "from": "end"})).await;
    assert!(all["start"].as_u64().unwrap() >= 5, "{all}");
    let r = call(
        &s,
        "POST",
        "/streams/order-1",
        Some(json!({"type": "T", "data": {"i": 3}})),
    )
    .await;
    let position = r.json()["first_position"].clone();
    let m = poll(&s, "tail", 10, 5000).await;
    assert_eq!(m[0]["event"]["revision"], 3);
    let m = poll(&s, "alltail", 10, 5000).await;
    assert_eq!(datas(&m), [3]);
    assert_eq!(m[0]["event"]["position"], position);
    // Identical PUT with from:"end" is still identical.
    let r = call(
        &s,
        "PUT",
        "/groups/tail",
        Some(json!({"source": "order-1", "from": "end"})),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_larger_than_the_window_is_delivered_once_each() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::open(
        dir.path(),
        GroupOptions {
            window: 16,
            feed_batch: 5,
            ..options()
        },
    );
    for i in 0..5 {
        append(&node, &format!("order-{i}"), 100).await;
    }
    create(&node, "g", json!({"source": "category:order"})).await;
    let mut seen = std::collections::HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while seen.len() < 500 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "stalled at {}",
            seen.len()
        );
        let m = poll(&node, "g", 50, 2000).await;
        assert!(m.len() <= 16, "the window bounds what is handed out");
        for msg in &m {
            assert!(
                seen.insert(msg["event"]["position"].as_u64().unwrap()),
                "duplicate"
            );
        }
        ack(&node, "g", &ids(&m)).await;
        let g = show(&node, "g").await;
        assert!(g["in_flight"].as_u64().unwrap() + g["buffered"].as_u64().unwrap() <= 16);
    }
    let g = show(&node, "g").await;
    assert!(g["checkpoint"].as_u64().unwrap() >= 500, "{g}");
    assert!(poll(&node, "g", 10, 0).await.is_empty());
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_report_every_group() {
    let s = TestServer::start();
    append(&s, "order-1", 2).await;
    create(&s, "g", json!({"source": "order-1"})).await;
    let m = poll(&s, "g", 10, 5000).await;
    ack(&s, "g", &ids(&m[0..1])).await;
    nack(&s, "g", &ids(&m[1..2]), "park").await;
    let text = call(&s, "GET", "/metrics", None).await.text();
    for line in [
        "strata_group_lag{group=\"g\"} 0\n",
        "strata_group_checkpoint{group=\"g\"} 2\n",
        "strata_group_in_flight{group=\"g\"} 0\n",
        "strata_group_parked{group=\"g\"} 1\n",
        "strata_group_deliveries_total{group=\"g\"} 2\n",
        "strata_group_acks_total{group=\"g\"} 1\n",
        "strata_group_nacks_total{group=\"g\"} 1\n",
        "strata_group_parks_total{group=\"g\"} 1\n",
        "strata_group_redeliveries_total{group=\"g\"} 0\n",
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_read_consumes_write_manages() {
    let s = TestServer::with(|c| {
        c.auth
            .add_tokens_text("adm admin\nw write\nr read\nro read order-\n")
            .unwrap()
    });
    let put = |token: &'static str, group: &'static str, source: &'static str| {
        let s = &s;
        async move {
            s.call(
                "PUT",
                &format!("/groups/{group}"),
                &[
                    ("content-type", "application/json"),
                    ("authorization", &format!("Bearer {token}")),
                ],
                &json!({ "source": source }).to_string(),
            )
            .await
        }
    };
    put("r", "g", "order-1")
        .await
        .assert_error(403, "forbidden");
    assert_eq!(put("w", "g", "order-1").await.status, 201);
    assert_eq!(put("adm", "all", "$all").await.status, 201);
    let poll_as = |token: &'static str, group: &'static str| {
        let s = &s;
        async move {
            s.call(
                "POST",
                &format!("/groups/{group}/poll?wait_ms=0"),
                &[("authorization", &format!("Bearer {token}"))],
                "",
            )
            .await
        }
    };
    assert_eq!(poll_as("r", "g").await.status, 200);
    assert_eq!(poll_as("ro", "g").await.status, 200);
    poll_as("ro", "all").await.assert_error(403, "forbidden");
    let list = s
        .get_with("/groups", &[("authorization", "Bearer ro")])
        .await
        .json();
    assert_eq!(list["groups"].as_array().unwrap().len(), 1, "{list}");
    let r = s
        .call("DELETE", "/groups/g", &[("authorization", "Bearer r")], "")
        .await;
    r.assert_error(403, "forbidden");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_source_is_reported_and_the_group_resumes_when_it_returns() {
    let s = TestServer::start();
    append(&s, "order-5", 1).await;
    create(&s, "g", json!({"source": "order-5"})).await;
    let m = poll(&s, "g", 10, 5000).await;
    ack(&s, "g", &ids(&m)).await;
    let r = call(&s, "DELETE", "/streams/order-5", None).await;
    assert_eq!(r.status, 204, "{}", r.text());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let g = show(&s, "g").await;
        if g["error"].is_string() {
            assert!(g["error"].as_str().unwrap().contains("deleted"), "{g}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{g}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Appending re-creates the stream (revisions continue): the group picks it up.
    append(&s, "order-5", 1).await;
    let m = poll_until(&s, "g", 1).await;
    assert_eq!(m[0]["event"]["revision"], 1);
    assert_eq!(show(&s, "g").await["error"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_is_compacted_and_survives_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::open(dir.path(), options());
    create(
        &node,
        "keep",
        json!({"source": "$all", "max_deliveries": 3}),
    )
    .await;
    for i in 0..40 {
        create(&node, &format!("tmp{i}"), json!({"source": "order-1"})).await;
        let r = call(&node, "DELETE", &format!("/groups/tmp{i}"), None).await;
        assert_eq!(r.status, 204);
    }
    let live = node
        .app
        .store()
        .read_stream(
            "$groups",
            strata_store::ReadFrom::Start,
            strata_store::Direction::Forward,
            1000,
        )
        .unwrap();
    assert!(live.events.len() < 40, "{} records", live.events.len());
    node.stop().await;
    let node = Node::open(dir.path(), options());
    let list = call(&node, "GET", "/groups", None).await.json();
    let groups = list["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 1, "{list}");
    assert_eq!(groups[0]["name"], "keep");
    assert_eq!(groups[0]["max_deliveries"], 3);
    node.stop().await;
}

/// The last `Checkpoint` record of the group incarnation named by `ack_id`, waited for until
/// `until` holds (the checkpointer saves within its interval).
async fn wait_checkpoint_record(node: &Node, ack_id: &str, until: impl Fn(&Value) -> bool) {
    let generation = &ack_id[..16];
    let stream = format!("$group-{generation}-checkpoint");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let last = node
            .app
            .store()
            .read_stream(
                &stream,
                strata_store::ReadFrom::End,
                strata_store::Direction::Backward,
                1,
            )
            .ok()
            .and_then(|s| s.events.first().cloned())
            .map(|e| serde_json::from_slice::<Value>(&e.data).unwrap());
        if last.as_ref().is_some_and(&until) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "checkpoint: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A crash between a park's record and the checkpoint that passes it: at restart the done
/// cursors above the checkpoint plus the parked one fill the whole window. The group must
/// still feed (it used to wait for room forever) and deliver what follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_a_window_full_of_done_events_still_feeds() {
    let dir = tempfile::tempdir().unwrap();
    let opts = GroupOptions {
        window: 4,
        ..options()
    };
    let node = Node::open(dir.path(), opts.clone());
    append(&node, "order-1", 4).await;
    create(
        &node,
        "g",
        json!({"source": "order-1", "ack_timeout_ms": 60000}),
    )
    .await;
    let m = poll(&node, "g", 4, 5000).await;
    assert_eq!(datas(&m), [0, 1, 2, 3]);
    let id = ids(&m);
    ack(&node, "g", &id[1..]).await;
    wait_checkpoint_record(&node, &id[0], |r| {
        r["checkpoint"] == 0 && r["done"] == json!([[1, 3]])
    })
    .await;
    // Event 0's park record lands, the checkpoint after it does not (the crash).
    let record = json!({
        "cursor": 0, "stream": "order-1", "revision": 0,
        "position": m[0]["event"]["position"], "event_id": m[0]["event"]["id"],
        "type": "T", "delivery": 1, "reason": "nacked", "parked_at": 0,
    });
    node.app
        .store()
        .append(
            &format!("$group-{}-parked", &id[0][..16]),
            strata_store::ExpectedRevision::Any,
            vec![strata_store::NewEvent::json(
                "Parked",
                record.to_string().into_bytes(),
            )],
        )
        .unwrap();
    // Nothing else is unsaved (the acks are in the checkpoint just read, event 0 is merely in
    // flight), so a graceful stop writes nothing more: the state on disk is the crash's.
    node.stop().await;
    let node = Node::open(dir.path(), opts);
    assert_eq!(parked(&node, "g").await.len(), 1);
    append(&node, "order-1", 1).await;
    let m = poll_until(&node, "g", 1).await;
    assert_eq!(
        datas(&m),
        [0],
        "the event after the window (its data is i=0 of the 2nd append)"
    );
    assert_eq!(m[0]["event"]["revision"], 4);
    ack(&node, "g", &ids(&m)).await;
    assert_eq!(show(&node, "g").await["checkpoint"], 5);
    node.stop().await;
}

/// Replays are bounded by the window across calls, not only per call: replaying again before
/// the replayed events are consumed re-queues nothing more (memory stays bounded).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_never_hold_more_than_a_window() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::open(
        dir.path(),
        GroupOptions {
            window: 4,
            ..options()
        },
    );
    append(&node, "order-1", 8).await;
    create(
        &node,
        "g",
        json!({"source": "order-1", "ack_timeout_ms": 60000}),
    )
    .await;
    let mut n = 0;
    while n < 8 {
        let m = poll_until(&node, "g", 4).await;
        nack(&node, "g", &ids(&m), "park").await;
        n += m.len();
    }
    assert_eq!(parked(&node, "g").await.len(), 8);
    assert_eq!(replay_parked(&node).await, (4, 4));
    assert_eq!(
        replay_parked(&node).await,
        (0, 4),
        "the window is full of replayed events"
    );
    assert_eq!(show(&node, "g").await["replaying"], 4);
    let m = poll_until(&node, "g", 4).await;
    assert_eq!(datas(&m), [0, 1, 2, 3]);
    ack(&node, "g", &ids(&m)).await;
    assert_eq!(replay_parked(&node).await, (4, 0));
    let m = poll_until(&node, "g", 4).await;
    assert_eq!(datas(&m), [4, 5, 6, 7]);
    ack(&node, "g", &ids(&m)).await;
    assert_eq!(show(&node, "g").await["replaying"], 0);
    node.stop().await;
}

/// `POST /groups/g/parked/replay` → (replayed, remaining).
async fn replay_parked(node: &Node) -> (u64, u64) {
    let r = call(node, "POST", "/groups/g/parked/replay", None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    (
        v["replayed"].as_u64().unwrap(),
        v["remaining"].as_u64().unwrap(),
    )
}

/// A long poll already waiting when an ack deadline passes is woken by the group's timer (not
/// by another request): it returns the redelivery before its own `wait_ms` is over (a broken
/// timer would leave it empty-handed after 30 s). The poll is seen parked while the event is
/// still in flight, so it cannot have taken the redelivery without waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_timeout_wakes_a_waiting_long_poll() {
    let s = std::sync::Arc::new(TestServer::start());
    append(&*s, "order-1", 1).await;
    create(
        &*s,
        "g",
        json!({"source": "order-1", "ack_timeout_ms": 3000}),
    )
    .await;
    let first = poll(&*s, "g", 10, 5000).await;
    assert_eq!(first.len(), 1);
    let poller = {
        let s = s.clone();
        tokio::spawn(async move { poll(&*s, "g", 10, 30_000).await })
    };
    let g = wait_waiting_polls(&*s, "g", 1).await;
    assert_eq!(
        g["in_flight"], 1,
        "the ack deadline passed before the poll was seen waiting: {g}"
    );
    let again = poller.await.unwrap();
    assert_eq!(again.len(), 1, "the long poll ended without the redelivery");
    assert_eq!(again[0]["delivery"], 2);
    ack(&*s, "g", &ids(&again)).await;
}

/// With per-stream ordering, the ack of a stream's event in flight wakes a long poll already
/// waiting for that stream's next event (nothing else happens that could wake it, and a poll
/// nothing wakes returns empty when its 30 s are over).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_per_stream_ack_wakes_a_waiting_long_poll() {
    let s = std::sync::Arc::new(TestServer::start());
    append(&*s, "order-1", 2).await;
    create(
        &*s,
        "g",
        json!({"source": "order-1", "ordering": "per_stream", "ack_timeout_ms": 60000}),
    )
    .await;
    let first = poll(&*s, "g", 10, 5000).await;
    assert_eq!(datas(&first), [0], "event 1 waits for event 0");
    let poller = {
        let s = s.clone();
        tokio::spawn(async move { poll(&*s, "g", 10, 30_000).await })
    };
    // Parked before the ack (event 1 waits for event 0's ack).
    let g = wait_waiting_polls(&*s, "g", 1).await;
    assert_eq!(
        (g["in_flight"].as_u64(), g["buffered"].as_u64()),
        (Some(1), Some(1)),
        "{g}"
    );
    ack(&*s, "g", &ids(&first)).await;
    let m = poller.await.unwrap();
    assert_eq!(datas(&m), [1], "the long poll ended without the next event");
}

/// The window's byte budget bounds what the feeder reads, not only whether it reads: one
/// store read used to take a whole batch (500 events by default) whatever their size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_events_are_fed_within_the_window_bytes() {
    const SIZE: usize = 16 * 1024;
    const BYTES: usize = 64 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let node = Node::open(
        dir.path(),
        GroupOptions {
            window_bytes: BYTES,
            ..options()
        },
    );
    let data = format!(r#"{{"s":"{}"}}"#, "x".repeat(SIZE));
    let events: Vec<strata_store::NewEvent> = (0..100)
        .map(|_| strata_store::NewEvent::json("T", data.clone()))
        .collect();
    node.app
        .store()
        .append("big-1", strata_store::ExpectedRevision::Any, events)
        .unwrap();
    create(
        &node,
        "g",
        json!({"source": "big-1", "ack_timeout_ms": 60000}),
    )
    .await;
    // At most the budget plus the one event that crosses it.
    let bound = BYTES / SIZE + 1;
    let mut seen = 0u64;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while seen < 100 {
        assert!(tokio::time::Instant::now() < deadline, "stalled at {seen}");
        let m = poll(&node, "g", 1000, 2000).await;
        assert!(m.len() <= bound, "{} events in a 64 KiB window", m.len());
        let g = show(&node, "g").await;
        let held = g["in_flight"].as_u64().unwrap() + g["buffered"].as_u64().unwrap();
        assert!(held as usize <= bound, "{g}");
        for msg in &m {
            assert_eq!(msg["event"]["revision"], seen);
            seen += 1;
        }
        ack(&node, "g", &ids(&m)).await;
    }
    node.stop().await;
}

/// Ack ids handed out before a restart stay valid right after it, before the feeder has read
/// their events again (docs/consumer-groups.md): the ack must not be a 400 `unknown`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_right_after_a_restart_is_not_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let opts = GroupOptions {
        window: 2000,
        feed_batch: 1,
        ..options()
    };
    let node = Node::open(dir.path(), opts.clone());
    append(&node, "order-1", 1000).await;
    create(
        &node,
        "g",
        json!({"source": "order-1", "ack_timeout_ms": 60000}),
    )
    .await;
    let mut m = Vec::new();
    while m.len() < 1000 {
        m.extend(poll(&node, "g", 1000, 5000).await);
    }
    node.stop().await;
    let node = Node::open(dir.path(), opts);
    // The feeder reads one event per store call: the last one is far from read again yet.
    let r = ack(&node, "g", &ids(&m[999..])).await;
    assert_eq!(r["acked"], 1, "{r}");
    let rest = poll_until(&node, "g", 999).await;
    assert!(rest.iter().all(|m| m["event"]["revision"] != 999));
    node.stop().await;
}
