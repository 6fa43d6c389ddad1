//! A persistent subscription's settings as a consumer group's, and back (GetInfo / List).
//!
//! | KurrentDB | Strata |
//! |---|---|
//! | start from (stream revision / `$all` position / start / end) | `from` |
//! | message timeout (ms or ticks) | `ack_timeout_ms` (1 ms to one day; 0 → the default 30 s) |
//! | max retry count | `max_deliveries` = retries + 1 |
//! | consumer strategy `RoundRobin`, `DispatchToSingle` | `ordering: none` |
//! | consumer strategy `Pinned`, `PinnedByCorrelation` | `ordering: per_stream` |
//! | max subscriber count | enforced by the gRPC front door while the server runs |
//! | resolve links, extra statistics, live/history buffer, read batch, checkpoint after/min/max | accepted; no per-group equivalent (GetInfo shows the engine's values) |

use crate::groups::settings::{
    Ordering, Settings, Source, StartFrom, DEFAULT_ACK_TIMEOUT_MS, MAX_ACK_TIMEOUT_MS,
    MAX_MAX_DELIVERIES,
};

/// A .NET tick is 100 ns.
const TICKS_PER_MS: i64 = 10_000;

/// What a Create or Update asks for, with the wire's shapes already unpacked.
#[derive(Clone, Debug, Default)]
pub(crate) struct Requested {
    /// The message timeout in ms (`None`: not sent).
    pub message_timeout_ms: Option<i64>,
    /// Max retry count.
    pub max_retry_count: i32,
    /// Max subscriber count (0: no limit).
    pub max_subscriber_count: i32,
    /// The consumer strategy's name.
    pub strategy: String,
}

/// The message timeout of the wire's `oneof` (ticks or ms), in ms.
pub(crate) fn timeout_ms(ticks: Option<i64>, ms: Option<i32>) -> Option<i64> {
    match (ticks, ms) {
        (_, Some(ms)) => Some(i64::from(ms)),
        (Some(t), None) => Some(t / TICKS_PER_MS),
        (None, None) => None,
    }
}

/// The name of the deprecated enum strategy (0 DispatchToSingle, 1 RoundRobin, 2 Pinned).
pub(crate) fn strategy_of_enum(n: i32) -> &'static str {
    match n {
        0 => "DispatchToSingle",
        2 => "Pinned",
        _ => "RoundRobin",
    }
}

/// The ordering of a consumer strategy, or why it has none.
fn ordering_of(strategy: &str) -> Result<Ordering, String> {
    match strategy {
        "" | "RoundRobin" | "DispatchToSingle" => Ok(Ordering::None),
        "Pinned" | "PinnedByCorrelation" => Ok(Ordering::PerStream),
        other => Err(format!(
            "unknown consumer strategy {other:?}: RoundRobin, DispatchToSingle, Pinned or PinnedByCorrelation"
        )),
    }
}

impl Requested {
    /// The group settings for `source` from `from`, or why they cannot be.
    pub(crate) fn to_settings(&self, source: Source, from: StartFrom) -> Result<Settings, String> {
        let ack_timeout_ms = match self.message_timeout_ms {
            None | Some(0) => DEFAULT_ACK_TIMEOUT_MS,
            Some(ms) if ms < 0 => {
                return Err(format!(
                    "the message timeout must not be negative, not {ms} ms"
                ))
            }
            Some(ms) => u64::try_from(ms)
                .unwrap_or(u64::MAX)
                .min(MAX_ACK_TIMEOUT_MS),
        };
        if self.max_retry_count < 0 {
            return Err(format!(
                "the max retry count must not be negative, not {}",
                self.max_retry_count
            ));
        }
        if self.max_subscriber_count < 0 {
            return Err(format!(
                "the max subscriber count must not be negative, not {}",
                self.max_subscriber_count
            ));
        }
        let retries = u32::try_from(self.max_retry_count).unwrap_or(0);
        let max_deliveries = retries.saturating_add(1).min(MAX_MAX_DELIVERIES);
        Ok(Settings {
            source,
            from,
            ack_timeout_ms,
            max_deliveries,
            ordering: ordering_of(&self.strategy)?,
        })
    }
}

/// The consumer strategy name GetInfo shows for an ordering.
pub(crate) fn strategy_name(ordering: Ordering) -> &'static str {
    match ordering {
        Ordering::None => "RoundRobin",
        Ordering::PerStream => "Pinned",
    }
}

/// KurrentDB's retry count of a group (`max_deliveries` - 1).
pub(crate) fn max_retry_count(settings: &Settings) -> i32 {
    i32::try_from(settings.max_deliveries.saturating_sub(1)).unwrap_or(i32::MAX)
}

/// A count as the wire's `int32`, saturated.
pub(crate) fn i32_of(n: impl TryInto<i32>) -> i32 {
    n.try_into().unwrap_or(i32::MAX)
}

/// A count as the wire's `int64`, saturated.
pub(crate) fn i64_of(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(timeout: Option<i64>, retries: i32, strategy: &str) -> Requested {
        Requested {
            message_timeout_ms: timeout,
            max_retry_count: retries,
            max_subscriber_count: 0,
            strategy: strategy.into(),
        }
    }

    #[test]
    fn maps_what_has_an_equivalent() {
        let s = req(Some(2_000), 3, "Pinned")
            .to_settings(Source::All, StartFrom::Start)
            .unwrap();
        assert_eq!(s.ack_timeout_ms, 2_000);
        assert_eq!(s.max_deliveries, 4);
        assert_eq!(s.ordering, Ordering::PerStream);
        assert_eq!(max_retry_count(&s), 3);
        assert_eq!(strategy_name(s.ordering), "Pinned");
        let s = req(None, 0, "")
            .to_settings(Source::Stream("s".into()), StartFrom::End)
            .unwrap();
        assert_eq!(s.ack_timeout_ms, DEFAULT_ACK_TIMEOUT_MS);
        assert_eq!(s.max_deliveries, 1);
        assert_eq!(s.ordering, Ordering::None);
        let s = req(Some(i64::MAX), i32::MAX, "DispatchToSingle")
            .to_settings(Source::All, StartFrom::Start)
            .unwrap();
        assert_eq!(s.ack_timeout_ms, MAX_ACK_TIMEOUT_MS);
        assert_eq!(s.max_deliveries, MAX_MAX_DELIVERIES);
    }

    #[test]
    fn refuses_what_cannot_be() {
        for r in [
            req(Some(-1), 0, ""),
            req(None, -1, ""),
            req(None, 0, "Fastest"),
            Requested {
                max_subscriber_count: -2,
                ..Requested::default()
            },
        ] {
            assert!(
                r.to_settings(Source::All, StartFrom::Start).is_err(),
                "{r:?}"
            );
        }
    }

    #[test]
    fn wire_shapes() {
        assert_eq!(timeout_ms(Some(20_000_000), None), Some(2_000));
        assert_eq!(timeout_ms(Some(1), Some(5)), Some(5));
        assert_eq!(timeout_ms(None, None), None);
        assert_eq!(strategy_of_enum(0), "DispatchToSingle");
        assert_eq!(strategy_of_enum(1), "RoundRobin");
        assert_eq!(strategy_of_enum(2), "Pinned");
    }
}
