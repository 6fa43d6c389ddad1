//! Scavenging in the server: one run at a time of [`Store::scavenge`] on a thread of its own,
//! its status (`GET /admin/scavenge`), the schedule of `--scavenge-interval`, and the
//! `strata_scavenge_*` metrics. The endpoints are in [`http`].
//!
//! A run is started by `POST /admin/scavenge` or by the schedule; while it runs another start is
//! refused (409 `conflict`; the schedule skips its turn). It stops when asked
//! (`DELETE /admin/scavenge`) or at server shutdown, which joins its thread before the store
//! closes: a stopped run leaves the store consistent and the next one finishes the job.
//!
//! Status `idle` means no run is going on: none ran yet (`started` null), or the last one
//! finished (`finished` set, `error` null); `stopped` and `failed` describe the last run.

pub(crate) mod http;
pub(crate) mod openapi;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::{json, Value};
use strata_store::{ScavengeOptions, ScavengeProgress, Store};

use crate::error::{Error, Result};
use crate::format_timestamp;

/// Default throttle of a run (read + written bytes per second): chosen so that append and
/// stream-read p99 latency stay within 2× of idle while it runs (docs/performance.md,
/// "Append and read p99 while a scavenge runs"): at 16 MiB/s read p99 over HTTP was 2.3× idle
/// on a loaded 2-vCPU machine, at 8 MiB/s 0.6× (append p99 within 2× at both).
pub const DEFAULT_MAX_BYTES_PER_S: u64 = 8 << 20;

/// How the server scavenges ([`crate::Config::scavenge`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScavengeConfig {
    /// Start a run this long after the server started, and again every interval (a turn is
    /// skipped while one runs). `None`: no schedule. Default `None`.
    pub interval: Option<Duration>,
    /// Throttle of runs that do not choose their own (the schedule's, and a `POST` without
    /// `max_mb_per_s`): bytes read + written per second; `None` = unthrottled. Default
    /// [`DEFAULT_MAX_BYTES_PER_S`].
    pub max_bytes_per_s: Option<u64>,
}

impl Default for ScavengeConfig {
    fn default() -> Self {
        ScavengeConfig {
            interval: None,
            max_bytes_per_s: Some(DEFAULT_MAX_BYTES_PER_S),
        }
    }
}

/// What `status` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Status {
    Idle,
    Running,
    Stopped,
    Failed,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Idle => "idle",
            Status::Running => "running",
            Status::Stopped => "stopped",
            Status::Failed => "failed",
        }
    }
}

/// The last or current run.
struct Run {
    status: Status,
    /// µs since the Unix epoch.
    started: Option<i64>,
    finished: Option<i64>,
    progress: ScavengeProgress,
    error: Option<String>,
    stop: Arc<AtomicBool>,
}

/// Counters over every run since the server started (the metrics).
#[derive(Default)]
struct Totals {
    bytes_reclaimed: AtomicU64,
    segments: AtomicU64,
    events_removed: AtomicU64,
    /// Of the last finished run, µs.
    last_duration_micros: AtomicU64,
    running: AtomicBool,
}

struct Shared {
    store: Store,
    config: ScavengeConfig,
    run: Mutex<Run>,
    totals: Totals,
    /// The thread of the current (or last) run.
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Set at shutdown: no new run starts.
    closed: AtomicBool,
}

/// The server's scavenger. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Scavenger {
    shared: Arc<Shared>,
}

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

impl Scavenger {
    /// A scavenger of `store`, idle.
    pub(crate) fn new(store: Store, config: ScavengeConfig) -> Self {
        Scavenger {
            shared: Arc::new(Shared {
                store,
                config,
                run: Mutex::new(Run {
                    status: Status::Idle,
                    started: None,
                    finished: None,
                    progress: ScavengeProgress::default(),
                    error: None,
                    stop: Arc::new(AtomicBool::new(false)),
                }),
                totals: Totals::default(),
                thread: Mutex::new(None),
                closed: AtomicBool::new(false),
            }),
        }
    }

    /// The configured schedule interval.
    pub(crate) fn interval(&self) -> Option<Duration> {
        self.shared.config.interval
    }

