//! Pipes across real processes: round trips, message boundaries, byte streams, ends
//! claimed once, and peers that leave or are killed.
#![allow(clippy::disallowed_types)] // the shared harness counts with std atomics
#![cfg(not(miri))]

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::{Remove, Rng, arg, report, role, spawn, unique_name};
use shmsync::{OpenError, Options, Pipe, RecvError, SendError};

const LIMIT: Duration = Duration::from_secs(60);

/// The reply the echo child sends for `msg`: its bytes reversed, then its length.
fn echo_of(msg: &[u8]) -> Vec<u8> {
    let mut reply: Vec<u8> = msg.iter().rev().copied().collect();
    reply.extend_from_slice(&(msg.len() as u32).to_le_bytes());
    reply
}

#[test]
fn ten_thousand_duplex_round_trips_carry_their_payloads() {
    if role().as_deref() == Some("echo") {
        let mut b = Pipe::open(&arg("PIPE")).unwrap();
        let mut buf = Vec::new();
        loop {
            match b.recv_into(&mut buf) {
                Ok(_) => b.send_timeout(&echo_of(&buf), LIMIT).unwrap(),
                Err(RecvError::Disconnected) => return,
                Err(e) => panic!("{e}"),
            }
        }
    }
    let name = unique_name("roundtrip");
    let _cleanup = Remove::shm(&name);
    let mut a = Pipe::create(&name, 4096).unwrap();
    let echo =
        spawn("ten_thousand_duplex_round_trips_carry_their_payloads", "echo", &[("PIPE", &name)]);
    let mut rng = Rng::new(7);
    for round in 0..10_000u32 {
        let len = (rng.next_u64() % 300) as usize;
        let mut msg = vec![0; len];
        rng.fill(&mut msg);
        a.send_timeout(&msg, LIMIT).unwrap();
        let reply = a.recv_timeout(LIMIT).unwrap();
        assert_eq!(&*reply, echo_of(&msg).as_slice(), "round {round}");
    }
    drop(a);
    echo.wait_success(LIMIT);
    Pipe::unlink(&name).unwrap();
}

#[test]
fn round_trips_without_spinning_sleep_and_wake_every_time() {
    // With spinning off every wait is a futex sleep: a lost wake-up would stall a round
    // trip until the 50 ms safety slice, which the time bound below would catch.
    const ROUNDS: u32 = 300;
    if role().as_deref() == Some("echo") {
        let mut b = Pipe::open(&arg("PIPE")).unwrap();
        b.set_spin(false);
        for _ in 0..ROUNDS {
            let msg = b.recv_timeout(LIMIT).unwrap().to_vec();
            b.send_timeout(&echo_of(&msg), LIMIT).unwrap();
        }
        return;
    }
    let name = unique_name("no-spin");
    let _cleanup = Remove::shm(&name);
    let mut a = Pipe::create(&name, 4096).unwrap();
    a.set_spin(false);
    let echo =
        spawn("round_trips_without_spinning_sleep_and_wake_every_time", "echo", &[("PIPE", &name)]);
    let started = Instant::now();
    for round in 0..ROUNDS {
        let msg = round.to_le_bytes();
        a.send_timeout(&msg, LIMIT).unwrap();
        assert_eq!(&*a.recv_timeout(LIMIT).unwrap(), echo_of(&msg).as_slice());
    }
    let per_round = started.elapsed() / ROUNDS;
    eprintln!("round trip without spinning: {per_round:?}");
    // Generous: a wake-up costs tens of microseconds here, the safety slice 50 ms.
    assert!(per_round < Duration::from_millis(10), "{per_round:?} per round trip");
    echo.wait_success(LIMIT);
    Pipe::unlink(&name).unwrap();
}

