//! Kill loops for the SPSC and MPMC queues: producers push numbered values, consumers
//! record every value they pop in the ledger; either role is killed and replaced.

use std::sync::atomic::Ordering;
use std::time::Duration;

use shmsync::{OpenError, PopError, PushError, Shared, mpmc, spsc};

use crate::board::{Board, Item, Ledger, PER_GEN, encode, now_ns};
use crate::fleet::{Fleet, Rng, pause, wait_until};
use crate::{HANG, Report, Run};

/// How long one blocking call waits in a child before looking at the stop flag.
pub const STEP: Duration = Duration::from_millis(100);

pub fn env(key: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| panic!("started without {key}"))
}

/// Opens with `open`, retrying while the role or member is `Busy` (its last holder's
/// death is being processed), for at most [`HANG`].
pub fn open_retrying<T>(board: &Board, mut open: impl FnMut() -> Result<T, OpenError>) -> T {
    let end = std::time::Instant::now() + HANG;
    loop {
        match open() {
            Ok(handle) => return handle,
            Err(OpenError::Busy { .. }) if std::time::Instant::now() < end => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => {
                board.hangs.fetch_add(1, Ordering::Relaxed);
                panic!("chaos: cannot open: {e}");
            }
        }
    }
}

/// Pushes numbered values with `push`, `batch` at a time, as fast as it can until told
/// to stop, confirming each accepted one. `push` takes a slice and, on an error, says how
/// many of it went in ([`one`] adapts a single-value push). The consumers are slower, so
/// the queue is mostly full: a hole a killed producer leaves is far from the head, as in a
/// real backlog.
pub fn produce(
    board: &Board,
    ledger: &Ledger,
    batch: usize,
    mut push: impl FnMut(&[Item]) -> Result<(), PushError<usize>>,
) {
    while !board.stopping() {
        let Some(incarnation) = ledger.new_gen() else {
            eprintln!("chaos: the ledger ran out of producer incarnations");
            board.hangs.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let mut seq = 0;
        while seq < PER_GEN {
            let n = (PER_GEN - seq).min(batch as u64);
            let items: Vec<Item> =
                (seq..seq + n).map(|s| Item::new(encode(incarnation, s))).collect();
            let mut done = 0;
            while done < items.len() {
                if board.stopping() {
                    return;
                }
                let pushed = match push(&items[done..]) {
                    Ok(()) => items.len() - done,
                    Err(PushError::Timeout(k) | PushError::Full(k)) => k,
                    Err(PushError::Disconnected(k)) => {
                        board.saw_disconnected();
                        k
                    }
                    Err(_) => {
                        board.garbage.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                };
                done += pushed;
                if done > 0 {
                    ledger.confirm(incarnation, seq + done as u64 - 1);
                }
            }
            seq += n;
        }
    }
}

/// A single-value push as the slice push [`produce`] takes (a batch of one).
pub fn one(
    mut push: impl FnMut(Item) -> Result<(), PushError<Item>>,
) -> impl FnMut(&[Item]) -> Result<(), PushError<usize>> {
    move |items| push(items[0]).map_err(|e| e.map(|_| 0))
}

/// How many values the MPMC children of the `mpmc-batch` scenario push and pop at a time:
/// `CHAOS_MPMC_BATCH`, or 32.
pub fn batch_size() -> usize {
    std::env::var("CHAOS_MPMC_BATCH").ok().and_then(|v| v.parse().ok()).unwrap_or(32).clamp(2, 255)
}

/// In a child: the batch size its parent chose (`BATCH`; 1 means single `push`/`pop`,
/// above 1 `push_slice` and `pop_into`).
fn child_batch() -> usize {
    std::env::var("BATCH").ok().and_then(|v| v.parse().ok()).unwrap_or(1)
}

/// Pops with `pop` into a buffer of `batch` until told to stop, recording every value,
/// with about a microsecond of work for each. `pop` returns how many it took.
fn consume(
    board: &Board,
    ledger: &Ledger,
    slot: usize,
    batch: usize,
    mut pop: impl FnMut(&mut [Item]) -> Result<usize, PopError>,
) {
    let mut buf = vec![Item::new(0); batch];
    while !board.stopping() {
        match pop(&mut buf) {
            Ok(n) => {
                for &item in &buf[..n] {
                    take(board, ledger, slot, item);
                    for _ in 0..40 {
                        std::hint::spin_loop();
                    }
                }
            }
            Err(PopError::Timeout | PopError::Empty) => {}
            Err(PopError::Disconnected) => board.saw_disconnected(),
            Err(_) => {
                board.garbage.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    }
}

/// A single-value pop as the buffer pop [`consume`] takes (a batch of one).
fn one_pop(
    mut pop: impl FnMut() -> Result<Item, PopError>,
) -> impl FnMut(&mut [Item]) -> Result<usize, PopError> {
    move |buf| {
        buf[0] = pop()?;
        Ok(1)
    }
}

/// Records a popped item: in hand first (the raw number: it is checked just after), then
/// in the ledger.
pub fn take(board: &Board, ledger: &Ledger, slot: usize, item: Item) {
    board.in_hand[slot].store(item.0[0], Ordering::Release);
    record(board, ledger, item);
}

/// Records a drained item.
pub fn record(board: &Board, ledger: &Ledger, item: Item) {
    match item.value() {
        Some(v) => board.arrived(ledger, v, 0),
        None => {
            board.garbage.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The child processes of both scenarios.
pub fn child(scenario: &str, role: &str, slot: usize) {
    let board = Shared::<Board>::open(&env("BOARD")).expect("open the board");
    let ledger = Shared::<Ledger>::open(&env("LEDGER")).expect("open the ledger");
    let name = env("OBJ");
    match (scenario, role) {
        ("spsc", "producer") => {
            let mut tx = open_retrying(&board, || spsc::Producer::<Item>::open(&name));
            produce(&board, &ledger, 1, one(|v| tx.push_timeout(v, STEP)));
        }
        ("spsc", "consumer") => {
            let mut rx = open_retrying(&board, || spsc::Consumer::<Item>::open(&name));
            consume(&board, &ledger, slot, 1, one_pop(|| rx.pop_timeout(STEP)));
        }
        ("mpmc", "producer") => {
            let q = open_retrying(&board, || mpmc::Queue::<Item>::open(&name));
            match child_batch() {
                1 => produce(&board, &ledger, 1, one(|v| q.push_timeout(v, STEP))),
                batch => produce(&board, &ledger, batch, |v| q.push_slice_timeout(v, STEP)),
            }
        }
        ("mpmc", "consumer") => {
            let q = open_retrying(&board, || mpmc::Queue::<Item>::open(&name));
            match child_batch() {
                1 => consume(&board, &ledger, slot, 1, one_pop(|| q.pop_timeout(STEP))),
                batch => consume(&board, &ledger, slot, batch, |b| q.pop_into_timeout(b, STEP)),
            }
        }
        other => panic!("unknown role {other:?}"),
    }
}

/// The objects of one queue scenario.
pub struct Setup {
    pub obj: String,
    board_name: String,
    ledger_name: String,
    pub board: Shared<Board>,
    pub ledger: Shared<Ledger>,
}

impl Setup {
    pub fn new(run: &Run) -> Self {
        let board_name = format!("{}-board", run.prefix);
        let ledger_name = format!("{}-ledger", run.prefix);
        Self {
            obj: format!("{}-queue", run.prefix),
            board: Shared::<Board>::create(&board_name, |_| {}).expect("create the board"),
            ledger: Shared::<Ledger>::create(&ledger_name, |_| {}).expect("create the ledger"),
            board_name,
            ledger_name,
        }
    }

    pub fn fleet(&self, scenario: &'static str, slots: usize) -> Fleet {
        self.fleet_with(scenario, slots, 1)
    }

    /// A fleet whose MPMC children move `batch` values at a time.
    pub fn fleet_with(&self, scenario: &'static str, slots: usize, batch: usize) -> Fleet {
        let batch = batch.to_string();
        let env = [
            ("OBJ", self.obj.as_str()),
            ("BOARD", self.board_name.as_str()),
            ("LEDGER", self.ledger_name.as_str()),
            ("BATCH", batch.as_str()),
        ];
        Fleet::new(scenario, &env, slots)
    }

    /// Ledger totals into the report; the allowance is one value per killed consumer
    /// (`per_kill` for consumers that take batches: a whole claim, or a batch taken but not
    /// yet recorded). `hands` are the values killed consumers had taken last.
    pub fn account(&self, report: &mut Report, hands: &[u64], per_kill: u64) {
        let (lost, accepted) = self.ledger.lost();
        let in_hands = hands
            .iter()
            .filter(|&&v| self.ledger.was_accepted(v) && !self.ledger.has_arrived(v))
            .count() as u64;
        report.lost = lost;
        report.lost_allowed = per_kill
            * report.kinds.iter().filter(|(k, _)| *k == "consumers").map(|(_, n)| n).sum::<u64>();
        report.operations = accepted;
        report.hangs += self.board.hangs.load(Ordering::Acquire);
        report.garbage += self.board.garbage.load(Ordering::Acquire);
        report.duplicated += self.board.duplicated.load(Ordering::Acquire);
        report.notes = format!(
            "lost_in_a_killed_consumer's_hand={in_hands} lost_inside_a_killed_pop={} \
             producer_incarnations={}",
            lost.saturating_sub(in_hands),
            self.ledger.gens()
        );
    }

    pub fn remove(&self) {
        let _ = Shared::<Board>::unlink(&self.board_name);
        let _ = Shared::<Ledger>::unlink(&self.ledger_name);
    }
}

pub fn spsc(run: &Run) -> Report {
    let mut report = Report::new("spsc");
    let setup = Setup::new(run);
    let board = &setup.board;
    // Made here, its roles left to the children.
    drop(spsc::Producer::<Item>::create(&setup.obj, 64).expect("create the queue"));
    let mut fleet = setup.fleet("spsc", 2);
    let roles = ["producer", "consumer"];
    fleet.spawn(0, roles[0]);
    fleet.spawn(1, roles[1]);
    let mut rng = Rng::new(run.seed);
    let mut hands = Vec::new();
    wait_until(HANG * 5, || board.progress.load(Ordering::Acquire) > 100);
    for _ in 0..run.kills {
        if report.gave_up() {
            break;
        }
        pause(rng.pause(3_000));
        let slot = rng.below(2) as usize;
        // The survivor must notice, blocked or not.
        let noticed = fleet.kill_until_noticed(slot, board, HANG);
        report.killed(if slot == 0 { "producers" } else { "consumers" });
        if slot == 1 {
            hands.push(board.in_hand[slot].swap(0, Ordering::AcqRel));
        }
        match noticed {
            Some(ns) => report.recoveries.push(ns),
            None => {
                eprintln!("chaos spsc: the survivor never saw Disconnected");
                report.hangs += 1;
            }
        }
        pause(rng.pause(5_000));
        fleet.spawn(slot, roles[slot]);
        let before = board.progress.load(Ordering::Acquire);
        if !wait_until(HANG, || board.progress.load(Ordering::Acquire) > before) {
            eprintln!("chaos spsc: no value delivered for {HANG:?} after a replacement");
            report.hangs += 1;
        }
    }
    board.stop.store(1, Ordering::Release);
    report.hangs += fleet.finish(HANG * 3);
    // Drain what is left, as the consumer.
    let mut rx = spsc::Consumer::<Item>::open(&setup.obj).expect("the consumer role at the end");
    while let Ok(item) = rx.try_pop() {
        record(board, &setup.ledger, item);
    }
    drop(rx);
    setup.account(&mut report, &hands, 1);
    drop(fleet);
    let _ = spsc::Producer::<Item>::unlink(&setup.obj);
    setup.remove();
    report
}

/// The MPMC kill loop; `batch` > 1 makes its children push and pop in batches, and allows a
/// killed consumer that many lost values.
pub fn mpmc(run: &Run, batch: usize) -> Report {
    let mut report = Report::new(if batch > 1 { "mpmc-batch" } else { "mpmc" });
    let setup = Setup::new(run);
    let board = &setup.board;
    let q = mpmc::Queue::<Item>::create(&setup.obj, 1024).expect("create the queue");
    let mut fleet = setup.fleet_with("mpmc", 4, batch);
    let roles = ["producer", "producer", "consumer", "consumer"];
    for (slot, role) in roles.iter().enumerate() {
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
        let slot = rng.below(4) as usize;
        let before = board.progress.load(Ordering::Acquire);
        let t = now_ns();
        fleet.kill(slot);
        report.killed(if slot < 2 { "producers" } else { "consumers" });
        if slot >= 2 {
            hands.push(board.in_hand[slot].swap(0, Ordering::AcqRel));
        }
        // The other producer and consumer go on: the queue must move again.
        if wait_until(HANG, || board.progress.load(Ordering::Acquire) > before) {
            report.recoveries.push(now_ns() - t);
        } else {
            eprintln!("chaos mpmc: no value delivered for {HANG:?} after a kill (len {})", q.len());
            report.hangs += 1;
        }
        if !replace(&mut fleet, &mut rng, board, slot, roles[slot]) {
            eprintln!("chaos mpmc: no value delivered for {HANG:?} after a replacement");
            report.hangs += 1;
        }
    }
    board.stop.store(1, Ordering::Release);
    report.hangs += fleet.finish(HANG * 3);
    // Drain what is left (stepping over any hole a killed producer left).
    let end = std::time::Instant::now() + HANG;
    loop {
        match q.pop_timeout(Duration::from_millis(50)) {
            Ok(item) => record(board, &setup.ledger, item),
            Err(PopError::Timeout | PopError::Empty | PopError::Disconnected) => {
                if q.is_empty() || std::time::Instant::now() > end {
                    break;
                }
            }
            Err(_) => {
                report.garbage += 1;
                break;
            }
        }
    }
    if !q.is_empty() {
        eprintln!("chaos mpmc: {} values stranded at the end", q.len());
        report.hangs += 1;
    }
    setup.account(&mut report, &hands, batch as u64);
    if batch > 1 {
        report.notes += &format!(" batch={batch}");
    }
    drop(fleet);
    drop(q);
    let _ = mpmc::Queue::<Item>::unlink(&setup.obj);
    setup.remove();
    report
}

/// Starts a replacement in `slot` at once or late (up to 90 ms), as a supervisor's would,
/// and waits until a value is delivered after it; returns whether one was within [`HANG`].
pub fn replace(
    fleet: &mut Fleet,
    rng: &mut Rng,
    board: &Board,
    slot: usize,
    role: &'static str,
) -> bool {
    let delay = if rng.below(4) == 0 { 10_000 + rng.below(80_000) } else { rng.below(10_000) };
    pause(Duration::from_micros(delay));
    fleet.spawn(slot, role);
    let before = board.progress.load(Ordering::Acquire);
    wait_until(HANG, || board.progress.load(Ordering::Acquire) > before)
}
