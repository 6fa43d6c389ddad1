//! Test fixtures shared by the unit tests of the index file modules: a sample input, a written
//! sample file, CRC repair after tampering.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

use super::format::*;
use super::{write_index, IndexInput, SegmentIndex};

pub(super) fn sample_input() -> IndexInput {
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
        correlations: (0..10)
            .filter(|i| i % 4 != 3)
            .map(|i| Posting {
                hash: 0xc0 + i % 2,
                position: first + i,
            })
            .collect(),
        created,
    }
}

pub(super) fn write_sample(dir: &Path) -> (PathBuf, Vec<u8>) {
    let path = dir.join("seg.idx");
    write_index(&path, sample_input()).expect("write");
    let bytes = std::fs::read(&path).expect("read");
    (path, bytes)
}

/// Recomputes both CRCs of a (possibly tampered) file image.
pub(super) fn fix_crcs(bytes: &mut [u8]) {
    if bytes.len() >= INDEX_HEADER_LEN {
        let body = crc32fast::hash(&bytes[INDEX_HEADER_LEN..]);
        put_u32(bytes, OFF_BODY_CRC, body);
        let header = crc32fast::hash(&bytes[..OFF_HEADER_CRC]);
        put_u32(bytes, OFF_HEADER_CRC, header);
    }
}

pub(super) fn corruption_detail(r: Result<SegmentIndex>) -> String {
    match r {
        Err(Error::Corruption { detail, .. }) => detail,
        other => panic!("expected corruption, got {other:?}"),
    }
}
