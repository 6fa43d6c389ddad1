//! The public handle: opening (recovery), appends through the writer, reads, subscriptions, close.

use std::fs::{File, OpenOptions};
use std::ops::ControlFlow;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::{Mutex, RwLock};

use crate::damage::Damage;
use crate::error::{Error, Result};
use crate::event::{
    AllFilter, AppendResult, DeleteResult, Direction, ExpectedRevision, NewEvent, ReadFrom,
    ReadSlice, RecordedEvent, StreamHead, StreamInfo, StreamMetadata,
};
use crate::file_io::sync_dir;
use crate::frame::{encode_segment_header, SEGMENT_HEADER_LEN};
use crate::index_file::SegmentIndex;
use crate::log::{LogState, Shared};
use crate::memtable::{MemEntry, Memtable};
use crate::options::{FsyncPolicy, Options};
use crate::read;
use crate::segment::{
    index_file_name, list_segments, map_file, rebuild_index, scan_segment, segment_file_name,
    OpenSegment, ScanMode, Scanned, SealedSegment,
};
use crate::stats::{Stats, StatsSnapshot};
use crate::subscription::{Subscription, SubscriptionTarget};
use crate::writer::{validate_append, Request, Writer};

/// An open event store. Cheap to clone; all clones share one writer. The store closes when the
/// last clone is dropped (or on [`Store::close`]); everything acknowledged before is durable.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
    handle: Arc<Handle>,
}

/// Owns the writer thread; closing it is the last clone's job.
struct Handle {
    shared: Arc<Shared>,
    tx: Option<Sender<Request>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// The index merger thread (see [`crate::merged`]), when one runs.
    merger: Mutex<Option<JoinHandle<()>>>,
    /// Held for the store's lifetime: the directory's exclusive lock.
    _lock: Option<File>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

impl Handle {
    fn shutdown(&self) -> Result<()> {
        let merger = self.merger.lock().take();
        let stop_merger = || {
            self.shared.merged.request_stop();
            if let Some(m) = merger {
                // A panicking merger lost nothing: merged files are derived data.
                let _ = m.join();
            }
        };
        let Some(thread) = self.thread.lock().take() else {
            stop_merger();
            return Ok(());
        };
        let mut result = Ok(());
        if let Some(tx) = &self.tx {
            let (reply, rx) = oneshot::channel();
            if tx.send(Request::Shutdown { reply }).is_ok() {
                result = rx.recv().unwrap_or(Err(Error::Closed));
            }
        }
        self.shared.closed.store(true, Ordering::Release);
        self.shared.commits.notify(usize::MAX);
        stop_merger();
        if thread.join().is_err() {
            result = Err(Error::ReadOnly {
                reason: "writer thread panicked".into(),
            });
        }
        result
    }
}

/// Health of the store as a whole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    /// Accepting writes.
    Ok,
    /// Refusing writes; the reason (storage fault, corruption, or opened read-only). Lasts
    /// until a restart (or a repair).
    ReadOnly(String),
    /// Damaged bytes were found in sealed data whose index is intact (see [`Store::damage`]):
    /// every other event stays readable, reads that need a damaged event answer
    /// [`crate::Error::Corruption`], and appends go on (stream heads are exact). Lasts until a
    /// repair.
    Damaged(String),
    /// The last write ran out of disk space (the reason names the file and the error); it wrote
    /// nothing. Reads go on, and appends are still tried. [`Health::Ok`] again by itself as soon
    /// as the file system reports room for the write that failed (plus a margin), or an append
    /// succeeds.
    DiskFull(String),
}

/// Size and position facts for `/info`-style reporting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreInfo {
    /// The data directory.
    pub dir: PathBuf,
    /// Number of events in the log (the next position to be assigned).
    pub next_position: u64,
    /// Number of segment files.
    pub segment_count: usize,
    /// Bytes of segment, index and removed-events files (of the open segment, the bytes up to
    /// its published end).
    pub bytes_on_disk: u64,
}

