//! Start-to-exit latency of `/bin/true` through the adapter with its full
//! isolation (user, pid, mount with its own root, uts, ipc, net and cgroup
//! namespaces, no capability, seccomp, cgroup limits), side by side in one run
//! with `unshare -U -r --pid --fork --mount-proc --uts --ipc --net`, with `bwrap`
//! (the same namespaces and a like view: read-only /usr, its own /proc, /dev,
//! /tmp) and a plain fork/exec; then spawn/kill cycles, checking that nothing is
//! left behind. The four are timed in turn, run after run, so that the load of a
//! shared machine falls on each alike. `ratio_vs_unshare` (the last line) is the
//! adapter's p50 over unshare's.
//!
//! The adapter's data directory (state file, two log files per process) is a
//! temporary directory: `TMPDIR` chooses its file system. On ext4 with many
//! recent deletions (a build machine), creating the log files dominates a start
//! (the inode allocator skips recently deleted inodes); compare with
//! `TMPDIR=/dev/shm`.
//!
//! Run as root: `cargo bench -p nefele-host-linux --bench spawn`.
//! Counts: `NEFELE_BENCH_N` (default 1000) and `NEFELE_BENCH_CYCLES` (default 10000).

use nefele_core::host::{Limits, ResourcePolicy, Signal};
use nefele_core::{Host, HostCommand, HostEvent, Incarnation, NodeId, Pid, ProcSpec, TenantId};
use nefele_host_linux::{Config, LinuxHost, RealSys};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn count(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn report(name: &str, mut samples: Vec<Duration>) -> Duration {
    if samples.is_empty() {
        println!("{name:<14} n=0");
        return Duration::ZERO;
    }
    samples.sort();
    let (p50, p99) = (percentile(&samples, 0.50), percentile(&samples, 0.99));
    println!(
        "{name:<14} n={:<6} p50={:>8.3} ms  p99={:>8.3} ms",
        samples.len(),
        ms(p50),
        ms(p99)
    );
    p50
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Waits for the `Exited` (or a failure) of `pid`; panics after 10 s.
fn wait_for(host: &mut LinuxHost<RealSys>, pid: Pid, exited: bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match host.wait_event(Duration::from_millis(100)) {
            Some(HostEvent::Exited { pid: p, .. }) if p == pid && exited => return,
            Some(HostEvent::Started { pid: p }) if p == pid && !exited => return,
            Some(HostEvent::StartFailed { detail, .. }) => panic!("start failed: {detail}"),
            _ => {}
        }
    }
    panic!("no event for {pid} within 10 s");
}

fn spec(argv: &[&str]) -> ProcSpec {
    let limits = Limits {
        cpu_millicores: Some(500),
        memory_bytes: Some(64 << 20),
        pids: Some(32),
    };
    ProcSpec {
        path: argv[0].to_owned(),
        argv: argv.iter().map(|s| s.to_string()).collect(),
        resources: ResourcePolicy {
            limits,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Distinct namespaces held by any process on the host.
fn namespaces() -> BTreeSet<std::path::PathBuf> {
    let mut set = BTreeSet::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        for kind in ["pid", "net", "ipc", "uts", "mnt"] {
            if let Ok(l) = std::fs::read_link(e.path().join("ns").join(kind)) {
                set.insert(l);
            }
        }
    }
    set
}

/// Zombie children of this process.
fn zombies() -> usize {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            let rest: Vec<&str> = stat[stat.rfind(')').map_or(0, |i| i + 1)..]
                .split_whitespace()
                .collect();
            rest.first() == Some(&"Z") && rest.get(1) == Some(&me.as_str())
        })
        .count()
}

fn leftover_cgroups(name: &str) -> usize {
    fn walk(dir: &Path, name: &str, depth: u32) -> usize {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return 0;
        };
        entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| {
                if e.file_name() == name {
                    1
                } else if depth > 0 {
                    walk(&e.path(), name, depth - 1)
                } else {
                    0
                }
            })
            .sum()
    }
    walk(Path::new("/sys/fs/cgroup"), name, 4)
}

/// Runs `program args` once; how long it took.
fn time_command(program: &str, args: &[&str]) -> Duration {
    let t0 = Instant::now();
    let status = Command::new(program).args(args).status();
    assert!(
        status.as_ref().is_ok_and(|s| s.success()),
        "{program} {args:?}: {status:?}"
    );
    t0.elapsed()
}

fn bwrap_available() -> bool {
    Command::new("bwrap")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// bwrap with the adapter's namespaces and a like view of the file system.
fn bwrap_args() -> Vec<&'static str> {
    let mut args = vec![
        "--unshare-user",
        "--uid",
        "0",
        "--gid",
        "0",
        "--unshare-pid",
        "--unshare-uts",
        "--unshare-ipc",
        "--unshare-net",
        "--unshare-cgroup",
        "--ro-bind",
        "/usr",
        "/usr",
    ];
    for dir in ["/bin", "/sbin", "/lib", "/lib64"] {
        let path = Path::new(dir);
        match std::fs::read_link(path) {
            Ok(target) => {
                let target: &'static str = target.to_string_lossy().into_owned().leak();
                args.extend(["--symlink", target, dir]);
            }
            Err(_) if path.exists() => args.extend(["--ro-bind", dir, dir]),
            Err(_) => {}
        }
    }
    args.extend([
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--tmpfs",
        "/tmp",
        "/bin/true",
    ]);
    args
}

