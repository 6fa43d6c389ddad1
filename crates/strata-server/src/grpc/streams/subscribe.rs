//! `Streams.Read` with the `subscription` option: catch-up subscriptions to a stream or to
//! `$all`, through the same [`LiveFeed`] loop as the HTTP API's SSE subscriptions (history from
//! the log, then every commit as it lands, without a gap or a duplicate at the switch).
//!
//! - The first message confirms the subscription (`confirmation`, a fresh id).
//! - Subscribing from a revision or position starts *after* it (a client resumes from the last
//!   event it processed); from the end, after the last event now.
//! - When the history is exhausted, one `caught_up` message; Strata never falls behind (a slow
//!   client makes its reader wait and read the log again), so there is no `fell_behind`.
//! - A filtered `$all` subscription sends a `checkpoint` (the position of the last event
//!   looked at, matching or not) once `window × checkpointIntervalMultiplier` events were
//!   looked at since the last one — before the next event it delivers, or at the end of a
//!   batch read — and when it catches up with events looked at since the last one. A long run
//!   of events that do not match gives one checkpoint, not one per interval.
//! - It ends with `UNAVAILABLE` when the server shuts down, and as soon as the client goes away.

use strata_store::Subscription;
use tokio::sync::mpsc;
use tonic::Status;
use uuid::Uuid;

use super::filter::EventFilter;
use super::read::{authorize_read, store_filter, From, Plan, Source};
use super::{metadata, ChannelStream};
use crate::app::App;
use crate::auth::Principal;
use crate::grpc::convert::{now_timestamp, read_resp_event};
use crate::grpc::proto::event_store::client::streams::{read_resp, ReadResp};
use crate::grpc::status;
use crate::live_feed::{FeedError, LiveFeed};

/// Messages buffered between the subscription and the client.
const CHANNEL: usize = 64;
/// Events read from the log at a time.
const BATCH: usize = 256;

/// Starts a subscription for `plan` (its `count` is `None`).
pub(super) fn subscribe(
    app: &App,
    principal: &Principal,
    plan: Plan,
) -> Result<ChannelStream<ReadResp>, Status> {
    authorize_read(principal, &plan)?;
    let subscription = match &plan.source {
        Source::Stream(name) => {
            if name.starts_with(metadata::PREFIX) {
                return Err(Status::unimplemented(
                    "subscriptions to metadata streams ($$<stream>) are not supported",
                ));
            }
            let from = match plan.from {
                From::Start => 0,
                From::At(revision) => revision.saturating_add(1),
                From::End => app
                    .store()
                    .head(name)
                    .map_err(|e| status::from_store(app, e, Some(name)))?
                    .last_revision
                    .map_or(0, |r| r + 1),
            };
            app.store().subscribe_stream(name, from)
        }
        Source::All => {
            let from = match plan.from {
                From::Start => 0,
                From::At(position) => position.saturating_add(1),
                From::End => app.store().next_position(),
            };
            app.store()
                .subscribe_all(from, store_filter(plan.filter.as_ref()))
        }
    };
    let (tx, stream) = ChannelStream::new(CHANNEL);
    let app = app.clone();
    tokio::spawn(async move {
        let ended = run(&app, subscription, &plan, &tx).await;
        if let Err(status) = ended {
            let _ = tx.send(Err(status)).await;
        }
    });
    Ok(stream)
}

/// Sends `content` to the client; `false` once the client is gone.
async fn send(tx: &mpsc::Sender<Result<ReadResp, Status>>, content: read_resp::Content) -> bool {
    tx.send(Ok(ReadResp {
        content: Some(content),
    }))
    .await
    .is_ok()
}

/// A checkpoint at the last position looked at before `cursor`.
fn checkpoint(cursor: u64) -> read_resp::Content {
    let position = cursor.saturating_sub(1);
    read_resp::Content::Checkpoint(read_resp::Checkpoint {
        commit_position: position,
        prepare_position: position,
        timestamp: Some(now_timestamp()),
    })
}

/// Feeds the subscription to the client until it goes away, the server shuts down or the store
/// fails.
async fn run(
    app: &App,
    subscription: Subscription,
    plan: &Plan,
    tx: &mpsc::Sender<Result<ReadResp, Status>>,
) -> Result<(), Status> {
    let confirmation = read_resp::Content::Confirmation(read_resp::SubscriptionConfirmation {
        subscription_id: Uuid::new_v4().to_string(),
    });
    if !send(tx, confirmation).await {
        return Ok(());
    }
    let is_all = matches!(plan.source, Source::All);
    let filter: Option<&EventFilter> = plan.filter.as_ref();
    let mut feed = LiveFeed::new(subscription);
    let mut caught_up = false;
    let mut last_delivered: Option<u64> = None;
    // Positions are dense: everything from here to the cursor was looked at.
    let mut unchecked_from = feed.cursor();
    loop {
        let polled = tokio::select! {
            polled = feed.poll(BATCH) => polled,
            () = tx.closed() => return Ok(()),
            () = app.shutting_down() => return Err(Status::unavailable("the server is shutting down")),
        };
        let events = polled.map_err(|e| feed_error(app, e))?;
        let after = feed.cursor();
        if events.is_empty() {
            if filter.is_some() && after > unchecked_from {
                unchecked_from = after;
                if !send(tx, checkpoint(after)).await {
                    return Ok(());
                }
            }
            if !caught_up {
                caught_up = true;
                let message = read_resp::Content::CaughtUp(read_resp::CaughtUp {
                    timestamp: Some(now_timestamp()),
                    stream_revision: (!is_all)
                        .then_some(last_delivered.and_then(|r| i64::try_from(r).ok()))
                        .flatten(),
                    position: is_all.then(|| read_resp::Position {
                        commit_position: after.saturating_sub(1),
                        prepare_position: after.saturating_sub(1),
                    }),
                });
                if !send(tx, message).await {
                    return Ok(());
                }
            }
            tokio::select! {
                waited = feed.wait() => waited.map_err(|e| feed_error(app, e))?,
                () = tx.closed() => return Ok(()),
                () = app.shutting_down() => return Err(Status::unavailable("the server is shutting down")),
            }
            continue;
        }
        for event in &events {
            if let Some(f) = filter {
                if event.position.saturating_sub(unchecked_from) >= f.checkpoint_interval {
                    unchecked_from = event.position;
                    if !send(tx, checkpoint(event.position)).await {
                        return Ok(());
                    }
                }
                if !f.matches(&event.stream, &event.event_type) {
                    continue;
                }
            }
            last_delivered = Some(event.revision);
            if !send(tx, read_resp_event(event, plan.structured)).await {
                return Ok(());
            }
        }
        if let Some(f) = filter {
            if after.saturating_sub(unchecked_from) >= f.checkpoint_interval {
                unchecked_from = after;
                if !send(tx, checkpoint(after)).await {
                    return Ok(());
                }
            }
        }
    }
}

/// A feed failure as the subscription's final status.
fn feed_error(app: &App, e: FeedError) -> Status {
    match e {
        FeedError::Store(e) => status::from_store(app, e, None),
        FeedError::Lost => Status::internal("the subscription's reader was lost"),
    }
}
