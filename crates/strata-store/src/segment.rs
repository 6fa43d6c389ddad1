//! Segment files: naming, the sealed (memory-mapped) and open (pread) read paths, and the scan
//! that validates frames for recovery and index rebuilds.

use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use std::sync::OnceLock;

use memmap2::{Mmap, MmapOptions};
use parking_lot::RwLock;

use crate::damage::Damage;
use crate::error::{Error, Result};
use crate::frame::{
    decode_frame, decode_segment_header_version, EventView, FrameError, BODY_FIXED_LEN,
    FRAME_PREFIX_LEN, SEGMENT_FORMAT_VERSION, SEGMENT_FORMAT_VERSION_GAPS, SEGMENT_HEADER_LEN,
};
use crate::index_file::{write_index, SegmentIndex, NO_FRAME};
use crate::memtable::{MemEntry, Memtable};
use crate::options::RebuildProgress;

/// File name of the segment whose first event has `first_position` (zero-padded: name order is log order).
pub(crate) fn segment_file_name(first_position: u64) -> String {
    format!("{first_position:020}.seg")
}

/// File name of the index of that segment.
pub(crate) fn index_file_name(first_position: u64) -> String {
    format!("{first_position:020}.idx")
}

/// The segments in `dir`, ordered by first position.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for entry in rd {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(stem) = name.strip_suffix(".seg") else {
            continue;
        };
        if stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(first) = stem.parse::<u64>() {
                out.push((first, entry.path()));
            }
        }
    }
    out.sort_by_key(|(first, _)| *first);
    Ok(out)
}

/// Maps a file read-only.
pub(crate) fn map_file(path: &Path) -> Result<Mmap> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: segment files are only ever appended to by this process's single writer, and the
    // bytes a map covers are never modified again (sealed segments are immutable; the open
    // segment is mapped whole only during recovery, before the writer starts; see
    // `OpenSegment::map` for its read map). Outside modification of the data directory while
    // the store runs is outside the store's contract.
    unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))
}

/// A sealed, immutable segment: memory-mapped bytes plus its index.
///
/// The index file's header is checked when the segment is opened; its body is checksummed on
/// first use ([`SealedSegment::index`]) and rebuilt from the segment if that fails, so a damaged
/// index is never trusted and opening stays independent of the history's size. A rebuild that
/// finds damaged frames keeps the index in memory only (rebuilt at every open until a repair)
/// and remembers the positions lost: what those events were is unknown ([`Damage::indexed`]
/// false).
pub(crate) struct SealedSegment {
    pub path: PathBuf,
    pub first_position: u64,
    pub map: Mmap,
    /// Header-checked index (its event count is trusted: it matched the segment length).
    header_index: SegmentIndex,
    /// The body-checked index: `rebuilt` is `None` when `header_index` passed its checksum.
    checked: OnceLock<std::result::Result<Checked, String>>,
    /// Whether a damaged index may be rewritten (false for read-only stores).
    may_rebuild: bool,
    /// Told about a rebuild's progress.
    progress: Option<RebuildProgress>,
    /// Whether the damage in `lost` was handed to the store's damage log already.
    lost_reported: std::sync::atomic::AtomicBool,
}

/// The outcome of checking a sealed segment's index.
struct Checked {
    /// The index rebuilt from the segment, when the file's failed its checksum.
    rebuilt: Option<SegmentIndex>,
    /// Damage the rebuild scan found (positions lost, contents unknown).
    lost: Vec<Damage>,
}

