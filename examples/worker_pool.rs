//! Python's `Pool(3).map(square, range(N))`: a pool of worker processes, the squares back
//! in order, and a worker killed mid-task that costs only its own task.
//!
//! Run: `cargo run --example worker_pool`.

use shmsync::process::{self, Pool, PoolError};
use std::time::Duration;

const NUMBERS: u64 = 1000;

fn square(n: u64) -> u64 {
    n * n
}

/// Reports which worker ran it, so the output shows the work spread.
fn worker_of(_: u64) -> u32 {
    std::process::id()
}

fn nap(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    process::init(); // in a worker: serves the pool and never returns

    let pool = Pool::new(3)?;
    let numbers: Vec<u64> = (0..NUMBERS).collect();
    let squares = pool.map(square, &numbers)?;
    assert!(squares.iter().enumerate().all(|(n, &s)| s == square(n as u64)));
    println!(
        "squares of 0..{NUMBERS}: {:?} ... {:?}",
        &squares[..5],
        &squares[squares.len() - 2..]
    );

    let mut ran_on: Vec<u32> = pool.map(worker_of, &numbers)?;
    ran_on.sort_unstable();
    ran_on.dedup();
    println!("{} numbers ran on {} worker processes", numbers.len(), ran_on.len());

    // A worker killed in the middle of a task: that task fails, the pool goes on.
    let doomed = pool.apply_async(nap, 60_000)?;
    std::thread::sleep(Duration::from_millis(100));
    for pid in pool.pids() {
        let _ = std::process::Command::new("kill").args(["-9", &pid.to_string()]).status();
    }
    match doomed.get_timeout(Duration::from_secs(10)) {
        Err(PoolError::WorkerDied { pid, .. }) => {
            println!("worker {pid} died mid-task: WorkerDied")
        }
        other => panic!("expected WorkerDied, got {other:?}"),
    }
    assert_eq!(pool.apply(square, 12)?, 144);
    println!("the pool replaced its workers and carries on: square(12) = 144");
    Ok(())
}
