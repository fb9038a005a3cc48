//! The driver: one task that owns the core [`Agent`] and carries its inputs in and
//! its outputs out.
//!
//! The loop selects over transport events, beacon datagrams, host events, handle
//! requests and the agent's next deadline. After every input it drains
//! [`Agent::poll_output`]: `Send` is encoded and queued on the transport,
//! `Broadcast` becomes a beacon, `ApiReply` goes to the caller waiting on that
//! request id, `Host` goes to the host backend, `External` to the external proxy's
//! connections ([`crate::proxy`], whose reports come back as `Input::External`) and
//! `Notice` to the log.
//!
//! Time: the core's [`Time`] is the time elapsed since the driver started, on
//! `tokio::time::Instant`, so madsim's virtual clock drives it in simulation.
//!
//! Invariants: nothing a peer or a client sends panics the driver (bad frames and
//! datagrams are counted and logged); a full send queue is counted, never fatal;
//! every pending call is answered or, when the driver stops, its caller learns
//! that the runtime is gone (its reply channel is dropped).

use crate::beacon::{
    unix_ms, AddressBook, Beacon, BeaconCodec, BeaconSocket, DropLog, Freshness, SEED_RETRY,
};
use crate::handle::{Answer, Hold, Request};
use crate::host_link::HostLink;
use crate::proxy::{Proxy, ProxyRules, ProxyStats};
use crate::transport::AgentTransport;
use nefele::proto::{Call, GroupView, Member, MembersView, Reply};
use nefele_core::agent::{Agent, ApiCall, Input, Notice, Output, RequestId};
use nefele_core::ids::{NodeId, TenantId};
use nefele_core::wire::codec::{self, DEFAULT_MAX_FRAME};
use nefele_core::{Time, TransportEvent};
use nefele_transport_tcp::TransportError;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::mpsc;

/// The most client requests taken from the queue before the agent's outputs are drained.
const CALL_BATCH: usize = 64;
/// How often pending waits are checked for a caller that left.
const ABANDONED_SWEEP: Duration = Duration::from_millis(250);
use tokio::time::Instant;

/// What went wrong along the way, for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DriverStats {
    /// Frames from peers that did not decode, or claimed another sender.
    pub bad_frames: u64,
    /// Messages not queued because the peer's send queue was full.
    pub queue_full: u64,
    /// Messages for agents whose address is not known (yet).
    pub unknown_peer: u64,
    /// Beacon datagrams dropped (bad MAC, malformed, or a bad frame inside).
    pub bad_beacons: u64,
    /// Authentic beacons refused as replayed or outside the time window.
    pub stale_beacons: u64,
    /// The external proxy's connections.
    pub proxy: ProxyStats,
}

/// The driver's state. See the module docs.
pub(crate) struct Driver {
    agent: Agent,
    /// When the driver started: the core's time zero.
    epoch: Instant,
    transport: AgentTransport,
    beacons: BeaconSocket,
    codec: BeaconCodec,
    book: AddressBook,
    /// The highest beacon accepted from each sender.
    freshness: Freshness,
    /// Raised with every beacon this agent seals.
    beacon_counter: u64,
    /// The address other agents reach this one at, as configured.
    listen: SocketAddr,
    host: HostLink,
    /// The external proxy's connections (none unless this agent is a proxy).
    proxy: Proxy,
    requests: mpsc::Receiver<Request>,
    /// Calls the agent works on: where the answer goes, and what to drop with it.
    pending: BTreeMap<RequestId, (Box<dyn Answer>, Option<Hold>)>,
    /// The pending calls that are waits (for a process's end, or a receive waiting
    /// for mail): when their caller is gone, the agent is told to forget them
    /// (`Input::Cancel`) and their hold is dropped.
    waits: BTreeSet<RequestId>,
    next_request: u64,
    stats: DriverStats,
    drop_log: DropLog,
    /// The agent's last broadcast frame: repeated to unheard seeds, and in introductions.
    last_broadcast: Option<Vec<u8>>,
    /// The groups (level, leader) last logged, to log changes only.
    groups_logged: Vec<(u8, NodeId)>,
}

