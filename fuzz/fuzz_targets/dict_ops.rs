//! Arbitrary sequences of `Dict` operations from two handles, checked against a
//! `HashMap` model; then hostile writes into the table and the shards' fields (never the
//! lock words: a hostile holder can always hold a lock), after which the dict must still
//! never panic, read out of bounds or probe without end, and `check` must answer.
#![no_main]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use libfuzzer_sys::fuzz_target;
use shmsync::{Dict, Options};

#[path = "shared/scratch.rs"]
mod scratch;

fn dir() -> &'static std::path::Path {
    scratch::dir("dict")
}

/// The payload after the 128-byte segment header; in it a 128-byte dict header, then 16
/// shard blocks of 128 bytes whose first 40 are the lock.
const PAYLOAD: usize = 128;
const SHARDS_AT: usize = 128;
const SHARD_LEN: usize = 128;
const LOCK_LEN: usize = 40;

fuzz_target!(|data: &[u8]| {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let opts = Options::new().dir(dir());
    let name = format!("d{}", NEXT.fetch_add(1, Ordering::Relaxed));
    let a = Dict::<u16, u32>::create_with(&name, 32, &opts).unwrap();
    let b = Dict::<u16, u32>::open_with(&name, &opts).unwrap();
    let file = std::fs::OpenOptions::new().read(true).write(true).open(dir().join(&name)).unwrap();
    Dict::<u16, u32>::unlink_with(&name, &opts).unwrap();
    // SAFETY: a second shared mapping of the dict's file.
    let mut map = unsafe { memmap2::MmapMut::map_mut(&file) }.unwrap();
    let mut model: HashMap<u16, u32> = HashMap::new();
    let mut hostile = false;
    let mut bytes = data.chunks_exact(4);
    for op in &mut bytes {
        let d = if op[0] & 1 == 0 { &a } else { &b };
        let key = u16::from(op[1] % 48);
        let value = u32::from_le_bytes([op[2], op[3], op[1], op[0]]);
        match op[0] >> 1 & 7 {
            0 | 1 => match d.insert(key, value) {
                Ok(old) => {
                    let was = model.insert(key, value);
                    assert!(hostile || old == was, "insert {key}: {old:?} vs {was:?}");
                }
                Err(e) => assert!(
                    hostile || !model.contains_key(&key),
                    "full, yet {key} was there: {:?}",
                    e.into_inner()
                ),
            },
            2 => {
                let got = d.get(&key);
                assert!(hostile || got == model.get(&key).copied(), "get {key}");
            }
            3 => {
                let got = d.remove(&key);
                assert!(hostile || got == model.remove(&key), "remove {key}");
                if hostile {
                    model.remove(&key);
                }
            }
            4 => {
                let seen = d.update(&key, |v| *v = v.wrapping_add(value));
                if let Some(v) = model.get_mut(&key) {
                    *v = v.wrapping_add(value);
                }
                assert!(hostile || seen == model.contains_key(&key), "update {key}");
            }
            5 => {
                assert!(hostile || d.len() == model.len(), "len");
                assert!(hostile || d.check().is_ok(), "check: {:?}", d.check());
            }
            6 => {
                let _ = d.items();
                let _ = d.check();
            }
            _ => {
                // A hostile write of four bytes anywhere past the header but a lock word.
                let span = map.len() - PAYLOAD - SHARDS_AT;
                let mut at = PAYLOAD
                    + SHARDS_AT
                    + (usize::from(op[1]) << 8 | usize::from(op[2])) * 31 % span;
                at &= !3;
                let in_shards = at - PAYLOAD - SHARDS_AT < 16 * SHARD_LEN;
                if in_shards && (at - PAYLOAD - SHARDS_AT) % SHARD_LEN < LOCK_LEN {
                    at += LOCK_LEN;
                }
                if at + 4 <= map.len() {
                    map[at..at + 4].copy_from_slice(&[op[3], op[1], op[2], op[0]]);
                    hostile = true;
                }
            }
        }
    }
    let _ = a.check();
    let _ = a.len();
});
