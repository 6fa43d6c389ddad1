//! The checkpointer task: saves the checkpoint every `checkpoint_interval`, or as soon as
//! `checkpoint_acks` acks accumulated (woken on the group's `flush_now`), and only when
//! something changed.
//!
//! A flush writes unsaved parks, then the checkpoint if it changed: parks are durable before a
//! checkpoint that passes them is written (a parked event is never lost), and acks are durable
//! with the next checkpoint (at most one interval or `checkpoint_acks` acks are redelivered
//! after a crash). The group's flush lock serialises writes of its state; a deleted group writes
//! nothing. A write that fails leaves its changes unsaved for the next flush.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use strata_store::Store;

use super::{FlushState, Group};
use crate::groups::durable::{self, CheckpointRecord};

impl Group {
    /// Writes unsaved parks, then the checkpoint if it changed. Parks are durable before a
    /// checkpoint that passes them is written.
    pub(super) async fn flush(&self, store: &Store) -> strata_store::Result<()> {
        let mut fs = self.flush.lock().await;
        self.flush_locked(store, &mut fs).await
    }

    pub(super) async fn flush_locked(
        &self,
        store: &Store,
        fs: &mut FlushState,
    ) -> strata_store::Result<()> {
        if self.deleted.load(Relaxed) {
            return Ok(());
        }
        let (changes, record) = {
            let mut st = self.state.lock();
            let changes = std::mem::take(&mut st.unsaved);
            let record = st.dirty.then(|| {
                let mut r =
                    CheckpointRecord::new(st.dispatcher.checkpoint(), st.dispatcher.done_above());
                r.deliveries = st
                    .dispatcher
                    .deliveries_from(2)
                    .map(|(c, d)| [c, u64::from(d)])
                    .collect();
                r
            });
            st.dirty = false;
            st.acks_since_save = 0;
            (changes, record)
        };
        if !changes.is_empty() {
            if let Err(e) = durable::write_parked(store, self.generation, &changes).await {
                let mut st = self.state.lock();
                let later = std::mem::replace(&mut st.unsaved, changes);
                st.unsaved.parked.extend(later.parked);
                st.unsaved.replayed.extend(later.replayed);
                st.unsaved.resolved.extend(later.resolved);
                st.dirty = true;
                return Err(e);
            }
            fs.parked_records += changes.records();
        }
        if let Some(record) = record {
            if fs.saved.as_ref() != Some(&record) {
                if let Err(e) = durable::write_checkpoint(store, self.generation, &record).await {
                    self.state.lock().dirty = true;
                    return Err(e);
                }
                fs.saved = Some(record);
            }
        }
        // Compact the parked stream once it is mostly superseded records.
        let (parked, replaying) = {
            let st = self.state.lock();
            (st.parked.len() as u64, st.replaying.len() as u64)
        };
        if fs.parked_records > 2 * (parked + replaying) + 64 {
            let (parked, replaying) = {
                let st = self.state.lock();
                (
                    st.parked.values().cloned().collect(),
                    st.replaying.values().cloned().collect(),
                )
            };
            fs.parked_records =
                durable::compact_parked(store, self.generation, parked, replaying).await?;
        }
        Ok(())
    }
}

/// The checkpointer task: saves state every interval or after enough acks.
pub(super) async fn checkpointer(group: Arc<Group>, store: Store, interval: Duration) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = group.flush_now.notified() => {}
            () = group.stopped() => return,
        }
        if let Err(e) = group.flush(&store).await {
            tracing::warn!(error = %e, group = %group.name, "could not save the consumer group's state");
        }
    }
}
