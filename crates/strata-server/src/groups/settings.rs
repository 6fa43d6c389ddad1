//! A group's settings: the body of `PUT /groups/{group}`, validated, and group names.
//!
//! ```json
//! {"source": "$all" | "<stream>" | "category:<name>", "from": "start" | "end" | 17,
//!  "ack_timeout_ms": 30000, "max_deliveries": 5, "ordering": "none" | "per_stream"}
//! ```
//!
//! Every field but `source` is optional (defaults above); unknown fields are a 400. The cursor of
//! a group is the stream revision for a stream source and the log position otherwise, so an
//! integer `from` is a revision or a position accordingly.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::{Error, Result};

/// Default `ack_timeout_ms`.
pub const DEFAULT_ACK_TIMEOUT_MS: u64 = 30_000;
/// Largest `ack_timeout_ms` (one day).
pub const MAX_ACK_TIMEOUT_MS: u64 = 86_400_000;
/// Default `max_deliveries`.
pub const DEFAULT_MAX_DELIVERIES: u32 = 5;
/// Largest `max_deliveries`.
pub const MAX_MAX_DELIVERIES: u32 = 1_000_000;
/// Longest group name, in bytes.
pub const MAX_GROUP_NAME_BYTES: usize = 255;

/// What a group reads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "name", rename_all = "snake_case")]
pub enum Source {
    /// Every user event of the log (`$all`; `$`-streams are left out). Cursor: log position.
    All,
    /// One stream. Cursor: the stream revision.
    Stream(String),
    /// Every stream of a category (`category:<name>`). Cursor: log position.
    Category(String),
}

impl Source {
    /// Parses `$all`, `category:<name>` or a stream name.
    pub fn parse(s: &str) -> Result<Source> {
        if s == "$all" {
            return Ok(Source::All);
        }
        if let Some(category) = s.strip_prefix("category:") {
            if category.is_empty() || category.len() > MAX_GROUP_NAME_BYTES {
                return Err(Error::invalid(
                    "source category:<name> needs a name of 1 to 255 bytes",
                ));
            }
            if category.contains('-') {
                return Err(Error::invalid(format!(
                    "a category is the part of a stream name before its first '-', so {category:?} can match no stream"
                )));
            }
            if category.starts_with('$') || category.chars().any(char::is_control) {
                return Err(Error::invalid(
                    "a source category must not start with $ or contain control characters",
                ));
            }
            return Ok(Source::Category(category.to_owned()));
        }
        crate::stream_name::check_writable(s)
            .map_err(|e| Error::invalid(format!("bad source: {e}")))?;
        Ok(Source::Stream(s.to_owned()))
    }

    /// The form of the API: `$all`, `category:<name>` or the stream name.
    pub fn to_api(&self) -> String {
        match self {
            Source::All => "$all".into(),
            Source::Stream(s) => s.clone(),
            Source::Category(c) => format!("category:{c}"),
        }
    }

    /// The stream-name scope a token needs for this source: the stream, the category name, or
    /// everything (`""`) for `$all`.
    pub fn auth_scope(&self) -> &str {
        match self {
            Source::All => "",
            Source::Stream(s) | Source::Category(s) => s,
        }
    }
}

/// Where a new group starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartFrom {
    /// The first event of the source.
    Start,
    /// The head of the source when the group was created (resolved and stored then).
    End,
    /// This cursor (revision or position), inclusive.
    At(u64),
}

impl StartFrom {
    fn to_api(self) -> Value {
        match self {
            StartFrom::Start => json!("start"),
            StartFrom::End => json!("end"),
            StartFrom::At(n) => json!(n),
        }
    }
}

/// Delivery ordering.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ordering {
    /// Events are handed out in parallel, in cursor order.
    None,
    /// An event is not handed out while an earlier, not yet done event of its stream is in
    /// flight or waiting for a retry.
    PerStream,
}

/// The validated settings of a group. `from` is kept as given (for the identical-PUT check).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// What the group reads.
    pub source: Source,
    /// Where it starts, as given.
    pub from: StartFrom,
    /// Time a consumer has to ack an event before it is redelivered.
    pub ack_timeout_ms: u64,
    /// Deliveries after which an unacked event is parked.
    pub max_deliveries: u32,
    /// Ordering guarantee.
    pub ordering: Ordering,
}

/// The PUT body as sent.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    source: String,
    #[serde(default)]
    from: Option<Value>,
    #[serde(default)]
    ack_timeout_ms: Option<u64>,
    #[serde(default)]
    max_deliveries: Option<u64>,
    #[serde(default)]
    ordering: Option<String>,
}

