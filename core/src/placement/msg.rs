//! Placement's wire messages (the `Message::Placement` variant). Each stays under
//! [`crate::wire::CONTROL_MTU`]: requests carry at most [`MAX_SHAPES`] shapes, and
//! creations and `ps` answers are batched by encoded size.

use super::api::{Demand, ProcInfo, Resource};
use crate::host::{ExitStatus, Location, ProcSpec};
use crate::ids::{Incarnation, NodeId, Pid, TenantId};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Distinct process shapes one request may hold (all its messages stay under the MTU).
pub const MAX_SHAPES: usize = 48;
/// The budget for the variable part of one message, in encoded bytes.
pub const BATCH_BYTES: usize = 1100;

/// A request, cluster-wide: its requester, the requester's life, and a sequence.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ReqKey {
    /// The agent that placed the request.
    pub requester: NodeId,
    /// Its incarnation (a restarted requester does not know the keys of its earlier life).
    pub incarnation: Incarnation,
    /// Grows per request within one incarnation.
    pub seq: u64,
}

/// `count` processes (or together-units) of one `demand`.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shape {
    /// What each one reserves.
    pub demand: Demand,
    /// How many the request needs.
    pub count: u16,
    /// At most one of these per host (an `apart` or `spread` rule).
    pub one_per_host: bool,
    /// The slowest cpu speed class a host may have to take one (0: any).
    pub cpu_class: u8,
    /// The kinds of limit its processes ask for: a host that cannot enforce one of
    /// them does not take it.
    pub limits: nefele_api::spec::LimitKinds,
}

/// One process to create.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateItem {
    /// Its index in the request (the idempotence key, with the request's key).
    pub index: u16,
    /// The owner.
    pub tenant: TenantId,
    /// What it reserves.
    pub demand: Demand,
    /// What to run.
    pub spec: ProcSpec,
    /// A service's own spawn (a supervisor's child): its host kills it if it is
    /// still unconfirmed a few `confirm_timeout`s after its creation (see the
    /// module doc, point 7).
    pub leased: bool,
}

/// What the host of a pid answers about it.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PidAnswer {
    /// No such process for this tenant.
    NoSuch,
    /// Its entry.
    Info(ProcInfo),
    /// The signal was delivered.
    Signalled,
    /// It ended with this status (also the answer to a wait).
    Exited(ExitStatus),
    /// The wait is registered; the answer comes when the process exits.
    Waiting,
}

/// What to do with a pid.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PidOp {
    /// Report its entry.
    Info,
    /// Deliver a signal.
    Kill(crate::host::Signal),
    /// Answer when it exits.
    Wait,
    /// Forget the asker's wait of this token (its client left); no answer.
    Unwait,
}

