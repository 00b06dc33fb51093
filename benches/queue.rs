//! SPSC queue throughput against an OS pipe and rtrb, side by side in each group.
//!
//! - `spsc_u64`: a producer process pushes `u64`s one at a time, this process pops them:
//!   shmsync vs a pipe with one 8-byte `write` per value (the reader drains 64 KiB at a
//!   time) vs rtrb between two threads of this process.
//! - `spsc_record64`: the same with a 64-byte `#[repr(C)]` record.
//! - `spsc_chunked_u64`: shmsync with chunks of up to 256 values on both sides, against
//!   shmsync one at a time.
//!
//! - `mpmc_1p1c_u64`: the MPMC queue with one producer process and one consumer, next to
//!   the SPSC queue in the same run.
//! - `mpmc_2p2c_u64`: two producer threads in a peer process, two consumer threads here,
//!   against crossbeam's `ArrayQueue` with four threads of one process.
//! - `blocked_pop_wake`: a consumer asleep in `pop` until the producer pushes, from the
//!   push to the pop returning, next to a raw `FUTEX_WAIT`/`FUTEX_WAKE` pair measured the
//!   same way.
//!
//! Run: `cargo bench --bench queue`. The throughput figures are per value.
#![allow(clippy::disallowed_types)] // the benchmark's own layouts hold std atomics

mod common;

use std::hint::black_box;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use common::{Peer, Role, Side, env, name, peer_control, run_role_if_child, wake_latency, waker};
use criterion::{Criterion, Throughput, criterion_group};
use shmsync::{Shared, ShmSafe, mpmc, spsc};
use std::sync::atomic::Ordering;

const CAPACITY: usize = 4096;

/// A 64-byte record, as the integration tests use.
#[repr(C)]
#[derive(Clone, Copy, shmsync::Pod, shmsync::Zeroable)]
struct Record {
    seq: u64,
    payload: [u64; 7],
}

/// `make` and `seq` below are generic, not `fn` pointers, so that they inline as rtrb's
/// loop does: an indirect call per value would be the harness's cost, not the queue's.
fn shmsync_producer<T: shmsync::Pod + shmsync::ShmSafe>(
    make: impl Fn(u64) -> T,
) -> impl FnMut(u64, &mut dyn FnMut()) {
    let mut tx = spsc::Producer::<T>::open(&env("QUEUE")).unwrap();
    move |iters, ready| {
        ready();
        for i in 0..iters {
            tx.push(make(i)).unwrap();
        }
    }
}

fn u64_producer() -> Side {
    Box::new(shmsync_producer::<u64>(|i| i))
}

fn record_producer() -> Side {
    Box::new(shmsync_producer::<Record>(|i| Record { seq: i, payload: [i; 7] }))
}

fn chunked_producer() -> Side {
    let mut tx = spsc::Producer::<u64>::open(&env("QUEUE")).unwrap();
    Box::new(move |iters, ready| {
        ready();
        let mut next = 0;
        while next < iters {
            let want = (iters - next).min(256) as usize;
            match tx.write_chunk(want) {
                Ok(mut chunk) => {
                    let (a, b) = chunk.as_mut_slices();
                    let split = next + a.len() as u64;
                    fill_counting(a, next);
                    fill_counting(b, split);
                    chunk.commit_all();
                    next += want as u64;
                }
                Err(shmsync::ChunkError::TooFewSlots) => std::hint::spin_loop(),
                Err(e) => panic!("{e}"),
            }
        }
    })
}

/// Fills `slots` with `first, first + 1, ...`, as a loop the compiler can vectorise: a
/// chunk is a plain slice, and a user filling one would write it this way.
fn fill_counting(slots: &mut [u64], first: u64) {
    for (k, slot) in slots.iter_mut().enumerate() {
        *slot = first + k as u64;
    }
}

/// Whether `values` are `first, first + 1, ...`: every value is compared (no early exit,
/// so the loop vectorises).
fn is_counting(values: &[u64], first: u64) -> bool {
    values.iter().enumerate().fold(0, |diff, (k, v)| diff | (v ^ (first + k as u64))) == 0
}

