//! The spawn parameters of the paper over the simulator (issue 14): `spread`
//! across racks (the simulator's racks are the hosts' locations), `near` by
//! rack, and requests for a cpu speed class or accelerators that no host has
//! (failing at once, naming the resource) or that only some hosts have, and
//! limits that only some hosts, or none, can enforce.

use nefele_core::host::{Affinity, LimitKinds, Limits, ResourcePolicy};
use nefele_core::placement::api::{Resource, SpawnError};
use nefele_core::{ApiCall, ApiReply, NodeId, Pid, ProcSpec, TenantId, Time};
use nefele_sim::topology::{HostClass, TopologyConfig};
use nefele_sim::{SimConfig, Simulation};
use std::collections::BTreeSet;
use std::time::Duration;

const TENANT: TenantId = TenantId(1);

/// Four racks of four hosts in two rows: three racks of standard hosts (speed
/// 1000, class 4) and one of fast hosts with two accelerators each (speed 1600,
/// class 6). Classes are drawn per host by weight, so the test reads each
/// host's class from the topology rather than assuming which rack has which.
fn cluster(seed: u64) -> Simulation {
    let topology = TopologyConfig {
        hosts_per_rack: 4,
        racks_per_row: 2,
        host_classes: vec![
            HostClass {
                name: "standard".into(),
                cores: 8,
                memory_gib: 32,
                cpu_speed: 1000,
                accelerators: 0,
                unenforced: LimitKinds::default(),
                weight: 3,
            },
            HostClass {
                name: "fast".into(),
                cores: 8,
                memory_gib: 32,
                cpu_speed: 1600,
                accelerators: 2,
                unenforced: LimitKinds::default(),
                weight: 1,
            },
        ],
        ..TopologyConfig::default()
    };
    let config = SimConfig {
        nodes: 16,
        seed,
        duration: Duration::from_secs(30),
        topology,
        ..SimConfig::default()
    };
    let mut sim = Simulation::new(config).expect("a valid configuration");
    sim.run_until(Time::from_secs(3));
    sim
}

fn worker(affinity: Vec<Affinity>, resources: ResourcePolicy) -> ProcSpec {
    ProcSpec {
        path: "/bin/worker".into(),
        argv: vec!["worker".into()],
        envp: vec!["NEFELE_SIM_RUN_MS=100000".into()],
        affinity,
        resources: ResourcePolicy {
            cpu_millicores: Some(500),
            memory_bytes: Some(1 << 30),
            ..resources
        },
        profile: None,
    }
}

/// Calls from `node`, runs for `ms`, and returns the reply with its latency.
fn ask(sim: &mut Simulation, node: u32, call: ApiCall, ms: u64) -> (ApiReply, Duration) {
    let at = sim.now();
    let id = sim.call(NodeId(node), call).expect("host is up");
    sim.run_until(at + Duration::from_millis(ms));
    let (_, t, reply) = sim
        .take_replies()
        .into_iter()
        .find(|(i, _, _)| *i == id)
        .unwrap_or_else(|| panic!("no reply to call {id} within {ms} ms"));
    (reply, t.saturating_since(at))
}

fn n_spawn(n: u32, spec: ProcSpec) -> ApiCall {
    ApiCall::NSpawn {
        tenant: TENANT,
        n,
        spec,
    }
}

fn rack(sim: &Simulation, pid: Pid) -> u32 {
    sim.topology().location(pid.origin()).domain
}

/// `spread(tag)` puts the processes of a tag in different racks, where the host
/// order alone (the requester's own rack first) would keep them in one; past the
/// number of racks it takes distinct hosts and the reply names the tag.
#[test]
fn spread_goes_across_racks_and_says_when_it_cannot() {
    let mut sim = cluster(7);
    let spread = vec![Affinity::Spread("db".into())];
    let (reply, _) = ask(
        &mut sim,
        1,
        n_spawn(3, worker(spread.clone(), ResourcePolicy::default())),
        200,
    );
    let ApiReply::Spawned(Ok(pids)) = reply else {
        panic!("{reply:?}")
    };
    let racks: BTreeSet<u32> = pids.iter().map(|p| rack(&sim, *p)).collect();
    assert_eq!(racks.len(), 3, "three racks for three: {pids:?}");

    // `apart` with the same numbers stays in the requester's rack (its group
    // offers first): the difference is the rule's.
    let apart = vec![Affinity::Apart("cache".into())];
    let (reply, _) = ask(
        &mut sim,
        1,
        n_spawn(3, worker(apart, ResourcePolicy::default())),
        200,
    );
    let ApiReply::Spawned(Ok(pids)) = reply else {
        panic!("{reply:?}")
    };
    let hosts: BTreeSet<NodeId> = pids.iter().map(|p| p.origin()).collect();
    assert_eq!(hosts.len(), 3);
    let racks: BTreeSet<u32> = pids.iter().map(|p| rack(&sim, *p)).collect();
    assert_eq!(racks.len(), 1, "apart stays local: {pids:?}");

    // Six under one spread tag in four racks: placed on distinct hosts, and said.
    let more = vec![Affinity::Spread("web".into())];
    let (reply, _) = ask(
        &mut sim,
        1,
        n_spawn(6, worker(more, ResourcePolicy::default())),
        200,
    );
    let ApiReply::SpawnedUnspread { pids, tags } = reply else {
        panic!("{reply:?}")
    };
    assert_eq!(tags, vec!["web".to_owned()]);
    let hosts: BTreeSet<NodeId> = pids.iter().map(|p| p.origin()).collect();
    assert_eq!(hosts.len(), 6);
    let racks: BTreeSet<u32> = pids.iter().map(|p| rack(&sim, *p)).collect();
    assert_eq!(racks.len(), 4, "every rack used: {pids:?}");
}

