//! Whole nefeled runtimes (transport, beacons, driver, SimHost) on madsim's
//! simulated hosts and network: boot and federate, spawn across agents, a crash,
//! a partition and its healing, a stranger with the wrong cluster key, and replay.
//!
//! `RUSTFLAGS="--cfg madsim" CARGO_TARGET_DIR=target/madsim cargo test -p nefele-sim-tests --test cluster_madsim`
//!
//! Each scenario has a fixed seed, so a failure replays as it is; it prints it.
//! `NEFELE_MADSIM_SEED=<n>` runs every scenario with seed `n` instead (to try others).

#![cfg(madsim)]

use madsim::net::NetSim;
use madsim::runtime::{Handle, NodeHandle, Runtime};
use nefele::proto::{Call, MembersView, Reply};
use nefele_core::agent::ApiReply;
use nefele_core::host::ProcSpec;
use nefele_core::ids::{Incarnation, NodeId, TenantId};
use nefele_core::placement::api::{ProcInfo, ProcState, PsReply};
use nefele_transport_tcp::ClusterKey;
use nefeled::beacon::Targets;
use nefeled::config::ResourceOverride;
use nefeled::{identity, sim_host, AgentHandle, RuntimeConfig};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::{sleep, Instant};

const PORT: u16 = 7600;
const KEY: &[u8] = b"the madsim cluster key, 32 bytes";
const TENANT: TenantId = TenantId(1);
/// Each host fits four processes of the default demand (500 millicores).
const CAPACITY: ResourceOverride = ResourceOverride {
    cpu_millicores: 2000,
    memory_bytes: 4 << 30,
};

fn addr(i: u32) -> SocketAddr {
    SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(10, 0, (i / 250) as u8, (i % 250 + 1) as u8)),
        PORT,
    )
}

/// One simulated server running one agent.
struct Agent {
    node: NodeId,
    sim: NodeHandle,
    handle: Arc<Mutex<Option<AgentHandle>>>,
}

impl Agent {
    fn handle(&self) -> AgentHandle {
        self.handle
            .lock()
            .unwrap()
            .clone()
            .unwrap_or_else(|| panic!("{} has not started", self.node))
    }

    async fn call(&self, call: Call) -> Reply {
        self.handle().call(TENANT, call).await.expect("agent alive")
    }

    async fn members(&self) -> MembersView {
        match self.call(Call::Members).await {
            Reply::Members(m) => m,
            other => panic!("members answered {other:?}"),
        }
    }

    async fn ps(&self) -> PsReply {
        match self.call(Call::Ps).await {
            Reply::Api(ApiReply::Ps(ps)) => ps,
            other => panic!("ps answered {other:?}"),
        }
    }
}

/// Boots agent `i` (node id `i + 1`) with `key`, seeded with the first three agents;
/// its identity lives in `data/<node>` (a restart bumps the incarnation).
fn boot(i: u32, key: &'static [u8], data: &Path) -> Agent {
    let node = NodeId(i + 1);
    let data_dir = data.join(node.to_string());
    let slot = Arc::new(Mutex::new(None));
    let published = slot.clone();
    let seeds: Vec<SocketAddr> = (0..3).map(addr).collect();
    let sim = Handle::current()
        .create_node()
        .name(format!("agent-{}", node.0))
        .ip(addr(i).ip())
        .init(move || {
            let (published, seeds) = (published.clone(), seeds.clone());
            let identity = identity::load_and_bump(&data_dir, Some(node)).expect("identity");
            async move {
                let config = RuntimeConfig {
                    identity,
                    listen: addr(i),
                    beacons: Targets::Seeds(seeds),
                    key: ClusterKey::new(key).unwrap(),
                    node_keys: None,
                    agent: RuntimeConfig::agent_defaults(),
                    rng_seed: u64::from(node.0),
                };
                let runtime = nefeled::start(config, sim_host::spawn(CAPACITY))
                    .await
                    .expect("runtime starts");
                *published.lock().unwrap() = Some(runtime.handle.clone());
                let _ = runtime.driver.await;
            }
        })
        .build();
    Agent {
        node,
        sim,
        handle: slot,
    }
}

