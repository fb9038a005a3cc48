//! Whole nefeled runtimes (transport, beacons, driver, SimHost) on madsim's
//! simulated hosts and network: boot and federate, spawn across agents, a crash,
//! a partition and its healing, a stranger with the wrong cluster key, and replay;
//! messaging between processes on two agents (order, a partition's visible fates
//! and a reliable send that outlives a short one, a restart of the receiver's agent:
//! its processes, names and monitors end), deterministic per seed.
//!
//! `RUSTFLAGS="--cfg madsim" CARGO_TARGET_DIR=target/madsim cargo test -p nefele-sim-tests --test cluster_madsim`
//!
//! Each scenario has a fixed seed, so a failure replays as it is; it prints it.
//! `NEFELE_MADSIM_SEED=<n>` runs every scenario with seed `n` instead (to try others).

#![cfg(madsim)]

use madsim::net::NetSim;
use madsim::runtime::{Handle, NodeHandle, Runtime};
use nefele::proto::{Call, MembersView, Reply};
use nefele_api::messaging::{Delivery, Dest, DownReason, Mail, MailBody, NameError, SendError};
use nefele_core::agent::ApiReply;
use nefele_core::host::{Affinity, ProcSpec};
use nefele_core::ids::{Incarnation, NodeId, Pid, TenantId};
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
                    proxy: nefeled::proxy::ProxyRules::default(),
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

/// Two processes on different agents of a converged cluster of `n`: (a, agent index
/// of a, b, agent index of b).
async fn pair_apart(agents: &[Agent], n: usize) -> (Pid, usize, Pid, usize) {
    let spec = ProcSpec {
        affinity: vec![Affinity::Apart("pair".into())],
        ..spec()
    };
    let pids = match agents[0].call(Call::NSpawn { n: 2, spec }).await {
        Reply::Api(ApiReply::Spawned(Ok(pids))) => pids,
        other => panic!("n_spawn answered {other:?}"),
    };
    let ps = agents[0].ps().await;
    let index = |pid: Pid| {
        let host = ps
            .processes
            .iter()
            .find(|p| p.pid == pid)
            .map(|p| p.host)
            .expect("ps lists the pair");
        (0..n)
            .find(|&i| agents[i].node == host)
            .expect("a host of the cluster")
    };
    let (a, b) = (pids[0], pids[1]);
    let (ia, ib) = (index(a), index(b));
    assert_ne!(ia, ib, "apart");
    (a, ia, b, ib)
}

async fn send(
    agent: &Agent,
    from: Pid,
    to: Pid,
    data: &[u8],
    delivery: Delivery,
) -> Result<u32, SendError> {
    let call = Call::Send {
        from,
        to: Dest::Pid(to),
        data: data.to_vec(),
        delivery,
        block: false,
    };
    match agent.call(call).await {
        Reply::Api(ApiReply::Sent(result)) => result.map(|r| r.reached),
        other => panic!("send answered {other:?}"),
    }
}

/// Takes what `pid`'s mailbox holds, waiting up to a second for the first.
async fn recv(agent: &Agent, pid: Pid) -> Vec<Mail> {
    let call = Call::Recv {
        pid,
        max: 1000,
        wait: Some(Duration::from_secs(1)),
    };
    match agent.call(call).await {
        Reply::Api(ApiReply::Received(Ok(mail))) => mail,
        Reply::Api(ApiReply::Received(Err(e))) => panic!("recv failed: {e}"),
        other => panic!("recv answered {other:?}"),
    }
}

fn data(mail: &[Mail]) -> Vec<String> {
    mail.iter()
        .map(|m| match &m.body {
            MailBody::Data(d) => String::from_utf8_lossy(d).into_owned(),
            other => format!("{other:?}"),
        })
        .collect()
}

