//! `Dict` and `List` against Python's `Manager().dict()` / `.list()` and against
//! `std::sync::Mutex<HashMap>`, side by side in one run.
//!
//! `cargo bench --bench collections`. The shmsync figures are measured in child
//! processes that open the objects by name (`Process`), so every operation is one
//! process working on memory another created; the Python figures come from `python3`
//! (skipped, and said so, without it). Medians of 5 runs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;

use shmsync::process::{self, Process};
use shmsync::{Barrier, Dict, List};

const OPS: u64 = 1_000_000;
const KEYS: u64 = 10_000;

fn name(tag: &str) -> String {
    format!("bench-collections-{tag}-{}", std::os::unix::process::parent_id())
}

/// Children of a pair (`arg` 1 and 2) start their timed loops together, at this barrier,
/// so the two-process figures measure two processes working at once (spawning one takes
/// longer than a loop: without it they would mostly run one after the other).
fn start_together(arg: u64) {
    if arg != 0 {
        let b = Barrier::open(&name("start")).unwrap();
        b.wait_timeout(Duration::from_secs(10)).unwrap();
    }
}

/// ns per `get` in this child, on keys 0..KEYS.
fn child_gets(arg: u64) -> f64 {
    let d = Dict::<u64, u64>::open(&name("dict")).unwrap();
    start_together(arg);
    let t = Instant::now();
    let mut sum = 0u64;
    for i in 0..OPS {
        sum = sum.wrapping_add(d.get(&(i % KEYS)).unwrap_or(0));
    }
    std::hint::black_box(sum);
    t.elapsed().as_nanos() as f64 / OPS as f64
}

/// ns per `insert` (replacing) in this child.
fn child_inserts(arg: u64) -> f64 {
    let d = Dict::<u64, u64>::open(&name("dict")).unwrap();
    start_together(arg);
    let t = Instant::now();
    for i in 0..OPS {
        let _ = d.insert(i % KEYS, i + arg);
    }
    t.elapsed().as_nanos() as f64 / OPS as f64
}

/// ns per `push` in this child (it empties the list first).
fn child_pushes(_: u64) -> f64 {
    let l = List::<u64>::open(&name("list")).unwrap();
    l.clear();
    let t = Instant::now();
    for i in 0..OPS {
        let _ = l.push(i);
    }
    t.elapsed().as_nanos() as f64 / OPS as f64
}

