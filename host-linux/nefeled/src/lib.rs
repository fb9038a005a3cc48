//! nefeled: the Nefele agent runtime on a real server (ARCHITECTURE.md §5), and the same
//! runtime under madsim (`--cfg madsim`) for deterministic cluster tests.
//!
//! Modules, each with one job: [`config`] (the TOML file and the flags),
//! [`identity`] (node id and incarnation, durable), [`beacon`] (UDP discovery
//! beacons and the address book), `driver` (the task that owns the core agent), `transport` (TCP, or RDMA
//! with per-peer fallback, as configured),
//! [`host_link`] (the channels to a host backend), [`host_traits`] (the server's
//! location, cpu speed and accelerators), [`sim_host`] (the in-memory
//! host), `linux_host` (the Linux adapter on its own thread), [`handle`] (the
//! in-process API), `api_server` (the Unix-socket API), `link_desk` (the ends of links between
//! processes, waiting for their receivers), `remote_links` (links across hosts: dialing and taking their connections), [`metrics`] (the Prometheus text and its
//! HTTP server), [`proxy`] (the external proxy's TCP connections and the `[proxy]` rules) and [`runtime`] (starting it all). The Linux host and the Unix socket exist only outside madsim.

#![forbid(unsafe_code)]
#![deny(missing_docs, unreachable_pub)]

#[cfg(not(madsim))]
pub mod api_server;
pub mod beacon;
pub mod config;
mod driver;
pub mod handle;
pub mod host_link;
pub mod host_traits;
pub mod identity;
#[cfg(not(madsim))]
mod link_desk;
#[cfg(not(madsim))]
pub mod linux_host;
pub mod metrics;
pub mod proxy;
#[cfg(not(madsim))]
mod remote_links;
pub mod runtime;
pub mod sim_host;
mod transport;

pub use driver::DriverStats;
pub use handle::{AgentHandle, RuntimeGone};
pub use runtime::{start, start_with, Runtime, RuntimeConfig, StartError};
