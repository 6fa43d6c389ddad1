//! Swapping a rewritten (or merged) segment into place, on disk and in the shared segment
//! list, and finishing (or undoing) a swap a crash interrupted.
//!
//! Order on disk (each step durable before the next):
//! 1. `<first>.seg.scv` and `<first>.idx.scv` written and synced, directory synced (rewrite);
//! 2. for a merge only: `<first>.merge` written and synced, listing the first positions of the
//!    other segments merged in;
//! 3. `<first>.seg.scv` renamed over `<first>.seg`, directory synced: **the commit point**;
//! 4. `<first>.idx.scv` renamed over `<first>.idx`, directory synced;
//! 5. for a merge: the other segments' files removed, then `<first>.merge`, directory synced.
//!
//! At open ([`finish_interrupted`]): a `.merge` whose `.seg.scv` still exists belongs to a merge
//! that never committed (it and the temporary files are removed); otherwise the merge committed
//! and the segments it lists are removed. An `.idx.scv` whose `.seg.scv` still exists belongs to
//! a rewrite that never committed (both removed); one without it belongs to a committed one (it
//! is renamed into place); a lone `.seg.scv` is removed.
//!
//! In memory, the new segment replaces the old ones in the shared list under the state lock,
//! which the writer also takes to add a sealed segment, so a seal racing a swap neither loses
//! nor resurrects a segment. Readers holding an old segment keep its mapping (the old files
//! are renamed over or unlinked, never truncated) until they drop it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::rewrite::{Rewritten, TMP_SUFFIX};
use super::sidecar;
use crate::error::{Error, Result};
use crate::file_io::sync_dir;
use crate::index_file::SegmentIndex;
use crate::log::{LogState, Shared};
use crate::segment::{index_file_name, map_file, segment_file_name, SealedSegment};

/// Suffix of the marker file of a merge (`<first>.merge`).
const MERGE_SUFFIX: &str = ".merge";

fn merge_marker(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}{MERGE_SUFFIX}"))
}

/// Puts the rewrite `r` in place (steps 2 to 5) and in the shared segment list.
pub(crate) fn swap_in(shared: &Shared, r: Rewritten) -> Result<()> {
    let io = &shared.options.file_io;
    let dir = &shared.dir;
    let seg_path = dir.join(segment_file_name(r.first));
    let idx_path = dir.join(index_file_name(r.first));
    let merged_away: Vec<u64> = r
        .replaces
        .iter()
        .skip(1)
        .map(|s| s.first_position)
        .collect();
    let marker = merge_marker(dir, r.first);
    if !merged_away.is_empty() {
        let list: String = merged_away.iter().map(|f| format!("{f}\n")).collect();
        io.write_new_file(&marker, list.as_bytes())
            .and_then(|()| io.sync_dir(dir))
            .map_err(|e| Error::io(&marker, e))?;
    }
    io.rename(&r.seg_tmp, &seg_path)
        .map_err(|e| Error::io(&seg_path, e))?;
    io.sync_dir(dir).map_err(|e| Error::io(dir, e))?;
    io.rename(&r.idx_tmp, &idx_path)
        .map_err(|e| Error::io(&idx_path, e))?;
    let rmv_path = sidecar::path_of(&seg_path);
    io.rename(&r.rmv_tmp, &rmv_path)
        .map_err(|e| Error::io(&rmv_path, e))?;
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
    replace(shared, &r.replaces, new)?;
    if !merged_away.is_empty() {
        for &f in &merged_away {
            let seg = dir.join(segment_file_name(f));
            for p in [sidecar::path_of(&seg), dir.join(index_file_name(f)), seg] {
                match io.remove_file(&p) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io(&p, e)),
                }
            }
        }
        io.sync_dir(dir).map_err(|e| Error::io(dir, e))?;
        io.remove_file(&marker)
            .and_then(|()| io.sync_dir(dir))
            .map_err(|e| Error::io(&marker, e))?;
    }
    Ok(())
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
/// Called at open, before the segments are listed. With `read_only`, nothing is changed: the
/// first positions of the segments a committed merge replaced are returned instead, for the
/// caller to leave out (an interrupted swap's index is then rebuilt in memory).
pub(crate) fn finish_interrupted(dir: &Path, read_only: bool) -> Result<Vec<u64>> {
    let mut seg_tmps = Vec::new();
    let mut idx_tmps = Vec::new();
    let mut markers = Vec::new();
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for entry in rd {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(stem) = name.strip_suffix(MERGE_SUFFIX) {
            markers.push(stem.to_owned());
            continue;
        }
        let Some(base) = name.strip_suffix(TMP_SUFFIX) else {
            continue;
        };
        if let Some(stem) = base.strip_suffix(".seg") {
            seg_tmps.push(stem.to_owned());
        } else if let Some(stem) = base.strip_suffix(".idx") {
            idx_tmps.push((stem.to_owned(), "idx"));
        } else if let Some(stem) = base.strip_suffix(".rmv") {
            idx_tmps.push((stem.to_owned(), "rmv"));
        }
    }
    if seg_tmps.is_empty() && idx_tmps.is_empty() && markers.is_empty() {
        return Ok(Vec::new());
    }
    if read_only {
        let mut skip = Vec::new();
        for stem in markers.iter().filter(|m| !seg_tmps.contains(m)) {
            skip.extend(merged_away(&dir.join(format!("{stem}{MERGE_SUFFIX}")))?);
        }
        return Ok(skip);
    }
    let remove = |p: &Path| match std::fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(p, e)),
    };
    // First the segments a committed merge replaced (before anything lists the segments).
    for stem in &markers {
        let marker = dir.join(format!("{stem}{MERGE_SUFFIX}"));
        if !seg_tmps.contains(stem) {
            for f in merged_away(&marker)? {
                let seg = dir.join(segment_file_name(f));
                remove(&sidecar::path_of(&seg))?;
                remove(&dir.join(index_file_name(f)))?;
                remove(&seg)?;
            }
        }
    }
    // An index or removed-events file whose segment was renamed into place (committed).
    for (stem, ext) in &idx_tmps {
        let tmp = dir.join(format!("{stem}.{ext}{TMP_SUFFIX}"));
        if seg_tmps.contains(stem) {
            remove(&tmp)?;
        } else {
            let dest = dir.join(format!("{stem}.{ext}"));
            std::fs::rename(&tmp, &dest).map_err(|e| Error::io(&dest, e))?;
        }
    }
    for stem in &seg_tmps {
        remove(&dir.join(format!("{stem}.seg{TMP_SUFFIX}")))?;
    }
    sync_dir(dir).map_err(|e| Error::io(dir, e))?;
    for stem in &markers {
        remove(&dir.join(format!("{stem}{MERGE_SUFFIX}")))?;
    }
    sync_dir(dir).map_err(|e| Error::io(dir, e))?;
    Ok(Vec::new())
}

/// The first positions a merge marker lists.
fn merged_away(marker: &Path) -> Result<Vec<u64>> {
    let list = std::fs::read_to_string(marker).map_err(|e| Error::io(marker, e))?;
    list.lines()
        .filter(|l| !l.is_empty())
        .map(|line| {
            line.parse().map_err(|_| {
                Error::corruption(marker, 0, format!("not a first position: {line:?}"))
            })
        })
        .collect()
}
