//! Model-based property test of the store's public API.
//!
//! Random sequences of operations (appends with every kind of expected revision, idempotent
//! retries, invalid input, stream and `$all` reads with filters and paging, single-event reads,
//! stream listing, heads, soft and hard deletes, metadata, close + reopen with and without index
//! files, scavenges) run against a real store with tiny segments and against a plain in-memory model written
//! from `docs/http-api.md` (plus `src/writer/` where the contract leaves details open). Every result is
//! compared in full. Batches of writes sent from concurrent threads (one group commit, sometimes
//! split by a segment seal) must match the model in some order. A scavenge changes no stream
//! read; it may remove from `$all` only events the model says no stream read returns, and the
//! model learns which it removed (it cannot know which events lie in sealed segments). The writer's head cache is
//! sometimes tiny, so heads are looked up in the indexes again and again.
//!
//! `PROPTEST_CASES=<n>` and `STRATA_MODEL_OPS=<max ops per case>` run more or longer cases;
//! values below the defaults are raised to them (fewer cases would not reach every outcome).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Barrier, Mutex};

use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use strata_store::{
    AllFilter, ContentType, CurrentRevision, Deletion, Direction, Error, ExpectedRevision,
    FsyncPolicy, NewEvent, Options, ReadFrom, RecordedEvent, Store, StreamHead, StreamMetadata,
};
use uuid::Uuid;

// ---------------------------------------------------------------------------------------------
// Generated operations
// ---------------------------------------------------------------------------------------------

/// Two categories, `a` and `b`; `b` is also a stream of its own category.
const STREAMS: [&str; 4] = ["a-1", "a-2", "b-1", "b"];
const TYPES: [&str; 3] = ["T1", "T2", "T3"];
/// Type filters may also name the metadata records' type.
const FILTER_TYPES: [&str; 4] = ["T1", "T2", "T3", "$metadata"];
const CATEGORIES: [&str; 5] = ["a", "b", "c", "$$a", "$$b"];
/// Prefixes with and without `-` (the former are answered from the category index).
const PREFIXES: [&str; 9] = ["a", "a-", "a-2", "b", "b-", "b-1", "c-", "$$", "$$a-"];
const LIST_PREFIXES: [&str; 7] = ["", "a", "a-", "a-1", "b", "c", "$$"];
const LIST_AFTERS: [&str; 8] = ["", "a", "a-1", "a-2", "b", "b-1", "c", "$$a-1"];
const ID_POOL: usize = 8;

fn pool_id(i: usize) -> Uuid {
    Uuid::from_u128(0x5eed_0000 + i as u128)
}

#[derive(Clone, Debug)]
enum Exp {
    Any,
    NoStream,
    StreamExists,
    /// `Exact(last + delta)` where `last` is the model's last revision (0 if never written).
    Near(i64),
}

#[derive(Clone, Debug)]
enum Invalid {
    NoEvents,
    EmptyType,
    ControlInType,
    ControlInStream,
    MetaStream,
    EmptyStream,
    LongStream,
    IdTwice,
}

#[derive(Clone, Debug)]
struct Ev {
    id: Option<usize>,
    ty: usize,
    binary: bool,
    metadata: bool,
    pad: usize,
}

#[derive(Clone, Debug)]
enum From {
    Start,
    End,
    /// Reduced modulo (end + 3) at execution time.
    At(u64),
}

#[derive(Clone, Debug)]
struct Filt {
    types: Vec<usize>,
    category: Option<usize>,
    prefix: Option<usize>,
    system: bool,
}

#[derive(Clone, Debug)]
enum DropIdx {
    None,
    One(usize),
    All,
}

#[derive(Clone, Debug)]
enum Op {
    Append {
        stream: usize,
        exp: Exp,
        events: Vec<Ev>,
        invalid: Option<Invalid>,
    },
    /// Re-sends an earlier successful append (same ids), with its expectation or with `Any`.
    Retry {
        pick: usize,
        any: bool,
    },
    ReadStream {
        stream: usize,
        from: From,
        backward: bool,
        limit: usize,
    },
    ReadAll {
        from: From,
        backward: bool,
        limit: usize,
        filter: Filt,
    },
    ReadEvent {
        stream: usize,
        rev: u64,
    },
    List {
        prefix: usize,
        after: Option<usize>,
        limit: usize,
    },
    Head {
        stream: usize,
    },
    Delete {
        stream: usize,
        exp: Exp,
        hard: bool,
    },
    SetMeta {
        stream: usize,
        max_count: Option<u64>,
        truncate_before: Option<u64>,
        max_age: bool,
        custom: bool,
    },
    Reopen {
        drop_idx: DropIdx,
    },
    /// A scavenge of the sealed segments.
    Scavenge,
    /// Writes (`Append`, `Retry`, `Delete`, `SetMeta`) from concurrent threads.
    Batch {
        items: Vec<Op>,
    },
}

fn exp_strategy() -> impl Strategy<Value = Exp> {
    prop_oneof![
        3 => Just(Exp::Any),
        2 => Just(Exp::NoStream),
        1 => Just(Exp::StreamExists),
        3 => (-2i64..=1).prop_map(Exp::Near),
    ]
}

fn ev_strategy() -> impl Strategy<Value = Ev> {
    (
        prop_oneof![1 => Just(None), 1 => (0..ID_POOL).prop_map(Some)],
        0..TYPES.len(),
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.2),
        prop_oneof![1 => 0usize..40, 1 => 200usize..1200],
    )
        .prop_map(|(id, ty, binary, metadata, pad)| Ev {
            id,
            ty,
            binary,
            metadata,
            pad,
        })
}

fn from_strategy() -> impl Strategy<Value = From> {
    prop_oneof![
        1 => Just(From::Start),
        1 => Just(From::End),
        2 => any::<u64>().prop_map(From::At),
    ]
}

fn invalid_strategy() -> impl Strategy<Value = Invalid> {
    prop_oneof![
        Just(Invalid::NoEvents),
        Just(Invalid::EmptyType),
        Just(Invalid::ControlInType),
        Just(Invalid::ControlInStream),
        Just(Invalid::MetaStream),
        Just(Invalid::EmptyStream),
        Just(Invalid::LongStream),
        Just(Invalid::IdTwice),
    ]
}

fn delete_strategy() -> impl Strategy<Value = Op> {
    (0..STREAMS.len(), exp_strategy(), prop::bool::weighted(0.2))
        .prop_map(|(stream, exp, hard)| Op::Delete { stream, exp, hard })
}

fn set_meta_strategy() -> impl Strategy<Value = Op> {
    (
        0..STREAMS.len(),
        prop::option::weighted(0.5, 0u64..4),
        prop::option::weighted(0.5, 0u64..6),
        prop::bool::weighted(0.2),
        prop::bool::weighted(0.3),
    )
        .prop_map(
            |(stream, max_count, truncate_before, max_age, custom)| Op::SetMeta {
                stream,
                max_count,
                truncate_before,
                max_age,
                custom,
            },
        )
}

