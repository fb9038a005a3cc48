//! The real path, as root: real processes in real namespaces and cgroups.
//! Every test uses its own data directory and cgroup base, so tests run in
//! parallel; each checks that it left no cgroup, holder or process behind.

mod common;

use common::*;
use nefele_core::host::{ExitStatus, Limits, Signal, StartFailure};
use nefele_core::{Host, HostCommand, HostEvent, ProcSpec, TenantId};
use nefele_host_linux::{Config, LinuxHost};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn exit_code_logs_and_usage_are_reported() {
    if !root() {
        return;
    }
    let mut f = fixture("exit");
    let p = pid(1);
    start(
        &mut f.host,
        p,
        1,
        sh("echo to-out; echo to-err >&2; exit 3"),
    );
    let (status, usage) = exit_of(&mut f.host, p);
    assert_eq!(status, ExitStatus::Code(3));
    assert!(usage.wall_time > Duration::ZERO);
    let logs = f.host.log_paths(p);
    assert_eq!(read(&logs.stdout), "to-out\n");
    assert_eq!(read(&logs.stderr), "to-err\n");
    // Idempotent: a pid that ran is not started again.
    f.host
        .execute(HostCommand::Start {
            pid: p,
            tenant: TenantId(1),
            spec: sh("exit 0"),
        })
        .unwrap();
    assert!(matches!(
        f.host.wait_event(Duration::from_millis(50)),
        None | Some(HostEvent::Resources(_))
    ));
    assert_clean(&f);
}

#[test]
fn a_process_inherits_its_endpoint_and_the_agent_keeps_the_other_end() {
    if !root() {
        return;
    }
    let mut f = fixture_with("endpoint", |c| c.endpoints = true);
    let p = pid(1);
    // Written through the inherited descriptor, from inside every namespace and
    // under seccomp; and the descriptor is a socket. (bash: dash takes no
    // descriptor above 9 in a redirection.)
    let script = r#"[ -S "/proc/self/fd/$NEFELE_FD" ] && printf '%s' "$NEFELE_PID" >&"$NEFELE_FD""#;
    start(
        &mut f.host,
        p,
        1,
        spec(&["/bin/bash", "-c", script], Limits::default()),
    );
    let (status, _) = exit_of(&mut f.host, p);
    assert_eq!(
        status,
        ExitStatus::Code(0),
        "{}",
        read(&f.host.log_paths(p).stderr)
    );
    let mut endpoints = f.host.take_endpoints();
    assert_eq!(endpoints.len(), 1);
    let (who, tenant, mut ours) = endpoints.remove(0);
    assert_eq!((who, tenant), (p, TenantId(1)));
    let mut said = String::new();
    std::io::Read::read_to_string(&mut ours, &mut said).unwrap();
    assert_eq!(said, p.to_string(), "the process's end closed with it");
    assert!(f.host.take_endpoints().is_empty());
    assert_clean(&f);
}

#[test]
fn a_memory_hog_is_oom_killed_and_reported_so() {
    if !root() {
        return;
    }
    let mut f = fixture("oom");
    let p = pid(1);
    let limits = Limits {
        memory_bytes: Some(32 << 20),
        ..Default::default()
    };
    start(
        &mut f.host,
        p,
        2,
        spec(&["/usr/bin/tail", "/dev/zero"], limits),
    );
    let (status, usage) = exit_of(&mut f.host, p);
    assert_eq!(status, ExitStatus::OutOfMemory);
    assert!(
        usage.peak_memory_bytes >= 16 << 20,
        "peak {}",
        usage.peak_memory_bytes
    );
    assert_clean(&f);
}

