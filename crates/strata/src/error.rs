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
    /// The server refused a projection script: `FILE:LINE[:COLUMN]: message`, then the
    /// offending source line with a caret (empty when the line is unknown).
    #[error("{location}: {message}{}", if excerpt.is_empty() { String::new() } else { format!("\n{excerpt}") })]
    Script {
        /// `FILE:LINE` or `FILE:LINE:COLUMN`.
        location: String,
        /// The engine's message.
        message: String,
        /// The source line and a caret under the column.
        excerpt: String,
    },
    /// The command line asks for something impossible.
    #[error("{0}")]
    Usage(String),
}

/// Result alias of the binary.
pub type Result<T, E = Error> = std::result::Result<T, E>;
