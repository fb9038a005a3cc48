//! The local API protocol between a client and its agent, over a Unix stream socket.
//!
//! # Framing
//! Every message is one frame: a 4-byte big-endian length, then that many bytes
//! of payload. The payload is bincode 1 (fixed-width integers, trailing bytes
//! rejected, a size limit) of a [`ClientFrame`] (client to agent) or an
//! [`AgentFrame`] (agent to client). Requests are capped at
//! [`MAX_REQUEST_BYTES`], replies at [`MAX_REPLY_BYTES`]; a frame whose length
//! prefix says more is refused before anything is allocated.
//!
//! # Conversation
//! 1. The client sends [`ClientFrame::Hello`] with the protocol version it
//!    speaks and, optionally, a tenant token.
//! 2. The agent answers [`AgentFrame::Welcome`] (the tenant it authenticated:
//!    from the token, else from the caller's uid via `SO_PEERCRED`) or
//!    [`AgentFrame::Error`] and closes.
//! 3. Then any number of [`ClientFrame::Call`]s, each answered by one
//!    [`AgentFrame::Reply`] carrying the same `id`. Calls may be pipelined;
//!    replies can come in any order (a `wait` answers only when the process ends).
//!
//! A malformed or oversized frame gets an [`AgentFrame::Error`] naming what was
//! wrong, and the agent closes that connection only; the agent itself lives on.
//! The tenant is never part of a call: the agent fills it from the connection's
//! authentication, so a client cannot act for another tenant.
//!
//! # Versions
//! - 1: the protocol as it stands. The reply types (`ApiReply` and the error
//!   enums) moved from the agent's core into the small `nefele-api` crate, so a
//!   client no longer links the core; their encoding did not change, so neither
//!   did the version. `ApiReply` has since gained the messaging answers (variants
//!   appended, so the encoding of the others is unchanged).
//! - 2: the messaging calls ([`Call::Send`] to [`Call::Distance`], appended), and
//!   `Welcome` names the process a connection is scoped to (`pid`): `Some` on a
//!   process's own endpoint (the socket its agent handed it at start, see
//!   [`crate::client::Client::from_endpoint`]), `None` on a tenant connection.
//!   The supervision calls and answers ([`Call::SpawnSupervised`] to
//!   [`Call::StopSupervisor`]) are appended after them.
//! - 3: the spawn parameters: a spec's resource policy holds a cpu speed class
//!   (a field inside `ProcSpec`, so every spawn call's encoding changed);
//!   `ApiReply::SpawnedUnspread`, `SpawnError::Unavailable` and
//!   `Resource::CpuClass` are appended.
//! - 4: messaging: `MailBody::ExternalClosed` (an external connection ended, and
//!   why) and `SendError::Partial` (a fan-out send missed full or overtaken
//!   members) are appended, and `Resource::Limit` (no host with room can
//!   enforce a limit the spec asks for).
//! - 5: `ExternalClose` says why an external connection failed: `Denied`,
//!   `Unreachable` and `Overrun` are appended.
//! - 6: links ([`crate::link`]): [`Call::Link`], [`Call::Claim`] and
//!   [`Reply::Link`] are appended; a `Reply::Link(Ok)` frame carries a descriptor.
//! - 7: links across hosts: [`Reply::LinkMade`] is appended, the answer to
//!   [`Call::Link`] (its frame carries the descriptor): the link's token and, across
//!   hosts, its key.
//!
//! # Who a connection may act as
//! A messaging call names the process it acts for (`from`, `pid`, `watcher`). On a
//! process's endpoint that must be the process itself: any other pid is answered
//! as a pid that is not a live local process of the tenant (`NotSender`,
//! `NoSuchProcess`), without reaching the agent. A tenant connection (token or
//! uid) may act as any live process of its tenant on the agent's host; the agent
//! checks that.

use bincode::Options;
use nefele_api::calls::{ApiCall, ApiReply};
use nefele_api::ids::{Incarnation, NodeId, Pid, TenantId};
use nefele_api::messaging::{Delivery, Dest, SendError};
use nefele_api::spec::{ProcSpec, Signal};
use nefele_api::supervision::{SupervisedSpawn, SupervisionSpec, SupervisorId};
use serde::{Deserialize, Serialize};

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u16 = 7;
/// The largest client-to-agent payload.
pub const MAX_REQUEST_BYTES: u32 = 1 << 20;
/// The largest agent-to-client payload (a `ps` of a large tenant can be long).
pub const MAX_REPLY_BYTES: u32 = 256 << 20;