impl SealedSegment {
    /// A segment whose index was opened (header checked) from `index`.
    pub fn new(
        path: PathBuf,
        first_position: u64,
        map: Mmap,
        index: SegmentIndex,
        may_rebuild: bool,
        progress: Option<RebuildProgress>,
    ) -> Self {
        SealedSegment {
            path,
            first_position,
            map,
            header_index: index,
            checked: OnceLock::new(),
            may_rebuild,
            progress,
            lost_reported: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// A segment whose index was just built by this process (already known good), with the
    /// damage the building scan found (none for a segment this process sealed).
    pub fn freshly_indexed(
        path: PathBuf,
        first_position: u64,
        map: Mmap,
        index: SegmentIndex,
        lost: Vec<Damage>,
    ) -> Self {
        let seg = SealedSegment::new(path, first_position, map, index, true, None);
        let _ = seg.checked.set(Ok(Checked {
            rebuilt: None,
            lost,
        }));
        seg
    }

    /// One past the last position in this segment.
    pub fn end_position(&self) -> u64 {
        self.first_position + self.header_index.event_count()
    }

    /// The index file's path.
    pub fn index_path(&self) -> &Path {
        self.header_index.path()
    }

    /// The segment's index, checksummed (and rebuilt if damaged) on first use.
    pub fn index(&self) -> Result<&SegmentIndex> {
        match self.checked() {
            Ok(Checked {
                rebuilt: Some(rebuilt),
                ..
            }) => Ok(rebuilt),
            Ok(Checked { rebuilt: None, .. }) => Ok(&self.header_index),
            Err(why) => Err(Error::corruption(self.header_index.path(), 0, why.clone())),
        }
    }

    /// Positions lost in damage found by the scan that rebuilt this segment's index (empty
    /// until [`SealedSegment::index`] ran, and for a segment whose index file is intact).
    pub fn lost(&self) -> &[Damage] {
        match self.checked.get() {
            Some(Ok(c)) => &c.lost,
            _ => &[],
        }
    }

    /// True the first time it is called (once [`SealedSegment::lost`] is known): whoever gets
    /// `true` reports the lost damage, so reads do not record it again and again.
    pub fn first_report_of_lost(&self) -> bool {
        !self
            .lost_reported
            .swap(true, std::sync::atomic::Ordering::AcqRel)
    }

    fn checked(&self) -> &std::result::Result<Checked, String> {
        self.checked.get_or_init(|| {
            let Err(damage) = self.header_index.verify_checksum() else {
                return Ok(Checked {
                    rebuilt: None,
                    lost: Vec::new(),
                });
            };
            let idx_path = self.header_index.path().to_path_buf();
            let write = self.may_rebuild.then_some(idx_path.as_path());
            rebuild_index(
                &self.path,
                &self.map,
                self.first_position,
                self.end_position(),
                &idx_path,
                write,
                self.progress.as_ref(),
            )
            .map(|(index, lost)| Checked {
                rebuilt: Some(index),
                lost,
            })
            .map_err(|e| format!("{damage}; rebuilding it failed: {e}"))
        })
    }

    /// Decodes and checks the frame at `offset`.
    pub fn frame_at(&self, offset: u64) -> Result<(EventView<'_>, usize)> {
        let bytes = usize::try_from(offset)
            .ok()
            .and_then(|o| self.map.get(o..))
            .ok_or_else(|| {
                Error::corruption(&self.path, offset, "index points past segment end")
            })?;
        decode_frame(bytes).map_err(|e| frame_error(&self.path, offset, e))
    }

    /// The event at `position` (which must lie in this segment) through `index` (this
    /// segment's): `None` when the position has no frame here (removed). A position lost in
    /// damage is an error naming the damage.
    pub fn event_in(&self, index: &SegmentIndex, position: u64) -> Result<Option<EventView<'_>>> {
        let offset = index.offset(position).ok_or_else(|| {
            Error::corruption(
                self.index_path(),
                0,
                format!("position {position} missing from index"),
            )
        })?;
        if offset == NO_FRAME {
            return match self.lost().iter().find(|d| d.holds(position)) {
                Some(d) => Err(d.error_at(position)),
                None => Ok(None),
            };
        }
        let (view, _) = self.frame_at(offset).map_err(|e| e.at_position(position))?;
        if view.position != position {
            return Err(Error::corruption(
                &self.path,
                offset,
                format!(
                    "frame holds position {}, index says {position}",
                    view.position
                ),
            )
            .at_position(position));
        }
        Ok(Some(view))
    }

    /// Bytes from `offset` to the next frame the index lists after `position` (or the end of
    /// the file): the extent of a damaged frame found by a read.
    pub fn extent(&self, offset: u64, position: u64) -> u64 {
        let index = self.index().ok();
        let next = (position.saturating_add(1)..self.end_position())
            .filter_map(|p| index.and_then(|i| i.offset(p)))
            .find(|&o| o != NO_FRAME)
            .unwrap_or(self.map.len() as u64);
        next.saturating_sub(offset)
    }
}

/// Converts a frame decoding failure into a corruption error naming the file and offset.
pub(crate) fn frame_error(path: &Path, offset: u64, e: FrameError) -> Error {
    Error::corruption(path, offset, frame_error_detail(e))
}

/// The segment being written: read through a map (or with `pread` where the map does not
/// reach) up to the published end ([`Memtable::end`]), indexed by a memtable.
pub(crate) struct OpenSegment {
    pub path: PathBuf,
    pub first_position: u64,
    pub file: File,
    pub table: RwLock<Memtable>,
    /// Damage recovery found in this segment (the memtable has [`NO_FRAME`] for the positions
    /// lost in it); the store is read-only while there is any.
    pub lost: Vec<Damage>,
    /// A read-only map of the file's first `len` bytes, made once when the segment opens: `len`
    /// is the segment size (or the file's length, if larger), so the map reaches past the
    /// file's current end and covers what the writer appends later without a remap. Only bytes
    /// below the memtable's published [`Memtable::end`] are ever read through it (pages past the
    /// file's end would fault with `SIGBUS`); frames the map does not reach (an append larger
    /// than the segment size) are read with `pread`. `None` where the map could not be made.
    map: Option<Mmap>,
}

impl OpenSegment {
    /// Opens the read handle of the open segment, mapping its first `map_len` bytes (at least
    /// the file's current length; 0 = no map, every read is a `pread`).
    pub fn open(
        path: &Path,
        first_position: u64,
        table: Memtable,
        map_len: u64,
    ) -> Result<OpenSegment> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let map = if map_len == 0 {
            None
        } else {
            let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
            usize::try_from(map_len.max(file_len))
                .ok()
                // SAFETY: the writer only appends to this file, and never changes or cuts the
                // bytes below the memtable's published end, which are the only ones read
                // through the map (`OpenSegment::frame`); the map reaching past the file's end
                // is never touched there. Outside modification of the data directory while the
                // store runs is outside the store's contract.
                .and_then(|len| unsafe { MmapOptions::new().len(len).map(&file) }.ok())
        };
        Ok(OpenSegment {
            path: path.to_owned(),
            first_position,
            file,
            table: RwLock::new(table),
            lost: Vec::new(),
            map,
        })
    }

    /// The frame offset of `position` (in this segment and committed): `Ok(None)` when the
    /// position has no frame (removed), an error naming the damage when it was lost in damage.
    pub fn offset(&self, position: u64) -> Result<Option<u64>> {
        Ok(self.locate(position)?.map(|(offset, _)| offset))
    }

    /// [`OpenSegment::offset`], with the published end of the segment seen with it (the bound
    /// of the frame's bytes).
    pub fn locate(&self, position: u64) -> Result<Option<(u64, u64)>> {
        let (offset, end) = {
            let table = self.table.read();
            let offset = position
                .checked_sub(self.first_position)
                .and_then(|i| table.offsets.get(usize::try_from(i).ok()?).copied());
            (offset, table.end)
        };
        let offset = offset.ok_or_else(|| {
            Error::invalid("position", format!("{position} is past the end of the log"))
        })?;
        if offset != NO_FRAME {
            return Ok(Some((offset, end)));
        }
        match self.lost.iter().find(|d| d.holds(position)) {
            Some(d) => Err(d.error_at(position)),
            None => Ok(None),
        }
    }

