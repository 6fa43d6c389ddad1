//! End-to-end: JavaScript projections (docs/http-api.md "Projections") against the real `strata` binary.
//!
//! The three worked examples of docs/projections.md are read from docs/examples/projections/
//! (`include_str!`), so the documentation and these tests cannot drift apart. Faults, sandbox
//! limits and syntax errors follow; crash and restart behaviour is in
//! tests/projections_restart.rs, the CLI in tests/projections_cli.rs.

use serde_json::{json, Value};
use strata_suite::projections::{
    create_projection, get_projection, projection_action, projection_path, projection_state,
    put_projection, wait_faulted, wait_position, wait_state, wait_state_at,
};
use strata_suite::{Client, TestServer};

const COUNT_BY_TYPE: &str = include_str!("../docs/examples/projections/count-by-type.js");
const ORDER_TOTALS: &str = include_str!("../docs/examples/projections/order-totals.js");
const SHIPPING_SAGA: &str = include_str!("../docs/examples/projections/shipping-saga.js");

/// Appends one event; returns its log position.
#[track_caller]
fn append(client: &Client, stream: &str, event_type: &str, data: Value) -> u64 {
    let body = client.append(stream, &json!({"type": event_type, "data": data}));
    body["last_position"].as_u64().expect("last_position")
}

#[test]
fn count_by_type_example_folds_history_then_live_events() {
    let server = TestServer::start();
    let c = server.client();
    append(&c, "order-1", "OrderPlaced", json!({"total": 30}));
    append(&c, "order-1", "PaymentReceived", json!({"amount": 30}));
    append(&c, "order-2", "OrderPlaced", json!({"total": 12}));
    append(&c, "order-2", "OrderCancelled", json!({"total": 12}));
    let last = append(
        &c,
        "customer-7",
        "CustomerRegistered",
        json!({"name": "Ada"}),
    );

    create_projection(&c, "by-type", COUNT_BY_TYPE);
    wait_state(
        &c,
        "by-type",
        None,
        &json!({"total": 5, "byType": {
            "OrderPlaced": 2, "PaymentReceived": 1, "OrderCancelled": 1, "CustomerRegistered": 1
        }}),
    );
    let p = wait_position(&c, "by-type", last);
    assert_eq!(p["name"], "by-type");
    assert_eq!(p["lag"], 0, "caught up: {p}");
    assert!(p.get("error").is_none_or(Value::is_null), "{p}");

    // Live: events appended after the catch-up are folded too.
    append(&c, "order-3", "OrderPlaced", json!({"total": 7}));
    let last = append(
        &c,
        "customer-7",
        "CustomerRenamed",
        json!({"name": "Ada L."}),
    );
    wait_state_at(
        &c,
        "by-type",
        None,
        &json!({"total": 7, "byType": {
            "OrderPlaced": 3, "PaymentReceived": 1, "OrderCancelled": 1,
            "CustomerRegistered": 1, "CustomerRenamed": 1
        }}),
        last,
    );

    // The list has it, with the same fields.
    let list = c.get("/projections");
    list.assert_status(200);
    let list = list.json();
    let items = list
        .as_array()
        .or_else(|| list["projections"].as_array())
        .unwrap_or_else(|| panic!("GET /projections: {list}"));
    assert_eq!(items.len(), 1, "{list}");
    assert_eq!(items[0]["name"], "by-type");
    assert_eq!(items[0]["status"], "running");
}

