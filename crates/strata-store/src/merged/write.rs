//! Writing a merged index file: a streaming k-way merge of the sorted entries of its inputs
//! (segment indexes or merged files of the level below), in two passes (count, then write), so
//! memory stays bounded by the bloom filters whatever the size of the inputs.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use crate::bloom::{BloomBuilder, DEFAULT_BITS_PER_KEY};
use crate::error::Error;
use crate::file_io::sync_dir;
use crate::index_file::{id_bloom_key, IdEntry, SegmentIndex, StreamEntry};

use super::format::*;
use super::read::MergedIndex;

/// One input of a merge.
pub(crate) enum Source<'a> {
    /// A segment's index, restricted to the positions in `window` (a segment straddling the
    /// merged range contributes only its part). Its id entries carry no position: they are all
    /// taken (a duplicate or an extra candidate costs a lookup a verification, nothing more).
    Segment {
        /// The segment's checked index.
        index: &'a SegmentIndex,
        /// Positions taken.
        window: Range<u64>,
    },
    /// A merged file of the level below, whole.
    Merged(&'a MergedIndex),
}

impl<'a> Source<'a> {
    fn streams(&self) -> Box<dyn Iterator<Item = StreamEntry> + 'a> {
        match *self {
            Source::Segment { index, ref window } => {
                let w = window.clone();
                Box::new(
                    index
                        .every_stream_entry()
                        .filter(move |e| w.contains(&e.position)),
                )
            }
            Source::Merged(m) => Box::new((0..m.stream_count()).map(move |i| m.stream_at(i))),
        }
    }

    fn ids(&self) -> Box<dyn Iterator<Item = IdEntry> + 'a> {
        match *self {
            Source::Segment { index, .. } => Box::new(index.every_id_entry()),
            Source::Merged(m) => Box::new((0..m.id_count()).map(move |i| m.id_at(i))),
        }
    }
}

/// Merges sorted iterators into one sorted iterator (ties in input order).
struct KMerge<'a, T, K: Ord> {
    iters: Vec<Box<dyn Iterator<Item = T> + 'a>>,
    heads: Vec<Option<T>>,
    heap: BinaryHeap<Reverse<(K, usize)>>,
    key: fn(&T) -> K,
}

impl<'a, T: Copy, K: Ord + Copy> KMerge<'a, T, K> {
    fn new(mut iters: Vec<Box<dyn Iterator<Item = T> + 'a>>, key: fn(&T) -> K) -> Self {
        let mut heads = Vec::with_capacity(iters.len());
        let mut heap = BinaryHeap::with_capacity(iters.len());
        for (i, it) in iters.iter_mut().enumerate() {
            let h = it.next();
            if let Some(v) = &h {
                heap.push(Reverse((key(v), i)));
            }
            heads.push(h);
        }
        KMerge {
            iters,
            heads,
            heap,
            key,
        }
    }
}

impl<T: Copy, K: Ord + Copy> Iterator for KMerge<'_, T, K> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        let Reverse((_, i)) = self.heap.pop()?;
        let out = self.heads[i].take()?;
        let next = self.iters[i].next();
        if let Some(v) = &next {
            self.heap.push(Reverse(((self.key)(v), i)));
        }
        self.heads[i] = next;
        Some(out)
    }
}

fn stream_key(e: &StreamEntry) -> (u64, u64, u64) {
    (e.hash, e.revision, e.position)
}

fn id_key(e: &IdEntry) -> (u64, u128, u64) {
    (e.stream_hash, e.id, e.revision)
}

fn merged_streams<'a>(sources: &[Source<'a>]) -> KMerge<'a, StreamEntry, (u64, u64, u64)> {
    KMerge::new(sources.iter().map(Source::streams).collect(), stream_key)
}

/// Id entries in order, exact duplicates dropped.
fn merged_ids<'a>(sources: &[Source<'a>]) -> impl Iterator<Item = IdEntry> + 'a {
    let mut last: Option<(u64, u128, u64)> = None;
    KMerge::new(sources.iter().map(Source::ids).collect(), id_key).filter(move |e| {
        let k = id_key(e);
        let fresh = last != Some(k);
        last = Some(k);
        fresh
    })
}

/// What a merge is asked to write.
pub(crate) struct MergeSpec<'a> {
    /// Directory of the merged files.
    pub dir: &'a Path,
    /// The level of the new file.
    pub level: u32,
    /// The positions it covers (every input entry's position lies in it).
    pub range: Range<u64>,
    /// The inputs, any order.
    pub sources: Vec<Source<'a>>,
}

/// Why a merge stopped without a file.
#[derive(Debug)]
pub(crate) enum MergeError {
    /// `stop` answered true (the store is closing).
    Stopped,
    /// An I/O or format error.
    Failed(Error),
}

impl From<Error> for MergeError {
    fn from(e: Error) -> Self {
        MergeError::Failed(e)
    }
}

/// Writes the merged file of `spec` atomically (temporary file, fsync, rename, directory
/// fsync) and opens it. `stop` is polled now and then: a merge cut short removes its temporary
/// file and answers [`MergeError::Stopped`].
pub(crate) fn write_merged(
    spec: MergeSpec<'_>,
    stop: &dyn Fn() -> bool,
) -> std::result::Result<MergedIndex, MergeError> {
    let name = merged_file_name(spec.range.start, spec.range.end);
    let path = spec.dir.join(&name);
    let tmp = spec.dir.join(format!("{name}.tmp"));
    let r = write_tmp(&spec, &tmp, stop);
    if let Err(e) = r {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    let done = std::fs::rename(&tmp, &path)
        .and_then(|()| sync_dir(spec.dir))
        .map_err(|e| Error::io(&path, e));
    if let Err(e) = done {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.into());
    }
    Ok(MergedIndex::open(&path, spec.range.start, spec.range.end)?)
}

