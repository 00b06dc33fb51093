//! Kill loop for the pipe: both ends send numbered messages of varying length and record
//! what they receive; either end is killed and taken up again by a new process.

use std::sync::atomic::Ordering;
use std::time::Duration;

use shmsync::{Connection, End, OpenError, Pipe, RecvError, SendError, Shared};

use crate::board::{Board, Ledger, PER_GEN, decode, encode};
use crate::fleet::{Fleet, Rng, pause, wait_until};
use crate::{HANG, Report, Run};

fn env(key: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| panic!("started without {key}"))
}

/// The message carrying value `v`: its 8 bytes, then a tail of a length and bytes that
/// both follow from `v`.
fn message(v: u64, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&v.to_le_bytes());
    let len = ((v >> 32) & 0xFFFF) as usize * 7 % 200;
    out.extend((0..len).map(|i| (v >> ((i % 8) * 8)) as u8 ^ i as u8));
}

/// The value a received message carries, if it is exactly what [`message`] makes.
fn check(msg: &[u8], scratch: &mut Vec<u8>) -> Option<u64> {
    let v = u64::from_le_bytes(msg.get(..8)?.try_into().ok()?);
    decode(v)?;
    message(v, scratch);
    (msg == scratch.as_slice()).then_some(v)
}

fn open_end(board: &Board, name: &str, end: End) -> Connection {
    let limit = std::time::Instant::now() + HANG;
    loop {
        match Pipe::open_end(name, end) {
            Ok(conn) => return conn,
            Err(OpenError::Busy { .. }) if std::time::Instant::now() < limit => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => {
                board.hangs.fetch_add(1, Ordering::Relaxed);
                panic!("chaos: cannot take up end {end:?}: {e}");
            }
        }
    }
}

/// Receives everything waiting on `conn` into `ledger`; false once the peer is gone.
fn drain(conn: &mut Connection, board: &Board, ledger: &Ledger, direction: usize) -> bool {
    // The slot of the receiving end is its direction's index (A receives direction 0).
    let slot = direction;
    let mut scratch = Vec::new();
    loop {
        let value = match conn.try_recv() {
            // Checked and copied out, then released, then recorded: a death before the
            // record loses this one message; none is ever received twice.
            Ok(msg) => check(&msg, &mut scratch),
            Err(RecvError::Empty) => return true,
            Err(RecvError::Disconnected) => return false,
            Err(_) => None,
        };
        match value {
            Some(v) => {
                board.in_hand[slot].store(v, Ordering::Release);
                board.arrived(ledger, v, direction);
            }
            None => {
                board.garbage.fetch_add(1, Ordering::Relaxed);
                return true;
            }
        }
    }
}

