//! Re-running this example as a child process, as Python's `multiprocessing` starts a
//! `Process`: the child runs the same program with a role in its environment.
//!
//! Included with `#[path]`; not a program of its own.
#![allow(dead_code)] // each example uses a part

use std::process::{Child, Command};
use std::time::{Duration, Instant};

const ROLE: &str = "SHMSYNC_EXAMPLE_ROLE";

/// The role this process was started in, or `None` in the parent.
pub fn role() -> Option<String> {
    std::env::var(ROLE).ok()
}

/// An argument the parent passed to this child.
pub fn arg(key: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| panic!("started without {key}"))
}

/// A running child; if it is dropped without [`join`], it is killed and reaped, so an
/// example that fails half-way leaves no process behind.
pub struct Running(Option<Child>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts this program again as `role`, with `args` in its environment.
pub fn start(role: &str, args: &[(&str, &str)]) -> Running {
    let child = Command::new(std::env::current_exe().expect("this program's path"))
        .env(ROLE, role)
        .envs(args.iter().copied())
        .spawn()
        .expect("start a child process");
    Running(Some(child))
}

/// Waits for the child (at most a minute: a stuck child is killed and reported).
pub fn join(mut running: Running) {
    let mut child = running.0.take().expect("joined once");
    let end = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait for a child").is_none() {
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("a child process was still running after a minute");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let status = child.wait().expect("reap a child");
    assert!(status.success(), "a child process failed: {status}");
}

/// A name for this run's objects: `tag` and our process id, so that runs never collide.
pub fn name(tag: &str) -> String {
    format!("example-{tag}-{}", std::process::id())
}
