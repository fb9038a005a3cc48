//! Agents that left this agent's groups, told up the tree so that a root can
//! find the trees a partition split off (see "Messages" in the module doc of
//! [`super`]).
//!
//! Only roots probe for other trees, and a root knows few agents beyond its
//! own tree: the seeds, its rack, and the agents it met in its own groups.
//! When a partition splits a tree, the agents that shared a group across the
//! cut see the far side leave their groups, but they may sit far below the
//! root (and the root may be an heir that never met anyone across): if the
//! seeds are gone too, the two trees never meet again after the heal. (Before,
//! swarm seed 762222: both seeds left for good, a partition cut the two racks
//! apart, and after the heal each rack's root probed only its own rack and
//! the dead seeds.)
//!
//! So each agent remembers the agents that *departed* from its seats (members
//! of its groups at one tick that are in none at a later one), and the ones its
//! members reported to it, for [`KEEP_PROBES`] probe periods. Each `Beat` to a
//! leader carries one of them, in turn, and the leader keeps it as *reported*:
//! so they climb a level per beat, and a root probes them as one more pool of
//! contacts. Most are in the root's own tree (a member that moved, a crash);
//! their probes come back, and the root skips them for a while, as any contact.
//!
//! Invariants: at most [`MAX_DEPARTED`] departed and as many reported entries
//! (the oldest goes first); none is a member of one of this agent's seats or
//! this agent; entries expire.

use super::seat::Seat;
use crate::ids::NodeId;
use crate::time::Time;
use std::collections::BTreeMap;
use std::time::Duration;

/// Probe periods for which a departed or reported agent is kept (told on and
/// probed): longer than most partitions, short enough that a tree forgets the
/// agents that crashed for good.
pub(super) const KEEP_PROBES: u32 = 60;

/// The most departed (and, apart, reported) agents kept at once.
pub(super) const MAX_DEPARTED: usize = 16;

/// Agents that left this agent's groups lately, and those its members reported.
#[derive(Debug, Default)]
pub(super) struct Departed {
    /// The seats' members at the last look, and the (leader, epoch) of each seat
    /// then: the members are looked at again only when a seat changed.
    met: Vec<NodeId>,
    seen: Vec<(NodeId, u64)>,
    /// Departed from this agent's own seats, and when.
    own: BTreeMap<NodeId, Time>,
    /// Reported by members in their beats, and when last.
    reported: BTreeMap<NodeId, Time>,
    /// The next entry to tell (an index into both maps, in order, walked in turn).
    cursor: usize,
}

impl Departed {
    /// Looks at the seats: members gone from all of them since the last look
    /// have departed; members back in one are no longer departed.
    pub(super) fn observe(&mut self, now: Time, me: NodeId, seats: &[Seat]) {
        let unchanged = self.seen.len() == seats.len()
            && (self.seen.iter())
                .zip(seats)
                .all(|(&(leader, epoch), s)| leader == s.view.leader && epoch == s.view.epoch);
        if unchanged {
            return;
        }
        self.seen = seats
            .iter()
            .map(|s| (s.view.leader, s.view.epoch))
            .collect();
        let mut members: Vec<NodeId> = seats
            .iter()
            .flat_map(|s| s.view.members.iter().copied())
            .filter(|m| *m != me)
            .collect();
        members.sort_unstable();
        members.dedup();
        for gone in self
            .met
            .iter()
            .filter(|m| members.binary_search(m).is_err())
        {
            insert_bounded(&mut self.own, *gone, now);
        }
        for m in &members {
            self.own.remove(m);
            self.reported.remove(m);
        }
        self.met = members;
    }

    /// A member reported `agent` in its beat. Ignored if it is this agent or in
    /// one of its seats.
    pub(super) fn report(&mut self, now: Time, me: NodeId, agent: NodeId) {
        if agent != me && self.met.binary_search(&agent).is_err() {
            insert_bounded(&mut self.reported, agent, now);
        }
    }

    /// Drops the entries older than `keep`.
    pub(super) fn expire(&mut self, now: Time, keep: Duration) {
        let fresh = |_: &NodeId, t: &mut Time| now.saturating_since(*t) < keep;
        self.own.retain(fresh);
        self.reported.retain(fresh);
    }

