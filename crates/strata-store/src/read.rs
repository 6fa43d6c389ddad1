//! Reads: a stream by revision, the whole log by position (filtered through the category and
//! event-type indexes), the stream listing. Readers see only positions below the published end.

use std::collections::BTreeSet;
use std::ops::ControlFlow;

use crate::correlation::correlation_key;
use crate::error::{Error, Result};
use crate::event::{
    now_micros, AllFilter, Direction, ReadFrom, ReadSlice, RecordedEvent, StreamHead, StreamInfo,
};
use crate::hash::{category_of, hash_str};
use crate::log::{LogState, Shared};

/// Positions examined per index window when answering a filtered read.
const WINDOW: u64 = 1 << 16;

/// Reads one page of a stream, enforcing deletion and metadata limits.
pub(crate) fn read_stream(
    shared: &Shared,
    stream: &str,
    from: ReadFrom,
    direction: Direction,
    limit: usize,
) -> Result<ReadSlice> {
    let limit = limit.max(1) as u64;
    let committed = shared.committed();
    let state = shared.snapshot();
    let head = readable_head(shared, &state, stream, committed)?;
    let Some(last) = head.last_revision else {
        // With events of unknown streams lost in damage, "never written" cannot be told.
        if let Some(d) = shared.damage.unindexed().first() {
            return Err(Error::corruption(
                &d.file,
                d.offset,
                format!(
                    "stream {stream} has no intact event, and events lost in damaged bytes may \
                     belong to it ({})",
                    d.detail
                ),
            ));
        }
        return Err(Error::StreamNotFound {
            stream: stream.to_owned(),
        });
    };
    let first_visible = head.first_visible_revision();
    let age_cutoff = head.metadata.max_age_seconds.map(|s| {
        now_micros().saturating_sub(i64::try_from(s.saturating_mul(1_000_000)).unwrap_or(i64::MAX))
    });
    let keep = |e: &RecordedEvent| age_cutoff.is_none_or(|c| e.timestamp_micros >= c);
    let mut events = Vec::new();
    match direction {
        Direction::Forward => {
            let start = match from {
                ReadFrom::Start => 0,
                ReadFrom::End => last + 1,
                ReadFrom::At(r) => r,
            };
            let mut lo = start.max(first_visible);
            while lo <= last && (events.len() as u64) < limit {
                let hi = last.min(lo.saturating_add(limit - events.len() as u64 - 1));
                for e in stream_events(shared, &state, stream, lo, hi, committed)? {
                    if keep(&e) {
                        events.push(e);
                    }
                }
                lo = hi + 1;
            }
            Ok(ReadSlice {
                events,
                next: Some(lo.max(start)),
                end: lo > last,
            })
        }
        Direction::Backward => {
            let start = match from {
                ReadFrom::Start => 0,
                ReadFrom::End => last,
                ReadFrom::At(r) => r.min(last),
            };
            // `hi` is the next revision to read, `None` once below the first visible one.
            let mut hi = (start >= first_visible).then_some(start);
            while let Some(h) = hi {
                if events.len() as u64 >= limit {
                    break;
                }
                let want = limit - events.len() as u64;
                let lo = first_visible.max(h.saturating_sub(want - 1));
                let mut page = stream_events(shared, &state, stream, lo, h, committed)?;
                page.reverse();
                events.extend(page.into_iter().filter(|e| keep(e)));
                hi = (lo > first_visible).then(|| lo - 1);
            }
            Ok(ReadSlice {
                events,
                next: hi,
                end: hi.is_none(),
            })
        }
    }
}

/// When events of unknown streams were lost in damage at positions after `last_position` (the
/// stream's last intact event), the error a read past that event answers (given the stream).
fn lost_after(shared: &Shared, last_position: Option<u64>) -> Option<impl Fn(&str) -> Error> {
    let after = last_position.map_or(0, |p| p + 1);
    let d = shared
        .damage
        .unindexed()
        .into_iter()
        .find(|d| !d.positions.is_empty() && d.positions.end > after)?;
    Some(move |stream: &str| {
        Error::corruption(
            &d.file,
            d.offset,
            format!(
                "events of stream {stream} after its last intact one may lie in damaged bytes ({})",
                d.detail
            ),
        )
        .at_position(d.positions.start.max(after))
    })
}

/// The head of a stream that may be read: `StreamDeleted` while deleted.
fn readable_head(
    shared: &Shared,
    state: &LogState,
    stream: &str,
    committed: u64,
) -> Result<StreamHead> {
    let head = shared.head(state, stream, committed)?;
    if head.is_deleted() {
        return Err(Error::StreamDeleted {
            stream: stream.to_owned(),
        });
    }
    Ok(head)
}

