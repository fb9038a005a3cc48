//! The timeline of a run: what the cluster looked like at every check, for the
//! pictures of `nefele-sim run --html` ([`crate::html`]).
//!
//! The simulator feeds it every trace record (messages delivered by kind and
//! dropped, faults) and, at every check, a [`Sample`] of the rest: agents up, the
//! first federation instance's shape, placement's counters, the latency of the
//! replies since the last sample, utilisation and violations so far. Off unless
//! asked for ([`crate::Simulation::record_timeline`]); it reads no clock and changes
//! nothing in the run (not its trace hash).

use crate::trace::TraceEvent;
use nefele_core::Time;
use std::collections::BTreeMap;

/// The cluster at one check.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sample {
    /// Simulated seconds.
    pub t_s: f64,
    /// Agents up.
    pub live_agents: u32,
    /// Messages delivered since the previous sample, by kind.
    pub delivered: BTreeMap<&'static str, u64>,
    /// Messages dropped since the previous sample.
    pub dropped: u64,
    /// The first federation instance's groups, depth and top groups, when it last held.
    pub groups: usize,
    /// Its depth.
    pub depth: usize,
    /// Its top groups.
    pub top_groups: usize,
    /// Whether its invariants held at this check.
    pub federation_holds: bool,
    /// Workload requests issued so far.
    pub requests: u64,
    /// Of those, placed.
    pub placed: u64,
    /// Of those, rejected.
    pub rejected: u64,
    /// Median latency of the replies since the previous sample, in ms.
    pub latency_p50_ms: Option<f64>,
    /// 99th percentile of the same.
    pub latency_p99_ms: Option<f64>,
    /// Committed cpu over the capacity of live hosts, when sampled.
    pub cpu_utilization: Option<f64>,
    /// The same for memory.
    pub memory_utilization: Option<f64>,
    /// Violations so far.
    pub violations: u64,
}

/// Samples and faults over a run.
#[derive(Clone, Debug, Default)]
pub struct Timeline {
    samples: Vec<Sample>,
    delivered: BTreeMap<&'static str, u64>,
    dropped: u64,
    faults: Vec<(f64, String)>,
    /// How many placed and rejected latencies earlier samples have used.
    latency_seen: (usize, usize),
}

impl Timeline {
    /// Counts one trace record.
    pub fn record(&mut self, now: Time, event: &TraceEvent<'_>) {
        match event {
            TraceEvent::Deliver(p) => *self.delivered.entry(p.kind).or_default() += 1,
            TraceEvent::Drop(..) => self.dropped += 1,
            TraceEvent::Timer { .. } => {}
            TraceEvent::Fault { text } => self.faults.push((now.as_secs_f64(), (*text).to_owned())),
        }
    }

    /// Adds `sample`, with the messages counted since the previous one and the
    /// latencies of the replies among `placed_ns` and `rejected_ns` (every reply so
    /// far, in order) that earlier samples have not used.
    pub fn sample(&mut self, mut sample: Sample, placed_ns: &[u64], rejected_ns: &[u64]) {
        sample.delivered = std::mem::take(&mut self.delivered);
        sample.dropped = std::mem::take(&mut self.dropped);
        let mut new: Vec<u64> = placed_ns[self.latency_seen.0.min(placed_ns.len())..]
            .iter()
            .chain(&rejected_ns[self.latency_seen.1.min(rejected_ns.len())..])
            .copied()
            .collect();
        self.latency_seen = (placed_ns.len(), rejected_ns.len());
        new.sort_unstable();
        let quantile = |q: f64| {
            let last = new.len().checked_sub(1)?;
            Some(new[(last as f64 * q).round() as usize] as f64 / 1e6)
        };
        sample.latency_p50_ms = quantile(0.5);
        sample.latency_p99_ms = quantile(0.99);
        self.samples.push(sample);
    }

    /// The samples, in time order.
    #[must_use]
    pub fn samples(&self) -> &[Sample] {
        &self.samples
    }

    /// Every fault struck or undone: (simulated seconds, what happened).
    #[must_use]
    pub fn faults(&self) -> &[(f64, String)] {
        &self.faults
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::Packet;
    use nefele_core::NodeId;

    #[test]
    fn messages_and_latencies_are_counted_per_interval() {
        let mut t = Timeline::default();
        let packet = Packet {
            from: NodeId(0),
            to: NodeId(1),
            kind: "discovery.heartbeat",
            len: 10,
            digest: 0,
        };
        t.record(Time::ZERO, &TraceEvent::Deliver(packet));
        t.record(Time::ZERO, &TraceEvent::Deliver(packet));
        t.record(
            Time::from_millis(5),
            &TraceEvent::Fault { text: "crash n3" },
        );
        t.sample(Sample::default(), &[1_000_000, 3_000_000], &[]);
        t.record(Time::ZERO, &TraceEvent::Deliver(packet));
        t.sample(Sample::default(), &[1_000_000, 3_000_000, 9_000_000], &[]);
        let s = t.samples();
        assert_eq!(s[0].delivered["discovery.heartbeat"], 2);
        assert_eq!(s[1].delivered["discovery.heartbeat"], 1);
        assert_eq!(s[0].latency_p99_ms, Some(3.0));
        assert_eq!(s[1].latency_p50_ms, Some(9.0));
        assert_eq!(t.faults(), &[(0.005, "crash n3".to_owned())]);
    }
}
