//! The primitives as plain `#[repr(C)]` values, to place inside layouts of your own.
//!
//! Each type here is the whole state of one named object ([`Lock`](crate::Lock),
//! [`Event`](crate::Event), ...), and implements [`ShmSafe`](crate::ShmSafe), so a
//! `#[repr(C)]` struct of them can live in a [`Shared`](crate::Shared). All-zero bytes are
//! a valid initial value of every one of them (an unlocked lock, a cleared event, a
//! condition with no waiters, an unbounded semaphore with no permits).
//!
//! ```
//! use shmsync::raw::{Mutex, RawEvent, RawLock};
//!
//! #[repr(C)]
//! struct Book {
//!     lock: RawLock,
//!     ready: RawEvent,
//!     bids: Mutex<[u64; 64]>,
//! }
//! // SAFETY: repr(C), made only of ShmSafe parts.
//! unsafe impl shmsync::ShmSafe for Book {}
//! ```

mod barrier;
mod condition;
mod event;
mod lock;
mod mutex;
mod rlock;
mod semaphore;

pub use barrier::{BarrierWaitResult, RawBarrier};
pub use condition::RawCondition;
pub use event::RawEvent;
pub use lock::{LockGuard, RawLock};
pub use mutex::{Mutex, MutexGuard};
pub use rlock::{RLockGuard, RawRLock};
pub use semaphore::RawSemaphore;
