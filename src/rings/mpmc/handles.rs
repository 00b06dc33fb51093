use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::ShmSafe;
use crate::error::{OpenError, PopError, PushError};
use crate::layout::CachePadded;
use crate::layout::ObjectKind;
use crate::loom::{AtomicU32, AtomicU64, Ordering};
use crate::raw::RawLock;
use crate::rings::RingLayout;
use crate::rings::doorbell::{Doorbell, Sleepers};
use crate::rings::keeper::{self, ClaimError, RoleClaim};
use crate::rings::mpmc::ring::{PopFailure, Positions, PushFailure, Ring, Slot};
use crate::rings::wait::wait_loop;
use crate::segment::constructors::constructors;
use crate::segment::{Element, Expected, Segment, SegmentInfo};
use crate::wake::fence;
use crate::wake::futex::Wait;
use crate::wake::many::{Announced, Source};

/// Processes that can have the queue open at once.
const MEMBERS: usize = 64;
/// How long a sleeper sleeps at most before looking again: the bound on noticing that the
/// last other handle is gone.
const SLICE: Duration = Duration::from_millis(20);

/// Lanes per member: the threads of one process mark their claims in different lanes
/// (thread `k` of the process to use a queue takes lane `k % LANES`).
const LANES: usize = 8;
/// A lane's flag for a consumer's claim (a producer's has it clear).
const CONSUMING: u64 = 1 << 63;

/// One member slot: a process with the queue open holds `lock`.
#[repr(C)]
struct Member {
    lock: RawLock,
    _reserved0: u64,
    /// Per thread: `pos + 1` while claiming or filling position `pos` as a producer,
    /// `(pos + 1) | CONSUMING` while claiming or emptying its slot as a consumer, else 0.
    /// If the member dies with a lane set, the others know that claim will never be
    /// finished.
    lanes: [AtomicU64; LANES],
    _reserved: [u64; 2],
}

/// The segment payload before the slots.
#[repr(C)]
struct Control {
    positions: Positions,
    not_empty: CachePadded<Doorbell>,
    not_full: CachePadded<Doorbell>,
    /// Formerly a count of member claims; no longer kept (`Disconnected` reads the masks).
    _reserved0: u64,
    /// Bit `i`: a handle of member `i` has pushed (ever: the bit outlives the member).
    pushers: AtomicU64,
    /// Bit `i`: a handle of member `i` has popped.
    poppers: AtomicU64,
    _reserved: [u64; 13],
    members: [Member; MEMBERS],
}

#[cfg(not(loom))]
const _: () = {
    assert!(size_of::<Member>() == 128);
    assert!(std::mem::offset_of!(Member, lanes) == 48);
    assert!(std::mem::offset_of!(Control, members) == 640);
    assert!(size_of::<Control>() == 256 + 256 + 128 + 64 * 128);
};

/// Which of this process's threads uses which lane.
mod lane {
    use std::cell::Cell;

    use crate::loom::{AtomicU32, Ordering};

    static NEXT: AtomicU32 = AtomicU32::new(0);
    thread_local! {
        static MINE: Cell<usize> = const { Cell::new(usize::MAX) };
    }

    /// This thread's lane, numbered on first use.
    #[inline]
    pub(super) fn index() -> usize {
        MINE.with(|mine| {
            let lane = mine.get();
            if lane != usize::MAX {
                return lane;
            }
            let lane = NEXT.fetch_add(1, Ordering::Relaxed) as usize % super::LANES;
            mine.set(lane);
            lane
        })
    }
}

/// What this process has announced in `Control::pushers` / `poppers`.
const PUSHED: u32 = 1;
const POPPED: u32 = 2;

/// One process's attachment to a queue, shared by its clones.
struct Inner<T> {
    // Field order is drop order: the member lock goes before the mapping.
    _claim: RoleClaim,
    member: usize,
    /// `PUSHED` / `POPPED` once this process's bit is set in the shared masks.
    announced: AtomicU32,
    /// Whether the member's bits were set before this process took the member (by a
    /// predecessor, which counts as another handle): (pushed, popped).
    inherited: (bool, bool),
    ring: Ring<T>,
    /// The payload's control block, looked up once: every operation reads it.
    control: NonNull<Control>,
    /// Shared with the wait-set entries of this queue, which keep the mapping alive.
    segment: Arc<Segment>,
    _holds: PhantomData<T>,
}

