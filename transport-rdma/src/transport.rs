//! The transport handle: per peer, RDMA when both ends have a usable device and
//! the link comes up, TCP (the [`Carrier`]) otherwise, decided at connection
//! time and logged; and the core's [`Transport`] trait over both.
//!
//! Call order (for the driver): [`RdmaTransport::new`] with the carrier (in
//! nefeled, the authenticated TCP transport) and the verbs, or the reason there
//! are none; then [`Transport::send`] / [`Transport::broadcast`] whenever the
//! agent emits a message, and [`RdmaTransport::next_event`] (or
//! [`Transport::poll_event`] until `None`) to learn what arrived. Every call
//! makes progress: it drains the carrier's events, runs each link's round
//! (completions, credits, receive ring, pending frames), and — in
//! `next_event` — spins for a busy-poll budget, then sleeps on the completion
//! channel, the carrier, or the credit back-off (see [`crate::poller`]).
//!
//! Peer lifecycle: a carrier `PeerUp` is reported at once (frames flow over
//! TCP) and starts the set-up of [`crate::control`]; a carrier `PeerDown`
//! destroys the link and is reported. A failed link (error completion, bad
//! fragment) is destroyed, reported as `PeerDown` then `PeerUp` (frames in
//! flight may be lost, as the contract allows), the peer falls back to TCP and a
//! new link is offered, up to `max_link_failures` times per TCP connection.
//!
//! Invariants: frames to one peer are delivered in order, also across the switch
//! from TCP to RDMA (see [`crate::control`]); `send` never blocks — a frame is
//! queued (bounded by `send_queue_bytes` per peer) or refused with
//! [`RdmaError::QueueFull`]; receive rings are read only while fewer than
//! `inbox_bytes` of received frames wait for the driver, so a slow driver
//! pushes back through credits to the senders.

use crate::control::{self, Control};
use crate::link::{Full, Geometry, Link, LinkError};
use crate::poller::{CreditBackoff, Next, Poller};
use crate::verbs::Verbs;
use nefele_core::wire::codec::DEFAULT_MAX_FRAME;
use nefele_core::{NodeId, Transport, TransportEvent};
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;

/// Bytes charged per received frame on top of its payload.
const EVENT_OVERHEAD: usize = 64;

/// The connection that carries set-up messages and every frame not sent over
/// RDMA: in nefeled, the authenticated TCP transport.
pub trait Carrier: Send {
    /// Queues `frame` for `to`.
    fn send(&mut self, to: NodeId, frame: &[u8]) -> Result<(), CarrierError>;
    /// Every peer the carrier knows (the targets of a broadcast).
    fn peers(&self) -> Vec<NodeId>;
    /// The next event, if one is ready.
    fn poll_event(&mut self) -> Option<TransportEvent>;
    /// Waits for the next event (cancel safe).
    fn next_event(&mut self) -> impl Future<Output = TransportEvent> + Send;
}

/// Why the carrier refused a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CarrierError {
    /// The carrier does not know the peer.
    #[error("unknown peer")]
    UnknownPeer,
    /// The carrier's queue for the peer is full.
    #[error("queue full")]
    QueueFull,
    /// Any other refusal, in the carrier's words.
    #[error("{0}")]
    Other(String),
}

/// How the transport is set up.
#[derive(Debug, Clone)]
pub struct RdmaConfig {
    /// This agent.
    pub node: NodeId,
    /// The largest frame sent or accepted.
    pub max_frame: usize,
    /// Bytes per ring slot (one fragment, header included).
    pub slot_size: usize,
    /// Receive slots posted per peer (the peer's credits).
    pub recv_slots: u32,
    /// Send-ring slots per peer (sends in flight).
    pub send_slots: u32,
    /// The most bytes of frames queued for one peer's RDMA link.
    pub send_queue_bytes: usize,
    /// Read receive rings only while fewer bytes than this wait for the driver.
    pub inbox_bytes: usize,
    /// Empty polling rounds before sleeping on the completion channel.
    pub busy_poll_rounds: u32,
    /// Link failures per TCP connection before the peer stays on TCP.
    pub max_link_failures: u32,
}

