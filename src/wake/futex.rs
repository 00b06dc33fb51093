//! The only module that makes futex system calls.
//!
//! Every word lives in memory that other processes map, so every call is a *shared*
//! futex: never `FUTEX_PRIVATE_FLAG`, whose wake-ups would stay inside one process.
//!
//! Timeouts are turned once into an absolute `CLOCK_MONOTONIC` [`Deadline`] and waited
//! with `FUTEX_WAIT_BITSET` (which takes an absolute time), so a wait interrupted by a
//! signal and retried never waits longer than asked.
//!
//! Under `cfg(loom)` the calls are modelled by a loom condition variable (see `model`): a
//! lost wake-up becomes a deadlock that loom reports. Every caller re-checks its condition
//! in a loop, as it must anyway: futex wake-ups may be spurious.

use std::time::{Duration, Instant};

use rustix::time::{ClockId, Timespec};

use crate::loom::AtomicU32;

/// An absolute point on `CLOCK_MONOTONIC`, or never.
///
/// Built once from a `Duration` or an `Instant` at the start of a timed operation and
/// passed down unchanged, so that retries after spurious wake-ups or `EINTR` keep the
/// caller's original bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Deadline(Option<Timespec>);

/// How long a blocking call may wait, turned into a [`Deadline`] only once it has to: a
/// call that finds its work done at once reads no clock (a clock read costs about as much
/// as a whole queue operation).
#[derive(Clone, Copy, Debug)]
#[cfg_attr(loom, allow(dead_code))] // the queues and pipes, which loom builds leave out
pub(crate) enum Wait {
    Forever,
    For(Duration),
    Until(Instant),
}

#[cfg_attr(loom, allow(dead_code))]
impl Wait {
    /// The deadline, counted from now.
    pub(crate) fn deadline(self) -> Deadline {
        match self {
            Self::Forever => Deadline::never(),
            Self::For(timeout) => Deadline::after(timeout),
            Self::Until(instant) => Deadline::at(instant),
        }
    }
}

const NANOS_PER_SEC: i64 = 1_000_000_000;

fn monotonic_now() -> Timespec {
    rustix::time::clock_gettime(ClockId::Monotonic)
}

/// `now + d`, or `None` when that overflows (which means: never).
fn add(now: Timespec, d: Duration) -> Option<Timespec> {
    let secs = i64::try_from(d.as_secs()).ok()?;
    let mut tv_sec = now.tv_sec.checked_add(secs)?;
    // Both parts are below one second, so the sum is below two.
    let mut tv_nsec = now.tv_nsec + i64::from(d.subsec_nanos());
    if tv_nsec >= NANOS_PER_SEC {
        tv_nsec -= NANOS_PER_SEC;
        tv_sec = tv_sec.checked_add(1)?;
    }
    Some(Timespec { tv_sec, tv_nsec })
}

fn is_before(a: &Timespec, b: &Timespec) -> bool {
    (a.tv_sec, a.tv_nsec) < (b.tv_sec, b.tv_nsec)
}

impl Deadline {
    /// A deadline that never passes.
    pub(crate) const fn never() -> Self {
        Self(None)
    }

    /// `timeout` from now. A timeout too long to represent never passes.
    pub(crate) fn after(timeout: Duration) -> Self {
        Self(add(monotonic_now(), timeout))
    }

    /// The monotonic time of `instant` (std's `Instant` is `CLOCK_MONOTONIC` on Linux,
    /// but opaque, so it is converted through the distance from now).
    pub(crate) fn at(instant: Instant) -> Self {
        Self::after(instant.saturating_duration_since(Instant::now()))
    }

    /// Whether the deadline is in the past.
    pub(crate) fn has_passed(&self) -> bool {
        match &self.0 {
            None => false,
            Some(end) => !is_before(&monotonic_now(), end),
        }
    }

    /// The earlier of this deadline and `max` from now: for sleeping in slices.
    pub(crate) fn capped(&self, max: Duration) -> Self {
        match self.remaining() {
            Some(left) if left < max => *self,
            _ => Self::after(max),
        }
    }

    /// This deadline, or [`LOST_WAKE_SLICE`] from now if that comes first: how the
    /// primitives whose single wake-up a dying process can swallow (lock, semaphore,
    /// condition) bound each sleep. Under loom, which explores schedules rather than
    /// time, the deadline itself (a lost wake-up must show there as a deadlock), unless a
    /// model of a dying waiter turns the slices on ([`loom_slices`]).
    pub(crate) fn sliced(&self) -> Self {
        #[cfg(not(loom))]
        return self.capped(LOST_WAKE_SLICE);
        #[cfg(loom)]
        return if LOOM_SLICES.with(|on| on.get()) { self.capped(LOST_WAKE_SLICE) } else { *self };
    }

