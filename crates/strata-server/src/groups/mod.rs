//! Consumer groups: persistent subscriptions with competing consumers and at-least-once
//! delivery (API.md, "Consumer groups").

pub(crate) mod ack_id;
pub(crate) mod dispatcher;
pub(crate) mod durable;
pub(crate) mod http;
mod manager;
pub(crate) mod settings;

pub use manager::{GroupOptions, Groups};
