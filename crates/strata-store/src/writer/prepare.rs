//! Turning one request into frames, checked against the stream heads as its group sees them: the
//! group's [`Overlay`] (what its earlier requests changed) over the writer's cached heads over
//! the log. Hard deletion first, then idempotent replay, then the expected revision; nothing of
//! a refused request stays in the group.

use std::collections::HashMap;
use std::sync::Arc;

use foldhash::fast::RandomState;
use uuid::Uuid;

use super::validate::{validate_events, validate_stream_name};
use super::Writer;
use crate::correlation::LinkKeys;
use crate::error::{Error, Result};
use crate::event::{
    now_micros, AppendResult, ContentType, CurrentRevision, DeleteResult, Deletion,
    ExpectedRevision, NewEvent, StreamHead, StreamMetadata,
};
use crate::frame::{encode_frame, FrameFields};
use crate::hash::{category_of, hash_str};
use crate::log::{meta_stream_name, MetaRecord, META_EVENT_TYPE, META_STREAM_PREFIX};

/// The writer's view of a stream: its last event and its metadata state.
#[derive(Clone, Debug)]
pub(super) struct Head {
    /// `(revision, position)` of the last event ever written, `None` if never written.
    pub last: Option<(u64, u64)>,
    pub meta: MetaRecord,
}

impl Head {
    fn view(&self, name: &str) -> StreamHead {
        StreamHead {
            name: name.to_owned(),
            last_revision: self.last.map(|(r, _)| r),
            last_position: self.last.map(|(_, p)| p),
            deletion: self.meta.deletion,
            metadata: self.meta.metadata.clone(),
        }
    }
}

/// A memtable entry of a pending frame, its offset relative to the group buffer.
pub(super) struct PendingEntry {
    pub stream: Arc<str>,
    pub stream_hash: u64,
    pub category_hash: u64,
    pub type_hash: u64,
    pub id: u128,
    pub revision: u64,
    pub position: u64,
    pub rel_offset: u64,
    /// The event's correlation-index keys.
    pub links: LinkKeys,
}

/// State changed by the requests of a group that is not durable yet. Later requests of the group
/// see it before anything committed.
#[derive(Default)]
pub(super) struct Overlay {
    /// Heads changed by this group.
    pub heads: HashMap<String, Head, RandomState>,
    /// Client-chosen ids appended by this group: (stream, id) → (revision, position).
    ids: HashMap<(String, Uuid), (u64, u64), RandomState>,
    /// Next position to assign.
    pub next_position: u64,
}

impl Overlay {
    /// The head of `stream` if a request of this group changed it.
    fn head(&self, stream: &str) -> Option<&Head> {
        self.heads.get(stream)
    }

    /// `(revision, position)` of the event `id` if a request of this group appended it to `stream`.
    fn id(&self, stream: &str, id: Uuid) -> Option<(u64, u64)> {
        self.ids.get(&(stream.to_owned(), id)).copied()
    }

    /// Records what an admitted request changed (later entries win).
    pub(super) fn absorb(
        &mut self,
        heads: Vec<(String, Head)>,
        ids: Vec<((String, Uuid), (u64, u64))>,
    ) {
        self.heads.extend(heads);
        self.ids.extend(ids);
    }
}

/// What one request adds to a group, before it is committed to it.
pub(super) struct Prepared<T> {
    pub entries: Vec<PendingEntry>,
    pub heads: Vec<(String, Head)>,
    pub ids: Vec<((String, Uuid), (u64, u64))>,
    pub result: T,
}

impl<T> Prepared<T> {
    fn nothing(result: T) -> Self {
        Prepared {
            entries: Vec::new(),
            heads: Vec::new(),
            ids: Vec::new(),
            result,
        }
    }
}

