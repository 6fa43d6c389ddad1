//! End-to-end: the client subcommands `strata append`, `strata read` and `strata tail`, run as
//! processes against a running `strata serve`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{json, Value};
use strata_suite::cli::{fails, json_lines, ok, run, strata};
use strata_suite::{strata_binary, TestServer};

#[test]
fn append_and_read_subcommands() {
    let server = TestServer::start();
    let url = server.url();
    let url = url.as_str();

    // --type with DATA as an argument: the data is passed through exactly.
    let out = ok(&strata(
        url,
        &[
            "append",
            "cli-1",
            "--type",
            "Greeted",
            r#"{"name": "ada", "n": 1.0}"#,
        ],
        None,
    ));
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        v,
        json!({"stream": "cli-1", "first_revision": 0, "last_revision": 0, "first_position": 0, "last_position": 0})
    );
    let raw = server.client().get("/streams/cli-1/0").text();
    assert!(raw.contains(r#"{"name": "ada", "n": 1.0}"#), "{raw}");
    // DATA from stdin.
    let out = ok(&strata(
        url,
        &["append", "cli-1", "--type", "Greeted"],
        Some(r#"{"name": "bob"}"#),
    ));
    assert_eq!(
        serde_json::from_str::<Value>(out.trim()).unwrap()["first_revision"],
        1
    );
    // Without --type: the body as given (a batch).
    let out = ok(&strata(
        url,
        &["append", "cli-1"],
        Some(r#"[{"type": "A", "data": 1}, {"type": "B", "data": 2}]"#),
    ));
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (v["first_revision"].as_u64(), v["last_revision"].as_u64()),
        (Some(2), Some(3))
    );
    // --expected-revision: a conflict is a failure with the API error on stderr.
    let append_expecting = |stream: &str, expected: &str| {
        strata(
            url,
            &[
                "append",
                stream,
                "--type",
                "X",
                "--expected-revision",
                expected,
                "{}",
            ],
            None,
        )
    };
    let err = fails(&append_expecting("cli-1", "0"));
    assert!(
        err.contains("409") && err.contains("wrong_expected_revision"),
        "{err}"
    );
    ok(&append_expecting("cli-1", "3"));
    let err = fails(&append_expecting("cli-new", "stream_exists"));
    assert!(err.contains("wrong_expected_revision"), "{err}");
    // --id makes a retry idempotent; --metadata is stored.
    let id = uuid::Uuid::new_v4().to_string();
    let args = [
        "append",
        "cli-1",
        "--type",
        "Once",
        "--id",
        &id,
        "--metadata",
        r#"{"by": "cli"}"#,
        "null",
    ];
    let first = ok(&strata(url, &args, None));
    let again = ok(&strata(url, &args, None));
    assert_eq!(
        serde_json::from_str::<Value>(&first).unwrap(),
        serde_json::from_str::<Value>(&again).unwrap()
    );
    // Bad input is refused.
    fails(&strata(
        url,
        &["append", "cli-1", "--type", "X", "not json"],
        None,
    ));
    let err = fails(&strata(
        url,
        &["append", "cli-1"],
        Some(r#"{"type": "A", "colour": 1}"#),
    ));
    assert!(
        err.contains("400") && err.contains("invalid_request"),
        "{err}"
    );
    let err = fails(&strata(url, &["append", "$x", "--type", "X", "1"], None));
    assert!(err.contains("400"), "{err}");

    // read: every event, one JSON per line, as the server returns them.
    let events = json_lines(&ok(&strata(url, &["read", "cli-1"], None)));
    assert_eq!(events.len(), 6);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["revision"], i as u64);
    }
    assert_eq!(events[0]["data"], json!({"name": "ada", "n": 1.0}));
    assert_eq!(events[5]["id"], id.as_str());
    assert_eq!(events[5]["metadata"], json!({"by": "cli"}));
    assert_eq!(events, server.client().read_stream("cli-1"));
    // --from / --limit / --direction.
    // The revisions `strata ARGS` prints.
    let revs = |args: &[&str]| -> Vec<u64> {
        json_lines(&ok(&strata(url, args, None)))
            .iter()
            .map(|e| e["revision"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(
        revs(&["read", "cli-1", "--from", "1", "--limit", "2"]),
        [1, 2]
    );
    assert_eq!(
        revs(&["read", "cli-1", "--direction", "backward", "--limit", "2"]),
        [5, 4]
    );
    assert_eq!(revs(&["read", "cli-1", "--from", "4"]), [4, 5]);
    assert_eq!(revs(&["read", "cli-1", "--from", "end"]), Vec::<u64>::new());
    // --all with filters.
    ok(&strata(
        url,
        &["append", "other-1", "--type", "Greeted", "{}"],
        None,
    ));
    let all = json_lines(&ok(&strata(url, &["read", "--all"], None)));
    assert_eq!(all.len(), 7);
    let greeted = json_lines(&ok(&strata(
        url,
        &["read", "--all", "--types", "Greeted"],
        None,
    )));
    assert_eq!(greeted.len(), 3);
    let other = json_lines(&ok(&strata(
        url,
        &["read", "--all", "--category", "other"],
        None,
    )));
    assert_eq!(other.len(), 1);
    let prefixed = json_lines(&ok(&strata(
        url,
        &["read", "--all", "--stream-prefix", "cli-", "--limit", "2"],
        None,
    )));
    assert_eq!(prefixed.len(), 2);
    // One flow, from the correlation index.
    ok(&strata(
        url,
        &[
            "append",
            "flow-1",
            "--type",
            "Started",
            "--metadata",
            r#"{"correlation_id":"cli-flow"}"#,
            "{}",
        ],
        None,
    ));
    let flow = json_lines(&ok(&strata(
        url,
        &["read", "--all", "--correlation-id", "cli-flow"],
        None,
    )));
    assert_eq!(flow.len(), 1);
    assert_eq!(flow[0]["stream"], "flow-1");
    // Errors: a missing stream, a bad limit, no server.
    let err = fails(&strata(url, &["read", "never-1"], None));
    assert!(
        err.contains("404") && err.contains("stream_not_found"),
        "{err}"
    );
    let err = fails(&strata(url, &["read", "cli-1", "--limit", "0"], None));
    assert!(err.contains("400"), "{err}");
    // --server wins over STRATA_SERVER.
    let out = ok(&strata(
        "http://127.0.0.1:9",
        &["read", "cli-1", "--server", url, "--limit", "1"],
        None,
    ));
    assert_eq!(json_lines(&out).len(), 1);
    fails(&strata("http://127.0.0.1:9", &["read", "cli-1"], None));
}

/// Lines of a child's stdout, through a channel (for reading with a timeout).
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

fn tail(url: &str, args: &[&str]) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(strata_binary())
        .arg("tail")
        .args(args)
        .args(["--server", url])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = lines_of(&mut child);
    (child, rx)
}

#[track_caller]
fn next_event(rx: &mpsc::Receiver<String>) -> Value {
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("no line from strata tail");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

#[test]
fn tail_follows_a_stream_and_the_whole_log() {
    let server = TestServer::start();
    let url = server.url();
    let c = server.client();
    c.append(
        "tail-1",
        &json!([{"type": "A", "data": 0}, {"type": "A", "data": 1}]),
    );

    let (mut from_start, rx_start) = tail(&url, &["tail-1", "--from", "start"]);
    let (mut from_end, rx_end) = tail(&url, &["tail-1"]);
    let (mut all, rx_all) = tail(&url, &["--all", "--types", "B"]);
    let (mut not_yet, rx_not_yet) = tail(&url, &["tail-2", "--from", "start"]);
    // History first.
    assert_eq!(next_event(&rx_start)["revision"], 0);
    assert_eq!(next_event(&rx_start)["revision"], 1);
    // Give the from-end tails time to subscribe before appending.
    let subscribed = strata_suite::wait_for(Duration::from_secs(20), || {
        let info = c.get("/info").json();
        (info["open_subscriptions"].as_u64() == Some(4)).then_some(())
    });
    assert!(subscribed.is_some(), "the tails did not subscribe");
    // Live.
    for i in 2..5 {
        c.append("tail-1", &json!({"type": "B", "data": i}));
    }
    c.append("tail-2", &json!({"type": "C"}));
    for i in 2..5u64 {
        let e = next_event(&rx_start);
        assert_eq!(
            (e["revision"].as_u64(), e["data"].as_u64()),
            (Some(i), Some(i))
        );
        assert_eq!(
            next_event(&rx_end)["revision"],
            i,
            "from end: only new events"
        );
        let e = next_event(&rx_all);
        assert_eq!(
            (e["type"].as_str(), e["stream"].as_str()),
            (Some("B"), Some("tail-1"))
        );
    }
    assert_eq!(next_event(&rx_not_yet)["stream"], "tail-2");
    // Nothing else was printed.
    std::thread::sleep(Duration::from_millis(200));
    assert!(rx_start.try_recv().is_err());
    assert!(rx_all.try_recv().is_err());
    for child in [&mut from_start, &mut from_end, &mut all, &mut not_yet] {
        assert!(child.try_wait().unwrap().is_none(), "tail exited early");
        child.kill().unwrap();
        child.wait().unwrap();
    }

    // A deleted stream ends the tail with an error.
    let (mut gone, rx_gone) = tail(&url, &["tail-1", "--from", "start"]);
    assert_eq!(next_event(&rx_gone)["revision"], 0);
    c.delete("/streams/tail-1", &[]).assert_status(204);
    let status = strata_suite::wait_for(Duration::from_secs(20), || gone.try_wait().unwrap());
    match status {
        Some(status) => assert!(!status.success()),
        None => {
            gone.kill().unwrap();
            gone.wait().unwrap();
            panic!("strata tail did not end after its stream was deleted");
        }
    }
}

#[test]
fn client_subcommands_with_auth() {
    let server = TestServer::start_with(&["--auth-token", "t0ken"]);
    let url = server.url();
    let err = fails(&strata(
        &url,
        &["append", "auth-1", "--type", "A", "{}"],
        None,
    ));
    assert!(err.contains("401") && err.contains("unauthorized"), "{err}");
    ok(&strata(
        &url,
        &["append", "auth-1", "--type", "A", "{}", "--token", "t0ken"],
        None,
    ));
    let err = fails(&strata(&url, &["read", "auth-1"], None));
    assert!(err.contains("401"), "{err}");
    let out = ok(&strata(&url, &["read", "auth-1", "--token", "t0ken"], None));
    assert_eq!(json_lines(&out).len(), 1);
    // STRATA_TOKEN in the environment.
    let mut cmd = Command::new(strata_binary());
    cmd.args(["read", "auth-1", "--server", &url])
        .env("STRATA_TOKEN", "t0ken");
    assert_eq!(json_lines(&ok(&run(cmd, None))).len(), 1);
    // tail with a bad token fails at once instead of retrying forever.
    let mut cmd = Command::new(strata_binary());
    cmd.args(["tail", "auth-1", "--server", &url, "--token", "wrong"]);
    let err = fails(&run(cmd, None));
    assert!(err.contains("401"), "{err}");
}
