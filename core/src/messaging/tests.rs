//! Unit tests of messaging's point-to-point layer: a few agents' services joined by
//! a hand-driven network (deliver, drop, duplicate, reorder).

use super::external::{ExternalCommand, ExternalEvent, ExternalMsg};
use super::msg::{self, Ack, Item, MessagingMsg, Outcome};
use super::{Messaging, MessagingConfig};
use crate::agent::Identity;
use crate::ids::{Incarnation, NodeId, Pid, TenantId};
use crate::service::{Context, Service, ServiceEvent, ServiceOutput, Start, TreeView};
use crate::time::Time;
use crate::wire::Reject;
use nefele_api::calls::{ApiCall, ApiReply, RequestId};
use nefele_api::messaging::{
    Delivery, Dest, DistanceClass, DownReason, ExternalClose, Mail, MailBody, RecvError, SendError,
    SendReceipt,
};
use nefele_api::spec::ExitStatus;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

const T: TenantId = TenantId(1);

fn pid(node: u32, seq: u64) -> Pid {
    Pid::new(NodeId(node), Incarnation(1), seq)
}

/// Agents 1..=n and the messages between them.
struct Net {
    now: Time,
    agents: BTreeMap<NodeId, Messaging>,
    wire: VecDeque<(NodeId, NodeId, MessagingMsg)>,
    replies: BTreeMap<RequestId, ApiReply>,
    sent: usize,
    next_request: u64,
    /// Each agent's life (1 unless restarted).
    lives: BTreeMap<NodeId, Incarnation>,
    /// Commands for the proxies' drivers.
    external: Vec<(NodeId, super::external::ExternalCommand)>,
}

impl Net {
    fn new(n: u32, config: &MessagingConfig) -> Net {
        let agents = (1..=n)
            .map(|i| {
                let me = Identity {
                    node: NodeId(i),
                    incarnation: Incarnation(1),
                };
                (NodeId(i), Messaging::new(me, config.clone(), 7))
            })
            .collect();
        Net {
            now: Time::from_millis(1),
            agents,
            wire: VecDeque::new(),
            replies: BTreeMap::new(),
            sent: 0,
            next_request: 0,
            lives: BTreeMap::new(),
            external: Vec::new(),
        }
    }

