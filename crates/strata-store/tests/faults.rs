//! Fault injection through `Options::file_io`: failed writes and fsyncs, a full disk, and power
//! loss.
//!
//! The durability rule under test (lib.rs): an acknowledged append survives a crash; a failed one
//! wrote nothing that will ever be read; after a failed write or fsync the store turns read-only.
//!
//! Power-loss model (`FaultIo`): writes go to the real file at once (as into the page cache, so
//! that readers, which `pread` the real file, see published bytes under every fsync policy), and
//! the file remembers its length at the last successful `sync_data`. `crash()` models the death of
//! the machine: every file is cut back to its synced length (optionally keeping a random prefix
//! of the unsynced bytes: a torn write), and from then on writes and syncs are discarded but
//! answer `Ok` and no new file can be opened, as if the process were gone.

mod common;

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use strata_store::file_io::{AppendFile, FileIo};
use strata_store::{
    Error, ExpectedRevision, FsyncPolicy, Health, NewEvent, Options, RecordedEvent, Store,
};
use uuid::Uuid;

const NEVER: u64 = u64::MAX;

#[derive(Default)]
struct FileState {
    file: Option<File>,
    len: u64,
    synced_len: u64,
}

struct Faults {
    writes: AtomicU64,
    syncs: AtomicU64,
    /// The `write_all` call (counted from 0 over all files) that fails after writing half its bytes.
    fail_write_at: AtomicU64,
    /// The `sync_data` call that fails.
    fail_sync_at: AtomicU64,
    crashed: AtomicBool,
    /// Which calls run out of space (`ENOSPC`) while set: see [`Full`].
    full: Mutex<Option<Full>>,
    /// `truncate` fails (with `EIO`) while set.
    fail_truncate: AtomicBool,
    /// One state per path: a file may be opened more than once (segment creation, then the
    /// writer), and what is durable is a property of the file, not of the handle.
    files: Mutex<HashMap<PathBuf, Arc<Mutex<FileState>>>>,
}

/// Where a full disk shows: each case answers `ENOSPC` after writing half its bytes (a short
/// write, as a real full disk does), until space is freed.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Full {
    /// Every write: appends, new segment headers, index files.
    Everything,
    /// Only whole-file writes (index files).
    IndexFiles,
    /// Only writes to a file still empty (the header of a new segment).
    NewSegments,
    /// Only `sync_data` (a file system that allocates at writeback).
    Fsync,
}

#[derive(Clone)]
struct FaultIo(Arc<Faults>);

/// The error of a full disk.
fn enospc() -> io::Error {
    io::Error::from_raw_os_error(libc::ENOSPC)
}

impl FaultIo {
    fn new() -> FaultIo {
        FaultIo(Arc::new(Faults {
            writes: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            fail_write_at: AtomicU64::new(NEVER),
            fail_sync_at: AtomicU64::new(NEVER),
            crashed: AtomicBool::new(false),
            full: Mutex::new(None),
            fail_truncate: AtomicBool::new(false),
            files: Mutex::new(HashMap::new()),
        }))
    }

    /// The `n`-th `write_all` from now (0 = the next) fails.
    fn fail_write_in(&self, n: u64) {
        let now = self.0.writes.load(Ordering::SeqCst);
        self.0.fail_write_at.store(now + n, Ordering::SeqCst);
    }

    /// The `n`-th `sync_data` from now (0 = the next) fails.
    fn fail_sync_in(&self, n: u64) {
        let now = self.0.syncs.load(Ordering::SeqCst);
        self.0.fail_sync_at.store(now + n, Ordering::SeqCst);
    }

    /// The disk fills up: from now on the calls `full` names answer `ENOSPC`.
    fn fill(&self, full: Full) {
        *self.0.full.lock().unwrap() = Some(full);
    }

    /// Space is freed: every call works again.
    fn free(&self) {
        *self.0.full.lock().unwrap() = None;
    }

    fn is_full(&self, case: Full) -> bool {
        match *self.0.full.lock().unwrap() {
            Some(Full::Everything) => case != Full::Fsync,
            Some(f) => f == case,
            None => false,
        }
    }

    fn crashed(&self) -> bool {
        self.0.crashed.load(Ordering::SeqCst)
    }

