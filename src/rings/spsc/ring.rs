//! The single-producer single-consumer ring algorithm, over memory the caller provides
//! (a segment's payload, or the heap in tests).
//!
//! After rtrb (`src/lib.rs`): positions are monotonic `u64`s (they never wrap in
//! practice: 2^64 elements), the capacity is a power of two and a slot is
//! `position & (capacity - 1)`. Each side keeps its own position privately and a cached
//! copy of the other's, refreshed only when the cache says the ring is full (producer) or
//! empty (consumer), so a steady stream costs one Release store per element, or per
//! chunk, and no read-modify-write.
//!
//! | shared field | written by | meaning |
//! |---|---|---|
//! | `head` | consumer | next position to read; all slots before it are free again |
//! | `tail` | producer | next position to write; all slots before it hold elements |
//!
//! Invariant: `tail - head` (wrapping) is in `0..=capacity`. The other side's position
//! is read from shared memory, so it may be anything: every read is checked against that
//! invariant and a violation is reported as `Corrupted`, never trusted.

use std::ptr::NonNull;

use crate::layout::CachePadded;
use crate::loom::{AtomicU64, Ordering, UnsafeCell};

/// The two shared positions, each on its own pair of cache lines.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct Indices {
    /// The consumer's position. Written only by the consumer.
    pub(crate) head: CachePadded<AtomicU64>,
    /// The producer's position. Written only by the producer.
    pub(crate) tail: CachePadded<AtomicU64>,
}

#[cfg(not(loom))]
const _: () = assert!(size_of::<Indices>() == 256 && align_of::<Indices>() == 128);

impl Indices {
    /// Head and tail, each read once, for `shmsync inspect`.
    #[cfg(not(loom))]
    pub(crate) fn snapshot(&self) -> (u64, u64) {
        (self.head.load(Ordering::Relaxed), self.tail.load(Ordering::Relaxed))
    }
}

/// The shared state was found inconsistent (a peer wrote garbage).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Corrupted;

/// Why a push handed its value back.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PushFailure<T> {
    Full(T),
    Corrupted(T),
}

/// Why a pop found nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PopFailure {
    Empty,
    Corrupted,
}

/// Up to `n` slots as two slices: up to the end of the ring, then from its start.
pub(crate) type Split<'a, T> = (&'a mut [T], &'a mut [T]);
/// As [`Split`], for reading.
pub(crate) type SplitRef<'a, T> = (&'a [T], &'a [T]);

/// Where one ring lives.
pub(crate) struct RingMemory<T> {
    indices: NonNull<Indices>,
    slots: NonNull<UnsafeCell<T>>,
    capacity: u64,
}

impl<T> Clone for RingMemory<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for RingMemory<T> {}

impl<T> RingMemory<T> {
    /// Describes a ring.
    ///
    /// # Safety
    ///
    /// `indices` and `capacity` slots at `slots` must stay valid (mapped and aligned) for
    /// as long as any end built on this value is used; `capacity` must be a power of two.
    /// Every bit pattern must be a valid `T` (the ends read slots a peer may have filled
    /// with anything).
    pub(crate) unsafe fn new(
        indices: NonNull<Indices>,
        slots: NonNull<UnsafeCell<T>>,
        capacity: u64,
    ) -> Self {
        debug_assert!(capacity.is_power_of_two());
        Self { indices, slots, capacity }
    }

    fn indices(&self) -> &Indices {
        // SAFETY: valid for the life of the ends (`new`'s contract).
        unsafe { self.indices.as_ref() }
    }

    fn slot(&self, position: u64) -> &UnsafeCell<T> {
        // The mask keeps every index inside the `capacity` slots, whatever `position` is.
        let index = (position & (self.capacity - 1)) as usize;
        // SAFETY: index < capacity, and the slots are valid (`new`'s contract).
        unsafe { &*self.slots.as_ptr().add(index) }
    }

    /// Checks `tail - head` against the capacity.
    fn check(&self, head: u64, tail: u64) -> Result<u64, Corrupted> {
        let used = tail.wrapping_sub(head);
        if used <= self.capacity { Ok(used) } else { Err(Corrupted) }
    }
}

