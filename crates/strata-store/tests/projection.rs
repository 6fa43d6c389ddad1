//! Projection runner integration tests with a Rust (typed) engine: restart equals rebuild
//! (proptest over events and crash points), idempotent emits across crashes, partitions,
//! faults, reset, stop/start, sources.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use strata_store::projection::{
    read_latest_checkpoint, typed_engine, Emitter, EngineBuilder, Projection, ProjectionError,
    ProjectionIdentity, ProjectionRunner, ProjectionSource, ProjectionStatus, RunState,
    RunnerOptions,
};
use strata_store::{
    AppendResult, Direction, ExpectedRevision, FsyncPolicy, NewEvent, Options, ReadFrom,
    RecordedEvent, Store,
};

/// Store options without fsync (the tests do not cut power).
fn no_fsync() -> Options {
    Options {
        fsync: FsyncPolicy::Never,
        ..Options::default()
    }
}

fn open_store(dir: &Path) -> Store {
    Store::open(dir, no_fsync()).unwrap()
}

/// A store in a fresh temporary directory (dropped after the store).
fn temp_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    (dir, store)
}

/// Appends `events` to `stream` (any revision).
fn append(store: &Store, stream: &str, events: Vec<NewEvent>) -> AppendResult {
    store.append(stream, ExpectedRevision::Any, events).unwrap()
}