/// The events of `stream` with revisions in `[lo, hi]`, ascending (colliding streams skipped).
fn stream_events(
    shared: &Shared,
    state: &LogState,
    stream: &str,
    lo: u64,
    hi: u64,
    committed: u64,
) -> Result<Vec<RecordedEvent>> {
    let mut out: Vec<RecordedEvent> = Vec::new();
    for (_, position) in shared.stream_entries(state, stream, lo, hi, committed)? {
        // A position without an event (removed by a scavenge) is skipped.
        if let Some(Some(e)) = shared.with_event_opt(state, position, |v| {
            (v.stream == stream).then(|| v.to_owned_event())
        })? {
            out.push(e);
        }
    }
    check_no_lost_revision(shared, stream, lo, hi, &out)?;
    Ok(out)
}

/// With events of unknown streams lost in damage, a revision missing from `lo..=hi` (all at or
/// below the stream's known head) may be one of them: an error naming the damage between its
/// neighbours, never a page that silently skips it. (Without such damage a missing revision
/// was removed on purpose: a repair's report lists it.)
fn check_no_lost_revision(
    shared: &Shared,
    stream: &str,
    lo: u64,
    hi: u64,
    events: &[RecordedEvent],
) -> Result<()> {
    let lost = shared.damage.unindexed();
    if lost.is_empty() {
        return Ok(());
    }
    let gap = |expected: u64, before: u64, after: u64| {
        let d = lost
            .iter()
            .find(|d| d.positions.start < after && d.positions.end > before)
            .unwrap_or(&lost[0]);
        Error::corruption(
            &d.file,
            d.offset,
            format!(
                "revision {expected} of stream {stream} may lie in damaged bytes ({})",
                d.detail
            ),
        )
    };
    let mut expected = lo;
    let mut before = 0u64; // position of the last event seen
    for e in events {
        if e.revision > expected {
            return Err(gap(expected, before, e.position));
        }
        expected = e.revision + 1;
        before = e.position;
    }
    if expected <= hi {
        return Err(gap(expected, before, u64::MAX));
    }
    Ok(())
}

/// One event of a stream by revision; `None` if it does not exist or is hidden by metadata.
pub(crate) fn read_event(
    shared: &Shared,
    stream: &str,
    revision: u64,
) -> Result<Option<RecordedEvent>> {
    let slice = read_stream(
        shared,
        stream,
        ReadFrom::At(revision),
        Direction::Forward,
        1,
    )?;
    if let Some(e) = slice.events.into_iter().find(|e| e.revision == revision) {
        return Ok(Some(e));
    }
    // Past the stream's last intact event, the revision may be one lost in damage whose stream
    // is unknown: that cannot be told from "never written".
    let state = shared.snapshot();
    let head = shared.head(&state, stream, shared.committed())?;
    if head.last_revision.is_none_or(|last| revision > last) {
        if let Some(e) = lost_after(shared, head.last_position) {
            return Err(e(stream));
        }
    }
    Ok(None)
}

/// Reads one page of the whole log.
pub(crate) fn read_all(
    shared: &Shared,
    from: ReadFrom,
    direction: Direction,
    limit: usize,
    filter: &AllFilter,
) -> Result<ReadSlice> {
    match read_all_page(shared, from, direction, limit, filter, true) {
        // The event after the page, read only to tell whether the page is the end, may be the
        // damaged one: then the page itself is intact, and not the end.
        Err(Error::Corruption { .. }) => {
            read_all_page(shared, from, direction, limit, filter, false)
        }
        other => other,
    }
}

