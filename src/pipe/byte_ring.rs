//! The single-producer single-consumer ring of variable-size messages under a [`Pipe`]
//! (one per direction), over memory the caller provides (a segment's payload, or the heap
//! in tests).
//!
//! Positions are monotonic `u64` byte positions, as in the SPSC ring ([`Indices`]), over a
//! data area of `size` bytes, a power of two. Everything in the data area is 8-byte
//! aligned. A *frame* is an 8-byte header word and the message, padded to a multiple of 8.
//! The header is stamped with the position it belongs to:
//!
//! | header word (high 32 bits, low 32 bits) | meaning |
//! |---|---|
//! | (`stamp(p)`, `len <= max_message`) | a message of `len` bytes follows |
//! | (`stamp(p)`, [`SKIP`]) | nothing more before the end of the data area: continue at offset 0 |
//! | any other stamp | nothing published at `p` yet |
//!
//! `stamp(p)` is `!(p / 8)` truncated to 32 bits: never 0 in the first 32 GiB, so the
//! zeroed memory of a new segment holds no valid header.
//!
//! **Publishing.** The reader learns of a frame from its header alone, not from `tail`:
//! a round trip then moves one cache line per direction (the frame's) instead of two (the
//! frame's and `tail`'s). The writer writes the message, then a *not-yet marker* (a word
//! with the wrong stamp) at the position after the frame, then the header with a Release
//! store, then `tail` (which only a writer that re-attaches reads). The marker keeps stale
//! bytes from an earlier lap (old messages) from passing for the next header; it is left
//! out only when the ring is full, and then that word is the header of the oldest frame,
//! whose stamp is a lap off. The reader releases bytes by storing `head` (Release), which
//! the writer reads when its cached copy shows too little room.
//!
//! **Contiguity.** When a frame does not fit before the end of the data area, the writer
//! fills the rest with a skip marker and puts the frame at offset 0, publishing the
//! frame's header first and the skip marker last. (Mapping the data area twice back to
//! back would let frames run over the end, but needs page-sized rings, two extra mappings
//! per direction, and cannot be modelled on the heap under loom and Miri.)
//!
//! **Sizes.** A frame of up to `size / 2` bytes always fits an empty ring, wherever the
//! positions stand, so `max_message = size / 2 - 8`; larger messages are refused.
//!
//! **Hostile memory.** A header whose stamp is wrong is "not yet": a peer can always just
//! not send. A stamped header must be a skip marker at a non-zero offset followed by a
//! frame at offset 0, or a length up to `max_message` whose frame lies inside the data
//! area; anything else is [`Corrupted`]. Positions read at attach must be 8-aligned and at
//! most `size` apart.
//!
//! **A writer that died mid-commit** may have published a header without recording
//! `tail`; a writer that re-attaches steps over such frames (at most a skip and one frame)
//! before it writes, so a frame the reader may already be reading is never overwritten.
//!
//! [`Pipe`]: crate::Pipe

use std::ptr::NonNull;

use crate::loom::{AtomicU64, Ordering, UnsafeCell};
use crate::rings::spsc::ring::{Corrupted, Indices};

/// The length field of a skip marker.
pub(crate) const SKIP: u32 = u32::MAX;
/// Bytes of a frame header.
pub(crate) const HEADER: usize = 8;
/// Smallest data area: room for one frame of an 8-byte message on each side of the wrap.
pub(crate) const MIN_SIZE: u64 = 64;
/// Largest data area: lengths must fit the header's 32 bits.
pub(crate) const MAX_SIZE: u64 = 1 << 32;

/// Bytes a frame of `len` takes.
#[inline]
pub(crate) fn frame_len(len: usize) -> u64 {
    HEADER as u64 + (len as u64).next_multiple_of(8)
}

/// The stamp of a header at `position`.
#[inline]
fn stamp(position: u64) -> u32 {
    !((position >> 3) as u32)
}

/// The header word at `position` for a frame of `len` (or [`SKIP`]).
#[inline]
pub(crate) fn header(position: u64, len: u32) -> u64 {
    (u64::from(stamp(position)) << 32) | u64::from(len)
}

/// A word at `position` that is no header for it.
#[inline]
fn not_yet(position: u64) -> u64 {
    u64::from(!stamp(position)) << 32
}

/// The length field of `word` if it is a header for `position`.
#[inline]
fn published(word: u64, position: u64) -> Option<u32> {
    ((word >> 32) as u32 == stamp(position)).then_some(word as u32)
}

