//! Swarm testing: every seed draws a whole run — cluster size, topology, network
//! loss, duplication and reordering, discovery and federation timing, a list of
//! faults of every kind, a placement workload and, in some seeds, a supervision
//! workload (`Limits::supervision`; `--no-supervision` turns it off) and a messaging
//! workload (`Limits::messaging`; `--no-messaging`) — and runs it
//! with every checker on. Safety invariants are checked all the time; the faults stop early enough that
//! each run ends with a quiet phase in which liveness invariants must hold.
//!
//! Invariants of this module:
//! - [`draw`] depends on the seed and the [`Limits`] only, and every configuration it
//!   draws is valid (a refusal is reported as a failure of `swarm.valid-config`).
//! - Faults are drawn as an explicit list with explicit host selectors (never
//!   random mode, never "a random count of hosts"), so that a failing run's scenario
//!   file lists each fault and the shrinker ([`crate::shrink`]) can cut them one
//!   by one; every fault, undo included, is over by [`quiet_phase`] before the end.
//! - [`run_seeds`] runs seeds in parallel on `jobs` threads and returns the outcomes
//!   sorted by seed; what it returns, and so the [`Summary`], does not depend on `jobs`.
//!   Seeds are handed out in order, so a run stopped early (`keep_going`) has run a
//!   prefix of the seeds.
//!
//! Nothing here reads a clock: a wall-clock budget is the caller's `keep_going`.

use crate::checker::InvariantFailures;
use crate::config::SimConfig;
use crate::faults::{Fault, FaultAction, Selector};
use crate::sim::Simulation;
use crate::workload::WorkloadConfig;
use nefele_core::federation::FederationConfig;
use nefele_core::mix::splitmix64;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// The bounds a seed's configuration is drawn within.
#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// Agents, at least.
    pub min_nodes: u32,
    /// Agents, at most.
    pub max_nodes: u32,
    /// Simulated time, at least (raised when the quiet phase needs more).
    pub min_duration: Duration,
    /// Simulated time, at most (unless the quiet phase alone needs more).
    pub max_duration: Duration,
    /// Whether a third of the seeds also draw a supervision workload.
    pub supervision: bool,
    /// Whether a third of the seeds also draw a messaging workload (request and
    /// response, pub/sub, group sends of every pattern, failover), from a stream of
    /// its own.
    pub messaging: bool,
}

impl Default for Limits {
    /// 50 to 1,500 agents for 20 to 90 simulated seconds, every workload: a few
    /// seconds a seed.
    fn default() -> Self {
        Limits {
            min_nodes: 50,
            max_nodes: 1500,
            min_duration: Duration::from_secs(20),
            max_duration: Duration::from_secs(90),
            supervision: true,
            messaging: true,
        }
    }
}

impl Limits {
    /// Checks the bounds are ordered and non-empty.
    pub fn validate(&self) -> Result<(), String> {
        if self.min_nodes == 0 || self.min_nodes > self.max_nodes {
            return Err(format!(
                "nodes: need 1 <= min ({}) <= max ({})",
                self.min_nodes, self.max_nodes
            ));
        }
        if self.min_duration.is_zero() || self.min_duration > self.max_duration {
            return Err("duration: need 0 < min <= max".to_owned());
        }
        Ok(())
    }
}

/// The scenario name of seed `seed`.
#[must_use]
pub fn name(seed: u64) -> String {
    format!("swarm-{seed}")
}

/// How long a run drawn with `config`'s timing stays free of faults at its end: the
/// settle period or two discovery heartbeats, whichever is longer, plus ten seconds
/// in which liveness invariants are checked.
#[must_use]
pub fn quiet_phase(config: &SimConfig) -> Duration {
    config
        .check
        .settle
        .max(config.agent.discovery.heartbeat_period * 2)
        + Duration::from_secs(10)
}