/// Everything the driver is built from.
pub(crate) struct Parts {
    pub(crate) agent: Agent,
    pub(crate) epoch: Instant,
    pub(crate) transport: AgentTransport,
    pub(crate) beacons: BeaconSocket,
    pub(crate) codec: BeaconCodec,
    pub(crate) listen: SocketAddr,
    pub(crate) host: HostLink,
    pub(crate) proxy: ProxyRules,
    pub(crate) requests: mpsc::Receiver<Request>,
}

impl Driver {
    pub(crate) fn new(parts: Parts) -> Self {
        let me = parts.agent.identity().node;
        Driver {
            agent: parts.agent,
            epoch: parts.epoch,
            transport: parts.transport,
            beacons: parts.beacons,
            codec: parts.codec,
            book: AddressBook::new(me),
            freshness: Freshness::default(),
            beacon_counter: 0,
            listen: parts.listen,
            host: parts.host,
            proxy: Proxy::new(parts.proxy),
            requests: parts.requests,
            pending: BTreeMap::new(),
            waits: BTreeSet::new(),
            next_request: 0,
            stats: DriverStats::default(),
            drop_log: DropLog::new(Duration::from_secs(10)),
            last_broadcast: None,
            groups_logged: Vec::new(),
        }
    }

    fn now(&self) -> Time {
        Time::from_nanos(u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }

    fn deadline(&self) -> Option<Instant> {
        let t = self.agent.next_timeout()?;
        self.epoch.checked_add(Duration::from_nanos(t.as_nanos()))
    }

    /// Runs until a shutdown request has been carried out, or every handle is gone.
    pub(crate) async fn run(mut self) -> DriverStats {
        // The outputs of `Agent::new` (the boot announce) are still queued.
        self.drain().await;
        let mut seed_retry = tokio::time::interval(SEED_RETRY);
        seed_retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut abandoned = tokio::time::interval(ABANDONED_SWEEP);
        abandoned.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (grace_end, done) = 'run: loop {
            let deadline = self.deadline();
            tokio::select! {
                event = self.transport.next_event() => self.on_transport(event),
                datagram = self.beacons.incoming.recv(), if !self.beacons.incoming.is_closed() => {
                    match datagram {
                        Some((bytes, from)) => self.on_datagram(&bytes, from).await,
                        None => tracing::error!("beacon receiver stopped; discovery is deaf"),
                    }
                }
                event = self.host.events.recv() => match event {
                    Some(event) => self.input(Input::Host(event)),
                    None => {
                        tracing::error!("the host backend stopped; the agent stops");
                        return self.stats;
                    }
                },
                request = self.requests.recv() => {
                    // The requests queued already are taken together (up to
                    // CALL_BATCH), and the agent's outputs drained once after them.
                    let (mut next, mut taken) = (Some(request), 0);
                    while let Some(request) = next.take() {
                        match request {
                            Some(Request::Call { tenant, call, reply, hold }) => self.on_call(tenant, *call, reply, hold),
                            Some(Request::Where { node, reply }) => {
                                let _ = reply.send(crate::handle::AgentAddrs {
                                    listen: self.book.addr(node),
                                    connected: self.transport.connected_from(node),
                                });
                            }
                            Some(Request::Metrics { reply }) => {
                                let _ = reply.send(crate::metrics::render(&self.snapshot()));
                            }
                            Some(Request::Shutdown { grace, done }) => break 'run (Instant::now() + grace, Some(done)),
                            None => break 'run (Instant::now(), None),
                        }
                        taken += 1;
                        if taken < CALL_BATCH {
                            next = self.requests.try_recv().ok().map(Some);
                        }
                    }
                }
                event = self.proxy.next() => self.input(Input::External(event)),
                () = sleep_until(deadline) => self.input(Input::Timeout),
                _ = seed_retry.tick() => self.retry_seeds().await,
                _ = abandoned.tick() => self.cancel_abandoned_waits(),
            }
            self.drain().await;
        };
        self.leave(grace_end).await;
        self.stats.proxy = self.proxy.stats();
        tracing::info!(stats = ?self.stats, "agent stopped");
        if let Some(done) = done {
            let _ = done.send(());
        }
        self.stats
    }

