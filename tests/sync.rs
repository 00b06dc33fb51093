//! Lock, Event, Condition, Semaphore, Value, Array and `Shared<T>` across real processes,
//! including owners killed with SIGKILL.
#![allow(clippy::disallowed_types)] // tests are users: they put std atomics in their layouts
#![cfg(not(miri))]

mod common;

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Remove, arg, report, role, spawn, unique_name, wait_for_parent};
use shmsync::raw::{Mutex, RawEvent, RawLock};
use shmsync::{
    Array, Condition, Event, Lock, LockError, ReleaseError, Semaphore, Shared, ShmSafe,
    TryLockError, Value,
};

const LIMIT: Duration = Duration::from_secs(30);

/// Counters the tests share next to the primitive under test.
#[repr(C)]
struct Tally {
    value: AtomicU64,
    inside: AtomicU32,
    max_inside: AtomicU32,
    waiting: AtomicU32,
    woken: AtomicU32,
}
// SAFETY: repr(C), atomics only.
unsafe impl ShmSafe for Tally {}

fn tally(name: &str) -> Shared<Tally> {
    Shared::<Tally>::open(name).unwrap()
}

#[test]
fn lock_excludes_four_processes() {
    const PROCS: usize = 4;
    const ROUNDS: u64 = 2000;
    if role().as_deref() == Some("incrementer") {
        let lock = Lock::open(&arg("LOCK")).unwrap();
        let t = tally(&arg("TALLY"));
        wait_for_parent(LIMIT);
        for _ in 0..ROUNDS {
            let _g = lock.lock().unwrap();
            // A load and a separate store: any overlap between holders loses updates.
            let v = t.value.load(Ordering::Relaxed);
            std::hint::spin_loop();
            t.value.store(v + 1, Ordering::Relaxed);
        }
        return;
    }
    let (lock_name, tally_name) = (unique_name("lock"), unique_name("tally"));
    let _cleanup = (Remove::shm(&lock_name), Remove::shm(&tally_name));
    let lock = Lock::create(&lock_name).unwrap();
    let t = Shared::<Tally>::create(&tally_name, |_| {}).unwrap();
    let env = [("LOCK", lock_name.as_str()), ("TALLY", tally_name.as_str())];
    let mut kids: Vec<_> =
        (0..PROCS).map(|_| spawn("lock_excludes_four_processes", "incrementer", &env)).collect();
    for k in &mut kids {
        k.release();
    }
    for k in kids {
        k.wait_success(LIMIT);
    }
    let _g = lock.lock().unwrap();
    assert_eq!(t.value.load(Ordering::Relaxed), PROCS as u64 * ROUNDS);
    drop(_g);
    Lock::unlink(&lock_name).unwrap();
    Shared::<Tally>::unlink(&tally_name).unwrap();
}

#[test]
fn try_lock_and_timed_forms_see_another_process_holding() {
    if role().as_deref() == Some("holder") {
        let lock = Lock::open(&arg("LOCK")).unwrap();
        let _g = lock.lock().unwrap();
        report("holding");
        wait_for_parent(LIMIT);
        return;
    }
    let name = unique_name("held");
    let _cleanup = Remove::shm(&name);
    let lock = Lock::create(&name).unwrap();
    let mut holder =
        spawn("try_lock_and_timed_forms_see_another_process_holding", "holder", &[("LOCK", &name)]);
    holder.expect("holding", LIMIT);

    assert!(matches!(lock.try_lock(), Err(TryLockError::WouldBlock)));
    let start = Instant::now();
    assert!(matches!(lock.try_lock_for(Duration::from_millis(100)), Err(TryLockError::WouldBlock)));
    assert!(start.elapsed() >= Duration::from_millis(100), "gave up after {:?}", start.elapsed());
    let until = Instant::now() + Duration::from_millis(50);
    assert!(matches!(lock.try_lock_until(until), Err(TryLockError::WouldBlock)));
    assert!(Instant::now() >= until);

    holder.release();
    // Once the holder lets go, the timed form gets it.
    let g = lock.try_lock_for(LIMIT).unwrap();
    drop(g);
    holder.wait_success(LIMIT);
    Lock::unlink(&name).unwrap();
}