    /// The bytes from the frame at `offset` up to at most the published `end` (from
    /// [`OpenSegment::locate`]): a slice of the map when it reaches `end`, else the frame read
    /// into `buf`. The caller decodes (and so checks) the frame; a damaged length prefix can
    /// claim no byte past `end`.
    pub fn frame<'a>(&'a self, offset: u64, end: u64, buf: &'a mut Vec<u8>) -> Result<&'a [u8]> {
        match self.mapped(offset, end) {
            Some(bytes) => Ok(bytes),
            None => {
                self.read_frame(offset, buf)?;
                // The file may be longer than what is published (the writer extends it ahead of
                // its writes): a length prefix reaching past `end` is a short frame.
                if offset.saturating_add(buf.len() as u64) > end {
                    return Err(frame_error(&self.path, offset, FrameError::Short));
                }
                Ok(buf)
            }
        }
    }

    /// The mapped bytes from `offset` to the published `end`, if the map reaches `end`.
    pub fn mapped(&self, offset: u64, end: u64) -> Option<&[u8]> {
        let map = self.map.as_ref()?;
        let start = usize::try_from(offset).ok()?;
        let end = usize::try_from(end).ok()?;
        map.get(start..end)
    }

    /// Reads the whole frame at `offset` into `buf` (replacing its contents); the caller decodes
    /// (and so checks) it. The buffer grows to the frame's length prefix only once the file is
    /// known to hold that many bytes: a damaged prefix is a short frame, never a huge allocation.
    pub fn read_frame(&self, offset: u64, buf: &mut Vec<u8>) -> Result<()> {
        buf.clear();
        buf.resize(FRAME_PREFIX_LEN + BODY_FIXED_LEN + 256, 0);
        let n = self.read_at_most(offset, buf)?;
        if n < FRAME_PREFIX_LEN {
            return Err(frame_error(&self.path, offset, FrameError::Short));
        }
        let body_len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        let total = FRAME_PREFIX_LEN + body_len;
        if total > n {
            // Fewer bytes than the first read asked for: the file ends before the frame does.
            let file_len = if n < buf.len() { 0 } else { self.file_len()? };
            if offset.saturating_add(total as u64) > file_len {
                return Err(frame_error(&self.path, offset, FrameError::Short));
            }
            buf.resize(total, 0);
            let more = self.read_at_most(offset + n as u64, &mut buf[n..])?;
            if n + more < total {
                return Err(frame_error(&self.path, offset, FrameError::Short));
            }
        }
        buf.truncate(total);
        Ok(())
    }

    /// The file's current length in bytes (what a length prefix read from it is checked
    /// against before a buffer is grown to it).
    pub fn file_len(&self) -> Result<u64> {
        Ok(self
            .file
            .metadata()
            .map_err(|e| Error::io(&self.path, e))?
            .len())
    }

    /// Reads as many bytes as are available at `offset` into `buf`; returns how many.
    pub fn read_at_most(&self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io(&self.path, e)),
            }
        }
        Ok(done)
    }
}

/// Rebuilds the index of a sealed segment (positions `first..end`) by scanning (and checking)
/// every frame. Without damage the index is written to `write` (when given) and opened from
/// there; with damage it is kept in memory only, named `idx_path`, and the damage is returned
/// (the lost positions have [`NO_FRAME`] offsets).
pub(crate) fn rebuild_index(
    path: &Path,
    bytes: &[u8],
    first: u64,
    end: u64,
    idx_path: &Path,
    write: Option<&Path>,
    progress: Option<&RebuildProgress>,
) -> Result<(SegmentIndex, Vec<Damage>)> {
    const REPORT_EVERY: u64 = 4 << 20;
    let total = bytes.len() as u64;
    let mut reported = 0;
    let mut table = Memtable::default();
    let outcome = scan_segment(
        bytes,
        first,
        ScanMode::Sealed,
        Some(end),
        |item| match item {
            Scanned::Event(v, offset) => {
                if let Some(p) = progress {
                    if offset >= reported + REPORT_EVERY {
                        reported = offset;
                        p(path, offset, total);
                    }
                }
                table.insert(&MemEntry::from_view(v, offset));
            }
            Scanned::Missing(r) => table.insert_missing(r),
        },
    );
    if let Some(p) = progress {
        p(path, total, total);
    }
    if outcome.next_position != end {
        // More frames than the index (or the next segment's name) allows.
        return Err(Error::corruption(
            path,
            outcome.committed_len,
            format!(
                "segment holds positions up to {}, expected to end at {end}",
                outcome.next_position
            ),
        ));
    }
    // After damage, or in a segment with gaps (a repair or scavenge removed events), a stream's
    // revision 0 may be gone while later ones are here.
    if !outcome.damage.is_empty() || outcome.version == SEGMENT_FORMAT_VERSION_GAPS {
        table.list_every_stream_as_created();
    }
    let mut input = table.to_index_input(first, total);
    // A scavenged segment's removed events: their kept heads and ids (`<first>.rmv`).
    crate::scavenge::sidecar::apply(path, &mut input);
    let lost: Vec<Damage> = outcome
        .damage
        .iter()
        .map(|d| d.to_damage(path, false))
        .collect();
    match write {
        Some(dest) if lost.is_empty() => {
            write_index(dest, input)?;
            Ok((SegmentIndex::open(dest, first, total)?, lost))
        }
        _ => {
            let bytes = crate::index_file::encode(input)?;
            Ok((
                SegmentIndex::from_bytes(idx_path, bytes, first, total)?,
                lost,
            ))
        }
    }
}

/// How the scan treats damage.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum ScanMode {
    /// A sealed segment: every byte must be whole frames ending in a commit end.
    Sealed,
    /// The last segment: a torn tail is expected after a crash and is reported as such.
    Open,
}

/// Damaged bytes a scan found and stepped over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ScanDamage {
    /// Offset of the first damaged byte (a frame boundary, or 0 for the header).
    pub offset: u64,
    /// Bytes up to the next valid frame (or the end of the file); 0 when frames are missing
    /// without damaged bytes in their place.
    pub length: u64,
    /// The positions whose frames are lost in those bytes (empty for the header).
    pub positions: Range<u64>,
    /// What is wrong.
    pub detail: String,
}

