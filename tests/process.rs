//! End-to-end: the `strata serve` process — kill -9 loses no acknowledged append, SIGTERM exits
//! 0 (also with open subscriptions and appends in flight), the non-loopback listen check, and
//! the offline `strata verify` — against the real binary.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use strata_suite::{strata_binary, Client, ServerProcess, TestServer, START_TIMEOUT};

/// An acknowledged append: (stream, revision, position, id).
type Ack = (String, u64, u64, String);

/// `n` writer threads appending one- and two-event batches with client ids to their own streams
/// until `stop`; each returns what the server acknowledged with 201, and counts those appends in
/// `acked` as they come (for waiting on progress). Connection errors (the server went away) end
/// a writer.
fn spawn_writers(
    c: &Client,
    n: usize,
    stop: &Arc<AtomicBool>,
    acked: &Arc<AtomicUsize>,
) -> Vec<std::thread::JoinHandle<Vec<Ack>>> {
    (0..n)
        .map(|t| {
            let addr = c.addr;
            let stop = stop.clone();
            let acked = acked.clone();
            std::thread::spawn(move || {
                let stream = format!("crash-{t}");
                let mut acks = Vec::new();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let size = 1 + (i % 2) as usize;
                    let ids: Vec<String> = (0..size)
                        .map(|_| uuid::Uuid::new_v4().to_string())
                        .collect();
                    let body = Value::Array(
                        ids.iter()
                            .map(|id| json!({"id": id, "type": "Crash", "data": {"t": t, "i": i}}))
                            .collect(),
                    )
                    .to_string();
                    i += 1;
                    // Raw request: any I/O error means the server is gone.
                    let Some(reply) = try_post(addr, &format!("/streams/{stream}"), &body) else {
                        break;
                    };
                    if reply.0 != 201 {
                        // During shutdown a server may refuse new work (503); nothing acked.
                        continue;
                    }
                    let v: Value = serde_json::from_str(&reply.1).unwrap();
                    let first_rev = v["first_revision"].as_u64().unwrap();
                    let first_pos = v["first_position"].as_u64().unwrap();
                    for (k, id) in ids.into_iter().enumerate() {
                        acks.push((
                            stream.clone(),
                            first_rev + k as u64,
                            first_pos + k as u64,
                            id,
                        ));
                    }
                    acked.fetch_add(1, Ordering::Relaxed);
                }
                acks
            })
        })
        .collect()
}

/// [`spawn_writers`], once they have `at_least` acknowledged appends between them (asserted
/// within 60 s, however long the machine takes).
fn writers_going(
    c: &Client,
    n: usize,
    at_least: usize,
    stop: &Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<Vec<Ack>>> {
    let acked = Arc::new(AtomicUsize::new(0));
    let writers = spawn_writers(c, n, stop, &acked);
    let going = strata_suite::wait_for(Duration::from_secs(60), || {
        (acked.load(Ordering::Relaxed) >= at_least).then_some(())
    });
    assert!(going.is_some(), "the writers made no progress");
    writers
}

/// POST without panicking: `None` on any I/O error.
fn try_post(addr: std::net::SocketAddr, path: &str, body: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let raw = String::from_utf8(raw).ok()?;
    let status: u16 = raw.split(' ').nth(1)?.parse().ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    // Small bodies: Content-Length framing (no chunked decoding needed here).
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return None;
    }
    Some((status, body.to_owned()))
}

/// Every acknowledged event is in the log, at its revision and position, and the log and the
/// streams are dense.
fn check_acks(c: &Client, acks: &[Ack]) {
    let all = c.ndjson("/all");
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e["position"], i as u64, "/all not dense after restart");
    }
    let by_position: HashMap<u64, &Value> = all
        .iter()
        .map(|e| (e["position"].as_u64().unwrap(), e))
        .collect();
    for (stream, rev, pos, id) in acks {
        let e = by_position
            .get(pos)
            .unwrap_or_else(|| panic!("acknowledged event {stream}@{rev} (position {pos}) lost"));
        assert_eq!(e["id"], id.as_str(), "position {pos}");
        assert_eq!(e["stream"], stream.as_str());
        assert_eq!(e["revision"], *rev);
    }
    let mut streams: Vec<&str> = acks.iter().map(|a| a.0.as_str()).collect();
    streams.sort_unstable();
    streams.dedup();
    for s in streams {
        let events = c.read_stream(s);
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e["revision"], i as u64, "{s} not dense");
        }
    }
}

