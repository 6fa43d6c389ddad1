//! `strata projection ...`: manage the server's JavaScript projections over HTTP
//! (`/projections/...` of `docs/http-api.md`; guide in `docs/projections.md`).
//!
//! Output is line-oriented like the other client commands: the server's JSON answer on one
//! line on stdout (`list`: one projection per line; `state`: the state JSON), errors on stderr
//! with exit code 1. A script the server refuses (a syntax error) is reported compiler-style,
//! `FILE:LINE:COLUMN: message`, with the offending source line and a caret under the column.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use percent_encoding::utf8_percent_encode;
use ureq::http::Response;
use ureq::Body;

use crate::cli::ClientArgs;
use crate::client::{print_lines, Client, MAX_BODY, UNRESERVED};
use crate::error::{Error, Result};

/// The projection subcommands, one per `/projections` endpoint.
#[derive(Debug, Subcommand)]
pub enum ProjectionCommand {
    /// Create a projection from a JavaScript file, or replace its source (`PUT`). A script
    /// with a syntax error is refused with its line and column.
    Create {
        #[command(flatten)]
        client: ClientArgs,
        /// The projection's name.
        name: String,
        /// The JavaScript source file; `-` reads it from stdin.
        file: PathBuf,
    },
    /// List every projection with its status, position and lag (one JSON per line).
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// One projection's status, position, lag and error.
    Show {
        #[command(flatten)]
        client: ClientArgs,
        /// The projection's name.
        name: String,
    },
    /// A projection's state (JSON).
    State {
        #[command(flatten)]
        client: ClientArgs,
        /// The projection's name.
        name: String,
        /// The partition of a partitioned projection (`partitionBy` key or stream name with
        /// `foreachStream`).
        #[arg(long)]
        partition: Option<String>,
    },
    /// Drop the state and checkpoint and run the projection again from the start.
    Reset {
        #[command(flatten)]
        client: ClientArgs,
        /// The projection's name.
        name: String,
    },
    /// Stop a running projection (it keeps its state and checkpoint).
    Stop {
        #[command(flatten)]
        client: ClientArgs,
        /// The projection's name.
        name: String,
    },
    /// Start a stopped or faulted projection again, from its checkpoint.
    Start {
        #[command(flatten)]
        client: ClientArgs,
        /// The projection's name.
        name: String,
    },
    /// Delete a projection, its state and its checkpoint (events it emitted stay).
    Delete {
        #[command(flatten)]
        client: ClientArgs,
        /// The projection's name.
        name: String,
    },
}

/// Runs one `strata projection` subcommand.
pub fn run(command: ProjectionCommand) -> Result<ExitCode> {
    match command {
        ProjectionCommand::Create { client, name, file } => create(&client, &name, &file),
        ProjectionCommand::List { client } => list(&client),
        ProjectionCommand::Show { client, name } => {
            let client = Client::new(&client)?;
            let response = send(&client, "GET", &path(&name, ""), &[])?;
            print_body(response)
        }
        ProjectionCommand::State {
            client,
            name,
            partition,
        } => {
            let client = Client::new(&client)?;
            let query: Vec<(&str, &str)> = partition
                .as_deref()
                .map(|p| vec![("partition", p)])
                .unwrap_or_default();
            let response = send(&client, "GET", &path(&name, "/state"), &query)?;
            print_body(response)
        }
        ProjectionCommand::Reset { client, name } => action(&client, &name, "reset"),
        ProjectionCommand::Stop { client, name } => action(&client, &name, "stop"),
        ProjectionCommand::Start { client, name } => action(&client, &name, "start"),
        ProjectionCommand::Delete { client, name } => {
            let client = Client::new(&client)?;
            let response = send(&client, "DELETE", &path(&name, ""), &[])?;
            print_body(response)
        }
    }
}

/// `/projections/{name}{suffix}` with the name percent-encoded as one path segment.
fn path(name: &str, suffix: &str) -> String {
    format!(
        "/projections/{}{suffix}",
        utf8_percent_encode(name, UNRESERVED)
    )
}

/// Sends a request; `Ok` only for a 2xx answer, else the API error as [`Error::Http`].
fn send(
    client: &Client,
    method: &str,
    path: &str,
    query: &[(&str, &str)],
) -> Result<Response<Body>> {
    let response = raw(client, method, path, query, None)?;
    if response.status().is_success() {
        return Ok(response);
    }
    let status = response.status().as_u16();
    let error = ApiError::read(response);
    Err(Error::Http {
        status,
        message: error.describe(),
    })
}

