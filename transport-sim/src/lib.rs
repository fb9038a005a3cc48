//! nefele-sim: a deterministic discrete-event simulator of a Nefele datacenter
//! (ARCHITECTURE.md §6).
//!
//! A single-threaded loop ([`sim::Simulation`]) drives `nefele_core::Agent`s
//! directly over a simulated [`topology`] and [`network`], injects [`faults`],
//! keeps a [`trace`] with a stable hash, and runs cluster-wide invariant
//! [`checker`]s. [`scenario`] reads TOML scenario files; [`report`] is the JSON
//! report the `nefele-sim` binary writes. Same seed, same trace: nothing here
//! reads a clock or a global RNG.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod baseline;
pub mod checker;
pub mod clock;
pub mod config;
pub mod duration_text;
pub mod faults;
pub mod federation_check;
pub mod html;
pub mod messaging_sim;
pub mod network;
pub mod nic;
pub mod placement_sim;
pub mod report;
pub mod scenario;
pub mod scenario_toml;
pub mod shrink;
pub mod sim;
pub mod supervision_sim;
pub mod swarm;
pub mod swarm_cluster;
pub mod timeline;
pub mod topology;
pub mod trace;
pub mod workload;

pub use config::{CheckConfig, SimConfig};
pub use sim::{SimError, Simulation, Stats};
