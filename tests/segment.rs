//! Named segments across real processes: creation races, dead creators, hostile files,
//! permissions and unlinking.
#![allow(clippy::disallowed_types)] // tests are users: they put std atomics in their layouts
#![cfg(not(miri))] // Miri cannot open or map files

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Proc, Remove, Rng, arg, report, role, spawn, unique_name, wait_for_parent};
use shmsync::{ObjectKind, OpenError, Options, Shared, ShmSafe};

const CHILD_LIMIT: Duration = Duration::from_secs(30);

/// The layout the tests share between processes.
#[repr(C)]
struct Board {
    init_runs: AtomicU32,
    visitors: AtomicU32,
    total: AtomicU64,
}
// SAFETY: repr(C), atomics only: every bit pattern is valid and all changes are atomic.
unsafe impl ShmSafe for Board {}

fn shm_path(name: &str) -> std::path::PathBuf {
    Path::new("/dev/shm").join(name)
}

#[test]
fn racing_open_or_create_yields_one_segment() {
    const RACERS: usize = 8;
    if role().as_deref() == Some("racer") {
        let name = arg("SEG_NAME");
        wait_for_parent(CHILD_LIMIT);
        let opts = Options::new().open_timeout(Duration::from_secs(10));
        let board = Shared::<Board>::open_or_create_with(
            &name,
            |b| {
                b.init_runs.fetch_add(1, Ordering::Relaxed);
                // Widen the window in which the others find an unpublished segment.
                std::thread::sleep(Duration::from_millis(20));
            },
            &opts,
        )
        .unwrap();
        board.visitors.fetch_add(1, Ordering::AcqRel);
        let info = board.info();
        report(&format!("{} {} {}", info.instance_id(), info.creator_pid(), std::process::id()));
        return;
    }

    let name = unique_name("race");
    let _cleanup = Remove::shm(&name);
    let mut racers: Vec<Proc> = (0..RACERS)
        .map(|_| spawn("racing_open_or_create_yields_one_segment", "racer", &[("SEG_NAME", &name)]))
        .collect();
    for racer in &mut racers {
        racer.release();
    }
    let mut reports = Vec::new();
    for mut racer in racers {
        let line = racer.next_line(CHILD_LIMIT);
        let fields: Vec<u64> = line.split(' ').map(|f| f.parse().unwrap()).collect();
        reports.push((fields[0], fields[1], fields[2]));
        racer.wait_success(CHILD_LIMIT);
    }

    let first_id = reports[0].0;
    assert_ne!(first_id, 0);
    assert!(reports.iter().all(|r| r.0 == first_id), "several segments: {reports:?}");
    let creators: Vec<_> = reports.iter().filter(|r| r.1 == r.2).collect();
    assert_eq!(creators.len(), 1, "exactly one racer creates: {reports:?}");
    assert!(reports.iter().all(|r| r.1 == creators[0].2), "all see the same creator");

    let board = Shared::<Board>::open(&name).unwrap();
    assert_eq!(board.info().instance_id(), first_id);
    assert_eq!(board.init_runs.load(Ordering::Acquire), 1, "init ran once");
    assert_eq!(board.visitors.load(Ordering::Acquire), RACERS as u32);
    Shared::<Board>::unlink(&name).unwrap();
}

