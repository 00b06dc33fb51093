//! What the processes of a scenario share besides the object under test: counters, a
//! stop flag, and the ledger of every value sent and received.
#![allow(clippy::disallowed_types)] // the harness is a user: std atomics in its layouts

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use shmsync::ShmSafe;

/// Counters of one scenario, in their own segment.
#[repr(C)]
pub struct Board {
    /// Set by the parent at the end: children leave their loops and exit.
    pub stop: AtomicU32,
    _pad: u32,
    /// Bumped on every unit of progress (an acquisition, a value or message received).
    pub progress: AtomicU64,
    /// The same, per direction of a pipe (to A, to B).
    pub progress_to: [AtomicU64; 2],
    /// Bounded waits that ran out in a child where progress was due.
    pub hangs: AtomicU64,
    /// Values, messages or states that were not what any honest party wrote.
    pub garbage: AtomicU64,
    /// Values or messages received twice.
    pub duplicated: AtomicU64,
    /// `OwnerDied` repairs made.
    pub repaired: AtomicU64,
    /// CLOCK_MONOTONIC nanoseconds at which a survivor last saw `Disconnected`.
    pub disconnected_at: AtomicU64,
    /// Lock scenario: the guarded count, each worker slot's share of it, and who is inside.
    pub counter: AtomicU64,
    pub per_worker: [AtomicU64; 8],
    pub inside: AtomicU64,
    /// Lock scenario: the round the parent started, and the last round each worker slot
    /// finished.
    pub round: AtomicU64,
    pub round_done: [AtomicU64; 8],
    /// Per slot: the last value a receiving process took, stored before it records it,
    /// so that the parent can account for a value lost in a killed receiver's hand.
    pub in_hand: [AtomicU64; 8],
    /// Condition and semaphore scenarios: tokens made, taken, and waiting.
    pub produced: AtomicU64,
    pub consumed: AtomicU64,
    pub tokens: AtomicU64,
}
// SAFETY: repr(C), atomics and integers only: every bit pattern is valid.
unsafe impl ShmSafe for Board {}

/// Producer incarnations a run can have (each killed producer's replacement is a new one,
/// and a producer takes a new one every `PER_GEN` values).
pub const GENS: usize = 1 << 17;
/// Values per producer incarnation.
pub const PER_GEN: u64 = 4096;
const WORDS: usize = (PER_GEN / 64) as usize;

/// Every value of a run: which producer incarnation made it, how many of its values it
/// saw accepted (`push` or `send` returned `Ok`), and which of them arrived.
#[repr(C)]
pub struct Ledger {
    next_gen: AtomicU64,
    confirmed: [AtomicU64; GENS],
    arrived: [AtomicU64; GENS * WORDS],
}
// SAFETY: repr(C), atomics only.
unsafe impl ShmSafe for Ledger {}

/// What [`Ledger::record`] made of a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    Fresh,
    Duplicate,
    Garbage,
}

fn check(incarnation: u64, seq: u64) -> u64 {
    (incarnation.wrapping_mul(0x9E37_79B9) ^ seq.wrapping_mul(0x85EB_CA77) ^ 0x5bd1_e995)
        & 0xFFFF_FFFF
}

/// The value `seq` of incarnation `incarnation`: both, and a check word of them.
pub fn encode(incarnation: u64, seq: u64) -> u64 {
    incarnation << 48 | seq << 32 | check(incarnation, seq)
}

/// `(incarnation, seq)` of a value, if it is one that [`encode`] makes.
pub fn decode(v: u64) -> Option<(u64, u64)> {
    let (incarnation, seq) = (v >> 48, (v >> 32) & 0xFFFF);
    ((incarnation as usize) < GENS && seq < PER_GEN && v & 0xFFFF_FFFF == check(incarnation, seq))
        .then_some((incarnation, seq))
}

impl Ledger {
    /// A new producer incarnation, or `None` once the run has used them all.
    pub fn new_gen(&self) -> Option<u64> {
        let incarnation = self.next_gen.fetch_add(1, Ordering::Relaxed);
        ((incarnation as usize) < GENS).then_some(incarnation)
    }