/// A frame from the client to the agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientFrame {
    /// The first frame of a connection.
    Hello {
        /// The protocol version the client speaks.
        version: u16,
        /// A tenant token from the agent's configuration; `None` to be mapped by uid.
        token: Option<String>,
    },
    /// One call.
    Call {
        /// Chosen by the client; the reply carries it back.
        id: u64,
        /// What to do.
        call: Call,
    },
}

/// What a client can ask. No call names a tenant or a server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Call {
    /// The federation groups this agent belongs to, from level 0 up to the top.
    Members,
    /// Start one process.
    Spawn(ProcSpec),
    /// Start `n` identical processes, atomically.
    NSpawn {
        /// How many.
        n: u32,
        /// What to run.
        spec: ProcSpec,
    },
    /// Start different processes, atomically.
    CSpawn(Vec<ProcSpec>),
    /// Deliver a signal to a process and its descendants.
    Kill {
        /// The process.
        pid: Pid,
        /// What to deliver.
        signal: Signal,
    },
    /// A process's entry.
    Info(Pid),
    /// Every process of the caller's tenant in the cluster.
    Ps,
    /// Answer when the process ends.
    Wait(Pid),
    /// Send `data` as the local process `from` to `to`.
    Send {
        /// The sending process.
        from: Pid,
        /// Where it goes.
        to: Dest,
        /// The message.
        data: Vec<u8>,
        /// Its delivery guarantee.
        delivery: Delivery,
        /// Wait for room at a full mailbox (else fail `Full`).
        block: bool,
    },
    /// Take up to `max` messages from the mailbox of the local process `pid`,
    /// waiting up to `wait` for one (`None`: answer at once).
    Recv {
        /// The receiving process.
        pid: Pid,
        /// The most messages to take.
        max: u32,
        /// How long to wait when the mailbox is empty.
        #[serde(
            default,
            deserialize_with = "nefele_api::duration::option::deserialize"
        )]
        wait: Option<std::time::Duration>,
    },
    /// Register `name` for the local process `pid`.
    Register {
        /// The name.
        name: String,
        /// The process.
        pid: Pid,
    },
    /// Drop the registration of `name` (on a process endpoint: only its own).
    Unregister {
        /// The name.
        name: String,
    },
    /// The process registered under `name`.
    Whereis {
        /// The name.
        name: String,
    },
    /// Add `pid` to `group`.
    Join {
        /// The group.
        group: String,
        /// The process.
        pid: Pid,
    },
    /// Take `pid` out of `group`.
    Leave {
        /// The group.
        group: String,
        /// The process.
        pid: Pid,
    },
    /// Subscribe `pid` to `topic`.
    Subscribe {
        /// The topic.
        topic: String,
        /// The process.
        pid: Pid,
    },
    /// Cancel the subscription of `pid` to `topic`.
    Unsubscribe {
        /// The topic.
        topic: String,
        /// The process.
        pid: Pid,
    },
    /// Tell `watcher`'s mailbox when `watched` ends.
    Monitor {
        /// The watching process.
        watcher: Pid,
        /// The watched process.
        watched: Pid,
    },
    /// Cancel a monitor.
    Demonitor {
        /// The watching process.
        watcher: Pid,
        /// The watched process.
        watched: Pid,
    },
    /// How far `to` is from `from`, and the measured round trip of that class.
    Distance {
        /// The asking process.
        from: Pid,
        /// The other process.
        to: Pid,
    },
    /// Spawn under a new supervisor run by the agent called (appended: the
    /// encoding of the calls above is unchanged).
    SpawnSupervised {
        /// What to run (boxed for size; encoded as the value).
        spawn: Box<SupervisedSpawn>,
        /// How to supervise it.
        supervision: SupervisionSpec,
    },
    /// The supervisors the agent called runs for the caller's tenant.
    Supervisors,
    /// Stop a supervisor the agent called runs, and its children.
    StopSupervisor(SupervisorId),
    /// Make a link from the local process `from` to `to` ([`crate::link`]): the
    /// agent sends `to` the link's marker as a reliable message from `from`, and
    /// once it is in `to`'s mailbox answers [`Reply::Link`] with `from`'s end of
    /// the link attached (`SCM_RIGHTS`).
    Link {
        /// The opener, whose later sends to `to` go on the link.
        from: Pid,
        /// The receiver.
        to: Pid,
    },
    /// Take the receiving end of the link `from` made to the local process `pid`,
    /// named by the marker `token`; answered [`Reply::Link`] with the end attached.
    Claim {
        /// The receiver (the process whose mailbox held the marker).
        pid: Pid,
        /// The opener (the marker's sender).
        from: Pid,
        /// The marker's token.
        token: u64,
    },
}

