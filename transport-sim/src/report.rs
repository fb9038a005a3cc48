//! The JSON report of a run, as `nefele-sim run --report FILE` writes it.
//!
//! Field names are part of the interface (scripts read them): add fields, do
//! not rename them.

use crate::baseline::Baseline;
use crate::checker::InvariantReport;
use crate::federation_check::FederationReport;
use crate::placement_sim::PlacementFigures;
use crate::sim::{Simulation, Stats};
use serde::Serialize;

/// Everything a run reports.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The scenario's name.
    pub scenario: String,
    /// The seed; rerunning with it reproduces the trace.
    pub seed: u64,
    /// Agents in the run.
    pub nodes: u64,
    /// Simulated seconds run.
    pub sim_seconds: f64,
    /// Events processed.
    pub events: u64,
    /// Messages delivered to agents.
    pub messages_delivered: u64,
    /// Messages lost.
    pub messages_dropped: u64,
    /// All counters.
    pub stats: Stats,
    /// Wall-clock seconds the run took.
    pub wall_seconds: f64,
    /// Events per wall-clock second.
    pub events_per_second: f64,
    /// The process's peak resident memory, in bytes (0 where the OS does not say).
    pub peak_rss_bytes: u64,
    /// Peak resident memory divided by agents.
    pub rss_bytes_per_agent: u64,
    /// The trace hash, 16 hex digits.
    pub trace_hash: String,
    /// Invariant checks and violations.
    pub invariants: InvariantReport,
    /// The federation: its first instance's figures, and every instance's.
    pub federation: FederationSummary,
    /// Placement under the workload, when the run has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub placement: Option<PlacementReport>,
    /// Messaging under the `[messaging]` workload, when the run has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messaging: Option<crate::messaging_sim::MessagingFigures>,
    /// Supervision under the `[supervision]` workload, when the run has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub supervision: Option<crate::supervision_sim::SupervisionFigures>,
}

/// The placement part of the report: Nefele's figures and, when asked for, the
/// baselines' on the same workload and topology.
#[derive(Clone, Debug, Serialize)]
pub struct PlacementReport {
    /// Nefele's distributed placement.
    pub nefele: PlacementFigures,
    /// The omniscient centralised best-fit-decreasing placer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bfd: Option<PlacementFigures>,
    /// Sparrow-style batch sampling.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sparrow: Option<PlacementFigures>,
}

/// The federation part of the report.
#[derive(Clone, Debug, Serialize)]
pub struct FederationSummary {
    /// The first instance (the placement federation).
    #[serde(flatten)]
    pub primary: Option<FederationReport>,
    /// All messages (discovery and every federation instance) per agent per simulated
    /// second over the last quarter of the run.
    pub control_msgs_per_agent_per_s: f64,
    /// Agents removed for silence while up and reachable (stalled, or unlucky with loss).
    pub false_removals: u64,
    /// Crashes some agent suspected.
    pub detections: usize,
    /// Time from a crash to its first suspicion, median, in ms.
    pub detection_p50_ms: Option<f64>,
    /// Time from a crash to its first suspicion, 99th percentile, in ms.
    pub detection_p99_ms: Option<f64>,
    /// Every instance.
    pub instances: Vec<FederationReport>,
}

/// The `q`-quantile of `values` (nearest rank), if any.
pub(crate) fn quantile(values: &[f64], q: f64) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).copied()
}

impl FederationSummary {
    fn of(sim: &Simulation) -> Self {
        let stats = sim.stats();
        let instances = sim.federation().reports().to_vec();
        let agent_seconds = stats.window_agents as f64 * stats.window_seconds;
        FederationSummary {
            primary: instances.first().cloned(),
            control_msgs_per_agent_per_s: if agent_seconds > 0.0 {
                stats.window_messages as f64 / agent_seconds
            } else {
                0.0
            },
            false_removals: stats.false_removals,
            detections: stats.detection_ms.len(),
            detection_p50_ms: quantile(&stats.detection_ms, 0.5),
            detection_p99_ms: quantile(&stats.detection_ms, 0.99),
            instances,
        }
    }
}

impl Report {
    /// Runs `baselines` on the run's workload and adds their figures beside Nefele's.
    pub fn add_baselines(&mut self, sim: &Simulation, baselines: &[Baseline]) {
        let Some(p) = &mut self.placement else {
            return;
        };
        for b in baselines {
            let figures = Some(sim.run_baseline(*b));
            match b {
                Baseline::Bfd => p.bfd = figures,
                Baseline::Sparrow => p.sparrow = figures,
            }
        }
    }

    /// The report of `sim` after its run, with the measurements only the caller can take.
    #[must_use]
    pub fn new(scenario: &str, sim: &Simulation, wall_seconds: f64, peak_rss_bytes: u64) -> Self {
        let mut stats = sim.stats().clone();
        stats.detection_ms.clear(); // summarised in `federation`
        let nodes = sim.topology().len() as u64;
        Report {
            scenario: scenario.to_owned(),
            seed: sim.config().seed,
            nodes,
            sim_seconds: sim.now().as_secs_f64(),
            events: stats.events,
            messages_delivered: stats.messages_delivered,
            messages_dropped: stats.messages_dropped,
            wall_seconds,
            events_per_second: if wall_seconds > 0.0 {
                stats.events as f64 / wall_seconds
            } else {
                0.0
            },
            peak_rss_bytes,
            rss_bytes_per_agent: peak_rss_bytes.checked_div(nodes).unwrap_or(0),
            trace_hash: sim.trace_hash(),
            invariants: sim.invariants().clone(),
            federation: FederationSummary::of(sim),
            placement: sim.config().workload.as_ref().map(|_| PlacementReport {
                nefele: sim.placement_figures(),
                bfd: None,
                sparrow: None,
            }),
            messaging: sim.messaging_figures(),
            supervision: sim.supervision_figures(),
            stats,
        }
    }
}
