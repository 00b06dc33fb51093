//! The layout that measures the machine's floor for a round trip: two processes bounce a
//! counter through two cache lines, with no queue at all. Shared by the showdown example
//! and the pipe benchmarks.
//!
//! Included with `#[path]`; not a program of its own.
#![allow(clippy::disallowed_types)] // a user's layout: std atomics

use std::sync::atomic::AtomicU64;

use shmsync::ShmSafe;

/// `ping` and `pong`, each on a 128-byte half of its own.
#[repr(C, align(128))]
pub struct PingPong {
    pub ping: AtomicU64,
    _pad: [u64; 15],
    pub pong: AtomicU64,
}

// SAFETY: repr(C) of atomics and integers: every bit pattern is valid, shared state is
// atomic.
unsafe impl ShmSafe for PingPong {}