/// Sends a request and returns the answer whatever its status.
fn raw(
    client: &Client,
    method: &str,
    path: &str,
    query: &[(&str, &str)],
    script: Option<String>,
) -> Result<Response<Body>> {
    let url = client.url(path, query);
    let response = match (method, script) {
        ("PUT", Some(source)) => client
            .authorized(
                client
                    .agent
                    .put(&url)
                    .header("Content-Type", "application/javascript"),
            )
            .send(source)?,
        ("POST", _) => client.authorized(client.agent.post(&url)).send_empty()?,
        ("DELETE", _) => client.authorized(client.agent.delete(&url)).call()?,
        _ => client
            .authorized(client.agent.get(&url).header("Accept", "application/json"))
            .call()?,
    };
    Ok(response)
}

/// Reads the whole body as text (bounded).
fn body_text(mut response: Response<Body>) -> Result<String> {
    Ok(response
        .body_mut()
        .with_config()
        .limit(MAX_BODY)
        .read_to_string()?)
}

/// Prints the body on one line (nothing for an empty body).
fn print_body(response: Response<Body>) -> Result<ExitCode> {
    let text = body_text(response)?;
    let text = one_line(&text);
    if !text.is_empty() {
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        writeln!(out, "{text}")?;
        out.flush()?;
    }
    Ok(ExitCode::SUCCESS)
}

/// JSON text on one line: line breaks in JSON are insignificant whitespace.
fn one_line(json: &str) -> String {
    json.trim().replace(['\n', '\r'], " ")
}

/// `POST /projections/{name}/{verb}`.
fn action(client: &ClientArgs, name: &str, verb: &str) -> Result<ExitCode> {
    let client = Client::new(client)?;
    let response = send(&client, "POST", &path(name, &format!("/{verb}")), &[])?;
    print_body(response)
}

/// `GET /projections`: one projection JSON per line, whether the server answers with an array
/// or with an object holding one (`{"projections": [...]}`).
fn list(client: &ClientArgs) -> Result<ExitCode> {
    let client = Client::new(client)?;
    let text = body_text(send(&client, "GET", "/projections", &[])?)?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::Usage(format!("unexpected response to GET /projections: {e}")))?;
    let items = match &value {
        serde_json::Value::Array(items) => items.as_slice(),
        serde_json::Value::Object(map) => match map.get("projections") {
            Some(serde_json::Value::Array(items)) => items.as_slice(),
            _ => std::slice::from_ref(&value),
        },
        _ => std::slice::from_ref(&value),
    };
    print_lines(items)
}

/// `PUT /projections/{name}` with the file's source. A refused script is reported with its
/// position in the file.
fn create(client: &ClientArgs, name: &str, file: &std::path::Path) -> Result<ExitCode> {
    let (source, shown) = if file.as_os_str() == "-" {
        if std::io::stdin().is_terminal() {
            return Err(Error::Usage(
                "FILE is `-`: pipe the JavaScript source on stdin".into(),
            ));
        }
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        (s, "<stdin>".to_owned())
    } else {
        let source = std::fs::read_to_string(file).map_err(|e| {
            Error::Io(std::io::Error::new(
                e.kind(),
                format!("reading {}: {e}", file.display()),
            ))
        })?;
        (source, file.display().to_string())
    };
    let client = Client::new(client)?;
    let response = raw(&client, "PUT", &path(name, ""), &[], Some(source.clone()))?;
    let status = response.status().as_u16();
    if (200..300).contains(&status) {
        return print_body(response);
    }
    let error = ApiError::read(response);
    if status == 400 && error.line.is_some() {
        return Err(Error::Script {
            location: format!(
                "{shown}:{}{}",
                error.line.unwrap_or_default(),
                error.column.map(|c| format!(":{c}")).unwrap_or_default()
            ),
            message: error.message.clone().unwrap_or_else(|| error.describe()),
            excerpt: excerpt(&source, error.line, error.column),
        });
    }
    Err(Error::Http {
        status,
        message: error.describe(),
    })
}

