//! `raw::Mutex<T>`: a [`RawLock`] with the plain data it protects.

use std::ops::{Deref, DerefMut};
use std::time::{Duration, Instant};

use crate::error::{LockResult, TryLockError};
use crate::loom::UnsafeCell;
use crate::raw::{LockGuard, RawLock};

/// Plain data guarded by a robust lock, for layouts in shared memory.
///
/// `T` is [`Pod`](bytemuck::Pod): any bytes a dead or hostile peer leaves behind are a
/// valid `T`. Locking works as [`RawLock::lock`], and the guard dereferences to `T`.
///
/// # Examples
///
/// ```
/// use shmsync::raw::Mutex;
///
/// let bids = Mutex::new([0u64; 4]);
/// bids.lock().unwrap()[2] = 7;
/// assert_eq!(bids.lock().unwrap()[2], 7);
/// ```
#[repr(C)]
pub struct Mutex<T: bytemuck::Pod + crate::ShmSafe> {
    lock: RawLock,
    data: UnsafeCell<T>,
}

// SAFETY: repr(C) of a RawLock (ShmSafe) and a Pod value (valid for every bit pattern, no
// pointers); the value changes only under the lock.
unsafe impl<T: bytemuck::Pod + crate::ShmSafe> crate::ShmSafe for Mutex<T> {
    fn type_tag() -> u64 {
        crate::layout::fnv1a(b"shmsync::raw::Mutex/1") ^ T::type_tag().rotate_left(17)
    }
}

// SAFETY: the data is only reached through a guard, which holds the lock.
unsafe impl<T: bytemuck::Pod + crate::ShmSafe + Send> Sync for Mutex<T> {}
// SAFETY: as above.
unsafe impl<T: bytemuck::Pod + crate::ShmSafe + Send> Send for Mutex<T> {}

impl<T: bytemuck::Pod + crate::ShmSafe> Mutex<T> {
    /// An unlocked mutex holding `value`.
    pub fn new(value: T) -> Self {
        Self { lock: RawLock::new(), data: UnsafeCell::new(value) }
    }

    /// Locks and returns a guard to the data.
    ///
    /// # Errors
    ///
    /// As [`RawLock::lock`]: `OwnerDied` (with the guard: the data may be half-written)
    /// and `NotRecoverable`.
    ///
    /// # Panics
    ///
    /// If this thread already holds the lock.
    pub fn lock(&self) -> LockResult<MutexGuard<'_, T>> {
        self.lock.lock().map(|g| self.guard(g)).map_err(|e| e.map(|g| self.guard(g)))
    }

    /// Locks if nobody holds the lock; never blocks.
    ///
    /// # Errors
    ///
    /// As [`RawLock::try_lock`].
    pub fn try_lock(&self) -> Result<MutexGuard<'_, T>, TryLockError<MutexGuard<'_, T>>> {
        self.lock.try_lock().map(|g| self.guard(g)).map_err(|e| e.map(|g| self.guard(g)))
    }

    /// Locks, waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// As [`RawLock::try_lock_for`].
    pub fn try_lock_for(
        &self,
        timeout: Duration,
    ) -> Result<MutexGuard<'_, T>, TryLockError<MutexGuard<'_, T>>> {
        self.lock.try_lock_for(timeout).map(|g| self.guard(g)).map_err(|e| e.map(|g| self.guard(g)))
    }

    /// Locks, waiting at most until `deadline`.
    ///
    /// # Errors
    ///
    /// As [`RawLock::try_lock_until`].
    pub fn try_lock_until(
        &self,
        deadline: Instant,
    ) -> Result<MutexGuard<'_, T>, TryLockError<MutexGuard<'_, T>>> {
        self.lock
            .try_lock_until(deadline)
            .map(|g| self.guard(g))
            .map_err(|e| e.map(|g| self.guard(g)))
    }

    /// The lock alone, for pairing with a [`RawCondition`](crate::raw::RawCondition).
    pub fn raw_lock(&self) -> &RawLock {
        &self.lock
    }

    fn guard<'a>(&'a self, guard: LockGuard<'a>) -> MutexGuard<'a, T> {
        MutexGuard { guard, data: &self.data }
    }
}

impl<T: bytemuck::Pod + crate::ShmSafe + Default> Default for Mutex<T> {
    fn default() -> Self {
        Self::new(T::default())
    }
}

impl<T: bytemuck::Pod + crate::ShmSafe> std::fmt::Debug for Mutex<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mutex").field("lock", &self.lock).finish_non_exhaustive()
    }
}

/// Access to the data of a [`Mutex`]; unlocks when dropped.
/// # Examples
///
/// ```
/// use shmsync::raw::Mutex;
///
/// let counter = Mutex::new(41u64);
/// *counter.lock().unwrap() += 1; // the guard derefs to the value
/// assert_eq!(*counter.lock().unwrap(), 42);
/// ```
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct MutexGuard<'a, T: bytemuck::Pod + crate::ShmSafe> {
    guard: LockGuard<'a>,
    data: &'a UnsafeCell<T>,
}

impl<T: bytemuck::Pod + crate::ShmSafe> MutexGuard<'_, T> {
    /// Declares the data repaired after an owner's death; see
    /// [`LockGuard::mark_consistent`].
    pub fn mark_consistent(&mut self) {
        self.guard.mark_consistent();
    }

    /// False for a guard obtained through `OwnerDied` until `mark_consistent`.
    pub fn is_consistent(&self) -> bool {
        self.guard.is_consistent()
    }
}

impl<T: bytemuck::Pod + crate::ShmSafe> Deref for MutexGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: the guard holds the lock, so nobody else (in any process honouring the
        // lock) accesses the data; it lives as long as the mutex the guard borrows.
        self.data.with(|p| unsafe { &*p })
    }
}

impl<T: bytemuck::Pod + crate::ShmSafe> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`, and `&mut self` makes this the only access through us.
        self.data.with_mut(|p| unsafe { &mut *p })
    }
}

impl<T: bytemuck::Pod + crate::ShmSafe + std::fmt::Debug> std::fmt::Debug for MutexGuard<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MutexGuard")
            .field("data", &**self)
            .field("consistent", &self.is_consistent())
            .finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn guards_read_and_write_the_data() {
        let m = Mutex::new(5u32);
        *m.lock().unwrap() += 1;
        assert_eq!(*m.try_lock().unwrap(), 6);
        let held = m.lock().unwrap();
        assert!(matches!(m.try_lock_for(Duration::from_millis(1)), Err(TryLockError::WouldBlock)));
        drop(held);
        assert_eq!(*m.try_lock_until(Instant::now() + Duration::from_secs(1)).unwrap(), 6);
    }
}
