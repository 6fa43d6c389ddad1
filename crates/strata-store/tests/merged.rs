//! Merged index files (`crate::merged`) on a store of a few hundred tiny sealed segments: every
//! stream's read, head and idempotent retry answer the same with merging on and off, across
//! reopens, and after leftovers of a crash mid-merge (temporary files, damaged, stale and
//! superseded merged files); appends checked against heads found through the merged files
//! stay exact.

use std::collections::BTreeMap;
use std::path::Path;

use strata_store::{
    Direction, ExpectedRevision, FsyncPolicy, NewEvent, Options, ReadFrom, Store, StreamMetadata,
};
use uuid::Uuid;

/// Streams of the history.
const STREAMS: u64 = 60;

fn opts(merge: bool) -> Options {
    Options {
        segment_size: 4096,
        fsync: FsyncPolicy::Never,
        // Smaller than the number of streams: the writer looks heads up in the indexes.
        head_cache_capacity: 4,
        merge_indexes: merge,
        ..Options::default()
    }
}

fn stream(i: u64) -> String {
    format!("s-{i}")
}

fn id(n: u64) -> Uuid {
    Uuid::from_u128(0x5eed_0000_0000_0000_0000_0000_0000_0000 | u128::from(n))
}

/// Appends `events` single-event appends (ids `id(start..)`) spread over the streams, with
/// metadata set on a few streams and one stream soft-deleted on the way.
fn fill(store: &Store, start: u64, events: u64, at: &mut BTreeMap<u64, u64>) {
    for n in start..start + events {
        let s = stream((n * 7 + n / 5) % STREAMS);
        let data = format!(
            "{{\"n\":{n},\"pad\":\"{}\"}}",
            "x".repeat((n % 5 * 75) as usize)
        );
        let r = store
            .append(
                &s,
                ExpectedRevision::Any,
                vec![NewEvent::json("e", data).with_id(id(n))],
            )
            .expect("append");
        at.insert(n, r.first_position);
        if n % 97 == 0 {
            let meta = StreamMetadata {
                max_count: Some(3 + n % 4),
                ..StreamMetadata::default()
            };
            store.set_metadata(&s, meta).expect("set metadata");
        }
        if n == start + events / 2 {
            store
                .append(
                    &stream(5),
                    ExpectedRevision::Any,
                    vec![NewEvent::json("e", "{}")],
                )
                .expect("append before the delete");
            store
                .delete_stream(&stream(5), ExpectedRevision::Any, false)
                .expect("delete");
        }
    }
}

/// What a reader sees of every stream: head and the events (or the read error).
fn observe(store: &Store) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for i in 0..STREAMS + 2 {
        let s = stream(i);
        let head = store.head(&s).expect("head");
        let read = store.read_stream(&s, ReadFrom::Start, Direction::Forward, 10_000);
        let events = match read {
            Ok(slice) => slice
                .events
                .iter()
                .map(|e| format!("{}@{}:{}", e.revision, e.position, e.id))
                .collect::<Vec<_>>()
                .join(","),
            Err(e) => format!("error: {e}"),
        };
        let back = store
            .read_stream(&s, ReadFrom::End, Direction::Backward, 2)
            .map(|slice| slice.events.iter().map(|e| e.position).collect::<Vec<_>>());
        out.insert(s, format!("{head:?} | {events} | {back:?}"));
    }
    out
}

/// Retries of every earlier append (same id) are idempotent replays at the original position.
fn check_retries(store: &Store, at: &BTreeMap<u64, u64>, step: usize) {
    for (&n, &position) in at.iter().step_by(step) {
        let s = stream((n * 7 + n / 5) % STREAMS);
        if s == stream(5) {
            continue;
        }
        let r = store
            .append(
                &s,
                ExpectedRevision::Any,
                vec![NewEvent::json("e", "{}").with_id(id(n))],
            )
            .expect("retry");
        assert!(r.idempotent_replay, "event {n} of {s} appended twice");
        assert_eq!(r.first_position, position, "event {n} of {s}");
    }
}

