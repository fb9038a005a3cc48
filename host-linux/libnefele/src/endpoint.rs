//! Taking over the endpoint descriptor a process inherited from its agent.
//!
//! The only `unsafe` of the crate outside the C ABI: turning a descriptor number
//! from the environment into an owned socket. [`adopt`] is called at most once per
//! program (the caller guarantees it), and refuses a descriptor that is not open or
//! not a Unix socket, so the stream it returns owns an open socket nobody else in
//! this program owns.

#![allow(unsafe_code)]

use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::net::UnixStream;

/// The Unix stream socket open at `fd`, owned from now on.
pub(crate) fn adopt(fd: RawFd) -> std::io::Result<UnixStream> {
    // SAFETY: `fcntl(F_GETFD)` only reads the descriptor's flags; it fails with
    // EBADF for a closed descriptor, which we report instead of adopting it.
    if unsafe { fcntl_getfd(fd) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the descriptor is open (checked above) and, by the caller's
    // contract (once per program, from NEFELE_FD), owned by nothing else here.
    let stream = unsafe { UnixStream::from_raw_fd(fd) };
    // Not a Unix socket: local_addr fails (ENOTSOCK, or a non-Unix family).
    stream.local_addr()?;
    Ok(stream)
}

extern "C" {
    fn fcntl(fd: RawFd, cmd: std::ffi::c_int, ...) -> std::ffi::c_int;
}

/// `fcntl(fd, F_GETFD)`.
unsafe fn fcntl_getfd(fd: RawFd) -> std::ffi::c_int {
    const F_GETFD: std::ffi::c_int = 1;
    fcntl(fd, F_GETFD)
}
