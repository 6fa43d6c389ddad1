//! Consumer groups at scale: 100 groups × 50 concurrent consumers over one source.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::json;

use crate::groups_support::*;

const GROUPS: usize = 100;
const CONSUMERS: usize = 50;
const EVENTS: usize = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_groups_with_fifty_consumers_each_get_every_event_once() {
    let dir = tempfile::tempdir().unwrap();
    let node = Arc::new(Node::open(dir.path(), Default::default()));
    for s in 0..20 {
        append(&*node, &format!("load-{s}"), EVENTS / 20).await;
    }
    for g in 0..GROUPS {
        create(&*node, &format!("g{g}"), json!({"source": "category:load"})).await;
    }
    let seen: Arc<Vec<Mutex<HashSet<u64>>>> =
        Arc::new((0..GROUPS).map(|_| Mutex::new(HashSet::new())).collect());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(240);
    let mut tasks = Vec::new();
    for g in 0..GROUPS {
        for _ in 0..CONSUMERS {
            let node = node.clone();
            let seen = seen.clone();
            tasks.push(tokio::spawn(async move {
                let group = format!("g{g}");
                while seen[g].lock().len() < EVENTS && tokio::time::Instant::now() < deadline {
                    let m = poll(&*node, &group, 5, 200).await;
                    if m.is_empty() {
                        continue;
                    }
                    {
                        let mut set = seen[g].lock();
                        for msg in &m {
                            let p = msg["event"]["position"].as_u64().unwrap();
                            assert!(set.insert(p), "group {group} got {p} twice");
                        }
                    }
                    ack(&*node, &group, &ids(&m)).await;
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    for g in 0..GROUPS {
        assert_eq!(seen[g].lock().len(), EVENTS, "group g{g}");
        let v = show(&*node, &format!("g{g}")).await;
        assert_eq!(v["in_flight"], 0, "{v}");
        assert!(v["checkpoint"].as_u64().unwrap() >= EVENTS as u64, "{v}");
    }
    match Arc::try_unwrap(node) {
        Ok(node) => node.stop().await,
        Err(_) => panic!("node still shared"),
    }
}

/// A group created at `start` over a large backlog drains it through its bounded window.
/// 1 million events: run with `cargo test --release -p strata-server --test api -- --ignored
/// million` (it prints the rate); the default run uses 50,000.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "large; run explicitly in release mode"]
async fn million_event_backlog_drains_through_the_window() {
    drain_backlog(1_000_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_drains_through_the_window() {
    drain_backlog(50_000).await;
}

async fn drain_backlog(events: u64) {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::open(dir.path(), Default::default());
    let store = node.app.store().clone();
    let batch: Vec<strata_store::NewEvent> = (0..10_000)
        .map(|i| strata_store::NewEvent::json("T", format!(r#"{{"i":{i}}}"#)))
        .collect();
    for i in 0..events / 10_000 {
        store
            .append_async(
                &format!("big-{}", i % 10),
                strata_store::ExpectedRevision::Any,
                batch.clone(),
            )
            .await
            .unwrap();
    }
    drop(store);
    let started = std::time::Instant::now();
    create(&node, "g", json!({"source": "$all"})).await;
    let window = strata_server::GroupOptions::default().window as u64;
    let mut delivered = 0u64;
    let mut next_expected = 0u64;
    while delivered < events {
        let m = poll(&node, "g", 1000, 5000).await;
        for msg in &m {
            assert_eq!(msg["event"]["position"], next_expected);
            next_expected += 1;
        }
        delivered += m.len() as u64;
        ack(&node, "g", &ids(&m)).await;
        if delivered % 100_000 < 1000 {
            let g = show(&node, "g").await;
            let held = g["in_flight"].as_u64().unwrap() + g["buffered"].as_u64().unwrap();
            assert!(held <= window, "{g}");
        }
    }
    let took = started.elapsed();
    println!(
        "{events} events consumed through one group in {took:?} ({:.0} events/s)",
        events as f64 / took.as_secs_f64()
    );
    assert!(poll(&node, "g", 10, 0).await.is_empty());
    node.stop().await;
}
