//! Crash safety of scavenging, in process: a file-I/O layer that "crashes" at the n-th call a
//! scavenge makes (that call fails, a write having written only half its bytes, and every later
//! call fails too, so no cleanup runs), for every n. After a reopen, every read answers as
//! before the scavenge, nothing is left of the interrupted rewrite, and a new scavenge
//! finishes the job: the log then reads exactly as after an uninterrupted run.

mod common;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use common::crash_io::{Crash, CrashIo};
use strata_store::{
    AllFilter, Direction, ExpectedRevision, FsyncPolicy, NewEvent, Options, ReadFrom,
    ScavengeOptions, Store, StreamMetadata,
};
use uuid::Uuid;

fn options(io: Option<Arc<Crash>>) -> Options {
    let mut o = Options {
        fsync: FsyncPolicy::Never,
        segment_size: 4096,
        ..Options::default()
    };
    if let Some(c) = io {
        o.file_io = Arc::new(CrashIo(c));
    }
    o
}

/// A directory whose sealed segments hold removable events of several kinds.
fn template(dir: &Path) {
    let store = Store::open(dir, options(None)).expect("open");
    let ev = |i: u64| {
        NewEvent::json(
            "T",
            format!("{{\"i\":{i},\"pad\":\"{}\"}}", "y".repeat(150)),
        )
        .with_id(Uuid::from_u128(u128::from(i) + 1))
    };
    for i in 0..30u64 {
        let stream = ["keep", "gone", "cap"][(i % 3) as usize];
        store
            .append(
                stream,
                ExpectedRevision::Any,
                vec![ev(2 * i), ev(2 * i + 1)],
            )
            .expect("append");
    }
    store
        .delete_stream("gone", ExpectedRevision::Any, false)
        .expect("delete");
    let cap = StreamMetadata {
        max_count: Some(2),
        ..Default::default()
    };
    store.set_metadata("cap", cap).expect("metadata");
    for i in 0..25u64 {
        store
            .append("filler", ExpectedRevision::Any, vec![ev(1000 + i)])
            .expect("filler");
    }
    store.close().expect("close");
}

/// What reads return: stream pages (or errors) and heads, and `/all`.
fn reads(store: &Store) -> (Vec<String>, Vec<(String, u64, u64)>) {
    let mut streams = Vec::new();
    for s in ["keep", "gone", "cap", "filler"] {
        let page = store.read_stream(s, ReadFrom::Start, Direction::Forward, 1000);
        let page = page.map(|p| {
            p.events
                .iter()
                .map(|e| (e.revision, e.position, e.id))
                .collect::<Vec<_>>()
        });
        let head = store.head(s).expect("head");
        streams.push(format!(
            "{s}: {page:?} head {:?}/{:?}",
            head.last_revision, head.last_position
        ));
    }
    let all = store
        .read_all(
            ReadFrom::Start,
            Direction::Forward,
            100_000,
            &AllFilter::default(),
        )
        .expect("read all")
        .events
        .iter()
        .map(|e| (e.stream.clone(), e.revision, e.position))
        .collect();
    (streams, all)
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        if entry.file_name() == "LOCK" {
            continue;
        }
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
    }
}

#[test]
fn a_crash_at_any_step_of_a_scavenge_loses_nothing_and_the_next_run_finishes_it() {
    let base = tempfile::tempdir().expect("tempdir");
    template(base.path());
    let (before, _) = {
        let store = Store::open(base.path(), options(None)).expect("open");
        reads(&store)
    };
    // The uninterrupted run: how many I/O calls it makes, and what the log reads as after it.
    let (calls, after_all) = {
        let dir = tempfile::tempdir().expect("tempdir");
        copy_dir(base.path(), dir.path());
        let crash = Crash::at(u64::MAX);
        let store = Store::open(dir.path(), options(Some(crash.clone()))).expect("open");
        let segments = store.info().segment_count;
        crash.armed.store(true, Ordering::Release);
        let p = store
            .scavenge(ScavengeOptions::default(), &mut |_| {})
            .expect("scavenge");
        assert!(p.events_removed > 0 && p.segments_total >= 3, "{p:?}");
        // Rewrites and merges both ran (the crash points cover both).
        assert!(
            store.info().segment_count < segments,
            "{segments} segments before"
        );
        let (streams, all) = reads(&store);
        assert_eq!(streams, before);
        (crash.calls.load(Ordering::Acquire), all)
    };
    assert!(calls > 10, "{calls} calls");
    for n in 0..calls {
        let dir = tempfile::tempdir().expect("tempdir");
        copy_dir(base.path(), dir.path());
        let crash = Crash::at(n);
        {
            let store = Store::open(dir.path(), options(Some(crash.clone()))).expect("open");
            crash.armed.store(true, Ordering::Release);
            let r = store.scavenge(ScavengeOptions::default(), &mut |_| {});
            assert!(r.is_err(), "crash at call {n}: {r:?}");
            assert!(crash.crashed(), "call {n}");
            // Reads of the running store still answer as before.
            assert_eq!(
                reads(&store).0,
                before,
                "crash at call {n}, before the reopen"
            );
            let _ = store.close();
        }
        {
            // A read-only open changes nothing and reads the same.
            let ro = Options {
                read_only: true,
                ..options(None)
            };
            let store = Store::open(dir.path(), ro).expect("read-only open");
            assert_eq!(reads(&store).0, before, "crash at call {n}, read-only");
        }
        let store = Store::open(dir.path(), options(None)).expect("reopen");
        assert_eq!(
            reads(&store).0,
            before,
            "crash at call {n}, after the reopen"
        );
        let leftovers: Vec<String> = std::fs::read_dir(dir.path())
            .expect("read dir")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|name| name.ends_with(".scv") || name.ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "crash at call {n}: {leftovers:?}");
        store
            .scavenge(ScavengeOptions::default(), &mut |_| {})
            .expect("the next scavenge");
        let (streams, all) = reads(&store);
        assert_eq!(streams, before, "crash at call {n}, after the next run");
        assert_eq!(all, after_all, "crash at call {n}, after the next run");
        // No index or removed-events file outlives its segment.
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("read dir")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        for name in &names {
            if let Some(stem) = name
                .strip_suffix(".idx")
                .or_else(|| name.strip_suffix(".rmv"))
            {
                assert!(
                    names.contains(&format!("{stem}.seg")),
                    "crash at call {n}: {name} without its segment: {names:?}"
                );
            }
        }
    }
}
