//! A process started by Nefele on a real Linux host (as root: namespaces and
//! cgroups) keeps messaging across a crash of its agent: the agent runs in a
//! child process (this test binary again, running [`agent_child`]), is
//! SIGKILLed and started again in its data directory, re-adopts the processes,
//! and they reach it again through their tenant's agent socket
//! (host-linux's `agent_socket` module, libnefele's `reconnect`).
//!
//! The processes run `nef` itself, copied into the tenant's data directory
//! (`/data` in their view): a subscriber (`nef sub`, one long-lived client that
//! must reconnect and subscribe again) and a shell loop that publishes with a new
//! `nef` each time (each one's inherited endpoint is dead after the crash, so it
//! connects through the agent socket).

use nefele::{Client, ClientError};
use nefele_core::host::{ProcSpec, Signal};
use nefele_core::ids::{NodeId, Pid, TenantId};
use nefele_transport_tcp::ClusterKey;
use nefeled::api_server::{ApiServer, Authenticator};
use nefeled::config::ResourceOverride;
use nefeled::host_traits::HostTraits;
use nefeled::{identity, linux_host, RuntimeConfig};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Set for the agent's child process: its data directory.
const AGENT_DIR_ENV: &str = "NEFELE_TEST_AGENT_DIR";
/// Set for the agent's child process: the name of its cgroup base.
const AGENT_CGROUP_ENV: &str = "NEFELE_TEST_AGENT_CGROUP";
const TENANT: TenantId = TenantId(7);

struct Tokens;

impl Authenticator for Tokens {
    fn by_token(&self, token: &str) -> Option<TenantId> {
        (token == "alice").then_some(TENANT)
    }
    fn by_uid(&self, _: u32) -> Option<TenantId> {
        None
    }
}

/// The agent of [`a_process_keeps_messaging_across_a_crash_of_its_agent`], in its
/// own process so that it can be SIGKILLed: `nefeled` as its binary wires it, on
/// the Linux host, with the API socket `api.sock` in its data directory.
#[test]
#[ignore = "the agent process of a_process_keeps_messaging_across_a_crash_of_its_agent, which runs it"]
fn agent_child() {
    let (Some(dir), Some(cgroup)) = (
        std::env::var_os(AGENT_DIR_ENV),
        std::env::var(AGENT_CGROUP_ENV).ok(),
    ) else {
        panic!("run by a_process_keeps_messaging_across_a_crash_of_its_agent only");
    };
    let dir = PathBuf::from(dir);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let identity = identity::load_and_bump(&dir, Some(NodeId(1))).unwrap();
        let key = ClusterKey::new(b"agent restart test key, long enough").unwrap();
        let host_config = nefele_host_linux::Config {
            cgroup_name: cgroup,
            kill_grace: Duration::from_millis(200),
            ..nefele_host_linux::Config::new(dir.join("host"))
        };
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let capacity = ResourceOverride {
            cpu_millicores: 8000,
            memory_bytes: 8 << 30,
        };
        let host = linux_host::spawn(host_config, Some(capacity), HostTraits::default(), Some(tx))
            .unwrap();
        let api = ApiServer::bind(&dir.join("api.sock"))
            .await
            .unwrap()
            .with_endpoints(rx);
        let config = RuntimeConfig {
            identity,
            ..RuntimeConfig::loopback(NodeId(1), vec![], key)
        };
        let runtime = nefeled::start(config, host).await.unwrap();
        tokio::spawn(api.serve(runtime.handle.clone(), Arc::new(Tokens)));
        let _ = runtime.driver.await;
    });
}

/// The agent's child process, killed (and the processes it left, and their
/// cgroups, removed) when dropped.
struct Agent {
    child: Option<Child>,
    dir: PathBuf,
    cgroup: String,
}

impl Agent {
    fn start(dir: &Path, cgroup: &str, life: u32) -> Child {
        let log = std::fs::File::create(dir.join(format!("agent-{life}.log"))).unwrap();
        Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "agent_child", "--ignored", "--nocapture"])
            .env(AGENT_DIR_ENV, dir)
            .env(AGENT_CGROUP_ENV, cgroup)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    fn crash(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill(); // SIGKILL
            let _ = child.wait();
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.crash();
        // What the agent started and recorded: killed, pid reuse checked.
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
        let saved = nefele_host_linux::state::load_boots(&self.dir.join("host"), boot.trim())
            .map(|found| found.current)
            .unwrap_or_default();
        let holders = saved.holders.iter().map(|h| (h.os_pid, h.start_ticks));
        let procs = saved.procs.iter().map(|p| (p.os_pid, p.start_ticks));
        for (os_pid, ticks) in procs.chain(holders) {
            if nefele_host_linux::sys::proc_start_ticks(os_pid) == Some(ticks) {
                // SAFETY: kill(2) with integers.
                unsafe { libc::kill(os_pid, libc::SIGKILL) };
            }
        }
        std::thread::sleep(Duration::from_millis(200));
        remove_cgroups(Path::new("/sys/fs/cgroup"), &self.cgroup, 4);
    }
}

/// Removes every cgroup directory named `name` (and what is below it) within
/// `depth` levels of `dir`.
fn remove_cgroups(dir: &Path, name: &str, depth: u32) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        if e.file_name() == name {
            remove_tree(&e.path());
        } else if depth > 0 {
            remove_cgroups(&e.path(), name, depth - 1);
        }
    }
}

