//! Values between Strata and the KurrentDB protocol: event ids, positions, timestamps, content
//! types, recorded events.
//!
//! - **Positions.** A Strata log position `p` is both the commit and the prepare position of
//!   the protocol (`commit_position == prepare_position == p`); stream revisions are Strata's
//!   revisions. Reading `$all` from a position includes the event at it; subscribing from one
//!   starts after it (as the clients expect of a checkpoint).
//! - **Timestamps.** The `created` metadata entry is .NET ticks (100 ns) since the Unix epoch:
//!   Strata's commit time in microseconds × 10.
//! - **Content types.** `content-type: application/json` ↔ a JSON event (`data` in the HTTP
//!   API); anything else ↔ a binary event (`data_base64`), read back as
//!   `application/octet-stream`.
//! - **Metadata.** The protocol's `custom_metadata` bytes are the event's metadata (JSON, or
//!   empty for none); its `metadata` map carries `type`, `content-type` and `created`.

use std::collections::HashMap;
use std::time::SystemTime;

use strata_store::{ContentType, RecordedEvent};
use tonic::Status;
use uuid::Uuid;

use crate::grpc::proto::event_store::client as shared;
use crate::grpc::proto::event_store::client::streams::read_resp;

/// The content type of JSON events.
pub(crate) const JSON: &str = "application/json";
/// The content type binary events are read back with.
pub(crate) const BINARY: &str = "application/octet-stream";

/// An id of the protocol as a UUID; `None` when absent.
pub(crate) fn uuid_from_proto(id: Option<&shared::Uuid>) -> Result<Option<Uuid>, Status> {
    let Some(value) = id.and_then(|id| id.value.as_ref()) else {
        return Ok(None);
    };
    match value {
        shared::uuid::Value::Structured(s) => {
            let bits = (u128::from(s.most_significant_bits as u64) << 64)
                | u128::from(s.least_significant_bits as u64);
            Ok(Some(Uuid::from_u128(bits)))
        }
        shared::uuid::Value::String(s) => s
            .parse()
            .map(Some)
            .map_err(|_| Status::invalid_argument(format!("invalid UUID {s:?}"))),
    }
}

/// A UUID in the protocol's form: the two 64-bit halves, or the text (`structured` false).
pub(crate) fn uuid_to_proto(id: Uuid, structured: bool) -> shared::Uuid {
    let value = if structured {
        let bits = id.as_u128();
        shared::uuid::Value::Structured(shared::uuid::Structured {
            most_significant_bits: (bits >> 64) as u64 as i64,
            least_significant_bits: bits as u64 as i64,
        })
    } else {
        shared::uuid::Value::String(id.hyphenated().to_string())
    };
    shared::Uuid { value: Some(value) }
}

/// A stream name from the protocol's identifier (UTF-8 bytes).
pub(crate) fn stream_name(id: Option<&shared::StreamIdentifier>) -> Result<String, Status> {
    let id = id.ok_or_else(|| Status::invalid_argument("the stream identifier is missing"))?;
    String::from_utf8(id.stream_name.clone())
        .map_err(|_| Status::invalid_argument("the stream name is not UTF-8"))
}

/// The protocol's identifier of `stream`.
pub(crate) fn stream_identifier(stream: &str) -> shared::StreamIdentifier {
    shared::StreamIdentifier {
        stream_name: stream.as_bytes().to_vec(),
    }
}

/// Microseconds since the Unix epoch as .NET ticks (100 ns) since the Unix epoch.
pub(crate) fn ticks(micros: i64) -> i64 {
    micros.saturating_mul(10)
}

/// Now, as a protobuf timestamp.
pub(crate) fn now_timestamp() -> prost_types::Timestamp {
    prost_types::Timestamp::from(SystemTime::now())
}

/// Whether a `content-type` entry names JSON.
pub(crate) fn content_type_of(value: Option<&str>) -> ContentType {
    match value {
        Some(v) if v.eq_ignore_ascii_case(JSON) => ContentType::Json,
        _ => ContentType::Binary,
    }
}

/// A recorded event in the protocol's form (`structured`: the id as two halves).
pub(crate) fn recorded_event(
    event: &RecordedEvent,
    structured: bool,
) -> read_resp::read_event::RecordedEvent {
    let mut metadata = HashMap::with_capacity(3);
    metadata.insert("type".to_owned(), event.event_type.clone());
    metadata.insert(
        "content-type".to_owned(),
        match event.content_type {
            ContentType::Json => JSON,
            ContentType::Binary => BINARY,
        }
        .to_owned(),
    );
    metadata.insert(
        "created".to_owned(),
        ticks(event.timestamp_micros).to_string(),
    );
    read_resp::read_event::RecordedEvent {
        id: Some(uuid_to_proto(event.id, structured)),
        stream_identifier: Some(stream_identifier(&event.stream)),
        stream_revision: event.revision,
        prepare_position: event.position,
        commit_position: event.position,
        metadata,
        custom_metadata: event.metadata.clone(),
        data: event.data.clone(),
    }
}

/// A read or subscription message carrying `event`.
pub(crate) fn read_resp_event(event: &RecordedEvent, structured: bool) -> read_resp::Content {
    read_resp::Content::Event(read_resp::ReadEvent {
        event: Some(recorded_event(event, structured)),
        link: None,
        position: Some(read_resp::read_event::Position::CommitPosition(
            event.position,
        )),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_round_trip_both_forms() {
        let id = Uuid::new_v4();
        for structured in [true, false] {
            let proto = uuid_to_proto(id, structured);
            assert_eq!(uuid_from_proto(Some(&proto)).unwrap(), Some(id));
        }
        assert_eq!(uuid_from_proto(None).unwrap(), None);
    }

    #[test]
    fn structured_halves_are_big_endian_bits() {
        let id: Uuid = "00000000-0000-0001-ffff-ffffffffffff".parse().unwrap();
        let proto = uuid_to_proto(id, true);
        let Some(shared::uuid::Value::Structured(s)) = proto.value else {
            panic!("structured");
        };
        assert_eq!(s.most_significant_bits, 1);
        assert_eq!(s.least_significant_bits, -1);
    }
}
