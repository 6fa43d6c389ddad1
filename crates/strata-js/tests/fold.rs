//! Folding events: handlers, states per partition, emits, the event object, state round trips.

mod common;

use common::*;
use serde_json::json;
use strata_store::projection::{Emit, ProjectionEngine};
use strata_store::ContentType;

#[test]
fn init_any_and_typed_handlers() {
    let mut p = compile(
        "fromAll().when({
            $init: () => ({ placed: 0, other: 0, total: 0 }),
            OrderPlaced: (s, e) => { s.placed += 1; s.total += e.data.total; return s; },
            $any: (s, e) => { s.other += 1; return s; },
        })",
    );
    assert_eq!(
        p.state("").unwrap(),
        None,
        "no state before the first event"
    );
    feed_all(
        &mut p,
        &[
            event(0, "order-1", "OrderPlaced", r#"{"total": 10.5}"#),
            event(1, "order-1", "OrderShipped", "{}"),
            event(2, "order-2", "OrderPlaced", r#"{"total": 1}"#),
        ],
    );
    assert_eq!(
        state(&mut p, ""),
        json!({ "placed": 2, "other": 1, "total": 11.5 })
    );
    assert_eq!(p.partitions(), vec![String::new()]);
}

#[test]
fn without_init_the_state_starts_as_an_empty_object() {
    let mut p = compile("fromAll().when({ A: (s, e) => { s.seen = (s.seen || 0) + 1; } })");
    feed_all(&mut p, &[event(0, "a", "A", "{}")]);
    assert_eq!(state(&mut p, ""), json!({ "seen": 1 }));
    // $init returning undefined also starts from {}.
    let mut p = compile("fromAll().when({ $init: () => {}, A: (s) => { s.x = 1; } })");
    feed_all(&mut p, &[event(0, "a", "A", "{}")]);
    assert_eq!(state(&mut p, ""), json!({ "x": 1 }));
}

#[test]
fn events_without_a_handler_leave_no_state() {
    let mut p = compile("fromAll().when({ $init: () => ({ n: 0 }), A: (s) => { s.n++; } })");
    feed_all(&mut p, &[event(0, "a", "B", "{}")]);
    assert_eq!(p.state("").unwrap(), None);
    assert!(p.partitions().is_empty());
}

#[test]
fn returned_state_replaces_mutated_state_is_kept() {
    // Returning a new value (even a primitive) replaces the state.
    let mut p = compile("fromAll().when({ $init: () => 0, $any: (s, e) => s + e.data })");
    feed_all(&mut p, &[event(0, "a", "T", "2"), event(1, "a", "T", "3")]);
    assert_eq!(state(&mut p, ""), json!(5));

    // Returning undefined keeps the (mutated) state.
    let mut p = compile("fromAll().when({ $init: () => ({ list: [] }), $any: (s, e) => { s.list.push(e.revision); } })");
    feed_all(
        &mut p,
        &[event(0, "a", "T", "{}"), event(1, "a", "T", "{}")],
    );
    assert_eq!(state(&mut p, ""), json!({ "list": [0, 1] }));

    // A new object each time.
    let mut p = compile(
        "fromAll().when({ $init: () => ({ n: 0 }), $any: (s) => ({ n: s.n + 1, prev: s.n }) })",
    );
    feed_all(
        &mut p,
        &[event(0, "a", "T", "{}"), event(1, "a", "T", "{}")],
    );
    assert_eq!(state(&mut p, ""), json!({ "n": 2, "prev": 1 }));

    // null is a state like any other.
    let mut p = compile("fromAll().when({ $any: () => null })");
    feed_all(&mut p, &[event(0, "a", "T", "{}")]);
    assert_eq!(p.state("").unwrap(), Some(serde_json::Value::Null));
}

#[test]
fn foreach_stream_partitions_by_stream() {
    let mut p = compile("fromCategory('order').foreachStream().when({ $init: () => ({ n: 0 }), $any: (s) => { s.n++; } })");
    feed_all(
        &mut p,
        &[
            event(0, "order-1", "A", "{}"),
            event(1, "order-2", "A", "{}"),
            event(2, "order-1", "A", "{}"),
        ],
    );
    assert_eq!(
        p.partitions(),
        vec!["order-1".to_string(), "order-2".to_string()]
    );
    assert_eq!(state(&mut p, "order-1"), json!({ "n": 2 }));
    assert_eq!(state(&mut p, "order-2"), json!({ "n": 1 }));
    assert_eq!(p.state("").unwrap(), None);
    assert_eq!(
        p.partition_key(&event(3, "order-9", "A", "{}")).unwrap(),
        Some("order-9".into())
    );
}

#[test]
fn partition_by_keys() {
    let mut p = compile(
        "fromAll().partitionBy(e => e.data.key).when({ $init: () => ({ n: 0 }), $any: (s, e) => { s.n++; s.last = e.position; } })",
    );
    let key =
        |p: &mut strata_js::JsProjection, data: &str| p.partition_key(&event(0, "s", "T", data));
    assert_eq!(key(&mut p, r#"{"key": "c1"}"#).unwrap(), Some("c1".into()));
    assert_eq!(key(&mut p, r#"{"key": 42}"#).unwrap(), Some("42".into()));
    assert_eq!(key(&mut p, r#"{"key": 1.5}"#).unwrap(), Some("1.5".into()));
    assert_eq!(key(&mut p, r#"{"key": ""}"#).unwrap(), Some("".into()));
    assert_eq!(key(&mut p, r#"{"key": null}"#).unwrap(), None);
    assert_eq!(
        key(&mut p, r#"{}"#).unwrap(),
        None,
        "undefined skips the event"
    );
    for bad in [r#"{"key": true}"#, r#"{"key": {}}"#, r#"{"key": [1]}"#] {
        let err = key(&mut p, bad).unwrap_err();
        assert!(
            err.message
                .contains("partitionBy() must return a string, a number"),
            "{err:?}"
        );
    }

    feed_all(
        &mut p,
        &[
            event(0, "s", "T", r#"{"key": "a"}"#),
            event(1, "s", "T", r#"{"key": "b"}"#),
            event(2, "s", "T", r#"{"key": null}"#),
            event(3, "s", "T", r#"{"key": "a"}"#),
        ],
    );
    assert_eq!(p.partitions(), vec!["a".to_string(), "b".to_string()]);
    assert_eq!(state(&mut p, "a"), json!({ "n": 2, "last": 3 }));
    assert_eq!(state(&mut p, "b"), json!({ "n": 1, "last": 1 }));
}

#[test]
fn a_throwing_partition_by_is_a_runtime_error_and_changes_nothing() {
    let mut p = compile("fromAll().partitionBy(function keyOf(e) { return e.data.a.b; }).when({ $any: (s) => { s.n = 1; } })");
    let err = p.partition_key(&event(0, "s", "T", "{}")).unwrap_err();
    assert!(err.message.starts_with("TypeError"), "{err:?}");
    assert!(err.stack.unwrap().contains("at keyOf (projection.js:1:"));
    feed_all(&mut p, &[event(1, "s", "T", r#"{"a": {"b": "k"}}"#)]);
    assert_eq!(state(&mut p, "k"), json!({ "n": 1 }));
}

#[test]
fn the_event_object_is_api_md_event_json() {
    let mut p = compile("fromAll().when({ $any: (s, e) => { s.events = s.events || []; s.events.push(e); s.keys = Object.keys(e); } })");
    let mut with_metadata = event(
        1834,
        "order-42",
        "OrderPlaced",
        r#"{"total": 99.0, "nested": {"a": [1, "x", null]}}"#,
    );
    with_metadata.revision = 0;
    with_metadata.metadata = br#"{"correlation_id": "abc"}"#.to_vec();
    let mut binary = event(1835, "bin", "Blob", "");
    binary.content_type = ContentType::Binary;
    binary.data = vec![0, 159, 146, 150];
    let not_json = event(1836, "odd", "Odd", "not json");
    let empty = event(1837, "e", "Empty", "");
    let mut odd_metadata = event(1838, "m", "M", "1");
    odd_metadata.metadata = b"nor this".to_vec();
    odd_metadata.timestamp_micros = 0;
    let mut big = event(1 << 40, "big", "Big", "[]");
    big.revision = (1 << 53) - 1;
    feed_all(
        &mut p,
        &[with_metadata, binary, not_json, empty, odd_metadata, big],
    );
    let s = state(&mut p, "");
    assert_eq!(
        s["events"][0],
        json!({
            "id": "6f1c7a5e-0c1b-4d5e-9d7a-00000000072a",
            "stream": "order-42",
            "revision": 0,
            "position": 1834,
            "type": "OrderPlaced",
            "timestamp": "2026-11-22T05:00:00.123456Z",
            // JavaScript has one number type: 99.0 is 99 (JSON.stringify writes `99`).
            "data": { "total": 99, "nested": { "a": [1, "x", null] } },
            "metadata": { "correlation_id": "abc" },
        })
    );
    assert_eq!(s["events"][1]["data_base64"], "AJ+Slg==");
    assert!(s["events"][1].get("data").is_none());
    assert_eq!(s["events"][1]["metadata"], serde_json::Value::Null);
    assert_eq!(s["events"][2]["data_base64"], "bm90IGpzb24=");
    assert_eq!(s["events"][3]["data"], serde_json::Value::Null);
    assert!(s["events"][3].as_object().unwrap().contains_key("data"));
    assert_eq!(s["events"][4]["metadata"], serde_json::Value::Null);
    assert_eq!(s["events"][4]["metadata_base64"], "bm9yIHRoaXM=");
    assert_eq!(s["events"][4]["timestamp"], "1970-01-01T00:00:00.000000Z");
    assert_eq!(s["events"][5]["position"], json!(1u64 << 40));
    assert_eq!(s["events"][5]["revision"], json!((1u64 << 53) - 1));
    // The keys in the server's order.
    assert_eq!(
        s["keys"],
        json!([
            "id",
            "stream",
            "revision",
            "position",
            "type",
            "timestamp",
            "data",
            "metadata"
        ])
    );
}

#[test]
fn emits_are_collected_per_event() {
    let mut p = compile(
        "fromCategory('order').when({
            OrderPlaced: (s, e) => {
                emit('customer-' + e.data.customer, 'CustomerOrdered', { order: e.stream, total: e.data.total });
                if (e.data.total > 100) emit('big-orders', 'BigOrder', e.stream);
            },
            Note: () => { emit('notes', 'Noted'); },
        })",
    );
    // The emits of an `OrderPlaced` at `position` of `stream`.
    let mut placed = |position, stream, data| {
        feed(&mut p, &event(position, stream, "OrderPlaced", data)).unwrap()
    };
    let emits = placed(0, "order-1", r#"{"customer": "c1", "total": 150}"#);
    assert_eq!(
        emits,
        vec![
            Emit {
                stream: "customer-c1".into(),
                event_type: "CustomerOrdered".into(),
                data: json!({ "order": "order-1", "total": 150 }),
            },
            Emit {
                stream: "big-orders".into(),
                event_type: "BigOrder".into(),
                data: json!("order-1")
            },
        ]
    );
    let emits = placed(1, "order-2", r#"{"customer": "c2", "total": 5}"#);
    assert_eq!(
        emits.len(),
        1,
        "emits of one event do not leak into the next"
    );
    let emits = feed(&mut p, &event(2, "order-3", "Note", "{}")).unwrap();
    assert_eq!(
        emits[0].data,
        serde_json::Value::Null,
        "omitted data is null"
    );
}

#[test]
fn invalid_emits_are_runtime_errors_in_the_handler() {
    let cases = [
        ("emit('', 'T', {})", "the stream must be 1 to 255 bytes"),
        ("emit(42, 'T', {})", "the stream must be a string"),
        ("emit(undefined, 'T', {})", "the stream must be a string"),
        ("emit('$system', 'T', {})", "reserved"),
        ("emit('a\\u0001b', 'T', {})", "control characters"),
        ("emit('x'.repeat(256), 'T', {})", "1 to 255 bytes"),
        ("emit('s', '', {})", "the type must be 1 to 255 bytes"),
        ("emit('s', null, {})", "the type must be a string"),
        ("emit('s', 'T', () => 1)", "JSON-serialisable"),
        ("emit('s', 'T', Symbol('x'))", "JSON-serialisable"),
        ("const o = {}; o.self = o; emit('s', 'T', o)", "TypeError"),
        ("emit('s', 'T', { n: 10n })", "TypeError"),
        (
            "for (let i = 0; i < 10001; i++) emit('s', 'T', i)",
            "at most 10000 events",
        ),
    ];
    for (call, expected) in cases {
        let mut p = compile(&format!(
            "fromAll().when({{ $any: function onAny(s, e) {{ {call}; }} }})"
        ));
        let err = feed(&mut p, &event(0, "a", "T", "{}")).unwrap_err();
        assert!(err.message.contains(expected), "{call}: {err:?}");
        let stack = err.stack.unwrap_or_default();
        assert!(stack.contains("onAny"), "{call}: {stack}");
    }
}

#[test]
fn emit_outside_a_handler_throws() {
    match compile_err("emit('s', 'T', {}); fromAll().when({ $any: s => s })") {
        strata_js::JsError::Runtime { message, .. } => {
            assert!(
                message.contains("only be called inside a when() handler"),
                "{message}"
            )
        }
        other => panic!("{other:?}"),
    }
    let mut p = compile(
        "fromAll().partitionBy(e => { emit('s', 'T'); return 'k'; }).when({ $any: s => s })",
    );
    let err = p.partition_key(&event(0, "a", "T", "{}")).unwrap_err();
    assert!(
        err.message
            .contains("only be called inside a when() handler"),
        "{err:?}"
    );
}

#[test]
fn a_caught_invalid_emit_emits_nothing() {
    let mut p = compile("fromAll().when({ $any: (s) => { try { emit('$x', 'T') } catch (e) { s.caught = e.name } emit('ok', 'T', 1); } })");
    let emits = feed(&mut p, &event(0, "a", "T", "{}")).unwrap();
    assert_eq!(emits.len(), 1);
    assert_eq!(state(&mut p, ""), json!({ "caught": "TypeError" }));
}

#[test]
fn state_and_restore_round_trip() {
    let source = "fromAll().partitionBy(e => e.data.k).when({ $init: () => ({ n: 0, tags: [] }), $any: (s, e) => { s.n++; s.tags.push(e.data.t); } })";
    let mut p = compile(source);
    feed_all(
        &mut p,
        &[
            event(0, "s", "T", r#"{"k": "a", "t": "x"}"#),
            event(1, "s", "T", r#"{"k": "b", "t": "y"}"#),
            event(2, "s", "T", r#"{"k": "a", "t": "z"}"#),
        ],
    );
    let checkpoint: Vec<(String, serde_json::Value)> = p
        .partitions()
        .into_iter()
        .map(|k| {
            let s = state(&mut p, &k);
            (k, s)
        })
        .collect();

    // A fresh engine restored from the checkpoint continues exactly where the first one is.
    let mut q = compile(source);
    for (k, s) in &checkpoint {
        q.restore(k, s.clone()).unwrap();
    }
    let next = [
        event(3, "s", "T", r#"{"k": "a", "t": "w"}"#),
        event(4, "s", "T", r#"{"k": "c", "t": "v"}"#),
    ];
    feed_all(&mut p, &next);
    feed_all(&mut q, &next);
    assert_eq!(p.partitions(), q.partitions());
    for k in p.partitions() {
        assert_eq!(state(&mut p, &k), state(&mut q, &k), "partition {k}");
    }
    assert_eq!(
        state(&mut q, "a"),
        json!({ "n": 3, "tags": ["x", "z", "w"] })
    );

    // clear drops every state.
    q.clear();
    assert!(q.partitions().is_empty());
    assert_eq!(q.state("a").unwrap(), None);
    feed_all(&mut q, &[event(5, "s", "T", r#"{"k": "a", "t": "u"}"#)]);
    assert_eq!(state(&mut q, "a"), json!({ "n": 1, "tags": ["u"] }));
}

#[test]
fn unserialisable_states_are_errors_not_guesses() {
    let mut p = compile("fromAll().when({ $any: () => () => 1 })");
    feed_all(&mut p, &[event(0, "a", "T", "{}")]);
    assert!(p
        .state("")
        .unwrap_err()
        .message
        .contains("not JSON-serialisable"));
    let mut p = compile("fromAll().when({ $any: (s) => { s.self = s; } })");
    feed_all(&mut p, &[event(0, "a", "T", "{}")]);
    assert!(p.state("").unwrap_err().message.starts_with("TypeError"));
    let mut p = compile("fromAll().when({ $any: (s) => { s.n = 1n; } })");
    feed_all(&mut p, &[event(0, "a", "T", "{}")]);
    assert!(p.state("").is_err());
}

#[test]
fn async_handlers_are_refused() {
    let mut p = compile("fromAll().when({ $any: async (s) => { s.n = 1; return s; } })");
    let err = feed(&mut p, &event(0, "a", "T", "{}")).unwrap_err();
    assert!(err.message.contains("not a Promise"), "{err:?}");
}
