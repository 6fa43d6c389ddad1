//! The crate's error type.

use std::time::Duration;

use strata_store::projection::ProjectionError;

/// A failure to compile or run a projection.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JsError {
    /// Syntax error: the engine's message and the 1-based line (and column when known) in the
    /// user's source.
    #[error("syntax error: {message}")]
    Syntax {
        message: String,
        line: Option<u32>,
        column: Option<u32>,
    },
    /// The script ran but did not define a projection correctly (no `fromX(...).when(...)`,
    /// bad arguments).
    #[error("{message}")]
    Definition { message: String },
    /// User code threw (or broke a rule such as an invalid `emit`).
    #[error("{message}")]
    Runtime {
        message: String,
        stack: Option<String>,
    },
    /// One call into user code ran longer than the limit.
    #[error("the projection ran longer than its limit of {limit:?}")]
    Timeout { limit: Duration },
    /// The sandbox's memory limit was reached.
    #[error("the projection ran out of memory")]
    OutOfMemory,
}

impl From<JsError> for ProjectionError {
    fn from(e: JsError) -> Self {
        match e {
            JsError::Runtime { message, stack } => ProjectionError { message, stack },
            other => ProjectionError {
                message: other.to_string(),
                stack: None,
            },
        }
    }
}
