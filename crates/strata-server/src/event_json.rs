//! Events as the server returns them (docs/http-api.md, "Events"), written straight into a byte buffer:
//!
//! ```json
//! {"id":"…","stream":"order-42","revision":0,"position":1834,"type":"OrderPlaced",
//!  "timestamp":"2026-11-22T05:00:00.123456Z","data":{"total":99.0},"metadata":null}
//! ```
//!
//! `data` and `metadata` are the exact JSON text the client sent (checked as JSON through
//! [`serde_json::value::RawValue`], never re-serialised, so number spelling and key order
//! survive). Binary events carry `data_base64` instead of `data`. The hot path of NDJSON replays
//! and SSE, hence hand-written rather than derived.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde_json::value::RawValue;
use strata_store::timestamp::write_timestamp;
use strata_store::{ContentType, RecordedEvent};

/// Where the JSON goes, which decides what whitespace inside `data`/`metadata` may stay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Layout {
    /// Inside a JSON document: the stored text verbatim.
    Document,
    /// One line of NDJSON or one SSE `data:` line: line breaks in the stored text (always
    /// insignificant whitespace in valid JSON) become spaces.
    Line,
}

/// Appends the JSON of `e` to `out`.
pub(crate) fn write_event(out: &mut Vec<u8>, e: &RecordedEvent, layout: Layout) {
    out.extend_from_slice(b"{\"id\":\"");
    let mut uuid = [0u8; uuid::fmt::Hyphenated::LENGTH];
    out.extend_from_slice(e.id.hyphenated().encode_lower(&mut uuid).as_bytes());
    out.extend_from_slice(b"\",\"stream\":");
    write_str(out, &e.stream);
    out.extend_from_slice(b",\"revision\":");
    write_u64(out, e.revision);
    out.extend_from_slice(b",\"position\":");
    write_u64(out, e.position);
    out.extend_from_slice(b",\"type\":");
    write_str(out, &e.event_type);
    out.extend_from_slice(b",\"timestamp\":\"");
    write_timestamp(out, e.timestamp_micros);
    out.push(b'"');
    match e.content_type {
        ContentType::Json if e.data.is_empty() => out.extend_from_slice(b",\"data\":null"),
        ContentType::Json => match as_json(&e.data) {
            Some(raw) => {
                out.extend_from_slice(b",\"data\":");
                write_raw(out, raw, layout);
            }
            // Not JSON after all (written by an embedding program): lossless as base64.
            None => write_base64(out, b",\"data_base64\":\"", &e.data),
        },
        ContentType::Binary => write_base64(out, b",\"data_base64\":\"", &e.data),
    }
    if e.metadata.is_empty() {
        out.extend_from_slice(b",\"metadata\":null");
    } else if let Some(raw) = as_json(&e.metadata) {
        out.extend_from_slice(b",\"metadata\":");
        write_raw(out, raw, layout);
    } else {
        out.extend_from_slice(b",\"metadata\":null");
        write_base64(out, b",\"metadata_base64\":\"", &e.metadata);
    }
    out.push(b'}');
}

/// The JSON text of `bytes` without surrounding whitespace, if it is one valid JSON value.
fn as_json(bytes: &[u8]) -> Option<&str> {
    serde_json::from_slice::<&RawValue>(bytes)
        .ok()
        .map(RawValue::get)
}

fn write_raw(out: &mut Vec<u8>, raw: &str, layout: Layout) {
    let start = out.len();
    out.extend_from_slice(raw.as_bytes());
    if layout == Layout::Line {
        for b in &mut out[start..] {
            if *b == b'\n' || *b == b'\r' {
                *b = b' ';
            }
        }
    }
}

fn write_base64(out: &mut Vec<u8>, key: &[u8], bytes: &[u8]) {
    out.extend_from_slice(key);
    let start = out.len();
    out.resize(
        start + base64::encoded_len(bytes.len(), true).unwrap_or(0),
        0,
    );
    let written = BASE64.encode_slice(bytes, &mut out[start..]).unwrap_or(0);
    out.truncate(start + written);
    out.push(b'"');
}

