//! End-to-end: damage never hides the log. A data directory is built with the real binary (four
//! streams, 200 events, small segments so that some are sealed, consumer groups and a stopped
//! projection made before the events), the server is stopped, bytes are flipped, and the server
//! is started again on a copy of it. For each kind of damage every read path must answer every
//! intact event with its original position and revision, and the damaged event with 500
//! `corrupt` (`file`, `offset`, `position`) — never 404/410, a silent skip, or the bytes:
//!
//! - (a) a payload byte of the first event of the open segment (read-only: appends 503);
//! - (b) a frame's length field in the open segment (the scan resynchronises; read-only);
//! - (c) a payload byte in a sealed segment (found by the first read; `damaged`: appends go on);
//! - (d) a sealed segment's index file (rebuilt at start-up, silently: health `ok`).
//!
//! Checked for each: stream pages forward and backward, `/all` with and without filters,
//! NDJSON (ends with the error line), SSE catch-up on `/all` and on the stream (ends with
//! `event: error`), single events, the stream listing, metadata, consumer groups on `$all`, a
//! category and the stream (each parks the event as `corrupt` and delivers the rest), a
//! projection (faults at it; a read-only store refuses to start it), `/health` and its damage
//! list, the error-level log line, appends, and stream heads after the damage. Plus the issue's
//! own scenario: the first event of a one-segment log damaged.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use strata_suite::groups::Group;
use strata_suite::projections::{create_projection, get_projection, projection_action};
use strata_suite::{enc, strata_binary, Client, Reply, ServerProcess, START_TIMEOUT};

const STREAMS: u64 = 4;
const EVENTS: u64 = 200;
const SERVE_ARGS: &[&str] = &[
    "--segment-size",
    "8192",
    "--fsync",
    "never",
    "--log-level",
    "warn",
];
const PROJECTION: &str =
    "fromAll().when({ $init: () => ({ n: 0 }), $any: (s, e) => { s.n += 1; return s; } });";

/// The data directory every case starts from (built once per test process), and the user
/// events it holds as the server answered them before any damage.
struct Fixture {
    dir: tempfile::TempDir,
    events: Vec<Value>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(build_fixture)
}

fn build_fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path());
    let client = server.client();
    // Made before the events: neither has gone past any of them when the server stops.
    Group::create(&client, "g", &json!({"source": "$all", "from": "start"}));
    Group::create(
        &client,
        "gc",
        &json!({"source": "category:order", "from": "start"}),
    );
    for s in 0..STREAMS {
        let source = format!("order-{s}");
        Group::create(
            &client,
            &format!("g-{source}"),
            &json!({"source": source, "from": "start"}),
        );
    }
    create_projection(&client, "count", PROJECTION);
    projection_action(&client, "count", "stop").assert_status(200);
    for i in 0..EVENTS {
        let kind = if i % 2 == 0 { "Even" } else { "Odd" };
        let event = json!({"type": kind, "data": {"seq": i, "pad": "p".repeat(60)}});
        client.append(&format!("order-{}", i % STREAMS), &event);
    }
    let events = client.ndjson("/all");
    assert_eq!(events.len() as u64, EVENTS);
    server.stop_with(libc::SIGTERM).expect("stop");
    let segments = frames(dir.path());
    assert!(
        segments.iter().filter(|s| s.sealed).count() >= 2,
        "the fixture needs sealed segments"
    );
    Fixture { dir, events }
}

fn start(dir: &Path) -> ServerProcess {
    ServerProcess::start(strata_binary(), dir, SERVE_ARGS, START_TIMEOUT)
        .unwrap_or_else(|e| panic!("starting strata: {e}"))
}

/// A copy of the fixture's data directory.
fn copy_fixture() -> tempfile::TempDir {
    let copy = tempfile::tempdir().expect("tempdir");
    for entry in std::fs::read_dir(fixture().dir.path()).expect("read_dir") {
        let entry = entry.expect("entry");
        if entry.file_type().expect("file type").is_file() {
            std::fs::copy(entry.path(), copy.path().join(entry.file_name())).expect("copy");
        }
    }
    copy
}

/// One frame of a segment file.
struct Frame {
    offset: u64,
    position: u64,
    stream: String,
    /// Offset of the event's data in the file.
    data: u64,
}

struct Segment {
    path: PathBuf,
    sealed: bool,
    frames: Vec<Frame>,
}

