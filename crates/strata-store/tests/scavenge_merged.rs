//! Scavenging × merged index files: a store whose merged index files were built before a
//! scavenge (listing removed events, dropped ids, positions in segments the scavenge then
//! merged into bigger ones) and after answers every read, head, idempotent retry and append
//! exactly as the same store without merged files, before and after reopen, after merges
//! running concurrently with scavenges, after a crash at any step of a scavenge, and with a
//! damaged event (still damage, never a skip).

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::crash_io::{Crash, CrashIo};
use strata_store::{
    AllFilter, Direction, ExpectedRevision, FsyncPolicy, NewEvent, Options, ReadFrom,
    ScavengeOptions, Store, StreamMetadata,
};
use uuid::Uuid;

fn opts(merge: bool) -> Options {
    Options {
        segment_size: 4096,
        fsync: FsyncPolicy::Never,
        // Small: the writer looks heads up through the lookup units.
        head_cache_capacity: 2,
        merge_indexes: merge,
        ..Options::default()
    }
}

const STREAMS: [&str; 9] = [
    "keep-a", "keep-b", "soft-a", "soft-re", "hard-a", "trunc-a", "max-a", "meta-a", "later",
];

fn id(n: u64) -> Uuid {
    Uuid::from_u128(0xabcd_0000_0000_0000_0000_0000_0000_0000 | u128::from(n))
}

/// Every append made so far: `(stream, id)`.
type Appended = Vec<(String, Uuid)>;

fn append(store: &Store, s: &str, n: &mut u64, done: &mut Appended) {
    *n += 1;
    let data = format!(
        "{{\"n\":{n},\"pad\":\"{}\"}}",
        "x".repeat((*n % 4 * 40) as usize)
    );
    let r = store.append(
        s,
        ExpectedRevision::Any,
        vec![NewEvent::json("e", data).with_id(id(*n))],
    );
    match r {
        Ok(_) => done.push((s.to_owned(), id(*n))),
        // The hard-deleted stream refuses appends for ever.
        Err(strata_store::Error::StreamDeleted { .. }) if s == "hard-a" => {}
        Err(e) => panic!("append to {s}: {e}"),
    }
}

/// A history over a hundred-odd tiny segments with removable events of every kind.
fn history(store: &Store, n: &mut u64, done: &mut Appended, rounds: u64) {
    for round in 0..rounds {
        // Bursts: several events of a stream per segment (a scavenge keeps the entry of a
        // stream's last event in each segment).
        for s in STREAMS.iter().take(8) {
            // The deleted streams stay deleted (soft-re is the re-created one).
            if *n > 0 && store.head(s).is_ok_and(|h| h.deletion.is_some()) && *s != "soft-re" {
                continue;
            }
            for _ in 0..3 {
                append(store, s, n, done);
            }
        }
        if round % 9 == 0 {
            let meta = StreamMetadata {
                max_count: Some(3),
                ..StreamMetadata::default()
            };
            store.set_metadata("max-a", meta).expect("max_count");
            let meta = StreamMetadata {
                custom: Some(serde_json::json!({ "round": round })),
                ..StreamMetadata::default()
            };
            store.set_metadata("meta-a", meta).expect("custom");
        }
    }
}

fn deletions(store: &Store, at: u64) {
    store
        .delete_stream("soft-a", ExpectedRevision::Any, false)
        .expect("soft delete");
    store
        .delete_stream("soft-re", ExpectedRevision::Any, false)
        .expect("soft delete");
    store
        .delete_stream("hard-a", ExpectedRevision::Any, true)
        .expect("hard delete");
    let meta = StreamMetadata {
        truncate_before: Some(at),
        ..StreamMetadata::default()
    };
    store.set_metadata("trunc-a", meta).expect("truncate");
}

