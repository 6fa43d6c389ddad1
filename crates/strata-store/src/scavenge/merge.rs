//! Merging small neighbours: after the rewrites, runs of two or more consecutive sealed
//! segments whose files together fit in one segment (`segment_size`) become one file, named
//! after the first (so file names still give each segment's first position, and the segments
//! still cover the log without overlap).

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use super::rewrite::{merge_segments, segment_bytes, Outcome};
use super::throttle::Throttle;
use super::{swap, ScavengeProgress};
use crate::error::Result;
use crate::frame::SEGMENT_HEADER_LEN;
use crate::log::Shared;
use crate::segment::SealedSegment;

/// The runs to merge among `sealed` (in log order): greedy, each run as long as its files
/// (one header counted) fit in `segment_size`; runs of one segment are left alone.
pub(crate) fn runs(
    sealed: &[Arc<SealedSegment>],
    segment_size: u64,
) -> Vec<Vec<Arc<SealedSegment>>> {
    let mut out = Vec::new();
    let mut run: Vec<Arc<SealedSegment>> = Vec::new();
    let mut total = 0u64;
    for seg in sealed {
        let len = seg.map.len() as u64;
        let added = len.saturating_sub(SEGMENT_HEADER_LEN);
        if !run.is_empty() && total + added <= segment_size {
            total += added;
            run.push(seg.clone());
            continue;
        }
        if run.len() >= 2 {
            out.push(std::mem::take(&mut run));
        }
        run = vec![seg.clone()];
        total = len;
    }
    if run.len() >= 2 {
        out.push(run);
    }
    out
}

/// Merges the runs of small sealed segments below `limit`, updating `p` and calling
/// `progress` after each merge. Returns `false` when `stop` ended it.
pub(crate) fn merge_small(
    shared: &Shared,
    limit: u64,
    throttle: &mut Throttle,
    stop: &AtomicBool,
    p: &mut ScavengeProgress,
    progress: &mut dyn FnMut(&ScavengeProgress),
) -> Result<bool> {
    // The runs by first positions: no segment is held longer than its own merge.
    let planned: Vec<Vec<u64>> = {
        let state = shared.snapshot();
        let sealed: Vec<Arc<SealedSegment>> = state
            .sealed
            .iter()
            .filter(|s| s.end_position() <= limit)
            .cloned()
            .collect();
        runs(&sealed, shared.options.segment_size)
            .iter()
            .map(|run| run.iter().map(|s| s.first_position).collect())
            .collect()
    };
    for firsts in planned {
        if stop.load(std::sync::atomic::Ordering::Acquire) {
            return Ok(false);
        }
        let state = shared.snapshot();
        let run: Vec<Arc<SealedSegment>> = firsts
            .iter()
            .filter_map(|f| {
                state
                    .sealed
                    .iter()
                    .find(|s| s.first_position == *f)
                    .cloned()
            })
            .collect();
        drop(state);
        if run.len() != firsts.len() {
            continue;
        }
        let before: u64 = run.iter().map(|s| segment_bytes(s)).sum();
        match merge_segments(shared, &run, throttle, stop)? {
            Outcome::Unchanged => {}
            Outcome::Stopped => return Ok(false),
            Outcome::Rewritten(r) => {
                let after = r.bytes_after;
                swap::swap_in(shared, r)?;
                p.bytes_after = p.bytes_after.saturating_sub(before) + after;
                p.bytes_reclaimed = p.bytes_before.saturating_sub(p.bytes_after);
                progress(p);
            }
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{ExpectedRevision, NewEvent};

    /// Sealed segments of about 1.3 KB each (segment size 4096): runs of three fit.
    #[test]
    fn runs_are_greedy_and_fit_in_one_segment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = crate::Store::open(
            dir.path(),
            crate::Options {
                segment_size: 4096,
                ..crate::test_support::no_fsync()
            },
        )
        .expect("open");
        for i in 0..24 {
            // About 1.2 KB per append: a few fill a 4 KiB segment.
            let data = format!("{{\"i\":{i},\"pad\":\"{}\"}}", "x".repeat(1100));
            store
                .append("s", ExpectedRevision::Any, vec![NewEvent::json("T", data)])
                .expect("append");
        }
        let state = store.shared().snapshot();
        let sealed = &state.sealed;
        assert!(sealed.len() >= 6, "{} sealed", sealed.len());
        // Full segments (two appends) never fit with another one.
        assert!(runs(sealed, 4096).is_empty());
        // With a larger size, greedy runs of whole neighbours, each fitting.
        let found = runs(sealed, 3 * 4096);
        assert!(!found.is_empty());
        let mut next = 0;
        for run in &found {
            assert!(run.len() >= 2);
            let total: u64 = run
                .iter()
                .map(|s| s.map.len() as u64 - SEGMENT_HEADER_LEN)
                .sum();
            assert!(total + SEGMENT_HEADER_LEN <= 3 * 4096, "{total}");
            for w in run.windows(2) {
                assert_eq!(w[0].end_position(), w[1].first_position);
            }
            let at = sealed
                .iter()
                .position(|s| Arc::ptr_eq(s, &run[0]))
                .expect("in the list");
            assert!(at >= next);
            next = at + run.len();
        }
    }
}
