//! Projections: continuous folds over a filtered event sequence, checkpointed in the store.
//!
//! - [`ProjectionEngine`]: the runner's view of user code (JavaScript in the server via
//!   `strata-js`, or a typed Rust [`Projection`] through [`typed_engine`]).
//! - [`Upcasters`]: schema evolution where events are consumed (see [`upcast`](self#upcasting)):
//!   per event type and version, applied before the handlers; stored events never change.
//! - [`ProjectionRunner`]: runs one projection in its own thread, following the store's
//!   subscription with the source's filters pushed down to the indexes, serving its state, and
//!   checkpointing state + position atomically to `$projection-<name>` (format in
//!   [`checkpoint`](self#checkpoints)).
//!
//! # Upcasting
//!
//! An event type's `data` schema version is `metadata.schema_version` (absent = 1). A
//! projection turns old versions into the current one before its handlers (and its partition
//! function) see them: [`Projection::upcast`] for Rust, `.upcast({Type: {1: e => newData}})`
//! for JavaScript. Upcasting happens on every read; what is stored is never rewritten.
//!
//! # Checkpoints
//!
//! A checkpoint is `k` binary `$state` events (the JSON object of every partition's state, cut
//! into chunks of at most 1 MiB) followed by one JSON `$checkpoint` record
//! ([`CheckpointRecord`]), normally in one atomic append; `truncate_before` then hides older
//! checkpoints (moved once enough of them are superseded, so that a scavenge removes them). Restoring reads the latest record backward, then its chunks.

mod checkpoint;
mod emit;
mod engine;
mod feed;
mod runner;
mod typed;
mod upcast;

pub use checkpoint::{
    checkpoint_stream, read_latest_checkpoint, Checkpoint, CheckpointRecord, CHECKPOINT_TYPE,
    STATE_CHUNK_TYPE,
};
pub use emit::{emit_id, EMITTED_BY_KEY};
pub use engine::{Emit, EngineFactory, ProjectionEngine, ProjectionError, ProjectionSource};
pub use runner::{
    EngineBuilder, Fault, ProjectionIdentity, ProjectionRunner, ProjectionStatus, RunState,
    RunnerOptions,
};
pub use typed::{typed_engine, Emitter, Projection, TypedEngine};
pub use upcast::{schema_version, Upcasters, SCHEMA_VERSION_KEY};
