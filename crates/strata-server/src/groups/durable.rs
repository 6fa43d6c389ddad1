//! Durable group state, kept in the store's reserved `$`-streams (so it obeys the same fsync
//! policy as events and survives restarts without another database). All records are JSON.
//!
//! | stream | records | bounded by |
//! |---|---|---|
//! | `$groups` | `GroupCreated` / `GroupUpdated` `{name, generation, settings, start}`, `GroupDeleted` `{name, generation}`, `GroupsSnapshot` `{part, parts, groups}` | a snapshot plus `truncate_before` once it holds more than twice the live groups (+32) |
//! | `$group-<generation>-checkpoint` | `Checkpoint` `{checkpoint, done, deliveries?}` (`done`: `[first, last]` cursor ranges above the checkpoint; `deliveries`: `[cursor, delivery]` of pending events delivered more than once) | `max_count: 2` |
//! | `$group-<generation>-parked` | `Parked` `{cursor, stream, revision, position, event_id, type, delivery, reason, parked_at}`, `Replayed` `{cursors}`, `Resolved` `{cursors}`, `ParkedSnapshot` `{part, parts, parked, replaying}` | a snapshot plus `truncate_before` once it holds more than twice the live entries (+64) |
//!
//! The generation is a random number per group incarnation: a deleted group's streams are
//! tombstoned and a re-created group of the same name starts with fresh streams. The log is
//! append-only: superseded records stay in the segment files until a scavenge removes them —
//! every one of these streams is bounded by its metadata (the bounds above; a tombstone for a
//! deleted group's streams), which is what a scavenge honours. Records are written only when
//! something changed (an ack, a park, a replay), never on an idle timer, and reads of the state
//! streams only see the live tail. [`ensure_bounded`] sets a missing bound at load.

use std::collections::BTreeMap;

use crate::until_damage::read_until_damage;
use serde::{Deserialize, Serialize};
use strata_store::{
    Direction, ExpectedRevision, NewEvent, ReadFrom, RecordedEvent, Store, StreamMetadata,
};

use super::settings::Settings;

/// The registry stream.
pub const REGISTRY_STREAM: &str = "$groups";

/// Most entries per snapshot record (keeps each record far below the event size limit).
const SNAPSHOT_CHUNK: usize = 2_000;

/// The checkpoint stream of a group incarnation.
pub fn checkpoint_stream(generation: u64) -> String {
    format!("$group-{generation:016x}-checkpoint")
}

/// The parked-events stream of a group incarnation.
pub fn parked_stream(generation: u64) -> String {
    format!("$group-{generation:016x}-parked")
}

/// A group as the registry knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRecord {
    /// The group name.
    pub name: String,
    /// Its incarnation.
    pub generation: u64,
    /// Its settings.
    pub settings: Settings,
    /// The resolved start cursor (`from: "end"` resolved at creation).
    pub start: u64,
}

#[derive(Serialize, Deserialize)]
struct Deleted {
    name: String,
    generation: u64,
}

#[derive(Serialize, Deserialize)]
struct GroupsSnapshot {
    part: usize,
    parts: usize,
    groups: Vec<GroupRecord>,
}

/// The registry folded: live groups, and generations deleted since the last snapshot (whose
/// state streams may still need tombstoning after a crash).
#[derive(Debug, Default)]
pub struct Registry {
    /// Live groups by name.
    pub groups: BTreeMap<String, GroupRecord>,
    /// Deleted generations seen in the live part of the registry.
    pub deleted: Vec<u64>,
    /// Records in the live part of the registry stream.
    pub records: u64,
}

/// The persisted checkpoint of a group.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointRecord {
    /// Every cursor below this is done.
    pub checkpoint: u64,
    /// Done cursors above the checkpoint, as inclusive `[first, last]` ranges.
    pub done: Vec<[u64; 2]>,
    /// `[cursor, delivery]` of pending events already delivered more than once, so that
    /// `max_deliveries` counts across restarts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deliveries: Vec<[u64; 2]>,
}

