//! `Streams.Read` with a count: a stream or `$all`, forwards or backwards, from the start, the
//! end, a revision or a position (inclusive), with `$all` filters. Events are read in pages on
//! the blocking pool and sent through a bounded channel (a slow client holds its reader, never
//! a queue). A read with the `subscription` option instead goes to `super::subscribe`.
//!
//! - A stream that was never written, or is soft-deleted, answers a `stream_not_found` message
//!   when the client asked for it (`control_option.compatibility`, as every current client
//!   does), else `NOT_FOUND`; a tombstoned stream answers `stream-deleted`.
//! - `$all` leaves out the events of Strata's reserved `$`-streams (metadata records, group and
//!   projection bookkeeping), as `GET /all` does by default.
//! - `resolve_links` is accepted and has no effect: Strata has no link events.

use strata_store::{AllFilter, Deletion, Direction, ReadFrom, RecordedEvent};
use tokio::sync::mpsc;
use tonic::{Request, Status};

use super::filter::EventFilter;
use super::{metadata, subscribe, ChannelStream};
use crate::app::{run_blocking, App};
use crate::auth::{Action, Principal};
use crate::grpc::auth::{authorize, principal};
use crate::grpc::convert::{read_resp_event, stream_identifier, stream_name};
use crate::grpc::proto::event_store::client::streams::read_req::options::{
    all_options, stream_options, uuid_option, CountOption, FilterOption, ReadDirection,
    StreamOption,
};
use crate::grpc::proto::event_store::client::streams::{read_resp, ReadReq, ReadResp};
use crate::grpc::status;

/// Events per store read.
const PAGE: u64 = 500;
/// Messages buffered between the reader and the client.
const CHANNEL: usize = 64;

/// What is read.
#[derive(Clone, Debug)]
pub(super) enum Source {
    /// One stream.
    Stream(String),
    /// `$all`.
    All,
}

/// Where a read or subscription starts, as the client sent it.
#[derive(Clone, Copy, Debug)]
pub(super) enum From {
    Start,
    End,
    /// A revision (stream) or commit position (`$all`).
    At(u64),
}

/// A read request, checked.
#[derive(Clone, Debug)]
pub(super) struct Plan {
    pub(super) source: Source,
    pub(super) from: From,
    pub(super) backwards: bool,
    /// `None`: a subscription.
    pub(super) count: Option<u64>,
    pub(super) filter: Option<EventFilter>,
    /// Event ids as two halves rather than text.
    pub(super) structured: bool,
    /// Answer a missing stream with a `stream_not_found` message rather than a status.
    pub(super) compat: bool,
}

impl Plan {
    /// Where a read of the plan starts: events still to read (all of them for a
    /// subscription), the direction, and the first revision or position.
    fn start(&self) -> (u64, Direction, ReadFrom) {
        let direction = if self.backwards {
            Direction::Backward
        } else {
            Direction::Forward
        };
        let from = match self.from {
            From::Start => ReadFrom::Start,
            From::End => ReadFrom::End,
            From::At(at) => ReadFrom::At(at),
        };
        (self.count.unwrap_or(u64::MAX), direction, from)
    }
}

impl Plan {
    /// The plan of a `ReadReq`.
    fn new(request: ReadReq) -> Result<Plan, Status> {
        let options = request
            .options
            .ok_or_else(|| Status::invalid_argument("a read needs options"))?;
        let backwards = options.read_direction() == ReadDirection::Backwards;
        let (source, from) = match options.stream_option {
            Some(StreamOption::Stream(s)) => {
                let name = stream_name(s.stream_identifier.as_ref())?;
                let from = match s.revision_option {
                    Some(stream_options::RevisionOption::Revision(r)) => From::At(r),
                    Some(stream_options::RevisionOption::End(_)) => From::End,
                    Some(stream_options::RevisionOption::Start(_)) | None => From::Start,
                };
                (Source::Stream(name), from)
            }
            Some(StreamOption::All(a)) => {
                let from = match a.all_option {
                    Some(all_options::AllOption::Position(p)) if p.commit_position == u64::MAX => {
                        From::End
                    }
                    Some(all_options::AllOption::Position(p)) => From::At(p.commit_position),
                    Some(all_options::AllOption::End(_)) => From::End,
                    Some(all_options::AllOption::Start(_)) | None => From::Start,
                };
                (Source::All, from)
            }
            None => return Err(Status::invalid_argument("a read needs a stream or $all")),
        };
        let count = match options.count_option {
            Some(CountOption::Count(n)) => Some(n),
            Some(CountOption::Subscription(_)) => None,
            None => Some(u64::MAX),
        };
        let filter = match (&source, &options.filter_option) {
            (Source::All, Some(FilterOption::Filter(f))) => Some(EventFilter::new(f)?),
            _ => None,
        };
        let structured = matches!(
            options.uuid_option.and_then(|u| u.content),
            Some(uuid_option::Content::Structured(_))
        );
        let compat = options.control_option.is_some_and(|c| c.compatibility >= 1);
        Ok(Plan {
            source,
            from,
            backwards,
            count,
            filter,
            structured,
            compat,
        })
    }
}

