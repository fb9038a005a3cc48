//! Cgroups: what this host has (v2 unified, hybrid, or v1 legacy, detected at run
//! time), which limits it can enforce, and the per-tenant and per-process cgroup
//! directories the adapter creates, reads and removes.
//!
//! Layout under each hierarchy used: `<base>/t<tenant>/p<pid>`, where `<base>` is
//! `<mount>/<the adapter's own cgroup>/<name>`. The tenant directory carries the
//! tenant's aggregate limits; the process directory carries the process's limits
//! and holds the process and all its descendants (the "tree" for kills and usage).
//!
//! Invariants: a directory is only ever created below `<base>`; limits are written
//! before any process joins; on a hybrid host the v1 controllers are used and the
//! unified mount is ignored (on such hosts it carries no cpu, memory or pids
//! controller). Cgroup files are ordinary files, so a fake cgroupfs in a temporary
//! directory exercises the same code.

use nefele_core::host::Limits;
use nefele_core::TenantId;
use nix::sys::statfs::{statfs, CGROUP2_SUPER_MAGIC, TMPFS_MAGIC};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The cpu quota period, in microseconds: the kernel's default for a new cgroup
/// (v1 `cpu.cfs_period_us`), so v1 never writes it; v2 writes it with the quota.
const CPU_PERIOD_US: u64 = 100_000;
/// The smallest quota the kernel accepts, in microseconds.
const CPU_QUOTA_MIN_US: u64 = 1_000;

/// A controller the adapter uses (v1 names; on v2 `Cpuacct` is part of `Cpu`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Controller {
    /// Cpu quota.
    Cpu,
    /// Cpu accounting (v1 only).
    Cpuacct,
    /// Memory limit, peak and OOM counts.
    Memory,
    /// Task count limit.
    Pids,
}

impl Controller {
    const ALL: [Controller; 4] = [
        Controller::Cpu,
        Controller::Cpuacct,
        Controller::Memory,
        Controller::Pids,
    ];

    fn name(self) -> &'static str {
        match self {
            Controller::Cpu => "cpu",
            Controller::Cpuacct => "cpuacct",
            Controller::Memory => "memory",
            Controller::Pids => "pids",
        }
    }
}

/// What statfs of the cgroup root says this host has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Layout {
    /// cgroup2 mounted at the root.
    Unified,
    /// v1 controllers on a tmpfs root, plus a cgroup2 mount at `unified`.
    Hybrid,
    /// v1 controllers only.
    Legacy,
}

/// A limit kind, as named in errors and reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LimitKind {
    /// `Limits::cpu_millicores`.
    Cpu,
    /// `Limits::memory_bytes`.
    Memory,
    /// `Limits::pids`.
    Pids,
}

/// A limit this host cannot enforce, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind:?} limit cannot be enforced: {why}")]
pub struct Unenforceable {
    /// Which limit.
    pub kind: LimitKind,
    /// Why not (which controller is missing, on which layout).
    pub why: String,
}

/// What the host can enforce, for reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Support {
    /// What the host has.
    pub layout: Option<Layout>,
    /// Whether the limits are enforced through v2 (else v1), when they are.
    pub v2: bool,
    /// Limits that cannot be enforced, with the reason.
    pub unenforceable: Vec<(LimitKind, String)>,
}

impl Support {
    /// The kinds of limit this host cannot enforce, for its resources.
    #[must_use]
    pub fn unenforced(&self) -> nefele_core::host::LimitKinds {
        let missing = |kind| self.unenforceable.iter().any(|(k, _)| *k == kind);
        nefele_core::host::LimitKinds {
            cpu: missing(LimitKind::Cpu),
            memory: missing(LimitKind::Memory),
            pids: missing(LimitKind::Pids),
        }
    }
}

/// A cgroup file operation the kernel (or file system) refused.
#[derive(Debug, thiserror::Error)]
#[error("cgroup {op} {path:?} failed: {source}")]
pub struct CgroupError {
    /// `mkdir`, `write`, `rmdir`, `statfs`, …
    pub op: &'static str,
    /// The file or directory.
    pub path: PathBuf,
    /// The underlying error (its errno names the cause).
    #[source]
    pub source: io::Error,
}

impl CgroupError {
    fn new(op: &'static str, path: &Path, source: io::Error) -> Self {
        CgroupError {
            op,
            path: path.to_owned(),
            source,
        }
    }
}

