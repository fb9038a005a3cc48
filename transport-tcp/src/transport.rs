//! The transport handle: configuration, the address book, and the core's
//! [`Transport`] trait over the tasks underneath.
//!
//! Call order (for the driver): [`TcpTransport::bind`] inside a tokio runtime;
//! then, from one task, [`Transport::send`] / [`Transport::broadcast`] whenever
//! the agent emits a message, and [`TcpTransport::next_event`] (or
//! [`Transport::poll_event`] until `None`) to learn what arrived. `send` never
//! blocks: it copies the frame into the peer's bounded queue and returns
//! [`TransportError::QueueFull`] when the peer is not keeping up. Dropping the
//! handle closes every connection and stops every task.

use crate::auth::{ClusterKey, Secrets};
use crate::backoff::BackoffConfig;
use crate::frame::{self, FrameError};
use crate::node_keys::NodeKeys;
use crate::queue::PushError;
use crate::registry::{ConnectionInfo, Dialer, Registry};
use crate::shared::{Settings, Shared};
use crate::{dialer, listener};
use nefele_core::wire::codec::DEFAULT_MAX_FRAME;
use nefele_core::{NodeId, Transport, TransportEvent};
use std::collections::{BTreeMap, VecDeque};
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};
use tokio::task::AbortHandle;

/// How a transport is set up.
#[derive(Debug, Clone)]
pub struct TcpConfig {
    /// This agent.
    pub node: NodeId,
    /// Where to accept connections (port 0 picks a free port).
    pub listen: SocketAddr,
    /// The cluster's shared secret.
    pub key: ClusterKey,
    /// This node's per-node keys ([`crate::node_keys`]): when set, every peer
    /// must prove its id with keys from the same authority.
    pub node_keys: Option<NodeKeys>,
    /// The address book at start; [`TcpTransport::set_peer`] changes it later.
    pub peers: BTreeMap<NodeId, SocketAddr>,
    /// The largest frame sent or accepted, in bytes.
    pub max_frame: usize,
    /// The most bytes of frames queued for one peer (at least `max_frame + 4`).
    pub send_queue_bytes: usize,
    /// The most bytes of received frames waiting for the driver before reading pauses.
    pub inbox_bytes: usize,
    /// The limit on establishing a TCP connection.
    pub connect_timeout: Duration,
    /// The limit on each phase of the authentication handshake.
    pub handshake_timeout: Duration,
    /// Reconnect delays.
    pub backoff: BackoffConfig,
    /// The most inbound handshakes in progress at once.
    pub max_pending_handshakes: usize,
    /// The most inbound handshakes in progress at once from one IP address, so
    /// that one stranger cannot hold every handshake slot.
    pub max_pending_handshakes_per_ip: usize,
    /// Where connections that open with [`LINK_MAGIC`] go (process links, which the
    /// agent makes and seals itself); `None` closes them.
    pub links: Option<mpsc::Sender<InboundLink>>,
}

/// The first bytes of a connection made for a process link, not by an agent.
pub const LINK_MAGIC: [u8; 4] = *b"NFLK";

/// A connection that opened with [`LINK_MAGIC`], those bytes read, not authenticated.
#[derive(Debug)]
pub struct InboundLink {
    /// The connection.
    pub stream: TcpStream,
    /// Where it comes from.
    pub remote: SocketAddr,
}

