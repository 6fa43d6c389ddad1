//! [`ProjectionRunner`], the handle on one projection: open (the latest checkpoint of its
//! incarnation loaded and served), start / stop / begin_stop + join / abandon (through
//! `halt`), reset, delete, the status and the served states. Readers (status, state) never wait
//! for the runner thread's work; lock order everywhere: `states` before `progress`.

use std::collections::{HashMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use event_listener::Event;
use parking_lot::{Mutex, RwLock};
use serde_json::value::RawValue;

use super::control::{ABORT, RUN, STOP};
use super::served::Served;
use super::status::prune_samples;
use super::thread::{checkpoint, run};
use super::{
    EngineBuilder, Fault, Progress, ProjectionIdentity, ProjectionStatus, RunState, RunnerOptions,
    RunnerShared,
};
use crate::error::{Error, Result};
use crate::event::ExpectedRevision;
use crate::projection::checkpoint::{checkpoint_stream, read_latest_checkpoint};
use crate::projection::engine::ProjectionSource;
use crate::Store;

/// A projection and its runner thread. See the `runner` module's docs for the invariants.
///
/// Dropping it stops the thread with a final checkpoint (as [`ProjectionRunner::stop`]).
pub struct ProjectionRunner {
    pub(super) shared: Arc<RunnerShared>,
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
    ///
    /// [`ProjectionEngine::state`]: crate::projection::ProjectionEngine::state
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

fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
