//! SPSC operations interleaved with arbitrary writes into the queue's shared memory, as a
//! hostile or broken peer could make them.
//!
//! Input: pairs of bytes. An even first byte is an operation (push, pop, chunks, timed
//! forms with zero timeouts, len); an odd one writes the second byte at an offset in the
//! control block (indices, the sides' flags and role words) or the slots, through a second
//! mapping of the file. Whatever the bytes, nothing may panic (outside the checks below),
//! hang, or read out of bounds; values come out as `Ok` or typed errors.
#![no_main]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use shmsync::{Options, spsc};

#[path = "shared/scratch.rs"]
mod scratch;

fn dir() -> &'static std::path::Path {
    scratch::dir("hostile")
}

/// Where the payload starts in the file: after the 128-byte header (docs/design.md).
const PAYLOAD: usize = 128;
/// The control block (indices and sides) is the payload's first 512 bytes.
const CONTROL: usize = 512;

fuzz_target!(|data: &[u8]| {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let opts = Options::new().dir(dir());
    let name = format!("h{}", NEXT.fetch_add(1, Ordering::Relaxed));
    let mut tx = spsc::Producer::<u64>::create_with(&name, 8, &opts).unwrap();
    let mut rx = spsc::Consumer::<u64>::open_with(&name, &opts).unwrap();
    let file = std::fs::OpenOptions::new().read(true).write(true).open(dir().join(&name)).unwrap();
    spsc::Producer::<u64>::unlink_with(&name, &opts).unwrap();
    // SAFETY: a second shared mapping of the queue's file; only this thread writes it.
    let mut peer = unsafe { memmap2::MmapMut::map_mut(&file) }.unwrap();
    let zero = Duration::ZERO;

    for pair in data.chunks_exact(2) {
        let (op, arg) = (pair[0], pair[1]);
        if op & 1 == 1 {
            // A hostile write: mostly into the control block, sometimes into the slots.
            let span = if op & 2 == 0 { CONTROL } else { peer.len() - PAYLOAD };
            let at = PAYLOAD + (usize::from(op >> 2) * 7 + usize::from(arg)) % span;
            peer[at] = arg;
            continue;
        }
        match (op >> 1) % 8 {
            0 => drop(tx.try_push(u64::from(arg))),
            1 => drop(tx.push_timeout(u64::from(arg), zero)),
            2 => drop(rx.try_pop()),
            3 => drop(rx.pop_timeout(zero)),
            4 => {
                if let Ok(mut chunk) = tx.write_chunk(usize::from(arg % 10)) {
                    let (a, b) = chunk.as_mut_slices();
                    a.fill(7);
                    b.fill(7);
                    let n = chunk.len();
                    chunk.commit(usize::from(arg) % (n + 1));
                }
            }
            5 => {
                if let Ok(mut chunk) = rx.read_chunk(usize::from(arg % 10)) {
                    let (a, b) = chunk.as_slices();
                    let _sum: u64 = a.iter().chain(b).fold(0, |s, v| s.wrapping_add(*v));
                    let n = chunk.len();
                    chunk.commit(usize::from(arg) % (n + 1));
                }
            }
            6 => {
                let _ = (tx.len(), rx.len(), tx.is_abandoned(), rx.is_abandoned(), tx.capacity());
            }
            _ => {
                let _ = (tx.is_full(), rx.is_empty());
            }
        }
    }
});
