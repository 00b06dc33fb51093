use std::io;
use std::ops::Deref;
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use crate::error::{OpenError, RecvError, SendError};
use crate::layout::CachePadded;
use crate::layout::ObjectKind;
use crate::loom::{AtomicU32, Ordering, UnsafeCell};
use crate::pipe::byte_ring::{self, ByteReader, ByteRing, ByteWriter, Frame, Reservation};
use crate::rings::doorbell;
use crate::rings::keeper::RoleClaim;
use crate::rings::side::{EndSource, Side};
use crate::rings::spsc::ring::Indices;
use crate::rings::wait::wait_loop;
use crate::segment::constructors::constructors;
use crate::segment::{Element, Expected, Segment, SegmentInfo, Spec};
use crate::wake::futex::{Deadline, Wait};
use crate::wake::many::Source;

/// `Control::mode` of a pipe with a ring in each direction.
const DUPLEX: u32 = 1;
/// `Control::mode` of a one-way pipe: one ring, from end B to end A.
const ONE_WAY: u32 = 2;
/// Largest ring, in bytes (lengths must fit a frame header's 32 bits).
const MAX_RING: u64 = byte_ring::MAX_SIZE;

/// The segment payload before the rings' data.
#[repr(C)]
struct Control {
    /// Positions of the ring from end B to end A (the only ring of a one-way pipe).
    to_a: Indices,
    /// Positions of the ring from end A to end B (duplex pipes only).
    to_b: Indices,
    a: CachePadded<Side>,
    b: CachePadded<Side>,
    /// [`DUPLEX`] or [`ONE_WAY`], set by the creator before the segment is ready.
    mode: CachePadded<AtomicU32>,
}

#[cfg(not(loom))]
const _: () = assert!(size_of::<Control>() == 896 && align_of::<Control>() == 128);

/// Where the first ring's data starts in the payload; the second follows it.
const DATA_AT: usize = size_of::<Control>();

/// The size of each ring for a requested capacity: the smallest power of two that lets
/// a message of `capacity / 2` bytes through (see [`byte_ring`]: messages of up to half a
/// ring, less an 8-byte header).
fn ring_size(capacity: usize) -> Result<u64, OpenError> {
    let size = (capacity as u64)
        .checked_add(2 * byte_ring::HEADER as u64)
        .map(|n| n.next_power_of_two().max(byte_ring::MIN_SIZE))
        .filter(|&n| capacity > 0 && n <= MAX_RING);
    size.ok_or_else(|| {
        crate::error::invalid_capacity(
            capacity as u64,
            format!(
                "a pipe's capacity must be 1..={} bytes",
                MAX_RING - 2 * byte_ring::HEADER as u64
            ),
        )
    })
}

fn expected() -> Expected {
    Expected {
        kind: ObjectKind::Pipe,
        element: Element {
            size: 1,
            align: align_of::<Control>() as u32,
            // /2: a sleeping end says what it waits for (messages or room) in its doorbell's
            // flag; an end of /1 would miss the rings meant for it.
            type_tag: crate::layout::fnv1a(b"shmsync::Pipe/2"),
        },
    }
}

fn rings(mode: u32) -> u64 {
    if mode == DUPLEX { 2 } else { 1 }
}

fn spec(capacity: usize, mode: u32) -> Result<Spec, OpenError> {
    let size = ring_size(capacity)?;
    let payload_len = (DATA_AT as u64).checked_add(rings(mode) * size).ok_or(OpenError::NoSpace)?;
    Ok(Spec { expected: expected(), capacity: size, payload_len })
}

/// Records the mode in a fresh segment, before anyone can open it.
fn initialise(mode: u32) -> impl FnOnce(NonNull<u8>) {
    move |payload| {
        // SAFETY: the payload starts with a zeroed Control (placed by `spec`), valid for
        // every bit pattern; nobody else sees the segment yet.
        let control = unsafe { &*payload.as_ptr().cast::<Control>() };
        control.mode.store(mode, Ordering::Relaxed);
    }
}

/// One of a pipe's two ends, for [`Pipe::open_end`] and [`Connection::end`].
///
/// [`Pipe::create`] hands out `A` and [`Pipe::open`] `B`; a one-way pipe carries messages
/// from `B` to `A`.
/// # Examples
///
/// ```
/// use shmsync::{End, Pipe};
/// # let opts = shmsync::Options::new().dir(std::env::temp_dir());
/// # let name = format!("doc-{}-{}", "end", std::process::id());
/// let a = Pipe::create_with(&name, 4096, &opts)?;
/// assert_eq!(a.end(), End::A);
/// drop(a); // end A is free again: a restarted creator takes it back by name
/// let a = Pipe::open_end_with(&name, End::A, &opts)?;
/// assert_eq!((a.end(), a.generation()), (End::A, 2));
/// # Pipe::unlink_with(&name, &opts)?;
/// # Ok::<(), shmsync::OpenError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum End {
    /// The creator's end (the receiving end of a one-way pipe).
    A,
    /// The opener's end (the sending end of a one-way pipe).
    B,
}

