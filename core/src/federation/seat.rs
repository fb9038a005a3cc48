//! One seat of an agent in the hierarchy: its membership in one group at one
//! level, and what it tracks there.
//!
//! As the group's leader, a seat tracks when each member was last heard from,
//! each member's subtree summary, and which members are suspected. As a plain
//! member, it tracks when the leader was last heard from. Invariant: the
//! tracking maps only hold current members, and the agent is a member of its
//! own seat's view.

use super::view::{Summary, View};
use crate::ids::NodeId;
use crate::time::Time;
use std::collections::{BTreeMap, BTreeSet};

/// How many ring members watch each plain member of a level-0 group, besides its leader.
pub(super) const RING_WATCHERS: usize = 2;

/// A plain member's neighbours on its group's ring ([`Seat::ring_neighbours`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Ring {
    next: [NodeId; RING_WATCHERS],
    prev: [NodeId; RING_WATCHERS],
    k: usize,
}

impl Ring {
    /// The members after this one, which it beats, nearest first.
    pub(super) fn next(&self) -> &[NodeId] {
        &self.next[..self.k]
    }

    /// The members before this one, which beat it, nearest first.
    pub(super) fn prev(&self) -> &[NodeId] {
        &self.prev[..self.k]
    }
}

/// The most hand-overs a leader keeps per group (splits a few periods apart).
pub(super) const KEPT_HAND_OVERS: usize = 4;

/// An agent's membership in one group.
#[derive(Clone, Debug)]
pub struct Seat {
    pub(super) view: View,
    /// Leader side: when each member was last heard from.
    pub(super) heard: BTreeMap<NodeId, Time>,
    /// Leader side: each member's subtree summary, as it last reported it.
    pub(super) summaries: BTreeMap<NodeId, Summary>,
    /// Leader side: members silent long enough to be suspected.
    pub(super) suspects: BTreeSet<NodeId>,
    /// Member side: when the leader was last heard from.
    pub(super) leader_heard: Time,
    /// Member side: whether the leader is suspected.
    pub(super) leader_suspected: bool,
    /// Member side: the view was written by another agent than its leader (a hand-over,
    /// see [`Seat::outrank`]); the member asks the leader for its own when the leader
    /// beats at the same epoch, and takes it even at that epoch.
    pub(super) foreign: bool,
    /// Member side, level 0: when each ring predecessor (nearest first) was last heard from.
    pub(super) ring_heard: [Time; RING_WATCHERS],
    /// Member side, level 0: whether each ring predecessor is suspected.
    pub(super) ring_suspected: [bool; RING_WATCHERS],
    /// Leader side: the views this agent handed the other halves of its splits at, and
    /// when, kept a few periods (see [`Seat::hand_over_for`]); at most [`KEPT_HAND_OVERS`].
    pub(super) handed: Vec<(View, Time)>,
    /// Member side: when a fellow member first beat this agent as its leader under this
    /// view (a split's hand-over naming this agent leader may have been lost).
    pub(super) claimed_at: Option<Time>,
    /// Member side: fellow members heard in a newer life since this agent took a view
    /// from its leader. What a restarted agent knew of this group died with its
    /// earlier life, so its `Leave` says nothing about the group (see
    /// [`Federation::peer_restarted`](super::Federation::peer_restarted)).
    pub(super) reborn: BTreeSet<NodeId>,
    /// The view changed and must be pushed to the members.
    pub(super) dirty: bool,
}

impl Seat {
    /// A seat holding `view`, everyone heard from at `now`.
    pub(super) fn new(view: View, now: Time) -> Self {
        let heard = view.members.iter().map(|m| (*m, now)).collect();
        Seat {
            view,
            heard,
            summaries: BTreeMap::new(),
            suspects: BTreeSet::new(),
            leader_heard: now,
            leader_suspected: false,
            foreign: false,
            ring_heard: [now; RING_WATCHERS],
            ring_suspected: [false; RING_WATCHERS],
            handed: Vec::new(),
            claimed_at: None,
            reborn: BTreeSet::new(),
            dirty: false,
        }
    }

