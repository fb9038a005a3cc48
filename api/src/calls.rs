//! The calls a local client makes on its agent, and their answers. A call never
//! names a server: location is never a parameter.

use crate::ids::{Incarnation, NodeId, Pid, TenantId};
use crate::messaging::{
    Delivery, Dest, DistanceInfo, GroupError, Mail, MonitorError, MsgError, NameError, RecvError,
    SendError, SendReceipt,
};
use crate::replies::{InfoError, KillError, ProcInfo, PsReply, SpawnError, WaitError};
use crate::spec::{ExitStatus, ProcSpec, Signal};
use crate::supervision::{
    SupervisedSpawn, SupervisionError, SupervisionSpec, SupervisorId, SupervisorInfo,
};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A local client's request id, chosen by the driver to match replies to calls.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RequestId(pub u64);

/// A call from a local client.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ApiCall {
    /// The agents this agent currently sees in its broadcast domain.
    Neighbours,
    /// Start one process.
    Spawn {
        /// The caller's tenant.
        tenant: TenantId,
        /// What to run.
        spec: ProcSpec,
    },
    /// Start `n` identical processes, atomically.
    NSpawn {
        /// The caller's tenant.
        tenant: TenantId,
        /// How many.
        n: u32,
        /// What to run.
        spec: ProcSpec,
    },
    /// Start different processes, atomically.
    CSpawn {
        /// The caller's tenant.
        tenant: TenantId,
        /// What to run.
        specs: Vec<ProcSpec>,
    },
    /// Deliver a signal to a process.
    Kill {
        /// The caller's tenant.
        tenant: TenantId,
        /// The process.
        pid: Pid,
        /// What to deliver.
        signal: Signal,
    },
    /// A process's entry.
    Info {
        /// The caller's tenant.
        tenant: TenantId,
        /// The process.
        pid: Pid,
    },
    /// The tenant's processes, in the whole cluster (only the subtrees that may hold
    /// the tenant are visited).
    Ps {
        /// The caller's tenant.
        tenant: TenantId,
    },
    /// Answer when a process exits.
    Wait {
        /// The caller's tenant.
        tenant: TenantId,
        /// The process.
        pid: Pid,
    },
    /// Send `data` from the local process `from` to `to` (messaging).
    Send {
        /// The caller's tenant.
        tenant: TenantId,
        /// The sending process: a live process of the tenant on this host.
        from: Pid,
        /// Where it goes.
        to: Dest,
        /// The message.
        data: Vec<u8>,
        /// Its delivery guarantee.
        delivery: Delivery,
        /// Whether to wait for room when the destination mailbox is full (else the
        /// send fails `Full`).
        block: bool,
    },
    /// Take up to `max` messages from the mailbox of the local process `pid`.
    Recv {
        /// The caller's tenant.
        tenant: TenantId,
        /// The receiving process.
        pid: Pid,
        /// The most messages to take.
        max: u32,
        /// How long to wait for at least one when the mailbox is empty (`None`:
        /// answer at once).
        #[serde(default, deserialize_with = "crate::duration::option::deserialize")]
        wait: Option<Duration>,
    },
    /// Register `name` for the process `pid` in the caller's tenant.
    Register {
        /// The caller's tenant.
        tenant: TenantId,
        /// The name.
        name: String,
        /// The process (a live local process of the tenant).
        pid: Pid,
    },
    /// Drop the registration of `name`.
    Unregister {
        /// The caller's tenant.
        tenant: TenantId,
        /// The name.
        name: String,
    },
    /// The process registered under `name`.
    Whereis {
        /// The caller's tenant.
        tenant: TenantId,
        /// The name.
        name: String,
    },
    /// Add the process `pid` to `group`.
    Join {
        /// The caller's tenant.
        tenant: TenantId,
        /// The group.
        group: String,
        /// The process (a live local process of the tenant).
        pid: Pid,
    },
    /// Take the process `pid` out of `group`.
    Leave {
        /// The caller's tenant.
        tenant: TenantId,
        /// The group.
        group: String,
        /// The process.
        pid: Pid,
    },
    /// Subscribe the process `pid` to `topic`.
    Subscribe {
        /// The caller's tenant.
        tenant: TenantId,
        /// The topic.
        topic: String,
        /// The process (a live local process of the tenant).
        pid: Pid,
    },
    /// Cancel the subscription of `pid` to `topic`.
    Unsubscribe {
        /// The caller's tenant.
        tenant: TenantId,
        /// The topic.
        topic: String,
        /// The process.
        pid: Pid,
    },
    /// Have `watcher`'s mailbox told when `watched` ends.
    Monitor {
        /// The caller's tenant.
        tenant: TenantId,
        /// The watching process (a live local process of the tenant).
        watcher: Pid,
        /// The watched process.
        watched: Pid,
    },
    /// Cancel a monitor.
    Demonitor {
        /// The caller's tenant.
        tenant: TenantId,
        /// The watching process.
        watcher: Pid,
        /// The watched process.
        watched: Pid,
    },
    /// How far `to` is from the local process `from`, and the measured round trip.
    Distance {
        /// The caller's tenant.
        tenant: TenantId,
        /// The asking process (a live local process of the tenant).
        from: Pid,
        /// The other process.
        to: Pid,
    },
    /// Spawn like `spawn`, `n_spawn` or `c_spawn`, under a new supervisor (answered
    /// by the supervision service, which spawns through placement).
    SpawnSupervised {
        /// The caller's tenant.
        tenant: TenantId,
        /// What to run.
        spawn: SupervisedSpawn,
        /// How to supervise it.
        supervision: SupervisionSpec,
    },
    /// The tenant's supervisors run by the agent called, with their children and
    /// restart history.
    Supervisors {
        /// The caller's tenant.
        tenant: TenantId,
    },
    /// Stop a supervisor run by the agent called, and every child of it.
    StopSupervisor {
        /// The caller's tenant.
        tenant: TenantId,
        /// The supervisor.
        id: SupervisorId,
    },
}

