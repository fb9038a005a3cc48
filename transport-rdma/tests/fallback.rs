//! Per-peer path choice and fallback of the RDMA transport, over the fake
//! fabric with TCP as the carrier: a host without a device talks TCP with
//! everyone; a peer reaches RDMA from the first moment without losing or
//! reordering what was sent over TCP during set-up; a broken link falls back
//! to TCP, is reported as a peer flap, and comes back over RDMA; an idle
//! transport parks and the completion channel wakes it.

mod common;

use common::{frame, FakeRdma, Kind, Net, Node, Sent, TcpCarrier};
use nefele_core::{NodeId, TransportEvent};
use nefele_transport_rdma::fake::{FakeFabric, FakeVerbs};
use nefele_transport_rdma::{PeerPath, RdmaConfig, RdmaTransport};
use std::net::SocketAddr;

const A: NodeId = NodeId(1);
const B: NodeId = NodeId(2);

type Fake = RdmaTransport<FakeVerbs, TcpCarrier>;

async fn without_device(id: NodeId) -> Fake {
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let tcp = nefele_transport_tcp::TcpTransport::bind(nefele_transport_tcp::TcpConfig::new(
        id,
        loopback,
        common::key(),
    ))
    .await
    .unwrap();
    let reason = "no RDMA device (/sys/class/infiniband is empty)".to_owned();
    RdmaTransport::new(RdmaConfig::new(id), Err(reason), TcpCarrier(tcp)).unwrap()
}

#[tokio::test]
async fn a_host_without_a_device_talks_tcp_with_everyone() {
    let fabric = FakeFabric::new();
    let mut net = Net {
        nodes: vec![
            FakeRdma(fabric.clone()).spawn(A).await,
            without_device(B).await,
        ],
        frames: Default::default(),
        peer_events: Vec::new(),
    };
    net.introduce_all();
    net.until("up both ways", |n| n.is_up(A, B) && n.is_up(B, A))
        .await;
    let sent: Vec<Vec<u8>> = (0..100).map(|i| frame(A, i, 3000)).collect();
    for f in &sent {
        assert_eq!(net.node(A).send(B, f), Sent::Ok);
    }
    net.until("frames over TCP", |n| n.received(A, B).len() == 100)
        .await;
    assert_eq!(net.received(A, B), sent);
    assert_eq!(
        net.nodes[0].path(B),
        PeerPath::Tcp,
        "A gave up after B's decline"
    );
    assert_eq!(net.nodes[1].path(A), PeerPath::Tcp);
    assert_eq!(fabric.sends().1, 0, "nothing crossed the fabric");
    assert_eq!(
        fabric.queue_pairs(),
        0,
        "A freed its link after the decline"
    );
}

#[tokio::test]
async fn frames_sent_during_set_up_and_after_the_switch_stay_in_order() {
    let fabric = FakeFabric::new();
    let mut kind = FakeRdma(fabric.clone());
    let mut net = Net {
        nodes: vec![kind.spawn(A).await, kind.spawn(B).await],
        frames: Default::default(),
        peer_events: Vec::new(),
    };
    net.introduce_all();
    net.until("A sees B", |n| n.is_up(A, B)).await;
    // From the first moment: the first frames go over TCP, later ones over RDMA.
    let sent: Vec<Vec<u8>> = (0..3000)
        .map(|i| frame(A, i, 1 + (i as usize * 53) % 5000))
        .collect();
    let mut paths = Vec::new();
    for f in &sent {
        while net.node(A).send(B, f) == Sent::Full {
            net.pump();
            tokio::task::yield_now().await;
        }
        paths.push(net.nodes[0].path(B));
        net.pump();
    }
    net.until("3000 frames", |n| n.received(A, B).len() == 3000)
        .await;
    assert_eq!(net.received(A, B), sent);
    assert_ne!(paths[0], PeerPath::Rdma, "the first frame went over TCP");
    assert_eq!(
        paths.last(),
        Some(&PeerPath::Rdma),
        "the last went over RDMA"
    );
    assert!(fabric.sends().1 > 0);
    assert_eq!(fabric.overruns(), 0);
}

#[tokio::test]
async fn a_broken_link_falls_back_flaps_the_peer_and_comes_back_over_rdma() {
    let fabric = FakeFabric::new();
    let mut net = Net::mesh(&mut FakeRdma(fabric.clone()), 2).await;
    fabric.break_links();
    // The next frames find the link broken: TCP carries what follows.
    for i in 0..20 {
        while net.node(A).send(B, &frame(A, i, 100)) == Sent::Full {
            net.pump();
            tokio::task::yield_now().await;
        }
        net.pump();
    }
    net.until("flap seen at A", |n| {
        n.peer_events
            .iter()
            .any(|(at, e)| *at == A && *e == TransportEvent::PeerDown(B))
    })
    .await;
    net.until("RDMA again", |n| {
        n.is_up(A, B) && n.is_up(B, A) && n.nodes[0].on_own_path(B) && n.nodes[1].on_own_path(A)
    })
    .await;
    let before = net.received(A, B).len();
    let sent: Vec<Vec<u8>> = (100..150).map(|i| frame(A, i, 700)).collect();
    for f in &sent {
        assert_eq!(net.node(A).send(B, f), Sent::Ok);
    }
    net.until("frames on the new link", |n| {
        n.received(A, B).len() >= before + 50
    })
    .await;
    assert_eq!(&net.received(A, B)[before..], sent);
    assert_eq!(
        fabric.queue_pairs(),
        2,
        "the broken queue pairs were destroyed"
    );
}

#[tokio::test]
async fn an_idle_transport_parks_and_a_completion_wakes_it() {
    let fabric = FakeFabric::new();
    let mut net = Net::mesh(&mut FakeRdma(fabric), 2).await;
    let mut a = net.nodes.remove(0);
    // A parks in `next_event` (on its completion channel and its carrier) ...
    let parked = tokio::spawn(async move {
        let event = a.next_event().await;
        (a, event)
    });
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    assert!(!parked.is_finished(), "nothing to report yet");
    // ... and a SEND from B, over RDMA (nothing on TCP), wakes it through the channel.
    let b = &mut net.nodes[0];
    assert_eq!(b.path(A), PeerPath::Rdma);
    assert_eq!(b.send(A, b"wake up"), Sent::Ok);
    let (_a, event) = tokio::time::timeout(std::time::Duration::from_secs(5), parked)
        .await
        .expect("woken by the completion channel")
        .unwrap();
    assert_eq!(
        event,
        TransportEvent::Received {
            from: B,
            frame: b"wake up".to_vec()
        }
    );
}
