//! Offline repair of a data directory (`strata repair`): damaged bytes are moved aside into
//! `<dir>/quarantine/<UTC timestamp>/`, the damaged segments are rewritten without them, and
//! their indexes rebuilt, so that the store opens writable again with every intact event at its
//! original position and revision.
//!
//! # What a repair does
//!
//! Every segment is scanned as the store scans it ([`crate::segment`]: resynchronising after
//! damage; a sealed segment must end where the next one starts, the last one may end in a torn
//! tail). Then, for each segment:
//!
//! - **damaged** (a damaged header, frames that fail their checks, frames missing): rewritten as
//!   a format-2 segment (gaps allowed) holding every intact frame byte for byte, in order. The
//!   one change: a frame whose append lost its later frames gets the commit-end flag (re-encoded,
//!   same fields), or a later open would take it for a torn append and cut it. Its index is
//!   rebuilt, with no frame ([`crate::index_file::NO_FRAME`]) for the lost positions: they read
//!   as removed, as after a scavenge.
//! - **intact, index missing or damaged**: the index is rebuilt.
//! - **the last segment with a torn tail** (an append cut by a crash, never acknowledged): cut
//!   back to its last whole append, as every open does.
//!
//! Nothing is deleted: the original files (segment and index) are moved into the quarantine
//! directory, each damaged byte range (and a cut tail) is also written there as its own file,
//! and `report.txt` there says what was lost and what was kept. A repair that finds nothing
//! changes nothing and creates nothing; so a second run finds nothing.
//!
//! # Order of the steps (crash safety)
//!
//! For each damaged segment `S` (index `I`), every step durable before the next:
//!
//! 1. the damaged byte ranges are written to quarantine files (fsynced);
//! 2. the repaired segment is written to `S.repair.tmp` and fsynced;
//! 3. the original `S` and `I` are hard-linked into the quarantine directory (copied where the
//!    file system cannot link), which is fsynced;
//! 4. `I` is removed and the directory fsynced (an open now rebuilds the index from `S`);
//! 5. `S.repair.tmp` is renamed over `S`, the directory fsynced;
//! 6. the new `I` is written (temporary file, fsync, rename, directory fsync).
//!
//! A crash between any two steps leaves either the original segment (with its original index,
//! or none: rebuilt at open) or the repaired one (with its new index, or none: rebuilt at open
//! from the intact repaired segment); a leftover `*.repair.tmp` is overwritten by the next run.
//! The report is written last: a run cut short is simply run again.
//!
//! # Refusals
//!
//! A directory that is not a Strata data directory (no segment files, or files that a store
//! does not make) is refused before anything is touched, and so is a directory whose lock a
//! running server holds.

mod report;
mod rewrite;
pub(crate) use rewrite::Rewriter;

use std::collections::{HashMap, HashSet};
use std::fs;
use std::ops::Range;
use std::path::{Path, PathBuf};

use uuid::Uuid;

use crate::damage::Damage;
use crate::error::{Error, Result};
use crate::file_io::sync_dir;
use crate::frame::SEGMENT_HEADER_LEN;
use crate::hash::hash_str;
use crate::index_file::SegmentIndex;
use crate::segment::{
    index_file_name, list_segments, map_file, rebuild_index, scan_segment, ScanDamage, ScanMode,
    Scanned,
};

use rewrite::{cut_tail, keep_original, quarantine_dir, rewrite_segment, write_durably};

/// What [`repair_dir`] found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RepairReport {
    /// The data directory.
    pub dir: PathBuf,
    /// When the repair ran (RFC 3339, UTC).
    pub started: String,
    /// The quarantine directory of this run (`<dir>/quarantine/<timestamp>`): `None` when
    /// nothing needed repairing (and nothing was changed or created).
    pub quarantine: Option<PathBuf>,
    /// Every segment, in log order: what it holds after the repair and what was done to it.
    pub segments: Vec<SegmentOutcome>,
    /// The damaged ranges found, in log order (`file`: the original segment's path).
    pub damage: Vec<Damage>,
    /// The lost events whose stream and revision are known (from the segment's intact index
    /// file); the other lost positions are only known by the damage ranges.
    pub lost: Vec<LostEvent>,
    /// Remarks (a torn tail cut, an index rebuilt).
    pub notes: Vec<String>,
}

impl RepairReport {
    /// Whether the repair changed anything.
    pub fn changed(&self) -> bool {
        self.quarantine.is_some()
    }

    /// Positions lost in damage (their events are gone from the log; their bytes are in
    /// quarantine).
    pub fn positions_lost(&self) -> u64 {
        self.damage
            .iter()
            .map(|d| d.positions.end - d.positions.start)
            .sum()
    }