fn clog(a: &Agent, b: &Agent, clogged: bool) {
    let net = NetSim::current();
    for (x, y) in [(a, b), (b, a)] {
        if clogged {
            net.clog_link(x.sim.id(), y.sim.id());
        } else {
            net.unclog_link(x.sim.id(), y.sim.id());
        }
    }
}

/// Messaging across two agents through a partition: what was seen.
async fn messaging_through_a_partition() -> Vec<String> {
    let data_dir = tempfile::tempdir().unwrap();
    let agents = boot_cluster(6, data_dir.path()).await;
    let all: Vec<usize> = (0..6).collect();
    converge(&agents, &all, Duration::from_secs(60)).await;
    let (a, ia, b, ib) = pair_apart(&agents, 6).await;
    let mut seen = vec![format!("pair {a} {b}")];

    // In order, each once.
    for i in 0..20 {
        let sent = send(
            &agents[ia],
            a,
            b,
            format!("m{i}").as_bytes(),
            Delivery::AtMostOnce,
        )
        .await;
        assert_eq!(sent, Ok(1), "send {i}");
    }
    let mut got = Vec::new();
    while got.len() < 20 {
        let mail = recv(&agents[ib], b).await;
        assert!(
            !mail.is_empty(),
            "the mailbox stayed empty after {} of 20",
            got.len()
        );
        got.extend(mail);
    }
    let expected: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
    assert_eq!(data(&got), expected);
    assert!(got.iter().all(|m| m.from == a));
    assert!(got.windows(2).all(|w| w[0].seq < w[1].seq), "FIFO per pair");

    // Cut off, a send fails visibly within a bounded time: never a silent success.
    clog(&agents[ia], &agents[ib], true);
    let start = Instant::now();
    let cut = send(&agents[ia], a, b, b"cut", Delivery::AtMostOnce).await;
    let took = start.elapsed();
    assert!(
        matches!(cut, Err(SendError::Unknown | SendError::Lost)),
        "a send across a partition answered {cut:?}"
    );
    assert!(took <= Duration::from_secs(5), "its fate took {took:?}");
    seen.push(format!("across the partition: {cut:?}"));

    // Healed, sends get through again (the transport reconnects).
    clog(&agents[ia], &agents[ib], false);
    let healed = Instant::now();
    while send(&agents[ia], a, b, b"healed", Delivery::AtMostOnce).await != Ok(1) {
        assert!(
            healed.elapsed() < Duration::from_secs(10),
            "no send got through after the heal"
        );
        sleep(Duration::from_millis(100)).await;
    }
    let mut before = Vec::new();
    for _ in 0..2 {
        before.extend(data(&recv(&agents[ib], b).await));
    }
    assert!(before.contains(&"healed".to_owned()), "{before:?}");
    seen.push(format!("after the heal: {before:?}"));
    clog(&agents[ia], &agents[ib], true);

    // A reliable send outlives a partition shorter than the fate timeout: resent,
    // delivered once.
    let healer = {
        let (x, y) = (agents[ia].sim.id(), agents[ib].sim.id());
        tokio::spawn(async move {
            sleep(Duration::from_millis(200)).await;
            let net = NetSim::current();
            net.unclog_link(x, y);
            net.unclog_link(y, x);
        })
    };
    let reliable = send(&agents[ia], a, b, b"reliable", Delivery::Reliable).await;
    healer.await.unwrap();
    assert_eq!(
        reliable,
        Ok(1),
        "a reliable send through a 200 ms partition"
    );
    let mut after = Vec::new();
    for _ in 0..3 {
        after.extend(recv(&agents[ib], b).await);
    }
    let after = data(&after);
    assert_eq!(
        after.iter().filter(|d| *d == "reliable").count(),
        1,
        "delivered once: {after:?}"
    );
    assert_eq!(after, ["reliable"]);
    seen
}

#[test]
fn messages_cross_agents_in_order_and_partitions_end_sends_visibly() {
    let seen = run(19, messaging_through_a_partition());
    println!("{}", seen.join("\n"));
}

