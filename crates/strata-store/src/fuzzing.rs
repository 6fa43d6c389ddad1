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
use crate::segment::{scan_segment as scan, OpenSegment, ScanMode, Scanned};

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
    /// The first damage found, as an error message.
    pub corruption: Option<String>,
    /// Every damaged range: `(offset, length, lost positions)`.
    pub damage: Vec<(u64, u64, std::ops::Range<u64>)>,
    /// `(offset, event)` of every event of every whole commit, in order (the scan resumes after
    /// damage).
    pub events: Vec<(u64, crate::RecordedEvent)>,
    /// Runs of positions without a frame (lost in damage, or gaps), in order.
    pub missing: Vec<std::ops::Range<u64>>,
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
    let mut missing = Vec::new();
    let out = scan(
        bytes,
        expected_first_position,
        mode,
        None,
        |item| match item {
            Scanned::Event(v, offset) => events.push((offset, v.to_owned_event())),
            Scanned::Missing(r) => missing.push(r),
        },
    );
    Scan {
        committed_len: out.committed_len,
        next_position: out.next_position,
        corruption: out
            .first_error(Path::new("fuzz.seg"))
            .map(|e| e.to_string()),
        damage: out
            .damage
            .iter()
            .map(|d| (d.offset, d.length, d.positions.clone()))
            .collect(),
        torn: out.torn,
        events,
        missing,
    }
}

/// The bytes of the index file the store would write for the sealed segment `bytes` (the same
/// scan and encoder as an index rebuild). Fails on a damaged segment (whose rebuilt index the
/// store keeps in memory only).
pub fn index_for_segment(bytes: &[u8], first_position: u64) -> Result<Vec<u8>> {
    let mut table = Memtable::default();
    let out = scan(
        bytes,
        first_position,
        ScanMode::Sealed,
        None,
        |item| match item {
            Scanned::Event(v, offset) => table.insert(&MemEntry::from_view(v, offset)),
            Scanned::Missing(r) => table.insert_missing(r),
        },
    );
    if let Some(e) = out.first_error(Path::new("fuzz.seg")) {
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
    let open = OpenSegment::open(path, 0, Memtable::default(), 0)?;
    let mut buf = Vec::new();
    open.read_frame(offset, &mut buf)?;
    Ok(buf)
}
