//! Named shared-memory segments: names, create/open/unlink, the header, the mapping.
//!
//! A segment is one file (in `/dev/shm` or [`Options::dir`]) mapped shared and
//! read-write, starting with a [`header::Header`] and followed by one object's payload.
//! See `docs/design.md` for the protocol and the trust model.

mod attach;
mod collect;
pub(crate) mod constructors;
mod header;
mod info;
mod inherit;
mod name;
pub(crate) mod object;
mod options;
mod scope;

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::time::Duration;

use rustix::fs::{FallocateFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use crate::OpenError;
use crate::layout::ObjectKind;
use crate::wake::futex::Deadline;

#[cfg(not(loom))]
pub(crate) use collect::read_object;
pub use collect::{gc, gc_dry_run, segments};
pub(crate) use header::{Element, Expected, Spec};
use header::{HEADER_LEN, Header, MAX_SEGMENT_LEN, State, Validated};
pub use info::{Attacher, SegmentInfo};
pub use inherit::Inheritable;
pub(crate) use name::validate_name;
pub use options::{Options, Stale};
pub use scope::Scope;

/// Where a segment's bytes live.
enum Memory {
    /// A shared mapping of the segment file: the real thing. Unmapped on drop unless a
    /// robust lock inside it is still linked (a leaked guard): see `crate::wake::robust`.
    Mapped(std::mem::ManuallyDrop<memmap2::MmapRaw>),
    /// A private, zeroed heap block: unit tests and Miri, which cannot map files.
    #[cfg(all(test, not(loom)))]
    Heap { ptr: NonNull<u8>, layout: std::alloc::Layout },
}

impl Memory {
    fn base(&self) -> NonNull<u8> {
        match self {
            // A successful mapping is never at address 0.
            Self::Mapped(map) => NonNull::new(map.as_mut_ptr()).unwrap_or(NonNull::dangling()),
            #[cfg(all(test, not(loom)))]
            Self::Heap { ptr, .. } => *ptr,
        }
    }
}

impl Drop for Memory {
    fn drop(&mut self) {
        match self {
            Self::Mapped(map) => {
                // A lock whose guard was leaked is still in some thread's robust list;
                // unmapping would leave that list pointing at unmapped (or reused)
                // memory. Keeping the mapping is the only sound choice.
                if !crate::wake::robust::any_linked_in(map.as_ptr() as usize, map.len()) {
                    // SAFETY: dropped exactly once, here; nothing uses it afterwards.
                    unsafe { std::mem::ManuallyDrop::drop(map) };
                }
            }
            #[cfg(all(test, not(loom)))]
            Self::Heap { ptr, layout } => {
                // SAFETY: allocated in `Segment::heap` with exactly this layout, freed once.
                unsafe { std::alloc::dealloc(ptr.as_ptr(), *layout) };
            }
        }
    }
}

/// A handle's registration as an attacher of a named segment: the descriptor that holds
/// its attach lock (closing it is detaching, which the kernel does for a dead process),
/// and the record it claimed, if one was free.
struct Attachment {
    fd: OwnedFd,
    pid: u32,
    record: Option<usize>,
}

/// A mapped, validated segment: the header plus a payload whose bounds were checked
/// against the mapping.
pub(crate) struct Segment {
    memory: Memory,
    payload_offset: usize,
    payload_len: usize,
    capacity: u64,
    attach_offset: usize,
    attach_slots: usize,
    attachment: Option<Attachment>,
    /// An anonymous segment's memfd (kept so that it can be handed to children).
    memfd: Option<OwnedFd>,
    info: SegmentInfo,
}

impl Drop for Segment {
    fn drop(&mut self) {
        let Some(attachment) = self.attachment.take() else { return };
        #[allow(irrefutable_let_patterns)] // the heap variant exists only in unit tests
        if let Memory::Mapped(map) = &self.memory {
            if crate::wake::robust::any_linked_in(map.as_ptr() as usize, map.len()) {
                // A leaked guard keeps the mapping (see `Memory`'s drop): the process
                // still uses the segment, so it stays attached too.
                std::mem::forget(attachment.fd);
                return;
            }
        }
        if let Some(slot) = attachment.record {
            attach::release(self.records(), slot, attachment.pid);
        }
        // Closing the descriptor drops the attach lock.
    }
}

// SAFETY: a Segment is a handle to memory that many processes share anyway; it has no
// thread-affine state, and every access to the shared bytes goes through atomics or
// through the owning object's own synchronisation protocol.
unsafe impl Send for Segment {}
// SAFETY: as above; `&Segment` only hands out pointers and immutable facts.
unsafe impl Sync for Segment {}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment").field("info", &self.info).finish_non_exhaustive()
    }
}

