//! Checkpoints: a projection's state and the position it reflects, written together atomically
//! to the projection's own reserved stream, and read back on restart.
//!
//! Format (stream `$projection-<name>`, see [`checkpoint_stream`]): one checkpoint is `k`
//! binary `$state` events followed by one JSON `$checkpoint` event (a [`CheckpointRecord`]).
//! The `$state` events, concatenated, are the UTF-8 JSON object `{"<partition>": <state>, ...}`
//! of every partition. When everything fits one append (the usual case: `k` below the store's
//! events-per-append limit) the whole checkpoint is one atomic append; otherwise the chunks go in
//! several appends chained by expected revision and the `$checkpoint` record comes last, so a
//! checkpoint only exists once its record does (chunks without a record after them are ignored).
//! The chunks of a record are exactly the `chunks` events right before it.
//!
//! Older checkpoints are superseded: the stream's `truncate_before` is moved to the first chunk
//! of the latest checkpoint so that a scavenge removes them. Not after every checkpoint (that is
//! one more write, and one more `$metadata` record, per checkpoint): only once the superseded
//! checkpoints still readable hold about [`TRUNCATE_AFTER_BYTES`] or [`TRUNCATE_AFTER_EVENTS`]
//! events. So a large state (every checkpoint at least that size) moves it after every
//! checkpoint, and a small state every few dozen; the readable (and unscavengeable) part of the
//! stream stays under one checkpoint plus that bound.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::{Error, Result};
use crate::event::{ContentType, Direction, ExpectedRevision, NewEvent, ReadFrom, StreamMetadata};
use crate::Store;

/// Event type of a state chunk.
pub const STATE_CHUNK_TYPE: &str = "$state";
/// Event type of a checkpoint record.
pub const CHECKPOINT_TYPE: &str = "$checkpoint";
/// Largest state chunk (bounded by the store's event size limit too).
const MAX_CHUNK_BYTES: usize = 1 << 20;
/// Superseded checkpoint bytes (estimated from the latest checkpoint's size per event) that,
/// still readable, make a checkpoint move `truncate_before`.
pub const TRUNCATE_AFTER_BYTES: u64 = 256 << 10;
/// Superseded events that, still readable, make a checkpoint move `truncate_before`.
pub const TRUNCATE_AFTER_EVENTS: u64 = 64;
/// Rough bytes of a `$checkpoint` record event (record JSON and frame), for the estimate.
const RECORD_EVENT_BYTES: u64 = 256;

/// The JSON record that closes a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointRecord {
    /// Format version (1).
    pub version: u32,
    /// The projection incarnation this state belongs to; another incarnation's checkpoint is
    /// ignored (the projection was reset or redefined since).
    pub incarnation: u64,
    /// Log position of the last event applied, `None` before any.
    pub position: Option<u64>,
    /// Where reading resumes: a log position, or a revision for a single-stream source.
    pub cursor: u64,
    /// Number of partitions in the state.
    pub partitions: u64,
    /// Number of `$state` chunk events right before this record.
    pub chunks: u64,
    /// Total bytes of the state JSON.
    pub bytes: u64,
    /// Events applied by this incarnation up to `position`.
    pub events_processed: u64,
}

/// A checkpoint read back: the record and every partition's state.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    /// The closing record.
    pub record: CheckpointRecord,
    /// State per partition, as the JSON text the checkpoint holds (checked to be JSON, not
    /// parsed into values): compact, as written.
    pub states: HashMap<String, Box<RawValue>>,
}

/// The reserved stream holding the checkpoints of projection `name`: `$projection-<name>`, or,
/// when that would exceed the store's stream-name limit, `$projection-#<hash of name>`.
pub fn checkpoint_stream(store: &Store, name: &str) -> String {
    let plain = format!("$projection-{name}");
    if plain.len() <= store.options().limits.max_stream_name_len {
        plain
    } else {
        format!(
            "$projection-#{:032x}",
            xxhash_rust::xxh3::xxh3_128(name.as_bytes())
        )
    }
}

