use std::marker::PhantomData;
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use crate::ShmSafe;
use crate::error::{ChunkError, OpenError, PopError, PushError};
use crate::layout::CachePadded;
use crate::layout::ObjectKind;
use crate::loom::UnsafeCell;
use crate::loom::{AtomicU64, Ordering};
use crate::rings::RingLayout;
use crate::rings::doorbell;
use crate::rings::keeper::RoleClaim;
use crate::rings::side::{EndSource, Side};
use crate::rings::spsc::ring::{Indices, PopFailure, PushFailure, Reader, RingMemory, Writer};
use crate::rings::wait::wait_loop;
use crate::segment::constructors::constructors;
use crate::segment::{Element, Expected, Options, Segment, SegmentInfo};
use crate::wake::futex::{Deadline, Wait};
use crate::wake::many::Source;

/// The segment payload before the slots.
#[repr(C)]
struct Control {
    indices: Indices,
    producer: CachePadded<Side>,
    consumer: CachePadded<Side>,
}

#[cfg(not(loom))]
const _: () = assert!(size_of::<Control>() == 512 && align_of::<Control>() == 128);

/// The mapping and typed views of one queue, shared by both ends' code.
struct Queue<T> {
    /// Shared with the wait-set entries of this queue, which keep the mapping alive.
    segment: std::sync::Arc<Segment>,
    capacity: u64,
    _holds: PhantomData<T>,
}

impl<T: bytemuck::Pod + crate::ShmSafe> Queue<T> {
    const SLOTS_AT: usize = size_of::<Control>().next_multiple_of(align_of::<T>());

    fn expected() -> Expected {
        Expected {
            kind: ObjectKind::SpscQueue,
            element: Element {
                size: size_of::<T>() as u64,
                align: align_of::<T>().max(align_of::<Control>()) as u32,
                type_tag: <T as ShmSafe>::type_tag(),
            },
        }
    }

    fn layout() -> RingLayout {
        RingLayout {
            expected: Self::expected(),
            slots_at: Self::SLOTS_AT,
            slot_size: size_of::<T>(),
            min_capacity: 1,
        }
    }

    fn create(name: &str, capacity: usize, opts: &Options) -> Result<Self, OpenError> {
        Segment::create(name, &Self::layout().spec(capacity)?, opts, |_| {}).and_then(Self::adopt)
    }

    fn open(name: &str, opts: &Options) -> Result<Self, OpenError> {
        Segment::open(name, &Self::expected(), opts).and_then(Self::adopt)
    }

    fn open_or_create(name: &str, capacity: usize, opts: &Options) -> Result<Self, OpenError> {
        Segment::open_or_create(name, &Self::layout().spec(capacity)?, opts, |_| {})
            .and_then(Self::adopt)
    }

    /// Checks what the segment layer leaves to the object: a power-of-two capacity whose
    /// slots exactly fill the payload.
    fn adopt(segment: Segment) -> Result<Self, OpenError> {
        let capacity = Self::layout().capacity_of(&segment)?;
        Ok(Self { segment: std::sync::Arc::new(segment), capacity, _holds: PhantomData })
    }

    fn control(&self) -> &Control {
        // SAFETY: the payload starts with a Control (placed by `spec`, size checked by
        // `adopt`), 128-byte aligned, valid for every bit pattern (atomics and integers).
        unsafe { &*self.segment.payload().as_ptr().cast::<Control>() }
    }

    fn ring(&self) -> RingMemory<T> {
        let base = self.segment.payload();
        // SAFETY: indices at the payload's start; `capacity` slots at SLOTS_AT, inside the
        // payload (checked by `adopt`) and aligned for T; the mapping lives as long as the
        // handle that owns this Queue and the ring ends built from it.
        unsafe {
            let slots = base.add(Self::SLOTS_AT).cast::<UnsafeCell<T>>();
            RingMemory::new(NonNull::from(&self.control().indices), slots, self.capacity)
        }
    }
}

/// Where an end's wait-set entry looks: the positions, the capacity, and which end.
struct Look {
    indices: NonNull<Indices>,
    capacity: u64,
    /// The consumer's entry (ready to pop), else the producer's (ready to push).
    pop: bool,
    /// The other end's position as last read. Positions only move forward, so what a
    /// stale copy allows still holds: the streaming case then reads no cache line the
    /// other end writes (as the ring ends cache it too).
    other_seen: AtomicU64,
}

