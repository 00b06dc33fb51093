//! Kill loops: processes using each shmsync object are SIGKILLed thousands of times at
//! random instants, replaced, and everything they did is accounted for.
//!
//! ```sh
//! cargo run --release --example chaos                       # every scenario, 300 kills each
//! cargo run --release --example chaos -- --kills 10000 mpmc # one scenario, longer
//! ```
//!
//! Scenarios: `lock` (three processes lock, update, unlock; holders and waiters killed),
//! `condition` and `semaphore` (waiters killed right after a wake-up was sent to one of
//! them), `spsc` (either side killed and replaced), `mpmc` (two producers and two
//! consumers, either role killed, replacements after random delays up to 90 ms), `pipe`
//! (either end killed and re-attached, messages both ways), `list` and `dict` (three
//! workers add and remove their own entries without pause, the dict's also update one
//! shared counter and read each other's entries; after each kill the victim's entries
//! must be exactly as before or after its last operation and `check()` must pass),
//! `lifecycle` (three workers open, create and replace queues by shared names and create
//! scoped events while the parent runs `gc` without pause; no operation may fail, and at
//! the end one `gc` must leave nothing but files killed creators left empty), `waitset`
//! (three producers feed two SPSC queues and an MPMC queue; one consumer serves them all
//! through a `WaitSet`, or by racing three `pop_async` futures and dropping the losers;
//! any of the four killed and replaced).
//!
//! Every wait is bounded; one that runs out where progress was due counts as a hang.
//! Every value carries its producer incarnation, its number and a check word: what
//! arrives twice is `duplicated`, what no producer wrote is `garbage`, and a value whose
//! `push`/`send` returned `Ok` and that never arrived (after a final drain) is `lost`.
//! The rule: no hang, no duplicate, no garbage, and at most one lost value per killed
//! receiving process (the one it had taken and not yet recorded). The run exits with 1
//! if any scenario breaks it.
//!
//! Each scenario prints one line: kills, operations, hangs, lost (and the allowance),
//! duplicated, garbage, and kill-to-recovery percentiles, whose meaning depends on the
//! scenario (see docs/RELIABILITY.md): for the lock, the kill until a survivor's next
//! acquisition; for condition and semaphore, the kill until the outstanding wake-up was
//! taken by a survivor; for SPSC and pipe, the kill until the survivor saw
//! `Disconnected`; for MPMC, the kill until the queue delivered again; for list and dict,
//! the kill until the surviving workers made three more steps; for waitset, the kill of a
//! producer until the consumer delivered again, or of the consumer until its replacement
//! did.
#![allow(clippy::disallowed_types)] // the harness is a user: std atomics in its layouts

mod board;
mod collections;
mod fleet;
mod lifecycle;
mod pipes;
mod queues;
mod sync;
mod waitset;

use std::time::Duration;

/// The longest any wait may take where progress is due before it counts as a hang.
pub const HANG: Duration = Duration::from_secs(2);
/// Hangs after which a scenario stops early (and fails).
const GIVE_UP: u64 = 10;

/// What one scenario found.
pub struct Report {
    pub scenario: &'static str,
    pub kills: u64,
    /// Kills by what the victim was doing or was (holder, waiter, producer, ...).
    pub kinds: Vec<(&'static str, u64)>,
    pub operations: u64,
    pub hangs: u64,
    pub lost: u64,
    pub lost_allowed: u64,
    pub duplicated: u64,
    pub garbage: u64,
    /// Kill-to-recovery samples, nanoseconds.
    pub recoveries: Vec<u64>,
    /// Scenario-specific facts for the line.
    pub notes: String,
}

impl Report {
    pub fn new(scenario: &'static str) -> Self {
        Self {
            scenario,
            kills: 0,
            kinds: Vec::new(),
            operations: 0,
            hangs: 0,
            lost: 0,
            lost_allowed: 0,
            duplicated: 0,
            garbage: 0,
            recoveries: Vec::new(),
            notes: String::new(),
        }
    }

