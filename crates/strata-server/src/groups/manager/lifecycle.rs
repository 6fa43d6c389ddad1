//! A group's life: loading every group at start-up, creating or updating one (`PUT`), deleting
//! one, and shutting them all down.
//!
//! The registry mutex serialises creations, updates, deletions and registry compaction.
//!
//! - Load: the state streams of deletions interrupted by a crash are dropped; parked events at
//!   or above the checkpoint are done too (a park is written before the checkpoint that passes
//!   it).
//! - Delete: the deletion is written to the registry first, then the tasks stop and pollers get
//!   404; the state streams are dropped after waiting for a flush in progress, so that nothing
//!   is written after the tombstones. If dropping them fails, the registry still says deleted
//!   and the next start retries.
//! - Shutdown: under the registry lock (no group is created after it), stops every group's
//!   tasks and saves their state. Idempotent; later group requests answer 503.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Mutex, RwLock};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use super::checkpointer::checkpointer;
use super::feeder::feeder;
use super::parked::{read_parked_event, ParkedRead};
use super::timer::timer;
use super::{event_size, not_found, Counters, FlushState, Group, Groups, State};
use crate::error::{Error, Result};
use crate::groups::dispatcher::Dispatcher;
use crate::groups::durable::{self, CheckpointRecord, GroupRecord, ParkedChanges};
use crate::groups::settings::{Ordering, Settings, Source, StartFrom};

impl Groups {
    pub(super) async fn load(&self) -> Result<()> {
        let store = self.inner.store.clone();
        let loaded = durable::blocking(move || {
            let registry = durable::load_registry(&store)?;
            // State streams of deletions interrupted by a crash.
            for generation in &registry.deleted {
                if let Err(e) = durable::drop_state_streams(&store, *generation) {
                    tracing::warn!(error = %e, generation, "could not drop a deleted group's state");
                }
            }
            let mut groups = Vec::new();
            for record in registry.groups.into_values() {
                if let Err(e) = durable::ensure_bounded(&store, record.generation) {
                    tracing::warn!(error = %e, group = %record.name, "could not bound a group's checkpoint stream");
                }
                let checkpoint = durable::load_checkpoint(&store, record.generation)?;
                let parked = durable::load_parked(&store, record.generation)?;
                let mut replay_events = Vec::new();
                for entry in parked.replaying.values() {
                    replay_events.push(read_parked_event(&store, entry)?);
                }
                groups.push((record, checkpoint, parked, replay_events));
            }
            Ok((registry.records, groups))
        })
        .await
        .map_err(|e| self.store_error(e))?;
        let (records, groups) = loaded;
        *self.inner.registry.lock().await = records;
        let mut map = self.inner.groups.write();
        for (record, checkpoint, parked, replay_events) in groups {
            let group = self.build(record, checkpoint, parked, replay_events);
            map.insert(group.name.clone(), group.clone());
        }
        let all: Vec<Arc<Group>> = map.values().cloned().collect();
        drop(map);
        for group in all {
            self.spawn_tasks(&group);
        }
        Ok(())
    }

