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

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use uuid::Uuid;

use crate::damage::Damage;
use crate::error::{Error, Result};
use crate::file_io::sync_dir;
use crate::frame::{
    encode_frame, encode_segment_header_version, EventView, BODY_FIXED_LEN, FRAME_PREFIX_LEN,
    SEGMENT_FORMAT_VERSION_GAPS, SEGMENT_HEADER_LEN,
};
use crate::hash::hash_str;
use crate::index_file::{write_index, SegmentIndex};
use crate::memtable::{MemEntry, Memtable};
use crate::segment::{
    index_file_name, list_segments, map_file, rebuild_index, scan_segment, segment_file_name,
    ScanDamage, ScanMode, Scanned,
};

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
    /// Why its index file was rebuilt, if it was.
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
    let segments = check_is_store(dir)?;
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
        && matches!(ext, "seg" | "idx" | "idx.tmp" | "seg.repair.tmp")
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
        if s.next_first.is_some() {
            outcome.index_rebuilt = Some("the segment was rewritten".into());
        }
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

/// This run's quarantine directory, created (durably) on first use.
fn quarantine_dir(dir: &Path, started: &str, q: &mut Option<PathBuf>) -> Result<PathBuf> {
    if let Some(q) = q {
        return Ok(q.clone());
    }
    let root = dir.join(QUARANTINE_DIR);
    if !root.is_dir() {
        fs::create_dir(&root).map_err(|e| Error::io(&root, e))?;
        sync_dir(dir).map_err(|e| Error::io(dir, e))?;
    }
    // 2026-12-02T16:50:00.123456Z -> 20261202T165000Z
    let stamp: String = started
        .split('.')
        .next()
        .unwrap_or(started)
        .chars()
        .filter(|c| !matches!(c, '-' | ':'))
        .chain(std::iter::once('Z'))
        .collect();
    let mut n = 0;
    let path = loop {
        let name = if n == 0 {
            stamp.clone()
        } else {
            format!("{stamp}-{n}")
        };
        let path = root.join(name);
        match fs::create_dir(&path) {
            Ok(()) => break path,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 1000 => n += 1,
            Err(e) => return Err(Error::io(&path, e)),
        }
    };
    sync_dir(&root).map_err(|e| Error::io(&root, e))?;
    *q = Some(path.clone());
    Ok(path)
}

/// Writes `bytes` to a new file `path` and fsyncs it.
fn write_durably(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = File::create(path).map_err(|e| Error::io(path, e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io(path, e))
}

/// Puts the original file `path` into the quarantine directory `q` under its own name: a hard
/// link (the caller then replaces or removes `path`), or a durable copy where the file system
/// cannot link.
fn keep_original(path: &Path, q: &Path) -> Result<()> {
    let name = path.file_name().unwrap_or(path.as_os_str());
    let dest = q.join(name);
    if fs::hard_link(path, &dest).is_err() {
        let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
        write_durably(&dest, &bytes)?;
    }
    Ok(())
}

/// The quarantine file for `len` bytes at `offset` of the segment `seg`.
fn range_file(q: &Path, seg: &Path, what: &str, offset: u64, len: u64) -> PathBuf {
    let name = seg
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    q.join(format!("{name}.{what}-at-{offset}-len-{len}.bin"))
}

/// Writes each damaged byte range (and the torn tail) of the segment `seg` (whose bytes are
/// `bytes`) to its own quarantine file.
fn quarantine_ranges(
    seg: &Path,
    damage: &[ScanDamage],
    torn: Option<&Range<u64>>,
    bytes: &[u8],
    q: &Path,
) -> Result<()> {
    let slice = |r: Range<u64>| {
        let end = usize::try_from(r.end)
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        let start = usize::try_from(r.start).unwrap_or(usize::MAX).min(end);
        &bytes[start..end]
    };
    for d in damage.iter().filter(|d| d.length > 0) {
        let part = slice(d.offset..d.offset.saturating_add(d.length));
        write_durably(&range_file(q, seg, "damaged", d.offset, d.length), part)?;
    }
    if let Some(t) = torn {
        let part = slice(t.clone());
        write_durably(&range_file(q, seg, "torn", t.start, t.end - t.start), part)?;
    }
    Ok(())
}

/// Cuts the torn tail `torn` of the last segment (after copying it into quarantine), as every
/// open does.
fn cut_tail(s: &Survey, torn: &Range<u64>, q: &Path) -> Result<()> {
    let map = map_file(&s.path)?;
    quarantine_ranges(&s.path, &[], Some(torn), &map, q)?;
    drop(map);
    let f = OpenOptions::new()
        .write(true)
        .open(&s.path)
        .map_err(|e| Error::io(&s.path, e))?;
    f.set_len(torn.start)
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io(&s.path, e))
}

