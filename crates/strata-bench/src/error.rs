//! The crate's one error type.

/// What made a benchmark run fail.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with an unexpected status (an API error).
    #[error("server answered {status}: {message}")]
    Http {
        /// HTTP status.
        status: u16,
        /// The API error's code and message, or the raw body.
        message: String,
    },
    /// The server could not be reached, the connection failed, or an answer was malformed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The command line asks for something impossible.
    #[error("{0}")]
    Usage(String),
}

/// Result alias of the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