impl TcpConfig {
    /// A configuration with the defaults: 64 KiB frames, 1 MiB send queues,
    /// 4 MiB inbox, 3 s connect and 5 s handshake timeouts, 50 ms to 5 s backoff.
    #[must_use]
    pub fn new(node: NodeId, listen: SocketAddr, key: ClusterKey) -> Self {
        TcpConfig {
            node,
            listen,
            key,
            node_keys: None,
            peers: BTreeMap::new(),
            max_frame: DEFAULT_MAX_FRAME,
            send_queue_bytes: 1 << 20,
            inbox_bytes: 4 << 20,
            connect_timeout: Duration::from_secs(3),
            handshake_timeout: Duration::from_secs(5),
            backoff: BackoffConfig::default(),
            max_pending_handshakes: 64,
            max_pending_handshakes_per_ip: 8,
            links: None,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_frame == 0 || u32::try_from(self.max_frame).is_err() {
            return Err(ConfigError::MaxFrame(self.max_frame));
        }
        if self.send_queue_bytes < self.max_frame + frame::HEADER_LEN {
            return Err(ConfigError::QueueTooSmall {
                queue: self.send_queue_bytes,
                max_frame: self.max_frame,
            });
        }
        if self.inbox_bytes == 0
            || self.max_pending_handshakes == 0
            || self.max_pending_handshakes_per_ip == 0
        {
            return Err(ConfigError::Zero);
        }
        if let Some(keys) = &self.node_keys {
            if keys.node() != self.node {
                return Err(ConfigError::NodeKeysOfAnotherNode {
                    node: self.node,
                    keys: keys.node(),
                });
            }
        }
        if self.peers.contains_key(&self.node) {
            return Err(ConfigError::SelfInPeers(self.node));
        }
        Ok(())
    }
}

/// Why a configuration is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The frame limit is zero or does not fit the 32-bit length prefix.
    #[error("max_frame {0} must be between 1 and 2^32 - 1")]
    MaxFrame(usize),
    /// A send queue could not hold one maximal frame.
    #[error(
        "send_queue_bytes {queue} cannot hold one frame of max_frame {max_frame} plus its header"
    )]
    QueueTooSmall {
        /// The configured queue size.
        queue: usize,
        /// The configured frame limit.
        max_frame: usize,
    },
    /// `inbox_bytes` or a handshake limit is zero.
    #[error(
        "inbox_bytes, max_pending_handshakes and max_pending_handshakes_per_ip must be positive"
    )]
    Zero,
    /// The per-node keys are another node's.
    #[error("this node is {node} but its per-node keys are {keys}'s")]
    NodeKeysOfAnotherNode {
        /// This node.
        node: NodeId,
        /// The node the keys were issued to.
        keys: NodeId,
    },
    /// The address book names this node.
    #[error("the address book names this node ({0}) as a peer")]
    SelfInPeers(NodeId),
}

/// Why a transport could not start.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The configuration is unusable.
    #[error("bad transport configuration: {0}")]
    Config(#[from] ConfigError),
    /// The listening socket could not be opened.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The configured listen address.
        addr: SocketAddr,
        /// The cause.
        source: io::Error,
    },
}

/// Why a frame was not queued. Nothing was queued (for a broadcast: nothing for the peers named).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// The peer is neither in the address book nor connected.
    #[error("unknown peer {0}")]
    UnknownPeer(NodeId),
    /// The peer's send queue is full: it is slow or unreachable (backpressure).
    #[error("send queue for {0} is full")]
    QueueFull(NodeId),
    /// The frame is empty or larger than the limit.
    #[error("cannot send frame: {0}")]
    Frame(#[from] FrameError),
    /// A broadcast was queued for every known peer except these, whose queues are full.
    #[error("broadcast not queued for {0:?}: send queues full")]
    BroadcastIncomplete(Vec<NodeId>),
}

/// The TCP transport of one agent. See the module docs for the call order.
#[derive(Debug)]
pub struct TcpTransport {
    shared: Arc<Shared>,
    /// Events already taken from the inbox, in order.
    events: VecDeque<TransportEvent>,
    local_addr: SocketAddr,
    listener: AbortHandle,
}

impl TcpTransport {
    /// Listens on `config.listen` and starts dialing the address book. Must be
    /// called within a tokio runtime.
    pub async fn bind(config: TcpConfig) -> Result<Self, BindError> {
        config.validate()?;
        let listen_error = |source| BindError::Listen {
            addr: config.listen,
            source,
        };
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(listen_error)?;
        let local_addr = listener.local_addr().map_err(listen_error)?;
        let settings = Settings {
            me: config.node,
            secrets: Secrets {
                key: config.key,
                node_keys: config.node_keys,
            },
            max_frame: config.max_frame,
            connect_timeout: config.connect_timeout,
            handshake_timeout: config.handshake_timeout,
            backoff: config.backoff,
        };
        let registry = Registry::new(config.node, config.send_queue_bytes, config.max_frame);
        let shared = Arc::new(Shared::new(
            settings,
            registry,
            config.inbox_bytes,
            config.max_pending_handshakes,
            config.max_pending_handshakes_per_ip,
            config.links,
        ));
        let listener = tokio::spawn(listener::run(shared.clone(), listener)).abort_handle();
        tracing::info!(node = %config.node, %local_addr, "tcp transport listening");
        let transport = TcpTransport {
            shared,
            events: VecDeque::new(),
            local_addr,
            listener,
        };
        for (peer, addr) in config.peers {
            transport.set_peer(peer, addr);
        }
        Ok(transport)
    }

