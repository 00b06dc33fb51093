//! `RawBarrier`: Python's `threading.Barrier` / `multiprocessing.Barrier`, on futex words.
//!
//! | word | meaning |
//! |---|---|
//! | `parties` | how many waiters release each other; fixed at creation |
//! | `count` | waiters arrived in this generation |
//! | `generation` | the generation number times 2, bit 0 set while broken; waiters sleep on it |
//! | `reset_generation` | the (even) generation the last `reset` ended, whose waiters are broken; odd (none) until the first reset |
//!
//! The last arrival sets `count` to 0 and moves `generation` on by 2, waking everyone: waiters
//! that see another generation pass, as leader or not. `abort` (and a timed-out waiter)
//! sets the broken bit and wakes everyone; `reset` records the generation it ends in
//! `reset_generation`, clears the count and the bit and moves `generation` on. Sleeps are sliced, so a
//! wake-up swallowed by a dying waiter costs the others 10 ms.

use std::time::{Duration, Instant};

use crate::error::BarrierError;
use crate::loom::{AtomicU32, Ordering};
use crate::wake::futex::{self, Deadline};

const BROKEN: u32 = 1;

/// A barrier for `parties` waiters, to place inside layouts of your own. All-zero bytes
/// are a barrier of 0 parties, whose waits fail: initialise it with
/// [`new`](Self::new) or [`initialise`](Self::initialise).
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use shmsync::raw::RawBarrier;
///
/// let barrier = Arc::new(RawBarrier::new(2));
/// let other = Arc::clone(&barrier);
/// let t = std::thread::spawn(move || other.wait().unwrap().is_leader());
/// let here = barrier.wait().unwrap().is_leader();
/// assert!(here ^ t.join().unwrap()); // exactly one leader
/// ```
#[repr(C)]
#[derive(Debug, Default)]
pub struct RawBarrier {
    parties: AtomicU32,
    count: AtomicU32,
    generation: AtomicU32,
    reset_generation: AtomicU32,
}

#[cfg(not(loom))]
const _: () = assert!(size_of::<RawBarrier>() == 16 && align_of::<RawBarrier>() == 4);

// SAFETY: repr(C) of atomics; every bit pattern is a barrier (a hostile count at worst
// releases or breaks it early).
unsafe impl crate::ShmSafe for RawBarrier {
    fn type_tag() -> u64 {
        crate::layout::fnv1a(b"shmsync::raw::RawBarrier/1")
    }
}

/// What a passed wait tells its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BarrierWaitResult {
    leader: bool,
}

impl BarrierWaitResult {
    /// Whether this caller was the last to arrive (exactly one per generation).
    pub fn is_leader(&self) -> bool {
        self.leader
    }
}

impl RawBarrier {
    /// A barrier for `parties` waiters.
    pub fn new(parties: u32) -> Self {
        let b = Self::default();
        b.initialise(parties);
        b
    }

    /// Sets the number of parties of a fresh (zeroed) barrier.
    pub fn initialise(&self, parties: u32) {
        self.parties.store(parties, Ordering::Relaxed);
        // Odd: matches no generation a waiter can be in, until a reset.
        self.reset_generation.store(BROKEN, Ordering::Relaxed);
    }

    /// How many waiters release each other.
    pub fn parties(&self) -> u32 {
        self.parties.load(Ordering::Relaxed)
    }

    /// How many wait now.
    pub fn n_waiting(&self) -> u32 {
        self.count.load(Ordering::Relaxed).min(self.parties())
    }

    /// The words decoded for `shmsync inspect`: parties, waiting (as stored), the
    /// generation and whether it is broken.
    #[cfg(not(loom))]
    pub(crate) fn describe(&self) -> Vec<(&'static str, String)> {
        let generation = self.generation.load(Ordering::Relaxed);
        vec![
            ("parties", self.parties().to_string()),
            ("waiting", self.count.load(Ordering::Relaxed).to_string()),
            ("generation", (generation >> 1).to_string()),
            ("broken", (generation & BROKEN != 0).to_string()),
        ]
    }

