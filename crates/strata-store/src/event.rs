//! Events as appended and as read back, and the small value types around them.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// How an event's `data` bytes are to be interpreted. Stored in each record; never guessed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ContentType {
    /// `data` is UTF-8 JSON text (returned as JSON by the server), checked at append.
    Json,
    /// `data` is opaque bytes (returned base64-encoded by the server).
    Binary,
}

/// An event to append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewEvent {
    /// Client-chosen id that makes retries idempotent; a random v4 UUID is generated when `None`.
    pub id: Option<Uuid>,
    /// Event type, 1..=`Limits::max_event_type_len` bytes, no control characters.
    pub event_type: String,
    /// Payload bytes, interpreted per `content_type`.
    pub data: Vec<u8>,
    /// Metadata bytes: JSON text (checked at append like JSON `data`, whatever the content
    /// type); empty means "no metadata".
    pub metadata: Vec<u8>,
    /// How `data` is encoded.
    pub content_type: ContentType,
}

impl NewEvent {
    /// A JSON event. `data` must be JSON text nested at most `Limits::max_json_depth` deep
    /// without lone surrogate escapes, or empty (`null`); [`crate::Store::append`] checks it
    /// (one linear scan, see [`crate::json_check`]) and stores the bytes as they are.
    pub fn json(event_type: impl Into<String>, data: impl Into<Vec<u8>>) -> Self {
        NewEvent {
            id: None,
            event_type: event_type.into(),
            data: data.into(),
            metadata: Vec::new(),
            content_type: ContentType::Json,
        }
    }

    /// A binary event.
    pub fn binary(event_type: impl Into<String>, data: impl Into<Vec<u8>>) -> Self {
        NewEvent {
            content_type: ContentType::Binary,
            ..NewEvent::json(event_type, data)
        }
    }

    /// Sets the event id (for idempotent retries).
    pub fn with_id(mut self, id: Uuid) -> Self {
        self.id = Some(id);
        self
    }

    /// Sets the metadata bytes.
    pub fn with_metadata(mut self, metadata: impl Into<Vec<u8>>) -> Self {
        self.metadata = metadata.into();
        self
    }
}

/// An event as stored: immutable once acknowledged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedEvent {
    /// The event id (unique within its stream).
    pub id: Uuid,
    /// The stream it belongs to.
    pub stream: String,
    /// 0-based index in its stream; dense.
    pub revision: u64,
    /// 0-based index in the whole log; dense, strictly increasing in append order.
    pub position: u64,
    /// Event type.
    pub event_type: String,
    /// Commit time, microseconds since the Unix epoch (UTC), the same for all events of one append.
    pub timestamp_micros: i64,
    /// How `data` is encoded.
    pub content_type: ContentType,
    /// Payload bytes.
    pub data: Vec<u8>,
    /// Metadata bytes; empty when absent.
    pub metadata: Vec<u8>,
}

impl RecordedEvent {
    /// The commit time as a [`SystemTime`].
    pub fn timestamp(&self) -> SystemTime {
        micros_to_system_time(self.timestamp_micros)
    }
}

pub(crate) fn micros_to_system_time(micros: i64) -> SystemTime {
    if micros >= 0 {
        UNIX_EPOCH + Duration::from_micros(micros as u64)
    } else {
        UNIX_EPOCH - Duration::from_micros(micros.unsigned_abs())
    }
}

pub(crate) fn now_micros() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_micros()).unwrap_or(i64::MAX),
    }
}

/// The optimistic-concurrency condition of an append or delete.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExpectedRevision {
    /// No check.
    Any,
    /// The stream must not exist (never written, or soft-deleted).
    NoStream,
    /// The stream must exist.
    StreamExists,
    /// The stream's last revision must be exactly this.
    Exact(u64),
}

impl fmt::Display for ExpectedRevision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedRevision::Any => f.write_str("any"),
            ExpectedRevision::NoStream => f.write_str("no_stream"),
            ExpectedRevision::StreamExists => f.write_str("stream_exists"),
            ExpectedRevision::Exact(n) => write!(f, "{n}"),
        }
    }
}

impl std::str::FromStr for ExpectedRevision {
    type Err = String;

    /// Parses the `Expected-Revision` header forms of the HTTP API.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "any" => Ok(ExpectedRevision::Any),
            "no_stream" => Ok(ExpectedRevision::NoStream),
            "stream_exists" => Ok(ExpectedRevision::StreamExists),
            _ => s.parse::<u64>().map(ExpectedRevision::Exact).map_err(|_| {
                format!(
                    "invalid expected revision {s:?}: expected any, no_stream, stream_exists or an integer"
                )
            }),
        }
    }
}

/// A stream's state as seen by the concurrency check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CurrentRevision {
    /// Never written, or soft-deleted.
    NoStream,
    /// The last revision.
    Revision(u64),
}

impl fmt::Display for CurrentRevision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CurrentRevision::NoStream => f.write_str("no_stream"),
            CurrentRevision::Revision(n) => write!(f, "{n}"),
        }
    }
}

/// The outcome of an append.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendResult {
    /// Revision of the first appended event.
    pub first_revision: u64,
    /// Revision of the last appended event.
    pub last_revision: u64,
    /// Log position of the first appended event.
    pub first_position: u64,
    /// Log position of the last appended event.
    pub last_position: u64,
    /// `true` when every event id already existed as this run: nothing was written and this is
    /// the original append's result (HTTP 200 instead of 201).
    pub idempotent_replay: bool,
}

