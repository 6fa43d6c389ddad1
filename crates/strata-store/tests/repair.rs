//! `repair_dir` (offline `strata repair`): damage in sealed and open segments, in a segment
//! header, a length field, a whole append, part of an append and an index file is moved into
//! quarantine; afterwards the store opens writable with every intact event at its original
//! position and revision, a second repair finds nothing, and directories that are not stores or
//! are in use are refused untouched.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use common::*;
use strata_store::repair::{repair_dir, RepairReport};
use strata_store::verify::verify_dir;
use strata_store::{
    Direction, Error, ExpectedRevision, Health, NewEvent, Options, ReadFrom, RecordedEvent, Store,
};

/// Options of the stores under test: small segments, no fsync.
fn small() -> Options {
    no_fsync(opts(4096))
}

/// Repairs `dir` and checks the result against `before` (every event before the damage):
/// the store opens writable, reads back exactly the events outside the lost positions (the log
/// and every stream), accepts an append at the next position, verifies clean, and a second
/// repair finds nothing. Returns the report.
fn repair_and_check(dir: &Path, before: &[RecordedEvent]) -> RepairReport {
    repair_and_check_with(dir, before, |_| {})
}

/// [`repair_and_check`], calling `also` with the store opened after the repair (once with the
/// repaired indexes, once with indexes rebuilt from the repaired segments).
fn repair_and_check_with(
    dir: &Path,
    before: &[RecordedEvent],
    also: impl Fn(&Store),
) -> RepairReport {
    let report = repair_dir(dir, |_, _| {}).expect("repair");
    assert!(report.changed(), "{report}");
    let lost: BTreeSet<u64> = report
        .damage
        .iter()
        .flat_map(|d| d.positions.clone())
        .collect();
    let expected: Vec<RecordedEvent> = before
        .iter()
        .filter(|e| !lost.contains(&e.position))
        .cloned()
        .collect();
    let store = Store::open(dir, small()).expect("open after repair");
    assert_eq!(store.health(), Health::Ok, "{report}");
    assert!(store.damage().is_empty(), "{:?}", store.damage());
    assert_eq!(all_events(&store), expected, "{report}");
    also(&store);
    let streams: BTreeSet<&str> = expected.iter().map(|e| e.stream.as_str()).collect();
    for s in streams {
        let page = store
            .read_stream(s, ReadFrom::Start, Direction::Forward, 10_000)
            .expect("read stream");
        let want: Vec<_> = expected.iter().filter(|e| e.stream == s).cloned().collect();
        assert_eq!(page.events, want, "stream {s}");
    }
    let next = before.last().map_or(0, |e| e.position + 1);
    let r = store
        .append(
            "after-repair",
            ExpectedRevision::NoStream,
            vec![NewEvent::json("T", "{}")],
        )
        .expect("append after repair");
    assert_eq!(r.first_position, next);
    store.close().expect("close");
    drop(store);
    let v = verify_dir(dir, |_, _| {}).expect("verify");
    assert!(v.problems.is_empty(), "{:?}", v.problems);
    let again = repair_dir(dir, |_, _| {}).expect("second repair");
    assert!(!again.changed(), "{again}");
    assert!(again.damage.is_empty());
    // A crash between renaming a repaired segment into place and writing its index leaves the
    // segment without one: it is rebuilt at open, with the same answers.
    let rewritten: Vec<&Path> = report
        .segments
        .iter()
        .filter(|s| s.rewritten)
        .map(|s| s.file.as_path())
        .collect();
    for seg in &rewritten {
        let _ = fs::remove_file(seg.with_extension("idx"));
    }
    let store = Store::open(dir, small()).expect("open without the new indexes");
    assert_eq!(store.health(), Health::Ok);
    also(&store);
    let now = all_events(&store);
    assert_eq!(
        now.len(),
        expected.len() + 1,
        "the events and the one appended"
    );
    assert_eq!(now[..expected.len()], expected[..]);
    drop(store);
    report
}

