//! A home's quorum: the members of its level-0 group whose confirmations keep
//! its authority, beside its keepers' (see "A home's authority" in the module
//! doc of [`super`]).
//!
//! A home sends [`SupervisionMsg::Alive`](super::SupervisionMsg::Alive) to the
//! members of its *base* and of its current group every probe, and each answers
//! `Held`. The quorum *holds* while the home and the members of the base that
//! confirmed an `Alive` sent less than `authority` ago are more than half of the
//! base and the home together; an empty base (a group of one) holds.
//!
//! The home counts itself, so an even split of the others goes to the home's
//! side: a keeper takes over only with more than half of the others (the home
//! aside, see `Supervision::take_over`), which a side holding half of them does
//! not have. So the two sides never both act on one base, and a home that loses
//! one of the two others of a group of three (a member that leaves or crashes)
//! keeps its authority (before, both sides of such a tie stood still: its
//! children were fenced and never restarted).
//!
//! Invariant: the base never becomes easier to hold for a side cut off from
//! most of it.
//! - The first base is the whole group the home is in when it starts asking
//!   (confirmed or not). (Before, it began empty, which holds, and members joined
//!   it as they confirmed: a home that began cut off from most of its group built
//!   a base of the few it could reach and acted, while the other side's leader
//!   took its supervisor over: twins, as in swarm seed 70210.)
//! - A member joins the base only while the quorum holds, and once it confirmed
//!   (so a growing group does not suspend the authority).
//! - A member that left the group leaves the base once it confirmed an `Alive`
//!   sent after it left (it lives, on this side: the group was split), or once
//!   the quorum holds on confirmations of `Alive`s sent after it left (with the
//!   home, most of the base is on this side without it: it crashed, or was cut
//!   off alone); either way only if the base without it holds on `Alive`s sent
//!   since it left. (Before, swarm
//!   seed 302083: members split off one by one, each confirming from its new
//!   group, left a base of one member that had crashed meanwhile, which the
//!   home never held again, and no new member could join a base that did not
//!   hold: its children were never restarted.)
//!
//! - Every change of the base bumps its *epoch*, told with the base in every
//!   `Alive`; a member refuses to disown the home for a taker judging by an
//!   older epoch (see `disown`). A change is *committed* once most of the base
//!   before it (with the home) confirmed an `Alive` sent since; until then the
//!   home needs most of the old base as well as of the new. So a taker judging
//!   by the old base meets a member that knows the new one in any majority it
//!   asks. (Before, swarm seed 250378: a home left with three of its eight
//!   others by a split dropped the other half from its base, then the one member
//!   that heard both halves, and acted on the three, while the other half's
//!   leader took over with a majority of the old base.) A change is committed
//!   that way only, however long it takes: a taker that last heard the home
//!   before the change judges by the old base, may have taken over meanwhile,
//!   and cannot tell the home across the partition that keeps the old base
//!   from confirming. (Before, swarm seed 511006: a change not committed within
//!   `slack(refresh)` was committed all the same. A partition split the group
//!   just as a member back from a restart joined the base on the home's side;
//!   the other side's leader took over with most of the old base, and six
//!   seconds later the home committed the change and restarted the children
//!   beside it.) The price: a home whose old base loses more than half of its
//!   members while a change is pending (swarm seed 301068: they crashed just
//!   after it) grants and restarts nothing until enough of them are back, as
//!   a home whose group loses more than half of its members at once.
//! - A base that emptied (the home was alone in its group) is told to keepers as
//!   the home's current group until that group's members confirm and join it
//!   ([`Quorum::told_base`]).
//!
//! So a home cut off with a minority of the group it was last confirmed in loses
//! its authority within `authority` and cannot win it back from that minority,
//! however soon and however far the minority's view of the group shrinks (its new
//! leader and heir, who confirm the home as keepers, are not enough): only the
//! side with most of the group may act, and that side's leader takes the
//! supervisor over. The price is the same as a take-over's: a home whose group
//! loses more than half of its other members at once stops granting and
//! restarting until enough of them are back; so does a home whose only other
//! member leaves its group of two (a leave is not told apart from a crash).

