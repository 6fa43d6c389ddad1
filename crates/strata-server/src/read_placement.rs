//! Where a small read runs: on the async worker that received the request, or on tokio's
//! blocking pool.
//!
//! Used by the JSON page handlers (`App::read`) and by the live feeds of SSE and consumer groups
//! at the live tail (`crate::live_feed`). One placement per process ([`shared`]).
//!
//! A JSON page of a stream (or of `/all` without a filter) is a lookup in memory-mapped data
//! and a few KiB of rendering: ~5–15 µs of CPU when the pages are resident. Sending it to the
//! blocking pool costs more than the read itself: two thread hand-offs, a futex wake-up each
//! way, and often a context switch (the profile of `strata-bench --scenario read` on main spent
//! about 60 % of the server's CPU in `futex` wake and wait around `spawn_blocking`). So such
//! reads run inline.
//!
//! The risk of running inline is a page fault that goes to the disk: the worker thread sleeps
//! in the kernel for the disk's latency and the tasks queued on it wait (other workers steal
//! what they can). Reads that can be large or scan far (filtered `/all` pages, NDJSON, big
//! limits) always go to the pool. For the small ones the guard is adaptive: every inline read
//! is timed (a vDSO clock read); one that took longer than [`SLOW_INLINE`] is checked for major
//! page faults (the thread's `ru_majflt` from `getrusage(RUSAGE_THREAD)`, compared with its
//! value at the thread's previous check: one syscall, on slow reads only). If the thread did
//! fault, every read goes to the pool for [`POOL_FOR`], after which reads try inline again. A
//! slow read without a fault is the scheduler's doing (the thread was preempted on a busy
//! machine), which the pool would not help. A store whose data is not resident therefore stalls
//! a worker for at most about one read per [`POOL_FOR`], and a resident one never pays the
//! hand-offs.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::LazyLock;
use std::time::{Duration, Instant};

/// An inline read slower than this moves reads to the blocking pool for [`POOL_FOR`]. Resident
/// reads of a page take microseconds; a read from the disk takes 100 µs or more.
pub(crate) const SLOW_INLINE: Duration = Duration::from_micros(500);

/// How long reads stay on the blocking pool after a slow inline one.
pub(crate) const POOL_FOR: Duration = Duration::from_secs(1);

/// Most events of a page read inline: a page of up to this many events at the default event
/// sizes renders in tens of µs. Larger pages go to the pool.
pub(crate) const INLINE_MAX_EVENTS: usize = 1000;

/// The process's placement: page faults are a matter of the process's mapped files, so every
/// server of the process (there is one, outside tests) shares it.
pub(crate) fn shared() -> &'static ReadPlacement {
    static SHARED: LazyLock<ReadPlacement> = LazyLock::new(ReadPlacement::default);
    &SHARED
}

/// Runs `read` inline, timed for the guard (see the module docs).
pub(crate) fn inline<T>(read: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let out = read();
    shared().record_inline(start.elapsed());
    out
}

/// The adaptive choice between inline and pooled small reads (see the module docs).
pub(crate) struct ReadPlacement {
    epoch: Instant,
    /// Reads go to the pool until this many µs after `epoch`.
    pool_until_us: AtomicU64,
    /// Times an inline read was slow (for the logs and the tests).
    slow_reads: AtomicU64,
}

impl Default for ReadPlacement {
    fn default() -> Self {
        ReadPlacement {
            epoch: Instant::now(),
            pool_until_us: AtomicU64::new(0),
            slow_reads: AtomicU64::new(0),
        }
    }
}

impl ReadPlacement {
    fn now_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Whether a small read may run inline now.
    pub(crate) fn inline(&self) -> bool {
        self.now_us() >= self.pool_until_us.load(Relaxed)
    }

    /// Records how long an inline read took; a slow one that faulted sends reads to the pool
    /// for a while.
    pub(crate) fn record_inline(&self, took: Duration) {
        if took > SLOW_INLINE && faulted_since_last_check() {
            self.pool_for_a_while(took);
        }
    }

    fn pool_for_a_while(&self, took: Duration) {
        let until = self
            .now_us()
            .saturating_add(u64::try_from(POOL_FOR.as_micros()).unwrap_or(u64::MAX));
        self.pool_until_us.fetch_max(until, Relaxed);
        let n = self.slow_reads.fetch_add(1, Relaxed) + 1;
        tracing::debug!(
            took_us = took.as_micros() as u64,
            slow_reads = n,
            "an inline read faulted pages in from the disk: reads use the blocking pool for {POOL_FOR:?}"
        );
    }

    /// Inline reads that were slow and faulted so far.
    #[cfg(test)]
    pub(crate) fn slow_reads(&self) -> u64 {
        self.slow_reads.load(Relaxed)
    }
}

thread_local! {
    /// This thread's major fault count at its previous check (`None` before its first).
    static MAJOR_FAULTS: Cell<Option<u64>> = const { Cell::new(None) };
}

/// Whether this thread took a major page fault (one served from the disk) since its previous
/// check, as far as the OS tells; `true` where it cannot tell. A thread's first check only
/// takes its count (the faults of its start-up are not a read's).
fn faulted_since_last_check() -> bool {
    let Some(now) = thread_major_faults() else {
        return true;
    };
    MAJOR_FAULTS.with(|last| last.replace(Some(now)).is_some_and(|before| before != now))
}

/// The calling thread's major page faults so far (Linux).
#[cfg(target_os = "linux")]
fn thread_major_faults() -> Option<u64> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `usage` is a valid, writable `rusage`; getrusage only writes into it.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, usage.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: getrusage returned 0, so it filled `usage` (and zeroed memory is a valid rusage).
    let usage = unsafe { usage.assume_init() };
    u64::try_from(usage.ru_majflt).ok()
}

#[cfg(not(target_os = "linux"))]
fn thread_major_faults() -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_read_moves_reads_to_the_pool_for_a_while() {
        let p = ReadPlacement::default();
        assert!(p.inline());
        p.record_inline(Duration::from_micros(20));
        assert!(p.inline());
        assert_eq!(p.slow_reads(), 0);
        p.pool_for_a_while(SLOW_INLINE + Duration::from_micros(1));
        assert!(!p.inline());
        assert_eq!(p.slow_reads(), 1);
        // Back to inline once the pool period is over.
        p.pool_until_us.store(p.now_us(), Relaxed);
        assert!(p.inline());
    }

    #[test]
    fn a_slow_read_without_a_fault_stays_inline() {
        let p = ReadPlacement::default();
        // The first check records this thread's count; nothing faults in between.
        let _ = faulted_since_last_check();
        if thread_major_faults().is_some() {
            p.record_inline(SLOW_INLINE * 2);
            assert!(p.inline());
        }
    }
}
