//! One-way streaming of 64-byte frames over one connection between two
//! transports on loopback, counted at the receiving driver.
//!
//! `cargo bench -p nefele-transport-tcp --bench throughput`; set
//! `NEFELE_BENCH_FRAMES` (default 4000000) for the number of frames.

use nefele_core::{NodeId, Transport, TransportEvent};
use nefele_transport_tcp::{ClusterKey, TcpConfig, TcpTransport, TransportError};
use std::time::{Duration, Instant};
use tokio::runtime::{Builder, Runtime};

const FRAME: usize = 64;

fn frames() -> u64 {
    std::env::var("NEFELE_BENCH_FRAMES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4_000_000)
}

fn config(node: u32) -> TcpConfig {
    let key = ClusterKey::new(b"bench cluster key, 32 bytes long").unwrap();
    TcpConfig::new(NodeId(node), "127.0.0.1:0".parse().unwrap(), key)
}

async fn stream(count: u64) -> (Duration, u64) {
    let mut a = TcpTransport::bind(config(1)).await.unwrap();
    let mut b = TcpTransport::bind(config(2)).await.unwrap();
    a.set_peer(NodeId(2), b.local_addr());
    while b.next_event().await != TransportEvent::PeerUp(NodeId(1)) {}
    let receiver = tokio::spawn(async move {
        let mut received = 0u64;
        let mut bytes = 0u64;
        let mut start = None;
        while received < count {
            if let TransportEvent::Received { frame, .. } = b.next_event().await {
                start.get_or_insert_with(Instant::now);
                received += 1;
                bytes += frame.len() as u64;
            }
        }
        (start.map_or(Duration::ZERO, |s| s.elapsed()), bytes)
    });
    let sender = tokio::spawn(async move {
        while a.next_event().await != TransportEvent::PeerUp(NodeId(2)) {}
        let frame = [9; FRAME];
        let mut full = 0u64;
        let mut sent = 0;
        while sent < count {
            match a.send(NodeId(2), &frame) {
                Ok(()) => sent += 1,
                Err(TransportError::QueueFull(_)) => {
                    full += 1;
                    tokio::task::yield_now().await;
                }
                Err(err) => panic!("send failed: {err}"),
            }
        }
        // Keep the connection open until the receiver has everything.
        (a, full)
    });
    let (elapsed, bytes) = receiver.await.unwrap();
    let (_a, full) = sender.await.unwrap();
    assert_eq!(bytes, count * FRAME as u64);
    (elapsed, full)
}

fn run(name: &str, runtime: &Runtime, count: u64) {
    let (elapsed, full) = runtime.block_on(stream(count));
    let rate = count as f64 / elapsed.as_secs_f64();
    println!(
        "{name:<16} {count} frames in {:.3} s: {:.2} M frames/s, {:.0} MB/s payload ({} queue-full yields) (target >= 2 M/s)",
        elapsed.as_secs_f64(),
        rate / 1e6,
        rate * FRAME as f64 / 1e6,
        full,
    );
}

fn main() {
    let count = frames();
    println!("one-way streaming of {FRAME}-byte frames on one loopback connection");
    let current = Builder::new_current_thread().enable_all().build().unwrap();
    run("current-thread", &current, count);
    let multi = Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    run("multi-thread(2)", &multi, count);
}