/// An error as text, without the data directory (the compared stores live in two copies).
fn err(e: strata_store::Error) -> String {
    match e {
        strata_store::Error::Corruption {
            file,
            offset,
            position,
            detail,
        } => {
            let name = file.file_name().map(|n| n.to_string_lossy().into_owned());
            format!("corruption in {name:?} at {offset} ({position:?}): {detail}")
        }
        e => e.to_string(),
    }
}

/// What a client sees: `/all`, and per stream its head and reads in every direction.
fn observe(store: &Store) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let all = store
        .read_all(
            ReadFrom::Start,
            Direction::Forward,
            1_000_000,
            &AllFilter::default(),
        )
        .map(|s| {
            s.events
                .iter()
                .map(|e| format!("{}/{}@{}", e.stream, e.revision, e.position))
                .collect::<Vec<_>>()
                .join(",")
        })
        .map_err(err);
    out.insert("$all".to_owned(), format!("{all:?}"));
    for s in STREAMS {
        let head = store
            .head(s)
            .map(|h| {
                format!(
                    "{:?} {:?} {:?}",
                    h.last_revision, h.last_position, h.deletion
                )
            })
            .map_err(err);
        let mut reads = Vec::new();
        for (from, dir) in [
            (ReadFrom::Start, Direction::Forward),
            (ReadFrom::At(3), Direction::Forward),
            (ReadFrom::End, Direction::Backward),
            (ReadFrom::At(10), Direction::Backward),
        ] {
            let r = store
                .read_stream(s, from, dir, 100_000)
                .map(|slice| {
                    slice
                        .events
                        .iter()
                        .map(|e| format!("{}@{}:{}", e.revision, e.position, e.id))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .map_err(err);
            reads.push(format!("{r:?}"));
        }
        out.insert(s.to_owned(), format!("{head:?} | {}", reads.join(" | ")));
    }
    out
}

/// Retries every earlier append (same id, any revision), then appends once to every stream:
/// the answers, in order (retries of a soft-deleted stream may re-create it, so both stores
/// must see the same sequence).
fn retries(store: &Store, done: &Appended) -> Vec<String> {
    let mut out = Vec::new();
    for (s, i) in done {
        let r = store.append(
            s,
            ExpectedRevision::Any,
            vec![NewEvent::json("e", "{}").with_id(*i)],
        );
        out.push(match r {
            Ok(r) => format!(
                "{s} {i}: {}..{}@{} replay={}",
                r.first_revision, r.last_revision, r.first_position, r.idempotent_replay
            ),
            Err(e) => format!("{s} {i}: {e}"),
        });
    }
    for (k, s) in (1u64..).zip(STREAMS) {
        let fresh = NewEvent::json("e", "{}").with_id(id(u64::MAX - k));
        let r = store.append(s, ExpectedRevision::Any, vec![fresh]);
        out.push(match r {
            Ok(r) => format!("{s}: {}@{}", r.first_revision, r.first_position),
            Err(e) => format!("{s}: {e}"),
        });
    }
    out
}

/// Equal views, reporting the first differing key only (views are long).
#[track_caller]
fn same(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>, what: &str) {
    for (k, v) in a {
        assert_eq!(Some(v), b.get(k), "{what}: {k}");
    }
    assert_eq!(a.len(), b.len(), "{what}");
}

fn scavenge(store: &Store) {
    store
        .scavenge(ScavengeOptions::default(), &mut |_| {})
        .expect("scavenge");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read dir").flatten() {
        let p = e.path();
        let dest = to.join(e.file_name());
        if p.is_dir() {
            copy_dir(&p, &dest);
        } else {
            std::fs::copy(&p, &dest).expect("copy");
        }
    }
}