impl End {
    /// The role's name in errors.
    fn role(self) -> &'static str {
        match self {
            End::A => "end A",
            End::B => "end B",
        }
    }
}

/// Constructors of pipes: each returns one end, a [`Connection`].
///
/// [`create`](Self::create) makes the pipe and returns end A; [`open`](Self::open)
/// returns end B; [`open_or_create`](Self::open_or_create) returns A to the process that
/// created the pipe and B to one that opened it. A one-way pipe
/// ([`create_one_way`](Self::create_one_way), Python's `Pipe(duplex=False)`) carries
/// messages from B to A only.
///
/// `capacity` is in bytes; each direction's ring is the smallest power of two that takes
/// a message of `capacity / 2` bytes, so [`Connection::max_message`] is at least
/// `capacity / 2` and [`Connection::capacity`] at least `capacity`.
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use shmsync::Pipe;
/// # let opts = shmsync::Options::new().dir(std::env::temp_dir());
/// # let name = format!("doc-{}-{}", "pipe", std::process::id());
/// let mut parent = Pipe::create_with(&name, 64 * 1024, &opts)?; // end A
/// let mut child = Pipe::open_with(&name, &opts)?; // end B, usually in another process
/// parent.send(b"ping")?;
/// assert_eq!(&*child.recv_timeout(Duration::from_secs(1))?, b"ping");
/// child.send(b"pong")?;
/// assert_eq!(&*parent.recv()?, b"pong");
/// # drop((parent, child));
/// Pipe::unlink_with(&name, &opts)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub enum Pipe {}

impl Pipe {
    constructors! {
        returns Connection, what "pipe";
        /// Creates the duplex pipe `name` in `/dev/shm` and returns its end A.
        ///
        /// # Errors
        ///
        /// `AlreadyExists`, `InvalidName`, `InvalidCapacity` for a capacity of 0 or one that
        /// needs rings over 4 GiB, and the other [`OpenError`]s of creating a segment.
        create / create_with (capacity: usize) = |name, capacity, opts| {
            let segment = Segment::create(name, &spec(capacity, DUPLEX)?, opts, initialise(DUPLEX))?;
            Connection::attach(segment, End::A)
        };
        /// Creates the one-way pipe `name` and returns its end A, which only receives; the end
        /// B that [`open`](Self::open) returns only sends.
        ///
        /// # Errors
        ///
        /// As [`create`](Self::create).
        create_one_way / create_one_way_with (capacity: usize) = |name, capacity, opts| {
            let segment = Segment::create(name, &spec(capacity, ONE_WAY)?, opts, initialise(ONE_WAY))?;
            Connection::attach(segment, End::A)
        };
        /// Opens the pipe `name` (duplex or one-way) and returns its end B.
        ///
        /// # Errors
        ///
        /// `NotFound`, `Busy` while another live handle holds end B, `KindMismatch` if `name`
        /// is not a pipe, `Corrupted`, and the other [`OpenError`]s of opening a segment.
        open / open_with () = |name, opts| Connection::attach(Segment::open(name, &expected(), opts)?, End::B);
        /// Opens end `end` of the existing pipe `name`: how a restarted process takes up
        /// again the end its dead predecessor held (the server of a request/reply pipe
        /// re-claims end A, which [`open`](Self::open) never hands out).
        ///
        /// Messages the other end sent to the predecessor are still buffered and are
        /// received first; [`Connection::discard_stale`] drops them instead.
        ///
        /// # Errors
        ///
        /// `Busy` while a live handle holds `end`, and those of [`open`](Self::open).
        ///
        /// # Examples
        ///
        /// ```
        /// use shmsync::{End, OpenError, Options, Pipe};
        ///
        /// # let opts = Options::new().dir(std::env::temp_dir());
        /// # let name = format!("doc-pipe-end-{}", std::process::id());
        /// let server = Pipe::create_with(&name, 4096, &opts)?;
        /// assert_eq!(server.end(), End::A);
        /// assert!(matches!(Pipe::open_end_with(&name, End::A, &opts), Err(OpenError::Busy { .. })));
        /// drop(server); // or the server's process dies
        /// let restarted = Pipe::open_end_with(&name, End::A, &opts)?;
        /// assert_eq!(restarted.generation(), 2);
        /// Pipe::unlink_with(&name, &opts)?;
        /// # Ok::<(), Box<dyn std::error::Error>>(())
        /// ```
        open_end / open_end_with (end: End) = |name, end, opts| Connection::attach(Segment::open(name, &expected(), opts)?, end);
        /// Opens the pipe `name`, or creates a duplex one if absent, race-free between
        /// processes: end A to the caller that created it, end B to one that opened it.
        ///
        /// # Errors
        ///
        /// Those of [`create`](Self::create) and [`open`](Self::open).
        open_or_create / open_or_create_with (capacity: usize) = |name, capacity, opts| {
            let spec = spec(capacity, DUPLEX)?;
            let (segment, created) =
                Segment::open_or_create_telling(name, &spec, opts, initialise(DUPLEX))?;
            Connection::attach(segment, if created { End::A } else { End::B })
        };
    }
}

