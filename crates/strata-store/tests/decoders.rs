//! Decoders never panic: the frame, segment-header, segment-scan, index-file, bloom and
//! checkpoint decoders fed arbitrary and damaged bytes, and whole data directories damaged at
//! random and opened with `Store::open` and `verify_dir`.
//!
//! For each decoder, property tests with (a) arbitrary bytes, (b) valid encodings with random
//! flips, zeroed runs, truncations and extensions, and (c) valid encodings with a length or count
//! field set to a huge value (checksums recomputed, so the field checks themselves must catch it).
//! Every case asserts: no panic; `Ok` only for valid bytes (damage to a checksummed byte is never
//! accepted); and, through the counting allocator below, that no single allocation made while
//! decoding exceeds `max(64 KiB, 2 × input length)`, i.e. that no allocation is sized from a length
//! read from the input.
//!
//! `STRATA_DECODER_CASES=<n>` raises the number of cases of every property (never below the
//! defaults); `STRATA_TEST_SEED` reruns the whole-directory test with a given seed.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestRunner;

use common::Rng;
use common::*;
use strata_store::fuzzing::{
    decode_frame, decode_segment_header, encode_frame, encode_segment_header, index_for_segment,
    read_open_segment_frame, scan_segment, BloomBuilder, BloomRef, FrameFields, SegmentIndex,
    FRAME_PREFIX_LEN, SEGMENT_HEADER_LEN,
};
use strata_store::projection::{read_latest_checkpoint, CheckpointRecord, CHECKPOINT_TYPE};
use strata_store::verify::verify_dir;
use strata_store::{
    AllFilter, ContentType, Direction, ExpectedRevision, FsyncPolicy, NewEvent, Options, ReadFrom,
    RecordedEvent, Store,
};
use uuid::Uuid;

// ---------------------------------------------------------------------------------------------
// The counting allocator: records the largest single allocation of the current thread while a
// measurement is running (other threads, e.g. the store's writer, are not counted).

struct Counting;

thread_local! {
    static MEASURING: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn record(size: usize) {
    // `try_with`: during thread teardown the thread-locals may be gone; nothing to record then.
    let _ = MEASURING.try_with(|m| {
        if m.get() {
            let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
        }
    });
}

// SAFETY: every call is forwarded unchanged to `System`; the bookkeeping only touches
// const-initialised thread-local `Cell`s (no allocation, no reentrancy).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        // SAFETY: the caller's contract for `alloc` is passed on unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record(new_size);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs `f` and returns its result with the largest single allocation it made on this thread.
fn largest_allocation<R>(f: impl FnOnce() -> R) -> (R, usize) {
    LARGEST.with(|l| l.set(0));
    MEASURING.with(|m| m.set(true));
    let r = f();
    MEASURING.with(|m| m.set(false));
    (r, LARGEST.with(Cell::get))
}

/// The allocation bound of a decode of `input_len` bytes.
fn allocation_bound(input_len: usize) -> usize {
    (64 << 10).max(2 * input_len)
}

/// Runs the decode `f` of `input_len` bytes of input and checks its largest allocation.
fn bounded<R>(what: &str, input_len: usize, f: impl FnOnce() -> R) -> R {
    let (r, largest) = largest_allocation(f);
    assert!(
        largest <= allocation_bound(input_len),
        "{what}: allocated {largest} bytes at once for {input_len} bytes of input"
    );
    r
}

// ---------------------------------------------------------------------------------------------
// Case counts.

/// `default`, or `STRATA_DECODER_CASES` when that is larger.
fn cases(default: u32) -> u32 {
    std::env::var("STRATA_DECODER_CASES")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .map_or(default, |n| n.max(default))
}

fn config(default: u32) -> ProptestConfig {
    ProptestConfig {
        cases: cases(default),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Runs a property with a shared setup (a temporary directory, a store) outside the cases.
fn run<S: Strategy>(
    default_cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let mut runner = TestRunner::new(config(default_cases));
    if let Err(e) = runner.run(&strategy, test) {
        panic!("{e}");
    }
}

// ---------------------------------------------------------------------------------------------
// Damage.

/// One change to a valid encoding.
#[derive(Clone, Debug)]
enum Damage {
    /// XOR one byte with a non-zero mask.
    Flip(Index, u8),
    /// Zero a run of up to 16 bytes.
    Zero(Index, usize),
    /// Cut the bytes at an offset.
    Truncate(Index),
    /// Append bytes.
    Extend(Vec<u8>),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        4 => (any::<Index>(), 1u8..=255).prop_map(|(i, m)| Damage::Flip(i, m)),
        1 => (any::<Index>(), 1usize..=16).prop_map(|(i, n)| Damage::Zero(i, n)),
        1 => any::<Index>().prop_map(Damage::Truncate),
        1 => prop::collection::vec(any::<u8>(), 1..24).prop_map(Damage::Extend),
    ]
}

fn damages() -> impl Strategy<Value = Vec<Damage>> {
    prop::collection::vec(damage(), 1..4)
}

fn apply(bytes: &mut Vec<u8>, damages: &[Damage]) {
    for d in damages {
        match d {
            Damage::Flip(i, m) if !bytes.is_empty() => {
                let i = i.index(bytes.len());
                bytes[i] ^= m;
            }
            Damage::Zero(i, n) if !bytes.is_empty() => {
                let i = i.index(bytes.len());
                let end = (i + n).min(bytes.len());
                bytes[i..end].fill(0);
            }
            Damage::Truncate(i) if !bytes.is_empty() => {
                let i = i.index(bytes.len());
                bytes.truncate(i);
            }
            Damage::Extend(more) => bytes.extend_from_slice(more),
            _ => {}
        }
    }
}

/// The first offset in `0..original.len()` where `damaged` differs from `original` (a byte
/// changed or cut off), `None` when `damaged` starts with all of `original`.
fn first_change(original: &[u8], damaged: &[u8]) -> Option<usize> {
    (0..original.len()).find(|&i| damaged.get(i) != Some(&original[i]))
}

/// A value for a length or count field: huge, just off, or random.
fn huge_value() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(u64::MAX),
        Just(u64::MAX - 1),
        Just(u64::from(u32::MAX)),
        Just(u64::from(u32::MAX) - 55),
        Just(1u64 << 31),
        Just(1u64 << 40),
        Just(1u64 << 63),
        (0u64..4096),
        any::<u64>(),
    ]
}

