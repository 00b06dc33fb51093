//! The showdown: shmsync against the kernel's IPC, side by side, between real processes.
//!
//! ```text
//! cargo run --release --example showdown                 # the table
//! cargo run --release --example showdown -- --json out.json --rounds 7
//! cargo run --release --example showdown -- --only sleeping --only semaphore
//! ```
//!
//! Each scenario runs shmsync and each OS mechanism in turn (A B A B ...) for several
//! rounds, each round a fresh pair of processes (this program re-executed as the peer),
//! and reports the median per operation, the ratio, and the CPUs the pair ran on. Every
//! value, message and byte moved is checked. The machine's limits (a cache-line round
//! trip between two processes, one thread's `memcpy`) are measured the same way, so every
//! figure can be read as a fraction of what the hardware allows.
#![allow(clippy::disallowed_types)] // this program's own shared layouts hold std atomics

use std::cell::UnsafeCell;
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use shmsync::raw::{RawLock, RawSemaphore};
use shmsync::{Pipe, Shared, ShmSafe, spsc};

#[path = "support/fd.rs"]
mod fd;
#[path = "support/ping_pong.rs"]
mod ping_pong;
use fd::{read_exact, write_all};
use ping_pong::PingPong;

const ROLE_ENV: &str = "SHOWDOWN_ROLE";
/// The bound on any one wait: a broken peer fails the run instead of hanging it.
const LIMIT: Duration = Duration::from_secs(30);
const BULK: usize = 64 * 1024;

fn main() {
    if let Ok(role) = std::env::var(ROLE_ENV) {
        peer(&role);
        println!("cpu={}", cpu());
        return;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut json = None;
    let mut rounds = 7;
    let mut only = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--json" => json = Some(it.next().expect("--json needs a path").clone()),
            "--rounds" => {
                rounds = it.next().and_then(|n| n.parse().ok()).expect("--rounds needs a number")
            }
            "--only" => {
                only.push(it.next().expect("--only needs part of a scenario's name").clone())
            }
            "-h" | "--help" => {
                println!("usage: showdown [--rounds N] [--json PATH] [--only PART-OF-NAME]...");
                return;
            }
            other => panic!("unknown argument {other} (try --help)"),
        }
    }
    let started = Instant::now();
    let chosen = |s: &Scenario| only.is_empty() || only.iter().any(|o| s.name.contains(o.as_str()));
    let results: Vec<Outcome> =
        scenarios().iter().filter(|s| chosen(s)).map(|s| s.run(rounds)).collect();
    print_table(&results, rounds);
    eprintln!("done in {:.1} s", started.elapsed().as_secs_f64());
    if let Some(path) = json {
        std::fs::write(&path, to_json(&results, rounds)).expect("write the JSON file");
        eprintln!("wrote {path}");
    }
}

// ---- what runs, and how it is reported ---------------------------------------------

/// One measured run: nanoseconds per operation, and the CPUs (ours, the peer's).
#[derive(Clone, Copy)]
struct Sample {
    ns: f64,
    cpus: (i32, i32),
}

type Run = fn() -> Sample;

