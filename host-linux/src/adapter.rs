//! [`LinuxHost`]: the `nefele_core::Host` of a Linux server. It owns the table of
//! processes it started, their tenants' namespaces (one holder per tenant), their
//! cgroups, and the state file of this boot ([`crate::state`]).
//!
//! Call order: [`Host::execute`] for each command; then drain [`Host::poll_event`]
//! (non-blocking) until `None` whenever the host may have progressed, or block in
//! [`LinuxHost::wait_event`] for at most a given time.
//!
//! Invariants:
//! - a tenant has a holder iff it has at least one process in the table, or had
//!   one less than [`Config::tenant_linger`] ago (a holder is created with the
//!   first process and ended that long after the last is cleaned up, so that a
//!   tenant starting processes one after another does not rebuild its namespaces
//!   and cgroup each time);
//! - a process is in this boot's state file (which outlives the agent, not the
//!   boot: [`crate::state`]) before `Started` is reported, and leaves it
//!   before `Exited` is reported; `Exited` means its cgroup is gone;
//! - `Start` of a pid that runs or ran is ignored; `Kill` of an unknown pid too;
//! - every process re-read from the state file at open is reported `Adopted`
//!   before any `Exited` of the same pid.

use crate::cgroup::{Cgroups, ProcCgroup, Support};
use crate::doorbell::Doorbell;
use crate::error::{HostError, StartError};
use crate::idmap::IdRanges;
use crate::logs::{self, LogPaths, LogPool};
use crate::resources::Capacity;
use crate::rootfs::{Lookup, Rootfs};
use crate::state::{self, HolderRecord, ProcRecord, State};
use crate::sys::{HolderPlan, Reaped, SpawnPlan, Sys};
use nefele_core::host::{ExitStatus, Limits, Signal, StartFailure, Usage};
use nefele_core::{Host, HostCommand, HostEvent, HostResources, Pid, ProcSpec, TenantId};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a cgroup may stay busy after its process ended before the adapter
/// gives up removing it (and reports the exit anyway, with a warning).
const CLEANUP_GIVE_UP: Duration = Duration::from_secs(5);
/// The pids limit of a process that sets none (see [`Config::default_limits`]).
pub const DEFAULT_PIDS: u32 = 1024;
/// How often log sizes are checked against the cap.
const LOG_CHECK_EVERY: Duration = Duration::from_secs(1);
/// How long [`LinuxHost::wait_event`] sleeps at most between retries of a busy cgroup.
const CLEANUP_RETRY: Duration = Duration::from_millis(2);

/// Settings of the adapter.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where the state file and logs live.
    pub data_dir: PathBuf,
    /// The cgroup file system root (normally `/sys/fs/cgroup`).
    pub cgroup_root: PathBuf,
    /// The directory the adapter's cgroups go under, in each hierarchy.
    pub cgroup_name: String,
    /// Time between SIGTERM and SIGKILL for `Signal::Terminate`.
    pub kill_grace: Duration,
    /// Size cap of each log file, in bytes.
    pub log_cap_bytes: u64,
    /// How many empty log files are kept ready, so that a start renames two
    /// instead of creating them ([`crate::logs::LogPool`]); zero creates them at
    /// each start.
    pub log_spares: usize,
    /// Aggregate limits per tenant on this host; tenants not listed are unlimited.
    pub tenant_limits: BTreeMap<TenantId, Limits>,
    /// How long a tenant's namespaces and cgroup outlive its last process, ready for
    /// its next one; zero removes them at once.
    pub tenant_linger: Duration,
    /// Limits of a process that neither sets a limit nor reserves the quantity
    /// (a reservation is its limit otherwise); `pids` applies to every process
    /// without an explicit pids limit. A limit the host cannot enforce is left out
    /// of these defaults (an explicit one fails the start instead).
    pub default_limits: Limits,
    /// The first host id of the tenants' id ranges (see [`crate::idmap`]).
    pub first_tenant_id: u32,
    /// Host paths no tenant may see even where its view shows the directory they
    /// are in (the agent's key, configuration and socket): covered in every view.
    pub hidden: Vec<PathBuf>,
    /// Whether each process gets a messaging endpoint: one end of a Unix socket
    /// pair kept open across exec, named by `NEFELE_FD` (with `NEFELE_PID`); the
    /// other end is handed out by [`LinuxHost::take_endpoints`]. With it, each
    /// process is told its tenant's agent socket (`NEFELE_AGENT_ADDR`), through
    /// which it reaches the next agent after a restart, and copies of those
    /// sockets are handed out by [`LinuxHost::take_listeners`]
    /// ([`crate::agent_socket`]).
    pub endpoints: bool,
}

