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

/// Regression: a ring of one slot cannot tell "published at `pos`" from "free for
/// `pos + 1`" (both stamps are `pos + 1`), so a queue created with capacity 1 took a
/// second push over the first value and then reported Corrupted. Found by the async
/// tests (a full queue of one). Such a queue now gets two slots.
#[test]
fn a_queue_asked_for_one_slot_gets_two_and_never_overfills() {
    let name = unique_name("one-slot");
    let _cleanup = Remove::shm(&name);
    let q = mpmc::Queue::<u32>::create(&name, 1).unwrap();
    assert_eq!(q.capacity(), 2);
    for round in 0..3 {
        assert_eq!((q.try_push(1), q.try_push(2)), (Ok(()), Ok(())), "round {round}");
        assert_eq!(q.try_push(3), Err(PushError::Full(3)), "round {round}: full");
        assert_eq!((q.try_pop(), q.try_pop()), (Ok(1), Ok(2)), "round {round}");
        assert_eq!(q.try_pop(), Err(PopError::Empty), "round {round}: empty");
    }
}

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
    assert!(matches!(mpmc::Queue::<u64>::open(&name), Err(OpenError::LayoutMismatch { .. })));
    let err = mpmc::Queue::<u32>::create(&format!("{name}-huge"), usize::MAX).unwrap_err();
    assert!(matches!(err, OpenError::InvalidCapacity { .. }), "{err:?}");
    assert!(err.to_string().contains(&usize::MAX.to_string()), "{err}");
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

/// A second mapping of a queue's segment, to write exactly the words a process killed at
/// the wrong instant leaves. Offsets from docs/design.md: the payload at 128; in it `head`
/// at 0, `tail` at 128, member `i` at 640 + 128 i (its lock word first, lane `k` at
/// +48 + 8 k), the slots after the 8,832-byte control block (16 bytes each for `u64`, the
/// stamp first).
struct Forge {
    map: memmap2::MmapMut,
}

impl Forge {
    const PAYLOAD: usize = 128;
    const TAIL: usize = 128;
    const MEMBERS: usize = 640;
    const SLOTS: usize = 8832;
    const CONSUMING: u64 = 1 << 63;

    fn open(name: &str) -> Self {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(Path::new("/dev/shm").join(name))
            .unwrap();
        // SAFETY: a second mapping of the queue; the tests write while nobody else moves
        // these words.
        Self { map: unsafe { memmap2::MmapMut::map_mut(&file) }.unwrap() }
    }

    fn word(&self, at: usize) -> &AtomicU64 {
        let at = Self::PAYLOAD + at;
        assert!(at % 8 == 0 && at + 8 <= self.map.len());
        // SAFETY: 8-aligned, inside the mapping, which lives as long as `self`.
        unsafe { &*(self.map.as_ptr().add(at) as *const AtomicU64) }
    }

    fn set(&self, at: usize, value: u64) {
        self.word(at).store(value, Ordering::SeqCst);
    }

    /// The member slot of a process that was killed (its lock word is `OWNER_DIED`).
    fn dead_member(&self) -> usize {
        (0..64)
            .find(|i| {
                self.word(Self::MEMBERS + 128 * i).load(Ordering::SeqCst) as u32 == 0x4000_0000
            })
            .expect("the killed member's lock is marked OWNER_DIED")
    }

    fn lane(member: usize, lane: usize) -> usize {
        Self::MEMBERS + 128 * member + 48 + 8 * lane
    }

    fn stamp(slot: usize) -> usize {
        Self::SLOTS + 16 * slot
    }
}

/// Starts a child that opens the queue (taking a member slot) and kills it: the member is
/// then a dead process's, with its lock marked `OWNER_DIED`.
fn dead_member(test: &str, queue: &str) {
    let mut dead = spawn(test, "dead-member", &[("QUEUE", queue)]);
    dead.expect("opened", LIMIT);
    dead.kill();
}

/// The child roles the tests below share.
fn member_roles() -> bool {
    match role().as_deref() {
        Some("dead-member") => {
            let _q = mpmc::Queue::<u64>::open(&arg("QUEUE")).unwrap();
            report("opened");
            std::thread::sleep(LIMIT);
            true
        }
        Some("producer") => {
            let q = mpmc::Queue::<u64>::open(&arg("QUEUE")).unwrap();
            report("opened");
            wait_for_parent(LIMIT);
            q.push_timeout(99, LIMIT).unwrap();
            report("pushed");
            wait_for_parent(LIMIT);
            true
        }
        _ => false,
    }
}

