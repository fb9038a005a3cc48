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
//!
//! A timer (a timerfd, always watched) makes it readable when something held
//! back falls due without any descriptor turning readable: a `Down` held behind
//! the messages of a link whose end stays open ([`Poller::alarm`]).
//!
//! The client's own receives wait on the same instance ([`Poller::wait`]): the
//! set is kept up to date anyway, and a wait on it registers nothing per call
//! (as `poll(2)` would on every descriptor) and allocates nothing. Waiting
//! consumes nothing, so a program's own poll loop sees the same readiness.
//! A wait ends at its deadline by the same timer, not by a timeout of the wait
//! (a timeout costs the kernel a timer of its own per wait): the timer is set
//! only when it would go off after the deadline, so a receive after receive
//! with the same patience sets it once per that patience, not once per wait.
//! It may therefore go off earlier than anything needs, at a receive's
//! deadline left from before: the descriptor then turns readable once with
//! nothing to take, and the next look at it ([`Poller::alarm`]) sets it again.
//!
//! Invariant: the timer goes off no later than the earliest of what is due and
//! the deadline of a wait under way, and a timer that went off is set again at
//! the next [`Poller::alarm`] or [`Poller::wait`], so the descriptor is never
//! left readable for it.

#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// The most descriptors one [`Poller::wait`] reports; any others stay readable
/// (the watch is level-triggered) and the next wait reports them.
const REPORTED: usize = 16;

/// What one [`Poller::wait`] found readable.
pub(crate) struct Readable {
    events: [libc::epoll_event; REPORTED],
    n: usize,
}

impl Readable {
    /// Nothing found yet.
    pub(crate) fn new() -> Self {
        Readable {
            events: [libc::epoll_event { events: 0, u64: 0 }; REPORTED],
            n: 0,
        }
    }

    /// Whether the last wait found `fd` readable.
    pub(crate) fn contains(&self, fd: RawFd) -> bool {
        self.events[..self.n].iter().any(|e| {
            // Copied out: the kernel's struct is packed on x86_64.
            let data = e.u64;
            data == fd as u64
        })
    }
}

