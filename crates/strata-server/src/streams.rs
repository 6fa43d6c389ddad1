//! Streams as a collection: `GET /streams` (listing), `DELETE /streams/{stream}` (soft and hard
//! deletes), `GET`/`PUT /streams/{stream}/metadata`.

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use strata_store::{Deletion, StreamMetadata};

use crate::app::App;
use crate::auth::{Action, Principal};
use crate::body::read_json_body;
use crate::error::{Error, Result};
use crate::headers::expected_revision;
use crate::path::StreamPath;
use crate::query::{Query, DEFAULT_LIMIT, MAX_LIMIT};
use crate::response::serialized;
use crate::stream_name;

#[derive(Serialize)]
struct StreamList {
    streams: Vec<ListedStream>,
    next: Option<String>,
}

#[derive(Serialize)]
struct ListedStream {
    name: String,
    last_revision: u64,
    last_position: u64,
}

/// `GET /streams?prefix=&after=&limit=`: live streams by name, paged; `$`-streams and deleted
/// streams are not listed. `next` is the `after` of the next page (`null` on the last).
pub(crate) async fn list(
    State(app): State<App>,
    principal: Principal,
    RawQuery(raw_query): RawQuery,
) -> Result<Response> {
    let q = Query::parse(raw_query.as_deref(), &["prefix", "after", "limit"])?;
    let prefix = q.get("prefix").unwrap_or("").to_owned();
    let after = q.get("after").filter(|a| !a.is_empty()).map(str::to_owned);
    let limit = q.limit("limit", DEFAULT_LIMIT, MAX_LIMIT)?;
    principal.authorize(Action::ListStreams(&prefix))?;
    let (streams, next) = app
        .blocking(move |store| store.list_streams(&prefix, after.as_deref(), limit))
        .await?;
    let body = StreamList {
        streams: streams
            .into_iter()
            .map(|s| ListedStream {
                name: s.name,
                last_revision: s.last_revision,
                last_position: s.last_position,
            })
            .collect(),
        next,
    };
    serialized(&body)
}

/// `DELETE /streams/{stream}[?hard=true]`, honouring `Expected-Revision`: 204 No Content.
/// Soft: reads answer 410 until the stream is appended to again (revisions continue). Hard: a
/// tombstone, the name can never be written again.
pub(crate) async fn delete(
    State(app): State<App>,
    principal: Principal,
    StreamPath(stream): StreamPath,
    RawQuery(raw_query): RawQuery,
    headers: HeaderMap,
) -> Result<Response> {
    stream_name::check_writable(&stream)?;
    let q = Query::parse(raw_query.as_deref(), &["hard"])?;
    let hard = q.flag("hard")?;
    principal.authorize(if hard {
        Action::HardDelete(&stream)
    } else {
        Action::WriteStream(&stream)
    })?;
    let expected = expected_revision(&headers)?;
    app.blocking(move |store| store.delete_stream(&stream, expected, hard))
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /streams/{stream}/metadata`: the metadata as set (`{}` when never set, also for a
/// stream not written yet: metadata may be set before the first append). 410 when tombstoned.
pub(crate) async fn get_metadata(
    State(app): State<App>,
    principal: Principal,
    StreamPath(stream): StreamPath,
    RawQuery(raw_query): RawQuery,
) -> Result<Response> {
    stream_name::check_readable(&stream)?;
    principal.authorize(Action::ReadStream(&stream))?;
    Query::parse(raw_query.as_deref(), &[])?;
    let name = stream.clone();
    let head = app.blocking(move |store| store.head(&name)).await?;
    if head.deletion == Some(Deletion::Hard) {
        return Err(Error::StreamDeleted { stream });
    }
    serialized(&head.metadata)
}

/// `PUT /streams/{stream}/metadata` with `{"max_count"?, "max_age_seconds"?,
/// "truncate_before"?, "custom"?}`: replaces the metadata; answers 200 with it.
pub(crate) async fn put_metadata(
    State(app): State<App>,
    principal: Principal,
    StreamPath(stream): StreamPath,
    RawQuery(raw_query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    stream_name::check_writable(&stream)?;
    principal.authorize(Action::WriteStream(&stream))?;
    Query::parse(raw_query.as_deref(), &[])?;
    let bytes = read_json_body(&headers, body, app.limits().max_body_bytes).await?;
    // Metadata is stored as one record: it obeys the event size limit.
    let max_event = app.limits().max_event_bytes;
    if bytes.len() > max_event {
        return Err(Error::PayloadTooLarge(format!(
            "stream metadata of {} bytes is over the event size limit of {max_event}",
            bytes.len()
        )));
    }
    // An object only: serde's derived deserializer would also read an array positionally.
    let value: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| Error::invalid(format!("malformed stream metadata: {e}")))?;
    if !value.is_object() {
        return Err(Error::invalid("stream metadata must be a JSON object"));
    }
    let metadata: StreamMetadata = serde_json::from_value(value)
        .map_err(|e| Error::invalid(format!("malformed stream metadata: {e}")))?;
    let stored = metadata.clone();
    app.blocking(move |store| store.set_metadata(&stream, metadata))
        .await?;
    serialized(&stored)
}