/// A handle on a multi-producer multi-consumer queue. Clone it to share it between
/// threads; open the queue by name to share it between processes.
/// # Examples
///
/// Workers in other processes open the queue by name; here, threads stand in for them:
///
/// ```
/// use std::time::Duration;
/// use shmsync::mpmc;
/// # let opts = shmsync::Options::new().dir(std::env::temp_dir());
/// # let name = format!("doc-{}-{}", "queue", std::process::id());
/// let jobs = mpmc::Queue::<u64>::create_with(&name, 1024, &opts)?;
/// let workers: Vec<_> = (0..2)
///     .map(|_| {
///         let jobs = jobs.clone(); // or mpmc::Queue::open_with(&name, &opts) elsewhere
///         std::thread::spawn(move || {
///             let mut sum = 0;
///             while let Ok(job) = jobs.pop_timeout(Duration::from_millis(200)) {
///                 sum += job;
///             }
///             sum
///         })
///     })
///     .collect();
/// for job in 1..=100 {
///     jobs.push_timeout(job, Duration::from_secs(5)).unwrap();
/// }
/// let total: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
/// assert_eq!(total, 5050);
/// # mpmc::Queue::<u64>::unlink_with(&name, &opts)?;
/// # Ok::<(), shmsync::OpenError>(())
/// ```
pub struct Queue<T: bytemuck::Pod + crate::ShmSafe> {
    inner: Arc<Inner<T>>,
}

impl<T: bytemuck::Pod + crate::ShmSafe> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Self { inner: Arc::clone(&self.inner) }
    }
}

// SAFETY: all shared state is reached through the ring's stamp protocol and atomics; the
// member lock is held by the process's keeper thread, not by any handle's thread.
unsafe impl<T: bytemuck::Pod + crate::ShmSafe + Send> Send for Inner<T> {}
// SAFETY: as above.
unsafe impl<T: bytemuck::Pod + crate::ShmSafe + Send> Sync for Inner<T> {}

impl<T: bytemuck::Pod + crate::ShmSafe> Queue<T> {
    const SLOTS_AT: usize = size_of::<Control>().next_multiple_of(align_of::<Slot<T>>());

    fn expected() -> Expected {
        Expected {
            kind: ObjectKind::MpmcQueue,
            element: Element {
                size: size_of::<T>() as u64,
                align: align_of::<Slot<T>>().max(align_of::<Control>()) as u32,
                type_tag: <T as ShmSafe>::type_tag(),
            },
        }
    }

    fn layout() -> RingLayout {
        RingLayout {
            expected: Self::expected(),
            slots_at: Self::SLOTS_AT,
            slot_size: size_of::<Slot<T>>(),
            min_capacity: 2,
        }
    }

    /// Gives every slot its initial stamp, before anyone can open the queue.
    fn initialise(capacity: u64) -> impl FnOnce(NonNull<u8>) {
        move |payload| {
            for i in 0..capacity {
                // SAFETY: `capacity` zeroed slots follow the control block (placed by
                // `spec`); a zeroed Slot is valid (atomics and Pod).
                let slot = unsafe {
                    &*payload.as_ptr().add(Self::SLOTS_AT).cast::<Slot<T>>().add(i as usize)
                };
                slot.initialise(i);
            }
        }
    }

