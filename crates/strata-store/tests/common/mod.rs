//! Helpers shared by the crash, corruption and fault-injection tests.
//!
//! Every appended event made by these helpers carries a JSON payload
//! `{"tag": <append tag>, "i": <index in the append>, "n": <events in the append>, "pad": ...}`
//! so that a check over the whole log can prove that no append is present only in part.
#![allow(dead_code)]

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use strata_store::verify::verify_dir;
use strata_store::{
    AllFilter, AppendResult, Direction, ExpectedRevision, FsyncPolicy, NewEvent, Options, ReadFrom,
    ReadSlice, RecordedEvent, Store,
};
use uuid::Uuid;

pub mod crash_io;

/// Bytes before the first frame of a segment (docs/ and `frame.rs`).
pub const SEGMENT_HEADER_LEN: u64 = 32;
/// Bytes before a frame's body (length + CRC).
pub const FRAME_PREFIX_LEN: usize = 8;
/// Fixed part of a frame body.
pub const BODY_FIXED_LEN: usize = 56;

/// A small deterministic PRNG (splitmix64): the tests print their seed so a failure can be rerun
/// with `STRATA_TEST_SEED=<seed>`.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[lo, hi)`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        assert!(lo < hi);
        lo + self.next_u64() % (hi - lo)
    }

    pub fn below(&mut self, n: usize) -> usize {
        self.range(0, n as u64) as usize
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.range(0, 100) < percent
    }

    pub fn uuid(&mut self) -> Uuid {
        uuid::Builder::from_random_bytes(
            ((u128::from(self.next_u64()) << 64) | u128::from(self.next_u64())).to_le_bytes(),
        )
        .into_uuid()
    }
}

/// The seed of a test: `STRATA_TEST_SEED` if set, else derived from the clock. Printed.
pub fn test_seed(name: &str) -> u64 {
    let seed = std::env::var("STRATA_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    eprintln!("{name}: STRATA_TEST_SEED={seed}");
    seed
}

/// `options` without fsync (for tests that do not cut power).
pub fn no_fsync(options: Options) -> Options {
    Options {
        fsync: FsyncPolicy::Never,
        ..options
    }
}

pub fn opts(segment_size: u64) -> Options {
    Options {
        segment_size,
        ..Options::default()
    }
}

/// One append as it was acknowledged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ack {
    pub stream: String,
    pub first_revision: u64,
    pub first_position: u64,
    pub ids: Vec<Uuid>,
}

impl Ack {
    pub fn new(stream: &str, r: &AppendResult, ids: Vec<Uuid>) -> Ack {
        assert_eq!(
            r.last_position - r.first_position + 1,
            ids.len() as u64,
            "{r:?}"
        );
        assert_eq!(
            r.last_revision - r.first_revision + 1,
            ids.len() as u64,
            "{r:?}"
        );
        Ack {
            stream: stream.to_owned(),
            first_revision: r.first_revision,
            first_position: r.first_position,
            ids,
        }
    }

    /// `ACK <stream> <first_revision> <first_position> <id>,<id>,...` (one line, no newline).
    pub fn to_line(&self) -> String {
        let ids: Vec<String> = self.ids.iter().map(|u| u.to_string()).collect();
        format!(
            "ACK {} {} {} {}",
            self.stream,
            self.first_revision,
            self.first_position,
            ids.join(",")
        )
    }

    pub fn parse_line(line: &str) -> Option<Ack> {
        let mut parts = line.strip_prefix("ACK ")?.split(' ');
        let stream = parts.next()?.to_owned();
        let first_revision = parts.next()?.parse().ok()?;
        let first_position = parts.next()?.parse().ok()?;
        let ids = parts
            .next()?
            .split(',')
            .map(|s| s.parse().ok())
            .collect::<Option<Vec<Uuid>>>()?;
        if parts.next().is_some() || ids.is_empty() {
            return None;
        }
        Some(Ack {
            stream,
            first_revision,
            first_position,
            ids,
        })
    }
}