#[test]
fn kill_9_loses_no_acknowledged_append() {
    let mut server = TestServer::start_with(&["--fsync", "always"]);
    let c = server.client();
    // A big batch first.
    let big: Vec<Value> = (0..2000)
        .map(|i| json!({"type": "Big", "data": {"i": i}}))
        .collect();
    let r = c.append("big-1", &Value::Array(big));
    let stop = Arc::new(AtomicBool::new(false));
    // Let them get going (at least 20 acknowledged appends, however long the machine takes),
    // then kill the server mid-flight.
    let writers = writers_going(&c, 6, 20, &stop);
    let (status, _) = server.stop(libc::SIGKILL);
    assert!(!status.success());
    stop.store(true, Ordering::Relaxed);
    let acks: Vec<Ack> = writers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    assert!(
        acks.len() >= 20,
        "too few appends acknowledged before the kill: {}",
        acks.len()
    );

    server.restart();
    let c = server.client();
    assert_eq!(c.read_stream("big-1").len(), 2000);
    assert_eq!(r["last_position"], 1999);
    check_acks(&c, &acks);
    // The store is writable after recovery and continues the positions.
    let next = c.ndjson("/all").len() as u64;
    let r = c.append("after-1", &json!({"type": "After"}));
    assert_eq!(r["first_position"], next);

    // Twice in a row, with nothing in flight.
    let (status, _) = server.stop(libc::SIGKILL);
    assert!(!status.success());
    server.restart();
    let c = server.client();
    check_acks(&c, &acks);
    assert_eq!(c.read_stream("after-1").len(), 1);
}

#[test]
fn sigterm_and_ctrl_c_exit_0_and_keep_everything() {
    for (fsync, signal) in [
        ("never", libc::SIGTERM),
        ("interval:20", libc::SIGTERM),
        ("always", libc::SIGTERM),
        ("never", libc::SIGINT),
    ] {
        let mut server = TestServer::start_with(&["--fsync", fsync]);
        let c = server.client();
        c.append("term-1", &json!([{"type": "A"}, {"type": "B"}]));
        c.append("term-1", &json!({"type": "C"}));
        let (status, stderr) = server.stop(signal);
        assert_eq!(
            status.code(),
            Some(0),
            "fsync {fsync}, signal {signal}: {status:?}; stderr:\n{stderr}"
        );
        // Whatever the fsync policy, a clean shutdown syncs the files.
        server.restart();
        assert_eq!(
            server.client().read_stream("term-1").len(),
            3,
            "fsync {fsync}"
        );
        let (status, _) = server.stop(libc::SIGTERM);
        assert_eq!(status.code(), Some(0));
    }
}

/// `strata serve` without `--data-dir` uses `./strata-data` (created), and every flag can be an
/// environment variable.
#[test]
fn serve_defaults_and_environment_configuration() {
    let cwd = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(strata_binary());
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--log-level",
        "warn",
        "--fsync",
        "never",
    ])
    .current_dir(cwd.path())
    .env_remove("STRATA_DATA_DIR")
    .env_remove("STRATA_AUTH_TOKEN")
    .env_remove("STRATA_TOKENS_FILE");
    let server = ServerProcess::spawn(cmd, &cwd.path().join("strata-data"), START_TIMEOUT).unwrap();
    server.client().append("default-1", &json!({"type": "A"}));
    assert_eq!(server.stop_with(libc::SIGTERM).unwrap().code(), Some(0));
    let data = cwd.path().join("strata-data");
    assert!(data.is_dir(), "./strata-data was not created");
    assert!(std::fs::read_dir(&data).unwrap().any(|e| e
        .unwrap()
        .path()
        .extension()
        .is_some_and(|x| x == "seg")));

    // The same through STRATA_* variables, with two tokens and small limits.
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(strata_binary());
    cmd.arg("serve")
        .env("STRATA_DATA_DIR", dir.path())
        .env("STRATA_LISTEN", "127.0.0.1:0")
        .env("STRATA_FSYNC", "interval:10")
        .env("STRATA_AUTH_TOKEN", "one,two")
        .env("STRATA_MAX_BODY_BYTES", "2000")
        .env("STRATA_LOG", "warn")
        .env_remove("STRATA_TOKENS_FILE");
    let server = ServerProcess::spawn(cmd, dir.path(), START_TIMEOUT).unwrap();
    let c = server.client();
    c.get("/all").assert_error(401, "unauthorized");
    c.with_token("one").append("env-1", &json!({"type": "A"}));
    c.with_token("two").append("env-1", &json!({"type": "A"}));
    let big = format!(r#"{{"type": "A", "data": "{}"}}"#, "x".repeat(2000));
    c.with_token("one")
        .post_json("/streams/env-1", &big)
        .assert_error(413, "payload_too_large");
    let info = c.with_token("one").get("/info").json();
    assert_eq!(
        std::fs::canonicalize(info["data_dir"].as_str().unwrap()).unwrap(),
        std::fs::canonicalize(dir.path()).unwrap()
    );
    assert_eq!(server.stop_with(libc::SIGTERM).unwrap().code(), Some(0));
}

