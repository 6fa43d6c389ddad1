//! The NDJSON representation of a read (`Accept: application/x-ndjson`): every matching event
//! from `from` to the end of the log as it was when the request arrived, one JSON object per
//! line, with no `limit` cap.
//!
//! The replay is streamed: a producer task reads one page at a time on the blocking pool,
//! renders it, and hands it to the response through a channel of [`CHANNEL_PAGES`] pages. When
//! the client reads slowly the channel fills and the producer waits, so memory stays at a few
//! pages (sized to about [`TARGET_PAGE_BYTES`]) whatever the size of the log.
//!
//! The status line goes out after the first page was read, so a missing or deleted stream is
//! still a 404 / 410. Should a later page fail (the stream deleted meanwhile, a storage fault),
//! the last line is an error object `{"error": ..., "message": ...}` — never an event.
//!
//! Damage: a page ends before a damaged event ([`crate::until_damage`]), so every intact event
//! before it is sent, and the next page's 500 `corrupt` error (with `file`, `offset`,
//! `position`) is the last line. A replay whose first event is damaged is a plain 500.

use axum::response::Response;
use bytes::Bytes;
use strata_store::{Direction, ReadFrom, ReadSlice, RecordedEvent, Store};
use tokio::sync::mpsc;

use crate::app::App;
use crate::body::{ChannelBody, PageSizer};
use crate::error::Result;
use crate::event_json::{write_event, Layout};
use crate::query::{ReadParams, Source};
use crate::response::streamed;
use crate::until_damage::read_until_damage;

/// Pages buffered between the producer and the response.
const CHANNEL_PAGES: usize = 2;
/// Rendered bytes a page aims at; the page size in events adapts to the events' sizes.
const TARGET_PAGE_BYTES: usize = 1 << 20;

/// Answers a read with a streamed NDJSON replay.
pub(crate) async fn replay(app: App, source: Source, params: &ReadParams) -> Result<Response> {
    let job = Job {
        source,
        direction: params.direction,
        next: params.read_from(),
        bound: None,
        sizer: PageSizer::new(TARGET_PAGE_BYTES, 1, 8192),
        done: false,
    };
    // The first page decides the status: errors are still proper responses here.
    let (job, first) = next_page(&app, job).await?;
    let (tx, rx) = mpsc::channel(CHANNEL_PAGES);
    if !job.done {
        tokio::spawn(produce(app, job, tx));
    }
    Ok(streamed(
        ChannelBody::body(first, rx),
        "application/x-ndjson",
    ))
}

/// Sends the remaining pages until the replay is done, the client is gone, or the server
/// shuts down.
async fn produce(app: App, mut job: Job, tx: mpsc::Sender<Bytes>) {
    while !job.done {
        let page = tokio::select! {
            page = next_page(&app, job) => page,
            () = tx.closed() => return,
            () = app.shutting_down() => return,
        };
        let chunk = match page {
            Ok((next_job, chunk)) => {
                job = next_job;
                chunk
            }
            Err(e) => {
                tracing::warn!(error = %e, "NDJSON replay failed midway");
                let mut line = e.body().to_string().into_bytes();
                line.push(b'\n');
                let _ = tx.send(Bytes::from(line)).await;
                return;
            }
        };
        if chunk.is_empty() {
            continue;
        }
        tokio::select! {
            sent = tx.send(chunk) => if sent.is_err() { return },
            () = app.shutting_down() => return,
        }
    }
}

/// Reads and renders the next page on the blocking pool.
async fn next_page(app: &App, mut job: Job) -> Result<(Job, Bytes)> {
    let (job, chunk, events) = app
        .blocking(move |store| {
            let (chunk, events) = job.page(store)?;
            Ok((job, chunk, events))
        })
        .await?;
    app.metrics().add_events_read(events);
    Ok((job, Bytes::from(chunk)))
}

/// Where a replay stands.
struct Job {
    source: Source,
    direction: Direction,
    /// Where the next page starts.
    next: ReadFrom,
    /// Forward replays stop before this revision / position: the end when the replay began.
    bound: Option<u64>,
    sizer: PageSizer,
    done: bool,
}

impl Job {
    /// Reads one page, renders its lines, and advances. Returns the bytes and the event count.
    fn page(&mut self, store: &Store) -> strata_store::Result<(Vec<u8>, usize)> {
        let limit = self.sizer.limit();
        let forward = self.direction == Direction::Forward;
        let (slice, key): (ReadSlice, fn(&RecordedEvent) -> u64) = match &self.source {
            Source::Stream(stream) => {
                if forward && self.bound.is_none() {
                    let head = store.head(stream)?;
                    self.bound = Some(head.last_revision.map_or(0, |r| r + 1));
                }
                let slice = read_until_damage(self.next, limit, |from, limit| {
                    store.read_stream(stream, from, self.direction, limit)
                })?;
                (slice, |e| e.revision)
            }
            Source::All(filter) => {
                if forward && self.bound.is_none() {
                    self.bound = Some(store.next_position());
                }
                let slice = read_until_damage(self.next, limit, |from, limit| {
                    store.read_all(from, self.direction, limit, filter)
                })?;
                (slice, |e| e.position)
            }
        };
        let ReadSlice { events, next, end } = slice;
        let mut out = Vec::new();
        let mut count = 0;
        let mut past_bound = false;
        for e in &events {
            if forward && self.bound.is_some_and(|b| key(e) >= b) {
                past_bound = true;
                break;
            }
            write_event(&mut out, e, Layout::Line);
            out.push(b'\n');
            count += 1;
        }
        self.sizer.observe(out.len(), count);
        match next {
            Some(n) => self.next = ReadFrom::At(n),
            None => self.done = true,
        }
        let reached_bound = forward && matches!((next, self.bound), (Some(n), Some(b)) if n >= b);
        if end || past_bound || reached_bound || events.is_empty() {
            self.done = true;
        }
        Ok((out, count))
    }
}
