//! Parked events: recording parks (a nack with `park`, or the last allowed delivery timing
//! out), listing them, and replaying them.
//!
//! Parks are written before any checkpoint that passes them (a parked event is never lost): a
//! recorded park marks the state dirty and wakes the checkpointer. A replay answers only once
//! its record is durable, and writes earlier parks first (under the group's flush lock), so
//! that the Replayed record follows their Parked records. Replayed events wait in the window:
//! together they never exceed it, by count or by bytes, however often a replay is asked for
//! before they are consumed. A parked event that is no longer readable (its stream deleted or
//! truncated since) is dropped instead of replayed.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use strata_store::{RecordedEvent, Store};

use super::{event_size, not_found, Group, Groups, State};
use crate::error::Result;
use crate::groups::dispatcher::Parked;
use crate::groups::durable::{self, ParkedChanges, ParkedEntry};

impl Group {
    /// Records parked events (persisted by the next flush) and counts them.
    pub(super) fn record_parks(&self, st: &mut State, parked: Vec<Parked<Arc<RecordedEvent>>>) {
        if parked.is_empty() {
            return;
        }
        let now = now_micros();
        for p in parked {
            self.counters.parks.fetch_add(1, Relaxed);
            st.replaying.remove(&p.cursor);
            let entry = ParkedEntry {
                cursor: p.cursor,
                stream: p.payload.stream.clone(),
                revision: p.payload.revision,
                position: p.payload.position,
                event_id: p.payload.id,
                event_type: p.payload.event_type.clone(),
                delivery: p.delivery,
                reason: p.reason.as_str().to_owned(),
                parked_at: now,
            };
            st.parked.insert(p.cursor, entry.clone());
            st.unsaved.parked.push(entry);
        }
        st.dirty = true;
        self.flush_now.notify_one();
    }
}

fn now_micros() -> i64 {
    match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        Err(_) => 0,
    }
}

impl Groups {
    /// Parked events after `after`, at most `max`, and the cursor to continue after.
    pub(crate) fn parked(
        &self,
        group: &Group,
        after: Option<u64>,
        max: usize,
    ) -> (Vec<ParkedEntry>, Option<u64>) {
        let st = group.state.lock();
        let range = match after {
            Some(a) => st.parked.range(a.saturating_add(1)..),
            None => st.parked.range(..),
        };
        let mut out: Vec<ParkedEntry> = range.take(max + 1).map(|(_, p)| p.clone()).collect();
        let next = if out.len() > max {
            out.truncate(max);
            out.last().map(|p| p.cursor)
        } else {
            None
        };
        (out, next)
    }

    /// Re-queues up to `max` parked events (oldest first) with their delivery count reset.
    /// Returns (replayed, events that no longer exist and were dropped, parked remaining).
    pub(crate) async fn replay(
        &self,
        group: &Arc<Group>,
        max: usize,
    ) -> Result<(usize, usize, usize)> {
        let store = self.inner.store.clone();
        let mut fs = group.flush.lock().await;
        if group.deleted.load(Relaxed) {
            return Err(not_found(&group.name));
        }
        // Earlier parks first, so that the Replayed record follows their Parked records.
        group
            .flush_locked(&store, &mut fs)
            .await
            .map_err(|e| self.store_error(e))?;
        // Replayed events wait in the window: together they never exceed it, by count or by
        // bytes, however often a replay is asked for before they are consumed.
        let opts = &self.inner.options;
        let (mut entries, bytes_left) = {
            let st = group.state.lock();
            let (count, bytes) = st.dispatcher.replays();
            let room = if bytes >= opts.window_bytes {
                0
            } else {
                opts.window.saturating_sub(count)
            };
            let entries: Vec<ParkedEntry> =
                st.parked.values().take(max.min(room)).cloned().collect();
            if entries.is_empty() {
                return Ok((0, 0, st.parked.len()));
            }
            (entries, opts.window_bytes.saturating_sub(bytes))
        };
        let read_store = store.clone();
        let read_entries = entries.clone();
        let events = durable::blocking(move || {
            let mut events = Vec::with_capacity(read_entries.len());
            let (mut bytes, mut taken) = (0, 0);
            for entry in &read_entries {
                let event = read_parked_event(&read_store, entry)?;
                if let Some(e) = &event {
                    bytes += event_size(e);
                    if bytes > bytes_left && taken > 0 {
                        break;
                    }
                    taken += 1;
                }
                events.push(event);
            }
            Ok(events)
        })
        .await
        .map_err(|e| self.store_error(e))?;
        entries.truncate(events.len());
        let mut changes = ParkedChanges::default();
        for (entry, event) in entries.iter().zip(&events) {
            if event.is_some() {
                changes.replayed.push(entry.cursor);
            } else {
                changes.resolved.push(entry.cursor);
            }
        }
        durable::write_parked(&store, group.generation, &changes)
            .await
            .map_err(|e| self.store_error(e))?;
        fs.parked_records += changes.records();
        let remaining = {
            let mut st = group.state.lock();
            for (entry, event) in entries.into_iter().zip(events) {
                st.parked.remove(&entry.cursor);
                if let Some(e) = event {
                    let size = event_size(&e);
                    st.dispatcher.replay(
                        entry.cursor,
                        Arc::from(e.stream.as_str()),
                        Arc::new(e),
                        size,
                    );
                    st.replaying.insert(entry.cursor, entry);
                }
            }
            st.parked.len()
        };
        group.wake.notify_waiters();
        Ok((changes.replayed.len(), changes.resolved.len(), remaining))
    }
}

/// The event a parked entry names, if it is still readable (`None` when its stream was
/// deleted or truncated since).
pub(super) fn read_parked_event(
    store: &Store,
    entry: &ParkedEntry,
) -> strata_store::Result<Option<RecordedEvent>> {
    match store.read_event(&entry.stream, entry.revision) {
        Ok(Some(e)) if e.id == entry.event_id => Ok(Some(e)),
        Ok(_)
        | Err(strata_store::Error::StreamNotFound { .. })
        | Err(strata_store::Error::StreamDeleted { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}
