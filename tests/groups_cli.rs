//! End-to-end: `strata group ...` and `strata consume` run as processes against a running
//! `strata serve` (docs/http-api.md, Consumer groups).

use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use strata_suite::cli::{self, ok};
use strata_suite::groups::Group;
use strata_suite::{strata_binary, wait_for, Client, TestServer};

/// `strata ARGS` against `server`; waits (at most 60 s) for it.
fn strata(server: &str, args: &[&str]) -> Output {
    cli::strata(server, args, None)
}

/// Asserts a failure; returns stderr.
#[track_caller]
fn fails(out: &Output) -> String {
    cli::assert_failed(out);
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Appends events with `data.seq` in `range` to `stream`.
fn append_seq(client: &Client, stream: &str, range: std::ops::Range<u64>) {
    let events: Vec<Value> = range
        .map(|seq| json!({"type": "Numbered", "data": {"seq": seq}}))
        .collect();
    client.append(stream, &Value::Array(events));
}

/// A state field of a group, at the top level or inside `state`.
fn num(state: &Value, name: &str) -> u64 {
    state
        .get(name)
        .or_else(|| state.get("state").and_then(|s| s.get(name)))
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("no integer {name} in {state}"))
}

#[test]
fn group_create_list_show_delete() {
    let server = TestServer::start();
    let url = server.url();
    append_seq(&server.client(), "cli-1", 0..3);
    let create = [
        "group",
        "create",
        "g1",
        "--source",
        "cli-1",
        "--ack-timeout-ms",
        "500",
        "--max-deliveries",
        "2",
        "--ordering",
        "per_stream",
    ];
    let out = strata(&url, &create);
    let created: Value = serde_json::from_str(ok(&out).trim()).unwrap();
    assert_eq!(created["source"], "cli-1", "{created}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("created"));
    // The same again: no change, still success.
    ok(&strata(&url, &create));
    ok(&strata(
        &url,
        &["group", "create", "g2", "--source", "$all", "--from", "end"],
    ));

    let table = ok(&strata(&url, &["group", "list"]));
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("NAME"), "{table}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("g1 ") && l.contains("cli-1")),
        "{table}"
    );
    assert!(lines.iter().any(|l| l.starts_with("g2 ")), "{table}");
    let json_lines = ok(&strata(&url, &["group", "list", "--json"]));
    let groups: Vec<Value> = json_lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(groups.len(), 2, "{json_lines}");

    let show = ok(&strata(&url, &["group", "show", "g1"]));
    for expected in [
        "source: cli-1",
        "ack_timeout_ms: 500",
        "max_deliveries: 2",
        "ordering: per_stream",
        "in_flight: 0",
        "parked: 0",
        "lag: 3",
    ] {
        assert!(
            show.lines().any(|l| l.ends_with(expected)),
            "{expected:?} not in:\n{show}"
        );
    }
    let shown: Value =
        serde_json::from_str(ok(&strata(&url, &["group", "show", "g1", "--json"])).trim()).unwrap();
    assert_eq!(num(&shown, "lag"), 3);

    ok(&strata(&url, &["group", "delete", "g1"]));
    let err = fails(&strata(&url, &["group", "show", "g1"]));
    assert!(err.contains("404") && err.contains("not_found"), "{err}");
    let err = fails(&strata(&url, &["group", "delete", "g1"]));
    assert!(err.contains("not_found"), "{err}");
    let err = fails(&strata(
        &url,
        &[
            "group",
            "create",
            "g3",
            "--source",
            "$all",
            "--ordering",
            "random",
        ],
    ));
    assert!(err.contains("random"), "{err}");
    let err = fails(&strata(
        &url,
        &[
            "group", "create", "g3", "--source", "$all", "--from", "middle",
        ],
    ));
    assert!(
        err.contains("400") && err.contains("invalid_request"),
        "{err}"
    );
    let table = ok(&strata(&url, &["group", "list"]));
    assert!(!table.contains("g1") && !table.contains("g3"), "{table}");
}

