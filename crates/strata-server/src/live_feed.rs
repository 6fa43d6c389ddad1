//! The one loop every live reader of the log runs in the server: read what is there on the
//! blocking pool, and when nothing is, wait for the next commit — without a timer, a gap or a
//! duplicate. SSE subscriptions ([`crate::subscribe`]) and consumer-group feeders
//! ([`crate::groups`]) both read through a [`LiveFeed`]; the projection runner, which has a
//! thread of its own, runs the blocking twin of the same loop on the store's
//! [`Subscription`] directly.
//!
//! Reads go to the blocking pool because a page of the log may fault in from disk, except at
//! the live tail: once a read came back short (the feed caught up), the next one covers only
//! what was committed since, just written and resident, and runs inline on the async worker
//! while [`crate::read_placement`] allows (it falls back to the pool after a read that faulted).
//! At 1,000 events/s that saves two blocking-pool hand-offs per event (the read that returns
//! the event and the one that finds nothing more). Every method is cancel-safe, so callers can `select!`
//! it against a keepalive timer, a closed client or shutdown: a read in progress when the future
//! is dropped is picked up by the next call, and the cursor never moves without its events being
//! handed out.

use strata_store::{RecordedEvent, Subscription};

use crate::read_placement;
use tokio::task::JoinHandle;

/// A read on the blocking pool: the subscription travels with it and comes back with the events.
type Pending = JoinHandle<(Subscription, strata_store::Result<Vec<RecordedEvent>>)>;

/// A store [`Subscription`] read from async code. See the module docs.
pub(crate) struct LiveFeed {
    /// The subscription while no read is in flight.
    idle: Option<Subscription>,
    /// The read in flight, if a previous call was cancelled while waiting for it.
    pending: Option<Pending>,
    /// The subscription's cursor after the last completed read.
    cursor: u64,
    /// Whether the last read came back short of its `max`: the feed is at the live tail.
    live: bool,
}

/// Why a [`LiveFeed`] could not go on.
#[derive(Debug)]
pub(crate) enum FeedError {
    /// The store failed the read (closed, damaged, read-only): the caller decides whether to end
    /// or to wait for a commit and retry ([`LiveFeed::wait`]).
    Store(strata_store::Error),
    /// The blocking task holding the subscription panicked or was cancelled: the feed is over.
    Lost,
}

impl LiveFeed {
    /// A feed starting at the subscription's cursor.
    pub(crate) fn new(subscription: Subscription) -> LiveFeed {
        LiveFeed {
            cursor: subscription.cursor(),
            idle: Some(subscription),
            pending: None,
            live: false,
        }
    }

    /// The position (`$all`) or revision (stream) the next event will have at least, as of the
    /// last completed read.
    pub(crate) fn cursor(&self) -> u64 {
        self.cursor
    }

    /// Reads up to `max` events available now (empty when caught up): on the blocking pool, or
    /// inline at the live tail (see the module docs).
    pub(crate) async fn poll(&mut self, max: usize) -> Result<Vec<RecordedEvent>, FeedError> {
        let max = max.max(1);
        if self.pending.is_none() && self.live && read_placement::shared().inline() {
            let subscription = self.idle.as_mut().ok_or(FeedError::Lost)?;
            let events = read_placement::inline(|| subscription.poll(max));
            self.cursor = subscription.cursor();
            return self.finish(events, max);
        }
        let pending = match self.pending.as_mut() {
            Some(pending) => pending,
            None => {
                let mut subscription = self.idle.take().ok_or(FeedError::Lost)?;
                self.pending.insert(tokio::task::spawn_blocking(move || {
                    let events = subscription.poll(max);
                    (subscription, events)
                }))
            }
        };
        let joined = pending.await;
        self.pending = None;
        let (subscription, events) = joined.map_err(|_| FeedError::Lost)?;
        self.cursor = subscription.cursor();
        self.idle = Some(subscription);
        self.finish(events, max)
    }

