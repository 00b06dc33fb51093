//! Lifecycle across real processes: who is attached, `segments`, `gc`, stale objects on
//! `create`/`open_or_create`, and `Scope`.
//!
//! Each test works in a directory of its own under `/dev/shm` (so `gc` only ever sees
//! its own objects), removed at the end.
#![allow(clippy::disallowed_types)] // the shared harness counts with std atomics

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{arg, report, role, spawn, wait_for_parent};
use shmsync::{Event, ObjectKind, OpenError, Options, Scope, Stale, Value, mpmc};

const LIMIT: Duration = Duration::from_secs(20);

type Dir = common::TestDir;

fn child_opts() -> Options {
    Options::new().dir(arg("DIR"))
}

type Queue = mpmc::Queue<u64>;

#[test]
fn an_aborted_creator_leaves_a_dead_attacher_that_gc_removes_and_a_live_one_keeps_its_object() {
    match role().as_deref() {
        Some("abort") => {
            let q = Queue::create_with("crashed", 8, &child_opts()).unwrap();
            q.push(1).unwrap();
            report("created");
            std::process::abort();
        }
        Some("hold") => {
            let _q = Queue::create_with("held", 8, &child_opts()).unwrap();
            report("created");
            wait_for_parent(LIMIT);
            return;
        }
        Some(other) => panic!("unknown role {other}"),
        None => {}
    }
    let dir = Dir::new("abort");
    let dir_s = dir.s();
    let mut aborter = spawn(
        "an_aborted_creator_leaves_a_dead_attacher_that_gc_removes_and_a_live_one_keeps_its_object",
        "abort",
        &[("DIR", dir_s)],
    );
    aborter.expect("created", LIMIT);
    let aborter_pid = aborter.pid();
    assert!(!aborter.wait(LIMIT).success());
    let mut holder = spawn(
        "an_aborted_creator_leaves_a_dead_attacher_that_gc_removes_and_a_live_one_keeps_its_object",
        "hold",
        &[("DIR", dir_s)],
    );
    holder.expect("created", LIMIT);

    let listed = shmsync::segments(&dir.opts()).unwrap();
    let names: Vec<&str> = listed.iter().map(|s| s.name()).collect();
    assert_eq!(names, ["crashed", "held"]);
    let crashed = &listed[0];
    assert_eq!((crashed.kind(), crashed.capacity()), (ObjectKind::MpmcQueue, 8));
    assert_eq!(crashed.creator_pid(), aborter_pid);
    assert!(!crashed.is_corrupted());
    let attached = crashed.attached();
    assert_eq!(attached.len(), 1, "{attached:?}");
    assert_eq!((attached[0].pid(), attached[0].is_alive()), (aborter_pid, false));
    let held = listed[1].attached();
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!((held[0].pid(), held[0].is_alive()), (holder.pid(), true));

    assert_eq!(shmsync::gc_dry_run(&dir.opts()).unwrap(), ["crashed"]);
    assert_eq!(dir.names(), ["crashed", "held"], "a dry run removes nothing");
    assert_eq!(shmsync::gc(&dir.opts()).unwrap(), ["crashed"]);
    assert_eq!(dir.names(), ["held"], "the live attacher keeps its object");

    holder.release();
    holder.wait_success(LIMIT);
    // Left cleanly: nobody is attached (the record says it detached), so gc takes it.
    let listed = shmsync::segments(&dir.opts()).unwrap();
    assert_eq!(listed[0].attached(), []);
    assert_eq!(shmsync::gc(&dir.opts()).unwrap(), ["held"]);
    assert_eq!(dir.names(), Vec::<String>::new());
}

/// The attacher table of the segment file at `path`: where, and how many records.
fn table_of(path: &Path) -> (usize, usize) {
    let bytes = std::fs::read(path).unwrap();
    let at = u64::from_le_bytes(bytes[96..104].try_into().unwrap()) as usize;
    let slots = u32::from_le_bytes(bytes[104..108].try_into().unwrap()) as usize;
    (at, slots)
}