/// Draws seed `seed`'s whole configuration within `limits`.
#[must_use]
pub fn draw(seed: u64, limits: &Limits) -> SimConfig {
    // The drawing stream is the seed's own, apart from the simulation's streams
    // (which start from `seed` itself).
    let mut rng = ChaCha8Rng::seed_from_u64(splitmix64(seed ^ 0x5357_4152_4d00_0000));
    let mut config = SimConfig {
        seed,
        ..SimConfig::default()
    };
    let (lo, hi) = (f64::from(limits.min_nodes), f64::from(limits.max_nodes));
    config.nodes = (lo.ln() + rng.gen::<f64>() * (hi.ln() - lo.ln()))
        .exp()
        .round()
        .clamp(lo, hi) as u32;
    config.topology.hosts_per_rack = *[8, 16, 20, 40, 64].choose(&mut rng).unwrap_or(&40);
    config.topology.racks_per_row = rng.gen_range(1..=8);

    let network = &mut config.network;
    network.loss = *[0.0, 0.0, 0.001, 0.005, 0.01, 0.02, 0.05]
        .choose(&mut rng)
        .unwrap_or(&0.0);
    network.duplicate = *[0.0, 0.0, 0.01, 0.02, 0.05]
        .choose(&mut rng)
        .unwrap_or(&0.0);
    network.reorder = *[0.0, 0.0, 0.05, 0.2].choose(&mut rng).unwrap_or(&0.0);
    network.reorder_window = Duration::from_millis(rng.gen_range(1..=5));

    let discovery = &mut config.agent.discovery;
    discovery.heartbeat_period = Duration::from_secs(*[1, 1, 2, 5].choose(&mut rng).unwrap_or(&1));
    discovery.neighbour_timeout = discovery.heartbeat_period * 7 / 2;
    let min_group = *[2, 3, 4, 4, 6, 8].choose(&mut rng).unwrap_or(&4);
    config.agent.federations = vec![FederationConfig {
        min_group,
        max_group: rng.gen_range(2 * min_group..=4 * min_group),
        period: Duration::from_millis(*[200, 300, 300, 500].choose(&mut rng).unwrap_or(&300)),
        suspect_periods: rng.gen_range(2..=3),
        ..FederationConfig::default()
    }];
    let f = &mut config.agent.federations[0];
    f.remove_periods = f.suspect_periods + rng.gen_range(1..=3);

    let quiet = quiet_phase(&config);
    let min = limits.min_duration.max(quiet + Duration::from_secs(10));
    let max = limits.max_duration.max(min);
    config.duration = Duration::from_secs(rng.gen_range(min.as_secs()..=max.as_secs()));
    let faults_end = config.duration - quiet;

    if rng.gen_bool(0.75) {
        config.workload = Some(workload(&mut rng, config.nodes, faults_end));
    }
    config.faults = faults(&mut rng, &config, faults_end);
    if limits.supervision {
        // From a stream of its own, so that adding it left every other draw as it was.
        let mut srng = ChaCha8Rng::seed_from_u64(splitmix64(seed ^ 0x5355_5045_5256_0000));
        if srng.gen_bool(0.3) {
            config.supervision = Some(supervision(&mut srng, config.nodes));
        }
    }
    if limits.messaging {
        let mut mrng = ChaCha8Rng::seed_from_u64(splitmix64(seed ^ 0x4d45_5353_4147_0000));
        if mrng.gen_bool(0.3) {
            config.messaging = Some(messaging(&mut mrng, config.nodes, faults_end));
        }
    }
    config
}

