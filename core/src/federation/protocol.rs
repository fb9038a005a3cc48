//! The federation protocol's handlers: the periodic tick (heartbeats, failure
//! detection, joining, probing, merging) and the reaction to each message.
//! See the parent module for the protocol and why it converges.

use super::seat::Seat;
use super::view::{Level, View};
use super::{
    FedBody, FedNotice, Federation, FAST_PROBES, JOIN_TARGET_TRIES, MAX_ANCESTORS, MAX_HOPS,
};
use crate::ids::NodeId;
use crate::time::Time;
use rand::Rng;
use std::collections::BTreeSet;

/// Why an agent drops its seats, which says what it tells the leaders of the groups
/// it was a plain member of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Farewell {
    /// It rejoins elsewhere (`Leave`): it lives on in another group.
    Moving,
    /// It leaves the federation (`Gone`): its host shuts down.
    Gone,
}

/// A fresh request for a seat at `level` on behalf of `joiner`.
fn attach(joiner: NodeId, level: Level) -> FedBody {
    FedBody::Attach {
        joiner,
        level,
        hops: 0,
    }
}

impl Federation {
    // ---- the tick -------------------------------------------------------------

    pub(super) fn tick(&mut self, now: Time) {
        if self.seats.is_empty() {
            self.try_join(now);
            return;
        }
        self.departed.observe(now, self.me, &self.seats);
        let keep = self.config.probe_period * super::departed::KEEP_PROBES;
        self.departed.expire(now, keep);
        for level in 0..self.seats.len() {
            if level >= self.seats.len() {
                break; // a takeover or removal above dropped seats
            }
            if self.seats[level].led_by(self.me) {
                self.lead_tick(now, level);
            } else {
                self.member_tick(now, level);
            }
        }
        self.maintain_shape(now);
        self.health.end_tick();
    }

    /// A groupless agent asks a rack neighbour for a level-0 seat, trying the lowest
    /// ids first, one each period (an answer takes a round trip or two, far less
    /// than a period); with no neighbour (or none answering) it founds its own
    /// group. An
    /// agent sent to a group (a merge, a dissolve) asks that group's leader again
    /// every period first, [`JOIN_TARGET_TRIES`] times: one lost `Attach` must not
    /// leave it groupless for several periods and then in another group.
    fn try_join(&mut self, now: Time) {
        if now < self.next_join {
            return;
        }
        if let Some(target) = self.join_target {
            if self.join_attempts < JOIN_TARGET_TRIES {
                self.join_attempts += 1;
                self.next_join = now + self.config.period;
                self.send(target, attach(self.me, 0));
                return;
            }
            self.join_target = None;
            self.join_attempts = 0;
        }
        let attempt = self.join_attempts as usize;
        self.join_attempts += 1;
        self.next_join = now + self.config.period;
        match self.neighbours.get(attempt) {
            Some(&target) if attempt < 3 => self.send(target, attach(self.me, 0)),
            _ => self.found(now),
        }
    }

    /// Founds a level-0 group of one, which is its own tree's root.
    fn found(&mut self, now: Time) {
        self.seats
            .push(Seat::new(View::solo(0, self.me, Vec::new()), now));
        self.became_root(now);
    }

    /// This agent now leads a group without a parent: probe soon, and every period
    /// for the next few probes (an orphaned subtree should rejoin fast; a real root
    /// settles down to `probe_period`).
    fn became_root(&mut self, now: Time) {
        let jitter = self.config.period.mul_f64(self.rng.gen::<f64>() / 2.0);
        self.next_probe = now + self.config.period / 2 + jitter;
        self.fast_probes = FAST_PROBES;
    }

