//! Projections hosted by the server: user JavaScript folds (`strata-js`) run continuously by
//! [`strata_store::projection::ProjectionRunner`]s, one OS thread per running projection, with
//! their definitions in the `$projections` registry stream ([`registry`]) and their state
//! checkpointed in `$projection-<name>`.
//!
//! - `PUT /projections/{name}` compiles the source (on the blocking pool) before anything is
//!   written; a new name is created running; a different source for an existing name is a new
//!   generation and incarnation that rebuilds from the start and emits under new ids (keeping
//!   the running/stopped choice; a faulted projection runs again); the same source changes
//!   nothing.
//! - `reset` is a new incarnation of the same generation: the state is rebuilt from the start,
//!   and what it emits again has the ids it had, so the store deduplicates it (nothing is
//!   emitted twice).
//! - At start-up the registry is folded and every projection opened from its checkpoint; those
//!   marked running resume.
//! - Management operations are serialised by one lock and run on the blocking pool; reads of
//!   status and state never wait for them or for user code.

pub(crate) mod http;
pub(crate) mod metrics;
pub(crate) mod openapi;
mod registry;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use serde_json::value::RawValue;
use strata_js::{JsLimits, JsProjection};
use strata_store::projection::{
    EngineBuilder, ProjectionEngine, ProjectionError, ProjectionRunner, ProjectionStatus, RunState,
    RunnerOptions,
};
use strata_store::Store;

use crate::error::{Error, Result};
use registry::{Definition, Desired, Registry};

/// How projections run (see [`crate::Config::projections`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProjectionOptions {
    /// Checkpoint at most this long after the first unsaved event (default 1 s).
    pub checkpoint_interval: Duration,
    /// Checkpoint after this many unsaved events (default 10,000).
    pub checkpoint_events: u64,
    /// Events applied per batch (default 500).
    pub batch_size: usize,
    /// The JavaScript sandbox's limits (memory, time per handler call, stack).
    pub js_limits: JsLimits,
    /// Largest projection source accepted, in bytes (default 1 MiB).
    pub max_source_bytes: usize,
}

impl Default for ProjectionOptions {
    fn default() -> Self {
        let runner = RunnerOptions::default();
        ProjectionOptions {
            checkpoint_interval: runner.checkpoint_interval,
            checkpoint_events: runner.checkpoint_events,
            batch_size: runner.batch_size,
            js_limits: JsLimits::default(),
            max_source_bytes: 1 << 20,
        }
    }
}

impl ProjectionOptions {
    fn runner(&self) -> RunnerOptions {
        RunnerOptions {
            checkpoint_interval: self.checkpoint_interval,
            checkpoint_events: self.checkpoint_events,
            batch_size: self.batch_size,
            ..RunnerOptions::default()
        }
    }
}

/// One hosted projection.
pub(crate) struct Hosted {
    pub runner: ProjectionRunner,
    /// Changes with stop/start (a new source or a reset makes a new `Hosted`).
    pub definition: Mutex<Definition>,
}

/// A projection as the API shows it.
pub(crate) struct View {
    pub status: ProjectionStatus,
    pub definition: Definition,
    pub partitioned: bool,
    pub source: strata_store::projection::ProjectionSource,
}

/// Every hosted projection and the registry.
pub(crate) struct Projections {
    store: Store,
    options: ProjectionOptions,
    /// name → projection. Read without waiting for management operations.
    hosted: RwLock<BTreeMap<String, Arc<Hosted>>>,
    /// The registry; holding this lock serialises management operations.
    registry: Mutex<Registry>,
    /// Why the registry could not be loaded (every projection request then answers 503).
    load_error: Option<String>,
    /// Set (under the registry lock) by [`Projections::shutdown`]: management operations then
    /// answer 503 instead of starting runners against a closing store.
    shut_down: AtomicBool,
}

/// The outcome of a `PUT`.
pub(crate) enum PutOutcome {
    Created,
    Updated,
    Unchanged,
}

