//! nefele-transport-tcp: the TCP transport between agents (ARCHITECTURE.md §2).
//!
//! Each pair of agents keeps one TCP connection (TCP_NODELAY), authenticated
//! with the cluster key (and optionally per-node keys) by a handshake that also
//! agrees fresh session keys, before any frame crosses it. Frames are
//! length-prefixed core envelopes, carried in encrypted, authenticated,
//! sequenced records (AES-256-GCM), so a party on the path can neither
//! read, inject, alter, replay nor reorder them. Every peer has a
//! bounded send queue that is also the write coalescer; received frames go to a
//! bounded inbox that the driver drains in batches. Connections are dialed from
//! an address book that can change at run time, and redialed with exponential
//! backoff and jitter. [`TcpTransport`] implements [`nefele_core::Transport`].
//!
//! Modules, each owning one job: [`frame`] (the pure frame codec), `record`
//! (the pure record codec: sealing and opening), `auth` (keys, hellos, proofs,
//! session keys), [`node_keys`] (per-node keys and their certificates),
//! `handshake` (the handshake over a stream), `backoff`
//! (reconnect delays), `queue` (send queues), `inbox` (the event queue),
//! `connection` (one connection's I/O), `entropy` (nonces and jitter), `registry` (the peer table and the
//! tie-break), `dialer` and `listener` (outbound and inbound connections),
//! `shared` (admission of connections) and `transport` (the public handle).
//!
//! Under `--cfg madsim` the same code runs on madsim's simulated tokio.

#![forbid(unsafe_code)]
#![deny(missing_docs, unreachable_pub)]

mod auth;
mod backoff;
mod connection;
mod dialer;
mod entropy;
pub mod frame;
mod handshake;
mod inbox;
mod listener;
pub mod node_keys;
mod queue;
mod record;
mod registry;
mod shared;
mod transport;

pub use auth::{ClusterKey, KeyError, MIN_KEY_LEN};
pub use backoff::BackoffConfig;
pub use node_keys::{ClusterAuthority, NodeKeys, NodeKeysError, IDENTITY_LEN};
pub use registry::ConnectionInfo;
pub use transport::{
    BindError, ConfigError, InboundLink, TcpConfig, TcpTransport, TransportError, LINK_MAGIC,
};
