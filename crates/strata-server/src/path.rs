//! Path parameters (`{stream}`, `{group}`, `{name}`, ...) of the route table, percent-decoded.
//! A path that does not decode (bad percent-encoding, not UTF-8) is a 400 `invalid_request`.

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;

use crate::error::{Error, Result};

/// Every path parameter of the matched route, percent-decoded.
pub(crate) async fn params<S: Send + Sync>(
    parts: &mut Parts,
    state: &S,
) -> Result<Vec<(String, String)>> {
    Path::<Vec<(String, String)>>::from_request_parts(parts, state)
        .await
        .map(|Path(p)| p)
        .map_err(|e| Error::invalid(format!("bad path: {e}")))
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
