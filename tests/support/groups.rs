//! Consumer-group helpers for the end-to-end tests (docs/http-api.md, Consumer groups): a [`Group`]
//! handle with create / poll / ack / nack / state / parked / replay / delete, and fallible
//! variants ([`Group::try_poll`], [`Group::try_settle`]) for tests that kill the server while
//! consumers are talking to it.

use std::io::{self, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{json, Value};

use crate::http::{enc, Client, Reply, Response};

/// One message of a poll answer.
#[derive(Clone, Debug)]
pub struct Message {
    /// The opaque id to ack or nack this delivery with.
    pub ack_id: String,
    /// Which delivery of the event this is (1 = first).
    pub delivery: u64,
    /// The event, as the server returns events.
    pub event: Value,
}

impl Message {
    /// The event's id.
    pub fn id(&self) -> &str {
        self.event["id"].as_str().expect("event id")
    }

    /// The event's stream.
    pub fn stream(&self) -> &str {
        self.event["stream"].as_str().expect("event stream")
    }

    /// The event's revision.
    pub fn revision(&self) -> u64 {
        self.event["revision"].as_u64().expect("event revision")
    }

    /// The event's position.
    pub fn position(&self) -> u64 {
        self.event["position"].as_u64().expect("event position")
    }

    /// `data.seq` of the event (tests number their events so).
    pub fn seq(&self) -> u64 {
        self.event["data"]["seq"].as_u64().expect("data.seq")
    }
}

/// A consumer group on a server.
#[derive(Clone, Debug)]
pub struct Group {
    /// The client.
    pub client: Client,
    /// The group's name.
    pub name: String,
}

impl Group {
    /// A handle (nothing is created).
    pub fn new(client: &Client, name: &str) -> Group {
        Group {
            client: client.clone(),
            name: name.to_owned(),
        }
    }

    /// `/groups/{name}` followed by `rest`.
    pub fn path(&self, rest: &str) -> String {
        format!("/groups/{}{rest}", enc(&self.name))
    }

    /// `PUT /groups/{name}` with `settings` (a JSON object).
    pub fn put(&self, settings: &Value) -> Reply {
        self.client.put_json(&self.path(""), &settings.to_string())
    }

    /// Creates the group; asserts `201 Created`.
    #[track_caller]
    pub fn create(client: &Client, name: &str, settings: &Value) -> Group {
        let group = Group::new(client, name);
        group.put(settings).assert_status(201);
        group
    }

    /// `GET /groups/{name}`; asserts 200.
    #[track_caller]
    pub fn state(&self) -> Value {
        let reply = self.client.get(&self.path(""));
        reply.assert_status(200);
        reply.json()
    }

    /// `POST /groups/{name}/poll?max=&wait_ms=`.
    pub fn poll_reply(&self, max: usize, wait_ms: u64) -> Reply {
        self.client.request(
            "POST",
            &self.path(&format!("/poll?max={max}&wait_ms={wait_ms}")),
            &[],
            None,
        )
    }

    /// Polls; asserts 200 and returns the messages.
    #[track_caller]
    pub fn poll(&self, max: usize, wait_ms: u64) -> Vec<Message> {
        let reply = self.poll_reply(max, wait_ms);
        reply.assert_status(200);
        messages(&reply.json())
    }

    /// `POST /groups/{name}/ack`.
    pub fn ack_reply(&self, ids: &[&str]) -> Reply {
        self.client
            .post_json(&self.path("/ack"), &json!({ "ack_ids": ids }).to_string())
    }

    /// Acks; asserts a 2xx answer.
    #[track_caller]
    pub fn ack(&self, ids: &[&str]) {
        assert_2xx(&self.ack_reply(ids), "ack");
    }

    /// Acks every message of `msgs`.
    #[track_caller]
    pub fn ack_all(&self, msgs: &[Message]) {
        let ids: Vec<&str> = msgs.iter().map(|m| m.ack_id.as_str()).collect();
        self.ack(&ids);
    }

    /// `POST /groups/{name}/nack` with `action`.
    pub fn nack_reply(&self, ids: &[&str], action: &str) -> Reply {
        self.client.post_json(
            &self.path("/nack"),
            &json!({ "ack_ids": ids, "action": action }).to_string(),
        )
    }

    /// Nacks; asserts a 2xx answer.
    #[track_caller]
    pub fn nack(&self, ids: &[&str], action: &str) {
        assert_2xx(&self.nack_reply(ids, action), &format!("nack {action}"));
    }

    /// `GET /groups/{name}/parked`; asserts 200; the parked entries, whatever wraps them
    /// (an array, or the one array field of an object).
    #[track_caller]
    pub fn parked(&self) -> Vec<Value> {
        let reply = self.client.get(&self.path("/parked"));
        reply.assert_status(200);
        match reply.json() {
            Value::Array(a) => a,
            Value::Object(o) => o
                .into_iter()
                .find_map(|(_, v)| match v {
                    Value::Array(a) => Some(a),
                    _ => None,
                })
                .unwrap_or_else(|| panic!("no list in the parked answer: {}", reply.text())),
            other => panic!("unexpected parked answer {other}"),
        }
    }

    /// `POST /groups/{name}/parked/replay`; asserts a 2xx answer.
    #[track_caller]
    pub fn replay_parked(&self) -> Reply {
        let reply = self.client.post_json(&self.path("/parked/replay"), "{}");
        assert!(
            (200..300).contains(&reply.status),
            "replay: {} {}",
            reply.status,
            reply.text()
        );
        reply
    }

    /// `DELETE /groups/{name}`.
    pub fn delete(&self) -> Reply {
        self.client.delete(&self.path(""), &[])
    }

    /// A poll that reports connection failures instead of panicking (the server may be
    /// killed meanwhile): `Ok(None)` for a non-200 answer.
    pub fn try_poll(&self, max: usize, wait_ms: u64) -> io::Result<Option<Vec<Message>>> {
        let reply = try_request(
            &self.client,
            "POST",
            &self.path(&format!("/poll?max={max}&wait_ms={wait_ms}")),
            None,
        )?;
        Ok((reply.status == 200).then(|| messages(&reply.json())))
    }

    /// An ack or nack (`what` = `"ack"` / `"nack"`) that reports connection failures instead
    /// of panicking; the status of the answer.
    pub fn try_settle(&self, what: &str, ids: &[&str], action: Option<&str>) -> io::Result<u16> {
        let body = match action {
            Some(a) => json!({ "ack_ids": ids, "action": a }),
            None => json!({ "ack_ids": ids }),
        };
        let reply = try_request(
            &self.client,
            "POST",
            &self.path(&format!("/{what}")),
            Some(body.to_string().as_bytes()),
        )?;
        Ok(reply.status)
    }
}

/// The messages of a poll answer `{"messages": [{"ack_id", "delivery", "event"}]}`; panics
/// when the shape is not that.
#[track_caller]
pub fn messages(answer: &Value) -> Vec<Message> {
    answer["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("poll answer without messages: {answer}"))
        .iter()
        .map(|m| Message {
            ack_id: m["ack_id"]
                .as_str()
                .unwrap_or_else(|| panic!("message without ack_id: {m}"))
                .to_owned(),
            delivery: m["delivery"]
                .as_u64()
                .unwrap_or_else(|| panic!("message without delivery: {m}")),
            event: m["event"].clone(),
        })
        .collect()
}

/// A request on a new connection that returns I/O failures (refused, reset, timed out)
/// instead of panicking.
pub fn try_request(
    client: &Client,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> io::Result<Reply> {
    let mut stream = TcpStream::connect_timeout(&client.addr, Duration::from_secs(10))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.set_write_timeout(Some(Duration::from_secs(30)))?;
    let headers: &[(&str, &str)] = if body.is_some() {
        &[("Content-Type", "application/json")]
    } else {
        &[]
    };
    let mut bytes = client
        .head(method, path, headers, body.map(<[u8]>::len))
        .into_bytes();
    bytes.extend_from_slice(body.unwrap_or_default());
    stream.write_all(&bytes)?;
    let response = Response::read_from(stream, false)?;
    let status = response.status;
    let headers = response.headers.clone();
    let mut reader = response.body;
    let mut body = Vec::new();
    io::Read::read_to_end(&mut reader, &mut body)?;
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// Asserts a 2xx answer to `what`.
#[track_caller]
fn assert_2xx(reply: &Reply, what: &str) {
    assert!(
        (200..300).contains(&reply.status),
        "{what}: {} {}",
        reply.status,
        reply.text()
    );
}
