//! Error types: opening objects, locking, releasing semaphores.

use std::fmt;
use std::io;

use crate::layout::ObjectKind;

/// Why a named object could not be created, opened or unlinked.
///
/// Every way a segment file can be missing, foreign, damaged or hostile maps to one of
/// these variants; none of them is a panic. OS failures that have no variant of their own
/// keep their errno in [`OpenError::Io`]. Variants that concern one object carry its
/// name, and `Display` says what differed, so a logged error explains itself. Match the
/// variants with fields as `OpenError::NotFound { .. }`.
///
/// # Examples
///
/// ```
/// use shmsync::{Lock, OpenError, Options};
///
/// # let opts = Options::new().dir(std::env::temp_dir());
/// match Lock::open_with("no-such-lock", &opts) {
///     Err(e @ OpenError::NotFound { .. }) => {
///         assert_eq!(e.to_string(), "no shared-memory object is called \"no-such-lock\"");
///     }
///     other => panic!("expected NotFound, got {other:?}"),
/// }
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum OpenError {
    /// No object has this name (`open`, `unlink`).
    NotFound {
        /// The name looked for.
        name: String,
    },
    /// An object (or any file) already has this name (`create`).
    AlreadyExists {
        /// The name asked for.
        name: String,
    },
    /// The name breaks the naming rules: 1 to 200 bytes of `[A-Za-z0-9._-]`, not `.` or
    /// `..`.
    InvalidName,
    /// The segment holds another kind of object, such as a Lock opened as a Queue.
    KindMismatch {
        /// The object's name.
        name: String,
        /// The kind the caller asked for.
        expected: ObjectKind,
        /// The kind recorded in the segment.
        found: ObjectKind,
    },
    /// The segment holds the right kind of object with another layout: `property`
    /// differs, `expected` by the caller and `found` in the segment.
    LayoutMismatch {
        /// The object's name.
        name: String,
        /// What differs.
        property: LayoutProperty,
        /// The caller's value.
        expected: u64,
        /// The segment's value.
        found: u64,
    },
    /// The segment was written by an incompatible version of shmsync.
    VersionMismatch,
    /// The segment's creator has not finished initialising it within
    /// [`Options::open_timeout`](crate::Options::open_timeout), most likely because it
    /// died half-way. Unlink the name to start afresh.
    NotInitialized {
        /// The object's name.
        name: String,
    },
    /// The file at this name is not a valid segment: not a regular file, too short, a
    /// wrong magic number, or header fields that contradict each other or the file.
    Corrupted,
    /// The OS refused access, the name is a symbolic link, or the file belongs to another
    /// user (segments are only ever shared between processes of one user).
    PermissionDenied,
    /// The file system holding the segment (usually the tmpfs at `/dev/shm`) is full.
    NoSpace,
    /// The role asked for (a queue's producer, a pipe's end) is held by a live handle.
    Busy {
        /// The object's name.
        name: String,
        /// The role, such as "producer", "consumer", "end A" or "member" (an MPMC queue
        /// whose member slots are all taken).
        role: String,
        /// The process holding the role, where known.
        holder: Option<u32>,
    },
    /// A capacity, size or count the object cannot have (zero, too large, or a
    /// semaphore's initial count above its bound), refused before anything is created.
    InvalidCapacity {
        /// The value asked for.
        requested: u64,
        /// What is allowed, in words (for example "queue capacity must be 1..=2^40").
        allowed: String,
    },
    /// The name holds a *stale* object, and [`Options::stale`](crate::Options::stale) is
    /// [`Stale::Error`](crate::Stale::Error): no live process holds it, and processes died
    /// holding it (or its creator died before finishing it). Decide: `unlink` it and
    /// create again, [`gc`](crate::gc), or open it as it is.
    Stale {
        /// The object's name.
        name: String,
        /// The processes that died attached, by pid (empty if its creator never finished
        /// it).
        dead: Vec<u32>,
    },
    /// Any other OS error, with its errno.
    Io(io::Error),
}

