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
//! Only the credit region accepts RDMA WRITEs; the rings take SENDs into posted
//! receives, which only this link's connected queue pair can deliver.
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
        let send_mr = v.register(geometry.slot_size * geometry.send_slots as usize, false)?;
        let recv_mr = match v.register(geometry.slot_size * geometry.recv_slots as usize, false) {
            Ok(mr) => mr,
            Err(e) => {
                v.deregister(send_mr);
                return Err(e);
            }
        };
        let regions = [send_mr, recv_mr];
        let undo = |v: &mut V, regions: &[MrId]| regions.iter().for_each(|&mr| v.deregister(mr));
        let credit_mr = v
            .register(CREDIT_REGION, true)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake::{FakeFabric, FakeVerbs};
    use proptest::prelude::*;

    const GEOMETRY: Geometry = Geometry {
        slot_size: 64,
        send_slots: 4,
        recv_slots: 8,
    };
    const MAX_FRAME: usize = 1000;
    const INLINE: usize = 32;

    struct Pair {
        fabric: FakeFabric,
        a: (FakeVerbs, Link),
        b: (FakeVerbs, Link),
    }

    fn pair(queue_limit: usize) -> Pair {
        let fabric = FakeFabric::new();
        let mut va = fabric.verbs(INLINE, 1 << 20);
        let mut vb = fabric.verbs(INLINE, 1 << 20);
        let mut a = Link::open(&mut va, 1, GEOMETRY, MAX_FRAME, queue_limit).unwrap();
        let mut b = Link::open(&mut vb, 1, GEOMETRY, MAX_FRAME, queue_limit).unwrap();
        let (offer_a, offer_b) = (a.offer(&va), b.offer(&vb));
        a.connect(&mut va, &offer_b).unwrap();
        b.connect(&mut vb, &offer_a).unwrap();
        for link in [&mut a, &mut b] {
            link.sending = true;
            link.receiving = true;
        }
        Pair {
            fabric,
            a: (va, a),
            b: (vb, b),
        }
    }

    fn frames(out: VecDeque<TransportEvent>) -> Vec<Vec<u8>> {
        out.into_iter()
            .map(|e| match e {
                TransportEvent::Received { frame, .. } => frame,
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    }

    /// Runs both sides until nothing moves; returns what each received.
    fn settle(p: &mut Pair) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
        let (mut at_a, mut at_b) = (VecDeque::new(), VecDeque::new());
        for _ in 0..10_000 {
            let moved_a =
                p.a.1
                    .progress(&mut p.a.0, NodeId(2), true, &mut at_a)
                    .unwrap();
            let moved_b =
                p.b.1
                    .progress(&mut p.b.0, NodeId(1), true, &mut at_b)
                    .unwrap();
            if !moved_a && !moved_b {
                return (frames(at_a), frames(at_b));
            }
        }
        panic!("links never settled");
    }

    #[test]
    fn small_frames_go_inline_and_large_ones_wrap_the_rings_in_order() {
        let mut p = pair(1 << 20);
        let sent: Vec<Vec<u8>> = (0..20u8)
            .map(|i| vec![i; if i % 3 == 0 { 10 } else { 300 + usize::from(i) }])
            .collect();
        for f in &sent {
            p.a.1.send(&mut p.a.0, f).unwrap().unwrap();
        }
        let (_, at_b) = settle(&mut p);
        assert_eq!(at_b, sent);
        let (inline, all) = p.fabric.sends();
        // The 7 frames of 10 bytes, and the short last fragments of some large ones.
        assert!(inline >= 7 && inline < all, "{inline} inline of {all}");
        assert!(all > 20 * 2, "large frames are fragmented: {all} sends");
        assert_eq!(p.fabric.overruns(), 0);
    }

    #[test]
    fn a_sender_stops_at_the_receivers_ring_and_resumes_on_credits() {
        let mut p = pair(1 << 20);
        for i in 0..20u8 {
            p.a.1.send(&mut p.a.0, &[i; 50]).unwrap().unwrap();
        }
        let mut sink = VecDeque::new();
        for _ in 0..10 {
            p.a.1
                .progress(&mut p.a.0, NodeId(2), true, &mut sink)
                .unwrap();
        }
        assert!(
            p.a.1.blocked_on_credits(),
            "8 slots at the receiver, 20 frames"
        );
        assert_eq!(p.fabric.sends().1, 8);
        assert_eq!(p.fabric.overruns(), 0);
        let (_, at_b) = settle(&mut p);
        assert_eq!(at_b.len(), 20);
        assert!(!p.a.1.blocked_on_credits());
    }

    #[test]
    fn the_send_queue_is_bounded() {
        let mut p = pair(100);
        p.b.1.receiving = false; // no credits come back
        let results: Vec<_> = (0..20)
            .map(|_| p.a.1.send(&mut p.a.0, &[1; 40]).unwrap())
            .collect();
        assert!(results.contains(&Err(Full)));
        assert_eq!(p.fabric.overruns(), 0);
    }

    #[test]
    fn a_lost_peer_fails_the_link_with_a_completion_error() {
        let p = pair(1 << 20);
        let Pair {
            a: (mut va, mut a),
            b,
            ..
        } = p;
        drop(b); // the peer's host is gone: its queue pair with it
        a.send(&mut va, b"hello").unwrap().unwrap();
        let err = a
            .progress(&mut va, NodeId(2), true, &mut VecDeque::new())
            .unwrap_err();
        assert_eq!(
            err,
            LinkError::Completion {
                queue: Queue::Send,
                status: WcStatus::RetryExceeded
            }
        );
    }

    #[test]
    fn bad_offers_and_too_little_memlock_are_typed_errors() {
        let fabric = FakeFabric::new();
        let mut v = fabric.verbs(INLINE, 1 << 20);
        let mut link = Link::open(&mut v, 1, GEOMETRY, MAX_FRAME, 100).unwrap();
        let mut offer = link.offer(&v);
        offer.recv_slots = 0;
        assert!(matches!(
            link.connect(&mut v, &offer),
            Err(LinkError::Offer(_))
        ));
        let mut small = fabric.verbs(INLINE, 600);
        let err = Link::open(&mut small, 1, GEOMETRY, MAX_FRAME, 100).unwrap_err();
        assert!(err.to_string().contains("LimitMEMLOCK="), "{err}");
        assert_eq!(
            fabric.queue_pairs(),
            1,
            "a failed open leaves nothing behind"
        );
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Side A (or B) queues a frame of this size.
        Send(bool, usize),
        /// Side A (or B) runs a round; the bool says whether its inbox has room.
        Progress(bool, bool),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (any::<bool>(), 1..=MAX_FRAME).prop_map(|(a, n)| Op::Send(a, n)),
            (any::<bool>(), prop::bool::weighted(0.8)).prop_map(|(a, r)| Op::Progress(a, r)),
        ]
    }

    proptest! {
        /// Random frame sizes (inline, one slot, many slots) and random
        /// interleavings of sends and rounds on both sides: no SEND ever finds
        /// the receiver's ring full, and each side receives exactly the frames
        /// the other queued, in order.
        #[test]
        fn never_an_overrun_never_a_lost_or_reordered_frame(
            ops in prop::collection::vec(op(), 1..200)
        ) {
            let mut p = pair(4 * MAX_FRAME);
            let (mut sent_a, mut sent_b) = (Vec::new(), Vec::new());
            let (mut at_a, mut at_b) = (VecDeque::new(), VecDeque::new());
            for (i, op) in ops.into_iter().enumerate() {
                match op {
                    Op::Send(from_a, n) => {
                        let frame: Vec<u8> = (0..n).map(|j| (i + j) as u8).collect();
                        let (v, link, sent) = if from_a {
                            (&mut p.a.0, &mut p.a.1, &mut sent_a)
                        } else {
                            (&mut p.b.0, &mut p.b.1, &mut sent_b)
                        };
                        if link.send(v, &frame).unwrap().is_ok() {
                            sent.push(frame);
                        }
                    }
                    Op::Progress(true, room) => {
                        p.a.1.progress(&mut p.a.0, NodeId(2), room, &mut at_a).unwrap();
                    }
                    Op::Progress(false, room) => {
                        p.b.1.progress(&mut p.b.0, NodeId(1), room, &mut at_b).unwrap();
                    }
                }
                prop_assert_eq!(p.fabric.overruns(), 0);
            }
            let (rest_a, rest_b) = settle(&mut p);
            let mut got_a = frames(at_a);
            got_a.extend(rest_a);
            let mut got_b = frames(at_b);
            got_b.extend(rest_b);
            prop_assert_eq!(got_b, sent_a);
            prop_assert_eq!(got_a, sent_b);
            prop_assert_eq!(p.fabric.overruns(), 0);
        }
    }
}
