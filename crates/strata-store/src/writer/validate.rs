//! The checks of an append's input, run on the caller's thread before anything is queued (the
//! writer repeats the cheap ones, which frame encoding relies on).

use std::collections::HashSet;

use foldhash::fast::RandomState;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::event::{ContentType, NewEvent};
use crate::json_check::check_json;
use crate::log::META_STREAM_PREFIX;
use crate::options::Limits;

/// Checks a user-supplied stream name. `$$`-names are the store's own metadata streams.
pub(super) fn validate_stream_name(stream: &str, limits: &Limits) -> Result<()> {
    if stream.is_empty() {
        return Err(Error::invalid("stream", "must not be empty"));
    }
    if stream.len() > limits.max_stream_name_len.min(u16::MAX as usize - 2) {
        return Err(Error::invalid(
            "stream",
            format!("longer than {} bytes", limits.max_stream_name_len),
        ));
    }
    if stream.chars().any(char::is_control) {
        return Err(Error::invalid(
            "stream",
            "must not contain control characters",
        ));
    }
    if stream.starts_with(META_STREAM_PREFIX) {
        return Err(Error::invalid(
            "stream",
            "names starting with $$ are reserved for stream metadata",
        ));
    }
    Ok(())
}

/// Every check of an append's input, run on the caller's thread before the request is queued
/// (so a refused append writes nothing, and the payload scan, linear in the bytes, runs in
/// parallel across callers rather than on the writer thread). The writer repeats the cheap
/// checks (frame encoding relies on them) but not the payload scan.
pub(crate) fn validate_append(stream: &str, events: &[NewEvent], limits: &Limits) -> Result<()> {
    validate_stream_name(stream, limits)?;
    validate_events(events, limits)?;
    validate_payloads(events, limits)
}

/// JSON payloads (see [`crate::json_check`]): the `data` of JSON events and the metadata of
/// every event, when not empty, must be JSON text nested at most `limits.max_json_depth` deep
/// without lone surrogate escapes. Refused as `events[i].data` / `events[i].metadata`.
fn validate_payloads(events: &[NewEvent], limits: &Limits) -> Result<()> {
    let check = |i: usize, field: &str, bytes: &[u8]| {
        check_json(bytes, limits.max_json_depth)
            .map_err(|problem| Error::invalid(format!("events[{i}].{field}"), problem.to_string()))
    };
    for (i, e) in events.iter().enumerate() {
        if e.content_type == ContentType::Json && !e.data.is_empty() {
            check(i, "data", &e.data)?;
        }
        if !e.metadata.is_empty() {
            check(i, "metadata", &e.metadata)?;
        }
    }
    Ok(())
}

/// The cheap checks of the event list: at least one event and at most
/// `limits.max_events_per_append`; every type 1 to `max_event_type_len` bytes without control
/// characters; data plus metadata at most `max_event_size` bytes; no client-chosen id twice.
pub(super) fn validate_events(events: &[NewEvent], limits: &Limits) -> Result<()> {
    if events.is_empty() {
        return Err(Error::invalid(
            "events",
            "an append needs at least one event",
        ));
    }
    if events.len() > limits.max_events_per_append {
        return Err(Error::invalid(
            "events",
            format!(
                "more than {} events in one append",
                limits.max_events_per_append
            ),
        ));
    }
    let mut seen: HashSet<Uuid, RandomState> = HashSet::default();
    for (i, e) in events.iter().enumerate() {
        if e.event_type.is_empty()
            || e.event_type.len() > limits.max_event_type_len.min(u16::MAX as usize)
        {
            return Err(Error::invalid(
                format!("events[{i}].type"),
                format!("must be 1 to {} bytes", limits.max_event_type_len),
            ));
        }
        if e.event_type.chars().any(char::is_control) {
            return Err(Error::invalid(
                format!("events[{i}].type"),
                "must not contain control characters",
            ));
        }
        let size = e.data.len() + e.metadata.len();
        if size > limits.max_event_size || size > u32::MAX as usize {
            return Err(Error::invalid(
                format!("events[{i}]"),
                format!(
                    "data and metadata are {size} bytes, over the limit of {}",
                    limits.max_event_size
                ),
            ));
        }
        if let Some(id) = e.id {
            if !seen.insert(id) {
                return Err(Error::invalid(
                    format!("events[{i}].id"),
                    format!("{id} appears twice in one append"),
                ));
            }
        }
    }
    Ok(())
}