impl Config {
    /// Defaults for an agent whose data lives in `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Config {
            data_dir: data_dir.into(),
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            cgroup_name: "nefele".to_owned(),
            kill_grace: Duration::from_secs(5),
            log_cap_bytes: 16 << 20,
            log_spares: 32,
            tenant_limits: BTreeMap::new(),
            tenant_linger: Duration::from_secs(1),
            default_limits: Limits {
                cpu_millicores: None,
                memory_bytes: None,
                pids: Some(DEFAULT_PIDS),
            },
            first_tenant_id: crate::idmap::DEFAULT_FIRST_ID,
            hidden: Vec::new(),
            endpoints: false,
        }
    }
}

/// A tenant present on this host.
#[derive(Debug)]
struct Tenant {
    holder: i32,
    start_ticks: u64,
    members: usize,
    /// When its last process was cleaned up, while it has none.
    idle_since: Option<Instant>,
}

/// A process in the table.
#[derive(Debug)]
struct Proc {
    record: ProcRecord,
    started: Instant,
    kill_deadline: Option<Instant>,
    /// Set once reaped; the process waits here until its cgroup is removed.
    reaped: Option<(Reaped, Instant)>,
    /// Reported `StartFailed` (it could not be recorded, so it was killed): its
    /// end is not reported.
    unreported: bool,
}

/// The Linux host adapter.
#[derive(Debug)]
pub struct LinuxHost<S: Sys> {
    sys: S,
    config: Config,
    cgroups: Cgroups,
    capacity: Capacity,
    tenants: BTreeMap<TenantId, Tenant>,
    procs: BTreeMap<Pid, Proc>,
    by_os_pid: BTreeMap<i32, Pid>,
    finished: BTreeSet<Pid>,
    events: VecDeque<HostEvent>,
    resources_changed: bool,
    next_log_check: Instant,
    ids: IdRanges,
    /// Each tenant's view, planned once (it depends only on this host's files).
    views: BTreeMap<TenantId, Rootfs>,
    log_pool: LogPool,
    /// The agent's ends of the endpoints of processes started since the last
    /// [`LinuxHost::take_endpoints`].
    endpoints: Vec<(Pid, TenantId, UnixStream)>,
    /// Copies of the agent sockets of tenants whose holder started or was
    /// re-adopted, and (`None`) the tenants whose holder ended, in that order,
    /// since the last [`LinuxHost::take_listeners`].
    listeners: Vec<(TenantId, Option<UnixListener>)>,
    /// This boot's state file ([`crate::state`]).
    state_path: PathBuf,
    /// Rung when work is queued for the thread in [`LinuxHost::wait_event`].
    bell: Arc<Doorbell>,
}

/// The environment variable naming a process's endpoint descriptor.
pub const ENDPOINT_FD_ENV: &str = "NEFELE_FD";
/// The environment variable holding a process's pid.
pub const ENDPOINT_PID_ENV: &str = "NEFELE_PID";

/// A connected socket pair: the agent's end, and the process's (a descriptor
/// above 2, so that setting up its standard streams cannot replace it).
fn endpoint_pair() -> Result<(UnixStream, UnixStream), StartError> {
    let failed = |e: std::io::Error| {
        StartError::Syscall(crate::sys::SysError {
            op: format!("socketpair for the endpoint: {e}").into(),
            errno: nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
        })
    };
    let (ours, theirs) = UnixStream::pair().map_err(failed)?;
    // try_clone duplicates to the lowest free descriptor >= 3, close-on-exec.
    let theirs = if theirs.as_raw_fd() <= 2 {
        theirs.try_clone().map_err(failed)?
    } else {
        theirs
    };
    Ok((ours, theirs))
}

impl LinuxHost<crate::sys::RealSys> {
    /// Opens the adapter on this machine: detects cgroups, reads the state file and
    /// re-adopts what still runs.
    pub fn open(config: Config) -> Result<Self, HostError> {
        let cgroups = Cgroups::detect(&config.cgroup_root, &config.cgroup_name)?;
        LinuxHost::with(config, crate::sys::RealSys::new()?, cgroups)
    }
}

fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn proc_dir_name(pid: Pid) -> String {
    format!("p{pid}")
}

/// What to exec: path, argv (never empty), environment pairs.
type Launch = (String, Vec<String>, Vec<(String, String)>);

