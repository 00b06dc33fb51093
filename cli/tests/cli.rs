//! The built `shmsync` binary, run as a user would, on objects this test makes in a
//! directory of its own under `/dev/shm`.
#![allow(clippy::disallowed_types)] // the shared harness counts with std atomics

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use shmsync::{Event, Lock, mpmc};

#[path = "../../tests/common/mod.rs"]
mod common;

type Dir = common::TestDir;

/// Runs the binary with `args`, at most 60 s (its output read meanwhile, so a long
/// listing never fills the pipe).
fn shmsync(args: &[&str]) -> Output {
    let child = Command::new(env!("CARGO_BIN_EXE_shmsync"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(output) => output.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("shmsync {args:?} took over 60 s");
        }
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

/// This thread's kernel thread id.
fn tid() -> u32 {
    let link = std::fs::read_link("/proc/thread-self").unwrap();
    link.file_name().unwrap().to_str().unwrap().parse().unwrap()
}

fn json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", stderr(o));
    serde_json::from_str(&stdout(o)).unwrap_or_else(|e| panic!("{e}: {}", stdout(o)))
}

#[test]
fn ls_lists_objects_as_a_table_and_as_json() {
    let dir = Dir::new("ls");
    let _lock = Lock::create_with("a-lock", &dir.opts()).unwrap();
    let queue = mpmc::Queue::<u64>::create_with("b-queue", 8, &dir.opts()).unwrap();
    for v in 0..4 {
        queue.push(v).unwrap();
    }
    std::fs::write(dir.0.join("c-foreign"), b"not ours").unwrap();
    let mut damaged = vec![0u8; 1024];
    damaged[..8].copy_from_slice(b"shmsync\0");
    damaged[8..12].copy_from_slice(&7u32.to_le_bytes()); // an unknown state
    std::fs::write(dir.0.join("d-damaged"), &damaged).unwrap();

    let table = shmsync(&["ls", "--dir", dir.s()]);
    assert!(table.status.success(), "{}", stderr(&table));
    let text = stdout(&table);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(lines[0].starts_with("NAME") && lines[0].contains("ALIVE/DEAD"), "{text}");
    let queue_row: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(&queue_row[..2], ["b-queue", "MpmcQueue"], "{text}");
    assert_eq!((queue_row[3], queue_row[4], queue_row[5]), ("8", "4", "1/0"), "{text}");
    assert!(lines[3].starts_with("d-damaged") && lines[3].contains("corrupted"), "{text}");
    assert!(!text.contains("c-foreign"), "{text}");

    let listed = json(&shmsync(&["ls", "--dir", dir.s(), "--json"]));
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 3);
    assert_eq!(listed[0]["name"], "a-lock");
    assert_eq!(listed[0]["kind"], "Lock");
    assert_eq!(listed[0]["attached_alive"], serde_json::json!([std::process::id()]));
    assert_eq!(listed[1]["len"], 4);
    assert_eq!(listed[1]["capacity"], 8);
    assert_eq!(listed[2]["corrupted"], true);
    assert!(listed[2]["problem"].as_str().unwrap().contains("state"));
}

#[test]
fn inspect_decodes_a_held_lock_and_a_half_full_queue() {
    let dir = Dir::new("inspect");
    let lock = Lock::create_with("held", &dir.opts()).unwrap();
    let queue = mpmc::Queue::<u64>::create_with("half", 16, &dir.opts()).unwrap();
    for v in 0..10 {
        queue.push(v).unwrap();
    }
    for _ in 0..2 {
        queue.pop().unwrap();
    }

    let free = json(&shmsync(&["inspect", "held", "--dir", dir.s(), "--json"]));
    assert_eq!((&free["owner_tid"], &free["waiters"]), (&"0".into(), &"false".into()));
    let guard = lock.lock().unwrap();
    let held = json(&shmsync(&["inspect", "held", "--dir", dir.s(), "--json"]));
    assert_eq!(held["kind"], "Lock");
    assert_eq!(held["owner_tid"], tid().to_string());
    assert_eq!(held["owner_died"], "false");
    assert_eq!(held["attached"], format!("{} (alive)", std::process::id()));
    drop(guard);

    let q = json(&shmsync(&["inspect", "half", "--dir", dir.s(), "--json"]));
    assert_eq!((&q["head"], &q["tail"], &q["len"]), (&"2".into(), &"10".into(), &"8".into()));
    assert_eq!((&q["capacity"], &q["free"]), (&"16".into(), &"8".into()));

    let lines = shmsync(&["inspect", "half", "--dir", dir.s()]);
    assert!(
        stdout(&lines).lines().any(|l| l.split_whitespace().eq(["len", "8"])),
        "{}",
        stdout(&lines)
    );

    let missing = shmsync(&["inspect", "nope", "--dir", dir.s()]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(stderr(&missing).contains("no shared-memory object is called \"nope\""));
    let bad = shmsync(&["inspect", "../etc", "--dir", dir.s()]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(stderr(&bad).contains("invalid object name"), "{}", stderr(&bad));
}

#[test]
fn rm_removes_objects_and_refuses_other_files() {
    let dir = Dir::new("rm");
    drop(Event::create_with("one", &dir.opts()).unwrap());
    let _two = Event::create_with("two", &dir.opts()).unwrap();
    std::fs::write(dir.0.join("foreign"), b"not ours").unwrap();
    let out = shmsync(&["rm", "one", "two", "--dir", dir.s()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(dir.names(), ["foreign"]);
    let out = shmsync(&["rm", "foreign", "gone", "--dir", dir.s()]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("rm foreign") && err.contains("rm gone") && err.contains("2 of 2"),
        "{err}"
    );
    assert_eq!(dir.names(), ["foreign"]);
    // No names at all is a usage error.
    assert_eq!(shmsync(&["rm"]).status.code(), Some(2));
}

#[test]
fn gc_dry_run_lists_and_gc_removes_what_nobody_holds() {
    let dir = Dir::new("gc");
    drop(Event::create_with("left", &dir.opts()).unwrap());
    let _held = Event::create_with("held", &dir.opts()).unwrap();
    let dry = shmsync(&["gc", "--dry-run", "--dir", dir.s()]);
    assert!(dry.status.success());
    assert_eq!(stdout(&dry), "would remove left\n");
    assert_eq!(dir.names(), ["held", "left"]);
    let real = shmsync(&["gc", "--dir", dir.s()]);
    assert_eq!(stdout(&real), "removed left\n");
    assert_eq!(dir.names(), ["held"]);
    let missing = shmsync(&["gc", "--dir", "/nonexistent-shmsync-dir"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(stderr(&missing).contains("cannot collect"), "{}", stderr(&missing));
    assert_eq!(shmsync(&["gc", "--bogus"]).status.code(), Some(2));
}

#[test]
fn ls_of_ten_thousand_objects() {
    let dir = Dir::new("many");
    for i in 0..10_000 {
        drop(Event::create_with(&format!("event-{i:05}"), &dir.opts()).unwrap());
    }
    let start = Instant::now();
    let out = shmsync(&["ls", "--dir", dir.s()]);
    let took = start.elapsed();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).lines().count(), 10_001);
    eprintln!("shmsync ls of 10,000 objects: {took:?}");
    // The figure is docs/PERFORMANCE.md's (release build); a debug build under a loaded
    // CI machine only has to stay clear of pathological.
    assert!(took < Duration::from_secs(20), "{took:?}");
}
