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
}

impl ParkReason {
    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ParkReason::MaxDeliveries => "max_deliveries",
            ParkReason::Nacked => "nacked",
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
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    fn s(name: &str) -> Arc<str> {
        Arc::from(name)
    }

    fn d(per_stream: bool) -> Dispatcher<u64> {
        Dispatcher::new(0, [], per_stream, 100, 1 << 20)
    }

    #[test]
    fn poll_ack_advances_the_checkpoint() {
        let mut d = d(false);
        for c in 0..3 {
            assert!(d.feed(c, s("a"), c, 1));
        }
        let got = d.poll(10, 0, 100);
        assert_eq!(got.iter().map(|g| g.cursor).collect::<Vec<_>>(), [0, 1, 2]);
        assert!(got.iter().all(|g| g.delivery == 1));
        assert_eq!(d.in_flight(), 3);
        assert_eq!(d.ack(1), AckOutcome::Acked { replay: false });
        assert_eq!(d.checkpoint(), 0);
        assert_eq!(d.done_above().collect::<Vec<_>>(), [1]);
        assert_eq!(d.ack(0), AckOutcome::Acked { replay: false });
        assert_eq!(d.checkpoint(), 2);
        assert_eq!(d.done_above().count(), 0);
        assert_eq!(d.ack(0), AckOutcome::Noop);
        assert_eq!(d.check(0), AckCheck::Done);
        assert_eq!(d.check(2), AckCheck::Pending);
        assert_eq!(d.check(9), AckCheck::Unknown);
        d.ack(2);
        assert_eq!(d.checkpoint(), 3);
        d.advance_fed(10);
        assert_eq!(d.checkpoint(), 10);
    }

    #[test]
    fn timeouts_redeliver_then_park() {
        let mut d = d(false);
        d.feed(0, s("a"), 0, 1);
        assert_eq!(d.poll(1, 0, 10)[0].delivery, 1);
        assert_eq!(d.next_deadline(), Some(10));
        assert_eq!(d.expire(9, 2), (0, vec![]));
        assert_eq!(d.expire(10, 2), (1, vec![]));
        assert_eq!(d.poll(1, 10, 10)[0].delivery, 2);
        let (requeued, parked) = d.expire(20, 2);
        assert_eq!(requeued, 0);
        assert_eq!(parked.len(), 1);
        assert_eq!(parked[0].reason, ParkReason::MaxDeliveries);
        assert_eq!(parked[0].delivery, 2);
        assert_eq!(d.checkpoint(), 1, "parked counts as done");
        assert!(d.poll(1, 30, 10).is_empty());
    }

    #[test]
    fn nacks() {
        let mut d = d(false);
        for c in 0..3 {
            d.feed(c, s("a"), c, 1);
        }
        let got = d.poll(3, 0, 100);
        assert_eq!(
            d.nack(0, 1, NackAction::Retry, 5),
            NackOutcome::Applied(None)
        );
        assert_eq!(d.nack(0, 1, NackAction::Retry, 5), NackOutcome::Stale);
        assert_eq!(d.poll(1, 0, 100)[0].delivery, 2);
        assert_eq!(d.nack(0, 1, NackAction::Park, 5), NackOutcome::Stale);
        match d.nack(1, got[1].delivery, NackAction::Park, 5) {
            NackOutcome::Applied(Some(p)) => assert_eq!(p.reason, ParkReason::Nacked),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            d.nack(2, 1, NackAction::Skip, 5),
            NackOutcome::Applied(None)
        );
        assert_eq!(d.check(2), AckCheck::Done);
        // Retry at the last allowed delivery parks.
        match d.nack(0, 2, NackAction::Retry, 2) {
            NackOutcome::Applied(Some(p)) => assert_eq!(p.reason, ParkReason::MaxDeliveries),
            other => panic!("{other:?}"),
        }
        assert_eq!(d.checkpoint(), 3);
    }

