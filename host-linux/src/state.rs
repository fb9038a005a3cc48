//! Durable local state: what the adapter started and the tenants' holders, so that
//! a restarted agent re-adopts processes still running and reports those that
//! ended while it was down.
//!
//! Invariant: the file on disk is always a complete, valid snapshot. It is
//! replaced atomically (write the temporary file `<name>.tmp`, fsync it, swap it
//! with the old one, fsync the directory), so a crash leaves either the old or
//! the new state. The swap is `renameat2(RENAME_EXCHANGE)`: the old snapshot
//! becomes the next temporary file, so no update creates or deletes an inode
//! (on ext4, creating files amid recent deletions dominated the cost of a
//! start); where the file system cannot exchange, a plain rename does.
//!
//! The temporary file is overwritten in place and cut to the new length, never
//! truncated to zero first: on ext4 a truncation to zero arms `auto_da_alloc`,
//! which starts writeback of the file when it is closed, and the next update
//! then waited for that I/O to truncate it again (about 2 ms a save on a busy
//! disk, twice per process: at its start and at its end).
//!
//! What must be durable before `Started` is reported: the process's record must be
//! in the file that the rename installed. That alone guarantees the promise that
//! matters, "a process the agent started is never forgotten after an agent
//! crash": the page cache outlives the agent, so a restarted agent on the same
//! boot reads the record and re-adopts the process (or reports it ended).
//!
//! The fsyncs (file, then directory) add protection against power loss or a
//! kernel crash only. The processes the records describe cannot outlive a reboot,
//! so a lost update after power loss forgets nothing that still runs; what the
//! fsyncs really buy is that the file is never found empty or torn after such a
//! crash (which `load` would report as [`HostError::CorruptState`] and the agent
//! would not start). They are therefore on by default (`Config::fsync_state`);
//! without them no file system orders the data before the swap (the writes are
//! not a truncate-and-rewrite that ext4's `auto_da_alloc` would flush), so turn
//! them off only where losing the file to a power cut is acceptable. Their cost
//! is measured by the `spawn` bench (`adapter+fsync` against `adapter`).

use crate::cgroup::ProcCgroup;
use crate::error::HostError;
use nefele_core::TenantId;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// A tenant's holder process (pid 1 of its namespaces).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HolderRecord {
    /// The tenant.
    pub tenant: TenantId,
    /// The holder's pid on this host.
    pub os_pid: i32,
    /// Its start time in clock ticks since boot (pid-reuse guard).
    pub start_ticks: u64,
}

/// A process the adapter started.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcRecord {
    /// The global pid, in its text form.
    pub pid: String,
    /// Its tenant.
    pub tenant: TenantId,
    /// The executable it runs (the spec's path); empty in state files written
    /// before it was recorded.
    #[serde(default)]
    pub command: String,
    /// Its pid on this host.
    pub os_pid: i32,
    /// Its start time in clock ticks since boot (pid-reuse guard).
    pub start_ticks: u64,
    /// Its cgroup directories.
    pub cgroup: ProcCgroup,
    /// When it started, in milliseconds since the Unix epoch.
    pub started_unix_ms: u64,
    /// Reserved cpu, in millicores.
    pub cpu_millicores: u32,
    /// Reserved memory, in bytes.
    pub memory_bytes: u64,
    /// Its stdout log file.
    pub stdout: PathBuf,
    /// Its stderr log file.
    pub stderr: PathBuf,
}

/// The whole durable state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Live tenant holders.
    pub holders: Vec<HolderRecord>,
    /// Processes started and not yet reported ended.
    pub procs: Vec<ProcRecord>,
}

/// Reads the state at `path`; a missing file is an empty state.
pub fn load(path: &Path) -> Result<State, HostError> {
    load_json(path)
}

/// Reads the JSON file at `path`; a missing file is the default value.
pub fn load_json<T: DeserializeOwned + Default>(path: &Path) -> Result<T, HostError> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| HostError::CorruptState {
            path: path.to_owned(),
            detail: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(source) => Err(HostError::State {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Replaces the state at `path` with `state`, atomically, and durably if `fsync`.
pub fn save(path: &Path, state: &State, fsync: bool) -> Result<(), HostError> {
    save_json(path, state, fsync)
}

/// Replaces the JSON file at `path` with `value`, atomically (temporary file, then
/// rename), and durably if `fsync` (the file, then its directory).
pub fn save_json<T: Serialize>(path: &Path, value: &T, fsync: bool) -> Result<(), HostError> {
    let err = |p: &Path| {
        let p = p.to_owned();
        move |source| HostError::State { path: p, source }
    };
    let tmp = path.with_extension("tmp");
    let bytes = serde_json::to_vec(value).map_err(|e| HostError::CorruptState {
        path: path.to_owned(),
        detail: e.to_string(),
    })?;
    // Overwritten in place, then cut to length (never to zero: see the module doc).
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&tmp)
        .map_err(err(&tmp))?;
    file.write_all(&bytes).map_err(err(&tmp))?;
    let len = bytes.len() as u64;
    if file.metadata().map_err(err(&tmp))?.len() > len {
        file.set_len(len).map_err(err(&tmp))?;
    }
    if fsync {
        file.sync_all().map_err(err(&tmp))?;
    }
    use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
    match renameat2(AT_FDCWD, &tmp, AT_FDCWD, path, RenameFlags::RENAME_EXCHANGE) {
        Ok(()) => {}
        // No old file to exchange with, or a file system that cannot exchange.
        Err(_) => fs::rename(&tmp, path).map_err(err(path))?,
    }
    if !fsync {
        return Ok(());
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    File::open(dir).and_then(|d| d.sync_all()).map_err(err(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_save_replaces_the_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        for n in 1..=3 {
            let state = State {
                holders: (0..n)
                    .map(|i| HolderRecord {
                        tenant: TenantId(i),
                        os_pid: 10,
                        start_ticks: 1,
                    })
                    .collect(),
                procs: Vec::new(),
            };
            save(&path, &state, n % 2 == 0).unwrap();
            assert_eq!(load(&path).unwrap(), state);
        }
        // One smaller snapshot after larger ones: nothing of the old is left.
        save(&path, &State::default(), false).unwrap();
        assert_eq!(load(&path).unwrap(), State::default());
    }

    #[test]
    fn a_state_file_without_commands_still_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let old = r#"{"holders":[],"procs":[{"pid":"1f","tenant":3,"os_pid":42,
            "start_ticks":7,"cgroup":"None","started_unix_ms":0,"cpu_millicores":0,
            "memory_bytes":0,"stdout":"/o","stderr":"/e"}]}"#;
        fs::write(&path, old).unwrap();
        let state = load(&path).unwrap();
        assert_eq!(state.procs[0].command, "");
        assert_eq!(state.procs[0].os_pid, 42);
    }
}