#[test]
fn order_totals_example_keeps_one_state_per_customer() {
    let server = TestServer::start();
    let c = server.client();
    append(
        &c,
        "order-1",
        "OrderPlaced",
        json!({"customer": "c-1", "total": 30}),
    );
    append(
        &c,
        "order-2",
        "OrderPlaced",
        json!({"customer": "c-2", "total": 12}),
    );
    append(
        &c,
        "order-3",
        "OrderPlaced",
        json!({"customer": "c-1", "total": 8}),
    );
    append(
        &c,
        "order-3",
        "OrderCancelled",
        json!({"customer": "c-1", "total": 8}),
    );
    // No customer: partitionBy returns undefined, the event is skipped.
    append(&c, "order-4", "OrderPlaced", json!({"total": 5}));
    // Not in the `order` category.
    append(
        &c,
        "invoice-1",
        "OrderPlaced",
        json!({"customer": "c-1", "total": 100}),
    );

    create_projection(&c, "totals", ORDER_TOTALS);
    wait_state(
        &c,
        "totals",
        Some("c-1"),
        &json!({"orders": 2, "cancelled": 1, "total": 30}),
    );
    wait_state(
        &c,
        "totals",
        Some("c-2"),
        &json!({"orders": 1, "cancelled": 0, "total": 12}),
    );
    projection_state(&c, "totals", Some("c-9")).assert_error(404, "not_found");

    // A live event lands in its partition only.
    let last = append(
        &c,
        "order-5",
        "OrderPlaced",
        json!({"customer": "c-2", "total": 3}),
    );
    wait_state_at(
        &c,
        "totals",
        Some("c-2"),
        &json!({"orders": 2, "cancelled": 0, "total": 15}),
        last,
    );
    let c1 = projection_state(&c, "totals", Some("c-1"));
    c1.assert_status(200);
    assert_eq!(c1.json(), json!({"orders": 2, "cancelled": 1, "total": 30}));
}

#[test]
fn shipping_saga_example_emits_each_follow_up_once() {
    let server = TestServer::start();
    let c = server.client();
    // Paid in full at once.
    append(&c, "order-1", "OrderPlaced", json!({"total": 50}));
    append(&c, "order-1", "PaymentReceived", json!({"amount": 50}));
    // Paid in two parts, the first before the order was even placed.
    append(&c, "order-2", "PaymentReceived", json!({"amount": 20}));
    append(&c, "order-2", "OrderPlaced", json!({"total": 40}));
    append(&c, "order-2", "PaymentReceived", json!({"amount": 20}));
    // Never paid.
    append(&c, "order-3", "OrderPlaced", json!({"total": 10}));
    // Paid, then paid again: shipped once.
    append(&c, "order-4", "OrderPlaced", json!({"total": 10}));
    append(&c, "order-4", "PaymentReceived", json!({"amount": 10}));
    append(&c, "order-4", "PaymentReceived", json!({"amount": 5}));

    create_projection(&c, "shipping", SHIPPING_SAGA);
    wait_state(
        &c,
        "shipping",
        Some("order-4"),
        &json!({"placed": true, "total": 10, "paid": 15, "shipped": true}),
    );
    wait_state(
        &c,
        "shipping",
        Some("order-3"),
        &json!({"placed": true, "total": 10, "paid": 0, "shipped": false}),
    );
    let expected = [("order-1", 50), ("order-2", 40), ("order-4", 10)];
    let shipped = |c: &Client| -> Vec<(String, i64)> {
        c.read_stream("shipping")
            .iter()
            .map(|e| {
                assert_eq!(e["type"], "ShipOrder", "{e}");
                (
                    e["data"]["order"].as_str().unwrap().to_owned(),
                    e["data"]["total"].as_i64().unwrap(),
                )
            })
            .collect()
    };
    let want: Vec<(String, i64)> = expected.iter().map(|(o, t)| (o.to_string(), *t)).collect();
    assert_eq!(shipped(&c), want);

    // A reset rebuilds the state but emits nothing twice: the re-run's emits get the ids they
    // had (the id seed is the script's generation, which a reset keeps) and the store
    // deduplicates them (docs/projections.md, "Reset"). Each ShipOrder carries the emitting
    // projection in its metadata.
    let first_ids: Vec<Value> = c
        .read_stream("shipping")
        .iter()
        .map(|e| {
            assert_eq!(e["metadata"]["$projection"], "shipping", "{e}");
            e["id"].clone()
        })
        .collect();
    let generation = get_projection(&c, "shipping")["generation"].clone();
    let reset = projection_action(&c, "shipping", "reset");
    reset.assert_status(200);
    assert_eq!(reset.json()["generation"], generation);
    let last = append(&c, "order-3", "PaymentReceived", json!({"amount": 10}));
    wait_state_at(
        &c,
        "shipping",
        Some("order-3"),
        &json!({"placed": true, "total": 10, "paid": 10, "shipped": true}),
        last,
    );
    let events = c.read_stream("shipping");
    assert_eq!(
        events.len(),
        4,
        "3 + order-3, nothing re-emitted: {events:?}"
    );
    let ids: Vec<Value> = events.iter().map(|e| e["id"].clone()).collect();
    assert_eq!(ids[..3], first_ids[..]);
    let mut want2 = want.clone();
    want2.push(("order-3".into(), 10));
    assert_eq!(shipped(&c), want2);

    // New code is a new generation: the one way to emit everything again, under new ids.
    let v2 = format!("{SHIPPING_SAGA}\n// v2\n");
    let put = put_projection(&c, "shipping", &v2);
    put.assert_status(200);
    assert_ne!(put.json()["generation"], generation);
    wait_position(&c, "shipping", last);
    wait_state(
        &c,
        "shipping",
        Some("order-3"),
        &json!({"placed": true, "total": 10, "paid": 10, "shipped": true}),
    );
    // Emits are durable before the position that covers them is published.
    let events = c.read_stream("shipping");
    assert_eq!(events.len(), 8, "4 + 4 emitted again: {events:?}");
    let ids: Vec<Value> = events.iter().map(|e| e["id"].clone()).collect();
    assert!(ids[4..].iter().all(|id| !ids[..4].contains(id)), "{ids:?}");
    let mut want3 = want2.clone();
    want3.extend(want2.iter().cloned());
    assert_eq!(shipped(&c), want3);
}

