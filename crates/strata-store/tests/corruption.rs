//! Damaged files: byte flips in sealed and open segments, missing and damaged index files.
//!
//! Rules under test (docs/architecture.md, "The log" and "Indexes"; docs/operations.md,
//! "Damage"): corruption is never skipped or cut silently, and never hides the log: it is
//! reported with the file and offset (`Store::damage`), every event outside the damaged bytes
//! stays readable with its position and revision, and a read that needs a damaged event answers
//! `Corruption` naming the position. Damage in a sealed segment whose index is intact leaves
//! appends running (`Health::Damaged`); damage whose lost events are unknown (the open segment,
//! a segment whose index had to be rebuilt) makes the store read-only. A missing or damaged
//! index file of an intact segment is rebuilt from its segment, never trusted blindly.

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use common::*;
use strata_store::verify::verify_dir;
use strata_store::{
    AllFilter, Direction, Error, ExpectedRevision, Health, NewEvent, Options, ReadFrom,
    RecordedEvent, Store, StreamMetadata,
};

/// A frame in the middle of the first (sealed) segment, and the event it holds.
fn victim(dir: &Path, events: &[RecordedEvent]) -> (PathBuf, FrameInfo, RecordedEvent) {
    let seg = segments(dir).remove(0);
    let fr = frames(&std::fs::read(&seg).expect("read"));
    assert!(fr.len() >= 5, "{} frames in the first segment", fr.len());
    let f = fr[fr.len() / 2].clone();
    assert!(f.data_len > 0);
    let e = events[f.position as usize].clone();
    (seg, f, e)
}

fn assert_corruption_at<T: std::fmt::Debug>(
    r: Result<T, Error>,
    file: &Path,
    offset: u64,
    what: &str,
) {
    match r {
        Err(Error::Corruption {
            file: f, offset: o, ..
        }) => {
            assert_eq!(f, file, "{what}: corruption names the wrong file");
            assert_eq!(o, offset, "{what}: corruption names the wrong offset");
        }
        other => panic!(
            "{what}: expected Corruption in {} at {offset}, got {other:?}",
            file.display()
        ),
    }
}

fn damaged_reason(store: &Store) -> String {
    match store.health() {
        Health::Damaged(reason) => reason,
        other => panic!("store should be damaged (appends running), is {other:?}"),
    }
}

/// Appends and metadata writes still succeed.
fn assert_accepts_writes(store: &Store, what: &str) {
    store
        .append(
            "s-new",
            ExpectedRevision::Any,
            vec![NewEvent::json("T", "{}")],
        )
        .unwrap_or_else(|e| panic!("{what}: append: {e}"));
    store
        .set_metadata("s-new", StreamMetadata::default())
        .unwrap_or_else(|e| panic!("{what}: set_metadata: {e}"));
}

/// The one damaged range `store` lists: in `file` at `offset`, holding `position`.
fn assert_one_damage(store: &Store, file: &Path, offset: u64, position: u64, what: &str) {
    let damage = store.damage();
    assert_eq!(damage.len(), 1, "{what}: {damage:#?}");
    assert_eq!(
        (damage[0].file.as_path(), damage[0].offset),
        (file, offset),
        "{what}"
    );
    assert!(
        damage[0].positions.contains(&position),
        "{what}: {damage:#?}"
    );
    assert!(damage[0].length > 0, "{what}: {damage:#?}");
}

fn read_only_reason(store: &Store) -> String {
    match store.health() {
        Health::ReadOnly(reason) => reason,
        other => panic!("store should be read-only, is {other:?}"),
    }
}

fn assert_refuses_writes(store: &Store, what: &str) {
    let r = store.append(
        "s-new",
        ExpectedRevision::Any,
        vec![NewEvent::json("T", "{}")],
    );
    assert!(
        matches!(r, Err(Error::ReadOnly { .. })),
        "{what}: append gave {r:?}"
    );
    let r = store.set_metadata("s-0", StreamMetadata::default());
    assert!(
        matches!(r, Err(Error::ReadOnly { .. })),
        "{what}: set_metadata gave {r:?}"
    );
    let r = store.delete_stream("s-1", ExpectedRevision::Any, false);
    assert!(
        matches!(r, Err(Error::ReadOnly { .. })),
        "{what}: delete gave {r:?}"
    );
}

