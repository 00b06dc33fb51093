//! `WaitSet` across real processes: one consumer waiting on queues and pipes that other
//! processes feed, wake-ups from sleep, a killed peer, timeouts, a million items, and
//! fairness between always-full queues. Every wait has a timeout.
#![allow(clippy::disallowed_types)] // the shared harness counts with std atomics

mod common;

use std::time::{Duration, Instant};

use common::{Remove, arg, role, spawn, unique_name};
use shmsync::{Event, Pipe, PopError, RecvError, Semaphore, WaitSet, WaitSetError, mpmc, spsc};

const LIMIT: Duration = Duration::from_secs(30);
/// A wait that must end well within this (the waker is another process or a kill).
const WAKE: Duration = Duration::from_secs(10);

fn opts() -> shmsync::Options {
    shmsync::Options::default()
}

/// The test's objects: two SPSC queues, an MPMC queue and a pipe, named from one base.
struct Four {
    names: [String; 4],
    _cleanup: Vec<Remove>,
}

impl Four {
    fn new(tag: &str) -> Self {
        let names = ["a", "b", "c", "p"].map(|k| unique_name(&format!("{tag}-{k}")));
        let _cleanup = names.iter().map(|n| Remove::shm(n)).collect();
        Self { names, _cleanup }
    }

    fn env(&self) -> Vec<(&str, &str)> {
        ["A", "B", "C", "P"].into_iter().zip(self.names.iter().map(String::as_str)).collect()
    }
}

/// The sending side of `Four`, in a child: opens all four.
fn open_four() -> (spsc::Producer<u64>, spsc::Producer<u64>, mpmc::Queue<u64>, shmsync::Connection)
{
    let a = spsc::Producer::<u64>::open_with(&arg("A"), &opts()).unwrap();
    let b = spsc::Producer::<u64>::open_with(&arg("B"), &opts()).unwrap();
    let c = mpmc::Queue::<u64>::open_with(&arg("C"), &opts()).unwrap();
    let p = Pipe::open(&arg("P")).unwrap();
    (a, b, c, p)
}

#[test]
fn a_set_wakes_for_each_of_three_queues_and_a_pipe_fed_by_another_process() {
    if role().as_deref() == Some("sender") {
        let (mut a, mut b, c, mut p) = open_four();
        common::report("open");
        common::wait_for_parent(LIMIT);
        // One object at a time, with pauses long enough that the set is asleep each time.
        for round in 0..3u64 {
            std::thread::sleep(Duration::from_millis(30));
            a.push(100 + round).unwrap();
            std::thread::sleep(Duration::from_millis(30));
            b.push(200 + round).unwrap();
            std::thread::sleep(Duration::from_millis(30));
            c.push(300 + round).unwrap();
            std::thread::sleep(Duration::from_millis(30));
            p.send(format!("msg {round}").as_bytes()).unwrap();
        }
        // Stay (the entries would turn ready as disconnected) until the parent is done.
        common::wait_for_parent(LIMIT);
        return;
    }
    let four = Four::new("ws-each");
    let mut a = spsc::Consumer::<u64>::create_with(&four.names[0], 8, &opts()).unwrap();
    let mut b = spsc::Consumer::<u64>::create_with(&four.names[1], 8, &opts()).unwrap();
    let c = mpmc::Queue::<u64>::create_with(&four.names[2], 8, &opts()).unwrap();
    let mut p = Pipe::create(&four.names[3], 256).unwrap();
    let mut set = WaitSet::new();
    let keys = [set.add_pop(&a).unwrap(), set.add_pop(&b).unwrap(), set.add_pop(&c).unwrap()];
    let pk = set.add_recv(&p).unwrap();
    let mut child = spawn(
        "a_set_wakes_for_each_of_three_queues_and_a_pipe_fed_by_another_process",
        "sender",
        &four.env(),
    );
    child.expect("open", LIMIT);
    assert_eq!(set.try_wait(), [], "nothing sent yet");
    child.release();
    let mut seen = Vec::new();
    for round in 0..3u64 {
        for (i, expected_key) in [keys[0], keys[1], keys[2], pk].into_iter().enumerate() {
            let start = Instant::now();
            let ready = set.wait_timeout(WAKE).expect("woken by the sender").to_vec();
            assert_eq!(ready, [expected_key], "round {round}, object {i}: only it is ready");
            assert!(start.elapsed() < WAKE);
            match i {
                0 => seen.push(a.try_pop().unwrap()),
                1 => seen.push(b.try_pop().unwrap()),
                2 => seen.push(c.try_pop().unwrap()),
                _ => {
                    let msg = p.try_recv().unwrap();
                    assert_eq!(&*msg, format!("msg {round}").as_bytes());
                    seen.push(400 + round);
                }
            }
            assert_eq!(set.try_wait(), [], "drained: nothing ready");
        }
    }
    assert_eq!(seen, [100, 200, 300, 400, 101, 201, 301, 401, 102, 202, 302, 402]);
    child.wait_success(LIMIT);
}

