//! The read-only view of one federation instance that a service gets on every
//! call: this agent's seats and groups at each level, their leaders and
//! ancestors, the members' subtree summaries, and the protocol period.
//!
//! A [`TreeView`] borrows the federation for the length of one call and exposes
//! nothing that could change it; an agent outside any tree (or riding an
//! instance it does not run) gets an empty view, in which it is a group of one.

use crate::federation::{Federation, Level, Seat, Summary, View};
use crate::ids::NodeId;
use std::collections::BTreeMap;
use std::time::Duration;

/// A read-only view of the federation instance a service rides.
#[derive(Clone, Copy, Debug)]
pub struct TreeView<'a> {
    me: NodeId,
    fed: Option<&'a Federation>,
}

impl<'a> TreeView<'a> {
    /// The view of `fed` (or an empty one) for agent `me`.
    #[must_use]
    pub(crate) fn new(me: NodeId, fed: Option<&'a Federation>) -> Self {
        TreeView { me, fed }
    }

    /// A view of no tree: the agent is alone.
    #[must_use]
    pub fn empty(me: NodeId) -> Self {
        TreeView { me, fed: None }
    }

    /// For tests: the view of agent `me` as a plain member of the level-0 group
    /// `view`, taken as its leader pushed it (whatever its bounds: this is behind the
    /// boundary check). The federation behind it is leaked.
    #[cfg(test)]
    pub(crate) fn member_of(me: NodeId, view: View) -> TreeView<'static> {
        Self::member_ticked_until(me, view, crate::time::Time::ZERO)
    }

    /// For tests: [`TreeView::member_of`], its leader silent since the view came
    /// (at 1 ms), the federation ticked every period and at `until`.
    #[cfg(test)]
    pub(crate) fn member_ticked_until(
        me: NodeId,
        view: View,
        until: crate::time::Time,
    ) -> TreeView<'static> {
        use crate::federation::{FedBody, FederationConfig};
        use crate::time::Time;
        use rand::SeedableRng;
        let rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let config = FederationConfig::default();
        let period = config.period;
        let mut fed = Federation::new(me, config, rng, Default::default());
        fed.boot(Time::ZERO);
        fed.handle_message(Time::from_millis(1), view.leader, FedBody::View(view));
        let mut now = Time::from_millis(1);
        while now < until {
            now = (now + period).min(until);
            fed.handle_timeout(now);
        }
        TreeView::new(me, Some(Box::leak(Box::new(fed))))
    }

    /// For tests: the view of the leader of the level-0 group `view`. The
    /// federation behind it is leaked.
    #[cfg(test)]
    pub(crate) fn leader_of(view: View) -> TreeView<'static> {
        let me = view.leader;
        TreeView::new(me, Some(Box::leak(Box::new(Federation::leading(view)))))
    }

    /// For tests: [`TreeView::leader_of`], not having heard `unheard` yet.
    #[cfg(test)]
    pub(crate) fn leader_unheard(view: View, unheard: &[NodeId]) -> TreeView<'static> {
        let me = view.leader;
        let fed = Federation::leading_unheard(view, unheard);
        TreeView::new(me, Some(Box::leak(Box::new(fed))))
    }

    /// For tests: [`TreeView::leader_of`], having just handed `other` over, the
    /// other half of a split of that group.
    #[cfg(test)]
    pub(crate) fn splitter_of(view: View, other: View) -> TreeView<'static> {
        let me = view.leader;
        let fed = Federation::leading_after_split(view, other);
        TreeView::new(me, Some(Box::leak(Box::new(fed))))
    }

    /// Whether this agent holds a seat (it belongs to a tree).
    #[must_use]
    pub fn in_tree(&self) -> bool {
        self.fed.is_some_and(|f| !f.seats().is_empty())
    }

    /// This agent's group at `level`, if it holds a seat there.
    #[must_use]
    pub fn group(&self, level: Level) -> Option<GroupView<'a>> {
        let seat = self.fed?.seats().get(usize::from(level))?;
        Some(GroupView { me: self.me, seat })
    }

    /// The members of this agent's level-0 group (itself included), or just itself
    /// outside a tree.
    #[must_use]
    pub fn local_group(&self) -> Vec<NodeId> {
        self.group(0)
            .map_or_else(|| vec![self.me], |g| g.view().members.clone())
    }

    /// Where this agent's replicated records are kept: its level-0 group's leader
    /// and heir (the first member after the leader), itself excluded; none outside
    /// a tree. Placement's ledger and supervision's records both live there.
    #[must_use]
    pub fn keepers(&self) -> Vec<NodeId> {
        let mut keepers = Vec::new();
        self.keepers_into(&mut keepers);
        keepers
    }

    /// [`TreeView::keepers`], written over `keepers` (which keeps its buffer: no
    /// allocation when the keepers are unchanged, as they are on most calls).
    pub fn keepers_into(&self, keepers: &mut Vec<NodeId>) {
        keepers.clear();
        let Some(view) = self.group(0).map(|g| g.view()) else {
            return;
        };
        keepers.extend(
            std::iter::once(view.leader)
                .chain(view.heir())
                .filter(|&n| n != self.me),
        );
    }

    /// The leaders above this agent's level-0 group, one per level, nearest first
    /// (see [`View::ancestors`]); empty outside a tree and at the root.
    #[must_use]
    pub fn ancestors(&self) -> &'a [NodeId] {
        self.group(0)
            .map_or(&[], |g| g.seat.view().ancestors.as_slice())
    }

    /// The summary of the group this agent leads at `level` (its members' subtrees
    /// summed), or `None` if it leads none there.
    #[must_use]
    pub fn group_summary(&self, level: Level) -> Option<Summary> {
        self.fed?.group_summary(level)
    }

    /// The members of `seat` (this agent's group at `level`, which it leads) that a
    /// tree walk must visit, in view order. `index` reads a member's subtree index
    /// from its summary; this agent's own entry is read fresh instead (`own` at level
    /// 0, its group summary one level down above), since the copy in `summaries` is
    /// a beat old. `must_visit` decides from a member's index (`None`: no summary
    /// yet, so it may hold anything).
    pub fn members_to_walk<I>(
        &self,
        seat: GroupView<'a>,
        level: Level,
        own: impl FnOnce() -> I,
        index: impl Fn(&Summary) -> I,
        mut must_visit: impl FnMut(NodeId, Option<&I>) -> bool,
    ) -> Vec<NodeId> {
        let mine = match level {
            0 => Some(own()),
            _ => self.group_summary(level - 1).map(|s| index(&s)),
        };
        seat.view()
            .members
            .iter()
            .copied()
            .filter(|&m| {
                if m == self.me {
                    must_visit(m, mine.as_ref())
                } else {
                    must_visit(m, seat.summaries().get(&m).map(&index).as_ref())
                }
            })
            .collect()
    }

    /// The instance's protocol period (zero outside a tree).
    #[must_use]
    pub fn period(&self) -> Duration {
        self.fed.map_or(Duration::ZERO, |f| f.config().period)
    }
}