/// A child that takes the lock, says so, and waits to be killed.
fn hold_until_killed(lock_name: &str) -> ! {
    let lock = Lock::open(lock_name).unwrap();
    let g = lock.lock().unwrap();
    report("holding");
    std::thread::sleep(LIMIT);
    drop(g);
    unreachable!("the parent kills this process while it holds the lock");
}

#[test]
fn a_killed_owner_gives_owner_died_and_mark_consistent_recovers() {
    if role().as_deref() == Some("victim") {
        hold_until_killed(&arg("LOCK"));
    }
    let name = unique_name("died");
    let _cleanup = Remove::shm(&name);
    let lock = Lock::create(&name).unwrap();
    let mut victim = spawn(
        "a_killed_owner_gives_owner_died_and_mark_consistent_recovers",
        "victim",
        &[("LOCK", &name)],
    );
    victim.expect("holding", LIMIT);
    victim.kill();

    let start = Instant::now();
    let mut g = match lock.try_lock_for(LIMIT) {
        Err(TryLockError::OwnerDied(g)) => g,
        other => panic!("expected OwnerDied, got {other:?}"),
    };
    assert!(start.elapsed() < Duration::from_secs(2));
    assert!(!g.is_consistent());
    g.mark_consistent();
    drop(g);
    // Normal again, for this process and the next ones.
    drop(lock.lock().unwrap());
    drop(Lock::open(&name).unwrap().try_lock().unwrap());
    Lock::unlink(&name).unwrap();
}

#[test]
fn an_unrepaired_death_makes_the_lock_not_recoverable_for_everyone() {
    match role().as_deref() {
        Some("victim") => hold_until_killed(&arg("LOCK")),
        Some("latecomer") => {
            let lock = Lock::open(&arg("LOCK")).unwrap();
            assert!(matches!(lock.lock(), Err(LockError::NotRecoverable)));
            assert!(matches!(lock.try_lock(), Err(TryLockError::NotRecoverable)));
            report("refused");
            return;
        }
        _ => {}
    }
    let name = unique_name("unrecoverable");
    let _cleanup = Remove::shm(&name);
    let lock = Lock::create(&name).unwrap();
    let test = "an_unrepaired_death_makes_the_lock_not_recoverable_for_everyone";
    let mut victim = spawn(test, "victim", &[("LOCK", &name)]);
    victim.expect("holding", LIMIT);
    victim.kill();

    match lock.lock() {
        Err(LockError::OwnerDied(g)) => drop(g), // dropped without mark_consistent
        other => panic!("expected OwnerDied, got {other:?}"),
    }
    assert!(matches!(lock.lock(), Err(LockError::NotRecoverable)));
    assert!(matches!(
        lock.try_lock_for(Duration::from_millis(10)),
        Err(TryLockError::NotRecoverable)
    ));
    let mut latecomer = spawn(test, "latecomer", &[("LOCK", &name)]);
    latecomer.expect("refused", LIMIT);
    latecomer.wait_success(LIMIT);
    Lock::unlink(&name).unwrap();
}