impl Look {
    fn entry<T: bytemuck::Pod + crate::ShmSafe>(queue: &Queue<T>, pop: bool) -> Box<dyn Source> {
        let control = queue.control();
        let (me, peer) = if pop {
            (&control.consumer, &control.producer)
        } else {
            (&control.producer, &control.consumer)
        };
        let look = Look {
            indices: NonNull::from(&control.indices),
            capacity: queue.capacity,
            pop,
            other_seen: AtomicU64::new(0),
        };
        // SAFETY: the sides and the positions are in the queue's mapping.
        unsafe { EndSource::boxed(&queue.segment, me, peer, look, doorbell::ANY) }
    }
}

impl crate::rings::side::Look for Look {
    #[inline]
    fn ready(&self) -> bool {
        // SAFETY: into the mapping the entry keeps alive (`EndSource::boxed`).
        let indices = unsafe { self.indices.as_ref() };
        let (own, other) =
            if self.pop { (&indices.head, &indices.tail) } else { (&indices.tail, &indices.head) };
        // This end's own position: written by this process.
        let own = own.load(Ordering::Relaxed);
        let used = |other: u64| {
            if self.pop { other.wrapping_sub(own) } else { own.wrapping_sub(other) }
        };
        let seen = used(self.other_seen.load(Ordering::Relaxed));
        let sure =
            if self.pop { (1..=self.capacity).contains(&seen) } else { seen < self.capacity };
        if sure {
            return true;
        }
        // Acquire on the other end's position, as the ring's own reads.
        let now = other.load(Ordering::Acquire);
        self.other_seen.store(now, Ordering::Relaxed);
        // Garbage positions (used > capacity) count as ready: the call says Corrupted.
        if self.pop { used(now) != 0 } else { used(now) != self.capacity }
    }
}

impl<T: bytemuck::Pod + crate::ShmSafe> crate::waitset::CanPop for Consumer<T> {}
impl<T: bytemuck::Pod + crate::ShmSafe> crate::waitset::sealed::CanPop for Consumer<T> {
    fn pop_source(&self) -> Box<dyn Source> {
        Look::entry(&self.queue, true)
    }
}

impl<T: bytemuck::Pod + crate::ShmSafe> crate::waitset::CanPush for Producer<T> {}
impl<T: bytemuck::Pod + crate::ShmSafe> crate::waitset::sealed::CanPush for Producer<T> {
    fn push_source(&self) -> Box<dyn Source> {
        Look::entry(&self.queue, false)
    }
}

