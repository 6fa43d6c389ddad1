//! Correlation and causation through the embedded API: one flow's events from the correlation
//! index (open segment, sealed segments, after a reopen and after the index files are rebuilt),
//! the causes and effects of an event and their limits, the metadata of projection emits, and a
//! typed projection that upcasts version-1 events before its handler (stored events untouched).

use std::time::{Duration, Instant};

use serde_json::json;
use strata_store::projection::{
    typed_engine, Emitter, Projection, ProjectionError, ProjectionRunner, ProjectionSource,
    RunState, RunnerOptions, Upcasters,
};
use strata_store::{
    AllFilter, Direction, ExpectedRevision, FsyncPolicy, NewEvent, Options, ReadFrom,
    RecordedEvent, Store,
};
use uuid::Uuid;

fn options() -> Options {
    Options {
        fsync: FsyncPolicy::Never,
        segment_size: 4096,
        ..Options::default()
    }
}

fn event(ty: &str, id: Uuid, metadata: serde_json::Value) -> NewEvent {
    NewEvent::json(ty, format!(r#"{{"pad":"{}"}}"#, "x".repeat(80)))
        .with_id(id)
        .with_metadata(metadata.to_string())
}

fn flow(store: &Store, id: &str, direction: Direction, types: &[&str]) -> Vec<u64> {
    let filter = AllFilter {
        correlation_id: Some(id.into()),
        types: types.iter().map(|t| t.to_string()).collect(),
        ..AllFilter::default()
    };
    let from = match direction {
        Direction::Forward => ReadFrom::Start,
        Direction::Backward => ReadFrom::End,
    };
    let mut out = Vec::new();
    let mut from = from;
    loop {
        let page = store.read_all(from, direction, 3, &filter).unwrap();
        out.extend(page.events.iter().map(|e| e.position));
        match page.next {
            Some(n) if !page.end => from = ReadFrom::At(n),
            _ => return out,
        }
    }
}

/// Flows interleaved with unrelated events over several sealed segments and the open one.
fn write_flows(store: &Store) -> (Vec<u64>, Vec<u64>, Vec<Uuid>) {
    let (mut a, mut b, mut ids) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..60u128 {
        let id = Uuid::from_u128(1000 + i);
        let (meta, ty) = match i % 3 {
            0 => {
                let meta = match ids.last() {
                    Some(cause) => json!({"correlation_id": "flow-a", "causation_id": cause}),
                    None => json!({"correlation_id": "flow-a"}),
                };
                (meta, if i % 2 == 0 { "Even" } else { "Odd" })
            }
            1 => (json!({"correlation_id": "flow-b", "user": i as u64}), "Odd"),
            _ => (json!({"nested": {"correlation_id": "flow-a"}}), "Even"),
        };
        let r = store
            .append(
                &format!("s-{}", i % 4),
                ExpectedRevision::Any,
                vec![event(ty, id, meta)],
            )
            .unwrap();
        match i % 3 {
            0 => {
                a.push(r.first_position);
                ids.push(id);
            }
            1 => b.push(r.first_position),
            _ => {}
        }
    }
    (a, b, ids)
}

fn check_flows(store: &Store, a: &[u64], b: &[u64]) {
    assert_eq!(flow(store, "flow-a", Direction::Forward, &[]), a);
    assert_eq!(flow(store, "flow-b", Direction::Forward, &[]), b);
    let mut back = a.to_vec();
    back.reverse();
    assert_eq!(flow(store, "flow-a", Direction::Backward, &[]), back);
    // Combined with the other filters.
    let even: Vec<u64> = a
        .iter()
        .copied()
        .filter(|&p| {
            let e = store.read_all(
                ReadFrom::At(p),
                Direction::Forward,
                1,
                &AllFilter::default(),
            );
            e.unwrap().events[0].event_type == "Even"
        })
        .collect();
    assert_eq!(flow(store, "flow-a", Direction::Forward, &["Even"]), even);
    assert!(flow(store, "flow-c", Direction::Forward, &[]).is_empty());
}

#[test]
fn flows_read_from_the_index_across_seals_reopens_and_rebuilds() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), options()).unwrap();
    let (a, b, _) = write_flows(&store);
    assert!(store.info().segment_count >= 3, "{:?}", store.info());
    check_flows(&store, &a, &b);
    store.close().unwrap();
    drop(store);

    let store = Store::open(dir.path(), options()).unwrap();
    check_flows(&store, &a, &b);
    store.close().unwrap();
    drop(store);

    // Index files are derived data: removed, they are rebuilt with the same answers.
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "idx") {
            std::fs::remove_file(path).unwrap();
        }
    }
    let store = Store::open(dir.path(), options()).unwrap();
    check_flows(&store, &a, &b);
}

