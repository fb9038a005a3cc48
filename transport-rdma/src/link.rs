//! One peer's RDMA link: its queue pair, its three registered regions, the
//! rings and credits over them, and the set-up state of [`crate::control`].
//!
//! Registered memory of a link:
//!
//! ```text
//! send region    send_slots × slot_size   fragments being sent (slot i reused after its completion)
//! recv region    recv_slots × slot_size   every slot posted as a receive, reposted once copied out
//! credit region  16 bytes                 [0..8) the peer writes its freed count of our sends here;
//!                                         [8..16) the source of our writes of the peer's count
//! ```
//!
//! Send path: a frame waits in a bounded byte queue (its limit is the
//! transport's back-pressure); [`Link::flush`] cuts it into fragments
//! ([`crate::frame`]) and posts each as a SEND — inline when header and
//! payload fit the device's inline limit, else from a send-ring slot — while
//! it has a credit and room on the send queue. Receive path: after the peer's
//! `Switch`, completions of the receive queue are taken in order, copied out,
//! reassembled, the slot reposted, and the freed count RDMA-written into the
//! peer's credit word (one write in flight at a time, so its source is never
//! changed while the NIC reads it).
//!
//! Invariants: data requests in flight ≤ `send_slots` (the send queue is one
//! deeper, for the credit write); messages unacknowledged by the peer's freed
//! count ≤ the peer's `recv_slots` (no receiver-not-ready, ever); fragments of
//! one frame are posted consecutively; any failed completion, impossible
//! counter or bad fragment is a [`LinkError`] after which the transport
//! destroys the link — nothing here panics on peer input.

use crate::control::Offer;
use crate::frame::{self, Assembler, FragmentError};
use crate::ring::{Credits, RecvRing, RingError, SlotRing};
use crate::verbs::{
    Completion, MrId, QpCaps, QpId, Queue, RemoteMr, SendOp, Verbs, VerbsError, WcStatus,
};
use nefele_core::{NodeId, TransportEvent};
use std::collections::VecDeque;

/// Offsets in the credit region.
const CREDIT_IN: usize = 0;
const CREDIT_OUT: usize = 8;
const CREDIT_REGION: usize = 16;
/// Work request ids: the kind in the top bits, a slot index below.
const WR_SLOT: u64 = 0;
const WR_INLINE: u64 = 1 << 62;
const WR_CREDIT: u64 = 2 << 62;
const WR_KIND: u64 = 3 << 62;
/// Completions taken per queue per round.
const BATCH: usize = 32;

/// The sizes of a link's rings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geometry {
    pub(crate) slot_size: usize,
    pub(crate) send_slots: u32,
    pub(crate) recv_slots: u32,
}

impl Geometry {
    /// Bytes a link registers (and so locks).
    pub(crate) fn registered_bytes(&self) -> usize {
        self.slot_size * (self.send_slots + self.recv_slots) as usize + CREDIT_REGION
    }
}

