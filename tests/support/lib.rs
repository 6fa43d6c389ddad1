#![deny(unsafe_op_in_unsafe_fn)]
//! Harness for the end-to-end tests in `tests/`: starts the real `strata` binary on a temporary
//! data directory and a free loopback port, and stops it the way the tests ask (SIGTERM or
//! SIGKILL).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A running `strata serve` process.
pub struct ServerProcess {
    child: Child,
    /// `http://127.0.0.1:PORT` as printed by the server.
    pub base_url: String,
    /// The data directory it serves.
    pub data_dir: PathBuf,
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
        let mut child = Command::new(binary)
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| std::io::Error::other("no stdout pipe"))?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if !sent {
                    if let Some(url) = line.trim().strip_prefix("listening on ") {
                        let _ = tx.send(url.to_owned());
                        sent = true;
                    }
                }
            }
        });
        match rx.recv_timeout(timeout) {
            Ok(base_url) => Ok(ServerProcess {
                child,
                base_url,
                data_dir: data_dir.to_owned(),
            }),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(std::io::Error::other(
                    "server did not print its address in time",
                ))
            }
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) and waits for the exit status.
    pub fn stop_with(mut self, signal: i32) -> std::io::Result<ExitStatus> {
        // SAFETY: kill(2) with the pid of a child we own and have not yet reaped.
        let rc = unsafe { libc::kill(self.child.id() as i32, signal) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        self.child.wait()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