#[test]
fn byte_flip_in_sealed_segment_is_reported_by_every_read_path_and_leaves_appends_running() {
    let mut rng = Rng::new(test_seed("sealed_flip"));
    let tmp = tempfile::tempdir().expect("tempdir");
    let base = tmp.path().join("base");
    let events = build_sealed(&base, &mut rng, 5);
    let (seg, frame, hit) = victim(&base, &events);
    let seg_name = seg.file_name().expect("name").to_owned();
    flip_byte(&seg, frame.data_offset + frame.data_len / 2);

    // Offline verification names the file and the offset.
    // (Follow-on problems of the same damage may be listed after it.)
    let report = verify_dir(&base, |_, _| {}).expect("verify_dir");
    assert!(
        report
            .problems
            .first()
            .is_some_and(|p| p.contains(&seg.display().to_string())
                && p.contains(&format!("offset {}", frame.offset))
                && p.contains("checksum")),
        "{:#?}",
        report.problems
    );

    type ReadPath = fn(&Store, &RecordedEvent) -> Result<usize, Error>;
    let paths: Vec<(&str, ReadPath)> = vec![
        ("read_stream forward", |s, e| {
            s.read_stream(&e.stream, ReadFrom::Start, Direction::Forward, 1000)
                .map(|r| r.events.len())
        }),
        ("read_stream backward", |s, e| {
            s.read_stream(&e.stream, ReadFrom::End, Direction::Backward, 1000)
                .map(|r| r.events.len())
        }),
        ("read_event", |s, e| {
            s.read_event(&e.stream, e.revision)
                .map(|r| usize::from(r.is_some()))
        }),
        ("read_all forward", |s, _| {
            all_page(s, ReadFrom::Start, Direction::Forward, 10_000).map(|r| r.events.len())
        }),
        ("read_all backward", |s, _| {
            all_page(s, ReadFrom::End, Direction::Backward, 10_000).map(|r| r.events.len())
        }),
        ("read_all by type", |s, e| {
            let f = AllFilter {
                types: vec![e.event_type.clone()],
                ..AllFilter::default()
            };
            s.read_all(ReadFrom::Start, Direction::Forward, 10_000, &f)
                .map(|r| r.events.len())
        }),
        ("read_all by category", |s, _| {
            let f = AllFilter {
                category: Some("s".into()),
                ..AllFilter::default()
            };
            s.read_all(ReadFrom::Start, Direction::Forward, 10_000, &f)
                .map(|r| r.events.len())
        }),
        ("replay", |s, _| {
            let mut n = 0;
            s.replay(0, |_| n += 1).map(|_| n)
        }),
        ("subscription", |s, _| {
            let mut sub = s.subscribe_all(0, AllFilter::default());
            let mut n = 0;
            loop {
                let b = sub.poll(64)?;
                if b.is_empty() {
                    return Ok(n);
                }
                n += b.len();
            }
        }),
    ];
    for (what, read) in paths {
        let case = tempfile::tempdir().expect("tempdir");
        let dir = case.path();
        copy_dir(&base, dir);
        let file = dir.join(&seg_name);
        // Open reads index files only: it does not see the damage.
        let store = Store::open(dir, opts(4096))
            .unwrap_or_else(|e| panic!("{what}: open must not scan sealed segments: {e}"));
        assert_eq!(store.health(), Health::Ok, "{what}");
        assert_corruption_at(read(&store, &hit), &file, frame.offset, what);
        let reason = damaged_reason(&store);
        assert!(
            reason.contains(&file.display().to_string())
                && reason.contains(&frame.offset.to_string()),
            "{what}: the health should name the file and offset: {reason}"
        );
        assert_one_damage(&store, &file, frame.offset, hit.position, what);
        // Reading it again still fails the same way; nothing was skipped.
        assert_corruption_at(read(&store, &hit), &file, frame.offset, what);
        // The index is intact, so stream heads are exact: appends go on.
        assert_accepts_writes(&store, what);
        assert_corruption_at(read(&store, &hit), &file, frame.offset, what);
        // Undamaged data stays readable.
        let after = store
            .read_all(
                ReadFrom::At(hit.position + 1),
                Direction::Forward,
                10_000,
                &AllFilter::default(),
            )
            .unwrap_or_else(|e| panic!("{what}: events after the damage: {e}"));
        assert_eq!(
            after
                .events
                .iter()
                .filter(|e| e.stream != "s-new")
                .cloned()
                .collect::<Vec<_>>(),
            events[hit.position as usize + 1..],
            "{what}"
        );
        let (intact, damaged) = intact_events(&store);
        assert_eq!(damaged, vec![hit.position], "{what}");
        let mut want: Vec<RecordedEvent> = events.clone();
        want.remove(hit.position as usize);
        assert_eq!(
            intact
                .iter()
                .filter(|e| !e.stream.contains("s-new"))
                .cloned()
                .collect::<Vec<_>>(),
            want,
            "{what}"
        );
        let other = events
            .iter()
            .find(|e| e.stream != hit.stream)
            .expect("another stream");
        assert_eq!(
            store
                .read_event(&other.stream, other.revision)
                .expect("read_event"),
            Some(other.clone()),
            "{what}"
        );
        store.close().expect("close");
        drop(store);
        // The damaged segment was not touched.
        assert_eq!(
            std::fs::read(&file).expect("read"),
            std::fs::read(base.join(&seg_name)).expect("read"),
            "{what}"
        );
    }
}

