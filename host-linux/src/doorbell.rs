//! The doorbell of a host's wait: whoever queues work for a thread blocked in
//! [`LinuxHost::wait_event`](crate::LinuxHost::wait_event) rings it, and the wait
//! ends at once instead of at its timeout, so that thread needs no short timeout
//! (a periodic wake-up) to notice new work.
//!
//! It is an eventfd: ringing adds one to its counter, and the waiter, polling it
//! with the processes it watches, reads the counter back to zero. Rings between
//! two waits fold into one; none is lost, since the counter stays above zero
//! until read.

use crate::sys::SysError;
use nix::sys::eventfd::{EfdFlags, EventFd};
use std::os::fd::{AsFd, BorrowedFd};

/// A doorbell; share it (`Arc`) between the thread that waits and those that ring.
#[derive(Debug)]
pub struct Doorbell(EventFd);

impl Doorbell {
    /// A doorbell that has not rung.
    pub fn new() -> Result<Self, SysError> {
        EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)
            .map(Doorbell)
            .map_err(|errno| SysError::new("eventfd for the host's doorbell", errno))
    }

    /// Ends the waiter's current or next wait.
    pub fn ring(&self) {
        // Fails only when the counter is full, which also wakes the waiter.
        let _ = self.0.write(1);
    }

    /// Whether it rang since the last answer (and silences it).
    pub(crate) fn answer(&self) -> bool {
        self.0.read().is_ok_and(|n| n > 0)
    }
}

impl AsFd for Doorbell {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_answers_once_for_every_ring_since_the_last_answer() {
        let bell = Doorbell::new().unwrap();
        assert!(!bell.answer(), "not rung yet");
        bell.ring();
        bell.ring();
        assert!(bell.answer());
        assert!(!bell.answer(), "the two rings fold into one answer");
    }
}
