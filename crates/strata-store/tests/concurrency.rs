//! Concurrency tests of the store's public API: optimistic concurrency under contention,
//! dense positions and revisions with many writers, idempotent retries racing each other, and
//! readers and subscriptions running while writers commit.
//!
//! Small segments make the writer seal segments while readers are reading.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use strata_store::{
    AllFilter, AppendResult, CurrentRevision, Direction, Error, ExpectedRevision, FsyncPolicy,
    NewEvent, Options, ReadFrom, RecordedEvent, Store,
};
use uuid::Uuid;

use common::all_page;

fn options() -> Options {
    Options {
        segment_size: 32 * 1024,
        fsync: FsyncPolicy::Never,
        ..Options::default()
    }
}

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), options()).expect("open");
    (dir, store)
}

/// Every event of the log, in position order (pages of 1000).
fn read_whole_log(store: &Store, filter: &AllFilter) -> Vec<RecordedEvent> {
    let mut out = Vec::new();
    let mut from = ReadFrom::Start;
    loop {
        let page = store
            .read_all(from, Direction::Forward, 1000, filter)
            .expect("read_all");
        out.extend(page.events);
        if page.end {
            return out;
        }
        from = ReadFrom::At(page.next.expect("next"));
    }
}

fn read_whole_stream(store: &Store, stream: &str) -> Vec<RecordedEvent> {
    store
        .read_stream(stream, ReadFrom::Start, Direction::Forward, 1_000_000)
        .expect("read_stream")
        .events
}

/// Many threads race `Exact(head)` appends on one stream, round after round.
#[test]
fn racing_exact_appends_have_one_winner_per_revision() {
    const THREADS: usize = 12;
    const ROUNDS: usize = 40;
    let (_dir, store) = open();
    let barrier = Barrier::new(THREADS);
    // Winners as ((thread, round), result); losers are counted.
    let (wins, losses) = thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (store, barrier) = (&store, &barrier);
                s.spawn(move || {
                    let mut wins = Vec::new();
                    let mut losses = 0usize;
                    let mut problems = Vec::new();
                    for round in 0..ROUNDS {
                        barrier.wait();
                        let head = match store.head("race") {
                            Ok(h) => h,
                            Err(e) => {
                                problems.push(format!("head: {e:?}"));
                                continue;
                            }
                        };
                        let expected = match head.last_revision {
                            None => ExpectedRevision::NoStream,
                            Some(r) => ExpectedRevision::Exact(r),
                        };
                        let event =
                            NewEvent::json("Raced", format!("{{\"t\":{t},\"round\":{round}}}"));
                        // Problems are collected, not panicked on: a panicking thread would
                        // leave the others waiting at the barrier forever.
                        let sent = head.last_revision.map_or(0, |r| r + 1);
                        match store.append("race", expected, vec![event]) {
                            Ok(r) => {
                                if r.idempotent_replay
                                    || (r.first_revision, r.last_revision) != (sent, sent)
                                    || r.first_position != r.last_position
                                {
                                    problems
                                        .push(format!("winner {t}/{round} after {head:?}: {r:?}"));
                                }
                                wins.push(((t, round), r));
                            }
                            Err(Error::WrongExpectedRevision {
                                expected: e,
                                actual,
                            }) => {
                                // Someone else appended after this thread read the head.
                                let past =
                                    matches!(actual, CurrentRevision::Revision(a) if a >= sent);
                                if e != expected || !past {
                                    problems.push(format!(
                                        "loser {t}/{round} sent {expected:?} after {head:?}: \
                                         expected {e:?}, actual {actual:?}"
                                    ));
                                }
                                losses += 1;
                            }
                            Err(e) => problems.push(format!("{t}/{round}: unexpected error {e:?}")),
                        }
                    }
                    (wins, losses, problems)
                })
            })
            .collect();
        let mut wins = Vec::new();
        let mut losses = 0;
        let mut problems = Vec::new();
        for h in handles {
            let (w, l, p) = h.join().expect("thread");
            wins.extend(w);
            losses += l;
            problems.extend(p);
        }
        assert!(problems.is_empty(), "{problems:#?}");
        (wins, losses)
    });
    assert_eq!(wins.len() + losses, THREADS * ROUNDS);
    assert!(wins.len() >= ROUNDS, "at least one winner per round");
    assert!(losses > 0, "the threads never actually raced");
    // Exactly one winner per revision: revisions 0..wins are each won once.
    let mut by_rev: BTreeMap<u64, ((usize, usize), AppendResult)> = BTreeMap::new();
    for (who, r) in &wins {
        if let Some(prev) = by_rev.insert(r.first_revision, (*who, *r)) {
            panic!(
                "revision {} won twice: {prev:?} and {who:?}",
                r.first_revision
            );
        }
    }
    let revs: Vec<u64> = by_rev.keys().copied().collect();
    assert_eq!(revs, (0..wins.len() as u64).collect::<Vec<_>>());
    // The stream holds exactly the winners' events.
    let events = read_whole_stream(&store, "race");
    assert_eq!(events.len(), wins.len());
    for e in &events {
        let ((t, round), r) = by_rev[&e.revision];
        assert_eq!(e.position, r.first_position, "{e:?}");
        assert_eq!(
            e.data,
            format!("{{\"t\":{t},\"round\":{round}}}").into_bytes(),
            "revision {} holds another thread's event",
            e.revision
        );
    }
    assert_eq!(store.next_position(), wins.len() as u64);
}

