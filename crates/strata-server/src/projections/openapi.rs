//! The `/projections` part of the OpenAPI document.

use serde_json::{json, Value};

use crate::openapi::responses;

fn projection_ok(description: &str) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Projection" } } } })
}

/// Adds the projection paths, the `Projection` schema and the `ScriptError` fields.
pub(crate) fn extend(doc: &mut Value) {
    let name = json!({ "name": "name", "in": "path", "required": true, "description": "Projection name: 1-255 bytes of UTF-8, no control characters, not starting with `$`.", "schema": { "type": "string", "minLength": 1 } });
    let action = |verb: &str, summary: &str| {
        json!({
            "parameters": [name.clone()],
            "post": {
                "operationId": format!("{verb}Projection"),
                "summary": summary,
                "responses": responses(json!({ "200": projection_ok("The projection after the action.") }), &[("400", "BadRequest"), ("404", "NotFound"), ("503", "Unavailable")])
            }
        })
    };
    let paths = json!({
        "/projections": {
            "get": {
                "operationId": "listProjections",
                "summary": "Every projection, by name.",
                "responses": responses(json!({ "200": { "description": "`{\"projections\": [...]}`.", "content": { "application/json": { "schema": { "type": "object", "required": ["projections"], "properties": { "projections": { "type": "array", "items": { "$ref": "#/components/schemas/Projection" } } } } } } } }), &[("400", "BadRequest"), ("503", "Unavailable")])
            }
        },
        "/projections/{name}": {
            "parameters": [name.clone()],
            "get": {
                "operationId": "getProjection",
                "summary": "One projection, with its source as `query`.",
                "responses": responses(json!({ "200": projection_ok("The projection.") }), &[("400", "BadRequest"), ("404", "NotFound"), ("503", "Unavailable")])
            },
            "put": {
                "operationId": "putProjection",
                "summary": "Create (201, running) or update (200) a projection from its JavaScript source. A different source starts a new generation that rebuilds from the start and emits again under new event ids (the one way to get fresh emits); the same source changes nothing. A refused script is 400 with `line`/`column` for syntax errors.",
                "requestBody": { "required": true, "content": { "application/javascript": { "schema": { "type": "string" } }, "text/javascript": { "schema": { "type": "string" } } } },
                "responses": responses(json!({ "200": projection_ok("Updated or unchanged."), "201": projection_ok("Created.") }), &[("400", "BadRequest"), ("413", "PayloadTooLarge"), ("415", "UnsupportedMediaType"), ("503", "Unavailable")])
            },
            "delete": {
                "operationId": "deleteProjection",
                "summary": "Delete a projection and its checkpoints (emitted events stay).",
                "responses": responses(json!({ "204": { "description": "Deleted." } }), &[("400", "BadRequest"), ("404", "NotFound"), ("503", "Unavailable")])
            }
        },
        "/projections/{name}/state": {
            "parameters": [name.clone(), { "name": "partition", "in": "query", "description": "A partition key (partitionBy result or stream of foreachStream). Without it: the state of an unpartitioned projection (null before its first event), or an object of every partition's state.", "schema": { "type": "string" } }],
            "get": {
                "operationId": "getProjectionState",
                "summary": "The projection's state as of its last applied batch.",
                "responses": responses(json!({ "200": { "description": "The state JSON.", "content": { "application/json": { "schema": {} } } } }), &[("400", "BadRequest"), ("404", "NotFound"), ("503", "Unavailable")])
            }
        },
        "/projections/{name}/stop": action("stop", "Stop (with a final checkpoint); a faulted projection becomes stopped."),
        "/projections/{name}/start": action("start", "Start; a faulted projection retries the event that failed."),
        "/projections/{name}/reset": action("reset", "Rebuild the state from the start as a new incarnation of the same generation: events it emitted before are not emitted again (same ids, deduplicated by the store).")
    });
    if let (Some(all), Value::Object(add)) = (
        doc.pointer_mut("/paths").and_then(Value::as_object_mut),
        paths,
    ) {
        all.extend(add);
    }
    let schema = json!({
        "type": "object",
        "required": ["name", "status", "position", "lag", "error"],
        "properties": {
            "name": { "type": "string" },
            "status": { "enum": ["running", "stopped", "faulted"] },
            "position": { "type": ["integer", "null"], "description": "Log position of the last event applied; null before any." },
            "lag": { "type": "integer", "description": "Log positions not yet examined (for fromStream: events of that stream not yet read)." },
            "error": { "description": "null unless faulted.", "oneOf": [ { "type": "null" }, { "type": "object", "required": ["message", "stack", "position"], "properties": { "message": { "type": "string" }, "stack": { "type": ["string", "null"] }, "position": { "type": ["integer", "null"], "description": "The failing event's log position (null when not at an event)." } } } ] },
            "events_processed": { "type": "integer" },
            "events_per_second": { "type": "number" },
            "partitioned": { "type": "boolean" },
            "partitions": { "type": "integer" },
            "checkpoint_position": { "type": ["integer", "null"] },
            "incarnation": { "type": "integer", "description": "Identity of the state: changes on reset and with the source." },
            "generation": { "type": "integer", "description": "Seed of emitted-event ids: changes with the source (or delete and re-create), not on reset." },
            "reads": { "type": "object", "required": ["kind"], "properties": { "kind": { "enum": ["all", "stream", "streams", "category"] }, "name": { "type": "string" }, "names": { "type": "array", "items": { "type": "string" } } } },
            "query": { "type": "string", "description": "The JavaScript source (GET one and PUT only)." }
        }
    });
    if let Some(schemas) = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    {
        schemas.insert("Projection".into(), schema);
    }
    if let Some(props) = doc
        .pointer_mut("/components/schemas/Error/properties")
        .and_then(Value::as_object_mut)
    {
        props.insert("line".into(), json!({ "type": "integer", "description": "Refused projection source: 1-based line of the syntax error." }));
        props.insert("column".into(), json!({ "type": "integer", "description": "Refused projection source: 1-based column, when known." }));
    }
}
