//! `Streams.BatchAppend` (bidirectional): each batch is identified by its correlation id, may
//! arrive in several chunks (the first carries the options), and is appended atomically when
//! the chunk marked `is_final` arrives; its answer carries the correlation id, the stream, the
//! expected position as sent, and either the new revision and position or an error in the
//! status-with-details form (`google.rpc.Status` with one detail: `WrongExpectedVersion`,
//! `StreamDeleted`, `AccessDenied`, `MaximumAppendSizeExceeded`, `BadRequest` or `Unknown` of
//! `event_store.client`). Batches are appended in the order their final chunks arrive. The
//! deadline option is accepted and not enforced.

use std::collections::HashMap;

use strata_store::{CurrentRevision, ExpectedRevision, NewEvent};
use tonic::{Code, Request, Status, Streaming};
use uuid::Uuid;

use super::append::{new_event, write, Written};
use super::ChannelStream;
use crate::app::App;
use crate::auth::Principal;
use crate::grpc::auth::principal;
use crate::grpc::convert::{stream_name, uuid_from_proto};
use crate::grpc::proto::event_store::client as shared;
use crate::grpc::proto::event_store::client::streams::{
    batch_append_req, batch_append_resp, BatchAppendReq, BatchAppendResp,
};
use crate::grpc::proto::google::rpc;
use crate::grpc::status::{ACCESS_DENIED, EXCEPTION, MAXIMUM_APPEND_SIZE_EXCEEDED, STREAM_DELETED};

/// Answers buffered for the client.
const CHANNEL: usize = 64;

/// A batch whose final chunk has not arrived yet.
struct Pending {
    correlation: shared::Uuid,
    stream: String,
    expected: ExpectedRevision,
    expected_echo: Option<batch_append_resp::ExpectedStreamPosition>,
    events: Vec<NewEvent>,
}

/// `Streams.BatchAppend`.
pub(super) fn batch_append(
    app: &App,
    request: Request<Streaming<BatchAppendReq>>,
) -> Result<ChannelStream<BatchAppendResp>, Status> {
    let principal = principal(&request)?;
    let mut chunks = request.into_inner();
    let (tx, stream) = ChannelStream::new(CHANNEL);
    let app = app.clone();
    tokio::spawn(async move {
        let mut pending: HashMap<Uuid, Pending> = HashMap::new();
        loop {
            let chunk = tokio::select! {
                chunk = chunks.message() => chunk,
                () = tx.closed() => return,
                () = app.shutting_down() => {
                    let _ = tx.send(Err(Status::unavailable("the server is shutting down"))).await;
                    return;
                }
            };
            let chunk = match chunk {
                Ok(Some(chunk)) => chunk,
                Ok(None) => return,
                Err(status) => {
                    let _ = tx.send(Err(status)).await;
                    return;
                }
            };
            if let Some(answer) = take_chunk(&app, &principal, &mut pending, chunk).await {
                if tx.send(Ok(answer)).await.is_err() {
                    return;
                }
            }
        }
    });
    Ok(stream)
}

/// Adds `chunk` to its batch; appends the batch and returns its answer on the final chunk.
async fn take_chunk(
    app: &App,
    principal: &Principal,
    pending: &mut HashMap<Uuid, Pending>,
    chunk: BatchAppendReq,
) -> Option<BatchAppendResp> {
    let correlation = chunk.correlation_id.clone().unwrap_or_default();
    let key = uuid_from_proto(Some(&correlation))
        .ok()
        .flatten()
        .unwrap_or_else(Uuid::nil);
    let batch = match pending.entry(key) {
        std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
        std::collections::hash_map::Entry::Vacant(e) => {
            let Some(options) = chunk.options.clone() else {
                return Some(failed(
                    &correlation,
                    "",
                    None,
                    Status::invalid_argument("the first chunk of a batch must carry its options"),
                ));
            };
            let stream = match stream_name(options.stream_identifier.as_ref()) {
                Ok(stream) => stream,
                Err(status) => return Some(failed(&correlation, "", None, status)),
            };
            use batch_append_req::options::ExpectedStreamPosition as In;
            use batch_append_resp::ExpectedStreamPosition as Echo;
            let (expected, expected_echo) = match options.expected_stream_position {
                Some(In::StreamPosition(n)) => {
                    (ExpectedRevision::Exact(n), Some(Echo::StreamPosition(n)))
                }
                Some(In::NoStream(())) => (ExpectedRevision::NoStream, Some(Echo::NoStream(()))),
                Some(In::StreamExists(())) => {
                    (ExpectedRevision::StreamExists, Some(Echo::StreamExists(())))
                }
                Some(In::Any(())) | None => (ExpectedRevision::Any, Some(Echo::Any(()))),
            };
            e.insert(Pending {
                correlation: correlation.clone(),
                stream,
                expected,
                expected_echo,
                events: Vec::new(),
            })
        }
    };
    for m in chunk.proposed_messages {
        let index = batch.events.len();
        match new_event(index, m.id.as_ref(), &m.metadata, m.custom_metadata, m.data) {
            Ok(event) => batch.events.push(event),
            Err(status) => {
                let batch = pending.remove(&key)?;
                return Some(failed(
                    &batch.correlation,
                    &batch.stream,
                    batch.expected_echo,
                    status,
                ));
            }
        }
    }
    if !chunk.is_final {
        return None;
    }
    let batch = pending.remove(&key)?;
    let written = write(app, principal, &batch.stream, batch.expected, batch.events).await;
    let result = match written {
        Ok(Written::Ok { revision, position }) => {
            batch_append_resp::Result::Success(batch_append_resp::Success {
                current_revision_option: Some(
                    batch_append_resp::success::CurrentRevisionOption::CurrentRevision(revision),
                ),
                position_option: Some(batch_append_resp::success::PositionOption::Position(
                    shared::AllStreamPosition {
                        commit_position: position,
                        prepare_position: position,
                    },
                )),
            })
        }
        Ok(Written::WrongExpectedVersion { expected, actual }) => batch_append_resp::Result::Error(
            wrong_expected_version(&batch.stream, expected, actual),
        ),
        Err(status) => batch_append_resp::Result::Error(rpc_status(&status)),
    };
    Some(BatchAppendResp {
        correlation_id: Some(batch.correlation),
        result: Some(result),
        stream_identifier: Some(crate::grpc::convert::stream_identifier(&batch.stream)),
        expected_stream_position: batch.expected_echo,
    })
}