#[test]
fn sigterm_with_open_subscriptions_and_appends_in_flight_exits_0() {
    // A grace far longer than this test's hang guards (30 s per subscription read, 60 s to
    // exit): the server must end the subscriptions and the replay itself rather than wait for
    // the grace to cut them. (With the default 10 s grace that took a "< 9 s" wall-clock bound
    // to tell apart.)
    let mut server = TestServer::start_with(&["--fsync", "always", "--shutdown-grace", "600"]);
    let c = server.client();
    c.append("sub-1", &json!({"type": "A"}));
    let mut subs = vec![
        c.sse("/all", &[]),
        c.sse("/streams/sub-1", &[]),
        c.sse("/streams/not-yet-1", &[]),
    ];
    subs[0].expect_message();
    subs[1].expect_message();
    // A replay in progress, not read.
    let replay = c.open("GET", "/all", &[("Accept", "application/x-ndjson")], None);
    let stop = Arc::new(AtomicBool::new(false));
    // Appends are in flight: the writers got going.
    let writers = writers_going(&c, 4, 10, &stop);

    let started = Instant::now();
    server.signal(libc::SIGTERM);
    // The subscriptions end (at a message boundary) rather than hang (30 s: a hang guard).
    for sse in &mut subs {
        sse.set_read_timeout(Duration::from_secs(30));
        loop {
            match sse.next_item() {
                Ok(None) => break,
                Ok(Some(_)) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(e) => panic!("subscription did not end after SIGTERM: {e}"),
            }
        }
    }
    let (status, stderr) = server
        .wait_exit(Duration::from_secs(60))
        .expect("the server did not exit within 60 s of SIGTERM (its grace is 600 s)");
    stop.store(true, Ordering::Relaxed);
    eprintln!("SIGTERM to exit: {:?}", started.elapsed());
    assert_eq!(
        status.code(),
        Some(0),
        "exit status {status:?}; stderr:\n{stderr}"
    );
    drop(replay);
    let acks: Vec<Ack> = writers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    assert!(!acks.is_empty());

    // In-flight appends finished: every acknowledged one is there.
    server.restart();
    check_acks(&server.client(), &acks);
}

/// Runs `strata ARGS` and waits at most `timeout`; `None` when it is still running then (it is
/// killed).
fn run_with_timeout(args: &[&str], timeout: Duration) -> Option<std::process::Output> {
    let mut child = Command::new(strata_binary())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + timeout;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(child.wait_with_output().unwrap())
}

#[test]
fn a_non_loopback_listen_address_needs_auth_or_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    for listen in ["0.0.0.0:0", "[::]:0"] {
        let out = run_with_timeout(
            &[
                "serve",
                "--data-dir",
                data_arg,
                "--listen",
                listen,
                "--log-level",
                "warn",
            ],
            Duration::from_secs(20),
        )
        .unwrap_or_else(|| panic!("the server started on {listen} without auth or --insecure"));
        assert!(
            !out.status.success(),
            "{listen}: exit status {:?}",
            out.status
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stdout.contains("listening on"), "{stdout}");
        assert!(
            stderr.contains("--insecure"),
            "{listen}: the refusal should name --insecure: {stderr}"
        );
    }
    // Also through the environment.
    let mut child = Command::new(strata_binary())
        .args(["serve", "--data-dir", data_arg, "--log-level", "warn"])
        .env("STRATA_LISTEN", "0.0.0.0:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("STRATA_LISTEN=0.0.0.0:0 started without auth");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success());

    // With --insecure it starts (and is reached here over loopback only).
    let server = ServerProcess::start_on(
        strata_binary(),
        &data,
        "0.0.0.0:0",
        &["--insecure", "--log-level", "warn"],
        START_TIMEOUT,
    )
    .expect("--insecure must allow 0.0.0.0");
    assert!(server.addr.ip().is_unspecified(), "{}", server.base_url);
    let c = server.client();
    assert!(c.addr.ip().is_loopback());
    c.get("/health").assert_status(200);
    let status = server.stop_with(libc::SIGTERM).unwrap();
    assert_eq!(status.code(), Some(0));

    // A loopback address needs neither.
    let server = ServerProcess::start_on(
        strata_binary(),
        &data,
        "127.0.0.1:0",
        &["--log-level", "warn"],
        START_TIMEOUT,
    )
    .expect("loopback without auth");
    server.client().get("/health").assert_status(200);
    assert_eq!(server.stop_with(libc::SIGTERM).unwrap().code(), Some(0));
}