impl RdmaConfig {
    /// The defaults: 64 KiB frames, 4 KiB slots, 256 receive and 64 send slots
    /// (about 1.3 MiB registered per peer), 1 MiB send queues, 4 MiB inbox,
    /// 64 busy rounds, 3 link failures.
    #[must_use]
    pub fn new(node: NodeId) -> Self {
        RdmaConfig {
            node,
            max_frame: DEFAULT_MAX_FRAME,
            slot_size: 4096,
            recv_slots: 256,
            send_slots: 64,
            send_queue_bytes: 1 << 20,
            inbox_bytes: 4 << 20,
            busy_poll_rounds: 64,
            max_link_failures: 3,
        }
    }

    /// Bytes of memory each RDMA peer registers (locks): size `LimitMEMLOCK` from it.
    #[must_use]
    pub fn registered_bytes_per_peer(&self) -> usize {
        self.geometry().registered_bytes()
    }

    fn geometry(&self) -> Geometry {
        Geometry {
            slot_size: self.slot_size,
            send_slots: self.send_slots,
            recv_slots: self.recv_slots,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_frame == 0 || u32::try_from(self.max_frame).is_err() {
            return Err(ConfigError::MaxFrame(self.max_frame));
        }
        if self.slot_size <= crate::frame::HEADER_LEN || u32::try_from(self.slot_size).is_err() {
            return Err(ConfigError::SlotSize(self.slot_size));
        }
        if self.recv_slots == 0 || self.send_slots == 0 || self.send_slots >= 1 << 30 {
            return Err(ConfigError::Slots);
        }
        if self.send_queue_bytes < self.max_frame {
            return Err(ConfigError::QueueTooSmall {
                queue: self.send_queue_bytes,
                max_frame: self.max_frame,
            });
        }
        if self.inbox_bytes == 0 {
            return Err(ConfigError::Zero);
        }
        Ok(())
    }
}

/// Why a configuration is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The frame limit is zero or does not fit 32 bits.
    #[error("max_frame {0} must be between 1 and 2^32 - 1")]
    MaxFrame(usize),
    /// A slot cannot hold a fragment header and one payload byte.
    #[error("slot_size {0} must be between 9 and 2^32 - 1")]
    SlotSize(usize),
    /// A ring without slots, or a send ring too large for work request ids.
    #[error("recv_slots and send_slots must be positive (send_slots below 2^30)")]
    Slots,
    /// A send queue could not hold one maximal frame.
    #[error("send_queue_bytes {queue} cannot hold one frame of max_frame {max_frame}")]
    QueueTooSmall {
        /// The configured queue size.
        queue: usize,
        /// The configured frame limit.
        max_frame: usize,
    },
    /// `inbox_bytes` is zero.
    #[error("inbox_bytes must be positive")]
    Zero,
}

/// Why a frame was not queued. Nothing was queued (for a broadcast: nothing for the peers named).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RdmaError {
    /// Neither the carrier nor a link knows the peer.
    #[error("unknown peer {0}")]
    UnknownPeer(NodeId),
    /// The peer's queue is full (back-pressure).
    #[error("send queue for {0} is full")]
    QueueFull(NodeId),
    /// The frame is empty or larger than the limit.
    #[error("frame of {len} bytes is empty or exceeds the limit of {max} bytes")]
    Frame {
        /// The frame's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The carrier refused the frame for another reason.
    #[error("carrier refused the frame for {peer}: {reason}")]
    Carrier {
        /// The peer.
        peer: NodeId,
        /// The carrier's words.
        reason: String,
    },
    /// A broadcast was queued for every peer except these, whose queues are full.
    #[error("broadcast not queued for {0:?}: send queues full")]
    BroadcastIncomplete(Vec<NodeId>),
}

/// Which path carries frames to a peer now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerPath {
    /// TCP: no link (declined, unavailable, failed), or not set up yet.
    Tcp,
    /// A link is being set up; frames still go over TCP.
    Negotiating,
    /// Frames to the peer go over RDMA.
    Rdma,
}

#[derive(Debug, Default)]
struct Peer {
    link: Option<Link>,
    failures: u32,
}

/// The RDMA transport of one agent. See the module docs for the call order.
pub struct RdmaTransport<V: Verbs, C: Carrier> {
    config: RdmaConfig,
    verbs: Option<V>,
    /// Why there are no verbs, for the decline messages and logs.
    unavailable: String,
    carrier: C,
    peers: BTreeMap<NodeId, Peer>,
    next_gen: u32,
    events: VecDeque<TransportEvent>,
    event_bytes: usize,
    poller: Poller,
    backoff: CreditBackoff,
}

