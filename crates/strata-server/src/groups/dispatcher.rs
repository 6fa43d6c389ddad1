//! The dispatcher: the pure state machine of one consumer group's window of events.
//!
//! No I/O and no clock: time comes in as `now` (milliseconds on any monotonic scale) and the
//! caller persists what it reports (parked events, the checkpoint). Events are fed in cursor
//! order by the feeder; each is then, at any moment, in exactly one of these states:
//!
//! - *ready*: waiting to be handed out (never delivered, or back for a retry);
//! - *in flight*: handed to a consumer, with an ack deadline;
//! - *done*: acked, skipped or parked — it leaves the window.
//!
//! Invariants (property-tested below):
//! - an event is in flight at most once at a time;
//! - with per-stream ordering an event is handed out only when no earlier event of its stream
//!   is still pending (ready or in flight) — parked counts as done, so a poison event does not
//!   block its stream forever;
//! - the checkpoint is the lowest cursor not yet done (or the feed position when everything fed
//!   is done): it never decreases and never passes a pending event;
//! - the window (pending events plus done cursors above the checkpoint) holds at most `capacity`
//!   entries and about `max_bytes` of payload: [`Dispatcher::room`] tells the feeder how many
//!   more it may feed (done cursors restored at a restart and not fed yet take no room, so
//!   the feeder can always move the checkpoint over them).
//!
//! Replayed parked events live in the window too (flagged `replay`): they were done once, so
//! they take no part in the checkpoint, but they obey ordering, timeouts and parking like others.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// Why an event was parked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParkReason {
    /// Delivered `max_deliveries` times without an ack.
    MaxDeliveries,
    /// A consumer nacked it with `park`.
    Nacked,
    /// Its bytes on disk are damaged: parked as the feeder reached it, never delivered.
    Corrupt,
}

impl ParkReason {
    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ParkReason::MaxDeliveries => "max_deliveries",
            ParkReason::Nacked => "nacked",
            ParkReason::Corrupt => "corrupt",
        }
    }
}

/// What a nack asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NackAction {
    /// Hand it out again (parked instead once `max_deliveries` is reached).
    Retry,
    /// Park it now.
    Park,
    /// Treat it as done without processing.
    Skip,
}

/// One event handed out by [`Dispatcher::poll`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery<E> {
    /// The event's cursor.
    pub cursor: u64,
    /// Which delivery this is (1 = first).
    pub delivery: u32,
    /// The event.
    pub payload: E,
}

/// An event that left the window by being parked; the caller must persist it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Parked<E> {
    /// The event's cursor.
    pub cursor: u64,
    /// Deliveries so far.
    pub delivery: u32,
    /// Why.
    pub reason: ParkReason,
    /// The event.
    pub payload: E,
}

/// What an ack id names, as far as the dispatcher knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckCheck {
    /// A pending event of the window: an ack makes it done.
    Pending,
    /// Already done (acked, skipped, parked, or below the checkpoint): an ack is a no-op.
    Done,
    /// Never fed to this window (or not an event of the source): the ack id is unknown.
    Unknown,
}

/// The outcome of a nack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NackOutcome<E> {
    /// The nack applied; the event was parked if `Some`.
    Applied(Option<Parked<E>>),
    /// Not the current delivery of an in-flight event: ignored.
    Stale,
}

/// The outcome of an ack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckOutcome {
    /// The event was pending and is now done; `replay` when it was a replayed parked event.
    Acked {
        /// It was a replayed parked event (the caller records it as resolved).
        replay: bool,
    },
    /// Nothing to do.
    Noop,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SlotState {
    Ready,
    InFlight { deadline: u64 },
}

struct Slot<E> {
    stream: Arc<str>,
    payload: E,
    size: usize,
    delivery: u32,
    state: SlotState,
    replay: bool,
}