    /// Power loss: unsynced bytes are lost (all of them, or all but a random prefix).
    fn crash(&self, torn: Option<&mut Rng>) {
        self.0.crashed.store(true, Ordering::SeqCst);
        let mut rng = torn;
        for f in self.0.files.lock().unwrap().values() {
            let mut st = f.lock().unwrap();
            let unsynced = st.len - st.synced_len;
            let keep = match rng.as_deref_mut() {
                Some(r) if unsynced > 0 => r.range(0, unsynced + 1),
                _ => 0,
            };
            let cut = st.synced_len + keep;
            if let Some(file) = &st.file {
                file.set_len(cut).expect("power loss: cut file");
            }
            st.len = cut;
            st.file = None;
        }
    }

    fn options(&self, segment_size: u64, fsync: FsyncPolicy) -> Options {
        Options {
            segment_size,
            fsync,
            file_io: Arc::new(self.clone()),
            ..Options::default()
        }
    }
}

impl FileIo for FaultIo {
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn AppendFile>> {
        if self.crashed() {
            return Err(io::Error::other("the machine is off"));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let len = file.metadata()?.len();
        let mut files = self.0.files.lock().unwrap();
        let st = files
            .entry(path.to_owned())
            .or_insert_with(|| {
                // Bytes that were there before this run are durable.
                Arc::new(Mutex::new(FileState {
                    file: None,
                    len,
                    synced_len: len,
                }))
            })
            .clone();
        {
            let mut s = st.lock().unwrap();
            s.file = Some(file);
            s.len = len;
            s.synced_len = s.synced_len.min(len);
        }
        Ok(Box::new(FaultFile {
            io: self.clone(),
            faults: self.0.clone(),
            st,
        }))
    }

    fn available_space(&self, _dir: &Path) -> io::Result<u64> {
        Ok(if self.0.full.lock().unwrap().is_some() {
            0
        } else {
            u64::MAX
        })
    }

    fn write_new_file(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        if self.crashed() {
            return Err(io::Error::other("the machine is off"));
        }
        if self.is_full(Full::IndexFiles) {
            std::fs::write(path, &bytes[..bytes.len() / 2])?;
            return Err(enospc());
        }
        let file = File::create(path)?;
        file.write_all_at(bytes, 0)?;
        file.sync_all()
    }
}

struct FaultFile {
    io: FaultIo,
    faults: Arc<Faults>,
    st: Arc<Mutex<FileState>>,
}

impl AppendFile for FaultFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let mut st = self.st.lock().unwrap();
        if self.faults.crashed.load(Ordering::SeqCst) {
            return Ok(());
        }
        let n = self.faults.writes.fetch_add(1, Ordering::SeqCst);
        let len = st.len;
        let file = st.file.as_ref().expect("file open");
        if self.io.is_full(Full::Everything) || (len == 0 && self.io.is_full(Full::NewSegments)) {
            let half = &buf[..buf.len() / 2];
            file.write_all_at(half, len)?;
            st.len += half.len() as u64;
            return Err(enospc());
        }
        if n == self.faults.fail_write_at.load(Ordering::SeqCst) {
            // A short write, then the error (e.g. ENOSPC).
            let half = &buf[..buf.len() / 2];
            file.write_all_at(half, len)?;
            st.len += half.len() as u64;
            return Err(io::Error::other("injected write failure"));
        }
        file.write_all_at(buf, len)?;
        st.len += buf.len() as u64;
        Ok(())
    }

    fn sync_data(&mut self) -> io::Result<()> {
        let mut st = self.st.lock().unwrap();
        if self.faults.crashed.load(Ordering::SeqCst) {
            return Ok(());
        }
        let n = self.faults.syncs.fetch_add(1, Ordering::SeqCst);
        if n == self.faults.fail_sync_at.load(Ordering::SeqCst) {
            return Err(io::Error::other("injected fsync failure"));
        }
        if self.io.is_full(Full::Fsync) {
            return Err(enospc());
        }
        st.file.as_ref().expect("file open").sync_data()?;
        st.synced_len = st.len;
        Ok(())
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        let mut st = self.st.lock().unwrap();
        if self.faults.crashed.load(Ordering::SeqCst) {
            return Ok(());
        }
        if self.faults.fail_truncate.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        let file = st.file.as_ref().expect("file open");
        file.set_len(len)?;
        file.sync_data()?;
        st.len = len;
        st.synced_len = len;
        Ok(())
    }
}