impl Writer {
    /// The head of `stream` as this group sees it.
    fn head(&mut self, overlay: &Overlay, stream: &str) -> Result<Head> {
        let epoch = self
            .shared
            .heads_epoch
            .load(std::sync::atomic::Ordering::Acquire);
        if epoch != self.heads_epoch {
            self.heads.clear();
            self.heads_epoch = epoch;
        }
        if let Some(h) = overlay.head(stream).or_else(|| self.heads.get(stream)) {
            return Ok(h.clone());
        }
        let last = self.shared.stream_last(&self.state, stream, u64::MAX)?;
        let meta = if stream.starts_with(META_STREAM_PREFIX) {
            MetaRecord::default()
        } else {
            self.shared.meta_record(&self.state, stream, u64::MAX)?
        };
        let head = Head { last, meta };
        if self.heads.len() >= self.shared.options.head_cache_capacity {
            self.heads.clear();
        }
        self.heads.insert(stream.to_owned(), head.clone());
        Ok(head)
    }

    fn find_id(&self, overlay: &Overlay, stream: &str, id: Uuid) -> Result<Option<(u64, u64)>> {
        if let Some(found) = overlay.id(stream, id) {
            return Ok(Some(found));
        }
        self.shared.find_id(&self.state, stream, id)
    }

    pub(super) fn prepare_append(
        &mut self,
        overlay: &Overlay,
        stream: &str,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
        buf: &mut Vec<u8>,
    ) -> Result<Prepared<AppendResult>> {
        let limits = &self.shared.options.limits;
        validate_stream_name(stream, limits)?;
        validate_events(&events, limits)?;
        let head = self.head(overlay, stream)?;
        let view = head.view(stream);
        let check = check_append(&view, expected, &events, |id| {
            self.find_id(overlay, stream, id)
        })?;
        if let Some(replay) = check {
            return Ok(Prepared::nothing(replay));
        }
        let first_revision = view.last_revision.map_or(0, |r| r + 1);
        let first_position = overlay.next_position;
        let timestamp = now_micros();
        let n = events.len() as u64;
        let mut entries = Vec::with_capacity(events.len());
        let mut ids = Vec::with_capacity(events.len());
        let stream_arc: Arc<str> = Arc::from(stream);
        let stream_hash = hash_str(stream);
        let category_hash = hash_str(category_of(stream));
        let mut last_type: (&str, u64) = ("", hash_str(""));
        for (i, e) in events.iter().enumerate() {
            let id = match e.id {
                Some(id) => {
                    ids.push((
                        (stream.to_owned(), id),
                        (first_revision + i as u64, first_position + i as u64),
                    ));
                    id
                }
                None => self.ids.next_id(),
            };
            if last_type.0 != e.event_type {
                last_type = (&e.event_type, hash_str(&e.event_type));
            }
            let revision = first_revision + i as u64;
            let position = first_position + i as u64;
            entries.push(PendingEntry {
                stream: stream_arc.clone(),
                stream_hash,
                category_hash,
                type_hash: last_type.1,
                id: id.as_u128(),
                revision,
                position,
                rel_offset: buf.len() as u64,
                links: LinkKeys::of(id, &e.metadata),
            });
            encode_frame(
                buf,
                &FrameFields {
                    position,
                    revision,
                    timestamp_micros: timestamp,
                    id,
                    commit_end: i as u64 == n - 1,
                    content_type: e.content_type,
                    stream,
                    event_type: &e.event_type,
                    data: &e.data,
                    metadata: &e.metadata,
                },
            );
        }
        let last_revision = first_revision + n - 1;
        let last_position = first_position + n - 1;
        Ok(Prepared {
            entries,
            heads: vec![(
                stream.to_owned(),
                Head {
                    last: Some((last_revision, last_position)),
                    meta: head.meta,
                },
            )],
            ids,
            result: AppendResult {
                first_revision,
                last_revision,
                first_position,
                last_position,
                idempotent_replay: false,
            },
        })
    }

