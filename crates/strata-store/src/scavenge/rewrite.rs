//! Copying sealed segments to a new one without some of their events: the rewrite of one
//! segment without its removable events, and the merge of small neighbours into one. The new
//! segment and its index are written and synced under temporary names ([`TMP_SUFFIX`]) beside
//! the old files; [`super::swap`] puts them in place.

use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use foldhash::fast::RandomState;

use super::plan::Plan;
use super::sidecar::{self, Retained};
use super::throttle::Throttle;
use crate::error::{Error, Result};
use crate::file_io::AppendFile;
use crate::frame::{EventView, BODY_FIXED_LEN, FRAME_PREFIX_LEN};
use crate::index_file::{encode, SegmentIndex, StreamEntry, NO_FRAME};
use crate::log::Shared;
use crate::repair::Rewriter;
use crate::segment::{index_file_name, segment_file_name, SealedSegment};

/// Suffix of a rewritten segment and its index before their swap (`<first>.seg.scv`,
/// `<first>.idx.scv`).
pub(crate) const TMP_SUFFIX: &str = ".scv";

/// A rewritten (or merged) segment, synced under its temporary names, ready to swap in.
pub(crate) struct Rewritten {
    /// First position (the name of both files).
    pub first: u64,
    /// The segments it replaces, in log order (the first one starts at `first`).
    pub replaces: Vec<Arc<SealedSegment>>,
    /// The new segment file (temporary name).
    pub seg_tmp: PathBuf,
    /// Its index file (temporary name).
    pub idx_tmp: PathBuf,
    /// Its removed-events file ([`super::sidecar`], temporary name).
    pub rmv_tmp: PathBuf,
    /// Events this rewrite removed.
    pub events_removed: u64,
    /// Bytes of the new segment and index files.
    pub bytes_after: u64,
}

/// What a rewrite came to.
pub(crate) enum Outcome {
    /// Nothing to remove (or a damaged segment, left to a repair): the segment stays.
    Unchanged,
    /// `stop` was set during the rewrite: the temporary files are removed.
    Stopped,
    /// Written and synced, ready to swap in.
    Rewritten(Rewritten),
}

/// Bytes a sealed segment occupies: its file, its index file and its removed-events file.
pub(crate) fn segment_bytes(seg: &SealedSegment) -> u64 {
    let len = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    seg.map.len() as u64 + len(seg.index_path()) + len(&sidecar::path_of(&seg.path))
}

/// The temporary names (segment, index, removed-events file) of the rewrite of the segment
/// starting at `first` in `dir`.
pub(crate) fn tmp_paths(dir: &Path, first: u64) -> (PathBuf, PathBuf, PathBuf) {
    let seg = segment_file_name(first);
    let rmv = sidecar::path_of(Path::new(&seg));
    (
        dir.join(format!("{seg}{TMP_SUFFIX}")),
        dir.join(format!("{}{TMP_SUFFIX}", index_file_name(first))),
        dir.join(format!("{}{TMP_SUFFIX}", rmv.display())),
    )
}

/// `Write` over the store's [`AppendFile`] (so that tests can fail or cut any write).
struct AppendWriter(Box<dyn AppendFile>);

impl Write for AppendWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Length of the frame of `v`.
fn frame_len(v: &EventView<'_>) -> u64 {
    (FRAME_PREFIX_LEN
        + BODY_FIXED_LEN
        + v.stream.len()
        + v.event_type.len()
        + v.data.len()
        + v.metadata.len()) as u64
}

/// Rewrites `seg` without the events `plan` removes: [`Outcome::Unchanged`] when it removes
/// none (or the segment holds damage: a repair's business).
pub(crate) fn rewrite_segment(
    shared: &Shared,
    seg: &Arc<SealedSegment>,
    plan: &mut Plan<'_>,
    throttle: &mut Throttle,
    stop: &AtomicBool,
) -> Result<Outcome> {
    let index = shared.index(seg)?;
    if !seg.lost().is_empty() {
        return Ok(Outcome::Unchanged);
    }
    let first = seg.first_position;
    let end = seg.end_position();
    // Pass 1: the decisions (reads only).
    let mut removed = Vec::with_capacity((end - first) as usize);
    let mut events_removed = 0u64;
    for p in first..end {
        let r = match seg.event_in(index, p)? {
            Some(v) => {
                if throttle.account(frame_len(&v), stop) {
                    return Ok(Outcome::Stopped);
                }
                plan.removable(&v)?
            }
            None => false,
        };
        events_removed += u64::from(r);
        removed.push(r);
    }
    if events_removed == 0 {
        return Ok(Outcome::Unchanged);
    }
    let keeps = |hash: u64| plan.keeps_entries(hash);
    copy(
        shared,
        std::slice::from_ref(seg),
        &|p| removed[(p - first) as usize],
        &keeps,
        throttle,
        stop,
    )
    .map(|o| match o {
        Outcome::Rewritten(mut r) => {
            r.events_removed = events_removed;
            Outcome::Rewritten(r)
        }
        other => other,
    })
}

