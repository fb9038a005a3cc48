//! What a developer asks to run ([`ProcSpec`] and its policy types), the signals a
//! client can send, and how a process ends. No type here names a server: location
//! is decided by placement, never by the caller.

use crate::ids::Pid;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// What a developer asks to run. No field names a server.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ProcSpec {
    /// The executable, as an absolute path on the host.
    pub path: String,
    /// Arguments, `argv[0]` included.
    pub argv: Vec<String>,
    /// Environment, as `KEY=VALUE` strings.
    pub envp: Vec<String>,
    /// Where the process may or must run relative to others.
    pub affinity: Vec<Affinity>,
    /// What the process reserves and the limits it runs under.
    pub resources: ResourcePolicy,
    /// What the developer expects the process to use; placement refines it from history.
    pub profile: Option<WorkloadProfile>,
}

/// A placement rule relative to other processes.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Affinity {
    /// On the same server as the other processes with this tag.
    Together(String),
    /// On a different server from every other process with this tag (failover).
    Apart(String),
    /// Across racks, as evenly as capacity allows, with the others of this tag.
    Spread(String),
    /// As close as the latency gradient allows to this process.
    Near(Pid),
}

/// Reservations and limits. `None` means "fill from tenant defaults, history, then global defaults".
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ResourcePolicy {
    /// Reserved cpu, in millicores (1000 = one core).
    pub cpu_millicores: Option<u32>,
    /// Reserved memory, in bytes.
    pub memory_bytes: Option<u64>,
    /// Reserved accelerators (whole devices); a host without that many never takes it.
    pub accelerators: Option<u32>,
    /// The slowest cpu speed class the process may run on (see [`cpu_class_of`]);
    /// `None` runs anywhere. Placement fails at once (`Unavailable`) when no host of
    /// the cluster has this class or a faster one.
    #[serde(default)]
    pub cpu_class: Option<u8>,
    /// Hard limits the host enforces.
    pub limits: Limits,
}

/// The highest cpu speed class.
pub const MAX_CPU_CLASS: u8 = 15;

/// The cpu speed class of a host whose relative cpu speed is `cpu_speed` (1000 is
/// the reference core, a 2 GHz one): one class per 250, from 0 up to
/// [`MAX_CPU_CLASS`] (so the reference core is class 4, a 3 GHz one class 6).
#[must_use]
pub fn cpu_class_of(cpu_speed: u32) -> u8 {
    u8::try_from(cpu_speed / 250).map_or(MAX_CPU_CLASS, |c| c.min(MAX_CPU_CLASS))
}

/// Hard limits enforced by the host (cgroups on Linux). `None` means unlimited.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Limits {
    /// Cpu quota, in millicores.
    pub cpu_millicores: Option<u32>,
    /// Memory limit, in bytes; going over it gets the process OOM-killed.
    pub memory_bytes: Option<u64>,
    /// Maximum number of tasks (processes and threads).
    pub pids: Option<u32>,
}

/// A kind of limit in [`Limits`] (on Linux, the cgroup controller that enforces it).
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Limit {
    /// [`Limits::cpu_millicores`] (the cpu controller).
    Cpu,
    /// [`Limits::memory_bytes`] (the memory controller).
    Memory,
    /// [`Limits::pids`] (the pids controller).
    Pids,
}

/// A set of [`Limit`] kinds: those a process asks for, or those a host cannot enforce.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LimitKinds {
    /// A cpu limit.
    pub cpu: bool,
    /// A memory limit.
    pub memory: bool,
    /// A task count limit.
    pub pids: bool,
}

impl LimitKinds {
    /// The kinds `limits` sets.
    #[must_use]
    pub fn of(limits: &Limits) -> LimitKinds {
        LimitKinds {
            cpu: limits.cpu_millicores.is_some(),
            memory: limits.memory_bytes.is_some(),
            pids: limits.pids.is_some(),
        }
    }

    /// The kinds in either.
    #[must_use]
    pub fn union(self, other: LimitKinds) -> LimitKinds {
        LimitKinds {
            cpu: self.cpu || other.cpu,
            memory: self.memory || other.memory,
            pids: self.pids || other.pids,
        }
    }

    /// The first kind in both, if any.
    #[must_use]
    pub fn first_common(self, other: LimitKinds) -> Option<Limit> {
        [
            (Limit::Cpu, self.cpu && other.cpu),
            (Limit::Memory, self.memory && other.memory),
            (Limit::Pids, self.pids && other.pids),
        ]
        .into_iter()
        .find_map(|(kind, both)| both.then_some(kind))
    }

    /// The first kind in the set, if any.
    #[must_use]
    pub fn first(self) -> Option<Limit> {
        self.first_common(self)
    }
}

/// What a process is expected to use over its life.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct WorkloadProfile {
    /// Expected average cpu use, in millicores.
    pub cpu_millicores: u32,
    /// Expected peak memory, in bytes.
    pub memory_bytes: u64,
    /// Expected run time; `None` for a service that runs until killed.
    #[serde(default, deserialize_with = "crate::duration::option::deserialize")]
    pub duration: Option<Duration>,
}

/// A signal to deliver, in the host's terms.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Signal {
    /// Ask to stop (SIGTERM), then force (SIGKILL) after the host's grace period.
    Terminate,
    /// Stop at once (SIGKILL).
    Kill,
    /// Any other signal, by its Linux number.
    Raw(i32),
}

/// How a process ended.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitStatus {
    /// It exited with this code.
    Code(i32),
    /// A signal ended it.
    Signaled(i32),
    /// The host killed it for going over its memory limit.
    OutOfMemory,
    /// The host lost track of it (the host or its agent died and it could not be re-adopted).
    Lost,
}
