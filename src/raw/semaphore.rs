//! `RawSemaphore`: a counting semaphore, optionally bounded.
//!
//! One futex word plus the bound:
//!
//! | bits | name      | meaning                                                   |
//! |------|-----------|-----------------------------------------------------------|
//! | 0-30 | count     | permits available                                         |
//! | 31   | `WAITERS` | someone may sleep on the word: `release` must wake one    |
//!
//! `acquire` takes a permit with one CAS and no syscall while permits remain; with none,
//! it sets `WAITERS` and sleeps on the exact value it saw. `release` adds a permit and
//! clears `WAITERS` in one CAS, and wakes one sleeper if the flag was set. Because other
//! sleepers may remain, a thread that slept takes its permit with `WAITERS` set again, and
//! if permits are still left after its take it wakes the next sleeper ("passing the
//! baton"): a burst of releases that found the flag already cleared is never lost.
//!
//! Permits held by a process that dies are not returned, as with POSIX semaphores. A
//! sleeper that a release woke and that is killed before it takes the permit leaves the
//! permit counted and `WAITERS` cleared, with other sleepers asleep: so sleeps last at
//! most [`LOST_WAKE_SLICE`](crate::wake::futex::LOST_WAKE_SLICE) (10 ms), after which a sleeper
//! looks at the count again. That is the worst extra latency such a death adds.

use std::time::{Duration, Instant};

use crate::error::ReleaseError;
use crate::loom::{AtomicU32, Ordering};
use crate::wake::futex::{self, Deadline, WaitOutcome};

const WAITERS: u32 = 1 << 31;
const COUNT_MASK: u32 = WAITERS - 1;

/// A counting semaphore in shared memory, like Python's `multiprocessing.Semaphore` and
/// `BoundedSemaphore`. This is the state of [`Semaphore`](crate::Semaphore) as a plain
/// `#[repr(C)]` value; an all-zero value is an unbounded semaphore with no permits.
///
/// # Examples
///
/// ```
/// use shmsync::raw::RawSemaphore;
///
/// let sem = RawSemaphore::bounded(1, 1);
/// assert!(sem.try_acquire());
/// assert!(!sem.try_acquire());
/// sem.release().unwrap();
/// assert!(sem.release().is_err()); // past the bound
/// ```
#[repr(C)]
pub struct RawSemaphore {
    word: AtomicU32,
    /// The largest count; 0 means unbounded (the all-zero value must be usable).
    max: AtomicU32,
}

#[cfg(not(loom))]
const _: () = assert!(size_of::<RawSemaphore>() == 8 && align_of::<RawSemaphore>() == 4);

// SAFETY: repr(C) of two atomics: every bit pattern is valid (a count above the bound
// only makes `release` refuse), no pointers, all changes atomic.
unsafe impl crate::ShmSafe for RawSemaphore {
    fn type_tag() -> u64 {
        crate::layout::fnv1a(b"shmsync::raw::RawSemaphore/1")
    }
}

impl RawSemaphore {
    /// The largest count any semaphore can hold: 2^31 - 1.
    pub const MAX_COUNT: u32 = COUNT_MASK;

    /// An unbounded semaphore with `initial` permits (at most [`MAX_COUNT`](Self::MAX_COUNT)).
    ///
    /// # Panics
    ///
    /// If `initial` exceeds `MAX_COUNT`.
    pub fn new(initial: u32) -> Self {
        Self::bounded(initial, 0)
    }

    /// A semaphore with `initial` permits that `release` never raises above `max`
    /// (`0` for unbounded).
    ///
    /// # Panics
    ///
    /// If `initial` exceeds the bound or `MAX_COUNT`. The named
    /// [`Semaphore`](crate::Semaphore) constructors report these as errors instead.
    pub fn bounded(initial: u32, max: u32) -> Self {
        assert!(
            Self::check(initial, max).is_ok(),
            "invalid semaphore: initial {initial}, max {max}"
        );
        Self { word: AtomicU32::new(initial), max: AtomicU32::new(max) }
    }

    /// Why `initial` and `max` cannot make a semaphore, if they cannot.
    pub(crate) fn check(initial: u32, max: u32) -> Result<(), String> {
        if initial > COUNT_MASK || max > COUNT_MASK {
            return Err(format!("semaphore counts are limited to {COUNT_MASK}"));
        }
        if max != 0 && initial > max {
            return Err(format!("initial count {initial} exceeds the bound {max}"));
        }
        Ok(())
    }

    /// Sets the state of a zeroed semaphore in a segment being created.
    pub(crate) fn initialise(&mut self, initial: u32, max: u32) {
        *self = Self::bounded(initial, max);
    }

    /// Takes a permit, blocking until one is available.
    pub fn acquire(&self) {
        self.acquire_until(&Deadline::never(), false);
    }

    /// Takes a permit if one is available; never blocks. Returns whether it did.
    pub fn try_acquire(&self) -> bool {
        self.acquire_until(&Deadline::never(), true)
    }

    /// Takes a permit, waiting at most `timeout`. Returns whether it did.
    pub fn acquire_timeout(&self, timeout: Duration) -> bool {
        self.acquire_until(&Deadline::after(timeout), false)
    }

    /// Takes a permit, waiting at most until `deadline`. Returns whether it did.
    pub fn acquire_deadline(&self, deadline: Instant) -> bool {
        self.acquire_until(&Deadline::at(deadline), false)
    }

