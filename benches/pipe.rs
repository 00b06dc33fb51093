//! Pipes against the kernel's byte channels, side by side in each group.
//!
//! - `pipe_rtt_blocking`: an 8-byte message to a peer process and its 8-byte echo back,
//!   every wait a sleep: shmsync with spinning off (`Connection::set_spin(false)`) vs an
//!   OS pipe pair and a Unix socketpair.
//! - `pipe_rtt_spinning`: the same round trip with shmsync's default spin-then-sleep, next
//!   to the blocking pipe pair, a pipe pair read by busy polling (`O_NONBLOCK`), and the
//!   hardware's floor: two processes bouncing a counter through two cache lines
//!   (`cache_line_ping_pong`, no queue at all).
//! - `pipe_bulk_64k`: a peer sends 64 KiB messages, this process copies each out: shmsync
//!   (`send` copies in, `recv_into` copies out) vs an OS pipe of the default size and of
//!   1 MiB (`F_SETPIPE_SZ`) and a Unix socketpair, read 64 KiB at a time; and one thread
//!   copying 64 KiB at a time from a 1 MiB buffer (`memcpy_one_thread`).
//! - `pipe_zero_copy`: the peer fills each message in place (`send_with`), this process
//!   reads it in place (`recv`, checking its first and last byte), at 64 B, 4 KiB, 64 KiB
//!   and 1 MiB.
//!
//! Run: `cargo bench --bench pipe`. Round trips are per round trip; bulk and zero-copy
//! figures are bytes per second.
#![allow(clippy::disallowed_types)] // the benchmark's own layouts hold std atomics

mod common;

use std::hint::black_box;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use std::sync::atomic::Ordering;

use common::{Peer, Role, Side, env, name, run_role_if_child};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use shmsync::{Pipe, Shared};

#[path = "../examples/support/fd.rs"]
mod fd;
#[path = "../examples/support/ping_pong.rs"]
mod ping_pong;
use fd::{read_exact, write_all};
use ping_pong::PingPong;

const BULK: usize = 64 * 1024;

/// A pipe whose descriptors a child inherits (no CLOEXEC): (read end, write end).
fn inheritable_pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), 0) }, 0);
    // SAFETY: fresh descriptors, owned from here on.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// A Unix stream socketpair a child inherits.
fn inheritable_socketpair() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: socketpair writes two descriptors into the array.
    assert_eq!(
        unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, fds.as_mut_ptr()) },
        0
    );
    // SAFETY: fresh descriptors, owned from here on.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

fn set_nonblocking(fd: RawFd) {
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        assert_eq!(libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK), 0);
    }
}

fn fd_env(key: &str) -> RawFd {
    env(key).parse().unwrap()
}

// ---- peers -------------------------------------------------------------------------

/// Echoes 8-byte messages on end B of the pipe `PIPE` (spinning as `SPIN` says).
fn shm_echo() -> Side {
    let mut b = Pipe::open(&env("PIPE")).unwrap();
    b.set_spin(env("SPIN") == "1");
    Box::new(move |iters, ready| {
        ready();
        let mut word = [0; 8];
        for _ in 0..iters {
            word.copy_from_slice(&b.recv().unwrap());
            b.send(&word).unwrap();
        }
    })
}

/// Echoes 8-byte messages from descriptor `IN` to `OUT` (a socket may be both).
fn os_echo() -> Side {
    let (fd_in, fd_out) = (fd_env("IN"), fd_env("OUT"));
    Box::new(move |iters, ready| {
        ready();
        let mut word = [0; 8];
        for _ in 0..iters {
            read_exact(fd_in, &mut word);
            write_all(fd_out, &word);
        }
    })
}

/// Answers each `ping` with the same `pong` in the segment `PINGPONG`.
fn ping_pong_peer() -> Side {
    let pp = Shared::<PingPong>::open(&env("PINGPONG")).unwrap();
    Box::new(move |iters, ready| {
        let base = pp.pong.load(Ordering::Relaxed);
        ready();
        for i in base + 1..=base + iters {
            while pp.ping.load(Ordering::Acquire) != i {
                std::hint::spin_loop();
            }
            pp.pong.store(i, Ordering::Release);
        }
    })
}

/// Sends 64 KiB messages on end B of the pipe `PIPE`.
fn shm_bulk_sender() -> Side {
    let mut b = Pipe::open(&env("PIPE")).unwrap();
    let chunk = vec![0x5A; BULK];
    Box::new(move |iters, ready| {
        ready();
        for _ in 0..iters {
            b.send(&chunk).unwrap();
        }
    })
}

