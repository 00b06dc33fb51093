//! `Barrier`: a named barrier in its own segment.

use std::time::{Duration, Instant};

use crate::OpenError;
use crate::error::BarrierError;
use crate::layout::ObjectKind;
use crate::raw::{BarrierWaitResult, RawBarrier};
use crate::segment::SegmentInfo;
use crate::segment::constructors::constructors;
use crate::segment::object::Object;

/// A barrier shared by name between processes, like Python's `multiprocessing.Barrier`:
/// `parties` waiters wait until all of them do, then all go on; one of them is the
/// leader. A waiter that times out breaks it for all ([`BarrierError::Broken`]), as
/// [`abort`](Self::abort) does, until [`reset`](Self::reset).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use shmsync::{Barrier, BarrierError, Options};
///
/// # let opts = Options::new().dir(std::env::temp_dir());
/// # let name = format!("doc-barrier-{}", std::process::id());
/// let step = Barrier::create_with(&name, 1, &opts)?;
/// assert!(step.wait().unwrap().is_leader()); // one party: passes at once
/// let two = Barrier::open_with(&name, &opts)?;
/// two.abort();
/// assert_eq!(step.wait(), Err(BarrierError::Broken));
/// step.reset();
/// assert!(step.wait_timeout(Duration::from_secs(1)).is_ok());
/// # Barrier::unlink_with(&name, &opts)?;
/// # Ok::<(), shmsync::OpenError>(())
/// ```
pub struct Barrier {
    inner: Object<RawBarrier>,
}

fn check_parties(parties: u32) -> Result<(), OpenError> {
    if parties == 0 {
        return Err(crate::error::invalid_capacity(0, "a barrier needs at least 1 party".into()));
    }
    Ok(())
}

impl Barrier {
    constructors! {
        returns Self, what "barrier";
        /// Creates the barrier `name` in `/dev/shm` for `parties` waiters.
        ///
        /// # Errors
        ///
        /// `InvalidCapacity` for 0 parties; otherwise as
        /// [`Lock::create`](crate::Lock::create).
        create / create_with (parties: u32) = |name, parties, opts| {
            check_parties(parties)?;
            Object::create(name, ObjectKind::Barrier, opts, |b: &mut RawBarrier| b.initialise(parties))
                .map(|inner| Self { inner })
        };
        /// Opens the existing barrier `name` in `/dev/shm`.
        ///
        /// # Errors
        ///
        /// As [`Lock::open`](crate::Lock::open).
        open / open_with () = |name, opts| {
            Object::open(name, ObjectKind::Barrier, opts).map(|inner| Self { inner })
        };
        /// Opens the barrier `name`, or creates it for `parties` waiters if absent (an
        /// existing barrier keeps its own parties).
        ///
        /// # Errors
        ///
        /// Those of [`create`](Self::create) and [`open`](Self::open).
        open_or_create / open_or_create_with (parties: u32) = |name, parties, opts| {
            check_parties(parties)?;
            Object::open_or_create(name, ObjectKind::Barrier, opts, |b: &mut RawBarrier| b.initialise(parties))
                .map(|inner| Self { inner })
        };
    }

    /// Facts about the segment.
    pub fn info(&self) -> &SegmentInfo {
        self.inner.info()
    }

    /// Waits until every party waits.
    ///
    /// # Errors
    ///
    /// `Broken` if the barrier is or becomes broken.
    pub fn wait(&self) -> Result<BarrierWaitResult, BarrierError> {
        self.inner.get().wait()
    }

    /// Waits at most `timeout`; a timeout breaks the barrier for every waiter.
    ///
    /// # Errors
    ///
    /// `Broken`, also for the caller that timed out.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<BarrierWaitResult, BarrierError> {
        self.inner.get().wait_timeout(timeout)
    }

    /// [`wait_timeout`](Self::wait_timeout) with an absolute deadline.
    ///
    /// # Errors
    ///
    /// As [`wait_timeout`](Self::wait_timeout).
    pub fn wait_deadline(&self, deadline: Instant) -> Result<BarrierWaitResult, BarrierError> {
        self.inner.get().wait_deadline(deadline)
    }

    /// Breaks the barrier for every current and future waiter, until `reset`.
    pub fn abort(&self) {
        self.inner.get().abort();
    }

    /// Makes the barrier fresh again; its current waiters get `Broken`.
    pub fn reset(&self) {
        self.inner.get().reset();
    }

    /// The number of parties.
    pub fn parties(&self) -> u32 {
        self.inner.get().parties()
    }

    /// How many wait now.
    pub fn n_waiting(&self) -> u32 {
        self.inner.get().n_waiting()
    }

    /// Whether it is broken.
    pub fn is_broken(&self) -> bool {
        self.inner.get().is_broken()
    }
}

impl std::fmt::Debug for Barrier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Barrier")
            .field("name", &self.info().name())
            .field("parties", &self.parties())
            .finish()
    }
}
