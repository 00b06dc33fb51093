//! `List` across real processes: exact contents under concurrent pushes, and consistency
//! after any number of `kill -9`s mid-operation (`check` and the values).
#![allow(clippy::disallowed_types)] // the shared harness counts with std atomics

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{Remove, Rng, unique_name};
use shmsync::process::{self, Process};
use shmsync::{FixedStr, InsertError, List};

const LIMIT: Duration = Duration::from_secs(30);

fn list_name(tag: &str) -> String {
    format!("shmsync-test-list-{tag}-{}", std::os::unix::process::parent_id())
}

/// A child: pushes 10,000 values tagged with its number.
fn push_ten_thousand(who: u64) -> u64 {
    let list = List::<u64>::open(&list_name("push")).unwrap();
    for i in 0..10_000 {
        list.push(who << 32 | i).unwrap();
    }
    who
}

#[test]
fn four_processes_push_exactly_forty_thousand_values() {
    let name = format!("shmsync-test-list-push-{}", std::process::id());
    let _cleanup = Remove::shm(&name);
    let list = List::<u64>::create(&name, 40_000).unwrap();
    let children: Vec<_> =
        (0..4).map(|who| Process::spawn(push_ten_thousand, who).unwrap()).collect();
    for c in children {
        c.join_timeout(LIMIT).unwrap();
    }
    let values = list.to_vec();
    assert_eq!(values.len(), 40_000);
    let distinct: HashSet<u64> = values.iter().copied().collect();
    assert_eq!(distinct.len(), 40_000);
    for who in 0..4u64 {
        // Each process's values arrive in its own order.
        let mine: Vec<u64> = values.iter().copied().filter(|v| v >> 32 == who).collect();
        assert_eq!(mine, (0..10_000).map(|i| who << 32 | i).collect::<Vec<_>>());
    }
    // Full: the value comes back.
    let err = list.push(7).unwrap_err();
    assert_eq!((err.into_inner(), err.capacity), (7, 40_000));
    assert!(matches!(list.insert(0, 8), Err(InsertError::Full(8))));
    list.check().unwrap();
}

#[test]
fn every_operation_keeps_order_and_bounds() {
    let name = unique_name("list-ops");
    let _cleanup = Remove::shm(&name);
    let list = List::<FixedStr<8>>::create(&name, 5).unwrap();
    let s = |t: &str| FixedStr::<8>::new(t).unwrap();
    list.extend_from_slice(&[s("a"), s("b"), s("c")]).unwrap();
    list.insert(1, s("x")).unwrap();
    assert_eq!(list.to_vec(), [s("a"), s("x"), s("b"), s("c")]);
    assert!(matches!(
        list.insert(9, s("y")),
        Err(InsertError::OutOfRange { index: 9, len: 4, .. })
    ));
    assert_eq!(list.set(0, s("A")).unwrap(), s("a"));
    assert_eq!(list.set(4, s("z")).unwrap_err().len, 4);
    assert_eq!(list.swap_remove(0), Some(s("A")));
    assert_eq!(list.to_vec(), [s("c"), s("x"), s("b")]);
    assert_eq!(list.remove(1), Some(s("x")));
    assert_eq!(list.get(1), Some(s("b")));
    assert_eq!(list.get(2), None);
    assert_eq!(list.pop(), Some(s("b")));
    assert_eq!(list.extend_from_slice(&[s("1"); 5]).unwrap_err().value, 5);
    list.clear();
    assert!(list.is_empty());
    list.check().unwrap();
}

/// Starts `work(round + 1)` in a child, waits until it stored that number in `started`
/// (it is changing the object now), and SIGKILLs it at a random instant within 2 ms.
fn kill_mid_work(work: fn(u64) -> u64, round: usize, started: &shmsync::Value<u64>, rng: &mut Rng) {
    let child = Process::spawn(work, round as u64 + 1).unwrap();
    let deadline = std::time::Instant::now() + LIMIT;
    while started.load() != round as u64 + 1 {
        assert!(std::time::Instant::now() < deadline, "round {round}: the child never started");
        std::thread::yield_now();
    }
    std::thread::sleep(Duration::from_micros(rng.next_u64() % 2000));
    child.kill();
    assert!(child.join_timeout(LIMIT).is_err());
}