/// Why a link failed. The transport destroys it; frames in flight may be lost.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// A verb failed.
    #[error(transparent)]
    Verbs(#[from] VerbsError),
    /// A work request completed with an error (the peer is gone, or the link broke).
    #[error("{queue:?} completion failed: {status:?}")]
    Completion {
        /// Which queue.
        queue: Queue,
        /// Why.
        status: WcStatus,
    },
    /// The peer's counters or the completion order are inconsistent.
    #[error(transparent)]
    Ring(#[from] RingError),
    /// The peer sent a bad fragment.
    #[error("bad fragment: {0}")]
    Fragment(#[from] FragmentError),
    /// The peer's offer cannot work.
    #[error("unusable offer: {0}")]
    Offer(&'static str),
}

/// The send queue of a link is over its byte limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Full;

#[derive(Debug)]
pub(crate) struct Link {
    pub(crate) gen: u32,
    /// The generation of the peer's offer this link is connected to.
    pub(crate) peer_gen: Option<u32>,
    qp: QpId,
    send_mr: MrId,
    recv_mr: MrId,
    credit_mr: MrId,
    geometry: Geometry,
    max_inline: usize,
    send_ring: SlotRing,
    recv: RecvRing,
    /// Known once connected: credits against the peer's ring, its credit word, its slot size.
    peer: Option<(Credits, RemoteMr, usize)>,
    data_in_flight: u32,
    credit_write_in_flight: bool,
    pending: VecDeque<Vec<u8>>,
    pending_bytes: usize,
    queue_limit: usize,
    /// Payload bytes of the front pending frame already posted.
    front_sent: usize,
    assembler: Assembler,
    /// The peer is in RTS and we sent `Switch`: frames go over RDMA.
    pub(crate) sending: bool,
    /// The peer's `Switch` arrived: its TCP frames are all delivered, read the ring.
    pub(crate) receiving: bool,
    completions: Vec<Completion>,
    scratch: Vec<u8>,
}

impl Link {
    /// Registers the rings, creates the queue pair, moves it to INIT and posts every receive slot.
    pub(crate) fn open<V: Verbs>(
        v: &mut V,
        gen: u32,
        geometry: Geometry,
        max_frame: usize,
        queue_limit: usize,
    ) -> Result<Link, VerbsError> {
        let send_mr = v.register(geometry.slot_size * geometry.send_slots as usize)?;
        let recv_mr = match v.register(geometry.slot_size * geometry.recv_slots as usize) {
            Ok(mr) => mr,
            Err(e) => {
                v.deregister(send_mr);
                return Err(e);
            }
        };
        let regions = [send_mr, recv_mr];
        let undo = |v: &mut V, regions: &[MrId]| regions.iter().for_each(|&mr| v.deregister(mr));
        let credit_mr = v
            .register(CREDIT_REGION)
            .inspect_err(|_| undo(v, &regions))?;
        let regions = [send_mr, recv_mr, credit_mr];
        let qp = v
            .create_qp(QpCaps {
                send_depth: geometry.send_slots + 1,
                recv_depth: geometry.recv_slots,
            })
            .inspect_err(|_| undo(v, &regions))?;
        let link = Link {
            gen,
            peer_gen: None,
            qp,
            send_mr,
            recv_mr,
            credit_mr,
            geometry,
            max_inline: v.max_inline(),
            send_ring: SlotRing::new(geometry.send_slots),
            recv: RecvRing::new(geometry.recv_slots),
            peer: None,
            data_in_flight: 0,
            credit_write_in_flight: false,
            pending: VecDeque::new(),
            pending_bytes: 0,
            queue_limit,
            front_sent: 0,
            assembler: Assembler::new(max_frame),
            sending: false,
            receiving: false,
            completions: Vec::with_capacity(BATCH),
            scratch: vec![0; geometry.slot_size],
        };
        let setup = (|| {
            v.to_init(qp)?;
            for slot in 0..geometry.recv_slots {
                link.post_slot(v, slot)?;
            }
            Ok(())
        })();
        match setup {
            Ok(()) => Ok(link),
            Err(e) => {
                link.close(v);
                Err(e)
            }
        }
    }

    fn post_slot<V: Verbs>(&self, v: &mut V, slot: u32) -> Result<(), VerbsError> {
        let size = self.geometry.slot_size;
        v.post_recv(
            self.qp,
            WR_SLOT | u64::from(slot),
            self.recv_mr,
            slot as usize * size,
            size,
        )
    }

    /// This link's offer to the peer.
    pub(crate) fn offer<V: Verbs>(&self, v: &V) -> Offer {
        Offer {
            gen: self.gen,
            endpoint: v.endpoint(self.qp),
            recv_slots: self.geometry.recv_slots,
            slot_size: self.geometry.slot_size as u32,
            credit_word: RemoteMr {
                len: 8,
                ..v.remote(self.credit_mr)
            },
        }
    }

    /// Connects to the peer's offer: INIT → RTR → RTS.
    pub(crate) fn connect<V: Verbs>(&mut self, v: &mut V, offer: &Offer) -> Result<(), LinkError> {
        if offer.recv_slots == 0 {
            return Err(LinkError::Offer("no receive slots"));
        }
        if (offer.slot_size as usize) <= frame::HEADER_LEN {
            return Err(LinkError::Offer("slots smaller than a fragment header"));
        }
        if offer.credit_word.len < 8 {
            return Err(LinkError::Offer("credit word shorter than 8 bytes"));
        }
        v.to_rtr(self.qp, &offer.endpoint)?;
        v.to_rts(self.qp)?;
        let slot = self.geometry.slot_size.min(offer.slot_size as usize);
        self.peer = Some((Credits::new(offer.recv_slots), offer.credit_word, slot));
        self.peer_gen = Some(offer.gen);
        Ok(())
    }

    /// Queues `frame` and posts what credits allow.
    pub(crate) fn send<V: Verbs>(
        &mut self,
        v: &mut V,
        frame: &[u8],
    ) -> Result<Result<(), Full>, LinkError> {
        if self.pending_bytes + frame.len() > self.queue_limit {
            return Ok(Err(Full));
        }
        self.pending_bytes += frame.len();
        self.pending.push_back(frame.to_vec());
        self.flush(v)?;
        Ok(Ok(()))
    }

    /// Posts fragments of the pending frames while credits and the send queue allow.
    /// Returns whether anything was posted.
    pub(crate) fn flush<V: Verbs>(&mut self, v: &mut V) -> Result<bool, LinkError> {
        let mut posted = false;
        if !self.sending {
            return Ok(posted);
        }
        let Some((credits, _, peer_slot)) = &mut self.peer else {
            return Ok(posted);
        };
        let chunk_max = *peer_slot - frame::HEADER_LEN;
        while let Some(front) = self.pending.front() {
            if credits.available() == 0 || self.data_in_flight >= self.geometry.send_slots {
                break;
            }
            let chunk = (front.len() - self.front_sent).min(chunk_max);
            let last = self.front_sent + chunk == front.len();
            let payload = &front[self.front_sent..self.front_sent + chunk];
            let header = frame::encode_header(last, chunk);
            let len = frame::HEADER_LEN + chunk;
            if len <= self.max_inline {
                self.scratch.clear();
                self.scratch.extend_from_slice(&header);
                self.scratch.extend_from_slice(payload);
                v.post_send(self.qp, WR_INLINE, SendOp::SendInline(&self.scratch))?;
            } else {
                let slot = self
                    .send_ring
                    .acquire()
                    .expect("data in flight < send_slots, so a slot is free");
                let offset = slot as usize * self.geometry.slot_size;
                v.write(self.send_mr, offset, &header);
                v.write(self.send_mr, offset + frame::HEADER_LEN, payload);
                let op = SendOp::Send {
                    mr: self.send_mr,
                    offset,
                    len,
                };
                v.post_send(self.qp, WR_SLOT | u64::from(slot), op)?;
            }
            let spent = credits.spend();
            debug_assert!(spent, "a credit was available");
            self.data_in_flight += 1;
            posted = true;
            self.front_sent += chunk;
            if last {
                self.pending_bytes -= front.len();
                self.pending.pop_front();
                self.front_sent = 0;
            }
        }
        Ok(posted)
    }

    /// One round: send completions, the credit word, received fragments (when
    /// `room`), the credit write, pending frames. Returns whether anything happened.
    pub(crate) fn progress<V: Verbs>(
        &mut self,
        v: &mut V,
        peer: NodeId,
        room: bool,
        out: &mut VecDeque<TransportEvent>,
    ) -> Result<bool, LinkError> {
        let mut progress = false;
        self.completions.clear();
        v.poll(self.qp, Queue::Send, BATCH, &mut self.completions)?;
        for c in self.completions.drain(..) {
            progress = true;
            if let Err(status) = c.result {
                return Err(LinkError::Completion {
                    queue: Queue::Send,
                    status,
                });
            }
            match c.wr_id & WR_KIND {
                WR_CREDIT => self.credit_write_in_flight = false,
                WR_INLINE => self.data_in_flight -= 1,
                _ => {
                    self.send_ring.release((c.wr_id & !WR_KIND) as u32)?;
                    self.data_in_flight -= 1;
                }
            }
        }
        if let Some((credits, ..)) = &mut self.peer {
            let mut word = [0; 8];
            v.read(self.credit_mr, CREDIT_IN, &mut word);
            credits.update(u64::from_le_bytes(word))?;
        }
        if self.receiving && room {
            v.poll(self.qp, Queue::Recv, BATCH, &mut self.completions)?;
            for c in std::mem::take(&mut self.completions) {
                progress = true;
                let delivered = match c.result {
                    Ok(n) => n as usize,
                    Err(status) => {
                        return Err(LinkError::Completion {
                            queue: Queue::Recv,
                            status,
                        })
                    }
                };
                let slot = (c.wr_id & !WR_KIND) as u32;
                self.recv.receive(slot)?;
                let offset = slot as usize * self.geometry.slot_size;
                let mut header = [0; frame::HEADER_LEN];
                if delivered >= frame::HEADER_LEN {
                    v.read(self.recv_mr, offset, &mut header);
                }
                let (last, len) = frame::decode_header(&header, delivered)?;
                self.scratch.resize(len, 0);
                v.read(self.recv_mr, offset + frame::HEADER_LEN, &mut self.scratch);
                if let Some(frame) = self.assembler.push(&self.scratch, last)? {
                    out.push_back(TransportEvent::Received { from: peer, frame });
                }
                self.post_slot(v, slot)?;
                self.recv.free();
            }
        }
        if !self.credit_write_in_flight {
            if let (Some((_, word, _)), Some(freed)) = (&self.peer, self.recv.take_update()) {
                v.write(self.credit_mr, CREDIT_OUT, &freed.to_le_bytes());
                let op = SendOp::Write {
                    mr: self.credit_mr,
                    offset: CREDIT_OUT,
                    len: 8,
                    remote: *word,
                };
                v.post_send(self.qp, WR_CREDIT, op)?;
                self.credit_write_in_flight = true;
                progress = true;
            }
        }
        progress |= self.flush(v)?;
        Ok(progress)
    }

    /// Frames wait and no credit is left: only a credit word write can unblock it.
    pub(crate) fn blocked_on_credits(&self) -> bool {
        self.sending
            && !self.pending.is_empty()
            && self.peer.as_ref().is_some_and(|(c, ..)| c.available() == 0)
    }

    /// Asks for a channel event at the next completion of either queue.
    pub(crate) fn arm<V: Verbs>(&self, v: &mut V) -> Result<(), VerbsError> {
        v.arm(self.qp, Queue::Send)?;
        if self.receiving {
            v.arm(self.qp, Queue::Recv)?;
        }
        Ok(())
    }

    /// Destroys the queue pair and frees the regions.
    pub(crate) fn close<V: Verbs>(self, v: &mut V) {
        v.destroy_qp(self.qp);
        for mr in [self.send_mr, self.recv_mr, self.credit_mr] {
            v.deregister(mr);
        }
    }
}
