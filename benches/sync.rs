//! Lock, Event and Semaphore against their OS counterparts, side by side in each group.
//!
//! - `lock_uncontended`: lock + unlock in one thread: shmsync `Lock` vs a
//!   process-shared `pthread_mutex_t` in shared memory, plain and robust.
//! - `lock_handover`: two processes relay two locks, each step waiting for the lock the
//!   other holds: contended throughput, shmsync vs process-shared pthread mutexes.
//! - `lock_blocking_handover`: one process blocks on a lock until it sleeps in the
//!   kernel, the other unlocks; the sample is unlock-to-running-with-the-lock.
//! - `event_round_trip`: ping-pong between two processes: shmsync `RawEvent` pairs vs an
//!   `eventfd` pair vs a pipe pair.
//! - `semaphore_round_trip`: ping-pong with two semaphores: shmsync vs process-shared
//!   POSIX `sem_t`.
//! - `owner_death`: from `kill -9` of a lock's holder to `OwnerDied` in a blocked waiter.
//!
//! Run: `cargo bench --bench sync`. Each two-process benchmark re-executes this binary as
//! the peer (see `common`).
#![allow(clippy::disallowed_types)] // the benchmark's own layouts hold std cells and atomics

mod common;

use std::cell::UnsafeCell;
use std::hint::black_box;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{
    Control, Peer, Role, Side, env, monotonic_ns, name, peer_control, run_role_if_child, wait_until,
};
use criterion::{Criterion, criterion_group};
use shmsync::raw::{LockGuard, RawEvent, RawLock, RawSemaphore};
use shmsync::{Lock, LockError, Shared, ShmSafe};

/// Two shmsync locks, events or semaphores in one segment, each on its own cache lines
/// (as the OS pairs below are), so that the two sides do not falsely share a line.
#[repr(C)]
struct Pair<T> {
    a: Padded<T>,
    b: Padded<T>,
}

#[repr(C, align(128))]
struct Padded<T>(T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}
// SAFETY: repr(C) of two ShmSafe raw primitives.
unsafe impl ShmSafe for Pair<RawLock> {}
// SAFETY: as above.
unsafe impl ShmSafe for Pair<RawEvent> {}
// SAFETY: as above.
unsafe impl ShmSafe for Pair<RawSemaphore> {}

/// Room for two process-shared pthread mutexes or POSIX semaphores, 128 bytes apart.
#[repr(C, align(128))]
struct OsPair {
    a: UnsafeCell<[u64; 16]>,
    b: UnsafeCell<[u64; 16]>,
}
// SAFETY: repr(C) bytes; pthread and sem_t do their own cross-process synchronisation.
unsafe impl ShmSafe for OsPair {}
// SAFETY: as above.
unsafe impl Sync for OsPair {}

const _: () = assert!(size_of::<libc::pthread_mutex_t>() <= 128 && size_of::<libc::sem_t>() <= 128);

impl OsPair {
    fn mutex(cell: &UnsafeCell<[u64; 16]>) -> *mut libc::pthread_mutex_t {
        cell.get().cast()
    }

    fn sem(cell: &UnsafeCell<[u64; 16]>) -> *mut libc::sem_t {
        cell.get().cast()
    }

    /// Initialises both as process-shared mutexes, robust or not.
    fn init_mutexes(&mut self, robust: bool) {
        // SAFETY: plain pthread calls on memory we own, before anyone else maps it.
        unsafe {
            let mut attr: libc::pthread_mutexattr_t = std::mem::zeroed();
            assert_eq!(libc::pthread_mutexattr_init(&mut attr), 0);
            assert_eq!(
                libc::pthread_mutexattr_setpshared(&mut attr, libc::PTHREAD_PROCESS_SHARED),
                0
            );
            if robust {
                assert_eq!(
                    libc::pthread_mutexattr_setrobust(&mut attr, libc::PTHREAD_MUTEX_ROBUST),
                    0
                );
            }
            for cell in [&self.a, &self.b] {
                assert_eq!(libc::pthread_mutex_init(Self::mutex(cell), &attr), 0);
            }
        }
    }

    /// Initialises both as process-shared semaphores with no permits.
    fn init_sems(&mut self) {
        for cell in [&self.a, &self.b] {
            // SAFETY: sem_init on memory we own, pshared = 1.
            assert_eq!(unsafe { libc::sem_init(Self::sem(cell), 1, 0) }, 0);
        }
    }
}

