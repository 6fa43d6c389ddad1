//! A small blocking HTTP/1.1 client over `TcpStream`, enough for the end-to-end tests: exact
//! control of the bytes sent (headers, bodies, lying `Content-Length`s), incremental reads of
//! streamed bodies (chunked decoding), Server-Sent Events parsing, and a read timeout on every
//! socket. One connection per request (`Connection: close`).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;

/// Percent-encodes a path segment or query value (everything but RFC 3986 unreserved bytes).
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A client of one server.
#[derive(Clone, Debug)]
pub struct Client {
    /// The server's address.
    pub addr: SocketAddr,
    token: Option<String>,
    timeout: Duration,
}

impl Client {
    /// A client of `addr`, no token, 30 s timeouts.
    pub fn new(addr: SocketAddr) -> Client {
        Client {
            addr,
            token: None,
            timeout: Duration::from_secs(30),
        }
    }

    /// The same client sending `Authorization: Bearer <token>`.
    pub fn with_token(&self, token: &str) -> Client {
        Client {
            token: Some(token.to_owned()),
            ..self.clone()
        }
    }

    /// A connected socket with read and write timeouts.
    pub fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect_timeout(&self.addr, self.timeout)
            .unwrap_or_else(|e| panic!("connect {}: {e}", self.addr));
        stream.set_read_timeout(Some(self.timeout)).unwrap();
        stream.set_write_timeout(Some(self.timeout)).unwrap();
        stream.set_nodelay(true).unwrap();
        stream
    }

    /// A connected socket whose receive buffer is `rcvbuf` bytes (set before connecting, so
    /// that the advertised window stays small): a slow reader.
    pub fn connect_small_rcvbuf(&self, rcvbuf: usize) -> TcpStream {
        use socket2::{Domain, Protocol, Socket, Type};
        let socket = Socket::new(
            Domain::for_address(self.addr),
            Type::STREAM,
            Some(Protocol::TCP),
        )
        .expect("socket");
        socket.set_recv_buffer_size(rcvbuf).expect("SO_RCVBUF");
        socket
            .connect_timeout(&self.addr.into(), self.timeout)
            .expect("connect");
        let stream: TcpStream = socket.into();
        stream.set_read_timeout(Some(self.timeout)).unwrap();
        stream.set_write_timeout(Some(self.timeout)).unwrap();
        stream
    }

    /// The head of a request (request line and headers, with `Host`, `Connection: close`,
    /// `Authorization` when the client has a token and `headers` has none, and `Content-Length`
    /// for a body unless `headers` sets `Content-Length` or `Transfer-Encoding`).
    pub fn head(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body_len: Option<usize>,
    ) -> String {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.addr
        );
        let has = |name: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
        if let Some(token) = &self.token {
            if !has("authorization") {
                head.push_str(&format!("Authorization: Bearer {token}\r\n"));
            }
        }
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if let Some(len) = body_len {
            if !has("content-length") && !has("transfer-encoding") {
                head.push_str(&format!("Content-Length: {len}\r\n"));
            }
        }
        head.push_str("\r\n");
        head
    }

    /// Sends a request on `stream` and reads the response head; the body is left to read.
    pub fn send_on(
        &self,
        mut stream: TcpStream,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Response {
        let mut bytes = self
            .head(method, path, headers, body.map(<[u8]>::len))
            .into_bytes();
        if let Some(body) = body {
            bytes.extend_from_slice(body);
        }
        // A server may answer (e.g. 413) and close before reading the whole body: a failed
        // write is then not the end, the response may be waiting.
        let sent = stream.write_all(&bytes);
        match Response::read_from(stream, method == "HEAD") {
            Ok(response) => response,
            Err(e) => match sent {
                Ok(()) => panic!("reading the response to {method} {path}: {e}"),
                Err(w) => panic!("sending {method} {path}: {w}; then reading the response: {e}"),
            },
        }
    }

    /// Sends a request and returns the response with its body still to be read.
    pub fn open(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Response {
        self.send_on(self.connect(), method, path, headers, body)
    }

    /// Sends a request and reads the whole response.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Reply {
        self.open(method, path, headers, body).into_reply()
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> Reply {
        self.request("GET", path, &[], None)
    }

    /// `GET path` with headers.
    pub fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.request("GET", path, headers, None)
    }

    /// `POST path` with a JSON body (`Content-Type: application/json`).
    pub fn post_json(&self, path: &str, body: &str) -> Reply {
        self.post_json_with(path, &[], body)
    }

    /// `POST path` with a JSON body and more headers.
    pub fn post_json_with(&self, path: &str, headers: &[(&str, &str)], body: &str) -> Reply {
        let mut all = vec![("Content-Type", "application/json")];
        all.extend_from_slice(headers);
        self.request("POST", path, &all, Some(body.as_bytes()))
    }

    /// `PUT path` with a JSON body.
    pub fn put_json(&self, path: &str, body: &str) -> Reply {
        self.request(
            "PUT",
            path,
            &[("Content-Type", "application/json")],
            Some(body.as_bytes()),
        )
    }

    /// `DELETE path` with headers.
    pub fn delete(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        self.request("DELETE", path, headers, None)
    }

    /// Appends `events` (an event object or an array) to `stream` with `Expected-Revision`
    /// `expected` (none when `None`).
    pub fn append_expecting(&self, stream: &str, expected: Option<&str>, events: &Value) -> Reply {
        let headers: Vec<(&str, &str)> = expected
            .map(|e| vec![("Expected-Revision", e)])
            .unwrap_or_default();
        self.post_json_with(
            &format!("/streams/{}", enc(stream)),
            &headers,
            &events.to_string(),
        )
    }

    /// Appends `events` to `stream`, asserts `201 Created`, returns the body.
    #[track_caller]
    pub fn append(&self, stream: &str, events: &Value) -> Value {
        let reply = self.append_expecting(stream, None, events);
        reply.assert_status(201);
        reply.json()
    }

    /// A JSON page (`Accept: application/json`); asserts 200.
    #[track_caller]
    pub fn page(&self, path: &str) -> Value {
        let reply = self.get_with(path, &[("Accept", "application/json")]);
        reply.assert_status(200);
        reply.json()
    }

    /// The NDJSON replay of `path`, parsed; asserts 200 and the content type.
    #[track_caller]
    pub fn ndjson(&self, path: &str) -> Vec<Value> {
        let reply = self.get_with(path, &[("Accept", "application/x-ndjson")]);
        reply.assert_status(200);
        assert!(
            reply
                .header("content-type")
                .is_some_and(|c| c.starts_with("application/x-ndjson")),
            "content-type {:?}",
            reply.header("content-type")
        );
        reply.ndjson()
    }

    /// Every event of `stream` (NDJSON replay).
    #[track_caller]
    pub fn read_stream(&self, stream: &str) -> Vec<Value> {
        self.ndjson(&format!("/streams/{}", enc(stream)))
    }

    /// Opens an SSE subscription on `path` with extra headers; asserts 200 and the content type.
    #[track_caller]
    pub fn sse(&self, path: &str, headers: &[(&str, &str)]) -> SseReader {
        let mut all = vec![("Accept", "text/event-stream")];
        all.extend_from_slice(headers);
        let response = self.open("GET", path, &all, None);
        if response.status != 200 {
            let reply = response.into_reply();
            panic!("SSE {path}: status {}: {}", reply.status, reply.text());
        }
        assert!(
            response
                .header("content-type")
                .is_some_and(|c| c.starts_with("text/event-stream")),
            "content-type {:?}",
            response.header("content-type")
        );
        response.into_sse()
    }
}

