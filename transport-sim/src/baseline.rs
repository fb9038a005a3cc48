//! Baseline placers, run on exactly the workload and topology of a simulation,
//! for comparison with Nefele (`nefele-sim run ... --baseline bfd,sparrow`).
//!
//! The workload stream is regenerated from the simulation's workload seed: the
//! generator's RNG draws only the requests and their arrival gaps (the hosts
//! clients sit on come from another RNG), so a baseline sees the same requests
//! at the same times, with the same real run times.
//!
//! - **BFD**: an omniscient centralised best-fit-decreasing placer. It sees every
//!   host's free capacity instantly and answers in zero time; within a request,
//!   the largest units go first, each to the fitting host with the least free cpu.
//! - **Sparrow**: batch sampling (Ousterhout et al., SOSP 2013) with 2 probes per
//!   task: a request of `m` units probes `2m` random hosts and places its units on
//!   the least loaded probed hosts that fit. Without worker-side queues (a process
//!   needs its reservation now), a unit that fits no probed host fails the request.
//!   Its latency is two round trips across the DC (probe, then launch), at the
//!   mean of the `same_dc` latency; it sends 6 messages per unit.
//!
//! Both keep every request all-or-nothing and honour `together` (one host) and
//! `apart`/`spread` (distinct hosts). Baselines see no faults: hosts never crash.

use crate::config::SimConfig;
use crate::placement_sim::{PlacementFigures, Utilization};
use crate::topology::Topology;
use crate::workload::{env_number, generate, WorkloadConfig};
use nefele_core::host::Affinity;
use nefele_core::placement::api::Demand;
use nefele_core::{ApiCall, NodeId, ProcSpec, Time};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::time::Duration;

/// A baseline placer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Baseline {
    /// Omniscient centralised best-fit-decreasing.
    Bfd,
    /// Sparrow-style batch sampling, 2 probes per task.
    Sparrow,
}

impl std::str::FromStr for Baseline {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "bfd" => Ok(Baseline::Bfd),
            "sparrow" => Ok(Baseline::Sparrow),
            other => Err(format!(
                "unknown baseline {other:?} (expected bfd or sparrow)"
            )),
        }
    }
}

/// Processes that share a host, with their run times.
struct Unit {
    demand: Demand,
    runs_ms: Vec<(Demand, u64)>,
    apart: Option<String>,
}

fn specs_of(call: ApiCall) -> Vec<ProcSpec> {
    match call {
        ApiCall::Spawn { spec, .. } => vec![spec],
        ApiCall::NSpawn { n, spec, .. } => vec![spec; n as usize],
        ApiCall::CSpawn { specs, .. } => specs,
        _ => Vec::new(),
    }
}

fn units_of(specs: Vec<ProcSpec>) -> Vec<Unit> {
    let mut units: Vec<Unit> = Vec::new();
    let mut together: BTreeMap<String, usize> = BTreeMap::new();
    for s in specs {
        let d = Demand {
            cpu_millicores: s.resources.cpu_millicores.unwrap_or(500),
            memory_bytes: s.resources.memory_bytes.unwrap_or(512 << 20),
            accelerators: s.resources.accelerators.unwrap_or(0),
        };
        let run = env_number(&s.envp, "RUN_MS").unwrap_or(1000);
        let mut tag = None;
        let mut apart = None;
        for a in &s.affinity {
            match a {
                Affinity::Together(t) => tag = Some(t.clone()),
                Affinity::Apart(t) | Affinity::Spread(t) => apart = Some(t.clone()),
                Affinity::Near(_) => {}
            }
        }
        let known = tag.as_ref().and_then(|t| together.get(t).copied());
        let at = known.unwrap_or_else(|| {
            if let Some(t) = tag {
                together.insert(t, units.len());
            }
            units.push(Unit {
                demand: Demand::default(),
                runs_ms: Vec::new(),
                apart: None,
            });
            units.len() - 1
        });
        let u = &mut units[at];
        u.demand = u.demand.plus(d);
        u.runs_ms.push((d, run));
        u.apart = u.apart.take().or(apart);
    }
    units
}

