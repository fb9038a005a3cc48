//! The shrinker: cuts a failing run down while it still fails the same invariant.
//!
//! Greedy, in the style of delta debugging: from the current smallest failing
//! configuration, each pass proposes smaller candidates — a run cut just after the
//! failure, random faults written out as an explicit list, chunks of faults removed
//! (halves, then quarters, down to single faults), fewer hosts (faults' selectors
//! folded onto the hosts left), shorter faults and fewer hosts per fault, a lighter
//! workload, a cleaner network — and keeps the first that still fails. Passes repeat
//! until none makes progress or the budget of runs is spent.
//!
//! Invariants of this module:
//! - A candidate is kept only if the judge says it fails the target invariant; the
//!   result therefore fails it (the judge is deterministic: the simulator is).
//! - Every candidate a pass proposes is strictly smaller than the current one in one
//!   measure and no larger in the others, so the search ends.
//! - Candidates are tried in a fixed order, `jobs` at a time, and the first failing
//!   one in that order is kept: the result does not depend on `jobs` (only the number
//!   of runs spent does).

use crate::config::SimConfig;
use crate::faults::{FaultAction, Selector};
use crate::sim::Simulation;
use crate::topology::Topology;
use nefele_core::Time;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::time::Duration;

/// Runs a candidate: `Some(time of its first failure of the target)` if it fails it.
pub type Judge<'a> = dyn Fn(&SimConfig) -> Option<Duration> + Sync + 'a;

/// The judge of the simulator's own invariants: runs `config` (after `prepare`, which
/// may add invariants) until it fails `target`, or to its end. A configuration the
/// simulator refuses does not fail.
pub fn fails<'a>(
    target: &'a str,
    prepare: &'a (dyn Fn(&mut Simulation) + Sync),
) -> impl Fn(&SimConfig) -> Option<Duration> + Sync + 'a {
    move |config| {
        let mut sim = Simulation::new(config.clone()).ok()?;
        prepare(&mut sim);
        let end = Time::ZERO + config.duration;
        let mut t = Time::ZERO;
        // In steps of a second, so that a run stops soon after its failure.
        while t < end {
            t = (t + Duration::from_secs(1)).min(end);
            sim.run_until(t);
            if let Some(f) = sim.invariants().by_invariant.get(target) {
                return Some(Duration::from_secs_f64(f.first.at_s));
            }
        }
        None
    }
}

/// A pass: from the current configuration and the time it fails, smaller candidates
/// described in words, in the order to try them.
type Pass = fn(&SimConfig, Duration) -> Vec<(String, SimConfig)>;

/// Limits on the search.
pub struct Options<'a> {
    /// Candidates run at once.
    pub jobs: usize,
    /// Runs at most, in all.
    pub max_runs: u32,
    /// Asked before each batch of runs; `false` stops the search (a wall-clock budget).
    pub keep_going: &'a (dyn Fn() -> bool + Sync),
}

/// The smallest failing configuration found, and how it was found.
#[derive(Clone, Debug)]
pub struct Shrunk {
    /// The configuration.
    pub config: SimConfig,
    /// When it fails the target.
    pub fails_at: Duration,
    /// Runs spent.
    pub runs: u32,
    /// Each step kept, in words.
    pub steps: Vec<String>,
}

/// Why nothing could be shrunk.
#[derive(Debug, thiserror::Error)]
pub enum ShrinkError {
    /// The starting configuration does not fail the target.
    #[error("the scenario does not fail {0}")]
    DoesNotFail(String),
}

/// Hosts, faults and simulated time of `config`, for reports.
#[must_use]
pub fn size(config: &SimConfig) -> String {
    let random = if config.random_faults.is_some() {
        " and random faults"
    } else {
        ""
    };
    format!(
        "{} hosts, {} faults{random}, {:?} simulated{}",
        config.nodes,
        config.faults.len(),
        config.duration,
        config
            .workload
            .as_ref()
            .map_or_else(String::new, |w| format!(", {} requests/s", w.rate_per_s)),
    )
}

/// Shrinks `config`, which must fail `target` by `judge`.
pub fn shrink(
    config: SimConfig,
    target: &str,
    judge: &Judge<'_>,
    options: &Options<'_>,
) -> Result<Shrunk, ShrinkError> {
    let fails_at = judge(&config).ok_or_else(|| ShrinkError::DoesNotFail(target.to_owned()))?;
    let mut state = Search {
        best: Shrunk {
            config,
            fails_at,
            runs: 1,
            steps: Vec::new(),
        },
        judge,
        options,
    };
    let passes: [Pass; 8] = [
        truncate,
        materialize,
        drop_faults,
        fewer_nodes,
        smaller_faults,
        lighter_workload,
        cleaner_network,
        sparser_random_faults,
    ];
    loop {
        let mut progress = false;
        for pass in passes {
            while state.try_first(pass(&state.best.config, state.best.fails_at)) {
                progress = true;
            }
            if state.exhausted() {
                return Ok(state.best);
            }
        }
        if !progress {
            return Ok(state.best);
        }
    }
}

