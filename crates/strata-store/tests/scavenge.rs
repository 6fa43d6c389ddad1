//! Scavenging through the public API: what a scavenge removes (deleted, truncated, capped, aged
//! streams and superseded metadata records), that every read answers the same before and after
//! (and after a reopen), that stream heads and idempotent retries survive, and that appends go
//! on between and after runs.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use strata_store::{
    AllFilter, Direction, Error, ExpectedRevision, FsyncPolicy, NewEvent, Options, ReadFrom,
    RecordedEvent, ScavengeOptions, ScavengeProgress, Store, StreamMetadata,
};
use uuid::Uuid;

fn options() -> Options {
    Options {
        fsync: FsyncPolicy::Never,
        segment_size: 4096,
        ..Options::default()
    }
}

fn ev(i: u64) -> NewEvent {
    NewEvent::json(
        "T",
        format!("{{\"i\":{i},\"pad\":\"{}\"}}", "x".repeat(100)),
    )
    .with_id(Uuid::from_u128(u128::from(i) + 1))
}

/// Everything a client can read: the whole log, and each stream's events (or its error) and
/// head. Only `streams` and `heads` must be equal before and after a scavenge (see
/// [`same_reads`]): `/all` loses the removed events.
#[derive(Debug)]
struct View {
    all: Vec<Ev>,
    streams: BTreeMap<String, Result<Vec<Ev>, String>>,
    heads: BTreeMap<String, (Option<u64>, Option<u64>)>,
}

const STREAMS: [&str; 7] = [
    "keep-1", "soft-1", "trunc-1", "max-1", "hard-1", "meta-1", "filler-1",
];

/// An event, compactly: stream, revision, position, id, type, data.
type Ev = (String, u64, u64, Uuid, String, String);

fn ev_of(e: &RecordedEvent) -> Ev {
    (
        e.stream.clone(),
        e.revision,
        e.position,
        e.id,
        e.event_type.clone(),
        String::from_utf8_lossy(&e.data).chars().take(12).collect(),
    )
}

/// Stream reads and heads answer the same; `/all` after is `/all` before without the removed
/// events, which no stream read returned.
#[track_caller]
fn same_reads(after: &View, before: &View) {
    assert_eq!(after.streams, before.streams);
    assert_eq!(after.heads, before.heads);
    let mut it = before.all.iter();
    for e in &after.all {
        assert!(it.any(|b| b == e), "{e:?} is new in /all, or out of order");
    }
    let kept: std::collections::HashSet<&Ev> = after.all.iter().collect();
    for events in before.streams.values().flatten() {
        for e in events {
            assert!(kept.contains(e), "{e:?} readable before, gone from /all");
        }
    }
}

fn view(store: &Store) -> View {
    let all = store
        .read_all(
            ReadFrom::Start,
            Direction::Forward,
            1_000_000,
            &AllFilter::default(),
        )
        .expect("read all")
        .events
        .iter()
        .map(ev_of)
        .collect();
    let mut streams = BTreeMap::new();
    let mut heads = BTreeMap::new();
    for s in STREAMS {
        let r = store
            .read_stream(s, ReadFrom::Start, Direction::Forward, 100_000)
            .map(|p| p.events.iter().map(ev_of).collect())
            .map_err(|e| e.to_string());
        streams.insert(s.to_owned(), r);
        let h = store.head(s).expect("head");
        heads.insert(s.to_owned(), (h.last_revision, h.last_position));
    }
    View {
        all,
        streams,
        heads,
    }
}

/// A store whose sealed segments hold removable events of every kind.
fn populated(dir: &std::path::Path) -> Store {
    let store = Store::open(dir, options()).expect("open");
    let mut n = 0u64;
    let mut next = || {
        n += 1;
        ev(n)
    };
    for s in ["keep-1", "soft-1", "trunc-1", "max-1", "hard-1"] {
        for _ in 0..6 {
            store
                .append(s, ExpectedRevision::Any, vec![next(), next()])
                .expect("append");
        }
    }
    store
        .delete_stream("soft-1", ExpectedRevision::Any, false)
        .expect("soft delete");
    store
        .delete_stream("hard-1", ExpectedRevision::Any, true)
        .expect("hard delete");
    store
        .set_metadata(
            "trunc-1",
            StreamMetadata {
                truncate_before: Some(5),
                ..Default::default()
            },
        )
        .expect("truncate");
    store
        .set_metadata(
            "max-1",
            StreamMetadata {
                max_count: Some(3),
                ..Default::default()
            },
        )
        .expect("max count");
    for k in 0..5 {
        store
            .set_metadata(
                "meta-1",
                StreamMetadata {
                    custom: Some(serde_json::json!({ "k": k })),
                    ..Default::default()
                },
            )
            .expect("metadata");
    }
    // Filler: everything above is in sealed segments.
    for _ in 0..40 {
        store
            .append("filler-1", ExpectedRevision::Any, vec![next()])
            .expect("filler");
    }
    store
}

