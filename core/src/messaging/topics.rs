//! Pub/sub order: each publication of a publisher on a topic carries its position
//! (from 1), and a subscriber's host delivers a publication only if it comes after
//! the last one it delivered from that publisher on that topic. So every live
//! subscriber gets each publication at most once, in the publisher's order; one
//! that a reordering network delivers after a later one is dropped (and not counted
//! as reached in the publisher's receipt).
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
use std::time::Duration;

/// The most (publisher, topic) pairs a host numbers publications for; a new pair
/// beyond it is refused (the send fails `Full`).
pub const MAX_PUBLISHERS: usize = 65_536;
/// The most (publisher, topic) pairs a host remembers the last delivery of; beyond
/// it the lowest pair is forgotten (a late duplicate of it could then be delivered
/// again: the bound trades memory for that).
pub const MAX_HEARD: usize = 65_536;

/// Both ends of the order of publications at one host.
#[derive(Debug, Default)]
pub struct Order {
    /// Publisher side: the last position given, per (local publisher, target).
    next: BTreeMap<(Pid, Target), u64>,
    /// Subscriber side: the last position delivered here, per (publisher, target).
    heard: BTreeMap<(Pid, Target), u64>,
}

impl Order {
    /// The position of `from`'s next publication on `target`, or `None` if the table
    /// is full.
    pub fn stamp(&mut self, from: Pid, target: &Target) -> Option<u64> {
        let key = (from, target.clone());
        if !self.next.contains_key(&key) && self.next.len() >= MAX_PUBLISHERS {
            return None;
        }
        let seq = self.next.entry(key).or_default();
        *seq += 1;
        Some(*seq)
    }

    /// Whether the publication `seq` of `from` on `target` may be delivered here (it
    /// comes after every one delivered before); if so, it is recorded as delivered.
    pub fn admit(&mut self, from: Pid, target: &Target, seq: u64) -> bool {
        let key = (from, target.clone());
        match self.heard.get_mut(&key) {
            Some(last) if *last >= seq => false,
            Some(last) => {
                *last = seq;
                true
            }
            None => {
                if self.heard.len() >= MAX_HEARD {
                    self.heard.pop_first();
                }
                self.heard.insert(key, seq);
                true
            }
        }
    }

    /// The local process `pid` ended: it publishes no more.
    pub fn ended(&mut self, pid: Pid) {
        self.next.retain(|(p, _), _| *p != pid);
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
    pub fn new(me: NodeId, fate_timeout: Duration) -> Self {
        Topics {
            engine: Fanout::new(me, fate_timeout),
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
            ApiCall::Subscribe { tenant, topic, pid } => {
                let local = post.tenant_of(pid) == Some(tenant);
                let result =
                    self.engine
                        .join(now, &ctx.tree, Target::topic(tenant, &topic), pid, local);
                post.reply(request, ApiReply::Grouped(result));
            }
            ApiCall::Unsubscribe { tenant, topic, pid } => {
                let result = self.engine.leave(&Target::topic(tenant, &topic), pid);
                post.reply(request, ApiReply::Grouped(result));
            }
            ApiCall::Send {
                tenant,
                from,
                to: Dest::Topic(topic),
                data,
                ..
            } => {
                if let Err(e) = post.check_send(tenant, from, data.len()) {
                    post.reply(request, ApiReply::Sent(Err(e)));
                } else {
                    let target = Target::topic(tenant, &topic);
                    self.engine
                        .send_to_all(now, &ctx.tree, request, target, from, data, post);
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

    fn handle_timeout(&mut self, now: Time, post: &mut Post, _ctx: &Context<'_>) {
        self.engine.handle_timeout(now);
        self.flush(post);
    }

    fn next_timeout(&self) -> Option<Time> {
        self.engine.next_timeout()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{Incarnation, NodeId, TenantId};
    use proptest::prelude::*;

    fn topic() -> Target {
        Target::topic(TenantId(1), "t")
    }

    proptest! {
        /// Whatever order publications arrive in, and however often, what is admitted
        /// is strictly increasing and never twice.
        #[test]
        fn admitted_positions_strictly_grow(arrivals in proptest::collection::vec(1u64..50, 0..200)) {
            let from = Pid::new(NodeId(1), Incarnation(1), 1);
            let mut order = Order::default();
            let admitted: Vec<u64> = arrivals
                .iter()
                .copied()
                .filter(|s| order.admit(from, &topic(), *s))
                .collect();
            prop_assert!(admitted.windows(2).all(|w| w[0] < w[1]), "{admitted:?}");
        }
    }

    #[test]
    fn positions_start_at_one_per_pair_and_go_with_the_publisher() {
        let a = Pid::new(NodeId(1), Incarnation(1), 1);
        let b = Pid::new(NodeId(1), Incarnation(1), 2);
        let mut order = Order::default();
        assert_eq!(order.stamp(a, &topic()), Some(1));
        assert_eq!(order.stamp(a, &topic()), Some(2));
        assert_eq!(order.stamp(b, &topic()), Some(1));
        order.ended(a);
        assert_eq!(order.len().0, 1);
        assert_eq!(order.stamp(a, &topic()), Some(1));
    }
}
