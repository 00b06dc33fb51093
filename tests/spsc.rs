//! SPSC queues across real processes: order, struct payloads, full/empty, roles, and a
//! producer killed mid-stream.
#![allow(clippy::disallowed_types)] // the shared harness counts with std atomics
#![cfg(not(miri))]

mod common;

use std::time::{Duration, Instant};

use common::{Remove, arg, report, role, spawn, unique_name, wait_for_parent};
use shmsync::{OpenError, PopError, PushError, spsc};

const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn two_million_u64_arrive_in_order() {
    const COUNT: u64 = 2_000_000;
    if role().as_deref() == Some("producer") {
        let mut tx = spsc::Producer::<u64>::open(&arg("QUEUE")).unwrap();
        for v in 0..COUNT {
            tx.push_timeout(v, LIMIT).unwrap();
        }
        return;
    }
    let name = unique_name("order");
    let _cleanup = Remove::shm(&name);
    let mut rx = spsc::Consumer::<u64>::create(&name, 4096).unwrap();
    let producer = spawn("two_million_u64_arrive_in_order", "producer", &[("QUEUE", &name)]);
    let mut sum = 0u64;
    for expected in 0..COUNT {
        let v = rx.pop_timeout(LIMIT).unwrap();
        assert_eq!(v, expected);
        sum = sum.wrapping_add(v);
    }
    assert_eq!(sum, COUNT * (COUNT - 1) / 2);
    producer.wait_success(LIMIT);
    assert_eq!(rx.try_pop(), Err(PopError::Disconnected), "drained, then the producer left");
    spsc::Consumer::<u64>::unlink(&name).unwrap();
}

/// A 64-byte record whose fields check each other, so a torn read shows.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, shmsync::Pod, shmsync::Zeroable)]
struct Record {
    seq: u64,
    payload: [u64; 6],
    check: u64,
}

impl Record {
    fn new(seq: u64) -> Self {
        let payload = std::array::from_fn(|i| {
            seq.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(i as u32 * 7)
        });
        let check = payload.iter().fold(seq, |a, b| a ^ b);
        Self { seq, payload, check }
    }

    fn is_intact(&self) -> bool {
        *self == Self::new(self.seq)
    }
}

const _: () = assert!(size_of::<Record>() == 64);

#[test]
fn records_of_64_bytes_arrive_intact() {
    if role().as_deref() == Some("producer") {
        let mut tx = spsc::Producer::<Record>::open(&arg("QUEUE")).unwrap();
        for seq in 0..100_000 {
            tx.push_timeout(Record::new(seq), LIMIT).unwrap();
        }
        return;
    }
    let name = unique_name("records");
    let _cleanup = Remove::shm(&name);
    let mut rx = spsc::Consumer::<Record>::create(&name, 256).unwrap();
    let producer = spawn("records_of_64_bytes_arrive_intact", "producer", &[("QUEUE", &name)]);
    for seq in 0..100_000 {
        let r = rx.pop_timeout(LIMIT).unwrap();
        assert_eq!(r.seq, seq);
        assert!(r.is_intact(), "torn record {r:?}");
    }
    producer.wait_success(LIMIT);
    spsc::Consumer::<Record>::unlink(&name).unwrap();
}