    /// A group's in-memory state from its durable state.
    fn build(
        &self,
        record: GroupRecord,
        checkpoint: Option<CheckpointRecord>,
        parked: durable::ParkedState,
        replay_events: Vec<ParkedRead>,
    ) -> Arc<Group> {
        let opts = &self.inner.options;
        let checkpoint = checkpoint.unwrap_or(CheckpointRecord {
            checkpoint: record.start,
            done: Vec::new(),
            deliveries: Vec::new(),
        });
        // Parked events at or above the checkpoint are done too (a park is written before the
        // checkpoint that passes it).
        let mut done: Vec<u64> = checkpoint.done_cursors().collect();
        done.extend(parked.parked.keys().copied());
        done.extend(parked.replaying.keys().copied());
        let mut dispatcher = Dispatcher::new(
            checkpoint.checkpoint,
            done,
            record.settings.ordering == Ordering::PerStream,
            opts.window,
            opts.window_bytes,
        );
        dispatcher.restore_deliveries(
            checkpoint
                .deliveries
                .iter()
                .map(|[c, d]| (*c, u32::try_from(*d).unwrap_or(u32::MAX))),
        );
        let mut replaying = BTreeMap::new();
        let mut unsaved = ParkedChanges::default();
        let mut parked_map = parked.parked;
        for (entry, event) in parked.replaying.into_values().zip(replay_events) {
            match event {
                ParkedRead::Event(e) => {
                    let size = event_size(&e);
                    dispatcher.replay(
                        entry.cursor,
                        Arc::from(e.stream.as_str()),
                        Arc::new(e),
                        size,
                    );
                    replaying.insert(entry.cursor, entry);
                }
                ParkedRead::Missing => unsaved.resolved.push(entry.cursor),
                // Damaged since it was replayed: parked again (as it was).
                ParkedRead::Damaged => {
                    unsaved.parked.push(entry.clone());
                    parked_map.insert(entry.cursor, entry);
                }
            }
        }
        let dirty = !unsaved.is_empty();
        Arc::new(Group {
            name: record.name,
            generation: record.generation,
            start: record.start,
            settings: RwLock::new(record.settings),
            state: Mutex::new(State {
                dispatcher,
                parked: parked_map,
                replaying,
                unsaved,
                dirty,
                acks_since_save: 0,
                error: None,
            }),
            wake: Notify::new(),
            waiting_polls: AtomicUsize::new(0),
            room: Notify::new(),
            timer: Notify::new(),
            flush_now: Notify::new(),
            stop: watch::Sender::new(false),
            deleted: AtomicBool::new(false),
            caught_up: AtomicBool::new(false),
            flush: tokio::sync::Mutex::new(FlushState {
                saved: Some(checkpoint),
                parked_records: parked.records,
            }),
            counters: Counters::default(),
            epoch: Instant::now(),
            tasks: Mutex::new(Vec::new()),
        })
    }

    fn spawn_tasks(&self, group: &Arc<Group>) {
        let store = self.inner.store.clone();
        let options = self.inner.options.clone();
        let tasks = vec![
            tokio::spawn(feeder(group.clone(), store.clone(), options.feed_batch)),
            tokio::spawn(timer(group.clone())),
            tokio::spawn(checkpointer(
                group.clone(),
                store,
                options.checkpoint_interval,
            )),
        ];
        group.tasks.lock().extend(tasks);
    }

    /// Creates the group, or checks an existing one against `settings`: identical → `false`
    /// (200), only `ack_timeout_ms` / `max_deliveries` differ → updated, `false` (200);
    /// source, start or ordering differ → 409 `conflict`. `true` when created (201).
    pub(crate) async fn put(&self, name: &str, settings: Settings) -> Result<(bool, Arc<Group>)> {
        self.loaded().await?;
        let mut records = self.inner.registry.lock().await;
        if self.inner.stopped.load(Relaxed) {
            return Err(Error::Unavailable("the server is shutting down".into()));
        }
        let store = self.inner.store.clone();
        let existing = self.inner.groups.read().get(name).cloned();
        if let Some(group) = existing {
            let current = group.settings();
            if current == settings {
                return Ok((false, group));
            }
            if !current.same_identity(&settings) {
                return Err(Error::Conflict(format!(
                    "group {name:?} exists with another source, from or ordering ({}); only ack_timeout_ms and max_deliveries can change: delete the group and create it again to change the others",
                    current.to_api()
                )));
            }
            let record = GroupRecord {
                name: name.to_owned(),
                generation: group.generation,
                settings: settings.clone(),
                start: group.start,
            };
            durable::write_group(&store, &record, false)
                .await
                .map_err(|e| self.store_error(e))?;
            *records += 1;
            *group.settings.write() = settings;
            // A shorter timeout may make a deadline due sooner.
            group.timer.notify_one();
            self.maybe_compact(&mut records).await;
            return Ok((false, group));
        }
        let generation = loop {
            let g = uuid::Uuid::new_v4().as_u64_pair().0;
            if g != 0 && !self.inner.groups.read().values().any(|x| x.generation == g) {
                break g;
            }
        };
        let source = settings.source.clone();
        let from = settings.from;
        let start = durable::blocking(move || {
            durable::init_state_streams(&store, generation)?;
            Ok(match from {
                StartFrom::Start => 0,
                StartFrom::At(n) => n,
                StartFrom::End => match &source {
                    Source::Stream(s) => store.head(s)?.last_revision.map_or(0, |r| r + 1),
                    Source::All | Source::Category(_) => store.next_position(),
                },
            })
        })
        .await
        .map_err(|e| self.store_error(e))?;
        let record = GroupRecord {
            name: name.to_owned(),
            generation,
            settings,
            start,
        };
        durable::write_group(&self.inner.store, &record, true)
            .await
            .map_err(|e| self.store_error(e))?;
        *records += 1;
        let group = self.build(record, None, durable::ParkedState::default(), Vec::new());
        self.inner
            .groups
            .write()
            .insert(name.to_owned(), group.clone());
        self.spawn_tasks(&group);
        self.maybe_compact(&mut records).await;
        Ok((true, group))
    }

