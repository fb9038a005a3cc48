//! Messaging as a client sees it: a mailbox per process, addressed by pid, name,
//! group or topic, with failure reported and never silent.
//!
//! - [`Dest`]: where a send goes; [`Pattern`]: how a group send picks members;
//!   [`Delivery`]: at-most-once or reliable (at-least-once on the wire, deduplicated
//!   by the receiving agent, so the application sees each message once).
//! - [`Mail`]: what a receive returns: the sender's pid (stamped by the sender's
//!   agent, never by the sender), its [`DistanceClass`], its sequence number on the
//!   (sender, receiver) pair, and a [`MailBody`] (data, a monitor's `Down`, a lost
//!   name).
//! - One error enum per call. A pid, name, group or topic of another tenant answers
//!   exactly as one that never existed.

use crate::ids::{NodeId, Pid};
use crate::spec::ExitStatus;
use serde::{Deserialize, Serialize};
use std::time::Duration;

pub use crate::replies::DistanceClass;

/// Where a send goes.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Dest {
    /// One process, by its global pid.
    Pid(Pid),
    /// The process registered under this name in the caller's tenant.
    Name(String),
    /// The members of a group of the caller's tenant, picked by `pattern`.
    Group {
        /// The group.
        group: String,
        /// Which members get the message.
        pattern: Pattern,
    },
    /// Every subscriber of a topic of the caller's tenant (publish).
    Topic(String),
    /// Every process of the caller's tenant.
    Broadcast,
    /// A service outside the cluster, through a proxy agent.
    External {
        /// Its host name or address.
        host: String,
        /// Its TCP port.
        port: u16,
    },
}

impl From<Pid> for Dest {
    fn from(pid: Pid) -> Self {
        Dest::Pid(pid)
    }
}

/// How a group send picks its members.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Pattern {
    /// Every member, once.
    #[default]
    Multicast,
    /// One member: the nearest by distance class, then the least loaded.
    Anycast,
    /// One member, each in turn.
    RoundRobin,
    /// One member: the one whose mailbox holds the fewest messages.
    LeastLoaded,
    /// The first live member in rank order (join order).
    Failover,
}

/// The delivery guarantee of a send.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Delivery {
    /// Sent once; its fate (delivered, failed, unknown) is reported.
    #[default]
    AtMostOnce,
    /// Sent again until acknowledged (or until the fate timeout); the receiving agent
    /// drops duplicates, so the application sees it once.
    Reliable,
}

/// One message in a mailbox.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mail {
    /// The sender (for a `Down`, the watched process).
    pub from: Pid,
    /// How far the sender's host is from the receiver's.
    pub class: DistanceClass,
    /// The message's position on the (sender, receiver) pair, from 0.
    pub seq: u64,
    /// What it says.
    pub body: MailBody,
}

/// What a message says.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MailBody {
    /// Application bytes.
    Data(#[serde(with = "bytes")] Vec<u8>),
    /// A monitored process ended (delivered after every message it sent to the
    /// watcher before it ended).
    Down {
        /// The watched process.
        pid: Pid,
        /// How it ended, as far as the watcher's agent can tell.
        reason: DownReason,
    },
    /// A name this process held was taken from it (see the names module of the core).
    NameLost {
        /// The name.
        name: String,
    },
    /// Bytes an external service sent back on this process's connection to it,
    /// through a proxy agent (the mail's `from` is the process itself, its class
    /// `External`).
    External {
        /// The external host the process sent to.
        host: String,
        /// Its port.
        port: u16,
        /// The bytes.
        #[serde(with = "bytes")]
        data: Vec<u8>,
    },
    /// This process's connection to an external service ended: no more of its
    /// bytes will come, every byte before it came in order, and the next send to
    /// the address opens a new connection (like a TCP close or reset; the mail's
    /// `from` is the process itself, its class `External`).
    ExternalClosed {
        /// The external host the process sent to.
        host: String,
        /// Its port.
        port: u16,
        /// Why.
        reason: ExternalClose,
    },
}

