//! Scavenging: reclaiming the space of events no read can return any more.
//!
//! [`Store::scavenge`] rewrites sealed segments (oldest first) without their removable events,
//! online and throttled. What is removable is decided once, from the metadata as of the
//! committed position at the start of the run ([`plan`]); each segment is rewritten to new
//! files ([`rewrite`]) and swapped in atomically ([`swap`]); then runs of small neighbouring
//! segments are merged into one ([`merge`]). [`throttle`] keeps the I/O rate.
//!
//! Invariants:
//! - Positions and revisions of kept events never change; removed positions read as "not
//!   there" (an index offset [`crate::index_file::NO_FRAME`] in an intact index file), never as
//!   damage.
//! - The last event of every stream that is not hard-deleted keeps its frame; the index keeps
//!   the stream entry of each stream's last event per segment (stream heads survive) and the
//!   stream and id entries of removed events of user streams that still exist (idempotent
//!   retries survive); the removed-events file ([`sidecar`]) holds the same entries, so that an
//!   index rebuilt from the segment keeps them.
//! - Nothing past the run's start position and nothing in the open segment is touched.
//! - Crash safety: see [`swap`] (the order of the renames, and what an open finishes).

mod merge;
mod plan;
mod rewrite;
pub(crate) mod sidecar;
mod swap;
mod throttle;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::store::Store;
pub(crate) use swap::finish_interrupted;

/// How a scavenge runs.
#[derive(Clone, Debug, Default)]
pub struct ScavengeOptions {
    /// Throttle: bytes read+written per second; `None` = unthrottled.
    pub max_bytes_per_s: Option<u64>,
    /// Set to true by another thread to stop the run between (or inside) segment rewrites;
    /// a stopped run leaves the store consistent and a later run finishes the job.
    pub stop: Arc<AtomicBool>,
}

/// Progress so far (also the final figures).
#[derive(Clone, Debug, Default, Serialize)]
pub struct ScavengeProgress {
    /// Sealed segments handled so far (rewritten or found to need nothing).
    pub segments_done: u64,
    /// Sealed segments this run considers.
    pub segments_total: u64,
    /// Bytes of the sealed segments (and their index files) considered, before the run.
    pub bytes_before: u64,
    /// What they occupy after: the segments done so far plus the untouched remainder.
    pub bytes_after: u64,
    /// `bytes_before - bytes_after`.
    pub bytes_reclaimed: u64,
    /// Events removed so far.
    pub events_removed: u64,
    /// True when the run ended because `stop` was set.
    pub stopped: bool,
}

/// Whether a scavenge runs on a store (at most one at a time).
#[derive(Default)]
pub(crate) struct ScavengeGuard {
    running: AtomicBool,
}

/// Clears the running flag when the run ends, however it ends.
struct Running<'a>(&'a AtomicBool);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl Store {
    /// Runs one scavenge over the sealed segments (blocking): each segment holding removable
    /// events is rewritten without them and swapped in; `progress` is called after each
    /// segment. Appends and reads go on meanwhile (the writer is held only for each swap).
    ///
    /// Errors: [`Error::ScavengeRunning`] if one is already running on this store,
    /// [`Error::ReadOnly`] on a read-only store; I/O errors leave the store consistent (a
    /// later run finishes the job).
    pub fn scavenge(
        &self,
        options: ScavengeOptions,
        progress: &mut dyn FnMut(&ScavengeProgress),
    ) -> Result<ScavengeProgress> {
        let shared = self.shared();
        shared.check_writable()?;
        if shared
            .scavenge
            .running
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(Error::ScavengeRunning);
        }
        let _running = Running(&shared.scavenge.running);
        run(shared, &options, progress)
    }
}

/// One run (the caller holds the running flag). Segments are taken from the current list one
/// at a time (by first position), so that no segment a swap replaced is held longer than its
/// rewrite: the disk space of a rewritten segment is freed as soon as readers drop it.
fn run(
    shared: &Arc<crate::log::Shared>,
    options: &ScavengeOptions,
    progress: &mut dyn FnMut(&ScavengeProgress),
) -> Result<ScavengeProgress> {
    let limit = shared.committed();
    let mut plan = plan::Plan::new(shared, limit);
    let mut p = ScavengeProgress::default();
    let firsts: Vec<u64> = {
        let state = shared.snapshot();
        let segments: Vec<_> = state
            .sealed
            .iter()
            .filter(|s| s.end_position() <= limit)
            .collect();
        for seg in &segments {
            p.bytes_before += rewrite::segment_bytes(seg);
        }
        segments.iter().map(|s| s.first_position).collect()
    };
    p.segments_total = firsts.len() as u64;
    p.bytes_after = p.bytes_before;
    let mut throttle = throttle::Throttle::new(options.max_bytes_per_s);
    for first in firsts {
        if options.stop.load(Ordering::Acquire) {
            p.stopped = true;
            break;
        }
        let seg = shared
            .snapshot()
            .sealed
            .iter()
            .find(|s| s.first_position == first)
            .cloned();
        if let Some(seg) = seg {
            let before = rewrite::segment_bytes(&seg);
            match rewrite::rewrite_segment(shared, &seg, &mut plan, &mut throttle, &options.stop)? {
                rewrite::Outcome::Unchanged => {}
                rewrite::Outcome::Stopped => {
                    p.stopped = true;
                    break;
                }
                rewrite::Outcome::Rewritten(done) => {
                    let (removed, after) = (done.events_removed, done.bytes_after);
                    drop(seg);
                    swap::swap_in(shared, done)?;
                    p.events_removed += removed;
                    p.bytes_after = p.bytes_after.saturating_sub(before) + after;
                    p.bytes_reclaimed = p.bytes_before.saturating_sub(p.bytes_after);
                }
            }
        }
        p.segments_done += 1;
        progress(&p);
    }
    if !p.stopped {
        let finished = merge::merge_small(
            shared,
            limit,
            &mut throttle,
            &options.stop,
            &mut p,
            progress,
        )?;
        p.stopped = !finished;
    }
    Ok(p)
}