fn pthread_lock(m: *mut libc::pthread_mutex_t) {
    // SAFETY: an initialised process-shared mutex in a live mapping.
    assert_eq!(unsafe { libc::pthread_mutex_lock(m) }, 0);
}

fn pthread_unlock(m: *mut libc::pthread_mutex_t) {
    // SAFETY: as above, held by this thread.
    assert_eq!(unsafe { libc::pthread_mutex_unlock(m) }, 0);
}

fn lock_uncontended(c: &mut Criterion) {
    let mut group = c.benchmark_group("lock_uncontended");
    let lock_name = name("lock");
    let lock = Lock::create(&lock_name).unwrap();
    group.bench_function("shmsync_lock", |b| b.iter(|| drop(black_box(lock.lock().unwrap()))));

    for (label, robust) in
        [("pthread_mutex_pshared", false), ("pthread_mutex_pshared_robust", true)]
    {
        let os_name = name("os-mutex");
        let os = Shared::<OsPair>::create(&os_name, |p| p.init_mutexes(robust)).unwrap();
        let m = OsPair::mutex(&os.a);
        group.bench_function(label, |b| {
            b.iter(|| {
                pthread_lock(black_box(m));
                pthread_unlock(m);
            })
        });
        Shared::<OsPair>::unlink(&os_name).unwrap();
    }
    group.finish();
    Lock::unlink(&lock_name).unwrap();
}

/// The relay: this side holds `held` (a guard of `mine`); each step blocks on the other
/// lock, then lets go of its own, so every step hands a lock to a blocked process.
/// `release_first` is the peer's order: let go, then block.
fn relay<'a>(
    mut held: LockGuard<'a>,
    mut mine: &'a RawLock,
    mut theirs: &'a RawLock,
    iters: u64,
    release_first: bool,
) {
    for _ in 0..iters {
        held = if release_first {
            drop(held);
            theirs.lock().unwrap()
        } else {
            let next = theirs.lock().unwrap();
            drop(held);
            next
        };
        std::mem::swap(&mut mine, &mut theirs);
    }
    drop(held);
}

fn lock_handover(c: &mut Criterion) {
    let mut group = c.benchmark_group("lock_handover");
    group.measurement_time(Duration::from_secs(4));

    let pair_name = name("relay");
    let pair = Shared::<Pair<RawLock>>::create(&pair_name, |_| {}).unwrap();
    let mut peer = Peer::start("relay-shmsync", &[("PAIR", pair_name.clone())]);
    group.bench_function("shmsync_lock", |b| {
        b.iter_custom(|iters| {
            let held = pair.a.lock().unwrap(); // taken before the peer starts
            peer.batch(iters, |n| relay(held, &pair.a, &pair.b, n, false))
        })
    });
    drop(peer);
    Shared::<Pair<RawLock>>::unlink(&pair_name).unwrap();

    let os_name = name("relay-os");
    let os = Shared::<OsPair>::create(&os_name, |p| p.init_mutexes(false)).unwrap();
    let mut peer = Peer::start("relay-pthread", &[("PAIR", os_name.clone())]);
    group.bench_function("pthread_mutex_pshared", |b| {
        b.iter_custom(|iters| {
            let (a, bm) = (OsPair::mutex(&os.a), OsPair::mutex(&os.b));
            pthread_lock(a);
            peer.batch(iters, |n| {
                let (mut mine, mut theirs) = (a, bm);
                for _ in 0..n {
                    pthread_lock(theirs);
                    pthread_unlock(mine);
                    std::mem::swap(&mut mine, &mut theirs);
                }
                pthread_unlock(mine);
            })
        })
    });
    drop(peer);
    Shared::<OsPair>::unlink(&os_name).unwrap();
    group.finish();
}

/// One blocking hand-over: the bench holds the lock, the peer blocks on it and has time
/// to fall asleep in the kernel, then the bench unlocks; the sample is the time from the
/// unlock to the peer running with the lock, on `CLOCK_MONOTONIC` in both processes.
/// `holding(f)` takes the lock, runs `f` and unlocks. Slots: `[0]` the iteration the peer
/// may start, `[1]` the one it is about to lock, `[2]` the one it finished, `[3]` when it
/// got the lock.
fn blocking_handover(peer: &mut Peer, iters: u64, holding: impl Fn(&mut dyn FnMut())) -> Duration {
    let mut total = 0;
    peer.batch_with_control(iters, |n, control| {
        let c = &control.slots;
        let base = c[2].load(Ordering::Acquire);
        for k in base + 1..=base + n {
            let mut released = 0;
            holding(&mut || {
                c[0].store(k, Ordering::Release);
                wait_until(|| (c[1].load(Ordering::Acquire) == k).then_some(()));
                // Long enough for the peer to stop spinning and sleep in FUTEX_WAIT.
                let settle = Instant::now();
                while settle.elapsed() < Duration::from_micros(150) {
                    std::hint::spin_loop();
                }
                released = monotonic_ns();
            });
            wait_until(|| (c[2].load(Ordering::Acquire) == k).then_some(()));
            total += c[3].load(Ordering::Acquire).saturating_sub(released);
        }
    });
    Duration::from_nanos(total)
}