#[test]
fn message_boundaries_are_kept_for_every_size_up_to_half_the_capacity() {
    const CAPACITY: usize = 16 * 1024;
    const SIZES: [usize; 6] = [0, 1, 7, 4096, CAPACITY / 2, 3];
    let pattern = |size: usize, k: usize| (size * 31 + k) as u8;
    if role().as_deref() == Some("sender") {
        let mut b = Pipe::open(&arg("PIPE")).unwrap();
        assert!(b.max_message() >= CAPACITY / 2);
        for _ in 0..50 {
            for size in SIZES {
                let msg: Vec<u8> = (0..size).map(|k| pattern(size, k)).collect();
                b.send_timeout(&msg, LIMIT).unwrap();
            }
        }
        return;
    }
    let name = unique_name("boundaries");
    let _cleanup = Remove::shm(&name);
    let mut a = Pipe::create(&name, CAPACITY).unwrap();
    let sender = spawn(
        "message_boundaries_are_kept_for_every_size_up_to_half_the_capacity",
        "sender",
        &[("PIPE", &name)],
    );
    for round in 0..50 {
        for size in SIZES {
            let msg = a.recv_timeout(LIMIT).unwrap();
            assert_eq!(msg.len(), size, "round {round}");
            assert!(msg.iter().enumerate().all(|(k, b)| *b == pattern(size, k)), "round {round}");
        }
    }
    sender.wait_success(LIMIT);
    assert_eq!(a.recv_timeout(LIMIT).unwrap_err(), RecvError::Disconnected);
    Pipe::unlink(&name).unwrap();
}

#[test]
fn an_oversize_message_is_refused_at_once() {
    let name = unique_name("oversize");
    let _cleanup = Remove::shm(&name);
    let mut a = Pipe::create(&name, 1000).unwrap();
    let max = a.max_message();
    assert!(max >= 500, "max_message {max}");
    assert_eq!(a.capacity(), 1024);
    // Nobody reads: the largest message still fits the empty ring, one byte more never will.
    let started = Instant::now();
    assert_eq!(a.send(&vec![1; max + 1]), Err(SendError::TooLarge));
    assert_eq!(a.send_with(usize::MAX, |_| unreachable!()), Err(SendError::TooLarge));
    assert!(started.elapsed() < Duration::from_secs(1));
    a.send(&vec![2; max]).unwrap();
    let mut b = Pipe::open(&name).unwrap();
    assert_eq!(b.recv().unwrap().len(), max);
    Pipe::unlink(&name).unwrap();
}

