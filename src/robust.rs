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
pub(crate) const ENTRY_OFFSET: usize = 32;

#[cfg(any(loom, miri))]
pub(crate) use model::{any_linked_in, begin_release, cancel, end_release, holds, link, prepare};
#[cfg(not(any(loom, miri)))]
pub(crate) use real::{any_linked_in, begin_release, cancel, end_release, holds, link, prepare};

#[cfg(not(any(loom, miri)))]
#[allow(clippy::disallowed_types)] // process-private bookkeeping by address, not a loom-checked algorithm
mod real {
    use std::cell::RefCell;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering, compiler_fence};
    use std::sync::{Arc, Mutex, MutexGuard, Once};

    use super::ENTRY_OFFSET;

    /// The kernel's `struct robust_list_head`.
    #[repr(C)]
    struct RobustListHead {
        list: usize,
        futex_offset: isize,
        list_op_pending: usize,
    }

    /// glibc's back link sits just before the entry.
    const PREV_BEFORE_ENTRY: usize = 8;
    /// Entries published per thread without taking a lock; deeper nesting spills.
    const SLOTS: usize = 16;

    /// The entries one thread has linked, readable by other threads for the unmap check.
    struct Published {
        slots: [AtomicUsize; SLOTS],
        spill: Mutex<Vec<usize>>,
    }

    impl Published {
        fn new() -> Self {
            Self {
                slots: std::array::from_fn(|_| AtomicUsize::new(0)),
                spill: Mutex::new(Vec::new()),
            }
        }

        /// Rewrites the published copy of `entries` from index `from` on.
        fn sync(&self, entries: &[usize], from: usize, old_len: usize) {
            for i in from..old_len.max(entries.len()).min(SLOTS) {
                self.slots[i].store(entries.get(i).copied().unwrap_or(0), Ordering::Release);
            }
            if old_len > SLOTS || entries.len() > SLOTS {
                let mut spill = lock(&self.spill);
                spill.clear();
                spill.extend_from_slice(entries.get(SLOTS..).unwrap_or(&[]));
            }
        }

        fn contains_in(&self, start: usize, end: usize) -> bool {
            let inside = |e: usize| e >= start && e < end;
            self.slots.iter().any(|s| inside(s.load(Ordering::Acquire)))
                || lock(&self.spill).iter().copied().any(inside)
        }
    }

    fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
        // The data stays consistent even if a holder panicked: every update is one step.
        m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Every thread's published entries, for [`any_linked_in`].
    static REGISTRY: Mutex<Vec<Arc<Published>>> = Mutex::new(Vec::new());
    /// Bumped in a forked child, whose copy of every thread's state is stale.
    static GENERATION: AtomicU64 = AtomicU64::new(0);
    static AT_FORK: Once = Once::new();

    thread_local! {
        /// The registry guard held across `fork` by the forking thread.
        static FORK_GUARD: RefCell<Option<MutexGuard<'static, Vec<Arc<Published>>>>> = const { RefCell::new(None) };
        static THREAD: RefCell<Option<ThreadList>> = const { RefCell::new(None) };
    }

    extern "C" fn before_fork() {
        let guard = lock(&REGISTRY);
        FORK_GUARD.with(|g| *g.borrow_mut() = Some(guard));
    }

    extern "C" fn after_fork_parent() {
        FORK_GUARD.with(|g| drop(g.borrow_mut().take()));
    }

    extern "C" fn after_fork_child() {
        // Only the forking thread exists in the child, and the locks its parent's threads
        // held are not the child's: start every thread's state afresh.
        FORK_GUARD.with(|g| {
            if let Some(mut registry) = g.borrow_mut().take() {
                registry.clear();
            }
        });
        GENERATION.fetch_add(1, Ordering::Relaxed);
    }

    /// This thread's view of its robust list.
    struct ThreadList {
        generation: u64,
        tid: u32,
        /// Address of the thread's `robust_list_head`; 0 when death detection is
        /// unavailable on this thread (a libc with another node layout).
        head: usize,
        /// Our linked entries, bottom first.
        entries: Vec<usize>,
        /// The list also holds entries that are not ours (glibc robust mutexes).
        mixed: bool,
        published: Arc<Published>,
    }

    impl ThreadList {
        fn new() -> Self {
            AT_FORK.call_once(|| {
                // SAFETY: registers three extern "C" fns that take no arguments.
                let rc = unsafe {
                    libc::pthread_atfork(
                        Some(before_fork),
                        Some(after_fork_parent),
                        Some(after_fork_child),
                    )
                };
                debug_assert_eq!(rc, 0);
            });
            let published = Arc::new(Published::new());
            lock(&REGISTRY).push(Arc::clone(&published));
            Self {
                generation: GENERATION.load(Ordering::Relaxed),
                tid: gettid(),
                head: find_head(),
                entries: Vec::new(),
                mixed: false,
                published,
            }
        }

        fn head(&self) -> *mut RobustListHead {
            self.head as *mut RobustListHead
        }

        fn set_pending(&self, entry: usize) {
            if self.head != 0 {
                compiler_fence(Ordering::SeqCst);
                // SAFETY: `head` is this thread's live robust_list_head (glibc's, in its
                // thread descriptor, or ours, leaked): valid for the thread's lifetime,
                // and only this thread and the kernel at its exit use it.
                unsafe {
                    std::ptr::addr_of_mut!((*self.head()).list_op_pending).write_volatile(entry)
                };
                compiler_fence(Ordering::SeqCst);
            }
        }

        fn first(&self) -> usize {
            // SAFETY: as in `set_pending`.
            unsafe { std::ptr::addr_of!((*self.head()).list).read_volatile() }
        }

        fn set_first(&self, entry: usize) {
            // SAFETY: as in `set_pending`.
            unsafe { std::ptr::addr_of_mut!((*self.head()).list).write_volatile(entry) }
        }

        /// What the head should point at if the list holds only our entries.
        fn expected_first(&self) -> usize {
            self.entries.last().copied().unwrap_or(self.head)
        }

        fn link(&mut self, entry: usize) {
            if self.head == 0 {
                return;
            }
            let first = self.first();
            if first != self.expected_first() {
                self.mixed = true;
            }
            // glibc's ENQUEUE: first's back link, our links, then the head.
            // SAFETY: `first` is the head itself or a live entry of this thread's list
            // (read from the private head), and `entry` is the lock's node, mapped while
            // the lock is held; see `store_at`.
            unsafe {
                store_at((first & !1) - PREV_BEFORE_ENTRY, entry);
                store_at(entry, first);
                store_at(entry - PREV_BEFORE_ENTRY, self.head);
            }
            compiler_fence(Ordering::SeqCst);
            self.set_first(entry);
            self.set_pending(0);
            let old_len = self.entries.len();
            self.entries.push(entry);
            self.published.sync(&self.entries, old_len, old_len);
        }

        fn unlink(&mut self, entry: usize, node_prev: usize, node_next: usize) {
            if self.head == 0 {
                return;
            }
            self.set_pending(entry);
            let Some(i) = self.entries.iter().rposition(|&e| e == entry) else { return };
            if self.first() != self.expected_first() {
                self.mixed = true;
            }
            let (prev, next) = if self.mixed {
                // Foreign entries are interleaved: only the node knows its neighbours.
                (node_prev, node_next)
            } else {
                let top = self.entries.len() - 1;
                let prev = if i == top { self.head } else { self.entries[i + 1] };
                let next = if i == 0 { self.head } else { self.entries[i - 1] };
                (prev, next)
            };
            if plausible(prev) && plausible(next) {
                // glibc's DEQUEUE.
                // SAFETY: in the pure case both are our own live entries or the head; in
                // the mixed case they are the node's links, which glibc trusts the same
                // way for its own shared robust mutexes (module docs).
                unsafe {
                    store_at((next & !1) - PREV_BEFORE_ENTRY, prev);
                    store_at(prev & !1, next);
                }
            }
            compiler_fence(Ordering::SeqCst);
            let old_len = self.entries.len();
            self.entries.remove(i);
            self.published.sync(&self.entries, i, old_len);
            if self.entries.is_empty() && self.first() == self.head {
                self.mixed = false;
            }
        }
    }

    impl Drop for ThreadList {
        fn drop(&mut self) {
            // A thread exiting with entries still linked (a leaked guard) keeps them
            // published, so their memory is never unmapped under the kernel's walk.
            if self.entries.is_empty() {
                lock(&REGISTRY).retain(|p| !Arc::ptr_eq(p, &self.published));
            }
        }
    }

    /// A link value we are willing to write through: non-null and pointer-aligned.
    fn plausible(addr: usize) -> bool {
        addr >= PREV_BEFORE_ENTRY && addr % 8 == 0
    }

    /// Stores a pointer-sized value at `addr`.
    ///
    /// # Safety
    /// `addr` must be a live, aligned, pointer-sized location that only this thread
    /// writes: a field of a robust list node or head of this thread's list.
    unsafe fn store_at(addr: usize, value: usize) {
        // SAFETY: guaranteed by the caller; the atomic store tolerates concurrent readers
        // in other processes.
        unsafe { (*(addr as *const AtomicUsize)).store(value, Ordering::Relaxed) }
    }

    /// Finds this thread's robust list head: glibc's, or one of our own if the thread has
    /// none. Returns 0 if the registered list uses another node layout.
    fn find_head() -> usize {
        let mut head: usize = 0;
        let mut len: usize = 0;
        // SAFETY: get_robust_list(0, &head, &len) writes two words we own.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_get_robust_list,
                0,
                &mut head as *mut usize,
                &mut len as *mut usize,
            )
        };
        if rc == 0 && head != 0 {
            if len != size_of::<RobustListHead>() {
                return 0;
            }
            // SAFETY: the kernel returned the address of this thread's registered head.
            let offset = unsafe { (*(head as *const RobustListHead)).futex_offset };
            return if offset == -(ENTRY_OFFSET as isize) { head } else { 0 };
        }
        // No list registered: register ours. It must outlive every use by the kernel,
        // which walks it after the thread's destructors ran, so it is leaked (32 bytes
        // per such thread). The word before the head is the back-link slot glibc keeps
        // there (`robust_prev`).
        let block: &'static mut [usize; 4] = Box::leak(Box::new([0; 4]));
        let head = &mut block[1] as *mut usize as usize;
        block[1] = head; // empty list: points at itself
        block[2] = (-(ENTRY_OFFSET as isize)) as usize;
        block[3] = 0;
        // SAFETY: a valid robust_list_head for the rest of the thread's life.
        let rc =
            unsafe { libc::syscall(libc::SYS_set_robust_list, head, size_of::<RobustListHead>()) };
        if rc == 0 { head } else { 0 }
    }

    /// Runs `f` on this thread's list, or returns `None` once the thread's locals are
    /// being destroyed (a guard dropped by another thread-local's destructor).
    fn with<R>(f: impl FnOnce(&mut ThreadList) -> R) -> Option<R> {
        THREAD
            .try_with(|t| {
                let mut t = t.borrow_mut();
                let generation = GENERATION.load(Ordering::Relaxed);
                if t.as_ref().is_none_or(|t| t.generation != generation) {
                    // First use on this thread, or a forked child whose copy of the
                    // parent's entries is not its own.
                    *t = Some(ThreadList::new());
                }
                t.as_mut().map(f)
            })
            .ok()
            .flatten()
    }

    fn gettid() -> u32 {
        rustix::thread::gettid().as_raw_nonzero().get().unsigned_abs()
    }

    /// Names `entry` in `list_op_pending` before an acquire attempt, and returns our tid.
    pub(crate) fn prepare(entry: usize) -> u32 {
        with(|t| {
            t.set_pending(entry);
            t.tid
        })
        .unwrap_or_else(gettid)
    }

    /// The acquire attempt failed: nothing is pending any more.
    pub(crate) fn cancel() {
        let _ = with(|t| t.set_pending(0));
    }

    /// The lock is ours: link `entry` (whose back link is at `entry - 8`).
    pub(crate) fn link(entry: usize) {
        let _ = with(|t| t.link(entry));
    }

    /// Before the lock word is released: unlink `entry` and leave it pending. The node's
    /// own links are passed in, read by the caller from the node.
    pub(crate) fn begin_release(entry: usize, node_prev: usize, node_next: usize) {
        let _ = with(|t| t.unlink(entry, node_prev, node_next));
    }

    /// After the lock word is released and waiters are woken.
    pub(crate) fn end_release() {
        let _ = with(|t| t.set_pending(0));
    }

    /// Whether this thread has `entry` linked, that is, holds that lock.
    pub(crate) fn holds(entry: usize) -> bool {
        with(|t| t.entries.contains(&entry)).unwrap_or(false)
    }

    /// Whether any thread of this process has an entry linked inside `[start, start+len)`.
    pub(crate) fn any_linked_in(start: usize, len: usize) -> bool {
        let end = start.saturating_add(len);
        lock(&REGISTRY).iter().any(|p| p.contains_in(start, end))
    }
}

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

    pub(crate) fn prepare(_entry: usize) -> u32 {
        TID.with(|t| *t)
    }
    pub(crate) fn cancel() {}
    pub(crate) fn link(_entry: usize) {}
    pub(crate) fn begin_release(_entry: usize, _node_prev: usize, _node_next: usize) {}
    pub(crate) fn end_release() {}
    pub(crate) fn holds(_entry: usize) -> bool {
        false
    }
    pub(crate) fn any_linked_in(_start: usize, _len: usize) -> bool {
        false
    }
}