/// `Streams.Read`.
pub(super) async fn read(
    app: &App,
    request: Request<ReadReq>,
) -> Result<ChannelStream<ReadResp>, Status> {
    let principal = principal(&request)?;
    let plan = Plan::new(request.into_inner())?;
    if plan.count.is_none() {
        return subscribe::subscribe(app, &principal, plan);
    }
    authorize_read(&principal, &plan)?;
    let (tx, stream) = ChannelStream::new(CHANNEL);
    let app = app.clone();
    tokio::spawn(async move {
        let done = match &plan.source {
            Source::Stream(name) => read_stream(&app, name, &plan, &tx).await,
            Source::All => read_all(&app, &plan, &tx).await,
        };
        if let Err(status) = done {
            let _ = tx.send(Err(status)).await;
        }
    });
    Ok(stream)
}

/// Checks that `principal` may read what `plan` reads (`$$<stream>`: the rights on `<stream>`).
pub(super) fn authorize_read(principal: &Principal, plan: &Plan) -> Result<(), Status> {
    match &plan.source {
        Source::Stream(name) => authorize(
            principal,
            Action::ReadStream(name.strip_prefix(metadata::PREFIX).unwrap_or(name)),
        ),
        Source::All => authorize(
            principal,
            Action::ReadAll {
                stream_prefix: plan
                    .filter
                    .as_ref()
                    .and_then(EventFilter::single_stream_prefix),
                include_system: false,
            },
        ),
    }
}

/// A message carrying `event`.
fn event_message(event: &RecordedEvent, structured: bool) -> Result<ReadResp, Status> {
    Ok(ReadResp {
        content: Some(read_resp_event(event, structured)),
    })
}

/// Reads `count` events of one stream into `tx`.
async fn read_stream(
    app: &App,
    name: &str,
    plan: &Plan,
    tx: &mpsc::Sender<Result<ReadResp, Status>>,
) -> Result<(), Status> {
    let (mut remaining, direction, mut from) = plan.start();
    let is_metadata = name.starts_with(metadata::PREFIX);
    while remaining > 0 {
        let store = app.store().clone();
        let stream = name.to_owned();
        let limit = remaining.min(PAGE) as usize;
        let page = run_blocking("reading the stream failed", move || {
            store.read_stream(&stream, from, direction, limit)
        })
        .await
        .map_err(|e| status::from_error(e, Some(name), 0))?;
        let slice = match page {
            Ok(slice) => slice,
            Err(
                e @ (strata_store::Error::StreamNotFound { .. }
                | strata_store::Error::StreamDeleted { .. }),
            ) => {
                return missing_stream(app, name, plan, e, tx).await;
            }
            Err(e) => return Err(status::from_store(app, e, Some(name))),
        };
        for event in slice.events {
            let event = if is_metadata {
                metadata::as_kurrent_event(event)
            } else {
                event
            };
            if tx
                .send(event_message(&event, plan.structured))
                .await
                .is_err()
            {
                return Ok(());
            }
            remaining -= 1;
        }
        match slice.next {
            Some(next) if !slice.end => from = ReadFrom::At(next),
            _ => break,
        }
    }
    Ok(())
}

/// The answer for a stream that is not there: tombstoned → `stream-deleted`; never written or
/// soft-deleted → `stream_not_found` (message or status, per the client's compatibility).
async fn missing_stream(
    app: &App,
    name: &str,
    plan: &Plan,
    e: strata_store::Error,
    tx: &mpsc::Sender<Result<ReadResp, Status>>,
) -> Result<(), Status> {
    if matches!(e, strata_store::Error::StreamDeleted { .. }) {
        let head = app
            .store()
            .head(name)
            .map_err(|e| status::from_store(app, e, Some(name)))?;
        if head.deletion == Some(Deletion::Hard) {
            return Err(status::stream_deleted(name));
        }
    }
    if !plan.compat {
        return Err(status::stream_not_found(name));
    }
    let _ = tx
        .send(Ok(ReadResp {
            content: Some(read_resp::Content::StreamNotFound(
                read_resp::StreamNotFound {
                    stream_identifier: Some(stream_identifier(name)),
                },
            )),
        }))
        .await;
    Ok(())
}

/// The store filter that narrows an `$all` scan before [`EventFilter`] decides (user streams
/// only; one stream prefix when the filter has just that).
pub(super) fn store_filter(filter: Option<&EventFilter>) -> AllFilter {
    AllFilter {
        stream_prefix: filter
            .and_then(EventFilter::single_stream_prefix)
            .map(str::to_owned),
        ..AllFilter::default()
    }
}

/// Reads `count` matching events of `$all` into `tx`.
async fn read_all(
    app: &App,
    plan: &Plan,
    tx: &mpsc::Sender<Result<ReadResp, Status>>,
) -> Result<(), Status> {
    let (mut remaining, direction, mut from) = plan.start();
    let store_filter = store_filter(plan.filter.as_ref());
    while remaining > 0 {
        let store = app.store().clone();
        let filter = store_filter.clone();
        let limit = if plan.filter.is_some() {
            PAGE
        } else {
            remaining.min(PAGE)
        } as usize;
        let slice = run_blocking("reading $all failed", move || {
            store.read_all(from, direction, limit, &filter)
        })
        .await
        .map_err(|e| status::from_error(e, None, 0))?
        .map_err(|e| status::from_store(app, e, None))?;
        for event in slice.events {
            if plan
                .filter
                .as_ref()
                .is_some_and(|f| !f.matches(&event.stream, &event.event_type))
            {
                continue;
            }
            if tx
                .send(event_message(&event, plan.structured))
                .await
                .is_err()
            {
                return Ok(());
            }
            remaining -= 1;
            if remaining == 0 {
                return Ok(());
            }
        }
        match slice.next {
            Some(next) if !slice.end => from = ReadFrom::At(next),
            _ => break,
        }
    }
    Ok(())
}
