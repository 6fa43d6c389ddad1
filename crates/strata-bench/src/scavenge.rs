//! The scavenging scenarios (the server must seal segments for a scavenge to find anything:
//! run it with a small `--segment-size`, e.g. 16 MiB; docs/performance.md, "Scavenging").
//!
//! - `scavenge`: appends (`--clients`' first count, back to back) and whole-stream reads of the
//!   read set (as `read`) for `--duration` while nothing else runs, then the same while a
//!   throttled scavenge runs (`POST /admin/scavenge`, throttle `--scavenge-mb-per-s` or the
//!   server's default), over `--scavenge-garbage-mb` MiB of soft-deleted events written first.
//!   Reports append and read p99 in both phases and their ratio, then waits for the scavenge
//!   and reports its figures (bytes before / reclaimed, seconds, MiB/s).
//! - `bookkeeping`: the disk used by the server's own `$`-streams under steady load: a
//!   partitioned projection (`--bk-partitions` partitions, each state padded with
//!   `--bk-state-pad` bytes) and a consumer group (one consumer polling and acking) on a fresh
//!   category, while `--rate` events/s of `--payload` bytes are appended for `--duration`;
//!   every `--bk-sample` seconds the bytes on disk (`GET /info`) and the user payload appended
//!   so far are printed (the curve). With `--scavenge-every S` a scavenge is started every S
//!   seconds (the schedule, compressed). At the end one unthrottled scavenge, and the bytes on
//!   disk after it. `--bk-partitions 0` is the control: the same events, no projection, no group.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::append::{payload, timed_appends};
use crate::args::BenchArgs;
use crate::error::{Error, Result};
use crate::group::{ack, create_group, poll_answer};
use crate::http::{http_error, Target};
use crate::read::{ensure_read_set, timed_reads};
use crate::replay::fill;
use crate::report::{fmt_num, Report};

const MIB: f64 = 1_048_576.0;

/// `POST /admin/scavenge` with `body`; true when started (202), false when one runs (409).
async fn start_scavenge(target: &Target, body: Option<&str>) -> Result<bool> {
    let mut conn = target.connect().await?;
    let (status, answer) = conn
        .exchange(&target.request(
            "POST",
            "/admin/scavenge",
            "",
            Some(body.unwrap_or("{}").as_bytes()),
        ))
        .await?;
    match status {
        202 => Ok(true),
        409 => Ok(false),
        _ => Err(http_error(status, &answer)),
    }
}

