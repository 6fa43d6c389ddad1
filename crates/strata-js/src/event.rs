//! The event object handed to user code: the API's event JSON, built field by field.
//!
//! ```json
//! {"id":"…","stream":"order-42","revision":0,"position":1834,"type":"OrderPlaced",
//!  "timestamp":"2026-11-22T05:00:00.123456Z","data":{"total":99.0},"metadata":null}
//! ```
//!
//! Same rules as the server's `event_json`: `data` is the parsed JSON payload (`null` when
//! empty); a binary payload, or JSON content that does not parse, is `data_base64` instead;
//! `metadata` is the parsed JSON or `null` when absent; metadata that is not JSON is `null` plus
//! `metadata_base64`. Here "does not parse" includes JSON nested too deeply for the engine's
//! parser (only events written before the store refused nesting beyond 64 levels). Only the payloads go through the JSON parser; the other fields are set
//! directly, and the strings that repeat from event to event (type, stream, timestamp of one
//! append) are reused.

use foldhash::HashMap;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use rquickjs::function::Args;
use rquickjs::{Ctx, Function, Object, Persistent, Value};
use strata_store::{ContentType, RecordedEvent};

use strata_store::json_check::{check_json, JsonProblem};
use strata_store::timestamp::format_timestamp;
use strata_store::MAX_JSON_DEPTH;

type JsString = rquickjs::String<'static>;

/// How many distinct event type strings are kept for reuse.
const TYPE_CACHE: usize = 1024;

/// Builds event objects, reusing the JS strings of the last stream, the last timestamp and the
/// event types seen.
pub(crate) struct EventBuilder {
    /// The prelude's `makeEvent`: an object literal sets the common shape faster than
    /// property-by-property from Rust (its keys are resolved once, at parse time).
    make: Persistent<Function<'static>>,
    types: HashMap<String, Persistent<JsString>>,
    stream: Option<(String, Persistent<JsString>)>,
    timestamp: Option<(i64, Persistent<JsString>)>,
}

impl EventBuilder {
    pub(crate) fn new(make: Persistent<Function<'static>>) -> EventBuilder {
        EventBuilder {
            make,
            types: HashMap::default(),
            stream: None,
            timestamp: None,
        }
    }

