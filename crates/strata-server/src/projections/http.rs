//! The `/projections` endpoints (docs/http-api.md, "Projections").

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use strata_js::{JsError, JsProjection};
use strata_store::projection::ProjectionSource;

use super::{PutOutcome, View};
use crate::app::{route, run_blocking, App, Route};
use crate::auth::{Action, Principal};
use crate::body::read_limited;
use crate::error::{Error, Result};
use crate::path::ProjectionName;
use crate::query::Query;
use crate::response::{json_response, json_value};

/// What is percent-encoded in a name used as one path segment (`Location`): everything but
/// RFC 3986 unreserved characters.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The routes of this module (merged into the server's route table).
pub(crate) fn routes() -> Vec<Route> {
    vec![
        route("GET", "/projections", list),
        route("GET", "/projections/{name}", get),
        route("PUT", "/projections/{name}", put),
        route("DELETE", "/projections/{name}", delete),
        route("GET", "/projections/{name}/state", state),
        // Stopped (checkpointed).
        control("/projections/{name}/stop", super::Projections::stop),
        // Running.
        control("/projections/{name}/start", super::Projections::start),
        // A new incarnation of the same generation, rebuilding; what it emits again is
        // deduplicated.
        control("/projections/{name}/reset", super::Projections::reset),
    ]
}

/// The JSON of a projection (the API's fields first, then the documented additions).
pub(crate) fn view_json(view: &View, with_query: bool) -> Value {
    let s = &view.status;
    let error = s
        .error
        .as_ref()
        .map(|e| json!({ "message": e.message, "stack": e.stack, "position": e.position }));
    let reads = match &view.source {
        ProjectionSource::All => json!({ "kind": "all" }),
        ProjectionSource::Stream(name) => json!({ "kind": "stream", "name": name }),
        ProjectionSource::Streams(names) => json!({ "kind": "streams", "names": names }),
        ProjectionSource::Category(name) => json!({ "kind": "category", "name": name }),
    };
    let mut v = json!({
        "name": s.name,
        "status": s.state.as_str(),
        "position": s.position,
        "lag": s.lag,
        "error": error,
        "events_processed": s.events_processed,
        "events_per_second": (s.events_per_second * 10.0).round() / 10.0,
        "partitioned": view.partitioned,
        "partitions": s.partitions,
        "checkpoint_position": s.checkpoint_position,
        "incarnation": s.incarnation,
        "generation": s.generation,
        "reads": reads,
    });
    if with_query {
        v["query"] = json!(view.definition.source);
    }
    v
}

/// Runs a blocking projection operation on the blocking pool.
async fn blocking<T: Send + 'static>(
    app: &App,
    f: impl FnOnce(&super::Projections) -> Result<T> + Send + 'static,
) -> Result<T> {
    let projections = app.projections().clone();
    run_blocking("projection task failed", move || f(&projections)).await?
}

/// `GET /projections`: `{"projections": [<projection>...]}` by name.
async fn list(
    State(app): State<App>,
    principal: Principal,
    RawQuery(raw_query): RawQuery,
) -> Result<Response> {
    principal.authorize(Action::ReadProjections)?;
    Query::parse(raw_query.as_deref(), &[])?;
    let items: Vec<Value> = app
        .projections()
        .list()?
        .iter()
        .map(|v| view_json(v, false))
        .collect();
    Ok(json_value(StatusCode::OK, &json!({ "projections": items })))
}

/// `GET /projections/{name}`: the projection, with its source as `query`.
async fn get(
    State(app): State<App>,
    principal: Principal,
    ProjectionName(name): ProjectionName,
    RawQuery(raw_query): RawQuery,
) -> Result<Response> {
    principal.authorize(Action::ReadProjections)?;
    Query::parse(raw_query.as_deref(), &[])?;
    let view = app.projections().describe(&name)?;
    Ok(json_value(StatusCode::OK, &view_json(&view, true)))
}

/// `GET /projections/{name}/state[?partition=key]`.
async fn state(
    State(app): State<App>,
    principal: Principal,
    ProjectionName(name): ProjectionName,
    RawQuery(raw_query): RawQuery,
) -> Result<Response> {
    principal.authorize(Action::ReadProjections)?;
    let q = Query::parse(raw_query.as_deref(), &["partition"])?;
    let partition = q.get("partition").map(str::to_owned);
    // Encoding a large state is CPU work: off the async workers.
    let bytes = blocking(&app, move |p| p.state_json(&name, partition.as_deref())).await?;
    Ok(json_response(bytes))
}

