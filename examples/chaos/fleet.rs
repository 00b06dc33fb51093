//! The processes of a scenario: started from this program with a role, killed with
//! SIGKILL at random instants, replaced, and stopped at the end, every wait bounded.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The environment variable that makes this program a child: `scenario:role:slot`.
pub const ROLE: &str = "SHMSYNC_CHAOS_ROLE";

/// The children of one scenario, one per slot.
pub struct Fleet {
    scenario: &'static str,
    env: Vec<(String, String)>,
    slots: Vec<Option<(Child, &'static str)>>,
}

impl Fleet {
    pub fn new(scenario: &'static str, env: &[(&str, &str)], slots: usize) -> Self {
        Self {
            scenario,
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            slots: (0..slots).map(|_| None).collect(),
        }
    }

    /// Starts `role` in `slot` (which must be empty).
    pub fn spawn(&mut self, slot: usize, role: &'static str) {
        assert!(self.slots[slot].is_none(), "slot {slot} is taken");
        let child = Command::new(std::env::current_exe().expect("this program's path"))
            .env(ROLE, format!("{}:{role}:{slot}", self.scenario))
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start a child process");
        self.slots[slot] = Some((child, role));
    }

    /// The pid in `slot`, if a child runs there.
    pub fn pid(&self, slot: usize) -> Option<u32> {
        self.slots[slot].as_ref().map(|(c, _)| c.id())
    }

    /// SIGKILLs the child in `slot` and reaps it; returns its role.
    pub fn kill(&mut self, slot: usize) -> &'static str {
        let (mut child, role) = self.slots[slot].take().expect("a child to kill");
        let _ = child.kill();
        let _ = child.wait();
        role
    }

    /// SIGKILLs one end of a two-party object (slot 0 or 1) and waits at most `limit`
    /// for the survivor to report `Disconnected` in `board`; returns how long that took
    /// from the kill, or `None` if it never did.
    pub fn kill_until_noticed(
        &mut self,
        slot: usize,
        board: &crate::board::Board,
        limit: Duration,
    ) -> Option<u64> {
        use std::sync::atomic::Ordering;
        board.disconnected_at.store(0, Ordering::Release);
        let t = crate::board::now_ns();
        self.kill(slot);
        wait_until(limit, || board.disconnected_at.load(Ordering::Acquire) != 0)
            .then(|| board.disconnected_at.load(Ordering::Acquire).saturating_sub(t))
    }

    /// Waits at most `limit` for every child to exit (after the stop flag); kills and
    /// counts those still running.
    pub fn finish(&mut self, limit: Duration) -> u64 {
        let end = Instant::now() + limit;
        let mut stuck = 0;
        for entry in &mut self.slots {
            if let Some((mut child, role)) = entry.take() {
                loop {
                    match child.try_wait() {
                        Ok(Some(status)) => {
                            if !status.success() {
                                eprintln!("chaos: a {role} failed at the end: {status}");
                                stuck += 1;
                            }
                            break;
                        }
                        Ok(None) if Instant::now() < end => {
                            std::thread::sleep(Duration::from_millis(2));
                        }
                        _ => {
                            eprintln!("chaos: a {role} did not stop within {limit:?}");
                            let _ = child.kill();
                            let _ = child.wait();
                            stuck += 1;
                            break;
                        }
                    }
                }
            }
        }
        stuck
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for (child, _) in self.slots.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A small deterministic generator (xorshift64*), so that a run can be replayed by seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// A pause of up to `max_us` microseconds, uniform.
    pub fn pause(&mut self, max_us: u64) -> Duration {
        Duration::from_micros(self.below(max_us + 1))
    }
}

/// Sleeps for `d`, spinning for the last stretch so that short pauses are short.
pub fn pause(d: Duration) {
    let end = Instant::now() + d;
    if d > Duration::from_micros(200) {
        std::thread::sleep(d - Duration::from_micros(100));
    }
    while Instant::now() < end {
        std::hint::spin_loop();
    }
}

/// Polls `ready` until it holds or `limit` passes; returns whether it held.
pub fn wait_until(limit: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if ready() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_micros(20));
    }
}