    /// The group's membership.
    #[must_use]
    pub fn view(&self) -> &View {
        &self.view
    }

    /// The members other than `me`.
    pub(super) fn others(&self, me: NodeId) -> Vec<NodeId> {
        self.view
            .members
            .iter()
            .copied()
            .filter(|m| *m != me)
            .collect()
    }

    /// Leader side: each member's subtree summary, as it last reported it (placement
    /// reads free capacity here to send requests where there is room).
    #[must_use]
    pub fn summaries(&self) -> &BTreeMap<NodeId, Summary> {
        &self.summaries
    }

    /// Leader side: whether `member` is suspected: silent for `suspect_periods`, or
    /// not heard yet since this agent took the group over from a silent leader.
    #[must_use]
    pub fn is_suspected(&self, member: NodeId) -> bool {
        self.suspects.contains(&member)
    }

    /// Member side: whether this agent suspects its leader (silent for
    /// `suspect_periods`; never at the leader itself).
    #[must_use]
    pub fn leader_is_suspected(&self) -> bool {
        self.leader_suspected
    }

    /// Whether `me` leads this group.
    pub(super) fn led_by(&self, me: NodeId) -> bool {
        self.view.leader == me
    }

    /// Replaces the view. Under the same leader, what is known of members that stay
    /// is kept; under a new leader the watch starts afresh (what this agent heard as
    /// a plain member says nothing about members' liveness).
    pub(super) fn replace_view(&mut self, view: View, now: Time) {
        if view.leader != self.view.leader {
            self.heard.clear();
            self.summaries.clear();
            self.suspects.clear();
            self.leader_heard = now;
            self.leader_suspected = false;
            self.handed.clear();
            self.reborn.clear();
        }
        self.reborn.retain(|m| view.contains(*m));
        self.heard.retain(|m, _| view.contains(*m));
        self.summaries.retain(|m, _| view.contains(*m));
        self.suspects.retain(|m| view.contains(*m));
        for m in &view.members {
            self.heard.entry(*m).or_insert(now);
        }
        self.claimed_at = None;
        if view.members != self.view.members {
            self.ring_heard = [now; RING_WATCHERS];
            self.ring_suspected = [false; RING_WATCHERS];
        }
        self.view = view;
    }

    /// The ring of the group's plain members (all but the leader), in id order: the
    /// `k` members after `me` (which it beats) and the `k` before (which beat it),
    /// nearest first, with `k = min(RING_WATCHERS, ring size - 1)`. `None` if `me`
    /// is not a plain member. Allocates nothing: it runs at every ring beat sent
    /// and heard.
    pub(super) fn ring_neighbours(&self, me: NodeId) -> Option<Ring> {
        let members = &self.view.members;
        if me == self.view.leader {
            return None;
        }
        let mine = members.binary_search(&me).ok()?;
        // The ring is `members` without the leader (when it is listed).
        let leader = members.binary_search(&self.view.leader).ok();
        let n = members.len() - usize::from(leader.is_some());
        let skip = |i: usize| leader.map_or(i, |l| i + usize::from(i >= l));
        let at = mine - usize::from(leader.is_some_and(|l| l < mine));
        let mut ring = Ring {
            next: [me; RING_WATCHERS],
            prev: [me; RING_WATCHERS],
            k: RING_WATCHERS.min(n - 1),
        };
        for d in 1..=ring.k {
            ring.next[d - 1] = members[skip((at + d) % n)];
            ring.prev[d - 1] = members[skip((at + n - d) % n)];
        }
        Some(ring)
    }

    /// Adds `member`, heard from at `now`; false if it was a member already.
    pub(super) fn admit(&mut self, member: NodeId, now: Time) -> bool {
        self.heard.insert(member, now);
        let added = self.view.insert(member);
        self.dirty |= added;
        added
    }

