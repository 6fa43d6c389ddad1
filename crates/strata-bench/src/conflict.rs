//! The `conflict` scenario: `--racers` (16) clients, each on its own keep-alive connection,
//! appending one event at a time to ONE fresh stream with an exact `Expected-Revision`; a `409`
//! answer's `actual` field is the revision the racer retries with. Reports successful appends
//! per second next to the raw fsync rate of the data directory's file system, measured in the
//! same run, half just before and half just after ([`fsync_rate`]): with fsync on, every success needs its own durable
//! commit, so that rate bounds the scenario.
//!
//! Afterwards the stream is read back and checked: its revisions dense from 0, exactly one
//! event per success, and no two successes acknowledged at one revision. Any anomaly is
//! counted in the report (and is a bug of the server).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Barrier;

use crate::append::append_body;
use crate::args::BenchArgs;
use crate::error::{Error, Result};
use crate::http::{http_error, join_all, Target};
use crate::probe::{CpuProbe, CpuUse};
use crate::report::{fmt_num, tick, timed_bar, Report};

/// The result of a `conflict` run.
pub(crate) struct ConflictRun {
    pub(crate) successes: u64,
    pub(crate) conflicts: u64,
    pub(crate) secs: f64,
    /// `fdatasync`s per second of a lone writer in the data directory, when measurable.
    pub(crate) fsync_rate: Option<f64>,
    /// Duplicated revisions, gaps and count mismatches found afterwards.
    pub(crate) anomalies: u64,
    pub(crate) cpu: CpuUse,
}

impl ConflictRun {
    fn rate(&self) -> f64 {
        self.successes as f64 / self.secs
    }

    pub(crate) fn summary(&self) -> String {
        let fsync = self.fsync_rate.map_or_else(
            || "raw fsync rate not measured".to_owned(),
            |f| {
                format!(
                    "raw fsync rate {}/s, ratio {:.2}",
                    fmt_num(f),
                    self.rate() / f
                )
            },
        );
        format!(
            "{} successes/s, {} conflicts (409) per success; {fsync}; {} anomalies",
            fmt_num(self.rate()),
            fmt_num(self.conflicts as f64 / self.successes.max(1) as f64),
            self.anomalies,
        ) + &self.cpu.summary(self.successes, "success")
    }

    pub(crate) fn record(&self, report: &mut Report, config: &str) {
        report.add("conflict", config, "successes/s", self.rate());
        report.add(
            "conflict",
            config,
            "409s per success",
            self.conflicts as f64 / self.successes.max(1) as f64,
        );
        if let Some(f) = self.fsync_rate {
            report.add("conflict", config, "raw fsyncs/s", f);
            report.add("conflict", config, "successes / raw fsync", self.rate() / f);
        }
        report.add("conflict", config, "anomalies", self.anomalies as f64);
        self.cpu
            .record(report, "conflict", config, self.successes, "success");
    }
}

/// Most time [`fsync_rate`] measures for in a run.
const FSYNC_PROBE: Duration = Duration::from_secs(2);

/// `write` of 512 bytes + `fdatasync`, back to back for `dur`, in a scratch file of
/// `dir` (removed afterwards): the durable commits per second one writer gets from that file
/// system. `None` when `dir` is not a local directory.
pub(crate) fn fsync_rate(dir: &Path, dur: Duration) -> Option<f64> {
    if !dir.is_dir() {
        return None;
    }
    let path = dir.join(format!(".strata-bench-fsync-{}", std::process::id()));
    let measure = || -> std::io::Result<f64> {
        let mut file = std::fs::OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)?;
        let block = [b'x'; 512];
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < dur {
            file.write_all(&block)?;
            file.sync_data()?;
            n += 1;
        }
        Ok(n as f64 / start.elapsed().as_secs_f64())
    };
    let rate = measure();
    let _ = std::fs::remove_file(&path);
    rate.ok()
}

/// What a 409 `wrong_expected_revision` says the stream's last revision is (`None`: no stream).
fn actual_of(body: &[u8]) -> Result<Option<u64>> {
    let v: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| Error::Io(std::io::Error::other(format!("409 body not JSON: {e}"))))?;
    match &v["actual"] {
        serde_json::Value::Number(n) => Ok(n.as_u64()),
        serde_json::Value::String(s) if s == "no_stream" => Ok(None),
        other => Err(Error::Io(std::io::Error::other(format!(
            "409 without a usable `actual`: {other}"
        )))),
    }
}