    /// This agent's id.
    #[must_use]
    pub fn node(&self) -> NodeId {
        self.shared.settings.me
    }

    /// The address the transport listens on.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Adds `peer` to the address book or changes its address; it is dialed
    /// (again) at once unless already connected. Ignored for this node's own id.
    /// Must be called within the transport's tokio runtime (it may start a task).
    pub fn set_peer(&self, peer: NodeId, addr: SocketAddr) {
        let mut registry = self.shared.registry();
        if peer == registry.me || registry.closed {
            return;
        }
        let entry = registry.entry(peer);
        entry.addr = Some(addr);
        if entry.dialer.is_some() {
            entry.wake_dialer();
            return;
        }
        let wake = Arc::new(Notify::new());
        let task =
            tokio::spawn(dialer::run(self.shared.clone(), peer, wake.clone())).abort_handle();
        entry.dialer = Some(Dialer { wake, task });
    }

    /// Removes `peer`: closes its connection, drops its queued frames and stops dialing it.
    pub fn remove_peer(&self, peer: NodeId) {
        let removed = self.shared.registry().peers.remove(&peer);
        if let Some(mut entry) = removed {
            let was_connected = entry.conn.is_some();
            entry.shut();
            if was_connected {
                self.shared.inbox.push_event(TransportEvent::PeerDown(peer));
            }
        }
    }

    /// The peers this transport knows: in the address book or connected.
    #[must_use]
    pub fn peers(&self) -> Vec<NodeId> {
        self.shared.registry().peers.keys().copied().collect()
    }

    /// The current connection to `peer`, if any.
    #[must_use]
    pub fn connection(&self, peer: NodeId) -> Option<ConnectionInfo> {
        let registry = self.shared.registry();
        registry.peers.get(&peer)?.conn.as_ref().map(|c| c.info)
    }

    /// Bytes queued for `peer` and not yet handed to its connection.
    #[must_use]
    pub fn queued_bytes(&self, peer: NodeId) -> Option<usize> {
        let registry = self.shared.registry();
        registry.peers.get(&peer).map(|p| p.queue.queued_bytes())
    }

    /// Waits for the next event.
    pub async fn next_event(&mut self) -> TransportEvent {
        poll_fn(|cx| self.poll_next_event(cx)).await
    }

    /// The next event, or `Pending` with `cx` woken when one arrives.
    pub fn poll_next_event(&mut self, cx: &mut Context<'_>) -> Poll<TransportEvent> {
        loop {
            if let Some(event) = self.events.pop_front() {
                return Poll::Ready(event);
            }
            if self
                .shared
                .inbox
                .poll_drain(&mut self.events, Some(cx))
                .is_pending()
            {
                return Poll::Pending;
            }
        }
    }
}

impl Transport for TcpTransport {
    type Error = TransportError;

    fn send(&mut self, to: NodeId, frame: &[u8]) -> Result<(), TransportError> {
        let registry = self.shared.registry();
        let peer = registry
            .peers
            .get(&to)
            .ok_or(TransportError::UnknownPeer(to))?;
        match peer.queue.push(frame) {
            Ok(()) => Ok(()),
            Err(PushError::Full) => Err(TransportError::QueueFull(to)),
            Err(PushError::Frame(err)) => Err(TransportError::Frame(err)),
            Err(PushError::Closed) => Err(TransportError::UnknownPeer(to)),
        }
    }

    fn broadcast(&mut self, frame: &[u8]) -> Result<(), TransportError> {
        frame::check_len(frame.len(), self.shared.settings.max_frame)?;
        let registry = self.shared.registry();
        let mut full = Vec::new();
        for (&peer, entry) in &registry.peers {
            if entry.queue.push(frame) == Err(PushError::Full) {
                full.push(peer);
            }
        }
        if full.is_empty() {
            Ok(())
        } else {
            Err(TransportError::BroadcastIncomplete(full))
        }
    }

    fn poll_event(&mut self) -> Option<TransportEvent> {
        if self.events.is_empty() {
            let _ = self.shared.inbox.poll_drain(&mut self.events, None);
        }
        self.events.pop_front()
    }
}

impl Drop for TcpTransport {
    fn drop(&mut self) {
        self.listener.abort();
        let mut registry = self.shared.registry();
        registry.closed = true;
        let peers = std::mem::take(&mut registry.peers);
        drop(registry);
        for (_, mut peer) in peers {
            peer.shut();
        }
    }
}
