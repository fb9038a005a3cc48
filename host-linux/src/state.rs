//! Local state: what the adapter started and the tenants' holders, so that a
//! restarted agent re-adopts processes still running and reports those that
//! ended while it was down.
//!
//! The records describe processes, and no process outlives the boot it was
//! started in; so the state is kept per boot, in `<data>/host-state.<boot
//! id>.json` (the kernel's `/proc/sys/kernel/random/boot_id`), and it is never
//! fsynced: no start or exit waits for the disk.
//!
//! Invariant: this boot's file is always a complete, valid snapshot. It is
//! replaced atomically (write the temporary file `<name>.tmp`, swap it with the
//! old one), so an agent that crashes at any point leaves either the old or the
//! new state. The swap is `renameat2(RENAME_EXCHANGE)`: the old snapshot becomes
//! the next temporary file, so no update creates or deletes an inode (on ext4,
//! creating files amid recent deletions dominated the cost of a start); where the
//! file system cannot exchange, a plain rename does. The temporary file is
//! overwritten in place and cut to the new length, never truncated to zero first:
//! on ext4 a truncation to zero arms `auto_da_alloc`, which starts writeback of
//! the file when it is closed, and the next update then waited for that I/O.
//!
//! What survives what:
//! - **An agent crash** (any exit, `SIGKILL`, OOM kill) keeps everything: the
//!   page cache outlives the agent, so a restarted agent on the same boot reads
//!   every record of a process whose `Started` was reported (the record is in the
//!   file the swap installed before that) and re-adopts the process, or reports
//!   it ended.
//! - **A power loss or kernel crash** ends every process, and with them what the
//!   records are for. The files of that boot may then be stale, torn or missing:
//!   at the next start the adapter reads what it can of each earlier boot's file
//!   (a file that does not parse is skipped with a warning, never an error),
//!   reports each record it read as `Adopted` then `Exited` with
//!   `ExitStatus::Lost` (never adopting a process of another boot, even one whose
//!   host pid and start time match by chance), and deletes the files. A record
//!   lost this way changes nothing a client sees: the core answers `Lost` for a
//!   pid of an earlier incarnation of this agent that was not re-adopted.
//! - What must outlive a power loss is made durable where it is decided, not per
//!   process: the agent's incarnation (`nefeled`'s `identity.toml`, fsynced
//!   before the agent mints its first pid, so no pid is ever minted twice) and
//!   each tenant's host id range ([`crate::idmap`], fsynced when a tenant first
//!   runs on this host). Log files are written by the processes without fsync:
//!   after a power loss their last output may be missing.
//!
//! A state file of an unknown boot (`host-state.json`, written by agents before
//! the state was kept per boot) is read as this boot's, its processes adopted if
//! their host pid and start time still match, and deleted once this boot's file
//! is written.

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

/// The state file of agents from before the state was kept per boot.
const LEGACY_FILE: &str = "host-state.json";
/// The prefix and suffix of a per-boot state file's name.
const PREFIX: &str = "host-state.";
const SUFFIX: &str = ".json";

/// The state file of boot `boot_id` in `data_dir`; an id that is not a plain
/// token (letters, digits, dashes) is refused.
pub fn boot_path(data_dir: &Path, boot_id: &str) -> Result<PathBuf, HostError> {
    let plain = !boot_id.is_empty()
        && boot_id.len() <= 64
        && boot_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if !plain {
        return Err(HostError::CorruptState {
            path: data_dir.to_owned(),
            detail: format!("boot id {boot_id:?} is not a plain token"),
        });
    }
    Ok(data_dir.join(format!("{PREFIX}{boot_id}{SUFFIX}")))
}

/// What [`load_boots`] found in a data directory.
#[derive(Debug, Default)]
pub struct Found {
    /// The state of this boot (its file, else the legacy file): its processes may run.
    pub current: State,
    /// The records read from earlier boots' files: none of their processes runs.
    pub earlier: Vec<ProcRecord>,
    /// Files to delete once this boot's state is saved (earlier boots' files,
    /// the legacy one, and their temporary files).
    pub stale: Vec<PathBuf>,
}

/// Reads the state of boot `boot_id` in `data_dir` (a missing file is an empty
/// state; a corrupt one is an error), and what can be read of every other
/// boot's file (see the module doc).
pub fn load_boots(data_dir: &Path, boot_id: &str) -> Result<Found, HostError> {
    let path = boot_path(data_dir, boot_id)?;
    let own_tmp = path.with_extension("tmp");
    let legacy = data_dir.join(LEGACY_FILE);
    let legacy_is_current = !path.exists() && legacy.exists();
    let current = load(if legacy_is_current { &legacy } else { &path })?;
    let entries = fs::read_dir(data_dir).map_err(|source| HostError::State {
        path: data_dir.to_owned(),
        source,
    })?;
    let mut stale: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| *p != path && *p != own_tmp)
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.starts_with(PREFIX) && (n.ends_with(SUFFIX) || n.ends_with(".tmp"))
            })
        })
        .collect();
    stale.sort();
    let mut earlier: Vec<ProcRecord> = Vec::new();
    for file in &stale {
        let snapshot = file.extension().is_some_and(|e| e == "json");
        if !snapshot || (legacy_is_current && *file == legacy) {
            continue;
        }
        match load(file) {
            Ok(state) => earlier.extend(state.procs),
            Err(e) => tracing::warn!(%e, "state file of an earlier boot not read; skipped"),
        }
    }
    // A pid is reported once: this boot's record wins, then the first file's.
    let mut seen: std::collections::BTreeSet<String> =
        current.procs.iter().map(|p| p.pid.clone()).collect();
    earlier.retain(|r| seen.insert(r.pid.clone()));
    Ok(Found {
        current,
        earlier,
        stale,
    })
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

/// Replaces the state at `path` with `state`, atomically (never fsynced: see the
/// module doc).
pub fn save(path: &Path, state: &State) -> Result<(), HostError> {
    save_json(path, state, false)
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
            save_json(&path, &state, n % 2 == 0).unwrap();
            assert_eq!(load(&path).unwrap(), state);
        }
        // One smaller snapshot after larger ones: nothing of the old is left.
        save(&path, &State::default()).unwrap();
        assert_eq!(load(&path).unwrap(), State::default());
    }

    #[test]
    fn boot_ids_must_be_plain_tokens() {
        let dir = Path::new("/d");
        assert_eq!(
            boot_path(dir, "1f0e-Ab").unwrap(),
            Path::new("/d/host-state.1f0e-Ab.json")
        );
        for bad in ["", "../x", "a/b", "a.b", &"a".repeat(65)] {
            assert!(boot_path(dir, bad).is_err(), "{bad:?}");
        }
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
