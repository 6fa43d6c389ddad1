//! The one error type of the crate.

use std::path::PathBuf;

/// What went wrong in a store operation.
///
/// Every variant is a final answer for that call: a failed append wrote nothing that will ever be
/// acknowledged or read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The optimistic concurrency check failed.
    #[error("wrong expected revision: expected {expected}, actual {actual}")]
    WrongExpectedRevision {
        /// The expectation as sent.
        expected: crate::ExpectedRevision,
        /// The stream's state when the append was checked.
        actual: crate::CurrentRevision,
    },
    /// Some (not all, or not as one contiguous run) of the append's event ids already exist in the stream.
    #[error("duplicate event id {id} in stream {stream}")]
    DuplicateEventId {
        /// The stream appended to.
        stream: String,
        /// One of the ids that already exists.
        id: uuid::Uuid,
    },
    /// The stream was deleted (soft-deleted streams answer this to reads until re-created).
    #[error("stream {stream} is deleted")]
    StreamDeleted {
        /// The stream.
        stream: String,
    },
    /// The stream was never written.
    #[error("stream {stream} not found")]
    StreamNotFound {
        /// The stream.
        stream: String,
    },
    /// The request is malformed; nothing was written.
    #[error("invalid {field}: {reason}")]
    InvalidInput {
        /// The offending field (e.g. `stream`, `events[3].type`).
        field: String,
        /// Why it was refused.
        reason: String,
    },
    /// The request is well-formed but over one of the configured [`crate::Limits`] (an event's
    /// data plus metadata over `max_event_size`, more than `max_events_per_append` events);
    /// nothing was written. Malformed input, a type or name too long included, is
    /// [`Error::InvalidInput`].
    #[error("{field} has {actual} {unit}, over the limit of {limit}")]
    LimitExceeded {
        /// The field over its limit (e.g. `events`, `events[3]`).
        field: String,
        /// What `actual` and `limit` count (e.g. `bytes of data and metadata`, `events`).
        unit: &'static str,
        /// The configured limit.
        limit: usize,
        /// The size or count sent.
        actual: usize,
    },
    /// The store refuses writes after a storage fault (failed write or fsync, corruption).
    #[error("store is read-only: {reason}")]
    ReadOnly {
        /// The fault that made the store read-only.
        reason: String,
    },
    /// The disk is full (`ENOSPC`, or `EDQUOT` for a quota): the append wrote nothing (its
    /// bytes were cut back, a half-made new segment or index file removed), and the store
    /// still accepts writes: a later append retries and succeeds once space is free. Not a
    /// fault: [`crate::Health::DiskFull`] only while the condition lasts.
    #[error("disk full: {} ({source}); nothing was written", path.display())]
    DiskFull {
        /// The file whose write or creation ran out of space.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Stored bytes fail their checksum or are inconsistent: the request needs bytes that are
    /// damaged. Never a skip: a read that reaches damage answers this, whatever it read before.
    #[error("corruption in {} at offset {offset}{}: {detail}", file.display(), position.map(|p| format!(" (position {p})")).unwrap_or_default())]
    Corruption {
        /// The damaged file.
        file: PathBuf,
        /// Byte offset of the damaged frame or structure.
        offset: u64,
        /// The log position of the event the damaged bytes held, where it is known.
        position: Option<u64>,
        /// What is wrong.
        detail: String,
    },
    /// The store has been closed.
    #[error("store is closed")]
    Closed,
    /// A scavenge is already running on this store (one at a time).
    #[error("a scavenge is already running")]
    ScavengeRunning,
    /// An operating-system I/O error.
    #[error("i/o error on {}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// Whether an I/O error means "no space left" (`ENOSPC`, or `EDQUOT`: a quota is full): a
/// condition that passes once space is freed, unlike a failing device (`EIO`).
pub(crate) fn is_out_of_space(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
        || e.kind() == std::io::ErrorKind::StorageFull
}

/// Result alias of the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Whether this is an [`Error::DiskFull`].
    pub fn is_disk_full(&self) -> bool {
        matches!(self, Error::DiskFull { .. })
    }

    /// Builds an [`Error::InvalidInput`].
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidInput {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// Builds an [`Error::Corruption`].
    pub fn corruption(file: impl Into<PathBuf>, offset: u64, detail: impl Into<String>) -> Self {
        Error::Corruption {
            file: file.into(),
            offset,
            position: None,
            detail: detail.into(),
        }
    }

    /// Names the log position a corruption error concerns (if it does not name one yet);
    /// other errors pass through unchanged.
    pub fn at_position(self, at: u64) -> Self {
        match self {
            Error::Corruption {
                file,
                offset,
                position: None,
                detail,
            } => Error::Corruption {
                file,
                offset,
                position: Some(at),
                detail,
            },
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_exceeded_names_the_field_and_both_numbers() {
        let e = Error::LimitExceeded {
            field: "events[3]".into(),
            unit: "bytes of data and metadata",
            limit: 4_194_304,
            actual: 5_000_000,
        };
        assert_eq!(
            e.to_string(),
            "events[3] has 5000000 bytes of data and metadata, over the limit of 4194304"
        );
    }
}
