//! The group manager: the live groups, their background tasks, and every operation the HTTP
//! layer performs on them.
//!
//! Each group has one [`Dispatcher`] behind a mutex (held only for in-memory steps, never across
//! an await) and three tasks:
//!
//! - the *feeder* keeps the window filled from the store through a [`LiveFeed`] (the server's
//!   one live-read loop); when caught up it waits for the writer's commit notification, when
//!   the window is full it waits until an ack, nack or timeout frees room — it never sleeps on
//!   a timer;
//! - the *timer* sleeps until the earliest ack deadline and takes expired events back;
//! - the *checkpointer* saves the checkpoint every `checkpoint_interval`, or as soon as
//!   `checkpoint_acks` acks accumulated, and only when something changed.
//!
//! Long polls wait on the group's [`Notify`], woken when the feeder adds events, when an
//! ack/nack/timeout makes events eligible, when the group is deleted, and on shutdown; the
//! `waiting_polls` gauge (`GET /groups/{group}`, `/metrics`) counts those waiting.
//!
//! Durability: parks are written before any checkpoint that passes them (a parked event is
//! never lost), a nack with `park` and a replay answer only once their record is durable, and
//! acks are durable with the next checkpoint (at most one interval or `checkpoint_acks` acks
//! are redelivered after a crash).

