//! The single writer thread: validation, the expected-revision and idempotency checks, group
//! commit (one `write` + one `fdatasync` for everything queued), publication, segment sealing.
//!
//! Publication order, the rule every reader relies on: bytes written → synced (per policy) →
//! memtable updated → `committed` advanced → subscribers notified → callers acknowledged.
//!
//! - [`validate`]: the checks of an append's input, run on the caller's thread.
//! - [`prepare`]: one request checked against its group's view of the stream heads and encoded.
//! - [`roll`]: sealing the open segment and starting the next.
//! - here: the thread, the request loop, admission of prepared requests to a group, and the
//!   group commit that writes, syncs, publishes and acknowledges it.

mod prepare;
mod roll;
#[cfg(test)]
mod tests;
mod validate;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Instant;

use foldhash::fast::RandomState;

use crate::error::{is_out_of_space, Error, Result};
use crate::event::{AppendResult, DeleteResult, ExpectedRevision, NewEvent, StreamMetadata};
use crate::file_io::AppendFile;
use crate::id_gen::IdGen;
use crate::log::{space_needed, LogState, Shared};
use crate::memtable::MemEntry;
use crate::options::FsyncPolicy;
use prepare::{Head, Overlay, PendingEntry, Prepared};
use roll::needs_roll;
pub(crate) use validate::{validate_append, validate_count, validate_event};

/// Most requests folded into one group commit.
const MAX_GROUP: usize = 4096;

/// How far past its writes the writer extends the open segment's file (see
/// [`AppendFile::extend_to`]): one longer file to record per 4 MiB of appends, not one per sync.
pub(crate) const EXTEND_AHEAD: u64 = 4 << 20;

/// A request to the writer. Each carries the channel its answer goes back on.
pub(crate) enum Request {
    Append {
        stream: String,
        expected: ExpectedRevision,
        events: Vec<NewEvent>,
        reply: oneshot::Sender<Result<AppendResult>>,
    },
    Delete {
        stream: String,
        expected: ExpectedRevision,
        hard: bool,
        reply: oneshot::Sender<Result<DeleteResult>>,
    },
    SetMetadata {
        stream: String,
        metadata: StreamMetadata,
        reply: oneshot::Sender<Result<DeleteResult>>,
    },
    /// Makes everything written so far durable, whatever the policy.
    Flush {
        reply: oneshot::Sender<Result<()>>,
    },
    Shutdown {
        reply: oneshot::Sender<Result<()>>,
    },
}

/// An answer to send once the group it belongs to is durable.
enum Reply {
    Append(oneshot::Sender<Result<AppendResult>>, AppendResult),
    Position(oneshot::Sender<Result<DeleteResult>>, DeleteResult),
    Flush(oneshot::Sender<Result<()>>),
}

impl Reply {
    fn send_ok(self) {
        // A caller that stopped waiting is not an error: the append stands.
        match self {
            Reply::Append(tx, r) => drop(tx.send(Ok(r))),
            Reply::Position(tx, r) => drop(tx.send(Ok(r))),
            Reply::Flush(tx) => drop(tx.send(Ok(()))),
        }
    }

    fn send_err(self, e: Error) {
        match self {
            Reply::Append(tx, _) => drop(tx.send(Err(e))),
            Reply::Position(tx, _) => drop(tx.send(Err(e))),
            Reply::Flush(tx) => drop(tx.send(Err(e))),
        }
    }
}

/// One group commit being assembled.
#[derive(Default)]
struct Group {
    buf: Vec<u8>,
    entries: Vec<PendingEntry>,
    replies: Vec<Reply>,
    overlay: Overlay,
    appends: u64,
}

/// The writer thread's state.
pub(crate) struct Writer {
    shared: Arc<Shared>,
    file: Box<dyn AppendFile>,
    state: Arc<LogState>,
    /// Bytes of the open segment that are written and published.
    seg_len: u64,
    /// The length the open segment's file was extended to ahead of the writes (at least
    /// `seg_len`; zeros past it, see [`AppendFile::extend_to`]).
    extended: u64,
    /// The open segment's file did not extend ([`AppendFile::extend_to`] failed or is not
    /// supported): it grows with each write.
    extend_refused: bool,
    /// Next position to assign outside a group (equals `shared.committed` between groups).
    next_position: u64,
    heads: HashMap<String, Head, RandomState>,
    /// The [`Shared::heads_epoch`] `heads` are valid for.
    heads_epoch: u64,
    ids: IdGen,
    /// Hands acknowledgements of large groups to the acker thread.
    acks: Option<std::sync::mpsc::Sender<Vec<Reply>>>,
    unsynced: bool,
    last_sync: Instant,
    /// The writer's own spinning slot (see [`Writer::spin_recv`]).
    spin: crate::spin::Spinner,
    /// Requests in the last batch the writer drained.
    last_batch: usize,
}

