//! The timer task: sleeps until the earliest ack deadline and takes expired deliveries back.
//!
//! It waits on the group's `timer` for new deadlines (a poll handed events out, or a shorter
//! `ack_timeout_ms`). Expiry, here and at every poll, requeues or parks the expired deliveries
//! and wakes pollers and the feeder when something became eligible.

use std::sync::Arc;
use std::time::Duration;

use super::{Group, State};

impl Group {
    /// Takes back expired deliveries; wakes pollers when something became eligible.
    pub(super) fn expire(&self, st: &mut State) {
        let max = self.settings.read().max_deliveries;
        let (requeued, parked) = st.dispatcher.expire(self.now_ms(), max);
        let parked_any = !parked.is_empty();
        self.record_parks(st, parked);
        if requeued > 0 || parked_any {
            self.wake.notify_waiters();
            self.room.notify_one();
        }
    }
}

/// The timer task: takes expired deliveries back at the earliest deadline.
pub(super) async fn timer(group: Arc<Group>) {
    loop {
        let changed = group.timer.notified();
        let next = group.state.lock().dispatcher.next_deadline();
        match next {
            Some(ms) => {
                let at = group.epoch + Duration::from_millis(ms);
                tokio::select! {
                    () = tokio::time::sleep_until(at.into()) => {
                        let mut st = group.state.lock();
                        group.expire(&mut st);
                    }
                    () = changed => {}
                    () = group.stopped() => return,
                }
            }
            None => {
                tokio::select! {
                    () = changed => {}
                    () = group.stopped() => return,
                }
            }
        }
    }
}
