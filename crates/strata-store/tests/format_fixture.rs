//! The on-disk format fixture: a small data directory written by format version 1, checked in
//! under `tests/fixtures/format-v1/`, with everything a read returns from it in
//! `tests/fixtures/format-v1.expected`.
//!
//! Every later format change must still open and read this directory exactly as it was written
//! (index files of an older format version are derived data: rebuilt from their segments):
//! same events, ids, revisions, positions, timestamps, payloads, deletions and metadata, sealed
//! segments and their index files included. The store is opened on a copy, so the fixture itself
//! never changes.
//!
//! To write the fixture anew (only when the format version is bumped, as an additional
//! directory — never replace an old one): `STRATA_WRITE_FIXTURE=<dir> cargo test -p strata-store
//! --test format_fixture -- --ignored write_fixture`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use strata_store::{
    AllFilter, ContentType, Deletion, Direction, Error, ExpectedRevision, FsyncPolicy, NewEvent,
    Options, ReadFrom, RecordedEvent, Store, StreamMetadata,
};
use uuid::Uuid;

/// Small segments, so that the fixture has several sealed segments with index files.
const SEGMENT_SIZE: u64 = 4096;

/// The streams the dump reads one by one (live, soft-deleted, hard-deleted, limited, absent).
const STREAMS: [&str; 9] = [
    "order-1",
    "order-2",
    "user-1",
    "blob-1",
    "soft-1",
    "hard-1",
    "capped-1",
    "$system-1",
    "never-written",
];

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/format-v1")
}

fn expected_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/format-v1.expected")
}

fn options() -> Options {
    Options {
        segment_size: SEGMENT_SIZE,
        fsync: FsyncPolicy::Always,
        ..Options::default()
    }
}

/// A deterministic id: the fixture's event ids never depend on a random generator.
fn id(n: u64) -> Uuid {
    Uuid::from_u64_pair(0x5354_5241_5441_0001, n)
}