impl Store {
    /// Opens (creating if needed) the store in `dir`.
    ///
    /// Recovery reads the index files of sealed segments (rebuilding any that is missing or
    /// damaged from its segment) and scans only the open segment, cutting a torn tail back to the
    /// last whole append. Corruption found in the middle of the log opens the store read-only
    /// (see [`Store::health`]); corruption that makes a sealed segment unindexable is an error.
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<Store> {
        let dir = dir.as_ref().to_path_buf();
        if options.segment_size < 4096 {
            return Err(Error::invalid(
                "segment_size",
                "must be at least 4096 bytes",
            ));
        }
        if !options.read_only {
            crate::file_io::create_dir_durably(&dir).map_err(|e| Error::io(&dir, e))?;
        }
        let lock = if options.read_only {
            None
        } else {
            Some(lock_dir(&dir)?)
        };
        let recovered = recover(&dir, &options)?;
        let shared = Arc::new(Shared {
            dir: dir.clone(),
            state: RwLock::new(Arc::new(recovered.state)),
            committed: AtomicU64::new(recovered.next_position),
            read_only: AtomicBool::new(options.read_only || recovered.fault.is_some()),
            fault: Mutex::new(recovered.fault),
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
        for d in recovered.damage {
            shared.record_damage(d);
        }
        let (tx, thread) = if shared.options.read_only {
            (None, None)
        } else {
            let open_path = shared.snapshot().open.path.clone();
            let file = shared
                .options
                .file_io
                .open_append(&open_path)
                .map_err(|e| Error::io(&open_path, e))?;
            let writer = Writer::new(shared.clone(), file, recovered.open_len);
            let (tx, rx) = mpsc::channel();
            let thread = std::thread::Builder::new()
                .name("strata-writer".into())
                .spawn(move || writer.run(rx))
                .map_err(|e| Error::io(&dir, e))?;
            (Some(tx), Some(thread))
        };
        // Loaded (and, when writable, cleaned of stale files) even with merging off: a file
        // reaching past the sealed end must go before appends reuse its positions.
        let writes = !shared.options.read_only;
        let found = crate::merged::load(&dir, &shared.snapshot().sealed, writes);
        let merger = if shared.options.merge_indexes {
            shared.merged.init(found, writes);
            let s = shared.clone();
            // Without a thread the store still works (lookups probe the segments; merges run
            // only in `merge_indexes`): merged files are an optimisation.
            std::thread::Builder::new()
                .name("strata-merger".into())
                .spawn(move || crate::merged::run(s))
                .ok()
        } else {
            None
        };
        Ok(Store {
            handle: Arc::new(Handle {
                shared: shared.clone(),
                tx,
                thread: Mutex::new(thread),
                merger: Mutex::new(merger),
                _lock: lock,
            }),
            shared,
        })
    }

    /// Runs the index merger until it has nothing left to do (see [`Options::merge_indexes`]):
    /// verifies the merged files found at open, then merges every run of sealed segments (and
    /// of merged files) that is due. The background merger does the same on its own; this is
    /// for tests, benchmarks and tools that want the merged state now. Answers the number of
    /// merged files in use afterwards; 0 when merging is off.
    pub fn merge_indexes(&self) -> Result<usize> {
        if !self.shared.options.merge_indexes {
            return Ok(0);
        }
        loop {
            match crate::merged::step(&self.shared) {
                Ok(true) => {}
                Ok(false) => return Ok(self.shared.merged.published()),
                Err(crate::merged::MergeError::Stopped) => return Err(Error::Closed),
                Err(crate::merged::MergeError::Failed(e)) => return Err(e),
            }
        }
    }

    /// Closes the store: waits for queued appends, syncs, stops the writer. Later calls on any
    /// clone answer [`Error::Closed`]. Calling it again is a no-op.
    pub fn close(&self) -> Result<()> {
        self.handle.shutdown()
    }

    fn send(&self, req: Request) -> Result<()> {
        self.shared.check_writable()?;
        let tx = self.handle.tx.as_ref().ok_or(Error::ReadOnly {
            reason: "opened read-only".into(),
        })?;
        tx.send(req).map_err(|_| Error::Closed)
    }

    /// Checks an append's input and queues it for the writer; the answer comes on the returned
    /// channel once the append is durable (or refused).
    fn queue_append(
        &self,
        stream: &str,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
    ) -> Result<oneshot::Receiver<Result<AppendResult>>> {
        validate_append(stream, &events, &self.shared.options.limits)?;
        let (reply, rx) = oneshot::channel();
        self.send(Request::Append {
            stream: stream.to_owned(),
            expected,
            events,
            reply,
        })?;
        Ok(rx)
    }

    /// Sends the request `make` builds around a reply channel and blocks for the writer's
    /// answer ([`Error::Closed`] when the writer went away without one).
    fn call<T>(&self, make: impl FnOnce(oneshot::Sender<Result<T>>) -> Request) -> Result<T> {
        let (reply, rx) = oneshot::channel();
        self.send(make(reply))?;
        rx.recv().unwrap_or(Err(Error::Closed))
    }

    /// Appends `events` to `stream` atomically (all or none, contiguous revisions) if `expected`
    /// holds, and returns once they are durable under the fsync policy.
    ///
    /// If every event id was already appended to the stream as this same run, nothing is written
    /// and the original result comes back with `idempotent_replay` set.
    ///
    /// Input is checked before anything is queued, and any violation refuses the whole append
    /// naming the event and field (`events[2].data`): [`Error::LimitExceeded`] for more than
    /// `max_events_per_append` events or an event over `max_event_size` (see
    /// [`crate::Limits`]), [`Error::InvalidInput`] for the rest — the stream name, the event
    /// types, and the JSON payloads: the `data` of JSON events and every non-empty metadata
    /// must be JSON text nested at most `max_json_depth` (64) levels deep with no lone UTF-16
    /// surrogate escape (see [`crate::json_check`]).
    pub fn append(
        &self,
        stream: &str,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult> {
        let waiting = &self.shared.callers_waiting;
        let alone = waiting.fetch_add(1, Ordering::Relaxed) == 0;
        let answer = self.queue_append(stream, expected, events).and_then(|rx| {
            // Without an fsync to wait for, the answer comes within µs: a caller waiting alone
            // polls for it briefly rather than sleep through a wake-up (bounded and adaptive,
            // see `crate::spin`).
            if alone && !matches!(self.shared.options.fsync, FsyncPolicy::Always) {
                if let Some(answer) = self
                    .shared
                    .caller_spin
                    .spin(crate::spin::CALLER_SPIN, || rx.try_recv().ok())
                {
                    return answer;
                }
            }
            rx.recv().unwrap_or(Err(Error::Closed))
        });
        waiting.fetch_sub(1, Ordering::Relaxed);
        answer
    }

    /// [`Store::append`] for async callers: waiting for the group commit does not block the
    /// executor thread.
    pub async fn append_async(
        &self,
        stream: &str,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult> {
        let reply = self.queue_append(stream, expected, events)?;
        // Awaited, not blocked on: the executor thread stays free.
        reply.await.unwrap_or(Err(Error::Closed))
    }

    /// Deletes a stream. Soft (`hard == false`): reads answer [`Error::StreamDeleted`] until the
    /// stream is appended to again, and its earlier events stay hidden. Hard: a tombstone, the
    /// name can never be written again. `expected` is checked as for appends.
    pub fn delete_stream(
        &self,
        stream: &str,
        expected: ExpectedRevision,
        hard: bool,
    ) -> Result<DeleteResult> {
        self.call(|reply| Request::Delete {
            stream: stream.to_owned(),
            expected,
            hard,
            reply,
        })
    }

    /// Replaces the metadata of `stream` (which need not exist yet). Enforced by every later read.
    pub fn set_metadata(&self, stream: &str, metadata: StreamMetadata) -> Result<DeleteResult> {
        self.call(|reply| Request::SetMetadata {
            stream: stream.to_owned(),
            metadata,
            reply,
        })
    }

    /// Makes everything acknowledged so far durable, whatever the fsync policy.
    pub fn flush(&self) -> Result<()> {
        self.call(|reply| Request::Flush { reply })
    }

    /// The metadata of `stream` (default when never set).
    pub fn metadata(&self, stream: &str) -> Result<StreamMetadata> {
        Ok(self.head(stream)?.metadata)
    }

    /// The head of `stream`: last revision and position, deletion and metadata. Never fails for
    /// a missing stream (its `last_revision` is `None`).
    pub fn head(&self, stream: &str) -> Result<StreamHead> {
        let committed = self.shared.committed();
        let state = self.shared.snapshot();
        self.shared.head(&state, stream, committed)
    }

    /// Reads up to `limit` events of `stream` from `from` in `direction`, enforcing deletion and
    /// metadata. [`Error::StreamNotFound`] if never written, [`Error::StreamDeleted`] if deleted.
    pub fn read_stream(
        &self,
        stream: &str,
        from: ReadFrom,
        direction: Direction,
        limit: usize,
    ) -> Result<ReadSlice> {
        read::read_stream(&self.shared, stream, from, direction, limit)
    }

    /// One event of `stream` by revision; `Ok(None)` if it does not exist or is hidden.
    pub fn read_event(&self, stream: &str, revision: u64) -> Result<Option<RecordedEvent>> {
        read::read_event(&self.shared, stream, revision)
    }

    /// Reads up to `limit` events of the whole log matching `filter`. Type, category and
    /// correlation filters (and prefixes containing `-`) are answered from the indexes.
    pub fn read_all(
        &self,
        from: ReadFrom,
        direction: Direction,
        limit: usize,
        filter: &AllFilter,
    ) -> Result<ReadSlice> {
        read::read_all(&self.shared, from, direction, limit, filter)
    }

    /// The first event in log order with this id among the events that carry a
    /// `metadata.correlation_id` or `causation_id` (the others are not in the correlation
    /// index; see [`crate::correlation`]). Found through the index, without a scan.
    pub fn find_event_by_id(&self, id: uuid::Uuid) -> Result<Option<RecordedEvent>> {
        crate::causation::find_event(&self.shared, id)
    }

    /// The chain of causes of the event `id` (found as by [`Store::find_event_by_id`]): the
    /// event its `causation_id` names (the latest event with that id before it), that event's
    /// cause, and so on, at most `max` events, in log order (the root first). `Ok(None)` when
    /// no indexed event has that id. The walk stops at an event without `causation_id`, or at a
    /// cause that is not in the index ([`crate::CausalChain::unresolved`]).
    pub fn causes(&self, id: uuid::Uuid, max: usize) -> Result<Option<crate::CausalChain>> {
        crate::causation::causes(&self.shared, id, max)
    }

    /// The events caused by the event `id`, directly (their `causation_id` is `id`) or through
    /// other effects, at most `max`, in log order; found through the correlation index.
    pub fn effects(&self, id: uuid::Uuid, max: usize) -> Result<crate::CausalChain> {
        crate::causation::effects(&self.shared, id, max)
    }

    /// Calls `f` for every event in positions `[from, end)` without copying payloads (the fast
    /// replay path). Returns the position after the last event visited.
    pub fn replay(&self, from: u64, mut f: impl FnMut(&crate::EventView<'_>)) -> Result<u64> {
        self.replay_range(from, u64::MAX, |v| {
            f(v);
            ControlFlow::Continue(())
        })
    }

    /// Like [`Store::replay`] for positions `[from, to)` (clamped to the end of the log), and
    /// `f` may stop early with `ControlFlow::Break`. Returns the position after the last event
    /// `f` was called with (so a caller can resume exactly there).
    pub fn replay_range(
        &self,
        from: u64,
        to: u64,
        mut f: impl FnMut(&crate::EventView<'_>) -> ControlFlow<()>,
    ) -> Result<u64> {
        let committed = self.shared.committed();
        let state = self.shared.snapshot();
        let mut next = from.min(committed);
        self.shared
            .scan_forward(&state, next, to.min(committed), |v| {
                next = v.position + 1;
                f(v)
            })?;
        Ok(next)
    }

    /// Lists live streams whose names start with `prefix`, after `after`, in byte order. The
    /// second value is the `after` of the next page, `None` on the last page.
    pub fn list_streams(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<StreamInfo>, Option<String>)> {
        read::list_streams(&self.shared, prefix, after, limit)
    }

    /// A subscription to the whole log, starting at `from_position`.
    pub fn subscribe_all(&self, from_position: u64, filter: AllFilter) -> Subscription {
        Subscription::new(
            self.shared.clone(),
            SubscriptionTarget::All(filter),
            from_position,
        )
    }

    /// A subscription to one stream, starting at `from_revision`.
    pub fn subscribe_stream(&self, stream: &str, from_revision: u64) -> Subscription {
        Subscription::new(
            self.shared.clone(),
            SubscriptionTarget::Stream(stream.to_owned()),
            from_revision,
        )
    }

    /// The number of events in the log: the position the next append will get.
    pub fn next_position(&self) -> u64 {
        self.shared.committed()
    }

    /// Every damaged range found since open (at open, by reads, by index rebuilds), in the
    /// order found. Non-empty means [`Health::Damaged`] or, when the lost events are unknown or
    /// lie in the open segment, [`Health::ReadOnly`].
    pub fn damage(&self) -> Vec<Damage> {
        self.shared.damage.all()
    }

    /// Whether the store accepts writes: a fault (read-only) wins over a full disk, which wins
    /// over damage in sealed data.
    pub fn health(&self) -> Health {
        if self.shared.read_only.load(Ordering::Acquire) {
            Health::ReadOnly(
                self.shared
                    .fault
                    .lock()
                    .clone()
                    .unwrap_or_else(|| "opened read-only".into()),
            )
        } else if let Some((reason, needed)) = self.shared.disk_full.state() {
            // The condition passes by itself: once the file system has room for the write that
            // failed, the store is healthy again without waiting for an append to try (a
            // readiness check that stopped sending traffic would otherwise wait forever).
            match self
                .shared
                .options
                .file_io
                .available_space(&self.shared.dir)
            {
                Ok(free) if free >= needed => self.damaged_or_ok(),
                _ => Health::DiskFull(reason),
            }
        } else {
            self.damaged_or_ok()
        }
    }

    fn damaged_or_ok(&self) -> Health {
        if !self.shared.damage.any() {
            return Health::Ok;
        }
        match self.shared.damage.all().first() {
            Some(d) => Health::Damaged(format!(
                "damaged data in {} at offset {}: {}",
                d.file.display(),
                d.offset,
                d.detail
            )),
            None => Health::Ok,
        }
    }

    /// Counters since open.
    pub fn stats(&self) -> StatsSnapshot {
        self.shared.stats.snapshot()
    }

    /// Facts about the data directory.
    pub fn info(&self) -> StoreInfo {
        let state = self.shared.snapshot();
        let mut bytes = 0;
        let mut paths: Vec<PathBuf> = state.sealed.iter().map(|s| s.path.clone()).collect();
        paths.extend(state.sealed.iter().map(|s| s.index_path().to_path_buf()));
        // The removed-events files of scavenged segments (absent for the others).
        paths.extend(
            state
                .sealed
                .iter()
                .map(|s| crate::scavenge::sidecar::path_of(&s.path)),
        );
        for p in paths {
            bytes += std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
        }
        // The open segment up to its published end: its file runs up to 4 MiB of zeros past that
        // (the writer's extension ahead of its writes, no disk space until written).
        bytes += state.open.table.read().end;
        StoreInfo {
            dir: self.shared.dir.clone(),
            next_position: self.shared.committed(),
            segment_count: state.sealed.len() + 1,
            bytes_on_disk: bytes,
        }
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &Options {
        &self.shared.options
    }

    /// The state shared with the writer (scavenges; tests: who was notified of commits).
    pub(crate) fn shared(&self) -> &Arc<crate::log::Shared> {
        &self.shared
    }

    /// The state shared with the writer, for the crate's own modules.
    pub(crate) fn shared_state(&self) -> &Arc<crate::log::Shared> {
        &self.shared
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.shared.dir)
            .field("next_position", &self.shared.committed())
            .finish()
    }
}

/// Takes the directory's exclusive lock so that two processes never write one store.
pub(crate) fn lock_dir(dir: &Path) -> Result<File> {
    let path = dir.join("LOCK");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    // SAFETY: flock on a file descriptor we own; no memory is passed.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        return Err(Error::io(
            &path,
            std::io::Error::new(
                std::io::ErrorKind::WouldBlock,
                "the data directory is in use by another process",
            ),
        ));
    }
    Ok(file)
}

/// What recovery found.
struct Recovered {
    state: LogState,
    next_position: u64,
    open_len: u64,
    fault: Option<String>,
    /// Damage found while opening (the open segment's scan, index rebuilds).
    damage: Vec<Damage>,
}

/// Opens the segment set: sealed segments through their index files, the last by a scan.
///
/// Damage does not stop the scan of the open segment: it resumes on the next valid frame, the
/// positions lost are recorded (no frame offset, listed as damage), and the store opens
/// read-only with everything outside the damaged bytes readable. A torn tail (damage no valid
/// frame follows) is cut back to the last whole append as after any crash.
fn recover(dir: &Path, options: &Options) -> Result<Recovered> {
    let merged_away = crate::scavenge::finish_interrupted(dir, options.read_only)?;
    let mut segments = list_segments(dir)?;
    segments.retain(|(first, _)| !merged_away.contains(first));
    if segments.is_empty() {
        if options.read_only {
            return Err(Error::io(
                dir,
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no segments in data directory",
                ),
            ));
        }
        let path = dir.join(segment_file_name(0));
        create_segment(dir, &path, 0, options)?;
        segments.push((0, path));
    }
    let (last_first, last_path) = segments
        .pop()
        .ok_or_else(|| Error::invalid("dir", "no segments"))?;
    let mut sealed = Vec::with_capacity(segments.len());
    let mut damage = Vec::new();
    // The log starts at position 0: a first segment with another name means segments are missing.
    let mut expected_first = 0;
    for (i, (first, path)) in segments.iter().enumerate() {
        let (first, path) = (*first, path);
        if first != expected_first {
            return Err(Error::corruption(
                path,
                0,
                format!(
                    "segment starts at position {first}, the previous one ends at {expected_first}"
                ),
            ));
        }
        let next_first = segments.get(i + 1).map_or(last_first, |s| s.0);
        let seg = open_sealed(dir, path, first, next_first, options)?;
        damage.extend(seg.lost().iter().cloned());
        expected_first = seg.end_position();
        sealed.push(Arc::new(seg));
    }
    if last_first != expected_first {
        return Err(Error::corruption(
            &last_path,
            0,
            format!("segment starts at position {last_first}, the previous one ends at {expected_first}"),
        ));
    }
    let map = map_file(&last_path)?;
    let mut table = Memtable::default();
    let outcome = scan_segment(&map, last_first, ScanMode::Open, None, |item| match item {
        Scanned::Event(v, offset) => table.insert(&MemEntry::from_view(v, offset)),
        Scanned::Missing(r) => table.insert_missing(r),
    });
    let file_len = map.len() as u64;
    drop(map);
    let lost: Vec<Damage> = outcome
        .damage
        .iter()
        .map(|d| d.to_damage(&last_path, false))
        .collect();
    let mut fault = outcome.first_error(&last_path).map(|e| e.to_string());
    if options.read_only && fault.is_none() {
        fault = Some("opened read-only".into());
    }
    let mut open_len = outcome.committed_len;
    if fault.is_none() && (outcome.torn.is_some() || file_len != open_len) {
        // Cut the torn tail (or an unfinished append) back to the last whole commit.
        if open_len < SEGMENT_HEADER_LEN {
            create_segment(dir, &last_path, last_first, options)?;
            open_len = SEGMENT_HEADER_LEN;
        } else {
            let f = OpenOptions::new()
                .write(true)
                .open(&last_path)
                .map_err(|e| Error::io(&last_path, e))?;
            f.set_len(open_len)
                .and_then(|()| f.sync_all())
                .map_err(|e| Error::io(&last_path, e))?;
        }
    }
    // Positions past the committed end (an unfinished append after the damage) are not served.
    table
        .offsets
        .truncate((outcome.next_position - last_first) as usize);
    if !lost.is_empty() || outcome.version == crate::frame::SEGMENT_FORMAT_VERSION_GAPS {
        // A stream's revision 0 may be lost (or removed) while later ones are here.
        table.list_every_stream_as_created();
    }
    table.end = open_len;
    let mut open = OpenSegment::open(&last_path, last_first, table, options.segment_size)?;
    open.lost = lost.clone();
    damage.extend(lost);
    Ok(Recovered {
        state: LogState {
            sealed,
            open: Arc::new(open),
        },
        next_position: outcome.next_position,
        open_len,
        fault,
        damage,
    })
}

/// Writes a fresh segment file holding only its header, durably.
fn create_segment(dir: &Path, path: &Path, first_position: u64, options: &Options) -> Result<()> {
    let f = File::create(path).map_err(|e| Error::io(path, e))?;
    drop(f);
    let mut file = options
        .file_io
        .open_append(path)
        .map_err(|e| Error::io(path, e))?;
    file.write_all(&encode_segment_header(first_position))
        .and_then(|()| file.sync_data())
        .map_err(|e| Error::io(path, e))?;
    sync_dir(dir).map_err(|e| Error::io(dir, e))
}

/// Opens a sealed segment (positions `first..next_first`) through its index file, rebuilding
/// the index if it is missing or does not validate. A rebuild that finds damage keeps the index
/// in memory and the segment lists the positions lost ([`SealedSegment::lost`]).
fn open_sealed(
    dir: &Path,
    path: &Path,
    first: u64,
    next_first: u64,
    options: &Options,
) -> Result<SealedSegment> {
    let map = map_file(path)?;
    let len = map.len() as u64;
    let idx_path = dir.join(index_file_name(first));
    match SegmentIndex::open(&idx_path, first, len) {
        Ok(index) => Ok(SealedSegment::new(
            path.to_owned(),
            first,
            map,
            index,
            !options.read_only,
            options.rebuild_progress.clone(),
        )),
        Err(_) => {
            let write = (!options.read_only).then_some(idx_path.as_path());
            let (index, lost) = rebuild_index(
                path,
                &map,
                first,
                next_first,
                &idx_path,
                write,
                options.rebuild_progress.as_ref(),
            )?;
            Ok(SealedSegment::freshly_indexed(
                path.to_owned(),
                first,
                map,
                index,
                lost,
            ))
        }
    }
}