impl Call {
    /// The agent's call for this one made by `tenant` (the connection's); `None`
    /// for [`Call::Members`], which the driver answers itself, and for the link
    /// calls, which the API server answers.
    #[must_use]
    pub fn into_api(self, tenant: TenantId) -> Option<ApiCall> {
        Some(match self {
            Call::Members => return None,
            Call::Spawn(spec) => ApiCall::Spawn { tenant, spec },
            Call::NSpawn { n, spec } => ApiCall::NSpawn { tenant, n, spec },
            Call::CSpawn(specs) => ApiCall::CSpawn { tenant, specs },
            Call::Kill { pid, signal } => ApiCall::Kill {
                tenant,
                pid,
                signal,
            },
            Call::Info(pid) => ApiCall::Info { tenant, pid },
            Call::Ps => ApiCall::Ps { tenant },
            Call::Wait(pid) => ApiCall::Wait { tenant, pid },
            Call::Send {
                from,
                to,
                data,
                delivery,
                block,
            } => ApiCall::Send {
                tenant,
                from,
                to,
                data,
                delivery,
                block,
            },
            Call::Recv { pid, max, wait } => ApiCall::Recv {
                tenant,
                pid,
                max,
                wait,
            },
            Call::Register { name, pid } => ApiCall::Register { tenant, name, pid },
            Call::Unregister { name } => ApiCall::Unregister { tenant, name },
            Call::Whereis { name } => ApiCall::Whereis { tenant, name },
            Call::Join { group, pid } => ApiCall::Join { tenant, group, pid },
            Call::Leave { group, pid } => ApiCall::Leave { tenant, group, pid },
            Call::Subscribe { topic, pid } => ApiCall::Subscribe { tenant, topic, pid },
            Call::Unsubscribe { topic, pid } => ApiCall::Unsubscribe { tenant, topic, pid },
            Call::Monitor { watcher, watched } => ApiCall::Monitor {
                tenant,
                watcher,
                watched,
            },
            Call::Demonitor { watcher, watched } => ApiCall::Demonitor {
                tenant,
                watcher,
                watched,
            },
            Call::Distance { from, to } => ApiCall::Distance { tenant, from, to },
            Call::SpawnSupervised { spawn, supervision } => ApiCall::SpawnSupervised {
                tenant,
                spawn: *spawn,
                supervision,
            },
            Call::Supervisors => ApiCall::Supervisors { tenant },
            Call::StopSupervisor(id) => ApiCall::StopSupervisor { tenant, id },
            Call::Link { .. } | Call::Claim { .. } => return None,
        })
    }

    /// The local process a messaging call acts for, if it names one.
    #[must_use]
    pub fn acts_as(&self) -> Option<Pid> {
        match self {
            Call::Send { from, .. } | Call::Distance { from, .. } | Call::Link { from, .. } => {
                Some(*from)
            }
            Call::Recv { pid, .. }
            | Call::Claim { pid, .. }
            | Call::Register { pid, .. }
            | Call::Join { pid, .. }
            | Call::Leave { pid, .. }
            | Call::Subscribe { pid, .. }
            | Call::Unsubscribe { pid, .. } => Some(*pid),
            Call::Monitor { watcher, .. } | Call::Demonitor { watcher, .. } => Some(*watcher),
            _ => None,
        }
    }
}

/// A frame from the agent to the client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AgentFrame {
    /// The connection is authenticated.
    Welcome {
        /// The protocol version the agent speaks.
        version: u16,
        /// The tenant every call of this connection acts for.
        tenant: TenantId,
        /// The agent answering.
        node: NodeId,
        /// The process this connection is scoped to (its own endpoint), if any.
        pid: Option<Pid>,
    },
    /// The answer to the call `id`.
    Reply {
        /// The call's id.
        id: u64,
        /// The answer.
        reply: Reply,
    },
    /// The connection is refused or broken; the agent closes it after this frame.
    Error(ProtocolError),
}

/// The answer to one [`Call`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// To [`Call::Members`].
    Members(MembersView),
    /// To every other call: the core's own typed answer.
    Api(ApiReply),
    /// To [`Call::Claim`], and to [`Call::Link`] when refused: `Ok` comes with the
    /// link's end attached to the frame (`SCM_RIGHTS`).
    Link(Result<(), LinkRefused>),
    /// To [`Call::Link`]: the link is made and its end attached to the frame.
    LinkMade(LinkMade),
}

