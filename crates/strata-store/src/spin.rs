//! Bounded, adaptive spinning before a thread blocks on a hand-off between the writer and its
//! callers.
//!
//! Without an fsync, an append is a few µs of work, and its two hand-offs (caller → writer,
//! writer → caller) cost more than the work when the other thread is asleep: on an idle VM each
//! wake-up has to wake a halted vCPU first (tens of µs; `benches/store.rs append`, one writer
//! with `FsyncPolicy::Never`, p50 57–80 µs against 6–8 µs on a busy machine whose vCPUs are
//! awake). Polling for a short while before sleeping takes both wake-ups off a back-to-back
//! appender's path.
//!
//! Spinning burns a CPU that others may want, so it is bounded three ways:
//! - **time**: at most the given limit per wait (tens of µs, a fraction of one wake-up's cost);
//! - **one spinner per [`Spinner`]**: the writer has its own, callers share one, so at most
//!   one caller spins however many threads append (64 writers on 2 vCPUs must not all spin);
//! - **back-off**: a spin that found nothing makes the next [`SKIP_AFTER_MISS`] waits of that
//!   spinner block at once, so a machine where the other side is not running (oversubscribed,
//!   or the answer waits for an fsync) pays for one fruitless spin in every few waits.
//!
//! Spinning is a latency optimisation only: a wait that does not spin, or spins in vain, ends
//! in the same blocking receive as before.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Waits that block at once after a spin that found nothing.
pub(crate) const SKIP_AFTER_MISS: u32 = 8;

/// How long a caller waiting for its append's answer spins (no fsync in the way).
pub(crate) const CALLER_SPIN: Duration = Duration::from_micros(50);

/// How long the writer polls its queue after a group before it sleeps.
pub(crate) const WRITER_SPIN: Duration = Duration::from_micros(50);

/// One spinning slot with its back-off state (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct Spinner {
    /// A thread is spinning on this slot now.
    busy: AtomicBool,
    /// Waits left that block without spinning.
    skip: AtomicU32,
}

impl Spinner {
    /// Calls `poll` until it returns `Some` or `limit` has passed, unless another thread
    /// spins on this slot, the last spin here found nothing (back-off), or the machine has a
    /// single CPU. `None`: block as usual.
    pub fn spin<T>(&self, limit: Duration, mut poll: impl FnMut() -> Option<T>) -> Option<T> {
        if !multi_core() {
            return None;
        }
        if self.skip.load(Ordering::Relaxed) > 0 {
            // Racy by design: two threads may both take one skip; the count only paces spins.
            self.skip.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        if self.busy.swap(true, Ordering::Acquire) {
            return None;
        }
        let start = Instant::now();
        let found = 'spin: loop {
            for _ in 0..64 {
                if let Some(v) = poll() {
                    break 'spin Some(v);
                }
                std::hint::spin_loop();
            }
            if start.elapsed() >= limit {
                break None;
            }
        };
        self.busy.store(false, Ordering::Release);
        if found.is_none() {
            self.skip.store(SKIP_AFTER_MISS, Ordering::Relaxed);
        }
        found
    }
}

/// Whether more than one CPU is available: on one, a spinner only delays the thread it waits for.
fn multi_core() -> bool {
    static MULTI: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *MULTI.get_or_init(|| std::thread::available_parallelism().is_ok_and(|n| n.get() > 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_spin_returns_what_the_poll_finds() {
        let s = Spinner::default();
        let mut n = 0;
        let got = s.spin(Duration::from_millis(50), || {
            n += 1;
            (n == 100).then_some(n)
        });
        if multi_core() {
            assert_eq!(got, Some(100));
        } else {
            assert_eq!(got, None);
        }
    }

    #[test]
    fn a_fruitless_spin_backs_off_for_the_next_waits() {
        if !multi_core() {
            return;
        }
        let s = Spinner::default();
        let mut polls = 0;
        assert_eq!(
            s.spin(Duration::from_micros(20), || {
                polls += 1;
                None::<()>
            }),
            None
        );
        assert!(polls > 0);
        for _ in 0..SKIP_AFTER_MISS {
            let mut polled = false;
            assert_eq!(
                s.spin(Duration::from_micros(20), || {
                    polled = true;
                    Some(())
                }),
                None
            );
            assert!(!polled, "a wait in the back-off must not poll");
        }
        assert_eq!(s.spin(Duration::from_micros(20), || Some(7)), Some(7));
    }

    #[test]
    fn one_thread_spins_on_a_slot_at_a_time() {
        if !multi_core() {
            return;
        }
        let s = Arc::new(Spinner::default());
        let (entered_tx, entered_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let spinner = Arc::clone(&s);
        let t = std::thread::spawn(move || {
            let mut told = false;
            spinner.spin(Duration::from_secs(10), || {
                if !told {
                    entered_tx.send(()).unwrap();
                    told = true;
                }
                release_rx.try_recv().ok()
            })
        });
        entered_rx.recv().unwrap();
        let mut polled = false;
        assert_eq!(
            s.spin(Duration::from_millis(10), || {
                polled = true;
                Some(())
            }),
            None
        );
        assert!(!polled, "a second spinner must block at once");
        release_tx.send(()).unwrap();
        assert_eq!(t.join().unwrap(), Some(()));
    }
}