/// One end of a [`Pipe`]: sends messages to the other end and receives its messages.
///
/// Besides messages, a connection is a byte stream: [`io::Write`] sends each `write` as
/// one message (or the part of it that fits), and [`io::Read`] reads across message
/// boundaries, returning `Ok(0)` once the peer is gone and everything it sent was read.
/// # Examples
///
/// Write a message in place, read it in place, or use the connection as a byte stream:
///
/// ```
/// use std::io::{Read, Write};
/// use shmsync::Pipe;
/// # let opts = shmsync::Options::new().dir(std::env::temp_dir());
/// # let name = format!("doc-{}-{}", "connection", std::process::id());
/// let mut a = Pipe::create_with(&name, 4096, &opts)?;
/// let mut b = Pipe::open_with(&name, &opts)?;
/// a.send_with(5, |buf| buf.copy_from_slice(b"hello"))?; // zero-copy
/// let msg = b.recv()?;
/// assert_eq!(&*msg, b"hello");
/// drop(msg); // releases the bytes to the sender
/// a.write_all(b"stream")?;
/// let mut got = [0u8; 6];
/// b.read_exact(&mut got)?;
/// assert_eq!(&got, b"stream");
/// # drop((a, b));
/// # Pipe::unlink_with(&name, &opts)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Connection {
    // Field order is drop order: the end is released before the mapping goes.
    _claim: RoleClaim,
    end: End,
    writer: Option<ByteWriter>,
    reader: Option<ByteReader>,
    /// Bytes of the oldest message already taken by `io::Read`.
    partial: usize,
    /// This attachment's generation (see [`Connection::generation`]).
    generation: u32,
    /// Where the incoming messages the peer had sent before this end attached end: the
    /// ones [`Connection::discard_stale`] drops.
    stale_until: u64,
    /// Whether a waiting call spins before it sleeps.
    spin: bool,
    /// This end's and the other end's shared state, looked up once.
    me: NonNull<Side>,
    peer: NonNull<Side>,
    /// Shared with the wait-set entries of this end, which keep the mapping alive.
    segment: std::sync::Arc<Segment>,
}

// SAFETY: the handle owns its end of the pipe; the mapping is shared memory usable from
// any thread, and the end is held by the process's keeper, not by a thread.
unsafe impl Send for Connection {}

/// Where an end's wait-set entry looks: one direction's ring, and the message length
/// to find room for (`None`: look for a message).
struct Look {
    ring: ByteRing,
    send_len: Option<usize>,
}

impl crate::rings::side::Look for Look {
    fn ready(&self) -> bool {
        match self.send_len {
            Some(len) => self.ring.has_room_for(len),
            None => self.ring.has_message(),
        }
    }
}