#[test]
fn bad_capacities_are_refused() {
    let name = unique_name("capacity");
    for capacity in [0, usize::MAX] {
        let err = Pipe::create(&name, capacity).unwrap_err();
        assert!(
            matches!(err, OpenError::InvalidCapacity { requested, .. } if requested == capacity as u64),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(text.contains(&capacity.to_string()) && text.contains("bytes"), "{text}");
    }
    assert!(matches!(Pipe::open(&name), Err(OpenError::NotFound { .. })));
}

#[test]
fn buffered_messages_outlive_the_sender_then_disconnected() {
    if role().as_deref() == Some("sender") {
        let mut b = Pipe::open(&arg("PIPE")).unwrap();
        for k in 0..100u32 {
            b.send_timeout(&k.to_le_bytes(), LIMIT).unwrap();
        }
        return; // exits with everything still buffered
    }
    let name = unique_name("buffered");
    let _cleanup = Remove::shm(&name);
    let mut a = Pipe::create(&name, 4096).unwrap();
    spawn("buffered_messages_outlive_the_sender_then_disconnected", "sender", &[("PIPE", &name)])
        .wait_success(LIMIT);
    assert!(a.is_abandoned());
    assert!(a.poll(Duration::ZERO), "messages are waiting");
    for k in 0..100u32 {
        assert_eq!(&*a.try_recv().unwrap(), k.to_le_bytes());
    }
    assert_eq!(a.try_recv().unwrap_err(), RecvError::Disconnected);
    assert_eq!(a.recv().unwrap_err(), RecvError::Disconnected);
    assert_eq!(a.send(b"anyone?"), Err(SendError::Disconnected));
    // The dead end can be opened again, and then it is a live peer.
    let mut b = Pipe::open(&name).unwrap();
    b.send(b"back").unwrap();
    assert_eq!(&*a.recv().unwrap(), b"back");
    Pipe::unlink(&name).unwrap();
}

/// The child side of the kill tests: holds end B and idles until killed. Returns whether
/// this process is that child.
fn play_idle_peer() -> bool {
    if role().as_deref() != Some("idle") {
        return false;
    }
    let _b = Pipe::open(&arg("PIPE")).unwrap();
    report("attached");
    std::thread::sleep(LIMIT);
    true
}

/// Starts `test` as the idle peer of pipe `name` and waits until it holds end B.
fn start_idle_peer(test: &str, name: &str) -> common::Proc {
    let mut peer = spawn(test, "idle", &[("PIPE", name)]);
    peer.expect("attached", LIMIT);
    peer
}

#[test]
fn a_receiver_blocked_when_the_peer_is_killed_gets_disconnected() {
    if play_idle_peer() {
        return;
    }
    let name = unique_name("killed");
    let _cleanup = Remove::shm(&name);
    let mut a = Pipe::create(&name, 4096).unwrap();
    // Before any peer attached, a blocking receive just waits out its timeout.
    assert_eq!(a.recv_timeout(Duration::from_millis(30)).unwrap_err(), RecvError::Timeout);
    let peer =
        start_idle_peer("a_receiver_blocked_when_the_peer_is_killed_gets_disconnected", &name);
    std::thread::scope(|s| {
        let blocked = s.spawn(|| {
            let r = a.recv_timeout(LIMIT).map(|m| m.len());
            (r, Instant::now())
        });
        std::thread::sleep(Duration::from_millis(200));
        let killed = Instant::now();
        peer.kill();
        let (r, woke) = blocked.join().unwrap();
        assert_eq!(r, Err(RecvError::Disconnected));
        let latency = woke.saturating_duration_since(killed);
        eprintln!("kill to Disconnected in a blocked recv: {latency:?}");
        assert!(latency < Duration::from_secs(2));
    });
    Pipe::unlink(&name).unwrap();
}

#[test]
fn a_sender_blocked_on_a_full_pipe_when_the_peer_is_killed_gets_disconnected() {
    if play_idle_peer() {
        return;
    }
    let name = unique_name("killed-full");
    let _cleanup = Remove::shm(&name);
    let mut a = Pipe::create(&name, 64).unwrap();
    let peer = start_idle_peer(
        "a_sender_blocked_on_a_full_pipe_when_the_peer_is_killed_gets_disconnected",
        &name,
    );
    let mut sent = 0;
    while a.send_timeout(&[9; 8], Duration::from_millis(20)).is_ok() {
        sent += 1;
    }
    assert_eq!(sent, a.capacity() / 16, "16-byte frames fill the ring");
    std::thread::scope(|s| {
        let blocked = s.spawn(|| a.send_timeout(&[9; 8], LIMIT));
        std::thread::sleep(Duration::from_millis(200));
        let killed = Instant::now();
        peer.kill();
        assert_eq!(blocked.join().unwrap(), Err(SendError::Disconnected));
        assert!(killed.elapsed() < Duration::from_secs(2));
    });
    Pipe::unlink(&name).unwrap();
}

#[test]
fn poll_on_an_empty_pipe_is_false_after_its_timeout() {
    let name = unique_name("poll");
    let _cleanup = Remove::shm(&name);
    let mut a = Pipe::create(&name, 4096).unwrap();
    let mut b = Pipe::open(&name).unwrap();
    let started = Instant::now();
    assert!(!a.poll(Duration::from_millis(50)));
    assert!(started.elapsed() >= Duration::from_millis(50));
    b.send(b"x").unwrap();
    assert!(a.poll(Duration::from_millis(50)));
    assert!(a.poll(Duration::ZERO), "poll does not take the message");
    assert_eq!(&*a.recv().unwrap(), b"x");
    assert!(!a.poll(Duration::ZERO));
    Pipe::unlink(&name).unwrap();
}

#[test]
fn one_mebibyte_of_random_bytes_round_trips_through_read_and_write() {
    const LEN: usize = 1 << 20;
    let data = || {
        let mut bytes = vec![0; LEN];
        Rng::new(99).fill(&mut bytes);
        bytes
    };
    if role().as_deref() == Some("writer") {
        let mut b = Pipe::open(&arg("PIPE")).unwrap();
        let bytes = data();
        // Uneven writes, each larger than the ring can take at once.
        for piece in bytes.chunks(10_007) {
            b.write_all(piece).unwrap();
        }
        b.flush().unwrap();
        return;
    }
    let name = unique_name("stream");
    let _cleanup = Remove::shm(&name);
    let mut a = Pipe::create(&name, 4096).unwrap();
    let writer = spawn(
        "one_mebibyte_of_random_bytes_round_trips_through_read_and_write",
        "writer",
        &[("PIPE", &name)],
    );
    let mut got = Vec::new();
    a.read_to_end(&mut got).unwrap(); // Ok(0) once the writer is gone and all was read
    writer.wait_success(LIMIT);
    assert_eq!(got.len(), LEN);
    assert!(got == data(), "the bytes differ");
    Pipe::unlink(&name).unwrap();
}

#[test]
fn reads_span_messages_and_recv_returns_the_rest_of_a_partly_read_one() {
    let name = unique_name("partial");
    let _cleanup = Remove::shm(&name);
    let mut a = Pipe::create(&name, 4096).unwrap();
    let mut b = Pipe::open(&name).unwrap();
    b.send(b"hello").unwrap();
    b.send(b"").unwrap();
    b.send(b"world").unwrap();
    let mut buf = [0; 7];
    assert_eq!(a.read(&mut buf).unwrap(), 7, "across the empty message too");
    assert_eq!(&buf, b"hellowo");
    assert_eq!(&*a.recv().unwrap(), b"rld");
    assert_eq!(a.try_recv().unwrap_err(), RecvError::Empty);
    Pipe::unlink(&name).unwrap();
}

#[test]
fn send_with_writes_in_place_and_a_panicking_fill_sends_nothing() {
    let name = unique_name("in-place");
    let _cleanup = Remove::shm(&name);
    let mut a = Pipe::create(&name, 4096).unwrap();
    let mut b = Pipe::open(&name).unwrap();
    a.send_with(5, |buf| {
        assert_eq!(buf.len(), 5);
        buf.copy_from_slice(b"12345");
    })
    .unwrap();
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        a.send_with(3, |_| panic!("fill failed")).unwrap();
    }));
    assert!(panicked.is_err());
    assert_eq!(&*b.recv().unwrap(), b"12345");
    assert_eq!(b.try_recv().unwrap_err(), RecvError::Empty, "the panicked send left nothing");
    a.send(b"after").unwrap();
    assert_eq!(&*b.recv().unwrap(), b"after");
    Pipe::unlink(&name).unwrap();
}

