//! libnefele: talk to the local Nefele agent (`nefeled`) over its Unix socket.
//!
//! - [`proto`]: the versioned request/response protocol both sides speak; the
//!   agent's API server and this client share it, so they cannot drift apart.
//! - [`client`]: the Rust client ([`Client`]), blocking, one call at a time:
//!   processes (spawn, ps, kill, wait) and messaging (send, receive, names,
//!   groups, topics, monitors, distance). A process started by Nefele connects
//!   through the endpoint it inherited (`NEFELE_FD`), with no configuration.
//! - [`reconnect`]: how such a process finds its agent again after a restart.
//! - [`link`]: direct connections between two processes, made by their agents,
//!   that carry pid sends without either agent in the data path; [`link_seal`]:
//!   the end-to-end encryption of those that cross hosts.
//! - [`ffi`]: the C ABI over the client, declared in `include/nefele.h`.
//! - [`quantity`]: strict parsing and display of cpu and memory amounts (`500m`,
//!   `512M`), shared by `nef` flags and the `nefeled` configuration.

#![deny(missing_docs, unreachable_pub, unsafe_code)]

pub mod client;
mod endpoint;
#[allow(non_camel_case_types)]
pub mod ffi;
pub mod link;
pub mod link_seal;
mod links;
mod poller;
pub mod proto;
pub mod quantity;
pub mod reconnect;

pub use client::{Client, ClientError, Placed, SendOptions, MAX_ASYNC_SENDS};
