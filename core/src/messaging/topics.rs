//! Fan-out order: each fan-out send of a sender (a publication, a multicast or a
//! broadcast, whatever its target) carries its position among that sender's fan-out
//! sends in this engine (from 1), and a member's host delivers it to a member only
//! if it comes after the last one delivered from that sender to that member. So
//! every live subscriber gets each publication at most once, in the publisher's
//! order, and two sends of one sender to different targets that share a member
//! reach it in the order they were sent (FIFO per sender and receiver); one that a
//! reordering network or a different tree path delivers after a later one is
//! dropped (and counted as overtaken in the sender's answer: see `fanout`).
//!
//! [`Topics`] is the part of messaging that serves `subscribe`, `unsubscribe` and
//! publications (sends to `Dest::Topic`): a subscription is a membership of the
//! topic's [`Target`] in its own fan-out engine, and a publication is that engine's
//! walk (see `fanout`), so one publication to many subscribers in a remote subtree
//! enters it once and fans out inside it, with no broker. [`Order`] numbers the
//! publications at the publisher's host and filters them at the subscribers'
//! (groups' multicasts and broadcasts use it the same way).
//!
//! Invariants: positions grow by one per publication; both tables are bounded
//! ([`MAX_PUBLISHERS`], [`MAX_HEARD`]); a publisher's entries go when its process
//! ends (at its host).

use super::fanout::{FanOut, Fanout, FanoutMsg, Target};
use super::msg::MessagingMsg;
use super::post::Post;
use super::Part;
use crate::ids::{NodeId, Pid};
use crate::service::{Context, ServiceEvent};
use crate::time::Time;
use crate::wire::Reject;
use nefele_api::calls::{ApiCall, ApiReply, RequestId};
use nefele_api::messaging::Dest;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::time::Duration;

/// The most senders a host numbers fan-out sends for; a new one beyond it is
/// refused (the send fails `Full`).
pub const MAX_PUBLISHERS: usize = 65_536;
/// The most (sender, member) pairs a host remembers the last delivery of; beyond it
/// the lowest pair is forgotten (a late duplicate of it could then be delivered
/// again: the bound trades memory for that).
pub const MAX_HEARD: usize = 65_536;

/// Where a fan-out send (a batch of consecutive positions of one sender, see
/// [`Carry::Data`](super::fanout::Carry::Data)) stands for one member
/// ([`Order::check`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    /// Deliver it from this position on: every one before it was delivered to the
    /// member already (a repeat of a batch partly put in a mailbox that was full),
    /// none after it.
    From(u64),
    /// Its last position is the last one delivered to the member (a repeat of a
    /// reliable send whose answer was lost: it counts as reached, and is not
    /// delivered again).
    Repeat,
    /// A later one was delivered to the member already: it is dropped.
    Late,
}

/// Both ends of the order of fan-out sends at one host.
#[derive(Debug, Default)]
pub struct Order {
    /// Sender side: the last position given, per local sender.
    next: BTreeMap<Pid, u64>,
    /// Member side: the last position delivered here, per (sender, member).
    heard: BTreeMap<(Pid, Pid), u64>,
}

impl Order {
    /// The first of the positions of `from`'s next `n` fan-out sends (consecutive),
    /// or `None` if the table is full.
    pub fn stamp(&mut self, from: Pid, n: u64) -> Option<u64> {
        if !self.next.contains_key(&from) && self.next.len() >= MAX_PUBLISHERS {
            return None;
        }
        let last = self.next.entry(from).or_default();
        let first = last.saturating_add(1);
        *last = last.saturating_add(n);
        Some(first)
    }

    /// Where the fan-out sends `seqs` of `from` (one batch) stand for the local
    /// member `to` (nothing is recorded: see [`Order::record`]).
    #[must_use]
    pub fn check(&self, from: Pid, to: Pid, seqs: RangeInclusive<u64>) -> Admit {
        match self.heard.get(&(from, to)) {
            Some(last) if last > seqs.end() => Admit::Late,
            Some(last) if last == seqs.end() => Admit::Repeat,
            Some(last) if last >= seqs.start() => Admit::From(last + 1),
            _ => Admit::From(*seqs.start()),
        }
    }

