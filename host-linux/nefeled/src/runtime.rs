//! Starting an agent runtime: the agent, its transport, its beacon socket and its
//! driver task, from a [`RuntimeConfig`] and a host backend.
//!
//! The caller resolves the identity first (see [`crate::identity`]), so the
//! incarnation is durable before the agent exists. The same function starts
//! `nefeled` on a server and each simulated agent in the madsim tests.

use crate::beacon::{BeaconCodec, BeaconSocket, Targets};
use crate::config::TransportKind;
use crate::driver::{Driver, DriverStats, Parts};
use crate::handle::{AgentHandle, REQUEST_QUEUE};
use crate::host_link::HostLink;
use crate::proxy::ProxyRules;
use crate::transport::AgentTransport;
use nefele_core::agent::{Agent, AgentConfig, Identity};
use nefele_core::ids::{Incarnation, NodeId};
use nefele_core::placement::PlacementConfig;
use nefele_core::service::ServicesConfig;
use nefele_core::Time;
use nefele_transport_tcp::{BindError, ClusterKey, InboundLink, NodeKeys, TcpConfig};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Everything one runtime needs.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Who the agent is (incarnation already made durable).
    pub identity: Identity,
    /// Where to listen for agents (TCP) and seed-mode beacons (UDP, same port).
    pub listen: SocketAddr,
    /// Where beacons go.
    pub beacons: Targets,
    /// The cluster's shared secret.
    pub key: ClusterKey,
    /// This node's per-node keys, when the cluster uses them.
    pub node_keys: Option<NodeKeys>,
    /// The core configuration.
    pub agent: AgentConfig,
    /// The seed of the agent's RNG.
    pub rng_seed: u64,
    /// Where this agent, if `agent.services.messaging.proxies` lists it, may open
    /// external connections (default: nowhere).
    pub proxy: ProxyRules,
}

impl RuntimeConfig {
    /// Agent `node` on 127.0.0.1 (a port the system picks), finding the others
    /// through `seeds`: for tests and trials of several agents on one machine.
    #[must_use]
    pub fn loopback(node: NodeId, seeds: Vec<SocketAddr>, key: ClusterKey) -> RuntimeConfig {
        RuntimeConfig {
            identity: Identity {
                node,
                incarnation: Incarnation(1),
            },
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            beacons: Targets::Seeds(seeds),
            key,
            node_keys: None,
            agent: RuntimeConfig::agent_defaults(),
            rng_seed: u64::from(node.0),
            proxy: ProxyRules::default(),
        }
    }

    /// The core configuration for real networks: the core's defaults, with placement
    /// timeouts sized for millisecond round trips rather than the simulator's.
    #[must_use]
    pub fn agent_defaults() -> AgentConfig {
        AgentConfig {
            services: ServicesConfig {
                placement: PlacementConfig {
                    offer_timeout: Duration::from_millis(50),
                    escalate_timeout: Duration::from_millis(100),
                    create_timeout: Duration::from_secs(2),
                    gang_patience: Duration::from_secs(3),
                    presence_timeout: Duration::from_millis(500),
                    confirm_timeout: Duration::from_secs(2),
                    op_timeout: Duration::from_secs(1),
                    ps_timeout: Duration::from_secs(2),
                    ..PlacementConfig::default()
                },
                ..ServicesConfig::default()
            },
            ..AgentConfig::default()
        }
    }
}

/// Why a runtime could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The core configuration is refused.
    #[error("agent configuration: {0}")]
    Agent(#[from] nefele_core::agent::AgentConfigError),
    /// The transport could not listen.
    #[error(transparent)]
    Transport(#[from] BindError),
    /// The beacon socket could not be bound.
    #[error("cannot bind the beacon socket on {addr}: {source}")]
    Beacon {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}

/// A running agent.
#[derive(Debug)]
pub struct Runtime {
    /// The handle to call it.
    pub handle: AgentHandle,
    /// Where its transport listens (the actual port when 0 was asked).
    pub local_addr: SocketAddr,
    /// The driver task; it ends after a shutdown (or when the host backend stops).
    pub driver: JoinHandle<DriverStats>,
    /// Connections made to the transport's port for links between processes (the
    /// API server takes them; while `LINKS_WAITING` wait unread, the transport
    /// closes new ones).
    pub inbound_links: mpsc::Receiver<InboundLink>,
}

/// How many link connections may wait for the API server.
const LINKS_WAITING: usize = 64;

/// Starts an agent with `host` as its host backend, over TCP. Must be called in a tokio runtime.
pub async fn start(config: RuntimeConfig, host: HostLink) -> Result<Runtime, StartError> {
    start_with(config, host, TransportKind::Tcp).await
}

/// Starts an agent over the transport `kind` (RDMA falls back to TCP, with one
/// log line, on a host that cannot use it). Must be called in a tokio runtime.
pub async fn start_with(
    config: RuntimeConfig,
    host: HostLink,
    kind: TransportKind,
) -> Result<Runtime, StartError> {
    config.agent.validate()?;
    let node = config.identity.node;
    let (links, inbound_links) = mpsc::channel(LINKS_WAITING);
    let tcp = TcpConfig {
        node_keys: config.node_keys.clone(),
        links: Some(links),
        ..TcpConfig::new(node, config.listen, config.key.clone())
    };
    let transport = AgentTransport::bind(kind, tcp).await?;
    let local_addr = transport.local_addr();
    // Broadcasts reach only a socket bound to the unspecified address.
    let bind = match config.beacons {
        Targets::Seeds(_) => local_addr,
        Targets::Broadcast(to) => SocketAddr::from(([0, 0, 0, 0], to.port())),
    };
    let beacons = BeaconSocket::bind(bind, config.beacons)
        .await
        .map_err(|source| StartError::Beacon { addr: bind, source })?;
    let epoch = tokio::time::Instant::now();
    let agent = Agent::new(config.agent, config.identity, config.rng_seed, Time::ZERO);
    let (tx, rx) = mpsc::channel(REQUEST_QUEUE);
    let driver = Driver::new(Parts {
        agent,
        epoch,
        transport,
        beacons,
        codec: BeaconCodec::with_node_keys(config.key, config.node_keys),
        listen: local_addr,
        host,
        proxy: config.proxy,
        requests: rx,
    });
    tracing::info!(%node, incarnation = %config.identity.incarnation, %local_addr, "agent started");
    Ok(Runtime {
        handle: AgentHandle::new(node, tx),
        local_addr,
        driver: tokio::spawn(driver.run()),
        inbound_links,
    })
}