impl<V: Verbs, C: Carrier> std::fmt::Debug for RdmaTransport<V, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RdmaTransport")
            .field("node", &self.config.node)
            .field("device", &self.verbs.as_ref().map(Verbs::describe))
            .field("links", &self.peers.len())
            .finish_non_exhaustive()
    }
}

impl<V: Verbs, C: Carrier> RdmaTransport<V, C> {
    /// A transport over `carrier`, with `verbs`, or the reason this host has none
    /// (then every peer uses the carrier, and the reason is logged once).
    pub fn new(
        config: RdmaConfig,
        verbs: Result<V, String>,
        carrier: C,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let (verbs, unavailable) = match verbs {
            Ok(v) => {
                tracing::info!(node = %config.node, device = %v.describe(), "rdma transport ready");
                (Some(v), String::new())
            }
            Err(reason) => {
                tracing::info!(node = %config.node, %reason, "rdma unavailable on this host; every peer uses TCP");
                (None, reason)
            }
        };
        Ok(RdmaTransport {
            poller: Poller::new(config.busy_poll_rounds),
            config,
            verbs,
            unavailable,
            carrier,
            peers: BTreeMap::new(),
            next_gen: 0,
            events: VecDeque::new(),
            event_bytes: 0,
            backoff: CreditBackoff::new(),
        })
    }

    /// The carrier, e.g. to change its address book.
    pub fn carrier(&self) -> &C {
        &self.carrier
    }

    /// Which path frames to `peer` take now.
    #[must_use]
    pub fn path(&self, peer: NodeId) -> PeerPath {
        match self.peers.get(&peer).and_then(|p| p.link.as_ref()) {
            None => PeerPath::Tcp,
            Some(link) if link.sending => PeerPath::Rdma,
            Some(_) => PeerPath::Negotiating,
        }
    }

    /// Waits for the next event (cancel safe: all state lives in the handle).
    pub async fn next_event(&mut self) -> TransportEvent {
        loop {
            if let Some(event) = self.pop() {
                return event;
            }
            let progress = self.progress();
            if progress {
                self.backoff.reset();
            }
            if !self.events.is_empty() {
                continue;
            }
            if self.poller.after_round(progress) == Next::Spin {
                tokio::task::yield_now().await;
                continue;
            }
            self.arm();
            // A completion that landed before the arming raises no event: look once more.
            if self.progress() {
                continue;
            }
            let credit_wait = self
                .peers
                .values()
                .any(|p| p.link.as_ref().is_some_and(Link::blocked_on_credits))
                .then(|| self.backoff.take());
            let carrier = &mut self.carrier;
            let verbs = self.verbs.as_ref();
            let event = tokio::select! {
                event = carrier.next_event() => Some(event),
                () = async {
                    match verbs {
                        Some(v) => v.wait().await,
                        None => std::future::pending().await,
                    }
                } => None,
                () = async {
                    match credit_wait {
                        Some(wait) => tokio::time::sleep(wait).await,
                        None => std::future::pending().await,
                    }
                } => None,
            };
            if let Some(event) = event {
                self.on_carrier(event);
            }
        }
    }

    fn pop(&mut self) -> Option<TransportEvent> {
        let event = self.events.pop_front()?;
        if let TransportEvent::Received { frame, .. } = &event {
            self.event_bytes = self
                .event_bytes
                .saturating_sub(frame.len() + EVENT_OVERHEAD);
        }
        Some(event)
    }

    fn push_received(&mut self, from: NodeId, frame: Vec<u8>) {
        self.event_bytes += frame.len() + EVENT_OVERHEAD;
        self.events
            .push_back(TransportEvent::Received { from, frame });
    }