fn put(bytes: &mut [u8], at: usize, width: usize, v: u64) {
    bytes[at..at + width].copy_from_slice(&v.to_le_bytes()[..width]);
}

fn get(bytes: &[u8], at: usize, width: usize) -> u64 {
    let mut b = [0u8; 8];
    b[..width].copy_from_slice(&bytes[at..at + width]);
    u64::from_le_bytes(b)
}

// ---------------------------------------------------------------------------------------------
// Frames.

/// An event as the encoder takes it, owned.
#[derive(Clone, Debug)]
struct Ev {
    position: u64,
    revision: u64,
    timestamp_micros: i64,
    id: u128,
    commit_end: bool,
    binary: bool,
    stream: String,
    event_type: String,
    data: Vec<u8>,
    metadata: Vec<u8>,
}

impl Ev {
    fn fields(&self) -> FrameFields<'_> {
        FrameFields {
            position: self.position,
            revision: self.revision,
            timestamp_micros: self.timestamp_micros,
            id: Uuid::from_u128(self.id),
            commit_end: self.commit_end,
            content_type: if self.binary {
                ContentType::Binary
            } else {
                ContentType::Json
            },
            stream: &self.stream,
            event_type: &self.event_type,
            data: &self.data,
            metadata: &self.metadata,
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        encode_frame(&mut out, &self.fields());
        out
    }

    fn to_recorded(&self) -> RecordedEvent {
        let f = self.fields();
        RecordedEvent {
            id: f.id,
            stream: self.stream.clone(),
            revision: self.revision,
            position: self.position,
            event_type: self.event_type.clone(),
            timestamp_micros: self.timestamp_micros,
            content_type: f.content_type,
            data: self.data.clone(),
            metadata: self.metadata.clone(),
        }
    }
}

fn ev() -> impl Strategy<Value = Ev> {
    (
        (any::<u64>(), any::<u64>(), any::<i64>(), any::<u128>()),
        (any::<bool>(), any::<bool>()),
        ("\\PC{0,12}", "[A-Za-z$]{0,8}"),
        (
            prop::collection::vec(any::<u8>(), 0..64),
            prop::collection::vec(any::<u8>(), 0..16),
        ),
    )
        .prop_map(
            |((position, revision, timestamp_micros, id), (commit_end, binary), (s, t), (d, m))| {
                Ev {
                    position,
                    revision,
                    timestamp_micros,
                    id,
                    commit_end,
                    binary,
                    stream: s,
                    event_type: t,
                    data: d,
                    metadata: m,
                }
            },
        )
}

/// Decodes `bytes` as a frame under the allocation check; on success also checks that the frame
/// is the canonical encoding of what was decoded (`Ok` only for bytes the encoder writes).
fn decode_checked(bytes: &[u8]) -> Option<(RecordedEvent, usize)> {
    let r = bounded("decode_frame", bytes.len(), || {
        decode_frame(bytes).map(|(v, n)| (v.to_owned_event(), n))
    });
    let (e, n) = r.ok()?;
    let again = Ev {
        position: e.position,
        revision: e.revision,
        timestamp_micros: e.timestamp_micros,
        id: e.id.as_u128(),
        commit_end: bytes[FRAME_PREFIX_LEN + 40] & 1 != 0,
        binary: e.content_type == ContentType::Binary,
        stream: e.stream.clone(),
        event_type: e.event_type.clone(),
        data: e.data.clone(),
        metadata: e.metadata.clone(),
    };
    assert_eq!(
        again.encode(),
        bytes[..n],
        "a frame decoded Ok but is not what the encoder writes for its fields"
    );
    Some((e, n))
}

/// Offsets (in the frame) of the length fields: (offset, width).
const FRAME_LENGTH_FIELDS: [(usize, usize); 5] = [
    (0, 4),                     // body length
    (FRAME_PREFIX_LEN + 42, 2), // stream-name length
    (FRAME_PREFIX_LEN + 44, 2), // event-type length
    (FRAME_PREFIX_LEN + 48, 4), // data length
    (FRAME_PREFIX_LEN + 52, 4), // metadata length
];

fn fix_frame_crc(bytes: &mut [u8]) {
    let body_len = get(bytes, 0, 4) as usize;
    if let Some(body) = bytes.get(FRAME_PREFIX_LEN..FRAME_PREFIX_LEN + body_len) {
        let crc = crc32fast::hash(body);
        put(bytes, 4, 4, u64::from(crc));
    }
}

