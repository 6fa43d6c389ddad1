//! The units a lookup probes: the sealed segments before the merged chain, the chain's files,
//! the sealed segments after it, each restricted to a window of positions so that no position
//! is listed by two units.

use std::ops::Range;

use crate::index_file::{SegmentIndex, StreamEntry};
use crate::log::LogState;
use crate::segment::SealedSegment;

use super::{MergedIndex, MergedSet};

/// One unit of a lookup, with the positions it answers for.
pub(crate) enum Unit<'a> {
    /// A sealed segment (its index), for the positions in `window`.
    Segment {
        /// The segment.
        seg: &'a SealedSegment,
        /// Positions this unit answers for (a part of the segment's when the chain covers the
        /// rest).
        window: Range<u64>,
    },
    /// A merged file of the chain, for the positions in `window`.
    Merged {
        /// The file.
        file: &'a MergedIndex,
        /// Its range, cut at the snapshot's sealed end.
        window: Range<u64>,
    },
}

impl Unit<'_> {
    /// The positions this unit answers for.
    pub fn window(&self) -> &Range<u64> {
        match self {
            Unit::Segment { window, .. } | Unit::Merged { window, .. } => window,
        }
    }
}

/// The units covering every sealed position of `state`, ascending: segments before the chain,
/// the chain's files (cut at the snapshot's sealed end), segments after it. `O(chain + tail)`
/// work, plus a binary search, whatever the number of sealed segments the chain covers.
pub(crate) fn units<'a>(state: &'a LogState, set: &'a MergedSet) -> Vec<Unit<'a>> {
    let sealed_end = state.open.first_position;
    let files = &set.files[..set.files.partition_point(|m| m.range().start < sealed_end)];
    let (start, end) = match (files.first(), files.last()) {
        (Some(a), Some(b)) => (a.range().start, b.range().end.min(sealed_end)),
        _ => (sealed_end, sealed_end),
    };
    let mut out = Vec::with_capacity(files.len() + super::FAN_OUT + 1);
    for seg in state.sealed.iter() {
        if seg.first_position >= start {
            break;
        }
        let window = seg.first_position..seg.end_position().min(start);
        out.push(Unit::Segment { seg, window });
    }
    for file in files {
        let r = file.range();
        let window = r.start..r.end.min(sealed_end);
        out.push(Unit::Merged { file, window });
    }
    let after = state.sealed.partition_point(|s| s.end_position() <= end);
    for seg in &state.sealed[after..] {
        let window = seg.first_position.max(end)..seg.end_position();
        out.push(Unit::Segment { seg, window });
    }
    out
}

/// The index a unit is probed through.
#[derive(Clone, Copy)]
pub(crate) enum Probe<'a> {
    /// A segment's checked index.
    Segment(&'a SegmentIndex),
    /// A verified merged file.
    Merged(&'a MergedIndex),
}

impl Probe<'_> {
    /// Bloom check: `false` means the stream hash is absent.
    pub fn may_contain_stream(&self, hash: u64) -> bool {
        match self {
            Probe::Segment(i) => i.may_contain_stream(hash),
            Probe::Merged(m) => m.may_contain_stream(hash),
        }
    }

    /// Entries with this hash and a revision in `from..=to`, ascending.
    pub fn stream_entries(&self, hash: u64, from: u64, to: u64) -> Vec<StreamEntry> {
        match self {
            Probe::Segment(i) => i.stream_entries(hash, from, to),
            Probe::Merged(m) => m.stream_entries(hash, from, to),
        }
    }

    /// The entry with this hash and the highest revision.
    pub fn last_stream_entry(&self, hash: u64) -> Option<StreamEntry> {
        match self {
            Probe::Segment(i) => i.last_stream_entry(hash),
            Probe::Merged(m) => m.last_stream_entry(hash),
        }
    }

    /// Revisions recorded for `(stream_hash, id)`.
    pub fn find_id(&self, stream_hash: u64, id: u128) -> Vec<u64> {
        match self {
            Probe::Segment(i) => i.find_id(stream_hash, id),
            Probe::Merged(m) => m.find_id(stream_hash, id),
        }
    }
}
