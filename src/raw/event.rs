//! `RawEvent`: a flag that threads and processes can wait for.
//!
//! One futex word:
//!
//! | bits | name         | meaning                                                     |
//! |------|--------------|-------------------------------------------------------------|
//! | 0    | `SET`        | the flag                                                    |
//! | 1    | `WAITERS`    | someone may sleep on the word: `set` must wake everyone     |
//! | 2-31 | generation   | counts `set` calls, so a waiter also returns for a `set` that a `clear` undid before it ran |
//!
//! `set` is one CAS that raises the flag, bumps the generation and clears `WAITERS`; it
//! makes the `FUTEX_WAKE` syscall only if `WAITERS` was set. A waiter sets `WAITERS` and
//! sleeps on the exact value it saw, so a `set` between its check and its sleep changes
//! the word and the kernel refuses the sleep: no lost wake-up. Waking *all* sleepers is
//! what makes clearing `WAITERS` in `set` safe: each one re-raises it if it sleeps again.

use std::time::{Duration, Instant};

use crate::loom::{AtomicU32, Ordering};
use crate::wake::futex::{self, Deadline, WaitOutcome};

const SET: u32 = 1;
const WAITERS: u32 = 2;
const GENERATION_ONE: u32 = 4;

/// An event flag in shared memory, like Python's `multiprocessing.Event`.
///
/// The flag starts cleared (an all-zero value). This is the state of
/// [`Event`](crate::Event) as a plain `#[repr(C)]` value to place in a layout of your own.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use shmsync::raw::RawEvent;
///
/// let ev = RawEvent::new();
/// assert!(!ev.wait_timeout(Duration::from_millis(1)));
/// ev.set();
/// ev.wait();
/// assert!(ev.is_set());
/// ```
#[repr(C)]
pub struct RawEvent {
    word: AtomicU32,
    _reserved: u32,
}

#[cfg(not(loom))]
const _: () = assert!(size_of::<RawEvent>() == 8 && align_of::<RawEvent>() == 4);

// SAFETY: repr(C) of an atomic and an integer: every bit pattern is valid (unknown bits
// only perturb the generation), no pointers, all changes atomic.
unsafe impl crate::ShmSafe for RawEvent {
    fn type_tag() -> u64 {
        crate::layout::fnv1a(b"shmsync::raw::RawEvent/1")
    }
}

impl RawEvent {
    /// A cleared event.
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        Self { word: AtomicU32::new(0), _reserved: 0 }
    }

    /// A cleared event.
    #[cfg(loom)]
    pub fn new() -> Self {
        Self { word: AtomicU32::new(0), _reserved: 0 }
    }

    /// Sets the flag and wakes every waiter. No syscall when nobody waits.
    pub fn set(&self) {
        let mut current = self.word.load(Ordering::Relaxed);
        loop {
            let next = (current & !(SET | WAITERS)).wrapping_add(GENERATION_ONE) | SET;
            // Release: what the setter wrote before `set` is visible to whoever sees SET.
            match self.word.compare_exchange_weak(
                current,
                next,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => current = now,
            }
        }
        if current & WAITERS != 0 {
            futex::wake_all(&self.word);
        }
    }

    /// Raises `WAITERS` (so that the next `set` wakes) and returns the word and the
    /// flagged value to sleep on: a wait set's announce.
    #[cfg(not(loom))]
    pub(crate) fn announce_waiter(&self) -> (&AtomicU32, u32) {
        (&self.word, futex::raise_now(&self.word, WAITERS))
    }

    /// Clears the flag. Waiters keep waiting for the next `set`.
    pub fn clear(&self) {
        self.word.fetch_and(!SET, Ordering::Relaxed);
    }

    /// The word decoded for `shmsync inspect`, from one load: set, and waiters.
    #[cfg(not(loom))]
    pub(crate) fn describe(&self) -> Vec<(&'static str, String)> {
        let word = self.word.load(Ordering::Relaxed);
        vec![("set", (word & SET != 0).to_string()), ("waiters", (word & WAITERS != 0).to_string())]
    }

    /// Whether the flag is set.
    pub fn is_set(&self) -> bool {
        // Acquire pairs with the Release in `set`.
        self.word.load(Ordering::Acquire) & SET != 0
    }

    /// Blocks until the flag is set.
    pub fn wait(&self) {
        self.wait_until(&Deadline::never());
    }

    /// Blocks until the flag is set or `timeout` passes. Returns the flag, as Python's
    /// `Event.wait(timeout)` does: false means it timed out.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.wait_until(&Deadline::after(timeout))
    }

    /// Blocks until the flag is set or `deadline` passes. Returns the flag.
    pub fn wait_deadline(&self, deadline: Instant) -> bool {
        self.wait_until(&Deadline::at(deadline))
    }

    fn wait_until(&self, deadline: &Deadline) -> bool {
        let mut current = self.word.load(Ordering::Acquire);
        let start_generation = current & !(SET | WAITERS);
        loop {
            // Acquire (on every load here) pairs with the Release in `set`.
            if current & SET != 0 || current & !(SET | WAITERS) != start_generation {
                return true;
            }
            match futex::flag_and_wait(&self.word, current, WAITERS, deadline) {
                Err(now) => {
                    current = now;
                    continue;
                }
                Ok(WaitOutcome::TimedOut) => {
                    let last = self.word.load(Ordering::Acquire);
                    return last & SET != 0 || last & !(SET | WAITERS) != start_generation;
                }
                Ok(WaitOutcome::Woken) => {}
            }
            current = self.word.load(Ordering::Acquire);
        }
    }
}

impl Default for RawEvent {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for RawEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawEvent").field("set", &self.is_set()).finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn set_clear_and_timeouts() {
        let ev = RawEvent::new();
        assert!(!ev.is_set());
        let start = Instant::now();
        assert!(!ev.wait_timeout(Duration::from_millis(20)));
        assert!(start.elapsed() >= Duration::from_millis(20));
        ev.set();
        assert!(ev.is_set() && ev.wait_timeout(Duration::ZERO));
        ev.set();
        assert!(ev.is_set());
        ev.clear();
        assert!(!ev.is_set());
        assert!(!ev.wait_deadline(Instant::now()));
    }

    #[test]
    fn set_wakes_every_waiter() {
        let ev = RawEvent::new();
        std::thread::scope(|s| {
            let waiters: Vec<_> =
                (0..3).map(|_| s.spawn(|| ev.wait_timeout(Duration::from_secs(20)))).collect();
            std::thread::sleep(Duration::from_millis(if cfg!(miri) { 1 } else { 20 }));
            ev.set();
            for w in waiters {
                assert!(w.join().unwrap(), "a waiter timed out");
            }
        });
    }

    #[test]
    fn a_set_undone_by_clear_still_releases_the_waiters_it_found() {
        let ev = RawEvent::new();
        std::thread::scope(|s| {
            let waiter = s.spawn(|| ev.wait_timeout(Duration::from_secs(5)));
            // Until the waiter has announced itself, it has not read the generation.
            while ev.word.load(Ordering::Relaxed) & WAITERS == 0 {
                std::thread::yield_now();
            }
            ev.set();
            ev.clear();
            // Without the generation the waiter would find the flag down and sleep on.
            assert!(waiter.join().unwrap());
        });
        assert!(!ev.is_set());
    }
}