    /// Events kept, all segments together.
    pub fn events_kept(&self) -> u64 {
        self.segments.iter().map(|s| s.events).sum()
    }
}

/// One segment after a repair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentOutcome {
    /// The segment file.
    pub file: PathBuf,
    /// Its positions: the first, and one past the last (for the last segment: the log's next
    /// position).
    pub positions: Range<u64>,
    /// Intact events it holds (unchanged in position and revision).
    pub events: u64,
    /// Positions of it lost in damage.
    pub lost: u64,
    /// Whether it was rewritten (damage moved out; format version 2).
    pub rewritten: bool,
    /// Why its index file was rebuilt, if it was rebuilt over an intact segment (a rewritten
    /// segment always gets a new index).
    pub index_rebuilt: Option<String>,
    /// Bytes of a torn tail cut from it (the last segment only).
    pub tail_cut: u64,
}

/// A lost event that the segment's intact index file still describes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LostEvent {
    /// Its log position.
    pub position: u64,
    /// Its stream's name, when an intact event of the same stream (same name hash) tells it.
    pub stream: Option<String>,
    /// The hash of its stream's name (what the index file records).
    pub stream_hash: u64,
    /// Its revision in the stream.
    pub revision: u64,
    /// Its event id, when the index lists it.
    pub id: Option<Uuid>,
    /// The highest revision of the stream among the intact events (`None` when none is left).
    /// When it is below [`LostEvent::revision`], the stream's head moved back: the next
    /// append to the stream takes a revision a lost event had.
    pub stream_head: Option<u64>,
}

/// Repairs the data directory `dir` offline (see the module documentation). `progress(done,
/// total)` follows the scan, in bytes of segment files.
///
/// Refuses (with nothing changed) a directory that is not a Strata data directory
/// ([`Error::InvalidInput`] on `data_dir`), and one whose lock another process (a running
/// server) holds ([`Error::Io`], kind `WouldBlock`).
pub fn repair_dir(dir: &Path, mut progress: impl FnMut(u64, u64)) -> Result<RepairReport> {
    check_is_store(dir)?;
    let _lock = crate::store::lock_dir(dir).map_err(|e| match e {
        Error::Io { path, source } if source.kind() == std::io::ErrorKind::WouldBlock => {
            Error::Io {
                path,
                source: std::io::Error::new(
                    source.kind(),
                    "the data directory is in use by another process (a running server?): \
                     stop it before a repair",
                ),
            }
        }
        other => other,
    })?;
    // A scavenge interrupted by a crash is finished (or undone) first, as an open would.
    crate::scavenge::finish_interrupted(dir, false)?;
    let segments = check_is_store(dir)?;
    let started = crate::timestamp::format_timestamp(now_micros());
    let surveys = survey(&segments, &mut progress)?;
    let mut report = RepairReport {
        dir: dir.to_owned(),
        started: started.clone(),
        ..RepairReport::default()
    };
    for s in &surveys {
        let indexed = matches!(s.index, IndexState::Intact) && s.next_first.is_some();
        report
            .damage
            .extend(s.damage.iter().map(|d| d.to_damage(&s.path, indexed)));
        report.lost.extend(s.lost_events.iter().cloned());
    }
    name_lost_events(&surveys, &mut report.lost)?;
    let mut quarantine = None;
    for s in &surveys {
        let outcome = apply(dir, s, &report.lost, &started, &mut quarantine)?;
        if let Some(why) = &outcome.index_rebuilt {
            report.notes.push(format!(
                "{}: index rebuilt ({why})",
                dir.join(index_file_name(s.first)).display()
            ));
        }
        if outcome.tail_cut > 0 {
            report.notes.push(format!(
                "{}: {} bytes of an unfinished append cut (a crash cut it short; it was never \
                 acknowledged)",
                s.path.display(),
                outcome.tail_cut
            ));
        }
        report.segments.push(outcome);
    }
    if let Some(q) = &quarantine {
        report.quarantine = Some(q.clone());
        let path = q.join("report.txt");
        write_durably(&path, report.to_string().as_bytes())?;
        sync_dir(q).map_err(|e| Error::io(q, e))?;
    }
    Ok(report)
}

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// The name of the quarantine directory under the data directory.
pub const QUARANTINE_DIR: &str = "quarantine";

/// The segments of `dir`, after checking that it is a Strata data directory: it exists, holds
/// segment files, and holds nothing a store does not make. Changes nothing.
fn check_is_store(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let refuse = |why: String| {
        Error::invalid(
            "data_dir",
            format!("{} is not a Strata data directory: {why}", dir.display()),
        )
    };
    if !dir.is_dir() {
        return Err(refuse("not a directory".into()));
    }
    let mut foreign = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !is_store_file(&name) {
            foreign.push(name);
        }
    }
    let segments = list_segments(dir)?;
    if segments.is_empty() {
        return Err(refuse("it holds no segment files (*.seg)".into()));
    }
    if !foreign.is_empty() {
        foreign.sort();
        let more = if foreign.len() > 3 {
            format!(" and {} more", foreign.len() - 3)
        } else {
            String::new()
        };
        foreign.truncate(3);
        return Err(refuse(format!(
            "it holds files a store does not make ({}{more})",
            foreign.join(", ")
        )));
    }
    Ok(segments)
}

