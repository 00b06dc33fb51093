//! Two processes, one named segment.
//!
//! The parent creates a segment holding a `#[repr(C)]` struct, starts itself again as a
//! child, and the child opens the segment by name, reads the greeting the parent wrote
//! and answers through an atomic. Run it with:
//!
//! ```text
//! cargo run --release --example two_process
//! ```
#![allow(clippy::disallowed_types)] // a user's layout holds std atomics

use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use shmsync::{Shared, ShmSafe};

/// The layout both processes agree on.
#[repr(C)]
struct Mailbox {
    /// Written once by the creator, before anyone can open the segment.
    greeting: [u8; 64],
    greeting_len: u32,
    /// Written by the child.
    child_pid: AtomicU32,
    replies: AtomicU64,
}
// SAFETY: repr(C); integers, bytes and atomics only, so every bit pattern is valid, and
// everything changed after creation is atomic.
unsafe impl ShmSafe for Mailbox {}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let result = match args.get(1).map(String::as_str) {
        Some("--child") => child(&args[2]),
        _ => parent(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("two_process: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parent() -> Result<(), Box<dyn std::error::Error>> {
    let name = format!("two-process-demo-{}", std::process::id());
    let text = b"hello from the creator";
    let mailbox = Shared::<Mailbox>::create(&name, |m| {
        m.greeting[..text.len()].copy_from_slice(text);
        m.greeting_len = text.len() as u32;
    })?;
    let info = mailbox.info();
    println!(
        "parent {}: created {} ({} bytes, instance {:#018x})",
        std::process::id(),
        info.path().display(),
        info.len(),
        info.instance_id()
    );

    let started = Instant::now();
    let status = Command::new(std::env::current_exe()?).args(["--child", &name]).status();
    // The name goes whatever happened to the child; our mapping stays valid.
    Shared::<Mailbox>::unlink(&name)?;
    let status = status?;
    if !status.success() {
        return Err(format!("the child failed: {status}").into());
    }

    let replies = mailbox.replies.load(Ordering::Acquire);
    let child_pid = mailbox.child_pid.load(Ordering::Acquire);
    println!(
        "parent: child {child_pid} replied {replies} time(s); round trip with process start {:.1?}",
        started.elapsed()
    );
    if replies != 1 || child_pid == 0 || child_pid == std::process::id() {
        return Err("the child's reply did not arrive".into());
    }
    println!("parent: unlinked {name}; /dev/shm is as it was");
    Ok(())
}

fn child(name: &str) -> Result<(), Box<dyn std::error::Error>> {
    let opts = shmsync::Options::new().open_timeout(Duration::from_secs(5));
    let mailbox = Shared::<Mailbox>::open_with(name, &opts)?;
    let len = (mailbox.greeting_len as usize).min(mailbox.greeting.len());
    let greeting = String::from_utf8_lossy(&mailbox.greeting[..len]);
    println!(
        "child  {}: opened {name} (creator {}), read {greeting:?}",
        std::process::id(),
        mailbox.info().creator_pid()
    );
    mailbox.child_pid.store(std::process::id(), Ordering::Relaxed);
    // Release: the pid above is visible to whoever sees the reply.
    mailbox.replies.fetch_add(1, Ordering::Release);
    Ok(())
}
