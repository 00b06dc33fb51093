//! Arbitrary sequences of MPMC operations from two handles (a clone and a second open),
//! single and in batches (`try_push_slice`, `try_pop_into`), checked against a `VecDeque`
//! model. Capacity 8, fresh per input.
//!
//! Deaths are fuzzed in the model too: an operation can forge, through a second mapping,
//! the state a process killed mid-operation leaves, with its mark in a lane of a member
//! no live process holds. A consumer killed after claiming the oldest value (that value is
//! lost; its slot must be released when a producer needs it) or a producer killed after
//! claiming a position (a hole, which consumers must step over), each also for a run of
//! two positions (a batch, its length in the lane's length byte). The model holds the
//! holes as `None`s: they take room until a pop passes them, and nothing else differs.
#![no_main]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use libfuzzer_sys::fuzz_target;
use shmsync::{Options, PopError, PushError, mpmc};

#[path = "shared/scratch.rs"]
mod scratch;

fn dir() -> &'static std::path::Path {
    scratch::dir("mpmc")
}

/// Offsets in the file (docs/design.md): the payload after the 128-byte header; in it
/// `head` at 0, `tail` at 128, member `i` at 640 + 128 i with lane `k`'s claim length at
/// +40 + k (a byte) and its mark at +48 + 8 k.
const PAYLOAD: usize = 128;
const CONSUMING: u64 = 1 << 63;
/// The slots, after the 8,832-byte control block: 16 bytes each for `u32`, stamp first.
const SLOTS: usize = 8832;

fn word(map: &memmap2::MmapMut, at: usize) -> &AtomicU64 {
    // SAFETY: 8-aligned offsets inside the mapping, which outlives the reference.
    unsafe { &*(map.as_ptr().add(PAYLOAD + at) as *const AtomicU64) }
}

/// Marks a claim of `len` positions from `start` in a free lane of member `member` (never
/// claimed by a live handle in this process); false if every lane is in use.
fn mark_dead_claim(
    map: &memmap2::MmapMut,
    member: usize,
    start: u64,
    len: u8,
    consuming: bool,
) -> bool {
    let base = 640 + 128 * member;
    let Some(k) = (0..8).find(|k| word(map, base + 48 + 8 * k).load(Ordering::SeqCst) == 0) else {
        return false;
    };
    // SAFETY: a byte inside the mapping, which outlives the reference.
    let length = unsafe { &*(map.as_ptr().add(PAYLOAD + base + 40 + k) as *const AtomicU8) };
    length.store(len, Ordering::SeqCst);
    let flag = if consuming { CONSUMING } else { 0 };
    word(map, base + 48 + 8 * k).store((start + 1) | flag, Ordering::SeqCst);
    true
}

/// The slot stamp of position `pos`.
fn stamp(map: &memmap2::MmapMut, pos: u64) -> u64 {
    word(map, SLOTS + 16 * (pos % 8) as usize).load(Ordering::SeqCst)
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
            0 => match q.try_push(next) {
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
            1 => {
                // A batch: a prefix goes in, as long as the free slots run (a slot a killed
                // consumer left unreleased ends the run until a producer releases it).
                let want = 1 + usize::from((op >> 2) & 7);
                let values: Vec<u32> = (next..next + want as u32).collect();
                let room = 8 - model.len();
                match q.try_push_slice(&values) {
                    Ok(n) => {
                        assert!(n >= 1 && n <= want.min(room), "pushed {n} of {want}, room {room}");
                        model.extend(values[..n].iter().map(|&v| Some(v)));
                        next += n as u32;
                    }
                    Err(PushError::Full(0)) => assert_eq!(room, 0, "Full with room left"),
                    Err(e) => panic!("push_slice: {e}"),
                }
            }
            2 => {
                while model.front() == Some(&None) {
                    model.pop_front(); // stepped over
                }
                if (op >> 2) & 1 == 0 {
                    match q.try_pop() {
                        Ok(v) => assert_eq!(Some(Some(v)), model.pop_front()),
                        Err(PopError::Empty) => assert!(model.is_empty(), "Empty with values left"),
                        Err(e) => panic!("pop: {e}"),
                    }
                } else {
                    // A batch: the values up to the next hole, at most the buffer's length.
                    let mut buf = vec![0u32; 1 + usize::from((op >> 3) & 7)];
                    let run = model.iter().take_while(|v| v.is_some()).count().min(buf.len());
                    match q.try_pop_into(&mut buf) {
                        Ok(n) => {
                            assert_eq!(n, run, "popped {n}, expected the run of {run}");
                            for &v in &buf[..n] {
                                assert_eq!(Some(Some(v)), model.pop_front());
                            }
                        }
                        Err(PopError::Empty) => assert!(model.is_empty(), "Empty with values left"),
                        Err(e) => panic!("pop_into: {e}"),
                    }
                }
            }
            _ => {
                let run: u8 = if (op >> 4) & 1 == 0 { 1 } else { 2 };
                match (op >> 2) & 3 {
                    // A consumer claims the oldest value(s) and is killed.
                    1 if model.iter().take(run.into()).filter(|v| v.is_some()).count()
                        == usize::from(run) =>
                    {
                        let head = word(&map, 0).load(Ordering::SeqCst);
                        if mark_dead_claim(&map, 63, head, run, true) {
                            word(&map, 0).fetch_add(u64::from(run), Ordering::SeqCst);
                            for _ in 0..run {
                                model.pop_front();
                            }
                        }
                    }
                    // A producer claims the next position(s) and is killed: only where a
                    // producer could claim them, free slots (not ones a killed consumer
                    // left unreleased, which a live producer releases first).
                    2 if model.len() + usize::from(run) <= 8 => {
                        let tail = word(&map, 128).load(Ordering::SeqCst);
                        let free = (0..u64::from(run)).all(|k| stamp(&map, tail + k) == tail + k);
                        if !free {
                            assert!(
                                q.try_push(next).is_ok(),
                                "room, once the dead slot is released"
                            );
                            model.push_back(Some(next));
                            next += 1;
                        } else if mark_dead_claim(&map, 62, tail, run, false) {
                            word(&map, 128).fetch_add(u64::from(run), Ordering::SeqCst);
                            for _ in 0..run {
                                model.push_back(None);
                            }
                        }
                    }
                    _ => {
                        assert_eq!(q.len(), model.len());
                        assert_eq!(q.is_full(), model.len() == 8);
                    }
                }
            }
        }
    }
});
