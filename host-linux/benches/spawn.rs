//! Start-to-exit latency of `/bin/true` through the adapter with its full
//! isolation (user, pid, mount with its own root, uts, ipc, net and cgroup
//! namespaces, no capability, seccomp, cgroup limits), side by side in one run
//! with `unshare -U -r --pid --fork --mount-proc --uts --ipc --net`, with `bwrap`
//! (the same namespaces and a like view: read-only /usr, its own /proc, /dev,
//! /tmp) and a plain fork/exec; then spawn/kill cycles, checking that nothing is
//! left behind. The adapter is timed two ways: with `nefeled`'s defaults
//! (`adapter`), and without spare log files (`adapter, no spare logs`: each
//! start creates its two log files, as before the pool). All five are timed in
//! turn, round after round in a shuffled order, so that the load of a shared
//! machine falls on each alike. `ratio_vs_unshare` (the last line) is the
//! adapter's p50 over unshare's.
//!
//! The adapter's data directory (state file, two log files per process) is a
//! temporary directory: `TMPDIR` chooses its file system (ext4, where creating
//! a file costs about 0.4 ms, against `TMPDIR=/dev/shm`). No start or exit
//! waits for the disk (the state is kept per boot, never fsynced: see
//! `nefele_host_linux::state`); `strace -f -e trace=fsync,fdatasync` on a run
//! shows only the one durable save of the tenant's id range.
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
        println!("{name:<22} n=0");
        return Duration::ZERO;
    }
    samples.sort();
    let (p50, p99) = (percentile(&samples, 0.50), percentile(&samples, 0.99));
    println!(
        "{name:<22} n={:<6} p50={:>8.3} ms  p99={:>8.3} ms",
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

/// What the bench times (in an order shuffled each round).
const SUBJECTS: usize = 5;
const ADAPTER: usize = 0;
const NO_SPARES: usize = 1;
const UNSHARE: usize = 2;
const BWRAP: usize = 3;

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
    let name = config.cgroup_name.clone();
    let linger = config.tenant_linger;
    println!("tenant_linger={linger:?} (an idle tenant keeps its namespaces that long)");
    // The same adapter without spare log files (each start creates its two), in
    // its own data directory and cgroups.
    let dir_no_spares = tempfile::tempdir().expect("temporary directory");
    let mut no_spares = LinuxHost::open(Config {
        data_dir: dir_no_spares.path().to_owned(),
        cgroup_name: format!("{name}-ns"),
        log_spares: 0,
        ..config.clone()
    })
    .expect("adapter");
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
    // Interleaved, so that the load of a shared machine falls on each alike, in an
    // order shuffled every round, so that none always follows the same one: the
    // namespaces unshare and bwrap leave are torn down by the kernel after they
    // exit, on the time of whatever runs next (in a fixed order, the adapter ran
    // after bwrap and plain and was charged about twice its own time).
    let mut samples: [Vec<Duration>; SUBJECTS] = Default::default();
    let mut order: [usize; SUBJECTS] = std::array::from_fn(|i| i);
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..n {
        for i in (1..SUBJECTS).rev() {
            // xorshift64: a fixed sequence, the same every run.
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            order.swap(i, (rng % (i as u64 + 1)) as usize);
        }
        for subject in order {
            let took = match subject {
                ADAPTER => run_adapter(&mut host, tenant, next_pid()),
                NO_SPARES => run_adapter(&mut no_spares, tenant, next_pid()),
                UNSHARE => time_command("unshare", &unshare_args),
                BWRAP => match &bwrap_args {
                    Some(args) => time_command("bwrap", args),
                    None => continue,
                },
                _ => time_command("/bin/true", &[]),
            };
            samples[subject].push(took);
        }
    }
    let [adapter, adapter_no_spares, unshare, bwrap, plain] = samples;

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
    while (host.holder(tenant).is_some() || no_spares.holder(tenant).is_some())
        && Instant::now() < linger_deadline
    {
        host.wait_event(Duration::from_millis(50));
        no_spares.wait_event(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(200));
    let leftover_ns = namespaces().difference(&ns_before).count();

    report("fork/exec", plain);
    let p50_unshare = report("unshare -U -r", unshare);
    let p50_bwrap = bwrap_args.map(|_| report("bwrap", bwrap));
    report("adapter, no spare logs", adapter_no_spares);
    let p50_adapter = report("adapter", adapter);
    report("kill", kills);
    println!(
        "after {cycles} spawn/kill cycles: zombies={} leftover_cgroups={} leftover_namespaces={} holder={:?}",
        zombies(),
        leftover_cgroups(&name) + leftover_cgroups(&format!("{name}-ns")),
        leftover_ns,
        host.holder(tenant)
    );
    drop(no_spares);
    match p50_bwrap {
        Some(b) => println!(
            "ratio_vs_bwrap={:.2}",
            p50_adapter.as_secs_f64() / b.as_secs_f64()
        ),
        None => println!("ratio_vs_bwrap: bwrap not installed (apt-get install bubblewrap)"),
    }
    // Last: scripts read the last line.
    println!(
        "ratio_vs_unshare={:.2}",
        p50_adapter.as_secs_f64() / p50_unshare.as_secs_f64()
    );
}