/// Writes 64 KiB chunks to descriptor `OUT`.
fn os_bulk_sender() -> Side {
    let fd = fd_env("OUT");
    let chunk = vec![0x5A; BULK];
    Box::new(move |iters, ready| {
        ready();
        for _ in 0..iters {
            write_all(fd, &chunk);
        }
    })
}

/// Fills messages of `SIZE` bytes in place on end B of the pipe `PIPE`.
fn shm_zero_copy_sender() -> Side {
    let mut b = Pipe::open(&env("PIPE")).unwrap();
    let size: usize = env("SIZE").parse().unwrap();
    Box::new(move |iters, ready| {
        ready();
        for i in 0..iters {
            b.send_with(size, |buf| buf.fill(i as u8)).unwrap();
        }
    })
}

// ---- groups ------------------------------------------------------------------------

/// One round trip of 8 bytes through a pipe with end A here, per iteration.
fn shm_round_trips(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    id: &str,
    spin: bool,
) {
    let pipe = name("rtt");
    let mut a = Pipe::create(&pipe, 4096).unwrap();
    a.set_spin(spin);
    let spin_env = if spin { "1" } else { "0" };
    let mut peer = Peer::start("shm-echo", &[("PIPE", pipe.clone()), ("SPIN", spin_env.into())]);
    group.bench_function(id, |b| {
        b.iter_custom(|iters| {
            peer.batch(iters, |n| {
                let mut word = [0u8; 8];
                for i in 0..n {
                    a.send(&i.to_ne_bytes()).unwrap();
                    word.copy_from_slice(&a.recv().unwrap());
                    assert_eq!(u64::from_ne_bytes(word), i);
                }
            })
        })
    });
    drop(peer);
    drop(a);
    Pipe::unlink(&pipe).unwrap();
}

/// One round trip of 8 bytes through kernel descriptors, per iteration: we write `out`
/// and read `inp`; the peer gets `peer_in` and `peer_out`.
fn os_round_trips(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    id: &str,
    (out, inp): (RawFd, RawFd),
    (peer_in, peer_out): (RawFd, RawFd),
) {
    let mut peer =
        Peer::start("os-echo", &[("IN", peer_in.to_string()), ("OUT", peer_out.to_string())]);
    group.bench_function(id, |b| {
        b.iter_custom(|iters| {
            peer.batch(iters, |n| {
                let mut word = [0u8; 8];
                for i in 0..n {
                    write_all(out, &i.to_ne_bytes());
                    read_exact(inp, &mut word);
                    assert_eq!(u64::from_ne_bytes(word), i);
                }
            })
        })
    });
}

/// Round trips through a pair of OS pipes, one each way; with `busy_poll` both readers
/// spin on non-blocking reads instead of sleeping.
fn pipe_pair_round_trips(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    id: &str,
    busy_poll: bool,
) {
    let ((to_peer_r, to_peer_w), (from_peer_r, from_peer_w)) =
        (inheritable_pipe(), inheritable_pipe());
    if busy_poll {
        set_nonblocking(to_peer_r.as_raw_fd());
        set_nonblocking(from_peer_r.as_raw_fd());
    }
    os_round_trips(
        group,
        id,
        (to_peer_w.as_raw_fd(), from_peer_r.as_raw_fd()),
        (to_peer_r.as_raw_fd(), from_peer_w.as_raw_fd()),
    );
}

fn round_trip_blocking(c: &mut Criterion) {
    let mut group = c.benchmark_group("pipe_rtt_blocking");
    group.measurement_time(Duration::from_secs(4));
    shm_round_trips(&mut group, "shmsync_no_spin", false);
    pipe_pair_round_trips(&mut group, "pipe_pair", false);
    {
        let (mine, theirs) = inheritable_socketpair();
        let (m, t) = (mine.as_raw_fd(), theirs.as_raw_fd());
        os_round_trips(&mut group, "unix_socketpair", (m, m), (t, t));
    }
    group.finish();
}

fn round_trip_spinning(c: &mut Criterion) {
    let mut group = c.benchmark_group("pipe_rtt_spinning");
    group.measurement_time(Duration::from_secs(4));
    shm_round_trips(&mut group, "shmsync_spin", true);
    pipe_pair_round_trips(&mut group, "pipe_pair", false);
    pipe_pair_round_trips(&mut group, "pipe_pair_busy_poll", true);
    {
        let seg = name("pingpong");
        let pp = Shared::<PingPong>::create(&seg, |_| {}).unwrap();
        let mut peer = Peer::start("ping-pong", &[("PINGPONG", seg.clone())]);
        group.bench_function("cache_line_ping_pong", |b| {
            b.iter_custom(|iters| {
                let base = pp.pong.load(Ordering::Relaxed);
                peer.batch(iters, |n| {
                    for i in base + 1..=base + n {
                        pp.ping.store(i, Ordering::Release);
                        while pp.pong.load(Ordering::Acquire) != i {
                            std::hint::spin_loop();
                        }
                    }
                })
            })
        });
        drop(peer);
        drop(pp);
        Shared::<PingPong>::unlink(&seg).unwrap();
    }
    group.finish();
}

