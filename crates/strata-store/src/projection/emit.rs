//! Emitted events: appended to user streams with deterministic ids, so that re-running the
//! events after the last checkpoint (after a crash) appends nothing twice.
//!
//! The id of an emitted event is a hash of (projection name, *generation*, source position,
//! index among that event's emits), formatted as a UUID version 8. The generation (see
//! [`super::ProjectionIdentity`]) changes only when the projection's code changes or it is
//! deleted and re-created — NOT on reset. Emits are appended before the checkpoint that covers
//! their source events; a re-run (after a crash, or after a reset that rebuilds the state from
//! the start) produces the same ids, and the store's per-stream id index turns the repeat into a
//! no-op (a whole run → idempotent replay; a partial overlap → `DuplicateEventId`, after which
//! the events go one by one, a duplicate meaning "already done"). So a reset never re-emits an
//! event already emitted to the same stream; a new generation emits everything again under new
//! ids.

use uuid::Uuid;

use super::engine::Emit;
use crate::error::{Error, Result};
use crate::event::{ExpectedRevision, NewEvent, RecordedEvent};
use crate::Store;

/// Metadata key naming the projection that emitted an event (the runner skips its own emits
/// when they come back through its source, so `fromAll` + `emit` does not loop).
pub const EMITTED_BY_KEY: &str = "$projection";

/// The deterministic id of the `index`-th event emitted by generation `generation` of projection
/// `name` while applying the event at `position`.
pub fn emit_id(name: &str, generation: u64, position: u64, index: u32) -> Uuid {
    let mut input = Vec::with_capacity(name.len() + 24);
    input.extend_from_slice(&(name.len() as u64).to_le_bytes());
    input.extend_from_slice(name.as_bytes());
    input.extend_from_slice(&generation.to_le_bytes());
    input.extend_from_slice(&position.to_le_bytes());
    input.extend_from_slice(&index.to_le_bytes());
    let mut bytes = xxhash_rust::xxh3::xxh3_128(&input).to_be_bytes();
    bytes[6] = (bytes[6] & 0x0f) | 0x80; // version 8 (custom)
    bytes[8] = (bytes[8] & 0x3f) | 0x80; // RFC 4122 variant
    Uuid::from_bytes(bytes)
}

/// The event whose handler emitted events: what their metadata says about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Cause {
    /// Its log position.
    pub position: u64,
    /// Its id: the emitted events' `causation_id`.
    pub id: Uuid,
    /// Its `metadata.correlation_id`, which the emitted events carry on.
    pub correlation_id: Option<String>,
}

impl Cause {
    /// The cause `event`.
    pub fn of(event: &RecordedEvent) -> Cause {
        Cause {
            position: event.position,
            id: event.id,
            correlation_id: crate::correlation::links_of(&event.metadata)
                .correlation_id
                .map(|c| c.into_owned()),
        }
    }
}

/// The metadata of an event emitted by `name` while applying the event `cause`: the emitter,
/// the source position, the cause's `correlation_id` (when it has one) and its id as
/// `causation_id` (the convention of [`crate::correlation`]).
fn emit_metadata(name: &str, cause: &Cause) -> Vec<u8> {
    // Key order matters: `emitted_by` checks the prefix before parsing.
    let name = serde_json::Value::String(name.to_owned());
    let position = cause.position;
    let mut out = format!("{{\"{EMITTED_BY_KEY}\":{name},\"$source_position\":{position}");
    if let Some(c) = &cause.correlation_id {
        let c = serde_json::Value::String(c.clone());
        out.push_str(&format!(",\"correlation_id\":{c}"));
    }
    out.push_str(&format!(
        ",\"causation_id\":\"{}\"}}",
        cause.id.hyphenated()
    ));
    out.into_bytes()
}

/// True when `event` was emitted by projection `name`.
pub(crate) fn emitted_by(event: &RecordedEvent, name: &str) -> bool {
    let prefix = b"{\"$projection\":";
    if !event.metadata.starts_with(prefix) {
        return false;
    }
    serde_json::from_slice::<serde_json::Value>(&event.metadata)
        .ok()
        .and_then(|m| {
            m.get(EMITTED_BY_KEY)
                .and_then(|v| v.as_str().map(|s| s == name))
        })
        .unwrap_or(false)
}