/// The files of this run's quarantine directory (names only).
fn quarantined(report: &RepairReport) -> Vec<String> {
    let q = report.quarantine.as_ref().expect("quarantine");
    let mut names: Vec<String> = fs::read_dir(q)
        .expect("read quarantine")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn name(p: &Path) -> String {
    p.file_name().expect("name").to_string_lossy().into_owned()
}

/// Appends of the given sizes to one big (open) segment; returns every event.
fn build_open(dir: &Path, appends: &[usize]) -> Vec<RecordedEvent> {
    let store = Store::open(dir, no_fsync(Options::default())).expect("open");
    let mut rng = Rng::new(7);
    for (a, &n) in appends.iter().enumerate() {
        let (evs, _) = tagged_events(&mut rng, &format!("a{a}"), n, 40);
        store
            .append(&format!("s-{}", a % 3), ExpectedRevision::Any, evs)
            .expect("append");
    }
    let events = all_events(&store);
    store.close().expect("close");
    events
}

fn sealed_store(dir: &Path) -> (Vec<RecordedEvent>, Vec<PathBuf>) {
    let mut rng = Rng::new(test_seed("repair"));
    let events = build_sealed(dir, &mut rng, 3);
    (events, segments(dir))
}

#[test]
fn payload_damage_in_a_sealed_segment_is_quarantined_and_named_in_the_report() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (before, segs) = sealed_store(dir);
    let fr = frames(&fs::read(&segs[0]).expect("read"));
    let f = fr[fr.len() / 2].clone();
    flip_byte(&segs[0], f.data_offset + f.data_len / 2);
    let victim = before[f.position as usize].clone();

    let report = repair_and_check(dir, &before);
    assert_eq!(report.damage.len(), 1);
    let d = &report.damage[0];
    assert_eq!((d.file.clone(), d.offset), (segs[0].clone(), f.offset));
    assert_eq!(d.length, f.len);
    assert_eq!(d.positions, f.position..f.position + 1);
    // The intact index names the lost event.
    assert_eq!(report.lost.len(), 1, "{report}");
    let lost = &report.lost[0];
    assert_eq!(lost.position, victim.position);
    assert_eq!(lost.stream.as_deref(), Some(victim.stream.as_str()));
    assert_eq!(lost.revision, victim.revision);
    assert_eq!(lost.id, Some(victim.id));
    let text = report.to_string();
    assert!(
        text.contains(&format!(
            "position {}: stream {:?} revision {}",
            victim.position, victim.stream, victim.revision
        )),
        "{text}"
    );
    // The originals, the damaged bytes and the report are kept.
    let seg = name(&segs[0]);
    let idx = seg.replace(".seg", ".idx");
    let range = format!("{seg}.damaged-at-{}-len-{}.bin", f.offset, f.len);
    assert_eq!(
        quarantined(&report),
        vec![idx, seg.clone(), range.clone(), "report.txt".to_owned()]
    );
    let q = report.quarantine.clone().expect("quarantine");
    let original = fs::read(q.join(&seg)).expect("original");
    let damaged = fs::read(q.join(&range)).expect("range");
    assert_eq!(
        damaged,
        original[f.offset as usize..(f.offset + f.len) as usize]
    );
    assert_eq!(
        fs::read_to_string(q.join("report.txt")).expect("report"),
        text
    );
    assert!(q.starts_with(dir.join("quarantine")));
}

#[test]
fn damaged_segment_header_loses_no_event() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (before, segs) = sealed_store(dir);
    flip_byte(&segs[1], 29); // the header's CRC
    let report = repair_and_check(dir, &before);
    assert_eq!(report.damage.len(), 1);
    assert_eq!(report.damage[0].offset, 0);
    assert_eq!(report.positions_lost(), 0);
    assert!(report.segments[1].rewritten);
}

#[test]
fn damaged_length_field_costs_only_its_frame() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (before, segs) = sealed_store(dir);
    let fr = frames(&fs::read(&segs[0]).expect("read"));
    let f = fr[2].clone();
    flip_byte(&segs[0], f.offset + 1);
    let report = repair_and_check(dir, &before);
    assert_eq!(report.positions_lost(), 1, "{report}");
    assert_eq!(report.damage[0].positions, f.position..f.position + 1);
}