    fn ctx(&self, node: NodeId) -> Context<'static> {
        Context {
            me: self.identity(node),
            tree: TreeView::empty(node),
            lives: None,
        }
    }

    fn identity(&self, node: NodeId) -> Identity {
        let incarnation = self.lives.get(&node).copied().unwrap_or(Incarnation(1));
        Identity { node, incarnation }
    }

    /// The agent of `node` crashes and starts again, in its next life: everything it
    /// held in memory is gone.
    fn restart(&mut self, node: NodeId, config: &MessagingConfig) {
        let next = Incarnation(self.identity(node).incarnation.0 + 1);
        self.lives.insert(node, next);
        let fresh = Messaging::new(self.identity(node), config.clone(), 7);
        self.agents.insert(node, fresh);
    }

    fn drain(&mut self, node: NodeId) {
        let a = self.agents.get_mut(&node).unwrap();
        assert!(a.invariants());
        while let Some(out) = a.poll_output() {
            match out {
                ServiceOutput::Send(to, m) => {
                    self.sent += 1;
                    self.wire.push_back((node, to, m));
                }
                ServiceOutput::Reply(r, reply) => {
                    assert!(
                        self.replies.insert(r, reply).is_none(),
                        "one reply per call"
                    );
                }
                ServiceOutput::External(c) => self.external.push((node, c)),
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    fn event(&mut self, node: NodeId, event: ServiceEvent) {
        let (now, ctx) = (self.now, self.ctx(node));
        self.agents
            .get_mut(&node)
            .unwrap()
            .handle_event(now, &event, &ctx);
        self.drain(node);
    }

    fn start(&mut self, p: Pid, tenant: TenantId) {
        self.event(
            p.origin(),
            ServiceEvent::ProcessStarted {
                pid: p,
                tenant,
                start: Start::Spawned,
            },
        );
    }

    fn exit(&mut self, p: Pid) {
        let status = ExitStatus::Code(0);
        self.event(
            p.origin(),
            ServiceEvent::ProcessExited {
                pid: p,
                tenant: T,
                status,
            },
        );
    }

    fn call(&mut self, node: NodeId, call: ApiCall) -> RequestId {
        self.next_request += 1;
        let r = RequestId(self.next_request);
        let (now, ctx) = (self.now, self.ctx(node));
        self.agents
            .get_mut(&node)
            .unwrap()
            .handle_api(now, r, call, &ctx);
        self.drain(node);
        r
    }

    fn send(
        &mut self,
        from: Pid,
        to: Pid,
        data: &[u8],
        delivery: Delivery,
        block: bool,
    ) -> RequestId {
        self.call(
            from.origin(),
            ApiCall::Send {
                tenant: T,
                from,
                to: Dest::Pid(to),
                data: data.to_vec(),
                delivery,
                block,
            },
        )
    }

    fn recv(&mut self, p: Pid, max: u32) -> Vec<Mail> {
        let r = self.call(
            p.origin(),
            ApiCall::Recv {
                tenant: T,
                pid: p,
                max,
                wait: None,
            },
        );
        match self.replies.remove(&r) {
            Some(ApiReply::Received(Ok(m))) => m,
            other => panic!("{other:?}"),
        }
    }

    /// Delivers the next message on the wire (after `advance`).
    fn step(&mut self) -> bool {
        let Some((from, to, m)) = self.wire.pop_front() else {
            return false;
        };
        self.deliver(from, to, m);
        true
    }

    fn deliver(&mut self, from: NodeId, to: NodeId, m: MessagingMsg) {
        self.now = self.now + Duration::from_micros(100);
        assert_eq!(Messaging::validate_msg(&m), Ok(()));
        let (now, ctx) = (self.now, self.ctx(to));
        self.agents
            .get_mut(&to)
            .unwrap()
            .handle_message(now, from, m, &ctx);
        self.drain(to);
    }

    fn run(&mut self) {
        while self.step() {}
    }

    /// Moves time to `t`, firing every timeout on the way.
    fn advance_to(&mut self, t: Time) {
        loop {
            let next = self
                .agents
                .values()
                .filter_map(Service::next_timeout)
                .min()
                .filter(|n| *n <= t);
            let Some(next) = next else { break };
            self.now = self.now.max(next);
            let nodes: Vec<NodeId> = self.agents.keys().copied().collect();
            for node in nodes {
                let (now, ctx) = (self.now, self.ctx(node));
                let a = self.agents.get_mut(&node).unwrap();
                if a.next_timeout().is_some_and(|d| d <= now) {
                    a.handle_timeout(now, &ctx);
                    self.drain(node);
                }
            }
        }
        self.now = self.now.max(t);
    }

    /// Moves time to `t` in 10 ms steps, the network delivering as it goes.
    fn run_until(&mut self, t: Time) {
        while self.now < t {
            self.advance_to((self.now + Duration::from_millis(10)).min(t));
            self.run();
        }
    }

    fn reply(&mut self, r: RequestId) -> Option<ApiReply> {
        self.replies.remove(&r)
    }
}

fn ok() -> Option<ApiReply> {
    Some(ApiReply::Sent(Ok(SendReceipt { reached: 1 })))
}

fn err(e: SendError) -> Option<ApiReply> {
    Some(ApiReply::Sent(Err(e)))
}

fn data(mail: &[Mail]) -> Vec<Vec<u8>> {
    mail.iter()
        .filter_map(|m| match &m.body {
            MailBody::Data(d) => Some(d.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_same_host_send_touches_no_network() {
    let mut net = Net::new(1, &MessagingConfig::default());
    let (a, b) = (pid(1, 1), pid(1, 2));
    net.start(a, T);
    net.start(b, T);
    for i in 0..3u8 {
        let r = net.send(a, b, &[i], Delivery::AtMostOnce, false);
        assert_eq!(net.reply(r), ok());
    }
    assert_eq!(net.sent, 0);
    let mail = net.recv(b, 10);
    assert_eq!(data(&mail), vec![vec![0], vec![1], vec![2]]);
    assert!(mail
        .iter()
        .all(|m| m.from == a && m.class == DistanceClass::SameHost));
    assert_eq!(
        mail.iter().map(|m| m.seq).collect::<Vec<_>>(),
        vec![0, 1, 2]
    );
}

#[test]
fn the_sender_must_be_a_live_local_process_of_the_tenant_and_size_is_checked_first() {
    let config = MessagingConfig {
        max_message_bytes: 4,
        ..MessagingConfig::default()
    };
    let mut net = Net::new(2, &config);
    let (a, b, other) = (pid(1, 1), pid(2, 1), pid(1, 2));
    net.start(a, T);
    net.start(other, TenantId(2));
    net.start(b, T);
    let r = net.send(other, b, b"x", Delivery::AtMostOnce, false);
    assert_eq!(net.reply(r), err(SendError::NotSender));
    let r = net.send(pid(1, 9), b, b"x", Delivery::AtMostOnce, false);
    assert_eq!(net.reply(r), err(SendError::NotSender));
    let r = net.send(a, b, b"12345", Delivery::AtMostOnce, false);
    assert_eq!(net.reply(r), err(SendError::TooLarge));
    assert_eq!(net.sent, 0);
}

#[test]
fn a_remote_send_is_one_hop_and_fifo_with_its_class() {
    let (mut net, a, b) = two_agents(&MessagingConfig::default());
    let rs: Vec<RequestId> = (0..5u8)
        .map(|i| net.send(a, b, &[i], Delivery::AtMostOnce, false))
        .collect();
    assert!(net
        .wire
        .iter()
        .all(|(f, t, _)| *f == NodeId(1) && *t == NodeId(2)));
    net.run();
    for r in rs {
        assert_eq!(net.reply(r), ok());
    }
    let mail = net.recv(b, 10);
    assert_eq!(data(&mail), (0..5u8).map(|i| vec![i]).collect::<Vec<_>>());
    assert!(mail
        .iter()
        .all(|m| m.class == DistanceClass::SameDc && m.from == a));
}

#[test]
fn failures_say_which_and_another_tenants_pid_is_like_none() {
    let mut net = Net::new(2, &MessagingConfig::default());
    let (a, gone, theirs) = (pid(1, 1), pid(2, 1), pid(2, 2));
    net.start(a, T);
    net.start(gone, T);
    net.start(theirs, TenantId(2));
    net.exit(gone);
    let r1 = net.send(a, gone, b"x", Delivery::AtMostOnce, false);
    let r2 = net.send(a, pid(2, 99), b"x", Delivery::AtMostOnce, false);
    let r3 = net.send(a, theirs, b"x", Delivery::AtMostOnce, false);
    net.run();
    assert_eq!(net.reply(r1), err(SendError::Exited));
    assert_eq!(net.reply(r2), err(SendError::NoSuchProcess));
    assert_eq!(net.reply(r3), err(SendError::NoSuchProcess));
    // Same host too.
    let local_gone = pid(1, 2);
    net.start(local_gone, T);
    net.exit(local_gone);
    let r = net.send(a, local_gone, b"x", Delivery::AtMostOnce, false);
    assert_eq!(net.reply(r), err(SendError::Exited));
}

#[test]
fn a_mailbox_is_made_only_when_mail_comes_and_unopened_processes_answer_as_before() {
    let mut net = Net::new(2, &MessagingConfig::default());
    let (a, b, quiet, remote) = (pid(1, 1), pid(1, 2), pid(1, 3), pid(2, 1));
    for p in [a, b, quiet, remote] {
        net.start(p, T);
    }
    let opened = |net: &Net, node: u32| net.agents[&NodeId(node)].post.opened();
    assert_eq!((opened(&net, 1), opened(&net, 2)), (0, 0));
    // A sender needs no mailbox; the receiver's is made by its first mail.
    let r = net.send(a, b, b"x", Delivery::AtMostOnce, false);
    assert_eq!(net.reply(r), ok());
    let r = net.send(a, remote, b"y", Delivery::Reliable, false);
    net.run();
    assert_eq!(net.reply(r), ok());
    assert_eq!((opened(&net, 1), opened(&net, 2)), (1, 1));
    assert_eq!(data(&net.recv(b, 8)), vec![b"x".to_vec()]);
    assert_eq!(data(&net.recv(remote, 8)), vec![b"y".to_vec()]);
    // One that never had one ends as any other: later sends learn `Exited`.
    net.exit(quiet);
    let r = net.send(a, quiet, b"z", Delivery::AtMostOnce, false);
    assert_eq!(net.reply(r), err(SendError::Exited));
    assert_eq!(net.agents[&NodeId(1)].post.mailbox_count(), 2);
    assert_eq!(opened(&net, 1), 1);
}

#[test]
fn no_answer_ends_unknown_after_the_fate_timeout() {
    let config = MessagingConfig::default();
    let (mut net, a, b) = two_agents(&config);
    let r = net.send(a, b, b"x", Delivery::AtMostOnce, false);
    net.wire.clear(); // lost
    let t0 = net.now;
    net.advance_to(t0 + config.fate_timeout - Duration::from_millis(1));
    assert_eq!(net.reply(r), None);
    net.advance_to(t0 + config.fate_timeout);
    assert_eq!(net.reply(r), err(SendError::Unknown));
}

/// A name cached to a process that a send failed to reach (no answer in time, or
/// the process is gone) is looked up again at its next use; one that answers stays
/// cached. After a root change the new root cannot invalidate caches it never knew
/// of (before, swarm seed 210013: a client kept sending by name to a dead server
/// until the cache entry expired, every send ending `Unknown`).
#[test]
fn a_send_that_fails_to_reach_a_cached_name_drops_it() {
    let config = MessagingConfig::default();
    let mut net = Net::new(2, &config);
    let (a, b, gone) = (pid(1, 1), pid(2, 1), pid(2, 9));
    net.start(a, T);
    net.start(b, T);
    let warm = |net: &Net, name: &str| net.agents[&NodeId(1)].names.is_warm(net.now, T, name);
    for (name, holder) in [("up", b), ("silent", b), ("gone", gone)] {
        let now = net.now;
        let names = &mut net.agents.get_mut(&NodeId(1)).unwrap().names;
        names.cache_insert(now, (T, name.to_owned()), holder);
    }
    let r = net.send(a, b, b"x", Delivery::AtMostOnce, false);
    net.run();
    assert_eq!(
        net.reply(r),
        Some(ApiReply::Sent(Ok(SendReceipt { reached: 1 })))
    );
    assert!(
        warm(&net, "up") && warm(&net, "silent"),
        "an answered send keeps it"
    );
    let r = net.send(a, gone, b"x", Delivery::AtMostOnce, false);
    net.run();
    assert_eq!(net.reply(r), err(SendError::NoSuchProcess));
    assert!(!warm(&net, "gone"), "a process its host does not know");
    let r = net.send(a, b, b"x", Delivery::AtMostOnce, false);
    net.wire.clear(); // b's host stopped answering
    net.advance_to(net.now + config.fate_timeout);
    assert_eq!(net.reply(r), err(SendError::Unknown));
    assert!(
        !warm(&net, "silent") && !warm(&net, "up"),
        "no answer in time"
    );
}

/// A sender whose sends are all answered keeps no deadline: the agent is not woken
/// at each fate timeout and resend time for items settled long before (at a million
/// sends a second, those wakes were a fifth of the simulator's events).
#[test]
fn answered_sends_leave_the_sender_no_deadline() {
    let (mut net, a, b) = two_agents(&MessagingConfig::default());
    let sends = [
        net.send(a, b, b"once", Delivery::AtMostOnce, false),
        net.send(a, b, b"surely", Delivery::Reliable, false),
    ];
    assert!(net.agents[&NodeId(1)].next_timeout().is_some());
    net.run();
    for r in sends {
        assert_eq!(net.reply(r), ok());
    }
    assert_eq!(net.agents[&NodeId(1)].next_timeout(), None);
}

#[test]
fn reliable_sends_are_resent_and_delivered_once() {
    let config = MessagingConfig::default();
    let (mut net, a, b) = two_agents(&config);
    let r0 = net.send(a, b, b"0", Delivery::Reliable, false);
    let r1 = net.send(a, b, b"1", Delivery::Reliable, false);
    // The first is lost, the second arrives twice (before the first).
    let (_, _, _lost) = net.wire.pop_front().unwrap();
    let (f, t, second) = net.wire.pop_front().unwrap();
    net.deliver(f, t, second.clone());
    net.deliver(f, t, second);
    assert!(net.recv(b, 10).is_empty(), "held until the gap fills");
    net.wire.clear(); // acks lost too
    let t0 = net.now;
    net.advance_to(t0 + config.resend_interval);
    net.run();
    assert_eq!(net.reply(r0), ok());
    assert_eq!(net.reply(r1), ok());
    let mail = net.recv(b, 10);
    assert_eq!(data(&mail), vec![b"0".to_vec(), b"1".to_vec()]);
    // Later copies change nothing.
    net.advance_to(net.now + config.fate_timeout * 2);
    net.run();
    assert!(net.recv(b, 10).is_empty());
}

/// Jitter that swaps two at-most-once messages of a pair costs a short wait at the
/// receiver, not a message (before `reorder_wait`, the first ended `Unknown`).
#[test]
fn swapped_at_most_once_messages_both_arrive_in_order_within_the_reorder_wait() {
    let config = MessagingConfig::default();
    let (mut net, a, b) = two_agents(&config);
    let r0 = net.send(a, b, b"0", Delivery::AtMostOnce, false);
    let r1 = net.send(a, b, b"1", Delivery::AtMostOnce, false);
    let first = net.wire.pop_front().unwrap();
    net.step(); // "1" first: held for the gap
    assert!(net.recv(b, 10).is_empty(), "held until the gap fills");
    net.deliver(first.0, first.1, first.2);
    net.run();
    assert_eq!(net.reply(r0), ok());
    assert_eq!(net.reply(r1), ok());
    assert_eq!(data(&net.recv(b, 10)), vec![b"0".to_vec(), b"1".to_vec()]);
}

#[test]
fn an_at_most_once_message_later_than_the_reorder_wait_is_overtaken_and_order_holds() {
    let config = MessagingConfig::default();
    let (mut net, a, b) = two_agents(&config);
    let r0 = net.send(a, b, b"0", Delivery::AtMostOnce, false);
    let r1 = net.send(a, b, b"1", Delivery::AtMostOnce, false);
    let r2 = net.send(a, b, b"2", Delivery::AtMostOnce, false);
    let first = net.wire.pop_front().unwrap();
    net.step(); // "1", then "2": both held
    net.step();
    let held = net.now;
    net.advance_to(held + config.reorder_wait - Duration::from_micros(150));
    assert!(net.recv(b, 10).is_empty(), "held for the reorder wait");
    net.advance_to(held + config.reorder_wait);
    net.run();
    assert_eq!(net.reply(r1), ok());
    assert_eq!(net.reply(r2), ok());
    net.deliver(first.0, first.1, first.2); // "0", too late
    net.run();
    assert_eq!(net.reply(r0), err(SendError::Overtaken));
    assert_eq!(data(&net.recv(b, 10)), vec![b"1".to_vec(), b"2".to_vec()]);
}

#[test]
fn with_no_reorder_wait_an_overtaken_message_is_dropped_at_once() {
    let config = MessagingConfig {
        reorder_wait: Duration::ZERO,
        ..MessagingConfig::default()
    };
    let (mut net, a, b) = two_agents(&config);
    let r0 = net.send(a, b, b"0", Delivery::AtMostOnce, false);
    let r1 = net.send(a, b, b"1", Delivery::AtMostOnce, false);
    let first = net.wire.pop_front().unwrap();
    net.run(); // "1" first
    net.deliver(first.0, first.1, first.2);
    net.run();
    assert_eq!(net.reply(r1), ok());
    assert_eq!(net.reply(r0), err(SendError::Overtaken));
    assert_eq!(data(&net.recv(b, 10)), vec![b"1".to_vec()]);
}

#[test]
fn a_full_mailbox_refuses_non_blocking_and_parks_blocking_sends() {
    let config = MessagingConfig {
        mailbox_messages: 2,
        ..MessagingConfig::default()
    };
    let mut net = Net::new(2, &config);
    let (a, b, c) = (pid(1, 1), pid(2, 1), pid(2, 2));
    net.start(a, T);
    net.start(b, T);
    net.start(c, T);
    for i in 0..2u8 {
        let r = net.send(a, b, &[i], Delivery::AtMostOnce, false);
        net.run();
        assert_eq!(net.reply(r), ok());
    }
    let full = net.send(a, b, b"f", Delivery::AtMostOnce, false);
    net.run();
    assert_eq!(net.reply(full), err(SendError::Full));
    let blocked = net.send(a, b, b"b", Delivery::AtMostOnce, true);
    net.run();
    let local_blocked = net.send(c, b, b"l", Delivery::AtMostOnce, true);
    net.run();
    // Parked: no answer, and the parked message outlives the fate timeout.
    net.advance_to(net.now + config.fate_timeout * 2);
    assert_eq!(net.reply(blocked), None);
    assert_eq!(net.reply(local_blocked), None);
    let first = net.recv(b, 1);
    assert_eq!(data(&first), vec![vec![0]]);
    net.run();
    assert_eq!(net.reply(blocked), ok());
    assert_eq!(net.reply(local_blocked), None, "still no room");
    assert_eq!(
        data(&net.recv(b, 10)),
        vec![vec![1], b"b".to_vec()],
        "parked in order, behind the mail"
    );
    assert_eq!(net.reply(local_blocked), ok());
    assert_eq!(data(&net.recv(b, 10)), vec![b"l".to_vec()]);
}

#[test]
fn credits_stop_a_pair_at_the_sender() {
    let config = MessagingConfig {
        credit_window: 2,
        ..MessagingConfig::default()
    };
    let (mut net, a, b) = two_agents(&config);
    let r0 = net.send(a, b, b"0", Delivery::AtMostOnce, false);
    let r1 = net.send(a, b, b"1", Delivery::AtMostOnce, false);
    let r2 = net.send(a, b, b"2", Delivery::AtMostOnce, false);
    assert_eq!(net.reply(r2), err(SendError::Full), "no credit left");
    let r3 = net.send(a, b, b"3", Delivery::AtMostOnce, true);
    assert_eq!(net.wire.len(), 2, "the blocking send waits at its agent");
    net.run();
    for r in [r0, r1, r3] {
        assert_eq!(net.reply(r), ok());
    }
    assert_eq!(
        data(&net.recv(b, 10)),
        vec![b"0".to_vec(), b"1".to_vec(), b"3".to_vec()]
    );
}

/// Swarm seed 580920 (`messaging.fate_reported`): sends waiting for credit to a
/// host that answers nothing end `Unknown` with the first item that times out,
/// never sent. Before, each waited for an item ahead to time out: a client's
/// requests to a server whose host had crashed queued behind a full window of
/// items failing one fate timeout at a time, and waited more than 3 s.
#[test]
fn sends_waiting_for_credit_to_a_silent_host_end_with_the_first_timeout() {
    let config = MessagingConfig {
        credit_window: 2,
        ..MessagingConfig::default()
    };
    let (mut net, a, b) = two_agents(&config);
    let t0 = net.now;
    let sends: Vec<_> = (0..5u8)
        .map(|i| net.send(a, b, &[i], Delivery::Reliable, true))
        .collect();
    // b's host answers nothing: what a sends (and sends again) is lost.
    let step = Duration::from_millis(10);
    while net.now < t0 + config.fate_timeout {
        net.wire.clear();
        let t = net.now + step;
        net.advance_to(t);
    }
    for r in &sends {
        assert_eq!(net.reply(*r), err(SendError::Unknown));
    }
    // A send after them goes out, and b's answer settles it.
    net.wire.clear();
    let after = net.send(a, b, b"after", Delivery::Reliable, true);
    net.run();
    assert_eq!(net.reply(after), ok());
    assert_eq!(data(&net.recv(b, 10)), vec![b"after".to_vec()]);
}

/// Swarm seed 79: a process that never reads filled its mailbox; the parked sends
/// held the pair's whole credit, and the blocking sends behind them waited at the
/// sender's agent with no deadline (each parked send that timed out let one more
/// out, to park again, while the queue behind grew: fates later and later).
#[test]
fn a_blocking_send_waiting_for_credit_fails_full_after_block_timeout() {
    let config = MessagingConfig {
        mailbox_messages: 1,
        credit_window: 2,
        ..MessagingConfig::default()
    };
    let (mut net, a, b) = two_agents(&config);
    let send = |net: &mut Net, d: &[u8]| net.send(a, b, d, Delivery::Reliable, true);
    let delivered = send(&mut net, b"0");
    net.run();
    assert_eq!(net.reply(delivered), ok());
    let parked = [send(&mut net, b"p1"), send(&mut net, b"p2")];
    net.run();
    let t = net.now + Duration::from_secs(1);
    net.run_until(t);
    let queued_at = net.now;
    let waiting = [b"w1", b"w2", b"w3"].map(|d| send(&mut net, d));
    assert!(net.wire.is_empty(), "no credit: they wait at their agent");
    // The parked sends time out first; their credit lets w1 and w2 out, to park.
    net.run_until(queued_at + config.block_timeout - Duration::from_millis(1));
    for r in parked {
        assert_eq!(net.reply(r), err(SendError::Unknown));
    }
    assert_eq!(net.reply(waiting[2]), None);
    net.run_until(queued_at + config.block_timeout);
    assert_eq!(net.reply(waiting[2]), err(SendError::Full), "never sent");
    assert!(net.wire.is_empty());
    let t = net.now + config.block_timeout;
    net.run_until(t);
    for r in &waiting[..2] {
        assert_eq!(
            net.reply(*r),
            err(SendError::Unknown),
            "parked, then timed out"
        );
    }
    // The mailbox holds one: each receive lets one parked item in.
    let mail: Vec<Mail> = (0..6).flat_map(|_| net.recv(b, 10)).collect();
    assert_eq!(
        data(&mail),
        [&b"0"[..], b"p1", b"p2", b"w1", b"w2"].map(<[u8]>::to_vec),
        "the Unknown ones may arrive; the one answered Full never does"
    );
    net.run();
    let after = send(&mut net, b"after");
    net.run();
    assert_eq!(net.reply(after), ok(), "the pair has its credit back");
}

#[test]
fn down_comes_after_the_watched_processes_data_even_when_reordered() {
    let mut net = Net::new(2, &MessagingConfig::default());
    let (watcher, watched) = (pid(1, 1), pid(2, 1));
    net.start(watcher, T);
    net.start(watched, T);
    let m = net.call(
        NodeId(1),
        ApiCall::Monitor {
            tenant: T,
            watcher,
            watched,
        },
    );
    assert_eq!(net.reply(m), Some(ApiReply::Monitored(Ok(()))));
    net.run();
    let r = net.send(watched, watcher, b"last words", Delivery::AtMostOnce, false);
    net.exit(watched);
    // The Down overtakes the data on the wire.
    let data_msg = net.wire.pop_front().unwrap();
    net.run();
    assert!(
        net.recv(watcher, 10).is_empty(),
        "the Down waits for the data"
    );
    net.deliver(data_msg.0, data_msg.1, data_msg.2);
    net.run();
    assert_eq!(net.reply(r), ok());
    let mail = net.recv(watcher, 10);
    assert_eq!(mail.len(), 2);
    assert_eq!(mail[0].body, MailBody::Data(b"last words".to_vec()));
    assert_eq!(
        mail[1].body,
        MailBody::Down {
            pid: watched,
            reason: DownReason::Exited(ExitStatus::Code(0))
        }
    );
}

#[test]
fn monitoring_a_missing_process_answers_no_process_and_a_silent_host_unreachable() {
    let config = MessagingConfig::default();
    let mut net = Net::new(3, &config);
    let watcher = pid(1, 1);
    net.start(watcher, T);
    let missing = pid(2, 7);
    net.call(
        NodeId(1),
        ApiCall::Monitor {
            tenant: T,
            watcher,
            watched: missing,
        },
    );
    net.run();
    let mail = net.recv(watcher, 10);
    assert_eq!(
        mail.iter().map(|m| m.body.clone()).collect::<Vec<_>>(),
        vec![MailBody::Down {
            pid: missing,
            reason: DownReason::NoProcess
        }]
    );
    let far = pid(3, 1);
    net.start(far, T);
    net.call(
        NodeId(1),
        ApiCall::Monitor {
            tenant: T,
            watcher,
            watched: far,
        },
    );
    net.run();
    // Host 3 goes silent.
    net.agents.remove(&NodeId(3));
    let end = net.now + config.monitor_ping + config.fate_timeout;
    loop {
        net.wire.retain(|(_, to, _)| *to != NodeId(3));
        if net.now >= end {
            break;
        }
        net.advance_to(net.now + Duration::from_millis(100));
    }
    let mail = net.recv(watcher, 10);
    assert_eq!(
        mail.iter().map(|m| m.body.clone()).collect::<Vec<_>>(),
        vec![MailBody::Down {
            pid: far,
            reason: DownReason::Unreachable
        }]
    );
}

/// Two agents, each running process 1 of tenant `T`: `a` on agent 1, `b` on agent 2.
fn two_agents(config: &MessagingConfig) -> (Net, Pid, Pid) {
    let mut net = Net::new(2, config);
    let (a, b) = (pid(1, 1), pid(2, 1));
    net.start(a, T);
    net.start(b, T);
    (net, a, b)
}

/// Two agents; process 1 of agent 1 monitors process 1 of agent 2.
fn watched_across_two_agents(config: &MessagingConfig) -> (Net, Pid, Pid) {
    let (mut net, watcher, watched) = two_agents(config);
    net.call(
        NodeId(1),
        ApiCall::Monitor {
            tenant: T,
            watcher,
            watched,
        },
    );
    net.run();
    (net, watcher, watched)
}

#[test]
fn a_watcher_is_told_when_the_watched_host_restarts_before_anyone_removes_it() {
    let config = MessagingConfig::default();
    for restart_before_first_pong in [false, true] {
        let (mut net, watcher, watched) = watched_across_two_agents(&config);
        if !restart_before_first_pong {
            // A ping and its answer from the first life.
            net.advance_to(net.now + config.monitor_ping);
            net.run();
        }
        // Host 2's agent dies and comes back at once, without the process: no
        // federation removal, no exit event, and its pings are answered.
        net.restart(NodeId(2), &config);
        for _ in 0..3 {
            net.advance_to(net.now + config.monitor_ping);
            net.run();
        }
        let mail = net.recv(watcher, 10);
        assert_eq!(
            mail.iter().map(|m| m.body.clone()).collect::<Vec<_>>(),
            vec![MailBody::Down {
                pid: watched,
                reason: DownReason::NoProcess
            }],
            "restart before the first pong: {restart_before_first_pong}"
        );
    }
}

#[test]
fn a_process_readopted_by_a_new_life_is_watched_again() {
    let config = MessagingConfig::default();
    let (mut net, watcher, watched) = watched_across_two_agents(&config);
    net.advance_to(net.now + config.monitor_ping);
    net.run();
    // The agent restarts and re-adopts the process (it keeps its pid).
    net.restart(NodeId(2), &config);
    net.start(watched, T);
    for _ in 0..2 {
        net.advance_to(net.now + config.monitor_ping);
        net.run();
    }
    assert!(net.recv(watcher, 10).is_empty(), "it still runs");
    net.exit(watched);
    net.run();
    let mail = net.recv(watcher, 10);
    assert!(
        matches!(
            mail.as_slice(),
            [Mail { body: MailBody::Down { pid, reason: DownReason::Exited(_) }, .. }] if *pid == watched
        ),
        "{mail:?}"
    );
}

#[test]
fn recv_waits_for_mail_times_out_and_ends_with_the_process() {
    let mut net = Net::new(1, &MessagingConfig::default());
    let (a, b) = (pid(1, 1), pid(1, 2));
    net.start(a, T);
    net.start(b, T);
    let wait = |max| ApiCall::Recv {
        tenant: T,
        pid: b,
        max,
        wait: Some(Duration::from_millis(10)),
    };
    let w = net.call(NodeId(1), wait(5));
    assert_eq!(net.reply(w), None);
    let busy = net.call(NodeId(1), wait(5));
    assert_eq!(
        net.reply(busy),
        Some(ApiReply::Received(Err(RecvError::Busy)))
    );
    net.send(a, b, b"hi", Delivery::AtMostOnce, false);
    match net.reply(w) {
        Some(ApiReply::Received(Ok(m))) => assert_eq!(data(&m), vec![b"hi".to_vec()]),
        other => panic!("{other:?}"),
    }
    let w = net.call(NodeId(1), wait(5));
    net.advance_to(net.now + Duration::from_millis(10));
    assert_eq!(net.reply(w), Some(ApiReply::Received(Ok(Vec::new()))));
    let w = net.call(NodeId(1), wait(5));
    net.exit(b);
    assert_eq!(
        net.reply(w),
        Some(ApiReply::Received(Err(RecvError::NoSuchProcess)))
    );
}

#[test]
fn a_cancelled_receive_frees_its_mailbox_at_once() {
    let mut net = Net::new(1, &MessagingConfig::default());
    let (a, b) = (pid(1, 1), pid(1, 2));
    net.start(a, T);
    net.start(b, T);
    let wait = ApiCall::Recv {
        tenant: T,
        pid: b,
        max: 5,
        wait: Some(Duration::from_secs(60)),
    };
    let gone = net.call(NodeId(1), wait.clone());
    // Its client left (the driver says so): the next receive is not `Busy`.
    net.agents.get_mut(&NodeId(1)).unwrap().cancel(gone);
    let next = net.call(NodeId(1), wait);
    assert_eq!(net.reply(next), None, "waiting, not Busy");
    net.send(a, b, b"hi", Delivery::AtMostOnce, false);
    match net.reply(next) {
        Some(ApiReply::Received(Ok(m))) => assert_eq!(data(&m), vec![b"hi".to_vec()]),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        net.reply(gone),
        None,
        "a cancelled receive is never answered"
    );
}

#[test]
fn distance_reports_the_class_and_the_measured_round_trip() {
    let (mut net, a, b) = two_agents(&MessagingConfig::default());
    let ask = |net: &mut Net| {
        let r = net.call(
            NodeId(1),
            ApiCall::Distance {
                tenant: T,
                from: a,
                to: b,
            },
        );
        match net.reply(r) {
            Some(ApiReply::Distance(Ok(d))) => d,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(ask(&mut net).class, DistanceClass::SameDc);
    assert_eq!(ask(&mut net).rtt, None);
    net.send(a, b, b"x", Delivery::AtMostOnce, false);
    net.run(); // two hops of 100 µs each
    assert_eq!(ask(&mut net).rtt, Some(Duration::from_micros(200)));
}

#[test]
fn peer_sent_bounds_are_checked() {
    let item = |body, seq, base| {
        MessagingMsg::Deliver(Item {
            tenant: T,
            from: pid(1, 1),
            to: pid(2, 1),
            seq,
            base,
            reliable: false,
            block: false,
            body,
        })
    };
    let big = MailBody::Data(vec![0; msg::MAX_DATA_BYTES + 1]);
    assert!(matches!(
        Messaging::validate_msg(&item(big, 0, 0)),
        Err(Reject::TooMany { .. })
    ));
    let fine = MailBody::Data(vec![0; msg::MAX_DATA_BYTES]);
    assert_eq!(Messaging::validate_msg(&item(fine.clone(), 0, 0)), Ok(()));
    assert!(Messaging::validate_msg(&item(fine.clone(), u64::MAX, 0)).is_err());
    assert!(Messaging::validate_msg(&item(fine, 1, 2)).is_err());
    let ack = Ack {
        from: pid(1, 1),
        to: pid(2, 1),
        seq: 0,
        outcome: Outcome::Delivered,
    };
    let acks = MessagingMsg::Acks(vec![ack; msg::MAX_ACKS + 1]);
    assert!(Messaging::validate_msg(&acks).is_err());
}

/// Acks are control messages: the largest batch an agent sends fits the control
/// MTU (before, a burst of deliveries to one agent acked up to 1,024 at once, and
/// the messaging swarm found 10 kB `msg_acks` frames).
#[test]
fn the_largest_ack_batch_fits_the_control_mtu() {
    use crate::wire::{encoded_len, Envelope, Message, CONTROL_MTU};
    let ack = Ack {
        from: Pid::MAX,
        to: Pid::MAX,
        seq: u64::MAX - 1,
        outcome: Outcome::Late,
    };
    let env = Envelope {
        from: NodeId(u32::MAX),
        incarnation: Incarnation(u32::MAX),
        body: Message::Messaging(MessagingMsg::Acks(vec![ack; msg::ACKS_PER_MESSAGE])),
    };
    assert!(
        encoded_len(&env) <= CONTROL_MTU,
        "{} bytes",
        encoded_len(&env)
    );
}

/// The largest fan-out batch a peer may send (a walk of [`fanout::MAX_BATCH`]
/// messages of [`msg::MAX_DATA_BYTES`] in all, to a target of the longest name)
/// fits the default frame, so a batch never fails to encode where one message
/// would not.
#[test]
fn the_largest_fanout_batch_fits_the_default_frame() {
    use super::fanout::{Carry, FanoutMsg, Target, MAX_BATCH, MAX_TARGET_BYTES};
    use super::topics::TopicsMsg;
    use crate::wire::codec::DEFAULT_MAX_FRAME;
    use crate::wire::{encoded_len, Envelope, Message};
    let last = msg::MAX_DATA_BYTES - (MAX_BATCH - 1);
    let items: Vec<Vec<u8>> = std::iter::repeat_n(vec![0xff], MAX_BATCH - 1)
        .chain([vec![0xff; last]])
        .collect();
    let walk = FanoutMsg::Walk {
        token: u64::MAX,
        origin: NodeId(u32::MAX),
        level: crate::wire::validate::MAX_LEVEL,
        target: Target::topic(TenantId(u32::MAX), &"t".repeat(MAX_TARGET_BYTES)),
        carry: Carry::Data {
            from: Pid::MAX,
            seq: u64::MAX - MAX_BATCH as u64,
            items,
            reliable: true,
        },
        clock: u64::MAX,
    };
    assert_eq!(walk.validate(), Ok(()));
    let env = Envelope {
        from: NodeId(u32::MAX),
        incarnation: Incarnation(u32::MAX),
        body: Message::Messaging(MessagingMsg::Topics(TopicsMsg::Fanout(walk))),
    };
    assert!(
        encoded_len(&env) <= DEFAULT_MAX_FRAME,
        "{} bytes",
        encoded_len(&env)
    );
}

/// Many acks due to one agent at once leave in batches that each fit the MTU, and
/// every one of them leaves.
#[test]
fn a_burst_of_acks_leaves_in_batches_of_at_most_the_bound() {
    let config = MessagingConfig {
        ack_delay: Duration::from_millis(10),
        ..MessagingConfig::default()
    };
    let (mut net, a, b) = two_agents(&config);
    let n = msg::ACKS_PER_MESSAGE * 3 + 1;
    for seq in 0..n as u64 {
        let item = MessagingMsg::Deliver(Item {
            tenant: T,
            from: a,
            to: b,
            seq,
            base: 0,
            reliable: false,
            block: false,
            body: MailBody::Data(vec![1]),
        });
        net.deliver(NodeId(1), NodeId(2), item);
    }
    net.advance_to(net.now + Duration::from_millis(20));
    let batches: Vec<usize> = net
        .wire
        .iter()
        .filter_map(|(from, _, m)| match m {
            MessagingMsg::Acks(acks) if *from == NodeId(2) => Some(acks.len()),
            _ => None,
        })
        .collect();
    assert!(
        batches.iter().all(|&k| k <= msg::ACKS_PER_MESSAGE),
        "{batches:?}"
    );
    assert_eq!(batches.iter().sum::<usize>(), n, "{batches:?}");
}

#[test]
fn a_peer_cannot_speak_for_another_agents_processes() {
    let mut net = Net::new(3, &MessagingConfig::default());
    let (a, b) = (pid(1, 1), pid(2, 1));
    net.start(a, T);
    net.start(b, T);
    let forged = MessagingMsg::Deliver(Item {
        tenant: T,
        from: a,
        to: b,
        seq: 0,
        base: 0,
        reliable: false,
        block: false,
        body: MailBody::Data(b"forged".to_vec()),
    });
    net.deliver(NodeId(3), NodeId(2), forged);
    assert!(net.recv(b, 10).is_empty());
    assert!(net.wire.is_empty());
}

#[test]
fn a_lost_host_or_process_reports_down_lost_and_a_demonitor_stops_it() {
    let mut net = Net::new(3, &MessagingConfig::default());
    let watcher = pid(1, 1);
    let (w2a, w2b, w3) = (pid(2, 1), pid(2, 2), pid(3, 1));
    net.start(watcher, T);
    for p in [w2a, w2b, w3] {
        net.start(p, T);
    }
    for watched in [w2a, w2b, w3] {
        net.call(
            NodeId(1),
            ApiCall::Monitor {
                tenant: T,
                watcher,
                watched,
            },
        );
    }
    net.run();
    // Placement reports one process of host 2 lost.
    net.event(
        NodeId(1),
        ServiceEvent::ProcessLost {
            pid: w2a,
            tenant: T,
        },
    );
    let lost = |p: Pid, host| MailBody::Down {
        pid: p,
        reason: DownReason::Lost { host },
    };
    let bodies = |m: Vec<Mail>| m.into_iter().map(|m| m.body).collect::<Vec<_>>();
    assert_eq!(bodies(net.recv(watcher, 10)), vec![lost(w2a, NodeId(2))]);
    // Host 3 is removed from the group; host 2's other process is no longer watched.
    net.call(
        NodeId(1),
        ApiCall::Demonitor {
            tenant: T,
            watcher,
            watched: w2b,
        },
    );
    net.run();
    net.event(
        NodeId(1),
        ServiceEvent::HostRemoved {
            instance: 0,
            node: NodeId(3),
            level: 0,
        },
    );
    assert_eq!(bodies(net.recv(watcher, 10)), vec![lost(w3, NodeId(3))]);
    net.exit(w2b);
    net.run();
    assert!(net.recv(watcher, 10).is_empty(), "demonitored");
    // Nothing left to ping, and the idle pairs of the `Down`s go in time.
    net.advance_to(net.now + MessagingConfig::default().pair_idle * 2);
    assert_eq!(net.agents[&NodeId(1)].next_timeout(), None);
}

#[test]
fn a_local_monitor_fires_on_exit_behind_the_data() {
    let mut net = Net::new(1, &MessagingConfig::default());
    let (watcher, watched) = (pid(1, 1), pid(1, 2));
    net.start(watcher, T);
    net.start(watched, T);
    net.call(
        NodeId(1),
        ApiCall::Monitor {
            tenant: T,
            watcher,
            watched,
        },
    );
    net.send(watched, watcher, b"bye", Delivery::AtMostOnce, false);
    net.exit(watched);
    let mail = net.recv(watcher, 10);
    assert_eq!(mail.len(), 2);
    assert_eq!(mail[0].body, MailBody::Data(b"bye".to_vec()));
    assert!(matches!(mail[1].body, MailBody::Down { pid, .. } if pid == watched));
    assert_eq!((mail[0].seq, mail[1].seq), (0, 1));
    assert_eq!(net.sent, 0);
}

#[test]
fn blocked_senders_hear_when_the_receiver_exits_and_bytes_are_a_bound() {
    let config = MessagingConfig {
        mailbox_bytes: 4,
        ..MessagingConfig::default()
    };
    let (mut net, a, b) = two_agents(&config);
    let r = net.send(a, b, b"1234", Delivery::AtMostOnce, false);
    net.run();
    assert_eq!(net.reply(r), ok());
    let full = net.send(a, b, b"5", Delivery::AtMostOnce, false);
    let blocked = net.send(a, b, b"6", Delivery::Reliable, true);
    net.run();
    assert_eq!(net.reply(full), err(SendError::Full));
    assert_eq!(net.reply(blocked), None);
    net.exit(b);
    net.run();
    assert_eq!(net.reply(blocked), err(SendError::Exited));
}

/// Random sends between processes on three agents over a network that drops,
/// duplicates and reorders (seeded: proptest prints the seed of a failure): every
/// pair is FIFO, nothing reaches an application twice, every send is answered once
/// the network is quiet, a send answered delivered was delivered once, and one
/// answered with a definite failure was not delivered.
mod random_network {
    use super::*;
    use proptest::prelude::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn run(seed: u64) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let config = MessagingConfig {
            mailbox_messages: 4,
            credit_window: 3,
            ..MessagingConfig::default()
        };
        let mut net = Net::new(3, &config);
        let procs: Vec<Pid> = (1..=3).flat_map(|n| [pid(n, 1), pid(n, 2)]).collect();
        for p in &procs {
            net.start(*p, T);
        }
        // request -> (from, to, payload id)
        let mut sends: BTreeMap<RequestId, (Pid, Pid, u32)> = BTreeMap::new();
        let mut received: BTreeMap<u32, u32> = BTreeMap::new();
        let mut last_seq: BTreeMap<(Pid, Pid), u64> = BTreeMap::new();
        let mut collect = |net: &mut Net, received: &mut BTreeMap<u32, u32>| {
            for p in procs.clone() {
                for m in net.recv(p, 100) {
                    if let MailBody::Data(d) = &m.body {
                        let id = u32::from_le_bytes(d[..4].try_into().unwrap());
                        *received.entry(id).or_default() += 1;
                    }
                    if let Some(prev) = last_seq.insert((m.from, p), m.seq) {
                        assert!(m.seq > prev, "FIFO broken on {:?}", (m.from, p));
                    }
                }
            }
        };
        for id in 0..200u32 {
            let from = procs[rng.gen_range(0..procs.len())];
            let to = procs[rng.gen_range(0..procs.len())];
            let delivery = if rng.gen_bool(0.5) {
                Delivery::Reliable
            } else {
                Delivery::AtMostOnce
            };
            let r = net.send(from, to, &id.to_le_bytes(), delivery, rng.gen_bool(0.5));
            sends.insert(r, (from, to, id));
            // The network: drop, duplicate, reorder a few messages.
            for _ in 0..rng.gen_range(0..4) {
                if net.wire.is_empty() {
                    break;
                }
                let i = rng.gen_range(0..net.wire.len());
                let (f, t, m) = net.wire.remove(i).unwrap();
                match rng.gen_range(0..10) {
                    0 => {}
                    1 => {
                        net.deliver(f, t, m.clone());
                        net.deliver(f, t, m);
                    }
                    _ => net.deliver(f, t, m),
                }
            }
            if rng.gen_bool(0.2) {
                collect(&mut net, &mut received);
            }
            net.advance_to(net.now + Duration::from_millis(rng.gen_range(0..30)));
        }
        // Quiet network: drain everything, receive everything, let timers run out.
        for _ in 0..50 {
            net.run();
            collect(&mut net, &mut received);
            net.advance_to(net.now + config.resend_interval);
        }
        net.advance_to(net.now + config.block_timeout * 2);
        net.run();
        collect(&mut net, &mut received);
        assert!(
            received.values().all(|n| *n == 1),
            "a duplicate reached an application"
        );
        for (r, (_, _, id)) in sends {
            let got = received.contains_key(&id);
            match net.reply(r) {
                Some(ApiReply::Sent(Ok(_))) => assert!(got, "send {id} answered delivered"),
                Some(ApiReply::Sent(Err(SendError::Unknown))) => {}
                Some(ApiReply::Sent(Err(e))) => assert!(!got, "send {id} failed {e:?}"),
                other => panic!("send {id} answered {other:?}"),
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn fifo_once_and_answered(seed in any::<u64>()) {
            run(seed);
        }
    }
}

#[test]
fn sends_to_a_lost_process_or_a_removed_host_fail_lost() {
    let config = MessagingConfig::default();
    let mut net = Net::new(3, &config);
    let (a, on2, on3) = (pid(1, 1), pid(2, 1), pid(3, 1));
    net.start(a, T);
    net.start(on2, T);
    net.start(on3, T);
    net.event(
        NodeId(1),
        ServiceEvent::ProcessLost {
            pid: on2,
            tenant: T,
        },
    );
    let r = net.send(a, on2, b"x", Delivery::AtMostOnce, false);
    assert_eq!(net.reply(r), err(SendError::Lost));
    assert!(net.wire.is_empty(), "no message to a known lost process");
    // A host the federation removed: no answer means lost.
    net.event(
        NodeId(1),
        ServiceEvent::HostRemoved {
            instance: 0,
            node: NodeId(3),
            level: 0,
        },
    );
    let r = net.send(a, on3, b"x", Delivery::AtMostOnce, false);
    net.wire.clear();
    net.advance_to(net.now + config.fate_timeout);
    assert_eq!(net.reply(r), err(SendError::Lost));
}

/// A long-lived receiver does not keep a pair for every sender it ever heard from:
/// idle pairs go after `pair_idle`, and a sender that comes back later is delivered
/// in order from where it is.
#[test]
fn idle_receiving_pairs_are_forgotten_and_start_again_at_the_base() {
    let config = MessagingConfig::default();
    let mut net = Net::new(2, &config);
    let b = pid(2, 1);
    net.start(b, T);
    let senders: Vec<Pid> = (1..=50).map(|i| pid(1, i)).collect();
    for &a in &senders {
        net.start(a, T);
        let r = net.send(a, b, b"x", Delivery::Reliable, false);
        net.run();
        assert_eq!(net.reply(r), ok());
    }
    let inbound = |net: &Net| net.agents[&NodeId(2)].post().inbound_pairs();
    assert_eq!(inbound(&net), 50);
    assert_eq!(net.recv(b, 100).len(), 50);
    net.advance_to(net.now + config.pair_idle * 2);
    assert_eq!(inbound(&net), 0, "idle pairs are forgotten");
    // A sender that comes back goes on numbering; the receiver starts at its base.
    let a = senders[0];
    let r1 = net.send(a, b, b"1", Delivery::Reliable, false);
    let r2 = net.send(a, b, b"2", Delivery::AtMostOnce, false);
    net.run();
    assert_eq!((net.reply(r1), net.reply(r2)), (ok(), ok()));
    let mail = net.recv(b, 10);
    assert_eq!(data(&mail), vec![b"1".to_vec(), b"2".to_vec()]);
    assert_eq!(mail[0].seq, 1, "the pair's numbering went on");
    assert_eq!(inbound(&net), 1);
}

#[test]
fn pair_idle_must_exceed_the_fate_timeout() {
    let config = MessagingConfig {
        pair_idle: Duration::from_millis(100),
        ..MessagingConfig::default()
    };
    assert_eq!(
        Messaging::validate(&config),
        Err(super::MessagingConfigError::PairIdle)
    );
}

/// The deadline the service reports is cached (see [`Messaging::end_of_input`]): after
/// every kind of input it is the earliest of the queues of the point-to-point
/// layer and the parts' timers, as computed from them, and it moves both earlier
/// (a new wait, a send, a monitor) and later (a settled send, a fired timer).
#[test]
fn the_cached_deadline_is_always_the_earliest_of_the_queues() {
    let config = MessagingConfig::default();
    let mut net = Net::new(2, &config);
    let check = |net: &Net| {
        for (node, a) in &net.agents {
            assert_eq!(
                a.next_timeout(),
                a.earliest_deadline(),
                "agent {node:?} at {:?}",
                net.now
            );
        }
    };
    let (a, b, far) = (pid(1, 1), pid(1, 2), pid(2, 1));
    assert_eq!(net.agents[&NodeId(1)].next_timeout(), None);
    net.start(a, T);
    net.start(b, T);
    net.start(far, T);
    check(&net);
    // A waiting receive sets a deadline 10 ms out.
    net.call(
        NodeId(1),
        ApiCall::Recv {
            tenant: T,
            pid: b,
            max: 1,
            wait: Some(Duration::from_millis(10)),
        },
    );
    check(&net);
    let wait_until = net.now + Duration::from_millis(10);
    assert_eq!(net.agents[&NodeId(1)].next_timeout(), Some(wait_until));
    // A remote send adds its fate deadline and, reliable, a resend deadline before it.
    net.send(a, far, b"x", Delivery::Reliable, false);
    check(&net);
    let resend = net.now + config.resend_interval;
    assert_eq!(
        net.agents[&NodeId(1)].next_timeout(),
        Some(resend.min(wait_until))
    );
    // A monitor of a remote process adds a ping.
    net.call(
        NodeId(1),
        ApiCall::Monitor {
            tenant: T,
            watcher: a,
            watched: far,
        },
    );
    check(&net);
    // Deliveries, acks and fired timers each leave the cache right.
    while net.step() {
        check(&net);
    }
    for _ in 0..30 {
        net.advance_to(net.now + Duration::from_millis(7));
        check(&net);
    }
    net.exit(a);
    net.exit(b);
    check(&net);
    net.run();
    net.advance_to(net.now + config.block_timeout + config.monitor_ping * 2);
    check(&net);
}

/// A send to an external address goes to the proxy the sender's pid picks, which
/// hands it to its driver on one connection per (process, address); what the
/// external service answers on it comes back into the sender's mailbox as
/// `External` mail. Without proxies the send is `Unsupported`; a pid send cannot
/// carry `External` mail.
#[test]
fn an_external_send_goes_out_through_the_proxy_and_its_answer_comes_back() {
    let none = MessagingConfig::default();
    let mut net = Net::new(2, &none);
    let a = pid(1, 1);
    net.start(a, T);
    let out = |net: &mut Net, data: &[u8]| {
        net.call(
            NodeId(1),
            ApiCall::Send {
                tenant: T,
                from: a,
                to: Dest::External {
                    host: "echo.example".into(),
                    port: 7,
                },
                data: data.to_vec(),
                delivery: Delivery::AtMostOnce,
                block: true,
            },
        )
    };
    let r = out(&mut net, b"x");
    assert_eq!(
        net.replies.remove(&r),
        Some(ApiReply::Sent(Err(SendError::Unsupported)))
    );

    let config = MessagingConfig {
        proxies: vec![NodeId(2)],
        ..MessagingConfig::default()
    };
    let mut net = Net::new(2, &config);
    net.start(a, T);
    let r1 = out(&mut net, b"ping");
    let r2 = out(&mut net, b"again");
    net.run();
    for r in [r1, r2] {
        assert_eq!(
            net.replies.remove(&r),
            Some(ApiReply::Sent(Ok(SendReceipt { reached: 1 })))
        );
    }
    let cmds = std::mem::take(&mut net.external);
    let conns: Vec<u64> = cmds
        .iter()
        .map(|(node, c)| match c {
            ExternalCommand::Send {
                conn, host, port, ..
            } if *node == NodeId(2) && host == "echo.example" && *port == 7 => *conn,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        conns,
        vec![conns[0]; 2],
        "one connection per process and address"
    );
    // The echo service answers on the connection.
    let now = net.now;
    net.agents.get_mut(&NodeId(2)).unwrap().handle_external(
        now,
        ExternalEvent::Data {
            conn: conns[0],
            data: b"pong".to_vec(),
        },
    );
    net.drain(NodeId(2));
    net.run();
    let mails = net.recv(a, 10);
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].class, DistanceClass::External);
    assert_eq!(
        mails[0].body,
        MailBody::External {
            host: "echo.example".into(),
            port: 7,
            data: b"pong".to_vec()
        }
    );
    // A connection that ends gives its process a notice (after its bytes) with the
    // reason the driver gave; the next send opens another.
    net.agents.get_mut(&NodeId(2)).unwrap().handle_external(
        now,
        ExternalEvent::Closed {
            conn: conns[0],
            reason: ExternalClose::Unreachable,
        },
    );
    net.drain(NodeId(2));
    net.run();
    assert_eq!(
        net.recv(a, 10)
            .into_iter()
            .map(|m| m.body)
            .collect::<Vec<_>>(),
        vec![MailBody::ExternalClosed {
            host: "echo.example".into(),
            port: 7,
            reason: ExternalClose::Unreachable
        }]
    );
    out(&mut net, b"3");
    net.run();
    assert!(matches!(
        net.external.as_slice(),
        [(_, ExternalCommand::Send { conn, .. })] if *conn != conns[0]
    ));
    // Only a proxy's `Back` makes external mail: a pid send cannot carry one.
    let forged = MessagingMsg::Deliver(Item {
        tenant: T,
        from: pid(2, 1),
        to: a,
        seq: 0,
        base: 0,
        reliable: false,
        block: false,
        body: MailBody::External {
            host: "h".into(),
            port: 1,
            data: vec![],
        },
    });
    assert!(Messaging::validate_msg(&forged).is_err());
}

/// Agent 1 runs process `a`, agent 2 is its proxy.
fn proxied(config: MessagingConfig) -> (Net, Pid) {
    let config = MessagingConfig {
        proxies: vec![NodeId(2)],
        ..config
    };
    let mut net = Net::new(2, &config);
    let a = pid(1, 1);
    net.start(a, T);
    (net, a)
}

fn ext_send(net: &mut Net, a: Pid, data: &[u8]) -> RequestId {
    net.call(
        a.origin(),
        ApiCall::Send {
            tenant: T,
            from: a,
            to: Dest::External {
                host: "echo.example".into(),
                port: 7,
            },
            data: data.to_vec(),
            delivery: Delivery::AtMostOnce,
            block: false,
        },
    )
}

/// What the proxy's driver was asked to write, in order.
fn written(net: &mut Net) -> Vec<Vec<u8>> {
    std::mem::take(&mut net.external)
        .into_iter()
        .filter_map(|(_, c)| match c {
            ExternalCommand::Send { data, .. } => Some(data),
            ExternalCommand::Close { .. } => None,
        })
        .collect()
}

/// The bytes of the external mail of `mails`.
fn external_data(mails: &[Mail]) -> Vec<Vec<u8>> {
    mails
        .iter()
        .filter_map(|m| match &m.body {
            MailBody::External { data, .. } => Some(data.clone()),
            _ => None,
        })
        .collect()
}

fn is_out(m: &MessagingMsg) -> bool {
    matches!(m, MessagingMsg::External(ExternalMsg::Out { .. }))
}

fn is_back(m: &MessagingMsg) -> bool {
    matches!(m, MessagingMsg::External(ExternalMsg::Back { .. }))
}

/// The wire reverses, duplicates and loses the pieces of an external connection in
/// both directions: the driver writes each send once and in order, the process
/// gets each answer once and in order (the regression of `msg-external` seeds
/// 101 and 103: unnumbered `Out`/`Back` were reordered by jitter and lost).
#[test]
fn an_external_connection_survives_reorder_loss_and_duplicates_on_the_pair() {
    let (mut net, a) = proxied(MessagingConfig::default());
    let rs: Vec<_> = (0..4u8).map(|i| ext_send(&mut net, a, &[i])).collect();
    // The four `Out`s: reversed, the second lost, the first duplicated.
    let mut outs: Vec<_> = net.wire.drain(..).collect();
    assert!(outs.iter().all(|(_, _, m)| is_out(m)) && outs.len() == 4);
    outs.remove(1);
    outs.reverse();
    outs.push(outs[2].clone());
    net.wire.extend(outs);
    net.run();
    assert_eq!(
        written(&mut net),
        vec![vec![0]],
        "1 is missing: 2 and 3 wait"
    );
    net.advance_to(net.now + Duration::from_millis(60));
    net.run();
    assert_eq!(written(&mut net), vec![vec![1], vec![2], vec![3]]);
    for r in rs {
        assert_eq!(net.reply(r), ok());
    }
    // Four answers: the first lost, the rest reversed and duplicated.
    let conn = 1;
    for i in 10..14u8 {
        let now = net.now;
        let proxy = net.agents.get_mut(&NodeId(2)).unwrap();
        proxy.handle_external(
            now,
            ExternalEvent::Data {
                conn,
                data: vec![i],
            },
        );
        net.drain(NodeId(2));
    }
    let mut backs: Vec<_> = net.wire.drain(..).collect();
    assert!(backs.iter().all(|(_, _, m)| is_back(m)) && backs.len() == 4);
    backs.remove(0);
    backs.reverse();
    backs.extend(backs.clone());
    net.wire.extend(backs);
    net.run();
    assert!(external_data(&net.recv(a, 10)).is_empty(), "10 is missing");
    net.advance_to(net.now + Duration::from_millis(60));
    net.run();
    let got = external_data(&net.recv(a, 10));
    assert_eq!(got, vec![vec![10], vec![11], vec![12], vec![13]]);
    // Everything is acknowledged: nothing is sent again.
    net.advance_to(net.now + Duration::from_secs(2));
    assert!(net.wire.is_empty() && written(&mut net).is_empty());
    assert!(net.recv(a, 10).is_empty());
}

/// A gap on the way back that is never filled (the proxy's answers are all lost)
/// ends the connection with `Reset` after the fate timeout: the process is told, its
/// unanswered sends fail `Unknown`, the proxy closes its connection, and the next
/// send opens a new one.
#[test]
fn an_external_gap_that_is_never_filled_resets_the_connection() {
    let (mut net, a) = proxied(MessagingConfig::default());
    let r = ext_send(&mut net, a, b"q");
    // The proxy hears nothing more from the agent's side... and vice versa.
    net.run();
    assert_eq!(net.reply(r), ok());
    let now = net.now;
    let proxy = net.agents.get_mut(&NodeId(2)).unwrap();
    proxy.handle_external(
        now,
        ExternalEvent::Data {
            conn: 1,
            data: b"a".to_vec(),
        },
    );
    proxy.handle_external(
        now,
        ExternalEvent::Data {
            conn: 1,
            data: b"b".to_vec(),
        },
    );
    net.drain(NodeId(2));
    net.wire.pop_front(); // `a` is lost, `b` comes
    net.run();
    let pending = ext_send(&mut net, a, b"r");
    // From now on everything from the proxy to the agent is lost.
    let end = net.now + Duration::from_secs(1);
    while net.now < end {
        while let Some((from, to, m)) = net.wire.pop_front() {
            if from != NodeId(2) {
                net.deliver(from, to, m);
            }
        }
        let next = net.now + Duration::from_millis(10);
        net.advance_to(next);
    }
    assert_eq!(net.reply(pending), err(SendError::Unknown));
    let mails = net.recv(a, 10);
    assert_eq!(
        mails.iter().map(|m| m.body.clone()).collect::<Vec<_>>(),
        vec![MailBody::ExternalClosed {
            host: "echo.example".into(),
            port: 7,
            reason: ExternalClose::Reset
        }],
        "b is never handed over before a"
    );
    written(&mut net);
    let r = ext_send(&mut net, a, b"new");
    net.run();
    assert_eq!(net.reply(r), ok());
    assert_eq!(written(&mut net), vec![b"new".to_vec()]);
}

/// A process that does not read: its answers wait at its agent (the proxy sends
/// them again) while its mailbox is full, and after the fate timeout the connection
/// ends `Overflow`, after the answers it took. Nothing is dropped silently.
#[test]
fn an_external_connection_to_a_full_mailbox_ends_with_overflow() {
    let (mut net, a) = proxied(MessagingConfig {
        mailbox_messages: 1,
        ..MessagingConfig::default()
    });
    ext_send(&mut net, a, b"q");
    net.run();
    let now = net.now;
    let proxy = net.agents.get_mut(&NodeId(2)).unwrap();
    for d in [b"a", b"b"] {
        proxy.handle_external(
            now,
            ExternalEvent::Data {
                conn: 1,
                data: d.to_vec(),
            },
        );
    }
    net.drain(NodeId(2));
    net.run();
    net.advance_to(net.now + Duration::from_secs(1));
    net.run();
    let bodies: Vec<_> = net.recv(a, 10).into_iter().map(|m| m.body).collect();
    assert_eq!(
        bodies,
        vec![
            MailBody::External {
                host: "echo.example".into(),
                port: 7,
                data: b"a".to_vec()
            },
            MailBody::ExternalClosed {
                host: "echo.example".into(),
                port: 7,
                reason: ExternalClose::Overflow
            }
        ]
    );
    assert!(
        net.external
            .iter()
            .any(|(n, c)| *n == NodeId(2) && matches!(c, ExternalCommand::Close { conn: 1 })),
        "the proxy closed its connection"
    );
}