    /// Returns a permit and wakes one waiter, if any (no syscall when nobody waits).
    ///
    /// # Errors
    ///
    /// [`ReleaseError::Overflow`] if the count is at the bound; nothing changes then.
    pub fn release(&self) -> Result<(), ReleaseError> {
        let max = match self.max.load(Ordering::Relaxed) {
            0 => COUNT_MASK,
            bound => bound.min(COUNT_MASK),
        };
        let mut current = self.word.load(Ordering::Relaxed);
        loop {
            let count = current & COUNT_MASK;
            if count >= max {
                return Err(ReleaseError::Overflow);
            }
            // Release pairs with the Acquire of the taker of this permit.
            match self.word.compare_exchange_weak(
                current,
                count + 1,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => current = now,
            }
        }
        if current & WAITERS != 0 {
            futex::wake_one(&self.word);
        }
        Ok(())
    }

    /// Raises `WAITERS` (so that the next `release` wakes a sleeper) and returns the word
    /// and the flagged value to sleep on: a wait set's announce. A release wakes one
    /// sleeper; if that is a set that then leaves the permit, the semaphore's other
    /// sleepers find it within their 10 ms slice (module docs).
    #[cfg(not(loom))]
    pub(crate) fn announce_waiter(&self) -> (&AtomicU32, u32) {
        (&self.word, futex::raise_now(&self.word, WAITERS))
    }

    /// The number of permits available right now (a snapshot).
    pub fn value(&self) -> u32 {
        self.word.load(Ordering::Relaxed) & COUNT_MASK
    }

    /// The words decoded for `shmsync inspect`: count, waiters and bound.
    #[cfg(not(loom))]
    pub(crate) fn describe(&self) -> Vec<(&'static str, String)> {
        let word = self.word.load(Ordering::Relaxed);
        let bound = match self.max.load(Ordering::Relaxed) {
            0 => "none".to_owned(),
            max => max.to_string(),
        };
        vec![
            ("count", (word & COUNT_MASK).to_string()),
            ("waiters", (word & WAITERS != 0).to_string()),
            ("bound", bound),
        ]
    }

    /// The bound, or `None` for an unbounded semaphore.
    pub fn max(&self) -> Option<u32> {
        match self.max.load(Ordering::Relaxed) {
            0 => None,
            bound => Some(bound),
        }
    }

    fn acquire_until(&self, deadline: &Deadline, no_wait: bool) -> bool {
        let mut slept = false;
        let mut current = self.word.load(Ordering::Relaxed);
        loop {
            let count = current & COUNT_MASK;
            if count > 0 {
                let waiters = if slept { WAITERS } else { current & WAITERS };
                let next = (count - 1) | waiters;
                match self.word.compare_exchange_weak(
                    current,
                    next,
                    Ordering::Acquire,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        if slept && count > 1 {
                            futex::wake_one(&self.word);
                        }
                        return true;
                    }
                    Err(now) => {
                        current = now;
                        continue;
                    }
                }
            }
            if no_wait {
                return false;
            }
            // In slices: the sleeper a release woke may be killed before it takes the
            // permit (module docs).
            match futex::flag_and_wait(&self.word, current, WAITERS, &deadline.sliced()) {
                Err(now) => {
                    current = now;
                    continue;
                }
                Ok(WaitOutcome::TimedOut) if deadline.has_passed() => return false,
                Ok(_) => {}
            }
            slept = true;
            current = self.word.load(Ordering::Relaxed);
        }
    }
}

impl Default for RawSemaphore {
    fn default() -> Self {
        Self::new(0)
    }
}

impl std::fmt::Debug for RawSemaphore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawSemaphore")
            .field("value", &self.value())
            .field("max", &self.max())
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn counts_and_bounds() {
        let sem = RawSemaphore::bounded(2, 3);
        assert_eq!((sem.value(), sem.max()), (2, Some(3)));
        assert!(sem.try_acquire() && sem.try_acquire() && !sem.try_acquire());
        for _ in 0..3 {
            sem.release().unwrap();
        }
        assert_eq!(sem.release(), Err(ReleaseError::Overflow));
        assert_eq!(sem.value(), 3);

        let unbounded = RawSemaphore::new(RawSemaphore::MAX_COUNT);
        assert_eq!(unbounded.max(), None);
        assert_eq!(unbounded.release(), Err(ReleaseError::Overflow));
        assert!(RawSemaphore::check(5, 4).is_err());
        assert!(RawSemaphore::check(0, COUNT_MASK + 1).is_err());
        assert!(RawSemaphore::check(4, 4).is_ok());
    }

    #[test]
    fn timeouts_wait_then_fail() {
        let sem = RawSemaphore::new(0);
        let start = Instant::now();
        assert!(!sem.acquire_timeout(Duration::from_millis(20)));
        assert!(start.elapsed() >= Duration::from_millis(20));
        assert!(!sem.acquire_deadline(Instant::now()));
    }

    #[test]
    fn releases_wake_every_sleeper_they_pay_for() {
        let sem = RawSemaphore::new(0);
        std::thread::scope(|s| {
            let takers: Vec<_> =
                (0..3).map(|_| s.spawn(|| sem.acquire_timeout(Duration::from_secs(20)))).collect();
            while sem.word.load(Ordering::Relaxed) & WAITERS == 0 {
                std::thread::yield_now();
            }
            // A burst: later releases may find WAITERS already cleared by the first.
            for _ in 0..3 {
                sem.release().unwrap();
            }
            for t in takers {
                assert!(t.join().unwrap(), "a taker slept through a release");
            }
        });
        assert_eq!(sem.value(), 0);
    }
}
