//! The throttle of a scavenge: bytes read and written per second, kept by sleeping between
//! chunks.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Bytes accounted between two checks of the rate (and of `stop`).
pub(super) const CHUNK: u64 = 256 * 1024;

/// Keeps a run's I/O under `rate` bytes per second (no limit when `None`).
pub(super) struct Throttle {
    rate: Option<u64>,
    start: Instant,
    /// Bytes accounted since `start`.
    bytes: u64,
    /// Bytes accounted since the last check.
    pending: u64,
}

impl Throttle {
    /// A throttle at `rate` bytes per second (`None` or 0: unthrottled).
    pub fn new(rate: Option<u64>) -> Self {
        Throttle {
            rate: rate.filter(|&r| r > 0),
            start: Instant::now(),
            bytes: 0,
            pending: 0,
        }
    }

    /// Accounts `bytes` of I/O; once a chunk's worth has accumulated, sleeps until the rate is
    /// kept (in short naps, returning early when `stop` is set). Returns whether `stop` is set.
    pub fn account(&mut self, bytes: u64, stop: &AtomicBool) -> bool {
        self.pending += bytes;
        if self.pending < CHUNK {
            return false;
        }
        self.bytes += std::mem::take(&mut self.pending);
        if let Some(rate) = self.rate {
            let due = Duration::from_secs_f64(self.bytes as f64 / rate as f64);
            loop {
                if stop.load(Ordering::Acquire) {
                    return true;
                }
                let elapsed = self.start.elapsed();
                if elapsed >= due {
                    break;
                }
                std::thread::sleep((due - elapsed).min(Duration::from_millis(50)));
            }
        }
        stop.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unthrottled_never_sleeps_and_reports_stop() {
        let stop = AtomicBool::new(false);
        let mut t = Throttle::new(None);
        assert!(!t.account(CHUNK * 100, &stop));
        stop.store(true, Ordering::Release);
        assert!(!t.account(1, &stop), "below a chunk: not checked yet");
        assert!(t.account(CHUNK, &stop));
    }

    #[test]
    fn a_stop_ends_a_throttled_wait() {
        let stop = AtomicBool::new(true);
        // One byte per second: the wait would be days; the stop ends it at once.
        let mut t = Throttle::new(Some(1));
        assert!(t.account(CHUNK, &stop));
    }
}
