//! The merger: which files exist at open ([`load`]), what to merge next (the plan), and the
//! background loop ([`run`]) that verifies, merges and publishes, one [`step`] at a time.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::file_io::{create_dir_durably, sync_dir};
use crate::log::{LogState, Shared};
use crate::segment::SealedSegment;

use super::format::parse_merged_file_name;
use super::write::{write_merged, MergeError, MergeSpec, Source};
use super::{merged_dir, MergedIndex, MergedSet, FAN_OUT};

/// The chain of merged files found in `dir` for the sealed segments `sealed`, headers checked
/// (bodies are checked by the merger before use). Chosen greedily from the first sealed
/// position: at each step the file starting there that reaches furthest (not past the sealed
/// end). When `writable`, every other file (leftover temporary files, files a merge replaced,
/// stale or damaged ones) is removed. Never fails: merged files are derived data.
pub(crate) fn load(
    dir: &Path,
    sealed: &[Arc<SealedSegment>],
    writable: bool,
) -> Vec<Arc<MergedIndex>> {
    let mdir = merged_dir(dir);
    let Ok(rd) = std::fs::read_dir(&mdir) else {
        return Vec::new();
    };
    let mut candidates: Vec<(u64, u64, PathBuf)> = Vec::new();
    let mut junk: Vec<PathBuf> = Vec::new();
    for entry in rd.flatten() {
        let name = entry.file_name();
        let path = entry.path();
        match name.to_str().and_then(parse_merged_file_name) {
            Some((first, end)) => candidates.push((first, end, path)),
            None => junk.push(path),
        }
    }
    let mut chain = Vec::new();
    if let (Some(first), Some(last)) = (sealed.first(), sealed.last()) {
        let sealed_end = last.end_position();
        // Longest first among files with the same start.
        candidates.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        let mut pos = first.first_position;
        let mut used: HashSet<PathBuf> = HashSet::new();
        loop {
            let next = candidates
                .iter()
                .filter(|(f, e, _)| *f == pos && *e <= sealed_end)
                .find_map(|(f, e, p)| MergedIndex::open(p, *f, *e).ok().map(|m| (p, m)));
            let Some((path, m)) = next else { break };
            used.insert(path.clone());
            pos = m.range().end;
            chain.push(Arc::new(m));
        }
        junk.extend(
            candidates
                .into_iter()
                .map(|(_, _, p)| p)
                .filter(|p| !used.contains(p)),
        );
    } else {
        junk.extend(candidates.into_iter().map(|(_, _, p)| p));
    }
    if writable && !junk.is_empty() {
        for p in &junk {
            let _ = std::fs::remove_file(p);
        }
        let _ = sync_dir(&mdir);
    }
    chain
}

/// The next merge: its level, its range and its inputs, and how many files at the end of the
/// chain it replaces.
enum Plan {
    /// Merge `FAN_OUT` sealed segments (each restricted to its window) into a level-1 file.
    Segments(Vec<(Arc<SealedSegment>, std::ops::Range<u64>)>),
    /// Merge the last `FAN_OUT` files of the chain (all of one level) into one level up.
    Files(Vec<Arc<MergedIndex>>),
}

fn plan(state: &LogState, set: &MergedSet) -> Option<Plan> {
    let chain = &set.files;
    if chain.len() >= FAN_OUT {
        let last = &chain[chain.len() - FAN_OUT..];
        let level = last[0].level();
        if last.iter().all(|m| m.level() == level) {
            return Some(Plan::Files(last.to_vec()));
        }
    }
    let sealed = &state.sealed;
    let start = chain
        .last()
        .map_or(sealed.first()?.first_position, |m| m.range().end);
    let i = sealed.partition_point(|s| s.end_position() <= start);
    let run = sealed.get(i..i + FAN_OUT)?;
    let inputs: Vec<_> = run
        .iter()
        .map(|s| (s.clone(), s.first_position.max(start)..s.end_position()))
        .collect();
    let end = run.last()?.end_position();
    (end > start).then_some(Plan::Segments(inputs))
}

