//! End-to-end: `strata projection create|list|show|state|stop|start|reset|delete`, run as
//! processes against a running `strata serve`.

use std::path::Path;
use std::process::Output;

use serde_json::{json, Value};
use strata_suite::cli::{ok, strata};
use strata_suite::projections::{wait_position, wait_state_at};
use strata_suite::{Client, TestServer};

const ORDER_TOTALS: &str = include_str!("../docs/examples/projections/order-totals.js");

/// `strata projection ARGS` against `server`; at most 60 s.
fn projection(server: &str, args: &[&str]) -> Output {
    strata(server, &[&["projection"], args].concat(), None)
}

/// Asserts a failure (exit code 1, nothing on stdout); returns stderr.
#[track_caller]
fn fails(out: &Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected exit code 1; stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty(), "{out:?}");
    String::from_utf8(out.stderr.clone()).unwrap()
}

#[track_caller]
fn json_line(text: &str) -> Value {
    assert_eq!(text.lines().count(), 1, "one line expected: {text:?}");
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"))
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

/// Appends an `OrderPlaced` of `customer` for `total` to `stream`; returns its position.
fn place_order(c: &Client, stream: &str, customer: &str, total: u64) -> u64 {
    c.append(
        stream,
        &json!({"type": "OrderPlaced", "data": {"customer": customer, "total": total}}),
    )["last_position"]
        .as_u64()
        .unwrap()
}

#[test]
fn projection_commands_drive_the_whole_life_cycle() {
    let server = TestServer::start();
    let url = server.url();
    let c = server.client();
    let files = tempfile::tempdir().unwrap();
    let totals = write(files.path(), "order-totals.js", ORDER_TOTALS);
    place_order(&c, "order-1", "c-1", 30);
    let last = place_order(&c, "order-2", "c-2", 12);

    // create
    ok(&projection(&url, &["create", "totals", &totals]));
    wait_position(&c, "totals", last);

    // list: one JSON line per projection
    let list = ok(&projection(&url, &["list"]));
    let p = json_line(&list);
    assert_eq!(
        (&p["name"], &p["status"]),
        (&json!("totals"), &json!("running"))
    );

    // show
    let p = json_line(&ok(&projection(&url, &["show", "totals"])));
    assert_eq!(p["name"], "totals");
    assert_eq!(p["status"], "running");
    assert!(p["position"].as_u64().is_some_and(|x| x >= last), "{p}");

    // state --partition
    let s = json_line(&ok(&projection(
        &url,
        &["state", "totals", "--partition", "c-1"],
    )));
    assert_eq!(s, json!({"orders": 1, "cancelled": 0, "total": 30}));
    let err = fails(&projection(
        &url,
        &["state", "totals", "--partition", "c-404"],
    ));
    assert!(err.contains("404") && err.contains("not_found"), "{err}");

    // stop: no more folding until start
    ok(&projection(&url, &["stop", "totals"]));
    let p = json_line(&ok(&projection(&url, &["show", "totals"])));
    assert_eq!(p["status"], "stopped");
    let last = place_order(&c, "order-3", "c-1", 5);
    let s = json_line(&ok(&projection(
        &url,
        &["state", "totals", "--partition", "c-1"],
    )));
    assert_eq!(s, json!({"orders": 1, "cancelled": 0, "total": 30}));
    ok(&projection(&url, &["start", "totals"]));
    // Folded up to `last`, to the same state after a start and after a reset.
    let caught_up = || {
        wait_state_at(
            &c,
            "totals",
            Some("c-1"),
            &json!({"orders": 2, "cancelled": 0, "total": 35}),
            last,
        )
    };
    caught_up();

    // reset: folded again from the start, to the same state
    ok(&projection(&url, &["reset", "totals"]));
    caught_up();

    // delete
    ok(&projection(&url, &["delete", "totals"]));
    let err = fails(&projection(&url, &["show", "totals"]));
    assert!(err.contains("404") && err.contains("not_found"), "{err}");
    assert_eq!(ok(&projection(&url, &["list"])), "");
    let err = fails(&projection(&url, &["delete", "totals"]));
    assert!(err.contains("404"), "{err}");
}

#[test]
fn create_reports_syntax_errors_with_file_line_and_source() {
    let server = TestServer::start();
    let url = server.url();
    let files = tempfile::tempdir().unwrap();
    let bad = write(
        files.path(),
        "bad.js",
        "fromAll()\n  .when({\n    $any: (s, e) => { s.n +=; return s; },\n  });\n",
    );
    let err = fails(&projection(&url, &["create", "broken", &bad]));
    assert!(
        err.contains(&format!("{bad}:3")),
        "FILE:LINE in the message: {err}"
    );
    assert!(
        err.contains("   3 |     $any: (s, e) => { s.n +=; return s; },"),
        "the offending line is shown: {err}"
    );
    // Nothing was created.
    let err = fails(&projection(&url, &["show", "broken"]));
    assert!(err.contains("not_found"), "{err}");

    // A missing file is a local error; an unreachable server a transport error.
    let err = fails(&projection(
        &url,
        &["create", "x", &format!("{bad}.missing")],
    ));
    assert!(err.contains("bad.js.missing"), "{err}");
    let err = fails(&projection("http://127.0.0.1:9", &["list"]));
    assert!(!err.is_empty());
}
