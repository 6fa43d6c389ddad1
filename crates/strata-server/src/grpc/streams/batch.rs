//! `Streams.BatchAppend`.

use tonic::{Request, Status, Streaming};

use super::ChannelStream;
use crate::app::App;
use crate::grpc::proto::event_store::client::streams::{BatchAppendReq, BatchAppendResp};

/// `Streams.BatchAppend`.
pub(super) fn batch_append(
    _app: &App,
    _request: Request<Streaming<BatchAppendReq>>,
) -> Result<ChannelStream<BatchAppendResp>, Status> {
    Err(Status::unimplemented("BatchAppend is not served yet"))
}
