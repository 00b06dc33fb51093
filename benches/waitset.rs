//! `WaitSet` and the async calls against their baselines, side by side in one run.
//!
//! - `waitset_wake`: wake latency, from the peer's push (or write) to this side running
//!   again, with this side asleep (the peer lets it fall asleep first): one queue's
//!   blocking `pop` (`spsc_pop`), a `WaitSet` over 4 SPSC queues with the peer pushing to
//!   each in turn (`waitset_4_queues`), and `epoll_wait` over 4 eventfds with the peer
//!   writing each in turn (`epoll_4_eventfds`).
//! - `waitset_stream`, per value: items always ready (a full queue in this process) taken
//!   with `pop` (`ready_pop`) or with `WaitSet::wait` then `try_pop`, one value per wait
//!   (`ready_wait_then_try_pop`, the set's worst case); then a producer process pushing
//!   as fast as it can, taken with `pop` (`peer_pop`), one `wait` + `try_pop` per value
//!   (`peer_wait_then_try_pop`), or one `wait` then `try_iter` to drain
//!   (`peer_wait_then_drain`, the pattern the docs recommend).
//! - `async_round_trip`: 8-byte round trips between this process and a peer, both on a
//!   current-thread tokio runtime: `push_async`/`pop_async` through two SPSC queues
//!   (`shmsync_pop_async`) against a tokio `UnixStream` (`tokio_unix_stream`). Both
//!   peers answer at once, so both sides mostly spin (shmsync) or poll (tokio).
//! - `async_wake`: the sleeping case, measured as `waitset_wake`: a task parked in
//!   `pop_async` woken by the peer's push, against one parked in a tokio `UnixStream`
//!   read woken by the peer's write.
//!
//! Run: `cargo bench --bench waitset`.
#![allow(clippy::disallowed_types)] // the benchmark's own layouts hold std atomics

mod common;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use common::{Peer, Role, Side, env, name, peer_control, run_role_if_child, wake_latency, waker};
use criterion::{Criterion, Throughput, criterion_group};
use shmsync::{WaitSet, spsc};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const QUEUES: usize = 4;

fn queue_names(tag: &str) -> Vec<String> {
    (0..QUEUES).map(|i| name(&format!("{tag}-{i}"))).collect()
}

fn names_env(names: &[String]) -> Vec<(&'static str, String)> {
    ["Q0", "Q1", "Q2", "Q3"].into_iter().zip(names.iter().cloned()).collect()
}

fn unlink_all(names: &[String]) {
    for n in names {
        let _ = spsc::Consumer::<u64>::unlink(n);
    }
}

/// Pushes `k` to queue `k % 4`.
fn four_queue_waker() -> Side {
    let mut txs: Vec<_> = ["Q0", "Q1", "Q2", "Q3"]
        .iter()
        .map(|k| spsc::Producer::<u64>::open(&env(k)).unwrap())
        .collect();
    let control = peer_control();
    Box::new(move |iters, ready| {
        waker(iters, ready, &control, &mut |k| txs[k as usize % QUEUES].push(k).unwrap())
    })
}

/// Writes `k` to eventfd `k % 4`.
fn eventfd_waker() -> Side {
    let fds: Vec<RawFd> =
        ["E0", "E1", "E2", "E3"].iter().map(|k| env(k).parse().unwrap()).collect();
    let control = peer_control();
    Box::new(move |iters, ready| {
        waker(iters, ready, &control, &mut |k| {
            let fd = fds[k as usize % QUEUES];
            // SAFETY: an 8-byte write from a live u64 to an inherited eventfd.
            let n = unsafe { libc::write(fd, (&k as *const u64).cast(), 8) };
            assert_eq!(n, 8);
        })
    })
}

