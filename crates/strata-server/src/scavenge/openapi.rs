//! The `/admin/scavenge` part of the OpenAPI document.

use serde_json::{json, Value};

use crate::openapi::responses;

/// Adds the scavenging paths, the `ScavengeStatus` schema and the `ScavengeRunning` response.
pub(crate) fn extend(doc: &mut Value) {
    let status = |description: &str| json!({ "description": description, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/ScavengeStatus" } } } });
    let paths = json!({
        "/admin/scavenge": {
            "post": {
                "operationId": "startScavenge",
                "summary": "Start a scavenge (admin): rewrite sealed segments without the events no read can return any more. Online and throttled.",
                "requestBody": { "required": false, "content": { "application/json": { "schema": {
                    "type": "object",
                    "additionalProperties": false,
                    "properties": { "max_mb_per_s": { "type": "number", "minimum": 0, "description": "Throttle: MiB read + written per second; 0 = unthrottled; absent = the server's default (`--scavenge-max-mb-per-s`)." } }
                } } } },
                "responses": responses(json!({ "202": status("Started: the status of the new run.") }), &[("400", "BadRequest"), ("409", "ScavengeRunning"), ("413", "PayloadTooLarge"), ("415", "UnsupportedMediaType"), ("503", "Unavailable")])
            },
            "get": {
                "operationId": "getScavenge",
                "summary": "The status of the last or current scavenge (admin).",
                "responses": responses(json!({ "200": status("The status.") }), &[("400", "BadRequest")])
            },
            "delete": {
                "operationId": "stopScavenge",
                "summary": "Stop a running scavenge (admin); answers once it stopped (a later run finishes the job). Without a running one, the status unchanged.",
                "responses": responses(json!({ "200": status("The status after the stop.") }), &[("400", "BadRequest")])
            }
        }
    });
    for (path, item) in paths.as_object().into_iter().flatten() {
        doc["paths"][path] = item.clone();
    }
    doc["components"]["responses"]["ScavengeRunning"] = json!({
        "description": "`conflict`: a scavenge is already running.",
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } }
    });
    doc["components"]["schemas"]["ScavengeStatus"] = json!({
        "type": "object",
        "required": ["status", "started", "finished", "segments_done", "segments_total", "bytes_before", "bytes_after", "bytes_reclaimed", "events_removed", "error"],
        "properties": {
            "status": { "type": "string", "enum": ["idle", "running", "stopped", "failed"], "description": "`idle`: none running (none ran yet, or the last one finished); `stopped`, `failed`: how the last one ended." },
            "started": { "type": ["string", "null"], "format": "date-time" },
            "finished": { "type": ["string", "null"], "format": "date-time" },
            "segments_done": { "type": "integer", "description": "Sealed segments processed so far." },
            "segments_total": { "type": "integer", "description": "Sealed segments this run considers." },
            "bytes_before": { "type": "integer", "description": "Bytes of those segments and their index files before the run." },
            "bytes_after": { "type": "integer", "description": "What they occupy now (done so far plus the untouched remainder)." },
            "bytes_reclaimed": { "type": "integer" },
            "events_removed": { "type": "integer" },
            "error": { "type": ["string", "null"], "description": "Why the run failed." }
        }
    });
}