    /// Notes whether a read of up to `max` events left the feed at the live tail.
    fn finish(
        &mut self,
        events: strata_store::Result<Vec<RecordedEvent>>,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, FeedError> {
        let events = events.map_err(FeedError::Store)?;
        self.live = events.len() < max;
        Ok(events)
    }

    /// Waits until something is committed after the last read (at once if it already was).
    pub(crate) async fn wait(&mut self) -> Result<(), FeedError> {
        if self.pending.is_some() {
            // A read is still in flight: its result is the next thing to look at.
            return Ok(());
        }
        let subscription = self.idle.as_ref().ok_or(FeedError::Lost)?;
        subscription.wait().await.map_err(FeedError::Store)
    }

    /// The next non-empty batch of at most `max` events: reads, and while caught up calls
    /// `caught_up(cursor)` and waits for a commit, then reads again.
    pub(crate) async fn next_batch(
        &mut self,
        max: usize,
        mut caught_up: impl FnMut(u64),
    ) -> Result<Vec<RecordedEvent>, FeedError> {
        loop {
            let events = self.poll(max).await?;
            if !events.is_empty() {
                return Ok(events);
            }
            caught_up(self.cursor);
            self.wait().await?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::task::Poll;
    use std::time::Duration;
    use strata_store::{AllFilter, ExpectedRevision, FsyncPolicy, NewEvent, Options, Store};

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let options = Options {
            fsync: FsyncPolicy::Never,
            ..Options::default()
        };
        let store = Store::open(dir.path(), options).unwrap();
        (dir, store)
    }

    fn append(store: &Store, n: usize) {
        let events = (0..n).map(|_| NewEvent::json("T", "{}")).collect();
        store.append("s-1", ExpectedRevision::Any, events).unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batches_then_waits_for_the_next_commit() {
        let (_dir, store) = store();
        append(&store, 3);
        let mut feed = LiveFeed::new(store.subscribe_all(0, AllFilter::default()));
        let mut caught_up = Vec::new();
        let first = feed.next_batch(2, |c| caught_up.push(c)).await.unwrap();
        assert_eq!(first.iter().map(|e| e.position).collect::<Vec<_>>(), [0, 1]);
        assert_eq!(feed.cursor(), 2);
        let second = feed.next_batch(10, |c| caught_up.push(c)).await.unwrap();
        assert_eq!(second.len(), 1);
        assert!(caught_up.is_empty());

        let waiting = tokio::spawn(async move {
            let mut seen = Vec::new();
            let batch = feed.next_batch(10, |c| seen.push(c)).await.unwrap();
            (batch, seen)
        });
        // The feed reports it is caught up at 3 before it is handed the next commit.
        tokio::time::sleep(Duration::from_millis(50)).await;
        append(&store, 1);
        let (batch, seen) = waiting.await.unwrap();
        assert_eq!(batch.iter().map(|e| e.position).collect::<Vec<_>>(), [3]);
        assert_eq!(seen.first(), Some(&3));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancelled_call_loses_no_event() {
        let (_dir, store) = store();
        let mut feed = LiveFeed::new(store.subscribe_all(0, AllFilter::default()));
        let mut delivered = Vec::new();
        let mut cancelled = 0;
        for round in 0..50u64 {
            append(&store, 1);
            // Cancel a call at once, every other round: whatever it had read is handed out by
            // the next call.
            if round % 2 == 0 {
                // Polled exactly once, then dropped: cut while its read is in flight.
                let mut call = Box::pin(feed.next_batch(1, |_| {}));
                let first = std::future::poll_fn(|cx| Poll::Ready(call.as_mut().poll(cx))).await;
                drop(call);
                match first {
                    Poll::Ready(batch) => {
                        delivered.extend(batch.unwrap().iter().map(|e| e.position));
                        continue;
                    }
                    Poll::Pending => cancelled += 1,
                }
            }
            let batch = feed.next_batch(100, |_| {}).await.unwrap();
            delivered.extend(batch.iter().map(|e| e.position));
        }
        assert_eq!(delivered, (0..50).collect::<Vec<_>>());
        assert!(
            cancelled > 0,
            "no call was cut while its read was in flight"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_closed_store_ends_the_feed() {
        let (_dir, store) = store();
        let mut feed = LiveFeed::new(store.subscribe_all(0, AllFilter::default()));
        store.close().unwrap();
        assert!(matches!(
            feed.next_batch(10, |_| {}).await,
            Err(FeedError::Store(strata_store::Error::Closed))
        ));
    }
}