/// The frames (of `segment`) of the first append of at least `n` events, not the segment's
/// last append.
fn multi_event_append(segment: &Path, n: usize) -> Vec<FrameInfo> {
    let fr = frames(&fs::read(segment).expect("read"));
    let mut start = 0;
    for (i, f) in fr.iter().enumerate() {
        if f.commit_end {
            if i + 1 - start >= n && i + 1 < fr.len() {
                return fr[start..=i].to_vec();
            }
            start = i + 1;
        }
    }
    panic!("no append of {n} events in {}", segment.display());
}

#[test]
fn a_whole_damaged_append_is_lost_and_nothing_else() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (before, segs) = sealed_store(dir);
    let append = multi_event_append(&segs[0], 2);
    for f in &append {
        flip_byte(&segs[0], f.data_offset);
    }
    let report = repair_and_check(dir, &before);
    let first = append[0].position;
    let lost: Vec<u64> = report
        .damage
        .iter()
        .flat_map(|d| d.positions.clone())
        .collect();
    assert_eq!(
        lost,
        (first..first + append.len() as u64).collect::<Vec<_>>()
    );
    // The index was intact: every lost event is named.
    assert_eq!(report.lost.len(), append.len());
    assert!(report.lost.iter().all(|e| e.stream.is_some()), "{report}");
}

/// The frames of `segment` holding `positions`, as [`frames`] reads them.
fn frames_at(segment: &Path, positions: &[u64]) -> Vec<FrameInfo> {
    let fr = frames(&fs::read(segment).expect("read"));
    positions
        .iter()
        .map(|p| {
            fr.iter()
                .find(|f| f.position == *p)
                .unwrap_or_else(|| panic!("no frame of position {p}"))
                .clone()
        })
        .collect()
}

#[test]
fn an_append_that_lost_its_last_frame_keeps_the_others_as_a_whole_commit() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (before, segs) = sealed_store(dir);
    let append = multi_event_append(&segs[0], 2);
    let last = append.last().expect("last").clone();
    flip_byte(&segs[0], last.data_offset);
    let report = repair_and_check(dir, &before);
    assert_eq!(report.positions_lost(), 1);
    // The frame before the lost one now ends the commit; every other frame is unchanged.
    let kept: Vec<u64> = append[..append.len() - 1]
        .iter()
        .map(|f| f.position)
        .collect();
    let now = frames_at(&segs[0], &kept);
    assert!(now.last().expect("kept").commit_end);
    assert!(now[..now.len() - 1].iter().all(|f| !f.commit_end));
}

#[test]
fn damage_at_the_end_of_a_sealed_segment_keeps_the_segment_boundaries() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (before, segs) = sealed_store(dir);
    let fr = frames(&fs::read(&segs[0]).expect("read"));
    let last = fr.last().expect("frames").clone();
    flip_byte(&segs[0], last.offset + 4);
    let report = repair_and_check(dir, &before);
    assert!(report.damage[0].positions.contains(&last.position));
    let next_first: u64 = name(&segs[1])
        .trim_end_matches(".seg")
        .parse()
        .expect("segment name");
    assert_eq!(report.segments[0].positions.end, next_first);
}

#[test]
fn damaged_index_file_is_rebuilt_and_the_old_one_quarantined() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (before, _) = sealed_store(dir);
    let idx = index_files(dir).remove(0);
    let len = file_len(&idx);
    flip_byte(&idx, len - 12);
    let report = repair_and_check(dir, &before);
    assert!(report.damage.is_empty());
    assert!(report.segments[0].index_rebuilt.is_some(), "{report}");
    assert!(!report.segments[0].rewritten);
    assert_eq!(
        quarantined(&report),
        vec![name(&idx), "report.txt".to_owned()]
    );
}

#[test]
fn damage_in_the_open_segment_is_repaired_and_the_store_appends_again() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let before = build_open(dir, &[1, 2, 1, 3, 1, 2]);
    let seg = segments(dir).remove(0);
    // Position 3: revision 0 of s-2, which has later events.
    let f = frames(&fs::read(&seg).expect("read"))[3].clone();
    assert_eq!((before[3].stream.as_str(), before[3].revision), ("s-2", 0));
    flip_byte(&seg, f.data_offset);
    let report = repair_and_check_with(dir, &before, |store| {
        let (listed, _) = store.list_streams("s-", None, 100).expect("list");
        let names: Vec<&str> = listed.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["s-0", "s-1", "s-2"]);
    });
    assert_eq!(report.positions_lost(), 1);
    // No index describes the open segment: the lost event is not known.
    assert!(report.lost.is_empty());
    assert!(report.to_string().contains("stream and revision unknown"));
}