    /// Value `seq` of `incarnation` was accepted by the object.
    pub fn confirm(&self, incarnation: u64, seq: u64) {
        self.confirmed[incarnation as usize].store(seq + 1, Ordering::Release);
    }

    /// Value `v` arrived.
    pub fn record(&self, v: u64) -> Arrival {
        let Some((incarnation, seq)) = decode(v) else { return Arrival::Garbage };
        let word = incarnation as usize * WORDS + (seq / 64) as usize;
        let bit = 1u64 << (seq % 64);
        if self.arrived[word].fetch_or(bit, Ordering::AcqRel) & bit != 0 {
            Arrival::Duplicate
        } else {
            Arrival::Fresh
        }
    }

    /// Accepted values that never arrived, and how many were accepted in all.
    pub fn lost(&self) -> (u64, u64) {
        let gens = (self.next_gen.load(Ordering::Acquire) as usize).min(GENS);
        let (mut lost, mut accepted) = (0, 0);
        for incarnation in 0..gens {
            let confirmed = self.confirmed[incarnation].load(Ordering::Acquire);
            accepted += confirmed;
            for seq in 0..confirmed {
                let word =
                    self.arrived[incarnation * WORDS + (seq / 64) as usize].load(Ordering::Acquire);
                if word & (1 << (seq % 64)) == 0 {
                    lost += 1;
                }
            }
        }
        (lost, accepted)
    }

    /// Whether value `v` arrived.
    pub fn has_arrived(&self, v: u64) -> bool {
        let Some((incarnation, seq)) = decode(v) else { return false };
        let word = incarnation as usize * WORDS + (seq / 64) as usize;
        self.arrived[word].load(Ordering::Acquire) & (1 << (seq % 64)) != 0
    }

    /// Whether value `v` was accepted (its `push` or `send` returned `Ok`, as far as the
    /// producer could say before it was killed).
    pub fn was_accepted(&self, v: u64) -> bool {
        decode(v).is_some_and(|(incarnation, seq)| {
            self.confirmed[incarnation as usize].load(Ordering::Acquire) > seq
        })
    }

    /// Incarnations used.
    pub fn gens(&self) -> u64 {
        self.next_gen.load(Ordering::Relaxed)
    }
}

impl Board {
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire) != 0
    }

    /// A survivor saw `Disconnected`: the first time since the parent reset the mark, it
    /// records when. Then it pauses briefly (a replacement is on its way).
    pub fn saw_disconnected(&self) {
        let _ =
            self.disconnected_at.compare_exchange(0, now_ns(), Ordering::AcqRel, Ordering::Relaxed);
        std::thread::sleep(std::time::Duration::from_micros(100));
    }

    /// Counts one arrival in `ledger` and the board's totals.
    pub fn arrived(&self, ledger: &Ledger, v: u64, direction: usize) {
        match ledger.record(v) {
            Arrival::Fresh => {}
            Arrival::Duplicate => {
                self.duplicated.fetch_add(1, Ordering::Relaxed);
            }
            Arrival::Garbage => {
                self.garbage.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.progress.fetch_add(1, Ordering::Release);
        self.progress_to[direction].fetch_add(1, Ordering::Release);
    }
}

/// What the queue scenarios send: 64 bytes, the first word the value's number
/// ([`encode`]), the others derived from it, so that a torn or stale copy shows as garbage.
/// Big enough that a process killed while copying one in or out is often caught there.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, shmsync::Pod, shmsync::Zeroable)]
pub struct Item(pub [u64; 8]);

impl Item {
    pub fn new(v: u64) -> Self {
        let mut words = [v; 8];
        for (k, w) in words.iter_mut().enumerate().skip(1) {
            *w = v.rotate_left(k as u32 * 8) ^ (k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
        Self(words)
    }

    /// The number it carries, if every word agrees with it.
    pub fn value(&self) -> Option<u64> {
        (*self == Self::new(self.0[0])).then_some(self.0[0])
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the same clock in every process of the machine.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