/// Where one byte ring lives.
#[derive(Clone, Copy)]
pub(crate) struct ByteRing {
    indices: NonNull<Indices>,
    data: NonNull<UnsafeCell<u8>>,
    /// Loom cannot make an atomic of byte cells: there the header words live in a table
    /// of their own, one per 8 bytes of data.
    #[cfg(loom)]
    headers: NonNull<AtomicU64>,
    size: u64,
}

impl ByteRing {
    /// Describes a ring.
    ///
    /// # Safety
    ///
    /// `indices` and `size` bytes at `data` (8-byte aligned) must stay valid for as long as
    /// any end built on this value is used; `size` must be a power of two from
    /// [`MIN_SIZE`] to [`MAX_SIZE`].
    #[cfg(not(loom))]
    pub(crate) unsafe fn new(
        indices: NonNull<Indices>,
        data: NonNull<UnsafeCell<u8>>,
        size: u64,
    ) -> Self {
        debug_assert!(size.is_power_of_two() && (MIN_SIZE..=MAX_SIZE).contains(&size));
        debug_assert!(data.as_ptr() as usize % 8 == 0);
        Self { indices, data, size }
    }

    /// Describes a ring whose header words are in `headers` (`size / 8` of them).
    ///
    /// # Safety
    ///
    /// As for the non-loom `new`, and `headers` must stay valid as long.
    #[cfg(loom)]
    pub(crate) unsafe fn new(
        indices: NonNull<Indices>,
        data: NonNull<UnsafeCell<u8>>,
        headers: NonNull<AtomicU64>,
        size: u64,
    ) -> Self {
        Self { indices, data, headers, size }
    }

    fn indices(&self) -> &Indices {
        // SAFETY: valid for the life of the ends (`new`'s contract).
        unsafe { self.indices.as_ref() }
    }

    /// The largest message this ring takes.
    pub(crate) fn max_message(&self) -> usize {
        (self.size / 2) as usize - HEADER
    }

    fn offset(&self, position: u64) -> usize {
        // The mask keeps every offset inside the data area, whatever `position` is.
        (position & (self.size - 1)) as usize
    }

    /// The header word of `position` (8-aligned).
    fn word(&self, position: u64) -> &AtomicU64 {
        let offset = self.offset(position);
        debug_assert!(offset % 8 == 0);
        #[cfg(not(loom))]
        {
            // SAFETY: in bounds (masked) and 8-aligned (data and offset are); the data is
            // shared memory, where an atomic view of a word is what every side uses for
            // header words.
            unsafe { &*self.data.as_ptr().add(offset).cast::<AtomicU64>() }
        }
        #[cfg(loom)]
        {
            // SAFETY: offset / 8 < size / 8 entries (`new`'s contract).
            unsafe { &*self.headers.as_ptr().add(offset / 8) }
        }
    }

    #[cfg(loom)]
    fn byte(&self, offset: usize) -> &UnsafeCell<u8> {
        debug_assert!(offset < self.size as usize);
        // SAFETY: offset < size (callers check), and the data is valid (`new`).
        unsafe { &*self.data.as_ptr().add(offset) }
    }

    /// `len` bytes at `offset` (checked by the caller to lie inside the data area).
    #[cfg(not(loom))]
    fn bytes(&self, offset: usize, len: usize) -> *mut u8 {
        debug_assert!(offset + len <= self.size as usize);
        // SAFETY: in bounds; UnsafeCell<u8> is repr(transparent) over u8 outside loom.
        unsafe { self.data.as_ptr().cast::<u8>().add(offset) }
    }

    /// The skip marker and the room in all a message of `len` bytes needs at `tail`: a
    /// frame never wraps, so one that does not fit before the end skips to the start.
    fn room_needed(&self, tail: u64, len: usize) -> (u64, u64) {
        let frame = frame_len(len);
        let before_end = self.size - self.offset(tail) as u64;
        let skip = if frame <= before_end { 0 } else { before_end };
        (skip, skip + frame)
    }

    /// Whether a message (or garbage to report) waits at the reader's recorded position:
    /// a wait set's look, from the shared positions only, in the reader's process.
    #[cfg(not(loom))]
    pub(crate) fn has_message(&self) -> bool {
        let head = self.indices().head.load(Ordering::Relaxed);
        self.frame_at(head).map_or(true, |frame| frame.is_some())
    }

