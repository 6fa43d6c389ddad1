//! Opening an index file: [`SegmentIndex::open`] maps it and validates the header and the
//! section table, so that no later query can read outside the map.

use std::fs::File;
use std::path::Path;

use memmap2::Mmap;

use crate::bloom::BloomRef;
use crate::error::{Error, Result};

use super::format::*;
use super::read::{IndexBytes, Section, SegmentIndex};

/// True when the file at `path` is an index file of the stale format version 1 (header magic
/// and version only): derived data that the store rebuilds on open, not damage.
pub(crate) fn is_stale_version(path: &Path) -> bool {
    let mut head = [0u8; 12];
    match File::open(path).and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head)) {
        Ok(()) => {
            head[OFF_MAGIC..OFF_MAGIC + 8] == INDEX_MAGIC
                && get_u32(&head, OFF_VERSION) == INDEX_FORMAT_VERSION_STALE
        }
        Err(_) => false,
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
        Self::validate(
            path,
            IndexBytes::Map(map),
            expected_first_position,
            expected_segment_len,
        )
    }

    /// An index held in memory (`bytes` as [`crate::index_file::encode`] makes them), validated
    /// like a file by [`SegmentIndex::open`]; `path` is the name errors use. For the index of a
    /// damaged segment, which is rebuilt at every open and never written.
    pub(crate) fn from_bytes(
        path: &Path,
        bytes: Vec<u8>,
        expected_first_position: u64,
        expected_segment_len: u64,
    ) -> Result<SegmentIndex> {
        Self::validate(
            path,
            IndexBytes::Heap(bytes),
            expected_first_position,
            expected_segment_len,
        )
    }

    fn validate(
        path: &Path,
        map: IndexBytes,
        expected_first_position: u64,
        expected_segment_len: u64,
    ) -> Result<SegmentIndex> {
        let corrupt =
            |offset: usize, detail: String| Error::corruption(path, offset as u64, detail);
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
        if version == INDEX_FORMAT_VERSION_STALE {
            return Err(corrupt(
                OFF_VERSION,
                format!(
                    "stale index format version {version} (no correlation postings; this \
                     version writes {INDEX_FORMAT_VERSION}): rebuilt from its segment on open"
                ),
            ));
        }
        if version != INDEX_FORMAT_VERSION && version != INDEX_FORMAT_VERSION_REMOVED {
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
                SEC_CATEGORIES | SEC_TYPES | SEC_CORRELATIONS => count_us.checked_mul(POSTING_SIZE),
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index_file::fixtures::{corruption_detail, fix_crcs, write_sample};

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
        put_u32(&mut b, OFF_VERSION, 4);
        fix_crcs(&mut b);
        std::fs::write(&path, &b).expect("write");
        let d = corruption_detail(SegmentIndex::open(&path, 100, 1064));
        assert!(d.contains("unsupported format version 4"), "{d}");

        // A version-1 file is named stale (the store rebuilds it from its segment).
        let mut b = bytes.clone();
        put_u32(&mut b, OFF_VERSION, 1);
        fix_crcs(&mut b);
        std::fs::write(&path, &b).expect("write");
        let d = corruption_detail(SegmentIndex::open(&path, 100, 1064));
        assert!(d.contains("stale index format version 1"), "{d}");

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
}