#[test]
fn a_hole_left_by_a_dead_producer_is_stepped_over() {
    if member_roles() {
        return;
    }
    let name = unique_name("hole");
    let _cleanup = Remove::shm(&name);
    let q = mpmc::Queue::<u64>::create(&name, 8).unwrap();
    q.try_push(1).unwrap();
    assert_eq!(q.try_pop(), Ok(1)); // head = tail = 1
    let test = "a_hole_left_by_a_dead_producer_is_stepped_over";
    let mut live = spawn(test, "producer", &[("QUEUE", &name)]);
    live.expect("opened", LIMIT);
    dead_member(test, &name);
    // What a producer dying between claiming and publishing position 1 leaves: the tail
    // one past it, and its marker on it.
    let forge = Forge::open(&name);
    forge.set(Forge::TAIL, 2);
    forge.set(Forge::lane(forge.dead_member(), 0), 2);

    live.release();
    live.expect("pushed", LIMIT);
    let start = Instant::now();
    assert_eq!(q.pop_timeout(Duration::from_secs(5)), Ok(99), "stuck behind the hole");
    assert!(start.elapsed() < Duration::from_secs(2));
    live.release();
    live.wait_success(LIMIT);
    mpmc::Queue::<u64>::unlink(&name).unwrap();
}

/// Finding 3 of the kill loops: the replacement of a dead producer took its member slot
/// and reset the marker before any consumer had looked, and every value behind the hole
/// was stranded for good.
#[test]
fn a_hole_outlives_a_replacement_that_opens_before_any_consumer_looks() {
    if member_roles() {
        return;
    }
    let name = unique_name("hole-replaced");
    let _cleanup = Remove::shm(&name);
    let q = mpmc::Queue::<u64>::create(&name, 8).unwrap();
    q.try_push(1).unwrap();
    assert_eq!(q.try_pop(), Ok(1)); // head = tail = 1
    let test = "a_hole_outlives_a_replacement_that_opens_before_any_consumer_looks";
    dead_member(test, &name);
    let forge = Forge::open(&name);
    let dead = forge.dead_member();
    forge.set(Forge::TAIL, 2);
    forge.set(Forge::lane(dead, 0), 2);
    // The replacement opens (the dead member is the lowest free slot) and pushes behind
    // the hole, all before this consumer looks.
    let mut replacement = spawn(test, "producer", &[("QUEUE", &name)]);
    replacement.expect("opened", LIMIT);
    assert_eq!(forge.word(Forge::lane(dead, 0)).load(Ordering::SeqCst), 2, "marker kept");
    replacement.release();
    replacement.expect("pushed", LIMIT);
    let start = Instant::now();
    assert_eq!(q.pop_timeout(Duration::from_secs(5)), Ok(99), "stranded behind the hole");
    assert!(start.elapsed() < Duration::from_secs(2));
    assert_eq!(forge.word(Forge::lane(dead, 0)).load(Ordering::SeqCst), 0, "marker cleared");
    replacement.release();
    replacement.wait_success(LIMIT);
    mpmc::Queue::<u64>::unlink(&name).unwrap();
}

/// Finding 2 of the kill loops: a consumer killed after winning the `head` CAS and before
/// releasing the slot's stamp jammed the queue one lap later: producers saw "full" and
/// consumers "empty", for ever.
#[test]
fn a_slot_left_by_a_consumer_killed_mid_pop_is_released_one_lap_later() {
    if member_roles() {
        return;
    }
    let name = unique_name("jam");
    let _cleanup = Remove::shm(&name);
    let q = mpmc::Queue::<u64>::create(&name, 8).unwrap();
    for v in 0..8 {
        q.try_push(v).unwrap();
    }
    let test = "a_slot_left_by_a_consumer_killed_mid_pop_is_released_one_lap_later";
    dead_member(test, &name);
    let forge = Forge::open(&name);
    // The dead consumer claimed position 0 (head 1) and never released slot 0 (stamp 1).
    forge.set(0, 1);
    forge.set(Forge::lane(forge.dead_member(), 3), 1 | Forge::CONSUMING);
    assert_eq!(forge.word(Forge::stamp(0)).load(Ordering::SeqCst), 1);
    for v in 1..8 {
        assert_eq!(q.try_pop(), Ok(v));
    }
    // One lap later, position 8 needs slot 0.
    let start = Instant::now();
    for v in 8..16 {
        assert_eq!(q.push_timeout(v, Duration::from_secs(5)), Ok(()), "jammed at {v}");
    }
    assert!(start.elapsed() < Duration::from_secs(2));
    for v in 8..16 {
        assert_eq!(q.try_pop(), Ok(v), "value 0 is the one lost; the rest in order");
    }
    assert_eq!(q.try_pop(), Err(PopError::Empty));
    mpmc::Queue::<u64>::unlink(&name).unwrap();
}

