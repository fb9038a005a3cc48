//! The transport's two figures in one run: the round trip of 64-byte frames
//! between two transports on loopback (encrypted records) against a raw tokio
//! TCP echo with the same runtime configuration, and one-way streaming of
//! 64-byte frames over one connection, counted at the receiving driver.
//!
//! `cargo bench -p nefele-transport-tcp --bench transport`; set
//! `NEFELE_BENCH_PINGS` (default 20000) for the number of timed round trips
//! and `NEFELE_BENCH_FRAMES` (default 4000000) for the frames streamed.

use nefele_core::{NodeId, Transport, TransportEvent};
use nefele_transport_tcp::{ClusterKey, TcpConfig, TcpTransport, TransportError};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::{Builder, Runtime};

const FRAME: usize = 64;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Round-trip times of a raw echo: one client task, one server task.
async fn raw_echo(count: usize) -> Vec<Duration> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        stream.set_nodelay(true).unwrap();
        let mut buf = [0; FRAME];
        while stream.read_exact(&mut buf).await.is_ok() {
            if stream.write_all(&buf).await.is_err() {
                break;
            }
        }
    });
    let client = tokio::spawn(async move {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let mut buf = [7; FRAME];
        let mut rtts = Vec::with_capacity(count);
        for i in 0..count + count / 10 {
            let start = Instant::now();
            stream.write_all(&buf).await.unwrap();
            stream.read_exact(&mut buf).await.unwrap();
            if i >= count / 10 {
                rtts.push(start.elapsed());
            }
        }
        rtts
    });
    let rtts = client.await.unwrap();
    server.await.unwrap();
    rtts
}

fn config(node: u32) -> TcpConfig {
    let key = ClusterKey::new(b"bench cluster key, 32 bytes long").unwrap();
    TcpConfig::new(NodeId(node), "127.0.0.1:0".parse().unwrap(), key)
}

/// Round-trip times between two transports: one driver task each.
async fn transport_echo(count: usize) -> Vec<Duration> {
    let mut a = TcpTransport::bind(config(1)).await.unwrap();
    let mut b = TcpTransport::bind(config(2)).await.unwrap();
    a.set_peer(NodeId(2), b.local_addr());
    let echo = tokio::spawn(async move {
        loop {
            match b.next_event().await {
                TransportEvent::Received { from, frame } => {
                    if b.send(from, &frame).is_err() {
                        break;
                    }
                }
                TransportEvent::PeerDown(_) => break,
                TransportEvent::PeerUp(_) => {}
            }
        }
    });
    let client = tokio::spawn(async move {
        while a.next_event().await != TransportEvent::PeerUp(NodeId(2)) {}
        let frame = [7; FRAME];
        let mut rtts = Vec::with_capacity(count);
        for i in 0..count + count / 10 {
            let start = Instant::now();
            a.send(NodeId(2), &frame).unwrap();
            loop {
                if let TransportEvent::Received { .. } = a.next_event().await {
                    break;
                }
            }
            if i >= count / 10 {
                rtts.push(start.elapsed());
            }
        }
        rtts
    });
    let rtts = client.await.unwrap();
    echo.await.unwrap();
    rtts
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at]
}

fn run_pingpong(name: &str, runtime: &Runtime, count: usize) {
    let mut raw = runtime.block_on(raw_echo(count));
    let mut transport = runtime.block_on(transport_echo(count));
    raw.sort_unstable();
    transport.sort_unstable();
    let (raw50, raw99) = (percentile(&raw, 0.5), percentile(&raw, 0.99));
    let (t50, t99) = (percentile(&transport, 0.5), percentile(&transport, 0.99));
    println!(
        "{name:<16} raw p50 {:>7.1} us  p99 {:>7.1} us | encrypted transport p50 {:>7.1} us  p99 {:>7.1} us | p50 ratio {:.2}x (target <= 1.30x)",
        raw50.as_secs_f64() * 1e6,
        raw99.as_secs_f64() * 1e6,
        t50.as_secs_f64() * 1e6,
        t99.as_secs_f64() * 1e6,
        t50.as_secs_f64() / raw50.as_secs_f64(),
    );
}

/// Streams `count` frames from one transport to another; the receiver's time
/// from the first frame to the last, and how often the sender found its queue full.
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

fn run_stream(name: &str, runtime: &Runtime, count: u64) {
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
    let pings = env_or("NEFELE_BENCH_PINGS", 20_000) as usize;
    let frames = env_or("NEFELE_BENCH_FRAMES", 4_000_000);
    let current = Builder::new_current_thread().enable_all().build().unwrap();
    let multi = Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!("ping-pong of {FRAME}-byte frames on loopback, {pings} round trips each");
    run_pingpong("current-thread", &current, pings);
    run_pingpong("multi-thread(2)", &multi, pings);
    println!("one-way streaming of {FRAME}-byte frames on one encrypted loopback connection");
    run_stream("current-thread", &current, frames);
    run_stream("multi-thread(2)", &multi, frames);
}