/// An eventfd a child inherits (no CLOEXEC).
fn inheritable_eventfd() -> OwnedFd {
    // SAFETY: eventfd returns a fresh descriptor or -1.
    let fd = unsafe { libc::eventfd(0, 0) };
    assert!(fd >= 0);
    // SAFETY: fresh, owned from here on.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn wake(c: &mut Criterion) {
    let mut group = c.benchmark_group("waitset_wake");
    group.measurement_time(Duration::from_secs(4));

    // One queue's blocking pop: the peer pushes to queue 0 only.
    let names = queue_names("wake-one");
    let mut rx = spsc::Consumer::<u64>::create(&names[0], 64).unwrap();
    let others: Vec<_> =
        names[1..].iter().map(|n| spsc::Consumer::<u64>::create(n, 64).unwrap()).collect();
    let mut peer = Peer::start("pop-waker-one", &names_env(&names));
    group.bench_function("spsc_pop", |b| {
        b.iter_custom(|iters| {
            wake_latency(&mut peer, iters, &mut |k| assert_eq!(rx.pop().unwrap(), k))
        })
    });
    drop((peer, rx, others));
    unlink_all(&names);

    let names = queue_names("wake-set");
    let mut rxs: Vec<_> =
        names.iter().map(|n| spsc::Consumer::<u64>::create(n, 64).unwrap()).collect();
    let mut set = WaitSet::new();
    for rx in &rxs {
        set.add_pop(rx).unwrap();
    }
    let mut peer = Peer::start("pop-waker-four", &names_env(&names));
    group.bench_function("waitset_4_queues", |b| {
        b.iter_custom(|iters| {
            wake_latency(&mut peer, iters, &mut |k| {
                let key = set.wait().unwrap()[0];
                assert_eq!(rxs[key.index()].try_pop().unwrap(), k);
            })
        })
    });
    drop((peer, set, rxs));
    unlink_all(&names);

    let efds: Vec<OwnedFd> = (0..QUEUES).map(|_| inheritable_eventfd()).collect();
    // SAFETY: epoll_create1 returns a fresh descriptor or -1.
    let epoll = unsafe { OwnedFd::from_raw_fd(libc::epoll_create1(libc::EPOLL_CLOEXEC)) };
    for (i, fd) in efds.iter().enumerate() {
        let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: i as u64 };
        // SAFETY: registering a live eventfd with a live epoll instance.
        let r = unsafe {
            libc::epoll_ctl(epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd.as_raw_fd(), &mut ev)
        };
        assert_eq!(r, 0);
    }
    let env: Vec<(&str, String)> = ["E0", "E1", "E2", "E3"]
        .into_iter()
        .zip(efds.iter().map(|f| f.as_raw_fd().to_string()))
        .collect();
    let mut peer = Peer::start("eventfd-waker", &env);
    group.bench_function("epoll_4_eventfds", |b| {
        b.iter_custom(|iters| {
            wake_latency(&mut peer, iters, &mut |k| {
                let mut ev = libc::epoll_event { events: 0, u64: 0 };
                // SAFETY: one event into a live struct; -1: no timeout.
                let n = unsafe { libc::epoll_wait(epoll.as_raw_fd(), &mut ev, 1, -1) };
                assert_eq!(n, 1);
                let mut v = 0u64;
                let fd = efds[ev.u64 as usize].as_raw_fd();
                // SAFETY: an 8-byte read into a live u64 from a live eventfd.
                assert_eq!(unsafe { libc::read(fd, (&mut v as *mut u64).cast(), 8) }, 8);
                assert_eq!(v, k);
            })
        })
    });
    drop(peer);
    group.finish();
}

/// Pushes in chunks of up to 256, far faster than one value at a time: the consumer's
/// queue stays full, so every look finds values ready.
fn chunk_streamer() -> Side {
    let mut tx = spsc::Producer::<u64>::open(&env("Q0")).unwrap();
    Box::new(move |iters, ready| {
        ready();
        let mut next = 0;
        while next < iters {
            // As many as fit, up to 256.
            let want = ((iters - next).min(256) as usize).min(tx.capacity() - tx.len()).max(1);
            match tx.write_chunk(want) {
                Ok(mut chunk) => {
                    let n = chunk.len() as u64;
                    let (a, b) = chunk.as_mut_slices();
                    for (k, slot) in a.iter_mut().chain(b).enumerate() {
                        *slot = next + k as u64;
                    }
                    chunk.commit_all();
                    next += n;
                }
                Err(shmsync::ChunkError::TooFewSlots) => std::hint::spin_loop(),
                Err(e) => panic!("{e}"),
            }
        }
    })
}