fn scavenge(store: &Store) -> ScavengeProgress {
    let mut calls = 0;
    let p = store
        .scavenge(ScavengeOptions::default(), &mut |_| calls += 1)
        .expect("scavenge");
    // Once per segment rewritten or checked, and once per merge.
    assert!(calls >= p.segments_done, "{calls} calls, {p:?}");
    p
}

#[test]
fn a_scavenge_removes_what_no_read_returns_and_reads_answer_the_same() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = populated(dir.path());
    let before = view(&store);
    let disk_before = store.info().bytes_on_disk;
    let segments_before = store.info().segment_count;
    let p = scavenge(&store);
    // The small segments left were merged: fewer files, each still under the segment size
    // (unless it holds one append larger than that).
    let segments_after = store.info().segment_count;
    assert!(
        segments_after < segments_before,
        "{segments_before} -> {segments_after}"
    );
    assert!(!p.stopped);
    assert!(p.segments_total >= 3, "{p:?}");
    assert_eq!(p.segments_done, p.segments_total);
    // soft-1: 11 (its last event stays: the head), hard-1: 12, trunc-1: 5, max-1: 9, meta: 4
    // superseded of meta-1 (the other metadata streams hold one record each).
    assert_eq!(p.events_removed, 11 + 12 + 5 + 9 + 4, "{p:?}");
    assert!(
        p.bytes_reclaimed > 0 && p.bytes_after < p.bytes_before,
        "{p:?}"
    );
    assert!(store.info().bytes_on_disk < disk_before);
    same_reads(&view(&store), &before);
    // Index files that keep entries of removed events say so: format version 3.
    let versions: Vec<u32> = std::fs::read_dir(dir.path())
        .expect("read dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "idx"))
        .map(|p| {
            let b = std::fs::read(&p).expect("read idx");
            u32::from_le_bytes([b[8], b[9], b[10], b[11]])
        })
        .collect();
    assert!(versions.contains(&3), "{versions:?}");
    assert!(versions.iter().all(|v| [2, 3].contains(v)), "{versions:?}");
    // A second run finds nothing more.
    let again = scavenge(&store);
    assert_eq!(again.events_removed, 0, "{again:?}");
    same_reads(&view(&store), &before);
    store.close().expect("close");
    drop(store);
    let store = Store::open(dir.path(), options()).expect("reopen");
    same_reads(&view(&store), &before);
}

/// Checks retries, re-creation and tombstones after a scavenge; `recreated` events were
/// appended to `soft-1` since its deletion before this check.
fn check_heads_and_retries(store: &Store, recreated: u64) {
    // max-1's first append (revisions 0 and 1: events 37 and 38, the fourth stream's first
    // append) was removed: its retry answers as a retry, with the same revisions.
    let retry = store
        .append("max-1", ExpectedRevision::Any, vec![ev(37), ev(38)])
        .expect("retry");
    assert!(retry.idempotent_replay, "{retry:?}");
    assert_eq!((retry.first_revision, retry.last_revision), (0, 1));
    // The soft-deleted stream continues at the next revision when re-created.
    let expected = match recreated {
        0 => ExpectedRevision::NoStream,
        n => ExpectedRevision::Exact(11 + n),
    };
    let r = store
        .append("soft-1", expected, vec![NewEvent::json("T", "{}")])
        .expect("re-create");
    assert_eq!(r.first_revision, 12 + recreated);
    let page = store
        .read_stream("soft-1", ReadFrom::Start, Direction::Forward, 100)
        .expect("read");
    assert_eq!(page.events.len() as u64, 1 + recreated);
    // The hard-deleted one stays deleted.
    assert!(matches!(
        store.append(
            "hard-1",
            ExpectedRevision::Any,
            vec![NewEvent::json("T", "{}")]
        ),
        Err(Error::StreamDeleted { .. })
    ));
}

#[test]
fn heads_and_idempotent_retries_survive_a_scavenge() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = populated(dir.path());
    scavenge(&store);
    check_heads_and_retries(&store, 0);
    // Sealed, scavenged again: the re-created stream's new event stays.
    for i in 0..40 {
        store
            .append("filler-2", ExpectedRevision::Any, vec![ev(1000 + i)])
            .expect("filler");
    }
    scavenge(&store);
    store.close().expect("close");
    drop(store);
    let store = Store::open(dir.path(), options()).expect("reopen");
    check_heads_and_retries(&store, 1);
}

#[test]
fn only_one_scavenge_runs_at_a_time_and_a_stopped_run_is_finished_by_the_next() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = populated(dir.path());
    let before = view(&store);
    let stop = Arc::new(AtomicBool::new(true));
    let p = store
        .scavenge(
            ScavengeOptions {
                max_bytes_per_s: None,
                stop,
            },
            &mut |_| {},
        )
        .expect("stopped scavenge");
    assert!(p.stopped && p.events_removed == 0, "{p:?}");
    // A run inside a run's progress callback answers ScavengeRunning.
    let mut inner = None;
    let outer = store
        .scavenge(ScavengeOptions::default(), &mut |_| {
            if inner.is_none() {
                inner = Some(store.scavenge(ScavengeOptions::default(), &mut |_| {}));
            }
        })
        .expect("outer");
    assert!(
        matches!(inner, Some(Err(Error::ScavengeRunning))),
        "{inner:?}"
    );
    assert!(outer.events_removed > 0);
    same_reads(&view(&store), &before);
}

