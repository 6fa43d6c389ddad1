//! End-to-end: the official KurrentDB Rust client against the real `strata` binary, beyond the
//! Streams basics — BatchAppend, stream metadata through `$$<stream>`, gossip discovery
//! (`kurrentdb+discover://`), ServerFeatures, credentials (Basic through the tokens file,
//! Bearer), events written over gRPC reading identically over HTTP and the reverse, and
//! unknown calls answered UNIMPLEMENTED.

mod kurrentdb_support;

use std::time::Duration;

use base64::Engine as _;
use kurrentdb::{
    AppendToStreamOptions, Authentication, BatchAppendOptions, EventData, ReadStreamOptions,
    StreamMetadata, StreamMetadataResult, StreamPosition, StreamState,
};
use kurrentdb_support::{client, client_with, collect, events, start, within, TestServer};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_append_and_its_errors() {
    let (_server, client) = start(&[]);
    let info = within("server info", client.server_info()).await.unwrap();
    // The client uses BatchAppend only when ServerFeatures lists it (else UnsupportedFeature).
    assert_eq!(info.version().major(), 24);
    let batch = within(
        "batch client",
        client.batch_append(&BatchAppendOptions::default()),
    )
    .await
    .unwrap();
    let first = within(
        "batch 1",
        batch.append_to_stream("bulk-1", StreamState::NoStream, events("Loaded", 3)),
    )
    .await
    .unwrap();
    assert_eq!(first.current_revision(), Some(2));
    let second = within(
        "batch 2",
        batch.append_to_stream(
            "bulk-1",
            StreamState::StreamRevision(2),
            events("Loaded", 2),
        ),
    )
    .await
    .unwrap();
    assert_eq!(second.current_revision(), Some(4));
    // A failed concurrency check comes back as the batch's status-with-details.
    let err = within(
        "stale batch",
        batch.append_to_stream(
            "bulk-1",
            StreamState::StreamRevision(0),
            events("Loaded", 1),
        ),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, kurrentdb::Error::Grpc { code, .. } if *code == tonic::Code::FailedPrecondition),
        "{err:?}"
    );
    let read = collect(
        within(
            "read",
            client.read_stream("bulk-1", &ReadStreamOptions::default()),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(read.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_metadata_round_trips_and_is_enforced() {
    let (server, client) = start(&[]);
    let any = AppendToStreamOptions::default();
    within(
        "append",
        client.append_to_stream("log-1", &any, events("Line", 5)),
    )
    .await
    .unwrap();
    let latest = ReadStreamOptions::default()
        .position(StreamPosition::End)
        .backwards()
        .max_count(1);
    let none = within("no metadata", client.get_stream_metadata("log-1", &latest))
        .await
        .unwrap();
    assert!(matches!(none, StreamMetadataResult::NotFound), "{none:?}");

    let metadata = StreamMetadata::builder()
        .max_count(2)
        .insert_custom_property("owner", "ops")
        .build();
    within("set", client.set_stream_metadata("log-1", &any, &metadata))
        .await
        .unwrap();
    let got = within("get", client.get_stream_metadata("log-1", &latest))
        .await
        .unwrap();
    let StreamMetadataResult::Success(got) = got else {
        panic!("metadata: {got:?}");
    };
    assert_eq!(got.metadata().max_count, Some(2));
    assert_eq!(
        got.metadata().custom_properties.get("owner"),
        Some(&json!("ops"))
    );
    // Enforced by reads: only the last two events.
    let read = collect(
        within(
            "read",
            client.read_stream("log-1", &ReadStreamOptions::default()),
        )
        .await
        .unwrap(),
    )
    .await;
    let revisions: Vec<u64> = read
        .iter()
        .map(|e| e.get_original_event().revision)
        .collect();
    assert_eq!(revisions, [3, 4]);
    // The same metadata over HTTP.
    let http = server.client().get("/streams/log-1/metadata");
    http.assert_status(200);
    let body = http.json();
    assert_eq!(body["max_count"], 2);
    assert_eq!(body["custom"]["owner"], "ops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_and_http_read_the_same_events() {
    let (server, client) = start(&[]);
    let id = uuid::Uuid::new_v4();
    let json_event = EventData::json("Placed", &json!({"total": 9.5}))
        .unwrap()
        .id(id)
        .metadata_as_json(&json!({"correlation_id": "c-1"}))
        .unwrap();
    let binary_event = EventData::binary("Blob", bytes::Bytes::from_static(b"\x00\x01bin"));
    within(
        "append",
        client.append_to_stream(
            "mix-1",
            &AppendToStreamOptions::default(),
            vec![json_event, binary_event],
        ),
    )
    .await
    .unwrap();
    let http = server.client().page("/streams/mix-1");
    let events = http["events"].as_array().unwrap();
    assert_eq!(events[0]["id"], id.to_string());
    assert_eq!(events[0]["type"], "Placed");
    assert_eq!(events[0]["data"], json!({"total": 9.5}));
    assert_eq!(events[0]["metadata"], json!({"correlation_id": "c-1"}));
    assert_eq!(events[1]["type"], "Blob");
    assert_eq!(
        events[1]["data_base64"],
        base64::engine::general_purpose::STANDARD.encode(b"\x00\x01bin")
    );

    // Written over HTTP, read over gRPC.
    server.client().append(
        "mix-2",
        &json!([{"type": "Noted", "data": {"a": [1, 2]}, "metadata": {"k": "v"}},
                {"type": "Raw", "data_base64": base64::engine::general_purpose::STANDARD.encode(b"xyz")}]),
    );
    let http = server.client().page("/streams/mix-2");
    let read = collect(
        within(
            "read",
            client.read_stream("mix-2", &ReadStreamOptions::default()),
        )
        .await
        .unwrap(),
    )
    .await;
    let (noted, raw) = (read[0].get_original_event(), read[1].get_original_event());
    assert_eq!(noted.id.to_string(), http["events"][0]["id"]);
    assert_eq!(noted.position.commit, http["events"][0]["position"]);
    assert!(noted.is_json);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&noted.data).unwrap(),
        json!({"a": [1, 2]})
    );
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&noted.custom_metadata).unwrap(),
        json!({"k": "v"})
    );
    assert!(!raw.is_json);
    assert_eq!(&raw.data[..], b"xyz");
    assert_eq!(raw.revision, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_through_gossip() {
    let server = TestServer::start();
    let discovering = client_with(
        &server,
        "kurrentdb+discover",
        "",
        &["maxDiscoverAttempts=3"],
    );
    within(
        "append through a discovered node",
        discovering.append_to_stream(
            "found-1",
            &AppendToStreamOptions::default(),
            events("Hi", 1),
        ),
    )
    .await
    .unwrap();
    let settings = format!("esdb://{}?tls=false", server.process().connect_addr())
        .parse::<kurrentdb::ClientSettings>()
        .unwrap();
    let operations = kurrentdb::operations::Client::new(settings).unwrap();
    // (`operations.read_gossip()` reads KurrentDB's HTTP `/gossip`, not the gRPC service: not
    // served; the discovery above went through the gRPC Gossip.Read.)
    // Calls Strata does not serve: UNIMPLEMENTED, which the client reports as unsupported.
    let err = within(
        "scavenge",
        operations.start_scavenge(1, 0, &kurrentdb::operations::OperationalOptions::default()),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, kurrentdb::Error::UnsupportedFeature),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_basic_through_the_tokens_file_and_bearer() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "admin:changeit admin\nreader read\n").unwrap();
    let server = TestServer::start_with(&["--tokens-file", tokens.to_str().unwrap()]);
    let any = AppendToStreamOptions::default();

    let admin = client_with(&server, "esdb", "admin:changeit@", &[]);
    within(
        "admin append",
        admin.append_to_stream("sec-1", &any, events("A", 1)),
    )
    .await
    .unwrap();

    let anonymous = client(&server);
    let err = within(
        "anonymous",
        anonymous.append_to_stream("sec-1", &any, events("A", 1)),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, kurrentdb::Error::AccessDenied), "{err:?}");

    // Any user name with a token as the password.
    let reader = client_with(&server, "esdb", "someone:reader@", &[]);
    let read = collect(
        within(
            "reader read",
            reader.read_stream("sec-1", &ReadStreamOptions::default()),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(read.len(), 1);
    let err = within(
        "reader append",
        reader.append_to_stream("sec-1", &any, events("A", 1)),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, kurrentdb::Error::AccessDenied), "{err:?}");

    // A bearer token on one call.
    let bearer =
        AppendToStreamOptions::default().authenticated(Authentication::bearer("admin:changeit"));
    within(
        "bearer append",
        anonymous.append_to_stream("sec-1", &bearer, events("A", 1)),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_services_answer_unimplemented_at_once() {
    use http_body_util::{BodyExt, Full};
    let server = TestServer::start();
    let tcp = tokio::net::TcpStream::connect(server.process().connect_addr())
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    for path in [
        "/no.such.Service/Call",
        "/event_store.client.streams.Streams/NoSuchMethod",
    ] {
        let request =
            hyper::Request::post(format!("http://{}{path}", server.process().connect_addr()))
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                // One empty message: compression flag 0, length 0.
                .body(Full::new(bytes::Bytes::from_static(&[0, 0, 0, 0, 0])))
                .unwrap();
        let response = tokio::time::timeout(Duration::from_secs(10), sender.send_request(request))
            .await
            .expect("an answer, not a hang")
            .unwrap();
        assert_eq!(response.status(), 200);
        let headers = response.headers().clone();
        let collected =
            tokio::time::timeout(Duration::from_secs(10), response.into_body().collect())
                .await
                .expect("the end of the answer")
                .unwrap();
        let status = headers
            .get("grpc-status")
            .or_else(|| collected.trailers().and_then(|t| t.get("grpc-status")))
            .map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(status.as_deref(), Some("12"), "{path}");
    }
    // HTTP/1.1 clients of the HTTP API are served as before on the same port.
    server.client().get("/health").assert_status(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_with_alpn_h2() {
    let dir = tempfile::tempdir().unwrap();
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let server = TestServer::start_with(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    // TLS is the clients' default; the test certificate is not verified.
    let settings = format!(
        "kurrentdb://{}?tlsVerifyCert=false",
        server.process().connect_addr()
    )
    .parse::<kurrentdb::ClientSettings>()
    .unwrap();
    let client = kurrentdb::Client::new(settings).unwrap();
    within(
        "append over TLS",
        client.append_to_stream(
            "tls-1",
            &AppendToStreamOptions::default(),
            events("Sealed", 2),
        ),
    )
    .await
    .unwrap();
    let read = collect(
        within(
            "read over TLS",
            client.read_stream("tls-1", &ReadStreamOptions::default()),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(read.len(), 2);
}