#[test]
fn open_segment_append_that_lost_its_last_frame_is_not_cut_at_the_next_open() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    // Positions: 0 | 1 2 3 | 4 ; position 3 (the end of the 3-event append) is damaged.
    let before = build_open(dir, &[1, 3, 1]);
    let seg = segments(dir).remove(0);
    let f = frames_at(&seg, &[3]).remove(0);
    flip_byte(&seg, f.data_offset);
    let report = repair_and_check(dir, &before);
    assert_eq!(report.damage[0].positions, 3..4);
    let now = frames_at(&seg, &[1, 2, 4]);
    assert!(!now[0].commit_end && now[1].commit_end && now[2].commit_end);
}

#[test]
fn a_torn_tail_is_cut_into_quarantine() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let before = build_open(dir, &[1, 2]);
    let seg = segments(dir).remove(0);
    let len = file_len(&seg);
    let mut bytes = fs::read(&seg).expect("read");
    bytes.extend_from_slice(&[0x77; 50]);
    fs::write(&seg, &bytes).expect("write");
    let report = repair_and_check(dir, &before);
    assert!(report.damage.is_empty());
    assert_eq!(report.segments[0].tail_cut, 50);
    assert!(quarantined(&report).contains(&format!("{}.torn-at-{len}-len-50.bin", name(&seg))));
}

#[test]
fn an_intact_store_is_left_alone() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let _ = sealed_store(dir);
    // A store's merged index directory is the store's own.
    fs::create_dir_all(dir.join("merged")).expect("merged dir");
    let listing = |d: &Path| {
        let mut v: Vec<_> = fs::read_dir(d)
            .expect("read")
            .map(|e| e.expect("entry").file_name())
            .collect();
        v.sort();
        v
    };
    let files = listing(dir);
    let report = repair_dir(dir, |_, _| {}).expect("repair");
    assert!(!report.changed() && report.damage.is_empty());
    assert_eq!(listing(dir), files);
    assert!(report.to_string().contains("no damage found"));
}

#[test]
fn directories_that_are_not_stores_are_refused_untouched() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let empty = tmp.path().join("empty");
    fs::create_dir(&empty).expect("mkdir");
    let missing = tmp.path().join("missing");
    let foreign = tmp.path().join("foreign");
    let _ = sealed_store(&foreign);
    fs::write(foreign.join("notes.txt"), "mine").expect("write");
    for (dir, why) in [
        (&empty, "no segment files"),
        (&missing, "not a directory"),
        (&foreign, "notes.txt"),
    ] {
        let before: Vec<_> = fs::read_dir(dir)
            .map(|r| r.map(|e| e.expect("entry").file_name()).collect())
            .unwrap_or_default();
        match repair_dir(dir, |_, _| {}) {
            Err(Error::InvalidInput { reason, .. }) => assert!(reason.contains(why), "{reason}"),
            other => panic!("{}: {other:?}", dir.display()),
        }
        let after: Vec<_> = fs::read_dir(dir)
            .map(|r| r.map(|e| e.expect("entry").file_name()).collect())
            .unwrap_or_default();
        assert_eq!(before.len(), after.len(), "{}", dir.display());
    }
    assert!(!missing.exists());
}

#[test]
fn repair_is_refused_while_a_store_holds_the_directory() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let (_, segs) = sealed_store(dir);
    flip_byte(&segs[0], 40);
    let store = Store::open(dir, small()).expect("open");
    match repair_dir(dir, |_, _| {}) {
        Err(Error::Io { source, .. }) => {
            assert_eq!(source.kind(), std::io::ErrorKind::WouldBlock);
            assert!(source.to_string().contains("in use"), "{source}");
        }
        other => panic!("{other:?}"),
    }
    assert!(!dir.join("quarantine").exists());
    drop(store);
}