#[test]
fn limits_are_visible_in_the_cgroup_and_terminate_kills() {
    if !root() {
        return;
    }
    let mut f = fixture("limits");
    let p = pid(1);
    let limits = Limits {
        cpu_millicores: Some(250),
        memory_bytes: Some(64 << 20),
        pids: Some(16),
    };
    start(&mut f.host, p, 3, spec(&["/bin/sleep", "30"], limits));
    let cg = f.host.cgroup(p).cloned().unwrap();
    let nefele_host_linux::cgroup::ProcCgroup::V1(dirs) = cg else {
        panic!("this test expects the v1 controllers this host has; got {cg:?}")
    };
    use nefele_host_linux::cgroup::Controller;
    assert_eq!(
        read(&dirs[&Controller::Cpu].join("cpu.cfs_quota_us")).trim(),
        "25000"
    );
    assert_eq!(
        read(&dirs[&Controller::Cpu].join("cpu.cfs_period_us")).trim(),
        "100000"
    );
    assert_eq!(read(&dirs[&Controller::Pids].join("pids.max")).trim(), "16");
    assert_eq!(
        read(&dirs[&Controller::Memory].join("memory.limit_in_bytes")).trim(),
        (64u64 << 20).to_string()
    );
    let os_pid = f.host.os_pid(p).unwrap();
    assert!(read(&dirs[&Controller::Memory].join("cgroup.procs")).contains(&os_pid.to_string()));
    kill_expecting(
        &mut f.host,
        p,
        Signal::Terminate,
        ExitStatus::Signaled(libc::SIGTERM),
    );
    assert_clean(&f);
}

#[test]
fn a_process_tree_is_killed_after_the_grace_period() {
    if !root() {
        return;
    }
    let mut f = fixture("tree");
    let p = pid(1);
    start(
        &mut f.host,
        p,
        4,
        sh("trap '' TERM; sleep 30 & sleep 30 & echo ready; wait"),
    );
    let logs = f.host.log_paths(p);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !read(&logs.stdout).contains("ready") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let cg = f.host.cgroup(p).cloned().unwrap();
    let members = nefele_host_linux::Cgroups::members(&cg);
    assert_eq!(members.len(), 3, "shell and two sleeps: {members:?}");
    let holder = f.host.holder(TenantId(4)).unwrap();
    let t0 = Instant::now();
    kill_expecting(
        &mut f.host,
        p,
        Signal::Terminate,
        ExitStatus::Signaled(libc::SIGKILL),
    );
    assert!(
        t0.elapsed() >= Duration::from_millis(200),
        "SIGKILL came before the grace period"
    );
    for m in members.into_iter().chain([holder]) {
        assert!(!alive(m), "{m} survived");
    }
    assert_clean(&f);
}

/// Whether `os_pid` has ended (gone, or a zombie not reaped yet).
fn ended(os_pid: i32) -> bool {
    let stat = read(Path::new(&format!("/proc/{os_pid}/stat")));
    stat.rsplit_once(") ")
        .is_none_or(|(_, rest)| rest.starts_with('Z'))
}