    fn lead_tick(&mut self, now: Time, level: usize) {
        let period = self.config.period;
        let suspect_after = period * self.config.suspect_periods;
        let remove_after = period * (self.config.removal_periods() + self.extra_periods());
        // A split's other half has its leader, or has broken up, by the time its members
        // would have taken over from a leader that never spoke.
        self.seats[level].forget_hand_overs(now - period * self.config.removal_periods());
        let seat = &self.seats[level];
        let epoch = seat.view.epoch;
        let mut beats = Vec::new();
        let mut suspects = Vec::new();
        let mut removals = Vec::new();
        for m in seat.view.members.iter().copied().filter(|m| *m != self.me) {
            beats.push(m);
            let silence = now.saturating_since(seat.heard.get(&m).copied().unwrap_or(now));
            if silence <= suspect_after {
                self.loss.observe(silence > period);
            }
            if silence > remove_after {
                removals.push(m);
            } else if silence > suspect_after {
                suspects.push(m);
            }
        }
        // Lifeguard: most of the group silent at once says more about this agent
        // (deaf, or its own stall) than about the members.
        if beats.len() >= 2 && (suspects.len() + removals.len()) * 2 > beats.len() {
            self.health.raise();
        }
        let lvl = level as Level;
        for m in beats {
            self.send(m, FedBody::LeaderBeat { level: lvl, epoch });
        }
        for m in suspects {
            if self.seats[level].suspects.insert(m) {
                self.notice(FedNotice::Suspected {
                    node: m,
                    level: lvl,
                });
            }
            self.probe_round(level, m);
        }
        for m in removals {
            self.seats[level].expel(m);
            self.notice(FedNotice::Removed {
                node: m,
                level: lvl,
            });
        }
    }

    fn member_tick(&mut self, now: Time, level: usize) {
        let summary = self.contribution(level);
        let period = self.config.period;
        let seat = &self.seats[level];
        let leader = seat.view.leader;
        let epoch = seat.view.epoch;
        let silence = now.saturating_since(seat.leader_heard);
        let suspect_after = period * self.config.suspect_periods;
        let suspected = silence > suspect_after;
        if !suspected {
            self.loss.observe(silence > period);
        }
        let newly_suspected = suspected && !seat.leader_suspected;
        // The heirs ahead of this agent: the members after the leader, lowest id first.
        let ahead: Vec<NodeId> = seat
            .view
            .members
            .iter()
            .copied()
            .filter(|m| *m != leader)
            .take_while(|m| *m != self.me)
            .collect();
        // Succession: the lowest live heir takes over first; each heir ahead of us that
        // answered our probe since the leader fell silent delays us one more period.
        let suspected_at = seat.leader_heard + suspect_after;
        let live_ahead = ahead
            .iter()
            .filter(|m| seat.heard.get(m).is_some_and(|t| *t >= suspected_at))
            .count() as u32;
        let lvl = level as Level;
        let departed = self.departed.next_to_tell();
        self.send(
            leader,
            FedBody::Beat {
                level: lvl,
                epoch,
                summary: Box::new(summary),
                departed,
            },
        );
        if newly_suspected {
            self.seats[level].leader_suspected = true;
            self.notice(FedNotice::Suspected {
                node: leader,
                level: lvl,
            });
        }
        if suspected {
            // Every tick until the leader or the takeover answers: one lost probe must
            // not decide the succession.
            self.probe_round(level, leader);
            for heir in ahead {
                self.send(heir, FedBody::Probe { level: lvl });
            }
        }
        if level == 0 {
            self.ring_tick(now);
        }
        // Each live heir ahead delays us by more than the most its health may delay it,
        // so the succession keeps its order.
        let wait = self.config.removal_periods()
            + live_ahead * (1 + super::detect::MAX_HEALTH)
            + self.extra_periods();
        if silence > period * wait {
            self.take_over(now, level);
        }
    }

    /// Beats the ring successors at level 0, and suspects silent ring predecessors.
    fn ring_tick(&mut self, now: Time) {
        let suspect_after = self.config.period * self.config.suspect_periods;
        let Some(ring) = self.seats[0].ring_neighbours(self.me) else {
            return;
        };
        for &to in ring.next() {
            self.send(to, FedBody::RingBeat);
        }
        for (i, &p) in ring.prev().iter().enumerate() {
            let seat = &mut self.seats[0];
            let silence = now.saturating_since(seat.ring_heard[i]);
            if silence <= suspect_after {
                self.loss.observe(silence > self.config.period);
            }
            if silence > suspect_after && !seat.ring_suspected[i] {
                seat.ring_suspected[i] = true;
                self.notice(FedNotice::Suspected { node: p, level: 0 });
            }
        }
    }