impl Segment {
    /// Creates the segment `name`, runs `init` on its zero-filled payload, then publishes
    /// it. `init` runs before any opener can see the segment.
    ///
    /// If anything fails (or `init` panics) the half-made file is unlinked again.
    pub(crate) fn create(
        name: &str,
        spec: &Spec,
        opts: &Options,
        init: impl FnOnce(NonNull<u8>),
    ) -> Result<Self, OpenError> {
        Self::create_unnamed(name, spec, opts, init).map_err(|e| e.named(name))
    }

    /// `create`, with errors that may not carry the name yet.
    fn create_unnamed(
        name: &str,
        spec: &Spec,
        opts: &Options,
        init: impl FnOnce(NonNull<u8>),
    ) -> Result<Self, OpenError> {
        validate_name(name)?;
        check_mode(opts.mode)?;
        let path = opts.path_of(name);
        let mut init = Some(init);
        let segment = match Self::create_file(&path, name, spec, opts, &mut init) {
            Err(OpenError::AlreadyExists { .. }) if opts.stale != Stale::Reuse => {
                Self::replace_stale(&path, name, spec, opts, &mut init)
            }
            done => done,
        }?;
        if let (Some(scope), Some(attachment)) = (&opts.scope, &segment.attachment) {
            scope.register(&path, attachment.fd.as_fd());
        }
        Ok(segment)
    }

    /// Creates the segment file at `path` (which must not exist) for the object `name`.
    /// `init` is taken only once the file is ours.
    fn create_file(
        path: &Path,
        name: &str,
        spec: &Spec,
        opts: &Options,
        init: &mut Option<impl FnOnce(NonNull<u8>)>,
    ) -> Result<Self, OpenError> {
        let placement = spec.placement()?;
        let pid = current_pid();
        let deadline = Deadline::after(opts.open_timeout);
        let (fd, undo) = match born_unnamed(path, pid, &deadline)? {
            Some(born) => born,
            None => born_named(path, pid, &deadline)?,
        };

        // After the create, so the umask (which only applies to open's mode) cannot
        // change the bits the caller asked for.
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(opts.mode))?;
        let run_init = |payload| {
            if let Some(f) = init.take() {
                f(payload);
            }
        };
        let (memory, v) = fill(&fd, spec, &placement, run_init)?;
        undo.disarm();

