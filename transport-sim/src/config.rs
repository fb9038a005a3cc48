//! Everything a simulation run is configured with, and its defaults.

use crate::faults::{Fault, RandomFaults, Selector};
use crate::network::NetworkConfig;
use crate::topology::TopologyConfig;
use crate::workload::WorkloadConfig;
use nefele_core::AgentConfig;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// When and how the invariant checker runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckConfig {
    /// Time between two checks.
    #[serde(with = "crate::duration_text")]
    pub interval: Duration,
    /// How long the cluster must be free of faults before liveness invariants must hold.
    #[serde(with = "crate::duration_text")]
    pub settle: Duration,
}

impl Default for CheckConfig {
    fn default() -> Self {
        CheckConfig {
            interval: Duration::from_millis(250),
            settle: Duration::from_secs(5),
        }
    }
}

/// One run of the simulator.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The root of all randomness in the run.
    pub seed: u64,
    /// Agents in the DC (external sites add theirs).
    pub nodes: u32,
    /// Simulated time to run for.
    pub duration: Duration,
    /// Agents boot at uniformly random times within this window from the start.
    pub boot_spread: Duration,
    /// The DC's shape.
    pub topology: TopologyConfig,
    /// The network's behaviour.
    pub network: NetworkConfig,
    /// The agents' configuration.
    pub agent: AgentConfig,
    /// Hosts that do not boot at the start (a later `restart` fault boots them).
    pub start_down: Option<Selector>,
    /// Scheduled faults.
    pub faults: Vec<Fault>,
    /// Seeded random faults, on top of the scheduled ones.
    pub random_faults: Option<RandomFaults>,
    /// The invariant checker.
    pub check: CheckConfig,
    /// Simulated clients issuing spawn requests, if any.
    pub workload: Option<WorkloadConfig>,
    /// Simulated processes that talk by messaging, if any.
    pub messaging: Option<crate::messaging_sim::MessagingWorkload>,
    /// Supervised groups, if any.
    pub supervision: Option<crate::supervision_sim::SupervisionWorkload>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 1,
            nodes: 1000,
            duration: Duration::from_secs(60),
            boot_spread: Duration::from_millis(500),
            topology: TopologyConfig::default(),
            network: NetworkConfig::default(),
            agent: AgentConfig::default(),
            start_down: None,
            faults: Vec::new(),
            random_faults: None,
            check: CheckConfig::default(),
            workload: None,
            messaging: None,
            supervision: None,
        }
    }
}
