//! The writer driven directly, without its thread: each `process` call is one group, so the
//! requests of a batch see each other through the group's overlay.

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use uuid::Uuid;

use super::{Request, Writer};
use crate::error::{Error, Result};
use crate::event::{
    AllFilter, AppendResult, CurrentRevision, DeleteResult, Direction, ExpectedRevision, NewEvent,
    ReadFrom, StreamMetadata,
};
use crate::frame::{encode_segment_header, SEGMENT_HEADER_LEN};
use crate::log::{LogState, Shared};
use crate::memtable::Memtable;
use crate::options::{FsyncPolicy, Options};
use crate::segment::{segment_file_name, OpenSegment};
use crate::stats::Stats;
use crate::Store;

/// A writer over a fresh data directory (one empty segment), as `Store::open` would start it.
pub(super) struct Harness {
    pub writer: Writer,
    pub dir: tempfile::TempDir,
}

impl Harness {
    pub fn new(options: Options) -> Harness {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join(segment_file_name(0));
        let mut file = options.file_io.open_append(&path).expect("create segment");
        file.write_all(&encode_segment_header(0))
            .expect("write segment header");
        let open = OpenSegment::open(
            &path,
            0,
            Memtable::empty(SEGMENT_HEADER_LEN),
            options.segment_size,
        )
        .expect("open segment");
        let shared = Arc::new(Shared {
            dir: dir.path().to_owned(),
            state: RwLock::new(Arc::new(LogState {
                sealed: Vec::new(),
                open: Arc::new(open),
            })),
            committed: AtomicU64::new(0),
            read_only: AtomicBool::new(false),
            fault: Mutex::new(None),
            disk_full: Default::default(),
            damage: Default::default(),
            closed: AtomicBool::new(false),
            commits: event_listener::Event::new(),
            stats: Stats::default(),
            scavenge: Default::default(),
            merged: Default::default(),
            heads_epoch: AtomicU64::new(0),
            caller_spin: Default::default(),
            callers_waiting: Default::default(),
            options,
        });
        Harness {
            writer: Writer::new(shared, file, SEGMENT_HEADER_LEN),
            dir,
        }
    }

    /// Runs `requests` as one group.
    pub fn group(&mut self, requests: Vec<Request>) {
        assert!(self.writer.process(requests).is_none());
    }

    /// Syncs, drops the writer and opens the directory as a store (recovery from disk).
    pub fn reopen(mut self) -> (Store, tempfile::TempDir) {
        self.writer.final_sync().expect("final sync");
        drop(self.writer);
        let store = Store::open(self.dir.path(), Options::default()).expect("reopen");
        (store, self.dir)
    }
}

pub(super) fn options() -> Options {
    Options {
        fsync: FsyncPolicy::Never,
        ..Options::default()
    }
}

type Answer<T> = oneshot::Receiver<Result<T>>;

pub(super) fn append(
    stream: &str,
    expected: ExpectedRevision,
    events: Vec<NewEvent>,
) -> (Request, Answer<AppendResult>) {
    let (reply, rx) = oneshot::channel();
    let req = Request::Append {
        stream: stream.into(),
        expected,
        events,
        reply,
    };
    (req, rx)
}

fn delete(stream: &str, expected: ExpectedRevision, hard: bool) -> (Request, Answer<DeleteResult>) {
    let (reply, rx) = oneshot::channel();
    let req = Request::Delete {
        stream: stream.into(),
        expected,
        hard,
        reply,
    };
    (req, rx)
}

fn set_metadata(stream: &str) -> (Request, Answer<DeleteResult>) {
    let (reply, rx) = oneshot::channel();
    let req = Request::SetMetadata {
        stream: stream.into(),
        metadata: StreamMetadata::default(),
        reply,
    };
    (req, rx)
}

/// The answer of a request of a processed group (sent before `process` returns).
pub(super) fn answer<T>(rx: Answer<T>) -> Result<T> {
    rx.try_recv().expect("the group answered every request")
}

fn one(ty: &str) -> Vec<NewEvent> {
    vec![NewEvent::json(ty, "{}")]
}

/// `(first_revision, first_position)` of a successful append.
fn at(r: Result<AppendResult>) -> (u64, u64) {
    let r = r.expect("append succeeds");
    assert!(!r.idempotent_replay);
    (r.first_revision, r.first_position)
}

fn wrong<T: std::fmt::Debug>(r: Result<T>) -> CurrentRevision {
    match r {
        Err(Error::WrongExpectedRevision { actual, .. }) => actual,
        other => panic!("expected WrongExpectedRevision, got {other:?}"),
    }
}

