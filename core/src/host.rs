//! The host boundary: what the core asks of a server (start and kill processes,
//! report resources) and what the server reports back.
//!
//! The core never runs a process itself. It emits [`HostCommand`]s; the driver
//! hands them to a [`Host`] implementation (simulated hosts in `transport-sim`,
//! Linux namespaces and cgroups in `host-linux`) and feeds the resulting
//! [`HostEvent`]s back into the agent. A [`ProcSpec`] never names a server:
//! location is decided by placement, never by the caller.

use crate::ids::{Pid, TenantId};
pub use nefele_api::spec::{
    Affinity, ExitStatus, Limit, LimitKinds, Limits, ProcSpec, ResourcePolicy, Signal,
    WorkloadProfile,
};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// A server's capacity and traits, as the host reports them.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct HostResources {
    /// Logical cores.
    pub cores: u32,
    /// Total cpu, in millicores (`cores * 1000` unless the host reserves some).
    pub cpu_millicores: u32,
    /// Total memory, in bytes.
    pub memory_bytes: u64,
    /// Accelerator devices.
    pub accelerators: u32,
    /// Relative cpu speed; 1000 is the reference core.
    pub cpu_speed: u32,
    /// Cpu currently reserved by running processes, in millicores.
    pub committed_cpu_millicores: u32,
    /// Memory currently reserved by running processes, in bytes.
    pub committed_memory_bytes: u64,
    /// Where the server stands: its failure domains.
    pub location: Location,
    /// The kinds of limit this host cannot enforce (none by default; on Linux, the
    /// cgroup controllers it lacks): it takes no process that asks for one.
    pub unenforced: LimitKinds,
}

/// A server's failure domains: the rack (one power feed and top-of-rack switch)
/// inside the row. Rack numbers are unique in the data centre, not per row, so
/// two hosts share a rack exactly when their `rack` fields are equal.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Location {
    /// The row of racks.
    pub row: u16,
    /// The rack.
    pub rack: u16,
}

/// What the core asks a host to do.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostCommand {
    /// Start `spec` for `tenant` under the global id `pid`. Idempotent: starting a pid
    /// the host already runs (or ran) does nothing.
    Start {
        /// The global id the process will have.
        pid: Pid,
        /// The tenant that owns it.
        tenant: TenantId,
        /// What to run.
        spec: ProcSpec,
    },
    /// Deliver `signal` to the process `pid` and its descendants.
    Kill {
        /// The process.
        pid: Pid,
        /// What to deliver.
        signal: Signal,
    },
}

/// What a process used over its life, as measured by the host.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Usage {
    /// Cpu time, user plus system.
    pub cpu_time: Duration,
    /// Peak resident memory, in bytes.
    pub peak_memory_bytes: u64,
    /// Time from start to exit.
    pub wall_time: Duration,
}

/// Why a host could not start a process.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StartFailure {
    /// The executable does not exist.
    NotFound,
    /// The executable exists but cannot be executed (mode, or not an executable format).
    NotExecutable,
    /// The host refused for lack of privilege.
    PermissionDenied,
    /// A limit in the policy cannot be enforced on this host.
    LimitUnenforceable,
    /// The spec itself is malformed (empty path, NUL bytes, bad environment entry, …).
    InvalidSpec,
    /// The host has run out of something (memory, pids, file descriptors).
    Exhausted,
    /// Anything else the host reported.
    Other,
}

/// What a host reports to the core.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostEvent {
    /// The process `pid` is running.
    Started {
        /// The process.
        pid: Pid,
    },
    /// The process `pid` could not be started; nothing of it is left on the host.
    StartFailed {
        /// The process.
        pid: Pid,
        /// The kind of failure, for programs.
        reason: StartFailure,
        /// The host's own words, for people (syscall, errno, path).
        detail: String,
    },
    /// The process `pid` ended, and the host has released everything it held.
    Exited {
        /// The process.
        pid: Pid,
        /// How it ended.
        status: ExitStatus,
        /// What it used.
        usage: Usage,
    },
    /// A process an earlier life of this agent started, found still recorded when
    /// the host re-read its durable state at start. Reported before any `Exited`
    /// for the same pid, so a process that ended while the agent was down is
    /// adopted and then reported ended.
    Adopted {
        /// The process (minted by an earlier incarnation of this agent).
        pid: Pid,
        /// The tenant that owns it.
        tenant: TenantId,
        /// The executable it runs.
        command: String,
        /// What it reserved, in millicores.
        cpu_millicores: u32,
        /// What it reserved, in bytes.
        memory_bytes: u64,
        /// How long it has been running.
        age: Duration,
    },
    /// The host's capacity or commitments changed.
    Resources(HostResources),
}

/// A server that runs processes for the core. Implemented by the simulator's hosts
/// and by the Linux adapter.
///
/// Call order: the driver passes each [`HostCommand`] the agent emits to
/// [`Host::execute`], and drains [`Host::poll_event`] into the agent until it
/// returns `None`, every time the host may have made progress.
pub trait Host {
    /// Why a command could not even be attempted (the host itself is broken).
    /// Failures of a single process are reported as [`HostEvent::StartFailed`] instead.
    type Error: std::error::Error;

    /// Carries out `command`; its outcome is reported later through [`Host::poll_event`].
    fn execute(&mut self, command: HostCommand) -> Result<(), Self::Error>;

    /// The next event the host has to report, if any.
    fn poll_event(&mut self) -> Option<HostEvent>;

    /// The host's capacity and current commitments.
    fn resources(&self) -> HostResources;
}