/// Finding 7 of the kill loops: with the creator gone before any consumer had come, a
/// producer that filled the queue got `Disconnected`. Now it waits for consumers; it is
/// disconnected only once a handle that popped has come and gone.
#[test]
fn a_producer_left_alone_before_any_consumer_came_waits_instead_of_failing() {
    if role().as_deref() == Some("consumer") {
        let q = mpmc::Queue::<u64>::open(&arg("QUEUE")).unwrap();
        assert_eq!(q.pop_timeout(LIMIT), Ok(0));
        return;
    }
    let name = unique_name("late-consumer");
    let _cleanup = Remove::shm(&name);
    drop(mpmc::Queue::<u64>::create(&name, 2).unwrap()); // the creator leaves at once
    let q = mpmc::Queue::<u64>::open(&name).unwrap();
    q.try_push(0).unwrap();
    q.try_push(1).unwrap();
    assert_eq!(q.try_push(2), Err(PushError::Full(2)), "alone, but nobody popped yet");
    assert_eq!(q.push_timeout(2, Duration::from_millis(30)), Err(PushError::Timeout(2)));
    let consumer = spawn(
        "a_producer_left_alone_before_any_consumer_came_waits_instead_of_failing",
        "consumer",
        &[("QUEUE", &name)],
    );
    assert_eq!(q.push_timeout(2, LIMIT), Ok(()), "room made by the late consumer");
    consumer.wait_success(LIMIT);
    assert_eq!(q.try_push(3), Err(PushError::Disconnected(3)), "a popper came and went");
    mpmc::Queue::<u64>::unlink(&name).unwrap();
}

/// Batches in one process: prefixes as room allows, `Full(0)` and `Empty` at the edges, a
/// lap of wrap-around, slices longer than the ring, and the timeouts.
#[test]
fn batches_take_what_fits_and_keep_the_order() {
    let name = unique_name("batch-basic");
    let _cleanup = Remove::shm(&name);
    let q = mpmc::Queue::<u32>::create(&name, 8).unwrap();
    assert_eq!(q.try_push_slice(&[]), Ok(0));
    assert_eq!(q.try_pop_into(&mut []), Ok(0));
    let mut buf = [0u32; 16];
    assert_eq!(q.try_pop_into(&mut buf), Err(PopError::Empty));
    assert_eq!(q.try_push_slice(&[1, 2, 3]), Ok(3));
    assert_eq!(q.try_push_slice(&(4..20).collect::<Vec<_>>()), Ok(5), "room for five more");
    assert_eq!(q.try_push_slice(&[9]), Err(PushError::Full(0)));
    assert_eq!(q.try_pop_into(&mut buf[..2]), Ok(2));
    assert_eq!(buf[..2], [1, 2]);
    // Wraps around the end of the ring.
    assert_eq!(q.try_push_slice(&[9, 10, 11]), Ok(2));
    assert_eq!(q.try_pop_into(&mut buf), Ok(8));
    assert_eq!(buf[..8], [3, 4, 5, 6, 7, 8, 9, 10]);
    // Singles and batches interleave.
    q.try_push(1).unwrap();
    assert_eq!(q.try_push_slice(&[2, 3]), Ok(2));
    assert_eq!(q.try_pop(), Ok(1));
    assert_eq!(q.try_pop_into(&mut buf), Ok(2));
    assert_eq!(buf[..2], [2, 3]);
    // Timeouts: never early, and they say how much went through.
    let start = Instant::now();
    let e = q.push_slice_timeout(&(0..12).collect::<Vec<_>>(), Duration::from_millis(30));
    assert_eq!(e, Err(PushError::Timeout(8)), "eight fitted");
    assert!(start.elapsed() >= Duration::from_millis(30));
    assert_eq!(q.try_pop_into(&mut buf), Ok(8));
    assert_eq!(buf[..8], [0, 1, 2, 3, 4, 5, 6, 7]);
    let start = Instant::now();
    assert_eq!(q.pop_into_timeout(&mut buf, Duration::from_millis(30)), Err(PopError::Timeout));
    assert!(start.elapsed() >= Duration::from_millis(30));
    // A slice longer than the ring goes through a consumer thread, in order.
    let values: Vec<u32> = (0..1000).collect();
    let got = std::thread::scope(|s| {
        let consumer = s.spawn(|| {
            let mut got = Vec::new();
            let mut buf = [0u32; 7];
            while got.len() < 1000 {
                let n = q.pop_into_timeout(&mut buf, LIMIT).unwrap();
                got.extend_from_slice(&buf[..n]);
            }
            got
        });
        q.push_slice_timeout(&values, LIMIT).unwrap();
        consumer.join().unwrap()
    });
    assert_eq!(got, values);
    mpmc::Queue::<u32>::unlink(&name).unwrap();
}

