//! Who has a segment open, in a way a recycled pid cannot fake.
//!
//! Every handle holds an *open-file-description* lock (`F_OFD_SETLK`) on its segment file:
//! a read lock on the byte `LOCK_BASE + pid`, far beyond the file's end (locks may cover
//! bytes a file does not have). The kernel drops it when the handle's descriptor is closed,
//! which a dead process's always is, and anyone can find it with `F_OFD_GETLK`. Read locks
//! never conflict with each other, so any number of handles (of one process or many) hold
//! theirs at once, and the offset names the process: one `F_OFD_GETLK` per live process
//! enumerates them all, however many there are.
//!
//! The lock proves who is alive; a table of records at the end of the segment remembers
//! who was there, so a process that died attached is still listed (as dead), and `create`
//! can tell an object left by a crash (a record `ATTACHED`, no lock) from one every user
//! left cleanly (records `DETACHED`). The table has [`SLOTS`] records; a handle that finds
//! none free still holds its lock, so it counts as alive for `gc` and is listed, only
//! without a record.
//!
//! `gc` and `Stale::Replace` decide "nobody is attached" and then unlink or replace the
//! name. Both hold a write lock on the byte [`GATE`] meanwhile, and every opener and
//! creator takes a read lock on it around taking its attach lock, then checks the name
//! still leads to its file: so either the collector saw the opener's lock, or the opener
//! sees the name gone and tries again.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;

use crate::loom::{AtomicU64, Ordering};

/// The attach lock of process `pid` is the byte `LOCK_BASE + pid`.
const LOCK_BASE: i64 = 1 << 40;
/// Pids are below 2^22 on Linux (`pid_max` at most 4,194,304).
const PID_LIMIT: i64 = 1 << 22;
/// Collectors write-lock this byte while they decide and unlink; attachers read-lock it.
const GATE: i64 = LOCK_BASE - 1;

/// Records in a segment's attacher table.
pub(crate) const SLOTS: u32 = 32;
/// Bytes per record.
pub(crate) const RECORD_LEN: u64 = 16;

const FREE: u32 = 0;
const ATTACHED: u32 = 1;
const DETACHED: u32 = 2;

/// One attacher record: `state << 32 | pid` in one word (claimed with one
/// compare-exchange) and when it attached (seconds since the Unix epoch).
#[repr(C)]
pub(crate) struct Record {
    word: AtomicU64,
    attached_at: AtomicU64,
}

#[cfg(not(loom))]
const _: () = assert!(size_of::<Record>() == RECORD_LEN as usize);

fn pack(state: u32, pid: u32) -> u64 {
    (u64::from(state) << 32) | u64::from(pid)
}

fn unpack(word: u64) -> (u32, u32) {
    ((word >> 32) as u32, word as u32)
}

/// A record as read: who, whether it left cleanly, and since when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Seen {
    pub(crate) pid: u32,
    pub(crate) detached: bool,
    pub(crate) attached_at: u64,
}

/// Reads a table (a hostile one included: states it does not know are skipped).
pub(crate) fn read_records(records: &[Record]) -> Vec<Seen> {
    records
        .iter()
        .filter_map(|r| {
            let (state, pid) = unpack(r.word.load(Ordering::Acquire));
            let detached = match state {
                ATTACHED => false,
                DETACHED => true,
                _ => return None,
            };
            Some(Seen { pid, detached, attached_at: r.attached_at.load(Ordering::Relaxed) })
        })
        .collect()
}

/// Claims a record for this process: a free one, else one whose holder left cleanly,
/// else one whose holder died (its lock is gone). `None` if all 32 are live.
pub(crate) fn claim(records: &[Record], fd: BorrowedFd<'_>, pid: u32) -> Option<usize> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let take = |i: usize, seen: u64| {
        let r = &records[i];
        let won = r
            .word
            .compare_exchange(seen, pack(ATTACHED, pid), Ordering::AcqRel, Ordering::Relaxed)
            .is_ok();
        if won {
            r.attached_at.store(now, Ordering::Relaxed);
        }
        won
    };
    for pass in 0..3 {
        for (i, r) in records.iter().enumerate() {
            let seen = r.word.load(Ordering::Acquire);
            let (state, holder) = unpack(seen);
            let eligible = match pass {
                0 => state == FREE,
                1 => state == DETACHED,
                // Overwriting a dead attacher's record loses the trace of its crash, so
                // only when nothing else is left.
                _ => state != ATTACHED || !is_alive(fd, holder).unwrap_or(true),
            };
            if eligible && take(i, seen) {
                return Some(i);
            }
        }
    }
    None
}