/// The peer's side of [`blocking_handover`].
fn blocking_handover_peer(
    iters: u64,
    ready: &mut dyn FnMut(),
    control: &Control,
    holding: &dyn Fn(&mut dyn FnMut()),
) {
    let c = &control.slots;
    let base = c[2].load(Ordering::Acquire);
    ready();
    for k in base + 1..=base + iters {
        wait_until(|| (c[0].load(Ordering::Acquire) == k).then_some(()));
        c[1].store(k, Ordering::Release);
        holding(&mut || c[3].store(monotonic_ns(), Ordering::Release));
        c[2].store(k, Ordering::Release);
    }
}

fn shmsync_holding(lock: &Lock) -> impl Fn(&mut dyn FnMut()) + '_ {
    move |f| {
        let _held = lock.lock().unwrap();
        f();
    }
}

fn pthread_holding(m: *mut libc::pthread_mutex_t) -> impl Fn(&mut dyn FnMut()) {
    move |f| {
        pthread_lock(m);
        f();
        pthread_unlock(m);
    }
}

fn lock_blocking_handover(c: &mut Criterion) {
    let mut group = c.benchmark_group("lock_blocking_handover");
    group.measurement_time(Duration::from_secs(4));

    let lock_name = name("blocking");
    let lock = Lock::create(&lock_name).unwrap();
    let mut peer = Peer::start("blocking-shmsync", &[("LOCK", lock_name.clone())]);
    group.bench_function("shmsync_lock", |b| {
        b.iter_custom(|iters| blocking_handover(&mut peer, iters, shmsync_holding(&lock)))
    });
    drop(peer);
    Lock::unlink(&lock_name).unwrap();

    let os_name = name("blocking-os");
    let os = Shared::<OsPair>::create(&os_name, |p| p.init_mutexes(false)).unwrap();
    let mut peer = Peer::start("blocking-pthread", &[("PAIR", os_name.clone())]);
    group.bench_function("pthread_mutex_pshared", |b| {
        b.iter_custom(|iters| {
            blocking_handover(&mut peer, iters, pthread_holding(OsPair::mutex(&os.a)))
        })
    });
    drop(peer);
    Shared::<OsPair>::unlink(&os_name).unwrap();
    group.finish();
}

fn blocking_shmsync_peer() -> Side {
    let lock = Lock::open(&env("LOCK")).unwrap();
    let control = peer_control();
    Box::new(move |iters, ready| {
        blocking_handover_peer(iters, ready, &control, &shmsync_holding(&lock))
    })
}

fn blocking_pthread_peer() -> Side {
    let os = Shared::<OsPair>::open(&env("PAIR")).unwrap();
    let control = peer_control();
    Box::new(move |iters, ready| {
        blocking_handover_peer(iters, ready, &control, &pthread_holding(OsPair::mutex(&os.a)))
    })
}

fn relay_shmsync_peer() -> Side {
    let pair = Shared::<Pair<RawLock>>::open(&env("PAIR")).unwrap();
    Box::new(move |iters, ready| {
        // Take B, then say so: the bench holds A and blocks on B first.
        let held = pair.b.lock().unwrap();
        ready();
        relay(held, &pair.b, &pair.a, iters, true);
    })
}

fn relay_pthread_peer() -> Side {
    let os = Shared::<OsPair>::open(&env("PAIR")).unwrap();
    Box::new(move |iters, ready| {
        let (a, b) = (OsPair::mutex(&os.a), OsPair::mutex(&os.b));
        pthread_lock(b);
        ready();
        let (mut mine, mut theirs) = (b, a);
        for _ in 0..iters {
            pthread_unlock(mine);
            pthread_lock(theirs);
            std::mem::swap(&mut mine, &mut theirs);
        }
        pthread_unlock(mine);
    })
}

