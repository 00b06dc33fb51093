//! [`Scope`]: objects that are unlinked when their creator's scope ends.

use super::UnlinkOnDrop;
use std::sync::{Arc, Mutex, PoisonError};

/// Unlinks every object created through it (with [`Options::scope`](crate::Options::scope))
/// when it is dropped, on a panic's unwinding too: Python's `SharedMemoryManager`,
/// without a manager process.
///
/// Handles keep working after their names are gone (a mapping outlives its name), and
/// other processes that opened the objects keep theirs; only the names go, so nothing is
/// left in `/dev/shm`. If the process is killed before the scope ends, its objects are
/// left with a dead attacher, which [`gc`](crate::gc) removes (and which `create` and
/// `open_or_create` replace by default, see [`Stale`](crate::Stale)).
///
/// An object is unlinked only if its name still leads to it: one that was unlinked and
/// created again by someone else meanwhile is not touched.
///
/// # Examples
///
/// ```
/// use shmsync::{Event, Options, Scope};
/// # let dir = std::env::temp_dir().join(format!("doc-scope-{}", std::process::id()));
/// # std::fs::create_dir_all(&dir).unwrap();
/// {
///     let owner = Scope::new();
///     let opts = Options::new().dir(&dir).scope(&owner);
///     let _done = Event::create_with("done", &opts)?;
///     assert!(dir.join("done").exists());
/// } // `owner` drops here
/// assert!(!dir.join("done").exists());
/// # std::fs::remove_dir(&dir).unwrap();
/// # Ok::<(), shmsync::OpenError>(())
/// ```
#[derive(Debug, Default)]
pub struct Scope {
    owned: ScopeRef,
}

/// What [`Options`](crate::Options) keeps of a scope: the shared list of its objects.
#[derive(Clone, Debug, Default)]
pub(crate) struct ScopeRef(Arc<Mutex<Vec<UnlinkOnDrop>>>);

impl PartialEq for ScopeRef {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for ScopeRef {}

impl ScopeRef {
    /// Adds the object just created at `path`, the file `fd` is open on.
    pub(crate) fn register(&self, path: &std::path::Path, fd: std::os::fd::BorrowedFd<'_>) {
        if let Ok(st) = rustix::fs::fstat(fd) {
            let owned = UnlinkOnDrop::of(path, &st);
            self.0.lock().unwrap_or_else(PoisonError::into_inner).push(owned);
        }
    }
}

impl Scope {
    /// An empty scope.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many objects were created through the scope so far.
    pub fn len(&self) -> usize {
        self.owned.0.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Whether no object was created through the scope yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn handle(&self) -> ScopeRef {
        self.owned.clone()
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        // Each unlinks its name if the name still leads to its file.
        drop(std::mem::take(&mut *self.owned.0.lock().unwrap_or_else(PoisonError::into_inner)));
    }
}
