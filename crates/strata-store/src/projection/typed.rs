//! Typed projections for embedders: a Rust fold with a serde state, adapted to
//! [`ProjectionEngine`] so the same runner (checkpoints, emits, status) runs it.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::engine::{Emit, ProjectionEngine, ProjectionError, ProjectionSource};
use super::runner::EngineBuilder;
use crate::RecordedEvent;

/// A projection written in Rust: `state = fold(apply, init(), events)` per partition.
///
/// `apply` must be deterministic (same events → same state and same emits): after a crash the
/// runner re-applies the events since the last checkpoint and relies on that.
pub trait Projection: Send + Sync + 'static {
    /// The state of one partition; checkpointed as JSON.
    type State: Serialize + DeserializeOwned;

    /// Where the projection reads from.
    fn source(&self) -> ProjectionSource;

    /// The event types it handles (pushed down to the type index); `None` = all.
    fn event_types(&self) -> Option<Vec<String>> {
        None
    }

    /// Schema evolution: `event` in the shape `apply` expects, applied before
    /// [`partition_key`](Self::partition_key) and [`apply`](Self::apply) (which see its
    /// result). The default passes every event through; use [`super::Upcasters`] to turn
    /// older `metadata.schema_version`s of an event type into the current one. Must be
    /// deterministic, like `apply`. Stored events are never rewritten.
    fn upcast<'a>(
        &self,
        event: &'a RecordedEvent,
    ) -> Result<Cow<'a, RecordedEvent>, ProjectionError> {
        Ok(Cow::Borrowed(event))
    }

    /// The partition of `event`: `Some("")` (the default) for one state, `None` to skip it.
    fn partition_key(&self, event: &RecordedEvent) -> Option<String> {
        let _ = event;
        Some(String::new())
    }

    /// The state of a partition before its first event.
    fn init(&self) -> Self::State;

    /// Applies `event` to `state`, emitting derived events through `emit`. An error faults the
    /// projection at this event; the runner then discards this engine, so a half-applied
    /// `state` is never served or checkpointed.
    fn apply(
        &self,
        state: &mut Self::State,
        event: &RecordedEvent,
        emit: &mut Emitter<'_>,
    ) -> Result<(), ProjectionError>;
}

/// Collects the events a [`Projection::apply`] call emits.
pub struct Emitter<'a> {
    out: &'a mut Vec<Emit>,
}

impl Emitter<'_> {
    /// Emits an event of `event_type` with `data` to the user stream `stream`. The runner
    /// appends it with a deterministic id (no duplicate after a crash); streams starting with
    /// `$` fault the projection.
    pub fn emit(
        &mut self,
        stream: impl Into<String>,
        event_type: impl Into<String>,
        data: &impl Serialize,
    ) -> Result<(), ProjectionError> {
        let data = serde_json::to_value(data)
            .map_err(|e| ProjectionError::new(format!("emit data: {e}")))?;
        self.out.push(Emit {
            stream: stream.into(),
            event_type: event_type.into(),
            data,
        });
        Ok(())
    }
}

/// A [`Projection`] as a [`ProjectionEngine`]: the states live as `P::State` values and are
/// serialised only when asked.
pub struct TypedEngine<P: Projection> {
    projection: Arc<P>,
    states: HashMap<String, P::State>,
}

impl<P: Projection> TypedEngine<P> {
    /// An engine with no state yet.
    pub fn new(projection: Arc<P>) -> Self {
        TypedEngine {
            projection,
            states: HashMap::new(),
        }
    }
}

/// The [`EngineBuilder`] of a typed projection, for [`super::ProjectionRunner::open`].
pub fn typed_engine<P: Projection>(projection: P) -> EngineBuilder {
    let projection = Arc::new(projection);
    Arc::new(
        move || Ok(Box::new(TypedEngine::new(projection.clone())) as Box<dyn ProjectionEngine>),
    )
}

impl<P: Projection> ProjectionEngine for TypedEngine<P> {
    fn source(&self) -> ProjectionSource {
        self.projection.source()
    }

    fn event_types(&self) -> Option<Vec<String>> {
        self.projection.event_types()
    }

    fn partition_key(&mut self, event: &RecordedEvent) -> Result<Option<String>, ProjectionError> {
        let event = self.projection.upcast(event)?;
        Ok(self.projection.partition_key(&event))
    }

    fn apply(
        &mut self,
        partition: &str,
        event: &RecordedEvent,
        emits: &mut Vec<Emit>,
    ) -> Result<(), ProjectionError> {
        let projection = &self.projection;
        let event = projection.upcast(event)?;
        let event = event.as_ref();
        let state = self
            .states
            .entry(partition.to_owned())
            .or_insert_with(|| projection.init());
        projection.apply(state, event, &mut Emitter { out: emits })
    }

    fn state(&mut self, partition: &str) -> Result<Option<serde_json::Value>, ProjectionError> {
        self.states
            .get(partition)
            .map(|s| {
                serde_json::to_value(s)
                    .map_err(|e| ProjectionError::new(format!("state of {partition:?}: {e}")))
            })
            .transpose()
    }

    fn partitions(&self) -> Vec<String> {
        self.states.keys().cloned().collect()
    }

    fn restore(
        &mut self,
        partition: &str,
        state: serde_json::Value,
    ) -> Result<(), ProjectionError> {
        let state = serde_json::from_value(state).map_err(|e| {
            ProjectionError::new(format!("checkpointed state of {partition:?}: {e}"))
        })?;
        self.states.insert(partition.to_owned(), state);
        Ok(())
    }

    fn clear(&mut self) {
        self.states.clear();
    }
}