impl Writer {
    pub fn new(shared: Arc<Shared>, file: Box<dyn AppendFile>, seg_len: u64) -> Writer {
        let state = shared.snapshot();
        let next_position = shared.committed();
        Writer {
            shared,
            file,
            state,
            seg_len,
            extended: seg_len,
            extend_refused: false,
            next_position,
            heads: HashMap::default(),
            heads_epoch: 0,
            ids: IdGen::new(),
            acks: None,
            unsynced: false,
            last_sync: Instant::now(),
            spin: Default::default(),
            last_batch: 0,
        }
    }

    /// The thread body: serve requests until shutdown or until every sender is gone.
    pub fn run(mut self, rx: Receiver<Request>) {
        // Waking the callers of a large group costs one futex wake each: a second thread does
        // that while the writer already writes the next group.
        let (acks, acks_rx) = std::sync::mpsc::channel::<Vec<Reply>>();
        let acker = std::thread::Builder::new()
            .name("strata-acker".into())
            .spawn(move || {
                for replies in acks_rx {
                    for r in replies {
                        r.send_ok();
                    }
                }
            })
            .ok();
        if acker.is_some() {
            self.acks = Some(acks);
        }
        let shutdown = self.serve(&rx);
        let r = self.final_sync();
        // Every acknowledgement goes out before close returns.
        self.acks = None;
        if let Some(acker) = acker {
            let _ = acker.join();
        }
        if let Some(reply) = shutdown {
            drop(reply.send(r));
        }
    }