fn append_strategy(invalid: f64) -> impl Strategy<Value = Op> {
    (
        0..STREAMS.len(),
        exp_strategy(),
        prop::collection::vec(ev_strategy(), 1..=4).prop_map(|mut events| {
            // Repeated ids inside one append are tested as invalid input on purpose only.
            let mut seen = HashSet::new();
            for e in &mut events {
                if e.id.is_some_and(|id| !seen.insert(id)) {
                    e.id = None;
                }
            }
            events
        }),
        prop::option::weighted(invalid, invalid_strategy()),
    )
        .prop_map(|(stream, exp, events, invalid)| Op::Append {
            stream,
            exp,
            events,
            invalid,
        })
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let stream = 0..STREAMS.len();
    prop_oneof![
        14 => append_strategy(0.08),
        2 => prop::collection::vec(
            prop_oneof![
                6 => append_strategy(0.08).prop_map(|op| match op {
                    Op::Append { stream, exp, events, .. } => Op::Append { stream, exp, events, invalid: None },
                    other => other,
                }),
                2 => any::<usize>().prop_map(|pick| Op::Retry { pick, any: false }), 1 => delete_strategy(),
                1 => set_meta_strategy(),
            ],
            2..=STREAMS.len(),
        )
        .prop_map(|items| Op::Batch { items }),
        4 => (any::<usize>(), prop::bool::weighted(0.3)).prop_map(|(pick, any)| Op::Retry { pick, any }),
        5 => (stream.clone(), from_strategy(), any::<bool>(), 1usize..5)
            .prop_map(|(stream, from, backward, limit)| Op::ReadStream { stream, from, backward, limit }),
        5 => (
            from_strategy(),
            any::<bool>(),
            1usize..7,
            (
                prop::collection::vec(0..FILTER_TYPES.len(), 0..3),
                prop::option::weighted(0.3, 0..CATEGORIES.len()),
                prop::option::weighted(0.4, 0..PREFIXES.len()),
                prop::bool::weighted(0.3),
            )
                .prop_map(|(types, category, prefix, system)| Filt { types, category, prefix, system }),
        )
            .prop_map(|(from, backward, limit, filter)| Op::ReadAll { from, backward, limit, filter }),
        2 => (stream.clone(), 0u64..8).prop_map(|(stream, rev)| Op::ReadEvent { stream, rev }),
        3 => (
            0..LIST_PREFIXES.len(),
            prop::option::of(0..LIST_AFTERS.len()),
            1usize..4,
        )
            .prop_map(|(prefix, after, limit)| Op::List { prefix, after, limit }),
        1 => stream.prop_map(|stream| Op::Head { stream }),
        3 => delete_strategy(),
        2 => set_meta_strategy(),
        2 => prop_oneof![
            2 => Just(DropIdx::None),
            1 => any::<usize>().prop_map(DropIdx::One),
            1 => Just(DropIdx::All),
        ]
        .prop_map(|drop_idx| Op::Reopen { drop_idx }),
        2 => Just(Op::Scavenge),
    ]
}

// ---------------------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------------------

/// One event of the log as the model knows it.
#[derive(Clone, Debug)]
struct MEvent {
    stream: String,
    ty: String,
    /// `None` for generated ids (user events without id, metadata records).
    id: Option<Uuid>,
    revision: u64,
    /// `None` for metadata records (their body is the store's business).
    data: Option<Vec<u8>>,
    metadata: Vec<u8>,
    binary: bool,
    /// Which write put it there (events of one append share a timestamp).
    append: u64,
}

#[derive(Clone, Debug, Default)]
struct MStream {
    /// Position of each revision.
    positions: Vec<u64>,
    ids: HashMap<Uuid, u64>,
    /// Ids in `ids` of events an earlier scavenge removed (and remembered: the stream existed)
    /// while a later scavenge found the stream deleted: the store drops them when that scavenge
    /// rewrites their segment, which the model cannot tell, so the store's answer decides.
    maybe_forgotten: HashSet<Uuid>,
    deletion: Option<Deletion>,
    metadata: StreamMetadata,
    /// Records in the stream's `$$` stream.
    meta_records: u64,
}

impl MStream {
    fn last(&self) -> Option<u64> {
        (self.positions.len() as u64).checked_sub(1)
    }

    fn deleted(&self) -> bool {
        match self.deletion {
            Some(Deletion::Hard) => true,
            Some(Deletion::Soft { at }) => self.last() == Some(at),
            None => false,
        }
    }

    fn current(&self) -> CurrentRevision {
        match self.last() {
            Some(r) if !self.deleted() => CurrentRevision::Revision(r),
            _ => CurrentRevision::NoStream,
        }
    }

    /// Lowest revision stream reads may return (soft delete, truncate_before, max_count).
    fn first_visible(&self) -> u64 {
        let len = self.positions.len() as u64;
        let mut first = self.metadata.truncate_before.unwrap_or(0);
        if let Some(Deletion::Soft { at }) = self.deletion {
            first = first.max(at + 1);
        }
        if let Some(max) = self.metadata.max_count {
            first = first.max(len.saturating_sub(max));
        }
        first
    }
}

/// An error, reduced to what the model predicts.
#[derive(Clone, Debug, PartialEq)]
enum MErr {
    Wrong {
        expected: ExpectedRevision,
        actual: CurrentRevision,
    },
    /// Any of these ids may be the one reported.
    Duplicate(Vec<Uuid>),
    Deleted(String),
    NotFound(String),
    Invalid,
}

#[derive(Clone, Debug, PartialEq)]
struct MAppend {
    first_revision: u64,
    last_revision: u64,
    first_position: u64,
    last_position: u64,
    replay: bool,
}

/// An event to append as the model sees it: id, type, data, metadata, binary.
type MNew = (Option<Uuid>, String, Vec<u8>, Vec<u8>, bool);

#[derive(Clone, Default)]
struct Model {
    writes: u64,
    log: Vec<MEvent>,
    streams: BTreeMap<String, MStream>,
    /// Positions a scavenge removed: `$all` skips them.
    removed: std::collections::BTreeSet<u64>,
}

fn satisfies(expected: ExpectedRevision, current: CurrentRevision) -> bool {
    match (expected, current) {
        (ExpectedRevision::Any, _) => true,
        (ExpectedRevision::NoStream, CurrentRevision::NoStream) => true,
        (ExpectedRevision::StreamExists, CurrentRevision::Revision(_)) => true,
        (ExpectedRevision::Exact(n), CurrentRevision::Revision(r)) => n == r,
        _ => false,
    }
}

fn category(stream: &str) -> &str {
    stream.split('-').next().unwrap_or(stream)
}

impl Model {
    fn stream(&self, name: &str) -> MStream {
        self.streams.get(name).cloned().unwrap_or_default()
    }

    fn append(
        &mut self,
        stream: &str,
        expected: ExpectedRevision,
        events: &[MNew],
    ) -> Result<MAppend, MErr> {
        let mut seen = HashSet::new();
        if events.iter().filter_map(|e| e.0).any(|id| !seen.insert(id)) {
            return Err(MErr::Invalid);
        }
        let s = self.stream(stream);
        if s.deletion == Some(Deletion::Hard) {
            return Err(MErr::Deleted(stream.to_owned()));
        }
        // Idempotency: ids already in the stream.
        let found: Vec<Option<u64>> = events
            .iter()
            .map(|e| e.0.and_then(|id| s.ids.get(&id).copied()))
            .collect();
        let dups: Vec<Uuid> = events
            .iter()
            .filter_map(|e| e.0.filter(|id| s.ids.contains_key(id)))
            .collect();
        if !dups.is_empty() {
            if found.iter().any(Option::is_none) {
                return Err(MErr::Duplicate(dups));
            }
            let revs: Vec<u64> = found.into_iter().flatten().collect();
            let r0 = revs[0];
            let contiguous = revs.iter().enumerate().all(|(i, &r)| r == r0 + i as u64);
            let starts_right = match expected {
                ExpectedRevision::Any | ExpectedRevision::StreamExists => true,
                ExpectedRevision::Exact(n) => r0 == n + 1,
                // Right after "no stream": revision 0, or right after the latest soft delete.
                ExpectedRevision::NoStream => {
                    r0 == 0 || matches!(s.deletion, Some(Deletion::Soft { at }) if r0 == at + 1)
                }
            };
            if !contiguous || !starts_right {
                return Err(MErr::Duplicate(dups));
            }
            let rl = *revs.last().unwrap();
            return Ok(MAppend {
                first_revision: r0,
                last_revision: rl,
                first_position: s.positions[r0 as usize],
                last_position: s.positions[rl as usize],
                replay: true,
            });
        }
        if !satisfies(expected, s.current()) {
            return Err(MErr::Wrong {
                expected,
                actual: s.current(),
            });
        }
        let first_revision = s.positions.len() as u64;
        let first_position = self.log.len() as u64;
        self.writes += 1;
        let append = self.writes;
        let st = self.streams.entry(stream.to_owned()).or_default();
        for (i, (id, ty, data, metadata, binary)) in events.iter().enumerate() {
            let revision = first_revision + i as u64;
            st.positions.push(first_position + i as u64);
            if let Some(id) = id {
                st.ids.insert(*id, revision);
            }
            self.log.push(MEvent {
                stream: stream.to_owned(),
                ty: ty.clone(),
                id: *id,
                revision,
                data: Some(data.clone()),
                metadata: metadata.clone(),
                binary: *binary,
                append,
            });
        }
        let n = events.len() as u64;
        Ok(MAppend {
            first_revision,
            last_revision: first_revision + n - 1,
            first_position,
            last_position: first_position + n - 1,
            replay: false,
        })
    }