#[test]
fn full_empty_capacity_and_timeouts() {
    let name = unique_name("full");
    let _cleanup = Remove::shm(&name);
    let mut tx = spsc::Producer::<u32>::create(&name, 3).unwrap();
    let mut rx = spsc::Consumer::<u32>::open(&name).unwrap();
    assert_eq!(tx.capacity(), 4);
    assert_eq!(rx.try_pop(), Err(PopError::Empty));
    for v in 0..4 {
        tx.try_push(v).unwrap();
    }
    assert!(tx.is_full() && rx.is_full());
    assert_eq!(tx.try_push(9), Err(PushError::Full(9)));
    let start = Instant::now();
    assert_eq!(tx.push_timeout(9, Duration::from_millis(50)), Err(PushError::Timeout(9)));
    assert!(start.elapsed() >= Duration::from_millis(50));
    assert_eq!(rx.len(), 4);
    for v in 0..4 {
        assert_eq!(rx.pop_timeout(LIMIT), Ok(v));
    }
    let start = Instant::now();
    assert_eq!(rx.pop_timeout(Duration::from_millis(50)), Err(PopError::Timeout));
    assert!(start.elapsed() >= Duration::from_millis(50));
    assert!(rx.is_empty() && !rx.is_abandoned() && !tx.is_abandoned());
    // Bad capacities are refused before anything is created.
    let bad = unique_name("zero");
    let err = spsc::Producer::<u32>::create(&bad, 0).unwrap_err();
    assert!(matches!(err, OpenError::InvalidCapacity { requested: 0, .. }), "{err:?}");
    assert!(err.to_string().contains("capacity 0") && err.to_string().contains("1..="), "{err}");
    assert!(matches!(spsc::Consumer::<u32>::open(&bad), Err(OpenError::NotFound { .. })));
    // Another element type is refused.
    assert!(matches!(spsc::Consumer::<u64>::open(&name), Err(OpenError::LayoutMismatch { .. })));
    spsc::Producer::<u32>::unlink(&name).unwrap();
}

#[test]
fn roles_are_exclusive_across_processes_until_released() {
    if role().as_deref() == Some("second-producer") {
        let err = spsc::Producer::<u64>::open(&arg("QUEUE")).unwrap_err();
        assert!(matches!(err, OpenError::Busy { .. }), "got {err:?}");
        report("busy");
        wait_for_parent(LIMIT); // the parent drops its producer meanwhile
        let mut tx = spsc::Producer::<u64>::open(&arg("QUEUE")).unwrap();
        tx.push_timeout(42, LIMIT).unwrap();
        report("pushed");
        wait_for_parent(LIMIT); // stay attached until the parent has read it
        return;
    }
    let name = unique_name("roles");
    let _cleanup = Remove::shm(&name);
    let tx = spsc::Producer::<u64>::create(&name, 8).unwrap();
    assert!(
        matches!(spsc::Producer::<u64>::open(&name), Err(OpenError::Busy { .. })),
        "same process"
    );
    let mut rx = spsc::Consumer::<u64>::open(&name).unwrap();
    assert!(matches!(spsc::Consumer::<u64>::open(&name), Err(OpenError::Busy { .. })));
    let mut other = spawn(
        "roles_are_exclusive_across_processes_until_released",
        "second-producer",
        &[("QUEUE", &name)],
    );
    other.expect("busy", LIMIT);
    drop(tx);
    // Between the two producers the queue is abandoned: that is Disconnected.
    assert_eq!(rx.pop_timeout(LIMIT), Err(PopError::Disconnected));
    other.release();
    other.expect("pushed", LIMIT);
    assert!(!rx.is_abandoned(), "a new producer attached");
    assert_eq!(rx.pop_timeout(LIMIT), Ok(42));
    other.release();
    other.wait_success(LIMIT);
    spsc::Consumer::<u64>::unlink(&name).unwrap();
}

#[test]
fn a_producer_killed_mid_stream_leaves_a_strict_prefix_then_disconnected() {
    if role().as_deref() == Some("victim") {
        let mut tx = spsc::Producer::<Record>::open(&arg("QUEUE")).unwrap();
        let mut seq = 0;
        loop {
            tx.push_timeout(Record::new(seq), LIMIT).unwrap();
            if seq == 1000 {
                report("streaming");
            }
            seq += 1;
        }
    }
    let name = unique_name("killed");
    let _cleanup = Remove::shm(&name);
    let mut rx = spsc::Consumer::<Record>::create(&name, 64).unwrap();
    let mut victim = spawn(
        "a_producer_killed_mid_stream_leaves_a_strict_prefix_then_disconnected",
        "victim",
        &[("QUEUE", &name)],
    );
    let mut next = 0;
    let take = |rx: &mut spsc::Consumer<Record>, next: &mut u64| -> Result<(), PopError> {
        let r = rx.pop_timeout(LIMIT)?;
        assert_eq!(r.seq, *next, "a gap or a duplicate");
        assert!(r.is_intact(), "a torn record");
        *next += 1;
        Ok(())
    };
    while next < 2000 {
        take(&mut rx, &mut next).unwrap();
    }
    victim.expect("streaming", LIMIT);
    // Kill it while we are not reading, so that it is likely blocked on a full queue...
    victim.kill();
    let killed = Instant::now();
    // ...and then drain: a strict prefix, then Disconnected.
    let end = loop {
        match take(&mut rx, &mut next) {
            Ok(()) => {}
            Err(e) => break e,
        }
    };
    assert_eq!(end, PopError::Disconnected);
    assert!(killed.elapsed() < Duration::from_secs(2), "took {:?}", killed.elapsed());
    assert!(rx.is_abandoned());
    // The role can be claimed again.
    drop(spsc::Producer::<Record>::open(&name).unwrap());
    spsc::Consumer::<Record>::unlink(&name).unwrap();
}

