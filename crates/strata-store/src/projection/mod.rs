//! Projections: continuous folds over a filtered event sequence, checkpointed in the store.
//!
//! - [`ProjectionEngine`]: the runner's view of user code (JavaScript in the server via
//!   `strata-js`, or a typed Rust [`Projection`] through [`typed_engine`]).
//! - [`ProjectionRunner`]: runs one projection in its own thread, following the store's
//!   subscription with the source's filters pushed down to the indexes, serving its state, and
//!   checkpointing state + position atomically to `$projection-<name>` (format in
//!   [`checkpoint`](self#checkpoints)).
//!
//! # Checkpoints
//!
//! A checkpoint is `k` binary `$state` events (the JSON object of every partition's state, cut
//! into chunks of at most 1 MiB) followed by one JSON `$checkpoint` record
//! ([`CheckpointRecord`]), normally in one atomic append; `truncate_before` then hides older
//! checkpoints. Restoring reads the latest record backward, then its chunks.

mod checkpoint;
mod emit;
mod engine;
mod feed;
mod runner;
mod typed;

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
