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
//!
//! Damage: the feeder parks a damaged event it reaches (reason `corrupt`, with the damaged file
//! and offset; never delivered) and goes on with the next. A replay re-reads every parked event:
//! one whose bytes are (still) damaged stays parked and the replay goes on with the others.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use strata_store::{AllFilter, Direction, ReadFrom, RecordedEvent, Store};

use super::{event_size, not_found, Group, Groups, State};
use crate::error::Result;
use crate::groups::dispatcher::{ParkReason, Parked};
use crate::groups::durable::{self, ParkedChanges, ParkedEntry, UNKNOWN};
use crate::groups::settings::Source;

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
                file: None,
                offset: None,
            };
            st.parked.insert(p.cursor, entry.clone());
            st.unsaved.parked.push(entry);
        }
        st.dirty = true;
        self.flush_now.notify_one();
    }
}

impl Group {
    /// Parks the damaged event the feeder reached at `cursor` (reason `corrupt`, never
    /// delivered) and moves the feed past it: the group goes on with the next event. Returns
    /// false (nothing parked) when `error` is not damage.
    pub(super) fn park_corrupt(&self, cursor: u64, error: &strata_store::Error) -> bool {
        let strata_store::Error::Corruption {
            file,
            offset,
            position,
            ..
        } = error
        else {
            return false;
        };
        let (stream, revision, position) = match self.source() {
            Source::Stream(s) => (s, cursor, position.unwrap_or(UNKNOWN)),
            Source::All | Source::Category(_) => (String::new(), UNKNOWN, cursor),
        };
        tracing::warn!(
            group = %self.name,
            cursor,
            file = %file.display(),
            offset,
            "consumer group parked a damaged event (reason corrupt) and goes on"
        );
        let entry = ParkedEntry {
            cursor,
            stream,
            revision,
            position,
            event_id: uuid::Uuid::nil(),
            event_type: String::new(),
            delivery: 0,
            reason: ParkReason::Corrupt.as_str().to_owned(),
            parked_at: now_micros(),
            file: Some(file.display().to_string()),
            offset: Some(*offset),
        };
        let mut st = self.state.lock();
        self.counters.parks.fetch_add(1, Relaxed);
        st.parked.insert(cursor, entry.clone());
        st.unsaved.parked.push(entry);
        // The damaged cursor is done (parked): the checkpoint may pass it once the park is
        // saved, which the flush does first.
        st.dispatcher.advance_fed(cursor.saturating_add(1));
        st.error = None;
        st.dirty = true;
        drop(st);
        self.flush_now.notify_one();
        true
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
                if let ParkedRead::Event(e) = &event {
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
            match event {
                ParkedRead::Event(_) => changes.replayed.push(entry.cursor),
                ParkedRead::Missing => changes.resolved.push(entry.cursor),
                // Still damaged: it stays parked as it is.
                ParkedRead::Damaged => {}
            }
        }
        durable::write_parked(&store, group.generation, &changes)
            .await
            .map_err(|e| self.store_error(e))?;
        fs.parked_records += changes.records();
        let remaining = {
            let mut st = group.state.lock();
            for (entry, event) in entries.into_iter().zip(events) {
                if matches!(event, ParkedRead::Damaged) {
                    continue;
                }
                st.parked.remove(&entry.cursor);
                if let ParkedRead::Event(e) = event {
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

/// What re-reading a parked event found.
pub(super) enum ParkedRead {
    /// The event, readable: it can be replayed.
    Event(RecordedEvent),
    /// No longer there (its stream deleted or truncated since, or damage repaired away): the
    /// entry is dropped.
    Missing,
    /// Its bytes are damaged (still, or since): it stays parked.
    Damaged,
}

/// The event a parked entry names, if it is still readable. A damaged event parked as
/// `corrupt` may lack its stream and revision: it is read by position then.
pub(super) fn read_parked_event(
    store: &Store,
    entry: &ParkedEntry,
) -> strata_store::Result<ParkedRead> {
    let nil = entry.event_id.is_nil();
    let read = if entry.stream.is_empty() || entry.revision == UNKNOWN {
        if entry.position == UNKNOWN {
            return Ok(ParkedRead::Damaged);
        }
        let filter = AllFilter {
            include_system: true,
            ..AllFilter::default()
        };
        store
            .read_all(ReadFrom::At(entry.position), Direction::Forward, 1, &filter)
            .map(|slice| {
                slice
                    .events
                    .into_iter()
                    .find(|e| e.position == entry.position)
            })
    } else {
        store.read_event(&entry.stream, entry.revision)
    };
    match read {
        Ok(Some(e)) if nil || e.id == entry.event_id => Ok(ParkedRead::Event(e)),
        Ok(_)
        | Err(strata_store::Error::StreamNotFound { .. })
        | Err(strata_store::Error::StreamDeleted { .. }) => Ok(ParkedRead::Missing),
        Err(strata_store::Error::Corruption { .. }) => Ok(ParkedRead::Damaged),
        Err(e) => Err(e),
    }
}
