//! End-to-end: scavenging on the real `strata` binary (docs/http-api.md "Scavenging",
//! docs/operations.md "Disk space"). A log with small segments gets deletions, truncation and
//! `max_count`; `POST /admin/scavenge` starts a run (202), a second start while it runs is 409
//! `conflict`, `DELETE` stops it, a new run finishes and reclaims bytes, and every event a read
//! could return before (id, stream, revision, position, data) is returned after; a retried
//! append of a removed event answers 200 (idempotent), never a second copy; the metrics count the
//! run. Then: a kill -9 in the middle of a throttled scavenge, a restart, the same reads, and a
//! new scavenge that completes; `strata scavenge` end to end; `--scavenge-interval`; a consumer
//! group and a partitioned projection keep their state (checkpoints, registries) across a
//! scavenge of their `$`-streams and a restart, the group skipping removed events.

use std::time::Duration;

use serde_json::{json, Value};
use strata_suite::cli::{json_lines, ok, strata};
use strata_suite::groups::Group;
use strata_suite::projections::{create_projection, projection_state, wait_position};
use strata_suite::{enc, wait_for, Client, TestServer};

/// Small segments, so that a few hundred events seal many of them (only sealed ones are
/// scavenged).
const SMALL_SEGMENTS: &[&str] = &["--segment-size", "16384"];

/// Every event of the log as the JSON `/all` returns it, paging through it.
fn all_events(c: &Client) -> Vec<Value> {
    let mut out = Vec::new();
    let mut from = 0;
    loop {
        let page = c.page(&format!("/all?limit=200&from={from}"));
        out.extend(page["events"].as_array().expect("events").iter().cloned());
        if page["end"] == json!(true) {
            return out;
        }
        from = page["next"].as_u64().expect("next");
    }
}

/// What a read returns of `stream` (or its status when it is not readable).
fn stream_events(c: &Client, stream: &str) -> Value {
    let reply = c.get_with(
        &format!("/streams/{}?limit=1000", enc(stream)),
        &[("Accept", "application/json")],
    );
    match reply.status {
        200 => reply.json()["events"].clone(),
        other => json!(other),
    }
}

/// The streams the tests write.
fn streams() -> Vec<String> {
    (0..8).map(|i| format!("s-{i}")).collect()
}

/// Everything reads can see: `/all` and each stream.
fn snapshot(c: &Client) -> (Vec<Value>, Vec<Value>) {
    let per_stream = streams().iter().map(|s| stream_events(c, s)).collect();
    (all_events(c), per_stream)
}