/// A messaging workload for `nodes` agents: request and response always, pub/sub
/// and group sends in about half the draws, failover and external calls in about a
/// third, over a few tenants, reliable or not.
fn messaging(
    rng: &mut ChaCha8Rng,
    nodes: u32,
    faults_end: Duration,
) -> crate::messaging_sim::MessagingWorkload {
    use crate::messaging_sim::{
        ExternalWorkload, FailoverWorkload, GroupWorkload, MessagingWorkload, PubSubWorkload,
        RrWorkload,
    };
    let processes = |rng: &mut ChaCha8Rng, most: u32| rng.gen_range(2..=most.min(nodes).max(2));
    let by_name = rng.gen_bool(0.5);
    let rr = RrWorkload {
        pairs: processes(rng, 100),
        rate_per_s: *[50.0, 500.0, 2000.0].choose(rng).unwrap_or(&500.0),
        by_name,
        lookup_fraction: if by_name { 0.1 } else { 0.0 },
        contenders: if by_name { rng.gen_range(0..=1) } else { 0 },
    };
    let pubsub = rng.gen_bool(0.5).then(|| {
        let fanout_max = processes(rng, 40);
        PubSubWorkload {
            topics: rng.gen_range(1..=5),
            fanout_min: 1,
            fanout_max,
            rate_per_s: *[10.0, 100.0].choose(rng).unwrap_or(&10.0),
            slow_subscribers: rng.gen_range(0..=1),
            ..PubSubWorkload::default()
        }
    });
    let groups = rng.gen_bool(0.5).then(|| GroupWorkload {
        groups: rng.gen_range(1..=4),
        members: processes(rng, 10),
        clients: rng.gen_range(1..=3),
        rate_per_s: *[10.0, 100.0].choose(rng).unwrap_or(&10.0),
        broadcast: rng.gen_bool(0.5),
        ..GroupWorkload::default()
    });
    let failover = rng.gen_bool(0.3).then(|| FailoverWorkload {
        groups: rng.gen_range(1..=3),
        members: rng.gen_range(2..=3),
        clients: rng.gen_range(1..=3),
        rate_per_s: *[20.0, 200.0].choose(rng).unwrap_or(&20.0),
        crash_primaries_at: None,
    });
    let mut workload = MessagingWorkload {
        start: Duration::from_secs(rng.gen_range(2..=6)),
        stop: Some(faults_end),
        tenants: rng.gen_range(1..=3),
        reliable: rng.gen_bool(0.5),
        rr: Some(rr),
        pubsub,
        groups,
        failover,
        ..MessagingWorkload::default()
    };
    // Drawn last, so that adding it left every earlier draw as it was: calls to
    // the external echo service through the proxies (the first host of each of
    // the first three racks), which the faults crash, stall and cut off too.
    workload.external = rng.gen_bool(0.3).then(|| ExternalWorkload {
        clients: processes(rng, 10),
        rate_per_s: *[20.0, 200.0].choose(rng).unwrap_or(&20.0),
    });
    workload
}

/// A supervision workload: a group or two of supervised children, spawned at a
/// random host, one of them perhaps crashing in a loop.
fn supervision(rng: &mut ChaCha8Rng, nodes: u32) -> crate::supervision_sim::SupervisionWorkload {
    let children = rng.gen_range(5..=100.min(nodes));
    crate::supervision_sim::SupervisionWorkload {
        start: Duration::from_secs(rng.gen_range(2..=6)),
        home: rng.gen_range(0..nodes),
        groups: rng.gen_range(1..=2),
        children,
        strategy: (*["one-for-one", "one-for-one", "one-for-all", "rest-for-one"]
            .choose(rng)
            .unwrap_or(&"one-for-one"))
        .to_owned(),
        crash_loop: rng.gen_range(0..=1),
        cpu_millicores: *[250, 1000, 4000].choose(rng).unwrap_or(&1000),
        ..crate::supervision_sim::SupervisionWorkload::default()
    }
}

/// A placement workload for `nodes` agents.
fn workload(rng: &mut ChaCha8Rng, nodes: u32, faults_end: Duration) -> WorkloadConfig {
    let pick = |rng: &mut ChaCha8Rng, from: &[f64]| *from.choose(rng).unwrap_or(&0.0);
    WorkloadConfig {
        start: Duration::from_secs(rng.gen_range(2..=8)),
        // Now and then the requests stop early, so that the hosts drain.
        stop: rng.gen_bool(0.2).then_some(faults_end),
        rate_per_s: (f64::from(nodes) * pick(rng, &[0.05, 0.2, 0.5, 1.0])).clamp(5.0, 1500.0),
        rate_end_per_s: None,
        gang_fraction: pick(rng, &[0.0, 0.05, 0.2, 0.4]),
        cspawn_fraction: pick(rng, &[0.0, 0.02, 0.1, 0.3]),
        max_gang: *[2, 8, 32, 64].choose(rng).unwrap_or(&8),
        affinity_fraction: pick(rng, &[0.0, 0.5, 0.8]),
        mean_run: Duration::from_secs(*[1, 5, 10, 30].choose(rng).unwrap_or(&10)),
        tenants: rng.gen_range(1..=20),
        cpu_min_millicores: *[100, 250, 500].choose(rng).unwrap_or(&250),
    }
}

/// The kinds of fault drawn, and their weights.
#[derive(Clone, Copy)]
enum Kind {
    CrashRestart,
    CrashForGood,
    CrashRack,
    Leave,
    Pause,
    IsolateRack,
    SplitRack,
    IsolateRow,
    Skew,
    LossBurst,
    Heal,
}

const KINDS: [(Kind, u32); 11] = [
    (Kind::CrashRestart, 25),
    (Kind::CrashForGood, 5),
    (Kind::CrashRack, 3),
    (Kind::Leave, 5),
    (Kind::Pause, 15),
    (Kind::IsolateRack, 10),
    (Kind::SplitRack, 5),
    (Kind::IsolateRow, 3),
    (Kind::Skew, 10),
    (Kind::LossBurst, 5),
    (Kind::Heal, 3),
];

