//! [`inspect`]: an object's header and state words, decoded for people and tools (the
//! `shmsync inspect` command).
//!
//! The file is read with `pread`, never mapped, and the reader does not attach: looking
//! changes nothing. The state words are read once each, not as one snapshot, so a busy
//! object's figures may disagree by a little.

use crate::layout::ObjectKind;
use crate::{OpenError, Options, SegmentInfo};

/// The payload bytes `inspect` reads: enough for every object's control words.
const PREFIX: usize = 1024;

// Where the state words sit in each object's payload (the structs' layouts are pinned by
// const assertions in their modules; `tests/lifecycle.rs` inspects real objects).
/// A `RawLock`'s futex word, first in a Lock, RLock, Value, Array, Condition and List.
const LOCK_WORD: usize = 0;
/// A List's length, after its 40-byte `RawLock`.
const LIST_LEN: usize = 40;
/// An RLock's recursion count, after its `RawLock`.
const RLOCK_COUNT: usize = 40;
/// A ring's consumer and producer positions, each on its own 128-byte line (SPSC and MPMC
/// queues; a pipe has two rings' worth, to end A then to end B).
const HEAD: usize = 0;
const TAIL: usize = 128;
const PIPE_TO_B: usize = 256;

const FUTEX_WAITERS: u32 = 0x8000_0000;
const FUTEX_OWNER_DIED: u32 = 0x4000_0000;
const FUTEX_TID_MASK: u32 = 0x3FFF_FFFF;
const NOT_RECOVERABLE: u32 = 0x3FFF_FFFF;

/// The object `name`: its listing entry (see [`segments`](crate::segments)) and its
/// state words decoded as `(field, value)` pairs, header first: a lock's owner thread,
/// `OWNER_DIED` and waiters; a queue's positions and length; a pipe's positions per
/// direction; an event's or semaphore's word; a barrier's count and generation; a list's
/// length.
///
/// # Errors
///
/// `InvalidName`, `NotFound`, `PermissionDenied`, and `Corrupted` for a file that is not
/// a shmsync object. A shmsync file that cannot be read as an object is described (its
/// `problem`), not refused.
///
/// # Examples
///
/// ```
/// use shmsync::{Lock, Options};
/// # let opts = Options::new().dir(std::env::temp_dir());
/// # let name = format!("doc-inspect-{}", std::process::id());
/// let lock = Lock::create_with(&name, &opts)?;
/// let _held = lock.lock().unwrap();
/// let (info, fields) = shmsync::inspect(&name, &opts)?;
/// assert_eq!(info.kind(), shmsync::ObjectKind::Lock);
/// let owner = fields.iter().find(|(k, _)| k == "owner_tid").unwrap();
/// assert_ne!(owner.1, "0"); // this thread
/// # drop(_held);
/// # Lock::unlink_with(&name, &opts)?;
/// # Ok::<(), shmsync::OpenError>(())
/// ```
pub fn inspect(
    name: &str,
    opts: &Options,
) -> Result<(SegmentInfo, Vec<(String, String)>), OpenError> {
    let (info, payload) = crate::segment::read_object(name, opts, PREFIX)?;
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut put = |k: &str, v: String| fields.push((k.to_owned(), v));
    put("name", info.name().to_owned());
    put("path", info.path().display().to_string());
    if let Some(problem) = info.problem() {
        put("problem", problem.to_owned());
        return Ok((info, fields));
    }
    put("kind", format!("{:?}", info.kind()));
    put("size", info.size().to_string());
    put("element_size", info.element_size().to_string());
    put("type_tag", format!("{:#018x}", info.type_tag()));
    put("capacity", info.capacity().to_string());
    put("instance_id", format!("{:#018x}", info.instance_id()));
    put("creator_pid", info.creator_pid().to_string());
    let created = info.created_at().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    put("created_at_unix", format!("{}.{:09}", created.as_secs(), created.subsec_nanos()));
    let attached: Vec<String> = info
        .attached()
        .iter()
        .map(|a| format!("{} ({})", a.pid(), if a.is_alive() { "alive" } else { "dead" }))
        .collect();
    put("attached", attached.join(", "));
    state_words(info.kind(), info.capacity(), &payload, &mut put);
    Ok((info, fields))
}

