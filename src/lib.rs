//! Zero-copy inter-process primitives for Linux.
//!
//! shmsync rebuilds the vocabulary of Python's `multiprocessing` for Rust programs that
//! must talk across processes faster than the kernel lets them: every object lives in a
//! **named shared-memory segment** that unrelated processes open by name. Each segment
//! starts with a validated header (kind, layout, version), is created owner-only, and is
//! treated as hostile memory by every reader: a crashed or malicious peer can make an
//! operation fail with an error, never make it panic or read out of bounds.
//!
//! # Example: a queue between two processes
//!
//! The parent creates a queue and starts a child (here, this same program again); the
//! child opens the queue by name and takes the other end. No syscall is made while values
//! flow; a side sleeps (futex) only when there is nothing to do.
//!
//! ```rust,standalone_crate
//! use std::process::Command;
//! use std::time::Duration;
//! use shmsync::spsc;
//!
//! let bound = Duration::from_secs(10); // every wait here has one
//! if let Ok(name) = std::env::var("TICKS_NAME") {
//!     // The child: any process of the same user can open the queue by its name.
//!     let mut rx = spsc::Consumer::<u64>::open(&name)?;
//!     let sum: u64 = (0..100).map(|_| rx.pop_timeout(bound).unwrap()).sum();
//!     assert_eq!(sum, 4950);
//!     return Ok(());
//! }
//!
//! // The parent. Real programs use a fixed name such as "ticks".
//! let name = format!("doc-ticks-{}", std::process::id());
//! let mut tx = spsc::Producer::<u64>::create(&name, 64)?;
//! let mut child = Command::new(std::env::current_exe()?).env("TICKS_NAME", &name).spawn()?;
//! for tick in 0..100 {
//!     tx.push_timeout(tick, bound)?; // waits only while the queue is full
//! }
//! assert!(child.wait()?.success());
//! spsc::Producer::<u64>::unlink(&name)?; // the name goes; live handles stay valid
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Element types of your own
//!
//! Queues, [`Value`] and [`Array`] hold plain data: any `#[repr(C)]` struct of numbers,
//! arrays and other such structs, with one derive line (no other dependency needed):
//!
//! ```rust
//! #[repr(C)]
//! #[derive(Clone, Copy, Debug, shmsync::Pod, shmsync::Zeroable)]
//! struct Tick {
//!     seq: u64,
//!     price: f64,
//! }
//! # let opts = shmsync::Options::new().dir(std::env::temp_dir());
//! # let name = format!("doc-tick-{}", std::process::id());
//! let mut tx = shmsync::spsc::Producer::<Tick>::create_with(&name, 64, &opts)?;
//! tx.try_push(Tick { seq: 1, price: 10.5 })?;
//! # shmsync::spsc::Producer::<Tick>::unlink_with(&name, &opts)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The type is known by its structure, not its module path: the same struct declared in
//! two programs opens the same queue, and a changed field (name, type or place) is
//! [`OpenError::LayoutMismatch`] (see [`ShmSafe::type_tag`]). The derive refuses what
//! cannot be plain data: a struct without `#[repr(C)]` (its layout could differ between
//! builds), with padding (undefined bytes), or with a field that is not plain data.
//!
//! ```compile_fail
//! #[repr(C)]
//! #[derive(Clone, Copy, shmsync::Pod, shmsync::Zeroable)]
//! struct Padded {
//!     flag: u8, // 7 bytes of padding follow
//!     value: u64,
//! }
//! ```
//!
//! ```compile_fail
//! #[derive(Clone, Copy, shmsync::Pod, shmsync::Zeroable)]
//! struct NoRepr {
//!     value: u64,
//! }
//! ```
//!
//! ```compile_fail
//! #[repr(C)]
//! #[derive(Clone, Copy, shmsync::Pod, shmsync::Zeroable)]
//! struct Borrowing {
//!     name: &'static str,
//! }
//! ```
//!
//! # Example: your own layout in one segment
//!
//! [`Shared<T>`](Shared) puts a `#[repr(C)]` struct of your own (atomics, plain data and
//! the [`raw`] primitives) in a named segment.
//!
//! ```rust,standalone_crate
//! use std::process::Command;
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use shmsync::{Shared, ShmSafe};
//!
//! #[repr(C)]
//! struct Stats {
//!     visits: AtomicU64,
//! }
//! // SAFETY: repr(C), no pointers, every bit pattern is valid, shared state is atomic.
//! unsafe impl ShmSafe for Stats {}
//!
//! if let Ok(name) = std::env::var("STATS_NAME") {
//!     let stats = Shared::<Stats>::open(&name)?;
//!     stats.visits.fetch_add(1, Ordering::Relaxed);
//!     return Ok(());
//! }
//!
//! let name = format!("doc-stats-{}", std::process::id());
//! let stats = Shared::<Stats>::create(&name, |s| *s.visits.get_mut() = 1)?;
//! let child = Command::new(std::env::current_exe()?).env("STATS_NAME", &name).status()?;
//! assert!(child.success());
//! assert_eq!(stats.visits.load(Ordering::Relaxed), 2);
//! Shared::<Stats>::unlink(&name)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The runnable two-process versions are the examples (`cargo run --release --example
//! queue_writer_reader`, `--example two_process`, and the others listed in the README).
//!
//! # Names
//!
//! A name is 1 to 200 bytes of `[A-Za-z0-9._-]`, not `.` or `..`. By default the object
//! `jobs` is the POSIX shared-memory object `/jobs` (the file `/dev/shm/jobs`);
//! [`Options::dir`] puts the file at `<dir>/jobs` instead.
//!
//! # Crate layout
//!
//! - [`Lock`], [`Event`], [`Condition`], [`Semaphore`]: futex-based synchronisation
//!   that makes no syscall when uncontended; the lock reports its owner's death.
//! - [`Value`], [`Array`]: plain data with its own lock.
//! - [`spsc::Producer`] and [`spsc::Consumer`]: a single-producer single-consumer queue
//!   of plain data, blocking only when there is nothing to do, zero-copy chunks.
//! - [`mpmc::Queue`]: a multi-producer multi-consumer queue of plain data, `Clone`, for
//!   any number of processes.
//! - [`Pipe`]: a duplex (or one-way) connection of variable-size messages between two
//!   processes, written and read in place, also an `io::Read`/`io::Write` byte stream.
//! - [`WaitSet`] ([`waitset`]): one thread waiting on many queues, pipe ends, events and
//!   semaphores at once, in one `futex_waitv` per sleep. With the default feature
//!   `async`: `pop_async`, `push_async`, `recv_async`, `send_async`,
//!   `Event::wait_async`, `Semaphore::acquire_async`, `Lock::lock_async`, for any
//!   executor (one waiter thread per process sleeps for all of them).
//! - [`Shared`]: a user-defined `#[repr(C)]` layout in one named segment, built from the
//!   [`raw`] primitives.
//! - [`Process`] and [`Pool`] ([`process`]): functions run in child processes, results
//!   back; a worker killed mid-task fails only its task.
//! - [`Options`], [`OpenError`], [`SegmentInfo`], [`ObjectKind`]: what every named
//!   object shares.
//!
//! Processes that use a queue or a pipe start one helper thread, the *keeper*, which holds
//! their roles so that the kernel releases them when the process dies; processes that
//! await an async call start one more, the *waiter*.
//!
//! The design notes (segment layout, protocols, trust model) are in `docs/design.md`;
//! what survives `kill -9`, measured, in `docs/RELIABILITY.md`.
#![deny(unsafe_op_in_unsafe_fn, missing_docs)]
#![warn(
    clippy::undocumented_unsafe_blocks,
    clippy::missing_safety_doc,
    rust_2018_idioms,
    missing_debug_implementations
)]