fn u16_at(b: &[u8], at: usize) -> usize {
    u16::from_le_bytes([b[at], b[at + 1]]) as usize
}

fn u32_at(b: &[u8], at: usize) -> usize {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize
}

/// The segments of `dir` and their frames (docs/on-disk-format.md), in log order.
fn frames(dir: &Path) -> Vec<Segment> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    paths.sort();
    let last = paths.len() - 1;
    paths
        .into_iter()
        .enumerate()
        .map(|(i, path)| {
            let b = std::fs::read(&path).expect("read segment");
            let mut at = u32_at(&b, 12);
            let mut frames = Vec::new();
            while at + 64 <= b.len() {
                let n = u32_at(&b, at);
                if n == 0 || at + 8 + n > b.len() {
                    break;
                }
                let s = u16_at(&b, at + 50);
                let t = u16_at(&b, at + 52);
                frames.push(Frame {
                    offset: at as u64,
                    position: u64::from_le_bytes(b[at + 8..at + 16].try_into().unwrap()),
                    stream: String::from_utf8_lossy(&b[at + 64..at + 64 + s]).into_owned(),
                    data: (at + 64 + s + t) as u64,
                });
                at += 8 + n;
            }
            Segment {
                path,
                sealed: i < last,
                frames,
            }
        })
        .collect()
}

/// Flips the bits of `mask` in the byte at `offset` of `path`.
fn flip(path: &Path, offset: u64, mask: u8) {
    let mut b = std::fs::read(path).expect("read");
    b[offset as usize] ^= mask;
    std::fs::write(path, b).expect("write");
}

fn user_frames(seg: &Segment) -> impl Iterator<Item = &Frame> {
    seg.frames.iter().filter(|f| f.stream.starts_with("order-"))
}

/// What a case expects: the damaged event (position), the file it lies in, and the health.
struct Expect {
    damaged: Option<u64>,
    file: Option<PathBuf>,
    health: &'static str,
}

#[test]
fn a_damaged_payload_in_the_open_segment_hides_nothing_else() {
    let dir = copy_fixture();
    let segs = frames(dir.path());
    let open = segs.last().unwrap();
    let first = user_frames(open)
        .next()
        .expect("a user event in the open segment");
    flip(&open.path, first.data + 3, 0x20);
    check(
        dir.path(),
        Expect {
            damaged: Some(first.position),
            file: Some(open.path.clone()),
            health: "read_only",
        },
    );
}

#[test]
fn a_damaged_length_field_in_the_open_segment_is_resynchronised() {
    let dir = copy_fixture();
    let segs = frames(dir.path());
    let open = segs.last().unwrap();
    let user: Vec<&Frame> = user_frames(open).collect();
    assert!(user.len() >= 4, "the open segment needs a few events");
    let middle = user[user.len() / 2];
    // The length grows by 16: the frame's checksum no longer matches, and the bytes after it
    // are taken for the frame's end.
    flip(&open.path, middle.offset, 0x10);
    check(
        dir.path(),
        Expect {
            damaged: Some(middle.position),
            file: Some(open.path.clone()),
            health: "read_only",
        },
    );
}

#[test]
fn a_damaged_payload_in_a_sealed_segment_leaves_appends_running() {
    let dir = copy_fixture();
    let segs = frames(dir.path());
    let sealed = &segs[0];
    let user: Vec<&Frame> = user_frames(sealed).collect();
    let victim = user[user.len() / 2];
    flip(&sealed.path, victim.data + 5, 0x01);
    check(
        dir.path(),
        Expect {
            damaged: Some(victim.position),
            file: Some(sealed.path.clone()),
            health: "damaged",
        },
    );
}

#[test]
fn a_damaged_index_file_is_rebuilt_silently() {
    let dir = copy_fixture();
    let segs = frames(dir.path());
    let idx = segs[0].path.with_extension("idx");
    assert!(idx.is_file(), "{} missing", idx.display());
    // A byte of the header's first position: the header checksum fails, the index is rebuilt.
    flip(&idx, 20, 0x04);
    check(
        dir.path(),
        Expect {
            damaged: None,
            file: None,
            health: "ok",
        },
    );
}

