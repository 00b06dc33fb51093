//! Kill loops for the List and the Dict: workers change them without pause and are
//! killed at random instants; after each kill the dead worker's entries are exactly as
//! before or as after its last operation, and `check()` passes.
//!
//! Each worker incarnation owns the entries tagged with its number and runs a fixed
//! sequence: step `2i` adds entry `i`, step `2i + 1` removes entry `i - WINDOW` (a list
//! worker adds at a random place and removes with `remove` or `swap_remove` under one
//! `lock()`). It counts every step that returned in `per_worker[slot]`, so after a kill
//! the parent knows the entries the worker had when it died, give or take the one step in
//! flight. Dict workers also `update` one shared counter (counted in `produced` once it
//! returned) and read the other workers' entries without a lock: a value that is not the
//! one its key was given counts as garbage.

use shmsync::{Dict, List, Shared};
use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::board::Board;
use crate::fleet::{Fleet, Rng};
use crate::{HANG, Report, Run};

/// Workers killed and replaced at random.
const WORKERS: usize = 3;
/// The entries a worker keeps: it removes entry `i - WINDOW` after adding entry `i`.
const WINDOW: u64 = 12;
/// The dict key every worker `update`s.
const COUNTER: u64 = u64::MAX;

fn env(key: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| panic!("started without {key}"))
}

/// Entry `i` of incarnation `inc`: the key (list value) and the dict value.
fn entry(inc: u64, i: u64) -> (u64, u64) {
    let key = (inc << 32) | i;
    (key, key.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5bd1_e995)
}

/// The entries incarnation's worker has after `done` steps.
fn expected(done: u64) -> BTreeSet<u64> {
    let added = done.div_ceil(2); // steps 0, 2, .. 2(added-1)
    let removed = (done / 2).saturating_sub(WINDOW); // steps 2i+1 with i >= WINDOW
    (removed..added).collect()
}

/// The child processes of the two scenarios.
pub fn child(scenario: &str, slot: usize) {
    let board = Shared::<Board>::open(&env("BOARD")).expect("open the board");
    let inc = board.round_done[slot].load(Ordering::Acquire);
    let mut rng = Rng::new(inc.wrapping_mul(0x2545_F491) ^ u64::from(std::process::id()));
    match scenario {
        "dict" => dict_worker(&board, slot, inc, &mut rng),
        "list" => list_worker(&board, slot, inc, &mut rng),
        other => panic!("unknown scenario {other}"),
    }
}

fn dict_worker(board: &Board, slot: usize, inc: u64, rng: &mut Rng) {
    let dict = Dict::<u64, u64>::open(&env("OBJ")).expect("open the dict");
    let garbage = || board.garbage.fetch_add(1, Ordering::Relaxed);
    let mut i = 0;
    while !board.stopping() {
        let (key, value) = entry(inc, i);
        if dict.insert(key, value) != Ok(None) {
            garbage();
        }
        board.per_worker[slot].fetch_add(1, Ordering::Release);
        if dict.update(&COUNTER, |c| *c += 1) {
            board.produced.fetch_add(1, Ordering::Release);
        } else {
            garbage();
        }
        if i >= WINDOW {
            let (old, old_value) = entry(inc, i - WINDOW);
            if dict.remove(&old) != Some(old_value) {
                garbage();
            }
        }
        board.per_worker[slot].fetch_add(1, Ordering::Release);
        // A lock-free read of another worker's recent entry: absent, or exactly its value.
        let other = (slot + 1 + rng.below(WORKERS as u64 - 1) as usize) % WORKERS;
        let other_inc = board.round_done[other].load(Ordering::Acquire);
        let other_done = board.per_worker[other].load(Ordering::Acquire);
        let (k, v) = entry(other_inc, (other_done / 2).saturating_sub(rng.below(WINDOW)));
        if dict.get(&k).is_some_and(|got| got != v) {
            garbage();
        }
        board.progress.fetch_add(1, Ordering::Relaxed);
        i += 1;
    }
}

