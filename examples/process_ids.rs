//! Python's first `multiprocessing` example: processes reporting their ids.
//!
//! The parent starts two children in turn; each sends its own process id and its
//! parent's over a one-way pipe, and the parent prints them. Run: `cargo run --example process_ids`.

#[path = "support/proc.rs"]
mod proc;

use shmsync::{Pipe, RecvError};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if proc::role().as_deref() == Some("child") {
        let mut to_parent = Pipe::open(&proc::arg("PIPE"))?;
        // SAFETY: getppid has no preconditions.
        let ppid = unsafe { libc::getppid() };
        let line = format!("{} {} {ppid}", proc::arg("TITLE"), std::process::id());
        to_parent.send(line.as_bytes())?;
        return Ok(());
    }
    println!("main line: process id {}", std::process::id());
    for title in ["function f", "function g"] {
        // Each child gets a one-way pipe of its own: it sends, we receive.
        let pipe = proc::name(&title.replace(' ', "-"));
        let mut inbox = Pipe::create_one_way(&pipe, 4096)?;
        let child = proc::start("child", &[("PIPE", &pipe), ("TITLE", title)]);
        let report = String::from_utf8(inbox.recv()?.to_vec())?;
        let mut words = report.rsplitn(3, ' ');
        let (ppid, pid) = (words.next().unwrap(), words.next().unwrap());
        println!("{}: process id {pid}, parent process id {ppid}", words.next().unwrap());
        assert_eq!(ppid, std::process::id().to_string(), "the child's parent is us");
        proc::join(child);
        // The child is gone and said everything: Python's EOFError.
        assert_eq!(inbox.recv().unwrap_err(), RecvError::Disconnected);
        Pipe::unlink(&pipe)?;
    }
    Ok(())
}