/// A JavaScript engine builder for `source` (compiled in the runner's thread at each start).
fn js_builder(source: String, limits: JsLimits) -> EngineBuilder {
    let source: Arc<str> = source.into();
    Arc::new(move || {
        JsProjection::compile(&source, limits)
            .map(|p| Box::new(p) as Box<dyn ProjectionEngine>)
            .map_err(ProjectionError::from)
    })
}

impl Projections {
    /// Folds the registry and opens every projection; those marked running start (unless
    /// opening faulted them: an unreadable checkpoint is reported, not papered over). A registry
    /// that cannot be read is reported by every projection request (503), not a start-up
    /// failure of the whole server.
    pub(crate) fn load(store: Store, options: ProjectionOptions) -> Projections {
        let (registry, load_error) = match Registry::load(&store) {
            Ok(r) => (r, None),
            Err(e) => {
                tracing::error!(error = %e, "cannot load the projection registry");
                (Registry::default(), Some(e.to_string()))
            }
        };
        let projections = Projections {
            store,
            options,
            hosted: RwLock::new(BTreeMap::new()),
            registry: Mutex::new(Registry::default()),
            load_error,
            shut_down: AtomicBool::new(false),
        };
        for definition in registry.definitions.values() {
            let hosted = projections.open(definition.clone());
            // A projection that could not be opened (its checkpoint is unreadable, its script
            // no longer builds) stays faulted with the reason: starting it would clear the
            // error and silently rebuild from scratch. `start` / `reset` do that on request.
            let opened = hosted.runner.status().state != RunState::Faulted;
            if definition.status == Desired::Running && opened {
                if let Err(e) = hosted.runner.start() {
                    tracing::error!(projection = %definition.name, error = %e, "cannot start projection");
                }
            }
            projections
                .hosted
                .write()
                .insert(definition.name.clone(), Arc::new(hosted));
        }
        *projections.registry.lock() = registry;
        projections
    }

    fn open(&self, definition: Definition) -> Hosted {
        let runner = ProjectionRunner::open(
            self.store.clone(),
            &definition.name,
            definition.identity(),
            js_builder(definition.source.clone(), self.options.js_limits),
            self.options.runner(),
        );
        Hosted {
            runner,
            definition: Mutex::new(definition),
        }
    }

