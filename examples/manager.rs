//! Python's `Manager()` examples, without a manager process: a list appended to by
//! several processes, a dict updated by several processes, and a Value, an Array and a
//! Lock shared with them. Every object lives in a named segment that the workers open.
//!
//! Run: `cargo run --example manager`.

use shmsync::process::{self, Process};
use shmsync::{Array, Dict, FixedStr, List, Lock, Value};

const WORKERS: u64 = 4;

type Name = FixedStr<16>;

fn names(tag: &str) -> String {
    format!("example-manager-{tag}-{}", std::os::unix::process::parent_id())
}

/// One worker: appends its squares, counts words in the dict, adds to the value and its
/// slot of the array under the lock.
fn worker(who: u64) -> u64 {
    let list = List::<u64>::open(&names("list")).unwrap();
    let dict = Dict::<Name, u64>::open(&names("dict")).unwrap();
    let total = Value::<u64>::open(&names("total")).unwrap();
    let slots = Array::<u64>::open(&names("slots")).unwrap();
    let lock = Lock::open(&names("lock")).unwrap();
    for i in 0..10 {
        list.push(who * 100 + i).unwrap();
    }
    for word in ["apple", "banana", "cherry"] {
        let key = Name::new(word).unwrap();
        // Atomic per key: no update is lost whatever the other workers do.
        if !dict.update(&key, |n| *n += 1) {
            dict.get_or_insert_with(key, || 0).unwrap();
            dict.update(&key, |n| *n += 1);
        }
    }
    dict.insert(
        Name::new(&format!("worker-{who}")).unwrap(),
        process::current_process().pid().into(),
    )
    .unwrap();
    {
        let _held = lock.lock().unwrap();
        total.store(total.load() + who);
        slots.lock().unwrap()[who as usize] = who * who;
    }
    who
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    process::init();
    let list = List::<u64>::create(&names_here("list"), 1000)?;
    let dict = Dict::<Name, u64>::create(&names_here("dict"), 64)?;
    let total = Value::<u64>::create(&names_here("total"), 0)?;
    let slots = Array::<u64>::create(&names_here("slots"), WORKERS as usize)?;
    let _lock = Lock::create(&names_here("lock"))?;

    let workers: Vec<_> =
        (0..WORKERS).map(|w| Process::spawn(worker, w)).collect::<Result<_, _>>()?;
    for w in workers {
        w.join()?;
    }

    let mut appended = list.to_vec();
    appended.sort_unstable();
    println!(
        "list: {} values appended by {WORKERS} processes, {:?} ... {:?}",
        appended.len(),
        &appended[..3],
        &appended[appended.len() - 2..]
    );
    let mut counts: Vec<(String, u64)> = dict
        .items()
        .into_iter()
        .filter(|(k, _)| !k.starts_with("worker-"))
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    counts.sort();
    println!("dict: {counts:?}, and {} workers registered", dict.len() - counts.len());
    println!("value: {}", total.load());
    println!("array: {:?}", &slots.lock().unwrap()[..]);
    list.check()?;
    dict.check()?;

    drop((list, dict, total, slots));
    List::<u64>::unlink(&names_here("list"))?;
    Dict::<Name, u64>::unlink(&names_here("dict"))?;
    Value::<u64>::unlink(&names_here("total"))?;
    Array::<u64>::unlink(&names_here("slots"))?;
    Lock::unlink(&names_here("lock"))?;
    Ok(())
}

/// The names as the parent sees them (the workers use their parent's pid).
fn names_here(tag: &str) -> String {
    format!("example-manager-{tag}-{}", std::process::id())
}
