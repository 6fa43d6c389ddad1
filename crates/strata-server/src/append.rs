//! `POST /streams/{stream}`: appending one event or a batch, atomically.
//!
//! The order of checks, each a final answer: auth (401/403), stream name (400), media type
//! (415), body size (413, before the body is buffered), JSON shape (400), event count and sizes
//! (413), then the store: expected revision and idempotency (409), deletion (410), faults (503).
//! Success is `201 Created` (or `200 OK` for an idempotent retry) once the events are durable.

use std::time::Instant;

use axum::extract::State;
use axum::http::header::InvalidHeaderValue;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use strata_store::{ExpectedRevision, NewEvent};
use uuid::Uuid;

use crate::app::App;
use crate::auth::{Action, Principal};
use crate::body::read_json_body;
use crate::error::{Error, Result};
use crate::read::StreamPath;
use crate::{query, stream_name};

/// An event as a client sends it: `{"id"?, "type", "data"?, "data_base64"?, "metadata"?}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientEvent<'a> {
    #[serde(default)]
    id: Option<Uuid>,
    #[serde(rename = "type")]
    event_type: String,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
    #[serde(default)]
    data_base64: Option<String>,
    #[serde(default, borrow)]
    metadata: Option<&'a RawValue>,
}

/// The body of a successful append (201, or 200 for an idempotent retry).
#[derive(Serialize)]
struct Appended<'a> {
    stream: &'a str,
    first_revision: u64,
    last_revision: u64,
    first_position: u64,
    last_position: u64,
}

/// `POST /streams/{stream}`.
pub(crate) async fn append(
    State(app): State<App>,
    principal: Principal,
    StreamPath(stream): StreamPath,
    raw_query: axum::extract::RawQuery,
    // The request itself rather than the `HeaderMap` extractor, which clones every header.
    request: axum::extract::Request,
) -> Result<Response> {
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    stream_name::check_writable(&stream)?;
    principal.authorize(Action::WriteStream(&stream))?;
    query::Query::parse(raw_query.0.as_deref(), &[])?;
    let expected = expected_revision(headers)?;
    let limits = *app.limits();
    let bytes = read_json_body(headers, body, limits.max_body_bytes).await?;
    let events = parse_events(&bytes, &limits)?;

    let started = Instant::now();
    let result = app
        .store()
        .append_async(&stream, expected, events)
        .await
        .map_err(|e| app.store_error(e))?;
    app.metrics().observe_append(started.elapsed());

    let status = if result.idempotent_replay {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    // Sized up front, so that serializing does not reallocate (this runs for every append).
    let mut body = Vec::with_capacity(160 + stream.len());
    serde_json::to_writer(
        &mut body,
        &Appended {
            stream: &stream,
            first_revision: result.first_revision,
            last_revision: result.last_revision,
            first_position: result.first_position,
            last_position: result.last_position,
        },
    )
    .map_err(|e| Error::Internal(e.to_string()))?;
    let mut response = (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response();
    if let Ok(v) = location(&stream, result.first_revision) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

/// The `Location` of an append: `/streams/{stream}/{first_revision}`, rendered once and handed
/// to the header without another copy.
fn location(stream: &str, first_revision: u64) -> Result<HeaderValue, InvalidHeaderValue> {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(32 + 3 * stream.len());
    let _ = write!(
        s,
        "/streams/{}/{first_revision}",
        percent_encoding::utf8_percent_encode(stream, SEGMENT)
    );
    HeaderValue::from_maybe_shared(bytes::Bytes::from(s))
}

/// The `Expected-Revision` header: `any` (default), `no_stream`, `stream_exists` or an integer.
pub(crate) fn expected_revision(headers: &HeaderMap) -> Result<ExpectedRevision> {
    match headers.get("expected-revision") {
        None => Ok(ExpectedRevision::Any),
        Some(v) => v
            .to_str()
            .map_err(|_| Error::invalid("Expected-Revision must be text"))?
            .trim()
            .parse()
            .map_err(|e: String| Error::invalid(format!("Expected-Revision: {e}"))),
    }
}

/// Parses the body, one event object or an array of them, into store events.
fn parse_events(bytes: &[u8], limits: &crate::config::HttpLimits) -> Result<Vec<NewEvent>> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace()).copied();
    let parsed: Vec<ClientEvent<'_>> = match first {
        Some(b'[') => serde_json::from_slice(bytes).map_err(json_error)?,
        Some(b'{') => vec![serde_json::from_slice(bytes).map_err(json_error)?],
        _ => {
            return Err(Error::invalid(
                "the body must be an event object or an array of event objects",
            ))
        }
    };
    if parsed.is_empty() {
        return Err(Error::invalid("an append needs at least one event"));
    }
    if parsed.len() > limits.max_events_per_append {
        return Err(Error::PayloadTooLarge(format!(
            "{} events in one append, over the limit of {}",
            parsed.len(),
            limits.max_events_per_append
        )));
    }
    parsed
        .into_iter()
        .enumerate()
        .map(|(i, e)| to_new_event(i, e, limits.max_event_bytes))
        .collect()
}

