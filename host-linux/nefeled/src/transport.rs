//! The agent's transport, as the configuration chose it: TCP, or RDMA with
//! per-peer fallback to TCP (transport-rdma, over the TCP transport as its
//! authenticated carrier).
//!
//! With `transport = "rdma"`, the host is probed once at start: a device with
//! an active port, enough locked memory, a build with the `rdma` feature, and
//! the device opening. When any of these fails the agent runs TCP and says why
//! in one warning line; RDMA is never required for an agent to start. Which
//! path each peer gets is then decided and logged by transport-rdma.
//!
//! The driver sees one type with the TCP transport's error type, so its
//! handling of full queues and unknown peers is the same on both.

use crate::config::TransportKind;
use nefele_core::{NodeId, TransportEvent};
use nefele_transport_tcp::{BindError, TcpConfig, TcpTransport, TransportError};
use std::net::SocketAddr;

#[cfg(all(feature = "rdma", not(madsim)))]
type Rdma =
    nefele_transport_rdma::RdmaTransport<nefele_transport_rdma::ibverbs::IbVerbs, TcpCarrier>;

/// The transport the driver uses.
#[derive(Debug)]
pub(crate) enum AgentTransport {
    Tcp(TcpTransport),
    #[cfg(all(feature = "rdma", not(madsim)))]
    Rdma(Box<Rdma>),
}

impl AgentTransport {
    /// Binds the transport of `kind`; RDMA falls back to TCP, with one log line, when unusable.
    pub(crate) async fn bind(kind: TransportKind, config: TcpConfig) -> Result<Self, BindError> {
        let node = config.node;
        let tcp = TcpTransport::bind(config).await?;
        if kind == TransportKind::Tcp {
            return Ok(AgentTransport::Tcp(tcp));
        }
        match rdma(node, tcp) {
            Ok(transport) => Ok(transport),
            Err((tcp, reason)) => {
                tracing::warn!(%node, "transport rdma requested but unavailable: {reason}; using TCP with every peer");
                Ok(AgentTransport::Tcp(tcp))
            }
        }
    }

    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.tcp().local_addr()
    }

    fn tcp(&self) -> &TcpTransport {
        match self {
            AgentTransport::Tcp(tcp) => tcp,
            #[cfg(all(feature = "rdma", not(madsim)))]
            AgentTransport::Rdma(rdma) => &rdma.carrier().0,
        }
    }

    /// See [`TcpTransport::set_peer`].
    pub(crate) fn set_peer(&self, peer: NodeId, addr: SocketAddr) {
        self.tcp().set_peer(peer, addr);
    }

    /// Whether a connection to `peer` is up.
    pub(crate) fn is_connected(&self, peer: NodeId) -> bool {
        self.tcp().connection(peer).is_some()
    }

    /// Where the connection with `peer` comes from, while one is up.
    pub(crate) fn connected_from(&self, peer: NodeId) -> Option<SocketAddr> {
        self.tcp().connection(peer).map(|c| c.peer_addr)
    }

    /// Waits for the next event.
    pub(crate) async fn next_event(&mut self) -> TransportEvent {
        match self {
            AgentTransport::Tcp(tcp) => tcp.next_event().await,
            #[cfg(all(feature = "rdma", not(madsim)))]
            AgentTransport::Rdma(rdma) => rdma.next_event().await,
        }
    }

    /// Queues `frame` for `to`.
    pub(crate) fn send(&mut self, to: NodeId, frame: &[u8]) -> Result<(), TransportError> {
        use nefele_core::Transport;
        match self {
            AgentTransport::Tcp(tcp) => tcp.send(to, frame),
            #[cfg(all(feature = "rdma", not(madsim)))]
            AgentTransport::Rdma(rdma) => rdma.send(to, frame).map_err(|e| rdma_error(to, e)),
        }
    }
}

/// The RDMA transport over `tcp`, or `tcp` back with the reason it cannot be.
#[cfg(not(all(feature = "rdma", not(madsim))))]
fn rdma(_: NodeId, tcp: TcpTransport) -> Result<AgentTransport, (TcpTransport, String)> {
    #[cfg(not(madsim))]
    let reason = {
        use nefele_transport_rdma::device::{choose, scan, SYSFS_ROOT};
        let root = std::path::Path::new(SYSFS_ROOT);
        match choose(root, &scan(root), None) {
            Err(no_device) => no_device.to_string(),
            Ok(port) => format!(
                "{} port {} is usable, but this nefeled was built without the `rdma` feature",
                port.device, port.port
            ),
        }
    };
    #[cfg(madsim)]
    let reason = "simulated hosts have no RDMA".to_owned();
    Err((tcp, reason))
}