/// Checks a spec and turns it into what to exec.
fn validate(spec: &ProcSpec) -> Result<Launch, StartError> {
    let bad = |what: String| Err(StartError::InvalidSpec(what));
    if spec.path.is_empty() || !spec.path.starts_with('/') {
        return bad(format!("path {:?} is not absolute", spec.path));
    }
    if let Some(a) = std::iter::once(&spec.path)
        .chain(&spec.argv)
        .chain(&spec.envp)
        .find(|s| s.contains('\0'))
    {
        return bad(format!("{a:?} contains a NUL byte"));
    }
    let mut env = Vec::with_capacity(spec.envp.len());
    for entry in &spec.envp {
        match entry.split_once('=') {
            Some((k, v)) if !k.is_empty() => env.push((k.to_owned(), v.to_owned())),
            _ => return bad(format!("environment entry {entry:?} is not KEY=VALUE")),
        }
    }
    let argv = if spec.argv.is_empty() {
        vec![spec.path.clone()]
    } else {
        spec.argv.clone()
    };
    Ok((spec.path.clone(), argv, env))
}

/// Checks that `path`, as the tenant's view shows it, is an executable file.
fn check_executable(path: &str, view: &Rootfs) -> Result<(), StartError> {
    let p = Path::new(path);
    let host = match view.lookup(p) {
        Lookup::Host(host) => host,
        // The tenant's own files (its /tmp): execve inside will tell.
        Lookup::Private => return Ok(()),
        Lookup::Missing => return Err(StartError::ExecutableMissing(p.to_owned())),
    };
    let meta = std::fs::metadata(&host).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => StartError::ExecutableMissing(p.to_owned()),
        std::io::ErrorKind::PermissionDenied => {
            StartError::PermissionDenied(format!("stat {path}"))
        }
        _ => StartError::NotExecutable {
            path: p.to_owned(),
            why: e.to_string(),
        },
    })?;
    let not_exec = |why: &str| {
        Err(StartError::NotExecutable {
            path: p.to_owned(),
            why: why.to_owned(),
        })
    };
    if !meta.is_file() {
        return not_exec("not a regular file");
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return not_exec("no execute permission");
    }
    let mut magic = [0u8; 4];
    let read = std::fs::File::open(&host).and_then(|mut f| f.read(&mut magic));
    match read {
        Ok(n) if (n == 4 && magic == *b"\x7fELF") || (n >= 2 && magic[..2] == *b"#!") => Ok(()),
        Ok(_) => not_exec("neither an ELF binary nor a #! script"),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            Err(StartError::PermissionDenied(format!("open {path}")))
        }
        Err(e) => not_exec(&e.to_string()),
    }
}

impl<S: Sys> LinuxHost<S> {
    /// An adapter over `sys` and `cgroups`: reads the state files in
    /// `config.data_dir`, queues `Adopted` for every process they record (running
    /// or not), then `Exited` for those that ended while no adapter watched (every
    /// process of an earlier boot), removes cgroups no record accounts for, saves
    /// this boot's state and deletes earlier boots' files.
    pub fn with(config: Config, sys: S, cgroups: Cgroups) -> Result<Self, HostError> {
        let logs_dir = config.data_dir.join("logs");
        let state_err = |source| HostError::State {
            path: logs_dir.clone(),
            source,
        };
        std::fs::create_dir_all(&logs_dir).map_err(state_err)?;
        let log_pool = LogPool::open(&logs_dir, config.log_spares).map_err(state_err)?;
        let found = state::load_boots(&config.data_dir, sys.boot_id())?;
        let state_path = state::boot_path(&config.data_dir, sys.boot_id())?;
        let ids = IdRanges::open(&config.data_dir, config.first_tenant_id)?;
        let mut host = LinuxHost {
            sys,
            config,
            cgroups,
            capacity: Capacity::measure(),
            tenants: BTreeMap::new(),
            procs: BTreeMap::new(),
            by_os_pid: BTreeMap::new(),
            finished: BTreeSet::new(),
            events: VecDeque::new(),
            resources_changed: true,
            next_log_check: Instant::now(),
            ids,
            views: BTreeMap::new(),
            log_pool,
            endpoints: Vec::new(),
            listeners: Vec::new(),
            state_path,
            bell: Arc::new(Doorbell::new()?),
        };
        host.readopt(found.current, found.earlier);
        host.persist()?;
        for file in found.stale {
            if let Err(e) = std::fs::remove_file(&file) {
                tracing::warn!(%e, ?file, "state file of an earlier boot not deleted");
            }
        }
        Ok(host)
    }