/// What both ends share: the constructor family, peer awareness, capacity, info, Debug.
macro_rules! queue_end_common {
    ($end:ident, $what:literal, $peer:ident, $peer_what:literal) => {
        impl<T: bytemuck::Pod + crate::ShmSafe> $end<T> {
            constructors! {
                returns Self, what "queue";
                #[doc = concat!("Creates the queue `name` in `/dev/shm` with room for `capacity` values (rounded up to a power of two) and takes its ", $what, " role.")]
                ///
                /// # Errors
                ///
                /// `AlreadyExists`, `InvalidName`, `NoSpace`, `PermissionDenied`, and
                /// `InvalidCapacity` for a capacity of 0 or above 2^40.
                create / create_with (capacity: usize) = |name, capacity, opts| {
                    Self::attach(Queue::create(name, capacity, opts)?)
                };
                #[doc = concat!("Opens the existing queue `name` in `/dev/shm` and takes its ", $what, " role.")]
                ///
                /// # Errors
                ///
                /// `Busy` if a live handle holds the role; `NotFound`, `KindMismatch`,
                /// `LayoutMismatch` (another element type), `NotInitialized`, `Corrupted`, ...
                /// as [`OpenError`] describes.
                open / open_with () = |name, opts| Self::attach(Queue::open(name, opts)?);
                /// Opens the queue `name`, or creates it with `capacity` if absent; race-free.
                /// An existing queue keeps its own capacity.
                ///
                /// # Errors
                ///
                /// Those of `create` and `open`.
                open_or_create / open_or_create_with (capacity: usize) = |name, capacity, opts| {
                    Self::attach(Queue::open_or_create(name, capacity, opts)?)
                };
            }

            #[doc = concat!("Whether the ", $peer_what, " had attached and is gone.")]
            pub fn is_abandoned(&self) -> bool {
                self.$peer().gone()
            }

            #[doc = concat!("Whether a live handle holds the ", $peer_what, "'s end right now.")]
            ///
            /// Until one first does, blocking calls simply wait (their timeouts apply) and
            /// never say `Disconnected`; use [`wait_connected`](Self::wait_connected) to
            /// wait for it with a bound, so that a peer that never comes (a typo in its
            /// name) is noticed.
            pub fn is_connected(&self) -> bool {
                self.$peer().is_held()
            }

            #[doc = concat!("Waits at most `timeout` for a live handle to hold the ", $peer_what, "'s end; returns whether one does.")]
            ///
            /// # Examples
            ///
            /// ```
            /// use std::time::Duration;
            /// use shmsync::{Options, spsc};
            ///
            /// # let opts = Options::new().dir(std::env::temp_dir());
            #[doc = concat!("# let name = format!(\"doc-connected-", stringify!($end), "-{}\", std::process::id());")]
            /// let mut tx = spsc::Producer::<u64>::create_with(&name, 8, &opts)?;
            /// let rx = spsc::Consumer::<u64>::open_with(&name, &opts)?; // usually another process
            /// assert!(tx.wait_connected(Duration::from_secs(1)));
            /// assert!(rx.is_connected());
            /// drop((tx, rx));
            /// spsc::Producer::<u64>::unlink_with(&name, &opts)?;
            /// # Ok::<(), Box<dyn std::error::Error>>(())
            /// ```
            pub fn wait_connected(&self, timeout: Duration) -> bool {
                self.$peer().wait_held(&Deadline::after(timeout))
            }

            #[doc = concat!("Waits until `deadline` at most for a live handle to hold the ", $peer_what, "'s end; returns whether one does.")]
            pub fn wait_connected_deadline(&self, deadline: Instant) -> bool {
                self.$peer().wait_held(&Deadline::at(deadline))
            }

            /// The number of values the queue holds at most.
            pub fn capacity(&self) -> usize {
                self.queue.capacity as usize
            }

            /// Facts about the segment.
            pub fn info(&self) -> &SegmentInfo {
                self.queue.segment.info()
            }

            /// For an anonymous queue ([`Producer::create_anonymous`]): its descriptor as
            /// a child process inherits it. `None` for a named queue (open it by name).
            pub fn inheritable(&self) -> Option<crate::Inheritable> {
                self.queue.segment.inheritable()
            }

            #[doc = concat!("Opens the ", $what, "'s end of an anonymous queue whose descriptor this process inherited (see [`Inheritable`](crate::Inheritable)).")]
            ///
            /// # Errors
            ///
            /// `NotFound` if the descriptor is not open here (the child was not started
            /// with `inherit`), `Corrupted` if it is not a sealed shmsync segment, the
            /// layout errors of `open`, and `Busy` if the end is held.
            pub fn open_inherited(token: crate::Inheritable) -> Result<Self, OpenError> {
                let segment = Segment::open_inherited(token, &Queue::<T>::expected())?;
                Self::attach(Queue::adopt(segment)?)
            }
        }

        impl<T: bytemuck::Pod + crate::ShmSafe> std::fmt::Debug for $end<T> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($end))
                    .field("name", &self.info().name())
                    .field("capacity", &self.capacity())
                    .finish_non_exhaustive()
            }
        }
    };
}

/// The producing end of an SPSC queue.
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use shmsync::spsc;
/// # let opts = shmsync::Options::new().dir(std::env::temp_dir());
/// # let name = format!("doc-{}-{}", "producer", std::process::id());
/// let mut tx = spsc::Producer::<u64>::create_with(&name, 64, &opts)?;
/// let mut rx = spsc::Consumer::<u64>::open_with(&name, &opts)?; // usually another process
/// tx.push(1).unwrap(); // blocks only while full
/// tx.push_timeout(2, Duration::from_secs(1)).unwrap();
/// assert_eq!((rx.pop().unwrap(), rx.pop().unwrap()), (1, 2));
/// # drop((tx, rx));
/// # spsc::Producer::<u64>::unlink_with(&name, &opts)?;
/// # Ok::<(), shmsync::OpenError>(())
/// ```
pub struct Producer<T: bytemuck::Pod + crate::ShmSafe> {
    // Field order is drop order: the role is released before the mapping goes.
    _claim: RoleClaim,
    writer: Writer<T>,
    /// The consumer's side of the control block, looked up once: every push reads it.
    consumer: NonNull<Side>,
    queue: Queue<T>,
}

