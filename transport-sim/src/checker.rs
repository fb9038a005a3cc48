//! Cluster-wide invariant checks, run by the simulator outside the code under test.
//!
//! The simulator calls [`Checker::run`] every check interval with a read-only
//! [`ClusterView`]. Each [`Invariant`] says whether it holds only once the
//! cluster has been free of faults for the settle period (liveness:
//! "discovery has converged") or always (safety: "no message exceeds the
//! MTU"). Violations are counted, and the first is kept with its time, for the
//! report. Services add their invariants here as they are built.

use crate::topology::Topology;
use nefele_core::wire::CONTROL_MTU;
use nefele_core::{Agent, NodeId, Time};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// What an invariant may look at: the whole cluster, read only.
pub struct ClusterView<'a> {
    /// The simulated time.
    pub now: Time,
    /// The DC.
    pub topology: &'a Topology,
    /// Each host's agent, `None` while the host is down.
    pub agents: &'a [Option<&'a Agent>],
    /// Whether each host is stalled by a pause fault.
    pub paused: &'a [bool],
    /// Whether a partition is in force.
    pub partitioned: bool,
    /// The largest frame sent since the previous check, in bytes.
    pub max_frame_since_last_check: usize,
    /// When each host went down, if it is down.
    pub down_since: &'a [Option<Time>],
    /// When a message of each host was last delivered while it was down (one its
    /// receiver had not read before it went down, held back by the receiver's pause or
    /// the network); `Time::ZERO` if never.
    pub delivered_while_down: &'a [Time],
}

impl ClusterView<'_> {
    /// The agents that are up and not stalled, with their ids.
    pub fn live(&self) -> impl Iterator<Item = (NodeId, &Agent)> + '_ {
        self.agents
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.paused[*i])
            .filter_map(|(i, a)| a.map(|a| (NodeId(i as u32), a)))
    }

    /// If host `node` is down: since when it has been silent, as far as the others can
    /// tell: when it went down, or the last delivery of a message it sent before, if
    /// later. Agents forget a peer only a timeout after they last heard it.
    #[must_use]
    pub fn silent_since(&self, node: NodeId) -> Option<Time> {
        let i = node.0 as usize;
        let down = self.down_since.get(i).copied().flatten()?;
        Some(
            down.max(
                self.delivered_while_down
                    .get(i)
                    .copied()
                    .unwrap_or(Time::ZERO),
            ),
        )
    }

    /// Whether host `node` is up and not stalled.
    #[must_use]
    pub fn is_live(&self, node: NodeId) -> bool {
        let i = node.0 as usize;
        self.agents[i].is_some() && !self.paused[i]
    }
}

/// A property of the whole cluster.
pub trait Invariant {
    /// A short, stable name for reports.
    fn name(&self) -> &'static str;
    /// How long the cluster must have been free of faults (none in force either) before
    /// it must hold; `None` if it must always hold. The settle period of the run is
    /// passed in; an invariant may need longer.
    fn needs_quiet(&self, settle: Duration) -> Option<Duration>;
    /// Run at every `stride`-th check only (for slow properties that are costly to check).
    fn stride(&self) -> u64 {
        1
    }
    /// `Err` with a description of the first counterexample found.
    fn check(&mut self, view: &ClusterView<'_>) -> Result<(), String>;
}

/// A violation, as reported.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Violation {
    /// When it was seen, in simulated seconds.
    pub at_s: f64,
    /// Which invariant.
    pub invariant: &'static str,
    /// The counterexample.
    pub message: String,
}

/// Invariant counts for the report.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct InvariantReport {
    /// Invariant evaluations run.
    pub checks: u64,
    /// Evaluations that failed.
    pub violations: u64,
    /// The first failure, if any.
    pub first_violation: Option<Violation>,
    /// Per invariant that failed: how many evaluations failed, and the first of them
    /// (so a later failure of another invariant is not hidden by the first one).
    pub by_invariant: BTreeMap<&'static str, InvariantFailures>,
}

/// The failures of one invariant in a run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct InvariantFailures {
    /// Evaluations that failed.
    pub violations: u64,
    /// The first of them.
    pub first: Violation,
}

impl InvariantReport {
    /// Counts a failed evaluation.
    fn fail(&mut self, violation: Violation) {
        self.violations += 1;
        self.first_violation
            .get_or_insert_with(|| violation.clone());
        self.by_invariant
            .entry(violation.invariant)
            .and_modify(|f| f.violations += 1)
            .or_insert(InvariantFailures {
                violations: 1,
                first: violation,
            });
    }
}

/// Runs the invariants and counts the results.
pub struct Checker {
    invariants: Vec<Box<dyn Invariant>>,
    report: InvariantReport,
    round: u64,
}