    /// The registry lock, for a management operation: 503 once shutdown has begun.
    fn manage(&self) -> Result<parking_lot::MutexGuard<'_, Registry>> {
        self.check_loaded()?;
        let registry = self.registry.lock();
        if self.shut_down.load(Ordering::Acquire) {
            return Err(Error::Unavailable("the server is shutting down".into()));
        }
        Ok(registry)
    }

    fn check_loaded(&self) -> Result<()> {
        match &self.load_error {
            Some(e) => Err(Error::Unavailable(format!(
                "the projection registry could not be loaded: {e}"
            ))),
            None => Ok(()),
        }
    }

    /// The options projections run with.
    pub(crate) fn options(&self) -> &ProjectionOptions {
        &self.options
    }

    fn get(&self, name: &str) -> Result<Arc<Hosted>> {
        self.check_loaded()?;
        self.hosted
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("no projection named {name:?}")))
    }

    fn view(hosted: &Hosted) -> View {
        View {
            status: hosted.runner.status(),
            definition: hosted.definition.lock().clone(),
            partitioned: hosted.runner.is_partitioned(),
            source: hosted.runner.source().clone(),
        }
    }

    /// One projection's view.
    pub(crate) fn describe(&self, name: &str) -> Result<View> {
        Ok(Self::view(&*self.get(name)?))
    }

    /// Every projection's view, by name.
    pub(crate) fn list(&self) -> Result<Vec<View>> {
        self.check_loaded()?;
        let all: Vec<Arc<Hosted>> = self.hosted.read().values().cloned().collect();
        Ok(all.iter().map(|h| Self::view(h)).collect())
    }

    /// The served state as JSON bytes: of `partition`, or (`None`) the unpartitioned state, or
    /// every partition's state as an object when the projection is partitioned. The runner
    /// keeps each state as its compact JSON text: one is served as it is (copied, not
    /// encoded), and the object of every partition is those texts under their keys. Never
    /// waits for the projection's user code. May take a while for a large state: call it on the
    /// blocking pool.
    pub(crate) fn state_json(&self, name: &str, partition: Option<&str>) -> Result<Vec<u8>> {
        let hosted = self.get(name)?;
        let runner = &hosted.runner;
        let encoded = match partition {
            Some(p) => {
                let state = runner.state(p).ok_or_else(|| {
                    Error::NotFound(format!("projection {name:?} has no partition {p:?}"))
                })?;
                state.get().as_bytes().to_vec()
            }
            None if runner.is_partitioned() => {
                let all = runner.states();
                let map: BTreeMap<&str, &RawValue> =
                    all.iter().map(|(k, v)| (k.as_str(), v.as_ref())).collect();
                serde_json::to_vec(&map)
                    .map_err(|e| Error::Internal(format!("cannot encode the state: {e}")))?
            }
            None => match runner.state("") {
                Some(state) => state.get().as_bytes().to_vec(),
                None => b"null".to_vec(),
            },
        };
        Ok(encoded)
    }

    /// Creates or updates a projection whose `source` compiled. Blocking.
    pub(crate) fn put(&self, name: &str, source: String) -> Result<(PutOutcome, View)> {
        let mut registry = self.manage()?;
        let existing = self.hosted.read().get(name).cloned();
        if let Some(old) = &existing {
            if old.definition.lock().source == source {
                return Ok((PutOutcome::Unchanged, Self::view(old)));
            }
        }
        let status = existing
            .as_ref()
            .map_or(Desired::Running, |old| old.definition.lock().status);
        let number = registry.take_incarnation();
        let definition = Definition {
            name: name.to_owned(),
            source,
            generation: number,
            incarnation: number,
            status,
        };
        registry
            .put(&self.store, definition.clone())
            .map_err(|e| self.store_error(e))?;
        if let Some(old) = &existing {
            // The old incarnation's state is discarded: no final checkpoint.
            old.runner.abandon();
        }
        let hosted = Arc::new(self.open(definition));
        self.hosted.write().insert(name.to_owned(), hosted.clone());
        if status == Desired::Running {
            hosted.runner.start().map_err(|e| self.store_error(e))?;
        }
        let outcome = if existing.is_some() {
            PutOutcome::Updated
        } else {
            PutOutcome::Created
        };
        Ok((outcome, Self::view(&hosted)))
    }

    /// Persists a new desired status of `hosted`.
    ///
    /// The definition's lock is not held while the record is written (readers of the
    /// projection's view take it on async workers); the registry lock serialises writers.
    fn set_desired(&self, registry: &mut Registry, hosted: &Hosted, status: Desired) -> Result<()> {
        let current = hosted.definition.lock().clone();
        if current.status == status {
            return Ok(());
        }
        let updated = Definition { status, ..current };
        registry
            .put(&self.store, updated.clone())
            .map_err(|e| self.store_error(e))?;
        *hosted.definition.lock() = updated;
        Ok(())
    }

    /// Stops a projection (final checkpoint). Blocking.
    pub(crate) fn stop(&self, name: &str) -> Result<View> {
        let mut registry = self.manage()?;
        let hosted = self.get(name)?;
        self.set_desired(&mut registry, &hosted, Desired::Stopped)?;
        hosted.runner.stop();
        Ok(Self::view(&hosted))
    }

    /// Starts a projection (a faulted one retries the event that failed). Blocking.
    pub(crate) fn start(&self, name: &str) -> Result<View> {
        let mut registry = self.manage()?;
        let hosted = self.get(name)?;
        self.set_desired(&mut registry, &hosted, Desired::Running)?;
        if hosted.runner.status().state != RunState::Running {
            hosted.runner.start().map_err(|e| self.store_error(e))?;
        }
        Ok(Self::view(&hosted))
    }

    /// Rebuilds a projection from the start as a new incarnation of the same generation (emits
    /// are not repeated). Blocking.
    pub(crate) fn reset(&self, name: &str) -> Result<View> {
        let mut registry = self.manage()?;
        let hosted = self.get(name)?;
        let definition = Definition {
            incarnation: registry.take_incarnation(),
            ..hosted.definition.lock().clone()
        };
        registry
            .put(&self.store, definition.clone())
            .map_err(|e| self.store_error(e))?;
        hosted.runner.abandon();
        let fresh = Arc::new(self.open(definition));
        self.hosted.write().insert(name.to_owned(), fresh.clone());
        if definition_status(&fresh) == Desired::Running {
            fresh.runner.start().map_err(|e| self.store_error(e))?;
        }
        Ok(Self::view(&fresh))
    }

    /// Deletes a projection and frees its checkpoint stream. Blocking.
    pub(crate) fn delete(&self, name: &str) -> Result<()> {
        let mut registry = self.manage()?;
        let hosted = self.get(name)?;
        registry
            .delete(&self.store, name)
            .map_err(|e| self.store_error(e))?;
        self.hosted.write().remove(name);
        hosted.runner.delete().map_err(|e| self.store_error(e))?;
        Ok(())
    }

    /// Stops every runner with a final checkpoint (graceful shutdown). Blocking; idempotent.
    /// Waits for a management operation in progress; later ones answer 503.
    pub(crate) fn shutdown(&self) {
        {
            let _registry = self.registry.lock();
            self.shut_down.store(true, Ordering::Release);
        }
        let all: Vec<Arc<Hosted>> = self.hosted.read().values().cloned().collect();
        for h in &all {
            h.runner.begin_stop();
        }
        for h in &all {
            h.runner.join();
        }
    }

    fn store_error(&self, e: strata_store::Error) -> Error {
        Error::from_store(e, &self.store.health())
    }
}

