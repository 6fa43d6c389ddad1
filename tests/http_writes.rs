//! End-to-end: appends (`POST /streams/{stream}`), `Expected-Revision`, idempotent retries,
//! atomic batches, racing writers, deletion and stream metadata — against the real `strata`
//! binary (docs/http-api.md "Appending", "Stream deletion and metadata").

use std::collections::BTreeSet;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};
use strata_suite::{enc, Client, TestServer};

/// The last position of a non-system event in `/all` (`None` when there is none).
fn last_position(c: &Client) -> Option<u64> {
    let page = c.page("/all?direction=backward&limit=1");
    page["events"][0]["position"].as_u64()
}

/// The last revision of `stream` (`None` when the page is empty).
fn last_revision(c: &Client, stream: &str) -> Option<u64> {
    let page = c.page(&format!(
        "/streams/{}?direction=backward&limit=1",
        enc(stream)
    ));
    page["events"][0]["revision"].as_u64()
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, ch)| match i {
            8 | 13 | 18 | 23 => ch == '-',
            _ => ch.is_ascii_hexdigit(),
        })
}

/// `YYYY-MM-DDTHH:MM:SS[.frac]Z`.
fn is_rfc3339_utc(s: &str) -> bool {
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| r.clone().all(|i| b.get(i).is_some_and(u8::is_ascii_digit));
    b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && s.ends_with('Z')
        && (b.len() == 20 || (b[19] == b'.' && digits(20..b.len() - 1) && b.len() > 21))
}

