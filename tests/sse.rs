//! End-to-end: Server-Sent Events catch-up subscriptions — history then live with no gap and no
//! duplicate while writers run, `Last-Event-ID` resume, waiting for a stream to appear, filters,
//! keepalive comments, and bounded server memory for a reader that does not read — against
//! the real `strata` binary.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use strata_suite::{proc_status_kib, Client, SseItem, SseReader, TestServer};

fn batch(ty: &str, from: usize, n: usize) -> Value {
    Value::Array(
        (from..from + n)
            .map(|i| json!({"type": ty, "data": {"i": i}}))
            .collect(),
    )
}

/// Appends `total` events to `stream` in batches of 1..=3, with small pauses.
fn spawn_writer(
    c: &Client,
    stream: &str,
    ty: &'static str,
    total: usize,
) -> std::thread::JoinHandle<()> {
    let c = c.clone();
    let stream = stream.to_owned();
    std::thread::spawn(move || {
        let mut i = 0;
        while i < total {
            let n = (i % 3 + 1).min(total - i);
            c.append(&stream, &batch(ty, i, n));
            i += n;
            if i % 10 == 0 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    })
}

#[test]
fn stream_subscription_delivers_history_then_live_without_gap_or_duplicate() {
    let server = TestServer::start();
    let c = server.client();
    c.append("sub-1", &batch("Hist", 0, 200));
    c.append("noise-1", &json!({"type": "Noise"}));
    // Live appends start before the subscription and go on while it catches up.
    let writer = spawn_writer(&c, "sub-1", "Live", 300);
    let noise = spawn_writer(&c, "noise-1", "Noise", 100);
    let mut sse = c.sse("/streams/sub-1", &[]);
    let events = sse.expect_events(500, "revision");
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["revision"], i as u64, "gap or duplicate at {i}");
        assert_eq!(e["stream"], "sub-1");
        if i < 200 {
            assert_eq!(e["type"], "Hist");
            assert_eq!(e["data"]["i"], i as u64);
        } else {
            assert_eq!(e["type"], "Live");
            assert_eq!(e["data"]["i"], i as u64 - 200);
        }
    }
    writer.join().unwrap();
    noise.join().unwrap();
    // Events are the same as a read returns them.
    let read = c.read_stream("sub-1");
    assert_eq!(read, events);
    // Nothing more arrives: the next message is the next append.
    c.append("sub-1", &json!({"type": "After"}));
    let next = sse.expect_events(1, "revision");
    assert_eq!(next[0]["revision"], 500);
    assert_eq!(next[0]["type"], "After");
}

#[test]
fn all_subscription_delivers_history_then_live_from_concurrent_writers() {
    let server = TestServer::start();
    let c = server.client();
    for s in ["w-1", "w-2", "w-3"] {
        c.append(s, &batch("Hist", 0, 40));
    }
    let writers: Vec<_> = ["w-1", "w-2", "w-3"]
        .iter()
        .map(|s| spawn_writer(&c, s, "Live", 150))
        .collect();
    let mut sse = c.sse("/all?from=start", &[]);
    let total = 3 * 40 + 3 * 150;
    let events = sse.expect_events(total, "position");
    for w in writers {
        w.join().unwrap();
    }
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["position"], i as u64, "gap or duplicate at {i}");
    }
    // Per stream, revisions in order with nothing missing.
    for s in ["w-1", "w-2", "w-3"] {
        let revs: Vec<u64> = events
            .iter()
            .filter(|e| e["stream"] == s)
            .map(|e| e["revision"].as_u64().unwrap())
            .collect();
        assert_eq!(revs, (0..190).collect::<Vec<_>>(), "{s}");
    }
    assert_eq!(c.ndjson("/all"), events);
}

