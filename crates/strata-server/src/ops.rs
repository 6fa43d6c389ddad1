//! Operations endpoints: `GET /health` (open even with auth on), `GET /info`, `GET /metrics`.

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use strata_store::{FsyncPolicy, Health, StoreInfo};

use crate::app::App;
use crate::auth::{Action, Principal};
use crate::error::Result;
use crate::metrics::{self, Snapshot};
use crate::query::Query;
use crate::response::json_value;

/// `GET /health`: 200 `{"status": "ok"}`; 503 `{"status": "read_only", "error":
/// "unavailable", "message": <the fault>}` once the store refuses writes; 503 `{"status":
/// "disk_full", "error": "insufficient_storage", "message": ...}` while the disk is full (reads
/// go on; the first append that succeeds once space is free makes it `ok` again); 503
/// `{"status": "damaged", ...}` when damaged bytes were found in sealed data (appends go on).
/// Every 503 body carries `"damage": [{"file", "offset", "length"}...]` when damage was found.
pub(crate) async fn health(State(app): State<App>) -> Response {
    let damage: Vec<serde_json::Value> = app
        .store()
        .damage()
        .iter()
        .map(|d| {
            let mut v = json!({
                "file": d.file.display().to_string(),
                "offset": d.offset,
                "length": d.length,
            });
            if !d.positions.is_empty() {
                v["positions"] = json!({"from": d.positions.start, "to": d.positions.end});
            }
            v
        })
        .collect();
    let with_damage = |mut body: serde_json::Value| {
        if !damage.is_empty() {
            body["damage"] = json!(damage);
        }
        json_value(StatusCode::SERVICE_UNAVAILABLE, &body)
    };
    match app.store().health() {
        Health::Ok => json_value(StatusCode::OK, &json!({"status": "ok"})),
        Health::DiskFull(reason) => {
            let body = json!({
                "status": "disk_full",
                "error": "insufficient_storage",
                "message": format!(
                    "the disk is full: {reason}; appends answer 507 until space is freed"
                ),
            });
            with_damage(body)
        }
        Health::ReadOnly(reason) => with_damage(json!({
            "status": "read_only",
            "error": "unavailable",
            "message": format!("the store is read-only: {reason}"),
        })),
        Health::Damaged(reason) => with_damage(json!({
            "status": "damaged",
            "error": "corrupt",
            "message": format!(
                "{reason}; events outside the damaged bytes stay readable, appends go on; \
                 run `strata repair` (offline) to quarantine the damage"
            ),
        })),
    }
}

/// `GET /info`: version, data directory, log positions, segments, bytes on disk, uptime.
pub(crate) async fn info(
    State(app): State<App>,
    principal: Principal,
    RawQuery(raw_query): RawQuery,
) -> Result<Response> {
    let info = store_info(&app, &principal, raw_query.as_deref()).await?;
    let (status, read_only_reason) = match app.store().health() {
        Health::Ok => ("ok", None),
        Health::ReadOnly(reason) => ("read_only", Some(reason)),
        Health::DiskFull(_) => ("disk_full", None),
        Health::Damaged(reason) => ("damaged", Some(reason)),
    };
    let body = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "data_dir": info.dir.display().to_string(),
        "next_position": info.next_position,
        "last_position": info.next_position.checked_sub(1),
        "segment_count": info.segment_count,
        "bytes_on_disk": info.bytes_on_disk,
        "uptime_seconds": app.uptime().as_secs(),
        "fsync": fsync_name(app.store().options().fsync),
        "status": status,
        "read_only_reason": read_only_reason,
        "open_subscriptions": app.metrics().open_subscriptions(),
    });
    Ok(json_value(StatusCode::OK, &body))
}

/// What `/info` and `/metrics` begin with: the `ServerInfo` check, no query parameters, then
/// the store's info (read on the blocking pool).
async fn store_info(
    app: &App,
    principal: &Principal,
    raw_query: Option<&str>,
) -> Result<StoreInfo> {
    principal.authorize(Action::ServerInfo)?;
    Query::parse(raw_query, &[])?;
    app.blocking(|store| Ok(store.info())).await
}

/// The `--fsync` spelling of a policy.
fn fsync_name(policy: FsyncPolicy) -> String {
    match policy {
        FsyncPolicy::Always => "always".into(),
        FsyncPolicy::Never => "never".into(),
        FsyncPolicy::Interval(d) => format!("interval:{}", d.as_millis()),
    }
}

/// `GET /metrics`: Prometheus text.
pub(crate) async fn metrics(
    State(app): State<App>,
    principal: Principal,
    RawQuery(raw_query): RawQuery,
) -> Result<Response> {
    let info = store_info(&app, &principal, raw_query.as_deref()).await?;
    let health = app.store().health();
    let snapshot = Snapshot {
        stats: app.store().stats(),
        info,
        read_only: matches!(health, Health::ReadOnly(_)),
        disk_full: matches!(health, Health::DiskFull(_)),
        uptime: app.uptime(),
    };
    let mut text = metrics::render(app.metrics(), &snapshot);
    app.groups().render_metrics(&mut text).await;
    crate::projections::metrics::render(app.projections(), &mut text);
    app.scavenger().render_metrics(&mut text);
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response())
}

/// The store's damage hook ([`strata_store::Options::on_damage`]): one error-level log line
/// per damaged range, the moment the store finds it (at open, by a read, by an index rebuild),
/// with the file, offset, length and the log positions whose events it held.
pub(crate) fn damage_hook() -> strata_store::DamageHook {
    std::sync::Arc::new(|d: &strata_store::Damage| {
        let positions = if d.positions.is_empty() {
            "none".to_owned()
        } else {
            format!("{}..{}", d.positions.start, d.positions.end)
        };
        tracing::error!(
            file = %d.file.display(),
            offset = d.offset,
            length = d.length,
            positions = %positions,
            indexed = d.indexed,
            detail = %d.detail,
            "damaged data found: events outside these bytes stay readable; run `strata verify`, \
             then `strata repair` with the server stopped"
        );
    })
}