#[test]
fn one_event_append_is_201_with_location_and_returns_the_event_as_stored() {
    let server = TestServer::start();
    let c = server.client();
    // Data and metadata are sent with spacing and a `99.0` that a re-serialisation would lose.
    let body = r#"{"type":"OrderPlaced","data":{"total": 99.0, "items": [1, 2]},"metadata":{"correlation_id": "abc"}}"#;
    let reply = c.post_json("/streams/order-42", body);
    reply.assert_status(201);
    assert_eq!(reply.header("location"), Some("/streams/order-42/0"));
    assert_eq!(
        reply.json(),
        json!({"stream": "order-42", "first_revision": 0, "last_revision": 0,
               "first_position": 0, "last_position": 0})
    );

    let reply = c.get("/streams/order-42/0");
    reply.assert_status(200);
    let text = reply.text();
    assert!(
        text.contains(r#"{"total": 99.0, "items": [1, 2]}"#),
        "data not returned exactly as stored: {text}"
    );
    assert!(text.contains(r#"{"correlation_id": "abc"}"#), "{text}");
    let event = reply.json();
    let keys: BTreeSet<&str> = event
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from([
            "id",
            "stream",
            "revision",
            "position",
            "type",
            "timestamp",
            "data",
            "metadata"
        ]),
        "{event}"
    );
    assert!(is_uuid(event["id"].as_str().unwrap()), "{event}");
    assert_eq!(event["stream"], "order-42");
    assert_eq!(event["revision"], 0);
    assert_eq!(event["position"], 0);
    assert_eq!(event["type"], "OrderPlaced");
    assert!(
        is_rfc3339_utc(event["timestamp"].as_str().unwrap()),
        "{event}"
    );
    assert_eq!(event["data"], json!({"total": 99.0, "items": [1, 2]}));
    assert_eq!(event["metadata"], json!({"correlation_id": "abc"}));

    // The next event of the log, in another stream: position 1, revision 0.
    let reply = c.post_json("/streams/order-43", r#"{"type":"OrderPlaced"}"#);
    reply.assert_status(201);
    assert_eq!(reply.header("location"), Some("/streams/order-43/0"));
    assert_eq!(
        reply.json(),
        json!({"stream": "order-43", "first_revision": 0, "last_revision": 0,
               "first_position": 1, "last_position": 1})
    );
    let event = c.get("/streams/order-43/0").json();
    assert!(
        event["metadata"].is_null(),
        "metadata of an event without it: {event}"
    );
    assert!(
        event.get("metadata").is_some(),
        "metadata must be present (null): {event}"
    );

    // A UTF-8 name that needs percent-encoding, and a 255-byte name.
    let name = "übung/1 ä";
    let reply = c.post_json(&format!("/streams/{}", enc(name)), r#"{"type":"T"}"#);
    reply.assert_status(201);
    assert_eq!(reply.json()["stream"], name);
    assert_eq!(c.read_stream(name)[0]["stream"], name);
    let long = "x".repeat(255);
    c.append(&long, &json!({"type": "T"}));
}

#[test]
fn batches_get_contiguous_revisions_in_order_and_ids_and_binary_payloads_round_trip() {
    let server = TestServer::start();
    let c = server.client();
    c.append("other-1", &json!({"type": "X"}));
    let ids: Vec<String> = (0..3).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let reply = c.append_expecting(
        "batch-1",
        None,
        &json!([
            {"id": ids[0], "type": "A", "data": {"n": 0}},
            {"id": ids[1], "type": "B", "data": {"n": 1}},
            {"id": ids[2], "type": "C", "data": {"n": 2}},
        ]),
    );
    reply.assert_status(201);
    assert_eq!(reply.header("location"), Some("/streams/batch-1/0"));
    assert_eq!(
        reply.json(),
        json!({"stream": "batch-1", "first_revision": 0, "last_revision": 2,
               "first_position": 1, "last_position": 3})
    );
    let second = c.append("batch-1", &json!([{"type": "D"}, {"type": "E"}]));
    assert_eq!(second["first_revision"], 3);
    assert_eq!(second["last_revision"], 4);
    assert_eq!(second["first_position"], 4);
    assert_eq!(second["last_position"], 5);

    let events = c.read_stream("batch-1");
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["A", "B", "C", "D", "E"]);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["revision"], i as u64);
        assert_eq!(e["position"], i as u64 + 1);
    }
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(events[i]["id"], id.as_str(), "client ids are kept");
    }
    // One append, one timestamp (docs: commit time).
    assert_eq!(events[0]["timestamp"], events[2]["timestamp"]);

    // Binary payloads: sent and returned as data_base64, not data.
    let bytes: Vec<u8> = (0..=255u8).chain([0, 0xff, 0x80]).collect();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
    let r = c.append("blob-1", &json!({"type": "Thumbnail", "data_base64": b64}));
    let event = c
        .get(&format!("/streams/blob-1/{}", r["first_revision"]))
        .json();
    assert_eq!(event["data_base64"], b64.as_str(), "{event}");
    assert!(
        event.get("data").is_none(),
        "binary event must not carry data: {event}"
    );
    // Also in NDJSON and /all.
    assert_eq!(c.read_stream("blob-1")[0]["data_base64"], b64.as_str());

    // JSON data of every kind comes back as sent.
    for data in [
        json!(null),
        json!(0),
        json!("text"),
        json!([1, "a", null]),
        json!(true),
        json!({"deep": {"x": [1.5e10]}}),
    ] {
        let r = c.append("kinds-1", &json!({"type": "K", "data": data}));
        let event = c
            .get(&format!("/streams/kinds-1/{}", r["first_revision"]))
            .json();
        assert_eq!(event["data"], data);
    }
}

