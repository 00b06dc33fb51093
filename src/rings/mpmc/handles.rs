use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::ShmSafe;
use crate::error::{OpenError, PopError, PushError};
use crate::layout::CachePadded;
use crate::layout::ObjectKind;
use crate::loom::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use crate::raw::RawLock;
use crate::rings::RingLayout;
use crate::rings::doorbell::{Doorbell, Sleepers};
use crate::rings::keeper::{self, ClaimError, RoleClaim};
use crate::rings::mpmc::ring::{MAX_RANGE, PopFailure, Positions, PushFailure, Ring, Slot};
use crate::rings::wait::wait_loop;
use crate::segment::constructors::constructors;
use crate::segment::{Element, Expected, Segment, SegmentInfo};
use crate::wake::fence;
use crate::wake::futex::Wait;
use crate::wake::many::{Announced, Source};

/// Mixed into the header's type tag, so that a build whose queue protocol differs
/// refuses the segment (`LayoutMismatch`) instead of misreading its lanes.
const PROTOCOL: u64 = crate::layout::fnv1a(b"shmsync::mpmc/2");

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
    /// Per lane: how many positions its claim covers; 0 (and 1) mean one. Only range
    /// claims write it, before the lane, and reset it to 0 after clearing the lane, so a
    /// single claim costs no extra store. Release stores, Acquire loads: a reader that sees
    /// a length sees everything its writer did before (claims finished, lanes cleared).
    lengths: [AtomicU8; LANES],
    /// Per thread: `pos + 1` while claiming or filling positions `pos..pos + length` as a
    /// producer, `(pos + 1) | CONSUMING` while claiming or emptying their slots as a
    /// consumer, else 0. If the member dies with a lane set, the others know that claim
    /// will never be finished.
    lanes: [AtomicU64; LANES],
    _reserved: [u64; 2],
}

/// A lane's mark for a claim from position `start`: `start + 1`, with [`CONSUMING`] for a
/// consumer's claim (0 is an empty lane).
fn marker(start: u64, consuming: bool) -> u64 {
    start.wrapping_add(1) | if consuming { CONSUMING } else { 0 }
}

/// A claim one lane records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Claim {
    start: u64,
    len: u64,
    consuming: bool,
}

impl Claim {
    fn covers(&self, pos: u64, consuming: bool) -> bool {
        self.consuming == consuming && pos.wrapping_sub(self.start) < self.len
    }
}

impl Member {
    /// Records this thread's claim of `len` positions from `start` in lane `k`.
    #[inline]
    fn mark(&self, k: usize, start: u64, len: u64, consuming: bool) {
        debug_assert!((1..=MAX_RANGE).contains(&len));
        if len != 1 {
            self.lengths[k].store(len as u8, Ordering::Release);
        }
        // Release: whoever reads the marker (Acquire) reads its length.
        self.lanes[k].store(marker(start, consuming), Ordering::Release);
    }

    /// The claim lane `k` records, if any.
    fn claim(&self, k: usize) -> Option<Claim> {
        // Acquire pairs with the Release in `mark`: the length read next is this claim's.
        let marker = self.lanes[k].load(Ordering::Acquire);
        (marker != 0).then(|| Claim {
            start: (marker & !CONSUMING).wrapping_sub(1),
            len: u64::from(self.lengths[k].load(Ordering::Acquire).max(1)),
            consuming: marker & CONSUMING != 0,
        })
    }