    /// Leader side: makes this seat's view newer than `epoch`, the epoch of a view of
    /// this group that another agent wrote in this agent's name, and pushes it again.
    ///
    /// Only the leader writes its group's views, with one exception: an agent that
    /// hands a group over (a split, a leave, a merge) writes the first view of the
    /// new leader. When that agent was cut off long enough for the heir to take the
    /// group over already, its hand-over is stale, and its epoch, counted from its
    /// own view, may exceed the heir's. Members follow the highest epoch of their
    /// leader, so they would keep the stale view and refuse every view the leader
    /// sends. The leader jumps past any epoch written in its name instead, when a
    /// copy reaches it or a member beats with it. A stale hand-over at the leader's own
    /// epoch cannot be told by its epoch: members ask for the leader's own view after
    /// any hand-over (`foreign`).
    pub(super) fn outrank(&mut self, epoch: u64) {
        if epoch >= self.view.epoch {
            self.view.epoch = epoch.saturating_add(1);
            self.dirty = true;
        }
    }

    /// Leader side: keeps `view`, the other half of a split handed over at `now`, so
    /// that a member whose copy was lost can be sent it again.
    pub(super) fn keep_hand_over(&mut self, view: View, now: Time) {
        if self.handed.len() == KEPT_HAND_OVERS {
            self.handed.remove(0);
        }
        self.handed.push((view, now));
    }

    /// Leader side: forgets the hand-overs made before `since`.
    pub(super) fn forget_hand_overs(&mut self, since: Time) {
        self.handed.retain(|(_, at)| *at >= since);
    }

    /// Leader side: the latest hand-over still kept that names `member`, which is no
    /// longer ours. A member of the other half whose copy of the hand-over was lost
    /// still follows this agent, and beats or probes it; its new leader, which may be
    /// the one that lost it, still thinks it follows this agent too. Answering them with
    /// the hand-over rather than `Leave` keeps the new half together.
    pub fn hand_over_for(&self, member: NodeId) -> Option<&View> {
        if self.view.contains(member) {
            return None;
        }
        self.handed
            .iter()
            .rev()
            .map(|(v, _)| v)
            .find(|v| v.contains(member))
    }

    /// Removes `member`; false if it was not a member.
    pub(super) fn expel(&mut self, member: NodeId) -> bool {
        self.heard.remove(&member);
        self.summaries.remove(&member);
        self.suspects.remove(&member);
        let removed = self.view.remove(member);
        self.dirty |= removed;
        removed
    }

    /// Checks the seat's invariants (debug builds).
    pub(super) fn is_consistent(&self, me: NodeId) -> bool {
        self.view.is_well_formed()
            && self.view.contains(me)
            && self.heard.keys().all(|m| self.view.contains(*m))
            && self.summaries.keys().all(|m| self.view.contains(*m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ring by its definition: the plain members in id order, `k` each way.
    fn by_definition(view: &View, me: NodeId) -> Option<(Vec<NodeId>, Vec<NodeId>)> {
        let ring: Vec<NodeId> = view
            .members
            .iter()
            .copied()
            .filter(|m| *m != view.leader)
            .collect();
        let at = ring.iter().position(|m| *m == me)?;
        let n = ring.len();
        let k = RING_WATCHERS.min(n - 1);
        let next = (1..=k).map(|d| ring[(at + d) % n]).collect();
        let prev = (1..=k).map(|d| ring[(at + n - d) % n]).collect();
        Some((next, prev))
    }

    #[test]
    fn ring_neighbours_skip_the_leader_wherever_it_sits_and_wrap_around() {
        for size in 1..=7u32 {
            for leader in 0..size {
                let mut view = View::solo(0, NodeId(leader * 3), Vec::new());
                for m in (0..size).filter(|m| *m != leader) {
                    view.insert(NodeId(m * 3));
                }
                let seat = Seat::new(view.clone(), Time::ZERO);
                for me in 0..size * 3 {
                    let got = seat
                        .ring_neighbours(NodeId(me))
                        .map(|r| (r.next().to_vec(), r.prev().to_vec()));
                    assert_eq!(
                        got,
                        by_definition(&view, NodeId(me)),
                        "size {size}, leader n{}, me n{me}",
                        leader * 3
                    );
                }
            }
        }
    }
}
