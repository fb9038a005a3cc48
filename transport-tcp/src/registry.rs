//! The peer table: the address book, each peer's send queue, its current
//! connection and its dialer, and the tie-break that keeps one connection
//! per peer pair.
//!
//! Tie-break ([`decide`]): a connection dialed by the lower id of the pair is
//! *preferred*. A new authenticated connection replaces the current one
//! unless the current one is preferred and the new one is not. Both ends
//! apply the same rule to the same facts, so when both dial at once they keep
//! the same connection (the lower id's), and a restarted peer's new connection
//! replaces the stale one of its previous life. To spare the driver a
//! `PeerUp`/`PeerDown` flap when both dial at once, the lower id also refuses
//! the higher id's connection while its own (preferred) dial has reached the
//! peer and is in its handshake, and the higher id's dialer gives the lower
//! id a head start (see [`crate::dialer`]).
//!
//! Invariants: a peer has at most one current connection, and its queue's
//! owner is that connection's id (or none); connection ids are never reused;
//! a peer without an address is in the table only while it is connected.
//! The table is ordered (a `BTreeMap`), so a broadcast visits peers in the
//! same order on every run.

use crate::queue::{ConnId, SendQueue};
use nefele_core::NodeId;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::Notify;
use tokio::task::AbortHandle;

/// What to do with a newly authenticated connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// No current connection: the new one becomes current.
    Install,
    /// The new one becomes current and the old one is closed.
    Replace,
    /// The current connection is preferred: the new one is closed.
    Duplicate,
}

/// The tie-break between the current connection (dialed by `current_dialer`,
/// if any) and a new one dialed by `new_dialer`, for the pair `me`–`peer`;
/// `handshaking` says whether `me` has its own dial to `peer` in the handshake.
pub(crate) fn decide(
    me: NodeId,
    peer: NodeId,
    current_dialer: Option<NodeId>,
    handshaking: bool,
    new_dialer: NodeId,
) -> Decision {
    let preferred = me.min(peer);
    let new_is_preferred = new_dialer == preferred;
    match current_dialer {
        None if !new_is_preferred && handshaking && me == preferred => Decision::Duplicate,
        None => Decision::Install,
        Some(current) if current == preferred && !new_is_preferred => Decision::Duplicate,
        Some(_) => Decision::Replace,
    }
}

/// A peer's current connection.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) id: ConnId,
    pub(crate) info: ConnectionInfo,
    pub(crate) task: Option<AbortHandle>,
}

/// Facts about an established connection, for status and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// The node that dialed the connection.
    pub dialer: NodeId,
    /// This end's socket address.
    pub local_addr: SocketAddr,
    /// The peer's socket address.
    pub peer_addr: SocketAddr,
}

/// A peer's dialer task and the signal that wakes it.
#[derive(Debug)]
pub(crate) struct Dialer {
    pub(crate) wake: Arc<Notify>,
    pub(crate) task: AbortHandle,
}

#[derive(Debug)]
pub(crate) struct Peer {
    pub(crate) addr: Option<SocketAddr>,
    pub(crate) queue: Arc<SendQueue>,
    pub(crate) conn: Option<Conn>,
    pub(crate) dialer: Option<Dialer>,
    /// This node's dial to the peer is connected and in its handshake.
    pub(crate) handshaking: bool,
}

impl Peer {
    fn new(addr: Option<SocketAddr>, queue: SendQueue) -> Self {
        Peer {
            addr,
            queue: Arc::new(queue),
            conn: None,
            dialer: None,
            handshaking: false,
        }
    }

    /// Wakes the dialer to look at the peer again (disconnected, address changed, removed).
    pub(crate) fn wake_dialer(&self) {
        if let Some(dialer) = &self.dialer {
            dialer.wake.notify_one();
        }
    }

    /// Stops this peer's tasks and refuses further frames.
    pub(crate) fn shut(&mut self) {
        self.queue.close();
        if let Some(conn) = self.conn.take() {
            if let Some(task) = conn.task {
                task.abort();
            }
        }
        if let Some(dialer) = self.dialer.take() {
            dialer.task.abort();
        }
    }
}

/// The table of peers; lives behind the transport's lock.
#[derive(Debug)]
pub(crate) struct Registry {
    pub(crate) me: NodeId,
    pub(crate) peers: BTreeMap<NodeId, Peer>,
    next_conn: ConnId,
    queue_bytes: usize,
    max_frame: usize,
    /// Set when the transport is dropped: nothing is admitted any more.
    pub(crate) closed: bool,
}

impl Registry {
    pub(crate) fn new(me: NodeId, queue_bytes: usize, max_frame: usize) -> Self {
        Registry {
            me,
            peers: BTreeMap::new(),
            next_conn: 1,
            queue_bytes,
            max_frame,
            closed: false,
        }
    }

    /// The entry of `peer`, created (without an address) if absent.
    pub(crate) fn entry(&mut self, peer: NodeId) -> &mut Peer {
        let (queue_bytes, max_frame) = (self.queue_bytes, self.max_frame);
        self.peers
            .entry(peer)
            .or_insert_with(|| Peer::new(None, SendQueue::new(queue_bytes, max_frame)))
    }

    /// A fresh connection id.
    pub(crate) fn next_conn_id(&mut self) -> ConnId {
        let id = self.next_conn;
        self.next_conn += 1;
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: NodeId = NodeId(1);
    const B: NodeId = NodeId(2);

    #[test]
    fn the_first_connection_is_installed() {
        assert_eq!(decide(A, B, None, false, A), Decision::Install);
        assert_eq!(decide(A, B, None, false, B), Decision::Install);
        assert_eq!(decide(B, A, None, false, B), Decision::Install);
        // The higher id's own dial never holds back the preferred one.
        assert_eq!(decide(B, A, None, true, A), Decision::Install);
    }

    #[test]
    fn both_ends_keep_the_lower_ids_connection() {
        // A (lower) holds its outbound; B's dial arrives: refused at A.
        assert_eq!(decide(A, B, Some(A), false, B), Decision::Duplicate);
        // A's dial is in its handshake; B's dial arrives: refused at A.
        assert_eq!(decide(A, B, None, true, B), Decision::Duplicate);
        // B holds its own outbound; A's arrives: it replaces B's.
        assert_eq!(decide(B, A, Some(B), false, A), Decision::Replace);
        // B holds A's connection; its own dial completes late: refused at B.
        assert_eq!(decide(B, A, Some(A), false, B), Decision::Duplicate);
    }

    #[test]
    fn a_restarted_peers_new_connection_replaces_the_stale_one() {
        assert_eq!(decide(B, A, Some(A), false, A), Decision::Replace);
        assert_eq!(decide(A, B, Some(B), false, B), Decision::Replace);
    }
}