/// A complete response.
#[derive(Clone, Debug)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    /// The (de-chunked) body.
    pub body: Vec<u8>,
}

impl Reply {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with the body when it is not.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}: body is not JSON ({e}): {}",
                self.status,
                self.text()
            )
        })
    }

    /// The body as NDJSON: one JSON value per non-empty line.
    #[track_caller]
    pub fn ndjson(&self) -> Vec<Value> {
        self.text()
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("NDJSON line ({e}): {l}")))
            .collect()
    }

    /// Asserts the status, showing the body when it differs.
    #[track_caller]
    pub fn assert_status(&self, status: u16) -> &Self {
        assert_eq!(
            self.status,
            status,
            "unexpected status; body: {}",
            self.text()
        );
        self
    }

    /// [`Reply::assert_error`], after checking the status alone with `what` (the request) and
    /// the body in the message.
    #[track_caller]
    pub fn assert_error_for(&self, what: &str, status: u16, code: &str) -> Value {
        assert_eq!(self.status, status, "{what}: {}", self.text());
        self.assert_error(status, code)
    }

    /// Asserts an API error: the status, `Content-Type: application/json`, and a body object
    /// with `"error": code` and a non-empty string `"message"`. Returns the body.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) -> Value {
        self.assert_status(status);
        let content_type = self.header("content-type").unwrap_or_default();
        assert!(
            content_type.starts_with("application/json"),
            "error content-type {content_type:?}; body: {}",
            self.text()
        );
        let v = self.json();
        assert!(v.is_object(), "error body is not an object: {v}");
        assert_eq!(v["error"], code, "error code; body: {v}");
        assert!(
            v["message"].as_str().is_some_and(|m| !m.is_empty()),
            "error message missing or empty: {v}"
        );
        v
    }
}

fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// How the response body ends.
#[derive(Debug)]
enum Framing {
    Length(u64),
    Chunked {
        /// Bytes left in the current chunk.
        left: u64,
        /// The CRLF after a finished chunk is still to be read.
        crlf_pending: bool,
        done: bool,
    },
    UntilClose,
}

/// The de-framed body of a response, read incrementally from the socket.
pub struct BodyReader {
    inner: BufReader<TcpStream>,
    framing: Framing,
}

impl BodyReader {
    fn line(&mut self) -> io::Result<String> {
        let mut line = String::new();
        if self.inner.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed inside a chunked body",
            ));
        }
        Ok(line.trim_end_matches(['\r', '\n']).to_owned())
    }
}

/// Reads at most `*left` bytes (and at most `buf`'s length) and counts them off `left`; the
/// connection closing first is an `UnexpectedEof` error with `eof_message`.
fn read_counted(
    inner: &mut impl Read,
    left: &mut u64,
    buf: &mut [u8],
    eof_message: &str,
) -> io::Result<usize> {
    let max = (*left).min(buf.len() as u64) as usize;
    let n = inner.read(&mut buf[..max])?;
    if n == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, eof_message));
    }
    *left -= n as u64;
    Ok(n)
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        match &mut self.framing {
            Framing::Length(0) => Ok(0),
            Framing::Length(left) => read_counted(
                &mut self.inner,
                left,
                buf,
                "connection closed before Content-Length bytes",
            ),
            Framing::UntilClose => self.inner.read(buf),
            Framing::Chunked { done: true, .. } => Ok(0),
            Framing::Chunked { .. } => {
                loop {
                    let Framing::Chunked {
                        left, crlf_pending, ..
                    } = &mut self.framing
                    else {
                        unreachable!()
                    };
                    if *left > 0 {
                        break;
                    }
                    if *crlf_pending {
                        *crlf_pending = false;
                        let line = self.line()?;
                        if !line.is_empty() {
                            return Err(io::Error::new(
                                io::ErrorKind::InvalidData,
                                format!("no CRLF after a chunk: {line:?}"),
                            ));
                        }
                    }
                    let line = self.line()?;
                    let size = line.split(';').next().unwrap_or("").trim();
                    let size = u64::from_str_radix(size, 16).map_err(|_| {
                        io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("bad chunk size line {line:?}"),
                        )
                    })?;
                    if size == 0 {
                        // Trailers, up to the empty line.
                        while !self.line()?.is_empty() {}
                        self.framing = Framing::Chunked {
                            left: 0,
                            crlf_pending: false,
                            done: true,
                        };
                        return Ok(0);
                    }
                    self.framing = Framing::Chunked {
                        left: size,
                        crlf_pending: true,
                        done: false,
                    };
                }
                let Framing::Chunked { left, .. } = &mut self.framing else {
                    unreachable!()
                };
                read_counted(
                    &mut self.inner,
                    left,
                    buf,
                    "connection closed inside a chunk",
                )
            }
        }
    }
}

