//! The client commands: `append`, `read`, `tail`, talking HTTP to a running server.
//!
//! [`Client`] is shared by every client command (`group`, `consume`, `projection` too): plain
//! HTTP for `http://` URLs, HTTPS (rustls, HTTP/1.1) for `https://` ones, verifying the server
//! against the built-in Mozilla roots, or against the CA certificates of `--ca-cert` only.
//!
//! Output is line-oriented: one event JSON per line on stdout (events as the server returns
//! them), errors on stderr with a non-zero exit code.

use std::io::{BufRead, BufReader, IsTerminal, Read, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Deserialize;
use serde_json::value::RawValue;
use ureq::http::Response;
use ureq::Body;

use crate::cli::{AllFilters, AppendArgs, ClientArgs, ReadArgs, TailArgs, Target};
use crate::error::{Error, Result};

/// Characters left as they are in path segments and query values (RFC 3986 unreserved).
pub(crate) const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Largest error or page body read into memory.
pub(crate) const MAX_BODY: u64 = 64 * 1024 * 1024;

/// A connection to the server.
pub(crate) struct Client {
    pub(crate) agent: ureq::Agent,
    base: String,
    pub(crate) token: Option<String>,
}

/// A path segment, percent-encoded (RFC 3986 unreserved bytes kept).
pub(crate) fn segment(s: &str) -> String {
    utf8_percent_encode(s, UNRESERVED).to_string()
}

impl Client {
    /// A client of `args.server`; fails when `--ca-cert` cannot be read or holds no
    /// certificate.
    pub(crate) fn new(args: &ClientArgs) -> Result<Client> {
        let mut tls = ureq::tls::TlsConfig::builder();
        if let Some(path) = &args.ca_cert {
            tls = tls.root_certs(ureq::tls::RootCerts::from(read_ca_certs(path)?));
        }
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .tls_config(tls.build())
            .build();
        Ok(Client {
            agent: ureq::Agent::new_with_config(config),
            base: args.server.trim_end_matches('/').to_owned(),
            token: args.token.clone(),
        })
    }

    pub(crate) fn url(&self, path: &str, query: &[(&str, &str)]) -> String {
        let mut url = format!("{}{path}", self.base);
        for (i, (k, v)) in query.iter().enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            url.push_str(k);
            url.push('=');
            url.push_str(&utf8_percent_encode(v, UNRESERVED).to_string());
        }
        url
    }

    /// `method path?query` with an optional JSON body; the status and the body text of a 2xx
    /// answer, `Err(Http)` with the API error otherwise.
    pub(crate) fn json(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&str>,
    ) -> Result<(u16, String)> {
        let url = self.url(path, query);
        let response = match (method, body) {
            ("GET" | "DELETE", None) => {
                let req = match method {
                    "GET" => self.agent.get(&url),
                    _ => self.agent.delete(&url),
                };
                self.authorized(req.header("Accept", "application/json"))
                    .call()?
            }
            ("POST" | "PUT", _) => {
                let req = match method {
                    "POST" => self.agent.post(&url),
                    _ => self.agent.put(&url),
                };
                let req = self.authorized(req.header("Accept", "application/json"));
                match body {
                    Some(body) => req.header("Content-Type", "application/json").send(body)?,
                    None => req.send_empty()?,
                }
            }
            _ => return Err(Error::Usage(format!("unsupported request {method} {path}"))),
        };
        let status = response.status().as_u16();
        let mut response = check(response)?;
        let text = response
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_string()?;
        Ok((status, text))
    }

    /// `req` with the bearer token, when there is one.
    pub(crate) fn authorized<B>(&self, req: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.token {
            Some(token) => req.header("Authorization", format!("Bearer {token}")),
            None => req,
        }
    }

    fn get(&self, url: &str, accept: &str, last_event_id: Option<&str>) -> Result<Response<Body>> {
        let mut req = self.authorized(self.agent.get(url).header("Accept", accept));
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id);
        }
        Ok(req.call()?)
    }
}

/// The certificates of the PEM file `path` (`--ca-cert`): at least one.
fn read_ca_certs(path: &Path) -> Result<Vec<ureq::tls::Certificate<'static>>> {
    let bad = |what: String| Error::Usage(format!("--ca-cert {}: {what}", path.display()));
    let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        if let ureq::tls::PemItem::Certificate(cert) = item.map_err(|e| bad(e.to_string()))? {
            certs.push(cert);
        }
    }
    if certs.is_empty() {
        return Err(bad(
            "no certificate in it (expected PEM `CERTIFICATE` blocks)".into(),
        ));
    }
    Ok(certs)
}

/// `/streams/{stream}` or `/all`.
fn target_path(target: &Target) -> Result<String> {
    match (&target.stream, target.all) {
        (Some(s), false) => Ok(format!("/streams/{}", utf8_percent_encode(s, UNRESERVED))),
        (None, true) => Ok("/all".into()),
        _ => Err(Error::Usage("give a STREAM or --all".into())),
    }
}