#[test]
fn a_waiter_blocked_when_the_owner_dies_wakes_with_owner_died() {
    if role().as_deref() == Some("victim") {
        hold_until_killed(&arg("LOCK"));
    }
    let name = unique_name("blocked");
    let _cleanup = Remove::shm(&name);
    let lock = Lock::create(&name).unwrap();
    let mut victim = spawn(
        "a_waiter_blocked_when_the_owner_dies_wakes_with_owner_died",
        "victim",
        &[("LOCK", &name)],
    );
    victim.expect("holding", LIMIT);

    std::thread::scope(|s| {
        let blocked = s.spawn(|| {
            let result = lock.try_lock_for(LIMIT);
            let woke_at = Instant::now();
            (matches!(result, Err(TryLockError::OwnerDied(_))), woke_at)
        });
        // Let the waiter reach FUTEX_WAIT before the kill.
        std::thread::sleep(Duration::from_millis(200));
        assert!(!blocked.is_finished(), "the waiter must be blocked while the owner lives");
        let killed_at = Instant::now();
        victim.kill();
        let (owner_died, woke_at) = blocked.join().unwrap();
        assert!(owner_died, "the blocked waiter did not get OwnerDied");
        let latency = woke_at.saturating_duration_since(killed_at);
        eprintln!("kill to OwnerDied in a blocked waiter: {latency:?}");
        assert!(latency < Duration::from_secs(2), "took {latency:?}");
    });
    Lock::unlink(&name).unwrap();
}

#[test]
fn a_thread_exiting_with_the_lock_counts_as_a_death() {
    let name = unique_name("thread-exit");
    let _cleanup = Remove::shm(&name);
    let lock = Lock::create(&name).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| std::mem::forget(lock.lock().unwrap())).join().unwrap();
    });
    match lock.try_lock_for(LIMIT) {
        Err(TryLockError::OwnerDied(mut g)) => g.mark_consistent(),
        other => panic!("expected OwnerDied after the holder thread exited, got {other:?}"),
    }
    drop(lock.lock().unwrap());
    Lock::unlink(&name).unwrap();
}

#[test]
fn a_leaked_guard_keeps_its_mapping_alive() {
    let name = unique_name("leaked");
    let _cleanup = Remove::shm(&name);
    let first = Lock::create(&name).unwrap();
    std::mem::forget(first.lock().unwrap());
    // Dropping the handle must not unmap memory that this thread's robust list still
    // points into; later lock operations write next to that entry.
    drop(first);
    let other = unique_name("after-leak");
    let _cleanup2 = Remove::shm(&other);
    let second = Lock::create(&other).unwrap();
    for _ in 0..3 {
        drop(second.lock().unwrap());
    }
    let again = Lock::open(&name).unwrap();
    assert!(matches!(again.try_lock(), Err(TryLockError::WouldBlock)), "still held by this thread");
    Lock::unlink(&name).unwrap();
    Lock::unlink(&other).unwrap();
}

#[test]
fn event_times_out_and_set_wakes_three_processes() {
    if role().as_deref() == Some("waiter") {
        let ev = Event::open(&arg("EVENT")).unwrap();
        report("waiting");
        let got = ev.wait_timeout(LIMIT);
        report(&format!("woke {got}"));
        return;
    }
    let name = unique_name("event");
    let _cleanup = Remove::shm(&name);
    let ev = Event::create(&name).unwrap();
    let start = Instant::now();
    assert!(!ev.wait_timeout(Duration::from_millis(100)));
    assert!(start.elapsed() >= Duration::from_millis(100));

    let mut waiters: Vec<_> = (0..3)
        .map(|_| {
            spawn("event_times_out_and_set_wakes_three_processes", "waiter", &[("EVENT", &name)])
        })
        .collect();
    for w in &mut waiters {
        w.expect("waiting", LIMIT);
    }
    std::thread::sleep(Duration::from_millis(100));
    ev.set();
    for mut w in waiters {
        assert_eq!(w.expect("woke ", LIMIT), "true");
        w.wait_success(LIMIT);
    }
    assert!(ev.is_set());
    ev.clear();
    assert!(!ev.is_set());
    Event::unlink(&name).unwrap();
}

