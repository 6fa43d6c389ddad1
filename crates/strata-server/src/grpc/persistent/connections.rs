//! The Read sessions connected to each consumer group through the gRPC front door, and the
//! subscriber limits KurrentDB clients set (`max_subscriber_count`).
//!
//! Both live in memory: a limit is set by Create and Update and holds while the server runs
//! (after a restart a subscription has no limit until it is updated again); a session counts
//! from its confirmation until its stream ends.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use parking_lot::Mutex;

/// One connected Read session.
#[derive(Debug)]
pub(crate) struct Session {
    /// The client's address.
    pub from: String,
    /// The buffer size the client asked for (most events in flight to it).
    pub buffer: usize,
    /// Events handed to it and not yet acked or nacked.
    pub in_flight: AtomicUsize,
    /// Events handed to it since it connected.
    pub total: AtomicU64,
    /// Its id in this registry.
    id: u64,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    sessions: HashMap<String, Vec<Arc<Session>>>,
    limits: HashMap<String, u32>,
}

/// Every session and limit, by consumer group name. Cheap to clone.
#[derive(Clone, Default)]
pub(crate) struct Connections {
    inner: Arc<Mutex<Inner>>,
}

/// Removes its session from the registry when dropped.
pub(crate) struct Joined {
    connections: Connections,
    group: String,
    /// The session.
    pub session: Arc<Session>,
}

impl Drop for Joined {
    fn drop(&mut self) {
        let mut inner = self.connections.inner.lock();
        if let Some(list) = inner.sessions.get_mut(&self.group) {
            list.retain(|s| s.id != self.session.id);
            if list.is_empty() {
                inner.sessions.remove(&self.group);
            }
        }
    }
}

impl Connections {
    /// Sets (0: removes) the subscriber limit of `group`.
    pub(crate) fn set_limit(&self, group: &str, max: u32) {
        let mut inner = self.inner.lock();
        if max == 0 {
            inner.limits.remove(group);
        } else {
            inner.limits.insert(group.to_owned(), max);
        }
    }

    /// The subscriber limit of `group` (0: none).
    pub(crate) fn limit(&self, group: &str) -> u32 {
        self.inner.lock().limits.get(group).copied().unwrap_or(0)
    }

    /// Forgets `group` (deleted): its limit. Its sessions end by themselves.
    pub(crate) fn forget(&self, group: &str) {
        self.inner.lock().limits.remove(group);
    }

    /// Registers a session of `group`, or `None` when the group's limit is reached.
    pub(crate) fn join(&self, group: &str, from: String, buffer: usize) -> Option<Joined> {
        let mut inner = self.inner.lock();
        let limit = inner.limits.get(group).copied().unwrap_or(0);
        let count = inner.sessions.get(group).map_or(0, Vec::len);
        if limit > 0 && count >= limit as usize {
            return None;
        }
        inner.next_id += 1;
        let session = Arc::new(Session {
            from,
            buffer,
            in_flight: AtomicUsize::new(0),
            total: AtomicU64::new(0),
            id: inner.next_id,
        });
        inner
            .sessions
            .entry(group.to_owned())
            .or_default()
            .push(session.clone());
        Some(Joined {
            connections: self.clone(),
            group: group.to_owned(),
            session,
        })
    }

    /// The sessions of `group` now.
    pub(crate) fn sessions(&self, group: &str) -> Vec<Arc<Session>> {
        self.inner
            .lock()
            .sessions
            .get(group)
            .cloned()
            .unwrap_or_default()
    }
}

impl Session {
    /// Counts `n` events handed to the client.
    pub(crate) fn delivered(&self, n: usize) {
        self.in_flight.fetch_add(n, Relaxed);
        self.total.fetch_add(n as u64, Relaxed);
    }

    /// Sets the number of events in flight to the client.
    pub(crate) fn set_in_flight(&self, n: usize) {
        self.in_flight.store(n, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_leaving() {
        let c = Connections::default();
        c.set_limit("g", 1);
        let first = c.join("g", "a".into(), 10).unwrap();
        assert!(c.join("g", "b".into(), 10).is_none());
        assert_eq!(c.sessions("g").len(), 1);
        drop(first);
        assert!(c.sessions("g").is_empty());
        let _again = c.join("g", "b".into(), 10).unwrap();
        c.set_limit("g", 0);
        let _more = c.join("g", "c".into(), 10).unwrap();
        assert_eq!(c.sessions("g").len(), 2);
        assert_eq!(c.limit("g"), 0);
        c.set_limit("h", 3);
        c.forget("h");
        assert_eq!(c.limit("h"), 0);
    }
}
