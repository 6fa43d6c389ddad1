//! Query strings: parsed by hand so that an unknown, repeated or malformed parameter is a 400
//! `invalid_request` naming it (a typo such as `?limt=5` is an error, not silently ignored).

use strata_store::{AllFilter, Direction, ReadFrom};

use crate::error::{Error, Result};

/// Most events in one JSON page, and the default.
pub(crate) const MAX_LIMIT: u64 = 10_000;
pub(crate) const DEFAULT_LIMIT: u64 = 100;

/// The decoded parameters of one query string.
#[derive(Debug, Default)]
pub(crate) struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    /// Decodes `raw` (the part after `?`), allowing only the names in `allowed`, each once.
    pub(crate) fn parse(raw: Option<&str>, allowed: &[&str]) -> Result<Query> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for (key, value) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            if !allowed.contains(&key.as_ref()) {
                return Err(Error::invalid(if allowed.is_empty() {
                    format!("unknown query parameter {key:?}: this resource takes none")
                } else {
                    format!(
                        "unknown query parameter {key:?}: expected {}",
                        allowed.join(", ")
                    )
                }));
            }
            if pairs.iter().any(|(k, _)| *k == key) {
                return Err(Error::invalid(format!(
                    "query parameter {key:?} is given more than once"
                )));
            }
            pairs.push((key.into_owned(), value.into_owned()));
        }
        Ok(Query { pairs })
    }

    /// The value of `key`, if given.
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// `key` as a count in `1..=max` (`default` when absent).
    pub(crate) fn limit(&self, key: &str, default: u64, max: u64) -> Result<usize> {
        let Some(v) = self.get(key) else {
            return usize::try_from(default).map_err(|_| Error::invalid("limit too large"));
        };
        match parse_digits(v) {
            Some(n) if (1..=max).contains(&n) => {
                usize::try_from(n).map_err(|_| Error::invalid("limit too large"))
            }
            _ => Err(Error::invalid(format!(
                "{key} must be an integer from 1 to {max}, not {v:?}"
            ))),
        }
    }

    /// `key` as a boolean (`true` / `false`), `false` when absent.
    pub(crate) fn flag(&self, key: &str) -> Result<bool> {
        match self.get(key) {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(v) => Err(Error::invalid(format!(
                "{key} must be true or false, not {v:?}"
            ))),
        }
    }
}

/// A non-negative integer written as plain ASCII digits only: no sign, no spaces, no other
/// notation (`u64::from_str` alone would take `+5`). `None` when empty, not digits, or over
/// `u64::MAX`.
pub(crate) fn parse_digits(v: &str) -> Option<u64> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

/// The `from` parameter: a revision/position, or `start` / `end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FromParam {
    Start,
    End,
    At(u64),
}

impl FromParam {
    pub(crate) fn parse(v: &str) -> Result<FromParam> {
        match v {
            "start" => Ok(FromParam::Start),
            "end" => Ok(FromParam::End),
            _ => parse_digits(v).map(FromParam::At).ok_or_else(|| {
                Error::invalid(format!(
                    "from must be start, end or a non-negative integer, not {v:?}"
                ))
            }),
        }
    }
}

/// Which kind of read the parameters are for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    Stream,
    All,
}

/// What a read reads (and a replay replays, a subscription follows): one stream by name, or
/// the whole log through a filter.
pub(crate) enum Source {
    Stream(String),
    All(AllFilter),
}

/// The parameters of `GET /streams/{stream}` and `GET /all` (docs/http-api.md, "Reading and subscribing").
#[derive(Clone, Debug)]
pub(crate) struct ReadParams {
    /// `from` as given (`None`: the direction's default).
    pub from: Option<FromParam>,
    pub direction: Direction,
    pub limit: usize,
    /// `/all` filters (always the default for stream reads).
    pub filter: AllFilter,
}