/// The answer of a batch refused before its append.
fn failed(
    correlation: &shared::Uuid,
    stream: &str,
    expected_echo: Option<batch_append_resp::ExpectedStreamPosition>,
    status: Status,
) -> BatchAppendResp {
    BatchAppendResp {
        correlation_id: Some(correlation.clone()),
        result: Some(batch_append_resp::Result::Error(rpc_status(&status))),
        stream_identifier: Some(crate::grpc::convert::stream_identifier(stream)),
        expected_stream_position: expected_echo,
    }
}

/// `detail` packed as a `google.protobuf.Any` of `event_store.client.<name>`.
fn any(name: &str, detail: impl prost::Message) -> prost_types::Any {
    prost_types::Any {
        type_url: format!("type.googleapis.com/event_store.client.{name}"),
        value: detail.encode_to_vec(),
    }
}

/// A status as the status-with-details of a batch, its detail chosen by the `exception`.
fn rpc_status(status: &Status) -> rpc::Status {
    let exception = status
        .metadata()
        .get(EXCEPTION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let details = match exception {
        STREAM_DELETED => {
            let stream = status
                .metadata()
                .get("stream-name")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            any(
                "StreamDeleted",
                shared::StreamDeleted {
                    stream_identifier: Some(crate::grpc::convert::stream_identifier(stream)),
                },
            )
        }
        ACCESS_DENIED => any("AccessDenied", shared::AccessDenied {}),
        MAXIMUM_APPEND_SIZE_EXCEEDED => {
            let max = status
                .metadata()
                .get("maximum-append-size")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            any(
                "MaximumAppendSizeExceeded",
                shared::MaximumAppendSizeExceeded {
                    max_append_size: max,
                },
            )
        }
        _ if status.code() == Code::InvalidArgument => any(
            "BadRequest",
            shared::BadRequest {
                message: status.message().to_owned(),
            },
        ),
        _ => any("Unknown", shared::Unknown {}),
    };
    rpc::Status {
        code: status.code() as i32,
        message: status.message().to_owned(),
        details: Some(details),
    }
}

/// A failed concurrency check as the status-with-details of a batch.
fn wrong_expected_version(
    stream: &str,
    expected: ExpectedRevision,
    actual: CurrentRevision,
) -> rpc::Status {
    use shared::wrong_expected_version::{
        CurrentStreamRevisionOption as Current, ExpectedStreamPositionOption as Expected,
    };
    let status = crate::grpc::status::wrong_expected_version(stream, expected, actual);
    let detail = shared::WrongExpectedVersion {
        current_stream_revision_option: Some(match actual {
            CurrentRevision::Revision(r) => Current::CurrentStreamRevision(r),
            CurrentRevision::NoStream => Current::CurrentNoStream(()),
        }),
        expected_stream_position_option: Some(match expected {
            ExpectedRevision::Exact(n) => Expected::ExpectedStreamPosition(n),
            ExpectedRevision::Any => Expected::ExpectedAny(()),
            ExpectedRevision::StreamExists => Expected::ExpectedStreamExists(()),
            ExpectedRevision::NoStream => Expected::ExpectedNoStream(()),
        }),
    };
    rpc::Status {
        code: status.code() as i32,
        message: status.message().to_owned(),
        details: Some(any("WrongExpectedVersion", detail)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    #[test]
    fn wrong_expected_version_detail_decodes() {
        let s = wrong_expected_version(
            "s",
            ExpectedRevision::Exact(1),
            CurrentRevision::Revision(4),
        );
        assert_eq!(s.code, Code::FailedPrecondition as i32);
        let any = s.details.unwrap();
        assert!(any
            .type_url
            .ends_with("event_store.client.WrongExpectedVersion"));
        let detail = shared::WrongExpectedVersion::decode(any.value.as_slice()).unwrap();
        assert!(matches!(
            detail.current_stream_revision_option,
            Some(
                shared::wrong_expected_version::CurrentStreamRevisionOption::CurrentStreamRevision(
                    4
                )
            )
        ));
    }
}
