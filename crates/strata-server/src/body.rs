//! Request and response bodies: reading a request body within its size limit (JSON bodies
//! checked for their media type too), and the streamed response body that NDJSON replays and
//! SSE subscriptions are fed through, with the [`PageSizer`] that sizes their reads.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::{header, HeaderMap};
use bytes::Bytes;
use http_body::Frame;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::query::parse_digits;

/// Reads a request body that must be JSON: 415 unless `Content-Type` is `application/json`
/// in UTF-8 (a `charset` parameter, if any, must be `utf-8`), 413 when `Content-Length`
/// announces more than `max` bytes (before reading anything) or when more than `max` bytes
/// arrive.
pub(crate) async fn read_json_body(headers: &HeaderMap, body: Body, max: usize) -> Result<Bytes> {
    require_json(headers)?;
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_digits(v.trim()))
    {
        if len > max as u64 {
            return Err(too_large(max));
        }
    }
    read_limited(body, max, || too_large(max)).await
}

/// Reads a whole request body of at most `max` bytes: `too_large` when more arrive (reading
/// stops there), 400 when the body cannot be read.
pub(crate) async fn read_limited(
    body: Body,
    max: usize,
    too_large: impl FnOnce() -> Error,
) -> Result<Bytes> {
    match Limited::new(body, max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Err(e) => Err(Error::invalid(format!(
            "could not read the request body: {e}"
        ))),
    }
}

fn too_large(max: usize) -> Error {
    Error::PayloadTooLarge(format!("the request body is over the limit of {max} bytes"))
}

/// 415 unless the request's `Content-Type` is `application/json` (any case) whose `charset`
/// parameters, if any, all say `utf-8` (any case, quoted or not): the body is read as UTF-8,
/// so a body declared in another charset is refused rather than misread. Other parameters are
/// ignored.
fn require_json(headers: &HeaderMap) -> Result<()> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Err(Error::UnsupportedMediaType(
            "the body must be JSON: send Content-Type: application/json".into(),
        ));
    };
    let text = value.to_str().unwrap_or("");
    let mut parts = text.split(';');
    let essence = parts.next().map(str::trim).unwrap_or("");
    if !essence.eq_ignore_ascii_case("application/json") {
        return Err(Error::UnsupportedMediaType(format!(
            "the body must be application/json, not {:?}",
            value.to_str().unwrap_or("(not text)")
        )));
    }
    for parameter in parts {
        let (name, charset) = parameter.split_once('=').unwrap_or((parameter, ""));
        if !name.trim().eq_ignore_ascii_case("charset") {
            continue;
        }
        let charset = charset.trim();
        let unquoted = charset
            .strip_prefix('"')
            .and_then(|c| c.strip_suffix('"'))
            .unwrap_or(charset);
        if !unquoted.eq_ignore_ascii_case("utf-8") {
            return Err(Error::UnsupportedMediaType(format!(
                "JSON bodies must be UTF-8: charset {charset:?} is not supported"
            )));
        }
    }
    Ok(())
}

/// A response body that yields `first` and then whatever arrives on a bounded channel, ending
/// when every sender is gone. The producer waits while the channel is full, so a slow client
/// costs at most the channel's capacity in buffered chunks.
pub(crate) struct ChannelBody {
    first: Option<Bytes>,
    rx: mpsc::Receiver<Bytes>,
}

impl ChannelBody {
    /// A body starting with `first` (if not empty), then the chunks from `rx`.
    pub(crate) fn body(first: Bytes, rx: mpsc::Receiver<Bytes>) -> Body {
        Body::new(ChannelBody {
            first: (!first.is_empty()).then_some(first),
            rx,
        })
    }
}

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, Infallible>>> {
        if let Some(first) = self.first.take() {
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        self.rx
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
    }
}

/// Chooses how many events to read at once so that a rendered page (or chunk) of a streamed
/// body is about `target` bytes.
pub(crate) struct PageSizer {
    target: usize,
    min: usize,
    max: usize,
    limit: usize,
}

impl PageSizer {
    /// Pages of about `target` bytes, between `min` and `max` events, starting at 16 events
    /// (small, so that a first page of huge events stays bounded too).
    pub(crate) fn new(target: usize, min: usize, max: usize) -> Self {
        PageSizer {
            target,
            min,
            max,
            limit: 16.clamp(min, max),
        }
    }

    /// Events to read next.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Adapts to the bytes the last `events` events rendered to.
    pub(crate) fn observe(&mut self, bytes: usize, events: usize) {
        if events == 0 {
            return;
        }
        let per_event = (bytes / events).max(1);
        self.limit = (self.target / per_event).clamp(self.min, self.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn content_type_checks() {
        let mut h = HeaderMap::new();
        assert!(matches!(
            require_json(&h),
            Err(Error::UnsupportedMediaType(_))
        ));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        assert!(require_json(&h).is_err());
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("Application/JSON; charset=utf-8"),
        );
        assert!(require_json(&h).is_ok());
        for ok in [
            "application/json;charset=\"UTF-8\"",
            "application/json; v=1",
        ] {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ok));
            assert!(require_json(&h).is_ok(), "{ok}");
        }
        for bad in [
            "application/json; charset=latin1",
            "application/json; charset=",
            "application/json; charset=\"utf-8",
            "application/json; charset=utf-8; charset=utf-16",
        ] {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(bad));
            assert!(
                matches!(require_json(&h), Err(Error::UnsupportedMediaType(_))),
                "{bad}"
            );
        }
    }

    #[tokio::test]
    async fn bodies_over_the_limit_are_413() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let ok = read_json_body(&h, Body::from("12345"), 5).await;
        assert_eq!(ok.unwrap(), Bytes::from_static(b"12345"));
        let big = read_json_body(&h, Body::from("123456"), 5).await;
        assert!(matches!(big, Err(Error::PayloadTooLarge(_))));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("1000"));
        let announced = read_json_body(&h, Body::from("1"), 5).await;
        assert!(matches!(announced, Err(Error::PayloadTooLarge(_))));
    }

    #[test]
    fn page_sizer_adapts() {
        let mut s = PageSizer::new(1 << 20, 1, 8192);
        assert_eq!(s.limit(), 16);
        s.observe(64 * 200, 64);
        assert_eq!(s.limit(), 5242);
        s.observe(4 << 20, 1);
        assert_eq!(s.limit(), 1);
        s.observe(10, 100);
        assert_eq!(s.limit(), 8192);
    }
}
