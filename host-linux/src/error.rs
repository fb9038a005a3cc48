//! Typed errors of the adapter: why one process could not start ([`StartError`],
//! reported as a `StartFailed` event, never as a `Host::Error`), and why the
//! adapter itself could not work ([`HostError`]).
//!
//! Every variant names its cause; [`StartError::reason`] maps it onto the core's
//! [`StartFailure`] so programs can react, and its `Display` is the event's detail.

use crate::cgroup::{CgroupError, Unenforceable};
use crate::sys::SysError;
use nefele_core::host::StartFailure;
use nix::errno::Errno;
use std::path::PathBuf;

/// Why one process could not be started. Nothing of it is left on the host.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The spec is malformed.
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    /// The executable does not exist.
    #[error("executable {0:?} does not exist")]
    ExecutableMissing(PathBuf),
    /// The executable exists but is not an executable file.
    #[error("{path:?} is not executable: {why}")]
    NotExecutable {
        /// The executable.
        path: PathBuf,
        /// Mode, file type, or format.
        why: String,
    },
    /// The adapter lacks the privilege for `op`.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// A limit of the policy cannot be enforced here.
    #[error(transparent)]
    Unenforceable(#[from] Unenforceable),
    /// A namespace or process syscall was refused.
    #[error(transparent)]
    Syscall(#[from] SysError),
    /// A cgroup operation was refused.
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    /// Log files could not be prepared.
    #[error("log file {path:?}: {source}")]
    Log {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
}

fn errno_reason(errno: Errno) -> StartFailure {
    match errno {
        Errno::EPERM | Errno::EACCES => StartFailure::PermissionDenied,
        Errno::ENOENT => StartFailure::NotFound,
        Errno::ENOEXEC | Errno::ETXTBSY | Errno::EISDIR => StartFailure::NotExecutable,
        Errno::ENOMEM
        | Errno::EAGAIN
        | Errno::EMFILE
        | Errno::ENFILE
        | Errno::ENOSPC
        | Errno::EUSERS => StartFailure::Exhausted,
        Errno::E2BIG | Errno::EINVAL => StartFailure::InvalidSpec,
        _ => StartFailure::Other,
    }
}

impl StartError {
    /// The kind of failure, in the core's terms.
    pub fn reason(&self) -> StartFailure {
        match self {
            StartError::InvalidSpec(_) => StartFailure::InvalidSpec,
            StartError::ExecutableMissing(_) => StartFailure::NotFound,
            StartError::NotExecutable { .. } => StartFailure::NotExecutable,
            StartError::PermissionDenied(_) => StartFailure::PermissionDenied,
            StartError::Unenforceable(_) => StartFailure::LimitUnenforceable,
            StartError::Syscall(e) if e.op == "execve" && e.errno == Errno::EACCES => {
                StartFailure::NotExecutable
            }
            StartError::Syscall(e) => errno_reason(e.errno),
            StartError::Cgroup(CgroupError { source, .. }) | StartError::Log { source, .. } => {
                source
                    .raw_os_error()
                    .map_or(StartFailure::Other, |n| errno_reason(Errno::from_raw(n)))
            }
        }
    }
}

/// Why the adapter itself could not work (not tied to one process).
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The data directory or state file could not be read or written.
    #[error("state {path:?}: {source}")]
    State {
        /// The file or directory.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// The state file exists but is not valid.
    #[error("state file {path:?} is corrupt: {detail}")]
    CorruptState {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        detail: String,
    },
    /// Cgroup detection failed.
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    /// A handle the real syscall layer needs could not be opened.
    #[error(transparent)]
    Syscall(#[from] SysError),
}
