#![allow(dead_code)] // wired to the HTTP API in the next commits
//! Consumer groups: persistent subscriptions with competing consumers and at-least-once
//! delivery (API.md, "Consumer groups").

pub(crate) mod ack_id;
pub(crate) mod dispatcher;
pub(crate) mod settings;
