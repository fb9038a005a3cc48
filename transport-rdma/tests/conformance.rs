//! The transport contract, run against TCP, the RDMA transport over the
//! in-memory fake fabric, and the RDMA transport on this host's device when it
//! has one (otherwise those tests record themselves skipped through
//! `nefele-test-support`, so CI counts them
//! as skipped).
//!
//! The contract: frames to one peer arrive whole and in order (for RDMA also
//! across its switch from TCP), at the largest frame size too; many peers at
//! once; a peer that goes away is reported down, and up again when it comes
//! back; a receiver that does not drain pushes back on the sender
//! (`QueueFull`, never unbounded memory), and every frame accepted before that
//! still arrives, in order, once it drains.

mod common;

use common::{frame, Kind, Net, Node, Sent};
use nefele_core::wire::codec::DEFAULT_MAX_FRAME;
use nefele_core::{NodeId, TransportEvent};

const A: NodeId = NodeId(1);
const B: NodeId = NodeId(2);

/// Sends `frames` from `from` to `to`, pumping everyone while the queue is full.
async fn send_all<N: Node>(net: &mut Net<N>, from: NodeId, to: NodeId, frames: &[Vec<u8>]) {
    let deadline = tokio::time::Instant::now() + common::STEP;
    for f in frames {
        while net.node(from).send(to, f) == Sent::Full {
            assert!(
                tokio::time::Instant::now() < deadline,
                "queue never drained"
            );
            net.pump();
            tokio::task::yield_now().await;
        }
    }
}

/// 600 frames of mixed sizes, sent the moment the peer is up, arrive whole and in order.
pub async fn in_order<K: Kind>(mut kind: K) {
    let mut net = Net::mesh(&mut kind, 2).await;
    let sent: Vec<Vec<u8>> = (0..600)
        .map(|i| frame(A, i, 1 + (i as usize * 37) % 3000))
        .collect();
    send_all(&mut net, A, B, &sent).await;
    net.until("600 frames", |n| n.received(A, B).len() >= sent.len())
        .await;
    assert_eq!(net.received(A, B), sent);
}

/// Frames at and near the frame limit cross whole.
pub async fn large_frames<K: Kind>(mut kind: K) {
    let mut net = Net::mesh(&mut kind, 2).await;
    let sizes = [
        DEFAULT_MAX_FRAME,
        40_000,
        1,
        DEFAULT_MAX_FRAME - 1,
        4089,
        65_000,
    ];
    let sent: Vec<Vec<u8>> = (0..24)
        .map(|i| frame(B, i, sizes[i as usize % sizes.len()]))
        .collect();
    send_all(&mut net, B, A, &sent).await;
    net.until("24 large frames", |n| n.received(B, A).len() >= sent.len())
        .await;
    assert_eq!(net.received(B, A), sent);
}

/// Five nodes, each sending to each: every stream arrives in order.
pub async fn many_peers<K: Kind>(mut kind: K) {
    let mut net = Net::mesh(&mut kind, 5).await;
    let ids: Vec<NodeId> = (1..=5).map(NodeId).collect();
    for round in 0..40u32 {
        for &from in &ids {
            for &to in ids.iter().filter(|&&to| to != from) {
                let f = frame(from, round, 16 + (round as usize * 101) % 900);
                send_all(&mut net, from, to, &[f]).await;
            }
        }
        net.pump();
    }
    net.until("every stream", |n| {
        ids.iter()
            .all(|&f| ids.iter().all(|&t| f == t || n.received(f, t).len() == 40))
    })
    .await;
    for &from in &ids {
        for &to in ids.iter().filter(|&&to| to != from) {
            let seqs: Vec<u32> = net
                .received(from, to)
                .iter()
                .map(|f| u32::from_be_bytes([f[4], f[5], f[6], f[7]]))
                .collect();
            assert_eq!(seqs, (0..40).collect::<Vec<_>>(), "{from} to {to}");
        }
    }
}

