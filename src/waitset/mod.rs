//! [`WaitSet`]: one thread waiting on many queues, pipes, events and semaphores at once,
//! with one `futex_waitv` per sleep and no file descriptor per object.
//!
//! # The protocol
//!
//! Each object already has a sleep/wake hand-off for its own blocking calls (the queues'
//! and pipes' doorbells, the events' and semaphores' `WAITERS` bits). A set runs the same
//! hand-off on all its entries at once (`wake::many::sleep_on_words`, checked by
//! the loom model `a_set_sleeping_on_two_doorbells_is_always_woken`): it looks at every
//! entry; if none is ready it spins briefly (as blocking calls do), looks closer, then
//! announces the sleep on every entry, runs **one** heavy fence, looks again, and only
//! then sleeps on every entry's word in one `futex_waitv`. A ring, `set` or `release`
//! after the announce either is seen by the second look or wakes the sleep; one before it
//! is seen by the first. The waking side pays nothing more than for a blocking call: it
//! makes the wake syscall only when a sleeper announced itself.
//!
//! Two-party objects (SPSC ends, pipe ends) add their peer's role word, which the kernel
//! changes and wakes when the peer's process dies; MPMC queues, whose "disconnected" is a
//! scan of the members, are looked at closely every 20 ms.

#[cfg(all(feature = "async", not(loom)))]
pub(crate) mod reactor;

use std::time::{Duration, Instant};

use crate::error::WaitSetError;
use crate::rings::wait::spin_until;
use crate::wake::fence;
use crate::wake::futex::{Deadline, Wait};
use crate::wake::many::Source;
use crate::wake::many::sleep_on_words;

/// How long a set sleeps at most before looking closely again: the bound on noticing that
/// an MPMC queue's last other handle is gone (its blocking calls use the same), and a net
/// under hostile peers.
const SLICE: Duration = Duration::from_millis(20);
/// The slice when the peers' death words did not all fit in one `futex_waitv` (more than
/// 64 two-party entries): their deaths are then noticed by looking, this often.
const SHORT_SLICE: Duration = Duration::from_millis(2);
/// How often a look that would be cheap is a close one (see `WaitSet::looks`).
const CLOSE_LOOK_EVERY: u32 = 64;
/// The most words one `futex_waitv` takes.
const MAX_WORDS: usize = 128;

/// Names one registration in a [`WaitSet`]: what `add_*` returned, and what `wait`
/// returns for each ready entry.
///
/// A removed entry's key may be handed out again by a later `add_*`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key(u32);

impl Key {
    /// A small number (below [`WaitSet::MAX_ENTRIES`]): use it to index a table of your
    /// own.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Objects a [`WaitSet`] can wait to pop from: [`spsc::Consumer`](crate::spsc::Consumer)
/// and [`mpmc::Queue`](crate::mpmc::Queue). Sealed.
pub trait CanPop: sealed::CanPop {}

/// Objects a [`WaitSet`] can wait to push into: [`spsc::Producer`](crate::spsc::Producer)
/// and [`mpmc::Queue`](crate::mpmc::Queue). Sealed.
pub trait CanPush: sealed::CanPush {}

pub(crate) mod sealed {
    /// How a handle makes its pop entry.
    pub trait CanPop {
        /// The entry (keeps the mapping alive, not the handle).
        fn pop_source(&self) -> Box<dyn crate::wake::many::Source>;
    }

