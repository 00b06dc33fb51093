//! Drives the raw primitives from arbitrary initial bytes, as a crashed or hostile peer
//! could leave them, through arbitrary non-blocking operations.
//!
//! Input: 40 + 8 + 8 + 8 bytes of initial state (RawLock, RawEvent, RawCondition,
//! RawSemaphore), then one operation per byte. Nothing may panic (other than the documented
//! re-entry panic, which non-blocking forms never raise), hang (every wait has a zero
//! timeout), or touch memory outside the values.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use shmsync::raw::{RawCondition, RawEvent, RawLock, RawSemaphore};

#[repr(C, align(8))]
struct State {
    lock: RawLock,
    event: RawEvent,
    cond: RawCondition,
    sem: RawSemaphore,
}

const STATE_LEN: usize = size_of::<State>();

fuzz_target!(|data: &[u8]| {
    if data.len() < STATE_LEN {
        return;
    }
    let mut state = State {
        lock: RawLock::new(),
        event: RawEvent::new(),
        cond: RawCondition::new(),
        sem: RawSemaphore::new(0),
    };
    // SAFETY: every field is ShmSafe: valid for every bit pattern, as peers may leave it.
    unsafe {
        std::ptr::copy_nonoverlapping(
            data.as_ptr(),
            (&mut state as *mut State).cast::<u8>(),
            STATE_LEN,
        )
    };
    let mut held = None;
    for &op in &data[STATE_LEN..] {
        match op % 12 {
            0 => {
                if held.is_none() {
                    held = state.lock.try_lock().ok();
                }
            }
            1 => held = None,
            2 => {
                if let Err(shmsync::TryLockError::OwnerDied(mut g)) = state.lock.try_lock() {
                    if op & 0x80 != 0 {
                        g.mark_consistent();
                    }
                }
            }
            3 => state.event.set(),
            4 => state.event.clear(),
            5 => {
                let _ = state.event.wait_timeout(Duration::ZERO);
            }
            6 => state.cond.notify_one(),
            7 => state.cond.notify_all(),
            8 => {
                if let Some(g) = held.take() {
                    held = state.cond.wait_timeout(g, Duration::ZERO).ok().map(|(g, _)| g);
                }
            }
            9 => {
                let _ = state.sem.try_acquire();
            }
            10 => {
                let _ = state.sem.release();
            }
            _ => {
                let _ = (
                    state.sem.value(),
                    state.sem.max(),
                    state.lock.is_locked(),
                    state.event.is_set(),
                );
            }
        }
    }
    drop(held);
});