#[test]
fn a_creator_killed_before_ready_makes_openers_fail_in_time() {
    if role().as_deref() == Some("stalled-creator") {
        let name = arg("SEG_NAME");
        let _ = Shared::<Board>::create(&name, |_| {
            report("in-init");
            std::thread::sleep(CHILD_LIMIT);
        });
        unreachable!("the parent kills this process during init");
    }

    let name = unique_name("stalled");
    let _cleanup = Remove::shm(&name);
    let mut creator = spawn(
        "a_creator_killed_before_ready_makes_openers_fail_in_time",
        "stalled-creator",
        &[("SEG_NAME", &name)],
    );
    creator.expect("in-init", CHILD_LIMIT);
    let status = creator.kill();
    assert!(!status.success());
    assert!(shm_path(&name).exists(), "the half-made file stays behind");

    // The creator's attach lock went with it: an opener gives up as soon as it sees that,
    // instead of waiting out its timeout for a file nobody will finish.
    let timeout = Duration::from_secs(10);
    let opts = Options::new().open_timeout(timeout);
    let start = Instant::now();
    let err = Shared::<Board>::open_with(&name, &opts).unwrap_err();
    let waited = start.elapsed();
    assert!(matches!(err, OpenError::NotInitialized { .. }), "got {err:?}");
    assert!(waited < Duration::from_secs(1), "took {waited:?} for a dead creator");

    // Asked to reuse what is there, `open_or_create` waits for the dead creator too...
    let reuse =
        Options::new().open_timeout(Duration::from_millis(300)).stale(shmsync::Stale::Reuse);
    let err = Shared::<Board>::open_or_create_with(&name, |_| {}, &reuse).unwrap_err();
    assert!(matches!(err, OpenError::NotInitialized { .. }), "got {err:?}");

    // ... but by default it replaces the remains of a creator that died (nobody holds
    // them), as `create` does.
    let fresh =
        Shared::<Board>::open_or_create_with(&name, |b| *b.total.get_mut() = 3, &opts).unwrap();
    assert_eq!(fresh.total.load(Ordering::Relaxed), 3);
    Shared::<Board>::unlink(&name).unwrap();
}

#[test]
fn open_waits_for_a_slow_creator() {
    if role().as_deref() == Some("slow-creator") {
        let name = arg("SEG_NAME");
        let board = Shared::<Board>::create(&name, |b| {
            report("in-init");
            std::thread::sleep(Duration::from_millis(300));
            *b.total.get_mut() = 77;
        })
        .unwrap();
        report("published");
        // Stay alive until the parent has opened it.
        wait_for_parent(CHILD_LIMIT);
        drop(board);
        return;
    }

    let name = unique_name("slow");
    let _cleanup = Remove::shm(&name);
    let mut creator =
        spawn("open_waits_for_a_slow_creator", "slow-creator", &[("SEG_NAME", &name)]);
    creator.expect("in-init", CHILD_LIMIT);
    let opts = Options::new().open_timeout(Duration::from_secs(10));
    let board = Shared::<Board>::open_with(&name, &opts).unwrap();
    assert_eq!(board.total.load(Ordering::Relaxed), 77, "init's writes are visible");
    creator.expect("published", CHILD_LIMIT);
    creator.release();
    creator.wait_success(CHILD_LIMIT);
    Shared::<Board>::unlink(&name).unwrap();
}

#[test]
fn a_symlink_at_the_name_is_refused() {
    let name = unique_name("symlink");
    let target = unique_name("symlink-target");
    let _cleanup = (Remove::shm(&name), Remove::shm(&target));
    drop(Shared::<Board>::create(&target, |_| {}).unwrap());
    std::os::unix::fs::symlink(shm_path(&target), shm_path(&name)).unwrap();

    let err = Shared::<Board>::open(&name).unwrap_err();
    assert!(matches!(err, OpenError::PermissionDenied), "got {err:?}");
    let err = Shared::<Board>::create(&name, |_| {}).unwrap_err();
    assert!(matches!(err, OpenError::AlreadyExists { .. }), "got {err:?}");
    let err = Shared::<Board>::open_or_create(&name, |_| {}).unwrap_err();
    assert!(matches!(err, OpenError::PermissionDenied), "got {err:?}");
    assert!(fs::symlink_metadata(shm_path(&name)).unwrap().file_type().is_symlink());
}

#[test]
fn a_segment_owned_by_another_user_is_refused() {
    let name = unique_name("foreign");
    let _cleanup = Remove::shm(&name);
    drop(Shared::<Board>::create(&name, |_| {}).unwrap());
    // Only root can give a file away; that is how CI runs.
    let nobody = 65534;
    if let Err(e) = std::os::unix::fs::chown(shm_path(&name), Some(nobody), Some(nobody)) {
        eprintln!("skipped: cannot chown as a non-root user ({e})");
        return;
    }
    assert_eq!(fs::metadata(shm_path(&name)).unwrap().uid(), nobody);
    let err = Shared::<Board>::open(&name).unwrap_err();
    assert!(matches!(err, OpenError::PermissionDenied), "got {err:?}");
}

