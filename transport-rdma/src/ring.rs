//! The ring and credit arithmetic of one link, with no verbs in it.
//!
//! * [`SlotRing`]: the sender's registered send buffer, `slots` slots used in
//!   order and released in order (an RC queue pair completes sends in the order
//!   they were posted), wrapping around.
//! * [`RecvRing`]: the receiver's ring of posted receive slots. RC delivers
//!   SENDs into posted receive requests in posting order, so the n-th message
//!   lands in slot `n % slots`; after the driver has copied a slot out it is
//!   posted again and counted as *freed*.
//! * [`Credits`]: the sender's view of the receiver's ring. The receiver
//!   RDMA-writes its monotonic freed count into the sender's credit word; the
//!   sender may have at most `slots` messages outstanding, so
//!   `available = slots - (sent - freed)`.
//!
//! Invariants (checked below, and by the property tests of `crate::link` over the fake):
//! a sender never has more messages in flight than the receiver has posted
//! slots (no receiver-not-ready, no overrun); counters are `u64` and only grow,
//! so a stale or repeated credit word is harmless; a credit word claiming more
//! than was ever sent is a protocol error, never an underflow.

/// Why counters from the peer or the NIC are inconsistent. The link is torn down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    /// The peer's credit word says it freed more slots than were ever sent to it.
    #[error("peer claims {freed} slots freed but only {sent} messages were sent")]
    CreditsFromNowhere {
        /// The claimed count.
        freed: u64,
        /// Messages sent.
        sent: u64,
    },
    /// A completion named a slot other than the next one in order.
    #[error("completion for slot {got} where slot {expected} was next")]
    OutOfOrder {
        /// The slot the completion named.
        got: u32,
        /// The slot expected.
        expected: u32,
    },
}

/// Slots used and released in order, wrapping around.
#[derive(Debug, Clone)]
pub(crate) struct SlotRing {
    slots: u32,
    /// Slots ever acquired.
    head: u64,
    /// Slots ever released.
    tail: u64,
}

impl SlotRing {
    pub(crate) fn new(slots: u32) -> Self {
        assert!(slots > 0, "a ring has at least one slot");
        SlotRing {
            slots,
            head: 0,
            tail: 0,
        }
    }

    /// The next free slot, or `None` when every slot is in use.
    pub(crate) fn acquire(&mut self) -> Option<u32> {
        if self.in_use() == u64::from(self.slots) {
            return None;
        }
        let slot = (self.head % u64::from(self.slots)) as u32;
        self.head += 1;
        Some(slot)
    }

    /// Releases `slot`, which must be the oldest in use.
    pub(crate) fn release(&mut self, slot: u32) -> Result<(), RingError> {
        let expected = (self.tail % u64::from(self.slots)) as u32;
        if self.in_use() == 0 || slot != expected {
            return Err(RingError::OutOfOrder {
                got: slot,
                expected,
            });
        }
        self.tail += 1;
        Ok(())
    }

    pub(crate) fn in_use(&self) -> u64 {
        self.head - self.tail
    }
}

/// The receiver's ring of posted slots.
#[derive(Debug, Clone)]
pub(crate) struct RecvRing {
    slots: u32,
    /// Messages received.
    received: u64,
    /// Slots copied out and posted again.
    freed: u64,
    /// The freed count last written to the sender.
    advertised: u64,
}

impl RecvRing {
    pub(crate) fn new(slots: u32) -> Self {
        assert!(slots > 0, "a ring has at least one slot");
        RecvRing {
            slots,
            received: 0,
            freed: 0,
            advertised: 0,
        }
    }

    /// A message arrived in `slot`, which must be the next in order.
    pub(crate) fn receive(&mut self, slot: u32) -> Result<(), RingError> {
        let expected = (self.received % u64::from(self.slots)) as u32;
        if slot != expected || self.received - self.freed == u64::from(self.slots) {
            return Err(RingError::OutOfOrder {
                got: slot,
                expected,
            });
        }
        self.received += 1;
        Ok(())
    }

    /// The oldest received slot was copied out and posted again.
    pub(crate) fn free(&mut self) {
        debug_assert!(self.freed < self.received, "freeing a slot never received");
        self.freed += 1;
    }

    /// The freed count to write to the sender, if it changed since the last write.
    pub(crate) fn take_update(&mut self) -> Option<u64> {
        (self.freed > self.advertised).then(|| {
            self.advertised = self.freed;
            self.freed
        })
    }
}

/// The sender's credits against the receiver's ring.
#[derive(Debug, Clone)]
pub(crate) struct Credits {
    slots: u64,
    sent: u64,
    freed: u64,
}

impl Credits {
    /// Credits against a receiver that posted `slots` slots.
    pub(crate) fn new(slots: u32) -> Self {
        Credits {
            slots: u64::from(slots),
            sent: 0,
            freed: 0,
        }
    }

    /// Messages that may be sent now.
    pub(crate) fn available(&self) -> u64 {
        self.slots - (self.sent - self.freed)
    }

    /// Spends one credit; `false` (and nothing spent) when none is left.
    pub(crate) fn spend(&mut self) -> bool {
        if self.available() == 0 {
            return false;
        }
        self.sent += 1;
        true
    }

    /// Applies the receiver's freed count (stale values are ignored).
    pub(crate) fn update(&mut self, freed: u64) -> Result<(), RingError> {
        if freed > self.sent {
            return Err(RingError::CreditsFromNowhere {
                freed,
                sent: self.sent,
            });
        }
        self.freed = self.freed.max(freed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_ring_wraps_and_releases_in_order() {
        let mut ring = SlotRing::new(3);
        assert_eq!(
            (ring.acquire(), ring.acquire(), ring.acquire()),
            (Some(0), Some(1), Some(2))
        );
        assert_eq!(ring.acquire(), None);
        assert_eq!(
            ring.release(1),
            Err(RingError::OutOfOrder {
                got: 1,
                expected: 0
            })
        );
        ring.release(0).unwrap();
        assert_eq!(ring.acquire(), Some(0));
        ring.release(1).unwrap();
        ring.release(2).unwrap();
        ring.release(0).unwrap();
        assert!(ring.release(1).is_err(), "nothing in use");
    }

    #[test]
    fn credits_never_let_more_than_the_ring_be_in_flight() {
        let mut c = Credits::new(2);
        assert!(c.spend() && c.spend());
        assert!(!c.spend());
        c.update(1).unwrap();
        assert!(c.spend());
        c.update(0).unwrap(); // stale: ignored
        assert_eq!(c.available(), 0);
        assert_eq!(
            c.update(4),
            Err(RingError::CreditsFromNowhere { freed: 4, sent: 3 })
        );
    }

    #[test]
    fn the_receiver_advertises_only_changes() {
        let mut r = RecvRing::new(2);
        r.receive(0).unwrap();
        r.receive(1).unwrap();
        assert!(r.receive(0).is_err(), "ring full: an overrun");
        assert_eq!(r.take_update(), None);
        r.free();
        assert_eq!(r.take_update(), Some(1));
        assert_eq!(r.take_update(), None);
        r.receive(0).unwrap();
    }
}