async fn boot_cluster(n: u32, data: &Path) -> Vec<Agent> {
    let agents: Vec<Agent> = (0..n).map(|i| boot(i, KEY, data)).collect();
    // Let every node run its init before anyone is called.
    sleep(Duration::from_millis(100)).await;
    agents
}

/// Whether `views` (one per live agent) show one federation of exactly `expected`:
/// one root for all, and level-0 groups that partition the agents and agree with
/// each other.
fn one_federation(views: &[MembersView], expected: &BTreeSet<NodeId>) -> Result<(), String> {
    let roots: BTreeSet<_> = views.iter().map(|v| v.root).collect();
    if roots.len() != 1 || roots.first().unwrap().is_none() {
        return Err(format!("roots {roots:?}"));
    }
    let level0: BTreeMap<NodeId, Vec<NodeId>> = views
        .iter()
        .map(|v| {
            let g = v
                .groups
                .first()
                .map(|g| g.members.iter().map(|m| m.node).collect());
            (v.node, g.unwrap_or_default())
        })
        .collect();
    let mut covered = BTreeSet::new();
    for (node, members) in &level0 {
        if !members.contains(node) {
            return Err(format!("{node} is in no level-0 group"));
        }
        for m in members {
            if level0.get(m).is_some_and(|theirs| theirs != members) {
                return Err(format!("{node} and {m} disagree on their level-0 group"));
            }
        }
        covered.extend(members.iter().copied());
    }
    if &covered != expected {
        return Err(format!("level-0 groups cover {covered:?}"));
    }
    Ok(())
}

/// Waits until the agents in `live` show one federation of themselves, within `bound`.
/// Returns how long it took.
async fn converge(agents: &[Agent], live: &[usize], bound: Duration) -> Duration {
    let start = Instant::now();
    let expected: BTreeSet<NodeId> = live.iter().map(|&i| agents[i].node).collect();
    loop {
        let mut views = Vec::new();
        for &i in live {
            views.push(agents[i].members().await);
        }
        match one_federation(&views, &expected) {
            Ok(()) => return start.elapsed(),
            Err(why) if start.elapsed() > bound => {
                panic!("no single federation after {bound:?}: {why}\n{views:#?}")
            }
            Err(_) => sleep(Duration::from_millis(500)).await,
        }
    }
}

fn spec() -> ProcSpec {
    ProcSpec {
        path: "/srv/app".into(),
        argv: vec!["app".into()],
        ..ProcSpec::default()
    }
}

/// Spawns `n` processes from `agents[from]`; the pids.
async fn n_spawn(agents: &[Agent], from: usize, n: u32) -> Vec<nefele_core::ids::Pid> {
    match agents[from].call(Call::NSpawn { n, spec: spec() }).await {
        Reply::Api(ApiReply::Spawned(Ok(pids))) => pids,
        other => panic!("n_spawn answered {other:?}"),
    }
}

fn hosts(ps: &[ProcInfo]) -> BTreeSet<NodeId> {
    ps.iter().map(|p| p.host).collect()
}

