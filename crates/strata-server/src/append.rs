//! `POST /streams/{stream}`: appending one event or a batch, atomically.
//!
//! The order of checks, each a final answer, as the handler runs them: the bearer token (401,
//! in the `Principal` extractor) and the path's percent-encoding (400); the stream name (400);
//! the token's rights on the stream (403); no query parameters (400); the `Expected-Revision`
//! header (400); the `Correlation-Id` / `Causation-Id` headers (400); the media type (415) and the body size (413, before the body is buffered);
//! then the body, element by element: JSON shape (400) and each event against the store's
//! limits (`Limits::check_count` / `check_event`: 413 over a size or count limit, 400 for a bad
//! field) in array order; with `Correlation-Id` / `Causation-Id`, each event's metadata
//! (absent or an object, else 400; see `flow_headers`); then the store: payload JSON (400), expected revision and idempotency
//! (409), deletion (410), a full disk or fault (503).
//! Success is `201 Created` (or `200 OK` for an idempotent retry) once the events are durable.

use std::time::Instant;

use axum::extract::State;
use axum::http::header::InvalidHeaderValue;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde::de::{Error as _, IgnoredAny, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer as _, Serialize};
use serde_json::value::RawValue;
use strata_store::{Limits, NewEvent};
use uuid::Uuid;

use crate::app::{run_blocking, App};
use crate::auth::{Action, Principal};
use crate::body::read_json_body;
use crate::config::HttpLimits;
use crate::error::{Error, Result};
use crate::flow_headers::{fill, flow_headers};
use crate::headers::expected_revision;
use crate::path::StreamPath;
use crate::query::Query;
use crate::response::json_status;
use crate::stream_name;

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
    Query::parse(raw_query.0.as_deref(), &[])?;
    let expected = expected_revision(headers)?;
    let flow = flow_headers(headers)?;
    let limits = *app.limits();
    let bytes = read_json_body(headers, body, limits.max_body_bytes).await?;
    let mut events = parse_body(bytes, limits).await?;
    if let Some(flow) = &flow {
        fill(&mut events, flow)?;
    }

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
    let mut response = json_status(status, body);
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

/// Bodies up to this size are parsed on the async worker that read them; larger ones on
/// tokio's blocking pool. serde_json turns event JSON into structs at a few hundred MB/s in an
/// optimised build, so a 64 KiB body costs roughly 0.1–0.3 ms inline: in the range of one
/// group-commit fsync, and cheaper than the two thread hand-offs of the blocking pool (tens of
/// µs, plus a wake-up) for the small appends that make up most traffic. A body at the 16 MiB
/// limit costs tens of ms, which must not hold a worker that also serves `/health`, SSE and
/// every other connection.
const INLINE_PARSE_BYTES: usize = 64 * 1024;

/// [`parse_events`] inline for a small body, on the blocking pool for a large one.
async fn parse_body(bytes: bytes::Bytes, limits: HttpLimits) -> Result<Vec<NewEvent>> {
    if bytes.len() <= INLINE_PARSE_BYTES {
        return parse_events(&bytes, &limits);
    }
    run_blocking("parsing the events failed", move || {
        parse_events(&bytes, &limits)
    })
    .await?
}

/// Parses the body, one event object or an array of them, into store events, checking the
/// limits as it goes: an array is read element by element, each event is converted (and its
/// size checked) as soon as it is parsed, and reading stops at the first element past
/// `max_events_per_append`. So a refused body never costs more than `max_events_per_append`
/// events in memory, whatever it holds.
fn parse_events(bytes: &[u8], limits: &HttpLimits) -> Result<Vec<NewEvent>> {
    // The store's own checks, so that the limits are checked by one function with one error
    // type (`LimitExceeded` → 413, `InvalidInput` → 400), here only earlier.
    let limits = limits.store_limits();
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace()).copied();
    let events = match first {
        Some(b'[') => parse_array(bytes, &limits)?,
        Some(b'{') => {
            let event: ClientEvent<'_> = serde_json::from_slice(bytes).map_err(json_error)?;
            limits.check_count(1)?;
            vec![to_new_event(0, event, &limits)?]
        }
        _ => {
            return Err(Error::invalid(
                "the body must be an event object or an array of event objects",
            ))
        }
    };
    if events.is_empty() {
        return Err(Error::invalid("an append needs at least one event"));
    }
    Ok(events)
}

