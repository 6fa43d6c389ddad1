//! The runner: one projection folded continuously over its source in its own thread, with its
//! state and position checkpointed together in the store.
//!
//! Invariants:
//! - The state served by [`ProjectionRunner::state`] and the cursor it reflects are updated
//!   together after each batch, from the runner thread only; readers never wait for user code.
//! - Emitted events of a batch are appended before the checkpoint covering that batch (see
//!   [`super::emit`]); a checkpoint is one atomic append (see [`super::checkpoint`]). So after a
//!   crash the runner resumes from the last checkpoint, re-runs the events after it, re-emits
//!   nothing twice, and ends with the same state as a rebuild from scratch.
//! - A failure of user code, or a panic of it, faults this projection only, at the event that
//!   caused it (`Fault::position`) with the progress before that event kept. That includes a
//!   state that cannot be serialised: states are serialised once per batch, and when that fails
//!   the batch is redone, checking each event's state, to find the event.
//! - States are served as their compact JSON text (`serde_json`'s encoding of the engine's
//!   state), made once per batch for the states the batch changed. The served states' memory
//!   ([`served_bytes`]: text, key and map entry) is reported to the engine after every batch
//!   ([`ProjectionEngine::set_external_bytes`]), so that it counts against the engine's memory
//!   limit.
//! - Each runner has its own wake-up: a stop wakes its thread only, not the store's other
//!   waiters on commits.

use std::collections::{HashMap, HashSet, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use event_listener::Event;
use parking_lot::{Mutex, RwLock};
use serde_json::value::RawValue;

use super::checkpoint::{
    checkpoint_stream, read_latest_checkpoint, write_checkpoint, CheckpointRecord,
};
use super::emit::{append_emits, check_emit, emitted_by};
use super::engine::{ProjectionEngine, ProjectionError, ProjectionSource};
use super::feed::Feed;
use crate::error::{Error, Result};
use crate::event::ExpectedRevision;
use crate::Store;

/// Builds an engine; called in the runner thread at every (re)start (JS engines are not `Send`).
pub type EngineBuilder =
    Arc<dyn Fn() -> Result<Box<dyn ProjectionEngine>, ProjectionError> + Send + Sync>;

/// How often a runner checkpoints and how much it reads at once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunnerOptions {
    /// Checkpoint at most this long after the first event applied since the last checkpoint
    /// (default 1 s). Nothing is written while no event was applied.
    pub checkpoint_interval: Duration,
    /// Checkpoint after this many events applied since the last checkpoint (default 10,000).
    pub checkpoint_events: u64,
    /// Events read and applied per batch (default 500). The served state is updated per batch.
    pub batch_size: usize,
    /// Each checkpoint writes the whole state to the log: after a checkpoint of `b` bytes the
    /// next one (other than at stop or fault) waits at least `b / checkpoint_bytes_per_second`
    /// seconds, so a large state does not fill the disk (default 4 MiB/s).
    pub checkpoint_bytes_per_second: u64,
}

impl Default for RunnerOptions {
    fn default() -> Self {
        RunnerOptions {
            checkpoint_interval: Duration::from_secs(1),
            checkpoint_events: 10_000,
            batch_size: 500,
            checkpoint_bytes_per_second: 4 << 20,
        }
    }
}

/// Who a projection run is: which checkpoints are its own and which ids its emits get.
///
/// - `incarnation` names the state: a checkpoint of another incarnation is ignored (the
///   projection rebuilds from the start). A reset is a new incarnation.
/// - `generation` seeds the ids of emitted events ([`super::emit_id`]). It must change when the
///   projection's code changes (or it is deleted and re-created) and must NOT change on a reset:
///   a reset then re-runs the same events under the same generation, and every emit it repeats
///   is deduplicated by the store's event-id index instead of being written again.
///
/// The caller owns both numbers and must persist them: re-opening after a restart with another
/// generation would re-emit everything since the last checkpoint under new ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProjectionIdentity {
    /// Seed of emitted-event ids; changes only with the code.
    pub generation: u64,
    /// Identity of the state; changes on every reset (and with the code).
    pub incarnation: u64,
}

impl From<u64> for ProjectionIdentity {
    /// A first incarnation: generation and incarnation both `n`.
    fn from(n: u64) -> Self {
        ProjectionIdentity {
            generation: n,
            incarnation: n,
        }
    }
}

/// Whether a projection is running.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RunState {
    /// Following its source.
    Running,
    /// Not running (never started, or stopped); its last state is still served.
    Stopped,
    /// Stopped by a failure of user code (or of the store); see [`ProjectionStatus::error`].
    Faulted,
}

impl RunState {
    /// `running` / `stopped` / `faulted`.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Stopped => "stopped",
            RunState::Faulted => "faulted",
        }
    }
}

