//! The runner: one projection folded continuously over its source in its own thread, with its
//! state and position checkpointed together in the store.
//!
//! Invariants:
//! - The state served by [`ProjectionRunner::state`] and the cursor it reflects are updated
//!   together after each batch, from the runner thread only; readers never wait for user code
//!   ([`thread`]).
//! - Emitted events of a batch are appended before the checkpoint covering that batch (see
//!   [`crate::projection::emit`]); a checkpoint is one atomic append (see
//!   [`crate::projection::checkpoint`]). So after a crash the runner resumes from the last
//!   checkpoint, re-runs the events after it, re-emits nothing twice, and ends with the same
//!   state as a rebuild from scratch ([`thread`], [`batch`]).
//! - A failure of user code, or a panic of it, faults this projection only, at the event that
//!   caused it (`Fault::position`) with the progress before that event kept ([`thread`]).
//! - States are served as their compact JSON text, and their memory counts against the
//!   engine's memory limit ([`served`]).
//! - Each runner has its own wake-up: a stop wakes its thread only, not the store's other
//!   waiters on commits ([`control`]).
//!
//! Layout: [`options`] (what the caller chooses), [`status`] (what it reads back), [`handle`]
//! ([`ProjectionRunner`]: open, start/stop/halt/abandon, reset, delete, status, served states),
//! [`thread`] (the runner thread's loop and checkpoints), [`batch`] (applying one batch),
//! [`served`] (the served states and their memory), [`control`] (the control word and the
//! wait).

mod batch;
mod control;
mod handle;
mod options;
mod served;
mod status;
mod thread;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::AtomicU8;
use std::time::Instant;

use event_listener::Event;
use parking_lot::{Mutex, RwLock};

use super::engine::ProjectionSource;
use crate::Store;
use served::Served;

pub use handle::ProjectionRunner;
pub use options::{EngineBuilder, ProjectionIdentity, RunnerOptions};
pub use status::{Fault, ProjectionStatus, RunState};

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

#[cfg(test)]
mod test_support {
    use crate::projection::{Emitter, Projection, ProjectionError, ProjectionSource};
    use crate::RecordedEvent;

    /// Counts the events of stream `s`.
    pub(super) struct Count;

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
}
