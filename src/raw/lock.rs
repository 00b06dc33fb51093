//! `RawLock`: a futex mutex that reports its owner's death.
//!
//! The lock word uses the kernel's robust-futex layout, so that the kernel itself marks
//! the lock when its owner dies (see `crate::wake::robust`):
//!
//! | bits  | name         | meaning                                                      |
//! |-------|--------------|--------------------------------------------------------------|
//! | 0-29  | owner TID    | 0: unlocked. `0x3FFF_FFFF`: not recoverable. Else the owner's thread id |
//! | 30    | `OWNER_DIED` | set by the kernel when the owner died holding the lock       |
//! | 31    | `WAITERS`    | a thread may sleep on the word: unlocking must wake one       |
//!
//! Transitions:
//! - lock, uncontended: `0 -> tid` with one CAS (Acquire). No syscall.
//! - lock, contended: spin briefly, then set `WAITERS` and `FUTEX_WAIT`. A thread that
//!   has slept takes the lock as `tid | WAITERS`, since others may still sleep (the same
//!   rule as std's futex mutex).
//! - lock after a death: `OWNER_DIED (| WAITERS) -> tid (| WAITERS)`, reported as
//!   `OwnerDied`; the guard is *inconsistent* until `mark_consistent`.
//! - unlock: swap to 0 (Release); `FUTEX_WAKE` one only if `WAITERS` was set. An
//!   inconsistent guard instead stores `NOT_RECOVERABLE` and wakes everyone, so that every
//!   present and future locker gets `NotRecoverable`.
//!
//! Deaths of waiters. A waiter names the lock in its thread's `list_op_pending` for the
//! whole wait, so if it dies the kernel looks at the word: when the word is 0 it wakes one
//! other waiter, passing on a wake-up the dead one may have taken. Two states escape that
//! rule, both found by kill loops: the wake-up's receiver dies after a third thread took
//! the free lock without `WAITERS` (the word is that thread's tid, whose unlock wakes
//! nobody), or after the kernel woke it for a dead owner (the word is `OWNER_DIED`, not
//! 0). So every sleep is bounded by [`LOST_WAKE_SLICE`](crate::wake::futex::LOST_WAKE_SLICE):
//! a waiter left asleep on a free lock takes it within 10 ms; on a held one it raises
//! `WAITERS` again and sleeps until the unlock. A waiter that leaves on a timeout after
//! being woken leaves nothing to pass on: it had found the lock held and raised
//! `WAITERS` on it, so the holder's unlock wakes the next one.
//!
//! Design after Rust std's `sys/sync/mutex/futex.rs` (three-state futex mutex with a cold
//! contended path) and glibc's robust mutexes (`pthread_mutex_lock.c`), with shared (never
//! private) futexes.

use std::marker::PhantomData;
use std::time::{Duration, Instant};

use crate::error::{LockError, LockResult, TryLockError};
use crate::loom::{AtomicU32, AtomicU64, Ordering, spin_loop};
use crate::wake::futex::{self, Deadline, WaitOutcome};
use crate::wake::robust::{self, FUTEX_OWNER_DIED, FUTEX_TID_MASK, FUTEX_WAITERS};

/// The owner-TID value of a lock that can never be acquired again. Larger than any real
/// thread id (`PID_MAX_LIMIT` is 2^22), so the kernel never mistakes it for an owner.
const NOT_RECOVERABLE: u32 = FUTEX_TID_MASK;

/// Rounds of spinning before sleeping. Round `n` waits `2^n` spin hints (about 20 ns
/// each on the EPYC machines we measure on) before looking at the word again, so the
/// whole spin lasts about 1000 hints (~20 us): as long as a sleep and wake-up costs on a
/// machine whose idle cores halt, and rarely long. Backing off keeps the spinner's reads
/// from stealing the cache line from the owner, which linear spinning did (the
/// `lock_handover` relay ran 30% slower with std's 100 hints at a fixed pace). Loom
/// explores schedules, not time: no spin.
#[cfg(not(loom))]
const SPIN_ROUNDS: u32 = 10;
#[cfg(loom)]
const SPIN_ROUNDS: u32 = 0;

