//! A host's established registrations that its root has not yet confirmed holding.
//!
//! A host sends its registrations to its root when that root changes, on every
//! refresh, and when the root dropped one it still holds (`claim_again`). Each such
//! [`NamesMsg::Claim`](super::NamesMsg::Claim) carries a number that the root
//! echoes in a [`NamesMsg::Held`](super::NamesMsg::Held) once it has handled its
//! claims (kept them, or decided them by the heal rule). What is not confirmed goes
//! again after [`CLAIM_RETRY`], then after twice as long each time up to
//! [`CLAIM_TIMEOUT`], [`CONFIRM_TRIES`] times in all; the next refresh or root
//! change starts over. So one lost claim does not leave the root without a name its
//! host holds (and a contender holding it too) until the next refresh.
//!
//! Invariants: only established registrations are unconfirmed; at most
//! [`MAX_MINE`] messages are in flight; a resend is pending only while something is
//! unconfirmed.

use super::{Key, CLAIM_RETRY, CLAIM_TIMEOUT, MAX_MINE};
use crate::time::Time;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// How many times unconfirmed registrations go to one root before the host waits
/// for its next refresh (about 12 s with the backoff).
pub const CONFIRM_TRIES: u32 = 8;

/// The resend schedule of what is unconfirmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Resend {
    at: Time,
    /// The wait after this one.
    next_wait: Duration,
    /// Sends left after this one.
    tries_left: u32,
}

/// What this host's root has yet to confirm, and what is in flight to it.
#[derive(Debug, Default)]
pub(super) struct Confirming {
    /// Established registrations not yet confirmed.
    unconfirmed: BTreeSet<Key>,
    /// Whether the root has yet to confirm this agent's life (a later one than its
    /// first): every claim carries it.
    life: bool,
    /// The names each message in flight carried, by its number.
    in_flight: BTreeMap<u64, Vec<Key>>,
    /// The number of the next message.
    next: u64,
    resend: Option<Resend>,
}

impl Confirming {
    /// Starts over (a new root, or a refresh): `keys` and, with `life`, this
    /// agent's life are unconfirmed, to be sent now.
    pub(super) fn start(&mut self, now: Time, keys: impl IntoIterator<Item = Key>, life: bool) {
        self.unconfirmed = keys.into_iter().collect();
        self.life = life;
        self.in_flight.clear();
        self.resend = self.pending().then_some(Resend {
            at: now,
            next_wait: CLAIM_RETRY,
            tries_left: CONFIRM_TRIES - 1,
        });
    }

    /// `key` is unconfirmed (its root dropped it while this host holds it); it goes
    /// with the next resend, which comes within [`CLAIM_RETRY`] if none is pending.
    pub(super) fn add(&mut self, now: Time, key: Key) {
        self.unconfirmed.insert(key);
        if self.resend.is_none() {
            self.resend = Some(Resend {
                at: now + CLAIM_RETRY,
                next_wait: CLAIM_RETRY * 2,
                tries_left: CONFIRM_TRIES - 1,
            });
        }
    }

    /// `key` is no longer this host's.
    pub(super) fn forget(&mut self, key: &Key) {
        self.unconfirmed.remove(key);
        if !self.pending() {
            self.resend = None;
        }
    }

    /// When the unconfirmed go again.
    pub(super) fn deadline(&self) -> Option<Time> {
        self.resend.map(|r| r.at)
    }

    /// If the resend is due, what goes now, as messages of at most `batch` names,
    /// each with its number (one with none if only the life is unconfirmed).
    pub(super) fn due(&mut self, now: Time, batch: usize) -> Vec<(u64, Vec<Key>)> {
        let Some(r) = self.resend.filter(|r| r.at <= now) else {
            return Vec::new();
        };
        self.resend = (r.tries_left > 0 && self.pending()).then(|| Resend {
            at: now + r.next_wait,
            next_wait: (r.next_wait * 2).min(CLAIM_TIMEOUT),
            tries_left: r.tries_left - 1,
        });
        self.in_flight.clear();
        let keys: Vec<Key> = self.unconfirmed.iter().cloned().collect();
        let mut batches: Vec<Vec<Key>> = keys.chunks(batch).map(<[Key]>::to_vec).collect();
        if batches.is_empty() && self.life {
            batches.push(Vec::new());
        }
        batches
            .into_iter()
            .map(|keys| (self.number(keys.clone()), keys))
            .collect()
    }