/// This agent's seat in one group, read-only.
#[derive(Clone, Copy, Debug)]
pub struct GroupView<'a> {
    me: NodeId,
    seat: &'a Seat,
}

impl<'a> GroupView<'a> {
    /// The group's membership, as its leader published it.
    #[must_use]
    pub fn view(&self) -> &'a View {
        self.seat.view()
    }

    /// Whether this agent leads the group.
    #[must_use]
    pub fn led_by_me(&self) -> bool {
        self.seat.view().leader == self.me
    }

    /// Leader side: the view of the other half of a split of this group, within
    /// the last few periods, that this agent handed `member` to.
    #[must_use]
    pub fn handed_to(&self, member: NodeId) -> Option<&'a View> {
        self.seat.hand_over_for(member)
    }

    /// Leader side: whether `member` is suspected, silent lately or not heard
    /// since this agent took the group over from a silent leader (never at a
    /// plain member). A member in the view is not always one this agent hears: the
    /// view lags a partition by the removal time.
    #[must_use]
    pub fn suspects(&self, member: NodeId) -> bool {
        self.seat.is_suspected(member)
    }

    /// Member side: whether this agent suspects the group's leader, silent for
    /// the federation's suspicion time (never at the leader itself).
    #[must_use]
    pub fn leader_suspected(&self) -> bool {
        !self.led_by_me() && self.seat.leader_is_suspected()
    }

    /// Leader side: each member's subtree summary as it last reported it (empty at
    /// a plain member).
    #[must_use]
    pub fn summaries(&self) -> &'a BTreeMap<NodeId, Summary> {
        self.seat.summaries()
    }
}
