//! Schema evolution where events are consumed: upcasters, per event type and version.
//!
//! # Convention
//!
//! An event type keeps its name when its schema changes; the version of its `data` schema is
//! `metadata.schema_version` (a positive integer; absent = 1). A writer that changes the schema
//! writes the new version number with the new events. Stored events are never rewritten: old
//! events keep their old shape on disk, and a consumer turns them into the current shape when
//! it reads them, with one upcaster per `(type, version)` that makes version `version + 1` out
//! of version `version`. Upcasters run in version order until none is left for the event's
//! version, so a v1 event goes through 1→2, then 2→3, and so on.
//!
//! [`Upcasters`] is that registry for Rust code ([`super::Projection::upcast`] uses it);
//! JavaScript projections declare theirs with `.upcast({...})` (see `docs/projections.md`).

use std::borrow::Cow;
use std::collections::HashMap;

use super::engine::ProjectionError;
use crate::RecordedEvent;

/// The metadata key of the schema version of an event's `data`.
pub const SCHEMA_VERSION_KEY: &str = "schema_version";

/// The schema version of `event`: `metadata.schema_version` when it is a positive integer,
/// else 1.
pub fn schema_version(event: &RecordedEvent) -> u64 {
    if memchr::memmem::find(&event.metadata, b"\"schema_version\"").is_none() {
        return 1;
    }
    #[derive(serde::Deserialize)]
    struct Versioned {
        #[serde(default)]
        schema_version: Option<serde_json::Value>,
    }
    serde_json::from_slice::<Versioned>(&event.metadata)
        .ok()
        .and_then(|v| v.schema_version)
        .and_then(|v| v.as_u64())
        .filter(|&v| v > 0)
        .unwrap_or(1)
}

/// One upcaster: the `data` of version `n` in, the `data` of version `n + 1` out.
type Upcaster =
    Box<dyn Fn(serde_json::Value) -> Result<serde_json::Value, ProjectionError> + Send + Sync>;

/// Upcasters by `(event type, version)`. Applying them never changes the stored event: it
/// returns a copy whose `data` and `metadata.schema_version` are those of the latest version.
#[derive(Default)]
pub struct Upcasters {
    by_type: HashMap<String, HashMap<u64, Upcaster>>,
}

impl std::fmt::Debug for Upcasters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut keys: Vec<(&str, u64)> = self
            .by_type
            .iter()
            .flat_map(|(t, m)| m.keys().map(move |v| (t.as_str(), *v)))
            .collect();
        keys.sort_unstable();
        f.debug_struct("Upcasters")
            .field("upcasters", &keys)
            .finish()
    }
}

impl Upcasters {
    /// No upcasters.
    pub fn new() -> Upcasters {
        Upcasters::default()
    }

    /// Adds the upcaster of `event_type` from version `from_version` to `from_version + 1`
    /// (replacing any earlier one for that pair).
    pub fn add(
        mut self,
        event_type: impl Into<String>,
        from_version: u64,
        upcast: impl Fn(serde_json::Value) -> Result<serde_json::Value, ProjectionError>
            + Send
            + Sync
            + 'static,
    ) -> Upcasters {
        self.by_type
            .entry(event_type.into())
            .or_default()
            .insert(from_version, Box::new(upcast));
        self
    }

    /// `event` in its latest version: borrowed as it is when no upcaster applies, else a copy
    /// with the upcast `data` and `metadata.schema_version` set to the version reached. Events
    /// whose `data` is not JSON are passed through untouched.
    pub fn apply<'a>(
        &self,
        event: &'a RecordedEvent,
    ) -> Result<Cow<'a, RecordedEvent>, ProjectionError> {
        let Some(by_version) = self.by_type.get(&event.event_type) else {
            return Ok(Cow::Borrowed(event));
        };
        let mut version = schema_version(event);
        if !by_version.contains_key(&version) || event.content_type != crate::ContentType::Json {
            return Ok(Cow::Borrowed(event));
        }
        let mut data: serde_json::Value = if event.data.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&event.data).map_err(|e| {
                ProjectionError::new(format!(
                    "upcasting {} at position {}: data is not JSON: {e}",
                    event.event_type, event.position
                ))
            })?
        };
        while let Some(upcast) = by_version.get(&version) {
            data = upcast(data)?;
            version += 1;
        }
        let mut metadata = match serde_json::from_slice::<serde_json::Value>(&event.metadata) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        };
        metadata.insert(SCHEMA_VERSION_KEY.into(), version.into());
        let mut out = event.clone();
        out.data = encode(&data)?;
        out.metadata = encode(&serde_json::Value::Object(metadata))?;
        Ok(Cow::Owned(out))
    }
}

/// JSON text of `v`, the error as a [`ProjectionError`].
fn encode(v: &serde_json::Value) -> Result<Vec<u8>, ProjectionError> {
    serde_json::to_vec(v).map_err(|e| ProjectionError::new(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(ty: &str, data: &str, metadata: &str) -> RecordedEvent {
        RecordedEvent {
            id: uuid::Uuid::nil(),
            stream: "order-1".into(),
            revision: 0,
            position: 3,
            event_type: ty.into(),
            timestamp_micros: 0,
            content_type: crate::ContentType::Json,
            data: data.as_bytes().to_vec(),
            metadata: metadata.as_bytes().to_vec(),
        }
    }

    fn upcasters() -> Upcasters {
        Upcasters::new()
            .add("OrderPlaced", 1, |d| {
                Ok(json!({"total_cents": d["amount"].as_f64().unwrap_or(0.0) as i64 * 100}))
            })
            .add("OrderPlaced", 2, |mut d| {
                d["currency"] = json!("EUR");
                Ok(d)
            })
    }

    #[test]
    fn versions_default_to_one_and_chain_up() {
        let up = upcasters();
        let v1 = event("OrderPlaced", r#"{"amount":5}"#, "");
        assert_eq!(schema_version(&v1), 1);
        let got = up.apply(&v1).unwrap();
        assert_eq!(schema_version(&got), 3);
        let data: serde_json::Value = serde_json::from_slice(&got.data).unwrap();
        assert_eq!(data, json!({"total_cents": 500, "currency": "EUR"}));
        // The stored event is untouched.
        assert_eq!(v1.data, br#"{"amount":5}"#);

        let v2 = event(
            "OrderPlaced",
            r#"{"total_cents":7}"#,
            r#"{"schema_version":2,"correlation_id":"c"}"#,
        );
        let got = up.apply(&v2).unwrap();
        let meta: serde_json::Value = serde_json::from_slice(&got.metadata).unwrap();
        assert_eq!(meta, json!({"schema_version": 3, "correlation_id": "c"}));

        let v3 = event("OrderPlaced", "{}", r#"{"schema_version":3}"#);
        assert!(matches!(up.apply(&v3).unwrap(), Cow::Borrowed(_)));
        let other = event("OrderShipped", "{}", "");
        assert!(matches!(up.apply(&other).unwrap(), Cow::Borrowed(_)));
    }

    #[test]
    fn an_upcaster_error_is_the_projection_error() {
        let up = Upcasters::new().add("T", 1, |_| Err(ProjectionError::new("bad v1")));
        let e = up.apply(&event("T", "{}", "")).unwrap_err();
        assert_eq!(e.message, "bad v1");
    }
}
