//! Errors as the KurrentDB clients expect them: a gRPC status code, a message, and the
//! `exception` metadata (sent as trailers, or as headers of a trailers-only answer) that the
//! official clients match on, with its companion keys (`stream-name`, `expected-version`,
//! `actual-version`, `maximum-append-size`).
//!
//! | Strata error | code | `exception` |
//! |---|---|---|
//! | wrong expected revision | `FAILED_PRECONDITION` | `wrong-expected-version` |
//! | stream deleted | `FAILED_PRECONDITION` | `stream-deleted` |
//! | stream not found | `NOT_FOUND` | `stream-not-found` |
//! | over a size or count limit | `INVALID_ARGUMENT` | `maximum-append-size-exceeded` |
//! | forbidden | `PERMISSION_DENIED` | `access-denied` |
//! | no or unknown credentials | `UNAUTHENTICATED` | `not-authenticated` |
//! | duplicate event id (not one run) | `FAILED_PRECONDITION` | — |
//! | invalid input | `INVALID_ARGUMENT` | — |
//! | read-only, shutting down, disk full | `UNAVAILABLE` | — |
//! | damaged bytes | `DATA_LOSS` | — |
//! | anything else | `INTERNAL` | — |

use strata_store::{CurrentRevision, ExpectedRevision};
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Status};

use crate::app::App;
use crate::error::Error;

/// The metadata key of the exception name.
pub(crate) const EXCEPTION: &str = "exception";

/// `exception` value: the optimistic concurrency check failed.
pub(crate) const WRONG_EXPECTED_VERSION: &str = "wrong-expected-version";
/// `exception` value: the stream is deleted (soft-deleted or tombstoned).
pub(crate) const STREAM_DELETED: &str = "stream-deleted";
/// `exception` value: the stream does not exist.
pub(crate) const STREAM_NOT_FOUND: &str = "stream-not-found";
/// `exception` value: an append over the size limits.
pub(crate) const MAXIMUM_APPEND_SIZE_EXCEEDED: &str = "maximum-append-size-exceeded";
/// `exception` value: the credentials may not do this.
pub(crate) const ACCESS_DENIED: &str = "access-denied";
/// `exception` value: no credentials, or unknown ones.
pub(crate) const NOT_AUTHENTICATED: &str = "not-authenticated";

/// A status with `code`, `message` and metadata `pairs` (values that cannot be header values,
/// with control characters, are left out rather than failing the answer).
pub(crate) fn with_metadata(
    code: Code,
    message: impl Into<String>,
    pairs: &[(&str, &str)],
) -> Status {
    let mut metadata = MetadataMap::new();
    for (key, value) in pairs {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::AsciiMetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(*value),
        ) {
            metadata.insert(key, value);
        }
    }
    Status::with_metadata(code, message, metadata)
}

/// `FAILED_PRECONDITION` `wrong-expected-version` for `stream`.
pub(crate) fn wrong_expected_version(
    stream: &str,
    expected: ExpectedRevision,
    actual: CurrentRevision,
) -> Status {
    // The clients parse the versions as numbers: -1 no stream, -2 any, -4 stream exists.
    let expected_number = match expected {
        ExpectedRevision::Any => "-2".to_owned(),
        ExpectedRevision::NoStream => "-1".to_owned(),
        ExpectedRevision::StreamExists => "-4".to_owned(),
        ExpectedRevision::Exact(n) => n.to_string(),
    };
    let actual_number = match actual {
        CurrentRevision::NoStream => "-1".to_owned(),
        CurrentRevision::Revision(n) => n.to_string(),
    };
    with_metadata(
        Code::FailedPrecondition,
        format!(
            "Append failed due to WrongExpectedVersion. Stream: {stream}, Expected version: \
             {expected_number}, Actual version: {actual_number}"
        ),
        &[
            (EXCEPTION, WRONG_EXPECTED_VERSION),
            ("stream-name", stream),
            ("expected-version", &expected_number),
            ("actual-version", &actual_number),
        ],
    )
}

