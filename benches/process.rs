//! Process and Pool against Python's `multiprocessing`, side by side in one run.
//!
//! `cargo bench --bench process` measures, each a median of several repetitions:
//! `Pool::map` of 1,000,000 u64 squares on a warm pool of 2 (chunksize 500, both sides);
//! an `apply` round trip; 200 CPU-bound tasks of about 1 ms on 2 workers against one
//! process; and spawning and joining a trivial `Process`. The Python figures come from
//! `python3` running the same work with `multiprocessing` (its "fork" and "spawn" start
//! methods for the last); without `python3` those rows say so and the ratios are left
//! out. Not a criterion bench: the Python side has to be timed by Python.

use std::process::Command;
use std::time::{Duration, Instant};

mod common;

use shmsync::process::{self, Pool, Process};

const ITEMS: u64 = 1_000_000;
const CHUNK: usize = 500;
const APPLIES: usize = 2_000;
const BUSY_TASKS: u64 = 200;
const SPAWNS: usize = 20;

fn square(x: u64) -> u64 {
    x * x
}

fn trivial(x: u32) -> u32 {
    x
}

/// About 1 ms of arithmetic (calibrated below, in the parent, and passed as `rounds`).
fn busy(rounds: u64) -> u64 {
    let mut x = rounds;
    for i in 0..rounds {
        x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(i));
    }
    x
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn time(reps: usize, mut f: impl FnMut()) -> Duration {
    f(); // warm
    median(
        (0..reps)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .collect(),
    )
}

const PYTHON: &str = r#"
import multiprocessing as mp, sys, time, statistics

def square(x): return x * x
def trivial(x): return x
def busy(rounds):
    x = rounds
    for i in range(rounds): x = (x * 6364136223846793005 + i) & 0xFFFFFFFFFFFFFFFF
    return x

def med(f, reps):
    f()
    s = []
    for _ in range(reps):
        t = time.perf_counter(); f(); s.append(time.perf_counter() - t)
    return statistics.median(s)

if __name__ == "__main__":
    items, chunk, applies, tasks, spawns, py_rounds = map(int, sys.argv[1:7])
    mp.set_start_method("fork")
    data = list(range(items))
    with mp.Pool(2) as pool:
        print("map", med(lambda: pool.map(square, data, chunksize=chunk), 11))
        print("apply", med(lambda: [pool.apply(trivial, (1,)) for _ in range(applies)], 3) / applies)
        print("busy_pool", med(lambda: pool.map(busy, [py_rounds] * tasks, chunksize=1), 3))
    print("busy_one", med(lambda: [busy(py_rounds) for _ in range(tasks)], 3))
    for method in ("fork", "spawn"):
        ctx = mp.get_context(method)
        def one():
            p = ctx.Process(target=trivial, args=(1,)); p.start(); p.join()
        print("spawn_" + method, med(lambda: [one() for _ in range(spawns)], 3) / spawns)
"#;

/// Rounds of `busy` that take about 1 ms here, and the same for Python's loop.
fn calibrate() -> (u64, u64) {
    let mut rounds = 1_000u64;
    loop {
        let t = Instant::now();
        busy(rounds);
        if t.elapsed() >= Duration::from_millis(1) {
            break;
        }
        rounds *= 2;
    }
    let py = Command::new("python3")
        .args(["-c", "import time\nr=1000\nwhile True:\n  t=time.perf_counter();x=r\n  for i in range(r): x=(x*6364136223846793005+i)&0xFFFFFFFFFFFFFFFF\n  if time.perf_counter()-t>=0.001: print(r); break\n  r*=2"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(1_000);
    (rounds, py)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    process::init();
    // `cargo bench` passes --bench; nothing else to parse.
    let (rounds, py_rounds) = calibrate();
    let pool = Pool::builder().processes(2).chunksize(CHUNK).build()?;
    let items: Vec<u64> = (0..ITEMS).collect();
    let map = time(11, || assert_eq!(pool.map(square, &items).unwrap()[999], 998_001));
    let apply = time(3, || {
        for _ in 0..APPLIES {
            assert_eq!(pool.apply(trivial, 1).unwrap(), 1);
        }
    }) / APPLIES as u32;
    let busy_items = vec![rounds; BUSY_TASKS as usize];
    let busy_pool = {
        let pool1 = Pool::builder().processes(2).chunksize(1).build()?;
        time(3, || assert_eq!(pool1.map(busy, &busy_items).unwrap().len(), BUSY_TASKS as usize))
    };
    let busy_one = time(3, || {
        for &r in &busy_items {
            std::hint::black_box(busy(r));
        }
    });
    let spawn = time(3, || {
        for _ in 0..SPAWNS {
            assert_eq!(Process::spawn(trivial, 1).unwrap().join().unwrap(), 1);
        }
    }) / SPAWNS as u32;
    drop(pool);

    let args = [ITEMS, CHUNK as u64, APPLIES as u64, BUSY_TASKS, SPAWNS as u64, py_rounds]
        .map(|n| n.to_string());
    let py = common::python(PYTHON, &args);
    // Python reports seconds.
    let get = |k: &str| py.as_ref().and_then(|m| m.get(k)).map(|s| Duration::from_secs_f64(*s));
    let ratio = |ours: Duration, theirs: Option<Duration>| {
        theirs.map_or("(no python3)".to_string(), |t| {
            format!("{:.1}x", t.as_secs_f64() / ours.as_secs_f64())
        })
    };
    let show = |d: Option<Duration>| d.map_or("-".to_string(), |d| format!("{d:.2?}"));
    println!("process/pool, medians ({} CPUs here)", process::cpu_count());
    println!("{:<52} {:>12} {:>16} {:>10}", "scenario", "shmsync", "python3", "speed-up");
    let row = |scenario: &str, ours: Duration, python: &str, ratio: String| {
        println!("{scenario:<52} {ours:>12.2?} {:>16} {ratio:>10}", show(get(python)));
    };
    row(
        &format!("Pool(2).map of {ITEMS} u64 squares, chunksize {CHUNK}"),
        map,
        "map",
        ratio(map, get("map")),
    );
    row("apply round trip", apply, "apply", ratio(apply, get("apply")));
    let speed_up = busy_one.as_secs_f64() / busy_pool.as_secs_f64();
    row(
        &format!("{BUSY_TASKS} tasks of ~1 ms on Pool(2)"),
        busy_pool,
        "busy_pool",
        format!("{speed_up:.2}x one process"),
    );
    row(
        &format!("{BUSY_TASKS} tasks of ~1 ms in one process"),
        busy_one,
        "busy_one",
        String::new(),
    );
    for (method, key) in [("fork", "spawn_fork"), ("spawn", "spawn_spawn")] {
        let scenario = format!("spawn + join a trivial Process (vs {method})");
        row(&scenario, spawn, key, ratio(spawn, get(key)));
    }
    Ok(())
}
