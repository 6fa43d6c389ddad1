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
    let state = shared.snapshot();
    let sealed: Vec<Arc<SealedSegment>> = state
        .sealed
        .iter()
        .filter(|s| s.end_position() <= limit)
        .cloned()
        .collect();
    for run in runs(&sealed, shared.options.segment_size) {
        if stop.load(std::sync::atomic::Ordering::Acquire) {
            return Ok(false);
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
