//! The `messaging` object of the report, and the log histogram its latency
//! percentiles come from (a few hundred counters, however many messages).

use serde::Serialize;
use std::collections::BTreeMap;

/// Latencies in log buckets: 16 per power of two (under 5% error), in nanoseconds.
#[derive(Clone, Debug)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
}

const SUB: u32 = 16;

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; (64 * SUB) as usize],
            total: 0,
        }
    }
}

impl Histogram {
    fn bucket(ns: u64) -> usize {
        if ns < u64::from(SUB) {
            return ns as usize;
        }
        let exp = 63 - ns.leading_zeros(); // ns >= 16, so exp >= 4
        let mantissa = (ns >> (exp - 4)) & u64::from(SUB - 1);
        ((exp - 3) * SUB) as usize + mantissa as usize
    }

    /// The largest value in `bucket`.
    fn upper(bucket: usize) -> u64 {
        let b = bucket as u64;
        if b < u64::from(SUB) {
            return b;
        }
        let exp = b / u64::from(SUB) + 3;
        let mantissa = b % u64::from(SUB);
        let upper = ((u128::from(SUB) + u128::from(mantissa) + 1) << (exp - 4)) - 1;
        u64::try_from(upper).unwrap_or(u64::MAX)
    }

    /// Counts one value.
    pub fn record(&mut self, ns: u64) {
        self.counts[Self::bucket(ns)] += 1;
        self.total += 1;
    }

    /// Values counted.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.total
    }

    /// The `q` quantile (0..=1), in milliseconds, as its bucket's upper bound.
    #[must_use]
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((self.total as f64 * q).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(Self::upper(i) as f64 / 1e6);
            }
        }
        None
    }
}

/// Latency of one class: count, median and 99th percentile in simulated ms.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LatencyFigures {
    /// Messages measured.
    pub count: u64,
    /// Median.
    pub p50_ms: Option<f64>,
    /// 99th percentile.
    pub p99_ms: Option<f64>,
}

impl From<&Histogram> for LatencyFigures {
    fn from(h: &Histogram) -> Self {
        LatencyFigures {
            count: h.count(),
            p50_ms: h.quantile_ms(0.5),
            p99_ms: h.quantile_ms(0.99),
        }
    }
}

/// The `messaging` object of the report.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct MessagingFigures {
    /// Processes the workload asked for.
    pub processes: u64,
    /// Of those, running when the traffic started.
    pub processes_running: u64,
    /// Sends issued by the simulated processes.
    pub sent: u64,
    /// Sends answered with success.
    pub sent_ok: u64,
    /// Data messages the applications received (a fan-out counts once per receiver).
    pub delivered: u64,
    /// Sends answered with an error, by error.
    pub failed: BTreeMap<String, u64>,
    /// Members that fan-out sends answered `Partial` missed: full mailboxes.
    pub partial_full: u64,
    /// ... and members that a later send of the same sender had reached first.
    pub partial_overtaken: u64,
    /// Sends unanswered at the end of the run.
    pub unanswered: u64,
    /// Messages an application received twice.
    pub duplicates: u64,
    /// Messages an application received after a later one of the same sender on
    /// the same path (point-to-point or fan-out).
    pub order_violations: u64,
    /// Messages an application received after a later one of the same sender that
    /// came by the other path (a fan-out overtaken by a pid send or the reverse).
    pub order_violations_across_paths: u64,
    /// Send-to-receive latency per distance class of the sender
    /// (`same_host`, `same_group`, `same_dc`, `external`).
    pub latency: BTreeMap<&'static str, LatencyFigures>,
    /// Bytes of messaging's wire messages per link class of the topology
    /// (`same_host`, `same_rack`, `same_row`, `same_dc`, `external`).
    pub bytes_by_link: BTreeMap<&'static str, u64>,
    /// Messaging's wire messages sent, over all kinds.
    pub wire_messages: u64,
    /// `whereis` answered at once (from the local cache).
    pub lookups_warm: u64,
    /// `whereis` that needed the network.
    pub lookups_cold: u64,
    /// `whereis` answered with an error, by error.
    pub lookups_failed: BTreeMap<String, u64>,
    /// Latency of the cold lookups.
    pub lookup_cold_latency: LatencyFigures,
    /// Set-up calls (register, join, subscribe) that failed, by call and error.
    pub setup_failed: BTreeMap<String, u64>,
    /// Failover sends that reached a member after later sends of the same client
    /// (retried there after the primary died).
    pub failover_reordered: u64,
    /// One-member group sends (anycast, round-robin, least-loaded) that reached a
    /// member after later sends of the same sender: the agent retries a send whose
    /// chosen member turned out gone on the next member, so the retry can come late.
    pub group_retry_reordered: u64,
    /// Failover sends answered with success that no member's application received.
    pub failover_lost: u64,
    /// Request/response exchanges completed (the response reached the client).
    pub rr_completed: u64,
    /// Round-robin group sends received by members.
    pub round_robin_received: u64,
    /// Over the groups that got round-robin sends, the largest relative deviation of
    /// a member's share from the uniform one (`|count / mean - 1|`).
    pub round_robin_max_deviation: Option<f64>,
    /// Per failover group, the time from the crash of the primaries' hosts to the
    /// first failover send received by another member (the takeover).
    pub failover_takeover: LatencyFigures,
    /// The longest takeover, in simulated ms.
    pub failover_takeover_max_ms: Option<f64>,
    /// Messaging's wire messages sent from the first traffic arrival on (set-up
    /// excluded), over all kinds.
    pub wire_messages_in_traffic: u64,
    /// The same by kind of messaging message (`msg_deliver`, `topics_visit_data`, ...).
    pub wire_in_traffic_by_kind: BTreeMap<&'static str, u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_the_bucket_error() {
        let mut h = Histogram::default();
        for v in 1..=100_000u64 {
            h.record(v * 1_000); // 1 µs .. 100 ms
        }
        let p50 = h.quantile_ms(0.5).unwrap();
        let p99 = h.quantile_ms(0.99).unwrap();
        assert!((50.0..53.5).contains(&p50), "{p50}");
        assert!((99.0..104.0).contains(&p99), "{p99}");
        assert_eq!(Histogram::default().quantile_ms(0.5), None);
    }

    #[test]
    fn buckets_cover_every_value_and_upper_bounds_hold() {
        for ns in [0u64, 1, 15, 16, 17, 31, 32, 1_000, 123_456_789, u64::MAX] {
            let b = Histogram::bucket(ns);
            assert!(Histogram::upper(b) >= ns, "{ns}");
            if b > 0 {
                assert!(Histogram::upper(b - 1) < ns, "{ns}");
            }
        }
    }
}