#[test]
fn a_record_forged_to_name_a_live_process_is_still_dead() {
    let dir = Dir::new("forged");
    let path = dir.0.join("forged");
    drop(Event::create_with("forged", &dir.opts()).unwrap());
    let (at, slots) = table_of(&path);
    assert_eq!(slots, 32);
    {
        // Through a second mapping: records claiming that this (live) process and init
        // are attached, state ATTACHED (1) in the high half of the first word.
        let mut map = common::second_mapping(&path);
        for (i, pid) in [std::process::id(), 1].into_iter().enumerate() {
            let word = (1u64 << 32) | u64::from(pid);
            map[at + 16 * i..at + 16 * i + 8].copy_from_slice(&word.to_le_bytes());
        }
    }
    let info = &shmsync::segments(&dir.opts()).unwrap()[0];
    let mut attached: Vec<(u32, bool)> =
        info.attached().iter().map(|a| (a.pid(), a.is_alive())).collect();
    attached.sort_unstable();
    assert_eq!(attached, [(1, false), (std::process::id(), false)]);
    // Dead attachers and nobody alive: stale, so `create` with `Stale::Error` says so...
    match Event::create_with("forged", &dir.opts().stale(Stale::Error)) {
        Err(OpenError::Stale { name, dead }) => {
            assert_eq!(name, "forged");
            assert_eq!(dead, [1, std::process::id()]);
        }
        other => panic!("{other:?}"),
    }
    // ... and gc removes it.
    assert_eq!(shmsync::gc(&dir.opts()).unwrap(), ["forged"]);
}

#[test]
fn a_stale_queue_is_replaced_by_default_reported_on_error_and_reused_on_request() {
    if role().as_deref() == Some("crash") {
        let q = Queue::open_or_create_with("jobs", 16, &child_opts()).unwrap();
        for v in 1..=5 {
            q.push(v).unwrap();
        }
        report("pushed");
        wait_for_parent(LIMIT); // killed here
        return;
    }
    if role().as_deref() == Some("clean") {
        let q = Queue::open_or_create_with("kept", 16, &child_opts()).unwrap();
        for v in 1..=5 {
            q.push(v).unwrap();
        }
        return; // drops the handle: left cleanly
    }
    let dir = Dir::new("stale");
    let dir_s = dir.s();
    let crash = |dir_s: &str| {
        let mut c = spawn(
            "a_stale_queue_is_replaced_by_default_reported_on_error_and_reused_on_request",
            "crash",
            &[("DIR", dir_s)],
        );
        c.expect("pushed", LIMIT);
        let pid = c.pid();
        c.kill();
        pid
    };

    // Error: the crash is reported, with who died.
    let dead = crash(dir_s);
    match Queue::open_or_create_with("jobs", 16, &dir.opts().stale(Stale::Error)) {
        Err(OpenError::Stale { name, dead: pids }) => {
            assert_eq!((name.as_str(), pids), ("jobs", vec![dead]));
        }
        other => panic!("{other:?}"),
    }
    // Reuse: the dead run's five values, as before lifecycles.
    let reused = Queue::open_or_create_with("jobs", 16, &dir.opts().stale(Stale::Reuse)).unwrap();
    assert_eq!(reused.len(), 5);
    drop(reused); // left cleanly now: no longer stale

    // Replace (the default): a fresh, empty queue under the same name.
    let dead = crash(dir_s);
    let info = shmsync::segments(&dir.opts()).unwrap();
    assert_eq!(info[0].attached().iter().filter(|a| a.pid() == dead && !a.is_alive()).count(), 1);
    let fresh = Queue::open_or_create_with("jobs", 16, &dir.opts()).unwrap();
    assert_eq!(fresh.len(), 0, "a fresh queue, not the dead run's");
    assert_ne!(fresh.info().instance_id(), info[0].instance_id());
    fresh.push(42).unwrap();
    let opened = Queue::open_with("jobs", &dir.opts()).unwrap();
    assert_eq!(opened.pop_timeout(LIMIT).unwrap(), 42, "the name leads to the new queue");
    drop((fresh, opened));

    // `create` replaces a stale object too.
    crash(dir_s);
    let created = Queue::create_with("jobs", 16, &dir.opts()).unwrap();
    assert_eq!(created.len(), 0);
    drop(created);

    // A queue every user left cleanly is kept data: opened, not replaced.
    let c = spawn(
        "a_stale_queue_is_replaced_by_default_reported_on_error_and_reused_on_request",
        "clean",
        &[("DIR", dir_s)],
    );
    assert!(c.wait(LIMIT).success());
    let kept = Queue::open_or_create_with("kept", 16, &dir.opts()).unwrap();
    assert_eq!(kept.len(), 5);
    assert!(matches!(
        Queue::create_with("kept", 16, &dir.opts()),
        Err(OpenError::AlreadyExists { .. })
    ));
    drop(kept);
    assert_eq!(dir.names(), ["jobs", "kept"], "no temporary file is left");
}

