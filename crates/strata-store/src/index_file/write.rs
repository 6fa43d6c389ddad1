//! Writing an index file: [`IndexInput`] (the segment's entries, any order), its checks, the
//! encoder (sections sorted, 8-aligned, both CRCs) and the atomic [`write_index`].
//!
//! Invariant: a file appears under its final name only complete and fsynced (temporary file,
//! fsync, rename, directory fsync); after an error the final name is untouched.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::bloom::{BloomBuilder, DEFAULT_BITS_PER_KEY};
use crate::error::{Error, Result};

use super::format::*;

/// Everything needed to build the index of one sealed segment.
///
/// Requirements (checked by [`write_index`], which answers [`Error::InvalidInput`] otherwise):
/// `offsets` each `< segment_len` or [`NO_FRAME`], the others strictly increasing; every position in `streams`,
/// `categories`, `types` and `correlations` within `first_position..first_position + offsets.len()`.
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
    /// Correlation postings (keys of [`crate::correlation`]), any order; sorted by
    /// `(hash, position)` by the builder.
    pub correlations: Vec<Posting>,
    /// Names of the streams whose revision 0 lies in this segment; sorted (byte order) and
    /// de-duplicated by the builder.
    pub created: Vec<String>,
}

/// Checks the preconditions documented on [`IndexInput`].
fn check_input(input: &IndexInput) -> Result<()> {
    let mut prev: Option<u64> = None;
    for (i, &o) in input.offsets.iter().enumerate() {
        if o == NO_FRAME {
            continue;
        }
        if prev.is_some_and(|p| p >= o) {
            return Err(Error::invalid(
                format!("offsets[{i}]"),
                "frame offsets must be strictly increasing",
            ));
        }
        if o >= input.segment_len {
            return Err(Error::invalid(
                format!("offsets[{i}]"),
                "frame offset beyond the segment length",
            ));
        }
        prev = Some(o);
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
    for (field, postings) in [
        ("categories", &input.categories),
        ("types", &input.types),
        ("correlations", &input.correlations),
    ] {
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
pub(crate) fn encode(mut input: IndexInput) -> Result<Vec<u8>> {
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
    input
        .correlations
        .sort_unstable_by_key(|p| (p.hash, p.position));
    input.created.sort_unstable();
    input.created.dedup();
    let frameless = |p: u64| {
        p.checked_sub(input.first_position)
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| input.offsets.get(i))
            .is_some_and(|&o| o == NO_FRAME)
    };
    let version = if input.streams.iter().any(|e| frameless(e.position)) {
        INDEX_FORMAT_VERSION_REMOVED
    } else {
        INDEX_FORMAT_VERSION
    };

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
    // Correlation postings.
    align8(&mut buf);
    table[SEC_CORRELATIONS] = (buf.len() as u64, input.correlations.len() as u64);
    for p in &input.correlations {
        buf.extend_from_slice(&p.hash.to_le_bytes());
        buf.extend_from_slice(&p.position.to_le_bytes());
    }
    align8(&mut buf);

    // Header.
    let file_len = buf.len() as u64;
    let body_crc = crc32fast::hash(&buf[INDEX_HEADER_LEN..]);
    buf[OFF_MAGIC..OFF_MAGIC + 8].copy_from_slice(&INDEX_MAGIC);
    put_u32(&mut buf, OFF_VERSION, version);
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
/// [`IndexInput`], with [`Error::DiskFull`] when the disk is out of space (nothing of the new
/// index is left), and with [`Error::Io`] on any other I/O failure.
pub fn write_index(path: &Path, input: IndexInput) -> Result<()> {
    write_index_via(path, input, &crate::file_io::StdFileIo)
}

/// [`write_index`] with the temporary file written through `io` (so that tests can make it fail).
pub fn write_index_via(
    path: &Path,
    input: IndexInput,
    io: &dyn crate::file_io::FileIo,
) -> Result<()> {
    let bytes = encode(input)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let result = write_and_rename(io, &tmp, path, &bytes);
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

fn write_and_rename(
    io: &dyn crate::file_io::FileIo,
    tmp: &Path,
    path: &Path,
    bytes: &[u8],
) -> Result<()> {
    let disk_error = |p: &Path, e: std::io::Error| {
        if crate::error::is_out_of_space(&e) {
            Error::DiskFull {
                path: p.to_owned(),
                source: e,
            }
        } else {
            Error::io(p, e)
        }
    };
    io.write_new_file(tmp, bytes)
        .map_err(|e| disk_error(tmp, e))?;
    std::fs::rename(tmp, path).map_err(|e| disk_error(path, e))
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::index_file::fixtures::sample_input;
    use crate::index_file::SegmentIndex;

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
}
