//! Stream metadata through `$$<stream>`, as the KurrentDB clients read and write it: a JSON
//! event of type `$metadata` whose keys map onto Strata's stream metadata.
//!
//! | KurrentDB key | Strata |
//! |---|---|
//! | `$maxCount` | `max_count` |
//! | `$maxAge` (seconds) | `max_age_seconds` |
//! | `$tb` (truncate before) | `truncate_before` |
//! | `$acl`, `$cacheControl`, any other key | kept in `custom` (an object), returned as written; not enforced |
//!
//! A write to `$$<stream>` sets the metadata of `<stream>` (the last event of the append wins;
//! its expected revision is not checked: Strata's metadata has no revision of its own). A read
//! of `$$<stream>` reads Strata's own `$$<stream>` records (ids, revisions, positions and times
//! as stored) with each record's data turned into the KurrentDB JSON of the metadata it set.
//! Custom metadata that is not a JSON object (possible over the HTTP API) reads as
//! `{"custom": <value>}`.

use serde_json::{Map, Value};
use strata_store::{ContentType, NewEvent, RecordedEvent, StreamMetadata};
use tonic::Status;

use super::append::Written;
use crate::app::{run_blocking, App};
use crate::grpc::status;

/// The prefix of metadata streams.
pub(crate) const PREFIX: &str = "$$";
/// The event type of metadata events.
pub(crate) const EVENT_TYPE: &str = "$metadata";

/// Sets the metadata of `stream` from the last of `events` (a `$metadata` JSON event).
pub(super) async fn write(
    app: &App,
    stream: &str,
    events: Vec<NewEvent>,
) -> Result<Written, Status> {
    let Some(event) = events.last() else {
        return Err(Status::invalid_argument("a metadata write needs one event"));
    };
    if event.content_type != ContentType::Json {
        return Err(Status::invalid_argument(
            "stream metadata must be a JSON event",
        ));
    }
    let json: Value = serde_json::from_slice(&event.data)
        .map_err(|e| Status::invalid_argument(format!("stream metadata is not JSON: {e}")))?;
    let metadata = from_kurrent(json)?;
    let store = app.store().clone();
    let target = stream.to_owned();
    let meta_stream = format!("{PREFIX}{stream}");
    let result = run_blocking("setting stream metadata failed", move || {
        let done = store.set_metadata(&target, metadata)?;
        let head = store.head(&meta_stream)?;
        Ok::<_, strata_store::Error>((done, head))
    })
    .await
    .map_err(|e| status::from_error(e, Some(stream), 0))?;
    let (done, head) = result.map_err(|e| status::from_store(app, e, Some(stream)))?;
    Ok(Written::Ok {
        revision: head.last_revision.unwrap_or(0),
        position: done.position,
    })
}

/// KurrentDB metadata JSON as Strata's metadata.
pub(crate) fn from_kurrent(json: Value) -> Result<StreamMetadata, Status> {
    let Value::Object(mut map) = json else {
        return Err(Status::invalid_argument(
            "stream metadata must be a JSON object",
        ));
    };
    let mut number = |key: &str| -> Result<Option<u64>, Status> {
        match map.remove(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| {
                Status::invalid_argument(format!("{key} must be a non-negative integer"))
            }),
        }
    };
    let max_count = number("$maxCount")?;
    let max_age_seconds = number("$maxAge")?;
    let truncate_before = number("$tb")?;
    let custom = (!map.is_empty()).then_some(Value::Object(map));
    Ok(StreamMetadata {
        max_count,
        max_age_seconds,
        truncate_before,
        custom,
    })
}

/// Strata's metadata as KurrentDB metadata JSON.
pub(crate) fn to_kurrent(metadata: &StreamMetadata) -> Value {
    let mut map = match &metadata.custom {
        Some(Value::Object(custom)) => custom.clone(),
        Some(other) => Map::from_iter([("custom".to_owned(), other.clone())]),
        None => Map::new(),
    };
    if let Some(n) = metadata.max_count {
        map.insert("$maxCount".to_owned(), n.into());
    }
    if let Some(n) = metadata.max_age_seconds {
        map.insert("$maxAge".to_owned(), n.into());
    }
    if let Some(n) = metadata.truncate_before {
        map.insert("$tb".to_owned(), n.into());
    }
    Value::Object(map)
}

/// A record of Strata's `$$<stream>` as the KurrentDB `$metadata` event it stands for: its
/// data `{"metadata": {...}, "deletion"?: ...}` becomes the KurrentDB JSON of `metadata`.
pub(crate) fn as_kurrent_event(mut event: RecordedEvent) -> RecordedEvent {
    let metadata = serde_json::from_slice::<Value>(&event.data)
        .ok()
        .and_then(|mut v| v.get_mut("metadata").map(Value::take))
        .and_then(|m| serde_json::from_value::<StreamMetadata>(m).ok())
        .unwrap_or_default();
    event.data = to_kurrent(&metadata).to_string().into_bytes();
    event.event_type = EVENT_TYPE.to_owned();
    event.content_type = ContentType::Json;
    event
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kurrent_keys_map_and_custom_keys_are_kept() {
        let json = json!({"$maxCount": 5, "$maxAge": 60, "$tb": 2, "$acl": {"$r": "$all"}, "x": 1});
        let m = from_kurrent(json.clone()).unwrap();
        assert_eq!(m.max_count, Some(5));
        assert_eq!(m.max_age_seconds, Some(60));
        assert_eq!(m.truncate_before, Some(2));
        assert_eq!(m.custom, Some(json!({"$acl": {"$r": "$all"}, "x": 1})));
        assert_eq!(to_kurrent(&m), json);
        assert!(from_kurrent(json!({"$maxCount": -1})).is_err());
        assert!(from_kurrent(json!([1])).is_err());
    }
}