/// Starts and reaps one `/bin/true` through the adapter; its start-to-exit latency.
fn run_adapter(host: &mut LinuxHost<RealSys>, tenant: TenantId, pid: Pid) -> Duration {
    let t0 = Instant::now();
    host.execute(HostCommand::Start {
        pid,
        tenant,
        spec: spec(&["/bin/true"]),
    })
    .expect("start");
    wait_for(host, pid, true);
    t0.elapsed()
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        println!("spawn bench skipped: needs root (namespaces and cgroups)");
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n = count("NEFELE_BENCH_N", 1000);
    let cycles = count("NEFELE_BENCH_CYCLES", 10_000);
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut config = Config::new(dir.path());
    config.cgroup_name = format!("nefele-bench-{}", std::process::id());
    config.fsync_state = false;
    let name = config.cgroup_name.clone();
    let linger = config.tenant_linger;
    println!("tenant_linger={linger:?} (an idle tenant keeps its namespaces that long)");
    let mut host = LinuxHost::open(config).expect("adapter");
    println!("cgroups: {:?}", host.support());
    let ns_before = namespaces();
    let tenant = TenantId(1);
    let mut seq = 0u64;
    let mut next_pid = || {
        seq += 1;
        Pid::new(NodeId(1), Incarnation(1), seq)
    };

    let unshare_args = [
        "-U",
        "-r",
        "--pid",
        "--fork",
        "--mount-proc",
        "--uts",
        "--ipc",
        "--net",
        "/bin/true",
    ];
    let bwrap_args = bwrap_available().then(bwrap_args);
    // Interleaved, so that the load of a shared machine falls on each alike.
    let (mut adapter, mut unshare, mut bwrap, mut plain) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        adapter.push(run_adapter(&mut host, tenant, next_pid()));
        unshare.push(time_command("unshare", &unshare_args));
        if let Some(args) = &bwrap_args {
            bwrap.push(time_command("bwrap", args));
        }
        plain.push(time_command("/bin/true", &[]));
    }
    host.set_fsync_state(true);
    let adapter_fsync: Vec<Duration> = (0..n.div_ceil(5))
        .map(|_| run_adapter(&mut host, tenant, next_pid()))
        .collect();
    host.set_fsync_state(false);

    let mut kills = Vec::with_capacity(cycles);
    for _ in 0..cycles {
        let pid = next_pid();
        host.execute(HostCommand::Start {
            pid,
            tenant,
            spec: spec(&["/bin/sleep", "60"]),
        })
        .expect("start");
        wait_for(&mut host, pid, false);
        let t0 = Instant::now();
        host.execute(HostCommand::Kill {
            pid,
            signal: Signal::Kill,
        })
        .expect("kill");
        wait_for(&mut host, pid, true);
        kills.push(t0.elapsed());
    }
    // The idle tenant's holder and cgroup go after the linger time; then namespace
    // teardown is asynchronous in the kernel once the last process is gone.
    let linger_deadline = Instant::now() + linger + Duration::from_secs(5);
    while host.holder(tenant).is_some() && Instant::now() < linger_deadline {
        host.wait_event(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(200));
    let leftover_ns = namespaces().difference(&ns_before).count();

    report("fork/exec", plain);
    let p50_unshare = report("unshare -U -r", unshare);
    let p50_bwrap = bwrap_args.map(|_| report("bwrap", bwrap));
    let p50_adapter_fsync = report("adapter+fsync", adapter_fsync);
    let p50_adapter = report("adapter", adapter);
    report("kill", kills);
    println!(
        "after {cycles} spawn/kill cycles: zombies={} leftover_cgroups={} leftover_namespaces={} holder={:?}",
        zombies(),
        leftover_cgroups(&name),
        leftover_ns,
        host.holder(tenant)
    );
    match p50_bwrap {
        Some(b) => println!(
            "ratio_vs_bwrap={:.2}",
            p50_adapter.as_secs_f64() / b.as_secs_f64()
        ),
        None => println!("ratio_vs_bwrap: bwrap not installed (apt-get install bubblewrap)"),
    }
    // Both ratios; the one without fsync stays last (scripts read the last line).
    println!(
        "ratio_vs_unshare_fsync={:.2}",
        p50_adapter_fsync.as_secs_f64() / p50_unshare.as_secs_f64()
    );
    println!(
        "ratio_vs_unshare={:.2}",
        p50_adapter.as_secs_f64() / p50_unshare.as_secs_f64()
    );
}