/// Whether a store (or a repair) makes a file of this name in its directory.
fn is_store_file(name: &str) -> bool {
    if matches!(name, "LOCK" | QUARANTINE_DIR | "lost+found") || name.starts_with('.') {
        return true;
    }
    let Some((stem, ext)) = name.split_once('.') else {
        return false;
    };
    stem.len() == 20
        && stem.bytes().all(|b| b.is_ascii_digit())
        && matches!(
            ext,
            "seg"
                | "idx"
                | "idx.tmp"
                | "seg.repair.tmp"
                // A scavenge's files (the removed-events file, an interrupted swap or merge).
                | "rmv"
                | "merge"
                | "seg.scv"
                | "idx.scv"
                | "rmv.scv"
        )
}

/// What the scan of one segment found.
struct Survey {
    path: PathBuf,
    first: u64,
    /// The next segment's first position (`None` for the last segment).
    next_first: Option<u64>,
    /// Intact events.
    events: u64,
    damage: Vec<ScanDamage>,
    /// The last segment: bytes past the last whole append (a torn tail), and where they start.
    torn: Option<Range<u64>>,
    /// One past the last position (kept or lost).
    next_position: u64,
    index: IndexState,
    /// Lost events its intact index describes.
    lost_events: Vec<LostEvent>,
}

impl Survey {
    fn damaged(&self) -> bool {
        !self.damage.is_empty()
    }
}

/// The state of a segment's index file.
enum IndexState {
    /// The last segment has none.
    Open,
    /// Present, whole, and describing exactly the segment's positions.
    Intact,
    /// Missing or damaged: why.
    Bad(String),
}

/// Scans every segment (pass 1).
fn survey(segments: &[(u64, PathBuf)], progress: &mut impl FnMut(u64, u64)) -> Result<Vec<Survey>> {
    let mut total = 0;
    for (_, p) in segments {
        total += fs::metadata(p).map_err(|e| Error::io(p, e))?.len();
    }
    let mut done = 0;
    let mut out = Vec::with_capacity(segments.len());
    for (i, (first, path)) in segments.iter().enumerate() {
        let first = *first;
        if i == 0 && first != 0 {
            return Err(Error::corruption(
                path,
                0,
                format!(
                    "the first segment starts at position {first}, not 0: segment files are \
                     missing, which a repair cannot undo"
                ),
            ));
        }
        let next_first = segments.get(i + 1).map(|s| s.0);
        let map = map_file(path)?;
        let mode = match next_first {
            Some(_) => ScanMode::Sealed,
            None => ScanMode::Open,
        };
        let mut events = 0u64;
        let outcome = scan_segment(&map, first, mode, next_first, |item| {
            if let Scanned::Event(..) = item {
                events += 1;
            }
        });
        if let Some(next) = next_first {
            if outcome.next_position != next {
                return Err(Error::corruption(
                    path,
                    outcome.committed_len,
                    format!(
                        "segment holds positions up to {}, the next segment starts at {next}: \
                         a repair cannot tell which to keep",
                        outcome.next_position
                    ),
                ));
            }
        }
        let len = map.len() as u64;
        let torn = (next_first.is_none() && outcome.committed_len < len)
            .then_some(outcome.committed_len..len);
        let idx_path = path.with_file_name(index_file_name(first));
        let (index, lost_events) = match next_first {
            None => (IndexState::Open, Vec::new()),
            Some(end) => check_index(&idx_path, first, end, len, &outcome.damage),
        };
        out.push(Survey {
            path: path.clone(),
            first,
            next_first,
            events,
            damage: outcome.damage,
            torn,
            next_position: outcome.next_position,
            index,
            lost_events,
        });
        done += len;
        progress(done, total);
    }
    Ok(out)
}