#[test]
fn condition_notify_one_wakes_one_and_notify_all_the_rest() {
    if role().as_deref() == Some("waiter") {
        let cond = Condition::open(&arg("COND")).unwrap();
        let t = tally(&arg("TALLY"));
        let g = cond.lock().unwrap();
        t.waiting.fetch_add(1, Ordering::SeqCst);
        let (g, timed_out) = cond.wait_timeout(g, LIMIT).unwrap();
        assert!(!timed_out, "never notified");
        t.woken.fetch_add(1, Ordering::SeqCst);
        drop(g);
        return;
    }
    let (cond_name, tally_name) = (unique_name("cond"), unique_name("cond-tally"));
    let _cleanup = (Remove::shm(&cond_name), Remove::shm(&tally_name));
    let cond = Condition::create(&cond_name).unwrap();
    let t = Shared::<Tally>::create(&tally_name, |_| {}).unwrap();
    let env = [("COND", cond_name.as_str()), ("TALLY", tally_name.as_str())];
    let test = "condition_notify_one_wakes_one_and_notify_all_the_rest";
    let waiters: Vec<_> = (0..3).map(|_| spawn(test, "waiter", &env)).collect();

    let deadline = Instant::now() + LIMIT;
    while t.waiting.load(Ordering::SeqCst) < 3 {
        assert!(Instant::now() < deadline, "the waiters never arrived");
        std::thread::sleep(Duration::from_millis(5));
    }
    // Each waiter counted itself under the lock; taking the lock here means the last one
    // has released it inside `wait`. The pause lets all three reach FUTEX_WAIT.
    drop(cond.lock().unwrap());
    std::thread::sleep(Duration::from_millis(200));

    cond.notify_one();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(t.woken.load(Ordering::SeqCst), 1, "notify_one must wake exactly one");

    cond.notify_all();
    for w in waiters {
        w.wait_success(LIMIT);
    }
    assert_eq!(t.woken.load(Ordering::SeqCst), 3);
    Condition::unlink(&cond_name).unwrap();
    Shared::<Tally>::unlink(&tally_name).unwrap();
}

#[test]
fn a_semaphore_of_two_admits_at_most_two_of_six_processes() {
    const ROUNDS: u32 = 40;
    if role().as_deref() == Some("worker") {
        let sem = Semaphore::open(&arg("SEM")).unwrap();
        let t = tally(&arg("TALLY"));
        wait_for_parent(LIMIT);
        for _ in 0..ROUNDS {
            assert!(sem.acquire_timeout(LIMIT), "starved");
            let now = t.inside.fetch_add(1, Ordering::SeqCst) + 1;
            t.max_inside.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(Duration::from_micros(200));
            t.inside.fetch_sub(1, Ordering::SeqCst);
            t.value.fetch_add(1, Ordering::SeqCst);
            sem.release().unwrap();
        }
        return;
    }
    let (sem_name, tally_name) = (unique_name("sem"), unique_name("sem-tally"));
    let _cleanup = (Remove::shm(&sem_name), Remove::shm(&tally_name));
    let sem = Semaphore::create(&sem_name, 2).unwrap();
    let t = Shared::<Tally>::create(&tally_name, |_| {}).unwrap();
    let env = [("SEM", sem_name.as_str()), ("TALLY", tally_name.as_str())];
    let mut kids: Vec<_> = (0..6)
        .map(|_| spawn("a_semaphore_of_two_admits_at_most_two_of_six_processes", "worker", &env))
        .collect();
    for k in &mut kids {
        k.release();
    }
    for k in kids {
        k.wait_success(LIMIT);
    }
    let max = t.max_inside.load(Ordering::SeqCst);
    assert!(max <= 2, "{max} processes were inside at once");
    assert!(max >= 1);
    assert_eq!(t.value.load(Ordering::SeqCst), 6 * u64::from(ROUNDS));
    assert_eq!(sem.value(), 2, "every permit came back");
    Semaphore::unlink(&sem_name).unwrap();
    Shared::<Tally>::unlink(&tally_name).unwrap();
}

