//! The group manager: the live groups, their background tasks, and every operation the HTTP
//! layer performs on them.
//!
//! Each group has one [`Dispatcher`] behind a mutex (held only for in-memory steps, never across
//! an await) and three tasks:
//!
//! - the *feeder* keeps the window filled from the store through a
//!   [`LiveFeed`](crate::live_feed::LiveFeed) (the server's one live-read loop); when caught up
//!   it waits for the writer's commit notification, when the window is full it waits until an
//!   ack, nack or timeout frees room — it never sleeps on a timer;
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
//!
//! | module | what |
//! |---|---|
//! | `mod.rs` | the types ([`GroupOptions`], [`Groups`], [`Group`] and its state), lookups |
//! | `lifecycle` | loading at start-up, create/update, delete, shutdown; the registry lock |
//! | `delivery` | poll, ack, nack; the `waiting_polls` gauge |
//! | `parked` | recording, listing and replaying parked events |
//! | `feeder` | the feeder task |
//! | `timer` | the timer task and the expiry of deliveries |
//! | `checkpointer` | the checkpointer task and the flush of parks and checkpoint |
//! | `view` | what `GET /groups/{group}` and `/metrics` show |

mod checkpointer;
mod delivery;
mod feeder;
mod lifecycle;
mod parked;
mod timer;
mod view;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::AcqRel, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use strata_store::{RecordedEvent, Store};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use super::dispatcher::Dispatcher;
use super::durable::{CheckpointRecord, ParkedChanges, ParkedEntry};
use super::settings::{Settings, Source};
use crate::error::{Error, Result};

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
}

impl Group {
    /// The group's source.
    pub(crate) fn source(&self) -> Source {
        self.settings.read().source.clone()
    }

    /// The group's name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The group's settings now.
    pub(crate) fn settings_now(&self) -> Settings {
        self.settings()
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
        Error::from_store(e, &self.inner.store.health())
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
}

fn not_found(name: &str) -> Error {
    Error::NotFound(format!("consumer group {name:?} not found"))
}

/// Approximate memory of an event in the window.
fn event_size(e: &RecordedEvent) -> usize {
    e.data.len() + e.metadata.len() + e.stream.len() + e.event_type.len() + 128
}