    fn push_meta_record(&mut self, stream: &str) -> u64 {
        let position = self.log.len() as u64;
        let st = self.streams.entry(stream.to_owned()).or_default();
        let revision = st.meta_records;
        st.meta_records += 1;
        self.writes += 1;
        let append = self.writes;
        self.log.push(MEvent {
            stream: format!("$${stream}"),
            ty: "$metadata".into(),
            id: None,
            revision,
            data: None,
            metadata: Vec::new(),
            binary: false,
            append,
        });
        position
    }

    fn delete(
        &mut self,
        stream: &str,
        expected: ExpectedRevision,
        hard: bool,
    ) -> Result<u64, MErr> {
        let s = self.stream(stream);
        let Some(last) = s.last() else {
            return Err(MErr::NotFound(stream.to_owned()));
        };
        if s.deletion == Some(Deletion::Hard) || (s.deleted() && !hard) {
            return Err(MErr::Deleted(stream.to_owned()));
        }
        if !satisfies(expected, s.current()) {
            return Err(MErr::Wrong {
                expected,
                actual: s.current(),
            });
        }
        let st = self.streams.entry(stream.to_owned()).or_default();
        st.deletion = Some(if hard {
            Deletion::Hard
        } else {
            Deletion::Soft { at: last }
        });
        Ok(self.push_meta_record(stream))
    }

    fn set_metadata(&mut self, stream: &str, metadata: StreamMetadata) -> Result<u64, MErr> {
        if self.stream(stream).deletion == Some(Deletion::Hard) {
            return Err(MErr::Deleted(stream.to_owned()));
        }
        self.streams.entry(stream.to_owned()).or_default().metadata = metadata;
        Ok(self.push_meta_record(stream))
    }

    /// Positions of one page of a stream read, its `next` and `end`.
    fn read_stream(
        &self,
        stream: &str,
        from: ReadFrom,
        direction: Direction,
        limit: u64,
    ) -> Result<(Vec<u64>, Option<u64>, bool), MErr> {
        let s = self.stream(stream);
        if s.deleted() {
            return Err(MErr::Deleted(stream.to_owned()));
        }
        let Some(last) = s.last() else {
            return Err(MErr::NotFound(stream.to_owned()));
        };
        let fv = s.first_visible();
        // Revisions a scavenge removed are skipped: pages fill up with the revisions after
        // them (they read as removed even once metadata would show them again).
        let present = |r: &u64| self.present(s.positions[*r as usize]);
        match direction {
            Direction::Forward => {
                let start = match from {
                    ReadFrom::Start => 0,
                    ReadFrom::End => last + 1,
                    ReadFrom::At(r) => r,
                };
                let lo = start.max(fv);
                if lo > last {
                    return Ok((Vec::new(), Some(lo), true));
                }
                let revs: Vec<u64> = (lo..=last).filter(present).take(limit as usize).collect();
                let next = match revs.last() {
                    Some(&r) if revs.len() as u64 == limit => r + 1,
                    _ => last + 1,
                };
                let positions = revs.iter().map(|&r| s.positions[r as usize]).collect();
                Ok((positions, Some(next), next > last))
            }
            Direction::Backward => {
                let start = match from {
                    ReadFrom::Start => 0,
                    ReadFrom::End => last,
                    ReadFrom::At(r) => r.min(last),
                };
                if start < fv {
                    return Ok((Vec::new(), None, true));
                }
                let revs: Vec<u64> = (fv..=start)
                    .rev()
                    .filter(present)
                    .take(limit as usize)
                    .collect();
                let next = match revs.last() {
                    Some(&r) if revs.len() as u64 == limit && r > fv => Some(r - 1),
                    _ => None,
                };
                let positions = revs.iter().map(|&r| s.positions[r as usize]).collect();
                Ok((positions, next, next.is_none()))
            }
        }
    }

    /// Whether position `p` still holds its event (no scavenge removed it).
    fn present(&self, p: u64) -> bool {
        !self.removed.contains(&p)
    }

    /// Whether a scavenge may remove the event at `p`: a superseded metadata record, an event
    /// of a hard-deleted stream, or one below its stream's first visible revision but its last
    /// (the rules of `src/scavenge/plan.rs`; `max_age_seconds` is never reached here).
    fn removable(&self, p: u64) -> bool {
        let e = &self.log[p as usize];
        if let Some(target) = e.stream.strip_prefix("$$") {
            return e.revision + 1 < self.stream(target).meta_records;
        }
        let s = self.stream(&e.stream);
        if s.deletion == Some(Deletion::Hard) {
            return true;
        }
        s.last() != Some(e.revision) && e.revision < s.first_visible()
    }

    fn matches(&self, e: &MEvent, f: &AllFilter) -> bool {
        (f.include_system || !e.stream.starts_with('$'))
            && (f.types.is_empty() || f.types.contains(&e.ty))
            && f.category
                .as_deref()
                .is_none_or(|c| category(&e.stream) == c)
            && f.stream_prefix
                .as_deref()
                .is_none_or(|p| e.stream.starts_with(p))
    }

    fn read_all(
        &self,
        from: ReadFrom,
        direction: Direction,
        limit: usize,
        f: &AllFilter,
    ) -> (Vec<u64>, Option<u64>, bool) {
        let end = self.log.len() as u64;
        match direction {
            Direction::Forward => {
                let start = match from {
                    ReadFrom::Start => 0,
                    ReadFrom::End => end,
                    // A lower bound: beyond the end, the page is empty and `next` stays there.
                    ReadFrom::At(p) => p,
                };
                let all: Vec<u64> = (start..end)
                    .filter(|&p| self.present(p) && self.matches(&self.log[p as usize], f))
                    .collect();
                if all.len() > limit {
                    let page = all[..limit].to_vec();
                    let next = page[limit - 1] + 1;
                    (page, Some(next), false)
                } else {
                    (all, Some(end.max(start)), true)
                }
            }
            Direction::Backward => {
                if end == 0 {
                    return (Vec::new(), None, true);
                }
                let start = match from {
                    ReadFrom::Start => 0,
                    ReadFrom::End => end - 1,
                    ReadFrom::At(p) => p.min(end - 1),
                };
                let all: Vec<u64> = (0..=start)
                    .rev()
                    .filter(|&p| self.present(p) && self.matches(&self.log[p as usize], f))
                    .collect();
                if all.len() > limit {
                    let page = all[..limit].to_vec();
                    let next = page[limit - 1] - 1;
                    (page, Some(next), false)
                } else {
                    (all, None, true)
                }
            }
        }
    }

    /// Live user streams with `prefix`, after `after`, in byte order: (name, last rev, last pos).
    fn list(&self, prefix: &str, after: Option<&str>) -> Vec<(String, u64, u64)> {
        self.streams
            .iter()
            .filter(|(name, s)| {
                name.starts_with(prefix)
                    && !name.starts_with('$')
                    && after.is_none_or(|a| name.as_str() > a)
                    && s.last().is_some()
                    && !s.deleted()
            })
            .map(|(name, s)| {
                let last = s.last().unwrap();
                (name.clone(), last, s.positions[last as usize])
            })
            .collect()
    }

