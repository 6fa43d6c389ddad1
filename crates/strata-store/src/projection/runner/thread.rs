//! The runner thread: read a batch through the feed (the store subscription), apply it, append
//! its emits, publish the changed states and the cursor together, checkpoint on cadence, and
//! wait when idle.
//!
//! Invariants:
//! - The served states and the cursor they reflect are updated together after each batch,
//!   from this thread only.
//! - Emits are appended before the checkpoint covering them: a checkpoint never covers an
//!   event whose emits are not durable.
//! - A failure of user code, or a panic of it, faults this projection only, at the event that
//!   caused it (`Fault::position`) with the progress before that event kept. That includes a
//!   state that cannot be serialised: states are serialised once per batch, and when that fails
//!   the batch is redone, checking each event's state, to find the event. After a failure the
//!   events before it are redone on a fresh engine restored from the served state, so that
//!   exactly those are kept.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::batch::{apply_batch, flush_emits, BatchOutcome};
use super::control::{wait, RUN, STOP};
use super::served::{fresh_engine, serialise, Served};
use super::status::prune_samples;
use super::{Fault, RunState, RunnerShared};
use crate::error::{Error, Result};
use crate::projection::checkpoint::{write_checkpoint, CheckpointRecord};
use crate::projection::feed::Feed;

/// The thread body: runs, then records how it ended.
pub(super) fn run(shared: Arc<RunnerShared>) {
    let outcome = catch_unwind(AssertUnwindSafe(|| run_loop(&shared)));
    let fault = match outcome {
        Ok(Ok(())) => None,
        Ok(Err(fault)) => Some(fault),
        Err(panic) => Some(Fault {
            message: format!("the projection panicked: {}", panic_message(&panic)),
            stack: None,
            position: None,
        }),
    };
    let mut p = shared.progress.lock();
    match fault {
        Some(f) => {
            p.state = RunState::Faulted;
            p.error = Some(f);
        }
        None => {
            if p.state == RunState::Running {
                p.state = RunState::Stopped;
            }
        }
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_owned()
    }
}

/// Writes a checkpoint of the served state and cursor (the runner thread is the only writer of
/// both, or no thread runs).
pub(super) fn checkpoint(sh: &RunnerShared) -> Result<u64> {
    let (record, cursor) = {
        let p = sh.progress.lock();
        (
            CheckpointRecord {
                version: 1,
                incarnation: p.incarnation,
                position: p.position,
                cursor: p.cursor,
                partitions: 0,
                chunks: 0,
                bytes: 0,
                events_processed: p.events_processed,
            },
            p.cursor,
        )
    };
    let position = record.position;
    let bytes = {
        let states = sh.states.read();
        write_checkpoint(
            &sh.store,
            &sh.stream,
            record,
            states.iter().map(|(k, v)| (k, v.json.as_ref())),
        )?
    };
    let mut p = sh.progress.lock();
    p.checkpoint_position = position;
    p.checkpoint_cursor = Some(cursor);
    Ok(bytes)
}

/// A periodic [`checkpoint`]: `Ok(None)` when the disk is full. That is not a fault: nothing of
/// the checkpoint is read back (the previous one stands), the runner goes on applying and
/// serving, and the checkpoint is tried again after the spacing, until space is free.
fn periodic_checkpoint(sh: &RunnerShared) -> Result<Option<u64>> {
    match checkpoint(sh) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.is_disk_full() => Ok(None),
        Err(e) => Err(e),
    }
}

