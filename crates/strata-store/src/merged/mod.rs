//! Merged index files: lookups that do not slow down as sealed segments accumulate.
//!
//! Every sealed segment has its own index file ([`crate::index_file`]). A lookup of a stream's
//! head, of its entries or of an event id used to probe every one of them (a bloom filter and,
//! on a hit, a binary search), newest to oldest: with thousands of sealed segments that is
//! thousands of probes for a stream that is old or does not exist. A background merger
//! combines the stream and id entries of runs of sealed segments into bigger immutable merged
//! files, LSM-style with a fan-out of [`FAN_OUT`]: [`FAN_OUT`] consecutive segments make a
//! level-1 file, [`FAN_OUT`] consecutive level-1 files a level-2 file, and so on. The files in
//! use form one chain of consecutive position ranges from the first sealed segment on, its
//! levels non-increasing (a base-[`FAN_OUT`] counter), so a lookup probes at most
//! `(FAN_OUT - 1)` files per level plus the (fewer than [`FAN_OUT`]) sealed segments after the
//! chain, plus the open segment's memtable: `O(log n)` for `n` sealed segments.
//!
//! # Invariants
//!
//! - A merged file holds positions and revisions, never frame offsets (see [`format`]); the
//!   segment index maps a position to its frame. A rewrite of a segment that keeps positions
//!   (scavenging, repair) leaves merged files valid: a listed position whose event is gone
//!   reads as "no frame" at the segment level, exactly as through the segment's own index.
//!   Entries the rewrite dropped may still be listed: for a position without a frame, the
//!   segment's index is the authority (an id found only in a merged file is not trusted).
//! - Merged files are derived data. Each is written to `<name>.tmp`, fsynced, renamed, the
//!   directory fsynced; then the files it replaces are removed. At open only headers are
//!   checked (mapping plus a fixed-size check, so opening stays independent of the history);
//!   the chain is published to lookups file by file, in order, only after the merger thread
//!   verified each file's body checksum. A missing, stale (past the sealed end), superseded,
//!   damaged or leftover temporary file is ignored and removed, and the merger rebuilds what
//!   is missing.
//! - Lookups take the candidates of a merged file as they take a segment index's: stream
//!   entries are verified against the event's stream name (hash collisions), ids against the
//!   event's stream and id. A merged file is only consulted for positions below the open
//!   segment's first position of the lookup's snapshot, so a chain newer than the snapshot
//!   never lists a position twice.
//! - Merging never blocks appends: it runs on its own thread (or in [`crate::Store::merge_indexes`]),
//!   one merge at a time; publishing a new chain is an `Arc` swap under a short write lock.
//!   [`crate::Store::close`] stops and joins the thread (a merge in progress is abandoned and
//!   its temporary file removed).

mod format;
mod merger;
mod read;
mod units;
mod write;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex, RwLock};

pub(crate) use merger::{load, run, step};
pub(crate) use read::MergedIndex;
pub(crate) use units::{units, Probe, Unit};
pub(crate) use write::MergeError;

/// How many files (segments at level 0) one merge combines.
pub const FAN_OUT: usize = 10;

/// Name of the directory of merged index files, under the data directory.
pub const MERGED_DIR: &str = "merged";

/// The merged index directory of the data directory `dir`.
pub(crate) fn merged_dir(dir: &Path) -> PathBuf {
    dir.join(MERGED_DIR)
}

/// The merged files lookups use: verified files covering consecutive position ranges,
/// ascending, levels non-increasing.
#[derive(Default)]
pub(crate) struct MergedSet {
    /// The chain, ascending by position.
    pub files: Vec<Arc<MergedIndex>>,
}

/// The merged-index state of an open store (a field of [`crate::log::Shared`]).
#[derive(Default)]
pub(crate) struct Merged {
    /// The published chain.
    set: RwLock<Arc<MergedSet>>,
    /// Files found at open (headers checked), in chain order, waiting for their body check.
    pending: Mutex<Vec<Arc<MergedIndex>>>,
    /// Held while a merge step runs: one at a time.
    work: Mutex<()>,
    /// Set on close.
    stop: AtomicBool,
    /// Wakes the merger thread (a seal, close).
    wake: (Mutex<()>, Condvar),
    /// Merged files written since open.
    written: AtomicU64,
    /// Merge steps that failed since open.
    failed: AtomicU64,
    /// Whether this store writes merged files (writable and enabled).
    writes: AtomicBool,
}

impl Merged {
    /// The published chain.
    pub fn snapshot(&self) -> Arc<MergedSet> {
        self.set.read().clone()
    }

    /// Wakes the merger (after a seal).
    pub fn notify(&self) {
        let _g = self.wake.0.lock();
        self.wake.1.notify_all();
    }

    /// Asks the merger to stop, waking it.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.notify();
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Sleeps until notified, stopped, or `timeout`.
    fn wait(&self, timeout: Duration) {
        let mut g = self.wake.0.lock();
        if !self.stopped() {
            self.wake.1.wait_for(&mut g, timeout);
        }
    }

    /// Files found at open to verify, and whether this store writes merged files.
    pub fn init(&self, pending: Vec<Arc<MergedIndex>>, writes: bool) {
        *self.pending.lock() = pending;
        self.writes.store(writes, Ordering::Release);
    }

    /// Number of files in the published chain.
    pub fn published(&self) -> usize {
        self.set.read().files.len()
    }
}

#[cfg(test)]
mod tests;