    /// Serves requests until shutdown (returning its reply channel) or until every sender is gone.
    fn serve(&mut self, rx: &Receiver<Request>) -> Option<oneshot::Sender<Result<()>>> {
        loop {
            let first = match self.sync_deadline() {
                Some(deadline) => {
                    match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                        Ok(r) => r,
                        Err(RecvTimeoutError::Timeout) => {
                            self.periodic_sync();
                            continue;
                        }
                        Err(RecvTimeoutError::Disconnected) => return None,
                    }
                }
                None => match self.spin_recv(rx) {
                    Some(r) => r,
                    None => match rx.recv() {
                        Ok(r) => r,
                        Err(_) => return None,
                    },
                },
            };
            let mut batch = vec![first];
            while batch.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            self.last_batch = batch.len();
            if let Some(reply) = self.process(batch) {
                return Some(reply);
            }
        }
    }

    /// Polls the queue briefly before the writer sleeps on it, when no fsync paces the callers
    /// (their next request may be µs away; see `crate::spin`).
    fn spin_recv(&self, rx: &Receiver<Request>) -> Option<Request> {
        // Only behind a lone caller: with more, the queue rarely runs dry, and a spinning
        // writer would take a CPU from the callers it waits for.
        if matches!(self.shared.options.fsync, FsyncPolicy::Always) || self.last_batch > 1 {
            return None;
        }
        self.spin
            .spin(crate::spin::WRITER_SPIN, || rx.try_recv().ok())
    }

    fn sync_deadline(&self) -> Option<Instant> {
        match self.shared.options.fsync {
            FsyncPolicy::Interval(d) if self.unsynced => Some(self.last_sync + d),
            _ => None,
        }
    }

    fn periodic_sync(&mut self) {
        if self.unsynced && !self.shared.read_only.load(Ordering::Acquire) {
            if let Err(e) = self.sync() {
                self.shared.poison(format!("fsync failed: {e}"));
            }
        }
    }

    fn final_sync(&mut self) -> Result<()> {
        let pending = self.unsynced || self.extended > self.seg_len;
        if pending && !self.shared.read_only.load(Ordering::Acquire) {
            let path = self.state.open.path.clone();
            // A closed store leaves the open segment as long as its data.
            self.cut_extension_and_sync().map_err(|e| {
                self.shared.poison(format!("fsync failed: {e}"));
                Error::io(path, e)
            })?;
        }
        Ok(())
    }

    /// Extends the open segment's file [`EXTEND_AHEAD`] past a write of `len` bytes that would
    /// pass the extended length. A file (system) that does not extend is not asked again: the
    /// writes grow it instead, as they would without this.
    fn extend_ahead(&mut self, len: u64) {
        let need = self.seg_len + len;
        if need > self.extended && !self.extend_refused {
            let to = need + EXTEND_AHEAD;
            match self.file.extend_to(to) {
                Ok(true) => self.extended = to,
                Ok(false) | Err(_) => self.extend_refused = true,
            }
        }
    }

    /// Cuts the open segment's file back to `seg_len` if it was extended past it (durably:
    /// [`AppendFile::truncate`] syncs), else syncs it.
    fn cut_extension_and_sync(&mut self) -> std::io::Result<()> {
        if self.extended > self.seg_len {
            let t = Instant::now();
            self.file.truncate(self.seg_len)?;
            self.shared.stats.record_fsync(t.elapsed());
            self.extended = self.seg_len;
            self.unsynced = false;
            self.last_sync = Instant::now();
            Ok(())
        } else {
            self.sync()
        }
    }

    fn sync(&mut self) -> std::io::Result<()> {
        let t = Instant::now();
        self.file.sync_data()?;
        self.shared.stats.record_fsync(t.elapsed());
        self.unsynced = false;
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Processes one drained batch; returns the shutdown reply if the batch asked to stop.
    fn process(&mut self, batch: Vec<Request>) -> Option<oneshot::Sender<Result<()>>> {
        // A scavenge may have swapped sealed segments in: look up through the current list, so
        // that the replaced files are released.
        let current = self.shared.snapshot();
        if !Arc::ptr_eq(&current, &self.state) {
            self.state = current;
        }
        let mut group = Group::default();
        group.overlay.next_position = self.next_position;
        let mut shutdown = None;
        for req in batch {
            if shutdown.is_some() {
                // Requests behind a shutdown are refused, never half-done.
                refuse(req, Error::Closed);
                continue;
            }
            let req = match (req, self.shared.check_writable()) {
                (Request::Shutdown { reply }, _) => {
                    shutdown = Some(reply);
                    continue;
                }
                (req, Err(e)) => {
                    refuse(req, e);
                    continue;
                }
                (req, Ok(())) => req,
            };
            let start = group.buf.len();
            match req {
                Request::Shutdown { .. } => {}
                Request::Flush { reply } => group.replies.push(Reply::Flush(reply)),
                Request::Append {
                    stream,
                    expected,
                    events,
                    reply,
                } => {
                    let r = self.prepare_append(
                        &group.overlay,
                        &stream,
                        expected,
                        events,
                        &mut group.buf,
                    );
                    self.admit(&mut group, start, r, reply);
                }
                Request::Delete {
                    stream,
                    expected,
                    hard,
                    reply,
                } => {
                    let r = self.prepare_delete(
                        &group.overlay,
                        &stream,
                        expected,
                        hard,
                        &mut group.buf,
                    );
                    self.admit(&mut group, start, r, reply);
                }
                Request::SetMetadata {
                    stream,
                    metadata,
                    reply,
                } => {
                    let r = self.prepare_set_metadata(
                        &group.overlay,
                        &stream,
                        metadata,
                        &mut group.buf,
                    );
                    self.admit(&mut group, start, r, reply);
                }
            }
        }
        self.commit(group);
        if shutdown.is_some() {
            return shutdown;
        }
        None
    }

    /// Adds a prepared request to the group (sealing the segment first if its frames would not
    /// fit), or answers its error at once: a refused request wrote nothing.
    fn admit<T>(
        &mut self,
        group: &mut Group,
        start: usize,
        prepared: Result<Prepared<T>>,
        reply: impl ReplyTo<T>,
    ) {
        let mut p = match prepared {
            Ok(p) => p,
            Err(e) => {
                group.buf.truncate(start);
                reply.fail(e);
                return;
            }
        };
        let added = (group.buf.len() - start) as u64;
        let before = self.seg_len + start as u64;
        if needs_roll(before, added, self.shared.options.segment_size) {
            let tail = group.buf.split_off(start);
            let rest = std::mem::take(group);
            let published = self.commit(rest);
            group.overlay.next_position = self.next_position;
            if !published {
                // This request was checked against the group's view, which is not published:
                // it cannot stand alone. The group's requests got the same answer.
                reply.fail(self.refusal());
                return;
            }
            if let Err(e) = self.shared.check_writable() {
                reply.fail(e);
                return;
            }
            match self.roll() {
                Ok(()) => {}
                Err(Error::DiskFull { path, source }) => {
                    // Nothing changed: the segment stays open and the seal is retried by the
                    // next request that does not fit.
                    let needed = space_needed(&source, self.seal_needs(added));
                    let e = Error::DiskFull { path, source };
                    self.shared
                        .disk_full
                        .set(format!("sealing segment failed: {e}"), needed);
                    reply.fail(e);
                    return;
                }
                Err(e) => {
                    self.shared.poison(format!("sealing segment failed: {e}"));
                    reply.fail(Error::ReadOnly {
                        reason: e.to_string(),
                    });
                    return;
                }
            }
            group.buf = tail;
            for e in &mut p.entries {
                e.rel_offset -= start as u64;
            }
        }
        if !p.entries.is_empty() {
            group.appends += 1;
            group.overlay.next_position = p.entries[p.entries.len() - 1].position + 1;
        }
        group.entries.append(&mut p.entries);
        group.overlay.absorb(p.heads, p.ids);
        group.replies.push(reply.into_reply(p.result));
    }

    /// Writes, syncs, publishes and acknowledges a group; `true` once it is published. On
    /// failure nothing of it is published and every request in it gets the error: out of space
    /// on the write, the bytes are cut back and the answer is [`Error::DiskFull`] (the store
    /// stays writable); any other failure, or a failed cut, turns the store read-only.
    fn commit(&mut self, group: Group) -> bool {
        let Group {
            buf,
            entries,
            replies,
            overlay,
            appends,
        } = group;
        let flush_asked = replies.iter().any(|r| matches!(r, Reply::Flush(_)));
        if !buf.is_empty() && self.shared.read_only.load(Ordering::Acquire) {
            // A lookup while preparing the group (a sealed segment's index checked on first
            // use and rebuilt over damage) found events whose stream is unknown and made the
            // store read-only: the heads the group was checked against may be wrong (a lost
            // head's revision would be reused), so nothing of it is written.
            for r in replies {
                r.send_err(self.refusal());
            }
            return false;
        }
        if !buf.is_empty() {
            self.extend_ahead(buf.len() as u64);
            if let Err(e) = self.file.write_all(&buf) {
                self.write_failed(e, buf.len() as u64, replies);
                return false;
            }
            self.unsynced = true;
            if let Err(e) = self.sync_per_policy(flush_asked) {
                // A failed fsync after a successful write is a fault whatever the errno (ENOSPC
                // included: some file systems allocate only at writeback): what the page cache
                // still holds is unknown, so nothing more is written until a restart recovers
                // from what is on disk.
                let reason = format!("fsync of {} failed: {e}", self.state.open.path.display());
                self.shared.poison(reason.clone());
                // Best effort: cut the unacknowledged bytes so a restart does not resurrect them.
                let _ = self.file.truncate(self.seg_len);
                self.extended = self.seg_len;
                for r in replies {
                    r.send_err(Error::ReadOnly {
                        reason: reason.clone(),
                    });
                }
                return false;
            }
            self.shared.disk_full.clear();
            {
                let mut table = self.state.open.table.write();
                for e in &entries {
                    table.insert(&MemEntry {
                        stream: &e.stream,
                        stream_hash: e.stream_hash,
                        category_hash: e.category_hash,
                        type_hash: e.type_hash,
                        id: e.id,
                        revision: e.revision,
                        position: e.position,
                        offset: self.seg_len + e.rel_offset,
                        links: e.links,
                    });
                }
                table.end = self.seg_len + buf.len() as u64;
            }
            self.seg_len += buf.len() as u64;
            self.next_position = overlay.next_position;
            self.shared
                .stats
                .record_commit(appends, entries.len() as u64, buf.len() as u64);
            if self.heads.len() + overlay.heads.len() > self.shared.options.head_cache_capacity {
                self.heads.clear();
            }
            self.heads.extend(overlay.heads);
            self.shared
                .committed
                .store(self.next_position, Ordering::Release);
            self.shared.commits.notify(usize::MAX);
        } else if flush_asked && self.unsynced {
            if let Err(e) = self.sync() {
                let reason = format!("fsync failed: {e}");
                self.shared.poison(reason.clone());
                for r in replies {
                    r.send_err(Error::ReadOnly {
                        reason: reason.clone(),
                    });
                }
                return false;
            }
        }
        const INLINE_ACKS: usize = 2;
        let replies = match &self.acks {
            Some(acks) if replies.len() > INLINE_ACKS => match acks.send(replies) {
                Ok(()) => return true,
                Err(std::sync::mpsc::SendError(replies)) => replies,
            },
            _ => replies,
        };
        for r in replies {
            r.send_ok();
        }
        true
    }

    /// Syncs what was just written if the policy (or a flush in the group) asks for it.
    fn sync_per_policy(&mut self, flush_asked: bool) -> std::io::Result<()> {
        match self.shared.options.fsync {
            _ if flush_asked => self.sync(),
            FsyncPolicy::Always => self.sync(),
            FsyncPolicy::Interval(d) if self.last_sync.elapsed() >= d => self.sync(),
            FsyncPolicy::Interval(_) | FsyncPolicy::Never => Ok(()),
        }
    }

    /// Answers a group whose write failed. Out of space: the bytes are cut back to the end of
    /// the last published group, the store is marked disk-full (not poisoned) and every request
    /// gets [`Error::DiskFull`]. Anything else, or a cut that fails (the file's end is then
    /// unknown): the store turns read-only.
    fn write_failed(&mut self, e: std::io::Error, bytes: u64, replies: Vec<Reply>) {
        let path = self.state.open.path.clone();
        let reason = format!("write to {} failed: {e}", path.display());
        if is_out_of_space(&e) {
            match self.file.truncate(self.seg_len) {
                Ok(()) => {
                    self.extended = self.seg_len;
                    self.shared.disk_full.set(reason, space_needed(&e, bytes));
                    for r in replies {
                        r.send_err(Error::DiskFull {
                            path: path.clone(),
                            source: copy_io_error(&e),
                        });
                    }
                    return;
                }
                Err(cut) => {
                    let reason = format!("{reason}; cutting it back failed: {cut}");
                    self.shared.poison(reason.clone());
                    for r in replies {
                        r.send_err(Error::ReadOnly {
                            reason: reason.clone(),
                        });
                    }
                    return;
                }
            }
        }
        self.shared.poison(reason.clone());
        // Best effort: cut the unacknowledged bytes so a restart does not resurrect them.
        let _ = self.file.truncate(self.seg_len);
        self.extended = self.seg_len;
        for r in replies {
            r.send_err(Error::ReadOnly {
                reason: reason.clone(),
            });
        }
    }

    /// The answer for a request that cannot go on because the group before it failed.
    fn refusal(&self) -> Error {
        if let Err(e) = self.shared.check_writable() {
            return e;
        }
        Error::DiskFull {
            path: self.state.open.path.clone(),
            source: std::io::Error::from_raw_os_error(libc::ENOSPC),
        }
    }
}