    /// One round over the carrier and every link. Returns whether anything happened.
    fn progress(&mut self) -> bool {
        let mut progress = false;
        while let Some(event) = self.carrier.poll_event() {
            progress = true;
            self.on_carrier(event);
        }
        let Some(v) = self.verbs.as_mut() else {
            return progress;
        };
        let mut failed = Vec::new();
        for (&peer, state) in &mut self.peers {
            let Some(link) = state.link.as_mut() else {
                continue;
            };
            let room = self.event_bytes < self.config.inbox_bytes;
            let before = self.events.len();
            match link.progress(v, peer, room, &mut self.events) {
                Ok(p) => progress |= p,
                Err(err) => failed.push((peer, err)),
            }
            for event in self.events.range(before..) {
                if let TransportEvent::Received { frame, .. } = event {
                    self.event_bytes += frame.len() + EVENT_OVERHEAD;
                }
            }
        }
        for (peer, err) in failed {
            progress = true;
            self.link_failed(peer, &err);
        }
        progress
    }

    fn arm(&mut self) {
        let Some(v) = self.verbs.as_mut() else {
            return;
        };
        let mut failed = Vec::new();
        for (&peer, state) in &self.peers {
            if let Some(link) = &state.link {
                if let Err(err) = link.arm(v) {
                    failed.push((peer, LinkError::from(err)));
                }
            }
        }
        for (peer, err) in failed {
            self.link_failed(peer, &err);
        }
    }

    fn on_carrier(&mut self, event: TransportEvent) {
        match event {
            TransportEvent::PeerUp(peer) => {
                self.close_link(peer);
                self.peers.insert(peer, Peer::default());
                self.events.push_back(TransportEvent::PeerUp(peer));
                self.start_link(peer);
            }
            TransportEvent::PeerDown(peer) => {
                self.close_link(peer);
                self.peers.remove(&peer);
                self.events.push_back(TransportEvent::PeerDown(peer));
            }
            TransportEvent::Received { from, frame } => match control::decode(&frame) {
                None => self.push_received(from, frame),
                Some(Ok(control)) => self.on_control(from, control),
                Some(Err(err)) => {
                    tracing::warn!(peer = %from, %err, "bad rdma set-up message dropped");
                }
            },
        }
    }

    fn close_link(&mut self, peer: NodeId) {
        let link = self.peers.get_mut(&peer).and_then(|p| p.link.take());
        if let (Some(link), Some(v)) = (link, self.verbs.as_mut()) {
            link.close(v);
        }
    }

    fn decline(&mut self, peer: NodeId, reason: &str) {
        tracing::info!(%peer, path = "tcp", %reason, "peer path decided");
        let _ = self
            .carrier
            .send(peer, &Control::Decline(reason.to_owned()).encode());
    }

    /// Opens a link to `peer` and offers it, or declines with the reason.
    fn start_link(&mut self, peer: NodeId) {
        let Some(v) = self.verbs.as_mut() else {
            let reason = format!(
                "no usable RDMA device on {}: {}",
                self.config.node, self.unavailable
            );
            return self.decline(peer, &reason);
        };
        let failures = self.peers.get(&peer).map_or(0, |p| p.failures);
        if failures >= self.config.max_link_failures {
            let reason = format!("{failures} rdma link failures with this peer");
            return self.decline(peer, &reason);
        }
        self.next_gen = self.next_gen.wrapping_add(1);
        let geometry = self.config.geometry();
        match Link::open(
            v,
            self.next_gen,
            geometry,
            self.config.max_frame,
            self.config.send_queue_bytes,
        ) {
            Ok(link) => {
                let offer = Control::Offer(link.offer(v)).encode();
                if self.carrier.send(peer, &offer).is_err() {
                    link.close(v);
                    return self.decline(peer, "cannot queue the rdma offer on TCP");
                }
                if let Some(state) = self.peers.get_mut(&peer) {
                    state.link = Some(link);
                }
            }
            Err(err) => self.decline(peer, &format!("cannot set up rdma: {err}")),
        }
    }

