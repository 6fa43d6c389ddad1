//! Applying one batch: events in order until the first failure or a stop request, the
//! projection's own emits skipped, emits checked and buffered, and appended (idempotently) as
//! soon as they reach the store's events-per-append limit, so memory is bounded by that limit
//! plus one event's emits.

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use super::control::RUN;
use super::{Fault, RunnerShared};
use crate::projection::emit::{append_emits, check_emit, emitted_by, Cause};
use crate::projection::engine::{ProjectionEngine, ProjectionError};
use crate::projection::feed::Feed;

/// A failure of user code in a batch.
pub(super) struct BatchFailure {
    pub(super) error: ProjectionError,
    pub(super) position: u64,
    /// Index of the failing event in the batch.
    pub(super) index: usize,
}

/// What applying (a prefix of) a batch did.
pub(super) struct BatchOutcome {
    /// Emits not yet appended (earlier ones were flushed during the batch).
    pub(super) emits: Vec<(Cause, Vec<crate::projection::engine::Emit>)>,
    pub(super) touched: HashSet<String>,
    pub(super) applied: u64,
    /// Position of the last event applied.
    pub(super) position: Option<u64>,
    /// Where reading resumes after the events examined.
    pub(super) resume: u64,
    /// False when the batch was cut short (stop / abandon requested): `resume` is then the
    /// exact end of what was examined.
    pub(super) complete: bool,
    pub(super) failure: Option<BatchFailure>,
}

/// Applies `batch` in order until the first failure, or until a stop is requested (so a stop
/// or shutdown waits for one event, not a whole batch). Emits are appended as soon as the
/// buffered ones reach the store's events-per-append limit (they are idempotent and no
/// checkpoint covers them yet), so memory is bounded by that limit plus one event's emits.
///
/// With `check_states` (the search for the event that made a state unserialisable), the state
/// of each event's partition is serialised after the event, and a failure to do so is that
/// event's failure; the whole batch is then applied even when a stop is requested.
pub(super) fn apply_batch(
    sh: &RunnerShared,
    engine: &mut dyn ProjectionEngine,
    feed: &Feed,
    batch: &[crate::RecordedEvent],
    cursor: u64,
    check_states: bool,
) -> Result<BatchOutcome, Fault> {
    let mut out = BatchOutcome {
        emits: Vec::new(),
        touched: HashSet::new(),
        applied: 0,
        position: None,
        resume: cursor,
        complete: true,
        failure: None,
    };
    let flush_at = sh.store.options().limits.max_events_per_append.max(1);
    let mut buffered = 0usize;
    for (index, event) in batch.iter().enumerate() {
        if index > 0 && !check_states && sh.control.load(Ordering::Acquire) != RUN {
            out.complete = false;
            break;
        }
        if feed.accepts(event) && !emitted_by(event, &sh.name) {
            let fail = |error| BatchFailure {
                error,
                position: event.position,
                index,
            };
            let key = match engine.partition_key(event) {
                Ok(k) => k,
                Err(e) => {
                    out.failure = Some(fail(e));
                    return Ok(out);
                }
            };
            if let Some(key) = key {
                let mut emitted = Vec::new();
                if let Err(e) = engine.apply(&key, event, &mut emitted) {
                    out.failure = Some(fail(e));
                    return Ok(out);
                }
                if let Some(why) = emitted.iter().find_map(|e| check_emit(&sh.store, e).err()) {
                    out.failure = Some(fail(ProjectionError::new(why)));
                    return Ok(out);
                }
                if check_states {
                    if let Err(e) = engine.state(&key) {
                        out.failure = Some(fail(e));
                        return Ok(out);
                    }
                }
                if !emitted.is_empty() {
                    buffered += emitted.len();
                    out.emits.push((Cause::of(event), emitted));
                    if buffered >= flush_at {
                        flush_emits(sh, &mut out.emits)?;
                        buffered = 0;
                    }
                }
                out.touched.insert(key);
                out.applied += 1;
                out.position = Some(event.position);
            }
        }
        out.resume = feed.cursor_after(event);
    }
    Ok(out)
}

/// Appends `emits` (idempotently, see [`crate::projection::emit`]) and empties the buffer.
pub(super) fn flush_emits(
    sh: &RunnerShared,
    emits: &mut Vec<(Cause, Vec<crate::projection::engine::Emit>)>,
) -> Result<(), Fault> {
    if let Some(first) = emits.first().map(|(c, _)| c.position) {
        append_emits(&sh.store, &sh.name, sh.generation, emits)
            .map_err(|e| Fault::store(e, Some(first)))?;
    }
    emits.clear();
    Ok(())
}
