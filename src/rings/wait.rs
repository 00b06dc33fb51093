//! The one wait loop of every blocking queue and pipe call: try, spin with backoff, then
//! sleep on a doorbell until an absolute deadline.

/// Spins while `ready()` is false, for about 20 us in all (the cost of a sleep and
/// wake-up on this machine class); returns whether it became true. Queues and pipes spin
/// before they sleep, so a stream that keeps up never sleeps.
///
/// It looks after every hint for the first 64 (~1.5 us: an answer crosses the cache in a
/// few hundred nanoseconds, and a longer gap between looks would add to every round
/// trip), then backs off, doubling the gap up to 512 hints.
#[cfg(not(loom))]
pub(crate) fn spin_until(ready: &mut dyn FnMut() -> bool) -> bool {
    for _ in 0..64 {
        if ready() {
            return true;
        }
        crate::loom::spin_loop();
    }
    for round in 1..10 {
        if ready() {
            return true;
        }
        for _ in 0..1u32 << round {
            crate::loom::spin_loop();
        }
    }
    ready()
}