fn append_tagged(
    store: &Store,
    rng: &mut Rng,
    stream: &str,
    tag: &str,
    n: usize,
) -> Result<Ack, (Error, Vec<Uuid>)> {
    let (evs, ids) = tagged_events(rng, tag, n, 100);
    match store.append(stream, ExpectedRevision::Any, evs) {
        Ok(r) => Ok(Ack::new(stream, &r, ids)),
        Err(e) => Err((e, ids)),
    }
}

/// Reopens `dir` with the real file system and checks: healthy, dense, whole appends, every ack
/// present, none of `failed` present, verify clean, appending works. Returns the events.
fn reopen_and_check(
    dir: &Path,
    segment_size: u64,
    acks: &[Ack],
    failed: &[Uuid],
    what: &str,
) -> Vec<RecordedEvent> {
    let store = Store::open(dir, opts(segment_size))
        .unwrap_or_else(|e| panic!("{what}: reopen failed: {e}"));
    assert_eq!(store.health(), Health::Ok, "{what}");
    let events = check_log(&store, acks);
    for e in &events {
        assert!(
            !failed.contains(&e.id),
            "{what}: event {} ({}@{}) of a failed append is in the log",
            e.id,
            e.stream,
            e.revision
        );
    }
    let r = store
        .append(
            "after",
            ExpectedRevision::Any,
            vec![NewEvent::json("T", "{}")],
        )
        .unwrap_or_else(|e| panic!("{what}: append after reopen: {e}"));
    assert_eq!(r.first_position, events.len() as u64, "{what}");
    store.close().expect("close");
    drop(store);
    assert!(assert_verify_clean(dir).is_empty(), "{what}");
    events
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    Write,
    Sync,
}

/// One failed write or fsync in a sequence of appends, optionally followed by power loss.
fn single_fault(fault: Fault, power_loss: bool) {
    let what = format!("{fault:?} failure, power loss {power_loss}");
    let mut rng = Rng::new(test_seed(&what));
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let io = FaultIo::new();
    let store = Store::open(dir, io.options(1 << 20, FsyncPolicy::Always)).expect("open");
    let mut acks = Vec::new();
    for a in 0..10 {
        acks.push(
            append_tagged(
                &store,
                &mut rng,
                &format!("s-{}", a % 3),
                &format!("a{a}"),
                1 + a % 3,
            )
            .expect("append"),
        );
    }
    let before = all_events(&store);
    let seg = segments(dir).pop().expect("segment");
    let len_before = file_len(&seg);
    match fault {
        Fault::Write => io.fail_write_in(0),
        Fault::Sync => io.fail_sync_in(0),
    }
    let (err, failed_ids) = append_tagged(&store, &mut rng, "s-1", "failed", 3)
        .expect_err("the faulty append must fail");
    assert!(matches!(err, Error::ReadOnly { .. }), "{what}: {err:?}");
    let Health::ReadOnly(reason) = store.health() else {
        panic!("{what}: store should be read-only");
    };
    assert!(
        reason.contains("injected"),
        "{what}: the fault should carry the cause: {reason}"
    );
    // Every later write is refused, and nothing more reaches the file.
    let r = append_tagged(&store, &mut rng, "s-2", "later", 1);
    assert!(
        matches!(r, Err((Error::ReadOnly { .. }, _))),
        "{what}: {r:?}"
    );
    let r = store.delete_stream("s-0", ExpectedRevision::Any, false);
    assert!(matches!(r, Err(Error::ReadOnly { .. })), "{what}: {r:?}");
    let r = store.flush();
    assert!(matches!(r, Err(Error::ReadOnly { .. })), "{what}: {r:?}");
    // Acknowledged data is still served; the failed append is not.
    assert_eq!(all_events(&store), before, "{what}");
    assert_eq!(store.next_position(), before.len() as u64);
    let s1 = store
        .read_stream(
            "s-1",
            strata_store::ReadFrom::Start,
            strata_store::Direction::Forward,
            100,
        )
        .expect("read s-1");
    assert!(
        s1.events.iter().all(|e| !failed_ids.contains(&e.id)),
        "{what}"
    );
    // The writer cut the unacknowledged bytes back (best effort, but the file system is fine).
    assert_eq!(
        file_len(&seg),
        len_before,
        "{what}: failed bytes left in the segment"
    );
    if power_loss {
        io.crash(None);
    }
    drop(store);
    let events = reopen_and_check(dir, 1 << 20, &acks, &failed_ids, &what);
    assert_eq!(events, before, "{what}");
    // A retry of the failed append (same ids) is a new append, not a replay of a ghost.
    let store = Store::open(dir, opts(1 << 20)).expect("open");
    let (evs, _) = tagged_events(&mut Rng::new(0), "retry", 1, 0);
    let retry = vec![evs[0].clone().with_id(failed_ids[0])];
    let r = store
        .append("s-1", ExpectedRevision::Any, retry)
        .expect("retry");
    assert!(
        !r.idempotent_replay,
        "{what}: the failed append's id was remembered"
    );
}

