//! Discovery beacons: the core's `Output::Broadcast` delivered over UDP, and the
//! address book of the agents heard from.
//!
//! A beacon datagram is `MAGIC || body || tag`, where `body` is the bincode of a
//! [`Beacon`] (the sender's id and TCP listen address, a few other agents'
//! addresses, and optionally one core envelope frame) and `tag` is
//! HMAC-SHA256(cluster key, [`LABEL`] || MAGIC || body). The tag is checked, in
//! constant time, before anything of the body is decoded; a datagram with a bad
//! tag teaches nothing. Datagrams are capped at [`MAX_DATAGRAM`] bytes.
//!
//! Beacons go to the seeds and to every agent in the [`AddressBook`] (seed mode),
//! or to an interface's broadcast address (broadcast mode). Each carries a rotating
//! sample of the book, so addresses spread to agents that share no seed; an agent
//! that hears from a sender it did not know answers at once with an
//! introduction (a beacon without a frame), so a joiner learns the cluster's
//! addresses without waiting for the next heartbeat.
//!
//! With per-node keys, beacons are also signed: the datagram is
//! `SIGNED_MAGIC || body || identity || tag`, where `identity` is the sender's
//! node key vouching for `SIGN_LABEL || SIGNED_MAGIC || body` (see
//! `nefele_transport_tcp::node_keys`), and the tag covers the identity too. An
//! agent with per-node keys refuses unsigned beacons and beacons whose identity
//! does not prove their sender's id; one without ignores the identity.
//!
//! Freshness ([`Freshness`]): a beacon carries its sender's incarnation, a
//! counter the sender raises with every beacon, and the sender's wall clock
//! (Unix milliseconds). A receiver refuses a beacon whose time is more than
//! [`BEACON_WINDOW`] from its own clock, or whose `(incarnation, counter)` is not
//! above the highest it has accepted from that sender: a recorded beacon
//! replayed later, or twice, teaches nothing. (A receiver that restarted may
//! accept one replay from within the window; the clocks of a cluster must agree
//! within the window, e.g. by NTP.)
//!
//! Datagrams get lost (and a seed may start after its joiners), so the driver
//! repeats its last broadcast to every seed it has not heard from yet, every
//! [`SEED_RETRY`], and introductions carry that last broadcast too: the agent
//! introduced to learns of the sender at once, not at its next heartbeat.
//!
//! A beacon's UDP port is its sender's TCP listen port: a seed `ip:port` names both.

use hmac::{Hmac, Mac};
use nefele_core::ids::{Incarnation, NodeId};
use nefele_transport_tcp::{ClusterKey, NodeKeys, NodeKeysError, IDENTITY_LEN};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// The first bytes of every beacon datagram (format version 2: with freshness).
pub const MAGIC: [u8; 4] = *b"NFB2";
/// The first bytes of a beacon signed with its sender's node key.
pub const SIGNED_MAGIC: [u8; 4] = *b"NFS2";
/// Domain separation of the beacon MAC from the TCP handshake's.
pub const LABEL: &[u8] = b"nefele-beacon-v2";
/// Domain separation of the node-key signature of beacons.
const SIGN_LABEL: &[u8] = b"nefele-beacon-sig-v2";
/// How far a beacon's time may be from the receiver's clock, either way.
pub const BEACON_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);
/// Bytes of the tag.
pub const TAG_LEN: usize = 32;
/// The largest datagram sent or accepted (the largest UDP payload over IPv4).
pub const MAX_DATAGRAM: usize = 65_507;
/// How often the last broadcast is repeated to the seeds not heard from yet.
pub const SEED_RETRY: std::time::Duration = std::time::Duration::from_secs(1);
/// The most addresses one beacon carries.
pub const PEERS_PER_BEACON: usize = 32;

/// What one beacon says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Beacon {
    /// The sending agent.
    pub sender: NodeId,
    /// The sender's current life.
    pub incarnation: Incarnation,
    /// Raised by the sender with every beacon of this life.
    pub counter: u64,
    /// The sender's wall clock when it sealed the beacon, in Unix milliseconds.
    pub sent_at_ms: u64,
    /// Where it listens for agents (TCP), and receives beacons (UDP).
    pub listen: SocketAddr,
    /// Other agents the sender has heard from, with their listen addresses.
    pub peers: Vec<(NodeId, SocketAddr)>,
    /// One encoded core envelope, or `None` for an introduction.
    pub frame: Option<Vec<u8>>,
}

