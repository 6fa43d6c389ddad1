//! Strata's projection runtime: user JavaScript folds in a sandboxed, embedded QuickJS engine.

#![deny(unsafe_op_in_unsafe_fn)]

mod definition;
mod emit;
mod error;
mod event;
mod limits;
mod projection;
mod sandbox;
mod timestamp;

pub use error::JsError;
pub use limits::JsLimits;
pub use projection::JsProjection;
