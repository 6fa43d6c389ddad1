//! JSON ↔ `google.protobuf.Value` (what State and Result answer).

use prost_types::value::Kind;
use prost_types::{ListValue, Struct, Value};

/// `json` as a protobuf value: numbers become doubles (integers beyond 2^53 lose precision).
/// Recursion is bounded by the store's JSON nesting limit (64 levels).
pub(crate) fn to_proto(json: serde_json::Value) -> Value {
    let kind = match json {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        serde_json::Value::String(s) => Kind::StringValue(s),
        serde_json::Value::Array(items) => Kind::ListValue(ListValue {
            values: items.into_iter().map(to_proto).collect(),
        }),
        serde_json::Value::Object(map) => Kind::StructValue(Struct {
            fields: map.into_iter().map(|(k, v)| (k, to_proto(v))).collect(),
        }),
    };
    Value { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let v = to_proto(serde_json::json!({"a": [1, "x", null, true], "b": {}}));
        let Some(Kind::StructValue(s)) = v.kind else {
            panic!("{v:?}")
        };
        let Some(Kind::ListValue(list)) = &s.fields["a"].kind else {
            panic!()
        };
        assert_eq!(list.values[0].kind, Some(Kind::NumberValue(1.0)));
        assert_eq!(list.values[1].kind, Some(Kind::StringValue("x".into())));
        assert_eq!(list.values[2].kind, Some(Kind::NullValue(0)));
        assert_eq!(list.values[3].kind, Some(Kind::BoolValue(true)));
        assert!(matches!(&s.fields["b"].kind, Some(Kind::StructValue(m)) if m.fields.is_empty()));
    }
}
