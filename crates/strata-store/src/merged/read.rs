//! [`MergedIndex`]: a memory-mapped merged index file, its header validation (cheap, at open),
//! its body checksum (before first use) and its queries.

use std::ops::Range;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::bloom::BloomRef;
use crate::error::{Error, Result};
use crate::index_file::{id_bloom_key, IdEntry, StreamEntry};

use super::format::*;

/// First index in `0..n` for which `pred` is false, assuming `pred` holds on a prefix; on a
/// damaged file some index in `0..=n`, never a panic.
fn partition_point(n: usize, mut pred: impl FnMut(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0usize, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// A range of `0..n` holding every index whose key (ascending in `i`, uniformly distributed
/// over `u64`) equals `key`: from a guess proportional to `key`, the bracket doubles until the
/// keys at its ends enclose `key`. On keys out of order (a damaged file) some range inside
/// `0..n`: never a panic.
fn interpolate(n: usize, key: u64, at: impl Fn(usize) -> u64) -> Range<usize> {
    if n < 64 {
        return 0..n;
    }
    let guess = ((u128::from(key) * n as u128) >> 64) as usize;
    let guess = guess.min(n - 1);
    // Lower end: an index whose key is below `key` (or 0).
    let mut step = 16usize;
    let mut lo = guess.saturating_sub(step);
    while lo > 0 && at(lo) >= key {
        step = step.saturating_mul(2);
        lo = guess.saturating_sub(step);
    }
    // Upper end: an index whose key is above `key` (or n).
    let mut step = 16usize;
    let mut hi = guess.saturating_add(step).min(n);
    while hi < n && at(hi) <= key {
        step = step.saturating_mul(2);
        hi = guess.saturating_add(step).min(n);
    }
    lo..hi
}

/// A validated section: `start..start + len` lies inside the file.
#[derive(Clone, Copy, Debug, Default)]
struct Section {
    start: usize,
    count: usize,
    len: usize,
}

/// A merged index file, mapped read-only.
///
/// Invariants established by [`MergedIndex::open`]: magic, version, header length and header
/// CRC are right, the range matches the file name, the file length is the recorded one, every
/// section lies inside the file, 8-aligned, after the header and the previous section, and both
/// blooms parse. So no query can index outside the map. The body (entries) is only trusted
/// after [`MergedIndex::verify_checksum`] passed: the store publishes a merged file to lookups
/// only then.
pub(crate) struct MergedIndex {
    path: PathBuf,
    map: Mmap,
    level: u32,
    first: u64,
    end: u64,
    body_crc: u32,
    sections: [Section; SECTION_COUNT],
}

impl std::fmt::Debug for MergedIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MergedIndex")
            .field("path", &self.path)
            .field("level", &self.level)
            .field("range", &(self.first..self.end))
            .finish_non_exhaustive()
    }
}

impl MergedIndex {
    /// Maps `path` and checks its header and section table against the expected range.
    /// [`Error::Corruption`] for a file that fails a check.
    pub fn open(path: &Path, first: u64, end: u64) -> Result<MergedIndex> {
        let map = crate::segment::map_file(path)?;
        let bad = |detail: String| Error::corruption(path, 0, detail);
        if map.len() < MERGED_HEADER_LEN {
            return Err(bad(format!("{} bytes, shorter than a header", map.len())));
        }
        if map[..8] != MERGED_MAGIC {
            return Err(bad("bad magic".into()));
        }
        let crc = crc32fast::hash(&map[..OFF_HEADER_CRC]);
        if crc != get_u32(&map, OFF_HEADER_CRC) {
            return Err(bad("header checksum mismatch".into()));
        }
        let version = get_u32(&map, OFF_VERSION);
        if version != MERGED_FORMAT_VERSION {
            return Err(bad(format!("format version {version}, expected 1")));
        }
        if get_u32(&map, OFF_HEADER_LEN) as usize != MERGED_HEADER_LEN {
            return Err(bad("bad header length".into()));
        }
        let (f, e) = (get_u64(&map, OFF_FIRST), get_u64(&map, OFF_END));
        if (f, e) != (first, end) {
            return Err(bad(format!(
                "covers {f}..{e}, its name says {first}..{end}"
            )));
        }
        if get_u64(&map, OFF_FILE_LEN) != map.len() as u64 {
            return Err(bad("file length differs from the header's".into()));
        }
        let mut sections = [Section::default(); SECTION_COUNT];
        let mut floor = MERGED_HEADER_LEN as u64;
        for (k, s) in sections.iter_mut().enumerate() {
            let start = get_u64(&map, OFF_SECTIONS + 16 * k);
            let count = get_u64(&map, OFF_SECTIONS + 16 * k + 8);
            let len = section_size(k, count);
            let ok = start.is_multiple_of(8)
                && start >= floor
                && len
                    .and_then(|l| start.checked_add(l))
                    .is_some_and(|e| e <= map.len() as u64);
            if !ok {
                return Err(bad(format!("section {k} lies outside the file")));
            }
            let len = len.unwrap_or(0);
            floor = start + len;
            *s = Section {
                start: start as usize,
                count: count as usize,
                len: len as usize,
            };
        }
        let idx = MergedIndex {
            path: path.to_owned(),
            level: get_u32(&map, OFF_LEVEL),
            body_crc: get_u32(&map, OFF_BODY_CRC),
            map,
            first,
            end,
            sections,
        };
        if idx.bloom(SEC_STREAM_BLOOM).is_none() || idx.bloom(SEC_ID_BLOOM).is_none() {
            return Err(bad("a bloom filter does not parse".into()));
        }
        Ok(idx)
    }