/// Permanent values: 1..=PERMANENT, each exactly once, always. Churn values have the top
/// bit set.
const PERMANENT: u64 = 100;
const CHURN: u64 = 1 << 63;

/// A child that changes the list at random until it is killed: inserts, removes, pushes,
/// pops, sets and swap-removes churn values, moving the permanent ones around by the
/// shifts, never removing them.
fn churn(seed: u64) -> u64 {
    let list = List::<u64>::open(&list_name("kill")).unwrap();
    let started = shmsync::Value::<u64>::open(&list_name("kill-started")).unwrap();
    started.store(seed);
    let mut rng = Rng::new(seed);
    let mut next = CHURN | (seed << 20);
    loop {
        let mut g = list.lock();
        let len = g.len();
        let at = if len == 0 { 0 } else { (rng.next_u64() as usize) % len };
        match rng.next_u64() % 6 {
            0 => {
                next += 1;
                let _ = g.insert(at, next);
            }
            1 if len > 0 && g[at] & CHURN != 0 => {
                g.remove(at);
            }
            2 => {
                next += 1;
                let _ = g.push(next);
            }
            3 if len > 0 && g[len - 1] & CHURN != 0 => {
                g.pop();
            }
            4 if len > 0 && g[at] & CHURN != 0 => {
                next += 1;
                let _ = g.set(at, next);
            }
            5 if len > 0 && g[at] & CHURN != 0 && g[len - 1] & CHURN != 0 => {
                g.swap_remove(at);
            }
            _ => {}
        }
    }
}

#[test]
fn a_thousand_kills_mid_operation_leave_the_list_whole() {
    let name = format!("shmsync-test-list-kill-{}", std::process::id());
    let _cleanup = Remove::shm(&name);
    let list = List::<u64>::create(&name, 400).unwrap();
    list.extend_from_slice(&(1..=PERMANENT).collect::<Vec<_>>()).unwrap();
    let started_name = format!("shmsync-test-list-kill-started-{}", std::process::id());
    let _cleanup_started = Remove::shm(&started_name);
    let started = shmsync::Value::<u64>::create(&started_name, 0).unwrap();
    let mut rng = Rng::new(20261202);
    let kills =
        std::env::var("SHMSYNC_LIST_KILLS").ok().and_then(|k| k.parse().ok()).unwrap_or(1000);
    let mut changed = 0;
    for round in 0..kills {
        let before = list.to_vec();
        kill_mid_work(churn, round, &started, &mut rng);
        list.check().unwrap_or_else(|e| panic!("round {round}: {e}"));
        let values = list.to_vec();
        let permanent: Vec<u64> = {
            let mut p: Vec<u64> = values.iter().copied().filter(|v| v & CHURN == 0).collect();
            p.sort_unstable();
            p
        };
        assert_eq!(
            permanent,
            (1..=PERMANENT).collect::<Vec<_>>(),
            "round {round}: a permanent value lost or doubled"
        );
        let churned: HashSet<u64> = values.iter().copied().filter(|v| v & CHURN != 0).collect();
        assert_eq!(
            churned.len() + permanent.len(),
            values.len(),
            "round {round}: a churn value doubled"
        );
        changed += usize::from(values != before);
    }
    // The kills landed while the list was being changed, not before.
    assert!(changed * 10 >= kills * 9, "only {changed} of {kills} rounds changed the list");
}

#[test]
fn a_dead_owners_insert_is_finished_from_its_record() {
    // The exact state a process killed half-way through `insert(1, 99)` on [1, 2, 3, 4]
    // leaves: slot 4 and 3 shifted, `progress` at 2, the lock's owner dead. Written
    // through a second mapping.
    let name = unique_name("list-redo");
    let _cleanup = Remove::shm(&name);
    let list = List::<u64>::create(&name, 8).unwrap();
    list.extend_from_slice(&[1, 2, 3, 4]).unwrap();
    {
        let mut map = common::second_mapping(format!("/dev/shm/{name}"));
        let payload = 128;
        let put = |map: &mut memmap2::MmapMut, at: usize, v: u64| {
            map[at..at + 8].copy_from_slice(&v.to_le_bytes())
        };
        let slot = |i: usize| payload + 136 + 8 * i;
        put(&mut map, slot(4), 4); // shifted
        put(&mut map, slot(3), 3); // shifted
        put(&mut map, payload + 128, 99); // the record's value
        put(&mut map, payload + 56, 1); // index
        put(&mut map, payload + 64, 4); // len_before
        put(&mut map, payload + 72, 2); // progress: slot 2 is next
        map[payload + 48..payload + 52].copy_from_slice(&2u32.to_le_bytes()); // op INSERT
        map[payload..payload + 4].copy_from_slice(&0x4000_0000u32.to_le_bytes()); // OWNER_DIED
    }
    assert_eq!(list.to_vec(), [1, 99, 2, 3, 4]);
    list.check().unwrap();
}

