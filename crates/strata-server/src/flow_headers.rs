//! The `Correlation-Id` / `Causation-Id` headers of an append: they fill `correlation_id` /
//! `causation_id` in the metadata of the events that lack them (the convention of
//! [`strata_store::correlation`]).
//!
//! An event's metadata must then be absent (or `null`) or a JSON object: any other metadata is
//! a 400, since there is no place to put the fields. A key the event already has (whatever its
//! value) is left as it is. The object's own text is kept: the fields are inserted after its `{`.

use std::borrow::Cow;
use std::collections::HashMap;

use axum::http::HeaderMap;
use serde::de::IgnoredAny;
use strata_store::correlation::{CAUSATION_ID_KEY, CORRELATION_ID_KEY};
use strata_store::NewEvent;

use crate::error::{Error, Result};
use crate::event_json::write_str;

/// The values of the two headers (at least one is present).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct FlowHeaders {
    pub correlation_id: Option<String>,
    pub causation_id: Option<String>,
}

/// One header as text: absent → `None`; empty, repeated or not visible ASCII → 400.
fn header(headers: &HeaderMap, name: &str) -> Result<Option<String>> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Error::invalid(format!("{name} must be given once")));
    }
    let text = value
        .to_str()
        .map_err(|_| Error::invalid(format!("{name} must be visible ASCII text")))?
        .trim();
    if text.is_empty() {
        return Err(Error::invalid(format!("{name} must not be empty")));
    }
    Ok(Some(text.to_owned()))
}

/// The `Correlation-Id` / `Causation-Id` headers, `None` when neither is present.
pub(crate) fn flow_headers(headers: &HeaderMap) -> Result<Option<FlowHeaders>> {
    let h = FlowHeaders {
        correlation_id: header(headers, "correlation-id")?,
        causation_id: header(headers, "causation-id")?,
    };
    Ok((h.correlation_id.is_some() || h.causation_id.is_some()).then_some(h))
}

/// Fills the fields of `flow` into the metadata of each event that lacks them.
pub(crate) fn fill(events: &mut [NewEvent], flow: &FlowHeaders) -> Result<()> {
    for (i, event) in events.iter_mut().enumerate() {
        fill_one(&mut event.metadata, flow).map_err(|why| {
            Error::invalid(format!(
                "event {i}: Correlation-Id / Causation-Id need metadata that is absent or a JSON object: {why}"
            ))
        })?;
    }
    Ok(())
}

fn fill_one(metadata: &mut Vec<u8>, flow: &FlowHeaders) -> std::result::Result<(), String> {
    let text = std::str::from_utf8(metadata).map_err(|_| "metadata is not UTF-8".to_owned())?;
    let trimmed = text.trim();
    let existing: HashMap<Cow<'_, str>, IgnoredAny> = if trimmed.is_empty() || trimmed == "null" {
        HashMap::new()
    } else if trimmed.starts_with('{') {
        serde_json::from_str(trimmed).map_err(|e| format!("metadata is not a JSON object: {e}"))?
    } else {
        return Err("metadata is not a JSON object".to_owned());
    };
    let mut fields = Vec::new();
    for (key, value) in [
        (CORRELATION_ID_KEY, &flow.correlation_id),
        (CAUSATION_ID_KEY, &flow.causation_id),
    ] {
        if let Some(v) = value {
            if !existing.contains_key(key) {
                if !fields.is_empty() {
                    fields.push(b',');
                }
                write_str(&mut fields, key);
                fields.push(b':');
                write_str(&mut fields, v);
            }
        }
    }
    if fields.is_empty() {
        return Ok(());
    }
    let mut out = Vec::with_capacity(metadata.len() + fields.len() + 2);
    if existing.is_empty() && !trimmed.starts_with('{') {
        out.push(b'{');
        out.extend_from_slice(&fields);
        out.push(b'}');
    } else {
        // Insert right after the object's `{`, keeping the rest of its text.
        let open = text.find('{').ok_or("metadata is not a JSON object")?;
        out.extend_from_slice(&metadata[..=open]);
        out.extend_from_slice(&fields);
        if !existing.is_empty() {
            out.push(b',');
        }
        out.extend_from_slice(&metadata[open + 1..]);
    }
    *metadata = out;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(
        metadata: &str,
        c: Option<&str>,
        k: Option<&str>,
    ) -> std::result::Result<String, String> {
        let mut m = metadata.as_bytes().to_vec();
        let flow = FlowHeaders {
            correlation_id: c.map(str::to_owned),
            causation_id: k.map(str::to_owned),
        };
        fill_one(&mut m, &flow)?;
        Ok(String::from_utf8(m).unwrap())
    }

    #[test]
    fn fills_absent_null_and_objects_keeping_their_text() {
        assert_eq!(
            filled("", Some("c1"), Some("k\"1")).unwrap(),
            r#"{"correlation_id":"c1","causation_id":"k\"1"}"#
        );
        assert_eq!(
            filled("null", Some("c1"), None).unwrap(),
            r#"{"correlation_id":"c1"}"#
        );
        assert_eq!(
            filled(" { } ", Some("c1"), None).unwrap(),
            r#" {"correlation_id":"c1" } "#
        );
        assert_eq!(
            filled(r#"{"b": 2,"a":1}"#, None, Some("k")).unwrap(),
            r#"{"causation_id":"k","b": 2,"a":1}"#
        );
        // Keys the event has are kept, whatever their value.
        assert_eq!(
            filled(r#"{"correlation_id":null}"#, Some("c"), None).unwrap(),
            r#"{"correlation_id":null}"#
        );
        let v: serde_json::Value = serde_json::from_str(
            &filled(r#"{"correlation_id":"mine"}"#, Some("c"), Some("k")).unwrap(),
        )
        .unwrap();
        assert_eq!(
            v,
            serde_json::json!({"correlation_id": "mine", "causation_id": "k"})
        );
    }

    #[test]
    fn other_metadata_is_refused() {
        for bad in ["[1]", "\"text\"", "3", "true", "{\"a\":", "{\"a\":1}x"] {
            assert!(filled(bad, Some("c"), None).is_err(), "{bad}");
        }
        // Without headers nothing is looked at (fill is not called).
    }
}
