//! The one wait loop of every blocking queue and pipe call: try, spin with backoff, then
//! sleep on a doorbell until an absolute deadline.

use crate::wake::futex::{Deadline, Wait};

/// Spins while `ready()` is false, for about 20 us in all (the cost of a sleep and
/// wake-up on this machine class); returns whether it became true. Queues and pipes spin
/// before they sleep, so a stream that keeps up never sleeps.
///
/// It looks after every hint for the first 64 (~1.5 us: an answer crosses the cache in a
/// few hundred nanoseconds, and a longer gap between looks would add to every round
/// trip), then backs off, doubling the gap up to 512 hints.
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

/// The wait loop of every blocking queue and pipe call: `attempt` once; on a miss, fix
/// the deadline (the streaming case never reads the clock), spin on the cheap look
/// `ready` (if `spin`), then `sleep` on the call's doorbell, which re-checks `ready`
/// after announcing the sleep. Returns `attempt`'s answer, or `None` once `wait` has
/// passed.
///
/// `attempt` owns every verdict (done, disconnected, corrupted, or "would block" for a
/// call that must not wait); `ready` only says whether another attempt is worth making.
/// Both take the call's state (a ring end); `sleep` reaches its doorbell some other way.
pub(crate) fn wait_loop<S, R>(
    state: &mut S,
    wait: Wait,
    spin: bool,
    mut attempt: impl FnMut(&mut S) -> Option<R>,
    mut ready: impl FnMut(&mut S) -> bool,
    mut sleep: impl FnMut(&Deadline, &mut dyn FnMut() -> bool),
) -> Option<R> {
    let mut deadline = None;
    loop {
        if let Some(done) = attempt(state) {
            return Some(done);
        }
        let deadline = deadline.get_or_insert_with(|| wait.deadline());
        if deadline.has_passed() {
            return None;
        }
        let mut look = || ready(state);
        if !(spin && spin_until(&mut look)) {
            sleep(deadline, &mut look);
        }
    }
}
