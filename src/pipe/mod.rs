//! Duplex connections of variable-size messages between two processes, like Python's
//! `multiprocessing.Pipe()`.
//!
//! A pipe is one named segment with two byte rings, one per direction. [`Pipe::create`]
//! gives its caller end A, [`Pipe::open`] gives end B (usually in another process); both
//! are [`Connection`]s. A message is written in place ([`Connection::send_with`]) or copied
//! in ([`Connection::send`]), and read in place ([`Connection::recv`] lends a [`Message`]
//! borrowing the ring until it is dropped) or copied out ([`Connection::recv_into`]). A
//! steady exchange makes no syscall; a side blocks (futex) only when its ring is empty
//! (receiving) or full (sending), and the other side wakes it only if it sleeps.
//!
//! Each end is claimed by one live process at a time (a second claimant gets
//! [`OpenError::Busy`](crate::OpenError::Busy)); when a handle is dropped or its process dies, the end can be
//! opened again, and the other end, once it has received every message sent before,
//! gets [`RecvError::Disconnected`], as Python raises `EOFError`.
//!
//! # Trust
//!
//! Lengths and positions read from the segment are checked: a peer that writes garbage
//! makes calls fail with `Corrupted`, never panic or read out of bounds. But a
//! [`Message`] is a view of shared memory: a dishonest peer can change its bytes while you
//! read them. With a peer you do not trust, use [`Connection::recv_into`], which copies
//! the message once, and validate the copy.
//!
//! # Examples
//!
//! ```
//! use shmsync::{Options, Pipe, RecvError};
//!
//! # let opts = Options::new().dir(std::env::temp_dir());
//! # let name = format!("doc-pipe-{}", std::process::id());
//! let mut a = Pipe::create_with(&name, 4096, &opts)?;
//! let mut b = Pipe::open_with(&name, &opts)?; // usually another process
//! a.send(b"ping")?;
//! assert_eq!(&*b.recv()?, b"ping");
//! b.send_with(4, |buf| buf.copy_from_slice(b"pong"))?; // written in place
//! let mut reply = Vec::new();
//! a.recv_into(&mut reply)?;
//! assert_eq!(reply, b"pong");
//! drop(a);
//! assert_eq!(b.recv().unwrap_err(), RecvError::Disconnected);
//! Pipe::unlink_with(&name, &opts)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub(crate) mod byte_ring;
#[cfg(not(loom))] // built on mapped memory only; the ring is loom-checked
mod connection;

#[cfg(not(loom))]
pub use connection::{Connection, End, Incoming, Message, Pipe};