        let mut segment = Self::assemble(
            memory,
            name,
            path.to_path_buf(),
            spec.expected.kind,
            v,
            placement.segment_len,
        );
        segment.attach(fd, pid);
        Ok(segment)
    }

    /// The name is taken: if by a stale object (see [`Stale`]), replace it or report it
    /// as `opts` says; otherwise `AlreadyExists`.
    ///
    /// A replacement is made whole under a temporary name and renamed over the stale one,
    /// with the stale file's gate held meanwhile: nobody attaches to the old object in
    /// between, and an opener waiting at its gate finds the name leading elsewhere and
    /// opens the new one.
    fn replace_stale(
        path: &Path,
        name: &str,
        spec: &Spec,
        opts: &Options,
        init: &mut Option<impl FnOnce(NonNull<u8>)>,
    ) -> Result<Self, OpenError> {
        let exists = || OpenError::AlreadyExists { name: String::new() };
        let Ok(old) = open_existing(path) else { return Err(exists()) };
        // Held until we return: no attacher gets in while we decide and replace.
        if !attach::close_gate(old.as_fd()).unwrap_or(false) {
            return Err(exists());
        }
        let Some(dead) = collect::stale_attachers(&old).ok().flatten() else {
            return Err(exists());
        };
        if opts.stale == Stale::Error {
            return Err(OpenError::Stale { name: String::new(), dead });
        }
        let temp = path.with_file_name(format!(
            ".{}.replacing.{}.{:x}",
            name.chars().take(100).collect::<String>(),
            current_pid(),
            new_instance_id()
        ));
        let mut segment = Self::create_file(&temp, name, spec, opts, init)?;
        let renamed =
            attach::still_named(old.as_fd(), path) && rustix::fs::rename(&temp, path).is_ok();
        if !renamed {
            let _ = rustix::fs::unlink(&temp);
            return Err(exists());
        }
        segment.info.path = path.to_path_buf();
        Ok(segment)
    }

    /// Records this handle in the attacher table (the attach lock is already held
    /// through `fd`) and keeps `fd`, whose closing detaches.
    fn attach(&mut self, fd: OwnedFd, pid: u32) {
        let record = attach::claim(self.records(), fd.as_fd(), pid);
        self.attachment = Some(Attachment { fd, pid, record });
    }

    /// The attacher table, as validated against the mapping.
    fn records(&self) -> &[attach::Record] {
        // SAFETY: `validate` checked that `attach_slots` records from `attach_offset`
        // (a multiple of 16) lie inside the mapping; a Record is two atomics, valid for
        // every bit pattern, and lives as long as `self`.
        unsafe {
            std::slice::from_raw_parts(
                self.memory.base().add(self.attach_offset).as_ptr().cast::<attach::Record>(),
                self.attach_slots,
            )
        }
    }

    /// Opens the existing segment `name`, waiting up to `opts.open_timeout` for its
    /// creator to publish it, and validates it against `want`.
    pub(crate) fn open(name: &str, want: &Expected, opts: &Options) -> Result<Self, OpenError> {
        Self::open_unnamed(name, want, opts).map_err(|e| e.named(name))
    }

    /// `open`, with errors that may not carry the name yet.
    fn open_unnamed(name: &str, want: &Expected, opts: &Options) -> Result<Self, OpenError> {
        validate_name(name)?;
        let path = opts.path_of(name);
        let deadline = Deadline::after(opts.open_timeout);
        let pid = current_pid();
        let mut backoff = Backoff::new();
        'open: loop {
            let fd = open_existing(&path)?;
            let first = rustix::fs::fstat(&fd)?;
            if FileType::from_raw_mode(first.st_mode) != FileType::RegularFile {
                return Err(OpenError::Corrupted);
            }
            if first.st_uid != rustix::process::geteuid().as_raw() {
                return Err(OpenError::PermissionDenied);
            }
            // While we wait for the creator, the name may be given to a new object (its
            // creator died and someone replaced or collected its file): follow the name.
            // And a creator holds its attach lock from its first microseconds: if none is
            // held after a millisecond, it died, and nobody will ever finish this file.
            let waiting_since = std::time::Instant::now();
            let wait = |backoff: &mut Backoff| -> Result<bool, OpenError> {
                backoff.sleep_until(&deadline)?;
                if waiting_since.elapsed() > Duration::from_millis(1)
                    && attach::live_pids(fd.as_fd()).is_ok_and(|pids| pids.is_empty())
                {
                    return Err(OpenError::NotInitialized { name: String::new() });
                }
                Ok(attach::still_names(&path, &first))
            };
            // A creator writes the magic number (8 bytes), then sizes the file in one
            // step: 0 or just the magic means "not yet", and anything else short of a
            // header is not a segment.
            let mut stat = first;
            while stat.st_size == 0 || (stat.st_size == 8 && starts_with_magic(&fd)) {
                if !wait(&mut backoff)? {
                    continue 'open;
                }
                stat = rustix::fs::fstat(&fd)?;
            }
            let len = u64::try_from(stat.st_size).map_err(|_| OpenError::Corrupted)?;
            if len < HEADER_LEN as u64 || len > MAX_SEGMENT_LEN {
                return Err(OpenError::Corrupted);
            }

            let memory = map(&fd, len)?;
            // SAFETY: the mapping is `len >= HEADER_LEN` bytes, page-aligned, and every bit
            // pattern is a valid Header (all fields are integers); it lives as long as
            // `memory`. A peer truncating the file under us is outside what we can defend
            // (docs/design.md, trust model).
            let header = unsafe { &*memory.base().as_ptr().cast::<Header>() };
            loop {
                match header.state() {
                    State::Ready => break,
                    State::Uninit => {
                        if !wait(&mut backoff)? {
                            continue 'open;
                        }
                    }
                    State::Invalid => return Err(OpenError::Corrupted),
                }
            }
            let v = header.validate(len, want)?;
            // Attached only now, so that an opener waiting for a creator that died does
            // not keep the dead creator's file alive. A collector that decided before our
            // lock was in place has unlinked or replaced the name: open it again.
            attach::lock(fd.as_fd(), pid, &deadline).map_err(OpenError::Io)?;
            if attach::still_names(&path, &first) {
                let mut segment = Self::assemble(memory, name, path, want.kind, v, len);
                segment.attach(fd, pid);
                return Ok(segment);
            }
            if deadline.has_passed() {
                return Err(OpenError::NotFound { name: String::new() });
            }
        }
    }

    /// Opens `name`, or creates it if absent, race-free between processes: exactly one
    /// caller's `create` succeeds and runs `init`; every other caller opens that segment.
    pub(crate) fn open_or_create(
        name: &str,
        spec: &Spec,
        opts: &Options,
        init: impl FnOnce(NonNull<u8>),
    ) -> Result<Self, OpenError> {
        Self::open_or_create_telling(name, spec, opts, init).map(|(segment, _)| segment)
    }

    /// [`open_or_create`](Self::open_or_create), also telling whether this call created
    /// the segment (`true`) or opened an existing one.
    pub(crate) fn open_or_create_telling(
        name: &str,
        spec: &Spec,
        opts: &Options,
        init: impl FnOnce(NonNull<u8>),
    ) -> Result<(Self, bool), OpenError> {
        let mut init = Some(init);
        let deadline = Deadline::after(opts.open_timeout);
        loop {
            let run_init = |payload| {
                if let Some(f) = init.take() {
                    f(payload);
                }
            };
            match Self::create(name, spec, opts, run_init) {
                Err(OpenError::AlreadyExists { .. }) => {}
                done => return done.map(|segment| (segment, true)),
            }
            match Self::open(name, &spec.expected, opts) {
                // Unlinked between our create and our open, or its creator died before
                // finishing it (our create replaces such a file, unless told to reuse):
                // try creating again, for as long as it lasts within our timeout.
                Err(OpenError::NotFound { .. } | OpenError::NotInitialized { .. })
                    if !deadline.has_passed() => {}
                done => return done.map(|segment| (segment, false)),
            }
        }
    }

    /// Removes the name. Mappings stay valid until their handles are dropped.
    pub(crate) fn unlink(name: &str, opts: &Options) -> Result<(), OpenError> {
        validate_name(name)?;
        rustix::fs::unlink(opts.path_of(name)).map_err(|e| OpenError::from(e).named(name))
    }

    /// Creates an unnamed segment in a memfd: nothing in any directory, gone when the last
    /// descriptor and mapping are. Other processes get it by inheriting the returned
    /// descriptor (see [`open_fd`](Self::open_fd)); `label` names it in errors and in
    /// `/proc/<pid>/fd`. The size is sealed, so no holder can shrink it under the others.
    #[cfg_attr(loom, allow(dead_code))] // the pool, its only user, is not built under loom
    pub(crate) fn create_anonymous(
        label: &str,
        spec: &Spec,
        init: impl FnOnce(NonNull<u8>),
    ) -> Result<(Self, OwnedFd), OpenError> {
        use rustix::fs::{MemfdFlags, SealFlags};
        let placement = spec.placement()?;
        let fd = rustix::fs::memfd_create(label, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
        let (memory, v) = fill(&fd, spec, &placement, init)?;
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)?;
        let path = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        let mut segment =
            Self::assemble(memory, label, path, spec.expected.kind, v, placement.segment_len);
        segment.memfd = Some(rustix::io::fcntl_dupfd_cloexec(&fd, 0)?);
        Ok((segment, fd))
    }

    /// The anonymous segment's descriptor as a child inherits it (`None` for a named
    /// one).
    #[cfg_attr(loom, allow(dead_code))] // the queues' handles are not built under loom
    pub(crate) fn inheritable(&self) -> Option<Inheritable> {
        self.memfd.as_ref().map(Inheritable::of)
    }

    /// Maps the anonymous segment behind an inherited descriptor (see [`Inheritable`]).
    #[cfg_attr(loom, allow(dead_code))] // as `inheritable`
    pub(crate) fn open_inherited(token: Inheritable, want: &Expected) -> Result<Self, OpenError> {
        let fd = token.take()?;
        let mut segment = Self::open_fd(&fd, "anonymous", want)?;
        segment.memfd = Some(fd);
        Ok(segment)
    }

    /// Maps the segment behind an inherited descriptor (made by
    /// [`create_anonymous`](Self::create_anonymous) in another process) and validates it
    /// against `want`, as `open` does for a named one.
    #[cfg_attr(loom, allow(dead_code))] // as `create_anonymous`
    pub(crate) fn open_fd(fd: &OwnedFd, label: &str, want: &Expected) -> Result<Self, OpenError> {
        let stat = rustix::fs::fstat(fd)?;
        if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
            return Err(OpenError::Corrupted);
        }
        let len = u64::try_from(stat.st_size).map_err(|_| OpenError::Corrupted)?;
        if len < HEADER_LEN as u64 || len > MAX_SEGMENT_LEN {
            return Err(OpenError::Corrupted);
        }
        let memory = map(fd, len)?;
        // SAFETY: as in `open`: `len >= HEADER_LEN` mapped bytes, every bit pattern valid.
        let header = unsafe { &*memory.base().as_ptr().cast::<Header>() };
        if header.state() != State::Ready {
            return Err(OpenError::Corrupted);
        }
        let v = header.validate(len, want).map_err(|e| e.named(label))?;
        let path = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        Ok(Self::assemble(memory, label, path, want.kind, v, len))
    }

    /// A private segment on the heap, made by the same steps as `create`: for unit tests
    /// under Miri, which cannot map files.
    #[cfg(all(test, not(loom)))]
    pub(crate) fn heap(spec: &Spec, init: impl FnOnce(NonNull<u8>)) -> Result<Self, OpenError> {
        let placement = spec.placement()?;
        let len = usize::try_from(placement.segment_len).map_err(|_| OpenError::NoSpace)?;
        let layout = std::alloc::Layout::from_size_align(len, header::MAX_ALIGN as usize)
            .map_err(|_| OpenError::NoSpace)?;
        // SAFETY: `len >= HEADER_LEN > 0`, so the layout is not zero-sized.
        let ptr =
            NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) }).ok_or(OpenError::NoSpace)?;
        let memory = Memory::Heap { ptr, layout };
        // SAFETY: as in `create`: zeroed, aligned, large enough, owned by `memory`.
        let header = unsafe { &*ptr.as_ptr().cast::<Header>() };
        header.initialise(spec, &placement, current_pid(), new_instance_id());
        let v = header.validate(placement.segment_len, &spec.expected)?;
        // SAFETY: `validate` checked the payload lies inside the allocation.
        init(unsafe { ptr.add(v.payload_offset) });
        header.publish();
        let path = PathBuf::from("<heap>");
        Ok(Self::assemble(memory, "heap", path, spec.expected.kind, v, placement.segment_len))
    }

    fn assemble(
        memory: Memory,
        name: &str,
        path: PathBuf,
        kind: ObjectKind,
        v: Validated,
        len: u64,
    ) -> Self {
        let info = SegmentInfo {
            name: name.to_owned(),
            path,
            kind: Some(kind),
            instance_id: v.instance_id,
            creator_pid: v.creator_pid,
            // Bounded by MAX_SEGMENT_LEN, so it fits.
            len: usize::try_from(len).unwrap_or(usize::MAX),
            element_size: v.element.size,
            type_tag: v.element.type_tag,
            capacity: v.capacity,
            created_at: v.created_at,
            problem: None,
        };
        Self {
            memory,
            payload_offset: v.payload_offset,
            payload_len: v.payload_len,
            capacity: v.capacity,
            attach_offset: v.attach_offset,
            attach_slots: v.attach_slots,
            attachment: None,
            memfd: None,
            info,
        }
    }

    /// The header at the start of the segment.
    #[cfg(all(test, not(loom)))]
    pub(crate) fn header(&self) -> &Header {
        // SAFETY: checked at create/open: the memory holds at least a header, aligned,
        // and every bit pattern is a valid Header. It lives as long as `self`.
        unsafe { &*self.memory.base().as_ptr().cast::<Header>() }
    }

    /// The start of the payload: `payload_len()` bytes, aligned for the element type
    /// recorded in the header, valid as long as `self`.
    pub(crate) fn payload(&self) -> NonNull<u8> {
        // SAFETY: payload_offset + payload_len <= the mapping's length (validated).
        unsafe { self.memory.base().add(self.payload_offset) }
    }

    /// The payload's length in bytes, as validated against the mapping.
    pub(crate) fn payload_len(&self) -> usize {
        self.payload_len
    }

    /// The capacity recorded by the creator. Unchecked here: each object validates it.
    pub(crate) fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Facts for users and tools.
    pub(crate) fn info(&self) -> &SegmentInfo {
        &self.info
    }
}

