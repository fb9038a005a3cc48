//! Metrics: what one agent knows of itself, in the Prometheus text format
//! (OpenMetrics, rendered by `prometheus-client`), served over HTTP on a local
//! address when the configuration names one (`metrics = "127.0.0.1:9464"`; off by
//! default).
//!
//! The driver fills a [`Snapshot`] from the core's read-only views (discovery,
//! federation seats, placement's accounting and process table, messaging's
//! mailboxes and pairs) and its own counters ([`DriverStats`]) when asked
//! ([`crate::AgentHandle::metrics`]); [`render`] turns it into text. Nothing is
//! kept between scrapes, so a metric is exactly the agent's state at the scrape.
//!
//! The server ([`MetricsServer::serve`]) answers `GET /metrics` (and `GET /`) with the text, any
//! other request with 404; it reads at most [`MAX_REQUEST`] bytes of a request
//! and gives a client [`REQUEST_TIMEOUT`] to send it, so a slow or hostile client
//! holds one task for a bounded time and memory.

use crate::driver::DriverStats;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::time::Duration;

/// The most of a request the server reads.
pub const MAX_REQUEST: usize = 8 * 1024;
/// How long a client has to send its request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// One federation seat: a group this agent sits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeatStats {
    /// The group's level (0: hosts).
    pub level: u8,
    /// Its members.
    pub members: usize,
    /// Whether this agent leads it.
    pub leader: bool,
    /// The group's epoch.
    pub epoch: u64,
}

/// What the agent reports at one scrape (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The node id.
    pub node: u32,
    /// The live agents of this agent's broadcast domain.
    pub neighbours: usize,
    /// The seats of the first federation instance, bottom up.
    pub seats: Vec<SeatStats>,
    /// Agents known by address, and those with a connection up.
    pub peers_known: usize,
    /// Agents with a transport connection up.
    pub peers_connected: usize,
    /// Capacity, committed and reserved cpu (millicores).
    pub cpu_millicores: [u64; 3],
    /// Capacity, committed and reserved memory (bytes).
    pub memory_bytes: [u64; 3],
    /// Processes in this host's process table.
    pub processes: usize,
    /// Placement requests in flight with this agent as requester.
    pub placement_requests: usize,
    /// Mailboxes (processes of this host that messaging serves).
    pub mailboxes: usize,
    /// Receiving (sender, receiver) pairs with state at this host.
    pub inbound_pairs: usize,
    /// Client calls the agent works on, and how many of them are waits.
    pub calls_pending: usize,
    /// Of `calls_pending`, the waits (process ends, blocking receives).
    pub waits_pending: usize,
    /// The driver's counters.
    pub driver: DriverStats,
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let g: Gauge = Gauge::default();
    g.set(i64::try_from(value).unwrap_or(i64::MAX));
    registry.register(name, help, g);
}

fn counter(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let c: Counter = Counter::default();
    c.inc_by(value);
    registry.register(name, help, c);
}

type Labels = Vec<(String, String)>;

fn labelled(
    registry: &mut Registry,
    name: &str,
    help: &str,
    values: impl IntoIterator<Item = (Labels, u64)>,
) {
    let family = Family::<Labels, Gauge>::default();
    for (labels, value) in values {
        family
            .get_or_create(&labels)
            .set(i64::try_from(value).unwrap_or(i64::MAX));
    }
    registry.register(name, help, family);
}

fn kinds(values: [u64; 3]) -> Vec<(Labels, u64)> {
    ["capacity", "committed", "reserved"]
        .into_iter()
        .zip(values)
        .map(|(kind, v)| (vec![("kind".to_owned(), kind.to_owned())], v))
        .collect()
}

