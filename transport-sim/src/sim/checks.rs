//! The periodic check: builds the read-only view of the cluster and runs the
//! invariants on it. Liveness invariants apply only once the cluster has been
//! quiet (no fault struck recently, none in force) for long enough.

use super::Simulation;
use crate::checker::ClusterView;
use crate::placement_sim::{Grace, Liveness};
use nefele_core::{Agent, NodeId, Time};
use std::time::Duration;

/// The highest loss under which a host cut off from a requester is expected to learn
/// a request's outcome within the settle time once connected again (above it, as
/// under a loss fault, a query and its answer may need many more tries).
const MAX_SETTLING_LOSS: f64 = 0.02;

/// The most bytes a data message's frame adds around its data (header, envelope,
/// pids, sequence).
const DATA_ENVELOPE_BYTES: usize = 256;

/// How long a requester running steadily may take to answer a spawn: every step of
/// its pipeline ends on a timer of its own (offers, escalation through at most
/// `MAX_LEVELS` levels, presence, creation, a gang's retries), plus a second for
/// the messages in between.
fn answer_bound(p: &nefele_core::placement::PlacementConfig) -> Duration {
    const MAX_LEVELS: u32 = 16;
    p.offer_timeout
        + p.escalate_timeout * MAX_LEVELS
        + p.presence_timeout
        + p.create_timeout
        + p.gang_patience
        + Duration::from_secs(1)
}

impl Simulation {
    /// How long the cluster has been free of faults; `None` while one is in force
    /// (a partition, a stall, a loss other than the configured one) or agents are
    /// still booting. A stall counts until it ends: a host that resumes comes back
    /// with stale views, as from a fault.
    fn quiet_for(&self, paused: &[bool]) -> Option<Duration> {
        let loss_fault = self.network.config().loss != self.config.network.loss;
        if self.network.is_partitioned() || paused.contains(&true) || loss_fault {
            return None;
        }
        let resumed = self
            .hosts
            .iter()
            .map(|h| h.paused_until)
            .filter(|t| *t <= self.now)
            .max();
        let last = self.last_fault.max(resumed).unwrap_or(Time::ZERO);
        let quiet_since = last + self.config.boot_spread;
        (self.now >= quiet_since).then(|| self.now.saturating_since(quiet_since))
    }

