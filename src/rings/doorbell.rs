//! The one sleep/wake hand-off of every queue and pipe, apart from any particular queue
//! so that loom can check it on heap memory.
//!
//! A side that finds nothing to do raises `sleeping`, runs the *heavy* fence, re-checks
//! for work and only then sleeps on `wake` (at the value it read before raising the flag).
//! The other side, after publishing work, runs the *light* fence and reads `sleeping`;
//! only if it is raised does it lower it, bump `wake` and wake **every** sleeper. The two
//! fences give Dekker's store-load order on both sides: either the sleeper sees the work
//! or the publisher sees the flag. In the queues the heavy fence is a process-wide
//! membarrier and the light one a compiler fence (`crate::wake::fence`); the loom models
//! use SeqCst fences for both, which is what membarrier stands in for.
//!
//! # States of the two words
//!
//! | `sleeping` | `wake` | meaning |
//! |---|---|---|
//! | 0 | any | nobody announced a sleep since the last ring: publishing costs one load |
//! | bits `r` | `w` | a sleeper announced itself, for the reasons `r` (`MESSAGES`, `ROOM`, or both: `ANY`), after reading `w`; the next ring for one of `r` lowers the flag, stores `w + 1` and wakes all |
//!
//! `wake` only counts up (wrapping); a sleeper never sleeps on a value it read after the
//! last ring it could have missed.
//!
//! # One sleeper or many
//!
//! The SPSC queue and the pipe have one sleeper per doorbell ([`Sleepers::One`]): it may
//! lower the flag itself when it leaves, so that a sleep it gave up (work arrived after
//! all, or a timeout) costs the other side no syscall. An MPMC queue has any number
//! ([`Sleepers::Many`]): only the ringer lowers the flag, since a leaving sleeper cannot
//! know whether another still counts on it; a ring then wakes every sleeper, and those
//! that find nothing sleep again. A sleeper that dies leaves the flag up; the next ring
//! lowers it, so a death costs one wake syscall and no lost wake-up.

use crate::loom::{AtomicU32, Ordering};
use crate::wake::futex::{self, Deadline};
use crate::wake::many::sleep_on_words;

/// What a sleeper waits for, as bits of `sleeping`. A queue's side waits for one thing
/// only and uses [`ANY`]; a pipe end, which both sends and receives, says whether it
/// waits for a message or for room, so that the peer's ring for the other reason (room
/// freed by a receive, while this end waits for the next message) does not wake it for
/// nothing. A spurious wake-up there cost the next real one ~15 us on this machine class.
pub(crate) const MESSAGES: u32 = 1;
/// See [`MESSAGES`].
pub(crate) const ROOM: u32 = 2;
/// Any reason: the queues' sides.
pub(crate) const ANY: u32 = MESSAGES | ROOM;

/// How many sides may sleep on one doorbell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sleepers {
    /// One owner (an SPSC end, a pipe end).
    One,
    /// Any number (the consumers, or the producers, of an MPMC queue).
    #[cfg_attr(loom, allow(dead_code))]
    Many,
}

/// A doorbell: the sleeping flag and the futex word.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct Doorbell {
    /// 1 while a sleeper may be asleep on `wake`.
    sleeping: AtomicU32,
    /// Bumped by a ring to wake the sleepers.
    wake: AtomicU32,
}

#[cfg(not(loom))]
const _: () = assert!(size_of::<Doorbell>() == 8 && align_of::<Doorbell>() == 4);

impl Doorbell {
    /// The publishing side, after it published: wakes the sleepers if any may sleep.
    #[inline]
    pub(crate) fn ring(&self, light_fence: impl Fn()) {
        self.ring_for(ANY, light_fence);
    }

    /// As [`ring`](Self::ring), for a sleeper that waits for one of `reasons` only.
    #[inline]
    pub(crate) fn ring_for(&self, reasons: u32, light_fence: impl Fn()) {
        light_fence();
        if self.sleeping.load(Ordering::Relaxed) & reasons != 0 {
            self.wake_sleepers();
        }
    }

    #[inline(never)]
    fn wake_sleepers(&self) {
        self.sleeping.store(0, Ordering::Relaxed);
        self.wake.fetch_add(1, Ordering::Release);
        futex::wake_all(&self.wake);
    }

