//! Counters for `GET /metrics`, and their Prometheus text rendering.
//!
//! The store's own counters (appends, events, bytes, fsyncs and the fsync latency histogram)
//! come from [`strata_store::Store::stats`]; the server adds HTTP requests by route, method and
//! status, an HTTP latency histogram by route, an append latency histogram (request to durable
//! acknowledgement), open SSE subscriptions, and events served by reads.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use parking_lot::Mutex;
use strata_store::{StatsSnapshot, StoreInfo, FSYNC_BUCKETS_MICROS};

use crate::app::App;

/// Upper bounds (seconds) of the HTTP request latency buckets.
const HTTP_BUCKETS_SECONDS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// The server's counters. Shared by every request through [`App`].
#[derive(Default)]
pub(crate) struct Metrics {
    http: Mutex<HttpSeries>,
    append_latency: AtomicHistogram,
    subscriptions_open: Arc<AtomicU64>,
    subscriptions_total: AtomicU64,
    events_read: AtomicU64,
}

/// Route template → its series. Looked up by `&str`, so a request allocates nothing once its
/// route has been seen.
type HttpSeries = HashMap<String, RouteSeries>;

/// The series of one route template.
#[derive(Default)]
struct RouteSeries {
    /// (method, status) → count.
    requests: BTreeMap<(&'static str, u16), u64>,
    /// method → latency histogram.
    durations: BTreeMap<&'static str, Histogram>,
}

/// A histogram over [`HTTP_BUCKETS_SECONDS`] (non-cumulative counts, plus the overflow bucket).
#[derive(Clone, Default)]
struct Histogram {
    buckets: [u64; HTTP_BUCKETS_SECONDS.len() + 1],
    sum_seconds: f64,
    count: u64,
}

/// A lock-free histogram over [`FSYNC_BUCKETS_MICROS`].
#[derive(Default)]
struct AtomicHistogram {
    buckets: [AtomicU64; FSYNC_BUCKETS_MICROS.len() + 1],
    sum_micros: AtomicU64,
}

/// Decrements the open-subscriptions gauge when the subscription's producer ends.
pub(crate) struct SubscriptionGuard(Arc<AtomicU64>);

impl Drop for SubscriptionGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

impl Metrics {
    /// Counts one finished request.
    fn observe_request(&self, route: &str, method: &Method, status: u16, took: Duration) {
        let method = method_label(method);
        let seconds = took.as_secs_f64();
        let mut http = self.http.lock();
        let series = match http.get_mut(route) {
            Some(series) => series,
            None => http.entry(route.to_owned()).or_default(),
        };
        *series.requests.entry((method, status)).or_default() += 1;
        let h = series.durations.entry(method).or_default();
        let i = HTTP_BUCKETS_SECONDS.partition_point(|&b| b < seconds);
        h.buckets[i] += 1;
        h.sum_seconds += seconds;
        h.count += 1;
    }

    /// Records the latency of one successful append (request to durable acknowledgement).
    pub(crate) fn observe_append(&self, took: Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let i = FSYNC_BUCKETS_MICROS.partition_point(|&b| b < micros);
        self.append_latency.buckets[i].fetch_add(1, Relaxed);
        self.append_latency.sum_micros.fetch_add(micros, Relaxed);
    }

    /// Counts events sent to clients by reads and subscriptions.
    pub(crate) fn add_events_read(&self, n: usize) {
        self.events_read.fetch_add(n as u64, Relaxed);
    }

    /// Counts a new SSE subscription; the gauge drops again when the guard is dropped.
    pub(crate) fn subscription_opened(&self) -> SubscriptionGuard {
        self.subscriptions_open.fetch_add(1, Relaxed);
        self.subscriptions_total.fetch_add(1, Relaxed);
        SubscriptionGuard(self.subscriptions_open.clone())
    }