    /// Whether it is broken (until `reset`).
    pub fn is_broken(&self) -> bool {
        self.generation.load(Ordering::Acquire) & BROKEN != 0
    }

    /// Waits until `parties` callers wait.
    ///
    /// # Errors
    ///
    /// `Broken` if it is or becomes broken while waiting.
    pub fn wait(&self) -> Result<BarrierWaitResult, BarrierError> {
        self.wait_until(&Deadline::never())
    }

    /// [`wait`](Self::wait), at most `timeout`; a timeout breaks the barrier for all
    /// its waiters, as in Python.
    ///
    /// # Errors
    ///
    /// `Broken`, also for the caller that timed out.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<BarrierWaitResult, BarrierError> {
        self.wait_until(&Deadline::after(timeout))
    }

    /// [`wait_timeout`](Self::wait_timeout) with an absolute deadline.
    ///
    /// # Errors
    ///
    /// As [`wait_timeout`](Self::wait_timeout).
    pub fn wait_deadline(&self, deadline: Instant) -> Result<BarrierWaitResult, BarrierError> {
        self.wait_until(&Deadline::at(deadline))
    }

    fn wait_until(&self, deadline: &Deadline) -> Result<BarrierWaitResult, BarrierError> {
        let generation = self.generation.load(Ordering::Acquire);
        let parties = self.parties();
        if generation & BROKEN != 0 || parties == 0 {
            return Err(BarrierError::Broken);
        }
        let arrived = self.count.fetch_add(1, Ordering::AcqRel) + 1;
        if arrived >= parties {
            self.count.store(0, Ordering::Relaxed);
            // Release: everything the waiters did before arriving is visible to all.
            if self
                .generation
                .compare_exchange(
                    generation,
                    generation.wrapping_add(2),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
            {
                futex::wake_all(&self.generation);
                return Ok(BarrierWaitResult { leader: true });
            }
            // Broken or reset meanwhile.
            return Err(BarrierError::Broken);
        }
        loop {
            let now = self.generation.load(Ordering::Acquire);
            if now != generation {
                let reset = self.reset_generation.load(Ordering::Acquire) == generation;
                return if now & BROKEN != 0 || reset {
                    Err(BarrierError::Broken)
                } else {
                    Ok(BarrierWaitResult { leader: false })
                };
            }
            if deadline.has_passed() {
                self.abort();
                return Err(BarrierError::Broken);
            }
            let _ = futex::wait(&self.generation, generation, &deadline.sliced());
        }
    }

    /// Breaks the barrier: every current and future waiter gets `Broken` until `reset`.
    pub fn abort(&self) {
        self.generation.fetch_or(BROKEN, Ordering::AcqRel);
        futex::wake_all(&self.generation);
    }

    /// Returns the barrier to its fresh state; the waiters of the generation it ends get
    /// `Broken`.
    pub fn reset(&self) {
        let generation = self.generation.load(Ordering::Acquire);
        self.reset_generation.store(generation & !BROKEN, Ordering::Release);
        self.count.store(0, Ordering::Relaxed);
        self.generation.store((generation & !BROKEN).wrapping_add(2), Ordering::Release);
        futex::wake_all(&self.generation);
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use std::sync::Arc;

    /// Two parties pass two generations: each generation has exactly one leader and
    /// nobody passes early (a lost wake-up is a deadlock).
    #[test]
    fn two_generations_one_leader_each() {
        ::loom::model(|| {
            let barrier = Arc::new(RawBarrier::new(2));
            let other = {
                let b = Arc::clone(&barrier);
                crate::loom::thread::spawn(move || {
                    (0..2).map(|_| b.wait().unwrap().is_leader()).collect::<Vec<_>>()
                })
            };
            let mine: Vec<bool> = (0..2).map(|_| barrier.wait().unwrap().is_leader()).collect();
            let theirs = other.join().unwrap();
            assert!(mine[0] ^ theirs[0] && mine[1] ^ theirs[1], "{mine:?} {theirs:?}");
        });
    }
}