/// Damage in a sealed segment whose index file is gone: the rebuild steps over the damaged
/// frame, keeps its index in memory only (nothing is written from a damaged segment), and the
/// store opens read-only (what the lost event was is unknown: it may be a stream's head) with
/// every other event readable.
#[test]
fn byte_flip_in_sealed_segment_without_index_opens_read_only_with_the_rest_readable() {
    let mut rng = Rng::new(test_seed("sealed_flip_no_index"));
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let events = build_sealed(dir, &mut rng, 5);
    let (seg, frame, hit) = victim(dir, &events);
    flip_byte(&seg, frame.data_offset);
    let idx = index_files(dir).remove(0);
    std::fs::remove_file(&idx).expect("remove index");
    for attempt in 0..2 {
        let what = format!("open #{attempt}");
        let store = Store::open(dir, opts(4096)).expect("open");
        let reason = read_only_reason(&store);
        assert!(reason.contains(&frame.offset.to_string()), "{reason}");
        assert_one_damage(&store, &seg, frame.offset, hit.position, &what);
        assert!(!store.damage()[0].indexed);
        let (intact, damaged) = intact_events(&store);
        assert_eq!(damaged, vec![hit.position], "{what}");
        let mut want = events.clone();
        want.remove(hit.position as usize);
        assert_eq!(intact, want, "{what}");
        // The damaged event's stream: reading through it answers the damage, never a page that
        // skips the revision.
        let r = store.read_stream(&hit.stream, ReadFrom::Start, Direction::Forward, 1000);
        assert_corruption_at(r, &seg, frame.offset, &what);
        assert_refuses_writes(&store, &what);
        assert!(
            !idx.exists(),
            "no index may be written from a damaged segment"
        );
        store.close().expect("close");
    }
}

#[test]
fn append_to_a_stream_whose_head_event_is_damaged_fails_and_writes_nothing() {
    let mut rng = Rng::new(test_seed("damaged_head"));
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let store = Store::open(dir, opts(4096)).expect("open");
    let (evs, _) = tagged_events(&mut rng, "head", 1, 10);
    store
        .append("lonely-1", ExpectedRevision::NoStream, evs)
        .expect("append");
    for a in 0..60 {
        let (evs, _) = tagged_events(&mut rng, &format!("a{a}"), 2, 60);
        store
            .append("busy-1", ExpectedRevision::Any, evs)
            .expect("append");
    }
    store.close().expect("close");
    drop(store);
    let seg = segments(dir).remove(0);
    let f = frames(&std::fs::read(&seg).expect("read")).remove(0);
    assert_eq!(f.position, 0);
    flip_byte(&seg, f.data_offset);
    let store = Store::open(dir, opts(4096)).expect("open");
    let next = store.next_position();
    // The concurrency check needs the stream's head, which is the damaged event.
    let r = store.append(
        "lonely-1",
        ExpectedRevision::Exact(0),
        vec![NewEvent::json("T", "{}")],
    );
    assert!(
        matches!(
            r,
            Err(Error::Corruption { ref file, offset, .. }) if *file == seg && offset == f.offset
        ) || matches!(r, Err(Error::ReadOnly { .. })),
        "append over a damaged head: {r:?}"
    );
    // The index is intact: the damage is contained, other streams take appends.
    damaged_reason(&store);
    assert_eq!(store.next_position(), next, "nothing may be appended");
    assert_accepts_writes(&store, "damaged head");
}