    /// The leader of our group at `level` is gone: lead it, and take its seat above.
    /// What the old leader knew of the members died with it, so every member starts
    /// out suspected and is probed at once: the live ones answer within a round trip,
    /// the dead ones are removed `remove_periods - suspect_periods` periods later.
    fn take_over(&mut self, now: Time, level: usize) {
        let suspect_after = self.config.period * self.config.suspect_periods;
        let lvl = level as Level;
        let seat = &mut self.seats[level];
        let old = seat.view.leader;
        let ancestors: Vec<NodeId> = (seat.view.attach_points())
            .filter(|a| *a != old && *a != self.me)
            .collect();
        seat.view.remove(old);
        seat.view.leader = self.me;
        seat.heard.clear();
        seat.suspects.clear();
        seat.summaries.clear();
        seat.dirty = true;
        let others: Vec<NodeId> = seat.others(self.me);
        seat.heard.insert(self.me, now);
        for m in &others {
            seat.heard.insert(*m, now - suspect_after);
            seat.suspects.insert(*m);
        }
        self.notice(FedNotice::Removed {
            node: old,
            level: lvl,
        });
        for m in others {
            self.send(m, FedBody::Probe { level: lvl });
        }
        self.seats.truncate(level + 1);
        self.rejoin_through(now, level, ancestors);
    }

    /// This agent leads its group at `level` and has no seat above: attach through the
    /// nearest of `ancestors` now, and through the others (first) when probing, like a
    /// root, until a parent accepts.
    fn rejoin_through(&mut self, now: Time, level: usize, ancestors: Vec<NodeId>) {
        let me = self.me;
        // Ancestors name a leader once per level it leads: contact each once.
        let mut seen = BTreeSet::new();
        let mut ancestors = ancestors
            .into_iter()
            .filter(|a| *a != me && seen.insert(*a));
        if let Some(first) = ancestors.next() {
            self.send(first, attach(self.me, level as Level + 1));
        }
        self.priority_contacts = ancestors.collect();
        self.became_root(now);
    }

    /// Structural upkeep: undersized groups merge, a top group of one dissolves, roots probe.
    /// An undersized group asks its parent for a sibling at every tick until it has
    /// merged (the answer takes a round trip, far less than a period): a lost
    /// `MergeReq` or `MergeInto` costs one period.
    fn maintain_shape(&mut self, now: Time) {
        let mut level = 0;
        // Seats may go while merging, so the bound is re-read every round.
        while level + 1 < self.seats.len() {
            let seat = &self.seats[level];
            if seat.led_by(self.me) && seat.view.members.len() < self.config.min_group {
                let parent = self.seats[level + 1].view.leader;
                if parent == self.me {
                    self.on_merge_req(now, self.me, level as Level);
                } else {
                    self.send(
                        parent,
                        FedBody::MergeReq {
                            level: level as Level,
                        },
                    );
                }
            }
            level += 1;
        }
        if !self.is_root() {
            return;
        }
        let top = self.seats.len() - 1;
        if top > 0 && self.seats[top].view.members.len() == 1 {
            // A top group of one adds nothing: the group below becomes the top.
            self.seats.truncate(top);
            self.became_root(now);
            return;
        }
        if now >= self.next_probe {
            self.next_probe = if self.fast_probes > 0 {
                self.fast_probes -= 1;
                now + self.config.period
            } else {
                now + self.config.probe_period
            };
            self.probe_contact(now, top as Level + 1);
            self.probe_again = true;
        }
    }

    /// Sends a root's `Attach` for a seat at `level` to the next contact, if any.
    fn probe_contact(&mut self, now: Time, level: Level) {
        self.probed = self.next_contact(now);
        if let Some(contact) = self.probed {
            self.send(contact, attach(self.me, level));
        }
    }

    // ---- messages -------------------------------------------------------------