    /// Time left until the deadline (zero once passed), or `None` for never.
    pub(crate) fn remaining(&self) -> Option<Duration> {
        let end = self.0.as_ref()?;
        let now = monotonic_now();
        if !is_before(&now, end) {
            return Some(Duration::ZERO);
        }
        let mut secs = end.tv_sec - now.tv_sec;
        let mut nanos = end.tv_nsec - now.tv_nsec;
        if nanos < 0 {
            nanos += NANOS_PER_SEC;
            secs -= 1;
        }
        // Both are non-negative here because `now < end`.
        Some(Duration::new(secs.unsigned_abs(), u32::try_from(nanos).unwrap_or(0)))
    }
}

/// The longest a lock, semaphore or condition waiter sleeps before it looks at its word
/// again. The net under the one wake-up that no protocol can protect: a waiter chosen by
/// `FUTEX_WAKE` that is killed before it acts on it (see docs/RELIABILITY.md). It is also
/// the worst extra latency such a death adds for the waiters left behind; each sleeper
/// pays one spurious return per slice, about 100 a second, a few microseconds each.
pub(crate) const LOST_WAKE_SLICE: Duration = Duration::from_millis(10);

#[cfg(loom)]
loom::thread_local! {
    static LOOM_SLICES: std::cell::Cell<bool> = std::cell::Cell::new(false);
}

/// Under loom: makes this thread's lock, semaphore and condition sleeps sliced (a timed
/// wait, which the loom futex model ends at once), as they are outside loom. For models
/// in which a waiter dies after its wake-up: only the slices save the others there.
#[cfg(all(loom, test))]
pub(crate) fn loom_slices(on: bool) {
    LOOM_SLICES.with(|s| s.set(on));
}

/// How a [`wait`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WaitOutcome {
    /// Woken, interrupted, spurious, or the word no longer held `expected`: re-check.
    Woken,
    /// The deadline passed.
    TimedOut,
}

/// The sleeping half of every "flag, then wait" protocol here: raises `flag` in `word`
/// (unless `current` has it already), then sleeps while the word holds exactly that
/// flagged value, so that any change by the waking side, which clears or reads the flag
/// in the same read-modify-write as its update, either precedes the sleep (and the kernel
/// refuses it) or wakes it.
///
/// Returns `Err(now)` if the word changed before the flag went up (the caller re-examines
/// `now`, read with Acquire), else how the wait ended.
pub(crate) fn flag_and_wait(
    word: &AtomicU32,
    current: u32,
    flag: u32,
    deadline: &Deadline,
) -> Result<WaitOutcome, u32> {
    Ok(wait(word, raise(word, current, flag)?, deadline))
}

/// Raises `flag` in `word` if it holds `current` (a no-op if the flag is up already);
/// returns the flagged value, or `Err(now)` if the word had changed. How a sleeper asks
/// to be woken: the waker sees the flag and makes the wake syscall.
pub(crate) fn raise(word: &AtomicU32, current: u32, flag: u32) -> Result<u32, u32> {
    use crate::loom::Ordering;
    let flagged = current | flag;
    if current & flag == 0 {
        word.compare_exchange(current, flagged, Ordering::Relaxed, Ordering::Acquire)?;
    }
    Ok(flagged)
}

/// Raises `flag` in `word` whatever it holds, and returns the flagged value: the announce
/// of a sleeper that re-checks its condition afterwards (a wait set on an event, a
/// semaphore or a lock; a side on its peer's role word).
#[cfg_attr(loom, allow(dead_code))]
pub(crate) fn raise_now(word: &AtomicU32, flag: u32) -> u32 {
    let mut current = word.load(crate::loom::Ordering::Acquire);
    loop {
        match raise(word, current, flag) {
            Ok(flagged) => return flagged,
            Err(now) => current = now,
        }
    }
}