impl Settings {
    /// Parses and validates a PUT body.
    pub fn parse(bytes: &[u8]) -> Result<Settings> {
        let value: Value = serde_json::from_slice(bytes)
            .map_err(|e| Error::invalid(format!("malformed group settings: {e}")))?;
        if !value.is_object() {
            return Err(Error::invalid("group settings must be a JSON object"));
        }
        let body: Body = serde_json::from_value(value)
            .map_err(|e| Error::invalid(format!("bad group settings: {e}")))?;
        let source = Source::parse(&body.source)?;
        let from = match body.from {
            None => StartFrom::Start,
            Some(Value::String(s)) if s == "start" => StartFrom::Start,
            Some(Value::String(s)) if s == "end" => StartFrom::End,
            Some(v) => match v.as_u64() {
                Some(n) => StartFrom::At(n),
                None => {
                    return Err(Error::invalid(format!(
                        "from must be \"start\", \"end\" or a non-negative integer, not {v}"
                    )))
                }
            },
        };
        let ack_timeout_ms = body.ack_timeout_ms.unwrap_or(DEFAULT_ACK_TIMEOUT_MS);
        if !(1..=MAX_ACK_TIMEOUT_MS).contains(&ack_timeout_ms) {
            return Err(Error::invalid(format!(
                "ack_timeout_ms must be from 1 to {MAX_ACK_TIMEOUT_MS}, not {ack_timeout_ms}"
            )));
        }
        let max_deliveries = body
            .max_deliveries
            .unwrap_or(u64::from(DEFAULT_MAX_DELIVERIES));
        let max_deliveries = u32::try_from(max_deliveries)
            .ok()
            .filter(|n| (1..=MAX_MAX_DELIVERIES).contains(n))
            .ok_or_else(|| {
                Error::invalid(format!(
                    "max_deliveries must be from 1 to {MAX_MAX_DELIVERIES}, not {max_deliveries}"
                ))
            })?;
        let ordering = match body.ordering.as_deref() {
            None | Some("none") => Ordering::None,
            Some("per_stream") => Ordering::PerStream,
            Some(other) => {
                return Err(Error::invalid(format!(
                    "ordering must be \"none\" or \"per_stream\", not {other:?}"
                )))
            }
        };
        Ok(Settings {
            source,
            from,
            ack_timeout_ms,
            max_deliveries,
            ordering,
        })
    }

    /// True when `other` differs only in the settings that may change on a live group
    /// (`ack_timeout_ms`, `max_deliveries`). Source, start and ordering are fixed at creation.
    pub fn same_identity(&self, other: &Settings) -> bool {
        self.source == other.source && self.from == other.from && self.ordering == other.ordering
    }

    /// The settings as the API shows them (the PUT body form).
    pub fn to_api(&self) -> Value {
        json!({
            "source": self.source.to_api(),
            "from": self.from.to_api(),
            "ack_timeout_ms": self.ack_timeout_ms,
            "max_deliveries": self.max_deliveries,
            "ordering": match self.ordering {
                Ordering::None => "none",
                Ordering::PerStream => "per_stream",
            },
        })
    }
}

/// Checks a group name: 1–255 bytes of UTF-8, no control characters, no `$` (reserved names).
pub fn check_group_name(name: &str) -> Result<()> {
    crate::stream_name::check_name("group", name)?;
    if name.contains('$') {
        return Err(Error::invalid("group names must not contain $"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_forms() {
        let s = Settings::parse(br#"{"source":"$all"}"#).unwrap();
        assert_eq!(s.source, Source::All);
        assert_eq!(s.from, StartFrom::Start);
        assert_eq!(s.ack_timeout_ms, DEFAULT_ACK_TIMEOUT_MS);
        assert_eq!(s.max_deliveries, DEFAULT_MAX_DELIVERIES);
        assert_eq!(s.ordering, Ordering::None);
        let s = Settings::parse(
            br#"{"source":"category:order","from":7,"ack_timeout_ms":200,"max_deliveries":2,"ordering":"per_stream"}"#,
        )
        .unwrap();
        assert_eq!(s.source, Source::Category("order".into()));
        assert_eq!(s.from, StartFrom::At(7));
        assert_eq!(s.ordering, Ordering::PerStream);
        assert_eq!(
            Settings::parse(br#"{"source":"order-1","from":"end"}"#)
                .unwrap()
                .source,
            Source::Stream("order-1".into())
        );
        let round = Settings::parse(s.to_api().to_string().as_bytes()).unwrap();
        assert_eq!(round, s);
    }

    #[test]
    fn refuses_bad_bodies() {
        for body in [
            r#"{"source":"$all","extra":1}"#,
            r#"{"from":"start"}"#,
            r#"[]"#,
            r#"{"source":"$all","from":-1}"#,
            r#"{"source":"$all","from":"middle"}"#,
            r#"{"source":"$all","ack_timeout_ms":0}"#,
            r#"{"source":"$all","ack_timeout_ms":86400001}"#,
            r#"{"source":"$all","max_deliveries":0}"#,
            r#"{"source":"$all","ordering":"total"}"#,
            r#"{"source":"$groups"}"#,
            r#"{"source":""}"#,
            r#"{"source":"category:"}"#,
            r#"{"source":"category:a-b"}"#,
            r#"not json"#,
        ] {
            assert!(Settings::parse(body.as_bytes()).is_err(), "{body}");
        }
    }

    #[test]
    fn group_names() {
        assert!(check_group_name("billing").is_ok());
        assert!(check_group_name(&"g".repeat(255)).is_ok());
        assert!(check_group_name(&"g".repeat(256)).is_err());
        assert!(check_group_name("").is_err());
        assert!(check_group_name("$x").is_err());
        assert!(check_group_name("a\tb").is_err());
    }
}
