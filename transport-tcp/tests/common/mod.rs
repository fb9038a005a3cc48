//! Helpers shared by the loopback tests: fast-retrying configurations on
//! port 0, and bounded waits for events.

#![allow(dead_code)] // Each test file uses a subset.

use nefele_core::{NodeId, Transport, TransportEvent};
use nefele_transport_tcp::{BackoffConfig, ClusterKey, TcpConfig, TcpTransport};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::time::{timeout, Instant};

/// The longest any single wait in a test may take.
pub const PATIENCE: Duration = Duration::from_secs(10);

pub fn key(byte: u8) -> ClusterKey {
    ClusterKey::new(&[byte; 32]).unwrap()
}

pub fn config(node: u32, key_byte: u8) -> TcpConfig {
    let mut config = TcpConfig::new(NodeId(node), "127.0.0.1:0".parse().unwrap(), key(key_byte));
    config.backoff = BackoffConfig {
        initial: Duration::from_millis(10),
        max: Duration::from_millis(200),
    };
    config.handshake_timeout = Duration::from_secs(2);
    config
}

pub async fn start(node: u32) -> TcpTransport {
    TcpTransport::bind(config(node, 1)).await.unwrap()
}

/// Waits until `transport` reports an event matching `want`; returns the events before it.
pub async fn wait_for(
    transport: &mut TcpTransport,
    mut want: impl FnMut(&TransportEvent) -> bool,
) -> Vec<TransportEvent> {
    let mut seen = Vec::new();
    let found = timeout(PATIENCE, async {
        loop {
            let event = transport.next_event().await;
            if want(&event) {
                return;
            }
            seen.push(event);
        }
    })
    .await;
    assert!(
        found.is_ok(),
        "{} timed out; saw {seen:?}",
        transport.node()
    );
    seen
}

pub async fn wait_up(transport: &mut TcpTransport, peer: u32) {
    wait_for(transport, |e| *e == TransportEvent::PeerUp(NodeId(peer))).await;
}

/// Every event `transport` reports during `window`.
pub async fn events_during(transport: &mut TcpTransport, window: Duration) -> Vec<TransportEvent> {
    let deadline = Instant::now() + window;
    let mut events = Vec::new();
    let remaining = || deadline.saturating_duration_since(Instant::now());
    while let Ok(event) = timeout(remaining(), transport.next_event()).await {
        events.push(event);
    }
    events
}

/// Receives `count` frames from `from`, skipping peer events, in arrival order.
pub async fn receive_frames(transport: &mut TcpTransport, from: u32, count: usize) -> Vec<Vec<u8>> {
    let mut frames = Vec::with_capacity(count);
    while frames.len() < count {
        let next = timeout(PATIENCE, transport.next_event()).await;
        let event =
            next.unwrap_or_else(|_| panic!("only {} of {count} frames arrived", frames.len()));
        if let TransportEvent::Received {
            from: sender,
            frame,
        } = event
        {
            assert_eq!(sender, NodeId(from));
            frames.push(frame);
        }
    }
    frames
}

pub fn numbered(i: u32) -> Vec<u8> {
    let mut frame = b"frame-".to_vec();
    frame.extend_from_slice(&i.to_be_bytes());
    frame
}

/// Sends `frames` to `to`, yielding to the runtime when the queue is full.
pub async fn send_all(
    transport: &mut TcpTransport,
    to: u32,
    frames: impl IntoIterator<Item = Vec<u8>>,
) {
    let deadline = Instant::now() + PATIENCE;
    for frame in frames {
        while transport.send(NodeId(to), &frame).is_err() {
            assert!(Instant::now() < deadline, "send to n{to} stayed refused");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

pub fn addr(transport: &TcpTransport) -> SocketAddr {
    transport.local_addr()
}