    /// The JS object of `event`.
    pub(crate) fn build<'js>(
        &mut self,
        ctx: &Ctx<'js>,
        event: &RecordedEvent,
    ) -> rquickjs::Result<Object<'js>> {
        let mut id = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let id =
            rquickjs::String::from_str(ctx.clone(), event.id.hyphenated().encode_lower(&mut id))?;
        let data = match event.content_type {
            ContentType::Json if event.data.is_empty() => {
                Payload::Json(Value::new_null(ctx.clone()))
            }
            ContentType::Json => match parse_json(ctx, &event.data)? {
                Some(data) => Payload::Json(data),
                // Not JSON after all (written by an embedding program): lossless as base64.
                None => Payload::Base64(BASE64.encode(&event.data)),
            },
            ContentType::Binary => Payload::Base64(BASE64.encode(&event.data)),
        };
        let metadata = if event.metadata.is_empty() {
            Payload::Json(Value::new_null(ctx.clone()))
        } else {
            match parse_json(ctx, &event.metadata)? {
                Some(metadata) => Payload::Json(metadata),
                None => Payload::Base64(BASE64.encode(&event.metadata)),
            }
        };
        let stream = self.stream(ctx, &event.stream)?;
        let event_type = self.event_type(ctx, &event.event_type)?;
        let timestamp = self.timestamp(ctx, event.timestamp_micros)?;
        let revision = number(ctx, event.revision);
        let position = number(ctx, event.position);
        if let (Payload::Json(data), Payload::Json(metadata)) = (&data, &metadata) {
            let mut args = Args::new(ctx.clone(), 8);
            args.push_arg(id)?;
            args.push_arg(stream)?;
            args.push_arg(revision)?;
            args.push_arg(position)?;
            args.push_arg(event_type)?;
            args.push_arg(timestamp)?;
            args.push_arg(data.clone())?;
            args.push_arg(metadata.clone())?;
            return self.make.clone().restore(ctx)?.call_arg(args);
        }
        // The same keys in the same order as the server's JSON.
        let object = Object::new(ctx.clone())?;
        object.set("id", id)?;
        object.set("stream", stream)?;
        object.set("revision", revision)?;
        object.set("position", position)?;
        object.set("type", event_type)?;
        object.set("timestamp", timestamp)?;
        match data {
            Payload::Json(data) => object.set("data", data)?,
            Payload::Base64(data) => object.set("data_base64", data)?,
        }
        match metadata {
            Payload::Json(metadata) => object.set("metadata", metadata)?,
            Payload::Base64(metadata) => {
                object.set("metadata", Value::new_null(ctx.clone()))?;
                object.set("metadata_base64", metadata)?;
            }
        }
        Ok(object)
    }

    fn stream<'js>(
        &mut self,
        ctx: &Ctx<'js>,
        stream: &str,
    ) -> rquickjs::Result<rquickjs::String<'js>> {
        if let Some((name, js)) = &self.stream {
            if name == stream {
                return js.clone().restore(ctx);
            }
        }
        let js = rquickjs::String::from_str(ctx.clone(), stream)?;
        self.stream = Some((stream.to_owned(), Persistent::save(ctx, js.clone())));
        Ok(js)
    }

    fn event_type<'js>(
        &mut self,
        ctx: &Ctx<'js>,
        event_type: &str,
    ) -> rquickjs::Result<rquickjs::String<'js>> {
        if let Some(js) = self.types.get(event_type) {
            return js.clone().restore(ctx);
        }
        let js = rquickjs::String::from_str(ctx.clone(), event_type)?;
        if self.types.len() < TYPE_CACHE {
            self.types
                .insert(event_type.to_owned(), Persistent::save(ctx, js.clone()));
        }
        Ok(js)
    }

    fn timestamp<'js>(
        &mut self,
        ctx: &Ctx<'js>,
        micros: i64,
    ) -> rquickjs::Result<rquickjs::String<'js>> {
        if let Some((cached, js)) = &self.timestamp {
            if *cached == micros {
                return js.clone().restore(ctx);
            }
        }
        let js = rquickjs::String::from_str(ctx.clone(), &format_timestamp(micros))?;
        self.timestamp = Some((micros, Persistent::save(ctx, js.clone())));
        Ok(js)
    }
}

/// A payload as the event object carries it.
enum Payload<'js> {
    Json(Value<'js>),
    Base64(String),
}

/// A JSON number for a log position or revision (exact up to 2^53).
fn number<'js>(ctx: &Ctx<'js>, n: u64) -> Value<'js> {
    match i32::try_from(n) {
        Ok(small) => Value::new_int(ctx.clone(), small),
        Err(_) => Value::new_float(ctx.clone(), n as f64),
    }
}

/// Parses `bytes` as JSON; `Ok(None)` when they are not JSON, or nested too deeply for the
/// engine's stack (the parser recurses; it gives up somewhere past a few thousand levels,
/// depending on `JsLimits::max_stack_bytes`). The store refuses payloads nested deeper than
/// 64 levels, but events appended before it did may be deeper: they are handed over as base64
/// rather than faulting every projection that reads past them, on every replay. Other failures
/// (out of memory) stay pending exceptions.
fn parse_json<'js>(ctx: &Ctx<'js>, bytes: &[u8]) -> rquickjs::Result<Option<Value<'js>>> {
    match ctx.json_parse(bytes) {
        Ok(value) => Ok(Some(value)),
        // A NUL byte: never valid JSON.
        Err(rquickjs::Error::InvalidString(_)) => Ok(None),
        Err(rquickjs::Error::Exception) => {
            let exception = ctx.catch();
            let syntax = exception
                .as_object()
                .and_then(|o| o.get::<_, Option<String>>("name").ok().flatten())
                .is_some_and(|name| name == "SyntaxError");
            // Only checked after a failure: the parse of ordinary payloads pays nothing. Data
            // the engine cannot parse within its stack is always deeper than the store's limit.
            if syntax || too_deep(bytes) {
                Ok(None)
            } else {
                Err(ctx.throw(exception))
            }
        }
        Err(e) => Err(e),
    }
}

