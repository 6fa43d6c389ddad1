//! The background check of sealed segments: a throttled scan of every frame of the sealed
//! segments of a running store, so that damage in history nobody reads is found (and reported
//! through [`Store::damage`], [`crate::Health::Damaged`] and [`crate::Options::on_damage`])
//! soon after a start instead of when some read first needs it.
//!
//! Opening never scans sealed segments (open time does not grow with history); this check
//! runs beside the serving store, at most `max_bytes_per_s`, and stops when asked.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::error::Result;
use crate::segment::{scan_segment, ScanMode};
use crate::store::Store;

/// What [`Store::check_sealed`] covered.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Sealed segments checked to their end.
    pub segments: usize,
    /// Bytes of those segments.
    pub bytes: u64,
    /// Damaged ranges found (already recorded in [`Store::damage`]).
    pub damage_found: usize,
    /// Whether `stop` ended the check before the last segment.
    pub stopped: bool,
}

/// Bytes scanned between two looks at the clock and the stop flag.
const SLICE: usize = 4 << 20;

impl Store {
    /// Checks every frame of every sealed segment (as of the call) against its checksum and
    /// position, at most `max_bytes_per_s` (`None`: unthrottled), recording what it finds as
    /// damage (indexed when the segment's index is intact: appends go on). Returns early, with
    /// `stopped`, once `stop` is set or the store is closed.
    pub fn check_sealed(
        &self,
        max_bytes_per_s: Option<u64>,
        stop: &AtomicBool,
    ) -> Result<CheckReport> {
        let shared = self.shared_state();
        let state = shared.snapshot();
        let started = Instant::now();
        let mut report = CheckReport::default();
        let mut throttled_bytes = 0u64;
        for seg in &state.sealed {
            let halted = || stop.load(Ordering::Acquire) || shared.closed.load(Ordering::Acquire);
            if halted() {
                report.stopped = true;
                return Ok(report);
            }
            // Throttle slice by slice: the scan itself is one call per segment, so page the
            // segment in (touching one byte per page) at the allowed rate first.
            let map: &[u8] = &seg.map;
            for chunk in map.chunks(SLICE) {
                let mut sum = 0u8;
                for page in chunk.iter().step_by(4096) {
                    sum ^= *page;
                }
                std::hint::black_box(sum);
                throttled_bytes += chunk.len() as u64;
                if let Some(rate) = max_bytes_per_s.filter(|&r| r > 0) {
                    let due = Duration::from_secs_f64(throttled_bytes as f64 / rate as f64);
                    let elapsed = started.elapsed();
                    if due > elapsed {
                        std::thread::sleep(due - elapsed);
                    }
                }
                if halted() {
                    report.stopped = true;
                    return Ok(report);
                }
            }
            let indexed = shared.index(seg).is_ok() && seg.lost().is_empty();
            let outcome = scan_segment(
                map,
                seg.first_position,
                ScanMode::Sealed,
                Some(seg.end_position()),
                |_| {},
            );
            for d in &outcome.damage {
                if shared.record_damage(d.to_damage(&seg.path, indexed)) {
                    report.damage_found += 1;
                }
            }
            report.segments += 1;
            report.bytes += map.len() as u64;
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::no_fsync;
    use crate::{ExpectedRevision, Health, NewEvent, Options};

    fn sealed_store(dir: &std::path::Path) -> Store {
        let store = Store::open(
            dir,
            Options {
                segment_size: 4096,
                ..no_fsync()
            },
        )
        .expect("open");
        for i in 0..40 {
            store
                .append(
                    &format!("s-{}", i % 3),
                    ExpectedRevision::Any,
                    vec![NewEvent::json(
                        "T",
                        format!("{{\"i\":{i},\"pad\":\"{}\"}}", "x".repeat(200)),
                    )],
                )
                .expect("append");
        }
        store
    }

    #[test]
    fn a_clean_store_checks_clean() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = sealed_store(dir.path());
        let report = store
            .check_sealed(None, &AtomicBool::new(false))
            .expect("check");
        assert!(report.segments >= 2, "{report:?}");
        assert_eq!(report.damage_found, 0);
        assert!(!report.stopped);
        assert_eq!(store.health(), Health::Ok);
    }

    #[test]
    fn damage_in_history_nobody_read_is_found_and_appends_go_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = sealed_store(dir.path());
        store.close().expect("close");
        drop(store);
        let seg = dir.path().join(crate::segment::segment_file_name(0));
        let mut bytes = std::fs::read(&seg).expect("read");
        bytes[200] ^= 0x20;
        std::fs::write(&seg, &bytes).expect("write");
        let store = Store::open(
            dir.path(),
            Options {
                segment_size: 4096,
                ..no_fsync()
            },
        )
        .expect("open");
        assert_eq!(store.health(), Health::Ok, "open does not scan history");
        let report = store
            .check_sealed(Some(1 << 30), &AtomicBool::new(false))
            .expect("check");
        assert_eq!(report.damage_found, 1, "{report:?}");
        let damage = store.damage();
        assert_eq!(damage.len(), 1);
        assert_eq!(damage[0].file, seg);
        assert!(damage[0].indexed);
        assert!(matches!(store.health(), Health::Damaged(_)));
        store
            .append(
                "s-9",
                ExpectedRevision::Any,
                vec![NewEvent::json("T", "{}")],
            )
            .expect("appends go on");
        // A second check finds nothing new.
        let again = store
            .check_sealed(None, &AtomicBool::new(false))
            .expect("check");
        assert_eq!(again.damage_found, 0);
    }

    #[test]
    fn a_check_stops_when_asked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = sealed_store(dir.path());
        let report = store
            .check_sealed(None, &AtomicBool::new(true))
            .expect("check");
        assert!(report.stopped);
        assert_eq!(report.segments, 0);
    }
}