/// Rewrites the damaged segment `s` without its damage (steps 1 to 6 of the module
/// documentation).
fn rewrite_segment(dir: &Path, s: &Survey, q: &Path, created: &[String]) -> Result<()> {
    let map = map_file(&s.path)?;
    quarantine_ranges(&s.path, &s.damage, s.torn.as_ref(), &map, q)?;
    let name = segment_file_name(s.first);
    let tmp = dir.join(format!("{name}.repair.tmp"));
    let file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let lost: Vec<Range<u64>> = s.damage.iter().map(|d| d.positions.clone()).collect();
    let mut w = Rewriter {
        map: &map,
        out: BufWriter::with_capacity(1 << 20, file),
        written: SEGMENT_HEADER_LEN,
        prev: None,
        lost_after: false,
        table: Memtable::default(),
        error: None,
        lost: &lost,
        buf: Vec::new(),
    };
    let header = encode_segment_header_version(s.first, SEGMENT_FORMAT_VERSION_GAPS);
    if let Err(e) = w.out.write_all(&header) {
        w.error = Some(e);
    }
    let mode = match s.next_first {
        Some(_) => ScanMode::Sealed,
        None => ScanMode::Open,
    };
    scan_segment(&map, s.first, mode, s.next_first, |item| match item {
        Scanned::Event(v, offset) => {
            w.flush_prev();
            w.prev = Some((*v, offset));
        }
        Scanned::Missing(r) => {
            w.lost_after |= w.lost.iter().any(|l| l.contains(&r.start));
            w.flush_prev();
            w.table.insert_missing(r);
        }
    });
    // A last frame without the commit-end flag ends an append whose later frames are lost.
    w.lost_after = true;
    w.flush_prev();
    let Rewriter {
        out,
        written,
        table,
        error,
        ..
    } = w;
    if let Some(e) = error {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io(&tmp, e));
    }
    let file = out
        .into_inner()
        .map_err(|e| Error::io(&tmp, e.into_error()))?;
    file.sync_all().map_err(|e| Error::io(&tmp, e))?;
    drop(file);
    let positions = table.offsets.len() as u64;
    if positions != s.next_position - s.first {
        let _ = fs::remove_file(&tmp);
        return Err(Error::corruption(
            &s.path,
            0,
            format!(
                "the repaired segment would hold {positions} positions, not {}",
                s.next_position - s.first
            ),
        ));
    }
    drop(map);
    // Step 3: the originals into quarantine.
    let idx_path = dir.join(index_file_name(s.first));
    keep_original(&s.path, q)?;
    let had_index = idx_path.exists();
    if had_index {
        keep_original(&idx_path, q)?;
    }
    sync_dir(q).map_err(|e| Error::io(q, e))?;
    // Step 4: no index describes the old segment any more.
    if had_index {
        fs::remove_file(&idx_path).map_err(|e| Error::io(&idx_path, e))?;
        sync_dir(dir).map_err(|e| Error::io(dir, e))?;
    }
    // Step 5: the repaired segment in place.
    fs::rename(&tmp, &s.path).map_err(|e| Error::io(&s.path, e))?;
    sync_dir(dir).map_err(|e| Error::io(dir, e))?;
    // Step 6: its index (a sealed segment's only; the last one is indexed by a scan at open).
    if s.next_first.is_some() {
        let mut input = table.to_index_input(s.first, written);
        input.created.extend(created.iter().cloned());
        write_index(&idx_path, input)?;
    }
    Ok(())
}

/// Writes the intact frames of a damaged segment to its repaired copy, building its index.
struct Rewriter<'a, 'l> {
    map: &'a [u8],
    out: BufWriter<File>,
    /// Bytes written so far (the next frame's offset).
    written: u64,
    /// The last frame seen, not written yet: whether it needs the commit-end flag depends on
    /// what follows it.
    prev: Option<(EventView<'a>, u64)>,
    /// Whether positions lost in damage follow `prev`.
    lost_after: bool,
    table: Memtable,
    /// The first write error (later writes are skipped).
    error: Option<std::io::Error>,
    /// The positions lost in damage.
    lost: &'l [Range<u64>],
    buf: Vec<u8>,
}

impl Rewriter<'_, '_> {
    /// Writes `prev`, unchanged, or with the commit-end flag when positions lost in damage
    /// follow it.
    fn flush_prev(&mut self) {
        let lost_after = std::mem::take(&mut self.lost_after);
        let Some((v, offset)) = self.prev.take() else {
            return;
        };
        let len = FRAME_PREFIX_LEN
            + BODY_FIXED_LEN
            + v.stream.len()
            + v.event_type.len()
            + v.data.len()
            + v.metadata.len();
        let bytes = if v.commit_end || !lost_after {
            let start = usize::try_from(offset).unwrap_or(usize::MAX);
            match self.map.get(start..start.saturating_add(len)) {
                Some(b) => b,
                None => {
                    self.error.get_or_insert_with(|| {
                        std::io::Error::other(format!("frame at offset {offset} out of bounds"))
                    });
                    return;
                }
            }
        } else {
            self.buf.clear();
            encode_frame(
                &mut self.buf,
                &EventView {
                    commit_end: true,
                    ..v
                },
            );
            &self.buf[..]
        };
        if self.error.is_none() {
            if let Err(e) = self.out.write_all(bytes) {
                self.error = Some(e);
            }
        }
        self.table.insert(&MemEntry::from_view(&v, self.written));
        self.written += len as u64;
    }
}
