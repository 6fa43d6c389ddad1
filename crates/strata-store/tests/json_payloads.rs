//! JSON payloads are checked at append time: `data` of JSON events and every event's metadata
//! must be JSON text nested at most 64 levels deep, without lone UTF-16 surrogate escapes.
//! Such payloads would otherwise fault every projection that reads them, for ever (a restart
//! or reset replays the same event). A refused append writes nothing, whichever event of the
//! batch is bad.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use strata_store::*;

fn open(dir: &std::path::Path) -> Store {
    let options = Options {
        fsync: FsyncPolicy::Never,
        ..Options::default()
    };
    Store::open(dir, options).unwrap()
}

/// `depth` nested arrays: `[[[...]]]`.
fn nested(depth: usize) -> String {
    "[".repeat(depth) + &"]".repeat(depth)
}

/// The field and reason of an [`Error::InvalidInput`]; panics on anything else.
#[track_caller]
fn invalid(result: Result<AppendResult>) -> (String, String) {
    match result {
        Err(Error::InvalidInput { field, reason }) => (field, reason),
        other => panic!("expected InvalidInput, got {other:?}"),
    }
}

/// Nothing at all was written: no stream, an empty log.
#[track_caller]
fn assert_nothing_written(store: &Store, stream: &str) {
    assert!(
        matches!(
            store.read_stream(stream, ReadFrom::Start, Direction::Forward, 10),
            Err(Error::StreamNotFound { .. })
        ),
        "the refused append created {stream}"
    );
    let all = AllFilter {
        include_system: true,
        ..AllFilter::default()
    };
    let page = store
        .read_all(ReadFrom::Start, Direction::Forward, 10, &all)
        .unwrap();
    assert!(page.events.is_empty(), "written: {:?}", page.events);
    assert_eq!(store.info().next_position, 0);
}

/// Polls `f` to completion on this thread (no executor in this crate's dev-dependencies).
fn block_on<F: Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(out) = f.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}

#[test]
fn deeply_nested_data_is_refused_and_names_the_event_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let (field, reason) = invalid(store.append(
        "deep-1",
        ExpectedRevision::Any,
        vec![NewEvent::json("T", nested(100_000))],
    ));
    assert_eq!(field, "events[0].data");
    assert!(
        reason.contains("nested deeper than 64 levels"),
        "reason: {reason}"
    );
    assert_nothing_written(&store, "deep-1");

    // At the limit it is fine.
    store
        .append(
            "deep-1",
            ExpectedRevision::NoStream,
            vec![NewEvent::json("T", nested(64))],
        )
        .unwrap();
}

