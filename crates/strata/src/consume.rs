//! `strata consume GROUP`: one competing consumer of a group (docs/http-api.md, Consumer groups).
//!
//! It long-polls `POST /groups/{group}/poll`, and for every message either
//!
//! - prints the event JSON on stdout (one per line) and, once the batch is written and flushed,
//!   acks the batch; or
//! - with `--exec CMD ARGS...` (or `-- CMD ARGS...`) runs the command once per event, the event
//!   JSON on its stdin and `STRATA_*` variables in its environment, acking the event when the
//!   command exits 0 and nacking it with `--nack-action` (default `retry`) otherwise.
//!
//! Delivery is at least once: an event is acked only after it was written or its command
//! succeeded, so a crash in between means a redelivery, never a loss.
//!
//! Stopping: `--count N` after N events were handled (acked or nacked), `--until-empty` at the
//! first poll that returns nothing, SIGINT/SIGTERM gracefully: the event being handled is
//! finished and acked, the rest of the batch is nacked for immediate redelivery (`retry`), then
//! the process exits 0. A second signal exits at once (130); the group redelivers whatever was
//! in flight after its ack timeout.

use std::io::Write;
use std::process::{Command, ExitCode, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::cli::{ConsumeArgs, NackAction};
use crate::client::{one_line, Client};
use crate::error::{Error, Result};
use crate::group::group_path;

/// One message of a poll answer.
#[derive(Debug, Deserialize)]
struct Message {
    ack_id: String,
    delivery: u64,
    event: Box<RawValue>,
}

#[derive(Debug, Deserialize)]
struct Poll {
    messages: Vec<Message>,
}

/// The event fields exported to an `--exec` command.
#[derive(Debug, Default, Deserialize)]
struct EventFields {
    #[serde(default)]
    id: String,
    #[serde(default)]
    stream: String,
    #[serde(default)]
    revision: Option<u64>,
    #[serde(default)]
    position: Option<u64>,
    #[serde(default, rename = "type")]
    event_type: String,
}

/// Counters for the closing summary.
#[derive(Debug, Default)]
struct Tally {
    acked: u64,
    nacked: u64,
}

impl Tally {
    fn handled(&self) -> u64 {
        self.acked + self.nacked
    }
}

/// `strata consume`.
pub fn run(args: ConsumeArgs) -> Result<ExitCode> {
    if args.max == 0 {
        return Err(Error::Usage("--max must be at least 1".into()));
    }
    if args.count == Some(0) {
        return Ok(ExitCode::SUCCESS);
    }
    let command = if args.exec.is_empty() {
        &args.command
    } else {
        &args.exec
    };
    let stop = Arc::new(AtomicBool::new(false));
    on_signals(stop.clone());
    let consumer = Consumer {
        client: Client::new(&args.client)?,
        path: group_path(&args.group),
        group: args.group.clone(),
        stop,
    };
    let mut tally = Tally::default();
    let result = consumer.run(&args, command, &mut tally);
    eprintln!(
        "strata: {} event(s) handled: {} acked, {} nacked",
        tally.handled(),
        tally.acked,
        tally.nacked
    );
    result.map(|()| ExitCode::SUCCESS)
}

struct Consumer {
    client: Client,
    /// `/groups/{group}`, encoded.
    path: String,
    group: String,
    stop: Arc<AtomicBool>,
}

impl Consumer {
    fn stopping(&self) -> bool {
        self.stop.load(SeqCst)
    }

    fn run(&self, args: &ConsumeArgs, command: &[String], tally: &mut Tally) -> Result<()> {
        let wait_ms = args.wait_ms.to_string();
        let mut polled_once = false;
        let mut backoff = Duration::from_millis(250);
        loop {
            if self.stopping() {
                return Ok(());
            }
            let want = match args.count {
                Some(n) if tally.handled() >= n => return Ok(()),
                Some(n) => (n - tally.handled()).min(u64::from(args.max)),
                None => u64::from(args.max),
            };
            let max = want.to_string();
            let poll = self.client.json(
                "POST",
                &format!("{}/poll", self.path),
                &[("max", &max), ("wait_ms", &wait_ms)],
                None,
            );
            let text = match poll {
                Ok((_, text)) => text,
                // The server went away (restart, network): keep trying once we have been
                // connected; API errors (unknown group, bad parameters) end the command.
                Err(e @ (Error::Transport(_) | Error::Io(_))) if polled_once => {
                    eprintln!("strata: poll failed ({e}); retrying in {backoff:?}");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    continue;
                }
                Err(Error::Http { status, message }) if polled_once && status >= 500 => {
                    eprintln!("strata: poll failed ({status}: {message}); retrying in {backoff:?}");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    continue;
                }
                Err(e) => return Err(e),
            };
            polled_once = true;
            backoff = Duration::from_millis(250);
            let poll: Poll = serde_json::from_str(&text).map_err(|e| Error::Http {
                status: 200,
                message: format!("unexpected poll answer ({e}): {}", text.trim()),
            })?;
            if poll.messages.is_empty() {
                if args.until_empty {
                    return Ok(());
                }
                continue;
            }
            if self.stopping() {
                self.release(&poll.messages, tally);
                return Ok(());
            }
            if command.is_empty() {
                self.print(&poll.messages, tally)?;
            } else {
                self.exec(&poll.messages, command, args.nack_action, tally)?;
            }
        }
    }

    /// Writes the batch to stdout, flushes, then acks it; on a write failure the batch is
    /// nacked for redelivery and the error returned.
    fn print(&self, messages: &[Message], tally: &mut Tally) -> Result<()> {
        let written = (|| {
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            for m in messages {
                writeln!(out, "{}", one_line(m.event.get()))?;
            }
            out.flush()
        })();
        if let Err(e) = written {
            self.release(messages, tally);
            return Err(e.into());
        }
        let ids: Vec<&str> = messages.iter().map(|m| m.ack_id.as_str()).collect();
        self.settle("ack", &ids, None)?;
        tally.acked += ids.len() as u64;
        Ok(())
    }

    /// Runs `command` per message, acking or nacking each as soon as its command exits.
    fn exec(
        &self,
        messages: &[Message],
        command: &[String],
        on_failure: NackAction,
        tally: &mut Tally,
    ) -> Result<()> {
        for (i, m) in messages.iter().enumerate() {
            if self.stopping() {
                self.release(&messages[i..], tally);
                return Ok(());
            }
            let status = match self.run_command(command, m) {
                Ok(status) => status,
                Err(e) => {
                    self.release(&messages[i..], tally);
                    return Err(Error::Usage(format!("cannot run {:?}: {e}", command[0])));
                }
            };
            let ids = [m.ack_id.as_str()];
            if status.success() {
                self.settle("ack", &ids, None)?;
                tally.acked += 1;
            } else {
                // A command killed by the signal that stops us failed because of the stop,
                // not because of the event: retry it rather than park or skip it.
                let action = if self.stopping() && status.code().is_none() {
                    NackAction::Retry
                } else {
                    on_failure
                };
                let fields: EventFields = serde_json::from_str(m.event.get()).unwrap_or_default();
                eprintln!(
                    "strata: {:?} {} for event {} ({}@{}, delivery {}): nack {}",
                    command[0],
                    describe_status(status),
                    fields.id,
                    fields.stream,
                    fields
                        .revision
                        .map_or_else(|| "?".into(), |r| r.to_string()),
                    m.delivery,
                    action.as_str()
                );
                self.settle("nack", &ids, Some(action))?;
                tally.nacked += 1;
            }
        }
        Ok(())
    }

    /// Runs `command` with the event on stdin and its fields in `STRATA_*` variables.
    fn run_command(&self, command: &[String], m: &Message) -> std::io::Result<ExitStatus> {
        let fields: EventFields = serde_json::from_str(m.event.get()).unwrap_or_default();
        let opt = |v: Option<u64>| v.map(|n| n.to_string()).unwrap_or_default();
        let mut child = Command::new(&command[0])
            .args(&command[1..])
            .env("STRATA_GROUP", &self.group)
            .env("STRATA_ACK_ID", &m.ack_id)
            .env("STRATA_DELIVERY", m.delivery.to_string())
            .env("STRATA_EVENT_ID", &fields.id)
            .env("STRATA_STREAM", &fields.stream)
            .env("STRATA_REVISION", opt(fields.revision))
            .env("STRATA_POSITION", opt(fields.position))
            .env("STRATA_EVENT_TYPE", &fields.event_type)
            .stdin(Stdio::piped())
            .spawn()?;
        let stdin = child.stdin.take();
        let event = m.event.get();
        std::thread::scope(|s| {
            // Written on another thread: a command that does not read all of a large event
            // must not deadlock us. A command that exits without reading is not an error.
            s.spawn(move || {
                if let Some(mut stdin) = stdin {
                    let _ = stdin
                        .write_all(one_line(event).as_bytes())
                        .and_then(|()| stdin.write_all(b"\n"));
                }
            });
            child.wait()
        })
    }

    /// Nacks `messages` with `retry` (so that they are redelivered now, not after the ack
    /// timeout); failures are only reported: the ack timeout redelivers them anyway.
    fn release(&self, messages: &[Message], tally: &mut Tally) {
        if messages.is_empty() {
            return;
        }
        let ids: Vec<&str> = messages.iter().map(|m| m.ack_id.as_str()).collect();
        match self.settle("nack", &ids, Some(NackAction::Retry)) {
            Ok(()) => tally.nacked += ids.len() as u64,
            Err(e) => eprintln!("strata: could not release {} event(s): {e}", ids.len()),
        }
    }

    /// `POST /groups/{group}/ack` or `/nack`. A 400 (the ack ids expired: the events were
    /// redelivered after the ack timeout) and connection failures are reported on stderr and
    /// tolerated — the group redelivers what was not settled; any other API error (the group
    /// was deleted, auth) is returned.
    fn settle(&self, what: &str, ids: &[&str], action: Option<NackAction>) -> Result<()> {
        let body = match action {
            Some(a) => serde_json::json!({"ack_ids": ids, "action": a.as_str()}),
            None => serde_json::json!({ "ack_ids": ids }),
        };
        match self.client.json(
            "POST",
            &format!("{}/{what}", self.path),
            &[],
            Some(&body.to_string()),
        ) {
            Ok(_) => Ok(()),
            Err(Error::Http {
                status: 400,
                message,
            }) => {
                eprintln!(
                    "strata: {what} of {} event(s) refused ({message}); they will be redelivered",
                    ids.len()
                );
                Ok(())
            }
            Err(e @ (Error::Transport(_) | Error::Io(_))) => {
                eprintln!(
                    "strata: {what} of {} event(s) failed ({e}); they will be redelivered",
                    ids.len()
                );
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

fn describe_status(status: ExitStatus) -> String {
    match status.code() {
        Some(code) => format!("exited with {code}"),
        None => format!("was killed ({status})"),
    }
}

/// Sets `stop` on the first SIGINT/SIGTERM; exits 130 on the second.
fn on_signals(stop: Arc<AtomicBool>) {
    let spawned = std::thread::Builder::new()
        .name("strata-signals".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("strata: no signal handling ({e})");
                    return;
                }
            };
            runtime.block_on(async move {
                use tokio::signal::unix::{signal, SignalKind};
                let (Ok(mut int), Ok(mut term)) = (
                    signal(SignalKind::interrupt()),
                    signal(SignalKind::terminate()),
                ) else {
                    eprintln!("strata: no signal handling");
                    return;
                };
                loop {
                    tokio::select! {
                        _ = int.recv() => {}
                        _ = term.recv() => {}
                    }
                    if stop.swap(true, SeqCst) {
                        eprintln!("strata: stopping now; unacked events will be redelivered");
                        std::process::exit(130);
                    }
                    eprintln!(
                        "strata: stopping after the current poll/event (again to quit at once)"
                    );
                }
            });
        });
    if let Err(e) = spawned {
        eprintln!("strata: no signal handling ({e})");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_answers_parse() {
        let p: Poll = serde_json::from_str(
            r#"{"messages":[{"ack_id":"a1","delivery":2,"event":{"id":"x","stream":"s-1","revision":3,"position":9,"type":"T","data":{"k":[1, 2]}}}]}"#,
        )
        .unwrap();
        assert_eq!(p.messages[0].delivery, 2);
        assert!(p.messages[0].event.get().contains(r#""k":[1, 2]"#));
        let f: EventFields = serde_json::from_str(p.messages[0].event.get()).unwrap();
        assert_eq!(
            (f.stream.as_str(), f.revision, f.position),
            ("s-1", Some(3), Some(9))
        );
        assert_eq!(f.event_type, "T");
    }
}