/// The cgroup directories of one process, recorded in the state file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProcCgroup {
    /// One directory per v1 controller (co-mounted controllers share one).
    V1(BTreeMap<Controller, PathBuf>),
    /// The process's v2 directory.
    V2(PathBuf),
    /// The host has no usable cgroups.
    None,
}

/// What a process's cgroup measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct CgroupStats {
    /// Cpu time of the whole tree.
    pub cpu_time: Option<Duration>,
    /// Peak memory of the whole tree, in bytes.
    pub peak_memory_bytes: Option<u64>,
    /// OOM kills in the cgroup.
    pub oom_kills: u64,
}

#[derive(Clone, Debug)]
enum Backend {
    V1(BTreeMap<Controller, PathBuf>),
    V2 {
        base: PathBuf,
        available: BTreeSet<Controller>,
    },
    None,
}

/// The cgroups this adapter manages.
#[derive(Clone, Debug)]
pub struct Cgroups {
    layout: Option<Layout>,
    backend: Backend,
}

impl Cgroups {
    /// Detects the host's layout under `root` (normally `/sys/fs/cgroup`) and places the
    /// adapter's cgroups in `<mount>/<own cgroup>/<name>` of each hierarchy used.
    pub fn detect(root: &Path, name: &str) -> Result<Cgroups, CgroupError> {
        let fs_type = statfs(root)
            .map_err(|e| CgroupError::new("statfs", root, io::Error::from(e)))?
            .filesystem_type();
        let own = fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| CgroupError::new("read", Path::new("/proc/self/cgroup"), e))?;
        let own = parse_self_cgroup(&own);
        if fs_type == CGROUP2_SUPER_MAGIC {
            let path = own.get("").cloned().unwrap_or_default();
            let base = root.join(path.trim_start_matches('/')).join(name);
            let controllers =
                fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
            return Ok(Cgroups::v2(base, &controllers));
        }
        let layout = if fs_type == TMPFS_MAGIC
            && statfs(&root.join("unified"))
                .is_ok_and(|s| s.filesystem_type() == CGROUP2_SUPER_MAGIC)
        {
            Layout::Hybrid
        } else {
            Layout::Legacy
        };
        let mountinfo = fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| CgroupError::new("read", Path::new("/proc/self/mountinfo"), e))?;
        let mut bases = BTreeMap::new();
        for (mount, controllers) in parse_v1_mounts(&mountinfo) {
            for c in Controller::ALL
                .into_iter()
                .filter(|c| controllers.iter().any(|n| n == c.name()))
            {
                let key = controllers.join(",");
                let path = own.get(&key).cloned().unwrap_or_default();
                bases.insert(c, mount.join(path.trim_start_matches('/')).join(name));
            }
        }
        Ok(Cgroups {
            layout: Some(layout),
            backend: Backend::V1(bases),
        })
    }

    /// A v2 hierarchy rooted at `base`, with the controllers listed in `controllers`
    /// (the contents of the root's `cgroup.controllers`).
    pub fn v2(base: PathBuf, controllers: &str) -> Cgroups {
        let names: Vec<&str> = controllers.split_whitespace().collect();
        let available = [Controller::Cpu, Controller::Memory, Controller::Pids]
            .into_iter()
            .filter(|c| names.contains(&c.name()))
            .collect();
        Cgroups {
            layout: Some(Layout::Unified),
            backend: Backend::V2 { base, available },
        }
    }

    /// v1 hierarchies with the given base directory per controller.
    pub fn v1(layout: Layout, bases: BTreeMap<Controller, PathBuf>) -> Cgroups {
        Cgroups {
            layout: Some(layout),
            backend: Backend::V1(bases),
        }
    }

    /// No cgroups at all: every limit is unenforceable.
    pub fn none() -> Cgroups {
        Cgroups {
            layout: None,
            backend: Backend::None,
        }
    }

    fn has(&self, c: Controller) -> bool {
        match &self.backend {
            Backend::V1(bases) => bases.contains_key(&c),
            Backend::V2 { available, .. } => available.contains(&c),
            Backend::None => false,
        }
    }

    /// What this host can enforce.
    pub fn support(&self) -> Support {
        let mut unenforceable = Vec::new();
        for (kind, c) in [
            (LimitKind::Cpu, Controller::Cpu),
            (LimitKind::Memory, Controller::Memory),
            (LimitKind::Pids, Controller::Pids),
        ] {
            if !self.has(c) {
                unenforceable.push((
                    kind,
                    format!("no {} controller on {:?} cgroups", c.name(), self.layout),
                ));
            }
        }
        Support {
            layout: self.layout,
            v2: matches!(self.backend, Backend::V2 { .. }),
            unenforceable,
        }
    }

    /// Fails naming the first limit in `limits` this host cannot enforce.
    pub fn check(&self, limits: &Limits) -> Result<(), Unenforceable> {
        let asked = [
            (LimitKind::Cpu, limits.cpu_millicores.is_some()),
            (LimitKind::Memory, limits.memory_bytes.is_some()),
            (LimitKind::Pids, limits.pids.is_some()),
        ];
        let support = self.support();
        for (kind, wanted) in asked {
            if let Some((_, why)) = support
                .unenforceable
                .iter()
                .find(|(k, _)| wanted && *k == kind)
            {
                return Err(Unenforceable {
                    kind,
                    why: why.clone(),
                });
            }
        }
        Ok(())
    }

    /// Creates the cgroup of process `proc_name` of `tenant` with `limits`; creates the
    /// tenant's cgroup with `tenant_limits` first if it does not exist yet.
    pub fn create(
        &self,
        tenant: TenantId,
        proc_name: &str,
        limits: &Limits,
        tenant_limits: &Limits,
    ) -> Result<ProcCgroup, CgroupError> {
        let tenant_dir = tenant_dir_name(tenant);
        match &self.backend {
            Backend::None => Ok(ProcCgroup::None),
            Backend::V1(bases) => {
                let mut dirs = BTreeMap::new();
                let created =
                    self.create_v1_dirs(bases, &tenant_dir, proc_name, tenant_limits, &mut dirs);
                let done = created.and_then(|()| {
                    dirs.iter()
                        .try_for_each(|(&c, dir)| write_v1_limit(c, dir, limits))
                });
                match done {
                    Ok(()) => Ok(ProcCgroup::V1(dirs)),
                    Err(e) => {
                        let _ = self.remove(&ProcCgroup::V1(dirs));
                        Err(e)
                    }
                }
            }
            Backend::V2 { base, available } => {
                let enable: Vec<String> =
                    available.iter().map(|c| format!("+{}", c.name())).collect();
                let enable = enable.join(" ");
                let tenant_path = base.join(&tenant_dir);
                if !tenant_path.exists() {
                    if let Some(parent) = base.parent() {
                        write(&parent.join("cgroup.subtree_control"), &enable)?;
                    }
                    mkdir(base)?;
                    write(&base.join("cgroup.subtree_control"), &enable)?;
                    mkdir(&tenant_path)?;
                    write(&tenant_path.join("cgroup.subtree_control"), &enable)?;
                    write_v2_limits(&tenant_path, available, tenant_limits)?;
                }
                let dir = tenant_path.join(proc_name);
                mkdir(&dir)?;
                if let Err(e) = write_v2_limits(&dir, available, limits) {
                    let _ = fs::remove_dir(&dir);
                    return Err(e);
                }
                Ok(ProcCgroup::V2(dir))
            }
        }
    }

    fn create_v1_dirs(
        &self,
        bases: &BTreeMap<Controller, PathBuf>,
        tenant_dir: &str,
        proc_name: &str,
        tenant_limits: &Limits,
        dirs: &mut BTreeMap<Controller, PathBuf>,
    ) -> Result<(), CgroupError> {
        for (&c, base) in bases {
            let tenant_path = base.join(tenant_dir);
            if !tenant_path.exists() {
                mkdir(base)?;
                mkdir(&tenant_path)?;
                write_v1_limit(c, &tenant_path, tenant_limits)?;
            }
            let dir = tenant_path.join(proc_name);
            if !dirs.values().any(|d| *d == dir) {
                mkdir(&dir)?;
            }
            dirs.insert(c, dir);
        }
        Ok(())
    }

    /// The `cgroup.procs` files a new process writes itself into (one per directory).
    pub fn procs_files(cg: &ProcCgroup) -> Vec<PathBuf> {
        distinct_dirs(cg)
            .into_iter()
            .map(|d| d.join("cgroup.procs"))
            .collect()
    }

    /// The processes in the cgroup (the process's tree).
    pub fn members(cg: &ProcCgroup) -> Vec<i32> {
        let Some(dir) = distinct_dirs(cg).into_iter().next() else {
            return Vec::new();
        };
        let text = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        text.lines().filter_map(|l| l.trim().parse().ok()).collect()
    }

    /// Kills the whole cgroup at once where the kernel offers it (v2 `cgroup.kill`);
    /// returns whether it did.
    pub fn kill_all(cg: &ProcCgroup) -> bool {
        match cg {
            ProcCgroup::V2(dir) => {
                let file = dir.join("cgroup.kill");
                file.exists() && fs::write(file, "1").is_ok()
            }
            _ => false,
        }
    }

    /// What the cgroup measured; missing files give `None`.
    pub fn stats(cg: &ProcCgroup) -> CgroupStats {
        match cg {
            ProcCgroup::None => CgroupStats::default(),
            ProcCgroup::V1(dirs) => {
                let read = |c: Controller, file: &str| {
                    dirs.get(&c)
                        .and_then(|d| fs::read_to_string(d.join(file)).ok())
                };
                CgroupStats {
                    cpu_time: read(Controller::Cpuacct, "cpuacct.usage")
                        .and_then(|s| s.trim().parse().ok())
                        .map(Duration::from_nanos),
                    peak_memory_bytes: read(Controller::Memory, "memory.max_usage_in_bytes")
                        .and_then(|s| s.trim().parse().ok()),
                    oom_kills: read(Controller::Memory, "memory.oom_control")
                        .and_then(|s| keyed(&s, "oom_kill"))
                        .unwrap_or(0),
                }
            }
            ProcCgroup::V2(dir) => {
                let read = |file: &str| fs::read_to_string(dir.join(file)).ok();
                CgroupStats {
                    cpu_time: read("cpu.stat")
                        .and_then(|s| keyed(&s, "usage_usec"))
                        .map(Duration::from_micros),
                    peak_memory_bytes: read("memory.peak").and_then(|s| s.trim().parse().ok()),
                    oom_kills: read("memory.events")
                        .and_then(|s| keyed(&s, "oom_kill"))
                        .unwrap_or(0),
                }
            }
        }
    }

    /// Removes a process's cgroup directories (they must be empty of processes).
    pub fn remove(&self, cg: &ProcCgroup) -> Result<(), CgroupError> {
        for dir in distinct_dirs(cg) {
            match fs::remove_dir(&dir) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(CgroupError::new("rmdir", &dir, e))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Removes a tenant's cgroup directories (after its last process).
    pub fn remove_tenant(&self, tenant: TenantId) -> Result<(), CgroupError> {
        let tenant_dir = tenant_dir_name(tenant);
        for base in self.bases() {
            let dir = base.join(&tenant_dir);
            match fs::remove_dir(&dir) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    return Err(CgroupError::new("rmdir", &dir, e))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Removes the base directories if no tenant is left in them (otherwise leaves them).
    pub fn remove_base_if_empty(&self) {
        for base in self.bases() {
            let _ = fs::remove_dir(base);
        }
    }

    /// Every process cgroup below the base, as `(tenant, process directory name, cgroup)`:
    /// used after a restart to find cgroups no record accounts for.
    pub fn existing(&self) -> Vec<(TenantId, String, ProcCgroup)> {
        let mut found = BTreeSet::new();
        for base in self.bases() {
            for tenant in list_dirs(&base) {
                let Some(id) = tenant.strip_prefix('t').and_then(|t| t.parse().ok()) else {
                    continue;
                };
                for proc_name in list_dirs(&base.join(&tenant)) {
                    found.insert((TenantId(id), proc_name));
                }
            }
        }
        found
            .into_iter()
            .map(|(t, p)| {
                let cg = self.at(t, &p);
                (t, p, cg)
            })
            .collect()
    }

    /// The cgroup a process `proc_name` of `tenant` has (whether or not it exists).
    pub fn at(&self, tenant: TenantId, proc_name: &str) -> ProcCgroup {
        let rel = Path::new(&tenant_dir_name(tenant)).join(proc_name);
        match &self.backend {
            Backend::None => ProcCgroup::None,
            Backend::V1(bases) => {
                ProcCgroup::V1(bases.iter().map(|(&c, b)| (c, b.join(&rel))).collect())
            }
            Backend::V2 { base, .. } => ProcCgroup::V2(base.join(rel)),
        }
    }

    fn bases(&self) -> Vec<PathBuf> {
        let mut bases: Vec<PathBuf> = match &self.backend {
            Backend::None => Vec::new(),
            Backend::V1(bases) => bases.values().cloned().collect(),
            Backend::V2 { base, .. } => vec![base.clone()],
        };
        bases.sort();
        bases.dedup();
        bases
    }
}

fn tenant_dir_name(tenant: TenantId) -> String {
    format!("t{}", tenant.0)
}

fn list_dirs(dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect()
}

fn distinct_dirs(cg: &ProcCgroup) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = match cg {
        ProcCgroup::V1(dirs) => dirs.values().cloned().collect(),
        ProcCgroup::V2(dir) => vec![dir.clone()],
        ProcCgroup::None => Vec::new(),
    };
    dirs.sort();
    dirs.dedup();
    dirs
}

fn mkdir(dir: &Path) -> Result<(), CgroupError> {
    match fs::create_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
            Err(CgroupError::new("mkdir", dir, e))
        }
        _ => Ok(()),
    }
}