/// A stream's first event and another stream's last event lost in a sealed segment whose index
/// is intact: the first stays listed (the repaired index names it), the second's head moves back (the report says so) and
/// the next append to it takes the lost revision again.
#[test]
fn lost_first_and_last_events_of_streams_are_reported_and_the_streams_stay_usable() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let store = Store::open(dir, small()).expect("open");
    let one = |stream: &str| vec![NewEvent::json("T", format!(r#"{{"s":"{stream}"}}"#))];
    store
        .append("solo", ExpectedRevision::Any, one("solo"))
        .expect("append");
    store
        .append("solo", ExpectedRevision::Any, one("solo"))
        .expect("append");
    store
        .append("first", ExpectedRevision::Any, one("first"))
        .expect("append");
    let mut rng = Rng::new(3);
    for a in 0..40 {
        let (evs, _) = tagged_events(&mut rng, &format!("a{a}"), 2, 60);
        store
            .append("first", ExpectedRevision::Any, evs)
            .expect("append");
    }
    let before = all_events(&store);
    drop(store);
    let segs = segments(dir);
    assert!(segs.len() >= 3);
    // Positions 1 (solo revision 1, its last) and 2 (first revision 0).
    for f in frames_at(&segs[0], &[1, 2]) {
        flip_byte(&segs[0], f.data_offset);
    }
    let report = repair_and_check_with(dir, &before, |store| {
        let (listed, _) = store.list_streams("", None, 100).expect("list");
        let names: Vec<&str> = listed.iter().map(|s| s.name.as_str()).collect();
        assert!(
            names.contains(&"first") && names.contains(&"solo"),
            "{names:?}"
        );
    });
    let lost: Vec<_> = report
        .lost
        .iter()
        .map(|e| (e.position, e.stream.clone(), e.revision, e.stream_head))
        .collect();
    assert_eq!(
        lost,
        vec![
            (1, Some("solo".to_owned()), 1, Some(0)),
            (2, Some("first".to_owned()), 0, Some(80)),
        ]
    );
    assert!(
        report
            .to_string()
            .contains("was the stream's last event: its head is now revision 0"),
        "{report}"
    );
    let store = Store::open(dir, small()).expect("open");
    let r = store
        .append("solo", ExpectedRevision::Exact(0), one("solo"))
        .expect("append after the head moved back");
    assert_eq!(r.first_revision, 1);
}

/// Random byte flips anywhere in segment and index files (seeded; `STRATA_TEST_SEED` reruns
/// one): the repair never panics; afterwards the store opens writable, holds exactly the events
/// outside the lost positions (up to a torn tail the repair cut from the last segment), with
/// their positions and revisions, and a second repair finds nothing.
#[test]
fn random_damage_is_always_repaired() {
    let seed = test_seed("random_damage_is_always_repaired");
    let mut rng = Rng::new(seed);
    for case in 0..12 {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        let before = build_sealed(dir, &mut rng, 4);
        let mut files = segments(dir);
        files.extend(index_files(dir));
        for _ in 0..1 + rng.below(8) {
            let f = &files[rng.below(files.len())];
            let at = rng.range(0, file_len(f));
            flip_byte(f, at);
        }
        let what = format!("seed {seed} case {case}");
        let report = repair_dir(dir, |_, _| {}).unwrap_or_else(|e| panic!("{what}: {e}"));
        let lost: BTreeSet<u64> = report
            .damage
            .iter()
            .flat_map(|d| d.positions.clone())
            .collect();
        let store = Store::open(dir, small()).expect("open after repair");
        assert_eq!(store.health(), Health::Ok, "{what}\n{report}");
        let after = all_events(&store);
        let end = store.next_position();
        let expected: Vec<RecordedEvent> = before
            .iter()
            .filter(|e| !lost.contains(&e.position) && e.position < end)
            .cloned()
            .collect();
        assert_eq!(after, expected, "{what}\n{report}");
        if end < before.len() as u64 {
            assert!(
                report.segments.last().expect("segments").tail_cut > 0,
                "{what}: events past {end} missing without a torn tail\n{report}"
            );
        }
        store
            .append(
                "after",
                ExpectedRevision::Any,
                vec![NewEvent::json("T", "{}")],
            )
            .expect("append after repair");
        drop(store);
        let again = repair_dir(dir, |_, _| {}).expect("second repair");
        assert!(!again.changed(), "{what}\n{again}");
    }
}
