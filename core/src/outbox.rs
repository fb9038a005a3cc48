//! Draining the output queues of an agent and its services so that an idle agent
//! holds no queue buffer.
//!
//! Every queue is drained to empty after each call into the agent, and a simulation
//! of 10,000 agents touches any one of them rarely: a buffer kept at its largest
//! size is cold by the agent's next call, and writing the next outputs into it
//! missed the cache at every line (the largest share of the extra cache misses of
//! place-10k after the service seam). A buffer given back when the queue is
//! drained is reused by the allocator for the next agent's outputs while still
//! warm, and idle agents hold no memory for outputs (about 100 MB on place-10k).
//!
//! Invariant: order is the queue's; only the buffer is given back.

use std::collections::VecDeque;

/// The front of `queue`, giving its buffer back once it is empty.
///
/// Most calls find the queue empty (every service is drained after every call into
/// the agent): that case returns before `pop_front`, whose `Option<T>` of a few
/// hundred bytes was copied out whole even when `None` (16 million empty takes on
/// place-10k shrunk to 1,000 hosts, a quarter of its instructions in `memcpy`).
#[inline]
pub(crate) fn take_next<T>(queue: &mut VecDeque<T>) -> Option<T> {
    if queue.is_empty() {
        if queue.capacity() > 0 {
            *queue = VecDeque::new();
        }
        return None;
    }
    queue.pop_front()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_kept_and_a_drained_queue_holds_no_buffer() {
        let mut q: VecDeque<u32> = (1..=5).collect();
        let mut taken = Vec::new();
        while let Some(x) = take_next(&mut q) {
            taken.push(x);
        }
        assert_eq!(taken, [1, 2, 3, 4, 5]);
        assert_eq!(q.capacity(), 0);
    }
}