#[test]
fn a_consumer_blocked_when_the_producer_dies_gets_disconnected() {
    if role().as_deref() == Some("idle-producer") {
        let _tx = spsc::Producer::<u64>::open(&arg("QUEUE")).unwrap();
        report("attached");
        std::thread::sleep(LIMIT);
        return;
    }
    let name = unique_name("blocked");
    let _cleanup = Remove::shm(&name);
    let mut rx = spsc::Consumer::<u64>::create(&name, 8).unwrap();
    // Before any producer attached, a blocking pop just waits out its timeout.
    assert_eq!(rx.pop_timeout(Duration::from_millis(30)), Err(PopError::Timeout));
    let mut producer = spawn(
        "a_consumer_blocked_when_the_producer_dies_gets_disconnected",
        "idle-producer",
        &[("QUEUE", &name)],
    );
    producer.expect("attached", LIMIT);
    std::thread::scope(|s| {
        let blocked = s.spawn(|| {
            let r = rx.pop_timeout(LIMIT);
            (r, Instant::now())
        });
        std::thread::sleep(Duration::from_millis(200));
        let killed = Instant::now();
        producer.kill();
        let (r, woke) = blocked.join().unwrap();
        assert_eq!(r, Err(PopError::Disconnected));
        let latency = woke.saturating_duration_since(killed);
        eprintln!("kill to Disconnected in a blocked pop: {latency:?}");
        assert!(latency < Duration::from_secs(2));
    });
    spsc::Consumer::<u64>::unlink(&name).unwrap();
}

#[test]
fn chunks_write_and_read_in_place() {
    let name = unique_name("chunks");
    let _cleanup = Remove::shm(&name);
    let mut tx = spsc::Producer::<u32>::create(&name, 8).unwrap();
    let mut rx = spsc::Consumer::<u32>::open(&name).unwrap();
    assert_eq!(tx.write_chunk(9).unwrap_err(), shmsync::ChunkError::TooFewSlots);
    assert_eq!(rx.read_chunk(1).unwrap_err(), shmsync::ChunkError::TooFewSlots);

    // Move the positions to 6, so that a chunk of 5 wraps as 2 + 3.
    for v in 0..6 {
        tx.try_push(v).unwrap();
        assert_eq!(rx.try_pop(), Ok(v));
    }
    let mut chunk = tx.write_chunk(5).unwrap();
    let (a, b) = chunk.as_mut_slices();
    assert_eq!((a.len(), b.len()), (2, 3));
    a.copy_from_slice(&[10, 11]);
    b.copy_from_slice(&[12, 13, 14]);
    chunk.commit(4);
    // A chunk that goes out of scope publishes nothing.
    {
        let _unpublished = tx.write_chunk(1).unwrap();
    }
    assert_eq!(rx.len(), 4);

    let mut chunk = rx.read_chunk(4).unwrap();
    let (a, b) = chunk.as_slices();
    assert_eq!((a, b), (&[10, 11][..], &[12, 13][..]));
    chunk.commit(3);
    {
        let _unread = rx.read_chunk(1).unwrap(); // going out of scope frees nothing
    }
    assert_eq!(rx.try_pop(), Ok(13));
    assert_eq!(rx.try_pop(), Err(PopError::Empty));

    drop(tx);
    assert_eq!(rx.read_chunk(1).unwrap_err(), shmsync::ChunkError::Disconnected);
    spsc::Consumer::<u32>::unlink(&name).unwrap();
}