/// Starts the server on the damaged `dir` and checks every read path against `expect`.
fn check(dir: &Path, expect: Expect) {
    let server = start(dir);
    let c = server.client();
    let all = &fixture().events;
    let damaged_event = expect.damaged.map(|p| {
        all.iter()
            .find(|e| e["position"] == p)
            .expect("damaged event")
            .clone()
    });
    let intact: Vec<&Value> = all
        .iter()
        .filter(|e| Some(e["position"].as_u64().unwrap()) != expect.damaged)
        .collect();
    let is_damaged = |e: &Value| Some(e["position"].as_u64().unwrap()) == expect.damaged;

    // /all, forward pages of 7: every intact event, the damaged one a 500 at its position.
    let seen = page_through(&c, "/all?limit=7", "position", &expect, true);
    assert_same(&seen, &intact, "/all forward pages");
    let seen = page_through(
        &c,
        "/all?limit=7&direction=backward&from=end",
        "position",
        &expect,
        false,
    );
    let mut backward: Vec<&Value> = intact.clone();
    backward.reverse();
    assert_same(&seen, &backward, "/all backward pages");

    // /all with filters (types, category, stream prefix).
    for (query, keep) in [
        (
            "types=Even",
            &(|e: &Value| e["type"] == "Even") as &dyn Fn(&Value) -> bool,
        ),
        ("category=order", &|_: &Value| true),
        ("stream_prefix=order-1", &|e: &Value| {
            e["stream"] == "order-1"
        }),
    ] {
        let want: Vec<&Value> = intact.iter().copied().filter(|e| keep(e)).collect();
        // A damaged event the filter would leave out may still be answered: whether it matches
        // is in its damaged bytes (unless an intact index tells).
        let hit = damaged_event.as_ref().is_some_and(keep);
        let sub = Expect {
            damaged: expect.damaged,
            file: expect.file.clone(),
            health: expect.health,
        };
        let path = format!("/all?limit=5&{query}");
        let seen = page_through_maybe(&c, &path, "position", &sub, true, !hit);
        assert_same(&seen, &want, &format!("/all?{query}"));
    }

    // Each stream: pages forward and backward, NDJSON, single events, heads.
    for s in 0..STREAMS {
        let stream = format!("order-{s}");
        let want: Vec<&Value> = intact
            .iter()
            .copied()
            .filter(|e| e["stream"] == stream)
            .collect();
        let hit = damaged_event
            .as_ref()
            .is_some_and(|e| e["stream"] == stream);
        let sub = Expect {
            damaged: if hit { expect.damaged } else { None },
            file: expect.file.clone(),
            health: expect.health,
        };
        let path = format!("/streams/{}", enc(&stream));
        let seen = page_through(&c, &format!("{path}?limit=4"), "revision", &sub, true);
        assert_same(&seen, &want, &format!("{stream} forward pages"));
        let seen = page_through(
            &c,
            &format!("{path}?limit=4&direction=backward&from=end"),
            "revision",
            &sub,
            false,
        );
        let mut back = want.clone();
        back.reverse();
        assert_same(&seen, &back, &format!("{stream} backward pages"));
        check_ndjson(&c, &path, &want, &sub);
        if hit {
            // SSE on the stream: the events before the damaged one, then `event: error`.
            let d = expect.damaged.unwrap();
            let before: Vec<&Value> = want
                .iter()
                .copied()
                .filter(|e| e["position"].as_u64().unwrap() < d)
                .collect();
            let mut sse = c.sse(&path, &[]);
            sse.set_read_timeout(Duration::from_secs(20));
            let got = sse.expect_events(before.len(), "revision");
            assert_same(&got, &before, &format!("SSE {stream}"));
            let m = sse.expect_message();
            assert_eq!(m.event.as_deref(), Some("error"), "{m:?}");
            check_corrupt_body(&m.json(), &sub, &format!("SSE {stream} error"));
        }
        // Single events: each intact one, and the damaged one a 500.
        for e in all.iter().filter(|e| e["stream"] == stream) {
            let rev = e["revision"].as_u64().unwrap();
            let reply = c.get(&format!("{path}/{rev}"));
            if is_damaged(e) {
                assert_corrupt(&reply, &sub, &format!("{stream}/{rev}"));
            } else {
                reply.assert_status(200);
                assert_eq!(reply.json()["id"], e["id"], "{stream}/{rev}");
            }
        }
        // Metadata of a stream with damage still answers.
        c.get(&format!("{path}/metadata")).assert_status(200);
    }

    // The stream listing: every stream with its head.
    let listed = c.get("/streams").assert_status(200).json();
    let names: Vec<(&str, u64)> = listed["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap(),
                s["last_revision"].as_u64().unwrap(),
            )
        })
        .collect();
    let per_stream = EVENTS / STREAMS - 1;
    assert_eq!(
        names,
        (0..STREAMS)
            .map(|s| (
                ["order-0", "order-1", "order-2", "order-3"][s as usize],
                per_stream
            ))
            .collect::<Vec<_>>(),
        "{listed}"
    );

    // /all NDJSON and SSE catch-up end with the error after every event before it.
    check_ndjson(&c, "/all", &intact, &expect);
    check_sse(&c, &intact, &expect);

    // /health: the status, and the damage list naming the file.
    let health = c.get("/health");
    let body = health.json();
    assert_eq!(body["status"], expect.health, "/health: {body}");
    if let Some(file) = &expect.file {
        assert_eq!(health.status, 503, "{body}");
        let listed = body["damage"].as_array().cloned().unwrap_or_default();
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let d = listed
            .iter()
            .find(|d| d["file"].as_str().is_some_and(|f| f.ends_with(&name)))
            .unwrap_or_else(|| panic!("/health damage does not list {name}: {body}"));
        assert!(d["offset"].is_u64() && d["length"].is_u64(), "{d}");
        let p = expect.damaged.unwrap();
        assert!(
            d["positions"]["from"].as_u64() <= Some(p) && d["positions"]["to"].as_u64() > Some(p),
            "the damage range names position {p}: {d}"
        );
    } else {
        assert_eq!(health.status, 200, "{body}");
    }

    // The consumer group delivers every intact event and parks the damaged one as `corrupt`.
    check_group(&c, "g", &intact, &expect, None);
    check_group(&c, "gc", &intact, &expect, None);
    if let Some(e) = &damaged_event {
        // The group on the damaged event's stream parks it by revision.
        let stream = e["stream"].as_str().unwrap();
        let want: Vec<&Value> = intact
            .iter()
            .copied()
            .filter(|x| x["stream"] == stream)
            .collect();
        check_group(&c, &format!("g-{stream}"), &want, &expect, Some(e));
    }
    // The projection faults at the damaged event (or runs through when there is none).
    check_projection(&c, &intact, &expect);

    // Appends: 503 while read-only, else 201 with the right next revision.
    let reply = c.append_expecting("order-0", None, &json!({"type": "After", "data": {}}));
    if expect.health == "read_only" {
        reply.assert_error(503, "unavailable");
    } else {
        reply.assert_status(201);
        assert_eq!(
            reply.json()["first_revision"],
            per_stream + 1,
            "{}",
            reply.text()
        );
        let head = c.page("/streams/order-0?from=end&direction=backward&limit=1");
        assert_eq!(head["events"][0]["type"], "After");
    }

    // The error-level log line, with file and offset.
    let stderr = server.stderr();
    if let Some(file) = &expect.file {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            stderr.lines().any(|l| l.contains("ERROR")
                && l.contains("damaged data found")
                && l.contains(&name)),
            "no error-level damage line naming {name}:\n{stderr}"
        );
    } else {
        assert!(!stderr.contains("damaged data found"), "{stderr}");
    }
    server.stop_with(libc::SIGTERM).expect("stop");
}