#[test]
fn bounded_semaphores_refuse_to_overflow_and_bad_bounds_are_errors() {
    let name = unique_name("bounded");
    let _cleanup = Remove::shm(&name);
    let sem = Semaphore::create_bounded(&name, 1, 2).unwrap();
    let other = Semaphore::open(&name).unwrap();
    assert_eq!(other.max(), Some(2));
    other.release().unwrap();
    assert_eq!(sem.release(), Err(ReleaseError::Overflow));
    assert_eq!(sem.value(), 2);
    assert!(sem.try_acquire() && other.try_acquire() && !sem.try_acquire());
    Semaphore::unlink(&name).unwrap();

    for (initial, max) in [(3, 2), (0, 0), (0, u32::MAX)] {
        let err = Semaphore::create_bounded(&name, initial, max).unwrap_err();
        assert!(matches!(err, shmsync::OpenError::InvalidCapacity { .. }), "{err:?}");
        assert!(err.to_string().starts_with("invalid capacity "), "{err}");
        assert!(Semaphore::open(&name).is_err(), "nothing was created");
    }
    // Opening a Lock as a Semaphore is refused.
    drop(Lock::create(&name).unwrap());
    assert!(matches!(Semaphore::open(&name), Err(shmsync::OpenError::KindMismatch { .. })));
    Lock::unlink(&name).unwrap();
}

#[test]
fn value_and_array_are_shared_and_locked() {
    if role().as_deref() == Some("adder") {
        let v = Value::<i64>::open(&arg("VALUE")).unwrap();
        let a = Array::<f64>::open(&arg("ARRAY")).unwrap();
        for _ in 0..500 {
            *v.lock().unwrap() += 1;
            let mut cells = a.lock().unwrap();
            for c in cells.iter_mut() {
                *c += 0.5;
            }
        }
        return;
    }
    let (vname, aname) = (unique_name("value"), unique_name("array"));
    let _cleanup = (Remove::shm(&vname), Remove::shm(&aname));
    let v = Value::<i64>::create(&vname, 10).unwrap();
    let a = Array::<f64>::create(&aname, 1024).unwrap();
    assert_eq!((v.load(), a.len()), (10, 1024));
    assert!(a.lock().unwrap().iter().all(|&c| c == 0.0), "created zeroed");
    let env = [("VALUE", vname.as_str()), ("ARRAY", aname.as_str())];
    let kids: Vec<_> =
        (0..3).map(|_| spawn("value_and_array_are_shared_and_locked", "adder", &env)).collect();
    for k in kids {
        k.wait_success(LIMIT);
    }
    assert_eq!(v.load(), 10 + 3 * 500);
    assert!(a.lock().unwrap().iter().all(|&c| c == 750.0));
    v.store(-1);
    assert_eq!(Value::<i64>::open(&vname).unwrap().load(), -1);
    assert!(matches!(Value::<u64>::open(&vname), Err(shmsync::OpenError::LayoutMismatch { .. })));
    assert!(matches!(
        Array::<f64>::open_or_create(&aname, 7),
        Err(shmsync::OpenError::LayoutMismatch { .. })
    ));
    assert_eq!(Array::<f64>::open_or_create(&aname, 1024).unwrap().len(), 1024);
    Value::<i64>::unlink(&vname).unwrap();
    Array::<f64>::unlink(&aname).unwrap();
}

/// A user's own layout of raw primitives.
#[repr(C)]
struct Book {
    lock: RawLock,
    ready: RawEvent,
    bids: Mutex<[u64; 64]>,
    seen: AtomicU32,
}
// SAFETY: repr(C) of ShmSafe parts.
unsafe impl ShmSafe for Book {}

#[test]
fn a_user_layout_of_raw_primitives_works_across_processes() {
    if role().as_deref() == Some("trader") {
        let book = Shared::<Book>::open(&arg("BOOK")).unwrap();
        assert!(book.ready.wait_timeout(LIMIT), "never ready");
        for i in 0..64 {
            let mut bids = book.bids.lock().unwrap();
            bids[i] += i as u64;
        }
        let _g = book.lock.lock().unwrap();
        book.seen.fetch_add(1, Ordering::SeqCst);
        return;
    }
    let name = unique_name("book");
    let _cleanup = Remove::shm(&name);
    let book = Shared::<Book>::create(&name, |b| b.bids.lock().unwrap()[0] = 1000).unwrap();
    let kids: Vec<_> = (0..2)
        .map(|_| {
            spawn(
                "a_user_layout_of_raw_primitives_works_across_processes",
                "trader",
                &[("BOOK", &name)],
            )
        })
        .collect();
    std::thread::sleep(Duration::from_millis(50));
    book.ready.set();
    for k in kids {
        k.wait_success(LIMIT);
    }
    let bids = book.bids.lock().unwrap();
    assert_eq!(bids[0], 1000);
    assert!((1..64).all(|i| bids[i] == 2 * i as u64));
    assert_eq!(book.seen.load(Ordering::SeqCst), 2);
    drop(bids);
    Shared::<Book>::unlink(&name).unwrap();
}