impl CheckpointRecord {
    /// Builds the record from ascending done cursors.
    pub fn new(checkpoint: u64, done: impl Iterator<Item = u64>) -> Self {
        let mut ranges: Vec<[u64; 2]> = Vec::new();
        for c in done {
            match ranges.last_mut() {
                Some(r) if r[1].checked_add(1) == Some(c) => r[1] = c,
                _ => ranges.push([c, c]),
            }
        }
        CheckpointRecord {
            checkpoint,
            done: ranges,
            deliveries: Vec::new(),
        }
    }

    /// The done cursors, ascending.
    pub fn done_cursors(&self) -> impl Iterator<Item = u64> + '_ {
        self.done.iter().flat_map(|[a, b]| *a..=*b)
    }
}

/// A parked event (what `GET /groups/{group}/parked` lists).
///
/// A damaged event (reason `corrupt`) was never delivered: what the damage hides is unknown
/// there — an empty `stream` or `event_type`, a nil `event_id` and [`UNKNOWN`] for `revision` or
/// `position` — and `file` / `offset` name the damaged bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParkedEntry {
    /// The event's cursor in the group's source.
    pub cursor: u64,
    /// Its stream.
    pub stream: String,
    /// Its revision.
    pub revision: u64,
    /// Its log position.
    pub position: u64,
    /// Its id.
    pub event_id: uuid::Uuid,
    /// Its type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Deliveries before it was parked.
    pub delivery: u32,
    /// `max_deliveries` or `nacked`.
    pub reason: String,
    /// When it was parked, µs since the Unix epoch.
    pub parked_at: i64,
    /// For a damaged event (reason `corrupt`): the damaged file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// For a damaged event (reason `corrupt`): the byte offset of the damage in `file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
}

/// A `revision` or `position` of a [`ParkedEntry`] that the damage hides.
pub const UNKNOWN: u64 = u64::MAX;

#[derive(Serialize, Deserialize)]
struct Cursors {
    cursors: Vec<u64>,
}

#[derive(Serialize, Deserialize)]
struct ParkedSnapshot {
    part: usize,
    parts: usize,
    parked: Vec<ParkedEntry>,
    replaying: Vec<ParkedEntry>,
}

/// The parked stream folded.
#[derive(Debug, Default)]
pub struct ParkedState {
    /// Parked, not replayed.
    pub parked: BTreeMap<u64, ParkedEntry>,
    /// Replayed and not acked again yet: re-queued at startup.
    pub replaying: BTreeMap<u64, ParkedEntry>,
    /// Records in the live part of the stream.
    pub records: u64,
}

fn json_event<T: Serialize>(event_type: &str, value: &T) -> strata_store::Result<NewEvent> {
    let data = serde_json::to_vec(value)
        .map_err(|e| strata_store::Error::invalid("group state", e.to_string()))?;
    Ok(NewEvent::json(event_type, data))
}

fn parse<'a, T: Deserialize<'a>>(e: &'a RecordedEvent) -> strata_store::Result<T> {
    serde_json::from_slice(&e.data).map_err(|err| {
        strata_store::Error::corruption(
            format!("stream {}", e.stream),
            e.revision,
            format!("unreadable {} record: {err}", e.event_type),
        )
    })
}

/// Calls `f` with every visible event of `stream`, in order (nothing for a stream never written
/// or deleted).
fn for_each(
    store: &Store,
    stream: &str,
    mut f: impl FnMut(&RecordedEvent) -> strata_store::Result<()>,
) -> strata_store::Result<()> {
    let mut from = ReadFrom::Start;
    loop {
        let read = read_until_damage(from, 1000, |from, limit| {
            store.read_stream(stream, from, Direction::Forward, limit)
        });
        let slice = match read {
            Ok(s) => s,
            Err(strata_store::Error::StreamNotFound { .. })
            | Err(strata_store::Error::StreamDeleted { .. }) => return Ok(()),
            // The record at `from` is damaged (or, with damage whose events are unknown, may
            // be): the state is folded from every intact record, without that one, rather
            // than not at all. A lost checkpoint means redeliveries (at-least-once holds).
            Err(e @ strata_store::Error::Corruption { .. }) => {
                let at = match from {
                    ReadFrom::At(n) => n,
                    ReadFrom::Start | ReadFrom::End => 0,
                };
                tracing::error!(stream, revision = at, error = %e, "a record of the server's own state is damaged; it is left out");
                let head = store.head(stream).ok().and_then(|h| h.last_revision);
                match head {
                    Some(last) if last > at => {
                        from = ReadFrom::At(at + 1);
                        continue;
                    }
                    _ => return Ok(()),
                }
            }
            Err(e) => return Err(e),
        };
        for e in &slice.events {
            f(e)?;
        }
        match slice.next {
            Some(next) if !slice.end && !slice.events.is_empty() => from = ReadFrom::At(next),
            _ => return Ok(()),
        }
    }
}

