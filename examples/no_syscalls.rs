//! Uncontended operations make no system call.
//!
//! Creates a Lock, an Event, a Condition and a Semaphore, then runs their uncontended
//! paths many times, and a `WaitSet` over the event and the semaphore whose `wait` finds
//! them ready. Run it under `strace` to see that none of these loops enters the
//! kernel (the only futex-free syscalls are the set-up: shm files, mmap, and one
//! `get_robust_list` for the thread):
//!
//! ```text
//! cargo build --release --example no_syscalls
//! strace -f -c -e trace=futex target/release/examples/no_syscalls
//! ```

use std::time::Instant;

use shmsync::{Condition, Event, Lock, Semaphore, WaitSet};

const ROUNDS: u32 = 200_000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tag = std::process::id();
    let names = [
        format!("no-syscalls-lock-{tag}"),
        format!("no-syscalls-event-{tag}"),
        format!("no-syscalls-cond-{tag}"),
        format!("no-syscalls-sem-{tag}"),
    ];
    let lock = Lock::create(&names[0])?;
    let event = Event::create(&names[1])?;
    let cond = Condition::create(&names[2])?;
    let sem = Semaphore::create_bounded(&names[3], 1, 1)?;
    // The names can go now: the handles keep the segments mapped.
    Lock::unlink(&names[0])?;
    Event::unlink(&names[1])?;
    Condition::unlink(&names[2])?;
    Semaphore::unlink(&names[3])?;

    let mut set = WaitSet::new();
    let (set_key, permit_key) = (set.add_event(&event)?, set.add_acquire(&sem)?);

    let start = Instant::now();
    for _ in 0..ROUNDS {
        drop(lock.lock().map_err(|e| e.to_string())?);
        event.set();
        assert!(event.is_set());
        // Both entries ready: the wait returns at once, without entering the kernel.
        let ready = set.wait()?;
        assert!(ready.contains(&set_key) && ready.contains(&permit_key));
        event.clear();
        cond.notify_one();
        cond.notify_all();
        drop(cond.lock().map_err(|e| e.to_string())?);
        sem.acquire();
        sem.release()?;
    }
    let per_round = start.elapsed() / ROUNDS;
    println!(
        "{ROUNDS} rounds of lock+unlock, set+clear, a wait set's wait, notify_one+notify_all, \
         condition lock, acquire+release: {per_round:?} per round, no syscall expected"
    );
    Ok(())
}
