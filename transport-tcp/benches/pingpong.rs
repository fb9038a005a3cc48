//! Round trip of 64-byte frames between two transports on loopback, against a
//! raw tokio TCP echo with the same runtime configuration, in the same run.
//!
//! `cargo bench -p nefele-transport-tcp --bench pingpong`; set
//! `NEFELE_BENCH_PINGS` (default 20000) for the number of timed round trips.

use nefele_core::{NodeId, Transport, TransportEvent};
use nefele_transport_tcp::{ClusterKey, TcpConfig, TcpTransport};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::{Builder, Runtime};

const FRAME: usize = 64;

fn pings() -> usize {
    std::env::var("NEFELE_BENCH_PINGS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
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

fn run(name: &str, runtime: &Runtime, count: usize) {
    let mut raw = runtime.block_on(raw_echo(count));
    let mut transport = runtime.block_on(transport_echo(count));
    raw.sort_unstable();
    transport.sort_unstable();
    let (raw50, raw99) = (percentile(&raw, 0.5), percentile(&raw, 0.99));
    let (t50, t99) = (percentile(&transport, 0.5), percentile(&transport, 0.99));
    println!(
        "{name:<16} raw p50 {:>7.1} us  p99 {:>7.1} us | transport p50 {:>7.1} us  p99 {:>7.1} us | p50 ratio {:.2}x (target <= 1.30x)",
        raw50.as_secs_f64() * 1e6,
        raw99.as_secs_f64() * 1e6,
        t50.as_secs_f64() * 1e6,
        t99.as_secs_f64() * 1e6,
        t50.as_secs_f64() / raw50.as_secs_f64(),
    );
}

fn main() {
    let count = pings();
    println!("ping-pong of {FRAME}-byte frames on loopback, {count} round trips each");
    let current = Builder::new_current_thread().enable_all().build().unwrap();
    run("current-thread", &current, count);
    let multi = Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    run("multi-thread(2)", &multi, count);
}