use std::collections::BTreeMap;
use std::sync::atomic::{
    AtomicBool, AtomicU64, AtomicUsize, Ordering::AcqRel, Ordering::Acquire, Ordering::Relaxed,
    Ordering::Release,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use strata_store::{AllFilter, Health, RecordedEvent, Store};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use super::ack_id::AckId;
use super::dispatcher::{
    AckCheck, AckOutcome, Delivery, Dispatcher, NackAction, NackOutcome, Parked,
};
use super::durable::{self, CheckpointRecord, GroupRecord, ParkedChanges, ParkedEntry};
use super::settings::{Ordering, Settings, Source, StartFrom};
use crate::error::{Error, Result};
use crate::live_feed::{FeedError, LiveFeed};

/// Tuning of the group engine (not part of a group's settings).
#[derive(Clone, Debug)]
pub struct GroupOptions {
    /// Most events per group in memory: pending (buffered or in flight) plus done ones above
    /// the checkpoint. Default 10,000.
    pub window: usize,
    /// Most payload bytes per group window (approximate). Default 64 MiB.
    pub window_bytes: usize,
    /// The checkpoint is saved at least this often while acks happen. Default 1 s.
    pub checkpoint_interval: Duration,
    /// ... or as soon as this many acks accumulated. Default 1,000.
    pub checkpoint_acks: u64,
    /// Events the feeder reads per store call. Default 500.
    pub feed_batch: usize,
}

impl Default for GroupOptions {
    fn default() -> Self {
        GroupOptions {
            window: 10_000,
            window_bytes: 64 * 1024 * 1024,
            checkpoint_interval: Duration::from_secs(1),
            checkpoint_acks: 1_000,
            feed_batch: 500,
        }
    }
}

/// Counters of one group, for `/metrics`.
#[derive(Default)]
pub(crate) struct Counters {
    pub deliveries: AtomicU64,
    pub redeliveries: AtomicU64,
    pub acks: AtomicU64,
    pub nacks: AtomicU64,
    pub parks: AtomicU64,
}

/// What `GET /groups/{group}` shows.
pub(crate) struct GroupView {
    pub name: String,
    pub settings: Settings,
    pub start: u64,
    pub checkpoint: u64,
    pub in_flight: usize,
    pub buffered: usize,
    pub parked: usize,
    pub replaying: usize,
    pub lag: u64,
    pub error: Option<String>,
    /// Long polls parked waiting for events right now.
    pub waiting_polls: usize,
    pub counters: [u64; 5],
}

/// One message of a poll answer.
pub(crate) struct Message {
    pub ack_id: String,
    pub delivery: u32,
    pub event: Arc<RecordedEvent>,
}

/// The answer of an ack or nack.
pub(crate) struct Settled {
    /// Ack ids that took effect.
    pub applied: usize,
    /// Ack ids that were no-ops (already done, or a stale delivery for a nack).
    pub ignored: usize,
}

/// Mutable state of one group, behind its mutex.
struct State {
    dispatcher: Dispatcher<Arc<RecordedEvent>>,
    parked: BTreeMap<u64, ParkedEntry>,
    replaying: BTreeMap<u64, ParkedEntry>,
    unsaved: ParkedChanges,
    /// Something became done since the last saved checkpoint.
    dirty: bool,
    acks_since_save: u64,
    /// The feeder's last error (e.g. the source stream is deleted), cleared when it reads again.
    error: Option<String>,
}

/// Serialises writes of one group's state; what was last written.
struct FlushState {
    saved: Option<CheckpointRecord>,
    parked_records: u64,
}

/// One live consumer group.
pub(crate) struct Group {
    name: String,
    generation: u64,
    start: u64,
    settings: RwLock<Settings>,
    state: Mutex<State>,
    /// Long polls wait here.
    wake: Notify,
    /// Long polls parked on `wake` right now: counted only once registered for its next
    /// notification (so anything that wakes pollers from then on reaches them), uncounted when
    /// they stop waiting for any reason (woken, `wait_ms` over, shutdown, client gone).
    waiting_polls: AtomicUsize,
    /// The feeder waits here for room in the window.
    room: Notify,
    /// The timer waits here for new deadlines.
    timer: Notify,
    /// The checkpointer waits here for "enough acks".
    flush_now: Notify,
    stop: watch::Sender<bool>,
    deleted: AtomicBool,
    /// The feeder has read as far as it could (caught up, window full, or source unreadable)
    /// at least once since the group was loaded: a cursor it has not fed is not one of ours.
    caught_up: AtomicBool,
    flush: tokio::sync::Mutex<FlushState>,
    counters: Counters,
    epoch: Instant,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Group {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn settings(&self) -> Settings {
        self.settings.read().clone()
    }

    /// The source cursor of an event.
    fn cursor_of(&self, e: &RecordedEvent) -> u64 {
        match self.settings.read().source {
            Source::Stream(_) => e.revision,
            Source::All | Source::Category(_) => e.position,
        }
    }

    async fn stopped(&self) {
        let mut rx = self.stop.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    fn is_stopping(&self) -> bool {
        *self.stop.borrow()
    }

    /// The feeder read as far as it could: wakes acks waiting for it (and pollers).
    fn mark_caught_up(&self) {
        if !self.caught_up.swap(true, AcqRel) {
            self.wake.notify_waiters();
        }
    }

    /// After a restart the window is refilled from the checkpoint: an ack id handed out before
    /// the restart may name an event the feeder has not read again yet. Waits (up to
    /// [`FEED_WAIT`]) until the feeder read past every such id of this incarnation, or caught up.
    async fn wait_fed(&self, ids: &[String]) {
        if self.caught_up.load(Acquire) {
            return;
        }
        let deadline = tokio::time::Instant::now() + FEED_WAIT;
        loop {
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.caught_up.load(Acquire) || self.is_stopping() {
                return;
            }
            let ahead = {
                let st = self.state.lock();
                let fed_to = st.dispatcher.fed_to();
                ids.iter()
                    .filter_map(|raw| AckId::parse(raw))
                    .any(|id| id.generation == self.generation && id.cursor >= fed_to)
            };
            if !ahead {
                return;
            }
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(deadline) => return,
            }
        }
    }

    /// Records parked events (persisted by the next flush) and counts them.
    fn record_parks(&self, st: &mut State, parked: Vec<Parked<Arc<RecordedEvent>>>) {
        if parked.is_empty() {
            return;
        }
        let now = now_micros();
        for p in parked {
            self.counters.parks.fetch_add(1, Relaxed);
            st.replaying.remove(&p.cursor);
            let entry = ParkedEntry {
                cursor: p.cursor,
                stream: p.payload.stream.clone(),
                revision: p.payload.revision,
                position: p.payload.position,
                event_id: p.payload.id,
                event_type: p.payload.event_type.clone(),
                delivery: p.delivery,
                reason: p.reason.as_str().to_owned(),
                parked_at: now,
            };
            st.parked.insert(p.cursor, entry.clone());
            st.unsaved.parked.push(entry);
        }
        st.dirty = true;
        self.flush_now.notify_one();
    }

    /// Takes back expired deliveries; wakes pollers when something became eligible.
    fn expire(&self, st: &mut State) {
        let max = self.settings.read().max_deliveries;
        let (requeued, parked) = st.dispatcher.expire(self.now_ms(), max);
        let parked_any = !parked.is_empty();
        self.record_parks(st, parked);
        if requeued > 0 || parked_any {
            self.wake.notify_waiters();
            self.room.notify_one();
        }
    }

    /// Writes unsaved parks, then the checkpoint if it changed. Parks are durable before a
    /// checkpoint that passes them is written.
    async fn flush(&self, store: &Store) -> strata_store::Result<()> {
        let mut fs = self.flush.lock().await;
        self.flush_locked(store, &mut fs).await
    }

    async fn flush_locked(&self, store: &Store, fs: &mut FlushState) -> strata_store::Result<()> {
        if self.deleted.load(Relaxed) {
            return Ok(());
        }
        let (changes, record) = {
            let mut st = self.state.lock();
            let changes = std::mem::take(&mut st.unsaved);
            let record = st.dirty.then(|| {
                let mut r =
                    CheckpointRecord::new(st.dispatcher.checkpoint(), st.dispatcher.done_above());
                r.deliveries = st
                    .dispatcher
                    .deliveries_from(2)
                    .map(|(c, d)| [c, u64::from(d)])
                    .collect();
                r
            });
            st.dirty = false;
            st.acks_since_save = 0;
            (changes, record)
        };
        if !changes.is_empty() {
            if let Err(e) = durable::write_parked(store, self.generation, &changes).await {
                let mut st = self.state.lock();
                let later = std::mem::replace(&mut st.unsaved, changes);
                st.unsaved.parked.extend(later.parked);
                st.unsaved.replayed.extend(later.replayed);
                st.unsaved.resolved.extend(later.resolved);
                st.dirty = true;
                return Err(e);
            }
            fs.parked_records += changes.records();
        }
        if let Some(record) = record {
            if fs.saved.as_ref() != Some(&record) {
                if let Err(e) = durable::write_checkpoint(store, self.generation, &record).await {
                    self.state.lock().dirty = true;
                    return Err(e);
                }
                fs.saved = Some(record);
            }
        }
        // Compact the parked stream once it is mostly superseded records.
        let (parked, replaying) = {
            let st = self.state.lock();
            (st.parked.len() as u64, st.replaying.len() as u64)
        };
        if fs.parked_records > 2 * (parked + replaying) + 64 {
            let (parked, replaying) = {
                let st = self.state.lock();
                (
                    st.parked.values().cloned().collect(),
                    st.replaying.values().cloned().collect(),
                )
            };
            fs.parked_records =
                durable::compact_parked(store, self.generation, parked, replaying).await?;
        }
        Ok(())
    }
}

fn now_micros() -> i64 {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        Err(_) => 0,
    }
}

/// The manager of every group. Cheap to clone.
#[derive(Clone)]
pub struct Groups {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    options: GroupOptions,
    loaded: tokio::sync::OnceCell<()>,
    groups: RwLock<BTreeMap<String, Arc<Group>>>,
    /// Serialises creations, updates, deletions and registry compaction; holds the number of
    /// records in the live part of the registry.
    registry: tokio::sync::Mutex<u64>,
    stopped: AtomicBool,
}

impl Groups {
    /// A manager over `store`; its groups are loaded on first use (or by [`Groups::start`]).
    pub fn new(store: Store, options: GroupOptions) -> Self {
        Groups {
            inner: Arc::new(Inner {
                store,
                options,
                loaded: tokio::sync::OnceCell::new(),
                groups: RwLock::new(BTreeMap::new()),
                registry: tokio::sync::Mutex::new(0),
                stopped: AtomicBool::new(false),
            }),
        }
    }

    /// The engine's tuning.
    pub fn options(&self) -> &GroupOptions {
        &self.inner.options
    }

    /// Loads the groups from the store and starts their tasks (once).
    pub async fn start(&self) -> Result<()> {
        self.loaded().await
    }

    async fn loaded(&self) -> Result<()> {
        if self.inner.stopped.load(Relaxed) {
            return Err(Error::Unavailable("the server is shutting down".into()));
        }
        self.inner
            .loaded
            .get_or_try_init(|| self.load())
            .await
            .map(|_| ())
    }

    fn store_error(&self, e: strata_store::Error) -> Error {
        match Error::from(e) {
            Error::Internal(message) if self.inner.store.health() != Health::Ok => {
                Error::Unavailable(message)
            }
            other => other,
        }
    }

    async fn load(&self) -> Result<()> {
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
        replay_events: Vec<Option<RecordedEvent>>,
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
        for (entry, event) in parked.replaying.into_values().zip(replay_events) {
            match event {
                Some(e) => {
                    let size = event_size(&e);
                    dispatcher.replay(
                        entry.cursor,
                        Arc::from(e.stream.as_str()),
                        Arc::new(e),
                        size,
                    );
                    replaying.insert(entry.cursor, entry);
                }
                None => unsaved.resolved.push(entry.cursor),
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
                parked: parked.parked,
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

    /// The live group `name`, or 404.
    pub(crate) async fn get(&self, name: &str) -> Result<Arc<Group>> {
        self.loaded().await?;
        self.inner
            .groups
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| not_found(name))
    }

    /// Every live group, by name.
    pub(crate) async fn all(&self) -> Result<Vec<Arc<Group>>> {
        self.loaded().await?;
        Ok(self.inner.groups.read().values().cloned().collect())
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

    /// Hands out up to `max` events, waiting up to `wait` for one; returns early (empty) when
    /// `cancel` resolves (server shutdown).
    pub(crate) async fn poll(
        &self,
        group: &Arc<Group>,
        max: usize,
        wait: Duration,
        cancel: impl std::future::Future<Output = ()>,
    ) -> Result<Vec<Message>> {
        let deadline = tokio::time::Instant::now() + wait;
        tokio::pin!(cancel);
        loop {
            if group.deleted.load(Relaxed) {
                return Err(not_found(&group.name));
            }
            let notified = group.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let got = {
                let mut st = group.state.lock();
                group.expire(&mut st);
                let timeout = group.settings.read().ack_timeout_ms;
                let now = group.now_ms();
                let got = st.dispatcher.poll(max, now, timeout);
                // Redelivery counts are saved with the checkpoint (max_deliveries holds
                // across restarts).
                if got.iter().any(|d| d.delivery >= 2) {
                    st.dirty = true;
                }
                got
            };
            if !got.is_empty() {
                group.timer.notify_one();
                return Ok(self.messages(group, got));
            }
            if group.is_stopping() {
                return Ok(Vec::new());
            }
            let _waiting = WaitingPoll::enter(&group.waiting_polls);
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(deadline) => return Ok(Vec::new()),
                () = &mut cancel => return Ok(Vec::new()),
            }
        }
    }

    fn messages(&self, group: &Group, got: Vec<Delivery<Arc<RecordedEvent>>>) -> Vec<Message> {
        group
            .counters
            .deliveries
            .fetch_add(got.len() as u64, Relaxed);
        let redeliveries = got.iter().filter(|d| d.delivery > 1).count();
        group
            .counters
            .redeliveries
            .fetch_add(redeliveries as u64, Relaxed);
        got.into_iter()
            .map(|d| Message {
                ack_id: AckId {
                    generation: group.generation,
                    cursor: d.cursor,
                    delivery: d.delivery,
                }
                .encode(),
                delivery: d.delivery,
                event: d.payload,
            })
            .collect()
    }

    /// Parses ack ids and checks them against the window: all known, or 400 listing the
    /// unknown ones.
    fn check_ids(group: &Group, st: &State, ids: &[String]) -> Result<Vec<AckId>> {
        let mut parsed = Vec::with_capacity(ids.len());
        let mut unknown = Vec::new();
        for raw in ids {
            match AckId::parse(raw) {
                Some(id)
                    if id.generation == group.generation
                        && id.delivery > 0
                        && st.dispatcher.check(id.cursor) != AckCheck::Unknown =>
                {
                    parsed.push(id)
                }
                _ => unknown.push(raw.clone()),
            }
        }
        if unknown.is_empty() {
            Ok(parsed)
        } else {
            Err(Error::UnknownAckIds {
                message: format!(
                    "{} ack id(s) are unknown to group {:?} (malformed, from another incarnation of the group, or naming no delivered event); nothing was acked",
                    unknown.len(),
                    group.name
                ),
                ids: unknown,
            })
        }
    }

    /// Acks: each id names an event, which is done from now on. All-or-nothing.
    pub(crate) async fn ack(&self, group: &Arc<Group>, ids: &[String]) -> Result<Settled> {
        group.wait_fed(ids).await;
        if group.deleted.load(Relaxed) {
            return Err(not_found(&group.name));
        }
        let settled = {
            let mut st = group.state.lock();
            let parsed = Self::check_ids(group, &st, ids)?;
            let mut applied = 0;
            for id in &parsed {
                if let AckOutcome::Acked { replay } = st.dispatcher.ack(id.cursor) {
                    applied += 1;
                    if replay {
                        st.replaying.remove(&id.cursor);
                        st.unsaved.resolved.push(id.cursor);
                    }
                }
            }
            if applied > 0 {
                st.dirty = true;
                st.acks_since_save += applied as u64;
                if st.acks_since_save >= self.inner.options.checkpoint_acks {
                    group.flush_now.notify_one();
                }
            }
            Settled {
                applied,
                ignored: parsed.len() - applied,
            }
        };
        group
            .counters
            .acks
            .fetch_add(settled.applied as u64, Relaxed);
        if settled.applied > 0 {
            group.wake.notify_waiters();
            group.room.notify_one();
        }
        Ok(settled)
    }

    /// Nacks: applies to the current in-flight delivery only. A park is durable before this
    /// returns.
    pub(crate) async fn nack(
        &self,
        group: &Arc<Group>,
        ids: &[String],
        action: NackAction,
    ) -> Result<Settled> {
        group.wait_fed(ids).await;
        if group.deleted.load(Relaxed) {
            return Err(not_found(&group.name));
        }
        let (settled, parked_any) = {
            let mut st = group.state.lock();
            let parsed = Self::check_ids(group, &st, ids)?;
            let max = group.settings.read().max_deliveries;
            let mut applied = 0;
            let mut parked = Vec::new();
            for id in &parsed {
                if let NackOutcome::Applied(p) =
                    st.dispatcher.nack(id.cursor, id.delivery, action, max)
                {
                    applied += 1;
                    if action == NackAction::Skip {
                        if st.replaying.remove(&id.cursor).is_some() {
                            st.unsaved.resolved.push(id.cursor);
                        }
                        st.dirty = true;
                    }
                    parked.extend(p);
                }
            }
            let parked_any = !parked.is_empty();
            group.record_parks(&mut st, parked);
            (
                Settled {
                    applied,
                    ignored: parsed.len() - applied,
                },
                parked_any,
            )
        };
        group
            .counters
            .nacks
            .fetch_add(settled.applied as u64, Relaxed);
        if settled.applied > 0 {
            group.wake.notify_waiters();
            group.room.notify_one();
        }
        if parked_any {
            group
                .flush(&self.inner.store)
                .await
                .map_err(|e| self.store_error(e))?;
        }
        Ok(settled)
    }

    /// Parked events after `after`, at most `max`, and the cursor to continue after.
    pub(crate) fn parked(
        &self,
        group: &Group,
        after: Option<u64>,
        max: usize,
    ) -> (Vec<ParkedEntry>, Option<u64>) {
        let st = group.state.lock();
        let range = match after {
            Some(a) => st.parked.range(a.saturating_add(1)..),
            None => st.parked.range(..),
        };
        let mut out: Vec<ParkedEntry> = range.take(max + 1).map(|(_, p)| p.clone()).collect();
        let next = if out.len() > max {
            out.truncate(max);
            out.last().map(|p| p.cursor)
        } else {
            None
        };
        (out, next)
    }

    /// Re-queues up to `max` parked events (oldest first) with their delivery count reset.
    /// Returns (replayed, events that no longer exist and were dropped, parked remaining).
    pub(crate) async fn replay(
        &self,
        group: &Arc<Group>,
        max: usize,
    ) -> Result<(usize, usize, usize)> {
        let store = self.inner.store.clone();
        let mut fs = group.flush.lock().await;
        if group.deleted.load(Relaxed) {
            return Err(not_found(&group.name));
        }
        // Earlier parks first, so that the Replayed record follows their Parked records.
        group
            .flush_locked(&store, &mut fs)
            .await
            .map_err(|e| self.store_error(e))?;
        // Replayed events wait in the window: together they never exceed it, by count or by
        // bytes, however often a replay is asked for before they are consumed.
        let opts = &self.inner.options;
        let (mut entries, bytes_left) = {
            let st = group.state.lock();
            let (count, bytes) = st.dispatcher.replays();
            let room = if bytes >= opts.window_bytes {
                0
            } else {
                opts.window.saturating_sub(count)
            };
            let entries: Vec<ParkedEntry> =
                st.parked.values().take(max.min(room)).cloned().collect();
            if entries.is_empty() {
                return Ok((0, 0, st.parked.len()));
            }
            (entries, opts.window_bytes.saturating_sub(bytes))
        };
        let read_store = store.clone();
        let read_entries = entries.clone();
        let events = durable::blocking(move || {
            let mut events = Vec::with_capacity(read_entries.len());
            let (mut bytes, mut taken) = (0, 0);
            for entry in &read_entries {
                let event = read_parked_event(&read_store, entry)?;
                if let Some(e) = &event {
                    bytes += event_size(e);
                    if bytes > bytes_left && taken > 0 {
                        break;
                    }
                    taken += 1;
                }
                events.push(event);
            }
            Ok(events)
        })
        .await
        .map_err(|e| self.store_error(e))?;
        entries.truncate(events.len());
        let mut changes = ParkedChanges::default();
        for (entry, event) in entries.iter().zip(&events) {
            if event.is_some() {
                changes.replayed.push(entry.cursor);
            } else {
                changes.resolved.push(entry.cursor);
            }
        }
        durable::write_parked(&store, group.generation, &changes)
            .await
            .map_err(|e| self.store_error(e))?;
        fs.parked_records += changes.records();
        let remaining = {
            let mut st = group.state.lock();
            for (entry, event) in entries.into_iter().zip(events) {
                st.parked.remove(&entry.cursor);
                if let Some(e) = event {
                    let size = event_size(&e);
                    st.dispatcher.replay(
                        entry.cursor,
                        Arc::from(e.stream.as_str()),
                        Arc::new(e),
                        size,
                    );
                    st.replaying.insert(entry.cursor, entry);
                }
            }
            st.parked.len()
        };
        group.wake.notify_waiters();
        Ok((changes.replayed.len(), changes.resolved.len(), remaining))
    }

    /// What `GET /groups/{group}` shows, with the lag against the source's head now.
    pub(crate) async fn describe(&self, groups: Vec<Arc<Group>>) -> Result<Vec<GroupView>> {
        let store = self.inner.store.clone();
        let sources: Vec<Source> = groups.iter().map(|g| g.settings().source).collect();
        let heads = durable::blocking(move || {
            let next = store.next_position();
            sources
                .iter()
                .map(|s| match s {
                    Source::Stream(name) => {
                        Ok(store.head(name)?.last_revision.map_or(0, |r| r + 1))
                    }
                    Source::All | Source::Category(_) => Ok(next),
                })
                .collect::<strata_store::Result<Vec<u64>>>()
        })
        .await
        .map_err(|e| self.store_error(e))?;
        Ok(groups
            .iter()
            .zip(heads)
            .map(|(g, head)| {
                let st = g.state.lock();
                let checkpoint = st.dispatcher.checkpoint();
                let c = &g.counters;
                GroupView {
                    name: g.name.clone(),
                    settings: g.settings(),
                    start: g.start,
                    checkpoint,
                    in_flight: st.dispatcher.in_flight(),
                    buffered: st.dispatcher.pending() - st.dispatcher.in_flight(),
                    parked: st.parked.len(),
                    replaying: st.replaying.len(),
                    lag: head.saturating_sub(checkpoint),
                    error: st.error.clone(),
                    waiting_polls: g.waiting_polls.load(Acquire),
                    counters: [
                        c.deliveries.load(Relaxed),
                        c.acks.load(Relaxed),
                        c.nacks.load(Relaxed),
                        c.parks.load(Relaxed),
                        c.redeliveries.load(Relaxed),
                    ],
                }
            })
            .collect())
    }

    /// The `/metrics` series of every live group (none if the groups cannot be loaded).
    pub(crate) async fn render_metrics(&self, out: &mut String) {
        let Ok(groups) = self.all().await else {
            return;
        };
        let views = self.describe(groups).await.unwrap_or_default();
        let samples: Vec<crate::metrics::GroupSample> = views
            .into_iter()
            .map(|v| crate::metrics::GroupSample {
                name: v.name,
                lag: v.lag,
                checkpoint: v.checkpoint,
                in_flight: v.in_flight as u64,
                parked: v.parked as u64,
                waiting_polls: v.waiting_polls as u64,
                deliveries: v.counters[0],
                acks: v.counters[1],
                nacks: v.counters[2],
                parks: v.counters[3],
                redeliveries: v.counters[4],
            })
            .collect();
        crate::metrics::render_groups(out, &samples);
    }
}

impl Group {
    /// The group's source.
    pub(crate) fn source(&self) -> Source {
        self.settings.read().source.clone()
    }
}

/// Counts a long poll in [`Group::waiting_polls`] while it lives (also when the poll's future
/// is dropped mid-wait, e.g. its client went away). Entered after the poll registered for the
/// group's wake-up, with `Release`: whoever reads the count with `Acquire` and then wakes the
/// group reaches that poll.
struct WaitingPoll<'a>(&'a AtomicUsize);

impl<'a> WaitingPoll<'a> {
    fn enter(gauge: &'a AtomicUsize) -> Self {
        gauge.fetch_add(1, Release);
        WaitingPoll(gauge)
    }
}

impl Drop for WaitingPoll<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Release);
    }
}

