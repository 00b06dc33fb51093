//! Raw descriptor I/O for the programs that race shmsync against the kernel (the
//! showdown example and the pipe benchmarks): whole buffers, no std wrappers in the way.
//!
//! Included with `#[path]`; not a program of its own.

use std::os::fd::RawFd;

/// Writes all of `buf` to `fd`.
pub fn write_all(fd: RawFd, buf: &[u8]) {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: writes from a live buffer.
        let n = unsafe { libc::write(fd, buf[done..].as_ptr().cast(), buf.len() - done) };
        assert!(n > 0, "write failed: {}", std::io::Error::last_os_error());
        done += n as usize;
    }
}

/// Reads exactly `buf.len()` bytes from `fd`, spinning on `EAGAIN` (a busy-polled,
/// non-blocking descriptor).
pub fn read_exact(fd: RawFd, buf: &mut [u8]) {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: reads into a live buffer.
        let n = unsafe { libc::read(fd, buf[done..].as_mut_ptr().cast(), buf.len() - done) };
        if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock {
            std::hint::spin_loop();
            continue;
        }
        assert!(n > 0, "read failed or the peer left: {}", std::io::Error::last_os_error());
        done += n as usize;
    }
}
