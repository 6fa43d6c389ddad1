//! `Accept: text/event-stream`: catch-up subscriptions.

use std::sync::Arc;
use std::time::Duration;

use crate::support::{TestServer, SECOND};

/// How long a message, or the end of a response, that must come is waited for: a hang guard,
/// not a latency bound (each wait returns as soon as it comes; the machine may be loaded).
const WAIT: Duration = SECOND.saturating_mul(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_then_live_with_no_gap_or_duplicate() {
    let s = Arc::new(TestServer::start());
    s.append_many("live-1", 50).await;
    let mut sse = s.subscribe("/streams/live-1", &[]).await;
    // Appends keep running while the subscriber catches up.
    let writer = {
        let s = s.clone();
        tokio::spawn(async move {
            for i in 0..200 {
                s.append("live-1", &format!(r#"{{"type":"Live","data":{i}}}"#))
                    .await;
                s.append("noise-1", r#"{"type":"Noise"}"#).await;
            }
        })
    };
    for expected in 0..250u64 {
        let m = sse.next_message(WAIT).await.expect("message");
        assert_eq!(m.id.as_deref(), Some(expected.to_string().as_str()));
        let e = m.json();
        assert_eq!(e["revision"], expected);
        assert_eq!(e["stream"], "live-1");
        assert_eq!(m.event, e["type"].as_str().unwrap());
    }
    writer.await.unwrap();
    assert!(sse.next_message(Duration::from_millis(200)).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_subscriptions_use_positions_and_filters() {
    let s = TestServer::start();
    s.append("order-1", r#"{"type":"Placed"}"#).await;
    s.append("user-1", r#"{"type":"Created"}"#).await;
    let mut sse = s.subscribe("/all?category=order", &[]).await;
    let m = sse.next_message(WAIT).await.unwrap();
    assert_eq!((m.id.as_deref(), m.event.as_str()), (Some("0"), "Placed"));
    s.append("user-2", r#"{"type":"Created"}"#).await;
    s.append("order-2", r#"{"type":"Placed"}"#).await;
    let m = sse.next_message(WAIT).await.unwrap();
    assert_eq!(m.id.as_deref(), Some("3"));
    assert_eq!(m.json()["stream"], "order-2");
    // types filter, from=end: only new events.
    let mut sse = s.subscribe("/all?types=Created&from=end", &[]).await;
    s.append("order-3", r#"{"type":"Placed"}"#).await;
    s.append("user-3", r#"{"type":"Created"}"#).await;
    let m = sse.next_message(WAIT).await.unwrap();
    assert_eq!(m.id.as_deref(), Some("5"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_event_id_resumes_right_after_it() {
    let s = TestServer::start();
    s.append_many("r-1", 10).await;
    // Overrides `from`.
    let mut sse = s
        .subscribe("/streams/r-1?from=0", &[("last-event-id", "6")])
        .await;
    for expected in 7..10u64 {
        let m = sse.next_message(WAIT).await.unwrap();
        assert_eq!(m.json()["revision"], expected);
    }
    let mut sse = s.subscribe("/all", &[("last-event-id", "8")]).await;
    assert_eq!(
        sse.next_message(WAIT).await.unwrap().id.as_deref(),
        Some("9")
    );
    let r = s
        .get_with(
            "/streams/r-1",
            &[("accept", "text/event-stream"), ("last-event-id", "abc")],
        )
        .await;
    r.assert_error(400, "invalid_request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_end_and_from_revision() {
    let s = TestServer::start();
    s.append_many("f-1", 5).await;
    let mut sse = s.subscribe("/streams/f-1?from=end", &[]).await;
    let mut sse3 = s.subscribe("/streams/f-1?from=3", &[]).await;
    s.append("f-1", r#"{"type":"New"}"#).await;
    let m = sse.next_message(WAIT).await.unwrap();
    assert_eq!((m.id.as_deref(), m.event.as_str()), (Some("5"), "New"));
    let ids: Vec<String> = [
        sse3.next_message(WAIT).await.unwrap(),
        sse3.next_message(WAIT).await.unwrap(),
        sse3.next_message(WAIT).await.unwrap(),
    ]
    .into_iter()
    .filter_map(|m| m.id)
    .collect();
    assert_eq!(ids, ["3", "4", "5"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_not_written_yet_is_waited_for() {
    let s = TestServer::start();
    let mut sse = s.subscribe("/streams/later-1", &[]).await;
    assert!(sse.next_message(Duration::from_millis(100)).await.is_none());
    s.append("later-1", r#"{"type":"Born"}"#).await;
    let m = sse.next_message(WAIT).await.unwrap();
    assert_eq!((m.id.as_deref(), m.event.as_str()), (Some("0"), "Born"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_comments() {
    let s = TestServer::with(|c| c.keepalive_interval = Duration::from_millis(100));
    let mut sse = s.subscribe("/all", &[]).await;
    // The response opens with one, then one per idle interval.
    for _ in 0..3 {
        let b = sse.next_block(WAIT).await.expect("keepalive");
        assert_eq!(b.comment.as_deref(), Some("keepalive"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_are_forward_only_and_410_when_deleted() {
    let s = TestServer::start();
    s.append_many("d-1", 2).await;
    s.get_with(
        "/streams/d-1?direction=backward",
        &[("accept", "text/event-stream")],
    )
    .await
    .assert_error(400, "invalid_request");
    s.get_with(
        "/all?direction=backward",
        &[("accept", "text/event-stream")],
    )
    .await
    .assert_error(400, "invalid_request");
    // Deleted while subscribed: a final `event: error`, then the end.
    let mut sse = s.subscribe("/streams/d-1", &[]).await;
    sse.next_message(WAIT).await.unwrap();
    sse.next_message(WAIT).await.unwrap();
    assert_eq!(s.call("DELETE", "/streams/d-1", &[], "").await.status, 204);
    let m = sse.next_message(WAIT).await.expect("error message");
    assert_eq!(m.event, "error");
    assert_eq!(m.json()["error"], "stream_deleted");
    assert!(sse.ended(WAIT).await);
    // Deleted before subscribing: 410.
    s.get_with("/streams/d-1", &[("accept", "text/event-stream")])
        .await
        .assert_error(410, "stream_deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_does_not_lose_events_and_is_counted() {
    let s = TestServer::start();
    let mut sse = s.subscribe("/streams/slow-1", &[]).await;
    // Write far more than the subscription buffers while the reader reads nothing.
    s.append_many("slow-1", 20_000).await;
    // Counted once its producer runs (shortly after the response head).
    open_subscriptions_reach(&s, 1).await;
    for expected in 0..20_000u64 {
        let m = sse.next_message(WAIT).await.expect("message");
        assert_eq!(m.id, Some(expected.to_string()));
    }
    drop(sse);
    // The producer notices the client is gone.
    open_subscriptions_reach(&s, 0).await;
}

/// Waits until `/metrics` counts `n` open subscriptions, up to [`WAIT`].
async fn open_subscriptions_reach(s: &TestServer, n: u64) {
    let line = format!("strata_subscriptions_open {n}\n");
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let metrics = s.get("/metrics").await.text();
        if metrics.contains(&line) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never {n} open subscription(s):\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_subscriptions() {
    let s = TestServer::start();
    let mut sse = s.subscribe("/all", &[]).await;
    s.app.begin_shutdown();
    assert!(sse.ended(WAIT).await);
}

/// `from` (and `Last-Event-ID`) beyond the head is a lower bound: the JSON page answers
/// `next` = `from`, and an SSE subscription delivers only positions at or after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_from_beyond_the_head_is_a_lower_bound() {
    let s = TestServer::start();
    s.append("b-1", r#"{"type":"T"}"#).await;
    let v = s.get("/all?from=5").await.json();
    assert_eq!(v["events"].as_array().map(Vec::len), Some(0));
    assert_eq!(v["next"], 5);
    assert_eq!(v["end"], true);
    let mut sse = s.subscribe("/all?from=5", &[]).await;
    // Last-Event-ID 5 at or above the head: resume at 6.
    let mut resumed = s.subscribe("/all", &[("last-event-id", "5")]).await;
    for _ in 0..6 {
        s.append("b-1", r#"{"type":"T"}"#).await;
    }
    for expected in ["5", "6"] {
        let m = sse.next_message(5 * SECOND).await.expect("message");
        assert_eq!(m.id.as_deref(), Some(expected));
    }
    let m = resumed.next_message(5 * SECOND).await.expect("message");
    assert_eq!(m.id.as_deref(), Some("6"));
}