    constructors! {
        returns Self, what "queue";
        /// Creates the queue `name` in `/dev/shm` with room for `capacity` values (rounded
        /// up to a power of two, and at least 2: the ring needs two slots).
        ///
        /// # Errors
        ///
        /// `AlreadyExists`, `InvalidName`, `NoSpace`, `PermissionDenied`, and
        /// `InvalidCapacity` for a capacity of 0 or above 2^40.
        create / create_with (capacity: usize) = |name, capacity, opts| {
            let spec = Self::layout().spec(capacity)?;
            Self::attach(Segment::create(name, &spec, opts, Self::initialise(spec.capacity))?)
        };
        /// Opens the existing queue `name` in `/dev/shm`.
        ///
        /// # Errors
        ///
        /// `NotFound`, `KindMismatch`, `LayoutMismatch` (another element type),
        /// `NotInitialized`, `Corrupted`, and `Busy` if 64 processes have it open.
        open / open_with () = |name, opts| Self::attach(Segment::open(name, &Self::expected(), opts)?);
        /// Opens the queue `name`, or creates it with `capacity` if absent; race-free. An
        /// existing queue keeps its own capacity.
        ///
        /// # Errors
        ///
        /// Those of [`create`](Self::create) and [`open`](Self::open).
        open_or_create / open_or_create_with (capacity: usize) = |name, capacity, opts| {
            let spec = Self::layout().spec(capacity)?;
            Self::attach(Segment::open_or_create(name, &spec, opts, Self::initialise(spec.capacity))?)
        };
    }
    /// An unnamed queue in a memfd segment: the descriptor hands it to child processes,
    /// which open it with [`open_fd`](Self::open_fd).
    pub(crate) fn create_anonymous_with_fd(
        label: &str,
        capacity: usize,
    ) -> Result<(Self, std::os::fd::OwnedFd), OpenError> {
        let spec = Self::layout().spec(capacity)?;
        let (segment, fd) =
            Segment::create_anonymous(label, &spec, Self::initialise(spec.capacity))?;
        Ok((Self::attach(segment)?, fd))
    }