    fn head(&self, stream: &str) -> StreamHead {
        let s = self.stream(stream);
        StreamHead {
            name: stream.to_owned(),
            last_revision: s.last(),
            last_position: s.last().map(|r| s.positions[r as usize]),
            deletion: s.deletion,
            metadata: s.metadata.clone(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// ---------------------------------------------------------------------------------------------
// Running a sequence
// ---------------------------------------------------------------------------------------------

fn options(head_cache_capacity: usize) -> Options {
    Options {
        segment_size: 4096,
        fsync: FsyncPolicy::Never,
        head_cache_capacity,
        ..Options::default()
    }
}

fn merr(e: &Error) -> MErr {
    match e {
        Error::WrongExpectedRevision { expected, actual } => MErr::Wrong {
            expected: *expected,
            actual: *actual,
        },
        Error::DuplicateEventId { id, .. } => MErr::Duplicate(vec![*id]),
        Error::StreamDeleted { stream } => MErr::Deleted(stream.clone()),
        Error::StreamNotFound { stream } => MErr::NotFound(stream.clone()),
        Error::InvalidInput { .. } => MErr::Invalid,
        other => panic!("unexpected error kind: {other:?}"),
    }
}

/// Asserts that the store's error is the one the model predicts.
fn check_err(ctx: &str, actual: &Error, want: &MErr) {
    match (merr(actual), want) {
        (MErr::Duplicate(got), MErr::Duplicate(allowed)) => assert!(
            allowed.contains(&got[0]),
            "{ctx}: duplicate id {} is not one of the existing ids {allowed:?}",
            got[0]
        ),
        (got, want) => assert_eq!(&got, want, "{ctx}: error {actual:?}"),
    }
}

fn check_event(ctx: &str, actual: &RecordedEvent, model: &Model, position: u64) {
    let m = &model.log[position as usize];
    assert_eq!(actual.position, position, "{ctx}: position of {actual:?}");
    assert_eq!(actual.stream, m.stream, "{ctx}: stream of {actual:?}");
    assert_eq!(actual.revision, m.revision, "{ctx}: revision of {actual:?}");
    assert_eq!(actual.event_type, m.ty, "{ctx}: type of {actual:?}");
    if let Some(id) = m.id {
        assert_eq!(actual.id, id, "{ctx}: id of {actual:?}");
    }
    if let Some(data) = &m.data {
        assert_eq!(&actual.data, data, "{ctx}: data of {actual:?}");
        assert_eq!(actual.metadata, m.metadata, "{ctx}: metadata of {actual:?}");
        let ct = if m.binary {
            ContentType::Binary
        } else {
            ContentType::Json
        };
        assert_eq!(actual.content_type, ct, "{ctx}: content type of {actual:?}");
    } else {
        // A metadata record: its body is JSON.
        assert!(
            serde_json::from_slice::<serde_json::Value>(&actual.data).is_ok(),
            "{ctx}: metadata record body is not JSON: {actual:?}"
        );
    }
}

fn check_events(ctx: &str, actual: &[RecordedEvent], model: &Model, positions: &[u64]) {
    let got: Vec<u64> = actual.iter().map(|e| e.position).collect();
    assert_eq!(got, positions, "{ctx}: positions of the events read");
    for (e, &p) in actual.iter().zip(positions) {
        check_event(ctx, e, model, p);
    }
    // One append, one timestamp.
    for w in actual.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        if model.log[a.position as usize].append == model.log[b.position as usize].append {
            assert_eq!(
                a.timestamp_micros, b.timestamp_micros,
                "{ctx}: events of one append with different timestamps"
            );
        }
    }
}

fn expected_revision(exp: &Exp, model: &Model, stream: &str) -> ExpectedRevision {
    match exp {
        Exp::Any => ExpectedRevision::Any,
        Exp::NoStream => ExpectedRevision::NoStream,
        Exp::StreamExists => ExpectedRevision::StreamExists,
        Exp::Near(d) => {
            let base = model.stream(stream).last().unwrap_or(0) as i64;
            ExpectedRevision::Exact((base + d).max(0) as u64)
        }
    }
}

fn read_from(from: &From, end: u64) -> ReadFrom {
    match from {
        From::Start => ReadFrom::Start,
        From::End => ReadFrom::End,
        From::At(x) => ReadFrom::At(x % (end + 3)),
    }
}

fn direction(backward: bool) -> Direction {
    if backward {
        Direction::Backward
    } else {
        Direction::Forward
    }
}

/// A write request, as sent to both the store and the model.
#[derive(Clone, Debug)]
enum Req {
    Append {
        stream: String,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
    },
    Delete {
        stream: String,
        expected: ExpectedRevision,
        hard: bool,
    },
    Meta {
        stream: String,
        metadata: StreamMetadata,
    },
}

/// A successful write's answer.
#[derive(Clone, Debug, PartialEq)]
enum Out {
    Append(MAppend),
    Position(u64),
}

impl Out {
    fn writes(&self) -> bool {
        match self {
            Out::Append(a) => !a.replay,
            Out::Position(_) => true,
        }
    }
}

fn model_apply(model: &mut Model, req: &Req) -> Result<Out, MErr> {
    match req {
        Req::Append {
            stream,
            expected,
            events,
        } => {
            let events: Vec<_> = events
                .iter()
                .map(|e| {
                    (
                        e.id,
                        e.event_type.clone(),
                        e.data.clone(),
                        e.metadata.clone(),
                        e.content_type == ContentType::Binary,
                    )
                })
                .collect();
            model.append(stream, *expected, &events).map(Out::Append)
        }
        Req::Delete {
            stream,
            expected,
            hard,
        } => model.delete(stream, *expected, *hard).map(Out::Position),
        Req::Meta { stream, metadata } => model
            .set_metadata(stream, metadata.clone())
            .map(Out::Position),
    }
}

/// [`model_apply`], letting the store's answer `got` settle what the model cannot know: whether
/// the ids of `req` in its stream's `maybe_forgotten` are still known. An answer other than a
/// duplicate means the store knew all of them (the model as it is) or none (they are
/// forgotten); a duplicate (nothing written) may also mean that only some of them are known.
fn model_apply_as(model: &mut Model, req: &Req, got: &Result<Out, Error>) -> Result<Out, MErr> {
    let mut remembered = model.clone();
    let want = model_apply(&mut remembered, req);
    if let (false, Req::Append { stream, events, .. }) = (outcome_matches(got, &want), req) {
        let s = model.stream(stream);
        let maybe: Vec<Uuid> = events
            .iter()
            .filter_map(|e| e.id)
            .filter(|id| s.maybe_forgotten.contains(id))
            .collect();
        if !maybe.is_empty() {
            let mut forgot = model.clone();
            if let Some(st) = forgot.streams.get_mut(stream) {
                for id in &maybe {
                    st.ids.remove(id);
                    st.maybe_forgotten.remove(id);
                }
            }
            let alt = model_apply(&mut forgot, req);
            if outcome_matches(got, &alt) {
                note("append.forgotten_ids");
                *model = forgot;
                return alt;
            }
            if let Err(Error::DuplicateEventId { id, .. }) = got {
                if s.ids.contains_key(id) && maybe.iter().any(|m| m != id) {
                    return Err(MErr::Duplicate(vec![*id]));
                }
            }
        }
    }
    *model = remembered;
    want
}

fn store_apply(store: &Store, req: &Req) -> Result<Out, Error> {
    match req {
        Req::Append {
            stream,
            expected,
            events,
        } => store.append(stream, *expected, events.clone()).map(|r| {
            Out::Append(MAppend {
                first_revision: r.first_revision,
                last_revision: r.last_revision,
                first_position: r.first_position,
                last_position: r.last_position,
                replay: r.idempotent_replay,
            })
        }),
        Req::Delete {
            stream,
            expected,
            hard,
        } => store
            .delete_stream(stream, *expected, *hard)
            .map(|r| Out::Position(r.position)),
        Req::Meta { stream, metadata } => store
            .set_metadata(stream, metadata.clone())
            .map(|r| Out::Position(r.position)),
    }
}

/// Whether the store's answer is the one the model predicts (see [`check_err`]).
fn outcome_matches(got: &Result<Out, Error>, want: &Result<Out, MErr>) -> bool {
    match (got, want) {
        (Ok(g), Ok(w)) => g == w,
        (Err(e), Err(MErr::Duplicate(allowed))) => {
            matches!(e, Error::DuplicateEventId { id, .. } if allowed.contains(id))
        }
        (Err(e), Err(w)) => !matches!(w, MErr::Duplicate(_)) && merr(e) == *w,
        _ => false,
    }
}

/// All orders of `0..n`.
fn permutations(n: usize) -> Vec<Vec<usize>> {
    if n == 0 {
        return vec![Vec::new()];
    }
    let mut out = Vec::new();
    for p in permutations(n - 1) {
        for at in 0..=p.len() {
            let mut q = p.clone();
            q.insert(at, n - 1);
            out.push(q);
        }
    }
    out
}

/// Outcome counters over all cases, to prove the generator reaches the interesting paths.
static STATS: Mutex<BTreeMap<&'static str, u64>> = Mutex::new(BTreeMap::new());

fn note(key: &'static str) {
    *STATS.lock().unwrap().entry(key).or_default() += 1;
}

struct Harness {
    dir: tempfile::TempDir,
    store: Option<Store>,
    head_cache: usize,
    model: Model,
    /// Successful appends that wrote, kept for retries.
    sent: Vec<Req>,
    counter: u64,
    /// A scavenge removed events (noted when index files are then rebuilt).
    scavenged: bool,
}

impl Harness {
    fn new(head_cache: usize) -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), options(head_cache)).expect("open");
        Harness {
            dir,
            store: Some(store),
            head_cache,
            model: Model::default(),
            sent: Vec::new(),
            counter: 0,
            scavenged: false,
        }
    }

