//! Messaging (issue 13): a location-independent mailbox per process, addressed by
//! pid, name, group or topic, brokerless, with every failure reported.
//!
//! # What this service owns
//!
//! - The **mailboxes** of this host's processes ([`post`]): created when a process
//!   starts ([`ServiceEvent::ProcessStarted`]), dropped when it exits or is lost
//!   (blocked senders and a waiting receive are answered).
//! - The **point-to-point path** ([`post`]): a send to a pid goes from the sender's
//!   agent to the pid's origin (its host) in one hop, or straight into the mailbox
//!   on the same host; FIFO per (sender, receiver) pair; acks that tell the sender
//!   its fate; reliable mode; credits; monitors; distance classes and measured
//!   round trips.
//! - **Names**, **groups** and **topics** ([`names`], [`groups`], [`topics`]): each
//!   a [`Part`] with its own sub-message, driven by this service and acting through
//!   the point-to-point layer ([`Post`]).
//!
//! The service rides federation instance `messaging.instance` (0 by default); its
//! summary part counts the mailboxes of a subtree.

pub mod external;
pub mod fanout;
pub mod groups;
pub mod msg;
pub mod names;
pub mod pipe;
pub mod post;
#[cfg(test)]
mod tests;
pub mod topics;

pub use msg::MessagingMsg;
pub use post::Post;

use crate::agent::Identity;
use crate::federation::Summary;
use crate::ids::NodeId;
use crate::service::registry::earliest;
use crate::service::{Context, Service, ServiceEvent, ServiceOutput, SummaryPart};
use crate::time::Time;
use crate::wire::Reject;
use nefele_api::calls::{ApiCall, ApiReply, RequestId};
use nefele_api::messaging::{Dest, GroupError, MonitorError, MsgError, NameError, SendError};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Messaging's parameters (`messaging = { ... }` in the agent's configuration).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MessagingConfig {
    /// The federation instance messaging rides.
    pub instance: u8,
    /// The most messages one mailbox holds.
    pub mailbox_messages: u32,
    /// The most data bytes one mailbox holds.
    pub mailbox_bytes: u64,
    /// The largest message a process may send (at most [`msg::MAX_DATA_BYTES`]).
    pub max_message_bytes: u32,
    /// How long a sender waits for a message's outcome before it answers `Unknown`.
    pub fate_timeout: Duration,
    /// How often a reliable message is sent again while unacknowledged.
    pub resend_interval: Duration,
    /// How long the receiving agent holds an at-most-once message that came after a
    /// gap in its pair's sequence, waiting for the gap to fill, before it skips the
    /// gap (zero: it skips at once). It should exceed the network's jitter.
    pub reorder_wait: Duration,
    /// How long a blocking send waits for room in a full mailbox before it answers
    /// `Unknown` (counted from the receiver's `Parked`), and at most for its pair's
    /// credit at the sender's agent before it answers `Full`.
    pub block_timeout: Duration,
    /// The most messages of one (sender, receiver) pair in flight (sent and not yet
    /// settled): the sender's credit. A blocking send past it waits its turn at the
    /// sender's agent; a non-blocking one fails `Full`.
    pub credit_window: u32,
    /// The most blocking messages one full mailbox holds waiting for room.
    pub max_parked: u32,
    /// The most sends one agent holds waiting for credit.
    pub max_blocked: u32,
    /// How many ended local processes the agent remembers, to answer `Exited` or
    /// `Lost` rather than `NoSuchProcess`.
    pub ended_memory: u32,
    /// How long the receiving agent may hold acks to batch them (zero: at the end of
    /// the input that produced them).
    pub ack_delay: Duration,
    /// The most monitors one process holds.
    pub max_monitors: u32,
    /// How long a receiving pair that holds nothing is kept without an item before
    /// it is forgotten (far above `fate_timeout`; see [`post`]).
    pub pair_idle: Duration,
    /// How often an agent pings the hosts of the remote processes its processes
    /// watch; a host silent for `fate_timeout` after a ping has them reported
    /// `Unreachable`.
    pub monitor_ping: Duration,
    /// The proxy agents that carry sends to external addresses (the same list on
    /// every agent; empty: `Dest::External` answers `Unsupported`; see
    /// [`external`]).
    pub proxies: Vec<NodeId>,
}