/// 415 unless `Content-Type` is `application/javascript` or `text/javascript`.
fn require_javascript(headers: &HeaderMap) -> Result<()> {
    let value = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = value.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/javascript")
        || essence.eq_ignore_ascii_case("text/javascript")
    {
        Ok(())
    } else {
        Err(Error::UnsupportedMediaType(format!(
            "a projection's body is its JavaScript source: send Content-Type: application/javascript, not {value:?}"
        )))
    }
}

/// `PUT /projections/{name}` with the JavaScript source: 201 created (running), 200 updated
/// (a different source: a new generation that rebuilds from the start and emits under new ids)
/// or unchanged.
async fn put(
    State(app): State<App>,
    principal: Principal,
    ProjectionName(name): ProjectionName,
    RawQuery(raw_query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    principal.authorize(Action::ManageProjections)?;
    Query::parse(raw_query.as_deref(), &[])?;
    require_javascript(&headers)?;
    let options = app.projections().options().clone();
    let max = options.max_source_bytes;
    let too_large =
        || Error::PayloadTooLarge(format!("a projection source is at most {max} bytes"));
    let bytes = read_limited(body, max, too_large).await?;
    let source = String::from_utf8(bytes.to_vec())
        .map_err(|_| Error::invalid("the projection source must be UTF-8"))?;
    // Compile before anything is written (the JS runtime is not Send: dropped in the task).
    let limits = options.js_limits;
    let checked = source.clone();
    run_blocking("compile task failed", move || {
        JsProjection::compile(&checked, limits).map(drop)
    })
    .await?
    .map_err(script_error)?;
    let (outcome, view) = blocking(&app, move |p| p.put(&name, source)).await?;
    let status = match outcome {
        PutOutcome::Created => StatusCode::CREATED,
        PutOutcome::Updated | PutOutcome::Unchanged => StatusCode::OK,
    };
    let mut response = json_value(status, &view_json(&view, true));
    if status == StatusCode::CREATED {
        let location = format!(
            "/projections/{}",
            percent_encoding::utf8_percent_encode(&view.status.name, SEGMENT)
        );
        if let Ok(v) = HeaderValue::from_str(&location) {
            response.headers_mut().insert(header::LOCATION, v);
        }
    }
    Ok(response)
}

/// A refused script: 400 `invalid_request` with `line` / `column` for syntax errors.
pub(crate) fn script_error(e: JsError) -> Error {
    match e {
        JsError::Syntax {
            message,
            line,
            column,
        } => Error::InvalidScript {
            message: format!("syntax error: {message}"),
            line,
            column,
        },
        other => Error::InvalidScript {
            message: other.to_string(),
            line: None,
            column: None,
        },
    }
}

/// `DELETE /projections/{name}`: 204; its checkpoint stream is deleted too.
async fn delete(
    State(app): State<App>,
    principal: Principal,
    ProjectionName(name): ProjectionName,
    RawQuery(raw_query): RawQuery,
) -> Result<Response> {
    principal.authorize(Action::ManageProjections)?;
    Query::parse(raw_query.as_deref(), &[])?;
    blocking(&app, move |p| p.delete(&name)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `POST <path>` (`/projections/{name}/stop`, `start`, `reset`): `f` on the projection named,
/// with the write role, on the blocking pool; 200 with the projection as it then is.
fn control(path: &'static str, f: fn(&super::Projections, &str) -> Result<View>) -> Route {
    route(
        "POST",
        path,
        move |State(app): State<App>,
              principal: Principal,
              ProjectionName(name): ProjectionName,
              RawQuery(raw_query): RawQuery| async move {
            principal.authorize(Action::ManageProjections)?;
            Query::parse(raw_query.as_deref(), &[])?;
            let view = blocking(&app, move |p| f(p, &name)).await?;
            Ok::<_, Error>(json_value(StatusCode::OK, &view_json(&view, false)))
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        let mut h = HeaderMap::new();
        assert!(require_javascript(&h).is_err());
        for ok in [
            "application/javascript",
            "text/javascript; charset=utf-8",
            "Application/JavaScript",
        ] {
            h.insert(header::CONTENT_TYPE, ok.parse().unwrap());
            assert!(require_javascript(&h).is_ok(), "{ok}");
        }
        h.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        assert!(require_javascript(&h).is_err());
    }
}
