//! nefele-transport-tcp: the tokio TCP transport between agents (DESIGN.md §6).
//!
//! To be built by the `nefeled` issue: length-prefixed frames carrying one
//! `nefele_core::wire::Envelope` each, one connection per peer pair, connect with
//! backoff and reconnect, bounded send queues with backpressure, write coalescing,
//! TCP_NODELAY, and challenge-response authentication with a cluster key. It will
//! implement `nefele_core::Transport`. Nothing lives here yet.
