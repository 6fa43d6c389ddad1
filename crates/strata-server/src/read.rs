//! Reading: `GET /streams/{stream}`, `GET /all` and `GET /streams/{stream}/{revision}`.
//!
//! One resource, three representations chosen by `Accept` (docs/http-api.md): a JSON page (here), an
//! NDJSON replay ([`crate::replay`]) and an SSE catch-up subscription ([`crate::subscribe`]).

use axum::extract::{FromRequestParts, RawQuery, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use strata_store::{Direction, ReadSlice};

use crate::app::App;
use crate::auth::{Action, Principal};
use crate::error::{Error, Result};
use crate::event_json::{write_event, write_u64, Layout};
use crate::query::{Query, ReadParams, Target};
use crate::{path, query, replay, stream_name, subscribe};

/// The `{stream}` path parameter, percent-decoded (checked by each handler).
pub(crate) struct StreamPath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for StreamPath {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self> {
        Ok(StreamPath(path::param(parts, state, "stream").await?))
    }
}

/// The `{stream}` and `{revision}` path parameters of `GET /streams/{stream}/{revision}`.
pub(crate) struct EventPath {
    stream: String,
    revision: String,
}

impl<S: Send + Sync> FromRequestParts<S> for EventPath {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self> {
        let params = path::params(parts, state).await?;
        Ok(EventPath {
            stream: path::take(&params, "stream")?,
            revision: path::take(&params, "revision")?,
        })
    }
}

/// The representation a read answers with, from the `Accept` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Representation {
    /// `application/json`: one page (the default).
    Json,
    /// `application/x-ndjson`: a streamed replay to the current end.
    Ndjson,
    /// `text/event-stream`: a catch-up subscription.
    EventStream,
}

/// Picks the representation: the supported media type with the highest `q` in `Accept`
/// (ties in the header's order); JSON when the header is absent or names none of them.
pub(crate) fn representation(headers: &HeaderMap) -> Representation {
    let mut best: Option<(Representation, f32)> = None;
    for value in headers.get_all(header::ACCEPT) {
        let Ok(value) = value.to_str() else { continue };
        for range in value.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            let rep = match media.as_str() {
                "application/json" | "application/*" | "*/*" => Representation::Json,
                "application/x-ndjson" | "application/ndjson" => Representation::Ndjson,
                "text/event-stream" => Representation::EventStream,
                _ => continue,
            };
            if q > 0.0 && best.is_none_or(|(_, bq)| q > bq) {
                best = Some((rep, q));
            }
        }
    }
    best.map_or(Representation::Json, |(r, _)| r)
}

/// The `Last-Event-ID` header, if present: the last id the client saw.
pub(crate) fn last_event_id(headers: &HeaderMap) -> Result<Option<u64>> {
    let Some(v) = headers.get("last-event-id") else {
        return Ok(None);
    };
    let text = v
        .to_str()
        .map_err(|_| Error::invalid("Last-Event-ID must be text"))?
        .trim();
    if text.is_empty() {
        return Ok(None);
    }
    query::parse_digits(text).map(Some).ok_or_else(|| {
        Error::invalid(format!(
            "Last-Event-ID must be an event's revision or position (plain digits), not {text:?}"
        ))
    })
}

/// `GET /streams/{stream}`.
pub(crate) async fn read_stream(
    State(app): State<App>,
    principal: Principal,
    StreamPath(stream): StreamPath,
    RawQuery(raw_query): RawQuery,
    headers: HeaderMap,
) -> Result<Response> {
    stream_name::check_readable(&stream)?;
    principal.authorize(Action::ReadStream(&stream))?;
    let params = ReadParams::parse(raw_query.as_deref(), Target::Stream)?;
    match representation(&headers) {
        Representation::Json => {
            let (from, direction, limit) = (params.read_from(), params.direction, params.limit);
            let page = app
                .blocking(move |store| {
                    let slice = store.read_stream(&stream, from, direction, limit)?;
                    Ok(render_page(&slice))
                })
                .await?;
            app.metrics().add_events_read(page.1);
            Ok(json_response(page.0))
        }
        Representation::Ndjson => {
            replay::replay(app, replay::Source::Stream(stream), &params).await
        }
        Representation::EventStream => {
            let last_id = last_event_id(&headers)?;
            subscribe::subscribe(app, subscribe::Source::Stream(stream), &params, last_id).await
        }
    }
}

