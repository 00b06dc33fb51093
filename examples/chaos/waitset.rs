//! The kill loop for `WaitSet` and the async calls: three producer processes feed two
//! SPSC queues and an MPMC queue, each with random pauses so that the consumer often
//! sleeps; one consumer process serves all three, either through a `WaitSet` or (every
//! other incarnation) by racing three `pop_async` futures and dropping the two losers.
//! Any of the four is killed at random instants and replaced. The ledger checks that no
//! value is lost (beyond the one a killed consumer had in hand), duplicated or garbled,
//! and that the consumer goes on after every kill.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::time::Duration;

use shmsync::{PopError, Shared, WaitSet, WaitSetError, mpmc, spsc};

use crate::board::{Board, Item, Ledger, now_ns};
use crate::fleet::{Rng, pause, wait_until};
use crate::queues::{STEP, Setup, env, one, open_retrying, produce, record, replace, take};
use crate::{HANG, Report, Run};

const ROLES: [&str; 4] = ["producer-a", "producer-b", "producer-c", "consumer"];
const CONSUMER: usize = 3;

fn names(obj: &str) -> [String; 3] {
    ["a", "b", "c"].map(|k| format!("{obj}-{k}"))
}

/// Pushes as `push` does, pausing up to 300 us now and then so that the consumer sleeps.
fn paced(
    board: &Board,
    ledger: &Ledger,
    mut push: impl FnMut(Item) -> Result<(), shmsync::PushError<Item>>,
) {
    let mut rng = Rng::new(u64::from(std::process::id()) ^ now_ns());
    produce(
        board,
        ledger,
        1,
        one(|item| {
            if rng.below(32) == 0 {
                pause(rng.pause(300));
            }
            push(item)
        }),
    );
}

pub fn child(role: &str, slot: usize) {
    let board = Shared::<Board>::open(&env("BOARD")).expect("open the board");
    let ledger = Shared::<Ledger>::open(&env("LEDGER")).expect("open the ledger");
    let [a, b, c] = names(&env("OBJ"));
    match role {
        "producer-a" | "producer-b" => {
            let name = if role == "producer-a" { &a } else { &b };
            let mut tx = open_retrying(&board, || spsc::Producer::<Item>::open(name));
            paced(&board, &ledger, |v| tx.push_timeout(v, STEP));
        }
        "producer-c" => {
            let q = open_retrying(&board, || mpmc::Queue::<Item>::open(&c));
            paced(&board, &ledger, |v| q.push_timeout(v, STEP));
        }
        "consumer" => {
            let mut q = Queues {
                a: open_retrying(&board, || spsc::Consumer::<Item>::open(&a)),
                b: open_retrying(&board, || spsc::Consumer::<Item>::open(&b)),
                c: open_retrying(&board, || mpmc::Queue::<Item>::open(&c)),
            };
            let mode = std::env::var("CHAOS_WAITSET_MODE").unwrap_or_default();
            if mode == "set" || (mode.is_empty() && std::process::id() % 2 == 0) {
                board.per_worker[0].store(1, Ordering::Relaxed);
                with_a_set(&board, &ledger, slot, &mut q);
            } else {
                board.per_worker[0].store(2, Ordering::Relaxed);
                with_futures(&board, &ledger, slot, &mut q);
            }
        }
        other => panic!("unknown role {other:?}"),
    }
}

/// The consumer's three queues.
struct Queues {
    a: spsc::Consumer<Item>,
    b: spsc::Consumer<Item>,
    c: mpmc::Queue<Item>,
}

impl Queues {
    /// One pop on queue `i`, as its entry said it is ready.
    fn pop_one(&mut self, i: usize) -> Result<Item, PopError> {
        match i {
            0 => self.a.try_pop(),
            1 => self.b.try_pop(),
            _ => self.c.try_pop(),
        }
    }

    fn add_to(&self, set: &mut WaitSet, i: usize) -> shmsync::waitset::Key {
        match i {
            0 => set.add_pop(&self.a),
            1 => set.add_pop(&self.b),
            _ => set.add_pop(&self.c),
        }
        .expect("room in the set")
    }
}

