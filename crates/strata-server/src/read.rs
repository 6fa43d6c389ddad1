//! Reading: `GET /streams/{stream}`, `GET /all` and `GET /streams/{stream}/{revision}`.
//!
//! One resource, three representations chosen by `Accept` (docs/http-api.md): a JSON page (here), an
//! NDJSON replay ([`crate::replay`]) and an SSE catch-up subscription ([`crate::subscribe`]).
//!
//! Handlers import only helper modules, never each other (see the crate's module table); this
//! module is the one exception: it dispatches a read to [`replay::replay`] or
//! [`subscribe::subscribe`] for the NDJSON and SSE representations, because the three are one
//! resource. Everything the three share (the query parameters, `Accept` negotiation,
//! `Last-Event-ID`) lives in the helpers [`crate::query`] and [`crate::headers`].

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use strata_store::ReadSlice;

use crate::app::App;
use crate::auth::{Action, Principal};
use crate::error::{Error, Result};
use crate::event_json::{write_event, write_u64, Layout};
use crate::headers::{last_event_id, representation, Representation};
use crate::path::{EventPath, StreamPath};
use crate::query::{parse_digits, Query, ReadParams, Source, Target};
use crate::read_placement::INLINE_MAX_EVENTS;
use crate::response::json_response;
use crate::until_damage::read_until_damage;
use crate::{replay, stream_name, subscribe};

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
    answer(app, Source::Stream(stream), &params, &headers).await
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
    let source = Source::All(params.filter.clone());
    answer(app, source, &params, &headers).await
}

/// Answers a read of `source` in the representation `Accept` asks for: a JSON page here, or
/// the NDJSON replay, or the SSE subscription (which alone reads `Last-Event-ID`).
async fn answer(
    app: App,
    source: Source,
    params: &ReadParams,
    headers: &HeaderMap,
) -> Result<Response> {
    match representation(headers) {
        Representation::Json => {
            let (from, direction, limit) = (params.read_from(), params.direction, params.limit);
            // A stream page or an unfiltered `/all` page is a bounded lookup: inline (see
            // `read_placement`); a filtered `/all` page may scan far for its matches.
            let small = limit <= INLINE_MAX_EVENTS
                && match &source {
                    Source::Stream(_) => true,
                    Source::All(filter) => {
                        filter.types.is_empty()
                            && filter.category.is_none()
                            && filter.stream_prefix.is_none()
                            && filter.correlation_id.is_none()
                    }
                };
            let page = app
                .read(small, move |store| {
                    // A page that reaches a damaged event ends before it; the page that
                    // starts at it answers 500 `corrupt`.
                    let slice = read_until_damage(from, limit, |from, limit| match &source {
                        Source::Stream(stream) => store.read_stream(stream, from, direction, limit),
                        Source::All(filter) => store.read_all(from, direction, limit, filter),
                    })?;
                    Ok(render_page(&slice))
                })
                .await?;
            app.metrics().add_events_read(page.1);
            Ok(json_response(page.0))
        }
        Representation::Ndjson => replay::replay(app, source, params).await,
        Representation::EventStream => {
            let last_id = last_event_id(headers)?;
            subscribe::subscribe(app, source, params, last_id).await
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
    let revision = parse_digits(&revision).ok_or_else(|| {
        Error::invalid(format!(
            "revision must be a non-negative integer (plain digits), not {revision:?}"
        ))
    })?;
    let name = stream.clone();
    let event = app
        .read(true, move |store| store.read_event(&name, revision))
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
fn render_page(slice: &ReadSlice) -> (Vec<u8>, usize) {
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