/// Rejects modes that would make the segment unusable or carry non-permission bits.
fn check_mode(mode: u32) -> Result<(), OpenError> {
    if mode & !0o777 != 0 || mode & 0o600 != 0o600 {
        return Err(OpenError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "mode {mode:#o} must include owner read and write (0o600) and only bits of 0o777"
            ),
        )));
    }
    Ok(())
}

/// Gives the file its final size in one step, with its pages reserved, so that a full
/// tmpfs fails here with `NoSpace` instead of raising SIGBUS on a later write.
fn reserve(fd: &OwnedFd, len: u64) -> Result<(), OpenError> {
    match rustix::fs::fallocate(fd, FallocateFlags::empty(), 0, len) {
        Ok(()) => Ok(()),
        // File systems without fallocate still give a sized, zero-filled file, only
        // without the reservation.
        Err(Errno::OPNOTSUPP) => rustix::fs::ftruncate(fd, len).map_err(OpenError::from),
        Err(e) => Err(OpenError::from(e)),
    }
}

/// Sizes the new, empty file `fd` for `placement`, maps it, writes the header, runs
/// `init` on the payload and publishes: the steps every creator takes.
fn fill(
    fd: &OwnedFd,
    spec: &Spec,
    placement: &header::Placement,
    init: impl FnOnce(NonNull<u8>),
) -> Result<(Memory, Validated), OpenError> {
    reserve(fd, placement.segment_len)?;
    let memory = map(fd, placement.segment_len)?;
    let base = memory.base();
    // SAFETY: the mapping is at least HEADER_LEN bytes, page-aligned (so aligned for
    // Header), zero-filled (a valid Header: all atomics), and lives as long as `memory`;
    // openers do not touch it before `publish`.
    let header = unsafe { &*base.as_ptr().cast::<Header>() };
    header.initialise(spec, placement, current_pid(), new_instance_id());
    let v = header.validate(placement.segment_len, &spec.expected)?;
    // SAFETY: `validate` checked payload_offset + payload_len <= segment_len.
    init(unsafe { base.add(v.payload_offset) });
    header.publish();
    Ok((memory, v))
}

