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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, UNIX_EPOCH};

use fuser::{
    BackgroundSession, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request,
    TimeOrNow, WriteFlags,
};

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

const ROOT: u64 = 1;
const TTL: Duration = Duration::ZERO;
const SECTOR: u64 = 512;
const BLOCK: u32 = 4096;

/// An unsynced change of a file.
#[derive(Clone, Debug)]
enum Op {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

impl Op {
    fn apply(&self, buf: &mut Vec<u8>) {
        match self {
            Op::Write { offset, data } => write_at(buf, *offset, data),
            Op::SetLen(len) => buf.resize(usize_of(*len), 0),
        }
    }
}

fn usize_of(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

fn write_at(buf: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let start = usize_of(offset);
    let end = start.saturating_add(data.len());
    if buf.len() < end {
        buf.resize(end, 0);
    }
    buf[start..end].copy_from_slice(data);
}

#[derive(Debug, Default)]
struct FileNode {
    live: Vec<u8>,
    durable: Vec<u8>,
    /// The changes of `live` since `durable`, in order: `durable` + `pending` = `live`.
    pending: Vec<Op>,
}

#[derive(Debug, Default)]
struct DirNode {
    live: BTreeMap<OsString, u64>,
    durable: BTreeMap<OsString, u64>,
}

#[derive(Debug)]
enum Node {
    File(FileNode),
    Dir(DirNode),
}

/// A small deterministic generator (xorshift64*) for the cut choices.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15 | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `0..=n`.
    fn up_to(&mut self, n: u64) -> u64 {
        self.next() % (n + 1)
    }
}

#[derive(Debug)]
struct Model {
    nodes: HashMap<u64, Node>,
    next_ino: u64,
    fault: Option<Fault>,
    /// Mutating operations still allowed before the power fails ([`FaultFs::cut_after_ops`]).
    ops_left: Option<u64>,
    /// The power has failed: every mutating operation answers `EIO`.
    frozen: bool,
    /// The operation at which the power failed.
    frozen_at: Option<String>,
    counters: Counters,
    uid: u32,
    gid: u32,
}

impl Model {
    fn new(uid: u32, gid: u32) -> Model {
        let mut nodes = HashMap::new();
        nodes.insert(ROOT, Node::Dir(DirNode::default()));
        Model {
            nodes,
            next_ino: ROOT + 1,
            fault: None,
            ops_left: None,
            frozen: false,
            frozen_at: None,
            counters: Counters::default(),
            uid,
            gid,
        }
    }

    /// Called first by every mutating operation: `Err(EIO)` once the power has failed.
    fn mutate(&mut self, what: impl FnOnce(&Model) -> String) -> Result<(), Errno> {
        if let Some(left) = self.ops_left {
            if left == 0 {
                self.frozen = true;
                self.frozen_at = Some(what(self));
                self.ops_left = None;
            } else {
                self.ops_left = Some(left - 1);
            }
        }
        if self.frozen {
            self.counters.failed += 1;
            return Err(Errno::EIO);
        }
        Ok(())
    }

    /// The path of `ino` in the live tree (else the durable one), for reports.
    fn path_of(&self, ino: u64) -> String {
        for durable in [false, true] {
            let mut todo = vec![(ROOT, String::new())];
            while let Some((dir, path)) = todo.pop() {
                if dir == ino {
                    return if path.is_empty() { "/".into() } else { path };
                }
                if let Some(Node::Dir(d)) = self.nodes.get(&dir) {
                    let entries = if durable { &d.durable } else { &d.live };
                    for (name, &child) in entries {
                        todo.push((child, format!("{path}/{}", name.to_string_lossy())));
                    }
                }
            }
        }
        format!("inode {ino}")
    }

    fn entry_path(&self, parent: u64, name: &OsStr) -> String {
        let dir = self.path_of(parent);
        format!("{}/{}", dir.trim_end_matches('/'), name.to_string_lossy())
    }

    fn check_fault(&mut self, fault: Fault) -> Result<(), Errno> {
        if self.fault == Some(fault) {
            self.counters.failed += 1;
            return Err(Errno::EIO);
        }
        Ok(())
    }