    /// Rewrites the registry as a snapshot once it is mostly superseded records.
    async fn maybe_compact(&self, records: &mut u64) {
        let live: Vec<GroupRecord> = self
            .inner
            .groups
            .read()
            .values()
            .map(|g| GroupRecord {
                name: g.name.clone(),
                generation: g.generation,
                settings: g.settings(),
                start: g.start,
            })
            .collect();
        if *records <= 2 * live.len() as u64 + 32 {
            return;
        }
        match durable::compact_registry(&self.inner.store, live).await {
            Ok(n) => *records = n,
            Err(e) => tracing::warn!(error = %e, "could not compact the group registry"),
        }
    }

    /// Deletes the group: its record, its tasks, its state streams. Pollers get 404.
    pub(crate) async fn delete(&self, group: &Arc<Group>) -> Result<()> {
        let mut records = self.inner.registry.lock().await;
        let current = self.inner.groups.read().get(&group.name).cloned();
        match current {
            Some(g) if Arc::ptr_eq(&g, group) => {}
            _ => return Err(not_found(&group.name)),
        }
        durable::write_deleted(&self.inner.store, &group.name, group.generation)
            .await
            .map_err(|e| self.store_error(e))?;
        *records += 1;
        self.inner.groups.write().remove(&group.name);
        group.deleted.store(true, Relaxed);
        group.stop.send_replace(true);
        group.wake.notify_waiters();
        let store = self.inner.store.clone();
        let generation = group.generation;
        // Wait for a flush in progress, so that nothing is written after the tombstones.
        let _flush = group.flush.lock().await;
        if let Err(e) =
            durable::blocking(move || durable::drop_state_streams(&store, generation)).await
        {
            // The registry says deleted: the next start retries dropping the streams.
            tracing::warn!(error = %e, group = %group.name, "could not drop the group's state streams");
        }
        self.maybe_compact(&mut records).await;
        Ok(())
    }

    /// Stops every group's tasks and saves their state (graceful shutdown). Idempotent; later
    /// group requests answer 503.
    pub async fn shutdown(&self) {
        // Under the registry lock: no group is created after the list below is taken.
        let _registry = self.inner.registry.lock().await;
        self.inner.stopped.store(true, Relaxed);
        let groups: Vec<Arc<Group>> = self.inner.groups.read().values().cloned().collect();
        for g in &groups {
            g.stop.send_replace(true);
            g.wake.notify_waiters();
        }
        for g in &groups {
            let tasks: Vec<JoinHandle<()>> = g.tasks.lock().drain(..).collect();
            for t in tasks {
                let _ = t.await;
            }
            if let Err(e) = g.flush(&self.inner.store).await {
                tracing::warn!(error = %e, group = %g.name, "could not save the group's checkpoint at shutdown");
            }
        }
    }
}