/// `n` events with fresh explicit ids, tagged with `tag` (see the module comment), each with a
/// random-length padding so segments fill at varying speeds. The events of one call form one
/// flow: `metadata.correlation_id` is the tag, `causation_id` the id of the previous event.
pub fn tagged_events(
    rng: &mut Rng,
    tag: &str,
    n: usize,
    max_pad: usize,
) -> (Vec<NewEvent>, Vec<Uuid>) {
    let mut events = Vec::with_capacity(n);
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let id = rng.uuid();
        let pad = "x".repeat(rng.below(max_pad + 1));
        let data = format!(r#"{{"tag":"{tag}","i":{i},"n":{n},"pad":"{pad}"}}"#);
        let ty = ["Created", "Updated", "Closed"][rng.below(3)];
        // One flow per append (see `check_flows`): each event caused by the one before it.
        let metadata = match ids.last() {
            Some(cause) => format!(r#"{{"correlation_id":"{tag}","causation_id":"{cause}"}}"#),
            None => format!(r#"{{"correlation_id":"{tag}"}}"#),
        };
        events.push(NewEvent::json(ty, data).with_id(id).with_metadata(metadata));
        ids.push(id);
    }
    (events, ids)
}

/// The tag, index and count of an event made by [`tagged_events`].
pub fn tag_of(e: &RecordedEvent) -> (String, u64, u64) {
    let v: serde_json::Value = serde_json::from_slice(&e.data)
        .unwrap_or_else(|err| panic!("event {} has no JSON payload: {err}", e.position));
    (
        v["tag"].as_str().expect("tag").to_owned(),
        v["i"].as_u64().expect("i"),
        v["n"].as_u64().expect("n"),
    )
}

/// One page of the whole log without a filter (user streams only).
pub fn all_page(
    store: &Store,
    from: ReadFrom,
    direction: Direction,
    limit: usize,
) -> strata_store::Result<ReadSlice> {
    store.read_all(from, direction, limit, &AllFilter::default())
}

/// Every event of the reopened log, checked: dense positions and revisions, whole appends,
/// every acknowledged append present as acknowledged.
pub fn check_log(store: &Store, acks: &[Ack]) -> Vec<RecordedEvent> {
    let events = all_events(store);
    check_dense(store, &events);
    check_whole_appends(&events);
    check_acks(&events, acks);
    check_flows(store, &events);
    events
}

/// The correlation index answers like the log: every flow of [`tagged_events`] (events whose
/// metadata names a `correlation_id`) reads back through `correlation_id` exactly as the log
/// holds it, and the last event of each flow walks its causes back to the flow's first event.
pub fn check_flows(store: &Store, events: &[RecordedEvent]) {
    let mut flows: std::collections::BTreeMap<String, Vec<&RecordedEvent>> = Default::default();
    for e in events {
        let links = strata_store::correlation::links_of(&e.metadata);
        if let Some(c) = links.correlation_id {
            flows.entry(c.into_owned()).or_default().push(e);
        }
    }
    for (flow, members) in &flows {
        let filter = AllFilter {
            correlation_id: Some(flow.clone()),
            include_system: true,
            ..AllFilter::default()
        };
        let page = store
            .read_all(ReadFrom::Start, Direction::Forward, 10_000, &filter)
            .expect("read one flow");
        let got: Vec<u64> = page.events.iter().map(|e| e.position).collect();
        let want: Vec<u64> = members.iter().map(|e| e.position).collect();
        assert_eq!(got, want, "flow {flow}");
        let (Some(first), Some(last)) = (members.first(), members.last()) else {
            continue;
        };
        let chain = store
            .causes(last.id, 10_000)
            .expect("causes")
            .unwrap_or_else(|| panic!("flow {flow}: event {} not found by id", last.id));
        let causes: Vec<u64> = chain.events.iter().map(|e| e.position).collect();
        assert_eq!(causes, want[..want.len() - 1], "flow {flow}: causes");
        let effects = store.effects(first.id, 10_000).expect("effects");
        let effects: Vec<u64> = effects.events.iter().map(|e| e.position).collect();
        assert_eq!(effects, want[1..], "flow {flow}: effects");
    }
}

/// Every readable event of a damaged log in position order (system streams included), stepping
/// over each position whose read answers `Corruption` (which must name the position), and
/// those positions.
pub fn intact_events(store: &Store) -> (Vec<RecordedEvent>, Vec<u64>) {
    let mut out = Vec::new();
    let mut damaged = Vec::new();
    let mut from = 0;
    loop {
        match store.replay(from, |v| out.push(v.to_owned_event())) {
            Ok(_) => return (out, damaged),
            Err(strata_store::Error::Corruption {
                position: Some(p), ..
            }) => {
                assert!(
                    p >= from,
                    "damage at {p} reported while reading from {from}"
                );
                damaged.push(p);
                from = p + 1;
            }
            Err(e) => panic!("replay over damage: {e}"),
        }
    }
}

/// Every event of the log, system streams included, read forward in pages.
pub fn all_events(store: &Store) -> Vec<RecordedEvent> {
    let filter = AllFilter {
        include_system: true,
        ..AllFilter::default()
    };
    let mut out = Vec::new();
    let mut from = ReadFrom::Start;
    loop {
        let page = store
            .read_all(from, Direction::Forward, 500, &filter)
            .expect("read_all");
        out.extend(page.events);
        if page.end {
            break;
        }
        from = ReadFrom::At(page.next.expect("forward reads always give next"));
    }
    out
}

/// Positions are exactly `0..next_position`; every stream's revisions are exactly `0..k` in
/// position order; each stream read (forward) returns the same events as the log.
pub fn check_dense(store: &Store, events: &[RecordedEvent]) {
    assert_eq!(
        events.len() as u64,
        store.next_position(),
        "read_all returned {} events, next_position is {}",
        events.len(),
        store.next_position()
    );
    let mut by_stream: HashMap<&str, Vec<&RecordedEvent>> = HashMap::new();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.position, i as u64, "positions not dense at index {i}");
        let v = by_stream.entry(&e.stream).or_default();
        assert_eq!(
            e.revision,
            v.len() as u64,
            "stream {} revisions not dense at position {}",
            e.stream,
            e.position
        );
        v.push(e);
    }
    for (stream, evs) in by_stream {
        let read = store
            .read_stream(stream, ReadFrom::Start, Direction::Forward, 1_000_000)
            .unwrap_or_else(|e| panic!("read_stream {stream}: {e}"));
        assert_eq!(read.events.len(), evs.len(), "stream {stream}");
        for (a, b) in read.events.iter().zip(&evs) {
            assert_eq!(a, *b, "stream {stream}");
        }
        let head = store.head(stream).expect("head");
        assert_eq!(head.last_revision, Some(evs.len() as u64 - 1), "{stream}");
        assert_eq!(head.last_position, Some(evs[evs.len() - 1].position));
    }
}

