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
/// The primitive numbers, arrays of `ShmSafe` types, this crate's raw primitives and every
/// struct with `#[derive(shmsync::Pod)]` implement it already; the derive's tag is
/// structural (see [`type_tag`](Self::type_tag)). Structs of atomics (as below) implement
/// it by hand, as does a `Pod` type whose `Pod` comes from bytemuck's own derive.
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
    /// alignment, recorded at create and checked at open (a difference is
    /// [`OpenError::LayoutMismatch`](crate::OpenError::LayoutMismatch)).
    ///
    /// - `#[derive(shmsync::Pod)]` makes it **structural**: a hash of the struct's name
    ///   and size and, for each field, its name, offset and the field type's own tag. The
    ///   same struct declared in two crates gets the same tag; renaming, retyping or
    ///   moving a field changes it. The module path plays no part.
    /// - A primitive's tag hashes its name (`u64`); an array's combines its element's tag
    ///   and its length.
    /// - The default, for hand-written impls, hashes [`std::any::type_name`], which
    ///   includes the module path: both programs must take the type from one crate.
    ///
    /// Override it with a constant to choose the identity yourself (a protocol's version
    /// number, say):
    ///
    /// ```
    /// #[repr(C)]
    /// #[derive(Clone, Copy)]
    /// struct Frame {
    ///     seq: u64,
    /// }
    /// // SAFETY (all three): repr(C), one u64: plain data, every bit pattern valid.
    /// unsafe impl shmsync::Zeroable for Frame {}
    /// unsafe impl shmsync::Pod for Frame {}
    /// unsafe impl shmsync::ShmSafe for Frame {
    ///     fn type_tag() -> u64 {
    ///         0x4652_414d_455f_0001 // "FRAME_", version 1
    ///     }
    /// }
    /// ```
    fn type_tag() -> u64 {
        fnv1a(type_name::<Self>().as_bytes())
    }
}

/// Implements `ShmSafe` for primitives, with the tag of their name (as the default).
macro_rules! primitive_shm_safe {
    ($($t:ty),*) => {
        $(
            // SAFETY: a primitive number: fixed layout, every bit pattern valid, no
            // pointers.
            unsafe impl ShmSafe for $t {}
        )*
    };
}
primitive_shm_safe!(u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize, f32, f64);

// SAFETY: no bytes at all.
unsafe impl ShmSafe for () {}

// SAFETY: an array has its element's properties, element after element.
unsafe impl<T: ShmSafe, const N: usize> ShmSafe for [T; N] {
    fn type_tag() -> u64 {
        Structure::new("[T; N]", N).field("T", 0, T::type_tag()).finish()
    }
}

/// Builds a structural type tag, field by field: what `#[derive(shmsync::Pod)]` calls.
#[doc(hidden)]
#[derive(Debug)]
pub struct Structure(u64);

impl Structure {
    /// Starts the tag of the type `name` (without its module path) of `size` bytes.
    pub fn new(name: &str, size: usize) -> Self {
        Self(fnv1a(name.as_bytes())).mix(size as u64)
    }

    /// Adds the field `name` at `offset` whose type has the tag `tag`.
    #[must_use]
    pub fn field(self, name: &str, offset: usize, tag: u64) -> Self {
        self.mix(fnv1a(name.as_bytes())).mix(offset as u64).mix(tag)
    }

    /// The tag.
    pub fn finish(self) -> u64 {
        self.0
    }

    /// FNV-1a over the eight bytes of `value`, continuing from the hash so far.
    fn mix(self, value: u64) -> Self {
        let mut hash = self.0;
        for byte in value.to_le_bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        Self(hash)
    }
}

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
/// # Examples
///
/// ```
/// use shmsync::{Lock, ObjectKind, OpenError, Semaphore};
/// # let opts = shmsync::Options::new().dir(std::env::temp_dir());
/// # let name = format!("doc-{}-{}", "objectkind", std::process::id());
/// let lock = Lock::create_with(&name, &opts)?;
/// assert_eq!(lock.info().kind(), ObjectKind::Lock);
/// match Semaphore::open_with(&name, &opts) {
///     Err(OpenError::KindMismatch { expected, found, .. }) => {
///         assert_eq!((expected, found), (ObjectKind::Semaphore, ObjectKind::Lock));
///     }
///     other => panic!("{other:?}"),
/// }
/// # Lock::unlink_with(&name, &opts)?;
/// # Ok::<(), OpenError>(())
/// ```
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
    /// A list of plain values with a fixed capacity.
    List,
    /// A hash map of plain keys and values with a fixed capacity.
    Dict,
    /// A barrier for a number of parties.
    Barrier,
    /// A re-entrant robust lock.
    RLock,
}

impl ObjectKind {
    pub(crate) const ALL: [Self; 14] = [
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
        Self::List,
        Self::Dict,
        Self::Barrier,
        Self::RLock,
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
            Self::List => 11,
            Self::Dict => 12,
            Self::Barrier => 13,
            Self::RLock => 14,
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
            Self::List => "List",
            Self::Dict => "Dict",
            Self::Barrier => "Barrier",
            Self::RLock => "RLock",
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
        for code in [0, 99, u32::MAX] {
            assert_eq!(ObjectKind::from_code(code), None);
        }
    }
}
