//! [`Inheritable`]: an anonymous object's descriptor, handed to a child process.

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};

use crate::OpenError;

/// An anonymous object (made by `create_anonymous`, in a sealed `memfd`) as a child
/// process inherits it: the descriptor's number. Plain data, so it travels as a
/// [`Process`](crate::Process) argument; give it to
/// [`process::Builder::inherit`](crate::process::Builder::inherit) (or
/// [`PoolBuilder::inherit`](crate::process::PoolBuilder::inherit)) so that the child
/// really has that descriptor, and open it there with the type's `open_inherited`.
///
/// The descriptor stays close-on-exec in this process: only children started with
/// `inherit` get it, not every program this process runs.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Inheritable {
    pub(crate) fd: i32,
    _reserved: u32,
}

// SAFETY: repr(C) of two 4-byte integers: no padding, every bit pattern valid.
unsafe impl bytemuck::Zeroable for Inheritable {}
// SAFETY: as above; Copy and 'static.
unsafe impl bytemuck::Pod for Inheritable {}

#[cfg_attr(loom, allow(dead_code))] // the queues' handles are not built under loom
impl Inheritable {
    pub(crate) fn of(fd: &OwnedFd) -> Self {
        Self { fd: fd.as_raw_fd(), _reserved: 0 }
    }

    /// The descriptor number, as the child sees it.
    pub fn fd(&self) -> RawFd {
        self.fd
    }

    /// A descriptor of our own for the inherited one, after checking that it is open and
    /// is a sealed memfd (the only kind `create_anonymous` makes).
    pub(crate) fn take(&self) -> Result<OwnedFd, OpenError> {
        // SAFETY: F_GETFD on any integer is harmless: it fails with EBADF if not open.
        if self.fd < 0 || unsafe { libc::fcntl(self.fd, libc::F_GETFD) } == -1 {
            return Err(OpenError::NotFound { name: format!("inherited descriptor {}", self.fd) });
        }
        // SAFETY: just checked open; borrowed only for the dup below.
        let borrowed = unsafe { BorrowedFd::borrow_raw(self.fd) };
        let seals = rustix::fs::fcntl_get_seals(borrowed).map_err(|_| OpenError::Corrupted)?;
        let needed = rustix::fs::SealFlags::SHRINK | rustix::fs::SealFlags::GROW;
        if !seals.contains(needed) {
            return Err(OpenError::Corrupted);
        }
        Ok(rustix::io::fcntl_dupfd_cloexec(borrowed, 0)?)
    }
}
