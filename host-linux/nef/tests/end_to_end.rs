//! libnefele's Rust client, the `nef` binary and the C example against a real
//! three-agent cluster: `nefeled` runtimes on loopback with in-memory hosts
//! (SimHost: `/bin/sleep N` runs N seconds, any signal ends a process), one API
//! server on the third agent. Capacity is 1000 millicores per host, so a request
//! of 5 × 400m cannot fit on one host and spreads.

use nefele::ffi::NEFELE_OK;
use nefele::{Client, ClientError};
use nefele_core::host::{ExitStatus, ProcSpec, ResourcePolicy, Signal};
use nefele_core::ids::{Incarnation, NodeId, Pid, TenantId};
use nefele_core::placement::api::{InfoError, ProcState, Resource, SpawnError};
use nefele_transport_tcp::ClusterKey;
use nefeled::api_server::{ApiServer, Authenticator};
use nefeled::config::ResourceOverride;
use nefeled::{sim_host, RuntimeConfig};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Tokens;

impl Authenticator for Tokens {
    fn by_token(&self, token: &str) -> Option<TenantId> {
        match token {
            "alice" => Some(TenantId(7)),
            "bob" => Some(TenantId(8)),
            _ => None,
        }
    }
    fn by_uid(&self, _: u32) -> Option<TenantId> {
        None
    }
}

/// Three agents and an API socket on the third; dropped with the test.
struct Cluster {
    _runtime: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
    socket: PathBuf,
}

async fn agent(node: u32, seeds: Vec<SocketAddr>) -> nefeled::Runtime {
    let key = ClusterKey::new(b"end-to-end cluster key, long enough").unwrap();
    let config = RuntimeConfig::loopback(NodeId(node), seeds, key);
    let capacity = ResourceOverride {
        cpu_millicores: 1000,
        memory_bytes: 4 << 30,
    };
    nefeled::start(config, sim_host::spawn(capacity))
        .await
        .unwrap()
}

impl Cluster {
    fn start() -> Cluster {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.sock");
        let socket = runtime.block_on(async {
            let first = agent(1, vec![]).await;
            let seed = first.local_addr;
            let second = agent(2, vec![seed]).await;
            let third = agent(3, vec![seed]).await;
            let server = ApiServer::bind(&path).await.unwrap();
            let socket = server.path().to_owned();
            tokio::spawn(server.serve(third.handle.clone(), Arc::new(Tokens)));
            // The runtimes live as long as the tokio runtime does.
            std::mem::forget((first, second, third));
            socket
        });
        let cluster = Cluster {
            _runtime: runtime,
            _dir: dir,
            socket,
        };
        cluster.wait_federated();
        cluster
    }

    fn client(&self) -> Client {
        Client::connect(&self.socket, Some("alice")).unwrap()
    }

    fn wait_federated(&self) {
        let mut c = self.client();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let view = c.members().unwrap();
            let everyone: BTreeSet<NodeId> = view
                .groups
                .last()
                .map(|g| g.members.iter().map(|m| m.node).collect())
                .unwrap_or_default();
            if everyone.len() == 3 {
                return;
            }
            assert!(Instant::now() < deadline, "not federated: {view:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn nef(&self, args: &[&str]) -> Output {
        self.nef_as(|c| c.args(["--token", "alice"]), args)
    }

    /// `nef` with its token given by `auth` (argument, environment or file).
    fn nef_as(&self, auth: impl FnOnce(&mut Command) -> &mut Command, args: &[&str]) -> Output {
        let mut command = Command::new(env!("CARGO_BIN_EXE_nef"));
        command
            .arg("--socket")
            .arg(&self.socket)
            .env_remove("NEFELE_TOKEN")
            .env_remove("NEFELE_TOKEN_FILE");
        auth(&mut command).args(args).output().unwrap()
    }
}

fn sleeper(cpu: u32) -> ProcSpec {
    ProcSpec {
        path: "/bin/sleep".into(),
        argv: vec!["sleep".into(), "600".into()],
        resources: ResourcePolicy {
            cpu_millicores: Some(cpu),
            ..ResourcePolicy::default()
        },
        ..ProcSpec::default()
    }
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "nef failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

/// The one line of a failed `nef`, checked for shape and exit status.
fn error_line(o: &Output, status: i32) -> String {
    assert_eq!(o.status.code(), Some(status), "{o:?}");
    let err = String::from_utf8(o.stderr.clone()).unwrap();
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    err
}

#[test]
fn the_rust_client_spawns_lists_kills_and_waits_across_agents() {
    let cluster = Cluster::start();
    let mut c = cluster.client();
    assert_eq!(c.tenant(), TenantId(7));
    assert_eq!(c.node(), NodeId(3));

    let pids = c.n_spawn(5, &sleeper(400)).unwrap();
    assert_eq!(pids.len(), 5);
    let ps = c.ps().unwrap();
    let ours: Vec<_> = ps
        .processes
        .iter()
        .filter(|p| pids.contains(&p.pid))
        .collect();
    assert_eq!(ours.len(), 5, "{ps:?}");
    let hosts: BTreeSet<NodeId> = ours.iter().map(|p| p.host).collect();
    assert!(hosts.len() >= 3, "5 × 400m on hosts of 1000m: {hosts:?}");
    let info = c.info(pids[0]).unwrap();
    assert_eq!(
        (info.state, info.command.as_str()),
        (ProcState::Running, "/bin/sleep")
    );

    // Another tenant sees nothing of alice's.
    let mut bob = Client::connect(&cluster.socket, Some("bob")).unwrap();
    assert!(bob.ps().unwrap().processes.is_empty());
    assert!(matches!(
        bob.info(pids[0]),
        Err(ClientError::Info(InfoError::NoSuchProcess))
    ));

    for &pid in &pids {
        c.kill(pid, Signal::Kill).unwrap();
        assert_eq!(c.wait(pid).unwrap(), ExitStatus::Signaled(9));
    }

    // Too big for any host: a typed error naming the resource, nothing left behind.
    let err = c.spawn(&sleeper(5000)).unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Spawn(SpawnError::Short {
                resource: Resource::Cpu
            })
        ),
        "{err:?}"
    );
    let unknown = Pid::new(NodeId(2), Incarnation(1), 999_999);
    assert!(matches!(
        c.info(unknown),
        Err(ClientError::Info(InfoError::NoSuchProcess))
    ));
}