impl Checker {
    /// The built-in invariants; `neighbour_timeout` is discovery's.
    #[must_use]
    pub fn new(neighbour_timeout: Duration, heartbeat_period: Duration) -> Self {
        Checker {
            invariants: vec![
                Box::new(ControlMtu),
                Box::new(DiscoveryConverged {
                    timeout: neighbour_timeout + heartbeat_period * 2,
                    heartbeat_period,
                }),
            ],
            report: InvariantReport::default(),
            round: 0,
        }
    }
}

impl Checker {
    /// Adds an invariant.
    pub fn add(&mut self, invariant: Box<dyn Invariant>) {
        self.invariants.push(invariant);
    }

    /// Evaluates every invariant that applies: `quiet` is how long the cluster has been
    /// free of faults (`None` while one is in force), `settle` the run's settle period.
    pub fn run(&mut self, view: &ClusterView<'_>, quiet: Option<Duration>, settle: Duration) {
        self.round += 1;
        for inv in &mut self.invariants {
            let applies = match inv.needs_quiet(settle) {
                None => true,
                Some(need) => quiet.is_some_and(|q| q >= need),
            };
            if !applies || !self.round.is_multiple_of(inv.stride()) {
                continue;
            }
            self.report.checks += 1;
            if let Err(message) = inv.check(view) {
                self.report.fail(Violation {
                    at_s: view.now.as_secs_f64(),
                    invariant: inv.name(),
                    message,
                });
            }
        }
    }

    /// Records the result of an invariant evaluated elsewhere (counted only when `settled`).
    pub fn record(
        &mut self,
        now: Time,
        name: &'static str,
        result: Result<(), String>,
        settled: bool,
    ) {
        if !settled {
            return;
        }
        self.report.checks += 1;
        if let Err(message) = result {
            self.report.fail(Violation {
                at_s: now.as_secs_f64(),
                invariant: name,
                message,
            });
        }
    }

    /// The counts so far.
    #[must_use]
    pub fn report(&self) -> &InvariantReport {
        &self.report
    }
}

/// Safety: every message fits one datagram ([`CONTROL_MTU`]).
struct ControlMtu;

impl Invariant for ControlMtu {
    fn name(&self) -> &'static str {
        "control-mtu"
    }
    fn needs_quiet(&self, _settle: Duration) -> Option<Duration> {
        None
    }
    fn check(&mut self, view: &ClusterView<'_>) -> Result<(), String> {
        let max = view.max_frame_since_last_check;
        if max < CONTROL_MTU {
            Ok(())
        } else {
            Err(format!(
                "a {max}-byte message exceeds the {CONTROL_MTU}-byte MTU"
            ))
        }
    }
}

/// Liveness: once settled, every live agent knows every live agent of its
/// broadcast domain, and lists no agent that has been silent for longer than the
/// neighbour timeout (plus a heartbeat period for the sweep): down, and no message of
/// it delivered since ([`ClusterView::silent_since`]; an agent paused while a peer
/// left reads the peer's last heartbeat when it resumes, and keeps the peer a timeout
/// from then). Settled means two
/// heartbeat periods without faults at least: an announcement lost to a fault is
/// only made up for by the next heartbeat.
struct DiscoveryConverged {
    timeout: Duration,
    heartbeat_period: Duration,
}

impl Invariant for DiscoveryConverged {
    fn name(&self) -> &'static str {
        "discovery-converged"
    }
    fn needs_quiet(&self, settle: Duration) -> Option<Duration> {
        Some(settle.max(self.heartbeat_period * 2))
    }
    fn stride(&self) -> u64 {
        // Discovery converges over heartbeat periods of seconds; every 8th check is plenty.
        8
    }
    fn check(&mut self, view: &ClusterView<'_>) -> Result<(), String> {
        let long_dead = |n: NodeId| {
            view.silent_since(n)
                .is_some_and(|since| view.now.saturating_since(since) > self.timeout)
        };
        let mut live_in_domain = Vec::new();
        for domain in 0..view.topology.domains() {
            live_in_domain.clear();
            live_in_domain.extend(
                view.topology
                    .domain_members(domain)
                    .map(NodeId)
                    .filter(|n| view.is_live(*n)),
            );
            for &node in &live_in_domain {
                let Some(agent) = view.agents[node.0 as usize] else {
                    continue;
                };
                let mut expected = live_in_domain
                    .iter()
                    .copied()
                    .filter(|n| *n != node)
                    .peekable();
                for (known, _) in agent.discovery().neighbours() {
                    if let Some(missing) = expected.next_if(|e| *e < known) {
                        return Err(format!("{node}: does not know live neighbour {missing}"));
                    }
                    if expected.next_if_eq(&known).is_none() && long_dead(known) {
                        return Err(format!(
                            "{node}: lists {known}, down for longer than the timeout"
                        ));
                    }
                }
                if let Some(missing) = expected.next() {
                    return Err(format!("{node}: does not know live neighbour {missing}"));
                }
            }
        }
        Ok(())
    }
}