// SAFETY: the handle owns the producing role; the mapping is shared memory usable from
// any thread, and the role is held by the process's keeper, not by a thread.
unsafe impl<T: bytemuck::Pod + crate::ShmSafe + Send> Send for Producer<T> {}

queue_end_common!(Producer, "producer", consumer, "consumer");

impl<T: bytemuck::Pod + crate::ShmSafe> Producer<T> {
    /// An unnamed queue (a memfd segment) with this end taken: the descriptor hands the
    /// queue to a child process, which opens the consumer's end with
    /// [`Consumer::open_fd`].
    pub(crate) fn create_anonymous_with_fd(
        label: &str,
        capacity: usize,
    ) -> Result<(Self, std::os::fd::OwnedFd), OpenError> {
        let spec = Queue::<T>::layout().spec(capacity)?;
        let (segment, fd) = Segment::create_anonymous(label, &spec, |_| {})?;
        Ok((Self::attach(Queue::adopt(segment)?)?, fd))
    }

    /// Creates a queue with no name, in a sealed `memfd`: nothing in `/dev/shm`, nothing
    /// to clean up (it goes with the last descriptor and mapping), and no holder can
    /// shrink or grow it (the seals refuse `ftruncate`, so nobody can make the others'
    /// mappings fault). Hand it to a child with [`inheritable`](Self::inheritable) and
    /// [`process::Builder::inherit`](crate::process::Builder::inherit); the child opens
    /// its end with [`Consumer::open_inherited`].
    ///
    /// # Errors
    ///
    /// `InvalidCapacity`, `NoSpace`, and `Io` if the memfd cannot be made.
    pub fn create_anonymous(capacity: usize) -> Result<Self, OpenError> {
        Self::create_anonymous_with_fd("shmsync-spsc", capacity).map(|(q, _)| q)
    }

    fn attach(queue: Queue<T>) -> Result<Self, OpenError> {
        // SAFETY: the claim is dropped before the mapping (field order of the handle).
        let (claim, _) = unsafe { queue.control().producer.claim() }
            .map_err(|e| e.into_open_error(queue.segment.info().name(), "producer"))?;
        // SAFETY: our claim makes this the only writer of the ring.
        let writer = unsafe { Writer::attach(queue.ring()) }.map_err(|_| OpenError::Corrupted)?;
        let consumer = NonNull::from(&*queue.control().consumer);
        Ok(Self { _claim: claim, writer, consumer, queue })
    }

    #[inline]
    fn consumer(&self) -> &Side {
        // SAFETY: points into the mapping, which `self.queue` keeps alive.
        unsafe { self.consumer.as_ref() }
    }