/// Many threads append with `Any` to many streams: positions are dense and unique, each
/// append's events are contiguous, each stream's revisions are dense.
#[test]
fn concurrent_appends_to_many_streams_are_dense() {
    const THREADS: usize = 16;
    const APPENDS: usize = 150;
    const STREAMS: usize = 24;
    let (_dir, store) = open();
    let results: Vec<(String, Vec<Uuid>, AppendResult)> = thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let store = &store;
                s.spawn(move || {
                    let mut out = Vec::new();
                    for i in 0..APPENDS {
                        let stream = format!("s{}-{}", (t + i) % 3, (t * 7 + i * 5) % STREAMS);
                        let n = 1 + (t + i) % 3;
                        let ids: Vec<Uuid> = (0..n).map(|_| Uuid::new_v4()).collect();
                        let events = ids
                            .iter()
                            .map(|&id| {
                                NewEvent::json("E", format!("{{\"t\":{t},\"i\":{i}}}")).with_id(id)
                            })
                            .collect();
                        let r = store
                            .append(&stream, ExpectedRevision::Any, events)
                            .expect("append");
                        assert!(!r.idempotent_replay);
                        assert_eq!(r.last_position - r.first_position + 1, n as u64);
                        assert_eq!(r.last_revision - r.first_revision + 1, n as u64);
                        out.push((stream, ids, r));
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("thread"))
            .collect()
    });
    // Positions: every position below the end is owned by exactly one append.
    let mut owner: BTreeMap<u64, (String, u64, Uuid)> = BTreeMap::new();
    for (stream, ids, r) in &results {
        for (k, id) in ids.iter().enumerate() {
            let p = r.first_position + k as u64;
            let prev = owner.insert(p, (stream.clone(), r.first_revision + k as u64, *id));
            assert!(prev.is_none(), "position {p} assigned twice");
        }
    }
    let total = owner.len() as u64;
    assert_eq!(
        owner.keys().copied().collect::<Vec<_>>(),
        (0..total).collect::<Vec<_>>()
    );
    assert_eq!(store.next_position(), total);
    // Revisions: dense per stream.
    let mut revs: HashMap<&str, Vec<u64>> = HashMap::new();
    for (stream, rev, _) in owner.values() {
        revs.entry(stream).or_default().push(*rev);
    }
    for (stream, mut rs) in revs {
        rs.sort_unstable();
        assert_eq!(
            rs,
            (0..rs.len() as u64).collect::<Vec<_>>(),
            "revisions of {stream}"
        );
        let events = read_whole_stream(&store, stream);
        assert_eq!(events.len(), rs.len(), "{stream}");
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e.revision, i as u64);
            assert_eq!(owner[&e.position], (stream.to_owned(), e.revision, e.id));
        }
    }
    // The log read back is exactly what the writers were told.
    let all = read_whole_log(&store, &AllFilter::default());
    assert_eq!(all.len() as u64, total);
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e.position, i as u64);
        assert_eq!(owner[&e.position], (e.stream.clone(), e.revision, e.id));
    }
    assert!(store.info().segment_count > 2, "{:?}", store.info());
}

