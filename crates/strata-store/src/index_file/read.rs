//! [`SegmentIndex`]: a memory-mapped, validated index file, and its queries (binary searches
//! over the sorted sections). Every query is bounded by the section counts [`SegmentIndex::open`]
//! validated: on a damaged body it may answer wrongly or with an error, never panic.

use std::ops::Range;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use crate::bloom::BloomRef;
use crate::error::{Error, Result};

use super::format::*;

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

/// The indices `lo..hi` of `0..n` whose `key` lies in `from..=to`, for keys ascending over
/// `0..n`. With keys out of order (a damaged file) some range inside `0..n`: never a panic.
fn key_range<K: Ord>(n: usize, key: impl Fn(usize) -> K, from: K, to: K) -> Range<usize> {
    let lo = partition_point(n, |i| key(i) < from);
    let hi = partition_point(n, |i| key(i) <= to);
    lo..hi.max(lo)
}

/// A validated section: `start..start + len` lies inside the mapped file.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Section {
    /// Absolute byte offset of the section.
    pub(super) start: usize,
    /// The `count` field of the section table (entries, names or bytes: see the format table).
    pub(super) count: usize,
    /// Byte length of the section.
    pub(super) len: usize,
}

/// The bytes of an index: a read-only map of its file, or (for an index rebuilt over a damaged
/// segment, which is never written to disk) a buffer in memory.
pub(super) enum IndexBytes {
    /// A mapped index file.
    Map(Mmap),
    /// An index built in memory.
    Heap(Vec<u8>),
}