#[test]
fn expected_revision_any_no_stream_stream_exists_and_exact() {
    let server = TestServer::start();
    let c = server.client();
    let ev = json!({"type": "E"});

    // stream_exists / an integer on a missing stream: 409 with actual "no_stream".
    let v = c
        .append_expecting("er-1", Some("stream_exists"), &ev)
        .assert_error(409, "wrong_expected_revision");
    assert_eq!(v["expected"], "stream_exists");
    assert_eq!(v["actual"], "no_stream");
    let v = c
        .append_expecting("er-1", Some("0"), &ev)
        .assert_error(409, "wrong_expected_revision");
    assert_eq!(v["expected"], 0);
    assert_eq!(v["actual"], "no_stream");
    c.get("/streams/er-1").assert_error(404, "stream_not_found");

    // no_stream creates; a second no_stream conflicts.
    c.append_expecting("er-1", Some("no_stream"), &ev)
        .assert_status(201);
    let v = c
        .append_expecting("er-1", Some("no_stream"), &ev)
        .assert_error(409, "wrong_expected_revision");
    assert_eq!(v["expected"], "no_stream");
    assert_eq!(v["actual"], 0);

    c.append_expecting("er-1", Some("stream_exists"), &ev)
        .assert_status(201);
    c.append_expecting("er-1", Some("any"), &ev)
        .assert_status(201);
    c.append_expecting("er-1", None, &ev).assert_status(201);
    // Exact revision: 3 is current.
    let r = c.append_expecting("er-1", Some("3"), &json!([{"type": "E"}, {"type": "E"}]));
    r.assert_status(201);
    assert_eq!(r.json()["first_revision"], 4);
    for stale in ["3", "0", "6", "100"] {
        let v = c
            .append_expecting("er-1", Some(stale), &ev)
            .assert_error(409, "wrong_expected_revision");
        assert_eq!(v["expected"], stale.parse::<u64>().unwrap(), "{v}");
        assert_eq!(v["actual"], 5, "{v}");
    }
    assert_eq!(last_revision(&c, "er-1"), Some(5), "a 409 writes nothing");
    c.append_expecting("er-1", Some("5"), &ev)
        .assert_status(201);
}

#[test]
fn idempotent_retries_answer_200_with_the_original_body_and_partial_overlaps_409() {
    let mut server = TestServer::start();
    let c = server.client();
    let id = |_| uuid::Uuid::new_v4().to_string();
    let [a, b, cc, d, x, y, z, w]: [String; 8] = std::array::from_fn(id);
    let ev = |id: &str, ty: &str| json!({"id": id, "type": ty, "data": {"id": id}});

    let first = c.append_expecting("idem-1", None, &json!([ev(&a, "A"), ev(&b, "B")]));
    first.assert_status(201);
    let original = first.json();
    let before = last_position(&c);

    // The same request again: 200, the original body, nothing written.
    let retry = c.append_expecting("idem-1", None, &json!([ev(&a, "A"), ev(&b, "B")]));
    retry.assert_status(200);
    assert_eq!(retry.json(), original);
    assert_eq!(last_position(&c), before);

    // More events; `any` / `stream_exists` retries match anywhere in the stream.
    c.append("idem-1", &ev(&cc, "C"));
    for expected in [None, Some("any"), Some("stream_exists")] {
        let retry = c.append_expecting("idem-1", expected, &json!([ev(&a, "A"), ev(&b, "B")]));
        retry.assert_status(200);
        assert_eq!(retry.json(), original, "expected {expected:?}");
    }
    // A one-event retry of the middle of the run, and of the last event.
    let r = c.append_expecting("idem-1", None, &ev(&b, "B"));
    r.assert_status(200);
    assert_eq!(r.json()["first_revision"], 1);
    assert_eq!(r.json()["last_revision"], 1);
    let r = c.append_expecting("idem-1", None, &ev(&cc, "C"));
    r.assert_status(200);
    assert_eq!(r.json()["first_revision"], 2);

    // Only some ids known, another order, or not one contiguous run: 409 duplicate_event_id.
    for (what, batch) in [
        ("one old, one new", json!([ev(&b, "B"), ev(&d, "D")])),
        ("one new, one old", json!([ev(&d, "D"), ev(&a, "A")])),
        ("other order", json!([ev(&b, "B"), ev(&a, "A")])),
        ("not contiguous", json!([ev(&a, "A"), ev(&cc, "C")])),
    ] {
        let reply = c.append_expecting("idem-1", None, &batch);
        reply.assert_error(409, "duplicate_event_id");
        assert_eq!(
            last_position(&c),
            Some(before.unwrap() + 1),
            "{what}: nothing written"
        );
    }
    assert!(
        !c.read_stream("idem-1")
            .iter()
            .any(|e| e["id"] == d.as_str()),
        "a refused batch wrote its new event"
    );

    // no_stream and exact-revision retries: the run must start right after that revision.
    let created = c.append_expecting(
        "idem-2",
        Some("no_stream"),
        &json!([ev(&x, "X"), ev(&y, "Y")]),
    );
    created.assert_status(201);
    let retry = c.append_expecting(
        "idem-2",
        Some("no_stream"),
        &json!([ev(&x, "X"), ev(&y, "Y")]),
    );
    retry.assert_status(200);
    assert_eq!(retry.json(), created.json());
    let at1 = c.append_expecting("idem-2", Some("1"), &ev(&z, "Z"));
    at1.assert_status(201);
    c.append("idem-2", &ev(&w, "W"));
    let retry = c.append_expecting("idem-2", Some("1"), &ev(&z, "Z"));
    retry.assert_status(200);
    assert_eq!(retry.json(), at1.json());
    // Z is at revision 2, not right after 0: not this run.
    let reply = c.append_expecting("idem-2", Some("0"), &ev(&z, "Z"));
    assert_eq!(reply.status, 409, "{}", reply.text());
    assert!(
        ["duplicate_event_id", "wrong_expected_revision"]
            .contains(&reply.json()["error"].as_str().unwrap()),
        "{}",
        reply.text()
    );
    assert_eq!(c.read_stream("idem-2").len(), 4);

    // Ids are per stream: the same id elsewhere is a new event.
    let other = c.append_expecting("idem-3", None, &json!([ev(&a, "A"), ev(&b, "B")]));
    other.assert_status(201);
    assert_eq!(other.json()["first_revision"], 0);

    // The id index is persistent: a retry after a restart is still recognised.
    server.stop(libc::SIGTERM);
    server.restart();
    let c = server.client();
    let retry = c.append_expecting("idem-1", None, &json!([ev(&a, "A"), ev(&b, "B")]));
    retry.assert_status(200);
    assert_eq!(retry.json(), original);
}