/// Why a connection to an external service ended (see [`MailBody::ExternalClosed`]).
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExternalClose {
    /// The external service closed it, or the connection failed once open (a
    /// reset, a read or write error).
    Closed,
    /// Bytes between this host and the proxy were lost and not recovered within
    /// the fate timeout (a reset: sends not yet answered may or may not have gone
    /// out).
    Reset,
    /// The process did not take its bytes fast enough: its mailbox stayed full (or
    /// the proxy's window to it stayed full) for the fate timeout.
    Overflow,
    /// The proxy dropped the connection: its table of connections was full, or it
    /// no longer knew the connection (it restarted).
    Dropped,
    /// The proxy's rules allow no address of the destination: nothing was sent.
    Denied,
    /// The proxy could not connect: the name did not resolve, the far end refused,
    /// or no connection came within the proxy's connect timeout. Nothing was sent.
    Unreachable,
    /// The external service did not take the bytes fast enough: more than the
    /// proxy's write buffer waited for it.
    Overrun,
}

/// Why a monitored process is reported down.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DownReason {
    /// It ended (a kill shows as `Exited(Signaled(..))`).
    Exited(ExitStatus),
    /// It was lost with its host.
    Lost {
        /// Its host.
        host: NodeId,
    },
    /// Its host stopped answering the watcher's agent.
    Unreachable,
    /// It did not exist (or had ended) when the monitor was set.
    NoProcess,
}

/// What a successful send reached.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendReceipt {
    /// The mailboxes the message was put in (1 for a pid send; the members reached
    /// for a fan-out).
    pub reached: u32,
}

/// Why a send failed. A message that failed was not put in any mailbox, except after
/// `Unknown`, whose fate nobody knows, and `Partial`, which says how many got it.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum SendError {
    /// No such process in the caller's tenant (never existed, or another tenant's).
    #[error("no such process")]
    NoSuchProcess,
    /// The destination process has exited.
    #[error("the process has exited")]
    Exited,
    /// The destination process was lost with its host.
    #[error("the process was lost with its host")]
    Lost,
    /// No answer came within the fate timeout (the destination's host is
    /// unreachable, or an answer was lost): the message may or may not have arrived.
    #[error("fate unknown: no answer within the fate timeout")]
    Unknown,
    /// The destination's mailbox (or the path to it) is full and the send was not
    /// blocking (or the sender's agent holds too many blocked sends, or a blocking
    /// send waited `block_timeout` there for its pair's credit); nothing was sent.
    #[error("the destination mailbox is full")]
    Full,
    /// The message is over the size limit; nothing was sent.
    #[error("the message is over the size limit")]
    TooLarge,
    /// No process holds this name in the caller's tenant.
    #[error("no such name")]
    NoSuchName,
    /// The group or topic has no live member (in the caller's tenant).
    #[error("no members")]
    NoMembers,
    /// `from` is not a live process of the caller's tenant on this host.
    #[error("the sender is not a live local process of the tenant")]
    NotSender,
    /// This kind of destination is not served by this agent (yet).
    #[error("destination not supported")]
    Unsupported,
    /// Not delivered: an at-most-once message that reached the receiver's agent
    /// after a later message of the same (sender, receiver) pair had been delivered
    /// (its gap skipped after `reorder_wait`), dropped to keep the pair FIFO.
    #[error("overtaken by a later message of the pair; not delivered")]
    Overtaken,
    /// A fan-out send (publish, multicast, broadcast) at most once that was not put
    /// in every member's mailbox: `reached` got it, `full` had a full mailbox, and
    /// `overtaken` had already got a later fan-out send of the same sender (the two
    /// walks crossed; it was dropped to keep the order). Nothing else was missed.
    #[error(
        "reached {reached} members; not put in {full} full mailboxes and {overtaken} overtaken"
    )]
    Partial {
        /// The mailboxes it was put in.
        reached: u32,
        /// Members whose mailbox was full.
        full: u32,
        /// Members a later send of the sender had reached first.
        overtaken: u32,
    },
}

/// Why a receive failed.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RecvError {
    /// The pid is not a live process of the caller's tenant on this host.
    #[error("no such local process")]
    NoSuchProcess,
    /// Another receive of this process is waiting already.
    #[error("another receive is waiting on this mailbox")]
    Busy,
}