/// A link made ([`Reply::LinkMade`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkMade {
    /// The token its receiver claimed it with (acknowledgements carried the other
    /// way name it).
    pub token: u64,
    /// Its key, when it crosses hosts ([`crate::link_seal`]).
    pub key: Option<crate::link_seal::LinkKey>,
}

/// Why no link was made or handed over.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum LinkRefused {
    /// The marker could not be sent: the receiver is not a process of the
    /// tenant, has ended, or its host did not answer (as a send to it fails).
    #[error("the link's marker was not delivered: {0}")]
    Marker(SendError),
    /// This agent cannot link to the receiver's host (it makes links only where it
    /// can reach the receiver's agent directly), or holds too many links waiting.
    #[error("no link to that process: {0}")]
    Unavailable(String),
    /// No end of a link from that sender to this process waits under the token
    /// (it was never made, was taken already, or expired).
    #[error("no link waits under that token")]
    NoSuchLink,
}

/// The federation as one agent sees it: its own group at each level.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembersView {
    /// The agent answering.
    pub node: NodeId,
    /// Its current life.
    pub incarnation: Incarnation,
    /// Its groups, level 0 first; the last one is the top group when the agent
    /// leads its way up to the root.
    pub groups: Vec<GroupView>,
    /// The root this agent believes in (the last ancestor its leaders reported).
    pub root: Option<NodeId>,
}

/// One federation group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupView {
    /// 0 for groups of agents, `k + 1` for groups of level-`k` leaders.
    pub level: u8,
    /// The group's leader.
    pub leader: NodeId,
    /// Grows with every membership change.
    pub epoch: u64,
    /// Its members, in id order, with the address each listens on when known.
    pub members: Vec<Member>,
}

/// A group member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The agent.
    pub node: NodeId,
    /// Where it listens for agents (`ip:port`), when this agent knows it.
    pub addr: Option<String>,
}

/// Why the agent refused or closed a connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ProtocolError {
    /// The client speaks a version the agent does not.
    #[error("protocol version {client} is not supported (the agent speaks {agent})")]
    Version {
        /// What the client sent.
        client: u16,
        /// What the agent speaks.
        agent: u16,
    },
    /// No token matched and the caller's uid maps to no tenant.
    #[error("not authenticated: unknown token, and uid {uid} maps to no tenant")]
    Unauthenticated {
        /// The caller's uid, from `SO_PEERCRED`.
        uid: u32,
    },
    /// A frame could not be decoded.
    #[error("malformed frame: {0}")]
    Malformed(String),
    /// A frame was larger than the limit.
    #[error("frame of {len} bytes is over the limit of {max}")]
    TooLarge {
        /// The announced length.
        len: u32,
        /// The limit.
        max: u32,
    },
    /// A call came before `Hello`, or `Hello` came twice.
    #[error("unexpected frame: {0}")]
    Unexpected(String),
    /// The agent is shutting down.
    #[error("the agent is shutting down")]
    ShuttingDown,
}

/// Why a payload could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The payload is larger than the limit.
    #[error("payload of {len} bytes is over the limit of {max}")]
    TooLarge {
        /// Its length.
        len: u64,
        /// The limit.
        max: u32,
    },
    /// bincode refused it.
    #[error("{0}")]
    Bincode(#[from] bincode::Error),
}

fn options(limit: u32) -> impl Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_big_endian()
        .reject_trailing_bytes()
        .with_limit(u64::from(limit))
}

/// Encodes `frame` as one length-prefixed frame, refusing more than `limit` bytes.
pub fn encode<T: Serialize>(frame: &T, limit: u32) -> Result<Vec<u8>, CodecError> {
    let len = options(limit)
        .serialized_size(frame)
        .map_err(|_| CodecError::TooLarge {
            len: u64::from(limit) + 1,
            max: limit,
        })?;
    let mut out = Vec::with_capacity(4 + len as usize);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    options(limit).serialize_into(&mut out, frame)?;
    Ok(out)
}

/// Decodes one payload (without its length prefix), refusing more than `limit` bytes.
pub fn decode<'a, T: Deserialize<'a>>(payload: &'a [u8], limit: u32) -> Result<T, CodecError> {
    if payload.len() as u64 > u64::from(limit) {
        return Err(CodecError::TooLarge {
            len: payload.len() as u64,
            max: limit,
        });
    }
    Ok(options(limit).deserialize(payload)?)
}

