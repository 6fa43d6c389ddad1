//! The Server-Sent Events representation of a read (`Accept: text/event-stream`): a catch-up
//! subscription. All matching history from `from` (or right after `Last-Event-ID`), then live
//! events as they are committed, with no gap and no duplicate at the switch — the store's
//! [`Subscription`] is one cursor over the log for both phases.
//!
//! Each event is one message:
//!
//! ```text
//! event: OrderPlaced
//! id: 7
//! data: {"id":"…","stream":"order-42","revision":7,…}
//!
//! ```
//!
//! where `id` is the revision (stream subscriptions) or the position (`/all`). A `: keepalive`
//! comment opens the response and follows whenever nothing was sent for the keepalive interval
//! (15 s by default). If the subscription fails (the stream is deleted, a storage fault) a final
//! `event: error` message carries the API error JSON and the response ends.
//!
//! Backpressure: the producer task reads a page from the log, renders it, and sends it through
//! a channel of [`CHANNEL_CHUNKS`] chunks of about [`TARGET_CHUNK_BYTES`]. A slow reader fills the
//! channel and the producer waits; the subscription only remembers its position, so nothing
//! else accumulates: memory per subscriber is bounded whatever the reader's speed.

use std::time::Instant;

use axum::http::HeaderValue;
use axum::response::Response;
use bytes::Bytes;
use strata_store::{RecordedEvent, Subscription, SubscriptionTarget};
use tokio::sync::mpsc;

use crate::app::App;
use crate::body::{ChannelBody, PageSizer};
use crate::error::{Error, Result};
use crate::event_json::{write_event, write_u64, Layout};
use crate::live_feed::{FeedError, LiveFeed};
use crate::query::{FromParam, ReadParams, Source};
use crate::response::streamed;

/// Rendered chunks buffered between the producer and the response.
const CHANNEL_CHUNKS: usize = 4;
/// Bytes a chunk aims at; the number of events read at once adapts to their sizes.
const TARGET_CHUNK_BYTES: usize = 256 * 1024;
/// The comment that keeps idle connections (and proxies) alive.
const KEEPALIVE: &[u8] = b": keepalive\n\n";

/// Answers a read with an SSE catch-up subscription.
pub(crate) async fn subscribe(
    app: App,
    source: Source,
    params: &ReadParams,
    last_event_id: Option<u64>,
) -> Result<Response> {
    params.require_forward()?;
    let resume_at = last_event_id
        .map(|id| {
            id.checked_add(1)
                .ok_or_else(|| Error::invalid("Last-Event-ID is out of range"))
        })
        .transpose()?;
    let subscription = match source {
        Source::Stream(stream) => {
            let name = stream.clone();
            let head = app.blocking(move |store| store.head(&name)).await?;
            if head.is_deleted() {
                return Err(Error::StreamDeleted { stream });
            }
            // A stream that does not exist yet is waited for.
            let start = resume_at.unwrap_or(match params.from {
                None | Some(FromParam::Start) => 0,
                Some(FromParam::At(n)) => n,
                Some(FromParam::End) => head.last_revision.map_or(0, |r| r + 1),
            });
            app.store().subscribe_stream(&stream, start)
        }
        Source::All(filter) => {
            let start = resume_at.unwrap_or(match params.from {
                None | Some(FromParam::Start) => 0,
                Some(FromParam::At(n)) => n,
                Some(FromParam::End) => app.store().next_position(),
            });
            app.store().subscribe_all(start, filter)
        }
    };
    let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
    tokio::spawn(produce(app, subscription, tx));
    let body = ChannelBody::body(Bytes::from_static(KEEPALIVE), rx);
    let mut response = streamed(body, "text/event-stream");
    // Ask reverse proxies (nginx) not to buffer the stream.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// Feeds one subscriber until it disconnects, the subscription fails, or the server shuts down.
async fn produce(app: App, subscription: Subscription, tx: mpsc::Sender<Bytes>) {
    let _open = app.metrics().subscription_opened();
    let by_revision = matches!(subscription.target(), SubscriptionTarget::Stream(_));
    let keepalive = app.keepalive_interval();
    let mut sizer = PageSizer::new(TARGET_CHUNK_BYTES, 1, 1024);
    let mut feed = LiveFeed::new(subscription);
    let mut last_sent = Instant::now();
    loop {
        // The next events (read on the blocking pool, waiting for commits while caught up),
        // a keepalive when nothing was sent for a while, the client leaving, or shutdown.
        let batch = tokio::select! {
            batch = feed.next_batch(sizer.limit(), |_| {}) => batch,
            () = tokio::time::sleep_until((last_sent + keepalive).into()) => {
                // A full channel means data is on its way anyway.
                if let Err(mpsc::error::TrySendError::Closed(_)) =
                    tx.try_send(Bytes::from_static(KEEPALIVE))
                {
                    return;
                }
                last_sent = Instant::now();
                continue;
            }
            () = tx.closed() => return,
            () = app.shutting_down() => return,
        };
        match batch {
            Ok(events) => {
                let chunk = render(&events, by_revision);
                sizer.observe(chunk.len(), events.len());
                app.metrics().add_events_read(events.len());
                tokio::select! {
                    sent = tx.send(Bytes::from(chunk)) => if sent.is_err() { return },
                    () = app.shutting_down() => return,
                }
                last_sent = Instant::now();
            }
            Err(FeedError::Lost | FeedError::Store(strata_store::Error::Closed)) => return,
            Err(FeedError::Store(e)) => {
                let error = app.store_error(e);
                tracing::info!(error = %error, "subscription ended");
                let mut msg = b"event: error\ndata: ".to_vec();
                msg.extend_from_slice(error.body().to_string().as_bytes());
                msg.extend_from_slice(b"\n\n");
                let _ = tx.send(Bytes::from(msg)).await;
                return;
            }
        }
    }
}

/// Renders events as SSE messages.
fn render(events: &[RecordedEvent], by_revision: bool) -> Vec<u8> {
    let size: usize = events
        .iter()
        .map(|e| 240 + e.event_type.len() + e.stream.len() + e.data.len() + e.metadata.len())
        .sum();
    let mut out = Vec::with_capacity(size);
    for e in events {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(e.event_type.as_bytes());
        out.extend_from_slice(b"\nid: ");
        write_u64(&mut out, if by_revision { e.revision } else { e.position });
        out.extend_from_slice(b"\ndata: ");
        write_event(&mut out, e, Layout::Line);
        out.extend_from_slice(b"\n\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_store::ContentType;

    #[test]
    fn messages() {
        let e = RecordedEvent {
            id: uuid::Uuid::nil(),
            stream: "s-1".into(),
            revision: 3,
            position: 9,
            event_type: "Happened".into(),
            timestamp_micros: 0,
            content_type: ContentType::Json,
            data: b"{\n\"a\": 1\n}".to_vec(),
            metadata: Vec::new(),
        };
        let text = String::from_utf8(render(std::slice::from_ref(&e), true)).unwrap();
        let lines: Vec<&str> = text.split('\n').collect();
        assert_eq!(lines[0], "event: Happened");
        assert_eq!(lines[1], "id: 3");
        assert!(lines[2].starts_with("data: {\"id\":"));
        assert_eq!((lines[3], lines[4]), ("", ""));
        let all = String::from_utf8(render(&[e], false)).unwrap();
        assert!(all.contains("\nid: 9\n"));
    }
}