    /// This end's side and the consumer's, for a wait (detached from `self`'s borrow so
    /// that the wait can also borrow the ring end mutably; used only while `self` lives).
    fn sides<'a>(&self) -> (&'a Side, &'a Side) {
        let control = NonNull::from(self.queue.control());
        // SAFETY: both point into the mapping, which lives as long as `self`; the wait
        // that uses them borrows `self` for its whole run.
        unsafe { (&control.as_ref().producer, self.consumer.as_ref()) }
    }

    /// Appends `value` if there is room; never blocks, no syscall unless the consumer
    /// sleeps.
    ///
    /// # Errors
    ///
    /// `Full(value)`; `Disconnected(value)` once the consumer had attached and is gone;
    /// `Corrupted(value)` if the shared state is inconsistent.
    #[inline]
    pub fn try_push(&mut self, value: T) -> Result<(), PushError<T>> {
        if self.consumer().gone() {
            return Err(PushError::Disconnected(value));
        }
        match self.writer.try_push(value) {
            Ok(()) => {
                self.consumer().wake();
                Ok(())
            }
            Err(PushFailure::Full(v)) => Err(PushError::Full(v)),
            Err(PushFailure::Corrupted(v)) => Err(PushError::Corrupted(v)),
        }
    }

    /// Appends `value`, blocking while the queue is full.
    ///
    /// # Errors
    ///
    /// `Disconnected(value)` once the consumer is gone; `Corrupted(value)`.
    #[inline]
    pub fn push(&mut self, value: T) -> Result<(), PushError<T>> {
        self.push_waiting(value, Wait::Forever)
    }

    /// Appends `value`, waiting at most `timeout` for room.
    ///
    /// # Errors
    ///
    /// `Timeout(value)`, and those of [`push`](Self::push).
    #[inline]
    pub fn push_timeout(&mut self, value: T, timeout: Duration) -> Result<(), PushError<T>> {
        self.push_waiting(value, Wait::For(timeout))
    }

    /// Appends `value`, waiting at most until `deadline` for room.
    ///
    /// # Errors
    ///
    /// As [`push_timeout`](Self::push_timeout).
    #[inline]
    pub fn push_deadline(&mut self, value: T, deadline: Instant) -> Result<(), PushError<T>> {
        self.push_waiting(value, Wait::Until(deadline))
    }

    /// A push that may wait as `wait` says: the streaming case inline, waiting out of
    /// line.
    #[inline]
    fn push_waiting(&mut self, value: T, wait: Wait) -> Result<(), PushError<T>> {
        match self.try_push(value) {
            Err(PushError::Full(value)) => self.push_until(value, wait),
            done => done,
        }
    }

    #[inline(never)]
    fn push_until(&mut self, value: T, wait: Wait) -> Result<(), PushError<T>> {
        let (me, peer) = self.sides();
        wait_loop(
            self,
            wait,
            true,
            |tx| match tx.try_push(value) {
                Err(PushError::Full(_)) => None,
                done => Some(done),
            },
            |tx| tx.writer.free(1).map_or(true, |free| free > 0),
            |deadline, room| me.sleep(peer, deadline, room),
        )
        .unwrap_or(Err(PushError::Timeout(value)))
    }

    /// Appends `value`, awaiting room while the queue is full (feature `async`, any
    /// executor). Room already there costs no syscall. Cancel-safe: a dropped future has
    /// pushed nothing (the value goes with it).
    ///
    /// # Errors
    ///
    /// As [`push`](Self::push).
    #[cfg(all(feature = "async", not(loom)))]
    pub async fn push_async(&mut self, value: T) -> Result<(), PushError<T>> {
        let mut waits = crate::waitset::reactor::Waits::new();
        let mut value = value;
        loop {
            match self.try_push(value) {
                Err(PushError::Full(v)) => value = v,
                done => return done,
            }
            waits.next(Look::entry(&self.queue, false)).await;
        }
    }

    /// Values in the queue, as last seen by the producer (refreshed now).
    pub fn len(&mut self) -> usize {
        let capacity = self.queue.capacity;
        self.writer.free(capacity).map_or(0, |free| (capacity - free) as usize)
    }

    /// Whether the queue is empty right now.
    pub fn is_empty(&mut self) -> bool {
        self.len() == 0
    }

    /// Whether the queue is full right now.
    pub fn is_full(&mut self) -> bool {
        self.len() == self.capacity()
    }

    /// Lends the next `n` free slots to fill in place (zero-copy); nothing is published
    /// until [`WriteChunk::commit`]. Never blocks.
    ///
    /// # Errors
    ///
    /// `TooFewSlots` if fewer than `n` are free, `Disconnected` once the consumer is
    /// gone, `Corrupted`.
    pub fn write_chunk(&mut self, n: usize) -> Result<WriteChunk<'_, T>, ChunkError> {
        if self.consumer().gone() {
            return Err(ChunkError::Disconnected);
        }
        match self.writer.slots(n) {
            Ok(Some(_)) => Ok(WriteChunk { producer: self, n }),
            Ok(None) => Err(ChunkError::TooFewSlots),
            Err(_) => Err(ChunkError::Corrupted),
        }
    }
}