impl ScanDamage {
    /// This damage as an error naming `path` (and the first lost position, if any).
    pub fn error(&self, path: &Path) -> Error {
        let e = Error::corruption(path, self.offset, self.detail.clone());
        if self.positions.is_empty() {
            e
        } else {
            e.at_position(self.positions.start)
        }
    }

    /// This damage as a [`Damage`] of `path`.
    pub fn to_damage(&self, path: &Path, indexed: bool) -> Damage {
        Damage {
            file: path.to_owned(),
            offset: self.offset,
            length: self.length,
            positions: self.positions.clone(),
            indexed,
            detail: self.detail.clone(),
        }
    }
}

/// The result of scanning a segment's bytes.
#[derive(Debug)]
pub(crate) struct ScanOutcome {
    /// Byte length up to and including the last whole commit.
    pub committed_len: u64,
    /// Position after the last committed event (or after the last position known lost).
    pub next_position: u64,
    /// What lies past `committed_len`, if anything (torn tail, uncommitted frames).
    pub torn: Option<String>,
    /// Damaged ranges, in file order; the scan resumed after each one.
    pub damage: Vec<ScanDamage>,
    /// The segment format version from the header (1 when the header is damaged).
    pub version: u32,
}

impl ScanOutcome {
    /// The first damage as an error, if any.
    pub fn first_error(&self, path: &Path) -> Option<Error> {
        self.damage.first().map(|d| d.error(path))
    }
}

/// What a scan reports, position by position, in log order.
pub(crate) enum Scanned<'v, 'a> {
    /// An intact event of a whole commit, with its frame's offset.
    Event(&'v EventView<'a>, u64),
    /// Positions without an intact frame: lost in damage (listed in [`ScanOutcome::damage`]) or
    /// removed (a gap of a version-2 segment).
    Missing(Range<u64>),
}

/// One item of a commit that is not complete yet.
enum Pending<'a> {
    Event(EventView<'a>, u64),
    Missing(Range<u64>),
}

fn deliver<'a>(pending: &mut Vec<Pending<'a>>, f: &mut impl FnMut(Scanned<'_, 'a>)) {
    for p in pending.drain(..) {
        match p {
            Pending::Event(v, o) => f(Scanned::Event(&v, o)),
            Pending::Missing(r) => f(Scanned::Missing(r)),
        }
    }
}

