//! End-to-end: catch-up subscriptions of the official KurrentDB Rust client against the real
//! `strata` binary — history, `caught_up`, then live events across the switch; subscribing
//! from a revision starts after it; filtered `$all` subscriptions with checkpoints; a clean
//! shutdown with subscriptions open.

mod kurrentdb_support;

use kurrentdb::{
    AppendToStreamOptions, Position, StreamPosition, SubscribeToAllOptions,
    SubscribeToStreamOptions, Subscription, SubscriptionEvent, SubscriptionFilter,
};
use kurrentdb_support::{events, json, start, within};

/// The next event, skipping confirmation, checkpoints and caught-up markers.
async fn next_event(sub: &mut Subscription) -> kurrentdb::ResolvedEvent {
    within("subscription event", sub.next()).await.unwrap()
}

/// Subscription messages until `caught_up` (that one excluded): the events' revisions.
async fn until_caught_up(sub: &mut Subscription) -> Vec<u64> {
    let mut revisions = Vec::new();
    loop {
        match within("subscription", sub.next_subscription_event())
            .await
            .unwrap()
        {
            SubscriptionEvent::EventAppeared(e) => revisions.push(e.get_original_event().revision),
            SubscriptionEvent::CaughtUp(info) => {
                assert!(info.is_some(), "caught_up carries a timestamp");
                return revisions;
            }
            SubscriptionEvent::Confirmed(_) | SubscriptionEvent::Checkpoint(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_subscription_catches_up_then_goes_live() {
    let (mut server, client) = start(&[]);
    let any = AppendToStreamOptions::default();
    within(
        "append",
        client.append_to_stream("room-1", &any, events("Said", 3)),
    )
    .await
    .unwrap();
    let mut sub = client
        .subscribe_to_stream(
            "room-1",
            &SubscribeToStreamOptions::default().start_from(StreamPosition::Start),
        )
        .await;
    assert_eq!(until_caught_up(&mut sub).await, [0, 1, 2]);
    within(
        "append live",
        client.append_to_stream("room-1", &any, events("Said", 2)),
    )
    .await
    .unwrap();
    for revision in [3, 4] {
        let e = next_event(&mut sub).await;
        assert_eq!(e.get_original_event().revision, revision);
        assert_eq!(json(&e)["i"], revision - 3);
    }

    // From a revision: exclusive (the client passes the last revision it processed).
    let mut from = client
        .subscribe_to_stream(
            "room-1",
            &SubscribeToStreamOptions::default().start_from(StreamPosition::Position(2)),
        )
        .await;
    assert_eq!(until_caught_up(&mut from).await, [3, 4]);

    // From the end: only what comes next; a stream that does not exist yet is waited for.
    let mut tail = client
        .subscribe_to_stream(
            "room-2",
            &SubscribeToStreamOptions::default().start_from(StreamPosition::End),
        )
        .await;
    assert!(until_caught_up(&mut tail).await.is_empty());
    within(
        "append",
        client.append_to_stream("room-2", &any, events("Said", 1)),
    )
    .await
    .unwrap();
    assert_eq!(next_event(&mut tail).await.get_original_event().revision, 0);

    // Open subscriptions do not hold up a clean shutdown, and end with an error.
    let (status, stderr) = server.stop(libc::SIGTERM);
    assert!(status.success(), "{status:?}: {stderr}");
    assert!(within("end of the subscription", tail.next())
        .await
        .is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filtered_all_subscription_sends_checkpoints() {
    let (_server, client) = start(&[]);
    let any = AppendToStreamOptions::default();
    // Three runs of 15 events that do not match, each followed by one that does.
    for _ in 0..3 {
        within(
            "noise",
            client.append_to_stream("noise-1", &any, events("Noise", 15)),
        )
        .await
        .unwrap();
        within(
            "order",
            client.append_to_stream("order-7", &any, events("Placed", 1)),
        )
        .await
        .unwrap();
    }
    let filter = SubscriptionFilter::on_stream_name()
        .add_prefix("order-")
        .max(10);
    let mut sub = client
        .subscribe_to_all(
            &SubscribeToAllOptions::default()
                .position(StreamPosition::Start)
                .filter(filter),
        )
        .await;
    let mut checkpoints: Vec<Position> = Vec::new();
    let mut seen = Vec::new();
    loop {
        match within("subscription", sub.next_subscription_event())
            .await
            .unwrap()
        {
            SubscriptionEvent::EventAppeared(e) => {
                seen.push(e.get_original_event().stream_id().to_owned());
            }
            SubscriptionEvent::Checkpoint(p) => checkpoints.push(p),
            SubscriptionEvent::CaughtUp(_) => break,
            SubscriptionEvent::Confirmed(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen, ["order-7", "order-7", "order-7"]);
    // A window of 10: a checkpoint after each run of 15 looked at.
    assert!(checkpoints.len() >= 3, "{checkpoints:?}");
    assert!(
        checkpoints.windows(2).all(|w| w[0].commit < w[1].commit),
        "{checkpoints:?}"
    );

    // Live: a matching event arrives, others do not.
    within(
        "noise",
        client.append_to_stream("noise-1", &any, events("Noise", 1)),
    )
    .await
    .unwrap();
    within(
        "order",
        client.append_to_stream("order-8", &any, events("Placed", 1)),
    )
    .await
    .unwrap();
    let e = next_event(&mut sub).await;
    assert_eq!(e.get_original_event().stream_id(), "order-8");

    // Resuming from a checkpoint's position starts after it.
    let last = checkpoints[checkpoints.len() - 1];
    let mut resumed = client
        .subscribe_to_all(
            &SubscribeToAllOptions::default()
                .position(StreamPosition::Position(last))
                .filter(SubscriptionFilter::on_event_type().regex("^Placed$")),
        )
        .await;
    let e = next_event(&mut resumed).await;
    assert!(e.get_original_event().position.commit > last.commit);
    assert_eq!(e.get_original_event().event_type, "Placed");
}
