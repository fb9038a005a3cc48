//! What a member knows of take-overs in its group (see "Take-overs are told to
//! the group" in the module doc of [`super`]).
//!
//! A keeper takes a supervisor over because most of its home's quorum base is in
//! its group. Those members must then not confirm the old home as its quorum: a
//! heal may give the home most of its base again (its own side and the members
//! the take-over counted), and it would go on beside its taker. So the new home
//! tells the members of its group of the take-over ([`super::SupervisionMsg::TakenOver`]),
//! and each remembers it here for `hold`: when the old home asks it to confirm,
//! its answer tells the home to step down from that supervisor first.
//!
//! Invariants: at most [`MAX_TAKEN`] entries (the oldest goes first); one entry
//! per supervisor, the latest take-over's.

use crate::ids::NodeId;
use crate::time::Time;
use nefele_api::supervision::SupervisorId;
use std::collections::BTreeMap;
use std::time::Duration;

/// The most take-overs a member remembers at once.
pub(super) const MAX_TAKEN: usize = 1024;

/// One take-over heard of: from which home, at which take-over epoch, and when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct TakeOver {
    home: NodeId,
    epoch: u32,
    heard: Time,
}

/// The take-overs in this agent's group in the last `hold`.
#[derive(Debug, Default)]
pub(super) struct Taken {
    by_sup: BTreeMap<SupervisorId, TakeOver>,
}

impl Taken {
    /// `sup` was taken over from `home` at take-over `epoch`; an older take-over
    /// of it is replaced, a newer one kept.
    pub(super) fn note(&mut self, now: Time, sup: SupervisorId, home: NodeId, epoch: u32) {
        if self.by_sup.get(&sup).is_some_and(|t| t.epoch > epoch) {
            return;
        }
        if !self.by_sup.contains_key(&sup) && self.by_sup.len() >= MAX_TAKEN {
            let oldest = self
                .by_sup
                .iter()
                .min_by_key(|(_, t)| t.heard)
                .map(|(s, _)| *s);
            if let Some(oldest) = oldest {
                self.by_sup.remove(&oldest);
            }
        }
        let heard = now;
        self.by_sup.insert(sup, TakeOver { home, epoch, heard });
    }

    /// The supervisors taken over from `home`, with their take-over epochs.
    pub(super) fn of_home(&self, home: NodeId) -> impl Iterator<Item = (SupervisorId, u32)> + '_ {
        self.by_sup
            .iter()
            .filter(move |(_, t)| t.home == home)
            .map(|(s, t)| (*s, t.epoch))
    }

    /// Forgets the take-overs heard `hold` ago or earlier.
    pub(super) fn expire(&mut self, now: Time, hold: Duration) {
        self.by_sup
            .retain(|_, t| now.saturating_since(t.heard) < hold);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::Incarnation;

    fn sup(sequence: u32) -> SupervisorId {
        SupervisorId {
            origin: NodeId(1),
            incarnation: Incarnation(1),
            sequence,
        }
    }

    #[test]
    fn the_latest_take_over_of_a_supervisor_is_kept() {
        let mut taken = Taken::default();
        taken.note(Time::ZERO, sup(0), NodeId(1), 2);
        taken.note(Time::ZERO, sup(0), NodeId(2), 1);
        assert_eq!(taken.of_home(NodeId(1)).collect::<Vec<_>>(), [(sup(0), 2)]);
        assert_eq!(
            taken.of_home(NodeId(2)).count(),
            0,
            "an older one is ignored"
        );
        taken.note(Time::ZERO, sup(0), NodeId(3), 3);
        assert_eq!(
            taken.of_home(NodeId(1)).count(),
            0,
            "a newer one replaces it"
        );
        assert_eq!(taken.of_home(NodeId(3)).collect::<Vec<_>>(), [(sup(0), 3)]);
    }

    #[test]
    fn take_overs_are_forgotten_after_hold_and_bounded() {
        let hold = Duration::from_secs(30);
        let mut taken = Taken::default();
        for i in 0..=MAX_TAKEN as u32 {
            taken.note(Time::from_millis(u64::from(i)), sup(i), NodeId(1), 1);
        }
        assert_eq!(taken.of_home(NodeId(1)).count(), MAX_TAKEN);
        assert!(
            taken.of_home(NodeId(1)).all(|(s, _)| s != sup(0)),
            "the oldest went first"
        );
        taken.expire(Time::from_millis(500) + hold, hold);
        assert_eq!(taken.of_home(NodeId(1)).count(), MAX_TAKEN + 1 - 501);
    }
}