    /// Takes back the processes of `saved` (this boot's state) that still run, and
    /// reports the others ended; reports every record of `earlier` (earlier boots)
    /// ended without trying to adopt it.
    fn readopt(&mut self, saved: State, earlier: Vec<ProcRecord>) {
        for h in saved.holders {
            if self.sys.adopt(h.os_pid, h.start_ticks) {
                self.take_listener(h.tenant, h.os_pid);
                self.tenants.insert(
                    h.tenant,
                    Tenant {
                        holder: h.os_pid,
                        start_ticks: h.start_ticks,
                        members: 0,
                        idle_since: None,
                    },
                );
            }
        }
        let now_ms = unix_ms_now();
        let records = saved.procs.into_iter().map(|r| (r, true));
        for (record, this_boot) in records.chain(earlier.into_iter().map(|r| (r, false))) {
            let Ok(pid) = record.pid.parse::<Pid>() else {
                continue;
            };
            let age = Duration::from_millis(now_ms.saturating_sub(record.started_unix_ms));
            let started = Instant::now().checked_sub(age).unwrap_or_else(Instant::now);
            let tenant_alive = self.tenants.contains_key(&record.tenant);
            let alive =
                this_boot && tenant_alive && self.sys.adopt(record.os_pid, record.start_ticks);
            // Counted even if it ended: its cleanup below uncounts it.
            if let Some(t) = self.tenants.get_mut(&record.tenant) {
                t.members += 1;
            }
            if alive {
                self.by_os_pid.insert(record.os_pid, pid);
            }
            let reaped = (!alive).then(|| (Reaped::Unknown, Instant::now()));
            // Adopted comes first, so that the core knows the pid before any Exited.
            self.events.push_back(HostEvent::Adopted {
                pid,
                tenant: record.tenant,
                command: record.command.clone(),
                cpu_millicores: record.cpu_millicores,
                memory_bytes: record.memory_bytes,
                age,
            });
            self.procs.insert(
                pid,
                Proc {
                    record,
                    started,
                    kill_deadline: None,
                    reaped,
                    unreported: false,
                },
            );
            if !alive {
                self.cleanup(pid);
            }
        }
        let idle: Vec<TenantId> = self
            .tenants
            .iter()
            .filter(|(_, t)| t.members == 0)
            .map(|(&id, _)| id)
            .collect();
        for tenant in idle {
            self.release_tenant(tenant);
        }
        let recorded: Vec<ProcCgroup> = self
            .procs
            .values()
            .map(|p| p.record.cgroup.clone())
            .collect();
        for (tenant, _, cg) in self.cgroups.existing() {
            if recorded.contains(&cg) {
                continue;
            }
            tracing::warn!(?cg, "removing a cgroup no record accounts for");
            self.sys
                .signal_tree(0, &Cgroups::members(&cg), libc::SIGKILL);
            if let Err(e) = self.cgroups.remove(&cg) {
                tracing::warn!(%e, "leftover cgroup not removed");
            }
            if !self.tenants.contains_key(&tenant) {
                let _ = self.cgroups.remove_tenant(tenant);
            }
        }
        if self.tenants.is_empty() {
            self.cgroups.remove_base_if_empty();
        }
    }

    /// The syscall layer (tests drive the recording double through it).
    pub fn sys_mut(&mut self) -> &mut S {
        &mut self.sys
    }

    /// Which limits this host can enforce, and through what.
    pub fn support(&self) -> Support {
        self.cgroups.support()
    }

    /// The cpu model name of this host (not carried by `HostResources`).
    pub fn cpu_model(&self) -> &str {
        &self.capacity.cpu_model
    }

    /// The log files of `pid` (which exist once it started).
    pub fn log_paths(&self, pid: Pid) -> LogPaths {
        LogPaths::new(&self.config.data_dir, pid)
    }

    /// This boot's state file ([`crate::state`]).
    pub fn state_path(&self) -> &Path {
        &self.state_path
    }

    /// The pid on this host of a running process, if it is in the table.
    pub fn os_pid(&self, pid: Pid) -> Option<i32> {
        self.procs.get(&pid).map(|p| p.record.os_pid)
    }

    /// The cgroup of a running process, if it is in the table.
    pub fn cgroup(&self, pid: Pid) -> Option<&ProcCgroup> {
        self.procs.get(&pid).map(|p| &p.record.cgroup)
    }

    /// The holder (pid 1 of the namespaces) of a tenant present on this host.
    pub fn holder(&self, tenant: TenantId) -> Option<i32> {
        self.tenants.get(&tenant).map(|t| t.holder)
    }

    /// The doorbell that ends a [`LinuxHost::wait_event`] early: ring it after
    /// queuing a command for the thread that waits.
    pub fn doorbell(&self) -> Arc<Doorbell> {
        Arc::clone(&self.bell)
    }

