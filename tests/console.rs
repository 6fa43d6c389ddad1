//! End-to-end: the web console (`/ui/`) in a real headless Chromium driven over WebDriver,
//! against the real `strata` binary. Each test opens its own browser session (the tests take a
//! lock so that one browser runs at a time on a shared machine) and saves a screenshot under
//! `<target>/console-screenshots/`. Without Chromium the tests skip with a printed reason,
//! except in CI (`CI=true`), where they fail.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use strata_suite::browser::{Browser, WAIT};
use strata_suite::{Client, TestServer};

/// One browser at a time.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The lock, a browser session (or `None`: skip) and a server started with `args`.
fn setup(args: &[&str]) -> Option<(MutexGuard<'static, ()>, Browser, TestServer)> {
    let guard = one_at_a_time();
    let browser = Browser::start()?;
    Some((guard, browser, TestServer::start_with(args)))
}

fn append(client: &Client, stream: &str, events: Value) {
    client.append(stream, &events);
}

/// Appended events are listed; `/` sends the browser to `/ui/`; the page asks nothing of
/// another origin.
#[test]
fn lists_appended_events() {
    let Some((_lock, browser, server)) = setup(&[]) else {
        return;
    };
    let client = server.client();
    append(
        &client,
        "order-1",
        json!([
            {"type": "OrderPlaced", "data": {"total": 99.5, "items": ["apple", "pear"]}, "metadata": {"user": "ada"}},
            {"type": "OrderPaid", "data": {"amount": 99.5}},
        ]),
    );
    append(
        &client,
        "order-2",
        json!({"type": "OrderPlaced", "data": {"total": 12}}),
    );
    append(
        &client,
        "blob-1",
        json!({"type": "Thumbnail", "data_base64": "iVBORw0KGgo="}),
    );

    let started = Instant::now();
    browser.goto(&format!("{}/", server.url()));
    let path = browser.exec("return location.pathname;", json!([]));
    assert_eq!(path, json!("/ui/"), "/ redirects a browser to the console");
    let load_ms = browser.exec(
        "const n = performance.getEntriesByType('navigation')[0]; return n.loadEventEnd - n.startTime;",
        json!([]),
    );
    eprintln!(
        "console page load: {load_ms} ms (navigation timing), {:?} including the redirect",
        started.elapsed()
    );

    browser.goto(&format!("{}/ui/#/streams", server.url()));
    browser.wait_text("main table", "order-2");
    let listed = browser.text("main table").unwrap_or_default();
    assert!(
        listed.contains("order-1") && listed.contains("blob-1"),
        "{listed}"
    );
    browser.type_into("#prefix", "order-");
    browser.click("main form button[type=submit]");
    // The unfiltered table is there until the search answers: wait for the filtered one.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let filtered = loop {
        let text = browser.text("main table").unwrap_or_default();
        if text.contains("order-2") && !text.contains("blob-1") {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "prefix search never filtered the list: {text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(filtered.contains("order-1"), "prefix search: {filtered}");
    browser.screenshot("streams");

    browser.click("a[href='#/stream/order-1']");
    browser.wait_text("#events", "OrderPaid");
    // Newest first: revision 1 is the first row.
    let first = browser.text("#events details summary").unwrap_or_default();
    assert!(
        first.contains("#1") && first.contains("OrderPaid"),
        "{first}"
    );
    browser.click("#events details:last-child summary");
    let detail = browser.wait_text("#events details:last-child", "\"apple\"");
    assert!(
        detail.contains("\"user\": \"ada\""),
        "metadata shown: {detail}"
    );
    browser.screenshot("stream");

    browser.goto(&format!("{}/ui/#/stream/blob-1", server.url()));
    browser.click("#events details summary");
    browser.wait_text("#events details", "binary, 8 bytes");

    // $all with a category filter, then a jump to a position.
    browser.goto(&format!("{}/ui/#/all?category=order", server.url()));
    browser.wait_text("#events", "order-2");
    let all = browser.text("#events").unwrap_or_default();
    assert!(!all.contains("blob-1"), "category filter: {all}");
    browser.screenshot("all");
    browser.type_into("main form.row input[aria-label=Position]", "1");
    browser.click("main form.row:has(input[aria-label=Position]) button[type=submit]");
    browser.wait_for_element("#events details");
    let jumped = browser.text("#events details summary").unwrap_or_default();
    assert!(
        jumped.contains("@1"),
        "jump to position 1, newest first: {jumped}"
    );

    let foreign = browser.exec(
        "return performance.getEntriesByType('resource').map(r => r.name).filter(n => !n.startsWith(location.origin));",
        json!([]),
    );
    assert_eq!(foreign, json!([]), "requests to another origin");
}

/// An open stream shows a new event without a reload.
#[test]
fn follows_a_stream_live() {
    let Some((_lock, browser, server)) = setup(&[]) else {
        return;
    };
    let client = server.client();
    append(&client, "live-1", json!({"type": "Started", "data": {}}));
    browser.goto(&format!("{}/ui/#/stream/live-1", server.url()));
    browser.wait_text("#events", "Started");
    browser.click("#follow");
    browser.wait_text("#live-status", "live");
    append(
        &client,
        "live-1",
        json!({"type": "Arrived", "data": {"n": 2}}),
    );
    browser.wait_text("#events details:first-child", "Arrived");
    browser.screenshot("stream-live");
}

/// Deleting a stream asks for a confirmation that names it; a hard delete tombstones it.
#[test]
fn deletes_a_stream_after_a_confirmation() {
    let Some((_lock, browser, server)) = setup(&[]) else {
        return;
    };
    let client = server.client();
    append(&client, "doomed-3", json!({"type": "Created", "data": {}}));
    browser.goto(&format!("{}/ui/#/stream/doomed-3", server.url()));
    browser.wait_text("#stream-metadata", "{}");
    browser.click("#hard");
    browser.click("#delete-stream");
    let question = browser.dialog_text();
    assert!(
        question.contains("\"doomed-3\"") && question.contains("HARD"),
        "{question}"
    );
    browser.accept_dialog();
    browser.wait_text("main", "Stream \"doomed-3\" deleted.");
    client
        .get("/streams/doomed-3")
        .assert_error(410, "stream_deleted");
    client
        .post_json("/streams/doomed-3", r#"{"type": "Again"}"#)
        .assert_error(410, "stream_deleted");
}

/// The append form checks the JSON and shows the API's 409 for a wrong expected revision.
#[test]
fn append_form_shows_wrong_expected_revision() {
    let Some((_lock, browser, server)) = setup(&[]) else {
        return;
    };
    append(
        &server.client(),
        "cart-7",
        json!({"type": "Created", "data": {}}),
    );
    browser.goto(&format!("{}/ui/#/append/cart-7", server.url()));
    browser.type_into("#a-type", "ItemAdded");
    browser.type_into("#a-data", "{\"sku\": ");
    browser.wait_text("#a-data-check", "not valid JSON");
    browser.type_into("#a-data", "{\"sku\": \"apple\"}");
    browser.wait_text("#a-data-check", "valid JSON");
    browser.type_into("#a-expected", "5");
    browser.click("#a-submit");
    let message = browser.wait_text("#a-result", "409");
    assert!(message.contains("wrong_expected_revision"), "{message}");
    assert!(message.contains("actual 0"), "{message}");
    browser.screenshot("append-409");

    browser.type_into("#a-expected", "0");
    browser.click("#a-submit");
    browser.wait_text("#a-result", "revision 1");
    let events = server.client().read_stream("cart-7");
    assert_eq!(events.len(), 2);
    assert_eq!(events[1]["data"], json!({"sku": "apple"}));
}

/// A projection with a syntax error shows the line of the 400; fixed, it is created.
#[test]
fn projection_syntax_error_shows_its_line() {
    let Some((_lock, browser, server)) = setup(&[]) else {
        return;
    };
    append(
        &server.client(),
        "order-1",
        json!({"type": "OrderPlaced", "data": {}}),
    );
    browser.goto(&format!("{}/ui/#/projection-new", server.url()));
    browser.type_into("#p-name", "counter");
    browser.type_into(
        "#p-code",
        "fromAll()\n.when({\n$any: (s, e) => { s.count += ; },\n});",
    );
    browser.click("#p-save");
    let line = browser.wait_text("#p-error-line", "line 3");
    assert!(line.contains("column"), "{line}");
    let marked = browser.text(".editor .gutter .bad");
    assert_eq!(marked.as_deref(), Some("3"), "the gutter marks line 3");
    browser.screenshot("projection-syntax-error");

    browser.type_into(
        "#p-code",
        "fromAll()\n.when({\n$init: () => ({count: 0}),\n$any: (s, e) => { s.count += 1; return s; },\n});",
    );
    browser.click("#p-save");
    browser.wait_text("#p-state", "\"count\": 1");
    browser.wait_text("#p-status", "running");
    browser.screenshot("projection");
    browser.click("#p-status button:nth-of-type(1)"); // Stop
    browser.wait_text("#p-status .badge", "stopped");
    browser.click("#p-status button:nth-of-type(2)"); // Start
    browser.wait_text("#p-status .badge", "running");
}

/// A parked event is shown with its event and replayed from the group's page.
#[test]
fn replays_a_parked_event() {
    let Some((_lock, browser, server)) = setup(&[]) else {
        return;
    };
    let client = server.client();
    client
        .put_json(
            "/groups/billing",
            r#"{"source":"invoice-9","max_deliveries":1}"#,
        )
        .assert_status(201);
    append(
        &client,
        "invoice-9",
        json!({"type": "InvoiceIssued", "data": {"amount": 40}}),
    );
    let deadline = Instant::now() + WAIT;
    let ack_id = loop {
        let polled = client
            .post_json("/groups/billing/poll?wait_ms=1000", "")
            .json();
        if let Some(id) = polled["messages"][0]["ack_id"].as_str() {
            break id.to_owned();
        }
        assert!(Instant::now() < deadline, "nothing delivered");
    };
    client
        .post_json(
            "/groups/billing/nack",
            &json!({"ack_ids": [ack_id], "action": "park"}).to_string(),
        )
        .assert_status(200);

    browser.goto(&format!("{}/ui/#/groups", server.url()));
    browser.wait_text("main table", "billing");
    browser.click("a[href='#/group/billing']");
    browser.wait_text("#parked", "Parked events (1)");
    browser.wait_text("#parked", "\"amount\": 40");
    browser.screenshot("group-parked");
    browser.click("#replay-parked");
    browser.wait_text("#replay-result", "Replayed 1");
    let group = client.get("/groups/billing").json();
    assert_eq!(group["parked"], json!(0), "{group}");
}

/// The dashboard shows the server's figures and updates them.
#[test]
fn dashboard_shows_live_figures() {
    let Some((_lock, browser, server)) = setup(&["--fsync", "always"]) else {
        return;
    };
    let client = server.client();
    browser.goto(&format!("{}/ui/#/dashboard", server.url()));
    browser.wait_text("#stat-version", env!("CARGO_PKG_VERSION"));
    browser.wait_text("#stat-health", "ok");
    for i in 0..20 {
        append(
            &client,
            &format!("tick-{}", i % 3),
            json!({"type": "Tick", "data": {"i": i}}),
        );
    }
    // The second sample (after ~3 s) gives rates and fsync quantiles.
    browser.wait_text("#stat-fsync", "/");
    let deadline = Instant::now() + WAIT;
    while browser
        .text("#stat-fsync")
        .unwrap_or_default()
        .contains('–')
    {
        append(&client, "tick-x", json!({"type": "Tick", "data": {}}));
        assert!(Instant::now() < deadline, "no fsync latency shown");
        std::thread::sleep(Duration::from_millis(200));
    }
    browser.screenshot("dashboard");
}

/// With auth on the console asks for a token, refuses a wrong one, and sends the right one on
/// every call, the live view included; the token is in no URL and no cookie.
#[test]
fn logs_in_with_a_token() {
    let Some((_lock, browser, server)) = setup(&["--auth-token", "s3cret-t0ken"]) else {
        return;
    };
    let client = server.client().with_token("s3cret-t0ken");
    append(&client, "secure-1", json!({"type": "Opened", "data": {}}));
    browser.goto(&format!("{}/ui/#/stream/secure-1", server.url()));
    browser.type_into("#token", "wrong-token");
    browser.click("#login");
    let refused = browser.wait_text("#login-result", "401");
    assert!(refused.contains("unknown bearer token"), "{refused}");
    browser.screenshot("login-refused");

    browser.type_into("#token", "s3cret-t0ken");
    browser.click("#login");
    browser.wait_text("#events", "Opened");
    browser.click("#follow");
    browser.wait_text("#live-status", "live");
    append(&client, "secure-1", json!({"type": "Closed", "data": {}}));
    browser.wait_text("#events details:first-child", "Closed");
    let leaks = browser.exec(
        "return [location.href, document.cookie].concat(performance.getEntriesByType('resource').map(r => r.name));",
        json!([]),
    );
    assert!(
        !leaks.to_string().contains("s3cret"),
        "token leaked: {leaks}"
    );
    let stored = browser.exec("return sessionStorage.getItem('strata.token');", json!([]));
    assert_eq!(stored, json!("s3cret-t0ken"));
}

/// Without a browser: `/` is a JSON 404 for API clients and a redirect for browsers; the
/// console's files are served without a token; other methods and unknown files get the API's
/// JSON errors.
#[test]
fn console_routes_answer_api_clients_in_json() {
    let server = TestServer::start_with(&["--auth-token", "t0ken"]);
    let c = server.client();
    for accept in [
        None,
        Some("*/*"),
        Some("application/json"),
        Some("application/json, text/html;q=0.5"),
    ] {
        let headers: Vec<(&str, &str)> = accept.iter().map(|a| ("Accept", *a)).collect();
        c.get_with("/", &headers).assert_error(404, "not_found");
    }
    let browser_accept = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
    let reply = c.get_with("/", &[("Accept", browser_accept)]);
    assert_eq!(reply.status, 303);
    assert_eq!(reply.header("location"), Some("/ui/"));
    c.post_json("/", "{}").assert_error(404, "not_found");
    c.delete("/", &[]).assert_error(404, "not_found");

    for (path, content_type) in [
        ("/ui/", "text/html; charset=utf-8"),
        ("/ui/app.js", "text/javascript; charset=utf-8"),
        ("/ui/app.css", "text/css; charset=utf-8"),
    ] {
        let reply = c.get(path);
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
        assert_eq!(reply.header("content-type"), Some(content_type), "{path}");
        assert!(reply.header("content-security-policy").is_some(), "{path}");
        let reply = c.post_json(path, "{}");
        reply.assert_error(405, "method_not_allowed");
        assert_eq!(reply.header("allow"), Some("GET,HEAD"), "{path}");
    }
    assert_eq!(c.get("/ui").header("location"), Some("/ui/"));
    c.get("/ui/nope.js").assert_error(404, "not_found");
    // The API itself still wants the token.
    c.get("/streams").assert_error(401, "unauthorized");
}
