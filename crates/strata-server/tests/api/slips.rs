//! Small contract slips found by the audit: strict number syntax in query strings, headers and paths,
//! the JSON charset, bad percent-encoding in paths.

use crate::support::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_and_positions_in_query_strings_are_plain_digits() {
    let s = TestServer::start();
    s.append_many("q-1", 3).await;
    for q in [
        "limit=%2B5",
        "limit=+5",
        "limit=%205",
        "limit=5%20",
        "from=%2B1",
        "limit=0x5",
        "limit=",
    ] {
        s.get(&format!("/streams/q-1?{q}"))
            .await
            .assert_error(400, "invalid_request");
        s.get(&format!("/all?{q}"))
            .await
            .assert_error(400, "invalid_request");
    }
    let page = s.get("/streams/q-1?limit=2&from=1").await;
    assert_eq!(page.status, 200, "{}", page.text());
    assert_eq!(page.json()["events"].as_array().map(Vec::len), Some(2));
    // Leading zeros are still digits.
    assert_eq!(s.get("/streams/q-1?limit=007").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expected_revision_must_be_a_keyword_or_plain_digits() {
    let s = TestServer::start();
    s.append("er-1", r#"{"type":"T"}"#).await;
    for bad in ["", " ", "+0", "0x0", "-0", " +0 "] {
        s.post(
            "/streams/er-1",
            r#"{"type":"T"}"#,
            &[("expected-revision", bad)],
        )
        .await
        .assert_error(400, "invalid_request");
        s.call("DELETE", "/streams/er-1", &[("expected-revision", bad)], "")
            .await
            .assert_error(400, "invalid_request");
    }
    // Nothing was written or deleted by the refused requests.
    let page = s.get("/streams/er-1").await;
    assert_eq!(page.status, 200, "{}", page.text());
    assert_eq!(page.json()["events"].as_array().map(Vec::len), Some(1));
    let ok = s
        .post(
            "/streams/er-1",
            r#"{"type":"T"}"#,
            &[("expected-revision", " 0 ")],
        )
        .await;
    assert_eq!(ok.status, 201, "{}", ok.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_bodies_must_be_utf8() {
    let s = TestServer::start();
    let body = r#"{"type":"T"}"#;
    for ct in [
        "application/json; charset=latin1",
        "application/json; charset=iso-8859-1",
        "application/json;charset=\"utf-16\"",
        "application/json; charset=utf-8; charset=latin1",
        "application/json; charset=",
    ] {
        s.call("POST", "/streams/cs-1", &[("content-type", ct)], body)
            .await
            .assert_error(415, "unsupported_media_type");
    }
    s.get("/streams/cs-1")
        .await
        .assert_error(404, "stream_not_found");
    for ct in [
        "application/json",
        "application/json; charset=utf-8",
        "application/json;charset=UTF-8",
        "application/json; charset=\"utf-8\"",
        "Application/JSON; Charset=\"Utf-8\"",
        "application/json; foo=bar",
    ] {
        let r = s
            .call("POST", "/streams/cs-1", &[("content-type", ct)], body)
            .await;
        assert_eq!(r.status, 201, "{ct}: {}", r.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_percent_encoding_in_paths_is_400() {
    let s = TestServer::start();
    for path in [
        "/streams/%zz",
        "/streams/%",
        "/streams/a%2",
        "/streams/%zz/0",
        "/streams/%zz/metadata",
        "/streams/ok/%g0",
        "/streams/%C3%28",
    ] {
        s.get(path).await.assert_error(400, "invalid_request");
    }
    s.post("/streams/%zz", r#"{"type":"T"}"#, &[])
        .await
        .assert_error(400, "invalid_request");
    s.call("DELETE", "/streams/%", &[], "")
        .await
        .assert_error(400, "invalid_request");
    // Nothing was written under a literal name.
    let all = s.get("/all").await;
    assert_eq!(all.json()["events"].as_array().map(Vec::len), Some(0));
    // Good encodings still decode.
    s.append("a%25b", r#"{"type":"T"}"#).await;
    let r = s.get("/streams/a%25b").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["events"][0]["stream"], "a%b");
}

/// `Last-Event-ID` and the revision of `/streams/{stream}/{revision}` are plain digits too:
/// `+5` is not 5.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_event_id_and_event_revisions_are_plain_digits() {
    use axum::body::Body;
    use axum::http::Request;

    let s = TestServer::start();
    s.append_many("le-1", 3).await;
    for uri in ["/streams/le-1", "/all"] {
        for bad in ["+1", " +1 ", "-0", "0x1", "1e0"] {
            let req = Request::builder()
                .uri(uri)
                .header("accept", "text/event-stream")
                .header("last-event-id", bad)
                .body(Body::empty())
                .expect("request");
            // Refused before the subscription starts: a 200 here would be an endless body.
            let res = s.send(req).await;
            assert_eq!(res.status(), 400, "{uri} with Last-Event-ID {bad:?}");
        }
    }
    for path in ["/streams/le-1/+1", "/streams/le-1/%2B1", "/streams/le-1/-0"] {
        s.get(path).await.assert_error(400, "invalid_request");
    }
    let one = s.get("/streams/le-1/01").await;
    assert_eq!(one.status, 200, "{}", one.text());
    assert_eq!(one.json()["revision"], 1);
}

/// The numbers of consumer-group requests (`wait_ms`, `after`) are plain digits too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_numbers_are_plain_digits() {
    let s = TestServer::start();
    let r = s
        .call(
            "PUT",
            "/groups/g",
            &[("content-type", "application/json")],
            r#"{"source": "$all"}"#,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    for uri in [
        "/groups/g/poll?wait_ms=%2B5",
        "/groups/g/poll?wait_ms=%205",
        "/groups/g/poll?wait_ms=0x5",
        "/groups/g/poll?max=%2B5&wait_ms=0",
    ] {
        s.call("POST", uri, &[], "")
            .await
            .assert_error(400, "invalid_request");
    }
    for uri in [
        "/groups/g/parked?after=%2B1",
        "/groups/g/parked?after=%201",
        "/groups/g/parked?max=%2B5",
    ] {
        s.get(uri).await.assert_error(400, "invalid_request");
    }
    let ok = s.call("POST", "/groups/g/poll?wait_ms=0", &[], "").await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    let ok = s.get("/groups/g/parked?after=0").await;
    assert_eq!(ok.status, 200, "{}", ok.text());
}