/// Faults from 1 s until `end` (every undo included), at a mean interval drawn per seed.
fn faults(rng: &mut ChaCha8Rng, config: &SimConfig, end: Duration) -> Vec<Fault> {
    let nodes = config.nodes;
    let per_rack = config.topology.hosts_per_rack;
    let racks = nodes.div_ceil(per_rack);
    let rows = racks.div_ceil(config.topology.racks_per_row);
    let mean = *[0.5, 1.0, 2.0, 5.0, 10.0].choose(rng).unwrap_or(&2.0);
    let total: u32 = KINDS.iter().map(|(_, w)| w).sum();
    let mut t = Duration::from_secs(1);
    let mut out = Vec::new();
    while out.len() < 60 {
        t += Duration::from_secs_f64(-mean * (1.0 - rng.gen::<f64>()).ln());
        let t_ms = Duration::from_millis(t.as_millis() as u64);
        if t_ms + Duration::from_millis(500) >= end {
            break;
        }
        let mut pick = rng.gen_range(0..total);
        let kind = KINDS
            .iter()
            .find(|(_, w)| {
                let hit = pick < *w;
                pick = pick.saturating_sub(*w);
                hit
            })
            .map_or(Kind::CrashRestart, |(k, _)| *k);
        // How long it lasts: 0.5 to 8 s, cut so that it is over by `end`.
        let room = (end - t_ms).as_millis() as u64;
        let lasting = Duration::from_millis(rng.gen_range(500..=8_000).min(room));
        let node = |rng: &mut ChaCha8Rng| Selector::Node(rng.gen_range(0..nodes));
        let (action, duration) = match kind {
            Kind::CrashRestart => (FaultAction::Restart(node(rng)), Some(lasting)),
            Kind::CrashForGood => (FaultAction::Crash(node(rng)), None),
            Kind::CrashRack => (
                FaultAction::Crash(Selector::Rack(rng.gen_range(0..racks))),
                Some(lasting),
            ),
            Kind::Leave => (
                FaultAction::Leave(node(rng)),
                rng.gen_bool(0.5).then_some(lasting),
            ),
            Kind::Pause => {
                let count = rng.gen_range(1..=3.min(nodes));
                let mut all: Vec<u32> = (0..nodes).collect();
                let (chosen, _) = all.partial_shuffle(rng, count as usize);
                let mut chosen = chosen.to_vec();
                chosen.sort_unstable();
                (FaultAction::Pause(Selector::Nodes(chosen)), Some(lasting))
            }
            Kind::IsolateRack if racks > 1 => (
                FaultAction::Partition {
                    a: Selector::Rack(rng.gen_range(0..racks)),
                    b: Selector::All,
                    asymmetric: rng.gen_bool(0.2),
                },
                Some(lasting),
            ),
            Kind::IsolateRow if rows > 1 => (
                FaultAction::Partition {
                    a: Selector::Row(rng.gen_range(0..rows)),
                    b: Selector::All,
                    asymmetric: false,
                },
                Some(lasting),
            ),
            Kind::SplitRack | Kind::IsolateRack | Kind::IsolateRow => {
                let rack = rng.gen_range(0..racks);
                let first = rack * per_rack;
                let size = per_rack.min(nodes - first);
                (
                    FaultAction::Partition {
                        a: Selector::Range([first, first + size / 2]),
                        b: Selector::Rack(rack),
                        asymmetric: rng.gen_bool(0.3),
                    },
                    Some(lasting),
                )
            }
            Kind::Skew => (
                FaultAction::Skew {
                    hosts: node(rng),
                    offset_ms: rng.gen_range(-500..2_000),
                    drift_ppm: rng.gen_range(-200..200),
                },
                None,
            ),
            Kind::LossBurst => (
                FaultAction::Loss(*[0.1, 0.2, 0.5].choose(rng).unwrap_or(&0.2)),
                Some(lasting),
            ),
            Kind::Heal => (FaultAction::Heal, None),
        };
        out.push(Fault {
            at: t_ms,
            action,
            duration,
            line: None,
        });
    }
    out
}

