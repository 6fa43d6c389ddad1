//! The feeder task: keeps the window filled from the store through a [`LiveFeed`] (the
//! server's one live-read loop); when caught up it waits for the writer's commit notification,
//! when the window is full it waits on the group's `room` until an ack, nack or timeout frees
//! room — it never sleeps on a timer.
//!
//! It wakes long polls when it adds events, and acks waiting for it after a restart once it has
//! read as far as it could (caught up, window full, or source unreadable). A source it cannot
//! read (e.g. the source stream is deleted) is the group's error until it reads again; a later
//! commit may fix it. A damaged event is parked with reason `corrupt` and the feeder goes on
//! with the next one (never a silent skip, never a stalled group). When the store is closed under it, it stops the group's other tasks too,
//! so that they release the store.

use std::sync::Arc;

use strata_store::{AllFilter, Store};

use super::{event_size, Group};
use crate::groups::settings::Source;
use crate::live_feed::{FeedError, LiveFeed};

/// The feeder task: keeps the window filled from the store (module docs). When the store is
/// closed under it, it stops the group's other tasks too, so that they release the store.
pub(super) async fn feeder(group: Arc<Group>, store: Store, batch: usize) {
    feed(&group, store, batch).await;
    group.stop.send_replace(true);
    group.mark_caught_up();
}

async fn feed(group: &Arc<Group>, store: Store, batch: usize) {
    let start = group.state.lock().dispatcher.fed_to();
    let subscribe = |start: u64| match group.source() {
        Source::All => store.subscribe_all(start, AllFilter::default()),
        Source::Category(c) => store.subscribe_all(
            start,
            AllFilter {
                category: Some(c),
                ..AllFilter::default()
            },
        ),
        Source::Stream(s) => store.subscribe_stream(&s, start),
    };
    let subscription = subscribe(start);
    // A store read is bounded by a count only: the largest event of the last reads bounds it by
    // the window's byte budget too (before any, the largest event the store accepts). The hint
    // halves with each read of smaller events, so one large event does not slow the group's
    // reads for good.
    let limits = &store.options().limits;
    let largest =
        limits.max_event_size + limits.max_stream_name_len + limits.max_event_type_len + 128;
    let mut size_hint: Option<usize> = None;
    let mut feed = LiveFeed::new(subscription);
    loop {
        if group.is_stopping() {
            return;
        }
        let room_wait = group.room.notified();
        let (room, byte_room) = {
            let st = group.state.lock();
            (st.dispatcher.room(), st.dispatcher.byte_room())
        };
        if room == 0 {
            group.mark_caught_up();
            tokio::select! {
                () = room_wait => continue,
                () = group.stopped() => return,
            }
        }
        let by_bytes = (byte_room / size_hint.unwrap_or(largest).max(1)).max(1);
        let want = room.min(batch).min(by_bytes).max(1);
        // While caught up, the dispatcher learns how far the source was examined.
        let caught_up = |cursor: u64| {
            {
                let mut st = group.state.lock();
                st.dispatcher.advance_fed(cursor);
                st.error = None;
            }
            group.mark_caught_up();
        };
        let batch = tokio::select! {
            batch = feed.next_batch(want, caught_up) => batch,
            () = group.stopped() => return,
        };
        match batch {
            Ok(events) => {
                {
                    let mut st = group.state.lock();
                    st.error = None;
                    let mut hint = size_hint.map_or(0, |h| h / 2);
                    for e in events {
                        let c = group.cursor_of(&e);
                        let size = event_size(&e);
                        hint = hint.max(size);
                        let stream: Arc<str> = Arc::from(e.stream.as_str());
                        st.dispatcher.feed(c, stream, Arc::new(e), size);
                    }
                    st.dispatcher.advance_fed(feed.cursor());
                    size_hint = Some(hint);
                }
                group.wake.notify_waiters();
            }
            Err(FeedError::Lost | FeedError::Store(strata_store::Error::Closed)) => return,
            Err(FeedError::Store(e)) => {
                // A damaged event: parked (reason `corrupt`), and the group goes on after it.
                // The feed stops on the damaged event (the events before it were fed), so its
                // cursor is the event's revision for a stream source; for the log, the error
                // names the position.
                let damaged_at = match (&e, group.source()) {
                    // Only a revision the stream has: with damage of unknown events, a stream
                    // not written yet answers damage too, and is waited for like any other.
                    (strata_store::Error::Corruption { .. }, Source::Stream(s)) => {
                        let cursor = feed.cursor();
                        let store = store.clone();
                        let head = tokio::task::spawn_blocking(move || store.head(&s))
                            .await
                            .ok()
                            .and_then(|h| h.ok())
                            .and_then(|h| h.last_revision);
                        head.is_some_and(|last| last >= cursor).then_some(cursor)
                    }
                    (strata_store::Error::Corruption { position, .. }, _) => *position,
                    _ => None,
                };
                if let Some(cursor) = damaged_at {
                    if group.park_corrupt(cursor, &e) {
                        feed = LiveFeed::new(subscribe(cursor.saturating_add(1)));
                        group.wake.notify_waiters();
                        continue;
                    }
                }
                let message = e.to_string();
                {
                    let mut st = group.state.lock();
                    // Logged once per distinct error, not on every commit that retries it.
                    if st.error.as_deref() != Some(message.as_str()) {
                        tracing::warn!(error = %message, group = %group.name, "consumer group cannot read its source");
                        st.error = Some(message);
                    }
                }
                group.mark_caught_up();
                // A later commit (the stream re-created, ...) may fix it: wait for one.
                tokio::select! {
                    woke = feed.wait() => if woke.is_err() { return },
                    () = group.stopped() => return,
                }
            }
        }
    }
}