/// The part of a segment's layout that a [`OpenError::LayoutMismatch`] found different.
/// # Examples
///
/// ```
/// use shmsync::{Array, LayoutProperty, OpenError};
/// # let opts = shmsync::Options::new().dir(std::env::temp_dir());
/// # let name = format!("doc-{}-{}", "layoutprop", std::process::id());
/// let _v = Array::<u64>::create_with(&name, 7, &opts)?;
/// match Array::<u32>::open_with(&name, &opts) {
///     Err(OpenError::LayoutMismatch { property, .. }) => {
///         assert_eq!(property, LayoutProperty::ElementSize)
///     }
///     other => panic!("{other:?}"),
/// }
/// # Array::<u64>::unlink_with(&name, &opts)?;
/// # Ok::<(), OpenError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LayoutProperty {
    /// The size of one element (or of the whole value), in bytes.
    ElementSize,
    /// The alignment of one element, in bytes.
    ElementAlign,
    /// The element type's tag ([`ShmSafe::type_tag`](crate::ShmSafe::type_tag)): same
    /// size and alignment, another type (another name, field, field type or offset).
    TypeTag,
    /// The number of elements (an array's length).
    Capacity,
}

impl fmt::Display for LayoutProperty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ElementSize => "element size",
            Self::ElementAlign => "element alignment",
            Self::TypeTag => "type tag",
            Self::Capacity => "capacity",
        })
    }
}

impl OpenError {
    /// Fills in the object's name where a variant carries one and it is still empty:
    /// errors made below the named layer (an errno, a header check) learn it here.
    pub(crate) fn named(mut self, object: &str) -> Self {
        match &mut self {
            Self::NotFound { name }
            | Self::AlreadyExists { name }
            | Self::KindMismatch { name, .. }
            | Self::LayoutMismatch { name, .. }
            | Self::NotInitialized { name }
            | Self::Busy { name, .. }
            | Self::Stale { name, .. }
                if name.is_empty() =>
            {
                object.clone_into(name);
            }
            _ => {}
        }
        self
    }

    /// A `LayoutMismatch` whose name is filled in later ([`named`](Self::named)).
    pub(crate) fn layout_mismatch(property: LayoutProperty, expected: u64, found: u64) -> Self {
        Self::LayoutMismatch { name: String::new(), property, expected, found }
    }
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotFound { name } => write!(f, "no shared-memory object is called {name:?}"),
            Self::AlreadyExists { name } => {
                write!(f, "a shared-memory object called {name:?} already exists")
            }
            Self::InvalidName => f.write_str(
                "invalid object name: use 1 to 200 bytes of [A-Za-z0-9._-], not `.` or `..`",
            ),
            Self::KindMismatch { name, expected, found } => {
                write!(f, "{name:?} holds an object of kind {found}, not {expected}")
            }
            Self::LayoutMismatch { name, property, expected, found } => {
                let (expected, found) = if *property == LayoutProperty::TypeTag {
                    (format!("{expected:#018x}"), format!("{found:#018x}"))
                } else {
                    (expected.to_string(), found.to_string())
                };
                write!(
                    f,
                    "{name:?} has another layout: its {property} is {found}, {expected} was asked for"
                )
            }
            Self::VersionMismatch => {
                f.write_str("the segment was written by an incompatible version of shmsync")
            }
            Self::NotInitialized { name } => write!(
                f,
                "the creator of {name:?} did not finish initialising it in time (did it die?)"
            ),
            Self::Corrupted => f.write_str("the file is not a valid shmsync segment"),
            Self::PermissionDenied => f.write_str(
                "permission denied (or the name is a symbolic link, or the file belongs to another user)",
            ),
            Self::NoSpace => f.write_str("no space left for the segment"),
            Self::Busy { name, role, holder } => {
                write!(f, "the {role} of {name:?} is held by another live handle")?;
                match holder {
                    Some(pid) => write!(f, " (process {pid})"),
                    None => Ok(()),
                }
            }
            Self::InvalidCapacity { requested, allowed } => {
                write!(f, "invalid capacity {requested}: {allowed}")
            }
            Self::Stale { name, dead } => {
                write!(f, "{name:?} was left by a crash and nobody holds it now")?;
                if !dead.is_empty() {
                    write!(f, " (processes {dead:?} died holding it)")?;
                }
                f.write_str(": unlink it, collect it with gc, or open it as it is")
            }
            Self::Io(e) => write!(f, "I/O error: {e}"),
        }
    }
}