    /// A sleeper, about to sleep: announces it and re-checks `ready`. Returns the value
    /// to sleep on in [`word`](Self::word), or `None` if there is work after all.
    pub(crate) fn prepare(
        &self,
        sleepers: Sleepers,
        heavy_fence: impl Fn(),
        ready: &mut dyn FnMut() -> bool,
    ) -> Option<u32> {
        self.prepare_for(ANY, sleepers, heavy_fence, ready)
    }

    /// As [`prepare`](Self::prepare), for a sleeper that waits for `reasons` only.
    pub(crate) fn prepare_for(
        &self,
        reasons: u32,
        sleepers: Sleepers,
        heavy_fence: impl Fn(),
        ready: &mut dyn FnMut() -> bool,
    ) -> Option<u32> {
        let seen = self.announce_for(reasons);
        heavy_fence();
        if ready() {
            self.done(sleepers);
            return None;
        }
        Some(seen)
    }

    /// The first half of [`prepare`](Self::prepare): reads the word to sleep on and
    /// raises the flag. The caller runs the heavy fence and re-checks before sleeping
    /// (once for several doorbells: [`sleep_on_many`]).
    pub(crate) fn announce(&self) -> u32 {
        self.announce_for(ANY)
    }

    /// As [`announce`](Self::announce), for a sleeper that waits for `reasons` only. The
    /// bits are or-ed in: one wait set may announce on a pipe end for messages and for
    /// room at once.
    pub(crate) fn announce_for(&self, reasons: u32) -> u32 {
        let seen = self.wake.load(Ordering::Acquire);
        self.sleeping.fetch_or(reasons, Ordering::Relaxed);
        seen
    }

    /// The futex word to sleep on.
    pub(crate) fn word(&self) -> &AtomicU32 {
        &self.wake
    }

    /// The sleeper woke (or gave up): it no longer sleeps.
    pub(crate) fn done(&self, sleepers: Sleepers) {
        if sleepers == Sleepers::One {
            self.sleeping.store(0, Ordering::Relaxed);
        }
    }

    /// Sleeps on this doorbell alone until rung or `deadline`, unless `ready()` holds
    /// after announcing the sleep. Callers loop.
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn sleep(
        &self,
        sleepers: Sleepers,
        heavy_fence: impl Fn(),
        deadline: &Deadline,
        ready: &mut dyn FnMut() -> bool,
    ) {
        if let Some(seen) = self.prepare(sleepers, heavy_fence, ready) {
            let _ = futex::wait(&self.wake, seen, deadline);
            self.done(sleepers);
        }
    }
}

