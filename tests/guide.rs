//! End-to-end: the runnable examples of docs/guide.md (`docs/examples/guide/*.sh`), each run
//! with bash against a real `strata serve`. Every script checks what it demonstrates and exits
//! non-zero (naming the failed check) otherwise. The scripts need `bash` and `curl`.

use std::path::{Path, PathBuf};
use std::process::Command;

use strata_suite::cli::run;
use strata_suite::{strata_binary, TestServer};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/examples/guide")
}

/// Runs `docs/examples/guide/<name>.sh` against `server`; panics with its output on failure.
fn run_example(server: &TestServer, name: &str) -> String {
    let script = examples().join(format!("{name}.sh"));
    let mut cmd = Command::new("bash");
    cmd.arg(&script)
        .env("STRATA_URL", server.url())
        .env("STRATA", strata_binary())
        .env_remove("STRATA_TOKEN");
    let out = run(cmd, None);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{name}.sh failed ({:?})\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn every_guide_example_runs_and_checks_out() {
    let server = TestServer::start();
    let mut ran = Vec::new();
    for name in [
        "aggregate",
        "read-model",
        "saga",
        "dead-letters",
        "replay-safety",
    ] {
        let out = run_example(&server, name);
        assert!(!out.contains("FAILED"), "{name}: {out}");
        ran.push(name);
    }
    // Every script of the directory is run here (the handler ship-order.sh through saga.sh,
    // common.sh by all).
    let mut scripts: Vec<String> = std::fs::read_dir(examples())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter_map(|n| n.strip_suffix(".sh").map(str::to_owned))
        .filter(|n| n != "common" && n != "ship-order")
        .collect();
    scripts.sort();
    ran.sort();
    assert_eq!(scripts, ran);
}