/// `futex(word, FUTEX_WAIT_BITSET, expected, deadline, NULL, FUTEX_BITSET_MATCH_ANY)`:
/// sleeps while `*word == expected`, until woken or until `deadline`.
///
/// Returns at once when the word holds another value. Callers loop on their own
/// condition: every return except `TimedOut` may be spurious.
#[cfg(not(loom))]
pub(crate) fn wait(word: &AtomicU32, expected: u32, deadline: &Deadline) -> WaitOutcome {
    use rustix::io::Errno;
    use rustix::thread::futex;

    // Checked before the syscall so that a passed deadline costs no kernel entry.
    if deadline.has_passed() {
        return WaitOutcome::TimedOut;
    }
    // Shared: no FUTEX_PRIVATE_FLAG, ever. No FUTEX_CLOCK_REALTIME: the deadline is on
    // CLOCK_MONOTONIC. The bitset is FUTEX_BITSET_MATCH_ANY (all ones).
    let shared = futex::Flags::empty();
    let timeout = deadline.0.as_ref();
    match futex::wait_bitset(word.as_std(), shared, expected, timeout, std::num::NonZeroU32::MAX) {
        Ok(()) | Err(Errno::AGAIN) | Err(Errno::INTR) => WaitOutcome::Woken,
        Err(Errno::TIMEDOUT) => WaitOutcome::TimedOut,
        Err(other) => {
            // EFAULT and EINVAL cannot happen for a valid, aligned `&AtomicU32` and a
            // normalised timespec. Reporting a wake-up keeps the caller's loop, and with
            // it the caller's own deadline check, in charge.
            debug_assert!(false, "futex wait failed: {other}");
            WaitOutcome::Woken
        }
    }
}

/// `futex_waitv(words, 0, deadline, CLOCK_MONOTONIC)`: sleeps until any of the words is
/// woken or holds another value than expected, or the deadline passes. Shared futexes,
/// 32-bit words. Every return but `TimedOut` may be spurious.
#[cfg(not(loom))]
pub(crate) fn wait_any(words: &[(&AtomicU32, u32)], deadline: &Deadline) -> WaitOutcome {
    use rustix::io::Errno;
    use rustix::thread::futex;

    if deadline.has_passed() {
        return WaitOutcome::TimedOut;
    }
    let waits: Vec<futex::Wait> = words
        .iter()
        .map(|(word, expected)| {
            let mut w = futex::Wait::new();
            w.val = u64::from(*expected);
            w.uaddr = futex::WaitPtr::new(word.as_std().as_ptr().cast());
            w.flags = futex::WaitFlags::SIZE_U32; // shared: no FUTEX2_PRIVATE
            w
        })
        .collect();
    let timeout = deadline.0.as_ref();
    match futex::waitv(&waits, futex::WaitvFlags::empty(), timeout, ClockId::Monotonic) {
        Ok(_) | Err(Errno::AGAIN) | Err(Errno::INTR) => WaitOutcome::Woken,
        Err(Errno::TIMEDOUT) => WaitOutcome::TimedOut,
        Err(other) => {
            debug_assert!(false, "futex_waitv failed: {other}");
            WaitOutcome::Woken
        }
    }
}

/// `futex(word, FUTEX_WAKE, 1)`: wakes at most one waiter. Returns how many woke.
#[cfg(not(loom))]
pub(crate) fn wake_one(word: &AtomicU32) -> usize {
    wake(word, 1)
}

/// `futex(word, FUTEX_WAKE, INT_MAX)`: wakes every waiter. Returns how many woke.
#[cfg(not(loom))]
pub(crate) fn wake_all(word: &AtomicU32) -> usize {
    wake(word, i32::MAX as u32)
}

#[cfg(not(loom))]
fn wake(word: &AtomicU32, count: u32) -> usize {
    use rustix::thread::futex;
    // FUTEX_WAKE only fails for a bad address or op, impossible for a live reference.
    futex::wake(word.as_std(), futex::Flags::empty(), count).unwrap_or(0)
}

/// The loom model of the kernel's futex table: one lock for all words (the kernel's
/// hash-bucket lock), a queue of sleepers, and a condition variable they sleep on.
/// `wait` checks the word under the lock and queues itself atomically with releasing it,
/// so a wake that follows a change of the word is never missed; `wake_one` wakes exactly
/// the oldest sleeper on that word, as the kernel does. A sleeper that nobody wakes
/// blocks for good and loom reports the deadlock: that is how the models catch lost
/// wake-ups.
#[cfg(loom)]
mod model {
    use loom::sync::{Condvar, Mutex};

    pub(super) struct Sleeper {
        /// The words it sleeps on (one for `wait`, several for `wait_any`).
        pub(super) words: Vec<usize>,
        pub(super) id: u64,
        pub(super) woken: bool,
    }

    #[derive(Default)]
    pub(super) struct Table {
        pub(super) next_id: u64,
        pub(super) sleepers: Vec<Sleeper>,
    }

    loom::lazy_static! {
        pub(super) static ref TABLE: (Mutex<Table>, Condvar) = (Mutex::new(Table::default()), Condvar::new());
    }
}

