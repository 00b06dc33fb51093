//! Channel-style iteration across processes: a child sends and exits, the parent's
//! `for` loop receives everything in order and then ends (`Disconnected`).
#![allow(clippy::disallowed_types)] // the shared harness counts with std atomics

mod common;

use std::time::Duration;

use common::{Remove, arg, role, spawn, unique_name};
use shmsync::{Pipe, mpmc, spsc};

const LIMIT: Duration = Duration::from_secs(30);
const N: u64 = 10_000;

/// Runs `f` on a thread and waits at most `LIMIT` for it: an iterator that never ends
/// fails the test instead of hanging it.
fn bounded<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(f()));
    rx.recv_timeout(LIMIT).expect("the iteration never ended")
}

#[test]
fn a_consumer_iterates_until_its_producer_is_gone() {
    if role().as_deref() == Some("producer") {
        let mut tx = spsc::Producer::<u64>::open_with(&arg("NAME"), &Default::default()).unwrap();
        for v in 0..N {
            tx.push(v).unwrap();
        }
        return; // the producer's end goes with this process
    }
    let name = unique_name("iter-spsc");
    let _cleanup = Remove::shm(&name);
    let rx = spsc::Consumer::<u64>::create(&name, 64).unwrap();
    let child =
        spawn("a_consumer_iterates_until_its_producer_is_gone", "producer", &[("NAME", &name)]);
    let (got, mut rx) = bounded(move || {
        let mut rx = rx;
        let got: Vec<u64> = rx.iter().collect();
        (got, rx)
    });
    assert_eq!(got, (0..N).collect::<Vec<_>>());
    assert_eq!(rx.try_iter().count(), 0);
    child.wait_success(LIMIT);
    // `for v in consumer` (owning) ends the same way.
    assert_eq!(bounded(move || rx.into_iter().count()), 0);
}

#[test]
fn an_mpmc_queue_iterates_until_every_other_handle_is_gone() {
    if role().as_deref() == Some("producer") {
        let q = mpmc::Queue::<u64>::open_with(&arg("NAME"), &Default::default()).unwrap();
        let base: u64 = arg("BASE").parse().unwrap();
        for v in 0..N {
            q.push(base + v).unwrap();
        }
        return;
    }
    let name = unique_name("iter-mpmc");
    let _cleanup = Remove::shm(&name);
    let q = mpmc::Queue::<u64>::create(&name, 64).unwrap();
    let children: Vec<_> = [0, 1_000_000]
        .iter()
        .map(|base| {
            spawn(
                "an_mpmc_queue_iterates_until_every_other_handle_is_gone",
                "producer",
                &[("NAME", &name), ("BASE", &base.to_string())],
            )
        })
        .collect();
    // The iteration ends when no other handle is left, so a second producer that is slow
    // to start could find the queue already ended. A clone held until a value from each
    // producer has arrived keeps it open until both have attached.
    let got: Vec<u64> = bounded(move || {
        let mut until_both_attached = Some(q.clone());
        let mut got = Vec::new();
        for v in &q {
            got.push(v);
            if until_both_attached.is_some()
                && got.iter().any(|&v| v < 1_000_000)
                && got.iter().any(|&v| v >= 1_000_000)
            {
                until_both_attached = None;
            }
        }
        drop(until_both_attached);
        got
    });
    assert_eq!(got.len() as u64, 2 * N);
    for base in [0, 1_000_000] {
        let mine: Vec<u64> =
            got.iter().copied().filter(|v| (v / 1_000_000) * 1_000_000 == base).collect();
        assert_eq!(mine, (base..base + N).collect::<Vec<_>>(), "each producer's order kept");
    }
    for c in children {
        c.wait_success(LIMIT);
    }
}

#[test]
fn a_connection_receives_incoming_messages_until_the_peer_is_gone() {
    if role().as_deref() == Some("sender") {
        let mut b = Pipe::open_with(&arg("NAME"), &Default::default()).unwrap();
        for i in 0..1000u32 {
            b.send(format!("message {i}").as_bytes()).unwrap();
        }
        return;
    }
    let name = unique_name("iter-pipe");
    let _cleanup = Remove::shm(&name);
    let a = Pipe::create(&name, 4096).unwrap();
    let child = spawn(
        "a_connection_receives_incoming_messages_until_the_peer_is_gone",
        "sender",
        &[("NAME", &name)],
    );
    let got: Vec<Vec<u8>> = bounded(move || {
        let mut a = a;
        a.incoming().collect()
    });
    assert_eq!(got.len(), 1000);
    for (i, m) in got.iter().enumerate() {
        assert_eq!(m, format!("message {i}").as_bytes());
    }
    child.wait_success(LIMIT);
}
