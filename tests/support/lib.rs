#![deny(unsafe_op_in_unsafe_fn)]
//! Harness for the end-to-end tests in `tests/`: starts the real `strata` binary on a temporary
//! data directory and a free loopback port, talks HTTP/1.1 to it over plain sockets, and stops it
//! the way the tests ask (SIGTERM or SIGKILL).
//!
//! - [`strata_binary`]: the `strata` executable, built once per test process if needed.
//! - [`ServerProcess`]: one `strata serve` child process.
//! - [`TestServer`]: a server on its own temporary directory, restartable on the same data.
//! - [`Client`] / [`Reply`] / [`Response`] / [`SseReader`] ([`http`] module): a small blocking
//!   HTTP/1.1 client with read timeouts everywhere, so that no test can hang forever.
//! - [`cli`]: the `strata` client subcommands run as processes ([`cli::strata`], [`cli::ok`], ...).
//! - [`groups`]: consumer-group helpers ([`groups::Group`]: poll, ack, nack, parked, ...).
//! - [`browser`]: a headless Chromium over WebDriver, for the console tests.
//! - [`projections`]: the `/projections` endpoints and polling helpers of the projection tests.

pub mod browser;
pub mod cli;
pub mod groups;
pub mod http;
pub mod projections;

use std::io::{BufRead, BufReader, Read};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub use http::{enc, Client, Reply, Response, SseItem, SseMessage, SseReader};
pub use serde_json;

/// How long a server gets to print its address.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The `strata` executable to test.
///
/// `STRATA_BIN` (a path) wins when set. Otherwise the binary next to the test executable
/// (`target/<profile>/strata`), brought up to date first with `cargo build -p strata` for the
/// same profile and target directory: the integration tests of the root package get no
/// `CARGO_BIN_EXE_strata`, and `cargo test --workspace` does not promise to build the binary
/// before running them. Cargo decides whether anything is stale (a no-op build takes a fraction
/// of a second) and its own lock serialises concurrent builds; the [`OnceLock`] makes the tests
/// of one process build once. Should that build fail, or cargo not run, every test that needs
/// the binary panics with cargo's error output ([`check_build`]): a binary left by an earlier
/// build is never tested in its place.
pub fn strata_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(locate_or_build)
}

fn locate_or_build() -> PathBuf {
    if let Some(path) = std::env::var_os("STRATA_BIN") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "STRATA_BIN={} is not a file",
            path.display()
        );
        return path;
    }
    let exe = std::env::current_exe().expect("the test executable's path");
    // target/<profile>/deps/<test-exe>, or target/<profile>/<exe> for some runners.
    let mut profile_dir = exe.parent().expect("test executable directory").to_owned();
    if profile_dir.file_name().is_some_and(|n| n == "deps") {
        profile_dir.pop();
    }
    let binary = profile_dir.join(format!("strata{}", std::env::consts::EXE_SUFFIX));
    let target_dir = profile_dir.parent().expect("target directory").to_owned();
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("debug")
        .to_owned();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "-p", "strata", "--bin", "strata"])
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target_dir);
    match profile.as_str() {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    let started = Instant::now();
    if let Err(e) = check_build(cmd.stdin(Stdio::null()).output(), &binary) {
        panic!("{e}");
    }
    assert!(
        binary.is_file(),
        "{} missing after `cargo build -p strata`",
        binary.display()
    );
    if started.elapsed() > Duration::from_secs(2) {
        eprintln!("built {} in {:.1?}", binary.display(), started.elapsed());
    }
    binary
}

/// Judges the `cargo build -p strata` that [`strata_binary`] runs: `Err` with cargo's own error
/// output when the build failed or cargo could not be run. There is no fallback to `binary` from
/// an earlier build, even when it exists: it would test stale code (the test command is
/// `cargo test`, so cargo is always there).
pub fn check_build(
    result: std::io::Result<std::process::Output>,
    binary: &Path,
) -> Result<(), String> {
    match result {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "`cargo build -p strata` failed ({}); not testing the older {}:\n{}{}",
            out.status,
            binary.display(),
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout),
        )),
        Err(e) => Err(format!(
            "could not run cargo to build strata ({e}); not testing the older {}",
            binary.display()
        )),
    }
}