/// `Err(Http)` with the API error for a non-2xx response.
fn check(mut response: Response<Body>) -> Result<Response<Body>> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let text = response
        .body_mut()
        .with_config()
        .limit(MAX_BODY)
        .read_to_string()
        .unwrap_or_default();
    Err(Error::Http {
        status: status.as_u16(),
        message: describe_error(&text),
    })
}

/// `code: message` of an API error body, or the body itself.
fn describe_error(text: &str) -> String {
    #[derive(Deserialize)]
    struct ApiError {
        error: String,
        message: String,
    }
    match serde_json::from_str::<ApiError>(text) {
        Ok(e) => format!("{}: {}", e.error, e.message),
        Err(_) => text.trim().to_owned(),
    }
}

/// JSON text on one line: line breaks in JSON are insignificant whitespace.
pub(crate) fn one_line(json: &str) -> String {
    json.replace(['\n', '\r'], " ")
}

/// Prints `items` on stdout, one a line, and flushes; a success.
pub(crate) fn print_lines(
    items: impl IntoIterator<Item = impl std::fmt::Display>,
) -> Result<ExitCode> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for item in items {
        writeln!(out, "{item}")?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// `strata append`.
pub fn append(args: AppendArgs) -> Result<ExitCode> {
    let client = Client::new(&args.client)?;
    let data = match args.data {
        Some(d) => d,
        None => {
            if std::io::stdin().is_terminal() {
                return Err(Error::Usage(
                    "give the DATA argument or pipe the JSON on stdin".into(),
                ));
            }
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s)?;
            s
        }
    };
    let body = match &args.event_type {
        Some(event_type) => event_body(
            event_type,
            &data,
            args.id.as_deref(),
            args.metadata.as_deref(),
        )?,
        None => data,
    };
    let url = client.url(
        &format!("/streams/{}", utf8_percent_encode(&args.stream, UNRESERVED)),
        &[],
    );
    let mut req = client.authorized(
        client
            .agent
            .post(&url)
            .header("Content-Type", "application/json"),
    );
    if let Some(expected) = &args.expected_revision {
        req = req.header("Expected-Revision", expected);
    }
    let mut response = check(req.send(body)?)?;
    let text = response
        .body_mut()
        .with_config()
        .limit(MAX_BODY)
        .read_to_string()?;
    println!("{}", text.trim());
    Ok(ExitCode::SUCCESS)
}

/// The body of a one-event append: `{"type", "data", "id"?, "metadata"?}` with `data` and
/// `metadata` passed through exactly as typed.
fn event_body(
    event_type: &str,
    data: &str,
    id: Option<&str>,
    metadata: Option<&str>,
) -> Result<String> {
    #[derive(serde::Serialize)]
    struct Event<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        #[serde(rename = "type")]
        event_type: &'a str,
        data: &'a RawValue,
        #[serde(skip_serializing_if = "Option::is_none")]
        metadata: Option<&'a RawValue>,
    }
    let data: &RawValue = serde_json::from_str(data.trim())
        .map_err(|e| Error::Usage(format!("DATA is not valid JSON: {e}")))?;
    let metadata = metadata
        .map(|m| serde_json::from_str::<&RawValue>(m.trim()))
        .transpose()
        .map_err(|e| Error::Usage(format!("--metadata is not valid JSON: {e}")))?;
    serde_json::to_string(&Event {
        id,
        event_type,
        data,
        metadata,
    })
    .map_err(|e| Error::Usage(e.to_string()))
}

fn filter_query<'a>(filters: &'a AllFilters, query: &mut Vec<(&'static str, &'a str)>) {
    if let Some(t) = &filters.types {
        query.push(("types", t));
    }
    if let Some(c) = &filters.category {
        query.push(("category", c));
    }
    if let Some(p) = &filters.stream_prefix {
        query.push(("stream_prefix", p));
    }
    if let Some(c) = &filters.correlation_id {
        query.push(("correlation_id", c));
    }
}