/// The handler of a [`Handler`] projection.
type Apply<S> =
    dyn Fn(&mut S, &RecordedEvent, &mut Emitter<'_>) -> Result<(), ProjectionError> + Send + Sync;

/// A projection of `source` folding every event with `apply`, from `S::default()`.
struct Handler<S> {
    source: ProjectionSource,
    apply: Box<Apply<S>>,
}

fn handler<S>(
    source: ProjectionSource,
    apply: impl Fn(&mut S, &RecordedEvent, &mut Emitter<'_>) -> Result<(), ProjectionError>
        + Send
        + Sync
        + 'static,
) -> Handler<S> {
    Handler {
        source,
        apply: Box::new(apply),
    }
}

impl<S> Projection for Handler<S>
where
    S: Default + Serialize + serde::de::DeserializeOwned + 'static,
{
    type State = S;

    fn source(&self) -> ProjectionSource {
        self.source.clone()
    }

    fn init(&self) -> S {
        S::default()
    }

    fn apply(
        &self,
        state: &mut S,
        event: &RecordedEvent,
        emit: &mut Emitter<'_>,
    ) -> Result<(), ProjectionError> {
        (self.apply)(state, event, emit)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Totals {
    count: u64,
    total: i64,
}

/// Order totals per customer (or one total), emitting `BigOrder` for orders over 100, failing
/// on an order with `"fail": true`.
#[derive(Clone)]
struct OrderTotals {
    source: ProjectionSource,
    partitioned: bool,
    emit: bool,
}

impl OrderTotals {
    fn new(partitioned: bool) -> Self {
        OrderTotals {
            source: ProjectionSource::Category("order".into()),
            partitioned,
            emit: true,
        }
    }
}

fn data(event: &RecordedEvent) -> serde_json::Value {
    serde_json::from_slice(&event.data).unwrap_or(serde_json::Value::Null)
}

impl Projection for OrderTotals {
    type State = Totals;

    fn source(&self) -> ProjectionSource {
        self.source.clone()
    }

    fn event_types(&self) -> Option<Vec<String>> {
        Some(vec!["OrderPlaced".into(), "OrderCancelled".into()])
    }

    fn partition_key(&self, event: &RecordedEvent) -> Option<String> {
        if self.partitioned {
            data(event)["customer"].as_str().map(str::to_owned)
        } else {
            Some(String::new())
        }
    }

    fn init(&self) -> Totals {
        Totals::default()
    }

    fn apply(
        &self,
        state: &mut Totals,
        event: &RecordedEvent,
        emit: &mut Emitter<'_>,
    ) -> Result<(), ProjectionError> {
        let d = data(event);
        if d["fail"] == true {
            // Mutates, then fails: the runner must not keep the half-applied state.
            state.count += 1000;
            return Err(ProjectionError {
                message: "order refused".into(),
                stack: Some("at apply (orders.rs)".into()),
            });
        }
        let amount = d["amount"].as_i64().unwrap_or(0);
        match event.event_type.as_str() {
            "OrderPlaced" => {
                state.count += 1;
                state.total += amount;
                if self.emit && amount > 100 {
                    emit.emit(
                        "big-orders",
                        "BigOrder",
                        &serde_json::json!({"from": event.position}),
                    )?;
                }
            }
            "OrderCancelled" => state.total -= amount,
            _ => {}
        }
        Ok(())
    }
}

/// The events of category `order` (of `types`; all when empty), in log order.
fn order_events(store: &Store, types: Vec<String>) -> Vec<RecordedEvent> {
    let filter = strata_store::AllFilter {
        category: Some("order".into()),
        types,
        ..Default::default()
    };
    store
        .read_all(ReadFrom::Start, Direction::Forward, 1_000_000, &filter)
        .unwrap()
        .events
}

/// The same fold, computed directly from the log.
fn model(store: &Store, partitioned: bool) -> BTreeMap<String, Totals> {
    let p = OrderTotals::new(partitioned);
    let mut states = BTreeMap::new();
    for e in order_events(store, Vec::new()) {
        if !matches!(e.event_type.as_str(), "OrderPlaced" | "OrderCancelled") {
            continue;
        }
        if let Some(key) = p.partition_key(&e) {
            let s = states.entry(key).or_insert_with(Totals::default);
            let mut emitter_out = Vec::new();
            apply_plain(&p, s, &e, &mut emitter_out);
        }
    }
    states
}

fn apply_plain(
    p: &OrderTotals,
    s: &mut Totals,
    e: &RecordedEvent,
    out: &mut Vec<strata_store::projection::Emit>,
) {
    // Reuse the engine's adapter to get an Emitter.
    use strata_store::projection::ProjectionEngine;
    let mut engine = strata_store::projection::TypedEngine::new(std::sync::Arc::new(p.clone()));
    engine
        .restore("", serde_json::to_value(&*s).unwrap())
        .unwrap();
    engine.apply("", e, out).unwrap();
    *s = serde_json::from_value(engine.state("").unwrap().unwrap()).unwrap();
}

fn runner_states(runner: &ProjectionRunner) -> BTreeMap<String, Totals> {
    runner
        .states()
        .into_iter()
        .map(|(k, v)| (k, serde_json::from_str(v.get()).unwrap()))
        .collect()
}

/// The served state of `partition`, parsed.
fn served(runner: &ProjectionRunner, partition: &str) -> Option<serde_json::Value> {
    runner
        .state(partition)
        .map(|json| serde_json::from_str(json.get()).unwrap())
}

fn wait_for(runner: &ProjectionRunner, what: &str, pred: impl Fn(&ProjectionStatus) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = runner.status();
        if pred(&status) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {status:?}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Waits until the runner has examined every event appended so far.
fn wait_caught_up(runner: &ProjectionRunner, store: &Store) {
    let end = store.next_position();
    wait_for(runner, "catch-up", |s| {
        s.cursor >= end || s.state != RunState::Running
    });
    assert_eq!(
        runner.status().state,
        RunState::Running,
        "{:?}",
        runner.status()
    );
}

fn order(customer: &str, amount: i64) -> NewEvent {
    NewEvent::json(
        "OrderPlaced",
        serde_json::json!({"customer": customer, "amount": amount}).to_string(),
    )
}

/// Appends the orders `order_of(i)` for `i` in `0..n`, spread over the streams `order-0` to
/// `order-{streams - 1}` in turn.
fn place_orders(store: &Store, n: i64, streams: i64, order_of: impl Fn(i64) -> NewEvent) {
    for i in 0..n {
        append(store, &format!("order-{}", i % streams), vec![order_of(i)]);
    }
}

fn options(batch: usize, every: u64) -> RunnerOptions {
    RunnerOptions {
        checkpoint_interval: Duration::from_secs(3600),
        checkpoint_events: every,
        batch_size: batch,
        ..RunnerOptions::default()
    }
}

/// Opens the projection `name` (generation 1) on `store`.
fn open_runner(
    store: &Store,
    name: &str,
    engine: EngineBuilder,
    options: RunnerOptions,
) -> ProjectionRunner {
    ProjectionRunner::open(store.clone(), name, 1, engine, options)
}

/// [`open_runner`], started.
fn start_runner(
    store: &Store,
    name: &str,
    engine: EngineBuilder,
    options: RunnerOptions,
) -> ProjectionRunner {
    let runner = open_runner(store, name, engine, options);
    runner.start().unwrap();
    runner
}

/// The typed `projection` as `name`, with the default options, started.
fn start_typed(store: &Store, name: &str, projection: impl Projection) -> ProjectionRunner {
    start_runner(
        store,
        name,
        typed_engine(projection),
        RunnerOptions::default(),
    )
}

/// The [`OrderTotals`] projection named `totals`.
fn totals(store: &Store, partitioned: bool, options: RunnerOptions) -> ProjectionRunner {
    open_runner(
        store,
        "totals",
        typed_engine(OrderTotals::new(partitioned)),
        options,
    )
}

/// The events of `stream` (a first page of 10,000).
fn events_of(store: &Store, stream: &str) -> Vec<RecordedEvent> {
    store
        .read_stream(stream, ReadFrom::Start, Direction::Forward, 10_000)
        .unwrap()
        .events
}

fn big_orders(store: &Store) -> Vec<RecordedEvent> {
    match store.read_stream("big-orders", ReadFrom::Start, Direction::Forward, 100_000) {
        Ok(page) => page.events,
        Err(strata_store::Error::StreamNotFound { .. }) => Vec::new(),
        Err(e) => panic!("{e}"),
    }
}

fn expected_big_orders(store: &Store) -> usize {
    order_events(store, vec!["OrderPlaced".into()])
        .iter()
        .filter(|e| data(e)["amount"].as_i64().unwrap_or(0) > 100)
        .count()
}

#[derive(Clone, Debug)]
struct Ev {
    stream: u8,
    kind: u8,
    customer: u8,
    amount: i64,
}

fn ev_strategy() -> impl Strategy<Value = Ev> {
    (0u8..6, 0u8..3, 0u8..4, 0i64..200).prop_map(|(stream, kind, customer, amount)| Ev {
        stream,
        kind,
        customer,
        amount,
    })
}

fn append_ev(store: &Store, e: &Ev) {
    let stream = if e.stream == 5 {
        "invoice-1".to_string()
    } else {
        format!("order-{}", e.stream)
    };
    let kind = ["OrderPlaced", "OrderCancelled", "Noise"][e.kind as usize];
    let body = serde_json::json!({"customer": format!("c{}", e.customer), "amount": e.amount});
    append(store, &stream, vec![NewEvent::json(kind, body.to_string())]);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, .. ProptestConfig::default() })]

    /// Appending in phases, crashing the runner (no final checkpoint) after a random amount of
    /// progress in each phase and reopening the store, ends with the state of a from-scratch
    /// fold, the same checkpointed state, and exactly one emitted event per big order.
    #[test]
    fn restart_after_crashes_equals_rebuild(
        events in proptest::collection::vec(ev_strategy(), 1..120),
        cuts in proptest::collection::vec(0usize..120, 0..4),
        progress in proptest::collection::vec(0u64..60, 4),
        batch in 1usize..16,
        every in 1u64..40,
        partitioned in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(events.len())).collect();
        cuts.push(events.len());
        cuts.sort_unstable();
        let mut done = 0;
        for (phase, cut) in cuts.iter().enumerate() {
            let store = open_store(dir.path());
            for e in &events[done..*cut] {
                append_ev(&store, e);
            }
            done = *cut;
            let runner = totals(&store, partitioned, options(batch, every));
            runner.start().unwrap();
            let last = phase == cuts.len() - 1;
            if last {
                wait_caught_up(&runner, &store);
                runner.stop();
            } else {
                // Crash after some progress (or right away).
                let at_least = progress[phase % progress.len()];
                let end = store.next_position();
                wait_for(&runner, "progress", |s| {
                    s.events_processed >= at_least || s.cursor >= end
                });
                runner.abandon();
            }
            drop(runner);
            store.close().unwrap();
        }
        let store = open_store(dir.path());
        let expected = model(&store, partitioned);
        // Restored from the final checkpoint, without running.
        let runner = totals(&store, partitioned, options(batch, every));
        prop_assert_eq!(runner_states(&runner), expected);
        let emitted = big_orders(&store);
        prop_assert_eq!(emitted.len(), expected_big_orders(&store));
        let mut froms: Vec<u64> = emitted.iter().map(|e| data(e)["from"].as_u64().unwrap()).collect();
        froms.dedup();
        prop_assert_eq!(froms.len(), emitted.len());
    }
}

#[test]
fn crash_between_emit_and_checkpoint_does_not_duplicate_emits() {
    let (dir, store) = temp_store();
    place_orders(&store, 50, 7, |i| order("c1", 150 + i));
    // Never checkpoints on its own: every emit is written, no checkpoint covers it.
    let make = |store: &Store| totals(store, false, options(7, u64::MAX));
    let runner = make(&store);
    runner.start().unwrap();
    wait_caught_up(&runner, &store);
    assert_eq!(big_orders(&store).len(), 50);
    runner.abandon();
    drop(runner);
    assert!(read_latest_checkpoint(&store, "$projection-totals")
        .unwrap()
        .is_none());
    store.close().unwrap();
    drop(store);

    let store = open_store(dir.path());
    let runner = make(&store);
    assert_eq!(runner.status().position, None);
    runner.start().unwrap();
    wait_caught_up(&runner, &store);
    let emitted = big_orders(&store);
    assert_eq!(emitted.len(), 50, "re-run after the crash duplicated emits");
    for e in &emitted {
        assert_eq!(e.id.get_version_num(), 8);
    }
    assert_eq!(runner_states(&runner)[""].count, 50);
    runner.stop();
}

#[test]
fn partial_overlap_of_emits_is_appended_one_by_one() {
    // A first run emitted only some of a batch's events (batch of 1); the re-run with one big
    // batch finds a partial overlap (DuplicateEventId) and completes the rest.
    let (_dir, store) = temp_store();
    for i in 0..20 {
        append(&store, "order-1", vec![order("c", 200 + i)]);
    }
    let first = totals(&store, false, options(1, u64::MAX));
    first.start().unwrap();
    wait_for(&first, "some emits", |s| s.events_processed >= 5);
    first.abandon();
    let partial = big_orders(&store).len();
    assert!((5..=20).contains(&partial));
    drop(first);
    let second = totals(&store, false, options(500, u64::MAX));
    second.start().unwrap();
    wait_caught_up(&second, &store);
    assert_eq!(big_orders(&store).len(), 20);
    second.stop();
}

#[test]
fn partitioned_state_per_key() {
    let (_dir, store) = temp_store();
    for (customer, amount) in [("ann", 10), ("bob", 5), ("ann", 7), ("cid", 1)] {
        append(&store, "order-9", vec![order(customer, amount)]);
    }
    // An order without a customer has no partition: skipped.
    append(
        &store,
        "order-9",
        vec![NewEvent::json("OrderPlaced", r#"{"amount": 1000}"#)],
    );
    let runner = start_typed(&store, "per-customer", OrderTotals::new(true));
    wait_caught_up(&runner, &store);
    assert!(runner.is_partitioned());
    assert_eq!(
        served(&runner, "ann"),
        Some(serde_json::json!({"count": 2, "total": 17}))
    );
    assert_eq!(
        served(&runner, "bob"),
        Some(serde_json::json!({"count": 1, "total": 5}))
    );
    assert_eq!(served(&runner, "nobody"), None);
    assert_eq!(runner.states().len(), 3);
    assert_eq!(runner.status().partitions, 3);
    assert_eq!(runner.status().position, Some(3));
    runner.stop();
}

#[test]
fn a_throwing_handler_faults_at_its_event_and_keeps_earlier_progress() {
    let (_dir, store) = temp_store();
    append(&store, "order-1", vec![order("a", 1), order("a", 2)]);
    let bad = append(
        &store,
        "order-2",
        vec![NewEvent::json("OrderPlaced", r#"{"fail": true}"#)],
    );
    append(&store, "order-1", vec![order("a", 4)]);
    let make = |store: &Store| totals(store, false, RunnerOptions::default());
    let runner = make(&store);
    // Another projection on the same store is not affected.
    let other = open_runner(
        &store,
        "others",
        typed_engine(OrderTotals {
            source: ProjectionSource::Stream("order-1".into()),
            partitioned: false,
            emit: false,
        }),
        RunnerOptions::default(),
    );
    runner.start().unwrap();
    other.start().unwrap();
    wait_for(&runner, "fault", |s| s.state == RunState::Faulted);
    let status = runner.status();
    let error = status.error.clone().unwrap();
    assert_eq!(error.message, "order refused");
    assert_eq!(error.stack.as_deref(), Some("at apply (orders.rs)"));
    assert_eq!(error.position, Some(bad.first_position));
    assert_eq!(status.position, Some(1));
    assert_eq!(
        served(&runner, ""),
        Some(serde_json::json!({"count": 2, "total": 3}))
    );
    // The progress before the failing event was checkpointed.
    assert_eq!(status.checkpoint_position, Some(1));
    wait_for(&other, "other catches up", |s| s.cursor >= 3);
    assert_eq!(other.status().state, RunState::Running);
    assert_eq!(served(&other, "").unwrap()["total"], 7);
    // Starting again retries the failing event: faulted again, same position.
    runner.start().unwrap();
    wait_for(&runner, "fault again", |s| s.state == RunState::Faulted);
    assert_eq!(
        runner.status().error.unwrap().position,
        Some(bad.first_position)
    );
    // Stop clears the fault.
    runner.stop();
    assert_eq!(runner.status().state, RunState::Stopped);
    assert_eq!(runner.status().error, None);
    other.stop();
}

#[test]
fn stop_and_start_resume_where_they_stopped() {
    let (_dir, store) = temp_store();
    append(&store, "order-1", vec![order("a", 1)]);
    let runner = totals(&store, false, RunnerOptions::default());
    assert_eq!(runner.status().state, RunState::Stopped);
    runner.start().unwrap();
    wait_caught_up(&runner, &store);
    runner.stop();
    assert_eq!(runner.status().state, RunState::Stopped);
    // Stopping checkpoints.
    assert_eq!(runner.status().checkpoint_position, Some(0));
    append(&store, "order-1", vec![order("a", 10)]);
    assert_eq!(served(&runner, "").unwrap()["count"], 1);
    assert!(runner.status().lag >= 1);
    runner.start().unwrap();
    wait_caught_up(&runner, &store);
    assert_eq!(served(&runner, "").unwrap()["count"], 2);
    assert_eq!(runner.status().events_processed, 2);
    assert_eq!(runner.status().lag, 0);
    runner.stop();
}

#[test]
fn reset_rebuilds_from_the_start_as_a_new_incarnation() {
    let (_dir, store) = temp_store();
    append(&store, "order-1", vec![order("a", 150), order("a", 2)]);
    let runner = totals(&store, false, RunnerOptions::default());
    runner.start().unwrap();
    wait_caught_up(&runner, &store);
    let emitted_before = big_orders(&store);
    assert_eq!(emitted_before.len(), 1);
    runner.reset(2).unwrap();
    let status = runner.status();
    assert_eq!(status.incarnation, 2);
    assert_eq!(status.generation, 1, "a reset keeps the generation");
    wait_caught_up(&runner, &store);
    assert_eq!(served(&runner, "").unwrap()["count"], 2);
    assert_eq!(runner.status().events_processed, 2);
    runner.stop();
    // The re-run emits the same ids as before: the store deduplicates them, nothing new.
    let emitted_after = big_orders(&store);
    assert_eq!(emitted_after.len(), 1);
    assert_eq!(emitted_after[0].id, emitted_before[0].id);
    let cp = read_latest_checkpoint(&store, runner.checkpoint_stream())
        .unwrap()
        .unwrap();
    assert_eq!(cp.record.incarnation, 2);
    // Opening as the old incarnation ignores the new checkpoint: nothing is served.
    drop(runner);
    let old = totals(&store, false, RunnerOptions::default());
    assert_eq!(served(&old, ""), None);
}

#[test]
fn delete_frees_the_checkpoint_stream() {
    let (_dir, store) = temp_store();
    append(&store, "order-1", vec![order("a", 1)]);
    let runner = totals(&store, false, RunnerOptions::default());
    runner.start().unwrap();
    wait_caught_up(&runner, &store);
    runner.stop();
    runner.delete().unwrap();
    assert!(matches!(
        store.read_stream(
            "$projection-totals",
            ReadFrom::Start,
            Direction::Forward,
            10
        ),
        Err(strata_store::Error::StreamDeleted { .. })
    ));
    assert!(read_latest_checkpoint(&store, "$projection-totals")
        .unwrap()
        .is_none());
}

/// Counts every event it sees, emitting a copy of each to `copies`: with `fromAll` its own
/// emits come back through the source and must be skipped.
fn count_all(source: ProjectionSource) -> Handler<BTreeMap<String, u64>> {
    handler(source, |state: &mut BTreeMap<String, u64>, event, emit| {
        *state.entry(event.stream.clone()).or_default() += 1;
        emit.emit("copies", "Copy", &serde_json::json!({}))
    })
}

#[test]
fn sources_read_exactly_their_events() {
    let (_dir, store) = temp_store();
    for s in ["order-1", "order-2", "invoice-1", "order-1", "orderx"] {
        append(&store, s, vec![NewEvent::json("E", "{}")]);
    }
    let run = |name: &str, source: ProjectionSource| start_typed(&store, name, count_all(source));
    let all = run("all", ProjectionSource::All);
    let stream = run("stream", ProjectionSource::Stream("order-1".into()));
    let streams = run(
        "streams",
        ProjectionSource::Streams(vec!["order-2".into(), "invoice-1".into()]),
    );
    let category = run("category", ProjectionSource::Category("order".into()));
    for r in [&streams, &category] {
        wait_caught_up(r, &store);
    }
    wait_for(&stream, "stream", |s| s.cursor >= 2);
    // The others' copies are appended by now: `all` must see them all.
    wait_caught_up(&all, &store);
    let counts = |r: &ProjectionRunner| -> BTreeMap<String, u64> {
        serde_json::from_value(served(r, "").unwrap()).unwrap()
    };
    // `fromAll` sees user streams only: not the checkpoint streams, not its own `copies`
    // (it sees the other projections' copies).
    let all_counts = counts(&all);
    assert_eq!(all_counts["order-1"], 2);
    assert!(all_counts.keys().all(|k| !k.starts_with('$')));
    assert_eq!(all_counts.get("copies").copied().unwrap_or(0) as usize, {
        events_of(&store, "copies")
            .iter()
            .filter(|e| !String::from_utf8_lossy(&e.metadata).contains("\"all\""))
            .count()
    });
    assert_eq!(counts(&stream), BTreeMap::from([("order-1".into(), 2)]));
    assert_eq!(
        counts(&streams),
        BTreeMap::from([("order-2".into(), 1), ("invoice-1".into(), 1)])
    );
    assert_eq!(
        counts(&category),
        BTreeMap::from([("order-1".into(), 2), ("order-2".into(), 1)])
    );
    assert_eq!(stream.status().lag, 0);
    for r in [all, stream, streams, category] {
        r.stop();
    }
}

/// A projection whose every event type handler panics: faults, does not take the process down.
fn panics() -> Handler<u64> {
    handler(ProjectionSource::All, |_, _, _| panic!("boom"))
}

#[test]
fn a_panicking_projection_faults() {
    let (_dir, store) = temp_store();
    append(&store, "a", vec![NewEvent::json("E", "{}")]);
    let runner = start_typed(&store, "panics", panics());
    wait_for(&runner, "fault", |s| s.state == RunState::Faulted);
    assert!(runner.status().error.unwrap().message.contains("boom"));
}

/// Emits to a reserved stream: faults at the emitting event, nothing appended.
fn emits_to_reserved() -> Handler<u64> {
    handler(ProjectionSource::Stream("s".into()), |n, _, emit| {
        *n += 1;
        if *n == 2 {
            emit.emit("$system", "Nope", &1)?;
        }
        Ok(())
    })
}

#[test]
fn an_emit_to_a_reserved_stream_faults_at_its_event() {
    let (_dir, store) = temp_store();
    let r = append(
        &store,
        "s",
        vec![NewEvent::json("E", "{}"), NewEvent::json("E", "{}")],
    );
    let runner = start_typed(&store, "reserved", emits_to_reserved());
    wait_for(&runner, "fault", |s| s.state == RunState::Faulted);
    let error = runner.status().error.unwrap();
    assert_eq!(error.position, Some(r.last_position));
    assert!(error.message.contains("reserved"), "{}", error.message);
    assert_eq!(served(&runner, ""), Some(serde_json::json!(1)));
    assert!(store.head("$system").unwrap().last_revision.is_none());
}

#[test]
fn fifty_projections_run_side_by_side() {
    let (_dir, store) = temp_store();
    let runners: Vec<ProjectionRunner> = (0..50)
        .map(|i| {
            let r = start_typed(&store, &format!("p{i}"), OrderTotals::new(i % 2 == 0));
            r
        })
        .collect();
    place_orders(&store, 200, 13, |i| order(&format!("c{}", i % 5), i));
    for r in &runners {
        wait_caught_up(r, &store);
    }
    let single = model(&store, false);
    let partitioned = model(&store, true);
    for (i, r) in runners.iter().enumerate() {
        let want = if i % 2 == 0 { &partitioned } else { &single };
        assert_eq!(&runner_states(r), want, "projection p{i}");
        assert_eq!(r.status().events_processed, 200);
    }
    for r in &runners {
        r.begin_stop();
    }
    for r in &runners {
        r.join();
    }
}

#[test]
fn status_and_state_reads_while_running_do_not_block_the_runner() {
    // Regression: `status()` once took the two runner locks in the opposite order of the
    // runner thread (a deadlock under concurrent reads).
    let (_dir, store) = temp_store();
    for i in 0..20 {
        let events = (0..500)
            .map(|j| order(&format!("c{}", j % 50), i))
            .collect();
        append(&store, &format!("order-{i}"), events);
    }
    let runner = std::sync::Arc::new(open_runner(
        &store,
        "busy",
        typed_engine(OrderTotals::new(true)),
        options(50, 1000),
    ));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (runner, stop) = (runner.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = runner.status();
                    let _ = runner.states();
                }
            })
        })
        .collect();
    runner.start().unwrap();
    wait_caught_up(&runner, &store);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
    assert_eq!(runner.status().events_processed, 10_000);
    runner.stop();
}

/// A reset of an emitting projection (a saga) rebuilds its state but leaves every emitted event
/// exactly once, even when the re-run batches differently (partial overlaps) and across a
/// restart after the reset (the caller persisted generation 1, incarnation 2). Only a new
/// generation (new code) emits again, under new ids.
#[test]
fn reset_of_an_emitting_projection_emits_nothing_twice_a_new_generation_does() {
    let (_dir, store) = temp_store();
    place_orders(&store, 40, 3, |i| {
        order("c", if i % 2 == 0 { 150 + i } else { 5 })
    });
    let open = |store: &Store, identity: ProjectionIdentity, batch: usize| {
        ProjectionRunner::open(
            store.clone(),
            "saga",
            identity,
            typed_engine(OrderTotals::new(false)),
            options(batch, 7),
        )
    };
    let first = ProjectionIdentity::from(1);
    let runner = open(&store, first, 3);
    runner.start().unwrap();
    wait_caught_up(&runner, &store);
    let before: Vec<uuid::Uuid> = big_orders(&store).iter().map(|e| e.id).collect();
    assert_eq!(before.len(), 20);
    // Reset while running, twice (the second one mid-way through the rebuild is fine too).
    runner.reset(2).unwrap();
    runner.reset(3).unwrap();
    wait_caught_up(&runner, &store);
    assert_eq!(served(&runner, "").unwrap()["count"], 40);
    runner.abandon();
    drop(runner);
    let after: Vec<uuid::Uuid> = big_orders(&store).iter().map(|e| e.id).collect();
    assert_eq!(after, before, "a reset re-emitted events");

    // A restart of the reset projection (same generation, incarnation 3), with other batches.
    let reset_identity = ProjectionIdentity {
        generation: 1,
        incarnation: 3,
    };
    let runner = open(&store, reset_identity, 500);
    runner.reset(4).unwrap();
    runner.start().unwrap();
    wait_caught_up(&runner, &store);
    runner.stop();
    drop(runner);
    let again: Vec<uuid::Uuid> = big_orders(&store).iter().map(|e| e.id).collect();
    assert_eq!(again, before, "a reset after a restart re-emitted events");

    // New code = new generation: everything is emitted again, under new ids.
    let runner = open(&store, ProjectionIdentity::from(5), 11);
    runner.start().unwrap();
    wait_caught_up(&runner, &store);
    runner.stop();
    let all = big_orders(&store);
    assert_eq!(all.len(), 40);
    let fresh: std::collections::HashSet<uuid::Uuid> = all[20..].iter().map(|e| e.id).collect();
    assert_eq!(fresh.len(), 20);
    assert!(before.iter().all(|id| !fresh.contains(id)));
}

/// Counts the events of stream `feed`, emitting `per_event` events to `out` for each; the
/// handler observes how many emits are already in the store and how many events it applied.
/// Returns it with the count of applied events and the most emits found durable in `out` while
/// applying an event of the first batch.
fn chatty(
    store: &Store,
    per_event: usize,
    delay: Duration,
) -> (Handler<u64>, Arc<AtomicU64>, Arc<AtomicU64>) {
    let applied = Arc::new(AtomicU64::new(0));
    let seen_durable = Arc::new(AtomicU64::new(0));
    let (store, counted, seen) = (store.clone(), applied.clone(), seen_durable.clone());
    let projection = handler(
        ProjectionSource::Stream("feed".into()),
        move |state: &mut u64, event, emit| {
            use std::sync::atomic::Ordering::SeqCst;
            if !delay.is_zero() {
                std::thread::sleep(delay);
            }
            let durable = store
                .head("out")
                .ok()
                .and_then(|h| h.last_revision)
                .map_or(0, |r| r + 1);
            seen.fetch_max(durable, SeqCst);
            for i in 0..per_event {
                emit.emit(
                    "out",
                    "Echo",
                    &serde_json::json!({"from": event.position, "i": i}),
                )?;
            }
            *state += 1;
            counted.fetch_add(1, SeqCst);
            Ok(())
        },
    );
    (projection, applied, seen_durable)
}

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

fn feed(store: &Store, n: usize) {
    let events: Vec<NewEvent> = (0..n)
        .map(|i| NewEvent::json("Tick", format!("{{\"i\":{i}}}")))
        .collect();
    append(store, "feed", events);
}

/// Stop (and so a server shutdown) does not wait for the rest of a long batch: the runner
/// ends after the event in progress, checkpoints exactly the prefix it applied, and a restart
/// goes on from there to the same end state (nothing skipped, nothing emitted twice).
#[test]
fn stop_ends_a_long_batch_after_the_event_in_progress() {
    let (_dir, store) = temp_store();
    feed(&store, 300);
    let (p, applied, _) = chatty(&store, 1, Duration::from_millis(5));
    let runner = start_runner(&store, "chatty", typed_engine(p), options(300, u64::MAX));
    let deadline = Instant::now() + Duration::from_secs(20);
    while applied.load(Ordering::SeqCst) < 3 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(1));
    }
    runner.stop();
    let done = applied.load(Ordering::SeqCst);
    assert!(
        done < 300,
        "stop waited for the whole batch of 300 ({done} applied)"
    );
    let status = runner.status();
    assert_eq!(status.state, RunState::Stopped);
    assert_eq!(status.events_processed, done);
    assert_eq!(served(&runner, ""), Some(serde_json::json!(done)));
    assert_eq!(status.checkpoint_position, status.position);
    drop(runner);
    // Resume: the rest of the batch is applied, once.
    let (p, _, _) = chatty(&store, 1, Duration::ZERO);
    let runner = open_runner(&store, "chatty", typed_engine(p), options(300, u64::MAX));
    assert_eq!(served(&runner, ""), Some(serde_json::json!(done)));
    runner.start().unwrap();
    wait_for(&runner, "the rest", |s| s.events_processed >= 300);
    runner.stop();
    assert_eq!(served(&runner, ""), Some(serde_json::json!(300)));
    assert_eq!(events_of(&store, "out").len(), 300);
}