impl std::ops::Deref for IndexBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            IndexBytes::Map(m) => m,
            IndexBytes::Heap(v) => v,
        }
    }
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
    pub(super) path: PathBuf,
    pub(super) map: IndexBytes,
    pub(super) first_position: u64,
    pub(super) event_count: u64,
    pub(super) segment_len: u64,
    pub(super) body_crc: u32,
    pub(super) sections: [Section; SECTION_COUNT],
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
    /// `first_position..first_position + event_count`; [`NO_FRAME`] for a position without a
    /// frame in the segment (removed, or lost in damage).
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
        let key = |i| {
            let e = self.stream_at(i);
            (e.hash, e.revision)
        };
        key_range(
            self.sections[SEC_STREAMS].count,
            key,
            (hash, from),
            (hash, to),
        )
        .map(|i| self.stream_at(i))
        .collect()
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
        let key = |i| {
            let e = self.id_at(i);
            (e.stream_hash, e.id)
        };
        let id = (stream_hash, id);
        key_range(self.sections[SEC_IDS].count, key, id, id)
            .map(|i| self.id_at(i).revision)
            .collect()
    }

    /// Positions in `from..=to`, ascending, of the events whose category hashes to `hash`.
    pub fn category_positions(&self, hash: u64, from: u64, to: u64) -> Vec<u64> {
        self.postings(SEC_CATEGORIES, hash, from, to)
    }

    /// Positions in `from..=to`, ascending, of the events whose type hashes to `hash`.
    pub fn type_positions(&self, hash: u64, from: u64, to: u64) -> Vec<u64> {
        self.postings(SEC_TYPES, hash, from, to)
    }

    /// Positions in `from..=to`, ascending, of the events with the correlation-index key `key`
    /// (see [`crate::correlation`]).
    pub fn correlation_positions(&self, key: u64, from: u64, to: u64) -> Vec<u64> {
        self.postings(SEC_CORRELATIONS, key, from, to)
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

    /// Every stream entry, in file order (for a repair's report of what was lost).
    pub(crate) fn every_stream_entry(&self) -> impl Iterator<Item = StreamEntry> + '_ {
        (0..self.sections[SEC_STREAMS].count).map(|i| self.stream_at(i))
    }

    /// Every id entry, in file order (for a repair's report of what was lost).
    pub(crate) fn every_id_entry(&self) -> impl Iterator<Item = IdEntry> + '_ {
        (0..self.sections[SEC_IDS].count).map(|i| self.id_at(i))
    }

    // ---- helpers of the module: all indices are bounded by validated section counts ----

    pub(super) fn corrupt(&self, offset: usize, detail: String) -> Error {
        Error::corruption(&self.path, offset as u64, detail)
    }

    pub(super) fn section_bytes(&self, sec: usize) -> &[u8] {
        let s = self.sections[sec];
        &self.map[s.start..s.start + s.len]
    }

    pub(super) fn stream_bloom(&self) -> Option<BloomRef<'_>> {
        BloomRef::parse(self.section_bytes(SEC_STREAM_BLOOM))
    }

    pub(super) fn id_bloom(&self) -> Option<BloomRef<'_>> {
        BloomRef::parse(self.section_bytes(SEC_ID_BLOOM))
    }

    /// Requires `i < sections[SEC_OFFSETS].count`.
    pub(super) fn offset_at(&self, i: usize) -> u64 {
        get_u64(self.section_bytes(SEC_OFFSETS), i * OFFSET_SIZE)
    }

    /// Requires `i < sections[SEC_STREAMS].count`.
    pub(super) fn stream_at(&self, i: usize) -> StreamEntry {
        let b = self.section_bytes(SEC_STREAMS);
        let at = i * STREAM_ENTRY_SIZE;
        StreamEntry {
            hash: get_u64(b, at),
            revision: get_u64(b, at + 8),
            position: get_u64(b, at + 16),
        }
    }

    /// Requires `i < sections[SEC_IDS].count`.
    pub(super) fn id_at(&self, i: usize) -> IdEntry {
        let b = self.section_bytes(SEC_IDS);
        let at = i * ID_ENTRY_SIZE;
        IdEntry {
            stream_hash: get_u64(b, at),
            id: get_u128(b, at + 8),
            revision: get_u64(b, at + 24),
        }
    }

    /// Requires `i < sections[sec].count` and `sec` a posting section.
    pub(super) fn posting_at(&self, sec: usize, i: usize) -> Posting {
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
        let key = |i| {
            let p = self.posting_at(sec, i);
            (p.hash, p.position)
        };
        key_range(self.sections[sec].count, key, (hash, from), (hash, to))
            .map(|i| self.posting_at(sec, i).position)
            .collect()
    }

    /// The raw bytes of created name `i`, bounds-checked against the blob.
    pub(super) fn created_bytes(&self, i: usize) -> Result<&[u8]> {
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
    use crate::index_file::fixtures::{fix_crcs, sample_input, write_sample};
    use crate::index_file::write::encode;
    use crate::index_file::{write_index, IndexInput};
    use proptest::prelude::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn segment_index_is_send_and_sync() {
        assert_send_sync::<SegmentIndex>();
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
        // Correlation postings: i % 4 != 3, key 0xc0 + i % 2.
        assert_eq!(
            idx.correlation_positions(0xc1, 0, u64::MAX),
            vec![101, 105, 109]
        );
        assert_eq!(
            idx.correlation_positions(0xc0, 102, 108),
            vec![102, 104, 106, 108]
        );
        assert_eq!(idx.created_count(), 4);
        let names: Vec<&str> = (0..4).map(|i| idx.created_name(i).expect("name")).collect();
        assert_eq!(names, vec!["cart-9", "inventory", "order-1", "order-2"]);
        assert!(matches!(idx.created_name(4), Err(Error::Corruption { .. })));
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
        assert!(idx.correlation_positions(1, 0, u64::MAX).is_empty());
        assert_eq!(idx.created_count(), 0);
        assert_eq!(idx.created_lower_bound("a", true).expect("lb"), 0);
        assert!(idx.created_name(0).is_err());
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
            links in proptest::collection::vec((0u64..4, 0..gaps.len().max(1) as u64), 0..40),
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
                correlations: links.into_iter().filter(|c| keep(c.1)).map(|(hash, rel)| Posting { hash, position: first + rel }).collect(),
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
                    prop_assert_eq!(idx.correlation_positions(hash, from, to), Model::postings(&model.input.correlations, hash, from, to));
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
                    let _ = idx.correlation_positions(h, 0, u64::MAX);
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