struct Search<'a> {
    best: Shrunk,
    judge: &'a Judge<'a>,
    options: &'a Options<'a>,
}

impl Search<'_> {
    fn exhausted(&self) -> bool {
        self.best.runs >= self.options.max_runs || !(self.options.keep_going)()
    }

    /// Tries `candidates` in order, `jobs` at a time; keeps the first that fails.
    fn try_first(&mut self, candidates: Vec<(String, SimConfig)>) -> bool {
        let jobs = self.options.jobs.max(1);
        for batch in candidates.chunks(jobs) {
            if self.exhausted() {
                return false;
            }
            let judge = self.judge;
            let results: Vec<Option<Duration>> = if batch.len() == 1 {
                vec![judge(&batch[0].1)]
            } else {
                std::thread::scope(|scope| {
                    let handles: Vec<_> = batch
                        .iter()
                        .map(|(_, c)| scope.spawn(move || judge(c)))
                        .collect();
                    handles
                        .into_iter()
                        .map(|h| h.join().unwrap_or(None))
                        .collect()
                })
            };
            self.best.runs += batch.len() as u32;
            if let Some((i, at)) = results
                .iter()
                .enumerate()
                .find_map(|(i, r)| r.map(|at| (i, at)))
            {
                let (step, config) = batch[i].clone();
                self.best.steps.push(step);
                self.best.config = config;
                self.best.fails_at = at;
                return true;
            }
        }
        false
    }
}

/// The run cut a little after its failure.
fn truncate(c: &SimConfig, at: Duration) -> Vec<(String, SimConfig)> {
    let tenths = (at + c.check.interval).as_millis().div_ceil(100) as u64;
    let end = Duration::from_millis(tenths * 100);
    if end >= c.duration {
        return Vec::new();
    }
    let mut cut = c.clone();
    cut.duration = end;
    vec![(format!("run for {end:?}"), cut)]
}

/// Random faults written out as an explicit list (so they can be cut one by one).
/// Hosts drawn at random when a fault strikes may then differ: the judge decides.
fn materialize(c: &SimConfig, _: Duration) -> Vec<(String, SimConfig)> {
    if c.random_faults.is_none() {
        return Vec::new();
    }
    let Ok(sim) = Simulation::new(c.clone()) else {
        return Vec::new();
    };
    let mut explicit = c.clone();
    explicit.faults = sim.fault_schedule().to_vec();
    explicit.random_faults = None;
    vec![("random faults written out".to_owned(), explicit)]
}

/// Chunks of faults removed: all, then halves, quarters, …, single faults.
fn drop_faults(c: &SimConfig, _: Duration) -> Vec<(String, SimConfig)> {
    let n = c.faults.len();
    let mut out = Vec::new();
    let mut chunk = n;
    while chunk > 0 {
        for start in (0..n).step_by(chunk) {
            let end = (start + chunk).min(n);
            let mut fewer = c.clone();
            fewer.faults.drain(start..end);
            out.push((format!("faults {start}..{end} of {n} removed"), fewer));
        }
        if chunk == 1 {
            break;
        }
        chunk = chunk.div_ceil(2);
    }
    out
}

/// Fewer hosts, smallest first, with the faults' selectors folded onto them.
fn fewer_nodes(c: &SimConfig, _: Duration) -> Vec<(String, SimConfig)> {
    let n = c.nodes;
    let mut targets: Vec<u32> = [n / 8, n / 4, n / 2, n * 3 / 4, n.saturating_sub(1)]
        .into_iter()
        .filter(|t| *t >= 1 && *t < n)
        .collect();
    targets.dedup();
    targets
        .into_iter()
        .filter_map(|nodes| {
            let mut fewer = c.clone();
            fewer.nodes = nodes;
            fit(&mut fewer)?;
            Some((format!("{nodes} hosts"), fewer))
        })
        .collect()
}

