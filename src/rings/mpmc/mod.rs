//! Multi-producer multi-consumer queues of plain data in a named segment.
//!
//! Any number of [`Queue`] handles, in any number of processes, push and pop `T: Pod`
//! values through a bounded ring with per-slot stamps (Vyukov's algorithm, see
//! `src/rings/mpmc/ring.rs`). Handles are `Clone`; a handle blocks only when the ring is
//! full (push) or empty (pop), and is woken by the side that changes that.
//!
//! `Disconnected` means that no other handle is alive any more and that one was alive
//! that could have answered: for `pop`, the queue is empty and some other handle had
//! pushed; for `push`, the queue is full and some other handle had popped. Until then a
//! lone handle waits (its timeouts apply), so a creator that fills the queue and leaves
//! before any consumer arrives does not make producers fail. Each process that opens the
//! queue holds one of 64 *member* locks (through its keeper thread), which the kernel
//! releases when the process dies.
//!
//! A process killed in the middle of an operation leaves a claim unfinished: a producer's
//! claimed but unpublished position (a *hole* every consumer would wait behind), or a
//! consumer's claimed but unreleased slot (which every producer would find "full" one lap
//! later). Each thread marks the position it is claiming in a *lane* of its member; a
//! consumer that finds the queue empty behind a hole, or a producer that finds it full at
//! an unreleased slot, finishes the claim if only dead members mark it. A member whose
//! lanes still mark an unfinished claim is not handed to a new process until that claim
//! is finished. At most the one value each killed process had in flight is lost
//! (docs/design.md says which).
//!
//! # Examples
//!
//! ```
//! use shmsync::{Options, mpmc};
//!
//! # let opts = Options::new().dir(std::env::temp_dir());
//! # let name = format!("doc-mpmc-{}", std::process::id());
//! let jobs = mpmc::Queue::<u32>::create_with(&name, 64, &opts)?;
//! let worker = jobs.clone(); // or mpmc::Queue::open in another process
//! jobs.try_push(5).unwrap();
//! assert_eq!(worker.try_pop(), Ok(5));
//! mpmc::Queue::<u32>::unlink_with(&name, &opts)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#[cfg(not(loom))] // built on mapped memory only; the ring is loom-checked
mod handles;
pub(crate) mod ring;

#[cfg(not(loom))]
mod iter;

#[cfg(not(loom))]
pub use handles::Queue;
#[cfg(not(loom))]
pub use iter::{IntoIter, Iter, TryIter};
