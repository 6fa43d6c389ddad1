//! Swapping a rewritten segment into place, on disk and in the shared segment list, and
//! finishing (or undoing) a swap a crash interrupted.
//!
//! Order on disk (each step durable before the next):
//! 1. `<first>.seg.scv` and `<first>.idx.scv` written and synced, directory synced (rewrite);
//! 2. `<first>.seg.scv` renamed over `<first>.seg`, directory synced: **the commit point**;
//! 3. `<first>.idx.scv` renamed over `<first>.idx`, directory synced.
//!
//! At open ([`finish_interrupted`]): an `.idx.scv` whose `.seg.scv` still exists belongs to a
//! rewrite that never committed (both removed); one without it belongs to a committed one (it
//! is renamed into place); a lone `.seg.scv` is removed.
//!
//! In memory, the new segment replaces the old one in the shared list under the state lock,
//! which the writer also takes to add a sealed segment, so a seal racing a swap neither loses
//! nor resurrects a segment. Readers holding the old segment keep its mapping (the old files
//! are renamed over, never truncated) until they drop it.

use std::path::Path;
use std::sync::Arc;

use super::rewrite::{Rewritten, TMP_SUFFIX};
use crate::error::{Error, Result};
use crate::file_io::sync_dir;
use crate::index_file::SegmentIndex;
use crate::log::{LogState, Shared};
use crate::segment::{index_file_name, map_file, segment_file_name, SealedSegment};

/// Puts the rewrite `r` of `old` in place (steps 2 and 3) and in the shared segment list.
pub(crate) fn swap_in(shared: &Shared, old: &Arc<SealedSegment>, r: Rewritten) -> Result<()> {
    let io = &shared.options.file_io;
    let dir = &shared.dir;
    let seg_path = dir.join(segment_file_name(r.first));
    let idx_path = dir.join(index_file_name(r.first));
    io.rename(&r.seg_tmp, &seg_path)
        .map_err(|e| Error::io(&seg_path, e))?;
    io.sync_dir(dir).map_err(|e| Error::io(dir, e))?;
    io.rename(&r.idx_tmp, &idx_path)
        .map_err(|e| Error::io(&idx_path, e))?;
    io.sync_dir(dir).map_err(|e| Error::io(dir, e))?;
    let map = map_file(&seg_path)?;
    let index = SegmentIndex::open(&idx_path, r.first, map.len() as u64)?;
    let new = Arc::new(SealedSegment::freshly_indexed(
        seg_path,
        r.first,
        map,
        index,
        Vec::new(),
    ));
    replace(shared, std::slice::from_ref(old), new)
}

/// Replaces the consecutive segments `old` of the shared list by `new`, under the state lock.
pub(crate) fn replace(
    shared: &Shared,
    old: &[Arc<SealedSegment>],
    new: Arc<SealedSegment>,
) -> Result<()> {
    let mut guard = shared.state.write();
    let mut sealed = guard.sealed.clone();
    let at = old
        .first()
        .and_then(|o| sealed.iter().position(|s| Arc::ptr_eq(s, o)));
    let fits = at.is_some_and(|at| {
        old.iter()
            .enumerate()
            .all(|(k, o)| sealed.get(at + k).is_some_and(|s| Arc::ptr_eq(s, o)))
    });
    let (Some(at), true) = (at, fits) else {
        return Err(Error::invalid(
            "segment",
            "the rewritten segment is no longer in the segment list",
        ));
    };
    sealed.splice(at..at + old.len(), std::iter::once(new));
    *guard = Arc::new(LogState {
        sealed,
        open: guard.open.clone(),
    });
    Ok(())
}

/// Finishes or undoes the swaps a crash interrupted in `dir` (see the module documentation).
/// Called at open, before the segments are listed.
pub(crate) fn finish_interrupted(dir: &Path) -> Result<()> {
    let mut seg_tmps = Vec::new();
    let mut idx_tmps = Vec::new();
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for entry in rd {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(base) = name.strip_suffix(TMP_SUFFIX) else {
            continue;
        };
        if let Some(stem) = base.strip_suffix(".seg") {
            seg_tmps.push(stem.to_owned());
        } else if let Some(stem) = base.strip_suffix(".idx") {
            idx_tmps.push(stem.to_owned());
        }
    }
    if seg_tmps.is_empty() && idx_tmps.is_empty() {
        return Ok(());
    }
    let remove = |p: &Path| match std::fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(p, e)),
    };
    for stem in &idx_tmps {
        let idx_tmp = dir.join(format!("{stem}.idx{TMP_SUFFIX}"));
        if seg_tmps.contains(stem) {
            remove(&idx_tmp)?;
        } else {
            let idx = dir.join(format!("{stem}.idx"));
            std::fs::rename(&idx_tmp, &idx).map_err(|e| Error::io(&idx, e))?;
        }
    }
    for stem in &seg_tmps {
        remove(&dir.join(format!("{stem}.seg{TMP_SUFFIX}")))?;
    }
    sync_dir(dir).map_err(|e| Error::io(dir, e))
}
