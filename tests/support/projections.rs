//! Helpers of the projection tests (`tests/projections*.rs`): the `/projections` endpoints of
//! docs/http-api.md ("Projections") and polling with deadlines until a projection reaches a state.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::http::{enc, Client, Reply};

/// How long a test waits for a projection to catch up / fault / resume before failing.
pub const PROJECTION_TIMEOUT: Duration = Duration::from_secs(60);

/// `/projections/{name}{suffix}`.
pub fn projection_path(name: &str, suffix: &str) -> String {
    format!("/projections/{}{suffix}", enc(name))
}

/// `PUT /projections/{name}` with `Content-Type: application/javascript`.
pub fn put_projection(client: &Client, name: &str, source: &str) -> Reply {
    client.request(
        "PUT",
        &projection_path(name, ""),
        &[("Content-Type", "application/javascript")],
        Some(source.as_bytes()),
    )
}

/// Creates the projection; asserts `201 Created`.
#[track_caller]
pub fn create_projection(client: &Client, name: &str, source: &str) -> Value {
    let reply = put_projection(client, name, source);
    reply.assert_status(201);
    if reply.body.is_empty() {
        Value::Null
    } else {
        reply.json()
    }
}

/// `GET /projections/{name}`; asserts 200.
#[track_caller]
pub fn get_projection(client: &Client, name: &str) -> Value {
    let reply = client.get(&projection_path(name, ""));
    reply.assert_status(200);
    reply.json()
}

/// `GET /projections/{name}/state[?partition=...]`.
pub fn projection_state(client: &Client, name: &str, partition: Option<&str>) -> Reply {
    let query = partition
        .map(|p| format!("?partition={}", enc(p)))
        .unwrap_or_default();
    client.get(&projection_path(name, &format!("/state{query}")))
}

/// `POST /projections/{name}/{verb}` (`stop`, `start`, `reset`).
pub fn projection_action(client: &Client, name: &str, verb: &str) -> Reply {
    client.request(
        "POST",
        &projection_path(name, &format!("/{verb}")),
        &[],
        None,
    )
}

/// Polls `GET /projections/{name}` every 20 ms until `done` holds; panics with the last answer
/// after `timeout`.
#[track_caller]
pub fn wait_projection(
    client: &Client,
    name: &str,
    timeout: Duration,
    what: &str,
    mut done: impl FnMut(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let reply = client.get(&projection_path(name, ""));
        let value = if reply.status == 200 {
            Some(reply.json())
        } else {
            None
        };
        if let Some(v) = &value {
            if done(v) {
                return v.clone();
            }
        }
        if Instant::now() >= deadline {
            panic!(
                "projection {name:?} not {what} within {timeout:?}; last answer {}: {}",
                reply.status,
                reply.text()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until the projection has processed the log up to `position` (its `position` is at
/// least that) and is running; returns its description.
#[track_caller]
pub fn wait_position(client: &Client, name: &str, position: u64) -> Value {
    wait_projection(
        client,
        name,
        PROJECTION_TIMEOUT,
        &format!("running at position {position}"),
        |p| p["status"] == "running" && p["position"].as_u64().is_some_and(|x| x >= position),
    )
}

/// Waits until the projection is `faulted`; returns its description.
#[track_caller]
pub fn wait_faulted(client: &Client, name: &str) -> Value {
    wait_projection(client, name, PROJECTION_TIMEOUT, "faulted", |p| {
        p["status"] == "faulted"
    })
}

/// Polls the state (of `partition`) until it equals `expected`; asserts equality (with the last
/// state seen) after `PROJECTION_TIMEOUT`.
#[track_caller]
pub fn wait_state(client: &Client, name: &str, partition: Option<&str>, expected: &Value) {
    let deadline = Instant::now() + PROJECTION_TIMEOUT;
    loop {
        let reply = projection_state(client, name, partition);
        if reply.status == 200 && &reply.json() == expected {
            return;
        }
        if Instant::now() >= deadline {
            let seen = if reply.status == 200 {
                reply.json().to_string()
            } else {
                format!("status {}: {}", reply.status, reply.text())
            };
            panic!(
                "state of {name:?} (partition {partition:?}) never became {expected} within \
                 {PROJECTION_TIMEOUT:?}; last: {seen}; projection: {}",
                client.get(&projection_path(name, "")).text()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// [`wait_state`], then [`wait_position`]: the state (of `partition`) became `expected` and the
/// projection is running at `position` or later; returns its description.
#[track_caller]
pub fn wait_state_at(
    client: &Client,
    name: &str,
    partition: Option<&str>,
    expected: &Value,
    position: u64,
) -> Value {
    wait_state(client, name, partition, expected);
    wait_position(client, name, position)
}

/// The position of the last event of the log, system streams included (`None` when empty).
pub fn head_position(client: &Client) -> Option<u64> {
    let page = client.page("/all?from=end&direction=backward&limit=1&include_system=true");
    page["events"][0]["position"].as_u64()
}