#[test]
fn filtered_all_subscription_sees_only_matching_events_live() {
    let server = TestServer::start();
    let c = server.client();
    c.append("order-1", &batch("OrderPlaced", 0, 5));
    c.append("customer-1", &batch("CustomerCreated", 0, 5));
    let orders = spawn_writer(&c, "order-2", "OrderPlaced", 60);
    let customers = spawn_writer(&c, "customer-2", "CustomerCreated", 60);
    let shipped = spawn_writer(&c, "order-3", "OrderShipped", 30);
    let mut by_category = c.sse("/all?category=order", &[]);
    let mut by_type = c.sse("/all?types=CustomerCreated", &[]);
    let mut by_prefix = c.sse("/all?stream_prefix=order-3", &[]);
    let got_category = by_category.expect_events(5 + 60 + 30, "position");
    let got_type = by_type.expect_events(5 + 60, "position");
    let got_prefix = by_prefix.expect_events(30, "position");
    for w in [orders, customers, shipped] {
        w.join().unwrap();
    }
    let positions =
        |v: &[Value]| -> Vec<u64> { v.iter().map(|e| e["position"].as_u64().unwrap()).collect() };
    let want = |q: &str| -> Vec<u64> { positions(&c.ndjson(&format!("/all?{q}"))) };
    assert_eq!(positions(&got_category), want("category=order"));
    assert_eq!(positions(&got_type), want("types=CustomerCreated"));
    assert_eq!(positions(&got_prefix), want("stream_prefix=order-3"));
    assert!(got_category
        .iter()
        .all(|e| e["stream"].as_str().unwrap().starts_with("order-")));
    assert!(got_type.iter().all(|e| e["type"] == "CustomerCreated"));
}