/// `GET /all`.
pub(crate) async fn read_all(
    State(app): State<App>,
    principal: Principal,
    RawQuery(raw_query): RawQuery,
    headers: HeaderMap,
) -> Result<Response> {
    let params = ReadParams::parse(raw_query.as_deref(), Target::All)?;
    principal.authorize(Action::ReadAll {
        stream_prefix: params.filter.stream_prefix.as_deref(),
        include_system: params.filter.include_system,
    })?;
    match representation(&headers) {
        Representation::Json => {
            let (from, direction, limit) = (params.read_from(), params.direction, params.limit);
            let filter = params.filter.clone();
            let page = app
                .blocking(move |store| {
                    let slice = store.read_all(from, direction, limit, &filter)?;
                    Ok(render_page(&slice))
                })
                .await?;
            app.metrics().add_events_read(page.1);
            Ok(json_response(page.0))
        }
        Representation::Ndjson => {
            replay::replay(app, replay::Source::All(params.filter.clone()), &params).await
        }
        Representation::EventStream => {
            let last_id = last_event_id(&headers)?;
            let source = subscribe::Source::All(params.filter.clone());
            subscribe::subscribe(app, source, &params, last_id).await
        }
    }
}

/// `GET /streams/{stream}/{revision}`: one event; 404 `not_found` if there is no such revision
/// (or it is hidden by the stream's metadata), `stream_not_found` / 410 for the stream.
pub(crate) async fn read_event(
    State(app): State<App>,
    principal: Principal,
    path: EventPath,
    RawQuery(raw_query): RawQuery,
) -> Result<Response> {
    let EventPath { stream, revision } = path;
    stream_name::check_readable(&stream)?;
    principal.authorize(Action::ReadStream(&stream))?;
    Query::parse(raw_query.as_deref(), &[])?;
    let revision = query::parse_digits(&revision).ok_or_else(|| {
        Error::invalid(format!(
            "revision must be a non-negative integer (plain digits), not {revision:?}"
        ))
    })?;
    let name = stream.clone();
    let event = app
        .blocking(move |store| store.read_event(&name, revision))
        .await?;
    let Some(event) = event else {
        return Err(Error::NotFound(format!(
            "stream {stream:?} has no event at revision {revision}"
        )));
    };
    let mut out = Vec::with_capacity(256 + event.data.len() + event.metadata.len());
    write_event(&mut out, &event, Layout::Document);
    app.metrics().add_events_read(1);
    Ok(json_response(out))
}

/// Renders a page `{"events": [...], "next": n|null, "end": bool}`; also returns the count.
pub(crate) fn render_page(slice: &ReadSlice) -> (Vec<u8>, usize) {
    let size: usize = slice
        .events
        .iter()
        .map(|e| 200 + e.stream.len() + e.data.len() + e.metadata.len())
        .sum();
    let mut out = Vec::with_capacity(size + 64);
    out.extend_from_slice(b"{\"events\":[");
    for (i, e) in slice.events.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_event(&mut out, e, Layout::Document);
    }
    out.extend_from_slice(b"],\"next\":");
    match slice.next {
        Some(n) => write_u64(&mut out, n),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(if slice.end {
        b",\"end\":true}"
    } else {
        b",\"end\":false}"
    });
    (out, slice.events.len())
}

/// A 200 response with a JSON body.
pub(crate) fn json_response(body: Vec<u8>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// Direction is forward for subscriptions; helper for their 400.
pub(crate) fn require_forward(direction: Direction) -> Result<()> {
    match direction {
        Direction::Forward => Ok(()),
        Direction::Backward => Err(Error::invalid(
            "subscriptions (text/event-stream) read forward only: drop direction=backward",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> Representation {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_str(v).unwrap());
        representation(&h)
    }

    #[test]
    fn negotiates_representations() {
        assert_eq!(representation(&HeaderMap::new()), Representation::Json);
        assert_eq!(accept("*/*"), Representation::Json);
        assert_eq!(accept("application/json"), Representation::Json);
        assert_eq!(accept("application/x-ndjson"), Representation::Ndjson);
        assert_eq!(accept("text/event-stream"), Representation::EventStream);
        assert_eq!(accept("text/html"), Representation::Json);
        assert_eq!(
            accept("application/json;q=0.5, text/event-stream"),
            Representation::EventStream
        );
        assert_eq!(
            accept("application/x-ndjson, application/json"),
            Representation::Ndjson
        );
        assert_eq!(accept("text/event-stream;q=0"), Representation::Json);
    }

    #[test]
    fn last_event_id_header() {
        let mut h = HeaderMap::new();
        assert_eq!(last_event_id(&h).unwrap(), None);
        h.insert("last-event-id", HeaderValue::from_static("41"));
        assert_eq!(last_event_id(&h).unwrap(), Some(41));
        h.insert("last-event-id", HeaderValue::from_static("x"));
        assert!(last_event_id(&h).is_err());
    }
}