struct Scenario {
    name: &'static str,
    unit: &'static str,
    shmsync: (&'static str, Run),
    others: Vec<(&'static str, Run)>,
}

struct Outcome {
    name: &'static str,
    unit: &'static str,
    shmsync: (&'static str, Vec<Sample>),
    others: Vec<(&'static str, Vec<Sample>)>,
}

impl Scenario {
    /// Interleaves shmsync and the others, round after round.
    fn run(&self, rounds: usize) -> Outcome {
        let mut shm = Vec::new();
        let mut others: Vec<Vec<Sample>> = vec![Vec::new(); self.others.len()];
        let terminal = std::io::stderr().is_terminal();
        for round in 1..=rounds {
            if terminal {
                eprint!("\r{:<40} round {round}/{rounds}", self.name);
                let _ = std::io::stderr().flush();
            }
            shm.push((self.shmsync.1)());
            for (k, (_, run)) in self.others.iter().enumerate() {
                others[k].push(run());
            }
        }
        eprintln!("\r{:<40} done ({rounds} rounds)", self.name);
        Outcome {
            name: self.name,
            unit: self.unit,
            shmsync: (self.shmsync.0, shm),
            others: self.others.iter().map(|(n, _)| *n).zip(others).collect(),
        }
    }
}

fn median(samples: &[Sample]) -> f64 {
    let mut v: Vec<f64> = samples.iter().map(|s| s.ns).collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn show_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} us", ns / 1e3)
    } else {
        format!("{ns:.1} ns")
    }
}

fn print_table(results: &[Outcome], rounds: usize) {
    println!();
    println!("shmsync showdown: medians of {rounds} interleaved rounds, real process pairs");
    println!("ratio = the other's time / shmsync's time (above 1: shmsync is faster);");
    println!("limits are what the hardware allows at best, shown apart with shmsync's distance");
    for r in results {
        let shm = median(&r.shmsync.1);
        let cpus = r.shmsync.1.last().map(|s| s.cpus).unwrap_or((-1, -1));
        println!();
        println!("{}, {} (CPUs {} and {})", r.name, r.unit, cpus.0, cpus.1);
        println!("  {:<34} {:>10}", format!("shmsync {}", r.shmsync.0), show_ns(shm));
        // Comparisons first; the hardware's limits apart, read the other way round.
        let (limits, rivals): (Vec<_>, Vec<_>) =
            r.others.iter().partition(|(other, _)| other.ends_with("(limit)"));
        for (other, samples) in rivals {
            let theirs = median(samples);
            println!("  {other:<34} {:>10} {:>9.1}x", show_ns(theirs), theirs / shm);
        }
        for (other, samples) in limits {
            let floor = median(samples);
            let what = other.trim_end_matches(" (limit)");
            println!(
                "  {:<34} {:>10}   a limit, not a rival: shmsync takes {:.1}x this floor",
                format!("limit: {what}"),
                show_ns(floor),
                shm / floor
            );
        }
    }
}

fn to_json(results: &[Outcome], rounds: usize) -> String {
    let samples =
        |s: &[Sample]| s.iter().map(|x| format!("{:.3}", x.ns)).collect::<Vec<_>>().join(", ");
    let mut out = format!("{{\n  \"rounds\": {rounds},\n  \"scenarios\": [\n");
    for (i, r) in results.iter().enumerate() {
        let cpus = r.shmsync.1.last().map(|s| s.cpus).unwrap_or((-1, -1));
        out += &format!(
            "    {{\"name\": \"{}\", \"unit\": \"{}\", \"cpus\": [{}, {}],\n      \"shmsync\": {{\"variant\": \"{}\", \"median_ns\": {:.3}, \"samples_ns\": [{}]}},\n      \"others\": [",
            r.name,
            r.unit,
            cpus.0,
            cpus.1,
            r.shmsync.0,
            median(&r.shmsync.1),
            samples(&r.shmsync.1)
        );
        let others: Vec<String> = r
            .others
            .iter()
            .map(|(n, s)| {
                format!(
                    "\n        {{\"variant\": \"{n}\", \"median_ns\": {:.3}, \"ratio\": {:.3}, \"samples_ns\": [{}]}}",
                    median(s),
                    median(s) / median(&r.shmsync.1),
                    samples(s)
                )
            })
            .collect();
        out += &others.join(",");
        out += "]}";
        out += if i + 1 < results.len() { ",\n" } else { "\n" };
    }
    out + "  ]\n}\n"
}

fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "SPSC queue, u64 values",
            unit: "per value",
            shmsync: ("spsc::Producer", spsc_run),
            others: vec![("pipe, one write per value", pipe_stream_run)],
        },
        Scenario {
            name: "round trip, 8 bytes, sleeping",
            unit: "per round trip",
            shmsync: ("Pipe, set_spin(false)", || shm_rtt(false)),
            others: vec![
                ("pipe pair", || fd_rtt(FdKind::Pipe)),
                ("Unix socketpair", || fd_rtt(FdKind::Socket)),
                ("eventfd pair", || fd_rtt(FdKind::EventFd)),
            ],
        },
        Scenario {
            name: "round trip, 8 bytes, spinning",
            unit: "per round trip",
            shmsync: ("Pipe (default)", || shm_rtt(true)),
            others: vec![
                ("pipe pair", || fd_rtt(FdKind::Pipe)),
                ("Unix socketpair", || fd_rtt(FdKind::Socket)),
                ("eventfd pair", || fd_rtt(FdKind::EventFd)),
                ("pipe pair, busy polling", || fd_rtt(FdKind::PipeBusyPoll)),
                ("cache-line ping-pong (limit)", cache_line_rtt),
            ],
        },
        Scenario {
            name: "bulk, 64 KiB messages",
            unit: "per 64 KiB",
            shmsync: ("Pipe send/recv_into", shm_bulk),
            others: vec![
                ("pipe, default size", || fd_bulk(Some(0))),
                ("pipe, 1 MiB", || fd_bulk(Some(1 << 20))),
                ("Unix socketpair", || fd_bulk(None)),
                ("memcpy, one thread (limit)", memcpy_run),
            ],
        },
        Scenario {
            name: "lock, two processes contending",
            unit: "per lock+unlock",
            shmsync: ("raw::RawLock", || lock_run(false)),
            others: vec![("pthread_mutex_t, pshared", || lock_run(true))],
        },
        Scenario {
            name: "semaphore ping-pong",
            unit: "per round trip",
            shmsync: ("raw::RawSemaphore", || sem_run(false)),
            others: vec![("sem_t, pshared", || sem_run(true))],
        },
    ]
}