    #[test]
    fn per_stream_holds_later_events_of_a_busy_stream() {
        let mut d = d(true);
        d.feed(0, s("a"), 0, 1);
        d.feed(1, s("a"), 1, 1);
        d.feed(2, s("b"), 2, 1);
        let got: Vec<u64> = d.poll(10, 0, 100).iter().map(|g| g.cursor).collect();
        assert_eq!(got, [0, 2]);
        d.nack(0, 1, NackAction::Retry, 5);
        // 0 is ready again and still blocks 1.
        let got: Vec<u64> = d.poll(10, 0, 100).iter().map(|g| g.cursor).collect();
        assert_eq!(got, [0]);
        d.nack(0, 2, NackAction::Park, 5);
        let got: Vec<u64> = d.poll(10, 0, 100).iter().map(|g| g.cursor).collect();
        assert_eq!(got, [1], "a parked event does not block its stream");
    }

    #[test]
    fn restart_skips_done_cursors_and_window_is_bounded() {
        let mut d: Dispatcher<u64> = Dispatcher::new(5, [3, 7, 9], false, 4, 1 << 20);
        assert_eq!(d.room(), 4, "done cursors not fed yet take no room");
        assert!(d.feed(5, s("a"), 5, 1));
        assert!(!d.feed(7, s("a"), 7, 1));
        assert!(d.feed(8, s("a"), 8, 1));
        assert_eq!(d.room(), 1);
        assert!(d.feed(10, s("a"), 10, 1));
        assert_eq!(d.room(), 0);
        d.poll(10, 0, 10);
        d.ack(5);
        d.ack(8);
        assert_eq!(d.checkpoint(), 10, "9 was done, 10 is pending");
        assert_eq!(d.done_above().count(), 0);
        d.ack(10);
        assert_eq!(d.checkpoint(), 11);
        let mut small: Dispatcher<u64> = Dispatcher::new(0, [], false, 100, 10);
        small.feed(0, s("a"), 0, 10);
        assert_eq!(small.room(), 0, "bounded by bytes too");
    }

    /// A crash after a park's record but before the checkpoint passing it restores as many
    /// done cursors as the window holds: the feeder must still get room to feed past them.
    #[test]
    fn a_window_full_of_restored_done_cursors_still_has_room() {
        let mut d: Dispatcher<u64> = Dispatcher::new(0, [0, 1, 2, 3], false, 4, 1 << 20);
        assert!(d.room() > 0);
        for c in 0..4 {
            assert!(!d.feed(c, s("a"), c, 1));
        }
        assert_eq!(d.checkpoint(), 4);
        assert_eq!(d.room(), 4);
        assert!(d.feed(4, s("a"), 4, 1));
        assert_eq!(d.poll(10, 0, 10)[0].cursor, 4);
    }

    #[test]
    fn restored_delivery_counts_apply_when_fed() {
        let mut d: Dispatcher<u64> = Dispatcher::new(0, [], false, 100, 1 << 20);
        d.restore_deliveries([(1, 2), (3, 4)]);
        d.feed(0, s("a"), 0, 1);
        d.feed(1, s("a"), 1, 1);
        d.feed(4, s("a"), 4, 1);
        let got: Vec<(u64, u32)> = d
            .poll(10, 0, 10)
            .iter()
            .map(|g| (g.cursor, g.delivery))
            .collect();
        assert_eq!(got, [(0, 1), (1, 3), (4, 1)]);
        assert!(d.restored.is_empty());
        assert_eq!(d.deliveries_from(2).collect::<Vec<_>>(), [(1, 3)]);
    }

