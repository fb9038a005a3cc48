//! The adapter's decisions, over the recording syscall double and fake or absent
//! cgroups: no root needed.

use nefele_core::host::{ExitStatus, Limits, ResourcePolicy, Signal, StartFailure};
use nefele_core::{Host, HostCommand, HostEvent, Incarnation, NodeId, Pid, ProcSpec, TenantId};
use nefele_host_linux::cgroup::{parse_self_cgroup, parse_v1_mounts, ProcCgroup};
use nefele_host_linux::sys::{Reaped, Rusage, SysError};
use nefele_host_linux::testing::{Call, RecordingSys};
use nefele_host_linux::{state, Cgroups, Config, LinuxHost};
use nix::errno::Errno;
use std::path::Path;
use std::time::Duration;

fn pid(n: u64) -> Pid {
    Pid::new(NodeId(1), Incarnation(1), n)
}

fn true_spec(limits: Limits) -> ProcSpec {
    ProcSpec {
        path: "/bin/true".into(),
        resources: ResourcePolicy {
            cpu_millicores: Some(500),
            memory_bytes: Some(1 << 20),
            limits,
            ..Default::default()
        },
        ..Default::default()
    }
}

fn host(dir: &tempfile::TempDir, sys: RecordingSys) -> LinuxHost<RecordingSys> {
    let mut config = Config::new(dir.path());
    config.kill_grace = Duration::ZERO;
    config.tenant_linger = Duration::ZERO;
    LinuxHost::with(config, sys, Cgroups::none()).unwrap()
}

fn start(h: &mut LinuxHost<RecordingSys>, p: Pid, tenant: u32) {
    h.execute(HostCommand::Start {
        pid: p,
        tenant: TenantId(tenant),
        spec: true_spec(Limits::default()),
    })
    .unwrap();
}

/// All pending events except resource reports.
fn drain(h: &mut LinuxHost<RecordingSys>) -> Vec<HostEvent> {
    std::iter::from_fn(|| h.poll_event())
        .filter(|e| !matches!(e, HostEvent::Resources(_)))
        .collect()
}

fn sys(h: &mut LinuxHost<RecordingSys>) -> &mut RecordingSys {
    h.sys_mut()
}

#[test]
fn start_is_idempotent_and_a_tenant_shares_one_holder_until_its_last_process() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = host(&dir, RecordingSys::new());
    start(&mut h, pid(1), 7);
    start(&mut h, pid(1), 7);
    start(&mut h, pid(2), 7);
    assert_eq!(
        drain(&mut h),
        vec![
            HostEvent::Started { pid: pid(1) },
            HostEvent::Started { pid: pid(2) }
        ]
    );
    let holder = h.holder(TenantId(7)).unwrap();
    let calls = sys(&mut h).calls.clone();
    assert_eq!(
        calls
            .iter()
            .filter(|c| matches!(c, Call::SpawnHolder(_)))
            .count(),
        1
    );
    assert_eq!(calls[0], Call::SpawnHolder("nefele-t7".into()));
    assert_eq!(
        calls
            .iter()
            .filter(|c| matches!(c, Call::Spawn { holder: x, .. } if *x == holder))
            .count(),
        2
    );

    let usage = Rusage {
        cpu_time: Duration::from_millis(3),
        max_rss_bytes: 4096,
    };
    let os1 = h.os_pid(pid(1)).unwrap();
    sys(&mut h).end(os1, Reaped::Code(0, usage));
    let events = drain(&mut h);
    assert!(
        matches!(events[..], [HostEvent::Exited { status: ExitStatus::Code(0), usage: u, .. }] if u.cpu_time == usage.cpu_time && u.peak_memory_bytes == 4096)
    );
    assert!(
        !sys(&mut h).calls.contains(&Call::EndHolder(holder)),
        "tenant still has a process"
    );
    let os2 = h.os_pid(pid(2)).unwrap();
    sys(&mut h).end(os2, Reaped::Signaled(libc::SIGSEGV, Rusage::default()));
    assert!(matches!(
        drain(&mut h)[..],
        [HostEvent::Exited {
            status: ExitStatus::Signaled(libc::SIGSEGV),
            ..
        }]
    ));
    assert!(sys(&mut h).calls.contains(&Call::EndHolder(holder)));
    assert_eq!(h.holder(TenantId(7)), None);
    start(&mut h, pid(1), 7);
    assert!(
        drain(&mut h).is_empty(),
        "a pid that ran is not started again"
    );
}

