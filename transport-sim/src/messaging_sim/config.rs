//! The `[messaging]` workload section of a scenario file: which simulated
//! processes exist and what traffic they make.
//!
//! ```toml
//! [messaging]
//! start = "3s"          # the processes are spawned (through placement) then
//! warmup = "2s"         # set up (names, groups, topics), traffic starts after this
//! stop = "50s"          # no new sends after this (default: 5 s before the end)
//! tenants = 2
//! payload_bytes = 64
//! reliable = false
//!
//! [messaging.rr]        # request/response pairs
//! pairs = 1000
//! rate_per_s = 10000    # requests per simulated second, over all pairs
//! by_name = false       # servers registered under a name, clients send to the name
//! ```
//!
//! Every kind is optional; a section with none of them spawns nothing.

use nefele_api::messaging::Pattern;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The messaging workload of a scenario.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MessagingWorkload {
    /// When the processes are spawned.
    #[serde(with = "crate::duration_text")]
    pub start: Duration,
    /// Time after `start` for the spawns and the set-up calls; traffic starts then.
    #[serde(with = "crate::duration_text")]
    pub warmup: Duration,
    /// When the last send may be issued (default: 5 s before the end of the run).
    #[serde(with = "crate::duration_text::option")]
    pub stop: Option<Duration>,
    /// Tenants the processes are spread over (each pair, topic and group is of one).
    pub tenants: u32,
    /// Bytes of every message (at least 32: the simulator's header).
    pub payload_bytes: u32,
    /// Sends are reliable (at-least-once on the wire, deduplicated).
    pub reliable: bool,
    /// How long one `Recv` waits for mail.
    #[serde(with = "crate::duration_text")]
    pub recv_wait: Duration,
    /// Processes per spawn request (`n_spawn`; placement tends to keep a batch on
    /// one host, so 1 spreads the processes over the requesting hosts).
    pub spawn_batch: u32,
    /// How long a send may go unanswered before `messaging.fate_reported` fails
    /// (the agents' fate timeout plus slack).
    #[serde(with = "crate::duration_text")]
    pub fate_bound: Duration,
    /// Request/response pairs.
    pub rr: Option<RrWorkload>,
    /// Publish/subscribe.
    pub pubsub: Option<PubSubWorkload>,
    /// Group sends of every pattern.
    pub groups: Option<GroupWorkload>,
    /// Failover clients of failover groups.
    pub failover: Option<FailoverWorkload>,
    /// Calls to an external echo service through the proxies.
    pub external: Option<ExternalWorkload>,
}

impl Default for MessagingWorkload {
    fn default() -> Self {
        MessagingWorkload {
            start: Duration::from_secs(3),
            warmup: Duration::from_secs(3),
            stop: None,
            tenants: 2,
            payload_bytes: 64,
            reliable: false,
            recv_wait: Duration::from_secs(5),
            spawn_batch: 1,
            fate_bound: Duration::from_secs(3),
            rr: None,
            pubsub: None,
            groups: None,
            failover: None,
            external: None,
        }
    }
}

/// Processes that call an external echo service (`Dest::External`) through the
/// proxy agents (the simulator makes the external sites' hosts, or the seed hosts,
/// proxies); the echo comes back into the caller's mailbox.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExternalWorkload {
    /// Calling processes.
    pub clients: u32,
    /// Calls per simulated second over all clients.
    pub rate_per_s: f64,
}

impl Default for ExternalWorkload {
    fn default() -> Self {
        ExternalWorkload {
            clients: 10,
            rate_per_s: 100.0,
        }
    }
}

/// Request/response pairs: a client sends a request to its server, which answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RrWorkload {
    /// Client/server pairs.
    pub pairs: u32,
    /// Requests per simulated second over all pairs.
    pub rate_per_s: f64,
    /// Clients address their server by a registered name instead of its pid.
    pub by_name: bool,
    /// Share of requests preceded by a `whereis` of another server's name
    /// (lookup figures; needs `by_name`).
    pub lookup_fraction: f64,
    /// Extra servers per pair that also register the pair's name (with `by_name`):
    /// under a partition both sides may take it, and the heal must leave one.
    pub contenders: u32,
}

impl Default for RrWorkload {
    fn default() -> Self {
        RrWorkload {
            pairs: 100,
            rate_per_s: 1000.0,
            by_name: false,
            lookup_fraction: 0.0,
            contenders: 0,
        }
    }
}