/// Appends that seal segments while scavenges swap and merge segments in: no segment is lost
/// or resurrected, every append reads back (also after a reopen), and the throttle holds the
/// scavenge without holding the appends.
#[test]
fn appends_and_seals_go_on_during_scavenges() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = populated(dir.path());
    let before = view(&store);
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || {
            let mut results = Vec::new();
            for i in 0..150u64 {
                let r = store
                    .append("live-1", ExpectedRevision::Any, vec![ev(10_000 + i)])
                    .expect("append during scavenge");
                results.push(r);
            }
            results
        })
    };
    let mut runs = 0;
    while !writer.is_finished() || runs < 2 {
        store
            .scavenge(
                ScavengeOptions {
                    max_bytes_per_s: Some(50 * 1024 * 1024),
                    ..Default::default()
                },
                &mut |_| {},
            )
            .expect("scavenge during appends");
        runs += 1;
    }
    let results = writer.join().expect("writer thread");
    let check = |store: &Store| {
        let page = store
            .read_stream("live-1", ReadFrom::Start, Direction::Forward, 1000)
            .expect("read live-1");
        let got: Vec<(u64, u64)> = page
            .events
            .iter()
            .map(|e| (e.revision, e.position))
            .collect();
        let want: Vec<(u64, u64)> = results
            .iter()
            .map(|r| (r.first_revision, r.first_position))
            .collect();
        assert_eq!(got, want);
        let after = view(store);
        assert_eq!(after.streams.get("keep-1"), before.streams.get("keep-1"));
        assert_eq!(after.streams.get("max-1"), before.streams.get("max-1"));
    };
    check(&store);
    store.close().expect("close");
    drop(store);
    let store = Store::open(dir.path(), options()).expect("reopen");
    check(&store);
}

/// A run stopped after its first segment leaves the store consistent; the next run finishes the
/// job, and the log then reads as after one uninterrupted run.
#[test]
fn a_run_stopped_midway_is_finished_by_the_next() {
    let whole = tempfile::tempdir().expect("tempdir");
    let reference = populated(whole.path());
    scavenge(&reference);
    let want = view(&reference);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = populated(dir.path());
    let before = view(&store);
    let stop = Arc::new(AtomicBool::new(false));
    let options = ScavengeOptions {
        max_bytes_per_s: None,
        stop: stop.clone(),
    };
    let p = store
        .scavenge(options, &mut |_| {
            stop.store(true, std::sync::atomic::Ordering::Release)
        })
        .expect("stopped run");
    assert!(p.stopped && p.segments_done == 1, "{p:?}");
    same_reads(&view(&store), &before);
    let q = scavenge(&store);
    assert!(!q.stopped, "{q:?}");
    let got = view(&store);
    same_reads(&got, &before);
    let strip = |v: &View| -> Vec<(String, u64, u64)> {
        v.all.iter().map(|e| (e.0.clone(), e.1, e.2)).collect()
    };
    assert_eq!(strip(&got), strip(&want));
}

/// Index files are derived data, also after a scavenge: with every index file deleted, the
/// reopened store rebuilds them from the segments and their removed-events files, and reads,
/// heads and idempotent retries answer as before.
#[test]
fn index_files_of_scavenged_segments_are_rebuilt_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = populated(dir.path());
    scavenge(&store);
    let before = view(&store);
    store.close().expect("close");
    drop(store);
    let mut dropped = 0;
    for entry in std::fs::read_dir(dir.path()).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|x| x == "idx") {
            std::fs::remove_file(&path).expect("remove index");
            dropped += 1;
        }
    }
    assert!(dropped >= 2, "{dropped}");
    let store = Store::open(dir.path(), options()).expect("reopen");
    let after = view(&store);
    assert_eq!(after.streams, before.streams);
    assert_eq!(after.heads, before.heads);
    assert_eq!(after.all, before.all);
    check_heads_and_retries(&store, 0);
}

/// `strata repair` and `strata verify` accept a scavenged directory (its removed-events files
/// and merged segments) and find nothing to do.
#[test]
fn repair_and_verify_accept_a_scavenged_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = populated(dir.path());
    scavenge(&store);
    let before = view(&store);
    store.close().expect("close");
    drop(store);
    let report = strata_store::verify::verify_dir(dir.path(), |_, _| {}).expect("verify");
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    let repaired = strata_store::repair::repair_dir(dir.path(), |_, _| {}).expect("repair");
    assert!(repaired.damage.is_empty(), "{repaired:?}");
    let store = Store::open(dir.path(), options()).expect("reopen");
    let after = view(&store);
    assert_eq!(after.streams, before.streams);
    assert_eq!(after.all, before.all);
}
