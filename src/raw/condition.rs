//! `RawCondition`: a condition variable that pairs with any [`RawLock`].
//!
//! One futex word, after Rust std's futex condvar (`sys/sync/condvar/futex.rs`: a
//! notification counter read before unlocking), plus a waiter count so that notifying
//! with nobody waiting makes no syscall, and a count of notifications owed:
//!
//! | bits  | name      | meaning                                                     |
//! |-------|-----------|-------------------------------------------------------------|
//! | 0-9   | waiters   | threads between registering and leaving a wait              |
//! | 10-19 | owed      | notifications not yet taken by a waiter; at most `waiters`  |
//! | 20-31 | sequence  | bumped by every notify; wraps                                |
//!
//! A waiter registers (waiters + 1) *before* it unlocks, reading the sequence in the same
//! RMW. `notify_one` bumps the sequence and adds one owed notification (unless every
//! counted waiter is owed one already); `notify_all` makes every counted waiter owed. A
//! waiter returns once the sequence differs from the one it registered with *and* it can
//! take an owed notification, in one RMW that also unregisters it. Every step is a
//! read-modify-write of the one word, so they are totally ordered: either the notify sees
//! the waiter's registration, or the waiter registered after it and rightly waits for the
//! next one. A waiter that registered after a notify never takes what that notify owed
//! (its sequence has not moved), so `notify_one` lets exactly one earlier waiter return.
//!
//! Deaths. A waiter takes its notification only once it holds the lock again, so a
//! waiter that `notify_one` woke and that is killed on its way back to the lock leaves
//! the notification owed in the word; every sleep lasts at most
//! [`LOST_WAKE_SLICE`](crate::wake::futex::LOST_WAKE_SLICE) (10 ms), after which another
//! waiter that registered before the notify takes it: that is the worst extra latency
//! such a death adds, and still exactly one waiter returns. A waiter killed after taking
//! it holds the lock, so the kernel marks the lock `OWNER_DIED`: sleepers see that at
//! their next slice and return (a spurious wake-up), and the first to lock again gets
//! `OwnerDied`, as anyone would after a death inside the lock: repair, re-check the
//! predicate, and notify again if the dead one's share of the work is still due. A
//! waiter killed while registered stays counted (it only costs notifies a syscall, and
//! may leave an owed notification for a later waiter: a spurious wake-up, which every
//! condition variable allows). Once 1023 waiters are counted, further waiters are not counted and instead
//! look at the sequence every 10 ms; they return on any notification.

use std::time::{Duration, Instant};

use crate::error::{LockError, LockResult};
use crate::loom::{AtomicU32, Ordering};
use crate::raw::{LockGuard, RawLock};
use crate::wake::futex::{self, Deadline, WaitOutcome};

const WAITER_ONE: u32 = 1;
const WAITER_MASK: u32 = 0x3FF;
const OWED_SHIFT: u32 = 10;
const OWED_ONE: u32 = 1 << OWED_SHIFT;
const OWED_MASK: u32 = WAITER_MASK << OWED_SHIFT;
const SEQUENCE_ONE: u32 = 1 << 20;
const SEQUENCE_MASK: u32 = !(WAITER_MASK | OWED_MASK);

fn waiters(word: u32) -> u32 {
    word & WAITER_MASK
}

fn owed(word: u32) -> u32 {
    (word & OWED_MASK) >> OWED_SHIFT
}

/// The word of `sequence` (already in place), `owed` notifications and `waiters`.
fn word_of(sequence: u32, owed: u32, waiters: u32) -> u32 {
    (sequence & SEQUENCE_MASK) | (owed << OWED_SHIFT & OWED_MASK) | (waiters & WAITER_MASK)
}
/// How often an uncounted waiter (the count is saturated) looks for a notification.
const POLL: Duration = Duration::from_millis(10);

/// A condition variable in shared memory.
///
/// Waits take a [`LockGuard`] of any [`RawLock`](crate::raw::RawLock), release it while
/// sleeping and re-acquire it before returning, as `std::sync::Condvar` does. Wake-ups may
/// be spurious: wait in a loop, or use [`wait_while`](Self::wait_while).
///
/// # Examples
///
/// ```
/// use shmsync::raw::{RawCondition, RawLock};
///
/// let lock = RawLock::new();
/// let cond = RawCondition::new();
/// let guard = lock.lock().unwrap();
/// let (guard, timed_out) = cond.wait_timeout(guard, std::time::Duration::from_millis(1)).unwrap();
/// assert!(timed_out);
/// drop(guard);
/// ```
#[repr(C)]
pub struct RawCondition {
    word: AtomicU32,
    _reserved: u32,
}

