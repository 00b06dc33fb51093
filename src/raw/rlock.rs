//! `RawRLock`: a re-entrant robust lock (Python's `RLock`).
//!
//! A [`RawLock`] plus a recursion count that only the holding thread writes. The thread
//! that holds the lock (its id is in the lock word) takes it again by counting up; the
//! last guard to go unlocks. Robust as [`RawLock`]: a holder's death is `OwnerDied` for
//! the next locker, whose guard is inconsistent until `mark_consistent`.
//!
//! | field | meaning |
//! |---|---|
//! | `lock` | the robust word: the holder's tid, `OWNER_DIED`, `WAITERS` (see `raw::lock`) |
//! | `count` | how many guards the holder has; 0 when free; stale after a death, reset by the next locker |
//! | `consistent` | 0 from an `OwnerDied` acquisition until `mark_consistent`: the last guard then makes the lock not recoverable |

use std::marker::PhantomData;
use std::time::Duration;

use crate::error::{LockResult, TryLockError};
use crate::loom::{AtomicU32, Ordering};
use crate::raw::lock::{LockGuard, RawLock};
use crate::wake::robust;

/// A re-entrant robust lock, to place inside layouts of your own.
///
/// # Examples
///
/// ```
/// use shmsync::raw::RawRLock;
///
/// let lock = RawRLock::new();
/// let outer = lock.lock().unwrap();
/// let inner = lock.lock().unwrap(); // the same thread: no deadlock
/// assert_eq!(lock.depth(), 2);
/// drop(inner);
/// drop(outer);
/// assert!(!lock.is_locked());
/// ```
#[repr(C)]
#[derive(Debug, Default)]
pub struct RawRLock {
    lock: RawLock,
    count: AtomicU32,
    consistent: AtomicU32,
}

#[cfg(not(loom))]
const _: () = assert!(size_of::<RawRLock>() == 48 && align_of::<RawRLock>() == 8);

// SAFETY: repr(C) of a RawLock (ShmSafe) and atomics; every bit pattern is handled (a
// stale count is reset by the next locker).
unsafe impl crate::ShmSafe for RawRLock {
    fn type_tag() -> u64 {
        crate::layout::fnv1a(b"shmsync::raw::RawRLock/1")
    }
}

impl RawRLock {
    /// An unlocked lock.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether this thread holds the lock.
    fn held_here(&self) -> bool {
        self.lock.holder_tid() == Some(robust::current_tid())
            && self.count.load(Ordering::Relaxed) > 0
    }

    /// Takes the lock, blocking; the holder takes it again at once.
    ///
    /// # Errors
    ///
    /// `OwnerDied` (holding it; repair and `mark_consistent`), `NotRecoverable`.
    pub fn lock(&self) -> LockResult<RLockGuard<'_>> {
        if self.held_here() {
            return Ok(self.again());
        }
        self.lock.lock().map(|g| self.first(g, true)).map_err(|e| e.map(|g| self.first(g, false)))
    }

    /// Takes the lock if it is free or held by this thread; never blocks.
    ///
    /// # Errors
    ///
    /// `WouldBlock`, and those of [`lock`](Self::lock).
    pub fn try_lock(&self) -> Result<RLockGuard<'_>, TryLockError<RLockGuard<'_>>> {
        if self.held_here() {
            return Ok(self.again());
        }
        self.wrap(self.lock.try_lock())
    }

    /// Takes the lock, waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// As [`try_lock`](Self::try_lock), `WouldBlock` meaning the timeout passed.
    pub fn try_lock_for(
        &self,
        timeout: Duration,
    ) -> Result<RLockGuard<'_>, TryLockError<RLockGuard<'_>>> {
        if self.held_here() {
            return Ok(self.again());
        }
        self.wrap(self.lock.try_lock_for(timeout))
    }

    /// Whether some thread holds the lock.
    pub fn is_locked(&self) -> bool {
        self.lock.is_locked()
    }

    /// The inner lock's word and the recursion count as stored, for `shmsync inspect`.
    #[cfg(not(loom))]
    pub(crate) fn describe(&self) -> Vec<(&'static str, String)> {
        let mut out = self.lock.describe();
        out.push(("recursion", self.count.load(Ordering::Relaxed).to_string()));
        out
    }

    /// How many guards this thread holds (0 if it does not hold the lock).
    pub fn depth(&self) -> u32 {
        if self.held_here() { self.count.load(Ordering::Relaxed) } else { 0 }
    }

    /// An attempt on the inner lock, as this lock's first level.
    fn wrap<'a>(
        &'a self,
        attempt: Result<LockGuard<'a>, TryLockError<LockGuard<'a>>>,
    ) -> Result<RLockGuard<'a>, TryLockError<RLockGuard<'a>>> {
        attempt.map(|g| self.first(g, true)).map_err(|e| e.map(|g| self.first(g, false)))
    }

    /// The first guard: the inner guard's unlock is taken over by the count.
    fn first(&self, guard: LockGuard<'_>, consistent: bool) -> RLockGuard<'_> {
        std::mem::forget(guard);
        self.count.store(1, Ordering::Relaxed);
        self.consistent.store(u32::from(consistent), Ordering::Relaxed);
        RLockGuard { lock: self, _not_send: PhantomData }
    }

    fn again(&self) -> RLockGuard<'_> {
        let depth = self.count.load(Ordering::Relaxed);
        self.count.store(depth.saturating_add(1), Ordering::Relaxed);
        RLockGuard { lock: self, _not_send: PhantomData }
    }
}

/// One level of a [`RawRLock`] (or an [`RLock`](crate::RLock)) held by this thread; the
/// last one dropped unlocks.
#[must_use = "the level is released as soon as the guard is dropped"]
#[derive(Debug)]
pub struct RLockGuard<'a> {
    lock: &'a RawRLock,
    _not_send: PhantomData<*const ()>,
}

impl RLockGuard<'_> {
    /// Declares the protected state repaired after an owner's death (see
    /// [`LockGuard::mark_consistent`]).
    pub fn mark_consistent(&mut self) {
        self.lock.consistent.store(1, Ordering::Relaxed);
    }

    /// False after an `OwnerDied` acquisition until `mark_consistent`.
    pub fn is_consistent(&self) -> bool {
        self.lock.consistent.load(Ordering::Relaxed) == 1
    }
}

impl Drop for RLockGuard<'_> {
    fn drop(&mut self) {
        let depth = self.lock.count.load(Ordering::Relaxed).saturating_sub(1);
        self.lock.count.store(depth, Ordering::Relaxed);
        if depth == 0 {
            self.lock.lock.release(self.is_consistent());
        }
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use std::sync::Arc;

    /// Two threads each take the lock twice (re-entrantly) and bump a counter under the
    /// outer level: both bumps land, and neither thread ever enters while the other is
    /// inside.
    #[test]
    fn reentry_nests_and_excludes_others() {
        ::loom::model(|| {
            let lock = Arc::new(RawRLock::new());
            let inside = Arc::new(AtomicU32::new(0));
            let threads: Vec<_> = (0..2)
                .map(|_| {
                    let (lock, inside) = (Arc::clone(&lock), Arc::clone(&inside));
                    crate::loom::thread::spawn(move || {
                        let outer = lock.lock().unwrap();
                        assert_eq!(inside.fetch_add(1, Ordering::Relaxed), 0);
                        let inner = lock.lock().unwrap();
                        assert_eq!(lock.depth(), 2);
                        drop(inner);
                        assert_eq!(inside.fetch_sub(1, Ordering::Relaxed), 1);
                        drop(outer);
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            assert!(!lock.is_locked());
        });
    }
}
