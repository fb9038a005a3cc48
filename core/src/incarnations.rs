//! The newest incarnation heard from each peer, so that messages from an older life
//! of a node are dropped for every service (the promise of [`crate::wire::Envelope`]).
//!
//! Owns a bounded map from node to the newest incarnation seen, with when it was
//! last admitted through the map, and in front of it a small direct-mapped cache of
//! recent (node, incarnation) pairs: most messages come from a few dozen peers (the
//! rack, the groups), and the cache answers them without walking the map, whose
//! nodes are cold in a simulation of thousands of agents.
//!
//! Invariants: every pair in the cache is also in the map, with the same
//! incarnation; at most `capacity` nodes are remembered; when a new node comes and
//! the map is full, the half admitted through the map least recently is forgotten at
//! once (deterministic: every admission gets its own sequence number), and so are
//! its cache slots; an incarnation is recorded only from a message that passed
//! validation. A forgotten node's next message is taken whatever its incarnation, so
//! an older life's message can still slip through after eviction: services must
//! (and do) cope with that, as they did before this check existed.

use crate::ids::{Incarnation, NodeId};
use crate::wire::{Envelope, Message, Reject};
use rustc_hash::FxHashMap;

/// The default number of peers remembered: far more than an agent talks to (its
/// groups, their ancestors, its rack, the hosts of its requests), and a few hundred
/// kilobytes at most.
pub const DEFAULT_CAPACITY: usize = 4096;

/// Slots of the cache of recent peers.
const RECENT_SLOTS: usize = 32;

/// What an admitted message says of its sender's life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Life {
    /// The life heard before (or the first heard, or a forgotten node's).
    Known,
    /// A newer life than the one heard before: the node restarted, and its earlier
    /// life (with all it held) is gone.
    Newer,
}