#[cfg(loom)]
pub(crate) fn wait(word: &AtomicU32, expected: u32, deadline: &Deadline) -> WaitOutcome {
    wait_any(&[(word, expected)], deadline)
}

/// The loom model of `futex_waitv`: checks every word under the table's lock and sleeps
/// on all of them at once; a wake of any of them ends the sleep. As [`wait`].
#[cfg(loom)]
pub(crate) fn wait_any(words: &[(&AtomicU32, u32)], deadline: &Deadline) -> WaitOutcome {
    use crate::loom::Ordering;
    if deadline.has_passed() {
        return WaitOutcome::TimedOut;
    }
    let (lock, sleepers) = &*model::TABLE;
    let mut table = lock.lock().unwrap();
    if words.iter().any(|(word, expected)| word.load(Ordering::SeqCst) != *expected) {
        return WaitOutcome::Woken;
    }
    if deadline.0.is_some() {
        drop(table);
        crate::loom::thread::yield_now();
        return WaitOutcome::Woken;
    }
    let id = table.next_id;
    table.next_id += 1;
    let addrs = words.iter().map(|(w, _)| *w as *const AtomicU32 as usize).collect();
    table.sleepers.push(model::Sleeper { words: addrs, id, woken: false });
    loop {
        table = sleepers.wait(table).unwrap();
        if let Some(i) = table.sleepers.iter().position(|s| s.id == id && s.woken) {
            table.sleepers.remove(i);
            return WaitOutcome::Woken;
        }
    }
}

#[cfg(loom)]
pub(crate) fn wake_one(word: &AtomicU32) -> usize {
    wake(word, 1)
}

#[cfg(loom)]
pub(crate) fn wake_all(word: &AtomicU32) -> usize {
    wake(word, usize::MAX)
}

#[cfg(loom)]
fn wake(word: &AtomicU32, count: usize) -> usize {
    let (lock, sleepers) = &*model::TABLE;
    let mut table = lock.lock().unwrap();
    let addr = word as *const AtomicU32 as usize;
    let mut woken = 0;
    for s in table.sleepers.iter_mut().filter(|s| s.words.contains(&addr) && !s.woken).take(count) {
        s.woken = true;
        woken += 1;
    }
    sleepers.notify_all();
    woken
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::loom::Ordering;
    use std::sync::Arc;

    #[test]
    fn add_carries_nanoseconds() {
        let now = Timespec { tv_sec: 5, tv_nsec: 900_000_000 };
        let end = add(now, Duration::from_millis(250)).unwrap();
        assert_eq!((end.tv_sec, end.tv_nsec), (6, 150_000_000));
        assert_eq!(add(now, Duration::MAX), None);
    }

    #[test]
    fn deadline_passes_and_never_does_not() {
        assert!(Deadline::after(Duration::ZERO).has_passed());
        assert!(!Deadline::never().has_passed());
        assert_eq!(Deadline::never().remaining(), None);
        let d = Deadline::after(Duration::from_secs(3600));
        assert!(!d.has_passed());
        let left = d.remaining().unwrap();
        assert!(left > Duration::from_secs(3590) && left <= Duration::from_secs(3600));
        assert_eq!(Deadline::at(Instant::now()).remaining(), Some(Duration::ZERO));
        assert_eq!(Deadline::after(Duration::MAX), Deadline::never());
    }

    #[test]
    fn wait_returns_at_once_when_the_value_differs() {
        let word = AtomicU32::new(1);
        let d = Deadline::after(Duration::from_secs(10));
        assert_eq!(wait(&word, 0, &d), WaitOutcome::Woken);
    }

    #[test]
    fn wait_times_out_no_earlier_than_its_deadline() {
        let word = AtomicU32::new(0);
        let start = Instant::now();
        let d = Deadline::after(Duration::from_millis(30));
        while wait(&word, 0, &d) == WaitOutcome::Woken {}
        assert!(start.elapsed() >= Duration::from_millis(30));
    }

    #[test]
    fn wake_one_releases_a_sleeper() {
        let word = Arc::new(AtomicU32::new(0));
        let sleeper = {
            let word = Arc::clone(&word);
            std::thread::spawn(move || {
                let d = Deadline::after(Duration::from_secs(20));
                while word.load(Ordering::Acquire) == 0 {
                    if wait(&word, 0, &d) == WaitOutcome::TimedOut {
                        return false;
                    }
                }
                true
            })
        };
        word.store(1, Ordering::Release);
        // The sleeper may not be asleep yet; the store above makes it return anyway.
        wake_one(&word);
        assert!(sleeper.join().unwrap(), "the sleeper timed out instead of waking");
    }
}
