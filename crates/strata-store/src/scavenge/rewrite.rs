//! Rewriting one sealed segment without its removable events: the new segment and its index
//! are written, synced, under temporary names ([`TMP_SUFFIX`], [`TMP_SUFFIX`]) beside
//! the old ones; [`super::swap`] puts them in place.

use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use foldhash::fast::RandomState;

use super::plan::Plan;
use super::throttle::Throttle;
use crate::error::{Error, Result};
use crate::file_io::AppendFile;
use crate::frame::{BODY_FIXED_LEN, FRAME_PREFIX_LEN};
use crate::index_file::{encode, StreamEntry, NO_FRAME};
use crate::log::Shared;
use crate::repair::Rewriter;
use crate::segment::{index_file_name, segment_file_name, SealedSegment};

/// Suffix of a rewritten segment and its index before their swap (`<first>.seg.scv`,
/// `<first>.idx.scv`).
pub(crate) const TMP_SUFFIX: &str = ".scv";

/// A rewritten segment, synced under its temporary names, ready to swap in.
pub(crate) struct Rewritten {
    /// First position (the name of both files).
    pub first: u64,
    /// The new segment file (temporary name).
    pub seg_tmp: PathBuf,
    /// Its index file (temporary name).
    pub idx_tmp: PathBuf,
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

/// Bytes a sealed segment occupies: its file and its index file.
pub(crate) fn segment_bytes(seg: &SealedSegment) -> u64 {
    seg.map.len() as u64
        + std::fs::metadata(seg.index_path())
            .map(|m| m.len())
            .unwrap_or(0)
}

/// The temporary names of the rewrite of the segment starting at `first` in `dir`.
pub(crate) fn tmp_paths(dir: &Path, first: u64) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{}{TMP_SUFFIX}", segment_file_name(first))),
        dir.join(format!("{}{TMP_SUFFIX}", index_file_name(first))),
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
fn frame_len(v: &crate::frame::EventView<'_>) -> u64 {
    (FRAME_PREFIX_LEN
        + BODY_FIXED_LEN
        + v.stream.len()
        + v.event_type.len()
        + v.data.len()
        + v.metadata.len()) as u64
}

/// Rewrites `seg` without the events `plan` removes (see the module documentation).
pub(crate) fn rewrite_segment(
    shared: &Shared,
    seg: &SealedSegment,
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
    // Pass 1: the decisions.
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
    // Pass 2: the copy.
    let io = shared.options.file_io.clone();
    let (seg_tmp, idx_tmp) = tmp_paths(&shared.dir, first);
    let cleanup = || {
        let _ = io.remove_file(&seg_tmp);
        let _ = io.remove_file(&idx_tmp);
    };
    cleanup();
    let file = io
        .open_append(&seg_tmp)
        .map_err(|e| Error::io(&seg_tmp, e))?;
    let mut w = Rewriter::new(
        &seg.map[..],
        BufWriter::with_capacity(1 << 20, AppendWriter(file)),
        first,
    );
    for (i, p) in (first..end).enumerate() {
        match seg.event_in(index, p)? {
            Some(v) if !removed[i] => {
                let offset = index.offset(p).unwrap_or(NO_FRAME);
                w.event(&v, offset);
                if throttle.account(2 * frame_len(&v), stop) {
                    drop(w);
                    cleanup();
                    return Ok(Outcome::Stopped);
                }
            }
            _ => w.missing(p..p + 1, true),
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
    // The index: the kept events' entries, plus the retained entries of removed events.
    let mut input = table.to_index_input(first, written);
    let has_frame = |p: u64| {
        table
            .offsets
            .get((p - first) as usize)
            .is_some_and(|&o| o != NO_FRAME)
    };
    let mut last_of: HashMap<u64, u64, RandomState> = HashMap::default();
    let mut position_of: HashMap<(u64, u64), u64, RandomState> = HashMap::default();
    let old_streams: Vec<StreamEntry> = index.every_stream_entry().collect();
    for e in &old_streams {
        let last = last_of.entry(e.hash).or_insert(e.revision);
        *last = (*last).max(e.revision);
        position_of.insert((e.hash, e.revision), e.position);
    }
    for e in old_streams {
        if !has_frame(e.position)
            && (plan.keeps_entries(e.hash) || last_of.get(&e.hash) == Some(&e.revision))
        {
            input.streams.push(e);
        }
    }
    for id in index.every_id_entry() {
        let removed_event = position_of
            .get(&(id.stream_hash, id.revision))
            .is_some_and(|&p| !has_frame(p));
        if removed_event && plan.keeps_entries(id.stream_hash) {
            input.ids.push(id);
        }
    }
    for i in 0..index.created_count() {
        input.created.push(index.created_name(i)?.to_owned());
    }
    let bytes = encode(input)?;
    let written_idx = io
        .write_new_file(&idx_tmp, &bytes)
        .and_then(|()| io.sync_dir(&shared.dir));
    if let Err(e) = written_idx {
        cleanup();
        return Err(Error::io(&idx_tmp, e));
    }
    Ok(Outcome::Rewritten(Rewritten {
        first,
        seg_tmp,
        idx_tmp,
        events_removed,
        bytes_after: written + bytes.len() as u64,
    }))
}
