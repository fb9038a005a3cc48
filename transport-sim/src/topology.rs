//! The simulated datacenter: hosts in racks in rows, plus external sites, and
//! the distance class between any two hosts.
//!
//! Layout: node ids `0..dc_hosts` fill the DC rack by rack (rack `r` holds ids
//! `r * hosts_per_rack ..`), racks fill rows in order; external sites' hosts
//! follow. A host's broadcast domain is its rack (or its external site).
//! Host classes (cores, memory, speed, accelerators) are drawn per host from
//! the configured weights with the topology's own seeded RNG, so the same seed
//! gives the same DC.

use nefele_core::host::HostResources;
use nefele_core::NodeId;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::ops::Range;

/// How far apart two hosts are; each class has its own latency.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Distance {
    /// The same host.
    SameHost,
    /// Two hosts of one rack.
    SameRack,
    /// Two racks of one row.
    SameRow,
    /// Two rows of the DC.
    SameDc,
    /// The DC and an external site, or two external sites.
    External,
}

/// A kind of server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostClass {
    /// A name for reports.
    pub name: String,
    /// Logical cores.
    pub cores: u32,
    /// Memory, in GiB.
    pub memory_gib: u32,
    /// Relative cpu speed; 1000 is the reference core.
    pub cpu_speed: u32,
    /// Accelerator devices.
    #[serde(default)]
    pub accelerators: u32,
    /// The kinds of limit hosts of this class cannot enforce (a Linux host without
    /// some cgroup controller); none by default.
    #[serde(default)]
    pub unenforced: nefele_core::host::LimitKinds,
    /// Relative share of hosts of this class.
    pub weight: u32,
}

/// A site outside the DC, reached with external latency.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalSite {
    /// A name for reports.
    pub name: String,
    /// Agents at that site (0 for a site that only exists as a latency class).
    pub hosts: u32,
}

/// The shape of the simulated DC.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopologyConfig {
    /// Hosts in one rack (the broadcast domain).
    pub hosts_per_rack: u32,
    /// Racks in one row.
    pub racks_per_row: u32,
    /// Kinds of server and their shares.
    pub host_classes: Vec<HostClass>,
    /// Sites outside the DC.
    pub external_sites: Vec<ExternalSite>,
}

impl Default for TopologyConfig {
    fn default() -> Self {
        TopologyConfig {
            hosts_per_rack: 40,
            racks_per_row: 10,
            host_classes: vec![
                HostClass {
                    name: "standard".into(),
                    cores: 32,
                    memory_gib: 128,
                    cpu_speed: 1000,
                    accelerators: 0,
                    unenforced: nefele_core::host::LimitKinds::default(),
                    weight: 6,
                },
                HostClass {
                    name: "fast".into(),
                    cores: 64,
                    memory_gib: 256,
                    cpu_speed: 1300,
                    accelerators: 0,
                    unenforced: nefele_core::host::LimitKinds::default(),
                    weight: 3,
                },
                HostClass {
                    name: "gpu".into(),
                    cores: 32,
                    memory_gib: 256,
                    cpu_speed: 1000,
                    accelerators: 4,
                    unenforced: nefele_core::host::LimitKinds::default(),
                    weight: 1,
                },
            ],
            external_sites: vec![ExternalSite {
                name: "internet".into(),
                hosts: 0,
            }],
        }
    }
}

/// Why a topology cannot be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TopologyError {
    /// A size that must be positive is zero.
    #[error("{field} must be at least 1")]
    Zero {
        /// The offending field.
        field: &'static str,
    },
    /// No host class has a positive weight.
    #[error("host_classes: at least one class needs a positive weight")]
    NoHostClass,
    /// The cluster is larger than node ids allow.
    #[error("too many hosts: {0}")]
    TooLarge(u64),
}

/// Where one host is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Location {
    /// Its rack (the broadcast domain), numbered across the DC then the external sites.
    pub domain: u32,
    /// Its row in the DC; `None` for an external site.
    pub row: Option<u32>,
}