/// A lock that can live in shared memory and reports its owner's death.
///
/// This is the lock of [`Lock`](crate::Lock) as a plain `#[repr(C)]` value (40 bytes), to
/// place inside a layout of your own in a [`Shared`](crate::Shared). An all-zero value is
/// an unlocked lock, so a freshly created segment needs no initialisation.
///
/// # Examples
///
/// ```
/// use shmsync::raw::RawLock;
///
/// let lock = RawLock::new();
/// let guard = lock.lock().unwrap();
/// assert!(lock.try_lock().is_err());
/// drop(guard);
/// assert!(lock.try_lock().is_ok());
/// ```
#[repr(C)]
pub struct RawLock {
    /// The robust futex word: see the state table in the module docs.
    word: AtomicU32,
    _reserved0: u32,
    _reserved1: [u64; 2],
    /// glibc's `__prev`: the back link of the robust list node. Process-private pointer
    /// of the current owner; meaningless to anyone else, never read by non-owners.
    list_prev: AtomicU64,
    /// glibc's `__next`, the robust list entry: exactly 32 bytes after `word`.
    list_next: AtomicU64,
}

#[cfg(not(loom))]
const _: () = {
    assert!(size_of::<RawLock>() == 40);
    assert!(align_of::<RawLock>() == 8);
    assert!(std::mem::offset_of!(RawLock, list_prev) == robust::ENTRY_OFFSET - 8);
    assert!(std::mem::offset_of!(RawLock, list_next) == robust::ENTRY_OFFSET);
};

// SAFETY: repr(C) of integers and atomics: every bit pattern is a valid RawLock (a
// garbage word is a lock held by nobody alive, or corrupt links that only ever its own
// owner reads), no pointers that other processes dereference, all changes atomic.
unsafe impl crate::ShmSafe for RawLock {
    fn type_tag() -> u64 {
        crate::layout::fnv1a(b"shmsync::raw::RawLock/1")
    }
}

// SAFETY: all shared state is atomic; the robust-list links are only written by the
// owning thread, through the guard, which is not Send.
unsafe impl Sync for RawLock {}
// SAFETY: as above.
unsafe impl Send for RawLock {}

/// What an acquisition attempt ended with.
enum Acquired {
    Clean,
    OwnerDied,
    NotRecoverable,
    WouldBlock,
}

impl RawLock {
    /// An unlocked lock.
    #[cfg(not(loom))]
    pub const fn new() -> Self {
        Self {
            word: AtomicU32::new(0),
            _reserved0: 0,
            _reserved1: [0; 2],
            list_prev: AtomicU64::new(0),
            list_next: AtomicU64::new(0),
        }
    }

    /// An unlocked lock.
    #[cfg(loom)]
    pub fn new() -> Self {
        Self {
            word: AtomicU32::new(0),
            _reserved0: 0,
            _reserved1: [0; 2],
            list_prev: AtomicU64::new(0),
            list_next: AtomicU64::new(0),
        }
    }

    /// Address of this lock's robust list entry in this process.
    fn entry(&self) -> usize {
        &self.list_next as *const AtomicU64 as usize
    }

