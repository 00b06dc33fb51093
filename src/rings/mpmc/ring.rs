//! The multi-producer multi-consumer ring: Dmitry Vyukov's bounded MPMC queue
//! ("Bounded MPMC queue", 1024cores.net, 2010), as crossbeam's `ArrayQueue` implements
//! it, over memory the caller provides.
//!
//! Each slot carries a stamp saying whose turn it is:
//!
//! | stamp of slot `pos & mask` | meaning |
//! |---|---|
//! | `pos` | free for the producer that claims position `pos` |
//! | `pos + 1` | holds the element of position `pos`, for the consumer that claims it |
//! | `pos + capacity` | consumed: free for position `pos + capacity`, one lap later |
//!
//! A claim that is never finished (its process was killed) is finished by others, once
//! the caller (`src/rings/mpmc/`) knows the claimant is dead: a producer's claimed but
//! unpublished position is stepped over once it is the oldest
//! ([`skip_abandoned`](Ring::skip_abandoned)); a consumer's claimed but unreleased slot is
//! released once a producer needs it ([`release_abandoned`](Ring::release_abandoned)).
//!
//! A producer claims `tail` with a CAS when the stamp says the slot is free, writes the
//! element, then stores `pos + 1` (Release). A consumer claims `head` when the stamp says
//! the element is there, reads it, then stores `pos + capacity` (Release). The stamps
//! carry all the synchronisation; the positions only hand out turns.
//!
//! Stamps and positions live in shared memory, so they may be garbage. A stamp "ahead" of
//! a position that does not move on when re-read, or a claim that keeps failing without
//! anyone making progress, is reported as `Corrupted` after a bounded number of tries
//! instead of looping forever.

use std::ptr::NonNull;

use crate::layout::CachePadded;
use crate::loom::{AtomicU64, Ordering, UnsafeCell, spin_loop};

/// The two shared positions.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct Positions {
    head: CachePadded<AtomicU64>,
    tail: CachePadded<AtomicU64>,
}

#[cfg(not(loom))]
const _: () = assert!(size_of::<Positions>() == 256);

impl Positions {
    /// Head and tail, each read once, for `shmsync inspect`.
    #[cfg(not(loom))]
    pub(crate) fn snapshot(&self) -> (u64, u64) {
        (self.head.load(Ordering::Relaxed), self.tail.load(Ordering::Relaxed))
    }
}

/// One slot: its stamp, then the element.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct Slot<T> {
    stamp: AtomicU64,
    value: UnsafeCell<T>,
}

impl<T> Slot<T> {
    /// A slot with stamp `stamp` holding `value` (for rings built on the heap).
    #[cfg(test)]
    pub(crate) fn new(stamp: u64, value: T) -> Self {
        Self { stamp: AtomicU64::new(stamp), value: UnsafeCell::new(value) }
    }

    /// Gives a freshly zeroed slot at index `i` its initial stamp, before anyone else can
    /// see the ring.
    pub(crate) fn initialise(&self, i: u64) {
        self.stamp.store(i, Ordering::Relaxed);
    }
}

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

/// Tries a claim may fail before we call the ring corrupted. Honest contention fails a
/// claim only when another thread made progress, so this many in a row means garbage.
const MAX_TRIES: u32 = 1 << 20;

/// The most positions one range claim takes: a lane records a claim's length in a byte.
pub(crate) const MAX_RANGE: u64 = 255;

/// A handle on one MPMC ring; any number may exist, in any number of processes.
pub(crate) struct Ring<T> {
    positions: NonNull<Positions>,
    slots: NonNull<Slot<T>>,
    capacity: u64,
}

impl<T> Clone for Ring<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Ring<T> {}

// SAFETY: a handle on memory meant to be shared by threads and processes; all accesses
// go through the stamps' protocol.
unsafe impl<T: Send> Send for Ring<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for Ring<T> {}

impl<T: Copy> Ring<T> {
    /// Describes a ring.
    ///
    /// # Safety
    ///
    /// `positions` and `capacity` slots must stay valid for as long as this handle (and
    /// its copies) are used; `capacity` must be a power of two; the slots must have been
    /// initialised (stamp `i` in slot `i`) before any handle is used; every bit pattern
    /// must be a valid `T`.
    pub(crate) unsafe fn new(
        positions: NonNull<Positions>,
        slots: NonNull<Slot<T>>,
        capacity: u64,
    ) -> Self {
        debug_assert!(capacity.is_power_of_two());
        Self { positions, slots, capacity }
    }

    fn positions(&self) -> &Positions {
        // SAFETY: valid for the handle's life (`new`'s contract).
        unsafe { self.positions.as_ref() }
    }

