//! What a member knows of take-overs of the homes whose base it is in (see
//! "Take-overs are told to the group and the base" in the module doc of
//! [`super`]).
//!
//! A keeper takes a supervisor over because most of its home's quorum base
//! disowned the home for it. Those members must then not confirm the old home
//! as its quorum: a heal may give the home most of its base again (its own side
//! and the members the take-over counted), and it would go on beside its taker.
//! Nor may they disown the home for another taker, which would take it over a
//! second time. So the new home tells the members of its group and of the old
//! home's base of the take-over ([`super::SupervisionMsg::TakenOver`]), and
//! each remembers it here for `hold`, with its taker: when the old home asks
//! it to confirm, its answer tells the home to step down from that supervisor
//! first, and it disowns the home for that taker alone.
//!
//! A supervisor may be taken over again from its taker (a chain of take-overs):
//! each entry keeps every home it was taken from, so that any of them is told to
//! step down, however far the chain went on. (Before, an entry kept only the
//! latest take-over's home: swarm seed 331002, where n7 took a supervisor over
//! from n15 across a partition and restarted, and n0 took it over from n7; after
//! the heal, n15's base confirmed it with no word of n7's take-over, and n15 and
//! n0 both restarted the children.)
//!
//! Invariants: at most [`MAX_TAKEN`] entries (the oldest goes first) of at most
//! [`MAX_HOMES`] homes each (the earliest goes first); one entry per supervisor,
//! at the latest take-over's epoch.

use crate::ids::NodeId;
use crate::time::Time;
use nefele_api::supervision::SupervisorId;
use std::collections::BTreeMap;
use std::time::Duration;

/// The most take-overs a member remembers at once.
pub(super) const MAX_TAKEN: usize = 1024;

/// The most homes a supervisor's entry remembers it was taken from.
pub(super) const MAX_HOMES: usize = 8;

/// The take-overs of one supervisor heard of: the homes it was taken from, the
/// latest take-over's epoch and its taker, and when one was last heard of.
#[derive(Clone, Debug, PartialEq, Eq)]
struct TakeOver {
    homes: Vec<NodeId>,
    epoch: u32,
    by: NodeId,
    heard: Time,
}

/// The take-overs heard of in the last `hold`.
#[derive(Debug, Default)]
pub(super) struct Taken {
    by_sup: BTreeMap<SupervisorId, TakeOver>,
}

impl Taken {
    /// `sup` was taken over from `home` by `by` at take-over `epoch`: `home`
    /// joins the homes it was taken from, and the entry keeps the latest epoch
    /// and its taker.
    pub(super) fn note(
        &mut self,
        now: Time,
        sup: SupervisorId,
        (home, by): (NodeId, NodeId),
        epoch: u32,
    ) {
        if let Some(t) = self.by_sup.get_mut(&sup) {
            if !t.homes.contains(&home) {
                if t.homes.len() >= MAX_HOMES {
                    t.homes.remove(0);
                }
                t.homes.push(home);
            }
            if epoch >= t.epoch {
                t.epoch = epoch;
                t.by = by;
            }
            t.heard = now;
            return;
        }
        if self.by_sup.len() >= MAX_TAKEN {
            let oldest = self
                .by_sup
                .iter()
                .min_by_key(|(_, t)| t.heard)
                .map(|(s, _)| *s);
            if let Some(oldest) = oldest {
                self.by_sup.remove(&oldest);
            }
        }
        let (homes, heard) = (vec![home], now);
        self.by_sup.insert(
            sup,
            TakeOver {
                homes,
                epoch,
                by,
                heard,
            },
        );
    }