    /// Whether a message of `len` bytes fits at the writer's recorded position now (or
    /// the positions are garbage, to report): a wait set's look, in the writer's process.
    #[cfg(not(loom))]
    pub(crate) fn has_room_for(&self, len: usize) -> bool {
        // Acquire pairs with the Release in `ByteReader::release`, as in `free`.
        let head = self.indices().head.load(Ordering::Acquire);
        let tail = self.indices().tail.load(Ordering::Relaxed);
        let Ok(used) = check(self, head, tail) else { return true };
        self.size - used >= self.room_needed(tail, len).1
    }

    /// The writer's position as `tail` records it, and as it really is: past the frame
    /// (with its skip marker) a writer published at the recorded `tail` without recording
    /// it, if it died between the two stores (or is between them now). The reader may
    /// have consumed that frame already, so `head` is checked against the real position.
    pub(crate) fn settled_tail(&self, head: u64) -> Result<(u64, u64), Corrupted> {
        let recorded = self.indices().tail.load(Ordering::Acquire);
        if recorded % 8 != 0 {
            return Err(Corrupted);
        }
        let tail = match self.frame_at(recorded)? {
            Some(frame) => frame.end,
            None => recorded,
        };
        check(self, head, tail)?;
        Ok((recorded, tail))
    }

    /// The frame published at `position`, if any: `Ok(None)` while its header is not
    /// there. Follows one skip marker.
    fn frame_at(&self, position: u64) -> Result<Option<Frame>, Corrupted> {
        let mut at = position;
        // Acquire pairs with the writer's Release store of the header: the message and the
        // marker after it are visible once the header is.
        let Some(mut len) = published(self.word(at).load(Ordering::Acquire), at) else {
            return Ok(None);
        };
        if len == SKIP {
            let offset = self.offset(at);
            if offset == 0 {
                return Err(Corrupted); // an honest writer never skips a whole lap
            }
            at = at.wrapping_add(self.size - offset as u64);
            let Some(next) = published(self.word(at).load(Ordering::Acquire), at) else {
                return Ok(None);
            };
            len = next;
        }
        if len as usize > self.max_message() {
            return Err(Corrupted); // also a second skip marker
        }
        let offset = self.offset(at);
        let frame = frame_len(len as usize);
        if offset as u64 + frame > self.size {
            return Err(Corrupted);
        }
        Ok(Some(Frame { start: offset + HEADER, len: len as usize, end: at.wrapping_add(frame) }))
    }
}

/// A message reserved by the writer: its header goes at `at + skip`, after `skip` bytes of
/// skip marker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Reservation {
    at: u64,
    skip: u64,
    len: usize,
}

impl Reservation {
    /// The message's length.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

/// The sending end of one byte ring: only one may exist per ring at a time.
pub(crate) struct ByteWriter {
    ring: ByteRing,
    tail: u64,
    head_seen: u64,
}

// SAFETY: the writer owns the sending role of the ring; the memory is shared memory
// meant to be used from any thread.
unsafe impl Send for ByteWriter {}

impl ByteWriter {
    /// Takes up the sending role, continuing from the shared positions, past any frame a
    /// writer that died mid-commit published without recording it.
    ///
    /// # Safety
    ///
    /// No other `ByteWriter` of this ring may be used while this one is.
    pub(crate) unsafe fn attach(ring: ByteRing) -> Result<Self, Corrupted> {
        let i = ring.indices();
        let head = i.head.load(Ordering::Acquire);
        let (recorded, tail) = ring.settled_tail(head)?;
        if tail != recorded {
            i.tail.store(tail, Ordering::Release);
        }
        let mut writer = Self { ring, tail, head_seen: head };
        writer.mark_next()?;
        Ok(writer)
    }

    /// The ring this end writes.
    pub(crate) fn ring(&self) -> &ByteRing {
        &self.ring
    }

    /// Free bytes, refreshing the reader's position if the cache shows fewer than
    /// `wanted`.
    fn free(&mut self, wanted: u64) -> Result<u64, Corrupted> {
        let cached = self.ring.size - self.tail.wrapping_sub(self.head_seen);
        if cached >= wanted {
            return Ok(cached);
        }
        // Acquire pairs with the Release in `ByteReader::release`.
        let head = self.ring.indices().head.load(Ordering::Acquire);
        let used = check(&self.ring, head, self.tail)?;
        self.head_seen = head;
        Ok(self.ring.size - used)
    }