impl Default for MessagingConfig {
    fn default() -> Self {
        MessagingConfig {
            instance: 0,
            mailbox_messages: 1024,
            mailbox_bytes: 8 << 20,
            max_message_bytes: 60_000,
            fate_timeout: Duration::from_millis(500),
            resend_interval: Duration::from_millis(50),
            reorder_wait: Duration::from_millis(1),
            block_timeout: Duration::from_secs(10),
            credit_window: 256,
            max_parked: 1024,
            max_blocked: 65_536,
            ended_memory: 4096,
            ack_delay: Duration::ZERO,
            max_monitors: 1024,
            pair_idle: Duration::from_secs(10),
            monitor_ping: Duration::from_secs(1),
            proxies: Vec::new(),
        }
    }
}

/// Why a messaging configuration is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MessagingConfigError {
    /// `max_message_bytes` is zero or above what one wire message carries.
    #[error("max_message_bytes must be in 1..={max}", max = msg::MAX_DATA_BYTES)]
    MessageSize,
    /// A bound that must be positive is zero.
    #[error("{0} must be positive")]
    Zero(&'static str),
    /// `pair_idle` is not above `fate_timeout`.
    #[error("pair_idle must exceed fate_timeout")]
    PairIdle,
}

/// Messaging's part of the federation summaries.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessagingSummary {
    /// The mailboxes (live processes) of the subtree.
    pub mailboxes: u64,
    /// The groups, topics and tenants the subtree may hold members of (see
    /// [`fanout`]).
    pub members: fanout::MemberFilter,
}

impl MessagingSummary {
    /// Messaging's part of `summary` (none: nothing).
    #[must_use]
    pub fn of(summary: &Summary) -> MessagingSummary {
        summary.payload.messaging.unwrap_or_default()
    }
}

impl SummaryPart for MessagingSummary {
    const UNKNOWN: Self = MessagingSummary {
        mailboxes: 0,
        members: fanout::MemberFilter::ALL,
    };

    fn plus(self, other: Self) -> Self {
        MessagingSummary {
            mailboxes: self.mailboxes.saturating_add(other.mailboxes),
            members: self.members.union(other.members),
        }
    }
}

