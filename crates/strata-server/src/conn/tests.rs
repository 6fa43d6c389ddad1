//! Unit tests of the connection layer: deadlines, hyper's own answers as JSON, head limits.

use super::*;

const HYPER_431: &[u8] = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\ndate: Wed, 02 Dec 2026 12:30:18 GMT\r\n\r\n";

fn split(answer: &[u8]) -> (String, serde_json::Value) {
    let text = String::from_utf8(answer.to_vec()).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.to_owned(), serde_json::from_str(body).unwrap())
}

#[test]
fn hypers_automatic_answers_get_json_bodies() {
    let (claimed, answer) = json_for_automatic_answer(HYPER_431).unwrap();
    assert_eq!(claimed, HYPER_431.len());
    let (head, body) = split(&answer);
    assert!(
        head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
        "{head}"
    );
    assert!(
        head.contains("\r\ncontent-type: application/json\r\n"),
        "{head}"
    );
    assert!(head.contains("\r\nconnection: close\r\n"), "{head}");
    assert!(
        head.contains("\r\ndate: Wed, 02 Dec 2026 12:30:18 GMT"),
        "{head}"
    );
    let length = format!("\r\ncontent-length: {}\r\n", body.to_string().len());
    assert!(head.contains(&length), "{head}");
    assert!(!head.contains("content-length: 0"), "{head}");
    assert_eq!(body["error"], "invalid_request");
    for status in ["400 Bad Request", "414 URI Too Long"] {
        let hyper = format!("HTTP/1.1 {status}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n");
        let (_, answer) = json_for_automatic_answer(hyper.as_bytes()).unwrap();
        let (head, body) = split(&answer);
        assert!(
            head.starts_with(&format!("HTTP/1.1 {status}\r\n")),
            "{head}"
        );
        assert_eq!(body["error"], "invalid_request");
    }
    // Only the head is claimed when more follows it.
    let mut more = HYPER_431.to_vec();
    more.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    assert_eq!(json_for_automatic_answer(&more).unwrap().0, HYPER_431.len());
}

#[test]
fn other_writes_are_left_alone() {
    for buf in [
        // The router's own answers carry a type and a body.
        &b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 0\r\n\r\n"[..],
        b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\ncontent-length: 50\r\n\r\n{",
        b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
        b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
        // Incomplete heads and body bytes.
        b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n",
        b"{\"error\":\"x\"}",
        b"5\r\nHTTP/1.1 431\r\n",
        b"",
    ] {
        assert!(
            json_for_automatic_answer(buf).is_none(),
            "{:?}",
            String::from_utf8_lossy(buf)
        );
    }
}

#[test]
fn heads_over_the_limit_are_refused_exactly() {
    let request = |extra: usize| {
        Request::get("/health")
            .header("x-big", "a".repeat(extra))
            .body(())
            .unwrap()
    };
    // "GET /health HTTP/1.1\r\n" (22) + "x-big: …\r\n" (9 + n) + "\r\n" (2).
    let fits = MAX_HEAD_BYTES - 22 - 9 - 2;
    assert_eq!(oversized_head(&request(fits)), None);
    assert_eq!(oversized_head(&request(fits + 1)), Some(MAX_HEAD_BYTES + 1));
    let answer = head_too_large(MAX_HEAD_BYTES + 1);
    assert_eq!(answer.status().as_u16(), 431);
    assert_eq!(answer.headers()["connection"], "close");
    assert_eq!(answer.headers()["content-type"], "application/json");
}

/// A 10 s header timeout, a 60 s idle timeout.
fn test_limits() -> ConnectionLimits {
    ConnectionLimits {
        header_read_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
        max_connections: 1,
    }
}

#[test]
fn deadlines_follow_the_connection_state() {
    let (limits, start) = (test_limits(), Instant::now());
    let s = |secs| start + Duration::from_secs(secs);
    let activity = Arc::new(Activity::new(start, Protocol::Http1));
    // New: the header timeout runs from the accept, bytes or not.
    assert_eq!(activity.deadline(&limits), Some(s(10)));
    activity.bytes_read(s(3));
    assert_eq!(activity.deadline(&limits), Some(s(10)));
    let request = activity.request_started();
    // In flight: no deadline, whatever arrives (a body, a pipelined request).
    assert_eq!(activity.deadline(&limits), None);
    activity.bytes_read(s(100));
    assert_eq!(activity.deadline(&limits), None);
    std::mem::forget(request);
    activity.request_finished(s(100));
    // Idle from the end of the response.
    assert_eq!(activity.deadline(&limits), Some(s(160)));
    // The first byte of the next head starts the header timeout; later bytes of the same
    // head do not extend it.
    activity.bytes_read(s(105));
    assert_eq!(activity.deadline(&limits), Some(s(115)));
    activity.bytes_read(s(110));
    assert_eq!(activity.deadline(&limits), Some(s(115)));
    // Two requests in flight (HTTP/2): idle only once both are done.
    let one = activity.request_started();
    let two = activity.request_started();
    drop(one);
    assert_eq!(activity.deadline(&limits), None);
    drop(two);
    assert!(activity.deadline(&limits).is_some());
}

#[test]
fn http2_frames_between_requests_do_not_start_a_header_timer() {
    let (limits, start) = (test_limits(), Instant::now());
    let s = |secs| start + Duration::from_secs(secs);
    let activity = Arc::new(Activity::new(start, Protocol::Http2));
    // The handshake and the first request are due within the header timeout.
    activity.bytes_read(s(1));
    assert_eq!(activity.deadline(&limits), Some(s(10)));
    let request = activity.request_started();
    std::mem::forget(request);
    activity.request_finished(s(20));
    // PING / WINDOW_UPDATE frames after a response leave the idle deadline as it is.
    activity.bytes_read(s(21));
    assert_eq!(activity.deadline(&limits), Some(s(80)));
}
