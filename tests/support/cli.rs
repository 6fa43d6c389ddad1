//! Running the `strata` client subcommands as processes: [`strata`] / [`run`] capture their
//! output (at most 60 s each), [`ok`] / [`fails`] check the exit status.

use std::io::{Read, Write};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::{strata_binary, wait_for};

/// `strata ARGS` against `server` (`STRATA_SERVER`, no `STRATA_TOKEN`), with `stdin` piped in;
/// waits for it.
pub fn strata(server: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(strata_binary());
    cmd.args(args)
        .env("STRATA_SERVER", server)
        .env_remove("STRATA_TOKEN");
    run(cmd, stdin)
}

/// Runs `cmd` (stdout and stderr captured, `stdin` piped in or none) for at most 60 s; panics
/// (after killing it) if it runs longer.
pub fn run(mut cmd: Command, stdin: Option<&str>) -> Output {
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(input.as_bytes()).unwrap();
    }
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stdout.read_to_end(&mut v);
        v
    });
    let err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = stderr.read_to_end(&mut v);
        v
    });
    let Some(status) = wait_for(Duration::from_secs(60), || child.try_wait().unwrap()) else {
        child.kill().unwrap();
        child.wait().unwrap();
        panic!("{cmd:?} did not finish within 60 s");
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// Asserts a success; returns stdout (UTF-8).
#[track_caller]
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// Asserts a failure (any non-zero exit).
#[track_caller]
pub fn assert_failed(out: &Output) {
    assert!(
        !out.status.success(),
        "expected a failure; stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Asserts a failure (any non-zero exit); returns stderr (UTF-8).
#[track_caller]
pub fn fails(out: &Output) -> String {
    assert_failed(out);
    String::from_utf8(out.stderr.clone()).unwrap()
}

/// `text` as JSON lines, one value a line (panics on a line that is not JSON).
pub fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect()
}