/// One unit of merger work, under the merge lock: verify the next file found at open and
/// publish it, or else write the next planned merge and publish it (removing the files it
/// replaces). `Ok(false)` when there is nothing to do.
pub(crate) fn step(shared: &Shared) -> Result<bool, MergeError> {
    let m = &shared.merged;
    let _work = m.work.lock();
    if m.stopped() {
        return Err(MergeError::Stopped);
    }
    let writes = m.writes.load(Ordering::Acquire);
    let next_pending = {
        let p = m.pending.lock();
        p.first().cloned()
    };
    if let Some(file) = next_pending {
        let ok = file.verify_checksum().is_ok();
        let mut pending = m.pending.lock();
        if ok {
            pending.remove(0);
            let mut files = m.snapshot().files.clone();
            files.push(file);
            *m.set.write() = Arc::new(MergedSet { files });
        } else {
            // Damaged: it and the files after it go (a chain has no holes); rebuilt later.
            let dropped: Vec<_> = pending.drain(..).collect();
            drop(pending);
            if writes {
                for f in &dropped {
                    let _ = std::fs::remove_file(f.path());
                }
                let _ = sync_dir(&merged_dir(&shared.dir));
            }
        }
        return Ok(true);
    }
    if !writes {
        return Ok(false);
    }
    let state = shared.snapshot();
    let set = m.snapshot();
    let Some(plan) = plan(&state, &set) else {
        return Ok(false);
    };
    let dir = merged_dir(&shared.dir);
    create_dir_durably(&dir).map_err(|e| crate::error::Error::io(&dir, e))?;
    let stop = || m.stopped();
    let (written, replaced) = match &plan {
        Plan::Segments(segs) => {
            let mut indexes = Vec::with_capacity(segs.len());
            for (seg, window) in segs {
                indexes.push((shared.index(seg)?, window.clone()));
            }
            let range = segs[0].1.start..segs[segs.len() - 1].1.end;
            let sources = indexes
                .into_iter()
                .map(|(index, window)| Source::Segment { index, window })
                .collect();
            let spec = MergeSpec {
                dir: &dir,
                level: 1,
                range,
                sources,
            };
            (write_merged(spec, &stop)?, 0)
        }
        Plan::Files(files) => {
            let range = files[0].range().start..files[files.len() - 1].range().end;
            let spec = MergeSpec {
                dir: &dir,
                level: files[0].level() + 1,
                range,
                sources: files.iter().map(|f| Source::Merged(f)).collect(),
            };
            (write_merged(spec, &stop)?, files.len())
        }
    };
    let old = m.snapshot();
    let keep = old.files.len() - replaced;
    let mut files: Vec<_> = old.files[..keep].to_vec();
    files.push(Arc::new(written));
    *m.set.write() = Arc::new(MergedSet { files });
    m.written.fetch_add(1, Ordering::Relaxed);
    // Readers holding the replaced files keep their maps; the names go now.
    if replaced > 0 {
        for f in &old.files[keep..] {
            let _ = std::fs::remove_file(f.path());
        }
        let _ = sync_dir(&dir);
    }
    Ok(true)
}

/// The merger thread: steps until stopped, sleeping when idle (woken by seals) and after a
/// failure (merged files are an optimisation: a failure is counted and retried later).
pub(crate) fn run(shared: Arc<Shared>) {
    let m = &shared.merged;
    loop {
        if m.stopped() {
            return;
        }
        match step(&shared) {
            Ok(true) => {}
            Ok(false) => m.wait(Duration::from_secs(1)),
            Err(MergeError::Stopped) => return,
            Err(MergeError::Failed(_)) => {
                m.failed.fetch_add(1, Ordering::Relaxed);
                m.wait(Duration::from_secs(5));
            }
        }
    }
}