#[test]
fn process_init_is_a_no_op_in_the_parent() {
    process::init();
}

mod dicts {
    use super::*;
    use shmsync::Dict;

    type Key = FixedStr<24>;

    fn dict_name(tag: &str) -> String {
        format!("shmsync-test-dict-{tag}-{}", std::os::unix::process::parent_id())
    }

    fn key(s: &str) -> Key {
        FixedStr::new(s).unwrap()
    }

    /// A child: 5,000 keys of its own, and a shared counter bumped for each.
    fn insert_five_thousand(who: u64) -> u64 {
        let d = Dict::<Key, u64>::open(&dict_name("many")).unwrap();
        for i in 0..5_000u64 {
            assert_eq!(d.insert(key(&format!("p{who}-k{i}")), who * 1_000_000 + i).unwrap(), None);
            assert!(d.update(&key(&format!("hits-{}", i % 8)), |v| *v += 1));
        }
        who
    }

    #[test]
    fn four_processes_insert_and_update_to_the_exact_dict() {
        let name = format!("shmsync-test-dict-many-{}", std::process::id());
        let _cleanup = Remove::shm(&name);
        let d = Dict::<Key, u64>::create(&name, 25_000).unwrap();
        for c in 0..8 {
            d.insert(key(&format!("hits-{c}")), 0).unwrap();
        }
        let children: Vec<_> =
            (0..4).map(|who| Process::spawn(insert_five_thousand, who).unwrap()).collect();
        for c in children {
            c.join_timeout(LIMIT).unwrap();
        }
        assert_eq!(d.len(), 20_008);
        for who in 0..4u64 {
            for i in (0..5_000u64).step_by(97) {
                assert_eq!(d.get(&key(&format!("p{who}-k{i}"))), Some(who * 1_000_000 + i));
            }
        }
        for c in 0..8 {
            assert_eq!(d.get(&key(&format!("hits-{c}"))), Some(2_500), "counter {c}");
        }
        assert_eq!(d.items().len(), 20_008);
        d.check().unwrap();
    }

    #[test]
    fn a_full_dict_returns_the_pair_and_every_operation_works() {
        let name = unique_name("dict-ops");
        let _cleanup = Remove::shm(&name);
        let d = Dict::<u32, u64>::create(&name, 8).unwrap();
        let mut full = None;
        for k in 0..1000u32 {
            if let Err(e) = d.insert(k, u64::from(k)) {
                full = Some(e.into_inner());
                break;
            }
        }
        let (k, v) = full.expect("a dict of capacity 8 fills up");
        assert_eq!(u64::from(k), v);
        assert!(d.len() >= 8, "room for at least its capacity: {}", d.len());
        assert_eq!(d.remove(&0), Some(0));
        assert_eq!(d.remove(&0), None);
        assert!(!d.contains_key(&0));
        assert_eq!(d.get_or_insert_with(0, || 42).unwrap(), 42);
        assert_eq!(d.get_or_insert_with(0, || 7).unwrap(), 42);
        assert!(!d.update(&9999, |v| *v = 1));
        d.check().unwrap();
        d.clear();
        assert!(d.is_empty() && d.items().is_empty());
        d.check().unwrap();
    }

