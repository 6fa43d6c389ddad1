//! `Streams.Read` with the `subscription` option: catch-up subscriptions.

use tonic::Status;

use super::read::Plan;
use super::ChannelStream;
use crate::app::App;
use crate::auth::Principal;
use crate::grpc::proto::event_store::client::streams::ReadResp;

/// Starts a subscription.
pub(super) fn subscribe(
    _app: &App,
    _principal: &Principal,
    _plan: Plan,
) -> Result<ChannelStream<ReadResp>, Status> {
    Err(Status::unimplemented("subscriptions are not served yet"))
}