/// A placement or namespace message between agents.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PlacementMsg {
    /// Requester → peer: offer what you can take of `shapes`, and hold it under a lease.
    OfferReq {
        /// The request.
        key: ReqKey,
        /// Whose processes it places: the host creates processes of this tenant
        /// only, and no more than it offered (issue 16).
        tenant: TenantId,
        /// What it needs.
        shapes: Vec<Shape>,
    },
    /// Peer → requester: how many of each shape it reserved, and what it has free beyond.
    Offer {
        /// The request.
        key: ReqKey,
        /// Reserved, per shape.
        counts: Vec<u16>,
        /// Free after the reservation.
        free: Demand,
        /// Where the offering host stands (`spread` and `near` read it).
        at: Location,
    },
    /// Requester → leader at `level`: find hosts in your subtree with room for `min`.
    FindRoom {
        /// The request.
        key: ReqKey,
        /// The level of the group the receiver leads.
        level: u8,
        /// The smallest process of the request.
        min: Demand,
        /// What the request still needs in all (the search covers twice that).
        need: Demand,
        /// Distinct hosts it still needs (its uncovered `apart` units).
        hosts: u16,
        /// A subtree not to descend into (the requester's own, already asked).
        skip: NodeId,
        /// The slowest cpu speed class the request's processes accept (the least of
        /// its shapes': a subtree with no host of it or faster is not descended into).
        cpu_class: u8,
        /// With `spread` rules: the racks (bit `rack % 64`) the offers so far come
        /// from; subtrees with other racks are visited first.
        avoid_racks: u64,
    },
    /// The leader of the top group → requester: no host of the whole tree has
    /// `resource` (a cpu speed class, or that many accelerators), busy or not.
    Absent {
        /// The request.
        key: ReqKey,
        /// What no host has.
        resource: Resource,
    },
    /// Level-0 leader → requester: hosts that seem to have room.
    Candidates {
        /// The request.
        key: ReqKey,
        /// The hosts.
        hosts: Vec<NodeId>,
    },
    /// Requester → chosen host: create these processes (provisionally).
    Create {
        /// The request.
        key: ReqKey,
        /// The processes.
        items: Vec<CreateItem>,
        /// How many processes this host gets for the request in all, over every
        /// batch: once that many are created here, what remains of the reservation
        /// is released. (A flag on the last batch released it when that batch came,
        /// also when the network put it ahead of an earlier one, which then found
        /// no room: swarm seed 102898.)
        total: u16,
    },
    /// Host → requester: the pids of the created processes.
    Created {
        /// The request.
        key: ReqKey,
        /// Item index and pid.
        pids: Vec<(u16, Pid)>,
    },
    /// Host → requester: could not create (no room left, lease gone).
    CreateRefused {
        /// The request.
        key: ReqKey,
    },
    /// Requester → hosts: the request is complete; keep its processes.
    Confirm {
        /// The request.
        key: ReqKey,
    },
    /// Requester → hosts: the request failed; kill its processes, drop its reservation.
    Abort {
        /// The request.
        key: ReqKey,
    },
    /// Host → requester: is this provisional request still wanted?
    Query {
        /// The request.
        key: ReqKey,
    },
    /// Asker → host of a pid: do `op` for `tenant`.
    PidReq {
        /// The asker's token, echoed.
        token: u64,
        /// The caller's tenant.
        tenant: TenantId,
        /// The process.
        pid: Pid,
        /// What to do.
        op: PidOp,
    },
    /// Host → asker.
    PidAns {
        /// The asker's token.
        token: u64,
        /// The answer.
        answer: PidAnswer,
    },
    /// Asker (or a leader on its behalf) → the leader of a group at `level`: walk your
    /// subtree for `tenant`'s processes, answers to `asker`.
    PsWalk {
        /// The asker's token.
        token: u64,
        /// The tenant.
        tenant: TenantId,
        /// Who gathers the answers.
        asker: NodeId,
        /// The level of the group the receiver leads.
        level: u8,
    },
    /// Leader → asker: the walk of my group at `level` goes on at these members (the
    /// leaders of the groups one level down, or the hosts themselves at level 0).
    PsExpect {
        /// The asker's token.
        token: u64,
        /// The level of the group walked.
        level: u8,
        /// Its members.
        members: Vec<NodeId>,
    },
    /// Level-0 leader → member: send `asker` your entries for `tenant`.
    PsReq {
        /// The asker's token.
        token: u64,
        /// The tenant.
        tenant: TenantId,
        /// Who gathers the answers.
        asker: NodeId,
    },
    /// Member → asker: one of `batches` batches of the tenant's processes (batches may
    /// arrive in any order).
    PsAns {
        /// The asker's token.
        token: u64,
        /// A batch of entries.
        entries: Vec<ProcInfo>,
        /// How many batches this member sends in all.
        batches: u16,
    },
    /// Host → its level-0 leader and heir: a change of its process table (see
    /// `ledger`). With `reset`, the receiver first forgets its copy.
    Ledger {
        /// Replace the copy instead of amending it.
        reset: bool,
        /// Processes present (added, or all of them with `reset`).
        present: Vec<LedgerItem>,
        /// Processes gone since the last report.
        ended: Vec<Pid>,
    },
    /// Member → the leader of its group at `level`: `tenant` now has processes in my
    /// subtree; answer once your own parents know (see `presence`).
    Present {
        /// The registration's token, echoed.
        token: u64,
        /// The level of the group the receiver leads.
        level: u8,
        /// The tenant.
        tenant: TenantId,
    },
    /// Leader → member: the registration `token` reached the top (or gave up waiting).
    PresentAck {
        /// The token of the `Present`.
        token: u64,
    },
    /// Host → requester: what a finished process used, for the requester's history.
    /// The requester takes it only from the host it placed `pid` on, once, and
    /// files it under the tenant and binary it placed (issue 16).
    Ran {
        /// The process.
        pid: Pid,
        /// Observed average cpu.
        cpu_millicores: u32,
        /// Observed peak memory.
        memory_bytes: u64,
    },
}

