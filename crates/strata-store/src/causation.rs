//! Walking the causation chain through the correlation index: an event by id, the events that
//! caused it ([`causes`]), the events it caused ([`effects`]).
//!
//! Limits (documented for users in `docs/guide.md` and `docs/http-api.md`): only events that
//! carry a `correlation_id` or `causation_id` are found by id (the others are not in the index),
//! so a chain of causes ends at the first cause outside every flow (reported as
//! [`CausalChain::unresolved`]); a walk returns at most `max` events ([`CausalChain::truncated`]
//! then says so). Ids are unique per stream, not per log: by id, [`find_event`] takes the first
//! event in log order, and a cause is the latest event with that id before its effect.

use std::collections::{BTreeMap, VecDeque};

use uuid::Uuid;

use crate::correlation::{causation_key_of, id_key, links_of};
use crate::error::Result;
use crate::event::RecordedEvent;
use crate::log::{LogState, Shared};
use crate::read::{postings, Posting};

/// The result of a walk along the causation chain.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CausalChain {
    /// The events found, in log order.
    pub events: Vec<RecordedEvent>,
    /// True when the walk stopped at its `max` events with more to follow.
    pub truncated: bool,
    /// For causes: the `causation_id` at which the walk stopped because no indexed event has
    /// that id (a cause outside every flow, or a causation id that is not an event id).
    pub unresolved: Option<String>,
}

/// Positions below `committed` holding events that carry either correlation field and whose
/// id is `id`, ascending; `to` inclusive.
fn id_positions(shared: &Shared, state: &LogState, id: Uuid, to: u64) -> Result<Vec<u64>> {
    let mut out = Vec::new();
    for p in postings(shared, state, 0, to, Posting::Link(id_key(id)))? {
        if shared.with_event(state, p, |v| v.id == id)? {
            out.push(p);
        }
    }
    Ok(out)
}

/// The first event in log order with this id among those that carry a `correlation_id` or
/// `causation_id`.
pub(crate) fn find_event(shared: &Shared, id: Uuid) -> Result<Option<RecordedEvent>> {
    let committed = shared.committed();
    if committed == 0 {
        return Ok(None);
    }
    let state = shared.snapshot();
    match id_positions(shared, &state, id, committed - 1)?.first() {
        Some(&p) => Ok(Some(shared.with_event(&state, p, |v| v.to_owned_event())?)),
        None => Ok(None),
    }
}

/// The causes of the event `id` (see [`find_event`]), nearest first up to `max`, returned in log
/// order (the root first). `None` when no indexed event has that id.
pub(crate) fn causes(shared: &Shared, id: Uuid, max: usize) -> Result<Option<CausalChain>> {
    let committed = shared.committed();
    if committed == 0 {
        return Ok(None);
    }
    let state = shared.snapshot();
    let Some(&start) = id_positions(shared, &state, id, committed - 1)?.first() else {
        return Ok(None);
    };
    let mut chain = CausalChain::default();
    let mut at = start;
    let mut cause = shared.with_event(&state, at, |v| {
        links_of(v.metadata).causation_id.map(|c| c.into_owned())
    })?;
    while let Some(c) = cause {
        if chain.events.len() >= max {
            chain.truncated = true;
            break;
        }
        let found = match Uuid::try_parse(&c) {
            Ok(cid) if at > 0 => id_positions(shared, &state, cid, at - 1)?.last().copied(),
            _ => None,
        };
        let Some(p) = found else {
            chain.unresolved = Some(c);
            break;
        };
        let event = shared.with_event(&state, p, |v| v.to_owned_event())?;
        cause = links_of(&event.metadata)
            .causation_id
            .map(|c| c.into_owned());
        chain.events.push(event);
        at = p;
    }
    chain.events.reverse();
    Ok(Some(chain))
}

/// The events caused by the event `id`, directly or through other events, in log order, up to
/// `max`. The event itself need not be indexed: its effects name it in their `causation_id`.
pub(crate) fn effects(shared: &Shared, id: Uuid, max: usize) -> Result<CausalChain> {
    let committed = shared.committed();
    let mut chain = CausalChain::default();
    if committed == 0 {
        return Ok(chain);
    }
    let state = shared.snapshot();
    let mut found: BTreeMap<u64, RecordedEvent> = BTreeMap::new();
    let mut queue = VecDeque::from([id]);
    'walk: while let Some(cause) = queue.pop_front() {
        let key = causation_key_of(cause);
        for p in postings(shared, &state, 0, committed - 1, Posting::Link(key))? {
            if found.contains_key(&p) {
                continue;
            }
            let event = shared.with_event(&state, p, |v| {
                let links = links_of(v.metadata);
                let caused = links
                    .causation_id
                    .as_deref()
                    .and_then(|c| Uuid::try_parse(c).ok())
                    == Some(cause);
                caused.then(|| v.to_owned_event())
            })?;
            let Some(event) = event else { continue };
            if found.len() >= max {
                chain.truncated = true;
                break 'walk;
            }
            queue.push_back(event.id);
            found.insert(p, event);
        }
    }
    chain.events = found.into_values().collect();
    Ok(chain)
}
