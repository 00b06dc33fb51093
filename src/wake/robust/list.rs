//! This thread's robust list: joining glibc's list, the private mirror of our entries,
//! and the process-wide registry that keeps linked memory mapped. See the parent module.
#![allow(clippy::disallowed_types)] // process-private bookkeeping by address, not a loom-checked algorithm

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicUsize, Ordering, compiler_fence};
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
/// Entries kept in lock-free slots; deeper nesting spills into a vector.
const SLOTS: usize = 16;

/// The entries one thread has linked, bottom first. The thread itself reads and writes
/// them; other threads only read them, for [`any_linked_in`].
struct Entries {
    slots: [AtomicUsize; SLOTS],
    spill: Mutex<Vec<usize>>,
}

impl Entries {
    fn new() -> Self {
        Self { slots: std::array::from_fn(|_| AtomicUsize::new(0)), spill: Mutex::new(Vec::new()) }
    }

    #[inline]
    fn get(&self, i: usize) -> usize {
        if i < SLOTS { self.slots[i].load(Ordering::Relaxed) } else { self.get_spilled(i - SLOTS) }
    }

    #[inline]
    fn set(&self, i: usize, entry: usize) {
        if i < SLOTS {
            // Release: a reader that sees the entry sees it linked.
            self.slots[i].store(entry, Ordering::Release);
        } else {
            self.set_spilled(i - SLOTS, entry);
        }
    }

    #[cold]
    fn get_spilled(&self, at: usize) -> usize {
        lock(&self.spill).get(at).copied().unwrap_or(0)
    }

    #[cold]
    fn set_spilled(&self, at: usize, entry: usize) {
        let mut spill = lock(&self.spill);
        if at < spill.len() {
            spill[at] = entry;
        } else {
            spill.resize(at, 0);
            spill.push(entry);
        }
    }

    /// Forgets entries from `len` on (the caller has moved the ones it keeps).
    #[inline]
    fn truncate(&self, len: usize) {
        if len < SLOTS {
            self.slots[len].store(0, Ordering::Release);
        } else {
            lock(&self.spill).truncate(len - SLOTS);
        }
    }