/// Reads and folds the registry.
pub fn load_registry(store: &Store) -> strata_store::Result<Registry> {
    let mut reg = Registry::default();
    for_each(store, REGISTRY_STREAM, |e| {
        reg.records += 1;
        match e.event_type.as_str() {
            "GroupCreated" | "GroupUpdated" => {
                let g: GroupRecord = parse(e)?;
                reg.groups.insert(g.name.clone(), g);
            }
            "GroupDeleted" => {
                let d: Deleted = parse(e)?;
                if reg
                    .groups
                    .get(&d.name)
                    .is_some_and(|g| g.generation == d.generation)
                {
                    reg.groups.remove(&d.name);
                }
                reg.deleted.push(d.generation);
            }
            "GroupsSnapshot" => {
                let s: GroupsSnapshot = parse(e)?;
                if s.part == 0 {
                    reg.groups.clear();
                    reg.deleted.clear();
                }
                for g in s.groups {
                    reg.groups.insert(g.name.clone(), g);
                }
            }
            other => tracing::warn!(record = other, "unknown record in {REGISTRY_STREAM}"),
        }
        Ok(())
    })?;
    Ok(reg)
}

/// Appends a created/updated group record (durable under the fsync policy when it returns).
pub async fn write_group(
    store: &Store,
    record: &GroupRecord,
    created: bool,
) -> strata_store::Result<()> {
    let kind = if created {
        "GroupCreated"
    } else {
        "GroupUpdated"
    };
    store
        .append_async(
            REGISTRY_STREAM,
            ExpectedRevision::Any,
            vec![json_event(kind, record)?],
        )
        .await
        .map(|_| ())
}

/// Appends a deletion record.
pub async fn write_deleted(store: &Store, name: &str, generation: u64) -> strata_store::Result<()> {
    let record = Deleted {
        name: name.to_owned(),
        generation,
    };
    store
        .append_async(
            REGISTRY_STREAM,
            ExpectedRevision::Any,
            vec![json_event("GroupDeleted", &record)?],
        )
        .await
        .map(|_| ())
}

/// Rewrites the registry as one snapshot (atomic append of its chunks) and hides what came
/// before it with `truncate_before`. Returns the records now live.
pub async fn compact_registry(
    store: &Store,
    groups: Vec<GroupRecord>,
) -> strata_store::Result<u64> {
    let chunks: Vec<Vec<GroupRecord>> = if groups.is_empty() {
        vec![Vec::new()]
    } else {
        groups.chunks(SNAPSHOT_CHUNK).map(<[_]>::to_vec).collect()
    };
    let parts = chunks.len();
    let mut events = Vec::with_capacity(parts);
    for (part, groups) in chunks.into_iter().enumerate() {
        events.push(json_event(
            "GroupsSnapshot",
            &GroupsSnapshot {
                part,
                parts,
                groups,
            },
        )?);
    }
    let r = store
        .append_async(REGISTRY_STREAM, ExpectedRevision::Any, events)
        .await?;
    truncate_before(store, REGISTRY_STREAM, r.first_revision).await?;
    Ok(parts as u64)
}

async fn truncate_before(store: &Store, stream: &str, revision: u64) -> strata_store::Result<()> {
    let store = store.clone();
    let stream = stream.to_owned();
    blocking(move || {
        store
            .set_metadata(
                &stream,
                StreamMetadata {
                    truncate_before: Some(revision),
                    ..StreamMetadata::default()
                },
            )
            .map(|_| ())
    })
    .await
}

