//! The JSON report of a run, as `nefele-sim run --report FILE` writes it.
//!
//! Field names are part of the interface (scripts read them): add fields, do
//! not rename them.

use crate::checker::InvariantReport;
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
}

impl Report {
    /// The report of `sim` after its run, with the measurements only the caller can take.
    #[must_use]
    pub fn new(scenario: &str, sim: &Simulation, wall_seconds: f64, peak_rss_bytes: u64) -> Self {
        let stats = sim.stats().clone();
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
            stats,
        }
    }
}