#[cfg(not(loom))]
const _: () = assert!(size_of::<RawCondition>() == 8 && align_of::<RawCondition>() == 4);

// SAFETY: repr(C) of an atomic and an integer: every bit pattern is valid (a garbage
// count only costs syscalls), no pointers, all changes atomic.
unsafe impl crate::ShmSafe for RawCondition {
    fn type_tag() -> u64 {
        crate::layout::fnv1a(b"shmsync::raw::RawCondition/1")
    }
}

/// How `RawCondition::sleep` ended, before the lock is re-acquired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Woke {
    /// A notification this waiter may take is owed (or, uncounted, the sequence moved).
    Notified,
    /// The lock's owner died holding it: return, so that the caller hears `OwnerDied`.
    OwnerDied,
    TimedOut,
}

impl RawCondition {
    /// A condition variable with no waiters.
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        Self { word: AtomicU32::new(0), _reserved: 0 }
    }

    /// A condition variable with no waiters.
    #[cfg(loom)]
    pub fn new() -> Self {
        Self { word: AtomicU32::new(0), _reserved: 0 }
    }

    /// Releases the guard's lock, sleeps until notified, and re-acquires the lock.
    ///
    /// # Errors
    ///
    /// Re-acquiring the lock can report [`LockError::OwnerDied`] (with the guard) or
    /// [`LockError::NotRecoverable`], as [`RawLock::lock`](crate::raw::RawLock::lock) does.
    /// Waiting with an inconsistent guard (after `OwnerDied`, before `mark_consistent`)
    /// makes the lock not recoverable, as `pthread_cond_wait` does.
    pub fn wait<'a>(&self, guard: LockGuard<'a>) -> LockResult<LockGuard<'a>> {
        self.wait_until(guard, &Deadline::never()).map(|(g, _)| g).map_err(|e| e.map(|(g, _)| g))
    }

    /// Waits while `condition` returns true, re-checking it under the lock after every
    /// wake-up, like `std::sync::Condvar::wait_while`.
    ///
    /// # Errors
    ///
    /// As [`wait`](Self::wait); the condition is not checked again after an error.
    pub fn wait_while<'a>(
        &self,
        mut guard: LockGuard<'a>,
        mut condition: impl FnMut() -> bool,
    ) -> LockResult<LockGuard<'a>> {
        while condition() {
            guard = self.wait(guard)?;
        }
        Ok(guard)
    }

    /// As [`wait`](Self::wait), giving up after `timeout`. The flag is true if the wait
    /// timed out rather than being notified.
    ///
    /// # Errors
    ///
    /// As [`wait`](Self::wait).
    pub fn wait_timeout<'a>(
        &self,
        guard: LockGuard<'a>,
        timeout: Duration,
    ) -> LockResult<(LockGuard<'a>, bool)> {
        self.wait_until(guard, &Deadline::after(timeout))
    }

    /// As [`wait_timeout`](Self::wait_timeout), with a deadline.
    ///
    /// # Errors
    ///
    /// As [`wait`](Self::wait).
    pub fn wait_deadline<'a>(
        &self,
        guard: LockGuard<'a>,
        deadline: Instant,
    ) -> LockResult<(LockGuard<'a>, bool)> {
        self.wait_until(guard, &Deadline::at(deadline))
    }

    /// Wakes one waiter, if any. No syscall when nobody waits.
    pub fn notify_one(&self) {
        let before = self.notify(false);
        if waiters(before) != 0 {
            futex::wake_one(&self.word);
        }
    }

    /// Wakes every waiter. No syscall when nobody waits.
    pub fn notify_all(&self) {
        let before = self.notify(true);
        if waiters(before) != 0 {
            futex::wake_all(&self.word);
        }
    }

    /// Bumps the sequence and owes notifications: one more (up to the number of counted
    /// waiters), or with `all` one to every counted waiter. Returns the word before.
    fn notify(&self, all: bool) -> u32 {
        let mut current = self.word.load(Ordering::Relaxed);
        loop {
            let owed_now =
                if all { waiters(current) } else { (owed(current) + 1).min(waiters(current)) };
            let next = word_of(current.wrapping_add(SEQUENCE_ONE), owed_now, waiters(current));
            // Release pairs with the Acquire of the waiter that takes the notification:
            // what the notifier did before is visible to it (the lock orders it anyway).
            match self.word.compare_exchange_weak(
                current,
                next,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return current,
                Err(now) => current = now,
            }
        }
    }

    pub(crate) fn wait_until<'a>(
        &self,
        guard: LockGuard<'a>,
        deadline: &Deadline,
    ) -> LockResult<(LockGuard<'a>, bool)> {
        let (registered, sequence) = self.register();
        let (lock, _consistent) = guard.unlock_for_wait();
        loop {
            let woke = self.sleep(sequence, registered, lock, deadline);
            // The notification is taken only with the lock held: a waiter killed on its
            // way back to the lock leaves it owed for another (module docs).
            let (guard, owner_died) = match lock.lock() {
                Ok(g) => (g, false),
                Err(LockError::OwnerDied(g)) => (g, true),
                Err(_) => {
                    if registered {
                        self.unregister();
                    }
                    return Err(LockError::NotRecoverable);
                }
            };
            let notified = woke == Woke::Notified && (!registered || self.take_owed(sequence));
            if !notified && !owner_died && woke == Woke::Notified {
                // Another waiter took it first: sleep again.
                drop(guard);
                continue;
            }
            if registered && !notified {
                self.unregister();
            }
            let timed_out = woke == Woke::TimedOut;
            return if owner_died {
                Err(LockError::OwnerDied((guard, timed_out)))
            } else {
                Ok((guard, timed_out))
            };
        }
    }

    /// Counts this waiter in and returns whether it is counted and the sequence seen.
    fn register(&self) -> (bool, u32) {
        let mut current = self.word.load(Ordering::Relaxed);
        loop {
            if current & WAITER_MASK == WAITER_MASK {
                return (false, current & SEQUENCE_MASK);
            }
            match self.word.compare_exchange_weak(
                current,
                current + WAITER_ONE,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return (true, current & SEQUENCE_MASK),
                Err(now) => current = now,
            }
        }
    }

    /// Counts a waiter that timed out back out, with any notification owed beyond the
    /// waiters that remain.
    fn unregister(&self) {
        let mut current = self.word.load(Ordering::Relaxed);
        // Never below zero, even if the shared word was damaged meanwhile.
        while waiters(current) != 0 {
            let left = waiters(current) - 1;
            let next = word_of(current, owed(current).min(left), left);
            match self.word.compare_exchange_weak(
                current,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(now) => current = now,
            }
        }
    }

    /// Takes an owed notification made after this waiter registered with `sequence`, and
    /// unregisters it, in one step. Returns whether there was one.
    fn take_owed(&self, sequence: u32) -> bool {
        let mut current = self.word.load(Ordering::Relaxed);
        while current & SEQUENCE_MASK != sequence && owed(current) > 0 && waiters(current) > 0 {
            // Acquire pairs with the Release of the notify.
            match self.word.compare_exchange_weak(
                current,
                current - OWED_ONE - WAITER_ONE,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => current = now,
            }
        }
        false
    }

    /// Sleeps until a notification this waiter may take is owed (one made after it
    /// registered with `sequence`; for an uncounted waiter, any move of the sequence),
    /// the owner of `lock` died holding it, or the deadline passes. Other changes of the
    /// word (waiters arriving or leaving) are slept through.
    fn sleep(&self, sequence: u32, registered: bool, lock: &RawLock, deadline: &Deadline) -> Woke {
        loop {
            let current = self.word.load(Ordering::Relaxed);
            let moved = current & SEQUENCE_MASK != sequence;
            if moved && (!registered || owed(current) > 0) {
                return Woke::Notified;
            }
            if lock.owner_died() {
                return Woke::OwnerDied;
            }
            // In slices: the waiter a `notify_one` woke may be killed before it takes the
            // notification, which stays owed for another; or killed holding the lock
            // after taking it, which shows as `OWNER_DIED` on the lock (module docs).
            let until = if registered { deadline.sliced() } else { deadline.capped(POLL) };
            if futex::wait(&self.word, current, &until) == WaitOutcome::TimedOut
                && deadline.has_passed()
            {
                return Woke::TimedOut;
            }
        }
    }
}

