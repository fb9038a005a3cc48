//! Wire messages between agents: one versioned [`Envelope`] around a
//! [`Message`] whose variants belong each to one service (the service registry,
//! `crate::service::registry`, lists them).
//!
//! The byte format lives behind [`codec`] alone, so that the encoding can be
//! swapped without touching a service. Every message a service sends is kept
//! small: control messages stay under [`CONTROL_MTU`] bytes encoded, whatever
//! the cluster size, so each fits one datagram. A decoded envelope is checked by
//! [`validate`] before any service sees it.

pub mod codec;
pub mod validate;

use crate::ids::{Incarnation, NodeId};
use serde::{Deserialize, Serialize};

pub use crate::service::Message;
pub use codec::{decode, encode, encode_into, encoded_len, DecodeError, EncodeError};
pub use validate::Reject;

/// The size every control message must stay under, in encoded bytes (one datagram).
pub const CONTROL_MTU: usize = 1400;

/// One agent-to-agent message: who sent it, in which life, and what it says.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The sending agent.
    pub from: NodeId,
    /// The sender's incarnation; receivers drop messages from an older life.
    pub incarnation: Incarnation,
    /// The service message.
    pub body: Message,
}