/// The state of the index of the sealed segment `first..end` (`segment_len` bytes), and, when it
/// is intact, the events it lists at positions lost in `damage`.
fn check_index(
    idx_path: &Path,
    first: u64,
    end: u64,
    segment_len: u64,
    damage: &[ScanDamage],
) -> (IndexState, Vec<LostEvent>) {
    if !idx_path.exists() {
        return (IndexState::Bad("missing".into()), Vec::new());
    }
    let ix = match SegmentIndex::open(idx_path, first, segment_len).and_then(|ix| {
        ix.verify()?;
        Ok(ix)
    }) {
        Ok(ix) => ix,
        Err(e) => return (IndexState::Bad(e.to_string()), Vec::new()),
    };
    if first + ix.event_count() != end {
        let why = format!(
            "it lists positions {first}..{}, the segment holds {first}..{end}",
            first + ix.event_count()
        );
        return (IndexState::Bad(why), Vec::new());
    }
    let lost = |p: u64| damage.iter().any(|d| d.positions.contains(&p));
    let mut events: Vec<LostEvent> = ix
        .every_stream_entry()
        .filter(|e| lost(e.position))
        .map(|e| LostEvent {
            position: e.position,
            stream: None,
            stream_hash: e.hash,
            revision: e.revision,
            id: None,
            stream_head: None,
        })
        .collect();
    if !events.is_empty() {
        let mut by_key: HashMap<(u64, u64), usize> = events
            .iter()
            .enumerate()
            .map(|(i, e)| ((e.stream_hash, e.revision), i))
            .collect();
        for id in ix.every_id_entry() {
            if let Some(i) = by_key.remove(&(id.stream_hash, id.revision)) {
                events[i].id = Some(Uuid::from_u128(id.id));
            }
        }
        events.sort_by_key(|e| e.position);
    }
    (IndexState::Intact, events)
}

/// Names the streams of the lost events through the intact events with the same name hash, and
/// records each such stream's highest intact revision (pass 2: only when there are lost events
/// to name).
fn name_lost_events(surveys: &[Survey], lost: &mut [LostEvent]) -> Result<()> {
    let wanted: HashSet<u64> = lost.iter().map(|e| e.stream_hash).collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let mut names: HashMap<u64, (String, u64)> = HashMap::new();
    for s in surveys {
        let map = map_file(&s.path)?;
        let mode = match s.next_first {
            Some(_) => ScanMode::Sealed,
            None => ScanMode::Open,
        };
        scan_segment(&map, s.first, mode, s.next_first, |item| {
            if let Scanned::Event(v, _) = item {
                let h = hash_str(v.stream);
                if wanted.contains(&h) {
                    let e = names
                        .entry(h)
                        .or_insert_with(|| (v.stream.to_owned(), v.revision));
                    e.1 = e.1.max(v.revision);
                }
            }
        });
    }
    for e in lost {
        if let Some((name, head)) = names.get(&e.stream_hash) {
            e.stream = Some(name.clone());
            e.stream_head = Some(*head);
        }
    }
    Ok(())
}

/// Repairs one segment as its survey says (pass 3), creating this run's quarantine directory
/// when something needs to go there.
fn apply(
    dir: &Path,
    s: &Survey,
    lost: &[LostEvent],
    started: &str,
    quarantine: &mut Option<PathBuf>,
) -> Result<SegmentOutcome> {
    let lost_count: u64 = s
        .damage
        .iter()
        .map(|d| d.positions.end - d.positions.start)
        .sum();
    let mut outcome = SegmentOutcome {
        file: s.path.clone(),
        positions: s.first..s.next_position,
        events: s.events,
        lost: lost_count,
        rewritten: false,
        index_rebuilt: None,
        tail_cut: 0,
    };
    let idx_path = dir.join(index_file_name(s.first));
    let torn_header = s
        .torn
        .as_ref()
        .is_some_and(|t| t.start < SEGMENT_HEADER_LEN);
    if s.damaged() || torn_header {
        let q = quarantine_dir(dir, started, quarantine)?;
        // Streams whose revision 0 was lost but which have intact events stay listed.
        let created: Vec<String> = lost
            .iter()
            .filter(|e| e.revision == 0 && outcome.positions.contains(&e.position))
            .filter_map(|e| e.stream.clone())
            .collect();
        rewrite_segment(dir, s, &q, &created)?;
        outcome.rewritten = true;
        outcome.tail_cut = s.torn.as_ref().map_or(0, |t| t.end - t.start);
        return Ok(outcome);
    }
    if let Some(torn) = &s.torn {
        let q = quarantine_dir(dir, started, quarantine)?;
        cut_tail(s, torn, &q)?;
        outcome.tail_cut = torn.end - torn.start;
    }
    if let (IndexState::Bad(why), Some(end)) = (&s.index, s.next_first) {
        let q = quarantine_dir(dir, started, quarantine)?;
        if idx_path.exists() {
            keep_original(&idx_path, &q)?;
        }
        let map = map_file(&s.path)?;
        rebuild_index(
            &s.path,
            &map,
            s.first,
            end,
            &idx_path,
            Some(&idx_path),
            None,
        )?;
        outcome.index_rebuilt = Some(why.clone());
    }
    Ok(outcome)
}