    pub(super) fn prepare_delete(
        &mut self,
        overlay: &Overlay,
        stream: &str,
        expected: ExpectedRevision,
        hard: bool,
        buf: &mut Vec<u8>,
    ) -> Result<Prepared<DeleteResult>> {
        validate_stream_name(stream, &self.shared.options.limits)?;
        let head = self.head(overlay, stream)?;
        let deletion = check_delete(&head.view(stream), expected, hard)?;
        let meta = MetaRecord {
            metadata: head.meta.metadata.clone(),
            deletion: Some(deletion),
        };
        self.prepare_meta(overlay, stream, head, meta, buf)
    }

    pub(super) fn prepare_set_metadata(
        &mut self,
        overlay: &Overlay,
        stream: &str,
        metadata: StreamMetadata,
        buf: &mut Vec<u8>,
    ) -> Result<Prepared<DeleteResult>> {
        validate_stream_name(stream, &self.shared.options.limits)?;
        let head = self.head(overlay, stream)?;
        if head.meta.deletion == Some(Deletion::Hard) {
            return Err(Error::StreamDeleted {
                stream: stream.to_owned(),
            });
        }
        let meta = MetaRecord {
            metadata,
            deletion: head.meta.deletion,
        };
        self.prepare_meta(overlay, stream, head, meta, buf)
    }

    /// Appends a `$metadata` record to `$$stream` carrying the full new metadata state.
    fn prepare_meta(
        &mut self,
        overlay: &Overlay,
        stream: &str,
        head: Head,
        meta: MetaRecord,
        buf: &mut Vec<u8>,
    ) -> Result<Prepared<DeleteResult>> {
        let meta_stream = meta_stream_name(stream);
        let meta_head = self.head(overlay, &meta_stream)?;
        let data =
            serde_json::to_vec(&meta).map_err(|e| Error::invalid("metadata", e.to_string()))?;
        if data.len() > self.shared.options.limits.max_event_size {
            return Err(Error::invalid(
                "metadata",
                "larger than the event size limit",
            ));
        }
        let revision = meta_head.last.map_or(0, |(r, _)| r + 1);
        let position = overlay.next_position;
        let id = self.ids.next_id();
        let entry = PendingEntry {
            stream: Arc::from(meta_stream.as_str()),
            stream_hash: hash_str(&meta_stream),
            category_hash: hash_str(category_of(&meta_stream)),
            type_hash: hash_str(META_EVENT_TYPE),
            id: id.as_u128(),
            revision,
            position,
            rel_offset: buf.len() as u64,
            links: LinkKeys::NONE,
        };
        encode_frame(
            buf,
            &FrameFields {
                position,
                revision,
                timestamp_micros: now_micros(),
                id,
                commit_end: true,
                content_type: ContentType::Json,
                stream: &meta_stream,
                event_type: META_EVENT_TYPE,
                data: &data,
                metadata: &[],
            },
        );
        Ok(Prepared {
            entries: vec![entry],
            heads: vec![
                (
                    meta_stream.clone(),
                    Head {
                        last: Some((revision, position)),
                        meta: MetaRecord::default(),
                    },
                ),
                (
                    stream.to_owned(),
                    Head {
                        last: head.last,
                        meta,
                    },
                ),
            ],
            ids: Vec::new(),
            result: DeleteResult { position },
        })
    }
}

/// The checks of an append to the stream whose head is `view`, in order: a hard-deleted stream
/// refuses it; if its ids were already appended as this run it is answered with the original
/// result (`Some`), if only some were it is refused; otherwise `expected` must hold and it is
/// written (`None`). `find` looks an event id up in the stream as the group sees it.
fn check_append(
    view: &StreamHead,
    expected: ExpectedRevision,
    events: &[NewEvent],
    find: impl FnMut(Uuid) -> Result<Option<(u64, u64)>>,
) -> Result<Option<AppendResult>> {
    if view.deletion == Some(Deletion::Hard) {
        return Err(Error::StreamDeleted {
            stream: view.name.clone(),
        });
    }
    if let Some(replay) = idempotent_replay(view, expected, events, find)? {
        return Ok(Some(replay));
    }
    check_expected(expected, view.current())?;
    Ok(None)
}