#[test]
fn consume_prints_events_and_acks_them() {
    let server = TestServer::start();
    let url = server.url();
    let client = server.client();
    append_seq(&client, "print-1", 0..5);
    let group = Group::create(&client, "printer", &json!({"source": "print-1"}));
    let out = ok(&strata(
        &url,
        &["consume", "printer", "--until-empty", "--wait-ms", "300"],
    ));
    let seqs: Vec<u64> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["data"]["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs, [0, 1, 2, 3, 4]);
    let state = group.state();
    assert_eq!(num(&state, "in_flight"), 0, "{state}");
    assert_eq!(num(&state, "lag"), 0, "{state}");
    // Acked: a second run finds nothing.
    let out = ok(&strata(
        &url,
        &["consume", "printer", "--until-empty", "--wait-ms", "200"],
    ));
    assert_eq!(out, "");

    // --count stops after that many, in batches no larger than what is left.
    append_seq(&client, "print-1", 5..10);
    let out = ok(&strata(
        &url,
        &["consume", "printer", "--count", "3", "--max", "2"],
    ));
    assert_eq!(out.lines().count(), 3, "{out}");
    assert_eq!(num(&group.state(), "in_flight"), 0);
    assert_eq!(num(&group.state(), "lag"), 2);

    let err = fails(&strata(&url, &["consume", "nope", "--until-empty"]));
    assert!(err.contains("not_found"), "{err}");
}

#[test]
fn consume_exec_acks_on_success_and_nacks_on_failure() {
    let server = TestServer::start();
    let url = server.url();
    let client = server.client();
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.ndjson");
    let env = dir.path().join("env.txt");
    append_seq(&client, "exec-1", 0..4);
    let group = Group::create(&client, "runner", &json!({"source": "exec-1"}));
    let script = format!(
        "cat >> '{}' && echo \"$STRATA_STREAM $STRATA_REVISION $STRATA_POSITION $STRATA_DELIVERY $STRATA_EVENT_TYPE $STRATA_EVENT_ID $STRATA_GROUP\" >> '{}'",
        events.display(),
        env.display()
    );
    ok(&strata(
        &url,
        &[
            "consume", "runner", "--count", "4", "--exec", "sh", "-c", &script,
        ],
    ));
    let written = std::fs::read_to_string(&events).unwrap();
    let got: Vec<Value> = written
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(got.len(), 4, "{written}");
    let env_lines: Vec<String> = std::fs::read_to_string(&env)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    for (i, e) in got.iter().enumerate() {
        assert_eq!(e["data"]["seq"], i as u64);
        assert_eq!(
            env_lines[i],
            format!(
                "exec-1 {i} {} 1 Numbered {} runner",
                e["position"],
                e["id"].as_str().unwrap()
            )
        );
    }
    let state = group.state();
    assert_eq!(num(&state, "lag"), 0, "{state}");
    assert_eq!(num(&state, "in_flight"), 0, "{state}");

    // A failing command: nacked (retry) until max_deliveries parks the event.
    append_seq(&client, "exec-2", 0..2);
    let failing = Group::create(
        &client,
        "failing",
        &json!({"source": "exec-2", "max_deliveries": 2, "ack_timeout_ms": 30000}),
    );
    // `strata consume failing --until-empty ...` with the command `how` to run.
    let consume_failing = |how: &[&str]| {
        let base = ["consume", "failing", "--until-empty", "--wait-ms", "300"];
        strata(&url, &[&base[..], how].concat())
    };
    let out = consume_failing(&["--", "sh", "-c", "exit 3"]);
    ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("exited with 3"), "{stderr}");
    assert_eq!(failing.parked().len(), 2);
    let parked = ok(&strata(&url, &["group", "parked", "failing"]));
    assert_eq!(parked.lines().count(), 2, "{parked}");
    let show = ok(&strata(&url, &["group", "show", "failing", "--parked"]));
    assert!(show.contains("parked events: 2"), "{show}");

    // Replayed and consumed by a command that succeeds: acked, nothing parked.
    ok(&strata(&url, &["group", "replay-parked", "failing"]));
    ok(&consume_failing(&["--exec", "true"]));
    assert!(failing.parked().is_empty());
    assert_eq!(num(&failing.state(), "in_flight"), 0);

    // --nack-action park parks at the first failure; skip drops.
    append_seq(&client, "exec-2", 2..4);
    let consume_one_failing = |nack_action: &str| {
        ok(&strata(
            &url,
            &[
                "consume",
                "failing",
                "--count",
                "1",
                "--nack-action",
                nack_action,
                "--exec",
                "false",
            ],
        ))
    };
    consume_one_failing("park");
    assert_eq!(failing.parked().len(), 1);
    consume_one_failing("skip");
    assert_eq!(failing.parked().len(), 1);
    assert!(failing.poll(10, 300).is_empty());

    // A command that cannot be started: an error, the event is released for redelivery.
    append_seq(&client, "exec-1", 4..5);
    let err = fails(&strata(
        &url,
        &[
            "consume",
            "runner",
            "--count",
            "1",
            "--exec",
            "/nonexistent/cmd",
        ],
    ));
    assert!(err.contains("cannot run"), "{err}");
    let again = group.poll(10, 2000);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].delivery, 2);
}

#[test]
fn consume_stops_gracefully_on_sigint() {
    let server = TestServer::start();
    let client = server.client();
    append_seq(&client, "sig-1", 0..2);
    let group = Group::create(&client, "sig", &json!({"source": "sig-1"}));
    let mut child = Command::new(strata_binary())
        .args(["consume", "sig", "--wait-ms", "300"])
        .env("STRATA_SERVER", server.url())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // It consumes the two events, then long-polls for more.
    wait_for(Duration::from_secs(30), || {
        (num(&group.state(), "lag") == 0 && num(&group.state(), "in_flight") == 0).then_some(())
    })
    .expect("consumed");
    // SAFETY: kill(2) on our own child, not yet reaped.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let status = wait_for(Duration::from_secs(30), || child.try_wait().unwrap())
        .expect("consume exits after SIGINT");
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "{status:?}: {err}");
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(err.contains("2 acked"), "{err}");
}