/// Validates every frame of a segment, calling `on_item` for each event of each whole commit
/// and for each run of missing positions, in order. Never panics on damaged bytes.
///
/// Damage does not end the scan: frames are self-delimiting and checksummed, so after a frame
/// that fails its checks the scan looks for the next offset holding a valid frame of a later
/// position whose successor is valid too ([`resync`]), reports the bytes in between as
/// [`ScanDamage`] (with the positions lost in them) and goes on from there. In
/// [`ScanMode::Open`], damage that no valid frame follows is a torn tail (cut by recovery).
/// `expected_end` (the next segment's first position, for a sealed segment) tells how many
/// positions damage at the very end of a sealed segment lost.
pub(crate) fn scan_segment<'a>(
    bytes: &'a [u8],
    expected_first_position: u64,
    mode: ScanMode,
    expected_end: Option<u64>,
    mut on_item: impl FnMut(Scanned<'_, 'a>),
) -> ScanOutcome {
    let mut out = ScanOutcome {
        committed_len: SEGMENT_HEADER_LEN,
        next_position: expected_first_position,
        torn: None,
        damage: Vec::new(),
        version: SEGMENT_FORMAT_VERSION,
    };
    match decode_segment_header_version(bytes) {
        Ok((first, version)) if first == expected_first_position => out.version = version,
        Ok((first, _)) => out.damage.push(ScanDamage {
            offset: 0,
            length: SEGMENT_HEADER_LEN,
            positions: 0..0,
            detail: format!(
                "header says first position {first}, file name says {expected_first_position}"
            ),
        }),
        Err(why) => {
            if mode == ScanMode::Open && bytes.len() < SEGMENT_HEADER_LEN as usize {
                out.committed_len = 0;
                out.torn = Some(format!("segment header torn ({} bytes)", bytes.len()));
                return out;
            }
            out.damage.push(ScanDamage {
                offset: 0,
                length: SEGMENT_HEADER_LEN.min(bytes.len() as u64),
                positions: 0..0,
                detail: why,
            });
        }
    }
    let gaps_allowed = out.version == SEGMENT_FORMAT_VERSION_GAPS;
    let mut pending: Vec<Pending<'a>> = Vec::new();
    let mut offset = SEGMENT_HEADER_LEN as usize;
    let mut position = expected_first_position;
    while offset < bytes.len() {
        let problem = match decode_frame(&bytes[offset..]) {
            Ok((view, len)) if view.position == u64::MAX => Some((
                FrameError::Bad(
                    "frame holds the last possible position (no position follows it)".into(),
                ),
                Some((view, len)),
            )),
            // The next position, or (format 2) a later one: the positions between are a gap.
            Ok((view, len))
                if view.position == position || (view.position > position && gaps_allowed) =>
            {
                if view.position > position {
                    pending.push(Pending::Missing(position..view.position));
                }
                pending.push(Pending::Event(view, offset as u64));
                position = view.position + 1;
                offset += len;
                if view.commit_end {
                    deliver(&mut pending, &mut on_item);
                    out.committed_len = offset as u64;
                    out.next_position = position;
                }
                None
            }
            Ok((view, len)) => Some((
                FrameError::Bad(format!(
                    "frame holds position {}, expected {position}",
                    view.position
                )),
                Some((view, len)),
            )),
            Err(e) => Some((e, None)),
        };
        let Some((error, decoded)) = problem else {
            continue;
        };
        if error == FrameError::Zero
            && mode == ScanMode::Open
            && bytes[offset..].iter().all(|&b| b == 0)
        {
            // Zeros to the end: the space the writer extends the file by ahead of its writes
            // (or pages of an unsynced write never written). Nothing was acknowledged there.
            out.torn = Some(format!(
                "{} bytes of zeros past the last append at offset {offset} cut",
                bytes.len() as u64 - out.committed_len
            ));
            return out;
        }
        // A valid frame of a later position right here: frames are missing, no bytes damaged.
        if let Some((view, _)) = decoded {
            if view.position > position
                && view.position < u64::MAX
                && continues(&bytes[offset..], view.position, gaps_allowed)
            {
                deliver(&mut pending, &mut on_item);
                out.damage.push(ScanDamage {
                    offset: offset as u64,
                    length: 0,
                    positions: position..view.position,
                    detail: format!(
                        "frames of positions {position}..{} are missing",
                        view.position
                    ),
                });
                on_item(Scanned::Missing(position..view.position));
                position = view.position;
                out.next_position = position;
                continue;
            }
        }
        let found = resync(&bytes[offset..], position, gaps_allowed);
        let unwritten = error == FrameError::Zero
            && found.is_some_and(|(skip, _)| never_written(&bytes[offset..offset + skip], offset));
        match found {
            // After a crash, a page of the last (unsynced, so never acknowledged) write may be
            // missing while later pages of it made it to disk: zeros where the frame should
            // start, to the end of its page. That is a torn write, not damage: cut it all (a
            // later page cannot hold anything that was synced, as the sync covers every
            // earlier byte too).
            Some(_) if unwritten && mode == ScanMode::Open => {
                out.torn = Some(format!(
                    "torn write at offset {offset} (a page of it never written): {} bytes cut",
                    bytes.len() as u64 - out.committed_len
                ));
                return out;
            }
            Some((skip, next)) => {
                // Something valid follows: the damaged bytes were committed, so were the
                // frames of their append before them.
                deliver(&mut pending, &mut on_item);
                out.damage.push(ScanDamage {
                    offset: offset as u64,
                    length: skip as u64,
                    positions: position..next,
                    detail: frame_error_detail(error),
                });
                on_item(Scanned::Missing(position..next));
                out.committed_len = (offset + skip) as u64;
                out.next_position = next;
                position = next;
                offset += skip;
            }
            None if mode == ScanMode::Open => {
                out.torn = Some(format!(
                    "torn tail at offset {offset}: {} bytes cut",
                    bytes.len() as u64 - out.committed_len
                ));
                return out;
            }
            None => {
                deliver(&mut pending, &mut on_item);
                let end = expected_end.unwrap_or(position).max(position);
                out.damage.push(ScanDamage {
                    offset: offset as u64,
                    length: (bytes.len() - offset) as u64,
                    positions: position..end,
                    detail: frame_error_detail(error),
                });
                if end > position {
                    on_item(Scanned::Missing(position..end));
                }
                out.committed_len = bytes.len() as u64;
                out.next_position = end;
                return out;
            }
        }
    }
    if mode == ScanMode::Sealed {
        // A sealed segment is whole appends up to the next segment's first position: an append
        // never spans two segments, and a rewrite marks the last frame it keeps as the end of
        // one. Frames of an unfinished append at the end were cut (their events, intact and
        // once synced, are still delivered).
        let unfinished = pending.iter().any(|p| matches!(p, Pending::Event(..)));
        deliver(&mut pending, &mut on_item);
        out.committed_len = bytes.len() as u64;
        out.next_position = position;
        let mut reported = false;
        if let Some(end) = expected_end.filter(|&end| end > position) {
            // A version-2 segment may end in a gap (a repair moved its last frames out).
            if !gaps_allowed {
                out.damage.push(ScanDamage {
                    offset: bytes.len() as u64,
                    length: 0,
                    positions: position..end,
                    detail: format!("segment ends before position {end}: frames are missing"),
                });
                reported = true;
            }
            on_item(Scanned::Missing(position..end));
            out.next_position = end;
        }
        if unfinished && !reported {
            out.damage.push(ScanDamage {
                offset: bytes.len() as u64,
                length: 0,
                positions: position..position,
                detail: format!(
                    "segment ends inside an append: frames after position {} are missing",
                    position.wrapping_sub(1)
                ),
            });
        }
    } else if let Some(first_uncommitted) = pending.iter().find_map(|p| match p {
        Pending::Event(_, o) => Some(*o),
        Pending::Missing(_) => None,
    }) {
        out.torn = Some(format!(
            "{} frames of an unfinished append at offset {first_uncommitted} cut",
            pending.len()
        ));
    }
    out
}

/// Page size assumed for the "never written" test of [`never_written`].
const PAGE: usize = 4096;

/// Whether the damaged bytes `hole` (starting at file offset `at`, where a frame should start)
/// are zeros up to the end of `at`'s page (or the end of the hole): a page the file system
/// never wrote, as a crash leaves one of an unsynced write, rather than damaged data (no frame
/// starts with zeros, and bit rot does not zero the rest of a page).
fn never_written(hole: &[u8], at: usize) -> bool {
    let to_page_end = PAGE - at % PAGE;
    hole.iter().take(to_page_end).all(|&b| b == 0)
}

/// The smallest possible frame: prefix and fixed body.
const MIN_FRAME_LEN: usize = FRAME_PREFIX_LEN + BODY_FIXED_LEN;

