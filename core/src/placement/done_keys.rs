//! A set of request keys each kept for the same while (`exit_retention`): the
//! requests a host has finished with (a late or duplicated `Create` does nothing)
//! and the requests it offered room to (only these may create processes).
//!
//! Owns one map from key to expiry. A key is in the set from its insertion until
//! the first insertion (of any key) at or after its expiry: expiry is noticed only
//! when a key is inserted, exactly as when expired keys were dropped at every
//! insertion from a queue kept in expiry order. Here an expired key stays in the
//! map, counted out by `contains`, until a sweep: the map is swept when it has
//! doubled since the last one, so that each insertion touches the map once (a
//! queue beside a set touched four cold places per insertion, a tenth of an
//! `OfferReq` at 10,000 hosts). A key inserted again while present keeps its first
//! expiry.
//!
//! Invariants: `now` never goes back; at most twice as many keys are held as were
//! live at the last sweep (or [`SWEEP_FLOOR`]), so never more than twice the most
//! ever live at once.

use super::msg::ReqKey;
use crate::time::Time;
use std::collections::BTreeMap;

/// The map is never swept below this many keys.
const SWEEP_FLOOR: usize = 64;

/// Request keys, each until its expiry (see the module docs).
#[derive(Debug, Default)]
pub(super) struct DoneKeys {
    /// Key → expiry; an entry expired at `now` is out of the set.
    until: BTreeMap<ReqKey, Time>,
    /// The time of the last insertion.
    now: Time,
    /// The size at which the map is swept next.
    sweep_at: usize,
}

impl DoneKeys {
    /// Whether `key` is in the set.
    pub(super) fn contains(&self, key: &ReqKey) -> bool {
        self.until.get(key).is_some_and(|&at| at > self.now)
    }

    /// Adds `key` until `until`, expiring the keys due at `now`.
    pub(super) fn insert(&mut self, now: Time, key: ReqKey, until: Time) {
        debug_assert!(now >= self.now, "time went backwards");
        self.now = self.now.max(now);
        let now = self.now;
        match self.until.get_mut(&key) {
            Some(at) if *at > now => {}
            Some(at) => *at = until,
            None => {
                if self.until.len() >= self.sweep_at {
                    self.until.retain(|_, at| *at > now);
                    self.sweep_at = (2 * self.until.len()).max(SWEEP_FLOOR);
                }
                self.until.insert(key, until);
            }
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
    use std::collections::{BTreeSet, VecDeque};

    /// The former representation, the reference: a queue in expiry order beside a
    /// set, expired keys dropped at every insertion.
    #[derive(Default)]
    struct Reference {
        expiry: VecDeque<(Time, ReqKey)>,
        keys: BTreeSet<ReqKey>,
    }

    impl Reference {
        fn insert(&mut self, now: Time, key: ReqKey, until: Time) {
            while let Some(&(at, old)) = self.expiry.front() {
                if at > now {
                    break;
                }
                self.expiry.pop_front();
                self.keys.remove(&old);
            }
            if self.keys.insert(key) {
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
            let (mut keys, mut reference) = (DoneKeys::default(), Reference::default());
            let mut now = Time::ZERO;
            let mut most_live = 0usize;
            for (seq, advance_ms, insert) in steps {
                now = now + std::time::Duration::from_millis(advance_ms);
                let k = key(seq);
                if insert {
                    let until = now + std::time::Duration::from_millis(retention_ms);
                    keys.insert(now, k, until);
                    reference.insert(now, k, until);
                    most_live = most_live.max(reference.keys.len());
                    prop_assert!(keys.held() <= (2 * most_live).max(SWEEP_FLOOR));
                }
                for probe in 0..40 {
                    prop_assert_eq!(
                        keys.contains(&key(probe)),
                        reference.keys.contains(&key(probe)),
                        "key {} at {}", probe, now
                    );
                }
            }
        }
    }

    #[test]
    fn a_key_is_out_from_the_first_insertion_at_its_expiry() {
        let mut keys = DoneKeys::default();
        let t = Time::from_millis;
        keys.insert(t(0), key(1), t(10));
        assert!(keys.contains(&key(1)));
        // Expiry is noticed only when something is inserted.
        keys.insert(t(5), key(2), t(15));
        assert!(keys.contains(&key(1)));
        // Inserted again while present: keeps its first expiry.
        keys.insert(t(9), key(1), t(19));
        keys.insert(t(10), key(3), t(20));
        assert!(!keys.contains(&key(1)));
        assert!(keys.contains(&key(2)));
        // Inserted again once expired: a new expiry.
        keys.insert(t(12), key(1), t(22));
        keys.insert(t(21), key(4), t(31));
        assert!(keys.contains(&key(1)));
        assert!(!keys.contains(&key(2)));
    }
}