proptest! {
    #![proptest_config(config(512))]

    /// (a) Arbitrary bytes, and arbitrary bodies behind a consistent length and CRC (so the field
    /// checks after the checksum see random input too).
    #[test]
    fn frame_arbitrary_bytes(mut bytes in prop::collection::vec(any::<u8>(), 0..400), framed in any::<bool>()) {
        if framed && bytes.len() >= FRAME_PREFIX_LEN {
            let body_len = (bytes.len() - FRAME_PREFIX_LEN) as u64;
            put(&mut bytes, 0, 4, body_len);
            fix_frame_crc(&mut bytes);
        }
        if let Some((_, n)) = decode_checked(&bytes) {
            prop_assert!(n <= bytes.len());
        }
    }

    /// (b) A valid frame, damaged: any change inside the frame is an error; bytes after it are
    /// ignored (they are the next frame).
    #[test]
    fn frame_damaged(e in ev(), damages in damages()) {
        let original = e.encode();
        let mut bytes = original.clone();
        apply(&mut bytes, &damages);
        let got = decode_checked(&bytes);
        match first_change(&original, &bytes) {
            Some(at) => prop_assert!(got.is_none(), "damage at {} accepted: {:?}", at, got),
            None => prop_assert_eq!(got, Some((e.to_recorded(), original.len()))),
        }
    }

    /// (c) A valid frame with a length field set to a huge (or any other) value, CRC recomputed:
    /// an error unless the value is the right one.
    #[test]
    fn frame_huge_lengths(e in ev(), field in 0..FRAME_LENGTH_FIELDS.len(), v in huge_value(), slack in prop::collection::vec(any::<u8>(), 0..64)) {
        let original = e.encode();
        let (at, width) = FRAME_LENGTH_FIELDS[field];
        let v = if width == 8 { v } else { v & ((1u64 << (8 * width)) - 1) };
        let mut bytes = original.clone();
        put(&mut bytes, at, width, v);
        bytes.extend_from_slice(&slack);
        fix_frame_crc(&mut bytes);
        let got = decode_checked(&bytes);
        if v == get(&original, at, width) {
            prop_assert_eq!(got, Some((e.to_recorded(), original.len())));
        } else {
            prop_assert!(got.is_none(), "field {} = {} accepted: {:?}", field, v, got);
        }
    }

    /// (c) Flags and reserved bytes set to other values, CRC recomputed: decodes only when the
    /// byte is one the encoder could have written (known flags, the metadata flag matching the
    /// metadata length, reserved bytes zero).
    #[test]
    fn frame_flags_and_reserved(e in ev(), which in 0..4usize, v in any::<u8>()) {
        let original = e.encode();
        let at = FRAME_PREFIX_LEN + [40, 41, 46, 47][which];
        let mut bytes = original.clone();
        bytes[at] = v;
        fix_frame_crc(&mut bytes);
        let got = decode_checked(&bytes);
        let valid = if which == 0 {
            v & !0b111 == 0 && (v & 0b100 != 0) != e.metadata.is_empty()
        } else {
            v == 0
        };
        prop_assert_eq!(got.is_some(), valid, "byte {} = {:#x}", at, v);
    }
}

// ---------------------------------------------------------------------------------------------
// Segment headers.

const HEADER_FIELDS: [(usize, usize); 5] = [(8, 4), (12, 4), (16, 8), (24, 4), (0, 8)];

fn fix_header_crc(h: &mut [u8]) {
    let crc = crc32fast::hash(&h[..28]);
    put(h, 28, 4, u64::from(crc));
}

