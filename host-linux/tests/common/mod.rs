//! Helpers shared by the root tests (`linux.rs`, `escape.rs`): an adapter per test
//! with its own data directory and cgroup base, events awaited with a bound, and
//! cleanup that leaves nothing behind even when a test panics.
#![allow(dead_code)] // each test file uses its own subset

use nefele_core::host::{ExitStatus, Limits, ResourcePolicy, Signal};
use nefele_core::{Host, HostCommand, HostEvent, Incarnation, NodeId, Pid, ProcSpec, TenantId};
use nefele_host_linux::sys::proc_start_ticks;
use nefele_host_linux::{state, Config, LinuxHost, RealSys};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Whether this test can run: it needs root (else fails under CI, skips elsewhere).
pub fn root() -> bool {
    nefele_test_support::require(
        nix::unistd::geteuid().is_root(),
        "root (namespaces and cgroups; run as uid 0)",
    )
}

/// One adapter of a test, with its data directory and cleanup.
pub struct Fixture {
    pub host: LinuxHost<RealSys>,
    pub config: Config,
    /// Declared before `_dir`: it reads the state file in it.
    pub _guard: PanicCleanup,
    pub _dir: tempfile::TempDir,
}

/// When a test panics, kills what its adapter recorded (holders and processes, pid
/// reuse checked) and removes its cgroup directories, so that a failed test leaves
/// nothing behind either.
pub struct PanicCleanup(pub Config);

impl Drop for PanicCleanup {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
        let saved = state::load_boots(&self.0.data_dir, boot.trim())
            .map(|found| found.current)
            .unwrap_or_default();
        let recorded = saved.holders.iter().map(|h| (h.os_pid, h.start_ticks));
        let procs = saved.procs.iter().map(|p| (p.os_pid, p.start_ticks));
        for (os_pid, ticks) in procs.chain(recorded) {
            if proc_start_ticks(os_pid) == Some(ticks) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(os_pid),
                    nix::sys::signal::SIGKILL,
                );
            }
        }
        std::thread::sleep(Duration::from_millis(100));
        let mut found = Vec::new();
        find_dirs(
            Path::new("/sys/fs/cgroup"),
            &self.0.cgroup_name,
            4,
            &mut found,
        );
        for top in found {
            remove_tree(&top);
        }
    }
}

/// Removes a cgroup directory and its children, deepest first.
pub fn remove_tree(dir: &Path) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            remove_tree(&e.path());
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// The settings of a test's adapter: its own data directory and cgroup base.
pub fn test_config(dir: &Path, name: &str) -> Config {
    let mut config = Config::new(dir);
    config.cgroup_name = format!("nefele-test-{name}-{}", std::process::id());
    config.kill_grace = Duration::from_millis(200);
    config.tenant_linger = Duration::ZERO;
    config
}

pub fn fixture(name: &str) -> Fixture {
    fixture_with(name, |_| {})
}

/// A fixture whose configuration `edit` changed first.
pub fn fixture_with(name: &str, edit: impl FnOnce(&mut Config)) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path(), name);
    edit(&mut config);
    let host = LinuxHost::open(config.clone()).unwrap();
    Fixture {
        host,
        _guard: PanicCleanup(config.clone()),
        config,
        _dir: dir,
    }
}

pub fn pid(n: u64) -> Pid {
    Pid::new(NodeId(1), Incarnation(1), n)
}

pub fn spec(argv: &[&str], limits: Limits) -> ProcSpec {
    ProcSpec {
        path: argv[0].to_owned(),
        argv: argv.iter().map(|s| s.to_string()).collect(),
        envp: vec!["PATH=/usr/bin:/bin:/usr/sbin:/sbin".to_owned()],
        resources: ResourcePolicy {
            limits,
            ..Default::default()
        },
        ..Default::default()
    }
}

pub fn sh(script: &str) -> ProcSpec {
    spec(&["/bin/sh", "-c", script], Limits::default())
}

pub fn start(host: &mut LinuxHost<RealSys>, p: Pid, tenant: u32, spec: ProcSpec) {
    host.execute(HostCommand::Start {
        pid: p,
        tenant: TenantId(tenant),
        spec,
    })
    .unwrap();
    match next_event(host, p) {
        HostEvent::Started { .. } => {}
        other => panic!("expected Started, got {other:?}"),
    }
}

/// The next event about `p` (Resources skipped), within 10 s.
pub fn next_event(host: &mut LinuxHost<RealSys>, p: Pid) -> HostEvent {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match host.wait_event(Duration::from_millis(100)) {
            Some(HostEvent::Resources(_)) | None => {}
            Some(
                e @ (HostEvent::Started { pid, .. }
                | HostEvent::StartFailed { pid, .. }
                | HostEvent::Exited { pid, .. }
                | HostEvent::Adopted { pid, .. }),
            ) => {
                assert_eq!(pid, p, "event about another pid: {e:?}");
                return e;
            }
        }
    }
    panic!("no event about {p} within 10 s");
}

/// How each of `pids` ended, whatever the order of their exits (within 10 s).
pub fn exits_of(host: &mut LinuxHost<RealSys>, pids: &[Pid]) -> BTreeMap<Pid, ExitStatus> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut exits = BTreeMap::new();
    while exits.len() < pids.len() && Instant::now() < deadline {
        match host.wait_event(Duration::from_millis(100)) {
            Some(HostEvent::Exited { pid, status, .. }) if pids.contains(&pid) => {
                exits.insert(pid, status);
            }
            Some(HostEvent::Resources(_)) | None => {}
            Some(other) => panic!("unexpected event while waiting for {pids:?}: {other:?}"),
        }
    }
    assert_eq!(
        exits.len(),
        pids.len(),
        "not all of {pids:?} exited within 10 s"
    );
    exits
}

/// Sends `signal` to `pid` and waits for it to end with `expected`.
pub fn kill_expecting(
    host: &mut LinuxHost<RealSys>,
    pid: Pid,
    signal: Signal,
    expected: ExitStatus,
) {
    host.execute(HostCommand::Kill { pid, signal }).unwrap();
    assert_eq!(exit_of(host, pid).0, expected);
}

pub fn exit_of(host: &mut LinuxHost<RealSys>, p: Pid) -> (ExitStatus, nefele_core::host::Usage) {
    match next_event(host, p) {
        HostEvent::Exited { status, usage, .. } => (status, usage),
        other => panic!("expected Exited, got {other:?}"),
    }
}

pub fn find_dirs(dir: &Path, name: &str, depth: u32, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        if e.file_name() == name {
            found.push(e.path());
        } else if depth > 0 {
            find_dirs(&e.path(), name, depth - 1, found);
        }
    }
}

/// No cgroup directory of this fixture is left anywhere under /sys/fs/cgroup.
pub fn assert_clean(f: &Fixture) {
    let mut found = Vec::new();
    find_dirs(
        Path::new("/sys/fs/cgroup"),
        &f.config.cgroup_name,
        4,
        &mut found,
    );
    assert!(found.is_empty(), "leftover cgroups: {found:?}");
}

pub fn alive(os_pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(os_pid), None).is_ok()
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}