    fn contains_in(&self, start: usize, end: usize) -> bool {
        let inside = |e: usize| e >= start && e < end;
        self.slots.iter().any(|s| inside(s.load(Ordering::Acquire)))
            || lock(&self.spill).iter().copied().any(inside)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update of the data is one step, so a panic while holding it leaves no damage.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Every thread's entries, for [`any_linked_in`].
static REGISTRY: Mutex<Vec<Arc<Entries>>> = Mutex::new(Vec::new());
static AT_FORK: Once = Once::new();

thread_local! {
    /// The registry guard held across `fork` by the forking thread.
    static FORK_GUARD: std::cell::RefCell<Option<MutexGuard<'static, Vec<Arc<Entries>>>>> =
        const { std::cell::RefCell::new(None) };
    /// This thread's list. Only `with` touches it, never re-entrantly.
    static THREAD: UnsafeCell<ThreadList> = const { UnsafeCell::new(ThreadList::UNINIT) };
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
    // held are not the child's (glibc empties the child's robust list the same way):
    // forget every entry, and let this thread start afresh on its next lock.
    FORK_GUARD.with(|g| {
        if let Some(mut registry) = g.borrow_mut().take() {
            registry.clear();
        }
    });
    let _ = THREAD.try_with(|t| {
        // SAFETY: `fork` is never called from inside `with`, so nothing else borrows it.
        let t = unsafe { &mut *t.get() };
        // Not `Drop`: the parent's entries must not touch the (cleared) registry.
        std::mem::forget(std::mem::replace(t, ThreadList::UNINIT));
    });
}

/// This thread's view of its robust list.
struct ThreadList {
    /// `None` until first use on this thread (and after a fork).
    entries: Option<Arc<Entries>>,
    tid: u32,
    /// Address of the thread's `robust_list_head`; 0 when death detection is unavailable
    /// on this thread (a libc with another node layout).
    head: usize,
    /// How many of our entries are linked.
    len: usize,
    /// The list also holds entries that are not ours (glibc robust mutexes).
    mixed: bool,
}

impl ThreadList {
    const UNINIT: Self = Self { entries: None, tid: 0, head: 0, len: 0, mixed: false };

    fn init(&mut self) {
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
        let entries = Arc::new(Entries::new());
        lock(&REGISTRY).push(Arc::clone(&entries));
        *self =
            Self { entries: Some(entries), tid: gettid(), head: find_head(), len: 0, mixed: false };
    }

    #[inline]
    fn entries(&self) -> &Entries {
        self.entries.as_deref().expect("initialised by `with`")
    }

    #[inline]
    fn head(&self) -> *mut RobustListHead {
        self.head as *mut RobustListHead
    }

    #[inline]
    fn set_pending(&self, entry: usize) {
        if self.head != 0 {
            compiler_fence(Ordering::SeqCst);
            // SAFETY: `head` is this thread's live robust_list_head (glibc's, in its
            // thread descriptor, or ours, leaked): valid for the thread's lifetime, and
            // only this thread and the kernel at its exit use it.
            unsafe { std::ptr::addr_of_mut!((*self.head()).list_op_pending).write_volatile(entry) };
            compiler_fence(Ordering::SeqCst);
        }
    }

    #[inline]
    fn first(&self) -> usize {
        // SAFETY: as in `set_pending`.
        unsafe { std::ptr::addr_of!((*self.head()).list).read_volatile() }
    }

    #[inline]
    fn set_first(&self, entry: usize) {
        // SAFETY: as in `set_pending`.
        unsafe { std::ptr::addr_of_mut!((*self.head()).list).write_volatile(entry) }
    }

    /// Entry `i` of ours, bottom first; `i == len` is past the top.
    #[inline]
    fn entry(&self, i: usize) -> usize {
        self.entries().get(i)
    }

    /// What the head points at if the list holds only our entries.
    #[inline]
    fn expected_first(&self) -> usize {
        if self.len == 0 { self.head } else { self.entry(self.len - 1) }
    }

    #[inline]
    fn link(&mut self, entry: usize) {
        if self.head == 0 {
            return;
        }
        let first = self.first();
        if first != self.expected_first() {
            self.mixed = true;
        }
        // glibc's ENQUEUE: first's back link, our links, then the head.
        // SAFETY: `first` is the head itself or a live entry of this thread's list (read
        // from the private head), and `entry` is the node of a lock we now hold, mapped
        // while held (see `any_linked_in`).
        unsafe {
            store_at((first & !1) - PREV_BEFORE_ENTRY, entry);
            store_at(entry, first);
            store_at(entry - PREV_BEFORE_ENTRY, self.head);
        }
        compiler_fence(Ordering::SeqCst);
        self.set_first(entry);
        self.set_pending(0);
        self.entries().set(self.len, entry);
        self.len += 1;
    }

    #[inline]
    fn unlink(&mut self, entry: usize, node_links: impl FnOnce() -> (usize, usize)) {
        if self.head == 0 {
            return;
        }
        self.set_pending(entry);
        let top = match self.len.checked_sub(1) {
            Some(top) => top,
            None => return,
        };
        // Releases are nearly always last-in first-out: look at the top first.
        let i = if self.entry(top) == entry {
            top
        } else {
            match (0..top).rev().find(|&i| self.entry(i) == entry) {
                Some(i) => i,
                None => return, // not linked by this thread: nothing to undo
            }
        };
        if self.first() != self.expected_first() {
            self.mixed = true;
        }
        let (prev, next) = if self.mixed {
            // Foreign entries are interleaved: only the node knows its neighbours.
            node_links()
        } else {
            let prev = if i == top { self.head } else { self.entry(i + 1) };
            let next = if i == 0 { self.head } else { self.entry(i - 1) };
            (prev, next)
        };
        if plausible(prev) && plausible(next) {
            // glibc's DEQUEUE.
            // SAFETY: in the pure case both are our own live entries or the head; in the
            // mixed case they are the node's links, which glibc trusts the same way for
            // its own process-shared robust mutexes (module docs).
            unsafe {
                store_at((next & !1) - PREV_BEFORE_ENTRY, prev);
                store_at(prev & !1, next);
            }
        }
        compiler_fence(Ordering::SeqCst);
        let entries = self.entries();
        if i != top {
            for j in i..top {
                entries.set(j, entries.get(j + 1));
            }
        }
        entries.truncate(top);
        self.len = top;
        if self.len == 0 && self.mixed && self.first() == self.head {
            self.mixed = false;
        }
    }
}

impl Drop for ThreadList {
    fn drop(&mut self) {
        // A thread exiting with entries still linked (a leaked guard) keeps them
        // published, so their memory is never unmapped under the kernel's walk.
        if let Some(entries) = &self.entries {
            if self.len == 0 {
                lock(&REGISTRY).retain(|p| !Arc::ptr_eq(p, entries));
            }
        }
    }
}

/// A link value we are willing to write through: non-null and pointer-aligned.
#[inline]
fn plausible(addr: usize) -> bool {
    addr >= PREV_BEFORE_ENTRY && addr % 8 == 0
}

/// Stores a pointer-sized value at `addr`.
///
/// # Safety
/// `addr` must be a live, aligned, pointer-sized location that only this thread writes:
/// a field of a robust list node or head of this thread's list.
#[inline]
unsafe fn store_at(addr: usize, value: usize) {
    // SAFETY: guaranteed by the caller; the atomic store tolerates concurrent readers in
    // other processes.
    unsafe { (*(addr as *const AtomicUsize)).store(value, Ordering::Relaxed) }
}

/// Finds this thread's robust list head: glibc's, or one of our own if the thread has
/// none. Returns 0 if the registered list uses another node layout.
fn find_head() -> usize {
    let mut head: usize = 0;
    let mut len: usize = 0;
    // SAFETY: get_robust_list(0, &head, &len) writes two words we own.
    let rc = unsafe {
        libc::syscall(libc::SYS_get_robust_list, 0, &mut head as *mut usize, &mut len as *mut usize)
    };
    if rc == 0 && head != 0 {
        if len != size_of::<RobustListHead>() {
            return 0;
        }
        // SAFETY: the kernel returned the address of this thread's registered head.
        let offset = unsafe { (*(head as *const RobustListHead)).futex_offset };
        return if offset == -(ENTRY_OFFSET as isize) { head } else { 0 };
    }
    // No list registered: register ours. It must outlive every use by the kernel, which
    // walks it after the thread's destructors ran, so it is leaked (32 bytes per such
    // thread). The word before the head is the back-link slot glibc keeps there
    // (`robust_prev`).
    let block: &'static mut [usize; 4] = Box::leak(Box::new([0; 4]));
    let head = &mut block[1] as *mut usize as usize;
    block[1] = head; // empty list: points at itself
    block[2] = (-(ENTRY_OFFSET as isize)) as usize;
    block[3] = 0;
    // SAFETY: a valid robust_list_head for the rest of the thread's life.
    let rc = unsafe { libc::syscall(libc::SYS_set_robust_list, head, size_of::<RobustListHead>()) };
    if rc == 0 { head } else { 0 }
}

pub(crate) fn gettid() -> u32 {
    rustix::thread::gettid().as_raw_nonzero().get().unsigned_abs()
}

/// Runs `f` on this thread's list, or returns `None` once the thread's locals are being
/// destroyed (a guard dropped by another thread-local's destructor).
#[inline]
fn with<R>(f: impl FnOnce(&mut ThreadList) -> R) -> Option<R> {
    THREAD
        .try_with(|t| {
            // SAFETY: only this function touches THREAD, and `f` never calls back into
            // this module, so this is the only live reference.
            let t = unsafe { &mut *t.get() };
            if t.entries.is_none() {
                t.init();
            }
            f(t)
        })
        .ok()
}

/// The uncontended acquire, in one visit to the thread's state: names `entry` in
/// `list_op_pending`, runs `take(tid)` (the CAS), and links `entry` if it succeeded. On
/// failure `entry` stays pending for the contended path, which ends with [`link`] or
/// [`cancel`]; the error carries our tid and what `take` saw.
#[inline]
pub(crate) fn try_acquire(
    entry: usize,
    take: impl Fn(u32) -> Result<(), u32>,
) -> Result<(), (u32, u32)> {
    let outcome = with(|t| {
        t.set_pending(entry);
        match take(t.tid) {
            Ok(()) => {
                t.link(entry);
                Ok(())
            }
            Err(seen) => Err((t.tid, seen)),
        }
    });
    // `None`: this thread's locals are gone; lock without the list.
    outcome.unwrap_or_else(|| {
        let tid = gettid();
        take(tid).map_err(|seen| (tid, seen))
    })
}

/// The acquire attempt failed: nothing is pending any more.
pub(crate) fn cancel() {
    let _ = with(|t| t.set_pending(0));
}

/// The contended path took the lock: link `entry`.
pub(crate) fn link(entry: usize) {
    let _ = with(|t| t.link(entry));
}

/// Releases a held lock in one visit to the thread's state: unlinks `entry` with it
/// pending, runs `release_word` (the store and wake), then clears pending. `node_links`
/// reads the node's own (untrusted) links, needed only when foreign entries interleave.
#[inline]
pub(crate) fn release(
    entry: usize,
    node_links: impl FnOnce() -> (usize, usize),
    release_word: impl Fn(),
) {
    let done = with(|t| {
        t.unlink(entry, node_links);
        release_word();
        t.set_pending(0);
    });
    // `None`: this thread's locals are gone; release without the list.
    if done.is_none() {
        release_word();
    }
}

/// Whether this thread has `entry` linked, that is, holds that lock.
pub(crate) fn holds(entry: usize) -> bool {
    with(|t| (0..t.len).any(|i| t.entry(i) == entry)).unwrap_or(false)
}

/// Whether any thread of this process has an entry linked inside `[start, start+len)`.
pub(crate) fn any_linked_in(start: usize, len: usize) -> bool {
    let end = start.saturating_add(len);
    lock(&REGISTRY).iter().any(|p| p.contains_in(start, end))
}