    /// Leaves the cluster, then keeps the messages flowing until `grace_end`.
    async fn leave(&mut self, grace_end: Instant) {
        tracing::info!("leaving the cluster");
        let now = self.now();
        self.agent.leave(now);
        self.drain().await;
        while Instant::now() < grace_end {
            let deadline = self.deadline().map_or(grace_end, |d| d.min(grace_end));
            tokio::select! {
                event = self.transport.next_event() => self.on_transport(event),
                event = self.host.events.recv(), if !self.host.events.is_closed() => {
                    if let Some(event) = event {
                        self.input(Input::Host(event));
                    }
                }
                () = tokio::time::sleep_until(deadline) => {
                    if self.deadline().is_some_and(|d| d <= Instant::now()) {
                        self.input(Input::Timeout);
                    }
                }
            }
            self.drain().await;
        }
    }

    fn input(&mut self, input: Input) {
        let now = self.now();
        self.agent.handle(now, input);
    }

    fn on_transport(&mut self, event: TransportEvent) {
        match event {
            TransportEvent::Received { from, frame } => {
                match codec::decode(&frame, DEFAULT_MAX_FRAME) {
                    Ok(envelope) if envelope.from == from => self.input(Input::Message(envelope)),
                    Ok(envelope) => {
                        self.stats.bad_frames += 1;
                        tracing::warn!(%from, claimed = %envelope.from, "frame claims another sender; dropped");
                    }
                    Err(e) => {
                        self.stats.bad_frames += 1;
                        tracing::warn!(%from, error = %e, "undecodable frame dropped");
                    }
                }
            }
            TransportEvent::PeerUp(peer) => tracing::debug!(%peer, "connected"),
            TransportEvent::PeerDown(peer) => tracing::debug!(%peer, "disconnected"),
        }
    }

    /// A beacon datagram arrived from `from`.
    async fn on_datagram(&mut self, bytes: &[u8], from: SocketAddr) {
        let beacon = match self.codec.open(bytes) {
            Ok(b) => b,
            Err(e) => {
                self.stats.bad_beacons += 1;
                self.drop_log.dropped(from, &e);
                return;
            }
        };
        let me = self.agent.identity().node;
        if beacon.sender == me {
            return; // our own broadcast, or a seed list naming ourselves
        }
        if let Err(e) = self.freshness.check(&beacon, unix_ms()) {
            self.stats.stale_beacons += 1;
            self.drop_log.dropped(from, &e);
            return;
        }
        // An agent listening on an unspecified address is reached where its beacon came from.
        let listen = if beacon.listen.ip().is_unspecified() {
            SocketAddr::new(from.ip(), beacon.listen.port())
        } else {
            beacon.listen
        };
        let sender_is_news = self.learn(beacon.sender, listen, true);
        let mut introduced = Vec::new();
        for (node, addr) in beacon.peers {
            if self.learn(node, addr, false) {
                introduced.push(addr);
            }
        }
        if sender_is_news {
            self.introduce(from).await;
        }
        for addr in introduced {
            self.introduce(addr).await;
        }
        let Some(frame) = beacon.frame else { return };
        match codec::decode(&frame, DEFAULT_MAX_FRAME) {
            Ok(envelope) if envelope.from == beacon.sender => self.input(Input::Message(envelope)),
            _ => {
                self.stats.bad_beacons += 1;
                tracing::warn!(%from, sender = %beacon.sender, "beacon carries a bad frame; dropped");
            }
        }
    }

    /// Records `node`'s address (and tells the transport) if it is news. A known
    /// address changes only on the word of the node itself (`own`), and not while
    /// a connection to it is up: a beacon alone never redirects a live connection,
    /// and one agent cannot move another's address.
    fn learn(&mut self, node: NodeId, addr: SocketAddr, own: bool) -> bool {
        if let Some(known) = self.book.addr(node) {
            if known != addr && (!own || self.transport.is_connected(node)) {
                tracing::debug!(peer = %node, %known, offered = %addr, own, "address change not taken");
                return false;
            }
        }
        let news = self.book.learn(node, addr);
        if news {
            tracing::info!(peer = %node, %addr, "learned an agent's address");
            self.transport.set_peer(node, addr);
        }
        news
    }

