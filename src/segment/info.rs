//! What a segment is and who holds it: [`SegmentInfo`] and [`Attacher`].

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::layout::ObjectKind;

/// Facts about a segment: read from its header when a handle opened it (every named
/// object's `info()`), or when [`segments`](crate::segments) listed its directory.
///
/// For logging, for tools that tell one incarnation of a name from the next, and for
/// seeing who is attached ([`attached`](Self::attached)).
///
/// # Examples
///
/// ```
/// use shmsync::{Event, ObjectKind};
/// # let opts = shmsync::Options::new().dir(std::env::temp_dir());
/// # let name = format!("doc-{}-{}", "segmentinfo", std::process::id());
/// let a = Event::create_with(&name, &opts)?;
/// let b = Event::open_with(&name, &opts)?;
/// let info = b.info();
/// assert_eq!((info.name(), info.kind()), (name.as_str(), ObjectKind::Event));
/// assert_eq!(info.instance_id(), a.info().instance_id()); // one object
/// assert_eq!(info.creator_pid(), std::process::id());
/// # Event::unlink_with(&name, &opts)?;
/// # Ok::<(), shmsync::OpenError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    pub(super) name: String,
    pub(super) path: PathBuf,
    pub(super) kind: Option<ObjectKind>,
    pub(super) instance_id: u64,
    pub(super) creator_pid: u32,
    pub(super) len: usize,
    pub(super) element_size: u64,
    pub(super) type_tag: u64,
    pub(super) capacity: u64,
    pub(super) created_at: u64,
    pub(super) problem: Option<String>,
}

impl SegmentInfo {
    /// The object's name, as given to `create` or `open`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The file that backs the segment (`/dev/shm/<name>` by default). Once the name is
    /// unlinked it may be absent, or belong to another segment.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The kind of object the segment holds. For an entry of [`segments`](crate::segments)
    /// that [`is_corrupted`](Self::is_corrupted), the kind its header names if it names
    /// one, else `ObjectKind::Shared`: look at [`problem`](Self::problem) first.
    pub fn kind(&self) -> ObjectKind {
        self.kind.unwrap_or(ObjectKind::Shared)
    }

    /// A random, non-zero number chosen by the creator. Two handles with the same
    /// instance id map the same segment; a name unlinked and created again gets a new one.
    pub fn instance_id(&self) -> u64 {
        self.instance_id
    }

    /// The process id of the creator, as seen in the creator's pid namespace. The
    /// process may have exited since, and the number may have been reused.
    pub fn creator_pid(&self) -> u32 {
        self.creator_pid
    }

    /// When the creator made the segment (its clock, to the nanosecond).
    pub fn created_at(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(self.created_at)
    }

    /// The length of the whole mapping in bytes, header and attacher table included.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The size of the segment's file in bytes: [`len`](Self::len).
    pub fn size(&self) -> usize {
        self.len
    }

    /// Always false: a segment holds at least its header. Present for symmetry with `len`.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The size of one element (a queue's item, a list's value, a dict's slot, a
    /// `Shared<T>`'s whole `T`), as the header records it.
    pub fn element_size(&self) -> u64 {
        self.element_size
    }

    /// The element type's tag as the header records it (see
    /// [`ShmSafe::type_tag`](crate::ShmSafe::type_tag)): two programs' types match when
    /// their tags do. An MPMC queue records it mixed (XOR) with its protocol revision, and
    /// a pipe records a constant.
    pub fn type_tag(&self) -> u64 {
        self.type_tag
    }

    /// The capacity the creator recorded: a queue's or list's slots, a dict's entries, an
    /// array's length, 1 for single objects.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Whether [`segments`](crate::segments) found the file unreadable as an object:
    /// a damaged header, another layout version, or a creator that never finished.
    /// Handles opened by `create` or `open` are never corrupted.
    pub fn is_corrupted(&self) -> bool {
        self.problem.is_some()
    }

    /// What is wrong with a corrupted entry, in words; `None` for a sound one.
    pub fn problem(&self) -> Option<&str> {
        self.problem.as_deref()
    }

    /// The processes attached to the segment now, alive and dead, one entry per process,
    /// by pid.
    ///
    /// A process is *alive* while one of its handles holds the open-file-description
    /// lock that handle took when it opened the segment: the kernel drops it when the
    /// handle is dropped or the process dies, so a recycled pid cannot pass for the dead
    /// process. A process that died attached (killed, aborted) is listed as dead; one whose
    /// handles were all dropped is not listed. The segment records up to 32 attachments;
    /// live processes beyond them are still found by their locks.
    ///
    /// Reads the file again each call (a few syscalls); empty if the name no longer
    /// leads to this segment.
    pub fn attached(&self) -> Vec<Attacher> {
        super::collect::attachers(&self.path, Some(self.instance_id)).unwrap_or_default()
    }
}

/// A process attached to a segment: see [`SegmentInfo::attached`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Attacher {
    pub(super) pid: u32,
    pub(super) alive: bool,
    pub(super) attached_at: Option<u64>,
}

impl Attacher {
    /// The process id, as the attacher saw it in its pid namespace.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether the process still holds the segment: proved by a lock the kernel drops
    /// when it dies, not by looking the pid up (which a recycled pid would fool).
    pub fn is_alive(&self) -> bool {
        self.alive
    }

    /// When it attached, if the segment recorded it (not for live processes beyond the
    /// record table's 32).
    pub fn attached_at(&self) -> Option<SystemTime> {
        self.attached_at.map(|s| UNIX_EPOCH + Duration::from_secs(s))
    }
}
