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
/// `limits.max_events_per_append` ([`validate_count`]); each event within the per-event limits
/// ([`validate_event`]); no client-chosen id twice. Over the count or size limit is
/// [`Error::LimitExceeded`], anything else [`Error::InvalidInput`].
pub(super) fn validate_events(events: &[NewEvent], limits: &Limits) -> Result<()> {
    if events.is_empty() {
        return Err(Error::invalid(
            "events",
            "an append needs at least one event",
        ));
    }
    validate_count(events.len(), limits)?;
    let mut seen: HashSet<Uuid, RandomState> = HashSet::default();
    for (i, e) in events.iter().enumerate() {
        validate_event(i, e, limits)?;
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

/// At most `limits.max_events_per_append` events in one append ([`Error::LimitExceeded`]).
pub(crate) fn validate_count(count: usize, limits: &Limits) -> Result<()> {
    if count > limits.max_events_per_append {
        return Err(Error::LimitExceeded {
            field: "events".into(),
            unit: "events",
            limit: limits.max_events_per_append,
            actual: count,
        });
    }
    Ok(())
}

/// The per-event limits of the event at `index` of an append: its type 1 to
/// `max_event_type_len` bytes without control characters ([`Error::InvalidInput`]), its data
/// plus metadata at most `max_event_size` bytes ([`Error::LimitExceeded`]).
pub(crate) fn validate_event(index: usize, e: &NewEvent, limits: &Limits) -> Result<()> {
    if e.event_type.is_empty()
        || e.event_type.len() > limits.max_event_type_len.min(u16::MAX as usize)
    {
        return Err(Error::invalid(
            format!("events[{index}].type"),
            format!("must be 1 to {} bytes", limits.max_event_type_len),
        ));
    }
    if e.event_type.chars().any(char::is_control) {
        return Err(Error::invalid(
            format!("events[{index}].type"),
            "must not contain control characters",
        ));
    }
    // A frame stores the sizes as `u32`, whatever the configured limit.
    let max_event_size = limits.max_event_size.min(u32::MAX as usize);
    let size = e.data.len() + e.metadata.len();
    if size > max_event_size {
        return Err(Error::LimitExceeded {
            field: format!("events[{index}]"),
            unit: "bytes of data and metadata",
            limit: max_event_size,
            actual: size,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_event_size: 100,
            max_events_per_append: 3,
            max_stream_name_len: 10,
            max_event_type_len: 5,
            max_json_depth: 4,
        }
    }

    /// The field an append is refused for as malformed input.
    fn invalid_field(r: Result<()>) -> String {
        match r {
            Err(Error::InvalidInput { field, .. }) => field,
            other => panic!("expected InvalidInput, got {other:?}"),
        }
    }

    fn ok_event() -> NewEvent {
        NewEvent::json("T", "{}")
    }

    #[test]
    fn stream_names() {
        let l = limits();
        assert!(validate_stream_name("order-1", &l).is_ok());
        assert!(validate_stream_name(&"s".repeat(10), &l).is_ok());
        assert!(validate_stream_name("$ok", &l).is_ok());
        for bad in ["", &"s".repeat(11), "a\nb", "a\u{7}", "$$s"] {
            assert_eq!(
                invalid_field(validate_stream_name(bad, &l)),
                "stream",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn event_types_and_ids() {
        let l = limits();
        let typed = |t: &str| vec![ok_event(), NewEvent::json(t, "{}")];
        assert!(validate_events(&typed("12345"), &l).is_ok());
        for bad in ["", "123456", "a\tb"] {
            assert_eq!(
                invalid_field(validate_events(&typed(bad), &l)),
                "events[1].type"
            );
        }
        let id = Uuid::from_u128(7);
        let twice = vec![ok_event().with_id(id), ok_event(), ok_event().with_id(id)];
        assert_eq!(invalid_field(validate_events(&twice, &l)), "events[2].id");
        let distinct = vec![
            ok_event().with_id(id),
            ok_event().with_id(Uuid::from_u128(8)),
        ];
        assert!(validate_events(&distinct, &l).is_ok());
        assert_eq!(invalid_field(validate_events(&[], &l)), "events");
    }

    /// `(field, limit, actual)` of an append refused as over a limit.
    fn over_limit(r: Result<()>) -> (String, usize, usize) {
        match r {
            Err(Error::LimitExceeded {
                field,
                limit,
                actual,
                ..
            }) => (field, limit, actual),
            other => panic!("expected LimitExceeded, got {other:?}"),
        }
    }

    #[test]
    fn the_size_limit_counts_data_and_metadata_together() {
        let l = limits();
        let at_limit = NewEvent::binary("T", vec![0u8; 60]).with_metadata(vec![b' '; 40]);
        assert!(validate_events(&[at_limit], &l).is_ok());
        let over = NewEvent::binary("T", vec![0u8; 61]).with_metadata(vec![b' '; 40]);
        let r = validate_events(&[ok_event(), over], &l);
        assert_eq!(over_limit(r), ("events[1]".into(), 100, 101));
    }

    #[test]
    fn the_count_limit_is_a_limit() {
        let l = limits();
        assert!(validate_events(&[ok_event(), ok_event(), ok_event()], &l).is_ok());
        let four = vec![ok_event(); 4];
        assert_eq!(
            over_limit(validate_events(&four, &l)),
            ("events".into(), 3, 4)
        );
        assert_eq!(
            over_limit(validate_append("s", &four, &l)),
            ("events".into(), 3, 4)
        );
        // Malformed input before the count is still malformed input.
        assert_eq!(invalid_field(validate_append("$$s", &four, &l)), "stream");
    }

    #[test]
    fn payloads_are_checked_as_json_where_they_must_be_json() {
        let l = limits();
        // Binary data is not JSON, metadata always is.
        assert!(validate_append("s", &[NewEvent::binary("T", "{{{")], &l).is_ok());
        let bad_data = [ok_event(), NewEvent::json("T", "{")];
        assert_eq!(
            invalid_field(validate_append("s", &bad_data, &l)),
            "events[1].data"
        );
        let bad_meta = [NewEvent::binary("T", "x").with_metadata("[1,")];
        assert_eq!(
            invalid_field(validate_append("s", &bad_meta, &l)),
            "events[0].metadata"
        );
        let deep = [NewEvent::json("T", "[[[[[1]]]]]")];
        assert_eq!(
            invalid_field(validate_append("s", &deep, &l)),
            "events[0].data"
        );
        // The name is checked before the events, the events before the payloads.
        assert_eq!(invalid_field(validate_append("", &bad_data, &l)), "stream");
        let both = [NewEvent::json("", "{")];
        assert_eq!(
            invalid_field(validate_append("s", &both, &l)),
            "events[0].type"
        );
    }
}
