//! The HTTP endpoints of consumer groups (docs/http-api.md, "Consumer groups", where the
//! choices the contract leaves open are marked **Strata:**).
//!
//! | route | role | answer |
//! |---|---|---|
//! | `PUT /groups/{group}` | write | 201 created / 200 identical or updated: the group |
//! | `GET /groups` | read | `{"groups": [group...]}` |
//! | `GET /groups/{group}` | read | the group |
//! | `DELETE /groups/{group}` | write | 204 |
//! | `POST /groups/{group}/poll?max=&wait_ms=` | read | `{"messages": [{"ack_id", "delivery", "event"}]}` |
//! | `POST /groups/{group}/ack` | read | `{"acked": n, "ignored": m}` |
//! | `POST /groups/{group}/nack` | read | `{"nacked": n, "ignored": m}` |
//! | `GET /groups/{group}/parked?max=&after=` | read | `{"parked": [...], "next": cursor or null}` |
//! | `POST /groups/{group}/parked/replay?max=` | write | `{"replayed": n, "missing": m, "remaining": k}` |
//!
//! Roles are checked against the group's source like stream access (a prefix-limited token
//! needs a prefix covering the source stream or category; `$all` needs an unrestricted token).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};

use super::dispatcher::NackAction;
use super::durable::UNKNOWN;
use super::manager::{Group, GroupView, Message};
use super::settings::Settings;
use crate::app::App;
use crate::auth::{Action, Principal};
use crate::body::read_json_body;
use crate::error::{Error, Result};
use crate::event_json::{write_event, write_str, write_u64, Layout};
use crate::format_timestamp;
use crate::path::GroupPath;
use crate::query::{parse_digits, Query};
use crate::response::{json_response, json_value};

/// Default and largest `max` of a poll.
const DEFAULT_POLL_MAX: u64 = 100;
const MAX_POLL_MAX: u64 = 1_000;
/// Default and largest `wait_ms` of a poll.
const DEFAULT_WAIT_MS: u64 = 5_000;
const MAX_WAIT_MS: u64 = 60_000;
/// Most ack ids in one ack or nack.
const MAX_ACK_IDS: usize = 10_000;

fn view_json(v: &GroupView) -> Value {
    let settings = v.settings.to_api();
    let mut out = json!({
        "name": v.name,
        "settings": settings,
        "start": v.start,
        "checkpoint": v.checkpoint,
        "in_flight": v.in_flight,
        "buffered": v.buffered,
        "parked": v.parked,
        "replaying": v.replaying,
        "lag": v.lag,
        "error": v.error,
        "waiting_polls": v.waiting_polls,
        "stats": {
            "deliveries": v.counters[0],
            "acks": v.counters[1],
            "nacks": v.counters[2],
            "parks": v.counters[3],
            "redeliveries": v.counters[4],
        },
    });
    // The settings also at the top level, next to the state.
    if let (Value::Object(o), Value::Object(s)) = (&mut out, settings) {
        for (k, v) in s {
            o.insert(k, v);
        }
    }
    out
}

async fn describe_one(app: &App, group: Arc<Group>) -> Result<Value> {
    let views = app.groups().describe(vec![group]).await?;
    views
        .first()
        .map(view_json)
        .ok_or_else(|| Error::Internal("group vanished".into()))
}

