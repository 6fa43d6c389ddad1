//! Damage found in the data files: what is damaged, and whether it stops appends.
//!
//! Damage never hides the log: frames are self-delimiting and checksummed, so a scan resumes on
//! the next valid frame after damaged bytes ([`crate::segment`]), and every event outside the
//! damaged bytes stays readable with its position and revision. A read that needs a damaged
//! event answers [`crate::Error::Corruption`] naming the file, the offset and the position.
//!
//! Two kinds, by what is still known of the damaged events:
//! - **indexed**: the segment's index file is intact, so the stream, revision and id of each
//!   damaged event are still known. Stream heads stay exact and appends may go on
//!   ([`crate::Health::Damaged`]).
//! - **unindexed**: found by a scan (the open segment at start-up, or a sealed segment whose
//!   index had to be rebuilt), so what the damaged events were is unknown: a stream's head may
//!   be among them. Appends could reuse a revision, so the store is read-only
//!   ([`crate::Health::ReadOnly`]) until `strata repair`.
//!
//! Damage in the open segment found by a read makes the store read-only too: the bytes under
//! the writer changed after they were checked.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

use crate::error::Error;
use crate::options::DamageHook;

/// One damaged byte range of a data file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    /// The damaged file (a segment or an index file).
    pub file: PathBuf,
    /// Byte offset of the first damaged byte (the start of the first frame that fails its
    /// checks).
    pub offset: u64,
    /// Damaged bytes from `offset`: up to the next valid frame (or the end of the file). 0 when
    /// frames are missing without damaged bytes in their place.
    pub length: u64,
    /// Log positions whose events lay in the damaged bytes; empty for damage outside any event
    /// (a segment header, an index file that was rebuilt).
    pub positions: Range<u64>,
    /// Whether the stream, revision and id of the damaged events are still known (from an
    /// intact index file): then stream heads are exact and appends may go on.
    pub indexed: bool,
    /// What is wrong (e.g. "frame checksum mismatch").
    pub detail: String,
}

impl Damage {
    /// The error a read that needs position `position` of this damage answers.
    pub fn error_at(&self, position: u64) -> Error {
        Error::corruption(&self.file, self.offset, self.detail.clone()).at_position(position)
    }

    /// Whether `position` lies in this damage.
    pub fn holds(&self, position: u64) -> bool {
        self.positions.contains(&position)
    }
}

/// Every damaged range found since open, in the order found, without duplicates.
#[derive(Default)]
pub(crate) struct DamageLog {
    found: Mutex<Vec<Damage>>,
    /// Whether `found` holds anything, and anything unindexed: reads check these without
    /// taking the lock.
    any: AtomicBool,
    any_unindexed: AtomicBool,
}

impl DamageLog {
    /// Records `d` unless the same range (file and offset) is known; tells `hook` about new
    /// ones. Returns whether it was new.
    pub fn record(&self, d: Damage, hook: Option<&DamageHook>) -> bool {
        {
            let mut found = self.found.lock();
            if found
                .iter()
                .any(|k| k.file == d.file && k.offset == d.offset)
            {
                return false;
            }
            found.push(d.clone());
            self.any.store(true, Ordering::Release);
            if !d.indexed {
                self.any_unindexed.store(true, Ordering::Release);
            }
        }
        if let Some(hook) = hook {
            hook(&d);
        }
        true
    }

    /// Everything found so far.
    pub fn all(&self) -> Vec<Damage> {
        self.found.lock().clone()
    }

    /// Whether anything was found.
    pub fn any(&self) -> bool {
        self.any.load(Ordering::Acquire)
    }

    /// The damage whose lost events are not known (see [`Damage::indexed`]).
    pub fn unindexed(&self) -> Vec<Damage> {
        if !self.any_unindexed.load(Ordering::Acquire) {
            return Vec::new();
        }
        self.found
            .lock()
            .iter()
            .filter(|d| !d.indexed)
            .cloned()
            .collect()
    }
}
