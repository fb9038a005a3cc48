//! A small table of named timers owned by a state machine.
//!
//! Each key has at most one deadline; setting it again moves it, cancelling
//! removes it. The owner asks for [`TimerTable::next_deadline`] and, when
//! called with `now`, takes the expired keys one by one with
//! [`TimerTable::pop_expired`]. A timer that was moved or cancelled can never
//! fire late: there are no sleeping tasks, only values.

use crate::time::Time;
use std::collections::{BTreeMap, BTreeSet};

/// Deadlines by key; `K`'s order breaks ties between equal deadlines.
#[derive(Debug, Clone)]
pub struct TimerTable<K: Ord + Clone> {
    by_key: BTreeMap<K, Time>,
    by_deadline: BTreeSet<(Time, K)>,
}

impl<K: Ord + Clone> Default for TimerTable<K> {
    fn default() -> Self {
        TimerTable {
            by_key: BTreeMap::new(),
            by_deadline: BTreeSet::new(),
        }
    }
}

impl<K: Ord + Clone> TimerTable<K> {
    /// Sets (or moves) the timer `key` to fire at `deadline`.
    pub fn set(&mut self, key: K, deadline: Time) {
        if let Some(old) = self.by_key.insert(key.clone(), deadline) {
            self.by_deadline.remove(&(old, key.clone()));
        }
        self.by_deadline.insert((deadline, key));
    }

    /// Cancels the timer `key`, if set.
    pub fn cancel(&mut self, key: &K) {
        if let Some(old) = self.by_key.remove(key) {
            self.by_deadline.remove(&(old, key.clone()));
        }
    }

    /// The deadline of `key`, if set.
    #[must_use]
    pub fn deadline(&self, key: &K) -> Option<Time> {
        self.by_key.get(key).copied()
    }

    /// The earliest deadline of all timers.
    #[must_use]
    pub fn next_deadline(&self) -> Option<Time> {
        self.by_deadline.first().map(|(t, _)| *t)
    }

    /// Removes and returns the earliest timer whose deadline is at or before `now`.
    pub fn pop_expired(&mut self, now: Time) -> Option<K> {
        let (deadline, _) = self.by_deadline.first()?;
        if *deadline > now {
            return None;
        }
        let (_, key) = self.by_deadline.pop_first()?;
        self.by_key.remove(&key);
        Some(key)
    }

    /// The number of timers set.
    #[must_use]
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether no timer is set.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_in_deadline_order_and_moves() {
        let mut t = TimerTable::default();
        t.set("b", Time::from_secs(2));
        t.set("a", Time::from_secs(3));
        t.set("a", Time::from_secs(1)); // moved earlier
        assert_eq!(t.len(), 2);
        assert_eq!(t.next_deadline(), Some(Time::from_secs(1)));
        assert_eq!(t.pop_expired(Time::from_millis(500)), None);
        assert_eq!(t.pop_expired(Time::from_secs(5)), Some("a"));
        assert_eq!(t.pop_expired(Time::from_secs(5)), Some("b"));
        assert!(t.is_empty());
    }

    #[test]
    fn cancelled_timer_never_fires() {
        let mut t = TimerTable::default();
        t.set(1, Time::from_secs(1));
        t.cancel(&1);
        assert_eq!(t.pop_expired(Time::NEVER), None);
        assert_eq!(t.deadline(&1), None);
    }
}
