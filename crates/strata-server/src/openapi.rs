//! `GET /openapi.json`: an OpenAPI 3.1 description of every endpoint, parameter, body and error
//! the server answers. A test checks that its operations are exactly the router's routes.

use axum::extract::{RawQuery, State};
use axum::response::Response;
use serde_json::{json, Map, Value};

use crate::app::App;
use crate::auth::{Action, Principal};
use crate::error::Result;
use crate::query::Query;
use crate::response::json_response;

/// `GET /openapi.json`.
pub(crate) async fn serve(
    State(_app): State<App>,
    principal: Principal,
    RawQuery(raw_query): RawQuery,
) -> Result<Response> {
    principal.authorize(Action::ServerInfo)?;
    Query::parse(raw_query.as_deref(), &[])?;
    Ok(json_response(document().to_string().into_bytes()))
}

/// A reference to the shared response `name` (`#/components/responses/{name}`).
pub(crate) fn error_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/responses/{name}") })
}

/// The responses every authenticated operation may give, plus `extra` (status → response).
pub(crate) fn responses(ok: Value, extra: &[(&str, &str)]) -> Value {
    let mut r = match ok {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    for (status, name) in extra {
        r.insert((*status).to_owned(), error_ref(name));
    }
    r.insert("401".into(), error_ref("Unauthorized"));
    r.insert("403".into(), error_ref("Forbidden"));
    r.insert("500".into(), error_ref("Internal"));
    Value::Object(r)
}

fn param(name: &str) -> Value {
    json!({ "$ref": format!("#/components/parameters/{name}") })
}

fn json_body(schema: Value) -> Value {
    json!({ "application/json": { "schema": schema } })
}

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// The OpenAPI 3.1 document.
pub fn document() -> Value {
    let read_representations = json!({
        "200": {
            "description": "A page of events (`application/json`), a streamed replay of every matching event to the current end, one JSON event per line (`application/x-ndjson`), or a catch-up subscription (`text/event-stream`): history, then live events, each message `event: <type>`, `id: <revision or position>`, `data: <event JSON>`, with `: keepalive` comments at least every 15 s; a failed subscription ends with an `event: error` message.",
            "content": {
                "application/json": { "schema": schema_ref("Page") },
                "application/x-ndjson": { "schema": schema_ref("Event") },
                "text/event-stream": { "schema": { "type": "string" } }
            }
        }
    });
    let paths = json!({
        "/health": {
            "get": {
                "operationId": "health",
                "summary": "Liveness and writability. Open even when auth is on.",
                "security": [],
                "responses": {
                    "200": { "description": "Accepting writes.", "content": json_body(schema_ref("Health")) },
                    "503": { "description": "The store is read-only after a storage fault or damage in the open segment (`read_only`), damaged bytes were found in sealed data (`damaged`: reads of intact events and appends go on), or the disk is full (`disk_full`: reads go on, appends answer 507 until space is free). `damage` lists the damaged ranges.", "content": json_body(schema_ref("Health")) }
                }
            }
        },
        "/info": {
            "get": {
                "operationId": "info",
                "summary": "Version, data directory, last position, segments, bytes on disk, uptime.",
                "responses": responses(json!({ "200": { "description": "Server facts.", "content": json_body(schema_ref("Info")) } }), &[("400", "BadRequest")])
            }
        },
        "/metrics": {
            "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics (text exposition format 0.0.4).",
                "responses": responses(json!({ "200": { "description": "Metrics.", "content": { "text/plain": { "schema": { "type": "string" } } } } }), &[("400", "BadRequest")])
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This document.",
                "responses": responses(json!({ "200": { "description": "The OpenAPI 3.1 document.", "content": json_body(json!({ "type": "object" })) } }), &[("400", "BadRequest")])
            }
        },
        "/streams": {
            "get": {
                "operationId": "listStreams",
                "summary": "Live stream names with their last revision and position, sorted by name, paged. `$`-streams and deleted streams are not listed.",
                "parameters": [
                    { "name": "prefix", "in": "query", "description": "Only names starting with this.", "schema": { "type": "string" } },
                    { "name": "after", "in": "query", "description": "Exclusive start: the `next` of the previous page.", "schema": { "type": "string" } },
                    param("limit")
                ],
                "responses": responses(json!({ "200": { "description": "A page of streams.", "content": json_body(schema_ref("StreamList")) } }), &[("400", "BadRequest"), ("503", "Unavailable")])
            }
        },
        "/all": {
            "get": {
                "operationId": "readAll",
                "summary": "Read or subscribe to the whole log by position; the representation follows `Accept`.",
                "parameters": [
                    param("fromAll"), param("direction"), param("limit"),
                    { "name": "types", "in": "query", "description": "Comma-separated event types to keep.", "schema": { "type": "string" } },
                    { "name": "category", "in": "query", "description": "Keep events whose stream is in this category (the part of the name before the first `-`).", "schema": { "type": "string" } },
                    { "name": "stream_prefix", "in": "query", "description": "Keep events whose stream name starts with this.", "schema": { "type": "string" } },
                    { "name": "include_system", "in": "query", "description": "Include events of reserved `$`-streams (admin only).", "schema": { "type": "boolean", "default": false } },
                    { "name": "correlation_id", "in": "query", "description": "Keep the events of one flow: `metadata.correlation_id` equal to this. Answered from the correlation index in log order, without scanning the log; combinable with the other filters.", "schema": { "type": "string" } },
                    param("Accept"), param("Last-Event-ID")
                ],
                "responses": responses(read_representations.clone(), &[("400", "BadRequest"), ("503", "Unavailable")])
            }
        },
        "/streams/{stream}": {
            "parameters": [param("stream")],
            "get": {
                "operationId": "readStream",
                "summary": "Read or subscribe to one stream by revision; the representation follows `Accept`. A subscription to a stream not written yet waits for it.",
                "parameters": [param("fromStream"), param("direction"), param("limit"), param("Accept"), param("Last-Event-ID")],
                "responses": responses(read_representations, &[("400", "BadRequest"), ("404", "StreamNotFound"), ("410", "StreamDeleted"), ("503", "Unavailable")])
            },
            "post": {
                "operationId": "append",
                "summary": "Append one event or an array of events atomically (contiguous revisions, in order), once durable.",
                "parameters": [param("Expected-Revision"), param("Correlation-Id"), param("Causation-Id")],
                "requestBody": {
                    "required": true,
                    "content": json_body(json!({ "oneOf": [ schema_ref("NewEvent"), { "type": "array", "minItems": 1, "maxItems": 10000, "items": schema_ref("NewEvent") } ] }))
                },
                "responses": responses(json!({
                    "201": {
                        "description": "Appended.",
                        "headers": { "Location": { "description": "`/streams/{stream}/{first_revision}`", "schema": { "type": "string" } } },
                        "content": json_body(schema_ref("AppendResult"))
                    },
                    "200": {
                        "description": "Idempotent retry: every event id was already appended as this same run; nothing was written and this is the original result.",
                        "headers": { "Location": { "description": "`/streams/{stream}/{first_revision}`", "schema": { "type": "string" } } },
                        "content": json_body(schema_ref("AppendResult"))
                    }
                }), &[("400", "BadRequest"), ("409", "Conflict"), ("410", "StreamDeleted"), ("413", "PayloadTooLarge"), ("415", "UnsupportedMediaType"), ("503", "Unavailable"), ("507", "InsufficientStorage")])
            },
            "delete": {
                "operationId": "deleteStream",
                "summary": "Soft-delete a stream (reads give 410 until it is appended to again; revisions continue), or with `hard=true` tombstone it (never writable again; admin only).",
                "parameters": [
                    { "name": "hard", "in": "query", "schema": { "type": "boolean", "default": false } },
                    param("Expected-Revision")
                ],
                "responses": responses(json!({ "204": { "description": "Deleted." } }), &[("400", "BadRequest"), ("404", "StreamNotFound"), ("409", "Conflict"), ("410", "StreamDeleted"), ("503", "Unavailable"), ("507", "InsufficientStorage")])
            }
        },
        "/streams/{stream}/metadata": {
            "parameters": [param("stream")],
            "get": {
                "operationId": "getStreamMetadata",
                "summary": "The stream's metadata (`{}` when never set).",
                "responses": responses(json!({ "200": { "description": "The metadata.", "content": json_body(schema_ref("StreamMetadata")) } }), &[("400", "BadRequest"), ("410", "StreamDeleted"), ("503", "Unavailable")])
            },
            "put": {
                "operationId": "putStreamMetadata",
                "summary": "Replace the stream's metadata; stream reads never return events beyond its limits.",
                "requestBody": { "required": true, "content": json_body(schema_ref("StreamMetadata")) },
                "responses": responses(json!({ "200": { "description": "The metadata as stored.", "content": json_body(schema_ref("StreamMetadata")) } }), &[("400", "BadRequest"), ("410", "StreamDeleted"), ("413", "PayloadTooLarge"), ("415", "UnsupportedMediaType"), ("503", "Unavailable"), ("507", "InsufficientStorage")])
            }
        },
        "/events/{id}/causes": {
            "parameters": [param("eventId")],
            "get": {
                "operationId": "eventCauses",
                "summary": "The causation chain behind an event: the event its `metadata.causation_id` names, that event's cause, and so on, root first. Found through the correlation index: only events carrying a `correlation_id` or `causation_id` are found by id; the walk stops at a cause outside every flow (`unresolved`) or after `max` events (`truncated`).",
                "parameters": [param("walkMax")],
                "responses": responses(json!({ "200": { "description": "The causes, in log order.", "content": json_body(schema_ref("CausalChain")) } }), &[("400", "BadRequest"), ("404", "NotFound"), ("503", "Unavailable")])
            }
        },
        "/events/{id}/effects": {
            "parameters": [param("eventId")],
            "get": {
                "operationId": "eventEffects",
                "summary": "The events caused by an event, directly (their `metadata.causation_id` is its id) or through other effects, in log order, at most `max` (`truncated`). Found through the correlation index.",
                "parameters": [param("walkMax")],
                "responses": responses(json!({ "200": { "description": "The effects, in log order.", "content": json_body(schema_ref("CausalChain")) } }), &[("400", "BadRequest"), ("503", "Unavailable")])
            }
        },
        "/streams/{stream}/{revision}": {
            "parameters": [param("stream"), { "name": "revision", "in": "path", "required": true, "schema": { "type": "integer", "minimum": 0 } }],
            "get": {
                "operationId": "readEvent",
                "summary": "One event by revision.",
                "responses": responses(json!({ "200": { "description": "The event.", "content": json_body(schema_ref("Event")) } }), &[("400", "BadRequest"), ("404", "NotFound"), ("410", "StreamDeleted"), ("503", "Unavailable")])
            }
        }
    });

    let group_param = json!({ "name": "group", "in": "path", "required": true, "description": "Group name: 1-255 bytes of UTF-8, no control characters, no `$` (percent-encoded).", "schema": { "type": "string", "minLength": 1, "maxLength": 255 } });
    let group_paths = json!({
        "/groups": {
            "get": {
                "operationId": "listGroups",
                "summary": "Every consumer group the token may read, by name, with settings and state.",
                "responses": responses(json!({ "200": { "description": "The groups.", "content": json_body(json!({ "type": "object", "required": ["groups"], "properties": { "groups": { "type": "array", "items": schema_ref("Group") } } })) } }), &[("400", "BadRequest"), ("503", "Unavailable")])
            }
        },
        "/groups/{group}": {
            "parameters": [group_param.clone()],
            "put": {
                "operationId": "putGroup",
                "summary": "Create a consumer group (201), or confirm it (200 when identical). Only `ack_timeout_ms` and `max_deliveries` of an existing group may change (200); another source, from or ordering is 409 `conflict`. `from: \"end\"` is resolved to the source's head at creation. Role: write.",
                "requestBody": { "required": true, "content": json_body(schema_ref("GroupSettings")) },
                "responses": responses(json!({
                    "201": { "description": "Created.", "content": json_body(schema_ref("Group")) },
                    "200": { "description": "Identical, or its mutable settings updated.", "content": json_body(schema_ref("Group")) }
                }), &[("400", "BadRequest"), ("409", "GroupConflict"), ("413", "PayloadTooLarge"), ("415", "UnsupportedMediaType"), ("503", "Unavailable")])
            },
            "get": {
                "operationId": "getGroup",
                "summary": "A consumer group's settings and state. Role: read.",
                "responses": responses(json!({ "200": { "description": "The group.", "content": json_body(schema_ref("Group")) } }), &[("400", "BadRequest"), ("404", "NotFound"), ("503", "Unavailable")])
            },
            "delete": {
                "operationId": "deleteGroup",
                "summary": "Delete a consumer group and its durable state; pending polls answer 404. A group created again with the same name starts afresh (old ack ids are unknown to it). Role: write.",
                "responses": responses(json!({ "204": { "description": "Deleted." } }), &[("400", "BadRequest"), ("404", "NotFound"), ("503", "Unavailable")])
            }
        },
        "/groups/{group}/poll": {
            "parameters": [group_param.clone()],
            "post": {
                "operationId": "pollGroup",
                "summary": "Take up to `max` events, long-polling up to `wait_ms` while none is ready. Each event is in flight with one consumer at a time; not acked within `ack_timeout_ms` it is redelivered with `delivery` + 1. Role: read.",
                "parameters": [
                    { "name": "max", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 1000, "default": 100 } },
                    { "name": "wait_ms", "in": "query", "schema": { "type": "integer", "minimum": 0, "maximum": 60000, "default": 5000 } }
                ],
                "responses": responses(json!({ "200": { "description": "Messages (empty when none arrived in time or the server is shutting down).", "content": json_body(schema_ref("PollResult")) } }), &[("400", "BadRequest"), ("404", "NotFound"), ("503", "Unavailable")])
            }
        },
        "/groups/{group}/ack": {
            "parameters": [group_param.clone()],
            "post": {
                "operationId": "ackGroup",
                "summary": "Ack events: each ack id names an event, which is done from now on (also when it was redelivered meanwhile). Acking a done event is a no-op (`ignored`). All-or-nothing: unknown ack ids are a 400 listing them in `unknown_ack_ids`. Role: read.",
                "requestBody": { "required": true, "content": json_body(json!({ "type": "object", "additionalProperties": false, "required": ["ack_ids"], "properties": { "ack_ids": { "type": "array", "minItems": 1, "maxItems": 10000, "items": { "type": "string" } } } })) },
                "responses": responses(json!({ "200": { "description": "Settled.", "content": json_body(json!({ "type": "object", "required": ["acked", "ignored"], "properties": { "acked": { "type": "integer" }, "ignored": { "type": "integer" } } })) } }), &[("400", "BadRequest"), ("404", "NotFound"), ("413", "PayloadTooLarge"), ("415", "UnsupportedMediaType"), ("503", "Unavailable")])
            }
        },
        "/groups/{group}/nack": {
            "parameters": [group_param.clone()],
            "post": {
                "operationId": "nackGroup",
                "summary": "Nack deliveries: `retry` (default; parked once `max_deliveries` is reached), `park`, or `skip` (done without processing). Applies only to the delivery currently in flight; others are `ignored`. A park is durable before the answer. Role: read.",
                "requestBody": { "required": true, "content": json_body(json!({ "type": "object", "additionalProperties": false, "required": ["ack_ids"], "properties": { "ack_ids": { "type": "array", "minItems": 1, "maxItems": 10000, "items": { "type": "string" } }, "action": { "enum": ["retry", "park", "skip"], "default": "retry" } } })) },
                "responses": responses(json!({ "200": { "description": "Settled.", "content": json_body(json!({ "type": "object", "required": ["nacked", "ignored"], "properties": { "nacked": { "type": "integer" }, "ignored": { "type": "integer" } } })) } }), &[("400", "BadRequest"), ("404", "NotFound"), ("413", "PayloadTooLarge"), ("415", "UnsupportedMediaType"), ("503", "Unavailable")])
            }
        },
        "/groups/{group}/parked": {
            "parameters": [group_param.clone()],
            "get": {
                "operationId": "listParked",
                "summary": "Parked (dead-lettered) events by cursor, paged. Role: read.",
                "parameters": [
                    { "name": "max", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 10000, "default": 100 } },
                    { "name": "after", "in": "query", "description": "Exclusive start: the `next` of the previous page.", "schema": { "type": "integer", "minimum": 0 } }
                ],
                "responses": responses(json!({ "200": { "description": "A page of parked events.", "content": json_body(json!({ "type": "object", "required": ["parked", "next"], "properties": { "parked": { "type": "array", "items": schema_ref("ParkedEvent") }, "next": { "type": ["integer", "null"] } } })) } }), &[("400", "BadRequest"), ("404", "NotFound"), ("503", "Unavailable")])
            }
        },
        "/groups/{group}/parked/replay": {
            "parameters": [group_param],
            "post": {
                "operationId": "replayParked",
                "summary": "Re-queue parked events (oldest first, at most `max`, default and limit the group window) with their delivery count reset; durable before the answer. Events that can no longer be read (stream deleted or truncated) are dropped and counted in `missing`. Body: empty or `{}`. Role: write.",
                "parameters": [{ "name": "max", "in": "query", "schema": { "type": "integer", "minimum": 1 } }],
                "responses": responses(json!({ "200": { "description": "Replayed.", "content": json_body(json!({ "type": "object", "required": ["replayed", "missing", "remaining"], "properties": { "replayed": { "type": "integer" }, "missing": { "type": "integer" }, "remaining": { "type": "integer", "description": "Parked events left (call again to replay more)." } } })) } }), &[("400", "BadRequest"), ("404", "NotFound"), ("503", "Unavailable")])
            }
        }
    });
    let mut paths = paths;
    if let (Value::Object(p), Value::Object(g)) = (&mut paths, group_paths) {
        p.extend(g);
    }

    let error_codes = [
        "invalid_request",
        "unauthorized",
        "forbidden",
        "stream_not_found",
        "not_found",
        "method_not_allowed",
        "wrong_expected_revision",
        "duplicate_event_id",
        "conflict",
        "stream_deleted",
        "payload_too_large",
        "unsupported_media_type",
        "unavailable",
        "insufficient_storage",
        "corrupt",
        "internal",
    ];
    let damage_list = json!({
        "type": "array",
        "description": "Each damaged byte range found, with the log positions (`to` exclusive) whose events it held, when known.",
        "items": {
            "type": "object",
            "required": ["file", "offset", "length"],
            "properties": {
                "file": { "type": "string" },
                "offset": { "type": "integer" },
                "length": { "type": "integer" },
                "positions": { "type": "object", "properties": { "from": { "type": "integer" }, "to": { "type": "integer" } } }
            }
        }
    });
    let error_response = |description: &str| json!({ "description": description, "content": json_body(schema_ref("Error")) });

    let mut doc = json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Strata HTTP API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "An append-only event store. Every non-2xx response has the body `{\"error\": <code>, \"message\": <text>}` plus the extra fields of its code. Unknown paths answer 404 `not_found`, known paths with another method 405 `method_not_allowed`."
        },
        "servers": [{ "url": "http://127.0.0.1:2113" }],
        "security": [{ "bearer": [] }],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": { "type": "http", "scheme": "bearer", "description": "Required when the server has tokens configured (roles admin, write, read; optionally limited to stream prefixes)." }
            },
            "parameters": {
                "stream": { "name": "stream", "in": "path", "required": true, "description": "Stream name: 1-255 bytes of UTF-8, no control characters (percent-encoded). Names starting with `$` are reserved: writing them is 400.", "schema": { "type": "string", "minLength": 1 } },
                "fromStream": { "name": "from", "in": "query", "description": "Revision to start at (inclusive), or `start` / `end`. Default: `start` forward, `end` backward.", "schema": { "oneOf": [ { "type": "integer", "minimum": 0 }, { "enum": ["start", "end"] } ] } },
                "fromAll": { "name": "from", "in": "query", "description": "Position to start at (inclusive), or `start` / `end`. Default: `start` forward, `end` backward.", "schema": { "oneOf": [ { "type": "integer", "minimum": 0 }, { "enum": ["start", "end"] } ] } },
                "direction": { "name": "direction", "in": "query", "description": "Read direction; subscriptions are forward only.", "schema": { "enum": ["forward", "backward"], "default": "forward" } },
                "limit": { "name": "limit", "in": "query", "description": "Most items in a JSON page (NDJSON and SSE are not capped).", "schema": { "type": "integer", "minimum": 1, "maximum": 10000, "default": 100 } },
                "Accept": { "name": "Accept", "in": "header", "description": "`application/json` (default), `application/x-ndjson` or `text/event-stream`.", "schema": { "type": "string" } },
                "Last-Event-ID": { "name": "Last-Event-ID", "in": "header", "description": "Subscriptions: resume right after this id (overrides `from`).", "schema": { "type": "integer", "minimum": 0 } },
                "Expected-Revision": { "name": "Expected-Revision", "in": "header", "description": "`any` (default), `no_stream`, `stream_exists`, or the stream's exact last revision.", "schema": { "oneOf": [ { "enum": ["any", "no_stream", "stream_exists"] }, { "type": "integer", "minimum": 0 } ] } }
            },
            "responses": {
                "BadRequest": error_response("`invalid_request`: malformed JSON, bad field, bad name, bad query parameter or header."),
                "Unauthorized": error_response("`unauthorized`: auth is on and the bearer token is missing or unknown."),
                "Forbidden": error_response("`forbidden`: the token may not do this."),
                "StreamNotFound": error_response("`stream_not_found`: the stream was never written."),
                "NotFound": error_response("`stream_not_found` (the stream was never written) or `not_found` (no event at this revision)."),
                "Conflict": error_response("`wrong_expected_revision` (with `expected` as sent and `actual`: the last revision or `no_stream`), or `duplicate_event_id` (some ids of the append already exist in the stream, not as this same run)."),
                "StreamDeleted": error_response("`stream_deleted`: the stream was deleted."),
                "GroupConflict": error_response("`conflict`: the group exists with another source, from or ordering."),
                "PayloadTooLarge": error_response("`payload_too_large`: the body (16 MiB), one event (4 MiB) or the event count (10,000) is over the limit."),
                "UnsupportedMediaType": error_response("`unsupported_media_type`: the body must be `application/json`."),
                "InsufficientStorage": error_response("`insufficient_storage`: the disk is full; nothing was written. Appends succeed again by themselves once space is free."),
                "Unavailable": error_response("`unavailable`: the store is read-only after a storage fault, or the server is shutting down."),
                "Internal": error_response("`corrupt`: the request needs an event whose bytes on disk are damaged (with `file`, `offset`, and `position` where known; an NDJSON or SSE response that reaches it ends with this error instead), or `internal`: an unexpected failure.")
            },
            "schemas": {
                "Event": {
                    "type": "object",
                    "required": ["id", "stream", "revision", "position", "type", "timestamp", "metadata"],
                    "properties": {
                        "id": { "type": "string", "format": "uuid" },
                        "stream": { "type": "string" },
                        "revision": { "type": "integer", "minimum": 0, "description": "0-based index in its stream, dense." },
                        "position": { "type": "integer", "minimum": 0, "description": "0-based index in the whole log, dense, increasing in append order." },
                        "type": { "type": "string" },
                        "timestamp": { "type": "string", "format": "date-time", "description": "RFC 3339 UTC with microseconds." },
                        "data": { "description": "Any JSON, exactly as appended (absent for binary events)." },
                        "data_base64": { "type": "string", "contentEncoding": "base64", "description": "Binary payload (instead of `data`)." },
                        "metadata": { "description": "Any JSON, exactly as appended; null when absent." }
                    }
                },
                "NewEvent": {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["type"],
                    "properties": {
                        "id": { "type": "string", "format": "uuid", "description": "Makes retries idempotent; generated when absent." },
                        "type": { "type": "string", "minLength": 1, "maxLength": 255 },
                        "data": { "description": "Any JSON value." },
                        "data_base64": { "type": "string", "contentEncoding": "base64", "description": "A binary payload; at most one of data / data_base64." },
                        "metadata": { "description": "Any JSON value." }
                    }
                },
                "AppendResult": {
                    "type": "object",
                    "required": ["stream", "first_revision", "last_revision", "first_position", "last_position"],
                    "properties": {
                        "stream": { "type": "string" },
                        "first_revision": { "type": "integer" },
                        "last_revision": { "type": "integer" },
                        "first_position": { "type": "integer" },
                        "last_position": { "type": "integer" }
                    }
                },
                "Page": {
                    "type": "object",
                    "required": ["events", "next", "end"],
                    "properties": {
                        "events": { "type": "array", "items": schema_ref("Event") },
                        "next": { "type": ["integer", "null"], "description": "The `from` of the next page; forward reads at the end give the value to poll from; null when a backward read reached the start." },
                        "end": { "type": "boolean", "description": "No more events in that direction right now." }
                    }
                },
                "StreamList": {
                    "type": "object",
                    "required": ["streams", "next"],
                    "properties": {
                        "streams": { "type": "array", "items": {
                            "type": "object",
                            "required": ["name", "last_revision", "last_position"],
                            "properties": { "name": { "type": "string" }, "last_revision": { "type": "integer" }, "last_position": { "type": "integer" } }
                        } },
                        "next": { "type": ["string", "null"], "description": "Pass as `after` for the next page." }
                    }
                },
                "StreamMetadata": {
                    "type": "object",
                    "additionalProperties": false,
                    "properties": {
                        "max_count": { "type": "integer", "minimum": 0 },
                        "max_age_seconds": { "type": "integer", "minimum": 0 },
                        "truncate_before": { "type": "integer", "minimum": 0 },
                        "custom": { "description": "Any JSON." }
                    }
                },
                "GroupSettings": {
                    "type": "object",
                    "additionalProperties": false,
                    "required": ["source"],
                    "properties": {
                        "source": { "type": "string", "description": "`$all` (user events of the whole log), `category:<name>`, or a stream name." },
                        "from": { "oneOf": [ { "enum": ["start", "end"] }, { "type": "integer", "minimum": 0 } ], "default": "start", "description": "Where the group starts: a stream revision for a stream source, a log position otherwise." },
                        "ack_timeout_ms": { "type": "integer", "minimum": 1, "maximum": 86400000, "default": 30000 },
                        "max_deliveries": { "type": "integer", "minimum": 1, "maximum": 1000000, "default": 5 },
                        "ordering": { "enum": ["none", "per_stream"], "default": "none" }
                    }
                },
                "Group": {
                    "type": "object",
                    "required": ["name", "source", "from", "ack_timeout_ms", "max_deliveries", "ordering", "settings", "start", "checkpoint", "in_flight", "buffered", "parked", "replaying", "lag", "error", "stats"],
                    "properties": {
                        "name": { "type": "string" },
                        "source": { "type": "string" },
                        "from": { "oneOf": [ { "enum": ["start", "end"] }, { "type": "integer" } ] },
                        "ack_timeout_ms": { "type": "integer" },
                        "max_deliveries": { "type": "integer" },
                        "ordering": { "enum": ["none", "per_stream"] },
                        "settings": schema_ref("GroupSettings"),
                        "start": { "type": "integer", "description": "The resolved start cursor." },
                        "checkpoint": { "type": "integer", "description": "Every cursor below this is done (acked, skipped or parked)." },
                        "in_flight": { "type": "integer" },
                        "buffered": { "type": "integer", "description": "Events in memory waiting to be handed out." },
                        "parked": { "type": "integer" },
                        "replaying": { "type": "integer", "description": "Replayed parked events not acked yet." },
                        "lag": { "type": "integer", "description": "Source head cursor minus checkpoint (log positions for `$all` and category sources, so other streams' events count too)." },
                        "error": { "type": ["string", "null"], "description": "Why the group cannot read its source now (e.g. the stream is deleted)." },
                        "waiting_polls": { "type": "integer", "description": "Long polls waiting for events right now." },
                        "stats": { "type": "object", "description": "Counters since the server started: deliveries, acks, nacks, parks, redeliveries." }
                    }
                },
                "PollResult": {
                    "type": "object",
                    "required": ["messages"],
                    "properties": {
                        "messages": { "type": "array", "items": {
                            "type": "object",
                            "required": ["ack_id", "delivery", "event"],
                            "properties": {
                                "ack_id": { "type": "string", "description": "Opaque." },
                                "delivery": { "type": "integer", "minimum": 1 },
                                "event": schema_ref("Event")
                            }
                        } }
                    }
                },
                "ParkedEvent": {
                    "type": "object",
                    "required": ["cursor", "stream", "revision", "position", "event_id", "type", "delivery", "reason", "parked_at"],
                    "properties": {
                        "cursor": { "type": "integer" },
                        "stream": { "type": "string" },
                        "revision": { "type": "integer" },
                        "position": { "type": "integer" },
                        "event_id": { "type": "string", "format": "uuid" },
                        "type": { "type": "string" },
                        "delivery": { "type": "integer" },
                        "reason": { "enum": ["max_deliveries", "nacked", "corrupt"] },
                        "parked_at": { "type": "string", "format": "date-time" },
                        "file": { "type": "string", "description": "`corrupt`: the damaged file (then what the damage hides is null: stream, revision, type, event_id)." },
                        "offset": { "type": "integer", "description": "`corrupt`: the byte offset of the damage in `file`." }
                    }
                },
                "Health": {
                    "type": "object",
                    "required": ["status"],
                    "properties": {
                        "status": { "enum": ["ok", "read_only", "damaged", "disk_full"] },
                        "error": { "enum": ["unavailable", "corrupt", "insufficient_storage"] },
                        "message": { "type": "string" },
                        "damage": damage_list
                    }
                },
                "Info": {
                    "type": "object",
                    "properties": {
                        "version": { "type": "string" },
                        "data_dir": { "type": "string" },
                        "next_position": { "type": "integer" },
                        "last_position": { "type": ["integer", "null"] },
                        "segment_count": { "type": "integer" },
                        "bytes_on_disk": { "type": "integer" },
                        "uptime_seconds": { "type": "integer" },
                        "fsync": { "type": "string" },
                        "status": { "enum": ["ok", "read_only", "damaged", "disk_full"] },
                        "read_only_reason": { "type": ["string", "null"] },
                        "open_subscriptions": { "type": "integer" }
                    }
                },
                "Error": {
                    "type": "object",
                    "required": ["error", "message"],
                    "properties": {
                        "error": { "enum": error_codes },
                        "message": { "type": "string" },
                        "expected": { "description": "wrong_expected_revision: the expectation as sent." },
                        "actual": { "description": "wrong_expected_revision: the last revision, or \"no_stream\"." },
                        "stream": { "type": "string" },
                        "id": { "type": "string", "format": "uuid", "description": "duplicate_event_id: one of the ids that exists." },
                        "unknown_ack_ids": { "type": "array", "items": { "type": "string" }, "description": "invalid_request from an ack or nack: the ack ids the group does not know (nothing was acked)." },
                        "file": { "type": "string", "description": "corrupt: the damaged file." },
                        "offset": { "type": "integer", "description": "corrupt: the byte offset of the damaged frame or structure in `file`." },
                        "position": { "type": "integer", "description": "corrupt: the log position of the damaged event, when known." }
                    }
                }
            }
        }
    });
    correlation_components(&mut doc);
    crate::projections::openapi::extend(&mut doc);
    crate::scavenge::openapi::extend(&mut doc);
    doc
}