impl std::error::Error for OpenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<rustix::io::Errno> for OpenError {
    /// Maps an errno to its variant; errnos without a variant of their own stay in `Io`.
    fn from(errno: rustix::io::Errno) -> Self {
        use rustix::io::Errno;
        match errno {
            Errno::NOENT => Self::NotFound { name: String::new() },
            Errno::EXIST => Self::AlreadyExists { name: String::new() },
            // ELOOP is what O_NOFOLLOW answers for a symbolic link.
            Errno::ACCESS | Errno::PERM | Errno::LOOP => Self::PermissionDenied,
            Errno::NOSPC | Errno::DQUOT | Errno::FBIG => Self::NoSpace,
            Errno::NAMETOOLONG => Self::InvalidName,
            other => Self::Io(io::Error::from_raw_os_error(other.raw_os_error())),
        }
    }
}

/// The result of a blocking lock operation: the guard, or why there is no usable one.
pub type LockResult<G> = Result<G, LockError<G>>;

/// Why `lock` did not return a plain guard.
///
/// Like POSIX robust mutexes (`EOWNERDEAD`, `ENOTRECOVERABLE`), and unlike std's poisoning,
/// the caller of `OwnerDied` **holds** the lock: it may repair the protected state and call
/// `mark_consistent` on the guard, or drop the guard to declare the state lost, which makes
/// the lock [`NotRecoverable`](LockError::NotRecoverable) for everyone.
/// # Examples
///
/// ```
/// use shmsync::{Lock, LockError};
/// # let opts = shmsync::Options::new().dir(std::env::temp_dir());
/// # let name = format!("doc-{}-{}", "lockerror", std::process::id());
/// let lock = Lock::create_with(&name, &opts)?;
/// match lock.lock() {
///     Ok(guard) => drop(guard),
///     // The previous owner died holding it: repair, then declare the state consistent.
///     Err(LockError::OwnerDied(mut guard)) => guard.mark_consistent(),
///     Err(LockError::NotRecoverable) => panic!("an earlier death was never repaired"),
///     Err(_) => unreachable!(),
/// }
/// # Lock::unlink_with(&name, &opts)?;
/// # Ok::<(), shmsync::OpenError>(())
/// ```
#[non_exhaustive]
pub enum LockError<G> {
    /// The previous owner died (its process was killed or its thread exited) while
    /// holding the lock. The caller now holds it; the protected state may be half-updated.
    OwnerDied(G),
    /// An owner's death was never repaired: the lock can no longer be acquired by anyone.
    NotRecoverable,
}

/// Why a `try_lock` form did not return a plain guard.
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use shmsync::{Lock, TryLockError};
/// # let opts = shmsync::Options::new().dir(std::env::temp_dir());
/// # let name = format!("doc-{}-{}", "trylockerror", std::process::id());
/// let lock = Lock::create_with(&name, &opts)?;
/// let held = lock.lock().unwrap();
/// // Held (here by ourselves): the timed form gives up.
/// assert!(matches!(lock.try_lock_for(Duration::from_millis(5)), Err(TryLockError::WouldBlock)));
/// drop(held);
/// assert!(lock.try_lock().is_ok());
/// # Lock::unlink_with(&name, &opts)?;
/// # Ok::<(), shmsync::OpenError>(())
/// ```
#[non_exhaustive]
pub enum TryLockError<G> {
    /// Another owner holds the lock (for the timed forms: for the whole timeout).
    WouldBlock,
    /// As [`LockError::OwnerDied`]: the caller holds the lock of a dead owner.
    OwnerDied(G),
    /// As [`LockError::NotRecoverable`].
    NotRecoverable,
}