fn json_error(e: serde_json::Error) -> Error {
    Error::invalid(format!("malformed event JSON: {e}"))
}

fn to_new_event(i: usize, e: ClientEvent<'_>, max_event_bytes: usize) -> Result<NewEvent> {
    if e.event_type.is_empty() || e.event_type.len() > 255 {
        return Err(Error::invalid(format!(
            "events[{i}].type must be 1 to 255 bytes"
        )));
    }
    if e.event_type.chars().any(char::is_control) {
        return Err(Error::invalid(format!(
            "events[{i}].type must not contain control characters"
        )));
    }
    let mut event = match (e.data, e.data_base64) {
        (Some(_), Some(_)) => {
            return Err(Error::invalid(format!(
                "events[{i}] has both data and data_base64: send at most one"
            )))
        }
        (None, Some(b64)) => {
            let bytes = BASE64.decode(b64.as_bytes()).map_err(|err| {
                Error::invalid(format!(
                    "events[{i}].data_base64 is not valid base64: {err}"
                ))
            })?;
            NewEvent::binary(e.event_type, bytes)
        }
        (Some(raw), None) => NewEvent::json(e.event_type, raw.get().as_bytes()),
        (None, None) => NewEvent::json(e.event_type, Vec::new()),
    };
    if let Some(meta) = e.metadata {
        event.metadata = meta.get().as_bytes().to_vec();
    }
    event.id = e.id;
    let size = event.data.len() + event.metadata.len();
    if size > max_event_bytes {
        return Err(Error::PayloadTooLarge(format!(
            "events[{i}] has {size} bytes of data and metadata, over the limit of {max_event_bytes}"
        )));
    }
    Ok(event)
}

/// Everything but RFC 3986 unreserved characters and a few harmless sub-delimiters: what is
/// percent-encoded in a stream name used as one path segment (the `Location` header).
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'$')
    .remove(b':')
    .remove(b'@')
    .remove(b'!')
    .remove(b'*')
    .remove(b'+')
    .remove(b',')
    .remove(b';')
    .remove(b'=');

/// Percent-encodes a stream name for use as one path segment.
#[cfg(test)]
fn encode_path_segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, SEGMENT).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HttpLimits;
    use strata_store::ContentType;

    fn parse(body: &str) -> Result<Vec<NewEvent>> {
        parse_events(body.as_bytes(), &HttpLimits::default())
    }

    #[test]
    fn one_event_or_an_array() {
        let one = parse(r#" {"type":"A","data":{"x": 1.0}} "#).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].data, br#"{"x": 1.0}"#);
        assert_eq!(one[0].content_type, ContentType::Json);
        assert!(one[0].metadata.is_empty());
        let many = parse(r#"[{"type":"A"},{"type":"B","metadata":{"m":1},"id":"6f1c7a5e-0c1b-4d5e-9d7a-1b2c3d4e5f60"}]"#).unwrap();
        assert_eq!(many.len(), 2);
        assert!(many[0].data.is_empty());
        assert_eq!(many[1].metadata, br#"{"m":1}"#);
        assert!(many[1].id.is_some());
    }

    #[test]
    fn binary_events() {
        let e = parse(r#"{"type":"Blob","data_base64":"AJ+Slg=="}"#).unwrap();
        assert_eq!(e[0].data, [0, 159, 146, 150]);
        assert_eq!(e[0].content_type, ContentType::Binary);
    }

    #[test]
    fn bad_bodies_are_400() {
        for body in [
            "",
            "42",
            "[]",
            "{",
            r#"{"data":{}}"#,
            r#"{"type":""}"#,
            r#"{"type":"A","extra":1}"#,
            r#"{"type":"A","data":1,"data_base64":"AA=="}"#,
            r#"{"type":"A","data_base64":"!!"}"#,
            r#"{"type":"A","id":"not-a-uuid"}"#,
            r#"{"type":"A\nB"}"#,
            r#"[{"type":"A"}, 5]"#,
        ] {
            match parse(body) {
                Err(Error::InvalidRequest(_)) => {}
                other => panic!("{body:?}: expected 400, got {:?}", other.map(|v| v.len())),
            }
        }
    }

    #[test]
    fn limits_are_413() {
        let limits = HttpLimits {
            max_body_bytes: 1 << 20,
            max_event_bytes: 10,
            max_events_per_append: 2,
        };
        let too_many = r#"[{"type":"A"},{"type":"A"},{"type":"A"}]"#;
        assert!(matches!(
            parse_events(too_many.as_bytes(), &limits),
            Err(Error::PayloadTooLarge(_))
        ));
        let too_big = r#"{"type":"A","data":"0123456789"}"#;
        assert!(matches!(
            parse_events(too_big.as_bytes(), &limits),
            Err(Error::PayloadTooLarge(_))
        ));
    }

    #[test]
    fn location_segments_are_encoded() {
        assert_eq!(encode_path_segment("order-42"), "order-42");
        assert_eq!(encode_path_segment("a/b c?"), "a%2Fb%20c%3F");
        assert_eq!(encode_path_segment("é"), "%C3%A9");
        assert_eq!(location("a/b c", 7).unwrap(), "/streams/a%2Fb%20c/7");
    }
}
