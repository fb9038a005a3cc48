//! The boundary check of peer input: every decoded [`Envelope`] is validated before
//! any service sees it.
//!
//! This module owns [`Reject`], the typed reason a message is refused, and the bounds
//! shared by every service ([`MAX_LEVEL`], [`MAX_EPOCH`], [`MAX_PEER_DURATION`]).
//! Each service owns the check of its own message type (`DiscoveryMsg::validate`,
//! `FedMsg::validate`, and each tree-riding service's `Service::validate_msg`, in
//! their modules); [`Envelope::validate`] only dispatches, through
//! `Message::validate`, which the service registry generates.
//!
//! Invariants: validation is pure (it reads the message and nothing else, so it is
//! deterministic and changes no state); a message that passes has every count, level,
//! epoch, list length and duration within the bounds below, so that the arithmetic a
//! service does on them cannot overflow; every bound is far above what a well-behaved
//! peer of this build ever sends, so a healthy cluster rejects nothing. A rejected
//! message is dropped whole: no service sees it and no state changes (the agent only
//! reports it as a notice).

use super::Envelope;
use std::time::Duration;

/// The highest level a peer may name. Groups hold at least two members, so a
/// hierarchy of `N` agents is at most `log2(N) + 1` levels deep: 33 levels (0..=32)
/// cover every cluster a `u32` node id can number. `MAX_LEVEL + 1` still fits a
/// [`Level`](crate::federation::Level), so a service may always step one level up.
pub const MAX_LEVEL: u8 = 32;

/// The largest view epoch a peer may send: 2^48, far beyond any count of changes a
/// group can go through, so that `epoch + 1` never overflows.
pub const MAX_EPOCH: u64 = 1 << 48;

/// The longest duration a peer may send (a process age, an expected run time): 100
/// years, far beyond any real process life, and well within the nanosecond range of a
/// [`Time`](crate::time::Time), so adding one to a time or to another can overflow no
/// `u64` of nanoseconds.
pub const MAX_PEER_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Why a message from a peer is refused. Its effect is always the same: the message is
/// dropped before any service sees it, no state changes, and the agent reports the
/// reject as [`Notice::Rejected`](crate::agent::Notice::Rejected).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    /// A level above [`MAX_LEVEL`].
    #[error("{what}: level {level} above {max}")]
    Level {
        /// What carried the level.
        what: &'static str,
        /// The level sent.
        level: u8,
        /// The highest accepted.
        max: u8,
    },
    /// A view epoch above [`MAX_EPOCH`].
    #[error("view epoch above {MAX_EPOCH}")]
    Epoch,
    /// A list longer than its bound.
    #[error("{what}: {len} entries, the most is {max}")]
    TooMany {
        /// The list.
        what: &'static str,
        /// Its length.
        len: usize,
        /// Its bound.
        max: usize,
    },
    /// A duration above [`MAX_PEER_DURATION`].
    #[error("{what}: duration above the bound")]
    Duration {
        /// What carried the duration.
        what: &'static str,
    },
    /// A value that breaks its type's invariant (e.g. a view whose members are not
    /// sorted, or whose leader is not a member).
    #[error("{what}: malformed")]
    Malformed {
        /// What was malformed.
        what: &'static str,
    },
    /// The sender's incarnation is older than one already heard from the same node:
    /// the message is from an earlier life of the sender.
    #[error("from an older incarnation of the sender")]
    StaleIncarnation,
}

impl Reject {
    /// A short, stable name of the reason, for statistics and logs.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Reject::Level { .. } => "level",
            Reject::Epoch => "epoch",
            Reject::TooMany { .. } => "too_many",
            Reject::Duration { .. } => "duration",
            Reject::Malformed { .. } => "malformed",
            Reject::StaleIncarnation => "stale_incarnation",
        }
    }
}

impl Envelope {
    /// Checks the message against the bounds of its service (see the module docs).
    /// The sender's incarnation is checked by the agent, which remembers lives.
    pub fn validate(&self) -> Result<(), Reject> {
        self.body.validate()
    }
}

/// `Ok` if `len <= max`, else [`Reject::TooMany`].
pub(crate) fn check_len(what: &'static str, len: usize, max: usize) -> Result<(), Reject> {
    if len > max {
        return Err(Reject::TooMany { what, len, max });
    }
    Ok(())
}

/// `Ok` if `level <= MAX_LEVEL`, else [`Reject::Level`].
pub(crate) fn check_level(what: &'static str, level: u8) -> Result<(), Reject> {
    if level > MAX_LEVEL {
        return Err(Reject::Level {
            what,
            level,
            max: MAX_LEVEL,
        });
    }
    Ok(())
}

/// `Ok` if `epoch <= MAX_EPOCH`, else [`Reject::Epoch`].
pub(crate) fn check_epoch(epoch: u64) -> Result<(), Reject> {
    if epoch > MAX_EPOCH {
        return Err(Reject::Epoch);
    }
    Ok(())
}

/// `Ok` if `d <= MAX_PEER_DURATION`, else [`Reject::Duration`].
pub(crate) fn check_duration(what: &'static str, d: Duration) -> Result<(), Reject> {
    if d > MAX_PEER_DURATION {
        return Err(Reject::Duration { what });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::DiscoveryMsg;
    use crate::ids::{Incarnation, NodeId};

    #[test]
    fn bounds_leave_room_for_one_more_step() {
        assert!(MAX_LEVEL.checked_add(1).is_some());
        assert!(MAX_EPOCH.checked_add(1).is_some());
        assert!(u64::try_from(MAX_PEER_DURATION.as_nanos()).unwrap() < u64::MAX / 2);
    }

    #[test]
    fn an_envelope_dispatches_to_its_service() {
        let env = Envelope {
            from: NodeId(1),
            incarnation: Incarnation(1),
            body: crate::wire::Message::Discovery(DiscoveryMsg::Hello {
                peers: vec![NodeId(2); 100_000],
            }),
        };
        assert!(matches!(
            env.validate(),
            Err(Reject::TooMany {
                what: "hello.peers",
                len: 100_000,
                ..
            })
        ));
    }
}
