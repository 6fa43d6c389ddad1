//! Bearer-token authentication and authorisation.
//!
//! Auth is on as soon as one token is configured: every request but `GET /health` then needs
//! `Authorization: Bearer <token>` (missing or unknown: 401 `unauthorized`). A token has a
//! [`Role`] and optionally a list of stream-name prefixes it is limited to (outside them: 403
//! `forbidden`).
//!
//! | role | may |
//! |---|---|
//! | `read` | read streams, `/all`, stream metadata, the stream listing; `/info`, `/metrics`, `/openapi.json`; consumer groups: list, show, poll, ack, nack, list parked events; projections' status and state |
//! | `write` | `read`, plus append, soft-delete, set stream metadata; create, update and delete consumer groups, replay parked events |
//! | `admin` | everything: also hard deletes, `$`-streams and `include_system=true`, managing projections |
//!
//! A prefix-limited token may read `/all` only with a `stream_prefix` inside its prefixes, and
//! list streams only with a `prefix` inside them. For a consumer group the scope is its source:
//! the stream, the category name (`category:order` needs a prefix that `order` starts with), or
//! everything for `$all`. `--auth-token` tokens are `admin` tokens.
//!
//! The tokens file has one token per line: `<token> <role> [<stream-prefix>...]`; blank lines
//! and lines starting with `#` are ignored.

use std::path::Path;
use std::sync::Arc;

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::app::App;
use crate::error::{Error, Result};

/// What a token may do; each role includes the ones before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Reads only.
    Read,
    /// Reads, appends, soft deletes, stream metadata.
    Write,
    /// Everything.
    Admin,
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "read" => Ok(Role::Read),
            "write" => Ok(Role::Write),
            "admin" => Ok(Role::Admin),
            _ => Err(format!("unknown role {s:?}: expected admin, write or read")),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        })
    }
}

/// One configured token.
#[derive(Clone)]
struct TokenEntry {
    token: String,
    principal: Principal,
}

/// The set of accepted tokens. Empty means authentication is off.
#[derive(Clone, Default)]
pub struct Auth {
    tokens: Vec<TokenEntry>,
}

impl std::fmt::Debug for Auth {
    // Never print the tokens themselves.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("tokens", &self.tokens.len())
            .finish()
    }
}

impl Auth {
    /// No tokens: authentication off.
    pub fn none() -> Self {
        Auth::default()
    }

    /// True when at least one token is configured.
    pub fn is_enabled(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// Adds a token with `role`, limited to streams starting with one of `prefixes` (all
    /// streams when empty).
    pub fn add_token(&mut self, token: impl Into<String>, role: Role, prefixes: Vec<String>) {
        self.tokens.push(TokenEntry {
            token: token.into(),
            principal: Principal {
                role,
                prefixes: if prefixes.is_empty() {
                    None
                } else {
                    Some(prefixes.into())
                },
            },
        });
    }

    /// Adds an unrestricted `admin` token (what `--auth-token` gives).
    pub fn add_admin_token(&mut self, token: impl Into<String>) {
        self.add_token(token, Role::Admin, Vec::new());
    }

    /// Adds the tokens of a tokens file (format in the module docs).
    pub fn load_tokens_file(&mut self, path: &Path) -> Result<()> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::TokensFile {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        self.add_tokens_text(&text)
            .map_err(|reason| Error::TokensFile {
                path: path.to_owned(),
                reason,
            })
    }

    /// Adds the tokens of a tokens file's text; the error names the offending line.
    pub fn add_tokens_text(&mut self, text: &str) -> std::result::Result<(), String> {
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut words = line.split_whitespace();
            let (Some(token), Some(role)) = (words.next(), words.next()) else {
                return Err(format!(
                    "line {}: expected `<token> <role> [<stream-prefix>...]`",
                    i + 1
                ));
            };
            let role: Role = role.parse().map_err(|e| format!("line {}: {e}", i + 1))?;
            let prefixes = words.map(str::to_owned).collect();
            self.add_token(token, role, prefixes);
        }
        Ok(())
    }

    /// The principal of `token`, if it is one of ours. Compares every token in constant time.
    pub(crate) fn lookup(&self, token: &str) -> Option<&Principal> {
        let mut found = None;
        for entry in &self.tokens {
            if constant_time_eq(entry.token.as_bytes(), token.as_bytes()) {
                found = Some(&entry.principal);
            }
        }
        found
    }
}

