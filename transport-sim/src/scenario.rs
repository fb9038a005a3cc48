//! Scenario files: a TOML description of a run, written by people.
//!
//! ```toml
//! # Two rows cut apart for 20 s, then healed.
//! name = "partition-heal"
//! seed = 7
//! nodes = 2000
//! duration = "60s"
//!
//! [topology]            # optional; see TopologyConfig
//! hosts_per_rack = 40
//!
//! [network]             # optional; see NetworkConfig
//! loss = 0.001
//!
//! [[faults]]
//! at = "20s"
//! partition = { a = { row = 0 }, b = { row = 1 } }
//! duration = "20s"      # healed after
//!
//! [random_faults]       # optional seeded random faults
//! mean_interval = "5s"
//! ```
//!
//! A fault entry has `at`, an optional `duration` after which it is undone, and
//! exactly one action: `crash`, `restart`, `leave`, `pause` or `skew` (each with a host
//! selector: `{ node = 3 }`, `{ nodes = [1, 2] }`, `{ range = [0, 100] }`,
//! `{ rack = 3 }`, `{ row = 0 }`, `{ fraction = 0.1 }`, `{ count = 5 }`, `"all"`),
//! `partition = { a = .., b = .., asymmetric = false }`, `heal = true`, or
//! `loss = 0.2`. Errors name the file, the line and the field; unknown fields are
//! errors, so a typo never silently does nothing.
//!
//! Federation instances (default: one, "placement", groups of 4..16, period 300 ms)
//! can be replaced with `[[federation]]` tables (`name`, `min_group`, `max_group`,
//! `period`, `suspect_periods`, `remove_periods`, `probe_period`); an empty list,
//! `federation = []`, runs discovery alone. `[discovery]` sets `heartbeat_period`
//! (default 10 s) and `neighbour_timeout` (default 33 s). `[placement]` sets
//! `instance`, the federation instance placement rides (default 0; it must exist).

use crate::config::{CheckConfig, SimConfig};
use crate::faults::{Fault, FaultAction, RandomFaults, Selector};
use crate::network::NetworkConfig;
use crate::topology::TopologyConfig;
use nefele_core::federation::FederationConfig;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use toml::Spanned;

/// Why a scenario file was refused. Nothing has run.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file cannot be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not a valid scenario.
    #[error("{path}:{line}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The 1-based line of the offending field.
        line: usize,
        /// What is wrong, naming the field.
        message: String,
    },
}

/// A parsed scenario: a name and the run it describes.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// The scenario's name (the file stem if the file names none).
    pub name: String,
    /// What it shows, in words.
    pub description: Option<String>,
    /// The run.
    pub config: SimConfig,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioFile {
    name: Option<String>,
    description: Option<String>,
    seed: Option<u64>,
    nodes: Option<u32>,
    duration: Option<Spanned<String>>,
    boot_spread: Option<Spanned<String>>,
    topology: Option<TopologyConfig>,
    network: Option<NetworkConfig>,
    check: Option<CheckConfig>,
    start_down: Option<Selector>,
    #[serde(default)]
    faults: Vec<Spanned<FaultEntry>>,
    random_faults: Option<RandomFaults>,
    discovery: Option<DiscoveryEntry>,
    federation: Option<Vec<FederationEntry>>,
    placement: Option<PlacementEntry>,
    workload: Option<crate::workload::WorkloadConfig>,
    messaging: Option<crate::messaging_sim::MessagingWorkload>,
    supervision: Option<crate::supervision_sim::SupervisionWorkload>,
}

/// Placement's settings a scenario file may change.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlacementEntry {
    /// The federation instance placement rides.
    instance: Option<u8>,
}

/// Neighbour discovery's timing, as a scenario file states it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DiscoveryEntry {
    heartbeat_period: Option<Spanned<String>>,
    neighbour_timeout: Option<Spanned<String>>,
}

/// One federation instance, as a scenario file states it; unset fields keep the defaults.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FederationEntry {
    name: String,
    min_group: Option<usize>,
    max_group: Option<usize>,
    period: Option<Spanned<String>>,
    suspect_periods: Option<u32>,
    remove_periods: Option<u32>,
    probe_period: Option<Spanned<String>>,
}