/// Why a datagram was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BeaconError {
    /// Shorter than a magic and a tag, or longer than [`MAX_DATAGRAM`].
    #[error("datagram of {0} bytes has an impossible size")]
    Size(usize),
    /// Not a beacon of this version.
    #[error("bad magic")]
    Magic,
    /// The tag does not match: another cluster's key, or tampering.
    #[error("bad MAC (wrong cluster key?)")]
    Mac,
    /// Per-node keys are on and the beacon does not prove its sender's id.
    #[error("per-node key check failed: {0}")]
    Identity(NodeKeysError),
    /// The tag matched but the body does not decode (a bug of the sender).
    #[error("malformed body: {0}")]
    Body(String),
    /// The beacon's time is outside the window around this agent's clock.
    #[error("beacon from {sender} is {skew_ms} ms away from this agent's clock")]
    Stale {
        /// Its sender.
        sender: NodeId,
        /// How far its time is from ours.
        skew_ms: u64,
    },
    /// A beacon at or below the highest already accepted from its sender: a replay.
    #[error("beacon from {sender} replayed (counter {counter} of {incarnation} already passed)")]
    Replayed {
        /// Its sender.
        sender: NodeId,
        /// Its life.
        incarnation: Incarnation,
        /// Its counter.
        counter: u64,
    },
}

/// The wall clock in Unix milliseconds (madsim's simulated clock under `--cfg madsim`).
#[must_use]
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The highest `(incarnation, counter)` accepted from each sender (see the module docs).
///
/// Holds one entry per sender that proved it holds the cluster key.
#[derive(Debug, Default)]
pub struct Freshness {
    last: BTreeMap<NodeId, (Incarnation, u64)>,
}

impl Freshness {
    /// Accepts `beacon` at `now_ms` if it is fresh, and remembers it.
    pub fn check(&mut self, beacon: &Beacon, now_ms: u64) -> Result<(), BeaconError> {
        let skew_ms = now_ms.abs_diff(beacon.sent_at_ms);
        if u128::from(skew_ms) > BEACON_WINDOW.as_millis() {
            return Err(BeaconError::Stale {
                sender: beacon.sender,
                skew_ms,
            });
        }
        let seen = (beacon.incarnation, beacon.counter);
        if self
            .last
            .get(&beacon.sender)
            .is_some_and(|&last| seen <= last)
        {
            return Err(BeaconError::Replayed {
                sender: beacon.sender,
                incarnation: beacon.incarnation,
                counter: beacon.counter,
            });
        }
        self.last.insert(beacon.sender, seen);
        Ok(())
    }
}

fn options() -> impl bincode::Options {
    use bincode::Options;
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_big_endian()
        .reject_trailing_bytes()
        .with_limit(MAX_DATAGRAM as u64)
}

/// Seals and opens beacons with the cluster key (and this node's keys, when on).
#[derive(Clone, Debug)]
pub struct BeaconCodec {
    key: ClusterKey,
    node_keys: Option<NodeKeys>,
}

/// What a node key signs for a beacon whose signed part (magic and body) is `signed`.
fn to_sign(signed: &[u8]) -> Vec<u8> {
    [SIGN_LABEL, signed].concat()
}

impl BeaconCodec {
    /// A codec for `key`.
    #[must_use]
    pub fn new(key: ClusterKey) -> Self {
        BeaconCodec {
            key,
            node_keys: None,
        }
    }

    /// A codec for `key` that signs with, and requires, per-node keys.
    #[must_use]
    pub fn with_node_keys(key: ClusterKey, node_keys: Option<NodeKeys>) -> Self {
        BeaconCodec { key, node_keys }
    }