/// A sealed segment cut short: its index no longer matches, the rebuild finds the frames up to
/// the cut and counts the positions up to the next segment's first as lost; the store opens
/// read-only with everything else readable. A whole sealed segment missing still fails open
/// (there is nothing to resynchronise on: the operator must put it back).
#[test]
fn truncated_sealed_segment_opens_read_only_and_a_missing_one_fails_open() {
    let mut rng = Rng::new(test_seed("truncated_sealed"));
    let tmp = tempfile::tempdir().expect("tempdir");
    let base = tmp.path().join("base");
    let events = build_sealed(&base, &mut rng, 5);
    let segs = segments(&base);
    let victim = segs[1].file_name().expect("name").to_owned();
    let fr = frames(&std::fs::read(&segs[1]).expect("read"));
    let last = fr.last().expect("frames").clone();
    for (what, cut) in [
        ("cut inside the last frame", last.offset + last.len - 3),
        ("cut at the start of the last frame", last.offset),
    ] {
        let case = tempfile::tempdir().expect("tempdir");
        let dir = case.path();
        copy_dir(&base, dir);
        let file = dir.join(&victim);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&file)
            .and_then(|f| f.set_len(cut))
            .expect("truncate");
        let report = verify_dir(dir, |_, _| {}).expect("verify_dir");
        assert!(!report.damage.is_empty(), "{what}: verify_dir saw nothing");
        let store = Store::open(dir, opts(4096)).unwrap_or_else(|e| panic!("{what}: {e}"));
        read_only_reason(&store);
        let damage = store.damage();
        assert_eq!(damage.len(), 1, "{what}: {damage:#?}");
        assert_eq!(damage[0].file, file, "{what}");
        assert_eq!(
            damage[0].positions,
            last.position..last.position + 1,
            "{what}"
        );
        let (intact, damaged) = intact_events(&store);
        assert_eq!(damaged, vec![last.position], "{what}");
        let mut want = events.clone();
        want.remove(last.position as usize);
        assert_eq!(intact, want, "{what}");
    }
    let case = tempfile::tempdir().expect("tempdir");
    let dir = case.path();
    copy_dir(&base, dir);
    std::fs::remove_file(dir.join(&victim)).expect("remove");
    let report = verify_dir(dir, |_, _| {}).expect("verify_dir");
    assert!(
        !report.problems.is_empty(),
        "segment deleted: verify_dir saw nothing"
    );
    match Store::open(dir, opts(4096)) {
        Err(Error::Corruption { file: f, .. }) => {
            assert_eq!(f, dir.join(segs[2].file_name().expect("name")));
        }
        Err(e) => panic!("segment deleted: expected Corruption, got {e}"),
        Ok(s) => panic!(
            "segment deleted: opened with a hole in the log: health {:?}",
            s.health()
        ),
    }
}

#[test]
fn missing_first_segment_is_not_accepted_silently() {
    let mut rng = Rng::new(test_seed("missing_first"));
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let events = build_sealed(dir, &mut rng, 5);
    let first = segments(dir).remove(0);
    std::fs::remove_file(first.with_extension("idx")).expect("remove index");
    std::fs::remove_file(&first).expect("remove segment");
    let report = verify_dir(dir, |_, _| {}).expect("verify_dir");
    let opened = Store::open(dir, opts(4096));
    let silently_healthy = matches!(&opened, Ok(s) if s.health() == Health::Ok);
    let remaining_first: u64 = segments(dir)[0]
        .file_stem()
        .expect("stem")
        .to_string_lossy()
        .parse()
        .expect("name");
    if let Ok(s) = &opened {
        // Whatever the policy, a read from the start must not answer "empty" over a log that
        // still holds events from `remaining_first` on.
        let page = all_page(s, ReadFrom::Start, Direction::Forward, 10_000).expect("read_all");
        assert_eq!(
            page.events.first().map(|e| e.position),
            Some(remaining_first),
            "read_all from Start over a log holding {} events",
            events.len() as u64 - remaining_first
        );
    }
    assert!(
        !report.problems.is_empty() || !silently_healthy,
        "positions 0.. are gone and neither verify_dir nor open noticed"
    );
    assert!(
        !silently_healthy,
        "open accepted a log that does not start at position 0"
    );
}

/// A store whose single (open) segment holds 30 appends; returns events and append boundaries.
fn build_open(dir: &Path, rng: &mut Rng) -> (Vec<RecordedEvent>, Vec<u64>) {
    let store = Store::open(dir, opts(1 << 20)).expect("open");
    let mut starts = Vec::new();
    for a in 0..30 {
        let (evs, _) = tagged_events(rng, &format!("a{a}"), 1 + a % 3, 60);
        let r = store
            .append(&format!("s-{}", a % 4), ExpectedRevision::Any, evs)
            .expect("append");
        starts.push(r.first_position);
    }
    let events = all_events(&store);
    store.close().expect("close");
    assert_eq!(segments(dir).len(), 1);
    (events, starts)
}

