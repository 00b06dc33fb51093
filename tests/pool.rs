//! `Pool` across real processes: the workers are this test binary, which runs its worker
//! loop before libtest's `main` starts.
#![allow(clippy::disallowed_types)] // the shared harness counts with std atomics

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{role, spawn};
use shmsync::process::{self, Pool, PoolError};
use shmsync::{Event, Options};

const LIMIT: Duration = Duration::from_secs(30);

fn square(x: u64) -> u64 {
    x * x
}

fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

fn panics_on_seven(x: u32) -> u32 {
    assert!(x != 7, "seven is not allowed");
    x + 1
}

fn my_pid(_: u32) -> u32 {
    std::process::id()
}

/// Item 1 waits for the test's event (named after the pool's parent); the others return
/// at once.
fn waits_on_one(x: u32) -> u32 {
    if x == 1 {
        let name = format!("shmsync-test-pool-gate-{}", std::os::unix::process::parent_id());
        let gate = Event::open(&name).unwrap();
        assert!(gate.wait_timeout(Duration::from_secs(20)), "the gate never opened");
    }
    x
}

fn alive(pid: u32) -> bool {
    // Signal 0: whether the process exists (a zombie counts until reaped).
    let status = std::fs::read_to_string(format!("/proc/{pid}/stat"));
    status.is_ok_and(|s| !s.contains(") Z "))
}

#[test]
fn map_returns_every_result_in_order() {
    let pool = Pool::new(2).unwrap();
    let items: Vec<u64> = (0..100_000).collect();
    let squares = pool.map(square, &items).unwrap();
    assert_eq!(squares.len(), 100_000);
    assert!(squares.iter().enumerate().all(|(i, &s)| s == (i as u64) * (i as u64)));
    // Ordered imap agrees, and apply works on the same pool.
    let firsts: Vec<u64> = pool.imap(square, &items[..10]).unwrap().map(Result::unwrap).collect();
    assert_eq!(firsts, [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]);
    assert_eq!(pool.apply(square, 12).unwrap(), 144);
    assert!(pool.map(square, &[]).unwrap().is_empty());
}

#[test]
fn imap_unordered_yields_before_the_last_task_finishes() {
    let name = format!("shmsync-test-pool-gate-{}", std::process::id());
    let _cleanup = common::Remove::shm(&name);
    let gate = Event::create(&name).unwrap();
    let pool = Pool::builder().processes(2).chunksize(1).build().unwrap();
    let items: Vec<u32> = (0..8).collect();
    let mut results = pool.imap_unordered(waits_on_one, &items).unwrap();
    // Item 1 is blocked on the gate, yet results come.
    let (first, value) = results.next().unwrap().unwrap();
    assert_ne!(first, 1);
    assert_eq!(value, first as u32);
    assert!(!gate.is_set());
    gate.set();
    let mut seen: HashSet<usize> = results.map(|r| r.unwrap().0).collect();
    seen.insert(first);
    assert_eq!(seen, (0..8).collect());
}

#[test]
fn apply_async_and_get_timeout() {
    let pool = Pool::new(1).unwrap();
    let slow = pool.apply_async(sleep_ms, 300).unwrap();
    assert!(!slow.ready());
    assert!(matches!(slow.get_timeout(Duration::from_millis(10)), Err(PoolError::Timeout)));
    assert_eq!(slow.get_timeout(LIMIT).unwrap(), 300);
    let quick = pool.apply_async(square, 9).unwrap();
    assert_eq!(quick.get().unwrap(), 81);
}