/// Why `emit` cannot be appended (checked when the handler returns, so the projection faults
/// at the event that emitted it): a reserved or malformed stream name, a bad type.
pub(crate) fn check_emit(store: &Store, emit: &Emit) -> std::result::Result<(), String> {
    let limits = &store.options().limits;
    if emit.stream.starts_with('$') {
        return Err(format!(
            "cannot emit to {:?}: stream names starting with $ are reserved",
            emit.stream
        ));
    }
    if emit.stream.is_empty()
        || emit.stream.len() > limits.max_stream_name_len
        || emit.stream.chars().any(char::is_control)
    {
        return Err(format!(
            "cannot emit to {:?}: stream names are 1 to {} bytes without control characters",
            emit.stream, limits.max_stream_name_len
        ));
    }
    if emit.event_type.is_empty()
        || emit.event_type.len() > limits.max_event_type_len
        || emit.event_type.chars().any(char::is_control)
    {
        return Err(format!(
            "cannot emit an event of type {:?}: types are 1 to {} bytes without control characters",
            emit.event_type, limits.max_event_type_len
        ));
    }
    Ok(())
}

/// Appends the emits of a batch (`(source event, emits of that event)`, in order). Runs of
/// consecutive events to one stream go in one append; everything is idempotent under re-runs.
pub(crate) fn append_emits(
    store: &Store,
    name: &str,
    generation: u64,
    emits: &[(Cause, Vec<Emit>)],
) -> Result<()> {
    let mut flat: Vec<(&str, NewEvent)> = Vec::new();
    for (cause, list) in emits {
        let position = &cause.position;
        for (index, emit) in list.iter().enumerate() {
            if emit.stream.starts_with('$') {
                return Err(Error::invalid(
                    "emit stream",
                    format!("{:?}: names starting with $ are reserved", emit.stream),
                ));
            }
            let data = serde_json::to_vec(&emit.data)
                .map_err(|e| Error::invalid("emit data", e.to_string()))?;
            let index = u32::try_from(index)
                .map_err(|_| Error::invalid("emit", "too many emits for one event"))?;
            let event = NewEvent::json(emit.event_type.clone(), data)
                .with_id(emit_id(name, generation, *position, index))
                .with_metadata(emit_metadata(name, cause));
            flat.push((emit.stream.as_str(), event));
        }
    }
    let per_append = store.options().limits.max_events_per_append.max(1);
    let mut i = 0;
    while i < flat.len() {
        let stream = flat[i].0;
        let mut j = i + 1;
        while j < flat.len() && flat[j].0 == stream && j - i < per_append {
            j += 1;
        }
        let run: Vec<NewEvent> = flat[i..j].iter().map(|(_, e)| e.clone()).collect();
        match store.append(stream, ExpectedRevision::Any, run) {
            Ok(_) => {}
            Err(Error::DuplicateEventId { .. }) => {
                // Part of the run was appended by an earlier (crashed) run: one by one.
                for (_, event) in &flat[i..j] {
                    match store.append(stream, ExpectedRevision::Any, vec![event.clone()]) {
                        Ok(_) | Err(Error::DuplicateEventId { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            Err(e) => return Err(e),
        }
        i = j;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_deterministic_and_distinct() {
        let a = emit_id("p", 1, 10, 0);
        assert_eq!(a, emit_id("p", 1, 10, 0));
        assert_eq!(a.get_version_num(), 8);
        for other in [
            emit_id("p", 1, 10, 1),
            emit_id("p", 1, 11, 0),
            emit_id("p", 2, 10, 0),
            emit_id("q", 1, 10, 0),
        ] {
            assert_ne!(a, other);
        }
    }

    #[test]
    fn metadata_marks_the_emitter() {
        let cause = Cause {
            position: 7,
            id: Uuid::from_u128(9),
            correlation_id: Some("flow\"1".into()),
        };
        let meta = emit_metadata("a\"b", &cause);
        let v: serde_json::Value = serde_json::from_slice(&meta).unwrap();
        assert_eq!(v["$projection"], "a\"b");
        assert_eq!(v["$source_position"], 7);
        assert_eq!(v["correlation_id"], "flow\"1");
        assert_eq!(v["causation_id"], Uuid::from_u128(9).to_string());
        let no_flow = emit_metadata(
            "p",
            &Cause {
                correlation_id: None,
                ..cause
            },
        );
        let v: serde_json::Value = serde_json::from_slice(&no_flow).unwrap();
        assert!(v.get("correlation_id").is_none());
        assert_eq!(v["causation_id"], Uuid::from_u128(9).to_string());
        let event = RecordedEvent {
            id: Uuid::nil(),
            stream: "s".into(),
            revision: 0,
            position: 0,
            event_type: "t".into(),
            timestamp_micros: 0,
            content_type: crate::ContentType::Json,
            data: b"{}".to_vec(),
            metadata: meta,
        };
        assert!(emitted_by(&event, "a\"b"));
        assert!(!emitted_by(&event, "a"));
    }
}