    fn mac(&self) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.key.as_bytes())
            .expect("HMAC takes keys of any length");
        mac.update(LABEL);
        mac
    }

    /// The datagram for `beacon`, or `None` if it would be over [`MAX_DATAGRAM`].
    #[must_use]
    pub fn seal(&self, beacon: &Beacon) -> Option<Vec<u8>> {
        use bincode::Options;
        let magic = if self.node_keys.is_some() {
            SIGNED_MAGIC
        } else {
            MAGIC
        };
        let mut out = magic.to_vec();
        options().serialize_into(&mut out, beacon).ok()?;
        if let Some(keys) = &self.node_keys {
            let identity = keys.identity(&to_sign(&out));
            out.extend_from_slice(&identity);
        }
        if out.len() + TAG_LEN > MAX_DATAGRAM {
            return None;
        }
        let mut mac = self.mac();
        mac.update(&out);
        out.extend_from_slice(&mac.finalize().into_bytes());
        Some(out)
    }

    /// The beacon in `datagram`, checked against the key before it is decoded.
    pub fn open(&self, datagram: &[u8]) -> Result<Beacon, BeaconError> {
        use bincode::Options;
        if datagram.len() < MAGIC.len() + TAG_LEN || datagram.len() > MAX_DATAGRAM {
            return Err(BeaconError::Size(datagram.len()));
        }
        let (signed, tag) = datagram.split_at(datagram.len() - TAG_LEN);
        let has_identity = match &signed[..MAGIC.len()] {
            m if m == MAGIC => false,
            m if m == SIGNED_MAGIC => true,
            _ => return Err(BeaconError::Magic),
        };
        let mut mac = self.mac();
        mac.update(signed);
        mac.verify_slice(tag).map_err(|_| BeaconError::Mac)?;
        let (body, identity) = if has_identity {
            let at = signed
                .len()
                .checked_sub(IDENTITY_LEN)
                .filter(|&at| at >= MAGIC.len())
                .ok_or(BeaconError::Size(datagram.len()))?;
            signed.split_at(at)
        } else {
            (signed, &[][..])
        };
        let beacon: Beacon = options()
            .deserialize(&body[MAGIC.len()..])
            .map_err(|e| BeaconError::Body(e.to_string()))?;
        // Without per-node keys of our own, an identity cannot be checked: ignored.
        if let Some(keys) = &self.node_keys {
            let identity: &[u8; IDENTITY_LEN] = identity
                .try_into()
                .map_err(|_| BeaconError::Identity(NodeKeysError::Missing(beacon.sender)))?;
            keys.verify_peer(beacon.sender, identity, &to_sign(body))
                .map_err(BeaconError::Identity)?;
        }
        // Each listed peer is dialed: a sender lists no more than its sample.
        if beacon.peers.len() > PEERS_PER_BEACON {
            return Err(BeaconError::Body(format!(
                "{} peers listed, more than {PEERS_PER_BEACON}",
                beacon.peers.len()
            )));
        }
        Ok(beacon)
    }
}

/// The listen addresses of the agents heard from, and where beacons go.
///
/// Invariant: never holds this agent's own id.
#[derive(Debug, Clone)]
pub struct AddressBook {
    me: NodeId,
    addrs: BTreeMap<NodeId, SocketAddr>,
    /// Where the next sample starts, so successive beacons cover the whole book.
    cursor: Option<NodeId>,
}

impl AddressBook {
    /// An empty book for agent `me`.
    #[must_use]
    pub fn new(me: NodeId) -> Self {
        AddressBook {
            me,
            addrs: BTreeMap::new(),
            cursor: None,
        }
    }

    /// Records that `node` listens at `addr`; true if that is news (new or moved).
    pub fn learn(&mut self, node: NodeId, addr: SocketAddr) -> bool {
        if node == self.me || addr.port() == 0 || addr.ip().is_unspecified() {
            return false;
        }
        self.addrs.insert(node, addr) != Some(addr)
    }

    /// Where `node` listens, if known.
    #[must_use]
    pub fn addr(&self, node: NodeId) -> Option<SocketAddr> {
        self.addrs.get(&node).copied()
    }

    /// Every known agent and its address, in id order.
    pub fn iter(&self) -> impl Iterator<Item = (NodeId, SocketAddr)> + '_ {
        self.addrs.iter().map(|(n, a)| (*n, *a))
    }

    /// Up to [`PEERS_PER_BEACON`] entries, continuing where the last sample stopped.
    pub fn sample(&mut self) -> Vec<(NodeId, SocketAddr)> {
        let start = self
            .cursor
            .map_or(NodeId(0), |c| NodeId(c.0.wrapping_add(1)));
        let mut out: Vec<_> = self
            .addrs
            .range(start..)
            .chain(self.addrs.range(..start))
            .take(PEERS_PER_BEACON)
            .map(|(n, a)| (*n, *a))
            .collect();
        self.cursor = out.last().map(|(n, _)| *n);
        out.sort_unstable();
        out
    }
}

/// Counts dropped datagrams and logs them at most once per `every`.
#[derive(Debug)]
pub struct DropLog {
    every: std::time::Duration,
    last: Option<tokio::time::Instant>,
    suppressed: u64,
    /// Every datagram dropped so far.
    pub total: u64,
}

