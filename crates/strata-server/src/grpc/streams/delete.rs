//! `Streams.Delete` (soft delete: reads answer "not found" until the stream is appended to
//! again, revisions continue) and `Streams.Tombstone` (hard delete: the name can never be
//! written again; reads answer `stream-deleted`), with the expected revision checked as for
//! appends. The position answered is the deletion record's log position.

use strata_store::ExpectedRevision;
use tonic::{Request, Status};

use super::expected_revision;
use crate::app::{run_blocking, App};
use crate::auth::Action;
use crate::grpc::auth::{authorize, principal};
use crate::grpc::convert::stream_name;
use crate::grpc::proto::event_store::client::streams::{
    delete_req, delete_resp, tombstone_req, tombstone_resp, DeleteReq, DeleteResp, TombstoneReq,
    TombstoneResp,
};
use crate::grpc::status;

/// Deletes `stream` (`hard`: tombstone); the deletion record's position.
async fn delete_stream(
    app: &App,
    stream: String,
    expected: ExpectedRevision,
    hard: bool,
) -> Result<u64, Status> {
    let store = app.store().clone();
    let name = stream.clone();
    let done = run_blocking("deleting the stream failed", move || {
        store.delete_stream(&name, expected, hard)
    })
    .await
    .map_err(|e| status::from_error(e, Some(&stream), 0))?;
    match done {
        Ok(result) => Ok(result.position),
        Err(strata_store::Error::WrongExpectedRevision { expected, actual }) => {
            Err(status::wrong_expected_version(&stream, expected, actual))
        }
        Err(e) => Err(status::from_store(app, e, Some(&stream))),
    }
}

/// `Streams.Delete`.
pub(super) async fn delete(app: &App, request: Request<DeleteReq>) -> Result<DeleteResp, Status> {
    let principal = principal(&request)?;
    let options = request
        .into_inner()
        .options
        .ok_or_else(|| Status::invalid_argument("a delete needs options"))?;
    let stream = stream_name(options.stream_identifier.as_ref())?;
    authorize(&principal, Action::WriteStream(&stream))?;
    let expected = expected_revision!(
        options.expected_stream_revision,
        delete_req::options::ExpectedStreamRevision
    );
    let position = delete_stream(app, stream, expected, false).await?;
    Ok(DeleteResp {
        position_option: Some(delete_resp::PositionOption::Position(
            delete_resp::Position {
                commit_position: position,
                prepare_position: position,
            },
        )),
    })
}

/// `Streams.Tombstone`.
pub(super) async fn tombstone(
    app: &App,
    request: Request<TombstoneReq>,
) -> Result<TombstoneResp, Status> {
    let principal = principal(&request)?;
    let options = request
        .into_inner()
        .options
        .ok_or_else(|| Status::invalid_argument("a tombstone needs options"))?;
    let stream = stream_name(options.stream_identifier.as_ref())?;
    authorize(&principal, Action::HardDelete(&stream))?;
    let expected = expected_revision!(
        options.expected_stream_revision,
        tombstone_req::options::ExpectedStreamRevision
    );
    let position = delete_stream(app, stream, expected, true).await?;
    Ok(TombstoneResp {
        position_option: Some(tombstone_resp::PositionOption::Position(
            tombstone_resp::Position {
                commit_position: position,
                prepare_position: position,
            },
        )),
    })
}
