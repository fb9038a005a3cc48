//! nefele-core: the sans-IO Nefele agent.
//!
//! This crate is the same code in a 10,000-node simulation and in `nefeled` on a
//! real server. It performs no I/O, starts no thread, reads no
//! clock and draws from no global RNG: time comes in as a [`Time`] on every
//! call, randomness from RNGs seeded at construction, and all iteration that can
//! reach an output runs over ordered maps. `clippy.toml` in this crate enforces
//! that mechanically.
//!
//! Entry point: [`Agent`], a router between services that plug in through the
//! seam in [`service`]. The outside world is abstracted by the [`Transport`]
//! and [`Host`] traits; wire messages are [`wire::Envelope`]s.

#![forbid(unsafe_code)]
#![deny(missing_docs, unreachable_pub)]

pub mod agent;
pub mod discovery;
pub mod federation;
pub mod host;
pub mod ids;
pub mod incarnations;
pub mod messaging;
pub mod mix;
mod outbox;
pub mod placement;
pub mod service;
pub mod supervision;
pub mod time;
pub mod timer;
pub mod transport;
pub mod wire;

pub use agent::{
    Agent, AgentConfig, AgentConfigError, ApiCall, ApiReply, Identity, Input, Notice, Output,
    RequestId,
};
pub use host::{Host, HostCommand, HostEvent, HostResources, Location, ProcSpec};
pub use ids::{Incarnation, NodeId, Pid, PidMinter, TenantId};
pub use time::Time;
pub use transport::{Transport, TransportEvent};
