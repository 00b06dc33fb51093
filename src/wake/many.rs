//! Sleeping on many objects at once: what a sleeper (a [`WaitSet`](crate::WaitSet), the
//! async waiter thread) asks of each kind of object ([`Source`]: is the call this entry
//! stands for worth making now, and which futex words to sleep on until it may be), and
//! the one sleep on all their words ([`sleep_on_words`]).
//!
//! Each handle module implements [`Source`] for its own readiness (it knows its private
//! layout); the sleeper only runs the protocol: look, announce on every entry, one heavy
//! fence, look again, one `futex_waitv`.

// Loom builds have the sleep (its models drive it) but none of the objects' entries.
#![cfg_attr(loom, allow(dead_code))]

use crate::loom::AtomicU32;
use crate::wake::futex::{self, Deadline};

/// A futex word to sleep on and the value it held when the sleep was announced.
pub(crate) type Word<'a> = (&'a AtomicU32, u32);

/// What a sleep on one entry waits for.
#[derive(Debug)]
pub struct Announced<'a> {
    /// The word that the waking side (a ring, a `set`, a `release`) changes and wakes.
    pub(crate) wake: Word<'a>,
    /// A word that the kernel changes and wakes when the peer's process dies (its role
    /// lock's robust word), for two-party objects.
    pub(crate) death: Option<Word<'a>>,
}

/// One registered object, type-erased. Implementations keep the object's mapping alive
/// (an `Arc` of the segment), so an entry stays sound after its handle is dropped; it
/// then answers about memory nobody uses, which is why the set's docs say to remove it.
pub trait Source: Send + Sync {
    /// Whether the call this entry stands for would not say "empty", "full" or "would
    /// block" now: there is something to take, room, the peer is gone (the call says
    /// `Disconnected`) or the shared state is garbage (it says `Corrupted`). Cheap: a few
    /// loads, no syscall, no write.
    fn is_ready(&self) -> bool;

    /// A closer look, made only before the set sleeps: what `is_ready` leaves out because
    /// it costs more (an MPMC queue's scan for dead claims and for live handles).
    fn is_ready_closely(&self) -> bool {
        self.is_ready()
    }

    /// Announces that the set is about to sleep on this entry (raises the flag the
    /// waking side reads), and returns the words to sleep on. The set then runs the heavy
    /// fence and looks again before sleeping.
    fn announce(&self) -> Announced<'_>;

    /// The sleep is over (woken, timed out, or given up because the re-check found work).
    fn done(&self) {}
}

/// The core of a wait set's sleep, once the sleeper has announced itself on every entry
/// (raised each flag and read each word): runs **one** heavy fence, re-checks `ready`
/// (work on any entry), and only then sleeps on all the words in one `futex_waitv` until
/// any is woken or changed, or `deadline`. Each entry's hand-off is the one-doorbell
/// protocol above: a ring after the announce either is seen by the re-check or wakes the
/// sleep. The caller then ends the sleep on each entry (`done`) and loops.
pub(crate) fn sleep_on_words(
    words: &[Word<'_>],
    heavy_fence: impl Fn(),
    deadline: &Deadline,
    ready: &mut dyn FnMut() -> bool,
) {
    heavy_fence();
    if !ready() {
        let _ = futex::wait_any(words, deadline);
    }
}
