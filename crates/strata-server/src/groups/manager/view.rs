//! What `GET /groups/{group}` and `/metrics` show: each group's settings, window, parked
//! events, waiting polls and counters, with the lag against the source's head now.

use std::sync::atomic::{Ordering::Acquire, Ordering::Relaxed};
use std::sync::Arc;

use super::{Group, GroupView, Groups};
use crate::error::Result;
use crate::groups::durable;
use crate::groups::settings::Source;

impl Groups {
    /// What `GET /groups/{group}` shows, with the lag against the source's head now.
    pub(crate) async fn describe(&self, groups: Vec<Arc<Group>>) -> Result<Vec<GroupView>> {
        let store = self.inner.store.clone();
        let sources: Vec<Source> = groups.iter().map(|g| g.settings().source).collect();
        let heads = durable::blocking(move || {
            let next = store.next_position();
            sources
                .iter()
                .map(|s| match s {
                    Source::Stream(name) => {
                        Ok(store.head(name)?.last_revision.map_or(0, |r| r + 1))
                    }
                    Source::All | Source::Category(_) => Ok(next),
                })
                .collect::<strata_store::Result<Vec<u64>>>()
        })
        .await
        .map_err(|e| self.store_error(e))?;
        Ok(groups
            .iter()
            .zip(heads)
            .map(|(g, head)| {
                let st = g.state.lock();
                let checkpoint = st.dispatcher.checkpoint();
                let c = &g.counters;
                GroupView {
                    name: g.name.clone(),
                    settings: g.settings(),
                    start: g.start,
                    checkpoint,
                    in_flight: st.dispatcher.in_flight(),
                    buffered: st.dispatcher.pending() - st.dispatcher.in_flight(),
                    parked: st.parked.len(),
                    replaying: st.replaying.len(),
                    lag: head.saturating_sub(checkpoint),
                    error: st.error.clone(),
                    waiting_polls: g.waiting_polls.load(Acquire),
                    counters: [
                        c.deliveries.load(Relaxed),
                        c.acks.load(Relaxed),
                        c.nacks.load(Relaxed),
                        c.parks.load(Relaxed),
                        c.redeliveries.load(Relaxed),
                    ],
                }
            })
            .collect())
    }

    /// The `/metrics` series of every live group (none if the groups cannot be loaded).
    pub(crate) async fn render_metrics(&self, out: &mut String) {
        let Ok(groups) = self.all().await else {
            return;
        };
        let views = self.describe(groups).await.unwrap_or_default();
        let samples: Vec<crate::metrics::GroupSample> = views
            .into_iter()
            .map(|v| crate::metrics::GroupSample {
                name: v.name,
                lag: v.lag,
                checkpoint: v.checkpoint,
                in_flight: v.in_flight as u64,
                parked: v.parked as u64,
                waiting_polls: v.waiting_polls as u64,
                deliveries: v.counters[0],
                acks: v.counters[1],
                nacks: v.counters[2],
                parks: v.counters[3],
                redeliveries: v.counters[4],
            })
            .collect();
        crate::metrics::render_groups(out, &samples);
    }
}
