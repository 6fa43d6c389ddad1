//! Counters the store keeps for metrics. Lock-free; read with [`crate::Store::stats`].

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds (µs) of the fsync latency histogram buckets; the last bucket is unbounded.
pub const FSYNC_BUCKETS_MICROS: [u64; 12] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
];

#[derive(Default)]
pub(crate) struct Stats {
    appends: AtomicU64,
    events: AtomicU64,
    bytes: AtomicU64,
    commits: AtomicU64,
    fsyncs: AtomicU64,
    fsync_micros_total: AtomicU64,
    fsync_buckets: [AtomicU64; FSYNC_BUCKETS_MICROS.len() + 1],
}

/// A point-in-time copy of the store's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Appends (and deletes / metadata writes) acknowledged.
    pub appends: u64,
    /// Events written (including system records).
    pub events: u64,
    /// Bytes written to segments.
    pub bytes: u64,
    /// Group commits (one `write` each).
    pub commits: u64,
    /// `fdatasync` calls.
    pub fsyncs: u64,
    /// Total time spent in `fdatasync`, µs.
    pub fsync_micros_total: u64,
    /// Count of fsyncs per bucket of [`FSYNC_BUCKETS_MICROS`] (not cumulative), plus the overflow bucket.
    pub fsync_buckets: Vec<u64>,
}

impl Stats {
    pub fn record_commit(&self, appends: u64, events: u64, bytes: u64) {
        self.appends.fetch_add(appends, Relaxed);
        self.events.fetch_add(events, Relaxed);
        self.bytes.fetch_add(bytes, Relaxed);
        self.commits.fetch_add(1, Relaxed);
    }

    pub fn record_fsync(&self, took: Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.fsyncs.fetch_add(1, Relaxed);
        self.fsync_micros_total.fetch_add(micros, Relaxed);
        let i = FSYNC_BUCKETS_MICROS.partition_point(|&b| b < micros);
        self.fsync_buckets[i].fetch_add(1, Relaxed);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            appends: self.appends.load(Relaxed),
            events: self.events.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
            commits: self.commits.load(Relaxed),
            fsyncs: self.fsyncs.load(Relaxed),
            fsync_micros_total: self.fsync_micros_total.load(Relaxed),
            fsync_buckets: self.fsync_buckets.iter().map(|b| b.load(Relaxed)).collect(),
        }
    }
}
