//! Roles held for a whole process: the keeper thread.
//!
//! A queue's producer or consumer role, or a pipe's end, belongs to a *handle*, and handles
//! may move between threads. The kernel's robust list, which reports a lock holder's death,
//! is per thread. So the role locks of a process are all held by one thread that lives as
//! long as the process: the keeper, started on first use. When the process dies, the
//! keeper dies with it, the kernel marks every role lock it held `OWNER_DIED` and wakes a
//! waiter on each, and the role can be claimed again. Handles talk to the keeper only when
//! they are created and dropped.
//!
//! After a `fork` the child has no keeper (only the forking thread survives); the first
//! claim in the child starts a new one.

use std::sync::Mutex;
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};

use crate::error::{OpenError, TryLockError};
use crate::raw::{LockGuard, RawLock};

/// Why a role could not be claimed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ClaimError {
    /// A live handle, in this process or another, holds the role.
    Busy {
        /// The holding process, where known.
        holder: Option<u32>,
    },
    /// The role lock was made not recoverable (only a hostile peer can do that to a role,
    /// since role locks protect no data): treat the object as corrupted.
    NotRecoverable,
    /// The keeper thread could not be started or stopped answering.
    KeeperGone,
}

impl ClaimError {
    /// The one mapping of a failed claim of `role` in the object `name` to what `create`
    /// and `open` report.
    pub(crate) fn into_open_error(self, name: &str, role: &str) -> OpenError {
        match self {
            ClaimError::Busy { holder } => {
                OpenError::Busy { name: name.to_owned(), role: role.to_owned(), holder }
            }
            ClaimError::NotRecoverable => OpenError::Corrupted,
            ClaimError::KeeperGone => {
                OpenError::Io(std::io::Error::other("the keeper thread is gone"))
            }
        }
    }
}

/// How a successful claim found the role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Claimed {
    /// Free: never held, or released by its last holder.
    Free,
    /// Its last holder's process died holding it.
    AfterDeath,
}

enum Request {
    Claim { lock: usize, reply: SyncSender<Result<Claimed, ClaimError>> },
    Release { lock: usize, reply: SyncSender<()> },
}

/// The running keeper: the process it belongs to and its mailbox.
struct Keeper {
    pid: u32,
    mailbox: Sender<Request>,
}

static KEEPER: Mutex<Option<Keeper>> = Mutex::new(None);

/// A role held by the keeper on behalf of a handle; released when dropped.
#[derive(Debug)]
pub(crate) struct RoleClaim {
    lock: usize,
}

/// Claims the role guarded by `lock` for this process.
///
/// # Safety
///
/// `lock` must stay mapped at the same address until the returned claim is dropped.
pub(crate) unsafe fn claim(lock: &RawLock) -> Result<(RoleClaim, Claimed), ClaimError> {
    let addr = lock as *const RawLock as usize;
    let (reply, answer) = sync_channel(1);
    send(Request::Claim { lock: addr, reply })?;
    let claimed = match answer.recv().map_err(|_| ClaimError::KeeperGone)? {
        Err(ClaimError::Busy { .. }) => {
            return Err(ClaimError::Busy { holder: lock.holder_tid().and_then(process_of) });
        }
        other => other?,
    };
    Ok((RoleClaim { lock: addr }, claimed))
}

/// The process that thread `tid` belongs to (the `Tgid` of `/proc/<tid>/status`), if the
/// thread is visible from here: the holder of a role is its process's keeper thread.
fn process_of(tid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("Tgid:"))?;
    line.trim().parse().ok()
}

impl Drop for RoleClaim {
    fn drop(&mut self) {
        let (reply, done) = sync_channel(1);
        // Waits for the release, so the caller may unmap the lock afterwards. If the
        // keeper is gone (this process is being torn down), the kernel releases it.
        if send(Request::Release { lock: self.lock, reply }).is_ok() {
            let _ = done.recv();
        }
    }
}

/// Sends a request to this process's keeper, starting one if there is none yet.
fn send(request: Request) -> Result<(), ClaimError> {
    let mut keeper = KEEPER.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let pid = std::process::id();
    if keeper.as_ref().is_none_or(|k| k.pid != pid) {
        let (mailbox, inbox) = channel();
        std::thread::Builder::new()
            .name("shmsync-keeper".into())
            .spawn(move || serve(inbox))
            .map_err(|_| ClaimError::KeeperGone)?;
        *keeper = Some(Keeper { pid, mailbox });
    }
    let k = keeper.as_ref().ok_or(ClaimError::KeeperGone)?;
    k.mailbox.send(request).map_err(|_| ClaimError::KeeperGone)
}

