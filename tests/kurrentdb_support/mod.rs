//! Shared by the `kurrentdb_*` e2e tests: the real `strata` binary with the official KurrentDB
//! Rust client (`kurrentdb` crate) connected to its gRPC front door. Include it with
//! `mod kurrentdb_support;`. Every await goes through [`within`], so no test can hang.

#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

pub use kurrentdb::Client;
pub use strata_suite::TestServer;

/// How long any one client call may take.
pub const STEP: Duration = Duration::from_secs(20);

/// `fut`, or a panic naming `what` after [`STEP`].
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(STEP, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: no answer within {STEP:?}"),
    }
}

/// A client of `server` with `params` added to the connection string (`tls=false` is always
/// there), e.g. `&["defaultDeadline=5000"]`.
pub fn client_with(server: &TestServer, scheme: &str, userinfo: &str, params: &[&str]) -> Client {
    let addr = server.process().connect_addr();
    let mut url = format!("{scheme}://{userinfo}{addr}?tls=false");
    for p in params {
        url.push('&');
        url.push_str(p);
    }
    let settings = url
        .parse::<kurrentdb::ClientSettings>()
        .unwrap_or_else(|e| panic!("connection string {url}: {e}"));
    Client::new(settings).expect("kurrentdb client")
}

/// A client of `server` with the connection string `kurrentdb://ADDR?tls=false`.
pub fn client(server: &TestServer) -> Client {
    client_with(server, "kurrentdb", "", &[])
}

/// A fresh server (`extra` serve flags) and a client of it.
pub fn start(extra: &[&str]) -> (TestServer, Client) {
    let server = TestServer::start_with(extra);
    let client = client(&server);
    (server, client)
}

/// Every event of a read (panics on an error, or after [`STEP`]).
pub async fn collect(mut stream: kurrentdb::ReadStream) -> Vec<kurrentdb::ResolvedEvent> {
    let mut events = Vec::new();
    loop {
        match within("reading", stream.next()).await {
            Ok(Some(event)) => events.push(event),
            Ok(None) => return events,
            Err(e) => panic!("read failed: {e}"),
        }
    }
}

/// The JSON data of a recorded event.
pub fn json(event: &kurrentdb::ResolvedEvent) -> serde_json::Value {
    serde_json::from_slice(&event.get_original_event().data).expect("JSON data")
}

/// `n` JSON events of `event_type` with data `{"i": k}`.
pub fn events(event_type: &str, n: usize) -> Vec<kurrentdb::EventData> {
    (0..n)
        .map(|i| kurrentdb::EventData::json(event_type, &serde_json::json!({ "i": i })).unwrap())
        .collect()
}
