//! End-to-end: projections across restarts and crashes (docs/http-api.md "Projections": "State is
//! checkpointed: a restart resumes from the checkpoint"; emit idempotent through deterministic
//! event ids). The server is killed with SIGKILL through the harness, mid-way through
//! processing, and brought back on the same data directory.
//!
//! The servers run with `--fsync never`: SIGKILL kills the process, not the machine, so every
//! `write` the server made is in the page cache and survives; what is tested is the server's
//! own ordering of state, checkpoint and emitted events.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use strata_suite::projections::{
    create_projection, get_projection, projection_action, projection_state, wait_position,
    wait_projection, wait_state, wait_state_at, PROJECTION_TIMEOUT,
};
use strata_suite::{Client, TestServer};

const SHIPPING_SAGA: &str = include_str!("../docs/examples/projections/shipping-saga.js");

/// Counts and sums the `item` category: any double-applied or skipped event shows in `n`/`sum`.
const ITEMS: &str = r#"
fromCategory('item')
  .when({
    $init: () => ({ n: 0, sum: 0, last: -1 }),
    Added: (s, e) => { s.n += 1; s.sum += e.data.v; s.last = e.position; return s; },
  });
"#;

/// Appends `[OrderPlaced, PaymentReceived]` (paid in full) to `order-{i}` for every `i` in
/// `range`; returns the last position.
fn place_and_pay(c: &Client, range: std::ops::Range<u64>) -> u64 {
    let mut last = 0;
    for i in range {
        let body = c.append(
            &format!("order-{i}"),
            &json!([
                {"type": "OrderPlaced", "data": {"total": i % 7 + 1}},
                {"type": "PaymentReceived", "data": {"amount": i % 7 + 1}},
            ]),
        );
        last = body["last_position"].as_u64().unwrap();
    }
    last
}

/// The `ShipOrder` events of the `shipping` stream, counted per order.
/// Stops the server with `signal` and starts it again on its data; a client of the new process
/// and the projection `name` as it is right after the restart.
fn restart_and_get(server: &mut TestServer, signal: i32, name: &str) -> (Client, Value) {
    server.stop(signal);
    server.restart();
    let c = server.client();
    let after = get_projection(&c, name);
    (c, after)
}

fn shipments(c: &Client) -> BTreeMap<String, usize> {
    let mut per_order = BTreeMap::new();
    for e in c.read_stream("shipping") {
        assert_eq!(e["type"], "ShipOrder", "{e}");
        *per_order
            .entry(e["data"]["order"].as_str().unwrap().to_owned())
            .or_insert(0) += 1;
    }
    per_order
}

#[test]
fn emitted_events_exist_exactly_once_across_kill_9() {
    const ROUNDS: u64 = 3;
    const ORDERS_PER_ROUND: u64 = 300;
    let mut server = TestServer::start();
    create_projection(&server.client(), "shipping", SHIPPING_SAGA);
    let mut last = 0;
    for round in 0..ROUNDS {
        let c = server.client();
        if round > 0 {
            // Let a checkpoint cover the earlier rounds (at most the 1 s checkpoint interval),
            // so that this crash resumes mid-way: from that checkpoint, with this round's
            // emits after it. (Round 0 crashes before any checkpoint: a full re-run.)
            wait_projection(
                &c,
                "shipping",
                PROJECTION_TIMEOUT,
                "checkpointed past the earlier rounds",
                |p| p["checkpoint_position"].as_u64().is_some_and(|x| x >= last),
            );
        }
        let range = round * ORDERS_PER_ROUND..(round + 1) * ORDERS_PER_ROUND;
        last = place_and_pay(&c, range.clone());
        // Kill while the projection is (most likely) still folding and emitting: it follows
        // the appends live, a little behind.
        let seen = get_projection(&c, "shipping");
        server.stop(libc::SIGKILL);
        eprintln!(
            "round {round}: killed at projection position {}, checkpoint {} (last appended \
             {last}): the events after the checkpoint are re-applied and re-emitted",
            seen["position"], seen["checkpoint_position"]
        );
        server.restart();
    }
    let c = server.client();
    wait_position(&c, "shipping", last);
    let orders = ROUNDS * ORDERS_PER_ROUND;
    // Poll until every order is shipped (emits are appended before the checkpoint moves past
    // them, but read the stream a few times rather than rely on that ordering here).
    let per_order = strata_suite::wait_for(PROJECTION_TIMEOUT, || {
        let s = shipments(&c);
        (s.len() as u64 == orders).then_some(s)
    })
    .unwrap_or_else(|| {
        panic!(
            "not every order shipped: {} of {orders}",
            shipments(&c).len()
        )
    });
    let dup: Vec<_> = per_order.iter().filter(|(_, n)| **n != 1).collect();
    assert!(dup.is_empty(), "orders shipped more than once: {dup:?}");
    assert_eq!(c.read_stream("shipping").len() as u64, orders);
    for i in [0, ORDERS_PER_ROUND, orders - 1] {
        let total = i % 7 + 1;
        wait_state(
            &c,
            "shipping",
            Some(&format!("order-{i}")),
            &json!({"placed": true, "total": total, "paid": total, "shipped": true}),
        );
    }
}