#[test]
fn each_request_sees_the_heads_left_by_the_earlier_ones_in_its_group() {
    let mut h = Harness::new(options());
    let (a, ra) = append("s", ExpectedRevision::NoStream, one("A"));
    let (b, rb) = append("s", ExpectedRevision::NoStream, one("B"));
    let (c, rc) = append("s", ExpectedRevision::Exact(0), one("C"));
    let (d, rd) = append("t", ExpectedRevision::NoStream, one("D"));
    let (e, re) = append("s", ExpectedRevision::StreamExists, one("E"));
    h.group(vec![a, b, c, d, e]);
    assert_eq!(at(answer(ra)), (0, 0));
    assert_eq!(wrong(answer(rb)), CurrentRevision::Revision(0));
    assert_eq!(at(answer(rc)), (1, 1));
    assert_eq!(at(answer(rd)), (0, 2));
    assert_eq!(at(answer(re)), (2, 3));
    assert_eq!(h.writer.shared.committed(), 4);
    // The next group starts from the committed heads.
    let (f, rf) = append("s", ExpectedRevision::Exact(2), one("F"));
    h.group(vec![f]);
    assert_eq!(at(answer(rf)), (3, 4));
}

#[test]
fn ids_of_an_earlier_request_in_the_group_replay_or_conflict() {
    let mut h = Harness::new(options());
    let (x, y, z) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
    let evs = |ids: &[Uuid]| -> Vec<NewEvent> {
        ids.iter()
            .map(|&i| NewEvent::json("T", "{}").with_id(i))
            .collect()
    };
    let (a, ra) = append("s", ExpectedRevision::NoStream, evs(&[x, y]));
    let (b, rb) = append("s", ExpectedRevision::NoStream, evs(&[x, y]));
    let (c, rc) = append("s", ExpectedRevision::Any, evs(&[y, z]));
    let (d, rd) = append("t", ExpectedRevision::NoStream, evs(&[x]));
    h.group(vec![a, b, c, d]);
    let first = answer(ra).expect("first append");
    let replay = answer(rb).expect("retry in the same group");
    assert!(replay.idempotent_replay);
    assert_eq!(
        replay,
        AppendResult {
            idempotent_replay: true,
            ..first
        }
    );
    match answer(rc) {
        Err(Error::DuplicateEventId { stream, id }) => assert_eq!((stream.as_str(), id), ("s", y)),
        other => panic!("expected DuplicateEventId, got {other:?}"),
    }
    // Ids are per stream.
    assert_eq!(at(answer(rd)), (0, 2));
    // A retry in a later group finds the ids in the log, not the overlay.
    let (e, re) = append("s", ExpectedRevision::NoStream, evs(&[x, y]));
    h.group(vec![e]);
    assert_eq!(answer(re).expect("retry in a later group"), replay);
    assert_eq!(h.writer.shared.committed(), 3);
}

#[test]
fn deletes_and_metadata_see_the_group_overlay() {
    let mut h = Harness::new(options());
    let (a, ra) = append("s", ExpectedRevision::NoStream, one("A"));
    let (b, rb) = delete("s", ExpectedRevision::Exact(0), false);
    let (c, rc) = delete("s", ExpectedRevision::Any, false);
    let (d, rd) = append("s", ExpectedRevision::NoStream, one("D"));
    let (e, re) = delete("s", ExpectedRevision::Exact(1), true);
    let (f, rf) = append("s", ExpectedRevision::Any, one("F"));
    let (g, rg) = set_metadata("s");
    let (n, rn) = delete("never", ExpectedRevision::Any, false);
    h.group(vec![a, b, c, d, e, f, g, n]);
    assert_eq!(at(answer(ra)), (0, 0));
    // The soft delete is a `$$s` record at the next position.
    assert_eq!(answer(rb).expect("soft delete").position, 1);
    assert!(matches!(answer(rc), Err(Error::StreamDeleted { .. })));
    // Soft-deleted reads as no stream; the revisions continue.
    assert_eq!(at(answer(rd)), (1, 2));
    assert_eq!(answer(re).expect("hard delete").position, 3);
    assert!(matches!(answer(rf), Err(Error::StreamDeleted { .. })));
    assert!(matches!(answer(rg), Err(Error::StreamDeleted { .. })));
    assert!(matches!(answer(rn), Err(Error::StreamNotFound { .. })));
    assert_eq!(h.writer.shared.committed(), 4);
}

#[test]
fn a_refused_request_leaves_nothing_in_its_group() {
    let mut h = Harness::new(options());
    let (a, ra) = append("a", ExpectedRevision::Any, one("A"));
    let (b, rb) = append("b", ExpectedRevision::Exact(5), one("B"));
    let (c, rc) = append("c", ExpectedRevision::Any, one("C"));
    h.group(vec![a, b, c]);
    assert_eq!(at(answer(ra)), (0, 0));
    assert_eq!(wrong(answer(rb)), CurrentRevision::NoStream);
    assert_eq!(at(answer(rc)), (0, 1));
    let (store, _dir) = h.reopen();
    let all = store
        .read_all(
            ReadFrom::Start,
            Direction::Forward,
            10,
            &AllFilter::default(),
        )
        .expect("read $all");
    let streams: Vec<_> = all.events.iter().map(|e| e.stream.as_str()).collect();
    assert_eq!(streams, ["a", "c"]);
}