/// Why a projection faulted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// The error message.
    pub message: String,
    /// The user code's stack, when there is one.
    pub stack: Option<String>,
    /// Log position of the event being applied, `None` when not at an event (start, restore,
    /// checkpoint).
    pub position: Option<u64>,
}

impl Fault {
    fn user(e: ProjectionError, position: Option<u64>) -> Fault {
        Fault {
            message: e.message,
            stack: e.stack,
            position,
        }
    }

    fn store(e: Error, position: Option<u64>) -> Fault {
        Fault {
            message: e.to_string(),
            stack: None,
            position,
        }
    }
}

/// A point-in-time view of a projection.
#[derive(Clone, Debug, PartialEq)]
pub struct ProjectionStatus {
    /// The projection's name.
    pub name: String,
    /// Running, stopped or faulted.
    pub state: RunState,
    /// The incarnation (changes on reset).
    pub incarnation: u64,
    /// The generation seeding emitted-event ids (does not change on reset).
    pub generation: u64,
    /// Log position of the last event applied, `None` before any.
    pub position: Option<u64>,
    /// Where reading resumes (log position, or stream revision for a one-stream source).
    pub cursor: u64,
    /// Events behind the head of the source: log positions not yet examined (or, for a
    /// one-stream source, events of that stream not yet read).
    pub lag: u64,
    /// Events applied by this incarnation.
    pub events_processed: u64,
    /// Events applied per second over the last few seconds.
    pub events_per_second: f64,
    /// Number of partitions with a state.
    pub partitions: usize,
    /// Position covered by the last checkpoint written or restored (`None`: none yet, or it
    /// was taken before any event).
    pub checkpoint_position: Option<u64>,
    /// The failure, when faulted.
    pub error: Option<Fault>,
}

const RUN: u8 = 0;
const STOP: u8 = 1;
const ABORT: u8 = 2;
const RATE_WINDOW: Duration = Duration::from_secs(5);
/// Most rate samples kept (one per batch otherwise: thousands within the window when batches
/// are small and fast).
const MAX_SAMPLES: usize = 64;

/// Mutable bookkeeping, behind one lock.
struct Progress {
    state: RunState,
    incarnation: u64,
    position: Option<u64>,
    cursor: u64,
    events_processed: u64,
    checkpoint_position: Option<u64>,
    checkpoint_cursor: Option<u64>,
    error: Option<Fault>,
    samples: VecDeque<(Instant, u64)>,
}

struct RunnerShared {
    name: String,
    generation: u64,
    store: Store,
    stream: String,
    builder: EngineBuilder,
    options: RunnerOptions,
    source: ProjectionSource,
    progress: Mutex<Progress>,
    states: RwLock<HashMap<String, Served>>,
    control: AtomicU8,
    /// Notified after `control` changes: wakes this runner's thread, and no other waiter.
    wake: Event,
}

/// A served state, as its compact JSON text, and the memory it takes here, its key included
/// (see [`served_bytes`]): the runner's copy counts against the engine's memory limit
/// ([`ProjectionEngine::set_external_bytes`]).
struct Served {
    json: Arc<RawValue>,
    bytes: usize,
}

impl Served {
    fn new(key: &str, json: Box<RawValue>) -> Served {
        Served {
            bytes: served_bytes(key, &json),
            json: Arc::from(json),
        }
    }
}

/// The heap memory of one served state, its key and its map entry included: the lengths of the
/// JSON text and of the key, plus the fixed costs of their allocations (the `Arc`'s counts, the
/// allocator's header and rounding) and of the hash table's slots. About 160 bytes for a
/// `{"count":1,"total":3}` state with a short key (measured with glibc: 150 to 190 depending on
/// how full the table is).
fn served_bytes(key: &str, json: &RawValue) -> usize {
    use std::mem::size_of;
    // A hash table is between 7/16 and 7/8 full, about 1.6 slots per entry on average; a slot
    // holds the key's `String`, the `Served` and a control byte.
    const ENTRY: usize = (size_of::<String>() + size_of::<Served>() + 1) * 8 / 5;
    // The `Arc`'s strong and weak counts, before the text.
    const COUNTS: usize = 2 * size_of::<usize>();
    // A heap allocation as glibc's malloc makes it: 8 bytes of header, a multiple of 16, at
    // least 32 bytes.
    let heap = |len: usize| {
        if len == 0 {
            0
        } else {
            (len + 8).next_multiple_of(16).max(32)
        }
    };
    ENTRY + heap(key.len()) + heap(COUNTS + json.get().len())
}

