//! The messaging service's wire message ([`MessagingMsg`]) and its bounds.
//!
//! Point to point, between the agent of the sender and the agent of the receiver
//! (the receiver pid's origin): [`MessagingMsg::Deliver`] carries one message of a
//! (sender pid, receiver pid) pair with its sequence number on that pair;
//! [`MessagingMsg::Acks`] answers each with its [`Outcome`]. Monitors are set and
//! cleared at the watched process's agent ([`MessagingMsg::Monitor`],
//! [`MessagingMsg::Demonitor`]); `Ping`/`Pong` check that the host of a watched
//! process still answers, and with which life (a new life has lost its watchers). Names, groups and topics have their own sub-messages.
//!
//! Everything a peer sent is checked by [`validate`] before the service sees it:
//! data at most [`MAX_DATA_BYTES`], names at most [`MAX_NAME_BYTES`], at most
//! [`MAX_ACKS`] acks per message, a sequence number below `u64::MAX` (so `seq + 1`
//! never overflows) and a base at most the sequence number.

use super::groups::GroupsMsg;
use super::names::NamesMsg;
use super::topics::TopicsMsg;
use crate::ids::{Incarnation, Pid, TenantId};
use crate::wire::validate::check_len;
use crate::wire::Reject;
use nefele_api::messaging::MailBody;
use serde::{Deserialize, Serialize};

/// The largest data a peer may send in one message (it must fit the default frame
/// limit of the wire codec with its envelope). `max_message_bytes` is at most this.
pub const MAX_DATA_BYTES: usize = 60_000;
/// The longest name, group or topic in bytes.
pub const MAX_NAME_BYTES: usize = 256;
/// The most acks in one [`MessagingMsg::Acks`] a peer may send (what a receiver
/// accepts).
pub const MAX_ACKS: usize = 1024;
/// The most acks this agent puts in one [`MessagingMsg::Acks`]: acks are control
/// messages, so a batch must fit [`crate::wire::CONTROL_MTU`] (an ack encodes in
/// 44 bytes); a longer batch goes as several messages.
pub const ACKS_PER_MESSAGE: usize = 28;

/// A message between two agents' messaging services.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessagingMsg {
    /// One message for a mailbox of the receiving agent.
    Deliver(Item),
    /// The outcomes of messages the receiving agent sent.
    Acks(Vec<Ack>),
    /// Watch `watched` (a process of the receiving agent) for `watcher`.
    Monitor {
        /// The watcher's tenant.
        tenant: TenantId,
        /// The watching process (of the sending agent).
        watcher: Pid,
        /// The watched process.
        watched: Pid,
    },
    /// Stop watching.
    Demonitor {
        /// The watching process (of the sending agent).
        watcher: Pid,
        /// The watched process.
        watched: Pid,
    },
    /// Does the receiving agent still answer (for monitors of its processes)?
    Ping {
        /// Echoed in the `Pong`.
        nonce: u64,
    },
    /// The answer to a `Ping`.
    Pong {
        /// The ping's nonce.
        nonce: u64,
        /// The answering agent's life.
        incarnation: Incarnation,
    },
    /// Names (see the `names` module).
    Names(NamesMsg),
    /// Groups (see the `groups` module).
    Groups(GroupsMsg),
    /// Pub/sub (see the `topics` module).
    Topics(TopicsMsg),
    /// The external proxy (see the `external` module).
    External(super::external::ExternalMsg),
}

/// One message on the (from, to) pair.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// The tenant of the sender (the receiver must be of the same tenant).
    pub tenant: TenantId,
    /// The sender: a process of the sending agent (its origin is that agent).
    pub from: Pid,
    /// The receiver: a process of the receiving agent.
    pub to: Pid,
    /// Its position on the pair, from 0.
    pub seq: u64,
    /// Every item of the pair below this one is settled or given up at the sender:
    /// the receiver stops waiting for those (reliable mode holds early arrivals).
    pub base: u64,
    /// Reliable: sent again until acknowledged; the receiver drops duplicates and
    /// holds early arrivals until the gap fills.
    pub reliable: bool,
    /// Blocking: when the mailbox is full, wait for room (answered `Parked`) rather
    /// than fail `Full`.
    pub block: bool,
    /// What it says.
    pub body: MailBody,
}

/// The outcome of one [`Item`] at the receiving agent.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The item's sender.
    pub from: Pid,
    /// The item's receiver.
    pub to: Pid,
    /// The item's sequence number.
    pub seq: u64,
    /// What became of it.
    pub outcome: Outcome,
}

/// What became of an [`Item`].
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// It is in the mailbox.
    Delivered,
    /// The mailbox is full; the blocking item waits for room (a later ack settles it).
    Parked,
    /// The mailbox is full (a non-blocking item, or no room to wait).
    Full,
    /// No such process of the tenant on the receiving agent.
    NoSuchProcess,
    /// The receiver exited.
    Exited,
    /// The receiver was lost.
    Lost,
    /// A later item of the pair was delivered first (at-most-once): this one was
    /// dropped to keep the pair's order.
    Late,
}

/// Checks what a peer sent against the bounds in the module docs.
pub fn validate(msg: &MessagingMsg) -> Result<(), Reject> {
    match msg {
        MessagingMsg::Deliver(item) => {
            if item.seq == u64::MAX || item.base > item.seq {
                return Err(Reject::Malformed {
                    what: "messaging seq",
                });
            }
            validate_body(&item.body)
        }
        MessagingMsg::Acks(acks) => check_len("messaging acks", acks.len(), MAX_ACKS),
        MessagingMsg::Monitor { .. }
        | MessagingMsg::Demonitor { .. }
        | MessagingMsg::Ping { .. }
        | MessagingMsg::Pong { .. } => Ok(()),
        MessagingMsg::Names(m) => super::names::validate(m),
        MessagingMsg::Groups(m) => super::groups::validate(m),
        MessagingMsg::Topics(m) => super::topics::validate(m),
        MessagingMsg::External(m) => super::external::validate(m),
    }
}

/// Checks a mail body a peer sent.
pub fn validate_body(body: &MailBody) -> Result<(), Reject> {
    match body {
        MailBody::Data(data) => check_len("messaging data", data.len(), MAX_DATA_BYTES),
        MailBody::Down { .. } => Ok(()),
        MailBody::NameLost { name } => check_len("messaging name", name.len(), MAX_NAME_BYTES),
        // Only a proxy's `Back` makes one (see the `external` module).
        MailBody::External { .. } | MailBody::ExternalClosed { .. } => Err(Reject::Malformed {
            what: "external mail in a pid send",
        }),
    }
}

/// A short, stable name of the kind of `msg`.
#[must_use]
pub fn kind(msg: &MessagingMsg) -> &'static str {
    match msg {
        MessagingMsg::Deliver(_) => "msg_deliver",
        MessagingMsg::Acks(_) => "msg_acks",
        MessagingMsg::Monitor { .. } => "msg_monitor",
        MessagingMsg::Demonitor { .. } => "msg_demonitor",
        MessagingMsg::Ping { .. } => "msg_ping",
        MessagingMsg::Pong { .. } => "msg_pong",
        MessagingMsg::Names(m) => super::names::kind(m),
        MessagingMsg::Groups(m) => super::groups::kind(m),
        MessagingMsg::Topics(m) => super::topics::kind(m),
        MessagingMsg::External(m) => super::external::kind(m),
    }
}