/// A host's shutdown sends every process SIGTERM. A tenant's holder (its pid 1)
/// then stops its tenant's processes and ends with them, instead of ignoring the
/// signal until the final SIGKILL (90 s later under systemd); the same signal
/// from a process of the tenant does nothing. The tenant's next process gets a
/// new holder, also within the tenant's linger.
#[test]
fn a_holder_stops_its_tenant_on_the_hosts_sigterm_and_not_on_the_tenants() {
    if !root() {
        return;
    }
    let mut f = fixture_with("hterm", |c| c.tenant_linger = Duration::from_secs(3));
    let (a, b, c) = (pid(1), pid(2), pid(3));
    start(&mut f.host, a, 12, sh("echo ready; exec sleep 30"));
    let logs = f.host.log_paths(a);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !read(&logs.stdout).contains("ready") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let holder = f.host.holder(TenantId(12)).unwrap();
    start(&mut f.host, b, 12, sh("kill -TERM 1 && echo sent"));
    assert_eq!(exit_of(&mut f.host, b).0, ExitStatus::Code(0));
    assert!(read(&f.host.log_paths(b).stdout).contains("sent"));
    std::thread::sleep(Duration::from_millis(300));
    assert!(!ended(holder), "a tenant's SIGTERM stopped its holder");
    // From outside the tenant, as a host's shutdown sends it.
    let t0 = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(holder),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(
        exit_of(&mut f.host, a).0,
        ExitStatus::Signaled(libc::SIGTERM)
    );
    while !ended(holder) && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(ended(holder), "the holder outlived its tenant");
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    assert_eq!(f.host.holder(TenantId(12)), Some(holder), "still lingering");
    start(&mut f.host, c, 12, sh("echo again"));
    assert_eq!(exit_of(&mut f.host, c).0, ExitStatus::Code(0));
    assert_ne!(f.host.holder(TenantId(12)), Some(holder), "a new holder");
    assert!(read(&f.host.log_paths(c).stdout).contains("again"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while f.host.holder(TenantId(12)).is_some() && Instant::now() < deadline {
        f.host.wait_event(Duration::from_millis(100));
    }
    assert_clean(&f);
}

fn ns(os_pid: i32, kind: &str) -> PathBuf {
    std::fs::read_link(format!("/proc/{os_pid}/ns/{kind}")).unwrap()
}

#[test]
fn tenants_are_isolated_and_share_their_own_namespaces() {
    if !root() {
        return;
    }
    let mut f = fixture("iso");
    let (a1, a2, b1) = (pid(1), pid(2), pid(3));
    start(
        &mut f.host,
        a1,
        10,
        sh("ipcmk -M 4096 >/dev/null; echo ready; exec sleep 30"),
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while !read(&f.host.log_paths(a1).stdout).contains("ready") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let probe = "ps -eo comm= | sort | tr '\\n' ' '; echo; hostname; ipcs -m | grep -c 0x; ip -o link | cut -d: -f2,3";
    start(&mut f.host, a2, 10, sh(&format!("sleep 0.3; {probe}")));
    start(&mut f.host, b1, 11, sh(&format!("sleep 0.3; {probe}")));
    let (a1_os, a2_os, b1_os) = (
        f.host.os_pid(a1).unwrap(),
        f.host.os_pid(a2).unwrap(),
        f.host.os_pid(b1).unwrap(),
    );
    let me = std::process::id() as i32;
    for kind in ["pid", "mnt", "uts", "ipc", "net", "user"] {
        assert_eq!(
            ns(a1_os, kind),
            ns(a2_os, kind),
            "{kind}: same tenant, same namespace"
        );
        assert_ne!(
            ns(a1_os, kind),
            ns(b1_os, kind),
            "{kind}: other tenants differ"
        );
        assert_ne!(
            ns(a1_os, kind),
            ns(me, kind),
            "{kind}: differs from the host's"
        );
    }
    // a2 and b1 end at about the same time, in either order.
    let exits = exits_of(&mut f.host, &[a2, b1]);
    assert_eq!(exits[&a2], ExitStatus::Code(0));
    assert_eq!(exits[&b1], ExitStatus::Code(0));
    let out_a = read(&f.host.log_paths(a2).stdout);
    let out_b = read(&f.host.log_paths(b1).stdout);
    let lines_a: Vec<&str> = out_a.lines().collect();
    let lines_b: Vec<&str> = out_b.lines().collect();
    assert!(
        lines_a[0].contains("sleep"),
        "tenant 10 sees its own sleep: {out_a}"
    );
    assert!(
        !lines_b[0].contains("sleep"),
        "tenant 11 sees no other tenant's process: {out_b}"
    );
    assert!(
        !lines_b[0].contains("cargo") && !lines_b[0].contains("linux-"),
        "no host process: {out_b}"
    );
    assert_eq!((lines_a[1], lines_b[1]), ("nefele-t10", "nefele-t11"));
    assert_eq!(
        (lines_a[2], lines_b[2]),
        ("1", "0"),
        "shared memory of tenant 10 only in tenant 10"
    );
    assert_eq!(
        lines_b.len(),
        4,
        "only loopback in the tenant's network: {out_b}"
    );
    assert!(
        lines_a[3].contains("lo") && lines_a[3].contains("UP"),
        "loopback up: {out_a}"
    );
    kill_expecting(
        &mut f.host,
        a1,
        Signal::Kill,
        ExitStatus::Signaled(libc::SIGKILL),
    );
    assert_clean(&f);
}

#[test]
fn a_recreated_adapter_readopts_running_processes_and_reports_ended_ones() {
    if !root() {
        return;
    }
    let mut f = fixture("readopt");
    let (long, short) = (pid(1), pid(2));
    start(
        &mut f.host,
        long,
        20,
        spec(&["/bin/sleep", "30"], Limits::default()),
    );
    start(&mut f.host, short, 20, sh("sleep 0.2; exit 4"));
    let long_os = f.host.os_pid(long).unwrap();
    let holder = f.host.holder(TenantId(20)).unwrap();
    let dir = f._dir;
    drop(f.host);
    std::thread::sleep(Duration::from_millis(400));
    assert!(
        alive(long_os) && alive(holder),
        "dropping the adapter leaves processes running"
    );
    let mut f = Fixture {
        host: LinuxHost::open(f.config.clone()).unwrap(),
        config: f.config,
        _guard: f._guard,
        _dir: dir,
    };
    assert_eq!(f.host.os_pid(long), Some(long_os));
    assert_eq!(f.host.holder(TenantId(20)), Some(holder));
    // Both are adopted (the one that ended too), before the Exited of the short one.
    for (p, command) in [(long, "/bin/sleep"), (short, "/bin/sh")] {
        match next_event(&mut f.host, p) {
            HostEvent::Adopted {
                tenant, command: c, ..
            } => assert_eq!((tenant, c.as_str()), (TenantId(20), command)),
            other => panic!("expected Adopted, got {other:?}"),
        }
    }
    assert_eq!(exit_of(&mut f.host, short).0, ExitStatus::Code(4));
    kill_expecting(
        &mut f.host,
        long,
        Signal::Kill,
        ExitStatus::Signaled(libc::SIGKILL),
    );
    assert!(!alive(holder));
    assert_clean(&f);
}

/// A child of the test that joins `netns` and the cgroups of `procs_files` (as a
/// member of a tenant's process tree would be), connects to the abstract agent
/// socket there and keeps the connection while it sleeps.
fn caller_in(netns: &Path, procs_files: &[PathBuf]) -> Child {
    use std::os::unix::process::CommandExt;
    let ns = std::ffi::CString::new(netns.as_os_str().as_encoded_bytes()).unwrap();
    let files: Vec<std::ffi::CString> = procs_files
        .iter()
        .map(|f| std::ffi::CString::new(f.as_os_str().as_encoded_bytes()).unwrap())
        .collect();
    let name = nefele_host_linux::agent_socket::AGENT_SOCKET
        .as_bytes()
        .to_vec();
    let mut command = Command::new("/bin/sleep");
    command.arg("10");
    // SAFETY: the closure makes only async-signal-safe syscalls on data prepared
    // before the fork.
    unsafe {
        command.pre_exec(move || {
            let fail = || Err(std::io::Error::last_os_error());
            let fd = libc::open(ns.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
            if fd < 0 || libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return fail();
            }
            for f in &files {
                let cg = libc::open(f.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if cg < 0 || libc::write(cg, b"0".as_ptr().cast(), 1) != 1 {
                    return fail();
                }
                libc::close(cg);
            }
            let sock = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
            let mut addr: libc::sockaddr_un = std::mem::zeroed();
            addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
            for (i, b) in name.iter().enumerate() {
                addr.sun_path[1 + i] = *b as libc::c_char;
            }
            let len = std::mem::size_of::<libc::sa_family_t>() + 1 + name.len();
            let addr_ptr = (&addr as *const libc::sockaddr_un).cast();
            if sock < 0 || libc::connect(sock, addr_ptr, len as libc::socklen_t) != 0 {
                return fail();
            }
            Ok(())
        });
    }
    command.spawn().unwrap()
}

#[test]
fn the_agent_socket_is_handed_to_each_adapter_and_names_its_callers_process() {
    use nefele_host_linux::agent_socket::{identify, PeerError, AGENT_SOCKET};
    use std::os::linux::net::SocketAddrExt;
    if !root() {
        return;
    }
    let mut f = fixture_with("agentsock", |c| c.endpoints = true);
    let p = pid(1);
    start(
        &mut f.host,
        p,
        21,
        spec(&["/bin/sleep", "30"], Limits::default()),
    );
    let mut sockets = f.host.take_listeners();
    assert_eq!(sockets.len(), 1);
    let (tenant, listener) = sockets.remove(0);
    assert_eq!(tenant, TenantId(21));
    let listener = listener.unwrap();
    let name = listener.local_addr().unwrap();
    assert_eq!(name.as_abstract_name(), Some(AGENT_SOCKET.as_bytes()));
    let holder = f.host.holder(TenantId(21)).unwrap();
    let netns = PathBuf::from(format!("/proc/{holder}/ns/net"));
    let procs = nefele_host_linux::Cgroups::procs_files(f.host.cgroup(p).unwrap());

    // A member of the process's tree, in the tenant's network namespace: named as
    // the process, and only for its own tenant.
    let mut member = caller_in(&netns, &procs);
    let (stream, _) = listener.accept().unwrap();
    assert_eq!(
        identify(&stream, TenantId(21), f.host.cgroups()).unwrap(),
        p
    );
    assert!(matches!(
        identify(&stream, TenantId(22), f.host.cgroups()),
        Err(PeerError::OtherTenant { .. })
    ));
    // In the namespace but in no process's cgroup (the holder's own): refused.
    let mut stranger = caller_in(&netns, &[]);
    let (stream, _) = listener.accept().unwrap();
    assert!(matches!(
        identify(&stream, TenantId(21), f.host.cgroups()),
        Err(PeerError::Foreign { .. })
    ));
    for c in [&mut member, &mut stranger] {
        let _ = c.kill();
        let _ = c.wait();
    }

    // The next adapter (a restarted agent) re-adopts the holder and gets the same
    // socket: a connection made meanwhile waits in its backlog.
    let dir = f._dir;
    drop(f.host);
    drop(listener);
    let mut late = caller_in(&netns, &procs);
    let mut f = Fixture {
        host: LinuxHost::open(f.config.clone()).unwrap(),
        config: f.config,
        _guard: f._guard,
        _dir: dir,
    };
    let mut sockets = f.host.take_listeners();
    assert_eq!(sockets.len(), 1);
    let (stream, _) = sockets[0].1.as_ref().unwrap().accept().unwrap();
    assert_eq!(
        identify(&stream, TenantId(21), f.host.cgroups()).unwrap(),
        p
    );
    let _ = late.kill();
    let _ = late.wait();
    sockets.clear();
    assert!(matches!(
        next_event(&mut f.host, p),
        HostEvent::Adopted { .. }
    ));
    kill_expecting(
        &mut f.host,
        p,
        Signal::Kill,
        ExitStatus::Signaled(libc::SIGKILL),
    );
    // Its holder ended with its last process (no linger here): its socket is gone.
    let gone: Vec<(TenantId, bool)> = f
        .host
        .take_listeners()
        .into_iter()
        .map(|(t, l)| (t, l.is_some()))
        .collect();
    assert_eq!(gone, vec![(TenantId(21), false)]);
    assert_clean(&f);
}

#[test]
fn bad_specs_are_rejected_with_the_right_reason() {
    if !root() {
        return;
    }
    let mut f = fixture("bad");
    // The executables are looked up in the tenant's view: its data directory is /data.
    let data = f.host.tenant_data_dir(TenantId(30));
    std::fs::create_dir_all(&data).unwrap();
    let text = data.join("text");
    std::fs::write(&text, "just words").unwrap();
    let plain = data.join("plain");
    std::fs::write(&plain, "#!/bin/sh\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&text, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cases = [
        (
            spec(&["/nonexistent/binary"], Limits::default()),
            StartFailure::NotFound,
        ),
        (
            spec(&["/data/plain"], Limits::default()),
            StartFailure::NotExecutable,
        ),
        (
            spec(&["/data/text"], Limits::default()),
            StartFailure::NotExecutable,
        ),
        (
            spec(&["/tmp"], Limits::default()),
            StartFailure::NotExecutable,
        ),
        (
            spec(&["bin/true"], Limits::default()),
            StartFailure::InvalidSpec,
        ),
        (
            ProcSpec {
                envp: vec!["NOEQUALS".into()],
                ..spec(&["/bin/true"], Limits::default())
            },
            StartFailure::InvalidSpec,
        ),
        (
            spec(&["/bin/true", "a\0b"], Limits::default()),
            StartFailure::InvalidSpec,
        ),
    ];
    for (i, (s, want)) in cases.into_iter().enumerate() {
        let p = pid(i as u64 + 1);
        f.host
            .execute(HostCommand::Start {
                pid: p,
                tenant: TenantId(30),
                spec: s,
            })
            .unwrap();
        match next_event(&mut f.host, p) {
            HostEvent::StartFailed { reason, detail, .. } => {
                assert_eq!(reason, want, "case {i}: {detail}")
            }
            other => panic!("case {i}: expected StartFailed, got {other:?}"),
        }
    }
    assert_eq!(f.host.holder(TenantId(30)), None);
    assert_clean(&f);
}

/// Makes a copy of this test binary, re-executed by [`start_orphan`], play its part
/// (named by this variable) instead of running the test.
const ROLE: &str = "NEFELE_TEST_ROLE";
/// What the reaper prints once the agent that started the orphan has exited.
const AGENT_GONE: &str = "nefele-test: agent gone";

/// In a copy of this test binary started by [`start_orphan`]: plays its part, then
/// exits (never returns). In the test itself: does nothing.
fn play_role_if_asked() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let var = |name: &str| std::env::var(name).unwrap();
    match role.as_str() {
        // A subreaper that is not the test process: the orphan's new parent.
        "reaper" => {
            nix::sys::prctl::set_child_subreaper(true).unwrap();
            let agent = Command::new(std::env::current_exe().unwrap())
                .args(std::env::args().skip(1))
                .env(ROLE, "agent")
                .stdout(Stdio::null())
                .status()
                .unwrap();
            assert!(agent.success(), "agent failed: {agent}");
            // Straight to the pipe: the test harness captures `println!`.
            let mut out = std::io::stdout();
            writeln!(out, "{AGENT_GONE}")
                .and_then(|()| out.flush())
                .unwrap();
            // A lazy parent reaps only once told to (by a file appearing).
            if let Ok(go) = std::env::var("NEFELE_TEST_REAP_WHEN") {
                while !Path::new(&go).exists() {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            // Reap the orphan (and the tenant's holder) until none is left.
            while nix::sys::wait::wait().is_ok() {}
        }
        // A first agent: starts the process, then exits as a crashed agent would.
        "agent" => {
            let dir = PathBuf::from(var("NEFELE_TEST_DATA"));
            let mut config = test_config(&dir, "unused");
            config.cgroup_name = var("NEFELE_TEST_CGROUP");
            let mut host = LinuxHost::open(config).unwrap();
            start(&mut host, pid(1), 40, sh(&var("NEFELE_TEST_SCRIPT")));
        }
        other => panic!("unknown {ROLE} {other:?}"),
    }
    std::process::exit(0);
}

/// Plays a helper role and exits if this run was started as one; otherwise whether
/// this test can run here: root (else fails under CI), and a kernel that reports an
/// adopted process's exit status (else skipped, a property of the machine).
fn adoption_test_runs() -> bool {
    play_role_if_asked();
    root() && adopted_exit_status()
}

/// Whether this kernel reports an adopted process's exit status (else the test is
/// recorded as skipped).
fn adopted_exit_status() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    nefele_test_support::machine_has(
        nefele_host_linux::sys::adopted_exit_status_supported(),
        &format!(
            "a kernel that reports exit status through pidfds (PIDFD_INFO_EXIT, Linux 6.15+; \
             this one is {})",
            release.trim()
        ),
    )
}

/// Starts `script` as `pid(1)` of tenant 40 through an adapter in another process,
/// under a subreaper that is neither that adapter nor this test process, and returns
/// that subreaper once the adapter has exited. The script's process is then an
/// orphan that the subreaper reaps when it ends: an adapter in this process cannot
/// `wait4` it and learns how it ended from its pidfd only.
/// With `reap_when`, the subreaper reaps nothing until that file exists.
fn start_orphan(test: &str, config: &Config, script: &str, reap_when: Option<&Path>) -> Child {
    let mut reaper = Command::new(std::env::current_exe().unwrap());
    reaper
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE, "reaper")
        .env("NEFELE_TEST_DATA", &config.data_dir)
        .env("NEFELE_TEST_CGROUP", &config.cgroup_name)
        .env("NEFELE_TEST_SCRIPT", script)
        .stdout(Stdio::piped());
    if let Some(file) = reap_when {
        reaper.env("NEFELE_TEST_REAP_WHEN", file);
    }
    let mut reaper = reaper.spawn().unwrap();
    let out = std::io::BufReader::new(reaper.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // The harness's own output may precede the mark on its line.
        let gone = out
            .lines()
            .map_while(Result::ok)
            .any(|l| l.ends_with(AGENT_GONE));
        let _ = tx.send(gone);
    });
    if rx.recv_timeout(Duration::from_secs(20)) != Ok(true) {
        let _ = reaper.kill();
        let _ = reaper.wait();
        panic!("the first agent did not start the process");
    }
    reaper
}

/// Waits (up to 5 s) for the reaper to exit, which it does once it has reaped
/// everything the first agent left behind.
fn reaper_done(mut reaper: Child) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Some(status) = reaper.try_wait().unwrap() {
            assert!(status.success(), "reaper: {status}");
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = reaper.kill();
    let _ = reaper.wait();
    panic!("the reaper still has children after 5 s");
}

/// The parent pid of `os_pid` (field 4 of /proc/<pid>/stat).
fn parent_of(os_pid: i32) -> i32 {
    let stat = read(Path::new(&format!("/proc/{os_pid}/stat")));
    let after_comm = &stat[stat.rfind(')').unwrap() + 1..];
    after_comm
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap()
}

/// Starts `script` (after waiting for a file) as an orphan, re-adopts it in a new
/// adapter, lets it go on, and returns how that adapter reports its end and how
/// long after letting it go. With `lazy_parent`, the orphan's parent reaps it only
/// after that report.
fn adopted_orphan_ends(
    test: &str,
    name: &str,
    script: &str,
    lazy_parent: bool,
) -> (ExitStatus, Duration) {
    let _alone = timing_sensitive();
    let dir = tempfile::tempdir().unwrap();
    let config = test_config(dir.path(), name);
    let guard = PanicCleanup(config.clone());
    // The tenant's data directory, /data in its view (made by its first start).
    let go = dir.path().join("tenants/t40/go");
    let script = format!("while [ ! -e /data/go ]; do sleep 0.02; done; {script}");
    let reap_when = dir.path().join("reap");
    let reaper = start_orphan(test, &config, &script, lazy_parent.then_some(&*reap_when));
    let mut f = Fixture {
        host: LinuxHost::open(config.clone()).unwrap(),
        config,
        _guard: guard,
        _dir: dir,
    };
    match next_event(&mut f.host, pid(1)) {
        HostEvent::Adopted { tenant, .. } => assert_eq!(tenant, TenantId(40)),
        other => panic!("expected Adopted, got {other:?}"),
    }
    let os_pid = f.host.os_pid(pid(1)).expect("re-adopted while running");
    assert_eq!(
        parent_of(os_pid),
        reaper.id() as i32,
        "the subreaper, not this process, is its parent"
    );
    let t0 = Instant::now();
    std::fs::write(&go, "").unwrap();
    let status = exit_of(&mut f.host, pid(1)).0;
    let took = t0.elapsed();
    std::fs::write(&reap_when, "").unwrap();
    reaper_done(reaper);
    assert_clean(&f);
    (status, took)
}

#[test]
fn an_adopted_process_that_exits_is_reported_with_its_exit_code() {
    let test = "an_adopted_process_that_exits_is_reported_with_its_exit_code";
    if !adoption_test_runs() {
        return;
    }
    let (status, _) = adopted_orphan_ends(test, "orphan-code", "exit 7", false);
    assert_eq!(status, ExitStatus::Code(7));
}

#[test]
fn an_adopted_process_killed_by_a_signal_is_reported_with_the_signal() {
    let test = "an_adopted_process_killed_by_a_signal_is_reported_with_the_signal";
    if !adoption_test_runs() {
        return;
    }
    let script = "kill -TERM $$; sleep 5";
    let (status, _) = adopted_orphan_ends(test, "orphan-signal", script, false);
    assert_eq!(status, ExitStatus::Signaled(libc::SIGTERM));
}

#[test]
fn an_adopted_process_its_parent_does_not_reap_is_reported_lost_after_a_bounded_wait() {
    let test = "an_adopted_process_its_parent_does_not_reap_is_reported_lost_after_a_bounded_wait";
    if !adoption_test_runs() {
        return;
    }
    let (status, took) = adopted_orphan_ends(test, "orphan-lazy", "exit 7", true);
    assert_eq!(status, ExitStatus::Lost);
    let wait = nefele_host_linux::sys::ADOPTED_REAP_WAIT;
    assert!(
        took >= wait && took < wait + Duration::from_secs(2),
        "reported after {took:?}, not after about {wait:?}"
    );
}

/// The agent starts processes while its other threads come and go (a tokio runtime
/// does): the start path must not wait on a thread the agent was creating at the
/// moment of the clone. glibc's id-changing wrappers did (nptl's setxid broadcast
/// over the thread list the child copied), and the child hung; a start that does
/// not report within 10 s fails the test.
#[test]
fn processes_start_while_the_agent_creates_threads() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    if !root() {
        return;
    }
    let _alone = timing_sensitive();
    let mut f = fixture("threads");
    let stop = Arc::new(AtomicBool::new(false));
    let churn = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            for _ in 0..1_000_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                std::thread::spawn(|| {}).join().unwrap();
            }
        })
    };
    for n in 1..=100 {
        let p = pid(n);
        start(&mut f.host, p, 1, sh("exit 0"));
        assert_eq!(exit_of(&mut f.host, p).0, ExitStatus::Code(0));
    }
    stop.store(true, Ordering::Relaxed);
    churn.join().unwrap();
    assert_clean(&f);
}

/// Held by the adoption tests, which time how soon an orphan's exit is reported,
/// and by the thread-churn test, which keeps a core busy creating threads: they
/// must not overlap (the churn could delay the reaper past the adapter's bounded wait).
fn timing_sensitive() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
