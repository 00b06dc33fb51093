//! Shared state between processes, as Python's `Value`, `Array` and a `Manager` give it:
//! a counter, an array and a lock, opened by name from every process.
//!
//! Four children each add 1 to a shared counter 1000 times under its lock, write their
//! slot of a shared array, and append to a log guarded by a named `Lock`.
//! Run: `cargo run --example shared_state`.

#[path = "support/proc.rs"]
mod proc;

use shmsync::{Array, Lock, Value};

const CHILDREN: usize = 4;
const ADDS: u64 = 1000;
/// No process here dies holding a lock; if one did, `lock()` would say `OwnerDied`.
const HOLDER_DIED: &str = "a process died holding the lock";

/// The log a `Lock` guards: a length and up to 16 entries, in a `Value` of its own.
#[repr(C)]
#[derive(Clone, Copy, shmsync::Pod, shmsync::Zeroable)]
struct Log {
    len: u64,
    entries: [u64; 16],
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let names = || (proc::arg("COUNTER"), proc::arg("ARRAY"), proc::arg("LOCK"), proc::arg("LOG"));
    if proc::role().as_deref() == Some("child") {
        let (counter, array, lock, log) = names();
        let (counter, array) = (Value::<u64>::open(&counter)?, Array::<u64>::open(&array)?);
        let (lock, log) = (Lock::open(&lock)?, Value::<Log>::open(&log)?);
        let slot: usize = proc::arg("SLOT").parse()?;
        for _ in 0..ADDS {
            *counter.lock().expect(HOLDER_DIED) += 1; // Value has its own lock, like Value.get_lock()
        }
        array.lock().expect(HOLDER_DIED)[slot] = (slot as u64 + 1) * 100;
        // A separate Lock guarding a compound update: read the length, write, bump.
        let _guard = lock.lock().expect(HOLDER_DIED);
        let mut entry = log.load();
        entry.entries[entry.len as usize] = slot as u64;
        entry.len += 1;
        log.store(entry);
        return Ok(());
    }
    let [counter, array, lock, log] = ["counter", "array", "lock", "log"].map(proc::name);
    let shared = (
        Value::<u64>::create(&counter, 0)?,
        Array::<u64>::create(&array, CHILDREN)?,
        Lock::create(&lock)?,
        Value::<Log>::create(&log, Log { len: 0, entries: [0; 16] })?,
    );
    let children: Vec<_> = (0..CHILDREN)
        .map(|slot| {
            let slot = slot.to_string();
            let args = [("COUNTER", &counter), ("ARRAY", &array), ("LOCK", &lock), ("LOG", &log)];
            let mut env: Vec<(&str, &str)> = args.iter().map(|(k, v)| (*k, v.as_str())).collect();
            env.push(("SLOT", &slot));
            proc::start("child", &env)
        })
        .collect();
    for child in children {
        proc::join(child);
    }
    let total = shared.0.load();
    let slots = shared.1.lock().expect(HOLDER_DIED).to_vec();
    let entries = shared.3.load();
    println!("counter: {total} (4 processes x {ADDS} adds)");
    println!("array: {slots:?}");
    let mut order: Vec<u64> = entries.entries[..entries.len as usize].to_vec();
    println!("log, in the order the children took the lock: {order:?}");
    assert_eq!(total, CHILDREN as u64 * ADDS, "no add lost");
    assert_eq!(slots, [100, 200, 300, 400]);
    order.sort();
    assert_eq!(order, [0, 1, 2, 3], "every child logged once");
    Value::<u64>::unlink(&counter)?;
    Array::<u64>::unlink(&array)?;
    Lock::unlink(&lock)?;
    Value::<Log>::unlink(&log)?;
    Ok(())
}