    fn store(&self) -> &Store {
        self.store.as_ref().expect("store is open")
    }

    fn new_events(&mut self, events: &[Ev]) -> Vec<NewEvent> {
        self.counter += 1;
        let k = self.counter;
        events
            .iter()
            .enumerate()
            .map(|(j, e)| {
                let pad = "x".repeat(e.pad);
                let data = format!("{{\"k\":{k},\"j\":{j},\"pad\":\"{pad}\"}}");
                let mut ne = if e.binary {
                    NewEvent::binary(TYPES[e.ty], data)
                } else {
                    NewEvent::json(TYPES[e.ty], data)
                };
                if e.metadata {
                    ne = ne.with_metadata(format!("{{\"m\":{k}}}"));
                }
                if let Some(id) = e.id {
                    ne = ne.with_id(pool_id(id));
                }
                ne
            })
            .collect()
    }

    /// The write request of an `Append` (valid input only), `Delete` or `SetMeta` op on `stream`.
    fn request(&mut self, i: usize, op: &Op, stream: &str) -> Req {
        match op {
            Op::Append { exp, events, .. } => Req::Append {
                stream: stream.to_owned(),
                expected: expected_revision(exp, &self.model, stream),
                events: self.new_events(events),
            },
            Op::Delete { exp, hard, .. } => Req::Delete {
                stream: stream.to_owned(),
                expected: expected_revision(exp, &self.model, stream),
                hard: *hard,
            },
            Op::SetMeta {
                max_count,
                truncate_before,
                max_age,
                custom,
                ..
            } => Req::Meta {
                stream: stream.to_owned(),
                metadata: StreamMetadata {
                    max_count: *max_count,
                    // Large enough that time never hides anything.
                    max_age_seconds: max_age.then_some(1_000_000_000),
                    truncate_before: *truncate_before,
                    custom: custom.then(|| serde_json::json!({"op": i, "tags": ["x", 1]})),
                },
            },
            other => unreachable!("not a write: {other:?}"),
        }
    }

    /// Compares a write's answer with the model's, and counts what happened.
    fn compare(
        &mut self,
        ctx: &str,
        req: &Req,
        got: &Result<Out, Error>,
        want: &Result<Out, MErr>,
    ) {
        match (got, want) {
            (Ok(g), Ok(w)) => {
                assert_eq!(g, w, "{ctx}: result of {req:?}");
                match (req, w) {
                    (Req::Append { stream, .. }, Out::Append(a)) if !a.replay => {
                        note("append.write");
                        if matches!(
                            self.model.stream(stream).deletion,
                            Some(Deletion::Soft { .. })
                        ) {
                            note("append.after_soft_delete");
                        }
                        self.sent.push(req.clone());
                    }
                    (Req::Append { .. }, _) => note("append.replay"),
                    (Req::Delete { hard: true, .. }, _) => note("delete.hard"),
                    (Req::Delete { .. }, _) => note("delete.soft"),
                    (Req::Meta { .. }, _) => note("metadata.set"),
                }
            }
            (Err(e), Err(w)) => {
                check_err(ctx, e, w);
                note(match w {
                    MErr::Wrong { .. } => "error.wrong_expected_revision",
                    MErr::Duplicate(_) => "error.duplicate_event_id",
                    MErr::Deleted(_) => "error.stream_deleted",
                    MErr::NotFound(_) => "error.stream_not_found",
                    MErr::Invalid => "error.invalid_input",
                });
            }
            _ => panic!("{ctx}: {req:?}: store answered {got:?}, model expects {want:?}"),
        }
    }

    fn write(&mut self, ctx: &str, req: Req) {
        let got = store_apply(self.store(), &req);
        let want = model_apply_as(&mut self.model, &req, &got);
        self.compare(ctx, &req, &got, &want);
    }

