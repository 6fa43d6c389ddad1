//! `Streams.Append` (client streaming): the options first, then one message per event,
//! appended atomically once the client closes its side. Shared with BatchAppend: the
//! conversion of proposed events ([`new_event`]) and the write itself ([`write`]), which sends
//! `$$<stream>` writes to the stream's metadata (`super::metadata`).

use std::collections::HashMap;

use strata_store::{CurrentRevision, ExpectedRevision, NewEvent};
use tonic::{Request, Status, Streaming};

use super::{expected_revision, metadata};
use crate::app::App;
use crate::auth::{Action, Principal};
use crate::error::Error;
use crate::grpc::auth::{authorize, principal};
use crate::grpc::convert::{content_type_of, stream_name, uuid_from_proto};
use crate::grpc::proto::event_store::client::streams::{
    append_req, append_resp, AppendReq, AppendResp,
};
use crate::grpc::proto::event_store::client::Empty;
use crate::grpc::status;

/// What an append came to: the stream's last revision and the last event's position, or a
/// failed concurrency check (answered in the response body, not as a status).
pub(super) enum Written {
    /// Appended (or an idempotent retry of an earlier append).
    Ok {
        /// The stream's revision after the append.
        revision: u64,
        /// The log position of the last event.
        position: u64,
    },
    /// The expected revision did not hold.
    WrongExpectedVersion {
        /// As sent.
        expected: ExpectedRevision,
        /// The stream's state.
        actual: CurrentRevision,
    },
}

/// One proposed event of Append or BatchAppend as a store event: `metadata` carries `type`
/// (required) and `content-type` (`application/json` for JSON, anything else binary);
/// `custom_metadata` must be empty or JSON (Strata keeps metadata as JSON).
pub(super) fn new_event(
    index: usize,
    id: Option<&crate::grpc::proto::event_store::client::Uuid>,
    metadata: &HashMap<String, String>,
    custom_metadata: Vec<u8>,
    data: Vec<u8>,
) -> Result<NewEvent, Status> {
    let event_type = metadata
        .get("type")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            Status::invalid_argument(format!(
                "event {index}: the `type` metadata entry is missing"
            ))
        })?;
    Ok(NewEvent {
        id: uuid_from_proto(id)?,
        event_type: event_type.clone(),
        data,
        metadata: custom_metadata,
        content_type: content_type_of(metadata.get("content-type").map(String::as_str)),
    })
}

/// Appends `events` to `stream` if `expected` holds, as `principal`; `$$<stream>` sets the
/// metadata of `<stream>` instead. Total payload over the body limit:
/// `maximum-append-size-exceeded`.
pub(super) async fn write(
    app: &App,
    principal: &Principal,
    stream: &str,
    expected: ExpectedRevision,
    events: Vec<NewEvent>,
) -> Result<Written, Status> {
    let limit = app.limits().max_body_bytes;
    let total: usize = events.iter().map(|e| e.data.len() + e.metadata.len()).sum();
    if total > limit {
        return Err(status::maximum_append_size_exceeded(
            limit,
            &format!("the append has {total} bytes of data and metadata"),
        ));
    }
    if let Some(target) = stream.strip_prefix(metadata::PREFIX) {
        authorize(principal, Action::WriteStream(target))?;
        return metadata::write(app, target, events).await;
    }
    authorize(principal, Action::WriteStream(stream))?;
    if events.is_empty() {
        // Nothing to write: the clients use this to check an expected revision.
        let head = app
            .store()
            .head(stream)
            .map_err(|e| status::from_store(app, e, Some(stream)))?;
        let actual = head.current();
        let holds = match (expected, actual) {
            (ExpectedRevision::Any, _) => true,
            (ExpectedRevision::NoStream, CurrentRevision::NoStream) => true,
            (ExpectedRevision::StreamExists, CurrentRevision::Revision(_)) => true,
            (ExpectedRevision::Exact(n), CurrentRevision::Revision(r)) => n == r,
            _ => false,
        };
        if !holds {
            return Ok(Written::WrongExpectedVersion { expected, actual });
        }
        return Ok(Written::Ok {
            revision: head.last_revision.unwrap_or(0),
            position: head.last_position.unwrap_or(0),
        });
    }
    match app.store().append_async(stream, expected, events).await {
        Ok(result) => Ok(Written::Ok {
            revision: result.last_revision,
            position: result.last_position,
        }),
        Err(strata_store::Error::WrongExpectedRevision { expected, actual }) => {
            Ok(Written::WrongExpectedVersion { expected, actual })
        }
        Err(e) => Err(status::from_store(app, e, Some(stream))),
    }
}

