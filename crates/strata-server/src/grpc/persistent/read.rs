//! The bidirectional Read of a persistent subscription: the client sends its options, the server
//! confirms, then pushes events while fewer than the client's buffer size are unsettled; the
//! client acks and nacks them by event id.
//!
//! Each session polls its consumer group for as many events as its buffer has room for, and
//! remembers the ack id of each event it handed out by event id (what the clients ack with).
//! An event whose ack timeout passed is forgotten (the group redelivers it, maybe to another
//! session) and frees its slot. Nack actions: `park`, `retry`, `skip` as the group's; `unknown`
//! is `retry`; `stop` retries and ends the session. Acks and nacks of unknown ids are ignored,
//! as KurrentDB does.
//!
//! When the session ends, the events it still holds are nacked (`retry`) so that other
//! consumers get them at once.
//!
//! The stream never ends without a status (the clients treat a clean end as impossible): a
//! deleted group or `stop` ends it with CANCELLED `persistent-subscription-dropped`, a shutdown
//! with UNAVAILABLE.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use super::connections::Joined;
use super::{dropped, maximum_subscribers, pb, status_of, target, PersistentService};
use crate::app::App;
use crate::auth::Action;
use crate::error::Error;
use crate::groups::dispatcher::NackAction;
use crate::groups::Group;
use crate::grpc::channel::ChannelStream;
use strata_store::RecordedEvent;

/// What the service answers a Read with.
pub(crate) type ReadStream = ChannelStream<pb::ReadResp>;

/// Largest buffer size honoured (the group window bounds what is in flight anyway).
const MAX_BUFFER: usize = 1_000;
/// Longest a poll waits before the session looks around again.
const POLL_WAIT: Duration = Duration::from_secs(5);

/// Reads the options, confirms, and starts the session.
pub(super) async fn start(
    service: &PersistentService,
    request: Request<Streaming<pb::ReadReq>>,
) -> Result<Response<ReadStream>, Status> {
    use pb::read_req::options::{uuid_option, StreamOption};
    use pb::read_req::Content;
    let principal = service.principal(&request)?;
    // The client's address when the connection put it in the call's extensions.
    let from = request
        .extensions()
        .get::<std::net::SocketAddr>()
        .map_or_else(|| "client".to_owned(), |a| a.to_string());
    let mut inbound = request.into_inner();
    let options = match inbound.message().await? {
        Some(pb::ReadReq {
            content: Some(Content::Options(o)),
        }) => o,
        _ => {
            return Err(Status::invalid_argument(
                "a persistent subscription Read starts with its options",
            ))
        }
    };
    let stream = match &options.stream_option {
        Some(StreamOption::StreamIdentifier(id)) => target(Some(id), false)?,
        Some(StreamOption::All(_)) => target(None, true)?,
        None => return Err(Status::invalid_argument("the stream option is missing")),
    };
    let group_name = options.group_name.clone();
    let group = service.find(&stream, &group_name).await?;
    principal
        .authorize(Action::ConsumeGroup(group.source().auth_scope()))
        .map_err(status_of)?;
    let buffer = usize::try_from(options.buffer_size)
        .unwrap_or(1)
        .clamp(1, MAX_BUFFER);
    let structured = matches!(
        options.uuid_option.and_then(|u| u.content),
        Some(uuid_option::Content::Structured(_))
    );
    let joined = service
        .connections
        .join(group.name(), from, buffer)
        .ok_or_else(|| maximum_subscribers(&stream, &group_name))?;
    let (tx, rx) = ChannelStream::new(buffer + 1);
    let confirmation = pb::ReadResp {
        content: Some(pb::read_resp::Content::SubscriptionConfirmation(
            pb::read_resp::SubscriptionConfirmation {
                subscription_id: format!("{stream}::{group_name}"),
            },
        )),
    };
    // The channel has room: this cannot wait.
    tx.send(Ok(confirmation))
        .await
        .map_err(|_| Status::cancelled("the client went away"))?;
    // Acks and nacks arrive through a task of their own (a channel receive is cancel-safe). It
    // ends with the session, dropping the request stream, so that an idle client's open side
    // never holds the call (and a graceful shutdown) open.
    let (acks_tx, acks_rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = acks_tx.closed() => break,
                req = inbound.message() => match req {
                    Ok(Some(req)) => {
                        if acks_tx.send(req).await.is_err() {
                            break;
                        }
                    }
                    Ok(None) | Err(_) => break,
                },
            }
        }
    });
    let session = Session {
        app: service.app.clone(),
        group,
        stream,
        group_name,
        structured,
        buffer,
        joined,
        out: tx,
        unsettled: HashMap::new(),
    };
    tokio::spawn(session.run(acks_rx));
    Ok(Response::new(rx))
}

