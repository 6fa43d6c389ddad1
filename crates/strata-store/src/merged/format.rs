//! The on-disk format (version 1) of a merged index file: the constants of its layout.
//!
//! A merged index file lists, for a range `first_position..end_position` of the log, the
//! stream entries `(stream hash, revision, position)` and the id entries
//! `(stream hash, event id, revision)` of every event in the range, with a bloom filter over
//! each key set. It holds positions and revisions, never frame offsets: the per-segment index
//! maps a position to its frame, so rewriting a segment (a scavenge, a repair) that keeps its
//! events' positions leaves a merged file valid. Records use the layouts of the per-segment
//! index file ([`crate::index_file`]); integers are little-endian; CRC32 is `crc32fast`.
//!
//! ## Header (120 bytes)
//!
//! | offset | size | field                                                        |
//! |-------:|-----:|--------------------------------------------------------------|
//! |      0 |    8 | magic `b"STRATMIX"`                                          |
//! |      8 |    4 | format version (u32) = 1                                     |
//! |     12 |    4 | header length (u32) = 120                                    |
//! |     16 |    4 | level (u32): 1 merges segments, `k + 1` merges level-`k` files |
//! |     20 |    4 | reserved, 0                                                  |
//! |     24 |    8 | `first_position` (u64): first position of the range          |
//! |     32 |    8 | `end_position` (u64): one past the last position of the range |
//! |     40 |    8 | `file_len` (u64): byte length of this file                   |
//! |     48 |   64 | section table: 4 entries of 16 bytes (`start` u64, `count` u64) |
//! |    112 |    4 | body CRC32 (u32) of bytes `120..file_len`                    |
//! |    116 |    4 | header CRC32 (u32) of bytes `0..116`                         |
//!
//! ## Sections (in table order, each starting at a multiple of 8, gaps zero-filled)
//!
//! | k | section        | `count` is | byte size    | records                                   |
//! |--:|----------------|------------|--------------|-------------------------------------------|
//! | 0 | stream entries | entries    | `count * 24` | hash, revision, position; sorted          |
//! | 1 | id entries     | entries    | `count * 32` | stream hash, id (u128), revision; sorted  |
//! | 2 | stream bloom   | bytes      | `count`      | [`crate::bloom`] over the stream hashes   |
//! | 3 | id bloom       | bytes      | `count`      | bloom over `id_bloom_key(hash, id)`       |
//!
//! Stream entries are sorted by `(hash, revision, position)`, id entries by
//! `(stream hash, id, revision)`; every position lies in `first_position..end_position`.

/// First 8 bytes of every merged index file.
pub const MERGED_MAGIC: [u8; 8] = *b"STRATMIX";
/// The format version this code writes and reads.
pub const MERGED_FORMAT_VERSION: u32 = 1;
/// Length of the fixed header.
pub const MERGED_HEADER_LEN: usize = 120;

pub(super) const OFF_VERSION: usize = 8;
pub(super) const OFF_HEADER_LEN: usize = 12;
pub(super) const OFF_LEVEL: usize = 16;
pub(super) const OFF_FIRST: usize = 24;
pub(super) const OFF_END: usize = 32;
pub(super) const OFF_FILE_LEN: usize = 40;
pub(super) const OFF_SECTIONS: usize = 48;
pub(super) const OFF_BODY_CRC: usize = 112;
pub(super) const OFF_HEADER_CRC: usize = 116;

pub(super) const SEC_STREAMS: usize = 0;
pub(super) const SEC_IDS: usize = 1;
pub(super) const SEC_STREAM_BLOOM: usize = 2;
pub(super) const SEC_ID_BLOOM: usize = 3;
pub(super) const SECTION_COUNT: usize = 4;

pub(super) const STREAM_ENTRY_SIZE: usize = 24;
pub(super) const ID_ENTRY_SIZE: usize = 32;

/// Byte size of section `k` holding `count` (entries or bytes).
pub(super) fn section_size(k: usize, count: u64) -> Option<u64> {
    match k {
        SEC_STREAMS => count.checked_mul(STREAM_ENTRY_SIZE as u64),
        SEC_IDS => count.checked_mul(ID_ENTRY_SIZE as u64),
        _ => Some(count),
    }
}

/// The file name of the merged index of `first..end`: `<first>-<end>.midx`, both zero-padded
/// to 20 digits (name order is log order).
pub(crate) fn merged_file_name(first: u64, end: u64) -> String {
    format!("{first:020}-{end:020}.midx")
}

/// `(first, end)` of a merged index file name, `None` for any other name.
pub(crate) fn parse_merged_file_name(name: &str) -> Option<(u64, u64)> {
    let stem = name.strip_suffix(".midx")?;
    let (a, b) = stem.split_once('-')?;
    let digits = |s: &str| s.len() == 20 && s.bytes().all(|c| c.is_ascii_digit());
    if !digits(a) || !digits(b) {
        return None;
    }
    let (first, end) = (a.parse().ok()?, b.parse().ok()?);
    (first < end).then_some((first, end))
}

pub(super) use crate::index_file::format::{get_u128, get_u32, get_u64};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sort_in_log_order() {
        assert_eq!(
            merged_file_name(0, 1234),
            "00000000000000000000-00000000000000001234.midx"
        );
        assert_eq!(
            parse_merged_file_name(&merged_file_name(7, 99)),
            Some((7, 99))
        );
        assert_eq!(parse_merged_file_name(&merged_file_name(9, 9)), None);
        assert_eq!(parse_merged_file_name("00000000000000000000.idx"), None);
        assert_eq!(parse_merged_file_name("1-2.midx"), None);
        assert!(merged_file_name(9, 10) < merged_file_name(10, 20));
        const _: () = assert!(OFF_SECTIONS + SECTION_COUNT * 16 == OFF_BODY_CRC);
        const _: () = assert!(OFF_HEADER_CRC + 4 == MERGED_HEADER_LEN);
    }
}