/// What one seed's run found.
#[derive(Clone, Debug)]
pub struct SeedOutcome {
    /// The seed.
    pub seed: u64,
    /// Its configuration.
    pub config: SimConfig,
    /// Invariant evaluations run.
    pub checks: u64,
    /// The invariants that failed, with their counts and first failure.
    pub failures: BTreeMap<&'static str, InvariantFailures>,
    /// The run's trace hash (a replay must give the same).
    pub trace_hash: String,
}

impl SeedOutcome {
    /// Whether any invariant failed.
    #[must_use]
    pub fn failed(&self) -> bool {
        !self.failures.is_empty()
    }

    /// The first failure of the run (the earliest; by name among equals).
    #[must_use]
    pub fn first_failure(&self) -> Option<&InvariantFailures> {
        self.failures
            .values()
            .min_by(|a, b| a.first.at_s.total_cmp(&b.first.at_s))
    }
}

/// The scenario file that replays `outcome`'s run, to be written at `path`: comment
/// lines naming the failure and the commands to replay and shrink it, then the
/// scenario (see [`crate::scenario_toml`]).
#[must_use]
pub fn failure_file(outcome: &SeedOutcome, path: &std::path::Path) -> String {
    let what = outcome.first_failure().map_or_else(
        || "passed".to_owned(),
        |f| {
            format!(
                "{} at {:.3}s: {}",
                f.first.invariant,
                f.first.at_s,
                f.first.message.replace('\n', " ")
            )
        },
    );
    format!(
        "# nefele-sim swarm, seed {}: {what}\n# replay: nefele-sim run --scenario {}\n# shrink: nefele-sim shrink {}\n{}",
        outcome.seed,
        path.display(),
        path.display(),
        crate::scenario_toml::to_toml(&name(outcome.seed), &outcome.config),
    )
}

/// Runs `config` to its end, after `prepare` (which may add invariants), and returns
/// the outcome.
pub fn run_config(config: SimConfig, prepare: &(dyn Fn(&mut Simulation) + Sync)) -> SeedOutcome {
    let seed = config.seed;
    match Simulation::new(config.clone()) {
        Ok(mut sim) => {
            prepare(&mut sim);
            sim.run(|_| {});
            let report = sim.invariants();
            SeedOutcome {
                seed,
                checks: report.checks,
                failures: report.by_invariant.clone(),
                trace_hash: sim.trace_hash(),
                config,
            }
        }
        Err(e) => {
            let first = crate::checker::Violation {
                at_s: 0.0,
                invariant: "swarm.valid-config",
                message: e.to_string(),
            };
            SeedOutcome {
                seed,
                checks: 0,
                failures: BTreeMap::from([(
                    first.invariant,
                    InvariantFailures {
                        violations: 1,
                        first,
                    },
                )]),
                trace_hash: String::new(),
                config,
            }
        }
    }
}

/// Runs every seed of `seeds` on `jobs` threads while `keep_going()` says so; calls
/// `on_outcome` as each finishes (from the thread that ran it, in no set order).
/// Returns the outcomes sorted by seed.
pub fn run_seeds(
    seeds: Range<u64>,
    limits: &Limits,
    jobs: usize,
    prepare: &(dyn Fn(&mut Simulation) + Sync),
    keep_going: &(dyn Fn() -> bool + Sync),
    on_outcome: &(dyn Fn(&SeedOutcome) + Sync),
) -> Vec<SeedOutcome> {
    let runner = || -> Box<dyn FnMut(u64) -> SeedOutcome + '_> {
        Box::new(|seed| run_config(draw(seed, limits), prepare))
    };
    run_each(seeds, jobs, &runner, keep_going, on_outcome)
}

/// Runs every seed of `seeds` on `jobs` threads while `keep_going()` says so, each
/// thread with a runner of its own from `runner()` (which may hold a connection);
/// calls `on_outcome` as each finishes (in no set order). Returns the outcomes
/// sorted by seed.
pub fn run_each<'a>(
    seeds: Range<u64>,
    jobs: usize,
    runner: &(dyn Fn() -> Box<dyn FnMut(u64) -> SeedOutcome + 'a> + Sync),
    keep_going: &(dyn Fn() -> bool + Sync),
    on_outcome: &(dyn Fn(&SeedOutcome) + Sync),
) -> Vec<SeedOutcome> {
    let next = AtomicU64::new(seeds.start);
    let outcomes = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| {
                let mut run = runner();
                loop {
                    if !keep_going() {
                        return;
                    }
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= seeds.end {
                        return;
                    }
                    let outcome = run(seed);
                    on_outcome(&outcome);
                    outcomes
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push(outcome);
                }
            });
        }
    });
    let mut outcomes = outcomes
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    outcomes.sort_by_key(|o| o.seed);
    outcomes
}

