//! Kill loops for the Lock, the Condition and the Semaphore.

use shmsync::{Condition, Lock, LockError, LockGuard, Semaphore, Shared, TryLockError};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::board::{Board, now_ns};
use crate::fleet::{Fleet, Rng, pause, wait_until};
use crate::{HANG, Report, Run};

/// Waiters of the condition and semaphore scenarios.
const WORKERS: usize = 3;
/// Workers of the lock scenario: enough that some always sleep on the lock.
const LOCK_WORKERS: usize = 4;

fn env(key: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| panic!("started without {key}"))
}

/// The child processes of the three scenarios.
pub fn child(scenario: &str, role: &str, slot: usize) {
    let board = Shared::<Board>::open(&env("BOARD")).expect("open the board");
    match (scenario, role) {
        ("lock", "worker") => lock_worker(&board, slot),
        ("condition", "waiter") => condition_waiter(&board),
        ("semaphore", "waiter") => semaphore_waiter(&board),
        other => panic!("unknown role {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// Lock: three workers lock, update two words that must agree, unlock; any may be killed,
// holding the lock or waiting for it.

/// The critical section: the count and this slot's share of it must agree on entry
/// unless the previous holder died inside (then they are repaired).
fn critical(board: &Board, slot: usize, owner_died: bool) {
    let me = u64::from(std::process::id());
    let before = board.inside.swap(me, Ordering::AcqRel);
    let shares: u64 = board.per_worker.iter().map(|w| w.load(Ordering::Acquire)).sum();
    let count = board.counter.load(Ordering::Acquire);
    if owner_died {
        board.repaired.fetch_add(1, Ordering::Relaxed);
        board.counter.store(shares, Ordering::Release);
    } else if before != 0 || count != shares {
        // Two holders at once, or an update lost without OwnerDied.
        board.garbage.fetch_add(1, Ordering::Relaxed);
        board.counter.store(shares, Ordering::Release);
    }
    // Two separate stores with a pause between: a death here leaves them disagreeing.
    let count = board.counter.load(Ordering::Acquire);
    board.counter.store(count + 1, Ordering::Release);
    for _ in 0..50 {
        std::hint::spin_loop();
    }
    board.per_worker[slot].fetch_add(1, Ordering::AcqRel);
    board.inside.store(0, Ordering::Release);
    board.progress.fetch_add(1, Ordering::Release);
}

/// Lock/update/unlock cycles per round.
const CYCLES: u32 = 300;

/// Works in rounds: waits for the parent to start one, makes [`CYCLES`] locked updates,
/// and reports the round done. Between rounds the lock is quiet, so a waiter left asleep
/// on a free lock is not woken by the others' later traffic: it misses the round's end.
fn lock_worker(board: &Board, slot: usize) {
    let lock = Lock::open(&env("OBJ")).expect("open the lock");
    // The parent marked this slot done with the round it was started in.
    let mut done = board.round_done[slot].load(Ordering::Acquire);
    while !board.stopping() {
        let round = board.round.load(Ordering::Acquire);
        if round == done {
            std::thread::sleep(std::time::Duration::from_micros(50));
            continue;
        }
        for cycle in 0..CYCLES {
            if cycle % 16 == 15 {
                // Now and then a pause outside the lock, so that the others fall asleep
                // on it and wake-ups are handed over (and may be killed in flight).
                std::thread::sleep(std::time::Duration::from_micros(u64::from(cycle % 7)));
            }
            match lock.try_lock_for(HANG * 3) {
                Ok(guard) => {
                    critical(board, slot, false);
                    drop(guard);
                }
                Err(TryLockError::OwnerDied(mut guard)) => {
                    critical(board, slot, true);
                    guard.mark_consistent();
                }
                Err(TryLockError::WouldBlock) => {
                    board.hangs.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {
                    board.garbage.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        }
        done = round;
        board.round_done[slot].store(round, Ordering::Release);
    }
}

/// The lock's futex word, through a second mapping of its segment: the payload (after
/// the 128-byte header) starts with the `RawLock`, whose word comes first.
struct LockWord {
    map: memmap2::Mmap,
}

impl LockWord {
    fn open(name: &str) -> Self {
        let file = std::fs::File::open(std::path::Path::new("/dev/shm").join(name))
            .expect("open the lock's file");
        // SAFETY: a read-only view of the segment, read with atomic loads only.
        Self { map: unsafe { memmap2::Mmap::map(&file) }.expect("map the lock's file") }
    }

    fn load(&self) -> u32 {
        // SAFETY: offset 128 is 4-aligned and inside the mapping, which outlives this.
        let word = unsafe { &*(self.map.as_ptr().add(128) as *const AtomicU32) };
        word.load(Ordering::Acquire)
    }
}

const WAITERS: u32 = 1 << 31;
const TID: u32 = 0x3FFF_FFFF;

/// Watches the lock word for at most `limit` until an unlock wakes a sleeper (the word
/// had `WAITERS` and no longer has): the woken waiter has not run yet. Returns the owner
/// then (0 if free).
fn just_woken(word: &LockWord, limit: Duration) -> Option<u32> {
    let end = std::time::Instant::now() + limit;
    let mut before = word.load();
    while std::time::Instant::now() < end {
        let now = word.load();
        if before & WAITERS != 0 && now & WAITERS == 0 {
            return Some(now & TID);
        }
        before = now;
        std::hint::spin_loop();
    }
    None
}

pub fn lock(run: &Run) -> Report {
    let mut report = Report::new("lock");
    let (obj, board_name) = (format!("{}-lock", run.prefix), format!("{}-board", run.prefix));
    let lock = Lock::create(&obj).expect("create the lock");
    let board = Shared::<Board>::create(&board_name, |_| {}).expect("create the board");
    let mut fleet = Fleet::new("lock", &[("OBJ", &obj), ("BOARD", &board_name)], LOCK_WORKERS);
    for slot in 0..LOCK_WORKERS {
        fleet.spawn(slot, "worker");
    }
    let mut rng = Rng::new(run.seed);
    let word = LockWord::open(&obj);
    for _ in 0..run.kills {
        if report.gave_up() {
            break;
        }
        // A round: every worker makes its locked updates; one is killed part-way.
        let round = board.round.fetch_add(1, Ordering::AcqRel) + 1;
        pause(rng.pause(3_000));
        // A third of the kills aim at whoever is inside (it may have left by the kill), a
        // third at a waiter just chosen for a wake-up, the rest at random.
        let pid_slot =
            |pid: u64| (0..LOCK_WORKERS).find(|&s| fleet.pid(s).map(u64::from) == Some(pid));
        let mut aimed_at_woken = false;
        let slot = match rng.below(3) {
            0 => pid_slot(board.inside.load(Ordering::Acquire)),
            1 => just_woken(&word, Duration::from_millis(3)).and_then(|owner| {
                aimed_at_woken = true;
                // The woken waiter is one of the others, not yet running: pick one.
                let others: Vec<usize> = (0..LOCK_WORKERS)
                    .filter(|&s| fleet.pid(s).map(u64::from) != Some(u64::from(owner)))
                    .collect();
                others.get(rng.below(others.len() as u64) as usize).copied()
            }),
            _ => None,
        }
        .unwrap_or_else(|| rng.below(LOCK_WORKERS as u64) as usize);
        let victim = u64::from(fleet.pid(slot).expect("a worker in every slot"));
        let holder = board.inside.load(Ordering::Acquire) == victim;
        let before = board.progress.load(Ordering::Acquire);
        let t = now_ns();
        fleet.kill(slot);
        report.killed(match (holder, aimed_at_woken) {
            (true, _) => "holders",
            (false, true) => "waiters just woken (1 in 3 the woken one)",
            (false, false) => "others",
        });
        // The next acquisition by a survivor is the recovery (if the round goes on).
        let finished = |s: usize| board.round_done[s].load(Ordering::Acquire) >= round;
        let over = || (0..LOCK_WORKERS).all(|s| s == slot || finished(s));
        if !over() && wait_until(HANG, || board.progress.load(Ordering::Acquire) > before) {
            report.recoveries.push(now_ns() - t);
        }
        // Then every survivor must finish the round: a waiter left asleep on a free lock
        // would not, the lock being quiet once the others are done.
        if !wait_until(HANG, over) {
            eprintln!("chaos lock: a survivor did not finish its round in {HANG:?}: {lock:?}");
            report.hangs += 1;
        }
        board.round_done[slot].store(round, Ordering::Release);
        fleet.spawn(slot, "worker");
    }
    board.stop.store(1, Ordering::Release);
    report.hangs += fleet.finish(HANG * 4);
    // The final state: the two words agree (after a last repair if a holder died).
    match lock.try_lock_for(HANG) {
        Ok(_) => {}
        Err(TryLockError::OwnerDied(mut g)) => {
            critical(&board, 0, true);
            g.mark_consistent();
        }
        Err(_) => report.hangs += 1,
    }
    let shares: u64 = board.per_worker.iter().map(|w| w.load(Ordering::Acquire)).sum();
    if board.counter.load(Ordering::Acquire) != shares {
        report.garbage += 1;
    }
    report.operations = board.progress.load(Ordering::Acquire);
    report.hangs += board.hangs.load(Ordering::Acquire);
    report.garbage += board.garbage.load(Ordering::Acquire);
    report.notes = format!(
        "count={} owner_died_repairs={}",
        board.counter.load(Ordering::Acquire),
        board.repaired.load(Ordering::Acquire)
    );
    drop(fleet);
    let _ = Lock::unlink(&obj);
    let _ = Shared::<Board>::unlink(&board_name);
    report
}

// ---------------------------------------------------------------------------------------
// Condition: the parent makes one token at a time and notifies one waiter; a waiter is
// killed right after, often the one just woken.

/// Takes the condition's lock, repairing the token counts after a holder's death.
fn take<'a>(cond: &'a Condition, board: &Board) -> Option<LockGuard<'a>> {
    match cond.lock() {
        Ok(g) => Some(g),
        Err(LockError::OwnerDied(mut g)) => {
            repair_tokens(board);
            // The dead one may have taken a notification with it: wake everyone to look.
            cond.notify_all();
            g.mark_consistent();
            Some(g)
        }
        Err(_) => {
            board.garbage.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// After a death between taking a token and counting it: what was produced and is not
/// waiting was consumed.
fn repair_tokens(board: &Board) {
    board.repaired.fetch_add(1, Ordering::Relaxed);
    let produced = board.produced.load(Ordering::Acquire);
    let tokens = board.tokens.load(Ordering::Acquire);
    board.consumed.store(produced - tokens.min(produced), Ordering::Release);
}

fn condition_waiter(board: &Board) {
    let cond = Condition::open(&env("OBJ")).expect("open the condition");
    while !board.stopping() {
        let Some(mut g) = take(&cond, board) else { return };
        while board.tokens.load(Ordering::Acquire) == 0 && !board.stopping() {
            // Longer than the parent's bound: a notification lost with a killed waiter
            // must show as a hang, not be papered over by this timeout.
            g = match cond.wait_timeout(g, HANG * 3) {
                Ok((g, _)) => g,
                Err(LockError::OwnerDied((mut g, _))) => {
                    repair_tokens(board);
                    cond.notify_all();
                    g.mark_consistent();
                    g
                }
                Err(_) => {
                    board.garbage.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            };
        }
        if board.tokens.load(Ordering::Acquire) > 0 {
            board.tokens.fetch_sub(1, Ordering::AcqRel);
            board.consumed.fetch_add(1, Ordering::AcqRel);
            board.progress.fetch_add(1, Ordering::Release);
        }
        drop(g);
    }
}

pub fn condition(run: &Run) -> Report {
    let mut report = Report::new("condition");
    let (obj, board_name) = (format!("{}-cond", run.prefix), format!("{}-board", run.prefix));
    let cond = Condition::create(&obj).expect("create the condition");
    let board = Shared::<Board>::create(&board_name, |_| {}).expect("create the board");
    let mut fleet = Fleet::new("condition", &[("OBJ", &obj), ("BOARD", &board_name)], WORKERS);
    for slot in 0..WORKERS {
        fleet.spawn(slot, "waiter");
    }
    let mut rng = Rng::new(run.seed);
    for _ in 0..run.kills {
        if report.gave_up() {
            break;
        }
        // Let the waiters fall asleep, then hand one token to one of them.
        pause(rng.pause(3_000));
        {
            let Some(_g) = take(&cond, &board) else { break };
            board.tokens.fetch_add(1, Ordering::AcqRel);
            board.produced.fetch_add(1, Ordering::AcqRel);
            cond.notify_one();
        }
        // Kill a waiter at once or soon: often the one woken, before it took the token.
        pause(rng.pause(150));
        let slot = rng.below(WORKERS as u64) as usize;
        let outstanding = board.tokens.load(Ordering::Acquire) > 0;
        let t = now_ns();
        fleet.kill(slot);
        report.killed(if outstanding { "waiters, token pending" } else { "waiters" });
        if wait_until(HANG, || board.tokens.load(Ordering::Acquire) == 0) {
            if outstanding {
                report.recoveries.push(now_ns() - t);
            }
        } else {
            eprintln!("chaos condition: a token untaken for {HANG:?}: {cond:?}");
            report.hangs += 1;
            cond.notify_all();
        }
        fleet.spawn(slot, "waiter");
    }
    board.stop.store(1, Ordering::Release);
    cond.notify_all();
    report.hangs += fleet.finish(HANG * 3);
    report.operations = board.produced.load(Ordering::Acquire);
    report.hangs += board.hangs.load(Ordering::Acquire);
    report.garbage += board.garbage.load(Ordering::Acquire);
    let produced = board.produced.load(Ordering::Acquire);
    let accounted = board.consumed.load(Ordering::Acquire) + board.tokens.load(Ordering::Acquire);
    // A waiter killed between taking a token and counting it, while the lock was held,
    // is repaired by the next holder; nothing else may differ.
    if produced != accounted {
        report.lost = produced.abs_diff(accounted);
    }
    report.notes = format!("owner_died_repairs={}", board.repaired.load(Ordering::Acquire));
    drop(fleet);
    let _ = Condition::unlink(&obj);
    let _ = Shared::<Board>::unlink(&board_name);
    report
}

// ---------------------------------------------------------------------------------------
// Semaphore: the parent releases one permit at a time; a waiter is killed right after.

fn semaphore_waiter(board: &Board) {
    let sem = Semaphore::open(&env("OBJ")).expect("open the semaphore");
    while !board.stopping() {
        // Longer than the parent's bound (see `condition_waiter`).
        if sem.acquire_timeout(HANG * 3) {
            board.consumed.fetch_add(1, Ordering::AcqRel);
            board.progress.fetch_add(1, Ordering::Release);
        }
    }
}

pub fn semaphore(run: &Run) -> Report {
    let mut report = Report::new("semaphore");
    let (obj, board_name) = (format!("{}-sem", run.prefix), format!("{}-board", run.prefix));
    let sem = Semaphore::create(&obj, 0).expect("create the semaphore");
    let board = Shared::<Board>::create(&board_name, |_| {}).expect("create the board");
    let mut fleet = Fleet::new("semaphore", &[("OBJ", &obj), ("BOARD", &board_name)], WORKERS);
    for slot in 0..WORKERS {
        fleet.spawn(slot, "waiter");
    }
    let mut rng = Rng::new(run.seed);
    let mut released = 0u64;
    for _ in 0..run.kills {
        if report.gave_up() {
            break;
        }
        pause(rng.pause(3_000));
        sem.release().expect("an unbounded semaphore");
        released += 1;
        pause(rng.pause(150));
        let slot = rng.below(WORKERS as u64) as usize;
        let outstanding = sem.value() > 0;
        let t = now_ns();
        fleet.kill(slot);
        report.killed(if outstanding { "waiters, permit pending" } else { "waiters" });
        if wait_until(HANG, || sem.value() == 0) {
            if outstanding {
                report.recoveries.push(now_ns() - t);
            }
        } else {
            eprintln!("chaos semaphore: a permit untaken for {HANG:?}: {sem:?}");
            report.hangs += 1;
        }
        fleet.spawn(slot, "waiter");
    }
    board.stop.store(1, Ordering::Release);
    for _ in 0..WORKERS {
        sem.release().expect("an unbounded semaphore"); // wake the waiters to stop
        released += 1;
    }
    report.hangs += fleet.finish(HANG * 3);
    report.operations = released;
    report.hangs += board.hangs.load(Ordering::Acquire);
    // A waiter killed between taking a permit and counting it loses that permit (as
    // with POSIX semaphores): at most one per kill.
    let accounted = board.consumed.load(Ordering::Acquire) + u64::from(sem.value());
    report.lost = released.saturating_sub(accounted);
    report.lost_allowed = report.kills;
    if accounted > released {
        report.duplicated = accounted - released;
    }
    drop(fleet);
    let _ = Semaphore::unlink(&obj);
    let _ = Shared::<Board>::unlink(&board_name);
    report
}
