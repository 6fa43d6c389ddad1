//! The binary's one error type.

/// What made a command fail.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server failed to start or to shut down cleanly.
    #[error("{0}")]
    Server(#[from] strata_server::Error),
    /// The data directory could not be read (verify).
    #[error("{0}")]
    Store(#[from] strata_store::Error),
    /// The server answered with an API error.
    #[error("server answered {status}: {message}")]
    Http {
        /// HTTP status.
        status: u16,
        /// The API error's code and message, or the raw body.
        message: String,
    },
    /// The server could not be reached, or the connection failed.
    #[error("{0}")]
    Transport(#[from] ureq::Error),
    /// Reading input or writing output failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The command line asks for something impossible.
    #[error("{0}")]
    Usage(String),
}

/// Result alias of the binary.
pub type Result<T, E = Error> = std::result::Result<T, E>;
