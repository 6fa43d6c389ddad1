//! The registry of projections: their definitions (name, JavaScript source, desired status,
//! generation, incarnation), persisted in the reserved stream `$projections`.
//!
//! Records (JSON events):
//! - `ProjectionDefined` `{"name","source","generation","incarnation","status"}`: creates or
//!   replaces one definition (also for a status change or a reset). A record without
//!   `generation` (written before it existed) has generation = incarnation.
//! - `ProjectionDeleted` `{"name"}`.
//! - A snapshot: one `ProjectionDefined` event per live projection followed by a
//!   `$snapshot` record `{"definitions": <count>, "next_incarnation"}`, in ONE append; the
//!   stream's `truncate_before` then moves to the snapshot's first event. Folding reads the latest
//!   `$snapshot` backward, its definitions, and the records after it. A snapshot is written
//!   after [`COMPACT_AFTER`] records.
//!
//! Generations and incarnations come from one counter for all names, never reused (a deleted
//! and re-created projection must not produce the same emitted-event ids as its predecessor).
//! A new or changed source takes one number for both; a reset takes a new incarnation only, so
//! the emitted-event ids (seeded by the generation) stay the same and re-emits are deduplicated.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use strata_store::{Direction, ExpectedRevision, NewEvent, ReadFrom, Store, StreamMetadata};

/// The registry stream.
pub(crate) const REGISTRY_STREAM: &str = "$projections";
const DEFINED: &str = "ProjectionDefined";
const DELETED: &str = "ProjectionDeleted";
const SNAPSHOT: &str = "$snapshot";
/// Records after the latest snapshot that trigger a new snapshot.
const COMPACT_AFTER: u64 = 32;

/// Whether a projection should run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Desired {
    Running,
    Stopped,
}

/// One projection's definition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Definition {
    pub name: String,
    pub source: String,
    /// Seeds the emitted-event ids; changes with the source only (0 in old records: read as
    /// the incarnation, see [`Definition::normalized`]).
    #[serde(default)]
    pub generation: u64,
    /// Identity of the state; changes with the source and on every reset.
    pub incarnation: u64,
    pub status: Desired,
}

impl Definition {
    /// The definition with a generation (records written before generations had none).
    fn normalized(mut self) -> Definition {
        if self.generation == 0 {
            self.generation = self.incarnation;
        }
        self
    }

    /// The runner identity of this definition.
    pub(crate) fn identity(&self) -> strata_store::projection::ProjectionIdentity {
        strata_store::projection::ProjectionIdentity {
            generation: self.generation,
            incarnation: self.incarnation,
        }
    }

    /// The highest number this definition uses from the registry's counter.
    fn max_number(&self) -> u64 {
        self.generation.max(self.incarnation)
    }
}

#[derive(Serialize, Deserialize)]
struct Deleted {
    name: String,
}

#[derive(Serialize, Deserialize)]
struct SnapshotRecord {
    definitions: u64,
    next_incarnation: u64,
}

/// The folded registry.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    pub definitions: BTreeMap<String, Definition>,
    next_incarnation: u64,
    since_snapshot: u64,
}

fn json<T: Serialize>(v: &T) -> strata_store::Result<Vec<u8>> {
    serde_json::to_vec(v)
        .map_err(|e| strata_store::Error::invalid("registry record", e.to_string()))
}

fn bad(revision: u64, why: impl std::fmt::Display) -> strata_store::Error {
    strata_store::Error::invalid(
        REGISTRY_STREAM,
        format!("record at revision {revision} is unreadable: {why}"),
    )
}

