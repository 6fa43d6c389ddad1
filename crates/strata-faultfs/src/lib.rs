//! A FUSE file system for the end-to-end tests: it keeps what a power cut would lose apart
//! from what it would keep, so that a test can run the real `strata serve` on it, cut the
//! power at any moment (or make `fsync` fail with `EIO`), and restart on what a disk would
//! really have held.
//!
//! # The model
//!
//! Every inode lives twice: a **live** view (what processes read: every operation applies to
//! it at once) and a **durable** image (what survives a cut). Exactly these operations move
//! the live view into the durable image:
//!
//! | operation | what becomes durable |
//! | --- | --- |
//! | `fsync` / `fdatasync` of a file | its contents and size (every write and truncation before it) |
//! | `fsync` of a directory | its whole entry table (name → inode): the creations, renames, unlinks and `mkdir`s/`rmdir`s in it |
//!
//! Nothing else is durable: a `write`, a truncation (`ftruncate`, `O_TRUNC`), a creation, a
//! rename or an unlink is volatile until the fsync above. A file created and fsynced, but whose
//! directory was not fsynced, is gone after a cut; a file whose directory entry was made
//! durable but whose data was never fsynced comes back empty (or with its last fsynced
//! contents). A rename is atomic at the directory's fsync: the old or the new name, never
//! both, never neither (the rename of a file inside one directory). An inode is kept as long as
//! a live or durable entry (or nothing at all until the next cut) refers to it: inodes are
//! only collected at a cut, from the durable tree.
//!
//! # A cut ([`FaultFs::power_cut`])
//!
//! The test first kills the process using the file system (SIGKILL); the cut then unmounts,
//! throws every volatile change away and mounts the durable state again (a fresh mount, so no
//! page cache of the kernel survives either). Two kinds:
//!
//! - [`Cut::DropUnsynced`]: exactly the durable images, nothing of what was not synced.
//! - [`Cut::Torn`]: like a real disk, which may have written some of the unsynced data
//!   already: per file, a random prefix (in order) of its unsynced writes and truncations is
//!   kept, the last one possibly torn at a 512-byte sector boundary; and with probability ½ the
//!   whole namespace as it was at the cut (every directory's live entries: a journal commit
//!   happened just before) is kept, else only the fsynced one. Seeded, so a failure replays.
//!
//! # Faults
//!
//! - [`FaultFs::set_fault`] with [`Fault::FsyncEio`]: every `fsync` (files and directories)
//!   fails with `EIO` and makes nothing durable; [`Fault::WriteEio`]: every `write` and
//!   truncation fails with `EIO` and changes nothing. Until cleared.
//! - [`FaultFs::cut_after_ops`]: the power fails at the n-th mutating operation from now
//!   (write, truncation, create, mkdir, unlink, rmdir, rename, fsync): that operation and every
//!   later one fails with `EIO` and has no effect, so the durable state is frozen at exactly
//!   that point (reads still work, as the page cache would) until the test kills the process
//!   and calls [`FaultFs::power_cut`]. This puts cuts at uniformly chosen syscall boundaries
//!   (inside segment sealing, index writes, ...) rather than at chosen times.
//!
//! Only regular files and directories exist (no symlinks, hard links, devices, xattrs); the
//! kernel checks no permissions (no `default_permissions`), and only the mounting user (root in
//! the tests) may use the mount.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fuser::{BackgroundSession, Config, MountOption};

/// The errors of this crate: mounting and unmounting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The FUSE mount failed (no `/dev/fuse`, no permission, no `fusermount3` for a non-root
    /// user, ...).
    #[error("mounting a FUSE file system on {path}: {source}")]
    Mount {
        /// The mount point.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Unmounting (before a cut) failed.
    #[error("unmounting {path}: {source}")]
    Unmount {
        /// The mount point.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// An injected disk fault, in force until cleared with `set_fault(None)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Every file and directory `fsync` fails with `EIO` and makes nothing durable.
    FsyncEio,
    /// Every `write` and truncation fails with `EIO` and changes nothing.
    WriteEio,
    /// Every `fsync` of a file whose name contains `.idx` (an index file, or its temporary
    /// file while a segment is sealed) fails with `EIO` and makes nothing durable; other files
    /// are unaffected: the disk fails exactly while the server seals a segment.
    IndexFsyncEio,
}

/// What a power cut keeps of the volatile state (see the crate docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    /// Nothing: exactly what was fsynced.
    DropUnsynced,
    /// A random in-order prefix of each file's unsynced writes (the last one possibly torn at a
    /// sector), and with probability ½ the whole live namespace; seeded.
    Torn {
        /// The seed of the choices.
        seed: u64,
    },
}

/// Counts of operations since mounting (over all cuts).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Successful `write`s.
    pub writes: u64,
    /// Successful file `fsync`/`fdatasync`s.
    pub fsyncs: u64,
    /// Successful directory fsyncs.
    pub dir_fsyncs: u64,
    /// Successful creations, renames, unlinks, mkdirs, rmdirs and truncations.
    pub metadata_ops: u64,
    /// Operations failed with `EIO` by a fault or after [`FaultFs::cut_after_ops`] fired.
    pub failed: u64,
    /// Power cuts.
    pub cuts: u64,
}

