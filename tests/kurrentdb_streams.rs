//! End-to-end: the official KurrentDB Rust client (`kurrentdb` crate) against the real
//! `strata` binary's gRPC front door — appends with each expected revision, idempotent
//! retries and conflicts, reads both ways, deletes and tombstones, errors as the client
//! matches them, and unknown calls answered UNIMPLEMENTED.

mod kurrentdb_support;

use kurrentdb::{
    AppendToStreamOptions, DeleteStreamOptions, EventData, ReadAllOptions, ReadStreamOptions,
    StreamPosition, StreamState, SubscriptionFilter, TombstoneStreamOptions,
};
use kurrentdb_support::{collect, events, json, start, within};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_with_the_same_event_ids_are_idempotent() {
    let (_server, client) = start(&[]);
    let ids = [uuid::Uuid::new_v4(), uuid::Uuid::new_v4()];
    let batch: Vec<EventData> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| EventData::json("Paid", &json!({ "i": i })).unwrap().id(*id))
        .collect();
    let opts = AppendToStreamOptions::default().stream_state(StreamState::NoStream);
    let first = within(
        "append",
        client.append_to_stream("pay-1", &opts, batch.clone()),
    )
    .await
    .unwrap();
    // The same append again (a retry after a lost answer): same result, nothing written.
    let again = within(
        "retry",
        client.append_to_stream("pay-1", &opts, batch.clone()),
    )
    .await
    .unwrap();
    assert_eq!(again.next_expected_version, first.next_expected_version);
    assert_eq!(again.position, first.position);
    let read = collect(
        within(
            "read",
            client.read_stream("pay-1", &ReadStreamOptions::default()),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(read.len(), 2);
    assert_eq!(read[0].get_original_event().id, ids[0]);
    // One known id with a new one: a conflict, not a partial write.
    let mixed = vec![
        batch[1].clone(),
        EventData::json("Paid", &json!({})).unwrap(),
    ];
    let err = within(
        "mixed",
        client.append_to_stream("pay-1", &AppendToStreamOptions::default(), mixed),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, kurrentdb::Error::Grpc { code, .. } if *code == tonic::Code::FailedPrecondition),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_then_recreate_and_tombstone() {
    let (_server, client) = start(&[]);
    let any = AppendToStreamOptions::default();
    within(
        "append",
        client.append_to_stream("cart-1", &any, events("Added", 2)),
    )
    .await
    .unwrap();
    // A stale expected revision on delete: wrong-expected-version.
    let err = within(
        "stale delete",
        client.delete_stream(
            "cart-1",
            &DeleteStreamOptions::default().stream_state(StreamState::StreamRevision(0)),
        ),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, kurrentdb::Error::Grpc { code, .. } if *code == tonic::Code::FailedPrecondition),
        "{err:?}"
    );
    let deleted = within(
        "delete",
        client.delete_stream(
            "cart-1",
            &DeleteStreamOptions::default().stream_state(StreamState::StreamRevision(1)),
        ),
    )
    .await
    .unwrap();
    assert!(deleted.is_some());
    // Soft-deleted reads as not found, as the clients expect.
    let mut read = within(
        "read",
        client.read_stream("cart-1", &ReadStreamOptions::default()),
    )
    .await
    .unwrap();
    let err = within("next", read.next()).await.unwrap_err();
    assert!(matches!(err, kurrentdb::Error::ResourceNotFound), "{err:?}");
    // Appending again re-creates it; revisions continue.
    let written = within(
        "recreate",
        client.append_to_stream("cart-1", &any, events("Added", 1)),
    )
    .await
    .unwrap();
    assert_eq!(written.next_expected_version, 2);
    let read = collect(
        within(
            "read",
            client.read_stream("cart-1", &ReadStreamOptions::default()),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].get_original_event().revision, 2);

    within(
        "tombstone",
        client.tombstone_stream("cart-1", &TombstoneStreamOptions::default()),
    )
    .await
    .unwrap();
    let mut read = within(
        "read",
        client.read_stream("cart-1", &ReadStreamOptions::default()),
    )
    .await
    .unwrap();
    let err = within("next", read.next()).await.unwrap_err();
    assert!(matches!(err, kurrentdb::Error::ResourceDeleted), "{err:?}");
    let err = within(
        "append",
        client.append_to_stream("cart-1", &any, events("Added", 1)),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, kurrentdb::Error::ResourceDeleted), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_all_both_ways_with_filters() {
    let (_server, client) = start(&[]);
    let any = AppendToStreamOptions::default();
    for (stream, ty) in [
        ("order-1", "Placed"),
        ("user-1", "Joined"),
        ("order-2", "Shipped"),
    ] {
        within(
            "append",
            client.append_to_stream(stream, &any, events(ty, 2)),
        )
        .await
        .unwrap();
    }
    let all = collect(
        within("read all", client.read_all(&ReadAllOptions::default()))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(all.len(), 6);
    let positions: Vec<u64> = all
        .iter()
        .map(|e| e.get_original_event().position.commit)
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");

    // From a position, forwards: that event included.
    let third = all[2].get_original_event().position;
    let from = collect(
        within(
            "read from",
            client.read_all(&ReadAllOptions::default().position(StreamPosition::Position(third))),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(from.len(), 4);
    assert_eq!(from[0].get_original_event().position, third);

    let orders = collect(
        within(
            "stream prefix",
            client.read_all(
                &ReadAllOptions::default()
                    .filter(SubscriptionFilter::on_stream_name().add_prefix("order-")),
            ),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(orders.len(), 4);
    assert!(orders
        .iter()
        .all(|e| e.get_original_event().stream_id().starts_with("order-")));

    let backwards = collect(
        within(
            "event type regex backwards",
            client.read_all(
                &ReadAllOptions::default()
                    .position(StreamPosition::End)
                    .backwards()
                    .filter(SubscriptionFilter::on_event_type().regex("^(Joined|Shipped)$"))
                    .max_count(3),
            ),
        )
        .await
        .unwrap(),
    )
    .await;
    let types: Vec<&str> = backwards
        .iter()
        .map(|e| e.get_original_event().event_type.as_str())
        .collect();
    assert_eq!(types, ["Shipped", "Shipped", "Joined"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_over_the_size_limit_are_refused() {
    let (_server, client) = start(&["--max-body-bytes", "4096"]);
    let big = EventData::json("Big", &json!({ "blob": "x".repeat(5000) })).unwrap();
    let err = within(
        "big append",
        client.append_to_stream("big-1", &AppendToStreamOptions::default(), big),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, kurrentdb::Error::Grpc { code, message }
            if *code == tonic::Code::InvalidArgument && message.contains("Maximum Append Size of 4096")),
        "{err:?}"
    );
    // Nothing was written.
    let mut read = within(
        "read",
        client.read_stream("big-1", &ReadStreamOptions::default()),
    )
    .await
    .unwrap();
    let err = within("next", read.next()).await.unwrap_err();
    assert!(matches!(err, kurrentdb::Error::ResourceNotFound), "{err:?}");
}