/// A projection and its runner thread. See the module docs for the invariants.
///
/// Dropping it stops the thread with a final checkpoint (as [`ProjectionRunner::stop`]).
pub struct ProjectionRunner {
    shared: Arc<RunnerShared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl ProjectionRunner {
    /// Opens projection `name` as `identity` in `store`, stopped: its latest checkpoint of
    /// that incarnation (if any) is loaded and served. Builds one engine here to learn its
    /// source (then drops it). A build or checkpoint failure gives a faulted projection, not an
    /// error. Call [`ProjectionRunner::start`] to run it.
    ///
    /// The caller owns the identity and must persist it (see [`ProjectionIdentity`]): a
    /// checkpoint of another incarnation is ignored (the projection rebuilds from the start). A
    /// plain number `n` means generation = incarnation = `n`.
    pub fn open(
        store: Store,
        name: &str,
        identity: impl Into<ProjectionIdentity>,
        builder: EngineBuilder,
        options: RunnerOptions,
    ) -> ProjectionRunner {
        let ProjectionIdentity {
            generation,
            incarnation,
        } = identity.into();
        let stream = checkpoint_stream(&store, name);
        let mut progress = Progress {
            state: RunState::Stopped,
            incarnation,
            position: None,
            cursor: 0,
            events_processed: 0,
            checkpoint_position: None,
            checkpoint_cursor: None,
            error: None,
            samples: VecDeque::new(),
        };
        let mut states = HashMap::new();
        let source = match catch_unwind(AssertUnwindSafe(|| builder())) {
            Ok(Ok(engine)) => Some(engine.source()),
            Ok(Err(e)) => {
                progress.state = RunState::Faulted;
                progress.error = Some(Fault::user(e, None));
                None
            }
            Err(_) => {
                progress.state = RunState::Faulted;
                progress.error = Some(Fault {
                    message: "the projection panicked while being built".into(),
                    stack: None,
                    position: None,
                });
                None
            }
        };
        match read_latest_checkpoint(&store, &stream) {
            Ok(Some(cp)) if cp.record.incarnation == incarnation => {
                progress.position = cp.record.position;
                progress.cursor = cp.record.cursor;
                progress.events_processed = cp.record.events_processed;
                progress.checkpoint_position = cp.record.position;
                progress.checkpoint_cursor = Some(cp.record.cursor);
                states = cp
                    .states
                    .into_iter()
                    .map(|(k, v)| {
                        let served = Served::new(&k, v);
                        (k, served)
                    })
                    .collect();
            }
            Ok(_) => {}
            Err(e) => {
                progress.state = RunState::Faulted;
                progress.error = Some(Fault::store(e, None));
            }
        }
        ProjectionRunner {
            shared: Arc::new(RunnerShared {
                name: name.to_owned(),
                generation,
                store,
                stream,
                builder,
                options,
                source: source.unwrap_or(ProjectionSource::All),
                progress: Mutex::new(progress),
                states: RwLock::new(states),
                control: AtomicU8::new(RUN),
                wake: Event::new(),
            }),
            thread: Mutex::new(None),
        }
    }

    /// The projection's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The reserved stream holding its checkpoints.
    pub fn checkpoint_stream(&self) -> &str {
        &self.shared.stream
    }

    /// Starts the runner thread (a no-op when running). A faulted projection restarts from its
    /// served state, i.e. it retries the event that failed.
    pub fn start(&self) -> Result<()> {
        let mut thread = self.thread.lock();
        if let Some(t) = thread.as_ref() {
            // A live thread of a projection that is no longer `Running` is on its way out
            // (it has just faulted or stopped): wait for it and start a new one, rather than
            // answer "already running".
            let running = self.shared.progress.lock().state == RunState::Running;
            if running && !t.is_finished() && self.shared.control.load(Ordering::Acquire) == RUN {
                return Ok(());
            }
        }
        if let Some(t) = thread.take() {
            let _ = t.join();
        }
        {
            let mut p = self.shared.progress.lock();
            p.state = RunState::Running;
            p.error = None;
        }
        self.shared.control.store(RUN, Ordering::Release);
        let shared = self.shared.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("projection-{}", truncate(&self.shared.name, 20)))
            .spawn(move || run(shared));
        match spawned {
            Ok(t) => {
                *thread = Some(t);
                Ok(())
            }
            Err(e) => {
                self.shared.progress.lock().state = RunState::Stopped;
                Err(Error::io("projection thread", e))
            }
        }
    }

    /// Stops the runner thread after a final checkpoint and waits for it. A faulted projection
    /// becomes stopped (its error is cleared).
    pub fn stop(&self) {
        self.halt(STOP);
        let mut p = self.shared.progress.lock();
        p.state = RunState::Stopped;
        p.error = None;
    }