#[test]
fn verify_passes_a_clean_directory_and_fails_after_a_flipped_byte_in_a_sealed_segment() {
    let mut server = TestServer::start_with(&["--segment-size", "4096"]);
    let c = server.client();
    for b in 0..30 {
        let events: Vec<Value> = (0..4)
            .map(|i| json!({"type": "V", "data": {"b": b, "i": i, "pad": "v".repeat(200)}}))
            .collect();
        c.append(&format!("verify-{}", b % 3), &Value::Array(events));
    }
    let info = c.get("/info").json();
    assert!(info["segment_count"].as_u64().unwrap() >= 4, "{info}");
    let (status, _) = server.stop(libc::SIGTERM);
    assert_eq!(status.code(), Some(0));
    let dir = server.dir.path().to_str().unwrap().to_owned();

    let verify = || {
        run_with_timeout(&["verify", "--data-dir", &dir], Duration::from_secs(60))
            .expect("verify hung")
    };
    let out = verify();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "verify of a clean directory failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("ok"), "{stdout}");

    // Flip one byte in the middle of the first (sealed) segment.
    let mut segments: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    segments.sort();
    assert!(segments.len() >= 2, "{segments:?}");
    let first = &segments[0];
    let mut bytes = std::fs::read(first).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(first, &bytes).unwrap();

    let out = verify();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        !out.status.success(),
        "verify missed a flipped byte at {at} of {}: {stdout}",
        first.display()
    );
    assert!(stdout.contains("problem"), "{stdout}");

    // Not a directory: an error, not a pass.
    let out = run_with_timeout(
        &["verify", "--data-dir", &format!("{dir}/missing")],
        Duration::from_secs(20),
    )
    .unwrap();
    assert!(!out.status.success());
}

/// A storage fault (here: the file size limit, `RLIMIT_FSIZE`, so that writes past 1 MiB fail
/// with `EFBIG`) turns the store read-only: appends are `503 unavailable`, `/health` is `503
/// {"status": "read_only"}`, reads go on, and nothing acknowledged is lost.
#[test]
fn a_storage_fault_makes_the_server_read_only_with_503() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(strata_binary());
    cmd.arg("serve").arg("--data-dir").arg(dir.path()).args([
        "--listen",
        "127.0.0.1:0",
        "--log-level",
        "error",
        "--fsync",
        "never",
    ]);
    // SAFETY: only async-signal-safe calls (signal, setrlimit) between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let limit = libc::rlimit {
                rlim_cur: 1 << 20,
                rlim_max: 1 << 20,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let server = ServerProcess::spawn(cmd, dir.path(), START_TIMEOUT).expect("start");
    let c = server.client();
    c.get("/health").assert_status(200);
    let pad = "f".repeat(8000);
    let mut acked = 0u64;
    let mut failure = None;
    for i in 0..400 {
        let reply = c.append_expecting(
            "fault-1",
            None,
            &json!([{"type": "F", "data": {"i": i, "pad": pad}}]),
        );
        if reply.status == 201 {
            acked += 1;
        } else {
            failure = Some(reply);
            break;
        }
    }
    let failure = failure.expect("1 MiB file size limit never hit");
    assert!(acked > 10, "only {acked} appends before the fault");
    // The append that hit the fault is refused too (and was not acknowledged).
    failure.assert_error(503, "unavailable");
    // From now on: read-only.
    c.append_expecting("fault-1", None, &json!({"type": "F"}))
        .assert_error(503, "unavailable");
    c.append_expecting("other-1", None, &json!({"type": "F"}))
        .assert_error(503, "unavailable");
    c.put_json("/streams/fault-1/metadata", "{}")
        .assert_error(503, "unavailable");
    c.delete("/streams/fault-1", &[])
        .assert_error(503, "unavailable");
    let health = c.get("/health");
    health.assert_status(503);
    assert_eq!(health.json()["status"], "read_only", "{}", health.text());
    let info = c.get("/info").json();
    assert_eq!(info["status"], "read_only", "{info}");
    assert!(c.get("/metrics").text().contains("\nstrata_read_only 1"));
    // Reads still work and have every acknowledged event.
    let events = c.read_stream("fault-1");
    assert!(events.len() as u64 >= acked);
    drop(server);

    // Restarted without the limit: writable again, nothing acknowledged lost.
    let server = ServerProcess::start(
        strata_binary(),
        dir.path(),
        &["--log-level", "warn"],
        START_TIMEOUT,
    )
    .unwrap();
    let c = server.client();
    c.get("/health").assert_status(200);
    let events = c.read_stream("fault-1");
    assert!(events.len() as u64 >= acked, "{} < {acked}", events.len());
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["data"]["i"], i as u64);
    }
    c.append("fault-1", &json!({"type": "After"}));
}