    pub(super) fn on_message(&mut self, now: Time, from: NodeId, body: FedBody) {
        match body {
            FedBody::Attach {
                joiner,
                level,
                hops,
            } => self.on_attach(now, joiner, level, hops),
            FedBody::View(view) => self.on_view(now, from, view),
            FedBody::Beat {
                level,
                epoch,
                summary,
                departed,
            } => {
                let l = level as usize;
                match self.seats.get_mut(l) {
                    Some(seat) if seat.led_by(self.me) && seat.view.contains(from) => {
                        if let Some(agent) = departed {
                            self.departed.report(now, self.me, agent);
                        }
                        seat.heard.insert(from, now);
                        seat.summaries.insert(from, *summary);
                        seat.suspects.remove(&from);
                        if epoch > seat.view.epoch {
                            // The member holds a view in our name that we did not write
                            // (a stale hand-over, see `outrank`): ours must win.
                            seat.outrank(epoch);
                        } else if epoch != seat.view.epoch {
                            let view = seat.view.clone();
                            self.send(from, FedBody::View(view));
                        }
                    }
                    _ => {
                        if !self.awaits_hand_over(now, from, l) {
                            self.disown(from, level);
                        }
                    }
                }
            }
            FedBody::LeaderBeat { level, epoch } => {
                let l = level as usize;
                let may_take = self.can_take_seat(l);
                match self.seats.get_mut(l) {
                    Some(seat) if seat.view.leader == from && !seat.led_by(self.me) => {
                        seat.leader_heard = now;
                        seat.leader_suspected = false;
                        // A view written by another agent (`Seat::foreign`) at the leader's
                        // epoch may still differ from the leader's: ask. A leader beats
                        // only the members it lists, so asking now (rather than as soon
                        // as the hand-over comes, maybe before the leader has it) cannot
                        // be answered with `Leave`.
                        if epoch > seat.view.epoch || (epoch == seat.view.epoch && seat.foreign) {
                            self.send(from, FedBody::ViewReq { level });
                        }
                    }
                    // Seatless at this level but able to hold it: the view was lost; ask again.
                    None if may_take => self.send(from, FedBody::ViewReq { level }),
                    _ => {
                        if !self.awaits_hand_over(now, from, l) {
                            self.send(from, FedBody::Leave { level });
                        }
                    }
                }
            }
            FedBody::ViewReq { level } => match self.seats.get(level as usize) {
                Some(seat) if seat.led_by(self.me) && seat.view.contains(from) => {
                    let view = seat.view.clone();
                    self.send(from, FedBody::View(view));
                }
                _ => self.disown(from, level),
            },
            FedBody::RingBeat => {
                if let Some(seat) = self.seats.first_mut() {
                    let at = seat
                        .ring_neighbours(self.me)
                        .and_then(|ring| ring.prev().iter().position(|p| *p == from));
                    if let Some(i) = at {
                        seat.ring_heard[i] = now;
                        seat.ring_suspected[i] = false;
                    }
                }
            }
            FedBody::Probe { level } => {
                // A leader that does not list the prober says so: an heir that took over
                // without it (the prober was removed while it was silent) must not count as
                // an heir about to take it over. So does a plain member that does not list
                // it while its own leader answers: the group went on without the prober
                // (under a leader it never heard of, one that joined after its removal),
                // and the heirs it probes would never take over its stale view.
                let disowned = self.seats.get(level as usize).is_some_and(|s| {
                    !s.view.contains(from) && (s.led_by(self.me) || !s.leader_suspected)
                });
                if disowned {
                    self.disown(from, level);
                } else {
                    if self.watches_me(from, level) {
                        self.health.raise(); // suspected: our messages are being lost
                    }
                    self.send(from, FedBody::ProbeAck { level });
                }
            }
            FedBody::ProbeReq { level, target } => self.on_probe_req(from, level, target),
            FedBody::ProbeFor { level, origin } => self.on_probe_for(origin, level),
            FedBody::ProbeAck { level } => {
                if let Some(seat) = self.seats.get_mut(level as usize) {
                    if seat.led_by(self.me) && seat.view.contains(from) {
                        seat.heard.insert(from, now);
                        seat.suspects.remove(&from);
                    } else if seat.view.leader == from {
                        seat.leader_heard = now;
                        seat.leader_suspected = false;
                    } else if seat.view.contains(from) {
                        // A fellow member (an heir ahead of us) is alive.
                        seat.heard.insert(from, now);
                    }
                }
            }
            FedBody::Leave { level } => self.on_leave(now, from, level),
            FedBody::Gone { level } => self.on_gone(now, from, level),
            FedBody::MergeReq { level } => self.on_merge_req(now, from, level),
            FedBody::MergeInto { level, target } => self.on_merge_into(now, from, level, target),
            FedBody::Dissolve { level, target } => {
                let l = level as usize;
                if self.seats.get(l).is_some_and(|s| s.view.leader == from) {
                    let until = now + self.config.period * 2;
                    self.dissolved = Some(((level, from, self.seats[l].view.epoch), until));
                    self.seats.truncate(l);
                    self.attach_to(now, target, level);
                }
            }
        }
    }

    /// `from` thinks it shares our group at `level`, and we do not list it: `Leave`, but
    /// for a member of a split's other half that lost its copy of the hand-over (it
    /// still follows us): it is sent the hand-over again (see [`Seat::hand_over_for`]).
    fn disown(&mut self, from: NodeId, level: Level) {
        let handed = self
            .seats
            .get(level as usize)
            .filter(|s| s.led_by(self.me))
            .and_then(|s| s.hand_over_for(from))
            .cloned();
        match handed {
            Some(view) => self.send(from, FedBody::View(view)),
            None => self.send(from, FedBody::Leave { level }),
        }
    }