/// The emits of a batch are not all held in memory until its end: once they reach the store's
/// events-per-append limit they are appended (before any checkpoint covers them, so still
/// idempotent), and the handler sees them durable while the batch goes on.
#[test]
fn emits_of_a_long_batch_are_flushed_as_they_accumulate() {
    let dir = tempfile::tempdir().unwrap();
    let mut options_store = no_fsync();
    options_store.limits.max_events_per_append = 40;
    let store = Store::open(dir.path(), options_store).unwrap();
    feed(&store, 30);
    let (p, _, seen) = chatty(&store, 10, Duration::ZERO);
    let runner = start_runner(&store, "chatty", typed_engine(p), options(30, u64::MAX));
    wait_for(&runner, "all", |s| s.events_processed >= 30);
    runner.stop();
    assert_eq!(served(&runner, ""), Some(serde_json::json!(30)));
    assert_eq!(events_of(&store, "out").len(), 300);
    // One batch of 30 events × 10 emits: at most 40 (+ one event's 10) were ever buffered.
    assert!(
        seen.load(Ordering::SeqCst) >= 300 - 50,
        "emits were buffered for the whole batch: {}",
        seen.load(Ordering::SeqCst)
    );
}

/// An engine whose user code failed (threw, timed out, ran out of memory) is never used again:
/// the runner redoes the batch's good prefix on a freshly built engine, and every start builds
/// a new one.
#[test]
fn a_failed_engine_is_rebuilt_before_reuse() {
    let (_dir, store) = temp_store();
    append(
        &store,
        "order-1",
        vec![
            order("a", 1),
            NewEvent::json("OrderPlaced", r#"{"fail": true}"#),
        ],
    );
    let builds = Arc::new(AtomicU64::new(0));
    let counted = builds.clone();
    let inner = typed_engine(OrderTotals::new(false));
    let builder: strata_store::projection::EngineBuilder = Arc::new(move || {
        counted.fetch_add(1, Ordering::SeqCst);
        inner()
    });
    let runner = open_runner(&store, "rebuilt", builder, RunnerOptions::default());
    assert_eq!(
        builds.load(Ordering::SeqCst),
        1,
        "open builds one to learn the source"
    );
    runner.start().unwrap();
    wait_for(&runner, "fault", |s| s.state == RunState::Faulted);
    // The run's engine, then a fresh one for the events before the failure.
    assert_eq!(builds.load(Ordering::SeqCst), 3);
    assert_eq!(served(&runner, "").unwrap()["count"], 1);
    runner.start().unwrap();
    wait_for(&runner, "fault again", |s| {
        s.state == RunState::Faulted && builds.load(Ordering::SeqCst) == 5
    });
    assert_eq!(served(&runner, "").unwrap()["count"], 1);
    runner.stop();
}

/// A state that cannot be serialised once it is `broken`.
#[derive(Default, Deserialize)]
struct Fragile {
    n: u64,
    broken: bool,
}

impl Serialize for Fragile {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeStruct};
        if self.broken {
            return Err(S::Error::custom("a broken state"));
        }
        let mut st = s.serialize_struct("Fragile", 2)?;
        st.serialize_field("n", &self.n)?;
        st.serialize_field("broken", &self.broken)?;
        st.end()
    }
}

