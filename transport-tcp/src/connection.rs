//! One authenticated connection's I/O: seals the peer's queued frames into
//! encrypted records ([`crate::record`]) and writes them, and reads, opens and
//! splits records into frames for the inbox, both from a single task and a
//! single poll function over any byte stream (a tokio or madsim `TcpStream`,
//! or an in-memory duplex in tests).
//!
//! Invariants: every write hands the kernel a whole coalesced batch (as many
//! queued frames as there were, sealed as few records as fit); the read
//! buffer is reused and only grows, up to one maximal record, when a record's
//! header announces more than it holds; the plaintext buffer holds at most one
//! partial frame plus what one read opened; bytes that are not a valid record
//! or frame end the connection with a typed error (never a panic, never an
//! allocation beyond the limits), after the frames of the records before them
//! are delivered; reading pauses while the inbox is full. A round of work is
//! bounded, after which the task yields, so one busy connection cannot starve
//! the others.

use crate::auth::SessionKeys;
use crate::frame::{self, Decoded, FrameError};
use crate::inbox::{Inbox, EVENT_OVERHEAD};
use crate::queue::{ConnId, SendQueue, Take};
use crate::record::{Opened, Opener, RecordError, Sealer};
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
    /// The peer sent a record that does not open (tampering on the path, or a bug).
    #[error("bad record from peer: {0}")]
    Record(#[from] RecordError),
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
    sealer: Sealer,
    opener: Opener,
    /// Records as read, not yet opened: `read_buf[read_start..read_end]`.
    read_buf: Vec<u8>,
    read_start: usize,
    read_end: usize,
    /// Header plus body length of the incomplete record at `read_start`, when known.
    read_wanted: Option<usize>,
    /// The opened frame stream, not yet split into frames.
    plain: Vec<u8>,
    /// Frames taken from the queue, to be sealed.
    frames_out: Vec<u8>,
    /// Sealed records being written: `write_buf[write_pos..]` is still to go.
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
        keys: &SessionKeys,
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
            sealer: Sealer::new(&keys.send),
            opener: Opener::new(&keys.recv),
            read_buf: vec![0; READ_BUF],
            read_start: 0,
            read_end: 0,
            read_wanted: None,
            plain: Vec::new(),
            frames_out: Vec::new(),
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
            self.frames_out.clear();
            match self.queue.poll_take(self.id, &mut self.frames_out, cx) {
                Take::Taken => self.sealer.seal(&self.frames_out, &mut self.write_buf)?,
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
        let opened = self.open_records();
        // Frames of the records before a bad one were authenticated: deliver them.
        self.deliver_frames()?;
        opened?;
        Ok(Some(true))
    }

    /// Ensures free space after `read_end`, moving the unopened tail to the
    /// front, and growing the buffer to fit a record whose header said it is larger.
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

    /// Opens every whole record in the read buffer onto the plaintext stream.
    fn open_records(&mut self) -> Result<(), RecordError> {
        loop {
            let at = self.read_start;
            match self.opener.open(&mut self.read_buf[at..self.read_end])? {
                Opened::Record {
                    plaintext,
                    consumed,
                } => {
                    self.plain.extend_from_slice(
                        &self.read_buf[at + plaintext.start..at + plaintext.end],
                    );
                    self.read_start += consumed;
                }
                Opened::Incomplete { total } => {
                    self.read_wanted = total;
                    return Ok(());
                }
            }
        }
    }

    /// Splits every whole frame off the plaintext and hands them to the inbox as one batch.
    fn deliver_frames(&mut self) -> Result<(), FrameError> {
        let mut bytes = 0;
        let mut start = 0;
        let result = loop {
            match frame::decode(&self.plain[start..], self.max_frame) {
                Ok(Decoded::Frame { payload, consumed }) => {
                    bytes += payload.len() + EVENT_OVERHEAD;
                    self.batch.push(TransportEvent::Received {
                        from: self.peer,
                        frame: payload.to_vec(),
                    });
                    start += consumed;
                }
                Ok(Decoded::Incomplete { .. }) => break Ok(()),
                Err(err) => break Err(err),
            }
        };
        self.plain.drain(..start);
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
    const TO_NEAR: [u8; 32] = [1; 32];
    const TO_FAR: [u8; 32] = [2; 32];

    fn near_keys() -> SessionKeys {
        SessionKeys {
            send: TO_FAR,
            recv: TO_NEAR,
        }
    }

    /// The far end of a connection under test: seals and opens with the mirrored keys.
    struct Far {
        stream: tokio::io::DuplexStream,
        sealer: Sealer,
        opener: Opener,
        read: Vec<u8>,
    }

    impl Far {
        fn new(stream: tokio::io::DuplexStream) -> Self {
            Far {
                stream,
                sealer: Sealer::new(&TO_NEAR),
                opener: Opener::new(&TO_FAR),
                read: Vec::new(),
            }
        }

        /// `frames` framed and sealed as one record.
        fn seal(&mut self, frames: &[&[u8]], max: usize) -> Vec<u8> {
            let mut plain = Vec::new();
            for f in frames {
                frame::encode_into(&mut plain, f, max).unwrap();
            }
            let mut out = Vec::new();
            self.sealer.seal(&plain, &mut out).unwrap();
            out
        }

        /// Reads until `len` plaintext bytes have been opened; returns them.
        async fn read_plain(&mut self, len: usize) -> Vec<u8> {
            let mut plain = Vec::new();
            while plain.len() < len {
                let mut chunk = [0; 4096];
                let n = self.stream.read(&mut chunk).await.unwrap();
                assert!(n > 0, "closed early");
                self.read.extend_from_slice(&chunk[..n]);
                while let Ok(Opened::Record {
                    plaintext,
                    consumed,
                }) = self.opener.open(&mut self.read)
                {
                    plain.extend_from_slice(&self.read[plaintext]);
                    self.read.drain(..consumed);
                }
            }
            plain
        }
    }

    fn setup() -> (
        Far,
        Arc<SendQueue>,
        Arc<Inbox>,
        Connection<tokio::io::DuplexStream>,
    ) {
        let (near, far) = tokio::io::duplex(64 * 1024);
        let queue = Arc::new(SendQueue::new(64 * 1024, MAX));
        queue.set_owner(Some(7));
        let inbox = Arc::new(Inbox::new(1 << 20));
        let conn = Connection::new(
            near,
            NodeId(2),
            7,
            &near_keys(),
            queue.clone(),
            inbox.clone(),
            MAX,
        );
        (Far::new(far), queue, inbox, conn)
    }

    fn drain(inbox: &Inbox) -> VecDeque<TransportEvent> {
        let mut out = VecDeque::new();
        let _ = inbox.poll_drain(&mut out, None);
        out
    }

    fn received(frame: &[u8]) -> TransportEvent {
        TransportEvent::Received {
            from: NodeId(2),
            frame: frame.to_vec(),
        }
    }

    #[tokio::test]
    async fn frames_flow_both_ways_sealed_and_eof_ends_the_connection() {
        let (mut far, queue, inbox, conn) = setup();
        let task = tokio::spawn(conn.run());
        queue.push(b"out-1").unwrap();
        queue.push(b"out-2").unwrap();
        let plain = far.read_plain(18).await;
        assert_eq!(&plain[..9], b"\0\0\0\x05out-1");
        // Two frames in one record, split across writes; then a record holding half a frame.
        let bytes = far.seal(&[b"in-1", b"in-2"], MAX);
        far.stream.write_all(&bytes[..3]).await.unwrap();
        tokio::task::yield_now().await;
        far.stream.write_all(&bytes[3..]).await.unwrap();
        let mut split = Vec::new();
        frame::encode_into(&mut split, b"in-3", MAX).unwrap();
        for half in [&split[..5], &split[5..]] {
            let mut out = Vec::new();
            far.sealer.seal(half, &mut out).unwrap();
            far.stream.write_all(&out).await.unwrap();
        }
        drop(far);
        assert_eq!(task.await.unwrap().unwrap(), Ended::Closed);
        let events: Vec<_> = drain(&inbox).into_iter().collect();
        assert_eq!(
            events,
            [received(b"in-1"), received(b"in-2"), received(b"in-3")]
        );
    }

    #[tokio::test]
    async fn an_altered_record_closes_after_the_good_ones_are_delivered() {
        let (mut far, _queue, inbox, conn) = setup();
        let task = tokio::spawn(conn.run());
        let good = far.seal(&[b"fine"], MAX);
        let mut bad = far.seal(&[b"evil"], MAX);
        let last = bad.len() - 1;
        bad[last] ^= 1;
        far.stream.write_all(&[good, bad].concat()).await.unwrap();
        let err = task.await.unwrap().unwrap_err();
        assert!(
            matches!(err, ConnectionError::Record(RecordError::Forged { seq: 1 })),
            "{err:?}"
        );
        assert_eq!(drain(&inbox), [received(b"fine")]);
    }

    #[tokio::test]
    async fn plaintext_frames_are_not_accepted() {
        let (mut far, _queue, inbox, conn) = setup();
        let task = tokio::spawn(conn.run());
        let mut bytes = Vec::new();
        frame::encode_into(&mut bytes, &[b'x'; 40], MAX).unwrap();
        far.stream.write_all(&bytes).await.unwrap();
        let err = task.await.unwrap().unwrap_err();
        assert!(matches!(err, ConnectionError::Record(_)), "{err:?}");
        assert!(drain(&inbox).is_empty());
    }

    #[tokio::test]
    async fn an_oversized_frame_header_closes_with_a_typed_error() {
        let (mut far, _queue, inbox, conn) = setup();
        let task = tokio::spawn(conn.run());
        let mut plain = Vec::new();
        frame::encode_into(&mut plain, b"fine", MAX).unwrap();
        plain.extend_from_slice(&u32::MAX.to_be_bytes());
        let mut bytes = Vec::new();
        far.sealer.seal(&plain, &mut bytes).unwrap();
        far.stream.write_all(&bytes).await.unwrap();
        let err = task.await.unwrap().unwrap_err();
        assert!(
            matches!(err, ConnectionError::Frame(FrameError::TooLarge { .. })),
            "{err:?}"
        );
        assert_eq!(drain(&inbox).len(), 1);
    }

    #[tokio::test]
    async fn a_frame_larger_than_a_record_and_the_buffer_is_received() {
        let (near, far) = tokio::io::duplex(1 << 20);
        let queue = Arc::new(SendQueue::new(1 << 20, 200_000));
        queue.set_owner(Some(1));
        let inbox = Arc::new(Inbox::new(1 << 20));
        let conn = Connection::new(
            near,
            NodeId(2),
            1,
            &near_keys(),
            queue,
            inbox.clone(),
            200_000,
        );
        let task = tokio::spawn(conn.run());
        let mut far = Far::new(far);
        let bytes = far.seal(&[&[3; 150_000], &[4; 10]], 200_000);
        far.stream.write_all(&bytes).await.unwrap();
        drop(far);
        assert_eq!(task.await.unwrap().unwrap(), Ended::Closed);
        let events = drain(&inbox);
        assert!(
            matches!(&events[0], TransportEvent::Received { frame, .. } if frame.len() == 150_000)
        );
        assert_eq!(events[1], received(&[4; 10]));
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
