//! Python's `Pool.map(square, range(N))`, with worker processes and two MPMC queues:
//! one of tasks, one of results.
//!
//! The parent creates both queues, starts the workers, pushes every number and then one
//! "stop" task per worker, and collects the squares (in any order: the workers race).
//! Run: `cargo run --example worker_pool`.

#[path = "support/proc.rs"]
mod proc;

use shmsync::mpmc::Queue;

const WORKERS: usize = 3;
const NUMBERS: u64 = 1000;
/// A task no number uses: tells a worker to leave.
const STOP: u64 = u64::MAX;

/// A result: the number and its square, so the parent can check each.
#[repr(C)]
#[derive(Clone, Copy, shmsync::Pod, shmsync::Zeroable)]
struct Squared {
    n: u64,
    square: u64,
}

fn square(n: u64) -> u64 {
    n * n
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if proc::role().as_deref() == Some("worker") {
        let tasks = Queue::<u64>::open(&proc::arg("TASKS"))?;
        let results = Queue::<Squared>::open(&proc::arg("RESULTS"))?;
        let mut done = 0;
        loop {
            let n = tasks.pop()?;
            if n == STOP {
                break;
            }
            results.push(Squared { n, square: square(n) })?;
            done += 1;
        }
        println!("worker {} squared {done} numbers", std::process::id());
        return Ok(());
    }
    let (task_name, result_name) = (proc::name("tasks"), proc::name("results"));
    let tasks = Queue::<u64>::create(&task_name, 64)?;
    let results = Queue::<Squared>::create(&result_name, 64)?;
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| proc::start("worker", &[("TASKS", &task_name), ("RESULTS", &result_name)]))
        .collect();

    // Feed the tasks from a thread while this one collects: both queues are bounded.
    let mut squares = vec![None; NUMBERS as usize];
    std::thread::scope(|s| -> Result<(), shmsync::PushError<u64>> {
        s.spawn(|| {
            for n in 0..NUMBERS {
                tasks.push(n).unwrap();
            }
            for _ in 0..WORKERS {
                tasks.push(STOP).unwrap();
            }
        });
        for _ in 0..NUMBERS {
            let r = results.pop().expect("a result");
            assert!(squares[r.n as usize].replace(r.square).is_none(), "{} twice", r.n);
        }
        Ok(())
    })?;
    for w in workers {
        proc::join(w);
    }
    let squares: Vec<u64> = squares.into_iter().map(|s| s.expect("every number")).collect();
    assert!(squares.iter().enumerate().all(|(n, &s)| s == square(n as u64)));
    println!(
        "squares of 0..{NUMBERS}: {:?} ... {:?}",
        &squares[..5],
        &squares[squares.len() - 2..]
    );
    Queue::<u64>::unlink(&task_name)?;
    Queue::<Squared>::unlink(&result_name)?;
    Ok(())
}
