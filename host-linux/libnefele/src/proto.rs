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
//!   appended, so the encoding of the others is unchanged); this protocol does not
//!   expose the messaging calls yet. The supervision calls and answers were
//!   appended the same way.

use bincode::Options;
use nefele_api::calls::ApiReply;
use nefele_api::ids::{Incarnation, NodeId, Pid, TenantId};
use nefele_api::spec::{ProcSpec, Signal};
use nefele_api::supervision::{SupervisedSpawn, SupervisionSpec, SupervisorId};
use serde::{Deserialize, Serialize};

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u16 = 1;
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