#[cfg(not(target_os = "linux"))]
compile_error!("shmsync supports Linux only: it relies on futexes and /dev/shm");

// The parts, each a folder with one concern (docs/design.md, "Source layout"). The
// arrows they may not cross are checked by `.ci/nevers`.
mod error; // every error type
#[cfg(not(loom))] // reads files; loom builds have other layouts
mod inspect; // an object's header and state words, decoded (`shmsync inspect`)
mod layout; // what may live in shared memory: ShmSafe, type tags, kinds, padding
mod loom; // the one door to std's atomics and cells (swapped for loom's in models)
mod named; // Lock, Event, Condition, Semaphore: one raw primitive in one segment
#[cfg(not(loom))] // built on mapped memory only; its byte ring is loom-checked
mod pipe; // Pipe, Connection, Message and their byte ring
#[cfg(not(loom))] // processes: nothing for a model to check
pub mod process; // Process and Pool: functions run in child processes
pub mod raw; // the algorithms, over memory the caller provides
mod rings; // the ring queues: layout rule, wait loop, doorbell, two-party sides, keeper
mod segment; // named segments: names, header, options, the typed-object plumbing
mod values; // Shared<T>, Value<T>, Array<T>
#[cfg(not(loom))] // sleeps on mapped objects; its hand-off is loom-checked in rings::doorbell
pub mod waitset; // WaitSet: one sleep on many queues, pipes, events and semaphores
mod wake; // every door to the kernel's futex ABI

pub use bytemuck;
// The traits (type namespace) and the derives (macro namespace) share their names, as in
// bytemuck; the derives are shmsync's, so that they need no bytemuck in the user's crate.
pub use bytemuck::{Pod, Zeroable};
pub use error::{
    BarrierError, CapacityError, ChunkError, Corrupted, IndexError, InsertError, LayoutProperty,
    LockError, LockResult, OpenError, PopError, PushError, RecvError, ReleaseError, SendError,
    TryLockError, WaitSetError,
};
#[cfg(not(loom))]
pub use inspect::inspect;
#[doc(hidden)]
pub use layout::Structure as __derive_Structure;
pub use layout::{ObjectKind, ShmSafe};
pub use named::{Barrier, Condition, Event, Lock, RLock, Semaphore};
#[cfg(not(loom))]
pub use pipe::{Connection, End, Incoming, Message, Pipe};
#[cfg(not(loom))]
pub use process::{Pool, PoolError, Process, ProcessError};
pub use raw::LockGuard;
#[cfg(not(loom))]
pub use rings::{mpmc, spsc};
pub use segment::{
    Attacher, Inheritable, Options, Scope, SegmentInfo, Stale, gc, gc_dry_run, segments,
};
pub use shmsync_derive::{Pod, Zeroable};
pub use values::{
    Array, ArrayGuard, Dict, FixedStr, FixedStrError, List, ListGuard, Shared, Value,
};
#[cfg(not(loom))]
pub use waitset::WaitSet;
