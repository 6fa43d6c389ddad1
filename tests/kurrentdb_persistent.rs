//! End-to-end: KurrentDB persistent subscriptions through the official Rust client (`kurrentdb`)
//! against the real `strata` binary — create (to a stream, to `$all`, to a category stream),
//! read with ack and nack (retry, park, skip, stop), replay of parked events, get-info and list, the
//! subscriber limit, update, delete, credentials, and the errors the client maps (already
//! exists, not found, access denied, filtered `$all` refused).
//! A subscription made over gRPC is a consumer group over HTTP and the reverse; an open one
//! does not hold up a clean shutdown. Every wait has a
//! deadline; ack timeouts are long enough never to fire.

use std::time::Duration;

use kurrentdb::{
    AppendToStreamOptions, Client, DeletePersistentSubscriptionOptions, EventData,
    GetPersistentSubscriptionInfoOptions, ListPersistentSubscriptionsOptions, NakAction,
    PersistentSubscription, PersistentSubscriptionEvent, PersistentSubscriptionOptions,
    PersistentSubscriptionToAllOptions, ReplayParkedMessagesOptions, ResolvedEvent, StreamPosition,
    SubscribeToPersistentSubscriptionOptions,
};
use serde_json::json;
use strata_suite::TestServer;

mod kurrentdb_support;
use kurrentdb_support::client;

/// Generous bound for any wait (the machine is shared).
const DEADLINE: Duration = Duration::from_secs(30);

async fn append(client: &Client, stream: &str, types: &[&str]) {
    let events: Vec<EventData> = types
        .iter()
        .enumerate()
        .map(|(i, t)| EventData::json(*t, &json!({ "n": i })).unwrap())
        .collect();
    client
        .append_to_stream(stream, &AppendToStreamOptions::default(), events)
        .await
        .expect("append");
}

/// The next event of `sub` with its retry count.
async fn next(sub: &mut PersistentSubscription) -> (ResolvedEvent, usize) {
    tokio::time::timeout(DEADLINE, async {
        loop {
            match sub
                .next_subscription_event()
                .await
                .expect("subscription event")
            {
                PersistentSubscriptionEvent::EventAppeared { event, retry_count } => {
                    return (event, retry_count)
                }
                PersistentSubscriptionEvent::Confirmed(_) => continue,
            }
        }
    })
    .await
    .expect("an event within the deadline")
}

fn type_of(e: &ResolvedEvent) -> &str {
    &e.get_original_event().event_type
}

