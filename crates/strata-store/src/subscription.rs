//! Live subscriptions: catch up from the log, then follow new commits, with no gap and no
//! duplicate at the switch.
//!
//! A subscription holds no queue: it remembers where it is and reads the log from there, so a
//! slow subscriber costs the same bounded memory as a fast one. It waits for commits on the
//! writer's notification, blocking ([`Subscription::wait_blocking`],
//! [`Subscription::wait_blocking_until`]) or async ([`Subscription::wait`]), and never polls on
//! a timer.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::event::{AllFilter, Direction, ReadFrom, RecordedEvent};
use crate::log::Shared;
use crate::read::{read_all, read_stream};
use event_listener::{EventListener, Listener};

/// What a subscription follows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubscriptionTarget {
    /// The whole log, filtered; the cursor is a log position.
    All(AllFilter),
    /// One stream; the cursor is a revision. A stream that does not exist yet is waited for.
    Stream(String),
}

/// Why [`Subscription::wait_blocking_until`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Wake {
    /// Something was committed after the last [`Subscription::poll`].
    Committed,
    /// The interrupt listener was notified.
    Interrupted,
    /// The deadline passed (and nothing was committed after the last poll).
    TimedOut,
}

/// A waker that unparks the thread blocked in [`Subscription::wait_blocking_until`].
struct Unpark(Thread);