/// The producing end: only one may exist per ring at a time.
pub(crate) struct Writer<T> {
    ring: RingMemory<T>,
    /// Our position; the shared `tail` is only ever a copy of it.
    tail: u64,
    /// The consumer's position as last read.
    head_seen: u64,
}

// SAFETY: the writer owns the producing role of the ring; the memory is shared memory
// meant to be used from any thread.
unsafe impl<T: Send> Send for Writer<T> {}

impl<T: Copy> Writer<T> {
    /// Takes up the producing role, continuing from the shared positions.
    ///
    /// # Safety
    ///
    /// No other `Writer` of this ring may be used while this one is.
    pub(crate) unsafe fn attach(ring: RingMemory<T>) -> Result<Self, Corrupted> {
        let i = ring.indices();
        // Acquire pairs with the Release stores of the ends that ran before us.
        let tail = i.tail.load(Ordering::Acquire);
        let head = i.head.load(Ordering::Acquire);
        ring.check(head, tail)?;
        Ok(Self { ring, tail, head_seen: head })
    }

    /// Free slots, refreshing the consumer's position if the cache shows fewer than
    /// `wanted`.
    pub(crate) fn free(&mut self, wanted: u64) -> Result<u64, Corrupted> {
        let cached = self.ring.capacity - self.tail.wrapping_sub(self.head_seen);
        if cached >= wanted {
            return Ok(cached);
        }
        // Acquire pairs with the Release in `Reader::release`: the consumer is done with
        // the slots before `head`.
        let head = self.ring.indices().head.load(Ordering::Acquire);
        let used = self.ring.check(head, self.tail)?;
        self.head_seen = head;
        Ok(self.ring.capacity - used)
    }

    /// Appends `value` unless the ring is full.
    pub(crate) fn try_push(&mut self, value: T) -> Result<(), PushFailure<T>> {
        match self.free(1) {
            Ok(0) => return Err(PushFailure::Full(value)),
            Ok(_) => {}
            Err(Corrupted) => return Err(PushFailure::Corrupted(value)),
        }
        // SAFETY: the slot at `tail` is free (tail - head < capacity) and only the writer
        // writes free slots.
        // A plain copy, as rtrb and crossbeam make: the protocol, not volatility, keeps
        // the two sides apart, and a volatile copy of a large element is lowered to
        // byte-sized moves.
        self.ring.slot(self.tail).with_mut(|p| unsafe { p.write(value) });
        self.publish(1);
        Ok(())
    }

    /// Publishes the next `n` slots, written in place by the caller.
    fn publish(&mut self, n: u64) {
        self.tail = self.tail.wrapping_add(n);
        // Only slots seen free are published: the ring never holds more than capacity.
        debug_assert!(self.tail.wrapping_sub(self.head_seen) <= self.ring.capacity);
        // Release pairs with the Acquire in `Reader::available`: the slot contents are
        // visible before the position that announces them.
        self.ring.indices().tail.store(self.tail, Ordering::Release);
    }

    /// The next `n` free slots as up to two slices (around the end of the ring), to be
    /// written in place and then published with [`commit`](Self::commit). `None` if fewer
    /// than `n` are free.
    #[cfg(not(loom))]
    pub(crate) fn slots(&mut self, n: usize) -> Result<Option<Split<'_, T>>, Corrupted> {
        if (n as u64) > self.free(n as u64)? {
            return Ok(None);
        }
        let (start, first, second) = self.ring.split(self.tail, n);
        // SAFETY: these `n` slots are free (checked above) and only the writer touches
        // free slots; `&mut self` keeps the slices unique. UnsafeCell<T> is
        // repr(transparent) over T outside loom.
        unsafe {
            let base = self.ring.slots.as_ptr().cast::<T>();
            Ok(Some((
                std::slice::from_raw_parts_mut(base.add(start), first),
                std::slice::from_raw_parts_mut(base, second),
            )))
        }
    }

    /// Publishes the first `k` slots handed out by [`slots`](Self::slots).
    ///
    /// # Panics
    ///
    /// If `k` exceeds the free slots (it can only exceed what `slots` handed out by
    /// misuse inside this crate).
    #[cfg(not(loom))]
    pub(crate) fn commit(&mut self, k: usize) {
        let free = self.ring.capacity - self.tail.wrapping_sub(self.head_seen);
        assert!(k as u64 <= free, "commit of more slots than were free");
        self.publish(k as u64);
    }
}

