//! What may live in shared memory, and how it is told apart: the [`ShmSafe`] contract,
//! type tags, the kinds of object a segment records, and the one padding type.
//!
//! A leaf: it imports only the loom shim's neighbours in std, so that every other part
//! (the raw algorithms, the segment layer, the named objects) can depend on it.

use std::any::type_name;
use std::fmt;
use std::ops::Deref;

/// Aligns and pads `T` to 128 bytes: two cache lines on x86-64, whose adjacent-line
/// prefetcher otherwise couples neighbouring lines. Fields that different processes write
/// (a producer's index, a consumer's index) each get their own.
#[repr(C, align(128))]
#[derive(Debug, Default)]
#[cfg_attr(loom, allow(dead_code))] // its users are left out of loom builds
pub(crate) struct CachePadded<T>(pub(crate) T);

#[cfg(not(loom))]
const _: () =
    assert!(size_of::<CachePadded<u64>>() == 128 && align_of::<CachePadded<u64>>() == 128);

impl<T> Deref for CachePadded<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

/// Types that may live in shared memory and be viewed by several processes at once.
///
/// # Safety
///
/// Implement it only for a type that:
/// - has a layout fixed by its definition (`#[repr(C)]`, `#[repr(transparent)]` or a
///   primitive), so that every program compiled from that definition agrees on it;
/// - is valid for **every** bit pattern, all zeros included (a fresh segment is zeroed,
///   and a crashed or hostile peer can leave any bytes behind);
/// - holds no pointers, references, file descriptors or other values that mean something
///   only inside one process;
/// - changes after creation only through atomics or cells guarded by a cross-process
///   protocol (such as the raw primitives of this crate), never through plain fields.
///
/// Every [`Pod`](bytemuck::Pod) type qualifies and implements it already. Structs of
/// atomics (as below) and of this crate's raw primitives implement it by hand. (std's
/// atomics cannot implement it directly: Rust's coherence rules forbid the impl next to
/// the one for every `Pod` type. Wrap them in a `#[repr(C)]` struct.)
///
/// # Examples
///
/// ```
/// use std::sync::atomic::AtomicU32;
///
/// #[repr(C)]
/// struct Counters {
///     hits: AtomicU32,
///     misses: AtomicU32,
/// }
/// // SAFETY: repr(C), every bit pattern is valid, no pointers, all shared state atomic.
/// unsafe impl shmsync::ShmSafe for Counters {}
/// ```
pub unsafe trait ShmSafe: Sized {
    /// A number that tells this type apart from other types of the same size and
    /// alignment, recorded at create and checked at open.
    ///
    /// The default hashes [`std::any::type_name`], so both processes must name the type
    /// by the same path: define shared layouts in one crate that both programs use.
    /// Override it with a constant when the paths differ on purpose.
    fn type_tag() -> u64 {
        fnv1a(type_name::<Self>().as_bytes())
    }
}

// SAFETY: Pod types are valid for every bit pattern, have no pointers or interior
// mutability, and bytemuck requires a fixed layout of them.
unsafe impl<T: bytemuck::Pod> ShmSafe for T {}

/// 64-bit FNV-1a: tiny, stable across Rust versions (unlike `DefaultHasher`), and good
/// enough to tell type names apart.
pub(crate) const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325_u64;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    hash
}

/// What kind of object a segment holds, as recorded in its header.
///
/// Opening a segment as the wrong kind fails with
/// [`OpenError::KindMismatch`](crate::OpenError::KindMismatch).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ObjectKind {
    /// A user-defined layout in a [`Shared`](crate::Shared).
    Shared,
    /// A robust futex lock.
    Lock,
    /// An event flag.
    Event,
    /// A lock with a condition variable.
    Condition,
    /// A counting semaphore, bounded or not.
    Semaphore,
    /// A single-producer single-consumer ring buffer.
    SpscQueue,
    /// A multi-producer multi-consumer ring buffer.
    MpmcQueue,
    /// A duplex message pipe.
    Pipe,
    /// A single value with its own lock.
    Value,
    /// An array with its own lock.
    Array,
}

impl ObjectKind {
    pub(crate) const ALL: [Self; 10] = [
        Self::Shared,
        Self::Lock,
        Self::Event,
        Self::Condition,
        Self::Semaphore,
        Self::SpscQueue,
        Self::MpmcQueue,
        Self::Pipe,
        Self::Value,
        Self::Array,
    ];

    /// The number stored in the header. Fixed forever: new kinds get new numbers.
    pub(crate) const fn code(self) -> u32 {
        match self {
            Self::Shared => 1,
            Self::Lock => 2,
            Self::Event => 3,
            Self::Condition => 4,
            Self::Semaphore => 5,
            Self::SpscQueue => 6,
            Self::MpmcQueue => 7,
            Self::Pipe => 8,
            Self::Value => 9,
            Self::Array => 10,
        }
    }

    /// The kind with header number `code`, if any.
    pub(crate) fn from_code(code: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.code() == code)
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Self::Shared => "Shared",
            Self::Lock => "Lock",
            Self::Event => "Event",
            Self::Condition => "Condition",
            Self::Semaphore => "Semaphore",
            Self::SpscQueue => "SPSC queue",
            Self::MpmcQueue => "MPMC queue",
            Self::Pipe => "Pipe",
            Self::Value => "Value",
            Self::Array => "Array",
        };
        f.write_str(name)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_reference_values() {
        // Published test vectors of 64-bit FNV-1a.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn type_tags_tell_same_sized_types_apart() {
        assert_ne!(<u64 as ShmSafe>::type_tag(), <i64 as ShmSafe>::type_tag());
        assert_ne!(<[u32; 2] as ShmSafe>::type_tag(), <u64 as ShmSafe>::type_tag());
        assert_eq!(<u64 as ShmSafe>::type_tag(), fnv1a(b"u64"));
    }

    #[test]
    fn kind_codes_round_trip_and_unknown_codes_do_not() {
        for kind in ObjectKind::ALL {
            assert_eq!(ObjectKind::from_code(kind.code()), Some(kind));
        }
        for code in [0, 11, u32::MAX] {
            assert_eq!(ObjectKind::from_code(code), None);
        }
    }
}
