//! Lock, Event, Condition and Semaphore across processes, each in a small scenario from
//! Python's `multiprocessing` guide.
//!
//! - Lock: three children print their lines under one lock, so lines never mix.
//! - Event: three children wait for the parent's signal, then report.
//! - Condition: a child waits until the parent has put three items in stock.
//! - Semaphore: four children share two permits; never more than two are inside.
//!
//! Run: `cargo run --example sync_primitives`.
#![allow(clippy::disallowed_types)] // the crate's own lint against std atomics; users use them

#[path = "support/proc.rs"]
mod proc;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use shmsync::{Condition, Event, Lock, Semaphore, Shared, ShmSafe};

/// Counters the scenarios share (atomics: every process reads and writes them).
#[repr(C)]
struct Board {
    stock: AtomicU64,
    inside: AtomicU64,
    most_inside: AtomicU64,
    reported: AtomicU64,
}
// SAFETY: repr(C), atomics only: every bit pattern is valid, shared state is atomic.
unsafe impl ShmSafe for Board {}

const HOLDER_DIED: &str = "a process died holding the lock";
const LIMIT: Duration = Duration::from_secs(30);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    match proc::role().as_deref() {
        Some(role) => child(role),
        None => parent(),
    }
}

fn child(role: &str) -> Result<(), Box<dyn std::error::Error>> {
    let board = Shared::<Board>::open(&proc::arg("BOARD"))?;
    let me = proc::arg("ID");
    match role {
        "lock" => {
            let lock = Lock::open(&proc::arg("OBJECT"))?;
            let _guard = lock.lock().expect(HOLDER_DIED);
            for line in 0..3 {
                println!("  child {me}: line {line}, under the lock");
            }
        }
        "event" => {
            let event = Event::open(&proc::arg("OBJECT"))?;
            assert!(event.wait_timeout(LIMIT), "the parent never set the event");
            board.reported.fetch_add(1, Ordering::SeqCst);
            println!("  child {me}: the event is set");
        }
        "condition" => {
            let cond = Condition::open(&proc::arg("OBJECT"))?;
            let guard = cond.lock().expect(HOLDER_DIED);
            let _guard = cond
                .wait_while(guard, || board.stock.load(Ordering::SeqCst) < 3)
                .expect(HOLDER_DIED);
            let taken = board.stock.swap(0, Ordering::SeqCst);
            println!("  child {me}: took {taken} items once there were 3");
        }
        "semaphore" => {
            let permits = Semaphore::open(&proc::arg("OBJECT"))?;
            for _ in 0..20 {
                assert!(permits.acquire_timeout(LIMIT), "no permit came back");
                let now = board.inside.fetch_add(1, Ordering::SeqCst) + 1;
                board.most_inside.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(Duration::from_micros(200));
                board.inside.fetch_sub(1, Ordering::SeqCst);
                permits.release()?;
            }
        }
        other => panic!("unknown role {other}"),
    }
    Ok(())
}

/// Starts `count` children in `role` on the object `object`, and waits for them.
fn children(role: &str, count: usize, object: &str, board: &str, meanwhile: impl FnOnce()) {
    let kids: Vec<_> = (0..count)
        .map(|id| {
            let id = id.to_string();
            proc::start(role, &[("OBJECT", object), ("BOARD", board), ("ID", &id)])
        })
        .collect();
    meanwhile();
    for kid in kids {
        proc::join(kid);
    }
}

fn parent() -> Result<(), Box<dyn std::error::Error>> {
    let board_name = proc::name("board");
    let board = Shared::<Board>::create(&board_name, |_| {})?;

    println!("Lock: three children print under one lock");
    let lock = proc::name("lock");
    let _l = Lock::create(&lock)?;
    children("lock", 3, &lock, &board_name, || {});
    Lock::unlink(&lock)?;

    println!("Event: three children wait for the signal");
    let event_name = proc::name("event");
    let event = Event::create(&event_name)?;
    children("event", 3, &event_name, &board_name, || {
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(board.reported.load(Ordering::SeqCst), 0, "nobody passed early");
        println!("  parent: setting the event");
        event.set();
    });
    assert_eq!(board.reported.load(Ordering::SeqCst), 3);
    Event::unlink(&event_name)?;

    println!("Condition: a child waits for three items");
    let cond_name = proc::name("condition");
    let cond = Condition::create(&cond_name)?;
    children("condition", 1, &cond_name, &board_name, || {
        for _ in 0..3 {
            std::thread::sleep(Duration::from_millis(30));
            let _guard = cond.lock().expect(HOLDER_DIED);
            let now = board.stock.fetch_add(1, Ordering::SeqCst) + 1;
            println!("  parent: {now} item(s) in stock");
            cond.notify_all();
        }
    });
    assert_eq!(board.stock.load(Ordering::SeqCst), 0, "the child took the stock");
    Condition::unlink(&cond_name)?;

    println!("Semaphore: four children share two permits");
    let sem_name = proc::name("semaphore");
    let _s = Semaphore::create(&sem_name, 2)?;
    children("semaphore", 4, &sem_name, &board_name, || {});
    let most = board.most_inside.load(Ordering::SeqCst);
    println!("  at most {most} children were inside at once");
    assert!((1..=2).contains(&most), "the semaphore let {most} in");
    Semaphore::unlink(&sem_name)?;

    Shared::<Board>::unlink(&board_name)?;
    Ok(())
}