/// [`read_all`]; with `lookahead`, one event more than asked is read to tell whether the page
/// is the end; without, a full page is taken as not the end.
fn read_all_page(
    shared: &Shared,
    from: ReadFrom,
    direction: Direction,
    limit: usize,
    filter: &AllFilter,
    lookahead: bool,
) -> Result<ReadSlice> {
    let limit = limit.max(1);
    let committed = shared.committed();
    let state = shared.snapshot();
    // One event more than asked tells whether the page is the end.
    let want = if lookahead {
        limit.saturating_add(1)
    } else {
        limit
    };
    let full = |n: usize| n > limit || (!lookahead && n == limit);
    let mut events: Vec<RecordedEvent> = Vec::new();
    match direction {
        Direction::Forward => {
            // `from` is a lower bound: a start beyond the head is kept as it is (never clamped
            // back to the head), so the page is empty and `next` stays at `from`.
            let start = match from {
                ReadFrom::Start => 0,
                ReadFrom::End => committed,
                ReadFrom::At(p) => p,
            };
            if indexable(filter) {
                let mut lo = start;
                while lo < committed && events.len() < want {
                    let hi = committed.min(lo.saturating_add(WINDOW));
                    for p in candidates(shared, &state, filter, lo, hi)? {
                        if events.len() >= want {
                            break;
                        }
                        if let Some(e) = matching_event(shared, &state, p, filter)? {
                            events.push(e);
                        }
                    }
                    lo = hi;
                }
            } else {
                shared.scan_forward(&state, start, committed, |v| {
                    if filter.matches_event(v.stream, v.event_type, v.metadata) {
                        events.push(v.to_owned_event());
                    }
                    if events.len() >= want {
                        ControlFlow::Break(())
                    } else {
                        ControlFlow::Continue(())
                    }
                })?;
            }
            if full(events.len()) {
                events.truncate(limit);
                let next = events.last().map_or(start, |e| e.position + 1);
                Ok(ReadSlice {
                    events,
                    next: Some(next),
                    end: false,
                })
            } else {
                Ok(ReadSlice {
                    events,
                    next: Some(committed.max(start)),
                    end: true,
                })
            }
        }
        Direction::Backward => {
            if committed == 0 {
                return Ok(ReadSlice {
                    events,
                    next: None,
                    end: true,
                });
            }
            let start = match from {
                ReadFrom::Start => 0,
                ReadFrom::End => committed - 1,
                ReadFrom::At(p) => p.min(committed - 1),
            };
            // Exclusive upper bound of the positions still to look at.
            let mut hi = start + 1;
            while hi > 0 && events.len() < want {
                let lo = hi.saturating_sub(WINDOW);
                let positions: Vec<u64> = if indexable(filter) {
                    candidates(shared, &state, filter, lo, hi)?
                } else {
                    (lo..hi).collect()
                };
                for &p in positions.iter().rev() {
                    if events.len() >= want {
                        break;
                    }
                    if let Some(e) = matching_event(shared, &state, p, filter)? {
                        events.push(e);
                    }
                }
                hi = lo;
            }
            if full(events.len()) {
                events.truncate(limit);
                let next = events.last().and_then(|e| e.position.checked_sub(1));
                Ok(ReadSlice {
                    events,
                    next,
                    end: next.is_none(),
                })
            } else {
                Ok(ReadSlice {
                    events,
                    next: None,
                    end: true,
                })
            }
        }
    }
}

fn matching_event(
    shared: &Shared,
    state: &LogState,
    position: u64,
    filter: &AllFilter,
) -> Result<Option<RecordedEvent>> {
    Ok(shared
        .with_event_opt(state, position, |v| {
            filter
                .matches_event(v.stream, v.event_type, v.metadata)
                .then(|| v.to_owned_event())
        })?
        .flatten())
}

/// The category an index lookup can narrow to: the filter's own, or the one implied by a stream
/// prefix that contains a `-` (every stream starting with `order-4` is in category `order`).
fn index_category(filter: &AllFilter) -> Option<&str> {
    filter.category.as_deref().or_else(|| {
        filter
            .stream_prefix
            .as_deref()
            .filter(|p| p.contains('-'))
            .map(category_of)
    })
}

/// True when the category, event-type or correlation indexes can narrow the filter.
fn indexable(filter: &AllFilter) -> bool {
    !filter.types.is_empty() || index_category(filter).is_some() || filter.correlation_id.is_some()
}

/// Ascending candidate positions in `[lo, hi)` from the category, type and correlation indexes. A superset
/// of the matches (hash collisions, prefixes): callers check each event against the filter.
fn candidates(
    shared: &Shared,
    state: &LogState,
    filter: &AllFilter,
    lo: u64,
    hi: u64,
) -> Result<Vec<u64>> {
    if hi <= lo {
        return Ok(Vec::new());
    }
    let to = hi - 1;
    let by_type = if filter.types.is_empty() {
        None
    } else {
        let hashes: BTreeSet<u64> = filter.types.iter().map(|t| hash_str(t)).collect();
        let mut out = Vec::new();
        for &h in &hashes {
            out.extend(postings(shared, state, lo, to, Posting::Type(h))?);
        }
        if hashes.len() > 1 {
            out.sort_unstable();
            out.dedup();
        }
        Some(out)
    };
    let by_category = match index_category(filter) {
        None => None,
        Some(c) => {
            let h = hash_str(c);
            Some(postings(shared, state, lo, to, Posting::Category(h))?)
        }
    };
    let by_correlation = match filter.correlation_id.as_deref() {
        None => None,
        Some(c) => Some(postings(
            shared,
            state,
            lo,
            to,
            Posting::Link(correlation_key(c)),
        )?),
    };
    let narrowed = match (by_type, by_category) {
        (Some(a), Some(b)) => Some(intersect(&a, &b)),
        (Some(a), None) | (None, Some(a)) => Some(a),
        (None, None) => None,
    };
    let mut out = match (narrowed, by_correlation) {
        (Some(a), Some(b)) => intersect(&a, &b),
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => return Ok((lo..hi).collect()),
    };
    // Events lost in damage are in no posting list, yet may match: read them (the read answers
    // the damage) rather than skip them.
    let lost: Vec<u64> = shared
        .damage
        .unindexed()
        .iter()
        .flat_map(|d| d.positions.start.max(lo)..d.positions.end.min(hi))
        .collect();
    if !lost.is_empty() {
        out.extend(lost);
        out.sort_unstable();
        out.dedup();
    }
    Ok(out)
}