// ---- plumbing ----------------------------------------------------------------------

fn cpu() -> i32 {
    // SAFETY: no arguments; returns the CPU this thread runs on, or -1.
    unsafe { libc::sched_getcpu() }
}

fn unique(tag: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("showdown-{}-{}-{tag}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

fn env(key: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| panic!("peer started without {key}"))
}

fn env_u64(key: &str) -> u64 {
    env(key).parse().unwrap()
}

/// Starts this program as the peer `role`.
fn spawn(role: &str, env: &[(&str, String)]) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .env(ROLE_ENV, role)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::piped())
        .spawn()
        .expect("start the peer")
}

/// Waits (bounded) for the peer to succeed and returns the CPU it reported.
fn finish(mut child: Child) -> i32 {
    let end = Instant::now() + LIMIT;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > end {
            let _ = child.kill();
            panic!("a peer is still running after {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "a peer failed: {}", out.status);
    BufReader::new(&out.stdout[..])
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.strip_prefix("cpu=").and_then(|c| c.parse().ok()))
        .unwrap_or(-1)
}

fn sample(elapsed: Duration, ops: u64, child: Child) -> Sample {
    let mine = cpu();
    Sample { ns: elapsed.as_nanos() as f64 / ops as f64, cpus: (mine, finish(child)) }
}

/// Two descriptors a peer inherits (no CLOEXEC).
fn fd_pair(kind: FdKind) -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: each call writes two fresh descriptors into the array (or one for eventfd).
    unsafe {
        match kind {
            FdKind::Pipe | FdKind::PipeBusyPoll => assert_eq!(libc::pipe2(fds.as_mut_ptr(), 0), 0),
            FdKind::Socket => assert_eq!(
                libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, fds.as_mut_ptr()),
                0
            ),
            FdKind::EventFd => {
                fds[0] = libc::eventfd(0, 0);
                assert!(fds[0] >= 0);
                fds[1] = libc::dup(fds[0]);
            }
        }
        (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))
    }
}

#[derive(Clone, Copy, PartialEq)]
enum FdKind {
    Pipe,
    PipeBusyPoll,
    Socket,
    EventFd,
}