#[test]
fn a_forked_child_has_its_own_robust_list() {
    if role().as_deref() == Some("forker") {
        let held = Lock::open(&arg("HELD")).unwrap();
        let dies = Lock::open(&arg("DIES")).unwrap();
        let guard = held.lock().unwrap();
        // SAFETY: fork in a process whose other threads (the test harness's) hold none of
        // our state; the child only locks, then leaves through _exit.
        match unsafe { libc::fork() } {
            0 => {
                // The parent's lock is not the child's: it is simply held by someone else.
                let refused = matches!(held.try_lock(), Err(TryLockError::WouldBlock));
                // Dying with this one held must mark it, through the child's own list.
                std::mem::forget(dies.lock().unwrap());
                // SAFETY: ends the forked child without running the parent's destructors.
                unsafe { libc::_exit(if refused { 0 } else { 3 }) };
            }
            pid => {
                assert!(pid > 0, "fork failed");
                let mut status = 0;
                // SAFETY: waits for our own child.
                assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
                assert!(
                    libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                    "child status {status}"
                );
                match dies.try_lock_for(LIMIT) {
                    Err(TryLockError::OwnerDied(mut g)) => g.mark_consistent(),
                    other => panic!("expected OwnerDied from the forked child, got {other:?}"),
                }
                drop(guard); // still ours, and unlocks normally
                drop(held.try_lock().unwrap());
                report("checked");
            }
        }
        return;
    }
    let (held, dies) = (unique_name("fork-held"), unique_name("fork-dies"));
    let _cleanup = (Remove::shm(&held), Remove::shm(&dies));
    let (_a, _b) = (Lock::create(&held).unwrap(), Lock::create(&dies).unwrap());
    let mut forker = spawn(
        "a_forked_child_has_its_own_robust_list",
        "forker",
        &[("HELD", &held), ("DIES", &dies)],
    );
    forker.expect("checked", LIMIT);
    forker.wait_success(LIMIT);
    Lock::unlink(&held).unwrap();
    Lock::unlink(&dies).unwrap();
}

/// Room for one process-shared robust pthread mutex.
#[repr(C, align(64))]
struct PthreadBox {
    cell: std::cell::UnsafeCell<[u64; 8]>,
}
// SAFETY: repr(C) bytes; the pthread mutex synchronises itself across processes.
unsafe impl ShmSafe for PthreadBox {}
// SAFETY: as above.
unsafe impl Sync for PthreadBox {}

impl PthreadBox {
    fn mutex(&self) -> *mut libc::pthread_mutex_t {
        self.cell.get().cast()
    }

    fn init_robust(&mut self) {
        // SAFETY: pthread calls on memory we own, before anyone else maps it.
        unsafe {
            let mut attr: libc::pthread_mutexattr_t = std::mem::zeroed();
            assert_eq!(libc::pthread_mutexattr_init(&mut attr), 0);
            assert_eq!(
                libc::pthread_mutexattr_setpshared(&mut attr, libc::PTHREAD_PROCESS_SHARED),
                0
            );
            assert_eq!(libc::pthread_mutexattr_setrobust(&mut attr, libc::PTHREAD_MUTEX_ROBUST), 0);
            assert_eq!(libc::pthread_mutex_init(self.mutex(), &attr), 0);
        }
    }
}