/// An epoll instance and what it watches.
#[derive(Debug)]
pub(crate) struct Poller {
    epoll: OwnedFd,
    timer: OwnedFd,
    /// When the timer goes off, by this client's clock when it was set (the
    /// kernel's, read later, makes it go off no earlier); `None`: disarmed.
    fires_at: Option<Instant>,
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
        // SAFETY: `fd` was just created and is owned by nothing else.
        let epoll = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: timerfd_create takes no pointer; a descriptor it returns is ours.
        let timer = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_CLOEXEC | libc::TFD_NONBLOCK,
            )
        };
        if timer < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut poller = Poller {
            epoll,
            // SAFETY: `timer` was just created and is owned by nothing else.
            timer: unsafe { OwnedFd::from_raw_fd(timer) },
            fires_at: None,
            watched: Vec::new(),
            key,
        };
        poller.ctl(libc::EPOLL_CTL_ADD, poller.timer.as_raw_fd())?;
        poller.add_all(fds.iter().copied())?;
        Ok(poller)
    }

    /// Makes the timer go off by `due` (`None`: nothing is due); one that goes
    /// off earlier (a receive's deadline) stays while `early` allows it, and one
    /// that went off is set again, to `due`.
    pub(crate) fn alarm(&mut self, due: Option<Instant>, early: bool) -> std::io::Result<()> {
        let Some(at) = self.fires_at else {
            return match due {
                Some(due) => self.set(Some(due), Instant::now()),
                None => Ok(()),
            };
        };
        let now = Instant::now();
        let gone_off = at <= now;
        let too_late = due.is_some_and(|due| at > due);
        if gone_off || too_late || (due.is_none() && !early) {
            self.set(due, now)
        } else {
            Ok(())
        }
    }

    /// Sets the timer to go off at `at` (`None`: disarms it), read at `now`;
    /// setting it makes one that went off unreadable again.
    fn set(&mut self, at: Option<Instant>, now: Instant) -> std::io::Result<()> {
        // A zero `it_value` disarms: a time come already goes off in a nanosecond.
        let value = at.map_or(Duration::ZERO, |at| {
            at.saturating_duration_since(now)
                .max(Duration::from_nanos(1))
        });
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: libc::time_t::try_from(value.as_secs()).unwrap_or(libc::time_t::MAX),
                tv_nsec: value.subsec_nanos().into(),
            },
        };
        // SAFETY: timerfd_settime reads one live `itimerspec` and writes nothing
        // (no old value asked for).
        let r = unsafe {
            libc::timerfd_settime(
                self.timer.as_raw_fd(),
                0,
                &raw const spec,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        self.fires_at = at.map(|at| at.max(now));
        Ok(())
    }

    /// Watches exactly `fds` from now on; `key` changes whenever a number in them
    /// may name another file than it did (see the module docs). Watching what is
    /// watched already costs no call and no allocation.
    pub(crate) fn watch(
        &mut self,
        key: (u64, u64),
        fds: impl Iterator<Item = RawFd> + Clone,
    ) -> std::io::Result<()> {
        if key == self.key && fds.clone().eq(self.watched.iter().copied()) {
            return Ok(());
        }
        for fd in std::mem::take(&mut self.watched) {
            // A closed descriptor left epoll by itself: ENOENT or EBADF is fine.
            let _ = self.ctl(libc::EPOLL_CTL_DEL, fd);
        }
        self.key = key;
        self.add_all(fds)
    }

    /// Waits until a watched descriptor is readable or `deadline` (the clock
    /// read `now`), which the timer marks (see the module docs); `readable`
    /// says which were, the timer's included. A wait a signal interrupts reports
    /// none: the caller looks at its clock and waits again, as after the timer.
    pub(crate) fn wait(
        &mut self,
        deadline: Instant,
        now: Instant,
        readable: &mut Readable,
    ) -> std::io::Result<()> {
        if self.fires_at.is_none_or(|at| at > deadline || at <= now) {
            self.set(Some(deadline), now)?;
        }
        // SAFETY: epoll_wait writes at most REPORTED events into the live array
        // of that length.
        let n = unsafe {
            libc::epoll_wait(
                self.epoll.as_raw_fd(),
                readable.events.as_mut_ptr(),
                REPORTED as libc::c_int,
                -1,
            )
        };
        readable.n = 0;
        if n < 0 {
            let e = std::io::Error::last_os_error();
            return match e.kind() {
                std::io::ErrorKind::Interrupted => Ok(()),
                _ => Err(e),
            };
        }
        readable.n = n as usize;
        Ok(())
    }

    fn add_all(&mut self, fds: impl Iterator<Item = RawFd>) -> std::io::Result<()> {
        for fd in fds {
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
    use std::time::Instant;

    fn readable_now(poller: &Poller) -> bool {
        readable(poller.fd())
    }

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
            .watch((1, 0), [a.as_raw_fd(), b.as_raw_fd()].into_iter())
            .unwrap();
        assert!(readable(poller.fd()));
        poller.watch((2, 0), [a.as_raw_fd()].into_iter()).unwrap();
        assert!(!readable(poller.fd()));
        a_peer.write_all(b"y").unwrap();
        assert!(readable(poller.fd()));
    }

    #[test]
    fn the_alarm_makes_it_readable_when_due_until_set_again() {
        let (a, _a_peer) = UnixStream::pair().unwrap();
        let mut poller = Poller::new((0, 0), &[a.as_raw_fd()]).unwrap();
        let soon = Instant::now() + Duration::from_millis(20);
        poller.alarm(Some(soon), false).unwrap();
        assert!(!readable_now(&poller), "not due yet");
        let waited = crate::endpoint::poll_readable(&[poller.fd()], Some(Duration::from_secs(5)));
        assert!(waited.unwrap()[0], "due");
        assert!(Instant::now() >= soon);
        poller.alarm(None, true).unwrap();
        assert!(!readable_now(&poller), "gone off, then cleared");
        poller.alarm(Some(Instant::now()), false).unwrap();
        let waited = crate::endpoint::poll_readable(&[poller.fd()], Some(Duration::from_secs(5)));
        assert!(waited.unwrap()[0], "an alarm due now goes off");
        let later = Instant::now() + Duration::from_secs(60);
        poller.alarm(Some(later), false).unwrap();
        assert!(!readable_now(&poller), "set again: not due");
    }

    #[test]
    fn a_wait_reports_the_readable_descriptors_or_ends_at_its_deadline() {
        let (a, mut a_peer) = UnixStream::pair().unwrap();
        let (b, _b_peer) = UnixStream::pair().unwrap();
        let mut poller = Poller::new((0, 0), &[a.as_raw_fd(), b.as_raw_fd()]).unwrap();
        let mut readable = Readable::new();
        let begun = Instant::now();
        let deadline = begun + Duration::from_millis(30);
        poller.wait(deadline, begun, &mut readable).unwrap();
        assert!(Instant::now() >= deadline, "nothing came");
        assert!(readable.contains(poller.timer.as_raw_fd()), "the deadline");
        assert!(!readable.contains(a.as_raw_fd()) && !readable.contains(b.as_raw_fd()));
        a_peer.write_all(b"x").unwrap();
        let now = Instant::now();
        poller
            .wait(now + Duration::from_secs(5), now, &mut readable)
            .unwrap();
        assert!(readable.contains(a.as_raw_fd()));
        assert!(!readable.contains(b.as_raw_fd()));
    }

    #[test]
    fn a_deadline_left_on_the_timer_goes_off_early_at_worst_and_only_while_it_may() {
        let (a, mut a_peer) = UnixStream::pair().unwrap();
        let mut poller = Poller::new((0, 0), &[a.as_raw_fd()]).unwrap();
        // A later deadline leaves the timer as it is; an earlier one sets it.
        let now = Instant::now();
        poller
            .set(Some(now + Duration::from_secs(60)), now)
            .unwrap();
        let first = poller.fires_at.unwrap();
        a_peer.write_all(b"x").unwrap();
        let now = Instant::now();
        let mut readable = Readable::new();
        poller
            .wait(now + Duration::from_secs(90), now, &mut readable)
            .unwrap();
        assert!(readable.contains(a.as_raw_fd()));
        assert_eq!(poller.fires_at, Some(first), "left");
        let now = Instant::now();
        poller
            .wait(now + Duration::from_millis(5), now, &mut readable)
            .unwrap();
        assert!(poller.fires_at.unwrap() < first, "set earlier");
        // Gone off: it is set again at the next look, readable no more.
        std::thread::sleep(Duration::from_millis(10));
        let mut byte = [0u8; 1];
        std::io::Read::read_exact(&mut &a, &mut byte).unwrap();
        assert!(readable_now(&poller), "gone off");
        poller.alarm(None, true).unwrap();
        assert!(!readable_now(&poller), "set again once gone off");
        // A deadline may stay while receives wait on the timer, not after.
        let now = Instant::now();
        poller
            .set(Some(now + Duration::from_secs(60)), now)
            .unwrap();
        poller.alarm(None, true).unwrap();
        assert!(poller.fires_at.is_some(), "stays");
        poller.alarm(None, false).unwrap();
        assert!(poller.fires_at.is_none(), "disarmed");
        // Something due earlier than the deadline on the timer sets it earlier.
        let now = Instant::now();
        poller
            .set(Some(now + Duration::from_secs(60)), now)
            .unwrap();
        poller
            .alarm(Some(now + Duration::from_millis(1)), true)
            .unwrap();
        assert!(poller.fires_at.unwrap() < now + Duration::from_secs(1));
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
        poller.watch((1, 0), fds.into_iter()).unwrap();
        b_peer.write_all(b"x").unwrap();
        assert!(readable(poller.fd()));
    }
}
