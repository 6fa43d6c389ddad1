//! The shared state of an open store: the segment set, the published end of the log, the fault
//! flag, and the lookups every reader and the writer build on.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::damage::{Damage, DamageLog};
use crate::error::{Error, Result};
use crate::event::{Deletion, StreamHead, StreamMetadata};
use crate::frame::{decode_frame, EventView, FrameError};
use crate::hash::hash_str;
use crate::index_file::SegmentIndex;
use crate::merged::{units, Probe, Unit};
use crate::options::Options;
use crate::segment::{frame_error, OpenSegment, SealedSegment};
use crate::stats::Stats;

/// The frame read at `offset` of `path` must hold the event at `position`: a corruption error
/// naming both otherwise.
fn expect_position(path: &Path, offset: u64, view: &EventView<'_>, position: u64) -> Result<()> {
    if view.position == position {
        return Ok(());
    }
    Err(Error::corruption(
        path,
        offset,
        format!(
            "frame holds position {}, expected {position}",
            view.position
        ),
    ))
}

/// Prefix of the stream that holds a stream's metadata and deletion records: `$$<stream>`.
pub(crate) const META_STREAM_PREFIX: &str = "$$";
/// Event type of the records in a metadata stream.
pub(crate) const META_EVENT_TYPE: &str = "$metadata";

/// The name of the metadata stream of `stream`.
pub(crate) fn meta_stream_name(stream: &str) -> String {
    format!("{META_STREAM_PREFIX}{stream}")
}

/// The JSON body of a `$metadata` record: the complete metadata state after it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct MetaRecord {
    pub metadata: StreamMetadata,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion: Option<Deletion>,
}

/// The segments as one consistent set. Replaced as a whole when a segment is sealed.
pub(crate) struct LogState {
    pub sealed: Vec<Arc<SealedSegment>>,
    pub open: Arc<OpenSegment>,
}

/// Everything the store handles, the writer and subscriptions share.
pub(crate) struct Shared {
    pub dir: PathBuf,
    pub options: Options,
    pub state: RwLock<Arc<LogState>>,
    /// Every position below this is durable (per the fsync policy) and readable. Published by
    /// the writer only after the bytes are written and synced and the memtable updated.
    pub committed: AtomicU64,
    pub read_only: AtomicBool,
    pub fault: Mutex<Option<String>>,
    /// Set when a write ran out of space (and nothing of it stayed), cleared by the next write
    /// that succeeds. Not a fault: the store keeps accepting (and retrying) writes.
    pub disk_full: DiskFull,
    /// Damage found since open (at open, by reads, by index rebuilds).
    pub damage: DamageLog,
    pub closed: AtomicBool,
    /// Notified after every publish of `committed`, and on close.
    pub commits: event_listener::Event,
    pub stats: Stats,
    /// Whether a scavenge runs (at most one at a time).
    pub scavenge: crate::scavenge::ScavengeGuard,
    /// The merged index files lookups use, and the merger's state.
    pub merged: crate::merged::Merged,
    /// Bumped by [`Shared::invalidate_heads`]: the writer drops its cached heads when it sees a
    /// new value.
    pub heads_epoch: AtomicU64,
    /// The callers' spinning slot: at most one caller polls for its append's answer at a time
    /// (see [`crate::spin`]).
    pub caller_spin: crate::spin::Spinner,
    /// Callers of the blocking [`crate::Store::append`] waiting for their answer now: only a
    /// caller that waits alone spins (with company, group commit already shares the hand-offs,
    /// and a spinner would take a CPU from the others).
    pub callers_waiting: std::sync::atomic::AtomicUsize,
}

/// The disk-full state: whether the last write attempt ran out of space, what it said, and how
/// much free space it takes for that write to fit again.
#[derive(Default)]
pub(crate) struct DiskFull {
    set: AtomicBool,
    state: Mutex<Option<(String, u64)>>,
}