use crate::ids::NodeId;
use crate::time::Time;
use std::collections::BTreeMap;
use std::time::Duration;

/// The members whose confirmations a home's authority needs, and their latest
/// confirmations.
#[derive(Clone, Debug, Default)]
pub(super) struct Quorum {
    /// Whether the base was set from a group yet (see the module doc).
    started: bool,
    /// The group the home was last confirmed in, itself excluded (sorted).
    base: Vec<NodeId>,
    /// Each member's latest confirmed `Alive`, on the home's clock when it sent it.
    confirmed: BTreeMap<NodeId, Time>,
    /// Members of the base not in the group now, and since when.
    absent: BTreeMap<NodeId, Time>,
    /// How many times the base changed (told in every `Alive`, so members can
    /// refuse a taker that judges by an older base).
    epoch: u64,
    /// The base before a change not committed yet, and when it changed: until
    /// most of it (with the home) confirmed an `Alive` sent since, the home needs
    /// most of it too.
    pending: Option<(Vec<NodeId>, Time)>,
}

impl Quorum {
    /// Whether the home and the members of the base that confirmed an `Alive`
    /// sent less than `authority` before `now` are more than half of the base and
    /// the home.
    pub(super) fn holds(&self, now: Time, authority: Duration) -> bool {
        let before = self.pending.as_ref();
        holds_after(&self.confirmed, &self.base, Time::ZERO, now, authority)
            && before
                .is_none_or(|(b, _)| holds_after(&self.confirmed, b, Time::ZERO, now, authority))
    }

    /// [`Quorum::holds`] on the base alone, counting only `Alive`s sent at `since`
    /// or later.
    fn holds_after(&self, since: Time, now: Time, authority: Duration) -> bool {
        holds_after(&self.confirmed, &self.base, since, now, authority)
    }

    /// How many times the base changed.
    pub(super) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The base before a change not committed yet.
    pub(super) fn pending_base(&self) -> Option<&[NodeId]> {
        self.pending.as_ref().map(|(b, _)| b.as_slice())
    }

    /// Whether the base was set from a group yet.
    pub(super) fn started(&self) -> bool {
        self.started
    }

    /// The base told to keepers in every `Alive` (sorted), by which a keeper
    /// judges a take-over: the base, or, while it is empty, the others of the
    /// home's current `group`. An empty base is a home that was alone in its
    /// group (it holds on nobody's confirmation); the members of the group it
    /// joins count once they confirm, an `Alive` later. A home that fails in
    /// between is taken over by its new group's leader if that group holds most
    /// of itself (before, the empty base told in that window held back every
    /// keeper for good: swarm seed 97574, whose home, alone after a jump of its
    /// clock, joined a group and restarted before its next `Alive`).
    pub(super) fn told_base(&self, me: NodeId, group: &[NodeId]) -> Vec<NodeId> {
        if !self.base.is_empty() {
            return self.base.clone();
        }
        let mut others: Vec<NodeId> = group.iter().copied().filter(|m| *m != me).collect();
        others.sort_unstable();
        others
    }

    /// Who is asked to confirm: the base and the current `group` (members not in
    /// the base yet are asked before they count), the home itself excluded.
    pub(super) fn askees(&self, me: NodeId, group: &[NodeId]) -> Vec<NodeId> {
        let before = self.pending.iter().flat_map(|(b, _)| b);
        let mut askees: Vec<NodeId> = self
            .base
            .iter()
            .chain(before)
            .chain(group)
            .copied()
            .filter(|m| *m != me)
            .collect();
        askees.sort_unstable();
        askees.dedup();
        askees
    }