#[cfg(all(feature = "rdma", not(madsim)))]
fn rdma(node: NodeId, tcp: TcpTransport) -> Result<AgentTransport, (TcpTransport, String)> {
    use nefele_transport_rdma::{ibverbs::IbVerbs, RdmaConfig, RdmaTransport};
    let config = RdmaConfig::new(node);
    let need = config.registered_bytes_per_peer() as u64;
    let verbs = match IbVerbs::open(None, 0, need) {
        Ok(verbs) => verbs,
        Err(e) => return Err((tcp, e.to_string())),
    };
    match RdmaTransport::new(config, Ok(verbs), TcpCarrier(tcp)) {
        Ok(rdma) => Ok(AgentTransport::Rdma(Box::new(rdma))),
        Err(e) => unreachable!("the default RDMA configuration is valid: {e}"),
    }
}

#[cfg(all(feature = "rdma", not(madsim)))]
fn rdma_error(to: NodeId, e: nefele_transport_rdma::RdmaError) -> TransportError {
    use nefele_transport_rdma::RdmaError;
    use nefele_transport_tcp::frame::FrameError;
    match e {
        RdmaError::UnknownPeer(p) => TransportError::UnknownPeer(p),
        RdmaError::QueueFull(p) => TransportError::QueueFull(p),
        RdmaError::Frame { len: 0, .. } => TransportError::Frame(FrameError::Empty),
        RdmaError::Frame { len, max } => TransportError::Frame(FrameError::TooLarge { len, max }),
        RdmaError::BroadcastIncomplete(peers) => TransportError::BroadcastIncomplete(peers),
        // The carrier is TCP, whose `send` refuses only unknown peers, full
        // queues and bad frames, all mapped above before they reach it.
        RdmaError::Carrier { .. } => TransportError::UnknownPeer(to),
    }
}

/// The TCP transport as the RDMA transport's carrier.
#[cfg(all(feature = "rdma", not(madsim)))]
#[derive(Debug)]
pub(crate) struct TcpCarrier(TcpTransport);

#[cfg(all(feature = "rdma", not(madsim)))]
impl nefele_transport_rdma::Carrier for TcpCarrier {
    fn send(
        &mut self,
        to: NodeId,
        frame: &[u8],
    ) -> Result<(), nefele_transport_rdma::CarrierError> {
        use nefele_transport_rdma::CarrierError;
        nefele_core::Transport::send(&mut self.0, to, frame).map_err(|e| match e {
            TransportError::UnknownPeer(_) => CarrierError::UnknownPeer,
            TransportError::QueueFull(_) => CarrierError::QueueFull,
            other => CarrierError::Other(other.to_string()),
        })
    }
    fn peers(&self) -> Vec<NodeId> {
        self.0.peers()
    }
    fn poll_event(&mut self) -> Option<TransportEvent> {
        nefele_core::Transport::poll_event(&mut self.0)
    }
    fn next_event(&mut self) -> impl std::future::Future<Output = TransportEvent> + Send {
        self.0.next_event()
    }
}

#[cfg(all(test, not(madsim)))]
mod tests {
    use super::*;
    use nefele_transport_tcp::ClusterKey;
    use std::time::Duration;

    fn config(node: u32) -> TcpConfig {
        let key = ClusterKey::new(b"transport choice test key, 32 b.").unwrap();
        TcpConfig::new(NodeId(node), "127.0.0.1:0".parse().unwrap(), key)
    }

    /// With RDMA selected an agent starts and talks on any host; on one without
    /// a device (this machine, CI) it is the TCP transport.
    #[tokio::test]
    async fn rdma_selected_starts_and_talks_with_or_without_a_device() {
        let mut a = AgentTransport::bind(TransportKind::Rdma, config(1))
            .await
            .unwrap();
        let mut b = AgentTransport::bind(TransportKind::Rdma, config(2))
            .await
            .unwrap();
        let root = std::path::Path::new(nefele_transport_rdma::device::SYSFS_ROOT);
        if nefele_transport_rdma::device::scan(root).is_empty() {
            assert!(matches!(a, AgentTransport::Tcp(_)), "{a:?}");
        }
        a.set_peer(NodeId(2), b.local_addr());
        let talk = async {
            while a.next_event().await != TransportEvent::PeerUp(NodeId(2)) {}
            a.send(NodeId(2), b"hello").unwrap();
            loop {
                if let TransportEvent::Received { from, frame } = b.next_event().await {
                    return (from, frame);
                }
            }
        };
        let got = tokio::time::timeout(Duration::from_secs(10), talk)
            .await
            .unwrap();
        assert_eq!(got, (NodeId(1), b"hello".to_vec()));
    }
}
