//! The control word (run / stop / abort) and the runner's own wake-up.
//!
//! Each runner has its own wake-up: a stop or abandon changes the control word and notifies
//! this runner's `wake` event only, so it wakes its thread, not the store's other waiters on
//! commits (subscriptions, group feeders, other runners). The idle runner thread waits on both
//! the store's commits and that event, registered before the checks.

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::RunnerShared;
use crate::error::Result;
use crate::projection::feed::Feed;

pub(super) const RUN: u8 = 0;
pub(super) const STOP: u8 = 1;
pub(super) const ABORT: u8 = 2;

/// Waits until something is committed after the feed's last poll, the control word changes
/// (this runner's own `wake`: a stop wakes no other runner, subscriber or group), `deadline`
/// passes, or the store closes.
pub(super) fn wait(sh: &RunnerShared, feed: &Feed, deadline: Option<Instant>) -> Result<()> {
    // Listen before checking: a stop between the check and the wait still wakes it.
    let stop = sh.wake.listen();
    if sh.control.load(Ordering::Acquire) != RUN {
        return Ok(());
    }
    // Every reason to wake is checked again by the caller's loop.
    feed.wait_until(stop, deadline).map(drop)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use event_listener::Listener;

    use crate::event::ExpectedRevision;
    use crate::projection::runner::test_support::Count;
    use crate::projection::{typed_engine, ProjectionRunner, RunState, RunnerOptions};
    use crate::{NewEvent, Store};

    /// Waits until `runner` has examined every event of the store and is idle.
    fn caught_up(runner: &ProjectionRunner, store: &Store) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let status = runner.status();
            assert_eq!(status.state, RunState::Running, "{status:?}");
            if status.cursor >= store.head("s").unwrap().last_revision.map_or(0, |r| r + 1) {
                return;
            }
            assert!(Instant::now() < deadline, "no progress: {status:?}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Waits until every runner has read all of stream `s` and nothing was committed for 50 ms:
    /// the runners have nothing left to checkpoint.
    fn settle(runners: &[&ProjectionRunner], store: &Store) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut last = (store.next_position(), Instant::now());
        loop {
            let end = store.next_position();
            if end != last.0 {
                last = (end, Instant::now());
            }
            let want = store.head("s").unwrap().last_revision.map_or(0, |r| r + 1);
            let at_end = runners.iter().all(|r| r.status().cursor >= want);
            if at_end && last.1.elapsed() >= Duration::from_millis(50) {
                return;
            }
            assert!(Instant::now() < deadline, "the runners never settled");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Stopping (or abandoning) one projection wakes its own runner thread only: not the store's
    /// other waiters on commits (subscriptions, group feeders, other runners).
    #[test]
    fn stopping_a_runner_wakes_no_other_waiter() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::test_support::store(dir.path());
        store
            .append("s", ExpectedRevision::Any, vec![NewEvent::json("T", "{}")])
            .unwrap();
        let open = |name: &str| {
            ProjectionRunner::open(
                store.clone(),
                name,
                1,
                typed_engine(Count),
                RunnerOptions::default(),
            )
        };
        let (a, b) = (open("a"), open("b"));
        for runner in [&a, &b] {
            // A first run and stop write the checkpoint, so a later stop writes (commits)
            // nothing.
            runner.start().unwrap();
            caught_up(runner, &store);
            runner.stop();
            runner.start().unwrap();
            caught_up(runner, &store);
        }
        // Quiet first: each runner at the end of its stream and nothing committed for a while
        // (a runner may still be writing the checkpoint of what it just applied: a commit the
        // stop did not make).
        settle(&[&a, &b], &store);
        let commits = store.shared().commits.listen();
        let other = b.shared.wake.listen();
        a.stop();
        assert!(
            !commits.discard(),
            "the stop notified every waiter on commits"
        );
        assert!(!other.discard(), "the stop woke another runner");
        a.start().unwrap();
        caught_up(&a, &store);
        settle(&[&a, &b], &store);
        let commits = store.shared().commits.listen();
        a.abandon();
        assert!(
            !commits.discard(),
            "abandon notified every waiter on commits"
        );
        // Both ended by their own wake-up; the other runner still runs, and still follows.
        assert_eq!(a.status().state, RunState::Stopped);
        assert_eq!(b.status().state, RunState::Running);
        store
            .append("s", ExpectedRevision::Any, vec![NewEvent::json("T", "{}")])
            .unwrap();
        caught_up(&b, &store);
        assert_eq!(b.state("").as_deref().map(|s| s.get()), Some("2"));
        b.stop();
    }
}