/// Checks a frame's length prefix against `limit` before its payload is read.
pub fn check_len(prefix: [u8; 4], limit: u32) -> Result<usize, ProtocolError> {
    let len = u32::from_be_bytes(prefix);
    if len > limit {
        Err(ProtocolError::TooLarge { len, max: limit })
    } else {
        Ok(len as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn frames_round_trip() {
        let call = ClientFrame::Call {
            id: 7,
            call: Call::NSpawn {
                n: 3,
                spec: ProcSpec {
                    path: "/bin/true".into(),
                    argv: vec!["true".into()],
                    ..ProcSpec::default()
                },
            },
        };
        let bytes = encode(&call, MAX_REQUEST_BYTES).unwrap();
        let len = check_len(bytes[..4].try_into().unwrap(), MAX_REQUEST_BYTES).unwrap();
        assert_eq!(len, bytes.len() - 4);
        let back: ClientFrame = decode(&bytes[4..], MAX_REQUEST_BYTES).unwrap();
        assert_eq!(back, call);
    }

    #[test]
    fn messaging_calls_round_trip_and_carry_the_connections_tenant() {
        let me = Pid::new(NodeId(2), Incarnation(1), 5);
        let call = Call::Recv {
            pid: me,
            max: 3,
            wait: Some(std::time::Duration::from_millis(1500)),
        };
        let frame = ClientFrame::Call {
            id: 9,
            call: call.clone(),
        };
        let bytes = encode(&frame, MAX_REQUEST_BYTES).unwrap();
        let back: ClientFrame = decode(&bytes[4..], MAX_REQUEST_BYTES).unwrap();
        assert_eq!(back, frame);
        assert_eq!(call.acts_as(), Some(me));
        assert_eq!(
            call.into_api(TenantId(4)),
            Some(ApiCall::Recv {
                tenant: TenantId(4),
                pid: me,
                max: 3,
                wait: Some(std::time::Duration::from_millis(1500)),
            })
        );
        assert_eq!(Call::Members.into_api(TenantId(4)), None);
        assert_eq!(Call::Whereis { name: "x".into() }.acts_as(), None);
    }

    #[test]
    fn a_wait_with_nanoseconds_past_a_second_is_refused() {
        let frame = ClientFrame::Call {
            id: 1,
            call: Call::Recv {
                pid: Pid::new(NodeId(1), Incarnation(1), 1),
                max: 1,
                wait: Some(std::time::Duration::from_nanos(7)),
            },
        };
        let mut bytes = encode(&frame, MAX_REQUEST_BYTES).unwrap();
        // The duration's nanos (u32) are the frame's last four bytes.
        let n = bytes.len();
        bytes[n - 4..].copy_from_slice(&2_000_000_000u32.to_be_bytes());
        assert!(decode::<ClientFrame>(&bytes[4..], MAX_REQUEST_BYTES).is_err());
    }

    #[test]
    fn oversized_prefix_is_refused_before_reading() {
        let err = check_len((MAX_REQUEST_BYTES + 1).to_be_bytes(), MAX_REQUEST_BYTES);
        assert!(matches!(err, Err(ProtocolError::TooLarge { .. })));
    }

    #[test]
    fn encode_refuses_what_decode_would_refuse() {
        let spec = ProcSpec {
            path: "x".repeat(100),
            ..ProcSpec::default()
        };
        assert!(matches!(
            encode(
                &ClientFrame::Call {
                    id: 1,
                    call: Call::Spawn(spec)
                },
                64
            ),
            Err(CodecError::TooLarge { .. })
        ));
    }

    #[test]
    fn a_vector_claiming_2_pow_60_elements_is_refused() {
        // Call::CSpawn is variant 3; then a u64 length.
        let mut payload = 1u32.to_be_bytes().to_vec(); // ClientFrame::Call
        payload.extend_from_slice(&0u64.to_be_bytes()); // id
        payload.extend_from_slice(&3u32.to_be_bytes());
        payload.extend_from_slice(&(1u64 << 60).to_be_bytes());
        assert!(decode::<ClientFrame>(&payload, MAX_REQUEST_BYTES).is_err());
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode::<ClientFrame>(&bytes, MAX_REQUEST_BYTES);
            let _ = decode::<AgentFrame>(&bytes, MAX_REPLY_BYTES);
        }
    }
}
