//! Regression tests for kill-loop finding 1: a waiter chosen for the single wake-up of a
//! lock, semaphore or condition variable is killed before it acts on it, and the other
//! waiters must not sleep on for ever.
//!
//! Each test puts a child process to sleep on the primitive, then writes, through a second
//! mapping of the segment, exactly the word such a death leaves (a free lock, or one
//! marked `OWNER_DIED` with no owner; a permit counted with the waiters flag cleared; a
//! condition's sequence moved on), without any wake-up, as the dead waiter took it with
//! it. The child must then get through within a generous bound; before the sleeps were
//! sliced it slept until its own 5 s timeout and the test failed.
#![allow(clippy::disallowed_types)] // tests are users: they write the words with std atomics
#![cfg(not(miri))]

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::{Proc, Remove, arg, report, role, spawn, unique_name};
use shmsync::raw::{RawCondition, RawLock, RawSemaphore};
use shmsync::{Shared, ShmSafe, TryLockError};

const LIMIT: Duration = Duration::from_secs(30);
/// The sleeping child's own bound: it must get through well before this.
const CHILD_WAIT: Duration = Duration::from_secs(5);
/// What counts as "woken at once" here (the slice is 10 ms; this is generous).
const PROMPT: Duration = Duration::from_secs(2);

/// A thread id no thread has (above `PID_MAX_LIMIT`, 2^22), below the not-recoverable value.
const NOBODY: u32 = 0x3FFF_0001;
const OWNER_DIED: u32 = 0x4000_0000;
const WAITERS: u32 = 0x8000_0000;

/// The first word of a raw primitive (each keeps its futex word first, repr(C)), through
/// the parent's own mapping.
fn word_of<T>(value: &T) -> &AtomicU32 {
    // SAFETY: RawLock, RawSemaphore and RawCondition are repr(C) with a 4-byte-aligned
    // u32 futex word at offset 0, alive as long as `value`.
    unsafe { &*(value as *const T as *const AtomicU32) }
}

/// Waits until the child has said it is about to sleep, then long enough for it to be
/// asleep in the kernel, and checks that the word still says so.
fn let_it_fall_asleep(child: &mut Proc, word: &AtomicU32, flag: u32) {
    child.expect("waiting", LIMIT);
    let asleep_by = Instant::now() + Duration::from_secs(5);
    // The child sets `flag` just before its futex wait; give it time to enter the kernel.
    while word.load(Ordering::Relaxed) & flag == 0 {
        assert!(Instant::now() < asleep_by, "the child never announced its sleep");
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(200));
}

fn lock_sleeper_is_not_stranded(test: &str, left_behind: u32, expect: &str) {
    if role().is_some() {
        let lock = Shared::<RawLock>::open(&arg("OBJ")).unwrap();
        report("waiting");
        let start = Instant::now();
        let outcome = match lock.try_lock_for(CHILD_WAIT) {
            Ok(g) => {
                drop(g);
                "clean"
            }
            Err(TryLockError::OwnerDied(mut g)) => {
                g.mark_consistent();
                "owner-died"
            }
            Err(TryLockError::WouldBlock) => "timed-out",
            Err(TryLockError::NotRecoverable) => "not-recoverable",
            Err(_) => "other",
        };
        report(&format!("outcome={outcome} ms={}", start.elapsed().as_millis()));
        return;
    }
    let name = unique_name("dead-waiter-lock");
    let _cleanup = Remove::shm(&name);
    // Held by nobody alive, with the waiters flag the sleeper will see.
    let lock = Shared::<RawLock>::create(&name, |l| {
        *l = RawLock::new();
        word_of(l).store(NOBODY, Ordering::Relaxed);
    })
    .unwrap();
    let mut child = spawn(test, "sleeper", &[("OBJ", &name)]);
    let word = word_of(&*lock);
    let_it_fall_asleep(&mut child, word, WAITERS);
    // What the unlock (or the kernel) and the killed wake-up receiver leave: no wake-up.
    word.store(left_behind, Ordering::Release);
    let line = child.expect("outcome=", LIMIT);
    child.wait_success(LIMIT);
    let (outcome, ms) = line.split_once(" ms=").unwrap();
    assert_eq!(outcome, expect, "{line}");
    assert!(Duration::from_millis(ms.parse().unwrap()) < CHILD_WAIT, "{line}");
    Shared::<RawLock>::unlink(&name).unwrap();
}

