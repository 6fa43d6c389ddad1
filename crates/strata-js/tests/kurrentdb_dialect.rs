//! The part of KurrentDB's projection dialect Strata accepts: `outputState()`, `options({...})`,
//! the event field aliases (`body`, `eventType`, `streamId`, `sequenceNumber`, `isJson`),
//! `emit` with a fourth (metadata) argument, and clear refusals of `linkTo`, `transformBy` and
//! `filterBy`.

mod common;

use common::*;
use serde_json::json;
use strata_js::JsError;
use strata_store::projection::{ProjectionEngine, ProjectionSource};

#[test]
fn a_typical_kurrentdb_projection_compiles_and_folds() {
    let mut p = compile(
        "options({ reorderEvents: false, processingLag: 0 });\n\
         fromCategory('order')\n\
           .when({\n\
             $init: function () { return { count: 0, total: 0, streams: [] }; },\n\
             OrderPlaced: function (s, e) {\n\
               s.count += 1;\n\
               s.total += e.body.total;\n\
               s.streams.push(e.streamId + '@' + e.sequenceNumber + ':' + e.eventType + ':' + e.isJson);\n\
             },\n\
           })\n\
           .outputState();\n",
    );
    assert_eq!(p.source(), ProjectionSource::Category("order".into()));
    feed_all(
        &mut p,
        &[
            event(0, "order-1", "OrderPlaced", r#"{"total":2}"#),
            event(1, "order-2", "OrderPlaced", r#"{"total":3}"#),
        ],
    );
    assert_eq!(
        state(&mut p, ""),
        json!({
            "count": 2,
            "total": 5,
            "streams": ["order-1@0:OrderPlaced:true", "order-2@1:OrderPlaced:true"],
        })
    );
}

#[test]
fn the_aliases_are_not_own_properties() {
    let mut p = compile(
        "fromAll().when({ $init: () => ({}), $any: (s, e) => ({ keys: Object.keys(e), json: JSON.parse(JSON.stringify(e)).body === undefined }) })",
    );
    feed_all(&mut p, &[event(0, "a", "T", r#"{"x":1}"#)]);
    assert_eq!(
        state(&mut p, ""),
        json!({
            "keys": ["id", "stream", "revision", "position", "type", "timestamp", "data", "metadata"],
            "json": true,
        })
    );
}

#[test]
fn emit_accepts_a_metadata_argument() {
    let mut p = compile(
        "fromAll().when({ $any: (s, e) => { emit('copies', 'Copied', e.body, { source: e.streamId }); return s; } })",
    );
    let emits = feed_all(&mut p, &[event(0, "a", "T", r#"{"x":1}"#)]);
    assert_eq!(emits.len(), 1);
}

fn definition_message(source: &str) -> String {
    match compile_err(source) {
        JsError::Definition { message } => message,
        other => panic!("{source}: expected a Definition error, got {other:?}"),
    }
}

#[test]
fn what_is_refused_says_so() {
    for (source, expected) in [
        (
            "fromAll().when({ $any: (s) => s }).transformBy((s) => s)",
            "transformBy() is not supported",
        ),
        (
            "fromAll().when({ $any: (s) => s }).filterBy((s) => true)",
            "filterBy() is not supported",
        ),
        (
            "options(1); fromAll().when({ $any: (s) => s })",
            "options() needs one object",
        ),
        (
            "fromAll().when({ $any: (s) => s }).outputState(1)",
            "outputState() takes no arguments",
        ),
    ] {
        let message = definition_message(source);
        assert!(message.contains(expected), "{source}: {message}");
    }
    let mut p = compile("fromAll().when({ $any: (s, e) => { linkTo('copies', e); return s; } })");
    let err = feed(&mut p, &event(0, "a", "T", "{}")).unwrap_err();
    assert!(err.message.contains("linkTo() is not supported"), "{err:?}");
}