impl DropLog {
    /// Logs at most once per `every`.
    #[must_use]
    pub fn new(every: std::time::Duration) -> Self {
        DropLog {
            every,
            last: None,
            suppressed: 0,
            total: 0,
        }
    }

    /// Records a drop of a datagram from `from`.
    pub fn dropped(&mut self, from: SocketAddr, error: &BeaconError) {
        self.total += 1;
        let now = tokio::time::Instant::now();
        if self
            .last
            .is_some_and(|l| now.duration_since(l) < self.every)
        {
            self.suppressed += 1;
            return;
        }
        tracing::warn!(%from, %error, suppressed = self.suppressed, total = self.total, "beacon dropped");
        self.last = Some(now);
        self.suppressed = 0;
    }
}

/// Where beacons go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Targets {
    /// The seeds, and every agent in the address book.
    Seeds(Vec<SocketAddr>),
    /// One broadcast address.
    Broadcast(SocketAddr),
}

/// The UDP side of beacons: one socket, a task that receives, and the targets.
#[derive(Debug)]
pub struct BeaconSocket {
    socket: std::sync::Arc<tokio::net::UdpSocket>,
    targets: Targets,
    /// Datagrams received, with their source, as the receiving task read them.
    pub incoming: tokio::sync::mpsc::Receiver<(Vec<u8>, SocketAddr)>,
    receiver: tokio::task::JoinHandle<()>,
    /// Datagrams that could not be sent.
    pub send_errors: u64,
}

/// How many received datagrams may wait for the driver; more are dropped.
const INCOMING_QUEUE: usize = 1024;

impl BeaconSocket {
    /// Binds `bind` (UDP) and starts receiving.
    pub async fn bind(bind: SocketAddr, targets: Targets) -> std::io::Result<Self> {
        let socket = tokio::net::UdpSocket::bind(bind).await?;
        #[cfg(not(madsim))]
        if matches!(targets, Targets::Broadcast(_)) {
            socket.set_broadcast(true)?;
        }
        let socket = std::sync::Arc::new(socket);
        let (tx, incoming) = tokio::sync::mpsc::channel(INCOMING_QUEUE);
        let receiver = tokio::spawn(receive(socket.clone(), tx));
        Ok(BeaconSocket {
            socket,
            targets,
            incoming,
            receiver,
            send_errors: 0,
        })
    }

    /// Sends `datagram` to every target (seed mode: the seeds and `book`, each once).
    pub async fn send(&mut self, datagram: &[u8], book: &AddressBook) {
        let to: Vec<SocketAddr> = match &self.targets {
            Targets::Broadcast(addr) => vec![*addr],
            Targets::Seeds(seeds) => {
                let mut all: Vec<SocketAddr> = seeds
                    .iter()
                    .copied()
                    .chain(book.iter().map(|(_, a)| a))
                    .collect();
                all.sort_unstable();
                all.dedup();
                all
            }
        };
        for addr in to {
            self.send_to(datagram, addr).await;
        }
    }

    /// The seeds no agent in `book` listens at (none in broadcast mode), but `me`.
    #[must_use]
    pub fn unheard_seeds(&self, book: &AddressBook, me: SocketAddr) -> Vec<SocketAddr> {
        match &self.targets {
            Targets::Broadcast(_) => Vec::new(),
            Targets::Seeds(seeds) => seeds
                .iter()
                .copied()
                .filter(|s| *s != me && book.iter().all(|(_, a)| a != *s))
                .collect(),
        }
    }

    /// Sends `datagram` to one address.
    pub async fn send_to(&mut self, datagram: &[u8], addr: SocketAddr) {
        // madsim's `send_to` takes the address first; tokio's takes the bytes first.
        #[cfg(not(madsim))]
        let sent = self.socket.send_to(datagram, addr).await;
        #[cfg(madsim)]
        let sent = self.socket.send_to(addr, datagram).await;
        if let Err(e) = sent {
            self.send_errors += 1;
            tracing::debug!(%addr, error = %e, "beacon not sent");
        }
    }
}

impl Drop for BeaconSocket {
    fn drop(&mut self) {
        self.receiver.abort();
    }
}

