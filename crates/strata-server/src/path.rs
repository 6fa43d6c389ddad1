//! Path parameters (`{stream}`, `{group}`, `{name}`, ...) of the route table, percent-decoded,
//! and the extractors the handlers take them with ([`StreamPath`], [`EventPath`],
//! [`GroupPath`], [`ProjectionName`]). A path that does not decode (bad percent-encoding such
//! as `%zz` or a lone `%`, not UTF-8) is a 400 `invalid_request`: a name is never taken
//! literally from a path that is not valid percent-encoding.

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;

use crate::error::{Error, Result};
use crate::groups::settings::check_group_name;
use crate::stream_name;

/// The `{stream}` path parameter, percent-decoded. Not checked: each handler checks it as a
/// name to read or to write ([`stream_name`]), after the request's other checks in its order.
pub(crate) struct StreamPath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for StreamPath {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self> {
        Ok(StreamPath(param(parts, state, "stream").await?))
    }
}

/// The `{stream}` and `{revision}` path parameters of `GET /streams/{stream}/{revision}`, as
/// given: the handler checks the name and parses the revision after the authorization check.
pub(crate) struct EventPath {
    pub stream: String,
    pub revision: String,
}

impl<S: Send + Sync> FromRequestParts<S> for EventPath {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self> {
        let params = params(parts, state).await?;
        Ok(EventPath {
            stream: take(&params, "stream")?,
            revision: take(&params, "revision")?,
        })
    }
}

/// The `{group}` path parameter, percent-decoded and checked as a group name.
/// The `{id}` of `/events/{id}/...` (checked as a UUID by the handler).
pub(crate) struct EventIdPath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for EventIdPath {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self> {
        Ok(EventIdPath(param(parts, state, "id").await?))
    }
}

pub(crate) struct GroupPath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for GroupPath {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self> {
        checked_param(parts, state, "group", check_group_name)
            .await
            .map(GroupPath)
    }
}

/// The `{name}` path parameter of `/projections/{name}...`, percent-decoded and checked: 1–255
/// bytes of UTF-8, no control characters, not starting with `$`.
pub(crate) struct ProjectionName(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ProjectionName {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self> {
        checked_param(parts, state, "name", check_projection_name)
            .await
            .map(ProjectionName)
    }
}

/// A projection name: what every name of the API shares, and no leading `$`.
pub(crate) fn check_projection_name(name: &str) -> Result<()> {
    stream_name::check_name("projection", name)?;
    if name.starts_with('$') {
        return Err(Error::invalid(format!(
            "projection names must not start with $: {name:?}"
        )));
    }
    Ok(())
}

/// Every path parameter of the matched route, percent-decoded. 400 when the path holds a `%`
/// not followed by two hex digits (a decoder would pass it through literally) or when a
/// parameter does not decode to UTF-8.
pub(crate) async fn params<S: Send + Sync>(
    parts: &mut Parts,
    state: &S,
) -> Result<Vec<(String, String)>> {
    check_percent_encoding(parts.uri.path())?;
    Path::<Vec<(String, String)>>::from_request_parts(parts, state)
        .await
        .map(|Path(p)| p)
        .map_err(|e| Error::invalid(format!("bad path: {e}")))
}

/// 400 unless every `%` in `path` starts a `%XX` escape with two hex digits.
fn check_percent_encoding(path: &str) -> Result<()> {
    let bytes = path.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'%'
            && !(bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
        {
            let end = (i + 3).min(bytes.len());
            return Err(Error::invalid(format!(
                "bad path: {:?} is not a percent-encoded byte (write % as %25)",
                String::from_utf8_lossy(&bytes[i..end])
            )));
        }
    }
    Ok(())
}

/// The path parameter `key`; a route without it is a bug of the route table (500).
pub(crate) fn take(params: &[(String, String)], key: &str) -> Result<String> {
    params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .ok_or_else(|| Error::Internal(format!("route has no {{{key}}} parameter")))
}

/// [`params`] then [`take`]: the one parameter `key` of the matched route.
pub(crate) async fn param<S: Send + Sync>(
    parts: &mut Parts,
    state: &S,
    key: &str,
) -> Result<String> {
    take(&params(parts, state).await?, key)
}

/// [`param`], then `check` on it: the one parameter `key`, refused unless `check` passes.
async fn checked_param<S: Send + Sync>(
    parts: &mut Parts,
    state: &S,
    key: &str,
    check: fn(&str) -> Result<()>,
) -> Result<String> {
    let value = param(parts, state, key).await?;
    check(&value)?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_escapes_need_two_hex_digits() {
        for ok in [
            "/streams/a",
            "/streams/a%25b",
            "/streams/%C3%A9",
            "/x/%2f/%2F",
        ] {
            assert!(check_percent_encoding(ok).is_ok(), "{ok}");
        }
        for bad in [
            "/streams/%zz",
            "/streams/%",
            "/streams/a%2",
            "/streams/%g0/1",
            "/%%41",
        ] {
            assert!(
                matches!(check_percent_encoding(bad), Err(Error::InvalidRequest(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn projection_names() {
        assert!(check_projection_name("order-totals").is_ok());
        assert!(check_projection_name(&"a".repeat(255)).is_ok());
        assert!(check_projection_name(&"a".repeat(256)).is_err());
        assert!(check_projection_name("").is_err());
        assert!(check_projection_name("$system").is_err());
        assert!(check_projection_name("a\tb").is_err());
    }
}