impl<G> LockError<G> {
    /// The guard, if the caller holds the lock (`OwnerDied`).
    pub fn into_guard(self) -> Option<G> {
        match self {
            Self::OwnerDied(g) => Some(g),
            Self::NotRecoverable => None,
        }
    }

    /// Applies `f` to the guard inside, keeping the variant.
    pub fn map<H>(self, f: impl FnOnce(G) -> H) -> LockError<H> {
        match self {
            Self::OwnerDied(g) => LockError::OwnerDied(f(g)),
            Self::NotRecoverable => LockError::NotRecoverable,
        }
    }
}

impl<G> TryLockError<G> {
    /// The guard, if the caller holds the lock (`OwnerDied`).
    pub fn into_guard(self) -> Option<G> {
        match self {
            Self::OwnerDied(g) => Some(g),
            Self::WouldBlock | Self::NotRecoverable => None,
        }
    }

    /// Applies `f` to the guard inside, keeping the variant.
    pub fn map<H>(self, f: impl FnOnce(G) -> H) -> TryLockError<H> {
        match self {
            Self::OwnerDied(g) => TryLockError::OwnerDied(f(g)),
            Self::WouldBlock => TryLockError::WouldBlock,
            Self::NotRecoverable => TryLockError::NotRecoverable,
        }
    }
}

impl<G> From<LockError<G>> for TryLockError<G> {
    fn from(e: LockError<G>) -> Self {
        match e {
            LockError::OwnerDied(g) => Self::OwnerDied(g),
            LockError::NotRecoverable => Self::NotRecoverable,
        }
    }
}

// Debug without requiring `G: Debug`, as std's `PoisonError` does, so that `?` and
// `unwrap` work on results carrying guards.
impl<G> fmt::Debug for LockError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OwnerDied(_) => f.write_str("OwnerDied(..)"),
            Self::NotRecoverable => f.write_str("NotRecoverable"),
        }
    }
}

impl<G> fmt::Debug for TryLockError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::WouldBlock => f.write_str("WouldBlock"),
            Self::OwnerDied(_) => f.write_str("OwnerDied(..)"),
            Self::NotRecoverable => f.write_str("NotRecoverable"),
        }
    }
}

impl<G> fmt::Display for LockError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OwnerDied(_) => f.write_str("the lock's previous owner died holding it"),
            Self::NotRecoverable => f.write_str("the lock is not recoverable"),
        }
    }
}

impl<G> fmt::Display for TryLockError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::WouldBlock => f.write_str("the lock is held by another owner"),
            Self::OwnerDied(_) => f.write_str("the lock's previous owner died holding it"),
            Self::NotRecoverable => f.write_str("the lock is not recoverable"),
        }
    }
}

impl<G> std::error::Error for LockError<G> {}
impl<G> std::error::Error for TryLockError<G> {}

/// Why a semaphore `release` failed.
/// # Examples
///
/// ```
/// use shmsync::{ReleaseError, Semaphore};
/// # let opts = shmsync::Options::new().dir(std::env::temp_dir());
/// # let name = format!("doc-{}-{}", "releaseerror", std::process::id());
/// let slots = Semaphore::create_bounded_with(&name, 1, 1, &opts)?;
/// assert_eq!(slots.release(), Err(ReleaseError::Overflow)); // already at its bound
/// assert!(slots.try_acquire());
/// assert_eq!(slots.release(), Ok(()));
/// # Semaphore::unlink_with(&name, &opts)?;
/// # Ok::<(), shmsync::OpenError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReleaseError {
    /// The count is at its bound (`max` of a bounded semaphore, or the largest count any
    /// semaphore can hold): the release was refused and changed nothing.
    Overflow,
}

impl fmt::Display for ReleaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Overflow => f.write_str("semaphore released past its bound"),
        }
    }
}

impl std::error::Error for ReleaseError {}