#[test]
fn a_refused_syscall_is_reported_with_its_name_and_nothing_is_left() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = RecordingSys::new();
    s.fail_next_spawn = Some(SysError {
        op: "setns(CLONE_NEWNET)".into(),
        errno: Errno::EPERM,
    });
    let mut h = host(&dir, s);
    start(&mut h, pid(1), 3);
    match &drain(&mut h)[..] {
        [HostEvent::StartFailed {
            reason: StartFailure::PermissionDenied,
            detail,
            ..
        }] => {
            assert!(
                detail.contains("setns(CLONE_NEWNET)") && detail.contains("EPERM"),
                "{detail}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(
        sys(&mut h)
            .calls
            .iter()
            .any(|c| matches!(c, Call::EndHolder(_))),
        "holder released"
    );
    assert_eq!(h.holder(TenantId(3)), None);

    sys(&mut h).fail_next_holder = Some(SysError {
        op: "clone(CLONE_NEWPID|NEWNS|NEWUTS|NEWIPC|NEWNET)".into(),
        errno: Errno::EAGAIN,
    });
    start(&mut h, pid(2), 3);
    assert!(matches!(
        drain(&mut h)[..],
        [HostEvent::StartFailed {
            reason: StartFailure::Exhausted,
            ..
        }]
    ));
}

#[test]
fn limits_without_a_controller_are_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = host(&dir, RecordingSys::new());
    let spec = true_spec(Limits {
        memory_bytes: Some(1 << 20),
        ..Default::default()
    });
    h.execute(HostCommand::Start {
        pid: pid(1),
        tenant: TenantId(1),
        spec,
    })
    .unwrap();
    match &drain(&mut h)[..] {
        [HostEvent::StartFailed {
            reason: StartFailure::LimitUnenforceable,
            detail,
            ..
        }] => {
            assert!(
                detail.contains("Memory") && detail.contains("memory controller"),
                "{detail}"
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(sys(&mut h).calls.is_empty());
    assert_eq!(h.support().unenforceable.len(), 3);
    // The host says so in its resources, so placement sends it no process that
    // asks for a limit (and the client gets a typed spawn error instead).
    let all = nefele_core::host::LimitKinds {
        cpu: true,
        memory: true,
        pids: true,
    };
    assert_eq!(h.resources().unenforced, all);
}

#[test]
fn terminate_escalates_to_sigkill_after_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = host(&dir, RecordingSys::new());
    start(&mut h, pid(1), 1);
    drain(&mut h);
    let os = h.os_pid(pid(1)).unwrap();
    h.execute(HostCommand::Kill {
        pid: pid(1),
        signal: Signal::Terminate,
    })
    .unwrap();
    h.execute(HostCommand::Kill {
        pid: pid(9),
        signal: Signal::Kill,
    })
    .unwrap();
    h.execute(HostCommand::Kill {
        pid: pid(1),
        signal: Signal::Raw(99),
    })
    .unwrap();
    drain(&mut h);
    let calls = sys(&mut h).calls.clone();
    let tree: Vec<_> = calls
        .iter()
        .filter(|c| matches!(c, Call::SignalTree(..)))
        .collect();
    assert_eq!(
        tree,
        vec![
            &Call::SignalTree(os, libc::SIGTERM),
            &Call::SignalTree(os, libc::SIGKILL)
        ]
    );
}

/// The thread that carries out commands sleeps in `wait_event` while nothing
/// happens; a command queued meanwhile rings the doorbell, which ends the wait
/// then rather than at its timeout (an hour here).
#[test]
fn a_rung_doorbell_ends_a_wait_for_events() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = host(&dir, RecordingSys::new());
    while h.poll_event().is_some() {}
    let bell = h.doorbell();
    let ringer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        bell.ring();
    });
    assert!(h.wait_event(Duration::from_secs(3600)).is_none());
    ringer.join().unwrap();
}