/// Creates a pipe or eventfd pair that a child inherits (no CLOEXEC).
fn inheritable_pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), 0) }, 0);
    // SAFETY: fresh descriptors, owned from here on.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

fn inheritable_eventfd() -> OwnedFd {
    // SAFETY: eventfd returns a fresh descriptor or -1.
    let fd = unsafe { libc::eventfd(0, 0) };
    assert!(fd >= 0);
    // SAFETY: fresh descriptor, owned from here on.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn write_fd(fd: RawFd, bytes: &[u8]) {
    // SAFETY: writes from a live buffer.
    let n = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
    assert_eq!(n, bytes.len() as isize);
}

fn read_fd(fd: RawFd, buf: &mut [u8]) {
    // SAFETY: reads into a live buffer.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    assert_eq!(n, buf.len() as isize);
}

fn fd_env(key: &str) -> RawFd {
    env(key).parse().unwrap()
}

fn event_round_trip(c: &mut Criterion) {
    let mut group = c.benchmark_group("event_round_trip");
    group.measurement_time(Duration::from_secs(4));

    let pair_name = name("events");
    let pair = Shared::<Pair<RawEvent>>::create(&pair_name, |_| {}).unwrap();
    let mut peer = Peer::start("events-shmsync", &[("PAIR", pair_name.clone())]);
    group.bench_function("shmsync_event", |b| {
        b.iter_custom(|iters| {
            peer.batch(iters, |n| {
                for _ in 0..n {
                    pair.a.set();
                    pair.b.wait();
                    pair.b.clear();
                }
            })
        })
    });
    drop(peer);
    Shared::<Pair<RawEvent>>::unlink(&pair_name).unwrap();

    let (ping, pong) = (inheritable_eventfd(), inheritable_eventfd());
    let fds = [("PING", ping.as_raw_fd().to_string()), ("PONG", pong.as_raw_fd().to_string())];
    let mut peer = Peer::start("events-eventfd", &fds);
    group.bench_function("eventfd", |b| {
        b.iter_custom(|iters| {
            peer.batch(iters, |n| {
                let mut buf = [0u8; 8];
                for _ in 0..n {
                    write_fd(ping.as_raw_fd(), &1u64.to_ne_bytes());
                    read_fd(pong.as_raw_fd(), &mut buf);
                }
            })
        })
    });
    drop(peer);

    let ((ping_r, ping_w), (pong_r, pong_w)) = (inheritable_pipe(), inheritable_pipe());
    let fds = [("PING", ping_r.as_raw_fd().to_string()), ("PONG", pong_w.as_raw_fd().to_string())];
    let mut peer = Peer::start("events-pipe", &fds);
    group.bench_function("pipe", |b| {
        b.iter_custom(|iters| {
            peer.batch(iters, |n| {
                let mut buf = [0u8; 1];
                for _ in 0..n {
                    write_fd(ping_w.as_raw_fd(), b"x");
                    read_fd(pong_r.as_raw_fd(), &mut buf);
                }
            })
        })
    });
    drop(peer);
    group.finish();
}

fn events_shmsync_peer() -> Side {
    let pair = Shared::<Pair<RawEvent>>::open(&env("PAIR")).unwrap();
    Box::new(move |iters, ready| {
        ready();
        for _ in 0..iters {
            pair.a.wait();
            pair.a.clear();
            pair.b.set();
        }
    })
}

fn events_eventfd_peer() -> Side {
    let (ping, pong) = (fd_env("PING"), fd_env("PONG"));
    Box::new(move |iters, ready| {
        ready();
        let mut buf = [0u8; 8];
        for _ in 0..iters {
            read_fd(ping, &mut buf);
            write_fd(pong, &1u64.to_ne_bytes());
        }
    })
}

fn events_pipe_peer() -> Side {
    let (ping, pong) = (fd_env("PING"), fd_env("PONG"));
    Box::new(move |iters, ready| {
        ready();
        let mut buf = [0u8; 1];
        for _ in 0..iters {
            read_fd(ping, &mut buf);
            write_fd(pong, b"x");
        }
    })
}