/// What the fixture holds; the same history every time it is written.
fn write_history(store: &Store) -> Result<(), Error> {
    let mut n = 0u64;
    let mut next_id = || {
        n += 1;
        id(n)
    };
    for i in 0..30u64 {
        let stream = if i % 3 == 0 { "order-2" } else { "order-1" };
        let event = NewEvent::json(
            if i % 2 == 0 {
                "OrderPlaced"
            } else {
                "ItemAdded"
            },
            format!(r#"{{"i":{i},"sku":"sku-{i}","note":"{}"}}"#, "x".repeat(40)),
        )
        .with_id(next_id())
        .with_metadata(format!(r#"{{"correlation_id":"c-{}"}}"#, i / 5));
        store.append(stream, ExpectedRevision::Any, vec![event])?;
    }
    // A batch of three, atomically, with a stream_exists check.
    let batch = (0..3)
        .map(|k| NewEvent::json("UserRenamed", format!(r#"{{"k":{k}}}"#)).with_id(next_id()))
        .collect();
    store.append("user-1", ExpectedRevision::Any, batch)?;
    let batch = (0..2)
        .map(|k| NewEvent::json("UserSeen", format!("[{k},{k}]")).with_id(next_id()))
        .collect();
    store.append("user-1", ExpectedRevision::StreamExists, batch)?;
    // Binary payloads, one of them empty.
    let bytes: Vec<u8> = (0..=255u8).collect();
    store.append(
        "blob-1",
        ExpectedRevision::NoStream,
        vec![
            NewEvent::binary("Blob", bytes).with_id(next_id()),
            NewEvent::binary("Empty", Vec::new()).with_id(next_id()),
            NewEvent::json("NoData", Vec::new()).with_id(next_id()),
        ],
    )?;
    // Soft-deleted, re-created, soft-deleted again.
    for r in 0..4u64 {
        store.append(
            "soft-1",
            ExpectedRevision::Any,
            vec![NewEvent::json("S", format!("{r}")).with_id(next_id())],
        )?;
    }
    store.delete_stream("soft-1", ExpectedRevision::Exact(3), false)?;
    store.append(
        "soft-1",
        ExpectedRevision::NoStream,
        vec![NewEvent::json("S", "4").with_id(next_id())],
    )?;
    // Tombstoned.
    store.append(
        "hard-1",
        ExpectedRevision::NoStream,
        vec![NewEvent::json("H", "0").with_id(next_id())],
    )?;
    store.delete_stream("hard-1", ExpectedRevision::Any, true)?;
    // Metadata limits: max_count, truncate_before and custom JSON.
    for r in 0..10u64 {
        store.append(
            "capped-1",
            ExpectedRevision::Any,
            vec![NewEvent::json("C", format!("{r}")).with_id(next_id())],
        )?;
    }
    store.set_metadata(
        "capped-1",
        StreamMetadata {
            max_count: Some(6),
            truncate_before: Some(5),
            custom: Some(serde_json::json!({"owner": "billing", "tier": 2})),
            ..StreamMetadata::default()
        },
    )?;
    // A reserved stream, as the server writes its bookkeeping.
    store.append(
        "$system-1",
        ExpectedRevision::Any,
        vec![NewEvent::json("$checkpoint", r#"{"position":12}"#).with_id(next_id())],
    )?;
    // Enough to seal a few more segments; the last one stays open.
    for i in 0..40u64 {
        store.append(
            if i % 2 == 0 { "order-1" } else { "user-1" },
            ExpectedRevision::Any,
            vec![
                NewEvent::json("Tick", format!(r#"{{"t":{i},"pad":"{}"}}"#, "p".repeat(60)))
                    .with_id(next_id()),
            ],
        )?;
    }
    Ok(())
}

fn render_event(out: &mut String, e: &RecordedEvent) {
    let data = match e.content_type {
        ContentType::Json => format!("json:{}", String::from_utf8_lossy(&e.data)),
        ContentType::Binary => {
            let hex: String = e.data.iter().map(|b| format!("{b:02x}")).collect();
            format!("hex:{hex}")
        }
    };
    let _ = writeln!(
        out,
        "  {} {} r{} p{} {} t{} {} meta:{}",
        e.id,
        e.stream,
        e.revision,
        e.position,
        e.event_type,
        e.timestamp_micros,
        data,
        String::from_utf8_lossy(&e.metadata)
    );
}

/// The kind of a read error, independent of its message text.
fn kind(e: &Error) -> String {
    match e {
        Error::StreamNotFound { .. } => "stream_not_found".into(),
        Error::StreamDeleted { .. } => "stream_deleted".into(),
        other => format!("unexpected: {other}"),
    }
}

/// Everything the public read API returns from `store`, as text.
fn dump(store: &Store) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "next_position {}", store.next_position());
    let all = AllFilter {
        include_system: true,
        ..AllFilter::default()
    };
    let _ = writeln!(out, "all (include_system):");
    let page = store
        .read_all(ReadFrom::Start, Direction::Forward, 10_000, &all)
        .expect("read_all");
    for e in &page.events {
        render_event(&mut out, e);
    }
    let _ = writeln!(out, "all backward, types=Tick,Blob, 5:");
    let filter = AllFilter {
        types: vec!["Tick".into(), "Blob".into()],
        ..AllFilter::default()
    };
    let page = store
        .read_all(ReadFrom::End, Direction::Backward, 5, &filter)
        .expect("read_all backward");
    for e in &page.events {
        let _ = writeln!(out, "  p{}", e.position);
    }
    let _ = writeln!(out, "all category=order from 20, 5:");
    let filter = AllFilter {
        category: Some("order".into()),
        ..AllFilter::default()
    };
    let page = store
        .read_all(ReadFrom::At(20), Direction::Forward, 5, &filter)
        .expect("read_all category");
    for e in &page.events {
        let _ = writeln!(out, "  p{}", e.position);
    }
    let _ = writeln!(out, "  next {:?} end {}", page.next, page.end);
    for stream in STREAMS {
        let _ = writeln!(out, "stream {stream}:");
        match store.head(stream) {
            Ok(h) => {
                let deletion = match h.deletion {
                    None => "none".to_owned(),
                    Some(Deletion::Soft { at }) => format!("soft at {at}"),
                    Some(Deletion::Hard) => "hard".to_owned(),
                };
                let m = &h.metadata;
                let custom = m.custom.as_ref().map(|c| c.to_string());
                let _ = writeln!(
                    out,
                    "  head last_revision {:?} last_position {:?} deletion {deletion} \
                     max_count {:?} max_age_seconds {:?} truncate_before {:?} custom {:?}",
                    h.last_revision,
                    h.last_position,
                    m.max_count,
                    m.max_age_seconds,
                    m.truncate_before,
                    custom
                );
            }
            Err(e) => {
                let _ = writeln!(out, "  head error {}", kind(&e));
            }
        }
        match store.read_stream(stream, ReadFrom::Start, Direction::Forward, 1000) {
            Ok(page) => {
                let revisions: Vec<u64> = page.events.iter().map(|e| e.revision).collect();
                let _ = writeln!(out, "  forward {revisions:?} next {:?}", page.next);
            }
            Err(e) => {
                let _ = writeln!(out, "  forward error {}", kind(&e));
            }
        }
        match store.read_stream(stream, ReadFrom::End, Direction::Backward, 3) {
            Ok(page) => {
                let revisions: Vec<u64> = page.events.iter().map(|e| e.revision).collect();
                let _ = writeln!(out, "  backward 3 {revisions:?} next {:?}", page.next);
            }
            Err(e) => {
                let _ = writeln!(out, "  backward error {}", kind(&e));
            }
        }
        match store.read_event(stream, 0) {
            Ok(e) => {
                let _ = writeln!(out, "  event 0 {:?}", e.map(|e| (e.id, e.position)));
            }
            Err(e) => {
                let _ = writeln!(out, "  event 0 error {}", kind(&e));
            }
        }
    }
    let (streams, next) = store.list_streams("", None, 1000).expect("list_streams");
    let _ = writeln!(out, "list_streams next {next:?}:");
    for s in streams {
        let _ = writeln!(
            out,
            "  {} r{} p{}",
            s.name, s.last_revision, s.last_position
        );
    }
    out
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create copy");
    for entry in std::fs::read_dir(from).expect("read fixture dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy fixture file");
        }
    }
}

/// A copy of the version-1 fixture opens writable and reads exactly as it was written.
#[test]
fn format_v1_fixture_opens_and_reads_as_written() {
    let expected = std::fs::read_to_string(expected_file()).expect("fixture expectations");
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&fixture_dir(), dir.path());
    let sealed = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".idx"))
        .count();
    assert!(sealed >= 3, "the fixture has {sealed} index files");

    let store = Store::open(dir.path(), options()).expect("open the v1 fixture");
    let got = dump(&store);
    if got != expected {
        let first = got
            .lines()
            .zip(expected.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(got.lines().count().min(expected.lines().count()));
        panic!(
            "the fixture reads differently at line {}:\n  got:      {:?}\n  expected: {:?}",
            first + 1,
            got.lines().nth(first),
            expected.lines().nth(first)
        );
    }

    // Its version-1 index files (no correlation postings) were stale: rebuilt from their
    // segments on open as version 2, so one flow's events come from the index.
    for entry in std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
    {
        if entry.file_name().to_string_lossy().ends_with(".idx") {
            let bytes = std::fs::read(entry.path()).unwrap();
            assert_eq!(&bytes[8..12], &2u32.to_le_bytes(), "{:?}", entry.path());
        }
    }
    let flow = AllFilter {
        correlation_id: Some("c-1".into()),
        ..AllFilter::default()
    };
    let page = store
        .read_all(ReadFrom::Start, Direction::Forward, 100, &flow)
        .expect("read one flow");
    let positions: Vec<u64> = page.events.iter().map(|e| e.position).collect();
    assert_eq!(positions, vec![5, 6, 7, 8, 9]);

    // It stays writable: idempotent retries are still recognised from the persistent event-id
    // index, concurrency checks see the old heads, new events continue the positions.
    let head = store.next_position();
    let retry = store
        .append(
            "order-1",
            ExpectedRevision::Any,
            vec![NewEvent::json("ItemAdded", "{}").with_id(id(2))],
        )
        .expect("idempotent retry");
    assert!(retry.idempotent_replay);
    assert!(matches!(
        store.append(
            "hard-1",
            ExpectedRevision::Any,
            vec![NewEvent::json("H", "1")]
        ),
        Err(Error::StreamDeleted { .. })
    ));
    let user_head = store.head("user-1").unwrap().last_revision.unwrap();
    let appended = store
        .append(
            "user-1",
            ExpectedRevision::Exact(user_head),
            vec![NewEvent::json("After", "1")],
        )
        .expect("append after open");
    assert_eq!(appended.first_position, head);
    assert_eq!(appended.first_revision, user_head + 1);
    store.close().unwrap();
    drop(store);

    // And the same holds after reopening what this test wrote on top of the fixture.
    let store = Store::open(dir.path(), options()).expect("reopen");
    assert_eq!(store.next_position(), head + 1);
    let reread = dump(&store);
    assert!(reread.starts_with(&format!("next_position {}", head + 1)));
}

/// Writes the fixture directory and its expectations (see the module docs).
#[test]
#[ignore = "writes the fixture; run only when adding a new format version"]
fn write_fixture() {
    let Some(target) = std::env::var_os("STRATA_WRITE_FIXTURE") else {
        panic!("set STRATA_WRITE_FIXTURE to the directory to write");
    };
    let target = PathBuf::from(target);
    assert!(
        !target.exists(),
        "{} exists: fixtures are never overwritten",
        target.display()
    );
    let store = Store::open(&target, options()).expect("open");
    write_history(&store).expect("write history");
    store.close().expect("close");
    drop(store);
    let store = Store::open(&target, options()).expect("reopen");
    let text = dump(&store);
    store.close().expect("close");
    drop(store);
    // The lock file is made by every open; the fixture holds only the data files.
    let _ = std::fs::remove_file(target.join("LOCK"));
    std::fs::write(target.with_extension("expected"), text).expect("write expectations");
}
