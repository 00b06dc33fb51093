//! Python's `Process` and `Pool`: functions run in child processes, their results back.
//!
//! A child is this program started again (Python's "spawn" start method, never a bare
//! `fork`), which runs the requested function instead of `main` and exits. So the first
//! line of `main` is [`init`]:
//!
//! ```no_run
//! fn square(x: u64) -> u64 {
//!     x * x
//! }
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     shmsync::process::init(); // in a child: runs the task and exits
//!     let p = shmsync::Process::spawn(square, 7u64)?;
//!     assert_eq!(p.join()?, 49);
//!     Ok(())
//! }
//! ```
//!
//! Functions are `fn` items or closures that capture nothing (`fn(A) -> R`); arguments
//! and results are [`Pod`](crate::Pod) values, or, with the `serde` feature, any
//! `Serialize + DeserializeOwned` type wrapped in `Serde` (feature `serde`). The child finds the function
//! by its offset in the binary, which it checks is the parent's own binary (the same file
//! and build) before running anything.
//!
//! # In tests
//!
//! libtest owns `main` in a test binary, so a child cannot start from it. It does not
//! need to: the child runs its function from a constructor that the loader calls before
//! any `main` (`init` is then a no-op). A `#[test]` function can call
//! `Process::spawn` like any other code; `tests/process.rs` does.

mod child;
mod pool;
mod single;
mod transfer;

pub use pool::{AsyncResult, Imap, ImapUnordered, Pool, PoolBuilder, PoolError};
pub use single::{Builder, Process, ProcessError};
#[cfg(feature = "serde")]
pub use transfer::Serde;
pub use transfer::Transfer;

/// The first line of `main` in a program that starts processes: in a child started by
/// [`Process`] or a [`Pool`], runs the task and exits; in any other process,
/// returns at once.
///
/// A child normally runs its task before `main` starts (from a constructor), so this is a
/// safety net for builds whose linker drops constructors; call it anyway. It must come
/// before any thread is started.
pub fn init() {
    child::run_if_child();
}

/// The number of CPUs this process may use: its affinity mask, limited by the cgroup's
/// CPU quota (what `std::thread::available_parallelism` reports), at least 1. Python's
/// `os.process_cpu_count()`.
pub fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// This process, as Python's `multiprocessing.current_process()` describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CurrentProcess {
    name: String,
    pid: u32,
}

impl CurrentProcess {
    /// The name its parent gave it (`Process-N`, a builder's name, `PoolWorker-N`), or
    /// `MainProcess`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }
}

/// This process's name and pid.
///
/// # Examples
///
/// ```
/// let me = shmsync::process::current_process();
/// assert_eq!(me.name(), "MainProcess");
/// assert_eq!(me.pid(), std::process::id());
/// ```
pub fn current_process() -> CurrentProcess {
    CurrentProcess { name: child::current_name().to_owned(), pid: std::process::id() }
}