/// `FAILED_PRECONDITION` `stream-deleted`.
pub(crate) fn stream_deleted(stream: &str) -> Status {
    with_metadata(
        Code::FailedPrecondition,
        format!("Event stream '{stream}' is deleted."),
        &[(EXCEPTION, STREAM_DELETED), ("stream-name", stream)],
    )
}

/// `NOT_FOUND` `stream-not-found`.
pub(crate) fn stream_not_found(stream: &str) -> Status {
    with_metadata(
        Code::NotFound,
        format!("Event stream '{stream}' is not found."),
        &[(EXCEPTION, STREAM_NOT_FOUND), ("stream-name", stream)],
    )
}

/// `INVALID_ARGUMENT` `maximum-append-size-exceeded` (`limit` in bytes).
pub(crate) fn maximum_append_size_exceeded(limit: usize, detail: &str) -> Status {
    with_metadata(
        Code::InvalidArgument,
        format!("Maximum Append Size of {limit} Exceeded. ({detail})"),
        &[
            (EXCEPTION, MAXIMUM_APPEND_SIZE_EXCEEDED),
            ("maximum-append-size", &limit.to_string()),
        ],
    )
}

/// A server error as a status, for `stream` where the error concerns one (it names the stream
/// in the metadata of `wrong-expected-version`).
pub(crate) fn from_error(e: Error, stream: Option<&str>, max_append_bytes: usize) -> Status {
    match e {
        Error::WrongExpectedRevision { expected, actual } => {
            wrong_expected_version(stream.unwrap_or(""), expected, actual)
        }
        Error::StreamDeleted { stream } => stream_deleted(&stream),
        Error::StreamNotFound { stream } => stream_not_found(&stream),
        Error::PayloadTooLarge(message) => maximum_append_size_exceeded(max_append_bytes, &message),
        Error::Forbidden(message) => with_metadata(
            Code::PermissionDenied,
            format!("Access Denied: {message}"),
            &[(EXCEPTION, ACCESS_DENIED)],
        ),
        Error::Unauthorized(message) => with_metadata(
            Code::Unauthenticated,
            message,
            &[(EXCEPTION, NOT_AUTHENTICATED)],
        ),
        e @ Error::DuplicateEventId { .. } => Status::failed_precondition(e.to_string()),
        e @ Error::Conflict(_) => Status::already_exists(e.to_string()),
        e @ Error::NotFound(_) => Status::not_found(e.to_string()),
        e @ Error::MethodNotAllowed(_) => Status::unimplemented(e.to_string()),
        e @ (Error::InvalidRequest(_)
        | Error::InvalidScript { .. }
        | Error::UnknownAckIds { .. }
        | Error::UnsupportedMediaType(_)) => Status::invalid_argument(e.to_string()),
        e @ (Error::Unavailable(_) | Error::InsufficientStorage(_)) => {
            Status::unavailable(e.to_string())
        }
        e @ Error::Corrupt { .. } => Status::data_loss(e.to_string()),
        e => Status::internal(e.to_string()),
    }
}

/// A store error as a status (through the server's own mapping, which knows the store's
/// health), for `stream` where the error concerns one.
pub(crate) fn from_store(app: &App, e: strata_store::Error, stream: Option<&str>) -> Status {
    from_error(app.store_error(e), stream, app.limits().max_body_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_expected_version_carries_both_versions() {
        let s = wrong_expected_version(
            "order-1",
            ExpectedRevision::Exact(3),
            CurrentRevision::Revision(5),
        );
        assert_eq!(s.code(), Code::FailedPrecondition);
        let m = s.metadata();
        assert_eq!(m.get(EXCEPTION).unwrap(), WRONG_EXPECTED_VERSION);
        assert_eq!(m.get("expected-version").unwrap(), "3");
        assert_eq!(m.get("actual-version").unwrap(), "5");
        assert_eq!(m.get("stream-name").unwrap(), "order-1");
    }

    #[test]
    fn values_that_cannot_be_header_values_are_left_out() {
        let s = stream_deleted("a\nb");
        assert_eq!(s.metadata().get(EXCEPTION).unwrap(), STREAM_DELETED);
        assert!(s.metadata().get("stream-name").is_none());
    }
}