impl FederationEntry {
    /// The instance's configuration; on error, the line (of the field, when it is a
    /// duration) and a message naming the field.
    fn into_config(self, instance: u8, file: &str) -> Result<FederationConfig, (usize, String)> {
        let d = FederationConfig::default();
        let duration = |field: &str, text: Option<Spanned<String>>, default| {
            text.map_or(Ok(default), |t| {
                crate::duration_text::parse(t.get_ref()).map_err(|e| {
                    (
                        line_of(file, t.span().start),
                        format!("federation.{field}: {e}"),
                    )
                })
            })
        };
        let config = FederationConfig {
            instance,
            min_group: self.min_group.unwrap_or(d.min_group),
            max_group: self.max_group.unwrap_or(d.max_group),
            period: duration("period", self.period, d.period)?,
            suspect_periods: self.suspect_periods.unwrap_or(d.suspect_periods),
            remove_periods: self.remove_periods.unwrap_or(d.remove_periods),
            probe_period: duration("probe_period", self.probe_period, d.probe_period)?,
            seeds: Vec::new(),
            name: self.name,
        };
        config.validate().map_err(|e| (1, e.to_string()))?;
        Ok(config)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultEntry {
    at: String,
    duration: Option<String>,
    crash: Option<Selector>,
    restart: Option<Selector>,
    leave: Option<Selector>,
    pause: Option<Selector>,
    partition: Option<PartitionEntry>,
    heal: Option<bool>,
    skew: Option<SkewEntry>,
    loss: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PartitionEntry {
    a: Selector,
    b: Selector,
    #[serde(default)]
    asymmetric: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SkewEntry {
    hosts: Selector,
    #[serde(default)]
    offset_ms: i64,
    #[serde(default)]
    drift_ppm: i32,
}

impl FaultEntry {
    fn into_fault(self, line: usize) -> Result<Fault, String> {
        let at = crate::duration_text::parse(&self.at).map_err(|e| format!("at: {e}"))?;
        let duration = self
            .duration
            .as_deref()
            .map(crate::duration_text::parse)
            .transpose()
            .map_err(|e| format!("duration: {e}"))?;
        let mut actions = Vec::new();
        if let Some(s) = self.crash {
            actions.push(FaultAction::Crash(s));
        }
        if let Some(s) = self.restart {
            actions.push(FaultAction::Restart(s));
        }
        if let Some(s) = self.leave {
            actions.push(FaultAction::Leave(s));
        }
        if let Some(s) = self.pause {
            actions.push(FaultAction::Pause(s));
        }
        if let Some(p) = self.partition {
            actions.push(FaultAction::Partition {
                a: p.a,
                b: p.b,
                asymmetric: p.asymmetric,
            });
        }
        if self.heal == Some(true) {
            actions.push(FaultAction::Heal);
        }
        if let Some(s) = self.skew {
            actions.push(FaultAction::Skew {
                hosts: s.hosts,
                offset_ms: s.offset_ms,
                drift_ppm: s.drift_ppm,
            });
        }
        if let Some(p) = self.loss {
            actions.push(FaultAction::Loss(p));
        }
        if actions.len() != 1 {
            return Err(format!(
                "a fault needs exactly one action (crash, restart, leave, pause, partition, heal, skew, loss); this one has {}",
                actions.len()
            ));
        }
        Ok(Fault {
            at,
            action: actions.remove(0),
            duration,
            line: Some(line),
        })
    }
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// Reads and validates the scenario file at `path`.
pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
    let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
        path: path.to_owned(),
        source,
    })?;
    let stem = path.file_stem().map_or_else(
        || "scenario".to_owned(),
        |s| s.to_string_lossy().into_owned(),
    );
    parse(&text, &stem).map_err(|(line, message)| ScenarioError::Invalid {
        path: path.to_owned(),
        line,
        message,
    })
}

/// Parses scenario `text`; on error, the line and a message naming the field.
pub fn parse(text: &str, default_name: &str) -> Result<Scenario, (usize, String)> {
    let file: ScenarioFile = toml::from_str(text).map_err(|e| {
        let line = e.span().map_or(1, |s| line_of(text, s.start));
        (line, e.message().to_owned())
    })?;
    let spanned_duration = |field: &str, d: Option<Spanned<String>>| {
        d.map(|d| {
            crate::duration_text::parse(d.get_ref())
                .map_err(|e| (line_of(text, d.span().start), format!("{field}: {e}")))
        })
        .transpose()
    };
    let defaults = SimConfig::default();
    let mut faults = Vec::with_capacity(file.faults.len());
    for (i, entry) in file.faults.into_iter().enumerate() {
        let line = line_of(text, entry.span().start);
        let fault = entry
            .into_inner()
            .into_fault(line)
            .map_err(|e| (line, format!("faults[{i}]: {e}")))?;
        faults.push(fault);
    }
    let mut agent = defaults.agent;
    if let Some(d) = file.discovery {
        let field = |name: &str, t: Option<Spanned<String>>, default| {
            t.map_or(Ok(default), |t| {
                crate::duration_text::parse(t.get_ref()).map_err(|e| {
                    (
                        line_of(text, t.span().start),
                        format!("discovery.{name}: {e}"),
                    )
                })
            })
        };
        agent.discovery.heartbeat_period = field(
            "heartbeat_period",
            d.heartbeat_period,
            agent.discovery.heartbeat_period,
        )?;
        agent.discovery.neighbour_timeout = field(
            "neighbour_timeout",
            d.neighbour_timeout,
            agent.discovery.neighbour_timeout,
        )?;
        if agent.discovery.heartbeat_period.is_zero()
            || agent.discovery.neighbour_timeout <= agent.discovery.heartbeat_period
        {
            return Err((
                1,
                "discovery: heartbeat_period must be positive and below neighbour_timeout"
                    .to_owned(),
            ));
        }
    }
    if let Some(entries) = file.federation {
        if entries.len() > usize::from(u8::MAX) {
            return Err((1, "federation: at most 255 instances".to_owned()));
        }
        agent.federations = entries
            .into_iter()
            .enumerate()
            .map(|(i, e)| e.into_config(i as u8, text))
            .collect::<Result<_, _>>()?;
    }
    if let Some(instance) = file.placement.and_then(|p| p.instance) {
        if !agent.federations.iter().any(|f| f.instance == instance) {
            return Err((
                1,
                format!("placement.instance: no federation instance {instance}"),
            ));
        }
        agent.services.placement.instance = instance;
    }
    let config = SimConfig {
        seed: file.seed.unwrap_or(defaults.seed),
        nodes: file.nodes.unwrap_or(defaults.nodes),
        duration: spanned_duration("duration", file.duration)?.unwrap_or(defaults.duration),
        boot_spread: spanned_duration("boot_spread", file.boot_spread)?
            .unwrap_or(defaults.boot_spread),
        topology: file.topology.unwrap_or(defaults.topology),
        network: file.network.unwrap_or(defaults.network),
        agent,
        start_down: file.start_down,
        faults,
        random_faults: file.random_faults,
        check: file.check.unwrap_or(defaults.check),
        workload: file.workload,
        messaging: file.messaging,
        supervision: file.supervision,
    };
    if let Some(Err(e)) = config.supervision.as_ref().map(|s| s.validate()) {
        return Err((1, e));
    }
    if let Some(Err(e)) = config.messaging.as_ref().map(|m| m.validate()) {
        return Err((1, e));
    }
    if let Some(Err(e)) = config
        .workload
        .as_ref()
        .map(crate::workload::WorkloadConfig::validate)
    {
        return Err((1, e));
    }
    if config.duration.is_zero() {
        return Err((1, "duration: must be more than zero".to_owned()));
    }
    if let Err(e) = config.network.validate() {
        return Err((1, e));
    }
    Ok(Scenario {
        name: file.name.unwrap_or_else(|| default_name.to_owned()),
        description: file.description,
        config,
    })
}

/// Parses one fault given as an inline TOML table, as the `--fault` flag takes it:
/// `{ at = "30s", crash = { rack = 3 }, duration = "10s" }`.
pub fn parse_fault(text: &str) -> Result<Fault, String> {
    let wrapped = format!("f = {text}");
    #[derive(Deserialize)]
    struct One {
        f: FaultEntry,
    }
    let one: One = toml::from_str(&wrapped).map_err(|e| e.message().to_owned())?;
    let mut fault = one.f.into_fault(0)?;
    fault.line = None;
    Ok(fault)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn parses_a_full_scenario() {
        let text = r#"
            name = "x"
            seed = 9
            nodes = 120
            duration = "30s"
            [network]
            loss = 0.01
            [[faults]]
            at = "10s"
            crash = { rack = 1 }
            duration = "5s"
            [[faults]]
            at = "12s"
            partition = { a = { row = 0 }, b = "all", asymmetric = true }
            [random_faults]
            mean_interval = "3s"
        "#;
        let s = parse(text, "stem").unwrap();
        assert_eq!(s.name, "x");
        assert_eq!(s.config.seed, 9);
        assert_eq!(s.config.duration, Duration::from_secs(30));
        assert_eq!(s.config.faults.len(), 2);
        assert_eq!(s.config.faults[0].line, Some(8)); // the `[[faults]]` header
        assert_eq!(s.config.faults[0].duration, Some(Duration::from_secs(5)));
        assert!(s.config.random_faults.is_some());
    }

    #[test]
    fn unknown_field_names_line_and_field() {
        let (line, msg) = parse("seed = 1\nnodez = 5\n", "s").unwrap_err();
        assert_eq!(line, 2);
        assert!(msg.contains("nodez"), "{msg}");
    }

    #[test]
    fn bad_duration_names_the_fault() {
        let text = "[[faults]]\nat = \"soon\"\ncrash = { node = 1 }\n";
        let (line, msg) = parse(text, "s").unwrap_err();
        assert_eq!(line, 1);
        assert!(msg.contains("faults[0]: at"), "{msg}");
    }

    #[test]
    fn fault_needs_exactly_one_action() {
        let text = "[[faults]]\nat = \"1s\"\ncrash = { node = 1 }\npause = { node = 2 }\n";
        let (_, msg) = parse(text, "s").unwrap_err();
        assert!(msg.contains("exactly one action"), "{msg}");
    }

    #[test]
    fn bad_probability_is_refused() {
        let (_, msg) = parse("[network]\nloss = 2.0\n", "s").unwrap_err();
        assert!(msg.contains("network.loss"), "{msg}");
    }

    #[test]
    fn placement_rides_the_instance_the_file_names() {
        let two = "[[federation]]\nname = \"a\"\n[[federation]]\nname = \"b\"\n";
        let s = parse(&format!("{two}[placement]\ninstance = 1\n"), "s").unwrap();
        assert_eq!(s.config.agent.services.placement.instance, 1);
        let err = parse(&format!("{two}[placement]\ninstance = 2\n"), "s").unwrap_err();
        assert!(err.1.contains("placement.instance"), "{err:?}");
    }

    #[test]
    fn federation_instances_are_configurable() {
        let text = "[[federation]]\nname = \"a\"\nmax_group = 8\n[[federation]]\nname = \"b\"\nmin_group = 16\nmax_group = 32\nperiod = \"500ms\"\n";
        let s = parse(text, "s").unwrap();
        let f = &s.config.agent.federations;
        assert_eq!(f.len(), 2);
        assert_eq!((f[0].instance, f[0].max_group), (0, 8));
        assert_eq!((f[1].instance, f[1].min_group), (1, 16));
        assert_eq!(f[1].period, Duration::from_millis(500));
        let (_, msg) = parse(
            "[[federation]]\nname = \"x\"\nmin_group = 9\nmax_group = 10\n",
            "s",
        )
        .unwrap_err();
        assert!(msg.contains("max_group"), "{msg}");
        assert!(parse("federation = []\n", "s")
            .unwrap()
            .config
            .agent
            .federations
            .is_empty());
    }

    #[test]
    fn inline_fault_flag() {
        let f = parse_fault(r#"{ at = "30s", crash = { rack = 3 }, duration = "10s" }"#).unwrap();
        assert_eq!(f.at, Duration::from_secs(30));
        assert_eq!(f.action, FaultAction::Crash(Selector::Rack(3)));
        assert!(parse_fault("{ at = \"1s\" }").is_err());
    }
}