/// A running `strata serve` process.
pub struct ServerProcess {
    child: Child,
    /// `http://ADDR` (`https://ADDR` with TLS) as printed by the server.
    pub base_url: String,
    /// The address printed by the server.
    pub addr: SocketAddr,
    /// The data directory it serves.
    pub data_dir: PathBuf,
    stderr: Arc<Mutex<String>>,
}

impl ServerProcess {
    /// Starts `binary serve --data-dir DIR --listen 127.0.0.1:0 EXTRA...` and waits (up to
    /// `timeout`) for the `listening on http://ADDR` line.
    pub fn start(
        binary: &Path,
        data_dir: &Path,
        extra: &[&str],
        timeout: Duration,
    ) -> std::io::Result<Self> {
        Self::start_on(binary, data_dir, "127.0.0.1:0", extra, timeout)
    }

    /// [`ServerProcess::start`] with another `--listen` address. Fails at once (with the
    /// server's stderr in the error) when the process exits before printing its address.
    pub fn start_on(
        binary: &Path,
        data_dir: &Path,
        listen: &str,
        extra: &[&str],
        timeout: Duration,
    ) -> std::io::Result<Self> {
        let mut cmd = Command::new(binary);
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", listen])
            .args(extra);
        Self::spawn(cmd, data_dir, timeout)
    }