    fn own_beacon(&mut self, frame: Option<Vec<u8>>) -> Option<Vec<u8>> {
        self.beacon_counter += 1;
        let identity = self.agent.identity();
        let beacon = Beacon {
            sender: identity.node,
            incarnation: identity.incarnation,
            counter: self.beacon_counter,
            sent_at_ms: unix_ms(),
            listen: self.listen,
            peers: self.book.sample(),
            frame,
        };
        let sealed = self.codec.seal(&beacon);
        if sealed.is_none() {
            tracing::warn!("beacon over the datagram limit; not sent");
        }
        sealed
    }

    /// Tells the agent at `to` (a beacon socket) who we are and whom we know, with
    /// our last broadcast so that its agent learns of ours at once.
    async fn introduce(&mut self, to: SocketAddr) {
        if let Some(datagram) = self.own_beacon(self.last_broadcast.clone()) {
            self.beacons.send_to(&datagram, to).await;
        }
    }

    /// Repeats the last broadcast to the seeds not heard from yet (lost datagrams,
    /// seeds that started late).
    async fn retry_seeds(&mut self) {
        for seed in self.beacons.unheard_seeds(&self.book, self.listen) {
            self.introduce(seed).await;
        }
    }

    fn on_call(
        &mut self,
        tenant: TenantId,
        call: Call,
        reply: Box<dyn Answer>,
        hold: Option<Hold>,
    ) {
        let Some(call) = call.into_api(tenant) else {
            reply.answer(Reply::Members(self.members()));
            return;
        };
        self.next_request += 1;
        let request = RequestId(self.next_request);
        if matches!(
            call,
            ApiCall::Wait { .. } | ApiCall::Recv { wait: Some(_), .. }
        ) {
            self.waits.insert(request);
        }
        self.pending.insert(request, (reply, hold));
        self.input(Input::Api {
            request,
            call: Box::new(call),
        });
    }

    /// Waits whose caller is gone (its connection closed) are forgotten by the
    /// agent, and their budget is given back (SECURITY.md, the API socket).
    fn cancel_abandoned_waits(&mut self) {
        let gone: Vec<RequestId> = self
            .waits
            .iter()
            .filter(|r| {
                self.pending
                    .get(r)
                    .is_none_or(|(caller, _)| caller.abandoned())
            })
            .copied()
            .collect();
        for request in gone {
            self.waits.remove(&request);
            if self.pending.remove(&request).is_some() {
                self.input(Input::Cancel { request });
            }
        }
    }

    /// What the agent reports to a metrics scrape.
    fn snapshot(&self) -> crate::metrics::Snapshot {
        let me = self.agent.identity().node;
        let services = self.agent.services();
        let (capacity, committed, reserved) = services.placement.accounting();
        let seats = self
            .agent
            .federations()
            .first()
            .map(|f| f.seats())
            .unwrap_or_default()
            .iter()
            .map(|seat| {
                let v = seat.view();
                crate::metrics::SeatStats {
                    level: v.level,
                    members: v.members.len(),
                    leader: v.leader == me,
                    epoch: v.epoch,
                }
            })
            .collect();
        crate::metrics::Snapshot {
            node: me.0,
            neighbours: self.agent.discovery().neighbours().count(),
            seats,
            peers_known: self.book.iter().count(),
            peers_connected: self
                .book
                .iter()
                .filter(|(node, _)| self.transport.is_connected(*node))
                .count(),
            cpu_millicores: [capacity, committed, reserved].map(|d| u64::from(d.cpu_millicores)),
            memory_bytes: [capacity, committed, reserved].map(|d| d.memory_bytes),
            processes: services.placement.processes().count(),
            placement_requests: services.placement.requests_in_flight(),
            mailboxes: services.messaging.post().mailbox_count(),
            inbound_pairs: services.messaging.post().inbound_pairs(),
            calls_pending: self.pending.len(),
            waits_pending: self.waits.len(),
            driver: DriverStats {
                proxy: self.proxy.stats(),
                ..self.stats
            },
        }
    }