/// Opens a copy of `dir` with merging on (files verified and in use) and one without merged
/// files at all: reads, heads, retries and appends must answer the same.
fn compare_on_off(dir: &Path, done: &Appended) -> BTreeMap<String, String> {
    let on_dir = tempfile::tempdir().expect("tempdir");
    let off_dir = tempfile::tempdir().expect("tempdir");
    copy_dir(dir, on_dir.path());
    copy_dir(dir, off_dir.path());
    let _ = std::fs::remove_dir_all(off_dir.path().join("merged"));
    let on = Store::open(on_dir.path(), opts(true)).expect("open on");
    on.merge_indexes().expect("verify merged files");
    let off = Store::open(off_dir.path(), opts(false)).expect("open off");
    let view = observe(&off);
    same(
        &observe(&on),
        &view,
        "reads with merged files (left) differ",
    );
    let r_off = retries(&off, done);
    let r_on = retries(&on, done);
    assert!(
        r_off
            .iter()
            .any(|x| x.starts_with("soft-a") && x.contains("replay=false")),
        "a retry of a removed event of the soft-deleted stream re-creates it"
    );
    for (a, b) in r_on.iter().zip(&r_off) {
        assert_eq!(a, b, "retry with merged files (left) differs");
    }
    same(&observe(&on), &observe(&off), "after retries");
    on.close().expect("close");
    off.close().expect("close");
    view
}

#[test]
fn merged_files_built_before_and_after_a_scavenge_answer_as_without() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), opts(true)).expect("open");
    let (mut n, mut done) = (0u64, Appended::new());
    history(&store, &mut n, &mut done, 100);
    deletions(&store, 120);
    // soft-re is re-created after its deletion.
    for _ in 0..3 {
        append(&store, "soft-re", &mut n, &mut done);
    }
    history(&store, &mut n, &mut done, 20);
    assert!(
        store.info().segment_count > 80,
        "{}",
        store.info().segment_count
    );
    // Built before the scavenge: they list every removed event and id.
    assert!(store.merge_indexes().expect("merge") > 0);
    let before = observe(&store);
    scavenge(&store);
    let after = observe(&store);
    for s in STREAMS {
        assert_eq!(after.get(s), before.get(s), "{s} changed by the scavenge");
    }
    store.close().expect("close");
    drop(store);
    compare_on_off(dir.path(), &done);

    // More history, merged files built over the scavenged (and neighbour-merged) segments,
    // a second scavenge merging neighbours across merged-file boundaries.
    let store = Store::open(dir.path(), opts(true)).expect("reopen");
    history(&store, &mut n, &mut done, 30);
    store.merge_indexes().expect("merge");
    scavenge(&store);
    history(&store, &mut n, &mut done, 10);
    store.merge_indexes().expect("merge");
    store.close().expect("close");
    drop(store);
    compare_on_off(dir.path(), &done);
}

/// Flips a byte in the padding of event `n`'s data, in whichever segment file holds it.
fn damage_event(dir: &Path, n: u64) {
    let needle = format!("{{\"n\":{n},\"pad\":\"xx").into_bytes();
    for e in std::fs::read_dir(dir).expect("read dir").flatten() {
        let p = e.path();
        if p.extension().is_none_or(|x| x != "seg") {
            continue;
        }
        let mut bytes = std::fs::read(&p).expect("read");
        if let Some(at) = bytes.windows(needle.len()).position(|w| w == needle) {
            bytes[at + needle.len() - 1] ^= 0x01;
            std::fs::write(&p, bytes).expect("write");
            return;
        }
    }
    panic!("event {n} not found");
}

#[test]
fn a_damaged_event_after_a_scavenge_reads_as_damage_through_merged_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), opts(true)).expect("open");
    let (mut n, mut done) = (0u64, Appended::new());
    history(&store, &mut n, &mut done, 60);
    deletions(&store, 90);
    history(&store, &mut n, &mut done, 20);
    scavenge(&store);
    assert!(store.merge_indexes().expect("merge") > 0);
    store.close().expect("close");
    drop(store);
    // keep-a's second event (n = 2: 80 bytes of padding), in a segment the merged files cover.
    damage_event(dir.path(), 2);
    let view = compare_on_off_reads(dir.path());
    let keep = &view["keep-a"];
    assert!(keep.contains("orrupt"), "{keep}");
    // A scavenge over the damaged segment neither fails the store nor hides the damage.
    let store = Store::open(dir.path(), opts(true)).expect("open");
    store.merge_indexes().expect("merge");
    let _ = store.scavenge(ScavengeOptions::default(), &mut |_| {});
    store.merge_indexes().expect("merge");
    let after = observe(&store);
    assert!(after["keep-a"].contains("orrupt"), "{}", after["keep-a"]);
    store.close().expect("close");
    drop(store);
    same(&compare_on_off_reads(dir.path()), &after, "reopened");
}

