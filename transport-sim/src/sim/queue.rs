//! The event queue: events ordered by (time, order of scheduling), so events at the
//! same time run in the order they were scheduled.
//!
//! A radix heap: the simulation does not schedule an event before the last one it
//! took, so an event's bucket is the highest bit in which its time differs from
//! that last time. (Should it ever, a small side heap takes such events first, in
//! (time, scheduling order), exactly as the binary heap this replaced would.) Taking an event scans at most 65 buckets and, when the lowest
//! ones are empty, spreads one bucket into lower ones; each event moves at most
//! 64 times in all and usually a few, where a binary heap sifts through about 20
//! levels of a heap of hundreds of thousands of events, missing the cache at
//! each. Events of the same time always share a bucket and keep their order
//! there (buckets are FIFO, and spreading keeps order), which gives the
//! scheduling-order tie break. Events sit in a slab; the buckets move 16-byte
//! (time, slot) pairs only. Buckets are plain vectors (a bucket above 0 is only
//! ever appended to, then spread whole); bucket 0, which holds only events of the
//! time last taken, is read from a cursor, so no push pays for a ring buffer.

use nefele_core::Time;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// A min-queue of events by time, FIFO among equal times.
pub(super) struct EventQueue<E> {
    buckets: Vec<Vec<(u64, u32)>>,
    /// The next entry of bucket 0 to take (those before it are taken).
    head: usize,
    /// The time of the last event taken.
    last: u64,
    /// Events queued before `last` (which a binary heap would still take first, in
    /// (time, scheduling order)); rare.
    past: BinaryHeap<Reverse<(u64, u64, u32)>>,
    /// Scheduling order, for `past`.
    seq: u64,
    slots: Vec<Option<E>>,
    free: Vec<u32>,
    /// An empty bucket with room, swapped in for the one being spread so that no
    /// bucket gives its allocation back (reallocating them was a tenth of a pop).
    spare: Vec<(u64, u32)>,
}

fn bucket(time: u64, last: u64) -> usize {
    (u64::BITS - (time ^ last).leading_zeros()) as usize
}

impl<E> EventQueue<E> {
    pub(super) fn new() -> Self {
        EventQueue {
            buckets: (0..=u64::BITS).map(|_| Vec::new()).collect(),
            head: 0,
            last: 0,
            past: BinaryHeap::new(),
            seq: 0,
            slots: Vec::new(),
            free: Vec::new(),
            spare: Vec::new(),
        }
    }

    /// Queues `event` at `at`, after every event already queued for that time.
    pub(super) fn push(&mut self, at: Time, event: E) {
        let time = at.as_nanos();
        self.seq += 1;
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = Some(event);
                slot
            }
            None => {
                self.slots.push(Some(event));
                u32::try_from(self.slots.len() - 1).expect("fewer than 2^32 queued events")
            }
        };
        if time < self.last {
            self.past.push(Reverse((time, self.seq, slot)));
        } else {
            self.buckets[bucket(time, self.last)].push((time, slot));
        }
    }

    /// Takes the earliest event if it is due at or before `until`.
    pub(super) fn pop_until(&mut self, until: Time) -> Option<(Time, E)> {
        if let Some(Reverse((time, _, slot))) = self.past.peek().copied() {
            if time > until.as_nanos() {
                return None;
            }
            self.past.pop();
            return self.take(time, slot);
        }
        if self.head == self.buckets[0].len() {
            self.head = 0;
            self.buckets[0].clear();
            let i = self.buckets.iter().position(|b| !b.is_empty())?;
            let min = self.buckets[i].iter().map(|(t, _)| *t).min()?;
            if min > until.as_nanos() {
                return None;
            }
            self.last = min;
            let mut spread =
                std::mem::replace(&mut self.buckets[i], std::mem::take(&mut self.spare));
            for &(time, slot) in &spread {
                self.buckets[bucket(time, min)].push((time, slot));
            }
            spread.clear();
            self.spare = spread;
        } else if self.last > until.as_nanos() {
            return None;
        }
        let (time, slot) = *self.buckets[0].get(self.head)?;
        self.head += 1;
        self.take(time, slot)
    }

    fn take(&mut self, time: u64, slot: u32) -> Option<(Time, E)> {
        let event = self.slots[slot as usize].take()?;
        self.free.push(slot);
        Some((Time::from_nanos(time), event))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn earliest_first_and_ties_in_scheduling_order() {
        let mut q = EventQueue::new();
        let t = |ms| Time::ZERO + Duration::from_millis(ms);
        q.push(t(5), "c");
        q.push(t(1), "a");
        q.push(t(5), "d");
        q.push(t(3), "b");
        assert!(q.pop_until(t(0)).is_none(), "nothing is due yet");
        let mut order = Vec::new();
        while let Some((_, e)) = q.pop_until(t(10)) {
            order.push(e);
            if e == "b" {
                q.push(t(5), "e");
                q.push(t(3), "b2");
            }
        }
        assert_eq!(order, ["a", "b", "b2", "c", "d", "e"]);
        assert_eq!(q.slots.len(), 4, "slots are reused");
    }

    /// Against a sorted reference: many pushes interleaved with pops, at times
    /// spread over many orders of magnitude.
    #[test]
    fn matches_a_sorted_reference() {
        let mut q = EventQueue::new();
        let mut reference: Vec<(u64, u64)> = Vec::new();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut now = 0u64;
        let mut seq = 0u64;
        let mut taken = Vec::new();
        let mut expected = Vec::new();
        for round in 0..2000u64 {
            for _ in 0..(round % 7) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let at = now + (x % (1 << (x % 40)));
                seq += 1;
                q.push(Time::from_nanos(at), seq);
                reference.push((at, seq));
            }
            reference.sort_unstable();
            if let Some((at, s)) = q.pop_until(Time::from_nanos(u64::MAX)) {
                let first = reference.remove(0);
                now = at.as_nanos();
                taken.push((now, s));
                expected.push(first);
            }
        }
        assert_eq!(taken, expected);
    }
}
