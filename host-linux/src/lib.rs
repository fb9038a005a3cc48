//! nefele-host-linux: the Linux implementation of `nefele_core::Host`
//! (ARCHITECTURE.md §2 and §5).
//!
//! [`LinuxHost`] starts tenant processes in per-tenant Linux namespaces (pid,
//! mount with its own /proc, uts, ipc, net with loopback up) under cgroup limits
//! (v2, or v1 on legacy and hybrid hosts), reaps them with their exit status, OOM
//! kills and usage, logs their output, kills whole process trees, reports the
//! host's resources, and keeps a record (per boot) so that a restarted agent
//! re-adopts what still runs.
//!
//! Modules: [`sys`] (the syscall boundary, with `unsafe`; `holder_init`, the
//! holder's life as its tenant's pid 1, is its only other place), [`cgroup`]
//! (detection, limits, usage), [`state`] (the record, and what survives a power loss), [`logs`], [`resources`],
//! [`error`], [`doorbell`] (what ends a wait for host events early), [`agent_socket`] (how a process reaches an agent that restarted, and
//! who is calling), and [`adapter`] (the decision logic tying them together); with the
//! `testing` feature, `testing` (a recording double of [`sys`] for tests).

pub mod adapter;
pub mod agent_socket;
pub mod cgroup;
pub mod doorbell;
pub mod error;
mod holder_init;
pub mod idmap;
pub mod logs;
pub mod resources;
pub mod rootfs;
pub mod seccomp;
pub mod state;
pub mod sys;
#[cfg(feature = "testing")]
pub mod testing;

pub use adapter::{Config, LinuxHost};
pub use cgroup::{Cgroups, Support, Unenforceable};
pub use doorbell::Doorbell;
pub use error::{HostError, StartError};
pub use sys::{RealSys, Sys};