/// [`compare_on_off`] without retries (reads only).
fn compare_on_off_reads(dir: &Path) -> BTreeMap<String, String> {
    let on_dir = tempfile::tempdir().expect("tempdir");
    let off_dir = tempfile::tempdir().expect("tempdir");
    copy_dir(dir, on_dir.path());
    copy_dir(dir, off_dir.path());
    let _ = std::fs::remove_dir_all(off_dir.path().join("merged"));
    let on = Store::open(on_dir.path(), opts(true)).expect("open on");
    on.merge_indexes().expect("verify merged files");
    let off = Store::open(off_dir.path(), opts(false)).expect("open off");
    let view = observe(&off);
    same(
        &observe(&on),
        &view,
        "reads with merged files (left) differ",
    );
    on.close().expect("close");
    off.close().expect("close");
    view
}

#[test]
fn merges_running_during_scavenges_and_appends_leave_lookups_exact() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), opts(true)).expect("open");
    let (mut n, mut done) = (0u64, Appended::new());
    history(&store, &mut n, &mut done, 50);
    deletions(&store, 60);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let merger = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut runs = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Acquire) {
                store.merge_indexes().expect("merge during scavenge");
                runs += 1;
                std::thread::yield_now();
            }
            runs
        })
    };
    let appender = {
        let store = store.clone();
        std::thread::spawn(move || {
            let (mut n, mut done) = (n, Appended::new());
            for _ in 0..4 {
                history(&store, &mut n, &mut done, 10);
            }
            (n, done)
        })
    };
    for _ in 0..3 {
        scavenge(&store);
        // Reads through whatever chain is published answer as the segments do.
        let _ = observe(&store);
    }
    let (n2, more) = appender.join().expect("appender");
    n = n2;
    done.extend(more);
    scavenge(&store);
    stop.store(true, std::sync::atomic::Ordering::Release);
    assert!(merger.join().expect("merger") > 0);
    history(&store, &mut n, &mut done, 5);
    store.merge_indexes().expect("merge");
    let view = observe(&store);
    // Drop without close: the background merger may be mid-merge.
    drop(store);
    let reopened = compare_on_off(dir.path(), &done);
    same(&reopened, &view, "after a drop without close");
}

#[test]
fn segment_indexes_rebuilt_after_a_scavenge_agree_with_merged_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), opts(true)).expect("open");
    let (mut n, mut done) = (0u64, Appended::new());
    history(&store, &mut n, &mut done, 60);
    deletions(&store, 90);
    history(&store, &mut n, &mut done, 20);
    // Merged files from the indexes before, then after the scavenge.
    store.merge_indexes().expect("merge");
    scavenge(&store);
    history(&store, &mut n, &mut done, 20);
    store.merge_indexes().expect("merge");
    let view = observe(&store);
    store.close().expect("close");
    drop(store);
    // Every segment index lost: rebuilt from the segments and their removed-events files.
    for e in std::fs::read_dir(dir.path()).expect("read dir").flatten() {
        if e.path().extension().is_some_and(|x| x == "idx") {
            std::fs::remove_file(e.path()).expect("remove index");
        }
    }
    same(&compare_on_off(dir.path(), &done), &view, "indexes rebuilt");
}

