//! `strata scavenge`: start a scavenge on a running server (or follow the one running) and show
//! its progress until it ends: a progress bar on stderr (segments, bytes reclaimed, rate, ETA),
//! then the final status object on stdout (one JSON line). Exit 0 when the run finished, 1 when
//! it failed or was stopped. Ctrl-C ends only this command: the scavenge goes on on the server
//! (`strata scavenge --stop` stops it; `--status` shows it).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use crate::cli::ScavengeArgs;
use crate::client::{one_line, Client};
use crate::error::{Error, Result};

const PATH: &str = "/admin/scavenge";
/// How often the status is read while following a run.
const POLL: Duration = Duration::from_millis(250);

/// Runs the command.
pub fn run(args: ScavengeArgs) -> Result<ExitCode> {
    let client = Client::new(&args.client)?;
    if args.status {
        let (_, text) = client.json("GET", PATH, &[], None)?;
        println!("{}", one_line(&text));
        return Ok(ExitCode::SUCCESS);
    }
    if args.stop {
        let (_, text) = client.json("DELETE", PATH, &[], None)?;
        println!("{}", one_line(&text));
        return Ok(ExitCode::SUCCESS);
    }
    let body = match args.max_mb_per_s {
        Some(mb) if !(mb.is_finite() && mb >= 0.0) => {
            return Err(Error::Usage(format!(
                "--max-mb-per-s must be ≥ 0 (0 = unthrottled), not {mb}"
            )))
        }
        Some(mb) => Some(serde_json::json!({ "max_mb_per_s": mb }).to_string()),
        None => None,
    };
    match client.json("POST", PATH, &[], body.as_deref()) {
        Ok(_) => eprintln!(
            "scavenge started; Ctrl-C leaves it running on the server \
             (`strata scavenge --stop` stops it)"
        ),
        Err(Error::Http { status: 409, .. }) => eprintln!(
            "a scavenge is already running; following it (Ctrl-C leaves it running, \
             `strata scavenge --stop` stops it)"
        ),
        Err(e) => return Err(e),
    }
    let last = follow(&client)?;
    println!("{last}");
    match last["status"].as_str() {
        Some("idle") => Ok(ExitCode::SUCCESS),
        Some("stopped") => {
            eprintln!(
                "strata: the scavenge was stopped before the end; the next one finishes the job"
            );
            Ok(ExitCode::FAILURE)
        }
        _ => {
            eprintln!(
                "strata: the scavenge failed: {}",
                last["error"].as_str().unwrap_or("(no reason given)")
            );
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Reads the status until the run is no longer `running`, drawing the progress bar; returns
/// the last status.
fn follow(client: &Client) -> Result<Value> {
    let bar = ProgressBar::new(0);
    if let Ok(style) =
        ProgressStyle::with_template("scavenging segments {pos}/{len} [{bar:30}] {msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    let started = Instant::now();
    loop {
        let (_, text) = client.json("GET", PATH, &[], None)?;
        let status: Value = serde_json::from_str(&text).map_err(|e| Error::Http {
            status: 200,
            message: format!("unreadable scavenge status: {e}"),
        })?;
        let n = |k: &str| status[k].as_u64().unwrap_or(0);
        bar.set_length(n("segments_total"));
        bar.set_position(n("segments_done"));
        bar.set_message(progress_message(
            n("segments_done"),
            n("segments_total"),
            n("bytes_before"),
            n("bytes_reclaimed"),
            started.elapsed(),
        ));
        if status["status"] != "running" {
            bar.finish_and_clear();
            return Ok(status);
        }
        std::thread::sleep(POLL);
    }
}

/// `reclaimed X MiB of Y MiB, R MiB/s, ETA Ts`: the rate and ETA are estimated from the share
/// of segments done (segments are processed in order, each about the same size).
fn progress_message(
    done: u64,
    total: u64,
    bytes_before: u64,
    reclaimed: u64,
    elapsed: Duration,
) -> String {
    let mib = |b: f64| b / f64::from(1u32 << 20);
    let secs = elapsed.as_secs_f64().max(1e-3);
    let mut out = format!(
        "reclaimed {:.1} MiB of {:.1} MiB",
        mib(reclaimed as f64),
        mib(bytes_before as f64)
    );
    if done > 0 && total > 0 {
        let processed = bytes_before as f64 * done as f64 / total as f64;
        let eta = secs * (total - done.min(total)) as f64 / done as f64;
        out.push_str(&format!(
            ", {:.1} MiB/s, ETA {:.0} s",
            mib(processed) / secs,
            eta
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages() {
        let m = progress_message(0, 4, 8 << 20, 0, Duration::from_secs(1));
        assert_eq!(m, "reclaimed 0.0 MiB of 8.0 MiB");
        let m = progress_message(1, 4, 8 << 20, 1 << 20, Duration::from_secs(2));
        assert_eq!(m, "reclaimed 1.0 MiB of 8.0 MiB, 1.0 MiB/s, ETA 6 s");
    }
}
