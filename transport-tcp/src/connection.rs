//! One authenticated connection's I/O: writes the peer's queued frames and
//! reads frames into the inbox, both from a single task and a single poll
//! function over any byte stream (a tokio or madsim `TcpStream`, or an
//! in-memory duplex in tests).
//!
//! Invariants: every write hands the kernel a whole coalesced batch (as many
//! queued frames as there were); the read buffer is reused and only grows,
//! up to one maximal frame, when a frame's header announces more than it
//! holds; bytes that are not a valid frame end the connection with a typed
//! error (never a panic, never an allocation beyond the limit); reading pauses
//! while the inbox is full. A round of work is bounded, after which the task
//! yields, so one busy connection cannot starve the others.

use crate::frame::{self, Decoded, FrameError};
use crate::inbox::{Inbox, EVENT_OVERHEAD};
use crate::queue::{ConnId, SendQueue, Take};
use nefele_core::{NodeId, TransportEvent};
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The initial read buffer, in bytes.
const READ_BUF: usize = 64 * 1024;
/// Compact the read buffer when less than this is free after the data.
const MIN_READ: usize = 4 * 1024;
/// Read/write rounds per poll before yielding to other tasks.
const ROUNDS: usize = 16;

/// How a connection ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// The peer closed the stream.
    Closed,
    /// Another connection to the same peer took over, or the peer was removed.
    Replaced,
}

/// Why a connection failed. It is closed; frames queued on it may be lost.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnectionError {
    /// The stream failed.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    /// The peer sent bytes that are not a frame (e.g. an oversized length).
    #[error("bad frame from peer: {0}")]
    Frame(#[from] FrameError),
    /// The stream accepted no bytes.
    #[error("stream accepted no bytes")]
    WriteZero,
}

pub(crate) struct Connection<S> {
    stream: S,
    peer: NodeId,
    id: ConnId,
    queue: Arc<SendQueue>,
    inbox: Arc<Inbox>,
    max_frame: usize,
    read_buf: Vec<u8>,
    read_start: usize,
    read_end: usize,
    /// Header plus payload length of the incomplete frame at `read_start`, when known.
    read_wanted: Option<usize>,
    write_buf: Vec<u8>,
    write_pos: usize,
    flushed: bool,
    batch: Vec<TransportEvent>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    pub(crate) fn new(
        stream: S,
        peer: NodeId,
        id: ConnId,
        queue: Arc<SendQueue>,
        inbox: Arc<Inbox>,
        max_frame: usize,
    ) -> Self {
        Connection {
            stream,
            peer,
            id,
            queue,
            inbox,
            max_frame,
            read_buf: vec![0; READ_BUF],
            read_start: 0,
            read_end: 0,
            read_wanted: None,
            write_buf: Vec::new(),
            write_pos: 0,
            flushed: true,
            batch: Vec::new(),
        }
    }

    /// Carries frames both ways until the stream ends, fails, or the queue is taken over.
    pub(crate) async fn run(mut self) -> Result<Ended, ConnectionError> {
        poll_fn(|cx| self.poll_run(cx)).await
    }