#[test]
fn a_batch_with_one_bad_event_writes_nothing() {
    let server = TestServer::start_with(&["--max-event-bytes", "4096"]);
    let c = server.client();
    c.append("atomic-1", &json!([{"type": "A"}, {"type": "A"}]));
    let before = last_position(&c).unwrap();
    let good =
        || json!({"id": uuid::Uuid::new_v4().to_string(), "type": "Good", "data": {"ok": true}});
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        (
            "unknown field",
            json!({"type": "Bad", "colour": "red"}),
            400,
            "invalid_request",
        ),
        ("no type", json!({"data": 1}), 400, "invalid_request"),
        ("empty type", json!({"type": ""}), 400, "invalid_request"),
        (
            "long type",
            json!({"type": "t".repeat(256)}),
            400,
            "invalid_request",
        ),
        (
            "type not a string",
            json!({"type": 7}),
            400,
            "invalid_request",
        ),
        (
            "bad id",
            json!({"id": "not-a-uuid", "type": "Bad"}),
            400,
            "invalid_request",
        ),
        (
            "data and data_base64",
            json!({"type": "Bad", "data": 1, "data_base64": "AA=="}),
            400,
            "invalid_request",
        ),
        (
            "bad base64",
            json!({"type": "Bad", "data_base64": "!!not base64!!"}),
            400,
            "invalid_request",
        ),
        ("not an object", json!("Bad"), 400, "invalid_request"),
        (
            "event over the limit",
            json!({"type": "Big", "data": "x".repeat(5000)}),
            413,
            "payload_too_large",
        ),
    ];
    for (what, bad, status, code) in cases {
        for batch in [
            json!([good(), bad.clone()]),
            json!([good(), good(), bad.clone(), good()]),
        ] {
            let reply = c.append_expecting("atomic-1", None, &batch);
            assert_eq!(reply.status, status, "{what}: {}", reply.text());
            reply.assert_error(status, code);
            assert_eq!(
                last_revision(&c, "atomic-1"),
                Some(1),
                "{what}: the stream moved"
            );
            assert_eq!(
                last_position(&c),
                Some(before),
                "{what}: /all has a new event"
            );
        }
        // On a new stream, the stream is not created.
        let reply = c.append_expecting("atomic-new", None, &json!([good(), bad]));
        assert_eq!(reply.status, status, "{what}: {}", reply.text());
        c.get("/streams/atomic-new")
            .assert_error(404, "stream_not_found");
    }
    assert_eq!(c.ndjson("/all").len() as u64, before + 1);
    // The stream still works.
    assert_eq!(c.append("atomic-1", &good())["first_revision"], 2);
}