/// An end: sends its own numbered stream and records the other end's.
pub fn child(role: &str, _slot: usize) {
    let board = Shared::<Board>::open(&env("BOARD")).expect("open the board");
    let to_a = Shared::<Ledger>::open(&env("TO_A")).expect("open a ledger");
    let to_b = Shared::<Ledger>::open(&env("TO_B")).expect("open a ledger");
    let name = env("OBJ");
    let (end, outgoing, incoming, direction) = match role {
        "a" => (End::A, &*to_b, &*to_a, 0),
        "b" => (End::B, &*to_a, &*to_b, 1),
        other => panic!("unknown role {other:?}"),
    };
    let mut conn = open_end(&board, &name, end);
    let mut msg = Vec::new();
    while !board.stopping() {
        let Some(incarnation) = outgoing.new_gen() else {
            eprintln!("chaos: the ledger ran out of sender incarnations");
            board.hangs.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let mut seq = 0;
        while seq < PER_GEN && !board.stopping() {
            let v = encode(incarnation, seq);
            message(v, &mut msg);
            match conn.send_timeout(&msg, Duration::from_millis(1)) {
                Ok(()) => {
                    outgoing.confirm(incarnation, seq);
                    seq += 1;
                }
                Err(SendError::Timeout) => {}
                Err(SendError::Disconnected) => board.saw_disconnected(),
                Err(_) => {
                    board.garbage.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
            if !drain(&mut conn, &board, incoming, direction) {
                board.saw_disconnected();
            }
            if seq % 8 == 7 {
                std::thread::sleep(Duration::from_micros(20));
            }
        }
    }
}

pub fn pipe(run: &Run) -> Report {
    let mut report = Report::new("pipe");
    let obj = format!("{}-pipe", run.prefix);
    let names = [
        format!("{}-board", run.prefix),
        format!("{}-to-a", run.prefix),
        format!("{}-to-b", run.prefix),
    ];
    let board = Shared::<Board>::create(&names[0], |_| {}).expect("create the board");
    let to_a = Shared::<Ledger>::create(&names[1], |_| {}).expect("create a ledger");
    let to_b = Shared::<Ledger>::create(&names[2], |_| {}).expect("create a ledger");
    // Made here; both ends are left to the children.
    drop(Pipe::create(&obj, 4096).expect("create the pipe"));
    let env =
        [("OBJ", obj.as_str()), ("BOARD", &names[0]), ("TO_A", &names[1]), ("TO_B", &names[2])];
    let mut fleet = Fleet::new("pipe", &env, 2);
    let roles = ["a", "b"];
    fleet.spawn(0, roles[0]);
    fleet.spawn(1, roles[1]);
    let mut rng = Rng::new(run.seed);
    let mut hands = Vec::new();
    let both_moved = |before: [u64; 2]| {
        board.progress_to[0].load(Ordering::Acquire) > before[0]
            && board.progress_to[1].load(Ordering::Acquire) > before[1]
    };
    let progress = || [0, 1].map(|d| board.progress_to[d].load(Ordering::Acquire));
    wait_until(HANG * 5, || both_moved([50, 50]));
    for _ in 0..run.kills {
        if report.gave_up() {
            break;
        }
        pause(rng.pause(3_000));
        let slot = rng.below(2) as usize;
        let noticed = fleet.kill_until_noticed(slot, &board, HANG);
        report.killed(if slot == 0 { "end A" } else { "end B" });
        hands.push((slot, board.in_hand[slot].swap(0, Ordering::AcqRel)));
        match noticed {
            Some(ns) => report.recoveries.push(ns),
            None => {
                eprintln!("chaos pipe: the survivor never saw Disconnected");
                report.hangs += 1;
            }
        }
        pause(rng.pause(5_000));
        fleet.spawn(slot, roles[slot]);
        let before = progress();
        if !wait_until(HANG, || both_moved(before)) {
            eprintln!("chaos pipe: no message both ways for {HANG:?} after re-attaching");
            report.hangs += 1;
        }
    }
    board.stop.store(1, Ordering::Release);
    report.hangs += fleet.finish(HANG * 3);
    // Drain both directions as both ends.
    for (end, ledger, direction) in [(End::A, &to_a, 0), (End::B, &to_b, 1)] {
        match Pipe::open_end(&obj, end) {
            Ok(mut conn) => {
                drain(&mut conn, &board, ledger, direction);
            }
            Err(e) => {
                eprintln!("chaos pipe: end {end:?} cannot be taken up at the end: {e}");
                report.hangs += 1;
            }
        }
    }
    let (lost_a, sent_b) = to_a.lost();
    let (lost_b, sent_a) = to_b.lost();
    report.lost = lost_a + lost_b;
    // Each killed end may lose the one message it had received and not yet recorded.
    report.lost_allowed = report.kills;
    report.operations = sent_a + sent_b;
    report.hangs += board.hangs.load(Ordering::Acquire);
    report.garbage += board.garbage.load(Ordering::Acquire);
    report.duplicated += board.duplicated.load(Ordering::Acquire);
    let ledgers = [&to_a, &to_b];
    let in_hands = hands
        .iter()
        .filter(|&&(slot, v)| ledgers[slot].was_accepted(v) && !ledgers[slot].has_arrived(v))
        .count() as u64;
    report.notes = format!(
        "lost_to_a={lost_a} lost_to_b={lost_b} lost_in_a_killed_end's_hand={in_hands} \
         lost_inside_a_killed_recv={}",
        report.lost.saturating_sub(in_hands)
    );
    drop(fleet);
    let _ = Pipe::unlink(&obj);
    let _ = Shared::<Board>::unlink(&names[0]);
    for name in &names[1..] {
        let _ = Shared::<Ledger>::unlink(name);
    }
    report
}
