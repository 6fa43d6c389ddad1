//! Smoke tests of the embedded store: a round trip through appends, reads, deletes and
//! subscriptions, bounded replays, `from` as a lower bound on forward reads, and the input limits.

mod common;

use common::{all_page, no_fsync};
use strata_store::*;

#[test]
fn smoke() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        segment_size: 8192,
        ..Options::default()
    };
    let store = Store::open(dir.path(), opts.clone()).unwrap();
    for i in 0..200u64 {
        let r = store
            .append(
                &format!("order-{}", i % 7),
                ExpectedRevision::Any,
                vec![NewEvent::json("Placed", format!("{{\"i\":{i}}}"))],
            )
            .unwrap();
        assert_eq!(r.first_position, i);
    }
    let s = store
        .read_stream("order-3", ReadFrom::Start, Direction::Forward, 1000)
        .unwrap();
    assert_eq!(s.events.len(), 29);
    assert!(store.info().segment_count > 2, "{:?}", store.info());
    let all = all_page(&store, ReadFrom::Start, Direction::Forward, 1000).unwrap();
    assert_eq!(all.events.len(), 200);
    let f = AllFilter {
        category: Some("order".into()),
        types: vec!["Placed".into()],
        ..Default::default()
    };
    let all = store
        .read_all(ReadFrom::End, Direction::Backward, 50, &f)
        .unwrap();
    assert_eq!(all.events.len(), 50);
    assert_eq!(all.events[0].position, 199);
    let id = uuid::Uuid::new_v4();
    let append_once = || {
        store
            .append(
                "x-1",
                ExpectedRevision::NoStream,
                vec![NewEvent::json("T", "1").with_id(id)],
            )
            .unwrap()
    };
    let a = append_once();
    let b = append_once();
    assert!(b.idempotent_replay);
    assert_eq!(a.first_position, b.first_position);
    store
        .delete_stream("order-1", ExpectedRevision::Any, false)
        .unwrap();
    assert!(matches!(
        store.read_stream("order-1", ReadFrom::Start, Direction::Forward, 10),
        Err(Error::StreamDeleted { .. })
    ));
    let (list, next) = store.list_streams("order-", None, 3).unwrap();
    assert_eq!(list.len(), 3);
    assert_eq!(next.as_deref(), Some("order-3"));
    store.close().unwrap();
    drop(store);
    let store = Store::open(dir.path(), opts).unwrap();
    let s = store
        .read_stream("order-3", ReadFrom::Start, Direction::Forward, 1000)
        .unwrap();
    assert_eq!(s.events.len(), 29);
    assert!(matches!(
        store.read_stream("order-1", ReadFrom::Start, Direction::Forward, 10),
        Err(Error::StreamDeleted { .. })
    ));
    let b = store
        .append(
            "x-1",
            ExpectedRevision::Exact(0),
            vec![NewEvent::json("T", "2")],
        )
        .unwrap();
    assert_eq!(b.first_revision, 1);
    let mut sub = store.subscribe_all(0, AllFilter::default());
    let mut n = 0;
    loop {
        let b = sub.poll(64).unwrap();
        if b.is_empty() {
            break;
        }
        n += b.len();
    }
    assert_eq!(n, 202);
}

#[test]
fn replay_range_is_bounded_and_stoppable() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), no_fsync(common::opts(4096))).unwrap();
    for i in 0..100u64 {
        store
            .append(
                "r-1",
                if i == 0 {
                    ExpectedRevision::NoStream
                } else {
                    ExpectedRevision::Exact(i - 1)
                },
                vec![NewEvent::json("T", "{}")],
            )
            .unwrap();
    }
    let mut seen = Vec::new();
    let next = store
        .replay_range(5, 10, |v| {
            seen.push(v.position);
            std::ops::ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(seen, (5..10).collect::<Vec<_>>());
    assert_eq!(next, 10);
    let mut n = 0;
    let next = store
        .replay_range(40, u64::MAX, |_| {
            n += 1;
            if n == 3 {
                std::ops::ControlFlow::Break(())
            } else {
                std::ops::ControlFlow::Continue(())
            }
        })
        .unwrap();
    assert_eq!((n, next), (3, 43));
    let mut all = 0;
    assert_eq!(store.replay(0, |_| all += 1).unwrap(), 100);
    assert_eq!(all, 100);
}

/// `from` is a lower bound on every forward path: a page or a subscription that starts beyond
/// the head never goes back to the head (with or without an indexed filter).
#[test]
fn reading_all_from_beyond_the_head_never_goes_backwards() {
    let by_type = AllFilter {
        types: vec!["T".into()],
        ..AllFilter::default()
    };
    for filter in [AllFilter::default(), by_type] {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), no_fsync(Options::default())).unwrap();
        store
            .append("a-1", ExpectedRevision::Any, vec![NewEvent::json("T", "0")])
            .unwrap();
        let page = store
            .read_all(ReadFrom::At(5), Direction::Forward, 10, &filter)
            .unwrap();
        assert!(page.events.is_empty());
        assert_eq!(page.next, Some(5), "{filter:?}");
        assert!(page.end);

        let mut sub = store.subscribe_all(5, filter.clone());
        assert!(sub.poll(10).unwrap().is_empty());
        assert_eq!(sub.cursor(), 5);
        let mut seen = Vec::new();
        while store.next_position() < 7 {
            store
                .append("a-1", ExpectedRevision::Any, vec![NewEvent::json("T", "1")])
                .unwrap();
            seen.extend(sub.poll(10).unwrap().iter().map(|e| e.position));
        }
        // Only positions at or after 5 are delivered, in order.
        assert_eq!(seen, [5, 6], "{filter:?}");
    }
}