#[test]
fn a_scope_unlinks_its_objects_on_drop_and_on_panic_and_gc_takes_a_killed_ones() {
    if role().as_deref() == Some("scoped") {
        let owner = Scope::new();
        let opts = child_opts().scope(&owner);
        let _a = Event::create_with("killed-a", &opts).unwrap();
        let _b = Queue::create_with("killed-b", 4, &opts).unwrap();
        report("created");
        wait_for_parent(LIMIT); // killed here
        return;
    }
    let dir = Dir::new("scope");
    {
        let owner = Scope::new();
        let opts = dir.opts().scope(&owner);
        let _e = Event::create_with("a", &opts).unwrap();
        let q = Queue::open_or_create_with("b", 4, &opts).unwrap();
        let _opened = Event::open_with("a", &opts).unwrap(); // opening owns nothing
        let _other = Event::create_with("c", &dir.opts()).unwrap(); // not through the scope
        assert_eq!(owner.len(), 2);
        assert_eq!(dir.names(), ["a", "b", "c"]);
        drop(owner);
        assert_eq!(dir.names(), ["c"]);
        q.push(7).unwrap(); // the handles outlive the names
        assert_eq!(q.pop().unwrap(), 7);
    }
    Event::unlink_with("c", &dir.opts()).unwrap();

    let panicked = std::panic::catch_unwind(|| {
        let owner = Scope::new();
        let _e = Event::create_with("p", &dir.opts().scope(&owner)).unwrap();
        panic!("half-way");
    });
    assert!(panicked.is_err());
    assert_eq!(dir.names(), Vec::<String>::new(), "unwinding dropped the scope");

    let mut child = spawn(
        "a_scope_unlinks_its_objects_on_drop_and_on_panic_and_gc_takes_a_killed_ones",
        "scoped",
        &[("DIR", dir.s())],
    );
    child.expect("created", LIMIT);
    child.kill();
    assert_eq!(dir.names(), ["killed-a", "killed-b"]);
    assert_eq!(shmsync::gc(&dir.opts()).unwrap(), ["killed-a", "killed-b"]);
    assert_eq!(dir.names(), Vec::<String>::new());
}

#[test]
fn segments_lists_corrupted_files_and_skips_foreign_ones() {
    let dir = Dir::new("list");
    let _q = Queue::create_with("queue", 32, &dir.opts()).unwrap();
    std::fs::write(dir.0.join("not-ours"), b"some other program's bytes").unwrap();
    std::fs::write(dir.0.join("empty"), b"").unwrap();
    // A shmsync file whose header is damaged: the magic, then nonsense.
    let mut bad = vec![0u8; 4096];
    bad[..8].copy_from_slice(b"shmsync\0");
    bad[8..12].copy_from_slice(&0x5EAD_1E55u32.to_le_bytes()); // ready
    bad[12..16].copy_from_slice(&3u32.to_le_bytes());
    std::fs::write(dir.0.join("damaged"), &bad).unwrap();
    let listed = shmsync::segments(&dir.opts()).unwrap();
    let names: Vec<&str> = listed.iter().map(|s| s.name()).collect();
    assert_eq!(names, ["damaged", "queue"]);
    assert!(listed[0].is_corrupted(), "{:?}", listed[0]);
    assert!(listed[0].problem().unwrap().contains("corrupted"), "{:?}", listed[0].problem());
    let q = &listed[1];
    assert_eq!(
        (q.kind(), q.capacity(), q.element_size(), q.is_corrupted()),
        (ObjectKind::MpmcQueue, 32, 8, false)
    );
    assert_eq!(q.size() as u64, std::fs::metadata(dir.0.join("queue")).unwrap().len());
    let age = q.created_at().elapsed().unwrap();
    assert!(age < Duration::from_secs(60), "{age:?}");
    // gc leaves foreign files, takes the damaged one nobody holds, keeps the queue.
    assert_eq!(shmsync::gc(&dir.opts()).unwrap(), ["damaged"]);
    assert_eq!(dir.names(), ["empty", "not-ours", "queue"]);
}

