//! Two-process benchmark plumbing: the bench binary re-executes itself as a peer.
//!
//! A benchmark that needs a second process starts a [`Peer`] running a named role of the
//! same binary (`main` calls [`run_role_if_child`] before criterion). Each
//! `iter_custom` batch tells the peer how many iterations to run through a small control
//! block in shared memory, waits until the peer is in position, and times only the
//! iterations themselves.
#![allow(dead_code, clippy::disallowed_types)] // each bench uses a subset; users' own atomics

use std::process::{Child, Command};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use shmsync::{Shared, ShmSafe};

const ROLE_ENV: &str = "SHMSYNC_BENCH_ROLE";
const CONTROL_ENV: &str = "SHMSYNC_BENCH_CONTROL";

/// The batch protocol between the bench and its peer.
#[repr(C)]
pub struct Control {
    /// Bumped by the bench to start a batch; 0 = none yet. `u64::MAX` = quit.
    batch: AtomicU64,
    iters: AtomicU64,
    /// Set by the peer to the batch number it is ready for / has finished.
    ready: AtomicU64,
    done: AtomicU64,
    /// Free for the scenario's own hand-shakes within a batch.
    pub slots: [AtomicU64; 4],
}
// SAFETY: repr(C), atomics only.
unsafe impl ShmSafe for Control {}

/// Runs `python3 -c script args...` and reads its output's `name value` lines: the
/// Python side of a comparison. `None` (and why, on stderr) without a working python3.
pub fn python(script: &str, args: &[String]) -> Option<std::collections::HashMap<String, f64>> {
    let out = Command::new("python3").arg("-c").arg(script).args(args).output().ok()?;
    if !out.status.success() {
        eprintln!("python3 failed: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let (k, v) = l.split_once(' ')?;
                Some((k.to_owned(), v.parse().ok()?))
            })
            .collect(),
    )
}

/// A unique name for a bench object.
pub fn name(tag: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("shmsync-bench-{}-{}-{tag}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The peer's side of a batch: runs `iters` iterations, calling `ready` once it is in
/// position (the bench starts its clock then).
pub type Side = Box<dyn FnMut(u64, &mut dyn FnMut())>;

/// A role: sets up the peer's side once (opening objects), then serves batches.
pub type Role = fn() -> Side;

/// In a peer process: runs the role named in the environment and exits.
pub fn run_role_if_child(roles: &[(&str, Role)]) {
    let Ok(role) = std::env::var(ROLE_ENV) else { return };
    let control = Shared::<Control>::open(&std::env::var(CONTROL_ENV).unwrap()).unwrap();
    let setup =
        roles.iter().find(|(r, _)| *r == role).unwrap_or_else(|| panic!("unknown role {role}")).1;
    let mut side = setup();
    let mut seen = 0;
    loop {
        let batch = wait_until(|| {
            let b = control.batch.load(Ordering::Acquire);
            (b != seen).then_some(b)
        });
        if batch == u64::MAX {
            std::process::exit(0);
        }
        seen = batch;
        let iters = control.iters.load(Ordering::Acquire);
        side(iters, &mut || control.ready.store(batch, Ordering::Release));
        control.done.store(batch, Ordering::Release);
    }
}

/// Spins, then sleeps briefly, until `f` returns something (at most a minute).
pub fn wait_until<T>(mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + Duration::from_secs(60);
    let mut spins = 0u32;
    loop {
        if let Some(v) = f() {
            return v;
        }
        spins += 1;
        if spins < 10_000 {
            std::hint::spin_loop();
        } else {
            assert!(Instant::now() < end, "the peer stopped answering");
            std::thread::sleep(Duration::from_micros(50));
        }
    }
}

/// A peer process of this bench binary.
pub struct Peer {
    child: Child,
    control: Shared<Control>,
    control_name: String,
    batch: u64,
}

impl Peer {
    /// Starts the peer in `role`, with extra environment (object names, descriptors).
    pub fn start(role: &str, env: &[(&str, String)]) -> Self {
        let control_name = name("control");
        let control = Shared::<Control>::create(&control_name, |_| {}).unwrap();
        let child = Command::new(std::env::current_exe().unwrap())
            .env(ROLE_ENV, role)
            .env(CONTROL_ENV, &control_name)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .spawn()
            .expect("start the peer");
        Self { child, control, control_name, batch: 0 }
    }

    /// Runs one batch: the peer's side in its process, `mine` here, timing only `mine`,
    /// from the moment the peer is in position.
    pub fn batch(&mut self, iters: u64, mine: impl FnOnce(u64)) -> Duration {
        self.batch_with_control(iters, |n, _| mine(n))
    }

    /// As [`batch`](Self::batch), lending `mine` the control block for hand-shakes.
    pub fn batch_with_control(&mut self, iters: u64, mine: impl FnOnce(u64, &Control)) -> Duration {
        let batch = self.begin(iters);
        let start = Instant::now();
        mine(iters, &self.control);
        let elapsed = start.elapsed();
        wait_until(|| (self.control.done.load(Ordering::Acquire) == batch).then_some(()));
        elapsed
    }

    /// Starts a batch and returns once the peer is in position.
    pub fn begin(&mut self, iters: u64) -> u64 {
        self.batch += 1;
        let batch = self.batch;
        self.control.iters.store(iters, Ordering::Release);
        self.control.batch.store(batch, Ordering::Release);
        wait_until(|| (self.control.ready.load(Ordering::Acquire) == batch).then_some(()));
        batch
    }

    /// SIGKILLs the peer and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.control.batch.store(u64::MAX, Ordering::Release);
        let end = Instant::now() + Duration::from_secs(5);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(1));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Shared::<Control>::unlink(&self.control_name);
    }
}