/// Why `register`, `unregister` or `whereis` failed.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum NameError {
    /// No process holds the name in the caller's tenant.
    #[error("no such name")]
    NoSuchName,
    /// Another process of the tenant holds the name.
    #[error("the name is taken")]
    Taken,
    /// The pid is not a live local process of the caller's tenant.
    #[error("no such local process")]
    NoSuchProcess,
    /// The name is empty or too long.
    #[error("invalid name")]
    Invalid,
    /// The name's authority did not answer in time.
    #[error("the name's authority did not answer")]
    Unreachable,
    /// A bounded table (the host's names, its lookups in flight, the directory) is
    /// full.
    #[error("too many names or lookups")]
    TooMany,
}

/// Why `join`, `leave`, `subscribe` or `unsubscribe` failed.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum GroupError {
    /// The pid is not a live local process of the caller's tenant.
    #[error("no such local process")]
    NoSuchProcess,
    /// The group or topic name is empty or too long.
    #[error("invalid group or topic name")]
    Invalid,
    /// The process is in too many groups or topics.
    #[error("too many groups or topics")]
    TooMany,
    /// The leave or unsubscribe named a membership that does not exist.
    #[error("not a member")]
    NotMember,
}

/// Why `monitor` or `demonitor` failed.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum MonitorError {
    /// The watcher is not a live local process of the caller's tenant.
    #[error("the watcher is not a live local process of the tenant")]
    NoSuchProcess,
    /// The watcher holds too many monitors.
    #[error("too many monitors")]
    TooMany,
}

/// Why a messaging query (`distance`) failed.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum MsgError {
    /// `from` is not a live local process of the caller's tenant.
    #[error("no such local process")]
    NoSuchProcess,
}

/// The answer to `distance`: the class and the measured round trip of that class.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DistanceInfo {
    /// How far the other process's host is.
    pub class: DistanceClass,
    /// The round-trip time this agent measured to hosts of that class (a moving
    /// average of acknowledged messages), `None` before any measurement (and always
    /// zero for `SameHost`).
    #[serde(default, deserialize_with = "crate::duration::option::deserialize")]
    pub rtt: Option<Duration>,
}

/// Mail data as bytes rather than as a sequence of `u8`: the same encoding in
/// bincode (a length, then the bytes) and in JSON (an array of numbers), but
/// written and read in one copy instead of one call per byte (a data message's
/// bytes were most of the cost of encoding it).
mod bytes {
    use serde::de::{Deserializer, Error, SeqAccess, Visitor};
    use serde::Serializer;
    use std::fmt;

    pub(super) fn serialize<S: Serializer>(data: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(data)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<u8>, D::Error> {
        deserializer.deserialize_byte_buf(BytesVisitor)
    }

    struct BytesVisitor;

    impl<'de> Visitor<'de> for BytesVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("bytes")
        }

        fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            // A self-describing format's array: grown as read, never sized by the
            // peer's claim.
            let mut out = Vec::new();
            while let Some(b) = seq.next_element()? {
                out.push(b);
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Mail data encodes as a `Vec<u8>` always did (the wire and the client protocol
    /// keep their version), and decodes back; a length past the end is an error.
    #[test]
    fn mail_data_keeps_its_bincode_encoding() {
        let data: Vec<u8> = (0..=255).collect();
        #[derive(Serialize)]
        enum Old {
            Data(Vec<u8>),
        }
        let body = MailBody::Data(data.clone());
        let bytes = bincode::serialize(&body).unwrap();
        assert_eq!(bytes, bincode::serialize(&Old::Data(data.clone())).unwrap());
        assert_eq!(bincode::deserialize::<MailBody>(&bytes).unwrap(), body);
        let external = MailBody::External {
            host: "h".into(),
            port: 7,
            data,
        };
        let bytes = bincode::serialize(&external).unwrap();
        assert_eq!(bincode::deserialize::<MailBody>(&bytes).unwrap(), external);
        let mut short = bincode::serialize(&body).unwrap();
        short.truncate(short.len() - 1);
        assert!(bincode::deserialize::<MailBody>(&short).is_err());
    }
}