impl<T> RingMemory<T> {
    /// Splits `n` slots from `position` into (start index, length before the end, length
    /// after wrapping to the start).
    #[cfg(not(loom))]
    fn split(&self, position: u64, n: usize) -> (usize, usize, usize) {
        debug_assert!(n as u64 <= self.capacity, "a split of more slots than the ring has");
        let start = (position & (self.capacity - 1)) as usize;
        let first = n.min(self.capacity as usize - start);
        (start, first, n - first)
    }
}

/// The consuming end: only one may exist per ring at a time.
pub(crate) struct Reader<T> {
    ring: RingMemory<T>,
    /// Our position; the shared `head` is only ever a copy of it.
    head: u64,
    /// The producer's position as last read.
    tail_seen: u64,
}

// SAFETY: as for `Writer`.
unsafe impl<T: Send> Send for Reader<T> {}

impl<T: Copy> Reader<T> {
    /// Takes up the consuming role, continuing from the shared positions.
    ///
    /// # Safety
    ///
    /// No other `Reader` of this ring may be used while this one is.
    pub(crate) unsafe fn attach(ring: RingMemory<T>) -> Result<Self, Corrupted> {
        let i = ring.indices();
        let head = i.head.load(Ordering::Acquire);
        let tail = i.tail.load(Ordering::Acquire);
        ring.check(head, tail)?;
        Ok(Self { ring, head, tail_seen: tail })
    }

    /// Elements ready to read, refreshing the producer's position if the cache shows
    /// fewer than `wanted`.
    pub(crate) fn available(&mut self, wanted: u64) -> Result<u64, Corrupted> {
        let cached = self.tail_seen.wrapping_sub(self.head);
        if cached >= wanted {
            return Ok(cached);
        }
        // Acquire pairs with the Release in `Writer::publish`.
        let tail = self.ring.indices().tail.load(Ordering::Acquire);
        let ready = self.ring.check(self.head, tail)?;
        self.tail_seen = tail;
        Ok(ready)
    }

    /// Takes the oldest element, if any.
    pub(crate) fn try_pop(&mut self) -> Result<T, PopFailure> {
        match self.available(1) {
            Ok(0) => return Err(PopFailure::Empty),
            Ok(_) => {}
            Err(Corrupted) => return Err(PopFailure::Corrupted),
        }
        // SAFETY: the slot at `head` holds an element (head < tail) that the writer will
        // not touch until we release it; every bit pattern is a valid T.
        let value = self.ring.slot(self.head).with(|p| unsafe { p.read() });
        self.release(1);
        Ok(value)
    }

    /// Frees the next `n` slots for the producer.
    fn release(&mut self, n: u64) {
        self.head = self.head.wrapping_add(n);
        // Only elements seen published are released: head never passes the tail.
        debug_assert!(self.tail_seen.wrapping_sub(self.head) <= self.ring.capacity);
        // Release pairs with the Acquire in `Writer::free`: our reads of the slots happen
        // before the producer may overwrite them.
        self.ring.indices().head.store(self.head, Ordering::Release);
    }

