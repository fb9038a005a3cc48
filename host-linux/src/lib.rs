//! nefele-host-linux: the Linux implementation of `nefele_core::Host` and the
//! production agent runtime (DESIGN.md §6).
//!
//! To be built by later issues: tenant processes in Linux namespaces (pid, mount,
//! uts, ipc, net) with cgroup limits (v1 and v2), reaping, logs, durable state and
//! re-adoption; then the `nefeled` daemon, the `nef` CLI and the libnefele client
//! (Rust and C ABI). Nothing lives here yet.
