//! Taking over the endpoint descriptor a process inherited from its agent, and
//! writing to the agent without `SIGPIPE`.
//!
//! The only `unsafe` of the crate outside the C ABI: turning a descriptor number
//! from the environment into an owned socket, and `send(2)` with `MSG_NOSIGNAL`.
//! [`adopt`] is called at most once per
//! program (the caller guarantees it), and refuses a descriptor that is not open or
//! not a Unix socket, so the stream it returns owns an open socket nobody else in
//! this program owns. [`send_all`] writes to a stream the caller owns, so that a
//! C program whose agent died gets an error (and reconnects) instead of being
//! killed by `SIGPIPE`.

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

/// Writes all of `bytes` to `stream` with `send(MSG_NOSIGNAL)`.
pub(crate) fn send_all(stream: &UnixStream, mut bytes: &[u8]) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    const MSG_NOSIGNAL: std::ffi::c_int = 0x4000;
    while !bytes.is_empty() {
        // SAFETY: send(2) reads at most `bytes.len()` bytes from a live slice, on a
        // descriptor `stream` owns for the call.
        let n = unsafe {
            send(
                stream.as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
                MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        bytes = &bytes[n as usize..];
    }
    Ok(())
}

extern "C" {
    fn fcntl(fd: RawFd, cmd: std::ffi::c_int, ...) -> std::ffi::c_int;
    fn send(fd: RawFd, buf: *const std::ffi::c_void, len: usize, flags: std::ffi::c_int) -> isize;
}

/// `fcntl(fd, F_GETFD)`.
unsafe fn fcntl_getfd(fd: RawFd) -> std::ffi::c_int {
    const F_GETFD: std::ffi::c_int = 1;
    fcntl(fd, F_GETFD)
}