    /// Like [`Host::poll_event`], but waits up to `timeout` for an event; a ring
    /// of the doorbell ends the wait at once (with an event if one is ready, else
    /// `None`).
    pub fn wait_event(&mut self, timeout: Duration) -> Option<HostEvent> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.poll_event() {
                return Some(e);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            let mut wait = deadline - now;
            if self.procs.values().any(|p| p.reaped.is_some()) {
                wait = wait.min(CLEANUP_RETRY);
            }
            let deadlines = self.procs.values().filter_map(|p| p.kill_deadline);
            let log_check = (!self.procs.is_empty()).then_some(self.next_log_check);
            if let Some(k) = deadlines
                .chain(self.linger_deadlines())
                .chain(log_check)
                .min()
            {
                wait = wait.min(k.saturating_duration_since(now));
            }
            for pid in self.sys.ended(wait, Some(self.bell.as_fd())) {
                self.reap(pid);
            }
            if self.bell.answer() {
                return self.poll_event();
            }
        }
    }

    fn persist(&mut self) -> Result<(), HostError> {
        let snapshot = State {
            holders: self
                .tenants
                .iter()
                .map(|(&tenant, t)| HolderRecord {
                    tenant,
                    os_pid: t.holder,
                    start_ticks: t.start_ticks,
                })
                .collect(),
            procs: self.procs.values().map(|p| p.record.clone()).collect(),
        };
        state::save(&self.state_path, &snapshot)
    }

    fn persist_or_log(&mut self) {
        if let Err(e) = self.persist() {
            tracing::error!(%e, "state file not updated");
        }
    }

    /// The agent's ends of the endpoints of the processes started since the last
    /// call (empty unless [`Config::endpoints`]).
    pub fn take_endpoints(&mut self) -> Vec<(Pid, TenantId, UnixStream)> {
        std::mem::take(&mut self.endpoints)
    }

    /// The agent sockets of the tenants whose holder started or was re-adopted
    /// since the last call, and (`None`) the tenants whose holder ended since, in
    /// the order these happened (empty unless [`Config::endpoints`]): see
    /// [`crate::agent_socket`].
    pub fn take_listeners(&mut self) -> Vec<(TenantId, Option<UnixListener>)> {
        std::mem::take(&mut self.listeners)
    }

    /// The cgroups of this host's processes (to tell which process a caller on an
    /// agent socket belongs to, [`crate::agent_socket::identify`]).
    pub fn cgroups(&self) -> &Cgroups {
        &self.cgroups
    }

    fn take_listener(&mut self, tenant: TenantId, holder: i32) {
        if !self.config.endpoints {
            return;
        }
        if let Some(listener) = self.sys.holder_listener(holder) {
            self.listeners.push((tenant, Some(listener)));
        }
    }

    /// The data directory of `tenant` on this host (`/data` in its view); it
    /// exists once the tenant has had a process here.
    pub fn tenant_data_dir(&self, tenant: TenantId) -> PathBuf {
        self.config
            .data_dir
            .join("tenants")
            .join(format!("t{}", tenant.0))
    }

    /// The file system view of `tenant`'s processes.
    pub fn tenant_view(&self, tenant: TenantId) -> Rootfs {
        Rootfs::plan(&self.tenant_data_dir(tenant), &self.config.hidden)
    }

    /// The limits a process runs under: each explicit limit, else its reservation
    /// (cpu, memory), else the configured default where this host can enforce it.
    fn effective_limits(&self, spec: &ProcSpec) -> Limits {
        let asked = &spec.resources.limits;
        let r = &spec.resources;
        let d = &self.config.default_limits;
        let fill = Limits {
            cpu_millicores: r.cpu_millicores.filter(|&c| c > 0).or(d.cpu_millicores),
            memory_bytes: r.memory_bytes.filter(|&m| m > 0).or(d.memory_bytes),
            pids: d.pids,
        };
        let support = self.cgroups.support();
        let can = |kind| !support.unenforceable.iter().any(|(k, _)| *k == kind);
        use crate::cgroup::LimitKind;
        Limits {
            cpu_millicores: asked
                .cpu_millicores
                .or(fill.cpu_millicores.filter(|_| can(LimitKind::Cpu))),
            memory_bytes: asked
                .memory_bytes
                .or(fill.memory_bytes.filter(|_| can(LimitKind::Memory))),
            pids: asked.pids.or(fill.pids.filter(|_| can(LimitKind::Pids))),
        }
    }

    fn start(&mut self, pid: Pid, tenant: TenantId, spec: &ProcSpec) -> Result<(), StartError> {
        let launch = validate(spec)?;
        if let Some(t) = self.tenants.get(&tenant) {
            if !self.sys.holder_alive(t.holder) {
                // The host asked it to stop (it stopped the tenant's processes with
                // it): the tenant gets a new one.
                tracing::warn!(%tenant, holder = t.holder, "the tenant's holder ended; making a new one");
                self.release_tenant(tenant);
            }
        }
        if !self.views.contains_key(&tenant) {
            let view = self.tenant_view(tenant);
            std::fs::create_dir_all(&view.data_dir).map_err(|source| StartError::Log {
                path: view.data_dir.clone(),
                source,
            })?;
            self.views.insert(tenant, view);
        }
        let view = &self.views[&tenant];
        check_executable(&launch.0, view)?;
        let tenant_limits = self
            .config
            .tenant_limits
            .get(&tenant)
            .cloned()
            .unwrap_or_default();
        self.cgroups.check(&spec.resources.limits)?;
        self.cgroups.check(&tenant_limits)?;
        if !self.tenants.contains_key(&tenant) {
            let ids = self.ids.range(tenant).map_err(|e| {
                StartError::Syscall(crate::sys::SysError {
                    op: format!("allocate the tenant's host ids: {e}").into(),
                    errno: nix::errno::Errno::ENOSPC,
                })
            })?;
            let holder = self.sys.spawn_holder(&HolderPlan {
                hostname: format!("nefele-{tenant}"),
                ids,
                rootfs: view.clone(),
            })?;
            let start_ticks = self.sys.start_ticks(holder).unwrap_or(0);
            self.take_listener(tenant, holder);
            self.tenants.insert(
                tenant,
                Tenant {
                    holder,
                    start_ticks,
                    members: 0,
                    idle_since: None,
                },
            );
        }
        let spawned = self.spawn_in(pid, tenant, spec, launch, &tenant_limits);
        match spawned {
            Ok(record) => {
                if let Some(t) = self.tenants.get_mut(&tenant) {
                    t.members += 1;
                    t.idle_since = None;
                }
                self.by_os_pid.insert(record.os_pid, pid);
                let started = Instant::now();
                self.procs.insert(
                    pid,
                    Proc {
                        record,
                        started,
                        kill_deadline: None,
                        reaped: None,
                        unreported: false,
                    },
                );
                Ok(())
            }
            Err(e) => {
                if self.tenants.get(&tenant).is_some_and(|t| t.members == 0) {
                    self.release_tenant(tenant);
                }
                Err(e)
            }
        }
    }

    fn spawn_in(
        &mut self,
        pid: Pid,
        tenant: TenantId,
        spec: &ProcSpec,
        (path, argv, env): Launch,
        tenant_limits: &Limits,
    ) -> Result<ProcRecord, StartError> {
        let holder = self.tenants.get(&tenant).map_or(0, |t| t.holder);
        let endpoint = if self.config.endpoints {
            Some(endpoint_pair()?)
        } else {
            None
        };
        let mut env = env;
        if let Some((_, theirs)) = &endpoint {
            // Last, so that a tenant's own entries of these names do not count.
            env.push((ENDPOINT_FD_ENV.into(), theirs.as_raw_fd().to_string()));
            env.push((ENDPOINT_PID_ENV.into(), pid.to_string()));
            env.push((
                crate::agent_socket::AGENT_ADDR_ENV.into(),
                crate::agent_socket::agent_addr(),
            ));
        }
        let limits = self.effective_limits(spec);
        let cgroup = self
            .cgroups
            .create(tenant, &proc_dir_name(pid), &limits, tenant_limits)?;
        let logs = LogPaths::new(&self.config.data_dir, pid);
        self.log_pool.place(&logs.stdout);
        self.log_pool.place(&logs.stderr);
        let plan = SpawnPlan {
            path,
            argv,
            env,
            holder,
            cgroup_procs: Cgroups::procs_files(&cgroup),
            stdout: logs.stdout.clone(),
            stderr: logs.stderr.clone(),
            endpoint: endpoint.as_ref().map(|(_, theirs)| theirs.as_raw_fd()),
        };
        let os_pid = match self.sys.spawn(&plan) {
            Ok(os_pid) => os_pid,
            Err(e) => {
                if let Err(c) = self.cgroups.remove(&cgroup) {
                    tracing::warn!(%c, "cgroup of a failed start not removed");
                }
                return Err(e.into());
            }
        };
        if let Some((ours, _theirs)) = endpoint {
            // The process holds its end now; ours goes to the agent's API server.
            self.endpoints.push((pid, tenant, ours));
        }
        Ok(ProcRecord {
            pid: pid.to_string(),
            tenant,
            command: spec.path.clone(),
            os_pid,
            start_ticks: self.sys.start_ticks(os_pid).unwrap_or(0),
            cgroup,
            started_unix_ms: unix_ms_now(),
            cpu_millicores: spec.resources.cpu_millicores.unwrap_or(0),
            memory_bytes: spec.resources.memory_bytes.unwrap_or(0),
            stdout: logs.stdout,
            stderr: logs.stderr,
        })
    }

    fn release_tenant(&mut self, tenant: TenantId) {
        if let Some(t) = self.tenants.remove(&tenant) {
            self.sys.end_holder(t.holder);
            if self.config.endpoints {
                self.listeners.push((tenant, None));
            }
        }
        if let Err(e) = self.cgroups.remove_tenant(tenant) {
            tracing::warn!(%e, %tenant, "tenant cgroup not removed");
        }
        if self.tenants.is_empty() {
            self.cgroups.remove_base_if_empty();
        }
    }

    /// Delivers `signal` to the whole tree of `pid`: its cgroup's members and its group.
    fn signal_tree(&mut self, pid: Pid, signal: i32) {
        let Some(p) = self.procs.get(&pid) else {
            return;
        };
        let cg = p.record.cgroup.clone();
        let os_pid = p.record.os_pid;
        if signal == libc::SIGKILL && Cgroups::kill_all(&cg) {
            return;
        }
        self.sys.signal(os_pid, signal);
        self.sys.signal_tree(os_pid, &Cgroups::members(&cg), signal);
    }

    fn kill(&mut self, pid: Pid, signal: Signal) {
        let Some(p) = self.procs.get_mut(&pid) else {
            tracing::debug!(%pid, "kill of a process not in the table ignored");
            return;
        };
        if p.reaped.is_some() {
            return;
        }
        let number = match signal {
            Signal::Terminate => {
                p.kill_deadline = Some(Instant::now() + self.config.kill_grace);
                libc::SIGTERM
            }
            Signal::Kill => libc::SIGKILL,
            Signal::Raw(n) if (1..=64).contains(&n) => n,
            Signal::Raw(n) => {
                tracing::warn!(%pid, n, "kill with an invalid signal number ignored");
                return;
            }
        };
        self.signal_tree(pid, number);
    }

    /// Reaps the process with host pid `os_pid` if it ended, then cleans it up.
    fn reap(&mut self, os_pid: i32) {
        let Some(&pid) = self.by_os_pid.get(&os_pid) else {
            return;
        };
        match self.sys.try_reap(os_pid) {
            Reaped::Running => {}
            how => {
                if let Some(p) = self.procs.get_mut(&pid) {
                    p.reaped = Some((how, Instant::now()));
                }
                self.cleanup(pid);
            }
        }
    }

    /// Kills what is left of a reaped process's tree and removes its cgroup; once
    /// done (or given up), reports `Exited` and forgets the process.
    fn cleanup(&mut self, pid: Pid) {
        let Some(p) = self.procs.get(&pid) else {
            return;
        };
        let Some((how, since)) = p.reaped else { return };
        let cg = p.record.cgroup.clone();
        let stats = Cgroups::stats(&cg);
        let members = Cgroups::members(&cg);
        if !members.is_empty() && !Cgroups::kill_all(&cg) {
            self.sys
                .signal_tree(p.record.os_pid, &members, libc::SIGKILL);
        }
        if let Err(e) = self.cgroups.remove(&cg) {
            if since.elapsed() < CLEANUP_GIVE_UP {
                return;
            }
            tracing::warn!(%e, %pid, "cgroup still busy; reporting the exit anyway");
        }
        let Some(p) = self.procs.remove(&pid) else {
            return;
        };
        // Only its own entry: a record that ended before a restart may name a host
        // pid the kernel has given since to a process the table tracks.
        if self.by_os_pid.get(&p.record.os_pid) == Some(&pid) {
            self.by_os_pid.remove(&p.record.os_pid);
        }
        self.finished.insert(pid);
        let oom = stats.oom_kills > 0;
        let (status, rusage) = match how {
            Reaped::Code(c, r) => (ExitStatus::Code(c), r),
            Reaped::Signaled(libc::SIGKILL, r) if oom => (ExitStatus::OutOfMemory, r),
            Reaped::Signaled(s, r) => (ExitStatus::Signaled(s), r),
            Reaped::Unknown | Reaped::Running if oom => {
                (ExitStatus::OutOfMemory, Default::default())
            }
            Reaped::Unknown | Reaped::Running => (ExitStatus::Lost, Default::default()),
        };
        let usage = Usage {
            cpu_time: stats.cpu_time.unwrap_or_default().max(rusage.cpu_time),
            peak_memory_bytes: stats
                .peak_memory_bytes
                .unwrap_or_default()
                .max(rusage.max_rss_bytes),
            wall_time: since.saturating_duration_since(p.started),
        };
        let tenant = p.record.tenant;
        let last = self.tenants.get_mut(&tenant).is_some_and(|t| {
            t.members = t.members.saturating_sub(1);
            t.members == 0
        });
        if last && self.config.tenant_linger.is_zero() {
            self.release_tenant(tenant);
        } else if let Some(t) = self.tenants.get_mut(&tenant).filter(|_| last) {
            t.idle_since = Some(Instant::now());
        }
        self.persist_or_log();
        self.resources_changed = true;
        if !p.unreported {
            self.events
                .push_back(HostEvent::Exited { pid, status, usage });
        }
    }

    /// Non-blocking progress: reaps what ended, retries busy cleanups, escalates
    /// overdue terminations, enforces log caps.
    fn progress(&mut self) {
        for os_pid in self.sys.ended(Duration::ZERO, None) {
            self.reap(os_pid);
        }
        let now = Instant::now();
        let mut pending = Vec::new();
        let mut overdue = Vec::new();
        for (&pid, p) in &self.procs {
            if p.reaped.is_some() {
                pending.push(pid);
            } else if p.kill_deadline.is_some_and(|d| d <= now) {
                overdue.push(pid);
            }
        }
        for pid in pending {
            self.cleanup(pid);
        }
        for pid in overdue {
            if let Some(p) = self.procs.get_mut(&pid) {
                p.kill_deadline = None;
            }
            self.signal_tree(pid, libc::SIGKILL);
        }
        let linger = self.config.tenant_linger;
        let expired: Vec<TenantId> = self
            .tenants
            .iter()
            .filter(|(_, t)| t.idle_since.is_some_and(|i| i + linger <= now))
            .map(|(&id, _)| id)
            .collect();
        if !expired.is_empty() {
            for tenant in expired {
                self.release_tenant(tenant);
            }
            self.persist_or_log();
        }
        if now >= self.next_log_check {
            self.next_log_check = now + LOG_CHECK_EVERY;
            for p in self.procs.values() {
                for file in [&p.record.stdout, &p.record.stderr] {
                    if let Err(e) = logs::enforce_cap(file, self.config.log_cap_bytes) {
                        tracing::warn!(%e, ?file, "log cap not enforced");
                    }
                }
            }
        }
    }

    /// When each idle tenant's namespaces and cgroup are due for removal.
    fn linger_deadlines(&self) -> impl Iterator<Item = Instant> + '_ {
        let linger = self.config.tenant_linger;
        self.tenants
            .values()
            .filter_map(move |t| t.idle_since.map(|i| i + linger))
    }

    fn committed(&self) -> (u32, u64) {
        self.procs.values().fold((0, 0), |(c, m), p| {
            (
                c.saturating_add(p.record.cpu_millicores),
                m.saturating_add(p.record.memory_bytes),
            )
        })
    }
}

