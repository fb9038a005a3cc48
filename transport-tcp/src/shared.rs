//! The state the transport handle and its tasks share, and the steps every
//! connection goes through whichever side dialed: admission (the tie-break),
//! running, and the end.
//!
//! Invariants: a `PeerUp` is pushed when a connection becomes current, before
//! any of its frames; a `PeerDown` when the current connection ends or is
//! replaced, after its frames; a connection that is not current any more
//! cannot take frames from the queue (see [`crate::queue`]) and its task is
//! aborted. Lock order: the registry lock, then a queue or inbox lock, never
//! the reverse.

use crate::auth::{Secrets, SessionKeys};
use crate::backoff::BackoffConfig;
use crate::connection::{Connection, ConnectionError, Ended};
use crate::inbox::Inbox;
use crate::queue::{ConnId, SendQueue};
use crate::registry::{decide, Conn, ConnectionInfo, Decision, Registry};
use nefele_core::{NodeId, TransportEvent};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

/// The validated, fixed settings of a transport.
#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) me: NodeId,
    pub(crate) secrets: Secrets,
    pub(crate) max_frame: usize,
    pub(crate) connect_timeout: Duration,
    pub(crate) handshake_timeout: Duration,
    pub(crate) backoff: BackoffConfig,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) settings: Settings,
    registry: Mutex<Registry>,
    pub(crate) inbox: Arc<Inbox>,
    /// Permits for inbound handshakes in progress (bounds unauthenticated work).
    pub(crate) handshakes: Arc<Semaphore>,
    /// Inbound handshakes in progress per remote IP address, at most `per_ip` each.
    handshakes_by_ip: Mutex<BTreeMap<IpAddr, usize>>,
    per_ip: usize,
    /// Where connections of process links go ([`crate::TcpConfig::links`]).
    pub(crate) links: Option<tokio::sync::mpsc::Sender<crate::InboundLink>>,
}

/// One inbound handshake's slot of its remote address; freed when dropped.
#[derive(Debug)]
pub(crate) struct IpSlot {
    shared: Arc<Shared>,
    ip: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut by_ip = self.shared.lock_by_ip();
        if let Some(n) = by_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                by_ip.remove(&self.ip);
            }
        }
    }
}

/// A connection admitted as its peer's current one, not yet running.
/// Dropping it without [`Shared::spawn_connection`] ends the connection.
#[derive(Debug)]
pub(crate) struct Admitted {
    guard: EndGuard,
    queue: Arc<SendQueue>,
}

/// Why an authenticated connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Keep the current connection (see [`crate::registry::decide`]).
    Duplicate,
    /// The transport is shutting down.
    ShuttingDown,
}

impl Shared {
    pub(crate) fn new(
        settings: Settings,
        registry: Registry,
        inbox_bytes: usize,
        max_handshakes: usize,
        per_ip: usize,
        links: Option<tokio::sync::mpsc::Sender<crate::InboundLink>>,
    ) -> Self {
        Shared {
            settings,
            registry: Mutex::new(registry),
            inbox: Arc::new(Inbox::new(inbox_bytes)),
            handshakes: Arc::new(Semaphore::new(max_handshakes)),
            handshakes_by_ip: Mutex::new(BTreeMap::new()),
            per_ip,
            links,
        }
    }