/// Appends a JSON integer.
pub(crate) fn write_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Appends `s` as a JSON string (quotes, backslashes and control characters escaped).
pub(crate) fn write_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut plain_from = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[plain_from..i]);
        if escape.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.extend_from_slice(escape);
        }
        plain_from = i + 1;
    }
    out.extend_from_slice(&bytes[plain_from..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use uuid::Uuid;

    fn event(data: &[u8], metadata: &[u8], content_type: ContentType) -> RecordedEvent {
        RecordedEvent {
            id: Uuid::from_u128(0x6f1c7a5e_0c1b_4d5e_9d7a_1b2c3d4e5f60),
            stream: "order-42".into(),
            revision: 0,
            position: 1834,
            event_type: "OrderPlaced".into(),
            timestamp_micros: 1_795_323_600_123_456,
            content_type,
            data: data.to_vec(),
            metadata: metadata.to_vec(),
        }
    }

    fn render(e: &RecordedEvent, layout: Layout) -> String {
        let mut out = Vec::new();
        write_event(&mut out, e, layout);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_api_md_example() {
        let e = event(
            br#"{"total": 99.0}"#,
            br#"{"correlation_id":"abc"}"#,
            ContentType::Json,
        );
        assert_eq!(
            render(&e, Layout::Document),
            r#"{"id":"6f1c7a5e-0c1b-4d5e-9d7a-1b2c3d4e5f60","stream":"order-42","revision":0,"position":1834,"type":"OrderPlaced","timestamp":"2026-11-22T05:00:00.123456Z","data":{"total": 99.0},"metadata":{"correlation_id":"abc"}}"#
        );
    }

    #[test]
    fn data_is_returned_exactly_as_stored() {
        let text = "{\"b\":1,\"a\":1.50,\"big\":123456789012345678901234567890}";
        let e = event(text.as_bytes(), b"", ContentType::Json);
        let out = render(&e, Layout::Document);
        assert!(out.contains(text), "{out}");
        assert!(out.ends_with(r#""metadata":null}"#));
    }

    #[test]
    fn lines_have_no_line_breaks() {
        let e = event(b"{\r\n  \"a\": [1,\n 2]\n}", b"\"m\"\n", ContentType::Json);
        let out = render(&e, Layout::Line);
        assert!(!out.contains('\n') && !out.contains('\r'));
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["data"]["a"][1], 2);
        assert_eq!(v["metadata"], "m");
    }

    #[test]
    fn binary_and_non_json_data_are_base64() {
        let e = event(&[0, 159, 146, 150], b"", ContentType::Binary);
        let v: Value = serde_json::from_str(&render(&e, Layout::Document)).unwrap();
        assert_eq!(v["data_base64"], "AJ+Slg==");
        assert!(v.get("data").is_none());
        let e = event(b"not json", b"nor this", ContentType::Json);
        let v: Value = serde_json::from_str(&render(&e, Layout::Document)).unwrap();
        assert_eq!(v["data_base64"], "bm90IGpzb24=");
        assert_eq!(v["metadata"], Value::Null);
        assert_eq!(v["metadata_base64"], "bm9yIHRoaXM=");
        let e = event(b"", b"", ContentType::Json);
        let v: Value = serde_json::from_str(&render(&e, Layout::Document)).unwrap();
        assert_eq!(v["data"], Value::Null);
    }

    #[test]
    fn strings_are_escaped() {
        let mut out = Vec::new();
        write_str(&mut out, "a\"b\\c\nd\u{1}é");
        let s = String::from_utf8(out).unwrap();
        assert_eq!(s, r#""a\"b\\c\nd\u0001é""#);
        assert_eq!(
            serde_json::from_str::<String>(&s).unwrap(),
            "a\"b\\c\nd\u{1}é"
        );
    }
}