/// Which posting list: the events of one event type, or of one category (by name hash), or
/// of one correlation-index key ([`crate::correlation`]).
#[derive(Clone, Copy)]
pub(crate) enum Posting {
    Type(u64),
    Category(u64),
    Link(u64),
}

/// Positions in `[from, to]` of the `posting` list, from every segment's index and the open
/// segment's memtable.
pub(crate) fn postings(
    shared: &Shared,
    state: &LogState,
    from: u64,
    to: u64,
    posting: Posting,
) -> Result<Vec<u64>> {
    let mut out = Vec::new();
    let first = state.sealed.partition_point(|s| s.end_position() <= from);
    for seg in &state.sealed[first..] {
        if seg.first_position > to {
            break;
        }
        let index = shared.index(seg)?;
        out.extend(match posting {
            Posting::Type(h) => index.type_positions(h, from, to),
            Posting::Category(h) => index.category_positions(h, from, to),
            Posting::Link(h) => index.correlation_positions(h, from, to),
        });
    }
    if to >= state.open.first_position {
        let table = state.open.table.read();
        let open = match posting {
            Posting::Type(h) => table.types.get(&h).map(Vec::as_slice),
            Posting::Category(h) => table.categories.get(&h).map(Vec::as_slice),
            Posting::Link(h) => table.links.get(&h).map(|p| p.as_slice()),
        };
        if let Some(v) = open {
            let a = v.partition_point(|&p| p < from);
            out.extend(v[a..].iter().take_while(|&&p| p <= to));
        }
    }
    Ok(out)
}

fn intersect(a: &[u64], b: &[u64]) -> Vec<u64> {
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out
}

/// Lists live streams (not deleted, not `$`-reserved) whose names start with `prefix`, in
/// byte order, after `after` (exclusive). Returns the page and the `after` for the next one.
pub(crate) fn list_streams(
    shared: &Shared,
    prefix: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<(Vec<StreamInfo>, Option<String>)> {
    let limit = limit.max(1);
    let committed = shared.committed();
    let state = shared.snapshot();
    // Candidate names from every segment's "created" list and the memtable, merged in order.
    let mut key: (String, bool) = match after {
        Some(a) if a >= prefix => (a.to_owned(), false),
        _ => (prefix.to_owned(), true),
    };
    let mut out = Vec::new();
    loop {
        let batch = next_names(shared, &state, prefix, &key.0, key.1, 256)?;
        if batch.is_empty() {
            return Ok((out, None));
        }
        for name in &batch {
            if name.starts_with('$') {
                continue;
            }
            let head = shared.head(&state, name, committed)?;
            if head.is_deleted() {
                continue;
            }
            let (Some(last_revision), Some(last_position)) =
                (head.last_revision, head.last_position)
            else {
                continue;
            };
            if out.len() == limit {
                let next = out.last().map(|s: &StreamInfo| s.name.clone());
                return Ok((out, next));
            }
            out.push(StreamInfo {
                name: name.clone(),
                last_revision,
                last_position,
            });
        }
        if let Some(last) = batch.last() {
            key = (last.clone(), false);
        }
    }
}

/// Up to `n` distinct created-stream names with `prefix`, ordered, starting at `key`.
fn next_names(
    shared: &Shared,
    state: &LogState,
    prefix: &str,
    key: &str,
    inclusive: bool,
    n: usize,
) -> Result<Vec<String>> {
    let mut set = BTreeSet::new();
    for seg in &state.sealed {
        let idx = shared.index(seg)?;
        let mut i = idx.created_lower_bound(key, inclusive)?;
        let mut taken = 0;
        while i < idx.created_count() && taken < n {
            let name = idx.created_name(i)?;
            if !name.starts_with(prefix) {
                break;
            }
            set.insert(name.to_owned());
            taken += 1;
            i += 1;
        }
    }
    {
        let table = state.open.table.read();
        let range = if inclusive {
            table
                .created
                .range::<str, _>((std::ops::Bound::Included(key), std::ops::Bound::Unbounded))
        } else {
            table
                .created
                .range::<str, _>((std::ops::Bound::Excluded(key), std::ops::Bound::Unbounded))
        };
        for name in range.take_while(|n| n.starts_with(prefix)).take(n) {
            set.insert(name.clone());
        }
    }
    Ok(set.into_iter().take(n).collect())
}
