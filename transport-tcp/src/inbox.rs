//! The bounded queue of events from the connections to the driver.
//!
//! Connections push whole batches (every frame parsed from one read, under one
//! lock, with one wake of the driver); the driver swaps the whole queue out at
//! once, so neither side pays a lock or a wake-up per frame.
//!
//! Invariants: frame events in the queue account for at most `limit` bytes
//! plus one batch; a connection asks [`Inbox::poll_space`] before every read and
//! stops reading while the queue is over its limit, so a driver that does not
//! keep up pushes back through TCP flow control to the sender's bounded queue,
//! and memory stays bounded. Peer up/down events are never refused (they are
//! few and bounded by the number of connections). The order of events pushed
//! by one connection is kept.

use nefele_core::TransportEvent;
use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

/// Bytes charged per frame event on top of its payload (the event and its allocation).
pub(crate) const EVENT_OVERHEAD: usize = 64;

#[derive(Debug)]
pub(crate) struct Inbox {
    state: Mutex<State>,
    limit: usize,
}

#[derive(Debug, Default)]
struct State {
    events: VecDeque<TransportEvent>,
    frame_bytes: usize,
    driver: Option<Waker>,
    readers: Vec<Waker>,
}

impl Inbox {
    /// An inbox that stops readers once `limit` bytes of frames wait.
    pub(crate) fn new(limit: usize) -> Self {
        Inbox {
            state: Mutex::new(State::default()),
            limit,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update is a single push, swap or store: a poisoned lock is consistent.
        self.state
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Appends `batch` (frame events worth `frame_bytes`), leaving `batch` empty.
    pub(crate) fn push_frames(&self, batch: &mut Vec<TransportEvent>, frame_bytes: usize) {
        if batch.is_empty() {
            return;
        }
        let waker = {
            let mut state = self.lock();
            state.events.extend(batch.drain(..));
            state.frame_bytes += frame_bytes;
            state.driver.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Appends a peer up/down event.
    pub(crate) fn push_event(&self, event: TransportEvent) {
        let waker = {
            let mut state = self.lock();
            state.events.push_back(event);
            state.driver.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Ready when a reader may read more; otherwise wakes it once the driver drains.
    pub(crate) fn poll_space(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut state = self.lock();
        if state.frame_bytes < self.limit {
            return Poll::Ready(());
        }
        if !state.readers.iter().any(|w| w.will_wake(cx.waker())) {
            state.readers.push(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Moves every queued event into `out` (which must be empty); when there is
    /// none, registers the driver's waker and returns `Pending`.
    pub(crate) fn poll_drain(
        &self,
        out: &mut VecDeque<TransportEvent>,
        cx: Option<&mut Context<'_>>,
    ) -> Poll<()> {
        debug_assert!(out.is_empty());
        let readers = {
            let mut state = self.lock();
            if state.events.is_empty() {
                if let Some(cx) = cx {
                    match &state.driver {
                        Some(waker) if waker.will_wake(cx.waker()) => {}
                        _ => state.driver = Some(cx.waker().clone()),
                    }
                }
                return Poll::Pending;
            }
            std::mem::swap(&mut state.events, out);
            state.frame_bytes = 0;
            std::mem::take(&mut state.readers)
        };
        for waker in readers {
            waker.wake();
        }
        Poll::Ready(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nefele_core::NodeId;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn frame(byte: u8) -> TransportEvent {
        TransportEvent::Received {
            from: NodeId(1),
            frame: vec![byte],
        }
    }

    #[test]
    fn readers_stop_over_the_limit_and_resume_after_a_drain() {
        let inbox = Inbox::new(100);
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(counter.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(inbox.poll_space(&mut cx).is_ready());
        inbox.push_frames(&mut vec![frame(1), frame(2)], 120);
        assert!(inbox.poll_space(&mut cx).is_pending());
        let mut out = VecDeque::new();
        assert!(inbox.poll_drain(&mut out, Some(&mut cx)).is_ready());
        assert_eq!(out, [frame(1), frame(2)]);
        assert_eq!(counter.0.load(Ordering::SeqCst), 1);
        assert!(inbox.poll_space(&mut cx).is_ready());
    }

    #[test]
    fn the_driver_is_woken_once_per_batch() {
        let inbox = Inbox::new(100);
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(counter.clone());
        let mut cx = Context::from_waker(&waker);
        let mut out = VecDeque::new();
        assert!(inbox.poll_drain(&mut out, Some(&mut cx)).is_pending());
        inbox.push_frames(&mut vec![frame(1), frame(2), frame(3)], 3);
        inbox.push_event(TransportEvent::PeerDown(NodeId(1)));
        assert_eq!(counter.0.load(Ordering::SeqCst), 1);
        assert!(inbox.poll_drain(&mut out, None).is_ready());
        assert_eq!(out.len(), 4);
    }
}
