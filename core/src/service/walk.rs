//! The progress of a walk down the federation tree, at the agent that started it:
//! which leaders are still to say where the walk went on, and which hosts are
//! still to answer. `ps` (placement) and fan-out sends (messaging) walk the tree
//! the same way: the walk starts at the root; a leader at level `k > 0` tells the
//! origin the members of its group it passed the walk to (each leads a group at
//! `k - 1`), a level-0 leader tells it the hosts it visited, and each visited host
//! answers the origin directly, in one or more parts.
//!
//! Invariants: a host that answered in full is never awaited again (an answer may
//! overtake the announcement of its host); an announcement that overtook the
//! announcement of its own walk is kept until that comes; the walk is done when no
//! leader and no host is awaited.

use crate::ids::NodeId;
use std::collections::{BTreeMap, BTreeSet};

/// What a walk still waits for (see the module documentation).
#[derive(Debug)]
pub(crate) struct WalkProgress {
    /// Leaders (with the level of their group) whose announcement is awaited.
    walks: BTreeSet<(u8, NodeId)>,
    /// Hosts whose answer is awaited.
    hosts: BTreeSet<NodeId>,
    /// Hosts that answered in full (possibly before they were announced).
    answered: BTreeSet<NodeId>,
    /// Parts received from hosts that have not answered in full.
    got: BTreeMap<NodeId, u16>,
    /// Announcements that overtook the announcement of their walk.
    early: BTreeMap<(u8, NodeId), Vec<NodeId>>,
}

impl WalkProgress {
    /// A walk that starts at `root`, the leader of a group at `level`.
    pub(crate) fn new(level: u8, root: NodeId) -> Self {
        WalkProgress {
            walks: BTreeSet::from([(level, root)]),
            hosts: BTreeSet::new(),
            answered: BTreeSet::new(),
            got: BTreeMap::new(),
            early: BTreeMap::new(),
        }
    }

    /// `from`, leading a group at `level`, passed the walk on to `members`.
    pub(crate) fn announced(&mut self, level: u8, from: NodeId, members: &[NodeId]) {
        if self.walks.remove(&(level, from)) {
            self.went_on(level, members);
        } else {
            // Its own walk has not been announced yet (messages overtake each other).
            self.early.insert((level, from), members.to_vec());
        }
    }

    fn went_on(&mut self, level: u8, members: &[NodeId]) {
        for m in members {
            if level == 0 {
                if !self.answered.contains(m) {
                    self.hosts.insert(*m);
                }
            } else if let Some(next) = self.early.remove(&(level - 1, *m)) {
                self.went_on(level - 1, &next);
            } else {
                self.walks.insert((level - 1, *m));
            }
        }
    }

    /// The origin visits host `host` itself (its own, whatever the leaders'
    /// summaries say): its answer is awaited too.
    pub(crate) fn visiting(&mut self, host: NodeId) {
        if !self.answered.contains(&host) {
            self.hosts.insert(host);
        }
    }

    /// Whether host `from` has answered in full already (a later part is a repeat).
    pub(crate) fn has_answered(&self, from: NodeId) -> bool {
        self.answered.contains(&from)
    }

    /// Host `from` sent one part of an answer of `parts` parts.
    pub(crate) fn part(&mut self, from: NodeId, parts: u16) {
        let got = self.got.entry(from).or_default();
        *got += 1;
        if *got >= parts {
            self.got.remove(&from);
            self.answered.insert(from);
            self.hosts.remove(&from);
        }
    }

    /// Whether nothing is awaited any more.
    pub(crate) fn done(&self) -> bool {
        self.walks.is_empty() && self.hosts.is_empty()
    }

    /// The leaders (with their level) and the hosts still awaited.
    pub(crate) fn awaited_parts(&self) -> (Vec<(u8, NodeId)>, Vec<NodeId>) {
        (
            self.walks.iter().copied().collect(),
            self.hosts.iter().copied().collect(),
        )
    }

    /// How many leaders and hosts are still awaited.
    pub(crate) fn awaited(&self) -> usize {
        self.walks.len() + self.hosts.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_announcement_or_answer_that_overtakes_its_walk_still_counts() {
        let (root, leader, host) = (NodeId(1), NodeId(2), NodeId(3));
        let mut w = WalkProgress::new(1, root);
        // The level-0 leader's announcement and the host's answer come first.
        w.announced(0, leader, &[host]);
        w.part(host, 1);
        assert!(!w.done());
        w.announced(1, root, &[leader]);
        assert!(w.done(), "{w:?}");
        assert!(w.has_answered(host));
    }

    #[test]
    fn a_host_is_done_after_all_its_parts() {
        let (root, host) = (NodeId(1), NodeId(3));
        let mut w = WalkProgress::new(0, root);
        w.announced(0, root, &[host]);
        w.part(host, 2);
        assert_eq!(w.awaited(), 1);
        w.part(host, 2);
        assert!(w.done());
    }
}