/// Counts the events of stream `s`; a `Break` event breaks the state for good.
fn breaks_once() -> Handler<Fragile> {
    handler(
        ProjectionSource::Stream("s".into()),
        |state: &mut Fragile, event, _| {
            state.n += 1;
            state.broken |= event.event_type == "Break";
            Ok(())
        },
    )
}

/// The state is serialised once per batch, but the fault names the event whose handling made
/// it unserialisable, not the batch's last one, and keeps the progress before it.
#[test]
fn an_unserialisable_state_faults_at_the_event_that_made_it() {
    let (_dir, store) = temp_store();
    let events = ["T", "T", "Break", "T", "T"]
        .iter()
        .map(|t| NewEvent::json(*t, "{}"))
        .collect();
    append(&store, "s", events);
    let runner = start_typed(&store, "fragile", breaks_once());
    for _ in 0..2 {
        wait_for(&runner, "fault", |s| s.state == RunState::Faulted);
        let status = runner.status();
        let error = status.error.clone().unwrap();
        assert!(error.message.contains("a broken state"), "{error:?}");
        assert_eq!(error.position, Some(2), "{error:?}");
        assert_eq!(status.position, Some(1));
        assert_eq!(status.checkpoint_position, Some(1));
        assert_eq!(
            served(&runner, ""),
            Some(serde_json::json!({"n": 2, "broken": false}))
        );
        // Starting again retries the event: the same fault.
        runner.start().unwrap();
    }
    runner.stop();
}

