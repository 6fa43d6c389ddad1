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