/// Why a push did not enqueue its value; every variant hands the value back.
///
/// The MPMC slice pushes ([`try_push_slice`](crate::mpmc::Queue::try_push_slice),
/// [`push_slice`](crate::mpmc::Queue::push_slice)) use `PushError<usize>`: the number
/// inside is how many values of the slice were pushed before the error (the rest were
/// not), so a caller can resume at that index.
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use shmsync::{PushError, spsc};
/// # let opts = shmsync::Options::new().dir(std::env::temp_dir());
/// # let name = format!("doc-{}-{}", "pusherror", std::process::id());
/// let mut tx = spsc::Producer::<u32>::create_with(&name, 1, &opts)?;
/// let rx = spsc::Consumer::<u32>::open_with(&name, &opts)?;
/// tx.try_push(1).unwrap();
/// // The value comes back with the error, so nothing is lost.
/// assert_eq!(tx.try_push(2), Err(PushError::Full(2)));
/// assert_eq!(tx.push_timeout(2, Duration::from_millis(5)), Err(PushError::Timeout(2)));
/// drop(rx); // the consumer leaves
/// assert_eq!(tx.try_push(2), Err(PushError::Disconnected(2)));
/// # spsc::Producer::<u32>::unlink_with(&name, &opts)?;
/// # Ok::<(), shmsync::OpenError>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PushError<T> {
    /// The queue is full (`try_push`).
    Full(T),
    /// The consumer had attached and is gone (dropped or its process died): nobody will
    /// ever read the value. For an MPMC queue: it is full, no other handle is alive, and
    /// another handle had popped before (a lone producer before any consumer came waits
    /// instead).
    Disconnected(T),
    /// The queue stayed full for the whole timeout (`push_timeout`).
    Timeout(T),
    /// The queue's shared state is inconsistent (a peer wrote garbage).
    Corrupted(T),
}

impl<T> PushError<T> {
    /// The value that was not enqueued (for a slice push: how many values were).
    pub fn into_inner(self) -> T {
        match self {
            Self::Full(v) | Self::Disconnected(v) | Self::Timeout(v) | Self::Corrupted(v) => v,
        }
    }

    /// The same error with `f` applied to the value inside.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> PushError<U> {
        match self {
            Self::Full(v) => PushError::Full(f(v)),
            Self::Disconnected(v) => PushError::Disconnected(f(v)),
            Self::Timeout(v) => PushError::Timeout(f(v)),
            Self::Corrupted(v) => PushError::Corrupted(f(v)),
        }
    }
}

impl<T> fmt::Debug for PushError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Full(_) => "Full(..)",
            Self::Disconnected(_) => "Disconnected(..)",
            Self::Timeout(_) => "Timeout(..)",
            Self::Corrupted(_) => "Corrupted(..)",
        })
    }
}

impl<T> fmt::Display for PushError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Full(_) => "the queue is full",
            Self::Disconnected(_) => "the consumer is gone",
            Self::Timeout(_) => "the queue stayed full until the timeout",
            Self::Corrupted(_) => "the queue's shared state is corrupted",
        })
    }
}

impl<T> std::error::Error for PushError<T> {}

/// Why a pop returned no value.
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use shmsync::{PopError, spsc};
/// # let opts = shmsync::Options::new().dir(std::env::temp_dir());
/// # let name = format!("doc-{}-{}", "poperror", std::process::id());
/// let mut tx = spsc::Producer::<u32>::create_with(&name, 4, &opts)?;
/// let mut rx = spsc::Consumer::<u32>::open_with(&name, &opts)?;
/// assert_eq!(rx.try_pop(), Err(PopError::Empty));
/// assert_eq!(rx.pop_timeout(Duration::from_millis(5)), Err(PopError::Timeout));
/// tx.try_push(9).unwrap();
/// drop(tx); // the producer leaves: what it sent is still delivered
/// assert_eq!(rx.try_pop(), Ok(9));
/// assert_eq!(rx.try_pop(), Err(PopError::Disconnected));
/// # spsc::Producer::<u32>::unlink_with(&name, &opts)?;
/// # Ok::<(), shmsync::OpenError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PopError {
    /// The queue is empty (`try_pop`).
    Empty,
    /// The queue is empty and the producer had attached and is gone: nothing more will
    /// ever arrive. For an MPMC queue: no other handle is alive, and another handle had
    /// pushed before.
    Disconnected,
    /// The queue stayed empty for the whole timeout (`pop_timeout`).
    Timeout,
    /// The queue's shared state is inconsistent (a peer wrote garbage).
    Corrupted,
}