fn u32_at(payload: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(payload.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(payload: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(payload.get(at..at + 8)?.try_into().ok()?))
}

/// A robust lock's word, decoded.
fn lock_word(payload: &[u8], put: &mut impl FnMut(&str, String)) {
    let Some(word) = u32_at(payload, LOCK_WORD) else { return };
    put("lock_word", format!("{word:#010x}"));
    let owner = word & FUTEX_TID_MASK;
    if owner == NOT_RECOVERABLE {
        put("lock_state", "not recoverable (an owner died and nobody repaired it)".into());
    }
    put("owner_tid", if owner == NOT_RECOVERABLE { 0 } else { owner }.to_string());
    put("owner_died", (word & FUTEX_OWNER_DIED != 0).to_string());
    put("waiters", (word & FUTEX_WAITERS != 0).to_string());
}

/// A ring's positions at `base` and the length they make.
fn ring(payload: &[u8], base: usize, prefix: &str, put: &mut impl FnMut(&str, String)) {
    let (Some(head), Some(tail)) = (u64_at(payload, base + HEAD), u64_at(payload, base + TAIL))
    else {
        return;
    };
    put(&format!("{prefix}head"), head.to_string());
    put(&format!("{prefix}tail"), tail.to_string());
    put(&format!("{prefix}len"), tail.wrapping_sub(head).to_string());
}

fn state_words(
    kind: ObjectKind,
    capacity: u64,
    payload: &[u8],
    put: &mut impl FnMut(&str, String),
) {
    match kind {
        ObjectKind::Lock | ObjectKind::Value | ObjectKind::Array | ObjectKind::Condition => {
            lock_word(payload, put)
        }
        ObjectKind::RLock => {
            lock_word(payload, put);
            if let Some(count) = u32_at(payload, RLOCK_COUNT) {
                put("recursion", count.to_string());
            }
        }
        ObjectKind::List => {
            lock_word(payload, put);
            if let Some(len) = u64_at(payload, LIST_LEN) {
                put("len", len.to_string());
            }
        }
        ObjectKind::SpscQueue | ObjectKind::MpmcQueue => {
            ring(payload, 0, "", put);
            put("free", capacity.saturating_sub(ring_len(payload, 0)).to_string());
        }
        ObjectKind::Pipe => {
            // Byte positions of each direction's ring.
            ring(payload, 0, "to_a_", put);
            ring(payload, PIPE_TO_B, "to_b_", put);
        }
        ObjectKind::Event => {
            if let Some(word) = u32_at(payload, 0) {
                put("set", (word & 1 != 0).to_string());
                put("waiters", (word & 2 != 0).to_string());
            }
        }
        ObjectKind::Semaphore => {
            if let (Some(word), Some(max)) = (u32_at(payload, 0), u32_at(payload, 4)) {
                put("count", (word & 0x7FFF_FFFF).to_string());
                put("waiters", (word & 0x8000_0000 != 0).to_string());
                put("bound", if max == 0 { "none".into() } else { max.to_string() });
            }
        }
        ObjectKind::Barrier => {
            let words: Vec<Option<u32>> = (0..4).map(|i| u32_at(payload, 4 * i)).collect();
            if let [Some(parties), Some(count), Some(generation), _] = words[..] {
                put("parties", parties.to_string());
                put("waiting", count.to_string());
                put("generation", (generation >> 1).to_string());
                put("broken", (generation & 1 != 0).to_string());
            }
        }
        _ => {}
    }
}

fn ring_len(payload: &[u8], base: usize) -> u64 {
    match (u64_at(payload, base + HEAD), u64_at(payload, base + TAIL)) {
        (Some(head), Some(tail)) => tail.wrapping_sub(head),
        _ => 0,
    }
}