/// 8 threads race on `Expected-Revision` round after round: exactly one wins each round, every
/// loser gets exactly `409 wrong_expected_revision` with `expected` as sent and `actual` the
/// winner's revision, and the stream's revisions are dense.
#[test]
fn eight_threads_racing_on_expected_revision() {
    const THREADS: usize = 8;
    const ROUNDS: u64 = 25;
    let server = TestServer::start();
    let c = server.client();
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let c = c.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut results = Vec::new();
                for round in 0..ROUNDS {
                    let expected = if round == 0 {
                        "no_stream".to_owned()
                    } else {
                        (round - 1).to_string()
                    };
                    barrier.wait();
                    let reply = c.append_expecting(
                        "race-1",
                        Some(&expected),
                        &json!({"type": "Won", "data": {"thread": t, "round": round}}),
                    );
                    results.push((round, reply));
                    // Everyone has an answer before the next round starts.
                    barrier.wait();
                }
                results
            })
        })
        .collect();
    let mut winners = vec![Vec::new(); ROUNDS as usize];
    for (t, h) in handles.into_iter().enumerate() {
        for (round, reply) in h.join().unwrap() {
            match reply.status {
                201 => {
                    let v = reply.json();
                    assert_eq!(v["first_revision"], round, "{v}");
                    winners[round as usize].push(t);
                }
                409 => {
                    let v = reply.assert_error(409, "wrong_expected_revision");
                    if round == 0 {
                        assert_eq!(v["expected"], "no_stream", "{v}");
                    } else {
                        assert_eq!(v["expected"], round - 1, "{v}");
                    }
                    assert_eq!(v["actual"], round, "{v}");
                }
                other => panic!("round {round}: status {other}: {}", reply.text()),
            }
        }
    }
    for (round, w) in winners.iter().enumerate() {
        assert_eq!(w.len(), 1, "round {round} winners: {w:?}");
    }
    let events = c.read_stream("race-1");
    assert_eq!(events.len() as u64, ROUNDS);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["revision"], i as u64);
        assert_eq!(e["position"], i as u64, "positions dense");
        assert_eq!(e["data"]["round"], i as u64);
        assert_eq!(e["data"]["thread"], winners[i][0] as u64);
    }
}

