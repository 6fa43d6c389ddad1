//! Projections: continuous folds over a filtered event sequence, checkpointed in the store.
//!
//! [`ProjectionEngine`] is the runner's view of user code (JavaScript in the server via
//! `strata-js`, or a typed Rust projection).

mod engine;

pub use engine::{Emit, EngineFactory, ProjectionEngine, ProjectionError, ProjectionSource};