#[test]
fn messaging_runs_the_same_for_the_same_seed() {
    let replay = || {
        std::thread::spawn(|| run(29, messaging_through_a_partition()))
            .join()
            .unwrap()
    };
    assert_eq!(replay(), replay(), "same seed, same observations");
}

#[test]
fn a_restarted_agents_processes_names_and_monitors_end_for_their_peers() {
    run(23, async {
        let data_dir = tempfile::tempdir().unwrap();
        let agents = boot_cluster(6, data_dir.path()).await;
        let all: Vec<usize> = (0..6).collect();
        converge(&agents, &all, Duration::from_secs(60)).await;
        let (a, ia, b, ib) = pair_apart(&agents, 6).await;
        let register = Call::Register {
            name: "svc".into(),
            pid: b,
        };
        assert!(matches!(
            agents[ib].call(register).await,
            Reply::Api(ApiReply::Named(Ok(())))
        ));
        let monitor = Call::Monitor {
            watcher: a,
            watched: b,
        };
        assert!(matches!(
            agents[ia].call(monitor).await,
            Reply::Api(ApiReply::Monitored(Ok(())))
        ));
        assert_eq!(
            send(&agents[ia], a, b, b"hello", Delivery::AtMostOnce).await,
            Ok(1)
        );

        // The receiver's server crashes and comes back: a new agent, without b.
        Handle::current().kill(agents[ib].sim.id());
        sleep(Duration::from_secs(1)).await;
        Handle::current().restart(agents[ib].sim.id());
        sleep(Duration::from_millis(100)).await;
        converge(&agents, &all, Duration::from_secs(30)).await;

        // a is told, once, that b is gone.
        let mut downs = Vec::new();
        for _ in 0..10 {
            downs.extend(
                recv(&agents[ia], a)
                    .await
                    .into_iter()
                    .filter_map(|m| match m.body {
                        MailBody::Down { pid, reason } => Some((pid, reason)),
                        _ => None,
                    }),
            );
            if !downs.is_empty() {
                break;
            }
        }
        assert_eq!(downs.len(), 1, "{downs:?}");
        assert_eq!(downs[0].0, b);
        assert!(
            matches!(
                downs[0].1,
                DownReason::Lost { .. } | DownReason::Unreachable | DownReason::NoProcess
            ),
            "{downs:?}"
        );
        // Sends to b fail by name; its name is gone with it.
        let to_b = send(&agents[ia], a, b, b"again", Delivery::AtMostOnce).await;
        assert!(
            matches!(
                to_b,
                Err(SendError::Lost | SendError::NoSuchProcess | SendError::Exited)
            ),
            "{to_b:?}"
        );
        // Its name goes too: the new life tells the root its life, and the root drops
        // the names of its earlier lives (before, they stayed until names::EXPIRE_AFTER,
        // 90 s). Until then a send by name fails as a send to the dead pid does.
        let by_name = Call::Send {
            from: a,
            to: Dest::Name("svc".into()),
            data: b"by name".to_vec(),
            delivery: Delivery::AtMostOnce,
            block: false,
        };
        let sent = agents[ia].call(by_name).await;
        assert!(
            !matches!(sent, Reply::Api(ApiReply::Sent(Ok(_)))),
            "a send to a dead process's name: {sent:?}"
        );
        let start = Instant::now();
        loop {
            let whereis = agents[ia].call(Call::Whereis { name: "svc".into() }).await;
            match whereis {
                Reply::Api(ApiReply::Whereis(Err(NameError::NoSuchName))) => break,
                Reply::Api(ApiReply::Whereis(Ok(pid))) if pid == b => {}
                other => panic!("whereis answered {other:?}"),
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the name of a process lost in a restart is still held"
            );
            sleep(Duration::from_millis(500)).await;
        }
        println!("the name went {:?} after the restart", start.elapsed());
    });
}