#[test]
fn commitments_follow_running_processes() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = host(&dir, RecordingSys::new());
    start(&mut h, pid(1), 1);
    start(&mut h, pid(2), 2);
    let r = h.resources();
    assert_eq!(
        (r.committed_cpu_millicores, r.committed_memory_bytes),
        (1000, 2 << 20)
    );
    let events: Vec<_> = std::iter::from_fn(|| h.poll_event()).collect();
    assert!(
        matches!(events.last(), Some(HostEvent::Resources(r)) if r.committed_cpu_millicores == 1000)
    );
}

#[test]
fn a_new_adapter_readopts_live_processes_and_reports_the_ones_that_ended() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = host(&dir, RecordingSys::new());
    start(&mut h, pid(1), 1);
    start(&mut h, pid(2), 1);
    start(&mut h, pid(3), 2);
    drain(&mut h);
    let (os1, os3) = (h.os_pid(pid(1)).unwrap(), h.os_pid(pid(3)).unwrap());
    let old = std::mem::take(&mut sys(&mut h).alive);
    drop(h);

    // After the restart: tenant 1's holder and process 1 live on; process 2 ended
    // while no adapter watched; tenant 2's holder and process 3 are gone.
    let mut s = RecordingSys::new();
    let holder1 = old.keys().copied().min().unwrap();
    for p in [holder1, os1] {
        s.alive.insert(p, old[&p]);
    }
    let mut h = host(&dir, s);
    // Every recorded process is adopted (with its command), before any Exited of it.
    let mut adopted = Vec::new();
    let mut ended = Vec::new();
    for e in drain(&mut h) {
        match e {
            HostEvent::Adopted {
                pid,
                tenant,
                command,
                ..
            } => {
                assert!(
                    !ended.iter().any(|(p, _)| *p == pid),
                    "Exited before Adopted"
                );
                assert_eq!(command, "/bin/true");
                adopted.push((pid, tenant));
            }
            HostEvent::Exited { pid, status, .. } => ended.push((pid, status)),
            other => panic!("{other:?}"),
        }
    }
    adopted.sort();
    assert_eq!(
        adopted,
        vec![
            (pid(1), TenantId(1)),
            (pid(2), TenantId(1)),
            (pid(3), TenantId(2))
        ]
    );
    ended.sort_by_key(|(p, _)| *p);
    assert_eq!(
        ended,
        vec![(pid(2), ExitStatus::Lost), (pid(3), ExitStatus::Lost)]
    );
    assert_eq!(h.os_pid(pid(1)), Some(os1));
    assert_eq!(h.holder(TenantId(1)), Some(holder1));
    assert_eq!(h.holder(TenantId(2)), None);
    assert!(
        !sys(&mut h).calls.contains(&Call::Adopt(os3)),
        "not adopted into a dead tenant"
    );
    // The adopted process ends: not our child, so its status is unknown.
    sys(&mut h).end(os1, Reaped::Code(0, Rusage::default()));
    assert!(matches!(
        drain(&mut h)[..],
        [HostEvent::Exited {
            status: ExitStatus::Lost,
            ..
        }]
    ));
    assert!(sys(&mut h).calls.contains(&Call::EndHolder(holder1)));
}

