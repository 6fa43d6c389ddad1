//! Helpers shared by the integration tests: synthetic events and a fold loop like the runner's.
#![allow(dead_code)]

use std::time::Duration;

use strata_js::{JsError, JsLimits, JsProjection};
use strata_store::projection::{Emit, ProjectionEngine, ProjectionError};
use strata_store::{ContentType, RecordedEvent};

/// 2026-11-22T05:00:00.123456Z
pub const TS: i64 = 1_795_323_600_123_456;

/// A JSON event at `position` (revision = position, id derived from it).
pub fn event(position: u64, stream: &str, event_type: &str, data: &str) -> RecordedEvent {
    RecordedEvent {
        id: uuid::Uuid::from_u128(0x6f1c7a5e_0c1b_4d5e_9d7a_000000000000 + u128::from(position)),
        stream: stream.into(),
        revision: position,
        position,
        event_type: event_type.into(),
        timestamp_micros: TS,
        content_type: ContentType::Json,
        data: data.as_bytes().to_vec(),
        metadata: Vec::new(),
    }
}

pub fn compile(source: &str) -> JsProjection {
    match JsProjection::compile(source, JsLimits::default()) {
        Ok(p) => p,
        Err(e) => panic!("{source}\ndoes not compile: {e:?}"),
    }
}

pub fn compile_err(source: &str) -> JsError {
    match JsProjection::compile(source, JsLimits::default()) {
        Ok(_) => panic!("{source}\ncompiled"),
        Err(e) => e,
    }
}

/// Small limits that make the limit tests quick.
pub fn tight() -> JsLimits {
    JsLimits {
        memory_bytes: 16 << 20,
        per_event: Duration::from_millis(50),
        max_stack_bytes: 256 << 10,
    }
}

/// What the runner does with one event: partition, then apply.
pub fn feed(p: &mut JsProjection, e: &RecordedEvent) -> Result<Vec<Emit>, ProjectionError> {
    let mut emits = Vec::new();
    if let Some(key) = p.partition_key(e)? {
        p.apply(&key, e, &mut emits)?;
    }
    Ok(emits)
}

pub fn feed_all(p: &mut JsProjection, events: &[RecordedEvent]) -> Vec<Emit> {
    let mut all = Vec::new();
    for e in events {
        all.extend(feed(p, e).unwrap_or_else(|err| panic!("event {}: {err:?}", e.position)));
    }
    all
}

pub fn state(p: &mut JsProjection, partition: &str) -> serde_json::Value {
    p.state(partition)
        .unwrap()
        .unwrap_or_else(|| panic!("no state for partition {partition:?}"))
}