    /// The supervisors taken over from `home` (by any take-over of a chain), with
    /// their latest take-over epochs. A supervisor `home` created counts too: its
    /// first record was there, and any take-over left it behind, whether or not
    /// this agent heard the take-over from it (a member in a newer life heard
    /// only the latest, swarm seed 441394).
    pub(super) fn of_home(&self, home: NodeId) -> impl Iterator<Item = (SupervisorId, u32)> + '_ {
        self.leaving(home).map(|(s, t)| (*s, t.epoch))
    }

    /// The take-overs heard of that left `home` behind (see [`Taken::of_home`]).
    fn leaving(&self, home: NodeId) -> impl Iterator<Item = (&SupervisorId, &TakeOver)> + '_ {
        self.by_sup
            .iter()
            .filter(move |(s, t)| t.homes.contains(&home) || s.origin == home)
    }

    /// The takers (latest of each chain) of the supervisors taken over from
    /// `home`, as [`Taken::of_home`] finds them: a member disowns `home` for no
    /// other (see [`super::disown`]).
    pub(super) fn takers_from(&self, home: NodeId) -> impl Iterator<Item = NodeId> + '_ {
        self.leaving(home).map(|(_, t)| t.by)
    }

    /// The homes `sup` was taken from, as far as this agent heard.
    pub(super) fn homes_of(&self, sup: SupervisorId) -> impl Iterator<Item = NodeId> + '_ {
        self.by_sup
            .get(&sup)
            .into_iter()
            .flat_map(|t| t.homes.iter().copied())
    }

    /// Forgets the take-overs heard `hold` ago or earlier.
    pub(super) fn expire(&mut self, now: Time, hold: Duration) {
        self.by_sup
            .retain(|_, t| now.saturating_since(t.heard) < hold);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::Incarnation;

    /// Where the tests' supervisors were created: no home they name.
    const ORIGIN: NodeId = NodeId(100);

    /// The taker of the tests' take-overs.
    const BY: NodeId = NodeId(50);

    fn sup(sequence: u32) -> SupervisorId {
        SupervisorId {
            origin: ORIGIN,
            incarnation: Incarnation(1),
            sequence,
        }
    }

    /// Every home of a chain of take-overs is told the latest epoch: the first
    /// home of swarm seed 331002 was told nothing once its taker's own taker
    /// replaced the entry.
    #[test]
    fn every_home_a_supervisor_was_taken_from_gets_the_latest_epoch() {
        let mut taken = Taken::default();
        taken.note(Time::ZERO, sup(0), (NodeId(1), BY), 2);
        taken.note(Time::ZERO, sup(0), (NodeId(2), BY), 1);
        assert_eq!(taken.of_home(NodeId(1)).collect::<Vec<_>>(), [(sup(0), 2)]);
        assert_eq!(
            taken.of_home(NodeId(2)).collect::<Vec<_>>(),
            [(sup(0), 2)],
            "an older one heard late keeps the latest epoch"
        );
        taken.note(Time::ZERO, sup(0), (NodeId(3), BY), 3);
        for home in 1..=3 {
            assert_eq!(
                taken.of_home(NodeId(home)).collect::<Vec<_>>(),
                [(sup(0), 3)],
                "home {home}"
            );
        }
        assert_eq!(taken.of_home(NodeId(4)).count(), 0);
        for home in 4..20 {
            taken.note(Time::ZERO, sup(0), (NodeId(home), BY), home);
        }
        assert_eq!(taken.by_sup[&sup(0)].homes.len(), MAX_HOMES);
        assert_eq!(
            taken.of_home(NodeId(1)).count(),
            0,
            "the earliest went first"
        );
    }

    /// The taker of swarm seed 441394 restarted and heard only the next
    /// take-over, from itself: the supervisor's first home, which its new life
    /// was then asked to confirm, is told all the same.
    #[test]
    fn the_home_a_supervisor_was_created_at_is_told_of_any_take_over() {
        let mut taken = Taken::default();
        taken.note(Time::ZERO, sup(0), (NodeId(2), BY), 2);
        assert_eq!(taken.of_home(ORIGIN).collect::<Vec<_>>(), [(sup(0), 2)]);
        assert_eq!(taken.of_home(NodeId(3)).count(), 0);
    }

    /// A member names the latest taker of each chain that left `home` behind:
    /// a later taker's word replaces an earlier one's, an older word heard late
    /// does not.
    #[test]
    fn the_taker_from_a_home_is_the_latest_of_its_chain() {
        let mut taken = Taken::default();
        let takers = |t: &Taken, home| t.takers_from(NodeId(home)).collect::<Vec<_>>();
        taken.note(Time::ZERO, sup(0), (NodeId(1), NodeId(2)), 1);
        assert_eq!(takers(&taken, 1), [NodeId(2)]);
        taken.note(Time::ZERO, sup(0), (NodeId(2), NodeId(3)), 2);
        taken.note(Time::ZERO, sup(0), (NodeId(1), NodeId(2)), 1);
        assert_eq!(takers(&taken, 1), [NodeId(3)]);
        assert_eq!(takers(&taken, 2), [NodeId(3)]);
        assert!(takers(&taken, 3).is_empty());
    }

    #[test]
    fn take_overs_are_forgotten_after_hold_and_bounded() {
        let hold = Duration::from_secs(30);
        let mut taken = Taken::default();
        for i in 0..=MAX_TAKEN as u32 {
            taken.note(Time::from_millis(u64::from(i)), sup(i), (NodeId(1), BY), 1);
        }
        assert_eq!(taken.of_home(NodeId(1)).count(), MAX_TAKEN);
        assert!(
            taken.of_home(NodeId(1)).all(|(s, _)| s != sup(0)),
            "the oldest went first"
        );
        taken.expire(Time::from_millis(500) + hold, hold);
        assert_eq!(taken.of_home(NodeId(1)).count(), MAX_TAKEN + 1 - 501);
    }
}