/// One operation of the differential proptest.
#[derive(Clone, Debug)]
enum Op {
    /// `count` events appended to stream `k` (one append, fresh ids).
    Append(usize, u64),
    /// A retry of the `i`-th append so far (modulo their number).
    Retry(usize),
    SoftDelete(usize),
    HardDelete(usize),
    MaxCount(usize, u64),
    Truncate(usize, u64),
    Scavenge,
    Merge,
    Reopen,
}

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    let k = 0..8usize;
    prop_oneof![
        8 => (k.clone(), 1..40u64).prop_map(|(k, c)| Op::Append(k, c)),
        3 => any::<usize>().prop_map(Op::Retry),
        1 => k.clone().prop_map(Op::SoftDelete),
        1 => k.clone().prop_map(Op::HardDelete),
        1 => (k.clone(), 1..6u64).prop_map(|(k, c)| Op::MaxCount(k, c)),
        1 => (k, 0..40u64).prop_map(|(k, r)| Op::Truncate(k, r)),
        2 => Just(Op::Scavenge),
        2 => Just(Op::Merge),
        1 => Just(Op::Reopen),
    ]
}

/// The same operations on a store with merged index files (and its background merger) and on
/// one without: every answer and every view equal.
fn differential(ops: &[Op]) {
    const NAMES: [&str; 8] = [
        "keep-a", "keep-b", "soft-a", "hard-a", "trunc-a", "s-5", "s-6", "s-7",
    ];
    let dirs = [
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    ];
    let open = |i: usize| Store::open(dirs[i].path(), opts(i == 0)).expect("open");
    let mut stores = vec![open(0), open(1)];
    let mut appends: Vec<(usize, Vec<Uuid>)> = Vec::new();
    let mut next_id = 0u64;
    for (step, op) in ops.iter().enumerate() {
        let mut answers = Vec::new();
        for (which, store) in stores.iter().enumerate() {
            let a = match op {
                Op::Append(k, c) => {
                    let ids: Vec<Uuid> = (0..*c).map(|j| id(next_id + j)).collect();
                    if which == 1 {
                        appends.push((*k, ids.clone()));
                        next_id += c;
                    }
                    let events = ids
                        .iter()
                        .map(|i| {
                            NewEvent::json("e", format!("{{\"pad\":\"{}\"}}", "y".repeat(120)))
                                .with_id(*i)
                        })
                        .collect();
                    format!(
                        "{:?}",
                        store
                            .append(NAMES[*k], ExpectedRevision::Any, events)
                            .map_err(err)
                    )
                }
                Op::Retry(i) if !appends.is_empty() => {
                    let (k, ids) = &appends[i % appends.len()];
                    let events = ids
                        .iter()
                        .map(|i| NewEvent::json("e", "{}").with_id(*i))
                        .collect();
                    format!(
                        "{:?}",
                        store
                            .append(NAMES[*k], ExpectedRevision::Any, events)
                            .map_err(err)
                    )
                }
                Op::Retry(_) => String::new(),
                Op::SoftDelete(k) | Op::HardDelete(k) => format!(
                    "{:?}",
                    store
                        .delete_stream(
                            NAMES[*k],
                            ExpectedRevision::Any,
                            matches!(op, Op::HardDelete(_))
                        )
                        .map_err(err)
                ),
                Op::MaxCount(k, c) => format!(
                    "{:?}",
                    store
                        .set_metadata(
                            NAMES[*k],
                            StreamMetadata {
                                max_count: Some(*c),
                                ..StreamMetadata::default()
                            }
                        )
                        .map_err(err)
                ),
                Op::Truncate(k, r) => format!(
                    "{:?}",
                    store
                        .set_metadata(
                            NAMES[*k],
                            StreamMetadata {
                                truncate_before: Some(*r),
                                ..StreamMetadata::default()
                            }
                        )
                        .map_err(err)
                ),
                Op::Scavenge => {
                    let p = store
                        .scavenge(ScavengeOptions::default(), &mut |_| {})
                        .expect("scavenge");
                    format!("removed {}", p.events_removed)
                }
                Op::Merge => {
                    store.merge_indexes().expect("merge");
                    String::new()
                }
                Op::Reopen => String::new(),
            };
            answers.push(a);
        }
        assert_eq!(answers[0], answers[1], "step {step}: {op:?}");
        if matches!(op, Op::Reopen) {
            for s in &stores {
                s.close().expect("close");
            }
            // Dropped before reopening (the data directory's lock).
            stores.clear();
            stores = vec![open(0), open(1)];
        }
        if matches!(op, Op::Scavenge | Op::Merge | Op::Reopen) {
            let views = [observe(&stores[0]), observe(&stores[1])];
            same(&views[0], &views[1], &format!("step {step}: {op:?}"));
        }
    }
    let views = [observe(&stores[0]), observe(&stores[1])];
    same(&views[0], &views[1], "at the end");
    for s in &stores {
        s.close().expect("close");
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(12),
        failure_persistence: None,
        ..proptest::prelude::ProptestConfig::default()
    })]
    #[test]
    fn merged_and_unmerged_stores_answer_alike(ops in proptest::collection::vec(op(), 1..80)) {
        differential(&ops);
    }
}

