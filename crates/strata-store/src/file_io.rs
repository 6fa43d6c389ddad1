//! The writer's file I/O, behind a small trait so tests can inject failures and lost writes.
//!
//! Only the write path goes through this trait: it is where durability is decided. Readers use
//! `pread` and memory maps on the same files directly.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::Path;

/// Opens segment files for appending.
pub trait FileIo: Send + Sync + 'static {
    /// Opens (creating if missing) the segment file at `path` for appending at its end.
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn AppendFile>>;

    /// Creates (or replaces) the file at `path` holding exactly `bytes`, durably (`fsync`ed
    /// before returning; the directory entry is the caller's to sync). Used for index files,
    /// which are written whole to a temporary name and renamed into place.
    fn write_new_file(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let mut file = File::create(path)?;
        file.write_all(bytes)?;
        file.sync_all()
    }

    /// Renames `from` to `to`, replacing `to` atomically (the directory entry is the caller's
    /// to sync). Used by scavenges to swap a rewritten segment and its index into place.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    /// Makes the entries of `dir` (creations, renames, removals) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        sync_dir(dir)
    }

    /// Removes the file at `path`.
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    /// Bytes an unprivileged writer may still allocate on the file system of `dir`
    /// (`statvfs`: `f_bavail * f_frsize`). Asked only while the disk is full, to tell when
    /// it no longer is.
    fn available_space(&self, dir: &Path) -> io::Result<u64> {
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: an all-zero `statvfs` is a valid value of the plain C struct.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: `path` is NUL-terminated and outlives the call; `st` is a valid out-pointer.
        let rc = unsafe { libc::statvfs(path.as_ptr(), &mut st) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        #[allow(clippy::unnecessary_cast)] // the field types differ between targets
        Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
    }
}

/// A segment file being appended to by the single writer.
///
/// Contract: bytes passed to [`AppendFile::write_all`] are durable only once a later
/// [`AppendFile::sync_data`] returned `Ok`. After any error the store stops writing.
pub trait AppendFile: Send {
    /// Appends all of `buf` at the end of the file.
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()>;
    /// Makes every byte written so far durable (`fdatasync`).
    fn sync_data(&mut self) -> io::Result<()>;
    /// Cuts the file back to `len` bytes, durably (used to drop an unacknowledged, failed
    /// write, and to cut the space [`AppendFile::extend_to`] added before a segment is sealed).
    /// The next write goes to `len`.
    fn truncate(&mut self, len: u64) -> io::Result<()>;
    /// Makes the file at least `len` bytes long, zeros past what was written, without moving
    /// where the next write goes. The writer keeps the open segment's length ahead of its
    /// writes, so that the `fdatasync` of an append does not also have to record a longer file
    /// (on ext4 that was ~0.3 of the sync's time). The zeros are never published: readers are
    /// bounded by the memtable's end, recovery cuts them, a seal cuts them first.
    ///
    /// Returns whether the file is now longer than what was written (then the writer cuts it
    /// back with [`AppendFile::truncate`] before a seal). Optional: the default does nothing and
    /// returns `false` (the file then grows with each write).
    fn extend_to(&mut self, len: u64) -> io::Result<bool> {
        let _ = len;
        Ok(false)
    }
}

/// The real file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct StdFileIo;

impl FileIo for StdFileIo {
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn AppendFile>> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        file.seek(SeekFrom::End(0))?;
        Ok(Box::new(StdAppendFile { file }))
    }
}

struct StdAppendFile {
    file: File,
}

impl AppendFile for StdAppendFile {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.file.write_all(buf)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn truncate(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)?;
        self.file.seek(SeekFrom::Start(len))?;
        // The shorter length must be durable (not only the data): a sealed segment with the
        // zeros of `extend_to` still after it would read as damaged.
        self.file.sync_all()
    }

    fn extend_to(&mut self, len: u64) -> io::Result<bool> {
        // A sparse extension (`ftruncate`): measured as fast as `fallocate` for the appends
        // into it, and it takes no disk space until written.
        if self.file.metadata()?.len() < len {
            self.file.set_len(len)?;
        }
        Ok(true)
    }
}

/// `fsync` on a directory, so that file creations and renames in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `dir` and any missing parents durably: each directory created is made durable by an
/// `fsync` of its parent, so that a power cut after the first acknowledged append cannot lose
/// the directory (and everything in it) with the parent's unsynced entry.
pub(crate) fn create_dir_durably(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let missing: Vec<&Path> = dir.ancestors().take_while(|p| !p.exists()).collect();
    std::fs::create_dir_all(dir)?;
    // Deepest first: a directory's entry is synced in its parent before that parent's own.
    for created in missing {
        if let Some(parent) = created.parent() {
            let parent = if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            };
            sync_dir(parent)?;
        }
    }
    Ok(())
}