/// Serves the three queues through one `WaitSet`. An entry whose producer is gone is
/// removed (it would stay ready) and added again once a pop no longer says so.
fn with_a_set(board: &Board, ledger: &Ledger, slot: usize, q: &mut Queues) {
    let mut set = WaitSet::new();
    let mut keys = [0, 1, 2].map(|i| Some(q.add_to(&mut set, i)));
    while !board.stopping() {
        // Entries dropped for a gone producer: back once a pop finds one again.
        for (i, key) in keys.iter_mut().enumerate() {
            if key.is_none() {
                match q.pop_one(i) {
                    Err(PopError::Disconnected) => continue,
                    Ok(item) => take(board, ledger, slot, item),
                    Err(PopError::Empty) => {}
                    Err(_) => return garbled(board),
                }
                *key = Some(q.add_to(&mut set, i));
            }
        }
        let ready = match set.wait_timeout(Duration::from_millis(5)) {
            Ok(ready) => ready.to_vec(),
            Err(WaitSetError::Timeout | WaitSetError::NoEntries) => {
                pause(Duration::from_micros(500));
                continue;
            }
            Err(e) => panic!("chaos: {e}"),
        };
        for key in ready {
            let i = keys.iter().position(|k| *k == Some(key)).expect("a key of ours");
            match q.pop_one(i) {
                Ok(item) => take(board, ledger, slot, item),
                Err(PopError::Empty) => {}
                Err(PopError::Disconnected) => {
                    board.saw_disconnected();
                    set.remove(key);
                    keys[i] = None;
                }
                Err(_) => return garbled(board),
            }
        }
    }
}

/// A pop said `Corrupted`: counted as garbage, and this consumer stops.
fn garbled(board: &Board) {
    board.garbage.fetch_add(1, Ordering::Relaxed);
}

type Pop<'a> = Pin<Box<dyn Future<Output = Result<Item, PopError>> + 'a>>;

/// Serves the three queues by racing three `pop_async` futures (under
/// `futures::executor`) and dropping the two that lose: cancel safety on every round.
fn with_futures(board: &Board, ledger: &Ledger, slot: usize, q: &mut Queues) {
    futures::executor::block_on(async {
        let mut round = 0usize;
        while !board.stopping() {
            // All three race, in an order that rotates: a queue whose producer is gone wins
            // at once (Disconnected) when it is polled before a ready one, but cannot shut
            // the others out. (Leaving such a queue out instead hung the first version of
            // this loop: a race built while two producers were gone waited on the third
            // alone, and its producer was killed next.)
            let Queues { a, b, c } = &mut *q;
            let mut race: Vec<Pop<'_>> =
                vec![Box::pin(a.pop_async()), Box::pin(b.pop_async()), Box::pin(c.pop_async())];
            round += 1;
            race.rotate_left(round % 3);
            let (result, _, losers) = futures::future::select_all(race).await;
            drop(losers);
            match result {
                Ok(item) => take(board, ledger, slot, item),
                Err(PopError::Disconnected) => {
                    // A producer is gone until its replacement comes; its future is ready
                    // at once until then.
                    board.saw_disconnected();
                    pause(Duration::from_micros(200));
                }
                Err(_) => return garbled(board),
            }
        }
    });
}