/// The snapshot in the Prometheus text format, every name prefixed `nefele_`.
#[must_use]
pub fn render(s: &Snapshot) -> String {
    let mut r = Registry::with_prefix("nefele");
    gauge(&mut r, "node", "This agent's node id", u64::from(s.node));
    gauge(
        &mut r,
        "discovery_neighbours",
        "Live agents of this agent's broadcast domain",
        s.neighbours as u64,
    );
    gauge(
        &mut r,
        "federation_levels",
        "Levels of the tree this agent has a seat at",
        s.seats.len() as u64,
    );
    let level = |seat: &SeatStats| vec![("level".to_owned(), seat.level.to_string())];
    labelled(
        &mut r,
        "federation_group_members",
        "Members of this agent's group, per level",
        s.seats.iter().map(|x| (level(x), x.members as u64)),
    );
    labelled(
        &mut r,
        "federation_leader",
        "1 where this agent leads its group, per level",
        s.seats.iter().map(|x| (level(x), u64::from(x.leader))),
    );
    labelled(
        &mut r,
        "federation_group_epoch",
        "The epoch of this agent's group, per level",
        s.seats.iter().map(|x| (level(x), x.epoch)),
    );
    gauge(
        &mut r,
        "transport_peers_known",
        "Agents known by address",
        s.peers_known as u64,
    );
    gauge(
        &mut r,
        "transport_peers_connected",
        "Agents with a transport connection up",
        s.peers_connected as u64,
    );
    counter(
        &mut r,
        "transport_bad_frames",
        "Frames from peers that did not decode or claimed another sender",
        s.driver.bad_frames,
    );
    counter(
        &mut r,
        "transport_queue_full",
        "Messages not queued because a peer's send queue was full",
        s.driver.queue_full,
    );
    counter(
        &mut r,
        "transport_unknown_peer",
        "Messages for agents whose address was not known",
        s.driver.unknown_peer,
    );
    counter(
        &mut r,
        "discovery_bad_beacons",
        "Beacon datagrams dropped (bad MAC, malformed, bad frame)",
        s.driver.bad_beacons,
    );
    let proxy = &s.driver.proxy;
    labelled(
        &mut r,
        "proxy_connections",
        "External proxy connections, by how they went",
        [
            ("connected", proxy.connected),
            ("denied", proxy.denied),
            ("connect_failed", proxy.connect_failed),
            ("overrun", proxy.overrun),
            ("ended", proxy.ended),
        ]
        .map(|(outcome, n)| (vec![("outcome".to_owned(), outcome.to_owned())], n)),
    );
    counter(
        &mut r,
        "discovery_stale_beacons",
        "Authentic beacons refused as replayed or outside the time window",
        s.driver.stale_beacons,
    );
    labelled(
        &mut r,
        "host_cpu_millicores",
        "This host's cpu for placement",
        kinds(s.cpu_millicores),
    );
    labelled(
        &mut r,
        "host_memory_bytes",
        "This host's memory for placement",
        kinds(s.memory_bytes),
    );
    gauge(
        &mut r,
        "placement_processes",
        "Processes in this host's table",
        s.processes as u64,
    );
    gauge(
        &mut r,
        "placement_requests_in_flight",
        "Placement requests this agent makes that are not answered",
        s.placement_requests as u64,
    );
    gauge(
        &mut r,
        "messaging_mailboxes",
        "Mailboxes at this host",
        s.mailboxes as u64,
    );
    gauge(
        &mut r,
        "messaging_inbound_pairs",
        "Receiving (sender, receiver) pairs with state at this host",
        s.inbound_pairs as u64,
    );
    gauge(
        &mut r,
        "api_calls_pending",
        "Client calls the agent works on",
        s.calls_pending as u64,
    );
    gauge(
        &mut r,
        "api_waits_pending",
        "Of those, waits (process ends, blocking receives)",
        s.waits_pending as u64,
    );
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut text, &r);
    text
}

/// Why the metrics server could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen for metrics on {addr}: {source}")]
pub struct MetricsBindError {
    /// The address.
    pub addr: std::net::SocketAddr,
    /// The cause.
    pub source: std::io::Error,
}

/// A bound metrics listener.
#[cfg(not(madsim))]
#[derive(Debug)]
pub struct MetricsServer {
    listener: tokio::net::TcpListener,
}