#[test]
fn failed_fsync_fails_the_append_and_turns_the_store_read_only() {
    single_fault(Fault::Sync, false);
}

#[test]
fn failed_fsync_then_power_loss_keeps_exactly_the_acknowledged_appends() {
    single_fault(Fault::Sync, true);
}

#[test]
fn failed_write_fails_the_append_and_turns_the_store_read_only() {
    single_fault(Fault::Write, false);
}

#[test]
fn failed_write_then_power_loss_keeps_exactly_the_acknowledged_appends() {
    single_fault(Fault::Write, true);
}

/// The n-th write (or fsync) fails, for every n over a run that seals segments, so faults also
/// hit the sealing of a segment (fsync of the old one, header write and fsync of the new one).
#[test]
fn every_failing_io_call_in_a_run_with_sealing_loses_no_ack_and_leaks_no_failed_append() {
    let seed = test_seed("every_failing_call");
    for fault in [Fault::Write, Fault::Sync] {
        for n in 0..40u64 {
            let what = format!("{fault:?} #{n}");
            let mut rng = Rng::new(seed ^ n);
            let tmp = tempfile::tempdir().expect("tempdir");
            let dir = tmp.path();
            let io = FaultIo::new();
            let store = Store::open(dir, io.options(4096, FsyncPolicy::Always)).expect("open");
            match fault {
                Fault::Write => io.fail_write_in(n),
                Fault::Sync => io.fail_sync_in(n),
            }
            let mut acks = Vec::new();
            let mut failed = Vec::new();
            let mut first_err = None;
            for a in 0..60 {
                let r = append_tagged(
                    &store,
                    &mut rng,
                    &format!("s-{}", a % 4),
                    &format!("a{a}"),
                    1 + a % 3,
                );
                match (r, first_err) {
                    (Ok(ack), None) => acks.push(ack),
                    (Ok(ack), Some(at)) => {
                        panic!("{what}: append {a} acknowledged after the failure of append {at}: {ack:?}")
                    }
                    (Err((e, ids)), _) => {
                        assert!(
                            matches!(e, Error::ReadOnly { .. }),
                            "{what}: append {a}: {e:?}"
                        );
                        first_err.get_or_insert(a);
                        failed.extend(ids);
                    }
                }
            }
            assert!(first_err.is_some(), "{what}: the fault never fired");
            assert!(matches!(store.health(), Health::ReadOnly(_)), "{what}");
            // Every other run loses power right after the failure: what the writer did not
            // sync is gone, whether or not it cut it back.
            if n % 2 == 1 {
                io.crash(None);
            }
            drop(store);
            reopen_and_check(dir, 4096, &acks, &failed, &what);
        }
    }
}

