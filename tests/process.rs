//! `Process` across real processes: the child is this test binary, which runs its task
//! before libtest's `main` starts.

use std::time::{Duration, Instant};

use shmsync::process::{self, Process, ProcessError};

const LIMIT: Duration = Duration::from_secs(20);

fn square(x: u64) -> u64 {
    x * x
}

fn sleep_ms(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

fn panics(code: u32) -> u32 {
    panic!("task {code} gave up");
}

fn exits(code: i32) -> u32 {
    std::process::exit(code)
}

fn my_name(_: ()) -> [u8; 16] {
    let mut out = [0u8; 16];
    let me = process::current_process();
    let n = me.name().len().min(16);
    out[..n].copy_from_slice(&me.name().as_bytes()[..n]);
    out
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, shmsync::Pod, shmsync::Zeroable)]
struct Point {
    x: f64,
    y: f64,
}

fn norm(p: Point) -> f64 {
    (p.x * p.x + p.y * p.y).sqrt()
}

#[test]
fn spawn_and_join_return_the_result() {
    let p = Process::spawn(square, 7u64).unwrap();
    assert_ne!(p.pid(), std::process::id());
    assert!(p.name().starts_with("Process-"), "{}", p.name());
    assert_eq!(p.join_timeout(LIMIT).unwrap(), 49);
    assert_eq!(p.exitcode(), Some(0));
    assert!(!p.is_alive());
    // A struct of the caller's own, and a closure that captures nothing.
    let q = Process::spawn(norm, Point { x: 3.0, y: 4.0 }).unwrap();
    assert_eq!(q.join_timeout(LIMIT).unwrap(), 5.0);
    let r = Process::spawn(|v: [u32; 3]| v.iter().sum::<u32>(), [1, 2, 3]).unwrap();
    assert_eq!(r.join_timeout(LIMIT).unwrap(), 6);
}

#[test]
fn the_builder_names_the_child_and_the_child_knows_it() {
    let p = Process::builder().name("writer").spawn(my_name, ()).unwrap();
    assert_eq!(p.name(), "writer");
    assert_eq!(&p.join_timeout(LIMIT).unwrap()[..6], b"writer");
    assert_eq!(process::current_process().name(), "MainProcess");
}

#[test]
fn join_timeout_gives_up_and_the_child_lives_on() {
    let p = Process::spawn(sleep_ms, 600u64).unwrap();
    let started = Instant::now();
    assert!(matches!(p.join_timeout(Duration::from_millis(50)), Err(ProcessError::Timeout)));
    assert!(started.elapsed() < Duration::from_millis(500));
    assert!(p.is_alive());
    assert_eq!(p.exitcode(), None);
    assert_eq!(p.join_timeout(LIMIT).unwrap(), 600);
}

#[test]
fn terminate_and_kill_give_minus_the_signal() {
    let p = Process::spawn(sleep_ms, 30_000u64).unwrap();
    p.terminate();
    assert!(matches!(p.join_timeout(LIMIT), Err(ProcessError::Killed { signal: 15 })));
    assert_eq!(p.exitcode(), Some(-15));
    let q = Process::spawn(sleep_ms, 30_000u64).unwrap();
    q.kill();
    assert!(matches!(q.join_timeout(LIMIT), Err(ProcessError::Killed { signal: 9 })));
    assert_eq!(q.exitcode(), Some(-9));
}

#[test]
fn a_panic_in_the_child_comes_back_with_its_message() {
    let p = Process::spawn(panics, 42u32).unwrap();
    match p.join_timeout(LIMIT) {
        Err(ProcessError::Panicked { message }) => assert_eq!(message, "task 42 gave up"),
        other => panic!("{other:?}"),
    }
    let q = Process::spawn(exits, 3).unwrap();
    assert!(matches!(q.join_timeout(LIMIT), Err(ProcessError::Exited { code: 3 })));
    assert_eq!(q.exitcode(), Some(3));
}

#[test]
fn orders_for_another_binary_are_refused() {
    // The orders name this binary's identity; forged ones must not run anything.
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .env("SHMSYNC_PROCESS_ORDERS", "shmsync-orders-1 1 2 3 4 5 00 ")
        .arg("--list")
        .output()
        .unwrap();
    assert_eq!(status.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&status.stderr);
    assert!(stderr.contains("refuses it: the orders were written for another binary"), "{stderr}");
}

#[test]
fn cpu_count_is_what_this_process_may_use() {
    let n = process::cpu_count();
    assert!(n >= 1);
    assert_eq!(n, std::thread::available_parallelism().unwrap().get());
}

/// With the `serde` feature: jobs of any serde type, wrapped in `Serde`.
#[cfg(feature = "serde")]
mod serde_jobs {
    use super::LIMIT;
    use shmsync::Pool;
    use shmsync::process::{Process, Serde};

    fn describe(Serde((name, values)): Serde<(String, Vec<u32>)>) -> Serde<String> {
        Serde(format!("{name}: {} values, sum {}", values.len(), values.iter().sum::<u32>()))
    }

    #[test]
    fn a_job_carries_a_string_and_a_vec() {
        let job = Serde(("ticks".to_string(), vec![1u32, 2, 3, 4]));
        let p = Process::spawn(describe, job.clone()).unwrap();
        assert_eq!(p.join_timeout(LIMIT).unwrap().0, "ticks: 4 values, sum 10");
        let pool = Pool::new(2).unwrap();
        assert_eq!(pool.apply(describe, job).unwrap().0, "ticks: 4 values, sum 10");
        let jobs: Vec<_> =
            (0..10u32).map(|i| Serde((format!("j{i}"), vec![i; i as usize]))).collect();
        let out = pool.map(describe, &jobs).unwrap();
        assert_eq!(out[3].0, "j3: 3 values, sum 9");
    }
}