    /// Checks the body CRC (reads the whole file).
    pub fn verify_checksum(&self) -> Result<()> {
        if crc32fast::hash(&self.map[MERGED_HEADER_LEN..]) == self.body_crc {
            Ok(())
        } else {
            Err(Error::corruption(
                &self.path,
                MERGED_HEADER_LEN as u64,
                "merged index body checksum mismatch",
            ))
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The merge level (1: merged from segment indexes).
    pub fn level(&self) -> u32 {
        self.level
    }

    /// The positions the file covers.
    pub fn range(&self) -> Range<u64> {
        self.first..self.end
    }

    /// Number of stream entries.
    pub fn stream_count(&self) -> usize {
        self.sections[SEC_STREAMS].count
    }

    /// Number of id entries.
    pub fn id_count(&self) -> usize {
        self.sections[SEC_IDS].count
    }

    fn section_bytes(&self, k: usize) -> &[u8] {
        let s = self.sections[k];
        &self.map[s.start..s.start + s.len]
    }

    fn bloom(&self, k: usize) -> Option<BloomRef<'_>> {
        BloomRef::parse(self.section_bytes(k))
    }

    /// Requires `i < stream_count()`.
    pub fn stream_at(&self, i: usize) -> StreamEntry {
        let b = self.section_bytes(SEC_STREAMS);
        let at = i * STREAM_ENTRY_SIZE;
        StreamEntry {
            hash: get_u64(b, at),
            revision: get_u64(b, at + 8),
            position: get_u64(b, at + 16),
        }
    }

    /// Requires `i < id_count()`.
    pub fn id_at(&self, i: usize) -> IdEntry {
        let b = self.section_bytes(SEC_IDS);
        let at = i * ID_ENTRY_SIZE;
        IdEntry {
            stream_hash: get_u64(b, at),
            id: get_u128(b, at + 8),
            revision: get_u64(b, at + 24),
        }
    }

    /// Bloom check on a stream hash: `false` means no entry has it.
    pub fn may_contain_stream(&self, hash: u64) -> bool {
        self.bloom(SEC_STREAM_BLOOM)
            .is_none_or(|b| b.may_contain(hash))
    }

    /// The indices `lo..hi` of the stream entries with this hash (found by interpolation:
    /// hashes are uniform, so the first guess lands within a page or two of the answer, where a
    /// plain binary search of a large file takes a cache miss per step).
    fn hash_run(&self, hash: u64) -> Range<usize> {
        let n = self.stream_count();
        let range = interpolate(n, hash, |i| self.stream_at(i).hash);
        let lo = range.start
            + partition_point(range.len(), |i| self.stream_at(range.start + i).hash < hash);
        let hi = lo + partition_point(range.end - lo, |i| self.stream_at(lo + i).hash <= hash);
        lo..hi
    }

    /// Entries with this hash and a revision in `from..=to`, ascending by `(revision,
    /// position)`; entries of other streams sharing the hash included.
    pub fn stream_entries(&self, hash: u64, from: u64, to: u64) -> Vec<StreamEntry> {
        if from > to {
            return Vec::new();
        }
        let run = self.hash_run(hash);
        run.map(|i| self.stream_at(i))
            .filter(|e| (from..=to).contains(&e.revision))
            .collect()
    }

    /// The entry with this hash and the highest `(revision, position)`.
    pub fn last_stream_entry(&self, hash: u64) -> Option<StreamEntry> {
        let run = self.hash_run(hash);
        let e = self.stream_at(run.end.checked_sub(1)?);
        (e.hash == hash && run.start < run.end).then_some(e)
    }

    /// Revisions recorded for `(stream_hash, id)`, ascending; consults the id bloom first.
    pub fn find_id(&self, stream_hash: u64, id: u128) -> Vec<u64> {
        if !self
            .bloom(SEC_ID_BLOOM)
            .is_none_or(|b| b.may_contain(id_bloom_key(stream_hash, id)))
        {
            return Vec::new();
        }
        let n = self.id_count();
        let range = interpolate(n, stream_hash, |i| self.id_at(i).stream_hash);
        let key = |i| {
            let e = self.id_at(range.start + i);
            (e.stream_hash, e.id)
        };
        let lo = partition_point(range.len(), |i| key(i) < (stream_hash, id));
        let hi = partition_point(range.len(), |i| key(i) <= (stream_hash, id)).max(lo);
        (lo..hi)
            .map(|i| self.id_at(range.start + i).revision)
            .collect()
    }
}