/// The components of correlation and causation (a separate `json!`: one macro call that large
/// exceeds the recursion limit).
fn correlation_components(doc: &mut Value) {
    let params = json!({
                "Correlation-Id": { "name": "Correlation-Id", "in": "header", "description": "Fills `metadata.correlation_id` of every event of the append that lacks it; each event's metadata must then be absent or a JSON object (else 400).", "schema": { "type": "string", "minLength": 1 } },
                "Causation-Id": { "name": "Causation-Id", "in": "header", "description": "Fills `metadata.causation_id` (the id of the event that caused these) of every event of the append that lacks it; each event's metadata must then be absent or a JSON object (else 400).", "schema": { "type": "string", "minLength": 1 } },
                "eventId": { "name": "id", "in": "path", "required": true, "description": "An event id (UUID).", "schema": { "type": "string", "format": "uuid" } },
                "walkMax": { "name": "max", "in": "query", "description": "Most events the walk returns.", "schema": { "type": "integer", "minimum": 1, "maximum": 1000, "default": 100 } }
    });
    for (name, value) in params.as_object().into_iter().flatten() {
        doc["components"]["parameters"][name] = value.clone();
    }
    doc["components"]["schemas"]["CausalChain"] = json!({
        "type": "object",
        "required": ["events", "truncated", "unresolved"],
        "properties": {
            "events": { "type": "array", "items": schema_ref("Event"), "description": "In log order." },
            "truncated": { "type": "boolean", "description": "The walk stopped at `max` events with more to follow." },
            "unresolved": { "type": ["string", "null"], "description": "Causes: the `causation_id` at which the walk stopped because no indexed event has that id." }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// The document describes exactly the router's routes.
    #[test]
    fn every_route_is_documented_and_vice_versa() {
        let doc = document();
        let mut documented = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().into_iter().flatten() {
            for (method, _) in item.as_object().into_iter().flatten() {
                if method != "parameters" {
                    documented.insert((method.to_uppercase(), path.clone()));
                }
            }
        }
        let served: BTreeSet<(String, String)> = crate::app::route_table()
            .into_iter()
            .map(|(m, p)| (m.to_owned(), p.to_owned()))
            .collect();
        assert_eq!(documented, served);
    }

    /// Every `$ref` points at something that exists.
    #[test]
    fn references_resolve() {
        let doc = document();
        let mut refs = Vec::new();
        collect_refs(&doc, &mut refs);
        assert!(!refs.is_empty());
        for r in refs {
            let pointer = r.trim_start_matches('#');
            assert!(doc.pointer(pointer).is_some(), "dangling $ref {r}");
        }
    }

    fn collect_refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    if k == "$ref" {
                        if let Value::String(s) = v {
                            out.push(s.clone());
                        }
                    } else {
                        collect_refs(v, out);
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|v| collect_refs(v, out)),
            _ => {}
        }
    }
}