/// The built topology.
#[derive(Clone, Debug)]
pub struct Topology {
    locations: Vec<Location>,
    classes: Vec<u16>,
    class_list: Vec<HostClass>,
    domains: Vec<Range<u32>>,
    dc_hosts: u32,
    racks: u32,
    racks_per_row: u32,
}

impl Topology {
    /// A DC of `dc_hosts` hosts shaped by `config`, classes drawn from `rng`.
    pub fn build(
        config: &TopologyConfig,
        dc_hosts: u32,
        rng: &mut ChaCha8Rng,
    ) -> Result<Self, TopologyError> {
        if config.hosts_per_rack == 0 {
            return Err(TopologyError::Zero {
                field: "hosts_per_rack",
            });
        }
        if config.racks_per_row == 0 {
            return Err(TopologyError::Zero {
                field: "racks_per_row",
            });
        }
        let total_weight: u64 = config
            .host_classes
            .iter()
            .map(|c| u64::from(c.weight))
            .sum();
        if total_weight == 0 {
            return Err(TopologyError::NoHostClass);
        }
        let external: u64 = config
            .external_sites
            .iter()
            .map(|s| u64::from(s.hosts))
            .sum();
        let total = u64::from(dc_hosts) + external;
        if total > u64::from(u32::MAX / 2) {
            return Err(TopologyError::TooLarge(total));
        }
        let mut locations = Vec::with_capacity(total as usize);
        let mut domains = Vec::new();
        let mut start = 0;
        while start < dc_hosts {
            let end = dc_hosts.min(start + config.hosts_per_rack);
            let domain = domains.len() as u32;
            let row = domain / config.racks_per_row;
            locations.extend((start..end).map(|_| Location {
                domain,
                row: Some(row),
            }));
            domains.push(start..end);
            start = end;
        }
        let racks = domains.len() as u32;
        for site in &config.external_sites {
            let end = start + site.hosts;
            let domain = domains.len() as u32;
            locations.extend((start..end).map(|_| Location { domain, row: None }));
            domains.push(start..end);
            start = end;
        }
        let classes = (0..total)
            .map(|_| {
                let mut pick = rng.gen_range(0..total_weight);
                let mut class = 0;
                for (i, c) in config.host_classes.iter().enumerate() {
                    if pick < u64::from(c.weight) {
                        class = i;
                        break;
                    }
                    pick -= u64::from(c.weight);
                }
                class as u16
            })
            .collect();
        Ok(Topology {
            locations,
            classes,
            class_list: config.host_classes.clone(),
            domains,
            dc_hosts,
            racks,
            racks_per_row: config.racks_per_row,
        })
    }

    /// All hosts, DC and external.
    #[must_use]
    pub fn len(&self) -> usize {
        self.locations.len()
    }

