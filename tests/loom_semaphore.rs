//! Loom models of `RawSemaphore`: every release reaches a sleeper.
#![cfg(loom)]

use loom::sync::Arc;
use loom::sync::atomic::{AtomicU32, Ordering};
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

/// Both threads pass a start gate (an atomic add each) first: loom only reorders a
/// thread's loads after another's compare-exchange when the two meet at a word both
/// change, and without the gate it ran this model once (the releasing thread's loads
/// were all over before the other thread's first step, and its own load just before
/// each compare-exchange hid them).
#[test]
fn a_bounded_semaphore_never_exceeds_its_bound() {
    let runs = std::sync::Arc::new(std::sync::Mutex::new(0usize));
    let counted = std::sync::Arc::clone(&runs);
    loom::model(move || {
        *counted.lock().unwrap() += 1;
        let sem = Arc::new(RawSemaphore::bounded(1, 1));
        let gate = Arc::new(AtomicU32::new(0));
        let other = {
            let (sem, gate) = (Arc::clone(&sem), Arc::clone(&gate));
            thread::spawn(move || {
                gate.fetch_add(1, Ordering::Relaxed);
                assert!(sem.try_acquire(), "nobody else takes the one permit");
                sem.release().is_err()
            })
        };
        gate.fetch_add(1, Ordering::Relaxed);
        let main_overflowed = sem.release().is_err(); // may overflow, must not exceed
        assert!(sem.value() <= 1);
        let other_overflowed = other.join().unwrap();
        // One permit, two returns of it: exactly one of them finds the semaphore full.
        assert!(main_overflowed != other_overflowed);
        assert_eq!(sem.value(), 1);
    });
    let runs = *runs.lock().unwrap();
    assert!(runs > 3, "loom explored only {runs} schedules");
}
