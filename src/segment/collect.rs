//! Listing a directory's objects ([`segments`]) and removing those nobody holds ([`gc`]).
//!
//! Both read files with `pread` rather than mapping them: a listing of thousands of
//! objects stays cheap, and a damaged file cannot fault the reader.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{FileType, Mode, OFlags};

use super::attach::{self, Record};
use super::header::{HEADER_LEN, Header, MAGIC, State, Validated};
use super::info::{Attacher, SegmentInfo};
use super::{Options, validate_name};
use crate::OpenError;

/// Why a shmsync file is not a sound object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Problem {
    /// Its creator has not published it: it died, or is still at it.
    Uninitialised,
    /// A state word no creator writes.
    UnknownState,
    /// Written by another layout version.
    OtherVersion,
    /// Header fields that contradict each other or the file.
    Contradictory,
}

impl Problem {
    fn describe(self) -> &'static str {
        match self {
            Self::Uninitialised => {
                "not initialised: its creator died before publishing it, or is still at it"
            }
            Self::UnknownState => "corrupted: an unknown state word",
            Self::OtherVersion => "written by another layout version of shmsync",
            Self::Contradictory => "corrupted: its header contradicts itself or the file",
        }
    }
}

/// A header read into memory: aligned for `Header`, whose fields are all integers.
#[repr(C, align(8))]
struct HeaderBytes([u8; HEADER_LEN]);

/// What a file in the directory turned out to be.
enum Found {
    /// Not a shmsync object (too short, another magic number): skipped silently.
    Foreign,
    /// Empty, or a zero header: what a creator leaves if it dies before writing its
    /// header (it sizes the file in one step). Possibly another program's empty file
    /// too, so listings and `gc` skip it; only `create` at its name replaces it.
    Unborn,
    /// A shmsync object, sound or not.
    Object { v: Result<Validated, Problem>, len: u64 },
}

fn open_file(path: &Path) -> io::Result<OwnedFd> {
    let flags = OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
    Ok(rustix::fs::open(path, flags, Mode::empty())?)
}

/// Reads and judges the header of the open file `fd`.
fn examine(fd: &OwnedFd) -> io::Result<Found> {
    let stat = rustix::fs::fstat(fd)?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile
        || stat.st_uid != rustix::process::geteuid().as_raw()
    {
        return Ok(Found::Foreign);
    }
    let len = u64::try_from(stat.st_size).unwrap_or(0);
    if len == 0 {
        return Ok(Found::Unborn);
    }
    let mut bytes = HeaderBytes([0; HEADER_LEN]);
    let read = rustix::io::pread(fd, &mut bytes.0, 0)?;
    let magic =
        read >= 8 && u64::from_le_bytes(bytes.0[..8].try_into().unwrap_or_default()) == MAGIC;
    if len < HEADER_LEN as u64 || read < HEADER_LEN {
        // A creator writes the magic number before anything else: one that died then.
        return Ok(if magic {
            Found::Object { v: Err(Problem::Uninitialised), len }
        } else {
            Found::Foreign
        });
    }
    if bytes.0.iter().all(|&b| b == 0) {
        return Ok(Found::Unborn);
    }
    if u64::from_le_bytes(bytes.0[..8].try_into().unwrap_or_default()) != MAGIC {
        return Ok(Found::Foreign);
    }
    // SAFETY: `bytes` is 128 bytes, 8-aligned, and every bit pattern is a valid Header
    // (integers and atomics of integers); it outlives the reference. Loom builds never
    // list directories.
    let header = unsafe { &*bytes.0.as_ptr().cast::<Header>() };
    let v = match header.state() {
        State::Uninit => Err(Problem::Uninitialised),
        State::Invalid => Err(Problem::UnknownState),
        State::Ready => header.describe(len).map_err(|e| match e {
            OpenError::VersionMismatch => Problem::OtherVersion,
            _ => Problem::Contradictory,
        }),
    };
    Ok(Found::Object { v, len })
}

/// The attacher records of the sound segment `v` in the open file `fd`.
fn records_of(fd: &OwnedFd, v: &Validated) -> io::Result<Vec<attach::Seen>> {
    let mut words = vec![0u64; v.attach_slots * 2];
    // SAFETY: viewing the u64 buffer as bytes: same memory, u8 has no alignment.
    let bytes =
        unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), words.len() * 8) };
    let wanted = bytes.len();
    let read = rustix::io::pread(fd, bytes, v.attach_offset as u64)?;
    if read < wanted {
        return Ok(Vec::new());
    }
    // SAFETY: `words` holds `attach_slots` records' worth of 8-aligned integers, and a
    // Record is two atomic u64s (valid for every bit pattern); it outlives the slice.
    let records =
        unsafe { std::slice::from_raw_parts(words.as_ptr().cast::<Record>(), v.attach_slots) };
    Ok(attach::read_records(records))
}

