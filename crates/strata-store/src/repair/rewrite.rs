//! The file work of a repair: the quarantine directory, the damaged byte ranges written there,
//! and the rewrite of a damaged segment (steps 1 to 6 of the order in the parent module).

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::file_io::sync_dir;
use crate::frame::{
    encode_frame, encode_segment_header_version, EventView, BODY_FIXED_LEN, FRAME_PREFIX_LEN,
    SEGMENT_FORMAT_VERSION_GAPS, SEGMENT_HEADER_LEN,
};
use crate::index_file::write_index;
use crate::memtable::{MemEntry, Memtable};
use crate::segment::{
    index_file_name, map_file, scan_segment, segment_file_name, ScanDamage, ScanMode, Scanned,
};

use super::{Survey, QUARANTINE_DIR};

/// This run's quarantine directory, created (durably) on first use.
pub(super) fn quarantine_dir(
    dir: &Path,
    started: &str,
    q: &mut Option<PathBuf>,
) -> Result<PathBuf> {
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
pub(super) fn write_durably(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = File::create(path).map_err(|e| Error::io(path, e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| Error::io(path, e))
}

/// Puts the original file `path` into the quarantine directory `q` under its own name: a hard
/// link (the caller then replaces or removes `path`), or a durable copy where the file system
/// cannot link.
pub(super) fn keep_original(path: &Path, q: &Path) -> Result<()> {
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
pub(super) fn cut_tail(s: &Survey, torn: &Range<u64>, q: &Path) -> Result<()> {
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
pub(super) fn rewrite_segment(dir: &Path, s: &Survey, q: &Path, created: &[String]) -> Result<()> {
    let map = map_file(&s.path)?;
    quarantine_ranges(&s.path, &s.damage, s.torn.as_ref(), &map, q)?;
    let name = segment_file_name(s.first);
    let tmp = dir.join(format!("{name}.repair.tmp"));
    let file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let lost: Vec<Range<u64>> = s.damage.iter().map(|d| d.positions.clone()).collect();
    let mut w = Rewriter::new(&map, BufWriter::with_capacity(1 << 20, file), s.first);
    let mode = match s.next_first {
        Some(_) => ScanMode::Sealed,
        None => ScanMode::Open,
    };
    scan_segment(&map, s.first, mode, s.next_first, |item| match item {
        Scanned::Event(v, offset) => w.event(v, offset),
        Scanned::Missing(r) => {
            let damaged = lost.iter().any(|l| l.contains(&r.start));
            w.missing(r, damaged);
        }
    });
    let (out, written, mut table, error) = w.finish();
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
        // Every stream of the segment counts as created here (a stream's revision 0 may be
        // lost), as in any index rebuilt over damage.
        table.list_every_stream_as_created();
        let mut input = table.to_index_input(s.first, written);
        input.created.extend(created.iter().cloned());
        // A scavenged segment's removed events keep their heads and ids.
        crate::scavenge::sidecar::apply(&s.path, &mut input);
        write_index(&idx_path, input)?;
    }
    Ok(())
}

/// Copies the kept frames of a segment to its rewritten copy (a version-2 segment: positions
/// may have gaps), building the copy's memtable. Used by repairs (frames lost in damage left
/// out) and scavenges (removed events left out).
///
/// A kept frame followed by a left-out position of the same append gets the commit-end flag
/// (re-encoded): every append of a sealed segment must end in a commit end, or a scan would
/// treat its frames as an unfinished append.
pub(crate) struct Rewriter<'a, W: Write> {
    map: &'a [u8],
    out: W,
    /// Bytes written so far (the next frame's offset).
    written: u64,
    /// The last frame seen, not written yet: whether it needs the commit-end flag depends on
    /// what follows it.
    prev: Option<(EventView<'a>, &'a [u8], u64)>,
    /// Whether left-out positions follow `prev`.
    lost_after: bool,
    table: Memtable,
    /// The first write error (later writes are skipped).
    error: Option<std::io::Error>,
    buf: Vec<u8>,
}

impl<'a, W: Write> Rewriter<'a, W> {
    /// A rewriter copying frames of `map` to `out`, which gets the header of a version-2
    /// segment starting at `first` first.
    pub fn new(map: &'a [u8], mut out: W, first: u64) -> Self {
        let header = encode_segment_header_version(first, SEGMENT_FORMAT_VERSION_GAPS);
        let error = out.write_all(&header).err();
        Rewriter {
            map,
            out,
            written: SEGMENT_HEADER_LEN,
            prev: None,
            lost_after: false,
            table: Memtable::default(),
            error,
            buf: Vec::new(),
        }
    }

    /// Keeps the event `v`, whose frame lies at `offset` of the map.
    pub fn event(&mut self, v: &EventView<'a>, offset: u64) {
        self.event_from(self.map, v, offset);
    }

    /// Keeps the event `v`, whose frame lies at `offset` of `map` (another segment's bytes:
    /// segments being merged).
    pub fn event_from(&mut self, map: &'a [u8], v: &EventView<'a>, offset: u64) {
        self.flush_prev();
        self.prev = Some((*v, map, offset));
    }

    /// Leaves out the positions `r`; with `ends_append`, the frame kept before them gets the
    /// commit-end flag (the rest of its append is among them, or may be).
    pub fn missing(&mut self, r: Range<u64>, ends_append: bool) {
        self.lost_after |= ends_append;
        self.flush_prev();
        self.table.insert_missing(r);
    }

    /// Writes the last kept frame (with the commit-end flag: a last frame without it ends an
    /// append whose later frames are left out) and returns the output, its length, the
    /// memtable of the copy and the first write error.
    pub fn finish(mut self) -> (W, u64, Memtable, Option<std::io::Error>) {
        self.lost_after = true;
        self.flush_prev();
        (self.out, self.written, self.table, self.error)
    }

    /// Writes `prev`, unchanged, or with the commit-end flag when left-out positions follow it.
    fn flush_prev(&mut self) {
        let lost_after = std::mem::take(&mut self.lost_after);
        let Some((v, map, offset)) = self.prev.take() else {
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
            match map.get(start..start.saturating_add(len)) {
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