#[test]
fn a_killed_peer_makes_its_entries_ready_and_the_calls_say_disconnected() {
    if role().as_deref() == Some("sender") {
        let (mut a, _b, c, _p) = open_four();
        a.push(7).unwrap();
        c.push(8).unwrap();
        common::report("open");
        std::thread::sleep(LIMIT * 2); // killed before this ends
        return;
    }
    let four = Four::new("ws-kill");
    let mut a = spsc::Consumer::<u64>::create_with(&four.names[0], 8, &opts()).unwrap();
    let mut b = spsc::Consumer::<u64>::create_with(&four.names[1], 8, &opts()).unwrap();
    let c = mpmc::Queue::<u64>::create_with(&four.names[2], 8, &opts()).unwrap();
    let mut p = Pipe::create(&four.names[3], 256).unwrap();
    let mut child = spawn(
        "a_killed_peer_makes_its_entries_ready_and_the_calls_say_disconnected",
        "sender",
        &four.env(),
    );
    child.expect("open", LIMIT);
    assert_eq!((a.try_pop(), c.try_pop()), (Ok(7), Ok(8)));
    let mut set = WaitSet::new();
    let (ka, kb, kc, kp) = (
        set.add_pop(&a).unwrap(),
        set.add_pop(&b).unwrap(),
        set.add_pop(&c).unwrap(),
        set.add_recv(&p).unwrap(),
    );
    assert_eq!(set.try_wait(), [], "the sender is alive and sent nothing more");
    // The set is asleep (spin off) when the kill lands.
    set.set_spin(false);
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        child.kill()
    });
    let start = Instant::now();
    let mut ready = set.wait_timeout(WAKE).expect("the death wakes the set").to_vec();
    let woke_after = start.elapsed();
    killer.join().unwrap();
    // The MPMC queue's "no other handle left" is seen by the closer look, within a slice.
    let deadline = Instant::now() + WAKE;
    while ready.len() < 4 && Instant::now() < deadline {
        ready = set.wait_timeout(WAKE).unwrap().to_vec();
    }
    ready.sort();
    let mut all = vec![ka, kb, kc, kp];
    all.sort();
    assert_eq!(ready, all, "every entry of the dead peer is ready");
    assert!(woke_after < WAKE, "woken {woke_after:?} after the wait began");
    assert_eq!(a.try_pop(), Err(PopError::Disconnected));
    assert_eq!(b.try_pop(), Err(PopError::Disconnected));
    assert_eq!(c.try_pop(), Err(PopError::Disconnected));
    assert!(matches!(p.try_recv(), Err(RecvError::Disconnected)));
    // Ready for good: a level, until removed.
    assert_eq!(set.try_wait().len(), 4);
    for k in [ka, kb, kc, kp] {
        assert!(set.remove(k));
    }
    assert_eq!(set.wait_timeout(WAKE), Err(WaitSetError::NoEntries));
}

#[test]
fn a_set_times_out_when_nothing_comes() {
    let four = Four::new("ws-timeout");
    let _a = spsc::Consumer::<u64>::create_with(&four.names[0], 8, &opts()).unwrap();
    let tx = spsc::Producer::<u64>::open_with(&four.names[0], &opts()).unwrap();
    let c = mpmc::Queue::<u64>::create_with(&four.names[2], 8, &opts()).unwrap();
    let mut set = WaitSet::new();
    set.add_pop(&_a).unwrap();
    set.add_pop(&c).unwrap();
    for (spin, timeout) in [(true, 50), (false, 50), (true, 0), (false, 120)] {
        set.set_spin(spin);
        let timeout = Duration::from_millis(timeout);
        let start = Instant::now();
        assert_eq!(set.wait_timeout(timeout), Err(WaitSetError::Timeout));
        let took = start.elapsed();
        assert!(took >= timeout, "returned after {took:?}, before the timeout {timeout:?}");
        assert!(took < timeout + WAKE, "took {took:?}");
    }
    let soon = Instant::now() + Duration::from_millis(20);
    assert_eq!(set.wait_deadline(soon), Err(WaitSetError::Timeout));
    assert!(Instant::now() >= soon);
    drop(tx);
}

const PER_PRODUCER: u64 = 250_000;

