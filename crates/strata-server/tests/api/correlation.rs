//! Correlation and causation over HTTP: the `Correlation-Id` / `Causation-Id` append headers,
//! `GET /all?correlation_id=` in its three representations, and the causation walks of
//! `GET /events/{id}/causes` and `/effects`.

use std::time::Duration;

use serde_json::Value;

use crate::support::{ndjson, page_events, positions, TestServer, SECOND};

const WAIT: Duration = SECOND.saturating_mul(30);

const A: &str = "6f1c7a5e-0c1b-4d5e-9d7a-1b2c3d4e5f60";
const B: &str = "6f1c7a5e-0c1b-4d5e-9d7a-1b2c3d4e5f61";
const C: &str = "6f1c7a5e-0c1b-4d5e-9d7a-1b2c3d4e5f62";

fn metadata(page: &Value, i: usize) -> &Value {
    &page_events(page)[i]["metadata"]
}

#[tokio::test]
async fn headers_fill_the_metadata_of_events_lacking_it() {
    let s = TestServer::start();
    let r = s
        .post(
            "/streams/order-1",
            &format!(
                r#"[{{"id":"{A}","type":"Placed"}},{{"type":"Noted","metadata":{{"note":1}}}},{{"type":"Own","metadata":{{"correlation_id":"other"}}}}]"#
            ),
            &[("correlation-id", "checkout-7"), ("causation-id", C)],
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let page = s.get("/streams/order-1").await.json();
    assert_eq!(
        metadata(&page, 0),
        &serde_json::json!({"correlation_id": "checkout-7", "causation_id": C})
    );
    assert_eq!(
        metadata(&page, 1),
        &serde_json::json!({"correlation_id": "checkout-7", "causation_id": C, "note": 1})
    );
    assert_eq!(
        metadata(&page, 2),
        &serde_json::json!({"correlation_id": "other", "causation_id": C})
    );
    // Metadata that is not an object has no place for them: 400, nothing written.
    for bad in [r#"[1]"#, r#""text""#, "7"] {
        let r = s
            .post(
                "/streams/order-1",
                &format!(r#"{{"type":"X","metadata":{bad}}}"#),
                &[("correlation-id", "c")],
            )
            .await;
        r.assert_error(400, "invalid_request");
    }
    let r = s
        .post(
            "/streams/order-1",
            r#"{"type":"X"}"#,
            &[("correlation-id", "")],
        )
        .await;
    r.assert_error(400, "invalid_request");
    // Without the headers any metadata goes.
    s.append("order-1", r#"{"type":"X","metadata":[1]}"#).await;
    assert_eq!(
        page_events(&s.get("/streams/order-1").await.json()).len(),
        4
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_flow_reads_in_every_representation() {
    let s = TestServer::start();
    for i in 0..6 {
        let flow = if i % 2 == 0 { "f-1" } else { "f-2" };
        let r = s
            .post(
                &format!("/streams/s-{i}"),
                &format!(r#"{{"type":"T{}"}}"#, i % 3),
                &[("correlation-id", flow)],
            )
            .await;
        assert_eq!(r.status, 201);
    }
    let page = s.get("/all?correlation_id=f-1").await.json();
    assert_eq!(positions(&page), vec![0, 2, 4]);
    let page = s.get("/all?correlation_id=f-1&types=T1").await.json();
    assert_eq!(positions(&page), vec![4]);
    let page = s
        .get("/all?correlation_id=f-2&direction=backward&limit=2")
        .await
        .json();
    assert_eq!(positions(&page), vec![5, 3]);
    let r = s
        .get_with(
            "/all?correlation_id=f-2",
            &[("accept", "application/x-ndjson")],
        )
        .await;
    let lines: Vec<u64> = ndjson(&r.body)
        .iter()
        .map(|e| e["position"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, vec![1, 3, 5]);
    let mut sse = s.subscribe("/all?correlation_id=f-1", &[]).await;
    for want in [0, 2, 4] {
        let m = sse.next_message(WAIT).await.expect("history");
        assert_eq!(m.json()["position"], want);
    }
    s.post(
        "/streams/s-9",
        r#"{"type":"Live"}"#,
        &[("correlation-id", "f-2")],
    )
    .await;
    s.post(
        "/streams/s-9",
        r#"{"type":"Live"}"#,
        &[("correlation-id", "f-1")],
    )
    .await;
    let m = sse.next_message(WAIT).await.expect("live");
    assert_eq!(m.json()["position"], 7);
}

#[tokio::test]
async fn causes_and_effects_walk_the_chain() {
    let s = TestServer::start();
    s.post(
        "/streams/cart-1",
        &format!(r#"{{"id":"{A}","type":"CheckoutRequested"}}"#),
        &[("correlation-id", "k-1")],
    )
    .await;
    s.post(
        "/streams/order-1",
        &format!(r#"{{"id":"{B}","type":"OrderPlaced"}}"#),
        &[("correlation-id", "k-1"), ("causation-id", A)],
    )
    .await;
    s.post(
        "/streams/mail-1",
        &format!(r#"{{"id":"{C}","type":"MailSent"}}"#),
        &[("correlation-id", "k-1"), ("causation-id", B)],
    )
    .await;
    let r = s.get(&format!("/events/{C}/causes")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let chain = r.json();
    let ids: Vec<&str> = page_events(&chain)
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![A, B]);
    assert_eq!(chain["truncated"], false);
    assert_eq!(chain["unresolved"], Value::Null);
    let chain = s.get(&format!("/events/{A}/effects?max=1")).await.json();
    assert_eq!(page_events(&chain)[0]["id"], B);
    assert_eq!(chain["truncated"], true);
    let chain = s.get(&format!("/events/{A}/effects")).await.json();
    assert_eq!(page_events(&chain).len(), 2);
    // Unknown ids, bad ids, bad max.
    s.get("/events/00000000-0000-0000-0000-000000000001/causes")
        .await
        .assert_error(404, "not_found");
    let none = s
        .get("/events/00000000-0000-0000-0000-000000000001/effects")
        .await
        .json();
    assert!(page_events(&none).is_empty());
    s.get("/events/nope/causes")
        .await
        .assert_error(400, "invalid_request");
    s.get(&format!("/events/{A}/effects?max=0"))
        .await
        .assert_error(400, "invalid_request");
}
