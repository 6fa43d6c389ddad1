//! Pages that stop at damage.
//!
//! The store answers a page that needs a damaged event with [`Error::Corruption`] as a whole.
//! A client paging through a stream or the log must still get every intact event up to the
//! damage, so a page that reaches damage is read again one event at a time: it answers the
//! events before the damaged one, with `next` on the damaged event, and the page that starts
//! there answers the damage (500 `corrupt`; the NDJSON replay ends with it). Never a skip: the
//! damaged event is neither left out nor passed over. The slow path costs one small read per
//! event of that one page, only when damage was found.

use strata_store::{Error, ReadFrom, ReadSlice, Result};

/// Reads a page of at most `limit` events from `from` with `read`; when it reaches damage, the
/// intact events before the damaged one (an error only when the damaged event is the first
/// the page needs).
pub(crate) fn read_until_damage(
    from: ReadFrom,
    limit: usize,
    mut read: impl FnMut(ReadFrom, usize) -> Result<ReadSlice>,
) -> Result<ReadSlice> {
    match read(from, limit) {
        Err(Error::Corruption { .. }) if limit > 1 => {}
        other => return other,
    }
    let mut events = Vec::new();
    let mut at = from;
    while events.len() < limit {
        let slice = match read(at, 1) {
            Ok(slice) => slice,
            Err(e) if events.is_empty() => return Err(e),
            // The damaged event: the page ends before it.
            Err(_) => break,
        };
        let stop = slice.end || slice.events.is_empty();
        events.extend(slice.events);
        match slice.next {
            Some(n) => at = ReadFrom::At(n),
            None => {
                return Ok(ReadSlice {
                    events,
                    next: None,
                    end: slice.end,
                })
            }
        }
        if stop {
            return Ok(ReadSlice {
                events,
                next: slice.next,
                end: slice.end,
            });
        }
    }
    let next = match at {
        ReadFrom::At(n) => Some(n),
        ReadFrom::Start | ReadFrom::End => None,
    };
    Ok(ReadSlice {
        events,
        next,
        end: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_store::{ContentType, RecordedEvent};

    fn event(position: u64) -> RecordedEvent {
        RecordedEvent {
            id: uuid::Uuid::nil(),
            stream: "s".into(),
            revision: position,
            position,
            event_type: "T".into(),
            timestamp_micros: 0,
            content_type: ContentType::Json,
            data: b"{}".to_vec(),
            metadata: Vec::new(),
        }
    }

    /// A log of positions 0..10 with position `damaged` damaged, read forward.
    fn log(damaged: u64) -> impl FnMut(ReadFrom, usize) -> Result<ReadSlice> {
        move |from, limit| {
            let start = match from {
                ReadFrom::Start => 0,
                ReadFrom::At(n) => n,
                ReadFrom::End => 10,
            };
            let stop = (start + limit as u64).min(10);
            if (start..stop).contains(&damaged) {
                return Err(Error::corruption("0.seg", 40, "checksum").at_position(damaged));
            }
            Ok(ReadSlice {
                events: (start..stop).map(event).collect(),
                next: Some(stop),
                end: stop == 10,
            })
        }
    }

    fn positions(slice: &ReadSlice) -> Vec<u64> {
        slice.events.iter().map(|e| e.position).collect()
    }

    #[test]
    fn a_page_ends_before_the_damaged_event_and_the_next_one_answers_it() {
        let page = read_until_damage(ReadFrom::Start, 5, log(3)).unwrap();
        assert_eq!(positions(&page), [0, 1, 2]);
        assert_eq!((page.next, page.end), (Some(3), false));
        let err = read_until_damage(ReadFrom::At(3), 5, log(3)).unwrap_err();
        assert!(matches!(
            err,
            Error::Corruption {
                position: Some(3),
                ..
            }
        ));
        let after = read_until_damage(ReadFrom::At(4), 100, log(3)).unwrap();
        assert_eq!(positions(&after), [4, 5, 6, 7, 8, 9]);
        assert!(after.end);
    }

    #[test]
    fn pages_without_damage_are_read_once() {
        let mut reads = 0;
        let mut inner = log(99);
        let page = read_until_damage(ReadFrom::Start, 4, |f, l| {
            reads += 1;
            inner(f, l)
        })
        .unwrap();
        assert_eq!(positions(&page), [0, 1, 2, 3]);
        assert_eq!(reads, 1);
    }
}
