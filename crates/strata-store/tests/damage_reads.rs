//! Reads around one damaged event of the open segment, through the public API: a page whose
//! look-ahead event is damaged is still answered (not the end), a subscription hands out every
//! event before the damaged one and then answers the damage (never a skip), a new subscription
//! after it goes on, and a stream whose first event is damaged stays in the stream listing.

use strata_store::{
    AllFilter, Direction, Error, ExpectedRevision, FsyncPolicy, NewEvent, Options, ReadFrom, Store,
};

fn options() -> Options {
    Options {
        fsync: FsyncPolicy::Never,
        ..Options::default()
    }
}

/// Ten events, one per append: position `i` is revision `i / 2` of stream `s{i % 2}`, with data
/// `{"n":i}`; then the data of position `damaged` is flipped and the store opened again.
fn damaged_store(damaged: u64) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), options()).unwrap();
    for i in 0..10u64 {
        let event = NewEvent::json("T", format!("{{\"n\":{i}}}"));
        store
            .append(&format!("s{}", i % 2), ExpectedRevision::Any, vec![event])
            .unwrap();
    }
    store.close().unwrap();
    drop(store);
    let seg = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "seg"))
        .unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let needle = format!("{{\"n\":{damaged}}}").into_bytes();
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle.as_slice())
        .unwrap();
    bytes[at + needle.len() - 2] ^= 0x01;
    std::fs::write(&seg, bytes).unwrap();
    let store = Store::open(dir.path(), options()).unwrap();
    (dir, store)
}

fn positions(events: &[strata_store::RecordedEvent]) -> Vec<u64> {
    events.iter().map(|e| e.position).collect()
}

#[test]
fn a_page_ending_right_before_the_damage_is_answered_and_not_the_end() {
    let (_dir, store) = damaged_store(5);
    let all = AllFilter::default();
    let page = store
        .read_all(ReadFrom::Start, Direction::Forward, 5, &all)
        .unwrap();
    assert_eq!(positions(&page.events), [0, 1, 2, 3, 4]);
    assert_eq!((page.next, page.end), (Some(5), false));
    let err = store
        .read_all(ReadFrom::At(5), Direction::Forward, 5, &all)
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Corruption {
                position: Some(5),
                ..
            }
        ),
        "{err}"
    );
    let back = store
        .read_all(ReadFrom::At(9), Direction::Backward, 4, &all)
        .unwrap();
    assert_eq!(positions(&back.events), [9, 8, 7, 6]);
    assert_eq!((back.next, back.end), (Some(5), false));
}

#[test]
fn a_subscription_hands_out_the_events_before_the_damage_then_answers_it() {
    let (_dir, store) = damaged_store(5);
    let mut sub = store.subscribe_all(0, AllFilter::default());
    assert_eq!(positions(&sub.poll(100).unwrap()), [0, 1, 2, 3, 4]);
    for _ in 0..2 {
        let err = sub.poll(100).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Corruption {
                    position: Some(5),
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(sub.cursor(), 5, "the cursor stays on the damaged event");
    }
    let mut after = store.subscribe_all(6, AllFilter::default());
    assert_eq!(positions(&after.poll(100).unwrap()), [6, 7, 8, 9]);
}

#[test]
fn a_stream_whose_first_event_is_damaged_stays_listed() {
    let (_dir, store) = damaged_store(0);
    let (streams, _) = store.list_streams("", None, 10).unwrap();
    let names: Vec<(&str, u64)> = streams
        .iter()
        .map(|s| (s.name.as_str(), s.last_revision))
        .collect();
    assert_eq!(names, [("s0", 4), ("s1", 4)]);
}