const BATCH_VALUES: u64 = 100_000;

/// Two producer processes push in batches of varying size, the parent and a consumer
/// process pop in batches: every value exactly once, each producer's in order.
#[test]
fn batches_across_processes_deliver_each_value_exactly_once_in_order() {
    let test = "batches_across_processes_deliver_each_value_exactly_once_in_order";
    match role().as_deref() {
        Some("producer") => {
            let q = mpmc::Queue::<u64>::open(&arg("QUEUE")).unwrap();
            let id: u64 = arg("ID").parse().unwrap();
            report("opened");
            wait_for_parent(LIMIT);
            let values: Vec<u64> = (0..BATCH_VALUES).map(|i| id << 32 | i).collect();
            let mut at = 0;
            let mut size = 1;
            while at < values.len() {
                let end = (at + size).min(values.len());
                q.push_slice_timeout(&values[at..end], LIMIT).unwrap();
                at = end;
                size = size % 100 + 7; // 1, 8, 15, ... 99, 6, 13, ...
            }
            report("pushed");
            wait_for_parent(LIMIT);
            return;
        }
        Some("consumer") => {
            let q = mpmc::Queue::<u64>::open(&arg("QUEUE")).unwrap();
            let out = mpmc::Queue::<u64>::open(&arg("OUT")).unwrap();
            report("opened");
            wait_for_parent(LIMIT);
            let mut buf = [0u64; 64];
            loop {
                match q.pop_into_timeout(&mut buf, Duration::from_millis(300)) {
                    Ok(n) => out.push_slice_timeout(&buf[..n], LIMIT).unwrap(),
                    Err(PopError::Timeout) => break,
                    Err(e) => panic!("consumer: {e}"),
                }
            }
            return;
        }
        _ => {}
    }
    let (name, out_name) = (unique_name("batch-x"), unique_name("batch-out"));
    let _cleanup = (Remove::shm(&name), Remove::shm(&out_name));
    let q = mpmc::Queue::<u64>::create(&name, 256).unwrap();
    let out = mpmc::Queue::<u64>::create(&out_name, 4096).unwrap();
    let mut kids = vec![
        spawn(test, "producer", &[("QUEUE", &name), ("ID", "0")]),
        spawn(test, "producer", &[("QUEUE", &name), ("ID", "1")]),
        spawn(test, "consumer", &[("QUEUE", &name), ("OUT", &out_name)]),
    ];
    for k in &mut kids {
        k.expect("opened", LIMIT);
    }
    for k in &mut kids {
        k.release();
    }
    // This process pops from both the queue and what the consumer process forwards.
    let mut last = [None::<u64>; 2];
    let mut seen = vec![false; 2 * BATCH_VALUES as usize];
    let mut count = 0;
    let mut buf = [0u64; 37];
    let mut record = |v: &[u64], check_order: bool, last: &mut [Option<u64>; 2]| -> u64 {
        for &v in v {
            let (p, i) = ((v >> 32) as usize, v & 0xFFFF_FFFF);
            assert!(p < 2 && i < BATCH_VALUES, "garbage {v:#x}");
            if check_order {
                assert!(last[p].is_none_or(|l| l < i), "producer {p}'s order broken at {i}");
                last[p] = Some(i);
            }
            let bit = p * BATCH_VALUES as usize + i as usize;
            assert!(!seen[bit], "value {v:#x} delivered twice");
            seen[bit] = true;
        }
        v.len() as u64
    };
    let deadline = Instant::now() + LIMIT;
    while count < 2 * BATCH_VALUES {
        assert!(Instant::now() < deadline, "stalled at {count}");
        if let Ok(n) = q.try_pop_into(&mut buf) {
            count += record(&buf[..n], true, &mut last);
        }
        // The consumer process's share, in its own order of popping.
        let mut fwd_last = [None; 2];
        if let Ok(n) = out.try_pop_into(&mut buf) {
            count += record(&buf[..n], false, &mut fwd_last);
        }
    }
    for k in &mut kids[..2] {
        k.expect("pushed", LIMIT);
        k.release();
    }
    for k in kids {
        k.wait_success(LIMIT);
    }
    assert_eq!(out.try_pop(), Err(PopError::Disconnected), "nothing extra forwarded");
    mpmc::Queue::<u64>::unlink(&name).unwrap();
}

