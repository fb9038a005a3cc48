//! The transport on madsim's simulated network (`--cfg madsim`): two agents
//! on two simulated hosts exchange frames, one host is killed and restarted,
//! and the same seed replays the same run.
//!
//! `RUSTFLAGS="--cfg madsim" CARGO_TARGET_DIR=target-madsim cargo test -p nefele-transport-tcp --test madsim`

#![cfg(madsim)]

use madsim::runtime::{Handle, Runtime};
use nefele_core::{NodeId, Transport, TransportEvent};
use nefele_transport_tcp::{BackoffConfig, ClusterKey, TcpConfig, TcpTransport};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::time::{timeout, Instant};

const IP_A: [u8; 4] = [192, 0, 2, 1];
const IP_B: [u8; 4] = [192, 0, 2, 2];
const PORT: u16 = 7000;

fn addr(ip: [u8; 4]) -> SocketAddr {
    SocketAddr::new(IpAddr::from(ip), PORT)
}

fn config(node: u32, peer: u32, peer_ip: [u8; 4], own_ip: [u8; 4]) -> TcpConfig {
    let key = ClusterKey::new(b"madsim cluster key, 32 bytes....").unwrap();
    let mut config = TcpConfig::new(NodeId(node), addr(own_ip), key);
    config.peers.insert(NodeId(peer), addr(peer_ip));
    config.backoff = BackoffConfig {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(500),
    };
    config
}

/// B's life: echo every frame back to its sender.
async fn echo() {
    let mut b = TcpTransport::bind(config(2, 1, IP_A, IP_B)).await.unwrap();
    loop {
        if let TransportEvent::Received { from, frame } = b.next_event().await {
            let _ = b.send(from, &frame);
        }
    }
}

async fn next(a: &mut TcpTransport, log: &mut Vec<String>, start: Instant) -> TransportEvent {
    let Ok(event) = timeout(Duration::from_secs(30), a.next_event()).await else {
        panic!("no event in 30 s; so far: {log:#?}");
    };
    let kind = match &event {
        TransportEvent::Received { frame, .. } => format!("frame {frame:?}"),
        other => format!("{other:?}"),
    };
    log.push(format!("{:?} {kind}", start.elapsed()));
    event
}

async fn round_trip(a: &mut TcpTransport, log: &mut Vec<String>, start: Instant, count: u8) {
    for i in 0..count {
        a.send(NodeId(2), &[i; 8]).unwrap();
    }
    for i in 0..count {
        match next(a, log, start).await {
            TransportEvent::Received { frame, .. } => assert_eq!(frame, [i; 8]),
            other => panic!("expected echo {i}, got {other:?}"),
        }
    }
}

/// The scenario; returns what A saw, with simulated times.
async fn scenario() -> Vec<String> {
    let handle = Handle::current();
    let b = handle
        .create_node()
        .name("b")
        .ip(IpAddr::from(IP_B))
        .init(echo)
        .build();
    let b_id = b.id();
    let a = handle
        .create_node()
        .name("a")
        .ip(IpAddr::from(IP_A))
        .build();
    a.spawn(async move {
        let start = Instant::now();
        let mut log = Vec::new();
        let mut a = TcpTransport::bind(config(1, 2, IP_B, IP_A)).await.unwrap();
        assert_eq!(
            next(&mut a, &mut log, start).await,
            TransportEvent::PeerUp(NodeId(2))
        );
        round_trip(&mut a, &mut log, start, 20).await;
        Handle::current().kill(b_id);
        assert_eq!(
            next(&mut a, &mut log, start).await,
            TransportEvent::PeerDown(NodeId(2))
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        Handle::current().restart(b_id);
        assert_eq!(
            next(&mut a, &mut log, start).await,
            TransportEvent::PeerUp(NodeId(2))
        );
        round_trip(&mut a, &mut log, start, 5).await;
        log
    })
    .await
    .unwrap()
}

#[test]
fn agents_reconnect_after_a_host_restart_and_runs_replay() {
    let seed = 42;
    let log = Runtime::check_determinism(seed, madsim::Config::default(), scenario);
    assert_eq!(log.len(), 1 + 20 + 1 + 1 + 5, "{log:#?}");
    let again = Runtime::with_seed_and_config(seed, madsim::Config::default()).block_on(scenario());
    assert_eq!(log, again, "same seed, same run");
}