    /// The groups of the first federation instance, with the addresses known here.
    fn members(&self) -> MembersView {
        let identity = self.agent.identity();
        let seats = self
            .agent
            .federations()
            .first()
            .map(|f| f.seats())
            .unwrap_or_default();
        let groups = seats
            .iter()
            .map(|seat| {
                let view = seat.view();
                GroupView {
                    level: view.level,
                    leader: view.leader,
                    epoch: view.epoch,
                    members: view
                        .members
                        .iter()
                        .map(|&node| Member {
                            node,
                            addr: if node == identity.node {
                                Some(self.listen.to_string())
                            } else {
                                self.book.addr(node).map(|a| a.to_string())
                            },
                        })
                        .collect(),
                }
            })
            .collect();
        let root = seats.last().map(|s| {
            s.view()
                .ancestors
                .last()
                .copied()
                .unwrap_or(s.view().leader)
        });
        MembersView {
            node: identity.node,
            incarnation: identity.incarnation,
            groups,
            root,
        }
    }

    /// Carries out every output the agent has queued.
    async fn drain(&mut self) {
        while let Some(output) = self.agent.poll_output() {
            match output {
                Output::Send { to, envelope } => {
                    match codec::encode(&envelope, DEFAULT_MAX_FRAME) {
                        Ok(frame) => match self.transport.send(to, &frame) {
                            Ok(()) => {}
                            Err(TransportError::QueueFull(_)) => self.stats.queue_full += 1,
                            Err(TransportError::UnknownPeer(_)) => {
                                self.stats.unknown_peer += 1;
                                tracing::debug!(%to, "no address for the agent yet; message dropped");
                            }
                            Err(e) => tracing::warn!(%to, error = %e, "message not sent"),
                        },
                        Err(e) => tracing::warn!(%to, error = %e, "message not encoded"),
                    }
                }
                Output::Broadcast { envelope } => match codec::encode(&envelope, DEFAULT_MAX_FRAME)
                {
                    Ok(frame) => {
                        self.last_broadcast = Some(frame.clone());
                        if let Some(datagram) = self.own_beacon(Some(frame)) {
                            self.beacons.send(&datagram, &self.book).await;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "broadcast not encoded"),
                },
                Output::ApiReply { request, reply } => {
                    self.waits.remove(&request);
                    if let Some((caller, _hold)) = self.pending.remove(&request) {
                        caller.answer(Reply::Api(reply));
                    }
                }
                Output::Host(command) => {
                    if self.host.commands.send(*command).is_err() {
                        tracing::error!("the host backend is gone; command dropped");
                    }
                }
                Output::External(command) => self.proxy.command(command),
                Output::Notice(notice) => log_notice(notice),
            }
        }
        self.log_group_changes();
    }

    fn log_group_changes(&mut self) {
        let Some(f) = self.agent.federations().first() else {
            return;
        };
        let groups: Vec<(u8, NodeId)> = f
            .seats()
            .iter()
            .map(|s| (s.view().level, s.view().leader))
            .collect();
        if groups != self.groups_logged {
            let shown: Vec<String> = f
                .seats()
                .iter()
                .map(|s| {
                    let v = s.view();
                    format!(
                        "L{} led by {} ({} members)",
                        v.level,
                        v.leader,
                        v.members.len()
                    )
                })
                .collect();
            tracing::info!(groups = ?shown, "federation groups changed");
            self.groups_logged = groups;
        }
    }
}

fn log_notice(notice: Notice) {
    match notice {
        Notice::Federation { instance, notice } => {
            tracing::info!(instance, ?notice, "federation");
        }
        Notice::Service(notice) => tracing::debug!(?notice, "service"),
        Notice::Rejected { from, reason } => {
            tracing::debug!(?from, %reason, "peer message rejected");
        }
    }
}

/// Sleeps until `at`, or forever when there is nothing to wait for.
pub(crate) async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(all(test, not(madsim)))]
mod tests {
    use super::*;
    use crate::beacon::Targets;
    use crate::host_link;
    use nefele_core::agent::{AgentConfig, Identity};
    use nefele_core::discovery::DiscoveryMsg;
    use nefele_core::ids::Incarnation;
    use nefele_core::wire::{Envelope, Message};
    use nefele_transport_tcp::{ClusterKey, TcpConfig, TcpTransport};
    use tokio::sync::oneshot;