#[test]
fn gc_looping_while_four_processes_churn_never_removes_a_live_object() {
    if role().as_deref() == Some("churn") {
        let opts = child_opts();
        let me: u64 = arg("WHO").parse().unwrap();
        let shared = Value::<u64>::open_or_create_with("shared", 0, &opts).unwrap();
        let end = Instant::now() + Duration::from_millis(arg("MILLIS").parse().unwrap());
        let (mut rounds, mut bumps) = (0u64, 0u64);
        while Instant::now() < end {
            let name = format!("churn-{me}-{}", rounds % 4);
            let q = Queue::open_or_create_with(&name, 8, &opts).unwrap();
            let value = (me << 32) | rounds;
            q.push(value).unwrap();
            let other = Queue::open_with(&name, &opts).unwrap();
            assert_eq!(other.pop_timeout(LIMIT).unwrap(), value, "round {rounds}");
            drop((q, other));
            let e = Event::open_or_create_with(&format!("event-{}", rounds % 3), &opts).unwrap();
            e.set();
            assert!(e.is_set());
            *shared.lock().unwrap() += 1;
            bumps += 1;
            rounds += 1;
        }
        report(&format!("bumps={bumps}"));
        return;
    }
    let dir = Dir::new("gc-loop");
    let dir_s = dir.s().to_owned();
    let millis = "10000";
    let shared = Value::<u64>::create_with("shared", 0, &dir.opts()).unwrap();
    let children: Vec<_> = (0..4)
        .map(|who| {
            spawn(
                "gc_looping_while_four_processes_churn_never_removes_a_live_object",
                "churn",
                &[("DIR", &dir_s), ("WHO", &who.to_string()), ("MILLIS", millis)],
            )
        })
        .collect();
    let end = Instant::now() + Duration::from_millis(10_500);
    let (mut passes, mut removed) = (0u64, 0usize);
    while Instant::now() < end {
        removed += shmsync::gc(&dir.opts()).unwrap().len();
        passes += 1;
    }
    let mut bumps = 0;
    for mut c in children {
        bumps += c.expect("bumps=", LIMIT).parse::<u64>().unwrap();
        c.wait_success(LIMIT);
    }
    assert_eq!(*shared.lock().unwrap(), bumps, "every bump landed in the one shared value");
    assert!(passes > 100 && removed > 0, "{passes} gc passes removed {removed}");
    eprintln!("gc: {passes} passes removed {removed} objects; {bumps} rounds by 4 processes");
}

/// In a child started with the queue's descriptor: tries to resize the memfd both ways
/// (the seals must refuse), then sums the values the parent pushed and pushes the sum.
/// Returns the sum, or `u64::MAX` if a resize went through.
fn sum_anonymous(token: shmsync::Inheritable) -> u64 {
    let q = mpmc::Queue::<u64>::open_inherited(token).unwrap();
    for len in [0, 1 << 20] {
        // SAFETY: ftruncate on the inherited descriptor, which this child holds.
        if unsafe { libc::ftruncate(token.fd(), len) } == 0 {
            return u64::MAX;
        }
        assert_eq!(std::io::Error::last_os_error().raw_os_error(), Some(libc::EPERM));
    }
    let sum = (0..50).map(|_| q.pop_timeout(LIMIT).unwrap()).sum();
    q.push(sum).unwrap();
    sum
}

/// A pool task's argument: the inherited queue and a number.
#[repr(C)]
#[derive(Clone, Copy)]
struct Job {
    token: shmsync::Inheritable,
    x: u64,
}
// SAFETY: repr(C) of an 8-byte Pod and a u64: no padding, every bit pattern valid.
unsafe impl shmsync::Zeroable for Job {}
// SAFETY: as above.
unsafe impl shmsync::Pod for Job {}