    /// Creates a queue with no name, in a sealed `memfd`: nothing in `/dev/shm`, nothing
    /// to clean up (it goes with the last descriptor and mapping), and no holder can
    /// shrink or grow it (the seals refuse `ftruncate`, so nobody can make the others'
    /// mappings fault). Hand it to children with [`inheritable`](Self::inheritable) and
    /// [`process::Builder::inherit`](crate::process::Builder::inherit) (or
    /// [`PoolBuilder::inherit`](crate::process::PoolBuilder::inherit)); they open it with
    /// [`open_inherited`](Self::open_inherited).
    ///
    /// # Errors
    ///
    /// `InvalidCapacity`, `NoSpace`, and `Io` if the memfd cannot be made.
    ///
    /// # Examples
    ///
    /// ```
    /// use shmsync::{Process, mpmc};
    ///
    /// fn child(token: shmsync::Inheritable) -> u64 {
    ///     let q = mpmc::Queue::<u64>::open_inherited(token).unwrap();
    ///     q.pop().unwrap() * 2
    /// }
    ///
    /// # shmsync::process::init();
    /// let q = mpmc::Queue::<u64>::create_anonymous(16)?;
    /// q.push(21)?;
    /// let token = q.inheritable().unwrap();
    /// let p = Process::builder().inherit(token).spawn(child, token)?;
    /// assert_eq!(p.join()?, 42);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn create_anonymous(capacity: usize) -> Result<Self, OpenError> {
        Self::create_anonymous_with_fd("shmsync-mpmc", capacity).map(|(q, _)| q)
    }

    /// For an anonymous queue: its descriptor as a child process inherits it. `None` for
    /// a named queue (open it by name).
    pub fn inheritable(&self) -> Option<crate::Inheritable> {
        self.inner.segment.inheritable()
    }

    /// Opens an anonymous queue whose descriptor this process inherited (see
    /// [`Inheritable`](crate::Inheritable)).
    ///
    /// # Errors
    ///
    /// `NotFound` if the descriptor is not open here (the child was not started with
    /// `inherit`), `Corrupted` if it is not a sealed shmsync segment, the layout errors of
    /// `open`, and `Busy` if 64 processes have the queue open.
    pub fn open_inherited(token: crate::Inheritable) -> Result<Self, OpenError> {
        Self::attach(Segment::open_inherited(token, &Self::expected())?)
    }

    /// Opens the unnamed queue behind an inherited descriptor.
    pub(crate) fn open_fd(fd: &std::os::fd::OwnedFd, label: &str) -> Result<Self, OpenError> {
        Self::attach(Segment::open_fd(fd, label, &Self::expected())?)
    }

    /// Checks the segment, claims a member slot for this process and builds the handle.
    fn attach(segment: Segment) -> Result<Self, OpenError> {
        let capacity = Self::layout().capacity_of(&segment)?;
        let base = segment.payload();
        // SAFETY: the payload starts with a Control, 128-byte aligned, every bit pattern
        // valid; it lives as long as `segment`, which the handle owns.
        let control = unsafe { &*base.as_ptr().cast::<Control>() };
        // SAFETY: positions and `capacity` initialised slots inside the payload, valid as
        // long as `segment` (dropped after every use of the ring).
        let ring = unsafe {
            Ring::new(
                NonNull::from(&control.positions),
                base.add(Self::SLOTS_AT).cast::<Slot<T>>(),
                capacity,
            )
        };
        fence::register();
        let mut claimed = None;
        for (i, member) in control.members.iter().enumerate() {
            // SAFETY: the claim is dropped before the segment (field order of Inner).
            match unsafe { keeper::claim(&member.lock) } {
                Ok((claim, _)) => {
                    // A dead predecessor's unfinished claim must stay marked until the
                    // others finish it: leave such a member alone for now.
                    if Self::forget_finished(&ring, member) {
                        claimed = Some((i, claim));
                        break;
                    }
                    // Dropping the claim releases the member again.
                }
                Err(ClaimError::Busy { .. }) => continue,
                Err(e) => return Err(e.into_open_error(segment.info().name(), "member")),
            }
        }
        // Every member is alive or still owes a dead process's claim.
        let (member, claim) = claimed.ok_or_else(|| OpenError::Busy {
            name: segment.info().name().to_owned(),
            role: format!("member (all {MEMBERS} are held)"),
            holder: None,
        })?;
        let bit = 1u64 << member;
        let inherited = (
            control.pushers.load(Ordering::Acquire) & bit != 0,
            control.poppers.load(Ordering::Acquire) & bit != 0,
        );
        Ok(Self {
            inner: Arc::new(Inner {
                _claim: claim,
                member,
                announced: AtomicU32::new(0),
                inherited,
                ring,
                control: NonNull::from(control),
                segment: Arc::new(segment),
                _holds: PhantomData,
            }),
        })
    }

    /// Clears the lanes of `member` (claimed by the caller) whose claims are finished;
    /// returns whether all are clear, so that the member can be used.
    fn forget_finished(ring: &Ring<T>, member: &Member) -> bool {
        let mut clear = true;
        for lane in &member.lanes {
            let marker = lane.load(Ordering::Acquire);
            if marker == 0 {
                continue;
            }
            if Self::still_owed(ring, marker) {
                clear = false;
            } else {
                lane.store(0, Ordering::Relaxed);
            }
        }
        clear
    }

    /// Whether the claim a lane marks is still unfinished.
    fn still_owed(ring: &Ring<T>, marker: u64) -> bool {
        let pos = (marker & !CONSUMING).wrapping_sub(1);
        if marker & CONSUMING != 0 { ring.is_unreleased(pos) } else { ring.is_unpublished(pos) }
    }

    #[inline]
    fn control(&self) -> &Control {
        // SAFETY: points into the mapping, which `self.inner.segment` keeps alive.
        unsafe { self.inner.control.as_ref() }
    }

    /// This thread's lane in this process's member.
    #[inline]
    fn lane(&self) -> &AtomicU64 {
        &self.control().members[self.inner.member].lanes[lane::index()]
    }

    /// Whether no other handle is alive (in this process or another) and some other
    /// handle had done what `mask` records (pushed or popped).
    /// `borrowed`: references to this process's attachment that are not handles (a wait
    /// set's look holds one).
    fn alone_after(&self, mask: &AtomicU64, inherited: bool, borrowed: usize) -> bool {
        let control = self.control();
        let others = mask.load(Ordering::Acquire) & !(1u64 << self.inner.member);
        if Arc::strong_count(&self.inner) > 1 + borrowed || (others == 0 && !inherited) {
            return false;
        }
        !control
            .members
            .iter()
            .enumerate()
            .any(|(i, m)| i != self.inner.member && m.lock.is_held_acquire())
    }

    /// Sets this process's bit in `Control::pushers` or `poppers` (once per process).
    #[cold]
    fn announce(&self, what: u32) {
        let mask = if what == PUSHED { &self.control().pushers } else { &self.control().poppers };
        mask.fetch_or(1u64 << self.inner.member, Ordering::AcqRel);
        self.inner.announced.fetch_or(what, Ordering::Relaxed);
    }

    /// Whether only members that are dead mark `marker` in a lane (so the claim will never
    /// be finished by its owner).
    fn only_dead_mark(&self, marker: u64) -> bool {
        let (mut dead, mut live) = (false, false);
        for m in &self.control().members {
            // Acquire pairs with the marking member's Release claim.
            if m.lanes.iter().any(|l| l.load(Ordering::Acquire) == marker) {
                if m.lock.is_held_acquire() {
                    live = true;
                } else {
                    dead = true;
                }
            }
        }
        dead && !live
    }

    /// Clears `marker` from the lanes of dead members, once its claim is finished.
    fn forget_dead_marks(&self, marker: u64) {
        for m in &self.control().members {
            if !m.lock.is_held_acquire() {
                for l in &m.lanes {
                    let _ = l.compare_exchange(marker, 0, Ordering::Relaxed, Ordering::Relaxed);
                }
            }
        }
    }

    /// Appends `value` if there is room; never blocks.
    ///
    /// # Errors
    ///
    /// `Full(value)`; `Disconnected(value)` when it is full, no other handle is alive, and
    /// another handle had popped (a lone handle before any consumer came gets `Full`:
    /// see the module docs); `Corrupted(value)`.
    #[inline]
    pub fn try_push(&self, value: T) -> Result<(), PushError<T>> {
        match self.push_once(value) {
            Ok(()) => Ok(()),
            Err(PushFailure::Full(v)) => self.full(v),
            Err(PushFailure::Corrupted(v)) => Err(PushError::Corrupted(v)),
        }
    }

    /// One attempt to push, with this thread's claim marked in its lane meanwhile.
    #[inline]
    fn push_once(&self, value: T) -> Result<(), PushFailure<T>> {
        let lane = self.lane();
        let pushed = self
            .inner
            .ring
            .try_push_marked(value, |pos| lane.store(pos.wrapping_add(1), Ordering::Relaxed));
        // Published (or never claimed): nothing of ours can be left half-done.
        lane.store(0, Ordering::Release);
        if pushed.is_ok() {
            if self.inner.announced.load(Ordering::Relaxed) & PUSHED == 0 {
                self.announce(PUSHED);
            }
            self.control().not_empty.ring(fence::light);
        }
        pushed
    }

    /// The queue looked full: release slots of dead consumers if that is what blocks it
    /// (each release frees one slot, and there are at most as many as lanes), else report
    /// `Full` or `Disconnected`.
    #[cold]
    fn full(&self, mut value: T) -> Result<(), PushError<T>> {
        for _ in 0..MEMBERS * LANES {
            if !self.release_dead_pop() {
                break;
            }
            match self.push_once(value) {
                Ok(()) => return Ok(()),
                Err(PushFailure::Full(v)) => value = v,
                Err(PushFailure::Corrupted(v)) => return Err(PushError::Corrupted(v)),
            }
        }
        if self.alone_after(&self.control().poppers, self.inner.inherited.1, 0) {
            Err(PushError::Disconnected(value))
        } else {
            Err(PushError::Full(value))
        }
    }

    /// If the slot the next push needs was claimed by a consumer that died before
    /// releasing it (and no live member is working on it), releases it; its value is
    /// lost. Returns whether it did.
    fn release_dead_pop(&self) -> bool {
        let Some(pos) = self.inner.ring.unreleased_at_tail() else { return false };
        let marker = pos.wrapping_add(1) | CONSUMING;
        if !self.only_dead_mark(marker) || !self.inner.ring.release_abandoned(pos) {
            return false;
        }
        self.forget_dead_marks(marker);
        true
    }

    /// If the oldest position was claimed by a member that died before publishing it (and
    /// no live member is working on it), steps over it. Returns whether it did.
    fn step_over_dead_claim(&self) -> bool {
        let Some(pos) = self.inner.ring.unpublished_head() else { return false };
        let marker = pos.wrapping_add(1);
        if !self.only_dead_mark(marker) || !self.inner.ring.skip_abandoned(pos) {
            return false;
        }
        self.forget_dead_marks(marker);
        true
    }

    /// Appends `value`, blocking while the queue is full.
    ///
    /// # Errors
    ///
    /// `Disconnected(value)` once no other handle is alive to make room and another
    /// handle had popped (until a consumer has come, it waits); `Corrupted(value)`.
    #[inline]
    pub fn push(&self, value: T) -> Result<(), PushError<T>> {
        self.push_waiting(value, Wait::Forever)
    }

    /// Appends `value`, waiting at most `timeout` for room.
    ///
    /// # Errors
    ///
    /// `Timeout(value)`, and those of [`push`](Self::push).
    #[inline]
    pub fn push_timeout(&self, value: T, timeout: Duration) -> Result<(), PushError<T>> {
        self.push_waiting(value, Wait::For(timeout))
    }

    /// Appends `value`, waiting at most until `deadline` for room.
    ///
    /// # Errors
    ///
    /// As [`push_timeout`](Self::push_timeout).
    #[inline]
    pub fn push_deadline(&self, value: T, deadline: Instant) -> Result<(), PushError<T>> {
        self.push_waiting(value, Wait::Until(deadline))
    }

    /// A push that may wait as `wait` says: the streaming case inline, waiting out of
    /// line.
    #[inline]
    fn push_waiting(&self, value: T, wait: Wait) -> Result<(), PushError<T>> {
        match self.try_push(value) {
            Err(PushError::Full(value)) => self.push_until(value, wait),
            done => done,
        }
    }

    #[inline(never)]
    fn push_until(&self, value: T, wait: Wait) -> Result<(), PushError<T>> {
        let (ring, bell) = (self.inner.ring, &self.control().not_full);
        wait_loop(
            &mut &*self,
            wait,
            true,
            |q| match q.try_push(value) {
                Err(PushError::Full(_)) => None,
                done => Some(done),
            },
            // A cheap look at the next slot (not `try_push`, whose full-queue path scans
            // the members).
            |_| ring.next_is_free(),
            |deadline, room| {
                bell.sleep(Sleepers::Many, fence::heavy, &deadline.capped(SLICE), room)
            },
        )
        .unwrap_or(Err(PushError::Timeout(value)))
    }

    /// Takes the oldest value if there is one; never blocks.
    ///
    /// # Errors
    ///
    /// `Empty`; `Disconnected` when it is empty, no other handle is alive to push, and
    /// another handle had pushed; `Corrupted`.
    #[inline]
    pub fn try_pop(&self) -> Result<T, PopError> {
        match self.pop_once() {
            Ok(v) => Ok(v),
            Err(PopFailure::Empty) => self.empty(),
            Err(PopFailure::Corrupted) => Err(PopError::Corrupted),
        }
    }

    /// One attempt to pop, with this thread's claim marked in its lane meanwhile.
    #[inline]
    fn pop_once(&self) -> Result<T, PopFailure> {
        let lane = self.lane();
        let popped = self.inner.ring.try_pop_marked(|pos| {
            lane.store(pos.wrapping_add(1) | CONSUMING, Ordering::Relaxed);
        });
        // Released (or never claimed).
        lane.store(0, Ordering::Release);
        if popped.is_ok() {
            if self.inner.announced.load(Ordering::Relaxed) & POPPED == 0 {
                self.announce(POPPED);
            }
            self.control().not_full.ring(fence::light);
        }
        popped
    }

    /// The queue looked empty: step over holes of dead producers if that is what hides
    /// the values behind them (at most as many as lanes), else report `Empty` or
    /// `Disconnected`.
    #[cold]
    fn empty(&self) -> Result<T, PopError> {
        let mut alone_checked = false;
        for _ in 0..MEMBERS * LANES {
            if !self.step_over_dead_claim() {
                if alone_checked
                    || !self.alone_after(&self.control().pushers, self.inner.inherited.0, 0)
                {
                    break;
                }
                // Alone: whatever the others pushed before leaving is visible now, so
                // look once more (and drain it) before saying Disconnected.
                alone_checked = true;
            }
            match self.pop_once() {
                Ok(v) => return Ok(v),
                Err(PopFailure::Empty) => {}
                Err(PopFailure::Corrupted) => return Err(PopError::Corrupted),
            }
        }
        if alone_checked && self.inner.ring.unpublished_head().is_none() {
            Err(PopError::Disconnected)
        } else {
            Err(PopError::Empty)
        }
    }

    /// Takes the oldest value, blocking while the queue is empty.
    ///
    /// # Errors
    ///
    /// `Disconnected` once it is empty, no other handle is alive and another handle had
    /// pushed (noticed within about 20 ms); `Corrupted`.
    #[inline]
    pub fn pop(&self) -> Result<T, PopError> {
        self.pop_waiting(Wait::Forever)
    }

    /// Takes the oldest value, waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// `Timeout`, and those of [`pop`](Self::pop).
    #[inline]
    pub fn pop_timeout(&self, timeout: Duration) -> Result<T, PopError> {
        self.pop_waiting(Wait::For(timeout))
    }

    /// Takes the oldest value, waiting at most until `deadline`.
    ///
    /// # Errors
    ///
    /// As [`pop_timeout`](Self::pop_timeout).
    #[inline]
    pub fn pop_deadline(&self, deadline: Instant) -> Result<T, PopError> {
        self.pop_waiting(Wait::Until(deadline))
    }

    /// A pop that may wait as `wait` says: the streaming case inline, waiting out of line.
    #[inline]
    fn pop_waiting(&self, wait: Wait) -> Result<T, PopError> {
        match self.try_pop() {
            Err(PopError::Empty) => self.pop_until(wait),
            done => done,
        }
    }

    #[inline(never)]
    fn pop_until(&self, wait: Wait) -> Result<T, PopError> {
        let (ring, bell) = (self.inner.ring, &self.control().not_empty);
        wait_loop(
            &mut &*self,
            wait,
            true,
            |q| match q.try_pop() {
                Err(PopError::Empty) => None,
                done => Some(done),
            },
            |_| ring.next_is_published(),
            |deadline, ready| {
                bell.sleep(Sleepers::Many, fence::heavy, &deadline.capped(SLICE), ready)
            },
        )
        .unwrap_or(Err(PopError::Timeout))
    }

    /// Takes the oldest value, awaiting one while the queue is empty (feature `async`, any
    /// executor). A value already there is taken at once, with no syscall. Cancel-safe: a
    /// dropped future has taken nothing.
    ///
    /// # Errors
    ///
    /// As [`pop`](Self::pop).
    #[cfg(all(feature = "async", not(loom)))]
    pub async fn pop_async(&self) -> Result<T, PopError> {
        let mut waits = crate::waitset::reactor::Waits::new();
        loop {
            match self.try_pop() {
                Err(PopError::Empty) => {}
                done => return done,
            }
            waits.next(QueueSource::new(self, true)).await;
        }
    }

    /// Appends `value`, awaiting room while the queue is full (feature `async`, any
    /// executor). Cancel-safe: a dropped future has pushed nothing.
    ///
    /// # Errors
    ///
    /// As [`push`](Self::push).
    #[cfg(all(feature = "async", not(loom)))]
    pub async fn push_async(&self, value: T) -> Result<(), PushError<T>> {
        let mut waits = crate::waitset::reactor::Waits::new();
        let mut value = value;
        loop {
            match self.try_push(value) {
                Err(PushError::Full(v)) => value = v,
                done => return done,
            }
            waits.next(QueueSource::new(self, false)).await;
        }
    }

    /// Values in the queue right now (a snapshot).
    pub fn len(&self) -> usize {
        self.inner.ring.len() as usize
    }

    /// Whether the queue is empty right now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the queue is full right now.
    pub fn is_full(&self) -> bool {
        self.len() == self.capacity()
    }

    /// The number of values the queue holds at most.
    pub fn capacity(&self) -> usize {
        self.inner.ring.capacity() as usize
    }

    /// Facts about the segment.
    pub fn info(&self) -> &SegmentInfo {
        self.inner.segment.info()
    }
}