/// The bytes of a member's claim lengths (one per lane), after its lock word.
fn lengths(member: usize) -> usize {
    Forge::MEMBERS + 128 * member + 40
}

/// A producer killed part-way through a batch: it claimed positions 1..4 (`tail` 4, its
/// lane marking 1 with length 3), published position 1 and died. Consumers get that value
/// and step over the two holes to the values behind them. Without the claim length (a
/// lane marking only its first position) the second hole stranded everything behind it.
#[test]
fn holes_left_by_a_producer_killed_mid_batch_are_stepped_over() {
    if member_roles() {
        return;
    }
    let name = unique_name("batch-holes");
    let _cleanup = Remove::shm(&name);
    let q = mpmc::Queue::<u64>::create(&name, 8).unwrap();
    q.try_push(1).unwrap();
    assert_eq!(q.try_pop(), Ok(1)); // head = tail = 1
    let test = "holes_left_by_a_producer_killed_mid_batch_are_stepped_over";
    let mut live = spawn(test, "producer", &[("QUEUE", &name)]);
    live.expect("opened", LIMIT);
    dead_member(test, &name);
    let forge = Forge::open(&name);
    let dead = forge.dead_member();
    forge.set(Forge::stamp(1) + 8, 77); // position 1's value, published
    forge.set(Forge::stamp(1), 2);
    forge.set(Forge::TAIL, 4);
    forge.set(lengths(dead), 3);
    forge.set(Forge::lane(dead, 0), 2);

    live.release();
    live.expect("pushed", LIMIT); // 99 at position 4
    let start = Instant::now();
    let mut buf = [0u64; 8];
    assert_eq!(q.pop_into_timeout(&mut buf, Duration::from_secs(5)), Ok(1));
    assert_eq!(buf[0], 77, "the published part of the batch arrives");
    assert_eq!(q.pop_timeout(Duration::from_secs(5)), Ok(99), "stranded behind the holes");
    assert!(start.elapsed() < Duration::from_secs(2));
    assert_eq!(forge.word(Forge::lane(dead, 0)).load(Ordering::SeqCst), 0, "marker cleared");
    assert_eq!(q.try_pop(), Err(PopError::Empty));
    live.release();
    live.wait_success(LIMIT);
    mpmc::Queue::<u64>::unlink(&name).unwrap();
}

/// A consumer killed part-way through a batch: it claimed positions 0..3 (`head` 3),
/// released slot 0 and died. One lap later producers release slots 1 and 2 (their values
/// are the ones lost) instead of finding the queue full for ever at slot 1.
#[test]
fn slots_left_by_a_consumer_killed_mid_batch_are_released_one_lap_later() {
    if member_roles() {
        return;
    }
    let name = unique_name("batch-jam");
    let _cleanup = Remove::shm(&name);
    let q = mpmc::Queue::<u64>::create(&name, 8).unwrap();
    assert_eq!(q.try_push_slice(&(0..8).collect::<Vec<_>>()), Ok(8));
    let test = "slots_left_by_a_consumer_killed_mid_batch_are_released_one_lap_later";
    dead_member(test, &name);
    let forge = Forge::open(&name);
    let dead = forge.dead_member();
    forge.set(0, 3); // head
    forge.set(Forge::stamp(0), 8); // slot 0 released for position 8
    forge.set(lengths(dead), 3 << 16); // lane 2's length: 3
    forge.set(Forge::lane(dead, 2), 1 | Forge::CONSUMING);
    let mut buf = [0u64; 8];
    assert_eq!(q.try_pop_into(&mut buf), Ok(5));
    assert_eq!(buf[..5], [3, 4, 5, 6, 7]);
    let start = Instant::now();
    let values: Vec<u64> = (8..16).collect();
    assert_eq!(q.push_slice_timeout(&values, Duration::from_secs(5)), Ok(()), "jammed");
    assert!(start.elapsed() < Duration::from_secs(2));
    assert_eq!(q.try_pop_into(&mut buf), Ok(8));
    assert_eq!(buf, [8, 9, 10, 11, 12, 13, 14, 15], "0, 1 and 2 are the ones lost");
    assert_eq!(forge.word(Forge::lane(dead, 2)).load(Ordering::SeqCst), 0, "marker cleared");
    mpmc::Queue::<u64>::unlink(&name).unwrap();
}