fn definition_status(hosted: &Hosted) -> Desired {
    hosted.definition.lock().status
}

impl Drop for Projections {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_store::{FsyncPolicy, Options};

    const COUNT: &str =
        "fromAll().when({ $init: () => ({ n: 0 }), $any: (s, e) => { s.n += 1; return s; } });";

    /// A management operation that arrives after (or races with) shutdown does not start a
    /// runner against the closing store: it answers 503 and writes nothing.
    #[test]
    fn management_after_shutdown_is_unavailable_and_starts_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let options = Options {
            fsync: FsyncPolicy::Never,
            ..Options::default()
        };
        let store = Store::open(dir.path(), options).unwrap();
        let projections = Projections::load(store.clone(), ProjectionOptions::default());
        projections.put("a", COUNT.into()).unwrap();
        projections.shutdown();
        assert_eq!(
            projections.describe("a").unwrap().status.state,
            RunState::Stopped
        );
        for result in [
            projections.put("b", COUNT.into()).map(|_| ()),
            projections.start("a").map(|_| ()),
            projections.reset("a").map(|_| ()),
            projections.delete("a"),
        ] {
            assert!(
                matches!(result, Err(Error::Unavailable(_))),
                "{:?}",
                result.err()
            );
        }
        assert_eq!(
            projections.describe("a").unwrap().status.state,
            RunState::Stopped
        );
        assert!(projections.describe("b").is_err());
    }

    /// The served state's bytes are `serde_json`'s compact encoding of the state the engine
    /// returns, whatever JavaScript's own `JSON.stringify` would write (member order, number
    /// forms, escapes): of one partition, and of every partition as one object.
    #[test]
    fn served_state_bytes_are_the_compact_encoding_of_the_engine_state() {
        use strata_store::projection::ProjectionEngine;
        use strata_store::{Direction, ReadFrom};
        const SOURCE: &str = r#"fromAll().partitionBy(e => e.data.k).when({
            $init: () => ({ z: 1, b: 1e21, a: 0.000001, big: 123456789012345680000,
                            s: "\u00e9\u2028<\"\n\u0001\ud83d\ude00", n: [1.5, -2, null, true, 1e-7],
                            o: { y: {}, x: [], 10: 2, 9: 1 } }),
            $any: (s, e) => { s.count = (s.count || 0) + 1; s[e.data.k] = e.position; }
        });"#;
        let dir = tempfile::tempdir().unwrap();
        let options = Options {
            fsync: FsyncPolicy::Never,
            ..Options::default()
        };
        let store = Store::open(dir.path(), options).unwrap();
        let events = ["b", "a", "a", "é\"k"]
            .iter()
            .map(|k| strata_store::NewEvent::json("T", json_of(k)))
            .collect();
        store
            .append("s-1", strata_store::ExpectedRevision::Any, events)
            .unwrap();
        let projections = Projections::load(store.clone(), ProjectionOptions::default());
        projections.put("p", SOURCE.into()).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while projections.describe("p").unwrap().status.events_processed < 4 {
            assert!(std::time::Instant::now() < deadline, "not folded");
            std::thread::sleep(Duration::from_millis(5));
        }
        // The same fold on an engine of its own: the states as values.
        let mut engine = JsProjection::compile(SOURCE, JsLimits::default()).unwrap();
        let page = store
            .read_stream("s-1", ReadFrom::Start, Direction::Forward, 10)
            .unwrap();
        for event in &page.events {
            let key = engine.partition_key(event).unwrap().unwrap();
            engine.apply(&key, event, &mut Vec::new()).unwrap();
        }
        let values: BTreeMap<String, serde_json::Value> = engine
            .partitions()
            .into_iter()
            .map(|k| {
                let v = engine.state(&k).unwrap().unwrap();
                (k, v)
            })
            .collect();
        assert_eq!(values.len(), 3);
        for (k, v) in &values {
            assert_eq!(
                projections.state_json("p", Some(k)).unwrap(),
                serde_json::to_vec(v).unwrap(),
                "{k}"
            );
        }
        assert_eq!(
            projections.state_json("p", None).unwrap(),
            serde_json::to_vec(&values).unwrap()
        );
        projections.shutdown();
    }

    /// `{"k": key}`.
    fn json_of(key: &str) -> String {
        serde_json::json!({ "k": key }).to_string()
    }

    /// A projection whose checkpoint cannot be read at start-up stays faulted with the reason
    /// (it is not silently restarted from scratch); `start` then rebuilds it.
    #[test]
    fn an_unreadable_checkpoint_faults_the_projection_at_start_up() {
        let dir = tempfile::tempdir().unwrap();
        let options = Options {
            fsync: FsyncPolicy::Never,
            ..Options::default()
        };
        let store = Store::open(dir.path(), options).unwrap();
        store
            .append(
                "s-1",
                strata_store::ExpectedRevision::Any,
                vec![strata_store::NewEvent::json("T", "{}")],
            )
            .unwrap();
        let projections = Projections::load(store.clone(), ProjectionOptions::default());
        projections.put("a", COUNT.into()).unwrap();
        projections.shutdown();
        drop(projections);
        // A record that claims chunks that are not there.
        store
            .append(
                "$projection-a",
                strata_store::ExpectedRevision::Any,
                vec![strata_store::NewEvent::json(
                    "$checkpoint",
                    r#"{"version":1,"incarnation":1,"position":0,"cursor":1,"partitions":1,"chunks":500,"bytes":10,"events_processed":1}"#,
                )],
            )
            .unwrap();
        let projections = Projections::load(store.clone(), ProjectionOptions::default());
        let view = projections.describe("a").unwrap();
        assert_eq!(view.status.state, RunState::Faulted, "{:?}", view.status);
        assert!(view.status.error.is_some());
        // An explicit start rebuilds from the start.
        projections.start("a").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while projections.describe("a").unwrap().status.events_processed < 1 {
            assert!(std::time::Instant::now() < deadline, "no rebuild");
            std::thread::sleep(Duration::from_millis(5));
        }
        projections.shutdown();
    }
}