fn run<F: std::future::Future>(seed: u64, scenario: F) -> F::Output {
    let seed = std::env::var("NEFELE_MADSIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(seed);
    println!("madsim seed {seed} (replay: NEFELE_MADSIM_SEED={seed})");
    Runtime::with_seed_and_config(seed, madsim::Config::default()).block_on(scenario)
}

/// Boot, federation, a spawn larger than one host, `ps` from elsewhere: what was seen.
async fn boot_and_spawn(n: u32) -> Vec<String> {
    let data = tempfile::tempdir().unwrap();
    let agents = boot_cluster(n, data.path()).await;
    let all: Vec<usize> = (0..n as usize).collect();
    let took = converge(&agents, &all, Duration::from_secs(60)).await;
    // To the 100 ms: madsim adds 50-100 ns per task poll, and the poll count was seen
    // to vary by a few polls when other simulations run on other threads of the process.
    let mut seen = vec![format!(
        "federated after {} ms",
        took.as_millis() / 100 * 100
    )];

    let pids = n_spawn(&agents, 0, 10).await;
    assert_eq!(pids.len(), 10);
    let ps = agents[n as usize - 1].ps().await;
    assert_eq!(ps.processes.len(), 10, "{ps:#?}");
    assert!(
        ps.processes.iter().all(|p| p.state == ProcState::Running),
        "{ps:#?}"
    );
    let on = hosts(&ps.processes);
    assert!(
        on.len() >= 3,
        "10 processes of 4 per host need 3 hosts, got {on:?}"
    );
    seen.push(format!("pids {pids:?}"));
    seen.push(format!("hosts {on:?}"));
    for a in &agents {
        let m = a.members().await;
        seen.push(format!(
            "{} root {:?} groups {:?}",
            a.node, m.root, m.groups
        ));
    }
    seen
}

#[test]
fn agents_federate_and_spawn_across_hosts() {
    let seen = run(1, boot_and_spawn(20));
    println!("{}", seen.join("\n"));
}

/// The scenario of the replay test (a plain `fn`, as `check_determinism` wants).
fn small_boot_and_spawn() -> impl std::future::Future<Output = Vec<String>> {
    boot_and_spawn(8)
}

#[test]
fn the_same_seed_gives_the_same_run() {
    // Each run gets a fresh thread, as in `Runtime::check_determinism`: libraries
    // that seed thread-local state on first use (std's hash keys) would otherwise
    // draw from madsim's RNG in the first run only.
    let replay = || {
        std::thread::spawn(|| run(7, small_boot_and_spawn()))
            .join()
            .unwrap()
    };
    let first = replay();
    assert_eq!(first, replay(), "same seed, same observations");
    // And the same draws from madsim's RNG, in the same order.
    let checked = Runtime::check_determinism(7, madsim::Config::default(), small_boot_and_spawn);
    assert_eq!(first, checked);
}

#[test]
fn a_crashed_agent_is_removed_and_the_rest_keep_working() {
    run(3, async {
        let data = tempfile::tempdir().unwrap();
        let agents = boot_cluster(8, data.path()).await;
        let all: Vec<usize> = (0..8).collect();
        converge(&agents, &all, Duration::from_secs(60)).await;
        n_spawn(&agents, 0, 12).await;
        let before = agents[1].ps().await;
        // Crash a host that runs some of them, other than the two we ask.
        let victim = (2..8)
            .find(|&i| hosts(&before.processes).contains(&agents[i].node))
            .expect("12 processes of 4 per host span several hosts");
        let dead = agents[victim].node;
        Handle::current().kill(agents[victim].sim.id());

        let live: Vec<usize> = all.iter().copied().filter(|&i| i != victim).collect();
        converge(&agents, &live, Duration::from_secs(30)).await;
        let after = agents[1].ps().await;
        for p in &after.processes {
            if p.host == dead {
                assert_ne!(
                    p.state,
                    ProcState::Running,
                    "a process of the dead host: {p:?}"
                );
            } else {
                assert_eq!(p.state, ProcState::Running, "{p:?}");
            }
        }
        let of_dead: Vec<_> = after
            .processes
            .iter()
            .filter(|p| p.host == dead)
            .map(|p| p.state)
            .collect();
        println!("after the crash of {dead}, ps shows its processes as {of_dead:?}");
        let survivors = after.processes.iter().filter(|p| p.host != dead).count();
        let expected = before.processes.iter().filter(|p| p.host != dead).count();
        assert_eq!(survivors, expected, "{after:#?}");
        // The survivors still place new work.
        assert_eq!(n_spawn(&agents, 1, 2).await.len(), 2);
    });
}

#[test]
fn a_partition_heals_into_one_federation() {
    run(5, async {
        let data = tempfile::tempdir().unwrap();
        let agents = boot_cluster(10, data.path()).await;
        let all: Vec<usize> = (0..10).collect();
        converge(&agents, &all, Duration::from_secs(60)).await;
        let net = NetSim::current();
        let (left, right) = all.split_at(5);
        for &a in left {
            for &b in right {
                net.clog_link(agents[a].sim.id(), agents[b].sim.id());
                net.clog_link(agents[b].sim.id(), agents[a].sim.id());
            }
        }
        // Each side repairs into a federation of its own.
        converge(&agents, left, Duration::from_secs(30)).await;
        converge(&agents, right, Duration::from_secs(30)).await;
        for &a in left {
            for &b in right {
                net.unclog_link(agents[a].sim.id(), agents[b].sim.id());
                net.unclog_link(agents[b].sim.id(), agents[a].sim.id());
            }
        }
        converge(&agents, &all, Duration::from_secs(60)).await;
    });
}

#[test]
fn an_agent_with_the_wrong_key_never_joins() {
    run(11, async {
        let data = tempfile::tempdir().unwrap();
        let mut agents = boot_cluster(6, data.path()).await;
        agents.push(boot(6, b"not the cluster key, but as long", data.path()));
        let good: Vec<usize> = (0..6).collect();
        converge(&agents, &good, Duration::from_secs(60)).await;
        // Give the stranger time to try, then check nobody took it in.
        sleep(Duration::from_secs(20)).await;
        converge(&agents, &good, Duration::from_secs(1)).await;
        let stranger = agents[6].members().await;
        let alone: Vec<NodeId> = stranger
            .groups
            .iter()
            .flat_map(|g| g.members.iter().map(|m| m.node))
            .collect();
        assert!(alone.iter().all(|&n| n == agents[6].node), "{stranger:#?}");
    });
}

#[test]
fn an_agent_that_leaves_is_out_before_failure_detection_would_notice() {
    run(13, async {
        let data = tempfile::tempdir().unwrap();
        let agents = boot_cluster(8, data.path()).await;
        let all: Vec<usize> = (0..8).collect();
        converge(&agents, &all, Duration::from_secs(60)).await;
        let detection = RuntimeConfig::agent_defaults().federations[0].detection_timeout();
        // Agent n1 leads the level-0 group: its leave hands the group over.
        let start = Instant::now();
        agents[0]
            .handle()
            .shutdown(Duration::from_millis(500))
            .await
            .unwrap();
        let live: Vec<usize> = (1..8).collect();
        converge(
            &agents,
            &live,
            detection.saturating_sub(start.elapsed()) / 2,
        )
        .await;
        assert!(agents[0].handle().is_gone());
    });
}

#[test]
fn a_restarted_agent_rejoins_with_a_new_incarnation() {
    run(17, async {
        let data = tempfile::tempdir().unwrap();
        let agents = boot_cluster(6, data.path()).await;
        let all: Vec<usize> = (0..6).collect();
        converge(&agents, &all, Duration::from_secs(60)).await;
        assert_eq!(agents[4].members().await.incarnation, Incarnation(1));
        // A crash, and the server back a second later (madsim frees the dead node's
        // sockets as its tasks are dropped, not at once).
        Handle::current().kill(agents[4].sim.id());
        sleep(Duration::from_secs(1)).await;
        Handle::current().restart(agents[4].sim.id());
        sleep(Duration::from_millis(100)).await;
        assert_eq!(agents[4].members().await.incarnation, Incarnation(2));
        converge(&agents, &all, Duration::from_secs(30)).await;
        // The restarted agent serves calls again.
        assert_eq!(n_spawn(&agents, 4, 2).await.len(), 2);
    });
}
