//! Consumer groups: persistent subscriptions with competing consumers and at-least-once
//! delivery (docs/http-api.md, "Consumer groups").
//!
//! | module | what |
//! |---|---|
//! | `settings` | the `PUT` body: source, start, ack timeout, max deliveries, ordering; group names |
//! | `ack_id` | opaque ack ids: group incarnation, event cursor, delivery |
//! | `dispatcher` | the pure state machine of one group's bounded window (property-tested) |
//! | `durable` | the group state in reserved `$`-streams: registry, checkpoints, parked events |
//! | `manager` | [`Groups`]: live groups, their feeder/timer/checkpointer tasks, every operation |
//! | `http` | the `/groups/...` handlers |
//!
//! A group's *cursor* is the stream revision for a stream source and the log position for
//! `$all` and category sources; its checkpoint is the lowest cursor not yet done.

pub(crate) mod ack_id;
pub(crate) mod dispatcher;
pub(crate) mod durable;
pub(crate) mod http;
mod manager;
pub(crate) mod settings;

pub(crate) use manager::{Group, Message};
pub use manager::{GroupOptions, Groups};