/// A pool task: pushes `x * 10` into the anonymous queue the workers inherited.
fn push_times_ten(job: Job) -> u32 {
    let q = mpmc::Queue::<u64>::open_inherited(job.token).unwrap();
    q.push(job.x * 10).unwrap();
    std::process::id()
}

/// Opens the token in a child that was not given the descriptor: 1 for `NotFound`.
fn open_without(token: shmsync::Inheritable) -> u32 {
    match mpmc::Queue::<u64>::open_inherited(token) {
        Err(OpenError::NotFound { .. }) => 1,
        Err(_) => 2,
        Ok(_) => 0,
    }
}

#[test]
fn a_sealed_anonymous_queue_reaches_a_child_and_a_pool_and_leaves_nothing_in_dev_shm() {
    use std::os::unix::fs::MetadataExt;
    shmsync::process::init();
    let q = mpmc::Queue::<u64>::create_anonymous(64).unwrap();
    assert!(q.info().path().starts_with("/proc/self/fd"), "{:?}", q.info().path());
    let token = q.inheritable().unwrap();
    let memfd = std::fs::metadata(format!("/proc/self/fd/{}", token.fd())).unwrap();
    let in_dev_shm = || {
        std::fs::read_dir("/dev/shm")
            .unwrap()
            .filter_map(|e| e.ok()?.metadata().ok())
            .any(|m| m.dev() == memfd.dev() && m.ino() == memfd.ino())
    };
    assert!(!in_dev_shm());
    for v in 0..50 {
        q.push(v).unwrap();
    }
    let child = shmsync::Process::builder().inherit(token).spawn(sum_anonymous, token).unwrap();
    assert_eq!(child.join_timeout(LIMIT).unwrap(), (0..50).sum::<u64>(), "no resize went through");
    assert_eq!(q.pop_timeout(LIMIT).unwrap(), (0..50).sum::<u64>());

    // Without `inherit` the child does not have the descriptor: a clear error, not a crash.
    let p = shmsync::Process::spawn(open_without, token).unwrap();
    assert_eq!(p.join_timeout(LIMIT).unwrap(), 1);

    // A pool's workers inherit it at start.
    let pool = shmsync::process::Pool::builder().processes(2).inherit(token).build().unwrap();
    let jobs: Vec<Job> = (1..=8).map(|x| Job { token, x }).collect();
    let pids: Vec<u32> = pool.map(push_times_ten, &jobs).unwrap();
    assert_eq!(pids.len(), 8);
    let mut got: Vec<u64> = (0..8).map(|_| q.pop_timeout(LIMIT).unwrap()).collect();
    got.sort_unstable();
    assert_eq!(got, (1..=8).map(|x| x * 10).collect::<Vec<_>>());
    pool.close();
    pool.join().unwrap();
    assert!(!in_dev_shm(), "the queue never had a name");
}

#[test]
fn a_creator_killed_before_its_header_leaves_a_file_that_create_replaces_and_gc_leaves() {
    let dir = Dir::new("unborn");
    // What a creator killed right after `open(O_CREAT | O_EXCL)` leaves, and one killed
    // after sizing the file but before writing the header.
    std::fs::write(dir.0.join("empty"), b"").unwrap();
    std::fs::write(dir.0.join("zeroed"), vec![0u8; 4096]).unwrap();
    let quick = dir.opts().open_timeout(Duration::from_millis(50));
    for name in ["empty", "zeroed"] {
        assert!(matches!(
            Queue::open_or_create_with(name, 8, &quick.clone().stale(Stale::Reuse)),
            Err(OpenError::NotInitialized { .. } | OpenError::Corrupted)
        ));
    }
    // Nobody's: gc does not know them for shmsync's (an empty file may be anyone's)...
    assert_eq!(shmsync::gc(&dir.opts()).unwrap(), Vec::<String>::new());
    assert!(shmsync::segments(&dir.opts()).unwrap().is_empty());
    // ... but asked for that name, shmsync replaces them.
    let q = Queue::open_or_create_with("empty", 8, &quick).unwrap();
    q.push(1).unwrap();
    let c = Queue::create_with("zeroed", 8, &quick).unwrap();
    assert_eq!((q.len(), c.len()), (1, 0));
    assert_eq!(dir.names(), ["empty", "zeroed"]);
}
