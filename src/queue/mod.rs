//! Ring-buffer algorithms for the queues, over memory the caller provides.
//!
//! The named `spsc::Producer`/`Consumer` and `mpmc::Queue` (issue 4) are built on these;
//! until they land, the algorithms are exercised by their unit tests, Miri and loom.
#![allow(dead_code)] // wired up by the named queues

pub(crate) mod doorbell;
pub(crate) mod mpmc_ring;
pub(crate) mod spsc_ring;