    const KEY: &[u8] = b"the driver test key, long enough";

    async fn driver() -> Driver {
        let (_tx, requests) = mpsc::channel(1);
        let (d, _backend) = driver_with(requests).await;
        d
    }

    /// A driver taking its calls from `requests`, with the backend's ends of its host link.
    async fn driver_with(requests: mpsc::Receiver<Request>) -> (Driver, host_link::BackendEnds) {
        let me = NodeId(1);
        let key = ClusterKey::new(KEY).unwrap();
        let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let transport = TcpTransport::bind(TcpConfig::new(me, loopback, key.clone()))
            .await
            .unwrap();
        let listen = transport.local_addr();
        let beacons = BeaconSocket::bind(listen, Targets::Seeds(vec![]))
            .await
            .unwrap();
        let (host, backend) = host_link::pair(None);
        let identity = Identity {
            node: me,
            incarnation: Incarnation(1),
        };
        let d = Driver::new(Parts {
            agent: Agent::new(AgentConfig::default(), identity, 1, Time::ZERO),
            epoch: Instant::now(),
            transport: AgentTransport::Tcp(transport),
            beacons,
            codec: BeaconCodec::new(key),
            listen,
            host,
            proxy: ProxyRules::default(),
            requests,
        });
        (d, backend)
    }

    fn heartbeat_from(node: NodeId) -> Vec<u8> {
        let envelope = Envelope {
            from: node,
            incarnation: Incarnation(3),
            body: Message::Discovery(DiscoveryMsg::Heartbeat {
                known: Default::default(),
            }),
        };
        codec::encode(&envelope, DEFAULT_MAX_FRAME).unwrap()
    }

    /// A fresh beacon: now, with a counter above every earlier one's.
    fn beacon(sender: u32, frame: Option<Vec<u8>>) -> Beacon {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Beacon {
            sender: NodeId(sender),
            incarnation: Incarnation(3),
            counter: COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            sent_at_ms: unix_ms(),
            listen: SocketAddr::from(([127, 0, 0, 2], 7000 + sender as u16)),
            peers: vec![(NodeId(40), SocketAddr::from(([127, 0, 0, 40], 7040)))],
            frame,
        }
    }

    fn neighbours(d: &Driver) -> Vec<NodeId> {
        d.agent.discovery().neighbours().map(|(n, _)| n).collect()
    }

    #[tokio::test]
    async fn a_beacon_with_a_bad_mac_teaches_nothing() {
        let mut d = driver().await;
        let stranger = BeaconCodec::new(ClusterKey::new(b"another cluster's key, long").unwrap());
        let datagram = stranger
            .seal(&beacon(2, Some(heartbeat_from(NodeId(2)))))
            .unwrap();
        let from = SocketAddr::from(([127, 0, 0, 2], 7002));
        d.on_datagram(&datagram, from).await;
        d.on_datagram(&[0xde, 0xad], from).await;
        assert_eq!(d.book.iter().count(), 0);
        assert!(neighbours(&d).is_empty());
        assert_eq!(d.stats.bad_beacons, 2);
    }

    #[tokio::test]
    async fn a_valid_beacon_teaches_addresses_and_feeds_the_agent() {
        let mut d = driver().await;
        let datagram = d
            .codec
            .seal(&beacon(2, Some(heartbeat_from(NodeId(2)))))
            .unwrap();
        d.on_datagram(&datagram, SocketAddr::from(([127, 0, 0, 2], 7002)))
            .await;
        assert_eq!(
            d.book.addr(NodeId(2)),
            Some("127.0.0.2:7002".parse().unwrap())
        );
        assert_eq!(
            d.book.addr(NodeId(40)),
            Some("127.0.0.40:7040".parse().unwrap())
        );
        assert_eq!(neighbours(&d), vec![NodeId(2)]);
        assert_eq!(d.stats.bad_beacons, 0);
    }