    /// Whether there is no host at all.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.locations.is_empty()
    }

    /// Hosts in the DC.
    #[must_use]
    pub fn dc_hosts(&self) -> u32 {
        self.dc_hosts
    }

    /// Rows in the DC.
    #[must_use]
    pub fn rows(&self) -> u32 {
        self.racks.div_ceil(self.racks_per_row)
    }

    /// Racks in the DC.
    #[must_use]
    pub fn racks(&self) -> u32 {
        self.racks
    }

    /// Where `node` is.
    #[must_use]
    pub fn location(&self, node: NodeId) -> Location {
        self.locations[node.0 as usize]
    }

    /// Broadcast domains: the DC's racks, then the external sites.
    #[must_use]
    pub fn domains(&self) -> u32 {
        self.domains.len() as u32
    }

    /// The hosts of broadcast domain `domain` (a rack, or an external site).
    #[must_use]
    pub fn domain_members(&self, domain: u32) -> Range<u32> {
        self.domains[domain as usize].clone()
    }

    /// The hosts of rack `rack` of the DC, or `None` if there is no such rack.
    #[must_use]
    pub fn rack_members(&self, rack: u32) -> Option<Range<u32>> {
        (rack < self.racks()).then(|| self.domain_members(rack))
    }

    /// The hosts of row `row` of the DC, or `None` if there is no such row.
    #[must_use]
    pub fn row_members(&self, row: u32) -> Option<Range<u32>> {
        let first = row.checked_mul(self.racks_per_row)?;
        if first >= self.racks {
            return None;
        }
        let last = (first + self.racks_per_row).min(self.racks) - 1;
        Some(self.domains[first as usize].start..self.domains[last as usize].end)
    }

    /// The distance class between two hosts.
    #[must_use]
    pub fn distance(&self, a: NodeId, b: NodeId) -> Distance {
        if a == b {
            return Distance::SameHost;
        }
        let (la, lb) = (self.location(a), self.location(b));
        match (la.row, lb.row) {
            (Some(_), Some(_)) if la.domain == lb.domain => Distance::SameRack,
            (Some(ra), Some(rb)) if ra == rb => Distance::SameRow,
            (Some(_), Some(_)) => Distance::SameDc,
            _ => Distance::External,
        }
    }

    /// What the host `node` offers, from its class, and where it stands: its rack
    /// is its broadcast domain, its row its row (an external site is a row of its
    /// own, the last one a `u16` holds; numbers past a `u16` saturate).
    #[must_use]
    pub fn resources(&self, node: NodeId) -> HostResources {
        let class = &self.class_list[self.classes[node.0 as usize] as usize];
        let at = self.location(node);
        let small = |n: u32| u16::try_from(n).unwrap_or(u16::MAX);
        HostResources {
            cores: class.cores,
            cpu_millicores: class.cores * 1000,
            memory_bytes: u64::from(class.memory_gib) << 30,
            accelerators: class.accelerators,
            cpu_speed: class.cpu_speed,
            committed_cpu_millicores: 0,
            committed_memory_bytes: 0,
            location: nefele_core::Location {
                row: at.row.map_or(u16::MAX, small),
                rack: small(at.domain),
            },
            unenforced: class.unenforced,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn topo(dc: u32, external: u32) -> Topology {
        let config = TopologyConfig {
            hosts_per_rack: 4,
            racks_per_row: 2,
            external_sites: vec![ExternalSite {
                name: "x".into(),
                hosts: external,
            }],
            ..TopologyConfig::default()
        };
        Topology::build(&config, dc, &mut ChaCha8Rng::seed_from_u64(1)).unwrap()
    }

    #[test]
    fn distances_follow_the_layout() {
        let t = topo(18, 2);
        assert_eq!(t.len(), 20);
        assert_eq!(t.racks(), 5);
        assert_eq!(t.rows(), 3);
        assert_eq!(t.distance(NodeId(0), NodeId(0)), Distance::SameHost);
        assert_eq!(t.distance(NodeId(0), NodeId(3)), Distance::SameRack);
        assert_eq!(t.distance(NodeId(0), NodeId(4)), Distance::SameRow);
        assert_eq!(t.distance(NodeId(0), NodeId(8)), Distance::SameDc);
        assert_eq!(t.distance(NodeId(0), NodeId(18)), Distance::External);
        assert_eq!(t.rack_members(4), Some(16..18));
        assert_eq!(t.row_members(1), Some(8..16));
        assert_eq!(t.row_members(2), Some(16..18));
        assert_eq!(t.row_members(3), None);
        assert_eq!(t.domain_members(5), 18..20);
    }

    #[test]
    fn bad_sizes_are_rejected() {
        let config = TopologyConfig {
            hosts_per_rack: 0,
            ..TopologyConfig::default()
        };
        let err = Topology::build(&config, 10, &mut ChaCha8Rng::seed_from_u64(1)).unwrap_err();
        assert_eq!(
            err,
            TopologyError::Zero {
                field: "hosts_per_rack"
            }
        );
    }
}
