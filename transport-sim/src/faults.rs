//! Faults: what can go wrong, to which hosts, and when.
//!
//! A [`Fault`] is an [`FaultAction`] at a simulated time, with an optional
//! duration after which it is undone (a crashed host restarts, a paused host
//! resumes, a partition heals, loss returns to its configured value). A
//! [`Selector`] names the hosts a fault hits; random selectors draw from the
//! simulation's fault RNG, so the same seed hits the same hosts.
//! [`RandomFaults`] draws a whole schedule from the seed ("swarm" testing); it
//! stops injecting at `until`, so every run ends with a fault-free phase in
//! which convergence can be checked.

use crate::topology::Topology;
use nefele_core::NodeId;
use rand::seq::SliceRandom;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Which hosts a fault hits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Selector {
    /// One host by id.
    Node(u32),
    /// Hosts by id.
    Nodes(Vec<u32>),
    /// Hosts `from..to` (end excluded).
    Range([u32; 2]),
    /// Every host of a rack.
    Rack(u32),
    /// Every host of a row.
    Row(u32),
    /// This fraction of the hosts that are up, drawn at random.
    Fraction(f64),
    /// This many hosts that are up, drawn at random.
    Count(u32),
    /// Every host.
    All,
}

impl Selector {
    /// The hosts selected now; `up` says which hosts are up (random selectors draw among those).
    pub fn resolve(
        &self,
        topology: &Topology,
        up: &[bool],
        rng: &mut ChaCha8Rng,
    ) -> Result<Vec<NodeId>, String> {
        let hosts = topology.len() as u32;
        let check = |n: u32| {
            if n < hosts {
                Ok(NodeId(n))
            } else {
                Err(format!("node {n} does not exist (the cluster has {hosts})"))
            }
        };
        let random = |count: usize, rng: &mut ChaCha8Rng| {
            let mut live: Vec<NodeId> =
                (0..hosts).filter(|n| up[*n as usize]).map(NodeId).collect();
            let count = count.min(live.len());
            let (chosen, _) = live.partial_shuffle(rng, count);
            let mut chosen = chosen.to_vec();
            chosen.sort_unstable();
            chosen
        };
        match self {
            Selector::Node(n) => Ok(vec![check(*n)?]),
            Selector::Nodes(ns) => ns.iter().map(|n| check(*n)).collect(),
            Selector::Range([from, to]) => {
                if from > to || *to > hosts {
                    return Err(format!(
                        "range [{from}, {to}) is not within the cluster's {hosts} hosts"
                    ));
                }
                Ok((*from..*to).map(NodeId).collect())
            }
            Selector::Rack(r) => topology
                .rack_members(*r)
                .map(|m| m.map(NodeId).collect())
                .ok_or_else(|| {
                    format!("rack {r} does not exist (the DC has {})", topology.racks())
                }),
            Selector::Row(r) => topology
                .row_members(*r)
                .map(|m| m.map(NodeId).collect())
                .ok_or_else(|| format!("row {r} does not exist (the DC has {})", topology.rows())),
            Selector::Fraction(f) => {
                if !(0.0..=1.0).contains(f) {
                    return Err(format!("fraction {f} is not within [0, 1]"));
                }
                let live = up.iter().filter(|u| **u).count();
                Ok(random((live as f64 * f).round() as usize, rng))
            }
            Selector::Count(c) => Ok(random(*c as usize, rng)),
            Selector::All => Ok((0..hosts).map(NodeId).collect()),
        }
    }
}

/// What goes wrong.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultAction {
    /// The hosts crash: agent state is lost, and they stay down until restarted.
    Crash(Selector),
    /// Down hosts boot with a new incarnation; hosts that are up crash and boot again.
    Restart(Selector),
    /// The agents shut down cleanly: they tell their groups they leave, then stop.
    Leave(Selector),
    /// The agents stall (a long GC pause, a hung disk): nothing is processed until they resume.
    Pause(Selector),
    /// Messages from `a` to `b` are dropped, and from `b` to `a` unless `asymmetric`.
    Partition {
        /// One side.
        a: Selector,
        /// The other side.
        b: Selector,
        /// Only `a` → `b` is blocked.
        asymmetric: bool,
    },
    /// Every partition heals.
    Heal,
    /// The hosts' clocks jump by `offset_ms` and run `drift_ppm` fast (negative: slow).
    Skew {
        /// The hosts.
        hosts: Selector,
        /// The jump, in milliseconds (clocks never run backwards: a negative jump is absorbed).
        offset_ms: i64,
        /// The rate error, in parts per million.
        drift_ppm: i32,
    },
    /// The probability of message loss becomes this.
    Loss(f64),
}

/// A fault at a time, undone after `duration` if set.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Fault {
    /// When it strikes, from the start of the run.
    #[serde(with = "crate::duration_text")]
    pub at: Duration,
    /// What it does.
    pub action: FaultAction,
    /// When it is undone, counted from `at`.
    #[serde(with = "crate::duration_text::option")]
    pub duration: Option<Duration>,
    /// The line of the scenario file it came from, for error messages.
    #[serde(skip)]
    pub line: Option<usize>,
}

