//! Taking over the endpoint descriptor a process inherited from its agent, and
//! writing to the agent without `SIGPIPE`.
//!
//! The only `unsafe` of the crate outside the C ABI: turning a descriptor number
//! from the environment into an owned socket, `send(2)` with `MSG_NOSIGNAL`, a
//! connect that does not wait ([`connect`]), and for links ([`crate::link`]):
//! `recvmsg(2)` taking the descriptors the agent attaches ([`recv_with_fds`]) and
//! `poll(2)` ([`poll_readable`]).
//! [`adopt`] is called at most once per
//! program (the caller guarantees it), and refuses a descriptor that is not open or
//! not a Unix socket, so the stream it returns owns an open socket nobody else in
//! this program owns. [`send_all`] writes to a stream the caller owns, so that a
//! C program whose agent died gets an error (and reconnects) instead of being
//! killed by `SIGPIPE`.

#![allow(unsafe_code)]

use std::os::fd::{FromRawFd, OwnedFd, RawFd};
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

/// Connects to the Unix socket at `path` (`abstract_name`: a name in the abstract
/// namespace) without waiting: where the listener's backlog is full (no agent
/// accepts), this fails `WouldBlock` at once instead of blocking until an agent
/// comes, so a caller's patience bounds its wait. The stream returned blocks.
pub(crate) fn connect(path: &[u8], abstract_name: bool) -> std::io::Result<UnixStream> {
    const AF_UNIX: std::ffi::c_int = 1;
    const SOCK_STREAM: std::ffi::c_int = 1;
    const SOCK_NONBLOCK: std::ffi::c_int = 0o4000;
    const SOCK_CLOEXEC: std::ffi::c_int = 0o2000000;
    #[repr(C)]
    struct SockaddrUn {
        family: u16,
        path: [u8; 108],
    }
    let offset = usize::from(abstract_name);
    // Room for the path and, for a file, its NUL.
    if path.is_empty() || path.len() + 1 > 108 {
        return Err(std::io::ErrorKind::InvalidInput.into());
    }
    let mut addr = SockaddrUn {
        family: AF_UNIX as u16,
        path: [0; 108],
    };
    addr.path[offset..offset + path.len()].copy_from_slice(path);
    let len = 2 + offset + path.len() + usize::from(!abstract_name);
    // SAFETY: socket(2) takes integers; we own the descriptor it returns.
    let fd = unsafe { socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the descriptor was just made and nothing else owns it.
    let stream = unsafe { UnixStream::from_raw_fd(fd) };
    // SAFETY: connect(2) reads `len` bytes (at most the struct's size) of `addr`.
    let r = unsafe { connect_raw(fd, (&addr as *const SockaddrUn).cast(), len as u32) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    stream.set_nonblocking(false)?;
    Ok(stream)
}

/// Writes all of `bytes` to the socket `stream` with `send(MSG_NOSIGNAL)`.
pub(crate) fn send_all(
    stream: &impl std::os::fd::AsRawFd,
    mut bytes: &[u8],
) -> std::io::Result<()> {
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
    fn socket(
        domain: std::ffi::c_int,
        kind: std::ffi::c_int,
        protocol: std::ffi::c_int,
    ) -> std::ffi::c_int;
    #[link_name = "connect"]
    fn connect_raw(fd: RawFd, addr: *const std::ffi::c_void, len: u32) -> std::ffi::c_int;
    fn send(fd: RawFd, buf: *const std::ffi::c_void, len: usize, flags: std::ffi::c_int) -> isize;
}

/// `fcntl(fd, F_GETFD)`.
unsafe fn fcntl_getfd(fd: RawFd) -> std::ffi::c_int {
    const F_GETFD: std::ffi::c_int = 1;
    fcntl(fd, F_GETFD)
}

/// Reads what `fd` holds, up to `buf.len()` bytes (waiting for something), and
/// takes the descriptors that came with
/// those bytes (`SCM_RIGHTS`, made close-on-exec) into `fds`, in order. Retries
/// on `EINTR`. Descriptors the kernel had to drop for lack of room (never more
/// than the agent sends with one frame) fail the read.
pub(crate) fn recv_with_fds(
    fd: RawFd,
    buf: &mut [u8],
    fds: &mut std::collections::VecDeque<OwnedFd>,
) -> std::io::Result<usize> {
    // Room for a few descriptors: the agent attaches one to a frame.
    let mut control = [0u64; 8];
    loop {
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: an all-zero msghdr is valid (no name, no control yet).
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        let flags = libc::MSG_CMSG_CLOEXEC;
        // SAFETY: recvmsg writes at most `iov_len` bytes into `buf` and at most
        // `msg_controllen` into `control`, both live for the call.
        let n = unsafe { libc::recvmsg(fd, &mut msg, flags) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        // SAFETY: the CMSG macros walk the control buffer recvmsg filled, within
        // `msg_controllen`; each SCM_RIGHTS payload is an array of ints, each a
        // descriptor this process now owns and nothing else refers to.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                    let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                    let len = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                    for k in 0..len / std::mem::size_of::<RawFd>() {
                        fds.push_back(OwnedFd::from_raw_fd(data.add(k).read_unaligned()));
                    }
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
        }
        if msg.msg_flags & libc::MSG_CTRUNC != 0 {
            return Err(std::io::Error::other(
                "descriptors sent with a reply were dropped (too many at once)",
            ));
        }
        return Ok(n as usize);
    }
}

/// Waits until one of `fds` is readable (or hung up, or failed), at most
/// `timeout` (`None`: not at all); which are, in order. Retries on `EINTR` with
/// the time left.
pub(crate) fn poll_readable(
    fds: &[RawFd],
    timeout: Option<std::time::Duration>,
) -> std::io::Result<Vec<bool>> {
    let mut polled: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let deadline = timeout.map(|t| std::time::Instant::now() + t);
    loop {
        let ms = deadline.map_or(0, |d| {
            let left = d.saturating_duration_since(std::time::Instant::now());
            // Rounded up, so a wait never ends before its deadline.
            i32::try_from(left.as_nanos().div_ceil(1_000_000)).unwrap_or(i32::MAX)
        });
        // SAFETY: poll reads and writes `polled`, a live array of its length.
        let n = unsafe { libc::poll(polled.as_mut_ptr(), polled.len() as libc::nfds_t, ms) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        return Ok(polled.iter().map(|p| p.revents != 0).collect());
    }
}

/// Writes what `fd` takes of `bytes` now, without waiting (`WouldBlock`: none)
/// and without `SIGPIPE`; how many bytes went.
pub(crate) fn send_now(fd: RawFd, bytes: &[u8]) -> std::io::Result<usize> {
    loop {
        // SAFETY: send(2) reads at most `bytes.len()` bytes from a live slice.
        let n = unsafe {
            libc::send(
                fd,
                bytes.as_ptr().cast(),
                bytes.len(),
                libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Reads what the socket `fd` holds now, up to `buf.len()` bytes, without
/// waiting (`WouldBlock`: nothing). Descriptors a peer attached are not taken
/// (the kernel closes them).
pub(crate) fn recv_now(fd: RawFd, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        // SAFETY: recv(2) writes at most `buf.len()` bytes into a live slice.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Clears `O_NONBLOCK` on `fd`: its writes wait for room.
pub(crate) fn set_blocking(fd: &OwnedFd) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: fcntl(2) on a descriptor `fd` owns reads and sets its status flags only.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Whether the socket `fd` takes bytes now without waiting.
pub(crate) fn writable_now(fd: RawFd) -> bool {
    let mut polled = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: poll reads and writes one live pollfd.
    let n = unsafe { libc::poll(&mut polled, 1, 0) };
    n == 1 && polled.revents & libc::POLLOUT != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_backlog_fails_at_once_instead_of_waiting() {
        let name = format!("nefele-test-backlog-{}", std::process::id());
        let listener = {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(&name).unwrap();
            std::os::unix::net::UnixListener::bind_addr(&addr).unwrap()
        };
        // Nobody accepts: the backlog fills, then a connect fails WouldBlock.
        let mut pending = Vec::new();
        let full = loop {
            match connect(name.as_bytes(), true) {
                Ok(s) => pending.push(s),
                Err(e) => break e,
            }
            assert!(pending.len() < 100_000, "the backlog never filled");
        };
        assert_eq!(full.kind(), std::io::ErrorKind::WouldBlock, "{full}");
        // Once one is accepted, a connect goes through again, and blocks as usual.
        drop(listener.accept().unwrap());
        let s = connect(name.as_bytes(), true).unwrap();
        assert!(s.read_timeout().unwrap().is_none());
        let dir = std::env::temp_dir().join(format!("nefele-test-path-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let by_path = std::os::unix::net::UnixListener::bind(&dir).unwrap();
        let s = connect(dir.as_os_str().as_encoded_bytes(), false).unwrap();
        assert!(by_path.accept().is_ok());
        drop(s);
        let _ = std::fs::remove_file(&dir);
    }
}
