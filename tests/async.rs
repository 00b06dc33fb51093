//! The async calls (feature `async`) across real processes, under tokio and under
//! `futures::executor`: items from another process, cancellation by a timeout without a
//! lost item, round trips through a pipe, and the synchronisation objects. Every await
//! that could hang is under a timeout.
#![cfg(feature = "async")]
#![allow(clippy::disallowed_types)] // the shared harness counts with std atomics

mod common;

use std::time::Duration;

use common::{Remove, Rng, arg, role, spawn, unique_name};
use shmsync::{Event, Lock, LockError, Pipe, PopError, RecvError, Semaphore, mpmc, spsc};

const LIMIT: Duration = Duration::from_secs(30);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap()
}

/// Runs `f` under tokio with a bound: a future that never completes fails the test.
fn under_tokio<F: std::future::Future>(f: F) -> F::Output {
    runtime().block_on(async { tokio::time::timeout(LIMIT, f).await.expect("the test hung") })
}

const ITEMS: u64 = 2_000;

#[test]
fn a_tokio_task_awaiting_pop_async_gets_every_item_from_another_process() {
    if role().as_deref() == Some("producer") {
        let mut tx = spsc::Producer::<u64>::open(&arg("Q")).unwrap();
        let mut rng = Rng::new(7);
        for v in 0..ITEMS {
            // Now and then a pause, so that the consumer's task really sleeps.
            if rng.next_u64() % 16 == 0 {
                std::thread::sleep(Duration::from_micros(rng.next_u64() % 2_000));
            }
            tx.push_timeout(v, LIMIT).unwrap();
        }
        return;
    }
    let name = unique_name("async-pop");
    let _cleanup = Remove::shm(&name);
    let mut rx = spsc::Consumer::<u64>::create(&name, 16).unwrap();
    let child = spawn(
        "a_tokio_task_awaiting_pop_async_gets_every_item_from_another_process",
        "producer",
        &[("Q", &name)],
    );
    let got = under_tokio(async {
        // A task on the runtime, beside a timer that must keep ticking meanwhile.
        let consumer = tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                match rx.pop_async().await {
                    Ok(v) => got.push(v),
                    Err(PopError::Disconnected) => return got,
                    Err(e) => panic!("{e}"),
                }
            }
        });
        let ticks = tokio::spawn(async {
            let mut ticks = 0;
            let mut interval = tokio::time::interval(Duration::from_millis(1));
            for _ in 0..5 {
                interval.tick().await;
                ticks += 1;
            }
            ticks
        });
        assert_eq!(ticks.await.unwrap(), 5, "the timer ran beside the awaiting task");
        consumer.await.unwrap()
    });
    assert_eq!(got, (0..ITEMS).collect::<Vec<_>>(), "every item, in order, once");
    child.wait_success(LIMIT);
}

#[test]
fn a_timeout_around_pop_async_cancels_without_losing_an_item() {
    if role().as_deref() == Some("producer") {
        let q = mpmc::Queue::<u64>::open(&arg("Q")).unwrap();
        let mut rng = Rng::new(11);
        for v in 0..500 {
            std::thread::sleep(Duration::from_micros(rng.next_u64() % 3_000));
            q.push_timeout(v, LIMIT).unwrap();
        }
        return;
    }
    let name = unique_name("async-cancel");
    let _cleanup = Remove::shm(&name);
    let q = mpmc::Queue::<u64>::create(&name, 64).unwrap();
    let child = spawn(
        "a_timeout_around_pop_async_cancels_without_losing_an_item",
        "producer",
        &[("Q", &name)],
    );
    let (got, cancelled) = under_tokio(async {
        let (mut got, mut cancelled) = (Vec::new(), 0);
        let mut rng = Rng::new(5);
        loop {
            let bound = Duration::from_micros(200 + rng.next_u64() % 1_500);
            match tokio::time::timeout(bound, q.pop_async()).await {
                Ok(Ok(v)) => got.push(v),
                Ok(Err(PopError::Disconnected)) => return (got, cancelled),
                Ok(Err(e)) => panic!("{e}"),
                Err(_elapsed) => cancelled += 1, // the pop future is dropped here
            }
        }
    });
    assert_eq!(got, (0..500).collect::<Vec<_>>(), "nothing lost or doubled by the cancels");
    assert!(cancelled > 50, "only {cancelled} pops were cancelled: the test proved little");
    child.wait_success(LIMIT);
}

const ROUND_TRIPS: u32 = 10_000;

#[test]
fn ten_thousand_awaited_round_trips_through_a_pipe_under_two_executors() {
    if role().as_deref() == Some("echo") {
        // The other executor: futures' own, on this process's main thread.
        let mut b = Pipe::open(&arg("P")).unwrap();
        futures::executor::block_on(async {
            loop {
                let msg = match b.recv_async().await {
                    Ok(m) => m.to_vec(),
                    Err(RecvError::Disconnected) => return,
                    Err(e) => panic!("{e}"),
                };
                b.send_async(&msg).await.unwrap();
            }
        });
        return;
    }
    let name = unique_name("async-pipe");
    let _cleanup = Remove::shm(&name);
    let mut a = Pipe::create(&name, 4096).unwrap();
    let child = spawn(
        "ten_thousand_awaited_round_trips_through_a_pipe_under_two_executors",
        "echo",
        &[("P", &name)],
    );
    under_tokio(async {
        for i in 0..ROUND_TRIPS {
            let msg = format!("round trip {i}");
            a.send_async(msg.as_bytes()).await.unwrap();
            let back = a.recv_async().await.unwrap();
            assert_eq!(&*back, msg.as_bytes());
        }
    });
    drop(a);
    child.wait_success(LIMIT);
}