#[test]
fn an_adopted_process_ends_with_its_real_status_where_the_kernel_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = host(&dir, RecordingSys::new());
    for n in 1..=3 {
        start(&mut h, pid(n), 1);
    }
    drain(&mut h);
    let os: Vec<i32> = (1..=3).map(|n| h.os_pid(pid(n)).unwrap()).collect();
    let old = std::mem::take(&mut sys(&mut h).alive);
    drop(h);

    // Linux 6.15+: the pidfd of an adopted process tells how it ended.
    let mut s = RecordingSys::new();
    s.alive = old;
    s.foreign_exit_status = true;
    let mut h = host(&dir, s);
    assert_eq!(drain(&mut h).len(), 3, "three Adopted");
    let usage = Rusage {
        cpu_time: Duration::from_millis(5),
        max_rss_bytes: 8192,
    };
    sys(&mut h).end(os[0], Reaped::Code(7, usage));
    sys(&mut h).end(os[1], Reaped::Signaled(libc::SIGTERM, Rusage::default()));
    sys(&mut h).end(os[2], Reaped::Unknown);
    let mut ended: Vec<(Pid, ExitStatus)> = drain(&mut h)
        .into_iter()
        .map(|e| match e {
            HostEvent::Exited { pid, status, .. } => (pid, status),
            other => panic!("{other:?}"),
        })
        .collect();
    ended.sort_by_key(|(p, _)| *p);
    assert_eq!(
        ended,
        vec![
            (pid(1), ExitStatus::Code(7)),
            (pid(2), ExitStatus::Signaled(libc::SIGTERM)),
            // Not reaped by its new parent in time, or reaped on an older kernel.
            (pid(3), ExitStatus::Lost),
        ]
    );
}

#[test]
fn a_corrupt_state_file_of_this_boot_is_a_typed_error() {
    let this_boot = state::boot_path(Path::new(""), RecordingSys::FIRST_BOOT).unwrap();
    // This boot's file, and the file of agents from before per-boot state (read
    // as this boot's).
    for name in [this_boot.to_str().unwrap(), "host-state.json"] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(name), "{not json").unwrap();
        let err = LinuxHost::with(
            Config::new(dir.path()),
            RecordingSys::new(),
            Cgroups::none(),
        )
        .unwrap_err();
        assert!(
            matches!(err, nefele_host_linux::HostError::CorruptState { .. }),
            "{name}: {err}"
        );
    }
}

/// After a power loss: the state file of the earlier boot may be torn. It is
/// skipped (the agent starts) and deleted.
#[test]
fn a_torn_state_file_of_an_earlier_boot_is_skipped_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let old = state::boot_path(dir.path(), RecordingSys::FIRST_BOOT).unwrap();
    std::fs::write(&old, "{\"holders\":[],\"procs\":[{\"pid\":").unwrap();
    let mut s = RecordingSys::new();
    s.boot_id = "0b00-2".into();
    let mut h = host(&dir, s);
    assert_eq!(drain(&mut h), Vec::new());
    assert!(!old.exists(), "the earlier boot's file is deleted");
    assert!(state::boot_path(dir.path(), "0b00-2").unwrap().exists());
}

/// After a reboot no process of the earlier boot runs: each record is reported
/// ended, never adopted, even where a process of the new boot has the same host
/// pid and start time (the pid-reuse guard cannot tell boots apart).
#[test]
fn processes_of_an_earlier_boot_are_reported_lost_and_never_adopted() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = host(&dir, RecordingSys::new());
    start(&mut h, pid(1), 1);
    start(&mut h, pid(2), 2);
    drain(&mut h);
    let alive = std::mem::take(&mut sys(&mut h).alive);
    drop(h);

    let mut s = RecordingSys::new();
    s.boot_id = "0b00-2".into();
    s.alive = alive;
    let mut h = host(&dir, s);
    let events = drain(&mut h);
    let adopted: Vec<Pid> = events
        .iter()
        .filter_map(|e| match e {
            HostEvent::Adopted { pid, .. } => Some(*pid),
            _ => None,
        })
        .collect();
    let lost: Vec<Pid> = events
        .iter()
        .filter_map(|e| match e {
            HostEvent::Exited {
                pid,
                status: ExitStatus::Lost,
                ..
            } => Some(*pid),
            _ => None,
        })
        .collect();
    assert_eq!(adopted, vec![pid(1), pid(2)], "{events:?}");
    assert_eq!(lost, vec![pid(1), pid(2)], "{events:?}");
    assert_eq!(events.len(), 4, "{events:?}");
    assert!(
        !sys(&mut h)
            .calls
            .iter()
            .any(|c| matches!(c, Call::Adopt(_))),
        "nothing of another boot is adopted"
    );
    assert_eq!(h.holder(TenantId(1)), None);
    assert!(!state::boot_path(dir.path(), RecordingSys::FIRST_BOOT)
        .unwrap()
        .exists());
    // A second restart in the new boot reports nothing again.
    drop(h);
    let mut s = RecordingSys::new();
    s.boot_id = "0b00-2".into();
    let mut h = host(&dir, s);
    assert_eq!(drain(&mut h), Vec::new());
}

