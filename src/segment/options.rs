//! Per-call settings for creating and opening named objects.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where POSIX shared-memory objects live on Linux: `shm_open("/jobs")` is
/// `open("/dev/shm/jobs", O_NOFOLLOW | O_CLOEXEC)` in glibc and musl alike.
pub(crate) const SHM_DIR: &str = "/dev/shm";

/// Settings for [`create_with`](crate::Shared::create_with),
/// [`open_with`](crate::Shared::open_with) and their kin: a by-value builder.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// let opts = shmsync::Options::new()
///     .mode(0o600)
///     .dir(std::env::temp_dir())
///     .open_timeout(Duration::from_millis(250));
/// # let _ = opts;
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    pub(crate) mode: u32,
    pub(crate) dir: Option<PathBuf>,
    pub(crate) open_timeout: Duration,
    pub(crate) stale: Stale,
    pub(crate) scope: Option<super::scope::ScopeRef>,
}

/// What `create` and `open_or_create` do when the name holds a *stale* object: one that
/// no live process holds and that a process died holding (killed or aborted while
/// attached), or whose creator died before finishing it. Set with
/// [`Options::stale`].
///
/// An object every user left cleanly (dropped its handles) is not stale: it is kept
/// data, and `open_or_create` opens it whatever this says. `open` never looks: it opens
/// what is there.
///
/// # Examples
///
/// ```
/// use shmsync::{Options, Stale};
/// let strict = Options::new().stale(Stale::Error); // tell me, and I decide
/// # let _ = strict;
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Stale {
    /// Replace it with a fresh object, atomically (a `rename` over the name): the
    /// default. A new run after a crash starts from an empty queue, not from what the
    /// dead run left, and processes that open the name meanwhile get the new object.
    #[default]
    Replace,
    /// Use it as it is: `open_or_create` opens the dead run's object (with its contents)
    /// and `create` fails with `AlreadyExists`. What shmsync did before it knew.
    Reuse,
    /// Fail with [`OpenError::Stale`](crate::OpenError::Stale), naming the dead
    /// attachers: the caller decides (`unlink` and create, `gc`, or open it).
    Error,
}

impl Options {
    /// The defaults: mode `0o600`, the POSIX shared-memory directory (`/dev/shm`), an
    /// open timeout of one second, and [`Stale::Replace`].
    pub fn new() -> Self {
        Self {
            mode: 0o600,
            dir: None,
            open_timeout: Duration::from_secs(1),
            stale: Stale::Replace,
            scope: None,
        }
    }

    /// Objects created with these options are unlinked when `owner` is dropped (see
    /// [`Scope`](crate::Scope)). Opening is unaffected: a scope owns what it created.
    pub fn scope(mut self, owner: &super::Scope) -> Self {
        self.scope = Some(owner.handle());
        self
    }

    /// What `create` and `open_or_create` do with a stale object at the name (one left
    /// by a crash): see [`Stale`]. The default is [`Stale::Replace`].
    pub fn stale(mut self, stale: Stale) -> Self {
        self.stale = stale;
        self
    }

    /// The permission bits of a created segment, applied with `fchmod` after creation so
    /// that the umask can neither widen nor narrow them.
    ///
    /// The mode must contain owner read and write (`0o600`) and no bits beyond `0o777`;
    /// `create` reports anything else as [`OpenError::Io`](crate::OpenError::Io) with
    /// `InvalidInput`. Openers must be the file's owner whatever the mode (see
    /// [`OpenError::PermissionDenied`](crate::OpenError::PermissionDenied)), so wider
    /// modes only matter to tools that read the file directly.
    pub fn mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    /// Puts the object's file at exactly `<dir>/<name>` instead of in `/dev/shm`: for
    /// tests, and for containers whose `/dev/shm` is small. For cross-process speed `dir`
    /// should be on a tmpfs; any file system that supports shared mappings works.
    pub fn dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.dir = Some(dir.as_ref().to_path_buf());
        self
    }

    /// How long `open` waits for a creator that is still initialising the segment before
    /// it gives up with [`OpenError::NotInitialized`](crate::OpenError::NotInitialized).
    /// `Duration::ZERO` checks once and does not wait.
    pub fn open_timeout(mut self, timeout: Duration) -> Self {
        self.open_timeout = timeout;
        self
    }

    /// The file that backs the object called `name` (already validated).
    pub(crate) fn path_of(&self, name: &str) -> PathBuf {
        self.dir.as_deref().unwrap_or(Path::new(SHM_DIR)).join(name)
    }
}

impl Default for Options {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_builder() {
        let d = Options::default();
        assert_eq!(d, Options::new());
        assert_eq!(d.mode, 0o600);
        assert_eq!(d.open_timeout, Duration::from_secs(1));
        assert_eq!(d.path_of("jobs"), Path::new("/dev/shm/jobs"));
        let o = Options::new().mode(0o640).dir("/tmp/x").open_timeout(Duration::ZERO);
        assert_eq!((o.mode, o.open_timeout), (0o640, Duration::ZERO));
        assert_eq!(o.path_of("jobs"), Path::new("/tmp/x/jobs"));
    }
}
