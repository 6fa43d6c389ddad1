//! End-to-end: KurrentDB projection management through the official Rust client
//! (`kurrentdb::ProjectionClient`) against the real `strata` binary — a continuous projection
//! in KurrentDB's dialect (`fromCategory`, `$init`, `e.body`, `outputState()`), its state and
//! result (per partition too), statistics, disable/enable/reset, update, delete,
//! and the errors the client maps. States travel as `google.protobuf.Value`, so the client
//! reads every number as a double (`2.0`), as it does from KurrentDB. Every wait has a deadline.

use std::time::Duration;

use kurrentdb::{
    AppendToStreamOptions, Client, ClientSettings, CreateProjectionOptions,
    DeleteProjectionOptions, EventData, GenericProjectionOptions, GetResultProjectionOptions,
    GetStateProjectionOptions, ProjectionClient, UpdateProjectionOptions,
};
use serde_json::{json, Value};
use strata_suite::TestServer;

/// Generous bound for any wait (the machine is shared).
const DEADLINE: Duration = Duration::from_secs(30);

const TOTALS: &str = "\
fromCategory('order')
  .when({
    $init: function () { return { count: 0, total: 0 }; },
    OrderPlaced: function (s, e) { s.count += 1; s.total += e.body.total; }
  })
  .outputState();
";

const PER_ORDER: &str = "\
fromCategory('order')
  .foreachStream()
  .when({
    $init: function () { return { total: 0 }; },
    OrderPlaced: function (s, e) { s.total += e.body.total; }
  });
";

fn settings(server: &TestServer) -> ClientSettings {
    let addr = server.url().trim_start_matches("http://").to_owned();
    format!("esdb://{addr}?tls=false")
        .parse()
        .expect("connection string")
}

async fn place(client: &Client, stream: &str, total: u64) {
    client
        .append_to_stream(
            stream,
            &AppendToStreamOptions::default(),
            EventData::json("OrderPlaced", &json!({ "total": total })).unwrap(),
        )
        .await
        .expect("append");
}

async fn state(projections: &ProjectionClient, name: &str, partition: Option<&str>) -> Value {
    let mut options = GetStateProjectionOptions::default();
    if let Some(p) = partition {
        options = options.partition(p);
    }
    projections
        .get_state::<_, Value>(name, &options)
        .await
        .expect("state")
        .expect("state JSON")
}

/// Waits until the state of `name` is `expected`.
async fn state_becomes(projections: &ProjectionClient, name: &str, expected: Value) {
    let started = tokio::time::Instant::now();
    loop {
        let now = state(projections, name, None).await;
        if now == expected {
            return;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "state of {name} is {now}, not {expected}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn status(projections: &ProjectionClient, name: &str) -> kurrentdb::ProjectionStatus {
    projections
        .get_status(name, &GenericProjectionOptions::default())
        .await
        .expect("statistics")
        .expect("one projection")
}

#[tokio::test]
async fn a_projection_through_the_kurrentdb_client() {
    let server = TestServer::start();
    let client = Client::new(settings(&server)).expect("client");
    let projections = ProjectionClient::new(settings(&server)).expect("projection client");
    place(&client, "order-1", 2).await;
    place(&client, "order-2", 3).await;

    projections
        .create(
            "totals",
            TOTALS.to_owned(),
            &CreateProjectionOptions::default(),
        )
        .await
        .expect("create");
    let again = projections
        .create(
            "totals",
            TOTALS.to_owned(),
            &CreateProjectionOptions::default(),
        )
        .await;
    assert!(
        matches!(again, Err(kurrentdb::Error::ResourceAlreadyExists)),
        "{again:?}"
    );
    let bad = projections
        .create(
            "broken",
            "fromAll(.when(".to_owned(),
            &CreateProjectionOptions::default(),
        )
        .await;
    assert!(bad.is_err(), "{bad:?}");

    state_becomes(&projections, "totals", json!({"count": 2.0, "total": 5.0})).await;
    let result: Value = projections
        .get_result("totals", &GetResultProjectionOptions::default())
        .await
        .expect("result")
        .expect("result JSON");
    assert_eq!(result, json!({"count": 2.0, "total": 5.0}));
    let s = status(&projections, "totals").await;
    assert_eq!(
        (s.name.as_str(), s.status.as_str(), s.mode.as_str()),
        ("totals", "Running", "Continuous")
    );

    // Partitions.
    projections
        .create(
            "per_order",
            PER_ORDER.to_owned(),
            &CreateProjectionOptions::default(),
        )
        .await
        .expect("create partitioned");
    let started = tokio::time::Instant::now();
    loop {
        if state(&projections, "per_order", Some("order-2")).await == json!({"total": 3.0}) {
            break;
        }
        assert!(started.elapsed() < DEADLINE, "partition state not reached");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status(&projections, "per_order").await.status, "Running");

    // Disable, enable, reset.
    projections
        .disable("totals", &GenericProjectionOptions::default())
        .await
        .expect("disable");
    assert_eq!(status(&projections, "totals").await.status, "Stopped");
    place(&client, "order-3", 10).await;
    projections
        .enable("totals", &GenericProjectionOptions::default())
        .await
        .expect("enable");
    state_becomes(&projections, "totals", json!({"count": 3.0, "total": 15.0})).await;
    projections
        .reset("totals", &GenericProjectionOptions::default())
        .await
        .expect("reset");
    state_becomes(&projections, "totals", json!({"count": 3.0, "total": 15.0})).await;

    // Update: a new query rebuilds the state.
    projections
        .update(
            "totals",
            "fromCategory('order').when({ $init: () => ({ n: 0 }), OrderPlaced: (s) => ({ n: s.n + 1 }) })"
                .to_owned(),
            &UpdateProjectionOptions::default(),
        )
        .await
        .expect("update");
    state_becomes(&projections, "totals", json!({"n": 3.0})).await;
    let missing = projections
        .update(
            "nope",
            TOTALS.to_owned(),
            &UpdateProjectionOptions::default(),
        )
        .await;
    assert!(
        matches!(missing, Err(kurrentdb::Error::ResourceNotFound)),
        "{missing:?}"
    );

    // Over HTTP it is the same projection.
    let http = server.client().get("/projections/totals").json();
    assert_eq!(http["status"], "running");

    projections
        .delete("totals", &DeleteProjectionOptions::default())
        .await
        .expect("delete");
    let gone = projections
        .get_status("totals", &GenericProjectionOptions::default())
        .await;
    assert!(
        matches!(gone, Err(kurrentdb::Error::ResourceNotFound)),
        "{gone:?}"
    );
}
