//! The full check of an index file's body ([`SegmentIndex::verify`]): its CRC32, then the order,
//! range and bloom membership of every entry, and the created-name table.

use crate::error::Result;

use super::format::*;
use super::read::SegmentIndex;

impl SegmentIndex {
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
    /// Any failure is an [`crate::Error::Corruption`] with the file and the offset of the first
    /// offending structure.
    pub fn verify(&self) -> Result<()> {
        self.verify_checksum()?;
        let bytes: &[u8] = &self.map;
        let end = self.first_position + self.event_count;
        let in_range = |p: u64| (self.first_position..end).contains(&p);

        let s = self.sections[SEC_OFFSETS];
        let mut prev: Option<u64> = None;
        for i in 0..s.count {
            let o = self.offset_at(i);
            if o == NO_FRAME {
                continue;
            }
            if o >= self.segment_len || prev.is_some_and(|p| p >= o) {
                return Err(self.corrupt(
                    s.start + i * OFFSET_SIZE,
                    format!("frame offset {o} out of order or beyond the segment"),
                ));
            }
            prev = Some(o);
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

        for sec in [SEC_CATEGORIES, SEC_TYPES, SEC_CORRELATIONS] {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::index_file::fixtures::{fix_crcs, write_sample};

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
}
