//! The `$all` filters of reads and subscriptions: on the stream name or the event type, by
//! prefixes (any of them) or a regular expression (searched anywhere in the name, as .NET's
//! `Regex.IsMatch` does; anchor it with `^` / `$`), and the checkpoint interval of filtered
//! subscriptions (the window size times the multiplier).

use regex::Regex;
use tonic::Status;

use crate::grpc::proto::event_store::client::streams::read_req::options::{
    filter_options, FilterOptions,
};

/// What a filter looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    StreamName,
    EventType,
}

/// A compiled `$all` filter.
#[derive(Clone, Debug)]
pub(crate) struct EventFilter {
    target: Target,
    prefixes: Vec<String>,
    regex: Option<Regex>,
    /// Events scanned between two checkpoints of a subscription.
    pub(crate) checkpoint_interval: u64,
}

/// The window size KurrentDB uses when the client sends `count` instead of `max`.
const DEFAULT_WINDOW: u64 = 32;

impl EventFilter {
    /// The filter of `options`.
    pub(crate) fn new(options: &FilterOptions) -> Result<EventFilter, Status> {
        let (target, expression) = match &options.filter {
            Some(filter_options::Filter::StreamIdentifier(e)) => (Target::StreamName, e),
            Some(filter_options::Filter::EventType(e)) => (Target::EventType, e),
            None => {
                return Err(Status::invalid_argument(
                    "a filter needs a stream or event type expression",
                ))
            }
        };
        let regex = if expression.regex.is_empty() {
            None
        } else {
            Some(Regex::new(&expression.regex).map_err(|e| {
                Status::invalid_argument(format!(
                    "invalid filter regex {:?}: {e}",
                    expression.regex
                ))
            })?)
        };
        let window = match options.window {
            Some(filter_options::Window::Max(n)) if n > 0 => u64::from(n),
            _ => DEFAULT_WINDOW,
        };
        let multiplier = u64::from(options.checkpoint_interval_multiplier.max(1));
        Ok(EventFilter {
            target,
            prefixes: expression.prefix.clone(),
            regex,
            checkpoint_interval: window.saturating_mul(multiplier),
        })
    }

    /// The one stream-name prefix of a prefix-only stream filter (what a prefix-limited token
    /// must be within, and what the store can narrow a scan to).
    pub(crate) fn single_stream_prefix(&self) -> Option<&str> {
        match (self.target, self.prefixes.as_slice(), &self.regex) {
            (Target::StreamName, [prefix], None) => Some(prefix.as_str()),
            _ => None,
        }
    }

    /// Whether an event of `stream` with `event_type` passes (both conditions when both a regex
    /// and prefixes are given).
    pub(crate) fn matches(&self, stream: &str, event_type: &str) -> bool {
        let subject = match self.target {
            Target::StreamName => stream,
            Target::EventType => event_type,
        };
        (self.prefixes.is_empty()
            || self
                .prefixes
                .iter()
                .any(|p| subject.starts_with(p.as_str())))
            && self.regex.as_ref().is_none_or(|r| r.is_match(subject))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::proto::event_store::client::streams::read_req::options::filter_options::Expression;

    fn filter(filter: filter_options::Filter) -> EventFilter {
        EventFilter::new(&FilterOptions {
            filter: Some(filter),
            window: Some(filter_options::Window::Max(10)),
            checkpoint_interval_multiplier: 3,
        })
        .unwrap()
    }

    #[test]
    fn prefixes_and_regexes() {
        let f = filter(filter_options::Filter::StreamIdentifier(Expression {
            regex: String::new(),
            prefix: vec!["order-".into(), "invoice-".into()],
        }));
        assert!(f.matches("order-1", "X"));
        assert!(f.matches("invoice-1", "X"));
        assert!(!f.matches("user-1", "order-"));
        assert_eq!(f.checkpoint_interval, 30);
        let f = filter(filter_options::Filter::EventType(Expression {
            regex: "^[^$]".into(),
            prefix: vec![],
        }));
        assert!(f.matches("a", "Placed"));
        assert!(!f.matches("a", "$metadata"));
    }
}