    /// Stops the runner thread WITHOUT a final checkpoint, as a crash would (what was applied
    /// since the last checkpoint is re-applied on the next start). For tests and for discarding
    /// a projection.
    pub fn abandon(&self) {
        self.halt(ABORT);
        let mut p = self.shared.progress.lock();
        if p.state == RunState::Running {
            p.state = RunState::Stopped;
        }
    }

    /// Asks the runner thread to stop with a final checkpoint, without waiting (see
    /// [`ProjectionRunner::join`]); for stopping many projections in parallel at shutdown.
    pub fn begin_stop(&self) {
        let _thread = self.thread.lock();
        self.shared.control.store(STOP, Ordering::Release);
        self.shared.wake.notify(usize::MAX);
    }

    /// Waits for the runner thread to end (after [`ProjectionRunner::begin_stop`]).
    pub fn join(&self) {
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }

    fn halt(&self, how: u8) {
        let mut thread = self.thread.lock();
        self.shared.control.store(how, Ordering::Release);
        self.shared.wake.notify(usize::MAX);
        if let Some(t) = thread.take() {
            let _ = t.join();
        }
    }

    /// Rebuilds from the start as `incarnation` (which the caller has persisted): drops every
    /// state, writes an empty checkpoint of the new incarnation, and runs again if it was
    /// running or faulted. The generation is kept: events emitted before the reset are not
    /// emitted again (the re-run's emits have the same ids and the store deduplicates them).
    pub fn reset(&self, incarnation: u64) -> Result<()> {
        let was = self.shared.progress.lock().state;
        self.abandon();
        self.shared.states.write().clear();
        {
            let mut p = self.shared.progress.lock();
            p.incarnation = incarnation;
            p.position = None;
            p.cursor = 0;
            p.events_processed = 0;
            p.checkpoint_position = None;
            p.checkpoint_cursor = None;
            p.error = None;
            p.samples.clear();
            p.state = RunState::Stopped;
        }
        checkpoint(&self.shared)?;
        if was != RunState::Stopped {
            self.start()?;
        }
        Ok(())
    }