#[test]
fn a_bad_token_and_a_missing_socket_are_typed_errors() {
    let cluster = Cluster::start();
    let err = Client::connect(&cluster.socket, Some("mallory")).unwrap_err();
    assert!(matches!(err, ClientError::Protocol(_)), "{err:?}");
    let err = Client::connect(Path::new("/nonexistent/nefele.sock"), None).unwrap_err();
    assert!(
        err.to_string().starts_with("/nonexistent/nefele.sock: "),
        "{err}"
    );
}

#[test]
fn nef_commands_work_end_to_end() {
    let cluster = Cluster::start();
    let members = stdout(&cluster.nef(&["members"]));
    assert!(members.starts_with("top group, level"), "{members}");
    assert!(members.contains("(this agent)"), "{members}");

    let out = stdout(&cluster.nef(&[
        "spawn",
        "-n",
        "3",
        "--cpu",
        "400m",
        "--mem",
        "16M",
        "--",
        "/bin/sleep",
        "600",
    ]));
    let pids: Vec<&str> = out.lines().collect();
    assert_eq!(pids.len(), 3, "{out}");

    let table = stdout(&cluster.nef(&["ps"]));
    assert!(table.starts_with("PID"), "{table}");
    for pid in &pids {
        assert!(
            table
                .lines()
                .any(|l| l.starts_with(pid) && l.contains("running") && l.ends_with("/bin/sleep")),
            "{table}"
        );
    }
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&cluster.nef(&["ps", "--json"]))).unwrap();
    assert_eq!(json["processes"].as_array().unwrap().len(), 3);
    assert_eq!(json["processes"][0]["memory_bytes"], 16 << 20);

    let info = stdout(&cluster.nef(&["info", pids[0]]));
    assert!(info.contains("state    running"), "{info}");
    assert!(stdout(&cluster.nef(&["kill", "--signal", "KILL", pids[0]])).is_empty());
    let waited = stdout(&cluster.nef(&["wait", pids[0]]));
    assert_eq!(waited.trim(), format!("{} killed by signal 9", pids[0]));
    let err = error_line(&cluster.nef(&["kill", pids[0]]), 1);
    assert!(err.starts_with("nef: ") && err.contains("exited"), "{err}");

    // Usage errors exit 2; agent errors exit 1, each on one line.
    error_line(
        &cluster.nef(&["spawn", "--cpu", "lots", "--", "/bin/true"]),
        2,
    );
    error_line(&cluster.nef(&["info", "not-a-pid"]), 2);
    let err = error_line(
        &cluster.nef(&["spawn", "--cpu", "9", "--", "/bin/sleep", "1"]),
        1,
    );
    assert!(err.contains("Cpu"), "{err}");
    let err = error_line(
        &cluster.nef(&["info", "ffffffffffff00000001000000000002"]),
        1,
    );
    assert!(err.contains("no such process"), "{err}");
}

