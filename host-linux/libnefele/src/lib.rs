//! libnefele: talk to the local Nefele agent (`nefeled`) over its Unix socket.
//!
//! [`proto`] is the versioned request/response protocol both sides speak; the
//! agent's API server and this client share it, so they cannot drift apart.

#![deny(missing_docs, unreachable_pub)]

pub mod proto;