/// One connected consumer.
struct Session {
    app: App,
    group: Arc<Group>,
    stream: String,
    group_name: String,
    structured: bool,
    buffer: usize,
    joined: Joined,
    out: mpsc::Sender<Result<pb::ReadResp, Status>>,
    /// Event id → (ack id, when handed out).
    unsettled: HashMap<uuid::Uuid, (String, Instant)>,
}

impl Session {
    async fn run(mut self, mut acks: mpsc::Receiver<pb::ReadReq>) {
        let end = loop {
            self.forget_expired();
            let room = self.buffer.saturating_sub(self.unsettled.len());
            let next_expiry = self.next_expiry();
            let groups = self.app.groups().clone();
            let group = self.group.clone();
            let shutdown = self.app.clone();
            tokio::select! {
                () = self.out.closed() => break None,
                req = acks.recv() => match req {
                    Some(req) => {
                        if let Err(status) = self.settle(req).await {
                            break Some(status);
                        }
                    }
                    // The client closed its side: the session is over.
                    None => break None,
                },
                got = poll(groups, group, room, shutdown), if room > 0 => {
                    match got {
                        // A poll ends empty before its wait only when the server shuts down.
                        (Ok(messages), early) if messages.is_empty() => {
                            if early {
                                break Some(Status::unavailable("the server is shutting down"));
                            }
                        }
                        (Ok(messages), _) => {
                            if let Err(()) = self.send(messages).await {
                                break None;
                            }
                        }
                        (Err(Error::NotFound(_)), _) => {
                            break Some(dropped(&self.stream, &self.group_name, "the subscription was deleted"));
                        }
                        (Err(e), _) => break Some(status_of(e)),
                    }
                },
                () = sleep_until(next_expiry), if room == 0 => {}
            }
        };
        // What this consumer still held goes back to the group at once (as KurrentDB retries
        // a closed connection's messages), not only once its ack timeout passes.
        let held: Vec<String> = self.unsettled.drain().map(|(_, (id, _))| id).collect();
        if !held.is_empty() {
            let _ = self
                .app
                .groups()
                .nack(&self.group, &held, NackAction::Retry)
                .await;
        }
        if let Some(status) = end {
            let _ = self.out.send(Err(status)).await;
        }
    }

    /// The earliest instant an unsettled event's ack timeout passes.
    fn next_expiry(&self) -> Option<Instant> {
        let timeout = Duration::from_millis(self.group.settings_now().ack_timeout_ms);
        self.unsettled.values().map(|(_, at)| *at + timeout).min()
    }

    /// Forgets the events whose ack timeout passed (the group takes them back).
    fn forget_expired(&mut self) {
        let timeout = Duration::from_millis(self.group.settings_now().ack_timeout_ms);
        let now = Instant::now();
        self.unsettled.retain(|_, (_, at)| *at + timeout > now);
        self.joined.session.set_in_flight(self.unsettled.len());
    }

    async fn send(&mut self, messages: Vec<crate::groups::Message>) -> Result<(), ()> {
        let now = Instant::now();
        self.joined.session.delivered(messages.len());
        for m in messages {
            let event = read_event(&m.event, m.delivery, self.structured);
            self.unsettled.insert(m.event.id, (m.ack_id, now));
            let resp = pb::ReadResp {
                content: Some(pb::read_resp::Content::Event(event)),
            };
            self.out.send(Ok(resp)).await.map_err(|_| ())?;
        }
        self.joined.session.set_in_flight(self.unsettled.len());
        Ok(())
    }