    /// Counts a kill of kind `kind`.
    pub fn killed(&mut self, kind: &'static str) {
        self.kills += 1;
        match self.kinds.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, n)) => *n += 1,
            None => self.kinds.push((kind, 1)),
        }
    }

    /// Whether the loop should stop early: a broken object would make every further
    /// iteration wait out its bounds.
    pub fn gave_up(&self) -> bool {
        self.hangs >= GIVE_UP
    }

    pub fn passed(&self) -> bool {
        self.hangs == 0
            && self.duplicated == 0
            && self.garbage == 0
            && self.lost <= self.lost_allowed
    }

    fn percentile(sorted: &[u64], p: f64) -> String {
        if sorted.is_empty() {
            return "-".into();
        }
        let i = ((sorted.len() - 1) as f64 * p).round() as usize;
        let ns = sorted[i];
        if ns >= 10_000_000 {
            format!("{:.1}ms", ns as f64 / 1e6)
        } else {
            format!("{:.0}us", ns as f64 / 1e3)
        }
    }

    pub fn line(&self) -> String {
        let mut sorted = self.recoveries.clone();
        sorted.sort_unstable();
        let kinds: Vec<String> = self.kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
        format!(
            "chaos {:<9} {} iterations={} kills={} ({}) operations={} hangs={} lost={} \
             (allowed {}) duplicated={} garbage={} recovery p50={} p99={} max={} (n={}){}",
            self.scenario,
            if self.passed() { "PASS" } else { "FAIL" },
            self.kills, // one kill per iteration
            self.kills,
            kinds.join(", "),
            self.operations,
            self.hangs,
            self.lost,
            self.lost_allowed,
            self.duplicated,
            self.garbage,
            Self::percentile(&sorted, 0.5),
            Self::percentile(&sorted, 0.99),
            Self::percentile(&sorted, 1.0),
            sorted.len(),
            if self.notes.is_empty() { String::new() } else { format!(" {}", self.notes) },
        ) + if self.gave_up() { " (stopped early)" } else { "" }
    }
}

/// Shared settings of one run.
pub struct Run {
    pub kills: u64,
    pub seed: u64,
    /// Prefix of this run's object names.
    pub prefix: String,
}

const SCENARIOS: [&str; 11] = [
    "lock",
    "condition",
    "semaphore",
    "spsc",
    "mpmc",
    "mpmc-batch",
    "pipe",
    "list",
    "dict",
    "lifecycle",
    "waitset",
];

fn main() {
    if let Ok(role) = std::env::var(fleet::ROLE) {
        let mut parts = role.splitn(3, ':');
        let (scenario, role, slot) = (
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
            parts.next().and_then(|s| s.parse().ok()).unwrap_or(0),
        );
        match scenario {
            "lock" | "condition" | "semaphore" => sync::child(scenario, role, slot),
            "spsc" | "mpmc" => queues::child(scenario, role, slot),
            "pipe" => pipes::child(role, slot),
            "list" | "dict" => collections::child(scenario, slot),
            "lifecycle" => lifecycle::child(slot),
            "waitset" => waitset::child(role, slot),
            other => panic!("unknown scenario {other}"),
        }
        return;
    }
    let mut kills = 300;
    let mut seed = std::process::id() as u64 ^ board::now_ns();
    let mut chosen = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--kills" => kills = args.next().and_then(|n| n.parse().ok()).expect("--kills N"),
            "--seed" => seed = args.next().and_then(|n| n.parse().ok()).expect("--seed S"),
            "-h" | "--help" => {
                println!("usage: chaos [--kills N] [--seed S] [{}]...", SCENARIOS.join("|"));
                return;
            }
            name if SCENARIOS.contains(&name) => chosen.push(name.to_owned()),
            other => {
                eprintln!("chaos: unknown argument {other:?} (try --help)");
                std::process::exit(2);
            }
        }
    }
    if chosen.is_empty() {
        chosen = SCENARIOS.iter().map(|s| s.to_string()).collect();
    }
    println!("chaos: {kills} kills per scenario, seed {seed}");
    let mut failed = false;
    for (i, scenario) in chosen.iter().enumerate() {
        let run = Run {
            kills,
            seed: seed.wrapping_add(i as u64),
            prefix: format!("example-chaos-{}-{scenario}", std::process::id()),
        };
        let report = match scenario.as_str() {
            "lock" => sync::lock(&run),
            "condition" => sync::condition(&run),
            "semaphore" => sync::semaphore(&run),
            "spsc" => queues::spsc(&run),
            "mpmc" => queues::mpmc(&run, 1),
            "mpmc-batch" => queues::mpmc(&run, queues::batch_size()),
            "pipe" => pipes::pipe(&run),
            "list" => collections::list(&run),
            "dict" => collections::dict(&run),
            "lifecycle" => lifecycle::lifecycle(&run),
            "waitset" => waitset::waitset(&run),
            _ => unreachable!(),
        };
        println!("{}", report.line());
        failed |= !report.passed();
    }
    if failed {
        std::process::exit(1);
    }
}
