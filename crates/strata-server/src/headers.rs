//! Request headers the handlers read: `Accept` (which representation of a read answers),
//! `Last-Event-ID` (where a subscription resumes) and `Expected-Revision` (the optimistic
//! concurrency check of appends and deletes). Numbers in them are plain digits
//! ([`parse_digits`]), as in query strings.

use axum::http::{header, HeaderMap};
use strata_store::ExpectedRevision;

use crate::error::{Error, Result};
use crate::query::parse_digits;

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

/// The `Last-Event-ID` header, if present: the last id the client saw, in plain digits. An
/// empty header counts as absent; anything else that is not plain digits is a 400.
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
    parse_digits(text).map(Some).ok_or_else(|| {
        Error::invalid(format!(
            "Last-Event-ID must be an event's revision or position (plain digits), not {text:?}"
        ))
    })
}

/// The `Expected-Revision` header: `any` (default, when the header is absent), `no_stream`,
/// `stream_exists` or a revision in plain digits. A header that is present but empty, signed
/// (`+0`) or anything else is a 400: it never falls back to `any`.
pub(crate) fn expected_revision(headers: &HeaderMap) -> Result<ExpectedRevision> {
    let Some(v) = headers.get("expected-revision") else {
        return Ok(ExpectedRevision::Any);
    };
    let text = v
        .to_str()
        .map_err(|_| Error::invalid("Expected-Revision must be text"))?
        .trim();
    match text {
        "any" => Ok(ExpectedRevision::Any),
        "no_stream" => Ok(ExpectedRevision::NoStream),
        "stream_exists" => Ok(ExpectedRevision::StreamExists),
        _ => parse_digits(text)
            .map(ExpectedRevision::Exact)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "Expected-Revision must be any, no_stream, stream_exists or a revision \
                     (plain digits), not {text:?}"
                ))
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

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