    fn slot(&self, position: u64) -> &Slot<T> {
        let index = (position & (self.capacity - 1)) as usize;
        // SAFETY: the mask keeps index < capacity; slots valid (`new`'s contract).
        unsafe { &*self.slots.as_ptr().add(index) }
    }

    /// Appends `value` unless the ring is full (the queue itself always marks its claims).
    #[cfg(test)]
    pub(crate) fn try_push(&self, value: T) -> Result<(), PushFailure<T>> {
        self.try_push_marked(value, |_| {})
    }

    /// [`try_push`](Self::try_push) that calls `mark(pos)` before each attempt to claim
    /// position `pos`, so the caller can record which position it may leave unpublished if
    /// it dies (see [`skip_abandoned`](Self::skip_abandoned)).
    pub(crate) fn try_push_marked(
        &self,
        value: T,
        mark: impl Fn(u64),
    ) -> Result<(), PushFailure<T>> {
        let tail = &self.positions().tail;
        let mut pos = tail.load(Ordering::Relaxed);
        for _ in 0..MAX_TRIES {
            let slot = self.slot(pos);
            // Acquire pairs with the consumer's Release of `pos` (the slot is free).
            let stamp = slot.stamp.load(Ordering::Acquire);
            if stamp == pos {
                mark(pos);
                // Release: whoever sees the claim (Acquire on `tail`) sees the mark.
                match tail.compare_exchange_weak(
                    pos,
                    pos.wrapping_add(1),
                    Ordering::Release,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        // SAFETY: the stamp and our won claim make the slot ours alone.
                        slot.value.with_mut(|p| unsafe { p.write(value) });
                        // Release pairs with the consumer's Acquire of the stamp.
                        slot.stamp.store(pos.wrapping_add(1), Ordering::Release);
                        return Ok(());
                    }
                    Err(now) => pos = now,
                }
            } else if (stamp.wrapping_sub(pos) as i64) < 0 {
                // The slot still holds the element from one lap ago: full, unless the
                // position moved meanwhile.
                let now = tail.load(Ordering::Relaxed);
                if now == pos {
                    return Err(PushFailure::Full(value));
                }
                pos = now;
            } else {
                // Another producer claimed `pos`; the tail must have moved past it.
                let now = tail.load(Ordering::Relaxed);
                if now == pos {
                    return Err(PushFailure::Corrupted(value));
                }
                pos = now;
            }
            spin_loop();
        }
        Err(PushFailure::Corrupted(value))
    }

    /// Takes the oldest element, if any (the queue itself always marks its claims).
    #[cfg(test)]
    pub(crate) fn try_pop(&self) -> Result<T, PopFailure> {
        self.try_pop_marked(|_| {})
    }

    /// [`try_pop`](Self::try_pop) that calls `mark(pos)` before each attempt to claim
    /// position `pos`, so the caller can record which slot it may leave unreleased if it
    /// dies (see [`release_abandoned`](Self::release_abandoned)).
    pub(crate) fn try_pop_marked(&self, mark: impl Fn(u64)) -> Result<T, PopFailure> {
        let head = &self.positions().head;
        let mut pos = head.load(Ordering::Relaxed);
        for _ in 0..MAX_TRIES {
            let slot = self.slot(pos);
            // Acquire pairs with the producer's Release of `pos + 1` (the element).
            let stamp = slot.stamp.load(Ordering::Acquire);
            let full = pos.wrapping_add(1);
            if stamp == full {
                mark(pos);
                // Release: whoever sees the claim (Acquire on `head`) sees the mark.
                match head.compare_exchange_weak(pos, full, Ordering::Release, Ordering::Relaxed) {
                    Ok(_) => {
                        // SAFETY: the stamp and our won claim make the element ours alone;
                        // every bit pattern is a valid T.
                        let value = slot.value.with(|p| unsafe { p.read() });
                        // Release pairs with the next lap's producer's Acquire.
                        slot.stamp.store(pos.wrapping_add(self.capacity), Ordering::Release);
                        return Ok(value);
                    }
                    Err(now) => pos = now,
                }
            } else if (stamp.wrapping_sub(full) as i64) < 0 {
                // No element yet at `pos`: empty, unless the position moved meanwhile.
                let now = head.load(Ordering::Relaxed);
                if now == pos {
                    return Err(PopFailure::Empty);
                }
                pos = now;
            } else {
                let now = head.load(Ordering::Relaxed);
                if now == pos {
                    return Err(PopFailure::Corrupted);
                }
                pos = now;
            }
            spin_loop();
        }
        Err(PopFailure::Corrupted)
    }

    // The single operations above are the range operations below with a run of one,
    // written out: through the range code a thread's push + pop cost 0.8 ns more (12.4 to
    // 13.2 ns, five alternating runs each), the loop and slice bounds the compiler keeps.

    /// Appends a prefix of `values` in one claim: as many as the ring has free slots for
    /// right now (at most [`MAX_RANGE`]), claimed with one compare-and-swap of `tail` and
    /// published one by one in order. Returns how many; `Full` if not even one fits.
    /// `mark(pos, n)` is called before each attempt to claim positions `pos..pos + n`.
    #[inline]
    pub(crate) fn try_push_range_marked(
        &self,
        values: &[T],
        mark: impl Fn(u64, u64),
    ) -> Result<usize, PushFailure<()>> {
        let want = (values.len() as u64).min(self.capacity).min(MAX_RANGE);
        if want == 0 {
            return Ok(0);
        }
        let tail = &self.positions().tail;
        let mut pos = tail.load(Ordering::Relaxed);
        for _ in 0..MAX_TRIES {
            // Acquire pairs with each consumer's Release of its slot (the slot is free).
            let free = |k: u64| {
                let p = pos.wrapping_add(k);
                self.slot(p).stamp.load(Ordering::Acquire) == p
            };
            let stamp = self.slot(pos).stamp.load(Ordering::Acquire);
            if stamp == pos {
                let n = 1 + (1..want).take_while(|&k| free(k)).count() as u64;
                mark(pos, n);
                // Release: whoever sees the claim (Acquire on `tail`) sees the mark.
                match tail.compare_exchange_weak(
                    pos,
                    pos.wrapping_add(n),
                    Ordering::Release,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        for (k, value) in values[..n as usize].iter().enumerate() {
                            let p = pos.wrapping_add(k as u64);
                            let slot = self.slot(p);
                            // SAFETY: each stamp said free for its position before our
                            // won claim, so the slots are ours alone until published.
                            slot.value.with_mut(|v| unsafe { v.write(*value) });
                            // Release pairs with the consumer's Acquire of the stamp.
                            slot.stamp.store(p.wrapping_add(1), Ordering::Release);
                        }
                        return Ok(n as usize);
                    }
                    Err(now) => pos = now,
                }
            } else if (stamp.wrapping_sub(pos) as i64) < 0 {
                let now = tail.load(Ordering::Relaxed);
                if now == pos {
                    return Err(PushFailure::Full(()));
                }
                pos = now;
            } else {
                let now = tail.load(Ordering::Relaxed);
                if now == pos {
                    return Err(PushFailure::Corrupted(()));
                }
                pos = now;
            }
            spin_loop();
        }
        Err(PushFailure::Corrupted(()))
    }

    /// Takes the oldest values into a prefix of `out` in one claim: as many as are
    /// published in a row right now (at most [`MAX_RANGE`]), claimed with one
    /// compare-and-swap of `head`, each slot released once read. Returns how many;
    /// `Empty` if not even one is there. `mark(pos, n)` as in
    /// [`try_push_range_marked`](Self::try_push_range_marked).
    #[inline]
    pub(crate) fn try_pop_range_marked(
        &self,
        out: &mut [T],
        mark: impl Fn(u64, u64),
    ) -> Result<usize, PopFailure> {
        let want = (out.len() as u64).min(self.capacity).min(MAX_RANGE);
        if want == 0 {
            return Ok(0);
        }
        let head = &self.positions().head;
        let mut pos = head.load(Ordering::Relaxed);
        for _ in 0..MAX_TRIES {
            // Acquire pairs with each producer's Release of its element.
            let published = |k: u64| {
                let p = pos.wrapping_add(k);
                self.slot(p).stamp.load(Ordering::Acquire) == p.wrapping_add(1)
            };
            let stamp = self.slot(pos).stamp.load(Ordering::Acquire);
            let full = pos.wrapping_add(1);
            if stamp == full {
                let n = 1 + (1..want).take_while(|&k| published(k)).count() as u64;
                mark(pos, n);
                // Release: whoever sees the claim (Acquire on `head`) sees the mark.
                match head.compare_exchange_weak(
                    pos,
                    pos.wrapping_add(n),
                    Ordering::Release,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        for (k, out) in out[..n as usize].iter_mut().enumerate() {
                            let p = pos.wrapping_add(k as u64);
                            let slot = self.slot(p);
                            // SAFETY: each stamp said published before our won claim, so
                            // the elements are ours alone; every bit pattern is a valid T.
                            *out = slot.value.with(|v| unsafe { v.read() });
                            // Release pairs with the next lap's producer's Acquire.
                            slot.stamp.store(p.wrapping_add(self.capacity), Ordering::Release);
                        }
                        return Ok(n as usize);
                    }
                    Err(now) => pos = now,
                }
            } else if (stamp.wrapping_sub(full) as i64) < 0 {
                let now = head.load(Ordering::Relaxed);
                if now == pos {
                    return Err(PopFailure::Empty);
                }
                pos = now;
            } else {
                let now = head.load(Ordering::Relaxed);
                if now == pos {
                    return Err(PopFailure::Corrupted);
                }
                pos = now;
            }
            spin_loop();
        }
        Err(PopFailure::Corrupted)
    }

    /// The oldest position, if it was claimed by a producer but not published: what a
    /// producer that died between claiming and publishing leaves behind (or one that is
    /// merely slow: the caller must know which).
    pub(crate) fn unpublished_head(&self) -> Option<u64> {
        let p = self.positions();
        let head = p.head.load(Ordering::Relaxed);
        // Acquire pairs with the Release claim in `try_push_marked`.
        let tail = p.tail.load(Ordering::Acquire);
        let claimed = tail.wrapping_sub(head);
        let stamp = self.slot(head).stamp.load(Ordering::Acquire);
        (claimed > 0 && claimed <= self.capacity && stamp == head).then_some(head)
    }

    /// Steps over position `pos`, claimed by a producer that will never publish it (it
    /// died): frees its slot for the next lap. Returns whether this call did it.
    pub(crate) fn skip_abandoned(&self, pos: u64) -> bool {
        let slot = self.slot(pos);
        if slot.stamp.load(Ordering::Acquire) != pos {
            return false; // published after all, or already skipped
        }
        let head = &self.positions().head;
        if head
            .compare_exchange(pos, pos.wrapping_add(1), Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
        // Release pairs with the next lap's producer's Acquire, as after a pop.
        slot.stamp.store(pos.wrapping_add(self.capacity), Ordering::Release);
        true
    }

    /// Whether position `pos` is claimed by a producer (`tail` is past it) but not
    /// published: the state a producer that died mid-push leaves.
    pub(crate) fn is_unpublished(&self, pos: u64) -> bool {
        // Acquire pairs with the Release claim in `try_push_marked`.
        let tail = self.positions().tail.load(Ordering::Acquire);
        let stamp = self.slot(pos).stamp.load(Ordering::Acquire);
        stamp == pos && (tail.wrapping_sub(pos) as i64) > 0
    }

    /// Whether position `pos` is claimed by a consumer (`head` is past it) but its slot
    /// not released: the state a consumer that died mid-pop leaves.
    pub(crate) fn is_unreleased(&self, pos: u64) -> bool {
        // Acquire pairs with the Release claim in `try_pop_marked`.
        let head = self.positions().head.load(Ordering::Acquire);
        let stamp = self.slot(pos).stamp.load(Ordering::Acquire);
        stamp == pos.wrapping_add(1) && (head.wrapping_sub(pos) as i64) > 0
    }

    /// The position of the previous lap whose slot the next push needs, if a consumer
    /// claimed it but has not released it: the slot a dead consumer jams (every producer
    /// sees "full" there for ever) or a live one is about to free.
    pub(crate) fn unreleased_at_tail(&self) -> Option<u64> {
        let tail = self.positions().tail.load(Ordering::Relaxed);
        let pos = tail.wrapping_sub(self.capacity);
        self.is_unreleased(pos).then_some(pos)
    }

    /// Releases the slot of position `pos`, claimed by a consumer that will never release
    /// it (it died; its value is lost): frees the slot for the next lap. Returns whether
    /// this call did it.
    pub(crate) fn release_abandoned(&self, pos: u64) -> bool {
        // Release pairs with the next lap's producer's Acquire, as after a pop.
        self.slot(pos)
            .stamp
            .compare_exchange(
                pos.wrapping_add(1),
                pos.wrapping_add(self.capacity),
                Ordering::Release,
                Ordering::Relaxed,
            )
            .is_ok()
    }

    /// Whether the slot at `head` holds its element: what a consumer waiting for one polls.
    /// Looks only at the consumers' position and that slot, not at `tail`, which every
    /// push writes: polling it would take its cache line away from the producers.
    pub(crate) fn next_is_published(&self) -> bool {
        let head = self.positions().head.load(Ordering::Relaxed);
        self.slot(head).stamp.load(Ordering::Acquire) == head.wrapping_add(1)
    }

    /// Whether the slot at `tail` is free: what a producer waiting for room polls (see
    /// [`next_is_published`](Self::next_is_published) for why not `len`).
    pub(crate) fn next_is_free(&self) -> bool {
        let tail = self.positions().tail.load(Ordering::Relaxed);
        self.slot(tail).stamp.load(Ordering::Acquire) == tail
    }

    /// Elements in the ring right now (a snapshot, clamped to the capacity).
    pub(crate) fn len(&self) -> u64 {
        let p = self.positions();
        let tail = p.tail.load(Ordering::Relaxed);
        let head = p.head.load(Ordering::Relaxed);
        tail.wrapping_sub(head).min(self.capacity)
    }

    pub(crate) fn capacity(&self) -> u64 {
        self.capacity
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    struct HeapRing<T> {
        positions: Box<Positions>,
        slots: Box<[Slot<T>]>,
    }

    impl<T: Copy + Default> HeapRing<T> {
        fn new(capacity: u64) -> Self {
            Self {
                positions: Box::default(),
                slots: (0..capacity).map(|i| Slot::new(i, T::default())).collect(),
            }
        }

        fn ring(&self) -> Ring<T> {
            // SAFETY: both boxes outlive every handle in the tests; stamps initialised.
            unsafe {
                Ring::new(
                    NonNull::from(&*self.positions),
                    NonNull::new(self.slots.as_ptr().cast_mut()).unwrap(),
                    self.slots.len() as u64,
                )
            }
        }
    }

    #[test]
    fn fifo_full_and_empty() {
        let heap = HeapRing::<u32>::new(4);
        let q = heap.ring();
        assert_eq!(q.try_pop(), Err(PopFailure::Empty));
        for v in 0..4 {
            q.try_push(v).unwrap();
        }
        assert_eq!(q.try_push(9), Err(PushFailure::Full(9)));
        assert_eq!(q.len(), 4);
        for lap in 0..10u32 {
            for v in 0..4 {
                assert_eq!(q.try_pop(), Ok(v + lap * 4));
                q.try_push(v + (lap + 1) * 4).unwrap();
            }
        }
        assert_eq!(q.len(), 4);
    }

    #[test]
    fn ranges_take_what_fits_wrap_around_and_mix_with_singles() {
        let heap = HeapRing::<u32>::new(4);
        let q = heap.ring();
        let marks = std::cell::RefCell::new(Vec::new());
        let mark = |pos, n| marks.borrow_mut().push((pos, n));
        let mut buf = [0u32; 8];
        assert_eq!(q.try_pop_range_marked(&mut buf, mark), Err(PopFailure::Empty));
        assert_eq!(q.try_push_range_marked(&[1, 2, 3, 4, 5], mark), Ok(4));
        assert_eq!(q.try_push_range_marked(&[5], mark), Err(PushFailure::Full(())));
        assert_eq!(q.try_pop_range_marked(&mut buf[..3], mark), Ok(3));
        assert_eq!(buf[..3], [1, 2, 3]);
        // Across the end of the ring, behind a single.
        assert_eq!(q.try_push_range_marked(&[5, 6, 7, 8], mark), Ok(3));
        assert_eq!(q.try_pop(), Ok(4));
        q.try_push(9).unwrap();
        assert_eq!(q.try_pop_range_marked(&mut buf, mark), Ok(4));
        assert_eq!(buf[..4], [5, 6, 7, 9]);
        assert_eq!(q.try_push_range_marked(&[], mark), Ok(0));
        assert_eq!(q.try_pop_range_marked(&mut [], mark), Ok(0));
        // Each claim was marked with its first position and length before it was made
        // (again before each retry: a weak CAS may fail spuriously, as under Miri).
        let mut marks = marks.into_inner();
        marks.dedup();
        assert_eq!(marks, [(0, 4), (0, 3), (4, 3), (4, 4)]);
    }

    #[test]
    fn a_range_claim_stops_at_a_slot_still_owed() {
        let heap = HeapRing::<u32>::new(4);
        let q = heap.ring();
        assert_eq!(q.try_push_range_marked(&[1, 2, 3, 4], |_, _| {}), Ok(4));
        // A consumer claimed position 0 and has not released it yet (or died).
        heap.positions.head.store(1, Ordering::Relaxed);
        let mut buf = [0u32; 4];
        assert_eq!(q.try_pop_range_marked(&mut buf, |_, _| {}), Ok(3));
        // The next lap's first slot is not free: a range push takes none.
        assert_eq!(q.try_push_range_marked(&[5, 6], |_, _| {}), Err(PushFailure::Full(())));
        assert!(q.release_abandoned(0));
        assert_eq!(q.try_push_range_marked(&[5, 6], |_, _| {}), Ok(2), "then all of it");
        // A producer claimed position 6 and has not published it: a range pop stops
        // before it.
        heap.positions.tail.store(7, Ordering::Relaxed);
        assert_eq!(q.try_pop_range_marked(&mut buf, |_, _| {}), Ok(2));
        assert_eq!(buf[..2], [5, 6]);
        assert_eq!(q.try_pop_range_marked(&mut buf, |_, _| {}), Err(PopFailure::Empty));
    }

    #[test]
    fn garbage_stamps_and_positions_end_in_corrupted_not_a_hang() {
        let heap = HeapRing::<u64>::new(4);
        let q = heap.ring();
        q.try_push(1).unwrap();
        // A stamp far ahead of its position, with positions that never move.
        heap.slots[1].stamp.store(1_000, Ordering::Relaxed);
        assert_eq!(q.try_push(2), Err(PushFailure::Corrupted(2)));
        assert_eq!(q.try_pop(), Ok(1));
        heap.slots[1].stamp.store(u64::MAX / 3, Ordering::Relaxed);
        assert_eq!(q.try_pop(), Err(PopFailure::Corrupted));
        // Positions that disagree wildly only clamp the length.
        heap.positions.tail.store(u64::MAX, Ordering::Relaxed);
        assert_eq!(q.len(), 4);
    }

    #[test]
    fn an_abandoned_claim_can_be_stepped_over() {
        let heap = HeapRing::<u32>::new(4);
        let q = heap.ring();
        q.try_push(1).unwrap();
        // A producer claims position 1 and dies before publishing it.
        heap.positions.tail.fetch_add(1, Ordering::Relaxed);
        q.try_push(3).unwrap();
        assert_eq!(q.try_pop(), Ok(1));
        assert_eq!(q.try_pop(), Err(PopFailure::Empty), "stuck behind the hole");
        assert_eq!(q.unpublished_head(), Some(1));
        assert!(q.skip_abandoned(1));
        assert!(!q.skip_abandoned(1), "only once");
        assert_eq!(q.try_pop(), Ok(3));
        assert_eq!(q.unpublished_head(), None);
        // The skipped slot is usable again one lap later.
        for v in 10..14 {
            q.try_push(v).unwrap();
        }
        for v in 10..14 {
            assert_eq!(q.try_pop(), Ok(v));
        }
    }

    #[test]
    fn a_slot_claimed_by_a_consumer_that_died_can_be_released() {
        let heap = HeapRing::<u32>::new(4);
        let q = heap.ring();
        for v in 0..4 {
            q.try_push(v).unwrap();
        }
        // A consumer claims position 0 and dies before releasing its slot.
        heap.positions.head.fetch_add(1, Ordering::Relaxed);
        assert!(q.is_unreleased(0));
        for v in 1..4 {
            assert_eq!(q.try_pop(), Ok(v));
        }
        // One lap on, the jam: producers see "full" at position 4, consumers "empty".
        assert_eq!(q.try_push(4), Err(PushFailure::Full(4)), "jammed");
        assert_eq!(q.try_pop(), Err(PopFailure::Empty));
        assert_eq!(q.unreleased_at_tail(), Some(0));
        assert!(q.release_abandoned(0));
        assert!(!q.release_abandoned(0), "only once");
        assert_eq!(q.unreleased_at_tail(), None);
        for v in 4..8 {
            q.try_push(v).unwrap();
        }
        for v in 4..8 {
            assert_eq!(q.try_pop(), Ok(v));
        }
    }

    #[test]
    fn finished_claims_are_neither_unpublished_nor_unreleased() {
        let heap = HeapRing::<u32>::new(4);
        let q = heap.ring();
        assert!(!q.is_unpublished(0), "not claimed yet");
        q.try_push(1).unwrap();
        assert!(!q.is_unpublished(0) && !q.is_unreleased(0));
        assert_eq!(q.try_pop(), Ok(1));
        assert!(!q.is_unpublished(0) && !q.is_unreleased(0));
        assert_eq!(q.unreleased_at_tail(), None);
        heap.positions.tail.fetch_add(1, Ordering::Relaxed); // a producer claims 1
        assert!(q.is_unpublished(1));
    }

    #[test]
    fn two_producers_two_consumers_lose_and_duplicate_nothing() {
        let heap = HeapRing::<u64>::new(8);
        let q = heap.ring();
        let per_producer = if cfg!(miri) { 100 } else { 50_000 };
        let seen = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for p in 0..2u64 {
                s.spawn(move || {
                    for i in 0..per_producer {
                        let mut v = p << 32 | i;
                        while let Err(PushFailure::Full(back)) = q.try_push(v) {
                            v = back;
                            std::thread::yield_now();
                        }
                    }
                });
            }
            for _ in 0..2 {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    let mut last = [None::<u64>; 2];
                    while (mine.len() as u64) < per_producer {
                        match q.try_pop() {
                            Ok(v) => {
                                let (p, i) = ((v >> 32) as usize, v & 0xFFFF_FFFF);
                                // Each consumer sees each producer's items in order.
                                assert!(last[p].is_none_or(|l| l < i), "out of order");
                                last[p] = Some(i);
                                mine.push(v);
                            }
                            Err(PopFailure::Empty) => std::thread::yield_now(),
                            Err(PopFailure::Corrupted) => panic!("corrupted"),
                        }
                    }
                    seen.lock().unwrap().extend(mine);
                });
            }
        });
        let mut all = seen.into_inner().unwrap();
        all.sort_unstable();
        let expected: Vec<u64> =
            (0..2u64).flat_map(|p| (0..per_producer).map(move |i| p << 32 | i)).collect();
        assert_eq!(all, expected, "every item exactly once");
    }
}