#[test]
fn damage_in_open_segment_before_valid_frames_is_contained_not_a_torn_tail() {
    let mut rng = Rng::new(test_seed("open_segment_damage"));
    let tmp = tempfile::tempdir().expect("tempdir");
    let base = tmp.path().join("base");
    let (events, starts) = build_open(&base, &mut rng);
    let seg = segments(&base).remove(0);
    let seg_name = seg.file_name().expect("name").to_owned();
    let fr = frames(&std::fs::read(&seg).expect("read"));
    // The second frame of append 13 (3 events), in the middle of the log.
    let f = fr
        .iter()
        .find(|f| f.position == starts[13] + 1)
        .expect("frame")
        .clone();
    let cases = [
        ("data byte", f.data_offset + 1),
        ("crc byte", f.offset + 5),
        ("length prefix", f.offset + 1),
        ("frame position", f.offset + 8),
    ];
    for (what, at) in cases {
        let case = tempfile::tempdir().expect("tempdir");
        let dir = case.path();
        copy_dir(&base, dir);
        let file = dir.join(&seg_name);
        flip_byte(&file, at);
        let len = file_len(&file);
        let report = verify_dir(dir, |_, _| {}).expect("verify_dir");
        assert!(
            report
                .problems
                .iter()
                .any(|p| p.contains(&file.display().to_string())
                    && p.contains(&format!("offset {}", f.offset))),
            "{what}: verify_dir must report the damage: {report:?}"
        );
        for attempt in 0..2 {
            let store = Store::open(dir, opts(1 << 20))
                .unwrap_or_else(|e| panic!("{what}: open failed: {e}"));
            let reason = read_only_reason(&store);
            assert!(
                reason.contains("corruption") && reason.contains(&f.offset.to_string()),
                "{what}: fault should report the damage and its offset: {reason}"
            );
            assert_one_damage(&store, &file, f.offset, f.position, what);
            // Every event but the damaged one is readable, before and after it, with its
            // position; the damaged one answers Corruption.
            let (got, damaged) = intact_events(&store);
            assert_eq!(damaged, vec![f.position], "{what} (open #{attempt})");
            let mut want = events.clone();
            want.remove(f.position as usize);
            assert_eq!(got, want, "{what} (open #{attempt})");
            assert_eq!(store.next_position(), events.len() as u64);
            // Heads after the damage are right.
            for s in 0..4 {
                let name = format!("s-{s}");
                let last = events.iter().rfind(|e| e.stream == name).expect("stream");
                let head = store.head(&name).expect("head");
                assert_eq!(head.last_revision, Some(last.revision), "{what}: {name}");
            }
            assert_refuses_writes(&store, what);
            store.close().expect("close");
            drop(store);
            assert_eq!(
                file_len(&file),
                len,
                "{what}: the log must not be truncated"
            );
        }
    }
}

#[test]
fn damage_in_the_last_append_of_open_segment_is_a_torn_tail() {
    let mut rng = Rng::new(test_seed("open_segment_tail"));
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (events, starts) = build_open(dir, &mut rng);
    let seg = segments(dir).remove(0);
    let fr = frames(&std::fs::read(&seg).expect("read"));
    let last_start = *starts.last().expect("appends");
    let last = fr.last().expect("frames").clone();
    flip_byte(&seg, last.data_offset);
    let store = Store::open(dir, opts(1 << 20)).expect("open");
    assert_eq!(store.health(), Health::Ok);
    assert_eq!(all_events(&store), events[..last_start as usize]);
    let first_of_last = fr.iter().find(|f| f.position == last_start).expect("frame");
    assert_eq!(
        file_len(&seg),
        first_of_last.offset,
        "cut back to the last whole append"
    );
    let r = store
        .append(
            "s-0",
            ExpectedRevision::Any,
            vec![NewEvent::json("T", "{}")],
        )
        .expect("append after recovery");
    assert_eq!(r.first_position, last_start);
}

// ---------------------------------------------------------------------------------------------
// Index files.

/// Everything appended, to retry later (the idempotency probe).
struct Appended {
    stream: String,
    expected: ExpectedRevision,
    events: Vec<NewEvent>,
}

const STREAMS: &[&str] = &[
    "order-1", "order-2", "order-3", "user-1", "user-2", "user-3", "cart-x-1", "plain",
];