/// The table a swarm prints: seeds run, and failures by invariant. Built from outcomes
/// sorted by seed, it depends on nothing else (not on the number of threads).
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    /// Seeds run.
    pub seeds: Vec<u64>,
    /// Per invariant that failed somewhere: the failing seeds and the violations in all.
    pub by_invariant: BTreeMap<&'static str, (Vec<u64>, u64)>,
    /// The failing seeds with their first failure: (seed, invariant, at_s, message).
    pub failures: Vec<(u64, &'static str, f64, String)>,
    /// Agents and simulated seconds over all seeds run.
    pub agents: u64,
    /// Simulated seconds over all seeds run.
    pub sim_seconds: u64,
    /// Faults over all seeds run.
    pub faults: u64,
}

impl Summary {
    /// The summary of `outcomes` (in any order).
    #[must_use]
    pub fn of(outcomes: &[SeedOutcome]) -> Self {
        let mut sorted: Vec<&SeedOutcome> = outcomes.iter().collect();
        sorted.sort_by_key(|o| o.seed);
        let mut by_invariant: BTreeMap<&'static str, (Vec<u64>, u64)> = BTreeMap::new();
        let mut failures = Vec::new();
        for o in &sorted {
            for (name, f) in &o.failures {
                let entry = by_invariant.entry(name).or_default();
                entry.0.push(o.seed);
                entry.1 += f.violations;
            }
            if let Some(f) = o.first_failure() {
                failures.push((
                    o.seed,
                    f.first.invariant,
                    f.first.at_s,
                    f.first.message.clone(),
                ));
            }
        }
        Summary {
            seeds: sorted.iter().map(|o| o.seed).collect(),
            by_invariant,
            failures,
            agents: sorted.iter().map(|o| u64::from(o.config.nodes)).sum(),
            sim_seconds: sorted.iter().map(|o| o.config.duration.as_secs()).sum(),
            faults: sorted.iter().map(|o| o.config.faults.len() as u64).sum(),
        }
    }

    /// Whether every seed passed.
    #[must_use]
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let range = match (self.seeds.first(), self.seeds.last()) {
            (Some(a), Some(b)) => format!("{a}..={b}"),
            _ => "none".to_owned(),
        };
        writeln!(
            f,
            "swarm: {} seeds ({range}), {} passed, {} failed; {} agents, {} simulated s, {} faults in all",
            self.seeds.len(),
            self.seeds.len() - self.failures.len(),
            self.failures.len(),
            self.agents,
            self.sim_seconds,
            self.faults,
        )?;
        writeln!(
            f,
            "{:<32} {:>6} {:>11}  failing seeds",
            "invariant", "seeds", "violations"
        )?;
        for (name, (seeds, violations)) in &self.by_invariant {
            let list: Vec<String> = seeds.iter().take(20).map(u64::to_string).collect();
            let more = if seeds.len() > 20 { " …" } else { "" };
            writeln!(
                f,
                "{name:<32} {:>6} {violations:>11}  {}{more}",
                seeds.len(),
                list.join(" ")
            )?;
        }
        if self.by_invariant.is_empty() {
            writeln!(f, "{:<32} {:>6} {:>11}", "(none)", 0, 0)?;
        }
        for (seed, invariant, at_s, message) in &self.failures {
            writeln!(f, "seed {seed}: {invariant} at {at_s:.3}s: {message}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_depend_on_the_seed_only_and_end_quiet() {
        let limits = Limits::default();
        for seed in 0..100 {
            let config = draw(seed, &limits);
            let text = |c: &SimConfig| crate::scenario_toml::to_toml("x", c);
            assert_eq!(text(&config), text(&draw(seed, &limits)));
            assert!((50..=1500).contains(&config.nodes), "{seed}");
            let end = config.duration - quiet_phase(&config);
            for fault in &config.faults {
                let over = fault.at + fault.duration.unwrap_or_default();
                assert!(over <= end, "seed {seed}: {fault:?} ends after {end:?}");
            }
            config.agent.validate().expect("valid agent config");
            Simulation::new(config).expect("a valid run");
        }
        assert_ne!(draw(1, &limits).nodes, draw(2, &limits).nodes);
    }
}
