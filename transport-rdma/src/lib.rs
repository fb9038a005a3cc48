//! nefele-transport-rdma: the RDMA transport between agents (ARCHITECTURE.md §2),
//! with the same contract as transport-tcp ([`nefele_core::Transport`]).
//!
//! Per peer, frames go over an RDMA reliable connection when both ends have a
//! usable device and the link comes up, and over the peer's authenticated TCP
//! connection (the [`Carrier`]) otherwise — decided when the peer connects, and
//! logged. The link is set up over that TCP connection, so the peer is
//! authenticated before any RDMA resource is named to it ([`control`]).
//!
//! Frame protection: over TCP, frames get what transport-tcp gives them. Over
//! RDMA, frames are neither encrypted nor MACed by this crate: an RC queue pair
//! accepts packets only from the one remote queue pair it was connected to,
//! whose number was learnt over the authenticated TCP connection; the rings take
//! only SENDs, and the one region open to RDMA WRITE is each link's 8-byte
//! credit word, whose address and rkey were told to that peer alone. The fabric
//! is trusted like the datacenter network (an attacker on it who forges
//! packets is out of scope). Residual: every link shares one protection
//! domain, so an authenticated peer that guessed another link's credit-word
//! address and rkey could corrupt that counter; the owner then sees an
//! impossible count and tears the link down (a denial of service between
//! authenticated agents, never a read of anyone's frames). A deployment that must
//! protect frames on the fabric runs TCP (or adds fabric encryption).
//!
//! Modules, each owning one job:
//! [`verbs`] (the small trait over the verbs used, and its types),
//! [`fake`] (an in-memory fabric implementing it),
//! `ibverbs` (libibverbs through rdma-sys; feature `verbs`; the only unsafe code),
//! [`device`] (sysfs discovery, port choice, memlock),
//! [`qp`] (the queue pair state machine),
//! `frame` (fragments in ring slots, reassembly),
//! `ring` (slot rings and credit arithmetic),
//! `control` (the set-up messages over TCP),
//! `poller` (busy-poll budget, then the completion channel),
//! `link` (one peer's queue pair, rings and set-up state) and
//! `transport` (the public handle, per-peer path choice and fallback).

#![cfg_attr(not(feature = "verbs"), forbid(unsafe_code))]
#![cfg_attr(feature = "verbs", deny(unsafe_code))]
#![deny(missing_docs, unreachable_pub)]

mod control;
pub mod device;
pub mod fake;
mod frame;
#[cfg(feature = "verbs")]
#[allow(unsafe_code)] // The FFI to libibverbs; every block says why it is sound.
pub mod ibverbs;
mod link;
mod poller;
pub mod qp;
mod ring;
mod transport;
pub mod verbs;

pub use frame::FragmentError;
pub use link::LinkError;
pub use ring::RingError;
pub use transport::{
    Carrier, CarrierError, ConfigError, PeerPath, RdmaConfig, RdmaError, RdmaTransport,
};