/// Folds the selectors of `c`'s faults, `start_down` and the supervision workload's
/// home onto its hosts, racks and rows (ids modulo their counts; ranges clipped);
/// `None` if the topology is invalid.
fn fit(c: &mut SimConfig) -> Option<()> {
    let topology = Topology::build(&c.topology, c.nodes, &mut ChaCha8Rng::seed_from_u64(0)).ok()?;
    let hosts = topology.len() as u32;
    let (racks, rows) = (topology.racks().max(1), topology.rows().max(1));
    let fold = |s: &Selector| -> Selector {
        match s {
            Selector::Node(n) => Selector::Node(n % hosts),
            Selector::Nodes(ns) => {
                let mut ns: Vec<u32> = ns.iter().map(|n| n % hosts).collect();
                ns.sort_unstable();
                ns.dedup();
                Selector::Nodes(ns)
            }
            Selector::Range([a, b]) => Selector::Range([(*a).min(hosts), (*b).min(hosts)]),
            Selector::Rack(r) => Selector::Rack(r % racks),
            Selector::Row(r) => Selector::Row(r % rows),
            other => other.clone(),
        }
    };
    for fault in &mut c.faults {
        map_selectors(&mut fault.action, &fold);
    }
    c.start_down = c.start_down.as_ref().map(&fold);
    if let Some(s) = &mut c.supervision {
        s.home %= hosts;
    }
    Some(())
}

fn map_selectors(action: &mut FaultAction, f: &impl Fn(&Selector) -> Selector) {
    match action {
        FaultAction::Crash(s)
        | FaultAction::Restart(s)
        | FaultAction::Leave(s)
        | FaultAction::Pause(s)
        | FaultAction::Skew { hosts: s, .. } => *s = f(s),
        FaultAction::Partition { a, b, .. } => {
            *a = f(a);
            *b = f(b);
        }
        FaultAction::Heal | FaultAction::Loss(_) => {}
    }
}

/// Each fault shorter (half as long), or hitting fewer hosts.
fn smaller_faults(c: &SimConfig, _: Duration) -> Vec<(String, SimConfig)> {
    let mut out = Vec::new();
    for (i, fault) in c.faults.iter().enumerate() {
        if let Some(d) = fault.duration.filter(|d| *d > Duration::from_millis(200)) {
            let mut shorter = c.clone();
            shorter.faults[i].duration = Some(Duration::from_millis((d / 2).as_millis() as u64));
            out.push((format!("fault {i} lasts {:?}", d / 2), shorter));
        }
        if let Some(fewer) = fewer_hosts(&fault.action) {
            let mut smaller = c.clone();
            smaller.faults[i].action = fewer;
            out.push((format!("fault {i} hits fewer hosts"), smaller));
        }
    }
    out
}

/// The action with a selector that hits fewer hosts, if it has one.
fn fewer_hosts(action: &FaultAction) -> Option<FaultAction> {
    let fewer = |s: &Selector| match s {
        Selector::Nodes(ns) if ns.len() > 1 => Some(Selector::Nodes(ns[..ns.len() / 2].to_vec())),
        Selector::Count(k) if *k > 1 => Some(Selector::Count(k / 2)),
        Selector::Fraction(f) if *f > 0.01 => Some(Selector::Fraction(f / 2.0)),
        Selector::Range([a, b]) if b - a > 1 => Some(Selector::Range([*a, a + (b - a) / 2])),
        _ => None,
    };
    let mut action = action.clone();
    match &mut action {
        FaultAction::Crash(s)
        | FaultAction::Restart(s)
        | FaultAction::Leave(s)
        | FaultAction::Pause(s)
        | FaultAction::Skew { hosts: s, .. } => *s = fewer(s)?,
        FaultAction::Partition { a, .. } => *a = fewer(a)?,
        FaultAction::Heal | FaultAction::Loss(_) => return None,
    }
    Some(action)
}

/// No workload, or a lighter one: fewer requests, smaller gangs, no affinity.
fn lighter_workload(c: &SimConfig, _: Duration) -> Vec<(String, SimConfig)> {
    let Some(w) = &c.workload else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut none = c.clone();
    none.workload = None;
    out.push(("no workload".to_owned(), none));
    let mut with = |what: &str, change: &dyn Fn(&mut crate::workload::WorkloadConfig)| {
        let mut lighter = c.clone();
        if let Some(w) = &mut lighter.workload {
            change(w);
        }
        out.push((format!("workload: {what}"), lighter));
    };
    if w.rate_per_s >= 2.0 {
        with("half the requests", &|w| {
            w.rate_per_s = (w.rate_per_s / 2.0).floor();
            w.rate_end_per_s = w.rate_end_per_s.map(|r| (r / 2.0).floor());
        });
    }
    if w.max_gang > 2 {
        with("gangs half as large", &|w| {
            w.max_gang = (w.max_gang / 2).max(2)
        });
    }
    if w.gang_fraction > 0.0 {
        with("no gangs", &|w| w.gang_fraction = 0.0);
    }
    if w.cspawn_fraction > 0.0 {
        with("no collections", &|w| w.cspawn_fraction = 0.0);
    }
    if w.affinity_fraction > 0.0 {
        with("no affinity", &|w| w.affinity_fraction = 0.0);
    }
    if w.tenants > 1 {
        with("one tenant", &|w| w.tenants = 1);
    }
    out
}