fn pipe_producer() -> Side {
    let fd: RawFd = env("PIPE").parse().unwrap();
    Box::new(move |iters, ready| {
        ready();
        for i in 0..iters {
            let bytes = i.to_ne_bytes();
            // SAFETY: writes 8 bytes from a live buffer; a pipe write of <= PIPE_BUF is atomic.
            let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), 8) };
            assert_eq!(n, 8);
        }
    })
}

fn inheritable_pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), 0) }, 0);
    // SAFETY: fresh descriptors, owned from here on.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// Pops `iters` values from a queue filled by `peer`, checking the order.
fn pop_batch<T: shmsync::Pod + shmsync::ShmSafe>(
    peer: &mut Peer,
    rx: &mut spsc::Consumer<T>,
    iters: u64,
    seq: impl Fn(&T) -> u64,
) -> Duration {
    peer.batch(iters, |n| {
        for i in 0..n {
            let v = rx.pop().unwrap();
            assert_eq!(seq(&v), i);
        }
    })
}

fn spsc_u64(c: &mut Criterion) {
    let mut group = c.benchmark_group("spsc_u64");
    group.throughput(Throughput::Elements(1)).measurement_time(Duration::from_secs(4));

    let q = name("spsc");
    let mut rx = spsc::Consumer::<u64>::create(&q, CAPACITY).unwrap();
    let mut peer = Peer::start("spsc-u64", &[("QUEUE", q.clone())]);
    group.bench_function("shmsync", |b| {
        b.iter_custom(|iters| pop_batch(&mut peer, &mut rx, iters, |v| *v))
    });
    drop(peer);
    drop(rx);
    spsc::Consumer::<u64>::unlink(&q).unwrap();

    let (read_end, write_end) = inheritable_pipe();
    let mut peer = Peer::start("pipe-u64", &[("PIPE", write_end.as_raw_fd().to_string())]);
    drop(write_end);
    let mut buf = vec![0u8; 64 * 1024];
    group.bench_function("pipe_write_per_value", |b| {
        b.iter_custom(|iters| {
            peer.batch(iters, |n| {
                let mut want = n * 8;
                let mut next = 0u64;
                let mut carry = Vec::new();
                while want > 0 {
                    // SAFETY: reads into a live buffer.
                    let got = unsafe {
                        libc::read(read_end.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len())
                    };
                    assert!(got > 0);
                    carry.extend_from_slice(&buf[..got as usize]);
                    let whole = carry.len() / 8 * 8;
                    for v in carry[..whole].chunks_exact(8) {
                        assert_eq!(u64::from_ne_bytes(v.try_into().unwrap()), next);
                        next += 1;
                    }
                    carry.drain(..whole);
                    want -= got as u64;
                }
            })
        })
    });
    drop(peer);

    group.bench_function("rtrb_threads", |b| {
        b.iter_custom(|iters| {
            let (mut tx, mut rx) = rtrb::RingBuffer::<u64>::new(CAPACITY);
            std::thread::scope(|s| {
                let start = Instant::now();
                s.spawn(move || {
                    for i in 0..iters {
                        while tx.push(i).is_err() {
                            std::hint::spin_loop();
                        }
                    }
                });
                for i in 0..iters {
                    loop {
                        if let Ok(v) = rx.pop() {
                            assert_eq!(v, i);
                            break;
                        }
                        std::hint::spin_loop();
                    }
                }
                start.elapsed()
            })
        })
    });
    group.finish();
}

fn spsc_record64(c: &mut Criterion) {
    let mut group = c.benchmark_group("spsc_record64");
    group.throughput(Throughput::Elements(1)).measurement_time(Duration::from_secs(4));
    let q = name("spsc-rec");
    let mut rx = spsc::Consumer::<Record>::create(&q, CAPACITY).unwrap();
    let mut peer = Peer::start("spsc-record", &[("QUEUE", q.clone())]);
    group.bench_function("shmsync", |b| {
        b.iter_custom(|iters| pop_batch(&mut peer, &mut rx, iters, |r| r.seq))
    });
    drop(peer);
    drop(rx);
    spsc::Consumer::<Record>::unlink(&q).unwrap();
    group.finish();
}