/// `strata read`: one JSON page with `--limit`, else the whole NDJSON replay, streamed.
pub fn read(args: ReadArgs) -> Result<ExitCode> {
    let client = Client::new(&args.client)?;
    let limit = args.limit.map(|l| l.to_string());
    let mut query: Vec<(&str, &str)> = Vec::new();
    if let Some(from) = &args.from {
        query.push(("from", from));
    }
    if let Some(direction) = &args.direction {
        query.push(("direction", direction));
    }
    if let Some(limit) = &limit {
        query.push(("limit", limit));
    }
    filter_query(&args.filters, &mut query);
    let url = client.url(&target_path(&args.target)?, &query);
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if limit.is_some() {
        #[derive(Deserialize)]
        struct Page<'a> {
            #[serde(borrow)]
            events: Vec<&'a RawValue>,
        }
        let mut response = check(client.get(&url, "application/json", None)?)?;
        let text = response
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_string()?;
        let page: Page<'_> = serde_json::from_str(&text)
            .map_err(|e| Error::Usage(format!("unexpected response: {e}")))?;
        for event in page.events {
            writeln!(out, "{}", one_line(event.get()))?;
        }
    } else {
        let response = check(client.get(&url, "application/x-ndjson", None)?)?;
        let reader = BufReader::new(response.into_body().into_reader());
        for line in reader.lines() {
            let line = line?;
            if line.starts_with("{\"error\":") {
                return Err(Error::Http {
                    status: 200,
                    message: format!("replay failed midway: {}", describe_error(&line)),
                });
            }
            writeln!(out, "{line}")?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// `strata tail`: follows the SSE subscription, printing each event's JSON as it arrives.
/// A dropped connection is resumed with `Last-Event-ID`, so nothing is missed or repeated.
pub fn tail(args: TailArgs) -> Result<ExitCode> {
    let client = Client::new(&args.client)?;
    let mut query: Vec<(&str, &str)> = vec![("from", &args.from)];
    filter_query(&args.filters, &mut query);
    let url = client.url(&target_path(&args.target)?, &query);
    let mut last_id: Option<String> = None;
    let mut connected_once = false;
    let mut backoff = Duration::from_millis(250);
    loop {
        match client.get(&url, "text/event-stream", last_id.as_deref()) {
            Ok(response) if response.status().is_success() => {
                connected_once = true;
                backoff = Duration::from_millis(250);
                match follow(response, &mut last_id) {
                    Ok(()) => eprintln!("strata: the server ended the subscription; reconnecting"),
                    Err(e @ Error::Http { .. }) => return Err(e),
                    Err(e) => eprintln!("strata: connection lost ({e}); reconnecting"),
                }
            }
            Ok(response) if response.status().is_server_error() && connected_once => {
                eprintln!("strata: server answered {}; retrying", response.status());
            }
            Ok(response) => {
                check(response)?;
            }
            Err(e) if connected_once => eprintln!("strata: {e}; retrying"),
            Err(e) => return Err(e),
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

/// Reads SSE messages until the stream ends; prints events, remembers the last id.
fn follow(response: Response<Body>, last_id: &mut Option<String>) -> Result<()> {
    let mut reader = BufReader::new(response.into_body().into_reader());
    let stdout = std::io::stdout();
    let mut event = String::new();
    let mut data = String::new();
    let mut id: Option<String> = None;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let line = line.trim_end_matches(['\n', '\r']);
        if line.is_empty() {
            if !data.is_empty() {
                if event == "error" {
                    return Err(Error::Http {
                        status: 200,
                        message: format!("subscription ended: {}", describe_error(&data)),
                    });
                }
                let mut out = stdout.lock();
                writeln!(out, "{data}")?;
                out.flush()?;
                if let Some(id) = id.take() {
                    *last_id = Some(id);
                }
            }
            event.clear();
            data.clear();
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => event = value.to_owned(),
            "data" => {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(value);
            }
            "id" => id = Some(value.to_owned()),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_bodies_keep_data_verbatim() {
        let body = event_body("Placed", r#" {"b": 1, "a": 2.50} "#, None, Some("null")).unwrap();
        assert_eq!(
            body,
            r#"{"type":"Placed","data":{"b": 1, "a": 2.50},"metadata":null}"#
        );
        assert!(event_body("T", "not json", None, None).is_err());
    }

    #[test]
    fn urls_are_encoded() {
        let c = Client::new(&ClientArgs {
            server: "http://h:1/".into(),
            token: None,
            ca_cert: None,
        })
        .unwrap();
        assert_eq!(
            c.url("/all", &[("types", "A,B c")]),
            "http://h:1/all?types=A%2CB%20c"
        );
        let t = Target {
            stream: Some("a/b".into()),
            all: false,
        };
        assert_eq!(target_path(&t).unwrap(), "/streams/a%2Fb");
    }

    #[test]
    fn ca_cert_files_must_hold_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let args = |ca: &Path| ClientArgs {
            server: "https://h:1".into(),
            token: None,
            ca_cert: Some(ca.to_owned()),
        };
        let missing = dir.path().join("missing.pem");
        let e = Client::new(&args(&missing)).err().unwrap().to_string();
        assert!(e.contains("--ca-cert") && e.contains("missing.pem"), "{e}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no pem here\n").unwrap();
        let e = Client::new(&args(&empty)).err().unwrap().to_string();
        assert!(e.contains("no certificate"), "{e}");
    }

    #[test]
    fn error_bodies() {
        assert_eq!(
            describe_error(r#"{"error":"stream_not_found","message":"stream \"x\" not found"}"#),
            "stream_not_found: stream \"x\" not found"
        );
        assert_eq!(describe_error("oops\n"), "oops");
    }
}