#[cfg(not(madsim))]
impl MetricsServer {
    /// Listens on `addr`.
    pub async fn bind(addr: std::net::SocketAddr) -> Result<Self, MetricsBindError> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| MetricsBindError { addr, source })?;
        Ok(MetricsServer { listener })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// Answers scrapes of `agent` forever, one task per connection.
    pub async fn serve(self, agent: crate::AgentHandle) {
        loop {
            match self.listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(answer(stream, agent.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// Reads one request (bounded in size and time) and answers it.
#[cfg(not(madsim))]
async fn answer(mut stream: tokio::net::TcpStream, agent: crate::AgentHandle) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut request = Vec::new();
    let read = tokio::time::timeout(REQUEST_TIMEOUT, async {
        let mut buf = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < MAX_REQUEST {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => request.extend_from_slice(&buf[..n]),
            }
        }
        true
    })
    .await;
    if !matches!(read, Ok(true)) {
        return;
    }
    let line = request.split(|&b| b == b'\r').next().unwrap_or_default();
    let response = if line == b"GET /metrics HTTP/1.1"
        || line == b"GET / HTTP/1.1"
        || line == b"GET /metrics HTTP/1.0"
        || line == b"GET / HTTP/1.0"
    {
        match agent.metrics().await {
            Ok(text) => format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                text.len()
            ),
            Err(_) => "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned(),
        }
    } else {
        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned()
    };
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_renders_every_family_once_with_its_values() {
        let s = Snapshot {
            node: 3,
            neighbours: 2,
            seats: vec![
                SeatStats {
                    level: 0,
                    members: 4,
                    leader: true,
                    epoch: 7,
                },
                SeatStats {
                    level: 1,
                    members: 1,
                    leader: false,
                    epoch: 2,
                },
            ],
            mailboxes: 5,
            cpu_millicores: [1000, 300, 50],
            driver: DriverStats {
                bad_frames: 9,
                ..DriverStats::default()
            },
            ..Snapshot::default()
        };
        let text = render(&s);
        for line in [
            "nefele_node 3",
            "nefele_discovery_neighbours 2",
            "nefele_federation_group_members{level=\"0\"} 4",
            "nefele_federation_leader{level=\"0\"} 1",
            "nefele_federation_leader{level=\"1\"} 0",
            "nefele_messaging_mailboxes 5",
            "nefele_host_cpu_millicores{kind=\"committed\"} 300",
            "nefele_transport_bad_frames_total 9",
            "# TYPE nefele_transport_bad_frames counter",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "no line {line:?} in\n{text}"
            );
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    /// GET over a fresh connection; the whole response.
    #[cfg(not(madsim))]
    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        s.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        s.read_to_string(&mut response).await.unwrap();
        response
    }

    /// A running agent's metrics over HTTP: its node, its capacity from the host,
    /// and the one-member group it forms alone; another path is 404.
    #[cfg(not(madsim))]
    #[tokio::test]
    async fn a_running_agent_serves_its_metrics() {
        use crate::config::ResourceOverride;
        use nefele_core::ids::NodeId;
        let key = nefele_transport_tcp::ClusterKey::new(b"metrics test cluster key, long").unwrap();
        let config = crate::RuntimeConfig::loopback(NodeId(7), vec![], key);
        let capacity = ResourceOverride {
            cpu_millicores: 1500,
            memory_bytes: 1 << 30,
        };
        let runtime = crate::start(config, crate::sim_host::spawn(capacity))
            .await
            .unwrap();
        let server = MetricsServer::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let addr = server.local_addr().unwrap();
        tokio::spawn(server.serve(runtime.handle.clone()));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let response = get(addr, "/metrics").await;
            assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
            let body = response.split("\r\n\r\n").nth(1).unwrap();
            assert!(body.ends_with("# EOF\n"), "{body}");
            assert!(body.lines().any(|l| l == "nefele_node 7"), "{body}");
            let has = |line: &str| body.lines().any(|l| l == line);
            if has("nefele_host_cpu_millicores{kind=\"capacity\"} 1500")
                && has("nefele_federation_leader{level=\"0\"} 1")
            {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "never reported: {body}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(get(addr, "/other").await.starts_with("HTTP/1.1 404"));
        runtime.handle.shutdown(Duration::ZERO).await.unwrap();
    }
}