fn spsc_chunked(c: &mut Criterion) {
    let mut group = c.benchmark_group("spsc_chunked_u64");
    group.throughput(Throughput::Elements(1)).measurement_time(Duration::from_secs(4));
    let q = name("spsc-chunk");
    let mut rx = spsc::Consumer::<u64>::create(&q, CAPACITY).unwrap();
    let mut peer = Peer::start("spsc-chunked", &[("QUEUE", q.clone())]);
    group.bench_function("shmsync_chunks_256", |b| {
        b.iter_custom(|iters| {
            peer.batch(iters, |n| {
                let mut next = 0;
                while next < n {
                    let ready = rx.len().min(256);
                    if ready == 0 {
                        assert_eq!(rx.pop().unwrap(), next);
                        next += 1;
                        continue;
                    }
                    let mut chunk = rx.read_chunk(ready).unwrap();
                    let (a, b) = chunk.as_slices();
                    assert!(is_counting(a, next), "values out of order near {next}");
                    next += a.len() as u64;
                    assert!(is_counting(b, next), "values out of order near {next}");
                    next += b.len() as u64;
                    black_box(&chunk);
                    chunk.commit_all();
                }
            })
        })
    });
    drop(peer);
    drop(rx);
    spsc::Consumer::<u64>::unlink(&q).unwrap();

    let q = name("spsc-single");
    let mut rx = spsc::Consumer::<u64>::create(&q, CAPACITY).unwrap();
    let mut peer = Peer::start("spsc-u64", &[("QUEUE", q.clone())]);
    group.bench_function("shmsync_single", |b| {
        b.iter_custom(|iters| pop_batch(&mut peer, &mut rx, iters, |v| *v))
    });
    drop(peer);
    drop(rx);
    spsc::Consumer::<u64>::unlink(&q).unwrap();
    group.finish();
}

fn mpmc_producer() -> Side {
    let q = mpmc::Queue::<u64>::open(&env("QUEUE")).unwrap();
    Box::new(move |iters, ready| {
        ready();
        for i in 0..iters {
            q.push(i).unwrap();
        }
    })
}

/// Pushes `0..iters` in slices of [`BATCH`] (`push_slice`).
fn mpmc_batch_producer() -> Side {
    let q = mpmc::Queue::<u64>::open(&env("QUEUE")).unwrap();
    Box::new(move |iters, ready| {
        ready();
        let mut values = [0u64; BATCH];
        let mut next = 0;
        while next < iters {
            let n = (iters - next).min(BATCH as u64) as usize;
            fill_counting(&mut values[..n], next);
            q.push_slice(&values[..n]).unwrap();
            next += n as u64;
        }
    })
}

/// The batch size of the MPMC batch benchmark.
const BATCH: usize = 64;