#[test]
fn last_event_id_resumes_right_after_that_id() {
    let server = TestServer::start();
    let c = server.client();
    c.append("resume-1", &batch("R", 0, 20));
    c.append("other-1", &batch("O", 0, 5));

    // Stream: Last-Event-ID wins over from.
    for from in ["", "?from=start", "?from=0", "?from=15", "?from=end"] {
        let mut sse = c.sse(
            &format!("/streams/resume-1{from}"),
            &[("Last-Event-ID", "9")],
        );
        let got = sse.expect_events(10, "revision");
        let revs: Vec<u64> = got
            .iter()
            .map(|e| e["revision"].as_u64().unwrap())
            .collect();
        assert_eq!(revs, (10..20).collect::<Vec<_>>(), "from {from:?}");
    }
    // /all: positions; resume after the last event of the log waits for the next one.
    let mut sse = c.sse("/all", &[("Last-Event-ID", "21")]);
    let got = sse.expect_events(3, "position");
    assert_eq!(
        got.iter()
            .map(|e| e["position"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [22, 23, 24]
    );
    c.append("resume-1", &json!({"type": "New"}));
    assert_eq!(sse.expect_events(1, "position")[0]["position"], 25);
    // Filtered /all: the next matching position after the id.
    let mut sse = c.sse("/all?stream_prefix=other", &[("Last-Event-ID", "21")]);
    assert_eq!(sse.expect_events(1, "position")[0]["position"], 22);

    // A reconnect: read some, drop, append while away, resume with the last id seen.
    let mut sse = c.sse("/streams/resume-1?from=start", &[]);
    let first = sse.expect_events(7, "revision");
    drop(sse);
    c.append("resume-1", &batch("Away", 0, 4));
    let last_id = first.last().unwrap()["revision"].to_string();
    let mut sse = c.sse("/streams/resume-1", &[("Last-Event-ID", &last_id)]);
    let rest = sse.expect_events(25 - 7, "revision");
    let mut all: Vec<u64> = first
        .iter()
        .chain(&rest)
        .map(|e| e["revision"].as_u64().unwrap())
        .collect();
    assert_eq!(all, (0..25).collect::<Vec<_>>());
    c.append("resume-1", &json!({"type": "Live"}));
    all.push(
        sse.expect_events(1, "revision")[0]["revision"]
            .as_u64()
            .unwrap(),
    );
    assert_eq!(all.last(), Some(&25));
}

#[test]
fn subscriptions_from_end_and_to_a_stream_not_written_yet() {
    let server = TestServer::start();
    let c = server.client();
    c.append("fe-1", &batch("Old", 0, 10));

    let mut from_end = c.sse("/streams/fe-1?from=end", &[]);
    let mut all_end = c.sse("/all?from=end", &[]);
    let mut from_5 = c.sse("/streams/fe-1?from=5", &[]);
    let mut later = c.sse("/streams/later-1", &[]);
    let mut later_end = c.sse("/streams/later-2?from=end", &[]);
    // Subscriptions are established (the server sent its first bytes) before appending.
    for sse in [&mut from_end, &mut all_end, &mut later, &mut later_end] {
        sse.set_read_timeout(Duration::from_millis(300));
        match sse.next_item() {
            Ok(Some(SseItem::Comment(_))) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            other => panic!("nothing but a comment may arrive yet: {other:?}"),
        }
        sse.set_read_timeout(Duration::from_secs(30));
    }
    let got = from_5.expect_events(5, "revision");
    assert_eq!(got[0]["revision"], 5);

    c.append("fe-1", &json!({"type": "New"}));
    c.append("later-1", &batch("First", 0, 2));
    c.append("later-2", &json!({"type": "First"}));
    let e = &from_end.expect_events(1, "revision")[0];
    assert_eq!(
        (e["revision"].as_u64(), e["type"].as_str()),
        (Some(10), Some("New"))
    );
    assert_eq!(from_5.expect_events(1, "revision")[0]["revision"], 10);
    let got = all_end.expect_events(4, "position");
    assert_eq!(
        got.iter()
            .map(|e| e["position"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [10, 11, 12, 13]
    );
    let got = later.expect_events(2, "revision");
    assert_eq!(got[0]["revision"], 0);
    assert_eq!(got[1]["stream"], "later-1");
    assert_eq!(later_end.expect_events(1, "revision")[0]["revision"], 0);

    // Message format: `event: <type>`, `id: <n>`, `data: <one-line JSON>`.
    c.append(
        "fmt-1",
        &json!({"type": "Formatted", "data": {"multi": "line\nbreak"}}),
    );
    let mut response = c.open(
        "GET",
        "/streams/fmt-1",
        &[("Accept", "text/event-stream")],
        None,
    );
    assert_eq!(response.header("content-type"), Some("text/event-stream"));
    let mut lines = Vec::new();
    while lines
        .iter()
        .filter(|l: &&String| l.starts_with("data:"))
        .count()
        == 0
    {
        lines.push(response.next_line().unwrap().unwrap());
    }
    lines.push(response.next_line().unwrap().unwrap());
    let message: Vec<&String> = lines
        .iter()
        .filter(|l| !l.starts_with(':') && !l.is_empty())
        .collect();
    assert_eq!(message[0], "event: Formatted", "{lines:?}");
    assert_eq!(message[1], "id: 0", "{lines:?}");
    assert!(message[2].starts_with("data: {"), "{lines:?}");
    assert_eq!(
        lines.last().unwrap(),
        "",
        "a message ends with a blank line: {lines:?}"
    );
    let data: Value = serde_json::from_str(message[2].strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(data["data"]["multi"], "line\nbreak");
}

#[test]
fn deleting_a_stream_ends_its_subscriptions_with_an_error_event() {
    let server = TestServer::start();
    let c = server.client();
    c.append("del-1", &batch("D", 0, 3));
    let mut sse = c.sse("/streams/del-1", &[]);
    sse.expect_events(3, "revision");
    c.delete("/streams/del-1", &[]).assert_status(204);
    // docs/http-api.md: a final `event: error` message, then the response ends.
    let last = sse.expect_message();
    assert_eq!(last.event.as_deref(), Some("error"), "{last:?}");
    assert_eq!(last.json()["error"], "stream_deleted");
    assert!(
        matches!(sse.next_message(), Ok(None)),
        "the response goes on after the error"
    );
    c.get_with("/streams/del-1", &[("Accept", "text/event-stream")])
        .assert_error(410, "stream_deleted");
}

/// `: keepalive` comments at least every 15 s on an idle subscription. Takes ~15 s.
#[test]
fn keepalive_comments_arrive_on_an_idle_subscription() {
    let server = TestServer::start();
    let c = server.client();
    let mut sse = c.sse("/all?from=end", &[]);
    sse.set_read_timeout(Duration::from_secs(20));
    let opened = Instant::now();
    // The response opens with a comment (docs); then at most 15 s of silence.
    let mut keepalives = Vec::new();
    while keepalives.len() < 2 {
        match sse.next_item() {
            Ok(Some(SseItem::Comment(text))) => {
                assert_eq!(text, "keepalive");
                keepalives.push(opened.elapsed());
            }
            other => panic!(
                "expected keepalive comments, got {other:?} after {:?}",
                opened.elapsed()
            ),
        }
    }
    let gap = keepalives[1] - keepalives[0];
    assert!(
        gap <= Duration::from_millis(16_500),
        "keepalives {keepalives:?}"
    );
    // The subscription is still live.
    c.append("ka-1", &json!({"type": "Late"}));
    assert_eq!(sse.expect_events(1, "position")[0]["type"], "Late");
}

/// A subscriber that does not read while ~64 MiB are appended: the server's memory stays
/// bounded (it reads the log again later rather than queueing), and the subscriber then gets
/// every event in order.
#[test]
fn a_slow_sse_reader_does_not_grow_server_memory() {
    const EVENT_BYTES: usize = 4000;
    const PER_BATCH: usize = 128;
    const BATCHES: usize = 128; // 128 × 128 × 4000 B ≈ 64 MiB
    let server = TestServer::start();
    let c = server.client();
    let pid = server.pid();
    c.append("slow-1", &json!({"type": "Warmup", "data": {"i": 0}}));

    // The subscriber: small receive buffer, reads nothing until the end.
    let socket = c.connect_small_rcvbuf(4096);
    let response = c.send_on(
        socket,
        "GET",
        "/all?from=start",
        &[("Accept", "text/event-stream")],
        None,
    );
    assert_eq!(response.status, 200);
    let mut sse: SseReader = response.into_sse();

    // Warm up the allocator with a few batches, then take the baseline.
    let pad = "p".repeat(EVENT_BYTES);
    let body_for = |b: usize| -> String {
        let events: Vec<Value> = (0..PER_BATCH)
            .map(|i| json!({"type": "Slow", "data": {"b": b, "i": i, "pad": pad}}))
            .collect();
        Value::Array(events).to_string()
    };
    let mut batch = 0;
    for _ in 0..4 {
        c.post_json("/streams/slow-1", &body_for(batch))
            .assert_status(201);
        batch += 1;
    }
    std::thread::sleep(Duration::from_millis(200));
    let base_rss = proc_status_kib(pid, "VmRSS").unwrap();
    let base_anon = proc_status_kib(pid, "RssAnon").unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let peak_rss = Arc::new(AtomicU64::new(base_rss));
    let peak_anon = Arc::new(AtomicU64::new(base_anon));
    let sampler = {
        let (stop, peak_rss, peak_anon) = (stop.clone(), peak_rss.clone(), peak_anon.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Some(v) = proc_status_kib(pid, "VmRSS") {
                    peak_rss.fetch_max(v, Ordering::Relaxed);
                }
                if let Some(v) = proc_status_kib(pid, "RssAnon") {
                    peak_anon.fetch_max(v, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(25));
            }
        })
    };
    let mut appended = 4 * PER_BATCH * EVENT_BYTES;
    while batch < BATCHES {
        c.post_json("/streams/slow-1", &body_for(batch))
            .assert_status(201);
        appended += PER_BATCH * EVENT_BYTES;
        batch += 1;
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let rss_growth = peak_rss.load(Ordering::Relaxed).saturating_sub(base_rss);
    let anon_growth = peak_anon.load(Ordering::Relaxed).saturating_sub(base_anon);
    eprintln!(
        "slow reader: appended {} MiB; server VmRSS {} MiB -> peak +{} MiB, RssAnon +{} MiB",
        appended >> 20,
        base_rss >> 10,
        rss_growth >> 10,
        anon_growth >> 10
    );
    assert!(
        rss_growth < 30 * 1024,
        "server VmRSS grew by {rss_growth} KiB for {appended} B appended"
    );
    assert!(
        anon_growth < 30 * 1024,
        "server RssAnon grew by {anon_growth} KiB"
    );
    let info = c.get("/info").json();
    assert_eq!(info["open_subscriptions"], 1, "{info}");

    // Now read everything: every event, in order. A server may drop a slow subscriber with a
    // final `event: error` (docs/http-api.md); the client then resumes with Last-Event-ID.
    let total = 1 + BATCHES * PER_BATCH;
    let mut next_position = 0u64;
    let mut resumes = 0;
    while (next_position as usize) < total {
        let m = match sse.next_message() {
            Ok(Some(m)) => m,
            other => panic!("subscription ended at {next_position}: {other:?}"),
        };
        if m.event.as_deref() == Some("error") {
            resumes += 1;
            assert!(resumes < 100, "dropped too often");
            let last = (next_position - 1).to_string();
            sse = c.sse("/all", &[("Last-Event-ID", &last)]);
            continue;
        }
        assert_eq!(m.id_u64(), next_position, "gap or duplicate");
        let e = m.json();
        assert_eq!(e["position"], next_position);
        if next_position > 0 {
            let k = next_position as usize - 1;
            assert_eq!(e["revision"], next_position);
            assert_eq!(e["data"]["b"], (k / PER_BATCH) as u64);
            assert_eq!(e["data"]["i"], (k % PER_BATCH) as u64);
            assert_eq!(e["data"]["pad"].as_str().map(str::len), Some(EVENT_BYTES));
        }
        next_position += 1;
    }
    if resumes > 0 {
        eprintln!("slow reader: the server dropped the subscriber {resumes} time(s)");
    }
}

/// Replays and subscriptions whose clients do not read must not stall anything else.
#[test]
fn unread_replays_and_subscriptions_do_not_stall_other_requests() {
    let server = TestServer::start();
    let c = server.client();
    let pad = "s".repeat(2000);
    for b in 0..40 {
        let events: Vec<Value> = (0..100)
            .map(|i| json!({"type": "S", "data": {"b": b, "i": i, "pad": pad}}))
            .collect();
        c.append(&format!("stall-{}", b % 4), &Value::Array(events));
    }
    // ~8 MiB log; 8 replays and 8 subscriptions that are never read.
    let mut idle = Vec::new();
    for i in 0..8 {
        let socket = c.connect_small_rcvbuf(4096);
        let path = if i % 2 == 0 {
            "/all"
        } else {
            "/streams/stall-1"
        };
        idle.push(c.send_on(
            socket,
            "GET",
            path,
            &[("Accept", "application/x-ndjson")],
            None,
        ));
        let socket = c.connect_small_rcvbuf(4096);
        idle.push(c.send_on(
            socket,
            "GET",
            "/all?from=start",
            &[("Accept", "text/event-stream")],
            None,
        ));
    }
    assert!(idle.iter().all(|r| r.status == 200));
    // The 8 subscriptions run (their producers soon block on full socket buffers) before the other
    // requests start, and still run after them: those requests were served while the readers
    // were stalled. A request stuck behind them would hit the client's 30 s timeout (the hang
    // guard); how fast each one is depends on the machine's load and is not asserted.
    let open_subscriptions = || c.get("/info").json()["open_subscriptions"].as_u64();
    let open = strata_suite::wait_for(Duration::from_secs(30), || {
        (open_subscriptions() == Some(8)).then_some(())
    });
    assert!(open.is_some(), "{}", c.get("/info").text());
    let mut slowest = Duration::ZERO;
    for i in 0..20 {
        let started = Instant::now();
        c.get("/health").assert_status(200);
        let r = c.append("stall-x", &json!({"type": "X"}));
        assert_eq!(r["first_revision"], i, "{r}");
        let page = c.page("/streams/stall-2?limit=5");
        assert_eq!(page["events"].as_array().map(Vec::len), Some(5), "{page}");
        slowest = slowest.max(started.elapsed());
    }
    assert_eq!(open_subscriptions(), Some(8), "a stalled reader went away");
    eprintln!("stalled readers: slowest round of requests {slowest:?}");
}