/// Asserts a 500 `corrupt` error naming the damaged file (and position, when the store knows it).
#[track_caller]
fn assert_corrupt(reply: &Reply, expect: &Expect, what: &str) {
    let body = reply.assert_error_for(what, 500, "corrupt");
    check_corrupt_body(&body, expect, what);
}

#[track_caller]
fn check_corrupt_body(body: &Value, expect: &Expect, what: &str) {
    assert_eq!(body["error"], "corrupt", "{what}: {body}");
    let name = expect
        .file
        .as_ref()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .unwrap_or_default();
    assert!(
        body["file"].as_str().is_some_and(|f| f.ends_with(&name)),
        "{what}: file: {body}"
    );
    assert!(body["offset"].is_u64(), "{what}: offset: {body}");
    if let Some(p) = body.get("position") {
        assert_eq!(p.as_u64(), expect.damaged, "{what}: position: {body}");
    }
}

/// Pages through `path` (which has `limit` and maybe `direction`), following `next`. A 500
/// `corrupt` must come exactly at the damaged event: the paging goes on after it. Returns the
/// events seen.
fn page_through(c: &Client, path: &str, key: &str, expect: &Expect, forward: bool) -> Vec<Value> {
    page_through_maybe(c, path, key, expect, forward, false)
}

/// [`page_through`]; with `maybe`, the damage may or may not be answered (at most once).
fn page_through_maybe(
    c: &Client,
    path: &str,
    key: &str,
    expect: &Expect,
    forward: bool,
    maybe: bool,
) -> Vec<Value> {
    let all = &fixture().events;
    let mut out = Vec::new();
    let mut from: Option<u64> = None;
    let mut errors = 0;
    for _ in 0..500 {
        let url = match from {
            Some(f) => format!("{path}&from={f}"),
            None => path.to_owned(),
        };
        let url = if from.is_some() {
            url.replace("&from=end", "")
        } else {
            url
        };
        let reply = c.get_with(&url, &[("Accept", "application/json")]);
        if reply.status == 500 {
            assert_corrupt(&reply, expect, &url);
            errors += 1;
            // The page that answers the damage starts at the damaged event, or (on `/all`)
            // at events the page's filter leaves out just before it.
            let d = expect.damaged.expect("an error without damage");
            let at = all.iter().find(|e| e["position"] == d).unwrap()[key]
                .as_u64()
                .unwrap();
            if forward {
                assert!(
                    from.unwrap_or(0) <= at,
                    "{url}: the error comes before the damage"
                );
                from = Some(at + 1);
            } else if at == 0 {
                break;
            } else {
                assert!(
                    from.is_none_or(|f| f >= at),
                    "{url}: the error comes past the damage"
                );
                from = Some(at - 1);
            }
            continue;
        }
        reply.assert_status(200);
        let page = reply.json();
        out.extend(page["events"].as_array().unwrap().iter().cloned());
        if page["end"] == true || page["next"].is_null() {
            break;
        }
        from = page["next"].as_u64();
    }
    if maybe {
        assert!(errors <= 1, "{path}: errors {errors}");
    } else {
        assert_eq!(
            errors,
            usize::from(expect.damaged.is_some()),
            "{path}: errors"
        );
    }
    out
}