impl PlacementMsg {
    /// A short, stable name of the message kind, for traces.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            PlacementMsg::OfferReq { .. } => "place.offer_req",
            PlacementMsg::Offer { .. } => "place.offer",
            PlacementMsg::FindRoom { .. } => "place.find_room",
            PlacementMsg::Candidates { .. } => "place.candidates",
            PlacementMsg::Absent { .. } => "place.absent",
            PlacementMsg::Create { .. } => "place.create",
            PlacementMsg::Created { .. } => "place.created",
            PlacementMsg::CreateRefused { .. } => "place.create_refused",
            PlacementMsg::Confirm { .. } => "place.confirm",
            PlacementMsg::Abort { .. } => "place.abort",
            PlacementMsg::Query { .. } => "place.query",
            PlacementMsg::PidReq { .. } => "ns.pid_req",
            PlacementMsg::PidAns { .. } => "ns.pid_ans",
            PlacementMsg::PsWalk { .. } => "ns.ps_walk",
            PlacementMsg::PsExpect { .. } => "ns.ps_expect",
            PlacementMsg::PsReq { .. } => "ns.ps_req",
            PlacementMsg::PsAns { .. } => "ns.ps_ans",
            PlacementMsg::Ledger { .. } => "ns.ledger",
            PlacementMsg::Present { .. } => "ns.present",
            PlacementMsg::PresentAck { .. } => "ns.present_ack",
            PlacementMsg::Ran { .. } => "ns.ran",
        }
    }
}

/// One process as a host reports it to the keepers of its table.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerItem {
    /// The process.
    pub pid: Pid,
    /// Its tenant.
    pub tenant: TenantId,
    /// Its executable.
    pub command: String,
    /// What it reserved.
    pub demand: Demand,
    /// How long it has existed (ages travel, clocks do not).
    #[serde(deserialize_with = "nefele_api::duration::deserialize")]
    pub age: Duration,
}

/// `items` cut into batches of at most [`BATCH_BYTES`] encoded bytes each (an item
/// larger than that travels alone), in order. No batch is empty.
pub(crate) fn batches<T: Serialize>(items: Vec<T>) -> Vec<Vec<T>> {
    let mut out: Vec<Vec<T>> = Vec::new();
    let mut bytes = 0;
    for item in items {
        let size = size_of(&item);
        match out.last_mut() {
            Some(batch) if bytes + size <= BATCH_BYTES => batch.push(item),
            _ => {
                out.push(vec![item]);
                bytes = 0;
            }
        }
        bytes += size;
    }
    out
}

/// The encoded size of a value, as bincode lays it out in a message (an upper bound
/// is enough: it decides batching).
pub(crate) fn size_of<T: Serialize>(value: &T) -> usize {
    bincode::serialized_size(value).map_or(usize::MAX, |n| usize::try_from(n).unwrap_or(usize::MAX))
}