/// The attachers of the segment at `path`: the recorded ones (alive if their lock is
/// held) and any other process holding a lock. `instance`: only if the file is still
/// that segment.
pub(super) fn attachers(path: &Path, instance: Option<u64>) -> io::Result<Vec<Attacher>> {
    let fd = open_file(path)?;
    let Found::Object { v: Ok(v), .. } = examine(&fd)? else { return Ok(Vec::new()) };
    if instance.is_some_and(|id| id != v.instance_id) {
        return Ok(Vec::new());
    }
    let live = attach::live_pids(fd.as_fd())?;
    let mut out: Vec<Attacher> = Vec::new();
    for seen in records_of(&fd, &v)?.into_iter().filter(|s| !s.detached) {
        let alive = live.contains(&seen.pid);
        match out.iter_mut().find(|a| a.pid == seen.pid) {
            Some(a) => a.alive |= alive,
            None => {
                out.push(Attacher { pid: seen.pid, alive, attached_at: Some(seen.attached_at) })
            }
        }
    }
    for pid in live {
        if !out.iter().any(|a| a.pid == pid) {
            out.push(Attacher { pid, alive: true, attached_at: None });
        }
    }
    out.sort_by_key(|a| a.pid);
    Ok(out)
}

/// If the open file is a stale object (nobody alive attached, and somebody died attached
/// or its creator never finished it, even an empty file): the pids that died attached.
/// `None` if it is not stale, or not a shmsync object at all.
pub(super) fn stale_attachers(fd: &OwnedFd) -> io::Result<Option<Vec<u32>>> {
    if !attach::live_pids(fd.as_fd())?.is_empty() {
        return Ok(None);
    }
    Ok(match examine(fd)? {
        Found::Foreign => None,
        // Its creator would hold its lock while making it: it died.
        Found::Unborn => Some(Vec::new()),
        Found::Object { v: Ok(v), .. } => {
            let mut dead: Vec<u32> =
                records_of(fd, &v)?.iter().filter(|s| !s.detached).map(|s| s.pid).collect();
            dead.sort_unstable();
            dead.dedup();
            (!dead.is_empty()).then_some(dead)
        }
        // Not initialised (its creator would hold its lock while at it), or damaged.
        Found::Object { v: Err(_), .. } => Some(Vec::new()),
    })
}

/// The shmsync files of `opts`'s directory: name, path, an open descriptor, and what
/// the header says. Foreign files, and files that vanish or cannot be opened, are left
/// out.
fn objects(opts: &Options) -> io::Result<impl Iterator<Item = (String, PathBuf, OwnedFd, Found)>> {
    let dir = opts.dir.as_deref().unwrap_or(Path::new(super::options::SHM_DIR));
    Ok(std::fs::read_dir(dir)?.filter_map(|entry| {
        let entry = entry.ok()?;
        if !entry.file_type().is_ok_and(|t| t.is_file()) {
            return None;
        }
        let name = entry.file_name().to_str()?.to_owned();
        validate_name(&name).ok()?;
        let path = entry.path();
        let fd = open_file(&path).ok()?;
        match examine(&fd) {
            Ok(found @ Found::Object { .. }) => Some((name, path, fd, found)),
            _ => None,
        }
    }))
}

/// The listing entry of a shmsync file, sound (`v` is `Ok`) or not (the problem).
fn describe(name: String, path: PathBuf, v: Result<Validated, Problem>, len: u64) -> SegmentInfo {
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    match v {
        Ok(v) => SegmentInfo {
            name,
            path,
            kind: Some(v.kind),
            instance_id: v.instance_id,
            creator_pid: v.creator_pid,
            len,
            element_size: v.element.size,
            type_tag: v.element.type_tag,
            capacity: v.capacity,
            created_at: v.created_at,
            problem: None,
        },
        Err(problem) => SegmentInfo {
            name,
            path,
            kind: None,
            instance_id: 0,
            creator_pid: 0,
            len,
            element_size: 0,
            type_tag: 0,
            capacity: 0,
            created_at: 0,
            problem: Some(problem.describe().to_owned()),
        },
    }
}

/// Every shmsync object in `opts`'s directory (`/dev/shm` unless
/// [`Options::dir`](crate::Options::dir) says otherwise), sorted by name.
///
/// Files that are not shmsync objects (other programs' shared memory, other users'
/// files, names shmsync would not give) are skipped; a shmsync file that cannot be read
/// as an object is listed with [`SegmentInfo::is_corrupted`] set and the reason in
/// [`SegmentInfo::problem`]. Each file is read with `pread`, never mapped.
///
/// # Errors
///
/// The directory cannot be read. Files that vanish or cannot be opened while it is
/// listed are skipped.
///
/// # Examples
///
/// ```
/// use shmsync::{Event, Options};
/// # let dir = std::env::temp_dir().join(format!("doc-segments-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir).unwrap();
/// let opts = Options::new().dir(&dir);
/// let _ready = Event::create_with("ready", &opts)?;
/// let listed = shmsync::segments(&opts)?;
/// assert_eq!(listed.len(), 1);
/// assert_eq!(listed[0].name(), "ready");
/// assert!(listed[0].attached()[0].is_alive()); // this process
/// # drop(_ready);
/// # Event::unlink_with("ready", &opts)?;
/// # std::fs::remove_dir(&dir).unwrap();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn segments(opts: &Options) -> io::Result<Vec<SegmentInfo>> {
    let mut out = Vec::new();
    for (name, path, _fd, found) in objects(opts)? {
        let Found::Object { v, len } = found else { continue };
        out.push(describe(name, path, v, len));
    }
    out.sort_by(|a, b| a.name().cmp(b.name()));
    Ok(out)
}