    /// Whether a `Beat` or `LeaderBeat` from `from` at `level`, where this agent is a
    /// plain member, is left unanswered for now: `from` is a fellow member that beats us
    /// as its leader or as our leader, so our leader may have split the group and handed
    /// us to the other half (as its leader, or as a member), and our copy of the
    /// hand-over was lost. Answering `Leave` would break the other half up (its leader
    /// expels us, or follows no one), and the hand-over, when our leader sends it again,
    /// would make us follow a leader that no longer lists us; so we ask our leader for
    /// our view (it answers with the hand-over it kept, and does the same when our own
    /// next beat reaches it), and refuse such beats with `Leave` only once our leader
    /// has beaten us since (it still lists us: the claim is stale, e.g. an heir's that
    /// took over too early), or `suspect_periods` periods have passed without a
    /// hand-over.
    fn awaits_hand_over(&mut self, now: Time, from: NodeId, level: usize) -> bool {
        let wait = self.config.period * self.config.suspect_periods;
        let Some(seat) = self.seats.get_mut(level) else {
            return false;
        };
        let leader = seat.view.leader;
        if leader == self.me || leader == from || !seat.view.contains(from) {
            return false;
        }
        match seat.claimed_at {
            None => {
                seat.claimed_at = Some(now);
                self.send(
                    leader,
                    FedBody::ViewReq {
                        level: level as Level,
                    },
                );
                true
            }
            // Our leader beating us since proves it still lists us: no hand-over comes.
            Some(at) => seat.leader_heard <= at && now.saturating_since(at) <= wait,
        }
    }

    /// Whether this agent may hold a seat at `level` now: it holds every seat below
    /// and leads the one just below.
    fn can_take_seat(&self, level: usize) -> bool {
        self.seats.len() == level && (level == 0 || self.seats[level - 1].led_by(self.me))
    }

    fn attach_to(&mut self, now: Time, target: NodeId, level: Level) {
        if target == self.me {
            self.on_attach(now, self.me, level, 0);
        } else {
            self.send(
                target,
                FedBody::Attach {
                    joiner: self.me,
                    level,
                    hops: 0,
                },
            );
        }
        if level > 0 {
            self.became_root(now);
        } else {
            self.join_target = (target != self.me).then_some(target);
            // Half a period: the retry comes at the first tick at least that far off, not
            // two periods later when this lands just after a tick.
            self.next_join = now + self.config.period / 2;
            self.join_attempts = 0;
        }
    }

    fn on_attach(&mut self, now: Time, joiner: NodeId, level: Level, hops: u8) {
        if hops > MAX_HOPS {
            return;
        }
        let l = level as usize;
        let forward = FedBody::Attach {
            joiner,
            level,
            hops: hops + 1,
        };
        if self.seats.is_empty() {
            if level != 0 || joiner == self.me {
                return;
            }
            // Groupless: pass the request to a lower neighbour, or found a group for it.
            let lower = self
                .neighbours
                .iter()
                .copied()
                .find(|n| *n != joiner && *n < self.me);
            match lower {
                Some(n) => self.send(n, forward),
                None => {
                    self.found(now);
                    self.accept(now, 0, joiner);
                }
            }
            return;
        }
        let top = self.seats.len() - 1;
        let lead_top = self.seats[top].led_by(self.me);
        if joiner == self.me {
            // Our own probe came back: the contact is in our tree. Most contacts are
            // (rack neighbours, leaders met in our groups), so a root that waited a
            // period after each would find another tree slowly: it remembers the
            // contact as one not to probe for a while, and tries the next one at
            // once, once per tick.
            if let Some(contact) = self.probed.take() {
                self.same_tree.insert(contact, now);
            }
            if l == top + 1 && lead_top && std::mem::take(&mut self.probe_again) {
                self.probe_contact(now, level);
            }
            return;
        }
        if l < top || (l == top && lead_top) {
            self.accept(now, l, joiner);
        } else if !lead_top {
            let up = self.seats[top].view.leader;
            self.send(up, forward);
        } else if l == top + 1 && self.me < joiner {
            // Two roots of equal height: the lower id founds the new top group.
            let mut view = View::solo(level, self.me, Vec::new());
            view.insert(joiner);
            let mut seat = Seat::new(view, now);
            seat.dirty = true;
            self.seats.push(seat);
        } else {
            // The joiner's tree is taller, or as tall with a lower id: join it instead,
            // and ask its root again at our next probe in case this `Attach` is lost
            // (the joiner will not ask again soon: its probes go to contacts in turn).
            self.send(joiner, attach(self.me, top as Level + 1));
            if !self.priority_contacts.contains(&joiner) {
                self.priority_contacts.push_front(joiner);
            }
        }
    }