/// The streams' part of a view (a partial scavenge changes `/all` only).
fn streams_of(view: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut v = view.clone();
    v.remove("$all");
    v
}

#[test]
fn a_crash_at_any_step_of_a_scavenge_over_merged_files_loses_nothing() {
    let base = tempfile::tempdir().expect("tempdir");
    let (mut n, mut done) = (0u64, Appended::new());
    {
        let store = Store::open(base.path(), opts(true)).expect("open");
        history(&store, &mut n, &mut done, 24);
        deletions(&store, 40);
        history(&store, &mut n, &mut done, 8);
        assert!(store.merge_indexes().expect("merge") > 0);
        store.close().expect("close");
    }
    let crashing = |crash: &Arc<Crash>| Options {
        file_io: Arc::new(CrashIo(crash.clone())),
        ..opts(true)
    };
    let before = streams_of(&compare_on_off_reads(base.path()));
    let (calls, commits, after_all) = {
        let dir = tempfile::tempdir().expect("tempdir");
        copy_dir(base.path(), dir.path());
        let crash = Crash::at(u64::MAX);
        let store = Store::open(dir.path(), crashing(&crash)).expect("open");
        store.merge_indexes().expect("merge");
        crash.armed.store(true, Ordering::Release);
        scavenge(&store);
        let view = observe(&store);
        assert_eq!(streams_of(&view), before);
        let commits = crash.commits.lock().expect("commits").clone();
        (crash.calls.load(Ordering::Acquire), commits, view)
    };
    assert!(calls > 10, "{calls} calls");
    // About 16 crash points spread over the run (every one with STRATA_CRASH_ALL=1: minutes).
    let every = if std::env::var_os("STRATA_CRASH_ALL").is_some() {
        1
    } else {
        (calls / 16).max(1)
    };
    // And right after every commit point (a swap committed, not finished).
    let mut points: Vec<u64> = (0..calls).step_by(every as usize).collect();
    points.extend(commits.iter().map(|c| c + 1));
    points.sort_unstable();
    points.dedup();
    for at in points {
        let dir = tempfile::tempdir().expect("tempdir");
        copy_dir(base.path(), dir.path());
        let crash = Crash::at(at);
        {
            let store = Store::open(dir.path(), crashing(&crash)).expect("open");
            store.merge_indexes().expect("merge");
            crash.armed.store(true, Ordering::Release);
            let r = store.scavenge(ScavengeOptions::default(), &mut |_| {});
            assert!(r.is_err(), "crash at call {at}: {r:?}");
            assert_eq!(streams_of(&observe(&store)), before, "crash at call {at}");
            // Dropped without close.
        }
        {
            // Read-only: nothing finished or removed, the same reads through the merged files.
            let ro = Options {
                read_only: true,
                ..opts(true)
            };
            let store = Store::open(dir.path(), ro).expect("read-only open");
            store.merge_indexes().expect("verify merged files");
            let view = streams_of(&observe(&store));
            assert_eq!(view, before, "crash at call {at}, read-only");
        }
        let store = Store::open(dir.path(), opts(true)).expect("reopen");
        store.merge_indexes().expect("merge");
        assert_eq!(
            streams_of(&observe(&store)),
            before,
            "crash at call {at}, reopened"
        );
        scavenge(&store);
        store.merge_indexes().expect("merge");
        same(
            &observe(&store),
            &after_all,
            &format!("crash at call {at}, next run"),
        );
        store.close().expect("close");
        drop(store);
        same(
            &compare_on_off_reads(dir.path()),
            &after_all,
            &format!("crash at call {at}, merging on and off"),
        );
    }
}