/// The original result if every id of `events` was already appended to the stream of `head` as
/// one contiguous run where `expected` says it should start; `DuplicateEventId` if only some
/// were, or not as that run; `None` if none was.
fn idempotent_replay(
    head: &StreamHead,
    expected: ExpectedRevision,
    events: &[NewEvent],
    mut find: impl FnMut(Uuid) -> Result<Option<(u64, u64)>>,
) -> Result<Option<AppendResult>> {
    let mut found = Vec::with_capacity(events.len());
    let mut first_dup = None;
    let mut any_new = false;
    for e in events {
        let Some(id) = e.id else {
            any_new = true;
            continue;
        };
        match find(id)? {
            Some(at) => {
                first_dup.get_or_insert(id);
                found.push(at);
            }
            None => any_new = true,
        }
    }
    let Some(dup) = first_dup else {
        return Ok(None);
    };
    let duplicate = || Error::DuplicateEventId {
        stream: head.name.clone(),
        id: dup,
    };
    if any_new {
        return Err(duplicate());
    }
    let (r0, p0) = found[0];
    let contiguous = found
        .iter()
        .enumerate()
        .all(|(i, &(r, _))| r == r0 + i as u64);
    let starts_right = match expected {
        ExpectedRevision::Any | ExpectedRevision::StreamExists => true,
        ExpectedRevision::Exact(n) => r0 == n.wrapping_add(1),
        ExpectedRevision::NoStream => {
            r0 == 0 || matches!(head.deletion, Some(Deletion::Soft { at }) if r0 == at + 1)
        }
    };
    if !contiguous || !starts_right {
        return Err(duplicate());
    }
    let (rl, pl) = found[found.len() - 1];
    Ok(Some(AppendResult {
        first_revision: r0,
        last_revision: rl,
        first_position: p0,
        last_position: pl,
        idempotent_replay: true,
    }))
}

/// The deletion a delete of the stream whose head is `view` records: a never-written stream is
/// not found, a hard-deleted one (or a soft-deleted one, deleted softly again) is deleted, and
/// `expected` must hold.
fn check_delete(view: &StreamHead, expected: ExpectedRevision, hard: bool) -> Result<Deletion> {
    let Some(last) = view.last_revision else {
        return Err(Error::StreamNotFound {
            stream: view.name.clone(),
        });
    };
    if view.deletion == Some(Deletion::Hard) || (view.is_deleted() && !hard) {
        return Err(Error::StreamDeleted {
            stream: view.name.clone(),
        });
    }
    check_expected(expected, view.current())?;
    Ok(if hard {
        Deletion::Hard
    } else {
        Deletion::Soft { at: last }
    })
}