/// `name(tag)` as the parent (whose children's parent is itself) spells it.
fn name_here(tag: &str) -> String {
    format!("bench-collections-{tag}-{}", std::process::id())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn in_child(f: fn(u64) -> f64, arg: u64) -> f64 {
    Process::spawn(f, arg).unwrap().join().unwrap()
}

/// Two children at once, started together: the mean of their ns per op, and the
/// slower one's ns per op (the pair's throughput is `2 * OPS` in the slower one's time).
fn two_children(f: fn(u64) -> f64) -> (f64, f64) {
    let a = Process::spawn(f, 1).unwrap();
    let b = Process::spawn(f, 2).unwrap();
    let (x, y) = (a.join().unwrap(), b.join().unwrap());
    ((x + y) / 2.0, x.max(y))
}

const PYTHON: &str = r#"
import multiprocessing as mp, sys, time, statistics
if __name__ == "__main__":
    ops = int(sys.argv[1])
    with mp.Manager() as m:
        d = m.dict({i: i for i in range(1000)})
        def gets():
            t = time.perf_counter()
            for i in range(ops): d[i % 1000]
            return (time.perf_counter() - t) / ops
        def sets():
            t = time.perf_counter()
            for i in range(ops): d[i % 1000] = i
            return (time.perf_counter() - t) / ops
        l = m.list()
        def appends():
            t = time.perf_counter()
            for i in range(ops): l.append(i)
            return (time.perf_counter() - t) / ops
        print("get", statistics.median(gets() for _ in range(3)))
        print("set", statistics.median(sets() for _ in range(3)))
        print("append", statistics.median(appends() for _ in range(3)))
"#;

/// ns per operation of `Mutex<HashMap>` with two threads each doing `OPS` of them.
fn mutex_hashmap(insert: bool) -> f64 {
    let map: Arc<Mutex<HashMap<u64, u64>>> =
        Arc::new(Mutex::new((0..KEYS).map(|k| (k, k)).collect()));
    let per_thread: Vec<f64> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..2)
            .map(|t| {
                let map = Arc::clone(&map);
                s.spawn(move || {
                    let start = Instant::now();
                    let mut sum = 0u64;
                    for i in 0..OPS {
                        let mut m = map.lock().unwrap();
                        if insert {
                            m.insert(i % KEYS, i + t);
                        } else {
                            sum = sum.wrapping_add(*m.get(&(i % KEYS)).unwrap_or(&0));
                        }
                    }
                    std::hint::black_box(sum);
                    start.elapsed().as_nanos() as f64 / OPS as f64
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    per_thread.iter().sum::<f64>() / 2.0
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    process::init();
    let dict_name = name_here("dict");
    let list_name = name_here("list");
    let d = Dict::<u64, u64>::create(&dict_name, 2 * KEYS as usize)?;
    for k in 0..KEYS {
        d.insert(k, k).unwrap();
    }
    let _l = List::<u64>::create(&list_name, OPS as usize)?;

    let get1 = median((0..5).map(|_| in_child(child_gets, 0)).collect());
    let insert1 = median((0..5).map(|_| in_child(child_inserts, 0)).collect());
    let push1 = median((0..5).map(|_| in_child(child_pushes, 0)).collect());
    let _start = Barrier::create(&name_here("start"), 2)?;
    let (get2, get2_slower) = {
        let runs: Vec<(f64, f64)> = (0..5).map(|_| two_children(child_gets)).collect();
        (median(runs.iter().map(|r| r.0).collect()), median(runs.iter().map(|r| r.1).collect()))
    };
    let insert2 = median((0..5).map(|_| two_children(child_inserts).0).collect());
    let mutex_get = median((0..5).map(|_| mutex_hashmap(false)).collect());
    let mutex_insert = median((0..5).map(|_| mutex_hashmap(true)).collect());
    // Python reports seconds per operation.
    let py = common::python(PYTHON, &["2000".to_owned()]);
    let pyv = |k: &str| py.as_ref().and_then(|p| p.get(k)).map(|s| s * 1e9);
    let vs = |ours: f64, theirs: Option<f64>| {
        theirs.map_or("(no python3)".into(), |t| format!("{:.0}x", t / ours))
    };

    println!("collections, ns per operation, medians");
    println!("{:<58} {:>10} {:>14} {:>10}", "scenario", "shmsync", "other", "ratio");
    let row = |scenario: &str, ours: f64, other: String, ratio: String| {
        println!("{scenario:<58} {ours:>10.1} {other:>14} {ratio:>10}");
    };
    for (scenario, ours, python_key) in [
        ("Dict::get, one process (vs Manager().dict() d[k])", get1, "get"),
        ("Dict::insert, one process (vs d[k] = v)", insert1, "set"),
        ("List::push (vs Manager().list().append)", push1, "append"),
    ] {
        let theirs = pyv(python_key);
        row(scenario, ours, theirs.map_or("-".into(), |v| format!("{v:.0}")), vs(ours, theirs));
    }
    for (scenario, ours, mutex) in [
        ("Dict::get, 2 processes (vs Mutex<HashMap>, 2 threads)", get2, mutex_get),
        ("Dict::insert, 2 processes (vs Mutex<HashMap>, 2 threads)", insert2, mutex_insert),
    ] {
        row(scenario, ours, format!("{mutex:.1}"), format!("{:.2}x", ours / mutex));
    }
    println!(
        "{:<58} {:>10.2}x  ({} gets by 2 processes started together in {:.1} ms; one alone: {:.1} ms)",
        "read throughput of 2 processes over 1",
        2.0 * get1 / get2_slower,
        2 * OPS,
        get2_slower * OPS as f64 / 1e6,
        get1 * OPS as f64 / 1e6
    );
    drop(d);
    Dict::<u64, u64>::unlink(&dict_name)?;
    List::<u64>::unlink(&list_name)?;
    drop(_start);
    Barrier::unlink(&name_here("start"))?;
    Ok(())
}