impl std::task::Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// True when `listener` has been notified; registers `cx`'s waker otherwise.
fn notified(listener: &mut EventListener, cx: &mut Context<'_>) -> bool {
    Pin::new(listener).poll(cx).is_ready()
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
    ///
    /// Damage: the intact events before a damaged one are returned first; the poll that needs
    /// the damaged event itself answers [`Error::Corruption`] and leaves the cursor on it (a
    /// subscriber that decides to go on past it opens a new subscription after it). Never a
    /// skip.
    pub fn poll(&mut self, max: usize) -> Result<Vec<RecordedEvent>> {
        match self.poll_once(max) {
            Err(Error::Corruption { .. }) if max > 1 => {
                // The batch reaches damage: hand out the events before it, one at a time.
                let mut out = Vec::new();
                while out.len() < max {
                    match self.poll_once(1) {
                        Ok(batch) if batch.is_empty() => break,
                        Ok(batch) => out.extend(batch),
                        Err(e) if out.is_empty() => return Err(e),
                        Err(_) => break,
                    }
                }
                Ok(out)
            }
            other => other,
        }
    }

    fn poll_once(&mut self, max: usize) -> Result<Vec<RecordedEvent>> {
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

    /// Blocks until the first of: something was committed after the last poll
    /// ([`Wake::Committed`]), `interrupt` is notified ([`Wake::Interrupted`]), `deadline` passes
    /// ([`Wake::TimedOut`]), or the store closes ([`Error::Closed`]). Nothing else wakes it:
    /// another waiter's interrupt does not, and no timer polls.
    ///
    /// `interrupt` is a listener on the caller's own [`event_listener::Event`], registered
    /// BEFORE the caller checked the condition that event signals (e.g. a stop request): a
    /// notification between that check and this call is then not lost (an `Event` does not
    /// remember notifications nobody listened to). Likewise the commit listener is registered
    /// here before the commits are checked, so a commit racing with the call is not missed.
    ///
    /// Blocks the calling thread (parks it; both listeners unpark it).
    pub fn wait_blocking_until(
        &self,
        mut interrupt: Option<EventListener>,
        deadline: Option<Instant>,
    ) -> Result<Wake> {
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        loop {
            let mut commits = self.shared.commits.listen();
            if self.shared.closed.load(Ordering::Acquire) {
                return Err(Error::Closed);
            }
            if self.has_new_commits() {
                return Ok(Wake::Committed);
            }
            // Until the commit listener fires (then check again: a notification may come from a
            // commit this subscription already read, or from the store closing).
            loop {
                if interrupt.as_mut().is_some_and(|l| notified(l, &mut cx)) {
                    return Ok(Wake::Interrupted);
                }
                if notified(&mut commits, &mut cx) {
                    break;
                }
                match deadline {
                    None => std::thread::park(),
                    Some(d) => {
                        let now = Instant::now();
                        if now >= d {
                            if self.shared.closed.load(Ordering::Acquire) {
                                return Err(Error::Closed);
                            }
                            if self.has_new_commits() {
                                return Ok(Wake::Committed);
                            }
                            return Ok(Wake::TimedOut);
                        }
                        // May return early (an unpark meant for an earlier wait, or none at
                        // all): the listeners are polled again.
                        std::thread::park_timeout(d - now);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ExpectedRevision, NewEvent, Store};
    use event_listener::Event;

    use crate::test_support::store;

    /// A subscription that has read everything (after one more event).
    fn caught_up(store: &Store) -> Subscription {
        store
            .append("s", ExpectedRevision::Any, vec![NewEvent::json("T", "{}")])
            .unwrap();
        let mut sub = store.subscribe_all(0, AllFilter::default());
        assert!(!sub.poll(100).unwrap().is_empty());
        assert!(sub.poll(100).unwrap().is_empty());
        sub
    }

    /// Waits in another thread; returns how the wait ended.
    fn waiting(
        sub: Subscription,
        interrupt: Option<EventListener>,
        deadline: Option<Instant>,
    ) -> std::thread::JoinHandle<Result<Wake>> {
        std::thread::spawn(move || sub.wait_blocking_until(interrupt, deadline))
    }

    #[test]
    fn an_interrupt_wakes_the_wait() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let stop = Event::new();
        // Listening before the waiter starts: the notification is not lost even if it comes
        // before the wait.
        let waiter = waiting(caught_up(&store), Some(stop.listen()), None);
        stop.notify(usize::MAX);
        assert_eq!(waiter.join().unwrap().unwrap(), Wake::Interrupted);
    }

    #[test]
    fn a_commit_wakes_the_wait() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let stop = Event::new();
        let waiter = waiting(caught_up(&store), Some(stop.listen()), None);
        store
            .append("t", ExpectedRevision::Any, vec![NewEvent::json("T", "{}")])
            .unwrap();
        assert_eq!(waiter.join().unwrap().unwrap(), Wake::Committed);
        // A commit before the wait (after the last poll) returns at once.
        let sub = caught_up(&store);
        store
            .append("t", ExpectedRevision::Any, vec![NewEvent::json("T", "{}")])
            .unwrap();
        assert_eq!(
            sub.wait_blocking_until(Some(stop.listen()), None).unwrap(),
            Wake::Committed
        );
    }

    #[test]
    fn the_deadline_ends_the_wait() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let sub = caught_up(&store);
        let stop = Event::new();
        let soon = Instant::now() + Duration::from_millis(20);
        assert_eq!(
            sub.wait_blocking_until(Some(stop.listen()), Some(soon))
                .unwrap(),
            Wake::TimedOut
        );
        let past = Instant::now() - Duration::from_millis(1);
        assert_eq!(
            sub.wait_blocking_until(None, Some(past)).unwrap(),
            Wake::TimedOut
        );
    }

    /// A notification of the commit event with nothing new committed (another waiter's wake-up)
    /// and another event's notification do not end the wait.
    #[test]
    fn other_wake_ups_do_not_end_the_wait() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let (mine, other) = (Event::new(), Event::new());
        let deadline = Instant::now() + Duration::from_millis(200);
        let waiter = waiting(caught_up(&store), Some(mine.listen()), Some(deadline));
        for _ in 0..10 {
            store.shared().commits.notify(usize::MAX);
            other.notify(usize::MAX);
            std::thread::yield_now();
        }
        assert_eq!(waiter.join().unwrap().unwrap(), Wake::TimedOut);
    }

    #[test]
    fn closing_the_store_ends_the_wait() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let waiter = waiting(caught_up(&store), None, None);
        store.close().unwrap();
        assert!(matches!(waiter.join().unwrap(), Err(Error::Closed)));
    }
}
