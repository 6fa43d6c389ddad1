//! The removed-events file of a scavenged segment (`<first>.rmv`): what its index keeps of
//! events that no longer have a frame (stream entries, id entries) and the created names of the
//! segments it was made from, so that an index rebuilt from the segment (missing or damaged
//! index file, `strata repair`) keeps them too: the index stays derived data.
//!
//! Layout (little-endian): magic `b"STRATRMV"`, version (u32) = 1, reserved (u32) = 0, then
//! the counts of stream entries, id entries and names (u64 each); the stream entries (hash,
//! revision, position: u64 each), the id entries (stream hash u64, id u128, revision u64), the
//! names (u32 length, UTF-8 bytes); last, the CRC32 (u32) of every byte before it. A file that
//! fails its checks is ignored (the rebuilt index then lacks those entries, as without it).

use std::path::{Path, PathBuf};

use crate::index_file::{IdEntry, IndexInput, StreamEntry, NO_FRAME};

const MAGIC: &[u8; 8] = b"STRATRMV";
const VERSION: u32 = 1;
const HEADER_LEN: usize = 40;

/// What a scavenged segment's index keeps beyond its frames.
#[derive(Default, Debug, PartialEq)]
pub(crate) struct Retained {
    pub streams: Vec<StreamEntry>,
    pub ids: Vec<IdEntry>,
    pub created: Vec<String>,
}

/// The removed-events file of the segment file `seg` (`<first>.seg` → `<first>.rmv`).
pub(crate) fn path_of(seg: &Path) -> PathBuf {
    seg.with_extension("rmv")
}

/// The bytes of a removed-events file holding `r`.
pub(crate) fn encode(r: &Retained) -> Vec<u8> {
    let mut b = Vec::with_capacity(HEADER_LEN + r.streams.len() * 24 + r.ids.len() * 32 + 4);
    b.extend_from_slice(MAGIC);
    b.extend_from_slice(&VERSION.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    for n in [r.streams.len(), r.ids.len(), r.created.len()] {
        b.extend_from_slice(&(n as u64).to_le_bytes());
    }
    for e in &r.streams {
        for v in [e.hash, e.revision, e.position] {
            b.extend_from_slice(&v.to_le_bytes());
        }
    }
    for e in &r.ids {
        b.extend_from_slice(&e.stream_hash.to_le_bytes());
        b.extend_from_slice(&e.id.to_le_bytes());
        b.extend_from_slice(&e.revision.to_le_bytes());
    }
    for name in &r.created {
        b.extend_from_slice(&(name.len() as u32).to_le_bytes());
        b.extend_from_slice(name.as_bytes());
    }
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

/// Takes `n` bytes from the front of `b`.
fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if b.len() < n {
        return None;
    }
    let (head, rest) = b.split_at(n);
    *b = rest;
    Some(head)
}

fn u64_of(b: &mut &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(take(b, 8)?.try_into().ok()?))
}

/// Decodes a removed-events file; `None` when it fails any check.
pub(crate) fn decode(bytes: &[u8]) -> Option<Retained> {
    let (body, crc) = bytes.split_at_checked(bytes.len().checked_sub(4)?)?;
    if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().ok()?) {
        return None;
    }
    let mut b = body;
    if take(&mut b, 8)? != MAGIC || take(&mut b, 4)? != VERSION.to_le_bytes() {
        return None;
    }
    take(&mut b, 4)?;
    let (ns, ni, nn) = (u64_of(&mut b)?, u64_of(&mut b)?, u64_of(&mut b)?);
    // Counts are untrusted: never allocate more than the bytes can hold.
    let mut r = Retained::default();
    for _ in 0..ns.min(b.len() as u64 / 24) {
        let (hash, revision, position) = (u64_of(&mut b)?, u64_of(&mut b)?, u64_of(&mut b)?);
        r.streams.push(StreamEntry {
            hash,
            revision,
            position,
        });
    }
    for _ in 0..ni.min(b.len() as u64 / 32) {
        let stream_hash = u64_of(&mut b)?;
        let id = u128::from_le_bytes(take(&mut b, 16)?.try_into().ok()?);
        let revision = u64_of(&mut b)?;
        r.ids.push(IdEntry {
            stream_hash,
            id,
            revision,
        });
    }
    for _ in 0..nn.min(b.len() as u64 / 4) {
        let len = u32::from_le_bytes(take(&mut b, 4)?.try_into().ok()?) as usize;
        r.created
            .push(std::str::from_utf8(take(&mut b, len)?).ok()?.to_owned());
    }
    let complete = r.streams.len() as u64 == ns && r.ids.len() as u64 == ni;
    (complete && r.created.len() as u64 == nn && b.is_empty()).then_some(r)
}

/// Adds the entries of the removed-events file of the segment `seg` (if any, and intact) to
/// the index input of its rebuild: stream entries only for positions without a frame in
/// `input`, and their id entries.
pub(crate) fn apply(seg: &Path, input: &mut IndexInput) {
    // A swap that committed (its `.seg.scv` renamed into place) but did not finish, seen by a
    // read-only open (which changes nothing): the segment's removed-events file is still under
    // its temporary name, and the one under the final name (if any) is the old segment's.
    let suffix = super::rewrite::TMP_SUFFIX;
    let pending = PathBuf::from(format!("{}{suffix}", path_of(seg).display()));
    let seg_tmp = PathBuf::from(format!("{}{suffix}", seg.display()));
    let path = if pending.exists() && !seg_tmp.exists() {
        pending
    } else {
        path_of(seg)
    };
    let Ok(bytes) = std::fs::read(path) else {
        return;
    };
    let Some(r) = decode(&bytes) else {
        return;
    };
    let first = input.first_position;
    let frameless = |p: u64| {
        p.checked_sub(first)
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| input.offsets.get(i))
            .is_some_and(|&o| o == NO_FRAME)
    };
    let streams: Vec<StreamEntry> = r
        .streams
        .into_iter()
        .filter(|e| frameless(e.position))
        .collect();
    let kept: std::collections::HashSet<(u64, u64)> =
        streams.iter().map(|e| (e.hash, e.revision)).collect();
    input.streams.extend(streams);
    input.ids.extend(
        r.ids
            .into_iter()
            .filter(|e| kept.contains(&(e.stream_hash, e.revision))),
    );
    input.created.extend(r.created);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Retained {
        Retained {
            streams: vec![StreamEntry {
                hash: 1,
                revision: 2,
                position: 3,
            }],
            ids: vec![IdEntry {
                stream_hash: 1,
                id: 0xdead_beef,
                revision: 2,
            }],
            created: vec!["a-1".into(), "ü".into()],
        }
    }

    #[test]
    fn round_trip_and_every_damage_is_refused() {
        let b = encode(&sample());
        assert_eq!(decode(&b), Some(sample()));
        assert_eq!(
            decode(&encode(&Retained::default())),
            Some(Retained::default())
        );
        for i in 0..b.len() {
            let mut d = b.clone();
            d[i] ^= 0x10;
            assert_eq!(decode(&d), None, "byte {i}");
        }
        for cut in 0..b.len() {
            assert_eq!(decode(&b[..cut]), None, "cut {cut}");
        }
    }
}