    /// Acquires the lock, blocking while another thread or process holds it.
    ///
    /// # Errors
    ///
    /// [`LockError::OwnerDied`] with the guard if the previous owner died holding the
    /// lock; [`LockError::NotRecoverable`] if such a death was never repaired.
    ///
    /// # Panics
    ///
    /// If the calling thread already holds this lock (it would deadlock).
    pub fn lock(&self) -> LockResult<LockGuard<'_>> {
        match self.acquire(&Deadline::never(), false) {
            Acquired::Clean => Ok(LockGuard::new(self, false)),
            Acquired::OwnerDied => Err(LockError::OwnerDied(LockGuard::new(self, true))),
            Acquired::NotRecoverable => Err(LockError::NotRecoverable),
            Acquired::WouldBlock => unreachable!("an untimed lock never gives up"),
        }
    }

    /// Acquires the lock if nobody holds it; never blocks (and makes no syscall).
    ///
    /// # Errors
    ///
    /// [`TryLockError::WouldBlock`] if it is held, and the errors of [`lock`](Self::lock).
    pub fn try_lock(&self) -> Result<LockGuard<'_>, TryLockError<LockGuard<'_>>> {
        self.try_acquire(&Deadline::never(), true)
    }

    /// Acquires the lock, waiting at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`TryLockError::WouldBlock`] when the time runs out, and the errors of
    /// [`lock`](Self::lock).
    pub fn try_lock_for(
        &self,
        timeout: Duration,
    ) -> Result<LockGuard<'_>, TryLockError<LockGuard<'_>>> {
        self.try_acquire(&Deadline::after(timeout), false)
    }

    /// Acquires the lock, waiting at most until `deadline`.
    ///
    /// # Errors
    ///
    /// As [`try_lock_for`](Self::try_lock_for).
    pub fn try_lock_until(
        &self,
        deadline: Instant,
    ) -> Result<LockGuard<'_>, TryLockError<LockGuard<'_>>> {
        self.try_acquire(&Deadline::at(deadline), false)
    }

    /// Whether some thread holds the lock right now (a snapshot, for diagnostics).
    pub fn is_locked(&self) -> bool {
        let owner = self.word.load(Ordering::Relaxed) & FUTEX_TID_MASK;
        owner != 0 && owner != NOT_RECOVERABLE
    }

    #[cfg_attr(loom, allow(dead_code))] // the queues, which loom builds leave out
    /// Whether the lock is held, with Acquire ordering: a holder's writes before it
    /// released the lock (or died) are visible once this returns false. For role locks.
    #[inline]
    pub(crate) fn is_held_acquire(&self) -> bool {
        let owner = self.word.load(Ordering::Acquire) & FUTEX_TID_MASK;
        owner != 0 && owner != NOT_RECOVERABLE
    }

    /// The thread id of the holder, if the lock is held: for error messages.
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn holder_tid(&self) -> Option<u32> {
        let owner = self.word.load(Ordering::Relaxed) & FUTEX_TID_MASK;
        (owner != 0 && owner != NOT_RECOVERABLE).then_some(owner)
    }

    /// Asks to be woken when the lock is released or its holder dies, for a sleeper that
    /// waits on this word together with others (`futex_waitv`): raises `WAITERS`, which
    /// the holder's unlock and the kernel's death handling both honour. Returns the word
    /// and the flagged value to sleep on (raised again if the word changed meanwhile: a
    /// value without the flag would leave the sleeper to its safety slice).
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn announce_waiter(&self) -> (&AtomicU32, u32) {
        (&self.word, futex::raise_now(&self.word, FUTEX_WAITERS))
    }

    /// Whether the last owner died holding the lock and nobody has taken it since (the
    /// kernel's `OWNER_DIED` mark on a free word): what condition waiters look for.
    pub(crate) fn owner_died(&self) -> bool {
        let word = self.word.load(Ordering::Relaxed);
        word & FUTEX_OWNER_DIED != 0 && word & FUTEX_TID_MASK == 0
    }

    /// The word decoded for `shmsync inspect`, from one load: the raw word, the owner's
    /// thread id, `OWNER_DIED` and `WAITERS` (and whether it is not recoverable).
    #[cfg(not(loom))]
    pub(crate) fn describe(&self) -> Vec<(&'static str, String)> {
        let word = self.word.load(Ordering::Relaxed);
        let owner = word & FUTEX_TID_MASK;
        let mut out = vec![("lock_word", format!("{word:#010x}"))];
        if owner == NOT_RECOVERABLE {
            out.push((
                "lock_state",
                "not recoverable (an owner died and nobody repaired it)".into(),
            ));
        }
        out.push(("owner_tid", if owner == NOT_RECOVERABLE { 0 } else { owner }.to_string()));
        out.push(("owner_died", (word & FUTEX_OWNER_DIED != 0).to_string()));
        out.push(("waiters", (word & FUTEX_WAITERS != 0).to_string()));
        out
    }

    /// Whether the lock has become unusable ([`LockError::NotRecoverable`]).
    pub fn is_not_recoverable(&self) -> bool {
        self.word.load(Ordering::Relaxed) & FUTEX_TID_MASK == NOT_RECOVERABLE
    }

    fn try_acquire(
        &self,
        deadline: &Deadline,
        no_wait: bool,
    ) -> Result<LockGuard<'_>, TryLockError<LockGuard<'_>>> {
        match self.acquire(deadline, no_wait) {
            Acquired::Clean => Ok(LockGuard::new(self, false)),
            Acquired::OwnerDied => Err(TryLockError::OwnerDied(LockGuard::new(self, true))),
            Acquired::NotRecoverable => Err(TryLockError::NotRecoverable),
            Acquired::WouldBlock => Err(TryLockError::WouldBlock),
        }
    }

    /// The one acquisition routine behind every form: `deadline` bounds the wait, and
    /// `no_wait` gives up at the first sign of an owner.
    #[inline]
    fn acquire(&self, deadline: &Deadline, no_wait: bool) -> Acquired {
        // The lock is named pending before the CAS: if we die between taking the word and
        // linking it, the kernel still finds it.
        let take = |tid| {
            self.word.compare_exchange(0, tid, Ordering::Acquire, Ordering::Relaxed).map(drop)
        };
        match robust::try_acquire(self.entry(), take) {
            Ok(()) => Acquired::Clean,
            Err((tid, current)) => self.acquire_contended(current, tid, deadline, no_wait),
        }
    }

    #[cold]
    fn acquire_contended(
        &self,
        mut current: u32,
        tid: u32,
        deadline: &Deadline,
        no_wait: bool,
    ) -> Acquired {
        let entry = self.entry();
        let mut slept = false;
        let mut spins = 0;
        loop {
            let owner = current & FUTEX_TID_MASK;
            if owner == NOT_RECOVERABLE {
                robust::cancel();
                return Acquired::NotRecoverable;
            }
            if owner == 0 {
                // Free, perhaps with a dead owner's mark and sleepers left behind.
                let waiters = if slept { FUTEX_WAITERS } else { current & FUTEX_WAITERS };
                match self.word.compare_exchange(
                    current,
                    tid | waiters,
                    Ordering::Acquire,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        robust::link(entry);
                        return if current & FUTEX_OWNER_DIED != 0 {
                            Acquired::OwnerDied
                        } else {
                            Acquired::Clean
                        };
                    }
                    Err(now) => {
                        current = now;
                        continue;
                    }
                }
            }
            if owner == tid && robust::holds(entry) {
                robust::cancel();
                if !no_wait && deadline.remaining().is_none() {
                    panic!(
                        "shmsync: this thread already holds the lock (locking it again would deadlock)"
                    );
                }
                // It stays held for the whole timeout: say so at once.
                return Acquired::WouldBlock;
            }
            if no_wait {
                robust::cancel();
                return Acquired::WouldBlock;
            }
            if spins < SPIN_ROUNDS && current & FUTEX_WAITERS == 0 {
                for _ in 0..1u32 << spins {
                    spin_loop();
                }
                spins += 1;
                current = self.word.load(Ordering::Relaxed);
                continue;
            }
            // In slices: a waiter woken for us may be killed before it takes the lock,
            // in a state the kernel does not repair (module docs, "Deaths of waiters").
            match futex::flag_and_wait(&self.word, current, FUTEX_WAITERS, &deadline.sliced()) {
                Err(now) => {
                    current = now;
                    continue;
                }
                Ok(WaitOutcome::TimedOut) if deadline.has_passed() => {
                    robust::cancel();
                    return Acquired::WouldBlock;
                }
                Ok(_) => {}
            }
            slept = true;
            current = self.word.load(Ordering::Relaxed);
        }
    }

    /// Releases the lock held by this thread.
    pub(super) fn release(&self, recoverable: bool) {
        let node_links = || {
            (
                self.list_prev.load(Ordering::Relaxed) as usize,
                self.list_next.load(Ordering::Relaxed) as usize,
            )
        };
        // Unlinked and named pending before the word changes: a death in between is
        // still seen by the kernel (it wakes a waiter for a pending, free word).
        robust::release(self.entry(), node_links, || {
            if recoverable {
                // Release pairs with the Acquire CAS of the next owner.
                if self.word.swap(0, Ordering::Release) & FUTEX_WAITERS != 0 {
                    futex::wake_one(&self.word);
                }
            } else {
                self.word.store(NOT_RECOVERABLE, Ordering::Release);
                futex::wake_all(&self.word);
            }
        });
    }
}