/// The keeper's loop. It holds each claimed lock's guard until told to release it, and
/// never exits while the process lives (the mailbox's sender stays in `KEEPER`).
fn serve(inbox: Receiver<Request>) {
    let mut held: Vec<(usize, LockGuard<'static>)> = Vec::new();
    for request in inbox {
        match request {
            Request::Claim { lock, reply } => {
                // SAFETY: `claim`'s contract keeps the lock mapped until its release.
                let raw: &'static RawLock = unsafe { &*(lock as *const RawLock) };
                let outcome = match raw.try_lock() {
                    Ok(guard) => {
                        held.push((lock, guard));
                        Ok(Claimed::Free)
                    }
                    Err(TryLockError::OwnerDied(mut guard)) => {
                        // A role protects no data: there is nothing to repair.
                        guard.mark_consistent();
                        held.push((lock, guard));
                        Ok(Claimed::AfterDeath)
                    }
                    Err(TryLockError::WouldBlock) => Err(ClaimError::Busy { holder: None }),
                    Err(_) => Err(ClaimError::NotRecoverable),
                };
                let _ = reply.send(outcome);
            }
            Request::Release { lock, reply } => {
                if let Some(i) = held.iter().position(|(l, _)| *l == lock) {
                    drop(held.swap_remove(i));
                }
                let _ = reply.send(());
            }
        }
    }
}

#[cfg(all(test, not(loom), not(miri)))]
mod tests {
    use super::*;

    #[test]
    fn a_role_is_busy_until_released_and_free_again_after() {
        let lock = Box::new(RawLock::new());
        // SAFETY: the box outlives every claim in this test.
        let (first, how) = unsafe { claim(&lock) }.unwrap();
        assert_eq!(how, Claimed::Free);
        assert!(lock.is_locked());
        // SAFETY: as above.
        assert!(matches!(unsafe { claim(&lock) }, Err(ClaimError::Busy { .. })));
        // The role does not belong to this thread: another thread sees it held too.
        std::thread::scope(|s| {
            s.spawn(|| assert!(lock.try_lock().is_err()));
        });
        drop(first);
        assert!(!lock.is_locked());
        // SAFETY: as above.
        let (again, how) = unsafe { claim(&lock) }.unwrap();
        assert_eq!(how, Claimed::Free);
        drop(again);
    }

    #[test]
    fn claims_survive_the_thread_that_made_them() {
        let lock = Box::new(RawLock::new());
        let claimed = std::thread::scope(|s| {
            // SAFETY: the box outlives the claim.
            s.spawn(|| unsafe { claim(&lock) }.unwrap().0).join().unwrap()
        });
        // The claiming thread has exited; the role is still held, not "died".
        assert!(lock.is_locked());
        assert!(matches!(lock.try_lock(), Err(TryLockError::WouldBlock)));
        drop(claimed);
        assert!(!lock.is_locked());
    }

    #[test]
    fn a_killed_holder_leaves_the_role_claimable_after_death() {
        use crate::layout::ObjectKind;
        use crate::segment::Options;
        use crate::segment::object::Object;
        use std::io::BufRead;
        use std::time::Duration;

        const CHILD: &str = "SHMSYNC_KEEPER_TEST_CHILD";
        let opts = Options::new().dir(std::env::temp_dir());
        if let Ok(name) = std::env::var(CHILD) {
            let lock = Object::<RawLock>::open(&name, ObjectKind::Lock, &opts).unwrap();
            // SAFETY: `lock` outlives the claim (the process is killed holding both).
            let claimed = unsafe { claim(lock.get()) }.unwrap();
            println!("\n@@claimed");
            std::thread::sleep(Duration::from_secs(30));
            drop(claimed);
            return;
        }

        let name = format!("shmsync-keeper-test-{}", std::process::id());
        let lock = Object::<RawLock>::create(&name, ObjectKind::Lock, &opts, |_| {}).unwrap();
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "rings::keeper::tests::a_killed_holder_leaves_the_role_claimable_after_death",
                "--exact",
                "--nocapture",
            ])
            .env(CHILD, &name)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("@@claimed") {
                    let _ = tx.send(());
                }
            }
        });
        let claimed_in_child = rx.recv_timeout(Duration::from_secs(30)).is_ok();
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(claimed_in_child, "the child never claimed the role");

        // SAFETY: `lock` outlives the claim.
        let (claim_after, how) = unsafe { claim(lock.get()) }.unwrap();
        assert_eq!(how, Claimed::AfterDeath);
        drop(claim_after);
        crate::segment::Segment::unlink(&name, &opts).unwrap();
    }
}