    /// Runs a prepared `strata serve ...` command (e.g. with resource limits set in
    /// `pre_exec`) with piped output, and waits up to `timeout` for its address line.
    pub fn spawn(mut cmd: Command, data_dir: &Path, timeout: Duration) -> std::io::Result<Self> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().expect("stderr pipe");
        let sink = stderr.clone();
        std::thread::spawn(move || drain_into(pipe, &sink));
        let stdout = child.stdout.take().expect("stdout pipe");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(url) = line.trim().strip_prefix("listening on ") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(url.to_owned());
                    }
                }
            }
            // Dropping `tx` here (EOF before the line) wakes the caller at once.
        });
        let fail = |child: &mut Child, what: &str| {
            let _ = child.kill();
            let status = child.wait().ok();
            // Let the stderr thread catch up with the last lines.
            std::thread::sleep(Duration::from_millis(100));
            std::io::Error::other(format!(
                "{what} (exit status {status:?}); stderr:\n{}",
                stderr.lock().unwrap()
            ))
        };
        match rx.recv_timeout(timeout) {
            Ok(base_url) => {
                let addr: SocketAddr = base_url
                    .strip_prefix("http://")
                    .or_else(|| base_url.strip_prefix("https://"))
                    .and_then(|a| a.parse().ok())
                    .ok_or_else(|| fail(&mut child, &format!("bad address line {base_url:?}")))?;
                Ok(ServerProcess {
                    child,
                    base_url,
                    addr,
                    data_dir: data_dir.to_owned(),
                    stderr,
                })
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                Err(fail(&mut child, "server did not print its address in time"))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(fail(
                &mut child,
                "server closed stdout without printing its address",
            )),
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Where to connect: the printed address, with an unspecified IP (`0.0.0.0`) replaced by
    /// loopback — tests never talk to non-loopback addresses.
    pub fn connect_addr(&self) -> SocketAddr {
        let mut addr = self.addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(IpAddr::V4(Ipv4Addr::LOCALHOST));
        }
        addr
    }

    /// A client for this server.
    pub fn client(&self) -> Client {
        Client::new(self.connect_addr())
    }

    /// What the server wrote on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Sends `signal` without waiting. An error when the process has already exited.
    pub fn signal(&mut self, signal: i32) -> std::io::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            return Err(std::io::Error::other(format!(
                "the server already exited ({status})"
            )));
        }
        // SAFETY: kill(2) with the pid of a child we own and have not yet reaped.
        let rc = unsafe { libc::kill(self.child.id() as i32, signal) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> std::io::Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) and waits (at most 60 s, then SIGKILL and an
    /// error) for the exit status.
    pub fn stop_with(mut self, signal: i32) -> std::io::Result<ExitStatus> {
        self.signal(signal)?;
        match self.wait_timeout(Duration::from_secs(60))? {
            Some(status) => Ok(status),
            None => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("server did not exit within 60 s of signal {signal}"),
                ))
            }
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Copies everything `pipe` produces into `sink` (lossy UTF-8).
fn drain_into(mut pipe: impl Read, sink: &Mutex<String>) {
    let mut buf = [0u8; 8192];
    loop {
        match pipe.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => sink
                .lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
}

/// A server on its own temporary data directory; [`TestServer::restart`] brings it back on
/// the same data (on a new port).
pub struct TestServer {
    process: Option<ServerProcess>,
    args: Vec<String>,
    /// The data directory (deleted when the `TestServer` is dropped).
    pub dir: tempfile::TempDir,
}

impl TestServer {
    /// A server with `--fsync never` (fast; the kill -9 tests ask for `always` explicitly) and
    /// `--log-level warn`.
    pub fn start() -> TestServer {
        TestServer::start_with(&[])
    }

    /// A server with extra `serve` flags; `--fsync never` and `--log-level warn` unless `extra`
    /// sets them.
    pub fn start_with(extra: &[&str]) -> TestServer {
        let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        if !extra.contains(&"--fsync") {
            args.extend(["--fsync".into(), "never".into()]);
        }
        if !extra.contains(&"--log-level") {
            args.extend(["--log-level".into(), "warn".into()]);
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let mut server = TestServer {
            process: None,
            args,
            dir,
        };
        server.restart();
        server
    }

    /// Starts the server again on the same data directory (it must be stopped).
    pub fn restart(&mut self) {
        assert!(self.process.is_none(), "the server is still running");
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let process = ServerProcess::start(strata_binary(), self.dir.path(), &args, START_TIMEOUT)
            .unwrap_or_else(|e| panic!("starting strata: {e}"));
        self.process = Some(process);
    }

    /// The running process.
    pub fn process(&self) -> &ServerProcess {
        self.process.as_ref().expect("the server is not running")
    }

    /// The running process, mutably.
    pub fn process_mut(&mut self) -> &mut ServerProcess {
        self.process.as_mut().expect("the server is not running")
    }

    /// Stops the server with `signal` and returns its exit status (and stderr).
    pub fn stop(&mut self, signal: i32) -> (ExitStatus, String) {
        let process = self.process.take().expect("the server is not running");
        let stderr = process.stderr.clone();
        let status = process
            .stop_with(signal)
            .unwrap_or_else(|e| panic!("stopping strata: {e}"));
        std::thread::sleep(Duration::from_millis(50));
        let text = stderr.lock().unwrap().clone();
        (status, text)
    }

    /// Sends `signal` to the running server without waiting.
    pub fn signal(&mut self, signal: i32) {
        self.process_mut()
            .signal(signal)
            .unwrap_or_else(|e| panic!("signalling strata: {e}"));
    }

    /// Waits up to `timeout` for the server to exit; then it is stopped (restart to bring it
    /// back). Returns the exit status and stderr, `None` when it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<(ExitStatus, String)> {
        let status = self
            .process_mut()
            .wait_timeout(timeout)
            .unwrap_or_else(|e| panic!("waiting for strata: {e}"))?;
        let process = self.process.take().expect("running");
        std::thread::sleep(Duration::from_millis(50));
        Some((status, process.stderr()))
    }

    /// A client (no token).
    pub fn client(&self) -> Client {
        self.process().client()
    }

    /// `http://ADDR` of the running server (for the client subcommands).
    pub fn url(&self) -> String {
        format!("http://{}", self.process().connect_addr())
    }

    /// The server process id.
    pub fn pid(&self) -> u32 {
        self.process().pid()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(p) = &self.process {
                eprintln!("--- strata stderr ---\n{}", p.stderr());
            }
        }
    }
}

/// A field of `/proc/<pid>/status` in KiB (`VmRSS`, `RssAnon`, ...).
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        rest.trim().trim_end_matches("kB").trim().parse().ok()
    })
}

/// Polls `f` every 20 ms until it returns `Some` or `timeout` passes.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