#[test]
fn each_end_is_claimed_once_across_processes() {
    if role().as_deref() == Some("second-b") {
        assert!(matches!(Pipe::open(&arg("PIPE")), Err(OpenError::Busy { .. })));
        return;
    }
    let name = unique_name("busy");
    let _cleanup = Remove::shm(&name);
    let a = Pipe::open_or_create(&name, 4096).unwrap(); // created: end A
    let b = Pipe::open_or_create(&name, 4096).unwrap(); // opened: end B
    assert!(format!("{a:?}").contains("end: A") && format!("{b:?}").contains("end: B"));
    assert!(matches!(Pipe::open(&name), Err(OpenError::Busy { .. })));
    spawn("each_end_is_claimed_once_across_processes", "second-b", &[("PIPE", &name)])
        .wait_success(LIMIT);
    drop(b);
    let mut b = Pipe::open(&name).unwrap();
    let mut a = a;
    b.send(b"again").unwrap();
    assert_eq!(&*a.recv().unwrap(), b"again");
    Pipe::unlink(&name).unwrap();
}

#[test]
fn a_one_way_pipe_carries_messages_from_b_to_a_only() {
    let name = unique_name("one-way");
    let _cleanup = Remove::shm(&name);
    let mut a = Pipe::create_one_way(&name, 4096).unwrap();
    let mut b = Pipe::open(&name).unwrap();
    assert!(a.can_recv() && !a.can_send() && b.can_send() && !b.can_recv());
    assert_eq!(a.send(b"no"), Err(SendError::ReceiveOnly));
    assert_eq!(b.recv().unwrap_err(), RecvError::SendOnly);
    assert_eq!(a.max_message(), 0);
    assert!(!b.poll(Duration::from_millis(10)));
    assert_eq!(b.read(&mut [0; 4]).unwrap_err().kind(), std::io::ErrorKind::Unsupported);
    assert_eq!(a.write(b"no").unwrap_err().kind(), std::io::ErrorKind::Unsupported);
    b.send(b"yes").unwrap();
    assert_eq!(&*a.recv().unwrap(), b"yes");
    Pipe::unlink(&name).unwrap();
}