fn mpmc_1p1c(c: &mut Criterion) {
    let mut group = c.benchmark_group("mpmc_1p1c_u64");
    group.throughput(Throughput::Elements(1)).measurement_time(Duration::from_secs(4));
    let q_name = name("mpmc");
    let q = mpmc::Queue::<u64>::create(&q_name, CAPACITY).unwrap();
    let mut peer = Peer::start("mpmc-u64", &[("QUEUE", q_name.clone())]);
    group.bench_function("shmsync_mpmc", |b| {
        b.iter_custom(|iters| {
            peer.batch(iters, |n| {
                for i in 0..n {
                    assert_eq!(q.pop().unwrap(), i);
                }
            })
        })
    });
    drop(peer);
    drop(q);
    mpmc::Queue::<u64>::unlink(&q_name).unwrap();

    // Batches of 64 each way: `push_slice` in the peer, `pop_into` here.
    let q_name = name("mpmc-batch");
    let q = mpmc::Queue::<u64>::create(&q_name, CAPACITY).unwrap();
    let mut peer = Peer::start("mpmc-batch", &[("QUEUE", q_name.clone())]);
    group.bench_function("shmsync_mpmc_batch64", |b| {
        b.iter_custom(|iters| {
            peer.batch(iters, |n| {
                let mut buf = [0u64; BATCH];
                let mut next = 0;
                while next < n {
                    let got = q.pop_into(&mut buf).unwrap();
                    assert!(is_counting(&buf[..got], next));
                    next += got as u64;
                }
            })
        })
    });
    drop(peer);
    drop(q);
    mpmc::Queue::<u64>::unlink(&q_name).unwrap();

    // crossbeam's ArrayQueue, one producer thread and one consumer thread.
    group.bench_function("crossbeam_array_queue_threads", |b| {
        b.iter_custom(|iters| {
            let q = crossbeam_queue::ArrayQueue::<u64>::new(CAPACITY);
            let start = Instant::now();
            std::thread::scope(|s| {
                let q = &q;
                s.spawn(move || {
                    for i in 0..iters {
                        let mut v = i;
                        while let Err(back) = q.push(v) {
                            v = back;
                            std::hint::spin_loop();
                        }
                    }
                });
                for i in 0..iters {
                    loop {
                        if let Some(v) = q.pop() {
                            assert_eq!(v, i);
                            break;
                        }
                        std::hint::spin_loop();
                    }
                }
            });
            start.elapsed()
        })
    });

    let s_name = name("mpmc-vs-spsc");
    let mut rx = spsc::Consumer::<u64>::create(&s_name, CAPACITY).unwrap();
    let mut peer = Peer::start("spsc-u64", &[("QUEUE", s_name.clone())]);
    group.bench_function("shmsync_spsc", |b| {
        b.iter_custom(|iters| pop_batch(&mut peer, &mut rx, iters, |v| *v))
    });
    drop(peer);
    drop(rx);
    spsc::Consumer::<u64>::unlink(&s_name).unwrap();
    group.finish();
}

fn mpmc_two_producers() -> Side {
    let q = mpmc::Queue::<u64>::open(&env("QUEUE")).unwrap();
    Box::new(move |iters, ready| {
        ready();
        std::thread::scope(|s| {
            for p in 0..2u64 {
                let q = q.clone();
                s.spawn(move || {
                    for i in (p..iters).step_by(2) {
                        q.push(i).unwrap();
                    }
                });
            }
        });
    })
}

fn mpmc_2p2c(c: &mut Criterion) {
    let mut group = c.benchmark_group("mpmc_2p2c_u64");
    group.throughput(Throughput::Elements(1)).measurement_time(Duration::from_secs(4));
    let q_name = name("mpmc22");
    let q = mpmc::Queue::<u64>::create(&q_name, CAPACITY).unwrap();
    let mut peer = Peer::start("mpmc-2p", &[("QUEUE", q_name.clone())]);
    group.bench_function("shmsync_two_processes", |b| {
        b.iter_custom(|iters| {
            peer.batch(iters, |n| {
                // Two consumer threads here, two producer threads in the peer.
                std::thread::scope(|s| {
                    for c in 0..2u64 {
                        let q = q.clone();
                        s.spawn(move || {
                            for _ in (c..n).step_by(2) {
                                black_box(q.pop().unwrap());
                            }
                        });
                    }
                });
            })
        })
    });
    drop(peer);
    drop(q);
    mpmc::Queue::<u64>::unlink(&q_name).unwrap();

    group.bench_function("crossbeam_array_queue_threads", |b| {
        b.iter_custom(|iters| {
            let q = crossbeam_queue::ArrayQueue::<u64>::new(CAPACITY);
            let start = Instant::now();
            std::thread::scope(|s| {
                for p in 0..2u64 {
                    let q = &q;
                    s.spawn(move || {
                        for i in (p..iters).step_by(2) {
                            let mut v = i;
                            while let Err(back) = q.push(v) {
                                v = back;
                                std::hint::spin_loop();
                            }
                        }
                    });
                }
                for c in 0..2u64 {
                    let q = &q;
                    s.spawn(move || {
                        for _ in (c..iters).step_by(2) {
                            loop {
                                if let Some(v) = q.pop() {
                                    black_box(v);
                                    break;
                                }
                                std::hint::spin_loop();
                            }
                        }
                    });
                }
            });
            start.elapsed()
        })
    });
    group.finish();
}