/// Reads `iters` chunks of 64 KiB from `fd`, written by `peer`.
fn os_bulk(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    id: &str,
    fd: RawFd,
    peer_fd: RawFd,
) {
    let mut peer = Peer::start("os-bulk", &[("OUT", peer_fd.to_string())]);
    let mut buf = vec![0u8; BULK];
    group.bench_function(id, |b| {
        b.iter_custom(|iters| {
            peer.batch(iters, |n| {
                for _ in 0..n {
                    read_exact(fd, &mut buf);
                    assert_eq!(buf[BULK - 1], 0x5A);
                }
            })
        })
    });
}

fn bulk(c: &mut Criterion) {
    let mut group = c.benchmark_group("pipe_bulk_64k");
    group.throughput(Throughput::Bytes(BULK as u64)).measurement_time(Duration::from_secs(4));

    // A 1 MiB ring each way, as the larger OS pipe below.
    let pipe = name("bulk");
    let mut a = Pipe::create(&pipe, 512 * 1024).unwrap();
    assert_eq!(a.capacity(), 1 << 20);
    let mut peer = Peer::start("shm-bulk", &[("PIPE", pipe.clone())]);
    let mut buf = Vec::with_capacity(BULK);
    group.bench_function("shmsync_copy_in_copy_out", |b| {
        b.iter_custom(|iters| {
            peer.batch(iters, |n| {
                for _ in 0..n {
                    assert_eq!(a.recv_into(&mut buf).unwrap(), BULK);
                    assert_eq!(buf[BULK - 1], 0x5A);
                }
            })
        })
    });
    drop(peer);
    drop(a);
    Pipe::unlink(&pipe).unwrap();

    {
        let (r, w) = inheritable_pipe();
        os_bulk(&mut group, "pipe_default_size", r.as_raw_fd(), w.as_raw_fd());
    }
    {
        let (r, w) = inheritable_pipe();
        // SAFETY: fcntl on a pipe we own.
        let size = unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20) };
        assert!(size >= 1 << 20, "F_SETPIPE_SZ refused: {size}");
        os_bulk(&mut group, "pipe_1mib", r.as_raw_fd(), w.as_raw_fd());
    }
    {
        let (mine, theirs) = inheritable_socketpair();
        os_bulk(&mut group, "unix_socketpair", mine.as_raw_fd(), theirs.as_raw_fd());
    }

    let source = vec![0x5Au8; 1 << 20];
    let mut dest = vec![0u8; BULK];
    let mut at = 0;
    group.bench_function("memcpy_one_thread", |b| {
        b.iter(|| {
            dest.copy_from_slice(&source[at..at + BULK]);
            at = (at + BULK) % source.len();
            black_box(&dest);
        })
    });
    group.finish();
}

fn zero_copy(c: &mut Criterion) {
    let mut group = c.benchmark_group("pipe_zero_copy");
    group.measurement_time(Duration::from_secs(3));
    for size in [64usize, 4096, 64 * 1024, 1 << 20] {
        group.throughput(Throughput::Bytes(size as u64));
        let pipe = name("zc");
        let mut a = Pipe::create(&pipe, (2 * size).max(4096)).unwrap();
        assert!(a.max_message() >= size);
        let mut peer =
            Peer::start("shm-zero-copy", &[("PIPE", pipe.clone()), ("SIZE", size.to_string())]);
        group.bench_with_input(BenchmarkId::new("send_with_recv", size), &size, |b, &size| {
            b.iter_custom(|iters| {
                peer.batch(iters, |n| {
                    for i in 0..n {
                        let msg = a.recv().unwrap();
                        assert_eq!(msg.len(), size);
                        assert!(msg[0] == i as u8 && msg[size - 1] == i as u8);
                        black_box(&*msg);
                    }
                })
            })
        });
        drop(peer);
        drop(a);
        Pipe::unlink(&pipe).unwrap();
    }
    group.finish();
}

criterion_group!(benches, round_trip_blocking, round_trip_spinning, bulk, zero_copy);

const ROLES: &[(&str, Role)] = &[
    ("shm-echo", shm_echo),
    ("os-echo", os_echo),
    ("shm-bulk", shm_bulk_sender),
    ("os-bulk", os_bulk_sender),
    ("shm-zero-copy", shm_zero_copy_sender),
    ("ping-pong", ping_pong_peer),
];

fn main() {
    run_role_if_child(ROLES);
    benches();
    criterion::Criterion::default().configure_from_args().final_summary();
}
