//! Every example runs to completion and leaves /dev/shm as it found it.
#![cfg(not(miri))]

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// `cargo test` builds the examples next to the test binaries' directory.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let path = profile_dir.join("examples").join(name);
    assert!(path.exists(), "{} is missing: run the examples through `cargo test`", path.display());
    path
}

/// Fails if `dir` holds a file whose name starts with `prefix`.
fn assert_nothing_left(dir: &str, prefix: &str) {
    let leftovers: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(prefix))
        .collect();
    assert!(leftovers.is_empty(), "left in {dir}: {leftovers:?}");
}

/// Waits for `child` at most `limit`, then returns its output; kills it and fails if not.
fn wait_bounded(mut child: std::process::Child, name: &str, limit: Duration) -> Output {
    let end = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > end {
            let _ = child.kill();
            panic!("example {name} still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "example {name} failed: {}", out.status);
    out
}

fn run_bounded(name: &str, limit: Duration) -> String {
    let child = Command::new(example(name)).stdout(std::process::Stdio::piped()).spawn().unwrap();
    String::from_utf8(wait_bounded(child, name, limit).stdout).unwrap()
}

#[test]
fn two_process_example_round_trips_and_cleans_up() {
    let out = run_bounded("two_process", Duration::from_secs(60));
    let pid_line = out.lines().next().expect("the example printed nothing");
    let parent_pid = pid_line.split([' ', ':']).nth(1).unwrap();
    let name = format!("two-process-demo-{parent_pid}");
    assert!(out.contains("read \"hello from the creator\""), "{out}");
    assert!(out.contains("replied 1 time(s)"), "{out}");
    assert!(!PathBuf::from("/dev/shm").join(&name).exists(), "{name} was left in /dev/shm");
}

#[test]
fn uncontended_operations_make_no_futex_call() {
    if Command::new("strace").arg("-V").output().is_err() {
        eprintln!("skipped: strace is not installed");
        return;
    }
    let out = Command::new("strace")
        .args(["-f", "-c", "-e", "trace=futex,futex_waitv,get_robust_list"])
        .arg(example("no_syscalls"))
        .output()
        .unwrap();
    assert!(out.status.success(), "no_syscalls failed: {}", String::from_utf8_lossy(&out.stderr));
    let table = String::from_utf8(out.stderr).unwrap();
    let calls = |name: &str| -> u64 {
        table
            .lines()
            .find(|l| l.split_whitespace().last() == Some(name))
            .and_then(|l| l.split_whitespace().nth(3))
            .map_or(0, |n| n.parse().unwrap())
    };
    // The trace must have seen the program: the robust list is looked up once.
    assert_eq!(calls("get_robust_list"), 1, "strace saw nothing?\n{table}");
    assert_eq!(calls("futex"), 0, "200,000 uncontended rounds made futex calls:\n{table}");
    assert_eq!(calls("futex_waitv"), 0, "a ready wait set slept:\n{table}");
}

#[test]
fn the_showdown_prints_every_scenario_and_writes_json() {
    let json = std::env::temp_dir().join(format!("showdown-test-{}.json", std::process::id()));
    let child = Command::new(example("showdown"))
        .args(["--rounds", "1", "--json"])
        .arg(&json)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let prefix = format!("showdown-{}-", child.id());
    let out = wait_bounded(child, "showdown", Duration::from_secs(120));
    let table = String::from_utf8(out.stdout).unwrap();
    for scenario in [
        "SPSC queue, u64 values",
        "round trip, 8 bytes, sleeping",
        "round trip, 8 bytes, spinning",
        "bulk, 64 KiB messages",
        "lock, two processes contending",
        "semaphore ping-pong",
    ] {
        assert!(table.contains(scenario), "{scenario} missing from:\n{table}");
    }
    assert!(table.contains("pipe pair") && table.contains("eventfd pair"), "{table}");
    let written = std::fs::read_to_string(&json).unwrap();
    std::fs::remove_file(&json).unwrap();
    assert!(written.trim_start().starts_with('{') && written.trim_end().ends_with('}'));
    // Six scenarios: shmsync's median and those of 15 other mechanisms.
    assert_eq!(written.matches("\"median_ns\"").count(), 6 + 15, "{written}");
    assert_nothing_left("/dev/shm", &prefix);
}

/// Runs the example `name` to completion (bounded) and returns its output, checking that
/// it left no object of its own in /dev/shm (they are named `example-<tag>-<pid>`).
fn run_and_check_clean(name: &str) -> String {
    let child = Command::new(example(name)).stdout(std::process::Stdio::piped()).spawn().unwrap();
    let suffix = format!("-{}", child.id());
    let out = String::from_utf8(wait_bounded(child, name, Duration::from_secs(60)).stdout).unwrap();
    let leftovers: Vec<_> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("example-") && n.ends_with(&suffix))
        .collect();
    assert!(leftovers.is_empty(), "{name} left {leftovers:?} in /dev/shm");
    out
}

#[test]
fn process_ids_reports_two_children_of_this_parent() {
    let out = run_and_check_clean("process_ids");
    let main_pid = out.lines().next().unwrap().rsplit(' ').next().unwrap().to_string();
    let children: Vec<_> = out.lines().filter(|l| l.starts_with("function ")).collect();
    assert_eq!(children.len(), 2, "{out}");
    assert!(children.iter().all(|l| l.ends_with(&format!("parent process id {main_pid}"))));
}

#[test]
fn worker_pool_squares_every_number() {
    let out = run_and_check_clean("worker_pool");
    assert!(out.contains("squares of 0..1000: [0, 1, 4, 9, 16] ... [996004, 998001]"), "{out}");
    assert!(out.contains("1000 numbers ran on 3 worker processes"), "{out}");
    assert!(out.contains("died mid-task: WorkerDied"), "{out}");
    assert!(out.contains("carries on: square(12) = 144"), "{out}");
}

#[test]
fn queue_writer_reader_gets_ten_readings_then_disconnected() {
    let out = run_and_check_clean("queue_writer_reader");
    assert_eq!(out.lines().filter(|l| l.starts_with("got reading")).count(), 10, "{out}");
    assert!(out.contains("Disconnected after 10 readings"), "{out}");
}

#[test]
fn shared_state_loses_no_update() {
    let out = run_and_check_clean("shared_state");
    assert!(out.contains("counter: 4000"), "{out}");
    assert!(out.contains("array: [100, 200, 300, 400]"), "{out}");
}

#[test]
fn sync_primitives_run_their_four_scenarios() {
    let out = run_and_check_clean("sync_primitives");
    assert_eq!(out.lines().filter(|l| l.contains("under the lock")).count(), 9, "{out}");
    assert_eq!(out.lines().filter(|l| l.contains("the event is set")).count(), 3, "{out}");
    assert!(out.contains("took 3 items once there were 3"), "{out}");
    assert!(out.contains("at most 2 children") || out.contains("at most 1 children"), "{out}");
    // The lock kept each child's three lines together.
    let locked: Vec<&str> = out.lines().filter(|l| l.contains("under the lock")).collect();
    for three in locked.chunks(3) {
        let who = three[0].split(':').next().unwrap();
        assert!(three.iter().all(|l| l.starts_with(who)), "lines mixed: {locked:?}");
    }
}

#[test]
fn pipe_producer_consumer_ends_with_disconnected() {
    let out = run_and_check_clean("pipe_producer_consumer");
    assert!(out.contains("received 100 lines"), "{out}");
    assert!(out.contains("then Disconnected"), "{out}");
}

#[test]
fn the_kill_loops_run_every_scenario_and_leave_nothing_behind() {
    // A short run (debug build, 15 kills each): the harness itself works and every line
    // passes; CI runs the release build with 300 kills per scenario.
    let child = Command::new(example("chaos"))
        .args(["--kills", "15", "--seed", "1"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let prefix = format!("example-chaos-{}-", child.id());
    let out =
        String::from_utf8(wait_bounded(child, "chaos", Duration::from_secs(300)).stdout).unwrap();
    for scenario in
        ["lock", "condition", "semaphore", "spsc", "mpmc", "pipe", "list", "dict", "lifecycle"]
    {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("chaos {scenario} ")))
            .unwrap_or_else(|| panic!("no line for {scenario} in:\n{out}"));
        assert!(line.contains(" PASS iterations=15 kills=15 "), "{line}");
        assert!(line.contains(" hangs=0 ") && line.contains(" duplicated=0 "), "{line}");
    }
    assert_nothing_left("/dev/shm", &prefix);
}

#[test]
fn manager_scenarios_run_on_the_shared_collections() {
    let out = run_and_check_clean("manager");
    assert!(
        out.contains("list: 40 values appended by 4 processes, [0, 1, 2] ... [308, 309]"),
        "{out}"
    );
    assert!(
        out.contains(
            r#"dict: [("apple", 4), ("banana", 4), ("cherry", 4)], and 4 workers registered"#
        ),
        "{out}"
    );
    assert!(out.contains("value: 6"), "{out}");
    assert!(out.contains("array: [0, 1, 4, 9]"), "{out}");
}

#[test]
fn waitset_server_serves_two_queues_and_a_pipe_until_every_client_is_gone() {
    let out = run_and_check_clean("waitset_server");
    assert!(out.contains("orders: [101, 102, 103, 104, 105]"), "{out}");
    assert!(out.contains("cancelled: [102, 104]"), "{out}");
    assert_eq!(out.lines().filter(|l| l.starts_with("asker got: ")).count(), 3, "{out}");
    assert!(out.contains("asker got: goodbye"), "{out}");
    assert!(out.contains("all three clients gone after"), "{out}");
}

#[test]
fn async_consumer_gets_every_reading_beside_a_ticking_timer() {
    let out = run_and_check_clean("async_consumer");
    assert!(out.contains("got 20 readings, from 20.0 to 21.9 C"), "{out}");
    assert!(out.contains("the timer ticked 5 times meanwhile"), "{out}");
}