impl Connection {
    /// Checks what the segment layer leaves to the pipe and takes up `end`.
    fn attach(segment: Segment, end: End) -> Result<Self, OpenError> {
        let size = segment.capacity();
        if !size.is_power_of_two() || !(byte_ring::MIN_SIZE..=MAX_RING).contains(&size) {
            return Err(OpenError::Corrupted);
        }
        if segment.payload_len() < DATA_AT {
            return Err(OpenError::Corrupted);
        }
        let base = segment.payload();
        // SAFETY: the payload starts with a Control (what `spec` placed first; the length
        // is checked above), 128-byte aligned, valid for every bit pattern.
        let control = unsafe { &*base.as_ptr().cast::<Control>() };
        let mode = control.mode.load(Ordering::Relaxed);
        if mode != DUPLEX && mode != ONE_WAY {
            return Err(OpenError::Corrupted);
        }
        if segment.payload_len() as u64 != DATA_AT as u64 + rings(mode) * size {
            return Err(OpenError::Corrupted);
        }
        // SAFETY: each ring's `size` bytes lie inside the payload (length checked above),
        // 8-aligned (DATA_AT and size are multiples of 128 and 64); the mapping lives as
        // long as `segment`, which the connection owns.
        let ring = |indices: &Indices, k: u64| unsafe {
            let data = base.add(DATA_AT + (k * size) as usize).cast::<UnsafeCell<u8>>();
            ByteRing::new(NonNull::from(indices), data, size)
        };
        let to_a = ring(&control.to_a, 0);
        let to_b = (mode == DUPLEX).then(|| ring(&control.to_b, 1));
        let (me, peer, incoming, outgoing) = match end {
            End::A => (&control.a, &control.b, Some(to_a), to_b),
            End::B => (&control.b, &control.a, to_b, Some(to_a)),
        };
        // SAFETY: the claim is dropped before the mapping (field order of Connection).
        let (claim, generation) = unsafe { me.claim() }
            .map_err(|e| e.into_open_error(segment.info().name(), end.role()))?;
        // SAFETY: our claim of this end makes us the only reader of the incoming ring and
        // the only writer of the outgoing one.
        let reader = incoming.map(|r| unsafe { ByteReader::attach(r) }).transpose();
        // SAFETY: as above.
        let writer = outgoing.map(|r| unsafe { ByteWriter::attach(r) }).transpose();
        let (Ok(reader), Ok(writer)) = (reader, writer) else {
            return Err(OpenError::Corrupted);
        };
        // Everything published before we attached was addressed to an earlier holder.
        let stale_until = reader.as_ref().map_or(0, ByteReader::attached_at);
        Ok(Self {
            _claim: claim,
            end,
            writer,
            reader,
            partial: 0,
            generation,
            stale_until,
            spin: true,
            me: NonNull::from(&**me),
            peer: NonNull::from(&**peer),
            segment: std::sync::Arc::new(segment),
        })
    }

    /// A wait-set entry that is ready when a message waits (`None` on the sending end of
    /// a one-way pipe).
    pub(crate) fn recv_source(&self) -> Option<Box<dyn Source>> {
        let ring = *self.reader.as_ref()?.ring();
        Some(self.source(ring, None))
    }

    /// A wait-set entry that is ready when a message of `len` bytes fits.
    pub(crate) fn send_source(&self, len: usize) -> Result<Box<dyn Source>, String> {
        let writer = self.writer.as_ref().ok_or("this end of a one-way pipe only receives")?;
        let max = writer.ring().max_message();
        if len > max {
            return Err(format!("a message of {len} bytes is longer than this pipe takes ({max})"));
        }
        Ok(self.source(*writer.ring(), Some(len)))
    }

    fn source(&self, ring: ByteRing, send_len: Option<usize>) -> Box<dyn Source> {
        let (me, peer) = self.sides();
        let reasons = if send_len.is_some() { doorbell::ROOM } else { doorbell::MESSAGES };
        // SAFETY: the sides and the ring are in the pipe's mapping.
        unsafe { EndSource::boxed(&self.segment, me, peer, Look { ring, send_len }, reasons) }
    }

    /// The largest message [`send`](Self::send) takes (at least half the capacity asked
    /// for at creation); 0 on the receiving end of a one-way pipe.
    pub fn max_message(&self) -> usize {
        self.writer.as_ref().map_or(0, |w| w.ring().max_message())
    }

    /// The size in bytes of each direction's ring (frames of 8-byte headers and messages
    /// padded to 8 bytes share it).
    pub fn capacity(&self) -> usize {
        self.segment.capacity() as usize
    }

    /// Sets whether a call that must wait (for a message, or for room) first spins for
    /// about 20 us, the cost of a sleep and wake-up on a typical machine, before it
    /// sleeps. On (the default), a quick peer is answered in well under a microsecond; off,
    /// every wait is a futex sleep: no CPU burnt, a wake-up's latency paid each time.
    pub fn set_spin(&mut self, spin: bool) {
        self.spin = spin;
    }

    /// Whether this end can send (false on the receiving end of a one-way pipe).
    pub fn can_send(&self) -> bool {
        self.writer.is_some()
    }

    /// Whether this end can receive (false on the sending end of a one-way pipe).
    pub fn can_recv(&self) -> bool {
        self.reader.is_some()
    }

    /// Which end of the pipe this connection holds.
    pub fn end(&self) -> End {
        self.end
    }

    /// How many times this end of the pipe has been taken up, counting this connection:
    /// 1 for the first holder of the end, 2 for the one after it (a restarted process),
    /// and so on.
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// The other end's [`generation`](Self::generation) right now: 0 before anyone took
    /// it up. A change tells a server that a new client holds the other end (the old one
    /// left or died), so that it can drop what it kept for the old one.
    pub fn peer_generation(&self) -> u32 {
        self.sides().1.generation()
    }

