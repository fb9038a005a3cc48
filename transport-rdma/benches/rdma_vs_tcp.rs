//! 64-byte round trips (p50, p99) and one-way messages per second on one core,
//! over TCP and over the RDMA transport, in the same run:
//!
//! * TCP: transport-tcp on loopback;
//! * RDMA, fake fabric: the RDMA transport over the in-memory fabric — the cost
//!   of its software path (framing, rings, credits, polling) with a zero-latency
//!   wire, not a NIC's figure;
//! * RDMA, device: the RDMA transport on this host's first active port
//!   (loopback through the NIC), when there is one and the `verbs` feature is
//!   on; otherwise the line says why it is absent.
//!
//! Both ends run on one current-thread runtime, so "per core" is both ends on
//! one core. `cargo bench -p nefele-transport-rdma [--features verbs]`;
//! `NEFELE_BENCH_PINGS` (default 20000) and `NEFELE_BENCH_MESSAGES` (default
//! 200000) set the counts. Published anchors: `ib_send_lat` about 1 µs at 32
//! bytes; eRPC about 10 M small RPCs per second per core.

#[path = "../tests/common/mod.rs"]
mod common;

use common::{FakeRdma, Kind, Node, Sent, Tcp};
use nefele_core::{NodeId, TransportEvent};
use nefele_transport_rdma::fake::FakeFabric;
use std::time::{Duration, Instant};

const FRAME: usize = 64;
const A: NodeId = NodeId(1);
const B: NodeId = NodeId(2);

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Polls `node` (yielding between empty polls) until it has received a frame.
async fn receive<N: Node>(node: &mut N) -> Vec<u8> {
    loop {
        while let Some(event) = node.poll_event() {
            if let TransportEvent::Received { frame, .. } = event {
                return frame;
            }
        }
        tokio::task::yield_now().await;
    }
}

async fn pair<K: Kind>(kind: &mut K) -> (K::Node, K::Node) {
    let mut net = common::Net::mesh(kind, 2).await;
    let b = net.nodes.pop().expect("B");
    let a = net.nodes.pop().expect("A");
    (a, b)
}

struct Figures {
    p50: Duration,
    p99: Duration,
    messages_per_s: f64,
}

async fn measure<K: Kind>(mut kind: K, pings: usize, messages: usize) -> Figures {
    let (mut a, mut b) = pair(&mut kind).await;
    let frame = vec![7u8; FRAME];
    let mut rtts = Vec::with_capacity(pings);
    for i in 0..pings + pings / 10 {
        let start = Instant::now();
        assert_eq!(a.send(B, &frame), Sent::Ok);
        let got = receive(&mut b).await;
        assert_eq!(b.send(A, &got), Sent::Ok);
        receive(&mut a).await;
        if i >= pings / 10 {
            rtts.push(start.elapsed());
        }
    }
    rtts.sort();
    let start = Instant::now();
    let (mut sent, mut received) = (0, 0);
    while received < messages {
        while sent < messages && a.send(B, &frame) == Sent::Ok {
            sent += 1;
        }
        let _ = a.poll_event();
        while let Some(event) = b.poll_event() {
            if matches!(event, TransportEvent::Received { .. }) {
                received += 1;
            }
        }
        tokio::task::yield_now().await;
    }
    let elapsed = start.elapsed();
    Figures {
        p50: rtts[rtts.len() / 2],
        p99: rtts[rtts.len() * 99 / 100],
        messages_per_s: messages as f64 / elapsed.as_secs_f64(),
    }
}

fn print(label: &str, f: &Figures) {
    println!(
        "{label:<28} rtt p50 {:>8.1} µs   p99 {:>8.1} µs   {:>10.0} msg/s/core",
        f.p50.as_secs_f64() * 1e6,
        f.p99.as_secs_f64() * 1e6,
        f.messages_per_s
    );
}

/// The figures on this host's device, or why there are none.
async fn device(pings: usize, messages: usize) -> Result<Figures, String> {
    use nefele_transport_rdma::device::{scan, SYSFS_ROOT};
    if scan(std::path::Path::new(SYSFS_ROOT)).is_empty() {
        return Err(format!("no RDMA device ({SYSFS_ROOT} is empty)"));
    }
    #[cfg(feature = "verbs")]
    {
        let need = nefele_transport_rdma::RdmaConfig::new(A).registered_bytes_per_peer() as u64;
        // Opened once up front so an unusable device is reported, not timed out on.
        nefele_transport_rdma::ibverbs::IbVerbs::open(None, 0, need).map_err(|e| e.to_string())?;
        Ok(measure(common::RealRdma, pings, messages).await)
    }
    #[cfg(not(feature = "verbs"))]
    {
        let _ = (pings, messages);
        Err("built without the `verbs` feature (cargo bench --features verbs)".to_owned())
    }
}

fn main() {
    let pings = env("NEFELE_BENCH_PINGS", 20_000);
    let messages = env("NEFELE_BENCH_MESSAGES", 200_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        println!("{FRAME}-byte frames, {pings} round trips, {messages} one-way messages, both ends on one core");
        print("tcp (loopback)", &measure(Tcp, pings, messages).await);
        let fake = measure(FakeRdma(FakeFabric::new()), pings, messages).await;
        print("rdma, fake fabric", &fake);
        match device(pings, messages).await {
            Ok(figures) => print("rdma, device", &figures),
            Err(why) => println!("{:<28} absent: {why}", "rdma, device"),
        }
        println!("anchors: ib_send_lat ~1 µs at 32 B (one way, two hosts); eRPC ~10 M small RPCs/s per core");
    });
}