/// A typed engine that records what the runner reports holding outside it.
struct Reporting {
    inner: Box<dyn strata_store::projection::ProjectionEngine>,
    reported: Arc<AtomicU64>,
}

impl strata_store::projection::ProjectionEngine for Reporting {
    fn source(&self) -> ProjectionSource {
        self.inner.source()
    }
    fn event_types(&self) -> Option<Vec<String>> {
        self.inner.event_types()
    }
    fn partition_key(&mut self, event: &RecordedEvent) -> Result<Option<String>, ProjectionError> {
        self.inner.partition_key(event)
    }
    fn apply(
        &mut self,
        partition: &str,
        event: &RecordedEvent,
        emits: &mut Vec<strata_store::projection::Emit>,
    ) -> Result<(), ProjectionError> {
        self.inner.apply(partition, event, emits)
    }
    fn state(&mut self, partition: &str) -> Result<Option<serde_json::Value>, ProjectionError> {
        self.inner.state(partition)
    }
    fn partitions(&self) -> Vec<String> {
        self.inner.partitions()
    }
    fn restore(
        &mut self,
        partition: &str,
        state: serde_json::Value,
    ) -> Result<(), ProjectionError> {
        self.inner.restore(partition, state)
    }
    fn clear(&mut self) {
        self.inner.clear()
    }
    fn set_external_bytes(&mut self, bytes: usize) {
        self.reported.store(bytes as u64, Ordering::SeqCst);
    }
}