/// What one [`FaultFs::power_cut`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CutReport {
    /// Unsynced writes/truncations thrown away.
    pub dropped_ops: usize,
    /// Unsynced writes/truncations kept (whole or torn) by a [`Cut::Torn`].
    pub kept_ops: usize,
    /// Writes kept torn at a sector boundary.
    pub torn_writes: usize,
    /// Whether the live namespace was kept ([`Cut::Torn`] only).
    pub namespace_kept: bool,
    /// Whether [`FaultFs::cut_after_ops`] had fired before the cut.
    pub frozen: bool,
    /// The operation it fired at (`write /data/0000.seg`, `rename /a to /b`, `fsync /data`,
    /// ...): the first one that failed.
    pub frozen_at: Option<String>,
}

mod fs;
mod model;

use fs::{lock, Fs};
use model::*;

/// A mounted fault-injecting file system (see the crate docs for its model). Unmounted when
/// dropped (lazily, `MNT_DETACH`).
pub struct FaultFs {
    mountpoint: PathBuf,
    model: Arc<Mutex<Model>>,
    session: Option<BackgroundSession>,
}

impl std::fmt::Debug for FaultFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultFs")
            .field("mountpoint", &self.mountpoint)
            .finish_non_exhaustive()
    }
}

impl FaultFs {
    /// Mounts an empty file system on `mountpoint` (an existing, empty directory), owned by
    /// the owner of `mountpoint`.
    pub fn mount(mountpoint: impl AsRef<Path>) -> Result<FaultFs, Error> {
        let mountpoint = mountpoint.as_ref().to_owned();
        let meta = std::fs::metadata(&mountpoint).map_err(|source| Error::Mount {
            path: mountpoint.clone(),
            source,
        })?;
        let (uid, gid) = {
            use std::os::unix::fs::MetadataExt;
            (meta.uid(), meta.gid())
        };
        let mut fs = FaultFs {
            mountpoint,
            model: Arc::new(Mutex::new(Model::new(uid, gid))),
            session: None,
        };
        fs.session = Some(fs.spawn()?);
        Ok(fs)
    }

    fn spawn(&self) -> Result<BackgroundSession, Error> {
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName("strata-faultfs".into()),
            MountOption::RW,
            MountOption::NoDev,
            MountOption::NoSuid,
        ];
        let fs = Fs {
            model: self.model.clone(),
        };
        fuser::spawn_mount(fs, &self.mountpoint, &config).map_err(|source| Error::Mount {
            path: self.mountpoint.clone(),
            source,
        })
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    /// Injects `fault` from now on (`None` clears it). Survives cuts.
    pub fn set_fault(&self, fault: Option<Fault>) {
        lock(&self.model).fault = fault;
    }

    /// The power fails at the `n`-th mutating operation from now (`n = 0`: the next one):
    /// from that one on, every mutating operation fails with `EIO` and has no effect, until
    /// [`FaultFs::power_cut`].
    pub fn cut_after_ops(&self, n: u64) {
        lock(&self.model).ops_left = Some(n);
    }

    /// Whether the power has failed ([`FaultFs::cut_after_ops`] fired) and no cut came yet.
    pub fn frozen(&self) -> bool {
        lock(&self.model).frozen
    }

    /// The operation counts so far.
    pub fn counters(&self) -> Counters {
        lock(&self.model).counters
    }

    /// `umount(2)`, retried on `EBUSY` for up to 10 s: `Ok(true)` once unmounted, `Ok(false)`
    /// when not allowed (not root: fuser unmounts through `fusermount3`).
    fn unmount_retrying(&self) -> Result<bool, Error> {
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::CString::new(self.mountpoint.as_os_str().as_bytes()).map_err(|e| {
            Error::Unmount {
                path: self.mountpoint.clone(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
            }
        })?;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            // SAFETY: umount(2) with a NUL-terminated path that lives across the call.
            let rc = unsafe { libc::umount(path.as_ptr()) };
            if rc == 0 {
                return Ok(true);
            }
            let err = std::io::Error::last_os_error();
            match err.raw_os_error() {
                // Not root: leave it to fuser (fusermount3 -u).
                Some(libc::EPERM) => return Ok(false),
                Some(libc::EBUSY) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => {
                    return Err(Error::Unmount {
                        path: self.mountpoint.clone(),
                        source: err,
                    })
                }
            }
        }
    }

    /// The power cut. Call it only once every process using the mount is dead (SIGKILL):
    /// unmounts (waiting for the last request to be answered), keeps the durable state (and
    /// what `cut` allows) and mounts it again on the same mount point. An armed
    /// [`FaultFs::cut_after_ops`] is disarmed; a [`Fault`] stays.
    pub fn power_cut(&mut self, cut: Cut) -> Result<CutReport, Error> {
        if let Some(session) = self.session.take() {
            // Unmount here, retrying while the mount is still busy (a dying process, a shell
            // looking in): `umount_and_join` gives up at the first EBUSY. Then wait for the
            // session thread to see the connection end.
            let result = if self.unmount_retrying()? {
                session.join()
            } else {
                session.umount_and_join()
            };
            match result {
                Ok(()) => {}
                // The session thread's last read of /dev/fuse saw the connection aborted
                // (rather than unmounted): it has ended all the same.
                Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => {}
                Err(source) => {
                    return Err(Error::Unmount {
                        path: self.mountpoint.clone(),
                        source,
                    })
                }
            }
        }
        let report = lock(&self.model).cut(cut);
        self.session = Some(self.spawn()?);
        Ok(report)
    }
}

impl Drop for FaultFs {
    fn drop(&mut self) {
        // Dropping the session unmounts; its thread ends when the kernel lets go.
        drop(self.session.take());
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod mounted;