/// Marks record `slot` as left cleanly (if it is still ours).
pub(crate) fn release(records: &[Record], slot: usize, pid: u32) {
    if let Some(r) = records.get(slot) {
        let _ = r.word.compare_exchange(
            pack(ATTACHED, pid),
            pack(DETACHED, pid),
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
    }
}

/// `fcntl(F_OFD_*)` on the byte range `[start, start + len)`.
fn ofd(
    fd: BorrowedFd<'_>,
    cmd: libc::c_int,
    kind: libc::c_int,
    start: i64,
    len: i64,
) -> io::Result<libc::flock> {
    // SAFETY: an all-zero flock is a valid value (l_pid must be 0 for OFD commands).
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = kind as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock.l_start = start;
    lock.l_len = len;
    // SAFETY: a valid descriptor and a valid flock for the call's duration.
    if unsafe { libc::fcntl(fd.as_raw_fd(), cmd, &mut lock) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(lock)
}

/// Tries to take (or with `F_UNLCK` drop) a lock without waiting: `Ok(false)` if another
/// description holds a conflicting one.
fn try_lock(fd: BorrowedFd<'_>, kind: libc::c_int, start: i64) -> io::Result<bool> {
    match ofd(fd, libc::F_OFD_SETLK, kind, start, 1) {
        Ok(_) => Ok(true),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EACCES)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The first lock held by another description in `[start, start + len)`, if any: its
/// start.
fn first_lock(fd: BorrowedFd<'_>, start: i64, len: i64) -> io::Result<Option<i64>> {
    let found = ofd(fd, libc::F_OFD_GETLK, libc::F_WRLCK, start, len)?;
    Ok((i32::from(found.l_type) != libc::F_UNLCK).then_some(found.l_start))
}

/// Whether a description other than `fd`'s holds process `pid`'s attach lock.
pub(crate) fn is_alive(fd: BorrowedFd<'_>, pid: u32) -> io::Result<bool> {
    if i64::from(pid) >= PID_LIMIT || pid == 0 {
        return Ok(false);
    }
    Ok(first_lock(fd, LOCK_BASE + i64::from(pid), 1)?.is_some())
}

/// Every process holding an attach lock on the file (other than through `fd` itself).
pub(crate) fn live_pids(fd: BorrowedFd<'_>) -> io::Result<Vec<u32>> {
    let mut pids = Vec::new();
    let mut at = LOCK_BASE;
    while at < LOCK_BASE + PID_LIMIT {
        match first_lock(fd, at, LOCK_BASE + PID_LIMIT - at)? {
            Some(start) if start >= at => {
                pids.push((start - LOCK_BASE) as u32);
                at = start + 1;
            }
            _ => break,
        }
    }
    Ok(pids)
}

/// Takes this process's attach lock through `fd`, with the gate held as a reader so that
/// no collector decides meanwhile. Waits at most until `deadline` for a collector to
/// finish.
pub(crate) fn lock(
    fd: BorrowedFd<'_>,
    pid: u32,
    deadline: &crate::wake::futex::Deadline,
) -> io::Result<()> {
    if i64::from(pid) >= PID_LIMIT {
        return Err(io::Error::new(io::ErrorKind::Unsupported, "a pid beyond Linux's limit"));
    }
    let mut pause = std::time::Duration::from_micros(20);
    while !try_lock(fd, libc::F_RDLCK, GATE)? {
        if deadline.has_passed() {
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "another process kept collecting this object",
            ));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(std::time::Duration::from_millis(5));
    }
    let taken = try_lock(fd, libc::F_RDLCK, LOCK_BASE + i64::from(pid));
    let _ = try_lock(fd, libc::F_UNLCK, GATE);
    match taken {
        Ok(true) => Ok(()),
        Ok(false) => Err(io::Error::other("a read lock was refused")),
        Err(e) => Err(e),
    }
}

/// A collector's hold on the gate: nobody attaches while it is held. `None` if an
/// attacher is in the middle of attaching.
pub(crate) fn close_gate(fd: BorrowedFd<'_>) -> io::Result<bool> {
    try_lock(fd, libc::F_WRLCK, GATE)
}

/// Whether `fd` and `path` are the same file (the name was not unlinked or replaced).
pub(crate) fn still_named(fd: BorrowedFd<'_>, path: &Path) -> bool {
    rustix::fs::fstat(fd).is_ok_and(|st| still_names(path, &st))
}

/// Whether `path` still leads to the file whose `fstat` is `ours`.
pub(crate) fn still_names(path: &Path, ours: &rustix::fs::Stat) -> bool {
    rustix::fs::stat(path).is_ok_and(|b| ours.st_dev == b.st_dev && ours.st_ino == b.st_ino)
}
