//! Ring-buffer algorithms for the queues, over memory the caller provides.
//!
//! The named `spsc::Producer`/`Consumer` and `mpmc::Queue` (issue 4) are built on these;
//! until they land, the algorithms are exercised by their unit tests, Miri and loom.
#![allow(dead_code)] // wired up by the named queues

pub(crate) mod doorbell;
pub(crate) mod mpmc_ring;
pub(crate) mod spsc_ring;

/// Spins (doubling pauses, 1023 hints: ~20 us, about the cost of a sleep and wake-up on
/// this machine class) while `ready()` is false; returns whether it became true. Queues
/// spin before they sleep, so a stream that keeps up never sleeps.
#[cfg(not(loom))]
pub(crate) fn spin_until(ready: &mut dyn FnMut() -> bool) -> bool {
    for round in 0..10 {
        if ready() {
            return true;
        }
        for _ in 0..1u32 << round {
            crate::loom::spin_loop();
        }
    }
    ready()
}
