//! Single-producer single-consumer queues of plain data in a named segment.
//!
//! One [`Producer`] and one [`Consumer`], usually in two processes, move `T: Pod` values
//! through a ring in shared memory. A steady stream makes no syscall and no
//! read-modify-write: one Release store per value. A side blocks (futex) only when the
//! ring is full or empty, and the other side wakes it only if it sleeps.
//!
//! Each role is claimed exclusively: a second producer while the first handle lives, in
//! this process or another, gets [`OpenError::Busy`](crate::OpenError::Busy). When a
//! handle is dropped or its process dies, the role can be claimed again, and the other
//! side, once it has drained what was committed, gets `Disconnected`.
//!
//! # Examples
//!
//! ```
//! use shmsync::{Options, PopError, spsc};
//!
//! # let opts = Options::new().dir(std::env::temp_dir());
//! # let name = format!("doc-spsc-{}", std::process::id());
//! let mut tx = spsc::Producer::<u64>::create_with(&name, 1000, &opts)?; // rounds up to 1024
//! let mut rx = spsc::Consumer::<u64>::open_with(&name, &opts)?;         // usually another process
//! assert_eq!(tx.capacity(), 1024);
//! tx.try_push(7).unwrap();
//! assert_eq!(rx.try_pop(), Ok(7));
//! drop(tx);
//! assert_eq!(rx.try_pop(), Err(PopError::Disconnected));
//! spsc::Producer::<u64>::unlink_with(&name, &opts)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#[cfg(not(loom))] // built on mapped memory only; the ring is loom-checked
mod handles;
pub(crate) mod ring;

#[cfg(not(loom))]
mod iter;

#[cfg(not(loom))]
pub use handles::{Consumer, Producer, ReadChunk, WriteChunk};
#[cfg(not(loom))]
pub use iter::{IntoIter, Iter, TryIter};