/// Free capacity per host, indexed by free cpu for best fit.
struct Cluster {
    free: Vec<Demand>,
    capacity: Demand,
    by_cpu: BTreeSet<(u32, u32)>,
}

impl Cluster {
    fn take(&mut self, h: u32, d: Demand) {
        let f = &mut self.free[h as usize];
        self.by_cpu.remove(&(f.cpu_millicores, h));
        *f = f.minus(d);
        self.by_cpu.insert((f.cpu_millicores, h));
    }

    fn give(&mut self, h: u32, d: Demand) {
        let f = &mut self.free[h as usize];
        self.by_cpu.remove(&(f.cpu_millicores, h));
        *f = f.plus(d);
        self.by_cpu.insert((f.cpu_millicores, h));
    }
}

/// Runs `baseline` on the workload of `config` over `topology`.
#[must_use]
pub fn run(
    baseline: Baseline,
    config: &SimConfig,
    topology: &Topology,
    workload_seed: u64,
) -> PlacementFigures {
    let mut figures = PlacementFigures::default();
    let Some(w) = &config.workload else {
        return figures;
    };
    let hosts = topology.dc_hosts();
    let free: Vec<Demand> = (0..hosts)
        .map(|h| {
            let r = topology.resources(NodeId(h));
            Demand {
                cpu_millicores: r.cpu_millicores,
                memory_bytes: r.memory_bytes,
                accelerators: r.accelerators,
            }
        })
        .collect();
    let capacity = free.iter().fold(Demand::default(), |a, d| a.plus(*d));
    let by_cpu = free
        .iter()
        .enumerate()
        .map(|(h, d)| (d.cpu_millicores, h as u32))
        .collect();
    let mut c = Cluster {
        free,
        capacity,
        by_cpu,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(workload_seed);
    let mut probe_rng = ChaCha8Rng::seed_from_u64(workload_seed ^ 0x5350_4152_524f_5753);
    let mut exits: BinaryHeap<Reverse<(Time, u32, u32, u64)>> = BinaryHeap::new();
    let end = Time::ZERO + config.duration;
    let stop = w.stop.map_or(end, |s| Time::ZERO + s).min(end);
    let interval = config.check.interval;
    let mut next_sample = Time::ZERO + interval;
    let mut samples: Vec<(f64, f64)> = Vec::new();
    let mut now = Time::ZERO + w.start;
    let mut id = 0u64;
    let latency = config.network.latency.same_dc.base + config.network.latency.same_dc.jitter / 2;
    let sparrow_ms = (latency * 4).as_secs_f64() * 1e3;
    let mut messages = 0u64;
    while now <= stop {
        advance(
            &mut c,
            &mut exits,
            &mut next_sample,
            interval,
            now,
            w,
            &mut samples,
        );
        id += 1;
        let g = generate(w, &mut rng, id);
        figures.requests += 1;
        figures.gang_requests += u64::from(g.gang);
        let mut units = units_of(specs_of(g.call));
        units.sort_by_key(|u| Reverse(u.demand));
        let placed = match baseline {
            Baseline::Bfd => place_bfd(&mut c, &units),
            Baseline::Sparrow => {
                messages += 6 * units.len() as u64;
                place_sparrow(&mut c, &units, &mut probe_rng, hosts)
            }
        };
        match placed {
            Some(chosen) => {
                figures.placed_requests += 1;
                figures.placed_gang_requests += u64::from(g.gang);
                for (u, h) in units.iter().zip(chosen) {
                    for (d, run) in &u.runs_ms {
                        figures.placed_processes += 1;
                        let at = now + Duration::from_millis(*run);
                        exits.push(Reverse((at, h, d.cpu_millicores, d.memory_bytes)));
                    }
                }
            }
            None => {
                figures.rejected_requests += 1;
                *figures.rejections.entry("no_fit").or_default() += 1;
            }
        }
        let rate = w
            .rate_at(now.as_secs_f64(), config.duration.as_secs_f64())
            .max(1e-3);
        let gap: f64 = -rng.gen_range(f64::EPSILON..1.0f64).ln() / rate;
        now = now + Duration::from_secs_f64(gap);
    }
    let (p50, p99) = match baseline {
        Baseline::Bfd => (0.0, 0.0),
        Baseline::Sparrow => (sparrow_ms, sparrow_ms),
    };
    figures.latency_p50_ms = Some(p50);
    figures.latency_p99_ms = Some(p99);
    figures.placed_latency_p50_ms = Some(p50);
    figures.placed_latency_p99_ms = Some(p99);
    figures.rejected_latency_p99_ms = Some(p99);
    if figures.requests > 0 {
        figures.msgs_per_request = messages as f64 / figures.requests as f64;
    }
    if !samples.is_empty() {
        let n = samples.len() as f64;
        figures.mean_utilization = Utilization {
            cpu: samples.iter().map(|s| s.0).sum::<f64>() / n,
            memory: samples.iter().map(|s| s.1).sum::<f64>() / n,
        };
        figures.peak_utilization = crate::placement_sim::peak(&samples);
    }
    figures
}

/// Ends the processes due by `now` and takes the utilisation samples due by then.
fn advance(
    c: &mut Cluster,
    exits: &mut BinaryHeap<Reverse<(Time, u32, u32, u64)>>,
    next_sample: &mut Time,
    interval: Duration,
    now: Time,
    w: &WorkloadConfig,
    samples: &mut Vec<(f64, f64)>,
) {
    loop {
        let exit_at = exits.peek().map(|Reverse(e)| e.0);
        match exit_at {
            Some(at) if at <= now && at <= *next_sample => {
                if let Some(Reverse((_, h, cpu, mem))) = exits.pop() {
                    let d = Demand {
                        cpu_millicores: cpu,
                        memory_bytes: mem,
                        accelerators: 0,
                    };
                    c.give(h, d);
                }
            }
            _ if *next_sample <= now => {
                if next_sample.saturating_since(Time::ZERO) >= w.start {
                    let used = c.free.iter().fold(Demand::default(), |a, d| a.plus(*d));
                    let used = c.capacity.minus(used);
                    samples.push((
                        f64::from(used.cpu_millicores)
                            / f64::from(c.capacity.cpu_millicores.max(1)),
                        used.memory_bytes as f64 / c.capacity.memory_bytes.max(1) as f64,
                    ));
                }
                *next_sample = *next_sample + interval;
            }
            _ => return,
        }
    }
}

fn place_bfd(c: &mut Cluster, units: &[Unit]) -> Option<Vec<u32>> {
    place_with(c, units, |c, u, used| {
        c.by_cpu
            .range((u.demand.cpu_millicores, 0)..)
            .map(|(_, h)| *h)
            .find(|h| c.free[*h as usize].covers(u.demand) && !used(*h))
    })
}

fn place_sparrow(
    c: &mut Cluster,
    units: &[Unit],
    rng: &mut ChaCha8Rng,
    hosts: u32,
) -> Option<Vec<u32>> {
    let probes: Vec<u32> = (0..units.len() * 2)
        .map(|_| rng.gen_range(0..hosts))
        .collect();
    place_with(c, units, |c, u, used| {
        probes
            .iter()
            .copied()
            .filter(|h| c.free[*h as usize].covers(u.demand) && !used(*h))
            .max_by_key(|h| (c.free[*h as usize].cpu_millicores, Reverse(*h)))
    })
}

/// Places every unit with `pick`, or none of them.
fn place_with(
    c: &mut Cluster,
    units: &[Unit],
    pick: impl Fn(&Cluster, &Unit, &dyn Fn(u32) -> bool) -> Option<u32>,
) -> Option<Vec<u32>> {
    let mut chosen: Vec<u32> = Vec::with_capacity(units.len());
    let mut apart: BTreeSet<(String, u32)> = BTreeSet::new();
    for u in units {
        let used = |h: u32| {
            u.apart
                .as_ref()
                .is_some_and(|t| apart.contains(&(t.clone(), h)))
        };
        let Some(h) = pick(c, u, &used) else {
            for (u, h) in units.iter().zip(&chosen) {
                c.give(*h, u.demand);
            }
            return None;
        };
        c.take(h, u.demand);
        if let Some(t) = &u.apart {
            apart.insert((t.clone(), h));
        }
        chosen.push(h);
    }
    Some(chosen)
}
