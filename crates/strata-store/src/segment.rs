//! Segment files: naming, the sealed (memory-mapped) and open (pread) read paths, and the scan
//! that validates frames for recovery and index rebuilds.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use std::sync::OnceLock;

use memmap2::Mmap;
use parking_lot::RwLock;

use crate::error::{Error, Result};
use crate::frame::{
    decode_frame, decode_segment_header, EventView, FrameError, BODY_FIXED_LEN, FRAME_PREFIX_LEN,
    SEGMENT_HEADER_LEN,
};
use crate::index_file::{write_index, SegmentIndex};
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
    // bytes a map covers are never modified again (sealed segments are immutable; the open segment
    // is mapped only during recovery, before the writer starts). Outside modification of the data
    // directory while the store runs is outside the store's contract.
    unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))
}

/// A sealed, immutable segment: memory-mapped bytes plus its index file.
///
/// The index file's header is checked when the segment is opened; its body is checksummed on
/// first use ([`SealedSegment::index`]) and rebuilt from the segment if that fails, so a damaged
/// index is never trusted and opening stays independent of the history's size.
pub(crate) struct SealedSegment {
    pub path: PathBuf,
    pub first_position: u64,
    pub map: Mmap,
    /// Header-checked index (its event count is trusted: it matched the segment length).
    header_index: SegmentIndex,
    /// The body-checked index: `None` when `header_index` passed its checksum, a rebuilt index
    /// when it did not, or why neither is usable.
    checked: OnceLock<std::result::Result<Option<SegmentIndex>, String>>,
    /// Whether a damaged index may be rewritten (false for read-only stores).
    may_rebuild: bool,
    /// Told about a rebuild's progress.
    progress: Option<RebuildProgress>,
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
        }
    }

    /// A segment whose index was just written by this process (already known good).
    pub fn freshly_indexed(
        path: PathBuf,
        first_position: u64,
        map: Mmap,
        index: SegmentIndex,
    ) -> Self {
        let seg = SealedSegment::new(path, first_position, map, index, true, None);
        let _ = seg.checked.set(Ok(None));
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
        let checked = self.checked.get_or_init(|| {
            let Err(damage) = self.header_index.verify_checksum() else {
                return Ok(None);
            };
            if !self.may_rebuild {
                return Err(damage.to_string());
            }
            let idx_path = self.header_index.path().to_path_buf();
            rebuild_index(
                &self.path,
                &self.map,
                self.first_position,
                &idx_path,
                self.progress.as_ref(),
            )
            .and_then(|()| {
                SegmentIndex::open(&idx_path, self.first_position, self.map.len() as u64)
            })
            .map(Some)
            .map_err(|e| format!("{damage}; rebuilding it failed: {e}"))
        });
        match checked {
            Ok(Some(rebuilt)) => Ok(rebuilt),
            Ok(None) => Ok(&self.header_index),
            Err(why) => Err(Error::corruption(self.header_index.path(), 0, why.clone())),
        }
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

    /// The event at `position`, which must lie in this segment.
    pub fn event(&self, position: u64) -> Result<EventView<'_>> {
        let offset = self.index()?.offset(position).ok_or_else(|| {
            Error::corruption(
                self.index_path(),
                0,
                format!("position {position} missing from index"),
            )
        })?;
        let (view, _) = self.frame_at(offset)?;
        if view.position != position {
            return Err(Error::corruption(
                &self.path,
                offset,
                format!(
                    "frame holds position {}, index says {position}",
                    view.position
                ),
            ));
        }
        Ok(view)
    }
}

/// Converts a frame decoding failure into a corruption error naming the file and offset.
pub(crate) fn frame_error(path: &Path, offset: u64, e: FrameError) -> Error {
    let detail = match e {
        FrameError::Short => "truncated frame".to_owned(),
        FrameError::Zero => "zeroed frame".to_owned(),
        FrameError::Bad(why) => why,
    };
    Error::corruption(path, offset, detail)
}

/// The segment being written: read with `pread` up to the published end, indexed by a memtable.
pub(crate) struct OpenSegment {
    pub path: PathBuf,
    pub first_position: u64,
    pub file: File,
    pub table: RwLock<Memtable>,
}