    pub(super) fn check(&mut self) {
        let now = self.now;
        // How long after a failed reply its processes may still run, and after its
        // expiry a lease may still be held (the hosts' timeouts).
        let p = &self.config.agent.services.placement;
        let grace = p.lease + p.create_timeout + p.confirm_timeout * 2 + self.config.check.interval;
        let locals: Vec<Time> = self
            .hosts
            .iter()
            .map(|h| {
                // A paused host runs no timers: its leases wait with it, and once it
                // resumes it has the grace period to release those that expired. So
                // has a host whose clock jumped (a skew): the leases the jump ended
                // are released at its next wake, which may come after this check
                // (swarm seed 412560: a lease held at the instant of a jump of
                // +1.76 s).
                let steady = h.paused_until.max(h.skewed_at);
                if h.paused_until > now || now.saturating_since(steady) < grace {
                    Time::ZERO
                } else {
                    h.clock.reading(now)
                }
            })
            .collect();
        let agents: Vec<Option<&Agent>> = self.hosts.iter().map(|h| h.agent.as_ref()).collect();
        let paused: Vec<bool> = self
            .hosts
            .iter()
            .map(|h| h.paused_until > self.now)
            .collect();
        let quiet = self.quiet_for(&paused);
        let settle = self.config.check.settle;
        let settled = quiet.is_some_and(|q| q >= settle);
        let view = ClusterView {
            now: self.now,
            topology: &self.topology,
            agents: &agents,
            paused: &paused,
            partitioned: self.network.is_partitioned(),
            max_frame_since_last_check: self.max_frame_since_check,
            down_since: &self.down_since,
            delivered_while_down: &self.delivered_while_down,
        };
        self.checker.run(&view, quiet, settle);
        let results =
            self.federation
                .observe(&view, &self.config.agent.federations, self.last_fault);
        for result in results {
            self.checker.record(self.now, "federation", result, settled);
        }
        // Placement's invariants hold at all times, faults or not.
        let interval = self.config.check.interval;
        let grace = Grace {
            after_reply: grace,
            // The host's next query (at most `query_backoff_max` away) and its repeat
            // a `confirm_timeout` later (one of the two answers lost), then a little more.
            settle: p.query_backoff_max + p.confirm_timeout * 4 + interval,
            answer: answer_bound(p) + interval,
        };
        // Connected: both up and running, neither direction cut, and a network that
        // loses few enough messages for a query and its answer to pass within `settle`.
        let reliable = self.network.config().loss <= MAX_SETTLING_LOSS;
        let connected = |a: NodeId, b: NodeId| {
            let up = |n: NodeId| agents[n.0 as usize].is_some() && !paused[n.0 as usize];
            reliable && up(a) && up(b) && !self.network.blocked(a, b) && !self.network.blocked(b, a)
        };
        let sample = self.config.workload.as_ref().is_some_and(|w| {
            let t = self.now.saturating_since(Time::ZERO);
            t >= w.start && w.stop.is_none_or(|s| t <= s)
        });
        let hosts = &self.hosts;
        let steady_since = |n: NodeId| {
            let h = &hosts[n.0 as usize];
            let resumed = Some(h.paused_until).filter(|t| *t <= now)?;
            h.agent.as_ref()?;
            Some(h.booted_at.max(resumed).max(h.skewed_at))
        };
        let liveness = Liveness {
            connected: &connected,
            steady_since: &steady_since,
        };
        let results = self
            .placement
            .check(self.now, &agents, &locals, grace, &liveness, sample);
        for (name, result) in results {
            self.checker.record(self.now, name, result, true);
        }
        // Messaging's data messages are bounded by `max_message_bytes` (and the
        // envelope around it), not by the control MTU.
        let data_bound =
            self.config.agent.services.messaging.max_message_bytes as usize + DATA_ENVELOPE_BYTES;
        let data = self.max_data_frame_since_check;
        let data_ok = if data <= data_bound {
            Ok(())
        } else {
            Err(format!(
                "a {data}-byte data message exceeds max_message_bytes and its envelope ({data_bound})"
            ))
        };
        self.checker
            .record(self.now, "messaging.data_size", data_ok, true);
        if let Some(m) = self.messaging.as_mut() {
            let hosts = &self.hosts;
            let up = |n: NodeId| hosts[n.0 as usize].agent.is_some();
            // The trees of the boot merge as at a heal: a name granted by two of
            // their roots is decided then (swarm seed 442613: 276 hosts converged
            // at 3.75 s, a name held twice until 5.6 s, checked from 5.5 s).
            let merged = self.federation.reports().iter().all(|r| {
                r.converged_at_s
                    .is_some_and(|t| now.as_secs_f64() - t >= settle.as_secs_f64())
            });
            for (name, result, needs_settle) in m.check(now, &self.placement, &up, merged) {
                self.checker
                    .record(now, name, result, settled || !needs_settle);
            }
        }
        if let Some(s) = self.supervision.as_mut() {
            for (name, result) in s.check(now, &self.placement) {
                self.checker.record(now, name, result, true);
            }
        }
        self.max_data_frame_since_check = 0;
        if let Some(timeline) = &mut self.timeline {
            let federation = self.federation.reports().first();
            let shape = federation.map(|f| f.shape.clone()).unwrap_or_default();
            let (requests, placed, rejected) = self.placement.counts();
            let utilization = self.placement.last_utilization();
            let (placed_ns, rejected_ns) = self.placement.latencies_ns();
            let sample = crate::timeline::Sample {
                t_s: now.as_secs_f64(),
                live_agents: agents.iter().filter(|a| a.is_some()).count() as u32,
                groups: shape.groups,
                depth: shape.depth,
                top_groups: shape.top_groups,
                federation_holds: federation.is_some_and(|f| f.holds_at_end),
                requests,
                placed,
                rejected,
                cpu_utilization: sample.then(|| utilization.map(|u| u.0)).flatten(),
                memory_utilization: sample.then(|| utilization.map(|u| u.1)).flatten(),
                violations: self.checker.report().violations,
                ..crate::timeline::Sample::default()
            };
            timeline.sample(sample, placed_ns, rejected_ns);
        }
        self.max_frame_since_check = 0;
    }
}
