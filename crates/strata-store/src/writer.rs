//! The single writer thread: validation, the expected-revision and idempotency checks, group
//! commit (one `write` + one `fdatasync` for everything queued), publication, segment sealing.
//!
//! Publication order, the rule every reader relies on: bytes written → synced (per policy) →
//! memtable updated → `committed` advanced → subscribers notified → callers acknowledged.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Instant;

use foldhash::fast::RandomState;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::event::{
    now_micros, AppendResult, ContentType, CurrentRevision, DeleteResult, Deletion,
    ExpectedRevision, NewEvent, StreamHead, StreamMetadata,
};
use crate::file_io::{sync_dir, AppendFile};
use crate::frame::{encode_frame, encode_segment_header, FrameFields, SEGMENT_HEADER_LEN};
use crate::hash::{category_of, hash_str};
use crate::id_gen::IdGen;
use crate::index_file::{write_index, SegmentIndex};
use crate::json_check::check_json;
use crate::log::{
    meta_stream_name, LogState, MetaRecord, Shared, META_EVENT_TYPE, META_STREAM_PREFIX,
};
use crate::memtable::{MemEntry, Memtable};
use crate::options::{FsyncPolicy, Limits};
use crate::segment::{index_file_name, map_file, segment_file_name, OpenSegment, SealedSegment};

/// Most requests folded into one group commit.
const MAX_GROUP: usize = 4096;

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

/// The writer's view of a stream: its last event and its metadata state.
#[derive(Clone, Debug)]
struct Head {
    last: Option<(u64, u64)>,
    meta: MetaRecord,
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

/// A memtable entry of a pending frame, its offset relative to the group buffer.
struct PendingEntry {
    stream: Arc<str>,
    stream_hash: u64,
    category_hash: u64,
    type_hash: u64,
    id: u128,
    revision: u64,
    position: u64,
    rel_offset: u64,
}

/// State changed by the requests of a group that is not durable yet.
#[derive(Default)]
struct Overlay {
    /// Heads changed by this group.
    heads: HashMap<String, Head, RandomState>,
    /// Client-chosen ids appended by this group: (stream, id) → (revision, position).
    ids: HashMap<(String, Uuid), (u64, u64), RandomState>,
    /// Next position to assign.
    next_position: u64,
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

/// What one request adds to a group, before it is committed to it.
struct Prepared<T> {
    entries: Vec<PendingEntry>,
    heads: Vec<(String, Head)>,
    ids: Vec<((String, Uuid), (u64, u64))>,
    result: T,
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

/// The writer thread's state.
pub(crate) struct Writer {
    shared: Arc<Shared>,
    file: Box<dyn AppendFile>,
    state: Arc<LogState>,
    /// Bytes of the open segment that are written and published.
    seg_len: u64,
    /// Next position to assign outside a group (equals `shared.committed` between groups).
    next_position: u64,
    heads: HashMap<String, Head, RandomState>,
    ids: IdGen,
    /// Hands acknowledgements of large groups to the acker thread.
    acks: Option<std::sync::mpsc::Sender<Vec<Reply>>>,
    unsynced: bool,
    last_sync: Instant,
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
            next_position,
            heads: HashMap::default(),
            ids: IdGen::new(),
            acks: None,
            unsynced: false,
            last_sync: Instant::now(),
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
                None => match rx.recv() {
                    Ok(r) => r,
                    Err(_) => return None,
                },
            };
            let mut batch = vec![first];
            while batch.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            if let Some(reply) = self.process(batch) {
                return Some(reply);
            }
        }
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
        if self.unsynced && !self.shared.read_only.load(Ordering::Acquire) {
            let path = self.state.open.path.clone();
            self.sync().map_err(|e| {
                self.shared.poison(format!("fsync failed: {e}"));
                Error::io(path, e)
            })?;
        }
        Ok(())
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
        if added > 0
            && before > SEGMENT_HEADER_LEN
            && before + added > self.shared.options.segment_size
        {
            let tail = group.buf.split_off(start);
            let overlay_next = group.overlay.next_position;
            let rest = std::mem::take(group);
            self.commit(rest);
            if let Err(e) = self.shared.check_writable() {
                reply.fail(e);
                return;
            }
            if let Err(e) = self.roll() {
                self.shared.poison(format!("sealing segment failed: {e}"));
                reply.fail(Error::ReadOnly {
                    reason: e.to_string(),
                });
                return;
            }
            group.buf = tail;
            group.overlay.next_position = overlay_next;
            for e in &mut p.entries {
                e.rel_offset -= start as u64;
            }
        }
        if !p.entries.is_empty() {
            group.appends += 1;
            group.overlay.next_position = p.entries[p.entries.len() - 1].position + 1;
        }
        group.entries.append(&mut p.entries);
        for (name, head) in p.heads {
            group.overlay.heads.insert(name, head);
        }
        for (k, v) in p.ids {
            group.overlay.ids.insert(k, v);
        }
        group.replies.push(reply.into_reply(p.result));
    }

