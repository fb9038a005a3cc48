//! The waits registered at this host on its processes: who is told, under which
//! token, when a process exits.
//!
//! Invariants: a `(asker, token)` pair is registered at most once per pid; every
//! other agent has at most [`MAX_WAITS_PER_PEER`] waits registered here at once
//! (issue 16: any peer holding the cluster key could otherwise register waits
//! with made-up tokens until the processes exit, and grow this host's memory
//! without bound). This agent's own clients' waits are not counted: the API
//! server bounds their calls. A wait over the bound is not registered and not
//! answered, so the asker's call ends as unreachable after its retries.

use crate::ids::{NodeId, Pid};
use std::collections::BTreeMap;

/// The most waits one other agent may have registered at this host at once: far
/// more than the clients of one agent wait on one host's processes.
pub(crate) const MAX_WAITS_PER_PEER: usize = 16_384;

/// The waits on this host's processes.
#[derive(Debug, Default)]
pub(super) struct Waiters {
    by_pid: BTreeMap<Pid, Vec<(NodeId, u64)>>,
    /// How many waits each other agent has registered (absent: none).
    per_peer: BTreeMap<NodeId, usize>,
}

impl Waiters {
    /// Registers `asker`'s wait `token` on `pid` (`me` is this agent); returns
    /// whether it is registered (newly or already).
    pub(super) fn add(&mut self, me: NodeId, pid: Pid, asker: NodeId, token: u64) -> bool {
        let w = self.by_pid.entry(pid).or_default();
        if w.contains(&(asker, token)) {
            return true;
        }
        if asker != me {
            let n = self.per_peer.entry(asker).or_default();
            if *n >= MAX_WAITS_PER_PEER {
                if w.is_empty() {
                    self.by_pid.remove(&pid);
                }
                return false;
            }
            *n += 1;
        }
        w.push((asker, token));
        true
    }

    /// Forgets and returns every wait on `pid`.
    pub(super) fn take(&mut self, me: NodeId, pid: Pid) -> Vec<(NodeId, u64)> {
        let waits = self.by_pid.remove(&pid).unwrap_or_default();
        for (asker, _) in waits.iter().filter(|(a, _)| *a != me) {
            self.uncount(*asker);
        }
        waits
    }

    /// Forgets `asker`'s wait `token` on `pid`, if registered.
    pub(super) fn remove(&mut self, me: NodeId, pid: Pid, asker: NodeId, token: u64) {
        let Some(w) = self.by_pid.get_mut(&pid) else {
            return;
        };
        let before = w.len();
        w.retain(|x| *x != (asker, token));
        let removed = w.len() < before;
        if w.is_empty() {
            self.by_pid.remove(&pid);
        }
        if removed && asker != me {
            self.uncount(asker);
        }
    }

    fn uncount(&mut self, asker: NodeId) {
        if let Some(n) = self.per_peer.get_mut(&asker) {
            *n -= 1;
            if *n == 0 {
                self.per_peer.remove(&asker);
            }
        }
    }

    /// Whether the per-peer counts match the registered waits (a test's check: it
    /// walks every wait).
    #[cfg(test)]
    fn consistent(&self, me: NodeId) -> bool {
        let mut counted: BTreeMap<NodeId, usize> = BTreeMap::new();
        for (asker, _) in self.by_pid.values().flatten().filter(|(a, _)| *a != me) {
            *counted.entry(*asker).or_default() += 1;
        }
        counted == self.per_peer && self.by_pid.values().all(|w| !w.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::Incarnation;

    const ME: NodeId = NodeId(1);

    fn pid(n: u64) -> Pid {
        Pid::new(ME, Incarnation(1), n)
    }

    #[test]
    fn one_peer_is_bounded_and_its_room_comes_back_as_waits_end() {
        let mut w = Waiters::default();
        let (bad, good) = (NodeId(6), NodeId(7));
        for token in 0..MAX_WAITS_PER_PEER as u64 {
            assert!(w.add(ME, pid(token % 3), bad, token));
        }
        assert!(!w.add(ME, pid(0), bad, u64::MAX), "over the bound");
        assert!(!w.add(ME, pid(9), bad, u64::MAX), "on any pid");
        assert!(w.add(ME, pid(0), bad, 0), "a repeat is no new wait");
        assert!(w.add(ME, pid(0), good, 1), "another peer is not affected");
        assert!(w.add(ME, pid(0), ME, 1), "nor this agent's own clients");
        assert!(w.consistent(ME));
        // An exit frees its waits; an unwait frees its one.
        let freed = w.take(ME, pid(0));
        assert_eq!(freed.len(), MAX_WAITS_PER_PEER.div_ceil(3) + 2);
        w.remove(ME, pid(1), bad, 1);
        w.remove(ME, pid(1), bad, 1);
        w.remove(ME, pid(1), good, 1);
        assert!(w.consistent(ME));
        assert!(w.add(ME, pid(9), bad, u64::MAX));
        assert!(w.take(ME, pid(9)).len() == 1 && w.consistent(ME));
        assert!(!w.by_pid.contains_key(&pid(9)));
    }
}