/// The peer's side of every scenario.
fn peer(role: &str) {
    match role {
        "spsc" => {
            let mut tx = spsc::Producer::<u64>::open(&env("NAME")).unwrap();
            for v in 0..env_u64("COUNT") {
                tx.push_timeout(v, LIMIT).unwrap();
            }
        }
        "pipe-stream" => {
            let fd = env_u64("OUT") as RawFd;
            for v in 0..env_u64("COUNT") {
                write_all(fd, &v.to_ne_bytes());
            }
        }
        "shm-echo" => {
            let mut b = Pipe::open(&env("NAME")).unwrap();
            b.set_spin(env("SPIN") == "1");
            let mut word = [0; 8];
            for _ in 0..=env_u64("COUNT") {
                word.copy_from_slice(&b.recv_timeout(LIMIT).unwrap());
                b.send_timeout(&word, LIMIT).unwrap();
            }
        }
        "fd-echo" => {
            let (fd_in, fd_out) = (env_u64("IN") as RawFd, env_u64("OUT") as RawFd);
            let mut word = [0; 8];
            for _ in 0..=env_u64("COUNT") {
                read_exact(fd_in, &mut word);
                write_all(fd_out, &word);
            }
        }
        "ping-pong" => {
            let pp = Shared::<PingPong>::open(&env("NAME")).unwrap();
            for i in 1..=env_u64("COUNT") + 1 {
                spin_until(|| pp.ping.load(Ordering::Acquire) == i);
                pp.pong.store(i, Ordering::Release);
            }
        }
        "shm-bulk" => {
            let mut b = Pipe::open(&env("NAME")).unwrap();
            let mut chunk = bulk_pattern();
            for k in 0..=env_u64("COUNT") {
                chunk[..8].copy_from_slice(&k.to_ne_bytes());
                b.send_timeout(&chunk, LIMIT).unwrap();
            }
        }
        "fd-bulk" => {
            let fd = env_u64("OUT") as RawFd;
            let mut chunk = bulk_pattern();
            for k in 0..=env_u64("COUNT") {
                chunk[..8].copy_from_slice(&k.to_ne_bytes());
                write_all(fd, &chunk);
            }
        }
        "lock" => {
            let arena = Shared::<LockArena>::open(&env("NAME")).unwrap();
            contend(&arena, env("OS") == "1", env_u64("COUNT"));
        }
        "sem" => {
            let arena = Shared::<SemArena>::open(&env("NAME")).unwrap();
            let os = env("OS") == "1";
            for _ in 0..=env_u64("COUNT") {
                arena.wait(os, 0);
                arena.post(os, 1);
            }
        }
        other => panic!("unknown role {other}"),
    }
}

fn spin_until(mut f: impl FnMut() -> bool) {
    let end = Instant::now() + LIMIT;
    let mut n = 0u32;
    while !f() {
        std::hint::spin_loop();
        n = n.wrapping_add(1);
        if n % 4096 == 0 {
            assert!(Instant::now() < end, "the peer stopped answering");
        }
    }
}

// ---- scenarios ---------------------------------------------------------------------

fn spsc_run() -> Sample {
    const COUNT: u64 = 10_000_000;
    let name = unique("spsc");
    let mut rx = spsc::Consumer::<u64>::create(&name, 4096).unwrap();
    let child = spawn("spsc", &[("NAME", name.clone()), ("COUNT", COUNT.to_string())]);
    assert_eq!(rx.pop_timeout(LIMIT).unwrap(), 0); // the peer is streaming: start the clock
    let start = Instant::now();
    for want in 1..COUNT {
        assert_eq!(rx.pop_timeout(LIMIT).unwrap(), want);
    }
    let elapsed = start.elapsed();
    spsc::Consumer::<u64>::unlink(&name).unwrap();
    sample(elapsed, COUNT - 1, child)
}