    /// How a handle makes its push entry.
    pub trait CanPush {
        /// The entry (keeps the mapping alive, not the handle).
        fn push_source(&self) -> Box<dyn crate::wake::many::Source>;
    }
}

/// Waits on many objects at once, like crossbeam-channel's `Select`, iceoryx2's
/// `WaitSet` or Python's `multiprocessing.connection.wait`.
///
/// Register what you wait for: [`add_pop`](Self::add_pop) (an SPSC consumer or an MPMC
/// queue has a value), [`add_push`](Self::add_push) (room), [`add_recv`](Self::add_recv)
/// and [`add_send`](Self::add_send) (a pipe end has a message, or room for one),
/// [`add_event`](Self::add_event) (an event is set), [`add_acquire`](Self::add_acquire) (a
/// semaphore has a permit). Each returns a [`Key`]. [`wait`](Self::wait) blocks until at
/// least one entry is ready and returns the keys of all that are; then make the calls
/// (`try_pop`, `try_recv`, ...) on your handles, which the set does not borrow.
///
/// # The rules
///
/// - **Ready** means the call would not say "empty", "full" or "would block": there is
///   something to take, or room, or the peer is gone (the call says `Disconnected`), or
///   the shared state is garbage (it says `Corrupted`). Readiness is a level, looked at
///   afresh by every `wait`: nothing is consumed by reporting it, and an entry stays
///   ready until its call drains it. A disconnected entry stays ready for good: remove it.
/// - **No lost wake-up**: a value pushed, an event set or a permit released between the
///   set's look and its sleep wakes the sleep (the queues' doorbell protocol, extended to
///   many words; see the module source).
/// - **Fairness**: `wait` reports every ready entry, starting after the entry it reported
///   first last time. A loop that serves only the first key still serves every ready
///   entry in turn; a busy entry registered first cannot starve the others.
/// - **Cost**: when an entry is ready, `wait` makes no syscall (a few loads per entry);
///   otherwise it spins for about 20 us (as blocking calls do; [`set_spin`](Self::set_spin)
///   turns that off), then sleeps in one `futex_waitv`. The senders pay nothing unless
///   the set sleeps.
/// - **Peers' deaths**: an SPSC or pipe peer killed wakes the set at once (the kernel
///   wakes its role word); an MPMC queue's "no other handle left" is noticed within about
///   20 ms, as its own blocking calls notice it.
/// - **Hostile memory** can make an entry look ready while its call finds nothing (a
///   peer rewrote this end's position): `wait` then returns at once each time, so the
///   loop around it keeps running; it never hangs or panics.
/// - **Semaphores** wake one sleeper per `release`: when a set waits on a semaphore that
///   blocking `acquire`s also wait on, the release may wake one of them instead, and the
///   set sees the permit (if it is still there) when its 20 ms slice ends.
/// - **Limits**: at most [`MAX_ENTRIES`](Self::MAX_ENTRIES) entries. Beyond 64 two-party
///   entries their peers' death words no longer fit one `futex_waitv`; the set then looks
///   every 2 ms instead.
/// - An entry keeps its object's memory mapped, not its handle's role: after dropping a
///   handle, remove its key. Do not wait on an entry of an SPSC or pipe end in a set while
///   another thread blocks in a call on the same end: each end has one sleeper slot, and
///   the two would share it (neither loses its wake-up for longer than 50 ms).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use shmsync::{Event, WaitSet, spsc};
///
/// # let opts = shmsync::Options::new().dir(std::env::temp_dir());
/// # let pid = std::process::id();
/// # let (qname, ename) = (format!("doc-ws-q-{pid}"), format!("doc-ws-e-{pid}"));
/// let mut rx = spsc::Consumer::<u64>::create_with(&qname, 16, &opts)?;
/// let stop = Event::create_with(&ename, &opts)?;
/// let mut tx = spsc::Producer::<u64>::open_with(&qname, &opts)?; // usually another process
///
/// let mut set = WaitSet::new();
/// let values = set.add_pop(&rx)?;
/// let stopped = set.add_event(&stop)?;
///
/// tx.push(7)?;
/// assert_eq!(set.wait_timeout(Duration::from_secs(1))?, [values]);
/// assert_eq!(rx.try_pop(), Ok(7));
/// stop.set();
/// assert_eq!(set.wait()?, [stopped]);
/// # drop((tx, rx));
/// # spsc::Consumer::<u64>::unlink_with(&qname, &opts)?;
/// # Event::unlink_with(&ename, &opts)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct WaitSet {
    /// By key; `None` for a removed entry.
    entries: Vec<Option<Box<dyn Source>>>,
    /// Entries present.
    count: usize,
    /// The keys the last wait reported (returned by reference: no allocation per wait).
    ready: Vec<Key>,
    /// Where the next look starts: after the entry reported first last time.
    next: usize,
    /// Looks so far: every [`CLOSE_LOOK_EVERY`]th is a close one even when some entry is
    /// ready, so that busy entries cannot hide another's "disconnected".
    looks: u32,
    spin: bool,
}

impl WaitSet {
    /// The most entries a set holds: what one `futex_waitv` sleeps on.
    pub const MAX_ENTRIES: usize = MAX_WORDS;

