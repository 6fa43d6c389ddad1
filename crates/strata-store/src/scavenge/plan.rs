//! What a scavenge removes: decided per stream, once, from the stream's head and metadata as of
//! the committed position at the start of the run.
//!
//! An event below that position is removable when no read can return it any more:
//! - its stream is hard-deleted (only the `$$` record that says so stays);
//! - its revision is below the stream's first visible revision (soft deletion,
//!   `truncate_before`, `max_count`: [`crate::StreamHead::first_visible_revision`]);
//! - it is older than the stream's `max_age_seconds` (as of the run's start);
//! - it is a superseded record of a `$$<stream>` metadata stream (each record is the complete
//!   state: the latest one stays).
//!
//! The last event of a stream that is not hard-deleted always stays (its frame, not only its
//! index entry): the stream's head (a re-created soft-deleted stream continues after it) then
//! survives even a rebuild of the segment's index from the segment alone.
//!
//! Each rule only grows with later appends (more events, a later clock), so what the plan
//! removes stays unreadable whatever happens during the run.

use std::collections::HashMap;

use foldhash::fast::RandomState;

use crate::error::Result;
use crate::event::{now_micros, Deletion};
use crate::frame::EventView;
use crate::hash::hash_str;
use crate::log::{Shared, META_STREAM_PREFIX};

/// Streams whose rules are cached at most (then the cache starts over): a plan's memory is
/// bounded, not proportional to the number of streams.
const MAX_CACHED: usize = 200_000;

/// How one stream's events are judged.
#[derive(Clone, Copy, Debug)]
struct Rule {
    /// Every event is removable (hard-deleted).
    all: bool,
    /// Revisions below this are removable.
    first_visible: u64,
    /// The last revision, kept unless `all` (the head).
    last: Option<u64>,
    /// Events with an earlier timestamp are removable (`max_age_seconds`).
    age_cutoff: Option<i64>,
    /// Whether the stream and id entries of its removed events stay in the index: for user
    /// streams that exist (a retry of an append whose events were removed answers as a retry).
    /// Deleted streams (a retry re-creates a soft-deleted one, as the contract allows) and the
    /// server's own `$`-streams keep only the entry of their last event per segment (their
    /// head).
    keep_entries: bool,
}

/// The removal decisions of one run.
pub(crate) struct Plan<'s> {
    shared: &'s Shared,
    /// The committed position at the start of the run: nothing at or past it is removed.
    limit: u64,
    now: i64,
    rules: HashMap<String, Rule, RandomState>,
    /// Stream hash → `keep_entries` of the streams judged so far.
    keep_entries: HashMap<u64, bool, RandomState>,
}

impl<'s> Plan<'s> {
    /// The plan of a run starting at committed position `limit`. Heads are looked up in the
    /// current segment list each time (below `limit`, a swap changes no head): the plan holds
    /// no segment, so the files a swap replaced are released at once.
    pub fn new(shared: &'s Shared, limit: u64) -> Self {
        Plan {
            shared,
            limit,
            now: now_micros(),
            rules: HashMap::default(),
            keep_entries: HashMap::default(),
        }
    }

    /// The rule of `stream`, computed on first use.
    fn rule(&mut self, stream: &str) -> Result<Rule> {
        if let Some(r) = self.rules.get(stream) {
            return Ok(*r);
        }
        let state = self.shared.snapshot();
        let head = self.shared.head(&state, stream, self.limit)?;
        let rule = if stream.starts_with(META_STREAM_PREFIX) {
            Rule {
                all: false,
                first_visible: head.last_revision.unwrap_or(0),
                last: head.last_revision,
                age_cutoff: None,
                keep_entries: false,
            }
        } else {
            let age_cutoff = head.metadata.max_age_seconds.map(|s| {
                self.now
                    .saturating_sub(i64::try_from(s.saturating_mul(1_000_000)).unwrap_or(i64::MAX))
            });
            Rule {
                all: head.deletion == Some(Deletion::Hard),
                first_visible: head.first_visible_revision(),
                last: head.last_revision,
                age_cutoff,
                keep_entries: !head.is_deleted() && !stream.starts_with('$'),
            }
        };
        if self.rules.len() >= MAX_CACHED {
            self.rules.clear();
        }
        self.rules.insert(stream.to_owned(), rule);
        // Forgetting a stream here only keeps more index entries (the safe default).
        if self.keep_entries.len() >= MAX_CACHED {
            self.keep_entries.clear();
        }
        self.keep_entries
            .insert(hash_str(stream), rule.keep_entries);
        Ok(rule)
    }

    /// Whether the event `v` is removed by this run.
    pub fn removable(&mut self, v: &EventView<'_>) -> Result<bool> {
        if v.position >= self.limit {
            return Ok(false);
        }
        let r = self.rule(v.stream)?;
        if r.all {
            return Ok(true);
        }
        Ok(r.last != Some(v.revision)
            && (v.revision < r.first_visible
                || r.age_cutoff.is_some_and(|c| v.timestamp_micros < c)))
    }

    /// Whether removed events of the stream with hash `hash` keep their stream and id entries
    /// (true for streams this run has not judged: keeping more is always safe).
    pub fn keeps_entries(&self, hash: u64) -> bool {
        self.keep_entries.get(&hash).copied().unwrap_or(true)
    }
}
