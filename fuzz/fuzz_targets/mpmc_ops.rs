//! Arbitrary sequences of MPMC operations from two handles (a clone and a second open),
//! checked against a `VecDeque` model. Capacity 8, fresh per input.
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

fuzz_target!(|data: &[u8]| {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let opts = Options::new().dir(dir());
    let name = format!("m{}", NEXT.fetch_add(1, Ordering::Relaxed));
    let a = mpmc::Queue::<u32>::create_with(&name, 8, &opts).unwrap();
    let b = mpmc::Queue::<u32>::open_with(&name, &opts).unwrap();
    let c = a.clone();
    mpmc::Queue::<u32>::unlink_with(&name, &opts).unwrap();
    let handles = [&a, &b, &c];

    let mut model: VecDeque<u32> = VecDeque::new();
    let mut next = 0u32;
    for &op in data {
        let q = handles[usize::from(op >> 6) % 3];
        match op & 3 {
            0 | 1 => match q.try_push(next) {
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
            2 => match q.try_pop() {
                Ok(v) => assert_eq!(Some(v), model.pop_front()),
                Err(PopError::Empty) => assert!(model.is_empty(), "Empty with values left"),
                Err(e) => panic!("pop: {e}"),
            },
            _ => {
                assert_eq!(q.len(), model.len());
                assert_eq!(q.is_full(), model.len() == 8);
            }
        }
    }
});