/// Stream state survives a clean restart, and a subscription ended by the shutdown resumes
/// exactly with `Last-Event-ID` on the restarted server.
#[test]
fn state_survives_a_restart_and_subscriptions_resume_with_last_event_id() {
    let mut server = TestServer::start();
    let c = server.client();
    let events: Vec<Value> = (0..30)
        .map(|i| json!({"type": "S", "data": {"i": i}}))
        .collect();
    c.append("keep-1", &Value::Array(events));
    c.put_json(
        "/streams/keep-1/metadata",
        r#"{"truncate_before": 5, "custom": {"k": 1}}"#,
    )
    .assert_status(200);
    c.append("soft-1", &json!([{"type": "A"}, {"type": "B"}]));
    c.delete("/streams/soft-1", &[]).assert_status(204);
    let mut sse = c.sse("/all?stream_prefix=keep-", &[]);
    let seen = sse.expect_events(10, "position");
    let last_id = seen.last().unwrap()["position"].to_string();

    let (status, _) = server.stop(libc::SIGTERM);
    assert_eq!(status.code(), Some(0));
    // The subscription was ended by the shutdown (possibly after more messages).
    let mut got_after = Vec::new();
    loop {
        match sse.next_message() {
            Ok(Some(m)) => got_after.push(m.id_u64()),
            Ok(None) => break,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("subscription did not end with the server: {e}"),
        }
    }
    let resume_from = got_after.last().map_or(last_id, |id| id.to_string());

    server.restart();
    let c = server.client();
    assert_eq!(
        c.get("/streams/keep-1/metadata").json(),
        json!({"truncate_before": 5, "custom": {"k": 1}})
    );
    let revs: Vec<u64> = c
        .read_stream("keep-1")
        .iter()
        .map(|e| e["revision"].as_u64().unwrap())
        .collect();
    assert_eq!(revs, (5..30).collect::<Vec<_>>());
    c.get("/streams/soft-1").assert_error(410, "stream_deleted");
    let r = c.append("soft-1", &json!({"type": "C"}));
    assert_eq!(r["first_revision"], 2, "revisions continue after a restart");
    let listed: Vec<Value> = c.page("/streams")["streams"].as_array().unwrap().clone();
    assert_eq!(listed.len(), 2);

    // Resume: everything after the last id seen, then live.
    let mut sse = c.sse(
        "/all?stream_prefix=keep-",
        &[("Last-Event-ID", &resume_from)],
    );
    let next: u64 = resume_from.parse::<u64>().unwrap() + 1;
    let rest = sse.expect_events((30 - next) as usize, "position");
    let positions: Vec<u64> = rest
        .iter()
        .map(|e| e["position"].as_u64().unwrap())
        .collect();
    assert_eq!(positions, (next..30).collect::<Vec<_>>());
    let r = c.append("keep-1", &json!({"type": "Live"}));
    assert_eq!(
        sse.expect_events(1, "position")[0]["position"],
        r["first_position"]
    );
}
