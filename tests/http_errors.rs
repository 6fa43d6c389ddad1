//! End-to-end: every error of docs/http-api.md's table with its exact status and JSON shape
//! (`{"error", "message", ...}`, `Content-Type: application/json`), the body limits (413, also
//! for a body that is announced but never sent), 415, and bearer-token authentication (401 /
//! 403, `--auth-token` and a tokens file with roles and stream prefixes) — against the real
//! `strata` binary.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use strata_suite::{Response, TestServer};

#[test]
fn malformed_requests_are_400_invalid_request() {
    let server = TestServer::start();
    let c = server.client();
    c.append("err-1", &json!([{"type": "A"}, {"type": "B"}]));
    let long_name = "n".repeat(256);
    let long_type = "t".repeat(256);

    // Bodies.
    let bodies: Vec<(&str, String)> = vec![
        ("malformed JSON", r#"{"type": "A""#.into()),
        ("trailing garbage", r#"{"type": "A"} x"#.into()),
        ("empty body", String::new()),
        ("a number", "42".into()),
        ("a string", r#""A""#.into()),
        ("null", "null".into()),
        ("empty batch", "[]".into()),
        ("unknown field", r#"{"type": "A", "colour": "red"}"#.into()),
        ("no type", r#"{"data": {}}"#.into()),
        ("empty type", r#"{"type": ""}"#.into()),
        ("type of 256 bytes", format!(r#"{{"type": "{long_type}"}}"#)),
        ("type not a string", r#"{"type": ["A"]}"#.into()),
        ("id not a UUID", r#"{"id": "42", "type": "A"}"#.into()),
        ("id not a string", r#"{"id": 42, "type": "A"}"#.into()),
        (
            "data and data_base64",
            r#"{"type": "A", "data": {}, "data_base64": "AAAA"}"#.into(),
        ),
        (
            "bad base64",
            r#"{"type": "A", "data_base64": "%%%"}"#.into(),
        ),
        (
            "data_base64 not a string",
            r#"{"type": "A", "data_base64": 5}"#.into(),
        ),
    ];
    for (what, body) in &bodies {
        c.post_json("/streams/err-1", body)
            .assert_error_for(what, 400, "invalid_request");
    }
    // Not UTF-8.
    c.request(
        "POST",
        "/streams/err-1",
        &[("Content-Type", "application/json")],
        Some(b"{\"type\": \"\xff\xfe\"}"),
    )
    .assert_error(400, "invalid_request");

    // Stream names: control characters, too long, reserved `$` (for appends).
    for name in [
        "a%01b",
        "tab%09x",
        "nl%0A",
        &long_name,
        "%24all",
        "%24%24err-1",
        "%24",
    ] {
        let reply = c.post_json(&format!("/streams/{name}"), r#"{"type": "A"}"#);
        assert_eq!(reply.status, 400, "append to {name:?}: {}", reply.text());
        reply.assert_error(400, "invalid_request");
    }
    for name in ["a%01b", &long_name] {
        c.get(&format!("/streams/{name}"))
            .assert_error(400, "invalid_request");
    }
    // Not UTF-8 in the name.
    c.post_json("/streams/a%FFb", r#"{"type": "A"}"#)
        .assert_error(400, "invalid_request");
    // A 255-byte name is fine.
    c.append(&"n".repeat(255), &json!({"type": "A"}));

    // Headers.
    for bad in ["banana", "-1", "1.0", "", "NO_STREAM"] {
        let reply = c.post_json_with(
            "/streams/err-1",
            &[("Expected-Revision", bad)],
            r#"{"type": "A"}"#,
        );
        assert_eq!(
            reply.status,
            400,
            "Expected-Revision {bad:?}: {}",
            reply.text()
        );
        reply.assert_error(400, "invalid_request");
    }

    // Query parameters.
    for q in [
        "/streams/err-1?limit=0",
        "/streams/err-1?limit=10001",
        "/streams/err-1?limit=many",
        "/streams/err-1?direction=sideways",
        "/streams/err-1?direction=",
        "/streams/err-1?from=-1",
        "/streams/err-1?from=first",
        "/streams/err-1?from=1.5",
        "/streams/err-1?limt=5",
        "/streams/err-1?limit=1&limit=2",
        "/all?limit=0",
        "/all?limit=10001",
        "/all?from=last",
        "/all?direction=up",
        "/all?include_system=maybe",
        "/all?colour=red",
        "/streams?limit=0",
        "/streams?limit=10001",
        "/streams?page=2",
        "/streams/err-1/metadata?x=1",
    ] {
        c.get(q).assert_error_for(q, 400, "invalid_request");
    }
    c.delete("/streams/err-1?hard=perhaps", &[])
        .assert_error(400, "invalid_request");
    // SSE must be forward; Last-Event-ID must be an id.
    c.get_with(
        "/streams/err-1?direction=backward",
        &[("Accept", "text/event-stream")],
    )
    .assert_error(400, "invalid_request");
    c.get_with(
        "/all?direction=backward",
        &[("Accept", "text/event-stream")],
    )
    .assert_error(400, "invalid_request");
    c.get_with(
        "/all",
        &[("Accept", "text/event-stream"), ("Last-Event-ID", "abc")],
    )
    .assert_error(400, "invalid_request");

    // Nothing of the above was written.
    assert_eq!(c.read_stream("err-1").len(), 2);
    assert_eq!(c.ndjson("/all").len(), 3);
}

#[test]
fn not_found_is_json_for_streams_events_and_unknown_routes() {
    let server = TestServer::start();
    let c = server.client();
    c.append("nf-1", &json!({"type": "A"}));
    c.get("/streams/never-1")
        .assert_error(404, "stream_not_found");
    c.get_with("/streams/never-1", &[("Accept", "application/x-ndjson")])
        .assert_error(404, "stream_not_found");
    c.get("/streams/never-1/0")
        .assert_error(404, "stream_not_found");
    c.delete("/streams/never-1", &[])
        .assert_error(404, "stream_not_found");
    c.get("/streams/nf-1/1").assert_error(404, "not_found");
    for path in [
        "/nope",
        "/",
        "/streams/nf-1/0/extra",
        "/all/x",
        "/groups/g",
        "/groups/g/parked",
        "/projections/p",
        "/projections/p/state",
        "/api/v1/streams",
    ] {
        c.get(path).assert_error_for(path, 404, "not_found");
    }
    c.post_json("/nope", "{}").assert_error(404, "not_found");
    // Group actions on a group that does not exist.
    c.post_json("/groups/g/ack", r#"{"ack_ids": ["x"]}"#)
        .assert_error(404, "not_found");
    // A known path with another method: 405 with Allow (docs/http-api.md).
    let reply = c.request("PATCH", "/streams/nf-1", &[], None);
    reply.assert_error(405, "method_not_allowed");
    assert!(
        reply.header("allow").is_some_and(|a| a.contains("POST")),
        "{:?}",
        reply.headers
    );
    c.request(
        "POST",
        "/all",
        &[("Content-Type", "application/json")],
        Some(b"{}"),
    )
    .assert_error(405, "method_not_allowed");
}

#[test]
fn wrong_content_type_is_415() {
    let server = TestServer::start();
    let c = server.client();
    let body = br#"{"type": "A"}"#;
    for headers in [
        vec![],
        vec![("Content-Type", "text/plain")],
        vec![("Content-Type", "application/x-www-form-urlencoded")],
        vec![("Content-Type", "application/jsonx")],
    ] {
        c.request("POST", "/streams/ct-1", &headers, Some(body))
            .assert_error_for(&format!("{headers:?}"), 415, "unsupported_media_type");
    }
    c.get("/streams/ct-1").assert_error(404, "stream_not_found");
    // Parameters and case do not matter.
    for ct in ["application/json; charset=utf-8", "Application/JSON"] {
        c.request("POST", "/streams/ct-1", &[("Content-Type", ct)], Some(body))
            .assert_status(201);
    }
}

/// Reads a response with a deadline.
fn read_response(stream: std::net::TcpStream, within: Duration) -> Response {
    stream.set_read_timeout(Some(within)).unwrap();
    Response::read_from(stream, false).expect("a response")
}

#[test]
fn bodies_over_the_limit_are_413_before_they_are_read() {
    let server = TestServer::start();
    let c = server.client();

    // Announced 17 MiB, 1 KiB sent, the rest never: the server answers from the header.
    let mut stream = c.connect();
    let head = c.head(
        "POST",
        "/streams/big-1",
        &[
            ("Content-Type", "application/json"),
            ("Content-Length", &(17 * 1024 * 1024).to_string()),
        ],
        None,
    );
    let started = Instant::now();
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&[b' '; 1024]).unwrap();
    let response = read_response(stream, Duration::from_secs(10));
    let reply = response.into_reply();
    reply.assert_error(413, "payload_too_large");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "413 took {:?}",
        started.elapsed()
    );

    // `Expect: 100-continue` (curl sends it for bodies over 1 MiB): an oversized body is
    // refused without asking for it...
    let mut stream = c.connect();
    let head = c.head(
        "POST",
        "/streams/big-1",
        &[
            ("Content-Type", "application/json"),
            ("Content-Length", &(17 * 1024 * 1024).to_string()),
            ("Expect", "100-continue"),
        ],
        None,
    );
    stream.write_all(head.as_bytes()).unwrap();
    let reply = read_response(stream, Duration::from_secs(10)).into_reply();
    reply.assert_error(413, "payload_too_large");
    // ... and an acceptable one gets `100 Continue`, then is read and appended.
    let body = format!(
        r#"{{"type": "Big", "data": "{}"}}"#,
        "y".repeat(2 * 1024 * 1024)
    );
    let mut stream = c.connect();
    let head = c.head(
        "POST",
        "/streams/continue-1",
        &[
            ("Content-Type", "application/json"),
            ("Expect", "100-continue"),
        ],
        Some(body.len()),
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut interim = [0u8; 25];
    stream.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    stream.write_all(body.as_bytes()).unwrap();
    read_response(stream, Duration::from_secs(10))
        .into_reply()
        .assert_status(201);

    // Chunked without a length: cut off once past the limit (the client keeps sending).
    let mut stream = c.connect();
    let head = c.head(
        "POST",
        "/streams/big-1",
        &[
            ("Content-Type", "application/json"),
            ("Transfer-Encoding", "chunked"),
        ],
        None,
    );
    stream.write_all(head.as_bytes()).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let sender = std::thread::spawn(move || {
        let chunk = vec![b' '; 1024 * 1024];
        let mut sent = 0usize;
        for _ in 0..40 {
            if writer
                .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                .is_err()
                || writer.write_all(&chunk).is_err()
                || writer.write_all(b"\r\n").is_err()
            {
                break;
            }
            sent += chunk.len();
        }
        sent
    });
    let response = read_response(stream, Duration::from_secs(20));
    let reply = response.into_reply();
    reply.assert_error(413, "payload_too_large");
    let sent = sender.join().unwrap();
    assert!(
        sent < 40 * 1024 * 1024,
        "the server read the whole 40 MiB body"
    );

    // A real 17 MiB body (valid JSON) is refused too.
    let body = format!(
        r#"{{"type": "Big", "data": "{}"}}"#,
        "x".repeat(17 * 1024 * 1024)
    );
    c.post_json("/streams/big-1", &body)
        .assert_error(413, "payload_too_large");
    // One event over 4 MiB in a body under 16 MiB.
    let body = format!(
        r#"{{"type": "Big", "data": "{}"}}"#,
        "x".repeat(4 * 1024 * 1024 + 10)
    );
    c.post_json("/streams/big-1", &body)
        .assert_error(413, "payload_too_large");
    let body = format!(
        r#"{{"type": "Big", "data_base64": "{}"}}"#,
        "A".repeat(6 * 1024 * 1024)
    );
    c.post_json("/streams/big-1", &body)
        .assert_error(413, "payload_too_large");
    // More than 10,000 events in one append.
    let many = Value::Array((0..10_001).map(|_| json!({"type": "Small"})).collect());
    c.post_json("/streams/big-1", &many.to_string())
        .assert_error(413, "payload_too_large");
    c.get("/streams/big-1")
        .assert_error(404, "stream_not_found");

    // At the limits it works: 10,000 events, one event just under 4 MiB.
    let many = Value::Array((0..10_000).map(|_| json!({"type": "Small"})).collect());
    assert_eq!(c.append("big-1", &many)["last_revision"], 9999);
    let body = format!(
        r#"{{"type": "Big", "data": "{}"}}"#,
        "x".repeat(4 * 1024 * 1024 - 100)
    );
    c.post_json("/streams/big-1", &body).assert_status(201);

    // The connection-level limit is a flag.
    let small =
        TestServer::start_with(&["--max-body-bytes", "1000", "--max-events-per-append", "3"]);
    let s = small.client();
    let body = format!(r#"{{"type": "A", "data": "{}"}}"#, "x".repeat(1000));
    s.post_json("/streams/x-1", &body)
        .assert_error(413, "payload_too_large");
    s.post_json(
        "/streams/x-1",
        r#"[{"type": "A"}, {"type": "A"}, {"type": "A"}, {"type": "A"}]"#,
    )
    .assert_error(413, "payload_too_large");
    s.post_json(
        "/streams/x-1",
        r#"[{"type": "A"}, {"type": "A"}, {"type": "A"}]"#,
    )
    .assert_status(201);
    // Metadata obeys the event size limit.
    let meta = format!(r#"{{"custom": "{}"}}"#, "x".repeat(5 * 1024 * 1024));
    c.put_json("/streams/big-1/metadata", &meta)
        .assert_error(413, "payload_too_large");
}

#[test]
fn auth_off_needs_no_token() {
    let server = TestServer::start();
    let c = server.client();
    c.append("open-1", &json!({"type": "A"}));
    c.page("/streams/open-1");
    c.get("/info").assert_status(200);
    c.get("/metrics").assert_status(200);
    c.delete("/streams/open-1?hard=true", &[])
        .assert_status(204);
}

#[test]
fn auth_token_flag_requires_a_bearer_token_except_for_health() {
    let server = TestServer::start_with(&["--auth-token", "s3cret", "--auth-token", "second"]);
    let anon = server.client();
    let admin = anon.with_token("s3cret");

    let health = anon.get("/health");
    health.assert_status(200);
    assert_eq!(health.json(), json!({"status": "ok"}));

    let requests: Vec<(&str, &str, Option<&[u8]>)> = vec![
        ("GET", "/all", None),
        ("GET", "/streams", None),
        ("GET", "/streams/auth-1", None),
        ("GET", "/streams/auth-1/0", None),
        ("GET", "/streams/auth-1/metadata", None),
        ("POST", "/streams/auth-1", Some(br#"{"type": "A"}"#)),
        ("PUT", "/streams/auth-1/metadata", Some(b"{}")),
        ("DELETE", "/streams/auth-1", None),
        ("GET", "/info", None),
        ("GET", "/metrics", None),
        ("GET", "/openapi.json", None),
    ];
    let json_ct = [("Content-Type", "application/json")];
    for bad_auth in [
        None,
        Some("Bearer wrong"),
        Some("Bearer s3cret2"),
        Some("Bearer S3CRET"),
        Some("Basic czNjcmV0"),
        Some("Bearer"),
        Some("s3cret"),
    ] {
        for (method, path, body) in &requests {
            let mut headers: Vec<(&str, &str)> = json_ct.to_vec();
            if let Some(a) = bad_auth {
                headers.push(("Authorization", a));
            }
            let reply = anon.request(method, path, &headers, *body);
            assert_eq!(
                reply.status,
                401,
                "{method} {path} with {bad_auth:?}: {}",
                reply.text()
            );
            reply.assert_error(401, "unauthorized");
            assert!(
                reply
                    .header("www-authenticate")
                    .is_some_and(|h| h.starts_with("Bearer")),
                "{:?}",
                reply.headers
            );
        }
    }
    // SSE too.
    anon.get_with("/all", &[("Accept", "text/event-stream")])
        .assert_error(401, "unauthorized");
    admin
        .get("/streams/auth-1")
        .assert_error(404, "stream_not_found");
    // Nothing was written by the refused requests.
    assert!(admin.page("/all?include_system=true")["events"]
        .as_array()
        .unwrap()
        .is_empty());

    // With a token: everything (both tokens are admin tokens).
    admin.append("auth-1", &json!({"type": "A"}));
    anon.with_token("second")
        .append("auth-1", &json!({"type": "B"}));
    assert_eq!(admin.read_stream("auth-1").len(), 2);
    admin.page("/all?include_system=true");
    admin.get("/info").assert_status(200);
    admin.get("/metrics").assert_status(200);
    admin.get("/openapi.json").assert_status(200);
    let mut sse = admin.sse("/streams/auth-1", &[]);
    assert_eq!(sse.expect_message().id_u64(), 0);
    admin
        .delete("/streams/auth-1?hard=true", &[])
        .assert_status(204);
}

#[test]
fn tokens_file_roles_and_stream_prefixes() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    std::fs::write(
        &file,
        "# token role [prefixes]\n\
         admin-t admin\n\
         \n\
         writer-t write\n\
         reader-t   read\n\
         orders-t write order- shared-\n\
         ro-orders-t read order-\n",
    )
    .unwrap();
    let server = TestServer::start_with(&["--tokens-file", file.to_str().unwrap()]);
    let base = server.client();
    let admin = base.with_token("admin-t");
    let writer = base.with_token("writer-t");
    let reader = base.with_token("reader-t");
    let orders = base.with_token("orders-t");
    let ro_orders = base.with_token("ro-orders-t");
    base.get("/all").assert_error(401, "unauthorized");
    base.with_token("write")
        .get("/all")
        .assert_error(401, "unauthorized");
    base.get("/health").assert_status(200);

    admin.append("order-1", &json!({"type": "A"}));
    admin.append("customer-1", &json!({"type": "A"}));
    let ev = json!({"type": "W"});

    // read: reads, listing, metadata, ops — nothing that writes.
    reader.page("/streams/order-1");
    reader.page("/all");
    reader.page("/streams");
    reader.get("/streams/order-1/metadata").assert_status(200);
    reader.get("/info").assert_status(200);
    reader.get("/metrics").assert_status(200);
    reader.get("/openapi.json").assert_status(200);
    reader
        .append_expecting("order-1", None, &ev)
        .assert_error(403, "forbidden");
    reader
        .append_expecting("new-1", None, &ev)
        .assert_error(403, "forbidden");
    reader
        .delete("/streams/order-1", &[])
        .assert_error(403, "forbidden");
    reader
        .put_json("/streams/order-1/metadata", "{}")
        .assert_error(403, "forbidden");
    reader
        .get("/all?include_system=true")
        .assert_error(403, "forbidden");

    // write: appends, soft deletes, metadata; not hard deletes or system events.
    writer.append("order-2", &ev);
    writer
        .put_json("/streams/order-2/metadata", r#"{"max_count": 10}"#)
        .assert_status(200);
    writer
        .delete("/streams/order-2?hard=true", &[])
        .assert_error(403, "forbidden");
    writer
        .get("/all?include_system=true")
        .assert_error(403, "forbidden");
    writer.delete("/streams/order-2", &[]).assert_status(204);
    // $-streams need admin to read.
    writer
        .get("/streams/%24%24order-2")
        .assert_error(403, "forbidden");
    let system = admin.get("/streams/%24%24order-2");
    assert_ne!(system.status, 403, "{}", system.text());
    admin.page("/all?include_system=true");

    // Prefix-limited write token.
    orders.append("order-3", &ev);
    orders.append("shared-1", &ev);
    orders.page("/streams/order-1");
    orders
        .append_expecting("customer-1", None, &ev)
        .assert_error(403, "forbidden");
    orders
        .get("/streams/customer-1")
        .assert_error(403, "forbidden");
    orders
        .get("/streams/customer-1/0")
        .assert_error(403, "forbidden");
    orders
        .get("/streams/customer-1/metadata")
        .assert_error(403, "forbidden");
    orders
        .delete("/streams/customer-1", &[])
        .assert_error(403, "forbidden");
    orders.get("/all").assert_error(403, "forbidden");
    orders
        .get("/all?stream_prefix=cust")
        .assert_error(403, "forbidden");
    orders
        .get("/all?stream_prefix=orde")
        .assert_error(403, "forbidden");
    let page = orders.page("/all?stream_prefix=order-");
    assert!(page["events"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["stream"].as_str().unwrap().starts_with("order-")));
    orders.page("/all?stream_prefix=order-1");
    orders.get("/streams").assert_error(403, "forbidden");
    orders.page("/streams?prefix=order-");
    orders.page("/streams?prefix=shared-");
    orders
        .get("/streams?prefix=c")
        .assert_error(403, "forbidden");
    // Subscriptions follow the same rules.
    orders
        .get_with("/all", &[("Accept", "text/event-stream")])
        .assert_error(403, "forbidden");
    orders
        .get_with("/streams/customer-1", &[("Accept", "text/event-stream")])
        .assert_error(403, "forbidden");
    let mut sse = orders.sse("/all?stream_prefix=order-", &[]);
    assert_eq!(sse.expect_message().json()["stream"], "order-1");
    drop(sse);
    reader
        .get_with(
            "/all?include_system=true",
            &[("Accept", "text/event-stream")],
        )
        .assert_error(403, "forbidden");
    reader
        .get_with("/all", &[("Accept", "application/x-ndjson")])
        .assert_status(200);

    // Prefix-limited read token.
    ro_orders.page("/streams/order-1");
    ro_orders
        .get("/streams/shared-1")
        .assert_error(403, "forbidden");
    ro_orders
        .append_expecting("order-1", None, &ev)
        .assert_error(403, "forbidden");

    // The refused writes wrote nothing.
    assert_eq!(admin.read_stream("order-1").len(), 1);
    assert_eq!(admin.read_stream("customer-1").len(), 1);
    admin
        .get("/streams/new-1")
        .assert_error(404, "stream_not_found");
}

#[test]
fn error_bodies_are_json_objects_with_their_documented_fields() {
    // Each status has its own test (503 is in tests/process.rs: it needs a storage fault);
    // this one checks the body of each kind: `error`, `message` and the extra fields named by
    // docs/http-api.md, as one complete JSON document.
    let server = TestServer::start();
    let c = server.client();
    c.append("shape-1", &json!({"type": "A"}));
    let check_keys = |v: &Value, extra: &[&str]| {
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        for k in ["error", "message"].iter().chain(extra) {
            assert!(keys.contains(k), "{k} missing from {v}");
        }
    };
    let v = c
        .post_json("/streams/shape-1", "{")
        .assert_error(400, "invalid_request");
    check_keys(&v, &[]);
    let v = c
        .append_expecting("shape-1", Some("no_stream"), &json!({"type": "A"}))
        .assert_error(409, "wrong_expected_revision");
    check_keys(&v, &["expected", "actual"]);
    let id = uuid::Uuid::new_v4().to_string();
    c.append("shape-1", &json!({"id": id, "type": "A"}));
    let v = c
        .append_expecting(
            "shape-1",
            None,
            &json!([{"id": id, "type": "A"}, {"type": "B"}]),
        )
        .assert_error(409, "duplicate_event_id");
    check_keys(&v, &[]);
    c.delete("/streams/shape-1", &[]).assert_status(204);
    let v = c
        .get("/streams/shape-1")
        .assert_error(410, "stream_deleted");
    check_keys(&v, &[]);
    let v = c
        .get("/streams/none-1")
        .assert_error(404, "stream_not_found");
    check_keys(&v, &[]);
    let v = c.get("/none").assert_error(404, "not_found");
    check_keys(&v, &[]);
    // The raw bytes: a complete JSON document with a JSON content type, no trailing junk.
    let mut stream = c.connect();
    stream
        .write_all(c.head("GET", "/streams/none-1", &[], None).as_bytes())
        .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let raw = String::from_utf8(raw).unwrap();
    assert!(raw.starts_with("HTTP/1.1 404 "), "{raw}");
    let body = raw.split("\r\n\r\n").nth(1).unwrap();
    let _: Value = serde_json::from_str(body).unwrap();
}

/// True once the server has closed `stream` (EOF or reset); false while it is open.
fn closed_by_server(stream: &mut std::net::TcpStream) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut buf = [0u8; 256];
    match stream.read(&mut buf) {
        Ok(0) => true,
        Ok(n) => panic!("unexpected bytes: {:?}", String::from_utf8_lossy(&buf[..n])),
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

#[test]
fn slow_and_idle_connections_are_closed_and_unparsable_requests_get_json() {
    let server = TestServer::start_with(&[
        "--header-read-timeout",
        "1",
        "--idle-timeout",
        "1",
        "--max-connections",
        "4",
    ]);
    let c = server.client();

    // A request head over the limit: 431 with the JSON error shape (hyper's own answer had
    // an empty body).
    let mut stream = c.connect();
    let big = format!(
        "GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(500_000)
    );
    let _ = stream.write_all(big.as_bytes());
    read_response(stream, Duration::from_secs(10))
        .into_reply()
        .assert_error(431, "invalid_request");

    // Slowloris: a header line every 200 ms is cut off after --header-read-timeout.
    let mut slow = c.connect();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let started = Instant::now();
    let mut i = 0;
    loop {
        std::thread::sleep(Duration::from_millis(200));
        if slow.write_all(format!("X-{i}: 1\r\n").as_bytes()).is_err()
            || closed_by_server(&mut slow)
        {
            break;
        }
        i += 1;
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "a trickled header was read for 15 s"
        );
    }

    // An idle keep-alive connection is closed after --idle-timeout.
    let mut idle = c.connect();
    idle.write_all(b"HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        idle.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 200"), "{head:?}");
    let started = Instant::now();
    while !closed_by_server(&mut idle) {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "an idle connection stayed open for 15 s"
        );
    }
    // The server still serves.
    c.get("/health").assert_status(200);
}
