//! End-to-end: the official KurrentDB Rust client (`kurrentdb` crate) against the real
//! `strata` binary's gRPC front door — appends with each expected revision, idempotent
//! retries and conflicts, reads both ways, deletes and tombstones, errors as the client
//! matches them, and unknown calls answered UNIMPLEMENTED.

mod kurrentdb_support;

use kurrentdb::{AppendToStreamOptions, ReadStreamOptions, StreamPosition, StreamState};
use kurrentdb_support::{collect, events, json, start, within};

#[tokio::test]
async fn append_then_read_forwards_and_backwards() {
    let (_server, client) = start(&[]);
    let written = within(
        "append",
        client.append_to_stream(
            "order-1",
            &AppendToStreamOptions::default(),
            events("Placed", 3),
        ),
    )
    .await
    .unwrap();
    assert_eq!(written.next_expected_version, 2);
    assert_eq!(written.position.commit, written.position.prepare);

    let forwards = collect(
        within(
            "read",
            client.read_stream("order-1", &ReadStreamOptions::default()),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(forwards.len(), 3);
    for (i, e) in forwards.iter().enumerate() {
        let recorded = e.get_original_event();
        assert_eq!(recorded.revision, i as u64);
        assert_eq!(recorded.event_type, "Placed");
        assert!(recorded.is_json);
        assert_eq!(recorded.stream_id(), "order-1");
        assert_eq!(json(e)["i"], i);
    }
    assert_eq!(forwards[2].get_original_event().position, written.position);

    let backwards = collect(
        within(
            "read backwards",
            client.read_stream(
                "order-1",
                &ReadStreamOptions::default()
                    .position(StreamPosition::End)
                    .backwards()
                    .max_count(2),
            ),
        )
        .await
        .unwrap(),
    )
    .await;
    let revisions: Vec<u64> = backwards
        .iter()
        .map(|e| e.get_original_event().revision)
        .collect();
    assert_eq!(revisions, [2, 1]);
}

#[tokio::test]
async fn expected_revisions_and_wrong_expected_version() {
    let (_server, client) = start(&[]);
    let opts = |s| AppendToStreamOptions::default().stream_state(s);
    within(
        "no_stream",
        client.append_to_stream("s-1", &opts(StreamState::NoStream), events("A", 1)),
    )
    .await
    .unwrap();
    within(
        "exact",
        client.append_to_stream("s-1", &opts(StreamState::StreamRevision(0)), events("A", 1)),
    )
    .await
    .unwrap();
    within(
        "exists",
        client.append_to_stream("s-1", &opts(StreamState::StreamExists), events("A", 1)),
    )
    .await
    .unwrap();
    let err = within(
        "stale",
        client.append_to_stream("s-1", &opts(StreamState::StreamRevision(0)), events("A", 1)),
    )
    .await
    .unwrap_err();
    match err {
        kurrentdb::Error::WrongExpectedVersion { expected, current } => {
            assert!(
                matches!(expected, StreamState::StreamRevision(0)),
                "{expected:?}"
            );
            assert!(
                matches!(current, kurrentdb::CurrentRevision::Current(2)),
                "{current:?}"
            );
        }
        other => panic!("expected WrongExpectedVersion, got {other:?}"),
    }
    let err = within(
        "no_stream again",
        client.append_to_stream("s-1", &opts(StreamState::NoStream), events("A", 1)),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, kurrentdb::Error::WrongExpectedVersion { .. }),
        "{err:?}"
    );
    let err = within(
        "exists on none",
        client.append_to_stream("s-2", &opts(StreamState::StreamExists), events("A", 1)),
    )
    .await
    .unwrap_err();
    match err {
        kurrentdb::Error::WrongExpectedVersion { current, .. } => {
            assert!(
                matches!(current, kurrentdb::CurrentRevision::NoStream),
                "{current:?}"
            );
        }
        other => panic!("expected WrongExpectedVersion, got {other:?}"),
    }
}

#[tokio::test]
async fn reading_a_missing_stream_is_not_found() {
    let (_server, client) = start(&[]);
    let mut stream = within(
        "read",
        client.read_stream("nobody", &ReadStreamOptions::default()),
    )
    .await
    .unwrap();
    let err = within("next", stream.next()).await.unwrap_err();
    assert!(matches!(err, kurrentdb::Error::ResourceNotFound), "{err:?}");
}