    #[tokio::test]
    async fn a_beacon_whose_frame_claims_another_sender_is_dropped() {
        let mut d = driver().await;
        for frame in [heartbeat_from(NodeId(5)), vec![1, 2, 3]] {
            let datagram = d.codec.seal(&beacon(2, Some(frame))).unwrap();
            d.on_datagram(&datagram, SocketAddr::from(([127, 0, 0, 2], 7002)))
                .await;
        }
        assert!(neighbours(&d).is_empty());
        assert_eq!(d.stats.bad_beacons, 2);
    }

    #[tokio::test]
    async fn an_unspecified_listen_address_is_taken_from_the_datagram() {
        let mut d = driver().await;
        let mut b = beacon(2, None);
        b.listen = "0.0.0.0:7002".parse().unwrap();
        let datagram = d.codec.seal(&b).unwrap();
        d.on_datagram(&datagram, SocketAddr::from(([127, 0, 0, 9], 7002)))
            .await;
        assert_eq!(
            d.book.addr(NodeId(2)),
            Some("127.0.0.9:7002".parse().unwrap())
        );
    }

    #[tokio::test]
    async fn a_replayed_or_stale_beacon_is_ignored() {
        let mut d = driver().await;
        let from = SocketAddr::from(([127, 0, 0, 2], 7002));
        let mut first = beacon(2, None);
        first.peers = vec![(NodeId(41), SocketAddr::from(([127, 0, 0, 41], 7041)))];
        let first = d.codec.seal(&first).unwrap();
        let second = d
            .codec
            .seal(&beacon(2, Some(heartbeat_from(NodeId(2)))))
            .unwrap();
        // The later beacon arrives first; the earlier one, replayed, teaches nothing.
        d.on_datagram(&second, from).await;
        d.on_datagram(&first, from).await;
        d.on_datagram(&second, from).await;
        assert_eq!(d.stats.stale_beacons, 2);
        assert_eq!(d.book.addr(NodeId(41)), None);
        assert_eq!(neighbours(&d), vec![NodeId(2)]);
        // A beacon sealed outside the window is refused however new its counter.
        let mut old = beacon(3, Some(heartbeat_from(NodeId(3))));
        old.sent_at_ms -= crate::beacon::BEACON_WINDOW.as_millis() as u64 + 1_000;
        d.on_datagram(&d.codec.seal(&old).unwrap(), from).await;
        assert_eq!(d.stats.stale_beacons, 3);
        assert_eq!(d.book.addr(NodeId(3)), None);
        assert_eq!(neighbours(&d), vec![NodeId(2)]);
    }