/// A response whose head has been read; the body is read on demand.
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: BufReader<BodyReader>,
    socket: TcpStream,
}

impl Response {
    /// Reads a response head from `stream` (skipping `1xx` responses).
    pub fn read_from(stream: TcpStream, head_request: bool) -> io::Result<Response> {
        let socket = stream.try_clone()?;
        let mut inner = BufReader::new(stream);
        loop {
            let mut status_line = String::new();
            if inner.read_line(&mut status_line)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed before a response",
                ));
            }
            let mut parts = status_line.split_whitespace();
            let version = parts.next().unwrap_or_default();
            if !version.starts_with("HTTP/1.") {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad status line {status_line:?}"),
                ));
            }
            let status: u16 = parts.next().and_then(|s| s.parse().ok()).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("bad status line {status_line:?}"),
                )
            })?;
            let mut headers = Vec::new();
            loop {
                let mut line = String::new();
                if inner.read_line(&mut line)? == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed inside the response head",
                    ));
                }
                let line = line.trim_end_matches(['\r', '\n']);
                if line.is_empty() {
                    break;
                }
                let (k, v) = line.split_once(':').ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidData, format!("bad header {line:?}"))
                })?;
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
            }
            if (100..200).contains(&status) {
                continue;
            }
            let chunked = find_header(&headers, "transfer-encoding")
                .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
            let framing = if head_request || status == 204 || status == 304 {
                Framing::Length(0)
            } else if chunked {
                Framing::Chunked {
                    left: 0,
                    crlf_pending: false,
                    done: false,
                }
            } else if let Some(len) = find_header(&headers, "content-length") {
                Framing::Length(len.parse().map_err(|_| {
                    io::Error::new(io::ErrorKind::InvalidData, "bad Content-Length")
                })?)
            } else {
                Framing::UntilClose
            };
            return Ok(Response {
                status,
                headers,
                body: BufReader::with_capacity(64 * 1024, BodyReader { inner, framing }),
                socket,
            });
        }
    }

    /// The first header called `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// Sets the socket's read timeout (for the reads still to come).
    pub fn set_read_timeout(&self, timeout: Duration) {
        self.socket.set_read_timeout(Some(timeout)).unwrap();
    }

    /// The underlying socket (e.g. to shut it down).
    pub fn socket(&self) -> &TcpStream {
        &self.socket
    }

    /// Reads the rest of the body.
    #[track_caller]
    pub fn into_reply(mut self) -> Reply {
        let mut body = Vec::new();
        self.body
            .read_to_end(&mut body)
            .unwrap_or_else(|e| panic!("reading the body (status {}): {e}", self.status));
        Reply {
            status: self.status,
            headers: self.headers,
            body,
        }
    }

    /// Reads the next body line (without its line break); `None` at the end of the body.
    pub fn next_line(&mut self) -> io::Result<Option<String>> {
        let mut line = String::new();
        if self.body.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        Ok(Some(line.trim_end_matches(['\r', '\n']).to_owned()))
    }

    /// The body as a stream of Server-Sent Events.
    pub fn into_sse(self) -> SseReader {
        SseReader {
            response: self,
            pending: SseMessage::default(),
        }
    }
}

