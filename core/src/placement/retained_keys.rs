//! Request keys, each with a value, kept for a while from their first insertion:
//! the requests a host has finished with (for `exit_retention`: a late or
//! duplicated `Create` does nothing) and the requests it offered room to, with
//! what it offered (for `offer_retention`: only these may create processes,
//! within the offer).
//!
//! Owns one map from key to expiry and value. A key is in the set from its
//! insertion until the first insertion (of any key) at or after its expiry: expiry
//! is noticed only when a key is inserted, exactly as when expired keys were
//! dropped at every insertion from a queue kept in expiry order. Here an expired
//! key stays in the map, counted out by every lookup, until a sweep: the map is
//! swept when it has doubled since the last one, so that each insertion touches the
//! map once (a queue beside a set touched four cold places per insertion, a tenth
//! of an `OfferReq` at 10,000 hosts). A key inserted again while present keeps its
//! first expiry and value.
//!
//! Invariants: `now` never goes back; at most twice as many keys are held as were
//! live at the last sweep (or [`SWEEP_FLOOR`]), so never more than twice the most
//! ever live at once.

use super::msg::ReqKey;
use crate::time::Time;
use rustc_hash::FxHashMap;
use std::collections::hash_map::Entry;

/// The map is never swept below this many keys.
const SWEEP_FLOOR: usize = 64;

/// Request keys, each with a value until its expiry (see the module docs).
#[derive(Debug)]
pub(super) struct RetainedKeys<V> {
    /// Key → (expiry, value); an entry expired at `now` is out of the set. A hash
    /// map (its order is never read): a lookup touches one or two places, where a
    /// B-tree of a few thousand keys touched a cold node per level, and a sweep
    /// reads one array.
    until: FxHashMap<ReqKey, (Time, V)>,
    /// The time of the last insertion.
    now: Time,
    /// The size at which the map is swept next.
    sweep_at: usize,
}

impl<V> Default for RetainedKeys<V> {
    fn default() -> Self {
        RetainedKeys {
            until: FxHashMap::default(),
            now: Time::ZERO,
            sweep_at: 0,
        }
    }
}

impl<V> RetainedKeys<V> {
    /// Whether `key` is in the set.
    pub(super) fn contains(&self, key: &ReqKey) -> bool {
        self.get(key).is_some()
    }

    /// The value of `key`, if it is in the set.
    pub(super) fn get(&self, key: &ReqKey) -> Option<&V> {
        self.until
            .get(key)
            .filter(|(at, _)| *at > self.now)
            .map(|(_, v)| v)
    }

    /// The value of `key`, if it is in the set, to change.
    pub(super) fn get_mut(&mut self, key: &ReqKey) -> Option<&mut V> {
        let now = self.now;
        self.until
            .get_mut(key)
            .filter(|(at, _)| *at > now)
            .map(|(_, v)| v)
    }

    /// Adds `key` with `value` until `until` unless it is in the set, expiring the
    /// keys due at `now`; the key's value either way.
    pub(super) fn insert(&mut self, now: Time, key: ReqKey, until: Time, value: V) -> &mut V {
        debug_assert!(now >= self.now, "time went backwards");
        self.now = self.now.max(now);
        let now = self.now;
        if !self.until.contains_key(&key) && self.until.len() >= self.sweep_at {
            self.until.retain(|_, (at, _)| *at > now);
            self.sweep_at = (2 * self.until.len()).max(SWEEP_FLOOR);
        }
        match self.until.entry(key) {
            Entry::Occupied(e) => {
                let entry = e.into_mut();
                if entry.0 <= now {
                    *entry = (until, value);
                }
                &mut entry.1
            }
            Entry::Vacant(e) => &mut e.insert((until, value)).1,
        }
    }

    /// The keys held, expired or not (for tests of the bound).
    #[cfg(test)]
    fn held(&self) -> usize {
        self.until.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{Incarnation, NodeId};
    use proptest::prelude::*;
    use std::collections::{BTreeMap, VecDeque};

    /// The former representation, the reference: a queue in expiry order beside a
    /// set, expired keys dropped at every insertion.
    #[derive(Default)]
    struct Reference {
        expiry: VecDeque<(Time, ReqKey)>,
        keys: BTreeMap<ReqKey, u64>,
    }

    impl Reference {
        fn insert(&mut self, now: Time, key: ReqKey, until: Time, value: u64) {
            while let Some(&(at, old)) = self.expiry.front() {
                if at > now {
                    break;
                }
                self.expiry.pop_front();
                self.keys.remove(&old);
            }
            if let std::collections::btree_map::Entry::Vacant(e) = self.keys.entry(key) {
                e.insert(value);
                self.expiry.push_back((until, key));
            }
        }
    }

    fn key(seq: u64) -> ReqKey {
        ReqKey {
            requester: NodeId(seq as u32 % 3),
            incarnation: Incarnation(1),
            seq,
        }
    }

    proptest! {
        /// Inserting and asking in any order (keys from a small range, so that keys
        /// come back before and after they expire) answers as the reference does,
        /// and holds at most twice the most keys ever live.
        #[test]
        fn answers_as_the_queue_and_set_did(
            steps in proptest::collection::vec((0u64..40, 0u64..50, any::<bool>()), 1..400),
            retention_ms in 1u64..60,
        ) {
            let (mut keys, mut reference) = (RetainedKeys::<u64>::default(), Reference::default());
            let mut now = Time::ZERO;
            let mut most_live = 0usize;
            for (seq, advance_ms, insert) in steps {
                now = now + std::time::Duration::from_millis(advance_ms);
                let k = key(seq);
                if insert {
                    let until = now + std::time::Duration::from_millis(retention_ms);
                    keys.insert(now, k, until, seq);
                    reference.insert(now, k, until, seq);
                    most_live = most_live.max(reference.keys.len());
                    prop_assert!(keys.held() <= (2 * most_live).max(SWEEP_FLOOR));
                }
                for probe in 0..40 {
                    prop_assert_eq!(
                        keys.get(&key(probe)),
                        reference.keys.get(&key(probe)),
                        "key {} at {}", probe, now
                    );
                }
            }
        }
    }

    #[test]
    fn a_key_is_out_from_the_first_insertion_at_its_expiry() {
        let mut keys = RetainedKeys::<u64>::default();
        let t = Time::from_millis;
        keys.insert(t(0), key(1), t(10), 1);
        assert!(keys.contains(&key(1)));
        // Expiry is noticed only when something is inserted.
        keys.insert(t(5), key(2), t(15), 2);
        assert!(keys.contains(&key(1)));
        // Inserted again while present: keeps its first expiry.
        assert_eq!(*keys.insert(t(9), key(1), t(19), 9), 1);
        keys.insert(t(10), key(3), t(20), 3);
        assert!(!keys.contains(&key(1)));
        assert!(keys.contains(&key(2)));
        // Inserted again once expired: a new expiry.
        assert_eq!(*keys.insert(t(12), key(1), t(22), 12), 12);
        keys.insert(t(21), key(4), t(31), 4);
        assert!(keys.contains(&key(1)));
        assert!(!keys.contains(&key(2)));
    }
}