/// `racers` clients racing on one fresh stream for `dur`.
pub(crate) async fn conflict(
    target: &Arc<Target>,
    tag: &str,
    racers: usize,
    args: &BenchArgs,
    dur: Duration,
    fsync_dir: Option<PathBuf>,
) -> Result<ConflictRun> {
    // Half of the probe just before the race, half just after: drifting load from other users
    // of the disk hits both sides of the ratio alike.
    let probe = |dir: Option<PathBuf>| async move {
        let dir = dir?;
        tokio::task::spawn_blocking(move || fsync_rate(&dir, dur.min(FSYNC_PROBE) / 2))
            .await
            .ok()
            .flatten()
    };
    let fsync_before = probe(fsync_dir.clone()).await;
    let stream = format!("{tag}-conflict");
    let path = format!("/streams/{stream}");
    let body = Arc::new(append_body(1, args.payload, 0));
    let cpu = CpuProbe::start(args.server_pid);
    let barrier = Arc::new(Barrier::new(racers + 1));
    let count = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(racers);
    for _ in 0..racers {
        let (target, barrier, count, body, path) = (
            target.clone(),
            barrier.clone(),
            count.clone(),
            body.clone(),
            path.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let conn = target.connect().await;
            barrier.wait().await;
            let mut conn = conn?;
            // The stream's last revision as this racer believes it (`None`: no stream yet).
            let mut expected: Option<u64> = None;
            let mut won = Vec::new();
            let mut conflicts = 0u64;
            let deadline = Instant::now() + dur;
            while Instant::now() < deadline {
                let header = match expected {
                    Some(n) => format!("Expected-Revision: {n}\r\n"),
                    None => "Expected-Revision: no_stream\r\n".to_owned(),
                };
                let request = target.request("POST", &path, &header, Some(&body));
                let (status, answer) = conn.exchange(&request).await?;
                match status {
                    201 => {
                        let v: serde_json::Value =
                            serde_json::from_slice(&answer).map_err(|e| {
                                Error::Io(std::io::Error::other(format!("201 body: {e}")))
                            })?;
                        let rev = v["first_revision"].as_u64().ok_or_else(|| {
                            Error::Io(std::io::Error::other("201 without first_revision"))
                        })?;
                        won.push((expected, rev));
                        expected = Some(rev);
                        count.fetch_add(1, Relaxed);
                    }
                    409 => {
                        conflicts += 1;
                        expected = actual_of(&answer)?;
                    }
                    _ => return Err(http_error(status, &answer)),
                }
            }
            Ok::<_, Error>((won, conflicts, Instant::now()))
        }));
    }
    barrier.wait().await;
    let start = Instant::now();
    let bar = timed_bar(&format!("conflict, {racers} racers"), dur);
    let ticker = tick(bar.clone(), start, count.clone());
    let (results, failure) = join_all(tasks, "racer").await;
    ticker.abort();
    let _ = ticker.await;
    bar.finish_and_clear();
    let cpu = cpu.stop();
    if let Some(e) = failure {
        return Err(e);
    }
    let fsync_rate = match (fsync_before, probe(fsync_dir).await) {
        (Some(a), Some(b)) => Some((a + b) / 2.0),
        (a, b) => a.or(b),
    };
    let last = results.iter().map(|r| r.2).max().unwrap_or(start);
    let conflicts = results.iter().map(|r| r.1).sum();
    let mut anomalies = 0u64;
    let mut revisions = Vec::new();
    for (expected, rev) in results.into_iter().flat_map(|r| r.0) {
        // A success lands right after the revision it expected.
        if rev != expected.map_or(0, |e| e + 1) {
            anomalies += 1;
        }
        revisions.push(rev);
    }
    revisions.sort_unstable();
    let before = revisions.len();
    revisions.dedup();
    anomalies += (before - revisions.len()) as u64;
    let stored = stored_revisions(target, &path).await?;
    if stored.len() != before {
        anomalies += 1;
    }
    anomalies += stored
        .iter()
        .enumerate()
        .filter(|&(i, &r)| r != i as u64)
        .count() as u64;
    Ok(ConflictRun {
        successes: before as u64,
        conflicts,
        secs: last.duration_since(start).as_secs_f64(),
        fsync_rate,
        anomalies,
        cpu,
    })
}

/// Every revision of the stream at `path`, in order, read back in pages.
async fn stored_revisions(target: &Target, path: &str) -> Result<Vec<u64>> {
    let mut conn = target.connect().await?;
    let mut out = Vec::new();
    let mut from = "start".to_owned();
    loop {
        let request = target.request(
            "GET",
            &format!("{path}?from={from}&limit=10000"),
            "Accept: application/json\r\n",
            None,
        );
        let (status, body) = conn.exchange(&request).await?;
        if status == 404 {
            return Ok(out);
        }
        if status != 200 {
            return Err(http_error(status, &body));
        }
        let page: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| Error::Io(std::io::Error::other(format!("page: {e}"))))?;
        if let Some(events) = page["events"].as_array() {
            out.extend(events.iter().filter_map(|e| e["revision"].as_u64()));
        }
        match page["next"].as_u64() {
            Some(n) if page["end"] != true => from = n.to_string(),
            _ => return Ok(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actual_revisions() {
        let body = br#"{"error":"wrong_expected_revision","message":"m","expected":3,"actual":7}"#;
        assert_eq!(actual_of(body).unwrap(), Some(7));
        let body = br#"{"error":"wrong_expected_revision","expected":3,"actual":"no_stream"}"#;
        assert_eq!(actual_of(body).unwrap(), None);
        assert!(actual_of(b"{}").is_err());
    }

    #[test]
    fn fsync_rate_of_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let brief = Duration::from_millis(30);
        assert!(fsync_rate(dir.path(), brief).unwrap() > 0.0);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        assert!(fsync_rate(&dir.path().join("missing"), brief).is_none());
    }
}