    /// Drops every message still buffered that the other end had sent before this
    /// connection took up its end, addressed to a predecessor (a client that died before
    /// reading its replies, say), and returns how many. Messages sent since are kept. A
    /// message that was being sent at the very moment this end attached counts as
    /// before. Without this call nothing is dropped: a new holder of an end receives what
    /// its predecessor left unread.
    ///
    /// # Errors
    ///
    /// `SendOnly` on the sending end of a one-way pipe; `Corrupted`.
    pub fn discard_stale(&mut self) -> Result<usize, RecvError> {
        let (_, peer) = self.sides();
        let until = self.stale_until;
        let Some(reader) = self.reader.as_mut() else { return Err(RecvError::SendOnly) };
        let mut dropped = 0;
        while (until.wrapping_sub(reader.head()) as i64) > 0 {
            match reader.peek() {
                Ok(Some(frame)) => {
                    reader.release(frame);
                    self.partial = 0;
                    dropped += 1;
                }
                Ok(None) => break,
                Err(_) => return Err(RecvError::Corrupted),
            }
        }
        if dropped > 0 {
            peer.wake_for(doorbell::ROOM);
        }
        Ok(dropped)
    }

    /// Whether a live handle holds the other end right now.
    ///
    /// Until one first does, blocking calls simply wait (their timeouts apply) and never
    /// say `Disconnected`; use [`wait_connected`](Self::wait_connected) to wait for it
    /// with a bound.
    pub fn is_connected(&self) -> bool {
        self.sides().1.is_held()
    }