/// The window of one group. See the module docs.
pub struct Dispatcher<E> {
    per_stream: bool,
    capacity: usize,
    max_bytes: usize,
    /// Pending events (ready or in flight), replayed ones included.
    slots: BTreeMap<u64, Slot<E>>,
    /// Cursors of pending events that are not replays (they hold the checkpoint back).
    normal: BTreeSet<u64>,
    /// Done cursors at or above the checkpoint.
    done: BTreeSet<u64>,
    /// Ready events that may be handed out now, by cursor.
    eligible: BTreeSet<u64>,
    /// Pending cursors by stream.
    streams: HashMap<Arc<str>, BTreeSet<u64>>,
    /// Per-stream ordering: the one cursor of each stream that is in `eligible`.
    heads: HashMap<Arc<str>, u64>,
    /// (deadline, cursor) of in-flight events.
    deadlines: BTreeSet<(u64, u64)>,
    in_flight: usize,
    bytes: usize,
    checkpoint: u64,
    fed_to: u64,
    /// Delivery counts restored from the last checkpoint, applied when their event is fed.
    restored: BTreeMap<u64, u32>,
}

impl<E: Clone> Dispatcher<E> {
    /// A window starting at `checkpoint`, with `done` the cursors above it already done (from
    /// the last persisted checkpoint; they are skipped when fed again).
    pub fn new(
        checkpoint: u64,
        done: impl IntoIterator<Item = u64>,
        per_stream: bool,
        capacity: usize,
        max_bytes: usize,
    ) -> Self {
        Dispatcher {
            per_stream,
            capacity: capacity.max(1),
            max_bytes: max_bytes.max(1),
            slots: BTreeMap::new(),
            normal: BTreeSet::new(),
            done: done.into_iter().filter(|c| *c >= checkpoint).collect(),
            eligible: BTreeSet::new(),
            streams: HashMap::new(),
            heads: HashMap::new(),
            deadlines: BTreeSet::new(),
            in_flight: 0,
            bytes: 0,
            checkpoint,
            fed_to: checkpoint,
            restored: BTreeMap::new(),
        }
    }

    /// Restores delivery counts saved with the checkpoint ([`Dispatcher::deliveries_from`]):
    /// those events keep counting towards `max_deliveries` when they are fed again.
    pub fn restore_deliveries(&mut self, deliveries: impl IntoIterator<Item = (u64, u32)>) {
        self.restored.extend(
            deliveries
                .into_iter()
                .filter(|(c, _)| *c >= self.fed_to && !self.done.contains(c)),
        );
    }

