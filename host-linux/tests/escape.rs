//! The escape suite, as root: a tenant program (`nefele-tenant-probe`, deployed in
//! the tenant's data directory and run as `/data/probe`, as a tenant would run its
//! own program) tries to leave its containment, one attempt at a time; each
//! attempt is its own assertion and must fail. Controls (writing its own `/data`
//! and `/tmp`) must succeed, so that a probe that fails everything would be caught.
//!
//! Under `NEFELE_CI=1` the suite fails without root (see `nefele-test-support`).

mod common;

use common::*;
use nefele_core::host::{ExitStatus, Limits};
use nefele_core::{HostEvent, TenantId};
use nefele_host_linux::idmap::DEFAULT_FIRST_ID;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const ATTACKER: u32 = 50;
const VICTIM: u32 = 51;

/// Removes a file when dropped (the hidden key planted under /usr/local).
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Waits (up to 5 s) until `file` contains `text`.
fn wait_for_text(file: &Path, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !read(file).contains(text) {
        assert!(Instant::now() < deadline, "{file:?} never showed {text:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs the probe as a process of the attacker with `attempts`, under `limits`;
/// returns each attempt's line (after ` => `), by attempt.
fn probe(f: &mut Fixture, n: u64, attempts: &[String], limits: Limits) -> BTreeMap<String, String> {
    let data = f.host.tenant_data_dir(TenantId(ATTACKER));
    std::fs::create_dir_all(&data).unwrap();
    let probe = data.join("probe");
    if !probe.exists() {
        std::fs::copy(env!("CARGO_BIN_EXE_nefele-tenant-probe"), &probe).unwrap();
    }
    let mut argv = vec!["/data/probe".to_owned()];
    argv.extend(attempts.iter().cloned());
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let p = pid(n);
    start(&mut f.host, p, ATTACKER, spec(&argv, limits));
    assert_eq!(
        exit_of(&mut f.host, p).0,
        ExitStatus::Code(0),
        "the probe ran"
    );
    let logs = f.host.log_paths(p);
    let out = read(&logs.stdout);
    let results: BTreeMap<String, String> = out
        .lines()
        .filter_map(|l| l.split_once(" => "))
        .map(|(a, r)| (a.to_owned(), r.to_owned()))
        .collect();
    // Shown with --nocapture (and when the test fails): what each attempt met.
    println!("{out}");
    assert_eq!(
        results.len(),
        attempts.len(),
        "one line per attempt: {out}\nstderr: {}",
        read(&logs.stderr)
    );
    results
}

fn assert_denied(results: &BTreeMap<String, String>, attempt: &str, what: &str) {
    let r = &results[attempt];
    assert!(
        r.starts_with("denied"),
        "{what}: `{attempt}` succeeded: {r}"
    );
}

fn assert_allowed(results: &BTreeMap<String, String>, attempt: &str, what: &str) {
    let r = &results[attempt];
    assert!(
        r.starts_with("ok"),
        "{what} (a control): `{attempt}` failed: {r}"
    );
}

#[test]
fn a_tenant_process_cannot_escape_its_containment() {
    if !root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The agent's own files, beside its data directory.
    let agent = dir.path().join("agent");
    std::fs::create_dir_all(&agent).unwrap();
    let key = agent.join("cluster.key");
    let config_file = agent.join("nefeled.toml");
    std::fs::write(&key, "the-cluster-key").unwrap();
    std::fs::write(&config_file, "tokens = [\"secret\"]").unwrap();
    // A key kept where the view shows the directory (/usr/local): covered.
    let planted = PathBuf::from(format!(
        "/usr/local/nefele-escape-{}.key",
        std::process::id()
    ));
    std::fs::write(&planted, "planted-key").unwrap();
    let _planted = RemoveOnDrop(planted.clone());
    let data_dir = dir.path().join("data");
    let mut config = test_config(&data_dir, "escape");
    config.hidden = vec![key.clone(), config_file.clone(), planted.clone()];
    let host = nefele_host_linux::LinuxHost::open(config.clone()).unwrap();
    let mut f = Fixture {
        host,
        _guard: PanicCleanup(config.clone()),
        config,
        _dir: dir,
    };

    // The victim: another tenant with a log, data and a running process.
    let victim = pid(1);
    start(
        &mut f.host,
        victim,
        VICTIM,
        sh("echo victim-secret; echo data-secret > /data/secret; exec sleep 30"),
    );
    let victim_log = f.host.log_paths(victim).stdout;
    wait_for_text(&victim_log, "victim-secret");
    let victim_os = f.host.os_pid(victim).unwrap();
    let victim_data = f.host.tenant_data_dir(TenantId(VICTIM)).join("secret");
    // Written just after the log line: waited for, not raced (this read once found
    // the file still empty).
    wait_for_text(&victim_data, "data-secret");
    assert_eq!(read(&victim_data), "data-secret\n");
    let victim_cgroup = match f.host.cgroup(victim).unwrap() {
        nefele_host_linux::cgroup::ProcCgroup::V1(dirs) => dirs.values().next().unwrap().clone(),
        nefele_host_linux::cgroup::ProcCgroup::V2(dir) => dir.clone(),
        nefele_host_linux::cgroup::ProcCgroup::None => PathBuf::from("/sys/fs/cgroup"),
    };
    // A service on the host's loopback, the agent's socket, an abstract socket.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let socket = agent.join("api.sock");
    let _api = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let abstract_name = format!("nefele-escape-{}", std::process::id());
    let _abstract = {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(&abstract_name).unwrap();
        std::os::unix::net::UnixListener::bind_addr(&addr).unwrap()
    };

    let d = |p: &Path| p.display().to_string();
    let attempts: Vec<String> = [
        format!("read:{}", d(&key)),
        format!("read:{}", d(&config_file)),
        format!("read:{}", d(&planted)),
        format!("read:{}", d(&victim_log)),
        format!("read:{}", d(&victim_data)),
        format!("read:/proc/{victim_os}/root/data/secret"),
        "read:/etc/shadow".to_owned(),
        format!("read:{}", d(f.host.state_path())),
        "write:/usr/bin/escaped".to_owned(),
        "write:/etc/passwd".to_owned(),
        "write:/escaped".to_owned(),
        "write:/proc/sys/kernel/hostname".to_owned(),
        "write:/proc/sysrq-trigger".to_owned(),
        "write:/data/ok".to_owned(),
        "write:/tmp/ok".to_owned(),
        "mount".to_owned(),
        "umount:/proc".to_owned(),
        "umount:/data".to_owned(),
        "setns:/proc/1/ns/mnt".to_owned(),
        "setns:/proc/1/ns/user".to_owned(),
        "unshare-user".to_owned(),
        "module".to_owned(),
        "mknod:/tmp/sda".to_owned(),
        "open:/dev/sda".to_owned(),
        "open:/dev/vda".to_owned(),
        "open:/dev/nvme0n1".to_owned(),
        "open:/dev/mem".to_owned(),
        "mount-cgroup".to_owned(),
        format!("write:{}", d(&victim_cgroup.join("cgroup.procs"))),
        format!("write:{}", d(&victim_cgroup.join("pids.max"))),
        "write:/sys/fs/cgroup/pids/pids.max".to_owned(),
        format!("connect:127.0.0.1:{port}"),
        "connect:192.0.2.1:80".to_owned(),
        format!("kill:{victim_os}"),
        format!("ptrace:{victim_os}"),
        "ptrace:1".to_owned(),
        format!("unix:{}", d(&socket)),
        format!("unix:@{abstract_name}"),
        "status".to_owned(),
    ]
    .into();
    let r = probe(&mut f, 2, &attempts, Limits::default());
    let a = |i: usize| attempts[i].as_str();
    assert_denied(&r, a(0), "read the agent's key");
    assert_denied(&r, a(1), "read the agent's config");
    assert_denied(&r, a(2), "read a hidden key inside a shown directory");
    assert_denied(&r, a(3), "read another tenant's log");
    assert_denied(&r, a(4), "read another tenant's data by its host path");
    assert_denied(&r, a(5), "read another tenant's data through /proc");
    assert_denied(&r, a(6), "read the host's /etc/shadow");
    assert_denied(&r, a(7), "read the agent's state file");
    assert_denied(&r, a(8), "write into /usr");
    assert_denied(&r, a(9), "write /etc/passwd");
    assert_denied(&r, a(10), "write into the root");
    assert_denied(&r, a(11), "write a sysctl");
    assert_denied(&r, a(12), "write /proc/sysrq-trigger");
    assert_allowed(&r, a(13), "write its own data directory");
    assert_allowed(&r, a(14), "write its own /tmp");
    assert_denied(&r, a(15), "mount");
    assert_denied(&r, a(16), "unmount /proc");
    assert_denied(&r, a(17), "unmount /data");
    assert_denied(&r, a(18), "setns into pid 1's mount namespace");
    assert_denied(&r, a(19), "setns into pid 1's user namespace");
    assert_denied(&r, a(20), "create a user namespace");
    assert_denied(&r, a(21), "load a kernel module");
    assert_denied(&r, a(22), "create a block device node");
    for i in 23..=26 {
        assert_denied(&r, a(i), "open a raw device");
    }
    assert_denied(&r, a(27), "mount a cgroup file system");
    assert_denied(&r, a(28), "move into another cgroup");
    assert_denied(&r, a(29), "raise a cgroup limit");
    assert_denied(&r, a(30), "raise its own pids limit");
    assert_denied(&r, a(31), "reach a service on the host's loopback");
    assert_denied(&r, a(32), "reach the host's network");
    assert_denied(&r, a(33), "kill another tenant's process by host pid");
    assert_denied(&r, a(34), "ptrace another tenant's process by host pid");
    assert_denied(&r, a(35), "ptrace its own pid 1");
    assert_denied(&r, a(36), "connect to the agent's API socket");
    assert_denied(&r, a(37), "connect to an abstract socket of the host");
    let status = &r["status"];
    for want in [
        "Uid: 0 0 0 0",
        "CapEff: 0000000000000000",
        "CapPrm: 0000000000000000",
        "CapBnd: 0000000000000000",
        "NoNewPrivs: 1",
        "Seccomp: 2",
    ] {
        assert!(status.contains(want), "{want} not in {status}");
    }
    assert!(
        alive(victim_os),
        "the victim survived the attacker's attempts"
    );
    assert_eq!(
        read(&victim_data),
        "data-secret\n",
        "victim's data untouched"
    );
    // Seen from the host, a tenant's root is an unprivileged user without capabilities.
    let host_status = read(Path::new(&format!("/proc/{victim_os}/status")));
    let uid: u32 = host_status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|u| u.parse().ok())
        .unwrap();
    assert!(
        uid >= DEFAULT_FIRST_ID,
        "host uid {uid} is in the tenants' range"
    );
    assert!(
        host_status.contains("CapEff:\t0000000000000000"),
        "{host_status}"
    );
    // What it wrote stays in its own data directory, owned by its range.
    let own = f.host.tenant_data_dir(TenantId(ATTACKER)).join("ok");
    assert_eq!(read(&own), "escaped\n");
    assert!(!Path::new("/escaped").exists() && !Path::new("/usr/bin/escaped").exists());

    // A fork bomb meets its pids limit, and hurts only its own tenant.
    let bomb = vec!["forks:200".to_owned()];
    let limits = Limits {
        pids: Some(16),
        ..Default::default()
    };
    let r = probe(&mut f, 3, &bomb, limits);
    assert_denied(&r, "forks:200", "fork without bound");
    let other = pid(4);
    start(&mut f.host, other, VICTIM, sh("exit 0"));
    assert_eq!(exit_of(&mut f.host, other).0, ExitStatus::Code(0));

    kill_expecting(
        &mut f.host,
        victim,
        nefele_core::host::Signal::Kill,
        ExitStatus::Signaled(libc::SIGKILL),
    );
    while let Some(e) = f.host.wait_event(Duration::from_millis(50)) {
        assert!(matches!(e, HostEvent::Resources(_)), "{e:?}");
    }
    assert_clean(&f);
}