    /// Waits at most `timeout` for a live handle to hold the other end; returns whether
    /// one does.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use shmsync::{Options, Pipe};
    ///
    /// # let opts = Options::new().dir(std::env::temp_dir());
    /// # let name = format!("doc-pipe-connected-{}", std::process::id());
    /// let a = Pipe::create_with(&name, 4096, &opts)?;
    /// assert!(!a.wait_connected(Duration::from_millis(10)), "nobody opened end B yet");
    /// let b = Pipe::open_with(&name, &opts)?; // usually another process
    /// assert!(a.wait_connected(Duration::from_secs(1)) && b.is_connected());
    /// drop((a, b));
    /// Pipe::unlink_with(&name, &opts)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait_connected(&self, timeout: Duration) -> bool {
        self.sides().1.wait_held(&Deadline::after(timeout))
    }

    /// Waits until `deadline` at most for a live handle to hold the other end; returns
    /// whether one does.
    pub fn wait_connected_deadline(&self, deadline: Instant) -> bool {
        self.sides().1.wait_held(&Deadline::at(deadline))
    }

    /// Whether the other end had attached and is gone (dropped, or its process died).
    /// Messages it sent before may still be waiting.
    pub fn is_abandoned(&self) -> bool {
        self.sides().1.gone()
    }

    /// Facts about the pipe's segment.
    pub fn info(&self) -> &SegmentInfo {
        self.segment.info()
    }

    /// This end's and the other end's shared state.
    fn sides<'a>(&self) -> (&'a Side, &'a Side) {
        let (me, peer) = (self.me, self.peer);
        // SAFETY: both point into the mapping, which lives as long as `self`; callers use
        // the references only while they hold `self` (the lifetime is detached so that
        // they can also borrow a ring end mutably).
        unsafe { (me.as_ref(), peer.as_ref()) }
    }

    /// Sends `msg` as one message, blocking while the ring is full.
    ///
    /// # Errors
    ///
    /// `TooLarge` at once if `msg` is longer than [`max_message`](Self::max_message);
    /// `Disconnected` once the peer had attached and is gone; `ReceiveOnly`; `Corrupted`.
    pub fn send(&mut self, msg: &[u8]) -> Result<(), SendError> {
        self.send_until(msg.len(), Wait::Forever, |buf| buf.copy_from_slice(msg))
    }

    /// Sends `msg`, waiting at most `timeout` for room.
    ///
    /// # Errors
    ///
    /// `Timeout`, and those of [`send`](Self::send).
    pub fn send_timeout(&mut self, msg: &[u8], timeout: Duration) -> Result<(), SendError> {
        self.send_until(msg.len(), Wait::For(timeout), |buf| buf.copy_from_slice(msg))
    }

    /// Sends a message of `len` bytes written in place by `fill` (zero-copy), blocking
    /// while the ring is full. `fill` gets exactly `len` bytes of the ring holding stale
    /// data; nothing is sent if it panics.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send); `fill` is not called on an error.
    pub fn send_with<F: FnOnce(&mut [u8])>(
        &mut self,
        len: usize,
        fill: F,
    ) -> Result<(), SendError> {
        self.send_until(len, Wait::Forever, fill)
    }

    /// [`send_with`](Self::send_with), waiting at most `timeout` for room.
    ///
    /// # Errors
    ///
    /// `Timeout`, and those of [`send`](Self::send).
    pub fn send_with_timeout<F: FnOnce(&mut [u8])>(
        &mut self,
        len: usize,
        timeout: Duration,
        fill: F,
    ) -> Result<(), SendError> {
        self.send_until(len, Wait::For(timeout), fill)
    }

    fn send_until(
        &mut self,
        len: usize,
        wait: Wait,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<(), SendError> {
        let reservation = self.reserve(len, wait)?;
        let (_, peer) = self.sides();
        let Some(writer) = self.writer.as_mut() else { unreachable!("reserve checked") };
        fill(writer.payload(&reservation));
        writer.commit(reservation).map_err(|_| SendError::Corrupted)?;
        peer.wake_for(doorbell::MESSAGES);
        Ok(())
    }

    /// Waits until a message of `len` bytes fits and reserves its room.
    fn reserve(&mut self, len: usize, wait: Wait) -> Result<Reservation, SendError> {
        let (me, peer) = self.sides();
        let spin = self.spin;
        let Some(writer) = self.writer.as_mut() else { return Err(SendError::ReceiveOnly) };
        if len > writer.ring().max_message() {
            return Err(SendError::TooLarge);
        }
        wait_loop(
            writer,
            wait,
            spin,
            |writer| {
                if peer.gone() {
                    return Some(Err(SendError::Disconnected));
                }
                match writer.reserve(len) {
                    Ok(Some(r)) => Some(Ok(r)),
                    Ok(None) => None,
                    Err(_) => Some(Err(SendError::Corrupted)),
                }
            },
            |writer| writer.has_room(len),
            |deadline, room| me.sleep_for(doorbell::ROOM, peer, deadline, room),
        )
        .unwrap_or(Err(SendError::Timeout))
    }

    /// Receives the oldest message, blocking while there is none. The [`Message`] lends
    /// the bytes in place; they are released to the sender when it is dropped.
    ///
    /// # Errors
    ///
    /// `Disconnected` once the peer had attached and is gone and every message it sent
    /// was received (a blocked call notices within about a millisecond of the peer's
    /// death); `SendOnly`; `Corrupted`.
    pub fn recv(&mut self) -> Result<Message<'_>, RecvError> {
        let frame = self.wait_frame(Wait::Forever, true)?;
        Ok(self.lend(frame))
    }

    /// Receives the oldest message, awaiting one while there is none (feature `async`, any
    /// executor). A message already there is lent at once, with no syscall. Cancel-safe:
    /// a dropped future has received nothing.
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv).
    #[cfg(all(feature = "async", not(loom)))]
    pub async fn recv_async(&mut self) -> Result<Message<'_>, RecvError> {
        let mut waits = crate::waitset::reactor::Waits::new();
        loop {
            match self.wait_frame(Wait::Forever, false) {
                Ok(frame) => return Ok(self.lend(frame)),
                Err(RecvError::Empty) => {}
                Err(e) => return Err(e),
            }
            let Some(entry) = self.recv_source() else { return Err(RecvError::SendOnly) };
            waits.next(entry).await;
        }
    }

    /// Sends `msg`, awaiting room while the pipe is full (feature `async`, any executor).
    /// Cancel-safe: a dropped future has sent nothing.
    ///
    /// # Errors
    ///
    /// As [`send`](Self::send).
    #[cfg(all(feature = "async", not(loom)))]
    pub async fn send_async(&mut self, msg: &[u8]) -> Result<(), SendError> {
        let mut waits = crate::waitset::reactor::Waits::new();
        loop {
            match self.send_timeout(msg, Duration::ZERO) {
                Err(SendError::Timeout) => {}
                done => return done,
            }
            // The send checked the direction and the length.
            let entry = self.send_source(msg.len()).map_err(|_| SendError::Corrupted)?;
            waits.next(entry).await;
        }
    }

    /// Receives the oldest message if there is one; never blocks.
    ///
    /// # Errors
    ///
    /// `Empty`, and those of [`recv`](Self::recv).
    pub fn try_recv(&mut self) -> Result<Message<'_>, RecvError> {
        let frame = self.wait_frame(Wait::Forever, false)?;
        Ok(self.lend(frame))
    }

    /// Receives the oldest message, waiting at most `timeout` for one.
    ///
    /// # Errors
    ///
    /// `Timeout`, and those of [`recv`](Self::recv).
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Message<'_>, RecvError> {
        let frame = self.wait_frame(Wait::For(timeout), true)?;
        Ok(self.lend(frame))
    }

    /// Receives the oldest message, waiting at most until `deadline`.
    ///
    /// # Errors
    ///
    /// As [`recv_timeout`](Self::recv_timeout).
    pub fn recv_deadline(&mut self, deadline: Instant) -> Result<Message<'_>, RecvError> {
        let frame = self.wait_frame(Wait::Until(deadline), true)?;
        Ok(self.lend(frame))
    }

    /// Receives the oldest message into `buf` (cleared first), blocking while there is
    /// none, and returns its length. One copy out of shared memory: the form to use with
    /// a peer you do not trust.
    ///
    /// # Errors
    ///
    /// As [`recv`](Self::recv); `buf` is left empty.
    pub fn recv_into(&mut self, buf: &mut Vec<u8>) -> Result<usize, RecvError> {
        buf.clear();
        let msg = self.recv()?;
        buf.extend_from_slice(&msg);
        Ok(msg.len())
    }

    /// The messages as they come, each copied into a `Vec<u8>`, waiting for each, until
    /// the peer is gone and everything it sent was received (`Disconnected`): Python's
    /// `while True: conn.recv()` up to `EOFError`, or crossbeam-channel's `iter`.
    ///
    /// It also ends on `SendOnly` and `Corrupted`; call [`recv`](Self::recv) afterwards to
    /// tell them apart. [`recv`](Self::recv) itself reads in place, without the copy.
    ///
    /// # Examples
    ///
    /// ```
    /// use shmsync::{Options, Pipe, End};
    /// # let opts = Options::new().dir(std::env::temp_dir());
    /// # let name = format!("doc-incoming-{}", std::process::id());
    /// let mut a = Pipe::create_with(&name, 4096, &opts)?;
    /// let mut b = Pipe::open_with(&name, &opts)?; // usually another process
    /// b.send(b"one")?;
    /// b.send(b"two")?;
    /// drop(b);
    /// let got: Vec<Vec<u8>> = a.incoming().collect();
    /// assert_eq!(got, [b"one".to_vec(), b"two".to_vec()]);
    /// # Pipe::unlink_with(&name, &opts)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn incoming(&mut self) -> Incoming<'_> {
        Incoming { connection: self }
    }

    /// Waits at most `timeout` until [`recv`](Self::recv) would not block: a message is
    /// waiting, or the peer is gone, or the pipe is corrupted. `false` after the timeout,
    /// and at once on the sending end of a one-way pipe.
    pub fn poll(&mut self, timeout: Duration) -> bool {
        match self.wait_frame(Wait::For(timeout), true) {
            Ok(_) | Err(RecvError::Disconnected | RecvError::Corrupted) => true,
            Err(_) => false,
        }
    }

    /// Waits for the oldest message (if `block`) and returns its frame, unreleased.
    fn wait_frame(&mut self, wait: Wait, block: bool) -> Result<Frame, RecvError> {
        let (me, peer) = self.sides();
        let spin = self.spin;
        let Some(reader) = self.reader.as_mut() else { return Err(RecvError::SendOnly) };
        wait_loop(
            reader,
            wait,
            spin,
            |reader| match reader.peek() {
                Ok(Some(frame)) => Some(Ok(frame)),
                Err(_) => Some(Err(RecvError::Corrupted)),
                // Everything the peer sent before leaving is visible once it is gone: look
                // once more.
                Ok(None) if peer.gone() => Some(match reader.peek() {
                    Ok(Some(frame)) => Ok(frame),
                    Ok(None) => Err(RecvError::Disconnected),
                    Err(_) => Err(RecvError::Corrupted),
                }),
                Ok(None) if !block => Some(Err(RecvError::Empty)),
                Ok(None) => None,
            },
            |reader| reader.ready(),
            |deadline, ready| me.sleep_for(doorbell::MESSAGES, peer, deadline, ready),
        )
        .unwrap_or(Err(RecvError::Timeout))
    }

    /// Lends the part of `frame` that `io::Read` has not taken yet.
    fn lend(&mut self, frame: Frame) -> Message<'_> {
        let Some(reader) = self.reader.as_ref() else { unreachable!("a frame was read") };
        let bytes = &reader.payload(&frame)[self.partial..];
        let (ptr, len) = (NonNull::from(bytes).cast::<u8>(), bytes.len());
        Message { conn: self, frame, ptr, len }
    }

    /// Releases `frame` to the sender.
    fn release(&mut self, frame: Frame) {
        let (_, peer) = self.sides();
        if let Some(reader) = self.reader.as_mut() {
            reader.release(frame);
            self.partial = 0;
            peer.wake_for(doorbell::ROOM);
        }
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("name", &self.info().name())
            .field("end", &self.end)
            .field("can_send", &self.can_send())
            .field("can_recv", &self.can_recv())
            .field("capacity", &self.capacity())
            .finish_non_exhaustive()
    }
}