/// A wait-set entry on a queue: the ring and the doorbell to sleep on, with the mapping
/// kept alive, and a weak reference to this process's attachment for the closer look
/// (weak, so that the entry does not count as a handle for `Disconnected`).
struct QueueSource<T: bytemuck::Pod + crate::ShmSafe> {
    _segment: Arc<Segment>,
    ring: Ring<T>,
    bell: NonNull<Doorbell>,
    queue: std::sync::Weak<Inner<T>>,
    /// The entry waits to pop (else to push).
    pop: bool,
}

// SAFETY: the pointers lead into the mapping that `_segment` keeps alive, shared memory
// reached only through atomics and the ring's stamp protocol.
unsafe impl<T: bytemuck::Pod + crate::ShmSafe> Send for QueueSource<T> {}
// SAFETY: as above.
unsafe impl<T: bytemuck::Pod + crate::ShmSafe> Sync for QueueSource<T> {}

impl<T: bytemuck::Pod + crate::ShmSafe> QueueSource<T> {
    fn new(queue: &Queue<T>, pop: bool) -> Box<Self> {
        let control = queue.control();
        let bell = if pop { &control.not_empty } else { &control.not_full };
        Box::new(Self {
            _segment: Arc::clone(&queue.inner.segment),
            ring: queue.inner.ring,
            bell: NonNull::from(&**bell),
            queue: Arc::downgrade(&queue.inner),
            pop,
        })
    }
}