/// Less loss, duplication and reordering: none, then half.
fn cleaner_network(c: &SimConfig, _: Duration) -> Vec<(String, SimConfig)> {
    let mut out = Vec::new();
    let n = &c.network;
    for (name, p) in [
        ("loss", n.loss),
        ("duplicate", n.duplicate),
        ("reorder", n.reorder),
    ] {
        if p <= 0.0 {
            continue;
        }
        for to in [0.0, p / 2.0] {
            if to > 0.0 && to < 1e-4 {
                continue;
            }
            let mut cleaner = c.clone();
            let field = match name {
                "loss" => &mut cleaner.network.loss,
                "duplicate" => &mut cleaner.network.duplicate,
                _ => &mut cleaner.network.reorder,
            };
            *field = to;
            out.push((format!("network {name} {to}"), cleaner));
        }
    }
    out
}

/// Random faults rarer, or of fewer kinds (when writing them out did not keep the failure).
fn sparser_random_faults(c: &SimConfig, _: Duration) -> Vec<(String, SimConfig)> {
    let Some(r) = &c.random_faults else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut rarer = c.clone();
    if let Some(r) = &mut rarer.random_faults {
        r.mean_interval *= 2;
    }
    out.push((
        format!("random faults every {:?}", r.mean_interval * 2),
        rarer,
    ));
    if r.kinds.len() > 1 {
        for i in 0..r.kinds.len() {
            let mut fewer = c.clone();
            if let Some(r) = &mut fewer.random_faults {
                r.kinds.remove(i);
            }
            out.push((format!("random faults without {:?}", r.kinds[i]), fewer));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::Fault;

    fn faults(n: usize) -> SimConfig {
        SimConfig {
            nodes: 100,
            faults: (0..n)
                .map(|i| Fault {
                    at: Duration::from_secs(i as u64),
                    action: FaultAction::Restart(Selector::Node(90 + i as u32)),
                    duration: Some(Duration::from_secs(1)),
                    line: None,
                })
                .collect(),
            ..SimConfig::default()
        }
    }

    #[test]
    fn fault_chunks_go_from_all_to_single_faults() {
        let candidates = drop_faults(&faults(5), Duration::ZERO);
        let left: Vec<usize> = candidates.iter().map(|(_, c)| c.faults.len()).collect();
        // all; halves of 3 and 2; then chunks of 2 (2, 2, 1); then single faults.
        assert_eq!(left, vec![0, 2, 3, 3, 3, 4, 4, 4, 4, 4, 4]);
    }

    #[test]
    fn fewer_nodes_fold_the_faults_onto_the_hosts_left() {
        let candidates = fewer_nodes(&faults(3), Duration::ZERO);
        let (_, first) = &candidates[0];
        assert_eq!(first.nodes, 12);
        assert_eq!(
            first.faults[1].action,
            FaultAction::Restart(Selector::Node(91 % 12))
        );
        assert!(candidates
            .iter()
            .all(|(_, c)| Simulation::new(c.clone()).is_ok()));
    }

    #[test]
    fn fewer_nodes_keep_the_supervision_home_on_a_host() {
        let mut c = faults(3);
        c.supervision = Some(crate::supervision_sim::SupervisionWorkload {
            home: 91,
            ..Default::default()
        });
        for (what, fewer) in fewer_nodes(&c, Duration::ZERO) {
            assert!(Simulation::new(fewer).is_ok(), "{what}");
        }
        // Without the fold, a home past the hosts left is refused, not a panic.
        c.nodes = 12;
        assert!(matches!(
            Simulation::new(c),
            Err(crate::SimError::Workload(_))
        ));
    }

    #[test]
    fn a_judge_that_never_fails_is_refused() {
        let judge = |_: &SimConfig| None;
        let options = Options {
            jobs: 1,
            max_runs: 10,
            keep_going: &|| true,
        };
        assert!(shrink(faults(2), "x", &judge, &options).is_err());
    }
}