impl DiskFull {
    /// Records that a write ran out of space; `needed`: the free bytes that write needs (with
    /// a margin), `u64::MAX` when free space does not tell (a full quota).
    pub fn set(&self, reason: impl Into<String>, needed: u64) {
        *self.state.lock() = Some((reason.into(), needed));
        self.set.store(true, Ordering::Release);
    }

    /// Records that a write succeeded: space is available again.
    pub fn clear(&self) {
        if self.set.load(Ordering::Acquire) {
            self.set.store(false, Ordering::Release);
            *self.state.lock() = None;
        }
    }

    /// `(reason, needed)` while the disk is full, `None` otherwise.
    pub fn state(&self) -> Option<(String, u64)> {
        if !self.set.load(Ordering::Acquire) {
            return None;
        }
        self.state.lock().clone()
    }

    /// The reason while the disk is full, `None` otherwise.
    #[cfg(test)]
    pub fn reason(&self) -> Option<String> {
        self.state().map(|(reason, _)| reason)
    }
}

/// Free bytes to ask for, beyond the failed write itself, before a full disk counts as free
/// again: file-system metadata and the next appends.
pub(crate) const DISK_FULL_MARGIN: u64 = 64 * 1024;

/// The free space a write of `bytes` that failed with `e` needs: `u64::MAX` for a full quota
/// (`EDQUOT`), which free space on the file system does not show.
pub(crate) fn space_needed(e: &std::io::Error, bytes: u64) -> u64 {
    if e.raw_os_error() == Some(libc::EDQUOT) {
        return u64::MAX;
    }
    bytes.saturating_add(DISK_FULL_MARGIN)
}

impl Shared {
    pub fn snapshot(&self) -> Arc<LogState> {
        self.state.read().clone()
    }

    /// Makes the writer forget its cached stream heads before its next lookup. For any change
    /// of the sealed segments that could change what the indexes answer for a stream's head
    /// (a segment swap that dropped index entries, say). A scavenge that keeps the index
    /// entries of removed events changes no head and needs no call; a seal never does.
    #[allow(dead_code)] // the hook of segment swaps (scavenging)
    pub fn invalidate_heads(&self) {
        self.heads_epoch.fetch_add(1, Ordering::AcqRel);
    }

    pub fn committed(&self) -> u64 {
        self.committed.load(Ordering::Acquire)
    }

    /// Makes the store read-only for good, remembering the first reason.
    pub fn poison(&self, reason: impl Into<String>) {
        let mut fault = self.fault.lock();
        if fault.is_none() {
            *fault = Some(reason.into());
        }
        self.read_only.store(true, Ordering::Release);
    }

    /// `Err(ReadOnly)` once the store refuses writes.
    pub fn check_writable(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        if self.read_only.load(Ordering::Acquire) {
            let reason = self
                .fault
                .lock()
                .clone()
                .unwrap_or_else(|| "opened read-only".into());
            return Err(Error::ReadOnly { reason });
        }
        Ok(())
    }

    /// Records damage found in the data files (once per range); damage whose events are not
    /// known ([`Damage::indexed`] false) makes the store read-only: a stream head may be among
    /// the lost events. Returns whether the range was new.
    pub fn record_damage(&self, d: Damage) -> bool {
        let indexed = d.indexed;
        let summary = format!(
            "damaged data in {} at offset {} ({} bytes): {}",
            d.file.display(),
            d.offset,
            d.length,
            d.detail
        );
        let new = self.damage.record(d, self.options.on_damage.as_ref());
        if !indexed {
            self.poison(summary);
        }
        new
    }

