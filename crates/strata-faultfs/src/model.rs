//! The model behind the mount: every inode's live view and durable image, the operations
//! on them, and what a cut keeps (see the crate docs).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::time::{Duration, UNIX_EPOCH};

use fuser::{Errno, FileAttr, FileType, INodeNo, RenameFlags};

use crate::*;

pub(crate) const ROOT: u64 = 1;
pub(crate) const TTL: Duration = Duration::ZERO;
pub(crate) const SECTOR: u64 = 512;
pub(crate) const BLOCK: u32 = 4096;

/// An unsynced change of a file.
#[derive(Clone, Debug)]
pub(crate) enum Op {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

impl Op {
    pub(crate) fn apply(&self, buf: &mut Vec<u8>) {
        match self {
            Op::Write { offset, data } => write_at(buf, *offset, data),
            Op::SetLen(len) => buf.resize(usize_of(*len), 0),
        }
    }
}

pub(crate) fn usize_of(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

pub(crate) fn write_at(buf: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let start = usize_of(offset);
    let end = start.saturating_add(data.len());
    if buf.len() < end {
        buf.resize(end, 0);
    }
    buf[start..end].copy_from_slice(data);
}

#[derive(Debug, Default)]
pub(crate) struct FileNode {
    pub(crate) live: Vec<u8>,
    pub(crate) durable: Vec<u8>,
    /// The changes of `live` since `durable`, in order: `durable` + `pending` = `live`.
    pub(crate) pending: Vec<Op>,
}

#[derive(Debug, Default)]
pub(crate) struct DirNode {
    pub(crate) live: BTreeMap<OsString, u64>,
    pub(crate) durable: BTreeMap<OsString, u64>,
}

#[derive(Debug)]
pub(crate) enum Node {
    File(FileNode),
    Dir(DirNode),
}

/// A small deterministic generator (xorshift64*) for the cut choices.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15 | 1)
    }
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in `0..=n`.
    pub(crate) fn up_to(&mut self, n: u64) -> u64 {
        self.next() % (n + 1)
    }
}

#[derive(Debug)]
pub(crate) struct Model {
    pub(crate) nodes: HashMap<u64, Node>,
    pub(crate) next_ino: u64,
    pub(crate) fault: Option<Fault>,
    /// Mutating operations still allowed before the power fails ([`FaultFs::cut_after_ops`]).
    pub(crate) ops_left: Option<u64>,
    /// The power has failed: every mutating operation answers `EIO`.
    pub(crate) frozen: bool,
    /// The operation at which the power failed.
    pub(crate) frozen_at: Option<String>,
    pub(crate) counters: Counters,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

impl Model {
    pub(crate) fn new(uid: u32, gid: u32) -> Model {
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
    pub(crate) fn mutate(&mut self, what: impl FnOnce(&Model) -> String) -> Result<(), Errno> {
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
    pub(crate) fn path_of(&self, ino: u64) -> String {
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

    pub(crate) fn entry_path(&self, parent: u64, name: &OsStr) -> String {
        let dir = self.path_of(parent);
        format!("{}/{}", dir.trim_end_matches('/'), name.to_string_lossy())
    }

    pub(crate) fn check_fault(&mut self, fault: Fault) -> Result<(), Errno> {
        if self.fault == Some(fault) {
            self.counters.failed += 1;
            return Err(Errno::EIO);
        }
        Ok(())
    }

    pub(crate) fn attr(&self, ino: u64) -> Option<FileAttr> {
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

    pub(crate) fn dir(&self, ino: u64) -> Result<&DirNode, Errno> {
        match self.nodes.get(&ino) {
            Some(Node::Dir(d)) => Ok(d),
            Some(Node::File(_)) => Err(Errno::ENOTDIR),
            None => Err(Errno::ENOENT),
        }
    }

    pub(crate) fn dir_mut(&mut self, ino: u64) -> Result<&mut DirNode, Errno> {
        match self.nodes.get_mut(&ino) {
            Some(Node::Dir(d)) => Ok(d),
            Some(Node::File(_)) => Err(Errno::ENOTDIR),
            None => Err(Errno::ENOENT),
        }
    }

    pub(crate) fn file_mut(&mut self, ino: u64) -> Result<&mut FileNode, Errno> {
        match self.nodes.get_mut(&ino) {
            Some(Node::File(f)) => Ok(f),
            Some(Node::Dir(_)) => Err(Errno::EISDIR),
            None => Err(Errno::ENOENT),
        }
    }

    pub(crate) fn lookup(&self, parent: u64, name: &OsStr) -> Result<FileAttr, Errno> {
        let ino = *self.dir(parent)?.live.get(name).ok_or(Errno::ENOENT)?;
        self.attr(ino).ok_or(Errno::ENOENT)
    }

    pub(crate) fn create(
        &mut self,
        parent: u64,
        name: &OsStr,
        node: Node,
    ) -> Result<FileAttr, Errno> {
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

    pub(crate) fn remove(
        &mut self,
        parent: u64,
        name: &OsStr,
        want_dir: bool,
    ) -> Result<(), Errno> {
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

    pub(crate) fn rename(
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

    pub(crate) fn set_len(&mut self, ino: u64, len: u64) -> Result<(), Errno> {
        self.file_mut(ino)?;
        self.mutate(|m| format!("truncate {}", m.path_of(ino)))?;
        self.check_fault(Fault::WriteEio)?;
        let file = self.file_mut(ino)?;
        file.live.resize(usize_of(len), 0);
        file.pending.push(Op::SetLen(len));
        self.counters.metadata_ops += 1;
        Ok(())
    }

    pub(crate) fn write(&mut self, ino: u64, offset: u64, data: &[u8]) -> Result<u32, Errno> {
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

    pub(crate) fn fsync(&mut self, ino: u64) -> Result<(), Errno> {
        if !self.nodes.contains_key(&ino) {
            return Err(Errno::ENOENT);
        }
        self.mutate(|m| format!("fsync {}", m.path_of(ino)))?;
        self.check_fault(Fault::FsyncEio)?;
        if self.fault == Some(Fault::IndexFsyncEio) && self.path_of(ino).contains(".idx") {
            self.check_fault(Fault::IndexFsyncEio)?;
        }
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
    pub(crate) fn cut(&mut self, cut: Cut) -> CutReport {
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