fn run_loop(sh: &RunnerShared) -> Result<(), Fault> {
    let (mut engine, mut served) = fresh_engine(sh)?;
    let (mut cursor, mut position) = {
        let p = sh.progress.lock();
        (p.cursor, p.position)
    };
    let mut feed = Feed::new(&sh.store, &engine.source(), engine.event_types(), cursor);
    let mut pending: u64 = 0;
    let mut last_checkpoint = Instant::now();
    // The least time between two periodic checkpoints (grows with the state's size).
    let mut spacing = sh.options.checkpoint_interval;
    let rate = sh.options.checkpoint_bytes_per_second.max(1) as f64;
    let spacing_after = |bytes: u64| {
        sh.options
            .checkpoint_interval
            .max(Duration::from_secs_f64(bytes as f64 / rate))
    };
    let store_fault = |e: Error| Fault::store(e, None);
    loop {
        match sh.control.load(Ordering::Acquire) {
            RUN => {}
            STOP => {
                let moved = sh.progress.lock().checkpoint_cursor != Some(cursor);
                if pending > 0 || moved {
                    checkpoint(sh).map_err(store_fault)?;
                }
                return Ok(());
            }
            _ => return Ok(()),
        }
        let batch = match feed.poll(sh.options.batch_size.max(1)) {
            Ok(b) => b,
            Err(Error::Closed) => return Ok(()),
            // A damaged event faults the projection at it (never a skip), after the events
            // before it were applied (the feed hands those out first).
            Err(e @ Error::Corruption { position, .. }) => return Err(Fault::store(e, position)),
            Err(e) => return Err(store_fault(e)),
        };
        if batch.is_empty() {
            cursor = feed.cursor();
            sh.progress.lock().cursor = cursor;
            if pending > 0 && last_checkpoint.elapsed() >= spacing {
                if let Some(bytes) = periodic_checkpoint(sh).map_err(store_fault)? {
                    spacing = spacing_after(bytes);
                    pending = 0;
                }
                last_checkpoint = Instant::now();
            }
            let deadline = (pending > 0).then(|| last_checkpoint + spacing);
            match wait(sh, &feed, deadline) {
                Ok(()) => continue,
                Err(Error::Closed) => return Ok(()),
                Err(e) => return Err(store_fault(e)),
            }
        }
        let started = Instant::now();
        let mut outcome = apply_batch(sh, engine.as_mut(), &feed, &batch, cursor, false)?;
        // The states the batch changed, serialised for serving: once per batch, not per event
        // (serialising costs a whole state, and most events change a small part of it).
        let mut fresh = None;
        if outcome.failure.is_none() {
            match serialise(engine.as_mut(), std::mem::take(&mut outcome.touched)) {
                Ok(states) => fresh = Some(states),
                Err(e) => {
                    // Some state cannot be served. Find the event that made it so: redo the
                    // batch on a fresh engine, serialising the state each event leaves behind
                    // (only on this failure path), and treat that event as the failing one.
                    (engine, served) = fresh_engine(sh)?;
                    let located = apply_batch(sh, engine.as_mut(), &feed, &batch, cursor, true)?;
                    if located.failure.is_none() {
                        // Not reproduced (a handler that is not deterministic, or one state
                        // changed through another partition's handler): fault where it was
                        // seen, without serving the batch.
                        return Err(Fault::user(e, outcome.position.or(position)));
                    }
                    outcome = located;
                }
            }
        }
        if let Some(failed) = &outcome.failure {
            // The engine may have lost the failing partition's state (a handler that mutated
            // it, then threw) or holds an unserialisable one. Redo the events before the
            // failure on a fresh engine restored from the served state, so that exactly those
            // are kept.
            let k = failed.index;
            (engine, served) = fresh_engine(sh)?;
            let mut redo = apply_batch(sh, engine.as_mut(), &feed, &batch[..k], cursor, false)?;
            if redo.failure.is_none() && redo.complete {
                redo.failure = outcome.failure.take();
            }
            outcome = redo;
        }
        let BatchOutcome {
            mut emits,
            touched,
            applied,
            position: last_applied,
            mut resume,
            complete,
            failure,
        } = outcome;
        if last_applied.is_some() {
            position = last_applied;
        }
        let failure = failure.map(|f| (f.error, f.position));
        if failure.is_none() && complete {
            resume = feed.cursor().max(resume);
        }
        let fresh = match fresh {
            Some(states) => states,
            None => serialise(engine.as_mut(), touched).map_err(|e| Fault::user(e, position))?,
        };
        // Emits first: a checkpoint never covers an event whose emits are not durable.
        flush_emits(sh, &mut emits)?;
        let fresh: Vec<(String, Option<Served>)> = fresh
            .into_iter()
            .map(|(key, value)| {
                let value = value.map(|v| Served::new(&key, v));
                (key, value)
            })
            .collect();
        // What the served states will take (this thread is their only writer).
        let replaced: usize = {
            let states = sh.states.read();
            fresh
                .iter()
                .filter_map(|(key, _)| states.get(key).map(|s| s.bytes))
                .sum()
        };
        let added: usize = fresh.iter().flat_map(|(_, v)| v).map(|v| v.bytes).sum();
        served = (served + added).saturating_sub(replaced);
        engine.set_external_bytes(served);
        {
            let mut states = sh.states.write();
            for (key, value) in fresh {
                match value {
                    Some(v) => states.insert(key, v),
                    None => states.remove(&key),
                };
            }
            let mut p = sh.progress.lock();
            p.cursor = resume;
            p.position = position;
            p.events_processed += applied;
            let total = p.events_processed;
            p.samples.push_back((started, total - applied));
            prune_samples(&mut p.samples, started);
        }
        cursor = resume;
        pending += applied;
        if let Some((e, at)) = failure {
            // Keep the progress up to the failing event, then fault at it.
            if pending > 0 {
                checkpoint(sh).map_err(store_fault)?;
            }
            return Err(Fault::user(e, Some(at)));
        }
        let since = last_checkpoint.elapsed();
        let due = (pending >= sh.options.checkpoint_events
            && since >= spacing.saturating_sub(sh.options.checkpoint_interval))
            || (pending > 0 && since >= spacing);
        if due {
            if let Some(bytes) = periodic_checkpoint(sh).map_err(store_fault)? {
                spacing = spacing_after(bytes);
                pending = 0;
            }
            last_checkpoint = Instant::now();
        }
    }
}
