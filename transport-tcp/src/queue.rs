//! The bounded send queue of one peer, which is also the write coalescer.
//!
//! [`SendQueue::push`] appends a whole frame (length prefix and payload) to a
//! byte buffer; the connection that owns the queue swaps the whole buffer out
//! in [`SendQueue::poll_take`] and writes it with one call, so a burst of small
//! frames becomes one `write`. The two buffers are swapped back and forth, so
//! the steady state allocates nothing per frame.
//!
//! Invariants: the buffer holds only whole frames and never more than
//! `capacity` bytes (a push that would pass it fails with
//! [`PushError::Full`] and changes nothing), so a peer's memory is at most
//! twice `capacity` (the queue plus the batch being written). Only the
//! connection named as owner may take frames, so a replaced connection can
//! never steal frames from its successor. The owner's waker is woken once when
//! the buffer goes from empty to non-empty, not once per frame. Frames queued
//! while no connection is up wait for the next one.

use crate::frame::{self, FrameError};
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Waker};

/// Identifies one connection of the transport.
pub(crate) type ConnId = u64;

/// Why a frame was not queued. Nothing was queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PushError {
    /// The queue holds `capacity` bytes already (backpressure).
    Full,
    /// The frame cannot be framed (empty or over the limit).
    Frame(FrameError),
    /// The peer was removed.
    Closed,
}

/// The result of [`SendQueue::poll_take`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Take {
    /// Frames were swapped into the caller's buffer.
    Taken,
    /// Nothing queued; the caller is woken on the next push.
    Empty,
    /// The caller no longer owns the queue (replaced, or the peer was removed).
    NotOwner,
}

#[derive(Debug)]
pub(crate) struct SendQueue {
    state: Mutex<State>,
    capacity: usize,
    max_frame: usize,
}

#[derive(Debug, Default)]
struct State {
    buf: Vec<u8>,
    owner: Option<ConnId>,
    waker: Option<Waker>,
    closed: bool,
}

impl SendQueue {
    /// A queue of at most `capacity` bytes of frames of at most `max_frame` bytes each.
    pub(crate) fn new(capacity: usize, max_frame: usize) -> Self {
        SendQueue {
            state: Mutex::new(State::default()),
            capacity,
            max_frame,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere cannot leave `State` half-updated: every update is one
        // buffer append, swap or field store. So a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Appends one frame, or fails without queueing anything.
    pub(crate) fn push(&self, payload: &[u8]) -> Result<(), PushError> {
        frame::check_len(payload.len(), self.max_frame).map_err(PushError::Frame)?;
        let waker = {
            let mut state = self.lock();
            if state.closed {
                return Err(PushError::Closed);
            }
            if state.buf.len() + frame::HEADER_LEN + payload.len() > self.capacity {
                return Err(PushError::Full);
            }
            let was_empty = state.buf.is_empty();
            frame::encode_into(&mut state.buf, payload, self.max_frame)
                .map_err(PushError::Frame)?;
            if was_empty {
                state.waker.take()
            } else {
                None
            }
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// Swaps the queued frames into `out` (which must be empty) if `conn` owns the queue.
    pub(crate) fn poll_take(&self, conn: ConnId, out: &mut Vec<u8>, cx: &mut Context<'_>) -> Take {
        debug_assert!(out.is_empty());
        let mut state = self.lock();
        if state.owner != Some(conn) || state.closed {
            return Take::NotOwner;
        }
        if state.buf.is_empty() {
            match &state.waker {
                Some(waker) if waker.will_wake(cx.waker()) => {}
                _ => state.waker = Some(cx.waker().clone()),
            }
            return Take::Empty;
        }
        std::mem::swap(&mut state.buf, out);
        Take::Taken
    }

    /// Makes `conn` the only connection that takes frames from now on.
    pub(crate) fn set_owner(&self, conn: Option<ConnId>) {
        let waker = {
            let mut state = self.lock();
            state.owner = conn;
            state.waker.take()
        };
        // The previous owner notices it was replaced.
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Refuses every later push and take, and drops what is queued.
    pub(crate) fn close(&self) {
        let waker = {
            let mut state = self.lock();
            state.closed = true;
            state.buf = Vec::new();
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Bytes queued and not yet taken.
    pub(crate) fn queued_bytes(&self) -> usize {
        self.lock().buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counting() -> (Arc<CountingWaker>, Waker) {
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        (counter.clone(), Waker::from(counter))
    }

    #[test]
    fn frames_coalesce_into_one_take_and_wake_once() {
        let queue = SendQueue::new(1024, 100);
        queue.set_owner(Some(1));
        let (count, waker) = counting();
        let mut cx = Context::from_waker(&waker);
        let mut out = Vec::new();
        assert_eq!(queue.poll_take(1, &mut out, &mut cx), Take::Empty);
        for _ in 0..10 {
            queue.push(b"abc").unwrap();
        }
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(queue.poll_take(1, &mut out, &mut cx), Take::Taken);
        assert_eq!(out.len(), 10 * 7);
        assert_eq!(&out[..7], &[0, 0, 0, 3, b'a', b'b', b'c']);
    }

    #[test]
    fn a_full_queue_refuses_without_changing() {
        let queue = SendQueue::new(20, 100);
        queue.push(&[1; 8]).unwrap();
        assert_eq!(queue.push(&[1; 8]), Err(PushError::Full));
        assert_eq!(queue.queued_bytes(), 12);
        assert_eq!(queue.push(&[1; 4]), Ok(()));
        assert_eq!(queue.push(&[]), Err(PushError::Frame(FrameError::Empty)));
    }

    #[test]
    fn only_the_owner_takes_and_a_replaced_owner_is_woken() {
        let queue = SendQueue::new(1024, 100);
        queue.set_owner(Some(1));
        let (count, waker) = counting();
        let mut cx = Context::from_waker(&waker);
        let mut out = Vec::new();
        assert_eq!(queue.poll_take(1, &mut out, &mut cx), Take::Empty);
        queue.set_owner(Some(2));
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        queue.push(b"x").unwrap();
        assert_eq!(queue.poll_take(1, &mut out, &mut cx), Take::NotOwner);
        assert_eq!(queue.poll_take(2, &mut out, &mut cx), Take::Taken);
    }

    #[test]
    fn a_closed_queue_refuses_everything() {
        let queue = SendQueue::new(1024, 100);
        queue.set_owner(Some(1));
        queue.push(b"x").unwrap();
        queue.close();
        assert_eq!(queue.push(b"x"), Err(PushError::Closed));
        let (_, waker) = counting();
        let mut out = Vec::new();
        assert_eq!(
            queue.poll_take(1, &mut out, &mut Context::from_waker(&waker)),
            Take::NotOwner
        );
    }
}
