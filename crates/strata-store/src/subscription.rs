//! Live subscriptions: catch up from the log, then follow new commits, with no gap and no
//! duplicate at the switch.
//!
//! A subscription holds no queue: it remembers where it is and reads the log from there, so a
//! slow subscriber costs the same bounded memory as a fast one. It waits for commits on the
//! writer's notification, blocking ([`Subscription::wait_blocking`]) or async
//! ([`Subscription::wait`]), and never polls on a timer.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::event::{AllFilter, Direction, ReadFrom, RecordedEvent};
use crate::log::Shared;
use crate::read::{read_all, read_stream};
use event_listener::Listener;

/// What a subscription follows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubscriptionTarget {
    /// The whole log, filtered; the cursor is a log position.
    All(AllFilter),
    /// One stream; the cursor is a revision. A stream that does not exist yet is waited for.
    Stream(String),
}

/// A cursor over the log that can wait for more. See the module docs.
pub struct Subscription {
    shared: Arc<Shared>,
    target: SubscriptionTarget,
    /// Next position (`All`) or revision (`Stream`) to deliver.
    next: u64,
    /// The published end observed before the last read: newer commits wake [`Subscription::wait`].
    seen: u64,
}

impl Subscription {
    pub(crate) fn new(shared: Arc<Shared>, target: SubscriptionTarget, from: u64) -> Self {
        Subscription {
            shared,
            target,
            next: from,
            seen: 0,
        }
    }

    /// What this subscription follows.
    pub fn target(&self) -> &SubscriptionTarget {
        &self.target
    }

    /// The position (`All`) or revision (`Stream`) the next delivered event will have at least.
    pub fn cursor(&self) -> u64 {
        self.next
    }

    /// Returns up to `max` events available now, without waiting; empty when caught up.
    /// Each event is returned exactly once, in log order.
    pub fn poll(&mut self, max: usize) -> Result<Vec<RecordedEvent>> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        self.seen = self.shared.committed();
        match &self.target {
            SubscriptionTarget::All(filter) => {
                let slice = read_all(
                    &self.shared,
                    ReadFrom::At(self.next),
                    Direction::Forward,
                    max,
                    filter,
                )?;
                if let Some(next) = slice.next {
                    self.next = next;
                }
                Ok(slice.events)
            }
            SubscriptionTarget::Stream(stream) => {
                match read_stream(
                    &self.shared,
                    stream,
                    ReadFrom::At(self.next),
                    Direction::Forward,
                    max,
                ) {
                    Ok(slice) => {
                        if let Some(next) = slice.next {
                            self.next = next;
                        }
                        Ok(slice.events)
                    }
                    Err(Error::StreamNotFound { .. }) => Ok(Vec::new()),
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// True when commits happened since the last [`Subscription::poll`] started.
    pub fn has_new_commits(&self) -> bool {
        self.shared.committed() > self.seen
    }

    /// Blocks until something was committed after the last poll, the store closes, or `timeout`
    /// passes. Returns `Ok(false)` on timeout.
    pub fn wait_blocking(&self, timeout: Option<Duration>) -> Result<bool> {
        loop {
            let listener = self.shared.commits.listen();
            if self.shared.closed.load(Ordering::Acquire) {
                return Err(Error::Closed);
            }
            if self.has_new_commits() {
                return Ok(true);
            }
            match timeout {
                None => listener.wait(),
                Some(t) => {
                    if listener.wait_timeout(t).is_none() {
                        return Ok(self.has_new_commits());
                    }
                }
            }
        }
    }

    /// Waits (async, without blocking the executor thread) until something was committed after
    /// the last poll or the store closes.
    pub async fn wait(&self) -> Result<()> {
        loop {
            let listener = self.shared.commits.listen();
            if self.shared.closed.load(Ordering::Acquire) {
                return Err(Error::Closed);
            }
            if self.has_new_commits() {
                return Ok(());
            }
            listener.await;
        }
    }

    /// Blocks until at least one event is available (or `timeout` passes) and returns up to `max`.
    pub fn next_batch_blocking(
        &mut self,
        max: usize,
        timeout: Option<Duration>,
    ) -> Result<Vec<RecordedEvent>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let batch = self.poll(max)?;
            if !batch.is_empty() {
                return Ok(batch);
            }
            let remaining = match deadline {
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return Ok(batch);
                    }
                    Some(d - now)
                }
                None => None,
            };
            self.wait_blocking(remaining)?;
        }
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("target", &self.target)
            .field("next", &self.next)
            .finish()
    }
}
