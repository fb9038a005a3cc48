//! The calls a local client makes on its agent, and their answers. A call never
//! names a server: location is never a parameter.

use crate::ids::{Incarnation, NodeId, Pid, TenantId};
use crate::replies::{InfoError, KillError, ProcInfo, PsReply, SpawnError, WaitError};
use crate::spec::{ExitStatus, ProcSpec, Signal};
use serde::{Deserialize, Serialize};

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
}