impl fmt::Display for PopError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Empty => "the queue is empty",
            Self::Disconnected => "the queue is empty and the producer is gone",
            Self::Timeout => "the queue stayed empty until the timeout",
            Self::Corrupted => "the queue's shared state is corrupted",
        })
    }
}

impl std::error::Error for PopError {}

/// Why a zero-copy chunk could not be had.
/// # Examples
///
/// ```
/// use shmsync::{ChunkError, spsc};
/// # let opts = shmsync::Options::new().dir(std::env::temp_dir());
/// # let name = format!("doc-{}-{}", "chunkerror", std::process::id());
/// let mut tx = spsc::Producer::<u8>::create_with(&name, 4, &opts)?;
/// let _rx = spsc::Consumer::<u8>::open_with(&name, &opts)?;
/// assert!(matches!(tx.write_chunk(5), Err(ChunkError::TooFewSlots)));
/// assert!(tx.write_chunk(4).is_ok());
/// # spsc::Producer::<u8>::unlink_with(&name, &opts)?;
/// # Ok::<(), shmsync::OpenError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChunkError {
    /// Fewer slots (to write) or values (to read) are available than asked for; ask for
    /// fewer, or wait.
    TooFewSlots,
    /// The other side had attached and is gone (for reading: and nothing is left).
    Disconnected,
    /// The queue's shared state is inconsistent (a peer wrote garbage).
    Corrupted,
}

impl fmt::Display for ChunkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::TooFewSlots => "fewer slots are available than asked for",
            Self::Disconnected => "the other side is gone",
            Self::Corrupted => "the queue's shared state is corrupted",
        })
    }
}

impl std::error::Error for ChunkError {}

/// Why a [`Connection`](crate::Connection) did not send a message.
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use shmsync::{Pipe, SendError};
/// # let opts = shmsync::Options::new().dir(std::env::temp_dir());
/// # let name = format!("doc-{}-{}", "senderror", std::process::id());
/// let mut a = Pipe::create_with(&name, 4096, &opts)?;
/// let b = Pipe::open_with(&name, &opts)?;
/// let too_big = vec![0u8; a.max_message() + 1];
/// assert_eq!(a.send(&too_big), Err(SendError::TooLarge));
/// while a.send_timeout(b"fill", Duration::from_millis(1)).is_ok() {} // nobody reads
/// assert_eq!(a.send_timeout(b"more", Duration::from_millis(5)), Err(SendError::Timeout));
/// drop(b);
/// assert_eq!(a.send(b"hello?"), Err(SendError::Disconnected));
/// # Pipe::unlink_with(&name, &opts)?;
/// # Ok::<(), shmsync::OpenError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// The message is longer than [`max_message`](crate::Connection::max_message): it
    /// could never fit, so the send fails at once instead of waiting.
    TooLarge,
    /// The peer had attached and is gone (dropped or its process died): nobody will ever
    /// read the message.
    Disconnected,
    /// There was no room for the message for the whole timeout.
    Timeout,
    /// This end of a one-way pipe only receives.
    ReceiveOnly,
    /// The pipe's shared state is inconsistent (a peer wrote garbage).
    Corrupted,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::TooLarge => "the message is longer than the pipe's largest message",
            Self::Disconnected => "the peer is gone",
            Self::Timeout => "the pipe stayed full until the timeout",
            Self::ReceiveOnly => "this end of a one-way pipe only receives",
            Self::Corrupted => "the pipe's shared state is corrupted",
        })
    }
}

impl std::error::Error for SendError {}

