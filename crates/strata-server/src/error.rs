//! The crate's one error type.
//!
//! Every request failure becomes a response with the shape of docs/http-api.md, "Errors":
//! `{"error": "<code>", "message": "<human text>"}` plus the extra fields some codes carry
//! (`expected`/`actual` for `wrong_expected_revision`). Start-up failures (bind, tokens file,
//! opening the store) use the same type so that the binary has one error to report.

use std::net::SocketAddr;
use std::path::PathBuf;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};
use strata_store::{CurrentRevision, ExpectedRevision};

/// Result alias of the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong: a request refused with an API error, or the server failing to start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// 400 `invalid_request`: malformed JSON, bad field, bad name, bad query parameter or header.
    #[error("{0}")]
    InvalidRequest(String),
    /// 400 `invalid_request`: a projection source the engine refused; extra fields `line` and
    /// `column` (1-based) when known.
    #[error("{message}")]
    InvalidScript {
        /// The engine's message.
        message: String,
        /// Line of a syntax error.
        line: Option<u32>,
        /// Column of a syntax error.
        column: Option<u32>,
    },
    /// 401 `unauthorized`: auth is on and the bearer token is missing or unknown.
    #[error("{0}")]
    Unauthorized(String),
    /// 403 `forbidden`: the token may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// 400 `invalid_request` for an ack or nack naming ack ids the group does not know (they
    /// do not parse, belong to another incarnation of the group, or name no delivered event);
    /// the body's `unknown_ack_ids` lists them, and nothing was acked.
    #[error("{message}")]
    UnknownAckIds {
        /// Human text.
        message: String,
        /// The unknown ids, as sent.
        ids: Vec<String>,
    },
    /// 404 `stream_not_found`: the stream was never written.
    #[error("stream {stream:?} not found")]
    StreamNotFound {
        /// The stream.
        stream: String,
    },
    /// 404 `not_found`: no such resource (unknown route, event revision, ...).
    #[error("{0}")]
    NotFound(String),
    /// 405 `method_not_allowed`: the path exists but not with this method.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 409 `wrong_expected_revision`: the optimistic concurrency check failed.
    #[error("wrong expected revision: expected {expected}, actual {actual}")]
    WrongExpectedRevision {
        /// The expectation as sent.
        expected: ExpectedRevision,
        /// The stream's state when the append was checked.
        actual: CurrentRevision,
    },
    /// 409 `duplicate_event_id`: some (not all, or not as one run) of the ids already exist.
    #[error("event id {id} already exists in stream {stream:?}, but not as this same append")]
    DuplicateEventId {
        /// The stream appended to.
        stream: String,
        /// One of the ids that already exists.
        id: uuid::Uuid,
    },
    /// 409 `conflict`: the resource exists with settings that cannot change (a consumer group's
    /// source, start or ordering).
    #[error("{0}")]
    Conflict(String),
    /// 410 `stream_deleted`: the stream was deleted.
    #[error("stream {stream:?} is deleted")]
    StreamDeleted {
        /// The stream.
        stream: String,
    },
    /// 413 `payload_too_large`: the body or one event is over the configured limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 415 `unsupported_media_type`: the body is not `application/json` where JSON is required.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 503 `unavailable`: the store refuses writes after a storage fault, or is shutting down.
    #[error("{0}")]
    Unavailable(String),
    /// 507 `insufficient_storage`: the disk is full; nothing was written, and appends succeed
    /// again by themselves once space is free.
    #[error("{0}")]
    InsufficientStorage(String),
    /// 500 `corrupt`: the request needs an event whose bytes on disk are damaged; extra fields
    /// `file`, `offset` and (where known) `position`. Stays a 500 whatever the store's health:
    /// a retry cannot help until the damage is repaired, and every other event stays readable.
    #[error("{message}")]
    Corrupt {
        /// The store's description of the damage.
        message: String,
        /// The damaged file.
        file: String,
        /// Byte offset of the damaged frame or structure in `file`.
        offset: u64,
        /// The log position of the damaged event, where it is known.
        position: Option<u64>,
    },
    /// 500 `internal`: an unexpected failure (an I/O error on a read).
    #[error("{0}")]
    Internal(String),
    /// Start-up: the listen address could not be resolved or bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address as configured.
        addr: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Start-up: refusing a non-loopback address while authentication is off or TLS is not
    /// configured (and `insecure` is not set).
    #[error(
        "refusing to listen on non-loopback address {addr} {}: give {}, or --insecure to accept \
         the risk",
        insecure_what(*auth, *tls),
        insecure_fix(*auth, *tls)
    )]
    InsecureListen {
        /// The resolved address.
        addr: SocketAddr,
        /// Whether authentication is on.
        auth: bool,
        /// Whether TLS is configured.
        tls: bool,
    },
    /// Start-up: the TLS certificate or key file could not be read or used.
    #[error("TLS file {}: {reason}", path.display())]
    Tls {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Start-up: the tokens file could not be read or parsed.
    #[error("tokens file {}: {reason}", path.display())]
    TokensFile {
        /// The file.
        path: PathBuf,
        /// What is wrong (with the line number).
        reason: String,
    },
    /// Start-up or shutdown: the store failed to open or to close cleanly.
    #[error("store: {0}")]
    Store(#[source] strata_store::Error),
    /// The server's accept loop failed.
    #[error("server i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// What an [`Error::InsecureListen`] lacks.
fn insecure_what(auth: bool, tls: bool) -> &'static str {
    match (auth, tls) {
        (false, false) => "with authentication off and without TLS",
        (false, true) => "with authentication off",
        _ => "without TLS",
    }
}

/// The flags that would make an [`Error::InsecureListen`] address acceptable.
fn insecure_fix(auth: bool, tls: bool) -> &'static str {
    match (auth, tls) {
        (false, false) => "--auth-token or --tokens-file, and --tls-cert with --tls-key",
        (false, true) => "--auth-token or --tokens-file",
        _ => "--tls-cert with --tls-key",
    }
}

