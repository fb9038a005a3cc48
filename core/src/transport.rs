//! The transport boundary: how agents reach each other.
//!
//! A transport addresses peers by [`NodeId`] and carries opaque frames (the
//! bytes of one [`crate::wire::Envelope`]). It promises nothing about delivery:
//! frames may be lost, duplicated or reordered, and the protocols above are
//! built for that. TCP (`transport-tcp`) and RDMA (`transport-rdma`) implement this trait; the
//! simulator drives agents directly through its own network model.

use crate::ids::NodeId;

/// Something that happened on the transport.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransportEvent {
    /// A frame arrived from `from`.
    Received {
        /// The sending agent, as the transport authenticated it.
        from: NodeId,
        /// One encoded envelope.
        frame: Vec<u8>,
    },
    /// A connection to `peer` is up (connection-oriented transports only).
    PeerUp(NodeId),
    /// The connection to `peer` went down; frames queued for it may be lost.
    PeerDown(NodeId),
}

/// Carries frames between agents.
///
/// Call order: [`Transport::send`] and [`Transport::broadcast`] whenever the agent
/// emits a message; drain [`Transport::poll_event`] until `None` whenever the
/// transport may have made progress.
pub trait Transport {
    /// Why a frame could not be queued (the peer is unknown, or the queue is full).
    type Error: std::error::Error;

    /// Queues `frame` for `to`. Returns an error only when the frame was not queued.
    fn send(&mut self, to: NodeId, frame: &[u8]) -> Result<(), Self::Error>;

    /// Queues `frame` for every agent in this agent's broadcast domain (its rack
    /// in the simulator; a UDP broadcast or a seed list on real hosts).
    fn broadcast(&mut self, frame: &[u8]) -> Result<(), Self::Error>;

    /// The next event the transport has to report, if any.
    fn poll_event(&mut self) -> Option<TransportEvent>;
}