#[test]
fn a_lock_left_free_after_a_killed_wake_receiver_is_taken() {
    lock_sleeper_is_not_stranded(
        "a_lock_left_free_after_a_killed_wake_receiver_is_taken",
        0,
        "clean",
    );
}

#[test]
fn a_lock_left_owner_died_without_owner_is_taken_and_reported() {
    // The kernel marked the dead owner's lock and woke one waiter, which was killed too.
    lock_sleeper_is_not_stranded(
        "a_lock_left_owner_died_without_owner_is_taken_and_reported",
        OWNER_DIED,
        "owner-died",
    );
}

#[test]
fn a_semaphore_permit_left_by_a_killed_wake_receiver_is_taken() {
    if role().is_some() {
        let sem = Shared::<RawSemaphore>::open(&arg("OBJ")).unwrap();
        report("waiting");
        let start = Instant::now();
        let got = sem.acquire_timeout(CHILD_WAIT);
        report(&format!("got={got} ms={}", start.elapsed().as_millis()));
        return;
    }
    let name = unique_name("dead-waiter-sem");
    let _cleanup = Remove::shm(&name);
    let sem = Shared::<RawSemaphore>::create(&name, |s| *s = RawSemaphore::new(0)).unwrap();
    let mut child = spawn(
        "a_semaphore_permit_left_by_a_killed_wake_receiver_is_taken",
        "sleeper",
        &[("OBJ", &name)],
    );
    let word = word_of(&*sem);
    let_it_fall_asleep(&mut child, word, WAITERS);
    // A release cleared the flag and added the permit; the sleeper it woke was killed.
    word.store(1, Ordering::Release);
    let line = child.expect("got=", LIMIT);
    child.wait_success(LIMIT);
    let (got, ms) = line.split_once(" ms=").unwrap();
    assert_eq!(got, "true", "{line}");
    assert!(Duration::from_millis(ms.parse().unwrap()) < PROMPT, "{line}");
    assert_eq!(sem.value(), 0, "the permit was taken once");
    Shared::<RawSemaphore>::unlink(&name).unwrap();
}

#[repr(C)]
struct Guarded {
    lock: RawLock,
    cond: RawCondition,
}
// SAFETY: repr(C) of two ShmSafe raw primitives.
unsafe impl ShmSafe for Guarded {}

#[test]
fn a_notification_taken_by_a_killed_waiter_still_reaches_the_others() {
    if role().is_some() {
        let g = Shared::<Guarded>::open(&arg("OBJ")).unwrap();
        let guard = g.lock.lock().unwrap();
        report("waiting");
        let start = Instant::now();
        let (guard, timed_out) = g.cond.wait_timeout(guard, CHILD_WAIT).unwrap();
        drop(guard);
        report(&format!("timed_out={timed_out} ms={}", start.elapsed().as_millis()));
        return;
    }
    let name = unique_name("dead-waiter-cond");
    let _cleanup = Remove::shm(&name);
    let g = Shared::<Guarded>::create(&name, |_| {}).unwrap();
    let mut child = spawn(
        "a_notification_taken_by_a_killed_waiter_still_reaches_the_others",
        "sleeper",
        &[("OBJ", &name)],
    );
    let word = word_of(&g.cond);
    // The waiter count is bits 0-9: the child registered once it has counted itself.
    let_it_fall_asleep(&mut child, word, 0x3FF);
    // notify_one bumped the sequence (bits 20-31) and owed one notification (bits 10-19),
    // and its one wake-up went to a waiter that was killed before taking it.
    word.fetch_add((1 << 20) | (1 << 10), Ordering::Release);
    let line = child.expect("timed_out=", LIMIT);
    child.wait_success(LIMIT);
    let (timed_out, ms) = line.split_once(" ms=").unwrap();
    assert_eq!(timed_out, "false", "{line}");
    assert!(Duration::from_millis(ms.parse().unwrap()) < PROMPT, "{line}");
    Shared::<Guarded>::unlink(&name).unwrap();
}