impl Error {
    /// Builds an [`Error::InvalidRequest`].
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::InvalidRequest(message.into())
    }

    /// The HTTP status and the API error code of this error.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Error::InvalidRequest(_)
            | Error::UnknownAckIds { .. }
            | Error::InvalidScript { .. } => (StatusCode::BAD_REQUEST, "invalid_request"),
            Error::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Error::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Error::StreamNotFound { .. } => (StatusCode::NOT_FOUND, "stream_not_found"),
            Error::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Error::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Error::WrongExpectedRevision { .. } => {
                (StatusCode::CONFLICT, "wrong_expected_revision")
            }
            Error::DuplicateEventId { .. } => (StatusCode::CONFLICT, "duplicate_event_id"),
            Error::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Error::StreamDeleted { .. } => (StatusCode::GONE, "stream_deleted"),
            Error::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Error::UnsupportedMediaType(_) => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            Error::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Error::InsufficientStorage(_) => {
                (StatusCode::INSUFFICIENT_STORAGE, "insufficient_storage")
            }
            Error::Corrupt { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "corrupt"),
            Error::Internal(_)
            | Error::Bind { .. }
            | Error::InsecureListen { .. }
            | Error::TokensFile { .. }
            | Error::Tls { .. }
            | Error::Store(_)
            | Error::Io(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    /// The JSON body of the error response: `error`, `message` and the code's extra fields.
    pub fn body(&self) -> Value {
        let (_, code) = self.status_and_code();
        let mut body = Map::new();
        body.insert("error".into(), json!(code));
        body.insert("message".into(), json!(self.to_string()));
        match self {
            Error::WrongExpectedRevision { expected, actual } => {
                body.insert("expected".into(), expected_json(*expected));
                body.insert("actual".into(), actual_json(*actual));
            }
            Error::DuplicateEventId { stream, id } => {
                body.insert("stream".into(), json!(stream));
                body.insert("id".into(), json!(id.to_string()));
            }
            Error::StreamNotFound { stream } | Error::StreamDeleted { stream } => {
                body.insert("stream".into(), json!(stream));
            }
            Error::UnknownAckIds { ids, .. } => {
                body.insert("unknown_ack_ids".into(), json!(ids));
            }
            Error::Corrupt {
                file,
                offset,
                position,
                ..
            } => {
                body.insert("file".into(), json!(file));
                body.insert("offset".into(), json!(offset));
                if let Some(position) = position {
                    body.insert("position".into(), json!(position));
                }
            }
            Error::InvalidScript { line, column, .. } => {
                if let Some(line) = line {
                    body.insert("line".into(), json!(line));
                }
                if let Some(column) = column {
                    body.insert("column".into(), json!(column));
                }
            }
            _ => {}
        }
        Value::Object(body)
    }
}