    /// A child that changes the dict at random until killed: permanent keys 0..100 get
    /// values whose four words are all equal (a torn write would show), churn keys
    /// 1000.. are inserted and removed.
    fn churn_dict(seed: u64) -> u64 {
        let d = Dict::<u64, [u64; 4]>::open(&dict_name("kill")).unwrap();
        let started = shmsync::Value::<u64>::open(&dict_name("kill-started")).unwrap();
        started.store(seed);
        let mut rng = Rng::new(seed);
        loop {
            let r = rng.next_u64();
            match r % 4 {
                0 => {
                    let k = r % 100;
                    let x = rng.next_u64();
                    let _ = d.insert(k, [x; 4]);
                }
                1 => {
                    let k = r % 100;
                    d.update(&k, |v| *v = [v[0].wrapping_add(1); 4]);
                }
                2 => {
                    let _ = d.insert(1000 + r % 300, [r; 4]);
                }
                _ => {
                    d.remove(&(1000 + r % 300));
                }
            }
        }
    }

    #[test]
    fn a_thousand_kills_mid_operation_leave_the_dict_whole() {
        let name = format!("shmsync-test-dict-kill-{}", std::process::id());
        let started_name = format!("shmsync-test-dict-kill-started-{}", std::process::id());
        let _cleanup = (Remove::shm(&name), Remove::shm(&started_name));
        let d = Dict::<u64, [u64; 4]>::create(&name, 1024).unwrap();
        for k in 0..100 {
            d.insert(k, [k; 4]).unwrap();
        }
        let started = shmsync::Value::<u64>::create(&started_name, 0).unwrap();
        let mut rng = Rng::new(7);
        let kills =
            std::env::var("SHMSYNC_DICT_KILLS").ok().and_then(|k| k.parse().ok()).unwrap_or(1000);
        for round in 0..kills {
            kill_mid_work(churn_dict, round, &started, &mut rng);
            d.check().unwrap_or_else(|e| panic!("round {round}: {e}"));
            for k in 0..100 {
                let v = d.get(&k).unwrap_or_else(|| panic!("round {round}: key {k} lost"));
                assert!(v.iter().all(|&w| w == v[0]), "round {round}: key {k} torn: {v:?}");
            }
            let churned = d.keys().into_iter().filter(|&k| k >= 1000).count();
            assert_eq!(d.len(), 100 + churned, "round {round}");
        }
    }
}

mod barriers {
    use super::*;
    use shmsync::{Barrier, BarrierError, LockError, RLock, TryLockError};
    use std::time::Instant;

    fn barrier_name(tag: &str) -> String {
        format!("shmsync-test-barrier-{tag}-{}", std::os::unix::process::parent_id())
    }

    /// A child: waits at the barrier, returns when it passed (ns since the epoch) and
    /// whether it led.
    fn pass(_: u64) -> [u64; 2] {
        let b = Barrier::open(&barrier_name("three")).unwrap();
        let r = b.wait_timeout(Duration::from_secs(20)).unwrap();
        let at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
        [at.as_nanos() as u64, u64::from(r.is_leader())]
    }

    #[test]
    fn three_processes_are_released_together_with_one_leader() {
        let name = format!("shmsync-test-barrier-three-{}", std::process::id());
        let _cleanup = Remove::shm(&name);
        let b = Barrier::create(&name, 3).unwrap();
        let first = Process::spawn(pass, 0).unwrap();
        let second = Process::spawn(pass, 1).unwrap();
        // Neither passes with two of three there.
        std::thread::sleep(Duration::from_millis(300));
        assert!(first.is_alive() && second.is_alive());
        assert_eq!(b.n_waiting(), 2);
        let third = Process::spawn(pass, 2).unwrap();
        let results: Vec<[u64; 2]> =
            [first, second, third].iter().map(|p| p.join_timeout(LIMIT).unwrap()).collect();
        assert_eq!(results.iter().map(|r| r[1]).sum::<u64>(), 1, "exactly one leader");
        let times: Vec<u64> = results.iter().map(|r| r[0]).collect();
        let spread = times.iter().max().unwrap() - times.iter().min().unwrap();
        assert!(spread < 250_000_000, "released {spread} ns apart");
    }

    fn wait_long(_: u64) -> u32 {
        let b = Barrier::open(&barrier_name("break")).unwrap();
        match b.wait_timeout(Duration::from_secs(20)) {
            Err(BarrierError::Broken) => 1,
            _ => 0,
        }
    }

