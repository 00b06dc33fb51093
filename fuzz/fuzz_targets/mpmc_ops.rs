//! Arbitrary sequences of MPMC operations from two handles (a clone and a second open),
//! checked against a `VecDeque` model. Capacity 8, fresh per input.
//!
//! Deaths are fuzzed in the model too: an operation can forge, through a second mapping,
//! the state a process killed mid-operation leaves, with its mark in a lane of a member
//! no live process holds. A consumer killed after claiming the oldest value (that value is
//! lost; its slot must be released when a producer needs it) or a producer killed after
//! claiming a position (a hole, which consumers must step over). The model holds the
//! holes as `None`s: they take room until a pop passes them, and nothing else differs.
#![no_main]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

use libfuzzer_sys::fuzz_target;
use shmsync::{Options, PopError, PushError, mpmc};

#[path = "shared/scratch.rs"]
mod scratch;

fn dir() -> &'static std::path::Path {
    scratch::dir("mpmc")
}

/// Offsets in the file (docs/design.md): the payload after the 128-byte header; in it
/// `head` at 0, `tail` at 128, member `i` at 640 + 128 i with lane `k` at +48 + 8 k.
const PAYLOAD: usize = 128;
const CONSUMING: u64 = 1 << 63;
/// The slots, after the 8,832-byte control block: 16 bytes each for `u32`, stamp first.
const SLOTS: usize = 8832;

fn word(map: &memmap2::MmapMut, at: usize) -> &AtomicU64 {
    // SAFETY: 8-aligned offsets inside the mapping, which outlives the reference.
    unsafe { &*(map.as_ptr().add(PAYLOAD + at) as *const AtomicU64) }
}

/// A free lane of member `member` (never claimed by a live handle in this process).
fn free_lane(map: &memmap2::MmapMut, member: usize) -> Option<&AtomicU64> {
    (0..8)
        .map(|k| word(map, 640 + 128 * member + 48 + 8 * k))
        .find(|l| l.load(Ordering::SeqCst) == 0)
}

fuzz_target!(|data: &[u8]| {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let opts = Options::new().dir(dir());
    let name = format!("m{}", NEXT.fetch_add(1, Ordering::Relaxed));
    let a = mpmc::Queue::<u32>::create_with(&name, 8, &opts).unwrap();
    let b = mpmc::Queue::<u32>::open_with(&name, &opts).unwrap();
    let c = a.clone();
    let file = std::fs::OpenOptions::new().read(true).write(true).open(dir().join(&name)).unwrap();
    mpmc::Queue::<u32>::unlink_with(&name, &opts).unwrap();
    // SAFETY: a second shared mapping of the queue's file.
    let map = unsafe { memmap2::MmapMut::map_mut(&file) }.unwrap();
    let handles = [&a, &b, &c];

    // `None`: a hole a killed producer left.
    let mut model: VecDeque<Option<u32>> = VecDeque::new();
    let mut next = 0u32;
    for &op in data {
        let q = handles[usize::from(op >> 6) % 3];
        match op & 3 {
            0 | 1 => match q.try_push(next) {
                Ok(()) => {
                    model.push_back(Some(next));
                    next += 1;
                }
                Err(PushError::Full(v)) => {
                    assert_eq!(v, next);
                    assert_eq!(model.len(), 8, "Full with room left");
                }
                Err(e) => panic!("push: {e}"),
            },
            2 => {
                while model.front() == Some(&None) {
                    model.pop_front(); // stepped over
                }
                match q.try_pop() {
                    Ok(v) => assert_eq!(Some(Some(v)), model.pop_front()),
                    Err(PopError::Empty) => assert!(model.is_empty(), "Empty with values left"),
                    Err(e) => panic!("pop: {e}"),
                }
            }
            _ => match (op >> 2) & 3 {
                // A consumer claims the oldest value and is killed.
                1 if matches!(model.front(), Some(Some(_))) => {
                    if let Some(lane) = free_lane(&map, 63) {
                        let head = word(&map, 0).fetch_add(1, Ordering::SeqCst);
                        lane.store((head + 1) | CONSUMING, Ordering::SeqCst);
                        model.pop_front();
                    }
                }
                // A producer claims the next position and is killed: only where a producer
                // could claim it, a free slot (not one a killed consumer left unreleased,
                // which a live producer releases first).
                2 if model.len() < 8 => {
                    let tail = word(&map, 128).load(Ordering::SeqCst);
                    let stamp = word(&map, SLOTS + 16 * (tail % 8) as usize).load(Ordering::SeqCst);
                    if stamp != tail {
                        assert!(q.try_push(next).is_ok(), "room, once the dead slot is released");
                        model.push_back(Some(next));
                        next += 1;
                    } else if let Some(lane) = free_lane(&map, 62) {
                        word(&map, 128).fetch_add(1, Ordering::SeqCst);
                        lane.store(tail + 1, Ordering::SeqCst);
                        model.push_back(None);
                    }
                }
                _ => {
                    assert_eq!(q.len(), model.len());
                    assert_eq!(q.is_full(), model.len() == 8);
                }
            },
        }
    }
});