    /// `(cursor, delivery)` of pending events (not replays) delivered at least `min` times.
    pub fn deliveries_from(&self, min: u32) -> impl Iterator<Item = (u64, u32)> + '_ {
        self.slots
            .iter()
            .filter(move |(_, s)| !s.replay && s.delivery >= min)
            .map(|(c, s)| (*c, s.delivery))
    }

    /// How many more events the feeder may feed now (0 when the window is full by count or
    /// by bytes).
    ///
    /// Done cursors not fed yet (restored at a restart) do not count: feeding past them is
    /// what moves the checkpoint over them, so counting them could leave no room for ever.
    pub fn room(&self) -> usize {
        if self.bytes >= self.max_bytes {
            return 0;
        }
        let done_fed = self.done.len() - self.done.range(self.fed_to..).count();
        self.capacity.saturating_sub(self.slots.len() + done_fed)
    }

    /// Replayed events pending in the window, and their payload bytes.
    pub fn replays(&self) -> (usize, usize) {
        self.slots
            .values()
            .filter(|s| s.replay)
            .fold((0, 0), |(n, b), s| (n + 1, b + s.size))
    }

    /// Payload bytes the window may still take (approximate, like `max_bytes`).
    pub fn byte_room(&self) -> usize {
        self.max_bytes.saturating_sub(self.bytes)
    }

    /// The cursor the feeder continues at.
    pub fn fed_to(&self) -> u64 {
        self.fed_to
    }

    /// Every cursor below this is done.
    pub fn checkpoint(&self) -> u64 {
        self.checkpoint
    }

    /// Done cursors above the checkpoint, ascending.
    pub fn done_above(&self) -> impl Iterator<Item = u64> + '_ {
        self.done.iter().copied()
    }

    /// Events in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Pending events (ready or in flight).
    pub fn pending(&self) -> usize {
        self.slots.len()
    }

    /// The earliest ack deadline of an in-flight event.
    pub fn next_deadline(&self) -> Option<u64> {
        self.deadlines.first().map(|(d, _)| *d)
    }

    /// Feeds the event at `cursor` (of `stream`, `size` bytes). Cursors must increase; a cursor
    /// below the feed position is ignored, one already done (after a restart) only advances
    /// the feed position. Returns whether the event entered the window.
    pub fn feed(&mut self, cursor: u64, stream: Arc<str>, payload: E, size: usize) -> bool {
        if cursor < self.fed_to {
            return false;
        }
        self.fed_to = cursor.saturating_add(1);
        if !self.restored.is_empty() {
            // Restored counts of cursors passed without being fed are no longer needed.
            let mut rest = self.restored.split_off(&cursor);
            std::mem::swap(&mut self.restored, &mut rest);
        }
        if self.done.contains(&cursor) || self.slots.contains_key(&cursor) {
            self.update_checkpoint();
            return false;
        }
        let delivery = self.restored.remove(&cursor).unwrap_or(0);
        self.insert(cursor, stream, payload, size, false);
        if let Some(slot) = self.slots.get_mut(&cursor) {
            slot.delivery = delivery;
        }
        self.update_checkpoint();
        true
    }

    /// The feeder read up to `to` (exclusive) with no more events: cursors below it that were
    /// not fed are not part of the source.
    pub fn advance_fed(&mut self, to: u64) {
        if to > self.fed_to {
            self.fed_to = to;
            self.update_checkpoint();
        }
    }

    /// Puts a replayed parked event back into the window with its delivery count reset.
    /// Ignored (false) if that cursor is pending already.
    pub fn replay(&mut self, cursor: u64, stream: Arc<str>, payload: E, size: usize) -> bool {
        if self.slots.contains_key(&cursor) {
            return false;
        }
        self.insert(cursor, stream, payload, size, true);
        true
    }

    fn insert(&mut self, cursor: u64, stream: Arc<str>, payload: E, size: usize, replay: bool) {
        self.bytes += size;
        if !replay {
            self.normal.insert(cursor);
        }
        self.streams
            .entry(stream.clone())
            .or_default()
            .insert(cursor);
        self.slots.insert(
            cursor,
            Slot {
                stream: stream.clone(),
                payload,
                size,
                delivery: 0,
                state: SlotState::Ready,
                replay,
            },
        );
        self.refresh(cursor, &stream);
    }

    /// Hands out up to `max` eligible events, in cursor order, each with the deadline
    /// `now + ack_timeout`.
    pub fn poll(&mut self, max: usize, now: u64, ack_timeout: u64) -> Vec<Delivery<E>> {
        let mut out = Vec::new();
        while out.len() < max {
            let Some(cursor) = self.eligible.pop_first() else {
                break;
            };
            let Some(slot) = self.slots.get_mut(&cursor) else {
                continue;
            };
            if self.per_stream && self.heads.get(&slot.stream) == Some(&cursor) {
                self.heads.remove(&slot.stream);
            }
            let deadline = now.saturating_add(ack_timeout);
            slot.delivery = slot.delivery.saturating_add(1);
            slot.state = SlotState::InFlight { deadline };
            self.deadlines.insert((deadline, cursor));
            self.in_flight += 1;
            out.push(Delivery {
                cursor,
                delivery: slot.delivery,
                payload: slot.payload.clone(),
            });
        }
        out
    }

    /// Takes back every in-flight event whose deadline is at or before `now`: it becomes
    /// ready again, or is parked once it has been delivered `max_deliveries` times. Returns
    /// the number made ready again and the parked events.
    pub fn expire(&mut self, now: u64, max_deliveries: u32) -> (usize, Vec<Parked<E>>) {
        let mut requeued = 0;
        let mut parked = Vec::new();
        while let Some(&(deadline, cursor)) = self.deadlines.first() {
            if deadline > now {
                break;
            }
            let delivery = self.slots.get(&cursor).map_or(0, |s| s.delivery);
            if delivery >= max_deliveries {
                if let Some(p) = self.park(cursor, ParkReason::MaxDeliveries) {
                    parked.push(p);
                }
            } else {
                self.make_ready(cursor);
                requeued += 1;
            }
        }
        (requeued, parked)
    }

    /// What an ack of `cursor` would do (see [`AckCheck`]).
    pub fn check(&self, cursor: u64) -> AckCheck {
        if self.slots.contains_key(&cursor) {
            AckCheck::Pending
        } else if cursor < self.checkpoint || self.done.contains(&cursor) {
            AckCheck::Done
        } else {
            AckCheck::Unknown
        }
    }

    /// Acks the event at `cursor`, whatever its delivery: it was processed. A no-op when it is
    /// not pending.
    pub fn ack(&mut self, cursor: u64) -> AckOutcome {
        match self.finish(cursor) {
            Some(slot) => AckOutcome::Acked {
                replay: slot.replay,
            },
            None => AckOutcome::Noop,
        }
    }

    /// Nacks delivery `delivery` of the event at `cursor`: applies only while that delivery is
    /// the one in flight.
    pub fn nack(
        &mut self,
        cursor: u64,
        delivery: u32,
        action: NackAction,
        max_deliveries: u32,
    ) -> NackOutcome<E> {
        let current = match self.slots.get(&cursor) {
            Some(s) if matches!(s.state, SlotState::InFlight { .. }) && s.delivery == delivery => {
                s.delivery
            }
            _ => return NackOutcome::Stale,
        };
        match action {
            NackAction::Retry if current < max_deliveries => {
                self.make_ready(cursor);
                NackOutcome::Applied(None)
            }
            NackAction::Retry => NackOutcome::Applied(self.park(cursor, ParkReason::MaxDeliveries)),
            NackAction::Park => NackOutcome::Applied(self.park(cursor, ParkReason::Nacked)),
            NackAction::Skip => {
                self.finish(cursor);
                NackOutcome::Applied(None)
            }
        }
    }

    fn park(&mut self, cursor: u64, reason: ParkReason) -> Option<Parked<E>> {
        self.finish(cursor).map(|slot| Parked {
            cursor,
            delivery: slot.delivery,
            reason,
            payload: slot.payload,
        })
    }

    /// In flight → ready.
    fn make_ready(&mut self, cursor: u64) {
        let Some(slot) = self.slots.get_mut(&cursor) else {
            return;
        };
        if let SlotState::InFlight { deadline } = slot.state {
            self.deadlines.remove(&(deadline, cursor));
            self.in_flight -= 1;
        }
        slot.state = SlotState::Ready;
        let stream = slot.stream.clone();
        self.refresh(cursor, &stream);
    }

    /// Removes a pending event from the window (it is done).
    fn finish(&mut self, cursor: u64) -> Option<Slot<E>> {
        let slot = self.slots.remove(&cursor)?;
        if let SlotState::InFlight { deadline } = slot.state {
            self.deadlines.remove(&(deadline, cursor));
            self.in_flight -= 1;
        }
        self.eligible.remove(&cursor);
        if self.heads.get(&slot.stream) == Some(&cursor) {
            self.heads.remove(&slot.stream);
        }
        if let Some(set) = self.streams.get_mut(&slot.stream) {
            set.remove(&cursor);
            if set.is_empty() {
                self.streams.remove(&slot.stream);
            }
        }
        self.bytes -= slot.size;
        if !slot.replay {
            self.normal.remove(&cursor);
            self.done.insert(cursor);
            self.update_checkpoint();
        }
        self.refresh(cursor, &slot.stream);
        Some(slot)
    }

    /// Recomputes eligibility after the event at `cursor` of `stream` changed.
    fn refresh(&mut self, cursor: u64, stream: &Arc<str>) {
        if !self.per_stream {
            match self.slots.get(&cursor) {
                Some(s) if s.state == SlotState::Ready => {
                    self.eligible.insert(cursor);
                }
                _ => {
                    self.eligible.remove(&cursor);
                }
            }
            return;
        }
        if let Some(old) = self.heads.remove(stream) {
            self.eligible.remove(&old);
        }
        let first = self
            .streams
            .get(stream)
            .and_then(|set| set.first().copied());
        if let Some(first) = first {
            if self
                .slots
                .get(&first)
                .is_some_and(|s| s.state == SlotState::Ready)
            {
                self.eligible.insert(first);
                self.heads.insert(stream.clone(), first);
            }
        }
    }

    fn update_checkpoint(&mut self) {
        let lowest_pending = self.normal.first().copied().unwrap_or(u64::MAX);
        let checkpoint = lowest_pending.min(self.fed_to);
        debug_assert!(checkpoint >= self.checkpoint, "checkpoint went back");
        if checkpoint > self.checkpoint {
            self.checkpoint = checkpoint;
            self.done = self.done.split_off(&checkpoint);
        }
    }
}

#[cfg(test)]
mod tests;