const FRAGILE: &str = r#"
fromStream('feed')
  .when({
    $init: () => ({ n: 0 }),
    Tick: (s, e) => { s.n += 1; return s; },
    Poison: (s, e) => { throw new Error('cannot digest ' + e.data.what); },
  });
"#;

const ROBUST: &str = r#"
fromStream('feed')
  .when({
    $init: () => ({ n: 0 }),
    Tick: (s, e) => { s.n += 1; return s; },
    Poison: (s, e) => s,
  });
"#;

const COUNTER: &str = r#"
fromAll().when({ $init: () => ({ n: 0 }), $any: (s, e) => { s.n += 1; return s; } });
"#;

#[test]
fn a_throwing_handler_faults_its_projection_only() {
    let server = TestServer::start();
    let c = server.client();
    create_projection(&c, "fragile", FRAGILE);
    create_projection(&c, "counter", COUNTER);
    for _ in 0..3 {
        append(&c, "feed", "Tick", json!({}));
    }
    let poison = append(&c, "feed", "Poison", json!({"what": "arsenic"}));
    append(&c, "feed", "Tick", json!({}));

    let p = wait_faulted(&c, "fragile");
    let error = p["error"].to_string();
    assert!(error.contains("cannot digest arsenic"), "error: {p}");
    assert!(
        p["error"]["position"] == poison || p["position"] == poison,
        "the faulting event's position ({poison}) is reported: {p}"
    );
    // Events before the poison were applied, the failing one left the state unchanged.
    let state = projection_state(&c, "fragile", None);
    state.assert_status(200);
    assert_eq!(state.json(), json!({"n": 3}));

    // The server keeps serving, the other projection keeps running.
    let last = append(&c, "other", "Tick", json!({}));
    wait_state_at(&c, "counter", None, &json!({"n": 6}), last);
    c.get("/health").assert_status(200);
    // Still faulted (not retried behind the user's back), same error.
    assert_eq!(get_projection(&c, "fragile")["status"], "faulted");

    // Recovery: fix the handler, then start: it resumes at the failed event.
    put_projection(&c, "fragile", ROBUST).assert_status(200);
    let start = projection_action(&c, "fragile", "start");
    assert!(
        start.status == 200 || start.status == 409,
        "start after the fix: {} {}",
        start.status,
        start.text()
    );
    wait_state(&c, "fragile", None, &json!({"n": 4}));
    let p = wait_position(&c, "fragile", poison + 1);
    assert!(p.get("error").is_none_or(Value::is_null), "{p}");
}