/// Several threads append through the lossy file I/O until the power goes; every append
/// acknowledged before that is there after reopening.
fn power_loss_rounds(name: &str, fsync: FsyncPolicy, with_flush: bool, rounds: u64) {
    let seed = test_seed(name);
    let mut rng = Rng::new(seed);
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let mut durable: Vec<Ack> = Vec::new();
    let mut total_acks = 0;
    let mut lost_acks = 0;
    for round in 0..rounds {
        let io = FaultIo::new();
        let store = Store::open(dir, io.options(16 * 1024, fsync))
            .unwrap_or_else(|e| panic!("{name} round {round}: open after power loss: {e}"));
        assert_eq!(store.health(), Health::Ok, "{name} round {round}");
        let threads = [1usize, 4, 2, 8][round as usize % 4];
        // Acks in the order they were received, and how many of them a flush covered.
        let acks: Arc<Mutex<Vec<Ack>>> = Arc::default();
        let flushed_upto = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (store, io, acks, flushed_upto, stop) = (
                    store.clone(),
                    io.clone(),
                    acks.clone(),
                    flushed_upto.clone(),
                    stop.clone(),
                );
                let mut rng = Rng::new(rng.next_u64());
                std::thread::spawn(move || {
                    for seq in 0.. {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let stream = format!("p-{}", rng.below(5));
                        let tag = format!("r{round}t{t}s{seq}");
                        let n = 1 + rng.below(4);
                        match append_tagged(&store, &mut rng, &stream, &tag, n) {
                            // Received before the power went: must survive (under Always).
                            Ok(ack) if !io.crashed() => acks.lock().unwrap().push(ack),
                            Ok(_) => break,
                            // After the power went, sealing a segment fails (no new file can be
                            // opened) and the store turns read-only: irrelevant, it is dead.
                            Err(_) if io.crashed() => break,
                            Err((e, _)) => panic!("{tag}: append failed: {e}"),
                        }
                        if with_flush && rng.chance(10) {
                            let covered = acks.lock().unwrap().len() as u64;
                            if store.flush().is_ok() && !io.crashed() {
                                flushed_upto.fetch_max(covered, Ordering::SeqCst);
                            }
                        }
                    }
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(rng.range(5, 120)));
        let torn = rng.chance(50);
        io.crash(if torn { Some(&mut rng) } else { None });
        stop.store(true, Ordering::SeqCst);
        for h in handles {
            h.join().expect("appender");
        }
        drop(store); // closing syncs into the void: the machine is off
        let acks = std::mem::take(&mut *acks.lock().unwrap());
        let must_survive = match fsync {
            FsyncPolicy::Always => acks.len(),
            _ => flushed_upto.load(Ordering::SeqCst) as usize,
        };
        total_acks += acks.len();
        durable.extend(acks[..must_survive].iter().cloned());
        let events = {
            let store = Store::open(dir, opts(16 * 1024))
                .unwrap_or_else(|e| panic!("{name} round {round}: reopen after power loss: {e}"));
            assert_eq!(store.health(), Health::Ok, "{name} round {round}");
            let events = all_events(&store);
            check_dense(&store, &events);
            check_whole_appends(&events);
            check_acks(&events, &durable);
            store.close().expect("close");
            events
        };
        let present: std::collections::HashSet<Uuid> = events.iter().map(|e| e.id).collect();
        lost_acks += acks[must_survive..]
            .iter()
            .filter(|a| !present.contains(&a.ids[0]))
            .count();
        assert!(assert_verify_clean(dir).is_empty(), "{name} round {round}");
    }
    eprintln!(
        "{name}: {rounds} power losses, {total_acks} acks, {} required to survive, {lost_acks} unflushed acks lost (allowed)",
        durable.len()
    );
    assert!(
        !durable.is_empty(),
        "{name}: nothing was durable before a crash: the test tested nothing"
    );
}

#[test]
fn power_loss_under_fsync_always_keeps_every_acknowledged_append() {
    power_loss_rounds("power_loss_always", FsyncPolicy::Always, false, 12);
}

#[test]
fn power_loss_under_fsync_never_keeps_every_append_acknowledged_before_a_flush() {
    power_loss_rounds("power_loss_never_flush", FsyncPolicy::Never, true, 10);
}

#[test]
fn power_loss_under_fsync_interval_keeps_every_append_acknowledged_before_a_flush() {
    power_loss_rounds(
        "power_loss_interval_flush",
        FsyncPolicy::Interval(Duration::from_millis(20)),
        true,
        10,
    );
}

/// Without a flush, `Never` may lose recent acks in a power loss, but what survives is a prefix
/// of whole appends and the store reopens healthy: losing unflushed appends is allowed, damaging
/// the log is not.
#[test]
fn power_loss_under_fsync_never_without_flush_leaves_a_clean_prefix() {
    let mut rng = Rng::new(test_seed("power_loss_never_prefix"));
    // Several torn cuts: a cut inside a multi-event append must never publish part of it.
    for torn in [false, true, true, true, true, true] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        let io = FaultIo::new();
        let store = Store::open(dir, io.options(1 << 20, FsyncPolicy::Never)).expect("open");
        let mut acks = Vec::new();
        for a in 0..20 {
            acks.push(append_tagged(&store, &mut rng, "n-1", &format!("a{a}"), 2).expect("append"));
        }
        store.flush().expect("flush");
        let flushed = acks.len();
        for a in 20..60 {
            acks.push(append_tagged(&store, &mut rng, "n-1", &format!("a{a}"), 3).expect("append"));
        }
        io.crash(if torn { Some(&mut rng) } else { None });
        drop(store);
        let store = Store::open(dir, opts(1 << 20)).expect("reopen");
        assert_eq!(store.health(), Health::Ok, "torn {torn}");
        let events = all_events(&store);
        check_dense(&store, &events);
        check_whole_appends(&events);
        check_acks(&events, &acks[..flushed]);
        // What survived is exactly the first k appends.
        let k = acks
            .iter()
            .take_while(|a| events.iter().any(|e| e.id == a.ids[0]))
            .count();
        assert!(k >= flushed, "torn {torn}");
        if !torn {
            assert_eq!(k, flushed, "nothing unsynced survives a clean power cut");
        }
        check_acks(&events, &acks[..k]);
        assert_eq!(
            events.len(),
            2 * 20 + 3 * (k - flushed),
            "torn {torn}: only whole appends, in order"
        );
        store.close().expect("close");
        drop(store);
        assert!(assert_verify_clean(dir).is_empty(), "torn {torn}");
    }
}

