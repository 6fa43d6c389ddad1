//! The `strata-bench` binary: its flags, exit status and report, against a real server on
//! 127.0.0.1 (run in this process).

use std::process::{Command, Output};

/// Runs `strata-bench` with `args`, without the `STRATA_*` variables of the environment.
fn strata_bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strata-bench"))
        .args(args)
        .env_remove("STRATA_SERVER")
        .env_remove("STRATA_TOKEN")
        .output()
        .expect("run strata-bench")
}

#[test]
fn impossible_flags_are_refused_before_connecting() {
    // Port 9 (discard) is never dialled: the flags are checked first.
    let out = strata_bench(&["--server", "http://127.0.0.1:9", "--duration", "0"]);
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "strata-bench: --duration must be positive\n"
    );
    assert!(out.stdout.is_empty());
    let out = strata_bench(&["--scenario", "nope"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid value 'nope'"));
}

#[test]
fn prints_the_report_of_a_run_against_a_server() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut config = strata_server::Config::new(dir.path());
    config.listen = "127.0.0.1:0".into();
    let server = runtime
        .block_on(strata_server::Server::bind(config))
        .unwrap();
    let addr = server.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = runtime.spawn(server.run(async {
        let _ = stopped.await;
    }));

    let url = format!("http://{addr}");
    let out = strata_bench(&[
        "--server",
        &url,
        "--scenario",
        "append,batch",
        "--clients",
        "1,2",
        "--batch-clients",
        "1",
        "--batch-size",
        "10",
        "--duration",
        "0.2",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with(&format!(
            "\nserver {addr} (fsync always), 1 client thread(s), 1 run(s), load average before: "
        )),
        "{stdout}"
    );
    for line in [
        "### append",
        "| config | metric | median | min | max |",
        "### batch",
        "load average after: ",
    ] {
        assert!(stdout.contains(line), "no {line:?} in:\n{stdout}");
    }
    for row in [
        "| 1 client | events/s | ",
        "| 2 clients | p99 µs | ",
        "| 1 client, 10 events/request | events/s | ",
    ] {
        assert!(
            stdout.lines().any(|l| l.starts_with(row)),
            "no {row:?} row in:\n{stdout}"
        );
    }

    stop.send(()).unwrap();
    runtime.block_on(serving).unwrap().unwrap();
}