#[test]
fn a_million_items_from_four_producer_processes_arrive_in_order_through_one_set() {
    if role().as_deref() == Some("producer") {
        let mut tx = spsc::Producer::<u64>::open_with(&arg("Q"), &opts()).unwrap();
        let id: u64 = arg("ID").parse().unwrap();
        for seq in 0..PER_PRODUCER {
            tx.push_timeout(id << 32 | seq, LIMIT).unwrap();
        }
        return; // leaving: the consumer sees Disconnected after the last value
    }
    let names: Vec<String> = (0..4).map(|i| unique_name(&format!("ws-million-{i}"))).collect();
    let _cleanup: Vec<Remove> = names.iter().map(|n| Remove::shm(n)).collect();
    let mut queues: Vec<spsc::Consumer<u64>> =
        names.iter().map(|n| spsc::Consumer::create_with(n, 1024, &opts()).unwrap()).collect();
    let mut set = WaitSet::new();
    let keys: Vec<_> = queues.iter().map(|q| set.add_pop(q).unwrap()).collect();
    let children: Vec<_> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            spawn(
                "a_million_items_from_four_producer_processes_arrive_in_order_through_one_set",
                "producer",
                &[("Q", n), ("ID", &i.to_string())],
            )
        })
        .collect();
    let mut next = [0u64; 4];
    let mut open = 4;
    let deadline = Instant::now() + Duration::from_secs(120);
    while open > 0 {
        assert!(Instant::now() < deadline, "still {open} queues open; got {next:?}");
        let ready = set.wait_timeout(WAKE).expect("values keep coming").to_vec();
        for key in ready {
            let i = keys.iter().position(|k| *k == key).unwrap();
            // Up to a batch per queue per round, so that all four are served in turn.
            for _ in 0..256 {
                match queues[i].try_pop() {
                    Ok(v) => {
                        assert_eq!(v >> 32, i as u64, "value in the wrong queue");
                        assert_eq!(v & 0xffff_ffff, next[i], "queue {i}: order broken");
                        next[i] += 1;
                    }
                    Err(PopError::Empty) => break,
                    Err(PopError::Disconnected) => {
                        assert!(set.remove(key));
                        open -= 1;
                        break;
                    }
                    Err(e) => panic!("queue {i}: {e}"),
                }
            }
        }
    }
    assert_eq!(next, [PER_PRODUCER; 4], "every value arrived, once");
    for c in children {
        c.wait_success(LIMIT);
    }
}

#[test]
fn two_always_full_queues_are_both_served_by_a_loop_that_takes_only_the_first_key() {
    if role().as_deref() == Some("producer") {
        let mut tx = spsc::Producer::<u64>::open_with(&arg("Q"), &opts()).unwrap();
        // Keep it full until the consumer leaves.
        while tx.push_timeout(1, LIMIT).is_ok() {}
        return;
    }
    let names: Vec<String> = (0..2).map(|i| unique_name(&format!("ws-fair-{i}"))).collect();
    let _cleanup: Vec<Remove> = names.iter().map(|n| Remove::shm(n)).collect();
    let mut queues: Vec<spsc::Consumer<u64>> =
        names.iter().map(|n| spsc::Consumer::create_with(n, 4096, &opts()).unwrap()).collect();
    let mut set = WaitSet::new();
    let keys: Vec<_> = queues.iter().map(|q| set.add_pop(q).unwrap()).collect();
    const ROUNDS: u32 = 6_000; // less than 2 x 4096
    let children: Vec<_> = names
        .iter()
        .map(|n| {
            spawn(
                "two_always_full_queues_are_both_served_by_a_loop_that_takes_only_the_first_key",
                "producer",
                &[("Q", n)],
            )
        })
        .collect();
    for q in &queues {
        assert!(q.wait_connected(LIMIT));
    }
    // Wait until both are full, so that both are ready on every round.
    let deadline = Instant::now() + LIMIT;
    while queues.iter_mut().any(|q| !q.is_full()) {
        assert!(Instant::now() < deadline, "the producers never filled their queues");
        std::thread::sleep(Duration::from_millis(1));
    }
    // The producers keep refilling, but each queue holds more than the rounds take from
    // it, so both are ready on every round whatever the scheduler does with them.
    let mut served = [0u32; 2];
    let mut last_first = None;
    for round in 0..ROUNDS {
        let ready = set.wait_timeout(WAKE).unwrap();
        assert_eq!(ready.len(), 2, "round {round}: both queues hold values");
        let first = ready[0];
        // The rule: the report starts after the entry reported first last time.
        assert_ne!(Some(first), last_first, "round {round}: the same entry came first again");
        last_first = Some(first);
        let i = keys.iter().position(|k| *k == first).unwrap();
        assert_eq!(queues[i].try_pop(), Ok(1));
        served[i] += 1;
    }
    assert_eq!(served, [ROUNDS / 2; 2]);
    drop(queues); // the producers' pushes now say Disconnected
    for c in children {
        c.wait_success(LIMIT);
    }
}