/// True when `bytes` nest deeper than the store accepts (or are not JSON at all).
fn too_deep(bytes: &[u8]) -> bool {
    matches!(
        check_json(bytes, MAX_JSON_DEPTH),
        Err(JsonProblem::TooDeep { .. } | JsonProblem::Syntax { .. })
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use strata_store::projection::ProjectionEngine;
    use strata_store::{ContentType, RecordedEvent};

    use crate::{JsLimits, JsProjection};

    fn event(position: u64, data: impl Into<Vec<u8>>) -> RecordedEvent {
        RecordedEvent {
            id: uuid::Uuid::from_u128(u128::from(position) + 1),
            stream: "deep-1".into(),
            revision: position,
            position,
            event_type: "T".into(),
            timestamp_micros: 0,
            content_type: ContentType::Json,
            data: data.into(),
            metadata: Vec::new(),
        }
    }

    fn arrays(depth: usize) -> String {
        "[".repeat(depth) + &"]".repeat(depth)
    }

    /// Partitions and applies like the runner; the state of the partition afterwards.
    fn fold(p: &mut JsProjection, events: &[RecordedEvent]) -> serde_json::Value {
        let mut key = String::new();
        for e in events {
            key = p.partition_key(e).unwrap().unwrap();
            p.apply(&key, e, &mut Vec::new()).unwrap();
        }
        p.state(&key).unwrap().unwrap()
    }

    // Events written before the store checked JSON payloads may be nested deeper than the
    // engine's parser can go; they must not fault a projection that never reads them.
    #[test]
    fn payloads_too_deep_to_parse_are_handed_as_base64() {
        let deep = event(0, arrays(100_000));
        let mut deep_metadata = event(1, "{}");
        deep_metadata.metadata = format!(r#"{{"m":{}}}"#, arrays(100_000)).into_bytes();
        let fine = event(2, arrays(1000));

        let mut counter = JsProjection::compile(
            "fromAll().when({ $any: (s, e) => { s.n = (s.n || 0) + 1; } })",
            JsLimits::default(),
        )
        .unwrap();
        let events = [deep.clone(), deep_metadata.clone(), fine.clone()];
        assert_eq!(fold(&mut counter, &events), json!({ "n": 3 }));

        let mut reader = JsProjection::compile(
            "fromAll().partitionBy(e => e.stream).when({ $any: (s, e) => {
                s.seen = (s.seen || []);
                s.seen.push({ data: typeof e.data, base64: (e.data_base64 || '').length,
                              meta: e.metadata, meta64: (e.metadata_base64 || '').length,
                              fine: Array.isArray(e.data) });
            } })",
            JsLimits::default(),
        )
        .unwrap();
        let b64 = |n: usize| n.div_ceil(3) * 4;
        assert_eq!(
            fold(&mut reader, &events),
            json!({ "seen": [
                { "data": "undefined", "base64": b64(200_000), "meta": null, "meta64": 0, "fine": false },
                { "data": "object", "base64": 0, "meta": null, "meta64": b64(200_006), "fine": false },
                { "data": "object", "base64": 0, "meta": null, "meta64": 0, "fine": true },
            ] })
        );
    }

    #[test]
    fn a_small_stack_moves_the_cut_not_the_rule() {
        let limits = JsLimits {
            max_stack_bytes: 64 << 10,
            ..JsLimits::default()
        };
        let mut p = JsProjection::compile(
            "fromAll().when({ $any: (s, e) => { s.parsed = e.data !== undefined; } })",
            limits,
        )
        .unwrap();
        assert_eq!(
            fold(&mut p, &[event(0, arrays(50_000))]),
            json!({ "parsed": false })
        );
        assert_eq!(
            fold(&mut p, &[event(1, arrays(64))]),
            json!({ "parsed": true })
        );
    }
}