/// Compares two byte strings without an early exit on the first difference.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Who is making a request: the role and stream prefixes of their token (or everything when
/// auth is off). Inserted by the authentication middleware; handlers extract it.
#[derive(Clone, Debug)]
pub struct Principal {
    role: Role,
    prefixes: Option<Arc<[String]>>,
}

/// What a request wants to do, for [`Principal::authorize`].
#[derive(Clone, Copy, Debug)]
pub(crate) enum Action<'a> {
    /// Read a stream, one of its events, or its metadata.
    ReadStream(&'a str),
    /// Append to a stream, soft-delete it, or set its metadata.
    WriteStream(&'a str),
    /// Hard-delete (tombstone) a stream.
    HardDelete(&'a str),
    /// Read `/all` with these filters.
    ReadAll {
        stream_prefix: Option<&'a str>,
        include_system: bool,
    },
    /// List streams with this prefix.
    ListStreams(&'a str),
    /// `/info`, `/metrics`, `/openapi.json`, the group listing.
    ServerInfo,
    /// Read a consumer group's state and consume it (poll, ack, nack, list parked events):
    /// `read`, within the group source's scope (stream, category name, or `""` for `$all`).
    ConsumeGroup(&'a str),
    /// Create, update or delete a consumer group, or replay its parked events: `write`, within
    /// the group source's scope.
    ManageGroup(&'a str),
    /// List projections, read their status and state (they may read any stream: tokens
    /// limited to stream prefixes may not).
    ReadProjections,
    /// Create, update, stop, start, reset, delete projections (admin: a projection reads
    /// every stream and may emit to any user stream).
    ManageProjections,
    /// Server administration: scavenging (start, status, stop).
    Admin,
}

impl Principal {
    /// Full access (auth off).
    pub(crate) fn unrestricted() -> Self {
        Principal {
            role: Role::Admin,
            prefixes: None,
        }
    }

    /// `Ok` when this principal may perform `action`, else 403 `forbidden`.
    pub(crate) fn authorize(&self, action: Action<'_>) -> Result<()> {
        let (needed, stream_scope) = match action {
            Action::ReadStream(s) => (reserved_needs_admin(s, Role::Read), Some(s)),
            Action::WriteStream(s) => (reserved_needs_admin(s, Role::Write), Some(s)),
            Action::HardDelete(s) => (Role::Admin, Some(s)),
            Action::ReadAll {
                stream_prefix,
                include_system,
            } => {
                let role = if include_system {
                    Role::Admin
                } else {
                    Role::Read
                };
                // A prefix-limited token must narrow /all to its prefixes.
                (role, Some(stream_prefix.unwrap_or("")))
            }
            Action::ListStreams(prefix) => (Role::Read, Some(prefix)),
            Action::ServerInfo => (Role::Read, None),
            Action::ConsumeGroup(scope) => (Role::Read, Some(scope)),
            Action::ManageGroup(scope) => (Role::Write, Some(scope)),
            Action::ReadProjections => (Role::Read, Some("")),
            Action::ManageProjections => (Role::Admin, Some("")),
            Action::Admin => (Role::Admin, Some("")),
        };
        if self.role < needed {
            return Err(Error::Forbidden(format!(
                "this token's role ({}) may not do this; it needs {needed}",
                self.role
            )));
        }
        if let (Some(prefixes), Some(scope)) = (&self.prefixes, stream_scope) {
            if !prefixes.iter().any(|p| scope.starts_with(p.as_str())) {
                return Err(Error::Forbidden(format!(
                    "this token is limited to streams starting with {}",
                    prefixes
                        .iter()
                        .map(|p| format!("{p:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        Ok(())
    }
}

/// `$`-streams (the server's bookkeeping) need `admin`.
fn reserved_needs_admin(stream: &str, role: Role) -> Role {
    if stream.starts_with('$') {
        Role::Admin
    } else {
        role
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self> {
        parts
            .extensions
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| Error::Internal("request was not authenticated".into()))
    }
}

/// Authenticates the request (401 when auth is on and the token is missing or unknown),
/// attaches its [`Principal`] and runs the rest. `/health` is always open. Called by the
/// server's one middleware, [`crate::metrics::track`].
pub(crate) async fn authenticate(app: &App, mut req: Request, next: Next) -> Response {
    let auth = app.auth();
    let principal = if !auth.is_enabled() || req.uri().path() == "/health" {
        Principal::unrestricted()
    } else {
        match bearer_token(req.headers()) {
            Ok(token) => match auth.lookup(token) {
                Some(p) => p.clone(),
                None => return Error::Unauthorized("unknown bearer token".into()).into_response(),
            },
            Err(e) => return e.into_response(),
        }
    };
    req.extensions_mut().insert(principal);
    next.run(req).await
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer_token(headers: &HeaderMap) -> Result<&str> {
    let value = headers.get(header::AUTHORIZATION).ok_or_else(|| {
        Error::Unauthorized("authentication required: send Authorization: Bearer <token>".into())
    })?;
    let value = value
        .to_str()
        .map_err(|_| Error::Unauthorized("malformed Authorization header".into()))?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or_else(|| Error::Unauthorized("expected Authorization: Bearer <token>".into()))?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(Error::Unauthorized(
            "expected Authorization: Bearer <token>".into(),
        ));
    }
    Ok(token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tokens_file() {
        let mut auth = Auth::none();
        auth.add_tokens_text(
            "# comment\n\nadm admin\nw write order- invoice-\n  r read order-  \n",
        )
        .unwrap();
        assert!(auth.is_enabled());
        assert_eq!(auth.lookup("adm").map(|p| p.role), Some(Role::Admin));
        let w = auth.lookup("w").unwrap();
        assert_eq!(w.role, Role::Write);
        assert!(w.authorize(Action::WriteStream("order-1")).is_ok());
        assert!(w.authorize(Action::WriteStream("invoice-1")).is_ok());
        assert!(w.authorize(Action::WriteStream("user-1")).is_err());
        assert!(w.authorize(Action::HardDelete("order-1")).is_err());
        assert!(auth.lookup("nope").is_none());
        assert!(auth.lookup("").is_none());
    }

    #[test]
    fn rejects_bad_lines() {
        let mut auth = Auth::none();
        assert!(auth
            .add_tokens_text("lonely\n")
            .unwrap_err()
            .contains("line 1"));
        assert!(auth
            .add_tokens_text("t superuser\n")
            .unwrap_err()
            .contains("superuser"));
    }

    #[test]
    fn roles_nest() {
        let read = Principal {
            role: Role::Read,
            prefixes: None,
        };
        assert!(read.authorize(Action::ReadStream("a")).is_ok());
        assert!(read.authorize(Action::WriteStream("a")).is_err());
        assert!(read.authorize(Action::ReadStream("$$a")).is_err());
        assert!(read
            .authorize(Action::ReadAll {
                stream_prefix: None,
                include_system: true
            })
            .is_err());
        assert!(read.authorize(Action::ServerInfo).is_ok());
        let admin = Principal::unrestricted();
        assert!(admin.authorize(Action::HardDelete("x")).is_ok());
        assert!(admin.authorize(Action::ReadStream("$$x")).is_ok());
    }

    #[test]
    fn prefix_limited_tokens_must_narrow_all_and_listing() {
        let p = Principal {
            role: Role::Read,
            prefixes: Some(vec!["order-".to_owned()].into()),
        };
        let all = |prefix| Action::ReadAll {
            stream_prefix: prefix,
            include_system: false,
        };
        assert!(p.authorize(all(None)).is_err());
        assert!(p.authorize(all(Some("order-4"))).is_ok());
        assert!(p.authorize(all(Some("ord"))).is_err());
        assert!(p.authorize(Action::ListStreams("")).is_err());
        assert!(p.authorize(Action::ListStreams("order-")).is_ok());
    }

    #[test]
    fn bearer_parsing() {
        let mut h = HeaderMap::new();
        assert!(bearer_token(&h).is_err());
        h.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(bearer_token(&h).unwrap(), "abc");
        h.insert(header::AUTHORIZATION, "bearer  abc ".parse().unwrap());
        assert_eq!(bearer_token(&h).unwrap(), "abc");
        h.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert!(bearer_token(&h).is_err());
    }
}