impl Registry {
    /// Folds `$projections`.
    pub(crate) fn load(store: &Store) -> strata_store::Result<Registry> {
        let mut registry = Registry {
            next_incarnation: 1,
            ..Registry::default()
        };
        // The latest snapshot, searching backward.
        let mut from = ReadFrom::End;
        let mut start = 0;
        'search: loop {
            let page = match store.read_stream(REGISTRY_STREAM, from, Direction::Backward, 64) {
                Ok(p) => p,
                Err(
                    strata_store::Error::StreamNotFound { .. }
                    | strata_store::Error::StreamDeleted { .. },
                ) => return Ok(registry),
                Err(e) => return Err(e),
            };
            for e in &page.events {
                if e.event_type == SNAPSHOT {
                    let snap: SnapshotRecord =
                        serde_json::from_slice(&e.data).map_err(|err| bad(e.revision, err))?;
                    registry.next_incarnation = snap.next_incarnation.max(1);
                    start = e
                        .revision
                        .checked_sub(snap.definitions)
                        .ok_or_else(|| bad(e.revision, "more definitions than records"))?;
                    break 'search;
                }
            }
            match page.next {
                Some(n) if !page.end => from = ReadFrom::At(n),
                _ => break,
            }
        }
        let mut from = start;
        loop {
            let page =
                store.read_stream(REGISTRY_STREAM, ReadFrom::At(from), Direction::Forward, 256)?;
            for e in &page.events {
                match e.event_type.as_str() {
                    DEFINED => {
                        let d: Definition = serde_json::from_slice::<Definition>(&e.data)
                            .map_err(|err| bad(e.revision, err))?
                            .normalized();
                        registry.next_incarnation =
                            registry.next_incarnation.max(d.max_number() + 1);
                        registry.definitions.insert(d.name.clone(), d);
                        registry.since_snapshot += 1;
                    }
                    DELETED => {
                        let d: Deleted =
                            serde_json::from_slice(&e.data).map_err(|err| bad(e.revision, err))?;
                        registry.definitions.remove(&d.name);
                        registry.since_snapshot += 1;
                    }
                    SNAPSHOT => registry.since_snapshot = 0,
                    other => return Err(bad(e.revision, format!("unknown type {other:?}"))),
                }
            }
            match page.next {
                Some(n) if !page.end && n > from => from = n,
                _ => break,
            }
        }
        Ok(registry)
    }

    /// A fresh generation or incarnation number (not persisted until a definition using it is).
    pub(crate) fn take_incarnation(&mut self) -> u64 {
        let i = self.next_incarnation;
        self.next_incarnation += 1;
        i
    }

    /// Persists `definition` (then applies it in memory).
    pub(crate) fn put(
        &mut self,
        store: &Store,
        definition: Definition,
    ) -> strata_store::Result<()> {
        store.append(
            REGISTRY_STREAM,
            ExpectedRevision::Any,
            vec![NewEvent::json(DEFINED, json(&definition)?)],
        )?;
        self.next_incarnation = self.next_incarnation.max(definition.max_number() + 1);
        self.definitions.insert(definition.name.clone(), definition);
        self.after_record(store)
    }

    /// Persists the deletion of `name` (then applies it in memory).
    pub(crate) fn delete(&mut self, store: &Store, name: &str) -> strata_store::Result<()> {
        store.append(
            REGISTRY_STREAM,
            ExpectedRevision::Any,
            vec![NewEvent::json(
                DELETED,
                json(&Deleted {
                    name: name.to_owned(),
                })?,
            )],
        )?;
        self.definitions.remove(name);
        self.after_record(store)
    }

    fn after_record(&mut self, store: &Store) -> strata_store::Result<()> {
        self.since_snapshot += 1;
        if self.since_snapshot >= COMPACT_AFTER {
            self.compact(store)?;
        }
        Ok(())
    }

    /// Writes a snapshot and hides everything before it.
    pub(crate) fn compact(&mut self, store: &Store) -> strata_store::Result<()> {
        let mut events = Vec::with_capacity(self.definitions.len() + 1);
        for d in self.definitions.values() {
            events.push(NewEvent::json(DEFINED, json(d)?));
        }
        events.push(NewEvent::json(
            SNAPSHOT,
            json(&SnapshotRecord {
                definitions: self.definitions.len() as u64,
                next_incarnation: self.next_incarnation,
            })?,
        ));
        let result = store.append(REGISTRY_STREAM, ExpectedRevision::Any, events)?;
        store.set_metadata(
            REGISTRY_STREAM,
            StreamMetadata {
                truncate_before: Some(result.first_revision),
                ..StreamMetadata::default()
            },
        )?;
        self.since_snapshot = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_store::{FsyncPolicy, Options};

    fn def(name: &str, incarnation: u64) -> Definition {
        Definition {
            name: name.into(),
            source: format!("fromAll() // {name}"),
            generation: incarnation,
            incarnation,
            status: Desired::Running,
        }
    }

    /// A store (no fsync) in a fresh temporary directory, kept as long as the guard.
    fn temp_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let options = Options {
            fsync: FsyncPolicy::Never,
            ..Options::default()
        };
        Store::open(dir.path(), options)
            .map(|store| (dir, store))
            .unwrap()
    }

    #[test]
    fn records_without_a_generation_read_it_as_the_incarnation() {
        let old = r#"{"name":"p","source":"fromAll()","incarnation":7,"status":"running"}"#;
        let d: Definition = serde_json::from_str::<Definition>(old)
            .unwrap()
            .normalized();
        assert_eq!(d.generation, 7);
        let reset = Definition {
            incarnation: 9,
            ..d.clone()
        };
        assert_eq!(reset.identity().generation, 7);
        assert_eq!(reset.max_number(), 9);
    }

    #[test]
    fn a_reset_keeps_the_generation_across_a_reload() {
        let (_dir, store) = temp_store();
        let mut r = Registry::load(&store).unwrap();
        let n = r.take_incarnation();
        r.put(&store, def("p", n)).unwrap();
        let reset = Definition {
            incarnation: r.take_incarnation(),
            ..def("p", n)
        };
        r.put(&store, reset.clone()).unwrap();
        for _ in 0..COMPACT_AFTER {
            r.put(&store, reset.clone()).unwrap();
        }
        let again = Registry::load(&store).unwrap();
        assert_eq!(again.definitions["p"], reset);
        assert_eq!(again.definitions["p"].generation, n);
        assert!(again.next_incarnation > reset.incarnation);
    }

    #[test]
    fn folds_records_and_snapshots() {
        let (_dir, store) = temp_store();
        let mut r = Registry::load(&store).unwrap();
        assert!(r.definitions.is_empty());
        let mut expected = BTreeMap::new();
        for i in 0..80u64 {
            let name = format!("p{}", i % 7);
            if i % 5 == 4 {
                r.delete(&store, &name).unwrap();
                expected.remove(&name);
            } else {
                let inc = r.take_incarnation();
                let mut d = def(&name, inc);
                if i % 3 == 0 {
                    d.status = Desired::Stopped;
                }
                r.put(&store, d.clone()).unwrap();
                expected.insert(name, d);
            }
            let again = Registry::load(&store).unwrap();
            assert_eq!(again.definitions, expected, "after record {i}");
            assert_eq!(again.next_incarnation, r.next_incarnation);
        }
        // Compaction keeps the readable history short.
        let page = store
            .read_stream(REGISTRY_STREAM, ReadFrom::Start, Direction::Forward, 1000)
            .unwrap();
        assert!(page.events.len() < 50, "{}", page.events.len());
    }
}