/// Free slots lent by [`Producer::write_chunk`], to fill in place. Dropping it publishes
/// nothing.
/// # Examples
///
/// ```
/// use shmsync::spsc;
/// # let opts = shmsync::Options::new().dir(std::env::temp_dir());
/// # let name = format!("doc-{}-{}", "writechunk", std::process::id());
/// let mut tx = spsc::Producer::<u32>::create_with(&name, 8, &opts)?;
/// let mut rx = spsc::Consumer::<u32>::open_with(&name, &opts)?;
/// let mut chunk = tx.write_chunk(3).unwrap();
/// let (first, second) = chunk.as_mut_slices(); // two parts around the ring's end
/// for (i, slot) in first.iter_mut().chain(second).enumerate() {
///     *slot = i as u32 * 10;
/// }
/// chunk.commit_all(); // published at once
/// assert_eq!([rx.pop().unwrap(), rx.pop().unwrap(), rx.pop().unwrap()], [0, 10, 20]);
/// # drop((tx, rx));
/// # spsc::Producer::<u32>::unlink_with(&name, &opts)?;
/// # Ok::<(), shmsync::OpenError>(())
/// ```
#[derive(Debug)]
pub struct WriteChunk<'a, T: bytemuck::Pod + crate::ShmSafe> {
    producer: &'a mut Producer<T>,
    n: usize,
}

impl<T: bytemuck::Pod + crate::ShmSafe> WriteChunk<'_, T> {
    /// The slots, as two slices: up to the end of the ring, then from its start (often
    /// empty). They hold whatever was there before: overwrite what you commit.
    pub fn as_mut_slices(&mut self) -> (&mut [T], &mut [T]) {
        match self.producer.writer.slots(self.n) {
            Ok(Some(slices)) => slices,
            // The free space only grows while we hold the chunk and the check was done
            // when it was made.
            _ => unreachable!("a chunk's slots stay free"),
        }
    }

    /// The number of slots lent.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether the chunk has no slots.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Publishes the first `k` slots to the consumer, in one store.
    ///
    /// # Panics
    ///
    /// If `k` exceeds the chunk's length.
    pub fn commit(self, k: usize) {
        assert!(k <= self.n, "commit({k}) of a chunk of {}", self.n);
        self.producer.writer.commit(k);
        self.producer.consumer().wake();
    }

    /// Publishes every slot of the chunk.
    pub fn commit_all(self) {
        let n = self.n;
        self.commit(n);
    }
}

/// The consuming end of an SPSC queue.
/// # Examples
///
/// ```
/// use std::time::{Duration, Instant};
/// use shmsync::{PopError, spsc};
/// # let opts = shmsync::Options::new().dir(std::env::temp_dir());
/// # let name = format!("doc-{}-{}", "consumer", std::process::id());
/// let mut rx = spsc::Consumer::<u64>::create_with(&name, 64, &opts)?; // either end may create
/// let mut tx = spsc::Producer::<u64>::open_with(&name, &opts)?;
/// tx.try_push(7).unwrap();
/// assert_eq!(rx.pop_timeout(Duration::from_secs(1)), Ok(7));
/// let soon = Instant::now() + Duration::from_millis(5);
/// assert_eq!(rx.pop_deadline(soon), Err(PopError::Timeout));
/// # drop((tx, rx));
/// # spsc::Consumer::<u64>::unlink_with(&name, &opts)?;
/// # Ok::<(), shmsync::OpenError>(())
/// ```
pub struct Consumer<T: bytemuck::Pod + crate::ShmSafe> {
    _claim: RoleClaim,
    reader: Reader<T>,
    /// The producer's side of the control block, looked up once: every pop reads it.
    producer: NonNull<Side>,
    queue: Queue<T>,
}

// SAFETY: as for `Producer`.
unsafe impl<T: bytemuck::Pod + crate::ShmSafe + Send> Send for Consumer<T> {}

queue_end_common!(Consumer, "consumer", producer, "producer");

impl<T: bytemuck::Pod + crate::ShmSafe> Consumer<T> {
    /// Takes the consumer's end of the unnamed queue behind an inherited descriptor
    /// ([`Producer::create_anonymous`]).
    pub(crate) fn open_fd(fd: &std::os::fd::OwnedFd, label: &str) -> Result<Self, OpenError> {
        Self::attach(Queue::adopt(Segment::open_fd(fd, label, &Queue::<T>::expected())?)?)
    }

