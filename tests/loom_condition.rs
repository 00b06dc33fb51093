//! Loom models of `RawCondition` with `RawLock`: no lost notification.
#![cfg(loom)]

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;
use shmsync::raw::{RawCondition, RawLock};

struct State {
    lock: RawLock,
    cond: RawCondition,
    ready: UnsafeCell<u32>,
}
// SAFETY: `ready` is only accessed while `lock` is held.
unsafe impl Sync for State {}
// SAFETY: as above.
unsafe impl Send for State {}

impl State {
    fn new() -> Self {
        Self { lock: RawLock::new(), cond: RawCondition::new(), ready: UnsafeCell::new(0) }
    }

    /// Waits under the lock until `ready` reaches `n`.
    fn wait_for(&self, n: u32) {
        let g = self.lock.lock().unwrap();
        // SAFETY (in the closure): the condition runs with the lock held.
        let g = self.cond.wait_while(g, || self.ready.with(|r| unsafe { *r }) < n).unwrap();
        drop(g);
    }

    fn bump(&self, all: bool) {
        let g = self.lock.lock().unwrap();
        // SAFETY: we hold the lock.
        self.ready.with_mut(|r| unsafe { *r += 1 });
        if all {
            self.cond.notify_all();
        } else {
            self.cond.notify_one();
        }
        drop(g);
    }
}

#[test]
fn notify_one_reaches_the_waiter() {
    loom::model(|| {
        let s = Arc::new(State::new());
        let waiter = {
            let s = Arc::clone(&s);
            thread::spawn(move || s.wait_for(1))
        };
        s.bump(false);
        waiter.join().unwrap();
    });
}

#[test]
fn notify_outside_the_lock_reaches_the_waiter() {
    loom::model(|| {
        let s = Arc::new(State::new());
        let waiter = {
            let s = Arc::clone(&s);
            thread::spawn(move || s.wait_for(1))
        };
        {
            let _g = s.lock.lock().unwrap();
            // SAFETY: we hold the lock.
            s.ready.with_mut(|r| unsafe { *r = 1 });
        }
        s.cond.notify_one();
        waiter.join().unwrap();
    });
}

#[test]
fn notify_all_reaches_two_waiters() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(2);
    builder.check(|| {
        let s = Arc::new(State::new());
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let s = Arc::clone(&s);
                thread::spawn(move || s.wait_for(1))
            })
            .collect();
        s.bump(true);
        for w in waiters {
            w.join().unwrap();
        }
    });
}