fn pipe_stream_run() -> Sample {
    const COUNT: u64 = 200_000;
    let (r, w) = fd_pair(FdKind::Pipe);
    let child =
        spawn("pipe-stream", &[("OUT", w.as_raw_fd().to_string()), ("COUNT", COUNT.to_string())]);
    drop(w);
    let mut buf = vec![0u8; 64 * 1024];
    let mut first = [0; 8];
    read_exact(r.as_raw_fd(), &mut first);
    assert_eq!(u64::from_ne_bytes(first), 0);
    let start = Instant::now();
    let (mut next, mut carry) = (1u64, Vec::new());
    while next < COUNT {
        // SAFETY: reads into a live buffer.
        let n = unsafe { libc::read(r.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        assert!(n > 0, "the writer left early");
        carry.extend_from_slice(&buf[..n as usize]);
        let whole = carry.len() / 8 * 8;
        for v in carry[..whole].chunks_exact(8) {
            assert_eq!(u64::from_ne_bytes(v.try_into().unwrap()), next);
            next += 1;
        }
        carry.drain(..whole);
    }
    sample(start.elapsed(), COUNT - 1, child)
}

fn shm_rtt(spin: bool) -> Sample {
    let count: u64 = if spin { 200_000 } else { 4_000 };
    let name = unique("rtt");
    let mut a = Pipe::create(&name, 4096).unwrap();
    a.set_spin(spin);
    let env =
        [("NAME", name.clone()), ("SPIN", (spin as u8).to_string()), ("COUNT", count.to_string())];
    let child = spawn("shm-echo", &env);
    let mut round_trip = |i: u64| {
        a.send_timeout(&i.to_ne_bytes(), LIMIT).unwrap();
        assert_eq!(*a.recv_timeout(LIMIT).unwrap(), i.to_ne_bytes());
    };
    round_trip(0); // the peer is up
    let start = Instant::now();
    for i in 1..=count {
        round_trip(i);
    }
    let elapsed = start.elapsed();
    Pipe::unlink(&name).unwrap();
    sample(elapsed, count, child)
}

fn fd_rtt(kind: FdKind) -> Sample {
    let count: u64 = if kind == FdKind::PipeBusyPoll { 50_000 } else { 4_000 };
    let (to_peer_r, to_peer_w) = fd_pair(kind);
    let (from_peer_r, from_peer_w) = fd_pair(kind);
    if kind == FdKind::PipeBusyPoll {
        for fd in [to_peer_r.as_raw_fd(), from_peer_r.as_raw_fd()] {
            // SAFETY: fcntl on descriptors we own.
            unsafe {
                let flags = libc::fcntl(fd, libc::F_GETFL);
                assert_eq!(libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK), 0);
            }
        }
    }
    // A socket carries both ways; for pipes and eventfds each direction has its own pair.
    let (out, inp, peer_in, peer_out) = match kind {
        FdKind::Socket => (
            to_peer_r.as_raw_fd(),
            to_peer_r.as_raw_fd(),
            to_peer_w.as_raw_fd(),
            to_peer_w.as_raw_fd(),
        ),
        _ => (
            to_peer_w.as_raw_fd(),
            from_peer_r.as_raw_fd(),
            to_peer_r.as_raw_fd(),
            from_peer_w.as_raw_fd(),
        ),
    };
    let env =
        [("IN", peer_in.to_string()), ("OUT", peer_out.to_string()), ("COUNT", count.to_string())];
    let child = spawn("fd-echo", &env);
    // An eventfd adds what is written; a counter value that never repeats still checks it.
    let round_trip = |i: u64| {
        let v = i + 1; // eventfd refuses 0
        write_all(out, &v.to_ne_bytes());
        let mut word = [0; 8];
        read_exact(inp, &mut word);
        assert_eq!(u64::from_ne_bytes(word), v);
    };
    round_trip(0);
    let start = Instant::now();
    for i in 1..=count {
        round_trip(i);
    }
    sample(start.elapsed(), count, child)
}

fn cache_line_rtt() -> Sample {
    const COUNT: u64 = 200_000;
    let name = unique("pingpong");
    let pp = Shared::<PingPong>::create(&name, |_| {}).unwrap();
    let child = spawn("ping-pong", &[("NAME", name.clone()), ("COUNT", COUNT.to_string())]);
    let round_trip = |i: u64| {
        pp.ping.store(i, Ordering::Release);
        spin_until(|| pp.pong.load(Ordering::Acquire) == i);
    };
    round_trip(1);
    let start = Instant::now();
    for i in 2..=COUNT + 1 {
        round_trip(i);
    }
    let elapsed = start.elapsed();
    Shared::<PingPong>::unlink(&name).unwrap();
    sample(elapsed, COUNT, child)
}

/// A 64 KiB message: its number in the first 8 bytes, then a fixed pattern.
fn bulk_pattern() -> Vec<u8> {
    (0..BULK).map(|i| (i * 7 + 3) as u8).collect()
}

fn check_chunk(chunk: &[u8], k: u64, pattern: &[u8]) {
    assert_eq!(chunk.len(), BULK);
    assert_eq!(chunk[..8], k.to_ne_bytes(), "chunk {k} out of order");
    assert!(chunk[8..] == pattern[8..], "chunk {k} damaged");
}

fn shm_bulk() -> Sample {
    const COUNT: u64 = 5_000;
    let name = unique("bulk");
    let mut a = Pipe::create(&name, 512 * 1024).unwrap(); // a 1 MiB ring
    let child = spawn("shm-bulk", &[("NAME", name.clone()), ("COUNT", COUNT.to_string())]);
    let pattern = bulk_pattern();
    let mut buf = Vec::with_capacity(BULK);
    a.recv_into(&mut buf).unwrap();
    check_chunk(&buf, 0, &pattern);
    let start = Instant::now();
    for k in 1..=COUNT {
        a.recv_into(&mut buf).unwrap();
        check_chunk(&buf, k, &pattern);
    }
    let elapsed = start.elapsed();
    Pipe::unlink(&name).unwrap();
    sample(elapsed, COUNT, child)
}

/// Kernel channels: `Some(0)` a pipe of the default size, `Some(n)` one of `n` bytes,
/// `None` a Unix socketpair.
fn fd_bulk(pipe_size: Option<i32>) -> Sample {
    const COUNT: u64 = 1_000;
    let (r, w) = fd_pair(if pipe_size.is_some() { FdKind::Pipe } else { FdKind::Socket });
    if let Some(size) = pipe_size.filter(|&s| s > 0) {
        // SAFETY: fcntl on a pipe we own.
        let got = unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, size) };
        assert!(got >= size, "F_SETPIPE_SZ refused");
    }
    let child =
        spawn("fd-bulk", &[("OUT", w.as_raw_fd().to_string()), ("COUNT", COUNT.to_string())]);
    drop(w);
    let pattern = bulk_pattern();
    let mut buf = vec![0u8; BULK];
    read_exact(r.as_raw_fd(), &mut buf);
    check_chunk(&buf, 0, &pattern);
    let start = Instant::now();
    for k in 1..=COUNT {
        read_exact(r.as_raw_fd(), &mut buf);
        check_chunk(&buf, k, &pattern);
    }
    sample(start.elapsed(), COUNT, child)
}

