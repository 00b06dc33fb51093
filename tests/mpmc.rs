//! MPMC queues across real processes: exactly-once delivery with two producers and two
//! consumers, disconnection, and a producer killed mid-stream.
#![allow(clippy::disallowed_types)] // tests are users: they put std atomics in their layouts
#![cfg(not(miri))]

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Remove, arg, report, role, spawn, unique_name, wait_for_parent};
use shmsync::{OpenError, PopError, PushError, Shared, ShmSafe, mpmc};

const LIMIT: Duration = Duration::from_secs(60);
const PER_PRODUCER: u64 = 200_000;
const WORDS: usize = (2 * PER_PRODUCER as usize).div_ceil(64);

/// Which values arrived (one bit each) and how many.
#[repr(C)]
struct Seen {
    taken: AtomicU64,
    bits: [AtomicU64; WORDS],
}
// SAFETY: repr(C), atomics only.
unsafe impl ShmSafe for Seen {}

#[test]
fn in_one_process_fifo_full_empty_and_disconnected() {
    let name = unique_name("basic");
    let _cleanup = Remove::shm(&name);
    let q = mpmc::Queue::<u32>::create(&name, 3).unwrap();
    assert_eq!(q.capacity(), 4);
    assert_eq!(q.try_pop(), Err(PopError::Empty), "alone but nobody else ever came: Empty");
    for v in 0..4 {
        q.try_push(v).unwrap();
    }
    assert!(q.is_full());
    assert_eq!(q.try_push(9), Err(PushError::Full(9)));
    let start = Instant::now();
    assert_eq!(q.push_timeout(9, Duration::from_millis(50)), Err(PushError::Timeout(9)));
    assert!(start.elapsed() >= Duration::from_millis(50));
    let clone = q.clone();
    for v in 0..4 {
        assert_eq!(clone.try_pop(), Ok(v));
    }
    assert_eq!(q.pop_timeout(Duration::from_millis(30)), Err(PopError::Timeout));

    // A second handle comes and goes: then the first is alone.
    let other = mpmc::Queue::<u32>::open(&name).unwrap();
    other.try_push(7).unwrap();
    drop(other);
    drop(clone);
    assert_eq!(q.try_pop(), Ok(7), "drained first");
    assert_eq!(q.try_pop(), Err(PopError::Disconnected));
    assert_eq!(q.pop(), Err(PopError::Disconnected));
    assert!(matches!(mpmc::Queue::<u64>::open(&name), Err(OpenError::LayoutMismatch)));
    mpmc::Queue::<u32>::unlink(&name).unwrap();
}

#[test]
fn two_producers_two_consumers_deliver_each_value_exactly_once_in_order() {
    match role().as_deref() {
        Some("producer") => {
            let q = mpmc::Queue::<u64>::open(&arg("QUEUE")).unwrap();
            let id: u64 = arg("ID").parse().unwrap();
            report("opened");
            wait_for_parent(LIMIT);
            for i in 0..PER_PRODUCER {
                q.push_timeout(id << 32 | i, LIMIT).unwrap();
            }
            return;
        }
        Some("consumer") => {
            let q = mpmc::Queue::<u64>::open(&arg("QUEUE")).unwrap();
            let seen = Shared::<Seen>::open(&arg("SEEN")).unwrap();
            report("opened");
            wait_for_parent(LIMIT);
            let mut last = [None::<u64>; 2];
            let end = Instant::now() + LIMIT;
            while seen.taken.load(Ordering::Acquire) < 2 * PER_PRODUCER {
                assert!(Instant::now() < end, "stalled");
                let v = match q.pop_timeout(Duration::from_millis(20)) {
                    Ok(v) => v,
                    Err(PopError::Timeout) => continue,
                    // Everyone else left: the others took the rest (the parent counts).
                    Err(PopError::Disconnected) => break,
                    Err(e) => panic!("pop: {e}"),
                };
                let (p, i) = ((v >> 32) as usize, v & 0xFFFF_FFFF);
                assert!(last[p].is_none_or(|l| l < i), "producer {p}'s values out of order");
                last[p] = Some(i);
                let bit = p as u64 * PER_PRODUCER + i;
                let before =
                    seen.bits[(bit / 64) as usize].fetch_or(1 << (bit % 64), Ordering::AcqRel);
                assert_eq!(before & (1 << (bit % 64)), 0, "value {v:#x} delivered twice");
                seen.taken.fetch_add(1, Ordering::AcqRel);
            }
            return;
        }
        _ => {}
    }
    let (name, seen_name) = (unique_name("2p2c"), unique_name("2p2c-seen"));
    let _cleanup = (Remove::shm(&name), Remove::shm(&seen_name));
    drop(mpmc::Queue::<u64>::create(&name, 1024).unwrap());
    let seen = Shared::<Seen>::create(&seen_name, |_| {}).unwrap();
    let test = "two_producers_two_consumers_deliver_each_value_exactly_once_in_order";
    let mut kids = Vec::new();
    for id in ["0", "1"] {
        kids.push(spawn(test, "producer", &[("QUEUE", &name), ("ID", id)]));
    }
    for _ in 0..2 {
        kids.push(spawn(test, "consumer", &[("QUEUE", &name), ("SEEN", &seen_name)]));
    }
    // Everyone opens before anyone starts, or an early producer could find the queue full
    // with nobody else attached yet: Disconnected, rightly.
    for k in &mut kids {
        k.expect("opened", LIMIT);
    }
    for k in &mut kids {
        k.release();
    }
    for k in kids {
        k.wait_success(LIMIT);
    }
    assert_eq!(seen.taken.load(Ordering::Acquire), 2 * PER_PRODUCER);
    let missing: u64 = seen
        .bits
        .iter()
        .map(|w| u64::from(64 - w.load(Ordering::Relaxed).count_ones()))
        .sum::<u64>()
        - (WORDS as u64 * 64 - 2 * PER_PRODUCER);
    assert_eq!(missing, 0, "every value exactly once");
    mpmc::Queue::<u64>::unlink(&name).unwrap();
    Shared::<Seen>::unlink(&seen_name).unwrap();
}

