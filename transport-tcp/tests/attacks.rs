//! Attacks on the transport from the network: a party on the path that alters,
//! injects or replays bytes of a live connection, and a holder of the cluster
//! key that connects under a live node's id.
//!
//! Real sockets only; the man in the middle is a TCP proxy between two
//! transports on loopback.

#![cfg(not(madsim))]

mod common;

use common::*;
use nefele_core::{NodeId, Transport, TransportEvent};
use nefele_transport_tcp::{ClusterAuthority, TcpTransport};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy does to the next chunk from the dialer to the acceptor.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tamper {
    /// Forward untouched.
    Nothing,
    /// Flip one bit of the chunk's last byte.
    Flip,
    /// Send these bytes before the chunk.
    Inject(Vec<u8>),
    /// Forward the chunk twice.
    Replay,
}

/// A TCP proxy to `target` that tampers with the dialer-to-acceptor direction on demand.
async fn proxy(target: SocketAddr) -> (SocketAddr, Arc<Mutex<Tamper>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tamper = Arc::new(Mutex::new(Tamper::Nothing));
    let control = tamper.clone();
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let Ok(outbound) = TcpStream::connect(target).await else {
                continue;
            };
            let (mut from_dialer, mut to_dialer) = inbound.into_split();
            let (mut from_acceptor, mut to_acceptor) = outbound.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut from_acceptor, &mut to_dialer).await;
            });
            let tamper = tamper.clone();
            tokio::spawn(async move {
                let mut buf = vec![0; 64 * 1024];
                loop {
                    let n = match from_dialer.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    let action = std::mem::replace(&mut *tamper.lock().unwrap(), Tamper::Nothing);
                    let mut chunk = buf[..n].to_vec();
                    let out = match action {
                        Tamper::Nothing => chunk,
                        Tamper::Flip => {
                            chunk[n - 1] ^= 1;
                            chunk
                        }
                        Tamper::Inject(mut bytes) => {
                            bytes.extend_from_slice(&chunk);
                            bytes
                        }
                        Tamper::Replay => [chunk.clone(), chunk].concat(),
                    };
                    if to_acceptor.write_all(&out).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, control)
}

/// A live connection from A (node 1) to B (node 2) through a tampering proxy.
async fn through_proxy() -> (TcpTransport, TcpTransport, Arc<Mutex<Tamper>>) {
    let mut a = start(1).await;
    let mut b = start(2).await;
    let (proxy_addr, tamper) = proxy(addr(&b)).await;
    a.set_peer(NodeId(2), proxy_addr);
    wait_up(&mut a, 2).await;
    wait_up(&mut b, 1).await;
    a.send(NodeId(2), b"before").unwrap();
    assert_eq!(receive_frames(&mut b, 1, 1).await, [b"before".to_vec()]);
    (a, b, tamper)
}

/// Frames B received from A in `events`.
fn frames(events: &[TransportEvent]) -> Vec<Vec<u8>> {
    events
        .iter()
        .filter_map(|e| match e {
            TransportEvent::Received { frame, .. } => Some(frame.clone()),
            _ => None,
        })
        .collect()
}

/// Arms `tamper`, sends `target` from A, and checks that B drops the connection
/// having received `delivered` of it, then that A reconnects and frames flow.
async fn attack(tamper: Tamper, delivered: usize) {
    let (mut a, mut b, control) = through_proxy().await;
    *control.lock().unwrap() = tamper.clone();
    a.send(NodeId(2), b"target").unwrap();
    let before = wait_for(&mut b, |e| *e == TransportEvent::PeerDown(NodeId(1))).await;
    assert_eq!(
        frames(&before),
        vec![b"target".to_vec(); delivered],
        "{tamper:?}: what B received before it closed the connection"
    );
    wait_up(&mut b, 1).await;
    wait_up(&mut a, 2).await;
    a.send(NodeId(2), b"after").unwrap();
    assert_eq!(receive_frames(&mut b, 1, 1).await, [b"after".to_vec()]);
}

#[tokio::test]
async fn an_altered_record_is_dropped_and_the_connection_closed() {
    attack(Tamper::Flip, 0).await;
}

#[tokio::test]
async fn an_injected_plaintext_frame_is_dropped_and_the_connection_closed() {
    // What a frame looked like before encryption: a length and an envelope.
    let mut forged = 8u32.to_be_bytes().to_vec();
    forged.extend_from_slice(b"NFLE\0\x02ok");
    attack(Tamper::Inject(forged), 0).await;
}

#[tokio::test]
async fn an_injected_record_with_a_guessed_tag_is_dropped_and_the_connection_closed() {
    let mut forged = 40u32.to_be_bytes().to_vec();
    forged.extend_from_slice(&[0x5a; 40]);
    attack(Tamper::Inject(forged), 0).await;
}

#[tokio::test]
async fn a_replayed_record_is_delivered_once_and_the_connection_closed() {
    attack(Tamper::Replay, 1).await;
}

#[tokio::test]
async fn the_path_sees_no_frame_in_clear() {
    // A recording proxy: every byte from A to B.
    let mut a = start(1).await;
    let mut b = start(2).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let target = addr(&b);
    tokio::spawn(async move {
        let (inbound, _) = listener.accept().await.unwrap();
        let outbound = TcpStream::connect(target).await.unwrap();
        let (mut from_dialer, mut to_dialer) = inbound.into_split();
        let (mut from_acceptor, mut to_acceptor) = outbound.into_split();
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut from_acceptor, &mut to_dialer).await;
        });
        let mut buf = vec![0; 64 * 1024];
        while let Ok(n @ 1..) = from_dialer.read(&mut buf).await {
            record.lock().unwrap().extend_from_slice(&buf[..n]);
            if to_acceptor.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    });
    a.set_peer(NodeId(2), proxy_addr);
    wait_up(&mut a, 2).await;
    let secret = b"a tenant's secret that must not cross the wire in clear";
    a.send(NodeId(2), secret).unwrap();
    assert_eq!(receive_frames(&mut b, 1, 1).await, [secret.to_vec()]);
    let seen = seen.lock().unwrap().clone();
    assert!(seen.len() > secret.len());
    assert!(
        !seen.windows(16).any(|w| secret.windows(16).any(|s| s == w)),
        "plaintext on the wire"
    );
}