async fn receive(
    socket: std::sync::Arc<tokio::net::UdpSocket>,
    tx: tokio::sync::mpsc::Sender<(Vec<u8>, SocketAddr)>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((len, from)) => {
                if tx.try_send((buf[..len].to_vec(), from)).is_err() && tx.is_closed() {
                    return;
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "beacon receive failed");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
}

/// The broadcast address of `interface`'s first IPv4 address (broadcast mode).
#[cfg(not(madsim))]
pub fn broadcast_address(interface: &str) -> Result<std::net::Ipv4Addr, String> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(|e| format!("getifaddrs: {e}"))?;
    for ifa in addrs.filter(|i| i.interface_name == interface) {
        if let Some(b) = ifa.broadcast.as_ref().and_then(|b| b.as_sockaddr_in()) {
            return Ok(b.ip());
        }
    }
    Err(format!(
        "interface `{interface}` has no IPv4 broadcast address"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codec(key: &[u8]) -> BeaconCodec {
        BeaconCodec::new(ClusterKey::new(key).unwrap())
    }

    fn beacon() -> Beacon {
        Beacon {
            sender: NodeId(7),
            incarnation: Incarnation(2),
            counter: 10,
            sent_at_ms: 1_000_000,
            listen: "10.0.0.7:7600".parse().unwrap(),
            peers: vec![(NodeId(2), "10.0.0.2:7600".parse().unwrap())],
            frame: Some(vec![1, 2, 3]),
        }
    }

    const KEY: &[u8] = b"the right cluster key, 32 bytes!";

    #[test]
    fn a_sealed_beacon_opens_with_the_same_key() {
        let c = codec(KEY);
        let d = c.seal(&beacon()).unwrap();
        assert_eq!(c.open(&d), Ok(beacon()));
    }

    #[test]
    fn another_key_or_a_flipped_bit_is_refused() {
        let d = codec(KEY).seal(&beacon()).unwrap();
        assert_eq!(
            codec(b"some other key, long enough").open(&d),
            Err(BeaconError::Mac)
        );
        for i in [MAGIC.len(), d.len() / 2, d.len() - 1] {
            let mut bad = d.clone();
            bad[i] ^= 1;
            assert_eq!(codec(KEY).open(&bad), Err(BeaconError::Mac), "bit at {i}");
        }
        let mut bad = d.clone();
        bad[0] = b'X';
        assert_eq!(codec(KEY).open(&bad), Err(BeaconError::Magic));
    }

    #[test]
    fn malformed_datagrams_are_errors_not_panics() {
        let c = codec(KEY);
        assert_eq!(c.open(&[]), Err(BeaconError::Size(0)));
        assert_eq!(c.open(&[0; 35]), Err(BeaconError::Size(35)));
        assert!(c.open(&vec![0; MAX_DATAGRAM + 1]).is_err());
        // A well-tagged body that is garbage (a length claiming 2^60 peers) is refused.
        let mut signed = MAGIC.to_vec();
        signed.extend_from_slice(&[0, 0, 0, 7]);
        // Incarnation, counter, time.
        signed.extend_from_slice(&[0; 20]);
        signed.extend_from_slice(&[0; 10]);
        signed.extend_from_slice(&(1u64 << 60).to_be_bytes());
        let mut mac = c.mac();
        mac.update(&signed);
        signed.extend_from_slice(&mac.finalize().into_bytes());
        assert!(matches!(c.open(&signed), Err(BeaconError::Body(_))));
    }

    proptest::proptest! {
        #[test]
        fn opening_arbitrary_datagrams_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048)) {
            let c = codec(KEY);
            let _ = c.open(&bytes);
            // The same bytes as a body under a valid tag reach the decoder itself.
            let mut signed = MAGIC.to_vec();
            signed.extend_from_slice(&bytes);
            let mut mac = c.mac();
            mac.update(&signed);
            signed.extend_from_slice(&mac.finalize().into_bytes());
            let _ = c.open(&signed);
        }
    }

    #[test]
    fn a_beacon_listing_too_many_peers_is_refused() {
        let mut b = beacon();
        b.peers = (0..=PEERS_PER_BEACON as u32)
            .map(|i| (NodeId(i), SocketAddr::from(([10, 0, 0, 1], 7000))))
            .collect();
        let c = codec(KEY);
        assert!(matches!(
            c.open(&c.seal(&b).unwrap()),
            Err(BeaconError::Body(_))
        ));
    }

    #[test]
    fn stale_and_replayed_beacons_are_refused() {
        let mut fresh = Freshness::default();
        let now = 1_000_000;
        let b = beacon();
        assert_eq!(fresh.check(&b, now), Ok(()));
        assert!(matches!(
            fresh.check(&b, now),
            Err(BeaconError::Replayed { .. })
        ));
        let older = Beacon {
            counter: 9,
            ..beacon()
        };
        assert!(matches!(
            fresh.check(&older, now),
            Err(BeaconError::Replayed { .. })
        ));
        let next = Beacon {
            counter: 11,
            ..beacon()
        };
        assert_eq!(fresh.check(&next, now + 5), Ok(()));
        // A new life starts its counter again, and its old life's beacons are refused.
        let reborn = Beacon {
            incarnation: Incarnation(3),
            counter: 0,
            ..beacon()
        };
        assert_eq!(fresh.check(&reborn, now), Ok(()));
        assert!(fresh
            .check(
                &Beacon {
                    counter: 12,
                    ..beacon()
                },
                now
            )
            .is_err());
        // Outside the window either way.
        let window = BEACON_WINDOW.as_millis() as u64;
        let late = Beacon {
            counter: 1,
            ..reborn.clone()
        };
        assert!(matches!(
            fresh.check(&late, now + window + 1),
            Err(BeaconError::Stale { .. })
        ));
        assert!(matches!(
            fresh.check(&late, now - window - 1),
            Err(BeaconError::Stale { .. })
        ));
        assert_eq!(fresh.check(&late, now + window), Ok(()));
        // Other senders are independent.
        let other = Beacon {
            sender: NodeId(8),
            ..beacon()
        };
        assert_eq!(fresh.check(&other, now), Ok(()));
    }

    #[tokio::test]
    async fn with_per_node_keys_beacons_prove_their_sender() {
        use nefele_transport_tcp::ClusterAuthority;
        let key = ClusterKey::new(KEY).unwrap();
        let ca = ClusterAuthority::generate();
        let keyed = |n: u32| BeaconCodec::with_node_keys(key.clone(), Some(ca.issue(NodeId(n))));
        let seven = keyed(7).seal(&beacon()).unwrap();
        assert_eq!(keyed(1).open(&seven), Ok(beacon()));
        // An agent without per-node keys still reads it.
        assert_eq!(codec(KEY).open(&seven), Ok(beacon()));
        // A key holder signing as node 8 while claiming 7, an unsigned beacon, and
        // a foreign authority's keys for 7 are refused.
        let claims_seven = keyed(8).seal(&beacon()).unwrap();
        assert_eq!(
            keyed(1).open(&claims_seven),
            Err(BeaconError::Identity(NodeKeysError::BadCertificate(
                NodeId(7)
            )))
        );
        assert_eq!(
            keyed(1).open(&codec(KEY).seal(&beacon()).unwrap()),
            Err(BeaconError::Identity(NodeKeysError::Missing(NodeId(7))))
        );
        let foreign = BeaconCodec::with_node_keys(
            key.clone(),
            Some(ClusterAuthority::generate().issue(NodeId(7))),
        );
        assert!(matches!(
            keyed(1).open(&foreign.seal(&beacon()).unwrap()),
            Err(BeaconError::Identity(_))
        ));
    }

    #[test]
    fn an_oversized_beacon_is_not_sealed() {
        let mut b = beacon();
        b.frame = Some(vec![0; MAX_DATAGRAM]);
        assert_eq!(codec(KEY).seal(&b), None);
    }

    #[test]
    fn the_book_ignores_itself_and_reports_news() {
        let mut book = AddressBook::new(NodeId(1));
        let a: SocketAddr = "10.0.0.2:7600".parse().unwrap();
        assert!(!book.learn(NodeId(1), a));
        assert!(book.learn(NodeId(2), a));
        assert!(!book.learn(NodeId(2), a));
        assert!(book.learn(NodeId(2), "10.0.0.3:7600".parse().unwrap()));
        assert!(!book.learn(NodeId(3), "0.0.0.0:7600".parse().unwrap()));
    }

    #[test]
    fn samples_rotate_over_the_whole_book() {
        let mut book = AddressBook::new(NodeId(0));
        for i in 1..=(PEERS_PER_BEACON as u32 * 2 + 5) {
            book.learn(
                NodeId(i),
                SocketAddr::from(([10, 0, 0, 1], 7000 + i as u16)),
            );
        }
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..3 {
            let s = book.sample();
            assert!(s.len() <= PEERS_PER_BEACON);
            seen.extend(s.into_iter().map(|(n, _)| n));
        }
        assert_eq!(seen.len(), PEERS_PER_BEACON * 2 + 5);
    }
}