fn list_worker(board: &Board, slot: usize, inc: u64, rng: &mut Rng) {
    let list = List::<u64>::open(&env("OBJ")).expect("open the list");
    let garbage = || board.garbage.fetch_add(1, Ordering::Relaxed);
    let mut i = 0;
    while !board.stopping() {
        let (value, _) = entry(inc, i);
        let added = match rng.below(3) {
            0 => list.push(value).is_ok(),
            // (Only index 0 is always in range: the others change the length meanwhile.)
            1 => list.insert(0, value).is_ok(),
            _ => {
                let mut all = list.lock();
                let at = rng.below(all.len() as u64 + 1) as usize;
                all.insert(at, value).is_ok()
            }
        };
        if !added {
            garbage();
        }
        board.per_worker[slot].fetch_add(1, Ordering::Release);
        if i >= WINDOW {
            let (old, _) = entry(inc, i - WINDOW);
            let mut all = list.lock();
            match all.iter().position(|&v| v == old) {
                Some(at) if i % 2 == 0 => drop(all.remove(at)),
                Some(at) => drop(all.swap_remove(at)),
                None => {
                    garbage();
                }
            }
        }
        board.per_worker[slot].fetch_add(1, Ordering::Release);
        board.progress.fetch_add(1, Ordering::Relaxed);
        i += 1;
    }
}

/// The entries of incarnation `inc` now in the object.
trait Entries {
    fn entries_of(&self, inc: u64, done: u64, report: &mut Report) -> BTreeSet<u64>;
    fn forget(&self, inc: u64, entries: &BTreeSet<u64>);
    fn check(&self) -> Result<(), String>;
}

impl Entries for Dict<u64, u64> {
    fn entries_of(&self, inc: u64, done: u64, report: &mut Report) -> BTreeSet<u64> {
        // Every entry it may ever have added, and a few past that (none may be there).
        let mut found = BTreeSet::new();
        for i in 0..done.div_ceil(2) + 4 {
            let (key, value) = entry(inc, i);
            match self.get(&key) {
                Some(v) if v == value => {
                    found.insert(i);
                }
                Some(_) => report.garbage += 1,
                None => {}
            }
        }
        found
    }

    fn forget(&self, inc: u64, entries: &BTreeSet<u64>) {
        for &i in entries {
            self.remove(&entry(inc, i).0);
        }
    }

    fn check(&self) -> Result<(), String> {
        Dict::check(self).map_err(|e| e.to_string())
    }
}

impl Entries for List<u64> {
    fn entries_of(&self, inc: u64, _done: u64, report: &mut Report) -> BTreeSet<u64> {
        let mut found = BTreeSet::new();
        for v in self.to_vec() {
            if v >> 32 == inc && !found.insert(v & 0xFFFF_FFFF) {
                report.duplicated += 1;
            }
        }
        found
    }

    fn forget(&self, inc: u64, _entries: &BTreeSet<u64>) {
        let mut all = self.lock();
        while let Some(at) = all.iter().position(|&v| v >> 32 == inc) {
            all.swap_remove(at);
        }
    }

    fn check(&self) -> Result<(), String> {
        List::check(self).map_err(|e| e.to_string())
    }
}