    #[test]
    fn a_timeout_breaks_the_barrier_for_every_waiter() {
        let name = format!("shmsync-test-barrier-break-{}", std::process::id());
        let _cleanup = Remove::shm(&name);
        let b = Barrier::create(&name, 3).unwrap();
        let other = Process::spawn(wait_long, 0).unwrap();
        while b.n_waiting() < 1 {
            std::thread::yield_now();
        }
        let started = Instant::now();
        assert_eq!(b.wait_timeout(Duration::from_millis(100)), Err(BarrierError::Broken));
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(other.join_timeout(LIMIT).unwrap(), 1, "the other waiter saw it broken");
        assert!(b.is_broken());
        assert_eq!(b.wait(), Err(BarrierError::Broken));
        b.reset();
        assert!(!b.is_broken());
    }

    fn hold_rlock(_: u64) -> u64 {
        let l = RLock::open(&barrier_name("rlock")).unwrap();
        let a = l.lock().unwrap();
        let b = l.lock().unwrap();
        std::mem::forget((a, b));
        std::thread::sleep(Duration::from_secs(30));
        0
    }

    #[test]
    fn an_rlock_is_reentrant_and_reports_its_dead_holder() {
        let name = format!("shmsync-test-barrier-rlock-{}", std::process::id());
        let _cleanup = Remove::shm(&name);
        let lock = RLock::create(&name).unwrap();
        {
            let _a = lock.lock().unwrap();
            let _b = lock.try_lock().unwrap();
            assert_eq!(lock.depth(), 2);
        }
        assert!(!lock.is_locked());
        let holder = Process::spawn(hold_rlock, 0).unwrap();
        while !lock.is_locked() {
            std::thread::yield_now();
        }
        assert!(matches!(lock.try_lock(), Err(TryLockError::WouldBlock)));
        holder.kill();
        let _ = holder.join_timeout(LIMIT);
        match lock.lock() {
            Err(LockError::OwnerDied(mut g)) => {
                assert_eq!(lock.depth(), 1, "the dead holder's levels are gone");
                g.mark_consistent();
            }
            other => panic!("expected OwnerDied, got {other:?}"),
        }
        assert!(!lock.is_locked());
        assert!(lock.lock().is_ok());
    }
}

#[test]
fn a_dead_writers_half_done_dict_insert_is_undone() {
    // The state a writer killed between marking its slot FULL and finishing leaves in
    // shard 0 of an empty `Dict<u64, u64>` of capacity 64 (8 slots per shard): slot 3
    // holds a key, `len` is 1, the record says INSERT of slot 3 from EMPTY and length 0,
    // the counter is odd, the lock's owner is dead. Written through a second mapping.
    let name = unique_name("dict-undo");
    let _cleanup = Remove::shm(&name);
    let d = shmsync::Dict::<u64, u64>::create(&name, 64).unwrap();
    {
        let mut map = common::second_mapping(format!("/dev/shm/{name}"));
        let shard = 128 + 128; // payload, then the dict's header
        let slot = 128 + 2560 + 3 * 24; // the tables; slot 3 of shard 0, 24 bytes a slot
        let put32 = |m: &mut memmap2::MmapMut, at: usize, v: u32| {
            m[at..at + 4].copy_from_slice(&v.to_le_bytes())
        };
        let put64 = |m: &mut memmap2::MmapMut, at: usize, v: u64| {
            m[at..at + 8].copy_from_slice(&v.to_le_bytes())
        };
        put32(&mut map, slot, 1); // FULL
        put64(&mut map, slot + 8, 12_345); // key
        put64(&mut map, slot + 16, 1); // value
        put64(&mut map, shard + 40, 1); // seq: odd
        put64(&mut map, shard + 48, 1); // len
        put32(&mut map, shard + 56, 1); // op: INSERT
        put32(&mut map, shard + 60, 3); // slot
        put32(&mut map, shard + 64, 0); // old state: EMPTY
        put64(&mut map, shard + 72, 0); // old len
        put32(&mut map, shard, 0x4000_0000); // the lock: OWNER_DIED
    }
    d.check().unwrap();
    assert_eq!(d.len(), 0);
    assert_eq!(d.get(&12_345), None);
    assert_eq!(d.insert(7, 7).unwrap(), None);
    d.check().unwrap();
}