impl Default for RawCondition {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for RawCondition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let word = self.word.load(Ordering::Relaxed);
        f.debug_struct("RawCondition").field("waiters", &(word & WAITER_MASK)).finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::raw::RawLock;

    #[test]
    fn notify_without_waiters_only_bumps_the_sequence() {
        let cond = RawCondition::new();
        cond.notify_one();
        cond.notify_all();
        assert_eq!(cond.word.load(Ordering::Relaxed), 2 * SEQUENCE_ONE);
    }

    #[test]
    fn a_notified_waiter_returns_with_the_lock() {
        let lock = RawLock::new();
        let cond = RawCondition::new();
        let ready = crate::loom::AtomicU32::new(0);
        std::thread::scope(|s| {
            let waiter = s.spawn(|| {
                let mut g = lock.lock().unwrap();
                while ready.load(Ordering::Relaxed) == 0 {
                    let (next, timed_out) = cond.wait_timeout(g, Duration::from_secs(20)).unwrap();
                    assert!(!timed_out);
                    g = next;
                }
                drop(g);
            });
            let g = lock.lock().unwrap();
            ready.store(1, Ordering::Relaxed);
            cond.notify_one();
            drop(g);
            waiter.join().unwrap();
        });
        assert_eq!(cond.word.load(Ordering::Relaxed) & WAITER_MASK, 0, "the waiter left");
    }