fn write(file: &Path, value: &str) -> Result<(), CgroupError> {
    fs::write(file, value).map_err(|e| CgroupError::new("write", file, e))
}

fn cpu_quota_us(millicores: u32) -> u64 {
    (u64::from(millicores) * CPU_PERIOD_US / 1000).max(CPU_QUOTA_MIN_US)
}

/// Writes the part of `limits` that controller `c` enforces into v1 directory `dir`.
fn write_v1_limit(c: Controller, dir: &Path, limits: &Limits) -> Result<(), CgroupError> {
    match c {
        Controller::Cpu => {
            if let Some(m) = limits.cpu_millicores {
                // The period is the one a new cgroup starts with: not written.
                write(&dir.join("cpu.cfs_quota_us"), &cpu_quota_us(m).to_string())?;
            }
        }
        Controller::Memory => {
            if let Some(bytes) = limits.memory_bytes {
                write(&dir.join("memory.limit_in_bytes"), &bytes.to_string())?;
                // Without this, the process would swap instead of being OOM-killed.
                let memsw = dir.join("memory.memsw.limit_in_bytes");
                if memsw.exists() {
                    write(&memsw, &bytes.to_string())?;
                }
            }
        }
        Controller::Pids => {
            if let Some(n) = limits.pids {
                write(&dir.join("pids.max"), &n.to_string())?;
            }
        }
        Controller::Cpuacct => {}
    }
    Ok(())
}