/// Everything in `dir` that is not a segment, an index file or the lock: leftovers of a write
/// that should have been undone (temporary index files).
fn stray_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| {
            let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
            !matches!(ext, "seg" | "idx") && p.file_name().is_some_and(|n| n != "LOCK")
        })
        .collect();
    v.sort();
    v
}

fn assert_disk_full(store: &Store, err: &Error, what: &str) {
    assert!(err.is_disk_full(), "{what}: {err:?}");
    match store.health() {
        Health::DiskFull(reason) => assert!(
            reason.contains(&enospc().to_string()),
            "{what}: the health should carry the cause: {reason}"
        ),
        other => panic!("{what}: health should be disk_full, is {other:?}"),
    }
}

#[test]
fn a_full_disk_refuses_appends_writes_nothing_and_appends_resume_once_space_is_free() {
    let what = "full disk on append";
    let mut rng = Rng::new(test_seed(what));
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let io = FaultIo::new();
    let store = Store::open(dir, io.options(1 << 20, FsyncPolicy::Always)).expect("open");
    let mut acks = Vec::new();
    for a in 0..6 {
        let stream = format!("s-{}", a % 2);
        acks.push(append_tagged(&store, &mut rng, &stream, &format!("a{a}"), 2).expect("append"));
    }
    let before = all_events(&store);
    let seg = segments(dir).pop().expect("segment");
    let len_before = file_len(&seg);
    io.fill(Full::Everything);
    let mut failed = Vec::new();
    for i in 0..3 {
        let (err, ids) = append_tagged(&store, &mut rng, "s-0", &format!("full{i}"), 3)
            .expect_err("an append on a full disk must fail");
        assert_disk_full(&store, &err, what);
        failed.extend(ids);
        // Nothing half-written stays: the short write was cut back.
        assert_eq!(file_len(&seg), len_before, "{what}: attempt {i}");
        // Reads go on, and see exactly what was acknowledged.
        assert_eq!(all_events(&store), before, "{what}: attempt {i}");
    }
    let r = store.delete_stream("s-1", ExpectedRevision::Any, false);
    assert!(matches!(r, Err(Error::DiskFull { .. })), "{what}: {r:?}");
    let s1 = store
        .read_stream(
            "s-1",
            strata_store::ReadFrom::Start,
            strata_store::Direction::Forward,
            100,
        )
        .expect("read s-1 while the disk is full");
    assert_eq!(s1.events.len(), 6, "{what}");
    // Space is freed: the next append succeeds by itself, at the next revision and position
    // (the failed attempts left no gap), and the store is healthy again.
    io.free();
    // Healthy again as soon as there is space, before any append tried.
    assert_eq!(store.health(), Health::Ok, "{what}");
    let ack = append_tagged(&store, &mut rng, "s-0", "after", 2).expect("append after freeing");
    assert_eq!(ack.first_position, before.len() as u64, "{what}");
    assert_eq!(ack.first_revision, 6, "{what}");
    acks.push(ack);
    assert_eq!(store.health(), Health::Ok, "{what}");
    store.close().expect("close");
    drop(store);
    let events = reopen_and_check(dir, 1 << 20, &acks, &failed, what);
    assert_eq!(events.len(), before.len() + 2, "{what}");
}