fn check_expected(expected: ExpectedRevision, actual: CurrentRevision) -> Result<()> {
    let ok = match (expected, actual) {
        (ExpectedRevision::Any, _) => true,
        (ExpectedRevision::NoStream, CurrentRevision::NoStream) => true,
        (ExpectedRevision::StreamExists, CurrentRevision::Revision(_)) => true,
        (ExpectedRevision::Exact(n), CurrentRevision::Revision(r)) => n == r,
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(Error::WrongExpectedRevision { expected, actual })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The head of stream `s` with last revision `last` (at position `last + 100`).
    fn view(last: Option<u64>, deletion: Option<Deletion>) -> StreamHead {
        StreamHead {
            name: "s".into(),
            last_revision: last,
            last_position: last.map(|r| r + 100),
            deletion,
            metadata: StreamMetadata::default(),
        }
    }

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn events(ids: &[Option<u128>]) -> Vec<NewEvent> {
        ids.iter()
            .map(|i| {
                let e = NewEvent::json("T", "{}");
                match i {
                    Some(n) => e.with_id(id(*n)),
                    None => e,
                }
            })
            .collect()
    }

    /// An id lookup over `known`: (id, revision, position).
    fn lookup(known: &[(u128, u64, u64)]) -> impl FnMut(Uuid) -> Result<Option<(u64, u64)>> + '_ {
        move |wanted| {
            Ok(known
                .iter()
                .find(|(n, _, _)| id(*n) == wanted)
                .map(|&(_, r, p)| (r, p)))
        }
    }

    fn wrong(r: Result<impl std::fmt::Debug>) -> (ExpectedRevision, CurrentRevision) {
        match r {
            Err(Error::WrongExpectedRevision { expected, actual }) => (expected, actual),
            other => panic!("expected WrongExpectedRevision, got {other:?}"),
        }
    }

    fn duplicate(r: Result<impl std::fmt::Debug>) -> Uuid {
        match r {
            Err(Error::DuplicateEventId { stream, id }) => {
                assert_eq!(stream, "s");
                id
            }
            other => panic!("expected DuplicateEventId, got {other:?}"),
        }
    }

    #[test]
    fn expected_revision_against_the_current_revision() {
        use CurrentRevision as C;
        use ExpectedRevision as E;
        let cases = [
            (E::Any, C::NoStream, true),
            (E::Any, C::Revision(4), true),
            (E::NoStream, C::NoStream, true),
            (E::NoStream, C::Revision(0), false),
            (E::StreamExists, C::NoStream, false),
            (E::StreamExists, C::Revision(0), true),
            (E::Exact(4), C::Revision(4), true),
            (E::Exact(3), C::Revision(4), false),
            (E::Exact(5), C::Revision(4), false),
            (E::Exact(0), C::NoStream, false),
        ];
        for (expected, actual, ok) in cases {
            let r = check_expected(expected, actual);
            if ok {
                assert!(r.is_ok(), "{expected} vs {actual}: {r:?}");
            } else {
                assert_eq!(wrong(r), (expected, actual), "{expected} vs {actual}");
            }
        }
    }

    #[test]
    fn appends_check_the_expectation_against_the_head() {
        use ExpectedRevision as E;
        let evs = events(&[None]);
        let fresh = view(None, None);
        let live = view(Some(4), None);
        // Soft-deleted at its last revision: reads as no stream.
        let soft = view(Some(4), Some(Deletion::Soft { at: 4 }));
        // Soft-deleted at 2, appended to since: live again at 4.
        let recreated = view(Some(4), Some(Deletion::Soft { at: 2 }));
        let ok = |v: &StreamHead, e| check_append(v, e, &evs, lookup(&[]));
        for v in [&fresh, &soft] {
            assert_eq!(ok(v, E::Any).unwrap(), None);
            assert_eq!(ok(v, E::NoStream).unwrap(), None);
            assert_eq!(wrong(ok(v, E::StreamExists)).1, CurrentRevision::NoStream);
            assert_eq!(wrong(ok(v, E::Exact(4))).1, CurrentRevision::NoStream);
        }
        for v in [&live, &recreated] {
            assert_eq!(ok(v, E::Any).unwrap(), None);
            assert_eq!(ok(v, E::StreamExists).unwrap(), None);
            assert_eq!(ok(v, E::Exact(4)).unwrap(), None);
            assert_eq!(wrong(ok(v, E::Exact(3))).1, CurrentRevision::Revision(4));
            assert_eq!(wrong(ok(v, E::NoStream)).1, CurrentRevision::Revision(4));
        }
    }

    #[test]
    fn a_hard_deleted_stream_refuses_every_append_even_a_replay() {
        let hard = view(Some(1), Some(Deletion::Hard));
        let evs = events(&[Some(1)]);
        for expected in [ExpectedRevision::Any, ExpectedRevision::NoStream] {
            let r = check_append(&hard, expected, &evs, lookup(&[(1, 1, 7)]));
            assert!(
                matches!(&r, Err(Error::StreamDeleted { stream }) if stream == "s"),
                "{r:?}"
            );
        }
    }

    #[test]
    fn ids_already_appended_as_this_run_replay_the_original_result() {
        let head = view(Some(5), None);
        let known = [(1, 3, 30), (2, 4, 31), (3, 5, 40)];
        let evs = events(&[Some(1), Some(2), Some(3)]);
        let want = AppendResult {
            first_revision: 3,
            last_revision: 5,
            first_position: 30,
            last_position: 40,
            idempotent_replay: true,
        };
        // The replay wins over the expectation: Exact(2) is where the run started.
        for expected in [
            ExpectedRevision::Any,
            ExpectedRevision::StreamExists,
            ExpectedRevision::Exact(2),
        ] {
            let r = check_append(&head, expected, &evs, lookup(&known)).unwrap();
            assert_eq!(r, Some(want), "{expected}");
        }
        // Exact naming another start: the ids exist, but not as this append.
        let r = check_append(&head, ExpectedRevision::Exact(5), &evs, lookup(&known));
        assert_eq!(duplicate(r), id(1));
        // NoStream: only a run that started the stream (revision 0) replays.
        let r = check_append(&head, ExpectedRevision::NoStream, &evs, lookup(&known));
        assert_eq!(duplicate(r), id(1));
        let from_zero = [(1, 0, 9), (2, 1, 10), (3, 2, 12)];
        let r = check_append(&head, ExpectedRevision::NoStream, &evs, lookup(&from_zero));
        assert_eq!(
            r.unwrap().map(|r| (r.first_revision, r.last_position)),
            Some((0, 12))
        );
    }

    #[test]
    fn no_stream_replays_a_run_that_recreated_a_soft_deleted_stream() {
        // Deleted at 2, re-created by the run 3..=4 with NoStream.
        let head = view(Some(4), Some(Deletion::Soft { at: 2 }));
        let evs = events(&[Some(1), Some(2)]);
        let known = [(1, 3, 20), (2, 4, 21)];
        let r = check_append(&head, ExpectedRevision::NoStream, &evs, lookup(&known)).unwrap();
        assert_eq!(r.map(|r| (r.first_revision, r.last_revision)), Some((3, 4)));
        // The same ids at 4..=5 did not start right after the deletion.
        let later = [(1, 4, 20), (2, 5, 21)];
        let head = view(Some(5), Some(Deletion::Soft { at: 2 }));
        let r = check_append(&head, ExpectedRevision::NoStream, &evs, lookup(&later));
        assert_eq!(duplicate(r), id(1));
    }

    #[test]
    fn a_partial_or_broken_run_is_a_duplicate() {
        let head = view(Some(9), None);
        // One id known, one new: the first known id is named.
        let r = check_append(
            &head,
            ExpectedRevision::Any,
            &events(&[Some(1), Some(2)]),
            lookup(&[(2, 7, 7)]),
        );
        assert_eq!(duplicate(r), id(2));
        // Every id known, but an event without id is new.
        let r = check_append(
            &head,
            ExpectedRevision::Any,
            &events(&[Some(1), None]),
            lookup(&[(1, 7, 7)]),
        );
        assert_eq!(duplicate(r), id(1));
        // Every id known, but not as one contiguous run.
        let r = check_append(
            &head,
            ExpectedRevision::Any,
            &events(&[Some(1), Some(2)]),
            lookup(&[(1, 3, 3), (2, 5, 5)]),
        );
        assert_eq!(duplicate(r), id(1));
        // Out of order is not this run either.
        let r = check_append(
            &head,
            ExpectedRevision::Any,
            &events(&[Some(2), Some(1)]),
            lookup(&[(1, 3, 3), (2, 4, 4)]),
        );
        assert_eq!(duplicate(r), id(2));
    }

    #[test]
    fn new_ids_go_on_to_the_expectation_and_lookup_errors_pass_through() {
        let head = view(Some(1), None);
        let evs = events(&[Some(1), Some(2)]);
        let r = check_append(&head, ExpectedRevision::NoStream, &evs, lookup(&[]));
        assert_eq!(wrong(r).1, CurrentRevision::Revision(1));
        let failing = |_| Err(Error::corruption("/seg", 8, "bad crc"));
        let r = check_append(&head, ExpectedRevision::Any, &evs, failing);
        assert!(
            matches!(r, Err(Error::Corruption { offset: 8, .. })),
            "{r:?}"
        );
    }

    #[test]
    fn deletes_check_existence_deletion_and_expectation() {
        use ExpectedRevision as E;
        let never = view(None, None);
        let live = view(Some(3), None);
        let soft = view(Some(3), Some(Deletion::Soft { at: 3 }));
        let hard = view(Some(3), Some(Deletion::Hard));
        for h in [false, true] {
            let r = check_delete(&never, E::Any, h);
            assert!(matches!(r, Err(Error::StreamNotFound { .. })), "{r:?}");
            let r = check_delete(&hard, E::Any, h);
            assert!(matches!(r, Err(Error::StreamDeleted { .. })), "{r:?}");
        }
        assert_eq!(
            check_delete(&live, E::Exact(3), false).unwrap(),
            Deletion::Soft { at: 3 }
        );
        assert_eq!(
            check_delete(&live, E::StreamExists, true).unwrap(),
            Deletion::Hard
        );
        assert_eq!(
            wrong(check_delete(&live, E::Exact(2), true)).1,
            CurrentRevision::Revision(3)
        );
        // A soft-deleted stream cannot be soft-deleted again, but can be tombstoned; it reads as
        // no stream for the expectation.
        let r = check_delete(&soft, E::Any, false);
        assert!(matches!(r, Err(Error::StreamDeleted { .. })), "{r:?}");
        assert_eq!(
            check_delete(&soft, E::NoStream, true).unwrap(),
            Deletion::Hard
        );
        assert_eq!(
            wrong(check_delete(&soft, E::Exact(3), true)).1,
            CurrentRevision::NoStream
        );
    }

    #[test]
    fn the_overlay_shows_what_earlier_requests_of_the_group_changed() {
        let mut overlay = Overlay::default();
        assert!(overlay.head("s").is_none());
        let head = |r: u64| Head {
            last: Some((r, r + 10)),
            meta: MetaRecord::default(),
        };
        overlay.absorb(
            vec![("s".into(), head(0))],
            vec![(("s".into(), id(1)), (0, 10))],
        );
        overlay.absorb(
            vec![("s".into(), head(1))],
            vec![(("s".into(), id(2)), (1, 11))],
        );
        // The later request's head wins; both requests' ids are found, each in its stream only.
        assert_eq!(overlay.head("s").and_then(|h| h.last), Some((1, 11)));
        assert_eq!(overlay.id("s", id(1)), Some((0, 10)));
        assert_eq!(overlay.id("s", id(2)), Some((1, 11)));
        assert_eq!(overlay.id("t", id(1)), None);
        // What the next request of the group is checked against.
        let view = overlay.head("s").map(|h| h.view("s")).unwrap();
        let evs = events(&[Some(1), Some(2)]);
        let r = check_append(&view, ExpectedRevision::NoStream, &evs, |i| {
            Ok(overlay.id("s", i))
        });
        assert_eq!(
            r.unwrap().map(|r| (r.first_revision, r.last_position)),
            Some((0, 11))
        );
        let r = check_append(&view, ExpectedRevision::NoStream, &events(&[None]), |i| {
            Ok(overlay.id("s", i))
        });
        assert_eq!(wrong(r).1, CurrentRevision::Revision(1));
    }
}
