//! # strata-store
//!
//! The embedded engine of Strata, an append-only event store: immutable events, grouped in
//! streams, totally ordered in one segmented, checksummed write-ahead log.
//!
//! - [`Store::append`]: atomic appends with optimistic concurrency ([`ExpectedRevision`]) and
//!   idempotent retries by event id, made durable by group commit (one writer thread, one
//!   `write` + one `fdatasync` for everything queued). JSON payloads are checked first
//!   ([`json_check`]: at most 64 levels deep, no lone surrogate escapes).
//! - Reads of a stream by revision, of the whole log by position with type / category / prefix
//!   / correlation-id filters answered from indexes, of one event, and of the stream list.
//! - Correlation and causation ([`correlation`]): one flow's events, the causes and effects of
//!   an event, from the correlation index.
//! - Soft and hard deletes and stream metadata (`max_count`, `max_age_seconds`,
//!   `truncate_before`, custom JSON), enforced by every stream read.
//! - [`Subscription`]s that catch up from the log and then follow live commits, blocking or async.
//!
//! Durability rule: an acknowledged append survives a crash; a failed one wrote nothing that will
//! ever be read. After a failed write or fsync the store turns read-only. Damaged bytes are
//! contained ([`Damage`]): every event outside them stays readable, a read that needs a damaged
//! event answers [`Error::Corruption`], and appends stop only when the damage could hide a
//! stream's head. [`repair::repair_dir`] (`strata repair`) moves damage into quarantine offline
//! and makes the store writable again.
//!
//! ```no_run
//! use strata_store::{Direction, ExpectedRevision, NewEvent, Options, ReadFrom, Store};
//!
//! let store = Store::open("./data", Options::default())?;
//! store.append("order-1", ExpectedRevision::NoStream, vec![NewEvent::json("Placed", r#"{"total":5}"#)])?;
//! let page = store.read_stream("order-1", ReadFrom::Start, Direction::Forward, 100)?;
//! assert_eq!(page.events.len(), 1);
//! # Ok::<(), strata_store::Error>(())
//! ```

mod bloom;
mod causation;
mod check;
pub mod correlation;
mod damage;
mod error;
mod event;
pub mod file_io;
mod frame;
#[doc(hidden)]
pub mod fuzzing;
mod hash;
mod id_gen;
mod index_file;
pub mod json_check;
mod log;
mod memtable;
mod merged;
mod options;
pub mod projection;
mod read;
pub mod repair;
mod scavenge;
mod segment;
mod spin;
mod stats;
mod store;
mod subscription;
pub mod timestamp;
pub mod verify;
mod writer;

pub use causation::CausalChain;
pub use check::CheckReport;
pub use damage::Damage;
pub use error::{Error, Result};
pub use event::{
    AllFilter, AppendResult, ContentType, CurrentRevision, DeleteResult, Deletion, Direction,
    ExpectedRevision, NewEvent, ReadFrom, ReadSlice, RecordedEvent, StreamHead, StreamInfo,
    StreamMetadata,
};
pub use frame::EventView;
pub use hash::category_of;
pub use json_check::MAX_JSON_DEPTH;
pub use options::{DamageHook, FsyncPolicy, Limits, Options, RebuildProgress};
pub use scavenge::{ScavengeOptions, ScavengeProgress};
pub use stats::{StatsSnapshot, FSYNC_BUCKETS_MICROS};
pub use store::{Health, Store, StoreInfo};
pub use subscription::{Subscription, SubscriptionTarget, Wake};

/// Helpers for the crate's unit tests.
#[cfg(test)]
pub(crate) mod test_support {
    use crate::{FsyncPolicy, Options, Store};

    /// Options without fsync (unit tests do not test durability).
    pub(crate) fn no_fsync() -> Options {
        Options {
            fsync: FsyncPolicy::Never,
            ..Options::default()
        }
    }

    /// A store in `dir` without fsync.
    pub(crate) fn store(dir: &std::path::Path) -> Store {
        Store::open(dir, no_fsync()).expect("open a test store")
    }
}