#[test]
fn causes_and_effects_walk_the_chain_within_their_limits() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), options()).unwrap();
    let (a, _, ids) = write_flows(&store);
    let last = *ids.last().unwrap();
    let chain = store.causes(last, 1000).unwrap().unwrap();
    let got: Vec<u64> = chain.events.iter().map(|e| e.position).collect();
    assert_eq!(got, a[..a.len() - 1]);
    assert!(!chain.truncated && chain.unresolved.is_none());
    let chain = store.causes(last, 3).unwrap().unwrap();
    let got: Vec<u64> = chain.events.iter().map(|e| e.position).collect();
    assert_eq!(got, a[a.len() - 4..a.len() - 1]);
    assert!(chain.truncated);

    let effects = store.effects(ids[0], 1000).unwrap();
    let got: Vec<u64> = effects.events.iter().map(|e| e.position).collect();
    assert_eq!(got, a[1..]);
    assert!(store.effects(ids[0], 2).unwrap().truncated);

    // A cause outside every flow ends the walk, named.
    let plain = Uuid::from_u128(7);
    store
        .append(
            "p-1",
            ExpectedRevision::Any,
            vec![NewEvent::json("Plain", "{}").with_id(plain)],
        )
        .unwrap();
    let child = Uuid::from_u128(8);
    store
        .append(
            "p-1",
            ExpectedRevision::Any,
            vec![event(
                "Child",
                child,
                json!({"causation_id": plain.to_string().to_uppercase()}),
            )],
        )
        .unwrap();
    let chain = store.causes(child, 10).unwrap().unwrap();
    assert!(chain.events.is_empty());
    assert_eq!(chain.unresolved, Some(plain.to_string().to_uppercase()));
    // ... but its effects are found (they name it), and it is not found by id itself.
    let effects = store.effects(plain, 10).unwrap();
    assert_eq!(effects.events.len(), 1);
    assert_eq!(effects.events[0].id, child);
    assert!(store.find_event_by_id(plain).unwrap().is_none());
    assert!(store.causes(plain, 10).unwrap().is_none());
    assert_eq!(store.find_event_by_id(child).unwrap().unwrap().id, child);
}

/// A typed projection over `order` events: reads `total_cents` (version 2), upcasting version-1
/// events (`amount` in units), and emits one `Invoiced` event per order.
struct Invoicing {
    upcasters: Upcasters,
}

impl Projection for Invoicing {
    type State = i64;

    fn source(&self) -> ProjectionSource {
        ProjectionSource::Category("order".into())
    }

    fn upcast<'a>(
        &self,
        event: &'a RecordedEvent,
    ) -> Result<std::borrow::Cow<'a, RecordedEvent>, ProjectionError> {
        self.upcasters.apply(event)
    }

    fn init(&self) -> i64 {
        0
    }

    fn apply(
        &self,
        state: &mut i64,
        event: &RecordedEvent,
        emit: &mut Emitter<'_>,
    ) -> Result<(), ProjectionError> {
        let data: serde_json::Value =
            serde_json::from_slice(&event.data).map_err(|e| ProjectionError::new(e.to_string()))?;
        let cents = data["total_cents"]
            .as_i64()
            .ok_or_else(|| ProjectionError::new(format!("no total_cents in {data}")))?;
        *state += cents;
        emit.emit("invoice-1", "Invoiced", &json!({"cents": cents}))
    }
}

#[test]
fn projections_upcast_before_handlers_and_emit_within_the_flow() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), options()).unwrap();
    let v1 = Uuid::from_u128(1);
    store
        .append(
            "order-1",
            ExpectedRevision::Any,
            vec![NewEvent::json("OrderPlaced", r#"{"amount":5}"#)
                .with_id(v1)
                .with_metadata(r#"{"correlation_id":"checkout-1"}"#)],
        )
        .unwrap();
    store
        .append(
            "order-2",
            ExpectedRevision::Any,
            vec![NewEvent::json("OrderPlaced", r#"{"total_cents":250}"#)
                .with_metadata(r#"{"schema_version":2}"#)],
        )
        .unwrap();
    let upcasters = Upcasters::new().add("OrderPlaced", 1, |d| {
        Ok(json!({"total_cents": d["amount"].as_i64().unwrap_or(0) * 100}))
    });
    let runner = ProjectionRunner::open(
        store.clone(),
        "invoicing",
        1,
        typed_engine(Invoicing { upcasters }),
        RunnerOptions::default(),
    );
    runner.start().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while runner.status().cursor < 2 || store.next_position() < 4 {
        assert!(Instant::now() < deadline, "{:?}", runner.status());
        assert_eq!(
            runner.status().state,
            RunState::Running,
            "{:?}",
            runner.status()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let state: i64 = serde_json::from_str(runner.state("").unwrap().get()).unwrap();
    assert_eq!(state, 750);
    runner.stop();
    // The stored version-1 event is unchanged.
    let stored = store.read_event("order-1", 0).unwrap().unwrap();
    assert_eq!(stored.data, br#"{"amount":5}"#);
    // The emit caused by it carries its flow and its id.
    let invoices = store
        .read_stream("invoice-1", ReadFrom::Start, Direction::Forward, 10)
        .unwrap();
    let meta: serde_json::Value = serde_json::from_slice(&invoices.events[0].metadata).unwrap();
    assert_eq!(meta["correlation_id"], "checkout-1");
    assert_eq!(meta["causation_id"], v1.to_string());
    let meta: serde_json::Value = serde_json::from_slice(&invoices.events[1].metadata).unwrap();
    assert!(meta.get("correlation_id").is_none());
    assert_eq!(
        meta["causation_id"],
        store
            .read_event("order-2", 0)
            .unwrap()
            .unwrap()
            .id
            .to_string()
    );
    // The flow now holds the order and its invoice; the invoice is the order's effect.
    let flow = flow(&store, "checkout-1", Direction::Forward, &[]);
    assert_eq!(flow, vec![0, invoices.events[0].position]);
    let effects = store.effects(v1, 10).unwrap();
    assert_eq!(effects.events[0].id, invoices.events[0].id);
}