#[test]
fn a_producer_killed_mid_stream_does_not_hang_the_consumer() {
    if role().as_deref() == Some("victim") {
        let q = mpmc::Queue::<u64>::open(&arg("QUEUE")).unwrap();
        let mut i = 0;
        loop {
            q.push_timeout(i, LIMIT).unwrap();
            if i == 5000 {
                report("streaming");
            }
            i += 1;
        }
    }
    let name = unique_name("mpmc-killed");
    let _cleanup = Remove::shm(&name);
    let q = mpmc::Queue::<u64>::create(&name, 64).unwrap();
    let mut victim = spawn(
        "a_producer_killed_mid_stream_does_not_hang_the_consumer",
        "victim",
        &[("QUEUE", &name)],
    );
    let mut next = 0;
    while next < 6000 {
        assert_eq!(q.pop_timeout(LIMIT), Ok(next));
        next += 1;
    }
    victim.expect("streaming", LIMIT);
    victim.kill();
    let killed = Instant::now();
    // Whatever was published comes out in order; then Disconnected, never a hang. A value
    // the producer had claimed but not published when it died is lost (docs/design.md).
    loop {
        match q.pop_timeout(LIMIT) {
            Ok(v) => {
                assert_eq!(v, next, "out of order or duplicated");
                next += 1;
            }
            Err(e) => {
                assert_eq!(e, PopError::Disconnected);
                break;
            }
        }
    }
    assert!(killed.elapsed() < Duration::from_secs(2), "took {:?}", killed.elapsed());
    mpmc::Queue::<u64>::unlink(&name).unwrap();
}

#[test]
fn a_hole_left_by_a_dead_producer_is_stepped_over() {
    match role().as_deref() {
        Some("dead-member") => {
            let _q = mpmc::Queue::<u64>::open(&arg("QUEUE")).unwrap();
            report("opened");
            std::thread::sleep(LIMIT);
            return;
        }
        Some("live-producer") => {
            let q = mpmc::Queue::<u64>::open(&arg("QUEUE")).unwrap();
            report("opened");
            wait_for_parent(LIMIT);
            q.push_timeout(99, LIMIT).unwrap();
            report("pushed");
            wait_for_parent(LIMIT);
            return;
        }
        _ => {}
    }
    let name = unique_name("hole");
    let _cleanup = Remove::shm(&name);
    let q = mpmc::Queue::<u64>::create(&name, 8).unwrap();
    q.try_push(1).unwrap();
    assert_eq!(q.try_pop(), Ok(1)); // head = tail = 1
    let test = "a_hole_left_by_a_dead_producer_is_stepped_over";
    let mut dead = spawn(test, "dead-member", &[("QUEUE", &name)]);
    dead.expect("opened", LIMIT);
    let mut live = spawn(test, "live-producer", &[("QUEUE", &name)]);
    live.expect("opened", LIMIT);
    dead.kill(); // after the live one took its own member slot

    // Forge what a producer dying between claiming and publishing position 1 leaves: the
    // tail one past it, and the dead member's marker on it. Offsets from docs/design.md:
    // payload at 128, tail at +128, members at +640 (64 bytes each, marker at +40).
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(Path::new("/dev/shm").join(&name))
        .unwrap();
    // SAFETY: a second mapping of the queue; nobody else touches these fields right now.
    let mut map = unsafe { memmap2::MmapMut::map_mut(&file) }.unwrap();
    let control = 128;
    let word =
        |map: &memmap2::MmapMut, at: usize| u32::from_le_bytes(map[at..at + 4].try_into().unwrap());
    let dead_member = (0..64)
        .find(|i| word(&map, control + 640 + 64 * i) == 0x4000_0000) // OWNER_DIED, no owner
        .expect("the killed member's lock is marked OWNER_DIED");
    map[control + 128..control + 136].copy_from_slice(&2u64.to_le_bytes());
    let marker = control + 640 + 64 * dead_member + 40;
    map[marker..marker + 8].copy_from_slice(&2u64.to_le_bytes());

    live.release();
    live.expect("pushed", LIMIT);
    let start = Instant::now();
    assert_eq!(q.pop_timeout(Duration::from_secs(5)), Ok(99), "stuck behind the hole");
    assert!(start.elapsed() < Duration::from_secs(2));
    live.release();
    live.wait_success(LIMIT);
    mpmc::Queue::<u64>::unlink(&name).unwrap();
}