/// A received message, read in place: it borrows the ring (and its [`Connection`]) until
/// dropped, which frees its bytes for the sender.
///
/// Its bytes are shared memory: an honest peer leaves them alone until the message is
/// dropped; a dishonest one may change them under you (see the module docs).
/// # Examples
///
/// ```
/// use shmsync::Pipe;
/// # let opts = shmsync::Options::new().dir(std::env::temp_dir());
/// # let name = format!("doc-{}-{}", "message", std::process::id());
/// let mut a = Pipe::create_with(&name, 4096, &opts)?;
/// let mut b = Pipe::open_with(&name, &opts)?;
/// a.send(b"in place")?;
/// let msg = b.recv()?; // borrows the ring: no copy
/// assert_eq!(msg.len(), 8);
/// assert!(msg.starts_with(b"in"));
/// # drop(msg);
/// # drop((a, b));
/// # Pipe::unlink_with(&name, &opts)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Message<'a> {
    conn: &'a mut Connection,
    frame: Frame,
    ptr: NonNull<u8>,
    len: usize,
}

impl Deref for Message<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: the frame's bytes, checked to lie inside the ring, which the borrowed
        // connection keeps mapped; the sender does not reuse them until `drop` releases
        // them.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl AsRef<[u8]> for Message<'_> {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl Drop for Message<'_> {
    fn drop(&mut self) {
        self.conn.release(self.frame);
    }
}