/// Maps `len` bytes of the file shared and read-write, with page tables populated so the
/// first touches do not fault.
fn map(fd: &OwnedFd, len: u64) -> Result<Memory, OpenError> {
    let len = usize::try_from(len).map_err(|_| OpenError::NoSpace)?;
    let raw = memmap2::MmapOptions::new().len(len).populate().map_raw(fd.as_raw_fd()).map_err(
        |e| match e.raw_os_error() {
            Some(errno) => OpenError::from(Errno::from_raw_os_error(errno)),
            None => OpenError::Io(e),
        },
    )?;
    Ok(Memory::Mapped(std::mem::ManuallyDrop::new(raw)))
}

/// Makes the new segment file at `path` the crash-clean way: an unnamed file in the
/// directory (`O_TMPFILE`) that gets the magic number and this process's attach lock, and
/// only then its name (`linkat`, which fails like `O_EXCL` if the name is taken). A
/// creator killed at any instant before leaves nothing; after, a file that says it is
/// shmsync's and whose lock goes with the creator. `None` where the file system cannot
/// (no `O_TMPFILE`, no `/proc`): [`born_named`] instead.
fn born_unnamed(
    path: &Path,
    pid: u32,
    deadline: &Deadline,
) -> Result<Option<(OwnedFd, UnlinkOnDrop)>, OpenError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let flags = OFlags::RDWR | OFlags::TMPFILE | OFlags::CLOEXEC;
    let fd = match rustix::fs::open(dir, flags, Mode::from_raw_mode(0o600)) {
        Ok(fd) => fd,
        Err(Errno::OPNOTSUPP | Errno::ISDIR | Errno::INVAL | Errno::NOENT) => return Ok(None),
        Err(e) => return Err(OpenError::from(e)),
    };
    rustix::io::pwrite(&fd, &header::MAGIC.to_le_bytes(), 0)?;
    attach::lock(fd.as_fd(), pid, deadline).map_err(OpenError::Io)?;
    let proc_path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    match rustix::fs::linkat(
        rustix::fs::CWD,
        &proc_path,
        rustix::fs::CWD,
        path,
        rustix::fs::AtFlags::SYMLINK_FOLLOW,
    ) {
        Ok(()) => {}
        Err(Errno::NOENT) if !Path::new("/proc/self/fd").exists() => return Ok(None),
        // The name is new by definition; ENOENT means the directory is missing.
        Err(Errno::NOENT) => return Err(OpenError::Io(Errno::NOENT.into())),
        Err(e) => return Err(OpenError::from(e)),
    }
    let undo = UnlinkOnDrop::new(path, &fd)?;
    Ok(Some((fd, undo)))
}