impl<T: bytemuck::Pod + crate::ShmSafe> Source for QueueSource<T> {
    fn is_ready(&self) -> bool {
        if self.pop { self.ring.next_is_published() } else { self.ring.next_is_free() }
    }

    /// What the calls find on their slow path: a claim a dead member left unfinished
    /// (the call steps over it or releases it), or no other handle left (`Disconnected`).
    fn is_ready_closely(&self) -> bool {
        let Some(inner) = self.queue.upgrade() else { return false };
        let q = Queue { inner };
        let control = q.control();
        if self.pop {
            let hole = q.inner.ring.unpublished_head();
            hole.is_some_and(|pos| q.only_dead_mark(pos.wrapping_add(1)))
                || q.alone_after(&control.pushers, q.inner.inherited.0, 1)
        } else {
            let hole = q.inner.ring.unreleased_at_tail();
            hole.is_some_and(|pos| q.only_dead_mark(pos.wrapping_add(1) | CONSUMING))
                || q.alone_after(&control.poppers, q.inner.inherited.1, 1)
        }
    }

    fn announce(&self) -> Announced<'_> {
        // SAFETY: into the mapping `_segment` keeps alive.
        let bell = unsafe { self.bell.as_ref() };
        // Many sleepers: the ringer lowers the flag, the set leaves it (`Sleepers::Many`).
        let seen = bell.announce();
        Announced { wake: (bell.word(), seen), death: None }
    }
}

impl<T: bytemuck::Pod + crate::ShmSafe> crate::waitset::CanPop for Queue<T> {}
impl<T: bytemuck::Pod + crate::ShmSafe> crate::waitset::sealed::CanPop for Queue<T> {
    fn pop_source(&self) -> Box<dyn Source> {
        QueueSource::new(self, true)
    }
}

impl<T: bytemuck::Pod + crate::ShmSafe> crate::waitset::CanPush for Queue<T> {}
impl<T: bytemuck::Pod + crate::ShmSafe> crate::waitset::sealed::CanPush for Queue<T> {
    fn push_source(&self) -> Box<dyn Source> {
        QueueSource::new(self, false)
    }
}

impl<T: bytemuck::Pod + crate::ShmSafe> std::fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("name", &self.info().name())
            .field("capacity", &self.capacity())
            .finish()
    }
}