impl Default for RawLock {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for RawLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let word = self.word.load(Ordering::Relaxed);
        f.debug_struct("RawLock")
            .field("owner_tid", &(word & FUTEX_TID_MASK))
            .field("owner_died", &(word & FUTEX_OWNER_DIED != 0))
            .field("waiters", &(word & FUTEX_WAITERS != 0))
            .finish()
    }
}

/// Proof of holding a [`RawLock`] (or a [`Lock`](crate::Lock)); unlocks when dropped.
///
/// A guard obtained through `OwnerDied` is *inconsistent*: call
/// [`mark_consistent`](Self::mark_consistent) once the protected state is repaired.
/// Dropping it without that makes the lock not recoverable.
///
/// A guard cannot be sent to another thread: the kernel tracks the lock as the holding
/// thread's, and unlocking from another thread would corrupt that thread's robust list.
/// # Examples
///
/// ```
/// use shmsync::raw::RawLock;
///
/// let lock = RawLock::new();
/// {
///     let _guard = lock.lock().unwrap();
///     assert!(lock.is_locked());
/// } // dropping the guard unlocks
/// assert!(!lock.is_locked());
/// ```
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct LockGuard<'a> {
    lock: &'a RawLock,
    inconsistent: bool,
    _not_send: PhantomData<*const ()>,
}

