//! The on-disk format (version 2) of an index file: the constants of its layout, the record
//! types of its sections and the little-endian byte helpers.
//!
//! All integers are little-endian; offsets are absolute byte offsets from the start of the file.
//! Hashes are [`crate::hash::hash_str`] (XXH3-64, seed 0) of the stream name, category or event
//! type. CRC32 is the IEEE polynomial (`crc32fast`).
//!
//! Version 3 is version 2 with stream and id entries that may name positions without a frame
//! (events a scavenge removed whose head or id is kept); written only when there are such
//! entries. Version 2 added the correlation postings (section 9) and so grew the section table and the
//! header by one entry. A version-1 file is stale, not damaged: the store rebuilds it from its
//! segment when it opens the directory (an index file is derived data).
//!
//! ## Header (216 bytes)
//!
//! | offset | size | field                                                                |
//! |-------:|-----:|----------------------------------------------------------------------|
//! |      0 |    8 | magic `b"STRATIDX"`                                                  |
//! |      8 |    4 | format version (u32) = 2                                             |
//! |     12 |    4 | header length (u32) = 216                                            |
//! |     16 |    8 | `first_position` (u64): global position of the segment's first event |
//! |     24 |    8 | `event_count` (u64): number of events in the segment (may be 0)      |
//! |     32 |    8 | `segment_len` (u64): byte length of the sealed segment file          |
//! |     40 |    8 | `file_len` (u64): byte length of this index file                     |
//! |     48 |  160 | section table: 10 entries of 16 bytes (`start` u64, `count` u64)     |
//! |    208 |    4 | body CRC32 (u32) of bytes `216..file_len`                            |
//! |    212 |    4 | header CRC32 (u32) of bytes `0..212`                                 |
//!
//! ## Section table
//!
//! Entry `k` is at offset `48 + 16 * k`: `start` (u64, absolute offset, a multiple of 8) then
//! `count` (u64). Sections appear in table order, without overlap, all inside `216..file_len`;
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
//! | 9 |      192 | correlation postings | entries                | `count * 16`      |
//!
//! ## Section records (offsets relative to the record)
//!
//! **Frame offsets** (8 bytes; record `i` is event `first_position + i`; each `< segment_len`,
//! or `u64::MAX` ([`NO_FRAME`]) for a position that has no frame in the segment, which only a
//! version-2 segment (gaps allowed) can have; the others strictly increasing):
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
//! **Correlation postings** (16 bytes each; sorted by `(key, position)`): the postings of the
//! correlation index, keys as defined in [`crate::correlation`] (a flow's correlation id, a
//! causation id, or the own id of an event that carries either field):
//!
//! | offset | size | field                         |
//! |-------:|-----:|-------------------------------|
//! |      0 |    8 | correlation-index key (u64)   |
//! |      8 |    8 | global position (u64)         |
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

/// First 8 bytes of every index file.
pub const INDEX_MAGIC: [u8; 8] = *b"STRATIDX";
/// The format version this code writes and reads.
pub const INDEX_FORMAT_VERSION: u32 = 2;
/// The same layout, written for a segment a scavenge rewrote when stream entries (and their id
/// entries) name positions without a frame: events removed whose stream head or event id is
/// kept. Read like version 2; a version-2-only reader refuses it (it would take those entries
/// for damage) and rebuilds the index from the segment.
pub const INDEX_FORMAT_VERSION_REMOVED: u32 = 3;
/// The previous format version (no correlation postings): opened as stale, then rebuilt.
pub const INDEX_FORMAT_VERSION_STALE: u32 = 1;
/// Length of the fixed header of a version-2 index file.
pub const INDEX_HEADER_LEN: usize = 216;

pub(super) const OFF_MAGIC: usize = 0;
pub(super) const OFF_VERSION: usize = 8;
pub(super) const OFF_HEADER_LEN: usize = 12;
pub(super) const OFF_FIRST_POSITION: usize = 16;
pub(super) const OFF_EVENT_COUNT: usize = 24;
pub(super) const OFF_SEGMENT_LEN: usize = 32;
pub(super) const OFF_FILE_LEN: usize = 40;
pub(super) const OFF_SECTIONS: usize = 48;
pub(super) const OFF_BODY_CRC: usize = 208;
pub(super) const OFF_HEADER_CRC: usize = 212;