#[test]
fn chunked_streams_cross_processes_in_order() {
    const COUNT: u64 = 1_000_000;
    if role().as_deref() == Some("chunk-producer") {
        let mut tx = spsc::Producer::<u64>::open(&arg("QUEUE")).unwrap();
        let mut next = 0;
        let mut want = 1;
        while next < COUNT {
            let n = want.min((COUNT - next) as usize);
            match tx.write_chunk(n) {
                Ok(mut chunk) => {
                    let (a, b) = chunk.as_mut_slices();
                    for (slot, v) in a.iter_mut().chain(b.iter_mut()).zip(next..) {
                        *slot = v;
                    }
                    // Publish all but one now and then, to exercise partial commits.
                    let k = if n > 1 && next % 3 == 0 { n - 1 } else { n };
                    chunk.commit(k);
                    next += k as u64;
                    want = want % 97 + 1;
                }
                Err(shmsync::ChunkError::TooFewSlots) => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        }
        return;
    }
    let name = unique_name("chunk-stream");
    let _cleanup = Remove::shm(&name);
    let mut rx = spsc::Consumer::<u64>::create(&name, 1024).unwrap();
    let producer =
        spawn("chunked_streams_cross_processes_in_order", "chunk-producer", &[("QUEUE", &name)]);
    let mut next = 0;
    let deadline = Instant::now() + LIMIT;
    while next < COUNT {
        assert!(Instant::now() < deadline, "stalled at {next}");
        let ready = rx.len().min(64);
        if ready == 0 {
            // Block for at least one value, then go back to chunks.
            assert_eq!(rx.pop_timeout(LIMIT), Ok(next));
            next += 1;
            continue;
        }
        let mut chunk = rx.read_chunk(ready).unwrap();
        let (a, b) = chunk.as_slices();
        for v in a.iter().chain(b) {
            assert_eq!(*v, next);
            next += 1;
        }
        chunk.commit_all();
    }
    producer.wait_success(LIMIT);
    assert_eq!(rx.try_pop(), Err(PopError::Disconnected));
    spsc::Consumer::<u64>::unlink(&name).unwrap();
}

#[test]
fn wait_connected_times_out_without_a_consumer_and_returns_once_one_comes() {
    if role().as_deref() == Some("consumer") {
        let rx = spsc::Consumer::<u64>::open(&arg("QUEUE")).unwrap();
        assert!(rx.is_connected(), "the producer holds its end");
        report("attached");
        wait_for_parent(LIMIT);
        return;
    }
    let name = unique_name("connected");
    let _cleanup = Remove::shm(&name);
    let tx = spsc::Producer::<u64>::create(&name, 8).unwrap();
    assert!(!tx.is_connected());
    let start = Instant::now();
    assert!(!tx.wait_connected(Duration::from_millis(50)), "nobody came");
    assert!(start.elapsed() >= Duration::from_millis(50));
    let until = Instant::now() + Duration::from_millis(20);
    assert!(!tx.wait_connected_deadline(until));
    assert!(Instant::now() >= until);

    let mut consumer = spawn(
        "wait_connected_times_out_without_a_consumer_and_returns_once_one_comes",
        "consumer",
        &[("QUEUE", &name)],
    );
    let start = Instant::now();
    assert!(tx.wait_connected(LIMIT), "the consumer came");
    let waited = start.elapsed();
    consumer.expect("attached", LIMIT);
    assert!(tx.is_connected());
    // Woken by the claim, not by a timeout (a child starts in milliseconds).
    assert!(waited < Duration::from_secs(5), "took {waited:?}");
    consumer.release();
    consumer.wait_success(LIMIT);
    assert!(!tx.is_connected(), "gone again");
    assert!(tx.is_abandoned());
    spsc::Producer::<u64>::unlink(&name).unwrap();
}