/// Concurrent appends without a revision check: dense revisions, each writer's events in order.
#[test]
fn eight_threads_appending_with_any_get_dense_revisions() {
    let server = TestServer::start();
    let c = server.client();
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let c = c.clone();
            std::thread::spawn(move || {
                for i in 0..25 {
                    c.append("many-1", &json!([{"type": "N", "data": {"t": t, "i": i}}, {"type": "N", "data": {"t": t, "i": i}}]));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let events = c.read_stream("many-1");
    assert_eq!(events.len(), 400);
    let mut next = [0u64; 8];
    for (i, pair) in events.chunks(2).enumerate() {
        assert_eq!(pair[0]["revision"], 2 * i as u64);
        assert_eq!(pair[1]["revision"], 2 * i as u64 + 1);
        assert_eq!(pair[0]["data"], pair[1]["data"], "a batch was split");
        let t = pair[0]["data"]["t"].as_u64().unwrap() as usize;
        assert_eq!(pair[0]["data"]["i"], next[t], "writer {t} out of order");
        next[t] += 1;
    }
}

#[test]
fn soft_delete_hides_events_and_appending_recreates_with_continuing_revisions() {
    let server = TestServer::start();
    let c = server.client();
    c.append(
        "soft-1",
        &json!([{"type": "A"}, {"type": "B"}, {"type": "C"}]),
    );
    c.append("keep-1", &json!({"type": "K"}));

    // Expected-Revision is honoured on DELETE.
    let v = c
        .delete("/streams/soft-1", &[("Expected-Revision", "1")])
        .assert_error(409, "wrong_expected_revision");
    assert_eq!(v["expected"], 1);
    assert_eq!(v["actual"], 2);
    let v = c
        .delete("/streams/soft-1", &[("Expected-Revision", "no_stream")])
        .assert_error(409, "wrong_expected_revision");
    assert_eq!(v["expected"], "no_stream");
    assert_eq!(v["actual"], 2);
    c.page("/streams/soft-1");
    c.delete("/streams/soft-1", &[("Expected-Revision", "2")])
        .assert_status(204);

    // Reads give 410 in every representation; the listing leaves it out.
    c.get("/streams/soft-1").assert_error(410, "stream_deleted");
    c.get_with("/streams/soft-1", &[("Accept", "application/x-ndjson")])
        .assert_error(410, "stream_deleted");
    c.get_with("/streams/soft-1", &[("Accept", "text/event-stream")])
        .assert_error(410, "stream_deleted");
    c.get("/streams/soft-1/0")
        .assert_error(410, "stream_deleted");
    let names: Vec<Value> = c.page("/streams")["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].clone())
        .collect();
    assert_eq!(names, [json!("keep-1")]);
    // Deleting again: 410. Never written: 404.
    c.delete("/streams/soft-1", &[])
        .assert_error(410, "stream_deleted");
    c.delete("/streams/never-1", &[])
        .assert_error(404, "stream_not_found");
    // Other streams are untouched.
    assert_eq!(c.read_stream("keep-1").len(), 1);

    // Appending (any) re-creates it, continuing the revisions; the old events stay hidden.
    let r = c.append("soft-1", &json!({"type": "D"}));
    assert_eq!(r["first_revision"], 3);
    let events = c.read_stream("soft-1");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["revision"], 3);
    assert_eq!(events[0]["type"], "D");
    let page = c.page("/streams/soft-1?from=0");
    assert_eq!(page["events"].as_array().unwrap().len(), 1);
    c.get("/streams/soft-1/0").assert_error(404, "not_found");
    assert_eq!(c.get("/streams/soft-1/3").json()["type"], "D");
    let backward = c.page("/streams/soft-1?direction=backward");
    assert_eq!(backward["events"].as_array().unwrap().len(), 1);

    // Soft delete again (no header = any), then no_stream re-creates it too.
    c.delete("/streams/soft-1", &[]).assert_status(204);
    let r = c.append_expecting("soft-1", Some("no_stream"), &json!({"type": "E"}));
    r.assert_status(201);
    assert_eq!(r.json()["first_revision"], 4);
    assert_eq!(c.read_stream("soft-1").len(), 1);
    c.delete("/streams/soft-1", &[("Expected-Revision", "stream_exists")])
        .assert_status(204);
}

#[test]
fn hard_delete_is_a_permanent_tombstone() {
    let mut server = TestServer::start();
    let c = server.client();
    c.append("hard-1", &json!([{"type": "A"}, {"type": "B"}]));
    c.append("hard-2", &json!({"type": "A"}));
    c.delete("/streams/hard-1?hard=true", &[])
        .assert_status(204);
    // Hard delete after a soft delete.
    c.delete("/streams/hard-2", &[]).assert_status(204);
    c.delete("/streams/hard-2?hard=true", &[])
        .assert_status(204);

    let check = |c: &Client| {
        for s in ["hard-1", "hard-2"] {
            c.get(&format!("/streams/{s}"))
                .assert_error(410, "stream_deleted");
            c.get(&format!("/streams/{s}/0"))
                .assert_error(410, "stream_deleted");
            c.get_with(
                &format!("/streams/{s}"),
                &[("Accept", "application/x-ndjson")],
            )
            .assert_error(410, "stream_deleted");
            for expected in [None, Some("any"), Some("no_stream")] {
                c.append_expecting(s, expected, &json!({"type": "Again"}))
                    .assert_error(410, "stream_deleted");
            }
            c.delete(&format!("/streams/{s}"), &[])
                .assert_error(410, "stream_deleted");
            c.delete(&format!("/streams/{s}?hard=true"), &[])
                .assert_error(410, "stream_deleted");
            c.get(&format!("/streams/{s}/metadata"))
                .assert_error(410, "stream_deleted");
            c.put_json(&format!("/streams/{s}/metadata"), "{}")
                .assert_error(410, "stream_deleted");
            c.get_with(&format!("/streams/{s}"), &[("Accept", "text/event-stream")])
                .assert_error(410, "stream_deleted");
        }
        assert_eq!(
            c.page("/streams")["streams"],
            json!([]),
            "tombstones are not listed"
        );
    };
    check(&c);
    // The tombstone survives a restart.
    server.stop(libc::SIGTERM);
    server.restart();
    check(&server.client());
}

#[test]
fn metadata_get_put_and_its_limits_on_reads() {
    let server = TestServer::start();
    let c = server.client();
    assert_eq!(
        c.get("/streams/meta-1/metadata").assert_status(200).json(),
        json!({})
    );
    c.append(
        "meta-1",
        &Value::Array(
            (0..10)
                .map(|i| json!({"type": "M", "data": {"i": i}}))
                .collect(),
        ),
    );
    assert_eq!(c.get("/streams/meta-1/metadata").json(), json!({}));
    let revisions = |path: &str| -> Vec<u64> {
        c.page(path)["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["revision"].as_u64().unwrap())
            .collect()
    };
    let replayed = || -> Vec<u64> {
        c.read_stream("meta-1")
            .iter()
            .map(|e| e["revision"].as_u64().unwrap())
            .collect()
    };

    // max_count: only the last n events.
    let body = json!({"max_count": 3, "custom": {"owner": "orders-team", "tags": [1, 2]}});
    let put = c.put_json("/streams/meta-1/metadata", &body.to_string());
    put.assert_status(200);
    assert_eq!(put.json(), body);
    assert_eq!(c.get("/streams/meta-1/metadata").json(), body);
    assert_eq!(revisions("/streams/meta-1"), [7, 8, 9]);
    assert_eq!(revisions("/streams/meta-1?from=0&limit=2"), [7, 8]);
    assert_eq!(revisions("/streams/meta-1?direction=backward"), [9, 8, 7]);
    assert_eq!(replayed(), [7, 8, 9]);
    c.get("/streams/meta-1/6").assert_error(404, "not_found");
    assert_eq!(c.get("/streams/meta-1/7").json()["revision"], 7);
    let mut sse = c.sse("/streams/meta-1?from=0", &[]);
    assert_eq!(
        sse.expect_message().id_u64(),
        7,
        "SSE history honours max_count"
    );
    drop(sse);
    // An append moves the window.
    c.append("meta-1", &json!({"type": "M", "data": {"i": 10}}));
    assert_eq!(revisions("/streams/meta-1"), [8, 9, 10]);

    // PUT replaces everything: truncate_before alone.
    let put = c.put_json("/streams/meta-1/metadata", r#"{"truncate_before": 6}"#);
    put.assert_status(200);
    assert_eq!(
        c.get("/streams/meta-1/metadata").json(),
        json!({"truncate_before": 6})
    );
    assert_eq!(revisions("/streams/meta-1"), [6, 7, 8, 9, 10]);
    assert_eq!(replayed(), [6, 7, 8, 9, 10]);
    c.get("/streams/meta-1/5").assert_error(404, "not_found");
    // Both: the stricter wins.
    c.put_json(
        "/streams/meta-1/metadata",
        r#"{"truncate_before": 9, "max_count": 4}"#,
    )
    .assert_status(200);
    assert_eq!(revisions("/streams/meta-1"), [9, 10]);
    c.put_json(
        "/streams/meta-1/metadata",
        r#"{"truncate_before": 2, "max_count": 4}"#,
    )
    .assert_status(200);
    assert_eq!(revisions("/streams/meta-1"), [7, 8, 9, 10]);
    // Cleared: everything is back.
    c.put_json("/streams/meta-1/metadata", "{}")
        .assert_status(200);
    assert_eq!(replayed(), (0..=10).collect::<Vec<_>>());

    // max_age_seconds: old events disappear, new ones are visible.
    c.put_json("/streams/meta-1/metadata", r#"{"max_age_seconds": 1}"#)
        .assert_status(200);
    std::thread::sleep(Duration::from_millis(2100));
    c.append("meta-1", &json!({"type": "Fresh"}));
    let events = c.read_stream("meta-1");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["type"], "Fresh");

    // Metadata may be set before the first append.
    c.put_json("/streams/meta-2/metadata", r#"{"max_count": 1}"#)
        .assert_status(200);
    c.append("meta-2", &json!([{"type": "A"}, {"type": "B"}]));
    assert_eq!(c.read_stream("meta-2").len(), 1);

    // Bad metadata bodies.
    for bad in [
        r#"{"max_count": 1, "colour": "red"}"#,
        r#"{"max_count": -1}"#,
        r#"{"truncate_before": "x"}"#,
        r#"{"max_count": 1"#,
        "42",
    ] {
        c.put_json("/streams/meta-1/metadata", bad)
            .assert_error(400, "invalid_request");
    }
    c.request(
        "PUT",
        "/streams/meta-1/metadata",
        &[("Content-Type", "text/plain")],
        Some(b"{}"),
    )
    .assert_error(415, "unsupported_media_type");
    // $-streams are reserved.
    c.put_json("/streams/%24x/metadata", "{}")
        .assert_error(400, "invalid_request");
    assert_eq!(
        c.get("/streams/meta-1/metadata").json(),
        json!({"max_age_seconds": 1})
    );
}

/// docs/http-api.md: the metadata body is an object `{"max_count"?, "max_age_seconds"?,
/// "truncate_before"?, "custom"?}`; an array (which serde's derived visitor would read as
/// positional fields) or any other JSON value is a 400.
#[test]
fn metadata_must_be_a_json_object() {
    let server = TestServer::start();
    let c = server.client();
    c.append("meta-arr", &json!([{"type": "A"}, {"type": "B"}]));
    for bad in ["[]", "[1]", r#"[1, null, 0, "x"]"#] {
        c.put_json("/streams/meta-arr/metadata", bad)
            .assert_error(400, "invalid_request");
    }
    assert_eq!(c.get("/streams/meta-arr/metadata").json(), json!({}));
    assert_eq!(c.read_stream("meta-arr").len(), 2);
}

/// The same batch (same ids) sent by 8 clients at once — a retry racing the original: one
/// `201`, every other answer `200` with the same body, and the events exist once.
#[test]
fn concurrent_retries_of_one_batch_write_it_once() {
    let server = TestServer::start();
    let c = server.client();
    c.append("retry-1", &json!({"type": "Before"}));
    for round in 0..10 {
        let batch = Value::Array(
            (0..3)
                .map(|i| json!({"id": uuid::Uuid::new_v4().to_string(), "type": "R", "data": {"round": round, "i": i}}))
                .collect(),
        );
        let barrier = Arc::new(Barrier::new(8));
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let (c, batch, barrier) = (c.clone(), batch.clone(), barrier.clone());
                // Half send the original's `any`, half a retry with the exact revision.
                let expected = if t % 2 == 0 {
                    None
                } else {
                    Some((round * 3).to_string())
                };
                std::thread::spawn(move || {
                    barrier.wait();
                    c.append_expecting("retry-1", expected.as_deref(), &batch)
                })
            })
            .collect();
        let replies: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let created: Vec<_> = replies.iter().filter(|r| r.status == 201).collect();
        assert_eq!(
            created.len(),
            1,
            "round {round}: {:?}",
            replies
                .iter()
                .map(|r| (r.status, r.text()))
                .collect::<Vec<_>>()
        );
        let body = created[0].json();
        assert_eq!(body["first_revision"], round * 3 + 1);
        for r in &replies {
            assert!(
                matches!(r.status, 200 | 201),
                "round {round}: {} {}",
                r.status,
                r.text()
            );
            assert_eq!(r.json(), body, "round {round}");
        }
    }
    let events = c.read_stream("retry-1");
    assert_eq!(events.len(), 31);
    for (i, e) in events.iter().enumerate().skip(1) {
        assert_eq!(e["data"]["round"], (i as u64 - 1) / 3);
        assert_eq!(e["data"]["i"], (i as u64 - 1) % 3);
    }
}