    /// Admits `joiner` to the group this agent leads at `level`, splitting it if overfull.
    fn accept(&mut self, now: Time, level: usize, joiner: NodeId) {
        let seat = &mut self.seats[level];
        if !seat.admit(joiner, now) {
            let view = seat.view.clone();
            self.send(joiner, FedBody::View(view)); // idempotent: resend the view
        }
        if self.seats[level].view.members.len() > self.config.max_group {
            self.split(now, level);
        }
    }

    /// Splits the overfull group this agent leads at `level` into two halves by id;
    /// the other half's lowest id leads it and takes a seat beside this one.
    fn split(&mut self, now: Time, level: usize) {
        let members = self.seats[level].view.members.clone();
        let half = members.len() / 2;
        let mine = members.iter().position(|m| *m == self.me).unwrap_or(0);
        let (keep, other) = if mine < half {
            members.split_at(half)
        } else {
            let (a, b) = members.split_at(half);
            (b, a)
        };
        let mut ancestors = vec![self.me];
        ancestors.extend(self.ancestors_of(level));
        ancestors.truncate(MAX_ANCESTORS); // what receivers accept (federation::validate)
        let Some(mut new_view) = View::of(
            level as Level,
            self.seats[level].view.epoch.saturating_add(1),
            other.to_vec(),
            ancestors,
        ) else {
            return;
        };
        new_view.epoch = new_view.epoch.max(1);
        // Not a member this agent suspects: a dead one would lead the new half, and
        // its members would take the hand-over and wait out its silence afresh.
        // (Before, swarm seed 570237: a joiner split a group whose lowest member of
        // the other half had crashed 2.6 s before, and that half followed it for
        // 2.7 s more.)
        let suspects = &self.seats[level].suspects;
        if let Some(live) = other.iter().find(|m| !suspects.contains(m)) {
            new_view.leader = *live;
        }
        let new_leader = new_view.leader;
        for m in other {
            self.seats[level].expel(*m);
        }
        debug_assert_eq!(self.seats[level].view.members.len(), keep.len());
        for m in &new_view.members {
            self.send(*m, FedBody::View(new_view.clone()));
        }
        self.seats[level].keep_hand_over(new_view, now);
        if level + 1 < self.seats.len() {
            if self.seats[level + 1].led_by(self.me) {
                self.accept(now, level + 1, new_leader);
            } else {
                let up = self.seats[level + 1].view.leader;
                self.send(up, attach(new_leader, level as Level + 1));
            }
        } else {
            // We were the root: the two halves get a new top group.
            let mut top = View::solo(level as Level + 1, self.me, Vec::new());
            top.insert(new_leader);
            let mut seat = Seat::new(top, now);
            seat.dirty = true;
            self.seats.push(seat);
        }
    }