/// A futex word and a timestamp, for the raw wake-up baseline.
#[repr(C)]
struct Futex {
    word: std::sync::atomic::AtomicU32,
}
// SAFETY: repr(C), atomics only.
unsafe impl ShmSafe for Futex {}

/// The peer's side of the wake-up benchmarks: per iteration, once the bench has announced
/// it is about to block (`slots[0] == k`), waits 150 us for it to fall asleep, stamps the
/// time into `slots[1]` and wakes it (a push, or a raw futex wake).
fn pop_waker() -> Side {
    let mut tx = spsc::Producer::<u64>::open(&env("QUEUE")).unwrap();
    let control = peer_control();
    Box::new(move |iters, ready| waker(iters, ready, &control, &mut |k| tx.push(k).unwrap()))
}

fn futex_waker() -> Side {
    let f = Shared::<Futex>::open(&env("FUTEX")).unwrap();
    let control = peer_control();
    Box::new(move |iters, ready| {
        waker(iters, ready, &control, &mut |k| {
            f.word.store(k as u32, Ordering::Release);
            // SAFETY: FUTEX_WAKE on a live shared word.
            unsafe { libc::syscall(libc::SYS_futex, f.word.as_ptr(), libc::FUTEX_WAKE, 1) };
        })
    })
}

fn blocked_pop_wake(c: &mut Criterion) {
    let mut group = c.benchmark_group("blocked_pop_wake");
    group.measurement_time(Duration::from_secs(4));

    let q = name("wake-pop");
    let mut rx = spsc::Consumer::<u64>::create(&q, 64).unwrap();
    let mut peer = Peer::start("pop-waker", &[("QUEUE", q.clone())]);
    group.bench_function("shmsync_spsc_pop", |b| {
        b.iter_custom(|iters| {
            wake_latency(&mut peer, iters, &mut |k| assert_eq!(rx.pop().unwrap(), k))
        })
    });
    drop(peer);
    drop(rx);
    spsc::Consumer::<u64>::unlink(&q).unwrap();

    let f_name = name("wake-futex");
    let f = Shared::<Futex>::create(&f_name, |_| {}).unwrap();
    let mut peer = Peer::start("futex-waker", &[("FUTEX", f_name.clone())]);
    group.bench_function("raw_futex_wait_wake", |b| {
        b.iter_custom(|iters| {
            wake_latency(&mut peer, iters, &mut |k| {
                while f.word.load(Ordering::Acquire) != k as u32 {
                    let seen = f.word.load(Ordering::Relaxed);
                    if seen == k as u32 {
                        break;
                    }
                    // SAFETY: FUTEX_WAIT on a live shared word.
                    unsafe {
                        libc::syscall(
                            libc::SYS_futex,
                            f.word.as_ptr(),
                            libc::FUTEX_WAIT,
                            seen,
                            std::ptr::null::<u8>(),
                        )
                    };
                }
            })
        })
    });
    drop(peer);
    Shared::<Futex>::unlink(&f_name).unwrap();
    group.finish();
}

criterion_group!(
    benches,
    spsc_u64,
    spsc_record64,
    spsc_chunked,
    mpmc_1p1c,
    mpmc_2p2c,
    blocked_pop_wake
);

const ROLES: &[(&str, Role)] = &[
    ("spsc-u64", u64_producer),
    ("spsc-record", record_producer),
    ("spsc-chunked", chunked_producer),
    ("pipe-u64", pipe_producer),
    ("mpmc-u64", mpmc_producer),
    ("mpmc-batch", mpmc_batch_producer),
    ("mpmc-2p", mpmc_two_producers),
    ("pop-waker", pop_waker),
    ("futex-waker", futex_waker),
];

fn main() {
    run_role_if_child(ROLES);
    benches();
    criterion::Criterion::default().configure_from_args().final_summary();
}