/// Runs a blocking store call on tokio's blocking pool.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> strata_store::Result<T> + Send + 'static,
) -> strata_store::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or(Err(strata_store::Error::Closed))
}

/// Records a checkpoint stream keeps readable (each checkpoint record is complete; the one
/// before the last stays for a reader racing a write). A scavenge removes the others.
pub const CHECKPOINT_MAX_COUNT: u64 = 2;

/// Prepares the state streams of a new incarnation: the checkpoint stream keeps
/// [`CHECKPOINT_MAX_COUNT`] records.
pub fn init_state_streams(store: &Store, generation: u64) -> strata_store::Result<()> {
    store
        .set_metadata(
            &checkpoint_stream(generation),
            StreamMetadata {
                max_count: Some(CHECKPOINT_MAX_COUNT),
                ..StreamMetadata::default()
            },
        )
        .map(|_| ())
}

/// Makes sure the checkpoint stream of a live incarnation is bounded by `max_count` (a data
/// directory written before the bound existed, or whose metadata was changed by hand): writes
/// the metadata only when it is missing, so a normal start writes nothing.
pub fn ensure_bounded(store: &Store, generation: u64) -> strata_store::Result<()> {
    let stream = checkpoint_stream(generation);
    let current = store.metadata(&stream)?;
    if current.max_count == Some(CHECKPOINT_MAX_COUNT) {
        return Ok(());
    }
    store
        .set_metadata(
            &stream,
            StreamMetadata {
                max_count: Some(CHECKPOINT_MAX_COUNT),
                ..current
            },
        )
        .map(|_| ())
}

