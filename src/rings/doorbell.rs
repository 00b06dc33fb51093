//! The sleep/wake hand-off of the queues, apart from any particular queue so that loom
//! can check it on heap memory.
//!
//! A side that finds nothing to do raises `sleeping`, runs the *heavy* fence, re-checks
//! for work and only then sleeps on `wake` (at the value it read before raising the flag).
//! The other side, after publishing work, runs the *light* fence and reads `sleeping`;
//! only if it is raised does it lower it, bump `wake` and make the wake syscall. The two
//! fences give Dekker's store-load order on both sides: either the sleeper sees the work
//! or the publisher sees the flag. In the queues the heavy fence is a process-wide
//! membarrier and the light one a compiler fence (`crate::wake::fence`); the loom model uses
//! SeqCst fences for both, which is what membarrier stands in for.

use crate::loom::{AtomicU32, Ordering};
use crate::wake::futex;

/// One side's flag and futex word.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct Doorbell {
    /// 1 while the owner may be asleep on `wake`.
    sleeping: AtomicU32,
    /// Bumped by the other side to wake the owner.
    wake: AtomicU32,
}

impl Doorbell {
    /// The publishing side, after it published: wakes the owner if it may sleep.
    #[inline]
    pub(crate) fn ring(&self, light_fence: impl Fn()) {
        light_fence();
        if self.sleeping.load(Ordering::Relaxed) != 0 {
            self.sleeping.store(0, Ordering::Relaxed);
            self.wake.fetch_add(1, Ordering::Release);
            futex::wake_all(&self.wake);
        }
    }

    /// The owner, about to sleep: announces it and re-checks `ready`. Returns the value
    /// to sleep on in [`word`](Self::word), or `None` if there is work after all.
    pub(crate) fn prepare(
        &self,
        heavy_fence: impl Fn(),
        ready: &mut dyn FnMut() -> bool,
    ) -> Option<u32> {
        let seen = self.wake.load(Ordering::Acquire);
        self.sleeping.store(1, Ordering::Relaxed);
        heavy_fence();
        if ready() {
            self.sleeping.store(0, Ordering::Relaxed);
            return None;
        }
        Some(seen)
    }

    /// The futex word to sleep on.
    pub(crate) fn word(&self) -> &AtomicU32 {
        &self.wake
    }

    /// The owner woke (or gave up): it no longer sleeps.
    pub(crate) fn done(&self) {
        self.sleeping.store(0, Ordering::Relaxed);
    }
}

#[cfg(not(loom))]
const _: () = assert!(size_of::<Doorbell>() == 8 && align_of::<Doorbell>() == 4);

/// Loom model: a consumer that sleeps whenever the ring is empty, a producer that rings
/// after each push. A lost wake-up leaves the consumer asleep, which loom reports as a
/// deadlock.
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::loom::fence;
    use crate::rings::spsc::ring::{Indices, PopFailure, Reader, RingMemory, Writer};
    use crate::wake::futex::Deadline;
    use std::ptr::NonNull;
    use std::sync::Arc;

    #[test]
    fn a_sleeping_consumer_is_always_woken() {
        ::loom::model(|| {
            let indices = Arc::new(Indices::default());
            let slots: Arc<[crate::loom::UnsafeCell<u32>]> =
                (0..2).map(|_| crate::loom::UnsafeCell::new(0)).collect();
            let bell = Arc::new(Doorbell::default());
            // SAFETY: the Arcs outlive both ends; capacity 2.
            let memory = || unsafe {
                RingMemory::new(
                    NonNull::from(&*indices),
                    NonNull::new(slots.as_ptr().cast_mut()).unwrap(),
                    2,
                )
            };
            // SAFETY: one writer, one reader.
            let (mut w, mut r) =
                unsafe { (Writer::attach(memory()).unwrap(), Reader::attach(memory()).unwrap()) };
            let producer = {
                let keep = (Arc::clone(&indices), Arc::clone(&slots), Arc::clone(&bell));
                crate::loom::thread::spawn(move || {
                    for v in 1..=2u32 {
                        w.try_push(v).unwrap();
                        keep.2.ring(|| fence(Ordering::SeqCst));
                    }
                })
            };
            let mut got = Vec::new();
            while got.len() < 2 {
                match r.try_pop() {
                    Ok(v) => got.push(v),
                    Err(PopFailure::Empty) => {
                        let mut ready = || r.available(1).is_ok_and(|n| n > 0);
                        if let Some(seen) = bell.prepare(|| fence(Ordering::SeqCst), &mut ready) {
                            futex::wait(bell.word(), seen, &Deadline::never());
                            bell.done();
                        }
                    }
                    Err(PopFailure::Corrupted) => panic!("corrupted"),
                }
            }
            assert_eq!(got, [1, 2]);
            producer.join().unwrap();
        });
    }
}
