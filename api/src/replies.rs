//! What the agent answers: resources, process entries and one error enum per
//! operation.
//!
//! Every error variant leaves the cluster as it was: a failed spawn has no
//! process left running and no reservation held.

use crate::ids::{NodeId, Pid, TenantId};
use crate::spec::ExitStatus;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// What one process reserves on its host.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Demand {
    /// Cpu, in millicores.
    pub cpu_millicores: u32,
    /// Memory, in bytes.
    pub memory_bytes: u64,
    /// Accelerator devices.
    pub accelerators: u32,
}

impl Demand {
    /// The sum of two demands (saturating).
    #[must_use]
    pub fn plus(self, o: Demand) -> Demand {
        Demand {
            cpu_millicores: self.cpu_millicores.saturating_add(o.cpu_millicores),
            memory_bytes: self.memory_bytes.saturating_add(o.memory_bytes),
            accelerators: self.accelerators.saturating_add(o.accelerators),
        }
    }

    /// `self - o`, each field floored at zero.
    #[must_use]
    pub fn minus(self, o: Demand) -> Demand {
        Demand {
            cpu_millicores: self.cpu_millicores.saturating_sub(o.cpu_millicores),
            memory_bytes: self.memory_bytes.saturating_sub(o.memory_bytes),
            accelerators: self.accelerators.saturating_sub(o.accelerators),
        }
    }

    /// Whether `o` fits in `self`.
    #[must_use]
    pub fn covers(self, o: Demand) -> bool {
        self.cpu_millicores >= o.cpu_millicores
            && self.memory_bytes >= o.memory_bytes
            && self.accelerators >= o.accelerators
    }

    /// The first resource of `need` that `self` cannot cover, if any.
    #[must_use]
    pub fn short_of(self, need: Demand) -> Option<Resource> {
        if self.cpu_millicores < need.cpu_millicores {
            Some(Resource::Cpu)
        } else if self.memory_bytes < need.memory_bytes {
            Some(Resource::Memory)
        } else if self.accelerators < need.accelerators {
            Some(Resource::Accelerators)
        } else {
            None
        }
    }
}

/// A resource a request can be short of.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Resource {
    /// No reachable host has this much free cpu.
    Cpu,
    /// No reachable host has this much free memory.
    Memory,
    /// No reachable host has this many free accelerators.
    Accelerators,
    /// Each process fits somewhere, but not enough distinct hosts have room for all of
    /// them together under the request's affinity rules.
    Hosts,
    /// No reachable host has a cpu of this speed class or a faster one.
    CpuClass(u8),
    /// No reachable host with room can enforce this kind of limit (on Linux: its
    /// cgroup controller is missing), so none offered to run the process.
    Limit(crate::spec::Limit),
}

/// Why `spawn`, `n_spawn` or `c_spawn` failed. No process of the request is left
/// running and no reservation is held (leases run out by themselves).
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum SpawnError {
    /// The request is malformed (empty, too many processes, empty path, a spec that does
    /// not fit one message); nothing was attempted.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The request cannot fit in the capacity placement could find; `resource` says what
    /// ran out first.
    #[error("not enough {resource:?} for the request")]
    Short {
        /// What ran out.
        resource: Resource,
    },
    /// A chosen host did not confirm the creation in time (crash, partition); every
    /// process already created for the request has been killed.
    #[error("aborted: a chosen host did not answer in time")]
    Aborted,
    /// No host of the whole cluster has `resource` (a cpu speed class, or as many
    /// accelerators as one process asks), busy or not: the request failed at once,
    /// without waiting for room.
    #[error("no host of the cluster has {resource:?}")]
    Unavailable {
        /// What no host has.
        resource: Resource,
    },
}

/// Why `kill` failed. Nothing changed.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum KillError {
    /// No process with this pid belongs to the caller's tenant (it never existed, or it
    /// belongs to another tenant: the two are indistinguishable on purpose).
    #[error("no such process")]
    NoSuchProcess,
    /// The process has exited already.
    #[error("the process has exited already")]
    Exited,
    /// Its host was lost with it.
    #[error("the process was lost with its host")]
    Lost,
    /// The host of the process did not answer in time.
    #[error("the process's host did not answer")]
    Unreachable,
}

/// Why `info` failed. Nothing changed.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum InfoError {
    /// As for [`KillError::NoSuchProcess`].
    #[error("no such process")]
    NoSuchProcess,
    /// The host of the process did not answer in time.
    #[error("the process's host did not answer")]
    Unreachable,
}

/// Why `wait` failed. Nothing changed.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum WaitError {
    /// As for [`KillError::NoSuchProcess`].
    #[error("no such process")]
    NoSuchProcess,
    /// The host of the process stayed silent through every retry.
    #[error("the process's host did not answer")]
    Unreachable,
}

/// The life stage of a process, as `info` and `ps` report it.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProcState {
    /// Created, its request not yet confirmed by the requester.
    Provisional,
    /// Running.
    Running,
    /// Ended (kept for a while so that `wait` and `info` can still see it).
    Exited(ExitStatus),
    /// Its host crashed or left with it; it may or may not still run there, unreachable.
    Lost,
}

/// How far a process is from the agent that asked about it.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DistanceClass {
    /// On the asking agent's own server.
    SameHost,
    /// In the asking agent's level-0 federation group (the locality unit).
    SameGroup,
    /// Elsewhere in the DC.
    SameDc,
    /// Outside the DC (an external service reached through a proxy agent).
    External,
}

impl DistanceClass {
    /// Every class, nearest first.
    pub const ALL: [DistanceClass; 4] = [
        DistanceClass::SameHost,
        DistanceClass::SameGroup,
        DistanceClass::SameDc,
        DistanceClass::External,
    ];

    /// Its position in [`DistanceClass::ALL`] (nearest first), for tables indexed
    /// by class.
    #[must_use]
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// One process table entry, as a tenant sees it.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcInfo {
    /// The process.
    pub pid: Pid,
    /// Its tenant (always the caller's).
    pub tenant: TenantId,
    /// Its host.
    pub host: NodeId,
    /// The executable it runs (the spec's path).
    pub command: String,
    /// What it reserved.
    pub demand: Demand,
    /// Its life stage.
    pub state: ProcState,
    /// Time since it was created.
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub age: Duration,
    /// Its distance from the asking agent (filled by the asking agent).
    pub distance: DistanceClass,
}

/// The answer to `ps`.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PsReply {
    /// The tenant's processes, in pid order.
    pub processes: Vec<ProcInfo>,
    /// Agents asked that did not answer in time (their processes are missing).
    pub unanswered: u32,
}
