//! The `/projections` endpoints (docs/http-api.md, "Projections").

use axum::body::Body;
use axum::extract::{FromRequestParts, RawQuery, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::{json, Value};
use strata_js::{JsError, JsProjection};
use strata_store::projection::ProjectionSource;

use super::{PutOutcome, View};
use crate::app::{route, App, Route};
use crate::auth::{Action, Principal};
use crate::error::{Error, Result};
use crate::query::Query;
use crate::read::json_response;
use crate::{path, stream_name};

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
        route("POST", "/projections/{name}/stop", stop),
        route("POST", "/projections/{name}/start", start),
        route("POST", "/projections/{name}/reset", reset),
    ]
}

/// The `{name}` path parameter, percent-decoded and checked: 1–255 bytes of UTF-8, no control
/// characters, not starting with `$`.
pub(crate) struct ProjectionName(String);

impl<S: Send + Sync> FromRequestParts<S> for ProjectionName {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self> {
        let name = path::param(parts, state, "name").await?;
        check_name(&name)?;
        Ok(ProjectionName(name))
    }
}

fn check_name(name: &str) -> Result<()> {
    stream_name::check_name("projection", name)?;
    if name.starts_with('$') {
        return Err(Error::invalid(format!(
            "projection names must not start with $: {name:?}"
        )));
    }
    Ok(())
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

fn json_value(status: StatusCode, v: &Value) -> Response {
    let mut r = json_response(v.to_string().into_bytes());
    *r.status_mut() = status;
    r
}

/// Runs a blocking projection operation on the blocking pool.
async fn blocking<T: Send + 'static>(
    app: &App,
    f: impl FnOnce(&super::Projections) -> Result<T> + Send + 'static,
) -> Result<T> {
    let projections = app.projections().clone();
    tokio::task::spawn_blocking(move || f(&projections))
        .await
        .map_err(|e| Error::Internal(format!("projection task failed: {e}")))?
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
    let bytes = match Limited::new(body, max).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => return Err(too_large()),
        Err(e) => {
            return Err(Error::invalid(format!(
                "could not read the request body: {e}"
            )))
        }
    };
    let source = String::from_utf8(bytes.to_vec())
        .map_err(|_| Error::invalid("the projection source must be UTF-8"))?;
    // Compile before anything is written (the JS runtime is not Send: dropped in the task).
    let limits = options.js_limits;
    let checked = source.clone();
    tokio::task::spawn_blocking(move || JsProjection::compile(&checked, limits).map(drop))
        .await
        .map_err(|e| Error::Internal(format!("compile task failed: {e}")))?
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
fn script_error(e: JsError) -> Error {
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

async fn action(
    app: App,
    principal: Principal,
    name: String,
    raw_query: Option<String>,
    f: fn(&super::Projections, &str) -> Result<View>,
) -> Result<Response> {
    principal.authorize(Action::ManageProjections)?;
    Query::parse(raw_query.as_deref(), &[])?;
    let view = blocking(&app, move |p| f(p, &name)).await?;
    Ok(json_value(StatusCode::OK, &view_json(&view, false)))
}

/// `POST /projections/{name}/stop`: 200 with the projection (stopped, checkpointed).
async fn stop(
    State(app): State<App>,
    principal: Principal,
    ProjectionName(name): ProjectionName,
    RawQuery(raw_query): RawQuery,
) -> Result<Response> {
    action(app, principal, name, raw_query, super::Projections::stop).await
}

/// `POST /projections/{name}/start`: 200 with the projection (running).
async fn start(
    State(app): State<App>,
    principal: Principal,
    ProjectionName(name): ProjectionName,
    RawQuery(raw_query): RawQuery,
) -> Result<Response> {
    action(app, principal, name, raw_query, super::Projections::start).await
}

/// `POST /projections/{name}/reset`: 200 with the projection (a new incarnation of the same
/// generation, rebuilding; what it emits again is deduplicated).
async fn reset(
    State(app): State<App>,
    principal: Principal,
    ProjectionName(name): ProjectionName,
    RawQuery(raw_query): RawQuery,
) -> Result<Response> {
    action(app, principal, name, raw_query, super::Projections::reset).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("order-totals").is_ok());
        assert!(check_name(&"a".repeat(255)).is_ok());
        assert!(check_name(&"a".repeat(256)).is_err());
        assert!(check_name("").is_err());
        assert!(check_name("$system").is_err());
        assert!(check_name("a\tb").is_err());
    }

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