impl OpenSegment {
    /// Opens the read handle of the open segment.
    pub fn open(path: &Path, first_position: u64, table: Memtable) -> Result<OpenSegment> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        Ok(OpenSegment {
            path: path.to_owned(),
            first_position,
            file,
            table: RwLock::new(table),
        })
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

/// Rebuilds the index file of a sealed segment by scanning (and checking) every frame.
pub(crate) fn rebuild_index(
    path: &Path,
    bytes: &[u8],
    first: u64,
    idx_path: &Path,
    progress: Option<&RebuildProgress>,
) -> Result<()> {
    const REPORT_EVERY: u64 = 4 << 20;
    let total = bytes.len() as u64;
    let mut reported = 0;
    let mut table = Memtable::default();
    let outcome = scan_segment(path, bytes, first, ScanMode::Sealed, |v, offset| {
        if let Some(p) = progress {
            if offset >= reported + REPORT_EVERY {
                reported = offset;
                p(path, offset, total);
            }
        }
        table.insert(&MemEntry::from_view(v, offset));
    });
    if let Some(e) = outcome.corruption {
        return Err(e);
    }
    if outcome.committed_len != total {
        return Err(Error::corruption(
            path,
            outcome.committed_len,
            "sealed segment has bytes after its last append",
        ));
    }
    if let Some(p) = progress {
        p(path, total, total);
    }
    write_index(idx_path, table.to_index_input(first, total))
}

/// How the scan treats damage.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum ScanMode {
    /// A sealed segment: every byte must be whole frames ending in a commit end.
    Sealed,
    /// The last segment: a torn tail is expected after a crash and is reported as such.
    Open,
}

/// The result of scanning a segment's bytes.
#[derive(Debug)]
pub(crate) struct ScanOutcome {
    /// Byte length up to and including the last whole commit.
    pub committed_len: u64,
    /// Position after the last committed event.
    pub next_position: u64,
    /// What lies past `committed_len`, if anything (torn tail, uncommitted frames).
    pub torn: Option<String>,
    /// Corruption that stopped the scan before the end.
    pub corruption: Option<Error>,
}