    /// Records the damage a corruption error reports and passes every result through. Damage
    /// in a sealed segment read through an intact index leaves appends running; anything else
    /// (the open segment, an index that cannot be rebuilt, an inconsistent record) makes the
    /// store read-only.
    pub fn note<T>(&self, r: Result<T>) -> Result<T> {
        if let Err(Error::Corruption {
            file,
            offset,
            position,
            detail,
        }) = &r
        {
            let state = self.snapshot();
            let sealed = state.sealed.iter().find(|s| &s.path == file);
            let length = match (sealed, position) {
                (Some(seg), Some(p)) => seg.extent(*offset, *p),
                _ => 0,
            };
            let d = Damage {
                file: file.clone(),
                offset: *offset,
                length,
                positions: position.map_or(0..0, |p| p..p + 1),
                indexed: sealed.is_some(),
                detail: detail.clone(),
            };
            self.record_damage(d);
        }
        r
    }

    /// The index of a sealed segment (checked, or rebuilt, on first use), recording the damage a
    /// rebuild found.
    pub fn index<'s>(&self, seg: &'s SealedSegment) -> Result<&'s SegmentIndex> {
        let r = seg.index();
        if !seg.lost().is_empty() && seg.first_report_of_lost() {
            for d in seg.lost() {
                self.record_damage(d.clone());
            }
        }
        self.note(r)
    }

    /// Calls `f` with the event at `position` (which must be below the limit the caller uses);
    /// an error for a position without an event (removed).
    pub fn with_event<T>(
        &self,
        state: &LogState,
        position: u64,
        f: impl FnOnce(&EventView<'_>) -> T,
    ) -> Result<T> {
        self.with_event_opt(state, position, f)?.ok_or_else(|| {
            Error::invalid("position", format!("{position} holds no event (removed)"))
        })
    }

    /// Calls `f` with the event at `position` (below the caller's limit); `None` when the
    /// position holds no event (removed). A position lost in damage is an error.
    pub fn with_event_opt<T>(
        &self,
        state: &LogState,
        position: u64,
        f: impl FnOnce(&EventView<'_>) -> T,
    ) -> Result<Option<T>> {
        let r = self
            .with_event_inner(state, position, f)
            .map_err(|e| e.at_position(position));
        self.note(r)
    }

    fn with_event_inner<T>(
        &self,
        state: &LogState,
        position: u64,
        f: impl FnOnce(&EventView<'_>) -> T,
    ) -> Result<Option<T>> {
        if position >= state.open.first_position {
            let open = &state.open;
            let Some((offset, end)) = open.locate(position)? else {
                return Ok(None);
            };
            let mut buf = Vec::new();
            let bytes = open.frame(offset, end, &mut buf)?;
            let (view, _) = decode_frame(bytes).map_err(|e| frame_error(&open.path, offset, e))?;
            expect_position(&open.path, offset, &view, position)?;
            return Ok(Some(f(&view)));
        }
        let seg = sealed_for(state, position)
            .ok_or_else(|| Error::invalid("position", format!("{position} is not in the log")))?;
        let index = self.index(seg)?;
        Ok(seg.event_in(index, position)?.map(|v| f(&v)))
    }

    /// Visits events with positions in `[from, to)` in ascending order, reading sequentially
    /// and skipping positions without an event (removed). `f` returns `Break` to stop early. A
    /// position lost in damage is an error (after the events before it were visited).
    pub fn scan_forward(
        &self,
        state: &LogState,
        from: u64,
        to: u64,
        mut f: impl FnMut(&EventView<'_>) -> ControlFlow<()>,
    ) -> Result<()> {
        let r = self.scan_forward_inner(state, from, to, &mut f);
        self.note(r)
    }

    fn scan_forward_inner(
        &self,
        state: &LogState,
        from: u64,
        to: u64,
        f: &mut dyn FnMut(&EventView<'_>) -> ControlFlow<()>,
    ) -> Result<()> {
        let mut position = from;
        let start = state
            .sealed
            .partition_point(|s| s.end_position() <= position);
        for seg in &state.sealed[start..] {
            if position >= to {
                return Ok(());
            }
            let index = self.index(seg)?;
            let end = seg.end_position().min(to);
            while position < end {
                if let Some(view) = seg.event_in(index, position)? {
                    if f(&view).is_break() {
                        return Ok(());
                    }
                }
                position += 1;
            }
        }
        if position >= to {
            return Ok(());
        }
        let open = &state.open;
        if position < open.first_position {
            return Ok(());
        }
        // Sequential reads of the open segment in large chunks, a window of offsets at a time.
        const WINDOW: usize = 4096;
        let mut reader = ChunkReader::new(open);
        while position < to {
            let (window, end): (Vec<u64>, u64) = {
                let table = open.table.read();
                let lo = (position - open.first_position) as usize;
                let hi = (to - open.first_position).min(table.offsets.len() as u64) as usize;
                let window = table
                    .offsets
                    .get(lo..hi.min(lo + WINDOW))
                    .map(<[u64]>::to_vec)
                    .unwrap_or_default();
                (window, table.end)
            };
            if window.is_empty() {
                return Ok(());
            }
            for offset in window {
                let p = position;
                position += 1;
                if offset == crate::index_file::NO_FRAME {
                    // Removed (skip), or lost in damage (the error).
                    open.offset(p).map_err(|e| e.at_position(p))?;
                    continue;
                }
                // From the map where it reaches the published end, else through the buffer.
                let view = match open.mapped(offset, end) {
                    Some(bytes) => decode_frame(bytes)
                        .map(|(view, _)| view)
                        .map_err(|e| frame_error(&open.path, offset, e)),
                    None => reader.frame_at(offset),
                }
                .map_err(|e| e.at_position(p))?;
                expect_position(&open.path, offset, &view, p).map_err(|e| e.at_position(p))?;
                if f(&view).is_break() {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// The index a lookup unit is probed through (a segment's index checked, or rebuilt, on
    /// first use).
    fn probe<'u>(&self, unit: &Unit<'u>) -> Result<Probe<'u>> {
        Ok(match *unit {
            Unit::Segment { seg, .. } => Probe::Segment(self.index(seg)?),
            Unit::Merged { file, .. } => Probe::Merged(file),
        })
    }

    /// Stream-index entries `(revision, position)` for revisions in `[from, to]`, ascending, with
    /// position below `limit`. Entries of other streams sharing the hash are included; callers
    /// compare the stream name of the events they read.
    pub fn stream_entries(
        &self,
        state: &LogState,
        stream: &str,
        from: u64,
        to: u64,
        limit: u64,
    ) -> Result<Vec<(u64, u64)>> {
        let hash = hash_str(stream);
        let mut out = Vec::new();
        let set = self.merged.snapshot();
        for unit in units(state, &set) {
            let window = unit.window();
            if window.start >= limit {
                break;
            }
            let probe = self.probe(&unit)?;
            if probe.may_contain_stream(hash) {
                out.extend(
                    probe
                        .stream_entries(hash, from, to)
                        .into_iter()
                        .filter(|e| window.contains(&e.position))
                        .map(|e| (e.revision, e.position)),
                );
            }
        }
        let table = state.open.table.read();
        if let Some(v) = table.streams.get(stream) {
            let lo = v.partition_point(|&(r, _)| r < from);
            out.extend(
                v[lo..]
                    .iter()
                    .take_while(|&&(r, p)| r <= to && p < limit)
                    .copied(),
            );
        }
        out.retain(|&(_, p)| p < limit);
        Ok(out)
    }

    /// The last `(revision, position)` of `stream` below `limit`, verified by name (a damaged
    /// event on the way is an error: the writer's heads must be exact).
    pub fn stream_last(
        &self,
        state: &LogState,
        stream: &str,
        limit: u64,
    ) -> Result<Option<(u64, u64)>> {
        self.stream_last_with(state, stream, limit, false)
    }

    /// [`Shared::stream_last`]; with `trust_intact_index`, an entry whose event is damaged in a
    /// sealed segment with an intact index counts as the stream's (the index still tells its
    /// stream hash and revision): reads of the stream's other events do not need the damaged
    /// one, which answers `Corruption` when read itself.
    ///
    /// Probes the open segment's memtable, then the lookup units newest first (the sealed
    /// segments after the merged chain, the chain's files, the segments before it): `O(log n)`
    /// probes for `n` sealed segments once the merger caught up.
    fn stream_last_with(
        &self,
        state: &LogState,
        stream: &str,
        limit: u64,
        trust_intact_index: bool,
    ) -> Result<Option<(u64, u64)>> {
        {
            let table = state.open.table.read();
            if let Some(v) = table.streams.get(stream) {
                if let Some(&e) = v.iter().rev().find(|&&(_, p)| p < limit) {
                    return Ok(Some(e));
                }
            }
        }
        let hash = hash_str(stream);
        let set = self.merged.snapshot();
        // A position without a frame (removed by a scavenge) is trusted by its index entry
        // (stream hash and revision): the scavenge kept that entry for the stream's head.
        let owns =
            |position: u64| match self.with_event_opt(state, position, |v| v.stream == stream) {
                Ok(found) => Ok(found.unwrap_or(true)),
                Err(Error::Corruption { .. })
                    if trust_intact_index
                        && sealed_for(state, position).is_some_and(|s| s.lost().is_empty()) =>
                {
                    Ok(true)
                }
                Err(e) => Err(e),
            };
        for unit in units(state, &set).iter().rev() {
            let window = unit.window();
            // A segment sealed after the caller read `limit` may hold positions past it.
            if window.start >= limit {
                continue;
            }
            let probe = self.probe(unit)?;
            if !probe.may_contain_stream(hash) {
                continue;
            }
            let Some(last) = probe.last_stream_entry(hash) else {
                continue;
            };
            let usable = |p: u64| p < limit && window.contains(&p);
            if usable(last.position) && owns(last.position)? {
                return Ok(Some((last.revision, last.position)));
            }
            // Past the limit or the window, or a hash collision: look for the stream's own
            // entries below it.
            for e in probe.stream_entries(hash, 0, u64::MAX).into_iter().rev() {
                if usable(e.position) && owns(e.position)? {
                    return Ok(Some((e.revision, e.position)));
                }
            }
        }
        Ok(None)
    }

    /// Where `(stream, id)` was appended: `(revision, position)`, verified against the event
    /// (or, for an event a scavenge removed, taken from the index entries it kept).
    pub fn find_id(&self, state: &LogState, stream: &str, id: Uuid) -> Result<Option<(u64, u64)>> {
        let hash = hash_str(stream);
        let id128 = id.as_u128();
        let mut candidates: Vec<u64> = Vec::new();
        let set = self.merged.snapshot();
        for unit in units(state, &set) {
            candidates.extend(self.probe(&unit)?.find_id(hash, id128));
        }
        if let Some(&rev) = state.open.table.read().ids.get(&(hash, id128)) {
            candidates.push(rev);
        }
        candidates.sort_unstable();
        candidates.dedup();
        for rev in candidates {
            for (r, p) in self.stream_entries(state, stream, rev, rev, u64::MAX)? {
                if r != rev {
                    continue;
                }
                // A removed event (no frame) is trusted by its id and stream entries, which a
                // scavenge keeps for the streams that still exist, as its segment's own index
                // says: a merged index file built before the scavenge still lists the ids it
                // dropped (of deleted streams), which must not answer as a replay.
                let matches =
                    match self.with_event_opt(state, p, |v| v.stream == stream && v.id == id)? {
                        Some(m) => m,
                        None => match sealed_for(state, p) {
                            Some(seg) => self.index(seg)?.find_id(hash, id128).contains(&r),
                            None => true,
                        },
                    };
                if matches {
                    return Ok(Some((r, p)));
                }
            }
        }
        Ok(None)
    }

    /// The head of `stream` as of positions below `limit`.
    /// Read paths only: a damaged last event in a sealed segment with an intact index does not
    /// hide the stream's other events.
    pub fn head(&self, state: &LogState, stream: &str, limit: u64) -> Result<StreamHead> {
        let last = self.stream_last_with(state, stream, limit, true)?;
        let meta = self.meta_record(state, stream, limit)?;
        Ok(StreamHead {
            name: stream.to_owned(),
            last_revision: last.map(|(r, _)| r),
            last_position: last.map(|(_, p)| p),
            deletion: meta.deletion,
            metadata: meta.metadata,
        })
    }

    /// The latest metadata record of `stream` below `limit` (default when none).
    pub fn meta_record(&self, state: &LogState, stream: &str, limit: u64) -> Result<MetaRecord> {
        let meta_stream = meta_stream_name(stream);
        let Some((_, pos)) = self.stream_last(state, &meta_stream, limit)? else {
            return Ok(MetaRecord::default());
        };
        let parsed = self.with_event(state, pos, |v| {
            serde_json::from_slice::<MetaRecord>(v.data).map_err(|e| e.to_string())
        })?;
        parsed.map_err(|why| {
            Error::corruption(
                &self.dir,
                pos,
                format!("metadata record of {stream} at position {pos} is not valid: {why}"),
            )
        })
    }
}

/// The sealed segment holding `position`, if any.
pub(crate) fn sealed_for(state: &LogState, position: u64) -> Option<&Arc<SealedSegment>> {
    let i = state
        .sealed
        .partition_point(|s| s.first_position <= position);
    let seg = state.sealed.get(i.checked_sub(1)?)?;
    (position < seg.end_position()).then_some(seg)
}

/// Sequential reads of the open segment through a large buffer: frames are decoded from the
/// buffer while they lie in it, and the buffer is refilled (grown for a frame larger than it)
/// from the offset of the first frame that does not.
struct ChunkReader<'o> {
    open: &'o OpenSegment,
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    start: u64,
    /// Valid bytes in `buf`.
    have: usize,
}

impl<'o> ChunkReader<'o> {
    const CHUNK: usize = 1 << 20;

    fn new(open: &'o OpenSegment) -> Self {
        ChunkReader {
            open,
            buf: Vec::new(),
            start: 0,
            have: 0,
        }
    }

    /// The frame at `offset`, decoded and checked.
    fn frame_at(&mut self, offset: u64) -> Result<EventView<'_>> {
        let path = &self.open.path;
        if !self.holds_frame(offset) {
            // Refill from `offset`, growing the buffer for a frame larger than a chunk. A length
            // prefix is untrusted until the file holds that many bytes: never grow past that.
            if self.buf.len() < Self::CHUNK {
                self.buf.resize(Self::CHUNK, 0);
            }
            self.start = offset;
            self.have = self.open.read_at_most(offset, &mut self.buf)?;
            if self.have >= 4 {
                let n = &self.buf[..4];
                let need = 8 + u32::from_le_bytes([n[0], n[1], n[2], n[3]]) as usize;
                if need > self.buf.len() {
                    if offset.saturating_add(need as u64) > self.open.file_len()? {
                        return Err(frame_error(path, offset, FrameError::Short));
                    }
                    self.buf.resize(need, 0);
                    self.have = self.open.read_at_most(offset, &mut self.buf)?;
                }
            }
        }
        let at = (offset - self.start) as usize;
        decode_frame(&self.buf[at..self.have])
            .map(|(view, _)| view)
            .map_err(|e| frame_error(path, offset, e))
    }

    /// Whether the buffer holds the whole frame starting at `offset` (as far as its length
    /// prefix tells; the decoder checks the rest).
    fn holds_frame(&self, offset: u64) -> bool {
        if offset < self.start || offset >= self.start + self.have as u64 {
            return false;
        }
        let at = (offset - self.start) as usize;
        let avail = self.have - at;
        if avail < 8 {
            return false;
        }
        let n = &self.buf[at..at + 4];
        let need = 8 + u32::from_le_bytes([n[0], n[1], n[2], n[3]]) as usize;
        need <= avail
    }
}