/// A JSON array of events, streamed through [`EventsVisitor`].
fn parse_array(bytes: &[u8], limits: &Limits) -> Result<Vec<NewEvent>> {
    let mut refused = None;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = de.deserialize_seq(EventsVisitor {
        limits,
        refused: &mut refused,
    });
    // A limit or an event refused mid-array: that error, not serde's wrapper of it.
    if let Some(e) = refused {
        return Err(e);
    }
    let events = parsed.map_err(json_error)?;
    de.end().map_err(json_error)?;
    Ok(events)
}

/// Reads an array of events one element at a time, converting each as it comes. A refusal
/// (413 for a limit, 400 for a bad event) is put in `refused` and ends the parse at once
/// through a serde error.
struct EventsVisitor<'l> {
    limits: &'l Limits,
    refused: &'l mut Option<Error>,
}

impl<'de> Visitor<'de> for EventsVisitor<'_> {
    type Value = Vec<NewEvent>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an array of event objects")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<NewEvent>, A::Error> {
        let max = self.limits.max_events_per_append;
        let mut events = Vec::new();
        loop {
            if events.len() == max {
                // One more element of any kind is one too many: not even parsed as an event.
                if seq.next_element::<IgnoredAny>()?.is_some() {
                    let over = self.limits.check_count(max + 1).err();
                    *self.refused = Some(over.map_or_else(
                        || Error::Internal("the count check passed one too many".into()),
                        Error::from,
                    ));
                    return Err(A::Error::custom("too many events"));
                }
                return Ok(events);
            }
            let Some(event) = seq.next_element::<ClientEvent<'de>>()? else {
                return Ok(events);
            };
            match to_new_event(events.len(), event, self.limits) {
                Ok(event) => events.push(event),
                Err(e) => {
                    *self.refused = Some(e);
                    return Err(A::Error::custom("event refused"));
                }
            }
        }
    }
}

fn json_error(e: serde_json::Error) -> Error {
    Error::invalid(format!("malformed event JSON: {e}"))
}

/// Converts a client event and checks it against the store's per-event limits
/// ([`Limits::check_event`]), so a bad or oversized event ends the parse where it stands.
fn to_new_event(i: usize, e: ClientEvent<'_>, limits: &Limits) -> Result<NewEvent> {
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
    limits.check_event(i, &event)?;
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
    fn the_count_limit_ends_the_parse() {
        let limits = HttpLimits {
            max_body_bytes: usize::MAX,
            max_event_bytes: 100,
            max_events_per_append: 1000,
        };
        // max + 1 events, then no closing bracket and bytes that are not JSON: a parser that
        // reads the whole body answers 400 for those; the count check must answer first.
        let mut body = String::from("[");
        for _ in 0..=1000 {
            body.push_str(r#"{"type":"A"},"#);
        }
        body.push_str("this is not JSON");
        assert!(matches!(
            parse_events(body.as_bytes(), &limits),
            Err(Error::PayloadTooLarge(_))
        ));
        // The element past the limit is not parsed as an event: anything there is too many.
        let mut body = String::from("[");
        for _ in 0..1000 {
            body.push_str(r#"{"type":"A"},"#);
        }
        body.push_str("42]");
        assert!(matches!(
            parse_events(body.as_bytes(), &limits),
            Err(Error::PayloadTooLarge(_))
        ));
        // Exactly at the limit is fine.
        let body = format!("[{}]", [r#"{"type":"A"}"#; 1000].join(","));
        assert_eq!(parse_events(body.as_bytes(), &limits).unwrap().len(), 1000);
    }

    #[test]
    fn an_oversized_event_ends_the_parse() {
        let limits = HttpLimits {
            max_body_bytes: usize::MAX,
            max_event_bytes: 10,
            max_events_per_append: 1000,
        };
        // Refused at element 1, before the malformed rest is reached.
        let body = r#"[{"type":"A"},{"type":"A","data":"0123456789"},{"#;
        match parse_events(body.as_bytes(), &limits) {
            Err(Error::PayloadTooLarge(m)) => assert!(m.contains("events[1]"), "{m}"),
            other => panic!("expected 413, got {:?}", other.map(|v| v.len())),
        }
        // A bad event in the middle is a 400 naming it.
        let body = r#"[{"type":"A"},{"type":""},{"#;
        match parse_events(body.as_bytes(), &limits) {
            Err(Error::InvalidRequest(m)) => assert!(m.contains("events[1]"), "{m}"),
            other => panic!("expected 400, got {:?}", other.map(|v| v.len())),
        }
        // Trailing bytes after a complete array are still malformed.
        assert!(matches!(
            parse_events(br#"[{"type":"A"}] x"#, &limits),
            Err(Error::InvalidRequest(_))
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