/// Loom model: two producers and two consumers move every element exactly once, and no
/// slot is read while written (loom checks the value cells).
#[cfg(all(test, loom))]
pub(crate) mod loom_tests {
    use super::*;
    use std::sync::Arc;

    /// The heap memory behind a ring built by [`heap_ring`]: keep it while the ring lives.
    pub(crate) type Keep = (Arc<Positions>, Arc<[Slot<u32>]>);

    /// A ring of `capacity` `u32`s on the heap with its slots initialised, for loom
    /// models, and the memory it points into.
    pub(crate) fn heap_ring(capacity: u64) -> (Ring<u32>, Keep) {
        let positions = Arc::new(Positions::default());
        let slots: Arc<[Slot<u32>]> = (0..capacity).map(|i| Slot::new(i, 0)).collect();
        // SAFETY: the caller keeps the Arcs (returned) for as long as the ring is used;
        // `capacity` initialised slots, a power of two by the callers' choice.
        let ring = unsafe {
            Ring::new(
                NonNull::from(&*positions),
                NonNull::new(slots.as_ptr().cast_mut()).unwrap(),
                capacity,
            )
        };
        (ring, (positions, slots))
    }

    #[test]
    fn two_producers_two_consumers() {
        let mut builder = ::loom::model::Builder::new();
        builder.preemption_bound = Some(2);
        let runs = crate::loom::counted(builder, || {
            let (ring, memory) = heap_ring(2);
            let taken = Arc::new(AtomicU64::new(0));
            let mut threads = Vec::new();
            for v in [1u32, 2] {
                let keep = memory.clone();
                threads.push(crate::loom::thread::spawn(move || {
                    let _keep = keep;
                    let mut v = v;
                    while let Err(PushFailure::Full(back)) = ring.try_push(v) {
                        v = back;
                        crate::loom::thread::yield_now();
                    }
                }));
            }
            // Consumers race the producers with a bounded number of tries (loom needs
            // every thread to finish without waiting for another to make progress);
            // whatever they leave, the main thread drains afterwards.
            let record = |taken: &AtomicU64, v: u32| {
                // Bit v marks element v: each exactly once.
                let before = taken.fetch_or(1 << v, Ordering::Relaxed);
                assert_eq!(before & (1 << v), 0, "element {v} popped twice");
            };
            for _ in 0..2 {
                let keep = (memory.clone(), Arc::clone(&taken));
                threads.push(crate::loom::thread::spawn(move || {
                    for _ in 0..2 {
                        match ring.try_pop() {
                            Ok(v) => record(&keep.1, v),
                            Err(PopFailure::Empty) => crate::loom::thread::yield_now(),
                            Err(PopFailure::Corrupted) => panic!("corrupted"),
                        }
                    }
                }));
            }
            for t in threads {
                t.join().unwrap();
            }
            loop {
                match ring.try_pop() {
                    Ok(v) => record(&taken, v),
                    Err(PopFailure::Empty) => break,
                    Err(PopFailure::Corrupted) => panic!("corrupted"),
                }
            }
            assert_eq!(taken.load(Ordering::Relaxed), 0b110);
        });
        assert!(runs > 25_000, "loom explored only {runs} schedules"); // 111,281 when written
    }