/// `PUT /groups/{group}`: creates (201) or confirms/updates (200) the group; 409 `conflict`
/// when its source, from or ordering would change.
pub(crate) async fn put(
    State(app): State<App>,
    principal: Principal,
    GroupPath(name): GroupPath,
    RawQuery(raw_query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    Query::parse(raw_query.as_deref(), &[])?;
    let bytes = read_json_body(&headers, body, app.limits().max_body_bytes).await?;
    let settings = Settings::parse(&bytes)?;
    principal.authorize(Action::ManageGroup(settings.source.auth_scope()))?;
    if let Ok(existing) = app.groups().get(&name).await {
        principal.authorize(Action::ManageGroup(existing.source().auth_scope()))?;
    }
    let (created, group) = app.groups().put(&name, settings).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(json_value(status, &describe_one(&app, group).await?))
}

/// `GET /groups`: every group the token may read, by name.
pub(crate) async fn list(
    State(app): State<App>,
    principal: Principal,
    RawQuery(raw_query): RawQuery,
) -> Result<Response> {
    principal.authorize(Action::ServerInfo)?;
    Query::parse(raw_query.as_deref(), &[])?;
    let groups: Vec<Arc<Group>> = app
        .groups()
        .all()
        .await?
        .into_iter()
        .filter(|g| {
            principal
                .authorize(Action::ConsumeGroup(g.source().auth_scope()))
                .is_ok()
        })
        .collect();
    let views = app.groups().describe(groups).await?;
    let list: Vec<Value> = views.iter().map(view_json).collect();
    Ok(json_value(StatusCode::OK, &json!({ "groups": list })))
}

/// The group, if the principal may `consume` (read role) or `manage` (write role) it.
async fn group_for(
    app: &App,
    principal: &Principal,
    name: &str,
    manage: bool,
) -> Result<Arc<Group>> {
    let group = app.groups().get(name).await?;
    let source = group.source();
    let scope = source.auth_scope();
    principal.authorize(if manage {
        Action::ManageGroup(scope)
    } else {
        Action::ConsumeGroup(scope)
    })?;
    Ok(group)
}

/// `GET /groups/{group}`.
pub(crate) async fn get(
    State(app): State<App>,
    principal: Principal,
    GroupPath(name): GroupPath,
    RawQuery(raw_query): RawQuery,
) -> Result<Response> {
    Query::parse(raw_query.as_deref(), &[])?;
    let group = group_for(&app, &principal, &name, false).await?;
    Ok(json_value(
        StatusCode::OK,
        &describe_one(&app, group).await?,
    ))
}

/// `DELETE /groups/{group}`: 204; the group's state is dropped, pollers get 404.
pub(crate) async fn delete(
    State(app): State<App>,
    principal: Principal,
    GroupPath(name): GroupPath,
    RawQuery(raw_query): RawQuery,
) -> Result<Response> {
    Query::parse(raw_query.as_deref(), &[])?;
    let group = group_for(&app, &principal, &name, true).await?;
    app.groups().delete(&group).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST /groups/{group}/poll?max=100&wait_ms=5000`.
pub(crate) async fn poll(
    State(app): State<App>,
    principal: Principal,
    GroupPath(name): GroupPath,
    RawQuery(raw_query): RawQuery,
) -> Result<Response> {
    let q = Query::parse(raw_query.as_deref(), &["max", "wait_ms"])?;
    let max = q.limit("max", DEFAULT_POLL_MAX, MAX_POLL_MAX)?;
    let wait_ms = match q.get("wait_ms") {
        None => DEFAULT_WAIT_MS,
        Some(v) => parse_digits(v)
            .filter(|n| *n <= MAX_WAIT_MS)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "wait_ms must be an integer from 0 to {MAX_WAIT_MS}, not {v:?}"
                ))
            })?,
    };
    let group = group_for(&app, &principal, &name, false).await?;
    let shutdown = app.clone();
    let messages = app
        .groups()
        .poll(&group, max, Duration::from_millis(wait_ms), async move {
            shutdown.shutting_down().await
        })
        .await?;
    app.metrics().add_events_read(messages.len());
    Ok(json_response(render_messages(&messages)))
}

fn render_messages(messages: &[Message]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + messages.len() * 256);
    out.extend_from_slice(b"{\"messages\":[");
    for (i, m) in messages.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"ack_id\":");
        write_str(&mut out, &m.ack_id);
        out.extend_from_slice(b",\"delivery\":");
        write_u64(&mut out, u64::from(m.delivery));
        out.extend_from_slice(b",\"event\":");
        write_event(&mut out, &m.event, Layout::Document);
        out.push(b'}');
    }
    out.extend_from_slice(b"]}");
    out
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AckBody {
    ack_ids: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NackBody {
    ack_ids: Vec<String>,
    #[serde(default)]
    action: Option<String>,
}

/// What an ack and a nack (`what`) read first, in this order: no query parameters, a JSON
/// body within the size limit, a JSON object of the body's shape.
async fn settle_body<T: for<'de> Deserialize<'de>>(
    app: &App,
    raw_query: Option<&str>,
    headers: &HeaderMap,
    body: Body,
    what: &str,
) -> Result<T> {
    Query::parse(raw_query, &[])?;
    let bytes = read_json_body(headers, body, app.limits().max_body_bytes).await?;
    parse_body(&bytes, what)
}

fn parse_body<T: for<'de> Deserialize<'de>>(bytes: &[u8], what: &str) -> Result<T> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| Error::invalid(format!("malformed {what} body: {e}")))?;
    if !value.is_object() {
        return Err(Error::invalid(format!(
            "the {what} body must be a JSON object"
        )));
    }
    serde_json::from_value(value).map_err(|e| Error::invalid(format!("bad {what} body: {e}")))
}

fn check_ids(ids: &[String]) -> Result<()> {
    if ids.is_empty() {
        return Err(Error::invalid("ack_ids must not be empty"));
    }
    if ids.len() > MAX_ACK_IDS {
        return Err(Error::invalid(format!(
            "at most {MAX_ACK_IDS} ack_ids per request, not {}",
            ids.len()
        )));
    }
    Ok(())
}

/// `POST /groups/{group}/ack` `{"ack_ids": [...]}` → `{"acked", "ignored"}`. All-or-nothing:
/// an unknown id is a 400 naming them in `unknown_ack_ids`, and nothing is acked.
pub(crate) async fn ack(
    State(app): State<App>,
    principal: Principal,
    GroupPath(name): GroupPath,
    RawQuery(raw_query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let body: AckBody = settle_body(&app, raw_query.as_deref(), &headers, body, "ack").await?;
    check_ids(&body.ack_ids)?;
    let group = group_for(&app, &principal, &name, false).await?;
    let settled = app.groups().ack(&group, &body.ack_ids).await?;
    Ok(json_value(
        StatusCode::OK,
        &json!({ "acked": settled.applied, "ignored": settled.ignored }),
    ))
}

/// `POST /groups/{group}/nack` `{"ack_ids": [...], "action": "retry" | "park" | "skip"}`
/// (`action` defaults to `retry`) → `{"nacked", "ignored"}`.
pub(crate) async fn nack(
    State(app): State<App>,
    principal: Principal,
    GroupPath(name): GroupPath,
    RawQuery(raw_query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let body: NackBody = settle_body(&app, raw_query.as_deref(), &headers, body, "nack").await?;
    check_ids(&body.ack_ids)?;
    let action = match body.action.as_deref() {
        None | Some("retry") => NackAction::Retry,
        Some("park") => NackAction::Park,
        Some("skip") => NackAction::Skip,
        Some(other) => {
            return Err(Error::invalid(format!(
                "action must be \"retry\", \"park\" or \"skip\", not {other:?}"
            )))
        }
    };
    let group = group_for(&app, &principal, &name, false).await?;
    let settled = app.groups().nack(&group, &body.ack_ids, action).await?;
    Ok(json_value(
        StatusCode::OK,
        &json!({ "nacked": settled.applied, "ignored": settled.ignored }),
    ))
}

/// `GET /groups/{group}/parked?max=100&after=<cursor>`: parked events by cursor, paged.
pub(crate) async fn parked(
    State(app): State<App>,
    principal: Principal,
    GroupPath(name): GroupPath,
    RawQuery(raw_query): RawQuery,
) -> Result<Response> {
    let q = Query::parse(raw_query.as_deref(), &["max", "after"])?;
    let max = q.limit("max", 100, 10_000)?;
    let after = match q.get("after") {
        None => None,
        Some(v) => Some(parse_digits(v).ok_or_else(|| {
            Error::invalid(format!(
                "after must be a non-negative integer (plain digits), not {v:?}"
            ))
        })?),
    };
    let group = group_for(&app, &principal, &name, false).await?;
    let (entries, next) = app.groups().parked(&group, after, max);
    let list: Vec<Value> = entries
        .iter()
        .map(|p| {
            // What damage hides of a `corrupt` entry is null.
            let known = |n: u64| (n != UNKNOWN).then_some(n);
            let text = |s: &str| (!s.is_empty()).then(|| s.to_owned());
            let mut v = json!({
                "cursor": p.cursor,
                "stream": text(&p.stream),
                "revision": known(p.revision),
                "position": known(p.position),
                "event_id": (!p.event_id.is_nil()).then(|| p.event_id.to_string()),
                "type": text(&p.event_type),
                "delivery": p.delivery,
                "reason": p.reason,
                "parked_at": format_timestamp(p.parked_at),
            });
            if let (Some(file), Some(offset)) = (&p.file, p.offset) {
                v["file"] = json!(file);
                v["offset"] = json!(offset);
            }
            v
        })
        .collect();
    Ok(json_value(
        StatusCode::OK,
        &json!({ "parked": list, "next": next }),
    ))
}

/// `POST /groups/{group}/parked/replay?max=<n>`: re-queues parked events (oldest first, at
/// most `max`, default the group window) with their delivery count reset. The body may be
/// empty or `{}`. Answers once the replay is durable.
pub(crate) async fn replay(
    State(app): State<App>,
    principal: Principal,
    GroupPath(name): GroupPath,
    RawQuery(raw_query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    let q = Query::parse(raw_query.as_deref(), &["max"])?;
    let window = app.groups_window();
    let max = q.limit("max", window as u64, window as u64)?;
    let has_body = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| v.trim() != "0");
    if has_body {
        let bytes = axum::body::to_bytes(body, 4096)
            .await
            .map_err(|_| Error::invalid("the replay body must be empty or {}"))?;
        if !bytes.iter().all(u8::is_ascii_whitespace) {
            match serde_json::from_slice::<Value>(&bytes) {
                Ok(Value::Object(o)) if o.is_empty() => {}
                _ => return Err(Error::invalid("the replay body must be empty or {}")),
            }
        }
    }
    let group = group_for(&app, &principal, &name, true).await?;
    let (replayed, missing, remaining) = app.groups().replay(&group, max).await?;
    Ok(json_value(
        StatusCode::OK,
        &json!({ "replayed": replayed, "missing": missing, "remaining": remaining }),
    ))
}