/// [`born_unnamed`] where the file system cannot: `O_CREAT | O_EXCL` at the name, the
/// magic number, the attach lock. A creator killed in between leaves an empty file (or
/// one with the magic number only, which `gc` removes once it is a second old).
fn born_named(
    path: &Path,
    pid: u32,
    deadline: &Deadline,
) -> Result<(OwnedFd, UnlinkOnDrop), OpenError> {
    let flags = OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rustix::fs::open(path, flags, Mode::from_raw_mode(0o600)).map_err(|e| match e {
        // The name is new by definition; ENOENT means the directory is missing.
        Errno::NOENT => OpenError::Io(std::io::Error::from_raw_os_error(e.raw_os_error())),
        other => OpenError::from(other),
    })?;
    rustix::io::pwrite(&fd, &header::MAGIC.to_le_bytes(), 0)?;
    let undo = UnlinkOnDrop::new(path, &fd)?;
    attach::lock(fd.as_fd(), pid, deadline).map_err(OpenError::Io)?;
    // Before our lock, our unfinished file looked like a dead creator's to a `create`
    // elsewhere, which may have replaced it: then the name is theirs.
    if !attach::still_names(path, &rustix::fs::fstat(&fd)?) {
        return Err(OpenError::AlreadyExists { name: String::new() });
    }
    Ok((fd, undo))
}