#[test]
fn a_pipe_in_a_custom_directory_and_the_wrong_kind() {
    let dir = std::env::temp_dir();
    let opts = Options::new().dir(&dir);
    let name = unique_name("dir");
    let _cleanup = Remove(dir.join(&name));
    let mut a = Pipe::create_with(&name, 256, &opts).unwrap();
    let mut b = Pipe::open_with(&name, &opts).unwrap();
    b.send(b"there").unwrap();
    assert_eq!(&*a.recv().unwrap(), b"there");
    assert!(matches!(shmsync::Lock::open_with(&name, &opts), Err(OpenError::KindMismatch { .. })));
    Pipe::unlink_with(&name, &opts).unwrap();
}

#[test]
fn a_hostile_length_header_is_corrupted_not_trusted() {
    let name = unique_name("hostile");
    let _cleanup = Remove::shm(&name);
    let mut a = Pipe::create(&name, 4096).unwrap();
    let mut b = Pipe::open(&name).unwrap();
    b.send(&[1; 16]).unwrap();
    // A second mapping of the file plays the dishonest peer: it rewrites the header of
    // the message in the ring from B to A (the payload's first ring).
    let file = std::fs::OpenOptions::new().read(true).write(true).open(a.info().path()).unwrap();
    // SAFETY: a mapping of our own test file; the pipe's code reads it only through
    // its checks, and we write one aligned word.
    let mut map = unsafe { memmap2::MmapMut::map_mut(&file) }.unwrap();
    // The 128-byte segment header, the pipe's 896-byte control block, then that ring.
    let data_at = 128 + 896;
    // Keep the header's stamp (the high half: "this is the frame at position 0"), claim a
    // length far beyond the ring.
    let word = u64::from_ne_bytes(map[data_at..data_at + 8].try_into().unwrap());
    assert_eq!(word as u32, 16, "the header of the 16-byte message");
    let forged = (word & !0xFFFF_FFFF) | 0x7FFF_FFFF;
    map[data_at..data_at + 8].copy_from_slice(&forged.to_ne_bytes());
    assert_eq!(a.recv().unwrap_err(), RecvError::Corrupted);
    let mut buf = Vec::new();
    assert_eq!(a.recv_into(&mut buf), Err(RecvError::Corrupted));
    assert_eq!(a.read(&mut [0; 4]).unwrap_err().kind(), std::io::ErrorKind::InvalidData);
    Pipe::unlink(&name).unwrap();
}