/// Entries between polls of `stop`.
const POLL_EVERY: u64 = 1 << 16;

fn write_tmp(
    spec: &MergeSpec<'_>,
    tmp: &PathBuf,
    stop: &dyn Fn() -> bool,
) -> std::result::Result<(), MergeError> {
    // Pass 1: counts (for the section sizes) and distinct keys (for the bloom sizes).
    let (mut streams, mut hashes, mut last_hash) = (0u64, 0usize, None);
    for e in merged_streams(&spec.sources) {
        if !spec.range.contains(&e.position) {
            return Err(Error::invalid(
                "merge",
                format!("position {} outside {:?}", e.position, spec.range),
            )
            .into());
        }
        streams += 1;
        if last_hash != Some(e.hash) {
            hashes += 1;
            last_hash = Some(e.hash);
        }
        if streams.is_multiple_of(POLL_EVERY) && stop() {
            return Err(MergeError::Stopped);
        }
    }
    let ids = merged_ids(&spec.sources).count() as u64;
    if stop() {
        return Err(MergeError::Stopped);
    }

    // Pass 2: the body, then the header.
    let io = |e| MergeError::Failed(Error::io(tmp, e));
    let file = File::create(tmp).map_err(io)?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let mut crc = crc32fast::Hasher::new();
    let mut at = MERGED_HEADER_LEN as u64;
    w.write_all(&[0u8; MERGED_HEADER_LEN]).map_err(io)?;
    let mut put = |w: &mut BufWriter<File>, bytes: &[u8], at: &mut u64| {
        crc.update(bytes);
        *at += bytes.len() as u64;
        w.write_all(bytes)
    };
    let mut table = [(0u64, 0u64); SECTION_COUNT];

    table[SEC_STREAMS] = (at, streams);
    let mut stream_bloom = BloomBuilder::new(hashes, DEFAULT_BITS_PER_KEY);
    let mut n = 0u64;
    for e in merged_streams(&spec.sources) {
        let mut rec = [0u8; STREAM_ENTRY_SIZE];
        rec[..8].copy_from_slice(&e.hash.to_le_bytes());
        rec[8..16].copy_from_slice(&e.revision.to_le_bytes());
        rec[16..].copy_from_slice(&e.position.to_le_bytes());
        put(&mut w, &rec, &mut at).map_err(io)?;
        stream_bloom.insert(e.hash);
        n += 1;
        if n.is_multiple_of(POLL_EVERY) && stop() {
            return Err(MergeError::Stopped);
        }
    }
    table[SEC_IDS] = (at, ids);
    let mut id_bloom = BloomBuilder::new(ids as usize, DEFAULT_BITS_PER_KEY);
    for e in merged_ids(&spec.sources) {
        let mut rec = [0u8; ID_ENTRY_SIZE];
        rec[..8].copy_from_slice(&e.stream_hash.to_le_bytes());
        rec[8..24].copy_from_slice(&e.id.to_le_bytes());
        rec[24..].copy_from_slice(&e.revision.to_le_bytes());
        put(&mut w, &rec, &mut at).map_err(io)?;
        id_bloom.insert(id_bloom_key(e.stream_hash, e.id));
        n += 1;
        if n.is_multiple_of(POLL_EVERY) && stop() {
            return Err(MergeError::Stopped);
        }
    }
    for (k, bloom) in [(SEC_STREAM_BLOOM, stream_bloom), (SEC_ID_BLOOM, id_bloom)] {
        let bytes = bloom.finish();
        table[k] = (at, bytes.len() as u64);
        put(&mut w, &bytes, &mut at).map_err(io)?;
        let pad = (at.next_multiple_of(8) - at) as usize;
        put(&mut w, &[0u8; 8][..pad], &mut at).map_err(io)?;
    }
    let body_crc = crc.finalize();

    let mut header = [0u8; MERGED_HEADER_LEN];
    header[..8].copy_from_slice(&MERGED_MAGIC);
    header[OFF_VERSION..OFF_VERSION + 4].copy_from_slice(&MERGED_FORMAT_VERSION.to_le_bytes());
    header[OFF_HEADER_LEN..OFF_HEADER_LEN + 4]
        .copy_from_slice(&(MERGED_HEADER_LEN as u32).to_le_bytes());
    header[OFF_LEVEL..OFF_LEVEL + 4].copy_from_slice(&spec.level.to_le_bytes());
    header[OFF_FIRST..OFF_FIRST + 8].copy_from_slice(&spec.range.start.to_le_bytes());
    header[OFF_END..OFF_END + 8].copy_from_slice(&spec.range.end.to_le_bytes());
    header[OFF_FILE_LEN..OFF_FILE_LEN + 8].copy_from_slice(&at.to_le_bytes());
    for (k, (start, count)) in table.iter().enumerate() {
        let o = OFF_SECTIONS + 16 * k;
        header[o..o + 8].copy_from_slice(&start.to_le_bytes());
        header[o + 8..o + 16].copy_from_slice(&count.to_le_bytes());
    }
    header[OFF_BODY_CRC..OFF_BODY_CRC + 4].copy_from_slice(&body_crc.to_le_bytes());
    let hcrc = crc32fast::hash(&header[..OFF_HEADER_CRC]);
    header[OFF_HEADER_CRC..].copy_from_slice(&hcrc.to_le_bytes());

    let mut file = w.into_inner().map_err(|e| io(e.into_error()))?;
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    file.write_all(&header).map_err(io)?;
    file.sync_all().map_err(io)?;
    Ok(())
}
