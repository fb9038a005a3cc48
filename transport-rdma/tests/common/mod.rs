//! Test and benchmark support: the TCP transport as the RDMA transport's
//! carrier, and one `Node` interface over both transports so the conformance
//! suite and the benchmark run the same code against each.

#![allow(dead_code, unreachable_pub)] // Each test or bench binary uses part of it.

use nefele_core::{NodeId, Transport, TransportEvent};
use nefele_transport_rdma::fake::FakeFabric;
use nefele_transport_rdma::verbs::Verbs;
use nefele_transport_rdma::{
    Carrier, CarrierError, PeerPath, RdmaConfig, RdmaError, RdmaTransport,
};
use nefele_transport_tcp::{ClusterKey, TcpConfig, TcpTransport, TransportError};
use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

/// The TCP transport as a carrier.
pub struct TcpCarrier(pub TcpTransport);

impl Carrier for TcpCarrier {
    fn send(&mut self, to: NodeId, frame: &[u8]) -> Result<(), CarrierError> {
        Transport::send(&mut self.0, to, frame).map_err(|e| match e {
            TransportError::UnknownPeer(_) => CarrierError::UnknownPeer,
            TransportError::QueueFull(_) => CarrierError::QueueFull,
            other => CarrierError::Other(other.to_string()),
        })
    }
    fn peers(&self) -> Vec<NodeId> {
        self.0.peers()
    }
    fn poll_event(&mut self) -> Option<TransportEvent> {
        Transport::poll_event(&mut self.0)
    }
    fn next_event(&mut self) -> impl Future<Output = TransportEvent> + Send {
        self.0.next_event()
    }
}

pub fn key() -> ClusterKey {
    ClusterKey::new(b"conformance-suite-cluster-key").unwrap()
}

async fn tcp(id: NodeId) -> TcpTransport {
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    TcpTransport::bind(TcpConfig::new(id, loopback, key()))
        .await
        .unwrap()
}

/// How a send ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Sent {
    Ok,
    Full,
}

/// One agent's transport, whichever it is.
pub trait Node: Send {
    fn id(&self) -> NodeId;
    fn addr(&self) -> SocketAddr;
    fn set_peer(&mut self, peer: NodeId, addr: SocketAddr);
    fn send(&mut self, to: NodeId, frame: &[u8]) -> Sent;
    fn poll_event(&mut self) -> Option<TransportEvent>;
    fn next_event(&mut self) -> impl Future<Output = TransportEvent> + Send;
    /// Whether frames to `peer` take this transport's own path (always for TCP).
    fn on_own_path(&self, peer: NodeId) -> bool;
}

impl Node for TcpTransport {
    fn id(&self) -> NodeId {
        self.node()
    }
    fn addr(&self) -> SocketAddr {
        self.local_addr()
    }
    fn set_peer(&mut self, peer: NodeId, addr: SocketAddr) {
        TcpTransport::set_peer(self, peer, addr);
    }
    fn send(&mut self, to: NodeId, frame: &[u8]) -> Sent {
        match Transport::send(self, to, frame) {
            Ok(()) => Sent::Ok,
            Err(TransportError::QueueFull(_)) => Sent::Full,
            Err(e) => panic!("send to {to}: {e}"),
        }
    }
    fn poll_event(&mut self) -> Option<TransportEvent> {
        Transport::poll_event(self)
    }
    fn next_event(&mut self) -> impl Future<Output = TransportEvent> + Send {
        TcpTransport::next_event(self)
    }
    fn on_own_path(&self, _: NodeId) -> bool {
        true
    }
}

impl<V: Verbs> Node for RdmaTransport<V, TcpCarrier> {
    fn id(&self) -> NodeId {
        self.carrier().0.node()
    }
    fn addr(&self) -> SocketAddr {
        self.carrier().0.local_addr()
    }
    fn set_peer(&mut self, peer: NodeId, addr: SocketAddr) {
        self.carrier().0.set_peer(peer, addr);
    }
    fn send(&mut self, to: NodeId, frame: &[u8]) -> Sent {
        match Transport::send(self, to, frame) {
            Ok(()) => Sent::Ok,
            Err(RdmaError::QueueFull(_)) => Sent::Full,
            Err(e) => panic!("send to {to}: {e}"),
        }
    }
    fn poll_event(&mut self) -> Option<TransportEvent> {
        Transport::poll_event(self)
    }
    fn next_event(&mut self) -> impl Future<Output = TransportEvent> + Send {
        RdmaTransport::next_event(self)
    }
    fn on_own_path(&self, peer: NodeId) -> bool {
        self.path(peer) == PeerPath::Rdma
    }
}

/// Makes the nodes of one kind of transport.
pub trait Kind {
    type Node: Node;
    fn spawn(&mut self, id: NodeId) -> impl Future<Output = Self::Node>;
}

pub struct Tcp;

impl Kind for Tcp {
    type Node = TcpTransport;
    async fn spawn(&mut self, id: NodeId) -> TcpTransport {
        tcp(id).await
    }
}

/// RDMA over the in-memory fabric, TCP as carrier.
pub struct FakeRdma(pub FakeFabric);

