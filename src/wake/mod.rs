//! Every door to the kernel's futex ABI: futex wait/wake and `futex_waitv` ([`futex`]),
//! the process-wide barrier of the sleep/wake hand-off ([`fence`], `membarrier`), and the
//! robust list that reports a lock owner's death ([`robust`], `get_robust_list`), and one
//! sleep on many objects' words ([`many`]). Nothing outside this folder makes these
//! syscalls.
//!
//! `fence` and `robust` name std's atomics and cells directly, the one exception to "only
//! `loom.rs` does": the fence's flag and the robust list's registry are process-private
//! bookkeeping about the syscalls themselves, never part of an algorithm loom checks.

#[cfg(not(loom))]
pub(crate) mod fence;
pub(crate) mod futex;
pub(crate) mod many;
pub(crate) mod robust;