    /// Writes the not-yet marker at `tail`, unless the ring is full (then that word is the
    /// oldest frame's header, a lap off).
    fn mark_next(&mut self) -> Result<(), Corrupted> {
        if self.free(HEADER as u64)? >= HEADER as u64 {
            self.ring.word(self.tail).store(not_yet(self.tail), Ordering::Relaxed);
        }
        Ok(())
    }

    /// Reserves room for a message of exactly `len` bytes (at most
    /// [`ByteRing::max_message`]); `None` if the ring has no room for it now.
    pub(crate) fn reserve(&mut self, len: usize) -> Result<Option<Reservation>, Corrupted> {
        debug_assert!(len <= self.ring.max_message());
        let (skip, need) = self.ring.room_needed(self.tail, len);
        Ok((self.free(need)? >= need).then_some(Reservation { at: self.tail, skip, len }))
    }

    /// Reserves room for a message of 1 to `wanted` bytes (as many as fit now, at most
    /// [`ByteRing::max_message`]); `None` if not even one byte fits. For byte streams.
    pub(crate) fn reserve_up_to(
        &mut self,
        wanted: usize,
    ) -> Result<Option<Reservation>, Corrupted> {
        let wanted = wanted.min(self.ring.max_message()).max(1);
        let free = self.free(frame_len(wanted))?;
        let before_end = self.ring.size - self.ring.offset(self.tail) as u64;
        // Payload room here (before the end) and after skipping to the start.
        let here = free.min(before_end).saturating_sub(HEADER as u64);
        let after_skip =
            if free > before_end { (free - before_end).saturating_sub(HEADER as u64) } else { 0 };
        let (skip, room) = if here as usize >= wanted || here >= after_skip {
            (0, here)
        } else {
            (before_end, after_skip)
        };
        let len = (room as usize).min(wanted);
        Ok((len > 0).then_some(Reservation { at: self.tail, skip, len }))
    }

    /// The reserved message's bytes, to fill in place.
    #[cfg(not(loom))]
    pub(crate) fn payload(&mut self, r: &Reservation) -> &mut [u8] {
        let start = self.ring.offset(r.at.wrapping_add(r.skip)) + HEADER;
        // SAFETY: the reservation lies inside the data area, in bytes the reader does not
        // look at until we publish them; `&mut self` keeps the slice unique.
        unsafe { std::slice::from_raw_parts_mut(self.ring.bytes(start, r.len), r.len) }
    }

    /// Copies `src` (exactly the reserved length) into the reserved message: the form the
    /// tests and the loom model use (loom cannot lend slices of its cells).
    #[cfg(any(test, loom))]
    pub(crate) fn write(&mut self, r: &Reservation, src: &[u8]) {
        assert_eq!(src.len(), r.len, "write of another length than reserved");
        #[cfg(not(loom))]
        self.payload(r).copy_from_slice(src);
        #[cfg(loom)]
        {
            let start = self.ring.offset(r.at.wrapping_add(r.skip)) + HEADER;
            for (k, b) in src.iter().enumerate() {
                // SAFETY: unpublished bytes of the reservation; loom checks the access.
                self.ring.byte(start + k).with_mut(|p| unsafe { *p = *b });
            }
        }
    }

    /// Publishes the reserved message (and its skip marker).
    pub(crate) fn commit(&mut self, r: Reservation) -> Result<(), Corrupted> {
        debug_assert_eq!(r.at, self.tail, "reservations are committed in order, one at a time");
        let start = r.at.wrapping_add(r.skip);
        self.tail = start.wrapping_add(frame_len(r.len));
        // The marker first, so that a reader who sees our header finds it when it looks
        // at the next position.
        self.mark_next()?;
        // Release pairs with the Acquire in `ByteRing::frame_at`: the message and the
        // marker are written before the header that announces them; the frame at offset 0
        // before the skip marker that leads to it.
        self.ring.word(start).store(header(start, r.len as u32), Ordering::Release);
        if r.skip > 0 {
            self.ring.word(r.at).store(header(r.at, SKIP), Ordering::Release);
        }
        // For a writer that re-attaches after us.
        self.ring.indices().tail.store(self.tail, Ordering::Release);
        Ok(())
    }

    /// Whether a message of `len` bytes fits now (refreshing the reader's position).
    pub(crate) fn has_room(&mut self, len: usize) -> bool {
        self.reserve(len).map_or(true, |r| r.is_some())
    }
}

/// A published message found by the reader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Frame {
    /// Offset of the message's first byte in the data area.
    start: usize,
    len: usize,
    /// Position just after the frame: the new `head` once it is released.
    end: u64,
}