/// Writes `limits` into v2 directory `dir`.
fn write_v2_limits(
    dir: &Path,
    available: &BTreeSet<Controller>,
    limits: &Limits,
) -> Result<(), CgroupError> {
    if let (Some(m), true) = (limits.cpu_millicores, available.contains(&Controller::Cpu)) {
        write(
            &dir.join("cpu.max"),
            &format!("{} {CPU_PERIOD_US}", cpu_quota_us(m)),
        )?;
    }
    if let (Some(bytes), true) = (limits.memory_bytes, available.contains(&Controller::Memory)) {
        write(&dir.join("memory.max"), &bytes.to_string())?;
        let swap = dir.join("memory.swap.max");
        if swap.exists() {
            write(&swap, "0")?;
        }
    }
    if let (Some(n), true) = (limits.pids, available.contains(&Controller::Pids)) {
        write(&dir.join("pids.max"), &n.to_string())?;
    }
    Ok(())
}

/// The value of `key` in a `key value` per line file (cpu.stat, memory.events, oom_control).
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// The v1 cgroup mounts in a mountinfo text: `(mount point, controllers)`.
pub fn parse_v1_mounts(mountinfo: &str) -> Vec<(PathBuf, Vec<String>)> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mut right = right.split_whitespace();
            if right.next()? != "cgroup" {
                return None;
            }
            let options = right.nth(1)?;
            let mount = left.split_whitespace().nth(4)?;
            let controllers: Vec<String> = options
                .split(',')
                .filter(|o| Controller::ALL.iter().any(|c| c.name() == *o))
                .map(str::to_owned)
                .collect();
            (!controllers.is_empty()).then(|| (PathBuf::from(mount), controllers))
        })
        .collect()
}

/// `/proc/self/cgroup` as a map from the controller list (`""` for v2) to the path.
pub fn parse_self_cgroup(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ':');
            let _id = parts.next()?;
            let controllers = parts.next()?;
            let path = parts.next()?;
            let key: Vec<&str> = controllers
                .split(',')
                .filter(|c| Controller::ALL.iter().any(|k| k.name() == *c))
                .collect();
            // Named hierarchies (name=systemd) have none of our controllers.
            if key.is_empty() && !controllers.is_empty() {
                return None;
            }
            Some((key.join(","), path.to_owned()))
        })
        .collect()
}
