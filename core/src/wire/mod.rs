//! Wire messages between agents: one versioned [`Envelope`] around a
//! [`Message`] whose variants belong each to one service.
//!
//! The byte format lives behind [`codec`] alone, so that the encoding can be
//! swapped without touching a service. Every message a service sends is kept
//! small: control messages stay under [`CONTROL_MTU`] bytes encoded, whatever
//! the cluster size, so each fits one datagram. A decoded envelope is checked by
//! [`validate`] before any service sees it.

pub mod codec;
pub mod validate;

use crate::discovery::DiscoveryMsg;
use crate::federation::FedMsg;
use crate::ids::{Incarnation, NodeId};
use crate::placement::msg::PlacementMsg;
use serde::{Deserialize, Serialize};

pub use codec::{decode, encode, encode_into, encoded_len, DecodeError, EncodeError};
pub use validate::Reject;

/// The size every control message must stay under, in encoded bytes (one datagram).
pub const CONTROL_MTU: usize = 1400;

/// One agent-to-agent message: who sent it, in which life, and what it says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The sending agent.
    pub from: NodeId,
    /// The sender's incarnation; receivers drop messages from an older life.
    pub incarnation: Incarnation,
    /// The service message.
    pub body: Message,
}

/// A message of one service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Neighbour discovery in the broadcast domain.
    Discovery(DiscoveryMsg),
    /// Boot federation (one of possibly several instances).
    Federation(FedMsg),
    /// Placement and the namespace.
    Placement(PlacementMsg),
}

impl Message {
    /// A short, stable name of the message kind, for traces.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Discovery(m) => m.kind(),
            Message::Federation(m) => m.body.kind(),
            Message::Placement(m) => m.kind(),
        }
    }
}