/// Merges the consecutive segments `segs` into one, removing nothing.
pub(crate) fn merge_segments(
    shared: &Shared,
    segs: &[Arc<SealedSegment>],
    throttle: &mut Throttle,
    stop: &AtomicBool,
) -> Result<Outcome> {
    for seg in segs {
        shared.index(seg)?;
        if !seg.lost().is_empty() {
            return Ok(Outcome::Unchanged);
        }
    }
    copy(shared, segs, &|_| false, &|_| true, throttle, stop)
}

/// Copies the consecutive segments `segs` to one new segment (named after the first) without
/// the positions `removed` says, writing its index: the kept events' entries, plus, for
/// positions without a frame, the stream entries (all of a stream when `keeps(hash)`, its last
/// one per old segment otherwise: its head), the id entries of those entries when
/// `keeps(hash)`, and every created name of the old indexes.
fn copy(
    shared: &Shared,
    segs: &[Arc<SealedSegment>],
    removed: &dyn Fn(u64) -> bool,
    keeps: &dyn Fn(u64) -> bool,
    throttle: &mut Throttle,
    stop: &AtomicBool,
) -> Result<Outcome> {
    let Some(head) = segs.first() else {
        return Ok(Outcome::Unchanged);
    };
    let first = head.first_position;
    let io = shared.options.file_io.clone();
    let (seg_tmp, idx_tmp, rmv_tmp) = tmp_paths(&shared.dir, first);
    let cleanup = || {
        let _ = io.remove_file(&seg_tmp);
        let _ = io.remove_file(&idx_tmp);
        let _ = io.remove_file(&rmv_tmp);
    };
    cleanup();
    let file = io
        .open_append(&seg_tmp)
        .map_err(|e| Error::io(&seg_tmp, e))?;
    let mut w = Rewriter::new(
        &head.map[..],
        BufWriter::with_capacity(1 << 20, AppendWriter(file)),
        first,
    );
    let mut indexes: Vec<&SegmentIndex> = Vec::with_capacity(segs.len());
    for seg in segs {
        let index = shared.index(seg)?;
        indexes.push(index);
        for p in seg.first_position..seg.end_position() {
            match seg.event_in(index, p)? {
                Some(v) if !removed(p) => {
                    let offset = index.offset(p).unwrap_or(NO_FRAME);
                    w.event_from(&seg.map[..], &v, offset);
                    if throttle.account(2 * frame_len(&v), stop) {
                        drop(w);
                        cleanup();
                        return Ok(Outcome::Stopped);
                    }
                }
                _ => w.missing(p..p + 1, true),
            }
        }
    }
    let (out, written, table, error) = w.finish();
    let synced = match error {
        Some(e) => Err(e),
        None => out
            .into_inner()
            .map_err(|e| e.into_error())
            .and_then(|mut f| f.0.sync_data()),
    };
    if let Err(e) = synced {
        cleanup();
        return Err(Error::io(&seg_tmp, e));
    }
    let mut input = table.to_index_input(first, written);
    let has_frame = |p: u64| {
        table
            .offsets
            .get((p - first) as usize)
            .is_some_and(|&o| o != NO_FRAME)
    };
    let mut retained = Retained::default();
    for index in indexes {
        retain_entries(&mut retained, index, &has_frame, keeps)?;
    }
    input.streams.extend(retained.streams.iter().copied());
    input.ids.extend(retained.ids.iter().copied());
    input.created.extend(retained.created.iter().cloned());
    let bytes = encode(input)?;
    let rmv = sidecar::encode(&retained);
    let written_idx = io
        .write_new_file(&idx_tmp, &bytes)
        .and_then(|()| io.write_new_file(&rmv_tmp, &rmv))
        .and_then(|()| io.sync_dir(&shared.dir));
    if let Err(e) = written_idx {
        cleanup();
        return Err(Error::io(&idx_tmp, e));
    }
    Ok(Outcome::Rewritten(Rewritten {
        first,
        replaces: segs.to_vec(),
        seg_tmp,
        idx_tmp,
        rmv_tmp,
        events_removed: 0,
        bytes_after: written + (bytes.len() + rmv.len()) as u64,
    }))
}

/// Adds to `input` what the old segment index `index` knows of the positions without a frame
/// in the new segment (see [`copy`]).
fn retain_entries(
    input: &mut Retained,
    index: &SegmentIndex,
    has_frame: &dyn Fn(u64) -> bool,
    keeps: &dyn Fn(u64) -> bool,
) -> Result<()> {
    let mut last_of: HashMap<u64, u64, RandomState> = HashMap::default();
    let mut position_of: HashMap<(u64, u64), u64, RandomState> = HashMap::default();
    let old_streams: Vec<StreamEntry> = index.every_stream_entry().collect();
    for e in &old_streams {
        let last = last_of.entry(e.hash).or_insert(e.revision);
        *last = (*last).max(e.revision);
        position_of.insert((e.hash, e.revision), e.position);
    }
    for e in old_streams {
        if !has_frame(e.position) && (keeps(e.hash) || last_of.get(&e.hash) == Some(&e.revision)) {
            input.streams.push(e);
        }
    }
    for id in index.every_id_entry() {
        let removed_event = position_of
            .get(&(id.stream_hash, id.revision))
            .is_some_and(|&p| !has_frame(p));
        if removed_event && keeps(id.stream_hash) {
            input.ids.push(id);
        }
    }
    for i in 0..index.created_count() {
        input.created.push(index.created_name(i)?.to_owned());
    }
    Ok(())
}