    /// The next agent to tell a leader of, in turn.
    pub(super) fn next_to_tell(&mut self) -> Option<NodeId> {
        let count = self.own.len() + self.reported.len();
        if count == 0 {
            return None;
        }
        let i = self.cursor % count;
        self.cursor = self.cursor.wrapping_add(1);
        self.all().nth(i)
    }

    /// Every agent kept: departed first, then reported (which may repeat one).
    pub(super) fn all(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.own.keys().chain(self.reported.keys()).copied()
    }
}

/// Inserts (or refreshes) `agent`, evicting the entry heard longest ago when full.
fn insert_bounded(map: &mut BTreeMap<NodeId, Time>, agent: NodeId, now: Time) {
    if !map.contains_key(&agent) && map.len() == MAX_DEPARTED {
        if let Some(oldest) = map.iter().min_by_key(|(_, t)| **t).map(|(n, _)| *n) {
            map.remove(&oldest);
        }
    }
    map.insert(agent, now);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::federation::View;

    fn seat(leader: u32, epoch: u64, members: &[u32]) -> Seat {
        let members = members.iter().copied().map(NodeId).collect();
        let view = View::of(0, epoch, members, Vec::new()).expect("a view");
        let mut seat = Seat::new(view, Time::ZERO);
        seat.view.leader = NodeId(leader);
        seat
    }

    fn at(s: u64) -> Time {
        Time::from_secs(s)
    }

    #[test]
    fn members_that_leave_every_seat_have_departed_until_they_come_back() {
        let me = NodeId(1);
        let mut d = Departed::default();
        d.observe(at(0), me, &[seat(1, 1, &[1, 2, 3])]);
        assert_eq!(d.all().count(), 0);
        d.observe(at(1), me, &[seat(1, 2, &[1, 3])]);
        assert_eq!(d.all().collect::<Vec<_>>(), [NodeId(2)]);
        d.observe(at(2), me, &[seat(1, 3, &[1, 2, 3])]);
        assert_eq!(d.all().count(), 0, "back in the group");
    }

    #[test]
    fn a_member_that_moved_to_another_seat_has_not_departed() {
        let me = NodeId(1);
        let mut d = Departed::default();
        d.observe(at(0), me, &[seat(1, 1, &[1, 2]), seat(5, 1, &[1, 5])]);
        d.observe(at(1), me, &[seat(1, 2, &[1]), seat(5, 2, &[1, 2, 5])]);
        assert_eq!(d.all().count(), 0);
    }

    #[test]
    fn reports_of_members_or_of_this_agent_are_ignored() {
        let me = NodeId(1);
        let mut d = Departed::default();
        d.observe(at(0), me, &[seat(1, 1, &[1, 2])]);
        d.report(at(0), me, me);
        d.report(at(0), me, NodeId(2));
        assert_eq!(d.all().count(), 0);
        d.report(at(0), me, NodeId(9));
        assert_eq!(d.all().collect::<Vec<_>>(), [NodeId(9)]);
    }

    #[test]
    fn entries_are_told_in_turn_and_expire() {
        let me = NodeId(1);
        let mut d = Departed::default();
        d.observe(at(0), me, &[seat(1, 1, &[1, 2, 3])]);
        d.observe(at(1), me, &[seat(1, 2, &[1])]);
        d.report(at(5), me, NodeId(7));
        let told: Vec<_> = std::iter::from_fn(|| d.next_to_tell()).take(6).collect();
        let expected = [2, 3, 7, 2, 3, 7].map(NodeId);
        assert_eq!(told, expected);
        d.expire(at(10), Duration::from_secs(8));
        assert_eq!(d.all().collect::<Vec<_>>(), [NodeId(7)]);
        d.expire(at(20), Duration::from_secs(8));
        assert_eq!(d.next_to_tell(), None);
    }

    #[test]
    fn at_most_max_departed_are_kept_the_oldest_going_first() {
        let me = NodeId(1);
        let mut d = Departed::default();
        for n in 0..(MAX_DEPARTED as u32 + 4) {
            d.report(at(u64::from(n)), me, NodeId(100 + n));
        }
        let kept: Vec<_> = d.all().collect();
        assert_eq!(kept.len(), MAX_DEPARTED);
        assert!(!kept.contains(&NodeId(100)) && kept.contains(&NodeId(119)));
    }
}