/// Writes a checkpoint of `states` (each the JSON text of one partition's state, copied in as it
/// is, in partition order) closed by `record` (whose `partitions`, `chunks` and `bytes` are
/// filled in). Returns the state's size in bytes.
pub(crate) fn write_checkpoint<'a>(
    store: &Store,
    stream: &str,
    mut record: CheckpointRecord,
    states: impl Iterator<Item = (&'a String, &'a RawValue)>,
) -> Result<u64> {
    // Written from references in partition order: no copy of the states but the JSON itself.
    let sorted: std::collections::BTreeMap<&String, &RawValue> = states.collect();
    let bytes = serde_json::to_vec(&sorted)
        .map_err(|e| Error::invalid("projection state", e.to_string()))?;
    let limits = &store.options().limits;
    let chunk = limits.max_event_size.clamp(1, MAX_CHUNK_BYTES);
    record.partitions = sorted.len() as u64;
    drop(sorted);
    record.bytes = bytes.len() as u64;
    record.chunks = bytes.len().div_ceil(chunk) as u64;
    let record_event = NewEvent::json(
        CHECKPOINT_TYPE,
        serde_json::to_vec(&record).map_err(|e| Error::invalid("checkpoint", e.to_string()))?,
    );
    // Chunks are built one append at a time (at most the events-per-append limit), so the
    // state exists at most twice in memory here: the JSON and one append's chunks.
    let per_append = limits.max_events_per_append.max(2);
    let mut pieces = bytes.chunks(chunk).peekable();
    let mut record_event = Some(record_event);
    let mut expected = ExpectedRevision::Any;
    let mut first_chunk = None;
    while record_event.is_some() {
        let mut now: Vec<NewEvent> = pieces
            .by_ref()
            .take(per_append)
            .map(|c| NewEvent::binary(STATE_CHUNK_TYPE, c.to_vec()))
            .collect();
        if now.len() < per_append && pieces.peek().is_none() {
            if let Some(r) = record_event.take() {
                now.push(r);
            }
        }
        let result = store.append(stream, expected, now)?;
        first_chunk.get_or_insert(result.first_revision);
        expected = ExpectedRevision::Exact(result.last_revision);
    }
    if let Some(first) = first_chunk {
        let current = store.metadata(stream)?;
        let readable_from = current.truncate_before.unwrap_or(0);
        if superseded_enough(first.saturating_sub(readable_from), &record) {
            let metadata = StreamMetadata {
                truncate_before: Some(first),
                ..current
            };
            store.set_metadata(stream, metadata)?;
        }
    }
    Ok(record.bytes)
}

/// Whether `superseded` readable events before a checkpoint like `record` are enough to move
/// `truncate_before` (see the module docs).
fn superseded_enough(superseded: u64, record: &CheckpointRecord) -> bool {
    let events = record.chunks + 1;
    let per_event = (record.bytes + RECORD_EVENT_BYTES) / events;
    superseded >= TRUNCATE_AFTER_EVENTS
        || superseded.saturating_mul(per_event) >= TRUNCATE_AFTER_BYTES
}