    /// Range claims racing single ones: a producer pushes two values in one claim while
    /// another pushes one, and two consumers take ranges of up to two. Every value exactly
    /// once, the range's two in order, and no slot read while written.
    #[test]
    fn ranges_and_singles_move_every_element_once() {
        let mut builder = ::loom::model::Builder::new();
        builder.preemption_bound = Some(2);
        let runs = crate::loom::counted(builder, || {
            let (ring, memory) = heap_ring(4);
            let taken = Arc::new(AtomicU64::new(0));
            let order = Arc::new(AtomicU64::new(0));
            let keep = memory.clone();
            let ranged = crate::loom::thread::spawn(move || {
                let _keep = keep;
                let mut at = 0;
                let values = [1u32, 2];
                while at < 2 {
                    match ring.try_push_range_marked(&values[at..], |_, _| {}) {
                        Ok(n) => at += n,
                        Err(PushFailure::Full(())) => crate::loom::thread::yield_now(),
                        Err(PushFailure::Corrupted(())) => panic!("corrupted"),
                    }
                }
            });
            let keep = memory.clone();
            let single = crate::loom::thread::spawn(move || {
                let _keep = keep;
                while let Err(PushFailure::Full(_)) = ring.try_push(3) {
                    crate::loom::thread::yield_now();
                }
            });
            let record = |taken: &AtomicU64, order: &AtomicU64, got: &[u32]| {
                for &v in got {
                    let before = taken.fetch_or(1 << v, Ordering::Relaxed);
                    assert_eq!(before & (1 << v), 0, "element {v} popped twice");
                }
                // Within one consumer's claim the range's values keep their order.
                if let (Some(a), Some(b)) =
                    (got.iter().position(|&v| v == 1), got.iter().position(|&v| v == 2))
                {
                    assert!(a < b, "out of order: {got:?}");
                }
                order.fetch_add(1, Ordering::Relaxed);
            };
            let mut threads = vec![ranged, single];
            for _ in 0..2 {
                let keep = (memory.clone(), Arc::clone(&taken), Arc::clone(&order));
                threads.push(crate::loom::thread::spawn(move || {
                    let mut buf = [0u32; 2];
                    match ring.try_pop_range_marked(&mut buf, |_, _| {}) {
                        Ok(n) => record(&keep.1, &keep.2, &buf[..n]),
                        Err(PopFailure::Empty) => {}
                        Err(PopFailure::Corrupted) => panic!("corrupted"),
                    }
                }));
            }
            for t in threads {
                t.join().unwrap();
            }
            let mut buf = [0u32; 4];
            loop {
                match ring.try_pop_range_marked(&mut buf, |_, _| {}) {
                    Ok(n) => record(&taken, &order, &buf[..n]),
                    Err(PopFailure::Empty) => break,
                    Err(PopFailure::Corrupted) => panic!("corrupted"),
                }
            }
            assert_eq!(taken.load(Ordering::Relaxed), 0b1110);
        });
        assert!(runs > 25_000, "loom explored only {runs} schedules"); // 102,903 when written
    }