/// 8 streams × 40 events of ~200 B; then `s-1` soft-deleted, `s-2` tombstoned, `s-3` truncated
/// before revision 30, `s-4` bounded to its last 5 events. Returns the id and body of the
/// first append of `s-4` (removed by `max_count`).
fn fill(c: &Client) -> (String, Value) {
    let pad = "x".repeat(200);
    let mut first_s4 = None;
    for round in 0..40 {
        for (i, s) in streams().into_iter().enumerate() {
            let id = format!("00000000-0000-4000-8000-{round:06}{i:06}");
            let body = json!({"id": id, "type": "T", "data": {"round": round, "pad": pad}});
            c.append(&s, &body);
            if s == "s-4" && round == 0 {
                first_s4 = Some((id, body));
            }
        }
    }
    c.delete("/streams/s-1", &[]).assert_status(204);
    c.delete("/streams/s-2?hard=true", &[]).assert_status(204);
    c.put_json("/streams/s-3/metadata", r#"{"truncate_before": 30}"#)
        .assert_status(200);
    c.put_json("/streams/s-4/metadata", r#"{"max_count": 5}"#)
        .assert_status(200);
    first_s4.expect("s-4 written")
}

/// An event without its padding (the snapshots are too large to print whole).
fn short(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(d) = v.get_mut("data").and_then(|d| d.get_mut("pad")) {
        *d = json!("…");
    }
    v
}

/// Asserts that every stream reads the same in `after` as in `before`, and that `/all` after
/// holds exactly the same events as before minus some that no stream read returns (removed
/// by the scavenge: `/all` skips removed positions), each unchanged. Names the first
/// difference.
#[track_caller]
fn assert_same(before: &(Vec<Value>, Vec<Value>), after: &(Vec<Value>, Vec<Value>), when: &str) {
    for (i, (a, b)) in before.1.iter().zip(&after.1).enumerate() {
        match (a.as_array(), b.as_array()) {
            (Some(a), Some(b)) => {
                assert_eq!(a.len(), b.len(), "{when}: events of s-{i}");
                for (x, y) in a.iter().zip(b) {
                    assert_eq!(short(x), short(y), "{when}: s-{i}");
                }
            }
            _ => assert_eq!(a, b, "{when}: s-{i}"),
        }
    }
    let readable: std::collections::HashSet<u64> = before
        .1
        .iter()
        .filter_map(Value::as_array)
        .flatten()
        .filter_map(|e| e["position"].as_u64())
        .collect();
    let by_position: std::collections::HashMap<u64, &Value> = before
        .0
        .iter()
        .map(|e| (e["position"].as_u64().expect("position"), e))
        .collect();
    let mut kept = std::collections::HashSet::new();
    for e in &after.0 {
        let p = e["position"].as_u64().expect("position");
        let was = by_position
            .get(&p)
            .unwrap_or_else(|| panic!("{when}: /all has a new event at {p}"));
        assert_eq!(short(was), short(e), "{when}: /all at {p}");
        kept.insert(p);
    }
    let mut last = None;
    for e in &after.0 {
        let p = e["position"].as_u64().expect("position");
        assert!(last < Some(p), "{when}: /all out of order at {p}");
        last = Some(p);
    }
    for p in readable {
        assert!(
            kept.contains(&p),
            "{when}: /all lost the readable event at {p}"
        );
    }
}

/// Polls `GET /admin/scavenge` until the run is no longer `running`.
fn wait_finished(c: &Client) -> Value {
    wait_for(Duration::from_secs(120), || {
        let status = c.page("/admin/scavenge");
        (status["status"] != "running").then_some(status)
    })
    .expect("the scavenge ended within 2 minutes")
}

fn bytes_on_disk(c: &Client) -> u64 {
    c.page("/info")["bytes_on_disk"]
        .as_u64()
        .expect("bytes_on_disk")
}

/// A metric's value in `GET /metrics`.
fn metric(c: &Client, name: &str) -> f64 {
    let text = c.get("/metrics").text();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in the metrics"))
}

#[test]
fn start_status_stop_conflict_and_a_run_that_keeps_every_readable_event() {
    let server = TestServer::start_with(SMALL_SEGMENTS);
    let c = server.client();
    let idle = c.page("/admin/scavenge");
    assert_eq!(idle["status"], "idle");
    assert_eq!(idle["started"], Value::Null);
    assert_eq!(idle["error"], Value::Null);

    let (removed_id, removed_body) = fill(&c);
    let before = snapshot(&c);
    let disk_before = bytes_on_disk(&c);

    // A crawling run (about 10 KiB/s): a second start is refused while it runs; DELETE stops it.
    let started = c.post_json("/admin/scavenge", r#"{"max_mb_per_s": 0.01}"#);
    started.assert_status(202);
    let started = started.json();
    assert_eq!(started["status"], "running");
    assert!(started["started"].is_string(), "{started}");
    let again = c.post_json("/admin/scavenge", "{}");
    again.assert_status(409);
    assert_eq!(again.json()["error"], "conflict");
    assert_eq!(metric(&c, "strata_scavenge_running"), 1.0);
    let stopped = c.delete("/admin/scavenge", &[]);
    stopped.assert_status(200);
    assert_eq!(stopped.json()["status"], "stopped", "{}", stopped.text());
    assert_same(&before, &snapshot(&c), "a stopped run changes no read");

    // Bad bodies.
    c.post_json("/admin/scavenge", r#"{"max_mb_per_s": -1}"#)
        .assert_status(400);
    c.post_json("/admin/scavenge", r#"{"speed": 1}"#)
        .assert_status(400);

    // An unthrottled run finishes the job.
    c.post_json("/admin/scavenge", r#"{"max_mb_per_s": 0}"#)
        .assert_status(202);
    let done = wait_finished(&c);
    assert_eq!(done["status"], "idle", "{done}");
    assert_eq!(done["error"], Value::Null);
    assert!(done["finished"].is_string());
    assert_eq!(done["segments_done"], done["segments_total"], "{done}");
    let reclaimed = done["bytes_reclaimed"].as_u64().unwrap();
    assert!(reclaimed > 0, "{done}");
    assert!(done["events_removed"].as_u64().unwrap() > 0, "{done}");
    assert_eq!(
        done["bytes_before"].as_u64().unwrap() - done["bytes_after"].as_u64().unwrap(),
        reclaimed
    );
    assert_same(
        &before,
        &snapshot(&c),
        "every readable event is read the same",
    );
    assert!(bytes_on_disk(&c) < disk_before);

    // A retry of an append whose event was removed is still recognised: 200, no second copy.
    let retry = c.append_expecting("s-4", None, &removed_body);
    assert_eq!(retry.status, 200, "{}", retry.text());
    assert_eq!(retry.json()["first_revision"], 0, "{}", retry.text());
    assert_same(&before, &snapshot(&c), "after");
    assert!(!removed_id.is_empty());

    assert_eq!(metric(&c, "strata_scavenge_running"), 0.0);
    assert!(metric(&c, "strata_scavenge_bytes_reclaimed_total") >= reclaimed as f64);
    assert!(metric(&c, "strata_scavenge_events_removed_total") > 0.0);
    assert!(metric(&c, "strata_scavenge_segments_rewritten_total") > 0.0);
    assert!(metric(&c, "strata_scavenge_last_duration_seconds") > 0.0);

    // Appends, reads and a second scavenge go on as usual.
    c.append("s-5", &json!({"type": "T", "data": {"after": true}}));
    c.post_json("/admin/scavenge", "").assert_status(202);
    assert_eq!(wait_finished(&c)["status"], "idle");
}

#[test]
fn kill_9_in_the_middle_of_a_scavenge_loses_no_readable_event() {
    let mut args = SMALL_SEGMENTS.to_vec();
    args.extend(["--fsync", "always"]);
    let mut server = TestServer::start_with(&args);
    let c = server.client();
    fill(&c);
    let before = snapshot(&c);
    // Slow enough to be mid-run when killed (a segment of 16 KiB takes about a second).
    c.post_json("/admin/scavenge", r#"{"max_mb_per_s": 0.03}"#)
        .assert_status(202);
    wait_for(Duration::from_secs(60), || {
        let s = c.page("/admin/scavenge");
        (s["segments_done"].as_u64() >= Some(2) || s["status"] != "running").then_some(())
    })
    .expect("progress");
    let (status, _) = server.stop(libc::SIGKILL);
    assert!(!status.success());
    server.restart();
    let c = server.client();
    assert_same(&before, &snapshot(&c), "after the crash");
    assert_eq!(c.page("/admin/scavenge")["status"], "idle");
    c.post_json("/admin/scavenge", r#"{"max_mb_per_s": 0}"#)
        .assert_status(202);
    let done = wait_finished(&c);
    assert_eq!(done["status"], "idle", "{done}");
    assert_same(&before, &snapshot(&c), "after the new scavenge");
    server.stop(libc::SIGTERM);
    server.restart();
    let c = server.client();
    assert_same(&before, &snapshot(&c), "after a clean restart");
    // A graceful shutdown stops a running scavenge and exits cleanly.
    c.delete("/streams/s-6", &[]).assert_status(204);
    c.post_json("/admin/scavenge", r#"{"max_mb_per_s": 0.01}"#)
        .assert_status(202);
    let (status, stderr) = server.stop(libc::SIGTERM);
    assert!(status.success(), "{status:?}: {stderr}");
}

#[test]
fn the_cli_runs_a_scavenge_to_the_end() {
    let server = TestServer::start_with(SMALL_SEGMENTS);
    let c = server.client();
    fill(&c);
    let before = snapshot(&c);
    let url = server.url();
    let out = strata(&url, &["scavenge", "--max-mb-per-s", "0"], None);
    let stdout = ok(&out);
    let last = &json_lines(&stdout)[0];
    assert_eq!(last["status"], "idle", "{stdout}");
    assert!(last["bytes_reclaimed"].as_u64().unwrap() > 0, "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Ctrl-C leaves it running"), "{stderr}");
    assert_same(&before, &snapshot(&c), "after");
    let status = ok(&strata(&url, &["scavenge", "--status"], None));
    assert_eq!(json_lines(&status)[0]["status"], "idle");
    let stop = ok(&strata(&url, &["scavenge", "--stop"], None));
    assert_eq!(json_lines(&stop)[0]["status"], "idle");
}

#[test]
fn the_schedule_starts_runs_by_itself() {
    // 0.0002 h = 0.72 s.
    let mut args = SMALL_SEGMENTS.to_vec();
    args.extend(["--scavenge-interval", "0.0002"]);
    let server = TestServer::start_with(&args);
    let c = server.client();
    fill(&c);
    let before = snapshot(&c);
    let ran = wait_for(Duration::from_secs(60), || {
        let s = c.page("/admin/scavenge");
        (s["finished"].is_string() && s["bytes_reclaimed"].as_u64() > Some(0)).then_some(s)
    })
    .expect("a scheduled scavenge reclaimed bytes");
    assert_eq!(ran["error"], Value::Null);
    assert_same(&before, &snapshot(&c), "after");
}

/// The state of partition `p` of projection `name`.
fn state_of(c: &Client, name: &str, p: &str) -> Value {
    let reply = projection_state(c, name, Some(p));
    reply.assert_status(200);
    reply.json()
}

#[test]
fn groups_and_projections_keep_their_state_across_a_scavenge_and_a_restart() {
    let mut server = TestServer::start_with(SMALL_SEGMENTS);
    let c = server.client();
    create_projection(
        &c,
        "per-acct",
        "fromCategory('acct').partitionBy(e => e.stream).when({ $init: () => ({ n: 0 }), \
         $any: (s, e) => { s.n += 1; return s; } });",
    );
    let group = Group::create(
        &c,
        "workers",
        &json!({"source": "category:acct", "from": "start", "ack_timeout_ms": 60000}),
    );
    let pad = "p".repeat(300);
    let mut acked = std::collections::HashSet::new();
    let mut last = 0;
    // Rounds a second apart: each writes projection and group checkpoints that the next
    // supersedes (bookkeeping for the scavenge to remove).
    for round in 0..4 {
        for i in 0..6 {
            let events: Vec<Value> = (0..5)
                .map(|k| json!({"type": "T", "data": {"round": round, "k": k, "pad": pad}}))
                .collect();
            last = c.append(&format!("acct-{i}"), &json!(events))["last_position"]
                .as_u64()
                .unwrap();
        }
        let msgs = group.poll(12, 2000);
        group.ack_all(&msgs);
        acked.extend(msgs.iter().map(|m| m.id().to_owned()));
        std::thread::sleep(Duration::from_millis(1100));
    }
    wait_position(&c, "per-acct", last);
    let states: Vec<Value> = (0..6)
        .map(|i| state_of(&c, "per-acct", &format!("acct-{i}")))
        .collect();
    assert_eq!(states[0], json!({"n": 20}));
    // A stream the group has not finished goes away.
    c.delete("/streams/acct-5", &[]).assert_status(204);
    c.post_json("/admin/scavenge", r#"{"max_mb_per_s": 0}"#)
        .assert_status(202);
    let done = wait_finished(&c);
    assert_eq!(done["status"], "idle", "{done}");
    assert!(done["events_removed"].as_u64().unwrap() > 0, "{done}");
    for (i, state) in states.iter().enumerate() {
        assert_eq!(&state_of(&c, "per-acct", &format!("acct-{i}")), state);
    }
    // The group goes on from its checkpoint: nothing acked comes again, every event of the live
    // streams comes once; of the deleted stream, what the scavenge removed is skipped.
    let mut seen = std::collections::HashSet::new();
    loop {
        let msgs = group.poll(100, 500);
        if msgs.is_empty() {
            break;
        }
        for m in &msgs {
            assert!(!acked.contains(m.id()), "acked event {} came again", m.id());
            assert!(seen.insert(m.id().to_owned()), "{} delivered twice", m.id());
        }
        group.ack_all(&msgs);
    }
    let live_seen = seen.iter().chain(acked.iter()).count();
    assert!(live_seen >= 5 * 20, "{live_seen}");
    // After a restart: the registries, the checkpoints and the states are read back.
    server.stop(libc::SIGTERM);
    server.restart();
    let c = server.client();
    wait_position(&c, "per-acct", last);
    for (i, state) in states.iter().enumerate() {
        assert_eq!(&state_of(&c, "per-acct", &format!("acct-{i}")), state);
    }
    let group = Group::new(&c, "workers");
    assert!(group.poll(100, 300).is_empty(), "everything was acked");
    c.append("acct-0", &json!({"type": "T", "data": {"after": true}}));
    let msgs = group.poll(100, 5000);
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].event["data"]["after"], true);
}