/// After damage at the start of `at_bad` (where the frame of `position` should be): the offset
/// (relative to `at_bad`) of the next trustworthy frame and its position.
///
/// A candidate must be a valid frame of a later position than `position` (the damaged frame
/// held `position`, so a valid-looking frame image inside its own payload that claims
/// `position` is never taken), whose position fits the bytes skipped (each lost frame takes at
/// least [`MIN_FRAME_LEN`] bytes; not checked where gaps are allowed, as a gap skips positions
/// without bytes), and which the bytes after it continue ([`continuation`]): a
/// frame image inside a payload is followed by more payload, not by the next frame. The first
/// candidate continued by a valid frame, the end of the bytes or never-written space wins;
/// failing that, the first one followed by a torn frame (a crash after the damage); failing
/// that, the first one followed by more damage (a real frame between two damaged ones must not
/// be lost, nor damage an intact frame follows be taken for a torn tail). Tries every byte
/// offset (damage may have hit a length prefix): costs time only on this path.
fn resync(at_bad: &[u8], position: u64, gaps_allowed: bool) -> Option<(usize, u64)> {
    // The first candidate of each kind of continuation; the strongest kind wins.
    let mut weak = None;
    let mut broken = None;
    for o in 1..at_bad.len().saturating_sub(MIN_FRAME_LEN - 1) {
        let Ok((v, _)) = decode_frame(&at_bad[o..]) else {
            continue;
        };
        // Where gaps are allowed, positions skip without bytes: the skip tells nothing.
        let fits =
            gaps_allowed || (v.position - position.min(v.position)) <= (o / MIN_FRAME_LEN) as u64;
        if v.position <= position || v.position == u64::MAX || !fits {
            continue;
        }
        match continuation(&at_bad[o..], v.position, gaps_allowed) {
            Continuation::Strong => return Some((o, v.position)),
            Continuation::Weak => {
                weak.get_or_insert((o, v.position));
            }
            Continuation::Broken => {
                broken.get_or_insert((o, v.position));
            }
        }
    }
    weak.or(broken)
}

/// How the bytes after a valid frame continue it.
#[derive(PartialEq, Eq)]
enum Continuation {
    /// The end of the bytes, never-written (zero) space, or a valid frame of the next position
    /// (of a later one, where gaps are allowed).
    Strong,
    /// A frame cut short: a torn tail, or garbage.
    Weak,
    /// Bytes that are no valid frame (more damage, or garbage).
    Broken,
}

/// How the bytes after the valid frame at the start of `at` (holding `position`) continue it.
fn continuation(at: &[u8], position: u64, gaps_allowed: bool) -> Continuation {
    let Ok((_, len)) = decode_frame(at) else {
        return Continuation::Broken;
    };
    let rest = &at[len..];
    if rest.is_empty() {
        return Continuation::Strong;
    }
    match decode_frame(rest) {
        Ok((next, _))
            if next.position == position + 1 || (gaps_allowed && next.position > position) =>
        {
            Continuation::Strong
        }
        Err(FrameError::Zero) => Continuation::Strong,
        Err(FrameError::Short) => Continuation::Weak,
        _ => Continuation::Broken,
    }
}

/// Whether the valid frame at the start of `at` (holding `position`) is strongly continued.
fn continues(at: &[u8], position: u64, gaps_allowed: bool) -> bool {
    continuation(at, position, gaps_allowed) == Continuation::Strong
}

