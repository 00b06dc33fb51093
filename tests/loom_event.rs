//! Loom models of `RawEvent`: `set` never misses a waiter.
#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;
use shmsync::raw::RawEvent;

#[test]
fn set_wakes_a_waiter_whatever_the_interleaving() {
    loom::model(|| {
        let ev = Arc::new(RawEvent::new());
        let waiter = {
            let ev = Arc::clone(&ev);
            thread::spawn(move || ev.wait())
        };
        ev.set();
        waiter.join().unwrap();
        assert!(ev.is_set());
    });
}

#[test]
fn set_wakes_two_waiters() {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(2);
    builder.check(|| {
        let ev = Arc::new(RawEvent::new());
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let ev = Arc::clone(&ev);
                thread::spawn(move || ev.wait())
            })
            .collect();
        ev.set();
        for w in waiters {
            w.join().unwrap();
        }
    });
}