#[track_caller]
fn assert_same(seen: &[Value], want: &[&Value], what: &str) {
    let ids = |v: &mut dyn Iterator<Item = &Value>| -> Vec<(u64, u64, String)> {
        v.map(|e| {
            (
                e["position"].as_u64().unwrap(),
                e["revision"].as_u64().unwrap(),
                e["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
    };
    let (seen, want) = (ids(&mut seen.iter()), ids(&mut want.iter().copied()));
    if seen != want {
        let missing: Vec<u64> = want
            .iter()
            .filter(|e| !seen.contains(e))
            .map(|e| e.0)
            .collect();
        let extra: Vec<u64> = seen
            .iter()
            .filter(|e| !want.contains(e))
            .map(|e| e.0)
            .collect();
        panic!(
            "{what}: events (position, revision, id) differ: {} seen, {} wanted; positions \
             missing {missing:?}, unexpected {extra:?}",
            seen.len(),
            want.len()
        );
    }
}

/// The NDJSON replay of `path`: the intact events before the damage, then the error line; or
/// every event without damage. After the damage, a replay from the next event has the rest.
fn check_ndjson(c: &Client, path: &str, want: &[&Value], expect: &Expect) {
    let reply = c.get_with(path, &[("Accept", "application/x-ndjson")]);
    let Some(d) = expect.damaged else {
        reply.assert_status(200);
        assert_same(&reply.ndjson(), want, &format!("NDJSON {path}"));
        return;
    };
    let before: Vec<&Value> = want
        .iter()
        .copied()
        .filter(|e| e["position"].as_u64().unwrap() < d)
        .collect();
    if before.is_empty() {
        assert_corrupt(&reply, expect, &format!("NDJSON {path}"));
    } else {
        reply.assert_status(200);
        let mut lines = reply.ndjson();
        let last = lines.pop().expect("an error line");
        check_corrupt_body(&last, expect, &format!("NDJSON {path} last line"));
        assert_same(&lines, &before, &format!("NDJSON {path} before the damage"));
    }
}

/// SSE catch-up on `/all`: every event before the damage, then `event: error` with the
/// `corrupt` JSON, and the response ends. Resuming after the damage has the rest.
fn check_sse(c: &Client, want: &[&Value], expect: &Expect) {
    let mut sse = c.sse("/all", &[]);
    sse.set_read_timeout(Duration::from_secs(20));
    let before: Vec<&Value> = want
        .iter()
        .copied()
        .filter(|e| {
            expect
                .damaged
                .is_none_or(|d| e["position"].as_u64().unwrap() < d)
        })
        .collect();
    let got = sse.expect_events(before.len(), "position");
    assert_same(&got, &before, "SSE before the damage");
    let Some(d) = expect.damaged else { return };
    let m = sse.expect_message();
    assert_eq!(m.event.as_deref(), Some("error"), "{m:?}");
    check_corrupt_body(&m.json(), expect, "SSE error");
    assert!(
        matches!(sse.next_message(), Ok(None)),
        "the response ends after the error"
    );
    let after: Vec<&Value> = want
        .iter()
        .copied()
        .filter(|e| e["position"].as_u64().unwrap() > d)
        .collect();
    let mut rest = c.sse(&format!("/all?from={}", d + 1), &[]);
    rest.set_read_timeout(Duration::from_secs(20));
    let got = rest.expect_events(after.len(), "position");
    assert_same(&got, &after, "SSE after the damage");
}

/// The group `name` delivers `want` and parks the damaged event as `corrupt`; `by_revision`:
/// the damaged event, for a group on its stream (the cursor is then its revision).
fn check_group(
    c: &Client,
    name: &str,
    want: &[&Value],
    expect: &Expect,
    by_revision: Option<&Value>,
) {
    let g = Group::new(c, name);
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.len() < want.len() && Instant::now() < deadline {
        let msgs = g.poll(100, 500);
        // Acks may not be saved on a read-only store; they still settle the deliveries.
        let _ = g.ack_reply(&msgs.iter().map(|m| m.ack_id.as_str()).collect::<Vec<_>>());
        got.extend(msgs.into_iter().map(|m| m.event));
    }
    got.sort_by_key(|e| e["position"].as_u64());
    assert_same(&got, want, &format!("group {name} deliveries"));
    let parked = g.parked();
    match expect.damaged {
        None => assert!(parked.is_empty(), "{parked:?}"),
        Some(d) => {
            assert_eq!(parked.len(), 1, "{parked:?}");
            let p = &parked[0];
            assert_eq!(p["reason"], "corrupt", "{p}");
            match by_revision {
                None => {
                    assert_eq!(p["position"], d, "{p}");
                    assert_eq!(p["cursor"], d, "{p}");
                }
                Some(e) => {
                    assert_eq!(p["cursor"], e["revision"], "{p}");
                    assert_eq!(p["revision"], e["revision"], "{p}");
                    assert_eq!(p["stream"], e["stream"], "{p}");
                    // The position where the store still knows it.
                    assert!(p["position"].is_null() || p["position"] == d, "{p}");
                }
            }
            assert!(p["file"].is_string() && p["offset"].is_u64(), "{p}");
            // A replay re-reads it: still damaged, it stays parked. (A replay is a write:
            // 503 on a read-only store.)
            let r = g
                .client
                .request("POST", &g.path("/parked/replay"), &[], None);
            if expect.health == "read_only" {
                r.assert_error(503, "unavailable");
            } else {
                r.assert_status(200);
                assert_eq!(r.json()["remaining"], 1, "{}", r.text());
            }
            assert_eq!(g.parked().len(), 1);
        }
    }
}

fn check_projection(c: &Client, want: &[&Value], expect: &Expect) {
    let reply = projection_action(c, "count", "start");
    if expect.health == "read_only" {
        // Starting records the projection's desired state: a write, refused while read-only.
        // (The fault at damage is the same path as in the `damaged` case.)
        reply.assert_error(503, "unavailable");
        assert_eq!(get_projection(c, "count")["status"], "stopped");
        return;
    }
    assert!(
        reply.status < 300,
        "start: {} {}",
        reply.status,
        reply.text()
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let p = get_projection(c, "count");
        match expect.damaged {
            Some(d) if p["status"] == "faulted" => {
                let error = &p["error"];
                assert_eq!(error["position"], d, "{p}");
                let message = error["message"].as_str().unwrap_or_default();
                let name = expect.file.as_ref().unwrap().file_name().unwrap();
                assert!(
                    message.contains("corruption") && message.contains(&*name.to_string_lossy()),
                    "{p}"
                );
                // Everything before the damage was applied.
                let before = want
                    .iter()
                    .filter(|e| e["position"].as_u64().unwrap() < d)
                    .count();
                let state = c.get("/projections/count/state").json();
                assert_eq!(state["n"], before as u64, "{state}");
                return;
            }
            None if p["status"] == "running" => {
                let state = c.get("/projections/count/state").json();
                if state["n"] == want.len() as u64 {
                    return;
                }
            }
            _ => {}
        }
        assert!(Instant::now() < deadline, "projection: {p}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_fixture_has_distinct_streams() {
    let streams: BTreeSet<&str> = fixture()
        .events
        .iter()
        .map(|e| e["stream"].as_str().unwrap())
        .collect();
    assert_eq!(streams.len() as u64, STREAMS);
}

/// The scenario: one segment, 201 acknowledged events, a byte flipped in the *first*
/// event's payload. The 200 intact events stay readable with their positions and revisions;
/// nothing answers 404 or an empty log; the start-up line counts every event.
#[test]
fn a_damaged_first_event_of_the_log_hides_nothing_else() {
    let dir = tempfile::tempdir().expect("tempdir");
    let args = ["--fsync", "never", "--log-level", "info"];
    let server = ServerProcess::start(strata_binary(), dir.path(), &args, START_TIMEOUT)
        .unwrap_or_else(|e| panic!("starting strata: {e}"));
    let c = server.client();
    for i in 0..201u64 {
        let event = json!({"type": "T", "data": {"seq": i}});
        c.append(["a", "b", "c"][(i % 3) as usize], &event);
    }
    let before = c.ndjson("/all");
    server.stop_with(libc::SIGTERM).expect("stop");
    let segs = frames(dir.path());
    assert_eq!(segs.len(), 1);
    let first = &segs[0].frames[0];
    assert_eq!((first.position, first.stream.as_str()), (0, "a"));
    flip(&segs[0].path, first.data + 2, 0x08);

    let server = ServerProcess::start(strata_binary(), dir.path(), &args, START_TIMEOUT)
        .unwrap_or_else(|e| panic!("starting strata: {e}"));
    let c = server.client();
    let expect = Expect {
        damaged: Some(0),
        file: Some(segs[0].path.clone()),
        health: "read_only",
    };
    let health = c.get("/health");
    assert_eq!(health.status, 503);
    let body = health.json();
    assert_eq!(body["status"], "read_only", "{body}");
    assert_eq!(
        body["damage"][0]["positions"],
        json!({"from": 0, "to": 1}),
        "{body}"
    );
    // The first event: 500 corrupt on every path that needs it, never 404 or a skip.
    assert_corrupt(&c.get("/streams/a"), &expect, "/streams/a");
    assert_corrupt(&c.get("/streams/a/0"), &expect, "/streams/a/0");
    assert_corrupt(&c.get("/all"), &expect, "/all");
    let ndjson = c.get_with("/all", &[("Accept", "application/x-ndjson")]);
    assert_corrupt(&ndjson, &expect, "NDJSON /all");
    // Everything after it, with the original positions and revisions.
    let rest: Vec<&Value> = before.iter().skip(1).collect();
    assert_same(&c.ndjson("/all?from=1"), &rest, "NDJSON /all from 1");
    let a: Vec<&Value> = rest
        .iter()
        .copied()
        .filter(|e| e["stream"] == "a")
        .collect();
    assert_same(&c.ndjson("/streams/a?from=1"), &a, "NDJSON a from 1");
    for s in ["b", "c"] {
        let want: Vec<&Value> = rest.iter().copied().filter(|e| e["stream"] == s).collect();
        assert_same(&c.ndjson(&format!("/streams/{s}")), &want, s);
    }
    let listed = c.get("/streams").assert_status(200).json();
    assert_eq!(
        listed["streams"],
        json!([
            {"name": "a", "last_revision": 66, "last_position": 198},
            {"name": "b", "last_revision": 66, "last_position": 199},
            {"name": "c", "last_revision": 66, "last_position": 200},
        ]),
        "{listed}"
    );
    let stderr = server.stderr();
    assert!(
        stderr.contains("next_position=201") && stderr.contains("damaged data found"),
        "{stderr}"
    );
    server.stop_with(libc::SIGTERM).expect("stop");
}