/// The same I/O error again (`io::Error` is not `Clone`): the OS code when there is one.
pub(crate) fn copy_io_error(e: &std::io::Error) -> std::io::Error {
    match e.raw_os_error() {
        Some(code) => std::io::Error::from_raw_os_error(code),
        None => std::io::Error::new(e.kind(), e.to_string()),
    }
}

/// A reply channel for a request whose success value is `T`.
trait ReplyTo<T> {
    fn into_reply(self, value: T) -> Reply;
    fn fail(self, e: Error);
}

impl ReplyTo<AppendResult> for oneshot::Sender<Result<AppendResult>> {
    fn into_reply(self, value: AppendResult) -> Reply {
        Reply::Append(self, value)
    }
    fn fail(self, e: Error) {
        drop(self.send(Err(e)));
    }
}

impl ReplyTo<DeleteResult> for oneshot::Sender<Result<DeleteResult>> {
    fn into_reply(self, value: DeleteResult) -> Reply {
        Reply::Position(self, value)
    }
    fn fail(self, e: Error) {
        drop(self.send(Err(e)));
    }
}

/// Answers a request with an error without touching the log.
fn refuse(req: Request, e: Error) {
    match req {
        Request::Append { reply, .. } => drop(reply.send(Err(e))),
        Request::Delete { reply, .. } | Request::SetMetadata { reply, .. } => {
            drop(reply.send(Err(e)))
        }
        Request::Flush { reply } | Request::Shutdown { reply } => drop(reply.send(Err(e))),
    }
}
