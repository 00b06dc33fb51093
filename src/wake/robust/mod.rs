//! Owner-death detection through the kernel's robust futex list.
//!
//! Each thread has one robust list, registered by glibc when the thread starts. When the
//! thread exits (or its process is killed), the kernel walks the list; for every lock
//! word whose owner TID is the dying thread's, it sets `FUTEX_OWNER_DIED`, clears the TID
//! and wakes one waiter. A lock held by a thread is linked into that thread's list for as
//! long as it is held, and the next locker sees `OWNER_DIED`.
//!
//! We join glibc's list rather than replace it (`set_robust_list` would break glibc's own
//! robust mutexes), so our nodes follow glibc's layout: the list entry (`__next`) sits
//! `-futex_offset` = 32 bytes after the lock word, and the back link (`__prev`) 8 bytes
//! before the entry. Around each acquire and release, `list_op_pending` names the lock so
//! that a death half-way through is still handled by the kernel.
//!
//! # Trusting the links
//!
//! Our nodes live in shared memory, so another process could rewrite their links; we must
//! never write through a pointer read from there. Each thread therefore keeps a private
//! mirror of the entries it has linked. While the thread's list holds only our entries
//! (checked against glibc's head, which is private memory) every link and unlink is
//! computed from the mirror. Only when the thread also holds glibc robust mutexes
//! (`PTHREAD_MUTEX_ROBUST`), interleaved with ours, do we fall back to the links stored in
//! the node, exactly as glibc does for its own process-shared robust mutexes.
//!
//! # Unmapping memory that is still linked
//!
//! A guard that is leaked (`mem::forget`) leaves its node linked. Unmapping that memory
//! would leave a dangling entry that later list operations write through. So every
//! thread's mirror is also published in a process-wide registry, and a segment whose
//! range still holds a linked entry is never unmapped ([`any_linked_in`]).
//!
//! Under loom and Miri, which cannot make these syscalls or touch glibc's thread
//! descriptor, linking is a no-op and thread ids are synthetic.

/// Bits 0-29 of a robust lock word: the owner's thread id.
pub(crate) const FUTEX_TID_MASK: u32 = 0x3FFF_FFFF;
/// Bit 30: set by the kernel when the owner died holding the lock.
pub(crate) const FUTEX_OWNER_DIED: u32 = 0x4000_0000;
/// Bit 31: some thread may be sleeping on the word.
pub(crate) const FUTEX_WAITERS: u32 = 0x8000_0000;
/// Distance from a lock word to its list entry (glibc's `-futex_offset` on 64-bit).
#[cfg_attr(any(loom, miri), allow(dead_code))]
pub(crate) const ENTRY_OFFSET: usize = 32;

#[cfg(any(loom, miri))]
pub(crate) use model::{any_linked_in, cancel, current_tid, holds, link, release, try_acquire};
#[cfg(not(any(loom, miri)))]
mod list;
#[cfg(not(any(loom, miri)))]
pub(crate) use list::{
    any_linked_in, cancel, gettid as current_tid, holds, link, release, try_acquire,
};

#[cfg(any(loom, miri))]
#[allow(clippy::disallowed_types)] // a counter outside any model
mod model {
    //! Synthetic thread ids and no kernel list: loom and Miri check the lock algorithm,
    //! the integration tests check death detection.
    use std::sync::atomic::{AtomicU32, Ordering};

    static NEXT_TID: AtomicU32 = AtomicU32::new(1);

    #[cfg(loom)]
    loom::thread_local! {
        static TID: u32 = NEXT_TID.fetch_add(1, Ordering::Relaxed);
    }
    #[cfg(not(loom))]
    std::thread_local! {
        static TID: u32 = NEXT_TID.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn try_acquire(
        _entry: usize,
        take: impl Fn(u32) -> Result<(), u32>,
    ) -> Result<(), (u32, u32)> {
        let tid = TID.with(|t| *t);
        take(tid).map_err(|seen| (tid, seen))
    }
    pub(crate) fn cancel() {}
    pub(crate) fn current_tid() -> u32 {
        TID.with(|t| *t)
    }
    pub(crate) fn link(_entry: usize) {}
    pub(crate) fn release(
        _entry: usize,
        _node_links: impl FnOnce() -> (usize, usize),
        release_word: impl Fn(),
    ) {
        release_word();
    }
    pub(crate) fn holds(_entry: usize) -> bool {
        false
    }
    pub(crate) fn any_linked_in(_start: usize, _len: usize) -> bool {
        false
    }
}
