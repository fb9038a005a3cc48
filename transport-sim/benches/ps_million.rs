//! `ps` of one tenant holding 1,000,000 processes over 10,000 hosts: boots
//! the DC, places the processes with `n_spawn` gangs of 1,000 from 1,000 different
//! hosts, then asks `ps` from one host and prints how long the simulated walk took,
//! how many processes it listed and how many hosts did not answer.
//!
//! Run: `cargo bench -p nefele-sim --bench ps_million`. Sizes: `NEFELE_PS_HOSTS`
//! (default 10000) and `NEFELE_PS_PROCESSES` (default 1000000).

use nefele_core::host::ResourcePolicy;
use nefele_core::{ApiCall, ApiReply, NodeId, ProcSpec, TenantId, Time};
use nefele_sim::{SimConfig, Simulation};
use std::time::{Duration, Instant};

const GANG: u32 = 1000;

fn env(var: &str, default: u32) -> u32 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A small, long-running process (10 millicores, 16 MiB, 10 minutes).
fn worker(req: u64) -> ProcSpec {
    ProcSpec {
        path: "/bin/worker".into(),
        argv: vec!["worker".into()],
        envp: vec![
            format!("NEFELE_SIM_REQ={req}"),
            "NEFELE_SIM_RUN_MS=600000".to_owned(),
        ],
        resources: ResourcePolicy {
            cpu_millicores: Some(10),
            memory_bytes: Some(16 << 20),
            ..ResourcePolicy::default()
        },
        ..ProcSpec::default()
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let hosts = env("NEFELE_PS_HOSTS", 10_000);
    let processes = env("NEFELE_PS_PROCESSES", 1_000_000);
    let wall = Instant::now();
    let mut sim = Simulation::new(SimConfig {
        nodes: hosts,
        duration: Duration::from_secs(3600),
        ..SimConfig::default()
    })
    .expect("configuration");
    sim.run_until(Time::from_secs(3));
    let tenant = TenantId(7);
    let gangs = processes.div_ceil(GANG);
    let stride = (hosts / gangs.max(1)).max(1);
    let mut placed = 0usize;
    // Waves of 100 gangs, each given a simulated second to commit.
    for wave in (0..gangs).collect::<Vec<_>>().chunks(100) {
        for &g in wave {
            let n = GANG.min(processes - g * GANG);
            let from = NodeId((g * stride) % hosts);
            let call = ApiCall::NSpawn {
                tenant,
                n,
                spec: worker(u64::from(g)),
            };
            sim.call(from, call).expect("requester is up");
        }
        let until = sim.now() + Duration::from_secs(1);
        sim.run_until(until);
        for (_, _, reply) in sim.take_replies() {
            match reply {
                ApiReply::Spawned(Ok(pids)) => placed += pids.len(),
                other => panic!("a gang was not placed: {other:?}"),
            }
        }
    }
    let running: u32 = (0..gangs)
        .map(|g| sim.placement().running_of(u64::from(g)))
        .sum();
    println!(
        "placed {placed} processes of tenant {} on {hosts} hosts ({running} running)",
        tenant.0
    );
    let delivered = sim.stats().messages_delivered;
    let asker = NodeId(hosts / 2 + 1);
    let asked_at = sim.now();
    let id = sim
        .call(asker, ApiCall::Ps { tenant })
        .expect("asker is up");
    let mut answer = None;
    while answer.is_none() && sim.now() < asked_at + Duration::from_secs(5) {
        let until = sim.now() + Duration::from_millis(10);
        sim.run_until(until);
        answer = sim
            .take_replies()
            .into_iter()
            .find(|(i, _, _)| *i == id)
            .map(|(_, at, reply)| (at, reply));
    }
    let Some((at, ApiReply::Ps(ps))) = answer else {
        panic!("no ps answer within 5 simulated seconds: {answer:?}");
    };
    let latency = at.saturating_since(asked_at);
    println!(
        "ps listed {} processes ({} missing), {} hosts unanswered, in {:.1} simulated ms ({} messages delivered in the DC meanwhile)",
        ps.processes.len(),
        placed.saturating_sub(ps.processes.len()),
        ps.unanswered,
        latency.as_secs_f64() * 1e3,
        sim.stats().messages_delivered - delivered
    );
    println!("wall {:.1} s", wall.elapsed().as_secs_f64());
    println!("ps_simulated_ms={:.1}", latency.as_secs_f64() * 1e3);
}