/// `nef spawn --supervise`: children that end are started again (new pids, in the
/// history `nef supervisors` prints), and `nef stop-supervisor` stops them all.
#[test]
fn nef_supervises_lists_and_stops() {
    let cluster = Cluster::start();
    let out = stdout(&cluster.nef(&[
        "spawn",
        "--supervise",
        "one-for-one",
        "--max-restarts",
        "100",
        "-n",
        "2",
        "--cpu",
        "200m",
        "--",
        "/bin/sleep",
        "1",
    ]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    let id = lines[0]
        .strip_prefix("supervisor ")
        .expect("the supervisor first");
    let deadline = Instant::now() + Duration::from_secs(20);
    let listed = loop {
        let listed = stdout(&cluster.nef(&["supervisors"]));
        if listed.matches("restarted child").count() >= 2 {
            break listed;
        }
        assert!(Instant::now() < deadline, "no restarts: {listed}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(listed.starts_with(id), "{listed}");
    let json: serde_json::Value =
        serde_json::from_str(&stdout(&cluster.nef(&["supervisors", "--json"]))).unwrap();
    assert_eq!(json[0]["children"].as_array().unwrap().len(), 2, "{json}");
    assert!(stdout(&cluster.nef(&["stop-supervisor", id])).is_empty());
    assert_eq!(stdout(&cluster.nef(&["supervisors"])), "");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ps: serde_json::Value =
            serde_json::from_str(&stdout(&cluster.nef(&["ps", "--json"]))).unwrap();
        let running = ps["processes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["state"] == "Running" || p["state"] == "Provisional")
            .count();
        if running == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "children still run: {ps}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let err = error_line(&cluster.nef(&["stop-supervisor", id]), 1);
    assert!(err.contains("no such supervisor"), "{err}");
    error_line(&cluster.nef(&["stop-supervisor", "not-an-id"]), 2);
}

/// libnefele.so as cargo built it for this test (a dependency's cdylib stays in deps/).
fn cdylib_dir() -> PathBuf {
    std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .to_owned()
}

#[test]
fn the_c_example_spawns_lists_and_kills() {
    let cc = ["cc", "gcc", "clang"]
        .into_iter()
        .find(|cc| Command::new(cc).arg("--version").output().is_ok());
    // Under CI (which installs gcc) a missing compiler fails the test.
    if !nefele_test_support::require(cc.is_some(), "a C compiler (cc, gcc or clang) on PATH") {
        return;
    }
    let cc = cc.expect("found");
    let lib = cdylib_dir();
    assert!(
        lib.join("libnefele.so").exists(),
        "no libnefele.so in {lib:?}"
    );
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../libnefele");
    let cluster = Cluster::start();
    let exe = cluster._dir.path().join("spawn");
    let built = Command::new(cc)
        .arg("-Wall")
        .arg("-Werror")
        .arg("-o")
        .arg(&exe)
        .arg(crate_dir.join("examples/c/spawn.c"))
        .arg("-I")
        .arg(crate_dir.join("include"))
        .arg("-L")
        .arg(&lib)
        .arg("-lnefele")
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let ran = Command::new(&exe)
        .arg(&cluster.socket)
        .arg("alice")
        .env("LD_LIBRARY_PATH", &lib)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&ran.stdout);
    assert!(
        ran.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    assert_eq!(
        out.lines().filter(|l| l.starts_with("spawned ")).count(),
        3,
        "{out}"
    );
    assert!(out.contains("3 of ours running"), "{out}");
    assert_eq!(
        out.lines()
            .filter(|l| l.ends_with("kind 1 value 9"))
            .count(),
        3,
        "{out}"
    );
    assert_eq!(NEFELE_OK, 0);
}

#[test]
fn nef_takes_its_token_from_the_environment_or_a_file() {
    let cluster = Cluster::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "alice\n").unwrap();
    let bad = dir.path().join("bad-token");
    std::fs::write(&bad, "mallory\n").unwrap();
    type Auth<'a> = Box<dyn Fn(&mut Command) -> &mut Command + 'a>;
    let ways: [(&str, Auth); 3] = [
        ("env", Box::new(|c| c.env("NEFELE_TOKEN", "alice"))),
        (
            "--token-file",
            Box::new(|c| c.arg("--token-file").arg(&file)),
        ),
        (
            "NEFELE_TOKEN_FILE",
            Box::new(|c| c.env("NEFELE_TOKEN_FILE", &file)),
        ),
    ];
    for (how, auth) in ways {
        let out = cluster.nef_as(auth, &["ps"]);
        assert!(
            out.status.success(),
            "{how}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // A token on the command line or in the environment wins over the file.
    let out = cluster.nef_as(
        |c| c.env("NEFELE_TOKEN", "alice").arg("--token-file").arg(&bad),
        &["ps"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cluster.nef_as(|c| c.arg("--token-file").arg(&bad), &["ps"]);
    assert!(!out.status.success());
    let out = cluster.nef_as(
        |c| c.arg("--token-file").arg(dir.path().join("absent")),
        &["ps"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("nef: ") && err.contains("absent"), "{err}");
}