/// One Server-Sent Events message.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SseMessage {
    /// The `event:` field.
    pub event: Option<String>,
    /// The `id:` field.
    pub id: Option<String>,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
    has_data: bool,
}

impl SseMessage {
    /// `data` as JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("SSE data is not JSON ({e}): {:?}", self.data))
    }

    /// `id` as an integer.
    #[track_caller]
    pub fn id_u64(&self) -> u64 {
        self.id
            .as_deref()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("SSE message without an integer id: {self:?}"))
    }

    fn is_empty(&self) -> bool {
        self.event.is_none() && self.id.is_none() && !self.has_data
    }
}

/// What an SSE stream yields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SseItem {
    /// A comment line (`: text`), without the colon and the space after it.
    Comment(String),
    /// A message (dispatched at its blank line).
    Message(SseMessage),
}

/// Reads Server-Sent Events from a response body.
pub struct SseReader {
    response: Response,
    pending: SseMessage,
}

impl SseReader {
    /// The next comment or message; `Ok(None)` when the server ended the response. A read
    /// timeout is an `Err` of kind `WouldBlock` / `TimedOut`.
    pub fn next_item(&mut self) -> io::Result<Option<SseItem>> {
        loop {
            let Some(line) = self.response.next_line()? else {
                return Ok(None);
            };
            if line.is_empty() {
                if !self.pending.is_empty() {
                    return Ok(Some(SseItem::Message(std::mem::take(&mut self.pending))));
                }
                continue;
            }
            if let Some(comment) = line.strip_prefix(':') {
                return Ok(Some(SseItem::Comment(
                    comment.strip_prefix(' ').unwrap_or(comment).to_owned(),
                )));
            }
            let (field, value) = line.split_once(':').unwrap_or((line.as_str(), ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => self.pending.event = Some(value.to_owned()),
                "id" => self.pending.id = Some(value.to_owned()),
                "data" => {
                    if self.pending.has_data {
                        self.pending.data.push('\n');
                    }
                    self.pending.data.push_str(value);
                    self.pending.has_data = true;
                }
                _ => {}
            }
        }
    }

    /// The next message, skipping comments; `Ok(None)` at the end of the response.
    pub fn next_message(&mut self) -> io::Result<Option<SseMessage>> {
        loop {
            match self.next_item()? {
                None => return Ok(None),
                Some(SseItem::Comment(_)) => continue,
                Some(SseItem::Message(m)) => return Ok(Some(m)),
            }
        }
    }

    /// The next message, which must exist (panics on the end of the response or a timeout).
    #[track_caller]
    pub fn expect_message(&mut self) -> SseMessage {
        match self.next_message() {
            Ok(Some(m)) => m,
            Ok(None) => panic!("the SSE response ended"),
            Err(e) => panic!("reading SSE: {e}"),
        }
    }

    /// `n` messages that must be events: returns their parsed `data`, checking that each
    /// message's `event` is the event's type and its `id` is `id_field` of the event
    /// (`"revision"` or `"position"`).
    #[track_caller]
    pub fn expect_events(&mut self, n: usize, id_field: &str) -> Vec<Value> {
        (0..n)
            .map(|_| {
                let m = self.expect_message();
                let event = m.json();
                assert_eq!(
                    m.event.as_deref(),
                    event["type"].as_str(),
                    "SSE event field vs type: {m:?}"
                );
                assert_eq!(
                    Some(m.id_u64()),
                    event[id_field].as_u64(),
                    "SSE id vs {id_field}: {m:?}"
                );
                event
            })
            .collect()
    }

    /// Sets the read timeout for what follows.
    pub fn set_read_timeout(&self, timeout: Duration) {
        self.response.set_read_timeout(timeout);
    }

    /// The response (headers, socket).
    pub fn response(&self) -> &Response {
        &self.response
    }
}