/// An agent upgraded while its processes run: the state file of agents from
/// before per-boot state is read as this boot's (its processes re-adopted), then
/// replaced by this boot's file.
#[test]
fn a_state_file_from_before_per_boot_state_is_taken_as_this_boots() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = host(&dir, RecordingSys::new());
    start(&mut h, pid(1), 1);
    drain(&mut h);
    let os1 = h.os_pid(pid(1)).unwrap();
    let alive = std::mem::take(&mut sys(&mut h).alive);
    drop(h);
    let this_boot = state::boot_path(dir.path(), RecordingSys::FIRST_BOOT).unwrap();
    let legacy = dir.path().join("host-state.json");
    std::fs::rename(&this_boot, &legacy).unwrap();

    let mut s = RecordingSys::new();
    s.alive = alive;
    let mut h = host(&dir, s);
    assert!(matches!(drain(&mut h)[..], [HostEvent::Adopted { .. }]));
    assert_eq!(h.os_pid(pid(1)), Some(os1));
    assert!(!legacy.exists() && this_boot.exists());
}

/// Regression: a record that ended while the agent was down, whose host pid the
/// kernel has given since to another recorded process, took that process's entry
/// with it when it was cleaned up, so the live process's end was never reported.
#[test]
fn a_dead_record_does_not_take_the_host_pid_of_a_live_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = host(&dir, RecordingSys::new());
    start(&mut h, pid(1), 1);
    start(&mut h, pid(2), 1);
    drain(&mut h);
    let os1 = h.os_pid(pid(1)).unwrap();
    let alive = std::mem::take(&mut sys(&mut h).alive);
    drop(h);
    // pid 2 ended; its host pid went to pid 1 (written after it: pid order).
    let path = state::boot_path(dir.path(), RecordingSys::FIRST_BOOT).unwrap();
    let mut saved = state::load(&path).unwrap();
    saved.procs[1].os_pid = os1;
    saved.procs[1].start_ticks = 1;
    state::save(&path, &saved).unwrap();

    let mut s = RecordingSys::new();
    s.alive = alive;
    let mut h = host(&dir, s);
    drain(&mut h);
    assert_eq!(h.os_pid(pid(1)), Some(os1));
    sys(&mut h).end(os1, Reaped::Code(0, Rusage::default()));
    assert!(
        matches!(drain(&mut h)[..], [HostEvent::Exited { pid: p, .. }] if p == pid(1)),
        "the live process's end is reported"
    );
}

