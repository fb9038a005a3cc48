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
    /// Whether it only holds after the cluster has been free of faults for the settle period.
    fn needs_settled(&self) -> bool;
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
}

/// Runs the invariants and counts the results.
pub struct Checker {
    invariants: Vec<Box<dyn Invariant>>,
    report: InvariantReport,
}

impl Default for Checker {
    fn default() -> Self {
        Checker {
            invariants: vec![Box::new(ControlMtu), Box::new(DiscoveryConverged)],
            report: InvariantReport::default(),
        }
    }
}

impl Checker {
    /// Adds an invariant.
    pub fn add(&mut self, invariant: Box<dyn Invariant>) {
        self.invariants.push(invariant);
    }

    /// Evaluates every invariant that applies (`settled`: no fault for the settle period).
    pub fn run(&mut self, view: &ClusterView<'_>, settled: bool) {
        for inv in &mut self.invariants {
            if inv.needs_settled() && !settled {
                continue;
            }
            self.report.checks += 1;
            if let Err(message) = inv.check(view) {
                self.report.violations += 1;
                self.report.first_violation.get_or_insert(Violation {
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
            self.report.violations += 1;
            self.report.first_violation.get_or_insert(Violation {
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
    fn needs_settled(&self) -> bool {
        false
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

/// Liveness: once settled (and unpartitioned), every live agent knows exactly the
/// live agents of its broadcast domain.
struct DiscoveryConverged;

impl Invariant for DiscoveryConverged {
    fn name(&self) -> &'static str {
        "discovery-converged"
    }
    fn needs_settled(&self) -> bool {
        true
    }
    fn check(&mut self, view: &ClusterView<'_>) -> Result<(), String> {
        if view.partitioned {
            return Ok(());
        }
        for (node, agent) in view.live() {
            let domain = view.topology.location(node).domain;
            let expected = view
                .topology
                .domain_members(domain)
                .map(NodeId)
                .filter(|n| *n != node && view.is_live(*n));
            let known = agent.discovery().neighbours().map(|(id, _)| id);
            if let Some(diff) = first_difference(expected, known) {
                return Err(format!("{node}: {diff}"));
            }
        }
        Ok(())
    }
}

/// The first element in which two sorted id sequences differ, described.
fn first_difference(
    mut expected: impl Iterator<Item = NodeId>,
    mut known: impl Iterator<Item = NodeId>,
) -> Option<String> {
    let (mut e, mut k) = (expected.next(), known.next());
    loop {
        match (e, k) {
            (None, None) => return None,
            (Some(x), Some(y)) if x == y => {
                e = expected.next();
                k = known.next();
            }
            (Some(x), Some(y)) if x < y => {
                return Some(format!("does not know live neighbour {x}"))
            }
            (Some(x), None) => return Some(format!("does not know live neighbour {x}")),
            (_, Some(y)) => return Some(format!("lists {y}, which is not a live neighbour")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_are_described() {
        let ids = |v: &[u32]| {
            v.iter()
                .copied()
                .map(NodeId)
                .collect::<Vec<_>>()
                .into_iter()
        };
        assert_eq!(first_difference(ids(&[1, 2]), ids(&[1, 2])), None);
        assert!(first_difference(ids(&[1, 2]), ids(&[1]))
            .unwrap()
            .contains("n2"));
        assert!(first_difference(ids(&[1]), ids(&[1, 3]))
            .unwrap()
            .contains("lists n3"));
        assert!(first_difference(ids(&[1, 3]), ids(&[1, 2]))
            .unwrap()
            .contains("lists n2"));
    }
}