fn remove_tree(dir: &Path) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            remove_tree(&e.path());
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// A client of the agent, once it answers and can place a process (retried while
/// the agent starts).
fn connect(dir: &Path) -> Client {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match Client::connect(dir.join("api.sock"), Some("alice")) {
            Ok(c) => return c,
            Err(e) => assert!(Instant::now() < deadline, "no agent: {e}"),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn spawn(c: &mut Client, argv: &[&str]) -> Pid {
    let spec = ProcSpec {
        path: argv[0].to_owned(),
        argv: argv.iter().map(|s| (*s).to_owned()).collect(),
        envp: vec!["PATH=/usr/bin:/bin".to_owned()],
        ..ProcSpec::default()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match c.spawn(&spec) {
            Ok(pid) => return pid,
            Err(e) => assert!(Instant::now() < deadline, "no spawn: {e}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits (30 s at most) until the text `file` holds past `from` contains `what`;
/// answers where it was found. On failure, shows `context` (logs).
fn wait_for(file: &Path, from: usize, what: &str, context: &[PathBuf]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        if let Some(at) = text.get(from..).and_then(|t| t.find(what)) {
            return from + at;
        }
        if Instant::now() >= deadline {
            let shown: Vec<String> = context
                .iter()
                .map(|p| {
                    let text = std::fs::read_to_string(p).unwrap_or_default();
                    format!("--- {}:\n{text}", p.display())
                })
                .collect();
            panic!(
                "{what:?} not in {} past byte {from}:\n{text}\n{}",
                file.display(),
                shown.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_process_keeps_messaging_across_a_crash_of_its_agent() {
    // SAFETY: geteuid takes nothing and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !nefele_test_support::require(root, "root (namespaces and cgroups; run as uid 0)") {
        return;
    }
    // Agents name a caller on the agent socket by its pidfd; older kernels cannot.
    let (ours, _theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let named = nefele_host_linux::sys::peer_pidfd(&ours).is_ok();
    if !nefele_test_support::machine_has(
        named,
        "a kernel that names a socket's peer by pidfd (SO_PEERPIDFD, Linux 6.5+)",
    ) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_owned();
    // `nef` where the tenant's processes see it: /data/nef.
    let tenant_dir = dir
        .join("host")
        .join("tenants")
        .join(format!("t{}", TENANT.0));
    std::fs::create_dir_all(&tenant_dir).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_nef"), tenant_dir.join("nef")).unwrap();
    let cgroup = format!("nefele-test-agent-restart-{}", std::process::id());
    let mut agent = Agent {
        child: Some(Agent::start(&dir, &cgroup, 1)),
        dir: dir.clone(),
        cgroup: cgroup.clone(),
    };
    let mut c = connect(&dir);
    let subscriber = spawn(&mut c, &["/data/nef", "sub", "--name", "listener", "news"]);
    let publisher = spawn(
        &mut c,
        &[
            "/bin/sh",
            "-c",
            "i=0; while :; do /data/nef pub news tick-$i || echo failed $i; i=$((i+1)); sleep 0.2; done",
        ],
    );
    let logs = |pid| nefele_host_linux::logs::LogPaths::new(&dir.join("host"), pid);
    let heard = logs(subscriber).stdout;
    let context = |life: u32| {
        let (s, p) = (logs(subscriber), logs(publisher));
        vec![
            dir.join(format!("agent-{life}.log")),
            s.stderr,
            p.stdout,
            p.stderr,
        ]
    };
    wait_for(&heard, 0, "tick-", &context(1));
    assert_eq!(c.whereis("listener").unwrap(), subscriber);

    // The crash, while the subscriber waits in a receive and the publisher loops.
    agent.crash();
    let before = std::fs::read_to_string(&heard).unwrap_or_default().len();
    agent.child = Some(Agent::start(&dir, &cgroup, 2));
    // The operator's tenant connection is kept: it goes back to the socket path
    // with its token on its next call.

    // The subscriber reconnected and subscribed again; the publisher's new `nef`s
    // reach the agent: publications arrive again.
    let at = wait_for(&heard, before, "tick-", &context(2));
    // Reached by pid, with the same pid, in a mailbox of the new life.
    c.act_as(publisher);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match c.send(subscriber, b"direct after the restart") {
            Ok(_) => break,
            Err(e) => assert!(Instant::now() < deadline, "send to the subscriber: {e}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_for(&heard, at, "direct after the restart", &context(2));
    assert_eq!(
        c.reconnects(),
        1,
        "the tenant connection was made again once"
    );
    // Its name was registered again by the subscriber's client (the agent's new
    // life held none).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match c.whereis("listener") {
            Ok(pid) => {
                assert_eq!(pid, subscriber);
                break;
            }
            Err(e) => assert!(Instant::now() < deadline, "whereis listener: {e}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // The same pids, running, in the new life's table.
    for pid in [subscriber, publisher] {
        let info = c.info(pid).unwrap();
        assert_eq!(
            info.state,
            nefele_core::placement::api::ProcState::Running,
            "{pid}: {info:?}"
        );
    }
    let errors = std::fs::read_to_string(logs(subscriber).stderr).unwrap_or_default();
    assert!(errors.is_empty(), "the subscriber said: {errors}");

    for pid in [subscriber, publisher] {
        match c.kill(pid, Signal::Kill) {
            Ok(()) | Err(ClientError::Kill(_)) => {}
            Err(e) => panic!("kill {pid}: {e}"),
        }
    }
}