/// Validates every frame of a segment, calling `on_event(view, offset)` for each event of each
/// whole commit, in order. Never panics on damaged bytes.
pub(crate) fn scan_segment<'a>(
    path: &Path,
    bytes: &'a [u8],
    expected_first_position: u64,
    mode: ScanMode,
    mut on_event: impl FnMut(&EventView<'a>, u64),
) -> ScanOutcome {
    let mut out = ScanOutcome {
        committed_len: SEGMENT_HEADER_LEN,
        next_position: expected_first_position,
        torn: None,
        corruption: None,
    };
    match decode_segment_header(bytes) {
        Ok(first) if first == expected_first_position => {}
        Ok(first) => {
            out.committed_len = 0;
            out.corruption = Some(Error::corruption(
                path,
                16,
                format!(
                    "header says first position {first}, file name says {expected_first_position}"
                ),
            ));
            return out;
        }
        Err(why) => {
            out.committed_len = 0;
            if mode == ScanMode::Open && bytes.len() < SEGMENT_HEADER_LEN as usize {
                out.torn = Some(format!("segment header torn ({} bytes)", bytes.len()));
            } else {
                out.corruption = Some(Error::corruption(path, 0, why));
            }
            return out;
        }
    }
    let mut pending: Vec<(EventView<'a>, u64)> = Vec::new();
    let mut offset = SEGMENT_HEADER_LEN as usize;
    let mut position = expected_first_position;
    while offset < bytes.len() {
        match decode_frame(&bytes[offset..]) {
            Ok((view, len)) => {
                if view.position != position {
                    out.corruption = Some(Error::corruption(
                        path,
                        offset as u64,
                        format!(
                            "frame holds position {}, expected {position}",
                            view.position
                        ),
                    ));
                    return out;
                }
                let Some(next) = position.checked_add(1) else {
                    out.corruption = Some(Error::corruption(
                        path,
                        offset as u64,
                        "frame holds the last possible position (no position follows it)",
                    ));
                    return out;
                };
                pending.push((view, offset as u64));
                position = next;
                offset += len;
                if view.commit_end {
                    for (v, o) in pending.drain(..) {
                        on_event(&v, o);
                    }
                    out.committed_len = offset as u64;
                    out.next_position = position;
                }
            }
            Err(e) => {
                let sealed_or_mid_log =
                    mode == ScanMode::Sealed || followed_by_valid_frame(&bytes[offset..], position);
                if sealed_or_mid_log {
                    out.corruption = Some(frame_error(path, offset as u64, e));
                } else {
                    out.torn = Some(format!(
                        "torn tail at offset {offset}: {} bytes cut",
                        bytes.len() as u64 - out.committed_len
                    ));
                }
                return out;
            }
        }
    }
    if !pending.is_empty() {
        let first_uncommitted = pending[0].1;
        if mode == ScanMode::Sealed {
            out.corruption = Some(Error::corruption(
                path,
                first_uncommitted,
                "sealed segment ends inside an append",
            ));
        } else {
            out.torn = Some(format!(
                "{} frames of an unfinished append at offset {first_uncommitted} cut",
                pending.len()
            ));
        }
    }
    out
}

/// True when a valid frame of a later position lies anywhere after the damaged frame at the
/// start of `at_bad`: then the damage is in the middle of the log, not a torn tail, and must
/// not be truncated away. The search tries every byte offset (damage may have hit the length
/// prefix), so it costs time only on this failure path.
fn followed_by_valid_frame(at_bad: &[u8], bad_position: u64) -> bool {
    (1..at_bad
        .len()
        .saturating_sub(FRAME_PREFIX_LEN + BODY_FIXED_LEN - 1))
        .any(|o| matches!(decode_frame(&at_bad[o..]), Ok((v, _)) if v.position > bad_position))
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
        let mut seen = Vec::new();
        let out = scan_segment(Path::new("t.seg"), bytes, 10, mode, |v, _| {
            seen.push(v.position)
        });
        (out, seen)
    }

    #[test]
    fn whole_segment_scans_clean() {
        let (bytes, _) = segment(&[1, 3, 2]);
        let (out, seen) = scan(&bytes, ScanMode::Sealed);
        assert!(out.corruption.is_none() && out.torn.is_none());
        assert_eq!(out.committed_len, bytes.len() as u64);
        assert_eq!(out.next_position, 16);
        assert_eq!(seen, (10..16).collect::<Vec<_>>());
    }

    #[test]
    fn every_cut_inside_the_last_append_is_a_torn_tail_back_to_the_previous_commit() {
        let (bytes, starts) = segment(&[2, 3]);
        for cut in starts[1]..bytes.len() {
            let (out, seen) = scan(&bytes[..cut], ScanMode::Open);
            assert!(out.corruption.is_none(), "cut {cut}: {:?}", out.corruption);
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
        assert!(out.corruption.is_none());
        assert_eq!(out.committed_len, len);
    }

    #[test]
    fn damage_followed_by_valid_frames_is_corruption_in_open_segment() {
        let (mut bytes, starts) = segment(&[1, 1, 1]);
        bytes[starts[1] + 30] ^= 0xff;
        let (out, seen) = scan(&bytes, ScanMode::Open);
        let err = out.corruption.expect("mid-log damage must be reported");
        assert!(matches!(err, Error::Corruption { offset, .. } if offset == starts[1] as u64));
        assert_eq!(seen, vec![10]);
        assert_eq!(out.committed_len, starts[1] as u64);
    }

    #[test]
    fn damage_in_the_last_frame_is_a_torn_tail_in_open_segment_and_corruption_when_sealed() {
        let (mut bytes, starts) = segment(&[1, 1]);
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        let (out, _) = scan(&bytes, ScanMode::Open);
        assert!(out.corruption.is_none() && out.torn.is_some());
        assert_eq!(out.committed_len, starts[1] as u64);
        let (out, _) = scan(&bytes, ScanMode::Sealed);
        assert!(out.corruption.is_some());
    }

    #[test]
    fn damaged_length_prefix_mid_log_is_corruption_not_a_torn_tail() {
        let (mut bytes, starts) = segment(&[1, 1, 1]);
        bytes[starts[1]] ^= 0x10;
        let (out, _) = scan(&bytes, ScanMode::Open);
        assert!(out.corruption.is_some(), "{out:?}");
        assert_eq!(out.committed_len, starts[1] as u64);
    }

    #[test]
    fn wrong_position_or_header_is_corruption() {
        let (bytes, _) = segment(&[1]);
        let out = scan_segment(Path::new("t.seg"), &bytes, 11, ScanMode::Open, |_, _| {});
        assert!(out.corruption.is_some());
        let mut bad = bytes.clone();
        bad[3] ^= 1;
        let (out, _) = scan(&bad, ScanMode::Open);
        assert!(out.corruption.is_some());
        let (out, _) = scan(&bytes[..20], ScanMode::Open);
        assert!(out.corruption.is_none() && out.torn.is_some());
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
            let out = scan_segment(Path::new("t.seg"), &bytes, first, mode, |_, _| seen += 1);
            assert!(out.corruption.is_some(), "{mode:?}: {out:?}");
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