impl ReadParams {
    /// Parses and validates the query string of a read.
    pub(crate) fn parse(raw: Option<&str>, target: Target) -> Result<ReadParams> {
        const STREAM: &[&str] = &["from", "direction", "limit"];
        const ALL: &[&str] = &[
            "from",
            "direction",
            "limit",
            "types",
            "category",
            "stream_prefix",
            "include_system",
            "correlation_id",
        ];
        let q = Query::parse(
            raw,
            match target {
                Target::Stream => STREAM,
                Target::All => ALL,
            },
        )?;
        let from = q.get("from").map(FromParam::parse).transpose()?;
        let direction = match q.get("direction") {
            None | Some("forward") => Direction::Forward,
            Some("backward") => Direction::Backward,
            Some(v) => {
                return Err(Error::invalid(format!(
                    "direction must be forward or backward, not {v:?}"
                )))
            }
        };
        let limit = q.limit("limit", DEFAULT_LIMIT, MAX_LIMIT)?;
        let non_empty = |key: &str| q.get(key).filter(|v| !v.is_empty()).map(str::to_owned);
        let filter = AllFilter {
            types: q
                .get("types")
                .map(|t| {
                    t.split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            category: non_empty("category"),
            stream_prefix: non_empty("stream_prefix"),
            include_system: q.flag("include_system")?,
            correlation_id: non_empty("correlation_id"),
        };
        Ok(ReadParams {
            from,
            direction,
            limit,
            filter,
        })
    }

    /// 400 unless the direction is forward: subscriptions (`text/event-stream`) read forward
    /// only.
    pub(crate) fn require_forward(&self) -> Result<()> {
        match self.direction {
            Direction::Forward => Ok(()),
            Direction::Backward => Err(Error::invalid(
                "subscriptions (text/event-stream) read forward only: drop direction=backward",
            )),
        }
    }

    /// `from` with the direction's default: the start going forward, the end going backward.
    pub(crate) fn read_from(&self) -> ReadFrom {
        match (self.from, self.direction) {
            (Some(FromParam::Start), _) | (None, Direction::Forward) => ReadFrom::Start,
            (Some(FromParam::End), _) | (None, Direction::Backward) => ReadFrom::End,
            (Some(FromParam::At(n)), _) => ReadFrom::At(n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let p = ReadParams::parse(None, Target::Stream).unwrap();
        assert_eq!(p.direction, Direction::Forward);
        assert_eq!(p.limit, 100);
        assert_eq!(p.read_from(), ReadFrom::Start);
        let p = ReadParams::parse(Some("direction=backward"), Target::Stream).unwrap();
        assert_eq!(p.read_from(), ReadFrom::End);
    }

    #[test]
    fn all_filters() {
        let p = ReadParams::parse(
            Some("types=A,B&category=order&stream_prefix=order-4&include_system=true&from=7&limit=10000"),
            Target::All,
        )
        .unwrap();
        assert_eq!(p.filter.types, vec!["A".to_owned(), "B".to_owned()]);
        assert_eq!(p.filter.category.as_deref(), Some("order"));
        assert_eq!(p.filter.stream_prefix.as_deref(), Some("order-4"));
        assert!(p.filter.include_system);
        assert_eq!(p.read_from(), ReadFrom::At(7));
        assert_eq!(p.limit, 10_000);
    }

    #[test]
    fn rejects_bad_parameters() {
        for q in [
            "limit=0",
            "limit=10001",
            "limit=-1",
            "limit=x",
            "from=-1",
            "from=later",
            "direction=up",
            "limt=5",
            "from=1&from=2",
            "types=A",
        ] {
            assert!(
                ReadParams::parse(Some(q), Target::Stream).is_err(),
                "{q} should be refused"
            );
        }
        assert!(ReadParams::parse(Some("include_system=yes"), Target::All).is_err());
    }

    #[test]
    fn numbers_are_plain_digits() {
        assert_eq!(parse_digits("0"), Some(0));
        assert_eq!(parse_digits("007"), Some(7));
        assert_eq!(parse_digits("18446744073709551615"), Some(u64::MAX));
        for bad in [
            "",
            "+5",
            "-0",
            " 5",
            "5 ",
            "0x5",
            "1e3",
            "18446744073709551616",
        ] {
            assert_eq!(parse_digits(bad), None, "{bad:?}");
        }
        for q in ["limit=%2B5", "limit=+5", "from=%2B1"] {
            assert!(ReadParams::parse(Some(q), Target::Stream).is_err(), "{q}");
        }
    }

    #[test]
    fn decodes_percent_encoding() {
        let p = ReadParams::parse(Some("stream_prefix=a%2Fb%20c"), Target::All).unwrap();
        assert_eq!(p.filter.stream_prefix.as_deref(), Some("a/b c"));
    }
}