    fn attr(&self, ino: u64) -> Option<FileAttr> {
        let (kind, size, perm, nlink) = match self.nodes.get(&ino)? {
            Node::File(f) => (FileType::RegularFile, f.live.len() as u64, 0o644, 1),
            Node::Dir(_) => (FileType::Directory, 0, 0o755, 2),
        };
        Some(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: UNIX_EPOCH,
            mtime: UNIX_EPOCH,
            ctime: UNIX_EPOCH,
            crtime: UNIX_EPOCH,
            kind,
            perm,
            nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            flags: 0,
            blksize: BLOCK,
        })
    }

    fn dir(&self, ino: u64) -> Result<&DirNode, Errno> {
        match self.nodes.get(&ino) {
            Some(Node::Dir(d)) => Ok(d),
            Some(Node::File(_)) => Err(Errno::ENOTDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn dir_mut(&mut self, ino: u64) -> Result<&mut DirNode, Errno> {
        match self.nodes.get_mut(&ino) {
            Some(Node::Dir(d)) => Ok(d),
            Some(Node::File(_)) => Err(Errno::ENOTDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn file_mut(&mut self, ino: u64) -> Result<&mut FileNode, Errno> {
        match self.nodes.get_mut(&ino) {
            Some(Node::File(f)) => Ok(f),
            Some(Node::Dir(_)) => Err(Errno::EISDIR),
            None => Err(Errno::ENOENT),
        }
    }

    fn lookup(&self, parent: u64, name: &OsStr) -> Result<FileAttr, Errno> {
        let ino = *self.dir(parent)?.live.get(name).ok_or(Errno::ENOENT)?;
        self.attr(ino).ok_or(Errno::ENOENT)
    }

    fn create(&mut self, parent: u64, name: &OsStr, node: Node) -> Result<FileAttr, Errno> {
        if self.dir(parent)?.live.contains_key(name) {
            return Err(Errno::EEXIST);
        }
        self.mutate(|m| format!("create {}", m.entry_path(parent, name)))?;
        let ino = self.next_ino;
        self.next_ino += 1;
        self.nodes.insert(ino, node);
        self.dir_mut(parent)?.live.insert(name.to_owned(), ino);
        self.counters.metadata_ops += 1;
        self.attr(ino).ok_or(Errno::EIO)
    }

    fn remove(&mut self, parent: u64, name: &OsStr, want_dir: bool) -> Result<(), Errno> {
        let ino = *self.dir(parent)?.live.get(name).ok_or(Errno::ENOENT)?;
        match (self.nodes.get(&ino), want_dir) {
            (Some(Node::Dir(_)), false) => return Err(Errno::EISDIR),
            (Some(Node::File(_)), true) => return Err(Errno::ENOTDIR),
            (Some(Node::Dir(d)), true) if !d.live.is_empty() => return Err(Errno::ENOTEMPTY),
            _ => {}
        }
        self.mutate(|m| format!("unlink {}", m.entry_path(parent, name)))?;
        self.dir_mut(parent)?.live.remove(name);
        self.counters.metadata_ops += 1;
        Ok(())
    }

    fn rename(
        &mut self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: RenameFlags,
    ) -> Result<(), Errno> {
        if flags.contains(RenameFlags::RENAME_EXCHANGE)
            || flags.contains(RenameFlags::RENAME_WHITEOUT)
        {
            return Err(Errno::EINVAL);
        }
        let ino = *self.dir(parent)?.live.get(name).ok_or(Errno::ENOENT)?;
        let is_dir = matches!(self.nodes.get(&ino), Some(Node::Dir(_)));
        if let Some(&target) = self.dir(newparent)?.live.get(newname) {
            if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                return Err(Errno::EEXIST);
            }
            if target == ino {
                return Ok(());
            }
            match (self.nodes.get(&target), is_dir) {
                (Some(Node::Dir(_)), false) => return Err(Errno::EISDIR),
                (Some(Node::File(_)), true) => return Err(Errno::ENOTDIR),
                (Some(Node::Dir(d)), true) if !d.live.is_empty() => return Err(Errno::ENOTEMPTY),
                _ => {}
            }
        }
        self.mutate(|m| {
            format!(
                "rename {} to {}",
                m.entry_path(parent, name),
                m.entry_path(newparent, newname)
            )
        })?;
        self.dir_mut(parent)?.live.remove(name);
        self.dir_mut(newparent)?
            .live
            .insert(newname.to_owned(), ino);
        self.counters.metadata_ops += 1;
        Ok(())
    }

    fn set_len(&mut self, ino: u64, len: u64) -> Result<(), Errno> {
        self.file_mut(ino)?;
        self.mutate(|m| format!("truncate {}", m.path_of(ino)))?;
        self.check_fault(Fault::WriteEio)?;
        let file = self.file_mut(ino)?;
        file.live.resize(usize_of(len), 0);
        file.pending.push(Op::SetLen(len));
        self.counters.metadata_ops += 1;
        Ok(())
    }

    fn write(&mut self, ino: u64, offset: u64, data: &[u8]) -> Result<u32, Errno> {
        let written = u32::try_from(data.len()).map_err(|_| Errno::EINVAL)?;
        self.file_mut(ino)?;
        self.mutate(|m| format!("write {}", m.path_of(ino)))?;
        self.check_fault(Fault::WriteEio)?;
        let file = self.file_mut(ino)?;
        write_at(&mut file.live, offset, data);
        file.pending.push(Op::Write {
            offset,
            data: data.to_vec(),
        });
        self.counters.writes += 1;
        Ok(written)
    }

    fn fsync(&mut self, ino: u64) -> Result<(), Errno> {
        if !self.nodes.contains_key(&ino) {
            return Err(Errno::ENOENT);
        }
        self.mutate(|m| format!("fsync {}", m.path_of(ino)))?;
        self.check_fault(Fault::FsyncEio)?;
        match self.nodes.get_mut(&ino) {
            Some(Node::File(f)) => {
                for op in f.pending.drain(..) {
                    op.apply(&mut f.durable);
                }
                debug_assert_eq!(f.durable, f.live);
                self.counters.fsyncs += 1;
            }
            Some(Node::Dir(d)) => {
                d.durable = d.live.clone();
                self.counters.dir_fsyncs += 1;
            }
            None => return Err(Errno::ENOENT),
        }
        Ok(())
    }

    /// The power cut: every node takes its durable image (plus what a [`Cut::Torn`] keeps);
    /// nodes unreachable from the durable root are dropped.
    fn cut(&mut self, cut: Cut) -> CutReport {
        let mut report = CutReport {
            frozen: self.frozen,
            frozen_at: self.frozen_at.take(),
            ..CutReport::default()
        };
        let mut rng = match cut {
            Cut::DropUnsynced => None,
            Cut::Torn { seed } => Some(Rng::new(seed)),
        };
        let mut inos: Vec<u64> = self.nodes.keys().copied().collect();
        inos.sort_unstable();
        if let Some(rng) = rng.as_mut() {
            report.namespace_kept = rng.next() % 2 == 0;
        }
        if report.namespace_kept {
            for node in self.nodes.values_mut() {
                if let Node::Dir(d) = node {
                    d.durable = d.live.clone();
                }
            }
        }
        // The durable tree.
        let mut reachable = HashSet::from([ROOT]);
        let mut todo = vec![ROOT];
        while let Some(ino) = todo.pop() {
            if let Some(Node::Dir(d)) = self.nodes.get(&ino) {
                for &child in d.durable.values() {
                    if reachable.insert(child) {
                        todo.push(child);
                    }
                }
            }
        }
        self.nodes.retain(|ino, _| reachable.contains(ino));
        for ino in inos {
            match self.nodes.get_mut(&ino) {
                Some(Node::File(f)) => {
                    let pending = std::mem::take(&mut f.pending);
                    let keep = match rng.as_mut() {
                        Some(rng) => usize_of(rng.up_to(pending.len() as u64)),
                        None => 0,
                    };
                    for op in &pending[..keep] {
                        op.apply(&mut f.durable);
                    }
                    report.kept_ops += keep;
                    report.dropped_ops += pending.len() - keep;
                    // The first write not kept may have reached the disk in part: whole
                    // sectors of it, from its start.
                    if let (Some(rng), Some(Op::Write { offset, data })) =
                        (rng.as_mut(), pending.get(keep))
                    {
                        let end = offset + data.len() as u64;
                        let first = offset.div_ceil(SECTOR) * SECTOR;
                        if first < end && rng.next() % 2 == 0 {
                            let sectors = (end - 1 - first) / SECTOR;
                            let cut_at = first + rng.up_to(sectors) * SECTOR;
                            if cut_at > *offset {
                                write_at(
                                    &mut f.durable,
                                    *offset,
                                    &data[..usize_of(cut_at - offset)],
                                );
                                report.torn_writes += 1;
                            }
                        }
                    }
                    f.live = f.durable.clone();
                }
                Some(Node::Dir(d)) => d.live = d.durable.clone(),
                None => {}
            }
        }
        self.frozen = false;
        self.ops_left = None;
        self.counters.cuts += 1;
        report
    }
}

/// The FUSE side: every request locks the model.
struct Fs {
    model: Arc<Mutex<Model>>,
}

fn lock(model: &Mutex<Model>) -> MutexGuard<'_, Model> {
    model
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Fs {
    fn model(&self) -> MutexGuard<'_, Model> {
        lock(&self.model)
    }
}

fn reply_empty(reply: ReplyEmpty, result: Result<(), Errno>) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

fn reply_entry(reply: ReplyEntry, result: Result<FileAttr, Errno>) {
    match result {
        Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
        Err(e) => reply.error(e),
    }
}

fn is_regular(mode: u32) -> bool {
    let fmt = mode & libc::S_IFMT;
    fmt == 0 || fmt == libc::S_IFREG
}

impl Fs {
    /// `mknod`/`create` of a regular file (anything else is `EPERM`): an empty file, volatile
    /// until its directory is fsynced.
    fn create_file(&self, parent: INodeNo, name: &OsStr, mode: u32) -> Result<FileAttr, Errno> {
        if !is_regular(mode) {
            return Err(Errno::EPERM);
        }
        self.model()
            .create(parent.0, name, Node::File(FileNode::default()))
    }
}

impl Filesystem for Fs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        reply_entry(reply, self.model().lookup(parent.0, name));
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.model().attr(ino.0) {
            Some(attr) => reply.attr(&TTL, &attr),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<std::time::SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<std::time::SystemTime>,
        _chgtime: Option<std::time::SystemTime>,
        _bkuptime: Option<std::time::SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut model = self.model();
        if let Some(len) = size {
            if let Err(e) = model.set_len(ino.0, len) {
                return reply.error(e);
            }
        }
        match model.attr(ino.0) {
            Some(attr) => reply.attr(&TTL, &attr),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn mknod(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        reply_entry(reply, self.create_file(parent, name, mode));
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let result = self
            .model()
            .create(parent.0, name, Node::Dir(DirNode::default()));
        reply_entry(reply, result);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.model().remove(parent.0, name, false));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.model().remove(parent.0, name, true));
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let result = self
            .model()
            .rename(parent.0, name, newparent.0, newname, flags);
        reply_empty(reply, result);
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.model().nodes.get(&ino.0) {
            Some(Node::File(_)) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Some(Node::Dir(_)) => reply.error(Errno::EISDIR),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let model = self.model();
        match model.nodes.get(&ino.0) {
            Some(Node::File(f)) => {
                let start = usize_of(offset).min(f.live.len());
                let end = start.saturating_add(size as usize).min(f.live.len());
                reply.data(&f.live[start..end]);
            }
            Some(Node::Dir(_)) => reply.error(Errno::EISDIR),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.model().write(ino.0, offset, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply_empty(reply, self.model().fsync(ino.0));
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.model().dir(ino.0) {
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let model = self.model();
        let dir = match model.dir(ino.0) {
            Ok(d) => d,
            Err(e) => return reply.error(e),
        };
        let dots = [
            (ino.0, FileType::Directory, OsStr::new(".")),
            // The parent is not tracked; `..` is resolved by the kernel, not through here.
            (ROOT, FileType::Directory, OsStr::new("..")),
        ];
        let entries = dir.live.iter().map(|(name, &child)| {
            let kind = match model.nodes.get(&child) {
                Some(Node::Dir(_)) => FileType::Directory,
                _ => FileType::RegularFile,
            };
            (child, kind, name.as_os_str())
        });
        for (i, (child, kind, name)) in dots
            .into_iter()
            .chain(entries)
            .enumerate()
            .skip(usize_of(offset))
        {
            if reply.add(INodeNo(child), i as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply_empty(reply, self.model().fsync(ino.0));
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let model = self.model();
        let used: u64 = model
            .nodes
            .values()
            .map(|n| match n {
                Node::File(f) => f.live.len().max(f.durable.len()) as u64,
                Node::Dir(_) => 0,
            })
            .sum();
        let total: u64 = 1 << 20; // blocks of 4 KiB: 4 GiB
        let free = total.saturating_sub(used / u64::from(BLOCK));
        reply.statfs(total, free, free, 1 << 20, 1 << 20, BLOCK, 255, BLOCK);
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        match self.create_file(parent, name, mode) {
            Ok(attr) => reply.created(
                &TTL,
                &attr,
                Generation(0),
                FileHandle(0),
                FopenFlags::empty(),
            ),
            Err(e) => reply.error(e),
        }
    }
}

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
mod tests {
    use super::*;

    fn file<'a>(model: &'a Model, path: &[&str]) -> Option<&'a FileNode> {
        let mut ino = ROOT;
        for name in path {
            ino = *model.dir(ino).ok()?.live.get(OsStr::new(name))?;
        }
        match model.nodes.get(&ino)? {
            Node::File(f) => Some(f),
            Node::Dir(_) => None,
        }
    }

    fn new_file(model: &mut Model, name: &str) -> u64 {
        model
            .create(ROOT, OsStr::new(name), Node::File(FileNode::default()))
            .map(|a| a.ino.0)
            .expect("create")
    }

    #[test]
    fn unsynced_writes_and_entries_are_lost() {
        let mut m = Model::new(0, 0);
        let a = new_file(&mut m, "a");
        m.write(a, 0, b"hello").unwrap();
        m.fsync(a).unwrap();
        m.cut(Cut::DropUnsynced);
        // The file was fsynced but its directory entry never was.
        assert!(file(&m, &["a"]).is_none());

        let a = new_file(&mut m, "a");
        m.fsync(ROOT).unwrap();
        m.write(a, 0, b"hello").unwrap();
        m.cut(Cut::DropUnsynced);
        assert_eq!(file(&m, &["a"]).map(|f| f.live.clone()), Some(vec![]));

        let a = *m.dir(ROOT).unwrap().live.get(OsStr::new("a")).unwrap();
        m.write(a, 0, b"hello").unwrap();
        m.fsync(a).unwrap();
        m.write(a, 5, b" world").unwrap();
        m.set_len(a, 2).unwrap();
        m.cut(Cut::DropUnsynced);
        assert_eq!(file(&m, &["a"]).unwrap().live, b"hello");
    }

    #[test]
    fn rename_is_durable_at_the_directory_fsync() {
        let mut m = Model::new(0, 0);
        let t = new_file(&mut m, "t");
        m.write(t, 0, b"new").unwrap();
        m.fsync(t).unwrap();
        m.fsync(ROOT).unwrap();
        m.rename(
            ROOT,
            OsStr::new("t"),
            ROOT,
            OsStr::new("f"),
            RenameFlags::empty(),
        )
        .unwrap();
        m.cut(Cut::DropUnsynced);
        assert!(file(&m, &["f"]).is_none());
        assert_eq!(file(&m, &["t"]).unwrap().live, b"new");
        m.rename(
            ROOT,
            OsStr::new("t"),
            ROOT,
            OsStr::new("f"),
            RenameFlags::empty(),
        )
        .unwrap();
        m.fsync(ROOT).unwrap();
        m.cut(Cut::DropUnsynced);
        assert!(file(&m, &["t"]).is_none());
        assert_eq!(file(&m, &["f"]).unwrap().live, b"new");
    }

    #[test]
    fn torn_cuts_keep_an_in_order_prefix() {
        for seed in 0..200 {
            let mut m = Model::new(0, 0);
            let a = new_file(&mut m, "a");
            m.fsync(ROOT).unwrap();
            m.write(a, 0, &[1; 1000]).unwrap();
            m.fsync(a).unwrap();
            m.write(a, 1000, &[2; 2000]).unwrap();
            m.write(a, 3000, &[3; 100]).unwrap();
            m.cut(Cut::Torn { seed });
            let live = &file(&m, &["a"]).unwrap().live;
            assert_eq!(&live[..1000], &[1; 1000][..], "seed {seed}");
            // Some prefix of the unsynced bytes, 2s then 3s, nothing after a gap.
            let rest = &live[1000..];
            let twos = rest.iter().take_while(|&&b| b == 2).count();
            assert!(rest[twos..].iter().all(|&b| b == 3), "seed {seed}");
            assert!(twos == 2000 || rest.len() == twos, "seed {seed}");
            assert!(
                matches!(rest.len(), 0 | 2000 | 2100) || (1000 + rest.len()).is_multiple_of(512),
                "seed {seed}: {} bytes",
                rest.len()
            );
        }
    }

    #[test]
    fn faults_and_freezes_fail_with_eio_and_change_nothing() {
        let mut m = Model::new(0, 0);
        let a = new_file(&mut m, "a");
        m.fsync(ROOT).unwrap();
        m.fault = Some(Fault::FsyncEio);
        m.write(a, 0, b"x").unwrap();
        assert_eq!(m.fsync(a), Err(Errno::EIO));
        m.fault = Some(Fault::WriteEio);
        assert_eq!(m.write(a, 1, b"y"), Err(Errno::EIO));
        m.fault = None;
        m.cut(Cut::DropUnsynced);
        assert_eq!(file(&m, &["a"]).unwrap().live, b"");

        m.ops_left = Some(1);
        m.write(a, 0, b"1").unwrap();
        assert_eq!(m.fsync(a), Err(Errno::EIO));
        assert_eq!(m.write(a, 1, b"2"), Err(Errno::EIO));
        assert!(m.frozen);
        let report = m.cut(Cut::DropUnsynced);
        assert!(report.frozen);
        assert_eq!(report.frozen_at.as_deref(), Some("fsync /a"));
        assert_eq!(file(&m, &["a"]).unwrap().live, b"");
        m.write(a, 0, b"3").unwrap();
        m.fsync(a).unwrap();
    }
}

#[cfg(test)]
mod mounted {
    use super::*;
    use std::io::Write;

    /// Through the kernel: a file fsynced with its directory survives a cut, an unsynced one
    /// does not. Skipped (with the reason printed) where FUSE cannot be mounted, except in CI.
    #[test]
    fn a_cut_through_the_mount_keeps_exactly_what_was_synced() {
        let dir = std::env::temp_dir().join(format!("faultfs-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mount point");
        let mut fs = match FaultFs::mount(&dir) {
            Ok(fs) => fs,
            Err(e) => {
                assert!(std::env::var("CI").as_deref() != Ok("true"), "{e}");
                eprintln!("SKIPPED: cannot mount a FUSE file system here: {e}");
                return;
            }
        };
        {
            let mut a = std::fs::File::create(dir.join("a")).expect("create a");
            a.write_all(b"synced").expect("write a");
            a.sync_all().expect("fsync a");
            std::fs::File::open(&dir)
                .and_then(|d| d.sync_all())
                .expect("fsync dir");
            a.write_all(b" and not").expect("write a again");
            std::fs::write(dir.join("b"), b"never synced").expect("write b");
        }
        assert_eq!(std::fs::read(dir.join("a")).unwrap(), b"synced and not");
        fs.power_cut(Cut::DropUnsynced).expect("power cut");
        assert_eq!(std::fs::read(dir.join("a")).unwrap(), b"synced");
        assert!(!dir.join("b").exists());
        drop(fs);
        let _ = std::fs::remove_dir(&dir);
    }
}
