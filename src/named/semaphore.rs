//! `Semaphore`: a named counting semaphore in its own segment.

use std::time::{Duration, Instant};

use crate::error::{OpenError, ReleaseError, invalid_capacity};
use crate::layout::ObjectKind;
use crate::raw::RawSemaphore;
use crate::segment::constructors::constructors;
use crate::segment::object::Object;
use crate::segment::{Options, SegmentInfo};

/// A counting semaphore shared by name, like Python's `multiprocessing.Semaphore` and
/// (with [`create_bounded`](Self::create_bounded)) `BoundedSemaphore`.
///
/// `acquire` and `release` make no syscall unless someone has to sleep. Permits held by
/// a process that dies are not returned, as with POSIX semaphores: size your protocol so
/// that a dead holder is noticed some other way (a [`Lock`](crate::Lock) reports it).
///
/// # Examples
///
/// ```
/// use shmsync::{Options, ReleaseError, Semaphore};
///
/// # let opts = Options::new().dir(std::env::temp_dir());
/// # let name = format!("doc-sem-{}", std::process::id());
/// let slots = Semaphore::create_bounded_with(&name, 2, 2, &opts)?;
/// slots.acquire();
/// assert!(slots.try_acquire());
/// assert!(!slots.try_acquire());
/// slots.release()?;
/// slots.release()?;
/// assert_eq!(slots.release(), Err(ReleaseError::Overflow));
/// Semaphore::unlink_with(&name, &opts)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Semaphore {
    inner: Object<RawSemaphore>,
}

impl Semaphore {
    constructors! {
        returns Self, what "semaphore";
        /// Creates the unbounded semaphore `name` in `/dev/shm` with `initial` permits.
        ///
        /// # Errors
        ///
        /// `InvalidCapacity` if `initial` exceeds [`RawSemaphore::MAX_COUNT`], and those of
        /// [`Lock::create`](crate::Lock::create).
        create / create_with (initial: u32) = |name, initial, opts| Self::create_impl(name, initial, 0, opts);
        /// Creates the semaphore `name` with `initial` permits, which `release` never raises
        /// above `max`.
        ///
        /// # Errors
        ///
        /// `InvalidCapacity` if `initial > max`, `max` is 0, or either exceeds
        /// [`RawSemaphore::MAX_COUNT`]; and those of [`Lock::create`](crate::Lock::create).
        create_bounded / create_bounded_with (initial: u32, max: u32) = |name, initial, max, opts| {
            Self::check_bound(max)?;
            Self::create_impl(name, initial, max, opts)
        };
        /// Opens the existing semaphore called `name` in `/dev/shm`.
        ///
        /// # Errors
        ///
        /// `NotFound`, `InvalidName`, `NotInitialized` (its creator did not finish within the
        /// open timeout), `KindMismatch` (another kind of object), `LayoutMismatch`,
        /// `VersionMismatch`, `Corrupted`, `PermissionDenied`, `Io`: see
        /// [`OpenError`](crate::OpenError).
        open / open_with () = |name, opts| {
            Object::open(name, ObjectKind::Semaphore, opts).map(|inner| Self { inner })
        };
        /// Opens the semaphore `name`, or creates it unbounded with `initial` permits if
        /// absent. An existing semaphore keeps its own count and bound.
        ///
        /// # Errors
        ///
        /// Those of [`create`](Self::create) and [`open`](Self::open).
        open_or_create / open_or_create_with (initial: u32) = |name, initial, opts| Self::open_or_create_impl(name, initial, 0, opts);
        /// Opens the semaphore `name`, or creates it with `initial` permits and bound `max`.
        /// An existing semaphore keeps its own count and bound.
        ///
        /// # Errors
        ///
        /// Those of [`create_bounded`](Self::create_bounded) and [`open`](Self::open).
        open_or_create_bounded / open_or_create_bounded_with (initial: u32, max: u32) = |name, initial, max, opts| {
            Self::check_bound(max)?;
            Self::open_or_create_impl(name, initial, max, opts)
        };
    }
    fn create_impl(name: &str, initial: u32, max: u32, opts: &Options) -> Result<Self, OpenError> {
        RawSemaphore::check(initial, max)
            .map_err(|why| invalid_capacity(u64::from(initial), why))?;
        Object::create(name, ObjectKind::Semaphore, opts, |s: &mut RawSemaphore| {
            s.initialise(initial, max)
        })
        .map(|inner| Self { inner })
    }

    fn open_or_create_impl(
        name: &str,
        initial: u32,
        max: u32,
        opts: &Options,
    ) -> Result<Self, OpenError> {
        RawSemaphore::check(initial, max)
            .map_err(|why| invalid_capacity(u64::from(initial), why))?;
        Object::open_or_create(name, ObjectKind::Semaphore, opts, |s: &mut RawSemaphore| {
            s.initialise(initial, max)
        })
        .map(|inner| Self { inner })
    }

    /// Facts about the segment: name, path, instance id, creator pid, length.
    pub fn info(&self) -> &SegmentInfo {
        self.inner.info()
    }

    /// Takes a permit, blocking until one is available.
    pub fn acquire(&self) {
        self.raw().acquire();
    }

    /// Takes a permit if one is available; never blocks. Returns whether it did.
    pub fn try_acquire(&self) -> bool {
        self.raw().try_acquire()
    }

    /// Takes a permit, waiting at most `timeout`. Returns whether it did.
    pub fn acquire_timeout(&self, timeout: Duration) -> bool {
        self.raw().acquire_timeout(timeout)
    }

    /// Takes a permit, waiting at most until `deadline`. Returns whether it did.
    pub fn acquire_deadline(&self, deadline: Instant) -> bool {
        self.raw().acquire_deadline(deadline)
    }

    /// Returns a permit, waking one waiter if any.
    ///
    /// # Errors
    ///
    /// [`ReleaseError::Overflow`] at the bound; nothing changes then.
    pub fn release(&self) -> Result<(), ReleaseError> {
        self.raw().release()
    }

    /// The permits available right now (a snapshot).
    pub fn value(&self) -> u32 {
        self.raw().value()
    }

    /// The bound, or `None` if unbounded.
    pub fn max(&self) -> Option<u32> {
        self.raw().max()
    }

    /// The semaphore itself.
    pub fn raw(&self) -> &RawSemaphore {
        self.inner.get()
    }

    /// Takes a permit, awaiting one while there is none (feature `async`, any executor).
    /// Cancel-safe: a dropped future has taken no permit. A `release` wakes one sleeper:
    /// if that is a blocking `acquire` elsewhere, this call looks again within 20 ms.
    #[cfg(all(feature = "async", not(loom)))]
    pub async fn acquire_async(&self) {
        let mut waits = crate::waitset::reactor::Waits::new();
        while !self.try_acquire() {
            waits.next(self.wait_source()).await;
        }
    }

    /// A wait-set entry that is ready while a permit is available.
    #[cfg(not(loom))]
    pub(crate) fn wait_source(&self) -> Box<dyn crate::wake::many::Source> {
        let has_permit = |sem: &RawSemaphore| sem.value() > 0;
        super::WordSource::boxed(&self.inner, has_permit, RawSemaphore::announce_waiter)
    }

    fn check_bound(max: u32) -> Result<(), OpenError> {
        if max == 0 {
            return Err(invalid_capacity(
                u64::from(max),
                "a bounded semaphore needs a bound of at least 1".to_owned(),
            ));
        }
        Ok(())
    }
}

impl std::fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Semaphore")
            .field("name", &self.info().name())
            .field("state", self.raw())
            .finish()
    }
}