fn decode_header_checked(bytes: &[u8]) -> Option<u64> {
    let r = bounded("decode_segment_header", bytes.len(), || {
        decode_segment_header(bytes)
    });
    let first = r.ok()?;
    assert_eq!(
        encode_segment_header(first)[..],
        bytes[..SEGMENT_HEADER_LEN as usize],
        "a segment header decoded Ok but is not what the encoder writes"
    );
    Some(first)
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn segment_header_arbitrary_bytes(mut bytes in prop::collection::vec(any::<u8>(), 0..64), magic in any::<bool>()) {
        if magic && bytes.len() >= 32 {
            bytes[..8].copy_from_slice(b"STRATSEG");
            fix_header_crc(&mut bytes);
        }
        decode_header_checked(&bytes);
    }

    #[test]
    fn segment_header_damaged(first in any::<u64>(), damages in damages()) {
        let original = encode_segment_header(first).to_vec();
        let mut bytes = original.clone();
        apply(&mut bytes, &damages);
        let got = decode_header_checked(&bytes);
        match first_change(&original, &bytes) {
            Some(at) => prop_assert!(got.is_none(), "damage at {} accepted", at),
            None => prop_assert_eq!(got, Some(first)),
        }
    }

    /// Every field set to another value with the CRC recomputed: only the first position may
    /// take any value.
    #[test]
    fn segment_header_fields(first in any::<u64>(), field in 0..HEADER_FIELDS.len(), v in huge_value()) {
        let (at, width) = HEADER_FIELDS[field];
        let v = if width == 8 { v } else { v & ((1u64 << (8 * width)) - 1) };
        let mut bytes = encode_segment_header(first).to_vec();
        let old = get(&bytes, at, width);
        put(&mut bytes, at, width, v);
        fix_header_crc(&mut bytes);
        let got = decode_header_checked(&bytes);
        if at == 16 {
            prop_assert_eq!(got, Some(v));
        } else if v == old {
            prop_assert_eq!(got, Some(first));
        } else {
            prop_assert!(got.is_none(), "header field at {} = {} accepted", at, v);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Whole segments (the scan of recovery, index rebuilds and verify).

/// A valid segment: its bytes, its events, and for each frame `(start, end, commit_end)`.
#[derive(Clone, Debug)]
struct Segment {
    first: u64,
    bytes: Vec<u8>,
    events: Vec<RecordedEvent>,
    frames: Vec<(usize, usize, bool)>,
}

fn build_segment(first: u64, appends: &[Vec<Ev>]) -> Segment {
    let mut bytes = encode_segment_header(first).to_vec();
    let mut events = Vec::new();
    let mut frames = Vec::new();
    let mut position = first;
    for append in appends {
        for (i, e) in append.iter().enumerate() {
            let mut e = e.clone();
            e.position = position;
            e.commit_end = i + 1 == append.len();
            position = position.wrapping_add(1);
            let start = bytes.len();
            encode_frame(&mut bytes, &e.fields());
            frames.push((start, bytes.len(), e.commit_end));
            events.push(e.to_recorded());
        }
    }
    Segment {
        first,
        bytes,
        events,
        frames,
    }
}

fn segment() -> impl Strategy<Value = Segment> {
    (
        any::<u64>().prop_map(|p| p % 1_000_000),
        prop::collection::vec(prop::collection::vec(ev(), 1..4), 0..6),
    )
        .prop_map(|(first, appends)| build_segment(first, &appends))
}

fn scan_checked(bytes: &[u8], first: u64, sealed: bool) -> strata_store::fuzzing::Scan {
    let scan = bounded("scan_segment", bytes.len(), || {
        scan_segment(bytes, first, sealed)
    });
    // Whatever was delivered has strictly increasing positions from `first`, and every
    // position up to the end is either delivered or missing, once.
    let mut next = first;
    let mut missing = scan.missing.iter().peekable();
    for (_, e) in &scan.events {
        while let Some(r) = missing.next_if(|r| r.start == next) {
            next = r.end;
        }
        assert_eq!(
            e.position, next,
            "events and missing runs do not tile the positions"
        );
        next = next.wrapping_add(1);
    }
    assert!(scan.committed_len <= bytes.len() as u64);
    scan
}

proptest! {
    #![proptest_config(config(256))]

    /// (a) Arbitrary bytes, bare or behind a valid header.
    #[test]
    fn segment_arbitrary_bytes(first in any::<u64>(), header in any::<bool>(), tail in prop::collection::vec(any::<u8>(), 0..600), sealed in any::<bool>()) {
        let mut bytes = if header { encode_segment_header(first).to_vec() } else { Vec::new() };
        bytes.extend_from_slice(&tail);
        scan_checked(&bytes, first, sealed);
    }

    /// (b) A valid segment, damaged. Nothing forged: every event delivered is an original one.
    /// Every whole commit before the first damaged byte is delivered. Damage is reported
    /// (sealed: any; open: damage an intact frame follows is never taken for a torn tail). The
    /// scan resumes after damage: when only bytes were changed in place (no cut, nothing
    /// appended), every event of a frame after the last changed frame is delivered too.
    #[test]
    fn segment_damaged(seg in segment(), damages in damages(), sealed in any::<bool>()) {
        let mut bytes = seg.bytes.clone();
        apply(&mut bytes, &damages);
        let scan = scan_checked(&bytes, seg.first, sealed);
        for (_, e) in &scan.events {
            let k = e.position.wrapping_sub(seg.first) as usize;
            prop_assert_eq!(Some(e), seg.events.get(k), "forged or altered event delivered");
        }
        let delivered: Vec<&RecordedEvent> = scan.events.iter().map(|(_, e)| e).collect();
        let Some(at) = first_change(&seg.bytes, &bytes) else {
            // Only bytes appended after the last frame.
            let all: Vec<&RecordedEvent> = seg.events.iter().collect();
            prop_assert_eq!(delivered, all);
            if bytes.len() > seg.bytes.len() {
                let reported = !scan.damage.is_empty() || (!sealed && scan.torn.is_some());
                prop_assert!(reported, "bytes after the last frame not reported");
            }
            return Ok(());
        };
        // The first damaged frame (none: the header), and the commits wholly before it.
        let hit = seg.frames.iter().position(|&(s, e, _)| (s..e).contains(&at));
        let before = match hit {
            None => 0,
            Some(k) => seg.frames[..k].iter().rposition(|f| f.2).map_or(0, |j| j + 1),
        };
        for e in &seg.events[..before] {
            prop_assert!(delivered.contains(&e), "event {} before the damage at {} lost", e.position, at);
        }
        let cut_at_a_commit = bytes.len() == at
            && (at == SEGMENT_HEADER_LEN as usize || seg.frames.iter().any(|f| f.1 == at && f.2));
        if cut_at_a_commit {
            // A valid, shorter segment: the scan cannot tell (for sealed segments the index's
            // segment length does, see the whole-directory test).
            prop_assert!(scan.damage.is_empty() && scan.torn.is_none());
        } else if sealed {
            prop_assert!(!scan.damage.is_empty(), "damage at {} not reported", at);
        } else if let Some(k) = hit {
            let intact_after = seg.frames[k + 1..]
                .iter()
                .any(|&(s, e, _)| bytes.get(s..e) == Some(&seg.bytes[s..e]));
            if intact_after && bytes.len() == seg.bytes.len() {
                prop_assert!(!scan.damage.is_empty(), "damage at {} before an intact frame taken for a torn tail: {:?} {:?}", at, scan.torn, &damages);
            } else {
                prop_assert!(!scan.damage.is_empty() || scan.torn.is_some());
            }
        } else {
            prop_assert!(!scan.damage.is_empty() || (bytes.len() < SEGMENT_HEADER_LEN as usize && scan.torn.is_some()));
        }
        if bytes.len() == seg.bytes.len() {
            let last = (0..bytes.len()).rev().find(|&i| bytes[i] != seg.bytes[i]).unwrap_or(at);
            // Frames wholly after the frame holding the last changed byte.
            let after = seg.frames.iter().position(|&(s, _, _)| s > last);
            if let Some(j) = after {
                let last_hit = seg.frames.iter().position(|&(s, e, _)| (s..e).contains(&last));
                // Resynchronising needs the frame after the damaged one to be the candidate:
                // the first intact frame directly after the last damaged one.
                if last_hit.is_none_or(|h| h + 1 == j) {
                    for e in &seg.events[j..] {
                        prop_assert!(delivered.contains(&e), "event {} after the damage ({}..={}) lost", e.position, at, last);
                    }
                }
            }
        }
    }

    /// (c) Positions at the end of the u64 range: an error, never an overflow.
    #[test]
    fn segment_positions_near_u64_max(back in 0u64..4, appends in prop::collection::vec(prop::collection::vec(ev(), 1..3), 1..5), sealed in any::<bool>()) {
        let seg = build_segment(u64::MAX - back, &appends);
        let scan = scan_checked(&seg.bytes, seg.first, sealed);
        // Position u64::MAX has no successor: a segment holding it cannot be valid.
        if seg.events.len() as u64 > back {
            prop_assert!(!scan.damage.is_empty() || (!sealed && scan.torn.is_some()));
            prop_assert!(scan.events.iter().all(|(_, e)| e.position < u64::MAX));
        } else {
            prop_assert!(scan.damage.is_empty());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Index files.

/// Header fields of an index file (offset, width), including every section-table word.
fn index_header_fields() -> Vec<(usize, usize)> {
    let mut v = vec![(8, 4), (12, 4), (16, 8), (24, 8), (32, 8), (40, 8)];
    v.extend((0..18).map(|k| (48 + 8 * k, 8)));
    v
}

fn fix_index_crcs(b: &mut [u8]) {
    if b.len() >= 200 {
        let body = crc32fast::hash(&b[200..]);
        put(b, 192, 4, u64::from(body));
        let header = crc32fast::hash(&b[..196]);
        put(b, 196, 4, u64::from(header));
    }
}

/// Opens the index bytes (written to `path`) and runs every query, under the allocation check.
/// Returns whether open and the full verify both passed.
fn index_checked(path: &Path, bytes: &[u8], first: u64, segment_len: u64) -> bool {
    std::fs::write(path, bytes).expect("write index");
    bounded("index open/verify/queries", bytes.len(), || {
        let Ok(idx) = SegmentIndex::open(path, first, segment_len) else {
            return false;
        };
        let verified = idx.verify().is_ok();
        // Queries on an unverified (possibly damaged) body answer something, never panic.
        for p in [0, first, first + 1, first + idx.event_count(), u64::MAX] {
            let _ = idx.offset(p);
        }
        for h in [0, 1, 7, u64::MAX] {
            let _ = idx.may_contain_stream(h);
            let _ = idx.stream_entries(h, 0, u64::MAX);
            let _ = idx.last_stream_entry(h);
            let _ = idx.find_id(h, 42);
            let _ = idx.category_positions(h, 0, u64::MAX);
            let _ = idx.type_positions(h, 0, u64::MAX);
        }
        for i in 0..idx.created_count().min(8) + 1 {
            let _ = idx.created_name(i);
        }
        let _ = idx.created_lower_bound("s-", true);
        verified
    })
}

/// A valid index file, the one the store writes for a random valid segment.
fn index() -> impl Strategy<Value = (Segment, Vec<u8>)> {
    segment().prop_map(|seg| {
        let idx = index_for_segment(&seg.bytes, seg.first).expect("index of a valid segment");
        (seg, idx)
    })
}

#[test]
fn index_arbitrary_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("a.idx");
    let strategy = (
        prop::collection::vec(any::<u8>(), 0..1200),
        any::<bool>(),
        any::<u64>(),
        any::<u64>(),
    );
    run(128, strategy, |(mut bytes, header, first, seg_len)| {
        if header && bytes.len() >= 200 {
            // A well-formed header in front of random sections: the section checks see it all.
            bytes[..8].copy_from_slice(b"STRATIDX");
            put(&mut bytes, 8, 4, 1);
            put(&mut bytes, 12, 4, 200);
            put(&mut bytes, 16, 8, first);
            put(&mut bytes, 32, 8, seg_len);
            let len = bytes.len() as u64;
            put(&mut bytes, 40, 8, len);
            for k in 0..9 {
                let at = 48 + 16 * k;
                let v = get(&bytes, at, 8) % (bytes.len() as u64 + 16);
                put(&mut bytes, at, 8, v & !7);
                let c = get(&bytes, at + 8, 8) % 64;
                put(&mut bytes, at + 8, 8, c);
            }
            fix_index_crcs(&mut bytes);
        }
        index_checked(&path, &bytes, first, seg_len);
        Ok(())
    });
}

#[test]
fn index_damaged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("d.idx");
    run(128, (index(), damages()), |((seg, original), damages)| {
        let seg_len = seg.bytes.len() as u64;
        prop_assert!(index_checked(&path, &original, seg.first, seg_len));
        let mut bytes = original.clone();
        apply(&mut bytes, &damages);
        let ok = index_checked(&path, &bytes, seg.first, seg_len);
        // Every byte of an index file is covered by one of its two CRCs or is one of them.
        prop_assert_eq!(ok, bytes == original, "damaged index accepted");
        Ok(())
    });
}

#[test]
fn index_huge_fields() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("h.idx");
    let fields = index_header_fields();
    let strategy = (index(), 0..fields.len(), huge_value());
    run(256, strategy, |((seg, original), field, v)| {
        let (at, width) = fields[field];
        let v = if width == 8 {
            v
        } else {
            v & ((1u64 << (8 * width)) - 1)
        };
        let mut bytes = original.clone();
        put(&mut bytes, at, width, v);
        fix_index_crcs(&mut bytes);
        let ok = index_checked(&path, &bytes, seg.first, seg.bytes.len() as u64);
        if v >= 1 << 32 {
            // No field of a file this small can hold such a value.
            prop_assert!(!ok, "field at {} = {} accepted", at, v);
        }
        if bytes == original {
            prop_assert!(ok);
        }
        Ok(())
    });
}

/// The bloom filter parser and its probes on arbitrary and damaged bytes.
#[test]
fn bloom_arbitrary_and_damaged() {
    let strategy = (
        prop::collection::vec(any::<u64>(), 0..50),
        damages(),
        any::<bool>(),
        prop::collection::vec(any::<u8>(), 0..200),
    );
    run(256, strategy, |(keys, damages, arbitrary, random)| {
        let bytes = if arbitrary {
            random
        } else {
            let mut b = BloomBuilder::new(keys.len(), 10);
            for &k in &keys {
                b.insert(k);
            }
            let mut bytes = b.finish();
            apply(&mut bytes, &damages);
            bytes
        };
        bounded("bloom", bytes.len(), || {
            if let Some(f) = BloomRef::parse(&bytes) {
                assert!(f.num_bits() >= 64 && f.num_bits() / 8 == bytes.len() as u64 - 8);
                for &k in keys.iter().chain(&[0, u64::MAX]) {
                    let _ = f.may_contain(k);
                }
            }
        });
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------
// The open segment's `pread` path.

/// A frame whose length prefix claims up to 4 GiB must not make the reader allocate that much
/// before learning the file is shorter.
#[test]
fn open_segment_read_with_huge_length_prefix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("00000000000000000000.seg");
    let e = Ev {
        position: 0,
        revision: 0,
        timestamp_micros: 0,
        id: 1,
        commit_end: true,
        binary: true,
        stream: "s".into(),
        event_type: "T".into(),
        data: vec![7; 500],
        metadata: Vec::new(),
    };
    let good = e.encode();
    for len in [
        u32::MAX,
        u32::MAX - 8,
        1 << 31,
        1 << 24,
        good.len() as u32,
        (good.len() - FRAME_PREFIX_LEN) as u32,
    ] {
        let mut bytes = encode_segment_header(0).to_vec();
        let mut frame = good.clone();
        put(&mut frame, 0, 4, u64::from(len));
        bytes.extend_from_slice(&frame);
        std::fs::write(&path, &bytes).expect("write");
        let r = bounded("open segment read_frame", bytes.len(), || {
            read_open_segment_frame(&path, SEGMENT_HEADER_LEN)
        });
        if (len as usize) + FRAME_PREFIX_LEN <= frame.len() {
            let buf = r.expect("a frame inside the file reads");
            assert_eq!(buf.len(), len as usize + FRAME_PREFIX_LEN);
        } else {
            assert!(r.is_err(), "a length past the end of the file read Ok");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Projection checkpoints: the record and its `$state` chunks read back by
// `read_latest_checkpoint`, through a real store.

/// How a test checkpoint is damaged.
#[derive(Clone, Debug)]
enum CpDamage {
    /// Bytes of the record JSON.
    Record(Vec<Damage>),
    /// Bytes of one chunk.
    Chunk(Index, Vec<Damage>),
    /// The record's `chunks` or `bytes` field set to a value.
    Field(bool, u64),
    /// One chunk left out.
    DropChunk(Index),
    /// Arbitrary record bytes.
    ArbitraryRecord(Vec<u8>),
}

fn cp_damage() -> impl Strategy<Value = Option<CpDamage>> {
    prop_oneof![
        1 => Just(None),
        2 => damages().prop_map(|d| Some(CpDamage::Record(d))),
        2 => (any::<Index>(), damages()).prop_map(|(i, d)| Some(CpDamage::Chunk(i, d))),
        2 => (any::<bool>(), huge_value()).prop_map(|(c, v)| Some(CpDamage::Field(c, v))),
        1 => any::<Index>().prop_map(|i| Some(CpDamage::DropChunk(i))),
        1 => prop::collection::vec(any::<u8>(), 0..200).prop_map(|b| Some(CpDamage::ArbitraryRecord(b))),
    ]
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        "\\PC{0,10}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map("[a-z]{0,4}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// What a reader must make of the checkpoint stream: the record and each partition's state as JSON
/// text, or `None` (error). States are kept as text, so the check is the JSON grammar, not what a
/// `Value` can hold: a flipped byte can turn `127` into `1e7` or `12e300...` (past `f64`), which is
/// still JSON and, like any state whose chunks pass their checks, is read back as written.
fn checkpoint_model(
    record_data: &[u8],
    record_revision: u64,
    chunks: &[Vec<u8>],
) -> Option<(CheckpointRecord, HashMap<String, String>)> {
    let record: CheckpointRecord = serde_json::from_slice(record_data).ok()?;
    let n = usize::try_from(record.chunks).ok()?;
    if n as u64 > record_revision || n > chunks.len() {
        return None;
    }
    let state: Vec<u8> = chunks[chunks.len() - n..].concat();
    if state.len() as u64 != record.bytes {
        return None;
    }
    let states: HashMap<String, Box<serde_json::value::RawValue>> =
        serde_json::from_slice(&state).ok()?;
    let states = states
        .into_iter()
        .map(|(k, v)| (k, v.get().to_owned()))
        .collect();
    Some((record, states))
}

#[test]
fn checkpoint_arbitrary_and_damaged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = Options {
        fsync: FsyncPolicy::Never,
        ..Options::default()
    };
    let store = Store::open(dir.path(), options).expect("open");
    let counter = Cell::new(0u64);
    let strategy = (
        prop::collection::btree_map("\\PC{0,6}", json_value(), 0..6),
        prop::collection::vec(any::<Index>(), 0..4),
        cp_damage(),
    );
    run(96, strategy, |(states, cuts, damage)| {
        let stream = format!("$projection-p{}", counter.get());
        counter.set(counter.get() + 1);
        // The state JSON, cut into non-empty chunks.
        let state: Vec<u8> = serde_json::to_vec(&states).expect("state json");
        let mut cut_at: Vec<usize> = cuts.iter().map(|i| i.index(state.len())).collect();
        cut_at.extend([0, state.len()]);
        cut_at.sort_unstable();
        cut_at.dedup();
        let mut chunks: Vec<Vec<u8>> = cut_at
            .windows(2)
            .map(|w| state[w[0]..w[1]].to_vec())
            .collect();
        let mut record = serde_json::json!({
            "version": 1, "incarnation": 3, "position": 41, "cursor": 42,
            "partitions": states.len(), "chunks": chunks.len(), "bytes": state.len(),
            "events_processed": 42,
        });
        let mut record_data = serde_json::to_vec(&record).expect("record json");
        match &damage {
            None => {}
            Some(CpDamage::Record(d)) => apply(&mut record_data, d),
            Some(CpDamage::Chunk(i, d)) if !chunks.is_empty() => {
                let k = i.index(chunks.len());
                apply(&mut chunks[k], d);
            }
            Some(CpDamage::Field(c, v)) => {
                record[if *c { "chunks" } else { "bytes" }] = (*v).into();
                record_data = serde_json::to_vec(&record).expect("record json");
            }
            Some(CpDamage::DropChunk(i)) if !chunks.is_empty() => {
                chunks.remove(i.index(chunks.len()));
            }
            Some(CpDamage::ArbitraryRecord(b)) => record_data = b.clone(),
            _ => {}
        }
        // Empty events cannot be appended; a chunk cut to nothing is left out.
        chunks.retain(|c| !c.is_empty());
        let mut events: Vec<NewEvent> = chunks
            .iter()
            .map(|c| NewEvent::binary("$state", c.clone()))
            .collect();
        events.push(NewEvent::binary(CHECKPOINT_TYPE, record_data.clone()));
        let appended = store
            .append(&stream, ExpectedRevision::NoStream, events)
            .expect("append checkpoint");
        let input_len = record_data.len() + chunks.iter().map(Vec::len).sum::<usize>();
        let got = bounded("read_latest_checkpoint", input_len, || {
            read_latest_checkpoint(&store, &stream)
        });
        let want = checkpoint_model(&record_data, appended.last_revision, &chunks);
        match (got, want) {
            (Ok(Some(cp)), Some((record, states))) => {
                prop_assert_eq!(cp.record, record);
                let got_states: HashMap<String, String> = cp
                    .states
                    .iter()
                    .map(|(k, v)| (k.clone(), v.get().to_owned()))
                    .collect();
                prop_assert_eq!(got_states, states);
            }
            (Err(_), None) => {}
            (got, want) => prop_assert!(
                false,
                "read {:?}, expected {:?} ({:?})",
                got.map(|c| c.map(|c| c.record)),
                want.map(|w| w.0),
                damage
            ),
        }
        Ok(())
    });
    store.close().expect("close");
}

/// Regression: a record claiming a huge state made the reader reserve up to 64 MiB before
/// reading a single chunk.
#[test]
fn checkpoint_record_claiming_a_huge_state_allocates_only_what_it_reads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let options = Options {
        fsync: FsyncPolicy::Never,
        ..Options::default()
    };
    let store = Store::open(dir.path(), options).expect("open");
    for (i, bytes) in [1u64 << 40, 1 << 26, u64::MAX].into_iter().enumerate() {
        let stream = format!("$projection-huge{i}");
        let record = serde_json::json!({
            "version": 1, "incarnation": 1, "position": 1, "cursor": 2,
            "partitions": 0, "chunks": 1, "bytes": bytes, "events_processed": 2,
        });
        let record = serde_json::to_vec(&record).expect("json");
        let events = vec![
            NewEvent::binary("$state", b"{}".to_vec()),
            NewEvent::binary(CHECKPOINT_TYPE, record.clone()),
        ];
        store
            .append(&stream, ExpectedRevision::NoStream, events)
            .expect("append");
        let r = bounded("read_latest_checkpoint", record.len() + 2, || {
            read_latest_checkpoint(&store, &stream)
        });
        assert!(r.is_err(), "a record claiming {bytes} bytes for 2 read Ok");
    }
    store.close().expect("close");
}

// ---------------------------------------------------------------------------------------------
// Whole data directories: random damage to one file, then verify and open and read everything.

/// Reads every event of the log and of every stream; each event read must be the one written.
/// Returns how many events `$all` delivered before its end or first error, and whether every
/// read succeeded.
fn read_everything(store: &Store, written: &[RecordedEvent]) -> (usize, bool) {
    let filter = AllFilter {
        include_system: true,
        ..AllFilter::default()
    };
    let mut n = 0;
    let mut all_ok = true;
    let mut from = ReadFrom::Start;
    loop {
        match store.read_all(from, Direction::Forward, 7, &filter) {
            Ok(page) => {
                for e in &page.events {
                    assert_eq!(Some(e), written.get(n), "read_all returned a wrong event");
                    n += 1;
                }
                match page.next {
                    Some(next) if !page.end => from = ReadFrom::At(next),
                    _ => break,
                }
            }
            Err(_) => {
                all_ok = false;
                break;
            }
        }
    }
    let mut streams: BTreeMap<&str, Vec<&RecordedEvent>> = BTreeMap::new();
    for e in written {
        streams.entry(&e.stream).or_default().push(e);
    }
    for (stream, evs) in &streams {
        for direction in [Direction::Forward, Direction::Backward] {
            let from = match direction {
                Direction::Forward => ReadFrom::Start,
                Direction::Backward => ReadFrom::End,
            };
            match store.read_stream(stream, from, direction, 1000) {
                Ok(page) => {
                    for e in &page.events {
                        assert_eq!(
                            evs.get(e.revision as usize).copied(),
                            Some(e),
                            "read_stream {stream} returned a wrong event"
                        );
                    }
                }
                Err(_) => all_ok = false,
            }
        }
        let last = evs.len() as u64 - 1;
        match store.read_event(stream, last) {
            Ok(Some(e)) => assert_eq!(&e, evs[last as usize], "read_event {stream}"),
            Ok(None) => {}
            Err(_) => all_ok = false,
        }
    }
    let _ = store.list_streams("", None, 100);
    let _ = store.head("s-1");
    (n, all_ok)
}

#[test]
fn damaged_directories_never_panic_nor_return_wrong_data() {
    let mut rng = Rng::new(test_seed("damaged_directories"));
    let tmp = tempfile::tempdir().expect("tempdir");
    let base = tmp.path().join("base");
    let written = build_sealed(&base, &mut rng, 4);
    let segs = segments(&base);
    let last_seg = segs.last().expect("segments").clone();
    let last_first: usize = last_seg
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .expect("segment name");
    let mut files = segs.clone();
    files.extend(index_files(&base));
    let mut outcomes: BTreeMap<String, u32> = BTreeMap::new();
    for case in 0..cases(40) {
        let dir = tmp.path().join(format!("case-{case}"));
        copy_dir(&base, &dir);
        let victim = dir.join(files[rng.below(files.len())].file_name().expect("name"));
        let original = std::fs::read(&victim).expect("read");
        let mut bytes = original.clone();
        let what = match rng.below(4) {
            0 => {
                let at = rng.below(bytes.len());
                bytes[at] ^= 1 + rng.below(255) as u8;
                format!("flip at {at}")
            }
            1 => {
                let at = rng.below(bytes.len());
                let end = (at + 1 + rng.below(64)).min(bytes.len());
                bytes[at..end].fill(0);
                format!("zero {at}..{end}")
            }
            2 => {
                let at = rng.below(bytes.len());
                bytes.truncate(at);
                format!("truncate at {at}")
            }
            _ => {
                let n = 1 + rng.below(100);
                let zeros = rng.chance(50);
                bytes.extend((0..n).map(|_| if zeros { 0 } else { rng.next_u64() as u8 }));
                format!(
                    "extend by {n} {}",
                    if zeros { "zeros" } else { "random bytes" }
                )
            }
        };
        std::fs::write(&victim, &bytes).expect("write damage");
        let changed = bytes != original;
        let is_last = victim.file_name() == last_seg.file_name();
        let ctx = format!("case {case}: {} {what}", victim.display());

        let report = verify_dir(&dir, |_, _| {}).expect("verify_dir");
        if changed && !is_last {
            assert!(
                !report.problems.is_empty(),
                "{ctx}: verify found nothing ({report:?})"
            );
        }

        for read_only in [true, false] {
            let options = Options {
                read_only,
                ..opts(4096)
            };
            let mode = if read_only { "read-only" } else { "read-write" };
            let Ok(store) = Store::open(&dir, options) else {
                *outcomes.entry(format!("{mode}: open fails")).or_default() += 1;
                continue;
            };
            let (n, all_ok) = read_everything(&store, &written);
            let outcome = match (all_ok, n == written.len()) {
                (true, true) => "every read correct and complete",
                (true, false) => "the log ends early (torn tail)",
                (false, _) => "some read fails",
            };
            *outcomes.entry(format!("{mode}: {outcome}")).or_default() += 1;
            if all_ok {
                // Damage outside the open segment is never lost silently; in the open segment
                // at most a torn tail (the end of the log) is cut.
                let least = if is_last { last_first } else { written.len() };
                assert!(
                    n >= least,
                    "{ctx}: read only {n} of {} events",
                    written.len()
                );
            }
            drop(store);
        }
        std::fs::remove_dir_all(&dir).expect("clean up");
    }
    eprintln!("outcomes: {outcomes:#?}");
}