// SAFETY: a shared reference to a guard gives access to nothing but `is_consistent`.
unsafe impl Sync for LockGuard<'_> {}

impl<'a> LockGuard<'a> {
    fn new(lock: &'a RawLock, inconsistent: bool) -> Self {
        Self { lock, inconsistent, _not_send: PhantomData }
    }

    /// Declares the state protected by the lock repaired after an owner's death, so that
    /// dropping this guard unlocks normally.
    pub fn mark_consistent(&mut self) {
        self.inconsistent = false;
    }

    /// False for a guard obtained through `OwnerDied` until `mark_consistent`.
    pub fn is_consistent(&self) -> bool {
        !self.inconsistent
    }

    /// The lock this guard holds.
    pub(crate) fn raw(&self) -> &'a RawLock {
        self.lock
    }

    /// Releases the lock without dropping the guard value, for the condition variables.
    /// Returns whether the guard was consistent.
    pub(crate) fn unlock_for_wait(self) -> (&'a RawLock, bool) {
        let this = std::mem::ManuallyDrop::new(self);
        // As in Drop: unlocking an inconsistent lock makes it not recoverable (as glibc's
        // pthread_cond_wait does on an inconsistent robust mutex).
        this.lock.release(!this.inconsistent);
        (this.lock, !this.inconsistent)
    }
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        self.lock.release(!self.inconsistent);
    }
}