/// The newest incarnation of each recently heard peer (see the module docs).
#[derive(Debug, Clone)]
pub struct Incarnations {
    capacity: usize,
    /// Recent (node, incarnation) pairs, one slot per node hash; each also in `newest`.
    recent: [Option<(NodeId, Incarnation)>; RECENT_SLOTS],
    /// Node → (newest incarnation, sequence of its last admission through the map).
    /// A hash map: its order is never read (forgetting goes by sequence), and a
    /// lookup touches one or two cold places where a B-tree touched one per level.
    newest: FxHashMap<NodeId, (Incarnation, u64)>,
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
            recent: [None; RECENT_SLOTS],
            newest: FxHashMap::default(),
            next_seq: 0,
        }
    }

    /// Validates `envelope` ([`Envelope::validate`]), then checks its sender's life:
    /// `Err(Reject::StaleIncarnation)` if older than one already heard here (lives
    /// heard only by discovery do not count: asking discovery's table for every
    /// message cost a tenth of a 10,000-agent placement run). A message that passes records its sender's incarnation,
    /// except a discovery message, which is not checked here: discovery keeps its
    /// neighbours' lives itself and refuses older ones, and its heartbeats, most of
    /// all messages, would double this map's size and cost. One that fails changes
    /// nothing.
    #[inline]
    pub fn admit(&mut self, envelope: &Envelope) -> Result<Life, Reject> {
        envelope.validate()?;
        let (from, incarnation) = (envelope.from, envelope.incarnation);
        if matches!(envelope.body, Message::Discovery(_)) {
            // Discovery refuses older lives of its neighbours itself; checking its
            // heartbeats here too cost a tenth of a 10,000-agent simulation.
            return Ok(Life::Known);
        }
        self.note(from, incarnation)
    }

    /// Records that `node` spoke in `incarnation`; `Err` if that life is older than one
    /// heard before (then nothing changes).
    #[inline]
    pub fn note(&mut self, node: NodeId, incarnation: Incarnation) -> Result<Life, Reject> {
        let slot = slot_of(node);
        if let Some((n, known)) = self.recent[slot] {
            if n == node && incarnation <= known {
                return if incarnation == known {
                    Ok(Life::Known)
                } else {
                    Err(Reject::StaleIncarnation)
                };
            }
        }
        self.note_through_map(node, incarnation, slot)
    }

    /// [`Incarnations::note`] past the cache (about one message in ten): kept out of
    /// line, so that the cache's answer costs no more than its few instructions.
    #[cold]
    #[inline(never)]
    fn note_through_map(
        &mut self,
        node: NodeId,
        incarnation: Incarnation,
        slot: usize,
    ) -> Result<Life, Reject> {
        let seq = self.next_seq;
        let mut life = Life::Known;
        if let Some((newest, used)) = self.newest.get_mut(&node) {
            if incarnation < *newest {
                return Err(Reject::StaleIncarnation);
            }
            if incarnation > *newest {
                life = Life::Newer;
            }
            *newest = incarnation;
            *used = seq;
        } else {
            if self.newest.len() >= self.capacity {
                self.forget_least_recent_half();
            }
            self.newest.insert(node, (incarnation, seq));
        }
        self.recent[slot] = Some((node, incarnation));
        self.next_seq += 1;
        debug_assert!(self.newest.len() <= self.capacity);
        Ok(life)
    }

    /// Forgets the half of the peers admitted through the map least recently, and
    /// their cache slots.
    fn forget_least_recent_half(&mut self) {
        let mut uses: Vec<u64> = self.newest.values().map(|(_, used)| *used).collect();
        let forget = uses.len() - uses.len() / 2;
        let (_, &mut cut, _) = uses.select_nth_unstable(forget - 1);
        self.newest.retain(|_, (_, used)| *used > cut);
        for slot in &mut self.recent {
            if slot.is_some_and(|(n, _)| !self.newest.contains_key(&n)) {
                *slot = None;
            }
        }
    }

    /// The newest incarnation remembered for `node`.
    #[must_use]
    pub fn newest(&self, node: NodeId) -> Option<Incarnation> {
        match self.recent[slot_of(node)] {
            Some((n, incarnation)) if n == node => Some(incarnation),
            _ => self.newest.get(&node).map(|(i, _)| *i),
        }
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

/// The cache slot of `node` (Fibonacci hashing of its id).
#[inline]
fn slot_of(node: NodeId) -> usize {
    (node.0.wrapping_mul(0x9e37_79b9) >> 27) as usize % RECENT_SLOTS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_life_is_refused_a_newer_one_replaces() {
        let mut m = Incarnations::new(8);
        assert_eq!(m.note(NodeId(1), Incarnation(3)), Ok(Life::Known));
        assert_eq!(m.note(NodeId(1), Incarnation(3)), Ok(Life::Known));
        assert_eq!(
            m.note(NodeId(1), Incarnation(2)),
            Err(Reject::StaleIncarnation)
        );
        assert_eq!(m.note(NodeId(1), Incarnation(4)), Ok(Life::Newer));
        assert_eq!(m.note(NodeId(1), Incarnation(4)), Ok(Life::Known));
        assert_eq!(m.newest(NodeId(1)), Some(Incarnation(4)));
        assert_eq!(
            m.note(NodeId(1), Incarnation(3)),
            Err(Reject::StaleIncarnation)
        );
    }

    #[test]
    fn the_oldest_admission_is_forgotten_at_capacity() {
        let mut m = Incarnations::new(2);
        m.note(NodeId(1), Incarnation(5)).unwrap();
        m.note(NodeId(2), Incarnation(5)).unwrap();
        m.note(NodeId(1), Incarnation(5)).unwrap(); // answered by the cache
        m.note(NodeId(3), Incarnation(5)).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m.newest(NodeId(1)), None);
        assert_eq!(m.newest(NodeId(2)), Some(Incarnation(5)));
        assert_eq!(m.newest(NodeId(3)), Some(Incarnation(5)));
        // Forgotten, its cache slot too: its next message is taken and remembered.
        assert_eq!(m.note(NodeId(1), Incarnation(4)), Ok(Life::Known));
        assert_eq!(
            m.note(NodeId(1), Incarnation(3)),
            Err(Reject::StaleIncarnation)
        );
    }

    #[test]
    fn at_capacity_the_older_half_goes_and_the_bound_holds() {
        let mut m = Incarnations::new(8);
        for n in 0..8 {
            m.note(NodeId(n), Incarnation(1)).unwrap();
        }
        // A new life goes through the map and counts as a recent admission.
        m.note(NodeId(0), Incarnation(2)).unwrap();
        m.note(NodeId(100), Incarnation(1)).unwrap();
        let kept: Vec<u32> = (0..101)
            .filter(|&n| m.newest(NodeId(n)).is_some())
            .collect();
        assert_eq!(kept, vec![0, 5, 6, 7, 100]);
        for n in 200..1000 {
            m.note(NodeId(n), Incarnation(1)).unwrap();
            assert!(m.len() <= 8);
        }
    }
}