impl<S: Sys> Host for LinuxHost<S> {
    type Error = HostError;

    fn execute(&mut self, command: HostCommand) -> Result<(), HostError> {
        match command {
            HostCommand::Start { pid, tenant, spec } => {
                if self.procs.contains_key(&pid) || self.finished.contains(&pid) {
                    return Ok(());
                }
                match self.start(pid, tenant, &spec) {
                    Ok(()) => {
                        self.resources_changed = true;
                        if let Err(e) = self.persist() {
                            // Unrecorded, it would be killed as unknown by the next
                            // agent: end it now, and say it did not start.
                            tracing::error!(%e, %pid, "process not recorded; killing it");
                            if let Some(p) = self.procs.get_mut(&pid) {
                                p.unreported = true;
                            }
                            self.signal_tree(pid, libc::SIGKILL);
                            self.events.push_back(HostEvent::StartFailed {
                                pid,
                                reason: StartFailure::Other,
                                detail: format!("the host could not record the process: {e}"),
                            });
                            return Err(e);
                        }
                        self.events.push_back(HostEvent::Started { pid });
                    }
                    Err(e) => {
                        tracing::warn!(%pid, error = %e, "process did not start");
                        self.finished.insert(pid);
                        self.events.push_back(HostEvent::StartFailed {
                            pid,
                            reason: e.reason(),
                            detail: e.to_string(),
                        });
                    }
                }
            }
            HostCommand::Kill { pid, signal } => self.kill(pid, signal),
        }
        Ok(())
    }

    fn poll_event(&mut self) -> Option<HostEvent> {
        if self.events.is_empty() {
            self.progress();
        }
        if let Some(e) = self.events.pop_front() {
            return Some(e);
        }
        if self.resources_changed {
            self.resources_changed = false;
            return Some(HostEvent::Resources(self.resources()));
        }
        None
    }

    fn resources(&self) -> HostResources {
        let (cpu, memory) = self.committed();
        HostResources {
            committed_cpu_millicores: cpu,
            committed_memory_bytes: memory,
            unenforced: self.cgroups.support().unenforced(),
            ..self.capacity.to_resources()
        }
    }
}