/// The kinds of fault that random mode draws.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RandomKind {
    /// One host crashes and restarts after a while.
    Crash,
    /// A few hosts stall for a while.
    Pause,
    /// One rack is cut off from the rest for a while.
    Partition,
    /// One host's clock jumps and drifts.
    Skew,
}

/// Random-fault mode: a seeded schedule of faults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RandomFaults {
    /// The mean time between two faults (exponentially distributed).
    #[serde(with = "crate::duration_text")]
    pub mean_interval: Duration,
    /// The kinds to draw from.
    #[serde(default = "RandomFaults::all_kinds")]
    pub kinds: Vec<RandomKind>,
    /// No fault starts after this time (default: two thirds of the run), so the run ends healed.
    #[serde(default, with = "crate::duration_text::option")]
    pub until: Option<Duration>,
}

impl RandomFaults {
    fn all_kinds() -> Vec<RandomKind> {
        vec![
            RandomKind::Crash,
            RandomKind::Pause,
            RandomKind::Partition,
            RandomKind::Skew,
        ]
    }

    /// Random faults of every kind, about every `mean_interval`.
    #[must_use]
    pub fn every(mean_interval: Duration) -> Self {
        RandomFaults {
            mean_interval,
            kinds: Self::all_kinds(),
            until: None,
        }
    }

    /// Draws the schedule for a run of `run` over `topology`.
    pub fn schedule(&self, run: Duration, topology: &Topology, rng: &mut ChaCha8Rng) -> Vec<Fault> {
        let until = self.until.unwrap_or(run * 2 / 3);
        let hosts = topology.len() as u32;
        let mut faults = Vec::new();
        if self.kinds.is_empty() || hosts == 0 || self.mean_interval.is_zero() {
            return faults;
        }
        let mean = self.mean_interval.as_secs_f64();
        let mut t = Duration::ZERO;
        loop {
            let gap = -mean * (1.0 - rng.gen::<f64>()).ln();
            t += Duration::from_secs_f64(gap);
            if t >= until {
                return faults;
            }
            let kind = self.kinds[rng.gen_range(0..self.kinds.len())];
            let duration = Duration::from_millis(rng.gen_range(500..5_000));
            let action = match kind {
                RandomKind::Crash => FaultAction::Restart(Selector::Node(rng.gen_range(0..hosts))),
                RandomKind::Pause => FaultAction::Pause(Selector::Count(rng.gen_range(1..=3))),
                RandomKind::Partition if topology.racks() > 1 => FaultAction::Partition {
                    a: Selector::Rack(rng.gen_range(0..topology.racks())),
                    b: Selector::All,
                    asymmetric: rng.gen_bool(0.2),
                },
                RandomKind::Partition => FaultAction::Loss(0.5),
                RandomKind::Skew => FaultAction::Skew {
                    hosts: Selector::Node(rng.gen_range(0..hosts)),
                    offset_ms: rng.gen_range(-500..2_000),
                    drift_ppm: rng.gen_range(-200..200),
                },
            };
            // A restart fault crashes at `at` and boots after `duration`.
            faults.push(Fault {
                at: t,
                action,
                duration: Some(duration),
                line: None,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::TopologyConfig;
    use rand::SeedableRng;

    fn topo() -> Topology {
        Topology::build(
            &TopologyConfig::default(),
            200,
            &mut ChaCha8Rng::seed_from_u64(0),
        )
        .unwrap()
    }

    #[test]
    fn selectors_resolve_and_name_bad_targets() {
        let t = topo();
        let up = vec![true; 200];
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        assert_eq!(
            Selector::Rack(1).resolve(&t, &up, &mut rng).unwrap().len(),
            40
        );
        assert_eq!(
            Selector::Fraction(0.1)
                .resolve(&t, &up, &mut rng)
                .unwrap()
                .len(),
            20
        );
        assert!(Selector::Rack(9)
            .resolve(&t, &up, &mut rng)
            .unwrap_err()
            .contains("rack 9"));
        assert!(Selector::Node(200).resolve(&t, &up, &mut rng).is_err());
    }

    #[test]
    fn random_selection_draws_only_live_hosts() {
        let t = topo();
        let mut up = vec![false; 200];
        up[5] = true;
        up[7] = true;
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let chosen = Selector::Count(10).resolve(&t, &up, &mut rng).unwrap();
        assert_eq!(chosen, vec![NodeId(5), NodeId(7)]);
    }

    #[test]
    fn random_schedule_is_seeded_and_stops_early() {
        let t = topo();
        let rf = RandomFaults::every(Duration::from_secs(2));
        let draw = |seed| {
            rf.schedule(
                Duration::from_secs(60),
                &t,
                &mut ChaCha8Rng::seed_from_u64(seed),
            )
        };
        assert_eq!(draw(1), draw(1));
        assert_ne!(draw(1), draw(2));
        assert!(draw(1).iter().all(|f| f.at < Duration::from_secs(40)));
        assert!(draw(1).len() > 5);
    }
}