/// `expected` as sent: an integer for a revision, the keyword otherwise.
fn expected_json(expected: ExpectedRevision) -> Value {
    match expected {
        ExpectedRevision::Exact(n) => json!(n),
        other => json!(other.to_string()),
    }
}

/// `actual`: the stream's last revision, or `"no_stream"`.
fn actual_json(actual: CurrentRevision) -> Value {
    match actual {
        CurrentRevision::Revision(n) => json!(n),
        CurrentRevision::NoStream => json!("no_stream"),
    }
}

impl Error {
    /// A store error as the API answers it, given the store's health when it happened: an
    /// internal failure (I/O) is 503 `unavailable` once a storage fault has turned the store
    /// read-only (a retry after a restart or repair can help), else what
    /// [`From<strata_store::Error>`] says. A full disk is no fault: it does not stop reads, so a
    /// failed read stays a 500 then. Damage is 500 `corrupt` in every state: it names the
    /// damaged bytes, and every other event stays readable.
    pub(crate) fn from_store(e: strata_store::Error, health: &strata_store::Health) -> Error {
        match Error::from(e) {
            Error::Internal(message) if matches!(health, strata_store::Health::ReadOnly(_)) => {
                Error::Unavailable(message)
            }
            other => other,
        }
    }
}

impl From<strata_store::Error> for Error {
    /// Maps a store error to its API error. Corruption is 500 `corrupt` (with the file, offset
    /// and position); I/O errors become 500 `internal` here, and callers that can see the store
    /// turn those into 503 once it is read-only (see `App::store_error`).
    fn from(e: strata_store::Error) -> Self {
        use strata_store::Error as S;
        match e {
            S::WrongExpectedRevision { expected, actual } => {
                Error::WrongExpectedRevision { expected, actual }
            }
            S::DuplicateEventId { stream, id } => Error::DuplicateEventId { stream, id },
            S::StreamDeleted { stream } => Error::StreamDeleted { stream },
            S::StreamNotFound { stream } => Error::StreamNotFound { stream },
            e @ S::InvalidInput { .. } => Error::InvalidRequest(e.to_string()),
            e @ S::LimitExceeded { .. } => Error::PayloadTooLarge(e.to_string()),
            e @ S::ReadOnly { .. } => Error::Unavailable(e.to_string()),
            e @ S::DiskFull { .. } => Error::InsufficientStorage(format!(
                "{e}; appends succeed again once space is freed"
            )),
            S::Closed => Error::Unavailable("the server is shutting down".into()),
            e @ S::ScavengeRunning => Error::Conflict(e.to_string()),
            e @ S::Corruption { .. } => {
                let message = e.to_string();
                match e {
                    S::Corruption {
                        file,
                        offset,
                        position,
                        ..
                    } => Error::Corrupt {
                        message,
                        file: file.display().to_string(),
                        offset,
                        position,
                    },
                    _ => Error::Internal(message),
                }
            }
            e @ S::Io { .. } => Error::Internal(e.to_string()),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, _) = self.status_and_code();
        if status.is_server_error() {
            tracing::warn!(error = %self, status = status.as_u16(), "request failed");
        }
        let body = self.body().to_string();
        let mut response = (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"strata\""),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_expected_revision_carries_expected_and_actual() {
        let e = Error::from(strata_store::Error::WrongExpectedRevision {
            expected: ExpectedRevision::Exact(3),
            actual: CurrentRevision::NoStream,
        });
        assert_eq!(
            e.status_and_code(),
            (StatusCode::CONFLICT, "wrong_expected_revision")
        );
        let body = e.body();
        assert_eq!(body["expected"], json!(3));
        assert_eq!(body["actual"], json!("no_stream"));
        let e = Error::WrongExpectedRevision {
            expected: ExpectedRevision::NoStream,
            actual: CurrentRevision::Revision(7),
        };
        assert_eq!(e.body()["expected"], json!("no_stream"));
        assert_eq!(e.body()["actual"], json!(7));
    }

    /// Only a storage fault (read-only) turns an internal store failure into 503; a full disk
    /// does not (reads go on, so a failed read is a 500), and its own error stays a 507.
    #[test]
    fn internal_failures_are_unavailable_only_when_the_store_is_read_only() {
        use strata_store::Health;
        let io = || strata_store::Error::Io {
            path: "seg".into(),
            source: std::io::Error::other("EIO"),
        };
        let read_only = Health::ReadOnly("fsync failed".into());
        let disk_full = Health::DiskFull("no space".into());
        let status = |e: Error| e.into_response().status().as_u16();
        assert_eq!(status(Error::from_store(io(), &read_only)), 503);
        assert_eq!(status(Error::from_store(io(), &disk_full)), 500);
        assert_eq!(status(Error::from_store(io(), &Health::Ok)), 500);
        let not_found = strata_store::Error::StreamNotFound { stream: "s".into() };
        assert_eq!(status(Error::from_store(not_found, &read_only)), 404);
    }

    /// Damage is 500 `corrupt` naming the file, offset and position, also while the store is
    /// read-only (writes then answer 503, reads of intact events go on).
    #[test]
    fn corruption_is_500_corrupt_with_file_offset_and_position() {
        use strata_store::Health;
        let e = || strata_store::Error::corruption("/d/0.seg", 77, "frame checksum mismatch");
        for health in [
            Health::Ok,
            Health::ReadOnly("damage in the open segment".into()),
            Health::Damaged("damage".into()),
        ] {
            let api = Error::from_store(e().at_position(12), &health);
            assert_eq!(
                api.status_and_code(),
                (StatusCode::INTERNAL_SERVER_ERROR, "corrupt")
            );
            let body = api.body();
            assert_eq!(body["file"], json!("/d/0.seg"));
            assert_eq!(body["offset"], json!(77));
            assert_eq!(body["position"], json!(12));
        }
        let body = Error::from(e()).body();
        assert!(body.get("position").is_none(), "{body}");
    }

    #[test]
    fn store_errors_map_to_api_codes() {
        let cases = [
            (
                strata_store::Error::StreamDeleted { stream: "s".into() },
                410,
                "stream_deleted",
            ),
            (
                strata_store::Error::StreamNotFound { stream: "s".into() },
                404,
                "stream_not_found",
            ),
            (
                strata_store::Error::invalid("stream", "bad"),
                400,
                "invalid_request",
            ),
            (
                strata_store::Error::LimitExceeded {
                    field: "events[3]".into(),
                    unit: "bytes of data and metadata",
                    limit: 4_194_304,
                    actual: 5_000_000,
                },
                413,
                "payload_too_large",
            ),
            (
                strata_store::Error::ReadOnly {
                    reason: "disk full".into(),
                },
                503,
                "unavailable",
            ),
            (strata_store::Error::Closed, 503, "unavailable"),
            (
                strata_store::Error::DiskFull {
                    path: "/x/0.seg".into(),
                    source: std::io::Error::from_raw_os_error(28),
                },
                507,
                "insufficient_storage",
            ),
            (
                strata_store::Error::corruption("/x", 5, "bad crc"),
                500,
                "corrupt",
            ),
        ];
        for (e, status, code) in cases {
            let (s, c) = Error::from(e).status_and_code();
            assert_eq!((s.as_u16(), c), (status, code));
        }
    }
}
