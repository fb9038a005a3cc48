//! The newest incarnation heard from each peer, so that messages from an older life
//! of a node are dropped for every service (the promise of [`crate::wire::Envelope`]).
//!
//! Owns a bounded map from node to the newest incarnation seen, with its last use.
//! Invariants: at most `capacity` nodes are remembered; when a new node comes and the
//! map is full, the node heard from least recently is forgotten (deterministic: ties
//! cannot happen, every admission gets its own sequence number); an incarnation is
//! recorded only from a message that passed validation. A forgotten node's next
//! message is taken whatever its incarnation, so an older life's message can still
//! slip through after eviction: services must (and do) cope with that, as they did
//! before this check existed.

use crate::ids::{Incarnation, NodeId};
use crate::wire::{Envelope, Reject};
use std::collections::BTreeMap;

/// The default number of peers remembered: far more than an agent talks to (its
/// groups, their ancestors, its rack, the hosts of its requests), and a few hundred
/// kilobytes at most.
pub const DEFAULT_CAPACITY: usize = 4096;

/// The newest incarnation of each recently heard peer (see the module docs).
#[derive(Debug, Clone)]
pub struct Incarnations {
    capacity: usize,
    /// Node → (newest incarnation, sequence of its last admission).
    newest: BTreeMap<NodeId, (Incarnation, u64)>,
    /// Sequence of last admission → node: the eviction order.
    by_use: BTreeMap<u64, NodeId>,
    next_seq: u64,
}

impl Default for Incarnations {
    fn default() -> Self {
        Incarnations::new(DEFAULT_CAPACITY)
    }
}

impl Incarnations {
    /// An empty map remembering at most `capacity` peers (at least one).
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Incarnations {
            capacity: capacity.max(1),
            newest: BTreeMap::new(),
            by_use: BTreeMap::new(),
            next_seq: 0,
        }
    }

    /// Validates `envelope` ([`Envelope::validate`]), then checks its sender's life:
    /// `Err(Reject::StaleIncarnation)` if an older one than already heard. A message
    /// that passes records its sender's incarnation; one that fails changes nothing.
    pub fn admit(&mut self, envelope: &Envelope) -> Result<(), Reject> {
        envelope.validate()?;
        self.note(envelope.from, envelope.incarnation)
    }

    /// Records that `node` spoke in `incarnation`; `Err` if that life is older than one
    /// heard before (then nothing changes).
    pub fn note(&mut self, node: NodeId, incarnation: Incarnation) -> Result<(), Reject> {
        let seq = self.next_seq;
        if let Some((newest, used)) = self.newest.get_mut(&node) {
            if incarnation < *newest {
                return Err(Reject::StaleIncarnation);
            }
            *newest = incarnation;
            self.by_use.remove(used);
            *used = seq;
        } else {
            if self.newest.len() >= self.capacity {
                if let Some((_, oldest)) = self.by_use.pop_first() {
                    self.newest.remove(&oldest);
                }
            }
            self.newest.insert(node, (incarnation, seq));
        }
        self.by_use.insert(seq, node);
        self.next_seq += 1;
        debug_assert_eq!(self.newest.len(), self.by_use.len());
        Ok(())
    }

    /// The newest incarnation remembered for `node`.
    #[must_use]
    pub fn newest(&self, node: NodeId) -> Option<Incarnation> {
        self.newest.get(&node).map(|(i, _)| *i)
    }

    /// How many peers are remembered.
    #[must_use]
    pub fn len(&self) -> usize {
        self.newest.len()
    }

    /// Whether no peer is remembered.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.newest.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_life_is_refused_a_newer_one_replaces() {
        let mut m = Incarnations::new(8);
        assert_eq!(m.note(NodeId(1), Incarnation(3)), Ok(()));
        assert_eq!(m.note(NodeId(1), Incarnation(3)), Ok(()));
        assert_eq!(
            m.note(NodeId(1), Incarnation(2)),
            Err(Reject::StaleIncarnation)
        );
        assert_eq!(m.note(NodeId(1), Incarnation(4)), Ok(()));
        assert_eq!(m.newest(NodeId(1)), Some(Incarnation(4)));
        assert_eq!(
            m.note(NodeId(1), Incarnation(3)),
            Err(Reject::StaleIncarnation)
        );
    }

    #[test]
    fn the_least_recently_heard_is_evicted_at_capacity() {
        let mut m = Incarnations::new(2);
        m.note(NodeId(1), Incarnation(5)).unwrap();
        m.note(NodeId(2), Incarnation(5)).unwrap();
        m.note(NodeId(1), Incarnation(5)).unwrap(); // 2 is now the least recent
        m.note(NodeId(3), Incarnation(5)).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m.newest(NodeId(2)), None);
        assert_eq!(m.newest(NodeId(1)), Some(Incarnation(5)));
        assert_eq!(m.newest(NodeId(3)), Some(Incarnation(5)));
    }
}
