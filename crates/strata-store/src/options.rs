//! How a store is opened: segment size, durability policy, input limits.

use std::sync::Arc;
use std::time::Duration;

use crate::file_io::{FileIo, StdFileIo};

/// When appended bytes are forced to stable storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// `fdatasync` after every group commit, before any append in it is acknowledged (default).
    Always,
    /// Acknowledge after `write`; `fdatasync` at most this often. A crash may lose the last interval.
    Interval(Duration),
    /// Never sync (tests, bulk import). Segments are still synced when sealed and on close.
    Never,
}

impl std::str::FromStr for FsyncPolicy {
    type Err = String;

    /// Parses `always`, `never`, or `interval:<ms>` (as the server's `--fsync` flag).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "always" => Ok(FsyncPolicy::Always),
            "never" => Ok(FsyncPolicy::Never),
            _ => {
                let ms = s
                    .strip_prefix("interval:")
                    .and_then(|ms| ms.parse::<u64>().ok())
                    .filter(|ms| *ms > 0)
                    .ok_or_else(|| {
                        format!(
                            "invalid fsync policy {s:?}: expected always, never or interval:<ms>"
                        )
                    })?;
                Ok(FsyncPolicy::Interval(Duration::from_millis(ms)))
            }
        }
    }
}

/// Input limits enforced on every append: more events than `max_events_per_append`, or an event
/// over `max_event_size`, is [`crate::Error::LimitExceeded`]; a stream name or event type over
/// its length limit is malformed input, [`crate::Error::InvalidInput`].
#[derive(Clone, Debug)]
pub struct Limits {
    /// Maximum bytes of one event's data plus metadata.
    pub max_event_size: usize,
    /// Maximum events in one append.
    pub max_events_per_append: usize,
    /// Maximum stream-name length in bytes (at most 65535).
    pub max_stream_name_len: usize,
    /// Maximum event-type length in bytes (at most 65535).
    pub max_event_type_len: usize,
    /// Deepest nesting of arrays and objects in JSON `data` and in metadata (default
    /// [`crate::MAX_JSON_DEPTH`], 64; larger values act as
    /// [`crate::json_check::JSON_DEPTH_CEILING`], 128). See [`crate::json_check`].
    pub max_json_depth: usize,
}

impl Limits {
    /// Checks the event at `index` of an append against the per-event limits, exactly as
    /// [`crate::Store::append`] does: a type of 1 to `max_event_type_len` bytes without control
    /// characters ([`crate::Error::InvalidInput`]), data plus metadata at most `max_event_size`
    /// bytes ([`crate::Error::LimitExceeded`]). For front ends that parse a request event by
    /// event and want to stop at the first one over a limit; the store checks again.
    pub fn check_event(&self, index: usize, event: &crate::NewEvent) -> crate::Result<()> {
        crate::writer::validate_event(index, event, self)
    }

    /// Checks that `count` events fit in one append ([`crate::Error::LimitExceeded`] when over
    /// `max_events_per_append`), exactly as [`crate::Store::append`] does.
    pub fn check_count(&self, count: usize) -> crate::Result<()> {
        crate::writer::validate_count(count, self)
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_event_size: 4 * 1024 * 1024,
            max_events_per_append: 10_000,
            max_stream_name_len: 255,
            max_event_type_len: 255,
            max_json_depth: crate::MAX_JSON_DEPTH,
        }
    }
}

/// Options for [`crate::Store::open`].
#[derive(Clone)]
pub struct Options {
    /// Size at which the open segment is sealed and a new one started (default 256 MiB). A single
    /// append is never split across segments, so a segment may exceed this by one append.
    pub segment_size: u64,
    /// Durability policy (default [`FsyncPolicy::Always`]).
    pub fsync: FsyncPolicy,
    /// Input limits.
    pub limits: Limits,
    /// How many stream heads the writer keeps cached; beyond it heads are looked up in the
    /// indexes again. Bounds memory independently of the number of streams.
    pub head_cache_capacity: usize,
    /// Whether a background thread merges the index files of sealed segments into bigger
    /// merged index files (default true), so that a stream lookup probes `O(log n)` files for
    /// `n` sealed segments instead of all of them. Off: merged files are neither written nor
    /// used; those on disk stay (a writable open still removes stale ones, which reach past
    /// the sealed end, as it always does).
    pub merge_indexes: bool,
    /// Open without the writer: every write answers [`crate::Error::ReadOnly`]; nothing on disk is
    /// changed (no torn-tail truncation, no index files written).
    pub read_only: bool,
    /// File I/O used by the writer (replace it in tests to inject faults).
    pub file_io: Arc<dyn FileIo>,
    /// Called while [`crate::Store::open`] rebuilds a missing or damaged index file, with the
    /// segment path, bytes scanned so far and the segment's size (for a progress bar).
    pub rebuild_progress: Option<RebuildProgress>,
    /// Called once for each damaged range the store finds (at open, by a read, by a rebuild),
    /// the moment it is found: for an error-level log line. Never called twice for one range.
    pub on_damage: Option<DamageHook>,
}

/// Damage callback: see [`Options::on_damage`].
pub type DamageHook = Arc<dyn Fn(&crate::Damage) + Send + Sync>;

/// Progress callback for index rebuilds: `(segment, bytes_done, bytes_total)`.
pub type RebuildProgress = Arc<dyn Fn(&std::path::Path, u64, u64) + Send + Sync>;

impl Default for Options {
    fn default() -> Self {
        Options {
            segment_size: 256 * 1024 * 1024,
            fsync: FsyncPolicy::Always,
            limits: Limits::default(),
            head_cache_capacity: 100_000,
            merge_indexes: true,
            read_only: false,
            file_io: Arc::new(StdFileIo),
            rebuild_progress: None,
            on_damage: None,
        }
    }
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("segment_size", &self.segment_size)
            .field("fsync", &self.fsync)
            .field("limits", &self.limits)
            .field("head_cache_capacity", &self.head_cache_capacity)
            .field("read_only", &self.read_only)
            .field("merge_indexes", &self.merge_indexes)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fsync_policies() {
        assert_eq!("always".parse(), Ok(FsyncPolicy::Always));
        assert_eq!("never".parse(), Ok(FsyncPolicy::Never));
        assert_eq!(
            "interval:5".parse(),
            Ok(FsyncPolicy::Interval(Duration::from_millis(5)))
        );
        assert!("interval:0".parse::<FsyncPolicy>().is_err());
        assert!("sometimes".parse::<FsyncPolicy>().is_err());
    }
}