#[test]
fn one_bad_event_refuses_the_whole_batch() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let events = vec![
        NewEvent::json("Good", r#"{"a":1}"#),
        NewEvent::json("Good", r#"{"b":2}"#).with_metadata(r#"{"c":3}"#),
        NewEvent::json("Bad", r#"{"a":1}"#).with_metadata(format!(r#"{{"m":{}}}"#, nested(64))),
        NewEvent::json("Good", "[]"),
    ];
    let (field, reason) = invalid(store.append("batch-1", ExpectedRevision::Any, events));
    assert_eq!(field, "events[2].metadata");
    assert!(
        reason.contains("nested deeper than 64 levels"),
        "reason: {reason}"
    );
    assert_nothing_written(&store, "batch-1");
}

#[test]
fn lone_surrogate_escapes_are_refused_paired_ones_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    // The escape starts at byte 17 of the data.
    let data = r#"{"name": "abc", "\ud800": 1}"#;
    let (field, reason) = invalid(store.append(
        "s-1",
        ExpectedRevision::Any,
        vec![NewEvent::json("T", "1"), NewEvent::json("T", data)],
    ));
    assert_eq!(field, "events[1].data");
    assert_eq!(reason, r"lone surrogate \ud800 at byte 17");
    let (field, reason) = invalid(store.append(
        "s-1",
        ExpectedRevision::Any,
        vec![NewEvent::binary("T", vec![0xff]).with_metadata(r#""\udc00x""#)],
    ));
    assert_eq!(field, "events[0].metadata");
    assert_eq!(reason, r"lone surrogate \udc00 at byte 1");
    assert_nothing_written(&store, "s-1");

    // A pair, and an escaped backslash before `ud800` (no surrogate at all), are fine; the bytes
    // are stored as sent.
    let ok = r#"{"pair": "\ud83d\ude00", "not": "\\ud800"}"#;
    store
        .append("s-1", ExpectedRevision::Any, vec![NewEvent::json("T", ok)])
        .unwrap();
    let page = store
        .read_stream("s-1", ReadFrom::Start, Direction::Forward, 10)
        .unwrap();
    assert_eq!(page.events.len(), 1);
    assert_eq!(page.events[0].data, ok.as_bytes());
}

#[test]
fn json_events_must_hold_json_binary_data_is_opaque() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for (data, want) in [
        (&b"not json"[..], "not valid JSON"),
        (b"{\"a\":1,}", "not valid JSON"),
        (b"[1] [2]", "not valid JSON"),
        (b"\"\xff\"", "invalid UTF-8"),
    ] {
        let (field, reason) = invalid(store.append(
            "j-1",
            ExpectedRevision::Any,
            vec![NewEvent::json("T", data)],
        ));
        assert_eq!(field, "events[0].data", "{data:?}");
        assert!(reason.contains(want), "{data:?}: {reason}");
    }
    // Metadata is JSON for every event, whatever the content type of `data`.
    let (field, _) = invalid(store.append(
        "j-1",
        ExpectedRevision::Any,
        vec![NewEvent::binary("T", b"x".to_vec()).with_metadata("nope")],
    ));
    assert_eq!(field, "events[0].metadata");
    assert_nothing_written(&store, "j-1");

    // Binary data is never parsed; empty data (JSON `null`) and empty metadata (none) are fine.
    store
        .append(
            "j-1",
            ExpectedRevision::Any,
            vec![
                NewEvent::binary("T", nested(100_000)),
                NewEvent::binary("T", vec![0xff, b'[', b'"']),
                NewEvent::json("T", Vec::new()),
                NewEvent::json("T", " {\"a\": [1, -2.5e3, true, null]}\n").with_metadata("{}"),
            ],
        )
        .unwrap();
}

#[test]
fn the_async_append_checks_too() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let (field, reason) = invalid(block_on(store.append_async(
        "a-1",
        ExpectedRevision::Any,
        vec![NewEvent::json("T", r#"["\udbff"]"#)],
    )));
    assert_eq!(field, "events[0].data");
    assert_eq!(reason, r"lone surrogate \udbff at byte 2");
    assert_nothing_written(&store, "a-1");
    block_on(store.append_async(
        "a-1",
        ExpectedRevision::Any,
        vec![NewEvent::json("T", r#"["\udbff\udfff"]"#)],
    ))
    .unwrap();
}

#[test]
fn the_depth_limit_is_part_of_the_limits() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        fsync: FsyncPolicy::Never,
        limits: Limits {
            max_json_depth: 3,
            ..Limits::default()
        },
        ..Options::default()
    };
    assert_eq!(Limits::default().max_json_depth, MAX_JSON_DEPTH);
    let store = Store::open(dir.path(), options).unwrap();
    let (field, reason) = invalid(store.append(
        "l-1",
        ExpectedRevision::Any,
        vec![NewEvent::json("T", r#"{"a": [[[1]]]}"#)],
    ));
    assert_eq!(field, "events[0].data");
    assert_eq!(reason, "JSON nested deeper than 3 levels (at byte 8)");
    store
        .append(
            "l-1",
            ExpectedRevision::Any,
            vec![NewEvent::json("T", r#"{"a": [[1]]}"#)],
        )
        .unwrap();
}