impl Frame {
    /// The message's length.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

/// The receiving end of one byte ring: only one may exist per ring at a time.
pub(crate) struct ByteReader {
    ring: ByteRing,
    head: u64,
    /// The writer's position when this reader attached (past an unrecorded frame).
    attached_at: u64,
}

// SAFETY: as for `ByteWriter`.
unsafe impl Send for ByteReader {}

impl ByteReader {
    /// Takes up the receiving role, continuing from the shared positions.
    ///
    /// # Safety
    ///
    /// No other `ByteReader` of this ring may be used while this one is.
    pub(crate) unsafe fn attach(ring: ByteRing) -> Result<Self, Corrupted> {
        let head = ring.indices().head.load(Ordering::Acquire);
        let (_, attached_at) = ring.settled_tail(head)?;
        Ok(Self { ring, head, attached_at })
    }

    /// The ring this end reads.
    #[cfg(not(loom))]
    pub(crate) fn ring(&self) -> &ByteRing {
        &self.ring
    }

    /// Where the messages published before this reader attached end.
    pub(crate) fn attached_at(&self) -> u64 {
        self.attached_at
    }

    /// The position of the next message to read.
    pub(crate) fn head(&self) -> u64 {
        self.head
    }

    /// Whether a message (or garbage to report) is waiting.
    pub(crate) fn ready(&mut self) -> bool {
        self.peek().map_or(true, |f| f.is_some())
    }

    /// The oldest message, if any, stepping over a skip marker.
    pub(crate) fn peek(&mut self) -> Result<Option<Frame>, Corrupted> {
        self.ring.frame_at(self.head)
    }

    /// The message's bytes, in place.
    #[cfg(not(loom))]
    pub(crate) fn payload(&self, f: &Frame) -> &[u8] {
        // SAFETY: `frame_at` checked the frame lies inside the data area, in published
        // bytes the writer leaves alone until we release them (if it is honest: see the
        // trust model in docs/design.md).
        unsafe { std::slice::from_raw_parts(self.ring.bytes(f.start, f.len), f.len) }
    }

    /// Copies `dst.len()` bytes of the message from byte `from` on.
    pub(crate) fn read(&self, f: &Frame, from: usize, dst: &mut [u8]) {
        assert!(from + dst.len() <= f.len, "read past the end of the message");
        #[cfg(not(loom))]
        dst.copy_from_slice(&self.payload(f)[from..from + dst.len()]);
        #[cfg(loom)]
        for (k, b) in dst.iter_mut().enumerate() {
            // SAFETY: published bytes of the frame; loom checks the access.
            *b = self.ring.byte(f.start + from + k).with(|p| unsafe { *p });
        }
    }

