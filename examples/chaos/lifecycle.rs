//! The kill loop of the lifecycle: workers create, open, replace, use and drop objects
//! (with `Stale::Replace`, the default, and through `Scope`s) while the parent runs `gc`
//! without pause, and are killed at random instants: mid-create, mid-replace, holding a
//! gate, anywhere.
//!
//! The rule: no worker operation fails (every `open_or_create`, push, pop and scoped
//! create succeeds, every value popped is one some worker pushed), the survivors keep
//! going after each kill, `gc` never takes an object a live process holds (that would
//! show as a failed operation), and at the end, with every worker gone, one `gc` leaves
//! the directory empty: a creator killed at any instant leaves nothing `gc` cannot take
//! (it makes its file unnamed, `O_TMPFILE`, and names it once it holds its lock). Empty
//! or zeroed files left over are counted apart, and count as lost too.

use shmsync::{Event, Options, Scope, Shared, mpmc};
use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::board::{Board, Item};
use crate::fleet::{Fleet, Rng};
use crate::{HANG, Report, Run};

/// Workers killed and replaced at random.
const WORKERS: usize = 3;
/// The names the workers share: few, so that they meet on every one.
const NAMES: u64 = 4;

fn env(key: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| panic!("started without {key}"))
}

fn objects(dir: &str) -> Options {
    // Long enough for a replacement or a collection in progress, short of a hang.
    Options::new().dir(dir).open_timeout(HANG)
}

/// A worker: opens (or creates, or replaces) a queue by name, pushes and pops a value,
/// now and then creates an event through a scope, drops everything, and again.
pub fn child(slot: usize) {
    let board = Shared::<Board>::open(&env("BOARD")).expect("open the board");
    let dir = env("OBJ");
    let opts = objects(&dir);
    let mut rng = Rng::new(u64::from(std::process::id()) << 8 | slot as u64);
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        eprintln!("chaos lifecycle: a worker's {what} failed: {e}");
        board.garbage.fetch_add(1, Ordering::Relaxed);
    };
    let mut n = 0u64;
    while !board.stopping() {
        let name = format!("q{}", rng.below(NAMES));
        match mpmc::Queue::<Item>::open_or_create_with(&name, 16, &opts) {
            Ok(q) => {
                let v = (u64::from(std::process::id()) << 32) | n;
                if q.try_push(Item::new(v)).is_err() {
                    let _ = q.try_pop(); // full: make room
                }
                match q.try_pop() {
                    Ok(item) if item.value().is_none() => fail("pop", &"a torn value"),
                    // Empty: another worker took ours. Disconnected: that, and every other
                    // handle that pushed is gone (killed or dropped): both are answers.
                    Ok(_) | Err(shmsync::PopError::Empty | shmsync::PopError::Disconnected) => {}
                    Err(e) => fail("pop", &e),
                }
            }
            Err(e) => fail("open_or_create", &e),
        }
        if rng.below(8) == 0 {
            let owner = Scope::new();
            let scoped = format!("scoped-{}-{n}", std::process::id());
            match Event::create_with(&scoped, &opts.clone().scope(&owner)) {
                Ok(e) => e.set(),
                Err(e) => fail("scoped create", &e),
            }
        }
        board.progress.fetch_add(1, Ordering::Release);
        n += 1;
    }
}

pub fn lifecycle(run: &Run) -> Report {
    let mut report = Report::new("lifecycle");
    let board_name = format!("{}-board", run.prefix);
    let dir = std::path::Path::new("/dev/shm").join(format!("{}-objects", run.prefix));
    std::fs::create_dir_all(&dir).expect("make the objects' directory");
    let dir_s = dir.to_str().expect("a UTF-8 path").to_owned();
    let board = Shared::<Board>::create(&board_name, |_| {}).expect("create the board");
    let mut fleet = Fleet::new("lifecycle", &[("BOARD", &board_name), ("OBJ", &dir_s)], WORKERS);
    for slot in 0..WORKERS {
        fleet.spawn(slot, "worker");
    }
    // The collector: gc without pause, for as long as the kills go on.
    let collecting = std::sync::atomic::AtomicBool::new(true);
    let (passes, removed) = std::thread::scope(|s| {
        let collector = s.spawn(|| {
            let (mut passes, mut removed) = (0u64, 0u64);
            let opts = Options::new().dir(&dir);
            while collecting.load(Ordering::Acquire) {
                removed += shmsync::gc(&opts).map_or(0, |r| r.len() as u64);
                passes += 1;
            }
            (passes, removed)
        });
        let mut rng = Rng::new(run.seed);
        for _ in 0..run.kills {
            if report.gave_up() {
                break;
            }
            let slot = rng.below(WORKERS as u64) as usize;
            crate::fleet::pause(rng.pause(3_000));
            let progress = board.progress.load(Ordering::Acquire);
            fleet.kill(slot);
            report.killed("worker");
            let t = Instant::now();
            // The survivors must keep going: a dead worker's gate, half-made file or
            // stale queue must not hold them up past the open timeout.
            if crate::fleet::wait_until(HANG * 2, || {
                board.progress.load(Ordering::Acquire) > progress + 4
            }) {
                report.recoveries.push(t.elapsed().as_nanos() as u64);
            } else {
                report.hangs += 1;
            }
            fleet.spawn(slot, "worker");
        }
        collecting.store(false, Ordering::Release);
        collector.join().unwrap_or((0, 0))
    });
    board.stop.store(1, Ordering::Release);
    report.hangs += fleet.finish(HANG * 2);
    report.garbage += board.garbage.load(Ordering::Acquire);
    report.operations = board.progress.load(Ordering::Acquire);

    // Everyone is gone: one collection takes every object (after the second `gc` gives
    // unfinished files, in case their creator is only slow).
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let last = shmsync::gc(&Options::new().dir(&dir)).map_or(0, |r| r.len());
    let mut unborn = 0;
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let len = entry.metadata().map_or(0, |m| m.len());
        let zero = std::fs::read(entry.path()).is_ok_and(|b| b.iter().all(|&x| x == 0));
        if len == 0 || zero {
            if std::env::var_os("CHAOS_DEBUG").is_some() {
                eprintln!("unborn: {:?} len {len}", entry.file_name());
            }
            unborn += 1;
            report.lost += 1;
        } else {
            eprintln!("chaos lifecycle: left after the last gc: {:?}", entry.file_name());
            report.lost += 1; // a leak: shmsync's object that nobody can collect
        }
    }
    report.notes = format!(
        "gc passes={passes} removed={removed} last gc removed={last} unborn files left={unborn}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    drop(board);
    let _ = Shared::<Board>::unlink(&board_name);
    report
}
