//! The engine trait: the runner's view of one projection's user code (JavaScript in the server,
//! anything else for embedders). The contract between the runner and the runtimes.

use crate::RecordedEvent;

/// Where a projection reads from. Filters are pushed down to the store's indexes.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ProjectionSource {
    /// Every event of user streams (reserved `$` streams are left out).
    All,
    /// The events of one stream.
    Stream(String),
    /// The events of several streams, in log order.
    Streams(Vec<String>),
    /// The events of every stream of one category (the part of the name before the first `-`).
    Category(String),
}

/// An event a projection asks to append. The runner appends it with a deterministic event id
/// (derived from projection name + source position + index), so re-running after a crash does
/// not duplicate it.
#[derive(Clone, Debug, PartialEq)]
pub struct Emit {
    /// The target stream (a user stream: names starting with `$` are refused by the runner).
    pub stream: String,
    /// The event type.
    pub event_type: String,
    /// The event's JSON data.
    pub data: serde_json::Value,
}

/// A failure of user code on one event (or at start). `stack` is the JS stack when there is one.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ProjectionError {
    /// Human-readable description of the failure.
    pub message: String,
    /// The user code's stack trace, when the runtime has one.
    pub stack: Option<String>,
}

impl ProjectionError {
    /// An error with a message and no stack.
    pub fn new(message: impl Into<String>) -> Self {
        ProjectionError {
            message: message.into(),
            stack: None,
        }
    }
}

/// The runner's view of a projection. States are JSON values, one per partition, kept by the
/// engine between calls (a JS engine keeps them as live JS objects; serialising only happens in
/// `state`). The unpartitioned state is the partition "" .
pub trait ProjectionEngine {
    /// Where the projection reads from.
    fn source(&self) -> ProjectionSource;
    /// Event types the projection handles; `None` = every type (it has `$any`). Pushed down to
    /// the type index.
    fn event_types(&self) -> Option<Vec<String>>;
    /// The partition of `event`: `Some("")` when unpartitioned, `Some(stream)` for
    /// foreachStream, the partitionBy result (stringified) otherwise; `None` = skip the event
    /// (partitionBy returned null/undefined).
    fn partition_key(&mut self, event: &RecordedEvent) -> Result<Option<String>, ProjectionError>;
    /// Applies `event` to the state of `partition` (created by `$init`, or `{}` without one,
    /// when absent); appends the handler's `emit(...)` calls to `emits`. On error the state of
    /// that partition must be unchanged (apply to a copy or roll back) — the runner faults.
    fn apply(
        &mut self,
        partition: &str,
        event: &RecordedEvent,
        emits: &mut Vec<Emit>,
    ) -> Result<(), ProjectionError>;
    /// The JSON state of `partition`, `None` when it has none.
    fn state(&mut self, partition: &str) -> Result<Option<serde_json::Value>, ProjectionError>;
    /// Every partition that has a state.
    fn partitions(&self) -> Vec<String>;
    /// Replaces the state of `partition` (restoring a checkpoint).
    fn restore(&mut self, partition: &str, state: serde_json::Value)
        -> Result<(), ProjectionError>;
    /// Replaces the state of `partition` with the state whose JSON text is `state`, as
    /// [`restore`](Self::restore) does with the parsed value; the runner restores its served
    /// states (kept as JSON text) this way. The default parses the text and calls `restore`; an
    /// engine that reads JSON text itself (a JavaScript engine) can skip that value.
    fn restore_json(
        &mut self,
        partition: &str,
        state: &serde_json::value::RawValue,
    ) -> Result<(), ProjectionError> {
        let value = serde_json::from_str(state.get())
            .map_err(|e| ProjectionError::new(format!("the state is not valid JSON: {e}")))?;
        self.restore(partition, value)
    }
    /// Drops every state (reset).
    fn clear(&mut self);
    /// Tells the engine that the runner holds about `bytes` of memory for this projection
    /// outside the engine: its served copy of every partition's state, keys included. An
    /// engine with a memory limit counts them against that limit, so that the projection as a
    /// whole stays within it (its next [`apply`](Self::apply) fails when they leave no room).
    /// The runner calls it after restoring the states and after every batch. The default
    /// ignores it (no limit).
    fn set_external_bytes(&mut self, bytes: usize) {
        let _ = bytes;
    }
}

/// Builds an engine inside the runner's own thread (JS runtimes are not `Send`).
pub type EngineFactory =
    Box<dyn FnOnce() -> Result<Box<dyn ProjectionEngine>, ProjectionError> + Send>;