#[test]
fn a_killed_producer_ends_pop_async_with_disconnected() {
    if role().as_deref() == Some("producer") {
        let mut tx = spsc::Producer::<u64>::open(&arg("Q")).unwrap();
        tx.push(1).unwrap();
        common::report("pushed");
        std::thread::sleep(LIMIT * 2); // killed first
        return;
    }
    let name = unique_name("async-kill");
    let _cleanup = Remove::shm(&name);
    let mut rx = spsc::Consumer::<u64>::create(&name, 16).unwrap();
    let mut child =
        spawn("a_killed_producer_ends_pop_async_with_disconnected", "producer", &[("Q", &name)]);
    child.expect("pushed", LIMIT);
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        child.kill()
    });
    let got = under_tokio(async { (rx.pop_async().await, rx.pop_async().await) });
    assert_eq!(got, (Ok(1), Err(PopError::Disconnected)));
    killer.join().unwrap();
}

#[test]
fn events_semaphores_locks_and_room_are_awaited_under_either_executor() {
    let base = unique_name("async-kinds");
    let names = ["e", "s", "l", "q"].map(|k| format!("{base}-{k}"));
    let _cleanup = names.each_ref().map(|n| Remove::shm(n));
    let event = Event::create(&names[0]).unwrap();
    let sem = Semaphore::create(&names[1], 0).unwrap();
    let lock = Lock::create(&names[2]).unwrap();
    let q = mpmc::Queue::<u32>::create(&names[3], 1).unwrap();
    let later = |f: &(dyn Fn() + Sync)| {
        std::thread::sleep(Duration::from_millis(30));
        f();
    };
    std::thread::scope(|s| {
        s.spawn(|| later(&|| event.set()));
        under_tokio(event.wait_async());
        assert!(event.is_set());
    });
    std::thread::scope(|s| {
        s.spawn(|| later(&|| sem.release().unwrap()));
        futures::executor::block_on(sem.acquire_async());
        assert_eq!(sem.value(), 0, "the permit was taken");
    });
    // Room: a full queue of one, emptied by another thread.
    q.push(1).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| later(&|| assert_eq!(q.pop(), Ok(1))));
        under_tokio(q.push_async(2)).unwrap();
    });
    assert_eq!(q.try_pop(), Ok(2));
    // The lock, held by another thread for a while.
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        s.spawn(|| {
            let guard = lock.lock().unwrap();
            held_tx.send(()).unwrap();
            std::thread::sleep(Duration::from_millis(30));
            drop(guard);
        });
        held_rx.recv_timeout(LIMIT).unwrap();
        assert!(lock.raw().is_locked());
        let guard = under_tokio(lock.lock_async()).unwrap();
        drop(guard);
    });
    // A lock whose holder thread exits holding it: OwnerDied, with the guard.
    std::thread::scope(|s| {
        s.spawn(|| std::mem::forget(lock.lock().unwrap()));
    });
    match futures::executor::block_on(lock.lock_async()) {
        Err(LockError::OwnerDied(mut guard)) => guard.mark_consistent(),
        other => panic!("expected OwnerDied, got {:?}", other.map(drop)),
    }
}

/// Regression: a hostile peer that rewrites the consumer's position in shared memory can
/// make the entry's look see a value that the consumer's own position does not. Before
/// the fix, `pop_async` then looped inside one poll for good (look: ready; pop: empty),
/// and the runtime's timer never ran. Now every wait after the first yields first.
#[test]
fn a_forged_position_that_fools_the_look_cannot_keep_pop_async_from_yielding() {
    let name = unique_name("async-forged");
    let _cleanup = Remove::shm(&name);
    let mut rx = spsc::Consumer::<u64>::create(&name, 8).unwrap();
    let mut tx = spsc::Producer::<u64>::open(&name).unwrap();
    tx.push(1).unwrap();
    assert_eq!(rx.try_pop(), Ok(1)); // both positions at 1
    // The consumer's position (the payload's first word, 128 bytes into the file) set
    // back to 0, one behind the producer's.
    let mut map = common::second_mapping(std::path::Path::new("/dev/shm").join(&name));
    map[128..136].copy_from_slice(&0u64.to_ne_bytes());
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let timed_out = runtime().block_on(async {
            tokio::time::timeout(Duration::from_millis(50), rx.pop_async()).await.is_err()
        });
        let _ = done_tx.send(timed_out);
    });
    let outcome = done_rx.recv_timeout(Duration::from_secs(10));
    assert_eq!(outcome, Ok(true), "pop_async never yielded to the runtime's timer");
    drop(tx);
}