fn memcpy_run() -> Sample {
    const COUNT: usize = 20_000;
    let source = vec![0x5Au8; 1 << 20];
    let mut dest = vec![0u8; BULK];
    let start = Instant::now();
    for k in 0..COUNT {
        let at = k * BULK % source.len();
        dest.copy_from_slice(&source[at..at + BULK]);
        std::hint::black_box(&mut dest);
    }
    let elapsed = start.elapsed();
    assert!(dest.iter().all(|&b| b == 0x5A));
    Sample { ns: elapsed.as_nanos() as f64 / COUNT as f64, cpus: (cpu(), cpu()) }
}

/// A shmsync lock, a process-shared pthread mutex, the counter they guard, and a start
/// gate, each on its own cache lines.
#[repr(C, align(128))]
struct LockArena {
    lock: RawLock,
    _pad0: [u8; 88],
    mutex: UnsafeCell<[u64; 16]>,
    counter: UnsafeCell<u64>,
    _pad1: [u64; 15],
    ready: AtomicU32,
    go: AtomicU32,
    done: AtomicU32,
}
// SAFETY: repr(C); the pthread mutex is bytes that pthread synchronises itself, the
// counter is only touched under the lock, the rest is atomics or ShmSafe.
unsafe impl ShmSafe for LockArena {}

impl LockArena {
    fn mutex(&self) -> *mut libc::pthread_mutex_t {
        self.mutex.get().cast()
    }
}

/// Both processes: wait at the gate, then `count` increments under the lock.
fn contend(arena: &LockArena, os: bool, count: u64) {
    arena.ready.fetch_add(1, Ordering::AcqRel);
    spin_until(|| arena.go.load(Ordering::Acquire) == 1);
    for _ in 0..count {
        if os {
            // SAFETY: a process-shared mutex initialised by the creator.
            unsafe {
                assert_eq!(libc::pthread_mutex_lock(arena.mutex()), 0);
                *arena.counter.get() += 1;
                assert_eq!(libc::pthread_mutex_unlock(arena.mutex()), 0);
            }
        } else {
            let _guard = arena.lock.lock().unwrap();
            // SAFETY: the counter is only touched under the lock.
            unsafe { *arena.counter.get() += 1 };
        }
    }
    arena.done.fetch_add(1, Ordering::AcqRel);
}

