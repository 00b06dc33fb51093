//! `Condition`: a named lock and condition variable in one segment.

use std::time::{Duration, Instant};

use crate::error::LockResult;
use crate::layout::ObjectKind;
use crate::raw::{LockGuard, RawCondition, RawLock};
use crate::segment::constructors::zeroed_object_constructors;
use crate::segment::object::Object;
use crate::wake::futex::Deadline;

/// The segment payload of a [`Condition`].
#[repr(C)]
pub(crate) struct ConditionState {
    lock: RawLock,
    cond: RawCondition,
}

#[cfg(not(loom))]
const _: () = assert!(size_of::<ConditionState>() == 48);

// SAFETY: repr(C) of two ShmSafe raw primitives.
unsafe impl crate::ShmSafe for ConditionState {
    fn type_tag() -> u64 {
        crate::layout::fnv1a(b"shmsync::Condition/1")
    }
}

/// A lock and a condition variable shared by name, like Python's
/// `multiprocessing.Condition`.
///
/// `lock` returns a guard of the condition's own lock; `wait` releases it while sleeping
/// and re-acquires it before returning. Wake-ups may be spurious: wait in a loop or with
/// [`wait_while`](Self::wait_while). A waiter that re-acquires the lock after its owner
/// died gets `OwnerDied`, as with [`Lock`](crate::Lock).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use shmsync::{Condition, Options};
///
/// # let opts = Options::new().dir(std::env::temp_dir());
/// # let name = format!("doc-cond-{}", std::process::id());
/// let cond = Condition::create_with(&name, &opts)?;
/// // Like std's PoisonError, lock errors borrow the guard: handle them in place.
/// let guard = cond.lock().unwrap();
/// let (guard, timed_out) = cond.wait_timeout(guard, Duration::from_millis(1)).unwrap();
/// assert!(timed_out);
/// drop(guard);
/// cond.notify_all(); // no waiters: no syscall
/// Condition::unlink_with(&name, &opts)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Condition {
    inner: Object<ConditionState>,
}

impl Condition {
    zeroed_object_constructors!(ObjectKind::Condition, "condition", "unlocked, with no waiters");

    /// Acquires the condition's lock.
    ///
    /// # Errors
    ///
    /// As [`Lock::lock`](crate::Lock::lock): `OwnerDied` (with the guard) and
    /// `NotRecoverable`.
    ///
    /// # Panics
    ///
    /// If this thread already holds the lock.
    pub fn lock(&self) -> LockResult<LockGuard<'_>> {
        self.state().lock.lock()
    }

    /// Releases the lock, sleeps until notified, re-acquires the lock.
    ///
    /// # Errors
    ///
    /// As [`lock`](Self::lock), from re-acquiring.
    ///
    /// # Panics
    ///
    /// If `guard` is not a guard of this condition's lock.
    pub fn wait<'a>(&'a self, guard: LockGuard<'a>) -> LockResult<LockGuard<'a>> {
        self.check(&guard);
        self.state().cond.wait(guard)
    }

    /// Waits while `condition` returns true, checking it under the lock.
    ///
    /// # Errors
    ///
    /// As [`wait`](Self::wait).
    ///
    /// # Panics
    ///
    /// If `guard` is not a guard of this condition's lock.
    pub fn wait_while<'a>(
        &'a self,
        guard: LockGuard<'a>,
        condition: impl FnMut() -> bool,
    ) -> LockResult<LockGuard<'a>> {
        self.check(&guard);
        self.state().cond.wait_while(guard, condition)
    }

    /// As [`wait`](Self::wait), giving up after `timeout`; the flag is true if it timed
    /// out.
    ///
    /// # Errors
    ///
    /// As [`wait`](Self::wait).
    ///
    /// # Panics
    ///
    /// If `guard` is not a guard of this condition's lock.
    pub fn wait_timeout<'a>(
        &'a self,
        guard: LockGuard<'a>,
        timeout: Duration,
    ) -> LockResult<(LockGuard<'a>, bool)> {
        self.check(&guard);
        self.state().cond.wait_until(guard, &Deadline::after(timeout))
    }

    /// As [`wait_timeout`](Self::wait_timeout), with a deadline.
    ///
    /// # Errors
    ///
    /// As [`wait`](Self::wait).
    ///
    /// # Panics
    ///
    /// If `guard` is not a guard of this condition's lock.
    pub fn wait_deadline<'a>(
        &'a self,
        guard: LockGuard<'a>,
        deadline: Instant,
    ) -> LockResult<(LockGuard<'a>, bool)> {
        self.check(&guard);
        self.state().cond.wait_until(guard, &Deadline::at(deadline))
    }

    /// Wakes one waiter, if any; no syscall when nobody waits.
    pub fn notify_one(&self) {
        self.state().cond.notify_one();
    }

    /// Wakes every waiter; no syscall when nobody waits.
    pub fn notify_all(&self) {
        self.state().cond.notify_all();
    }

    /// The condition's lock.
    pub fn raw_lock(&self) -> &RawLock {
        &self.state().lock
    }

    /// The condition variable.
    pub fn raw_condition(&self) -> &RawCondition {
        &self.state().cond
    }

    fn state(&self) -> &ConditionState {
        self.inner.get()
    }

    fn check(&self, guard: &LockGuard<'_>) {
        assert!(
            std::ptr::eq(guard.raw(), &self.state().lock),
            "shmsync: Condition::wait needs a guard of the condition's own lock"
        );
    }
}

impl std::fmt::Debug for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Condition")
            .field("name", &self.info().name())
            .field("lock", &self.state().lock)
            .field("cond", &self.state().cond)
            .finish()
    }
}