    #[test]
    fn replayed_events_do_not_move_the_checkpoint() {
        let mut d = d(true);
        d.feed(0, s("a"), 0, 1);
        d.poll(1, 0, 10);
        d.nack(0, 1, NackAction::Park, 5);
        assert_eq!(d.checkpoint(), 1);
        d.feed(1, s("a"), 1, 1);
        assert!(d.replay(0, s("a"), 0, 1));
        let got = d.poll(10, 0, 10);
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].cursor, got[0].delivery), (0, 1));
        assert_eq!(d.checkpoint(), 1);
        assert_eq!(d.ack(0), AckOutcome::Acked { replay: true });
        assert_eq!(d.poll(10, 0, 10)[0].cursor, 1);
    }

    #[derive(Clone, Debug)]
    enum Op {
        Feed { stream: u8, skip: u8 },
        Poll { max: u8 },
        Ack { pick: u16 },
        Nack { pick: u16, action: u8 },
        AckAny { cursor: u16 },
        Tick { ms: u8 },
        Replay,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0u8..4, 0u8..3).prop_map(|(stream, skip)| Op::Feed { stream, skip }),
            3 => (1u8..5).prop_map(|max| Op::Poll { max }),
            3 => any::<u16>().prop_map(|pick| Op::Ack { pick }),
            2 => (any::<u16>(), 0u8..3).prop_map(|(pick, action)| Op::Nack { pick, action }),
            1 => (0u16..200).prop_map(|cursor| Op::AckAny { cursor }),
            2 => (0u8..40).prop_map(|ms| Op::Tick { ms }),
            1 => Just(Op::Replay),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Random feeds, polls, acks, nacks, timeouts and replays across several streams.
        #[test]
        fn invariants_hold(ops in proptest::collection::vec(op(), 1..300), per_stream in any::<bool>(), capacity in 1usize..12) {
            const MAX_DELIVERIES: u32 = 3;
            const TIMEOUT: u64 = 25;
            let mut d: Dispatcher<u64> = Dispatcher::new(0, [], per_stream, capacity, 1 << 20);
            let mut now = 0u64;
            let mut next_cursor = 0u64;
            let mut stream_of: HashMap<u64, Arc<str>> = HashMap::new();
            let mut fed: BTreeSet<u64> = BTreeSet::new();
            // What the model says about each fed event.
            let mut done: HashSet<u64> = HashSet::new();
            let mut parked: BTreeSet<u64> = BTreeSet::new();
            // cursor -> delivery currently in flight.
            let mut in_flight: HashMap<u64, u32> = HashMap::new();
            let mut last_checkpoint = 0;
            for op in ops {
                match op {
                    Op::Feed { stream, skip } => {
                        next_cursor += u64::from(skip);
                        if d.room() > 0 {
                            let name: Arc<str> = Arc::from(format!("s{stream}"));
                            prop_assert!(d.feed(next_cursor, name.clone(), next_cursor, 1));
                            stream_of.insert(next_cursor, name);
                            fed.insert(next_cursor);
                            next_cursor += 1;
                        } else {
                            d.advance_fed(d.fed_to());
                        }
                    }
                    Op::Poll { max } => {
                        for g in d.poll(usize::from(max), now, TIMEOUT) {
                            prop_assert!(!in_flight.contains_key(&g.cursor), "handed out twice");
                            prop_assert!(!done.contains(&g.cursor) || parked.contains(&g.cursor));
                            prop_assert_eq!(g.payload, g.cursor);
                            if per_stream {
                                let s = &stream_of[&g.cursor];
                                for c in in_flight.keys() {
                                    prop_assert!(!(stream_of[c] == *s && *c < g.cursor), "per-stream order broken");
                                }
                                // No earlier pending event of the stream at all.
                                for c in fed.range(..g.cursor) {
                                    if stream_of[c] == *s && d.check(*c) == AckCheck::Pending {
                                        prop_assert!(false, "earlier pending event {} of the stream", c);
                                    }
                                }
                            }
                            in_flight.insert(g.cursor, g.delivery);
                        }
                    }
                    Op::Ack { pick } | Op::Nack { pick, .. } if in_flight.is_empty() => { let _ = pick; }
                    Op::Ack { pick } => {
                        let mut keys: Vec<u64> = in_flight.keys().copied().collect();
                        keys.sort_unstable();
                        let c = keys[usize::from(pick) % keys.len()];
                        prop_assert_eq!(d.check(c), AckCheck::Pending);
                        prop_assert!(matches!(d.ack(c), AckOutcome::Acked { .. }), "ack of a pending event");
                        in_flight.remove(&c);
                        done.insert(c);
                        parked.remove(&c);
                    }
                    Op::Nack { pick, action } => {
                        let mut keys: Vec<u64> = in_flight.keys().copied().collect();
                        keys.sort_unstable();
                        let c = keys[usize::from(pick) % keys.len()];
                        let delivery = in_flight[&c];
                        let action = [NackAction::Retry, NackAction::Park, NackAction::Skip][usize::from(action)];
                        // A stale delivery number is ignored.
                        prop_assert_eq!(d.nack(c, delivery + 1, action, MAX_DELIVERIES), NackOutcome::Stale);
                        match d.nack(c, delivery, action, MAX_DELIVERIES) {
                            NackOutcome::Applied(p) => {
                                in_flight.remove(&c);
                                match (action, p) {
                                    (NackAction::Retry, None) => prop_assert!(delivery < MAX_DELIVERIES),
                                    (NackAction::Retry, Some(p)) => {
                                        prop_assert!(delivery >= MAX_DELIVERIES);
                                        prop_assert_eq!(p.cursor, c);
                                        done.insert(c);
                                        parked.insert(c);
                                    }
                                    (NackAction::Park, Some(p)) => {
                                        prop_assert_eq!(p.reason, ParkReason::Nacked);
                                        done.insert(c);
                                        parked.insert(c);
                                    }
                                    (NackAction::Skip, None) => { done.insert(c); parked.remove(&c); }
                                    other => prop_assert!(false, "unexpected {:?}", other),
                                }
                            }
                            NackOutcome::Stale => prop_assert!(false, "current delivery was stale"),
                        }
                    }
                    Op::AckAny { cursor } => {
                        let c = u64::from(cursor);
                        let check = d.check(c);
                        if !fed.contains(&c) && c >= d.checkpoint() {
                            prop_assert_eq!(check, AckCheck::Unknown);
                        }
                        if check == AckCheck::Pending {
                            d.ack(c);
                            in_flight.remove(&c);
                            done.insert(c);
                            parked.remove(&c);
                        } else {
                            prop_assert_eq!(d.ack(c), AckOutcome::Noop);
                        }
                    }
                    Op::Tick { ms } => {
                        now += u64::from(ms);
                        let (_, newly_parked) = d.expire(now, MAX_DELIVERIES);
                        for p in newly_parked {
                            prop_assert!(p.delivery >= MAX_DELIVERIES);
                            done.insert(p.cursor);
                            parked.insert(p.cursor);
                        }
                        // Still in flight only if it was not taken back.
                        in_flight.retain(|c, _| d.deadlines.iter().any(|(_, dc)| dc == c));
                    }
                    Op::Replay => {
                        if let Some(c) = parked.pop_first() {
                            prop_assert!(d.replay(c, stream_of[&c].clone(), c, 1));
                            done.remove(&c);
                        }
                    }
                }
                // Invariants after every step.
                let cp = d.checkpoint();
                prop_assert!(cp >= last_checkpoint, "checkpoint went back");
                last_checkpoint = cp;
                for c in fed.range(..cp) {
                    // Below the checkpoint: done, or a replayed parked event pending again.
                    prop_assert!(done.contains(c) || stream_of.contains_key(c) && d.slots.get(c).is_some_and(|s| s.replay), "checkpoint passed pending {}", c);
                }
                for c in &fed {
                    if !done.contains(c) {
                        prop_assert_eq!(d.check(*c), AckCheck::Pending, "event {} lost", c);
                    }
                }
                prop_assert_eq!(d.in_flight(), in_flight.len());
                prop_assert!(d.slots.len() + d.done.len() <= capacity + parked.len() + d.slots.values().filter(|s| s.replay).count());
                prop_assert!(d.slots.values().filter(|s| !s.replay).count() + d.done.len() <= capacity);
            }
            // Drain: ack everything that is left; every fed event ends done.
            for c in in_flight.keys() {
                prop_assert!(matches!(d.ack(*c), AckOutcome::Acked { .. }), "in flight {}", c);
            }
            for _ in 0..(fed.len() * (MAX_DELIVERIES as usize + 1) + 2) {
                for g in d.poll(usize::MAX, now, TIMEOUT) {
                    d.ack(g.cursor);
                }
            }
            prop_assert_eq!(d.pending(), 0);
            prop_assert_eq!(d.in_flight(), 0);
            d.advance_fed(next_cursor);
            prop_assert_eq!(d.checkpoint(), next_cursor);
        }
    }
}
