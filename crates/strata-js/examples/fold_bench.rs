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

/// Nanoseconds this thread has spent on a CPU (Linux schedstat), when available: on a shared
/// machine, events per CPU-second says more about the code than events per wall-second.
fn thread_cpu_ns() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// (events per wall second, events per on-CPU second).
fn fold(source: &str, events: &[RecordedEvent]) -> (f64, Option<f64>) {
    let mut p = JsProjection::compile(source, JsLimits::default()).expect("compiles");
    let mut emits = Vec::new();
    let cpu = thread_cpu_ns();
    let start = Instant::now();
    for e in events {
        if let Some(key) = p.partition_key(e).expect("partition") {
            p.apply(&key, e, &mut emits).expect("apply");
        }
    }
    let wall = start.elapsed().as_secs_f64();
    let cpu = cpu.zip(thread_cpu_ns()).map(|(a, b)| (b - a) as f64 / 1e9);
    assert!(!p.partitions().is_empty());
    let n = events.len() as f64;
    (n / wall, cpu.map(|c| n / c))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
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
        let results: Vec<_> = (0..runs).map(|_| fold(source, &events)).collect();
        let wall = median(results.iter().map(|r| r.0).collect());
        let cpu: Option<Vec<f64>> = results.iter().map(|r| r.1).collect();
        let cpu = cpu
            .map(median)
            .map_or_else(|| "n/a".into(), |c| format!("{c:.0}"));
        println!("{name:<26} {n} events, median of {runs}: {wall:>9.0} events/s wall, {cpu:>9} events/s on-CPU");
    }
}