/// No append is present only in part: events of one tag are one contiguous run of positions and
/// revisions of one stream with indexes `0..n`. Returns the tags present.
pub fn check_whole_appends(events: &[RecordedEvent]) -> Vec<String> {
    let mut tags = Vec::new();
    let mut i = 0;
    while i < events.len() {
        let first = &events[i];
        let (tag, idx, n) = tag_of(first);
        assert_eq!(
            idx, 0,
            "position {}: append {tag} starts at its event {idx} (partial append)",
            first.position
        );
        for k in 0..n as usize {
            let e = events.get(i + k).unwrap_or_else(|| {
                panic!(
                    "append {tag} at position {} is cut after {k} of {n} events",
                    first.position
                )
            });
            let (t, j, m) = tag_of(e);
            assert!(
                t == tag && j == k as u64 && m == n,
                "append {tag} at position {}: event {k} is {t}/{j}/{m} (partial or interleaved append)",
                first.position
            );
            assert_eq!(e.stream, first.stream, "append {tag} spans streams");
            assert_eq!(e.revision, first.revision + k as u64, "append {tag}");
            assert_eq!(
                e.timestamp_micros, first.timestamp_micros,
                "append {tag}: one append has one timestamp"
            );
        }
        tags.push(tag);
        i += n as usize;
    }
    tags
}

/// Every acknowledged append is in `events` with its stream, revisions, positions and ids.
pub fn check_acks(events: &[RecordedEvent], acks: &[Ack]) {
    for ack in acks {
        for (k, id) in ack.ids.iter().enumerate() {
            let pos = ack.first_position + k as u64;
            let e = events.get(pos as usize).unwrap_or_else(|| {
                panic!(
                    "acknowledged append {ack:?} lost: log ends at {} events",
                    events.len()
                )
            });
            assert!(
                e.id == *id
                    && e.stream == ack.stream
                    && e.revision == ack.first_revision + k as u64,
                "acknowledged append {ack:?}, event {k}: found {} {}@{} id {} at position {pos}",
                e.event_type,
                e.stream,
                e.revision,
                e.id
            );
        }
    }
}