/// Longest an ack or nack waits for the feeder to read its events again after a restart.
const FEED_WAIT: Duration = Duration::from_secs(10);

fn not_found(name: &str) -> Error {
    Error::NotFound(format!("consumer group {name:?} not found"))
}

/// Approximate memory of an event in the window.
fn event_size(e: &RecordedEvent) -> usize {
    e.data.len() + e.metadata.len() + e.stream.len() + e.event_type.len() + 128
}

/// The event a parked entry names, if it is still readable (`None` when its stream was
/// deleted or truncated since).
fn read_parked_event(
    store: &Store,
    entry: &ParkedEntry,
) -> strata_store::Result<Option<RecordedEvent>> {
    match store.read_event(&entry.stream, entry.revision) {
        Ok(Some(e)) if e.id == entry.event_id => Ok(Some(e)),
        Ok(_)
        | Err(strata_store::Error::StreamNotFound { .. })
        | Err(strata_store::Error::StreamDeleted { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The feeder task: keeps the window filled from the store (module docs). When the store is
/// closed under it, it stops the group's other tasks too, so that they release the store.
async fn feeder(group: Arc<Group>, store: Store, batch: usize) {
    feed(&group, store, batch).await;
    group.stop.send_replace(true);
    group.mark_caught_up();
}

async fn feed(group: &Arc<Group>, store: Store, batch: usize) {
    let start = group.state.lock().dispatcher.fed_to();
    let subscription = match group.source() {
        Source::All => store.subscribe_all(start, AllFilter::default()),
        Source::Category(c) => store.subscribe_all(
            start,
            AllFilter {
                category: Some(c),
                ..AllFilter::default()
            },
        ),
        Source::Stream(s) => store.subscribe_stream(&s, start),
    };
    // A store read is bounded by a count only: the largest event of the last reads bounds it by
    // the window's byte budget too (before any, the largest event the store accepts). The hint
    // halves with each read of smaller events, so one large event does not slow the group's
    // reads for good.
    let limits = &store.options().limits;
    let largest =
        limits.max_event_size + limits.max_stream_name_len + limits.max_event_type_len + 128;
    let mut size_hint: Option<usize> = None;
    let mut feed = LiveFeed::new(subscription);
    loop {
        if group.is_stopping() {
            return;
        }
        let room_wait = group.room.notified();
        let (room, byte_room) = {
            let st = group.state.lock();
            (st.dispatcher.room(), st.dispatcher.byte_room())
        };
        if room == 0 {
            group.mark_caught_up();
            tokio::select! {
                () = room_wait => continue,
                () = group.stopped() => return,
            }
        }
        let by_bytes = (byte_room / size_hint.unwrap_or(largest).max(1)).max(1);
        let want = room.min(batch).min(by_bytes).max(1);
        // While caught up, the dispatcher learns how far the source was examined.
        let caught_up = |cursor: u64| {
            {
                let mut st = group.state.lock();
                st.dispatcher.advance_fed(cursor);
                st.error = None;
            }
            group.mark_caught_up();
        };
        let batch = tokio::select! {
            batch = feed.next_batch(want, caught_up) => batch,
            () = group.stopped() => return,
        };
        match batch {
            Ok(events) => {
                {
                    let mut st = group.state.lock();
                    st.error = None;
                    let mut hint = size_hint.map_or(0, |h| h / 2);
                    for e in events {
                        let c = group.cursor_of(&e);
                        let size = event_size(&e);
                        hint = hint.max(size);
                        let stream: Arc<str> = Arc::from(e.stream.as_str());
                        st.dispatcher.feed(c, stream, Arc::new(e), size);
                    }
                    st.dispatcher.advance_fed(feed.cursor());
                    size_hint = Some(hint);
                }
                group.wake.notify_waiters();
            }
            Err(FeedError::Lost | FeedError::Store(strata_store::Error::Closed)) => return,
            Err(FeedError::Store(e)) => {
                let message = e.to_string();
                {
                    let mut st = group.state.lock();
                    // Logged once per distinct error, not on every commit that retries it.
                    if st.error.as_deref() != Some(message.as_str()) {
                        tracing::warn!(error = %message, group = %group.name, "consumer group cannot read its source");
                        st.error = Some(message);
                    }
                }
                group.mark_caught_up();
                // A later commit (the stream re-created, ...) may fix it: wait for one.
                tokio::select! {
                    woke = feed.wait() => if woke.is_err() { return },
                    () = group.stopped() => return,
                }
            }
        }
    }
}

/// The timer task: takes expired deliveries back at the earliest deadline.
async fn timer(group: Arc<Group>) {
    loop {
        let changed = group.timer.notified();
        let next = group.state.lock().dispatcher.next_deadline();
        match next {
            Some(ms) => {
                let at = group.epoch + Duration::from_millis(ms);
                tokio::select! {
                    () = tokio::time::sleep_until(at.into()) => {
                        let mut st = group.state.lock();
                        group.expire(&mut st);
                    }
                    () = changed => {}
                    () = group.stopped() => return,
                }
            }
            None => {
                tokio::select! {
                    () = changed => {}
                    () = group.stopped() => return,
                }
            }
        }
    }
}

/// The checkpointer task: saves state every interval or after enough acks.
async fn checkpointer(group: Arc<Group>, store: Store, interval: Duration) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = group.flush_now.notified() => {}
            () = group.stopped() => return,
        }
        if let Err(e) = group.flush(&store).await {
            tracing::warn!(error = %e, group = %group.name, "could not save the consumer group's state");
        }
    }
}