#[test]
fn readers_during_a_scavenge_and_merges_see_every_event_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), opts(true)).expect("open");
    let (mut n, mut done) = (0u64, Appended::new());
    history(&store, &mut n, &mut done, 70);
    deletions(&store, 100);
    history(&store, &mut n, &mut done, 30);
    let before = streams_of(&observe(&store));
    let stop = Arc::new(AtomicBool::new(false));
    let spawn = |merge: bool| {
        let (store, stop, before) = (store.clone(), stop.clone(), before.clone());
        std::thread::spawn(move || {
            let mut rounds = 0u64;
            while !stop.load(Ordering::Acquire) || rounds == 0 {
                if merge {
                    store.merge_indexes().expect("merge");
                }
                // Windows of segments being swapped and merged files being published: every
                // stream still reads each of its events exactly once, heads unchanged.
                assert_eq!(streams_of(&observe(&store)), before, "round {rounds}");
                rounds += 1;
            }
            rounds
        })
    };
    let threads = [spawn(true), spawn(false)];
    scavenge(&store);
    scavenge(&store);
    stop.store(true, Ordering::Release);
    for t in threads {
        assert!(t.join().expect("reader") > 0);
    }
    store.merge_indexes().expect("merge");
    assert_eq!(streams_of(&observe(&store)), before);
    store.close().expect("close");
}

#[test]
fn exact_appends_during_scavenges_and_merges_find_exact_heads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), opts(true)).expect("open");
    let mut heads = [None::<u64>; 10];
    let round = |store: &Store, heads: &mut [Option<u64>; 10]| {
        let pad = "z".repeat(150);
        for (k, head) in heads.iter_mut().enumerate() {
            let s = format!("exact-{k}");
            let expected = head.map_or(ExpectedRevision::NoStream, ExpectedRevision::Exact);
            let events = (0..3)
                .map(|_| NewEvent::json("e", format!("{{\"pad\":\"{pad}\"}}")))
                .collect();
            let r = store.append(&s, expected, events).expect("exact append");
            *head = Some(r.last_revision);
        }
    };
    for k in 0..10 {
        let meta = StreamMetadata {
            max_count: Some(2 + k % 3),
            ..StreamMetadata::default()
        };
        store
            .set_metadata(&format!("exact-{k}"), meta)
            .expect("meta");
    }
    for _ in 0..40 {
        round(&store, &mut heads);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let merger = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Acquire) {
                store.merge_indexes().expect("merge");
            }
        })
    };
    let writer = {
        let store = store.clone();
        std::thread::spawn(move || {
            for _ in 0..60 {
                round(&store, &mut heads);
            }
            heads
        })
    };
    for _ in 0..3 {
        scavenge(&store);
    }
    let heads = writer.join().expect("writer");
    stop.store(true, Ordering::Release);
    merger.join().expect("merger");
    store.close().expect("close");
    drop(store);
    for merge in [true, false] {
        let store = Store::open(dir.path(), opts(merge)).expect("reopen");
        store.merge_indexes().expect("merge");
        scavenge(&store);
        for (k, head) in heads.iter().enumerate() {
            let s = format!("exact-{k}");
            assert_eq!(store.head(&s).expect("head").last_revision, *head, "{s}");
        }
        store.close().expect("close");
    }
}
