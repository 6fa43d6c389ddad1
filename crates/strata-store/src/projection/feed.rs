//! The event feed of one projection: its source turned into a store subscription with the
//! filters pushed down to the indexes, plus the exact checks the indexes cannot express.

use std::collections::HashSet;
use std::time::Instant;

use super::engine::ProjectionSource;
use event_listener::EventListener;

use crate::error::{Error, Result};
use crate::event::{AllFilter, RecordedEvent};
use crate::hash::category_of;
use crate::{Store, Subscription, Wake};

/// A subscription over a projection's source. Its cursor is a log position, or a revision for
/// [`ProjectionSource::Stream`].
pub(crate) struct Feed {
    sub: Subscription,
    by_revision: bool,
    /// Exact stream set (`fromStreams`), when the pushed-down filter is wider.
    streams: Option<HashSet<String>>,
    /// Exact type set, when the projection handles only some types.
    types: Option<HashSet<String>>,
}

impl Feed {
    /// Subscribes to `source` from `cursor`, keeping only `types` when given.
    pub(crate) fn new(
        store: &Store,
        source: &ProjectionSource,
        types: Option<Vec<String>>,
        cursor: u64,
    ) -> Feed {
        let type_filter = types.clone().unwrap_or_default();
        let types: Option<HashSet<String>> = types.map(|t| t.into_iter().collect());
        match source {
            ProjectionSource::Stream(stream) => Feed {
                sub: store.subscribe_stream(stream, cursor),
                by_revision: true,
                streams: None,
                types,
            },
            ProjectionSource::All => Feed {
                sub: store.subscribe_all(
                    cursor,
                    AllFilter {
                        types: type_filter,
                        ..AllFilter::default()
                    },
                ),
                by_revision: false,
                streams: None,
                types,
            },
            ProjectionSource::Category(category) => Feed {
                sub: store.subscribe_all(
                    cursor,
                    AllFilter {
                        types: type_filter,
                        category: Some(category.clone()),
                        ..AllFilter::default()
                    },
                ),
                by_revision: false,
                streams: None,
                types,
            },
            ProjectionSource::Streams(list) => {
                let mut filter = AllFilter {
                    types: type_filter,
                    ..AllFilter::default()
                };
                // The narrowest filter the indexes answer: one shared category, else the
                // longest common prefix.
                if let Some(first) = list.first() {
                    let category = category_of(first);
                    if list.iter().all(|s| category_of(s) == category) {
                        filter.category = Some(category.to_owned());
                    } else {
                        let prefix = common_prefix(list);
                        if !prefix.is_empty() {
                            filter.stream_prefix = Some(prefix.to_owned());
                        }
                    }
                }
                Feed {
                    sub: store.subscribe_all(cursor, filter),
                    by_revision: false,
                    streams: Some(list.iter().cloned().collect()),
                    types,
                }
            }
        }
    }

    /// The next batch (empty when caught up). A deleted source stream reads as empty until it is
    /// written again.
    pub(crate) fn poll(&mut self, max: usize) -> Result<Vec<RecordedEvent>> {
        match self.sub.poll(max) {
            Err(Error::StreamDeleted { .. }) => Ok(Vec::new()),
            other => other,
        }
    }

    /// Where reading resumes after everything polled so far.
    pub(crate) fn cursor(&self) -> u64 {
        self.sub.cursor()
    }

    /// Where reading resumes right after `event`.
    pub(crate) fn cursor_after(&self, event: &RecordedEvent) -> u64 {
        if self.by_revision {
            event.revision + 1
        } else {
            event.position + 1
        }
    }

    /// True when `event` belongs to the projection (the exact checks).
    pub(crate) fn accepts(&self, event: &RecordedEvent) -> bool {
        self.streams
            .as_ref()
            .is_none_or(|s| s.contains(&event.stream))
            && self
                .types
                .as_ref()
                .is_none_or(|t| t.contains(&event.event_type))
    }

    /// Blocks until something is committed after the last poll, `interrupt` is notified,
    /// `deadline` passes or the store closes ([`Subscription::wait_blocking_until`]).
    pub(crate) fn wait_until(
        &self,
        interrupt: EventListener,
        deadline: Option<Instant>,
    ) -> Result<Wake> {
        self.sub.wait_blocking_until(Some(interrupt), deadline)
    }
}

fn common_prefix(list: &[String]) -> &str {
    let Some(first) = list.first() else {
        return "";
    };
    let mut len = first.len();
    for s in &list[1..] {
        len = len.min(
            first
                .bytes()
                .zip(s.bytes())
                .take_while(|(a, b)| a == b)
                .count(),
        );
    }
    while !first.is_char_boundary(len) {
        len -= 1;
    }
    &first[..len]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_prefix_respects_char_boundaries() {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(common_prefix(&v(&["order-1", "order-2"])), "order-");
        assert_eq!(common_prefix(&v(&["a", "b"])), "");
        assert_eq!(common_prefix(&v(&["é1", "è1"])), "");
        assert_eq!(common_prefix(&v(&[])), "");
    }
}