    /// The next `n` elements as up to two slices, to be read in place and then freed with
    /// [`consume`](Self::consume). `None` if fewer than `n` are ready.
    #[cfg(not(loom))]
    pub(crate) fn slots(&mut self, n: usize) -> Result<Option<SplitRef<'_, T>>, Corrupted> {
        if (n as u64) > self.available(n as u64)? {
            return Ok(None);
        }
        let (start, first, second) = self.ring.split(self.head, n);
        // SAFETY: these `n` slots hold published elements that the writer leaves alone
        // until we release them; UnsafeCell<T> is repr(transparent) over T outside loom.
        unsafe {
            let base = self.ring.slots.as_ptr().cast::<T>().cast_const();
            Ok(Some((
                std::slice::from_raw_parts(base.add(start), first),
                std::slice::from_raw_parts(base, second),
            )))
        }
    }

    /// Frees the first `k` elements handed out by [`slots`](Self::slots).
    ///
    /// # Panics
    ///
    /// If `k` exceeds the ready elements.
    #[cfg(not(loom))]
    pub(crate) fn consume(&mut self, k: usize) {
        assert!(
            k as u64 <= self.tail_seen.wrapping_sub(self.head),
            "consume of more elements than were ready"
        );
        self.release(k as u64);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    /// A ring on the heap: indices plus `capacity` zeroed slots.
    struct HeapRing<T> {
        indices: Box<Indices>,
        slots: Box<[UnsafeCell<T>]>,
    }

    impl<T: Copy + Default> HeapRing<T> {
        fn new(capacity: usize) -> Self {
            Self {
                indices: Box::default(),
                slots: (0..capacity).map(|_| UnsafeCell::new(T::default())).collect(),
            }
        }

        fn memory(&self) -> RingMemory<T> {
            // SAFETY: both boxes outlive the ends made in each test; capacity is a power
            // of two; the test types are plain integers.
            unsafe {
                RingMemory::new(
                    NonNull::from(&*self.indices),
                    NonNull::new(self.slots.as_ptr().cast_mut()).unwrap(),
                    self.slots.len() as u64,
                )
            }
        }

        fn ends(&self) -> (Writer<T>, Reader<T>) {
            // SAFETY: one writer and one reader per ring.
            unsafe {
                (Writer::attach(self.memory()).unwrap(), Reader::attach(self.memory()).unwrap())
            }
        }
    }

    #[test]
    fn elements_come_out_in_order_across_the_wrap() {
        let ring = HeapRing::<u64>::new(4);
        let (mut w, mut r) = ring.ends();
        let mut next_out = 0;
        for v in 0..1000u64 {
            w.try_push(v).unwrap();
            if v % 3 == 2 {
                while let Ok(got) = r.try_pop() {
                    assert_eq!(got, next_out);
                    next_out += 1;
                }
            }
        }
        while let Ok(got) = r.try_pop() {
            assert_eq!(got, next_out);
            next_out += 1;
        }
        assert_eq!(next_out, 1000);
    }

    #[test]
    fn full_returns_the_value_and_empty_is_empty() {
        let ring = HeapRing::<u32>::new(2);
        let (mut w, mut r) = ring.ends();
        assert_eq!(r.try_pop(), Err(PopFailure::Empty));
        w.try_push(1).unwrap();
        w.try_push(2).unwrap();
        assert_eq!(w.try_push(3), Err(PushFailure::Full(3)));
        assert_eq!(r.try_pop(), Ok(1));
        w.try_push(3).unwrap();
        assert_eq!((r.try_pop(), r.try_pop(), r.try_pop()), (Ok(2), Ok(3), Err(PopFailure::Empty)));
    }

    #[test]
    fn chunks_split_around_the_end_and_commit_partly() {
        let ring = HeapRing::<u32>::new(8);
        let (mut w, mut r) = ring.ends();
        for v in 0..6 {
            w.try_push(v).unwrap();
        }
        for v in 0..6 {
            assert_eq!(r.try_pop(), Ok(v));
        }
        // Positions are at 6: five slots wrap as 2 + 3.
        let (a, b) = w.slots(5).unwrap().unwrap();
        assert_eq!((a.len(), b.len()), (2, 3));
        a.copy_from_slice(&[10, 11]);
        b.copy_from_slice(&[12, 13, 14]);
        w.commit(4); // the fifth stays unpublished
        assert_eq!(r.available(0).unwrap(), 0, "cached: not refreshed yet");
        let (a, b) = r.slots(4).unwrap().unwrap();
        assert_eq!((a, b), (&[10, 11][..], &[12, 13][..]));
        r.consume(3);
        assert_eq!(r.try_pop(), Ok(13));
        assert_eq!(r.try_pop(), Err(PopFailure::Empty));
        assert!(w.slots(9).unwrap().is_none(), "more than the capacity");
        assert!(r.slots(1).unwrap().is_none());
    }

    #[test]
    fn hostile_positions_are_corrupted_never_trusted() {
        let ring = HeapRing::<u64>::new(4);
        let (mut w, mut r) = ring.ends();
        // A peer claims the consumer is far ahead: the writer notices as soon as its
        // cache runs out and it reads the shared position.
        ring.indices.head.store(1_000, Ordering::Relaxed);
        for v in 0..4 {
            w.try_push(v).unwrap();
        }
        assert_eq!(w.try_push(9), Err(PushFailure::Corrupted(9)));
        assert_eq!(w.free(1), Err(Corrupted));
        // The reader keeps its own position, so it still reads what was written...
        for expected in 0..4 {
            assert_eq!(r.try_pop(), Ok(expected));
        }
        // ...until a peer claims more was written than the ring can hold.
        ring.indices.tail.store(u64::MAX / 2, Ordering::Relaxed);
        assert_eq!(r.try_pop(), Err(PopFailure::Corrupted));
        assert_eq!(r.slots(1), Err(Corrupted));
        // SAFETY: attaching a new end to the damaged ring only reports it.
        assert!(unsafe { Reader::attach(ring.memory()) }.is_err());
        // SAFETY: as above.
        assert!(unsafe { Writer::attach(ring.memory()) }.is_err());
    }

    #[test]
    fn a_producer_and_a_consumer_thread_agree() {
        let ring = HeapRing::<u64>::new(16);
        let (mut w, mut r) = ring.ends();
        let n = if cfg!(miri) { 200 } else { 200_000 };
        std::thread::scope(|s| {
            s.spawn(move || {
                for v in 0..n {
                    let mut v = v;
                    while let Err(PushFailure::Full(back)) = w.try_push(v) {
                        v = back;
                        std::thread::yield_now();
                    }
                }
            });
            let mut expected = 0;
            while expected < n {
                match r.try_pop() {
                    Ok(v) => {
                        assert_eq!(v, expected);
                        expected += 1;
                    }
                    Err(PopFailure::Empty) => std::thread::yield_now(),
                    Err(PopFailure::Corrupted) => panic!("corrupted"),
                }
            }
        });
    }
}