/// A store with many sealed segments, several categories and types, binary events with metadata,
/// a soft delete followed by a re-creation, a hard delete, and stream metadata.
fn build_rich(dir: &Path, rng: &mut Rng) -> Vec<Appended> {
    let store = Store::open(dir, opts(4096)).expect("open");
    let mut appended = Vec::new();
    for a in 0..150 {
        // Every stream exists early (the deletes below need them), then random ones.
        let stream = STREAMS[if a < STREAMS.len() {
            a
        } else {
            rng.below(STREAMS.len())
        }];
        if stream == "user-3" && a > 100 {
            continue;
        }
        let n = 1 + rng.below(3);
        let (mut evs, _) = tagged_events(rng, &format!("a{a}"), n, 80);
        if a % 7 == 0 {
            let e = &mut evs[0];
            *e = NewEvent::binary("Blob", vec![0u8, 1, 2, 255])
                .with_id(e.id.expect("id"))
                .with_metadata(format!(r#"{{"a":{a}}}"#));
        }
        let expected = match store.head(stream).expect("head").last_revision {
            None => ExpectedRevision::NoStream,
            Some(r) if rng.chance(50) && !store.head(stream).expect("head").is_deleted() => {
                ExpectedRevision::Exact(r)
            }
            Some(_) => ExpectedRevision::Any,
        };
        store.append(stream, expected, evs.clone()).expect("append");
        appended.push(Appended {
            stream: stream.to_owned(),
            expected,
            events: evs,
        });
        match a {
            40 => {
                store
                    .delete_stream("user-2", ExpectedRevision::Any, false)
                    .expect("soft delete");
            }
            60 => {
                store
                    .set_metadata(
                        "order-2",
                        StreamMetadata {
                            max_count: Some(3),
                            custom: Some(serde_json::json!({"owner": "ops"})),
                            ..StreamMetadata::default()
                        },
                    )
                    .expect("metadata");
            }
            80 => {
                store
                    .set_metadata(
                        "order-3",
                        StreamMetadata {
                            truncate_before: Some(2),
                            ..StreamMetadata::default()
                        },
                    )
                    .expect("metadata");
            }
            101 => {
                store
                    .delete_stream("user-3", ExpectedRevision::Any, true)
                    .expect("hard delete");
            }
            _ => {}
        }
    }
    store.close().expect("close");
    assert!(index_files(dir).len() >= 5, "want many sealed segments");
    appended
}

/// Every read answer of the store, as text (so a difference prints readably).
fn snapshot(store: &Store) -> Vec<String> {
    let mut out = Vec::new();
    let mut names: Vec<String> = STREAMS.iter().map(|s| s.to_string()).collect();
    names.extend(["$$order-2".into(), "$$user-3".into(), "missing-1".into()]);
    for s in &names {
        out.push(format!("head {s}: {:?}", store.head(s)));
        out.push(format!("metadata {s}: {:?}", store.metadata(s)));
        for (from, dir) in [
            (ReadFrom::Start, Direction::Forward),
            (ReadFrom::End, Direction::Backward),
            (ReadFrom::At(2), Direction::Forward),
            (ReadFrom::At(4), Direction::Backward),
        ] {
            out.push(format!(
                "read_stream {s} {from:?} {dir:?}: {:?}",
                store.read_stream(s, from, dir, 1000)
            ));
        }
        // Paged, both directions.
        for dir in [Direction::Forward, Direction::Backward] {
            let mut from = if dir == Direction::Forward {
                ReadFrom::Start
            } else {
                ReadFrom::End
            };
            for _ in 0..100 {
                let r = store.read_stream(s, from, dir, 3);
                out.push(format!("page {s} {from:?} {dir:?}: {r:?}"));
                match r {
                    Ok(p) if !p.end => from = ReadFrom::At(p.next.expect("next")),
                    _ => break,
                }
            }
        }
        for rev in 0..40 {
            out.push(format!(
                "read_event {s}@{rev}: {:?}",
                store.read_event(s, rev)
            ));
        }
    }
    let filters = [
        AllFilter::default(),
        AllFilter {
            include_system: true,
            ..AllFilter::default()
        },
        AllFilter {
            category: Some("order".into()),
            ..AllFilter::default()
        },
        AllFilter {
            category: Some("user".into()),
            types: vec!["Created".into()],
            ..AllFilter::default()
        },
        AllFilter {
            types: vec!["Updated".into(), "Blob".into()],
            ..AllFilter::default()
        },
        AllFilter {
            types: vec!["$metadata".into()],
            include_system: true,
            ..AllFilter::default()
        },
        AllFilter {
            stream_prefix: Some("order-1".into()),
            ..AllFilter::default()
        },
        AllFilter {
            stream_prefix: Some("cart-x".into()),
            ..AllFilter::default()
        },
        AllFilter {
            category: Some("nothing".into()),
            ..AllFilter::default()
        },
    ];
    for f in &filters {
        for (from, dir) in [
            (ReadFrom::Start, Direction::Forward),
            (ReadFrom::End, Direction::Backward),
            (ReadFrom::At(100), Direction::Forward),
            (ReadFrom::At(100), Direction::Backward),
        ] {
            out.push(format!(
                "read_all {f:?} {from:?} {dir:?}: {:?}",
                store.read_all(from, dir, 10_000, f)
            ));
        }
        let mut from = ReadFrom::Start;
        for _ in 0..1000 {
            let r = store.read_all(from, Direction::Forward, 7, f);
            out.push(format!("read_all page {f:?} {from:?}: {r:?}"));
            match r {
                Ok(p) if !p.end => from = ReadFrom::At(p.next.expect("next")),
                _ => break,
            }
        }
    }
    for (prefix, limit) in [
        ("", 1000),
        ("order-", 2),
        ("user", 1),
        ("cart-", 5),
        ("zzz", 3),
    ] {
        let mut after: Option<String> = None;
        for _ in 0..100 {
            let r = store.list_streams(prefix, after.as_deref(), limit);
            out.push(format!("list_streams {prefix:?} after {after:?}: {r:?}"));
            match r {
                Ok((_, Some(next))) => after = Some(next),
                _ => break,
            }
        }
    }
    let mut replayed = Vec::new();
    let end = store.replay(0, |v| {
        replayed.push((v.position, v.stream.to_owned(), v.id))
    });
    out.push(format!("replay: {end:?} {replayed:?}"));
    out.push(format!("next_position: {}", store.next_position()));
    out
}

/// Retries every append (same ids, same expectation) and one partial retry: all must be answered
/// from the event-id index without writing anything.
fn idempotency_probe(store: &Store, appended: &[Appended]) -> Vec<String> {
    let before = store.next_position();
    let mut out = Vec::new();
    for a in appended {
        let r = store.append(&a.stream, a.expected, a.events.clone());
        out.push(format!("retry {} {}: {r:?}", a.stream, a.expected));
    }
    let a = &appended[3];
    let mut partial = vec![a.events[0].clone()];
    partial.push(NewEvent::json("New", "{}").with_id(uuid::Uuid::from_u128(7)));
    let r = store.append(&a.stream, ExpectedRevision::Any, partial);
    out.push(format!("partial retry: {r:?}"));
    assert_eq!(store.next_position(), before, "a retry wrote something");
    out
}

fn assert_same(what: &str, want: &[String], got: &[String]) {
    for (w, g) in want.iter().zip(got) {
        assert_eq!(w, g, "{what}: answers differ");
    }
    assert_eq!(want.len(), got.len(), "{what}: different number of answers");
}

/// Builds the rich store once, then for each damage: copy, damage, reopen, compare.
fn index_damage_case(name: &str, damage: impl Fn(&Path)) {
    let mut rng = Rng::new(test_seed(name));
    let tmp = tempfile::tempdir().expect("tempdir");
    let base = tmp.path().join("base");
    let appended = build_rich(&base, &mut rng);
    let (want, want_probe) = {
        let store = Store::open(&base, opts(4096)).expect("open");
        let s = snapshot(&store);
        let p = idempotency_probe(&store, &appended);
        store.close().expect("close");
        (s, p)
    };
    assert!(
        want_probe
            .iter()
            .filter(|l| l.contains("idempotent_replay: true"))
            .count()
            >= 100,
        "the probe should mostly find replays: {want_probe:#?}"
    );
    let originals: Vec<(PathBuf, Vec<u8>)> = index_files(&base)
        .into_iter()
        .map(|p| {
            let b = std::fs::read(&p).expect("read index");
            (p, b)
        })
        .collect();

    let dir = tmp.path().join("case");
    copy_dir(&base, &dir);
    damage(&dir);
    let report = verify_dir(&dir, |_, _| {}).expect("verify_dir");
    assert!(
        !report.problems.is_empty() && report.problems.iter().all(|p| p.contains(".idx")),
        "{name}: verify_dir should report the index damage (and nothing else): {:#?}",
        report.problems
    );
    let progress: Arc<Mutex<Vec<(PathBuf, u64, u64)>>> = Arc::default();
    let sink = progress.clone();
    let options = Options {
        rebuild_progress: Some(Arc::new(move |p: &Path, done, total| {
            sink.lock().unwrap().push((p.to_owned(), done, total))
        })),
        ..opts(4096)
    };
    let store = Store::open(&dir, options).unwrap_or_else(|e| panic!("{name}: open: {e}"));
    assert_eq!(store.health(), Health::Ok, "{name}");
    assert_same(name, &want, &snapshot(&store));
    assert_same(name, &want_probe, &idempotency_probe(&store, &appended));
    // Every sealed segment was rebuilt (on first use of its index: the body checksum is checked
    // lazily so that open does not read every index), and the progress callback saw each finish.
    let progress = progress.lock().unwrap().clone();
    for (idx, _) in &originals {
        let seg = dir.join(idx.with_extension("seg").file_name().expect("name"));
        let len = file_len(&seg);
        assert!(
            progress.contains(&(seg.clone(), len, len)),
            "{name}: no final progress report for {}: {progress:?}",
            seg.display()
        );
    }
    assert_eq!(store.health(), Health::Ok, "{name}");
    store.close().expect("close");
    drop(store);
    assert!(assert_verify_clean(&dir).is_empty(), "{name}");
    for (orig, bytes) in &originals {
        let rebuilt = dir.join(orig.file_name().expect("name"));
        assert!(
            rebuilt.exists(),
            "{name}: {} was not rebuilt",
            rebuilt.display()
        );
        assert!(
            std::fs::read(&rebuilt).expect("read") == *bytes,
            "{name}: {} differs from the index written at sealing",
            rebuilt.display()
        );
    }
}

#[test]
fn missing_index_files_are_rebuilt_with_identical_answers() {
    index_damage_case("missing_indexes", |dir| {
        for p in index_files(dir) {
            std::fs::remove_file(p).expect("remove");
        }
    });
}

#[test]
fn truncated_index_files_are_rebuilt_with_identical_answers() {
    index_damage_case("truncated_indexes", |dir| {
        for (i, p) in index_files(dir).into_iter().enumerate() {
            let len = file_len(&p);
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&p)
                .expect("open");
            // Empty, inside the header, inside the body, one byte short.
            f.set_len([0, 100, len / 2, len - 1][i % 4])
                .expect("truncate");
        }
    });
}

#[test]
fn index_files_with_damaged_header_are_rebuilt_with_identical_answers() {
    index_damage_case("index_header_flips", |dir| {
        for (i, p) in index_files(dir).into_iter().enumerate() {
            // magic, first position, event count, segment length, section table, header CRC.
            flip_byte(&p, [0, 17, 25, 33, 60, 197][i % 6]);
        }
    });
}

#[test]
fn index_files_with_damaged_body_are_rebuilt_with_identical_answers() {
    index_damage_case("index_body_flips", |dir| {
        for (i, p) in index_files(dir).into_iter().enumerate() {
            // One byte in the body (the header is intact); the body CRC in the header covers it.
            // Section k of the table at 48 + 16k starts at that u64 (index_file/format.rs).
            let bytes = std::fs::read(&p).expect("read");
            let section_start =
                |k: usize| u64::from_le_bytes(bytes[48 + 16 * k..56 + 16 * k].try_into().unwrap());
            let at = match i % 3 {
                0 => section_start(0),     // frame offsets: reads fail, store poisoned
                1 => section_start(6),     // created-name blob: list_streams silently wrong
                _ => section_start(1) + 8, // a stream entry's revision: stream reads wrong
            };
            flip_byte(&p, at);
        }
    });
}

/// The scenario that started the damage work: one byte flipped in the payload of the very
/// first event of the log (the open segment). Every other event stays readable with its
/// position and revision; the damaged event's stream is still listed, its later revisions
/// read, its head is right, and reading through the damaged revision answers the damage.
#[test]
fn damage_to_the_first_event_hides_nothing_else() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let store = Store::open(dir, opts(1 << 20)).expect("open");
    for i in 0..201u64 {
        let stream = format!("order-{}", i % 7);
        store
            .append(
                &stream,
                ExpectedRevision::Any,
                vec![NewEvent::json("Placed", format!("{{\"i\":{i}}}"))],
            )
            .expect("append");
    }
    store
        .set_metadata(
            "order-3",
            StreamMetadata {
                max_count: Some(1000),
                ..StreamMetadata::default()
            },
        )
        .expect("metadata");
    let events = all_events(&store);
    store.close().expect("close");
    drop(store);
    let seg = segments(dir).remove(0);
    let f = frames(&std::fs::read(&seg).expect("read")).remove(0);
    flip_byte(&seg, f.data_offset + 2);

    let store = Store::open(dir, opts(1 << 20)).expect("open");
    read_only_reason(&store);
    assert_one_damage(&store, &seg, f.offset, 0, "first event");
    assert_eq!(store.next_position(), events.len() as u64);
    let (intact, damaged) = intact_events(&store);
    assert_eq!(damaged, vec![0]);
    assert_eq!(intact, events[1..]);
    // Listed, with the right head, though its revision 0 is lost.
    let (listed, _) = store.list_streams("order-", None, 100).expect("list");
    let names: Vec<&str> = listed.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        (0..7).map(|i| format!("order-{i}")).collect::<Vec<_>>()
    );
    let head = store.head("order-0").expect("head");
    assert_eq!(head.last_revision, Some(28));
    // Through the lost revision: the damage; after it: the events.
    let r = store.read_stream("order-0", ReadFrom::Start, Direction::Forward, 10);
    assert_corruption_at(r, &seg, f.offset, "order-0 from the start");
    let r = store.read_stream("order-0", ReadFrom::End, Direction::Backward, 100);
    assert_corruption_at(r, &seg, f.offset, "order-0 backward to the start");
    let page = store
        .read_stream("order-0", ReadFrom::At(1), Direction::Forward, 100)
        .expect("order-0 from 1");
    assert_eq!(page.events.len(), 28);
    assert_eq!(page.events[0].revision, 1);
    let e = store.read_event("order-0", 5).expect("read_event");
    assert_eq!(e.map(|e| e.revision), Some(5));
    assert_corruption_at(store.read_event("order-0", 0), &seg, f.offset, "revision 0");
    // Other streams and their metadata are untouched.
    let page = store
        .read_stream("order-1", ReadFrom::Start, Direction::Forward, 100)
        .expect("order-1");
    assert_eq!(page.events.len(), 29);
    assert_eq!(
        store.metadata("order-3").expect("metadata").max_count,
        Some(1000)
    );
    // Filtered reads never skip the lost event silently: it may match.
    let by_type = AllFilter {
        types: vec!["Placed".into()],
        ..AllFilter::default()
    };
    let r = store.read_all(ReadFrom::Start, Direction::Forward, 10, &by_type);
    assert_corruption_at(r, &seg, f.offset, "/all by type");
    let page = store
        .read_all(ReadFrom::At(1), Direction::Forward, 1000, &by_type)
        .expect("/all by type after the damage");
    assert_eq!(page.events.len(), 200);
    assert_refuses_writes(&store, "first event");
}