impl Kind for FakeRdma {
    type Node = RdmaTransport<nefele_transport_rdma::fake::FakeVerbs, TcpCarrier>;
    async fn spawn(&mut self, id: NodeId) -> Self::Node {
        let verbs = self.0.verbs(64, 64 << 20);
        RdmaTransport::new(RdmaConfig::new(id), Ok(verbs), TcpCarrier(tcp(id).await)).unwrap()
    }
}

/// RDMA on this host's device (loopback through the NIC), TCP as carrier.
#[cfg(feature = "verbs")]
pub struct RealRdma;

#[cfg(feature = "verbs")]
impl Kind for RealRdma {
    type Node = RdmaTransport<nefele_transport_rdma::ibverbs::IbVerbs, TcpCarrier>;
    async fn spawn(&mut self, id: NodeId) -> Self::Node {
        let config = RdmaConfig::new(id);
        let need = config.registered_bytes_per_peer() as u64;
        let verbs =
            nefele_transport_rdma::ibverbs::IbVerbs::open(None, 0, need).map_err(|e| e.to_string());
        RdmaTransport::new(config, verbs, TcpCarrier(tcp(id).await)).unwrap()
    }
}

pub const STEP: Duration = Duration::from_secs(20);

/// What a set of nodes received.
pub struct Net<N: Node> {
    pub nodes: Vec<N>,
    /// Frames received, by (sender, receiver), in arrival order.
    pub frames: BTreeMap<(NodeId, NodeId), Vec<Vec<u8>>>,
    /// Peer up/down events, as (receiver, event).
    pub peer_events: Vec<(NodeId, TransportEvent)>,
}

impl<N: Node> Net<N> {
    /// Nodes of `kind` with ids 1..=n, every pair connected on its own path.
    pub async fn mesh<K: Kind<Node = N>>(kind: &mut K, n: u32) -> Self {
        let mut net = Net {
            nodes: Vec::new(),
            frames: BTreeMap::new(),
            peer_events: Vec::new(),
        };
        for id in 1..=n {
            net.nodes.push(kind.spawn(NodeId(id)).await);
        }
        net.introduce_all();
        net.until("every pair up", |net| {
            net.nodes.iter().all(|node| {
                net.nodes
                    .iter()
                    .filter(|p| p.id() != node.id())
                    .all(|p| net.is_up(node.id(), p.id()) && node.on_own_path(p.id()))
            })
        })
        .await;
        // The last set-up messages (Switch) land before the tests count anything.
        for _ in 0..20 {
            net.pump();
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        net
    }

    /// Tells every node every other node's address.
    pub fn introduce_all(&mut self) {
        let book: Vec<(NodeId, SocketAddr)> =
            self.nodes.iter().map(|n| (n.id(), n.addr())).collect();
        for node in &mut self.nodes {
            for &(peer, addr) in &book {
                if peer != node.id() {
                    node.set_peer(peer, addr);
                }
            }
        }
    }

    /// Whether `me`'s last event about `peer` is `PeerUp`.
    pub fn is_up(&self, me: NodeId, peer: NodeId) -> bool {
        self.peer_events
            .iter()
            .rev()
            .find(|(at, e)| {
                *at == me && matches!(e, TransportEvent::PeerUp(p) | TransportEvent::PeerDown(p) if *p == peer)
            })
            .is_some_and(|(_, e)| matches!(e, TransportEvent::PeerUp(_)))
    }

    pub fn node(&mut self, id: NodeId) -> &mut N {
        self.nodes
            .iter_mut()
            .find(|n| n.id() == id)
            .expect("a node")
    }

    pub fn received(&self, from: NodeId, to: NodeId) -> &[Vec<u8>] {
        self.frames.get(&(from, to)).map_or(&[], Vec::as_slice)
    }

    fn record(&mut self, me: NodeId, event: TransportEvent) {
        match event {
            TransportEvent::Received { from, frame } => {
                self.frames.entry((from, me)).or_default().push(frame);
            }
            other => self.peer_events.push((me, other)),
        }
    }

    /// Drains the events of the nodes `which` allows; true when there were any.
    pub fn pump_some(&mut self, which: impl Fn(NodeId) -> bool) -> bool {
        let mut any = false;
        for i in 0..self.nodes.len() {
            let me = self.nodes[i].id();
            if !which(me) {
                continue;
            }
            while let Some(event) = self.nodes[i].poll_event() {
                any = true;
                self.record(me, event);
            }
        }
        any
    }

    pub fn pump(&mut self) -> bool {
        self.pump_some(|_| true)
    }

    /// Pumps every node until `done`, failing after [`STEP`] with `what`.
    pub async fn until(&mut self, what: &str, mut done: impl FnMut(&Self) -> bool) {
        let deadline = tokio::time::Instant::now() + STEP;
        while !done(self) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for: {what}"
            );
            if self.pump() {
                tokio::task::yield_now().await;
            } else {
                tokio::time::sleep(Duration::from_micros(100)).await;
            }
        }
    }
}

/// A frame that says who sent it and its sequence number, `len` bytes long (at least 8).
pub fn frame(from: NodeId, seq: u32, len: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(len.max(8));
    f.extend_from_slice(&from.0.to_be_bytes());
    f.extend_from_slice(&seq.to_be_bytes());
    f.resize(len.max(8), (seq % 251) as u8);
    f
}
