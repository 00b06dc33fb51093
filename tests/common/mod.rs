//! The multi-process test harness: the test binary re-executes itself as the child.
//!
//! A test that needs a second process calls [`spawn`] with its own name and a role; the
//! child runs the same test function with `SHMSYNC_TEST_ROLE` set, sees [`role`] return
//! the role, does its part and returns. Children talk back with lines starting with `@@`
//! on stdout; every wait on them is bounded, so a broken build fails instead of hanging.
#![allow(dead_code)] // each test file uses its own subset

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

const ROLE_ENV: &str = "SHMSYNC_TEST_ROLE";

/// The role this process plays, or `None` in the parent.
pub fn role() -> Option<String> {
    std::env::var(ROLE_ENV).ok()
}

/// An environment value the parent passed to this child.
pub fn arg(key: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| panic!("child started without {key}"))
}

/// A name no other test, process or earlier run uses: pid plus a counter.
pub fn unique_name(tag: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("shmsync-test-{}-{n}-{tag}", std::process::id())
}

/// Reports a `key=value` line to the parent.
pub fn report(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "@@ {line}").unwrap();
    out.flush().unwrap();
}

/// Blocks until the parent writes a line to our stdin (a start gate), at most `limit`.
pub fn wait_for_parent(limit: Duration) {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        let _ = tx.send(());
    });
    rx.recv_timeout(limit).expect("the parent never opened the gate");
}

/// A running child and the `@@` lines it has printed.
pub struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    name: String,
}

/// Starts this test binary again as a child running only `test` in `role`.
pub fn spawn(test: &str, role: &str, env: &[(&str, &str)]) -> Proc {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE_ENV, role)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the child test process");
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // The harness prints "test NAME ... " without a newline before the test's
            // own output, so a report may start mid-line.
            if let Some(at) = line.find("@@ ") {
                if tx.send(line[at + 3..].to_owned()).is_err() {
                    break;
                }
            }
        }
    });
    let stdin = child.stdin.take();
    Proc { child, stdin, lines, name: format!("{test}/{role}") }
}

impl Proc {
    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Opens the child's start gate (see [`wait_for_parent`]).
    pub fn release(&mut self) {
        let stdin = self.stdin.as_mut().expect("gate already used");
        stdin.write_all(b"go\n").unwrap();
        stdin.flush().unwrap();
    }

    /// The next `@@` line, waiting at most `limit`.
    pub fn next_line(&mut self, limit: Duration) -> String {
        match self.lines.recv_timeout(limit) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => {
                let _ = self.child.kill();
                panic!("{}: no report within {limit:?}", self.name)
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.child.wait();
                panic!("{}: exited before reporting ({status:?})", self.name)
            }
        }
    }

    /// Waits for a line that starts with `prefix` and returns the rest.
    pub fn expect(&mut self, prefix: &str, limit: Duration) -> String {
        let line = self.next_line(limit);
        match line.strip_prefix(prefix) {
            Some(rest) => rest.to_owned(),
            None => panic!("{}: expected {prefix:?}, got {line:?}", self.name),
        }
    }

    /// SIGKILLs the child and reaps it.
    pub fn kill(mut self) -> ExitStatus {
        self.child.kill().unwrap();
        self.child.wait().unwrap()
    }

    /// Waits at most `limit` for the child to exit; kills it and panics past that.
    pub fn wait(mut self, limit: Duration) -> ExitStatus {
        drop(self.stdin.take());
        let end = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() >= end {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("{}: still running after {limit:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits (bounded) and asserts the child passed.
    pub fn wait_success(self, limit: Duration) {
        let name = self.name.clone();
        let status = self.wait(limit);
        assert!(status.success(), "{name}: failed with {status}");
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // A test that panicked half-way must not leave children behind.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A directory of the test's own in `/dev/shm` (so that `gc` there sees only its
/// objects), removed with whatever is left in it on drop.
pub struct TestDir(pub PathBuf);

impl TestDir {
    pub fn new(tag: &str) -> Self {
        let path = Path::new("/dev/shm").join(unique_name(&format!("dir-{tag}")));
        std::fs::create_dir(&path).unwrap();
        Self(path)
    }

    pub fn opts(&self) -> shmsync::Options {
        shmsync::Options::new().dir(&self.0)
    }

    pub fn s(&self) -> &str {
        self.0.to_str().unwrap()
    }

    /// The names in it, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A second, writable mapping of a segment's file: how tests put a segment into the
/// exact state a killed process leaves.
pub fn second_mapping(path: impl AsRef<Path>) -> memmap2::MmapMut {
    let file = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    // SAFETY: a test's mapping of its own segment file, used while no other handle in
    // the test touches the words it writes.
    unsafe { memmap2::MmapMut::map_mut(&file) }.unwrap()
}

/// Removes a file or empty directory when dropped, panicking test or not.
pub struct Remove(pub PathBuf);

impl Remove {
    /// The guard for the segment `name` in `/dev/shm`.
    pub fn shm(name: &str) -> Self {
        Self(Path::new("/dev/shm").join(name))
    }
}

impl Drop for Remove {
    fn drop(&mut self) {
        match std::fs::symlink_metadata(&self.0) {
            Ok(m) if m.is_dir() => {
                let _ = std::fs::remove_dir(&self.0);
            }
            Ok(_) => {
                let _ = std::fs::remove_file(&self.0);
            }
            Err(_) => {}
        }
    }
}

/// A small deterministic generator (xorshift64*), so failures can be replayed by seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}