/// The 1-based `line` of `source` prefixed with its number, and a caret under the 1-based
/// `column` when known; empty when the line does not exist.
fn excerpt(source: &str, line: Option<u32>, column: Option<u32>) -> String {
    let Some(n) = line else {
        return String::new();
    };
    let Some(text) = source.lines().nth((n as usize).saturating_sub(1)) else {
        return String::new();
    };
    let gutter = format!("{n:>4} | ");
    let mut out = format!("{gutter}{text}");
    if let Some(c) = column.filter(|&c| c >= 1) {
        // Tabs keep their width in the caret line so the caret lands under the column.
        let pad: String = text
            .chars()
            .take(c as usize - 1)
            .map(|ch| if ch == '\t' { '\t' } else { ' ' })
            .collect();
        out.push_str(&format!("\n{}{pad}^", " ".repeat(gutter.len())));
    }
    out
}

/// An API error body: `{"error", "message"}` plus `line` / `column` for a refused script.
/// Anything else (not JSON) is kept as raw text.
#[derive(Debug, Default)]
struct ApiError {
    code: Option<String>,
    message: Option<String>,
    line: Option<u32>,
    column: Option<u32>,
    raw: String,
}

impl ApiError {
    fn read(response: Response<Body>) -> ApiError {
        ApiError::parse(&body_text(response).unwrap_or_default())
    }

    fn parse(text: &str) -> ApiError {
        let value: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
        let number = |k: &str| {
            value
                .get(k)
                .and_then(serde_json::Value::as_u64)
                .and_then(|n| u32::try_from(n).ok())
        };
        let string = |k: &str| value.get(k).and_then(|v| v.as_str()).map(str::to_owned);
        ApiError {
            code: string("error"),
            message: string("message"),
            line: number("line"),
            column: number("column"),
            raw: text.trim().to_owned(),
        }
    }

    /// `code: message (line L, column C)`, or the raw body.
    fn describe(&self) -> String {
        match (&self.code, &self.message) {
            (Some(code), Some(message)) => {
                let mut s = format!("{code}: {message}");
                if let Some(line) = self.line {
                    s.push_str(&format!(" (line {line}"));
                    if let Some(column) = self.column {
                        s.push_str(&format!(", column {column}"));
                    }
                    s.push(')');
                }
                s
            }
            _ => self.raw.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line() {
        use crate::cli::{Cli, Command};
        use clap::Parser;
        let parse = |args: &[&str]| Cli::try_parse_from(args).map(|c| c.command);
        let Ok(Command::Projection(ProjectionCommand::State {
            name, partition, ..
        })) = parse(&[
            "strata",
            "projection",
            "state",
            "totals",
            "--partition",
            "c-1",
        ])
        else {
            panic!("state")
        };
        assert_eq!(
            (name.as_str(), partition.as_deref()),
            ("totals", Some("c-1"))
        );
        assert!(matches!(
            parse(&["strata", "projection", "create", "n", "f.js", "--server", "http://h:1"]),
            Ok(Command::Projection(ProjectionCommand::Create { client, .. }))
                if client.server == "http://h:1"
        ));
        assert!(parse(&["strata", "projection", "create", "n"]).is_err());
        assert!(parse(&["strata", "projection", "stop"]).is_err());
        assert!(parse(&["strata", "projection", "list"]).is_ok());
        for verb in ["show", "reset", "stop", "start", "delete"] {
            assert!(parse(&["strata", "projection", verb, "n"]).is_ok());
        }
    }

    #[test]
    fn paths_are_encoded() {
        assert_eq!(path("by type", "/state"), "/projections/by%20type/state");
        assert_eq!(path("a/b", ""), "/projections/a%2Fb");
    }

    #[test]
    fn errors_with_a_line() {
        let e = ApiError::parse(
            r#"{"error":"invalid_request","message":"SyntaxError: unexpected token","line":3,"column":5}"#,
        );
        assert_eq!(
            e.describe(),
            "invalid_request: SyntaxError: unexpected token (line 3, column 5)"
        );
        assert_eq!(
            ApiError::parse(r#"{"error":"not_found","message":"no such projection"}"#).describe(),
            "not_found: no such projection"
        );
        assert_eq!(ApiError::parse("oops\n").describe(), "oops");
    }

    #[test]
    fn excerpts_point_at_the_column() {
        let src = "fromAll()\n  .when({ $any: (s, e) => s +* 1 })\n";
        assert_eq!(
            excerpt(src, Some(2), Some(29)),
            "   2 |   .when({ $any: (s, e) => s +* 1 })\n                                   ^"
        );
        assert_eq!(excerpt(src, Some(1), None), "   1 | fromAll()");
        assert_eq!(excerpt(src, Some(9), Some(1)), "");
        assert_eq!(excerpt(src, None, None), "");
    }
}