#[test]
fn sandbox_limits_fault_runaway_handlers_and_the_server_stays_responsive() {
    let server = TestServer::start();
    let c = server.client();
    create_projection(
        &c,
        "spin",
        "fromStream('feed').when({ Tick: (s, e) => { while (true) {} } });",
    );
    create_projection(
        &c,
        "hog",
        "fromStream('feed').when({ Tick: (s, e) => { const a = []; \
         for (;;) { a.push(new Array(1 << 16).fill(e.position)); } } });",
    );
    create_projection(&c, "counter", COUNTER);
    let first = append(&c, "feed", "Tick", json!({}));

    // The error says which limit was hit (the words are the server's, docs/projections.md).
    for (name, limit) in [("spin", "250ms"), ("hog", "memory")] {
        let p = wait_faulted(&c, name);
        let message = p["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(limit),
            "{name}: the error names the limit ({limit}): {p}"
        );
        assert!(
            p["error"]["position"] == first || p["position"] == first,
            "{name}: the faulting event's position ({first}) is reported: {p}"
        );
    }
    // Responsive: health, appends, reads, and the other projection folds them.
    c.get("/health").assert_status(200);
    let last = append(&c, "feed", "Tock", json!({}));
    assert_eq!(c.read_stream("feed").len(), 2);
    wait_state_at(&c, "counter", None, &json!({"n": 2}), last);
    for name in ["spin", "hog"] {
        assert_eq!(get_projection(&c, name)["status"], "faulted");
    }
    // A faulted projection can be deleted.
    c.delete(&projection_path("spin", ""), &[])
        .assert_status(204);
    c.get(&projection_path("spin", ""))
        .assert_error(404, "not_found");
}

#[test]
fn syntax_errors_are_400_with_the_line_and_create_nothing() {
    let server = TestServer::start();
    let c = server.client();
    let bad = "fromAll()\n  .when({\n    $any: (s, e) => { s.n +=; return s; },\n  });\n";
    let reply = put_projection(&c, "bad", bad);
    let body = reply.assert_error(400, "invalid_request");
    assert_eq!(body["line"], 3, "line of the syntax error: {body}");
    c.get(&projection_path("bad", ""))
        .assert_error(404, "not_found");

    // Valid syntax that defines no projection: 400 too.
    put_projection(&c, "bad", "const x = 1;").assert_error(400, "invalid_request");
    c.get(&projection_path("bad", ""))
        .assert_error(404, "not_found");

    // Replacing a working projection with a broken script keeps the working one.
    create_projection(&c, "ok", COUNTER);
    let last = append(&c, "s", "A", json!({}));
    wait_state(&c, "ok", None, &json!({"n": 1}));
    put_projection(&c, "ok", bad).assert_error(400, "invalid_request");
    let p = wait_position(&c, "ok", last);
    assert_eq!(p["status"], "running");
    append(&c, "s", "A", json!({}));
    wait_state(&c, "ok", None, &json!({"n": 2}));

    // Unknown projections are 404 everywhere.
    for (method, suffix) in [
        ("GET", ""),
        ("GET", "/state"),
        ("POST", "/stop"),
        ("POST", "/start"),
        ("POST", "/reset"),
        ("DELETE", ""),
    ] {
        c.request(method, &projection_path("nope", suffix), &[], None)
            .assert_error(404, "not_found");
    }
}

/// Status and state reads while a projection folds a long history (the runner publishes a
/// batch every few hundred events): reads must never wait for it, nor block it.
#[test]
fn status_and_state_reads_do_not_block_a_folding_projection() {
    let server = TestServer::start();
    let c = server.client();
    let batch: Vec<Value> = (0..1000)
        .map(|i| json!({"type": "Tick", "data": {"i": i}}))
        .collect();
    let batch = Value::Array(batch);
    let mut last = 0;
    for k in 0..60 {
        last = c.append(&format!("load-{}", k % 4), &batch)["last_position"]
            .as_u64()
            .unwrap();
    }
    create_projection(&c, "counter", COUNTER);
    let readers: Vec<_> = (0..2)
        .map(|r| {
            let c = c.clone();
            std::thread::spawn(move || {
                let mut reads = 0u64;
                loop {
                    // The harness's client times out after 30 s: a hang fails the test.
                    let p = get_projection(&c, "counter");
                    projection_state(&c, "counter", None).assert_status(200);
                    reads += 1;
                    if p["position"].as_u64().is_some_and(|x| x >= last) {
                        return reads;
                    }
                    assert_eq!(p["status"], "running", "reader {r}: {p}");
                }
            })
        })
        .collect();
    for r in readers {
        assert!(r.join().expect("a reader failed") > 0);
    }
    wait_state(&c, "counter", None, &json!({"n": 60_000}));
    c.get("/health").assert_status(200);
}