fn semaphore_round_trip(c: &mut Criterion) {
    let mut group = c.benchmark_group("semaphore_round_trip");
    group.measurement_time(Duration::from_secs(4));

    let pair_name = name("sems");
    let pair = Shared::<Pair<RawSemaphore>>::create(&pair_name, |_| {}).unwrap();
    let mut peer = Peer::start("sems-shmsync", &[("PAIR", pair_name.clone())]);
    group.bench_function("shmsync_semaphore", |b| {
        b.iter_custom(|iters| {
            peer.batch(iters, |n| {
                for _ in 0..n {
                    pair.a.release().unwrap();
                    pair.b.acquire();
                }
            })
        })
    });
    drop(peer);
    Shared::<Pair<RawSemaphore>>::unlink(&pair_name).unwrap();

    let os_name = name("sems-os");
    let os = Shared::<OsPair>::create(&os_name, |p| p.init_sems()).unwrap();
    let mut peer = Peer::start("sems-posix", &[("PAIR", os_name.clone())]);
    group.bench_function("posix_sem_pshared", |b| {
        b.iter_custom(|iters| {
            let (a, bs) = (OsPair::sem(&os.a), OsPair::sem(&os.b));
            peer.batch(iters, |n| {
                for _ in 0..n {
                    // SAFETY: initialised process-shared semaphores in a live mapping.
                    unsafe {
                        assert_eq!(libc::sem_post(a), 0);
                        while libc::sem_wait(bs) != 0 {}
                    }
                }
            })
        })
    });
    drop(peer);
    Shared::<OsPair>::unlink(&os_name).unwrap();
    group.finish();
}

fn sems_shmsync_peer() -> Side {
    let pair = Shared::<Pair<RawSemaphore>>::open(&env("PAIR")).unwrap();
    Box::new(move |iters, ready| {
        ready();
        for _ in 0..iters {
            pair.a.acquire();
            pair.b.release().unwrap();
        }
    })
}

fn sems_posix_peer() -> Side {
    let os = Shared::<OsPair>::open(&env("PAIR")).unwrap();
    Box::new(move |iters, ready| {
        let (a, b) = (OsPair::sem(&os.a), OsPair::sem(&os.b));
        ready();
        for _ in 0..iters {
            // SAFETY: initialised process-shared semaphores in a live mapping.
            unsafe {
                while libc::sem_wait(a) != 0 {}
                assert_eq!(libc::sem_post(b), 0);
            }
        }
    })
}

/// A peer that takes the lock and waits to be killed (batches of one).
fn hold_peer() -> Side {
    let lock = Lock::open(&env("LOCK")).unwrap();
    Box::new(move |_iters, ready| {
        let guard = lock.lock().unwrap();
        ready();
        std::thread::sleep(Duration::from_secs(60));
        drop(guard);
    })
}

fn owner_death(c: &mut Criterion) {
    let mut group = c.benchmark_group("owner_death");
    group.sample_size(10).measurement_time(Duration::from_secs(5));
    let lock_name = name("death");
    let lock = Lock::create(&lock_name).unwrap();
    group.bench_function("kill9_to_owner_died", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut peer = Peer::start("hold", &[("LOCK", lock_name.clone())]);
                peer.begin(1); // the peer holds the lock now
                std::thread::scope(|s| {
                    let waiter = s.spawn(|| match lock.lock() {
                        Err(LockError::OwnerDied(mut g)) => {
                            let woke = Instant::now();
                            g.mark_consistent();
                            woke
                        }
                        other => panic!("expected OwnerDied, got {other:?}"),
                    });
                    // Let the waiter block in the kernel, as at a real death.
                    std::thread::sleep(Duration::from_millis(5));
                    let killed = Instant::now();
                    peer.kill();
                    total += waiter.join().unwrap().saturating_duration_since(killed);
                });
            }
            total
        })
    });
    group.finish();
    Lock::unlink(&lock_name).unwrap();
}

criterion_group!(
    benches,
    lock_uncontended,
    lock_handover,
    lock_blocking_handover,
    event_round_trip,
    semaphore_round_trip,
    owner_death
);

const ROLES: &[(&str, Role)] = &[
    ("relay-shmsync", relay_shmsync_peer),
    ("relay-pthread", relay_pthread_peer),
    ("blocking-shmsync", blocking_shmsync_peer),
    ("blocking-pthread", blocking_pthread_peer),
    ("events-shmsync", events_shmsync_peer),
    ("events-eventfd", events_eventfd_peer),
    ("events-pipe", events_pipe_peer),
    ("sems-shmsync", sems_shmsync_peer),
    ("sems-posix", sems_posix_peer),
    ("hold", hold_peer),
];

fn main() {
    run_role_if_child(ROLES);
    benches();
    criterion::Criterion::default().configure_from_args().final_summary();
}