    /// A consumer died between claiming position 0 and releasing its slot. A producer
    /// that needs the slot one lap later releases it while a live consumer pops the
    /// others: every other value arrives exactly once, and loom checks that no slot is
    /// written while read.
    #[test]
    fn a_slot_a_dead_consumer_left_is_released_while_others_pop() {
        let mut builder = ::loom::model::Builder::new();
        builder.preemption_bound = Some(2);
        let runs = crate::loom::counted(builder, || {
            let (ring, memory) = heap_ring(2);
            ring.try_push(10).unwrap();
            ring.try_push(11).unwrap();
            // The dead consumer's claim of position 0: head moved, slot 0 never released.
            memory.0.head.store(1, Ordering::Relaxed);
            let keep = memory.clone();
            let producer = crate::loom::thread::spawn(move || {
                let _keep = keep;
                for v in [12u32, 13] {
                    let mut v = v;
                    loop {
                        match ring.try_push(v) {
                            Ok(()) => break,
                            Err(PushFailure::Full(back)) => {
                                v = back;
                                // Only the dead claim: the queue tells it from a live
                                // consumer's by the members' lanes and locks (a live one's
                                // slot released here would be overwritten while read, as
                                // this model shows if the check is dropped).
                                if ring.unreleased_at_tail() == Some(0) {
                                    ring.release_abandoned(0);
                                }
                                crate::loom::thread::yield_now();
                            }
                            Err(PushFailure::Corrupted(_)) => panic!("corrupted"),
                        }
                    }
                }
            });
            let mut got = Vec::new();
            while got.len() < 3 {
                match ring.try_pop() {
                    Ok(v) => got.push(v),
                    Err(PopFailure::Empty) => crate::loom::thread::yield_now(),
                    Err(PopFailure::Corrupted) => panic!("corrupted"),
                }
            }
            producer.join().unwrap();
            assert_eq!(got, [11, 12, 13], "10 is the dead consumer's, the rest in order");
        });
        assert!(runs > 50, "loom explored only {runs} schedules"); // 202 when written
    }
}