/// `verify_dir` finds no problem. Returns its notes (e.g. a torn tail recovery will cut).
pub fn assert_verify_clean(dir: &Path) -> Vec<String> {
    let report = verify_dir(dir, |_, _| {}).expect("verify_dir");
    assert!(
        report.problems.is_empty(),
        "verify_dir found problems in {}: {:#?}",
        dir.display(),
        report.problems
    );
    report.notes
}

/// Files of `dir` with this extension, sorted by name (= log order for segments).
pub fn files_with_ext(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

pub fn segments(dir: &Path) -> Vec<PathBuf> {
    files_with_ext(dir, "seg")
}

pub fn index_files(dir: &Path) -> Vec<PathBuf> {
    files_with_ext(dir, "idx")
}

/// Copies the regular files of `src` (not the lock file) into `dst`.
pub fn copy_dir(src: &Path, dst: &Path) {
    fs::create_dir_all(dst).expect("create dst");
    for e in fs::read_dir(src).expect("read_dir") {
        let e = e.expect("entry");
        if e.file_name() == "LOCK" || !e.file_type().expect("type").is_file() {
            continue;
        }
        fs::copy(e.path(), dst.join(e.file_name())).expect("copy");
    }
}

/// One frame found by [`frames`].
#[derive(Clone, Debug)]
pub struct FrameInfo {
    /// Offset of the frame (its length prefix) in the segment.
    pub offset: u64,
    /// Total length (prefix + body).
    pub len: u64,
    pub position: u64,
    pub commit_end: bool,
    /// Offset of the first data byte.
    pub data_offset: u64,
    pub data_len: u64,
}

/// Parses the frames of a segment file (layout in `frame.rs`), without checking CRCs.
pub fn frames(bytes: &[u8]) -> Vec<FrameInfo> {
    let mut out = Vec::new();
    let mut at = SEGMENT_HEADER_LEN as usize;
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]) as u64;
    let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().unwrap()) as u64;
    while at + FRAME_PREFIX_LEN + BODY_FIXED_LEN <= bytes.len() {
        let body_len = u32_at(at) as usize;
        if body_len < BODY_FIXED_LEN || at + FRAME_PREFIX_LEN + body_len > bytes.len() {
            break;
        }
        let b = at + FRAME_PREFIX_LEN;
        let s = u16_at(b + 42);
        let t = u16_at(b + 44);
        out.push(FrameInfo {
            offset: at as u64,
            len: (FRAME_PREFIX_LEN + body_len) as u64,
            position: u64::from_le_bytes(bytes[b..b + 8].try_into().unwrap()),
            commit_end: bytes[b + 40] & 1 != 0,
            data_offset: (b + BODY_FIXED_LEN) as u64 + s + t,
            data_len: u32_at(b + 48),
        });
        at += FRAME_PREFIX_LEN + body_len;
    }
    out
}

pub fn flip_byte(path: &Path, offset: u64) {
    let mut bytes = fs::read(path).expect("read");
    bytes[offset as usize] ^= 0x5a;
    fs::write(path, bytes).expect("write");
}

pub fn file_len(path: &Path) -> u64 {
    fs::metadata(path).expect("metadata").len()
}

/// A store in `dir` with several sealed segments (4 KiB segments, with index files) and an open
/// one: 60 appends of 1-3 tagged events over `streams` streams `s-0`, `s-1`, ... Returns every
/// event, read back before the store was closed.
#[allow(dead_code)]
pub fn build_sealed(dir: &Path, rng: &mut Rng, streams: usize) -> Vec<RecordedEvent> {
    let store = Store::open(dir, opts(4096)).expect("open");
    for a in 0..60 {
        let (evs, _) = tagged_events(rng, &format!("a{a}"), 1 + a % 3, 60);
        store
            .append(&format!("s-{}", a % streams), ExpectedRevision::Any, evs)
            .expect("append");
    }
    let events = all_events(&store);
    store.close().expect("close");
    assert!(segments(dir).len() >= 4, "want several sealed segments");
    events
}