    /// The number of one more message, carrying `key` alone, to go now (`None`: too
    /// many in flight; it goes with the next resend).
    pub(super) fn one(&mut self, key: &Key) -> Option<u64> {
        (self.in_flight.len() < MAX_MINE).then(|| self.number(vec![key.clone()]))
    }

    fn number(&mut self, keys: Vec<Key>) -> u64 {
        let n = self.next;
        self.next = self.next.wrapping_add(1);
        self.in_flight.insert(n, keys);
        n
    }

    /// The root confirmed message `n`: its names (and this agent's life) are held.
    pub(super) fn held(&mut self, n: u64) {
        let Some(keys) = self.in_flight.remove(&n) else {
            return;
        };
        for key in keys {
            self.unconfirmed.remove(&key);
        }
        self.life = false;
        if !self.pending() {
            self.in_flight.clear();
            self.resend = None;
        }
    }

    fn pending(&self) -> bool {
        self.life || !self.unconfirmed.is_empty()
    }

    /// Whether every unconfirmed key is one of this host's established
    /// registrations (`established`), and the bounds hold.
    pub(super) fn invariants(&self, established: impl Fn(&Key) -> bool) -> bool {
        self.unconfirmed.iter().all(established)
            && self.in_flight.len() <= MAX_MINE
            && self.resend.is_none_or(|_| self.pending())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::TenantId;

    fn key(n: u32) -> Key {
        (TenantId(1), format!("n{n}"))
    }

    #[test]
    fn what_is_confirmed_goes_no_more_and_the_rest_goes_in_batches() {
        let mut c = Confirming::default();
        c.start(Time::ZERO, (0..5).map(key), false);
        let sent = c.due(Time::ZERO, 2);
        assert_eq!(
            sent.iter().map(|(_, k)| k.len()).collect::<Vec<_>>(),
            [2, 2, 1]
        );
        c.held(sent[0].0);
        c.held(sent[0].0); // a duplicate of the confirmation changes nothing
        let again = c.deadline().expect("three names unconfirmed");
        assert_eq!(again, Time::ZERO + CLAIM_RETRY);
        let resent: Vec<Key> = c.due(again, 10).into_iter().flat_map(|(_, k)| k).collect();
        assert_eq!(resent, (2..5).map(key).collect::<Vec<_>>());
        // A confirmation of a message sent before the resend is stale.
        c.held(sent[1].0);
        assert!(c.deadline().is_some());
    }

    #[test]
    fn a_later_life_alone_goes_as_an_empty_message_until_confirmed() {
        let mut c = Confirming::default();
        c.start(Time::ZERO, [], true);
        let sent = c.due(Time::ZERO, 10);
        assert_eq!(sent.len(), 1);
        assert!(sent[0].1.is_empty());
        c.held(sent[0].0);
        assert_eq!(c.deadline(), None);
        // Nothing to confirm: nothing goes.
        c.start(Time::ZERO, [], false);
        assert_eq!(c.deadline(), None);
    }

    #[test]
    fn a_name_dropped_by_its_host_is_not_sent_and_ends_the_resends() {
        let mut c = Confirming::default();
        c.start(Time::ZERO, [key(1)], false);
        c.due(Time::ZERO, 10);
        c.forget(&key(1));
        assert_eq!(c.deadline(), None);
        assert!(c.invariants(|_| false));
        // A name claimed again later waits for one retry period.
        c.add(Time::from_secs(1), key(2));
        assert_eq!(c.deadline(), Some(Time::from_secs(1) + CLAIM_RETRY));
        assert!(c.one(&key(2)).is_some());
    }
}