fn lock_run(os: bool) -> Sample {
    const COUNT: u64 = 300_000;
    let name = unique("lock");
    let arena = Shared::<LockArena>::create(&name, |a| {
        // SAFETY: initialises the process-shared mutex in the fresh segment.
        unsafe {
            let mut attr: libc::pthread_mutexattr_t = std::mem::zeroed();
            assert_eq!(libc::pthread_mutexattr_init(&mut attr), 0);
            assert_eq!(
                libc::pthread_mutexattr_setpshared(&mut attr, libc::PTHREAD_PROCESS_SHARED),
                0
            );
            assert_eq!(libc::pthread_mutex_init(a.mutex(), &attr), 0);
        }
    })
    .unwrap();
    let child = spawn(
        "lock",
        &[("NAME", name.clone()), ("OS", (os as u8).to_string()), ("COUNT", COUNT.to_string())],
    );
    spin_until(|| arena.ready.load(Ordering::Acquire) == 1);
    let start = Instant::now();
    arena.go.store(1, Ordering::Release);
    contend(&arena, os, COUNT);
    spin_until(|| arena.done.load(Ordering::Acquire) == 2);
    let elapsed = start.elapsed();
    let cpus = cpu();
    let peer_cpu = finish(child);
    // SAFETY: both processes are done with the counter.
    assert_eq!(unsafe { *arena.counter.get() }, 2 * COUNT, "lost increments");
    Shared::<LockArena>::unlink(&name).unwrap();
    Sample { ns: elapsed.as_nanos() as f64 / (2 * COUNT) as f64, cpus: (cpus, peer_cpu) }
}

/// Two semaphores of each kind, on cache lines of their own.
#[repr(C, align(128))]
struct SemArena {
    shm: [RawSemaphore; 2],
    _pad: [u8; 112],
    os: [UnsafeCell<[u64; 16]>; 2],
}
// SAFETY: repr(C); sem_t is bytes that the kernel and libc synchronise themselves.
unsafe impl ShmSafe for SemArena {}

impl SemArena {
    fn sem(&self, k: usize) -> *mut libc::sem_t {
        self.os[k].get().cast()
    }

    fn wait(&self, os: bool, k: usize) {
        if os {
            let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
            // SAFETY: fills a timespec; then waits on a process-shared semaphore
            // initialised by the creator.
            unsafe {
                libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts);
                ts.tv_sec += LIMIT.as_secs() as libc::time_t;
                assert_eq!(libc::sem_timedwait(self.sem(k), &ts), 0, "sem_timedwait failed");
            }
        } else {
            assert!(self.shm[k].acquire_timeout(LIMIT), "the peer stopped answering");
        }
    }

    fn post(&self, os: bool, k: usize) {
        if os {
            // SAFETY: as in `wait`.
            assert_eq!(unsafe { libc::sem_post(self.sem(k)) }, 0);
        } else {
            self.shm[k].release().unwrap();
        }
    }
}

fn sem_run(os: bool) -> Sample {
    const COUNT: u64 = 4_000;
    let name = unique("sem");
    let arena = Shared::<SemArena>::create(&name, |a| {
        for k in 0..2 {
            // SAFETY: initialises a process-shared semaphore in the fresh segment.
            assert_eq!(unsafe { libc::sem_init(a.sem(k), 1, 0) }, 0);
        }
    })
    .unwrap();
    let child = spawn(
        "sem",
        &[("NAME", name.clone()), ("OS", (os as u8).to_string()), ("COUNT", COUNT.to_string())],
    );
    let round_trip = || {
        arena.post(os, 0);
        arena.wait(os, 1);
    };
    round_trip();
    let start = Instant::now();
    for _ in 0..COUNT {
        round_trip();
    }
    let elapsed = start.elapsed();
    assert_eq!(arena.shm[0].value() + arena.shm[1].value(), 0, "a post went missing");
    Shared::<SemArena>::unlink(&name).unwrap();
    sample(elapsed, COUNT, child)
}