/// A part of messaging driven by the service (names, groups, topics): it has its
/// own sub-message and acts through the point-to-point layer.
pub trait Part: std::fmt::Debug {
    /// Its wire sub-message.
    type Msg;
    /// A sub-message from agent `from`, validated already.
    fn handle_message(
        &mut self,
        now: Time,
        from: NodeId,
        msg: Self::Msg,
        post: &mut Post,
        ctx: &Context<'_>,
    );
    /// A client call it owns (see [`Messaging::handle_api`] for the routing).
    fn handle_api(
        &mut self,
        now: Time,
        request: RequestId,
        call: ApiCall,
        post: &mut Post,
        ctx: &Context<'_>,
    );
    /// A service event messaging wants (process starts, exits and losses, host
    /// removals, group changes), after the point-to-point layer saw it.
    fn handle_event(&mut self, now: Time, event: &ServiceEvent, post: &mut Post, ctx: &Context<'_>);
    /// Its deadline has come.
    fn handle_timeout(&mut self, now: Time, post: &mut Post, ctx: &Context<'_>);
    /// Its next deadline.
    fn next_timeout(&self) -> Option<Time>;
}

/// The answer to a call that no part of messaging serves yet.
#[must_use]
pub(crate) fn unsupported(call: &ApiCall) -> ApiReply {
    match call {
        ApiCall::Register { .. } | ApiCall::Unregister { .. } => {
            ApiReply::Named(Err(NameError::Unreachable))
        }
        ApiCall::Whereis { .. } => ApiReply::Whereis(Err(NameError::Unreachable)),
        ApiCall::Join { .. }
        | ApiCall::Leave { .. }
        | ApiCall::Subscribe { .. }
        | ApiCall::Unsubscribe { .. } => ApiReply::Grouped(Err(GroupError::Invalid)),
        ApiCall::Monitor { .. } | ApiCall::Demonitor { .. } => {
            ApiReply::Monitored(Err(MonitorError::NoSuchProcess))
        }
        ApiCall::Distance { .. } => ApiReply::Distance(Err(MsgError::NoSuchProcess)),
        _ => ApiReply::Sent(Err(SendError::Unsupported)),
    }
}

/// The messaging service of one agent.
#[derive(Debug)]
pub struct Messaging {
    config: MessagingConfig,
    post: Post,
    names: names::Names,
    groups: groups::Groups,
    topics: topics::Topics,
    external: external::External,
    /// The earliest deadline of the point-to-point layer and the parts, refreshed at
    /// the end of every input ([`Messaging::end_of_input`]): the agent asks for
    /// it after every call of every service, and computing it scans every queue
    /// of the point-to-point layer and the parts.
    /// Invariant: equal to [`Messaging::earliest_deadline`] between inputs.
    deadline: Option<Time>,
}

impl Messaging {
    /// The client of call `request` left: a receive waiting for mail is forgotten
    /// (see [`Post`]); any other call is left to end by itself.
    pub fn cancel(&mut self, request: RequestId) {
        self.post.cancel(request);
    }

    /// The external proxy's driver reported on a connection (see [`external`]).
    pub fn handle_external(&mut self, now: Time, event: external::ExternalEvent) {
        self.post.begin(now);
        self.external.handle_event(now, event, &mut self.post);
        self.end_of_input(now);
    }

    /// The point-to-point layer (mailboxes), read-only, for checkers and tests.
    #[must_use]
    pub fn post(&self) -> &Post {
        &self.post
    }

    /// The fates of the sends parts made with a tag go to the part that made them
    /// (only groups does: its one-member sends).
    fn route_outcomes(&mut self, now: Time, ctx: &Context<'_>) {
        while let Some((tag, result)) = self.post.take_outcome() {
            let post = &mut self.post;
            self.groups.on_outcome(now, tag, result, post, ctx);
        }
    }

    /// The earliest deadline of the point-to-point layer and the parts, computed.
    fn earliest_deadline(&self) -> Option<Time> {
        // Written out, as `Post::next_timeout` is: it runs at the end of every input.
        let mut next = earliest(self.post.next_timeout(), self.names.next_timeout());
        next = earliest(next, self.groups.next_timeout());
        next = earliest(next, self.topics.next_timeout());
        earliest(next, self.external.next_timeout())
    }

    /// Ends an input: acks leave (or wait for their flush), names cached to pids a
    /// send just failed to reach are forgotten, and the cached deadline is
    /// computed again. Every input ends here; nothing else changes a deadline
    /// (draining outputs does not).
    fn end_of_input(&mut self, now: Time) {
        self.post.end_of_input(now);
        let failed = self.post.take_failed_to();
        if !failed.is_empty() {
            self.names.forget_cached(&failed);
        }
        self.deadline = self.earliest_deadline();
    }

    /// Each part's deadline has passed: call it.
    fn run_parts_timeouts(&mut self, now: Time, ctx: &Context<'_>) {
        if self.names.next_timeout().is_some_and(|t| t <= now) {
            self.names.handle_timeout(now, &mut self.post, ctx);
        }
        if self.groups.next_timeout().is_some_and(|t| t <= now) {
            self.groups.handle_timeout(now, &mut self.post, ctx);
        }
        if self.topics.next_timeout().is_some_and(|t| t <= now) {
            self.topics.handle_timeout(now, &mut self.post, ctx);
        }
        if self.external.next_timeout().is_some_and(|t| t <= now) {
            self.external.handle_timeout(now, &mut self.post);
        }
    }
}

impl Service for Messaging {
    type Msg = MessagingMsg;
    type Config = MessagingConfig;
    type Summary = MessagingSummary;
    type ConfigError = MessagingConfigError;

    fn validate(config: &MessagingConfig) -> Result<(), MessagingConfigError> {
        let size = usize::try_from(config.max_message_bytes).unwrap_or(usize::MAX);
        if size == 0 || size > msg::MAX_DATA_BYTES {
            return Err(MessagingConfigError::MessageSize);
        }
        for (what, v) in [
            ("mailbox_messages", u64::from(config.mailbox_messages)),
            ("mailbox_bytes", config.mailbox_bytes),
            ("credit_window", u64::from(config.credit_window)),
            ("ended_memory", u64::from(config.ended_memory)),
            ("max_monitors", u64::from(config.max_monitors)),
        ] {
            if v == 0 {
                return Err(MessagingConfigError::Zero(what));
            }
        }
        for (what, d) in [
            ("fate_timeout", config.fate_timeout),
            ("resend_interval", config.resend_interval),
            ("block_timeout", config.block_timeout),
            ("monitor_ping", config.monitor_ping),
            ("pair_idle", config.pair_idle),
        ] {
            if d.is_zero() {
                return Err(MessagingConfigError::Zero(what));
            }
        }
        if config.pair_idle <= config.fate_timeout {
            return Err(MessagingConfigError::PairIdle);
        }
        Ok(())
    }

    fn instance(config: &MessagingConfig) -> u8 {
        config.instance
    }

    fn new(me: Identity, config: MessagingConfig, _seed: u64) -> Self {
        Messaging {
            post: Post::new(me.node, config.clone()),
            names: names::Names::new(me.node, me.incarnation),
            groups: groups::Groups::new(me.node, config.fate_timeout, config.resend_interval),
            topics: topics::Topics::new(me.node, config.fate_timeout, config.resend_interval),
            external: external::External::new(
                me.node,
                me.incarnation,
                config.proxies.clone(),
                config.fate_timeout,
                config.resend_interval,
            ),
            config,
            deadline: None,
        }
    }

    fn config(&self) -> &MessagingConfig {
        &self.config
    }

    fn kind(msg: &MessagingMsg) -> &'static str {
        msg::kind(msg)
    }

    fn validate_msg(msg: &MessagingMsg) -> Result<(), Reject> {
        msg::validate(msg)
    }

    fn handle_message(&mut self, now: Time, from: NodeId, msg: MessagingMsg, ctx: &Context<'_>) {
        self.post.begin(now);
        match msg {
            MessagingMsg::Names(m) => self.names.handle_message(now, from, m, &mut self.post, ctx),
            MessagingMsg::Groups(m) => {
                self.groups
                    .handle_message(now, from, m, &mut self.post, ctx);
            }
            MessagingMsg::Topics(m) => {
                self.topics
                    .handle_message(now, from, m, &mut self.post, ctx);
            }
            MessagingMsg::External(m) => self.external.handle_message(now, from, m, &mut self.post),
            other => self.post.handle_message(now, from, other, ctx),
        }
        self.route_outcomes(now, ctx);
        self.end_of_input(now);
    }

    fn handle_timeout(&mut self, now: Time, ctx: &Context<'_>) {
        self.post.begin(now);
        self.post.handle_timeout(now, ctx);
        self.run_parts_timeouts(now, ctx);
        self.route_outcomes(now, ctx);
        self.end_of_input(now);
    }

    fn wants(&self, event: &ServiceEvent) -> bool {
        matches!(
            event,
            ServiceEvent::ProcessStarted { .. }
                | ServiceEvent::ProcessExited { .. }
                | ServiceEvent::ProcessLost { .. }
                | ServiceEvent::HostRemoved { .. }
                | ServiceEvent::GroupChanged { .. }
                | ServiceEvent::PeerRestarted { .. }
        )
    }

    fn handle_event(&mut self, now: Time, event: &ServiceEvent, ctx: &Context<'_>) {
        self.post.begin(now);
        self.post.handle_event(event, ctx);
        self.names.handle_event(now, event, &mut self.post, ctx);
        self.groups.handle_event(now, event, &mut self.post, ctx);
        self.topics.handle_event(now, event, &mut self.post, ctx);
        if let ServiceEvent::ProcessExited { pid, .. } | ServiceEvent::ProcessLost { pid, .. } =
            event
        {
            self.external.process_ended(*pid, &mut self.post);
        }
        self.route_outcomes(now, ctx);
        self.end_of_input(now);
    }

    fn owns(call: &ApiCall) -> bool {
        call.is_messaging()
    }

    /// Routes a call: sends by destination (a pid to the point-to-point layer, a name
    /// to names, a group or broadcast to groups, a topic to topics), names calls to
    /// names, group calls to groups, topic calls to topics, the rest (receive,
    /// monitors, distance) to the point-to-point layer.
    fn handle_api(&mut self, now: Time, request: RequestId, call: ApiCall, ctx: &Context<'_>) {
        self.post.begin(now);
        let post = &mut self.post;
        match &call {
            ApiCall::Send { to, .. } => match to {
                Dest::Pid(_) => post.handle_api(now, request, call, ctx),
                Dest::Name(_) => self.names.handle_api(now, request, call, post, ctx),
                Dest::Group { .. } | Dest::Broadcast => {
                    self.groups.handle_api(now, request, call, post, ctx);
                }
                Dest::Topic(_) => self.topics.handle_api(now, request, call, post, ctx),
                Dest::External { host, port } => {
                    if let ApiCall::Send {
                        tenant, from, data, ..
                    } = &call
                    {
                        match post.check_send(*tenant, *from, data.len()) {
                            Err(e) => post.reply(request, ApiReply::Sent(Err(e))),
                            Ok(()) => self.external.send(
                                now,
                                request,
                                (*tenant, *from),
                                host.clone(),
                                *port,
                                data.clone(),
                                post,
                            ),
                        }
                    }
                }
            },
            ApiCall::Register { .. } | ApiCall::Unregister { .. } | ApiCall::Whereis { .. } => {
                self.names.handle_api(now, request, call, post, ctx);
            }
            ApiCall::Join { .. } | ApiCall::Leave { .. } => {
                self.groups.handle_api(now, request, call, post, ctx);
            }
            ApiCall::Subscribe { .. } | ApiCall::Unsubscribe { .. } => {
                self.topics.handle_api(now, request, call, post, ctx);
            }
            _ => post.handle_api(now, request, call, ctx),
        }
        self.route_outcomes(now, ctx);
        self.end_of_input(now);
    }

    #[inline]
    fn poll_output(&mut self) -> Option<ServiceOutput<MessagingMsg>> {
        self.post.poll_output()
    }

    fn next_timeout(&self) -> Option<Time> {
        self.deadline
    }

    fn own_summary(&self) -> MessagingSummary {
        MessagingSummary {
            mailboxes: self.post.mailbox_count() as u64,
            members: self
                .groups
                .engine()
                .own_filter()
                .union(self.topics.engine().own_filter()),
        }
    }

    fn pinned_summary(&self, _level: usize) -> Option<MessagingSummary> {
        None
    }

    fn invariants(&self) -> bool {
        self.deadline == self.earliest_deadline()
            && self.post.invariants()
            && self.names.invariants()
            && self.groups.invariants()
            && self.topics.engine().invariants()
            && self.external.invariants()
    }
}
