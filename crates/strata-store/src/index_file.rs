//! The immutable index file of one sealed log segment.
//!
//! An index file is written once by [`write_index`] (atomically: temporary file, fsync, rename,
//! fsync of the directory) and from then on only read, through a read-only memory map, by
//! [`SegmentIndex`]. [`SegmentIndex::open`] validates the header only (cheap);
//! [`SegmentIndex::verify`] checks the body checksum and the consistency of every section.
//!
//! # On-disk format (version 1)
//!
//! All integers are little-endian; offsets are absolute byte offsets from the start of the file.
//! Hashes are [`crate::hash::hash_str`] (XXH3-64, seed 0) of the stream name, category or event
//! type. CRC32 is the IEEE polynomial (`crc32fast`).
//!
//! ## Header (200 bytes)
//!
//! | offset | size | field                                                                |
//! |-------:|-----:|----------------------------------------------------------------------|
//! |      0 |    8 | magic `b"STRATIDX"`                                                  |
//! |      8 |    4 | format version (u32) = 1                                             |
//! |     12 |    4 | header length (u32) = 200                                            |
//! |     16 |    8 | `first_position` (u64): global position of the segment's first event |
//! |     24 |    8 | `event_count` (u64): number of events in the segment (may be 0)      |
//! |     32 |    8 | `segment_len` (u64): byte length of the sealed segment file          |
//! |     40 |    8 | `file_len` (u64): byte length of this index file                     |
//! |     48 |  144 | section table: 9 entries of 16 bytes (`start` u64, `count` u64)      |
//! |    192 |    4 | body CRC32 (u32) of bytes `200..file_len`                            |
//! |    196 |    4 | header CRC32 (u32) of bytes `0..196`                                 |
//!
//! ## Section table
//!
//! Entry `k` is at offset `48 + 16 * k`: `start` (u64, absolute offset, a multiple of 8) then
//! `count` (u64). Sections appear in table order, without overlap, all inside `200..file_len`;
//! the writer starts each at the next multiple of 8 after the previous one and zero-fills the
//! gaps (the file length is a multiple of 8).
//!
//! | k | entry at | section           | `count` is                | byte size         |
//! |--:|---------:|-------------------|---------------------------|-------------------|
//! | 0 |       48 | frame offsets     | entries (= `event_count`) | `count * 8`       |
//! | 1 |       64 | stream entries    | entries                   | `count * 24`      |
//! | 2 |       80 | id entries        | entries                   | `count * 32`      |
//! | 3 |       96 | category postings | entries                   | `count * 16`      |
//! | 4 |      112 | type postings     | entries                   | `count * 16`      |
//! | 5 |      128 | created offsets   | names                     | `(count + 1) * 8` |
//! | 6 |      144 | created blob      | bytes                     | `count`           |
//! | 7 |      160 | stream bloom      | bytes                     | `count`           |
//! | 8 |      176 | id bloom          | bytes                     | `count`           |
//!
//! ## Section records (offsets relative to the record)
//!
//! **Frame offsets** (8 bytes; record `i` is event `first_position + i`; strictly increasing,
//! each `< segment_len`):
//!
//! | offset | size | field                                                 |
//! |-------:|-----:|-------------------------------------------------------|
//! |      0 |    8 | byte offset of the event's frame in the segment (u64) |
//!
//! **Stream entries** (24 bytes; sorted by `(hash, revision, position)`):
//!
//! | offset | size | field                     |
//! |-------:|-----:|---------------------------|
//! |      0 |    8 | stream-name hash (u64)    |
//! |      8 |    8 | revision in stream (u64)  |
//! |     16 |    8 | global position (u64)     |
//!
//! **Id entries** (32 bytes; sorted by `(stream_hash, id, revision)`):
//!
//! | offset | size | field                                             |
//! |-------:|-----:|---------------------------------------------------|
//! |      0 |    8 | stream-name hash (u64)                            |
//! |      8 |   16 | event id (u128 LE of the value `Uuid::as_u128`)   |
//! |     24 |    8 | revision in stream (u64)                          |
//!
//! **Category postings / type postings** (16 bytes each; sorted by `(hash, position)`):
//!
//! | offset | size | field                                  |
//! |-------:|-----:|----------------------------------------|
//! |      0 |    8 | category hash or event-type hash (u64) |
//! |      8 |    8 | global position (u64)                  |
//!
//! **Created offsets** (`count + 1` u64 values): value `i` and `i + 1` delimit created name `i`
//! inside the created blob (offsets relative to the blob start); value 0 is 0, the last value is
//! the blob length. **Created blob**: the UTF-8 names, concatenated, strictly increasing in byte
//! order (sorted, no duplicates): the streams whose revision 0 lies in this segment.
//!
//! **Stream bloom / id bloom** (see [`crate::bloom`]):
//!
//! | offset | size | field                                                  |
//! |-------:|-----:|--------------------------------------------------------|
//! |      0 |    4 | number of probes (u32), 1..=30 (7 as written)          |
//! |      4 |    4 | reserved, 0                                            |
//! |      8 |    n | bit array, `n` a non-zero multiple of 8 (10 bits/key)  |
//!
//! The stream bloom's keys are the stream-name hashes; the id bloom's keys are
//! [`id_bloom_key`]`(stream_hash, id) = stream_hash ^ xxh3_64(id.to_le_bytes())`.
//!
//! Every position in stream entries and postings lies in
//! `first_position..first_position + event_count`.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::bloom::{BloomBuilder, BloomRef, DEFAULT_BITS_PER_KEY};
use crate::error::{Error, Result};

/// First 8 bytes of every index file.
pub const INDEX_MAGIC: [u8; 8] = *b"STRATIDX";
/// The format version this code writes and reads.
pub const INDEX_FORMAT_VERSION: u32 = 1;
/// Length of the fixed header of a version-1 index file.
pub const INDEX_HEADER_LEN: usize = 200;

const OFF_MAGIC: usize = 0;
const OFF_VERSION: usize = 8;
const OFF_HEADER_LEN: usize = 12;
const OFF_FIRST_POSITION: usize = 16;
const OFF_EVENT_COUNT: usize = 24;
const OFF_SEGMENT_LEN: usize = 32;
const OFF_FILE_LEN: usize = 40;
const OFF_SECTIONS: usize = 48;
const OFF_BODY_CRC: usize = 192;
const OFF_HEADER_CRC: usize = 196;

const SEC_OFFSETS: usize = 0;
const SEC_STREAMS: usize = 1;
const SEC_IDS: usize = 2;
const SEC_CATEGORIES: usize = 3;
const SEC_TYPES: usize = 4;
const SEC_CREATED_OFFSETS: usize = 5;
const SEC_CREATED_BLOB: usize = 6;
const SEC_STREAM_BLOOM: usize = 7;
const SEC_ID_BLOOM: usize = 8;
const SECTION_COUNT: usize = 9;

const SECTION_NAMES: [&str; SECTION_COUNT] = [
    "frame offsets",
    "stream entries",
    "id entries",
    "category postings",
    "type postings",
    "created offsets",
    "created blob",
    "stream bloom",
    "id bloom",
];

const OFFSET_SIZE: usize = 8;
const STREAM_ENTRY_SIZE: usize = 24;
const ID_ENTRY_SIZE: usize = 32;
const POSTING_SIZE: usize = 16;

/// One event of a stream: the stream-name hash, the event's revision in the stream and its global
/// position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamEntry {
    /// [`crate::hash::hash_str`] of the stream name.
    pub hash: u64,
    /// Revision of the event in its stream (0-based).
    pub revision: u64,
    /// Global position of the event.
    pub position: u64,
}

/// An event id recorded in a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdEntry {
    /// [`crate::hash::hash_str`] of the stream name.
    pub stream_hash: u64,
    /// The event id: `Uuid::as_u128` (big-endian value of the 16 bytes).
    pub id: u128,
    /// Revision of the event in its stream.
    pub revision: u64,
}

