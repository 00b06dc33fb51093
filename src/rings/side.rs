//! One end of a two-party object (an SPSC queue, a pipe): its role, whether it is still
//! there, and its doorbell.
//!
//! Each end has a [`Side`] in the object's control block. The process holding an end
//! holds the side's role lock through its keeper thread (`crate::rings::keeper`), so the kernel
//! releases the role, with `OWNER_DIED`, when that process dies; the role can then be
//! claimed again. A side that finds nothing to do sleeps on its doorbell *and* on the
//! other side's role word (`futex_waitv`), so the kernel wakes it when the other side's
//! process dies, not only when the other side rings.
//!
//! # States of an end
//!
//! | role word (a [`RawLock`](crate::raw::RawLock)) | `attached` | the end is |
//! |---|---|---|
//! | 0 | 0 | never taken: the peer's blocking calls wait, and never say `Disconnected` |
//! | a keeper's tid | `g >= 1` | held by the `g`-th handle to claim it (`is_connected`) |
//! | 0 or `OWNER_DIED` | `g >= 1` | gone: dropped or died (`gone`); claimable again, as `g + 1` |
//! | `WAITERS` raised | any | as above, and a peer sleeps on the word ([`RawLock::announce_waiter`](crate::raw::RawLock)): the release or the death wakes it |
//!
//! `attached` is written only by the role's holder, after it took the role, and a claim
//! wakes it (for `wait_connected`). The doorbell's own states are in
//! [`doorbell`](super::doorbell).

use std::time::Duration;

use crate::loom::{AtomicU32, Ordering};
use crate::raw::RawLock;
use crate::rings::doorbell::{self, Doorbell, Sleepers};
use crate::rings::keeper::{self, ClaimError, RoleClaim};
use crate::wake::fence;
use crate::wake::futex::{self, Deadline};

/// One end's shared state.
#[repr(C)]
pub(crate) struct Side {
    /// Held by the keeper thread of the process whose handle has this end.
    role: RawLock,
    /// How many times a handle has claimed this end (its *generation*): 0 until the first
    /// claim, so that a non-zero value and a free role mean "left". Never wraps to 0.
    attached: AtomicU32,
    /// This end's sleeping flag and wake word.
    bell: Doorbell,
    _reserved: u32,
}

#[cfg(not(loom))]
const _: () = assert!(size_of::<Side>() == 56 && align_of::<Side>() == 8);

/// How long a sleeper sleeps at most before looking again, as a net under lost wake-ups
/// (there are none by design) and hostile peers.
const SAFETY_SLICE: Duration = Duration::from_millis(50);

impl Side {
    /// Claims this end for the calling process and counts the attachment; returns the
    /// claim and this attachment's generation (1 for the first).
    ///
    /// # Safety
    ///
    /// The returned claim must be dropped before the mapping that holds `self`.
    pub(crate) unsafe fn claim(&self) -> Result<(RoleClaim, u32), ClaimError> {
        fence::register();
        // SAFETY: passed on to our caller.
        match unsafe { keeper::claim(&self.role) } {
            Ok((claim, _)) => {
                // Only the holder of the role writes the count.
                let generation = self.attached.load(Ordering::Relaxed).checked_add(1).unwrap_or(1);
                self.attached.store(generation, Ordering::Release);
                // Whoever waits for this end to be taken up (`wait_held`).
                futex::wake_all(&self.attached);
                Ok((claim, generation))
            }
            Err(e) => Err(e),
        }
    }

    /// Whether this end had attached and is gone now (dropped or dead). Acquire:
    /// everything it published before leaving is visible once this is true.
    #[inline]
    pub(crate) fn gone(&self) -> bool {
        // The role word first: while it is held (the streaming case) one load answers.
        !self.role.is_held_acquire() && self.attached.load(Ordering::Acquire) != 0
    }

    /// Whether a live handle holds this end right now.
    #[inline]
    pub(crate) fn is_held(&self) -> bool {
        self.role.is_held_acquire()
    }

    /// Waits until a live handle holds this end, at most until `deadline`; returns
    /// whether one does. A claim bumps `attached` and wakes the word; the sleep is sliced
    /// as a net under a claimant killed between taking the role and the wake.
    pub(crate) fn wait_held(&self, deadline: &Deadline) -> bool {
        loop {
            let seen = self.attached.load(Ordering::Acquire);
            if self.is_held() {
                return true;
            }
            if deadline.has_passed() {
                return false;
            }
            let _ = futex::wait(&self.attached, seen, &deadline.capped(SAFETY_SLICE));
        }
    }

    /// How many times this end has been claimed (0: never).
    #[inline]
    pub(crate) fn generation(&self) -> u32 {
        self.attached.load(Ordering::Acquire)
    }