    /// Frees the message's bytes (and any skip before it) for the writer.
    pub(crate) fn release(&mut self, f: Frame) {
        self.head = f.end;
        // Release pairs with the Acquire in `ByteWriter::free`: our reads of the frame
        // happen before the writer may overwrite it.
        self.ring.indices().head.store(self.head, Ordering::Release);
    }
}

/// Checks `tail - head` against the size, and that both positions are 8-aligned (they
/// are read from shared memory).
fn check(ring: &ByteRing, head: u64, tail: u64) -> Result<u64, Corrupted> {
    let used = tail.wrapping_sub(head);
    if used <= ring.size && (head | tail) % 8 == 0 { Ok(used) } else { Err(Corrupted) }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::loom::AtomicU64;

    /// A byte ring on the heap.
    struct HeapRing {
        indices: Box<Indices>,
        data: Box<[AtomicU64]>, // u64s for 8-byte alignment
    }

    impl HeapRing {
        fn new(size: u64) -> Self {
            let data = (0..size / 8).map(|_| AtomicU64::new(0)).collect();
            Self { indices: Box::default(), data }
        }

        fn ring(&self) -> ByteRing {
            // SAFETY: both boxes outlive every end in the tests; 8-aligned; power of two.
            unsafe {
                ByteRing::new(
                    NonNull::from(&*self.indices),
                    NonNull::new(self.data.as_ptr().cast_mut().cast()).unwrap(),
                    self.data.len() as u64 * 8,
                )
            }
        }

        fn ends(&self) -> (ByteWriter, ByteReader) {
            // SAFETY: one writer and one reader per ring in each test.
            unsafe {
                (ByteWriter::attach(self.ring()).unwrap(), ByteReader::attach(self.ring()).unwrap())
            }
        }

        fn poke(&self, offset: usize, value: u64) {
            self.data[offset / 8].store(value, Ordering::Relaxed);
        }
    }

    fn send(w: &mut ByteWriter, msg: &[u8]) -> bool {
        match w.reserve(msg.len()).unwrap() {
            Some(r) => {
                w.write(&r, msg);
                w.commit(r).unwrap();
                true
            }
            None => false,
        }
    }

    fn recv(r: &mut ByteReader) -> Result<Option<Vec<u8>>, Corrupted> {
        let Some(f) = r.peek()? else { return Ok(None) };
        let v = r.payload(&f).to_vec();
        r.release(f);
        Ok(Some(v))
    }

    #[test]
    fn messages_keep_their_boundaries_across_many_wraps() {
        let heap = HeapRing::new(128);
        let (mut w, mut r) = heap.ends();
        assert_eq!(w.ring().max_message(), 56);
        for round in 0..500usize {
            let len = round * 7 % 57;
            let msg: Vec<u8> = (0..len).map(|k| (round + k) as u8).collect();
            assert!(send(&mut w, &msg), "round {round}");
            assert_eq!(recv(&mut r).unwrap().unwrap(), msg, "round {round}");
            assert_eq!(recv(&mut r), Ok(None));
        }
    }

    #[test]
    fn the_largest_message_fits_an_empty_ring_wherever_the_positions_stand() {
        let heap = HeapRing::new(128);
        let (mut w, mut r) = heap.ends();
        let big = [0xAB; 56];
        for shift in 0..40 {
            // Move the positions by 8 bytes at a time (an empty message each), then check
            // that the largest message still goes through at once.
            assert!(send(&mut w, &[]));
            assert_eq!(recv(&mut r).unwrap().unwrap(), Vec::<u8>::new());
            assert!(send(&mut w, &big), "shift {shift}");
            assert_eq!(recv(&mut r).unwrap().unwrap(), big);
        }
    }

    #[test]
    fn full_until_the_reader_releases() {
        let heap = HeapRing::new(64);
        let (mut w, mut r) = heap.ends();
        assert!(send(&mut w, &[1; 24])); // 32 bytes
        assert!(send(&mut w, &[2; 24])); // 64: full
        assert!(!send(&mut w, &[]));
        assert!(!w.has_room(0));
        assert_eq!(recv(&mut r).unwrap().unwrap(), [1; 24]);
        assert!(w.has_room(24));
        assert!(send(&mut w, &[3; 20]));
        assert_eq!(recv(&mut r).unwrap().unwrap(), [2; 24]);
        assert_eq!(recv(&mut r).unwrap().unwrap(), [3; 20]);
    }

    /// Moves a 128-byte ring's positions to offset 112 (16 bytes before the end).
    fn to_offset_112(w: &mut ByteWriter, r: &mut ByteReader) {
        for _ in 0..2 {
            assert!(send(w, &[1; 48])); // frames of 56 bytes
            assert_eq!(recv(r).unwrap().unwrap(), [1; 48]);
        }
    }

    #[test]
    fn a_frame_that_does_not_fit_before_the_end_goes_to_the_start() {
        let heap = HeapRing::new(128);
        let (mut w, mut r) = heap.ends();
        to_offset_112(&mut w, &mut r);
        assert!(send(&mut w, &[2; 20])); // a 32-byte frame: skip 16, then offset 0
        assert_eq!(heap.data[112 / 8].load(Ordering::Relaxed), header(112, SKIP));
        assert_eq!(heap.data[0].load(Ordering::Relaxed), header(128, 20));
        assert_eq!(recv(&mut r).unwrap().unwrap(), [2; 20]);
        assert_eq!(recv(&mut r), Ok(None));
    }

    #[test]
    fn reserve_up_to_takes_what_fits_now() {
        let heap = HeapRing::new(64);
        let (mut w, mut r) = heap.ends();
        let first = w.reserve_up_to(1000).unwrap().unwrap();
        assert_eq!(first.len(), 24, "capped at max_message");
        w.write(&first, &[7; 24]);
        w.commit(first).unwrap();
        let second = w.reserve_up_to(1000).unwrap().unwrap();
        assert_eq!(second.len(), 24, "the rest of the ring");
        w.write(&second, &[8; 24]);
        w.commit(second).unwrap();
        assert_eq!(w.reserve_up_to(5).unwrap(), None, "full");
        assert_eq!(recv(&mut r).unwrap().unwrap(), [7; 24]);
        let third = w.reserve_up_to(3).unwrap().unwrap();
        assert_eq!(third.len(), 3);
    }

    #[test]
    fn hostile_headers_are_corrupted_never_trusted() {
        type Damage = fn(&HeapRing);
        let cases: [(&str, Damage); 3] = [
            ("length over max_message", |h| h.poke(0, header(0, 57))),
            ("huge length", |h| h.poke(0, header(0, SKIP - 1))),
            ("skip marker at offset 0", |h| h.poke(0, header(0, SKIP))),
        ];
        for (what, damage) in cases {
            let heap = HeapRing::new(128);
            let (mut w, mut r) = heap.ends();
            assert!(send(&mut w, &[5; 16]));
            damage(&heap);
            assert_eq!(r.peek(), Err(Corrupted), "{what}");
        }
        // A frame that would run over the end: at offset 112, 40 bytes.
        let heap = HeapRing::new(128);
        let (mut w, mut r) = heap.ends();
        to_offset_112(&mut w, &mut r);
        heap.poke(112, header(112, 40));
        assert_eq!(r.peek(), Err(Corrupted));
        // A skip marker whose frame at offset 0 is itself a skip marker.
        heap.poke(112, header(112, SKIP));
        heap.poke(0, header(128, SKIP));
        assert_eq!(r.peek(), Err(Corrupted));
    }

    #[test]
    fn a_header_with_the_wrong_stamp_is_not_there_yet() {
        let heap = HeapRing::new(128);
        let (mut w, mut r) = heap.ends();
        assert!(send(&mut w, &[5; 16]));
        heap.poke(0, header(128, 16)); // right length, a lap off
        assert_eq!(r.peek(), Ok(None));
        heap.poke(0, 0); // zeroed memory
        assert_eq!(r.peek(), Ok(None));
    }

    #[test]
    fn stale_bytes_of_an_earlier_lap_never_pass_for_a_header() {
        // The word where the next header goes always holds the not-yet marker: old
        // message bytes that happen to look like the right header cannot be read early.
        let heap = HeapRing::new(128);
        let (mut w, mut r) = heap.ends();
        // Lap 1: a 48-byte message at position 0 whose bytes 8..16 (offset 16) say "a
        // 16-byte message at position 144", which is offset 16 of lap 2.
        let mut first = [0u8; 48];
        first[8..16].copy_from_slice(&header(144, 16).to_ne_bytes());
        for msg in [&first[..], &[1; 48], &[], &[]] {
            assert!(send(&mut w, msg)); // frames of 56, 56, 8 and 8 bytes: to position 128
            assert_eq!(recv(&mut r).unwrap().unwrap(), msg);
        }
        // Lap 2: an 8-byte message at 128; the word after it (position 144) must be the
        // marker, not the old bytes.
        assert!(send(&mut w, &[2; 8]));
        assert_eq!(recv(&mut r).unwrap().unwrap(), [2; 8]);
        assert_eq!(r.peek(), Ok(None));
    }

    #[test]
    fn a_writer_that_re_attaches_steps_over_a_frame_it_never_recorded() {
        let heap = HeapRing::new(128);
        let (mut w, mut r) = heap.ends();
        assert!(send(&mut w, &[3; 16]));
        // As if the writer died between publishing the header and recording `tail`.
        heap.indices.tail.store(0, Ordering::Relaxed);
        let _ = w; // the old writer is gone
        // SAFETY: the only writer now.
        let mut w = unsafe { ByteWriter::attach(heap.ring()) }.unwrap();
        assert_eq!(heap.indices.tail.load(Ordering::Relaxed), 24);
        assert!(send(&mut w, &[4; 8]));
        assert_eq!(recv(&mut r).unwrap().unwrap(), [3; 16]);
        assert_eq!(recv(&mut r).unwrap().unwrap(), [4; 8]);
    }

    #[test]
    fn ends_re_attach_after_the_reader_consumed_a_frame_whose_tail_was_never_recorded() {
        let heap = HeapRing::new(64);
        let (mut w, mut r) = heap.ends();
        // Near the end of the data area, so the next frame wraps with a skip marker.
        for msg in [&b"abcdefghijklmnop"[..], b"0123456789abcdef"] {
            assert!(send(&mut w, msg));
            assert_eq!(recv(&mut r).unwrap().as_deref(), Some(msg));
        }
        let before = heap.ring().indices().tail.load(Ordering::Relaxed);
        assert!(send(&mut w, b"wraps-round!")); // skip marker + frame at offset 0
        assert_eq!(recv(&mut r).unwrap().as_deref(), Some(&b"wraps-round!"[..]));
        // The writer died after publishing the header and skip marker, before `tail`.
        heap.ring().indices().tail.store(before, Ordering::Relaxed);
        let head = heap.ring().indices().head.load(Ordering::Relaxed);
        assert!(head > before, "the reader is past the recorded tail");
        // SAFETY: the old ends are shadowed and never used again; these are the only ones.
        let (mut w, mut r) = unsafe {
            (ByteWriter::attach(heap.ring()).unwrap(), ByteReader::attach(heap.ring()).unwrap())
        };
        assert_eq!(heap.ring().indices().tail.load(Ordering::Relaxed), head, "tail settled");
        assert_eq!(recv(&mut r).unwrap(), None, "nothing replayed");
        assert!(send(&mut w, b"after"));
        assert_eq!(recv(&mut r).unwrap().as_deref(), Some(&b"after"[..]));
    }

    #[test]
    fn positions_that_disagree_are_refused_at_attach() {
        for (head, tail) in [(0, 1 << 40), (0, 12), (64, 0)] {
            let heap = HeapRing::new(128);
            heap.indices.head.store(head, Ordering::Relaxed);
            heap.indices.tail.store(tail, Ordering::Relaxed);
            // SAFETY: the only ends.
            unsafe {
                assert!(ByteWriter::attach(heap.ring()).is_err(), "{head} {tail}");
                assert!(ByteReader::attach(heap.ring()).is_err(), "{head} {tail}");
            }
        }
    }
}

/// Loom model: one direction with a reader that sleeps whenever the ring is empty and a
/// writer that rings after each message, including one that wraps with a skip marker. A
/// lost wake-up leaves the reader asleep, which loom reports as a deadlock.
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::loom::fence;
    use crate::rings::doorbell::Doorbell;
    use crate::wake::futex::{self, Deadline};
    use std::sync::Arc;

