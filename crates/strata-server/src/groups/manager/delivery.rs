//! Poll, ack and nack.
//!
//! Long polls wait on the group's [`Notify`](tokio::sync::Notify), registered before they check
//! the window, so no wake-up is lost. They are woken when the feeder adds events, when an
//! ack/nack/timeout makes events eligible, when the group is deleted, and on shutdown; the
//! `waiting_polls` gauge (`GET /groups/{group}`, `/metrics`) counts those waiting.
//!
//! Acks and nacks are all-or-nothing: every ack id must be known to the window, or nothing is
//! acked. An ack wakes pollers and the feeder (room) and is durable with the next checkpoint;
//! enough of them wake the checkpointer. A nack applies to the current in-flight delivery only;
//! a nack with `park` returns only once the park is durable. After a restart, an ack or nack
//! first waits (up to [`FEED_WAIT`]) for the feeder to read its events again.

use std::sync::atomic::{AtomicUsize, Ordering::Acquire, Ordering::Relaxed, Ordering::Release};
use std::sync::Arc;
use std::time::Duration;

use strata_store::RecordedEvent;

use super::{not_found, Group, Groups, Message, Settled, State};
use crate::error::{Error, Result};
use crate::groups::ack_id::AckId;
use crate::groups::dispatcher::{AckCheck, AckOutcome, Delivery, NackAction, NackOutcome};

impl Group {
    /// After a restart the window is refilled from the checkpoint: an ack id handed out before
    /// the restart may name an event the feeder has not read again yet. Waits (up to
    /// [`FEED_WAIT`]) until the feeder read past every such id of this incarnation, or caught up.
    async fn wait_fed(&self, ids: &[String]) {
        if self.caught_up.load(Acquire) {
            return;
        }
        let deadline = tokio::time::Instant::now() + FEED_WAIT;
        loop {
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.caught_up.load(Acquire) || self.is_stopping() {
                return;
            }
            let ahead = {
                let st = self.state.lock();
                let fed_to = st.dispatcher.fed_to();
                ids.iter()
                    .filter_map(|raw| AckId::parse(raw))
                    .any(|id| id.generation == self.generation && id.cursor >= fed_to)
            };
            if !ahead {
                return;
            }
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(deadline) => return,
            }
        }
    }
}

