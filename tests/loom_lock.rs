//! Loom models of `RawLock`: mutual exclusion and hand-over to a sleeping waiter.
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test --release --test loom_lock`.
#![cfg(loom)]

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;
use shmsync::TryLockError;
use shmsync::raw::RawLock;

/// A counter that only the lock holder may touch; loom flags any unsynchronised access.
struct Guarded {
    lock: RawLock,
    count: UnsafeCell<u32>,
}
// SAFETY: `count` is only accessed while `lock` is held.
unsafe impl Sync for Guarded {}
// SAFETY: as above.
unsafe impl Send for Guarded {}

impl Guarded {
    fn new() -> Self {
        Self { lock: RawLock::new(), count: UnsafeCell::new(0) }
    }

    fn increment(&self) {
        let _g = self.lock.lock().unwrap();
        // SAFETY: we hold the lock.
        self.count.with_mut(|c| unsafe { *c += 1 });
    }

    fn count(&self) -> u32 {
        let _g = self.lock.lock().unwrap();
        // SAFETY: we hold the lock.
        self.count.with(|c| unsafe { *c })
    }
}

#[test]
fn two_threads_exclude_each_other() {
    loom::model(|| {
        let g = Arc::new(Guarded::new());
        let other = {
            let g = Arc::clone(&g);
            thread::spawn(move || g.increment())
        };
        g.increment();
        other.join().unwrap();
        assert_eq!(g.count(), 2);
    });
}

#[test]
fn three_threads_exclude_each_other() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(2);
    builder.check(|| {
        let g = Arc::new(Guarded::new());
        let others: Vec<_> = (0..2)
            .map(|_| {
                let g = Arc::clone(&g);
                thread::spawn(move || g.increment())
            })
            .collect();
        g.increment();
        for t in others {
            t.join().unwrap();
        }
        assert_eq!(g.count(), 3);
    });
}

#[test]
fn a_sleeping_waiter_gets_the_lock_when_it_is_released() {
    loom::model(|| {
        let lock = Arc::new(RawLock::new());
        let held = lock.lock().unwrap();
        let waiter = {
            let lock = Arc::clone(&lock);
            // Blocks (in the futex model) until the release below wakes it; a lost
            // wake-up would be reported by loom as a deadlock.
            thread::spawn(move || drop(lock.lock().unwrap()))
        };
        drop(held);
        waiter.join().unwrap();
        assert!(!lock.is_locked());
    });
}

#[test]
fn try_lock_never_waits() {
    loom::model(|| {
        let lock = Arc::new(RawLock::new());
        let other = {
            let lock = Arc::clone(&lock);
            thread::spawn(move || match lock.try_lock() {
                Ok(g) => drop(g),
                Err(TryLockError::WouldBlock) => {}
                Err(e) => panic!("unexpected {e}"),
            })
        };
        if let Ok(g) = lock.try_lock() {
            drop(g);
        }
        other.join().unwrap();
        assert!(!lock.is_locked());
    });
}