    /// Runs 2–4 writes (appends, retries, deletes, metadata; streams may repeat) from concurrent
    /// threads, so that they most likely share one group commit, then checks that the answers
    /// are those of the model run in *some* order: the writes must be serializable.
    fn batch(&mut self, ctx: &str, i: usize, items: &[Op]) {
        let mut reqs = Vec::new();
        for op in items {
            match op {
                Op::Retry { pick, .. } if !self.sent.is_empty() => {
                    reqs.push(self.sent[pick % self.sent.len()].clone());
                }
                Op::Retry { .. } => {}
                Op::Append { stream, .. }
                | Op::Delete { stream, .. }
                | Op::SetMeta { stream, .. } => {
                    reqs.push(self.request(i, op, STREAMS[*stream]));
                }
                other => unreachable!("not a batch item: {other:?}"),
            }
        }
        let store = self.store().clone();
        let barrier = Barrier::new(reqs.len());
        let gots: Vec<Result<Out, Error>> = std::thread::scope(|s| {
            let handles: Vec<_> = reqs
                .iter()
                .map(|r| {
                    let (store, barrier) = (&store, &barrier);
                    s.spawn(move || {
                        barrier.wait();
                        store_apply(store, r)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let order = permutations(reqs.len()).into_iter().find(|order| {
            let mut m = self.model.clone();
            order
                .iter()
                .all(|&k| outcome_matches(&gots[k], &model_apply_as(&mut m, &reqs[k], &gots[k])))
        });
        let Some(order) = order else {
            panic!(
                "{ctx}: concurrent writes are not serializable: {:#?}",
                reqs.iter().zip(&gots).collect::<Vec<_>>()
            );
        };
        let writers = gots
            .iter()
            .filter(|g| g.as_ref().is_ok_and(Out::writes))
            .count();
        if writers > 1 {
            note("batch.concurrent_writers");
        }
        for k in order {
            let want = model_apply_as(&mut self.model, &reqs[k], &gots[k]);
            self.compare(ctx, &reqs[k], &gots[k], &want);
        }
    }

    fn run(&mut self, i: usize, op: &Op) {
        let ctx = format!("op #{i} {op:?}");
        let ctx = ctx.as_str();
        match op {
            Op::Append {
                stream,
                invalid: None,
                ..
            }
            | Op::Delete { stream, .. }
            | Op::SetMeta { stream, .. } => {
                let req = self.request(i, op, STREAMS[*stream]);
                self.write(ctx, req);
            }
            Op::Append {
                stream,
                exp,
                events,
                invalid: Some(invalid),
            } => {
                let mut name = STREAMS[*stream].to_owned();
                let expected = expected_revision(exp, &self.model, &name);
                let mut evs = self.new_events(events);
                match invalid {
                    Invalid::NoEvents => evs.clear(),
                    Invalid::EmptyType => evs[0].event_type.clear(),
                    Invalid::ControlInType => evs[0].event_type.push('\n'),
                    Invalid::ControlInStream => name.insert(1, '\u{7}'),
                    Invalid::MetaStream => name.insert_str(0, "$$"),
                    Invalid::EmptyStream => name.clear(),
                    Invalid::LongStream => name = "a-".repeat(128),
                    Invalid::IdTwice => {
                        let id = evs[0].id.unwrap_or_else(|| pool_id(0));
                        evs[0].id = Some(id);
                        let dup = evs[0].clone();
                        evs.push(dup);
                    }
                }
                match self.store().append(&name, expected, evs) {
                    Err(Error::InvalidInput { .. }) => note("error.invalid_input"),
                    other => panic!("{ctx}: invalid append answered {other:?}"),
                }
            }
            Op::Retry { pick, any } => {
                if self.sent.is_empty() {
                    return;
                }
                let mut req = self.sent[pick % self.sent.len()].clone();
                if let (Req::Append { expected, .. }, true) = (&mut req, any) {
                    *expected = ExpectedRevision::Any;
                }
                self.write(ctx, req);
            }
            Op::Batch { items } => self.batch(ctx, i, items),
            Op::ReadStream {
                stream,
                from,
                backward,
                limit,
            } => {
                let name = STREAMS[*stream];
                let end = self.model.stream(name).positions.len() as u64;
                let mut from = read_from(from, end);
                let direction = direction(*backward);
                // Follow `next` page by page, comparing every page.
                for page in 0..16 {
                    let want = self.model.read_stream(name, from, direction, *limit as u64);
                    let got = self.store().read_stream(name, from, direction, *limit);
                    let ctx = format!("{ctx} page {page} from {from:?}");
                    match (&got, &want) {
                        (Ok(slice), Ok((positions, next, end))) => {
                            check_events(&ctx, &slice.events, &self.model, positions);
                            assert_eq!(slice.next, *next, "{ctx}: next");
                            assert_eq!(slice.end, *end, "{ctx}: end");
                            if self.model.stream(name).first_visible() > 0 {
                                note("read_stream.with_hidden_events");
                            }
                            if *end {
                                break;
                            }
                            note("read_stream.next_page");
                            from = ReadFrom::At(next.expect("a page that is not the end has next"));
                        }
                        (Err(e), Err(w)) => {
                            check_err(&ctx, e, w);
                            note("read_stream.error");
                            break;
                        }
                        _ => panic!("{ctx}: store answered {got:?}, model expects {want:?}"),
                    }
                }
            }
            Op::ReadAll {
                from,
                backward,
                limit,
                filter,
            } => {
                let f = AllFilter {
                    types: filter
                        .types
                        .iter()
                        .map(|&t| FILTER_TYPES[t].to_owned())
                        .collect(),
                    category: filter.category.map(|c| CATEGORIES[c].to_owned()),
                    stream_prefix: filter.prefix.map(|p| PREFIXES[p].to_owned()),
                    include_system: filter.system,
                    correlation_id: None,
                };
                let mut from = read_from(from, self.model.log.len() as u64);
                let direction = direction(*backward);
                for page in 0..64 {
                    let (positions, next, end) = self.model.read_all(from, direction, *limit, &f);
                    let slice = self
                        .store()
                        .read_all(from, direction, *limit, &f)
                        .unwrap_or_else(|e| panic!("{ctx}: read_all failed: {e:?}"));
                    let ctx = format!("{ctx} page {page} from {from:?}");
                    check_events(&ctx, &slice.events, &self.model, &positions);
                    assert_eq!(slice.next, next, "{ctx}: next");
                    assert_eq!(slice.end, end, "{ctx}: end");
                    if end {
                        break;
                    }
                    note("read_all.next_page");
                    from = ReadFrom::At(next.expect("a page that is not the end has next"));
                }
            }
            Op::ReadEvent { stream, rev } => {
                let name = STREAMS[*stream];
                let got = self.store().read_event(name, *rev);
                let s = self.model.stream(name);
                let want = self
                    .model
                    .read_stream(name, ReadFrom::At(*rev), Direction::Forward, 1)
                    .map(|_| {
                        (*rev >= s.first_visible() && *rev < s.positions.len() as u64)
                            .then(|| s.positions[*rev as usize])
                            .filter(|&p| self.model.present(p))
                    });
                match (&got, &want) {
                    (Ok(Some(e)), Ok(Some(p))) => check_event(ctx, e, &self.model, *p),
                    (Ok(None), Ok(None)) => {}
                    (Err(e), Err(w)) => check_err(ctx, e, w),
                    _ => panic!("{ctx}: store answered {got:?}, model expects {want:?}"),
                }
            }
            Op::List {
                prefix,
                after,
                limit,
            } => {
                let prefix = LIST_PREFIXES[*prefix];
                let mut after = after.map(|a| LIST_AFTERS[a].to_owned());
                for page in 0..16 {
                    let all = self.model.list(prefix, after.as_deref());
                    let want: Vec<_> = all.iter().take(*limit).cloned().collect();
                    let want_next = (all.len() > *limit).then(|| want[*limit - 1].0.clone());
                    let (got, next) = self
                        .store()
                        .list_streams(prefix, after.as_deref(), *limit)
                        .unwrap_or_else(|e| panic!("{ctx}: list_streams failed: {e:?}"));
                    let got: Vec<_> = got
                        .into_iter()
                        .map(|s| (s.name, s.last_revision, s.last_position))
                        .collect();
                    assert_eq!(got, want, "{ctx}: page {page} after {after:?}");
                    assert_eq!(
                        next, want_next,
                        "{ctx}: next of page {page} after {after:?}"
                    );
                    if next.is_none() {
                        break;
                    }
                    note("list_streams.next_page");
                    after = next;
                }
            }
            Op::Head { stream } => {
                let name = STREAMS[*stream];
                let got = self.store().head(name).expect("head");
                assert_eq!(got, self.model.head(name), "{ctx}: head");
                assert_eq!(
                    self.store().metadata(name).expect("metadata"),
                    self.model.head(name).metadata,
                    "{ctx}: metadata"
                );
            }
            Op::Scavenge => self.scavenge(ctx),
            Op::Reopen { drop_idx } => {
                let store = self.store.take().expect("store is open");
                store.close().expect("close");
                drop(store);
                let mut idx: Vec<_> = std::fs::read_dir(self.dir.path())
                    .expect("read_dir")
                    .map(|e| e.expect("dir entry").path())
                    .filter(|p| p.extension().is_some_and(|x| x == "idx"))
                    .collect();
                idx.sort();
                // After a scavenge too: the index of a scavenged segment is rebuilt from the
                // segment and its removed-events file (docs/on-disk-format.md).
                if self.scavenged && !matches!(drop_idx, DropIdx::None) {
                    note("reopen.index_rebuilt_after_scavenge");
                }
                let victims: Vec<_> = match drop_idx {
                    DropIdx::None => Vec::new(),
                    DropIdx::One(k) if !idx.is_empty() => vec![idx[k % idx.len()].clone()],
                    DropIdx::One(_) => Vec::new(),
                    DropIdx::All => idx,
                };
                for p in &victims {
                    std::fs::remove_file(p).expect("remove idx");
                }
                let store = Store::open(self.dir.path(), options(self.head_cache)).expect("reopen");
                if store.info().segment_count > 1 {
                    note("reopen.with_sealed_segments");
                }
                if !victims.is_empty() {
                    note("reopen.index_rebuilt");
                }
                // Merged index files, when 10 segments are sealed: the checks below read
                // through them.
                if store.merge_indexes().expect("merge indexes") > 0 {
                    note("reopen.merged_indexes");
                }
                self.store = Some(store);
                self.check_all(ctx);
                for p in &victims {
                    assert!(p.exists(), "{ctx}: index {p:?} was not rebuilt");
                }
            }
        }
        assert_eq!(
            self.store().next_position(),
            self.model.log.len() as u64,
            "{ctx}: next_position"
        );
    }

    /// Runs a scavenge, learns from `$all` which events it removed (each one the model allows),
    /// then compares everything.
    fn scavenge(&mut self, ctx: &str) {
        let p = self
            .store()
            .scavenge(strata_store::ScavengeOptions::default(), &mut |_| {})
            .unwrap_or_else(|e| panic!("{ctx}: scavenge: {e}"));
        let filter = AllFilter {
            include_system: true,
            ..AllFilter::default()
        };
        let all = self
            .store()
            .read_all(ReadFrom::Start, Direction::Forward, 100_000, &filter)
            .expect("read_all");
        let present: HashSet<u64> = all.events.iter().map(|e| e.position).collect();
        let mut removed = 0;
        for q in 0..self.model.log.len() as u64 {
            if !self.model.present(q) || present.contains(&q) {
                continue;
            }
            assert!(
                self.model.removable(q),
                "{ctx}: the scavenge removed position {q} ({:?}), which reads may return",
                self.model.log[q as usize]
            );
            self.model.removed.insert(q);
            removed += 1;
            // The ids of removed events of deleted streams are forgotten (those of streams
            // that still exist are remembered): a retry of such an append writes it again.
            let e = self.model.log[q as usize].clone();
            let s = self.model.stream(&e.stream);
            if s.deleted() {
                if let (Some(id), Some(st)) = (e.id, self.model.streams.get_mut(&e.stream)) {
                    st.ids.remove(&id);
                }
            }
        }
        assert_eq!(removed, p.events_removed, "{ctx}: events removed {p:?}");
        // The ids that earlier scavenges removed and remembered, of streams now deleted: this
        // scavenge drops them if it rewrites their segment.
        for st in self.model.streams.values_mut() {
            if st.deleted() {
                let removed_ids: Vec<Uuid> = st
                    .ids
                    .iter()
                    .filter(|(_, &r)| self.model.removed.contains(&st.positions[r as usize]))
                    .map(|(id, _)| *id)
                    .collect();
                st.maybe_forgotten.extend(removed_ids);
            }
        }
        if removed > 0 {
            self.scavenged = true;
            note("scavenge.removed");
        }
        self.check_all(ctx);
    }

    /// Compares the whole log, every head and every stream read.
    fn check_all(&self, ctx: &str) {
        let store = self.store();
        let filter = AllFilter {
            include_system: true,
            ..AllFilter::default()
        };
        let all = store
            .read_all(ReadFrom::Start, Direction::Forward, 100_000, &filter)
            .expect("read_all");
        let positions: Vec<u64> = (0..self.model.log.len() as u64)
            .filter(|&p| self.model.present(p))
            .collect();
        check_events(
            &format!("{ctx}: full log"),
            &all.events,
            &self.model,
            &positions,
        );
        for name in STREAMS {
            assert_eq!(
                store.head(name).expect("head"),
                self.model.head(name),
                "{ctx}: head of {name}"
            );
            let want = self
                .model
                .read_stream(name, ReadFrom::Start, Direction::Forward, 100_000);
            let got = store.read_stream(name, ReadFrom::Start, Direction::Forward, 100_000);
            match (&got, &want) {
                (Ok(slice), Ok((positions, _, _))) => check_events(
                    &format!("{ctx}: stream {name}"),
                    &slice.events,
                    &self.model,
                    positions,
                ),
                (Err(e), Err(w)) => check_err(ctx, e, w),
                _ => {
                    panic!("{ctx}: read of {name}: store answered {got:?}, model expects {want:?}")
                }
            }
        }
    }
}

fn run_ops(head_cache: usize, ops: &[Op]) {
    let mut h = Harness::new(head_cache);
    for (i, op) in ops.iter().enumerate() {
        h.run(i, op);
    }
    h.check_all("final");
    if h.store().info().segment_count > 2 {
        note("final.several_sealed_segments");
    }
}

/// Cases of [`store_matches_model`] when `PROPTEST_CASES` does not ask for more. Also the
/// least it runs: with fewer (or shorter, see [`MIN_OPS`]) cases the random sequences miss some
/// of the outcomes the test requires (64 cases of up to 40 ops missed one in about 2.5% of runs),
/// so a lower value would make the run flaky or, at 0, vacuous.
const MIN_CASES: u32 = 128;
/// Upper bound of ops per case when `STRATA_MODEL_OPS` does not ask for more; also the least.
const MIN_OPS: u32 = 40;

/// `name` from the environment as a number, `floor` when unset. A value below `floor` is
/// raised to it with a note on the real stderr (not the captured test output), so that a
/// setting meant to speed the suite up cannot make the test vacuous; a value that is not a
/// number is refused.
fn env_at_least(name: &str, floor: u32) -> u32 {
    let raw = match std::env::var(name) {
        Ok(raw) => raw,
        Err(std::env::VarError::NotPresent) => return floor,
        Err(e) => panic!("{name}: {e}"),
    };
    let n: u32 = raw
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{name}={raw:?} is not a count ({e})"));
    if n >= floor {
        return n;
    }
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "note: {name}={n} is below the least that store_matches_model runs; running {floor}"
    );
    floor
}

/// `PROPTEST_CASES` and `STRATA_MODEL_OPS` (max ops per case) can raise the defaults, never
/// lower them ([`env_at_least`]).
#[test]
fn store_matches_model() {
    let config = ProptestConfig {
        cases: env_at_least("PROPTEST_CASES", MIN_CASES),
        failure_persistence: None,
        max_shrink_iters: 4096,
        ..ProptestConfig::default()
    };
    let max_ops = env_at_least("STRATA_MODEL_OPS", MIN_OPS) as usize;
    let strategy = (
        prop_oneof![Just(0usize), Just(1), Just(2), Just(100_000)],
        prop::collection::vec(op_strategy(), 1..max_ops),
    );
    let mut runner = TestRunner::new(config);
    if let Err(e) = runner.run(&strategy, |(head_cache, ops)| {
        run_ops(head_cache, &ops);
        note("cases");
        Ok(())
    }) {
        panic!("{e}");
    }
    let stats = STATS.lock().unwrap().clone();
    println!("outcomes: {stats:#?}");
    let cases = stats.get("cases").copied().unwrap_or(0);
    assert!(
        cases >= u64::from(MIN_CASES),
        "only {cases} cases ran (the least is {MIN_CASES})"
    );
    for key in [
        "append.write",
        "append.replay",
        "append.after_soft_delete",
        "delete.soft",
        "delete.hard",
        "metadata.set",
        "error.wrong_expected_revision",
        "error.duplicate_event_id",
        "error.stream_deleted",
        "error.stream_not_found",
        "error.invalid_input",
        "batch.concurrent_writers",
        "read_stream.with_hidden_events",
        "read_stream.next_page",
        "read_all.next_page",
        "list_streams.next_page",
        "reopen.with_sealed_segments",
        "reopen.index_rebuilt",
        "final.several_sealed_segments",
        "scavenge.removed",
    ] {
        assert!(
            stats.get(key).copied().unwrap_or(0) > 0,
            "the generated operations never reached {key}: {stats:#?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Directed cases: the rules above that random sequences reach only rarely
// ---------------------------------------------------------------------------------------------

fn ev(id: u128) -> NewEvent {
    NewEvent::json(
        "T1",
        format!("{{\"id\":{id},\"pad\":\"{}\"}}", "p".repeat(300)),
    )
    .with_id(Uuid::from_u128(id))
}

fn dup_id(r: strata_store::Result<strata_store::AppendResult>) -> Uuid {
    match r {
        Err(Error::DuplicateEventId { id, .. }) => id,
        other => panic!("expected DuplicateEventId, got {other:?}"),
    }
}

#[test]
fn idempotency_rules_survive_reopen_and_soft_delete() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path(), options(100_000)).unwrap();
    let s = "acct-1";
    let first = store
        .append(s, ExpectedRevision::NoStream, vec![ev(1), ev(2)])
        .unwrap();
    assert!(!first.idempotent_replay);
    store.append(s, ExpectedRevision::Any, vec![ev(3)]).unwrap();
    for round in 0..2 {
        // Same run where the expectation says it starts: the original answer, nothing written.
        let end = store.next_position();
        for expected in [
            ExpectedRevision::NoStream,
            ExpectedRevision::Any,
            ExpectedRevision::StreamExists,
        ] {
            let r = store.append(s, expected, vec![ev(1), ev(2)]).unwrap();
            assert!(r.idempotent_replay, "round {round} {expected:?}");
            assert_eq!(
                (
                    r.first_revision,
                    r.last_revision,
                    r.first_position,
                    r.last_position
                ),
                (0, 1, first.first_position, first.last_position),
                "round {round} {expected:?}"
            );
        }
        let r = store
            .append(s, ExpectedRevision::Exact(0), vec![ev(2), ev(3)])
            .unwrap();
        assert!(r.idempotent_replay);
        assert_eq!((r.first_revision, r.last_revision), (1, 2));
        // Not starting where the expectation says, not in order, not contiguous, or partly new.
        assert_eq!(
            dup_id(store.append(s, ExpectedRevision::Exact(1), vec![ev(1), ev(2)])),
            Uuid::from_u128(1)
        );
        dup_id(store.append(s, ExpectedRevision::NoStream, vec![ev(2), ev(3)]));
        dup_id(store.append(s, ExpectedRevision::Any, vec![ev(2), ev(1)]));
        dup_id(store.append(s, ExpectedRevision::Any, vec![ev(1), ev(3)]));
        dup_id(store.append(s, ExpectedRevision::Any, vec![ev(3), ev(4)]));
        dup_id(store.append(s, ExpectedRevision::Any, vec![ev(4), ev(3)]));
        assert_eq!(
            store.next_position(),
            end,
            "round {round}: a refused append wrote"
        );
        // Fill segments so that the ids live in sealed segments and index files after reopen.
        for k in 0..20 {
            store
                .append("filler", ExpectedRevision::Any, vec![ev(1000 + k)])
                .unwrap();
        }
        store.close().unwrap();
        drop(store);
        for e in std::fs::read_dir(dir.path()).unwrap() {
            let p = e.unwrap().path();
            if round == 1 && p.extension().is_some_and(|x| x == "idx") {
                std::fs::remove_file(p).unwrap();
            }
        }
        store = Store::open(dir.path(), options(100_000)).unwrap();
        assert!(store.info().segment_count > 2, "{:?}", store.info());
    }
    // Ids are per stream.
    let other = store
        .append("acct-2", ExpectedRevision::NoStream, vec![ev(1), ev(2)])
        .unwrap();
    assert!(!other.idempotent_replay);
    assert_eq!(other.first_revision, 0);

    // Soft delete, then re-create with NoStream: revisions continue, old events stay hidden,
    // and a retry of the re-creating append is recognised.
    let del = store
        .delete_stream(s, ExpectedRevision::Exact(2), false)
        .unwrap();
    match store.append(s, ExpectedRevision::Exact(2), vec![ev(5)]) {
        Err(Error::WrongExpectedRevision { expected, actual }) => {
            assert_eq!(expected, ExpectedRevision::Exact(2));
            assert_eq!(actual, CurrentRevision::NoStream);
        }
        other => panic!("Exact on a soft-deleted stream: {other:?}"),
    }
    assert!(matches!(
        store.read_stream(s, ReadFrom::Start, Direction::Forward, 10),
        Err(Error::StreamDeleted { .. })
    ));
    let re = store
        .append(s, ExpectedRevision::NoStream, vec![ev(5), ev(6)])
        .unwrap();
    assert_eq!(
        (re.first_revision, re.first_position),
        (3, del.position + 1)
    );
    let retry = store
        .append(s, ExpectedRevision::NoStream, vec![ev(5), ev(6)])
        .unwrap();
    assert!(retry.idempotent_replay);
    assert_eq!(retry.first_position, re.first_position);
    let page = store
        .read_stream(s, ReadFrom::Start, Direction::Forward, 10)
        .unwrap();
    let revs: Vec<u64> = page.events.iter().map(|e| e.revision).collect();
    assert_eq!(revs, [3, 4]);
    assert_eq!(store.read_event(s, 0).unwrap(), None);

    // The deletion record is a `$$` event at the returned position, visible only with system events.
    let sys = store
        .read_all(
            ReadFrom::At(del.position),
            Direction::Forward,
            1,
            &AllFilter {
                include_system: true,
                ..AllFilter::default()
            },
        )
        .unwrap();
    assert_eq!(sys.events[0].position, del.position);
    assert_eq!(sys.events[0].stream, format!("$${s}"));
    let user = store
        .read_all(
            ReadFrom::At(del.position),
            Direction::Forward,
            1,
            &AllFilter::default(),
        )
        .unwrap();
    assert_eq!(user.events[0].position, re.first_position);

    // Hard delete: everything answers StreamDeleted, even a retry of an earlier append.
    store
        .delete_stream(s, ExpectedRevision::StreamExists, true)
        .unwrap();
    for r in [
        store.append(s, ExpectedRevision::Any, vec![ev(5), ev(6)]),
        store.append(s, ExpectedRevision::NoStream, vec![ev(7)]),
    ] {
        assert!(matches!(r, Err(Error::StreamDeleted { .. })), "{r:?}");
    }
    assert!(matches!(
        store.delete_stream(s, ExpectedRevision::Any, true),
        Err(Error::StreamDeleted { .. })
    ));
    assert!(matches!(
        store.set_metadata(s, StreamMetadata::default()),
        Err(Error::StreamDeleted { .. })
    ));
    assert!(matches!(
        store.read_event(s, 3),
        Err(Error::StreamDeleted { .. })
    ));
}

/// Found by `store_matches_model` (about 1 run in 100): a scavenge removes an event of a live
/// stream and keeps its id; the stream is soft-deleted; a second scavenge rewrites the segment
/// and drops the id (a deleted stream keeps only its head entries), so a retry writes again.
/// The model cannot tell whether that second rewrite happened: the store's answer decides.
#[test]
fn ids_kept_by_a_scavenge_may_be_dropped_once_the_stream_is_deleted() {
    let e = |id: Option<usize>, metadata: bool, pad: usize| Ev {
        id,
        ty: 0,
        binary: false,
        metadata,
        pad,
    };
    let append = |stream: usize, events: Vec<Ev>| Op::Append {
        stream,
        exp: Exp::Any,
        events,
        invalid: None,
    };
    let ops = vec![
        append(
            2,
            vec![
                e(None, false, 508),
                e(None, false, 34),
                e(None, false, 0),
                e(Some(0), false, 261),
            ],
        ),
        append(
            1,
            vec![
                e(Some(4), false, 9),
                e(None, true, 26),
                e(None, false, 1040),
            ],
        ),
        append(
            1,
            vec![e(None, false, 21), e(None, false, 19), e(None, false, 14)],
        ),
        Op::SetMeta {
            stream: 1,
            max_count: Some(0),
            truncate_before: None,
            max_age: false,
            custom: true,
        },
        append(0, vec![e(None, true, 867), e(None, false, 21)]),
        Op::Scavenge,
        Op::Delete {
            stream: 1,
            exp: Exp::Any,
            hard: false,
        },
        Op::Scavenge,
        // The first write to `a-2` (ids 4, then generated ones).
        Op::Retry {
            pick: 1,
            any: false,
        },
    ];
    run_ops(0, &ops);
}