    fn on_view(&mut self, now: Time, from: NodeId, view: View) {
        let l = view.level as usize;
        if !view.contains(self.me) || !view.is_well_formed() {
            return;
        }
        if view.level > 0 {
            self.remember_contacts(&view.members);
        } else {
            // Level-0 members from other racks too: for the last agent of a small
            // rack, whose group was merged into another rack's, they may be the
            // only agents it met beyond its rack. (Before, swarm seed 450778: such
            // an agent, its rack neighbour and the seeds dead, probed only those,
            // and its tree of one stayed apart until the other root's probes came
            // round to it, 20 s later.)
            let far: Vec<NodeId> = (view.members.iter().copied())
                .filter(|m| !self.neighbours.contains(m))
                .collect();
            self.remember_contacts(&far);
        }
        // The leaders above are contacts too, for a plain member as well: once its
        // leader is gone and a partition has split the tree, they may be the only
        // agents it knows beyond its rack. (Before, swarm seed 211518: the last
        // agent of a rack, whose leader and both seeds had died, knew no one else
        // and stayed a tree of its own.) So are the heirs above, which lead those
        // groups once a leader that led them is gone.
        self.remember_contacts(&view.ancestors);
        self.remember_contacts(&view.heirs_above);
        if l > self.seats.len() {
            self.send(from, FedBody::Leave { level: view.level });
            return;
        }
        if l == self.seats.len() {
            // A copy of the group just dissolved under us, duplicated or overtaken
            // on the way, is not a group to sit in: taking it, this agent refused
            // the group it was sent to (its seat was taken), and was groupless
            // again once the dissolver told it to leave. (Before, swarm seed
            // 470428's full run: "n100 is in no level-0 group".)
            let stale = |((lvl, leader, epoch), until): ((Level, NodeId, u64), Time)| {
                (lvl, leader) == (view.level, view.leader) && view.epoch <= epoch && now < until
            };
            if self.dissolved.is_some_and(stale) {
                return;
            }
            if self.can_take_seat(l) {
                let leads = view.leader == self.me;
                let foreign = !leads && from != view.leader;
                self.seats.push(Seat::new(view, now));
                self.seats[l].foreign = foreign;
                // A group handed to this agent is pushed under its own name (at an
                // epoch it never pushed other contents under: see `written`).
                self.seats[l].dirty = leads;
                self.join_attempts = 0;
                self.join_target = None;
                if leads {
                    self.seek_parent(now, l);
                }
            } else {
                self.send(from, FedBody::Leave { level: view.level });
            }
            return;
        }
        let current = &self.seats[l].view;
        if current.leader == self.me && view.leader == self.me {
            // A view of the group we lead, written by someone else: a stale hand-over.
            self.seats[l].outrank(view.epoch);
            return;
        }
        let adopt = if view.leader == current.leader {
            // The leader's own view wins over one written in its name at the same epoch.
            view.epoch > current.epoch
                || (view.epoch == current.epoch && from == view.leader && self.seats[l].foreign)
        } else if from == current.leader && current.leader != self.me {
            true // our leader hands us over (split or hand-over)
        } else if current.leader == self.me {
            // Someone else leads a group with us in it: the newer view wins, then the lower id.
            if (view.epoch, std::cmp::Reverse(view.leader))
                > (current.epoch, std::cmp::Reverse(self.me))
            {
                self.drop_seats_from(now, l + 1, Farewell::Moving);
                true
            } else {
                false
            }
        } else {
            self.seats[l].leader_suspected
        };
        if adopt {
            let old_leader = self.seats[l].view.leader;
            let leads_now = view.leader == self.me;
            self.seats[l].foreign = !leads_now && from != view.leader;
            self.seats[l].replace_view(view, now);
            self.seats[l].dirty |= leads_now;
            if old_leader != self.seats[l].view.leader
                && old_leader != self.me
                && from != old_leader
            {
                self.send(old_leader, FedBody::Leave { level: l as Level });
            }
            if leads_now && l + 1 == self.seats.len() {
                self.seek_parent(now, l);
            }
        } else if view.leader != self.seats[l].view.leader && !self.may_be_handed_to(l, &view) {
            self.send(view.leader, FedBody::Leave { level: l as Level });
        }
    }

    /// Whether a view this agent refused at `level` may be the group its own leader is
    /// handing it to: it is a plain member, and the view's leader is a fellow member.
    /// A split sends the new half's view to its leader and its members at once, and the
    /// new leader pushes its view again as soon as it takes the group (its ancestors
    /// changed), so that push can reach a member before the hand-over from the old
    /// leader does. Answering it with `Leave` would get the member expelled by the new
    /// leader just before the hand-over makes it follow that leader: a member listed by
    /// no leader, groupless until its next join attempt. So such a view gets no answer;
    /// if no hand-over follows, the member answers the new leader's next `LeaderBeat`
    /// with `Leave`, one period later.
    fn may_be_handed_to(&self, level: usize, view: &View) -> bool {
        let current = &self.seats[level].view;
        current.leader != self.me && current.contains(view.leader)
    }

    /// We were handed the group at `level` to lead, with no seat above it: attach
    /// through the ancestors the view names.
    fn seek_parent(&mut self, now: Time, level: usize) {
        let ancestors = self.seats[level].view.attach_points().collect();
        self.rejoin_through(now, level, ancestors);
    }

    fn on_leave(&mut self, now: Time, from: NodeId, level: Level) {
        let l = level as usize;
        let Some(seat) = self.seats.get_mut(l) else {
            return;
        };
        let heir_disowns =
            seat.leader_suspected && seat.view.contains(from) && !seat.reborn.contains(&from);
        if seat.led_by(self.me) {
            seat.expel(from);
        } else if seat.view.leader == from || heir_disowns {
            // Our leader disowns us, or, with our leader suspected, an heir we probed took
            // the group over without us: we are out of that group and all above it.
            self.seats.truncate(l);
            if l == 0 {
                self.next_join = now;
                self.join_attempts = 0;
                self.join_target = None;
            } else {
                self.became_root(now);
            }
        } else if seat.leader_suspected && seat.view.contains(from) {
            // A fellow member heard in a newer life, in another group or in none: its
            // word says nothing of ours, but it will not take ours over either, so
            // its earlier answers no longer delay our succession. (Before, swarm seed
            // 520311: three restarted heirs ahead, each answering a probe once before
            // it said `Leave`, held a member back nine periods after its stall.)
            seat.heard.remove(&from);
        }
    }