    fn attach(queue: Queue<T>) -> Result<Self, OpenError> {
        // SAFETY: the claim is dropped before the mapping (field order of the handle).
        let (claim, _) = unsafe { queue.control().consumer.claim() }
            .map_err(|e| e.into_open_error(queue.segment.info().name(), "consumer"))?;
        // SAFETY: our claim makes this the only reader of the ring.
        let reader = unsafe { Reader::attach(queue.ring()) }.map_err(|_| OpenError::Corrupted)?;
        let producer = NonNull::from(&*queue.control().producer);
        Ok(Self { _claim: claim, reader, producer, queue })
    }

    #[inline]
    fn producer(&self) -> &Side {
        // SAFETY: points into the mapping, which `self.queue` keeps alive.
        unsafe { self.producer.as_ref() }
    }

    /// This end's side and the producer's, for a wait (as `Producer::sides`).
    fn sides<'a>(&self) -> (&'a Side, &'a Side) {
        let control = NonNull::from(self.queue.control());
        // SAFETY: as in `Producer::sides`.
        unsafe { (&control.as_ref().consumer, self.producer.as_ref()) }
    }

    /// Takes the oldest value if there is one; never blocks, no syscall unless the
    /// producer sleeps.
    ///
    /// # Errors
    ///
    /// `Empty`; `Disconnected` once the queue is empty and the producer had attached and
    /// is gone; `Corrupted`.
    #[inline]
    pub fn try_pop(&mut self) -> Result<T, PopError> {
        match self.reader.try_pop() {
            Ok(v) => {
                self.producer().wake();
                Ok(v)
            }
            Err(PopFailure::Corrupted) => Err(PopError::Corrupted),
            Err(PopFailure::Empty) if self.producer().gone() => {
                // Everything it committed before leaving is visible now: drain first.
                match self.reader.try_pop() {
                    Ok(v) => Ok(v),
                    Err(PopFailure::Corrupted) => Err(PopError::Corrupted),
                    Err(PopFailure::Empty) => Err(PopError::Disconnected),
                }
            }
            Err(PopFailure::Empty) => Err(PopError::Empty),
        }
    }

    /// Takes the oldest value, blocking while the queue is empty.
    ///
    /// # Errors
    ///
    /// `Disconnected` once the queue is empty and the producer is gone (woken within
    /// about a millisecond of its death); `Corrupted`.
    #[inline]
    pub fn pop(&mut self) -> Result<T, PopError> {
        self.pop_waiting(Wait::Forever)
    }

    /// Takes the oldest value, waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// `Timeout`, and those of [`pop`](Self::pop).
    #[inline]
    pub fn pop_timeout(&mut self, timeout: Duration) -> Result<T, PopError> {
        self.pop_waiting(Wait::For(timeout))
    }

    /// Takes the oldest value, waiting at most until `deadline`.
    ///
    /// # Errors
    ///
    /// As [`pop_timeout`](Self::pop_timeout).
    #[inline]
    pub fn pop_deadline(&mut self, deadline: Instant) -> Result<T, PopError> {
        self.pop_waiting(Wait::Until(deadline))
    }

    /// A pop that may wait as `wait` says: the streaming case inline, waiting out of line.
    #[inline]
    fn pop_waiting(&mut self, wait: Wait) -> Result<T, PopError> {
        match self.try_pop() {
            Err(PopError::Empty) => self.pop_until(wait),
            done => done,
        }
    }

    #[inline(never)]
    fn pop_until(&mut self, wait: Wait) -> Result<T, PopError> {
        let (me, peer) = self.sides();
        wait_loop(
            self,
            wait,
            true,
            |rx| match rx.try_pop() {
                Err(PopError::Empty) => None,
                done => Some(done),
            },
            |rx| rx.reader.available(1).map_or(true, |n| n > 0),
            |deadline, ready| me.sleep(peer, deadline, ready),
        )
        .unwrap_or(Err(PopError::Timeout))
    }

    /// Takes the oldest value, awaiting one while the queue is empty (feature `async`, any
    /// executor). A value already there is taken at once, with no syscall; otherwise the
    /// call spins briefly, as [`pop`](Self::pop) does, then awaits the process's waiter
    /// thread. Cancel-safe: a dropped future has taken nothing.
    ///
    /// # Errors
    ///
    /// As [`pop`](Self::pop).
    #[cfg(all(feature = "async", not(loom)))]
    pub async fn pop_async(&mut self) -> Result<T, PopError> {
        let mut waits = crate::waitset::reactor::Waits::new();
        loop {
            match self.try_pop() {
                Err(PopError::Empty) => {}
                done => return done,
            }
            waits.next(Look::entry(&self.queue, true)).await;
        }
    }

    /// Values ready to read (refreshed now).
    pub fn len(&mut self) -> usize {
        self.reader.available(self.queue.capacity).map_or(0, |n| n as usize)
    }

    /// Whether the queue is empty right now.
    pub fn is_empty(&mut self) -> bool {
        self.len() == 0
    }

    /// Whether the queue is full right now.
    pub fn is_full(&mut self) -> bool {
        self.len() == self.capacity()
    }

    /// Lends the next `n` values to read in place (zero-copy); their slots are freed only
    /// by [`ReadChunk::commit`]. Never blocks.
    ///
    /// # Errors
    ///
    /// `TooFewSlots` if fewer than `n` values are ready, `Disconnected` if none are and
    /// the producer is gone, `Corrupted`.
    pub fn read_chunk(&mut self, n: usize) -> Result<ReadChunk<'_, T>, ChunkError> {
        let producer_gone = self.producer().gone();
        let ready = self.reader.available(n as u64).map_err(|_| ChunkError::Corrupted)?;
        if ready >= n as u64 {
            return Ok(ReadChunk { consumer: self, n });
        }
        if producer_gone && ready == 0 {
            return Err(ChunkError::Disconnected);
        }
        Err(ChunkError::TooFewSlots)
    }
}