impl std::fmt::Debug for LockGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockGuard").field("consistent", &!self.inconsistent).finish()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn lock_unlock_and_try_lock() {
        let lock = RawLock::new();
        assert!(!lock.is_locked());
        let g = lock.lock().unwrap();
        assert!(lock.is_locked());
        assert!(matches!(lock.try_lock(), Err(TryLockError::WouldBlock)));
        drop(g);
        assert!(!lock.is_locked());
        drop(lock.try_lock().unwrap());
    }

    #[test]
    fn a_dead_owner_is_reported_then_repaired() {
        let lock = RawLock::new();
        // What the kernel leaves when the owner dies with a sleeper queued.
        lock.word.store(FUTEX_OWNER_DIED | FUTEX_WAITERS, Ordering::Relaxed);
        let mut g = lock.lock().unwrap_err().into_guard().expect("OwnerDied carries the guard");
        assert!(!g.is_consistent());
        g.mark_consistent();
        drop(g);
        drop(lock.lock().unwrap());
    }

    #[test]
    fn an_unrepaired_death_is_not_recoverable_for_everyone() {
        let lock = RawLock::new();
        lock.word.store(FUTEX_OWNER_DIED, Ordering::Relaxed);
        match lock.try_lock() {
            Err(TryLockError::OwnerDied(g)) => drop(g),
            other => panic!("expected OwnerDied, got {other:?}"),
        }
        assert!(lock.is_not_recoverable());
        assert!(matches!(lock.lock(), Err(LockError::NotRecoverable)));
        assert!(matches!(lock.try_lock(), Err(TryLockError::NotRecoverable)));
        assert!(matches!(
            lock.try_lock_for(Duration::from_millis(1)),
            Err(TryLockError::NotRecoverable)
        ));
    }

    #[test]
    fn timed_forms_wait_then_give_up() {
        let lock = RawLock::new();
        let _held = lock.lock().unwrap();
        std::thread::scope(|s| {
            s.spawn(|| {
                let start = Instant::now();
                assert!(matches!(
                    lock.try_lock_for(Duration::from_millis(30)),
                    Err(TryLockError::WouldBlock)
                ));
                assert!(start.elapsed() >= Duration::from_millis(30));
                let until = Instant::now() + Duration::from_millis(20);
                assert!(matches!(lock.try_lock_until(until), Err(TryLockError::WouldBlock)));
                assert!(Instant::now() >= until);
            });
        });
    }

    #[test]
    fn threads_exclude_each_other() {
        struct Counter(crate::loom::UnsafeCell<u64>);
        // SAFETY: only touched under the lock.
        unsafe impl Sync for Counter {}
        impl Counter {
            fn bump(&self) {
                // SAFETY: callers hold the lock, which gives exclusive access.
                self.0.with_mut(|c| unsafe { *c += 1 });
            }
        }
        let lock = RawLock::new();
        let counter = Counter(crate::loom::UnsafeCell::new(0u64));
        let per_thread = if cfg!(miri) { 50 } else { 20_000 };
        std::thread::scope(|s| {
            for _ in 0..3 {
                s.spawn(|| {
                    for _ in 0..per_thread {
                        let _g = lock.lock().unwrap();
                        counter.bump();
                    }
                });
            }
        });
        // SAFETY: all threads have finished.
        assert_eq!(counter.0.with(|c| unsafe { *c }), 3 * per_thread);
        assert_eq!(lock.word.load(Ordering::Relaxed), 0, "no waiter bit left behind");
    }

    #[test]
    #[should_panic(expected = "already holds the lock")]
    #[cfg_attr(miri, ignore)] // Miri has no robust list, so cannot tell re-entry apart
    fn relocking_on_the_same_thread_panics_instead_of_deadlocking() {
        let lock = RawLock::new();
        let _g = lock.lock().unwrap();
        let _again = lock.lock();
    }
}

/// Loom models of a waiter that is killed after it was chosen for the wake-up. Death is
/// modelled as the waiter returning from its sleep and doing nothing more but what the
/// kernel does for a dying thread whose `list_op_pending` names the lock: wake one
/// waiter if the word is 0.
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::loom::thread;
    use std::sync::Arc;

    /// Sleeps on the lock like a waiter, then "dies" once woken.
    fn wait_then_die(lock: &RawLock) {
        let current = lock.word.load(Ordering::Relaxed);
        if current & FUTEX_TID_MASK == 0 {
            return; // free already: it would take it rather than sleep
        }
        let _ = futex::flag_and_wait(&lock.word, current, FUTEX_WAITERS, &Deadline::never());
        // The kernel's rule for a dying thread's pending lock.
        if lock.word.load(Ordering::Relaxed) == 0 {
            futex::wake_one(&lock.word);
        }
    }

    /// A holder, a waiter that dies after its wake-up, and a waiter that must still get
    /// the lock. The holder takes the lock again at once after releasing it (barging), so
    /// the word may not be 0 when the woken one dies and the kernel's rule does not fire:
    /// with the sleeps sliced, every thread finishes.
    #[test]
    fn a_waiter_dying_after_its_wake_up_strands_nobody() {
        let mut builder = ::loom::model::Builder::new();
        builder.preemption_bound = Some(2);
        // The sliced sleeps are loops with a yield in the loom futex model.
        builder.max_branches = 10_000;
        let runs = crate::loom::counted(builder, || {
            futex::loom_slices(true);
            let lock = Arc::new(RawLock::new());
            let held = lock.lock().unwrap();
            let dying = {
                let lock = Arc::clone(&lock);
                thread::spawn(move || wait_then_die(&lock))
            };
            let waiter = {
                let lock = Arc::clone(&lock);
                thread::spawn(move || {
                    futex::loom_slices(true);
                    drop(lock.lock().unwrap());
                })
            };
            drop(held);
            drop(lock.lock().unwrap()); // barging
            dying.join().unwrap();
            waiter.join().unwrap();
            assert!(!lock.is_locked());
        });
        assert!(runs > 400, "loom explored only {runs} schedules"); // 1,878 when written
    }
}