/// Partitioned [`OrderTotals`] engines wrapped in [`Reporting`] to `reported`.
fn reporting(reported: &Arc<AtomicU64>) -> EngineBuilder {
    let reported = reported.clone();
    let inner = typed_engine(OrderTotals::new(true));
    Arc::new(move || {
        Ok(Box::new(Reporting {
            inner: inner()?,
            reported: reported.clone(),
        })
            as Box<dyn strata_store::projection::ProjectionEngine>)
    })
}

/// One order of 5 for each of `customers` to `order-1`, `per_append` orders an append.
fn order_per_customer(store: &Store, customers: &[String], per_append: usize) {
    for batch in customers.chunks(per_append) {
        let orders = batch.iter().map(|c| order(c, 5)).collect();
        append(store, "order-1", orders);
    }
}

/// The runner tells the engine how much its served copies of the states (keys included) take,
/// so that an engine with a memory limit can count them; the same after a restart.
#[test]
fn the_runner_reports_its_served_copies_to_the_engine() {
    let (_dir, store) = temp_store();
    let customers: Vec<String> = (0..50).map(|i| format!("{i:0>1000}")).collect();
    order_per_customer(&store, &customers, 10);
    let open = |reported: &Arc<AtomicU64>| {
        open_runner(&store, "reporting", reporting(reported), options(7, 10))
    };
    let reported = Arc::new(AtomicU64::new(0));
    let runner = open(&reported);
    runner.start().unwrap();
    wait_caught_up(&runner, &store);
    let held = reported.load(Ordering::SeqCst);
    // 50 keys of 1,000 bytes and 50 small states.
    assert!((50_000..100_000).contains(&held), "{held}");
    runner.stop();
    drop(runner);
    // Restored from the checkpoint, the same states weigh the same.
    let reported = Arc::new(AtomicU64::new(0));
    let runner = open(&reported);
    runner.start().unwrap();
    // Reported as the thread starts (there is nothing new to read).
    let deadline = Instant::now() + Duration::from_secs(20);
    while reported.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "nothing reported");
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(reported.load(Ordering::SeqCst), held);
    runner.stop();
}

