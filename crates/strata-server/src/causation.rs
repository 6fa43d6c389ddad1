//! `GET /events/{id}/causes` and `GET /events/{id}/effects`: walks along the causation chain
//! of `metadata.causation_id`, answered from the correlation index (see
//! [`strata_store::Store::causes`] and [`strata_store::Store::effects`]).
//!
//! Body: `{"events": [...], "truncated": bool, "unresolved": "<causation id>" | null}`, the
//! events in log order. `?max=` caps the walk (1–1000, default 100). Reading a chain may cross
//! any user stream, so it needs the right to read `/all`.
//!
//! Limits: only events that carry a `correlation_id` or `causation_id` are found by id, so
//! `causes` answers 404 for an event outside every flow and stops at a cause outside every flow
//! (`unresolved` names it); ids are unique per stream, not per log (the first event with the
//! id is taken, and a cause is the latest event with that id before its effect).

use axum::extract::{RawQuery, State};
use axum::response::Response;
use strata_store::CausalChain;
use uuid::Uuid;

use crate::app::App;
use crate::auth::{Action, Principal};
use crate::error::{Error, Result};
use crate::event_json::{write_event, write_str, Layout};
use crate::path::EventIdPath;
use crate::query::Query;
use crate::response::json_response;

/// Default and largest `max` of a walk (events).
const DEFAULT_MAX: u64 = 100;
const MAX_MAX: u64 = 1000;

/// The id and `max` of a walk, after the auth check.
fn walk_params(principal: &Principal, id: &str, raw: Option<&str>) -> Result<(Uuid, usize)> {
    principal.authorize(Action::ReadAll {
        stream_prefix: None,
        include_system: false,
    })?;
    let q = Query::parse(raw, &["max"])?;
    let max = q.limit("max", DEFAULT_MAX, MAX_MAX)?;
    let id = Uuid::try_parse(id)
        .map_err(|_| Error::invalid(format!("event id must be a UUID, not {id:?}")))?;
    Ok((id, max))
}

/// `GET /events/{id}/causes`: the events that caused `id`, root first.
pub(crate) async fn causes(
    State(app): State<App>,
    principal: Principal,
    EventIdPath(id): EventIdPath,
    RawQuery(raw): RawQuery,
) -> Result<Response> {
    let (id, max) = walk_params(&principal, &id, raw.as_deref())?;
    let chain = app.blocking(move |store| store.causes(id, max)).await?;
    let Some(chain) = chain else {
        return Err(Error::NotFound(format!(
            "no event with id {id} carries a correlation_id or causation_id"
        )));
    };
    Ok(render(&app, &chain))
}

/// `GET /events/{id}/effects`: the events caused by `id`, directly or not, in log order.
pub(crate) async fn effects(
    State(app): State<App>,
    principal: Principal,
    EventIdPath(id): EventIdPath,
    RawQuery(raw): RawQuery,
) -> Result<Response> {
    let (id, max) = walk_params(&principal, &id, raw.as_deref())?;
    let chain = app.blocking(move |store| store.effects(id, max)).await?;
    Ok(render(&app, &chain))
}

fn render(app: &App, chain: &CausalChain) -> Response {
    let mut out = Vec::with_capacity(
        64 + chain
            .events
            .iter()
            .map(|e| 200 + e.stream.len() + e.data.len() + e.metadata.len())
            .sum::<usize>(),
    );
    out.extend_from_slice(b"{\"events\":[");
    for (i, e) in chain.events.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_event(&mut out, e, Layout::Document);
    }
    out.extend_from_slice(if chain.truncated {
        b"],\"truncated\":true,\"unresolved\":"
    } else {
        b"],\"truncated\":false,\"unresolved\":"
    });
    match &chain.unresolved {
        Some(u) => write_str(&mut out, u),
        None => out.extend_from_slice(b"null"),
    }
    out.push(b'}');
    app.metrics().add_events_read(chain.events.len());
    json_response(out)
}
