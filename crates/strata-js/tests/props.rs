//! Property tests: the event object carries any JSON payload faithfully, and a checkpoint taken
//! anywhere resumes to the same states as folding straight through.

mod common;

use common::*;
use proptest::prelude::*;
use serde_json::{json, Value};
use strata_store::projection::ProjectionEngine;

/// JSON values JavaScript represents exactly (integers within ±2^31, no floats that lose
/// their spelling, keys of any text).
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i32>().prop_map(|n| json!(n)),
        (-1000i32..1000).prop_map(|n| json!(f64::from(n) + 0.5)),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,8}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn payloads_reach_handlers_intact(data in json_value(), metadata in json_value()) {
        let mut p = compile("fromAll().when({ $any: (s, e) => ({ data: e.data, metadata: e.metadata }) })");
        let mut e = event(7, "s-1", "T", &serde_json::to_string(&data).unwrap());
        e.metadata = serde_json::to_vec(&metadata).unwrap();
        feed(&mut p, &e).unwrap();
        let s = state(&mut p, "");
        prop_assert_eq!(&s["data"], &data);
        prop_assert_eq!(&s["metadata"], &metadata);
    }

    #[test]
    fn a_checkpoint_anywhere_resumes_to_the_same_states(
        keys in prop::collection::vec(0u8..5, 1..40),
        cut in 0usize..40,
    ) {
        let source = "fromAll().partitionBy(e => e.data.k).when({
            $init: () => ({ n: 0, sum: 0, seen: [] }),
            $any: (s, e) => { s.n++; s.sum += e.data.v; s.seen.push(e.position); },
        })";
        let events: Vec<_> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| event(i as u64, "s", "T", &format!(r#"{{"k": "p{k}", "v": {}}}"#, i * 3)))
            .collect();
        let cut = cut.min(events.len());

        let mut straight = compile(source);
        feed_all(&mut straight, &events);

        let mut first = compile(source);
        feed_all(&mut first, &events[..cut]);
        let mut resumed = compile(source);
        for k in first.partitions() {
            let s = state(&mut first, &k);
            resumed.restore(&k, s).unwrap();
        }
        feed_all(&mut resumed, &events[cut..]);

        prop_assert_eq!(straight.partitions(), resumed.partitions());
        for k in straight.partitions() {
            prop_assert_eq!(state(&mut straight, &k), state(&mut resumed, &k));
        }
        let total: u64 = straight
            .partitions()
            .iter()
            .map(|k| state(&mut straight, k)["n"].as_u64().unwrap())
            .sum();
        prop_assert_eq!(total, events.len() as u64);
    }
}