    fn on_control(&mut self, peer: NodeId, control: Control) {
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        match control {
            Control::Offer(offer) => {
                if state.link.as_ref().is_some_and(|l| l.peer_gen.is_some()) {
                    // The peer started over (its link failed): so do we.
                    tracing::info!(%peer, "peer offers a new rdma link; replacing ours");
                    self.close_link(peer);
                    self.events.push_back(TransportEvent::PeerDown(peer));
                    self.events.push_back(TransportEvent::PeerUp(peer));
                    self.start_link(peer);
                }
                let (Some(v), Some(link)) = (
                    self.verbs.as_mut(),
                    self.peers.get_mut(&peer).and_then(|p| p.link.as_mut()),
                ) else {
                    return; // We declined; the peer learns it from our Decline.
                };
                match link.connect(v, &offer) {
                    Ok(()) => {
                        let ready = Control::Ready(link.gen).encode();
                        if self.carrier.send(peer, &ready).is_err() {
                            let err = LinkError::Offer("cannot queue Ready on TCP");
                            self.link_failed(peer, &err);
                        }
                    }
                    Err(err) => {
                        self.close_link(peer);
                        self.decline(peer, &format!("cannot connect to the peer's offer: {err}"));
                    }
                }
            }
            Control::Ready(gen) => {
                let Some(link) = state.link.as_mut().filter(|l| l.peer_gen == Some(gen)) else {
                    return;
                };
                let switch = Control::Switch(link.gen).encode();
                if self.carrier.send(peer, &switch).is_err() {
                    let err = LinkError::Offer("cannot queue Switch on TCP");
                    return self.link_failed(peer, &err);
                }
                link.sending = true;
                let device = self.verbs.as_ref().map(Verbs::describe).unwrap_or_default();
                tracing::info!(%peer, path = "rdma", %device, "peer path decided");
            }
            Control::Switch(gen) => {
                if let Some(link) = state.link.as_mut().filter(|l| l.peer_gen == Some(gen)) {
                    link.receiving = true;
                }
            }
            Control::Decline(reason) => {
                tracing::info!(%peer, path = "tcp", reason = %format!("the peer declined: {reason}"), "peer path decided");
                self.close_link(peer);
            }
        }
    }

    /// Destroys a failed link, reports the loss, and offers a new link.
    fn link_failed(&mut self, peer: NodeId, err: &LinkError) {
        tracing::warn!(%peer, %err, "rdma link failed; frames in flight may be lost, TCP until a new link is up");
        self.close_link(peer);
        if let Some(state) = self.peers.get_mut(&peer) {
            state.failures += 1;
            self.events.push_back(TransportEvent::PeerDown(peer));
            self.events.push_back(TransportEvent::PeerUp(peer));
            self.start_link(peer);
        }
    }
}

impl<V: Verbs, C: Carrier> Transport for RdmaTransport<V, C> {
    type Error = RdmaError;

    fn send(&mut self, to: NodeId, frame: &[u8]) -> Result<(), RdmaError> {
        if frame.is_empty() || frame.len() > self.config.max_frame {
            return Err(RdmaError::Frame {
                len: frame.len(),
                max: self.config.max_frame,
            });
        }
        let link = self
            .peers
            .get_mut(&to)
            .and_then(|p| p.link.as_mut())
            .filter(|l| l.sending);
        if let (Some(link), Some(v)) = (link, self.verbs.as_mut()) {
            return match link.send(v, frame) {
                Ok(Ok(())) => Ok(()),
                Ok(Err(Full)) => Err(RdmaError::QueueFull(to)),
                Err(err) => {
                    // The frame was queued on the link that just failed: it is lost with it.
                    self.link_failed(to, &err);
                    Ok(())
                }
            };
        }
        self.carrier.send(to, frame).map_err(|err| match err {
            CarrierError::UnknownPeer => RdmaError::UnknownPeer(to),
            CarrierError::QueueFull => RdmaError::QueueFull(to),
            CarrierError::Other(reason) => RdmaError::Carrier { peer: to, reason },
        })
    }

    fn broadcast(&mut self, frame: &[u8]) -> Result<(), RdmaError> {
        let mut full = Vec::new();
        for peer in self.carrier.peers() {
            match self.send(peer, frame) {
                Err(RdmaError::QueueFull(p)) => full.push(p),
                Err(err @ RdmaError::Frame { .. }) => return Err(err),
                _ => {}
            }
        }
        if full.is_empty() {
            Ok(())
        } else {
            Err(RdmaError::BroadcastIncomplete(full))
        }
    }

    fn poll_event(&mut self) -> Option<TransportEvent> {
        if self.events.is_empty() {
            self.progress();
        }
        self.pop()
    }
}

impl<V: Verbs, C: Carrier> Drop for RdmaTransport<V, C> {
    fn drop(&mut self) {
        let peers: Vec<NodeId> = self.peers.keys().copied().collect();
        for peer in peers {
            self.close_link(peer);
        }
    }
}