/// Tombstones the state streams of an incarnation (no-op for streams already gone).
pub fn drop_state_streams(store: &Store, generation: u64) -> strata_store::Result<()> {
    for stream in [checkpoint_stream(generation), parked_stream(generation)] {
        let head = store.head(&stream)?;
        if head.deletion == Some(strata_store::Deletion::Hard) {
            continue;
        }
        match store.delete_stream(&stream, ExpectedRevision::Any, true) {
            Ok(_)
            | Err(strata_store::Error::StreamNotFound { .. })
            | Err(strata_store::Error::StreamDeleted { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The last checkpoint of an incarnation, if one was written.
pub fn load_checkpoint(
    store: &Store,
    generation: u64,
) -> strata_store::Result<Option<CheckpointRecord>> {
    let stream = checkpoint_stream(generation);
    match store.read_stream(&stream, ReadFrom::End, Direction::Backward, 1) {
        Ok(slice) => match slice.events.first() {
            Some(e) => parse(e).map(Some),
            None => Ok(None),
        },
        Err(strata_store::Error::StreamNotFound { .. })
        | Err(strata_store::Error::StreamDeleted { .. }) => Ok(None),
        // The last record is damaged (or may be): the last intact one, if any.
        Err(strata_store::Error::Corruption { .. }) => {
            let mut last = None;
            for_each(store, &stream, |e| {
                last = Some(parse(e)?);
                Ok(())
            })?;
            Ok(last)
        }
        Err(e) => Err(e),
    }
}

/// Appends a checkpoint.
pub async fn write_checkpoint(
    store: &Store,
    generation: u64,
    record: &CheckpointRecord,
) -> strata_store::Result<()> {
    store
        .append_async(
            &checkpoint_stream(generation),
            ExpectedRevision::Any,
            vec![json_event("Checkpoint", record)?],
        )
        .await
        .map(|_| ())
}

/// Reads and folds the parked stream of an incarnation.
pub fn load_parked(store: &Store, generation: u64) -> strata_store::Result<ParkedState> {
    let mut st = ParkedState::default();
    for_each(store, &parked_stream(generation), |e| {
        st.records += 1;
        match e.event_type.as_str() {
            "Parked" => {
                let p: ParkedEntry = parse(e)?;
                st.replaying.remove(&p.cursor);
                st.parked.insert(p.cursor, p);
            }
            "Replayed" => {
                let c: Cursors = parse(e)?;
                for cursor in c.cursors {
                    if let Some(p) = st.parked.remove(&cursor) {
                        st.replaying.insert(cursor, p);
                    }
                }
            }
            "Resolved" => {
                let c: Cursors = parse(e)?;
                for cursor in c.cursors {
                    st.parked.remove(&cursor);
                    st.replaying.remove(&cursor);
                }
            }
            "ParkedSnapshot" => {
                let s: ParkedSnapshot = parse(e)?;
                if s.part == 0 {
                    st.parked.clear();
                    st.replaying.clear();
                }
                st.parked
                    .extend(s.parked.into_iter().map(|p| (p.cursor, p)));
                st.replaying
                    .extend(s.replaying.into_iter().map(|p| (p.cursor, p)));
            }
            other => tracing::warn!(record = other, stream = %e.stream, "unknown parked record"),
        }
        Ok(())
    })?;
    Ok(st)
}

/// Changes to the parked stream, written as one atomic append in this order.
#[derive(Debug, Default)]
pub struct ParkedChanges {
    /// Newly parked events.
    pub parked: Vec<ParkedEntry>,
    /// Parked events re-queued by a replay.
    pub replayed: Vec<u64>,
    /// Replayed events acked (or skipped) again, or parked events that no longer exist.
    pub resolved: Vec<u64>,
}

impl ParkedChanges {
    /// True when there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.parked.is_empty() && self.replayed.is_empty() && self.resolved.is_empty()
    }

    /// The number of records [`write_parked`] writes.
    pub fn records(&self) -> u64 {
        self.parked.len() as u64
            + u64::from(!self.replayed.is_empty())
            + u64::from(!self.resolved.is_empty())
    }
}

/// Appends `changes` to the parked stream.
pub async fn write_parked(
    store: &Store,
    generation: u64,
    changes: &ParkedChanges,
) -> strata_store::Result<()> {
    let mut events = Vec::new();
    for p in &changes.parked {
        events.push(json_event("Parked", p)?);
    }
    if !changes.replayed.is_empty() {
        events.push(json_event(
            "Replayed",
            &Cursors {
                cursors: changes.replayed.clone(),
            },
        )?);
    }
    if !changes.resolved.is_empty() {
        events.push(json_event(
            "Resolved",
            &Cursors {
                cursors: changes.resolved.clone(),
            },
        )?);
    }
    let max = store.options().limits.max_events_per_append.max(1);
    for chunk in events.chunks(max) {
        store
            .append_async(
                &parked_stream(generation),
                ExpectedRevision::Any,
                chunk.to_vec(),
            )
            .await?;
    }
    Ok(())
}

/// Rewrites the parked stream as a snapshot and hides what came before. Returns the records
/// now live.
pub async fn compact_parked(
    store: &Store,
    generation: u64,
    parked: Vec<ParkedEntry>,
    replaying: Vec<ParkedEntry>,
) -> strata_store::Result<u64> {
    let mut chunks: Vec<(Vec<ParkedEntry>, Vec<ParkedEntry>)> = parked
        .chunks(SNAPSHOT_CHUNK)
        .map(|c| (c.to_vec(), Vec::new()))
        .collect();
    chunks.extend(
        replaying
            .chunks(SNAPSHOT_CHUNK)
            .map(|c| (Vec::new(), c.to_vec())),
    );
    if chunks.is_empty() {
        chunks.push((Vec::new(), Vec::new()));
    }
    let parts = chunks.len();
    let mut events = Vec::with_capacity(parts);
    for (part, (parked, replaying)) in chunks.into_iter().enumerate() {
        events.push(json_event(
            "ParkedSnapshot",
            &ParkedSnapshot {
                part,
                parts,
                parked,
                replaying,
            },
        )?);
    }
    let stream = parked_stream(generation);
    let r = store
        .append_async(&stream, ExpectedRevision::Any, events)
        .await?;
    truncate_before(store, &stream, r.first_revision).await?;
    Ok(parts as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::groups::settings::Settings;

    fn entry(cursor: u64) -> ParkedEntry {
        ParkedEntry {
            cursor,
            stream: "s-1".into(),
            revision: cursor,
            position: cursor,
            event_id: uuid::Uuid::new_v4(),
            event_type: "T".into(),
            delivery: 2,
            reason: "nacked".into(),
            parked_at: 5,
            file: None,
            offset: None,
        }
    }

    #[test]
    fn checkpoint_ranges() {
        let r = CheckpointRecord::new(3, [5, 6, 7, 9, 11, 12].into_iter());
        assert_eq!(r.done, vec![[5, 7], [9, 9], [11, 12]]);
        assert_eq!(r.done_cursors().collect::<Vec<_>>(), [5, 6, 7, 9, 11, 12]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn state_round_trips_through_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), Default::default()).unwrap();
        let settings = Settings::parse(br#"{"source":"$all"}"#).unwrap();
        let g = |name: &str, generation| GroupRecord {
            name: name.into(),
            generation,
            settings: settings.clone(),
            start: 0,
        };
        write_group(&store, &g("a", 1), true).await.unwrap();
        write_group(&store, &g("b", 2), true).await.unwrap();
        write_deleted(&store, "a", 1).await.unwrap();
        let reg = load_registry(&store).unwrap();
        assert_eq!(reg.groups.keys().collect::<Vec<_>>(), ["b"]);
        assert_eq!(reg.deleted, [1]);
        assert_eq!(reg.records, 3);
        assert_eq!(compact_registry(&store, vec![g("b", 2)]).await.unwrap(), 1);
        let reg = load_registry(&store).unwrap();
        assert_eq!(reg.groups.len(), 1);
        assert_eq!(reg.records, 1);
        assert!(reg.deleted.is_empty());

        init_state_streams(&store, 2).unwrap();
        assert_eq!(load_checkpoint(&store, 2).unwrap(), None);
        for i in 0..5 {
            let r = CheckpointRecord::new(i, [i + 2].into_iter());
            write_checkpoint(&store, 2, &r).await.unwrap();
        }
        let last = load_checkpoint(&store, 2).unwrap().unwrap();
        assert_eq!(last.checkpoint, 4);
        let visible = store
            .read_stream(
                &checkpoint_stream(2),
                ReadFrom::Start,
                Direction::Forward,
                10,
            )
            .unwrap();
        assert_eq!(visible.events.len(), 2, "max_count keeps the stream short");

        let changes = ParkedChanges {
            parked: vec![entry(1), entry(2), entry(3)],
            ..Default::default()
        };
        write_parked(&store, 2, &changes).await.unwrap();
        let changes = ParkedChanges {
            replayed: vec![1, 2],
            resolved: vec![1],
            ..Default::default()
        };
        write_parked(&store, 2, &changes).await.unwrap();
        let st = load_parked(&store, 2).unwrap();
        assert_eq!(st.parked.keys().copied().collect::<Vec<_>>(), [3]);
        assert_eq!(st.replaying.keys().copied().collect::<Vec<_>>(), [2]);
        assert_eq!(st.records, 5);
        let n = compact_parked(
            &store,
            2,
            st.parked.values().cloned().collect(),
            st.replaying.values().cloned().collect(),
        )
        .await
        .unwrap();
        let again = load_parked(&store, 2).unwrap();
        assert_eq!(again.records, n);
        assert_eq!(again.parked, st.parked);
        assert_eq!(again.replaying, st.replaying);

        // A checkpoint stream that lost its bound gets it back at load.
        store
            .set_metadata(&checkpoint_stream(2), StreamMetadata::default())
            .unwrap();
        ensure_bounded(&store, 2).unwrap();
        let meta_head = store.head(&format!("$${}", checkpoint_stream(2))).unwrap();
        assert_eq!(
            store.metadata(&checkpoint_stream(2)).unwrap().max_count,
            Some(CHECKPOINT_MAX_COUNT)
        );
        ensure_bounded(&store, 2).unwrap();
        let again = store.head(&format!("$${}", checkpoint_stream(2))).unwrap();
        assert_eq!(
            meta_head.last_revision, again.last_revision,
            "no write when bounded"
        );

        drop_state_streams(&store, 2).unwrap();
        drop_state_streams(&store, 2).unwrap();
        assert!(load_parked(&store, 2).unwrap().parked.is_empty());
        assert_eq!(load_checkpoint(&store, 2).unwrap(), None);
    }
}