#[test]
fn the_v2_path_writes_limits_and_reads_usage_in_a_fake_cgroupfs() {
    let root = tempfile::tempdir().unwrap();
    let base = root.path().join("nefele");
    let cg = Cgroups::v2(base.clone(), "cpuset cpu io memory pids");
    assert!(cg.support().v2 && cg.support().unenforceable.is_empty());
    let limits = Limits {
        cpu_millicores: Some(250),
        memory_bytes: Some(1 << 30),
        pids: Some(64),
    };
    let tenant_limits = Limits {
        cpu_millicores: Some(2000),
        ..Default::default()
    };
    let proc_cg = cg
        .create(TenantId(5), "p1", &limits, &tenant_limits)
        .unwrap();
    let dir = base.join("t5/p1");
    assert_eq!(proc_cg, ProcCgroup::V2(dir.clone()));
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap();
    assert_eq!(
        read(&root.path().join("cgroup.subtree_control")),
        "+cpu +memory +pids"
    );
    assert_eq!(
        read(&base.join("t5/cgroup.subtree_control")),
        "+cpu +memory +pids"
    );
    assert_eq!(read(&base.join("t5/cpu.max")), "200000 100000");
    assert_eq!(read(&dir.join("cpu.max")), "25000 100000");
    assert_eq!(read(&dir.join("memory.max")), (1u64 << 30).to_string());
    assert_eq!(read(&dir.join("pids.max")), "64");
    assert_eq!(
        Cgroups::procs_files(&proc_cg),
        vec![dir.join("cgroup.procs")]
    );

    std::fs::write(dir.join("cpu.stat"), "usage_usec 1500\nuser_usec 1000\n").unwrap();
    std::fs::write(dir.join("memory.peak"), "123456\n").unwrap();
    std::fs::write(dir.join("memory.events"), "low 0\noom 1\noom_kill 1\n").unwrap();
    std::fs::write(dir.join("cgroup.procs"), "42\n43\n").unwrap();
    let stats = Cgroups::stats(&proc_cg);
    assert_eq!(stats.cpu_time, Some(Duration::from_micros(1500)));
    assert_eq!(
        (stats.peak_memory_bytes, stats.oom_kills),
        (Some(123456), 1)
    );
    assert_eq!(Cgroups::members(&proc_cg), vec![42, 43]);
    assert_eq!(cg.existing().len(), 1);

    // A real cgroupfs drops control files with the directory; the fake needs help.
    for d in [&dir, &base.join("t5"), &base] {
        for e in std::fs::read_dir(d)
            .unwrap()
            .flatten()
            .filter(|e| e.path().is_file())
        {
            std::fs::remove_file(e.path()).unwrap();
        }
    }
    cg.remove(&proc_cg).unwrap();
    cg.remove_tenant(TenantId(5)).unwrap();
    cg.remove_base_if_empty();
    assert!(!base.exists());
}

#[test]
fn v2_without_a_memory_controller_refuses_memory_limits() {
    let root = tempfile::tempdir().unwrap();
    let cg = Cgroups::v2(root.path().join("n"), "hugetlb");
    let err = cg
        .check(&Limits {
            memory_bytes: Some(1),
            ..Default::default()
        })
        .unwrap_err();
    assert!(err.why.contains("memory"), "{err}");
    assert!(cg.check(&Limits::default()).is_ok());
}

#[test]
fn v1_mounts_and_own_cgroups_are_parsed() {
    let mountinfo = "\
30 25 0:26 / /sys/fs/cgroup ro - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
33 30 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
34 30 0:30 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
35 30 0:31 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd
";
    let mounts = parse_v1_mounts(mountinfo);
    assert_eq!(mounts.len(), 2);
    assert_eq!(mounts[0].1, vec!["cpu".to_owned(), "cpuacct".to_owned()]);
    let own = parse_self_cgroup(
        "12:name=systemd:/x\n4:memory:/agents/a\n3:cpu,cpuacct:/\n0::/init.scope\n",
    );
    assert_eq!(own.get("memory").map(String::as_str), Some("/agents/a"));
    assert_eq!(own.get("cpu,cpuacct").map(String::as_str), Some("/"));
    assert_eq!(own.get("").map(String::as_str), Some("/init.scope"));
}

#[test]
fn an_idle_tenant_keeps_its_holder_for_the_linger_time_then_loses_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(dir.path());
    config.tenant_linger = Duration::from_millis(100);
    let mut h = LinuxHost::with(config, RecordingSys::new(), Cgroups::none()).unwrap();
    let holders = |h: &mut LinuxHost<RecordingSys>| {
        sys(h)
            .calls
            .iter()
            .filter(|c| matches!(c, Call::SpawnHolder(_)))
            .count()
    };
    start(&mut h, pid(1), 7);
    let holder = h.holder(TenantId(7)).unwrap();
    let os1 = h.os_pid(pid(1)).unwrap();
    sys(&mut h).end(os1, Reaped::Code(0, Rusage::default()));
    drain(&mut h);
    assert_eq!(h.holder(TenantId(7)), Some(holder), "kept while lingering");

    // The next process of the tenant joins the lingering holder.
    start(&mut h, pid(2), 7);
    assert_eq!(holders(&mut h), 1);
    let os2 = h.os_pid(pid(2)).unwrap();
    sys(&mut h).end(os2, Reaped::Code(0, Rusage::default()));
    drain(&mut h);
    assert!(!sys(&mut h).calls.contains(&Call::EndHolder(holder)));

    // Once idle for the linger time, the holder is ended (wait_event wakes for it).
    assert!(h.wait_event(Duration::from_millis(300)).is_none());
    assert!(sys(&mut h).calls.contains(&Call::EndHolder(holder)));
    assert_eq!(h.holder(TenantId(7)), None);
}

