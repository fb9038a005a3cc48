//! Transports talking over loopback: delivery, order, reconnects, the
//! connection tie-break, authentication, bad frames and backpressure.
//!
//! Real sockets only: madsim has its own scenario in `madsim.rs`.

#![cfg(not(madsim))]

mod common;

use common::*;
use nefele_core::{NodeId, Transport, TransportEvent};
use nefele_transport_tcp::{TcpTransport, TransportError};
use std::time::Duration;

#[tokio::test]
async fn two_transports_exchange_frames_in_order() {
    let mut a = start(1).await;
    let mut b = start(2).await;
    // Only A knows B's address: B learns A from A's authenticated connection.
    a.set_peer(NodeId(2), addr(&b));
    wait_up(&mut a, 2).await;
    wait_up(&mut b, 1).await;
    let frames: Vec<_> = (0..2000).map(numbered).collect();
    send_all(&mut a, 2, frames.clone()).await;
    assert_eq!(receive_frames(&mut b, 1, frames.len()).await, frames);
    send_all(&mut b, 1, frames.clone()).await;
    assert_eq!(receive_frames(&mut a, 2, frames.len()).await, frames);
}

#[tokio::test]
async fn three_transports_broadcast_to_each_other() {
    let mut nodes = [start(1).await, start(2).await, start(3).await];
    let addrs: Vec<_> = nodes.iter().map(addr).collect();
    for (i, node) in nodes.iter().enumerate() {
        for (j, &peer_addr) in addrs.iter().enumerate() {
            if i != j {
                node.set_peer(NodeId(j as u32 + 1), peer_addr);
            }
        }
    }
    for (i, node) in nodes.iter_mut().enumerate() {
        let mut up = std::collections::BTreeSet::new();
        wait_for(node, |e| {
            if let TransportEvent::PeerUp(p) = e {
                up.insert(*p);
            }
            up.len() == 2
        })
        .await;
        assert_eq!(node.peers().len(), 2, "node {i}");
    }
    for (i, node) in nodes.iter_mut().enumerate() {
        for n in 0..100 {
            let mut frame = numbered(n);
            frame.push(i as u8);
            node.broadcast(&frame).unwrap();
        }
    }
    for (i, node) in nodes.iter_mut().enumerate() {
        let mut by_sender = std::collections::BTreeMap::<NodeId, Vec<Vec<u8>>>::new();
        while by_sender.values().map(Vec::len).sum::<usize>() < 200 {
            let event = tokio::time::timeout(PATIENCE, node.next_event())
                .await
                .unwrap();
            if let TransportEvent::Received { from, frame } = event {
                by_sender.entry(from).or_default().push(frame);
            }
        }
        for (from, frames) in by_sender {
            assert_ne!(from, NodeId(i as u32 + 1));
            let sender = (from.0 - 1) as u8;
            let expected: Vec<_> = (0..100)
                .map(|n| {
                    let mut f = numbered(n);
                    f.push(sender);
                    f
                })
                .collect();
            assert_eq!(frames, expected, "at node {i} from {from}");
        }
    }
}

#[tokio::test]
async fn a_restarted_peer_is_reconnected() {
    let mut a = start(1).await;
    let b = start(2).await;
    let b_addr = addr(&b);
    a.set_peer(NodeId(2), b_addr);
    wait_up(&mut a, 2).await;
    drop(b);
    wait_for(&mut a, |e| *e == TransportEvent::PeerDown(NodeId(2))).await;
    // Frames queued while B is away wait for the next connection.
    a.send(NodeId(2), b"queued while down").unwrap();
    let mut config = config(2, 1);
    config.listen = b_addr;
    let mut b = TcpTransport::bind(config).await.unwrap();
    wait_up(&mut a, 2).await;
    wait_up(&mut b, 1).await;
    a.send(NodeId(2), b"after restart").unwrap();
    assert_eq!(
        receive_frames(&mut b, 1, 2).await,
        [b"queued while down".to_vec(), b"after restart".to_vec()]
    );
}

