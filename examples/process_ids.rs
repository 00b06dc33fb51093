//! Python's first `multiprocessing` example: processes reporting their ids.
//!
//! The parent starts two named children in turn; each returns its own process id and its
//! parent's, and the parent prints them. Run: `cargo run --example process_ids`.

use shmsync::process::{self, Process};

/// What a child reports: its pid and its parent's.
fn ids(_: ()) -> [u32; 2] {
    [std::process::id(), std::os::unix::process::parent_id()]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    process::init(); // in a child: runs its function and exits

    println!("main line: process id {}", std::process::id());
    for title in ["function f", "function g"] {
        let child = Process::builder().name(title).spawn(ids, ())?;
        let [pid, ppid] = child.join()?;
        assert_eq!(pid, child.pid());
        assert_eq!(ppid, std::process::id(), "the child's parent is us");
        println!("{}: process id {pid}, parent process id {ppid}", child.name());
    }
    Ok(())
}