/// Values lent by [`Consumer::read_chunk`], to read in place. Dropping it frees nothing.
///
/// The values are read straight from shared memory: a hostile producer could change
/// them while you look. Copy them out first if that matters.
/// # Examples
///
/// ```
/// use shmsync::spsc;
/// # let opts = shmsync::Options::new().dir(std::env::temp_dir());
/// # let name = format!("doc-{}-{}", "readchunk", std::process::id());
/// let mut tx = spsc::Producer::<u32>::create_with(&name, 8, &opts)?;
/// let mut rx = spsc::Consumer::<u32>::open_with(&name, &opts)?;
/// for v in [1, 2, 3] {
///     tx.try_push(v).unwrap();
/// }
/// let mut chunk = rx.read_chunk(3).unwrap();
/// let (first, second) = chunk.as_slices(); // read in place
/// let sum: u32 = first.iter().chain(second).sum();
/// chunk.commit(2); // release the first two; the third stays
/// assert_eq!(sum, 6);
/// assert_eq!(rx.pop(), Ok(3));
/// # drop((tx, rx));
/// # spsc::Producer::<u32>::unlink_with(&name, &opts)?;
/// # Ok::<(), shmsync::OpenError>(())
/// ```
#[derive(Debug)]
pub struct ReadChunk<'a, T: bytemuck::Pod + crate::ShmSafe> {
    consumer: &'a mut Consumer<T>,
    n: usize,
}

impl<T: bytemuck::Pod + crate::ShmSafe> ReadChunk<'_, T> {
    /// The values, as two slices: up to the end of the ring, then from its start.
    pub fn as_slices(&mut self) -> (&[T], &[T]) {
        match self.consumer.reader.slots(self.n) {
            Ok(Some(slices)) => slices,
            // Ready values only grow while we hold the chunk.
            _ => unreachable!("a chunk's values stay ready"),
        }
    }

    /// The number of values lent.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether the chunk has no values.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Frees the first `k` slots for the producer, in one store.
    ///
    /// # Panics
    ///
    /// If `k` exceeds the chunk's length.
    pub fn commit(self, k: usize) {
        assert!(k <= self.n, "commit({k}) of a chunk of {}", self.n);
        self.consumer.reader.consume(k);
        self.consumer.producer().wake();
    }

    /// Frees every slot of the chunk.
    pub fn commit_all(self) {
        let n = self.n;
        self.commit(n);
    }
}
