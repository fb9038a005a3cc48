//! nefele-transport-rdma: the RDMA transport between agents, over `rdma-sys`
//! (libibverbs), implementing the same `nefele_core::Transport` trait as TCP.
//!
//! To be built by a later issue. Its hardware-independent logic (framing into
//! registered buffers, credit-based flow control, connection state) will be unit
//! tested here; tests that need a device will skip with a message naming what is
//! missing. Nothing lives here yet.
