//! The scavenging endpoints (docs/http-api.md, "Scavenging"), admin only:
//!
//! | route | answer |
//! |---|---|
//! | `POST /admin/scavenge` (optional body `{"max_mb_per_s": n}`) | 202 and the status object; 409 `conflict` while one runs |
//! | `GET /admin/scavenge` | 200 and the status object of the last or current run |
//! | `DELETE /admin/scavenge` | 200 and the status object once a running one stopped (unchanged when none runs) |

use std::time::Duration;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use serde::Deserialize;

use crate::app::{run_blocking, App};
use crate::auth::{Action, Principal};
use crate::body::{read_json_body, read_limited};
use crate::error::{Error, Result};
use crate::query::Query;
use crate::response::json_value;

/// Largest body of `POST /admin/scavenge`.
const MAX_BODY: usize = 4096;
/// How long `DELETE` waits for the run to stop (it stops between two chunks of a rewrite).
const STOP_PATIENCE: Duration = Duration::from_secs(30);

/// The optional body of `POST /admin/scavenge`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StartBody {
    /// MiB read + written per second; 0 = unthrottled; absent = the server's default.
    #[serde(default)]
    max_mb_per_s: Option<f64>,
}

/// The throttle asked for by a `POST` body, in bytes/s (`Some(0)`: unthrottled), or `None`
/// for the server's default.
fn parse_body(bytes: &[u8]) -> Result<Option<u64>> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let body: StartBody = serde_json::from_slice(bytes)
        .map_err(|e| Error::invalid(format!("invalid scavenge request: {e}")))?;
    match body.max_mb_per_s {
        None => Ok(None),
        Some(mb) if mb.is_finite() && mb >= 0.0 => Ok(Some((mb * f64::from(1u32 << 20)) as u64)),
        Some(mb) => Err(Error::invalid(format!(
            "max_mb_per_s must be a number ≥ 0 (0 = unthrottled), not {mb}"
        ))),
    }
}

/// `POST /admin/scavenge`.
pub(crate) async fn start(
    State(app): State<App>,
    principal: Principal,
    RawQuery(raw_query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    principal.authorize(Action::Admin)?;
    Query::parse(raw_query.as_deref(), &[])?;
    // The body is optional: none (or an empty one) takes the defaults; else it must be JSON.
    let bytes = if headers.contains_key(header::CONTENT_TYPE) {
        read_json_body(&headers, body, MAX_BODY).await?
    } else {
        let bytes = read_limited(body, MAX_BODY, || {
            Error::PayloadTooLarge(format!("the request body is over {MAX_BODY} bytes"))
        })
        .await?;
        if !bytes.is_empty() {
            return Err(Error::UnsupportedMediaType(
                "the body must be JSON: send Content-Type: application/json".into(),
            ));
        }
        bytes
    };
    let rate = parse_body(&bytes)?;
    let status = app.scavenger().start(rate)?;
    Ok(json_value(StatusCode::ACCEPTED, &status))
}

/// `GET /admin/scavenge`.
pub(crate) async fn status(
    State(app): State<App>,
    principal: Principal,
    RawQuery(raw_query): RawQuery,
) -> Result<Response> {
    principal.authorize(Action::Admin)?;
    Query::parse(raw_query.as_deref(), &[])?;
    Ok(json_value(StatusCode::OK, &app.scavenger().status()))
}

/// `DELETE /admin/scavenge`.
pub(crate) async fn stop(
    State(app): State<App>,
    principal: Principal,
    RawQuery(raw_query): RawQuery,
) -> Result<Response> {
    principal.authorize(Action::Admin)?;
    Query::parse(raw_query.as_deref(), &[])?;
    let scavenger = app.scavenger().clone();
    let status = run_blocking("stopping the scavenge", move || {
        scavenger.stop(STOP_PATIENCE)
    })
    .await?;
    Ok(json_value(StatusCode::OK, &status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies() {
        assert_eq!(parse_body(b"").unwrap(), None);
        assert_eq!(parse_body(b" \n").unwrap(), None);
        assert_eq!(parse_body(b"{}").unwrap(), None);
        assert_eq!(parse_body(br#"{"max_mb_per_s": 0}"#).unwrap(), Some(0));
        assert_eq!(
            parse_body(br#"{"max_mb_per_s": 2.5}"#).unwrap(),
            Some(5 << 19)
        );
        assert!(parse_body(br#"{"max_mb_per_s": -1}"#).is_err());
        assert!(parse_body(br#"{"max_mb_per_s": "x"}"#).is_err());
        assert!(parse_body(br#"{"other": 1}"#).is_err());
        assert!(parse_body(b"[").is_err());
    }
}