    /// An empty set.
    pub fn new() -> Self {
        // The sleep's heavy fence is a membarrier, which needs the process registered
        // (handles register when they attach; this covers a set of events only).
        fence::register();
        Self { entries: Vec::new(), count: 0, ready: Vec::new(), next: 0, looks: 0, spin: true }
    }

    fn add(&mut self, source: Box<dyn Source>) -> Result<Key, WaitSetError> {
        if self.count >= Self::MAX_ENTRIES {
            return Err(WaitSetError::TooMany { limit: Self::MAX_ENTRIES });
        }
        let index = match self.entries.iter().position(Option::is_none) {
            Some(free) => free,
            None => {
                self.entries.push(None);
                self.entries.len() - 1
            }
        };
        self.entries[index] = Some(source);
        self.count += 1;
        Ok(Key(index as u32))
    }

    /// Adds an entry that is ready when `rx` (an [`spsc::Consumer`](crate::spsc::Consumer)
    /// or an [`mpmc::Queue`](crate::mpmc::Queue)) has a value to pop, or its pop would say
    /// `Disconnected` or `Corrupted`.
    ///
    /// # Errors
    ///
    /// `TooMany` if the set is full.
    pub fn add_pop(&mut self, rx: &impl CanPop) -> Result<Key, WaitSetError> {
        self.add(rx.pop_source())
    }

    /// Adds an entry that is ready when `tx` (an [`spsc::Producer`](crate::spsc::Producer)
    /// or an [`mpmc::Queue`](crate::mpmc::Queue)) has room for a value, or its push would
    /// say `Disconnected` or `Corrupted`.
    ///
    /// # Errors
    ///
    /// `TooMany` if the set is full.
    pub fn add_push(&mut self, tx: &impl CanPush) -> Result<Key, WaitSetError> {
        self.add(tx.push_source())
    }

    /// Adds an entry that is ready when `conn` has a message to receive, or its receive
    /// would say `Disconnected` or `Corrupted`.
    ///
    /// # Errors
    ///
    /// `Unsupported` for the sending end of a one-way pipe; `TooMany` if the set is full.
    pub fn add_recv(&mut self, conn: &crate::Connection) -> Result<Key, WaitSetError> {
        let source = conn.recv_source().ok_or_else(|| WaitSetError::Unsupported {
            reason: "this end of a one-way pipe only sends".into(),
        })?;
        self.add(source)
    }

    /// Adds an entry that is ready when `conn` has room to send a message of `len` bytes
    /// at once, or its send would say `Disconnected` or `Corrupted`.
    ///
    /// # Errors
    ///
    /// `Unsupported` for the receiving end of a one-way pipe or a `len` above
    /// [`max_message`](crate::Connection::max_message); `TooMany` if the set is full.
    pub fn add_send(&mut self, conn: &crate::Connection, len: usize) -> Result<Key, WaitSetError> {
        let source =
            conn.send_source(len).map_err(|reason| WaitSetError::Unsupported { reason })?;
        self.add(source)
    }

    /// Adds an entry that is ready while `event` is set.
    ///
    /// # Errors
    ///
    /// `TooMany` if the set is full.
    pub fn add_event(&mut self, event: &crate::Event) -> Result<Key, WaitSetError> {
        self.add(event.wait_source())
    }

    /// Adds an entry that is ready while `semaphore` has a permit. Being reported does not
    /// take it: call [`try_acquire`](crate::Semaphore::try_acquire), which may lose to
    /// another process.
    ///
    /// # Errors
    ///
    /// `TooMany` if the set is full.
    pub fn add_acquire(&mut self, semaphore: &crate::Semaphore) -> Result<Key, WaitSetError> {
        self.add(semaphore.wait_source())
    }

