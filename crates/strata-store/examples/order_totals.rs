//! Order totals per customer: a typed projection run by the projection runner against a
//! temporary store, restarted mid-way to show that it resumes from its checkpoint.
//!
//! Run with `cargo run -p strata-store --example order_totals`.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use strata_store::projection::{
    typed_engine, Emitter, Projection, ProjectionError, ProjectionRunner, ProjectionSource,
    RunnerOptions,
};
use strata_store::{ExpectedRevision, NewEvent, Options, RecordedEvent, Store};

/// The state of one customer.
#[derive(Debug, Default, Serialize, Deserialize)]
struct CustomerTotals {
    orders: u64,
    total_cents: i64,
}

/// `fromCategory('order').partitionBy(e => e.data.customer)` in Rust.
struct OrderTotals;

#[derive(Deserialize)]
struct Order {
    customer: String,
    total_cents: i64,
}

impl Projection for OrderTotals {
    type State = CustomerTotals;

    fn source(&self) -> ProjectionSource {
        ProjectionSource::Category("order".into())
    }

    fn event_types(&self) -> Option<Vec<String>> {
        Some(vec!["OrderPlaced".into(), "OrderRefunded".into()])
    }

    fn partition_key(&self, event: &RecordedEvent) -> Option<String> {
        serde_json::from_slice::<Order>(&event.data)
            .ok()
            .map(|o| o.customer)
    }

    fn init(&self) -> CustomerTotals {
        CustomerTotals::default()
    }

    fn apply(
        &self,
        state: &mut CustomerTotals,
        event: &RecordedEvent,
        emit: &mut Emitter<'_>,
    ) -> Result<(), ProjectionError> {
        let order: Order = serde_json::from_slice(&event.data)
            .map_err(|e| ProjectionError::new(format!("bad order: {e}")))?;
        match event.event_type.as_str() {
            "OrderPlaced" => {
                state.orders += 1;
                state.total_cents += order.total_cents;
                if state.total_cents >= 100_000 && state.total_cents - order.total_cents < 100_000 {
                    emit.emit(
                        format!("vip-{}", order.customer),
                        "BecameVip",
                        &serde_json::json!({"total_cents": state.total_cents}),
                    )?;
                }
            }
            "OrderRefunded" => state.total_cents -= order.total_cents,
            _ => {}
        }
        Ok(())
    }
}

fn place(store: &Store, n: u64) -> Result<(), strata_store::Error> {
    for i in 0..n {
        let customer = ["ada", "bo", "cy"][(i % 3) as usize];
        let event = NewEvent::json(
            if i % 10 == 9 {
                "OrderRefunded"
            } else {
                "OrderPlaced"
            },
            serde_json::json!({"customer": customer, "total_cents": 1_000 + i * 7}).to_string(),
        );
        store.append(
            &format!("order-{i}"),
            ExpectedRevision::NoStream,
            vec![event],
        )?;
    }
    Ok(())
}

fn wait_caught_up(runner: &ProjectionRunner, store: &Store) {
    let end = store.next_position();
    let deadline = Instant::now() + Duration::from_secs(30);
    while runner.status().cursor < end && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn print(runner: &ProjectionRunner) {
    let status = runner.status();
    println!(
        "{}: {} at position {:?}, lag {}, {} events applied",
        status.name,
        status.state.as_str(),
        status.position,
        status.lag,
        status.events_processed
    );
    for (customer, state) in runner.states() {
        println!("  {customer}: {state}");
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path(), Options::default())?;
    place(&store, 300)?;

    let open = |store: &Store| {
        ProjectionRunner::open(
            store.clone(),
            "order-totals",
            1,
            typed_engine(OrderTotals),
            RunnerOptions::default(),
        )
    };
    let runner = open(&store);
    runner.start()?;
    wait_caught_up(&runner, &store);
    print(&runner);
    runner.stop(); // final checkpoint
    drop(runner);

    // More orders while the projection is stopped; a new runner resumes from the checkpoint.
    place_more(&store)?;
    let runner = open(&store);
    println!(
        "restored: {} events applied before",
        runner.status().events_processed
    );
    runner.start()?;
    wait_caught_up(&runner, &store);
    print(&runner);
    runner.stop();
    let vip = store.read_stream(
        "vip-ada",
        strata_store::ReadFrom::Start,
        strata_store::Direction::Forward,
        10,
    )?;
    println!("vip-ada: {} event(s)", vip.events.len());
    Ok(())
}

fn place_more(store: &Store) -> Result<(), strata_store::Error> {
    for i in 0..30 {
        let event = NewEvent::json(
            "OrderPlaced",
            serde_json::json!({"customer": "dee", "total_cents": 500 + i}).to_string(),
        );
        store.append("order-dee", ExpectedRevision::Any, vec![event])?;
    }
    Ok(())
}
