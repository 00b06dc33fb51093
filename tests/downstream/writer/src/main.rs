//! Sends ticks to `reader`, another crate's binary, through an SPSC queue of a struct
//! both crates declare on their own; then checks that a changed declaration is refused.

use std::process::{Child, Command};
use std::time::{Duration, Instant};

use shmsync::spsc;

/// This crate's declaration; `reader` has its own, field for field the same.
#[repr(C)]
#[derive(Clone, Copy, Debug, shmsync::Pod, shmsync::Zeroable)]
struct Tick {
    seq: u64,
    price: f64,
}

/// The same struct with one field retyped (same size): a different type to shmsync.
mod changed {
    #[repr(C)]
    #[derive(Clone, Copy, Debug, shmsync::Pod, shmsync::Zeroable)]
    pub struct Tick {
        pub seq: u64,
        pub price: u64,
    }
}

const TICKS: u64 = 10_000;
const BOUND: Duration = Duration::from_secs(20);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let reader = std::env::current_exe()?.with_file_name("reader");
    let pid = std::process::id();

    // 1. Two crates, one struct: every tick arrives, in order, with its payload.
    let name = format!("shmsync-test-downstream-{pid}");
    let mut tx = spsc::Producer::<Tick>::create(&name, 256)?;
    let child = Command::new(&reader).args(["read", &name, &TICKS.to_string()]).spawn()?;
    let result = (|| -> Result<(), Box<dyn std::error::Error>> {
        if !tx.wait_connected(BOUND) {
            return Err("reader never attached".into());
        }
        for seq in 0..TICKS {
            tx.push_timeout(Tick { seq, price: seq as f64 * 0.5 }, BOUND)
                .map_err(|e| format!("push {seq}: {e}"))?;
        }
        Ok(())
    })();
    let status = wait(child)?;
    drop(tx);
    spsc::Producer::<Tick>::unlink(&name)?;
    result?;
    if !status {
        return Err("reader failed reading the ticks".into());
    }
    println!("writer: {TICKS} ticks read by another crate's binary");

    // 2. A changed field: the reader's Tick no longer opens the queue.
    let name = format!("shmsync-test-downstream-changed-{pid}");
    let tx = spsc::Producer::<changed::Tick>::create(&name, 16)?;
    let child = Command::new(&reader).args(["refuse", &name]).spawn()?;
    let status = wait(child)?;
    drop(tx);
    spsc::Producer::<changed::Tick>::unlink(&name)?;
    if !status {
        return Err("reader did not refuse the changed Tick".into());
    }
    println!("writer: a changed field was refused with LayoutMismatch");

    // 3. A dict with string keys, written here and updated by the other binary.
    let name = format!("shmsync-test-downstream-dict-{pid}");
    let dict = shmsync::Dict::<shmsync::FixedStr<16>, u64>::create(&name, 64)?;
    for (i, who) in ["alice", "bob", "carol"].into_iter().enumerate() {
        dict.insert(shmsync::FixedStr::new(who)?, i as u64)?;
    }
    let status = wait(Command::new(&reader).args(["dict", &name]).spawn()?)?;
    let mut items: Vec<(String, u64)> =
        dict.items().into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    items.sort();
    drop(dict);
    shmsync::Dict::<shmsync::FixedStr<16>, u64>::unlink(&name)?;
    let want = [("alice", 10), ("bob", 11), ("carol", 12), ("dave", 99)];
    if !status || items.iter().map(|(k, v)| (k.as_str(), *v)).ne(want) {
        return Err(format!("the other binary's dict updates: {items:?}").into());
    }
    println!("writer: a FixedStr-keyed dict was updated by the other binary");
    println!("downstream: PASS");
    Ok(())
}

/// Waits for `child` at most `BOUND`; whether it succeeded.
fn wait(mut child: Child) -> Result<bool, Box<dyn std::error::Error>> {
    let until = Instant::now() + BOUND;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status.success());
        }
        if Instant::now() > until {
            child.kill()?;
            child.wait()?;
            return Err("reader hung".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