    fn lock_by_ip(&self) -> MutexGuard<'_, BTreeMap<IpAddr, usize>> {
        // Each update is one counter change: a poisoned lock is consistent.
        self.handshakes_by_ip
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// A handshake slot for a connection from `ip`, or `None` when it has its share.
    pub(crate) fn ip_slot(self: &Arc<Self>, ip: IpAddr) -> Option<IpSlot> {
        let mut by_ip = self.lock_by_ip();
        let n = by_ip.entry(ip).or_default();
        if *n >= self.per_ip {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            shared: self.clone(),
            ip,
        })
    }

    pub(crate) fn registry(&self) -> MutexGuard<'_, Registry> {
        // Every registry update is completed before the lock is released, or is
        // a single field store: a poisoned lock still holds a consistent table.
        self.registry
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    /// Applies the tie-break to an authenticated connection with `peer` (dialed by `info.dialer`).
    pub(crate) fn admit(
        self: &Arc<Self>,
        peer: NodeId,
        info: ConnectionInfo,
    ) -> Result<Admitted, Refused> {
        let mut registry = self.registry();
        if registry.closed {
            return Err(Refused::ShuttingDown);
        }
        let me = registry.me;
        let entry = registry.peers.get(&peer);
        let current = entry.and_then(|p| p.conn.as_ref()).map(|c| c.info.dialer);
        let handshaking = entry.is_some_and(|p| p.handshaking);
        let decision = decide(me, peer, current, handshaking, info.dialer);
        if decision == Decision::Duplicate {
            return Err(Refused::Duplicate);
        }
        let id = registry.next_conn_id();
        let entry = registry.entry(peer);
        let old = entry.conn.replace(Conn {
            id,
            info,
            task: None,
        });
        entry.queue.set_owner(Some(id));
        let queue = entry.queue.clone();
        if let Some(old) = old {
            if let Some(task) = old.task {
                task.abort();
            }
            tracing::info!(%peer, dialer = %info.dialer, "connection replaced by a newer one");
            self.inbox.push_event(TransportEvent::PeerDown(peer));
        }
        tracing::info!(%peer, dialer = %info.dialer, local = %info.local_addr, remote = %info.peer_addr, "peer up");
        self.inbox.push_event(TransportEvent::PeerUp(peer));
        let guard = EndGuard {
            shared: self.clone(),
            peer,
            id,
        };
        Ok(Admitted { guard, queue })
    }

    /// Runs an admitted connection in its own task.
    pub(crate) fn spawn_connection(
        self: &Arc<Self>,
        admitted: Admitted,
        stream: TcpStream,
        keys: &SessionKeys,
    ) {
        let Admitted { guard, queue } = admitted;
        let (peer, id) = (guard.peer, guard.id);
        let connection = Connection::new(
            stream,
            peer,
            id,
            keys,
            queue,
            self.inbox.clone(),
            self.settings.max_frame,
        );
        let task = tokio::spawn(async move {
            let outcome = connection.run().await;
            log_end(peer, &outcome);
            drop(guard);
        });
        let mut registry = self.registry();
        match registry.peers.get_mut(&peer).and_then(|p| p.conn.as_mut()) {
            Some(conn) if conn.id == id => conn.task = Some(task.abort_handle()),
            // Replaced or removed before it started.
            _ => task.abort(),
        }
    }

    /// Forgets connection `id` of `peer` if it is still current.
    fn connection_ended(&self, peer: NodeId, id: ConnId) {
        let mut registry = self.registry();
        let Some(entry) = registry.peers.get_mut(&peer) else {
            return;
        };
        if entry.conn.as_ref().map(|c| c.id) != Some(id) {
            return;
        }
        entry.conn = None;
        entry.queue.set_owner(None);
        entry.wake_dialer();
        if entry.addr.is_none() {
            // Known only through its own connection: it cannot be reached any more.
            if let Some(mut gone) = registry.peers.remove(&peer) {
                gone.shut();
            }
        }
        drop(registry);
        tracing::info!(%peer, "peer down");
        self.inbox.push_event(TransportEvent::PeerDown(peer));
    }
}

fn log_end(peer: NodeId, outcome: &Result<Ended, ConnectionError>) {
    match outcome {
        Ok(Ended::Closed) => tracing::info!(%peer, "connection closed by peer"),
        Ok(Ended::Replaced) => tracing::debug!(%peer, "connection handed over"),
        Err(ConnectionError::Frame(err)) => {
            tracing::warn!(%peer, %err, "closing connection: peer sent a bad frame");
        }
        Err(err) => tracing::info!(%peer, %err, "connection failed"),
    }
}

/// Clears the registry when a connection task ends, also when it is aborted.
#[derive(Debug)]
struct EndGuard {
    shared: Arc<Shared>,
    peer: NodeId,
    id: ConnId,
}

impl Drop for EndGuard {
    fn drop(&mut self) {
        self.shared.connection_ended(self.peer, self.id);
    }
}
