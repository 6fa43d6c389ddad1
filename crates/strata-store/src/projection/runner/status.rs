//! What a runner reports: whether it runs ([`RunState`]), why it faulted ([`Fault`]), and a
//! point-in-time view ([`ProjectionStatus`]). The events/s rate comes from samples the runner
//! thread adds once per batch; they are pruned to [`RATE_WINDOW`] and thinned to at most
//! [`MAX_SAMPLES`], so the window stays bounded whether or not anyone reads the rate.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::projection::engine::ProjectionError;

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
    pub(super) fn user(e: ProjectionError, position: Option<u64>) -> Fault {
        Fault {
            message: e.message,
            stack: e.stack,
            position,
        }
    }

    pub(super) fn store(e: Error, position: Option<u64>) -> Fault {
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

const RATE_WINDOW: Duration = Duration::from_secs(5);
/// Most rate samples kept (one per batch otherwise: thousands within the window when batches
/// are small and fast).
const MAX_SAMPLES: usize = 64;

/// Drops the rate samples older than [`RATE_WINDOW`] before `now`, and thins them to at most
/// [`MAX_SAMPLES`] (the runner adds one per batch, whether or not anyone reads the rate).
pub(super) fn prune_samples(samples: &mut VecDeque<(Instant, u64)>, now: Instant) {
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

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::MAX_SAMPLES;
    use crate::event::ExpectedRevision;
    use crate::projection::runner::test_support::Count;
    use crate::projection::{typed_engine, ProjectionRunner, RunnerOptions};
    use crate::NewEvent;

    /// The events/s window is bounded even when nobody reads the status (the runner adds one
    /// sample per batch).
    #[test]
    fn rate_samples_stay_bounded_without_status_reads() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::test_support::store(dir.path());
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
}
