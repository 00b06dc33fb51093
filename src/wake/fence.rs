//! Asymmetric fences between processes: a free light side, an expensive heavy side.
//!
//! A blocking handoff needs a store-load order on both sides: the side going to sleep
//! raises its "sleeping" flag and re-checks for work; the side producing work publishes
//! it and then reads the flag. Paying a full fence on every publish would cost the fast
//! path as much as the data itself. Instead the publishing side uses [`light`] (a compiler
//! fence) and the side about to sleep, which is going to pay for a futex sleep anyway, uses
//! [`heavy`]: `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)`, which makes every running
//! thread of every registered process execute a full barrier. Processes register on first
//! use ([`register`]). Where membarrier is unavailable, both sides fall back to full
//! fences, which is correct, only slower.

use std::sync::OnceLock;

use crate::loom::{Ordering, fence};

/// Whether this process registered for global expedited membarriers.
static REGISTERED: OnceLock<bool> = OnceLock::new();
/// The same, readable with one relaxed load on the fast path (false until registered).
/// A std atomic: a process-local flag outside any loom model.
#[allow(clippy::disallowed_types)]
static LIGHT_IS_FREE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Registers this process, once; returns whether membarrier is in use.
pub(crate) fn register() -> bool {
    *REGISTERED.get_or_init(|| {
        #[cfg(any(loom, miri))]
        return false;
        #[cfg(not(any(loom, miri)))]
        {
            use rustix::thread::{MembarrierCommand, membarrier};
            let ok = membarrier(MembarrierCommand::RegisterGlobalExpedited).is_ok();
            LIGHT_IS_FREE.store(ok, std::sync::atomic::Ordering::Relaxed);
            ok
        }
    })
}

/// The publishing side's fence: free when membarrier is in use. Callers registered
/// (through [`register`]) when they attached, so one relaxed load tells.
#[inline]
pub(crate) fn light() {
    if LIGHT_IS_FREE.load(std::sync::atomic::Ordering::Relaxed) {
        std::sync::atomic::compiler_fence(Ordering::SeqCst);
    } else {
        fence(Ordering::SeqCst);
    }
}

/// The sleeping side's fence: orders this thread's and every registered process's
/// earlier accesses against later ones, as a full fence on each of them would.
pub(crate) fn heavy() {
    #[cfg(not(any(loom, miri)))]
    if register() {
        use rustix::thread::{MembarrierCommand, membarrier};
        if membarrier(MembarrierCommand::GlobalExpedited).is_ok() {
            return;
        }
    }
    fence(Ordering::SeqCst);
}

#[cfg(all(test, not(loom), not(miri)))]
mod tests {
    #[test]
    fn membarrier_is_available_here_and_fences_run() {
        // Linux 4.16+ has it; CI and this machine class run 6.x.
        assert!(super::register());
        super::light();
        super::heavy();
    }
}