fn merged_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir.join("merged"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn reads_and_heads_agree_with_merging_on_and_off_and_across_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), opts(true)).expect("open");
    let mut at = BTreeMap::new();
    fill(&store, 0, 2000, &mut at);
    let in_use = store.merge_indexes().expect("merge");
    let segments = store.info().segment_count;
    assert!(segments > 120, "{segments} segments");
    assert!(in_use > 0 && in_use < 12, "{in_use} merged files in use");
    let files = merged_files(dir.path());
    assert_eq!(files.len(), in_use, "{files:?}");
    let merged_view = observe(&store);
    check_retries(&store, &at, 7);
    store.close().expect("close");
    drop(store);

    let store = Store::open(dir.path(), opts(false)).expect("open without merging");
    assert_eq!(store.merge_indexes().expect("merge off"), 0);
    assert_eq!(observe(&store), merged_view);
    check_retries(&store, &at, 11);
    store.close().expect("close");
    drop(store);
    assert_eq!(
        merged_files(dir.path()),
        files,
        "merging off touches nothing"
    );

    // Reopened with merging: the same before and after the files are verified and in use.
    let store = Store::open(dir.path(), opts(true)).expect("reopen");
    assert_eq!(observe(&store), merged_view);
    assert_eq!(store.merge_indexes().expect("merge"), in_use);
    assert_eq!(observe(&store), merged_view);

    // Appends go on (new streams, existing ones, exact expected revisions) through heads
    // found in merged files.
    for i in 0..STREAMS + 2 {
        let s = stream(i);
        let head = store.head(&s).expect("head");
        let expected = match head.last_revision {
            Some(r) if !head.is_deleted() => ExpectedRevision::Exact(r),
            _ => ExpectedRevision::NoStream,
        };
        store
            .append(&s, expected, vec![NewEvent::json("e", "{}")])
            .expect("append at the head");
    }
    fill(&store, 2000, 600, &mut at);
    store.merge_indexes().expect("merge");
    let view = observe(&store);
    check_retries(&store, &at, 13);
    store.close().expect("close");
    drop(store);
    let store = Store::open(dir.path(), opts(false)).expect("open without merging");
    assert_eq!(observe(&store), view);
    store.close().expect("close");
    drop(store);
}

#[test]
fn leftovers_of_a_crash_mid_merge_are_ignored_and_rebuilt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), opts(true)).expect("open");
    let mut at = BTreeMap::new();
    fill(&store, 0, 1500, &mut at);
    store.merge_indexes().expect("merge");
    let view = observe(&store);
    // Dropped without close while the merger may be working on the last seals.
    fill(&store, 1500, 300, &mut at);
    drop(store);
    let store = Store::open(dir.path(), opts(false)).expect("open without merging");
    let view_all = observe(&store);
    store.close().expect("close");
    drop(store);
    assert_ne!(view, view_all);

    let mdir = dir.path().join("merged");
    let files = merged_files(dir.path());
    assert!(!files.is_empty(), "{files:?}");
    // A temporary file of a merge cut short, a superseded file (a level-1 file the level-2 one
    // replaced, its removal lost), a damaged body, a damaged header, a file past the end.
    std::fs::write(mdir.join(format!("{}.tmp", files[0])), b"half a merge").expect("tmp");
    let first = mdir.join(&files[0]);
    let mut bytes = std::fs::read(&first).expect("read");
    let superseded = bytes.clone();
    let n = bytes.len();
    bytes[n - 1] ^= 0x55;
    std::fs::write(&first, &bytes).expect("damage body");
    std::fs::write(
        mdir.join("00000000000000000000-00000000000000000010.midx"),
        &superseded[..200.min(superseded.len())],
    )
    .expect("superseded");
    if let Some(second) = files.get(1) {
        let second = mdir.join(second);
        let mut bytes = std::fs::read(&second).expect("read");
        bytes[30] ^= 1;
        std::fs::write(&second, &bytes).expect("damage header");
    }
    std::fs::write(
        mdir.join("00000000000000000000-99999999999999999999.midx"),
        &superseded,
    )
    .expect("stale");

    let store = Store::open(dir.path(), opts(true)).expect("open with leftovers");
    assert_eq!(observe(&store), view_all);
    let in_use = store.merge_indexes().expect("merge");
    assert!(in_use > 0);
    assert_eq!(observe(&store), view_all);
    check_retries(&store, &at, 9);
    store.close().expect("close");
    drop(store);
    let left = merged_files(dir.path());
    assert_eq!(left.len(), in_use, "{left:?}");
    assert!(left.iter().all(|f| f.ends_with(".midx")), "{left:?}");

    // A read-only open uses the files without changing them.
    let ro = Store::open(
        dir.path(),
        Options {
            read_only: true,
            ..opts(true)
        },
    )
    .expect("open read-only");
    assert_eq!(ro.merge_indexes().expect("verify"), in_use);
    assert_eq!(observe(&ro), view_all);
    drop(ro);
    assert_eq!(merged_files(dir.path()), left);
}

#[test]
fn the_background_merger_merges_on_its_own_and_stops_on_close() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), opts(true)).expect("open");
    let mut at = BTreeMap::new();
    fill(&store, 0, 400, &mut at);
    assert!(store.info().segment_count > 11);
    // Seals wake the merger; it writes without being asked (waited for generously: the
    // machine may be busy).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while merged_files(dir.path()).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "no merged file after 60 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let view = observe(&store);
    // Closing while seals keep the merger busy: it stops, and nothing half-written stays.
    fill(&store, 400, 300, &mut at);
    store.close().expect("close");
    drop(store);
    assert!(merged_files(dir.path())
        .iter()
        .all(|f| f.ends_with(".midx")));
    let store = Store::open(dir.path(), opts(false)).expect("reopen");
    assert_ne!(observe(&store), view);
    check_retries(&store, &at, 5);
    drop(store);
}