#[tokio::test]
async fn simultaneous_dial_yields_one_connection() {
    for round in 0..5 {
        let mut a = start(10 + round).await;
        let mut b = start(20 + round).await;
        let (id_a, id_b) = (a.node(), b.node());
        // Both learn each other at the same moment and dial at once.
        a.set_peer(id_b, addr(&b));
        b.set_peer(id_a, addr(&a));
        wait_up(&mut a, id_b.0).await;
        wait_up(&mut b, id_a.0).await;
        // The losing connection is refused without a flap at either end.
        let late_a = events_during(&mut a, Duration::from_millis(150)).await;
        let late_b = events_during(&mut b, Duration::from_millis(50)).await;
        assert!(
            late_a.is_empty() && late_b.is_empty(),
            "{late_a:?} {late_b:?}"
        );
        let at_a = a.connection(id_b).expect("a connected");
        let at_b = b.connection(id_a).expect("b connected");
        assert_eq!(at_a.dialer, id_a, "round {round}: lower id's dial wins");
        assert_eq!(at_b.dialer, id_a);
        assert_eq!(
            (at_a.local_addr, at_a.peer_addr),
            (at_b.peer_addr, at_b.local_addr)
        );
        a.send(id_b, b"one connection").unwrap();
        let frames = receive_frames(&mut b, id_a.0, 1).await;
        assert_eq!(
            frames,
            [b"one connection".to_vec()],
            "late events {late_a:?} {late_b:?}"
        );
    }
}

#[tokio::test]
async fn a_wrong_key_is_refused_both_ways() {
    let mut a = start(1).await;
    let mut b = TcpTransport::bind(config(2, 2)).await.unwrap();
    a.set_peer(NodeId(2), addr(&b));
    b.set_peer(NodeId(1), addr(&a));
    a.send(NodeId(2), b"secret").unwrap();
    b.send(NodeId(1), b"secret").unwrap();
    let (at_a, at_b) = tokio::join!(
        events_during(&mut a, Duration::from_millis(500)),
        events_during(&mut b, Duration::from_millis(500))
    );
    assert!(at_a.is_empty(), "{at_a:?}");
    assert!(at_b.is_empty(), "{at_b:?}");
    assert!(a.connection(NodeId(2)).is_none() && b.connection(NodeId(1)).is_none());
}

#[tokio::test]
async fn an_oversized_frame_closes_only_that_connection() {
    let mut big = config(1, 1);
    big.max_frame = 256 * 1024;
    big.send_queue_bytes = 1 << 20;
    let mut a = TcpTransport::bind(big).await.unwrap();
    let mut b = start(2).await;
    let mut c = start(3).await;
    a.set_peer(NodeId(2), addr(&b));
    b.set_peer(NodeId(3), addr(&c));
    wait_up(&mut b, 1).await;
    wait_up(&mut b, 3).await;
    wait_up(&mut c, 2).await;
    // B's limit is 64 KiB: A's 100 KiB frame is a protocol violation at B.
    a.send(NodeId(2), &vec![7; 100 * 1024]).unwrap();
    let before = wait_for(&mut b, |e| *e == TransportEvent::PeerDown(NodeId(1))).await;
    assert!(before
        .iter()
        .all(|e| !matches!(e, TransportEvent::Received { .. })));
    b.send(NodeId(3), b"still here").unwrap();
    assert_eq!(receive_frames(&mut c, 2, 1).await, [b"still here".to_vec()]);
    assert!(b.connection(NodeId(3)).is_some());
    // A redials B, and ordinary frames flow again.
    wait_up(&mut b, 1).await;
    a.send(NodeId(2), b"small again").unwrap();
    assert_eq!(
        receive_frames(&mut b, 1, 1).await,
        [b"small again".to_vec()]
    );
}

