//! Strata's projection runtime (skeleton: the public API; the engine follows).

#![deny(unsafe_op_in_unsafe_fn)]

mod error;
mod limits;
mod projection;

pub use error::JsError;
pub use limits::JsLimits;
pub use projection::JsProjection;
