//! The simulated network: latency per distance class with seeded jitter, loss,
//! duplication, reordering, and partitions between sets of hosts.
//!
//! [`Network::route`] decides the fate of one message: dropped (and why), or
//! delivered once or twice after a latency. All randomness comes from the
//! RNG the caller passes, so the same seed gives the same fates.

use crate::topology::{Distance, Topology};
use nefele_core::NodeId;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Latency of one distance class: `base` plus a uniform jitter in `[0, jitter]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Latency {
    /// The least one-way latency.
    #[serde(with = "crate::duration_text")]
    pub base: Duration,
    /// The most extra latency on top of `base`.
    #[serde(with = "crate::duration_text")]
    pub jitter: Duration,
}

impl Latency {
    const fn micros(base: u64, jitter: u64) -> Self {
        Latency {
            base: Duration::from_micros(base),
            jitter: Duration::from_micros(jitter),
        }
    }
}

/// One-way latency per distance class.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LatencyModel {
    /// Two agents on one host (loopback).
    pub same_host: Latency,
    /// Through the top-of-rack switch.
    pub same_rack: Latency,
    /// Through the row's aggregation switch.
    pub same_row: Latency,
    /// Through the DC spine.
    pub same_dc: Latency,
    /// To or from an external site.
    pub external: Latency,
}

impl Default for LatencyModel {
    fn default() -> Self {
        LatencyModel {
            same_host: Latency::micros(5, 2),
            same_rack: Latency::micros(40, 20),
            same_row: Latency::micros(120, 40),
            same_dc: Latency::micros(300, 100),
            external: Latency::micros(20_000, 5_000),
        }
    }
}

impl LatencyModel {
    /// The latency of `distance`.
    #[must_use]
    pub fn of(&self, distance: Distance) -> Latency {
        match distance {
            Distance::SameHost => self.same_host,
            Distance::SameRack => self.same_rack,
            Distance::SameRow => self.same_row,
            Distance::SameDc => self.same_dc,
            Distance::External => self.external,
        }
    }
}

/// The network's settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    /// Latency per distance class.
    pub latency: LatencyModel,
    /// Probability that a message is lost.
    pub loss: f64,
    /// Probability that a message is delivered twice.
    pub duplicate: f64,
    /// Probability that a message is held back by up to `reorder_window`, so later ones overtake it.
    pub reorder: f64,
    /// The most a reordered message is held back.
    #[serde(with = "crate::duration_text")]
    pub reorder_window: Duration,
    /// Every host NIC's rate in Gbit/s, each way; 0 for no limit ([`crate::nic`]).
    pub nic_gbit: f64,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            latency: LatencyModel::default(),
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_window: Duration::from_millis(2),
            nic_gbit: 25.0,
        }
    }
}

impl NetworkConfig {
    /// Checks that probabilities are probabilities; names the bad field.
    pub fn validate(&self) -> Result<(), String> {
        for (field, p) in [
            ("loss", self.loss),
            ("duplicate", self.duplicate),
            ("reorder", self.reorder),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!(
                    "network.{field}: {p} is not a probability in [0, 1]"
                ));
            }
        }
        if !(self.nic_gbit >= 0.0 && self.nic_gbit.is_finite()) {
            return Err(format!(
                "network.nic_gbit: {} is not a rate (Gbit/s, 0 for no limit)",
                self.nic_gbit
            ));
        }
        Ok(())
    }
}

/// Why the network dropped a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// Random loss.
    Loss,
    /// A partition separates sender and receiver.
    Partition,
    /// The receiver is down.
    Down,
}

impl DropReason {
    /// A stable name for traces.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Loss => "loss",
            DropReason::Partition => "partition",
            DropReason::Down => "down",
        }
    }
}

/// The fate of one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Dropped, for this reason.
    Dropped(DropReason),
    /// Delivered after the first latency, and again after the second if duplicated.
    Delivered(Duration, Option<Duration>),
}

/// A partition: messages from side A to side B are dropped, and from B to A unless asymmetric.
#[derive(Clone, Debug)]
struct Partition {
    id: u64,
    side: Vec<u8>,
    symmetric: bool,
}

const SIDE_A: u8 = 1;
const SIDE_B: u8 = 2;

/// The network's state during a run.
#[derive(Debug)]
pub struct Network {
    config: NetworkConfig,
    partitions: Vec<Partition>,
    next_partition: u64,
}

impl Network {
    /// A healed network with `config`'s settings.
    #[must_use]
    pub fn new(config: NetworkConfig) -> Self {
        Network {
            config,
            partitions: Vec::new(),
            next_partition: 1,
        }
    }

    /// The current settings (faults may change loss, duplication and reordering).
    #[must_use]
    pub fn config(&self) -> &NetworkConfig {
        &self.config
    }

    /// Sets the probability of loss.
    pub fn set_loss(&mut self, loss: f64) {
        self.config.loss = loss;
    }

    /// Separates hosts `a` from hosts `b` (both ways unless `asymmetric`, which blocks only a→b).
    /// A host named on both sides is on side `a`, so `b` may be "everyone". Returns the
    /// partition's id, for [`Network::heal`].
    pub fn partition(&mut self, hosts: usize, a: &[NodeId], b: &[NodeId], asymmetric: bool) -> u64 {
        let mut side = vec![0; hosts];
        for n in b {
            side[n.0 as usize] = SIDE_B;
        }
        for n in a {
            side[n.0 as usize] = SIDE_A;
        }
        let id = self.next_partition;
        self.next_partition += 1;
        self.partitions.push(Partition {
            id,
            side,
            symmetric: !asymmetric,
        });
        id
    }

    /// Removes partition `id`.
    pub fn heal(&mut self, id: u64) {
        self.partitions.retain(|p| p.id != id);
    }

    /// Removes every partition.
    pub fn heal_all(&mut self) {
        self.partitions.clear();
    }

    /// Whether any partition is in force.
    #[must_use]
    pub fn is_partitioned(&self) -> bool {
        !self.partitions.is_empty()
    }

    /// Whether a partition blocks messages from `from` to `to`.
    #[must_use]
    pub fn blocked(&self, from: NodeId, to: NodeId) -> bool {
        self.partitions.iter().any(|p| {
            let (sf, st) = (p.side[from.0 as usize], p.side[to.0 as usize]);
            (sf == SIDE_A && st == SIDE_B) || (p.symmetric && sf == SIDE_B && st == SIDE_A)
        })
    }

    /// Whether `a` and `b` hear each other: no partition in force blocks either way.
    #[must_use]
    pub fn hear(&self, a: NodeId, b: NodeId) -> bool {
        !self.blocked(a, b) && !self.blocked(b, a)
    }

    /// Decides the fate of one message from `from` to `to`.
    pub fn route(
        &self,
        topology: &Topology,
        from: NodeId,
        to: NodeId,
        rng: &mut ChaCha8Rng,
    ) -> Fate {
        if self.blocked(from, to) {
            return Fate::Dropped(DropReason::Partition);
        }
        if self.config.loss > 0.0 && rng.gen_bool(self.config.loss) {
            return Fate::Dropped(DropReason::Loss);
        }
        let latency = self.config.latency.of(topology.distance(from, to));
        let draw = |rng: &mut ChaCha8Rng| {
            let mut d = latency.base + jitter(latency.jitter, rng);
            if self.config.reorder > 0.0 && rng.gen_bool(self.config.reorder) {
                d += jitter(self.config.reorder_window, rng);
            }
            d
        };
        let first = draw(rng);
        let second =
            (self.config.duplicate > 0.0 && rng.gen_bool(self.config.duplicate)).then(|| draw(rng));
        Fate::Delivered(first, second)
    }
}

fn jitter(max: Duration, rng: &mut ChaCha8Rng) -> Duration {
    let max = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
    if max == 0 {
        Duration::ZERO
    } else {
        Duration::from_nanos(rng.gen_range(0..=max))
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
            100,
            &mut ChaCha8Rng::seed_from_u64(0),
        )
        .unwrap()
    }

    #[test]
    fn partitions_block_both_ways_unless_asymmetric() {
        let mut net = Network::new(NetworkConfig::default());
        let id = net.partition(100, &[NodeId(1)], &[NodeId(2)], false);
        assert!(net.blocked(NodeId(1), NodeId(2)));
        assert!(net.blocked(NodeId(2), NodeId(1)));
        assert!(!net.blocked(NodeId(1), NodeId(3)));
        net.heal(id);
        assert!(!net.blocked(NodeId(1), NodeId(2)));
        net.partition(100, &[NodeId(1)], &[NodeId(2)], true);
        assert!(net.blocked(NodeId(1), NodeId(2)));
        assert!(!net.blocked(NodeId(2), NodeId(1)));
    }

    #[test]
    fn two_nodes_hear_each_other_unless_a_partition_blocks_either_way() {
        let mut net = Network::new(NetworkConfig::default());
        assert!(net.hear(NodeId(1), NodeId(2)));
        net.partition(100, &[NodeId(1)], &[NodeId(2)], true);
        assert!(!net.hear(NodeId(1), NodeId(2)));
        assert!(!net.hear(NodeId(2), NodeId(1)));
        assert!(net.hear(NodeId(1), NodeId(3)));
        net.heal_all();
        assert!(net.hear(NodeId(2), NodeId(1)));
    }

    #[test]
    fn loss_drops_about_the_configured_fraction() {
        let t = topo();
        let net = Network::new(NetworkConfig {
            loss: 0.2,
            ..NetworkConfig::default()
        });
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let n = 20_000;
        let lost = (0..n)
            .filter(|_| {
                net.route(&t, NodeId(0), NodeId(1), &mut rng) == Fate::Dropped(DropReason::Loss)
            })
            .count();
        let fraction = lost as f64 / f64::from(n);
        assert!((0.18..0.22).contains(&fraction), "lost {fraction}");
    }

    #[test]
    fn latency_grows_with_distance() {
        let t = topo();
        let net = Network::new(NetworkConfig::default());
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let latency = |to, rng: &mut ChaCha8Rng| match net.route(&t, NodeId(0), NodeId(to), rng) {
            Fate::Delivered(d, None) => d,
            other => panic!("unexpected {other:?}"),
        };
        let rack = latency(1, &mut rng);
        let row = latency(40, &mut rng);
        assert!(rack <= Duration::from_micros(60) && rack >= Duration::from_micros(40));
        assert!(row >= Duration::from_micros(120));
    }

    #[test]
    fn bad_probability_names_the_field() {
        let config = NetworkConfig {
            duplicate: 1.5,
            ..NetworkConfig::default()
        };
        assert!(config.validate().unwrap_err().contains("network.duplicate"));
    }
}
