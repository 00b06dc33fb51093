//! [`inspect`]: an object's header and state words, decoded for people and tools (the
//! `shmsync inspect` command).
//!
//! The file is read with `pread`, never mapped, and the reader does not attach: looking
//! changes nothing. Each object's words are decoded by the module that owns their layout
//! (`RawLock::describe`, `Indices::snapshot`, ...), on a copy of the payload's first
//! kilobyte; each word is read once, but not all as one snapshot, so a busy object's
//! figures may disagree by a little.

use crate::layout::ObjectKind;
use crate::raw::{RawBarrier, RawEvent, RawLock, RawRLock, RawSemaphore};
use crate::rings::{mpmc, spsc};
use crate::values::ListControl;
use crate::{OpenError, Options, SegmentInfo};

/// The payload bytes `inspect` reads: enough for every object's control words.
const PREFIX: usize = 1024;

/// A copy of a payload's first bytes, aligned as the payload is (to 128), so that the
/// structs at its start can be read in place.
struct Prefix {
    blocks: Vec<Block>,
    len: usize,
}

#[repr(C, align(128))]
#[derive(Clone, Copy)]
struct Block([u8; 128]);

/// A struct that may be read from any bytes: shared-memory structs of integers and
/// atomics.
///
/// # Safety
///
/// Every bit pattern must be a valid value of the type.
unsafe trait Plain {}

macro_rules! plain {
    ($($t:ty),* $(,)?) => {
        $(
            // SAFETY: a `#[repr(C)]` shared-memory struct of integers and atomics (what
            // every segment holds): every bit pattern is a valid value.
            unsafe impl Plain for $t {}
        )*
    };
}

plain!(RawLock, RawRLock, RawEvent, RawSemaphore, RawBarrier, ListControl);
plain!(spsc::ring::Indices, mpmc::ring::Positions);

impl Prefix {
    fn new(bytes: &[u8]) -> Self {
        let mut blocks = vec![Block([0; 128]); bytes.len().div_ceil(128)];
        for (block, chunk) in blocks.iter_mut().zip(bytes.chunks(128)) {
            block.0[..chunk.len()].copy_from_slice(chunk);
        }
        Self { blocks, len: bytes.len() }
    }

    /// The `T` at byte `at`, if the copy holds all of it.
    fn view<T: Plain>(&self, at: usize) -> Option<&T> {
        let fits = at % align_of::<T>() == 0
            && align_of::<T>() <= 128
            && at.checked_add(size_of::<T>()).is_some_and(|end| end <= self.len);
        // SAFETY: inside the copy, aligned (the blocks are 128-aligned and `at` is a
        // multiple of T's alignment), every bit pattern valid (`Plain`); borrowed from
        // `self`.
        fits.then(|| unsafe { &*self.blocks.as_ptr().cast::<u8>().add(at).cast::<T>() })
    }
}

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

fn state_words(
    kind: ObjectKind,
    capacity: u64,
    payload: &[u8],
    put: &mut impl FnMut(&str, String),
) {
    let prefix = Prefix::new(payload);
    let mut put_all = |fields: Vec<(&str, String)>| fields.into_iter().for_each(|(k, v)| put(k, v));
    let positions = |(head, tail): (u64, u64), put: &mut dyn FnMut(&str, String), at: &str| {
        put(&format!("{at}head"), head.to_string());
        put(&format!("{at}tail"), tail.to_string());
        put(&format!("{at}len"), tail.wrapping_sub(head).to_string());
        tail.wrapping_sub(head)
    };
    // Each struct at the offset its object's payload has it.
    match kind {
        // A Lock, a Value's or an Array's mutex and a Condition start with their lock.
        ObjectKind::Lock | ObjectKind::Value | ObjectKind::Array | ObjectKind::Condition => {
            if let Some(lock) = prefix.view::<RawLock>(0) {
                put_all(lock.describe());
            }
        }
        ObjectKind::RLock => {
            if let Some(rlock) = prefix.view::<RawRLock>(0) {
                put_all(rlock.describe());
            }
        }
        ObjectKind::List => {
            if let Some(control) = prefix.view::<ListControl>(0) {
                put_all(control.describe());
            }
        }
        ObjectKind::SpscQueue => {
            if let Some(i) = prefix.view::<spsc::ring::Indices>(0) {
                let len = positions(i.snapshot(), put, "");
                put("free", capacity.saturating_sub(len).to_string());
            }
        }
        ObjectKind::MpmcQueue => {
            if let Some(p) = prefix.view::<mpmc::ring::Positions>(0) {
                let len = positions(p.snapshot(), put, "");
                put("free", capacity.saturating_sub(len).to_string());
            }
        }
        ObjectKind::Pipe => {
            // Byte positions of each direction's ring: to end A, then to end B.
            let to_b = size_of::<spsc::ring::Indices>();
            for (at, label) in [(0, "to_a_"), (to_b, "to_b_")] {
                if let Some(i) = prefix.view::<spsc::ring::Indices>(at) {
                    positions(i.snapshot(), put, label);
                }
            }
        }
        ObjectKind::Event => {
            if let Some(event) = prefix.view::<RawEvent>(0) {
                put_all(event.describe());
            }
        }
        ObjectKind::Semaphore => {
            if let Some(sem) = prefix.view::<RawSemaphore>(0) {
                put_all(sem.describe());
            }
        }
        ObjectKind::Barrier => {
            if let Some(barrier) = prefix.view::<RawBarrier>(0) {
                put_all(barrier.describe());
            }
        }
        _ => {}
    }
}