impl ApiCall {
    /// Whether this is a supervision call (answered by the supervision service).
    #[must_use]
    pub fn is_supervision(&self) -> bool {
        matches!(
            self,
            ApiCall::SpawnSupervised { .. }
                | ApiCall::Supervisors { .. }
                | ApiCall::StopSupervisor { .. }
        )
    }

    /// Whether this is a messaging call (answered by the messaging service).
    #[must_use]
    pub fn is_messaging(&self) -> bool {
        matches!(
            self,
            ApiCall::Send { .. }
                | ApiCall::Recv { .. }
                | ApiCall::Register { .. }
                | ApiCall::Unregister { .. }
                | ApiCall::Whereis { .. }
                | ApiCall::Join { .. }
                | ApiCall::Leave { .. }
                | ApiCall::Subscribe { .. }
                | ApiCall::Unsubscribe { .. }
                | ApiCall::Monitor { .. }
                | ApiCall::Demonitor { .. }
                | ApiCall::Distance { .. }
        )
    }
}

/// The answer to an [`ApiCall`].
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ApiReply {
    /// The live neighbours, in id order, with their incarnations.
    Neighbours(Vec<(NodeId, Incarnation)>),
    /// To `Spawn`, `NSpawn` and `CSpawn`: every pid, in the order of the specs.
    Spawned(Result<Vec<Pid>, SpawnError>),
    /// To `Kill`.
    Killed(Result<(), KillError>),
    /// To `Info`.
    Info(Result<ProcInfo, InfoError>),
    /// To `Wait`: how the process ended.
    Waited(Result<ExitStatus, WaitError>),
    /// To `Ps`.
    Ps(PsReply),
    /// To `Send`: once the message's fate is known.
    Sent(Result<SendReceipt, SendError>),
    /// To `Recv`: the messages taken, oldest first (maybe none).
    Received(Result<Vec<Mail>, RecvError>),
    /// To `Register` and `Unregister`.
    Named(Result<(), NameError>),
    /// To `Whereis`.
    Whereis(Result<Pid, NameError>),
    /// To `Join`, `Leave`, `Subscribe` and `Unsubscribe`.
    Grouped(Result<(), GroupError>),
    /// To `Monitor` and `Demonitor`.
    Monitored(Result<(), MonitorError>),
    /// To `Distance`.
    Distance(Result<DistanceInfo, MsgError>),
    /// To `SpawnSupervised`: the supervisor and every pid, in the order of the specs.
    SpawnedSupervised(Result<(SupervisorId, Vec<Pid>), SpawnError>),
    /// To `Supervisors`, in id order.
    Supervisors(Vec<SupervisorInfo>),
    /// To `StopSupervisor`.
    SupervisorStopped(Result<(), SupervisionError>),
    /// To `Spawn`, `NSpawn` and `CSpawn` when the request was placed but the
    /// processes of some `spread` tags share racks (not enough racks had room):
    /// every pid, in the order of the specs, and those tags. Any other placed
    /// request is answered `Spawned`.
    SpawnedUnspread {
        /// Every pid, in the order of the specs.
        pids: Vec<Pid>,
        /// The `spread` tags whose processes could not all go to different racks.
        tags: Vec<String>,
    },
}

impl ApiReply {
    /// The outcome of a spawn call, whether or not every `spread` tag was spread
    /// across racks; `None` for the answer to any other call.
    #[must_use]
    pub fn spawn_result(self) -> Option<Result<Vec<Pid>, SpawnError>> {
        match self {
            ApiReply::Spawned(r) => Some(r),
            ApiReply::SpawnedUnspread { pids, .. } => Some(Ok(pids)),
            _ => None,
        }
    }
}