pub fn waitset(run: &Run) -> Report {
    let mut report = Report::new("waitset");
    let setup = Setup::new(run);
    let board = &setup.board;
    let [a, b, c] = names(&setup.obj);
    // Made here, their roles left to the children; the parent keeps an MPMC handle only
    // to drain at the end.
    drop(spsc::Producer::<Item>::create(&a, 64).expect("create queue a"));
    drop(spsc::Producer::<Item>::create(&b, 64).expect("create queue b"));
    let qc = mpmc::Queue::<Item>::create(&c, 64).expect("create queue c");
    let mut fleet = setup.fleet("waitset", 4);
    for (slot, role) in ROLES.iter().enumerate() {
        fleet.spawn(slot, role);
    }
    let mut rng = Rng::new(run.seed);
    let mut hands = Vec::new();
    wait_until(HANG * 5, || board.progress.load(Ordering::Acquire) > 100);
    for _ in 0..run.kills {
        if report.gave_up() {
            break;
        }
        pause(rng.pause(3_000));
        // CHAOS_WAITSET_VICTIMS=2,3 narrows the kills to those slots, to chase a bug.
        let slot = match std::env::var("CHAOS_WAITSET_VICTIMS") {
            Ok(list) => {
                let slots: Vec<usize> = list.split(',').map(|v| v.parse().unwrap()).collect();
                slots[rng.below(slots.len() as u64) as usize]
            }
            Err(_) => rng.below(4) as usize,
        };
        let before = board.progress.load(Ordering::Acquire);
        let t = now_ns();
        fleet.kill(slot);
        if slot == CONSUMER {
            report.killed("consumers");
            hands.push(board.in_hand[slot].swap(0, Ordering::AcqRel));
        } else {
            report.killed("producers");
            // The consumer goes on with the other two queues.
            if wait_until(HANG, || board.progress.load(Ordering::Acquire) > before) {
                report.recoveries.push(now_ns() - t);
            } else {
                eprintln!(
                    "chaos waitset: nothing delivered for {HANG:?} after killing {slot} (the \
                     consumer serves {}; {} values in the MPMC queue)",
                    ["?", "through a set", "with futures"]
                        [board.per_worker[0].load(Ordering::Relaxed).min(2) as usize],
                    qc.len()
                );
                if std::env::var_os("CHAOS_DEBUG").is_some() {
                    for name in [&a, &b, &c] {
                        let words = shmsync::inspect(name, &Default::default())
                            .map(|(_, f)| {
                                f.into_iter()
                                    .filter(|(k, _)| !matches!(k.as_str(), "path" | "type_tag"))
                                    .map(|(k, v)| format!("{k}={v}"))
                                    .collect::<Vec<_>>()
                                    .join(" ")
                            })
                            .unwrap_or_else(|e| e.to_string());
                        eprintln!("  {words}");
                    }
                    eprintln!("  pids: {:?}", (0..4).map(|s| fleet.pid(s)).collect::<Vec<_>>());
                    if let Some(pid) = fleet.pid(CONSUMER) {
                        let out = std::process::Command::new("gdb")
                            .args([
                                "-p",
                                &pid.to_string(),
                                "-batch",
                                "-ex",
                                "thread apply all bt 25",
                            ])
                            .output();
                        if let Ok(out) = out {
                            eprintln!("{}", String::from_utf8_lossy(&out.stdout));
                        }
                    }
                }
                report.hangs += 1;
            }
        }
        if replace(&mut fleet, &mut rng, board, slot, ROLES[slot]) {
            if slot == CONSUMER {
                report.recoveries.push(now_ns() - t);
            }
        } else {
            eprintln!("chaos waitset: nothing delivered for {HANG:?} after replacing {slot}");
            report.hangs += 1;
        }
    }
    board.stop.store(1, Ordering::Release);
    report.hangs += fleet.finish(HANG * 3);
    // Drain what is left, as the consumer.
    for name in [&a, &b] {
        let mut rx = spsc::Consumer::<Item>::open(name).expect("a consumer role at the end");
        while let Ok(item) = rx.try_pop() {
            record(board, &setup.ledger, item);
        }
    }
    while let Ok(item) = qc.pop_timeout(Duration::from_millis(50)) {
        record(board, &setup.ledger, item);
    }
    if !qc.is_empty() {
        eprintln!("chaos waitset: {} values stranded in the MPMC queue", qc.len());
        report.hangs += 1;
    }
    setup.account(&mut report, &hands, 1);
    drop(fleet);
    drop(qc);
    for name in [&a, &b] {
        let _ = spsc::Producer::<Item>::unlink(name);
    }
    let _ = mpmc::Queue::<Item>::unlink(&c);
    setup.remove();
    report
}