impl Groups {
    /// Hands out up to `max` events, waiting up to `wait` for one; returns early (empty) when
    /// `cancel` resolves (server shutdown).
    pub(crate) async fn poll(
        &self,
        group: &Arc<Group>,
        max: usize,
        wait: Duration,
        cancel: impl std::future::Future<Output = ()>,
    ) -> Result<Vec<Message>> {
        let deadline = tokio::time::Instant::now() + wait;
        tokio::pin!(cancel);
        loop {
            if group.deleted.load(Relaxed) {
                return Err(not_found(&group.name));
            }
            let notified = group.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let got = {
                let mut st = group.state.lock();
                group.expire(&mut st);
                let timeout = group.settings.read().ack_timeout_ms;
                let now = group.now_ms();
                let got = st.dispatcher.poll(max, now, timeout);
                // Redelivery counts are saved with the checkpoint (max_deliveries holds
                // across restarts).
                if got.iter().any(|d| d.delivery >= 2) {
                    st.dirty = true;
                }
                got
            };
            if !got.is_empty() {
                group.timer.notify_one();
                return Ok(self.messages(group, got));
            }
            if group.is_stopping() {
                return Ok(Vec::new());
            }
            let _waiting = WaitingPoll::enter(&group.waiting_polls);
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(deadline) => return Ok(Vec::new()),
                () = &mut cancel => return Ok(Vec::new()),
            }
        }
    }

    fn messages(&self, group: &Group, got: Vec<Delivery<Arc<RecordedEvent>>>) -> Vec<Message> {
        group
            .counters
            .deliveries
            .fetch_add(got.len() as u64, Relaxed);
        let redeliveries = got.iter().filter(|d| d.delivery > 1).count();
        group
            .counters
            .redeliveries
            .fetch_add(redeliveries as u64, Relaxed);
        got.into_iter()
            .map(|d| Message {
                ack_id: AckId {
                    generation: group.generation,
                    cursor: d.cursor,
                    delivery: d.delivery,
                }
                .encode(),
                delivery: d.delivery,
                event: d.payload,
            })
            .collect()
    }

    /// Parses ack ids and checks them against the window: all known, or 400 listing the
    /// unknown ones.
    fn check_ids(group: &Group, st: &State, ids: &[String]) -> Result<Vec<AckId>> {
        let mut parsed = Vec::with_capacity(ids.len());
        let mut unknown = Vec::new();
        for raw in ids {
            match AckId::parse(raw) {
                Some(id)
                    if id.generation == group.generation
                        && id.delivery > 0
                        && st.dispatcher.check(id.cursor) != AckCheck::Unknown =>
                {
                    parsed.push(id)
                }
                _ => unknown.push(raw.clone()),
            }
        }
        if unknown.is_empty() {
            Ok(parsed)
        } else {
            Err(Error::UnknownAckIds {
                message: format!(
                    "{} ack id(s) are unknown to group {:?} (malformed, from another incarnation of the group, or naming no delivered event); nothing was acked",
                    unknown.len(),
                    group.name
                ),
                ids: unknown,
            })
        }
    }

    /// Acks: each id names an event, which is done from now on. All-or-nothing.
    pub(crate) async fn ack(&self, group: &Arc<Group>, ids: &[String]) -> Result<Settled> {
        group.wait_fed(ids).await;
        if group.deleted.load(Relaxed) {
            return Err(not_found(&group.name));
        }
        let settled = {
            let mut st = group.state.lock();
            let parsed = Self::check_ids(group, &st, ids)?;
            let mut applied = 0;
            for id in &parsed {
                if let AckOutcome::Acked { replay } = st.dispatcher.ack(id.cursor) {
                    applied += 1;
                    if replay {
                        st.replaying.remove(&id.cursor);
                        st.unsaved.resolved.push(id.cursor);
                    }
                }
            }
            if applied > 0 {
                st.dirty = true;
                st.acks_since_save += applied as u64;
                if st.acks_since_save >= self.inner.options.checkpoint_acks {
                    group.flush_now.notify_one();
                }
            }
            Settled {
                applied,
                ignored: parsed.len() - applied,
            }
        };
        group
            .counters
            .acks
            .fetch_add(settled.applied as u64, Relaxed);
        if settled.applied > 0 {
            group.wake.notify_waiters();
            group.room.notify_one();
        }
        Ok(settled)
    }

    /// Nacks: applies to the current in-flight delivery only. A park is durable before this
    /// returns.
    pub(crate) async fn nack(
        &self,
        group: &Arc<Group>,
        ids: &[String],
        action: NackAction,
    ) -> Result<Settled> {
        group.wait_fed(ids).await;
        if group.deleted.load(Relaxed) {
            return Err(not_found(&group.name));
        }
        let (settled, parked_any) = {
            let mut st = group.state.lock();
            let parsed = Self::check_ids(group, &st, ids)?;
            let max = group.settings.read().max_deliveries;
            let mut applied = 0;
            let mut parked = Vec::new();
            for id in &parsed {
                if let NackOutcome::Applied(p) =
                    st.dispatcher.nack(id.cursor, id.delivery, action, max)
                {
                    applied += 1;
                    if action == NackAction::Skip {
                        if st.replaying.remove(&id.cursor).is_some() {
                            st.unsaved.resolved.push(id.cursor);
                        }
                        st.dirty = true;
                    }
                    parked.extend(p);
                }
            }
            let parked_any = !parked.is_empty();
            group.record_parks(&mut st, parked);
            (
                Settled {
                    applied,
                    ignored: parsed.len() - applied,
                },
                parked_any,
            )
        };
        group
            .counters
            .nacks
            .fetch_add(settled.applied as u64, Relaxed);
        if settled.applied > 0 {
            group.wake.notify_waiters();
            group.room.notify_one();
        }
        if parked_any {
            group
                .flush(&self.inner.store)
                .await
                .map_err(|e| self.store_error(e))?;
        }
        Ok(settled)
    }
}

/// Counts a long poll in [`Group::waiting_polls`] while it lives (also when the poll's future
/// is dropped mid-wait, e.g. its client went away). Entered after the poll registered for the
/// group's wake-up, with `Release`: whoever reads the count with `Acquire` and then wakes the
/// group reaches that poll.
struct WaitingPoll<'a>(&'a AtomicUsize);

impl<'a> WaitingPoll<'a> {
    fn enter(gauge: &'a AtomicUsize) -> Self {
        gauge.fetch_add(1, Release);
        WaitingPoll(gauge)
    }
}

impl Drop for WaitingPoll<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Release);
    }
}

/// Longest an ack or nack waits for the feeder to read its events again after a restart.
const FEED_WAIT: Duration = Duration::from_secs(10);