fn streamer() -> Side {
    let mut tx = spsc::Producer::<u64>::open(&env("Q0")).unwrap();
    Box::new(move |iters, ready| {
        ready();
        for i in 0..iters {
            tx.push(i).unwrap();
        }
    })
}

fn stream(c: &mut Criterion) {
    let mut group = c.benchmark_group("waitset_stream");
    group.measurement_time(Duration::from_secs(4));
    group.throughput(Throughput::Elements(1));

    // Items always ready, in this process: a full queue, emptied one value at a time.
    // What a wait costs on its own, with no cache line crossing cores.
    let q = name("stream-ready");
    let mut tx = spsc::Producer::<u64>::create(&q, PREFILLED).unwrap();
    let mut rx = spsc::Consumer::<u64>::open(&q).unwrap();
    let mut set = WaitSet::new();
    set.add_pop(&rx).unwrap();
    let mut consume = |iters: u64, how: How| {
        let mut total = Duration::ZERO;
        let mut left = iters;
        while left > 0 {
            let n = left.min(PREFILLED as u64);
            for i in 0..n {
                tx.try_push(i).unwrap();
            }
            let start = std::time::Instant::now();
            take(&mut set, &mut rx, n, how);
            total += start.elapsed();
            left -= n;
        }
        total
    };
    group.bench_function("ready_pop", |b| b.iter_custom(|iters| consume(iters, How::Pop)));
    group.bench_function("ready_wait_then_drain", |b| {
        b.iter_custom(|iters| consume(iters, How::WaitThenDrain))
    });
    group.bench_function("ready_wait_then_try_pop", |b| {
        b.iter_custom(|iters| consume(iters, How::WaitPerValue))
    });
    drop((set, tx, rx));
    spsc::Consumer::<u64>::unlink(&q).unwrap();

    // A producer process keeping the queue full (pushing in chunks): values always
    // ready, the consumer's pace alone decides.
    let q = name("stream-full");
    let mut rx = spsc::Consumer::<u64>::create(&q, 4096).unwrap();
    let mut peer = Peer::start("chunk-streamer", &[("Q0", q.clone())]);
    let mut set = WaitSet::new();
    set.add_pop(&rx).unwrap();
    let mut batch = |iters: u64, how: How| peer.batch(iters, |n| take(&mut set, &mut rx, n, how));
    group.bench_function("full_peer_pop", |b| b.iter_custom(|iters| batch(iters, How::Pop)));
    group.bench_function("full_peer_wait_then_drain", |b| {
        b.iter_custom(|iters| batch(iters, How::WaitThenDrain))
    });
    group.bench_function("full_peer_wait_then_try_pop", |b| {
        b.iter_custom(|iters| batch(iters, How::WaitPerValue))
    });
    drop((set, peer, rx));
    spsc::Consumer::<u64>::unlink(&q).unwrap();

    // A producer process pushing one value at a time, as fast as it can.
    let q = name("stream");
    let mut rx = spsc::Consumer::<u64>::create(&q, 4096).unwrap();
    let mut peer = Peer::start("streamer", &[("Q0", q.clone())]);
    group.bench_function("peer_pop", |b| {
        b.iter_custom(|iters| {
            peer.batch(iters, |n| {
                for i in 0..n {
                    assert_eq!(rx.pop().unwrap(), i);
                }
            })
        })
    });
    let mut set = WaitSet::new();
    set.add_pop(&rx).unwrap();
    group.bench_function("peer_wait_then_drain", |b| {
        b.iter_custom(|iters| peer.batch(iters, |n| take(&mut set, &mut rx, n, How::WaitThenDrain)))
    });
    group.bench_function("peer_wait_then_try_pop", |b| {
        b.iter_custom(|iters| peer.batch(iters, |n| take(&mut set, &mut rx, n, How::WaitPerValue)))
    });
    drop((peer, set, rx));
    spsc::Consumer::<u64>::unlink(&q).unwrap();
    group.finish();
}

