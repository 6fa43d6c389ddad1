//! `event_store.client.streams.Streams`: reads and subscriptions (`read`, `subscribe`),
//! appends (`append`, `batch`), deletes and tombstones (`delete`), and the `$$<stream>`
//! metadata streams the clients read and write (`metadata`).

mod append;
mod batch;
mod delete;
mod filter;
mod metadata;
mod read;
mod subscribe;

use tonic::{Request, Response, Status, Streaming};

use crate::app::App;
use crate::grpc::channel::ChannelStream;
use crate::grpc::proto::event_store::client::streams::streams_server::{Streams, StreamsServer};
use crate::grpc::proto::event_store::client::streams::{
    AppendReq, AppendResp, BatchAppendReq, BatchAppendResp, DeleteReq, DeleteResp, ReadReq,
    ReadResp, TombstoneReq, TombstoneResp,
};

/// The Streams service.
pub(crate) struct StreamsService {
    app: App,
}

/// The generated server around [`StreamsService`], taking messages up to the HTTP API's body
/// limit (an append's events arrive one message each; BatchAppend's in chunks).
pub(crate) fn server(app: &App) -> StreamsServer<StreamsService> {
    let max = app.limits().max_body_bytes.saturating_add(64 * 1024);
    StreamsServer::new(StreamsService { app: app.clone() })
        .max_decoding_message_size(max)
        .max_encoding_message_size(max)
}

/// The `expected_stream_revision` oneof of Append, Delete and Tombstone (all three have the
/// same shape), as Strata's expectation; absent means `any`.
macro_rules! expected_revision {
    ($option:expr, $ty:path) => {{
        use $ty as E;
        match $option {
            Some(E::Revision(n)) => strata_store::ExpectedRevision::Exact(n),
            Some(E::NoStream(_)) => strata_store::ExpectedRevision::NoStream,
            Some(E::StreamExists(_)) => strata_store::ExpectedRevision::StreamExists,
            Some(E::Any(_)) | None => strata_store::ExpectedRevision::Any,
        }
    }};
}
pub(crate) use expected_revision;

#[tonic::async_trait]
impl Streams for StreamsService {
    type ReadStream = ChannelStream<ReadResp>;

    async fn read(&self, request: Request<ReadReq>) -> Result<Response<Self::ReadStream>, Status> {
        read::read(&self.app, request).await.map(Response::new)
    }

    async fn append(
        &self,
        request: Request<Streaming<AppendReq>>,
    ) -> Result<Response<AppendResp>, Status> {
        append::append(&self.app, request).await.map(Response::new)
    }

    async fn delete(&self, request: Request<DeleteReq>) -> Result<Response<DeleteResp>, Status> {
        delete::delete(&self.app, request).await.map(Response::new)
    }

    async fn tombstone(
        &self,
        request: Request<TombstoneReq>,
    ) -> Result<Response<TombstoneResp>, Status> {
        delete::tombstone(&self.app, request)
            .await
            .map(Response::new)
    }

    type BatchAppendStream = ChannelStream<BatchAppendResp>;

    async fn batch_append(
        &self,
        request: Request<Streaming<BatchAppendReq>>,
    ) -> Result<Response<Self::BatchAppendStream>, Status> {
        batch::batch_append(&self.app, request).map(Response::new)
    }
}