/// The disk fills up (where `full` says) just when the open segment must be sealed: the seal
/// fails with nothing changed, appends answer disk-full, and once space is free the seal is
/// retried by itself.
fn full_disk_while_sealing(full: Full) {
    let what = format!("full disk while sealing ({full:?})");
    let mut rng = Rng::new(test_seed(&what));
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let io = FaultIo::new();
    let store = Store::open(dir, io.options(4096, FsyncPolicy::Always)).expect("open");
    let seg = segments(dir).pop().expect("segment");
    let mut acks = Vec::new();
    let mut failed = Vec::new();
    // Fill the segment up to where an append of eight events cannot fit (appends of two events
    // differ by at most a few hundred bytes of padding and type), then fill the disk.
    let header = file_len(&seg);
    acks.push(append_tagged(&store, &mut rng, "s", "a0", 2).expect("append"));
    let per_append = file_len(&seg) - header;
    for a in 1.. {
        assert_eq!(segments(dir).len(), 1, "{what}: sealed while filling");
        if file_len(&seg) + per_append + 256 > 4096 {
            break;
        }
        acks.push(append_tagged(&store, &mut rng, "s", &format!("a{a}"), 2).expect("append"));
    }
    io.fill(full);
    let (err, ids) = append_tagged(&store, &mut rng, "s", "seal", 8).expect_err("full");
    assert_disk_full(&store, &err, &what);
    failed.extend(ids);
    let before = all_events(&store);
    // The seal is retried by the next append that does not fit, and fails the same way.
    let (err, ids) = append_tagged(&store, &mut rng, "s", "again", 8).expect_err("still full");
    assert_disk_full(&store, &err, &what);
    failed.extend(ids);
    // Nothing visible changed: one segment, no index file, no half-made file.
    assert_eq!(segments(dir).len(), 1, "{what}");
    assert_eq!(index_files(dir), Vec::<PathBuf>::new(), "{what}");
    assert_eq!(stray_files(dir), Vec::<PathBuf>::new(), "{what}");
    assert_eq!(all_events(&store), before, "{what}");
    io.free();
    assert_eq!(store.health(), Health::Ok, "{what}");
    for a in 0..3 {
        // The first does not fit either: it seals.
        let n = if a == 0 { 8 } else { 2 };
        let ack = append_tagged(&store, &mut rng, "s", &format!("b{a}"), n).expect("append");
        if a == 0 {
            assert_eq!(ack.first_position, before.len() as u64, "{what}");
        }
        acks.push(ack);
    }
    assert_eq!(store.health(), Health::Ok, "{what}");
    assert_eq!(segments(dir).len(), 2, "{what}: the seal happened");
    assert_eq!(index_files(dir).len(), 1, "{what}");
    store.close().expect("close");
    drop(store);
    let events = reopen_and_check(dir, 4096, &acks, &failed, &what);
    assert_eq!(events.len(), before.len() + 12, "{what}");
}

#[test]
fn a_full_disk_when_writing_the_index_file_of_a_seal_changes_nothing_and_is_retried() {
    full_disk_while_sealing(Full::IndexFiles);
}

#[test]
fn a_full_disk_when_creating_the_next_segment_changes_nothing_and_is_retried() {
    full_disk_while_sealing(Full::NewSegments);
}

#[test]
fn a_full_disk_everywhere_while_sealing_changes_nothing_and_is_retried() {
    full_disk_while_sealing(Full::Everything);
}

/// ENOSPC from `fsync` after a successful write is a fault like EIO: what the page cache still
/// holds is unknown, so the store turns read-only rather than retrying.
#[test]
fn out_of_space_from_fsync_of_written_data_turns_the_store_read_only() {
    out_of_space_turns_the_store_read_only("ENOSPC from fsync", Full::Fsync, false);
}