/// Over a configured limit is `LimitExceeded` (naming the field, the limit and the size sent);
/// a type too long is malformed input. Neither writes anything.
#[test]
fn limits_are_limit_exceeded_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        limits: Limits {
            max_event_size: 64,
            max_events_per_append: 2,
            ..Limits::default()
        },
        ..Options::default()
    };
    let store = Store::open(dir.path(), opts).unwrap();
    let small = || NewEvent::json("T", "{}");
    let big = NewEvent::binary("T", vec![7u8; 60]).with_metadata("[1,2,3]");
    let limit = |r: Result<AppendResult>| match r {
        Err(Error::LimitExceeded {
            field,
            limit,
            actual,
            ..
        }) => (field, limit, actual),
        other => panic!("expected LimitExceeded, got {other:?}"),
    };
    let r = store.append("s", ExpectedRevision::Any, vec![small(), small(), small()]);
    assert_eq!(limit(r), ("events".to_owned(), 2, 3));
    let r = store.append("s", ExpectedRevision::Any, vec![small(), big]);
    let e = r.unwrap_err();
    assert_eq!(
        e.to_string(),
        "events[1] has 67 bytes of data and metadata, over the limit of 64"
    );
    assert_eq!(limit(Err(e)), ("events[1]".to_owned(), 64, 67));
    let long_type = NewEvent::json("t".repeat(256), "{}");
    match store.append("s", ExpectedRevision::Any, vec![long_type]) {
        Err(Error::InvalidInput { field, .. }) => assert_eq!(field, "events[0].type"),
        other => panic!("expected InvalidInput, got {other:?}"),
    }
    assert_eq!(store.info().next_position, 0);
    // At the limits it is fine.
    let at = NewEvent::binary("T", vec![7u8; 57]).with_metadata("[1,2,3]");
    store
        .append("s", ExpectedRevision::NoStream, vec![small(), at])
        .unwrap();
    assert_eq!(store.info().next_position, 2);
}

/// The open segment is read through a map that reaches as far as the segment size: events
/// appended after it was made, events past its end (an append larger than a segment) and events
/// recovered at open all read back, before and after a reopen and a seal.
#[test]
fn the_open_segment_reads_through_its_map_and_past_it() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        segment_size: 16 * 1024,
        ..no_fsync(Options::default())
    };
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(40_000));
    let data = |i: u64| {
        if i % 5 == 4 {
            big.clone()
        } else {
            format!("{{\"i\":{i}}}")
        }
    };
    let check = |store: &Store, upto: u64| {
        let s = store
            .read_stream("m-1", ReadFrom::Start, Direction::Forward, 1000)
            .unwrap();
        assert_eq!(s.events.len() as u64, upto);
        for (i, e) in s.events.iter().enumerate() {
            assert_eq!(e.revision, i as u64);
            assert_eq!(e.data, data(i as u64).into_bytes(), "revision {i}");
        }
        for i in 0..upto {
            let e = store.read_event("m-1", i).unwrap().expect("event");
            assert_eq!(e.data, data(i).into_bytes());
        }
    };
    {
        let store = Store::open(dir.path(), opts.clone()).unwrap();
        for i in 0..12u64 {
            store
                .append(
                    "m-1",
                    if i == 0 {
                        ExpectedRevision::NoStream
                    } else {
                        ExpectedRevision::Exact(i - 1)
                    },
                    vec![NewEvent::json("T", data(i))],
                )
                .unwrap();
            check(&store, i + 1);
        }
        store.close().unwrap();
    }
    let store = Store::open(dir.path(), opts).unwrap();
    check(&store, 12);
    for i in 12..20u64 {
        store
            .append(
                "m-1",
                ExpectedRevision::Any,
                vec![NewEvent::json("T", data(i))],
            )
            .unwrap();
    }
    check(&store, 20);
}
