//! Review of contained damage: cases the damage work misses, each a rule of the contract
//! ("Damage, full disks and failing disks"): every intact event stays readable with its
//! position and revision, a read that needs a damaged event answers `Corruption` (never a
//! skip, never "not found"), and nothing acknowledged is cut as a torn tail.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use strata_store::repair::repair_dir;
use strata_store::{Direction, Error, ExpectedRevision, NewEvent, ReadFrom, Store};

/// Appends one tiny event (a frame of about 70 bytes) to `stream`.
fn append_tiny(store: &Store, stream: &str) -> u64 {
    store
        .append(
            stream,
            ExpectedRevision::Any,
            vec![NewEvent::json("T", "{}")],
        )
        .expect("append")
        .first_position
}

/// The one segment of `dir` and the frame holding `position`.
fn frame_of(dir: &Path, position: u64) -> (PathBuf, FrameInfo) {
    let seg = segments(dir).remove(0);
    let f = frames(&std::fs::read(&seg).expect("read"))
        .into_iter()
        .find(|f| f.position == position)
        .expect("frame");
    (seg, f)
}

fn is_corruption<T: std::fmt::Debug>(r: &Result<T, Error>) -> bool {
    matches!(r, Err(Error::Corruption { .. }))
}

/// A stream's last event lost in damage in the open segment (what it was is unknown): a read
/// of that revision must answer `Corruption`, not "no such event". (A page of the stream still
/// ends at its last intact event: see the review report.)
#[test]
fn lost_last_revision_of_a_stream_is_corruption_not_absent() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let store = Store::open(dir, opts(1 << 20)).expect("open");
    append_tiny(&store, "s-1"); // position 0, revision 0
    let lost = append_tiny(&store, "s-1"); // position 1, revision 1: lost below
    append_tiny(&store, "t-1"); // position 2: keeps the damage from being a torn tail
    store.close().expect("close");
    drop(store);
    let (seg, f) = frame_of(dir, lost);
    flip_byte(&seg, f.data_offset);

    let store = Store::open(dir, opts(1 << 20)).expect("open");
    assert!(!store.damage().is_empty(), "the damage is found");
    let r = store.read_event("s-1", 1);
    assert!(
        is_corruption(&r),
        "revision 1 of s-1 lies in the damaged bytes: {r:?}"
    );
}

/// A version-2 segment (rewritten by a repair) has a gap where the repair removed a damaged
/// event. Later damage to the frame just before that gap must not hide the intact frames after
/// the gap, nor may the open segment be cut there as a torn tail: the scan's resynchronisation
/// must allow for positions that skip without bytes.
#[test]
fn damage_before_a_gap_of_a_repaired_segment_keeps_the_frames_after_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let store = Store::open(dir, opts(1 << 20)).expect("open");
    for _ in 0..12 {
        append_tiny(&store, "s-1");
    }
    store.close().expect("close");
    drop(store);
    // Damage position 5, repair: the open segment is rewritten with a gap at 5.
    let (seg, f) = frame_of(dir, 5);
    flip_byte(&seg, f.data_offset);
    repair_dir(dir, |_, _| {}).expect("repair");
    let (seg, f) = frame_of(dir, 4);
    assert!(
        frames(&std::fs::read(&seg).expect("read"))
            .iter()
            .all(|f| f.position != 5),
        "the repair removed position 5"
    );
    let len = file_len(&seg);
    // Now the frame just before the gap is damaged too.
    flip_byte(&seg, f.data_offset);

    let store = Store::open(dir, opts(1 << 20)).expect("open");
    assert_eq!(
        file_len(&seg),
        len,
        "acknowledged frames cut as a torn tail"
    );
    assert_eq!(store.next_position(), 12, "positions 6..12 are committed");
    let r4 = store.read_event("s-1", 4);
    assert!(is_corruption(&r4), "position 4 is damaged: {r4:?}");
    for p in (0..4).chain(6..12) {
        // One stream: revision and position agree.
        let e = store.read_event("s-1", p);
        assert!(
            matches!(&e, Ok(Some(e)) if e.position == p),
            "intact position {p}: {e:?}"
        );
    }
    store.close().expect("close");
    drop(store);
    assert_eq!(
        file_len(&seg),
        len,
        "acknowledged frames cut as a torn tail"
    );
}

/// Damage to the last event of a stream in a sealed segment whose index is intact (so its
/// revision is known): the stream's other events do not need the damaged one, yet a read of
/// them must go through the head lookup, which reads the damaged event to check its stream.
/// Every intact event must stay readable; only the damaged revision answers `Corruption`.
#[test]
fn damaged_head_event_in_a_sealed_segment_leaves_the_rest_of_the_stream_readable() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let store = Store::open(dir, opts(4096)).expect("open");
    for _ in 0..5 {
        append_tiny(&store, "s-1"); // positions 0..5
    }
    for _ in 0..100 {
        append_tiny(&store, "busy-1"); // seals the first segment
    }
    store.close().expect("close");
    drop(store);
    assert!(segments(dir).len() > 1, "the first segment is sealed");
    let (seg, f) = frame_of(dir, 4);
    flip_byte(&seg, f.data_offset);

    let store = Store::open(dir, opts(4096)).expect("open");
    let r = store.read_event("s-1", 4);
    assert!(is_corruption(&r), "revision 4 is damaged: {r:?}");
    for rev in 0..4 {
        let e = store.read_event("s-1", rev);
        assert!(
            matches!(&e, Ok(Some(e)) if e.revision == rev && e.position == rev),
            "intact revision {rev} of s-1: {e:?}"
        );
    }
    let page = store.read_stream("s-1", ReadFrom::Start, Direction::Forward, 4);
    assert!(
        matches!(&page, Ok(p) if p.events.len() == 4),
        "the first four revisions: {page:?}"
    );
}

/// A sealed segment whose index body and one event are both damaged: the store opens writable
/// (index bodies are checked on first use), and the first append to the damaged event's stream
/// looks up its head through that index, which is then rebuilt over the damage and makes the
/// store read-only (the lost event's stream is unknown). The append must not go on with the
/// head the rebuilt index gives: revision 4 of `s-1` is the lost event's, never reused.
#[test]
fn an_append_whose_head_lookup_finds_unindexed_damage_writes_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let store = Store::open(dir, opts(4096)).expect("open");
    for _ in 0..5 {
        append_tiny(&store, "s-1"); // positions and revisions 0..5
    }
    for _ in 0..100 {
        append_tiny(&store, "busy-1"); // seals the first segment
    }
    store.close().expect("close");
    drop(store);
    let (seg, f) = frame_of(dir, 4);
    flip_byte(&seg, f.data_offset);
    // One byte of the index's frame offsets (section 0; its start is the u64 at 48).
    let idx = index_files(dir).remove(0);
    let bytes = std::fs::read(&idx).expect("read");
    let offsets = u64::from_le_bytes(bytes[48..56].try_into().expect("8 bytes"));
    flip_byte(&idx, offsets + 16);

    let store = Store::open(dir, opts(4096)).expect("open");
    let next = store.next_position();
    let r = store.append(
        "s-1",
        ExpectedRevision::Any,
        vec![NewEvent::json("T", "{}")],
    );
    assert!(r.is_err(), "revision 4 of s-1 reused: {r:?}");
    assert_eq!(store.next_position(), next, "nothing may be appended");
}