/// Several threads send the same append (same ids) at once, round after round: exactly one
/// writes, the others get the original result back as an idempotent replay.
#[test]
fn concurrent_retries_of_one_append_write_once() {
    const THREADS: usize = 8;
    const ROUNDS: usize = 30;
    let (_dir, store) = open();
    let barrier = Barrier::new(THREADS);
    let mut expected_log: Vec<Uuid> = Vec::new();
    for round in 0..ROUNDS {
        let n = 1 + round % 3;
        let ids: Vec<Uuid> = (0..n).map(|_| Uuid::new_v4()).collect();
        let head = store.head("retry").expect("head").last_revision;
        let expected = match (round % 3, head) {
            (_, None) => ExpectedRevision::NoStream,
            (0, Some(r)) => ExpectedRevision::Exact(r),
            (1, Some(_)) => ExpectedRevision::StreamExists,
            _ => ExpectedRevision::Any,
        };
        let results: Vec<AppendResult> = thread::scope(|s| {
            let handles: Vec<_> = (0..THREADS)
                .map(|_| {
                    let (store, barrier, ids) = (&store, &barrier, &ids);
                    s.spawn(move || {
                        let events = ids
                            .iter()
                            .enumerate()
                            .map(|(k, &id)| {
                                NewEvent::json("Paid", format!("{{\"round\":{round},\"k\":{k}}}"))
                                    .with_id(id)
                            })
                            .collect();
                        barrier.wait();
                        store
                            .append("retry", expected, events)
                            .unwrap_or_else(|e| panic!("round {round} {expected:?}: {e:?}"))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("thread"))
                .collect()
        });
        let writes: Vec<_> = results.iter().filter(|r| !r.idempotent_replay).collect();
        assert_eq!(writes.len(), 1, "round {round}: {results:?}");
        let w = writes[0];
        let first_rev = head.map_or(0, |r| r + 1);
        assert_eq!(w.first_revision, first_rev);
        for r in &results {
            assert_eq!(
                (
                    r.first_revision,
                    r.last_revision,
                    r.first_position,
                    r.last_position
                ),
                (
                    w.first_revision,
                    w.last_revision,
                    w.first_position,
                    w.last_position
                ),
                "round {round}: a replay answered another result"
            );
        }
        expected_log.extend(&ids);
    }
    let events = read_whole_stream(&store, "retry");
    let ids: Vec<Uuid> = events.iter().map(|e| e.id).collect();
    assert_eq!(
        ids, expected_log,
        "each append written exactly once, in order"
    );
    assert_eq!(store.next_position(), expected_log.len() as u64);
}

/// Sets its flag when dropped, also when the thread owning it panics.
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// What a writer was told about one append.
#[derive(Clone, Debug)]
struct Written {
    stream: String,
    revision: u64,
    data: Vec<u8>,
}

/// Readers (paged `$all` reads both ways, stream reads, heads) and subscriptions (whole log,
/// filtered, one stream) run while writers append: every reader sees a gapless, duplicate-free
/// prefix of the log, and the subscriptions end with exactly the committed events.
#[test]
fn readers_and_subscriptions_see_a_gapless_log_while_writers_run() {
    const WRITERS: usize = 8;
    const APPENDS: usize = 120;
    const DEADLINE: Duration = Duration::from_secs(60);
    let (_dir, store) = open();
    let done = Arc::new(AtomicBool::new(false));
    // Events the whole-log subscription has received; writers wait for it half way through, so
    // that it is certainly live while they write.
    let sub_seen = AtomicU64::new(0);
    let sub_exited = AtomicBool::new(false);
    let written: Mutex<BTreeMap<u64, Written>> = Mutex::new(BTreeMap::new());
    let start = Instant::now();
    let category_filter = AllFilter {
        category: Some("cat1".into()),
        ..AllFilter::default()
    };

    thread::scope(|s| {
        // A subscription to the whole log from position 0.
        let sub_all = {
            let (store, done, sub_seen, sub_exited) =
                (&store, done.clone(), &sub_seen, &sub_exited);
            s.spawn(move || {
                let _exited = SetOnDrop(sub_exited);
                let mut sub = store.subscribe_all(0, AllFilter::default());
                let mut got: Vec<RecordedEvent> = Vec::new();
                // Non-empty batches received while writers were still running.
                let mut live_batches = 0u64;
                loop {
                    let finished = done.load(Ordering::Acquire);
                    let batch = sub.poll(97).expect("poll");
                    if !finished && !batch.is_empty() {
                        live_batches += 1;
                    }
                    for e in batch {
                        assert_eq!(
                            e.position,
                            got.len() as u64,
                            "subscription: gap or duplicate"
                        );
                        got.push(e);
                    }
                    sub_seen.store(got.len() as u64, Ordering::Release);
                    if finished && got.len() as u64 == store.next_position() {
                        return (got, live_batches);
                    }
                    assert!(
                        start.elapsed() < DEADLINE,
                        "subscription stuck at {}",
                        got.len()
                    );
                    if !finished {
                        sub.wait_blocking(Some(Duration::from_millis(200)))
                            .expect("wait");
                    }
                }
            })
        };
        // A filtered subscription, and one on a single stream.
        let sub_cat = {
            let (store, done, filter) = (&store, done.clone(), category_filter.clone());
            s.spawn(move || {
                let mut sub = store.subscribe_all(0, filter);
                let mut got: Vec<RecordedEvent> = Vec::new();
                loop {
                    let finished = done.load(Ordering::Acquire);
                    let batch = sub
                        .next_batch_blocking(50, Some(Duration::from_millis(50)))
                        .expect("next_batch_blocking");
                    for e in batch {
                        if let Some(last) = got.last() {
                            assert!(
                                e.position > last.position,
                                "filtered subscription went back"
                            );
                        }
                        assert!(e.stream.starts_with("cat1-"), "{e:?}");
                        got.push(e);
                    }
                    if finished && sub.cursor() >= store.next_position() && !sub.has_new_commits() {
                        // One last poll after the writers are done, then stop.
                        got.extend(sub.poll(100_000).expect("poll"));
                        return got;
                    }
                    assert!(start.elapsed() < DEADLINE, "filtered subscription stuck");
                }
            })
        };
        let sub_stream = {
            let (store, done) = (&store, done.clone());
            s.spawn(move || {
                let mut sub = store.subscribe_stream("cat0-0", 0);
                let mut got: Vec<RecordedEvent> = Vec::new();
                loop {
                    let finished = done.load(Ordering::Acquire);
                    for e in sub.poll(13).expect("poll") {
                        assert_eq!(e.revision, got.len() as u64, "stream subscription");
                        got.push(e);
                    }
                    if finished {
                        let last = store.head("cat0-0").expect("head").last_revision;
                        if last.map_or(0, |r| r + 1) == got.len() as u64 {
                            return got;
                        }
                    }
                    assert!(start.elapsed() < DEADLINE, "stream subscription stuck");
                    if !finished {
                        sub.wait_blocking(Some(Duration::from_millis(200)))
                            .expect("wait");
                    }
                }
            })
        };
        // Readers paging through `$all` both ways and reading streams and heads.
        let readers: Vec<_> = (0..2)
            .map(|r| {
                let (store, done) = (&store, done.clone());
                s.spawn(move || {
                    let mut passes = 0u64;
                    let mut last_len = 0u64;
                    let mut last_head: HashMap<String, u64> = HashMap::new();
                    while !done.load(Ordering::Acquire) || passes < 2 {
                        passes += 1;
                        // Forward, paged: positions 0, 1, 2, … with no gap or duplicate.
                        let mut from = ReadFrom::Start;
                        let mut n = 0u64;
                        loop {
                            let page = store
                                .read_all(from, Direction::Forward, 37 + r, &AllFilter::default())
                                .expect("read_all");
                            for e in &page.events {
                                assert_eq!(e.position, n, "forward read: gap or duplicate");
                                n += 1;
                            }
                            if page.end {
                                break;
                            }
                            from = ReadFrom::At(page.next.expect("next"));
                        }
                        assert!(n >= last_len, "the log shrank from {last_len} to {n}");
                        last_len = n;
                        // Backward from the end, one page: contiguous descending positions.
                        let page = all_page(store, ReadFrom::End, Direction::Backward, 50)
                            .expect("read_all backward");
                        for w in page.events.windows(2) {
                            assert_eq!(w[0].position, w[1].position + 1, "backward read gap");
                        }
                        // Streams: dense revisions from 0, increasing positions; heads never go back.
                        for k in 0..4 {
                            let name = format!("cat{}-{}", k % 2, k);
                            let events = match store.read_stream(
                                &name,
                                ReadFrom::Start,
                                Direction::Forward,
                                100_000,
                            ) {
                                Ok(slice) => slice.events,
                                Err(Error::StreamNotFound { .. }) => Vec::new(),
                                Err(e) => panic!("read_stream {name}: {e:?}"),
                            };
                            for (i, e) in events.iter().enumerate() {
                                assert_eq!(e.revision, i as u64, "{name}: revisions not dense");
                            }
                            for w in events.windows(2) {
                                assert!(w[0].position < w[1].position, "{name}: positions");
                            }
                            if let Some(rev) = store.head(&name).expect("head").last_revision {
                                let prev = last_head.insert(name.clone(), rev);
                                assert!(prev.is_none_or(|p| p <= rev), "{name}: head went back");
                            }
                        }
                        assert!(start.elapsed() < DEADLINE, "reader too slow");
                    }
                    passes
                })
            })
            .collect();
        // The writers.
        let writers: Vec<_> = (0..WRITERS)
            .map(|t| {
                let (store, written, sub_seen, sub_exited) =
                    (&store, &written, &sub_seen, &sub_exited);
                s.spawn(move || {
                    for i in 0..APPENDS {
                        if i == APPENDS / 2 {
                            while sub_seen.load(Ordering::Acquire) == 0
                                && !sub_exited.load(Ordering::Acquire)
                            {
                                assert!(start.elapsed() < DEADLINE, "subscription never started");
                                thread::sleep(Duration::from_millis(1));
                            }
                        }
                        let stream = format!("cat{}-{}", (t + i) % 2, (t * 3 + i) % 6);
                        let n = 1 + (t * 5 + i) % 3;
                        let datas: Vec<Vec<u8>> = (0..n)
                            .map(|k| format!("{{\"t\":{t},\"i\":{i},\"k\":{k}}}").into_bytes())
                            .collect();
                        let events = datas
                            .iter()
                            .map(|d| NewEvent::json("W", d.clone()))
                            .collect();
                        let r = store
                            .append(&stream, ExpectedRevision::Any, events)
                            .expect("append");
                        let mut w = written.lock().expect("lock");
                        for (k, data) in datas.into_iter().enumerate() {
                            w.insert(
                                r.first_position + k as u64,
                                Written {
                                    stream: stream.clone(),
                                    revision: r.first_revision + k as u64,
                                    data,
                                },
                            );
                        }
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().expect("writer");
        }
        done.store(true, Ordering::Release);

        let written = written.lock().expect("lock").clone();
        let total = written.len() as u64;
        assert_eq!(store.next_position(), total);
        assert_eq!(
            written.keys().copied().collect::<Vec<_>>(),
            (0..total).collect::<Vec<_>>(),
            "acknowledged positions are not dense"
        );
        let matches = |e: &RecordedEvent| {
            let w = &written[&e.position];
            e.stream == w.stream && e.revision == w.revision && e.data == w.data
        };

        let (all, live_batches) = sub_all.join().expect("subscription");
        assert_eq!(all.len() as u64, total);
        for e in &all {
            assert!(
                matches(e),
                "subscription delivered {e:?}, writer was told {:?}",
                written[&e.position]
            );
        }
        assert!(
            live_batches > 0,
            "the subscription received nothing while writers ran"
        );

        let cat: Vec<u64> = sub_cat
            .join()
            .expect("filtered")
            .iter()
            .map(|e| e.position)
            .collect();
        let want: Vec<u64> = written
            .iter()
            .filter(|(_, w)| w.stream.starts_with("cat1-"))
            .map(|(&p, _)| p)
            .collect();
        assert_eq!(cat, want, "filtered subscription");

        let one = sub_stream.join().expect("stream subscription");
        let want: Vec<u64> = written
            .iter()
            .filter(|(_, w)| w.stream == "cat0-0")
            .map(|(&p, _)| p)
            .collect();
        assert!(!want.is_empty());
        assert_eq!(one.iter().map(|e| e.position).collect::<Vec<_>>(), want);
        assert!(one.iter().all(matches));

        for r in readers {
            assert!(r.join().expect("reader") >= 2);
        }
        // Readers saw every event; a final read agrees with the writers.
        let log = read_whole_log(&store, &AllFilter::default());
        assert_eq!(log.len() as u64, total);
        assert!(log.iter().all(matches));
        let streams: HashSet<&str> = written.values().map(|w| w.stream.as_str()).collect();
        assert_eq!(streams.len(), 6);
    });
    assert!(store.info().segment_count > 2, "{:?}", store.info());
}

/// Stream reads and stream subscriptions racing appends that seal a segment every few events:
/// a forward page never skips a revision (`next` continues right after the last event
/// returned), and a stream subscription delivers every revision exactly once.
///
/// A regression test: a reader loads the published end, then the segment set; when the writer
/// commits a group and seals its segment in between, the newly sealed segment holds positions
/// past the reader's end, and the stream's head must be taken below that end (it once was not,
/// and forward pages skipped revisions). Runs several rounds: one round hit the race 10–20% of
/// the time on 2 cores.
#[test]
fn stream_reads_never_skip_revisions_across_segment_seals() {
    for round in 0..5 {
        let skipped = race_stream_reads_with_seals();
        assert!(
            skipped.is_empty(),
            "round {round}: {} skips, first ones: {:#?}",
            skipped.len(),
            &skipped[..skipped.len().min(5)]
        );
    }
}

/// One round of [`stream_reads_never_skip_revisions_across_segment_seals`]; returns the skips.
fn race_stream_reads_with_seals() -> Vec<String> {
    const WRITERS: usize = 3;
    const APPENDS: usize = 250;
    const DEADLINE: Duration = Duration::from_secs(60);
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(
        dir.path(),
        Options {
            segment_size: 4096,
            fsync: FsyncPolicy::Never,
            ..Options::default()
        },
    )
    .expect("open");
    let done = AtomicBool::new(false);
    let start = Instant::now();
    let pad = "x".repeat(700);
    let skipped = Mutex::new(Vec::new());
    thread::scope(|s| {
        for _ in 0..2 {
            let (store, done, skipped) = (&store, &done, &skipped);
            s.spawn(move || {
                let mut sub = store.subscribe_stream("hot", 0);
                let mut next = 0u64;
                loop {
                    let finished = done.load(Ordering::Acquire);
                    for e in sub.poll(1000).expect("poll") {
                        if e.revision != next {
                            skipped
                                .lock()
                                .expect("lock")
                                .push(format!("subscription expected {next}, got {}", e.revision));
                        }
                        next = e.revision + 1;
                    }
                    let last = store.head("hot").expect("head").last_revision;
                    if finished && last.map_or(0, |r| r + 1) <= next {
                        return;
                    }
                    assert!(start.elapsed() < DEADLINE, "subscription stuck at {next}");
                }
            });
        }
        {
            let (store, done, skipped) = (&store, &done, &skipped);
            s.spawn(move || {
                while !done.load(Ordering::Acquire) {
                    let mut from = 0u64;
                    loop {
                        let page = match store.read_stream(
                            "hot",
                            ReadFrom::At(from),
                            Direction::Forward,
                            1000,
                        ) {
                            Ok(p) => p,
                            Err(Error::StreamNotFound { .. }) => break,
                            Err(e) => panic!("read_stream: {e:?}"),
                        };
                        let after = page.events.last().map_or(from, |e| e.revision + 1);
                        if page.next != Some(after) {
                            skipped.lock().expect("lock").push(format!(
                                "read from {from}: {} events up to revision {after}, next {:?}",
                                page.events.len(),
                                page.next
                            ));
                        }
                        if page.end {
                            break;
                        }
                        from = page.next.expect("next");
                    }
                }
            });
        }
        let writers: Vec<_> = (0..WRITERS)
            .map(|t| {
                let (store, pad) = (&store, &pad);
                s.spawn(move || {
                    for i in 0..APPENDS {
                        let e = NewEvent::json(
                            "Hot",
                            format!("{{\"t\":{t},\"i\":{i},\"p\":\"{pad}\"}}"),
                        );
                        store
                            .append("hot", ExpectedRevision::Any, vec![e])
                            .expect("append");
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().expect("writer");
        }
        done.store(true, Ordering::Release);
    });
    assert!(store.info().segment_count > 50, "{:?}", store.info());
    skipped.into_inner().expect("lock")
}