fn frame_error_detail(e: FrameError) -> String {
    match e {
        FrameError::Short => "truncated frame".to_owned(),
        FrameError::Zero => "zeroed frame".to_owned(),
        FrameError::Bad(why) => why,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::ContentType;
    use crate::frame::{encode_frame, encode_segment_header, FrameFields};
    use uuid::Uuid;

    /// A segment starting at position 10 with appends of the given sizes; returns the bytes and
    /// the offset where each append starts.
    fn segment(appends: &[usize]) -> (Vec<u8>, Vec<usize>) {
        let mut buf = encode_segment_header(10).to_vec();
        let mut starts = Vec::new();
        let mut position = 10;
        for (a, &k) in appends.iter().enumerate() {
            starts.push(buf.len());
            for i in 0..k {
                encode_frame(
                    &mut buf,
                    &FrameFields {
                        position,
                        revision: position - 10,
                        timestamp_micros: 0,
                        id: Uuid::from_u128(position as u128),
                        commit_end: i + 1 == k,
                        content_type: ContentType::Json,
                        stream: "s-1",
                        event_type: "T",
                        data: format!("{{\"a\":{a}}}").as_bytes(),
                        metadata: &[],
                    },
                );
                position += 1;
            }
        }
        (buf, starts)
    }

    fn scan(bytes: &[u8], mode: ScanMode) -> (ScanOutcome, Vec<u64>) {
        let (out, seen, _) = scan_all(bytes, mode, None);
        (out, seen)
    }

    /// The outcome, the positions of the events delivered and the missing runs.
    fn scan_all(
        bytes: &[u8],
        mode: ScanMode,
        end: Option<u64>,
    ) -> (ScanOutcome, Vec<u64>, Vec<Range<u64>>) {
        let mut seen = Vec::new();
        let mut missing = Vec::new();
        let out = scan_segment(bytes, 10, mode, end, |item| match item {
            Scanned::Event(v, _) => seen.push(v.position),
            Scanned::Missing(r) => missing.push(r),
        });
        (out, seen, missing)
    }

    fn frame(position: u64, data: &[u8], commit_end: bool) -> Vec<u8> {
        let mut buf = Vec::new();
        encode_frame(
            &mut buf,
            &FrameFields {
                position,
                revision: position,
                timestamp_micros: 0,
                id: Uuid::from_u128(position as u128),
                commit_end,
                content_type: ContentType::Binary,
                stream: "s-1",
                event_type: "T",
                data,
                metadata: &[],
            },
        );
        buf
    }

    #[test]
    fn whole_segment_scans_clean() {
        let (bytes, _) = segment(&[1, 3, 2]);
        let (out, seen) = scan(&bytes, ScanMode::Sealed);
        assert!(out.damage.is_empty() && out.torn.is_none());
        assert_eq!(out.committed_len, bytes.len() as u64);
        assert_eq!(out.next_position, 16);
        assert_eq!(seen, (10..16).collect::<Vec<_>>());
    }

    #[test]
    fn every_cut_inside_the_last_append_is_a_torn_tail_back_to_the_previous_commit() {
        let (bytes, starts) = segment(&[2, 3]);
        for cut in starts[1]..bytes.len() {
            let (out, seen) = scan(&bytes[..cut], ScanMode::Open);
            assert!(out.damage.is_empty(), "cut {cut}: {:?}", out.damage);
            assert_eq!(out.committed_len, starts[1] as u64, "cut {cut}");
            assert_eq!(out.next_position, 12);
            assert_eq!(seen, vec![10, 11]);
            assert_eq!(out.torn.is_some(), cut > starts[1], "cut {cut}");
        }
    }

    #[test]
    fn zeroed_tail_is_torn_not_corrupt() {
        let (mut bytes, _) = segment(&[2]);
        let len = bytes.len() as u64;
        bytes.extend_from_slice(&[0u8; 100]);
        let (out, _) = scan(&bytes, ScanMode::Open);
        assert!(out.damage.is_empty());
        assert!(out.torn.is_some());
        assert_eq!(out.committed_len, len);
    }

    /// The space the writer extends the open segment by (zeros, megabytes of them) is the end
    /// of an open segment, and damage at the end of a sealed one (a seal cuts it first).
    #[test]
    fn megabytes_of_zeros_end_an_open_segment_and_damage_a_sealed_one() {
        let (mut bytes, _) = segment(&[2, 1]);
        let len = bytes.len() as u64;
        bytes.resize(bytes.len() + (4 << 20), 0);
        let (out, seen) = scan(&bytes, ScanMode::Open);
        assert!(out.damage.is_empty());
        assert_eq!(seen, vec![10, 11, 12]);
        assert_eq!(out.committed_len, len);
        assert!(
            out.torn.as_deref().is_some_and(|t| t.contains("zeros")),
            "{:?}",
            out.torn
        );
        let (out, seen, _) = scan_all(&bytes, ScanMode::Sealed, Some(13));
        assert_eq!(seen, vec![10, 11, 12]);
        assert_eq!(out.damage.len(), 1);
        assert_eq!(out.damage[0].offset, len);
    }

    /// Damage followed by valid frames: reported with its extent and the position lost, and
    /// the scan goes on with the frames after it (in both modes).
    #[test]
    fn damage_mid_log_is_reported_and_stepped_over() {
        let (clean, starts) = segment(&[1, 1, 1]);
        let cases = [
            ("payload byte", starts[1] + 70),
            ("crc byte", starts[1] + 5),
            ("length prefix", starts[1] + 1),
            ("length prefix high byte", starts[1] + 3),
            ("position field", starts[1] + 8),
        ];
        for (what, at) in cases {
            let mut bytes = clean.clone();
            bytes[at] ^= 0x40;
            for mode in [ScanMode::Open, ScanMode::Sealed] {
                let (out, seen, missing) = scan_all(&bytes, mode, Some(13));
                assert_eq!(seen, vec![10, 12], "{what} {mode:?}");
                assert_eq!(missing, vec![11..12], "{what} {mode:?}");
                assert_eq!(
                    out.damage,
                    vec![ScanDamage {
                        offset: starts[1] as u64,
                        length: (starts[2] - starts[1]) as u64,
                        positions: 11..12,
                        detail: out.damage[0].detail.clone(),
                    }],
                    "{what} {mode:?}"
                );
                assert_eq!(out.next_position, 13, "{what} {mode:?}");
                assert!(out.torn.is_none(), "{what} {mode:?}");
            }
        }
    }

    #[test]
    fn damage_in_the_last_frame_is_a_torn_tail_in_open_segment_and_damage_when_sealed() {
        let (mut bytes, starts) = segment(&[1, 1]);
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        let (out, _) = scan(&bytes, ScanMode::Open);
        assert!(out.damage.is_empty() && out.torn.is_some());
        assert_eq!(out.committed_len, starts[1] as u64);
        let (out, seen, missing) = scan_all(&bytes, ScanMode::Sealed, Some(12));
        assert_eq!(seen, vec![10]);
        assert_eq!(missing, vec![11..12]);
        assert_eq!(out.damage.len(), 1);
        assert_eq!(out.damage[0].offset, starts[1] as u64);
        assert_eq!(out.damage[0].length, (bytes.len() - starts[1]) as u64);
        assert_eq!(out.next_position, 12);
    }

    /// A sealed segment cut right after a frame that does not end its append: the frames kept
    /// are delivered, and the cut is damage even when nothing says which positions followed.
    #[test]
    fn a_sealed_segment_ending_inside_an_append_is_damage() {
        let (bytes, starts) = segment(&[1, 3]);
        let cut = &bytes[..starts[1] + frame(11, b"{\"a\":1}", false).len()];
        for end in [None, Some(12)] {
            let (out, seen, _) = scan_all(cut, ScanMode::Sealed, end);
            assert_eq!(seen, vec![10, 11], "{end:?}");
            assert_eq!(out.damage.len(), 1, "{end:?}: {:?}", out.damage);
            assert_eq!(out.damage[0].offset, cut.len() as u64, "{end:?}");
        }
        // Cut where an append ends: a valid, shorter segment.
        let (out, _, _) = scan_all(&bytes[..starts[1]], ScanMode::Sealed, None);
        assert!(out.damage.is_empty());
    }

    #[test]
    fn a_damaged_header_loses_no_event() {
        let (bytes, _) = segment(&[1, 2]);
        let mut bad = bytes.clone();
        bad[3] ^= 1;
        for mode in [ScanMode::Open, ScanMode::Sealed] {
            let (out, seen, _) = scan_all(&bad, mode, Some(13));
            assert_eq!(seen, vec![10, 11, 12], "{mode:?}");
            assert_eq!(out.damage.len(), 1);
            assert_eq!(
                (out.damage[0].offset, out.damage[0].positions.clone()),
                (0, 0..0)
            );
        }
        // The header of another segment (wrong first position): damage too, frames then judged
        // by the name's position.
        let out = scan_segment(&bytes, 11, ScanMode::Open, None, |_| {});
        assert!(!out.damage.is_empty());
        let (out, _) = scan(&bytes[..20], ScanMode::Open);
        assert!(out.damage.is_empty() && out.torn.is_some());
    }

    /// A valid frame image inside the payload of the damaged frame is not taken for the next
    /// frame: neither one claiming the damaged frame's own position (it would replace the lost
    /// event with a forgery), nor one claiming a later position (the real next frame does not
    /// continue it).
    #[test]
    fn a_frame_image_inside_a_damaged_payload_is_not_resynchronised_on() {
        for fake_position in [11, 12, 13] {
            let mut payload = vec![0x55u8; 40];
            payload.extend(frame(fake_position, b"forged", true));
            payload.extend([0x66u8; 40]);
            payload.extend(frame(fake_position, b"forged at the end", true));
            let mut bytes = encode_segment_header(10).to_vec();
            bytes.extend(frame(10, b"a", true));
            let damaged_at = bytes.len();
            bytes.extend(frame(11, &payload, true));
            bytes.extend(frame(12, b"c", true));
            bytes.extend(frame(13, b"d", true));
            bytes[damaged_at + 4] ^= 1; // the damaged frame's CRC
            for mode in [ScanMode::Open, ScanMode::Sealed] {
                let mut delivered = Vec::new();
                let out = scan_segment(&bytes, 10, mode, Some(14), |item| {
                    if let Scanned::Event(v, _) = item {
                        delivered.push((v.position, v.data.to_vec()));
                    }
                });
                let want = vec![
                    (10, b"a".to_vec()),
                    (12, b"c".to_vec()),
                    (13, b"d".to_vec()),
                ];
                assert_eq!(delivered, want, "fake {fake_position} {mode:?}");
                assert_eq!(out.damage.len(), 1, "fake {fake_position} {mode:?}");
                assert_eq!(out.damage[0].positions, 11..12);
            }
        }
    }

    /// A version-2 segment may skip positions (a repair or scavenge removed them): gaps are
    /// reported as missing, not as damage. In a version-1 segment the same skip is damage.
    #[test]
    fn gaps_are_allowed_in_version_2_segments_only() {
        for version in [SEGMENT_FORMAT_VERSION, SEGMENT_FORMAT_VERSION_GAPS] {
            let mut bytes = crate::frame::encode_segment_header_version(10, version).to_vec();
            bytes.extend(frame(10, b"a", true));
            bytes.extend(frame(13, b"b", false));
            bytes.extend(frame(14, b"c", true));
            for mode in [ScanMode::Open, ScanMode::Sealed] {
                let (out, seen, missing) = scan_all(&bytes, mode, Some(15));
                assert_eq!(seen, vec![10, 13, 14], "v{version} {mode:?}");
                assert_eq!(missing, vec![11..13], "v{version} {mode:?}");
                assert_eq!(out.next_position, 15);
                assert_eq!(
                    out.damage.len(),
                    usize::from(version == SEGMENT_FORMAT_VERSION),
                    "v{version} {mode:?}: {:?}",
                    out.damage
                );
            }
            // A sealed segment ending before the next segment's first position: a gap at the
            // end (a repair moved the last frames out) in version 2, damage in version 1.
            let (out, seen, missing) = scan_all(&bytes, ScanMode::Sealed, Some(18));
            assert_eq!(seen, vec![10, 13, 14], "v{version}");
            assert_eq!(missing, vec![11..13, 15..18], "v{version}");
            assert_eq!(out.next_position, 18);
            assert_eq!(
                out.damage.len(),
                usize::from(version == SEGMENT_FORMAT_VERSION) * 2,
                "v{version}"
            );
        }
    }

    /// After a crash the last, unsynced append may have lost its first page while a later page
    /// of it reached the disk: zeros from where its first frame starts to the end of that page.
    /// In the open segment that is a torn write, cut back to the last whole append (nothing of
    /// it was acknowledged); zeros that stop short of the page end are damage.
    #[test]
    fn a_never_written_page_of_the_last_append_is_a_torn_write() {
        let mut bytes = encode_segment_header(10).to_vec();
        bytes.extend(frame(10, b"a", true));
        let x = bytes.len();
        bytes.extend(frame(11, &[7u8; 6000], false));
        bytes.extend(frame(12, b"c", true));
        let page_end = (x / 4096 + 1) * 4096;
        assert!(page_end < bytes.len() - 200);
        let mut torn = bytes.clone();
        torn[x..page_end].fill(0);
        let (out, seen) = scan(&torn, ScanMode::Open);
        assert!(out.damage.is_empty(), "{:?}", out.damage);
        assert!(out.torn.is_some());
        assert_eq!((out.committed_len, seen), (x as u64, vec![10]));
        // Sealed segments are synced whole: the same bytes there are damage.
        let (out, _, _) = scan_all(&torn, ScanMode::Sealed, Some(13));
        assert_eq!(out.damage.len(), 1);
        // Zeros that do not reach the end of the page: damage, the frame after it kept.
        let mut damaged = bytes.clone();
        damaged[x..x + 64].fill(0);
        let (out, seen) = scan(&damaged, ScanMode::Open);
        assert_eq!(out.damage.len(), 1, "{out:?}");
        assert_eq!(seen, vec![10, 12]);
    }

    /// Regression (decoder property tests): a segment whose frame holds position `u64::MAX`
    /// overflowed the next position (a panic in debug builds, a wrap in release ones).
    #[test]
    fn position_u64_max_is_corruption_not_an_overflow() {
        let first = u64::MAX;
        let mut bytes = encode_segment_header(first).to_vec();
        encode_frame(
            &mut bytes,
            &FrameFields {
                position: first,
                revision: 0,
                timestamp_micros: 0,
                id: Uuid::from_u128(1),
                commit_end: true,
                content_type: ContentType::Json,
                stream: "s-1",
                event_type: "T",
                data: b"{}",
                metadata: &[],
            },
        );
        for mode in [ScanMode::Sealed, ScanMode::Open] {
            let mut seen = 0;
            let out = scan_segment(&bytes, first, mode, None, |item| {
                if let Scanned::Event(..) = item {
                    seen += 1
                }
            });
            assert!(
                !out.damage.is_empty() || out.torn.is_some(),
                "{mode:?}: {out:?}"
            );
            assert_eq!((seen, out.next_position), (0, first));
        }
    }

    #[test]
    fn names_sort_in_log_order() {
        assert!(segment_file_name(9) < segment_file_name(10));
        assert_eq!(segment_file_name(42), "00000000000000000042.seg");
        assert_eq!(index_file_name(42), "00000000000000000042.idx");
    }
}
