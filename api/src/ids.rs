//! Identifiers: agents ([`NodeId`]), agent lives ([`Incarnation`]), tenants
//! ([`TenantId`]) and global process ids ([`Pid`]).
//!
//! Invariant: a [`Pid`] is unique in the whole cluster without any coordination
//! and is never reused. It is minted by one agent from the triple
//! `(node, incarnation, sequence)`: the node id is unique in the cluster, the
//! incarnation is bumped every time that agent starts (and persisted by the host
//! before the agent mints anything), and the sequence only grows within one
//! incarnation. Users treat a pid as an opaque token; its text form is a hex
//! number that round-trips through [`Pid::from_str`](std::str::FromStr).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// One agent (one server) of the cluster.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct NodeId(pub u32);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

/// One life of an agent: bumped on every restart, so that messages and pids of
/// an earlier life can be told apart from the current one.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub struct Incarnation(pub u32);

impl Incarnation {
    /// The incarnation that follows this one.
    #[must_use]
    pub fn next(self) -> Self {
        Incarnation(self.0.wrapping_add(1))
    }
}

impl fmt::Display for Incarnation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "i{}", self.0)
    }
}

/// A tenant: the unit of isolation. A tenant sees only its own processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TenantId(pub u32);

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t{}", self.0)
    }
}

/// A global process id: opaque to users, unique without coordination, never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Pid(u128);

impl Pid {
    /// The lowest pid (for ranges).
    pub const MIN: Pid = Pid(0);
    /// The highest pid (for ranges).
    pub const MAX: Pid = Pid(u128::MAX);

    /// Mints the pid for the `sequence`-th process created by `origin` in its `incarnation`.
    #[must_use]
    pub fn new(origin: NodeId, incarnation: Incarnation, sequence: u64) -> Self {
        Pid((u128::from(sequence) << 64) | (u128::from(incarnation.0) << 32) | u128::from(origin.0))
    }

    /// The agent that minted this pid.
    #[must_use]
    pub fn origin(self) -> NodeId {
        NodeId(self.0 as u32)
    }

    /// The incarnation of the agent that minted this pid.
    #[must_use]
    pub fn incarnation(self) -> Incarnation {
        Incarnation((self.0 >> 32) as u32)
    }

    /// The position of this pid in its minter's sequence.
    #[must_use]
    pub fn sequence(self) -> u64 {
        (self.0 >> 64) as u64
    }
}

impl fmt::Display for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

/// The text was not a pid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a pid: {0:?} (expected up to 32 hex digits)")]
pub struct ParsePidError(String);

impl FromStr for Pid {
    type Err = ParsePidError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || s.len() > 32 {
            return Err(ParsePidError(s.to_owned()));
        }
        u128::from_str_radix(s, 16)
            .map(Pid)
            .map_err(|_| ParsePidError(s.to_owned()))
    }
}

/// `Arbitrary` for the ids (the `arbitrary` feature, for the fuzz targets): mostly
/// small values, so that the ids a fuzzer makes up collide with one another and with
/// those of the agent under test (its own node, its peers, the pids it minted, the
/// tenants it serves); now and then any value.
#[cfg(feature = "arbitrary")]
mod fuzzing {
    use super::{Incarnation, NodeId, Pid, TenantId};
    use arbitrary::{Arbitrary, Result, Unstructured};

    /// Below `small` seven times in eight, else any value.
    fn small_or_any(u: &mut Unstructured<'_>, small: u8) -> Result<u64> {
        let b = u8::arbitrary(u)?;
        if b < 224 {
            Ok(u64::from(b % small))
        } else {
            u64::arbitrary(u)
        }
    }

    fn small_u32(u: &mut Unstructured<'_>, small: u8) -> Result<u32> {
        // A value past `u32::MAX` keeps its low bits: still any `u32`.
        Ok(small_or_any(u, small)? as u32)
    }

    impl<'a> Arbitrary<'a> for NodeId {
        fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
            small_u32(u, 8).map(NodeId)
        }
    }

    impl<'a> Arbitrary<'a> for Incarnation {
        fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
            small_u32(u, 4).map(Incarnation)
        }
    }

    impl<'a> Arbitrary<'a> for TenantId {
        fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
            small_u32(u, 4).map(TenantId)
        }
    }

    impl<'a> Arbitrary<'a> for Pid {
        fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
            let origin = NodeId::arbitrary(u)?;
            let incarnation = Incarnation::arbitrary(u)?;
            Ok(Pid::new(origin, incarnation, small_or_any(u, 16)?))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_fields_round_trip() {
        let pid = Pid::new(NodeId(7), Incarnation(3), 42);
        assert_eq!(pid.origin(), NodeId(7));
        assert_eq!(pid.incarnation(), Incarnation(3));
        assert_eq!(pid.sequence(), 42);
        assert_eq!(pid.to_string().parse::<Pid>(), Ok(pid));
    }

    #[test]
    fn bad_pid_text_is_rejected() {
        assert!("".parse::<Pid>().is_err());
        assert!("xyz".parse::<Pid>().is_err());
        assert!("1".repeat(33).parse::<Pid>().is_err());
    }
}