/// A peer that stops is reported down; when it comes back (new address, same
/// id) it is reported up and frames flow again.
pub async fn peer_down_and_up<K: Kind>(mut kind: K) {
    let mut net = Net::mesh(&mut kind, 2).await;
    let old = net.nodes.pop().expect("B");
    drop(old);
    net.until("B down at A", |n| !n.is_up(A, B)).await;
    let b = kind.spawn(B).await;
    let b_addr = b.addr();
    net.nodes.push(b);
    net.node(A).set_peer(B, b_addr);
    net.until("B up again", |n| {
        n.is_up(A, B) && n.nodes[0].on_own_path(B) && n.nodes[1].on_own_path(A)
    })
    .await;
    let before = net.received(A, B).len();
    let sent: Vec<Vec<u8>> = (0..50).map(|i| frame(A, i, 200)).collect();
    send_all(&mut net, A, B, &sent).await;
    net.until("frames after the return", |n| {
        n.received(A, B).len() >= before + 50
    })
    .await;
    assert_eq!(&net.received(A, B)[before..], sent);
    assert!(net
        .peer_events
        .iter()
        .any(|(at, e)| *at == A && *e == TransportEvent::PeerDown(B)));
}

/// A receiver that does not drain: the sender gets `QueueFull` within a bounded
/// number of frames; after the receiver drains, every accepted frame arrives in order.
pub async fn back_pressure<K: Kind>(mut kind: K) {
    let mut net = Net::mesh(&mut kind, 2).await;
    let mut accepted = Vec::new();
    for i in 0..5_000u32 {
        let f = frame(A, i, 60_000);
        match net.node(A).send(B, &f) {
            Sent::Ok => accepted.push(f),
            Sent::Full => break,
        }
        // The sender keeps working; the receiver does not read.
        net.pump_some(|id| id == A);
        tokio::task::yield_now().await;
    }
    assert!(
        accepted.len() < 5_000,
        "no back-pressure after {} frames of 60 kB",
        accepted.len()
    );
    let want = accepted.len();
    net.until("accepted frames", |n| n.received(A, B).len() >= want)
        .await;
    assert_eq!(net.received(A, B), accepted);
}

macro_rules! suite {
    ($name:ident, $kind:expr) => {
        mod $name {
            #[tokio::test]
            async fn in_order() {
                super::in_order($kind).await;
            }
            #[tokio::test]
            async fn large_frames() {
                super::large_frames($kind).await;
            }
            #[tokio::test]
            async fn many_peers() {
                super::many_peers($kind).await;
            }
            #[tokio::test]
            async fn peer_down_and_up() {
                super::peer_down_and_up($kind).await;
            }
            #[tokio::test]
            async fn back_pressure() {
                super::back_pressure($kind).await;
            }
        }
    };
}

suite!(tcp, crate::common::Tcp);
suite!(
    fake_rdma,
    crate::common::FakeRdma(nefele_transport_rdma::fake::FakeFabric::new())
);

/// The suite on this host's device; each test skips (and says why) without one.
mod real_rdma {
    macro_rules! on_device {
        ($($test:ident),*) => {$(
            #[tokio::test]
            async fn $test() {
                // No device is a fact of the machine (a skip, under CI too); a device
                // without the `verbs` build is a CI set-up error (a failure under CI).
                let device = nefele_transport_rdma::device::any_device();
                if !nefele_test_support::machine_has(
                    device,
                    "an RDMA device (/sys/class/infiniband is empty)",
                ) || !nefele_test_support::require(
                    cfg!(feature = "verbs"),
                    "the `verbs` feature (cargo test --features verbs)",
                ) {
                    return;
                }
                #[cfg(feature = "verbs")]
                super::$test(crate::common::RealRdma).await;
            }
        )*};
    }
    on_device!(
        in_order,
        large_frames,
        many_peers,
        peer_down_and_up,
        back_pressure
    );
}
