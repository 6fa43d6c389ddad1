//! What the caller of a runner chooses: how its engine is built, its checkpoint cadence and
//! batch size ([`RunnerOptions`]), and its identity ([`ProjectionIdentity`]: which checkpoints
//! are its own and which ids its emits get; the caller owns it and must persist it).

use std::sync::Arc;
use std::time::Duration;

use crate::error::Result;
use crate::projection::engine::{ProjectionEngine, ProjectionError};

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
///
/// [`super::emit_id`]: crate::projection::emit_id
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
