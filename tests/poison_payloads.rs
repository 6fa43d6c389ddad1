//! End-to-end: payloads that would fault projections for ever are refused at append time
//! (docs/http-api.md, "Events"). `data` and `metadata` nested deeper than 64 levels, or holding a
//! lone UTF-16 surrogate escape, are `400 invalid_request` naming the event and the field, and
//! the request writes nothing; a projection that emits such a payload faults at the event that
//! emitted it instead of writing it.

use serde_json::{json, Value};
use strata_suite::projections::{
    create_projection, projection_action, wait_faulted, wait_projection, PROJECTION_TIMEOUT,
};
use strata_suite::{Client, TestServer};

/// `depth` nested arrays: `[[[...]]]`.
fn arrays(depth: usize) -> String {
    "[".repeat(depth) + &"]".repeat(depth)
}

/// The position of the last event of the log, system streams included (`None` when empty).
fn head(c: &Client) -> Option<u64> {
    c.page("/all?direction=backward&limit=1&include_system=true")["events"][0]["position"].as_u64()
}

/// Posts `body` to `stream`; asserts `400 invalid_request` whose message contains every one of
/// `parts`, and that nothing was written. Returns the message.
#[track_caller]
fn refused(c: &Client, stream: &str, body: &str, parts: &[&str]) -> String {
    let before = head(c);
    let reply = c.post_json(&format!("/streams/{stream}"), body);
    let error = reply.assert_error(400, "invalid_request");
    let message = error["message"].as_str().unwrap_or_default().to_owned();
    for part in parts {
        assert!(
            message.contains(part),
            "{part:?} not in the message: {error}"
        );
    }
    c.get(&format!("/streams/{stream}"))
        .assert_error(404, "stream_not_found");
    assert_eq!(head(c), before, "the refused request wrote something");
    message
}

#[test]
fn deeply_nested_data_or_metadata_is_400_naming_the_event_and_field() {
    let server = TestServer::start();
    let c = server.client();
    let deep = arrays(100_000);
    refused(
        &c,
        "deep-1",
        &format!(r#"{{"type":"T","data":{deep}}}"#),
        &["events[0].data", "JSON nested deeper than 64 levels"],
    );
    // One bad event refuses the whole batch: the good ones before it are not written.
    let batch = format!(
        r#"[{{"type":"Ok","data":{{"a":1}}}},
            {{"type":"Ok","data":{{"b":2}},"metadata":{{"c":3}}}},
            {{"type":"Bad","data":{{}},"metadata":{{"trace":{}}}}}]"#,
        arrays(64)
    );
    refused(
        &c,
        "deep-1",
        &batch,
        &["events[2].metadata", "JSON nested deeper than 64 levels"],
    );
    // Binary events' metadata too.
    refused(
        &c,
        "deep-1",
        &format!(r#"{{"type":"B","data_base64":"AAE=","metadata":{deep}}}"#),
        &["events[0].metadata", "nested deeper than 64"],
    );

    // 64 levels are fine, and come back as sent.
    let ok = arrays(64);
    c.post_json("/streams/deep-1", &format!(r#"{{"type":"T","data":{ok}}}"#))
        .assert_status(201);
    let text = c.get("/streams/deep-1/0").text();
    assert!(text.contains(&format!(r#""data":{ok}"#)), "{text}");
}

#[test]
fn lone_surrogates_are_400_pairs_are_kept() {
    let server = TestServer::start();
    let c = server.client();
    // The escape's backslash is byte 17 of the data.
    let message = refused(
        &c,
        "s-1",
        r#"[{"type":"T","data":1},{"type":"T","data":{"name": "abc", "\ud800": 1}}]"#,
        &["events[1].data"],
    );
    assert!(
        message.contains(r"lone surrogate \ud800 at byte 17"),
        "{message}"
    );
    refused(
        &c,
        "s-1",
        r#"{"type":"T","data":{},"metadata":{"note":"x\uDC00"}}"#,
        &["events[0].metadata", r"lone surrogate \udc00"],
    );
    refused(
        &c,
        "s-1",
        r#"{"type":"T","data":["\ud83d\u0041"]}"#,
        &["events[0].data", r"lone surrogate \ud83d"],
    );

    // A pair and an escaped backslash before `ud800` (plain text) are stored as sent.
    let data = r#"{"pair":"\ud83d\ude00","text":"\\ud800"}"#;
    c.post_json("/streams/s-1", &format!(r#"{{"type":"T","data":{data}}}"#))
        .assert_status(201);
    let text = c.get("/streams/s-1/0").text();
    assert!(text.contains(data), "{text}");
    let event: Value = c.get("/streams/s-1/0").json();
    assert_eq!(
        event["data"],
        json!({"pair": "\u{1f600}", "text": "\\ud800"})
    );
}

/// A projection that emits, for each event of `src-1`, what `make` builds.
fn emitter(target: &str, make: &str) -> String {
    format!(
        "fromStream('src-1').when({{ T: (s, e) => {{ s.n = (s.n || 0) + 1; \
         emit('{target}', 'Derived', ({make})()); }} }})"
    )
}

#[test]
fn a_projection_emitting_a_poison_payload_faults_instead_of_writing_it() {
    let server = TestServer::start();
    let c = server.client();
    // JS strings may hold lone surrogates; JSON.stringify writes them as `\ud800` escapes.
    create_projection(
        &c,
        "lone",
        &emitter(
            "out-lone",
            "() => ({ s: 'a' + String.fromCharCode(0xD800) })",
        ),
    );
    // 100 levels: within what serde_json parses, beyond what the store accepts.
    create_projection(
        &c,
        "deep",
        &emitter(
            "out-deep",
            "() => { let d = 1; for (let i = 0; i < 100; i++) d = [d]; return d; }",
        ),
    );
    let source = c.append("src-1", &json!({"type": "T", "data": {}}));
    let position = source["first_position"].clone();

    for (name, target, why) in [
        ("lone", "out-lone", "surrogate"),
        ("deep", "out-deep", "nested deeper than 64 levels"),
    ] {
        let p = wait_faulted(&c, name);
        let message = p["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(why), "{name}: {p}");
        assert!(
            p["error"]["position"] == position || p["position"] == position,
            "{name}: the faulting event's position ({position}) is reported: {p}"
        );
        c.get(&format!("/streams/{target}"))
            .assert_error(404, "stream_not_found");
    }

    // A reset replays the same event: the same fault, still nothing written.
    let reset = projection_action(&c, "deep", "reset");
    reset.assert_status(200);
    let incarnation = reset.json()["incarnation"].clone();
    let p = wait_projection(&c, "deep", PROJECTION_TIMEOUT, "faulted again", |p| {
        p["status"] == "faulted" && p["incarnation"] == incarnation
    });
    assert!(
        p["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("nested deeper than 64 levels")),
        "{p}"
    );
    c.get("/streams/out-deep")
        .assert_error(404, "stream_not_found");
}