/// A category- or event-type-hash posting: the key hash and the global position of one event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Posting {
    /// [`crate::hash::hash_str`] of the category or event type.
    pub hash: u64,
    /// Global position of the event.
    pub position: u64,
}

/// Everything needed to build the index of one sealed segment.
///
/// Requirements (checked by [`write_index`], which answers [`Error::InvalidInput`] otherwise):
/// `offsets` strictly increasing and each `< segment_len`; every position in `streams`,
/// `categories` and `types` within `first_position..first_position + offsets.len()`.
#[derive(Clone, Debug, Default)]
pub struct IndexInput {
    /// Global position of the segment's first event.
    pub first_position: u64,
    /// Byte length of the sealed segment file this index describes.
    pub segment_len: u64,
    /// `offsets[i]` = byte offset in the segment of the frame of event `first_position + i`.
    pub offsets: Vec<u64>,
    /// Stream entries, any order; sorted by `(hash, revision, position)` by the builder.
    pub streams: Vec<StreamEntry>,
    /// Id entries, any order; sorted by `(stream_hash, id, revision)` by the builder.
    pub ids: Vec<IdEntry>,
    /// Category postings, any order; sorted by `(hash, position)` by the builder.
    pub categories: Vec<Posting>,
    /// Event-type postings, any order; sorted by `(hash, position)` by the builder.
    pub types: Vec<Posting>,
    /// Names of the streams whose revision 0 lies in this segment; sorted (byte order) and
    /// de-duplicated by the builder.
    pub created: Vec<String>,
}

/// The key under which `(stream_hash, id)` is stored in the id bloom filter:
/// `stream_hash ^ xxh3_64(id.to_le_bytes())`. Part of the on-disk format.
pub fn id_bloom_key(stream_hash: u64, id: u128) -> u64 {
    stream_hash ^ xxhash_rust::xxh3::xxh3_64(&id.to_le_bytes())
}

