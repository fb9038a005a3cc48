//! Failure detection that survives message loss, the SWIM/Lifeguard way.
//!
//! Silence alone no longer removes an agent. Heartbeats (`Beat`, `LeaderBeat`) still
//! raise the suspicion, but between suspicion and removal this agent asks:
//!
//! - **Probe rounds.** Every tick while a peer is suspected (a member, by its leader;
//!   a leader, by its members), this agent probes it directly (`Probe`) and asks up
//!   to [`INDIRECT_PROBES`] other members of the group to probe it on its behalf
//!   (`ProbeReq { target }`). A helper that lists both passes the question on
//!   (`ProbeFor { origin }`), and the suspect answers the origin directly with
//!   `ProbeAck`. Each round therefore has `1 + INDIRECT_PROBES` independent paths
//!   (a small group asks its few helpers more than once, or probes directly more);
//!   a live peer is removed only if its heartbeats *and* every path of every round
//!   until `remove_periods` are lost. Helpers keep no state.
//! - **Refutation.** A suspect learns that it is suspected from the probes it gets
//!   (direct or relayed) and refutes by answering each one; its own next heartbeat
//!   refutes too.
//! - **Local health (Lifeguard).** An agent whose own messages are being lost cannot
//!   tell its peers' silence from its own deafness. [`Health`] counts evidence
//!   that the problem is local (this agent is being probed by the peers that watch
//!   it, or more than half of the members of a group it leads fell silent at once)
//!   and lengthens this agent's removal and takeover timeouts by one period per
//!   point, up to [`MAX_HEALTH`]; each tick without such evidence takes a point
//!   back. The bound is part of [`FederationConfig::detection_timeout`].
//! - **Observed loss.** Every tick, each heartbeat this agent expects (a member's
//!   `Beat`, its leader's `LeaderBeat`, a ring predecessor's `RingBeat`, from a peer
//!   not yet suspected) either came within the last period or did not: [`LossMeter`]
//!   keeps the fraction that did not, over the last [`LOSS_WINDOW`] or so. A round
//!   fails only if its direct path (2 messages) and each relayed path (3) lose a
//!   message, so at loss `p` with three helpers a round fails with probability
//!   about `(1 - (1-p)²)(1 - (1-p)³)³`: 3e-4 at 5%, 4e-3 at 10%, 4e-2 at 20% (in
//!   any group of three or more; less in a group of two). The two rounds that
//!   `remove_periods - suspect_periods` allow by default (and at least, whatever
//!   the configuration: [`MIN_PROBE_ROUNDS`]) are plenty at a few percent, not at
//!   20% (a live member removed about once a run of 2,000 agents, seen in the
//!   `loss-20pct` scenario). So every [`LOSS_PER_PERIOD`] of observed loss adds one
//!   period, one more round, to removal and takeover timeouts, within the same
//!   [`MAX_HEALTH`] bound as local health (the larger of the two counts): a crash
//!   is still suspected as soon as before, and removed within the detection
//!   timeout, while a live peer must now fail four rounds at 20% loss.
//!
//! Invariants: a helper relays only between two members of its own group at that
//! level, and a suspect answers a relayed probe only from a member of its own group
//! there, so these messages cannot be used to make an agent talk to strangers; every
//! round sends at most `1 + 2 × INDIRECT_PROBES` messages per suspect.
//!
//! [`FederationConfig::detection_timeout`]: super::FederationConfig::detection_timeout

use super::view::Level;
use super::{FedBody, Federation};
use crate::ids::NodeId;
use rand::Rng;

/// How many other members a probe round asks to probe a suspect on this agent's behalf.
pub const INDIRECT_PROBES: usize = 3;

/// The fewest probe rounds between a suspicion and a removal or takeover, whatever
/// `remove_periods` says ([`super::FederationConfig::removal_periods`]).
pub const MIN_PROBE_ROUNDS: u32 = 2;

/// The most periods local health, or observed loss, may add to a removal or takeover
/// timeout.
pub const MAX_HEALTH: u32 = 2;

/// Heartbeats [`LossMeter`] weighs: past this many, the older half of its counts fades.
pub const LOSS_WINDOW: u32 = 64;

/// Observed heartbeat loss, as a fraction, that adds one period to removal and
/// takeover timeouts: 1/16 (6.25%), so two periods from 12.5%.
pub const LOSS_PER_PERIOD: (u32, u32) = (1, 16);

/// The fewest heartbeats [`LossMeter`] must have weighed before it adds anything (a
/// fresh agent's first misses say little).
const LOSS_MIN_SAMPLES: u32 = 16;

/// The fraction of expected heartbeats that did not come, over about the last
/// [`LOSS_WINDOW`]. Invariant: `missed <= expected < 2 × LOSS_WINDOW`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LossMeter {
    expected: u32,
    missed: u32,
}

impl LossMeter {
    /// One heartbeat was due in the last period; `missed` if it did not come.
    pub fn observe(&mut self, missed: bool) {
        self.expected += 1;
        self.missed += u32::from(missed);
        if self.expected >= 2 * LOSS_WINDOW {
            self.expected /= 2;
            self.missed /= 2;
        }
    }

    /// Periods to add to removal and takeover timeouts now: one per
    /// [`LOSS_PER_PERIOD`] of observed loss, at most [`MAX_HEALTH`].
    #[must_use]
    pub fn extra_periods(&self) -> u32 {
        if self.expected < LOSS_MIN_SAMPLES {
            return 0;
        }
        let (num, den) = LOSS_PER_PERIOD;
        (self.missed * den / (self.expected * num)).min(MAX_HEALTH)
    }
}