/// The child roles of the re-attachment tests: open end B, do what `ACT` says, then idle
/// until killed.
fn play_b() -> bool {
    if role().as_deref() != Some("b") {
        return false;
    }
    let mut b = Pipe::open(&arg("PIPE")).unwrap();
    if arg("ACT") == "send" {
        b.send_timeout(b"from the old b", LIMIT).unwrap();
    }
    report("ready");
    std::thread::sleep(LIMIT);
    true
}

/// Finding 4 of the kill loops: end B's writer died after publishing a frame's header
/// and before storing `tail`, and end A consumed that frame, so the ring to A had
/// `head > tail`; opening end B again said `Corrupted` for good.
#[test]
fn end_b_reopens_after_its_writer_died_between_header_and_tail() {
    if play_b() {
        return;
    }
    let test = "end_b_reopens_after_its_writer_died_between_header_and_tail";
    let name = unique_name("unrecorded-tail");
    let _cleanup = Remove::shm(&name);
    let mut a = Pipe::create(&name, 4096).unwrap();
    let mut old_b = spawn(test, "b", &[("PIPE", &name), ("ACT", "send")]);
    old_b.expect("ready", LIMIT);
    assert_eq!(&*a.recv_timeout(LIMIT).unwrap(), b"from the old b");
    old_b.kill();
    // Undo the `tail` store of that frame through a second mapping: the ring to A starts
    // the payload (at 128), head at +0, tail at +128; the frame took 8 + 16 bytes.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(std::path::Path::new("/dev/shm").join(&name))
        .unwrap();
    // SAFETY: a second mapping; nobody writes the ring to A while B is dead.
    let mut map = unsafe { memmap2::MmapMut::map_mut(&file) }.unwrap();
    let word = |map: &memmap2::MmapMut, at: usize| {
        u64::from_le_bytes(map[128 + at..136 + at].try_into().unwrap())
    };
    let (head, tail) = (word(&map, 0), word(&map, 128));
    assert_eq!((head, tail), (24, 24));
    map[256..264].copy_from_slice(&0u64.to_le_bytes());

    let mut b = Pipe::open(&name).expect("end B re-opens");
    assert_eq!(word(&map, 128), 24, "the new writer settled tail past the consumed frame");
    b.send_timeout(b"from the new b", LIMIT).unwrap();
    assert_eq!(&*a.recv_timeout(LIMIT).unwrap(), b"from the new b", "nothing replayed");
    a.send_timeout(b"to the new b", LIMIT).unwrap();
    assert_eq!(&*b.recv_timeout(LIMIT).unwrap(), b"to the new b");
    drop((a, b));
    Pipe::unlink(&name).unwrap();
}

/// Finding 5 of the kill loops: once the creator (end A) died, `create` said
/// `AlreadyExists` and `open` handed out end B, so a server could not be restarted
/// without unlinking the pipe.
#[test]
fn end_a_is_taken_up_again_after_its_holder_was_killed() {
    if role().as_deref() == Some("a") {
        let mut a = Pipe::create(&arg("PIPE"), 4096).unwrap();
        a.send_timeout(b"from the old a", LIMIT).unwrap();
        report("ready");
        std::thread::sleep(LIMIT);
        return;
    }
    let name = unique_name("reclaim-a");
    let _cleanup = Remove::shm(&name);
    let mut old_a =
        spawn("end_a_is_taken_up_again_after_its_holder_was_killed", "a", &[("PIPE", &name)]);
    old_a.expect("ready", LIMIT);
    let mut b = Pipe::open(&name).unwrap();
    assert_eq!((b.end(), b.generation(), b.peer_generation()), (shmsync::End::B, 1, 1));
    assert!(matches!(Pipe::open_end(&name, shmsync::End::A), Err(OpenError::Busy { .. })));
    old_a.kill();
    assert!(matches!(Pipe::create(&name, 4096), Err(OpenError::AlreadyExists { .. })));
    let mut a = Pipe::open_end(&name, shmsync::End::A).expect("end A re-claimed");
    assert_eq!((a.end(), a.generation(), b.peer_generation()), (shmsync::End::A, 2, 2));
    assert_eq!(&*b.recv_timeout(LIMIT).unwrap(), b"from the old a", "nothing lost");
    a.send_timeout(b"from the new a", LIMIT).unwrap();
    assert_eq!(&*b.recv_timeout(LIMIT).unwrap(), b"from the new a");
    b.send_timeout(b"to the new a", LIMIT).unwrap();
    assert_eq!(&*a.recv_timeout(LIMIT).unwrap(), b"to the new a");
    drop((a, b));
    Pipe::unlink(&name).unwrap();
}