#[test]
fn events_semaphores_and_room_wake_a_set_from_other_threads() {
    let base = unique_name("ws-kinds");
    let (ename, sname, qname) = (format!("{base}-e"), format!("{base}-s"), format!("{base}-q"));
    let _cleanup = [Remove::shm(&ename), Remove::shm(&sname), Remove::shm(&qname)];
    let event = Event::create(&ename).unwrap();
    let sem = Semaphore::create(&sname, 0).unwrap();
    let mut tx = spsc::Producer::<u64>::create_with(&qname, 1, &opts()).unwrap();
    let mut rx = spsc::Consumer::<u64>::open_with(&qname, &opts()).unwrap();
    tx.push(1).unwrap(); // full
    let mut set = WaitSet::new();
    set.set_spin(false);
    let (ke, ks, kq) = (
        set.add_event(&event).unwrap(),
        set.add_acquire(&sem).unwrap(),
        set.add_push(&tx).unwrap(),
    );
    assert_eq!(set.try_wait(), []);
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(30));
            event.set();
        });
        assert_eq!(set.wait_timeout(WAKE).unwrap(), [ke]);
    });
    event.clear();
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(30));
            sem.release().unwrap();
        });
        assert_eq!(set.wait_timeout(WAKE).unwrap(), [ks]);
    });
    assert_eq!(set.try_wait(), [ks], "a permit stays ready until taken");
    assert!(sem.try_acquire());
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(30));
            assert_eq!(rx.pop(), Ok(1));
        });
        assert_eq!(set.wait_timeout(WAKE).unwrap(), [kq], "room to push");
    });
    tx.try_push(2).unwrap();
    assert_eq!(set.try_wait(), []);
}

#[test]
fn bad_registrations_and_waits_are_clear_errors() {
    let base = unique_name("ws-errors");
    let (one, two, ename) = (format!("{base}-1"), format!("{base}-2"), format!("{base}-e"));
    let _cleanup = [Remove::shm(&one), Remove::shm(&two), Remove::shm(&ename)];
    let mut set = WaitSet::new();
    assert_eq!(set.wait(), Err(WaitSetError::NoEntries));
    // A one-way pipe: end A only receives, end B only sends.
    let a = Pipe::create_one_way(&one, 256).unwrap();
    let b = Pipe::open(&one).unwrap();
    assert!(matches!(set.add_send(&a, 1), Err(WaitSetError::Unsupported { .. })));
    assert!(matches!(set.add_recv(&b), Err(WaitSetError::Unsupported { .. })));
    let duplex = Pipe::create(&two, 256).unwrap();
    let too_long = duplex.max_message() + 1;
    let err = set.add_send(&duplex, too_long).unwrap_err();
    assert!(err.to_string().contains("longer"), "{err}");
    let room = set.add_send(&duplex, duplex.max_message()).unwrap();
    assert_eq!(room.index(), 0);
    let event = Event::create(&ename).unwrap();
    for i in 1..WaitSet::MAX_ENTRIES {
        assert_eq!(set.add_event(&event).unwrap().index(), i);
    }
    assert_eq!(set.add_event(&event), Err(WaitSetError::TooMany { limit: 128 }));
    // The pipe has room; the events are clear.
    assert_eq!(set.wait_timeout(WAKE).unwrap(), [room]);
    event.set();
    assert_eq!(set.wait_timeout(WAKE).unwrap().len(), 128, "the event's 127 entries and the room");
    // A removed key's slot is reused.
    let k = set.try_wait()[5];
    assert!(set.remove(k));
    assert!(!set.remove(k));
    assert_eq!(set.add_event(&event).unwrap(), k);
    assert_eq!(set.len(), 128);
}

#[test]
fn garbage_positions_make_an_entry_ready_and_the_call_says_corrupted() {
    let name = unique_name("ws-garbage");
    let _cleanup = Remove::shm(&name);
    let mut rx = spsc::Consumer::<u64>::create_with(&name, 8, &opts()).unwrap();
    let _tx = spsc::Producer::<u64>::open_with(&name, &opts()).unwrap();
    let mut set = WaitSet::new();
    let key = set.add_pop(&rx).unwrap();
    assert_eq!(set.try_wait(), []);
    // A hostile producer's position: far past the consumer's (the payload starts 128
    // bytes into the file; the producer's position is 128 bytes into the payload).
    let mut map = common::second_mapping(std::path::Path::new("/dev/shm").join(&name));
    map[256..264].copy_from_slice(&1_000_000u64.to_ne_bytes());
    assert_eq!(set.try_wait(), [key], "garbage is ready: the call has something to say");
    assert_eq!(rx.try_pop(), Err(PopError::Corrupted));
    // And a wait returns at once rather than sleeping on it.
    assert_eq!(set.wait_timeout(WAKE).unwrap(), [key]);
}