#[test]
fn requests_behind_a_shutdown_are_refused() {
    let mut h = Harness::new(options());
    let (a, ra) = append("s", ExpectedRevision::Any, one("A"));
    let (reply, rs) = oneshot::channel();
    let (b, rb) = append("s", ExpectedRevision::Any, one("B"));
    let shutdown = h.writer.process(vec![a, Request::Shutdown { reply }, b]);
    assert!(shutdown.is_some());
    assert!(
        rs.try_recv().is_err(),
        "the shutdown is answered by the thread, after its sync"
    );
    assert_eq!(at(answer(ra)), (0, 0));
    assert!(matches!(answer(rb), Err(Error::Closed)));
    assert_eq!(h.writer.shared.committed(), 1);
}

/// The real file system, except that the next `fail` writes run out of space (writing nothing).
struct FullIo {
    fail: Arc<AtomicU64>,
}

struct FullFile {
    inner: Box<dyn crate::file_io::AppendFile>,
    fail: Arc<AtomicU64>,
}

impl crate::file_io::FileIo for FullIo {
    fn open_append(
        &self,
        path: &std::path::Path,
    ) -> std::io::Result<Box<dyn crate::file_io::AppendFile>> {
        Ok(Box::new(FullFile {
            inner: crate::file_io::StdFileIo.open_append(path)?,
            fail: self.fail.clone(),
        }))
    }
}

impl crate::file_io::AppendFile for FullFile {
    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        use std::sync::atomic::Ordering;
        let left = self.fail.load(Ordering::SeqCst);
        if left > 0 {
            self.fail.store(left - 1, Ordering::SeqCst);
            return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
        }
        self.inner.write_all(buf)
    }
    fn sync_data(&mut self) -> std::io::Result<()> {
        self.inner.sync_data()
    }
    fn truncate(&mut self, len: u64) -> std::io::Result<()> {
        self.inner.truncate(len)
    }
}

/// An event of about 400 bytes.
fn sized(i: u64) -> Vec<NewEvent> {
    vec![NewEvent::json("T", format!("{{\"n\":\"{i:0400}\"}}"))]
}

#[test]
fn a_group_part_cut_by_a_full_disk_before_a_seal_leaves_the_rest_of_the_batch_in_place() {
    use std::sync::atomic::Ordering;
    let segment_size = 4096;
    let fail = Arc::new(AtomicU64::new(0));
    let mut h = Harness::new(Options {
        segment_size,
        file_io: Arc::new(FullIo { fail: fail.clone() }),
        ..options()
    });
    // Fill the segment until exactly one more event fits.
    let mut n = 0;
    let (req, rx) = append("s", ExpectedRevision::Any, sized(n));
    let start = h.writer.seg_len;
    h.group(vec![req]);
    answer(rx).expect("append");
    let per = h.writer.seg_len - start;
    n += 1;
    while h.writer.seg_len + 2 * per <= segment_size {
        let (req, rx) = append("s", ExpectedRevision::Any, sized(n));
        h.group(vec![req]);
        answer(rx).expect("append");
        n += 1;
    }
    let committed = h.writer.shared.committed();
    assert_eq!(committed, n);
    // One batch: `a` fits, `b` does not (the part before it, `a`, is committed first, and its
    // write runs out of space), `c` comes after the failed part and the seal.
    fail.store(1, Ordering::SeqCst);
    let (a, ra) = append("s", ExpectedRevision::Any, sized(n));
    let (b, rb) = append("s", ExpectedRevision::Exact(n), sized(n + 1));
    let (c, rc) = append("s", ExpectedRevision::Any, sized(n + 2));
    h.group(vec![a, b, c]);
    let ea = answer(ra).expect_err("a's write ran out of space");
    assert!(ea.is_disk_full(), "{ea:?}");
    // `b` was checked against `a`, which is not in the log: it fails with it.
    let eb = answer(rb).expect_err("b depends on a");
    assert!(eb.is_disk_full(), "{eb:?}");
    // `c` goes on at the position after the last published event, with the next revision.
    assert_eq!(at(answer(rc)), (committed, committed));
    assert_eq!(h.writer.shared.committed(), committed + 1);
    assert!(h.writer.shared.disk_full.reason().is_none());
    assert!(!h.writer.shared.read_only.load(Ordering::Acquire));
    let (store, _dir) = h.reopen();
    let page = store
        .read_stream("s", ReadFrom::Start, Direction::Forward, 1000)
        .expect("read");
    let positions: Vec<u64> = page.events.iter().map(|e| e.position).collect();
    assert_eq!(positions, (0..committed + 1).collect::<Vec<_>>());
}

#[test]
fn invalidated_heads_are_looked_up_again() {
    let mut h = Harness::new(options());
    let (a, ra) = append("s", ExpectedRevision::NoStream, one("A"));
    h.group(vec![a]);
    assert_eq!(at(answer(ra)), (0, 0));
    assert!(h.writer.heads.contains_key("s"));
    h.writer.shared.invalidate_heads();
    // The next lookup drops the cache, and finds the same head in the log.
    let (b, rb) = append("s", ExpectedRevision::Exact(0), one("B"));
    h.group(vec![b]);
    assert_eq!(at(answer(rb)), (1, 1));
    assert_eq!(h.writer.heads_epoch, 1);
}