/// Polls `f` until it gives `Some`, up to [`DEADLINE`].
async fn eventually<T, F, Fut>(mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = tokio::time::Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(started.elapsed() < DEADLINE, "condition not met in time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn stream_subscription_acks_nacks_parks_and_replays() {
    let server = TestServer::start();
    let client = client(&server);
    append(&client, "psorders", &["A", "B", "C"]).await;
    let options = PersistentSubscriptionOptions::default()
        .start_from(StreamPosition::Start)
        .message_timeout(Duration::from_secs(600))
        .max_retry_count(5);
    client
        .create_persistent_subscription("psorders", "g", &options)
        .await
        .expect("create");
    let again = client
        .create_persistent_subscription("psorders", "g", &options)
        .await;
    assert!(
        matches!(again, Err(kurrentdb::Error::ResourceAlreadyExists)),
        "{again:?}"
    );
    // The same group on another stream is another subscription.
    client
        .create_persistent_subscription("psother", "g", &options)
        .await
        .expect("create on another stream");

    let mut sub = client
        .subscribe_to_persistent_subscription(
            "psorders",
            "g",
            &SubscribeToPersistentSubscriptionOptions::default().buffer_size(10),
        )
        .await
        .expect("subscribe");
    let (a, retries) = next(&mut sub).await;
    assert_eq!((type_of(&a), retries), ("A", 0));
    assert_eq!(a.get_original_event().stream_id(), "psorders");
    assert_eq!(a.get_original_event().revision, 0);
    let (b, _) = next(&mut sub).await;
    let (c, _) = next(&mut sub).await;
    assert_eq!((type_of(&b), type_of(&c)), ("B", "C"));

    sub.ack(&a).await.unwrap();
    sub.nack(&b, NakAction::Retry, "try again").await.unwrap();
    let (b2, retries) = next(&mut sub).await;
    assert_eq!((type_of(&b2), retries), ("B", 1));
    sub.ack(&b2).await.unwrap();
    sub.nack(&c, NakAction::Park, "poison").await.unwrap();

    let info = eventually(|| async {
        let info = client
            .get_persistent_subscription_info(
                "psorders",
                "g",
                &GetPersistentSubscriptionInfoOptions::default(),
            )
            .await
            .expect("info");
        (info.stats.parked_message_count == 1).then_some(info)
    })
    .await;
    assert_eq!(info.event_source, "psorders");
    assert_eq!(info.group_name, "g");
    assert_eq!(info.connections.len(), 1);
    let settings = info.settings.expect("settings");
    assert_eq!(settings.max_retry_count, 5);
    assert_eq!(settings.message_timeout, Duration::from_secs(600));
    assert!(matches!(settings.start_from, StreamPosition::Start));

    // Consumer groups over HTTP: the subscription is the group `g@psorders`.
    let http = server.client();
    let group = http.get("/groups/g@psorders").json();
    assert_eq!(group["source"], "psorders");
    assert_eq!(group["max_deliveries"], 6);

    let listed = client
        .list_persistent_subscriptions_for_stream(
            "psorders",
            &ListPersistentSubscriptionsOptions::default(),
        )
        .await
        .expect("list for stream");
    assert_eq!(listed.len(), 1);
    let all = client
        .list_all_persistent_subscriptions(&ListPersistentSubscriptionsOptions::default())
        .await
        .expect("list all");
    let mut names: Vec<(String, String)> = all
        .iter()
        .map(|i| (i.event_source.clone(), i.group_name.clone()))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            ("psorders".to_owned(), "g".to_owned()),
            ("psother".to_owned(), "g".to_owned())
        ]
    );

    client
        .replay_parked_messages("psorders", "g", &ReplayParkedMessagesOptions::default())
        .await
        .expect("replay parked");
    let (c2, _) = next(&mut sub).await;
    assert_eq!(type_of(&c2), "C");
    sub.ack(&c2).await.unwrap();

    // Live events follow.
    append(&client, "psorders", &["D"]).await;
    let (d, _) = next(&mut sub).await;
    assert_eq!((type_of(&d), d.get_original_event().revision), ("D", 3));
    sub.ack(&d).await.unwrap();
    eventually(|| async {
        let info = client
            .get_persistent_subscription_info(
                "psorders",
                "g",
                &GetPersistentSubscriptionInfoOptions::default(),
            )
            .await
            .expect("info");
        (info.stats.last_checkpointed_event_revision == Some(3)
            && info.stats.parked_message_count == 0)
            .then_some(())
    })
    .await;

    // Update: a new timeout and retry count; the position is kept.
    client
        .update_persistent_subscription(
            "psorders",
            "g",
            &PersistentSubscriptionOptions::default()
                .message_timeout(Duration::from_secs(300))
                .max_retry_count(2),
        )
        .await
        .expect("update");
    let group = http.get("/groups/g@psorders").json();
    assert_eq!(
        (
            group["ack_timeout_ms"].clone(),
            group["max_deliveries"].clone()
        ),
        (json!(300_000), json!(3))
    );
    let missing = client
        .update_persistent_subscription("psorders", "nope", &options)
        .await;
    assert!(
        matches!(missing, Err(kurrentdb::Error::ResourceNotFound)),
        "{missing:?}"
    );

    // Delete: the connected consumer is dropped, the subscription is gone.
    client
        .delete_persistent_subscription(
            "psorders",
            "g",
            &DeletePersistentSubscriptionOptions::default(),
        )
        .await
        .expect("delete");
    let ended = tokio::time::timeout(DEADLINE, sub.next())
        .await
        .expect("ends");
    assert!(ended.is_err(), "{ended:?}");
    let gone = client
        .get_persistent_subscription_info(
            "psorders",
            "g",
            &GetPersistentSubscriptionInfoOptions::default(),
        )
        .await;
    assert!(
        matches!(gone, Err(kurrentdb::Error::ResourceNotFound)),
        "{gone:?}"
    );
    let gone = client
        .subscribe_to_persistent_subscription(
            "psorders",
            "g",
            &SubscribeToPersistentSubscriptionOptions::default(),
        )
        .await;
    assert!(
        matches!(gone, Err(kurrentdb::Error::ResourceNotFound)),
        "{:?}",
        gone.err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_and_category_subscriptions_and_the_subscriber_limit() {
    let mut server = TestServer::start();
    let client = client(&server);
    append(&client, "cat-1", &["X"]).await;
    append(&client, "dog-1", &["Y"]).await;
    client
        .create_persistent_subscription_to_all(
            "everything",
            &PersistentSubscriptionToAllOptions::default()
                .start_from(StreamPosition::Start)
                .max_subscriber_count(1),
        )
        .await
        .expect("create to $all");
    // A filtered $all subscription has no consumer-group equivalent.
    let filtered = client
        .create_persistent_subscription_to_all(
            "filtered",
            &PersistentSubscriptionToAllOptions::default()
                .filter(kurrentdb::SubscriptionFilter::on_stream_name().add_prefix("cat-")),
        )
        .await;
    assert!(
        format!("{filtered:?}").contains("InvalidArgument"),
        "{filtered:?}"
    );
    let mut sub = client
        .subscribe_to_persistent_subscription_to_all(
            "everything",
            &SubscribeToPersistentSubscriptionOptions::default(),
        )
        .await
        .expect("subscribe to $all");
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let (e, _) = next(&mut sub).await;
        sub.ack(&e).await.unwrap();
        let stream = e.get_original_event().stream_id().to_owned();
        if !stream.starts_with('$') {
            seen.push((stream, type_of(&e).to_owned()));
        }
    }
    assert_eq!(
        seen,
        [
            ("cat-1".to_owned(), "X".to_owned()),
            ("dog-1".to_owned(), "Y".to_owned())
        ]
    );
    // One subscriber at most: the second is refused.
    let second = client
        .subscribe_to_persistent_subscription_to_all(
            "everything",
            &SubscribeToPersistentSubscriptionOptions::default(),
        )
        .await;
    let refused = match second {
        Err(e) => e,
        Ok(mut s) => s.next().await.expect_err("a second subscriber is refused"),
    };
    assert!(
        format!("{refused:?}").contains("FailedPrecondition"),
        "{refused:?}"
    );
    let info = client
        .get_persistent_subscription_info_to_all(
            "everything",
            &GetPersistentSubscriptionInfoOptions::default(),
        )
        .await
        .expect("info to $all");
    assert_eq!(info.event_source, "$all");
    assert_eq!(info.settings.expect("settings").max_subscriber_count, 1);
    let listed = client
        .list_persistent_subscriptions_to_all(&ListPersistentSubscriptionsOptions::default())
        .await
        .expect("list to $all");
    assert_eq!(listed.len(), 1);
    client
        .delete_persistent_subscription_to_all(
            "everything",
            &DeletePersistentSubscriptionOptions::default(),
        )
        .await
        .expect("delete to $all");

    // A category stream `$ce-cat` is the consumer group of the category.
    client
        .create_persistent_subscription(
            "$ce-cat",
            "cats",
            &PersistentSubscriptionOptions::default().start_from(StreamPosition::Start),
        )
        .await
        .expect("create to a category");
    append(&client, "cat-2", &["Z"]).await;
    let mut cats = client
        .subscribe_to_persistent_subscription(
            "$ce-cat",
            "cats",
            &SubscribeToPersistentSubscriptionOptions::default(),
        )
        .await
        .expect("subscribe to a category");
    let (x, _) = next(&mut cats).await;
    let (z, _) = next(&mut cats).await;
    assert_eq!(
        (
            x.get_original_event().stream_id(),
            z.get_original_event().stream_id()
        ),
        ("cat-1", "cat-2")
    );
    // Skip drops an event; Stop retries it and ends the subscription.
    cats.nack(&x, NakAction::Skip, "not for us").await.unwrap();
    cats.nack(&z, NakAction::Stop, "stopping").await.unwrap();
    let ended = tokio::time::timeout(DEADLINE, cats.next())
        .await
        .expect("stop ends the subscription");
    assert!(ended.is_err(), "{ended:?}");
    let mut cats = client
        .subscribe_to_persistent_subscription(
            "$ce-cat",
            "cats",
            &SubscribeToPersistentSubscriptionOptions::default(),
        )
        .await
        .expect("subscribe again");
    let (z2, retries) = next(&mut cats).await;
    assert_eq!((z2.get_original_event().stream_id(), retries), ("cat-2", 1));
    cats.ack(&z2).await.unwrap();
    let group = server.client().get("/groups/cats@%2524ce-cat").json();
    assert_eq!(group["source"], "category:cat");

    // A group made over HTTP is a subscription to its source under its own name.
    server
        .client()
        .put_json("/groups/billing", r#"{"source": "dog-1"}"#);
    let mut dogs = client
        .subscribe_to_persistent_subscription(
            "dog-1",
            "billing",
            &SubscribeToPersistentSubscriptionOptions::default(),
        )
        .await
        .expect("subscribe to an HTTP-made group");
    let (y, _) = next(&mut dogs).await;
    assert_eq!(type_of(&y), "Y");
    let listed = client
        .list_persistent_subscriptions_for_stream(
            "dog-1",
            &ListPersistentSubscriptionsOptions::default(),
        )
        .await
        .expect("list for dog-1");
    assert_eq!(listed[0].group_name, "billing");

    // An open subscription does not hold up a clean shutdown, and ends with an error.
    let (status, stderr) = server.stop(libc::SIGTERM);
    assert!(status.success(), "{status:?}: {stderr}");
    let ended = tokio::time::timeout(DEADLINE, dogs.next())
        .await
        .expect("the subscription ends");
    assert!(ended.is_err(), "{ended:?}");
}

#[tokio::test]
async fn credentials_decide_who_manages_and_who_consumes() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "admin:changeit admin\nreader read\n").unwrap();
    let server = TestServer::start_with(&["--tokens-file", tokens.to_str().unwrap()]);
    let admin = kurrentdb_support::client_with(&server, "esdb", "admin:changeit@", &[]);
    let reader = kurrentdb_support::client_with(&server, "esdb", "someone:reader@", &[]);
    let anonymous = client(&server);
    append(&admin, "secured", &["A"]).await;
    let options = PersistentSubscriptionOptions::default().start_from(StreamPosition::Start);

    for who in [&reader, &anonymous] {
        let refused = who
            .create_persistent_subscription("secured", "g", &options)
            .await;
        assert!(
            matches!(refused, Err(kurrentdb::Error::AccessDenied)),
            "{refused:?}"
        );
    }
    admin
        .create_persistent_subscription("secured", "g", &options)
        .await
        .expect("admin creates");
    // The read role consumes and looks, but does not delete.
    let mut sub = reader
        .subscribe_to_persistent_subscription(
            "secured",
            "g",
            &SubscribeToPersistentSubscriptionOptions::default(),
        )
        .await
        .expect("reader subscribes");
    let (a, _) = next(&mut sub).await;
    sub.ack(&a).await.unwrap();
    reader
        .get_persistent_subscription_info(
            "secured",
            "g",
            &GetPersistentSubscriptionInfoOptions::default(),
        )
        .await
        .expect("reader reads the info");
    let refused = reader
        .delete_persistent_subscription(
            "secured",
            "g",
            &DeletePersistentSubscriptionOptions::default(),
        )
        .await;
    assert!(
        matches!(refused, Err(kurrentdb::Error::AccessDenied)),
        "{refused:?}"
    );
    let refused = anonymous
        .subscribe_to_persistent_subscription(
            "secured",
            "g",
            &SubscribeToPersistentSubscriptionOptions::default(),
        )
        .await;
    assert!(
        matches!(refused, Err(kurrentdb::Error::AccessDenied)),
        "{:?}",
        refused.err()
    );
}
