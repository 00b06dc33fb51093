//! Loom models of `RawSemaphore`: every release reaches a sleeper.
#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;
use shmsync::raw::RawSemaphore;

#[test]
fn a_release_wakes_a_sleeping_acquirer() {
    loom::model(|| {
        let sem = Arc::new(RawSemaphore::new(0));
        let taker = {
            let sem = Arc::clone(&sem);
            thread::spawn(move || sem.acquire())
        };
        sem.release().unwrap();
        taker.join().unwrap();
        assert_eq!(sem.value(), 0);
    });
}

#[test]
fn two_releases_wake_two_sleepers() {
    // The case that needs the baton: the second release may find WAITERS already
    // cleared by the first, before the first sleeper has run.
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(2);
    builder.check(|| {
        let sem = Arc::new(RawSemaphore::new(0));
        let takers: Vec<_> = (0..2)
            .map(|_| {
                let sem = Arc::clone(&sem);
                thread::spawn(move || sem.acquire())
            })
            .collect();
        sem.release().unwrap();
        sem.release().unwrap();
        for t in takers {
            t.join().unwrap();
        }
        assert_eq!(sem.value(), 0);
    });
}

#[test]
fn a_bounded_semaphore_never_exceeds_its_bound() {
    loom::model(|| {
        let sem = Arc::new(RawSemaphore::bounded(1, 1));
        let other = {
            let sem = Arc::clone(&sem);
            thread::spawn(move || {
                if sem.try_acquire() {
                    sem.release().unwrap();
                }
            })
        };
        let _ = sem.release(); // may overflow, must not exceed
        assert!(sem.value() <= 1);
        other.join().unwrap();
        assert!(sem.value() <= 1);
    });
}
