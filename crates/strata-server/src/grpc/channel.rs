//! [`ChannelStream`]: the server-streaming answers of the gRPC services (reads, subscriptions,
//! BatchAppend, persistent subscriptions), fed by a bounded channel.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::mpsc;
use tonic::Status;

/// A server-streaming answer fed by a bounded channel: the producer waits while the client is
/// slow, and stops when the client goes away (its sends fail).
pub(crate) struct ChannelStream<T>(mpsc::Receiver<Result<T, Status>>);

impl<T> ChannelStream<T> {
    /// A channel of `capacity` messages and the stream that drains it.
    pub(crate) fn new(capacity: usize) -> (mpsc::Sender<Result<T, Status>>, ChannelStream<T>) {
        let (tx, rx) = mpsc::channel(capacity);
        (tx, ChannelStream(rx))
    }
}

impl<T> tonic::codegen::tokio_stream::Stream for ChannelStream<T> {
    type Item = Result<T, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}