/// A cpu speed class or accelerators that no host has fail at once, naming the
/// resource; a class only some hosts have is placed on those.
#[test]
fn classes_and_accelerators_are_honoured_or_refused_at_once() {
    let mut sim = cluster(7);
    let fast: BTreeSet<NodeId> = (0..16)
        .map(NodeId)
        .filter(|n| sim.topology().resources(*n).cpu_speed == 1600)
        .collect();
    assert!(
        !fast.is_empty() && fast.len() < 16,
        "seed 7 draws both classes"
    );

    let class = |c| ResourcePolicy {
        cpu_class: Some(c),
        ..ResourcePolicy::default()
    };
    let (reply, latency) = ask(&mut sim, 1, n_spawn(1, worker(Vec::new(), class(9))), 200);
    assert_eq!(
        reply,
        ApiReply::Spawned(Err(SpawnError::Unavailable {
            resource: Resource::CpuClass(9)
        }))
    );
    assert!(latency < Duration::from_millis(5), "fast: {latency:?}");

    let gpus = |n| ResourcePolicy {
        accelerators: Some(n),
        ..ResourcePolicy::default()
    };
    let (reply, latency) = ask(&mut sim, 1, n_spawn(1, worker(Vec::new(), gpus(3))), 200);
    assert_eq!(
        reply,
        ApiReply::Spawned(Err(SpawnError::Unavailable {
            resource: Resource::Accelerators
        }))
    );
    assert!(latency < Duration::from_millis(5), "fast: {latency:?}");

    for (policy, n) in [(class(6), 3), (gpus(2), 2)] {
        let (reply, _) = ask(
            &mut sim,
            1,
            n_spawn(n, worker(Vec::new(), policy.clone())),
            200,
        );
        let ApiReply::Spawned(Ok(pids)) = reply else {
            panic!("{policy:?}: {reply:?}")
        };
        for p in pids {
            assert!(
                fast.contains(&p.origin()),
                "{policy:?}: {p:?} on a slow host"
            );
        }
    }
}

/// Eight hosts, those of one class unable to enforce a memory limit (Linux hosts
/// without the memory controller): a memory-limited process goes to the others,
/// and where no host can enforce it the spawn fails naming the limit (it used to
/// be placed anyway, and the process failed to start after its pid was returned).
#[test]
fn a_limit_goes_only_where_it_can_be_enforced_or_fails_naming_it() {
    let no_memory = LimitKinds {
        memory: true,
        ..LimitKinds::default()
    };
    let class = |name: &str, unenforced, weight| HostClass {
        name: name.into(),
        cores: 8,
        memory_gib: 32,
        cpu_speed: 1000,
        accelerators: 0,
        unenforced,
        weight,
    };
    let cluster_of = |classes| {
        let config = SimConfig {
            nodes: 8,
            seed: 11,
            duration: Duration::from_secs(30),
            topology: TopologyConfig {
                hosts_per_rack: 4,
                racks_per_row: 2,
                host_classes: classes,
                ..TopologyConfig::default()
            },
            ..SimConfig::default()
        };
        let mut sim = Simulation::new(config).expect("a valid configuration");
        sim.run_until(Time::from_secs(3));
        sim
    };
    let limited = ResourcePolicy {
        limits: Limits {
            memory_bytes: Some(1 << 30),
            ..Limits::default()
        },
        ..ResourcePolicy::default()
    };

    let mut sim = cluster_of(vec![
        class("bare", no_memory, 1),
        class("full", LimitKinds::default(), 1),
    ]);
    let able: BTreeSet<NodeId> = (0..8)
        .map(NodeId)
        .filter(|n| !sim.topology().resources(*n).unenforced.memory)
        .collect();
    assert!(
        !able.is_empty() && able.len() < 8,
        "seed 11 draws both classes"
    );
    for from in 0..8 {
        let (reply, _) = ask(
            &mut sim,
            from,
            n_spawn(2, worker(Vec::new(), limited.clone())),
            300,
        );
        let ApiReply::Spawned(Ok(pids)) = reply else {
            panic!("from {from}: {reply:?}")
        };
        for pid in pids {
            assert!(
                able.contains(&pid.origin()),
                "{pid} on a host without memory limits"
            );
        }
    }

    let mut sim = cluster_of(vec![class("bare", no_memory, 1)]);
    let (reply, _) = ask(&mut sim, 1, n_spawn(1, worker(Vec::new(), limited)), 300);
    assert_eq!(
        reply,
        ApiReply::Spawned(Err(SpawnError::Short {
            resource: Resource::Limit(nefele_core::host::Limit::Memory)
        }))
    );
    // A process without a limit runs there as before.
    let (reply, _) = ask(
        &mut sim,
        1,
        n_spawn(1, worker(Vec::new(), ResourcePolicy::default())),
        300,
    );
    assert!(matches!(reply, ApiReply::Spawned(Ok(_))), "{reply:?}");
}
