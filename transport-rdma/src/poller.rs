//! When to look for completions: spin for a budget of empty rounds, then
//! sleep on the completion channel, so a busy link pays no system call and an
//! idle agent does not burn a core.
//!
//! The transport asks [`Poller::after_round`] after every progress round. While
//! rounds make progress, or for `budget` empty rounds after the last that did,
//! it says [`Next::Spin`] (poll again at once, yielding to other tasks). Then it
//! says [`Next::Sleep`]: the transport arms every completion queue
//! (`ibv_req_notify_cq`), polls once more to catch what completed before the
//! arming (a completion before the arm raises no event), and waits for the
//! completion channel, a carrier event, or — when a sender waits for credits,
//! which arrive by RDMA WRITE and raise no completion — the [`CreditBackoff`] timer.

use std::time::Duration;

/// What the transport does after a progress round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Poll again now.
    Spin,
    /// Arm the completion queues and wait for an event.
    Sleep,
}

/// The busy-poll budget.
#[derive(Debug, Clone)]
pub(crate) struct Poller {
    budget: u32,
    empty_rounds: u32,
}

impl Poller {
    pub(crate) fn new(budget: u32) -> Self {
        Poller {
            budget,
            empty_rounds: 0,
        }
    }

    pub(crate) fn after_round(&mut self, progress: bool) -> Next {
        if progress {
            self.empty_rounds = 0;
            return Next::Spin;
        }
        self.empty_rounds = self.empty_rounds.saturating_add(1);
        if self.empty_rounds <= self.budget {
            Next::Spin
        } else {
            Next::Sleep
        }
    }
}

/// How long a sleeping transport waits before it reads credit words again while
/// a sender is blocked on credits: doubling from 20 µs to 1 ms, reset by progress.
#[derive(Debug, Clone)]
pub(crate) struct CreditBackoff {
    next: Duration,
}

const BACKOFF_MIN: Duration = Duration::from_micros(20);
const BACKOFF_MAX: Duration = Duration::from_millis(1);

impl CreditBackoff {
    pub(crate) fn new() -> Self {
        CreditBackoff { next: BACKOFF_MIN }
    }

    pub(crate) fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }

    pub(crate) fn take(&mut self) -> Duration {
        let now = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spins_while_busy_then_sleeps_after_the_budget() {
        let mut p = Poller::new(2);
        assert_eq!(p.after_round(true), Next::Spin);
        assert_eq!(p.after_round(false), Next::Spin);
        assert_eq!(p.after_round(false), Next::Spin);
        assert_eq!(p.after_round(false), Next::Sleep);
        assert_eq!(p.after_round(false), Next::Sleep);
        assert_eq!(p.after_round(true), Next::Spin);
        let mut p = Poller::new(0);
        assert_eq!(p.after_round(false), Next::Sleep);
    }

    #[test]
    fn credit_backoff_doubles_to_a_cap_and_resets() {
        let mut b = CreditBackoff::new();
        let waits: Vec<_> = (0..8).map(|_| b.take()).collect();
        assert_eq!(waits[0], BACKOFF_MIN);
        assert_eq!(waits[1], BACKOFF_MIN * 2);
        assert_eq!(*waits.last().unwrap(), BACKOFF_MAX);
        b.reset();
        assert_eq!(b.take(), BACKOFF_MIN);
    }
}
