//! Credentials of gRPC calls. When auth is on (at least one token configured, [`Auth`]), a call
//! needs one of:
//!
//! - `authorization: Bearer <token>`: the token, as for the HTTP API;
//! - `authorization: Basic base64(<user>:<password>)`, what the KurrentDB clients send for the
//!   `user:password@` of a connection string: the tokens file is looked up for the token
//!   `<user>:<password>` first (a line `admin:changeit admin` lets the clients' default
//!   credentials in as admin), then for the token `<password>` alone (any user name with a
//!   token as the password).
//!
//! Missing or unknown credentials: `UNAUTHENTICATED`. The principal found is put in the
//! request's extensions by the router ([`authenticate`]); services take it with
//! [`principal`] and check an action with [`authorize`] (`PERMISSION_DENIED`,
//! `access-denied`). Gossip and ServerFeatures are open, like `/health`: clients call them
//! before anything else to pick a node and its features.

use axum::http::{header, HeaderMap};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use tonic::Status;

use crate::auth::{Action, Auth, Principal};
use crate::error::Error;
use crate::grpc::status::{from_error, with_metadata, EXCEPTION, NOT_AUTHENTICATED};

/// The principal of a call with these `headers`: unrestricted when auth is off, else the one
/// of its credentials (module docs), or `UNAUTHENTICATED`.
pub(crate) fn authenticate(auth: &Auth, headers: &HeaderMap) -> Result<Principal, Status> {
    if !auth.is_enabled() {
        return Ok(Principal::unrestricted());
    }
    let unauthenticated = |message: &str| {
        with_metadata(
            tonic::Code::Unauthenticated,
            message,
            &[(EXCEPTION, NOT_AUTHENTICATED)],
        )
    };
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| {
            unauthenticated(
                "authentication required: a bearer token, or basic credentials whose password is a token",
            )
        })?
        .to_str()
        .map_err(|_| unauthenticated("malformed authorization header"))?;
    let (scheme, credentials) = value
        .split_once(' ')
        .ok_or_else(|| unauthenticated("malformed authorization header"))?;
    let credentials = credentials.trim();
    let found = if scheme.eq_ignore_ascii_case("bearer") {
        auth.lookup(credentials).cloned()
    } else if scheme.eq_ignore_ascii_case("basic") {
        let decoded = BASE64
            .decode(credentials)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(|| unauthenticated("malformed basic credentials"))?;
        let Some((_, password)) = decoded.split_once(':') else {
            return Err(unauthenticated(
                "basic credentials must be <user>:<password>",
            ));
        };
        auth.lookup(&decoded)
            .or_else(|| {
                (!password.is_empty())
                    .then(|| auth.lookup(password))
                    .flatten()
            })
            .cloned()
    } else {
        return Err(unauthenticated(
            "expected authorization: Bearer <token> or Basic <user:password>",
        ));
    };
    found.ok_or_else(|| unauthenticated("unknown credentials"))
}

/// The principal the router attached to `request` (always there for a call that got past the
/// router).
pub(crate) fn principal<T>(request: &tonic::Request<T>) -> Result<Principal, Status> {
    request
        .extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| Status::internal("the call was not authenticated"))
}

/// `Ok` when `principal` may do `action`, else `PERMISSION_DENIED` (`access-denied`).
pub(crate) fn authorize(principal: &Principal, action: Action<'_>) -> Result<(), Status> {
    principal
        .authorize(action)
        .map_err(|e: Error| from_error(e, None, 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, value.parse().unwrap());
        h
    }

    #[test]
    fn bearer_and_basic_credentials() {
        let mut auth = Auth::none();
        assert!(authenticate(&auth, &HeaderMap::new()).is_ok());
        auth.add_token("secret", Role::Read, Vec::new());
        auth.add_token("admin:changeit", Role::Admin, Vec::new());
        assert_eq!(
            authenticate(&auth, &HeaderMap::new()).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        assert!(authenticate(&auth, &headers("Bearer secret")).is_ok());
        assert!(authenticate(&auth, &headers("Bearer nope")).is_err());
        let basic = |s: &str| headers(&format!("Basic {}", BASE64.encode(s)));
        // The password is a token.
        let p = authenticate(&auth, &basic("anyone:secret")).unwrap();
        assert!(p.authorize(Action::WriteStream("a")).is_err());
        // The whole `user:password` is a token.
        let p = authenticate(&auth, &basic("admin:changeit")).unwrap();
        assert!(p.authorize(Action::HardDelete("a")).is_ok());
        assert!(authenticate(&auth, &basic("admin:wrong")).is_err());
        assert!(authenticate(&auth, &basic("secret")).is_err());
        assert!(authenticate(&auth, &headers("Digest x")).is_err());
    }
}