/// Writes `bytes` as the file of segment `name` in /dev/shm, mode 0600.
fn plant(name: &str, bytes: &[u8]) {
    let mut f = fs::File::create(shm_path(name)).unwrap();
    f.write_all(bytes).unwrap();
    f.set_permissions(fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
fn short_odd_and_random_files_are_refused_with_typed_errors() {
    let name = unique_name("hostile");
    let _cleanup = Remove::shm(&name);
    let quick = Options::new().open_timeout(Duration::ZERO);
    let open = || Shared::<Board>::open_with(&name, &quick);

    plant(&name, b"abc");
    assert!(matches!(open(), Err(OpenError::Corrupted)));

    plant(&name, &[0u8; 127]);
    assert!(matches!(open(), Err(OpenError::Corrupted)));

    // An empty file is what a creator looks like before it sizes the file.
    plant(&name, b"");
    assert!(matches!(open(), Err(OpenError::NotInitialized { .. })));

    // Zeros of a full header's size: a creator that has not published yet.
    plant(&name, &[0u8; 4096]);
    assert!(matches!(open(), Err(OpenError::NotInitialized { .. })));

    let seed = u64::from(std::process::id()) << 20 ^ 0x5EED;
    let mut rng = Rng::new(seed);
    for round in 0..300 {
        let len = (rng.next_u64() % 8192) as usize + 128;
        let mut bytes = vec![0u8; len];
        rng.fill(&mut bytes);
        if round % 2 == 1 {
            // Half the rounds get a valid magic and READY state, to reach deeper checks.
            bytes[..8].copy_from_slice(b"shmsync\0");
            bytes[8..12].copy_from_slice(&0x5EAD_1E55_u32.to_le_bytes());
        }
        plant(&name, &bytes);
        match open() {
            Err(
                OpenError::Corrupted
                | OpenError::VersionMismatch
                | OpenError::KindMismatch { .. }
                | OpenError::LayoutMismatch { .. }
                | OpenError::NotInitialized { .. },
            ) => {}
            other => panic!("seed {seed:#x} round {round}: random bytes gave {other:?}"),
        }
    }
}

#[test]
fn directories_and_fifos_at_the_name_are_refused() {
    let name = unique_name("notafile");
    let _cleanup = Remove::shm(&name);
    fs::create_dir(shm_path(&name)).unwrap();
    let err = Shared::<Board>::open(&name).unwrap_err();
    assert!(matches!(err, OpenError::Corrupted), "directory gave {err:?}");
    fs::remove_dir(shm_path(&name)).unwrap();

    let path =
        std::ffi::CString::new(shm_path(&name).into_os_string().into_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
    let start = Instant::now();
    let err = Shared::<Board>::open(&name).unwrap_err();
    assert!(matches!(err, OpenError::Corrupted), "FIFO gave {err:?}");
    assert!(start.elapsed() < Duration::from_secs(1), "opening a FIFO must not block");
}

#[test]
fn versions_kinds_and_types_are_checked() {
    let name = unique_name("mismatch");
    let _cleanup = Remove::shm(&name);
    drop(Shared::<u64>::create(&name, |v| *v = 5).unwrap());

    // Same size and alignment, another type.
    let err = Shared::<i64>::open(&name).unwrap_err();
    assert!(matches!(err, OpenError::LayoutMismatch { .. }), "got {err:?}");
    let err = Shared::<[u8; 16]>::open(&name).unwrap_err();
    assert!(matches!(err, OpenError::LayoutMismatch { .. }), "got {err:?}");
    assert_eq!(*Shared::<u64>::open(&name).unwrap(), 5);

    // The documented header offsets (docs/design.md): kind at 16, version at 12.
    let patch = |offset: usize, value: u32| {
        let mut bytes = fs::read(shm_path(&name)).unwrap();
        bytes[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
        fs::write(shm_path(&name), bytes).unwrap();
    };
    patch(16, 2); // ObjectKind::Lock
    match Shared::<u64>::open(&name) {
        Err(OpenError::KindMismatch { expected, found, .. }) => {
            assert_eq!((expected, found), (ObjectKind::Shared, ObjectKind::Lock));
        }
        other => panic!("got {other:?}"),
    }
    patch(16, 1);
    patch(12, 99);
    assert!(matches!(Shared::<u64>::open(&name), Err(OpenError::VersionMismatch)));
}

#[test]
fn the_mode_is_exact_whatever_the_umask() {
    if let Some(role) = role() {
        let (mask, mode) = match role.as_str() {
            "umask-000" => (0o000, 0o600),
            "umask-277" => (0o277, 0o640),
            other => panic!("unknown role {other}"),
        };
        // SAFETY: umask has no memory-safety preconditions; this child is single-purpose.
        unsafe { libc::umask(mask) };
        let name = arg("SEG_NAME");
        drop(Shared::<Board>::create_with(&name, |_| {}, &Options::new().mode(mode)).unwrap());
        return;
    }

    for (role, want) in [("umask-000", 0o600), ("umask-277", 0o640)] {
        let name = unique_name(role);
        let _cleanup = Remove::shm(&name);
        spawn("the_mode_is_exact_whatever_the_umask", role, &[("SEG_NAME", &name)])
            .wait_success(CHILD_LIMIT);
        let mode = fs::metadata(shm_path(&name)).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, want, "{role}: mode {mode:o}");
    }
}

#[test]
fn bad_modes_are_refused_before_anything_is_created() {
    let name = unique_name("badmode");
    let _cleanup = Remove::shm(&name);
    for mode in [0o400, 0o4600, 0o000] {
        let err =
            Shared::<Board>::create_with(&name, |_| {}, &Options::new().mode(mode)).unwrap_err();
        assert!(
            matches!(err, OpenError::Io(ref e) if e.kind() == std::io::ErrorKind::InvalidInput),
            "mode {mode:o} gave {err:?}"
        );
        assert!(!shm_path(&name).exists());
    }
}

#[test]
fn unlinking_keeps_live_mappings_working() {
    if role().as_deref() == Some("holder") {
        let name = arg("SEG_NAME");
        let board = Shared::<Board>::open(&name).unwrap();
        report("opened");
        wait_for_parent(CHILD_LIMIT); // the parent unlinks and re-creates meanwhile
        let reborn = Shared::<Board>::open(&name).unwrap();
        assert_ne!(reborn.info().instance_id(), board.info().instance_id());
        board.total.fetch_add(5, Ordering::AcqRel);
        report(&format!("total={}", board.total.load(Ordering::Acquire)));
        return;
    }

    let name = unique_name("unlink");
    let _cleanup = Remove::shm(&name);
    let board = Shared::<Board>::create(&name, |b| *b.total.get_mut() = 100).unwrap();
    let mut holder =
        spawn("unlinking_keeps_live_mappings_working", "holder", &[("SEG_NAME", &name)]);
    holder.expect("opened", CHILD_LIMIT);

    Shared::<Board>::unlink(&name).unwrap();
    assert!(!shm_path(&name).exists());
    assert!(matches!(Shared::<Board>::unlink(&name), Err(OpenError::NotFound { .. })));
    assert!(matches!(Shared::<Board>::open(&name), Err(OpenError::NotFound { .. })));
    assert_eq!(board.total.load(Ordering::Acquire), 100, "our own mapping still works");
    // The name is free for a new, unrelated segment.
    let reborn = Shared::<Board>::create(&name, |_| {}).unwrap();
    assert_ne!(reborn.info().instance_id(), board.info().instance_id());

    holder.release();
    assert_eq!(holder.expect("total=", CHILD_LIMIT), "105");
    holder.wait_success(CHILD_LIMIT);
    assert_eq!(board.total.load(Ordering::Acquire), 105, "the child wrote the unlinked one");
    assert_eq!(reborn.total.load(Ordering::Acquire), 0, "the new segment is separate");
    Shared::<Board>::unlink(&name).unwrap();
}

#[test]
fn names_and_existence_are_checked() {
    let name = unique_name("exists");
    let _cleanup = Remove::shm(&name);
    assert!(matches!(Shared::<Board>::open(&name), Err(OpenError::NotFound { .. })));
    assert!(matches!(Shared::<Board>::unlink(&name), Err(OpenError::NotFound { .. })));
    let board = Shared::<Board>::create(&name, |_| {}).unwrap();
    assert!(matches!(Shared::<Board>::create(&name, |_| {}), Err(OpenError::AlreadyExists { .. })));
    assert_eq!(board.info().name(), name);
    assert_eq!(board.info().path(), shm_path(&name));
    assert_eq!(board.info().kind(), ObjectKind::Shared);
    assert_eq!(board.info().creator_pid(), std::process::id());
    // The header, the board, then (at the next 64 bytes) the attacher table: 32 x 16.
    let table_at = (128 + std::mem::size_of::<Board>()).next_multiple_of(64);
    assert_eq!(board.info().len(), table_at + 32 * 16);
    assert_eq!(fs::metadata(shm_path(&name)).unwrap().len(), board.info().len() as u64);
    Shared::<Board>::unlink(&name).unwrap();

    for bad in ["", ".", "..", "a/b", "/abs", "sp ace", &"x".repeat(201)] {
        assert!(
            matches!(Shared::<Board>::create(bad, |_| {}), Err(OpenError::InvalidName)),
            "{bad:?}"
        );
        assert!(matches!(Shared::<Board>::open(bad), Err(OpenError::InvalidName)), "{bad:?}");
        assert!(matches!(Shared::<Board>::unlink(bad), Err(OpenError::InvalidName)), "{bad:?}");
    }
}

#[test]
fn options_dir_puts_the_file_exactly_there() {
    let dir = std::env::temp_dir().join(unique_name("dir"));
    fs::create_dir(&dir).unwrap();
    let _cleanup = Remove(dir.clone());
    let opts = Options::new().dir(&dir);
    let name = "jobs";
    let a = Shared::<Board>::create_with(name, |b| *b.total.get_mut() = 3, &opts).unwrap();
    assert_eq!(a.info().path(), dir.join(name));
    assert!(dir.join(name).is_file());
    assert!(
        !shm_path(name).exists()
            || fs::metadata(shm_path(name)).unwrap().ino()
                != fs::metadata(dir.join(name)).unwrap().ino()
    );
    let b = Shared::<Board>::open_with(name, &opts).unwrap();
    assert_eq!(b.total.load(Ordering::Relaxed), 3);
    Shared::<Board>::unlink_with(name, &opts).unwrap();
    assert!(!dir.join(name).exists());

    let missing = Options::new().dir(dir.join("absent"));
    match Shared::<Board>::create_with(name, |_| {}, &missing) {
        Err(OpenError::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::NotFound),
        other => panic!("create in a missing directory gave {other:?}"),
    }
}

#[test]
fn a_panicking_initialiser_leaves_no_file() {
    let name = unique_name("panic");
    let _cleanup = Remove::shm(&name);
    let result = std::panic::catch_unwind(|| {
        let _ = Shared::<Board>::create(&name, |_| panic!("init failed"));
    });
    assert!(result.is_err());
    assert!(!shm_path(&name).exists(), "the half-made segment was left behind");
    drop(Shared::<Board>::create(&name, |_| {}).unwrap());
    Shared::<Board>::unlink(&name).unwrap();
}

#[test]
fn a_full_file_system_is_reported_at_create() {
    if role().as_deref() == Some("small-fsize") {
        // A file-size limit stands in for a full tmpfs: both fail the reservation.
        // SAFETY: plain libc calls with valid arguments in a single-purpose child.
        unsafe {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let lim = libc::rlimit { rlim_cur: 64 * 1024, rlim_max: 64 * 1024 };
            assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lim), 0);
        }
        let name = arg("SEG_NAME");
        let err = Shared::<[u8; 1 << 20]>::create(&name, |_| {}).unwrap_err();
        assert!(matches!(err, OpenError::NoSpace), "got {err:?}");
        assert!(!shm_path(&name).exists(), "a failed create leaves nothing");
        drop(Shared::<[u8; 1024]>::create(&name, |_| {}).unwrap());
        Shared::<[u8; 1024]>::unlink(&name).unwrap();
        report("checked");
        return;
    }
    let name = unique_name("nospace");
    let _cleanup = Remove::shm(&name);
    let mut child =
        spawn("a_full_file_system_is_reported_at_create", "small-fsize", &[("SEG_NAME", &name)]);
    child.expect("checked", CHILD_LIMIT);
    child.wait_success(CHILD_LIMIT);
}
