//! SPSC and MPMC operations interleaved with arbitrary writes into the queues' shared
//! memory, as a hostile or broken peer could make them, or states a killed process
//! leaves (an MPMC consumer's claimed but unreleased slot, a producer's hole, each marked
//! in a lane of a member nobody holds).
//!
//! Input: pairs of bytes. An even first byte is an operation (push, pop, chunks, timed
//! forms with zero timeouts, len); an odd one writes the second byte at an offset in the
//! control block (indices, the sides' flags and role words) or the slots, through a second
//! mapping of the file. Whatever the bytes, nothing may panic (outside the checks below),
//! hang, or read out of bounds; values come out as `Ok` or typed errors. A `WaitSet` over
//! every end looks at the same words: its looks and zero-timeout waits return.
#![no_main]

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use shmsync::{Options, WaitSet, mpmc, spsc};

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
    let mq = mpmc::Queue::<u64>::create_with(&format!("{name}m"), 8, &opts).unwrap();
    let mfile = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dir().join(format!("{name}m")))
        .unwrap();
    mpmc::Queue::<u64>::unlink_with(&format!("{name}m"), &opts).unwrap();
    // SAFETY: a second shared mapping of the MPMC queue's file; only this thread writes it.
    let mut mpeer = unsafe { memmap2::MmapMut::map_mut(&mfile) }.unwrap();
    // A wait set over every end: its looks read the same hostile words.
    let mut set = WaitSet::new();
    set.set_spin(false);
    let keys = [set.add_pop(&rx), set.add_push(&tx), set.add_pop(&mq), set.add_push(&mq)];
    assert!(keys.iter().all(Result::is_ok));

    for pair in data.chunks_exact(2) {
        let (op, arg) = (pair[0], pair[1]);
        if op & 1 == 1 {
            // A hostile write: mostly into the control block, sometimes into the slots.
            let span = if op & 2 == 0 { CONTROL } else { peer.len() - PAYLOAD };
            let at = PAYLOAD + (usize::from(op >> 2) * 7 + usize::from(arg)) % span;
            peer[at] = arg;
            continue;
        }
        if op & 0xC0 == 0xC0 {
            mpmc_op(&mq, &mut mpeer, op, arg);
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
                // Whatever the words say, a look returns, and a zero wait returns at once.
                let _ = set.try_wait().len();
                let _ = set.wait_timeout(zero);
            }
            _ => {
                let _ = (tx.is_full(), rx.is_empty());
            }
        }
    }
});

/// The MPMC queue's payload: `head` at 0, `tail` at 128, member `i` at 640 + 128 i (lane
/// `k` at +48 + 8 k), the slots after the 8,832-byte control block (16 bytes each).
const MPMC_CONTROL: usize = 8832;

fn put(map: &mut memmap2::MmapMut, at: usize, value: u64) {
    map[PAYLOAD + at..PAYLOAD + at + 8].copy_from_slice(&value.to_ne_bytes());
}

fn get(map: &memmap2::MmapMut, at: usize) -> u64 {
    u64::from_ne_bytes(map[PAYLOAD + at..PAYLOAD + at + 8].try_into().unwrap())
}

/// An MPMC operation, a forged death, or a hostile write; nothing may panic or hang.
fn mpmc_op(q: &mpmc::Queue<u64>, map: &mut memmap2::MmapMut, op: u8, arg: u8) {
    let zero = Duration::ZERO;
    let lane = |member: usize, k: u8| 640 + 128 * member + 48 + 8 * usize::from(k % 8);
    match (op >> 1) % 8 {
        0 => drop(q.try_push(u64::from(arg))),
        1 => drop(q.push_timeout(u64::from(arg), zero)),
        2 => drop(q.try_pop()),
        3 => drop(q.pop_timeout(zero)),
        4 => {
            // A consumer (of a member nobody holds) claims the head and dies.
            let head = get(map, 0);
            put(map, 0, head.wrapping_add(1));
            put(map, lane(63, arg), head.wrapping_add(1) | 1 << 63);
        }
        5 => {
            // A producer claims the tail and dies.
            let tail = get(map, 128);
            put(map, 128, tail.wrapping_add(1));
            put(map, lane(62, arg), tail.wrapping_add(1));
        }
        6 => {
            // A word of garbage into the control block, a lane, or a slot.
            let at = (usize::from(arg) * 8 * 37) % (MPMC_CONTROL + 8 * 16);
            put(map, at & !7, u64::from(arg).wrapping_mul(0x0101_0101_0101_0101));
        }
        _ => {
            let _ = (q.len(), q.is_empty(), q.is_full(), q.capacity());
        }
    }
}
