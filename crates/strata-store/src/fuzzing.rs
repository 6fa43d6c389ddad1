//! Entry points to the on-disk decoders for the property tests of `tests/decoders.rs`, which
//! feed them arbitrary and damaged bytes. Not part of the supported API: hidden from the docs and
//! free to change with the format.
//!
//! Every function here is a thin wrapper over the decoder the store itself uses, so the tests
//! exercise the real code paths. The decoders' contract (docs/on-disk-format.md, "Decoding
//! untrusted bytes"): any input gives `Ok` or a clean error, never a panic, and no allocation is
//! sized from a length read from the input before that length is checked against the input.

use std::path::Path;

use crate::error::Result;
use crate::memtable::{MemEntry, Memtable};
use crate::segment::{scan_segment as scan, OpenSegment, ScanMode};

pub use crate::bloom::{BloomBuilder, BloomRef};
pub use crate::frame::{
    decode_frame, decode_segment_header, encode_frame, encode_segment_header, FrameError,
    FrameFields, BODY_FIXED_LEN, FRAME_PREFIX_LEN, SEGMENT_HEADER_LEN,
};
pub use crate::index_file::{IdEntry, IndexInput, Posting, SegmentIndex, StreamEntry};

/// What [`scan_segment`] found: the scan's outcome with its error rendered as text, and every
/// committed event it delivered, in order, with its frame offset.
#[derive(Debug)]
pub struct Scan {
    /// Byte length up to and including the last whole commit.
    pub committed_len: u64,
    /// Position after the last committed event.
    pub next_position: u64,
    /// A torn tail (only in open mode).
    pub torn: Option<String>,
    /// Corruption that stopped the scan.
    pub corruption: Option<String>,
    /// `(offset, event)` of every event of every whole commit before the end or the damage.
    pub events: Vec<(u64, crate::RecordedEvent)>,
}

/// Scans the bytes of a whole segment file as recovery (`sealed == false`, the last segment) or
/// an index rebuild and `verify` (`sealed == true`) do.
pub fn scan_segment(bytes: &[u8], expected_first_position: u64, sealed: bool) -> Scan {
    let mode = if sealed {
        ScanMode::Sealed
    } else {
        ScanMode::Open
    };
    let mut events = Vec::new();
    let out = scan(
        Path::new("fuzz.seg"),
        bytes,
        expected_first_position,
        mode,
        |v, offset| events.push((offset, v.to_owned_event())),
    );
    Scan {
        committed_len: out.committed_len,
        next_position: out.next_position,
        torn: out.torn,
        corruption: out.corruption.map(|e| e.to_string()),
        events,
    }
}

/// The bytes of the index file the store would write for the sealed segment `bytes` (the same
/// scan and encoder as an index rebuild). Fails as the rebuild would on a damaged segment.
pub fn index_for_segment(bytes: &[u8], first_position: u64) -> Result<Vec<u8>> {
    let mut table = Memtable::default();
    let out = scan(
        Path::new("fuzz.seg"),
        bytes,
        first_position,
        ScanMode::Sealed,
        |v, offset| table.insert(&MemEntry::from_view(v, offset)),
    );
    if let Some(e) = out.corruption {
        return Err(e);
    }
    encode_index(table.to_index_input(first_position, bytes.len() as u64))
}

/// Serializes `input` into the bytes of an index file (what `write_index` writes).
pub fn encode_index(input: IndexInput) -> Result<Vec<u8>> {
    crate::index_file::encode(input)
}

/// Reads the frame at `offset` of the segment file at `path` through the open segment's `pread`
/// path (the bytes are not decoded; see [`decode_frame`]).
pub fn read_open_segment_frame(path: &Path, offset: u64) -> Result<Vec<u8>> {
    let open = OpenSegment::open(path, 0, Memtable::default())?;
    let mut buf = Vec::new();
    open.read_frame(offset, &mut buf)?;
    Ok(buf)
}