/// Topics with subscribers; publishers publish to them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PubSubWorkload {
    /// Topics (each with one publisher).
    pub topics: u32,
    /// The fewest subscribers of a topic.
    pub fanout_min: u32,
    /// The most subscribers of a topic (fan-outs are spread evenly in between).
    pub fanout_max: u32,
    /// Publications per simulated second over all topics.
    pub rate_per_s: f64,
    /// Subscribers per topic that receive only every `slow_recv_every` (at most
    /// 256 messages each time), so their mailboxes fill up under a fast publisher.
    pub slow_subscribers: u32,
    /// How often a slow subscriber receives.
    #[serde(with = "crate::duration_text")]
    pub slow_recv_every: Duration,
}

impl Default for PubSubWorkload {
    fn default() -> Self {
        PubSubWorkload {
            topics: 10,
            fanout_min: 1,
            fanout_max: 100,
            rate_per_s: 100.0,
            slow_subscribers: 0,
            slow_recv_every: Duration::from_secs(2),
        }
    }
}

/// Groups whose members receive sends of each pattern from clients.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GroupWorkload {
    /// Groups.
    pub groups: u32,
    /// Members per group.
    pub members: u32,
    /// Clients per group.
    pub clients: u32,
    /// Group sends per simulated second over all groups (`patterns` in turn, then a
    /// broadcast if `broadcast`).
    pub rate_per_s: f64,
    /// The patterns the clients use in turn (default: multicast, anycast, round
    /// robin, least loaded).
    pub patterns: Vec<Pattern>,
    /// Also send to `Broadcast` (every process of the tenant) now and then.
    pub broadcast: bool,
}

impl Default for GroupWorkload {
    fn default() -> Self {
        GroupWorkload {
            groups: 4,
            members: 8,
            clients: 2,
            rate_per_s: 100.0,
            patterns: vec![
                Pattern::Multicast,
                Pattern::Anycast,
                Pattern::RoundRobin,
                Pattern::LeastLoaded,
            ],
            broadcast: false,
        }
    }
}

/// Failover groups: members in rank order, clients sending to the first live one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FailoverWorkload {
    /// Failover groups.
    pub groups: u32,
    /// Members per group (rank = join order).
    pub members: u32,
    /// Clients per group.
    pub clients: u32,
    /// Sends per simulated second over all groups.
    pub rate_per_s: f64,
    /// When the hosts of the primaries (first-ranked members) crash, if ever.
    #[serde(with = "crate::duration_text::option")]
    pub crash_primaries_at: Option<Duration>,
}

impl Default for FailoverWorkload {
    fn default() -> Self {
        FailoverWorkload {
            groups: 4,
            members: 3,
            clients: 4,
            rate_per_s: 200.0,
            crash_primaries_at: None,
        }
    }
}

impl MessagingWorkload {
    /// Checks every parameter; names the bad field.
    pub fn validate(&self) -> Result<(), String> {
        let rate = |r: f64, what: &str| {
            if r.is_finite() && r >= 0.0 {
                Ok(())
            } else {
                Err(format!("messaging.{what}.rate_per_s: {r} is not a rate"))
            }
        };
        if self.tenants == 0 || self.spawn_batch == 0 {
            return Err("messaging: tenants and spawn_batch must be at least 1".into());
        }
        if self.payload_bytes < super::HEADER_BYTES as u32 {
            return Err(format!(
                "messaging.payload_bytes: at least {} (the simulator's header)",
                super::HEADER_BYTES
            ));
        }
        if self.recv_wait.is_zero() {
            return Err("messaging.recv_wait must be more than zero".into());
        }
        if let Some(rr) = &self.rr {
            rate(rr.rate_per_s, "rr")?;
            if !(0.0..=1.0).contains(&rr.lookup_fraction) {
                return Err("messaging.rr.lookup_fraction must lie in [0, 1]".into());
            }
        }
        if let Some(p) = &self.pubsub {
            rate(p.rate_per_s, "pubsub")?;
            if p.fanout_min == 0 || p.fanout_max < p.fanout_min {
                return Err("messaging.pubsub: 1 <= fanout_min <= fanout_max".into());
            }
        }
        if let Some(g) = &self.groups {
            rate(g.rate_per_s, "groups")?;
            if g.patterns.is_empty() && !g.broadcast {
                return Err("messaging.groups: no pattern and no broadcast".into());
            }
            if g.members == 0 || g.clients == 0 {
                return Err("messaging.groups: members and clients must be at least 1".into());
            }
        }
        if let Some(e) = &self.external {
            rate(e.rate_per_s, "external")?;
            if e.clients == 0 {
                return Err("messaging.external.clients must be at least 1".into());
            }
        }
        if let Some(f) = &self.failover {
            rate(f.rate_per_s, "failover")?;
            if f.members < 2 || f.clients == 0 {
                return Err("messaging.failover: at least 2 members and 1 client".into());
            }
        }
        Ok(())
    }
}
