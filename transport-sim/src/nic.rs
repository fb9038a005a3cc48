//! The bandwidth model: every host's NIC sends and receives at a fixed rate
//! (`network.nic_gbit`, default 25 Gbit/s) and serialises what passes through it.
//!
//! Per host the model keeps two instants: when its transmit side is next free and
//! when its receive side last finished. A message of `len` bytes takes
//! `len × 8 / rate` on each side:
//!
//! - **transmit**: it starts when the sender's NIC is free (FIFO in send order) and
//!   its last bit leaves `ser` later; the network's latency is added after that.
//! - **receive**: the receiver's link takes bits as they arrive, so on an idle link
//!   the message is complete when its last bit arrives (reception overlaps the
//!   transmission, as on a cut-through switch). If the link was still busy with an
//!   earlier message when this one's first bit arrived, it completes `ser` after the
//!   link frees (FIFO in arrival order): that is incast queueing.
//!
//! Both decisions are O(1) with integer arithmetic (picoseconds per byte), so the
//! same seed gives the same times in every build. A message a host sends to itself
//! never touches its NIC. A rate of 0 turns the model off.

use nefele_core::{NodeId, Time};
use std::time::Duration;

/// Per-host NIC queues.
#[derive(Debug)]
pub struct Nics {
    /// Picoseconds one byte takes on the wire; 0 when the model is off.
    ps_per_byte: u64,
    /// When each host's transmit side is next free.
    tx_free: Vec<Time>,
    /// When each host's receive side finished its last message.
    rx_free: Vec<Time>,
}

impl Nics {
    /// NICs of `gbit` Gbit/s for `hosts` hosts (0 or less: no bandwidth limit).
    #[must_use]
    pub fn new(hosts: usize, gbit: f64) -> Self {
        let ps_per_byte = if gbit > 0.0 {
            // 8 bits per byte at `gbit` bits per nanosecond; at least 1 ps.
            ((8_000.0 / gbit).round() as u64).max(1)
        } else {
            0
        };
        Nics {
            ps_per_byte,
            tx_free: vec![Time::ZERO; hosts],
            rx_free: vec![Time::ZERO; hosts],
        }
    }

    /// How long `len` bytes take on one NIC (rounded up to whole nanoseconds).
    #[must_use]
    pub fn serialisation(&self, len: u32) -> Duration {
        Duration::from_nanos((u64::from(len) * self.ps_per_byte).div_ceil(1_000))
    }

    /// Queues `len` bytes on `from`'s transmit side at `now`; returns when the last
    /// bit has left (`now` itself for a send to oneself or with no limit).
    pub fn transmit(&mut self, now: Time, from: NodeId, to: NodeId, len: u32) -> Time {
        if self.ps_per_byte == 0 || from == to {
            return now;
        }
        let ser = self.serialisation(len);
        let free = &mut self.tx_free[from.0 as usize];
        let done = (*free).max(now) + ser;
        *free = done;
        done
    }

    /// The last bit of a `len`-byte message from `from` reaches `to`'s link at `now`;
    /// returns when `to` has it all: `now` if the link was free when its first bit
    /// came, later if an earlier message still held the link.
    pub fn receive(&mut self, now: Time, from: NodeId, to: NodeId, len: u32) -> Time {
        if self.ps_per_byte == 0 || from == to {
            return now;
        }
        let ser = self.serialisation(len);
        let free = &mut self.rx_free[to.0 as usize];
        let first_bit = Time::from_nanos(now.as_nanos().saturating_sub(ser.as_nanos() as u64));
        let done = if *free <= first_bit { now } else { *free + ser };
        *free = done;
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: NodeId = NodeId(0);
    const B: NodeId = NodeId(1);
    const C: NodeId = NodeId(2);

    #[test]
    fn twenty_five_gbit_takes_320_ps_per_byte() {
        let nics = Nics::new(2, 25.0);
        assert_eq!(nics.serialisation(1_000), Duration::from_nanos(320));
        assert_eq!(nics.serialisation(1), Duration::from_nanos(1), "rounded up");
        // 100 MB take 32 ms.
        assert_eq!(nics.serialisation(100_000_000), Duration::from_millis(32));
    }

    #[test]
    fn a_sender_serialises_its_messages_in_order() {
        let mut nics = Nics::new(3, 25.0);
        let t0 = us(10);
        let first = nics.transmit(t0, A, B, 1_000_000);
        let second = nics.transmit(t0, A, C, 1_000_000);
        assert_eq!(first, t0 + Duration::from_micros(320));
        assert_eq!(second, t0 + Duration::from_micros(640));
        // Another host's NIC is independent.
        assert_eq!(
            nics.transmit(t0, B, A, 1_000_000),
            t0 + Duration::from_micros(320)
        );
    }

    #[test]
    fn an_idle_receiver_adds_nothing_and_incast_queues() {
        let mut nics = Nics::new(3, 25.0);
        let t = us(1_000);
        // Alone: complete when the last bit arrives.
        assert_eq!(nics.receive(t, A, C, 1_000_000), t);
        // Another message whose bits overlapped the first waits for it.
        let second = nics.receive(t + Duration::from_micros(1), B, C, 1_000_000);
        assert_eq!(second, t + Duration::from_micros(320));
        // Long after, the link is idle again.
        let later = t + Duration::from_millis(10);
        assert_eq!(nics.receive(later, A, C, 1_000), later);
    }

    #[test]
    fn self_sends_and_a_zero_rate_cost_nothing() {
        let mut nics = Nics::new(2, 25.0);
        let t = us(5);
        assert_eq!(nics.transmit(t, A, A, 1 << 30), t);
        assert_eq!(nics.receive(t, A, A, 1 << 30), t);
        let mut off = Nics::new(2, 0.0);
        assert_eq!(off.transmit(t, A, B, 1 << 30), t);
        assert_eq!(off.receive(t, A, B, 1 << 30), t);
    }

    fn us(us: u64) -> Time {
        Time::from_nanos(us * 1_000)
    }
}