    /// The number of SSE subscriptions open now.
    pub(crate) fn open_subscriptions(&self) -> u64 {
        self.subscriptions_open.load(Relaxed)
    }
}

/// Bounded label values for methods (an unknown method must not create a new series each).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// The middleware: authenticates the request ([`crate::auth::authenticate`]), and counts every
/// response by its route template (`/streams/{stream}`, or `unmatched`), method and status, and
/// its latency to the response head.
pub(crate) async fn track(State(app): State<App>, req: Request, next: Next) -> Response {
    // `MatchedPath` is an `Arc<str>`: cloning it allocates nothing.
    let route = req.extensions().get::<MatchedPath>().cloned();
    let method = req.method().clone();
    let started = std::time::Instant::now();
    let response = crate::auth::authenticate(&app, req, next).await;
    app.metrics().observe_request(
        route.as_ref().map_or("unmatched", MatchedPath::as_str),
        &method,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// What the rendering needs besides [`Metrics`].
pub(crate) struct Snapshot {
    pub stats: StatsSnapshot,
    pub info: StoreInfo,
    pub read_only: bool,
    /// The last write ran out of disk space (cleared by the next write that succeeds).
    pub disk_full: bool,
    pub uptime: Duration,
}

/// Renders everything in the Prometheus text exposition format (version 0.0.4).
pub(crate) fn render(m: &Metrics, s: &Snapshot) -> String {
    let mut out = String::with_capacity(8192);
    let st = &s.stats;
    counter(
        &mut out,
        "strata_appends_total",
        "Appends acknowledged by the store (including deletes and metadata writes).",
        st.appends,
    );
    counter(
        &mut out,
        "strata_events_written_total",
        "Events written to the log (including system records).",
        st.events,
    );
    counter(
        &mut out,
        "strata_bytes_written_total",
        "Bytes written to segment files.",
        st.bytes,
    );
    counter(
        &mut out,
        "strata_commits_total",
        "Group commits (one write each).",
        st.commits,
    );
    counter(
        &mut out,
        "strata_fsyncs_total",
        "fdatasync calls.",
        st.fsyncs,
    );
    micros_histogram(
        &mut out,
        "strata_fsync_duration_seconds",
        "Latency of fdatasync.",
        &st.fsync_buckets,
        st.fsync_micros_total,
    );
    let append_buckets: Vec<u64> = m
        .append_latency
        .buckets
        .iter()
        .map(|b| b.load(Relaxed))
        .collect();
    micros_histogram(
        &mut out,
        "strata_append_duration_seconds",
        "Latency of successful HTTP appends, from the store call to the durable acknowledgement.",
        &append_buckets,
        m.append_latency.sum_micros.load(Relaxed),
    );
    counter(
        &mut out,
        "strata_events_read_total",
        "Events sent to clients by reads and subscriptions.",
        m.events_read.load(Relaxed),
    );
    gauge(
        &mut out,
        "strata_subscriptions_open",
        "Open SSE subscriptions.",
        m.open_subscriptions() as f64,
    );
    counter(
        &mut out,
        "strata_subscriptions_total",
        "SSE subscriptions opened.",
        m.subscriptions_total.load(Relaxed),
    );
    gauge(
        &mut out,
        "strata_log_next_position",
        "Events in the log (the position the next event gets).",
        s.info.next_position as f64,
    );
    gauge(
        &mut out,
        "strata_segments",
        "Segment files.",
        s.info.segment_count as f64,
    );
    gauge(
        &mut out,
        "strata_disk_bytes",
        "Bytes of segment and index files.",
        s.info.bytes_on_disk as f64,
    );
    gauge(
        &mut out,
        "strata_read_only",
        "1 when the store refuses writes after a storage fault.",
        if s.read_only { 1.0 } else { 0.0 },
    );
    gauge(
        &mut out,
        "strata_disk_full",
        "1 while appends fail because the disk is full (they resume once space is free).",
        if s.disk_full { 1.0 } else { 0.0 },
    );
    gauge(
        &mut out,
        "strata_uptime_seconds",
        "Seconds since the server started.",
        s.uptime.as_secs_f64(),
    );

    let http = m.http.lock();
    let mut routes: Vec<(&String, &RouteSeries)> = http.iter().collect();
    routes.sort_by(|a, b| a.0.cmp(b.0));
    header(
        &mut out,
        "strata_http_requests_total",
        "HTTP requests by route template, method and status.",
        "counter",
    );
    for (route, (method, status), n) in routes
        .iter()
        .flat_map(|(r, s)| s.requests.iter().map(move |(k, n)| (r, k, n)))
    {
        line(
            &mut out,
            "strata_http_requests_total",
            &format!(
                "route=\"{}\",method=\"{method}\",status=\"{status}\"",
                escape_label(route)
            ),
            *n as f64,
        );
    }
    header(
        &mut out,
        "strata_http_request_duration_seconds",
        "HTTP latency to the response head, by route template and method.",
        "histogram",
    );
    for (route, method, h) in routes
        .iter()
        .flat_map(|(r, s)| s.durations.iter().map(move |(m, h)| (r, m, h)))
    {
        let labels = format!("route=\"{}\",method=\"{method}\"", escape_label(route));
        let mut cumulative = 0;
        for (i, bound) in HTTP_BUCKETS_SECONDS.iter().enumerate() {
            cumulative += h.buckets[i];
            line(
                &mut out,
                "strata_http_request_duration_seconds_bucket",
                &format!("{labels},le=\"{bound}\""),
                cumulative as f64,
            );
        }
        line(
            &mut out,
            "strata_http_request_duration_seconds_bucket",
            &format!("{labels},le=\"+Inf\""),
            h.count as f64,
        );
        line(
            &mut out,
            "strata_http_request_duration_seconds_sum",
            &labels,
            h.sum_seconds,
        );
        line(
            &mut out,
            "strata_http_request_duration_seconds_count",
            &labels,
            h.count as f64,
        );
    }
    out
}

/// The `/metrics` values of one consumer group.
pub(crate) struct GroupSample {
    pub name: String,
    pub lag: u64,
    pub checkpoint: u64,
    pub in_flight: u64,
    pub parked: u64,
    pub waiting_polls: u64,
    pub deliveries: u64,
    pub acks: u64,
    pub nacks: u64,
    pub parks: u64,
    pub redeliveries: u64,
}

/// Renders the per-group series, labelled `group="<name>"`. Lag counts cursors between the
/// checkpoint and the source's head (log positions for `$all` and category sources).
pub(crate) fn render_groups(out: &mut String, groups: &[GroupSample]) {
    type Field = fn(&GroupSample) -> u64;
    let series: [(&str, &str, &str, Field); 10] = [
        ("strata_group_lag", "Cursors between a consumer group's checkpoint and its source's head (log positions for $all and category sources).", "gauge", |g| g.lag),
        ("strata_group_checkpoint", "A consumer group's checkpoint: every cursor below it is done.", "gauge", |g| g.checkpoint),
        ("strata_group_in_flight", "Events handed to a consumer and not yet acked.", "gauge", |g| g.in_flight),
        ("strata_group_parked", "Parked (dead-lettered) events.", "gauge", |g| g.parked),
        ("strata_group_waiting_polls", "Long polls waiting for events right now.", "gauge", |g| g.waiting_polls),
        ("strata_group_deliveries_total", "Events handed to consumers (redeliveries included).", "counter", |g| g.deliveries),
        ("strata_group_acks_total", "Events acked.", "counter", |g| g.acks),
        ("strata_group_nacks_total", "Nacks applied.", "counter", |g| g.nacks),
        ("strata_group_parks_total", "Events parked.", "counter", |g| g.parks),
        ("strata_group_redeliveries_total", "Deliveries after the first of an event (ack timeouts and retries).", "counter", |g| g.redeliveries),
    ];
    for (name, help, kind, field) in series {
        header(out, name, help, kind);
        for g in groups {
            line(
                out,
                name,
                &format!("group=\"{}\"", escape_label(&g.name)),
                field(g) as f64,
            );
        }
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn line(out: &mut String, name: &str, labels: &str, value: f64) {
    if labels.is_empty() {
        let _ = writeln!(out, "{name} {value}");
    } else {
        let _ = writeln!(out, "{name}{{{labels}}} {value}");
    }
}

fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    header(out, name, help, "counter");
    line(out, name, "", value as f64);
}

fn gauge(out: &mut String, name: &str, help: &str, value: f64) {
    header(out, name, help, "gauge");
    line(out, name, "", value);
}

/// A histogram kept in µs buckets of [`FSYNC_BUCKETS_MICROS`] (non-cumulative), in seconds.
fn micros_histogram(out: &mut String, name: &str, help: &str, buckets: &[u64], sum_micros: u64) {
    header(out, name, help, "histogram");
    let mut cumulative = 0;
    for (i, bound) in FSYNC_BUCKETS_MICROS.iter().enumerate() {
        cumulative += buckets.get(i).copied().unwrap_or(0);
        let le = *bound as f64 / 1e6;
        line(
            out,
            &format!("{name}_bucket"),
            &format!("le=\"{le}\""),
            cumulative as f64,
        );
    }
    let count: u64 = buckets.iter().sum();
    line(out, &format!("{name}_bucket"), "le=\"+Inf\"", count as f64);
    line(out, &format!("{name}_sum"), "", sum_micros as f64 / 1e6);
    line(out, &format!("{name}_count"), "", count as f64);
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.observe_request(
            "/streams/{stream}",
            &Method::POST,
            201,
            Duration::from_micros(300),
        );
        m.observe_request(
            "/streams/{stream}",
            &Method::POST,
            201,
            Duration::from_secs(20),
        );
        m.observe_append(Duration::from_micros(700));
        let _guard = m.subscription_opened();
        let mut stats = StatsSnapshot {
            appends: 2,
            fsyncs: 1,
            fsync_micros_total: 120,
            ..StatsSnapshot::default()
        };
        stats.fsync_buckets = vec![0; FSYNC_BUCKETS_MICROS.len() + 1];
        stats.fsync_buckets[2] = 1;
        let text = render(
            &m,
            &Snapshot {
                stats,
                info: StoreInfo {
                    dir: "/d".into(),
                    next_position: 5,
                    segment_count: 1,
                    bytes_on_disk: 100,
                },
                read_only: false,
                disk_full: true,
                uptime: Duration::from_secs(3),
            },
        );
        assert!(text.contains("strata_appends_total 2\n"));
        assert!(text.contains("strata_disk_full 1\n"));
        assert!(text.contains("strata_read_only 0\n"));
        assert!(text.contains("strata_fsync_duration_seconds_bucket{le=\"0.0001\"} 0\n"));
        assert!(text.contains("strata_fsync_duration_seconds_bucket{le=\"0.00025\"} 1\n"));
        assert!(text.contains("strata_fsync_duration_seconds_bucket{le=\"+Inf\"} 1\n"));
        assert!(text.contains("strata_fsync_duration_seconds_count 1\n"));
        assert!(text.contains("strata_append_duration_seconds_bucket{le=\"0.001\"} 1\n"));
        assert!(text.contains("strata_subscriptions_open 1\n"));
        assert!(text.contains(
            "strata_http_requests_total{route=\"/streams/{stream}\",method=\"POST\",status=\"201\"} 2\n"
        ));
        assert!(text.contains(
            "strata_http_request_duration_seconds_bucket{route=\"/streams/{stream}\",method=\"POST\",le=\"0.0005\"} 1\n"
        ));
        assert!(text.contains(
            "strata_http_request_duration_seconds_bucket{route=\"/streams/{stream}\",method=\"POST\",le=\"+Inf\"} 2\n"
        ));
        drop(_guard);
        assert_eq!(m.open_subscriptions(), 0);
    }

    #[test]
    fn renders_group_series() {
        let mut out = String::new();
        render_groups(
            &mut out,
            &[GroupSample {
                name: "bill\"ing".into(),
                lag: 7,
                checkpoint: 3,
                in_flight: 2,
                parked: 1,
                waiting_polls: 3,
                deliveries: 10,
                acks: 8,
                nacks: 1,
                parks: 1,
                redeliveries: 2,
            }],
        );
        assert!(out.contains("# TYPE strata_group_lag gauge\n"));
        assert!(
            out.contains("strata_group_lag{group=\"bill\\\"ing\"} 7\n"),
            "{out}"
        );
        assert!(out.contains("strata_group_redeliveries_total{group=\"bill\\\"ing\"} 2\n"));
        assert!(out.contains("# TYPE strata_group_waiting_polls gauge\n"));
        assert!(out.contains("strata_group_waiting_polls{group=\"bill\\\"ing\"} 3\n"));
        assert!(out.contains("# TYPE strata_group_acks_total counter\n"));
    }
}