    /// Records the fan-out send `seq` of `from` as the last one delivered to the
    /// local member `to` (it must be admitted: see [`Order::check`]).
    pub fn record(&mut self, from: Pid, to: Pid, seq: u64) {
        let key = (from, to);
        if !self.heard.contains_key(&key) && self.heard.len() >= MAX_HEARD {
            self.heard.pop_first();
        }
        let last = self.heard.entry(key).or_default();
        *last = (*last).max(seq);
    }

    /// The local process `pid` ended: it sends no more (what it received is kept
    /// until evicted: a late copy must not reach a later life of nothing).
    pub fn ended(&mut self, pid: Pid) {
        self.next.remove(&pid);
    }

    /// Entries of both tables.
    #[must_use]
    pub fn len(&self) -> (usize, usize) {
        (self.next.len(), self.heard.len())
    }
}

/// Pub/sub's wire sub-message.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TopicsMsg {
    /// A step of a publication's walk.
    Fanout(FanoutMsg),
}

/// Checks what a peer sent.
pub(super) fn validate(msg: &TopicsMsg) -> Result<(), Reject> {
    match msg {
        TopicsMsg::Fanout(m) => m.validate(),
    }
}

/// A short, stable name of the kind of `msg` (the `_data` kinds carry application
/// data and may exceed the control MTU).
pub(super) fn kind(msg: &TopicsMsg) -> &'static str {
    match msg {
        TopicsMsg::Fanout(m) => match m.kind() {
            "walk_data" => "topics_walk_data",
            "visit_data" => "topics_visit_data",
            "walk" => "topics_walk",
            "visit" => "topics_visit",
            "expect" => "topics_expect",
            "joined" => "topics_joined",
            _ => "topics_answer",
        },
    }
}

/// This agent's subscriptions and publications in flight.
#[derive(Debug)]
pub struct Topics {
    engine: Fanout,
}

impl Topics {
    /// The topics of agent `me`; a publication waits `fate_timeout` for its parts.
    #[must_use]
    pub fn new(me: NodeId, fate_timeout: Duration, resend_every: Duration) -> Self {
        Topics {
            engine: Fanout::new(me, fate_timeout, resend_every),
        }
    }

    /// The engine (subscriptions, filter), read-only.
    #[must_use]
    pub fn engine(&self) -> &Fanout {
        &self.engine
    }

    fn flush(&mut self, post: &mut Post) {
        while let Some(out) = self.engine.poll() {
            match out {
                FanOut::Send(to, m) => {
                    post.send_msg(to, MessagingMsg::Topics(TopicsMsg::Fanout(m)))
                }
                FanOut::Reply(request, reply) => post.reply(request, reply),
                FanOut::Listed { .. } => debug_assert!(false, "topics fetch no lists"),
            }
        }
    }
}

impl Part for Topics {
    type Msg = TopicsMsg;

    fn handle_message(
        &mut self,
        now: Time,
        from: NodeId,
        msg: TopicsMsg,
        post: &mut Post,
        ctx: &Context<'_>,
    ) {
        let TopicsMsg::Fanout(m) = msg;
        self.engine.handle_message(now, from, m, &ctx.tree, post);
        self.flush(post);
    }

    fn handle_api(
        &mut self,
        now: Time,
        request: RequestId,
        call: ApiCall,
        post: &mut Post,
        ctx: &Context<'_>,
    ) {
        match call {
            ApiCall::Subscribe {
                tenant,
                ref topic,
                pid,
            }
            | ApiCall::Unsubscribe {
                tenant,
                ref topic,
                pid,
            } => {
                let join = matches!(call, ApiCall::Subscribe { .. });
                let target = Target::topic(tenant, topic);
                self.engine
                    .serve_membership(now, &ctx.tree, request, target, pid, join, post);
            }
            ApiCall::Send {
                tenant,
                from,
                to: Dest::Topic(topic),
                data,
                delivery,
                ..
            } => {
                if let Err(e) = post.check_send(tenant, from, data.len()) {
                    post.reply(request, ApiReply::Sent(Err(e)));
                } else {
                    let target = Target::topic(tenant, &topic);
                    self.engine
                        .send_to_all(now, &ctx.tree, request, target, from, data, delivery, post);
                }
            }
            other => post.reply(request, super::unsupported(&other)),
        }
        self.flush(post);
    }

