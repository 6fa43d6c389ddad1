//! Stream names as the API accepts them (docs/http-api.md: 1–255 bytes of UTF-8, no control characters;
//! names starting with `$` are reserved for the server).

use crate::error::{Error, Result};

/// Longest stream name, in bytes.
pub(crate) const MAX_STREAM_NAME_BYTES: usize = 255;

/// Checks what every name of the API shares (streams, consumer groups, projections): 1–255
/// bytes of UTF-8, no control characters. `kind` names the thing in the error message.
pub(crate) fn check_name(kind: &str, name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_STREAM_NAME_BYTES {
        return Err(Error::invalid(format!(
            "{kind} names are 1 to {MAX_STREAM_NAME_BYTES} bytes, this one is {}",
            name.len()
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::invalid(format!(
            "{kind} names must not contain control characters"
        )));
    }
    Ok(())
}

/// Checks a stream name used for reading (reserved `$`-names may be read).
pub(crate) fn check_readable(name: &str) -> Result<()> {
    check_name("stream", name)
}

/// Checks a stream name used for writing (append, delete, metadata): also refuses `$`-names.
pub(crate) fn check_writable(name: &str) -> Result<()> {
    check_readable(name)?;
    if name.starts_with('$') {
        return Err(Error::invalid(format!(
            "stream names starting with $ are reserved for the server: {name:?}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_writable("order-42").is_ok());
        assert!(check_writable("ünïcode/with spaces").is_ok());
        assert!(check_writable("").is_err());
        assert!(check_writable(&"a".repeat(255)).is_ok());
        assert!(check_writable(&"a".repeat(256)).is_err());
        assert!(check_writable("a\nb").is_err());
        assert!(check_writable("a\u{7f}b").is_err());
        assert!(check_writable("$system").is_err());
        assert!(check_readable("$$order-1").is_ok());
    }
}
