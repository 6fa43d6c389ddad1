//! A file-I/O layer that "crashes" at the n-th call made while armed: that call fails (a write
//! having written only half its bytes) and so does every later one, so no cleanup runs — the
//! state a kill -9 at that step leaves. Used by the crash tests of scavenging.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use strata_store::file_io::{AppendFile, FileIo, StdFileIo};

/// Counts the calls made while armed and fails the one numbered `trip_at` and all after it.
#[derive(Default)]
pub struct Crash {
    pub armed: AtomicBool,
    pub calls: AtomicU64,
    pub trip_at: AtomicU64,
    /// Numbers of the calls renaming a rewritten segment into place (a scavenge's commit
    /// points), recorded whether or not they go through.
    pub commits: Mutex<Vec<u64>>,
}

impl Crash {
    /// A crash at call `trip_at` (`u64::MAX`: never), not armed yet.
    pub fn at(trip_at: u64) -> Arc<Crash> {
        Arc::new(Crash {
            trip_at: AtomicU64::new(trip_at),
            ..Crash::default()
        })
    }

    /// `Ok` while the call may go through, the "crash" otherwise.
    pub fn call(&self) -> io::Result<()> {
        if !self.armed.load(Ordering::Acquire) {
            return Ok(());
        }
        if self.calls.fetch_add(1, Ordering::AcqRel) >= self.trip_at.load(Ordering::Acquire) {
            return Err(io::Error::other("crashed"));
        }
        Ok(())
    }

    /// Whether the crash has happened.
    pub fn crashed(&self) -> bool {
        self.armed.load(Ordering::Acquire)
            && self.calls.load(Ordering::Acquire) > self.trip_at.load(Ordering::Acquire)
    }
}

/// The store's [`FileIo`] with every call going through a [`Crash`].
pub struct CrashIo(pub Arc<Crash>);

struct CrashFile {
    inner: Box<dyn AppendFile>,
    crash: Arc<Crash>,
}

impl AppendFile for CrashFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        if let Err(e) = self.crash.call() {
            // Torn: half the bytes reach the file.
            let _ = self.inner.write_all(&buf[..buf.len() / 2]);
            return Err(e);
        }
        self.inner.write_all(buf)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.crash.call()?;
        self.inner.sync_data()
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.crash.call()?;
        self.inner.truncate(len)
    }
}

impl FileIo for CrashIo {
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn AppendFile>> {
        self.0.call()?;
        Ok(Box::new(CrashFile {
            inner: StdFileIo.open_append(path)?,
            crash: self.0.clone(),
        }))
    }

    fn write_new_file(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        if let Err(e) = self.0.call() {
            let _ = std::fs::write(path, &bytes[..bytes.len() / 2]);
            return Err(e);
        }
        StdFileIo.write_new_file(path, bytes)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        if from.to_string_lossy().ends_with(".seg.scv") {
            let n = self.0.calls.load(Ordering::Acquire);
            self.0.commits.lock().expect("commits").push(n);
        }
        self.0.call()?;
        std::fs::rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.0.call()?;
        StdFileIo.sync_dir(dir)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.0.call()?;
        std::fs::remove_file(path)
    }
}