    #[tokio::test]
    async fn a_beacon_does_not_move_a_known_address_but_for_its_own_unconnected_node() {
        let mut d = driver().await;
        let from = SocketAddr::from(([127, 0, 0, 2], 7002));
        let first: SocketAddr = "127.0.0.2:7002".parse().unwrap();
        d.on_datagram(&d.codec.seal(&beacon(2, None)).unwrap(), from)
            .await;
        assert_eq!(d.book.addr(NodeId(2)), Some(first));
        // Another agent's word about node 2 does not move it.
        let mut gossip = beacon(3, None);
        gossip.peers = vec![(NodeId(2), "127.0.0.66:6666".parse().unwrap())];
        d.on_datagram(&d.codec.seal(&gossip).unwrap(), from).await;
        assert_eq!(d.book.addr(NodeId(2)), Some(first));
        // Node 2 itself, not connected: it moved.
        let mut moved = beacon(2, None);
        moved.listen = "127.0.0.3:7003".parse().unwrap();
        d.on_datagram(&d.codec.seal(&moved).unwrap(), from).await;
        assert_eq!(d.book.addr(NodeId(2)), Some(moved.listen));
        // Node 2 connected (the real one dials in): its beacon naming another address
        // does not redirect the live connection's peer.
        let key = ClusterKey::new(KEY).unwrap();
        let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let two = TcpTransport::bind(TcpConfig::new(NodeId(2), loopback, key))
            .await
            .unwrap();
        two.set_peer(NodeId(1), d.listen);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !d.transport.is_connected(NodeId(2)) {
            assert!(Instant::now() < deadline, "node 2 never connected");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut elsewhere = beacon(2, None);
        elsewhere.listen = "127.0.0.4:7004".parse().unwrap();
        d.on_datagram(&d.codec.seal(&elsewhere).unwrap(), from)
            .await;
        assert_eq!(d.book.addr(NodeId(2)), Some(moved.listen));
        assert!(d.transport.is_connected(NodeId(2)));
    }

    /// Many more calls queued at once than the driver takes in one batch are all
    /// answered, in order (a batch once dropped the request after its last).
    #[tokio::test]
    async fn every_queued_call_is_answered_across_batches() {
        use nefele_core::ids::{Incarnation, Pid};
        let n = CALL_BATCH * 3 + 5;
        let (tx, requests) = mpsc::channel(n);
        let (d, _backend) = driver_with(requests).await;
        let mut answers = Vec::new();
        for i in 0..n {
            let (reply, answer) = oneshot::channel();
            let pid = Pid::new(NodeId(1), Incarnation(1), i as u64);
            tx.try_send(Request::Call {
                tenant: TenantId(1),
                call: Box::new(Call::Info(pid)),
                reply: Box::new(reply),
                hold: None,
            })
            .unwrap();
            answers.push(answer);
        }
        let running = tokio::spawn(d.run());
        for (i, answer) in answers.into_iter().enumerate() {
            let got = tokio::time::timeout(Duration::from_secs(5), answer)
                .await
                .unwrap_or_else(|_| panic!("call {i} never answered"));
            assert!(got.is_ok(), "call {i} dropped unanswered");
        }
        running.abort();
    }

    /// The running driver's sweep (every `ABANDONED_SWEEP`) finds a wait whose
    /// caller has gone, tells the agent to forget it and drops its hold (the API
    /// server's budget); a wait whose caller is still there keeps its hold until
    /// it is answered.
    #[tokio::test]
    async fn the_sweep_cancels_the_waits_of_callers_that_left() {
        use nefele_core::agent::ApiReply;
        use nefele_core::host::{ExitStatus, HostEvent, Usage};
        use nefele_core::ids::Pid;
        use std::sync::Arc;
        let (tx, requests) = mpsc::channel(8);
        let (d, backend) = driver_with(requests).await;
        let running = tokio::spawn(d.run());
        let (tenant, pid) = (TenantId(1), Pid::new(NodeId(1), Incarnation(0), 7));
        let adopted = HostEvent::Adopted {
            pid,
            tenant,
            command: "/bin/sleep".into(),
            cpu_millicores: 1,
            memory_bytes: 1,
            age: Duration::ZERO,
        };
        backend.events.send(adopted).unwrap();
        // Each call is queued at once (the queue has room: calls go one at a time).
        let call = |call: Call, hold: Option<Hold>| {
            let (reply, answer) = oneshot::channel();
            tx.try_send(Request::Call {
                tenant,
                call: Box::new(call),
                reply: Box::new(reply),
                hold,
            })
            .unwrap();
            answer
        };
        // The process is in the agent's table once `info` finds it.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let answer = call(Call::Info(pid), None).await.unwrap();
            if matches!(answer, Reply::Api(ApiReply::Info(Ok(_)))) {
                break;
            }
            assert!(Instant::now() < deadline, "never adopted: {answer:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (left, stays) = (Arc::new(()), Arc::new(()));
        let gone = call(Call::Wait(pid), Some(Box::new(left.clone())));
        let waiting = call(Call::Wait(pid), Some(Box::new(stays.clone())));
        drop(gone);
        let t0 = Instant::now();
        while Arc::strong_count(&left) > 1 {
            // A bound for a loaded machine, not a measure of the sweep's period.
            assert!(
                t0.elapsed() < ABANDONED_SWEEP * 40,
                "the abandoned wait still holds its budget"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(ABANDONED_SWEEP * 2).await;
        assert_eq!(Arc::strong_count(&stays), 2, "a live caller's wait is kept");
        let (status, usage) = (ExitStatus::Code(3), Usage::default());
        backend
            .events
            .send(HostEvent::Exited { pid, status, usage })
            .unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the live wait is answered")
            .unwrap();
        assert_eq!(answer, Reply::Api(ApiReply::Waited(Ok(status))));
        assert_eq!(
            Arc::strong_count(&stays),
            1,
            "its hold is dropped with the answer"
        );
        running.abort();
    }
}