fn put_u32(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(buf: &mut [u8], at: usize, v: u64) {
    buf[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Reads a u32 at `at`. Callers guarantee `at + 4 <= buf.len()` (validated at open).
fn get_u32(buf: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&buf[at..at + 4]);
    u32::from_le_bytes(a)
}

/// Reads a u64 at `at`. Callers guarantee `at + 8 <= buf.len()` (validated at open).
fn get_u64(buf: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&buf[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Reads a u128 at `at`. Callers guarantee `at + 16 <= buf.len()` (validated at open).
fn get_u128(buf: &[u8], at: usize) -> u128 {
    let mut a = [0u8; 16];
    a.copy_from_slice(&buf[at..at + 16]);
    u128::from_le_bytes(a)
}

/// Pads `buf` with zeros to a multiple of 8 bytes.
fn align8(buf: &mut Vec<u8>) {
    buf.resize(buf.len().next_multiple_of(8), 0);
}

/// First index in `0..n` for which `pred` is false, assuming `pred` is true on a prefix.
/// With a non-monotone `pred` (a damaged file) the answer is some index in `0..=n`: never a panic.
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

/// Checks the preconditions documented on [`IndexInput`].
fn check_input(input: &IndexInput) -> Result<()> {
    for (i, w) in input.offsets.windows(2).enumerate() {
        if w[0] >= w[1] {
            return Err(Error::invalid(
                format!("offsets[{}]", i + 1),
                "frame offsets must be strictly increasing",
            ));
        }
    }
    if let Some(&last) = input.offsets.last() {
        if last >= input.segment_len {
            return Err(Error::invalid(
                format!("offsets[{}]", input.offsets.len() - 1),
                "frame offset beyond the segment length",
            ));
        }
    }
    let first = input.first_position;
    let end = first
        .checked_add(input.offsets.len() as u64)
        .ok_or_else(|| Error::invalid("first_position", "position range overflows u64"))?;
    let in_range = |p: u64| (first..end).contains(&p);
    if let Some((i, _)) = input
        .streams
        .iter()
        .enumerate()
        .find(|(_, e)| !in_range(e.position))
    {
        return Err(Error::invalid(
            format!("streams[{i}].position"),
            "position outside the segment",
        ));
    }
    for (field, postings) in [("categories", &input.categories), ("types", &input.types)] {
        if let Some((i, _)) = postings
            .iter()
            .enumerate()
            .find(|(_, p)| !in_range(p.position))
        {
            return Err(Error::invalid(
                format!("{field}[{i}].position"),
                "position outside the segment",
            ));
        }
    }
    Ok(())
}

/// Serializes `input` into the bytes of a complete index file.
fn encode(mut input: IndexInput) -> Result<Vec<u8>> {
    check_input(&input)?;
    input
        .streams
        .sort_unstable_by_key(|e| (e.hash, e.revision, e.position));
    input
        .ids
        .sort_unstable_by_key(|e| (e.stream_hash, e.id, e.revision));
    input
        .categories
        .sort_unstable_by_key(|p| (p.hash, p.position));
    input.types.sort_unstable_by_key(|p| (p.hash, p.position));
    input.created.sort_unstable();
    input.created.dedup();

    let mut buf = vec![0u8; INDEX_HEADER_LEN];
    let mut table = [(0u64, 0u64); SECTION_COUNT];

    // Frame offsets.
    table[SEC_OFFSETS] = (buf.len() as u64, input.offsets.len() as u64);
    for &o in &input.offsets {
        buf.extend_from_slice(&o.to_le_bytes());
    }
    // Stream entries.
    align8(&mut buf);
    table[SEC_STREAMS] = (buf.len() as u64, input.streams.len() as u64);
    for e in &input.streams {
        buf.extend_from_slice(&e.hash.to_le_bytes());
        buf.extend_from_slice(&e.revision.to_le_bytes());
        buf.extend_from_slice(&e.position.to_le_bytes());
    }
    // Id entries.
    align8(&mut buf);
    table[SEC_IDS] = (buf.len() as u64, input.ids.len() as u64);
    for e in &input.ids {
        buf.extend_from_slice(&e.stream_hash.to_le_bytes());
        buf.extend_from_slice(&e.id.to_le_bytes());
        buf.extend_from_slice(&e.revision.to_le_bytes());
    }
    // Postings.
    for (sec, postings) in [
        (SEC_CATEGORIES, &input.categories),
        (SEC_TYPES, &input.types),
    ] {
        align8(&mut buf);
        table[sec] = (buf.len() as u64, postings.len() as u64);
        for p in postings {
            buf.extend_from_slice(&p.hash.to_le_bytes());
            buf.extend_from_slice(&p.position.to_le_bytes());
        }
    }
    // Created names: offset table, then blob.
    align8(&mut buf);
    table[SEC_CREATED_OFFSETS] = (buf.len() as u64, input.created.len() as u64);
    let mut acc = 0u64;
    buf.extend_from_slice(&acc.to_le_bytes());
    for name in &input.created {
        acc += name.len() as u64;
        buf.extend_from_slice(&acc.to_le_bytes());
    }
    align8(&mut buf);
    table[SEC_CREATED_BLOB] = (buf.len() as u64, acc);
    for name in &input.created {
        buf.extend_from_slice(name.as_bytes());
    }
    // Stream bloom over distinct stream hashes.
    let mut distinct = 0usize;
    let mut prev = None;
    for e in &input.streams {
        if prev != Some(e.hash) {
            distinct += 1;
            prev = Some(e.hash);
        }
    }
    let mut bloom = BloomBuilder::new(distinct, DEFAULT_BITS_PER_KEY);
    for e in &input.streams {
        bloom.insert(e.hash);
    }
    let bloom = bloom.finish();
    align8(&mut buf);
    table[SEC_STREAM_BLOOM] = (buf.len() as u64, bloom.len() as u64);
    buf.extend_from_slice(&bloom);
    // Id bloom.
    let mut bloom = BloomBuilder::new(input.ids.len(), DEFAULT_BITS_PER_KEY);
    for e in &input.ids {
        bloom.insert(id_bloom_key(e.stream_hash, e.id));
    }
    let bloom = bloom.finish();
    align8(&mut buf);
    table[SEC_ID_BLOOM] = (buf.len() as u64, bloom.len() as u64);
    buf.extend_from_slice(&bloom);
    align8(&mut buf);

    // Header.
    let file_len = buf.len() as u64;
    let body_crc = crc32fast::hash(&buf[INDEX_HEADER_LEN..]);
    buf[OFF_MAGIC..OFF_MAGIC + 8].copy_from_slice(&INDEX_MAGIC);
    put_u32(&mut buf, OFF_VERSION, INDEX_FORMAT_VERSION);
    put_u32(&mut buf, OFF_HEADER_LEN, INDEX_HEADER_LEN as u32);
    put_u64(&mut buf, OFF_FIRST_POSITION, input.first_position);
    put_u64(&mut buf, OFF_EVENT_COUNT, input.offsets.len() as u64);
    put_u64(&mut buf, OFF_SEGMENT_LEN, input.segment_len);
    put_u64(&mut buf, OFF_FILE_LEN, file_len);
    for (i, &(start, count)) in table.iter().enumerate() {
        put_u64(&mut buf, OFF_SECTIONS + i * 16, start);
        put_u64(&mut buf, OFF_SECTIONS + i * 16 + 8, count);
    }
    put_u32(&mut buf, OFF_BODY_CRC, body_crc);
    let header_crc = crc32fast::hash(&buf[..OFF_HEADER_CRC]);
    put_u32(&mut buf, OFF_HEADER_CRC, header_crc);
    Ok(buf)
}

/// Writes the index of one sealed segment to `path`, atomically: the bytes go to `path` +
/// `".tmp"`, which is fsynced, renamed over `path`, and then the parent directory is fsynced.
/// After an error `path` is untouched (the temporary file is removed on a best-effort basis).
///
/// Fails with [`Error::InvalidInput`] if `input` breaks the requirements listed on
/// [`IndexInput`], and with [`Error::Io`] on any I/O failure.
pub fn write_index(path: &Path, input: IndexInput) -> Result<()> {
    let bytes = encode(input)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let result = write_and_rename(&tmp, path, &bytes);
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(parent, e))
}

fn write_and_rename(tmp: &Path, path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = File::create(tmp).map_err(|e| Error::io(tmp, e))?;
    file.write_all(bytes).map_err(|e| Error::io(tmp, e))?;
    file.sync_all().map_err(|e| Error::io(tmp, e))?;
    drop(file);
    std::fs::rename(tmp, path).map_err(|e| Error::io(path, e))
}

/// A validated section: `start..start + len` lies inside the mapped file.
#[derive(Clone, Copy, Debug, Default)]
struct Section {
    /// Absolute byte offset of the section.
    start: usize,
    /// The `count` field of the section table (entries, names or bytes: see the format table).
    count: usize,
    /// Byte length of the section.
    len: usize,
}

/// A memory-mapped, validated index file.
///
/// Invariants established by [`SegmentIndex::open`]: the header is intact (magic, version, header
/// CRC), `first_position` and `segment_len` are the expected ones, the file length equals the
/// recorded one, every section lies inside the file at an 8-aligned offset without overlapping
/// the header or the previous section, the frame-offset count equals `event_count`, and both
/// bloom filters parse. Hence no query can index outside the map; queries on a file whose body is
/// damaged (which [`SegmentIndex::verify`] detects) may return wrong answers or errors, never
/// panic.
pub struct SegmentIndex {
    path: PathBuf,
    map: Mmap,
    first_position: u64,
    event_count: u64,
    segment_len: u64,
    body_crc: u32,
    sections: [Section; SECTION_COUNT],
}

impl std::fmt::Debug for SegmentIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentIndex")
            .field("path", &self.path)
            .field("first_position", &self.first_position)
            .field("event_count", &self.event_count)
            .field("segment_len", &self.segment_len)
            .finish_non_exhaustive()
    }
}

impl SegmentIndex {
    /// Maps `path` and validates its header: magic, version, header length, header CRC, file
    /// length, section bounds, and that `first_position` / `segment_len` equal the expected
    /// values. Does not read the body beyond the two bloom-filter headers, so it stays cheap; use
    /// [`SegmentIndex::verify`] for a full check.
    ///
    /// Any mismatch is an [`Error::Corruption`] naming the file; failing to open or map the file
    /// is an [`Error::Io`].
    pub fn open(
        path: &Path,
        expected_first_position: u64,
        expected_segment_len: u64,
    ) -> Result<SegmentIndex> {
        let corrupt =
            |offset: usize, detail: String| Error::corruption(path, offset as u64, detail);
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let meta_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        if meta_len < INDEX_HEADER_LEN as u64 {
            // Checked before mapping: mapping an empty file fails on some platforms.
            return Err(corrupt(
                0,
                format!(
                    "file is {meta_len} bytes, shorter than the {INDEX_HEADER_LEN}-byte header"
                ),
            ));
        }
        // SAFETY: `Mmap::map` is unsafe because the mapped bytes may change (or vanish, raising
        // SIGBUS) if the file is modified or truncated while mapped. Index files are immutable
        // once renamed into place: `write_index` writes a temporary file and renames it, and
        // Strata never writes, truncates or replaces an index file in place afterwards (a
        // rewrite goes through a fresh temporary file and rename, which leaves this mapping's
        // inode intact). Modification by other processes is outside the store's contract.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let bytes: &[u8] = &map;
        if bytes.len() < INDEX_HEADER_LEN {
            return Err(corrupt(
                0,
                format!(
                    "file is {} bytes, shorter than the {INDEX_HEADER_LEN}-byte header",
                    bytes.len()
                ),
            ));
        }
        if bytes[OFF_MAGIC..OFF_MAGIC + 8] != INDEX_MAGIC {
            return Err(corrupt(
                OFF_MAGIC,
                "bad magic: not a Strata index file".into(),
            ));
        }
        let version = get_u32(bytes, OFF_VERSION);
        if version != INDEX_FORMAT_VERSION {
            return Err(corrupt(
                OFF_VERSION,
                format!("unsupported format version {version} (expected {INDEX_FORMAT_VERSION})"),
            ));
        }
        let header_len = get_u32(bytes, OFF_HEADER_LEN);
        if header_len as usize != INDEX_HEADER_LEN {
            return Err(corrupt(
                OFF_HEADER_LEN,
                format!("header length {header_len} (expected {INDEX_HEADER_LEN})"),
            ));
        }
        let stored_crc = get_u32(bytes, OFF_HEADER_CRC);
        let actual_crc = crc32fast::hash(&bytes[..OFF_HEADER_CRC]);
        if stored_crc != actual_crc {
            return Err(corrupt(
                OFF_HEADER_CRC,
                format!("header checksum mismatch: stored {stored_crc:#010x}, computed {actual_crc:#010x}"),
            ));
        }
        let first_position = get_u64(bytes, OFF_FIRST_POSITION);
        if first_position != expected_first_position {
            return Err(corrupt(
                OFF_FIRST_POSITION,
                format!("first position {first_position} (expected {expected_first_position})"),
            ));
        }
        let segment_len = get_u64(bytes, OFF_SEGMENT_LEN);
        if segment_len != expected_segment_len {
            return Err(corrupt(
                OFF_SEGMENT_LEN,
                format!("segment length {segment_len} (expected {expected_segment_len})"),
            ));
        }
        let event_count = get_u64(bytes, OFF_EVENT_COUNT);
        if first_position.checked_add(event_count).is_none() {
            return Err(corrupt(
                OFF_EVENT_COUNT,
                format!("event count {event_count} overflows the position range"),
            ));
        }
        let file_len = get_u64(bytes, OFF_FILE_LEN);
        if file_len != bytes.len() as u64 {
            return Err(corrupt(
                OFF_FILE_LEN,
                format!(
                    "file is {} bytes but the header records {file_len} (truncated or extended)",
                    bytes.len()
                ),
            ));
        }

        let mut sections = [Section::default(); SECTION_COUNT];
        let mut prev_end = INDEX_HEADER_LEN;
        for (i, section) in sections.iter_mut().enumerate() {
            let at = OFF_SECTIONS + i * 16;
            let name = SECTION_NAMES[i];
            let start = get_u64(bytes, at);
            let count = get_u64(bytes, at + 8);
            let bad = |what: &str| {
                corrupt(
                    at,
                    format!("{name} section (start {start}, count {count}) {what}"),
                )
            };
            let start_us = usize::try_from(start).map_err(|_| bad("starts beyond the file"))?;
            let count_us = usize::try_from(count).map_err(|_| bad("has an impossible count"))?;
            let len = match i {
                SEC_OFFSETS => count_us.checked_mul(OFFSET_SIZE),
                SEC_STREAMS => count_us.checked_mul(STREAM_ENTRY_SIZE),
                SEC_IDS => count_us.checked_mul(ID_ENTRY_SIZE),
                SEC_CATEGORIES | SEC_TYPES => count_us.checked_mul(POSTING_SIZE),
                SEC_CREATED_OFFSETS => count_us
                    .checked_add(1)
                    .and_then(|n| n.checked_mul(OFFSET_SIZE)),
                _ => Some(count_us),
            }
            .ok_or_else(|| bad("has an impossible count"))?;
            if start_us % 8 != 0 {
                return Err(bad("is not 8-byte aligned"));
            }
            if start_us < prev_end {
                return Err(bad("overlaps the header or the previous section"));
            }
            let end = start_us
                .checked_add(len)
                .filter(|&end| end <= bytes.len())
                .ok_or_else(|| bad("extends beyond the end of the file"))?;
            *section = Section {
                start: start_us,
                count: count_us,
                len,
            };
            prev_end = end;
        }
        if sections[SEC_OFFSETS].count as u64 != event_count {
            return Err(corrupt(
                OFF_SECTIONS + SEC_OFFSETS * 16 + 8,
                format!(
                    "{} frame offsets for {event_count} events",
                    sections[SEC_OFFSETS].count
                ),
            ));
        }
        for sec in [SEC_STREAM_BLOOM, SEC_ID_BLOOM] {
            let s = sections[sec];
            if BloomRef::parse(&bytes[s.start..s.start + s.len]).is_none() {
                return Err(corrupt(
                    s.start,
                    format!("malformed {}", SECTION_NAMES[sec]),
                ));
            }
        }
        let body_crc = get_u32(bytes, OFF_BODY_CRC);
        Ok(SegmentIndex {
            path: path.to_path_buf(),
            map,
            first_position,
            event_count,
            segment_len,
            body_crc,
            sections,
        })
    }

    /// The body's CRC32 against the header: catches any damage to the body, in one pass at
    /// memory speed (the store runs it before first use of a segment's index).
    pub fn verify_checksum(&self) -> Result<()> {
        let bytes: &[u8] = &self.map;
        let crc = crc32fast::hash(&bytes[INDEX_HEADER_LEN..]);
        if crc != self.body_crc {
            return Err(self.corrupt(
                INDEX_HEADER_LEN,
                format!(
                    "body checksum mismatch: stored {:#010x}, computed {crc:#010x}",
                    self.body_crc
                ),
            ));
        }
        Ok(())
    }

    /// Full check of the body: its CRC32 against the header, then the consistency of every
    /// section (frame offsets strictly increasing and below `segment_len`, entries sorted, all
    /// positions inside the segment, created names valid UTF-8 and strictly increasing, every
    /// entry present in its bloom filter). Reads the whole file.
    ///
    /// Any failure is an [`Error::Corruption`] with the file and the offset of the first
    /// offending structure.
    pub fn verify(&self) -> Result<()> {
        self.verify_checksum()?;
        let bytes: &[u8] = &self.map;
        let end = self.first_position + self.event_count;
        let in_range = |p: u64| (self.first_position..end).contains(&p);

        let s = self.sections[SEC_OFFSETS];
        for i in 0..s.count {
            let o = self.offset_at(i);
            if o >= self.segment_len || (i > 0 && self.offset_at(i - 1) >= o) {
                return Err(self.corrupt(
                    s.start + i * OFFSET_SIZE,
                    format!("frame offset {o} out of order or beyond the segment"),
                ));
            }
        }

        let s = self.sections[SEC_STREAMS];
        let bloom = self.stream_bloom();
        for i in 0..s.count {
            let e = self.stream_at(i);
            let sorted = i == 0 || {
                let p = self.stream_at(i - 1);
                (p.hash, p.revision, p.position) <= (e.hash, e.revision, e.position)
            };
            if !sorted || !in_range(e.position) || !bloom.is_some_and(|b| b.may_contain(e.hash)) {
                return Err(self.corrupt(
                    s.start + i * STREAM_ENTRY_SIZE,
                    format!("stream entry {i} out of order, out of range or not in the bloom"),
                ));
            }
        }

        let s = self.sections[SEC_IDS];
        let bloom = self.id_bloom();
        for i in 0..s.count {
            let e = self.id_at(i);
            let sorted = i == 0 || {
                let p = self.id_at(i - 1);
                (p.stream_hash, p.id, p.revision) <= (e.stream_hash, e.id, e.revision)
            };
            let key = id_bloom_key(e.stream_hash, e.id);
            if !sorted || !bloom.is_some_and(|b| b.may_contain(key)) {
                return Err(self.corrupt(
                    s.start + i * ID_ENTRY_SIZE,
                    format!("id entry {i} out of order or not in the bloom"),
                ));
            }
        }

        for sec in [SEC_CATEGORIES, SEC_TYPES] {
            let s = self.sections[sec];
            for i in 0..s.count {
                let p = self.posting_at(sec, i);
                let sorted = i == 0 || {
                    let q = self.posting_at(sec, i - 1);
                    (q.hash, q.position) <= (p.hash, p.position)
                };
                if !sorted || !in_range(p.position) {
                    return Err(self.corrupt(
                        s.start + i * POSTING_SIZE,
                        format!(
                            "{} entry {i} out of order or out of range",
                            SECTION_NAMES[sec]
                        ),
                    ));
                }
            }
        }

        let table = self.sections[SEC_CREATED_OFFSETS];
        let blob = self.sections[SEC_CREATED_BLOB];
        if get_u64(bytes, table.start) != 0
            || get_u64(bytes, table.start + table.count * OFFSET_SIZE) != blob.len as u64
        {
            return Err(self.corrupt(
                table.start,
                "created-name offsets do not span the name blob".into(),
            ));
        }
        let mut prev: Option<&str> = None;
        for i in 0..table.count {
            let name = self.created_name(i)?;
            if prev.is_some_and(|p| p >= name) {
                return Err(self.corrupt(
                    table.start + i * OFFSET_SIZE,
                    format!("created name {i} out of order or duplicated"),
                ));
            }
            prev = Some(name);
        }
        Ok(())
    }

    /// The path the index was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Global position of the segment's first event.
    #[cfg(test)]
    pub fn first_position(&self) -> u64 {
        self.first_position
    }

    /// Number of events in the segment (possibly 0).
    pub fn event_count(&self) -> u64 {
        self.event_count
    }

    /// Byte length of the segment file this index describes.
    #[cfg(test)]
    pub fn segment_len(&self) -> u64 {
        self.segment_len
    }

    /// Frame offset of the event at global `position`; `None` outside
    /// `first_position..first_position + event_count`.
    pub fn offset(&self, position: u64) -> Option<u64> {
        let i = position.checked_sub(self.first_position)?;
        if i >= self.event_count {
            return None;
        }
        Some(self.offset_at(usize::try_from(i).ok()?))
    }

    /// Bloom check on the stream-name hash: `false` means no entry has this hash.
    pub fn may_contain_stream(&self, hash: u64) -> bool {
        self.stream_bloom().is_none_or(|b| b.may_contain(hash))
    }

    /// Entries with this hash and a revision in `from..=to`, ascending by `(revision, position)`.
    /// May include entries of other streams sharing the hash: the caller checks names.
    pub fn stream_entries(&self, hash: u64, from: u64, to: u64) -> Vec<StreamEntry> {
        if from > to {
            return Vec::new();
        }
        let n = self.sections[SEC_STREAMS].count;
        let lo = partition_point(n, |i| {
            let e = self.stream_at(i);
            (e.hash, e.revision) < (hash, from)
        });
        let hi = partition_point(n, |i| {
            let e = self.stream_at(i);
            (e.hash, e.revision) <= (hash, to)
        });
        (lo..hi.max(lo)).map(|i| self.stream_at(i)).collect()
    }

    /// The entry with this hash and the highest `(revision, position)`, if any. Correct whether or
    /// not the caller consulted [`SegmentIndex::may_contain_stream`] first.
    pub fn last_stream_entry(&self, hash: u64) -> Option<StreamEntry> {
        let n = self.sections[SEC_STREAMS].count;
        let hi = partition_point(n, |i| self.stream_at(i).hash <= hash);
        let e = self.stream_at(hi.checked_sub(1)?);
        (e.hash == hash).then_some(e)
    }

    /// All entries with this hash (for the collision fallback), ascending by
    /// `(revision, position)`.
    pub fn all_stream_entries(&self, hash: u64) -> Vec<StreamEntry> {
        self.stream_entries(hash, 0, u64::MAX)
    }

    /// Revisions recorded for `(stream_hash, id)`, ascending; empty if absent. Several values
    /// only on a stream-hash collision (or a damaged file). Consults the id bloom filter first.
    pub fn find_id(&self, stream_hash: u64, id: u128) -> Vec<u64> {
        let key = id_bloom_key(stream_hash, id);
        if !self.id_bloom().is_none_or(|b| b.may_contain(key)) {
            return Vec::new();
        }
        let n = self.sections[SEC_IDS].count;
        let lo = partition_point(n, |i| {
            let e = self.id_at(i);
            (e.stream_hash, e.id) < (stream_hash, id)
        });
        let hi = partition_point(n, |i| {
            let e = self.id_at(i);
            (e.stream_hash, e.id) <= (stream_hash, id)
        });
        (lo..hi.max(lo)).map(|i| self.id_at(i).revision).collect()
    }

    /// Positions in `from..=to`, ascending, of the events whose category hashes to `hash`.
    pub fn category_positions(&self, hash: u64, from: u64, to: u64) -> Vec<u64> {
        self.postings(SEC_CATEGORIES, hash, from, to)
    }

    /// Positions in `from..=to`, ascending, of the events whose type hashes to `hash`.
    pub fn type_positions(&self, hash: u64, from: u64, to: u64) -> Vec<u64> {
        self.postings(SEC_TYPES, hash, from, to)
    }

    /// Number of names of streams created (revision 0) in this segment.
    pub fn created_count(&self) -> usize {
        self.sections[SEC_CREATED_OFFSETS].count
    }

    /// The `i`-th created stream name, in byte order. [`Error::Corruption`] if `i` is out of
    /// bounds, the offset table points outside the name blob, or the name is not UTF-8.
    pub fn created_name(&self, i: usize) -> Result<&str> {
        let bytes = self.created_bytes(i)?;
        std::str::from_utf8(bytes).map_err(|e| {
            self.corrupt(
                self.sections[SEC_CREATED_OFFSETS].start + i * OFFSET_SIZE,
                format!("created name {i} is not UTF-8: {e}"),
            )
        })
    }

    /// The first index `i` (in `0..=created_count()`) whose name is `>= key` when `inclusive`,
    /// `> key` otherwise (byte order). For a prefix scan, start at
    /// `created_lower_bound(prefix, true)` and stop at the first name not starting with `prefix`;
    /// to resume after a name, use `created_lower_bound(last, false)`.
    pub fn created_lower_bound(&self, key: &str, inclusive: bool) -> Result<usize> {
        let key = key.as_bytes();
        let (mut lo, mut hi) = (0usize, self.created_count());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let name = self.created_bytes(mid)?;
            let before = if inclusive { name < key } else { name <= key };
            if before {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }

    // ---- private helpers: all indices are bounded by validated section counts ----

    fn corrupt(&self, offset: usize, detail: String) -> Error {
        Error::corruption(&self.path, offset as u64, detail)
    }

    fn section_bytes(&self, sec: usize) -> &[u8] {
        let s = self.sections[sec];
        &self.map[s.start..s.start + s.len]
    }

    fn stream_bloom(&self) -> Option<BloomRef<'_>> {
        BloomRef::parse(self.section_bytes(SEC_STREAM_BLOOM))
    }

    fn id_bloom(&self) -> Option<BloomRef<'_>> {
        BloomRef::parse(self.section_bytes(SEC_ID_BLOOM))
    }

    /// Requires `i < sections[SEC_OFFSETS].count`.
    fn offset_at(&self, i: usize) -> u64 {
        get_u64(self.section_bytes(SEC_OFFSETS), i * OFFSET_SIZE)
    }

    /// Requires `i < sections[SEC_STREAMS].count`.
    fn stream_at(&self, i: usize) -> StreamEntry {
        let b = self.section_bytes(SEC_STREAMS);
        let at = i * STREAM_ENTRY_SIZE;
        StreamEntry {
            hash: get_u64(b, at),
            revision: get_u64(b, at + 8),
            position: get_u64(b, at + 16),
        }
    }

    /// Requires `i < sections[SEC_IDS].count`.
    fn id_at(&self, i: usize) -> IdEntry {
        let b = self.section_bytes(SEC_IDS);
        let at = i * ID_ENTRY_SIZE;
        IdEntry {
            stream_hash: get_u64(b, at),
            id: get_u128(b, at + 8),
            revision: get_u64(b, at + 24),
        }
    }

    /// Requires `i < sections[sec].count` and `sec` a posting section.
    fn posting_at(&self, sec: usize, i: usize) -> Posting {
        let b = self.section_bytes(sec);
        let at = i * POSTING_SIZE;
        Posting {
            hash: get_u64(b, at),
            position: get_u64(b, at + 8),
        }
    }

    fn postings(&self, sec: usize, hash: u64, from: u64, to: u64) -> Vec<u64> {
        if from > to {
            return Vec::new();
        }
        let n = self.sections[sec].count;
        let lo = partition_point(n, |i| {
            let p = self.posting_at(sec, i);
            (p.hash, p.position) < (hash, from)
        });
        let hi = partition_point(n, |i| {
            let p = self.posting_at(sec, i);
            (p.hash, p.position) <= (hash, to)
        });
        (lo..hi.max(lo))
            .map(|i| self.posting_at(sec, i).position)
            .collect()
    }

    /// The raw bytes of created name `i`, bounds-checked against the blob.
    fn created_bytes(&self, i: usize) -> Result<&[u8]> {
        let table = self.sections[SEC_CREATED_OFFSETS];
        if i >= table.count {
            return Err(self.corrupt(
                table.start,
                format!("created name {i} requested, only {} stored", table.count),
            ));
        }
        let t = self.section_bytes(SEC_CREATED_OFFSETS);
        let (a, b) = (
            get_u64(t, i * OFFSET_SIZE),
            get_u64(t, (i + 1) * OFFSET_SIZE),
        );
        let blob = self.section_bytes(SEC_CREATED_BLOB);
        usize::try_from(a)
            .ok()
            .zip(usize::try_from(b).ok())
            .and_then(|(a, b)| blob.get(a..b))
            .ok_or_else(|| {
                self.corrupt(
                    table.start + i * OFFSET_SIZE,
                    format!(
                        "created name {i} spans {a}..{b}, outside the {}-byte name blob",
                        blob.len()
                    ),
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn segment_index_is_send_and_sync() {
        assert_send_sync::<SegmentIndex>();
    }

    fn sample_input() -> IndexInput {
        let first = 100;
        let offsets: Vec<u64> = (0..10).map(|i| 64 + i * 100).collect();
        let streams = (0..10)
            .map(|i| StreamEntry {
                hash: i % 3,
                revision: i / 3,
                position: first + i,
            })
            .collect();
        let ids = (0..10)
            .map(|i| IdEntry {
                stream_hash: i % 3,
                id: (u128::from(i) << 64) | 0xdead_beef,
                revision: i / 3,
            })
            .collect();
        let categories = (0..10)
            .map(|i| Posting {
                hash: 7,
                position: first + i,
            })
            .collect();
        let types = (0..10)
            .map(|i| Posting {
                hash: i % 2,
                position: first + i,
            })
            .collect();
        let created = ["order-2", "order-1", "cart-9", "order-1", "inventory"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        IndexInput {
            first_position: first,
            segment_len: 1064,
            offsets,
            streams,
            ids,
            categories,
            types,
            created,
        }
    }

    fn write_sample(dir: &Path) -> (PathBuf, Vec<u8>) {
        let path = dir.join("seg.idx");
        write_index(&path, sample_input()).expect("write");
        let bytes = std::fs::read(&path).expect("read");
        (path, bytes)
    }

    /// Recomputes both CRCs of a (possibly tampered) file image.
    fn fix_crcs(bytes: &mut [u8]) {
        if bytes.len() >= INDEX_HEADER_LEN {
            let body = crc32fast::hash(&bytes[INDEX_HEADER_LEN..]);
            put_u32(bytes, OFF_BODY_CRC, body);
            let header = crc32fast::hash(&bytes[..OFF_HEADER_CRC]);
            put_u32(bytes, OFF_HEADER_CRC, header);
        }
    }

    fn corruption_detail(r: Result<SegmentIndex>) -> String {
        match r {
            Err(Error::Corruption { detail, .. }) => detail,
            other => panic!("expected corruption, got {other:?}"),
        }
    }

    #[test]
    fn sample_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, bytes) = write_sample(dir.path());
        assert!(!dir.path().join("seg.idx.tmp").exists());
        assert_eq!(bytes.len() % 8, 0);
        assert_eq!(&bytes[..8], b"STRATIDX");
        let idx = SegmentIndex::open(&path, 100, 1064).expect("open");
        idx.verify().expect("verify");
        assert_eq!(idx.path(), path);
        assert_eq!(idx.first_position(), 100);
        assert_eq!(idx.event_count(), 10);
        assert_eq!(idx.segment_len(), 1064);
        assert_eq!(idx.offset(100), Some(64));
        assert_eq!(idx.offset(109), Some(964));
        assert_eq!(idx.offset(99), None);
        assert_eq!(idx.offset(110), None);
        assert_eq!(idx.offset(0), None);
        assert_eq!(idx.offset(u64::MAX), None);
        let revs: Vec<u64> = idx
            .all_stream_entries(0)
            .iter()
            .map(|e| e.revision)
            .collect();
        assert_eq!(revs, vec![0, 1, 2, 3]);
        assert_eq!(
            idx.last_stream_entry(1),
            Some(StreamEntry {
                hash: 1,
                revision: 2,
                position: 107
            })
        );
        assert_eq!(idx.last_stream_entry(3), None);
        assert_eq!(idx.stream_entries(0, 1, 2).len(), 2);
        assert_eq!(idx.stream_entries(0, 2, 1), vec![]);
        assert!(idx.may_contain_stream(0));
        assert_eq!(idx.find_id(2, (5u128 << 64) | 0xdead_beef), vec![1]);
        assert_eq!(
            idx.find_id(1, (5u128 << 64) | 0xdead_beef),
            Vec::<u64>::new()
        );
        assert_eq!(idx.category_positions(7, 103, 105), vec![103, 104, 105]);
        assert_eq!(
            idx.type_positions(1, 0, u64::MAX),
            vec![101, 103, 105, 107, 109]
        );
        assert_eq!(idx.created_count(), 4);
        let names: Vec<&str> = (0..4).map(|i| idx.created_name(i).expect("name")).collect();
        assert_eq!(names, vec!["cart-9", "inventory", "order-1", "order-2"]);
        assert!(matches!(idx.created_name(4), Err(Error::Corruption { .. })));
    }

    #[test]
    fn layout_matches_documented_offsets() {
        const _: () = assert!(OFF_SECTIONS + SECTION_COUNT * 16 == OFF_BODY_CRC);
        const _: () = assert!(OFF_HEADER_CRC + 4 == INDEX_HEADER_LEN);
        let b = encode(sample_input()).expect("encode");
        assert_eq!(&b[0..8], b"STRATIDX");
        assert_eq!(get_u32(&b, 8), 1);
        assert_eq!(get_u32(&b, 12), 200);
        assert_eq!(get_u64(&b, 16), 100);
        assert_eq!(get_u64(&b, 24), 10);
        assert_eq!(get_u64(&b, 32), 1064);
        assert_eq!(get_u64(&b, 40), b.len() as u64);
        assert_eq!(get_u32(&b, 192), crc32fast::hash(&b[200..]));
        assert_eq!(get_u32(&b, 196), crc32fast::hash(&b[..196]));
        // Section k: start at 48 + 16k, count at 56 + 16k; contiguous up to 8-byte padding.
        let sizes = |k: usize, count: usize| match k {
            0 => count * 8,
            1 => count * 24,
            2 => count * 32,
            3 | 4 => count * 16,
            5 => (count + 1) * 8,
            _ => count,
        };
        let mut expected_start = 200;
        for k in 0..SECTION_COUNT {
            let start = get_u64(&b, 48 + 16 * k) as usize;
            let count = get_u64(&b, 56 + 16 * k) as usize;
            assert_eq!(start, expected_start, "section {k}");
            expected_start = (start + sizes(k, count)).next_multiple_of(8);
        }
        assert_eq!(expected_start, b.len());
        // First stream entry: hash 0, revision 0, position 100; first id entry's id is LE u128.
        let s = get_u64(&b, 48 + 16) as usize;
        assert_eq!(
            (get_u64(&b, s), get_u64(&b, s + 8), get_u64(&b, s + 16)),
            (0, 0, 100)
        );
        let i = get_u64(&b, 48 + 32) as usize;
        assert_eq!(get_u128(&b, i + 8), 0xdead_beef);
        assert_eq!(b[i + 8], 0xef);
        // Created names: table then blob.
        let t = get_u64(&b, 48 + 16 * 5) as usize;
        let blob = get_u64(&b, 48 + 16 * 6) as usize;
        assert_eq!(get_u64(&b, t + 8), 6);
        assert_eq!(&b[blob..blob + 6], b"cart-9");
        // Bloom headers: 7 probes, reserved 0.
        for k in [7, 8] {
            let at = get_u64(&b, 48 + 16 * k) as usize;
            assert_eq!((get_u32(&b, at), get_u32(&b, at + 4)), (7, 0));
        }
    }

    #[test]
    fn write_replaces_existing_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.idx");
        std::fs::write(&path, b"garbage").expect("write");
        write_index(&path, sample_input()).expect("write");
        SegmentIndex::open(&path, 100, 1064).expect("open");
    }

    #[test]
    fn write_rejects_bad_input() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("x.idx");
        let mut input = sample_input();
        input.offsets.swap(1, 2);
        assert!(matches!(
            write_index(&path, input),
            Err(Error::InvalidInput { .. })
        ));
        let mut input = sample_input();
        input.segment_len = 964;
        assert!(matches!(
            write_index(&path, input),
            Err(Error::InvalidInput { .. })
        ));
        let mut input = sample_input();
        input.streams[3].position = 110;
        assert!(matches!(
            write_index(&path, input),
            Err(Error::InvalidInput { .. })
        ));
        let mut input = sample_input();
        input.types[0].position = 99;
        assert!(matches!(
            write_index(&path, input),
            Err(Error::InvalidInput { .. })
        ));
        assert!(!path.exists());
        assert!(!dir.path().join("x.idx.tmp").exists());
    }

    #[test]
    fn empty_index_works() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("empty.idx");
        write_index(
            &path,
            IndexInput {
                first_position: 5,
                segment_len: 0,
                ..IndexInput::default()
            },
        )
        .expect("write");
        let idx = SegmentIndex::open(&path, 5, 0).expect("open");
        idx.verify().expect("verify");
        assert_eq!(idx.event_count(), 0);
        assert_eq!(idx.offset(5), None);
        assert_eq!(idx.offset(4), None);
        assert!(idx.stream_entries(1, 0, u64::MAX).is_empty());
        assert_eq!(idx.last_stream_entry(1), None);
        assert!(idx.find_id(1, 1).is_empty());
        assert!(idx.category_positions(1, 0, u64::MAX).is_empty());
        assert!(idx.type_positions(1, 0, u64::MAX).is_empty());
        assert_eq!(idx.created_count(), 0);
        assert_eq!(idx.created_lower_bound("a", true).expect("lb"), 0);
        assert!(idx.created_name(0).is_err());
    }

    #[test]
    fn open_rejects_short_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, bytes) = write_sample(dir.path());
        for len in [0, 1, 8, 100, INDEX_HEADER_LEN - 1] {
            std::fs::write(&path, &bytes[..len]).expect("write");
            let d = corruption_detail(SegmentIndex::open(&path, 100, 1064));
            assert!(d.contains("shorter"), "{d}");
        }
        // Header intact, body truncated or extended.
        for len in [INDEX_HEADER_LEN, INDEX_HEADER_LEN + 8, bytes.len() - 1] {
            std::fs::write(&path, &bytes[..len]).expect("write");
            corruption_detail(SegmentIndex::open(&path, 100, 1064));
        }
        let mut longer = bytes.clone();
        longer.extend_from_slice(&[0; 8]);
        std::fs::write(&path, &longer).expect("write");
        corruption_detail(SegmentIndex::open(&path, 100, 1064));
    }

    #[test]
    fn open_missing_file_is_io_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = SegmentIndex::open(&dir.path().join("nope.idx"), 0, 0);
        assert!(matches!(r, Err(Error::Io { .. })));
    }

    #[test]
    fn open_rejects_any_flipped_header_byte() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, bytes) = write_sample(dir.path());
        for i in 0..INDEX_HEADER_LEN {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            std::fs::write(&path, &b).expect("write");
            match SegmentIndex::open(&path, 100, 1064) {
                Err(Error::Corruption { file, .. }) => assert_eq!(file, path),
                other => panic!("byte {i}: expected corruption, got {other:?}"),
            }
        }
    }

    #[test]
    fn open_rejects_wrong_expectations_magic_and_version() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, bytes) = write_sample(dir.path());
        let d = corruption_detail(SegmentIndex::open(&path, 101, 1064));
        assert!(d.contains("first position"), "{d}");
        let d = corruption_detail(SegmentIndex::open(&path, 100, 1065));
        assert!(d.contains("segment length"), "{d}");

        let mut b = bytes.clone();
        b[..8].copy_from_slice(b"STRATLOG");
        fix_crcs(&mut b);
        std::fs::write(&path, &b).expect("write");
        let d = corruption_detail(SegmentIndex::open(&path, 100, 1064));
        assert!(d.contains("magic"), "{d}");

        let mut b = bytes.clone();
        put_u32(&mut b, OFF_VERSION, 2);
        fix_crcs(&mut b);
        std::fs::write(&path, &b).expect("write");
        let d = corruption_detail(SegmentIndex::open(&path, 100, 1064));
        assert!(d.contains("version"), "{d}");

        // Section bounds are checked even with a valid header CRC.
        let mut b = bytes.clone();
        put_u64(&mut b, OFF_SECTIONS + SEC_STREAMS * 16 + 8, 1 << 40);
        fix_crcs(&mut b);
        std::fs::write(&path, &b).expect("write");
        corruption_detail(SegmentIndex::open(&path, 100, 1064));

        let mut b = bytes.clone();
        put_u64(&mut b, OFF_SECTIONS + SEC_OFFSETS * 16 + 8, 9);
        fix_crcs(&mut b);
        std::fs::write(&path, &b).expect("write");
        corruption_detail(SegmentIndex::open(&path, 100, 1064));
    }

    #[test]
    fn verify_detects_any_flipped_body_byte() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, bytes) = write_sample(dir.path());
        for i in INDEX_HEADER_LEN..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            std::fs::write(&path, &b).expect("write");
            // Open may fail (a damaged bloom header) or succeed; verify must then fail.
            if let Ok(idx) = SegmentIndex::open(&path, 100, 1064) {
                match idx.verify() {
                    Err(Error::Corruption { file, offset, .. }) => {
                        assert_eq!(file, path);
                        assert!(offset >= INDEX_HEADER_LEN as u64);
                    }
                    other => panic!("byte {i}: expected corruption, got {other:?}"),
                }
            }
        }
    }

    #[test]
    fn verify_checks_order_even_with_valid_crc() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, bytes) = write_sample(dir.path());
        let idx = SegmentIndex::open(&path, 100, 1064).expect("open");
        let streams = idx.sections[SEC_STREAMS].start;
        let offsets = idx.sections[SEC_OFFSETS].start;
        drop(idx);
        let mut b = bytes.clone();
        // Swap the first two stream entries' revisions -> out of order.
        put_u64(&mut b, streams + 8, 5);
        fix_crcs(&mut b);
        std::fs::write(&path, &b).expect("write");
        let idx = SegmentIndex::open(&path, 100, 1064).expect("open");
        assert!(
            matches!(idx.verify(), Err(Error::Corruption { offset, .. }) if offset == streams as u64 + 24)
        );
        let mut b = bytes.clone();
        put_u64(&mut b, offsets + 8, 0);
        fix_crcs(&mut b);
        std::fs::write(&path, &b).expect("write");
        let idx = SegmentIndex::open(&path, 100, 1064).expect("open");
        assert!(
            matches!(idx.verify(), Err(Error::Corruption { offset, .. }) if offset == offsets as u64 + 8)
        );
    }

    #[test]
    fn created_lower_bound_with_prefixes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.idx");
        let names = [
            "a", "ab", "abc", "abd", "b", "ba", "order", "order-1", "order-10", "order-2",
            "orders", "é",
        ];
        let mut input = IndexInput {
            first_position: 0,
            segment_len: 1,
            offsets: vec![0],
            ..IndexInput::default()
        };
        input.created = names.iter().rev().map(|s| s.to_string()).collect();
        write_index(&path, input).expect("write");
        let idx = SegmentIndex::open(&path, 0, 1).expect("open");
        idx.verify().expect("verify");
        assert_eq!(idx.created_count(), names.len());
        let naive = |key: &str, inclusive: bool| {
            names
                .iter()
                .position(|n| if inclusive { *n >= key } else { *n > key })
                .unwrap_or(names.len())
        };
        for key in [
            "",
            "a",
            "ab",
            "abc",
            "abz",
            "b",
            "c",
            "order",
            "order-",
            "order-1",
            "order-3",
            "p",
            "é",
            "ê",
            "\u{10FFFF}",
        ] {
            for inclusive in [true, false] {
                assert_eq!(
                    idx.created_lower_bound(key, inclusive).expect("lb"),
                    naive(key, inclusive),
                    "{key:?} {inclusive}"
                );
            }
        }
        // Prefix scan for "order-".
        let start = idx.created_lower_bound("order-", true).expect("lb");
        let scanned: Vec<&str> = (start..idx.created_count())
            .map(|i| idx.created_name(i).expect("name"))
            .take_while(|n| n.starts_with("order-"))
            .collect();
        assert_eq!(scanned, vec!["order-1", "order-10", "order-2"]);
        // Resume after a name.
        let after = idx.created_lower_bound("order-1", false).expect("lb");
        assert_eq!(idx.created_name(after).expect("name"), "order-10");
    }

    #[test]
    fn damaged_created_table_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, bytes) = write_sample(dir.path());
        let idx = SegmentIndex::open(&path, 100, 1064).expect("open");
        let table = idx.sections[SEC_CREATED_OFFSETS].start;
        let blob = idx.sections[SEC_CREATED_BLOB].start;
        drop(idx);
        let mut b = bytes.clone();
        put_u64(&mut b, table + 8, u64::MAX);
        fix_crcs(&mut b);
        std::fs::write(&path, &b).expect("write");
        let idx = SegmentIndex::open(&path, 100, 1064).expect("open");
        assert!(idx.created_name(0).is_err());
        assert!(idx.created_name(1).is_err());
        assert!(idx.verify().is_err());
        let mut b = bytes.clone();
        b[blob] = 0xff; // invalid UTF-8
        fix_crcs(&mut b);
        std::fs::write(&path, &b).expect("write");
        let idx = SegmentIndex::open(&path, 100, 1064).expect("open");
        assert!(idx.created_name(0).is_err());
        assert!(idx.verify().is_err());
    }

    /// Naive model of every query.
    struct Model {
        input: IndexInput,
    }

    impl Model {
        fn streams(&self, hash: u64, from: u64, to: u64) -> Vec<StreamEntry> {
            let mut v: Vec<StreamEntry> = self
                .input
                .streams
                .iter()
                .copied()
                .filter(|e| e.hash == hash && (from..=to).contains(&e.revision))
                .collect();
            v.sort_by_key(|e| (e.revision, e.position));
            v
        }
        fn ids(&self, hash: u64, id: u128) -> Vec<u64> {
            let mut v: Vec<u64> = self
                .input
                .ids
                .iter()
                .filter(|e| e.stream_hash == hash && e.id == id)
                .map(|e| e.revision)
                .collect();
            v.sort_unstable();
            v
        }
        fn postings(p: &[Posting], hash: u64, from: u64, to: u64) -> Vec<u64> {
            let mut v: Vec<u64> = p
                .iter()
                .filter(|p| p.hash == hash && (from..=to).contains(&p.position))
                .map(|p| p.position)
                .collect();
            v.sort_unstable();
            v
        }
    }

    prop_compose! {
        fn arb_input()(
            first in 0u64..1_000,
            gaps in proptest::collection::vec(1u64..50, 0..40),
        )(
            streams in proptest::collection::vec((0u64..6, 0u64..20, 0..gaps.len().max(1) as u64), 0..60),
            ids in proptest::collection::vec((0u64..4, 0u128..8, 0u64..20), 0..40),
            cats in proptest::collection::vec((0u64..4, 0..gaps.len().max(1) as u64), 0..40),
            types in proptest::collection::vec((0u64..4, 0..gaps.len().max(1) as u64), 0..40),
            created in proptest::collection::vec("[a-c\\-é]{0,4}", 0..12),
            tail in 1u64..100,
            first in Just(first),
            gaps in Just(gaps),
        ) -> IndexInput {
            let mut offsets = Vec::new();
            let mut o = 0;
            for g in &gaps {
                o += g;
                offsets.push(o);
            }
            let segment_len = o + tail;
            let n = offsets.len() as u64;
            let keep = |rel: u64| n > 0 && rel < n;
            IndexInput {
                first_position: first,
                segment_len,
                streams: streams.into_iter().filter(|s| keep(s.2)).map(|(hash, revision, rel)| StreamEntry { hash, revision, position: first + rel }).collect(),
                ids: ids.into_iter().map(|(stream_hash, id, revision)| IdEntry { stream_hash, id: id.wrapping_mul(0x0123_4567_89ab_cdef_0011_2233_4455_6677), revision }).collect(),
                categories: cats.into_iter().filter(|c| keep(c.1)).map(|(hash, rel)| Posting { hash, position: first + rel }).collect(),
                types: types.into_iter().filter(|c| keep(c.1)).map(|(hash, rel)| Posting { hash, position: first + rel }).collect(),
                created,
                offsets,
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        #[test]
        fn round_trip_matches_model(input in arb_input()) {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("p.idx");
            write_index(&path, input.clone()).expect("write");
            let idx = SegmentIndex::open(&path, input.first_position, input.segment_len).expect("open");
            idx.verify().expect("verify");
            let model = Model { input };
            let first = model.input.first_position;
            let n = model.input.offsets.len() as u64;
            prop_assert_eq!(idx.event_count(), n);
            for p in first.saturating_sub(2)..first + n + 2 {
                let want = p.checked_sub(first).and_then(|i| model.input.offsets.get(i as usize).copied());
                prop_assert_eq!(idx.offset(p), want);
            }
            for hash in 0..7u64 {
                if model.input.streams.iter().any(|e| e.hash == hash) {
                    prop_assert!(idx.may_contain_stream(hash));
                }
                let all = model.streams(hash, 0, u64::MAX);
                prop_assert_eq!(idx.all_stream_entries(hash), all.clone());
                prop_assert_eq!(idx.last_stream_entry(hash), all.last().copied());
                for (from, to) in [(0, 0), (0, 5), (3, 9), (10, 19), (19, u64::MAX), (5, 4)] {
                    prop_assert_eq!(idx.stream_entries(hash, from, to), model.streams(hash, from, to));
                }
                for id in 0u128..9 {
                    let id = id.wrapping_mul(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
                    prop_assert_eq!(idx.find_id(hash, id), model.ids(hash, id));
                }
                for (from, to) in [(0, u64::MAX), (first, first + 3), (first + 5, first + 20), (first + 3, first + 2)] {
                    prop_assert_eq!(idx.category_positions(hash, from, to), Model::postings(&model.input.categories, hash, from, to));
                    prop_assert_eq!(idx.type_positions(hash, from, to), Model::postings(&model.input.types, hash, from, to));
                }
            }
            let mut names = model.input.created.clone();
            names.sort();
            names.dedup();
            prop_assert_eq!(idx.created_count(), names.len());
            for (i, name) in names.iter().enumerate() {
                prop_assert_eq!(idx.created_name(i).expect("name"), name.as_str());
            }
            for key in ["", "a", "a-", "b", "bc", "c", "cc", "é", "z"] {
                for inclusive in [true, false] {
                    let want = names.iter().position(|n| if inclusive { n.as_str() >= key } else { n.as_str() > key }).unwrap_or(names.len());
                    prop_assert_eq!(idx.created_lower_bound(key, inclusive).expect("lb"), want);
                }
            }
        }

        /// Random damage with both CRCs recomputed (so open's checks are the only guard): every
        /// query must answer (rightly or wrongly) without panicking.
        #[test]
        fn damaged_files_never_panic(
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..10), 1..6),
        ) {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("d.idx");
            let mut bytes = encode(sample_input()).expect("encode");
            for (at, val, kind) in edits {
                if kind == 0 {
                    // Overwrite a whole header word with a small or huge value.
                    let word = OFF_FIRST_POSITION + 8 * at.index((OFF_BODY_CRC - OFF_FIRST_POSITION) / 8);
                    let v = if val & 1 == 0 { u64::from(val) * 8 } else { u64::MAX - u64::from(val) };
                    put_u64(&mut bytes, word, v);
                } else {
                    let i = at.index(bytes.len() - INDEX_HEADER_LEN) + INDEX_HEADER_LEN;
                    bytes[i] = val;
                }
            }
            fix_crcs(&mut bytes);
            std::fs::write(&path, &bytes).expect("write");
            let first = get_u64(&bytes, OFF_FIRST_POSITION);
            let seg = get_u64(&bytes, OFF_SEGMENT_LEN);
            if let Ok(idx) = SegmentIndex::open(&path, first, seg) {
                let _ = idx.verify();
                for p in [0, 99, 100, 105, 109, 110, u64::MAX] {
                    let _ = idx.offset(p);
                }
                for h in 0..4 {
                    let _ = idx.may_contain_stream(h);
                    let _ = idx.stream_entries(h, 0, u64::MAX);
                    let _ = idx.last_stream_entry(h);
                    let _ = idx.find_id(h, 0xdead_beef);
                    let _ = idx.category_positions(h, 0, u64::MAX);
                    let _ = idx.type_positions(h, 0, u64::MAX);
                }
                for i in 0..idx.created_count().min(16) + 1 {
                    let _ = idx.created_name(i);
                }
                let _ = idx.created_lower_bound("order-", true);
                let _ = idx.created_lower_bound("order-1", false);
            }
        }
    }
}