/// Finding 6 of the kill loops: a restarted client received the replies meant for its
/// dead predecessor, with no way to tell them apart. `discard_stale` drops exactly those;
/// by default they are still delivered.
#[test]
fn a_restarted_end_can_drop_what_was_sent_to_its_predecessor() {
    if play_b() {
        return;
    }
    let test = "a_restarted_end_can_drop_what_was_sent_to_its_predecessor";
    let name = unique_name("stale");
    let _cleanup = Remove::shm(&name);
    let mut a = Pipe::create(&name, 4096).unwrap();
    let mut old_b = spawn(test, "b", &[("PIPE", &name), ("ACT", "idle")]);
    old_b.expect("ready", LIMIT);
    assert_eq!(a.peer_generation(), 1);
    for i in 0..5u8 {
        a.send_timeout(&[b'r', i], LIMIT).unwrap(); // replies the old client never reads
    }
    old_b.kill();

    // By default, nothing is lost: the new holder of B gets them.
    let mut b = Pipe::open(&name).unwrap();
    assert_eq!(&*b.recv_timeout(LIMIT).unwrap(), &[b'r', 0]);
    drop(b);
    let mut b = Pipe::open(&name).unwrap();
    assert_eq!((b.generation(), a.peer_generation()), (3, 3));
    a.send_timeout(b"fresh", LIMIT).unwrap(); // sent after the new B attached
    assert_eq!(b.discard_stale(), Ok(4), "the four replies left for the dead clients");
    assert_eq!(b.discard_stale(), Ok(0), "idempotent");
    assert_eq!(&*b.recv_timeout(LIMIT).unwrap(), b"fresh");
    assert_eq!(b.try_recv().unwrap_err(), RecvError::Empty);
    drop((a, b));
    Pipe::unlink(&name).unwrap();
}

#[test]
fn wait_connected_times_out_without_a_peer_and_returns_once_one_comes() {
    if role().as_deref() == Some("b") {
        let b = Pipe::open(&arg("PIPE")).unwrap();
        assert!(b.is_connected());
        report("attached");
        common::wait_for_parent(LIMIT);
        return;
    }
    let name = unique_name("pipe-connected");
    let _cleanup = Remove::shm(&name);
    let a = Pipe::create(&name, 4096).unwrap();
    assert!(!a.is_connected());
    let start = Instant::now();
    assert!(!a.wait_connected(Duration::from_millis(50)), "nobody came");
    assert!(start.elapsed() >= Duration::from_millis(50));
    let mut b = spawn(
        "wait_connected_times_out_without_a_peer_and_returns_once_one_comes",
        "b",
        &[("PIPE", &name)],
    );
    assert!(a.wait_connected_deadline(Instant::now() + LIMIT), "end B came");
    b.expect("attached", LIMIT);
    assert!(a.is_connected());
    b.release();
    b.wait_success(LIMIT);
    assert!(!a.is_connected() && a.is_abandoned());
    drop(a);
    Pipe::unlink(&name).unwrap();
}