    /// Applies an ack or nack; a status ends the session.
    async fn settle(&mut self, req: pb::ReadReq) -> Result<(), Status> {
        use pb::read_req::nack::Action as Wire;
        use pb::read_req::Content;
        let (ids, action) = match req.content {
            Some(Content::Ack(a)) => (a.ids, None),
            Some(Content::Nack(n)) => {
                let action = Wire::try_from(n.action).unwrap_or(Wire::Unknown);
                (n.ids, Some(action))
            }
            Some(Content::Options(_)) => {
                return Err(Status::invalid_argument(
                    "the options come once, first; then only acks and nacks",
                ))
            }
            None => return Ok(()),
        };
        let ack_ids: Vec<String> = ids
            .iter()
            .filter_map(|id| {
                crate::grpc::convert::uuid_from_proto(Some(id))
                    .ok()
                    .flatten()
            })
            .filter_map(|id| self.unsettled.remove(&id).map(|(ack_id, _)| ack_id))
            .collect();
        self.joined.session.set_in_flight(self.unsettled.len());
        let stop = action == Some(Wire::Stop);
        if !ack_ids.is_empty() {
            let groups = self.app.groups();
            let result = match action {
                None => groups.ack(&self.group, &ack_ids).await.map(drop),
                Some(a) => {
                    let action = match a {
                        Wire::Park => NackAction::Park,
                        Wire::Skip => NackAction::Skip,
                        Wire::Retry | Wire::Unknown | Wire::Stop => NackAction::Retry,
                    };
                    groups.nack(&self.group, &ack_ids, action).await.map(drop)
                }
            };
            match result {
                // Stale ids (the group was re-created, or the server restarted): ignored.
                Ok(()) | Err(Error::UnknownAckIds { .. }) => {}
                Err(Error::NotFound(_)) => {
                    return Err(dropped(
                        &self.stream,
                        &self.group_name,
                        "the subscription was deleted",
                    ))
                }
                Err(e) => return Err(status_of(e)),
            }
        }
        if stop {
            return Err(dropped(
                &self.stream,
                &self.group_name,
                "the client asked to stop",
            ));
        }
        Ok(())
    }
}

/// Polls `group` for up to `max` events; `true` with an answer that came before the wait was
/// over.
async fn poll(
    groups: crate::groups::Groups,
    group: Arc<Group>,
    max: usize,
    app: App,
) -> (crate::error::Result<Vec<crate::groups::Message>>, bool) {
    let started = tokio::time::Instant::now();
    let got = groups
        .poll(
            &group,
            max,
            POLL_WAIT,
            async move { app.shutting_down().await },
        )
        .await;
    (got, started.elapsed() < POLL_WAIT)
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// An event as the persistent subscription's `ReadEvent` (no link: Strata has no link events;
/// a category subscription gets the events themselves, as KurrentDB's with resolved links).
fn read_event(e: &RecordedEvent, delivery: u32, structured: bool) -> pb::read_resp::ReadEvent {
    use pb::read_resp::read_event::{Count, Position};
    let r = crate::grpc::convert::recorded_event(e, structured);
    let event = pb::read_resp::read_event::RecordedEvent {
        id: r.id,
        stream_identifier: r.stream_identifier,
        stream_revision: r.stream_revision,
        prepare_position: r.prepare_position,
        commit_position: r.commit_position,
        metadata: r.metadata,
        custom_metadata: r.custom_metadata,
        data: r.data,
    };
    let commit = event.commit_position;
    pb::read_resp::ReadEvent {
        event: Some(event),
        link: None,
        position: Some(Position::CommitPosition(commit)),
        count: Some(Count::RetryCount(
            i32::try_from(delivery.saturating_sub(1)).unwrap_or(i32::MAX),
        )),
    }
}