/// Node 1 listens; node 2 dials it (so the live connection is the one the
/// tie-break would let a newer connection from "node 2" replace).
async fn live_pair(keyed: bool) -> (TcpTransport, TcpTransport, Option<ClusterAuthority>) {
    let authority = keyed.then(ClusterAuthority::generate);
    let mut one = config(1, 1);
    let mut two = config(2, 1);
    if let Some(ca) = &authority {
        one.node_keys = Some(ca.issue(NodeId(1)));
        two.node_keys = Some(ca.issue(NodeId(2)));
    }
    let mut one = TcpTransport::bind(one).await.unwrap();
    let mut two = TcpTransport::bind(two).await.unwrap();
    two.set_peer(NodeId(1), addr(&one));
    wait_up(&mut one, 2).await;
    wait_up(&mut two, 1).await;
    (one, two, authority)
}

#[tokio::test]
async fn with_per_node_keys_a_key_holder_cannot_claim_a_live_nodes_id() {
    let (mut one, mut two, authority) = live_pair(true).await;
    let authority = authority.unwrap();
    let live = one.connection(NodeId(2)).unwrap();
    // Impostors holding the cluster key: one with its own authority's keys for
    // id 2, one with no per-node keys, one with node 3's genuine keys (which
    // cannot even be configured under id 2).
    let mut forged = config(2, 1);
    forged.node_keys = Some(ClusterAuthority::generate().issue(NodeId(2)));
    let bare = config(2, 1);
    let mut stolen = config(2, 1);
    stolen.node_keys = Some(authority.issue(NodeId(3)));
    assert!(TcpTransport::bind(stolen).await.is_err());
    let impostors = [
        TcpTransport::bind(forged).await.unwrap(),
        TcpTransport::bind(bare).await.unwrap(),
    ];
    for impostor in &impostors {
        impostor.set_peer(NodeId(1), addr(&one));
    }
    let events = events_during(&mut one, Duration::from_millis(800)).await;
    assert!(events.is_empty(), "node 1 saw {events:?}");
    assert_eq!(
        one.connection(NodeId(2)),
        Some(live),
        "the live connection stays"
    );
    two.send(NodeId(1), b"still the real node 2").unwrap();
    assert_eq!(
        receive_frames(&mut one, 2, 1).await,
        [b"still the real node 2".to_vec()]
    );
}

#[tokio::test]
async fn without_per_node_keys_a_key_holder_can_take_over_an_id_as_security_md_says() {
    let (mut one, _two, _) = live_pair(false).await;
    let mut impostor = TcpTransport::bind(config(2, 1)).await.unwrap();
    impostor.set_peer(NodeId(1), addr(&one));
    // Node 1 accepts the impostor as node 2, replacing the real node's connection.
    wait_up(&mut impostor, 1).await;
    wait_for(&mut one, |e| *e == TransportEvent::PeerDown(NodeId(2))).await;
}

#[tokio::test]
async fn one_address_cannot_hold_every_handshake_slot() {
    let mut config = config(1, 1);
    config.max_pending_handshakes_per_ip = 2;
    config.handshake_timeout = Duration::from_secs(5);
    let a = TcpTransport::bind(config).await.unwrap();
    // Silent strangers from 127.0.0.1 hold its two slots; a third is closed at once.
    let _held = [
        TcpStream::connect(addr(&a)).await.unwrap(),
        TcpStream::connect(addr(&a)).await.unwrap(),
    ];
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut third = TcpStream::connect(addr(&a)).await.unwrap();
    let mut buf = [0; 1];
    let read = tokio::time::timeout(Duration::from_secs(1), third.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
    // Another address still gets a handshake slot (kept open, waiting for its hello).
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut other = socket.connect(addr(&a)).await.unwrap();
    let read = tokio::time::timeout(Duration::from_millis(500), other.read(&mut buf)).await;
    assert!(read.is_err(), "the other address was closed: {read:?}");
}
