//! The agent socket of a tenant: how a process finds its agent again after the
//! agent restarted, and how the agent tells which process is calling.
//!
//! A process starts with its endpoint (one end of a socket pair, `NEFELE_FD`); the
//! agent holds the other end, so the endpoint dies with the agent. For the agents
//! to come, every tenant's holder (pid 1 of its namespaces, Nefele's code, not
//! dumpable, no capability) listens on a Unix stream socket with the abstract name
//! [`AGENT_SOCKET`] in the tenant's network namespace, made before any process of
//! the tenant exists and kept at a fixed descriptor for the holder's whole life
//! (`sys::HOLDER_LISTEN_FD`). Each agent takes a copy of it with `pidfd_getfd`
//! (at the holder's start, and when it re-adopts the holder after a restart) and
//! accepts on it. The name is bound as long as the holder lives, so no process of
//! the tenant can bind it first; no path is needed, so the process's mount
//! namespace does not matter; processes of other tenants are in other network
//! namespaces and never see it. A connection made while no agent runs waits in
//! the socket's backlog (at most [`BACKLOG`]) until the next agent accepts it.
//!
//! **Who is calling.** The agent identifies a caller by the process that
//! connected, never by anything it says: `SO_PEERPIDFD` names that process (a
//! pidfd cannot come to name another one), its pid is read from the pidfd, its
//! cgroup from `/proc/<pid>/cgroup`; the cgroup must be the agent's own directory
//! of one process of the listener's tenant (`<base>/t<tenant>/p<pid>`) and must
//! list the caller; and the pidfd must still show the process running after that
//! read (so the pid was not reused meanwhile). Tenant processes cannot move
//! between cgroups (the directories are the host root's, and their views have no
//! cgroup file system), so a caller acts as the process whose tree it belongs to,
//! as a child that inherited `NEFELE_FD` does, and never as another process.
//!
//! Invariants: [`identify`] answers a pid only for a caller that was, after the
//! cgroup was read, a running member of that pid's cgroup under the agent's base,
//! of `tenant`; every refusal says why ([`PeerError`]).

use crate::cgroup::{parse_self_cgroup, Cgroups};
use crate::sys::{peer_pidfd, pidfd_pid, SysError};
use nefele_core::{Pid, TenantId};
use std::os::fd::AsRawFd;

/// The abstract name (no file) of every tenant's agent socket, in its own network
/// namespace.
pub const AGENT_SOCKET: &str = "nefele-agent";
/// The environment variable telling a process where its agent socket is: `@` and
/// the abstract name.
pub const AGENT_ADDR_ENV: &str = "NEFELE_AGENT_ADDR";
/// Connections waiting for an agent to accept them, per tenant.
pub const BACKLOG: i32 = 128;

/// The value of [`AGENT_ADDR_ENV`] given to every process.
#[must_use]
pub fn agent_addr() -> String {
    format!("@{AGENT_SOCKET}")
}

/// Why a caller on an agent socket was not identified.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The kernel did not name the caller (`SO_PEERPIDFD` needs Linux 6.5).
    #[error("the caller's process is unknown: {0}")]
    Unnamed(#[from] SysError),
    /// The caller ended before it was identified.
    #[error("the caller has ended")]
    Gone,
    /// The caller's cgroup is not one of this agent's process cgroups.
    #[error("the caller (host pid {os_pid}) is in no process cgroup of this agent: {cgroup:?}")]
    Foreign {
        /// Its pid on the host.
        os_pid: i32,
        /// What its `/proc/<pid>/cgroup` says.
        cgroup: String,
    },
    /// The caller's process belongs to another tenant than the socket's.
    #[error("the caller's process {pid} is of {found}, not of {expected}")]
    OtherTenant {
        /// Its process.
        pid: Pid,
        /// Its tenant.
        found: TenantId,
        /// The socket's tenant.
        expected: TenantId,
    },
}

/// The process `(tenant, pid)` whose cgroup directory (`t<tenant>/p<pid>`, the
/// last two components) one of the lines of a `/proc/<pid>/cgroup` text names.
#[must_use]
pub fn process_of(cgroup_text: &str) -> Option<(TenantId, Pid)> {
    parse_self_cgroup(cgroup_text).values().find_map(|path| {
        let mut parts = path.rsplit('/');
        let proc = parts.next()?.strip_prefix('p')?.parse::<Pid>().ok()?;
        let tenant = parts.next()?.strip_prefix('t')?.parse::<u32>().ok()?;
        Some((TenantId(tenant), proc))
    })
}

/// The process of `tenant` that the caller at the other end of `stream` belongs to
/// (see the module docs).
pub fn identify(
    stream: &impl AsRawFd,
    tenant: TenantId,
    cgroups: &Cgroups,
) -> Result<Pid, PeerError> {
    let pidfd = peer_pidfd(stream)?;
    let os_pid = pidfd_pid(&pidfd).ok_or(PeerError::Gone)?;
    let text = std::fs::read_to_string(format!("/proc/{os_pid}/cgroup")).unwrap_or_default();
    let foreign = || PeerError::Foreign {
        os_pid,
        cgroup: text.trim().to_owned(),
    };
    let (found, pid) = process_of(&text).ok_or_else(foreign)?;
    if found != tenant {
        return Err(PeerError::OtherTenant {
            pid,
            found,
            expected: tenant,
        });
    }
    let cgroup = cgroups.at(tenant, &format!("p{pid}"));
    if !Cgroups::members(&cgroup).contains(&os_pid) {
        return Err(foreign());
    }
    // Still running after the read: `os_pid` was its pid all along.
    if pidfd_pid(&pidfd) != Some(os_pid) {
        return Err(PeerError::Gone);
    }
    Ok(pid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nefele_core::{Incarnation, NodeId};

    #[test]
    fn the_process_is_read_from_the_tail_of_its_cgroup() {
        let pid = Pid::new(NodeId(3), Incarnation(2), 17);
        let v2 = format!("0::/system.slice/nefele/t7/p{pid}\n");
        assert_eq!(process_of(&v2), Some((TenantId(7), pid)));
        let v1 = format!("12:pids:/nefele/t7/p{pid}\n1:name=systemd:/user.slice\n");
        assert_eq!(process_of(&v1), Some((TenantId(7), pid)));
        for other in [
            "0::/user.slice/session-1.scope\n".to_owned(),
            format!("0::/nefele/t7/p{pid}/sub\n"),
            format!("0::/nefele/x7/p{pid}\n"),
            "0::/nefele/t7/pnot-a-pid\n".to_owned(),
            String::new(),
        ] {
            assert_eq!(process_of(&other), None, "{other}");
        }
    }

    #[test]
    fn a_caller_outside_every_process_cgroup_is_refused() {
        let (ours, _theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cgroups = Cgroups::v2(dir.path().to_owned(), "cpu memory pids");
        // The test itself is the caller: not in any cgroup of this (fake) base.
        match identify(&ours, TenantId(7), &cgroups) {
            Err(PeerError::Foreign { os_pid, .. }) => {
                assert_eq!(os_pid, std::process::id() as i32);
            }
            // A kernel before 6.5 cannot name the caller: refused too.
            Err(PeerError::Unnamed(_)) => {}
            other => panic!("{other:?}"),
        }
    }
}