/// Whether the file begins with the magic number (a creator's first write).
fn starts_with_magic(fd: &OwnedFd) -> bool {
    let mut bytes = [0u8; 8];
    rustix::io::pread(fd, &mut bytes, 0).is_ok_and(|n| n == 8)
        && u64::from_le_bytes(bytes) == header::MAGIC
}

/// Opens an existing segment file for reading and writing.
fn open_existing(path: &Path) -> Result<OwnedFd, OpenError> {
    // O_NONBLOCK: a FIFO planted at the name must not block us (it is refused later).
    let flags = OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
    rustix::fs::open(path, flags, Mode::empty()).map_err(|e| match e {
        Errno::ISDIR | Errno::NXIO | Errno::NODEV => OpenError::Corrupted,
        other => OpenError::from(other),
    })
}

fn current_pid() -> u32 {
    rustix::process::getpid().as_raw_nonzero().get().unsigned_abs()
}

/// A random non-zero id for a new segment. Without getrandom (it cannot fail on Linux
/// 3.17+ with a sized buffer, but be safe) the time and pid still tell segments apart.
fn new_instance_id() -> u64 {
    let mut bytes = [0u8; 8];
    let random = match rustix::rand::getrandom(&mut bytes, rustix::rand::GetRandomFlags::empty()) {
        Ok(8) => u64::from_ne_bytes(bytes),
        _ => {
            let now = rustix::time::clock_gettime(rustix::time::ClockId::Realtime);
            (now.tv_nsec as u64) ^ (now.tv_sec as u64).rotate_left(32) ^ u64::from(current_pid())
        }
    };
    random.max(1)
}

/// Unlinks a file this process just created unless disarmed: a failed or panicking
/// `create` leaves no half-made segment behind, and a [`Scope`] its objects. It checks
/// that the name still refers to our inode, so it never removes a file that someone else
/// put there meanwhile.
#[derive(Debug)]
pub(super) struct UnlinkOnDrop {
    path: PathBuf,
    dev: u64,
    ino: u64,
    armed: bool,
}