    fn poll_run(&mut self, cx: &mut Context<'_>) -> Poll<Result<Ended, ConnectionError>> {
        for _ in 0..ROUNDS {
            let wrote = match self.poll_write_side(cx) {
                Ok(Some(progress)) => progress,
                Ok(None) => return Poll::Ready(Ok(Ended::Replaced)),
                Err(err) => return Poll::Ready(Err(err)),
            };
            let read = match self.poll_read_side(cx) {
                Ok(Some(progress)) => progress,
                Ok(None) => return Poll::Ready(Ok(Ended::Closed)),
                Err(err) => return Poll::Ready(Err(err)),
            };
            if !wrote && !read {
                // Every source of progress has registered the waker.
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// `Some(progress)`, or `None` when this connection no longer owns the queue.
    fn poll_write_side(&mut self, cx: &mut Context<'_>) -> Result<Option<bool>, ConnectionError> {
        let mut progress = false;
        if self.write_pos == self.write_buf.len() {
            if !self.flushed {
                match Pin::new(&mut self.stream).poll_flush(cx) {
                    Poll::Ready(result) => result?,
                    Poll::Pending => return Ok(Some(false)),
                }
                self.flushed = true;
            }
            self.write_buf.clear();
            self.write_pos = 0;
            match self.queue.poll_take(self.id, &mut self.write_buf, cx) {
                Take::Taken => {}
                Take::Empty => return Ok(Some(false)),
                Take::NotOwner => return Ok(None),
            }
        }
        while self.write_pos < self.write_buf.len() {
            match Pin::new(&mut self.stream).poll_write(cx, &self.write_buf[self.write_pos..]) {
                Poll::Ready(Ok(0)) => return Err(ConnectionError::WriteZero),
                Poll::Ready(Ok(n)) => {
                    self.write_pos += n;
                    self.flushed = false;
                    progress = true;
                }
                Poll::Ready(Err(err)) => return Err(err.into()),
                Poll::Pending => break,
            }
        }
        Ok(Some(progress))
    }

    /// `Some(progress)`, or `None` at the end of the stream.
    fn poll_read_side(&mut self, cx: &mut Context<'_>) -> Result<Option<bool>, ConnectionError> {
        if self.inbox.poll_space(cx).is_pending() {
            return Ok(Some(false));
        }
        self.make_room();
        let mut buf = ReadBuf::new(&mut self.read_buf[self.read_end..]);
        match Pin::new(&mut self.stream).poll_read(cx, &mut buf) {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(err)) => return Err(err.into()),
            Poll::Pending => return Ok(Some(false)),
        }
        let n = buf.filled().len();
        if n == 0 {
            return Ok(None);
        }
        self.read_end += n;
        self.deliver_frames()?;
        Ok(Some(true))
    }

    /// Ensures free space after `read_end`, moving the unparsed tail to the
    /// front, and growing the buffer to fit a frame whose header said it is larger.
    fn make_room(&mut self) {
        if self.read_start == self.read_end {
            self.read_start = 0;
            self.read_end = 0;
        }
        let wanted = self.read_wanted.unwrap_or(0);
        let tail_room = self.read_buf.len() - self.read_end;
        if tail_room < MIN_READ || self.read_start + wanted > self.read_buf.len() {
            self.read_buf.copy_within(self.read_start..self.read_end, 0);
            self.read_end -= self.read_start;
            self.read_start = 0;
        }
        if wanted > self.read_buf.len() {
            self.read_buf.resize(wanted, 0);
        }
    }

    /// Splits every whole frame off the read buffer and hands them to the inbox as one batch.
    fn deliver_frames(&mut self) -> Result<(), FrameError> {
        let mut bytes = 0;
        let result = loop {
            match frame::decode(
                &self.read_buf[self.read_start..self.read_end],
                self.max_frame,
            ) {
                Ok(Decoded::Frame { payload, consumed }) => {
                    bytes += payload.len() + EVENT_OVERHEAD;
                    self.batch.push(TransportEvent::Received {
                        from: self.peer,
                        frame: payload.to_vec(),
                    });
                    self.read_start += consumed;
                }
                Ok(Decoded::Incomplete { total }) => {
                    self.read_wanted = total;
                    break Ok(());
                }
                Err(err) => break Err(err),
            }
        };
        // Frames before a bad one were valid and authenticated: deliver them.
        self.inbox.push_frames(&mut self.batch, bytes);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const MAX: usize = 1024;

    fn setup() -> (
        tokio::io::DuplexStream,
        Arc<SendQueue>,
        Arc<Inbox>,
        Connection<tokio::io::DuplexStream>,
    ) {
        let (near, far) = tokio::io::duplex(64 * 1024);
        let queue = Arc::new(SendQueue::new(64 * 1024, MAX));
        queue.set_owner(Some(7));
        let inbox = Arc::new(Inbox::new(1 << 20));
        let conn = Connection::new(near, NodeId(2), 7, queue.clone(), inbox.clone(), MAX);
        (far, queue, inbox, conn)
    }

    fn drain(inbox: &Inbox) -> VecDeque<TransportEvent> {
        let mut out = VecDeque::new();
        let _ = inbox.poll_drain(&mut out, None);
        out
    }

    #[tokio::test]
    async fn frames_flow_both_ways_and_eof_ends_the_connection() {
        let (mut far, queue, inbox, conn) = setup();
        let task = tokio::spawn(conn.run());
        queue.push(b"out-1").unwrap();
        queue.push(b"out-2").unwrap();
        let mut got = [0; 18];
        far.read_exact(&mut got).await.unwrap();
        assert_eq!(&got[..9], b"\0\0\0\x05out-1");
        let mut bytes = Vec::new();
        // A frame split across writes, then a whole one.
        frame::encode_into(&mut bytes, b"in-1", MAX).unwrap();
        frame::encode_into(&mut bytes, b"in-2", MAX).unwrap();
        far.write_all(&bytes[..3]).await.unwrap();
        tokio::task::yield_now().await;
        far.write_all(&bytes[3..]).await.unwrap();
        drop(far);
        assert_eq!(task.await.unwrap().unwrap(), Ended::Closed);
        let events: Vec<_> = drain(&inbox).into_iter().collect();
        assert_eq!(
            events,
            [
                TransportEvent::Received {
                    from: NodeId(2),
                    frame: b"in-1".to_vec()
                },
                TransportEvent::Received {
                    from: NodeId(2),
                    frame: b"in-2".to_vec()
                },
            ]
        );
    }

    #[tokio::test]
    async fn an_oversized_header_closes_with_a_typed_error() {
        let (mut far, _queue, inbox, conn) = setup();
        let task = tokio::spawn(conn.run());
        let mut bytes = Vec::new();
        frame::encode_into(&mut bytes, b"fine", MAX).unwrap();
        bytes.extend_from_slice(&u32::MAX.to_be_bytes());
        far.write_all(&bytes).await.unwrap();
        let err = task.await.unwrap().unwrap_err();
        assert!(
            matches!(err, ConnectionError::Frame(FrameError::TooLarge { .. })),
            "{err:?}"
        );
        assert_eq!(drain(&inbox).len(), 1);
    }

    #[tokio::test]
    async fn a_frame_larger_than_the_initial_buffer_is_received() {
        let (near, far) = tokio::io::duplex(1 << 20);
        let queue = Arc::new(SendQueue::new(1 << 20, 200_000));
        queue.set_owner(Some(1));
        let inbox = Arc::new(Inbox::new(1 << 20));
        let conn = Connection::new(near, NodeId(2), 1, queue, inbox.clone(), 200_000);
        let task = tokio::spawn(conn.run());
        let mut far = far;
        let mut bytes = Vec::new();
        frame::encode_into(&mut bytes, &[3; 150_000], 200_000).unwrap();
        frame::encode_into(&mut bytes, &[4; 10], 200_000).unwrap();
        far.write_all(&bytes).await.unwrap();
        drop(far);
        assert_eq!(task.await.unwrap().unwrap(), Ended::Closed);
        let events = drain(&inbox);
        assert!(
            matches!(&events[0], TransportEvent::Received { frame, .. } if frame.len() == 150_000)
        );
        assert!(matches!(&events[1], TransportEvent::Received { frame, .. } if frame == &[4; 10]));
    }

    #[tokio::test]
    async fn losing_ownership_ends_the_connection() {
        let (_far, queue, _inbox, conn) = setup();
        let task = tokio::spawn(conn.run());
        tokio::task::yield_now().await;
        queue.set_owner(Some(8));
        assert_eq!(task.await.unwrap().unwrap(), Ended::Replaced);
    }
}