/// When the cut of a short write fails too, the segment's end is unknown: a fault.
#[test]
fn a_full_disk_whose_short_write_cannot_be_cut_back_turns_the_store_read_only() {
    out_of_space_turns_the_store_read_only(
        "ENOSPC, then a failed truncate",
        Full::Everything,
        true,
    );
}

/// A full disk (`full`, with the truncate failing too when `fail_truncate`) that must turn the
/// store read-only: the failing append and every later one (space freed or not) refused, and
/// a reopen finds exactly the acknowledged events.
fn out_of_space_turns_the_store_read_only(what: &str, full: Full, fail_truncate: bool) {
    let mut rng = Rng::new(test_seed(what));
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    let io = FaultIo::new();
    let store = Store::open(dir, io.options(1 << 20, FsyncPolicy::Always)).expect("open");
    let acks = vec![append_tagged(&store, &mut rng, "s", "a", 2).expect("append")];
    io.fill(full);
    io.0.fail_truncate.store(fail_truncate, Ordering::SeqCst);
    let (err, failed) = append_tagged(&store, &mut rng, "s", "b", 2).expect_err("must fail");
    assert!(matches!(err, Error::ReadOnly { .. }), "{what}: {err:?}");
    assert!(matches!(store.health(), Health::ReadOnly(_)), "{what}");
    io.free();
    io.0.fail_truncate.store(false, Ordering::SeqCst);
    let r = append_tagged(&store, &mut rng, "s", "c", 1);
    assert!(
        matches!(r, Err((Error::ReadOnly { .. }, _))),
        "{what}: {r:?}"
    );
    drop(store);
    reopen_and_check(dir, 1 << 20, &acks, &failed, what);
}

/// Counts the events of category `c`.
struct CountC;

impl strata_store::projection::Projection for CountC {
    type State = u64;

    fn source(&self) -> strata_store::projection::ProjectionSource {
        strata_store::projection::ProjectionSource::Category("c".into())
    }

    fn init(&self) -> u64 {
        0
    }

    fn apply(
        &self,
        state: &mut u64,
        _event: &RecordedEvent,
        _emit: &mut strata_store::projection::Emitter<'_>,
    ) -> Result<(), strata_store::projection::ProjectionError> {
        *state += 1;
        Ok(())
    }
}

fn wait_status(
    runner: &strata_store::projection::ProjectionRunner,
    what: &str,
    pred: impl Fn(&strata_store::projection::ProjectionStatus) -> bool,
) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let status = runner.status();
        if pred(&status) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}: {status:?}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A projection whose checkpoint runs into a full disk keeps running and serving its state,
/// and checkpoints once space is free.
#[test]
fn a_projection_checkpoint_on_a_full_disk_does_not_fault_it_and_is_retried() {
    use strata_store::projection::{typed_engine, ProjectionRunner, RunState, RunnerOptions};
    let tmp = tempfile::tempdir().expect("tempdir");
    let io = FaultIo::new();
    let store = Store::open(tmp.path(), io.options(1 << 20, FsyncPolicy::Never)).expect("open");
    for i in 0..5 {
        store
            .append(
                &format!("c-{i}"),
                ExpectedRevision::Any,
                vec![NewEvent::json("T", "{}")],
            )
            .expect("append");
    }
    io.fill(Full::Everything);
    let options = RunnerOptions {
        checkpoint_interval: Duration::from_millis(10),
        checkpoint_events: 1,
        ..RunnerOptions::default()
    };
    let runner = ProjectionRunner::open(store.clone(), "count", 1, typed_engine(CountC), options);
    runner.start().expect("start");
    wait_status(&runner, "all events applied", |s| {
        s.events_processed == 5 || s.state != RunState::Running
    });
    // Checkpoints were tried (and ran out of space) for a while: still running, serving.
    std::thread::sleep(Duration::from_millis(100));
    let status = runner.status();
    assert_eq!(status.state, RunState::Running, "{status:?}");
    assert_eq!(status.checkpoint_position, None, "{status:?}");
    let state = runner.state("").expect("served state");
    assert_eq!(state.get(), "5");
    io.free();
    wait_status(&runner, "a checkpoint once space is free", |s| {
        s.checkpoint_position == Some(4) || s.state != RunState::Running
    });
    assert_eq!(runner.status().state, RunState::Running);
}
