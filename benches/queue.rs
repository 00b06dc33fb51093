//! SPSC queue throughput against an OS pipe and rtrb, side by side in each group.
//!
//! - `spsc_u64`: a producer process pushes `u64`s one at a time, this process pops them:
//!   shmsync vs a pipe with one 8-byte `write` per value (the reader drains 64 KiB at a
//!   time) vs rtrb between two threads of this process.
//! - `spsc_record64`: the same with a 64-byte `#[repr(C)]` record.
//! - `spsc_chunked_u64`: shmsync with chunks of up to 256 values on both sides, against
//!   shmsync one at a time.
//!
//! Run: `cargo bench --bench queue`. The figures are per value.

mod common;

use std::hint::black_box;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use common::{Peer, Role, Side, env, name, run_role_if_child};
use criterion::{Criterion, Throughput, criterion_group};
use shmsync::spsc;

const CAPACITY: usize = 4096;

/// A 64-byte record, as the integration tests use.
#[repr(C)]
#[derive(Clone, Copy, shmsync::Pod, shmsync::Zeroable)]
struct Record {
    seq: u64,
    payload: [u64; 7],
}

fn shmsync_producer<T: shmsync::Pod>(make: fn(u64) -> T) -> impl FnMut(u64, &mut dyn FnMut()) {
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
                    for (slot, v) in a.iter_mut().chain(b.iter_mut()).zip(next..) {
                        *slot = v;
                    }
                    chunk.commit_all();
                    next += want as u64;
                }
                Err(shmsync::ChunkError::TooFewSlots) => std::hint::spin_loop(),
                Err(e) => panic!("{e}"),
            }
        }
    })
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
fn pop_batch<T: shmsync::Pod>(
    peer: &mut Peer,
    rx: &mut spsc::Consumer<T>,
    iters: u64,
    seq: fn(&T) -> u64,
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
                    for v in a.iter().chain(b) {
                        assert_eq!(*v, next);
                        next += 1;
                    }
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

criterion_group!(benches, spsc_u64, spsc_record64, spsc_chunked);

const ROLES: &[(&str, Role)] = &[
    ("spsc-u64", u64_producer),
    ("spsc-record", record_producer),
    ("spsc-chunked", chunked_producer),
    ("pipe-u64", pipe_producer),
];

fn main() {
    run_role_if_child(ROLES);
    benches();
    criterion::Criterion::default().configure_from_args().final_summary();
}