/// Lifeguard's local health multiplier, as whole periods added to timeouts.
///
/// Raised at most once per tick (a burst of evidence counts once), lowered by one at
/// the end of every tick that saw none. Invariant: `score <= MAX_HEALTH`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Health {
    score: u32,
    raised: bool,
}

impl Health {
    /// Evidence that this agent itself is missing messages.
    pub fn raise(&mut self) {
        if !self.raised {
            self.raised = true;
            self.score = (self.score + 1).min(MAX_HEALTH);
        }
    }

    /// The end of a tick: a tick without evidence takes a point back.
    pub fn end_tick(&mut self) {
        if !std::mem::take(&mut self.raised) {
            self.score = self.score.saturating_sub(1);
        }
    }

    /// Periods to add to removal and takeover timeouts now.
    #[must_use]
    pub fn extra_periods(&self) -> u32 {
        self.score
    }
}

impl Federation {
    /// One probe round of `suspect` at `level`: a direct probe, and
    /// [`INDIRECT_PROBES`] requests to probe it for us, spread over up to that many
    /// members (not this agent, not the suspect, and, for a leader, none it
    /// suspects too): a group with fewer helpers asks some twice, and one with none
    /// probes directly that many times more. Every path is one more chance under
    /// loss. (Before, a round in a group of three had two paths, and under 5%
    /// uniform loss a leader removed a live member: swarm seed 20218.)
    pub(super) fn probe_round(&mut self, level: usize, suspect: NodeId) {
        let lvl = level as Level;
        self.send(suspect, FedBody::Probe { level: lvl });
        let seat = &self.seats[level];
        let mut candidates: Vec<NodeId> = seat
            .view
            .members
            .iter()
            .copied()
            .filter(|m| *m != self.me && *m != suspect && !seat.suspects.contains(m))
            .collect();
        // A partial Fisher-Yates shuffle: the first `k` are a uniform sample.
        let k = INDIRECT_PROBES.min(candidates.len());
        for i in 0..k {
            let j = self.rng.gen_range(i..candidates.len());
            candidates.swap(i, j);
        }
        if k == 0 {
            for _ in 0..INDIRECT_PROBES {
                self.send(suspect, FedBody::Probe { level: lvl });
            }
        }
        for &helper in candidates.iter().take(k).cycle().take(INDIRECT_PROBES) {
            self.send(
                helper,
                FedBody::ProbeReq {
                    level: lvl,
                    target: suspect,
                },
            );
        }
    }

    /// `origin` asks us to probe `target` at `level`: relayed only if both are members
    /// of our group there.
    pub(super) fn on_probe_req(&mut self, origin: NodeId, level: Level, target: NodeId) {
        let shared = self
            .seats
            .get(level as usize)
            .is_some_and(|s| s.view.contains(origin) && s.view.contains(target));
        if shared && target != self.me && target != origin {
            self.send(target, FedBody::ProbeFor { level, origin });
        }
    }

    /// `origin` asks, through a helper, whether we are alive at `level`: answered
    /// straight to `origin` if it is a member of our group there. Being probed by a
    /// peer that watches us means our own messages are being lost.
    pub(super) fn on_probe_for(&mut self, origin: NodeId, level: Level) {
        let Some(seat) = self.seats.get(level as usize) else {
            return;
        };
        if origin == self.me || !seat.view.contains(origin) {
            return;
        }
        if self.watches_me(origin, level) {
            self.health.raise();
        }
        self.send(origin, FedBody::ProbeAck { level });
    }

    /// Periods to add to removal and takeover timeouts now: for poor local health or
    /// for observed loss, whichever asks more (at most [`MAX_HEALTH`]).
    pub(super) fn extra_periods(&self) -> u32 {
        self.health.extra_periods().max(self.loss.extra_periods())
    }

    /// Whether `peer` decides on our membership at `level`: our leader there, or (when
    /// we lead) one of our members, who may take our place.
    pub(super) fn watches_me(&self, peer: NodeId, level: Level) -> bool {
        self.seats
            .get(level as usize)
            .is_some_and(|s| s.view.leader == peer || (s.led_by(self.me) && s.view.contains(peer)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_rises_once_per_tick_to_its_bound_and_decays() {
        let mut h = Health::default();
        h.raise();
        h.raise();
        assert_eq!(h.extra_periods(), 1, "a burst within one tick counts once");
        h.end_tick();
        assert_eq!(h.extra_periods(), 1, "a tick with evidence keeps the score");
        for _ in 0..5 {
            h.raise();
            h.end_tick();
        }
        assert_eq!(h.extra_periods(), MAX_HEALTH);
        h.end_tick();
        assert_eq!(h.extra_periods(), MAX_HEALTH - 1);
        for _ in 0..5 {
            h.end_tick();
        }
        assert_eq!(h.extra_periods(), 0);
    }

    #[test]
    fn observed_loss_adds_a_period_per_step_up_to_the_bound() {
        let meter_at = |missed_per_100: u32| {
            let mut m = LossMeter::default();
            for i in 0..1_000 {
                m.observe((i * missed_per_100) % 100 < missed_per_100);
            }
            m.extra_periods()
        };
        assert_eq!(meter_at(1), 0);
        assert_eq!(meter_at(5), 0);
        assert_eq!(meter_at(8), 1);
        assert_eq!(meter_at(20), MAX_HEALTH);
        assert_eq!(meter_at(100), MAX_HEALTH);
        let mut fresh = LossMeter::default();
        for _ in 0..LOSS_MIN_SAMPLES - 1 {
            fresh.observe(true);
        }
        assert_eq!(fresh.extra_periods(), 0, "too few samples to say");
    }
}