/// One sleeper on several doorbells at once: announces itself on every one, then
/// [`sleep_on_words`](crate::wake::many::sleep_on_words). What the loom models and the real-futex test drive; a
/// [`WaitSet`](crate::WaitSet) announces on its entries (doorbells, peers' role words,
/// events' and semaphores' words) and calls `sleep_on_words` itself.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn sleep_on_many(
    bells: &[(&Doorbell, Sleepers)],
    heavy_fence: impl Fn(),
    deadline: &Deadline,
    ready: &mut dyn FnMut() -> bool,
) {
    let words: Vec<(&AtomicU32, u32)> =
        bells.iter().map(|(b, _)| (b.word(), b.announce())).collect();
    sleep_on_words(&words, heavy_fence, deadline, ready);
    for (bell, sleepers) in bells {
        bell.done(*sleepers);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Real futexes (`futex_waitv`): a sleeper on two doorbells, and two threads that
    /// each publish work on theirs and ring, a thousand rounds; a lost wake-up hangs a
    /// round past its bound and fails.
    #[test]
    #[cfg_attr(miri, ignore)] // Miri has no futex_waitv
    fn a_sleeper_on_two_doorbells_wakes_for_either() {
        let fence = || crate::loom::fence(Ordering::SeqCst);
        for round in 0..1000u32 {
            let bells = Arc::new([Doorbell::default(), Doorbell::default()]);
            let work = Arc::new([AtomicU32::new(0), AtomicU32::new(0)]);
            let producers: Vec<_> = (0..2)
                .map(|i| {
                    let (bells, work) = (Arc::clone(&bells), Arc::clone(&work));
                    std::thread::spawn(move || {
                        if (round + i) % 3 == 0 {
                            std::thread::yield_now();
                        }
                        work[i as usize].store(1, Ordering::Release);
                        bells[i as usize].ring(fence);
                    })
                })
                .collect();
            let deadline = Deadline::after(std::time::Duration::from_secs(10));
            let taken =
                |w: &[AtomicU32; 2]| w.iter().filter(|x| x.load(Ordering::Acquire) == 1).count();
            while taken(&work) < 2 {
                assert!(!deadline.has_passed(), "round {round}: a lost wake-up");
                let mut ready = || taken(&work) == 2;
                let both = [(&bells[0], Sleepers::One), (&bells[1], Sleepers::One)];
                sleep_on_many(&both, fence, &deadline, &mut ready);
            }
            for p in producers {
                p.join().unwrap();
            }
        }
    }
}

#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::loom::fence;
    use std::sync::Arc;

    fn seq_cst() {
        fence(Ordering::SeqCst);
    }

    /// One sleeper: a consumer that sleeps whenever the SPSC ring is empty, a producer
    /// that rings after each push. A lost wake-up leaves the consumer asleep, which loom
    /// reports as a deadlock.
    #[test]
    fn a_sleeping_consumer_is_always_woken() {
        use crate::rings::spsc::ring::PopFailure;
        use crate::rings::spsc::ring::loom_tests::heap_ring;
        ::loom::model(|| {
            let (mut w, mut r, memory) = heap_ring(2);
            let bell = Arc::new(Doorbell::default());
            let producer = {
                let keep = (memory.clone(), Arc::clone(&bell));
                crate::loom::thread::spawn(move || {
                    for v in 1..=2u32 {
                        w.try_push(v).unwrap();
                        keep.1.ring(seq_cst);
                    }
                })
            };
            let mut got = Vec::new();
            while got.len() < 2 {
                match r.try_pop() {
                    Ok(v) => got.push(v),
                    Err(PopFailure::Empty) => {
                        let mut ready = || r.available(1).is_ok_and(|n| n > 0);
                        bell.sleep(Sleepers::One, seq_cst, &Deadline::never(), &mut ready);
                    }
                    Err(PopFailure::Corrupted) => panic!("corrupted"),
                }
            }
            assert_eq!(got, [1, 2]);
            producer.join().unwrap();
        });
    }

    /// Many sleepers: two MPMC consumers that sleep whenever the ring is empty and a
    /// producer that pushes two values, ringing after each. Each consumer takes values
    /// until both are taken (a shared count says so); a wake-up lost by either consumer
    /// (the flag lowered by the other, a ring that woke only one) is a deadlock.
    #[test]
    fn sleeping_mpmc_consumers_are_always_woken() {
        use crate::loom::AtomicU64;
        use crate::rings::mpmc::ring::PopFailure;
        use crate::rings::mpmc::ring::loom_tests::heap_ring;
        let mut builder = ::loom::model::Builder::new();
        builder.preemption_bound = Some(2);
        let runs = crate::loom::counted(builder, || {
            let (ring, memory) = heap_ring(2);
            let bell = Arc::new(Doorbell::default());
            // Values taken so far, by both consumers.
            let taken = Arc::new(AtomicU64::new(0));
            let mut consumers = Vec::new();
            for _ in 0..2 {
                let keep = memory.clone();
                let (bell, taken) = (Arc::clone(&bell), Arc::clone(&taken));
                consumers.push(crate::loom::thread::spawn(move || {
                    let _keep = keep;
                    let mut mine = 0;
                    // Both values taken: nothing more will come.
                    while taken.load(Ordering::Acquire) < 2 {
                        match ring.try_pop() {
                            Ok(_) => {
                                mine += 1;
                                taken.fetch_add(1, Ordering::AcqRel);
                                // Those asleep must see that the count is complete.
                                bell.ring(seq_cst);
                            }
                            Err(PopFailure::Empty) => {
                                let mut ready = || {
                                    ring.next_is_published() || taken.load(Ordering::Acquire) >= 2
                                };
                                bell.sleep(Sleepers::Many, seq_cst, &Deadline::never(), &mut ready);
                            }
                            Err(PopFailure::Corrupted) => panic!("corrupted"),
                        }
                    }
                    mine
                }));
            }
            for v in 1..=2u32 {
                ring.try_push(v).unwrap();
                bell.ring(seq_cst);
            }
            let total: u32 = consumers.into_iter().map(|c| c.join().unwrap()).sum();
            assert_eq!(total, 2);
        });
        assert!(runs > 50_000, "loom explored only {runs} schedules"); // 212,744 when written
    }

    /// A pipe end asleep for messages: its peer pushes one and rings for messages, while a
    /// third side rings for room (which the sleeper does not wait for). The sleeper is
    /// always woken for the message (a lost wake-up is a deadlock), and the ring for room
    /// never takes the flag away from it.
    #[test]
    fn a_sleeper_for_messages_is_woken_whatever_rings_for_room() {
        use crate::rings::spsc::ring::PopFailure;
        use crate::rings::spsc::ring::loom_tests::heap_ring;
        let mut builder = ::loom::model::Builder::new();
        builder.preemption_bound = Some(2);
        let runs = crate::loom::counted(builder, || {
            let (mut w, mut r, memory) = heap_ring(2);
            let bell = Arc::new(Doorbell::default());
            let producer = {
                let keep = (memory.clone(), Arc::clone(&bell));
                crate::loom::thread::spawn(move || {
                    w.try_push(1).unwrap();
                    keep.1.ring_for(MESSAGES, seq_cst);
                })
            };
            let roomer = {
                let bell = Arc::clone(&bell);
                crate::loom::thread::spawn(move || bell.ring_for(ROOM, seq_cst))
            };
            loop {
                match r.try_pop() {
                    Ok(v) => {
                        assert_eq!(v, 1);
                        break;
                    }
                    Err(PopFailure::Empty) => {
                        let mut ready = || r.available(1).is_ok_and(|n| n > 0);
                        let prepared =
                            bell.prepare_for(MESSAGES, Sleepers::One, seq_cst, &mut ready);
                        if let Some(seen) = prepared {
                            let _ = futex::wait(bell.word(), seen, &Deadline::never());
                            bell.done(Sleepers::One);
                        }
                    }
                    Err(PopFailure::Corrupted) => panic!("corrupted"),
                }
            }
            producer.join().unwrap();
            roomer.join().unwrap();
        });
        assert!(runs > 100, "loom explored only {runs} schedules");
    }

    /// A wait set's hand-off: one sleeper on two SPSC rings' doorbells at once, each ring
    /// fed by its own producer that pushes one value and rings. The sleeper takes what is
    /// there and otherwise sleeps on both words; a wake-up lost on either is a deadlock.
    /// Fails if the sleeper's fence is removed (checked when written).
    #[test]
    fn a_set_sleeping_on_two_doorbells_is_always_woken() {
        use crate::rings::spsc::ring::loom_tests::heap_ring;
        let mut builder = ::loom::model::Builder::new();
        builder.preemption_bound = Some(2);
        let runs = crate::loom::counted(builder, || {
            let (mut w1, mut r1, m1) = heap_ring(2);
            let (mut w2, mut r2, m2) = heap_ring(2);
            let (b1, b2) = (Arc::new(Doorbell::default()), Arc::new(Doorbell::default()));
            let p1 = {
                let keep = (m1.clone(), Arc::clone(&b1));
                crate::loom::thread::spawn(move || {
                    w1.try_push(1).unwrap();
                    keep.1.ring(seq_cst);
                })
            };
            let p2 = {
                let keep = (m2.clone(), Arc::clone(&b2));
                crate::loom::thread::spawn(move || {
                    w2.try_push(2).unwrap();
                    keep.1.ring(seq_cst);
                })
            };
            let mut got = Vec::new();
            while got.len() < 2 {
                let before = got.len();
                got.extend(r1.try_pop().ok());
                got.extend(r2.try_pop().ok());
                if got.len() == before {
                    let mut ready = || {
                        r1.available(1).is_ok_and(|n| n > 0) || r2.available(1).is_ok_and(|n| n > 0)
                    };
                    let bells = [(&*b1, Sleepers::One), (&*b2, Sleepers::One)];
                    sleep_on_many(&bells, seq_cst, &Deadline::never(), &mut ready);
                }
            }
            got.sort_unstable();
            assert_eq!(got, [1, 2]);
            p1.join().unwrap();
            p2.join().unwrap();
        });
        assert!(runs > 700, "loom explored only {runs} schedules"); // 3,025 when written
    }
}