#[test]
fn a_worker_killed_mid_task_fails_that_task_and_the_pool_goes_on() {
    let pool = Pool::new(2).unwrap();
    let doomed = pool.apply_async(sleep_ms, 30_000).unwrap();
    std::thread::sleep(Duration::from_millis(200)); // it is running now
    let before = pool.pids();
    let killed = Instant::now();
    for &pid in &before {
        let _ = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
    match doomed.get_timeout(LIMIT) {
        Err(PoolError::WorkerDied { items, pid }) => {
            assert_eq!(items, 0..1);
            assert!(before.contains(&pid));
        }
        other => panic!("expected WorkerDied, got {other:?}"),
    }
    let noticed = killed.elapsed();
    eprintln!("WorkerDied noticed {noticed:?} after the SIGKILL");
    assert!(noticed < Duration::from_secs(1), "noticed after {noticed:?}");
    // Replaced, and usable.
    let items: Vec<u64> = (0..1000).collect();
    assert_eq!(pool.map(square, &items).unwrap()[999], 998_001);
    let after = pool.pids();
    assert_eq!(after.len(), 2);
    assert!(after.iter().all(|p| !before.contains(p)));
}

#[test]
fn a_panicking_task_fails_alone_and_the_worker_survives() {
    let pool = Pool::builder().processes(2).chunksize(4).build().unwrap();
    let items: Vec<u32> = (0..20).collect();
    match pool.map(panics_on_seven, &items) {
        Err(PoolError::Panicked { index: 7, message }) => {
            assert!(message.contains("seven is not allowed"), "{message}")
        }
        other => panic!("expected Panicked, got {other:?}"),
    }
    let outcomes: Vec<_> = pool.imap(panics_on_seven, &items).unwrap().collect();
    assert_eq!(outcomes.len(), 20);
    for (i, o) in outcomes.iter().enumerate() {
        match (i, o) {
            (7, Err(PoolError::Panicked { index: 7, .. })) => {}
            (i, Ok(v)) if i != 7 => assert_eq!(*v, i as u32 + 1),
            other => panic!("unexpected {other:?}"),
        }
    }
    let pids = pool.pids();
    assert_eq!(pool.map(square, &[3, 4]).unwrap(), [9, 16]);
    assert_eq!(pool.pids(), pids, "no worker was replaced");
}

#[test]
fn max_tasks_per_child_recycles_workers() {
    let pool = Pool::builder().processes(1).max_tasks_per_child(2).chunksize(1).build().unwrap();
    let items = [0u32; 6];
    let pids: HashSet<u32> = pool.map(my_pid, &items).unwrap().into_iter().collect();
    assert_eq!(pids.len(), 3, "{pids:?}");
}

#[test]
fn close_refuses_new_work_and_join_finishes_the_old() {
    let pool = Pool::new(2).unwrap();
    let pending = pool.apply_async(sleep_ms, 100).unwrap();
    pool.close();
    assert!(matches!(pool.apply(square, 2), Err(PoolError::Closed)));
    let pids = pool.pids();
    pool.join().unwrap();
    assert_eq!(pending.get().unwrap(), 100);
    assert!(pids.iter().all(|&p| !alive(p)));
}

#[test]
fn workers_die_with_their_parent() {
    if role().is_some() {
        let pool = Pool::new(2).unwrap();
        // Both busy, so a worker mid-task must die too.
        let _a = pool.apply_async(sleep_ms, 60_000).unwrap();
        let _b = pool.apply_async(sleep_ms, 60_000).unwrap();
        let pids: Vec<String> = pool.pids().iter().map(u32::to_string).collect();
        common::report(&format!("pids={}", pids.join(",")));
        std::thread::sleep(LIMIT);
        return;
    }
    let shm_before = shm_listing();
    let mut parent = spawn("workers_die_with_their_parent", "parent", &[]);
    let pids: Vec<u32> =
        parent.expect("pids=", LIMIT).split(',').map(|p| p.parse().unwrap()).collect();
    assert_eq!(pids.len(), 2);
    assert!(pids.iter().all(|&p| alive(p)));
    parent.kill();
    let killed = Instant::now();
    while pids.iter().any(|&p| alive(p)) && killed.elapsed() < Duration::from_secs(1) {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(pids.iter().all(|&p| !alive(p)), "a worker outlived its parent by 1 s");
    assert_eq!(shm_listing(), shm_before, "the pool left something in /dev/shm");
}

fn shm_listing() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| !n.starts_with("shmsync-test-"))
        .collect();
    names.sort();
    names
}

#[test]
fn worker_names_and_initializer() {
    fn name_len(_: u32) -> u32 {
        let me = process::current_process();
        assert!(me.name().starts_with("PoolWorker-"), "{}", me.name());
        me.name().len() as u32
    }
    fn init() {
        // SAFETY: the worker is single-threaded when its initializer runs.
        unsafe { std::env::set_var("SHMSYNC_TEST_INITIALIZED", "yes") };
    }
    fn initialized(_: u32) -> u32 {
        u32::from(std::env::var("SHMSYNC_TEST_INITIALIZED").is_ok())
    }
    let pool = Pool::builder().processes(2).initializer(init).build().unwrap();
    assert!(pool.map(name_len, &[0, 0]).unwrap().iter().all(|&n| n >= 12));
    assert_eq!(pool.map(initialized, &[0, 0, 0]).unwrap(), [1, 1, 1]);
    let _ = Options::new();
}