/// How a streaming consumer takes its values.
#[derive(Clone, Copy)]
enum How {
    /// `pop`, no set.
    Pop,
    /// One `wait`, then `try_iter` over whatever is there: how a set is meant to stream.
    WaitThenDrain,
    /// One `wait` and one `try_pop` per value: the set's worst case.
    WaitPerValue,
}

/// Takes the values `0..n` from `rx` as `how` says, checking each.
fn take(set: &mut WaitSet, rx: &mut spsc::Consumer<u64>, n: u64, how: How) {
    match how {
        How::Pop => (0..n).for_each(|i| assert_eq!(rx.pop(), Ok(i))),
        How::WaitPerValue => (0..n).for_each(|i| {
            set.wait().unwrap();
            assert_eq!(rx.try_pop(), Ok(i));
        }),
        How::WaitThenDrain => {
            let mut i = 0;
            while i < n {
                set.wait().unwrap();
                for v in rx.try_iter().take((n - i) as usize) {
                    assert_eq!(v, i);
                    i += 1;
                }
            }
        }
    }
}

/// Values a prefilled queue holds.
const PREFILLED: usize = 4096;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// Echoes values from queue `Q0` to queue `Q1`, awaiting both ways.
fn async_queue_echo() -> Side {
    let mut rx = spsc::Consumer::<u64>::open(&env("Q0")).unwrap();
    let mut tx = spsc::Producer::<u64>::open(&env("Q1")).unwrap();
    let rt = runtime();
    Box::new(move |iters, ready| {
        ready();
        rt.block_on(async {
            for _ in 0..iters {
                let v = rx.pop_async().await.unwrap();
                tx.push_async(v).await.unwrap();
            }
        });
    })
}

/// Echoes 8-byte messages on the inherited Unix stream `FD`.
fn async_unix_echo() -> Side {
    let fd: RawFd = env("FD").parse().unwrap();
    let rt = runtime();
    // SAFETY: the inherited descriptor, owned by this process from here on.
    let std_stream = unsafe { std::os::unix::net::UnixStream::from_raw_fd(fd) };
    std_stream.set_nonblocking(true).unwrap();
    let mut stream = rt.block_on(async { tokio::net::UnixStream::from_std(std_stream) }).unwrap();
    Box::new(move |iters, ready| {
        ready();
        rt.block_on(async {
            let mut buf = [0u8; 8];
            for _ in 0..iters {
                stream.read_exact(&mut buf).await.unwrap();
                stream.write_all(&buf).await.unwrap();
            }
        });
    })
}

/// A Unix stream socketpair: this end as a tokio stream on `rt`, the other end inherited
/// by a peer started in `role` (as `FD`).
fn tokio_stream_to_peer(
    rt: &tokio::runtime::Runtime,
    role: &str,
) -> (tokio::net::UnixStream, Peer) {
    let mut fds = [0; 2];
    // SAFETY: socketpair writes two descriptors into the array.
    let r = unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, fds.as_mut_ptr()) };
    assert_eq!(r, 0);
    // SAFETY: fresh descriptors, owned from here on.
    let (mine, theirs) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let peer = Peer::start(role, &[("FD", theirs.as_raw_fd().to_string())]);
    drop(theirs);
    let std_stream = std::os::unix::net::UnixStream::from(mine);
    std_stream.set_nonblocking(true).unwrap();
    let stream = rt.block_on(async { tokio::net::UnixStream::from_std(std_stream) }).unwrap();
    (stream, peer)
}