pub(super) const SEC_OFFSETS: usize = 0;
pub(super) const SEC_STREAMS: usize = 1;
pub(super) const SEC_IDS: usize = 2;
pub(super) const SEC_CATEGORIES: usize = 3;
pub(super) const SEC_TYPES: usize = 4;
pub(super) const SEC_CREATED_OFFSETS: usize = 5;
pub(super) const SEC_CREATED_BLOB: usize = 6;
pub(super) const SEC_STREAM_BLOOM: usize = 7;
pub(super) const SEC_ID_BLOOM: usize = 8;
pub(super) const SEC_CORRELATIONS: usize = 9;
pub(super) const SECTION_COUNT: usize = 10;

pub(super) const SECTION_NAMES: [&str; SECTION_COUNT] = [
    "frame offsets",
    "stream entries",
    "id entries",
    "category postings",
    "type postings",
    "created offsets",
    "created blob",
    "stream bloom",
    "id bloom",
    "correlation postings",
];

pub(super) const OFFSET_SIZE: usize = 8;
pub(super) const STREAM_ENTRY_SIZE: usize = 24;
pub(super) const ID_ENTRY_SIZE: usize = 32;
pub(super) const POSTING_SIZE: usize = 16;

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

/// The key under which `(stream_hash, id)` is stored in the id bloom filter:
/// `stream_hash ^ xxh3_64(id.to_le_bytes())`. Part of the on-disk format.
pub fn id_bloom_key(stream_hash: u64, id: u128) -> u64 {
    stream_hash ^ xxhash_rust::xxh3::xxh3_64(&id.to_le_bytes())
}

pub(super) fn put_u32(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

pub(super) fn put_u64(buf: &mut [u8], at: usize, v: u64) {
    buf[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Reads a u32 at `at`. Callers guarantee `at + 4 <= buf.len()` (validated at open).
pub(crate) fn get_u32(buf: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&buf[at..at + 4]);
    u32::from_le_bytes(a)
}

/// Reads a u64 at `at`. Callers guarantee `at + 8 <= buf.len()` (validated at open).
pub(crate) fn get_u64(buf: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&buf[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Reads a u128 at `at`. Callers guarantee `at + 16 <= buf.len()` (validated at open).
pub(crate) fn get_u128(buf: &[u8], at: usize) -> u128 {
    let mut a = [0u8; 16];
    a.copy_from_slice(&buf[at..at + 16]);
    u128::from_le_bytes(a)
}

/// Pads `buf` with zeros to a multiple of 8 bytes.
pub(super) fn align8(buf: &mut Vec<u8>) {
    buf.resize(buf.len().next_multiple_of(8), 0);
}
/// The frame offset recorded for a position without a frame in its segment (a gap of a
/// version-2 segment; in an index rebuilt in memory, also a position lost in damage).
pub const NO_FRAME: u64 = u64::MAX;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index_file::fixtures::sample_input;
    use crate::index_file::write::encode;

    #[test]
    fn layout_matches_documented_offsets() {
        const _: () = assert!(OFF_SECTIONS + SECTION_COUNT * 16 == OFF_BODY_CRC);
        const _: () = assert!(OFF_HEADER_CRC + 4 == INDEX_HEADER_LEN);
        let b = encode(sample_input()).expect("encode");
        assert_eq!(&b[0..8], b"STRATIDX");
        assert_eq!(get_u32(&b, 8), 2);
        assert_eq!(get_u32(&b, 12), 216);
        assert_eq!(get_u64(&b, 16), 100);
        assert_eq!(get_u64(&b, 24), 10);
        assert_eq!(get_u64(&b, 32), 1064);
        assert_eq!(get_u64(&b, 40), b.len() as u64);
        assert_eq!(get_u32(&b, 208), crc32fast::hash(&b[216..]));
        assert_eq!(get_u32(&b, 212), crc32fast::hash(&b[..212]));
        // Section k: start at 48 + 16k, count at 56 + 16k; contiguous up to 8-byte padding.
        let sizes = |k: usize, count: usize| match k {
            0 => count * 8,
            1 => count * 24,
            2 => count * 32,
            3 | 4 | 9 => count * 16,
            5 => (count + 1) * 8,
            _ => count,
        };
        let mut expected_start = 216;
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
}
