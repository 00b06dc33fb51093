//! `Lock`: a named robust lock in its own segment.

use std::time::{Duration, Instant};

use crate::error::{LockResult, TryLockError};
use crate::layout::ObjectKind;
use crate::raw::{LockGuard, RawLock};
use crate::segment::constructors::zeroed_object_constructors;
use crate::segment::object::Object;

/// A lock shared by name between processes, like Python's `multiprocessing.Lock`, that
/// reports its owner's death instead of hanging everyone.
///
/// Uncontended `lock` and unlock make no syscall. If the owner's process dies (or its
/// thread exits) while holding the lock, the next locker gets
/// [`LockError::OwnerDied`](crate::LockError::OwnerDied) with the guard; see
/// [`RawLock`] for the details and `docs/design.md` for how death is detected.
///
/// # Examples
///
/// ```
/// use shmsync::{Lock, LockError, Options};
///
/// # let opts = Options::new().dir(std::env::temp_dir());
/// # let name = format!("doc-lock-{}", std::process::id());
/// let lock = Lock::create_with(&name, &opts)?;
/// match lock.lock() {
///     Ok(guard) => drop(guard), // the critical section
///     Err(LockError::OwnerDied(mut guard)) => {
///         // repair the shared state, then:
///         guard.mark_consistent();
///     }
///     Err(e) => return Err(e.to_string().into()),
/// }
/// Lock::unlink_with(&name, &opts)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Lock {
    inner: Object<RawLock>,
}

impl Lock {
    zeroed_object_constructors!(ObjectKind::Lock, "lock", "unlocked");

    /// Acquires the lock, blocking while anyone else holds it. See [`RawLock::lock`].
    ///
    /// # Errors
    ///
    /// `OwnerDied` (with the guard) and `NotRecoverable`.
    ///
    /// # Panics
    ///
    /// If this thread already holds the lock.
    pub fn lock(&self) -> LockResult<LockGuard<'_>> {
        self.raw().lock()
    }

    /// Acquires the lock if it is free; never blocks.
    ///
    /// # Errors
    ///
    /// `WouldBlock`, `OwnerDied` (with the guard) and `NotRecoverable`.
    pub fn try_lock(&self) -> Result<LockGuard<'_>, TryLockError<LockGuard<'_>>> {
        self.raw().try_lock()
    }

    /// Acquires the lock, awaiting it while another thread or process holds it (feature
    /// `async`, any executor): at once, with no syscall, when it is free. The guard
    /// belongs to the thread that polled the future last (robust locks are per thread),
    /// so it cannot be held across an `.await` in a task that may move (it is not
    /// `Send`). Cancel-safe: a dropped future holds nothing. An unlock wakes one sleeper:
    /// if that is a blocking `lock` elsewhere, this call looks again within 20 ms.
    ///
    /// # Errors
    ///
    /// As [`lock`](Self::lock).
    #[cfg(all(feature = "async", not(loom)))]
    pub async fn lock_async(&self) -> LockResult<LockGuard<'_>> {
        let mut waits = crate::waitset::reactor::Waits::new();
        loop {
            match self.try_lock() {
                Ok(guard) => return Ok(guard),
                Err(TryLockError::OwnerDied(guard)) => {
                    return Err(crate::LockError::OwnerDied(guard));
                }
                Err(TryLockError::NotRecoverable) => return Err(crate::LockError::NotRecoverable),
                Err(TryLockError::WouldBlock) => {}
            }
            let entry = super::WordSource::boxed(
                &self.inner,
                |lock: &RawLock| !lock.is_locked(),
                RawLock::announce_waiter,
            );
            waits.next(entry).await;
        }
    }

    /// Acquires the lock, waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// As [`try_lock`](Self::try_lock); `WouldBlock` when the time runs out.
    pub fn try_lock_for(
        &self,
        timeout: Duration,
    ) -> Result<LockGuard<'_>, TryLockError<LockGuard<'_>>> {
        self.raw().try_lock_for(timeout)
    }

    /// Acquires the lock, waiting at most until `deadline`.
    ///
    /// # Errors
    ///
    /// As [`try_lock_for`](Self::try_lock_for).
    pub fn try_lock_until(
        &self,
        deadline: Instant,
    ) -> Result<LockGuard<'_>, TryLockError<LockGuard<'_>>> {
        self.raw().try_lock_until(deadline)
    }

    /// The lock itself.
    pub fn raw(&self) -> &RawLock {
        self.inner.get()
    }
}

impl std::fmt::Debug for Lock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lock")
            .field("name", &self.info().name())
            .field("state", self.raw())
            .finish()
    }
}