#[test]
fn a_process_without_limits_gets_its_reservation_and_the_default_pids_limit() {
    let dir = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let base = root.path().join("nefele");
    let mut config = Config::new(dir.path());
    config.tenant_linger = Duration::from_secs(60);
    let cg = Cgroups::v2(base.clone(), "cpu memory pids");
    let mut h = LinuxHost::with(config, RecordingSys::new(), cg).unwrap();
    // Reserves 500m and 1 MiB (true_spec), sets no limit.
    start(&mut h, pid(1), 6);
    // Sets its own memory and pids limits: those win.
    let own = Limits {
        memory_bytes: Some(4 << 20),
        pids: Some(8),
        ..Default::default()
    };
    h.execute(HostCommand::Start {
        pid: pid(2),
        tenant: TenantId(6),
        spec: true_spec(own),
    })
    .unwrap();
    assert_eq!(drain(&mut h).len(), 2, "both started");
    let read = |p: &str| std::fs::read_to_string(base.join(p)).unwrap();
    let p1 = format!("t6/p{}", pid(1));
    assert_eq!(read(&format!("{p1}/cpu.max")), "50000 100000");
    assert_eq!(read(&format!("{p1}/memory.max")), (1u64 << 20).to_string());
    assert_eq!(
        read(&format!("{p1}/pids.max")),
        nefele_host_linux::adapter::DEFAULT_PIDS.to_string()
    );
    let p2 = format!("t6/p{}", pid(2));
    assert_eq!(read(&format!("{p2}/cpu.max")), "50000 100000");
    assert_eq!(read(&format!("{p2}/memory.max")), (4u64 << 20).to_string());
    assert_eq!(read(&format!("{p2}/pids.max")), "8");
}

#[test]
fn a_process_that_cannot_be_recorded_is_killed_and_reported_not_started() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = host(&dir, RecordingSys::new());
    // The state file's temporary file cannot be written: a directory is in its way.
    let blocker = state::boot_path(dir.path(), RecordingSys::FIRST_BOOT)
        .unwrap()
        .with_extension("tmp");
    std::fs::create_dir(&blocker).unwrap();
    let result = h.execute(HostCommand::Start {
        pid: pid(1),
        tenant: TenantId(4),
        spec: true_spec(Limits::default()),
    });
    assert!(result.is_err(), "the failed save is the host's error too");
    match &drain(&mut h)[..] {
        [HostEvent::StartFailed {
            reason: StartFailure::Other,
            detail,
            ..
        }] => assert!(detail.contains("could not record"), "{detail}"),
        other => panic!("expected StartFailed only, got {other:?}"),
    }
    let os_pid = h.os_pid(pid(1)).expect("still tracked until it is reaped");
    assert!(
        sys(&mut h)
            .calls
            .contains(&Call::Signal(os_pid, libc::SIGKILL)),
        "the unrecorded process is killed"
    );
    std::fs::remove_dir(&blocker).unwrap();
    sys(&mut h).end(os_pid, Reaped::Signaled(libc::SIGKILL, Rusage::default()));
    assert!(drain(&mut h).is_empty(), "its end is not reported");
    assert_eq!(h.os_pid(pid(1)), None);
    start(&mut h, pid(2), 4);
    assert_eq!(drain(&mut h), vec![HostEvent::Started { pid: pid(2) }]);
}