impl std::fmt::Debug for Message<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message").field("len", &self.len).finish_non_exhaustive()
    }
}

fn io_error(
    e: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    kind: io::ErrorKind,
) -> io::Error {
    io::Error::new(kind, e)
}

impl io::Read for Connection {
    /// Reads bytes of the oldest messages, across message boundaries: blocks until at
    /// least one byte is there, then takes what else is already waiting. `Ok(0)` once the
    /// peer is gone and everything it sent was read.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            let frame = match self.wait_frame(Wait::Forever, done == 0) {
                Ok(frame) => frame,
                Err(_) if done > 0 => break, // report it on the next call
                Err(RecvError::Disconnected) => return Ok(0),
                Err(e @ RecvError::SendOnly) => {
                    return Err(io_error(e, io::ErrorKind::Unsupported));
                }
                Err(e) => return Err(io_error(e, io::ErrorKind::InvalidData)),
            };
            let Some(reader) = self.reader.as_ref() else { unreachable!("a frame was read") };
            let n = (frame.len() - self.partial).min(buf.len() - done);
            reader.read(&frame, self.partial, &mut buf[done..done + n]);
            done += n;
            self.partial += n;
            if self.partial == frame.len() {
                self.release(frame);
            }
        }
        Ok(done)
    }
}

impl io::Write for Connection {
    /// Sends as much of `buf` as fits now as one message (up to
    /// [`max_message`](Connection::max_message)), blocking only while nothing fits.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let (me, peer) = self.sides();
        let spin = self.spin;
        let Some(writer) = self.writer.as_mut() else {
            return Err(io_error(SendError::ReceiveOnly, io::ErrorKind::Unsupported));
        };
        let written = wait_loop(
            writer,
            Wait::Forever,
            spin,
            |writer| {
                if peer.gone() {
                    return Some(Err(SendError::Disconnected));
                }
                match writer.reserve_up_to(buf.len()) {
                    Ok(Some(r)) => {
                        let n = r.len();
                        writer.payload(&r).copy_from_slice(&buf[..n]);
                        Some(writer.commit(r).map(|()| n).map_err(|_| SendError::Corrupted))
                    }
                    Ok(None) => None,
                    Err(_) => Some(Err(SendError::Corrupted)),
                }
            },
            |writer| writer.has_room(1),
            |deadline, room| me.sleep_for(doorbell::ROOM, peer, deadline, room),
        );
        match written {
            Some(Ok(n)) => {
                peer.wake_for(doorbell::MESSAGES);
                Ok(n)
            }
            Some(Err(SendError::Disconnected)) => {
                Err(io_error(SendError::Disconnected, io::ErrorKind::BrokenPipe))
            }
            Some(Err(e)) => Err(io_error(e, io::ErrorKind::InvalidData)),
            None => unreachable!("a wait without deadline does not time out"),
        }
    }

    /// Nothing to do: every `write` is published when it returns.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The messages of a [`Connection`], as [`Connection::incoming`] gives them.
#[derive(Debug)]
pub struct Incoming<'a> {
    connection: &'a mut Connection,
}

impl Iterator for Incoming<'_> {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        let mut buf = Vec::new();
        self.connection.recv_into(&mut buf).ok().map(|_| buf)
    }
}
