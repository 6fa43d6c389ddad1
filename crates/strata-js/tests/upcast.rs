//! Upcasters: `.upcast({Type: {version: e => newData}})` turns older `metadata.schema_version`s
//! of an event type into the current one before partitionBy and the handlers, in version order;
//! the stored event is untouched; mistakes in the declaration are definition errors.

mod common;

use common::*;
use serde_json::json;
use strata_js::JsError;
use strata_store::projection::ProjectionEngine;

const TOTALS: &str = "fromCategory('order')
    .upcast({
        OrderPlaced: {
            1: (e) => ({ customer: e.data.who, cents: e.data.amount * 100 }),
            2: (e) => Object.assign({}, e.data, { currency: e.data.currency || 'EUR' }),
        },
    })
    .partitionBy((e) => e.data.customer)
    .when({
        $init: () => ({ cents: 0, currencies: [], versions: [] }),
        OrderPlaced: (s, e) => {
            s.cents += e.data.cents;
            s.currencies.push(e.data.currency);
            s.versions.push(e.metadata.schema_version);
        },
    })";

#[test]
fn old_versions_are_upcast_in_order_before_partitioning_and_handlers() {
    let mut p = compile(TOTALS);
    let v1 = event(0, "order-1", "OrderPlaced", r#"{"who":"ann","amount":5}"#);
    let mut v2 = event(
        1,
        "order-2",
        "OrderPlaced",
        r#"{"customer":"ann","cents":250}"#,
    );
    v2.metadata = br#"{"schema_version":2,"correlation_id":"c"}"#.to_vec();
    let mut v3 = event(
        2,
        "order-3",
        "OrderPlaced",
        r#"{"customer":"bob","cents":1,"currency":"USD"}"#,
    );
    v3.metadata = br#"{"schema_version":3}"#.to_vec();
    feed_all(&mut p, &[v1.clone(), v2, v3]);
    assert_eq!(
        state(&mut p, "ann"),
        json!({ "cents": 750, "currencies": ["EUR", "EUR"], "versions": [3, 3] })
    );
    assert_eq!(
        state(&mut p, "bob"),
        json!({ "cents": 1, "currencies": ["USD"], "versions": [3] })
    );
    // What was handed to the upcaster is a copy: the stored event is as it was.
    assert_eq!(v1.data, br#"{"who":"ann","amount":5}"#);
    assert!(v1.metadata.is_empty());
    assert_eq!(p.event_types(), Some(vec!["OrderPlaced".to_owned()]));
}

#[test]
fn an_upcaster_that_throws_faults_at_the_event() {
    let mut p = compile(
        "fromAll().upcast({ A: { 1: () => { throw new Error('no v1 please'); } } }).when({ A: (s) => s })",
    );
    let err = feed(&mut p, &event(0, "a", "A", "{}")).unwrap_err();
    assert!(err.message.contains("no v1 please"), "{err:?}");
}

#[test]
fn declaration_mistakes_are_definition_errors() {
    for (source, needle) in [
        (
            "fromAll().upcast(1).when({ A: (s) => s })",
            "upcast() needs an object",
        ),
        (
            "fromAll().upcast({ A: 1 }).when({ A: (s) => s })",
            "must be an object by version",
        ),
        (
            "fromAll().upcast({ A: { 0: (e) => 1 } }).when({ A: (s) => s })",
            "positive integers",
        ),
        (
            "fromAll().upcast({ A: { v1: (e) => 1 } }).when({ A: (s) => s })",
            "positive integers",
        ),
        (
            "fromAll().upcast({ A: { 1: 5 } }).when({ A: (s) => s })",
            "must be a function",
        ),
    ] {
        match compile_err(source) {
            JsError::Definition { message } => {
                assert!(message.contains(needle), "{source}: {message}")
            }
            other => panic!("{source}: {other:?}"),
        }
    }
}
