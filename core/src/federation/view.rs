//! A group's membership as its leader publishes it, and the subtree summary
//! that flows up the hierarchy.
//!
//! Invariants of a [`View`]: `members` is sorted and free of duplicates, and
//! `leader` is one of them. Leadership is deterministic and stable: the agent
//! that founds a group leads it, a joiner never displaces the leader, and when
//! the leader leaves or fails its heir is the lowest remaining id. `epoch`
//! grows with every change the leader makes, so a member keeps the newest view
//! of its leader.

use crate::ids::NodeId;
use crate::service::Payload;
use serde::{Deserialize, Serialize};

/// A level of the hierarchy: 0 for groups of agents, `k + 1` for groups of level-`k` leaders.
pub type Level = u8;

/// A group's membership.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct View {
    /// The group's level.
    pub level: Level,
    /// The leader, one of `members`.
    pub leader: NodeId,
    /// Grows with every change.
    pub epoch: u64,
    /// Sorted, without duplicates.
    pub members: Vec<NodeId>,
    /// The leaders of the groups above this one, one per level, nearest first, up to
    /// the root, as the leader knows them: entry `i` leads the group at level
    /// `level + 1 + i` (so a node that leads several levels appears once for each,
    /// and the group's own leader may appear). A hint: an heir attaches to the first
    /// live one, and placement walks the tree by it.
    pub ancestors: Vec<NodeId>,
    /// The heirs of the groups above that the leader leads itself, nearest first: the
    /// ones that lead those groups once the leader is gone. A hint too: where the
    /// ancestors name only the leader, an heir that takes this group over from a dead
    /// leader attaches through these instead.
    pub heirs_above: Vec<NodeId>,
}

impl View {
    /// The heir: the first member after the leader (none in a group of one).
    #[must_use]
    pub fn heir(&self) -> Option<NodeId> {
        self.members.iter().find(|&&m| m != self.leader).copied()
    }

    /// A new group of one.
    #[must_use]
    pub fn solo(level: Level, me: NodeId, ancestors: Vec<NodeId>) -> Self {
        View {
            level,
            leader: me,
            epoch: 1,
            members: vec![me],
            ancestors,
            heirs_above: Vec::new(),
        }
    }

    /// A view of `members` (any order) led by their lowest id (an heir). `None` if `members` is empty.
    #[must_use]
    pub fn of(
        level: Level,
        epoch: u64,
        mut members: Vec<NodeId>,
        ancestors: Vec<NodeId>,
    ) -> Option<Self> {
        members.sort_unstable();
        members.dedup();
        Some(View {
            level,
            leader: *members.first()?,
            epoch,
            members,
            ancestors,
            heirs_above: Vec::new(),
        })
    }

    /// Where the group's heir attaches once it has taken the group over from a dead
    /// leader: the ancestors, then the heirs above (some may repeat).
    pub fn attach_points(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.ancestors.iter().chain(&self.heirs_above).copied()
    }

    /// Whether `node` is a member.
    #[must_use]
    pub fn contains(&self, node: NodeId) -> bool {
        self.members.binary_search(&node).is_ok()
    }

    /// Adds `node`; false if it was a member already.
    pub fn insert(&mut self, node: NodeId) -> bool {
        match self.members.binary_search(&node) {
            Ok(_) => false,
            Err(at) => {
                self.members.insert(at, node);
                self.epoch = self.epoch.saturating_add(1);
                true
            }
        }
    }

    /// Removes `node`; false if it was not a member. Removing the leader makes the
    /// lowest remaining id the leader.
    pub fn remove(&mut self, node: NodeId) -> bool {
        match self.members.binary_search(&node) {
            Ok(at) => {
                self.members.remove(at);
                if node == self.leader {
                    if let Some(first) = self.members.first() {
                        self.leader = *first;
                    }
                }
                self.epoch = self.epoch.saturating_add(1);
                true
            }
            Err(_) => false,
        }
    }

    /// Checks the view's invariants (debug builds and tests).
    #[must_use]
    pub fn is_well_formed(&self) -> bool {
        self.members.windows(2).all(|w| w[0] < w[1]) && self.contains(self.leader)
    }
}

/// What a subtree holds, summed up the hierarchy by the leaders: the federation's
/// own counts, and a [`Payload`] with one part per service that rides this
/// instance (the federation sums it without knowing what it holds).
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Live agents in the subtree.
    pub agents: u32,
    /// Members of the group that this summary's sender leads (1 for a single agent).
    pub group_size: u32,
    /// The services' parts.
    pub payload: Payload,
}

impl Summary {
    /// The sum of two subtrees (group size is not summed: it belongs to the sender).
    #[must_use]
    pub fn plus(self, other: Summary) -> Summary {
        Summary {
            agents: self.agents.saturating_add(other.agents),
            group_size: self.group_size,
            payload: self.payload.plus(other.payload),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leadership_is_stable_and_epoch_grows() {
        let mut v = View::solo(0, NodeId(5), Vec::new());
        assert!(v.insert(NodeId(3)));
        assert!(!v.insert(NodeId(3)));
        assert_eq!(v.leader, NodeId(5), "a joiner never displaces the leader");
        assert_eq!(v.epoch, 2);
        assert!(v.remove(NodeId(5)));
        assert_eq!(v.leader, NodeId(3), "the heir is the lowest remaining id");
        assert!(v.is_well_formed());
        assert_eq!(View::of(1, 1, vec![], Vec::new()), None);
    }
}