    fn handle_event(
        &mut self,
        _now: Time,
        event: &ServiceEvent,
        post: &mut Post,
        _ctx: &Context<'_>,
    ) {
        if let ServiceEvent::ProcessExited { pid, tenant, .. } = *event {
            self.engine.process_ended(pid, tenant);
        }
        self.flush(post);
    }

    fn handle_timeout(&mut self, now: Time, post: &mut Post, ctx: &Context<'_>) {
        self.engine.handle_timeout(now, &ctx.tree, post);
        self.flush(post);
    }

    fn next_timeout(&self) -> Option<Time> {
        self.engine.next_timeout()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{Incarnation, NodeId};
    use proptest::prelude::*;

    proptest! {
        /// Whatever order publications arrive in, and however often, what is admitted
        /// is strictly increasing and never twice.
        #[test]
        fn admitted_positions_strictly_grow(arrivals in proptest::collection::vec(1u64..50, 0..200)) {
            let from = Pid::new(NodeId(1), Incarnation(1), 1);
            let to = Pid::new(NodeId(2), Incarnation(1), 1);
            let mut order = Order::default();
            let admitted: Vec<u64> = arrivals
                .iter()
                .copied()
                .filter(|s| {
                    let new = order.check(from, to, *s..=*s) == Admit::From(*s);
                    if new {
                        order.record(from, to, *s);
                    }
                    new
                })
                .collect();
            prop_assert!(admitted.windows(2).all(|w| w[0] < w[1]), "{admitted:?}");
        }
    }

    #[test]
    fn positions_start_at_one_per_sender_and_go_with_it() {
        let a = Pid::new(NodeId(1), Incarnation(1), 1);
        let b = Pid::new(NodeId(1), Incarnation(1), 2);
        let mut order = Order::default();
        assert_eq!(order.stamp(a, 1), Some(1));
        assert_eq!(order.stamp(a, 3), Some(2), "a batch of three: 2, 3 and 4");
        assert_eq!(order.stamp(a, 1), Some(5));
        assert_eq!(order.stamp(b, 1), Some(1));
        order.ended(a);
        assert_eq!(order.len().0, 1);
        assert_eq!(order.stamp(a, 1), Some(1));
    }

    /// The bug the messaging property test found (seed 9117139030379720100): two
    /// sends of one sender to two targets sharing a member, numbered per target, both
    /// admitted whatever their arrival order. Numbered per sender and admitted per
    /// member, the later-sent one arriving first makes the earlier one late.
    #[test]
    fn sends_to_two_targets_reach_a_shared_member_in_the_sender_order() {
        let from = Pid::new(NodeId(1), Incarnation(1), 1);
        let member = Pid::new(NodeId(2), Incarnation(1), 1);
        let other = Pid::new(NodeId(2), Incarnation(1), 2);
        let mut order = Order::default();
        let first = order.stamp(from, 1).unwrap();
        let second = order.stamp(from, 1).unwrap();
        assert_eq!(
            order.check(from, member, second..=second),
            Admit::From(second)
        );
        order.record(from, member, second);
        assert_eq!(
            order.check(from, member, first..=first),
            Admit::Late,
            "delivered after a later send"
        );
        assert_eq!(order.check(from, member, second..=second), Admit::Repeat);
        assert_eq!(
            order.check(from, other, first..=first),
            Admit::From(first),
            "another member keeps its own order"
        );
    }

    /// A batch put in a mailbox up to a point (it filled) goes on from there when it
    /// comes again, and is a repeat once all of it is in.
    #[test]
    fn a_batch_partly_delivered_goes_on_where_it_stopped() {
        let from = Pid::new(NodeId(1), Incarnation(1), 1);
        let member = Pid::new(NodeId(2), Incarnation(1), 1);
        let mut order = Order::default();
        let first = order.stamp(from, 4).unwrap();
        let batch = first..=first + 3;
        assert_eq!(order.check(from, member, batch.clone()), Admit::From(first));
        order.record(from, member, first);
        order.record(from, member, first + 1);
        assert_eq!(
            order.check(from, member, batch.clone()),
            Admit::From(first + 2)
        );
        order.record(from, member, first + 2);
        order.record(from, member, first + 3);
        assert_eq!(order.check(from, member, batch), Admit::Repeat);
        assert_eq!(
            order.check(from, member, first..=first + 2),
            Admit::Late,
            "an earlier batch ending before the last delivered"
        );
    }
}
