//! The crate's error type.

use std::time::Duration;

use strata_store::projection::ProjectionError;

/// A failure to compile or run a projection.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JsError {
    /// Syntax error: the engine's message and the 1-based line (and column when known) in the
    /// user's source.
    #[error("SyntaxError: {message}{}", position(*line, *column))]
    Syntax {
        /// The engine's message, e.g. `unexpected token in expression: ';'`.
        message: String,
        /// 1-based line in the user's source.
        line: Option<u32>,
        /// 1-based column in that line.
        column: Option<u32>,
    },
    /// The script ran but did not define a projection correctly (no `fromX(...).when(...)`,
    /// bad arguments).
    #[error("{message}")]
    Definition {
        /// What is wrong, e.g. `fromStream() needs exactly one stream name`.
        message: String,
    },
    /// User code threw (or broke a rule such as an invalid `emit`).
    #[error("{message}")]
    Runtime {
        /// `<ErrorName>: <message>` of what was thrown (or the thrown value).
        message: String,
        /// The JS stack, innermost frame first (`    at $any (projection.js:3:20)`).
        stack: Option<String>,
    },
    /// One call into user code ran longer than the limit.
    #[error("the projection's code ran longer than its limit of {limit:?} per call")]
    Timeout {
        /// The limit that was exceeded ([`crate::JsLimits::per_event`]).
        limit: Duration,
    },
    /// The projection's memory limit ([`crate::JsLimits::memory_bytes`]) was reached: by the
    /// runtime's allocations, with the partition keys and the runner's copies of the states
    /// counted against it.
    #[error("the projection ran out of memory (its sandbox's memory limit was reached)")]
    OutOfMemory,
}

fn position(line: Option<u32>, column: Option<u32>) -> String {
    match (line, column) {
        (Some(line), Some(column)) => format!(" (line {line}, column {column})"),
        (Some(line), None) => format!(" (line {line})"),
        _ => String::new(),
    }
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
