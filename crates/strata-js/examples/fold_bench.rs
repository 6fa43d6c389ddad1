//! Folds synthetic events through a projection and prints events/s.
//!
//! `cargo run --release -p strata-js --example fold_bench [-- <events> [<runs> [<scenario>]]]`
//!
//! Scenarios: the counting projection of the issue (unpartitioned, `$any`), the same with a
//! typed handler reading `e.data`, and a `partitionBy` on a data field (1,000 partitions).

use std::time::Instant;

use strata_js::{JsLimits, JsProjection};
use strata_store::projection::ProjectionEngine;
use strata_store::{ContentType, RecordedEvent};

const COUNT: &str =
    "fromAll().when({$init: () => ({count: 0}), $any: (s, e) => { s.count++; return s; }})";
const SUM: &str = "fromCategory('order').when({
    $init: () => ({count: 0, total: 0}),
    OrderPlaced: (s, e) => { s.count += 1; s.total += e.data.total; return s; },
})";
const PARTITIONED: &str = "fromAll().partitionBy(e => e.data.customer).when({
    $init: () => ({count: 0, total: 0}),
    OrderPlaced: (s, e) => { s.count += 1; s.total += e.data.total; },
})";

fn events(n: u64) -> Vec<RecordedEvent> {
    (0..n)
        .map(|i| RecordedEvent {
            id: uuid::Uuid::from_u128(u128::from(i) * 7919 + 1),
            stream: format!("order-{}", i / 10),
            revision: i % 10,
            position: i,
            event_type: "OrderPlaced".into(),
            timestamp_micros: 1_795_323_600_000_000 + (i / 10) as i64,
            content_type: ContentType::Json,
            data: format!(r#"{{"customer":"c{}","total":{}.5}}"#, i % 1000, i % 100).into_bytes(),
            metadata: if i % 2 == 0 {
                br#"{"correlation_id":"abc"}"#.to_vec()
            } else {
                Vec::new()
            },
        })
        .collect()
}

fn fold(source: &str, events: &[RecordedEvent]) -> f64 {
    let mut p = JsProjection::compile(source, JsLimits::default()).expect("compiles");
    let mut emits = Vec::new();
    let start = Instant::now();
    for e in events {
        if let Some(key) = p.partition_key(e).expect("partition") {
            p.apply(&key, e, &mut emits).expect("apply");
        }
    }
    let rate = events.len() as f64 / start.elapsed().as_secs_f64();
    assert!(!p.partitions().is_empty());
    rate
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: u64 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let runs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let only = args.next().unwrap_or_default();
    let events = events(n);
    for (name, source) in [
        ("count ($any)", COUNT),
        ("sum (typed, e.data)", SUM),
        ("partitionBy (1,000 keys)", PARTITIONED),
    ] {
        if !name.contains(&only) {
            continue;
        }
        let mut rates: Vec<f64> = (0..runs).map(|_| fold(source, &events)).collect();
        rates.sort_by(f64::total_cmp);
        let median = rates[rates.len() / 2];
        println!(
            "{name:<26} {n} events: median {:>9.0} events/s (min {:.0}, max {:.0}, {runs} runs)",
            median,
            rates[0],
            rates[rates.len() - 1]
        );
    }
}