/// Loom model: whatever the interleaving, the consumer sees every element once, in order,
/// and never reads a slot the producer is writing (loom checks the slot cells).
#[cfg(all(test, loom))]
pub(crate) mod loom_tests {
    use super::*;
    use std::sync::Arc;

    /// The heap memory behind a ring built by [`heap_ring`]: keep it while the ends live.
    pub(crate) type Keep = (Arc<Indices>, Arc<[UnsafeCell<u32>]>);

    /// A ring of `capacity` `u32`s on the heap, for loom models: its two ends and the
    /// memory they point into.
    pub(crate) fn heap_ring(capacity: u64) -> (Writer<u32>, Reader<u32>, Keep) {
        let indices = Arc::new(Indices::default());
        let slots: Arc<[UnsafeCell<u32>]> = (0..capacity).map(|_| UnsafeCell::new(0)).collect();
        // SAFETY: the caller keeps the Arcs (returned) for as long as the ends live;
        // `capacity` slots.
        let memory = || unsafe {
            RingMemory::new(
                NonNull::from(&*indices),
                NonNull::new(slots.as_ptr().cast_mut()).unwrap(),
                capacity,
            )
        };
        // SAFETY: one writer, one reader.
        let (w, r) =
            unsafe { (Writer::attach(memory()).unwrap(), Reader::attach(memory()).unwrap()) };
        (w, r, (indices, slots))
    }

    #[test]
    fn push_pop_across_threads() {
        ::loom::model(|| {
            let (mut w, mut r, keep) = heap_ring(2);
            let producer = crate::loom::thread::spawn(move || {
                let _keep = keep;
                for v in 1..=3u32 {
                    let mut v = v;
                    while let Err(PushFailure::Full(back)) = w.try_push(v) {
                        v = back;
                        crate::loom::thread::yield_now();
                    }
                }
            });
            let mut expected = 1;
            while expected <= 3 {
                match r.try_pop() {
                    Ok(v) => {
                        assert_eq!(v, expected);
                        expected += 1;
                    }
                    Err(PopFailure::Empty) => crate::loom::thread::yield_now(),
                    Err(PopFailure::Corrupted) => panic!("corrupted"),
                }
            }
            producer.join().unwrap();
        });
    }
}
