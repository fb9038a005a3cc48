//! The descriptor a poll loop waits on (the client's `AsRawFd`): an epoll
//! instance watching the agent connection and the links made to the client's
//! process, so that it turns readable when the agent answers or a link brings
//! something. It stays the same descriptor for the client's life, across
//! reconnections and links that come and go.
//!
//! Invariant: after [`Poller::watch`], exactly the descriptors given are watched
//! (level-triggered, for reading). A descriptor number can be closed and reused
//! for another file (a link ends, a new one comes), which epoll cannot tell from
//! the old one; the caller's `key` changes whenever that may have happened, and a
//! changed key makes the watch list again from nothing.

#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// An epoll instance and what it watches.
#[derive(Debug)]
pub(crate) struct Poller {
    epoll: OwnedFd,
    watched: Vec<RawFd>,
    key: (u64, u64),
}

impl Poller {
    /// An epoll instance watching `fds` under `key`.
    pub(crate) fn new(key: (u64, u64), fds: &[RawFd]) -> std::io::Result<Self> {
        // SAFETY: epoll_create1 takes no pointer; a descriptor it returns is ours.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut poller = Poller {
            // SAFETY: `fd` was just created and is owned by nothing else.
            epoll: unsafe { OwnedFd::from_raw_fd(fd) },
            watched: Vec::new(),
            key,
        };
        poller.add_all(fds)?;
        Ok(poller)
    }

    /// Watches exactly `fds` from now on; `key` changes whenever a number in them
    /// may name another file than it did (see the module docs).
    pub(crate) fn watch(&mut self, key: (u64, u64), fds: &[RawFd]) -> std::io::Result<()> {
        if key == self.key && fds == self.watched.as_slice() {
            return Ok(());
        }
        for fd in std::mem::take(&mut self.watched) {
            // A closed descriptor left epoll by itself: ENOENT or EBADF is fine.
            let _ = self.ctl(libc::EPOLL_CTL_DEL, fd);
        }
        self.key = key;
        self.add_all(fds)
    }

    fn add_all(&mut self, fds: &[RawFd]) -> std::io::Result<()> {
        for &fd in fds {
            self.ctl(libc::EPOLL_CTL_ADD, fd)?;
            self.watched.push(fd);
        }
        Ok(())
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd) -> std::io::Result<()> {
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: fd as u64,
        };
        // SAFETY: epoll_ctl reads one live `epoll_event` for the call.
        let r = unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), op, fd, &raw mut event) };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// The descriptor to poll.
    pub(crate) fn fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    fn readable(fd: RawFd) -> bool {
        crate::endpoint::poll_readable(&[fd], Some(std::time::Duration::ZERO)).unwrap()[0]
    }

    #[test]
    fn it_turns_readable_when_any_watched_descriptor_is_and_only_those() {
        let (a, mut a_peer) = UnixStream::pair().unwrap();
        let (b, mut b_peer) = UnixStream::pair().unwrap();
        let mut poller = Poller::new((0, 0), &[a.as_raw_fd()]).unwrap();
        assert!(!readable(poller.fd()));
        b_peer.write_all(b"x").unwrap();
        assert!(!readable(poller.fd()), "b is not watched yet");
        poller
            .watch((1, 0), &[a.as_raw_fd(), b.as_raw_fd()])
            .unwrap();
        assert!(readable(poller.fd()));
        poller.watch((2, 0), &[a.as_raw_fd()]).unwrap();
        assert!(!readable(poller.fd()));
        a_peer.write_all(b"y").unwrap();
        assert!(readable(poller.fd()));
    }

    #[test]
    fn a_number_reused_for_another_file_is_watched_again_under_a_new_key() {
        let (a, _a_peer) = UnixStream::pair().unwrap();
        let number = a.as_raw_fd();
        let mut poller = Poller::new((0, 0), &[number]).unwrap();
        drop(a);
        // Most likely the same number again.
        let (b, mut b_peer) = UnixStream::pair().unwrap();
        let fds = [b.as_raw_fd()];
        poller.watch((1, 0), &fds).unwrap();
        b_peer.write_all(b"x").unwrap();
        assert!(readable(poller.fd()));
    }
}