#[test]
fn restart_resumes_from_the_checkpoint() {
    const EVENTS: u64 = 5_000;
    let mut server = TestServer::start();
    let c = server.client();
    let mut expected_sum = 0;
    let mut last = 0;
    let batch = |from: u64, n: u64, sum: &mut u64| -> Value {
        let events: Vec<Value> = (from..from + n)
            .map(|i| {
                *sum += i % 10;
                json!({"type": "Added", "data": {"v": i % 10}})
            })
            .collect();
        Value::Array(events)
    };
    for k in 0..10 {
        let body = c.append(
            &format!("item-{k}"),
            &batch(k * 500, EVENTS / 10, &mut expected_sum),
        );
        last = body["last_position"].as_u64().unwrap();
    }
    create_projection(&c, "items", ITEMS);
    let expected = json!({"n": EVENTS, "sum": expected_sum, "last": last});
    wait_state(&c, "items", None, &expected);
    let before = wait_position(&c, "items", last);
    let checkpoint = before["position"].as_u64().unwrap();
    let incarnation = before["incarnation"].clone();

    // Graceful stop: the checkpoint is where the projection was.
    let (c, after) = restart_and_get(&mut server, libc::SIGTERM, "items");
    assert!(
        after["position"].as_u64().unwrap() >= checkpoint,
        "resumed before its checkpoint {checkpoint}: {after}"
    );
    assert_eq!(after["checkpoint_position"], checkpoint, "{after}");
    assert_eq!(
        after["incarnation"], incarnation,
        "same incarnation: {after}"
    );
    assert_eq!(after["events_processed"], EVENTS, "restored: {after}");
    let state = projection_state(&c, "items", None);
    state.assert_status(200);
    assert_eq!(
        state.json(),
        expected,
        "state right after the restart is the checkpoint's"
    );

    // More events, then kill -9 while they are being folded.
    for k in 0..10 {
        let body = c.append(
            &format!("item-{k}"),
            &batch(EVENTS + k * 500, EVENTS / 10, &mut expected_sum),
        );
        last = body["last_position"].as_u64().unwrap();
    }
    // Wait for a checkpoint inside the new events (at most the 1 s checkpoint interval), so
    // that the crash has a checkpoint to resume from that is not the graceful one.
    let crashed_at = wait_projection(
        &c,
        "items",
        PROJECTION_TIMEOUT,
        "checkpointed past the first batch",
        |p| {
            p["checkpoint_position"]
                .as_u64()
                .is_some_and(|x| x > checkpoint)
        },
    )["checkpoint_position"]
        .as_u64()
        .unwrap();
    let (c, after) = restart_and_get(&mut server, libc::SIGKILL, "items");
    assert!(
        after["position"].as_u64().unwrap() >= crashed_at,
        "resumed before the checkpoint {crashed_at} it had written before the crash: {after}"
    );
    // Exactly the fold of every event: nothing applied twice, nothing skipped.
    let expected = json!({"n": 2 * EVENTS, "sum": expected_sum, "last": last});
    wait_state_at(&c, "items", None, &expected, last);

    // The same source folded from scratch agrees.
    create_projection(&c, "items-rebuilt", ITEMS);
    wait_state(&c, "items-rebuilt", None, &expected);

    // A stopped projection stays stopped across a restart, with its state.
    projection_action(&c, "items", "stop").assert_status(200);
    assert_eq!(get_projection(&c, "items")["status"], "stopped");
    let (c, after) = restart_and_get(&mut server, libc::SIGTERM, "items");
    assert_eq!(after["status"], "stopped");
    let state = projection_state(&c, "items", None);
    state.assert_status(200);
    assert_eq!(state.json(), expected);
    projection_action(&c, "items", "start").assert_status(200);
    let last = c.append("item-0", &json!({"type": "Added", "data": {"v": 1000}}))["last_position"]
        .as_u64()
        .unwrap();
    wait_state(
        &c,
        "items",
        None,
        &json!({"n": 2 * EVENTS + 1, "sum": expected_sum + 1000, "last": last}),
    );
}
