//! The cost of the messaging core per message: two agents, `NEFELE_MSG_PAIRS`
//! (default 1,000) process pairs, `NEFELE_MSG_COUNT` (default 1,000,000) pid
//! sends from agent 1 to agent 2, each delivered, acknowledged and settled, the
//! receivers draining their mailboxes as they go and the timers firing. Prints messages per wall second
//! of the two services alone (no simulator, no codec).
//!
//! Run: `cargo bench -p nefele-core --bench messaging_pairs`.

// A bench measures wall time; the core it drives never reads the clock.
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use nefele_api::calls::{ApiCall, ApiReply, RequestId};
use nefele_api::messaging::{Delivery, Dest};
use nefele_core::agent::Identity;
use nefele_core::messaging::{Messaging, MessagingConfig, MessagingMsg};
use nefele_core::service::{Context, Service, ServiceEvent, ServiceOutput, Start, TreeView};
use nefele_core::{Incarnation, NodeId, Pid, TenantId, Time};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

fn env(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn ctx(node: NodeId) -> Context<'static> {
    Context {
        me: Identity {
            node,
            incarnation: Incarnation(1),
        },
        tree: TreeView::empty(node),
        lives: None,
    }
}

/// Moves every output of both agents: messages to the wire, replies counted.
fn drain(
    agents: &mut [Messaging; 2],
    wire: &mut VecDeque<(usize, NodeId, MessagingMsg)>,
    counts: &mut (u64, u64),
) {
    for (idx, node) in [(0usize, NodeId(1)), (1, NodeId(2))] {
        while let Some(out) = agents[idx].poll_output() {
            match out {
                ServiceOutput::Send(_, m) => wire.push_back((1 - idx, node, m)),
                ServiceOutput::Reply(_, ApiReply::Sent(r)) => {
                    assert!(r.is_ok(), "{r:?}");
                    counts.0 += 1;
                }
                ServiceOutput::Reply(_, ApiReply::Received(Ok(m))) => counts.1 += m.len() as u64,
                _ => {}
            }
        }
    }
}

fn main() {
    let pairs = env("NEFELE_MSG_PAIRS", 1000);
    let count = env("NEFELE_MSG_COUNT", 1_000_000);
    let tenant = TenantId(1);
    let nodes = [NodeId(1), NodeId(2)];
    let mut agents = nodes.map(|node| {
        let me = Identity {
            node,
            incarnation: Incarnation(1),
        };
        Messaging::new(me, MessagingConfig::default(), 1)
    });
    let pids =
        |n: NodeId| -> Vec<Pid> { (0..pairs).map(|i| Pid::new(n, Incarnation(1), i)).collect() };
    let (senders, receivers) = (pids(nodes[0]), pids(nodes[1]));
    let mut now = Time::from_millis(1);
    for (idx, list) in [(0usize, &senders), (1, &receivers)] {
        for &pid in list {
            let started = ServiceEvent::ProcessStarted {
                pid,
                tenant,
                start: Start::Spawned,
            };
            agents[idx].handle_event(now, &started, &ctx(nodes[idx]));
        }
    }
    let mut wire = VecDeque::new();
    let mut counts = (0u64, 0u64);
    drain(&mut agents, &mut wire, &mut counts);
    let payload = vec![7u8; 64];
    let start = Instant::now();
    for k in 0..count {
        let i = (k % pairs) as usize;
        now = now + Duration::from_micros(1);
        let call = ApiCall::Send {
            tenant,
            from: senders[i],
            to: Dest::Pid(receivers[i]),
            data: payload.clone(),
            delivery: Delivery::AtMostOnce,
            block: false,
        };
        agents[0].handle_api(now, RequestId(k), call, &ctx(nodes[0]));
        drain(&mut agents, &mut wire, &mut counts);
        while let Some((idx, from, m)) = wire.pop_front() {
            agents[idx].handle_message(now, from, m, &ctx(nodes[idx]));
            drain(&mut agents, &mut wire, &mut counts);
        }
        if i as u64 == pairs - 1 {
            for (r, &pid) in receivers.iter().enumerate() {
                let recv = ApiCall::Recv {
                    tenant,
                    pid,
                    max: u32::MAX,
                    wait: None,
                };
                agents[1].handle_api(now, RequestId(r as u64), recv, &ctx(nodes[1]));
            }
        }
        for (idx, &node) in nodes.iter().enumerate() {
            if agents[idx].next_timeout().is_some_and(|t| t <= now) {
                agents[idx].handle_timeout(now, &ctx(node));
            }
        }
        drain(&mut agents, &mut wire, &mut counts);
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "messaging_pairs: {count} sends over {pairs} pairs: {} settled, {} received, \
         {secs:.2} s wall, {:.0} messages per second",
        counts.0,
        counts.1,
        count as f64 / secs
    );
}
