//! `RLock`: a named re-entrant robust lock in its own segment.

use std::time::Duration;

use crate::error::{LockResult, TryLockError};
use crate::layout::ObjectKind;
use crate::raw::{RLockGuard, RawRLock};
use crate::segment::constructors::zeroed_object_constructors;
use crate::segment::object::Object;

/// A re-entrant lock shared by name between processes, like Python's
/// `multiprocessing.RLock`: the thread that holds it may take it again, and it is free
/// once every level is released. Robust like [`Lock`](crate::Lock): a holder's death is
/// `OwnerDied` for the next locker.
///
/// # Examples
///
/// ```
/// use shmsync::{Options, RLock};
///
/// # let opts = Options::new().dir(std::env::temp_dir());
/// # let name = format!("doc-rlock-{}", std::process::id());
/// let lock = RLock::create_with(&name, &opts)?;
/// let outer = lock.lock().unwrap();
/// let inner = lock.lock().unwrap(); // no deadlock: the same thread
/// assert_eq!(lock.depth(), 2);
/// drop((inner, outer));
/// assert!(!lock.is_locked());
/// # RLock::unlink_with(&name, &opts)?;
/// # Ok::<(), shmsync::OpenError>(())
/// ```
pub struct RLock {
    inner: Object<RawRLock>,
}

impl RLock {
    zeroed_object_constructors!(ObjectKind::RLock, "re-entrant lock", "unlocked");

    /// Takes the lock (again, if this thread holds it), blocking.
    ///
    /// # Errors
    ///
    /// `OwnerDied` (holding it), `NotRecoverable`: see [`Lock::lock`](crate::Lock::lock).
    pub fn lock(&self) -> LockResult<RLockGuard<'_>> {
        self.inner.get().lock()
    }

    /// Takes the lock if it is free or this thread's; never blocks.
    ///
    /// # Errors
    ///
    /// `WouldBlock`, and those of [`lock`](Self::lock).
    pub fn try_lock(&self) -> Result<RLockGuard<'_>, TryLockError<RLockGuard<'_>>> {
        self.inner.get().try_lock()
    }

    /// Takes the lock, waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// As [`try_lock`](Self::try_lock).
    pub fn try_lock_for(
        &self,
        timeout: Duration,
    ) -> Result<RLockGuard<'_>, TryLockError<RLockGuard<'_>>> {
        self.inner.get().try_lock_for(timeout)
    }

    /// Whether some thread holds it.
    pub fn is_locked(&self) -> bool {
        self.inner.get().is_locked()
    }

    /// How many levels this thread holds.
    pub fn depth(&self) -> u32 {
        self.inner.get().depth()
    }
}

impl std::fmt::Debug for RLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RLock").field("name", &self.info().name()).finish_non_exhaustive()
    }
}