    /// `member` confirmed the `Alive` this home sent at `at`.
    pub(super) fn confirm(&mut self, member: NodeId, at: Time) {
        let t = self.confirmed.entry(member).or_insert(at);
        *t = (*t).max(at);
    }

    /// The group is now `group` (the home among them): members join and leave the
    /// base by the rules of the module doc. Confirmations of members in neither
    /// are dropped.
    pub(super) fn follow(&mut self, now: Time, authority: Duration, me: NodeId, group: &[NodeId]) {
        if !self.started {
            self.started = true;
            self.base = group.iter().copied().filter(|m| *m != me).collect();
            self.base.sort_unstable();
            self.epoch = 1;
        }
        // A change is committed once most of the base before it (with the home)
        // confirmed an `Alive` sent since (which told the new base).
        let committed = self
            .pending
            .as_ref()
            .is_some_and(|(b, since)| holds_after(&self.confirmed, b, *since, now, authority));
        if committed {
            self.pending = None;
        }
        let before = self.base.clone();
        self.absent.retain(|m, _| !group.contains(m));
        for &m in self.base.iter().filter(|m| !group.contains(m)) {
            self.absent.entry(m).or_insert(now);
        }
        let leaving: Vec<(NodeId, Time)> = self
            .absent
            .iter()
            .filter(|(m, since)| {
                self.confirmed.get(m).is_some_and(|t| *t >= **since)
                    || self.holds_after(**since, now, authority)
            })
            .map(|(m, since)| (*m, *since))
            .collect();
        for (m, since) in leaving {
            // Only if the base left holds on `Alive`s sent since it left: a member
            // that confirms from another group is kept rather than leave a base of
            // the dead.
            let rest: Vec<NodeId> = self.base.iter().copied().filter(|b| *b != m).collect();
            if holds_after(&self.confirmed, &rest, since, now, authority) {
                self.absent.remove(&m);
                self.base = rest;
            }
        }
        if self.holds(now, authority) {
            let (base, confirmed) = (&self.base, &self.confirmed);
            // Confirmations kept only for a pending change's sake (of members
            // that left) do not count: only those since the change.
            let since = self.pending.as_ref().map_or(Time::ZERO, |(_, t)| *t);
            let joining: Vec<NodeId> = group
                .iter()
                .filter(|m| **m != me && !base.contains(m))
                .filter(|m| {
                    confirmed
                        .get(m)
                        .is_some_and(|t| *t >= since && now < *t + authority)
                })
                .copied()
                .collect();
            self.base.extend(joining);
            self.base.sort_unstable();
        }
        if self.base != before {
            self.epoch += 1;
            self.pending.get_or_insert((before, now));
        }
        let (base, confirmed) = (&self.base, &mut self.confirmed);
        let before = self.pending.as_ref().map(|(b, _)| b);
        confirmed.retain(|m, _| {
            base.contains(m) || group.contains(m) || before.is_some_and(|b| b.contains(m))
        });
    }
}