#[tokio::test]
async fn a_peer_that_stops_reading_fills_the_queue() {
    let mut slow_config = config(2, 1);
    slow_config.inbox_bytes = 64 * 1024;
    let mut b = TcpTransport::bind(slow_config).await.unwrap();
    let mut fast_config = config(1, 1);
    fast_config.send_queue_bytes = 128 * 1024;
    let mut a = TcpTransport::bind(fast_config).await.unwrap();
    a.set_peer(NodeId(2), addr(&b));
    wait_up(&mut a, 2).await;
    wait_up(&mut b, 1).await;
    // B's driver now stops polling. A sends until the queue refuses.
    let frame = vec![1; 1000];
    let mut accepted = 0u32;
    let refused = loop {
        assert!(accepted < 200_000, "the queue never filled");
        let mut frame = frame.clone();
        frame[..4].copy_from_slice(&accepted.to_be_bytes());
        match a.send(NodeId(2), &frame) {
            Ok(()) => accepted += 1,
            Err(err) => break err,
        }
        if accepted & 63 == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    assert_eq!(refused, TransportError::QueueFull(NodeId(2)));
    assert!(a.queued_bytes(NodeId(2)).unwrap() <= 128 * 1024);
    // Once B reads again, every accepted frame arrives, in order.
    let frames = receive_frames(&mut b, 1, accepted as usize).await;
    for (i, frame) in frames.iter().enumerate() {
        assert_eq!(frame[..4], (i as u32).to_be_bytes());
    }
    assert!(a.send(NodeId(2), &frame).is_ok());
}

#[tokio::test]
async fn bad_sends_are_typed_errors() {
    let mut a = start(1).await;
    assert_eq!(
        a.send(NodeId(9), b"x"),
        Err(TransportError::UnknownPeer(NodeId(9)))
    );
    a.set_peer(NodeId(9), "127.0.0.1:1".parse().unwrap());
    assert!(matches!(
        a.send(NodeId(9), &vec![0; 70_000]),
        Err(TransportError::Frame(_))
    ));
    assert!(matches!(
        a.send(NodeId(9), b""),
        Err(TransportError::Frame(_))
    ));
    a.remove_peer(NodeId(9));
    assert_eq!(
        a.send(NodeId(9), b"x"),
        Err(TransportError::UnknownPeer(NodeId(9)))
    );
}

#[tokio::test]
async fn a_silent_stranger_is_dropped_after_the_handshake_timeout_having_learned_nothing() {
    use tokio::io::AsyncReadExt;
    let mut config = config(1, 1);
    config.handshake_timeout = Duration::from_millis(200);
    let mut a = TcpTransport::bind(config).await.unwrap();
    let mut stranger = tokio::net::TcpStream::connect(addr(&a)).await.unwrap();
    let mut received = Vec::new();
    let read = tokio::time::timeout(PATIENCE, stranger.read_to_end(&mut received)).await;
    assert!(read.is_ok(), "the acceptor kept the connection open");
    assert!(received.is_empty(), "the acceptor said {received:?}");
    assert!(events_during(&mut a, Duration::from_millis(50))
        .await
        .is_empty());
}

/// A connection that opens with the link magic goes to the agent's links, the
/// rest of its bytes unread, while agents still connect on the same port; with
/// no place for links it is closed.
#[tokio::test]
async fn link_connections_share_the_port_and_go_to_the_agents_links() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (tx, mut links) = tokio::sync::mpsc::channel(4);
    let mut a = TcpTransport::bind(nefele_transport_tcp::TcpConfig {
        links: Some(tx),
        ..config(1, 1)
    })
    .await
    .unwrap();
    let b = start(2).await;
    b.set_peer(NodeId(1), addr(&a));
    let mut dialed = tokio::net::TcpStream::connect(addr(&a)).await.unwrap();
    dialed
        .write_all(&nefele_transport_tcp::LINK_MAGIC)
        .await
        .unwrap();
    dialed.write_all(b"token").await.unwrap();
    let mut link = tokio::time::timeout(Duration::from_secs(5), links.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(link.remote, dialed.local_addr().unwrap());
    let mut rest = [0u8; 5];
    link.stream.read_exact(&mut rest).await.unwrap();
    assert_eq!(&rest, b"token");
    wait_up(&mut a, 2).await;

    let mut closed = tokio::net::TcpStream::connect(addr(&b)).await.unwrap();
    closed
        .write_all(&nefele_transport_tcp::LINK_MAGIC)
        .await
        .unwrap();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), closed.read(&mut byte)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
}