/// The peer's view of the control block, for scenarios that hand-shake within a batch.
pub fn peer_control() -> Shared<Control> {
    Shared::<Control>::open(&std::env::var(CONTROL_ENV).unwrap()).unwrap()
}

/// `CLOCK_MONOTONIC` in nanoseconds: comparable between processes, unlike `Instant`.
pub fn monotonic_ns() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Reads an environment value the bench passed to its peer.
pub fn env(key: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| panic!("peer started without {key}"))
}

/// The peer's side of a wake-latency batch: for each `k`, waits until this side is about
/// to block on it, lets it fall asleep (150 us: past every spin), stamps the time in
/// `slots[1]` and calls `wake(k)`; `slots[0]` and `slots[2]` carry the hand-shake.
pub fn waker(iters: u64, ready: &mut dyn FnMut(), control: &Control, wake: &mut dyn FnMut(u64)) {
    let c = &control.slots;
    let base = c[2].load(Ordering::Acquire);
    ready();
    for k in base + 1..=base + iters {
        wait_until(|| (c[0].load(Ordering::Acquire) == k).then_some(()));
        let settle = Instant::now();
        while settle.elapsed() < Duration::from_micros(150) {
            std::hint::spin_loop();
        }
        c[1].store(monotonic_ns(), Ordering::Release);
        wake(k);
        wait_until(|| (c[2].load(Ordering::Acquire) == k).then_some(()));
    }
}

/// Sums, over `iters` iterations, the time from the peer's wake-up call to this side
/// running again after `block(k)`.
pub fn wake_latency(peer: &mut Peer, iters: u64, block: &mut dyn FnMut(u64)) -> Duration {
    let mut total = 0;
    peer.batch_with_control(iters, |n, control| {
        let c = &control.slots;
        let base = c[2].load(Ordering::Acquire);
        for k in base + 1..=base + n {
            c[0].store(k, Ordering::Release);
            block(k);
            let woke = monotonic_ns();
            total += woke.saturating_sub(c[1].load(Ordering::Acquire));
            c[2].store(k, Ordering::Release);
        }
    });
    Duration::from_nanos(total)
}