    /// Writes, syncs, publishes and acknowledges a group. On failure nothing of it is published,
    /// every request in it gets the error, and the store turns read-only.
    fn commit(&mut self, group: Group) {
        let Group {
            buf,
            entries,
            replies,
            overlay,
            appends,
        } = group;
        let flush_asked = replies.iter().any(|r| matches!(r, Reply::Flush(_)));
        if !buf.is_empty() {
            let written = self.write_durably(&buf).and_then(|()| {
                if flush_asked && self.unsynced {
                    self.sync()
                } else {
                    Ok(())
                }
            });
            if let Err(e) = written {
                let reason = format!("write to {} failed: {e}", self.state.open.path.display());
                self.shared.poison(reason.clone());
                // Best effort: cut the unacknowledged bytes so a restart does not resurrect them.
                let _ = self.file.truncate(self.seg_len);
                for r in replies {
                    r.send_err(Error::ReadOnly {
                        reason: reason.clone(),
                    });
                }
                return;
            }
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
                    });
                }
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
                return;
            }
        }
        const INLINE_ACKS: usize = 2;
        let replies = match &self.acks {
            Some(acks) if replies.len() > INLINE_ACKS => match acks.send(replies) {
                Ok(()) => return,
                Err(std::sync::mpsc::SendError(replies)) => replies,
            },
            _ => replies,
        };
        for r in replies {
            r.send_ok();
        }
    }

    fn write_durably(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.file.write_all(buf)?;
        self.unsynced = true;
        match self.shared.options.fsync {
            FsyncPolicy::Always => self.sync(),
            FsyncPolicy::Interval(d) if self.last_sync.elapsed() >= d => self.sync(),
            FsyncPolicy::Interval(_) | FsyncPolicy::Never => Ok(()),
        }
    }

    /// Seals the open segment (index file written, segment mapped) and starts a new one at
    /// `next_position`. Called only between groups, so everything in the segment is published.
    fn roll(&mut self) -> Result<()> {
        let open_path = self.state.open.path.clone();
        self.sync().map_err(|e| Error::io(&open_path, e))?;
        let dir = self.shared.dir.clone();
        let open = self.state.open.clone();
        let input = open
            .table
            .read()
            .to_index_input(open.first_position, self.seg_len);
        let idx_path = dir.join(index_file_name(open.first_position));
        write_index(&idx_path, input)?;
        let sealed = SealedSegment::freshly_indexed(
            open.path.clone(),
            open.first_position,
            map_file(&open.path)?,
            SegmentIndex::open(&idx_path, open.first_position, self.seg_len)?,
        );
        let path = dir.join(segment_file_name(self.next_position));
        let mut file = self
            .shared
            .options
            .file_io
            .open_append(&path)
            .map_err(|e| Error::io(&path, e))?;
        file.write_all(&encode_segment_header(self.next_position))
            .and_then(|()| file.sync_data())
            .map_err(|e| Error::io(&path, e))?;
        sync_dir(&dir).map_err(|e| Error::io(&dir, e))?;
        let new_open = OpenSegment::open(&path, self.next_position, Memtable::default())?;
        let mut sealed_list = self.state.sealed.clone();
        sealed_list.push(Arc::new(sealed));
        let state = Arc::new(LogState {
            sealed: sealed_list,
            open: Arc::new(new_open),
        });
        *self.shared.state.write() = state.clone();
        self.state = state;
        self.file = file;
        self.seg_len = SEGMENT_HEADER_LEN;
        self.unsynced = false;
        Ok(())
    }

    /// The head of `stream` as this group sees it.
    fn head(&mut self, overlay: &Overlay, stream: &str) -> Result<Head> {
        if let Some(h) = overlay.heads.get(stream).or_else(|| self.heads.get(stream)) {
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
        if let Some(&found) = overlay.ids.get(&(stream.to_owned(), id)) {
            return Ok(Some(found));
        }
        self.shared.find_id(&self.state, stream, id)
    }

    fn prepare_append(
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
        if view.deletion == Some(Deletion::Hard) {
            return Err(Error::StreamDeleted {
                stream: stream.to_owned(),
            });
        }
        if let Some(replay) = self.idempotent_replay(overlay, stream, expected, &events, &view)? {
            return Ok(Prepared::nothing(replay));
        }
        check_expected(expected, view.current())?;
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

    /// The original result if every id of `events` was already appended to `stream` as one
    /// contiguous run where `expected` says it should start; `DuplicateEventId` if only some
    /// were, or not as that run; `None` if none was.
    fn idempotent_replay(
        &self,
        overlay: &Overlay,
        stream: &str,
        expected: ExpectedRevision,
        events: &[NewEvent],
        head: &StreamHead,
    ) -> Result<Option<AppendResult>> {
        let mut found = Vec::with_capacity(events.len());
        let mut first_dup = None;
        let mut any_new = false;
        for e in events {
            let Some(id) = e.id else {
                any_new = true;
                continue;
            };
            match self.find_id(overlay, stream, id)? {
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
            stream: stream.to_owned(),
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

    fn prepare_delete(
        &mut self,
        overlay: &Overlay,
        stream: &str,
        expected: ExpectedRevision,
        hard: bool,
        buf: &mut Vec<u8>,
    ) -> Result<Prepared<DeleteResult>> {
        validate_stream_name(stream, &self.shared.options.limits)?;
        let head = self.head(overlay, stream)?;
        let view = head.view(stream);
        let Some(last) = view.last_revision else {
            return Err(Error::StreamNotFound {
                stream: stream.to_owned(),
            });
        };
        if view.deletion == Some(Deletion::Hard) || (view.is_deleted() && !hard) {
            return Err(Error::StreamDeleted {
                stream: stream.to_owned(),
            });
        }
        check_expected(expected, view.current())?;
        let meta = MetaRecord {
            metadata: head.meta.metadata.clone(),
            deletion: Some(if hard {
                Deletion::Hard
            } else {
                Deletion::Soft { at: last }
            }),
        };
        self.prepare_meta(overlay, stream, head, meta, buf)
    }

    fn prepare_set_metadata(
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

/// Checks a user-supplied stream name. `$$`-names are the store's own metadata streams.
pub(crate) fn validate_stream_name(stream: &str, limits: &Limits) -> Result<()> {
    if stream.is_empty() {
        return Err(Error::invalid("stream", "must not be empty"));
    }
    if stream.len() > limits.max_stream_name_len.min(u16::MAX as usize - 2) {
        return Err(Error::invalid(
            "stream",
            format!("longer than {} bytes", limits.max_stream_name_len),
        ));
    }
    if stream.chars().any(char::is_control) {
        return Err(Error::invalid(
            "stream",
            "must not contain control characters",
        ));
    }
    if stream.starts_with(META_STREAM_PREFIX) {
        return Err(Error::invalid(
            "stream",
            "names starting with $$ are reserved for stream metadata",
        ));
    }
    Ok(())
}

/// Every check of an append's input, run on the caller's thread before the request is queued
/// (so a refused append writes nothing, and the payload scan, linear in the bytes, runs in
/// parallel across callers rather than on the writer thread). The writer repeats the cheap
/// checks (frame encoding relies on them) but not the payload scan.
pub(crate) fn validate_append(stream: &str, events: &[NewEvent], limits: &Limits) -> Result<()> {
    validate_stream_name(stream, limits)?;
    validate_events(events, limits)?;
    validate_payloads(events, limits)
}

/// JSON payloads (see [`crate::json_check`]): the `data` of JSON events and the metadata of
/// every event, when not empty, must be JSON text nested at most `limits.max_json_depth` deep
/// without lone surrogate escapes. Refused as `events[i].data` / `events[i].metadata`.
fn validate_payloads(events: &[NewEvent], limits: &Limits) -> Result<()> {
    let check = |i: usize, field: &str, bytes: &[u8]| {
        check_json(bytes, limits.max_json_depth)
            .map_err(|problem| Error::invalid(format!("events[{i}].{field}"), problem.to_string()))
    };
    for (i, e) in events.iter().enumerate() {
        if e.content_type == ContentType::Json && !e.data.is_empty() {
            check(i, "data", &e.data)?;
        }
        if !e.metadata.is_empty() {
            check(i, "metadata", &e.metadata)?;
        }
    }
    Ok(())
}

fn validate_events(events: &[NewEvent], limits: &Limits) -> Result<()> {
    if events.is_empty() {
        return Err(Error::invalid(
            "events",
            "an append needs at least one event",
        ));
    }
    if events.len() > limits.max_events_per_append {
        return Err(Error::invalid(
            "events",
            format!(
                "more than {} events in one append",
                limits.max_events_per_append
            ),
        ));
    }
    let mut seen: HashSet<Uuid, RandomState> = HashSet::default();
    for (i, e) in events.iter().enumerate() {
        if e.event_type.is_empty()
            || e.event_type.len() > limits.max_event_type_len.min(u16::MAX as usize)
        {
            return Err(Error::invalid(
                format!("events[{i}].type"),
                format!("must be 1 to {} bytes", limits.max_event_type_len),
            ));
        }
        if e.event_type.chars().any(char::is_control) {
            return Err(Error::invalid(
                format!("events[{i}].type"),
                "must not contain control characters",
            ));
        }
        let size = e.data.len() + e.metadata.len();
        if size > limits.max_event_size || size > u32::MAX as usize {
            return Err(Error::invalid(
                format!("events[{i}]"),
                format!(
                    "data and metadata are {size} bytes, over the limit of {}",
                    limits.max_event_size
                ),
            ));
        }
        if let Some(id) = e.id {
            if !seen.insert(id) {
                return Err(Error::invalid(
                    format!("events[{i}].id"),
                    format!("{id} appears twice in one append"),
                ));
            }
        }
    }
    Ok(())
}
