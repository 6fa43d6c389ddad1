//! An order stream appended and folded back into state, then followed live.
//!
//! Run with `cargo run -p strata-store --example orders`.

use std::collections::BTreeMap;
use std::time::Duration;

use strata_store::{
    AllFilter, Direction, Error, ExpectedRevision, NewEvent, Options, ReadFrom, RecordedEvent,
    Store,
};

/// The state an order's events fold into.
#[derive(Debug, Default)]
struct Order {
    lines: BTreeMap<String, u32>,
    total_cents: u64,
    shipped: bool,
}

impl Order {
    /// Applies one event. Unknown types are ignored, so old readers survive new event types.
    fn apply(&mut self, event: &RecordedEvent) -> Result<(), serde_json::Error> {
        let data: serde_json::Value = serde_json::from_slice(&event.data)?;
        match event.event_type.as_str() {
            "ItemAdded" => {
                let sku = data["sku"].as_str().unwrap_or("?").to_owned();
                let qty = data["qty"].as_u64().unwrap_or(0) as u32;
                *self.lines.entry(sku).or_default() += qty;
                self.total_cents += data["price_cents"].as_u64().unwrap_or(0) * u64::from(qty);
            }
            "OrderShipped" => self.shipped = true,
            _ => {}
        }
        Ok(())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path(), Options::default())?;

    // The first append creates the stream; NoStream makes a second creator fail.
    store.append(
        "order-42",
        ExpectedRevision::NoStream,
        vec![
            NewEvent::json("ItemAdded", r#"{"sku":"apple","qty":3,"price_cents":50}"#),
            NewEvent::json("ItemAdded", r#"{"sku":"pear","qty":1,"price_cents":80}"#),
        ],
    )?;
    match store.append(
        "order-42",
        ExpectedRevision::NoStream,
        vec![NewEvent::json("ItemAdded", "{}")],
    ) {
        Err(Error::WrongExpectedRevision { expected, actual }) => {
            println!("second creator refused: expected {expected}, actual {actual}")
        }
        other => println!("unexpected: {other:?}"),
    }

    // A retried append with the same event id is recognised and writes nothing.
    let id = uuid::Uuid::new_v4();
    let ship = || NewEvent::json("OrderShipped", r#"{"carrier":"post"}"#).with_id(id);
    let first = store.append("order-42", ExpectedRevision::Exact(1), vec![ship()])?;
    let retry = store.append("order-42", ExpectedRevision::Exact(1), vec![ship()])?;
    assert!(retry.idempotent_replay && retry.first_position == first.first_position);

    // Fold the stream back into state.
    let mut order = Order::default();
    let mut from = ReadFrom::Start;
    loop {
        let page = store.read_stream("order-42", from, Direction::Forward, 100)?;
        for e in &page.events {
            order.apply(e)?;
        }
        match (page.end, page.next) {
            (false, Some(next)) => from = ReadFrom::At(next),
            _ => break,
        }
    }
    println!("order-42: {order:?}");

    // Follow the `order` category live from the current end.
    let mut sub = store.subscribe_all(
        store.next_position(),
        AllFilter {
            category: Some("order".into()),
            ..AllFilter::default()
        },
    );
    store.append(
        "order-43",
        ExpectedRevision::Any,
        vec![NewEvent::json(
            "ItemAdded",
            r#"{"sku":"fig","qty":2,"price_cents":30}"#,
        )],
    )?;
    for e in sub.next_batch_blocking(10, Some(Duration::from_secs(1)))? {
        println!(
            "live: {} #{} {} at position {}",
            e.stream, e.revision, e.event_type, e.position
        );
    }
    store.close()?;
    Ok(())
}