    /// Stops the thread (no final checkpoint) and soft-deletes the checkpoint stream.
    pub fn delete(&self) -> Result<()> {
        self.abandon();
        self.shared.states.write().clear();
        match self
            .shared
            .store
            .delete_stream(&self.shared.stream, ExpectedRevision::Any, false)
        {
            Ok(_) | Err(Error::StreamNotFound { .. }) | Err(Error::StreamDeleted { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The status now. Never waits for the runner thread's work.
    pub fn status(&self) -> ProjectionStatus {
        let sh = &self.shared;
        // Lock order everywhere: `states` before `progress` (never `states` while holding
        // `progress`).
        let partitions = sh.states.read().len();
        let mut p = sh.progress.lock();
        let now = Instant::now();
        prune_samples(&mut p.samples, now);
        let events_per_second = match p.samples.front() {
            Some((t, n)) => {
                let secs = now.duration_since(*t).as_secs_f64().max(0.5);
                (p.events_processed.saturating_sub(*n)) as f64 / secs
            }
            None => 0.0,
        };
        let head = match &sh.source {
            ProjectionSource::Stream(s) => sh
                .store
                .head(s)
                .ok()
                .and_then(|h| h.last_revision)
                .map_or(0, |r| r + 1),
            _ => sh.store.next_position(),
        };
        ProjectionStatus {
            name: sh.name.clone(),
            state: p.state,
            incarnation: p.incarnation,
            generation: sh.generation,
            position: p.position,
            cursor: p.cursor,
            lag: head.saturating_sub(p.cursor),
            events_processed: p.events_processed,
            events_per_second,
            partitions,
            checkpoint_position: p.checkpoint_position,
            error: p.error.clone(),
        }
    }

    /// The served state of `partition` (`""` for an unpartitioned projection) as its compact
    /// JSON text, `None` when it has none. Reflects whole batches only.
    ///
    /// The text is `serde_json`'s compact encoding of the value the engine returned
    /// ([`ProjectionEngine::state`]): no whitespace, object members in `serde_json`'s map order
    /// (sorted by key). Shared, never copied: serve it as it is; parse it
    /// (`serde_json::from_str(json.get())`) to inspect it.
    pub fn state(&self, partition: &str) -> Option<Arc<RawValue>> {
        self.shared
            .states
            .read()
            .get(partition)
            .map(|s| s.json.clone())
    }

    /// Every partition's served state (as [`ProjectionRunner::state`]), sorted by partition key.
    pub fn states(&self) -> Vec<(String, Arc<RawValue>)> {
        let mut all: Vec<(String, Arc<RawValue>)> = self
            .shared
            .states
            .read()
            .iter()
            .map(|(k, v)| (k.clone(), v.json.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// True when some partition other than `""` has a state (partitionBy / foreachStream).
    pub fn is_partitioned(&self) -> bool {
        self.shared.states.read().keys().any(|k| !k.is_empty())
    }

    /// Where the projection reads from.
    pub fn source(&self) -> &ProjectionSource {
        &self.shared.source
    }
}

impl Drop for ProjectionRunner {
    fn drop(&mut self) {
        self.halt(STOP);
    }
}

impl std::fmt::Debug for ProjectionRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectionRunner")
            .field("name", &self.shared.name)
            .field("source", &self.shared.source)
            .finish()
    }
}

/// Drops the rate samples older than [`RATE_WINDOW`] before `now`, and thins them to at most
/// [`MAX_SAMPLES`] (the runner adds one per batch, whether or not anyone reads the rate).
fn prune_samples(samples: &mut VecDeque<(Instant, u64)>, now: Instant) {
    while samples
        .front()
        .is_some_and(|(t, _)| now.duration_since(*t) > RATE_WINDOW)
    {
        samples.pop_front();
    }
    while samples.len() > MAX_SAMPLES {
        // Keep the oldest (the window's start) and drop the one after it.
        samples.remove(1);
    }
}

fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The thread body: runs, then records how it ended.
fn run(shared: Arc<RunnerShared>) {
    let outcome = catch_unwind(AssertUnwindSafe(|| run_loop(&shared)));
    let fault = match outcome {
        Ok(Ok(())) => None,
        Ok(Err(fault)) => Some(fault),
        Err(panic) => Some(Fault {
            message: format!("the projection panicked: {}", panic_message(&panic)),
            stack: None,
            position: None,
        }),
    };
    let mut p = shared.progress.lock();
    match fault {
        Some(f) => {
            p.state = RunState::Faulted;
            p.error = Some(f);
        }
        None => {
            if p.state == RunState::Running {
                p.state = RunState::Stopped;
            }
        }
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_owned()
    }
}

/// Writes a checkpoint of the served state and cursor (the runner thread is the only writer of
/// both, or no thread runs).
fn checkpoint(sh: &RunnerShared) -> Result<u64> {
    let (record, cursor) = {
        let p = sh.progress.lock();
        (
            CheckpointRecord {
                version: 1,
                incarnation: p.incarnation,
                position: p.position,
                cursor: p.cursor,
                partitions: 0,
                chunks: 0,
                bytes: 0,
                events_processed: p.events_processed,
            },
            p.cursor,
        )
    };
    let position = record.position;
    let bytes = {
        let states = sh.states.read();
        write_checkpoint(
            &sh.store,
            &sh.stream,
            record,
            states.iter().map(|(k, v)| (k, v.json.as_ref())),
        )?
    };
    let mut p = sh.progress.lock();
    p.checkpoint_position = position;
    p.checkpoint_cursor = Some(cursor);
    Ok(bytes)
}

fn run_loop(sh: &RunnerShared) -> Result<(), Fault> {
    let (mut engine, mut served) = fresh_engine(sh)?;
    let (mut cursor, mut position) = {
        let p = sh.progress.lock();
        (p.cursor, p.position)
    };
    let mut feed = Feed::new(&sh.store, &engine.source(), engine.event_types(), cursor);
    let mut pending: u64 = 0;
    let mut last_checkpoint = Instant::now();
    // The least time between two periodic checkpoints (grows with the state's size).
    let mut spacing = sh.options.checkpoint_interval;
    let rate = sh.options.checkpoint_bytes_per_second.max(1) as f64;
    let spacing_after = |bytes: u64| {
        sh.options
            .checkpoint_interval
            .max(Duration::from_secs_f64(bytes as f64 / rate))
    };
    let store_fault = |e: Error| Fault::store(e, None);
    loop {
        match sh.control.load(Ordering::Acquire) {
            RUN => {}
            STOP => {
                let moved = sh.progress.lock().checkpoint_cursor != Some(cursor);
                if pending > 0 || moved {
                    checkpoint(sh).map_err(store_fault)?;
                }
                return Ok(());
            }
            _ => return Ok(()),
        }
        let batch = match feed.poll(sh.options.batch_size.max(1)) {
            Ok(b) => b,
            Err(Error::Closed) => return Ok(()),
            Err(e) => return Err(store_fault(e)),
        };
        if batch.is_empty() {
            cursor = feed.cursor();
            sh.progress.lock().cursor = cursor;
            if pending > 0 && last_checkpoint.elapsed() >= spacing {
                spacing = spacing_after(checkpoint(sh).map_err(store_fault)?);
                pending = 0;
                last_checkpoint = Instant::now();
            }
            let deadline = (pending > 0).then(|| last_checkpoint + spacing);
            match wait(sh, &feed, deadline) {
                Ok(()) => continue,
                Err(Error::Closed) => return Ok(()),
                Err(e) => return Err(store_fault(e)),
            }
        }
        let started = Instant::now();
        let mut outcome = apply_batch(sh, engine.as_mut(), &feed, &batch, cursor, false)?;
        // The states the batch changed, serialised for serving: once per batch, not per event
        // (serialising costs a whole state, and most events change a small part of it).
        let mut fresh = None;
        if outcome.failure.is_none() {
            match serialise(engine.as_mut(), std::mem::take(&mut outcome.touched)) {
                Ok(states) => fresh = Some(states),
                Err(e) => {
                    // Some state cannot be served. Find the event that made it so: redo the
                    // batch on a fresh engine, serialising the state each event leaves behind
                    // (only on this failure path), and treat that event as the failing one.
                    (engine, served) = fresh_engine(sh)?;
                    let located = apply_batch(sh, engine.as_mut(), &feed, &batch, cursor, true)?;
                    if located.failure.is_none() {
                        // Not reproduced (a handler that is not deterministic, or one state
                        // changed through another partition's handler): fault where it was
                        // seen, without serving the batch.
                        return Err(Fault::user(e, outcome.position.or(position)));
                    }
                    outcome = located;
                }
            }
        }
        if let Some(failed) = &outcome.failure {
            // The engine may have lost the failing partition's state (a handler that mutated
            // it, then threw) or holds an unserialisable one. Redo the events before the
            // failure on a fresh engine restored from the served state, so that exactly those
            // are kept.
            let k = failed.index;
            (engine, served) = fresh_engine(sh)?;
            let mut redo = apply_batch(sh, engine.as_mut(), &feed, &batch[..k], cursor, false)?;
            if redo.failure.is_none() && redo.complete {
                redo.failure = outcome.failure.take();
            }
            outcome = redo;
        }
        let BatchOutcome {
            mut emits,
            touched,
            applied,
            position: last_applied,
            mut resume,
            complete,
            failure,
        } = outcome;
        if last_applied.is_some() {
            position = last_applied;
        }
        let failure = failure.map(|f| (f.error, f.position));
        if failure.is_none() && complete {
            resume = feed.cursor().max(resume);
        }
        let fresh = match fresh {
            Some(states) => states,
            None => serialise(engine.as_mut(), touched).map_err(|e| Fault::user(e, position))?,
        };
        // Emits first: a checkpoint never covers an event whose emits are not durable.
        flush_emits(sh, &mut emits)?;
        let fresh: Vec<(String, Option<Served>)> = fresh
            .into_iter()
            .map(|(key, value)| {
                let value = value.map(|v| Served::new(&key, v));
                (key, value)
            })
            .collect();
        // What the served states will take (this thread is their only writer).
        let replaced: usize = {
            let states = sh.states.read();
            fresh
                .iter()
                .filter_map(|(key, _)| states.get(key).map(|s| s.bytes))
                .sum()
        };
        let added: usize = fresh.iter().flat_map(|(_, v)| v).map(|v| v.bytes).sum();
        served = (served + added).saturating_sub(replaced);
        engine.set_external_bytes(served);
        {
            let mut states = sh.states.write();
            for (key, value) in fresh {
                match value {
                    Some(v) => states.insert(key, v),
                    None => states.remove(&key),
                };
            }
            let mut p = sh.progress.lock();
            p.cursor = resume;
            p.position = position;
            p.events_processed += applied;
            let total = p.events_processed;
            p.samples.push_back((started, total - applied));
            prune_samples(&mut p.samples, started);
        }
        cursor = resume;
        pending += applied;
        if let Some((e, at)) = failure {
            // Keep the progress up to the failing event, then fault at it.
            if pending > 0 {
                checkpoint(sh).map_err(store_fault)?;
            }
            return Err(Fault::user(e, Some(at)));
        }
        let since = last_checkpoint.elapsed();
        let due = (pending >= sh.options.checkpoint_events
            && since >= spacing.saturating_sub(sh.options.checkpoint_interval))
            || (pending > 0 && since >= spacing);
        if due {
            spacing = spacing_after(checkpoint(sh).map_err(store_fault)?);
            pending = 0;
            last_checkpoint = Instant::now();
        }
    }
}

/// An engine built by the builder with every served state restored, and told how much the
/// served states take ([`ProjectionEngine::set_external_bytes`]); with that amount.
fn fresh_engine(sh: &RunnerShared) -> Result<(Box<dyn ProjectionEngine>, usize), Fault> {
    let mut engine = (sh.builder)().map_err(|e| Fault::user(e, None))?;
    let mut served = 0;
    for (k, v) in sh.states.read().iter() {
        engine
            .restore_json(k, &v.json)
            .map_err(|e| Fault::user(e, None))?;
        served += v.bytes;
    }
    engine.set_external_bytes(served);
    Ok((engine, served))
}

/// Partition keys with their states' compact JSON text (`None`: the partition has no state).
type Encoded = Vec<(String, Option<Box<RawValue>>)>;

/// The states of `touched` as compact JSON text.
fn serialise(
    engine: &mut dyn ProjectionEngine,
    touched: HashSet<String>,
) -> Result<Encoded, ProjectionError> {
    let mut states = Vec::with_capacity(touched.len());
    for key in touched {
        // The value is dropped as soon as it is encoded: at most one state is held twice.
        let json = engine
            .state(&key)?
            .map(|value| serde_json::value::to_raw_value(&value))
            .transpose()
            .map_err(|e| ProjectionError::new(format!("the state cannot be encoded: {e}")))?;
        states.push((key, json));
    }
    Ok(states)
}

/// A failure of user code in a batch.
struct BatchFailure {
    error: ProjectionError,
    position: u64,
    /// Index of the failing event in the batch.
    index: usize,
}

/// What applying (a prefix of) a batch did.
struct BatchOutcome {
    /// Emits not yet appended (earlier ones were flushed during the batch).
    emits: Vec<(u64, Vec<super::engine::Emit>)>,
    touched: HashSet<String>,
    applied: u64,
    /// Position of the last event applied.
    position: Option<u64>,
    /// Where reading resumes after the events examined.
    resume: u64,
    /// False when the batch was cut short (stop / abandon requested): `resume` is then the
    /// exact end of what was examined.
    complete: bool,
    failure: Option<BatchFailure>,
}

/// Applies `batch` in order until the first failure, or until a stop is requested (so a stop
/// or shutdown waits for one event, not a whole batch). Emits are appended as soon as the
/// buffered ones reach the store's events-per-append limit (they are idempotent and no
/// checkpoint covers them yet), so memory is bounded by that limit plus one event's emits.
///
/// With `check_states` (the search for the event that made a state unserialisable), the state
/// of each event's partition is serialised after the event, and a failure to do so is that
/// event's failure; the whole batch is then applied even when a stop is requested.
fn apply_batch(
    sh: &RunnerShared,
    engine: &mut dyn ProjectionEngine,
    feed: &Feed,
    batch: &[crate::RecordedEvent],
    cursor: u64,
    check_states: bool,
) -> Result<BatchOutcome, Fault> {
    let mut out = BatchOutcome {
        emits: Vec::new(),
        touched: HashSet::new(),
        applied: 0,
        position: None,
        resume: cursor,
        complete: true,
        failure: None,
    };
    let flush_at = sh.store.options().limits.max_events_per_append.max(1);
    let mut buffered = 0usize;
    for (index, event) in batch.iter().enumerate() {
        if index > 0 && !check_states && sh.control.load(Ordering::Acquire) != RUN {
            out.complete = false;
            break;
        }
        if feed.accepts(event) && !emitted_by(event, &sh.name) {
            let fail = |error| BatchFailure {
                error,
                position: event.position,
                index,
            };
            let key = match engine.partition_key(event) {
                Ok(k) => k,
                Err(e) => {
                    out.failure = Some(fail(e));
                    return Ok(out);
                }
            };
            if let Some(key) = key {
                let mut emitted = Vec::new();
                if let Err(e) = engine.apply(&key, event, &mut emitted) {
                    out.failure = Some(fail(e));
                    return Ok(out);
                }
                if let Some(why) = emitted.iter().find_map(|e| check_emit(&sh.store, e).err()) {
                    out.failure = Some(fail(ProjectionError::new(why)));
                    return Ok(out);
                }
                if check_states {
                    if let Err(e) = engine.state(&key) {
                        out.failure = Some(fail(e));
                        return Ok(out);
                    }
                }
                if !emitted.is_empty() {
                    buffered += emitted.len();
                    out.emits.push((event.position, emitted));
                    if buffered >= flush_at {
                        flush_emits(sh, &mut out.emits)?;
                        buffered = 0;
                    }
                }
                out.touched.insert(key);
                out.applied += 1;
                out.position = Some(event.position);
            }
        }
        out.resume = feed.cursor_after(event);
    }
    Ok(out)
}

/// Appends `emits` (idempotently, see [`super::emit`]) and empties the buffer.
fn flush_emits(
    sh: &RunnerShared,
    emits: &mut Vec<(u64, Vec<super::engine::Emit>)>,
) -> Result<(), Fault> {
    if let Some(first) = emits.first().map(|(p, _)| *p) {
        append_emits(&sh.store, &sh.name, sh.generation, emits)
            .map_err(|e| Fault::store(e, Some(first)))?;
    }
    emits.clear();
    Ok(())
}

/// Waits until something is committed after the feed's last poll, the control word changes
/// (this runner's own `wake`: a stop wakes no other runner, subscriber or group), `deadline`
/// passes, or the store closes.
fn wait(sh: &RunnerShared, feed: &Feed, deadline: Option<Instant>) -> Result<()> {
    // Listen before checking: a stop between the check and the wait still wakes it.
    let stop = sh.wake.listen();
    if sh.control.load(Ordering::Acquire) != RUN {
        return Ok(());
    }
    // Every reason to wake is checked again by the caller's loop.
    feed.wait_until(stop, deadline).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::projection::{typed_engine, Emitter, Projection};
    use crate::{FsyncPolicy, NewEvent, Options, RecordedEvent};
    use event_listener::Listener;

    struct Count;

    impl Projection for Count {
        type State = u64;
        fn source(&self) -> ProjectionSource {
            ProjectionSource::Stream("s".into())
        }
        fn init(&self) -> u64 {
            0
        }
        fn apply(
            &self,
            state: &mut u64,
            _: &RecordedEvent,
            _: &mut Emitter<'_>,
        ) -> std::result::Result<(), ProjectionError> {
            *state += 1;
            Ok(())
        }
    }

    /// The events/s window is bounded even when nobody reads the status (the runner adds one
    /// sample per batch).
    #[test]
    fn rate_samples_stay_bounded_without_status_reads() {
        let dir = tempfile::tempdir().unwrap();
        let options = Options {
            fsync: FsyncPolicy::Never,
            ..Options::default()
        };
        let store = Store::open(dir.path(), options).unwrap();
        let events: Vec<NewEvent> = (0..400).map(|_| NewEvent::json("T", "{}")).collect();
        store.append("s", ExpectedRevision::Any, events).unwrap();
        let runner = ProjectionRunner::open(
            store.clone(),
            "count",
            1,
            typed_engine(Count),
            RunnerOptions {
                batch_size: 1,
                ..RunnerOptions::default()
            },
        );
        runner.start().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while runner.shared.progress.lock().events_processed < 400 {
            assert!(Instant::now() < deadline, "no progress");
            std::thread::sleep(Duration::from_millis(2));
        }
        let kept = runner.shared.progress.lock().samples.len();
        assert!(kept <= MAX_SAMPLES, "{kept} samples kept");
        assert!(runner.status().events_per_second > 0.0);
        runner.stop();
    }

    /// Waits until `runner` has examined every event of the store and is idle.
    fn caught_up(runner: &ProjectionRunner, store: &Store) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let status = runner.status();
            assert_eq!(status.state, RunState::Running, "{status:?}");
            if status.cursor >= store.head("s").unwrap().last_revision.map_or(0, |r| r + 1) {
                return;
            }
            assert!(Instant::now() < deadline, "no progress: {status:?}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Stopping (or abandoning) one projection wakes its own runner thread only: not the store's
    /// other waiters on commits (subscriptions, group feeders, other runners).
    #[test]
    fn stopping_a_runner_wakes_no_other_waiter() {
        let dir = tempfile::tempdir().unwrap();
        let options = Options {
            fsync: FsyncPolicy::Never,
            ..Options::default()
        };
        let store = Store::open(dir.path(), options).unwrap();
        store
            .append("s", ExpectedRevision::Any, vec![NewEvent::json("T", "{}")])
            .unwrap();
        let open = |name: &str| {
            ProjectionRunner::open(
                store.clone(),
                name,
                1,
                typed_engine(Count),
                RunnerOptions::default(),
            )
        };
        let (a, b) = (open("a"), open("b"));
        for runner in [&a, &b] {
            // A first run and stop write the checkpoint, so a later stop writes (commits)
            // nothing.
            runner.start().unwrap();
            caught_up(runner, &store);
            runner.stop();
            runner.start().unwrap();
            caught_up(runner, &store);
        }
        let commits = store.shared().commits.listen();
        let other = b.shared.wake.listen();
        a.stop();
        assert!(
            !commits.discard(),
            "the stop notified every waiter on commits"
        );
        assert!(!other.discard(), "the stop woke another runner");
        a.start().unwrap();
        caught_up(&a, &store);
        let commits = store.shared().commits.listen();
        a.abandon();
        assert!(
            !commits.discard(),
            "abandon notified every waiter on commits"
        );
        // Both ended by their own wake-up; the other runner still runs, and still follows.
        assert_eq!(a.status().state, RunState::Stopped);
        assert_eq!(b.status().state, RunState::Running);
        store
            .append("s", ExpectedRevision::Any, vec![NewEvent::json("T", "{}")])
            .unwrap();
        caught_up(&b, &store);
        assert_eq!(b.state("").as_deref().map(|s| s.get()), Some("2"));
        b.stop();
    }
}
