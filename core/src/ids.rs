//! Identifiers, re-exported from `nefele-api` (where clients see them), and the
//! [`PidMinter`] that only an agent uses.
//!
//! Invariant of the minter: a pid is minted from the triple `(node, incarnation,
//! sequence)`; the node id is unique in the cluster, the incarnation is bumped
//! (and persisted by the host) every time the agent starts, and the sequence only
//! grows within one incarnation, so no two calls anywhere return the same pid.

pub use nefele_api::ids::{Incarnation, NodeId, ParsePidError, Pid, TenantId};

/// Mints pids for one agent incarnation. The sequence starts at 1 and only grows.
#[derive(Debug, Clone)]
pub struct PidMinter {
    origin: NodeId,
    incarnation: Incarnation,
    next_sequence: u64,
}

impl PidMinter {
    /// A minter for `origin` in `incarnation`.
    #[must_use]
    pub fn new(origin: NodeId, incarnation: Incarnation) -> Self {
        PidMinter {
            origin,
            incarnation,
            next_sequence: 1,
        }
    }

    /// A pid no other call, agent or incarnation has returned.
    pub fn mint(&mut self) -> Pid {
        let pid = Pid::new(self.origin, self.incarnation, self.next_sequence);
        self.next_sequence += 1;
        pid
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn pids_are_unique_across_nodes_and_incarnations() {
        let mut seen = BTreeSet::new();
        for node in 0..4 {
            for inc in 0..3 {
                let mut minter = PidMinter::new(NodeId(node), Incarnation(inc));
                for _ in 0..100 {
                    assert!(seen.insert(minter.mint()));
                }
            }
        }
    }
}