    /// Removes an entry; returns whether `key` named one.
    pub fn remove(&mut self, key: Key) -> bool {
        let removed = self.entries.get_mut(key.index()).and_then(Option::take).is_some();
        if removed {
            self.count -= 1;
            while self.entries.last().is_some_and(Option::is_none) {
                self.entries.pop();
            }
        }
        removed
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the set has no entries.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Sets whether a wait that finds nothing ready first spins for about 20 us before
    /// it sleeps (on by default, as for the queues' blocking calls): a quick sender is
    /// then answered without a wake-up's latency, at the price of a busy core meanwhile.
    pub fn set_spin(&mut self, spin: bool) {
        self.spin = spin;
    }

    /// The keys of the entries ready now, without waiting (empty if none).
    pub fn try_wait(&mut self) -> &[Key] {
        self.collect(true);
        &self.ready
    }

    /// Blocks until at least one entry is ready; returns the keys of all that are.
    ///
    /// # Errors
    ///
    /// `NoEntries` if the set is empty.
    #[inline]
    pub fn wait(&mut self) -> Result<&[Key], WaitSetError> {
        self.wait_for(Wait::Forever)
    }

    /// As [`wait`](Self::wait), for at most `timeout`.
    ///
    /// # Errors
    ///
    /// `Timeout` if no entry became ready in time; `NoEntries` if the set is empty.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<&[Key], WaitSetError> {
        self.wait_for(Wait::For(timeout))
    }

    /// As [`wait`](Self::wait), until `deadline` at most.
    ///
    /// # Errors
    ///
    /// As [`wait_timeout`](Self::wait_timeout).
    pub fn wait_deadline(&mut self, deadline: Instant) -> Result<&[Key], WaitSetError> {
        self.wait_for(Wait::Until(deadline))
    }

    #[inline]
    fn wait_for(&mut self, wait: Wait) -> Result<&[Key], WaitSetError> {
        // The streaming case: something is ready, no clock read, no syscall.
        if self.collect(false) {
            return Ok(&self.ready);
        }
        self.wait_slowly(wait)
    }

    #[inline(never)]
    fn wait_slowly(&mut self, wait: Wait) -> Result<&[Key], WaitSetError> {
        if self.count == 0 {
            return Err(WaitSetError::NoEntries);
        }
        let deadline = wait.deadline();
        loop {
            let spun = self.spin && spin_until(&mut || any_ready(&self.entries));
            if !spun && !self.collect(true) {
                if deadline.has_passed() {
                    return Err(WaitSetError::Timeout);
                }
                sleep(&self.entries, &deadline);
            }
            if self.collect(false) {
                return Ok(&self.ready);
            }
        }
    }

    /// Fills `ready` with the keys of the ready entries, starting at `next`; returns
    /// whether there are any. `closely`: also the closer looks.
    #[inline]
    fn collect(&mut self, closely: bool) -> bool {
        self.ready.clear();
        self.looks = self.looks.wrapping_add(1);
        let closely = closely || self.looks % CLOSE_LOOK_EVERY == 0;
        let (entries, ready) = (&self.entries, &mut self.ready);
        let start = self.next.min(entries.len());
        let (before, from) = entries.split_at(start);
        let mut look = |i: usize, entry: &Option<Box<dyn Source>>| {
            if let Some(source) = entry {
                if source.is_ready() || (closely && source.is_ready_closely()) {
                    ready.push(Key(i as u32));
                }
            }
        };
        from.iter().enumerate().for_each(|(i, e)| look(start + i, e));
        before.iter().enumerate().for_each(|(i, e)| look(i, e));
        match self.ready.first() {
            Some(first) => {
                // No division on the hot path: the next look starts after the first.
                let after = first.index() + 1;
                self.next = if after == self.entries.len() { 0 } else { after };
                true
            }
            None => false,
        }
    }
}

/// Whether any entry is ready (the cheap looks).
fn any_ready(entries: &[Option<Box<dyn Source>>]) -> bool {
    entries.iter().flatten().any(|s| s.is_ready())
}

/// Announces a sleep on every entry, runs one heavy fence, looks again, and sleeps on all
/// the entries' words until one is woken or changed, the slice passes or `deadline`.
fn sleep(entries: &[Option<Box<dyn Source>>], deadline: &Deadline) {
    let mut words = Vec::with_capacity(MAX_WORDS);
    let mut deaths = Vec::new();
    for source in entries.iter().flatten() {
        let announced = source.announce();
        words.push(announced.wake);
        deaths.extend(announced.death);
    }
    let room = MAX_WORDS - words.len();
    let slice = if deaths.len() <= room { SLICE } else { SHORT_SLICE };
    words.extend(deaths.into_iter().take(room));
    let mut ready = || any_ready(entries);
    sleep_on_words(&words, fence::heavy, &deadline.capped(slice), &mut ready);
    for source in entries.iter().flatten() {
        source.done();
    }
}

impl Default for WaitSet {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for WaitSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WaitSet").field("entries", &self.count).finish_non_exhaustive()
    }
}