    /// Starts a run throttled at `max_bytes_per_s` (`None`: the configured default; `Some(0)`:
    /// unthrottled) and returns its status. 409 `conflict` while one runs, 503 once the server
    /// is shutting down.
    pub(crate) fn start(&self, max_bytes_per_s: Option<u64>) -> Result<Value> {
        let shared = &self.shared;
        let mut run = shared.run.lock();
        if run.status == Status::Running {
            return Err(Error::Conflict(
                "a scavenge is already running: GET /admin/scavenge follows it, \
                 DELETE /admin/scavenge stops it"
                    .into(),
            ));
        }
        if shared.closed.load(Relaxed) {
            return Err(Error::Unavailable("the server is shutting down".into()));
        }
        let rate = match max_bytes_per_s {
            None => shared.config.max_bytes_per_s,
            Some(0) => None,
            Some(n) => Some(n),
        };
        let stop = Arc::new(AtomicBool::new(false));
        *run = Run {
            status: Status::Running,
            started: Some(now_micros()),
            finished: None,
            progress: ScavengeProgress::default(),
            error: None,
            stop: stop.clone(),
        };
        shared.totals.running.store(true, Relaxed);
        let worker = self.shared.clone();
        let spawned = std::thread::Builder::new()
            .name("strata-scavenge".into())
            .spawn(move || worker.execute(rate, stop));
        match spawned {
            Ok(handle) => {
                // The previous run's thread has ended (its status was not `running`).
                let previous = shared.thread.lock().replace(handle);
                if let Some(previous) = previous {
                    let _ = previous.join();
                }
            }
            Err(e) => {
                run.status = Status::Failed;
                run.finished = run.started;
                run.error = Some(format!("could not start the scavenge thread: {e}"));
                shared.totals.running.store(false, Relaxed);
            }
        }
        Ok(view(&run))
    }

    /// The status object of the last or current run.
    pub(crate) fn status(&self) -> Value {
        view(&self.shared.run.lock())
    }

    /// Asks a running run to stop and waits (at most `patience`) for it to end. Returns the
    /// status afterwards (unchanged when none was running). Blocking.
    pub(crate) fn stop(&self, patience: Duration) -> Value {
        self.shared.run.lock().stop.store(true, Relaxed);
        let deadline = Instant::now() + patience;
        while self.shared.run.lock().status == Status::Running && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.status()
    }

    /// Shutdown: no new run starts, a running one stops, its thread is joined. Blocking.
    pub(crate) fn close(&self) {
        {
            // Under the run lock: a start either stored its thread already or sees `closed`.
            let run = self.shared.run.lock();
            self.shared.closed.store(true, Relaxed);
            run.stop.store(true, Relaxed);
        }
        let thread = self.shared.thread.lock().take();
        if let Some(thread) = thread {
            if thread.join().is_err() {
                tracing::error!("the scavenge thread panicked");
            }
        }
    }

    /// Appends the `strata_scavenge_*` series to `out` (Prometheus text).
    pub(crate) fn render_metrics(&self, out: &mut String) {
        use std::fmt::Write as _;
        let t = &self.shared.totals;
        let series: [(&str, &str, &str, String); 5] = [
            (
                "strata_scavenge_bytes_reclaimed_total",
                "counter",
                "Bytes of sealed segments (and their index files) reclaimed by scavenges.",
                t.bytes_reclaimed.load(Relaxed).to_string(),
            ),
            (
                "strata_scavenge_segments_rewritten_total",
                "counter",
                "Sealed segments processed (rewritten without removed events, or merged) by scavenges.",
                t.segments.load(Relaxed).to_string(),
            ),
            (
                "strata_scavenge_events_removed_total",
                "counter",
                "Events removed by scavenges.",
                t.events_removed.load(Relaxed).to_string(),
            ),
            (
                "strata_scavenge_running",
                "gauge",
                "1 while a scavenge runs, else 0.",
                u8::from(t.running.load(Relaxed)).to_string(),
            ),
            (
                "strata_scavenge_last_duration_seconds",
                "gauge",
                "Duration of the last finished (or stopped, or failed) scavenge; 0 before any.",
                (t.last_duration_micros.load(Relaxed) as f64 / 1e6).to_string(),
            ),
        ];
        for (name, kind, help, value) in series {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
    }
}

impl Shared {
    /// The body of a run's thread.
    fn execute(&self, max_bytes_per_s: Option<u64>, stop: Arc<AtomicBool>) {
        let started = Instant::now();
        tracing::info!(max_bytes_per_s, "scavenge started");
        let mut last = ScavengeProgress::default();
        let options = ScavengeOptions {
            max_bytes_per_s,
            stop,
        };
        let result = self.store.scavenge(options, &mut |p: &ScavengeProgress| {
            self.count(&last, p);
            last = p.clone();
            self.run.lock().progress = p.clone();
        });
        if let Ok(p) = &result {
            self.count(&last, p);
        }
        let took = started.elapsed();
        let mut run = self.run.lock();
        run.finished = Some(now_micros());
        match result {
            Ok(p) => {
                run.status = if p.stopped {
                    Status::Stopped
                } else {
                    Status::Idle
                };
                tracing::info!(
                    stopped = p.stopped,
                    segments = p.segments_done,
                    bytes_reclaimed = p.bytes_reclaimed,
                    events_removed = p.events_removed,
                    seconds = took.as_secs_f64(),
                    "scavenge ended"
                );
                run.progress = p;
            }
            Err(e) => {
                tracing::warn!(error = %e, "scavenge failed");
                run.status = Status::Failed;
                run.error = Some(e.to_string());
            }
        }
        self.totals
            .last_duration_micros
            .store(u64::try_from(took.as_micros()).unwrap_or(u64::MAX), Relaxed);
        self.totals.running.store(false, Relaxed);
    }