/// The loop both scenarios share: kill a random worker after a random pause, account for
/// its entries, clean them away and start a replacement.
fn kill_loop(
    run: &Run,
    scenario: &'static str,
    object: &dyn Entries,
    board: &Board,
    fleet: &mut Fleet,
    report: &mut Report,
) {
    let mut rng = Rng::new(run.seed);
    let mut next_inc = 1;
    // Kills after which the victim's last operation had landed though it never returned.
    let mut landed = 0;
    let mut start = |fleet: &mut Fleet, slot: usize| {
        board.per_worker[slot].store(0, Ordering::Release);
        board.round_done[slot].store(next_inc, Ordering::Release);
        next_inc += 1;
        fleet.spawn(slot, "worker");
    };
    for slot in 0..WORKERS {
        start(fleet, slot);
    }
    for _ in 0..run.kills {
        if report.gave_up() {
            break;
        }
        // Kill only once the victim got going (its first step returned), at a random
        // instant of its work.
        let slot = rng.below(WORKERS as u64) as usize;
        if !crate::fleet::wait_until(HANG, || board.per_worker[slot].load(Ordering::Acquire) > 0) {
            report.hangs += 1;
            fleet.kill(slot);
            start(fleet, slot);
            continue;
        }
        crate::fleet::pause(rng.pause(3_000));
        let progress = board.progress.load(Ordering::Acquire);
        fleet.kill(slot);
        report.killed("worker");
        let inc = board.round_done[slot].load(Ordering::Acquire);
        let done = board.per_worker[slot].load(Ordering::Acquire);
        // The others go on: their work must not be held up by the death.
        let t = Instant::now();
        if !crate::fleet::wait_until(HANG, || board.progress.load(Ordering::Acquire) > progress + 2)
        {
            report.hangs += 1;
        } else {
            report.recoveries.push(t.elapsed().as_nanos() as u64);
        }
        let found = object.entries_of(inc, done, report);
        let (before, after) = (expected(done), expected(done + 1));
        let (required, allowed): (BTreeSet<u64>, BTreeSet<u64>) = (
            before.intersection(&after).copied().collect(),
            before.union(&after).copied().collect(),
        );
        report.lost += required.difference(&found).count() as u64;
        report.garbage += found.difference(&allowed).count() as u64;
        if let Err(e) = object.check() {
            eprintln!("chaos {scenario}: check failed after a kill: {e}");
            report.garbage += 1;
        }
        landed += u64::from(found == after && after != before);
        report.operations += done;
        object.forget(inc, &found);
        start(fleet, slot);
    }
    report.notes = format!("in-flight operations found landed={landed}");
}

pub fn dict(run: &Run) -> Report {
    let mut report = Report::new("dict");
    let (board_name, obj) = (format!("{}-board", run.prefix), format!("{}-dict", run.prefix));
    let board = Shared::<Board>::create(&board_name, |_| {}).expect("create the board");
    let dict = Dict::<u64, u64>::create(&obj, 256).expect("create the dict");
    dict.insert(COUNTER, 0).expect("room for the counter");
    let mut fleet = Fleet::new("dict", &[("BOARD", &board_name), ("OBJ", &obj)], WORKERS);
    kill_loop(run, "dict", &dict, &board, &mut fleet, &mut report);
    board.stop.store(1, Ordering::Release);
    report.hangs += fleet.finish(HANG * 2);
    report.garbage += board.garbage.load(Ordering::Acquire);
    // Every update that returned is in the counter; a killed worker may have landed one
    // more that it did not get to count.
    let counted = board.produced.load(Ordering::Acquire);
    let counter = dict.get(&COUNTER).unwrap_or(0);
    report.lost += counted.saturating_sub(counter);
    report.duplicated += counter.saturating_sub(counted + report.kills);
    report.notes += &format!(" counter={counter} updates counted={counted}");
    if let Err(e) = dict.check() {
        eprintln!("chaos dict: final check failed: {e}");
        report.garbage += 1;
    }
    drop(dict);
    let _ = Dict::<u64, u64>::unlink(&obj);
    let _ = Shared::<Board>::unlink(&board_name);
    report
}

pub fn list(run: &Run) -> Report {
    let mut report = Report::new("list");
    let (board_name, obj) = (format!("{}-board", run.prefix), format!("{}-list", run.prefix));
    let board = Shared::<Board>::create(&board_name, |_| {}).expect("create the board");
    let list = List::<u64>::create(&obj, 64).expect("create the list");
    let mut fleet = Fleet::new("list", &[("BOARD", &board_name), ("OBJ", &obj)], WORKERS);
    kill_loop(run, "list", &list, &board, &mut fleet, &mut report);
    board.stop.store(1, Ordering::Release);
    report.hangs += fleet.finish(HANG * 2);
    report.garbage += board.garbage.load(Ordering::Acquire);
    if let Err(e) = list.check() {
        eprintln!("chaos list: final check failed: {e}");
        report.garbage += 1;
    }
    drop(list);
    let _ = List::<u64>::unlink(&obj);
    let _ = Shared::<Board>::unlink(&board_name);
    report
}