/// Why a [`Connection`](crate::Connection) returned no message.
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use shmsync::{Pipe, RecvError};
/// # let opts = shmsync::Options::new().dir(std::env::temp_dir());
/// # let name = format!("doc-{}-{}", "recverror", std::process::id());
/// let mut a = Pipe::create_with(&name, 4096, &opts)?;
/// let mut b = Pipe::open_with(&name, &opts)?;
/// assert!(matches!(a.try_recv(), Err(RecvError::Empty)));
/// assert!(matches!(a.recv_timeout(Duration::from_millis(5)), Err(RecvError::Timeout)));
/// b.send(b"last words").unwrap();
/// drop(b);
/// assert_eq!(&*a.recv().unwrap(), b"last words"); // delivered before Disconnected
/// assert!(matches!(a.recv(), Err(RecvError::Disconnected)));
/// # Pipe::unlink_with(&name, &opts)?;
/// # Ok::<(), shmsync::OpenError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecvError {
    /// No message is waiting (`try_recv`).
    Empty,
    /// No message arrived for the whole timeout.
    Timeout,
    /// The peer had attached and is gone, and every message it sent has been received:
    /// Python's `EOFError`.
    Disconnected,
    /// This end of a one-way pipe only sends.
    SendOnly,
    /// The pipe's shared state is inconsistent (a peer wrote garbage).
    Corrupted,
}

impl fmt::Display for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Empty => "no message is waiting",
            Self::Timeout => "no message arrived before the timeout",
            Self::Disconnected => "the peer is gone and every message it sent was received",
            Self::SendOnly => "this end of a one-way pipe only sends",
            Self::Corrupted => "the pipe's shared state is corrupted",
        })
    }
}

impl std::error::Error for RecvError {}

/// The `OpenError::InvalidCapacity` for a size or count a constructor cannot accept.
pub(crate) fn invalid_capacity(requested: u64, allowed: String) -> OpenError {
    OpenError::InvalidCapacity { requested, allowed }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use rustix::io::Errno;

    #[test]
    fn errnos_map_to_their_variants() {
        assert!(matches!(OpenError::from(Errno::NOENT), OpenError::NotFound { .. }));
        assert!(matches!(OpenError::from(Errno::EXIST), OpenError::AlreadyExists { .. }));
        assert!(matches!(OpenError::from(Errno::LOOP), OpenError::PermissionDenied));
        assert!(matches!(OpenError::from(Errno::NOSPC), OpenError::NoSpace));
        match OpenError::from(Errno::MFILE) {
            OpenError::Io(e) => assert_eq!(e.raw_os_error(), Some(libc::EMFILE)),
            other => panic!("EMFILE mapped to {other:?}"),
        }
    }

    #[test]
    fn display_names_both_kinds() {
        let e = OpenError::KindMismatch {
            name: "jobs".into(),
            expected: ObjectKind::Lock,
            found: ObjectKind::Pipe,
        };
        assert_eq!(e.to_string(), "\"jobs\" holds an object of kind Pipe, not Lock");
    }

    #[test]
    fn named_fills_only_an_empty_name() {
        let e = OpenError::from(Errno::NOENT).named("jobs");
        assert_eq!(e.to_string(), "no shared-memory object is called \"jobs\"");
        let e = e.named("other");
        assert!(matches!(&e, OpenError::NotFound { name } if name == "jobs"));
    }

    #[test]
    fn a_layout_mismatch_says_what_differed_and_both_values() {
        let e = OpenError::layout_mismatch(LayoutProperty::ElementSize, 8, 16).named("ticks");
        assert_eq!(
            e.to_string(),
            "\"ticks\" has another layout: its element size is 16, 8 was asked for"
        );
        let e = OpenError::layout_mismatch(LayoutProperty::TypeTag, 0xab, 0xcd).named("ticks");
        assert!(e.to_string().contains("type tag is 0x00000000000000cd, 0x00000000000000ab"));
    }

    #[test]
    fn busy_names_the_role_and_the_holder_where_known() {
        let e = OpenError::Busy { name: "q".into(), role: "producer".into(), holder: Some(42) };
        assert_eq!(
            e.to_string(),
            "the producer of \"q\" is held by another live handle (process 42)"
        );
        let e = OpenError::Busy { name: "q".into(), role: "end A".into(), holder: None };
        assert_eq!(e.to_string(), "the end A of \"q\" is held by another live handle");
    }
}