/// A served `{count, total}` state with a short key is held as its compact JSON text, and the
/// runner reports its real size: the text, the key and the map entry (some 150 bytes a
/// partition), not a `serde_json::Value` tree (some 850), so that many more small partitions fit
/// a memory limit.
#[test]
fn small_served_states_are_held_as_compact_text() {
    let (_dir, store) = temp_store();
    let customers: Vec<String> = (0..1000).map(|i| format!("c{i}")).collect();
    order_per_customer(&store, &customers, 100);
    let reported = Arc::new(AtomicU64::new(0));
    let runner = start_runner(&store, "small", reporting(&reported), options(500, 10_000));
    wait_caught_up(&runner, &store);
    let held = reported.load(Ordering::SeqCst) as usize;
    let states = runner.states();
    assert_eq!(states.len(), 1000);
    // At least the bytes themselves: every key and every state's compact JSON.
    let text: usize = states
        .iter()
        .map(|(k, v)| k.len() + serde_json::to_string(&**v).unwrap().len())
        .sum();
    assert!(held >= text, "{held} < {text}");
    // The text is the compact JSON of the state (what `GET .../state` serves as it is).
    assert_eq!(
        runner.state("c7").unwrap().get(),
        serde_json::json!({"count": 1, "total": 5}).to_string()
    );
    // ...and a small overhead on top of them, not a tree of values.
    assert!(
        held <= states.len() * 256,
        "{held} bytes for 1,000 small states"
    );
    runner.stop();
}