    #[test]
    fn wait_while_and_timeouts() {
        let lock = RawLock::new();
        let cond = RawCondition::new();
        let g = lock.lock().unwrap();
        let g = cond.wait_while(g, || false).unwrap();
        let start = Instant::now();
        let (g, timed_out) = cond.wait_timeout(g, Duration::from_millis(20)).unwrap();
        assert!(timed_out && start.elapsed() >= Duration::from_millis(20));
        let (g, timed_out) = cond.wait_deadline(g, Instant::now()).unwrap();
        assert!(timed_out);
        drop(g);
        assert!(!lock.is_locked());
    }

    #[test]
    fn saturated_waiters_still_see_notifications() {
        let lock = RawLock::new();
        let cond = RawCondition::new();
        cond.word.store(WAITER_MASK, Ordering::Relaxed); // 65535 dead waiters
        let locked = crate::loom::AtomicU32::new(0);
        std::thread::scope(|s| {
            let waiter = s.spawn(|| {
                let g = lock.lock().unwrap();
                locked.store(1, Ordering::Release);
                let (_g, timed_out) = cond.wait_timeout(g, Duration::from_secs(20)).unwrap();
                timed_out
            });
            while locked.load(Ordering::Acquire) == 0 {
                std::thread::yield_now();
            }
            // The waiter holds the lock until it sleeps; once we get it, it waits.
            drop(lock.lock().unwrap());
            cond.notify_one();
            assert!(!waiter.join().unwrap(), "the polling waiter missed the notification");
        });
    }
}

/// Loom model of a waiter that is killed after `notify_one` chose it: the notification
/// stays owed, and another waiter that registered before the notify takes it.
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::loom::thread;
    use std::sync::Arc;

    #[test]
    fn a_notification_whose_waiter_dies_reaches_another() {
        let mut builder = ::loom::model::Builder::new();
        builder.preemption_bound = Some(2);
        // The sliced sleep is a loop with a yield in the loom futex model.
        builder.max_branches = 10_000;
        let runs = crate::loom::counted(builder, || {
            let cond = Arc::new(RawCondition::new());
            // Both register before the notify (as they would under the lock).
            let (_, dying_sequence) = cond.register();
            let (_, sequence) = cond.register();
            let dying = {
                let cond = Arc::clone(&cond);
                thread::spawn(move || {
                    // Sleeps until woken (or the word moved), and dies there: counted for
                    // ever, its notification never taken by it.
                    let current = cond.word.load(Ordering::Relaxed);
                    if current & SEQUENCE_MASK == dying_sequence {
                        let _ = futex::wait(&cond.word, current, &Deadline::never());
                    }
                })
            };
            let waiter = {
                let cond = Arc::clone(&cond);
                thread::spawn(move || {
                    futex::loom_slices(true);
                    let lock = RawLock::new(); // held by nobody, its owner never died
                    cond.sleep(sequence, true, &lock, &Deadline::never()) == Woke::Notified
                        && cond.take_owed(sequence)
                })
            };
            cond.notify_one();
            dying.join().unwrap();
            assert!(waiter.join().unwrap(), "the surviving waiter took the notification");
            assert_eq!(owed(cond.word.load(Ordering::Relaxed)), 0, "taken exactly once");
        });
        assert!(runs > 60, "loom explored only {runs} schedules"); // 258 when written
    }
}
