//! Writes a run's configuration as a scenario file (the format of [`crate::scenario`])
//! that [`crate::scenario::parse`] reads back to the same run, trace hash included.
//!
//! Used wherever a run must be replayed later: a failing seed of the swarm
//! (`crate::swarm`), the shrinker's output (`crate::shrink`), and failing property
//! tests. What a scenario file cannot state (agent settings other than discovery's
//! timing, the federation instances and placement's instance) is left out, so a
//! configuration that changes those does not round-trip.

use crate::config::SimConfig;
use crate::faults::FaultAction;
use nefele_core::federation::FederationConfig;
use std::time::Duration;
use toml::Value;

/// `config` as the text of a scenario file named `name`.
///
/// # Panics
/// If a part of the configuration does not serialize (every part does: each is
/// plain data with `Serialize`).
#[must_use]
pub fn to_toml(name: &str, config: &SimConfig) -> String {
    let mut top = toml::Table::new();
    top.insert("name".into(), Value::String(name.to_owned()));
    top.insert("seed".into(), Value::Integer(config.seed as i64));
    top.insert("nodes".into(), Value::Integer(i64::from(config.nodes)));
    top.insert("duration".into(), duration_text(config.duration));
    top.insert("boot_spread".into(), duration_text(config.boot_spread));
    top.insert("topology".into(), value(&config.topology));
    top.insert("network".into(), value(&config.network));
    top.insert("check".into(), value(&config.check));
    let mut discovery = toml::Table::new();
    let d = &config.agent.discovery;
    discovery.insert("heartbeat_period".into(), duration_text(d.heartbeat_period));
    discovery.insert(
        "neighbour_timeout".into(),
        duration_text(d.neighbour_timeout),
    );
    top.insert("discovery".into(), Value::Table(discovery));
    let default_federations = nefele_core::AgentConfig::default().federations;
    let same_as_default = config.agent.federations.len() == default_federations.len()
        && config
            .agent
            .federations
            .iter()
            .zip(&default_federations)
            .all(|(a, b)| {
                FederationConfig {
                    seeds: Vec::new(),
                    ..a.clone()
                } == *b
            });
    if !same_as_default {
        let entries = config.agent.federations.iter().map(federation).collect();
        top.insert("federation".into(), Value::Array(entries));
    }
    let instance = config.agent.services.placement.instance;
    if instance != 0 {
        let mut placement = toml::Table::new();
        placement.insert("instance".into(), Value::Integer(i64::from(instance)));
        top.insert("placement".into(), Value::Table(placement));
    }
    if let Some(workload) = &config.workload {
        top.insert("workload".into(), value(workload));
    }
    if let Some(supervision) = &config.supervision {
        top.insert("supervision".into(), value(supervision));
    }
    if let Some(messaging) = &config.messaging {
        top.insert("messaging".into(), value(messaging));
    }
    if let Some(down) = &config.start_down {
        top.insert("start_down".into(), value(down));
    }
    if let Some(random) = &config.random_faults {
        top.insert("random_faults".into(), value(random));
    }
    let mut text = toml::to_string(&top).expect("a TOML table serializes");
    // Faults are written by hand, one `[[faults]]` entry each with its action as an
    // inline table (`partition = { a = { rack = 3 }, b = "all", asymmetric = false }`),
    // which reads far better than the nested tables the serializer would write.
    for fault in &config.faults {
        text.push_str(&format!("\n[[faults]]\nat = {}\n", duration_text(fault.at)));
        if let Some(d) = fault.duration {
            text.push_str(&format!("duration = {}\n", duration_text(d)));
        }
        match &fault.action {
            // A unit variant serializes as a string; the file spells it `heal = true`.
            FaultAction::Heal => text.push_str("heal = true\n"),
            action => match value(action) {
                Value::Table(t) => {
                    for (key, v) in t {
                        text.push_str(&format!("{key} = {v}\n"));
                    }
                }
                other => panic!("fault action {other} is not a table"),
            },
        }
    }
    text
}

/// One `[[federation]]` entry (the seed list is the simulator's, not the file's).
fn federation(f: &FederationConfig) -> Value {
    let mut entry = toml::Table::new();
    entry.insert("name".into(), Value::String(f.name.clone()));
    entry.insert("min_group".into(), Value::Integer(f.min_group as i64));
    entry.insert("max_group".into(), Value::Integer(f.max_group as i64));
    entry.insert("period".into(), duration_text(f.period));
    entry.insert(
        "suspect_periods".into(),
        Value::Integer(i64::from(f.suspect_periods)),
    );
    entry.insert(
        "remove_periods".into(),
        Value::Integer(i64::from(f.remove_periods)),
    );
    entry.insert("probe_period".into(), duration_text(f.probe_period));
    Value::Table(entry)
}

/// `d` as the shortest exact duration text: `"20s"`, `"1500ms"` or `"1234ns"`.
fn duration_text(d: Duration) -> Value {
    let text = if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d.subsec_millis() * 1_000_000 == d.subsec_nanos() {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}ns", d.as_nanos())
    };
    Value::String(text)
}

fn value<T: serde::Serialize>(part: &T) -> Value {
    Value::try_from(part).expect("a configuration part serializes to TOML")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::WorkloadConfig;

    #[test]
    fn workload_federation_and_placement_instance_round_trip() {
        let mut config = SimConfig {
            nodes: 30,
            workload: Some(WorkloadConfig {
                rate_per_s: 12.5,
                stop: Some(Duration::from_millis(7500)),
                ..WorkloadConfig::default()
            }),
            ..SimConfig::default()
        };
        let mut second = FederationConfig {
            instance: 1,
            name: "wide".to_owned(),
            min_group: 8,
            max_group: 32,
            period: Duration::from_millis(450),
            ..FederationConfig::default()
        };
        config.agent.federations[0].remove_periods = 6;
        config.agent.federations.push(second.clone());
        config.agent.services.placement.instance = 1;
        let back = crate::scenario::parse(&to_toml("x", &config), "y")
            .expect("the file parses")
            .config;
        assert_eq!(back.workload, config.workload);
        assert_eq!(back.agent.federations[0].remove_periods, 6);
        second.seeds = Vec::new();
        assert_eq!(back.agent.federations[1], second);
        assert_eq!(back.agent.services.placement.instance, 1);
        let plain = to_toml("plain", &SimConfig::default());
        assert!(!plain.contains("federation"), "{plain}");
    }
}