#[test]
fn locks_interleaved_with_glibc_robust_mutexes_stay_robust() {
    // Our locks share each thread's robust list with glibc's robust mutexes. Releasing
    // out of order around a glibc entry takes the "mixed" path; the kernel must still
    // find exactly the locks that were held when the process died.
    if let Some(role) = role() {
        let (first, second) =
            (Lock::open(&arg("FIRST")).unwrap(), Lock::open(&arg("SECOND")).unwrap());
        let pthread = Shared::<PthreadBox>::open(&arg("PTHREAD")).unwrap();
        let g1 = first.lock().unwrap();
        // SAFETY: an initialised robust mutex in a live mapping.
        assert_eq!(unsafe { libc::pthread_mutex_lock(pthread.mutex()) }, 0);
        let g2 = second.lock().unwrap();
        match role.as_str() {
            // Ours released from under a glibc entry: keep `second` and the pthread mutex.
            "drop-first" => {
                drop(g1);
                std::mem::forget(g2);
            }
            // glibc's released from between ours, then `second`: keep `first`.
            "drop-glibc-then-second" => {
                // SAFETY: held by this thread.
                assert_eq!(unsafe { libc::pthread_mutex_unlock(pthread.mutex()) }, 0);
                drop(g2);
                std::mem::forget(g1);
            }
            other => panic!("unknown role {other}"),
        }
        report("holding");
        std::thread::sleep(LIMIT);
        return;
    }

    for (role, first_died, second_died, pthread_died) in
        [("drop-first", false, true, true), ("drop-glibc-then-second", true, false, false)]
    {
        let (first, second, pthread) =
            (unique_name("mixed-1"), unique_name("mixed-2"), unique_name("mixed-p"));
        let _cleanup = (Remove::shm(&first), Remove::shm(&second), Remove::shm(&pthread));
        let (l1, l2) = (Lock::create(&first).unwrap(), Lock::create(&second).unwrap());
        let pbox = Shared::<PthreadBox>::create(&pthread, PthreadBox::init_robust).unwrap();
        let env =
            [("FIRST", first.as_str()), ("SECOND", second.as_str()), ("PTHREAD", pthread.as_str())];
        let mut child =
            spawn("locks_interleaved_with_glibc_robust_mutexes_stay_robust", role, &env);
        child.expect("holding", LIMIT);
        child.kill();

        for (lock, died, which) in [(&l1, first_died, "first"), (&l2, second_died, "second")] {
            match lock.try_lock_for(LIMIT) {
                Ok(_) => assert!(!died, "{role}: {which} should report its owner's death"),
                Err(TryLockError::OwnerDied(mut g)) => {
                    assert!(died, "{role}: {which} was released before the death");
                    g.mark_consistent();
                }
                Err(e) => panic!("{role}: {which}: {e}"),
            }
        }
        // Bounded, like every wait here: a broken list would leave it locked forever.
        let mut deadline = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: fills a timespec we own.
        unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut deadline) };
        deadline.tv_sec += LIMIT.as_secs() as libc::time_t;
        // SAFETY: an initialised robust mutex in a live mapping.
        let rc = unsafe { libc::pthread_mutex_timedlock(pbox.mutex(), &deadline) };
        assert!(rc == 0 || rc == libc::EOWNERDEAD, "{role}: pthread_mutex_timedlock gave {rc}");
        assert_eq!(
            rc == libc::EOWNERDEAD,
            pthread_died,
            "{role}: pthread mutex owner-died is {rc}"
        );
        // SAFETY: we hold it now; make it consistent if needed, then release it.
        unsafe {
            if rc == libc::EOWNERDEAD {
                assert_eq!(libc::pthread_mutex_consistent(pbox.mutex()), 0);
            }
            assert_eq!(libc::pthread_mutex_unlock(pbox.mutex()), 0);
        }
        Lock::unlink(&first).unwrap();
        Lock::unlink(&second).unwrap();
        Shared::<PthreadBox>::unlink(&pthread).unwrap();
    }
}