/// Whether the home and the members of `base` that confirmed an `Alive` sent at
/// `since` or later and less than `authority` before `now` are more than half of
/// `base` and the home.
fn holds_after(
    confirmed: &BTreeMap<NodeId, Time>,
    base: &[NodeId],
    since: Time,
    now: Time,
    authority: Duration,
) -> bool {
    let recent = base
        .iter()
        .filter(|m| {
            confirmed
                .get(m)
                .is_some_and(|t| *t >= since && now < *t + authority)
        })
        .count();
    2 * (recent + 1) > base.len() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    const AUTHORITY: Duration = Duration::from_millis(1500);
    const ME: NodeId = NodeId(0);

    fn nodes(ids: std::ops::Range<u32>) -> Vec<NodeId> {
        ids.map(NodeId).collect()
    }

    /// A quorum whose base is `group`, every member confirmed at `at`.
    fn confirmed_in(group: &[NodeId], at: Time) -> Quorum {
        let mut q = Quorum::default();
        for &m in group.iter().filter(|m| **m != ME) {
            q.confirm(m, at);
        }
        q.follow(at, AUTHORITY, ME, group);
        assert_eq!(q.base.len(), group.len() - 1);
        assert!(q.holds(at, AUTHORITY));
        q
    }

    /// The bug swarm seed 70210 found: a home that starts while cut off from most
    /// of its group (a partition came just before its supervisor) must not hold on
    /// the confirmations of the few it reaches; before, its base began empty and
    /// took in only those that confirmed.
    #[test]
    fn a_home_starting_cut_off_from_most_of_its_group_does_not_hold() {
        let group = nodes(0..5);
        let mut q = Quorum::default();
        let mut now = Time::ZERO;
        for _ in 0..20 {
            q.follow(now, AUTHORITY, ME, &group);
            q.confirm(NodeId(4), now);
            assert!(!q.holds(now, AUTHORITY), "1 of 4 others holds at {now}");
            now = now + Duration::from_millis(300);
        }
        assert_eq!(q.base, nodes(1..5));
        // The rest answer: it holds.
        for &m in &group[1..] {
            q.confirm(m, now);
        }
        assert!(q.holds(now, AUTHORITY));
    }

    /// The bug swarm seed 97574 found: a home alone in its group (an empty base)
    /// joins a group and dies before its members confirm. The base it tells its
    /// new keepers is that group, so they can take it over; before, it told the
    /// empty base, which no keeper ever holds most of.
    #[test]
    fn an_empty_base_is_told_as_the_group_the_home_is_in() {
        let mut q = Quorum::default();
        q.follow(Time::ZERO, AUTHORITY, ME, &[ME]);
        assert!(q.told_base(ME, &[ME]).is_empty());
        let group = nodes(0..4);
        let now = Time::ZERO + Duration::from_millis(300);
        q.follow(now, AUTHORITY, ME, &group);
        assert!(q.base.is_empty(), "no member confirmed yet");
        assert_eq!(q.told_base(ME, &group), nodes(1..4));
        // Two confirm and join; the base is told as it is, not as the group.
        q.confirm(NodeId(1), now);
        q.confirm(NodeId(2), now);
        q.follow(now, AUTHORITY, ME, &group);
        assert_eq!(q.told_base(ME, &group), nodes(1..3));
    }

    #[test]
    fn a_group_of_one_holds() {
        let mut q = Quorum::default();
        q.follow(Time::ZERO, AUTHORITY, ME, &[ME]);
        assert!(q.holds(Time::ZERO, AUTHORITY));
        assert!(q.askees(ME, &[ME]).is_empty());
    }

    #[test]
    fn confirmations_expire_after_authority() {
        let group = nodes(0..5);
        let q = confirmed_in(&group, Time::ZERO);
        assert!(q.holds(Time::ZERO + AUTHORITY - Duration::from_nanos(1), AUTHORITY));
        assert!(!q.holds(Time::ZERO + AUTHORITY, AUTHORITY));
    }

    /// The split brain this closes: the home is cut off with 4 of the 13 others of
    /// its group; its side's view drops the rest at once, before the old
    /// confirmations expire, and its side's members go on confirming. The base
    /// keeps the others, so the home never holds again until most of them are back.
    #[test]
    fn a_minority_cannot_win_back_the_quorum_however_its_view_shrinks() {
        let group = nodes(0..14);
        let mut q = confirmed_in(&group, Time::ZERO);
        let minority = nodes(0..5);
        let mut now = Time::ZERO;
        for _ in 0..20 {
            now = now + Duration::from_millis(300);
            q.follow(now, AUTHORITY, ME, &minority);
            for &m in &minority[1..] {
                q.confirm(m, now);
            }
            if now >= Time::ZERO + AUTHORITY {
                assert!(!q.holds(now, AUTHORITY), "the minority holds at {now}");
            }
        }
        assert_eq!(q.base, nodes(1..14));
        // The partition heals: the rest confirm again, and the quorum holds.
        for &m in &group[1..] {
            q.confirm(m, now);
        }
        assert!(q.holds(now, AUTHORITY));
    }

    /// A group of three loses one of the home's two others (it left, or crashed):
    /// the home and the other are most of the group, so the quorum holds, and the
    /// member gone leaves the base (before, one of two others was not more than
    /// half: swarm seed 10128's home lost its authority for good and its children
    /// were fenced, never restarted). The even split in a group of five goes to the
    /// home too; less than that does not hold.
    #[test]
    fn an_even_split_of_the_others_goes_to_the_home() {
        let group = nodes(0..3);
        let mut q = confirmed_in(&group, Time::ZERO);
        let left = [ME, NodeId(2)];
        let mut now = Time::ZERO;
        for _ in 0..10 {
            now = now + Duration::from_millis(300);
            q.follow(now, AUTHORITY, ME, &left);
            q.confirm(NodeId(2), now);
            assert!(q.holds(now, AUTHORITY), "lost at {now}");
        }
        assert_eq!(q.base, vec![NodeId(2)]);
        let group = nodes(0..5);
        let mut q = confirmed_in(&group, Time::ZERO);
        let later = Time::ZERO + AUTHORITY;
        q.confirm(NodeId(1), later);
        q.confirm(NodeId(2), later);
        assert!(q.holds(later, AUTHORITY), "two of four others");
        let mut q = confirmed_in(&group, Time::ZERO);
        q.confirm(NodeId(1), later);
        assert!(!q.holds(later, AUTHORITY), "one of four others");
    }

    /// A change of the base is committed only once most of the base before it
    /// confirmed an `Alive` sent since (which told the new base and its epoch);
    /// until then the home needs most of the old base too. Swarm seed 250378:
    /// a split left the home with three of its eight others, and with one more
    /// member that heard both halves; the home dropped the other half from its
    /// base, and then that member too, and acted on the three while the other
    /// half's leader, judging by the old base, took over with the five there.
    #[test]
    fn a_change_of_the_base_needs_the_old_base_until_most_of_it_heard_of_it() {
        let mut q = confirmed_in(&nodes(0..9), Time::ZERO);
        assert_eq!(q.epoch(), 1);
        let at = |ms| Time::ZERO + Duration::from_millis(ms);
        let half = [ME, NodeId(4), NodeId(5), NodeId(6)];
        q.follow(at(300), AUTHORITY, ME, &half);
        for m in [4, 5, 6, 8] {
            q.confirm(NodeId(m), at(300));
        }
        q.follow(at(600), AUTHORITY, ME, &half);
        assert_eq!(q.base, nodes(4..7));
        assert_eq!(q.epoch(), 2);
        assert!(q.holds(at(600), AUTHORITY));
        // Member 8 heard no `Alive` since the change: once its last confirmation
        // expires, the three of the new base are not enough.
        for m in [4, 5, 6] {
            q.confirm(NodeId(m), at(600));
        }
        q.follow(at(1900), AUTHORITY, ME, &half);
        assert!(
            !q.holds(at(1900), AUTHORITY),
            "held before the change was known"
        );
        // However long the old base goes without hearing of it (swarm seed
        // 511006: a taker judging by the old base took over meanwhile).
        let mut late = q.clone();
        for t in (1900..=30_000).step_by(300) {
            for m in [4, 5, 6] {
                late.confirm(NodeId(m), at(t));
            }
            late.follow(at(t), AUTHORITY, ME, &half);
            assert!(!late.holds(at(t), AUTHORITY), "held at {t} ms");
        }
        // It confirms an `Alive` sent since: committed, the new base alone counts.
        q.confirm(NodeId(8), at(1900));
        q.follow(at(1900), AUTHORITY, ME, &half);
        for m in [4, 5, 6] {
            q.confirm(NodeId(m), at(2200));
        }
        q.follow(at(3500), AUTHORITY, ME, &half);
        assert!(q.holds(at(3500), AUTHORITY));
        assert_eq!(q.askees(ME, &half), nodes(4..7));
    }

    /// The bug swarm seed 302083 found: of a home's base of two, one member moved
    /// to another group (it still confirms from there) and the other crashed. The
    /// one that confirms stays, so the home holds, and members of its new group
    /// join; then both leave. Before, the member that moved left at its first
    /// confirmation, and the base of the crashed one never held again: the home's
    /// children were never restarted.
    #[test]
    fn a_member_confirming_from_another_group_stays_while_the_rest_does_not_hold() {
        let mut q = confirmed_in(&nodes(0..3), Time::ZERO);
        let at = |ms| Time::ZERO + Duration::from_millis(ms);
        let left = [ME, NodeId(1)];
        for round in 1..=8 {
            q.follow(at(300 * round), AUTHORITY, ME, &left);
            q.confirm(NodeId(2), at(300 * round));
        }
        assert_eq!(q.base, nodes(1..3), "the member that moved left the base");
        assert!(q.holds(at(2400), AUTHORITY));
        // The home joins a group of four others, which confirm and join the base;
        // the two members not in it leave once the rest holds without them.
        let new_group = [ME, NodeId(3), NodeId(4), NodeId(5), NodeId(6)];
        q.follow(at(2700), AUTHORITY, ME, &new_group);
        for m in [2, 3, 4, 5, 6] {
            q.confirm(NodeId(m), at(2700));
        }
        for round in 10..=12 {
            q.follow(at(300 * round), AUTHORITY, ME, &new_group);
            for m in [2, 3, 4, 5, 6] {
                q.confirm(NodeId(m), at(300 * round));
            }
        }
        assert_eq!(q.base, nodes(3..7));
        assert!(q.holds(at(3600), AUTHORITY));
    }

    /// A member that crashes leaves the base once the rest confirm without it; a
    /// member handed to another group (still confirming) leaves it at once; members
    /// that join count once they confirm.
    #[test]
    fn the_base_follows_the_group_while_most_confirm() {
        let group = nodes(0..6);
        let mut q = confirmed_in(&group, Time::ZERO);
        // Member 5 crashed and was removed; the others confirm the next round.
        let smaller = nodes(0..5);
        let mut now = Time::ZERO + Duration::from_millis(300);
        q.follow(now, AUTHORITY, ME, &smaller);
        assert_eq!(
            q.base,
            nodes(1..6),
            "kept until the rest confirm without it"
        );
        for &m in &smaller[1..] {
            q.confirm(m, now);
        }
        now = now + Duration::from_millis(300);
        q.follow(now, AUTHORITY, ME, &smaller);
        assert_eq!(q.base, nodes(1..5));
        // A split hands members 3 and 4 to another group; they still confirm.
        let split = nodes(0..3);
        q.follow(now, AUTHORITY, ME, &split);
        for m in nodes(1..5) {
            q.confirm(m, now);
        }
        now = now + Duration::from_millis(300);
        q.follow(now, AUTHORITY, ME, &split);
        assert_eq!(q.base, nodes(1..3));
        // Members join.
        let larger = nodes(0..9);
        assert_eq!(q.askees(ME, &larger), nodes(1..9));
        q.follow(now, AUTHORITY, ME, &larger);
        // Members 3 and 4 confirmed before they left: they join only once they
        // confirm an `Alive` sent since.
        assert_eq!(
            q.base,
            nodes(1..3),
            "only members confirmed since the change join"
        );
        assert!(q.holds(now, AUTHORITY));
        for m in nodes(1..9) {
            q.confirm(m, now);
        }
        q.follow(now, AUTHORITY, ME, &larger);
        assert_eq!(q.base, nodes(1..9));
        assert!(q.holds(now, AUTHORITY));
    }
}