impl UnlinkOnDrop {
    fn new(path: &Path, fd: &OwnedFd) -> Result<Self, OpenError> {
        match rustix::fs::fstat(fd) {
            Ok(st) => Ok(Self::of(path, &st)),
            // Without an inode to compare we unlink by name: we created it an instant ago.
            Err(e) => {
                let _ = rustix::fs::unlink(path);
                Err(OpenError::from(e))
            }
        }
    }

    /// Armed for the file whose `fstat` is `st`, at `path`.
    pub(super) fn of(path: &Path, st: &rustix::fs::Stat) -> Self {
        Self { path: path.to_path_buf(), dev: st.st_dev, ino: st.st_ino, armed: true }
    }

    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for UnlinkOnDrop {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Ok(st) = rustix::fs::lstat(&self.path) {
            if st.st_dev == self.dev && st.st_ino == self.ino {
                let _ = rustix::fs::unlink(&self.path);
            }
        }
    }
}

/// Exponential sleeps for openers waiting on a creator: 20 us doubling to 2 ms, never
/// past the deadline.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Self {
        Self(Duration::from_micros(20))
    }

    /// Sleeps one step, or fails with `NotInitialized` once the deadline has passed.
    fn sleep_until(&mut self, deadline: &Deadline) -> Result<(), OpenError> {
        let left = deadline.remaining().unwrap_or(Duration::MAX);
        if left.is_zero() {
            return Err(OpenError::NotInitialized { name: String::new() });
        }
        std::thread::sleep(self.0.min(left));
        self.0 = (self.0 * 2).min(Duration::from_millis(2));
        Ok(())
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn spec(size: u64) -> Spec {
        Spec {
            expected: Expected {
                kind: ObjectKind::Shared,
                element: Element { size, align: 8, type_tag: 1 },
            },
            capacity: 1,
            payload_len: size,
        }
    }

    #[test]
    fn heap_segments_run_init_before_publishing() {
        let mut seen_len = 0;
        let seg = Segment::heap(&spec(64), |p| {
            // SAFETY: the payload is 64 zeroed bytes, aligned to 128.
            let bytes = unsafe { std::slice::from_raw_parts_mut(p.as_ptr(), 64) };
            assert!(bytes.iter().all(|&b| b == 0));
            bytes[63] = 9;
            seen_len = bytes.len();
        })
        .unwrap();
        assert_eq!(seen_len, 64);
        assert_eq!(seg.header().state(), State::Ready);
        assert_eq!(seg.payload_len(), 64);
        assert_eq!(seg.payload().as_ptr() as usize % 128, 0);
        // SAFETY: 64 payload bytes, initialised above.
        assert_eq!(unsafe { *seg.payload().as_ptr().add(63) }, 9);
        let info = seg.info();
        assert_eq!(
            (info.len(), info.kind(), info.creator_pid()),
            // Header, payload, and the attacher table (32 records of 16 bytes).
            (192 + 512, ObjectKind::Shared, current_pid())
        );
        assert_ne!(info.instance_id(), 0);
    }

    #[test]
    fn instance_ids_differ() {
        let a = Segment::heap(&spec(8), |_| {}).unwrap();
        let b = Segment::heap(&spec(8), |_| {}).unwrap();
        assert_ne!(a.info().instance_id(), b.info().instance_id());
    }

    #[test]
    fn modes_without_owner_rw_or_with_extra_bits_are_refused() {
        for bad in [0o400, 0o200, 0o000, 0o4600, 0o1600] {
            assert!(
                matches!(check_mode(bad), Err(OpenError::Io(ref e)) if e.kind() == std::io::ErrorKind::InvalidInput)
            );
        }
        for good in [0o600, 0o640, 0o666, 0o700] {
            assert!(check_mode(good).is_ok());
        }
    }

    #[test]
    fn backoff_gives_up_at_the_deadline() {
        let deadline = Deadline::after(Duration::from_millis(5));
        let mut b = Backoff::new();
        let mut steps = 0;
        while b.sleep_until(&deadline).is_ok() {
            steps += 1;
            assert!(steps < 10_000, "backoff never gave up");
        }
        assert!(deadline.has_passed());
        assert!(steps >= 1);
    }
}