    /// Member `from` left the federation for good: as [`Federation::on_leave`], and a
    /// leader at level 0, where a member stands for its host alone, reports it
    /// removed. (Above, it stood for the group it led, which it handed to its heir.)
    fn on_gone(&mut self, now: Time, from: NodeId, level: Level) {
        let reported = level == 0
            && self
                .seats
                .first()
                .is_some_and(|s| s.led_by(self.me) && s.view.contains(from));
        self.on_leave(now, from, level);
        if reported {
            self.notice(FedNotice::Removed { node: from, level });
        }
    }

    /// Leaves every seat from `level` up: hands groups this agent leads to their
    /// heirs (and gives each heir the seat above), and tells other leaders it left
    /// (`Leave`, or `Gone` when it leaves the federation: see [`Farewell`]).
    pub(super) fn drop_seats_from(&mut self, now: Time, level: usize, farewell: Farewell) {
        let mut above: Option<NodeId> = None;
        for l in (level..self.seats.len()).rev() {
            let seat = &self.seats[l];
            let lvl = l as Level;
            if seat.led_by(self.me) {
                let rest: Vec<NodeId> = seat.others(self.me);
                let parent = above;
                let ancestors = parent.into_iter().collect();
                if let Some(handed) =
                    View::of(lvl, seat.view.epoch.saturating_add(1), rest, ancestors)
                {
                    for m in &handed.members {
                        self.send(*m, FedBody::View(handed.clone()));
                    }
                    if let Some(p) = parent {
                        self.send(p, attach(handed.leader, lvl + 1));
                    }
                    above = Some(handed.leader);
                } else {
                    above = None;
                }
            } else {
                let leader = seat.view.leader;
                let body = match farewell {
                    Farewell::Moving => FedBody::Leave { level: lvl },
                    Farewell::Gone => FedBody::Gone { level: lvl },
                };
                self.send(leader, body);
                above = Some(leader);
            }
        }
        self.seats.truncate(level);
        if level == 0 {
            self.next_join = now + self.config.period * 2;
            self.join_target = None;
        }
    }

    fn on_merge_req(&mut self, now: Time, child: NodeId, level: Level) {
        let parent_level = level as usize + 1;
        let Some(seat) = self.seats.get(parent_level) else {
            return;
        };
        if !seat.led_by(self.me) || !seat.view.contains(child) {
            return;
        }
        let size_of = |m: NodeId| {
            if m == self.me {
                self.seats[level as usize].view.members.len() as u32
            } else {
                seat.summaries.get(&m).map_or(u32::MAX, |s| s.group_size)
            }
        };
        // A suspected sibling is no target: its leader may be dead, and a group sent
        // to it would ask it in vain and wander groupless (swarm seed 351881: an heir
        // that took its group over from a crashed leader was sent to that leader's
        // seat, still listed above, and spent two seconds between groups).
        let target = seat
            .view
            .members
            .iter()
            .copied()
            .filter(|m| *m != child && !seat.is_suspected(*m))
            .min_by_key(|m| (size_of(*m), *m));
        if let Some(target) = target {
            if child == self.me {
                self.on_merge_into(now, self.me, level, target);
            } else {
                self.send(child, FedBody::MergeInto { level, target });
            }
        }
    }

    fn on_merge_into(&mut self, now: Time, from: NodeId, level: Level, target: NodeId) {
        let l = level as usize;
        let from_parent = self.seats.get(l + 1).is_some_and(|s| s.view.leader == from);
        let undersized = self
            .seats
            .get(l)
            .is_some_and(|s| s.led_by(self.me) && s.view.members.len() < self.config.min_group);
        if !from_parent || !undersized || target == self.me {
            return;
        }
        let members: Vec<NodeId> = self.seats[l].others(self.me);
        for m in members {
            self.send(m, FedBody::Dissolve { level, target });
        }
        self.drop_seats_from(now, l + 1, Farewell::Moving);
        self.seats.truncate(l);
        self.attach_to(now, target, level);
    }
}