/// Read direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Ascending revisions/positions.
    Forward,
    /// Descending revisions/positions.
    Backward,
}

/// A filter over the whole log (`$all`). All given conditions must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllFilter {
    /// Keep only these event types (empty = all types).
    pub types: Vec<String>,
    /// Keep only events whose stream's category is this.
    pub category: Option<String>,
    /// Keep only events whose stream name starts with this.
    pub stream_prefix: Option<String>,
    /// Include events of reserved `$`-streams (left out by default).
    pub include_system: bool,
    /// Keep only the events of this flow: `metadata.correlation_id` equal to this (see
    /// [`crate::correlation`]). Answered from the correlation index, never by a scan.
    pub correlation_id: Option<String>,
}

impl AllFilter {
    /// True when the event with this stream and type passes the filter, `correlation_id` left
    /// out (see [`AllFilter::matches_event`]).
    pub fn matches(&self, stream: &str, event_type: &str) -> bool {
        (self.include_system || !stream.starts_with('$'))
            && (self.types.is_empty() || self.types.iter().any(|t| t == event_type))
            && self
                .category
                .as_deref()
                .is_none_or(|c| crate::hash::category_of(stream) == c)
            && self
                .stream_prefix
                .as_deref()
                .is_none_or(|p| stream.starts_with(p))
    }

    /// True when the event passes every condition of the filter, `correlation_id` included
    /// ([`AllFilter::matches`] leaves that one out: it does not see the metadata).
    pub fn matches_event(&self, stream: &str, event_type: &str, metadata: &[u8]) -> bool {
        self.matches(stream, event_type)
            && self.correlation_id.as_deref().is_none_or(|c| {
                crate::correlation::links_of(metadata)
                    .correlation_id
                    .as_deref()
                    == Some(c)
            })
    }
}

/// One page of a read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadSlice {
    /// The events, in the read direction.
    pub events: Vec<RecordedEvent>,
    /// The `from` value that continues this read, or `None` when a backward read reached the start.
    /// A forward read that reached the end still gives the value to poll from.
    pub next: Option<u64>,
    /// True when no more events exist in that direction right now.
    pub end: bool,
}

/// User-settable stream metadata, enforced by every stream read.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamMetadata {
    /// Only the last `max_count` events are readable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_count: Option<u64>,
    /// Events older than this are not readable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_seconds: Option<u64>,
    /// Events with a lower revision are not readable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncate_before: Option<u64>,
    /// Free-form JSON for applications.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom: Option<serde_json::Value>,
}

/// Whether and how a stream was deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Deletion {
    /// Soft-deleted when its last revision was `at`; appending again re-creates it, continuing
    /// the revisions, and events up to `at` stay hidden.
    Soft {
        /// Last revision at the time of deletion.
        at: u64,
    },
    /// Tombstoned: the name can never be written again.
    Hard,
}

/// The head of a stream: what the concurrency check and readers need, without a scan.
#[derive(Clone, Debug, PartialEq)]
pub struct StreamHead {
    /// The stream name.
    pub name: String,
    /// Last revision ever written (also for deleted streams), `None` if never written.
    pub last_revision: Option<u64>,
    /// Log position of the last event, `None` if never written.
    pub last_position: Option<u64>,
    /// The latest deletion, if any.
    pub deletion: Option<Deletion>,
    /// User metadata.
    pub metadata: StreamMetadata,
}

impl StreamHead {
    /// True while reads of the stream answer "deleted": tombstoned, or soft-deleted with nothing
    /// appended since.
    pub fn is_deleted(&self) -> bool {
        match self.deletion {
            Some(Deletion::Hard) => true,
            Some(Deletion::Soft { at }) => self.last_revision == Some(at),
            None => false,
        }
    }

    /// The state the concurrency check compares against (soft-deleted reads as no stream).
    pub fn current(&self) -> CurrentRevision {
        match self.last_revision {
            Some(r) if !self.is_deleted() => CurrentRevision::Revision(r),
            _ => CurrentRevision::NoStream,
        }
    }

    /// The lowest revision that reads may return given deletion, `truncate_before` and `max_count`
    /// (`max_age_seconds` is applied per event by timestamp).
    pub fn first_visible_revision(&self) -> u64 {
        let mut first = self.metadata.truncate_before.unwrap_or(0);
        if let Some(Deletion::Soft { at }) = self.deletion {
            first = first.max(at.saturating_add(1));
        }
        if let (Some(max), Some(last)) = (self.metadata.max_count, self.last_revision) {
            first = first.max((last + 1).saturating_sub(max));
        }
        first
    }
}

/// One entry of the stream listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamInfo {
    /// The stream name.
    pub name: String,
    /// Its last revision.
    pub last_revision: u64,
    /// Log position of its last event.
    pub last_position: u64,
}

/// Outcome of a delete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeleteResult {
    /// Log position of the deletion record (in the stream's `$$` metadata stream).
    pub position: u64,
}

/// Where a read starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReadFrom {
    /// The first event (revision or position 0).
    Start,
    /// The end: forward reads return nothing but the position to poll from; backward reads start
    /// at the last event.
    End,
    /// This revision (stream reads) or position (`$all` reads), inclusive.
    At(u64),
}