    /// Adds what `now` did beyond `before` to the totals.
    fn count(&self, before: &ScavengeProgress, now: &ScavengeProgress) {
        let t = &self.totals;
        t.bytes_reclaimed.fetch_add(
            now.bytes_reclaimed.saturating_sub(before.bytes_reclaimed),
            Relaxed,
        );
        t.segments.fetch_add(
            now.segments_done.saturating_sub(before.segments_done),
            Relaxed,
        );
        t.events_removed.fetch_add(
            now.events_removed.saturating_sub(before.events_removed),
            Relaxed,
        );
    }
}

/// The status object of `run` (docs/http-api.md, "Scavenging").
fn view(run: &Run) -> Value {
    let p = &run.progress;
    json!({
        "status": run.status.as_str(),
        "started": run.started.map(format_timestamp),
        "finished": run.finished.map(format_timestamp),
        "segments_done": p.segments_done,
        "segments_total": p.segments_total,
        "bytes_before": p.bytes_before,
        "bytes_after": p.bytes_after,
        "bytes_reclaimed": p.bytes_reclaimed,
        "events_removed": p.events_removed,
        "error": run.error,
    })
}

/// The schedule: a run every `interval` (the first one `interval` after the start) until the
/// task is aborted. A turn that finds a run going on is skipped.
pub(crate) async fn schedule(scavenger: Scavenger, interval: Duration) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match scavenger.start(None) {
            Ok(_) => tracing::info!("scheduled scavenge started"),
            Err(Error::Conflict(_)) => {
                tracing::info!("scheduled scavenge skipped: one is running");
            }
            Err(e) => {
                tracing::info!(error = %e, "scheduled scavenges end");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &std::path::Path) -> Store {
        let options = strata_store::Options {
            fsync: strata_store::FsyncPolicy::Never,
            segment_size: 4096,
            ..strata_store::Options::default()
        };
        Store::open(dir, options).unwrap()
    }

    fn wait_done(s: &Scavenger) -> Value {
        loop {
            let v = s.status();
            if v["status"] != "running" {
                return v;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_run_reports_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        for i in 0..200 {
            store
                .append(
                    &format!("s-{}", i % 4),
                    strata_store::ExpectedRevision::Any,
                    vec![strata_store::NewEvent::json("T", format!("{{\"i\":{i}}}"))],
                )
                .unwrap();
        }
        store
            .delete_stream("s-1", strata_store::ExpectedRevision::Any, false)
            .unwrap();
        let s = Scavenger::new(store.clone(), ScavengeConfig::default());
        let idle = s.status();
        assert_eq!(idle["status"], "idle");
        assert!(idle["started"].is_null());
        let started = s.start(Some(0)).unwrap();
        assert!(started["started"].is_string());
        let done = wait_done(&s);
        assert_eq!(done["status"], "idle", "{done}");
        assert!(done["finished"].is_string());
        assert!(done["error"].is_null());
        let mut text = String::new();
        s.render_metrics(&mut text);
        assert!(text.contains("strata_scavenge_running 0"), "{text}");
        assert_eq!(
            done["bytes_reclaimed"].as_u64().unwrap() > 0,
            !text.contains("strata_scavenge_bytes_reclaimed_total 0\n")
        );
        s.close();
        assert!(matches!(s.start(None), Err(Error::Unavailable(_))));
        store.close().unwrap();
    }

    #[test]
    fn stop_without_a_run_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let s = Scavenger::new(store.clone(), ScavengeConfig::default());
        assert_eq!(s.stop(Duration::from_secs(1))["status"], "idle");
        s.close();
        store.close().unwrap();
    }
}