/// A collection had no room: the value comes back.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct CapacityError<T> {
    /// What did not fit (for `extend_from_slice`, how many values).
    pub value: T,
    /// The collection's capacity.
    pub capacity: usize,
}

impl<T> CapacityError<T> {
    /// The value that did not fit.
    pub fn into_inner(self) -> T {
        self.value
    }
}

impl<T> fmt::Debug for CapacityError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CapacityError").field("capacity", &self.capacity).finish_non_exhaustive()
    }
}

impl<T> fmt::Display for CapacityError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the collection is full (capacity {})", self.capacity)
    }
}

impl<T> std::error::Error for CapacityError<T> {}

/// An index past the end of a list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexError {
    /// The index asked for.
    pub index: usize,
    /// The list's length then.
    pub len: usize,
}

impl fmt::Display for IndexError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "index {} is out of range for a list of {} values", self.index, self.len)
    }
}

impl std::error::Error for IndexError {}

/// Why [`List::insert`](crate::List::insert) did not insert: the value comes back.
#[derive(Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum InsertError<T> {
    /// The list is full.
    Full(T),
    /// The index is past the end (`index > len`).
    OutOfRange {
        /// The value.
        value: T,
        /// The index asked for.
        index: usize,
        /// The list's length then.
        len: usize,
    },
}

impl<T> fmt::Debug for InsertError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Full(_) => f.write_str("Full(..)"),
            Self::OutOfRange { index, len, .. } => f
                .debug_struct("OutOfRange")
                .field("index", index)
                .field("len", len)
                .finish_non_exhaustive(),
        }
    }
}

impl<T> fmt::Display for InsertError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Full(_) => f.write_str("the list is full"),
            Self::OutOfRange { index, len, .. } => {
                write!(f, "cannot insert at {index} in a list of {len} values")
            }
        }
    }
}

impl<T> std::error::Error for InsertError<T> {}

/// A collection's shared state breaks one of its invariants: found by `check`, or by an
/// operation that refused to act on it (a damaged or hostile segment).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Corrupted {
    /// What is wrong.
    pub what: String,
}

impl fmt::Display for Corrupted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the collection's shared state is corrupted: {}", self.what)
    }
}

impl std::error::Error for Corrupted {}

/// Why a [`Barrier`](crate::Barrier) wait did not pass: Python's `BrokenBarrierError`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BarrierError {
    /// The barrier is broken: a waiter timed out, or `abort` or `reset` was called while
    /// this one waited (or before, for `abort`, until `reset`).
    Broken,
}

impl fmt::Display for BarrierError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the barrier is broken (a waiter timed out, or it was aborted or reset)")
    }
}

impl std::error::Error for BarrierError {}

/// Why a [`WaitSet`](crate::WaitSet) call failed.
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use shmsync::{WaitSet, WaitSetError};
///
/// let mut set = WaitSet::new();
/// assert_eq!(set.wait_timeout(Duration::from_millis(1)), Err(WaitSetError::NoEntries));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WaitSetError {
    /// The set holds [`WaitSet::MAX_ENTRIES`](crate::WaitSet::MAX_ENTRIES) entries
    /// already (one `futex_waitv` sleeps on at most 128 words).
    TooMany {
        /// The most entries a set holds.
        limit: usize,
    },
    /// The entry could never become ready, so registering it is refused (the sending end
    /// of a one-way pipe cannot receive; a message longer than the pipe takes never fits).
    Unsupported {
        /// Why, in words.
        reason: String,
    },
    /// The set has no entries: waiting would never end.
    NoEntries,
    /// No entry became ready before the timeout.
    Timeout,
}

impl fmt::Display for WaitSetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooMany { limit } => write!(f, "a wait set holds at most {limit} entries"),
            Self::Unsupported { reason } => write!(f, "this entry could never be ready: {reason}"),
            Self::NoEntries => f.write_str("the wait set has no entries to wait on"),
            Self::Timeout => {
                f.write_str("no entry of the wait set became ready before the timeout")
            }
        }
    }
}

impl std::error::Error for WaitSetError {}
