//! A test double of the syscall layer, for tests of the adapter's decisions without
//! root: [`RecordingSys`] records calls, hands out fake pids, and ends processes
//! when told. Not part of the normal API: only with the `testing` feature (which
//! this crate's own tests enable through a dev-dependency on itself).

use crate::sys::{HolderPlan, Reaped, SpawnPlan, Sys, SysError};
use std::collections::BTreeMap;
use std::os::fd::BorrowedFd;
use std::time::Duration;

/// One call the adapter made, as [`RecordingSys`] saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// [`Sys::spawn_holder`].
    SpawnHolder(String),
    /// [`Sys::spawn`], with the holder it joined and the executable.
    Spawn { holder: i32, path: String },
    /// [`Sys::adopt`].
    Adopt(i32),
    /// [`Sys::signal`].
    Signal(i32, i32),
    /// [`Sys::signal_tree`].
    SignalTree(i32, i32),
    /// [`Sys::end_holder`].
    EndHolder(i32),
}

/// A test double: records calls, hands out fake pids, and ends processes when told.
#[derive(Debug, Default)]
pub struct RecordingSys {
    /// Every call made, in order.
    pub calls: Vec<Call>,
    /// Processes alive, with their fake start time.
    pub alive: BTreeMap<i32, u64>,
    /// Processes that ended and await reaping, with how.
    pub exits: BTreeMap<i32, Reaped>,
    /// The next spawn fails with this error, if set.
    pub fail_next_spawn: Option<SysError>,
    /// The next holder creation fails with this error, if set.
    pub fail_next_holder: Option<SysError>,
    /// Processes that are not children of this instance (adopted).
    pub foreign: std::collections::BTreeSet<i32>,
    /// Whether adopted processes end with their real status, as on Linux 6.15+
    /// (`PIDFD_INFO_EXIT`); otherwise they end `Unknown`.
    pub foreign_exit_status: bool,
    /// The boot id it reports: a test "reboots" the host by changing it.
    pub boot_id: String,
    next_pid: i32,
}

impl RecordingSys {
    /// The boot id of a new double.
    pub const FIRST_BOOT: &'static str = "0b00-1";

    /// A double whose first pid is 1000, in boot [`RecordingSys::FIRST_BOOT`].
    pub fn new() -> Self {
        RecordingSys {
            next_pid: 1000,
            boot_id: Self::FIRST_BOOT.to_owned(),
            ..Default::default()
        }
    }

    /// Makes `pid` end as `how` (seen by the next [`Sys::ended`] / [`Sys::try_reap`]).
    pub fn end(&mut self, pid: i32, how: Reaped) {
        if self.alive.remove(&pid).is_some() {
            self.exits.insert(pid, how);
        }
    }

    fn fresh(&mut self) -> i32 {
        self.next_pid += 1;
        self.alive
            .insert(self.next_pid, 7_000 + self.next_pid as u64);
        self.next_pid
    }
}

impl Sys for RecordingSys {
    fn spawn_holder(&mut self, plan: &HolderPlan) -> Result<i32, SysError> {
        self.calls.push(Call::SpawnHolder(plan.hostname.clone()));
        match self.fail_next_holder.take() {
            Some(e) => Err(e),
            None => Ok(self.fresh()),
        }
    }

    fn spawn(&mut self, plan: &SpawnPlan) -> Result<i32, SysError> {
        let path = plan.path.clone();
        self.calls.push(Call::Spawn {
            holder: plan.holder,
            path,
        });
        match self.fail_next_spawn.take() {
            Some(e) => Err(e),
            None => Ok(self.fresh()),
        }
    }

    fn adopt(&mut self, pid: i32, start_ticks: u64) -> bool {
        self.calls.push(Call::Adopt(pid));
        let ok = self.alive.get(&pid) == Some(&start_ticks);
        if ok {
            self.foreign.insert(pid);
        }
        ok
    }

    fn start_ticks(&self, pid: i32) -> Option<u64> {
        self.alive.get(&pid).copied()
    }

    fn try_reap(&mut self, pid: i32) -> Reaped {
        match self.exits.remove(&pid) {
            Some(_) if self.foreign.contains(&pid) && !self.foreign_exit_status => Reaped::Unknown,
            Some(how) => how,
            None => Reaped::Running,
        }
    }

    fn signal(&mut self, pid: i32, signal: i32) {
        self.calls.push(Call::Signal(pid, signal));
    }

    fn signal_tree(&mut self, pgid: i32, _pids: &[i32], signal: i32) {
        self.calls.push(Call::SignalTree(pgid, signal));
    }

    fn end_holder(&mut self, holder: i32) {
        self.calls.push(Call::EndHolder(holder));
        self.alive.remove(&holder);
    }

    fn holder_alive(&self, holder: i32) -> bool {
        self.alive.contains_key(&holder)
    }

    fn ended(&mut self, _timeout: Duration, _bell: Option<BorrowedFd<'_>>) -> Vec<i32> {
        self.exits.keys().copied().collect()
    }

    fn boot_id(&self) -> &str {
        &self.boot_id
    }
}