/// `Streams.Append`.
pub(super) async fn append(
    app: &App,
    request: Request<Streaming<AppendReq>>,
) -> Result<AppendResp, Status> {
    let principal = principal(&request)?;
    let mut messages = request.into_inner();
    let Some(append_req::Content::Options(options)) =
        messages.message().await?.and_then(|m| m.content)
    else {
        return Err(Status::invalid_argument(
            "the first message of an append must carry its options",
        ));
    };
    let stream = stream_name(options.stream_identifier.as_ref())?;
    let expected = expected_revision!(
        options.expected_stream_revision,
        append_req::options::ExpectedStreamRevision
    );
    let limit = app.limits().max_body_bytes;
    let mut events = Vec::new();
    let mut total = 0usize;
    while let Some(message) = messages.message().await? {
        let Some(append_req::Content::ProposedMessage(m)) = message.content else {
            return Err(Status::invalid_argument(
                "only the first message of an append carries options",
            ));
        };
        total = total.saturating_add(m.data.len() + m.custom_metadata.len());
        if total > limit {
            return Err(status::maximum_append_size_exceeded(
                limit,
                "the append is over the size limit",
            ));
        }
        if events.len() >= app.limits().max_events_per_append {
            return Err(status::from_error(
                Error::PayloadTooLarge(format!(
                    "more than {} events in one append",
                    app.limits().max_events_per_append
                )),
                Some(&stream),
                limit,
            ));
        }
        events.push(new_event(
            events.len(),
            m.id.as_ref(),
            &m.metadata,
            m.custom_metadata,
            m.data,
        )?);
    }
    let written = write(app, &principal, &stream, expected, events).await?;
    Ok(AppendResp {
        result: Some(match written {
            Written::Ok { revision, position } => {
                append_resp::Result::Success(append_resp::Success {
                    current_revision_option: Some(
                        append_resp::success::CurrentRevisionOption::CurrentRevision(revision),
                    ),
                    position_option: Some(append_resp::success::PositionOption::Position(
                        append_resp::Position {
                            commit_position: position,
                            prepare_position: position,
                        },
                    )),
                })
            }
            Written::WrongExpectedVersion { expected, actual } => {
                append_resp::Result::WrongExpectedVersion(wrong_expected_version(expected, actual))
            }
        }),
    })
}

/// The body form of a failed concurrency check, in both the current fields and the ones of
/// servers before 21.x.
fn wrong_expected_version(
    expected: ExpectedRevision,
    actual: CurrentRevision,
) -> append_resp::WrongExpectedVersion {
    use append_resp::wrong_expected_version as w;
    let (current, current_old) = match actual {
        CurrentRevision::Revision(r) => (
            w::CurrentRevisionOption::CurrentRevision(r),
            w::CurrentRevisionOption2060::CurrentRevision2060(r),
        ),
        CurrentRevision::NoStream => (
            w::CurrentRevisionOption::CurrentNoStream(Empty {}),
            w::CurrentRevisionOption2060::NoStream2060(Empty {}),
        ),
    };
    let (expected_now, expected_old) = match expected {
        ExpectedRevision::Exact(n) => (
            w::ExpectedRevisionOption::ExpectedRevision(n),
            Some(w::ExpectedRevisionOption2060::ExpectedRevision2060(n)),
        ),
        ExpectedRevision::Any => (
            w::ExpectedRevisionOption::ExpectedAny(Empty {}),
            Some(w::ExpectedRevisionOption2060::Any2060(Empty {})),
        ),
        ExpectedRevision::StreamExists => (
            w::ExpectedRevisionOption::ExpectedStreamExists(Empty {}),
            Some(w::ExpectedRevisionOption2060::StreamExists2060(Empty {})),
        ),
        ExpectedRevision::NoStream => (w::ExpectedRevisionOption::ExpectedNoStream(Empty {}), None),
    };
    append_resp::WrongExpectedVersion {
        current_revision_option_20_6_0: Some(current_old),
        expected_revision_option_20_6_0: expected_old,
        current_revision_option: Some(current),
        expected_revision_option: Some(expected_now),
    }
}
