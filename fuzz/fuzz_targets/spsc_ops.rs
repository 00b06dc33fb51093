//! Arbitrary sequences of SPSC operations, checked against a `VecDeque` model.
//!
//! Each input byte is an operation: push, pop, write a chunk of some size and commit part
//! of it, read a chunk and commit part of it, or query the length. Producer and consumer
//! live in this one process on one queue of capacity 8 (fresh per input), so every
//! wrap-around and partial commit is reachable.
#![no_main]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

use libfuzzer_sys::fuzz_target;
use shmsync::{ChunkError, Options, PopError, PushError, spsc};

#[path = "shared/scratch.rs"]
mod scratch;

fn dir() -> &'static std::path::Path {
    scratch::dir("spsc")
}

fuzz_target!(|data: &[u8]| {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let opts = Options::new().dir(dir());
    let name = format!("q{}", NEXT.fetch_add(1, Ordering::Relaxed));
    let mut tx = spsc::Producer::<u32>::create_with(&name, 8, &opts).unwrap();
    let mut rx = spsc::Consumer::<u32>::open_with(&name, &opts).unwrap();
    spsc::Producer::<u32>::unlink_with(&name, &opts).unwrap();

    let mut model: VecDeque<u32> = VecDeque::new();
    let mut next = 0u32;
    for &op in data {
        let arg = usize::from(op >> 3);
        match op & 7 {
            0 | 1 => match tx.try_push(next) {
                Ok(()) => {
                    model.push_back(next);
                    next += 1;
                }
                Err(PushError::Full(v)) => {
                    assert_eq!(v, next);
                    assert_eq!(model.len(), 8, "Full with room left");
                }
                Err(e) => panic!("push: {e}"),
            },
            2 | 3 => match rx.try_pop() {
                Ok(v) => assert_eq!(Some(v), model.pop_front()),
                Err(PopError::Empty) => assert!(model.is_empty(), "Empty with values left"),
                Err(e) => panic!("pop: {e}"),
            },
            4 => {
                let n = arg % 10;
                match tx.write_chunk(n) {
                    Ok(mut chunk) => {
                        assert!(model.len() + n <= 8);
                        let (a, b) = chunk.as_mut_slices();
                        assert_eq!(a.len() + b.len(), n);
                        for (slot, v) in a.iter_mut().chain(b.iter_mut()).zip(next..) {
                            *slot = v;
                        }
                        let k = if n == 0 { 0 } else { usize::from(op) % (n + 1) };
                        chunk.commit(k);
                        for _ in 0..k {
                            model.push_back(next);
                            next += 1;
                        }
                    }
                    Err(ChunkError::TooFewSlots) => assert!(model.len() + n > 8),
                    Err(e) => panic!("write_chunk: {e}"),
                }
            }
            5 => {
                let n = arg % 10;
                match rx.read_chunk(n) {
                    Ok(mut chunk) => {
                        let (a, b) = chunk.as_slices();
                        let got: Vec<u32> = a.iter().chain(b).copied().collect();
                        let want: Vec<u32> = model.iter().take(n).copied().collect();
                        assert_eq!(got, want);
                        let k = if n == 0 { 0 } else { usize::from(op) % (n + 1) };
                        chunk.commit(k);
                        model.drain(..k);
                    }
                    Err(ChunkError::TooFewSlots) => assert!(model.len() < n),
                    Err(e) => panic!("read_chunk: {e}"),
                }
            }
            _ => {
                assert_eq!(rx.len(), model.len());
                assert_eq!(tx.len(), model.len());
            }
        }
    }
});