/// Reads the latest checkpoint of `stream`, `None` when there is none (never written, deleted).
/// A record whose chunks are missing or do not parse is [`Error::Corruption`]-like
/// ([`Error::InvalidInput`] naming the stream): never silently replaced by an empty state.
pub fn read_latest_checkpoint(store: &Store, stream: &str) -> Result<Option<Checkpoint>> {
    let mut from = ReadFrom::End;
    let record_event = loop {
        let page = match store.read_stream(stream, from, Direction::Backward, 32) {
            Ok(page) => page,
            Err(Error::StreamNotFound { .. } | Error::StreamDeleted { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        if let Some(e) = page.events.iter().find(|e| e.event_type == CHECKPOINT_TYPE) {
            break e.clone();
        }
        match page.next {
            Some(n) if !page.end => from = ReadFrom::At(n),
            _ => return Ok(None),
        }
    };
    let bad = |why: String| Error::invalid(format!("checkpoint of {stream}"), why);
    let record: CheckpointRecord = serde_json::from_slice(&record_event.data)
        .map_err(|e| bad(format!("record at revision {}: {e}", record_event.revision)))?;
    let first = record_event
        .revision
        .checked_sub(record.chunks)
        .ok_or_else(|| bad("more chunks than events before the record".into()))?;
    // Nothing is reserved from the record's `bytes` or `chunks`: a damaged record must not make
    // us allocate more than the chunks actually read (it is compared with them below).
    let mut bytes = Vec::new();
    let mut next = first;
    while next < record_event.revision {
        let want = usize::try_from(record_event.revision - next).unwrap_or(usize::MAX);
        let page =
            store.read_stream(stream, ReadFrom::At(next), Direction::Forward, want.min(64))?;
        if page.events.is_empty() {
            return Err(bad(format!("chunk at revision {next} is missing")));
        }
        for e in page.events {
            if e.revision >= record_event.revision {
                break;
            }
            if e.revision != next
                || e.event_type != STATE_CHUNK_TYPE
                || e.content_type != ContentType::Binary
            {
                return Err(bad(format!("chunk at revision {next} is missing")));
            }
            bytes.extend_from_slice(&e.data);
            next += 1;
        }
    }
    if bytes.len() as u64 != record.bytes {
        return Err(bad(format!(
            "state is {} bytes, the record says {}",
            bytes.len(),
            record.bytes
        )));
    }
    let states: HashMap<String, Box<RawValue>> =
        serde_json::from_slice(&bytes).map_err(|e| bad(format!("state JSON: {e}")))?;
    Ok(Some(Checkpoint { record, states }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Store;

    use crate::test_support::store;

    /// Writes `states` (as values) as a checkpoint closed by `record`.
    fn write(
        store: &Store,
        stream: &str,
        record: CheckpointRecord,
        states: &HashMap<String, serde_json::Value>,
    ) -> Result<u64> {
        let texts: HashMap<String, Box<RawValue>> = states
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::value::to_raw_value(v).unwrap()))
            .collect();
        write_checkpoint(store, stream, record, texts.iter().map(|(k, v)| (k, &**v)))
    }

    /// The states of `cp` as values.
    fn values(cp: &Checkpoint) -> HashMap<String, serde_json::Value> {
        cp.states
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::from_str(v.get()).unwrap()))
            .collect()
    }

    fn record(position: u64) -> CheckpointRecord {
        CheckpointRecord {
            version: 1,
            incarnation: 1,
            position: Some(position),
            cursor: position + 1,
            partitions: 0,
            chunks: 0,
            bytes: 0,
            events_processed: position + 1,
        }
    }

    #[test]
    fn latest_checkpoint_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let s = checkpoint_stream(&store, "p");
        assert!(read_latest_checkpoint(&store, &s).unwrap().is_none());
        let mut states = HashMap::new();
        states.insert("a".to_string(), serde_json::json!({"n": 1}));
        write(&store, &s, record(3), &states).unwrap();
        states.insert("b".to_string(), serde_json::json!([1, 2]));
        write(&store, &s, record(9), &states).unwrap();
        let cp = read_latest_checkpoint(&store, &s).unwrap().unwrap();
        assert_eq!(cp.record.position, Some(9));
        assert_eq!(cp.record.partitions, 2);
        assert_eq!(values(&cp), states);
    }

    #[test]
    fn superseded_checkpoints_are_truncated_in_bounded_steps() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let s = checkpoint_stream(&store, "p");
        let mut states = HashMap::new();
        states.insert("a".to_string(), serde_json::json!({"n": 1}));
        let mut metadata_writes = 0;
        for i in 0..200 {
            let before = store.head(&format!("$${s}")).unwrap().last_revision;
            write(&store, &s, record(i), &states).unwrap();
            let after = store.head(&format!("$${s}")).unwrap().last_revision;
            metadata_writes += u64::from(before != after);
            let page = store
                .read_stream(&s, ReadFrom::Start, Direction::Forward, 1000)
                .unwrap();
            // Small checkpoints (2 events): truncated once 64 superseded events are readable.
            assert!(page.events.len() as u64 <= TRUNCATE_AFTER_EVENTS + 2);
            let cp = read_latest_checkpoint(&store, &s).unwrap().unwrap();
            assert_eq!(cp.record.position, Some(i));
        }
        assert!(metadata_writes <= 200 / 32 + 1, "{metadata_writes}");
        assert!(metadata_writes >= 3, "{metadata_writes}");
    }

    #[test]
    fn large_checkpoints_truncate_every_time() {
        let big = CheckpointRecord {
            chunks: 1,
            bytes: TRUNCATE_AFTER_BYTES,
            ..record(1)
        };
        assert!(superseded_enough(2, &big));
        assert!(!superseded_enough(0, &big));
        let small = CheckpointRecord {
            chunks: 1,
            bytes: 100,
            ..record(1)
        };
        assert!(!superseded_enough(2, &small));
        assert!(superseded_enough(TRUNCATE_AFTER_EVENTS, &small));
    }

    #[test]
    fn large_states_are_chunked_and_reassembled() {
        let dir = tempfile::tempdir().unwrap();
        let mut options = crate::test_support::no_fsync();
        options.limits.max_event_size = 1024;
        options.limits.max_events_per_append = 3;
        let store = Store::open(dir.path(), options).unwrap();
        let s = checkpoint_stream(&store, "big");
        let states: HashMap<String, serde_json::Value> = (0..200)
            .map(|i| {
                (
                    format!("k{i}"),
                    serde_json::json!({"text": "x".repeat(50), "i": i}),
                )
            })
            .collect();
        write(&store, &s, record(1), &states).unwrap();
        let cp = read_latest_checkpoint(&store, &s).unwrap().unwrap();
        assert!(cp.record.chunks > 3);
        assert_eq!(values(&cp), states);
    }

    #[test]
    fn chunks_respect_an_event_size_limit_below_a_kibibyte() {
        let dir = tempfile::tempdir().unwrap();
        let mut options = crate::test_support::no_fsync();
        options.limits.max_event_size = 300;
        let store = Store::open(dir.path(), options).unwrap();
        let s = checkpoint_stream(&store, "small");
        let states: HashMap<String, serde_json::Value> = (0..40)
            .map(|i| (format!("k{i}"), serde_json::json!({"text": "y".repeat(40)})))
            .collect();
        write(&store, &s, record(1), &states).unwrap();
        let cp = read_latest_checkpoint(&store, &s).unwrap().unwrap();
        assert_eq!(values(&cp), states);
    }

    #[test]
    fn a_torn_chained_checkpoint_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let s = checkpoint_stream(&store, "torn");
        let mut states = HashMap::new();
        states.insert(String::new(), serde_json::json!({"n": 1}));
        write(&store, &s, record(3), &states).unwrap();
        // A later chained checkpoint crashed after its first append: chunks, no record.
        store
            .append(
                &s,
                ExpectedRevision::Any,
                vec![NewEvent::binary(
                    STATE_CHUNK_TYPE,
                    b"{\"\":{\"n\":".to_vec(),
                )],
            )
            .unwrap();
        let cp = read_latest_checkpoint(&store, &s).unwrap().unwrap();
        assert_eq!(cp.record.position, Some(3));
        assert_eq!(values(&cp), states);
        // The next complete checkpoint is found after the torn chunks.
        states.insert(String::new(), serde_json::json!({"n": 2}));
        write(&store, &s, record(5), &states).unwrap();
        let cp = read_latest_checkpoint(&store, &s).unwrap().unwrap();
        assert_eq!(cp.record.position, Some(5));
        assert_eq!(values(&cp), states);
    }

    #[test]
    fn long_names_use_a_hashed_stream() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let long = "n".repeat(255);
        let s = checkpoint_stream(&store, &long);
        assert!(s.len() <= 255);
        assert_ne!(s, checkpoint_stream(&store, &"m".repeat(255)));
    }
}
