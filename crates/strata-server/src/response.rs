//! Responses the handlers build: JSON bodies with their status, and the headers of the
//! streamed representations (NDJSON replays, SSE subscriptions). Errors answer through
//! [`crate::error::Error`]'s own `IntoResponse`.

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, Result};

/// A response with `status` and `Content-Type: application/json`; `body` is JSON text.
pub(crate) fn json_status(status: StatusCode, body: Vec<u8>) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// A 200 response with a JSON body (`body` is JSON text).
pub(crate) fn json_response(body: Vec<u8>) -> Response {
    json_status(StatusCode::OK, body)
}

/// A response with `status` and `value` as its JSON body.
pub(crate) fn json_value(status: StatusCode, value: &Value) -> Response {
    json_status(status, value.to_string().into_bytes())
}

/// A 200 response with `value` serialized as its JSON body; a value that does not serialize
/// is a 500.
pub(crate) fn serialized<T: Serialize>(value: &T) -> Result<Response> {
    serde_json::to_vec(value)
        .map(json_response)
        .map_err(|e| Error::Internal(e.to_string()))
}

/// A 200 response streaming `body` as `content_type`, never cached.
pub(crate) fn streamed(body: Body, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