/// Polls `GET /admin/scavenge` until the run is no longer `running`.
async fn wait_scavenge(target: &Target) -> Result<serde_json::Value> {
    loop {
        let s = target.get_json("/admin/scavenge").await?;
        if s["status"] != "running" {
            return Ok(s);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs the `scavenge` scenario once and adds its rows to `report`.
pub(crate) async fn scavenge(
    target: &Arc<Target>,
    tag: &str,
    args: &BenchArgs,
    dur: Duration,
    report: &mut Report,
) -> Result<String> {
    ensure_read_set(target, args).await?;
    // Garbage: events of streams then soft-deleted, sealed behind later writes.
    let garbage = format!("{tag}garbage");
    let n = ((args.scavenge_garbage_mb as f64 * MIB) / (args.payload as f64 + 120.0)) as u64;
    fill(target, &garbage, n.max(1), args.payload, "writing garbage").await?;
    let mut conn = target.connect().await?;
    for c in 0..4 {
        conn.call(
            &target.request("DELETE", &format!("/streams/{garbage}-{c}"), "", None),
            |s| s == 204,
        )
        .await?;
    }
    let clients = args.clients.first().copied().unwrap_or(1);
    let phase = |name: &'static str| {
        let (target, tag) = (target.clone(), format!("{tag}-{name}"));
        async move {
            let (appends, reads) = tokio::join!(
                timed_appends(&target, &tag, clients, 1, args, dur),
                timed_reads(&target, args.read_clients, args, dur)
            );
            Ok::<_, Error>((appends?, reads?))
        }
    };
    let (idle_a, idle_r) = phase("idle").await?;
    let body = args
        .scavenge_mb_per_s
        .map(|mb| format!("{{\"max_mb_per_s\":{mb}}}"));
    if !start_scavenge(target, body.as_deref()).await? {
        return Err(Error::Usage(
            "a scavenge is already running on the server".into(),
        ));
    }
    let t0 = Instant::now();
    let (busy_a, busy_r) = phase("busy").await?;
    let still_running = target.get_json("/admin/scavenge").await?["status"] == "running";
    let done = wait_scavenge(target).await?;
    let secs = t0.elapsed().as_secs_f64();
    let config = format!(
        "{clients} appender(s) + {} readers, throttle {}",
        args.read_clients,
        args.scavenge_mb_per_s
            .map_or("server default".to_owned(), |mb| format!("{mb} MiB/s"))
    );
    let rows = [
        ("append p99 µs idle", idle_a.lat.q(0.99)),
        ("append p99 µs scavenging", busy_a.lat.q(0.99)),
        ("append p99 ratio", busy_a.lat.q(0.99) / idle_a.lat.q(0.99)),
        ("read p99 µs idle", idle_r.lat.q(0.99)),
        ("read p99 µs scavenging", busy_r.lat.q(0.99)),
        ("read p99 ratio", busy_r.lat.q(0.99) / idle_r.lat.q(0.99)),
        ("appends/s idle", idle_a.rate()),
        ("appends/s scavenging", busy_a.rate()),
        (
            "scavenge MiB before",
            done["bytes_before"].as_f64().unwrap_or(0.0) / MIB,
        ),
        (
            "scavenge MiB reclaimed",
            done["bytes_reclaimed"].as_f64().unwrap_or(0.0) / MIB,
        ),
        ("scavenge seconds", secs),
        (
            "scavenge MiB/s (of bytes before)",
            done["bytes_before"].as_f64().unwrap_or(0.0) / MIB / secs,
        ),
    ];
    for (metric, value) in rows {
        report.add("scavenge", &config, metric, value);
    }
    Ok(format!(
        "append p99 {} → {} µs, read p99 {} → {} µs; scavenge {} in {:.1} s, {} MiB reclaimed{}",
        fmt_num(idle_a.lat.q(0.99)),
        fmt_num(busy_a.lat.q(0.99)),
        fmt_num(idle_r.lat.q(0.99)),
        fmt_num(busy_r.lat.q(0.99)),
        done["status"],
        secs,
        fmt_num(done["bytes_reclaimed"].as_f64().unwrap_or(0.0) / MIB),
        if still_running {
            ""
        } else {
            " (WARNING: it ended before the measured phase did)"
        }
    ))
}

/// The projection of the `bookkeeping` scenario.
fn bookkeeping_script(cat: &str, pad: usize) -> String {
    format!(
        "fromCategory('{cat}').partitionBy(e => e.data.k).when({{ \
         $init: () => ({{ n: 0, last: -1, pad: 'x'.repeat({pad}) }}), \
         $any: (s, e) => {{ s.n += 1; s.last = e.position; return s; }} }});"
    )
}

/// An event of the `bookkeeping` scenario: partition key `k`, `payload` bytes of JSON data.
fn bookkeeping_event(k: u64, payload_bytes: usize, seq: usize) -> String {
    let data = payload(payload_bytes.saturating_sub(16), seq);
    // `{"k":K,` spliced in front of the payload object.
    format!(
        "{{\"type\":\"BenchEvent\",\"data\":{{\"k\":{k},{}}}",
        &data[1..]
    )
}

/// Runs the `bookkeeping` scenario once on the fresh category `cat` (no `-` in it) and adds
/// its rows to `report`.
pub(crate) async fn bookkeeping(
    target: &Arc<Target>,
    cat: &str,
    args: &BenchArgs,
    dur: Duration,
    report: &mut Report,
) -> Result<String> {
    // `--bk-partitions 0`: the control run, the same events without projection and group.
    let control = args.bk_partitions == 0;
    let partitions = if control { 3000 } else { args.bk_partitions };
    let name = format!("{cat}-bk");
    if !control {
        let script = bookkeeping_script(cat, args.bk_state_pad);
        let mut conn = target.connect().await?;
        let mut put = format!(
            "PUT {}/projections/{name} HTTP/1.1\r\nHost: {}\r\n{}Content-Type: application/javascript\r\nContent-Length: {}\r\n\r\n",
            target.base, target.authority, target.auth_line, script.len()
        )
        .into_bytes();
        put.extend_from_slice(script.as_bytes());
        conn.call(&put, |s| s == 201 || s == 200).await?;
        create_group(target, &name, cat).await?;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let appended = Arc::new(AtomicU64::new(0));
    let payload_total = Arc::new(AtomicU64::new(0));
    // The consumer: poll, ack, until stopped.
    let consumer = {
        let (target, stop, name) = (target.clone(), stop.clone(), name.clone());
        tokio::spawn(async move {
            let mut conn = target.connect().await?;
            let poll = target.request(
                "POST",
                &format!("/groups/{name}/poll?max=500&wait_ms=200"),
                "",
                Some(b"{}"),
            );
            while !control && !stop.load(Relaxed) {
                let (status, body) = conn.exchange(&poll).await?;
                if status != 200 {
                    return Err(http_error(status, &body));
                }
                let answer = poll_answer(&body)?;
                if !answer.messages.is_empty() {
                    ack(&mut conn, &target, &name, &answer.messages).await?;
                }
            }
            Ok::<_, Error>(())
        })
    };
    // Publishers: `--rate` events/s over 4 connections, each on its own schedule.
    const PUBLISHERS: u64 = 4;
    let mut publishers = Vec::new();
    for p in 0..PUBLISHERS {
        let (target, appended, payload_total) =
            (target.clone(), appended.clone(), payload_total.clone());
        let (cat, rate, payload_bytes) = (cat.to_owned(), u64::from(args.rate), args.payload);
        publishers.push(tokio::spawn(async move {
            let mut conn = target.connect().await?;
            let start = tokio::time::Instant::now();
            let per = Duration::from_secs_f64(PUBLISHERS as f64 / rate.max(1) as f64);
            let mut i = 0u64;
            loop {
                let at = start + per * u32::try_from(i).unwrap_or(u32::MAX);
                if at.duration_since(start) >= dur {
                    return Ok::<_, Error>(());
                }
                tokio::time::sleep_until(at).await;
                let seq = i * PUBLISHERS + p;
                let k = seq % partitions;
                let body = bookkeeping_event(k, payload_bytes, seq as usize);
                conn.append_one(&target, &format!("{cat}-{k}"), &body)
                    .await?;
                appended.fetch_add(1, Relaxed);
                payload_total.fetch_add(body.len() as u64, Relaxed);
                i += 1;
            }
        }));
    }
    let disk = || async {
        Ok::<_, Error>(
            target.get_json("/info").await?["bytes_on_disk"]
                .as_u64()
                .unwrap_or(0),
        )
    };
    let start_bytes = disk().await?;
    let t0 = Instant::now();
    let sample = Duration::from_secs_f64(args.bk_sample.max(0.1));
    let every = (args.scavenge_every > 0.0).then(|| Duration::from_secs_f64(args.scavenge_every));
    let mut next_sample = sample;
    let mut next_scavenge = every;
    let mut scavenges = 0u32;
    eprintln!("bookkeeping curve: seconds, MiB on disk (growth since start), MiB of user payload appended");
    while t0.elapsed() < dur {
        let now = t0.elapsed();
        if let Some(at) = next_scavenge.filter(|at| now >= *at) {
            if start_scavenge(target, None).await? {
                scavenges += 1;
            }
            next_scavenge = every.map(|e| at + e);
        }
        if now >= next_sample {
            let bytes = disk().await?;
            eprintln!(
                "  {:>6.0} s  {:>8.1} MiB  {:>8.1} MiB",
                now.as_secs_f64(),
                bytes.saturating_sub(start_bytes) as f64 / MIB,
                payload_total.load(Relaxed) as f64 / MIB
            );
            next_sample += sample;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for p in publishers {
        p.await
            .map_err(|e| crate::http::task_failed("publisher", e))??;
    }
    // Let the projection and the group catch up, then stop the consumer.
    tokio::time::sleep(dur.min(Duration::from_secs(3))).await;
    stop.store(true, Relaxed);
    consumer
        .await
        .map_err(|e| crate::http::task_failed("consumer", e))??;
    wait_scavenge(target).await?;
    let end_bytes = disk().await?;
    if !start_scavenge(target, Some("{\"max_mb_per_s\":0}")).await? {
        wait_scavenge(target).await?;
        start_scavenge(target, Some("{\"max_mb_per_s\":0}")).await?;
    }
    let done = wait_scavenge(target).await?;
    let after_bytes = disk().await?;
    let payload_mib = payload_total.load(Relaxed) as f64 / MIB;
    let config = format!(
        "{} events/s for {} s, {}, scavenge every {}",
        args.rate,
        dur.as_secs(),
        if control {
            "no projection, no group (control)".to_owned()
        } else {
            format!(
                "{partitions} partitions (state pad {} B), 1 group",
                args.bk_state_pad
            )
        },
        every.map_or("never".to_owned(), |e| format!("{} s", e.as_secs_f64()))
    );
    let grown = end_bytes.saturating_sub(start_bytes) as f64 / MIB;
    let kept = after_bytes.saturating_sub(start_bytes) as f64 / MIB;
    for (metric, value) in [
        ("events appended", appended.load(Relaxed) as f64),
        ("user payload MiB (request bodies)", payload_mib),
        ("disk growth MiB at the end", grown),
        ("disk growth MiB after a final scavenge", kept),
        (
            "final scavenge MiB reclaimed",
            done["bytes_reclaimed"].as_f64().unwrap_or(0.0) / MIB,
        ),
        ("scavenges during the run", f64::from(scavenges)),
    ] {
        report.add("bookkeeping", &config, metric, value);
    }
    // Clean up (their state streams are tombstoned).
    let mut conn = target.connect().await?;
    let _ = conn
        .exchange(&target.request("DELETE", &format!("/projections/{name}"), "", None))
        .await?;
    let _ = conn
        .exchange(&target.request("DELETE", &format!("/groups/{name}"), "", None))
        .await?;
    Ok(format!(
        "{} MiB of payload: disk grew {grown:.1} MiB, {kept:.1} MiB after a final scavenge",
        fmt_num(payload_mib)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_and_scripts() {
        let e: serde_json::Value = serde_json::from_str(&bookkeeping_event(7, 220, 3)).unwrap();
        assert_eq!(e["data"]["k"], 7);
        assert!(bookkeeping_script("c", 10).contains("'x'.repeat(10)"));
    }
}