fn async_round_trip(c: &mut Criterion) {
    let mut group = c.benchmark_group("async_round_trip");
    group.measurement_time(Duration::from_secs(4));
    let rt = runtime();

    let names = queue_names("async-rtt");
    let mut tx = spsc::Producer::<u64>::create(&names[0], 64).unwrap();
    let mut rx = spsc::Consumer::<u64>::create(&names[1], 64).unwrap();
    let mut peer = Peer::start("async-queue-echo", &names_env(&names[..2]));
    group.bench_function("shmsync_pop_async", |b| {
        b.iter_custom(|iters| {
            peer.batch(iters, |n| {
                rt.block_on(async {
                    for i in 0..n {
                        tx.push_async(i).await.unwrap();
                        assert_eq!(rx.pop_async().await.unwrap(), i);
                    }
                })
            })
        })
    });
    drop((peer, tx, rx));
    unlink_all(&names[..2]);

    let (mut stream, mut peer) = tokio_stream_to_peer(&rt, "async-unix-echo");
    group.bench_function("tokio_unix_stream", |b| {
        b.iter_custom(|iters| {
            peer.batch(iters, |n| {
                rt.block_on(async {
                    let mut buf = [0u8; 8];
                    for i in 0..n {
                        stream.write_all(&i.to_le_bytes()).await.unwrap();
                        stream.read_exact(&mut buf).await.unwrap();
                        assert_eq!(u64::from_le_bytes(buf), i);
                    }
                })
            })
        })
    });
    drop(peer);
    group.finish();
}

/// Writes 8 bytes (`k`) to the inherited Unix stream `FD` for each wake-up.
fn socket_waker() -> Side {
    let fd: RawFd = env("FD").parse().unwrap();
    let control = peer_control();
    Box::new(move |iters, ready| {
        waker(iters, ready, &control, &mut |k| {
            // SAFETY: an 8-byte write from a live u64 to the inherited socket.
            let n = unsafe { libc::write(fd, (&k as *const u64).cast(), 8) };
            assert_eq!(n, 8);
        })
    })
}

/// The sleeping case of the async calls: the task is parked (the peer lets it fall
/// asleep first), then woken by a push (shmsync: the waiter thread wakes, then wakes the
/// runtime) or by a socket write (tokio: its epoll wakes the runtime directly).
fn async_wake(c: &mut Criterion) {
    let mut group = c.benchmark_group("async_wake");
    group.measurement_time(Duration::from_secs(4));
    let rt = runtime();

    let names = queue_names("async-wake");
    let mut rx = spsc::Consumer::<u64>::create(&names[0], 64).unwrap();
    let mut peer = Peer::start("pop-waker-one", &names_env(&names[..1]));
    group.bench_function("shmsync_pop_async", |b| {
        b.iter_custom(|iters| {
            wake_latency(&mut peer, iters, &mut |k| {
                assert_eq!(rt.block_on(rx.pop_async()).unwrap(), k);
            })
        })
    });
    drop((peer, rx));
    unlink_all(&names[..1]);

    let (mut stream, mut peer) = tokio_stream_to_peer(&rt, "socket-waker");
    group.bench_function("tokio_unix_stream", |b| {
        b.iter_custom(|iters| {
            wake_latency(&mut peer, iters, &mut |k| {
                let mut buf = [0u8; 8];
                rt.block_on(stream.read_exact(&mut buf)).unwrap();
                assert_eq!(u64::from_ne_bytes(buf), k);
            })
        })
    });
    drop(peer);
    group.finish();
}

criterion_group!(benches, wake, stream, async_round_trip, async_wake);

const ROLES: &[(&str, Role)] = &[
    ("pop-waker-one", one_queue_waker),
    ("pop-waker-four", four_queue_waker),
    ("eventfd-waker", eventfd_waker),
    ("streamer", streamer),
    ("chunk-streamer", chunk_streamer),
    ("async-queue-echo", async_queue_echo),
    ("async-unix-echo", async_unix_echo),
    ("socket-waker", socket_waker),
];

/// Pushes every `k` to queue 0.
fn one_queue_waker() -> Side {
    let mut tx = spsc::Producer::<u64>::open(&env("Q0")).unwrap();
    let control = peer_control();
    Box::new(move |iters, ready| waker(iters, ready, &control, &mut |k| tx.push(k).unwrap()))
}

fn main() {
    run_role_if_child(ROLES);
    benches();
    criterion::Criterion::default().configure_from_args().final_summary();
}