    /// Whether some lane's claim covers position `pos` (a consumer's, or a producer's).
    fn covers(&self, pos: u64, consuming: bool) -> bool {
        (0..LANES).any(|k| self.claim(k).is_some_and(|c| c.covers(pos, consuming)))
    }
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
    assert!(std::mem::offset_of!(Member, lengths) == 40);
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
                // The element's tag mixed with the queue's protocol revision: /2 records a
                // claim's length beside its lane (batches), which /1 would not read when it
                // finishes a dead member's claim.
                type_tag: <T as ShmSafe>::type_tag() ^ PROTOCOL,
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
                        // A predecessor killed between clearing a lane and resetting its
                        // length leaves the length behind: single claims do not write it.
                        for length in &member.lengths {
                            length.store(0, Ordering::Release);
                        }
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
        for k in 0..LANES {
            let Some(claim) = member.claim(k) else { continue };
            if Self::still_owed(ring, claim) {
                clear = false;
            } else {
                member.lanes[k].store(0, Ordering::Relaxed);
            }
        }
        clear
    }

    /// Whether some position of the claim a lane marks is still unfinished.
    fn still_owed(ring: &Ring<T>, claim: Claim) -> bool {
        (0..claim.len).any(|k| {
            let pos = claim.start.wrapping_add(k);
            if claim.consuming { ring.is_unreleased(pos) } else { ring.is_unpublished(pos) }
        })
    }

    #[inline]
    fn control(&self) -> &Control {
        // SAFETY: points into the mapping, which `self.inner.segment` keeps alive.
        unsafe { self.inner.control.as_ref() }
    }

    /// This process's member.
    #[inline]
    fn member(&self) -> &Member {
        &self.control().members[self.inner.member]
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

    /// Whether only members that are dead have a claim covering position `pos` (a
    /// consumer's claim if `consuming`) in a lane, so that it will never be finished by
    /// its owner. A dead member's stale claim may cover positions that a live member
    /// claimed after all; the live member's own lane then says so.
    fn only_dead_cover(&self, pos: u64, consuming: bool) -> bool {
        let (mut dead, mut live) = (false, false);
        for m in &self.control().members {
            // The lanes' Acquire pairs with the marking member's Release claim.
            if m.covers(pos, consuming) {
                if m.lock.is_held_acquire() {
                    live = true;
                } else {
                    dead = true;
                }
            }
        }
        dead && !live
    }

    /// Clears the lanes of dead members that cover `pos`, once every position of their
    /// claims is finished.
    fn forget_dead_marks(&self, pos: u64, consuming: bool) {
        for m in &self.control().members {
            if m.lock.is_held_acquire() {
                continue;
            }
            for k in 0..LANES {
                let Some(claim) = m.claim(k) else { continue };
                if claim.covers(pos, consuming) && !Self::still_owed(&self.inner.ring, claim) {
                    let marked = marker(claim.start, consuming);
                    let _ = m.lanes[k].compare_exchange(
                        marked,
                        0,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
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
            Err(PushFailure::Full(v)) => self.full(v, |v| self.push_once(v)),
            Err(PushFailure::Corrupted(v)) => Err(PushError::Corrupted(v)),
        }
    }

    /// One attempt to push, with this thread's claim marked in its lane meanwhile.
    #[inline]
    fn push_once(&self, value: T) -> Result<(), PushFailure<T>> {
        let (member, k) = (self.member(), lane::index());
        let pushed = self.inner.ring.try_push_marked(value, |pos| member.mark(k, pos, 1, false));
        self.after_claim(k, pushed.is_ok(), PUSHED);
        pushed
    }

    /// The queue looked full: release slots of dead consumers if that is what blocks it
    /// (each release frees one slot, and `push` tries again after each), else report
    /// `Full` or `Disconnected`. `value` is what `push` hands back on failure.
    #[cold]
    fn full<V, R>(
        &self,
        mut value: V,
        mut push: impl FnMut(V) -> Result<R, PushFailure<V>>,
    ) -> Result<R, PushError<V>> {
        for _ in 0..MEMBERS * LANES * MAX_RANGE as usize {
            if !self.release_dead_pop() {
                break;
            }
            match push(value) {
                Ok(done) => return Ok(done),
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
        if !self.only_dead_cover(pos, true) || !self.inner.ring.release_abandoned(pos) {
            return false;
        }
        self.forget_dead_marks(pos, true);
        true
    }

    /// If the oldest position was claimed by a member that died before publishing it (and
    /// no live member is working on it), steps over it. Returns whether it did.
    fn step_over_dead_claim(&self) -> bool {
        let Some(pos) = self.inner.ring.unpublished_head() else { return false };
        if !self.only_dead_cover(pos, false) || !self.inner.ring.skip_abandoned(pos) {
            return false;
        }
        self.forget_dead_marks(pos, false);
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
            Err(PushError::Full(value)) => self.push_until(value, wait, |q, v| q.try_push(v)),
            done => done,
        }
    }

    /// Waits for room (as `wait` says) and pushes with `push`; `value` is what it hands
    /// back when full.
    #[inline(never)]
    fn push_until<V: Copy, R>(
        &self,
        value: V,
        wait: Wait,
        mut push: impl FnMut(&Self, V) -> Result<R, PushError<V>>,
    ) -> Result<R, PushError<V>> {
        let (ring, bell) = (self.inner.ring, &self.control().not_full);
        wait_loop(
            &mut &*self,
            wait,
            true,
            |q| match push(q, value) {
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
            Err(PopFailure::Empty) => self.empty(|| self.pop_once()),
            Err(PopFailure::Corrupted) => Err(PopError::Corrupted),
        }
    }

    /// One attempt to pop, with this thread's claim marked in its lane meanwhile.
    #[inline]
    fn pop_once(&self) -> Result<T, PopFailure> {
        let (member, k) = (self.member(), lane::index());
        let popped = self.inner.ring.try_pop_marked(|pos| member.mark(k, pos, 1, true));
        self.after_claim(k, popped.is_ok(), POPPED);
        popped
    }

    /// After an attempt to push (`what` = `PUSHED`) or pop (`POPPED`): clears this
    /// thread's lane `k` (finished, or never claimed: nothing of ours can be left
    /// half-done) and, if the attempt moved values, announces it (once per process) and
    /// rings for the other side's sleepers.
    #[inline]
    fn after_claim(&self, k: usize, moved: bool, what: u32) {
        self.member().lanes[k].store(0, Ordering::Release);
        if moved {
            if self.inner.announced.load(Ordering::Relaxed) & what == 0 {
                self.announce(what);
            }
            let control = self.control();
            let bell = if what == PUSHED { &control.not_empty } else { &control.not_full };
            bell.ring(fence::light);
        }
    }

    /// The queue looked empty: step over holes of dead producers if that is what hides
    /// the values behind them (each step passes one position, and `pop` tries again after
    /// each), else report `Empty` or `Disconnected`.
    #[cold]
    fn empty<R>(&self, mut pop: impl FnMut() -> Result<R, PopFailure>) -> Result<R, PopError> {
        let mut alone_checked = false;
        for _ in 0..MEMBERS * LANES * MAX_RANGE as usize {
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
            match pop() {
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
            Err(PopError::Empty) => self.pop_until(wait, |q| q.try_pop()),
            done => done,
        }
    }

    /// Waits for a value (as `wait` says) and pops with `pop`.
    #[inline(never)]
    fn pop_until<R>(
        &self,
        wait: Wait,
        mut pop: impl FnMut(&Self) -> Result<R, PopError>,
    ) -> Result<R, PopError> {
        let (ring, bell) = (self.inner.ring, &self.control().not_empty);
        wait_loop(
            &mut &*self,
            wait,
            true,
            |q| match pop(q) {
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

    /// Appends as many of `values` as there is room for right now, in order, in one
    /// claim: one compare-and-swap of the producers' position for all of them (at most
    /// 255), then each published as it is written. Never blocks. Returns how many were
    /// pushed (a prefix of `values`; 0 for an empty slice).
    ///
    /// A producer killed part-way through the claim leaves the unpublished rest as holes
    /// that consumers step over, as for a single push.
    ///
    /// # Errors
    ///
    /// With 0 inside (nothing was pushed): `Full(0)` when not one value fits, and
    /// `Disconnected(0)` and `Corrupted(0)` as for [`try_push`](Self::try_push).
    ///
    /// # Examples
    ///
    /// ```
    /// use shmsync::{Options, PushError, mpmc};
    ///
    /// # let opts = Options::new().dir(std::env::temp_dir());
    /// # let name = format!("doc-mpmc-slice-{}", std::process::id());
    /// let q = mpmc::Queue::<u32>::create_with(&name, 4, &opts)?;
    /// assert_eq!(q.try_push_slice(&[1, 2, 3, 4, 5, 6]), Ok(4)); // room for four
    /// assert_eq!(q.try_push_slice(&[5, 6]), Err(PushError::Full(0)));
    /// let mut buf = [0; 8];
    /// assert_eq!(q.try_pop_into(&mut buf), Ok(4));
    /// assert_eq!(buf[..4], [1, 2, 3, 4]);
    /// # mpmc::Queue::<u32>::unlink_with(&name, &opts)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_push_slice(&self, values: &[T]) -> Result<usize, PushError<usize>> {
        if values.is_empty() {
            return Ok(0);
        }
        let pushed = match self.push_range_once(values) {
            Ok(n) => Ok(n),
            Err(PushFailure::Full(())) => self.full((), |()| self.push_range_once(values)),
            Err(PushFailure::Corrupted(())) => Err(PushError::Corrupted(())),
        };
        pushed.map_err(|e| e.map(|()| 0))
    }

    /// Appends all of `values`, in order, blocking while the queue is full: claims as
    /// many slots as are free at a time (see [`try_push_slice`](Self::try_push_slice)).
    /// Values of other producers may come between the claims.
    ///
    /// # Errors
    ///
    /// With the number of values pushed before it: `Disconnected(n)` and `Corrupted(n)`
    /// as for [`push`](Self::push).
    pub fn push_slice(&self, values: &[T]) -> Result<(), PushError<usize>> {
        self.push_slice_waiting(values, Wait::Forever)
    }

    /// Appends all of `values`, waiting at most `timeout` in all for room.
    ///
    /// # Errors
    ///
    /// `Timeout(n)` with the number pushed in time, and those of
    /// [`push_slice`](Self::push_slice).
    pub fn push_slice_timeout(
        &self,
        values: &[T],
        timeout: Duration,
    ) -> Result<(), PushError<usize>> {
        self.push_slice_waiting(values, Wait::Until(Instant::now() + timeout))
    }

    fn push_slice_waiting(&self, values: &[T], wait: Wait) -> Result<(), PushError<usize>> {
        let mut done = 0;
        while done < values.len() {
            let rest = &values[done..];
            let pushed = match self.try_push_slice(rest) {
                Err(PushError::Full(_)) => self.push_until(0, wait, |q, _| q.try_push_slice(rest)),
                pushed => pushed,
            };
            match pushed {
                Ok(n) => done += n,
                Err(e) => return Err(e.map(|_| done)),
            }
        }
        Ok(())
    }

    /// One attempt to push a prefix of `values` in one claim, marked in this thread's lane.
    #[inline]
    fn push_range_once(&self, values: &[T]) -> Result<usize, PushFailure<()>> {
        let (member, k) = (self.member(), lane::index());
        let pushed =
            self.inner.ring.try_push_range_marked(values, |pos, n| member.mark(k, pos, n, false));
        self.after_claim(k, pushed.is_ok(), PUSHED);
        member.lengths[k].store(0, Ordering::Release);
        pushed
    }

    /// Takes as many values as are there right now into the front of `buf`, oldest
    /// first, in one claim (at most 255, and at most `buf.len()`); never blocks. Returns
    /// how many (0 for an empty `buf`).
    ///
    /// A consumer killed part-way through the claim loses the values it had not yet
    /// released; producers release their slots, as for a single pop.
    ///
    /// # Errors
    ///
    /// As [`try_pop`](Self::try_pop): `Empty` when not one value is there,
    /// `Disconnected`, `Corrupted`.
    pub fn try_pop_into(&self, buf: &mut [T]) -> Result<usize, PopError> {
        if buf.is_empty() {
            return Ok(0);
        }
        match self.pop_range_once(buf) {
            Ok(n) => Ok(n),
            Err(PopFailure::Empty) => self.empty(|| self.pop_range_once(buf)),
            Err(PopFailure::Corrupted) => Err(PopError::Corrupted),
        }
    }

    /// Takes the values that are there into the front of `buf` (as
    /// [`try_pop_into`](Self::try_pop_into)), blocking while the queue is empty. Returns
    /// how many, at least one (0 only for an empty `buf`).
    ///
    /// # Errors
    ///
    /// As [`pop`](Self::pop).
    pub fn pop_into(&self, buf: &mut [T]) -> Result<usize, PopError> {
        self.pop_into_waiting(buf, Wait::Forever)
    }

    /// As [`pop_into`](Self::pop_into), waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// `Timeout`, and those of [`pop`](Self::pop).
    pub fn pop_into_timeout(&self, buf: &mut [T], timeout: Duration) -> Result<usize, PopError> {
        self.pop_into_waiting(buf, Wait::For(timeout))
    }

    fn pop_into_waiting(&self, buf: &mut [T], wait: Wait) -> Result<usize, PopError> {
        match self.try_pop_into(buf) {
            Err(PopError::Empty) => self.pop_until(wait, |q| q.try_pop_into(buf)),
            done => done,
        }
    }

    /// One attempt to pop into a prefix of `buf` in one claim, marked in this thread's
    /// lane.
    #[inline]
    fn pop_range_once(&self, buf: &mut [T]) -> Result<usize, PopFailure> {
        let (member, k) = (self.member(), lane::index());
        let popped =
            self.inner.ring.try_pop_range_marked(buf, |pos, n| member.mark(k, pos, n, true));
        self.after_claim(k, popped.is_ok(), POPPED);
        member.lengths[k].store(0, Ordering::Release);
        popped
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
            hole.is_some_and(|pos| q.only_dead_cover(pos, false))
                || q.alone_after(&control.pushers, q.inner.inherited.0, 1)
        } else {
            let hole = q.inner.ring.unreleased_at_tail();
            hole.is_some_and(|pos| q.only_dead_cover(pos, true))
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