    /// Wakes this end if it may be asleep: the light half of the hand-off, run by the
    /// other end after it published something this end may wait for.
    #[inline]
    pub(crate) fn wake(&self) {
        self.bell.ring(fence::light);
    }

    /// As [`wake`](Self::wake), only if this end sleeps for one of `reasons`
    /// ([`doorbell::MESSAGES`](crate::rings::doorbell::MESSAGES), `ROOM`): what a pipe end
    /// uses, since it both sends and receives.
    #[inline]
    pub(crate) fn wake_for(&self, reasons: u32) {
        self.bell.ring_for(reasons, fence::light);
    }

    /// Sleeps on this end's doorbell and on `other`'s role word until woken, `other`
    /// leaves or dies, `deadline` or a safety slice passes, unless `ready()` turns true
    /// after announcing the sleep: the heavy half of the hand-off. Callers loop.
    pub(crate) fn sleep(&self, other: &Side, deadline: &Deadline, ready: &mut dyn FnMut() -> bool) {
        self.sleep_for(doorbell::ANY, other, deadline, ready);
    }

    /// As [`sleep`](Self::sleep), woken only by rings for one of `reasons` (and by the
    /// other end's death).
    pub(crate) fn sleep_for(
        &self,
        reasons: u32,
        other: &Side,
        deadline: &Deadline,
        ready: &mut dyn FnMut() -> bool,
    ) {
        let ready = &mut || ready() || other.gone();
        let Some(seen) = self.bell.prepare_for(reasons, Sleepers::One, fence::heavy, ready) else {
            return;
        };
        // Ask to be woken when the other end's role is released or its holder dies too.
        let (role, word) = other.role.announce_waiter();
        let slice = deadline.capped(SAFETY_SLICE);
        let _ = futex::wait_any(&[(self.bell.word(), seen), (role, word)], &slice);
        self.bell.done(Sleepers::One);
    }
}

/// Where a two-party entry looks for work or room (ring positions, in the mapping).
pub(crate) trait Look: 'static {
    /// Whether there is work or room now (or garbage, for the call to report).
    fn ready(&self) -> bool;
}

/// A wait-set entry on one end of a two-party object (an SPSC end, a pipe end): ready when
/// `look` says there is work or room, or the peer is gone; sleeps on this end's doorbell
/// and on the peer's role word, as [`Side::sleep`] does. Keeps the mapping alive.
pub(crate) struct EndSource<L> {
    _segment: std::sync::Arc<crate::segment::Segment>,
    me: std::ptr::NonNull<Side>,
    peer: std::ptr::NonNull<Side>,
    /// Where it looks, inside the same mapping.
    look: L,
    /// What it waits for (`doorbell::MESSAGES`, `ROOM`, or `ANY` for a queue's side).
    reasons: u32,
}

// SAFETY: the sides and what `look` reads lead into the mapping that `_segment` keeps
// alive (the contract of `boxed`), shared memory read only through atomics.
unsafe impl<L> Send for EndSource<L> {}
// SAFETY: as above.
unsafe impl<L> Sync for EndSource<L> {}

impl<L: Look> EndSource<L> {
    /// The entry for the end `me` (whose peer is `peer`) of the object in `segment`.
    ///
    /// # Safety
    ///
    /// `me`, `peer` and whatever `look` reads must lie in `segment`'s mapping.
    pub(crate) unsafe fn boxed(
        segment: &std::sync::Arc<crate::segment::Segment>,
        me: &Side,
        peer: &Side,
        look: L,
        reasons: u32,
    ) -> Box<dyn crate::wake::many::Source> {
        Box::new(Self {
            _segment: std::sync::Arc::clone(segment),
            me: std::ptr::NonNull::from(me),
            peer: std::ptr::NonNull::from(peer),
            look,
            reasons,
        })
    }

    fn sides(&self) -> (&Side, &Side) {
        // SAFETY: into the mapping `_segment` keeps alive.
        unsafe { (self.me.as_ref(), self.peer.as_ref()) }
    }
}

impl<L: Look> crate::wake::many::Source for EndSource<L> {
    #[inline]
    fn is_ready(&self) -> bool {
        self.look.ready() || self.sides().1.gone()
    }

    /// Raises this end's sleeping flag and asks to be woken when the peer's role is
    /// released or its holder dies: the first half of [`Side::sleep`].
    fn announce(&self) -> crate::wake::many::Announced<'_> {
        let (me, peer) = self.sides();
        let seen = me.bell.announce_for(self.reasons);
        crate::wake::many::Announced {
            wake: (me.bell.word(), seen),
            death: Some(peer.role.announce_waiter()),
        }
    }

    fn done(&self) {
        self.sides().0.bell.done(Sleepers::One);
    }
}