/// Unlinks every shmsync object in `opts`'s directory that no live process holds, and
/// returns their names (sorted).
///
/// "Holds" is proved by the lock each handle keeps on its segment's file, which the
/// kernel drops when the process dies: pids are never trusted. An object is kept while
/// any process has it open, or is opening or creating it at that moment: `gc` takes a
/// lock on each file that openers also take while they attach, and an opener that finds
/// its file unlinked meanwhile opens the name again. Objects whose creator died before
/// finishing them are removed too; corrupted ones that nobody holds as well (see
/// [`segments`] to look first). Files that are not shmsync objects are never touched.
///
/// # Errors
///
/// The directory cannot be read.
///
/// # Examples
///
/// ```
/// use shmsync::{Event, Options};
/// # let dir = std::env::temp_dir().join(format!("doc-gc-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir).unwrap();
/// let opts = Options::new().dir(&dir);
/// let held = Event::create_with("held", &opts)?;
/// drop(Event::create_with("dropped", &opts)?); // nobody holds it now
/// assert_eq!(shmsync::gc(&opts)?, ["dropped"]);
/// assert_eq!(shmsync::segments(&opts)?.len(), 1); // "held" stays
/// # drop(held);
/// # Event::unlink_with("held", &opts)?;
/// # std::fs::remove_dir(&dir).unwrap();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn gc(opts: &Options) -> io::Result<Vec<String>> {
    collect(opts, true)
}

/// What [`gc`] would remove now, without removing anything.
///
/// # Errors
///
/// As [`gc`].
pub fn gc_dry_run(opts: &Options) -> io::Result<Vec<String>> {
    collect(opts, false)
}

fn collect(opts: &Options, unlink: bool) -> io::Result<Vec<String>> {
    let mut removed = Vec::new();
    for (name, path, fd, found) in objects(opts)? {
        // An unfinished file whose creator holds no lock died... or took its lock a
        // microsecond after writing the magic number: spare the young ones.
        let unfinished = matches!(found, Found::Object { v: Err(Problem::Uninitialised), .. });
        if unfinished && !older_than(&fd, std::time::Duration::from_secs(1)) {
            continue;
        }
        // Nobody attaches while we hold the gate; someone attaching now keeps it.
        if !attach::close_gate(fd.as_fd()).unwrap_or(false) {
            continue;
        }
        if !attach::live_pids(fd.as_fd()).is_ok_and(|pids| pids.is_empty()) {
            continue;
        }
        if !attach::still_named(fd.as_fd(), &path) {
            continue;
        }
        if unlink && rustix::fs::unlink(&path).is_err() {
            continue;
        }
        removed.push(name);
        // Dropping `fd` opens the gate: openers blocked on it find the name gone.
    }
    removed.sort();
    Ok(removed)
}

/// The object `name` in `opts`'s directory as `segments` would list it, and up to
/// `prefix` bytes of its payload (read with `pread`, not mapped, without attaching): for
/// [`inspect`](crate::inspect).
///
/// # Errors
///
/// `InvalidName`, `NotFound`, `PermissionDenied`; `Corrupted` for a file that is not a
/// shmsync object.
#[cfg(not(loom))] // for `inspect`, which loom builds leave out
pub(crate) fn read_object(
    name: &str,
    opts: &Options,
    prefix: usize,
) -> Result<(SegmentInfo, Vec<u8>), OpenError> {
    validate_name(name)?;
    let path = opts.path_of(name);
    let fd = open_file(&path).map_err(|e| open_error(e).named(name))?;
    let Found::Object { v, len } = examine(&fd).map_err(open_error)? else {
        return Err(OpenError::Corrupted);
    };
    let info = describe(name.to_owned(), path, v, len);
    let Ok(v) = v else { return Ok((info, Vec::new())) };
    let mut payload = vec![0u8; prefix.min(v.payload_len)];
    let read =
        rustix::io::pread(&fd, &mut payload, v.payload_offset as u64).map_err(OpenError::from)?;
    payload.truncate(read);
    Ok((info, payload))
}

/// An I/O error as the `OpenError` its errno stands for.
#[cfg(not(loom))]
fn open_error(e: io::Error) -> OpenError {
    match rustix::io::Errno::from_io_error(&e) {
        Some(errno) => OpenError::from(errno),
        None => OpenError::Io(e),
    }
}

/// Whether the open file was last written more than `age` ago.
fn older_than(fd: &OwnedFd, age: std::time::Duration) -> bool {
    let Ok(st) = rustix::fs::fstat(fd) else { return false };
    let written = std::time::UNIX_EPOCH
        + std::time::Duration::new(st.st_mtime as u64, st.st_mtime_nsec as u32);
    std::time::SystemTime::now().duration_since(written).is_ok_and(|d| d > age)
}