    #[test]
    fn a_blocked_reader_gets_every_message_in_order() {
        ::loom::model(|| {
            // Positions as if the ring had carried 96 bytes already, so that the second
            // message wraps: 16 bytes (frame 24, to offset 120), then 20 bytes (frame 32,
            // which does not fit in the last 8: skip marker, then offset 0).
            let indices = Arc::new(Indices::default());
            indices.head.store(96, Ordering::Relaxed);
            indices.tail.store(96, Ordering::Relaxed);
            let data: Arc<[UnsafeCell<u8>]> = (0..128).map(|_| UnsafeCell::new(0)).collect();
            let headers: Arc<[AtomicU64]> = (0..16).map(|_| AtomicU64::new(0)).collect();
            let bell = Arc::new(Doorbell::default());
            // SAFETY: the Arcs outlive both ends; loom builds access the data one byte at a
            // time and the header words in their own table of size / 8; size 128.
            let ring = || unsafe {
                ByteRing::new(
                    NonNull::from(&*indices),
                    NonNull::new(data.as_ptr().cast_mut()).unwrap(),
                    NonNull::new(headers.as_ptr().cast_mut()).unwrap(),
                    128,
                )
            };
            // SAFETY: one writer, one reader.
            let (mut w, mut r) = unsafe {
                (ByteWriter::attach(ring()).unwrap(), ByteReader::attach(ring()).unwrap())
            };
            let messages: [&[u8]; 2] = [&[1; 16], &[2; 20]];
            let writer = {
                let keep = (
                    Arc::clone(&indices),
                    Arc::clone(&data),
                    Arc::clone(&bell),
                    Arc::clone(&headers),
                );
                crate::loom::thread::spawn(move || {
                    for m in messages {
                        let res = w.reserve(m.len()).unwrap().expect("room for both");
                        w.write(&res, m);
                        w.commit(res).unwrap();
                        keep.2.ring(|| fence(Ordering::SeqCst));
                    }
                })
            };
            for want in messages {
                let frame = loop {
                    if let Some(f) = r.peek().unwrap() {
                        break f;
                    }
                    let mut ready = || r.ready();
                    if let Some(seen) = bell.prepare(|| fence(Ordering::SeqCst), &mut ready) {
                        futex::wait(bell.word(), seen, &Deadline::never());
                        bell.done();
                    }
                };
                let mut got = vec![0; frame.len()];
                r.read(&frame, 0, &mut got);
                assert_eq!(got, want);
                r.release(frame);
            }
            writer.join().unwrap();
        });
    }
}
