//! The point-to-point layer of messaging: mailboxes, pid sends, their fate, monitors
//! and distance.
//!
//! # Mailboxes
//!
//! A process of this host has a mailbox from [`ServiceEvent::ProcessStarted`] to
//! its exit or loss. Most processes never use messaging, so until one is needed (mail
//! for it, a receive, a monitor) a live process is only its tenant in `unopened`;
//! the mailbox is made then, empty, which is what it would have held. A mailbox
//! holds at most `mailbox_messages` messages and `mailbox_bytes` data bytes; control mail (`Down`, `NameLost`) always gets in (it
//! is bounded by the monitors and names a process holds). When a mailbox goes, a
//! waiting receive is answered `NoSuchProcess`, blocked messages are answered
//! `Exited` or `Lost`, watchers get their `Down`, and the pid is remembered (the
//! last `ended_memory` of them) so that later sends learn `Exited`/`Lost` rather
//! than `NoSuchProcess`. A pid of another tenant answers as one never seen.
//!
//! # A pid send
//!
//! The sender's agent checks the size (before any copy) and that `from` is a live
//! local process of the caller's tenant, then numbers the message on its
//! (from, to) pair (`seq`, from 0). Same host: it goes straight into the mailbox,
//! nothing touches the network. Otherwise one [`MessagingMsg::Deliver`] goes to
//! `to.origin()`, which answers with an [`Ack`] carrying the [`Outcome`]; with no
//! answer within `fate_timeout` the send ends `Unknown`. Reliable items are sent
//! again every `resend_interval` until settled (or `Unknown`).
//!
//! **Order.** The receiving agent keeps, per pair, the next sequence number it
//! expects. An item at it is delivered. An item past it (a gap) is held (at most
//! `credit_window` per pair) until the gap fills or the sender's `base` (the lowest
//! sequence it has not settled or given up) moves past it; an at-most-once item is
//! held at most `reorder_wait` (from the first such item held), then the gap before
//! it is skipped, so jitter that swaps two messages of a pair costs a short wait,
//! not a message. An item behind it (its gap was skipped) is dropped and its sender
//! told `Overtaken`. A reliable duplicate is answered again and delivered never
//! twice. So every pair is FIFO, and a `Down` sent on the pair after the watched
//! process's data is delivered after it.
//!
//! **Credits.** A pair has at most `credit_window` items in flight (sent and not
//! settled). Past that a blocking send waits at the sender's agent (at most
//! `max_blocked` per agent, each at most `block_timeout`, then it fails `Full`,
//! never sent), a non-blocking one fails `Full`. A full mailbox
//! answers a blocking item `Parked` and holds it (at most `max_parked` per mailbox)
//! until a receive makes room, then answers `Delivered`; a non-blocking item fails
//! `Full`. A parked item still holds its pair's credit, so a full mailbox stops
//! its senders at their agents: nothing is dropped without an error to its sender,
//! and no send waits for credit without a deadline (a mailbox nobody reads would
//! otherwise hold its senders' queues for ever: each parked item that times out lets
//! one more out, to park again). A receiver's host that answers nothing is not a
//! slow receiver: when an item ends `Unknown` with nothing of its pair answered
//! since it went out, the data sends waiting for the pair's credit end `Unknown`
//! at once, never sent, rather than each waiting for a window of items ahead to
//! time out.
//!
//! **Idle pairs.** The receiving side of a pair is kept while its receiver lives,
//! but forgotten once it holds nothing (no held or parked item) and no item came for
//! `pair_idle`: by then every earlier item of the pair is settled or given up at the
//! sender, so the next item's `base` is at or past everything sent before, and the
//! pair starts again there. (A copy of an old item that the network held for longer
//! than `pair_idle` could then be delivered twice.) The sending side of a pair lives
//! as long as its sender, since it holds the numbering.
//!
//! # Monitors
//!
//! The watched process's agent holds its watchers. When it ends, each watcher is
//! sent `Down` as a reliable item on the pair (watched, watcher), behind what the
//! watched process sent. A watcher whose watched process is remote pings that host
//! every `monitor_ping`; a host silent for `fate_timeout` after a ping has its
//! watched processes reported `Unreachable`. A `Pong` names the answering agent's
//! life: an agent of a new life has lost the watchers its last life held, so on a
//! change (or on the first answer, for the watches of pids minted by another life)
//! the watcher sends its `Monitor`s there again, and the new agent answers
//! `Down(NoProcess)` for each process it does not run (re-adopted ones are watched
//! again); without this, a watcher whose watched host restarted before the
//! federation removed it was never told. The processes of a host the federation
//! removes (or that placement reports lost) are reported `Lost`. A send to a pid placement
//! reported lost fails `Lost` at once; one to a removed host (not heard from since)
//! that gets no answer fails `Lost` rather than `Unknown`. Monitoring a process that does
//! not exist (or ended) answers `Down(NoProcess)` at once.
//!
//! # Distance
//!
//! Same host; same level-0 group (the tree view's members); elsewhere in the DC.
//! Every delivered mail carries its sender's class as the receiver sees it; the
//! sender measures each first transmission's round trip (send to ack) and keeps a
//! moving average per class (7/8 old, 1/8 new), which `distance` reports.
//!
//! # Timers
//!
//! Every remote item has a fate deadline (`fate_timeout` after it was sent), reliable
//! ones resend deadlines, parked ones and blocking sends waiting for credit a
//! `block_timeout` deadline. Each kind of
//! deadline is always the same span after the event that sets it, so each lives in a
//! queue in time order (no tree): entries whose item moved on are dropped from the
//! head of their queue at the end of every input (so an answered send sets no
//! timer) or skipped when they come up, and a queue is compacted when it holds more
//! than twice the live items.

use super::msg::{Ack, Item, MessagingMsg, Outcome, ACKS_PER_MESSAGE};
use super::MessagingConfig;
use crate::ids::{Incarnation, NodeId, Pid, TenantId};
use crate::service::registry::earliest;
use crate::service::{Context, ServiceEvent, ServiceOutput};
use crate::time::Time;
use nefele_api::calls::{ApiCall, ApiReply, RequestId};
use nefele_api::messaging::{
    Delivery, Dest, DistanceClass, DistanceInfo, DownReason, Mail, MailBody, MonitorError,
    MsgError, RecvError, SendError, SendReceipt,
};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

/// Who learns the fate of a send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyTo {
    /// A client call: answered `Sent`.
    Api(RequestId),
    /// A part of messaging (names, groups, topics): its outcome is queued under this
    /// tag for [`Post::take_outcome`].
    Tag(u64),
    /// Nobody (a `Down`).
    Nobody,
}

/// How a local process ended, as remembered for later senders.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ended {
    Exited,
    Lost,
}

/// A blocking item waiting for room in a full mailbox.
#[derive(Debug)]
struct Parked {
    mail: Mail,
    to: Pid,
    /// Where the ack goes: `None` for a local sender.
    origin: Option<NodeId>,
}

/// A receive waiting for mail.
#[derive(Clone, Copy, Debug)]
struct Waiter {
    request: RequestId,
    max: u32,
    deadline: Time,
}

/// The deadlines of the waiting receives, in order, with the earliest kept beside
/// the set: [`Post::next_timeout`] reads it at the end of every input, and the
/// set's first leaf is by then a cold cache line or two (a simulation of 10,000
/// agents spent 3% of its time there).
#[derive(Debug, Default)]
struct Waiters {
    set: BTreeSet<(Time, Pid)>,
    /// Invariant: the first deadline of `set`.
    earliest: Option<Time>,
}

impl Waiters {
    fn first(&self) -> Option<&(Time, Pid)> {
        self.set.first()
    }

    fn insert(&mut self, deadline: Time, pid: Pid) {
        self.set.insert((deadline, pid));
        self.earliest = earliest(self.earliest, Some(deadline));
    }

    fn remove(&mut self, deadline: Time, pid: Pid) {
        if self.set.remove(&(deadline, pid)) && self.earliest == Some(deadline) {
            self.earliest = self.set.first().map(|w| w.0);
        }
    }

    fn pop_first(&mut self) {
        self.set.pop_first();
        self.earliest = self.set.first().map(|w| w.0);
    }
}

#[derive(Debug)]
struct Mailbox {
    tenant: TenantId,
    mail: VecDeque<Mail>,
    bytes: u64,
    parked: VecDeque<Parked>,
    waiter: Option<Waiter>,
    /// The processes (local or remote) told when this one ends.
    watchers: BTreeSet<Pid>,
    /// The monitors this process holds as watcher.
    monitors: u32,
}

impl Mailbox {
    fn new(tenant: TenantId) -> Self {
        Mailbox {
            tenant,
            mail: VecDeque::new(),
            bytes: 0,
            parked: VecDeque::new(),
            waiter: None,
            watchers: BTreeSet::new(),
            monitors: 0,
        }
    }
}

/// Receiving side of one (from, to) pair.
#[derive(Debug, Default)]
struct InPair {
    next: u64,
    /// Items past `next` held until the gap fills, with their sender's agent.
    early: BTreeMap<u64, Item>,
    /// When the gaps before the held at-most-once items are skipped (set while
    /// `early` holds one).
    skip_at: Option<Time>,
    /// When an item of the pair last came.
    touched: Time,
    /// Reliable items behind `next` not answered `Delivered` (parked, full), so
    /// that a duplicate gets the same answer (trimmed to `credit_window` behind).
    outcomes: BTreeMap<u64, Outcome>,
}

/// An item sent and not settled.
#[derive(Debug)]
struct Flight {
    reply: ReplyTo,
    sent_at: Time,
    /// The fate deadline of its current state (`Time::NEVER` for a local parked item).
    deadline: Time,
    parked: bool,
    resent: bool,
    /// A copy for resends (reliable remote items only).
    copy: Option<Item>,
}

/// A send waiting for credit.
#[derive(Debug)]
struct Pending {
    reply: ReplyTo,
    body: MailBody,
    reliable: bool,
    block: bool,
    /// When it stops waiting and fails `Full` (`Time::NEVER` for control mail,
    /// which always waits its turn; unused while it is not waiting).
    due: Time,
}

/// Sending side of one (from, to) pair.
#[derive(Debug)]
struct OutPair {
    tenant: TenantId,
    next: u64,
    inflight: BTreeMap<u64, Flight>,
    waiting: VecDeque<Pending>,
    /// When an item of the pair was last answered (`Time::ZERO` before the first).
    answered: Time,
}

/// The watcher side of the monitors of one remote host's processes.
#[derive(Debug)]
struct HostWatch {
    /// (watched, watcher) of the monitors of its processes held here.
    watches: BTreeSet<(Pid, Pid)>,
    next_ping: Time,
    /// The nonce and deadline of the ping in flight.
    ping: Option<(u64, Time)>,
    /// The life its last `Pong` named.
    life: Option<Incarnation>,
}

/// A deadline queue entry: when, the pair, the sequence number.
type Due = (Time, Pid, Pid, u64);

/// A receiving pair's gap-skip deadline: when, then the pair as (to, from).
type SkipDue = (Time, Pid, Pid);

/// Mailboxes and the point-to-point path of one agent (see the module docs).
#[derive(Debug)]
pub struct Post {
    me: NodeId,
    config: MessagingConfig,
    mailboxes: BTreeMap<Pid, Mailbox>,
    /// The live local processes without a mailbox yet (never in `mailboxes`), with
    /// their tenant.
    unopened: BTreeMap<Pid, TenantId>,
    ended: BTreeMap<Pid, (TenantId, Ended)>,
    ended_order: VecDeque<Pid>,
    /// Keyed (to, from).
    inbound: BTreeMap<(Pid, Pid), InPair>,
    /// Keyed (from, to).
    outbound: BTreeMap<(Pid, Pid), OutPair>,
    inflight: usize,
    blocked: usize,
    fate_q: VecDeque<Due>,
    resend_q: VecDeque<Due>,
    park_q: VecDeque<Due>,
    /// When blocking sends waiting for credit give up: (when, from, to).
    wait_q: VecDeque<(Time, Pid, Pid)>,
    skip_q: VecDeque<SkipDue>,
    waiters: Waiters,
    /// (watcher, watched) of the monitors this agent's processes hold.
    watching: BTreeSet<(Pid, Pid)>,
    hosts: BTreeMap<NodeId, HostWatch>,
    /// Agents the federation removed from this agent's groups and not heard from
    /// since: a send to them that gets no answer failed `Lost`, not `Unknown`.
    removed: BTreeSet<NodeId>,
    /// No host needs a ping or times one out before this.
    ping_due: Time,
    /// When idle receiving pairs are next forgotten.
    sweep_due: Time,
    nonce: u64,
    acks: BTreeMap<NodeId, Vec<Ack>>,
    ack_flush: Option<Time>,
    /// Measured round trips per class (index: [`DistanceClass::index`]), in nanoseconds.
    rtt: [Option<u64>; 4],
    outcomes: VecDeque<(u64, Result<(), SendError>)>,
    /// Remote pids a send failed to reach since [`Post::take_failed_to`] (no such
    /// process, exited, lost, or no answer in time): names cached to them are
    /// stale. Taken at the end of every input.
    failed_to: BTreeSet<Pid>,
    outbox: VecDeque<ServiceOutput<MessagingMsg>>,
    /// The time of the input being handled.
    now: Time,
}

fn data_len(body: &MailBody) -> u64 {
    match body {
        MailBody::Data(d) | MailBody::External { data: d, .. } => d.len() as u64,
        MailBody::Down { .. } | MailBody::NameLost { .. } | MailBody::ExternalClosed { .. } => 0,
    }
}

fn result_of(outcome: Outcome) -> Result<(), SendError> {
    match outcome {
        Outcome::Delivered | Outcome::Parked => Ok(()),
        Outcome::Full => Err(SendError::Full),
        Outcome::NoSuchProcess => Err(SendError::NoSuchProcess),
        Outcome::Exited => Err(SendError::Exited),
        Outcome::Lost => Err(SendError::Lost),
        Outcome::Late => Err(SendError::Overtaken),
    }
}

impl Post {
    pub(super) fn new(me: NodeId, config: MessagingConfig) -> Self {
        Post {
            me,
            config,
            mailboxes: BTreeMap::new(),
            unopened: BTreeMap::new(),
            ended: BTreeMap::new(),
            ended_order: VecDeque::new(),
            inbound: BTreeMap::new(),
            outbound: BTreeMap::new(),
            inflight: 0,
            blocked: 0,
            fate_q: VecDeque::new(),
            resend_q: VecDeque::new(),
            park_q: VecDeque::new(),
            wait_q: VecDeque::new(),
            skip_q: VecDeque::new(),
            waiters: Waiters::default(),
            watching: BTreeSet::new(),
            hosts: BTreeMap::new(),
            removed: BTreeSet::new(),
            ping_due: Time::NEVER,
            sweep_due: Time::NEVER,
            nonce: 0,
            acks: BTreeMap::new(),
            ack_flush: None,
            rtt: [None; 4],
            outcomes: VecDeque::new(),
            failed_to: BTreeSet::new(),
            outbox: VecDeque::new(),
            now: Time::ZERO,
        }
    }

    /// Called at the start of every input, before any part acts.
    pub(super) fn begin(&mut self, now: Time) {
        self.now = now;
    }

    // ----- what the parts (names, groups, topics) use -----

    /// The tenant of `pid` if it is a live process of this host.
    #[must_use]
    pub fn tenant_of(&self, pid: Pid) -> Option<TenantId> {
        match self.mailboxes.get(&pid) {
            Some(m) => Some(m.tenant),
            None => self.unopened.get(&pid).copied(),
        }
    }

    /// The live mailboxes of this host.
    #[must_use]
    pub fn mailbox_count(&self) -> usize {
        self.mailboxes.len() + self.unopened.len()
    }

    /// The mailboxes made so far of the live local processes (see the module docs).
    #[cfg(test)]
    pub(super) fn opened(&self) -> usize {
        self.mailboxes.len()
    }

    /// The messages in the mailbox of the local process `pid` (its load).
    #[must_use]
    pub fn depth(&self, pid: Pid) -> Option<usize> {
        match self.mailboxes.get(&pid) {
            Some(m) => Some(m.mail.len() + m.parked.len()),
            None => self.unopened.get(&pid).map(|_| 0),
        }
    }

    /// Puts `body` from `from` into the mailbox of the local process `to` of `tenant`,
    /// outside any pair's numbering: a fan-out's last hop (`seq`: the message's
    /// position among `from`'s sends to that group or topic) or a `NameLost`. `false`
    /// if there is no such mailbox or it is full (data is never parked here).
    pub fn deliver_local(
        &mut self,
        (tenant, from, to): (TenantId, Pid, Pid),
        seq: u64,
        body: MailBody,
        class: DistanceClass,
    ) -> bool {
        if self.receivable(tenant, to).is_err() {
            return false;
        }
        let item = Item {
            tenant,
            from,
            to,
            seq,
            base: 0,
            reliable: false,
            block: false,
            body,
        };
        matches!(
            self.admit(item, None, class),
            Outcome::Delivered | Outcome::Parked
        )
    }

    /// Checks a client's send before anything else is done (or copied): the size
    /// (`TooLarge`), then that `from` is a live local process of `tenant`
    /// (`NotSender`). Every kind of send starts with it.
    pub fn check_send(&self, tenant: TenantId, from: Pid, len: usize) -> Result<(), SendError> {
        if len > self.config.max_message_bytes as usize {
            Err(SendError::TooLarge)
        } else if self.tenant_of(from) != Some(tenant) {
            Err(SendError::NotSender)
        } else {
            Ok(())
        }
    }

    /// Answers a local client's call.
    pub fn reply(&mut self, request: RequestId, reply: ApiReply) {
        self.outbox.push_back(ServiceOutput::Reply(request, reply));
    }

    /// Queues an output of another kind (the proxy's driver commands).
    pub(super) fn push(&mut self, out: ServiceOutput<MessagingMsg>) {
        self.outbox.push_back(out);
    }

    /// Sends `msg` to the messaging service of agent `to`.
    pub fn send_msg(&mut self, to: NodeId, msg: MessagingMsg) {
        self.outbox.push_back(ServiceOutput::Send(to, msg));
    }

    /// The outcome of a send made with [`ReplyTo::Tag`], oldest first.
    pub fn take_outcome(&mut self) -> Option<(u64, Result<(), SendError>)> {
        self.outcomes.pop_front()
    }

    /// The distance class of agent `node` from this one.
    #[must_use]
    pub fn class_of(&self, node: NodeId, ctx: &Context<'_>) -> DistanceClass {
        if node == self.me {
            DistanceClass::SameHost
        } else if ctx
            .tree
            .group(0)
            .is_some_and(|g| g.view().members.binary_search(&node).is_ok())
        {
            DistanceClass::SameGroup
        } else {
            DistanceClass::SameDc
        }
    }

    /// The round trip measured to agents of `class` (zero on the same host).
    #[must_use]
    pub fn rtt(&self, class: DistanceClass) -> Option<Duration> {
        if class == DistanceClass::SameHost {
            return Some(Duration::ZERO);
        }
        self.rtt[class.index()].map(Duration::from_nanos)
    }

    /// Sends `body` from the local process `from` (of `tenant`, checked by the
    /// caller) to the pid `to`: the fate goes to `reply` (see the module docs).
    pub fn send(
        &mut self,
        (tenant, from, to): (TenantId, Pid, Pid),
        body: MailBody,
        delivery: Delivery,
        block: bool,
        reply: ReplyTo,
    ) {
        if to.origin() != self.me {
            if let Some(&(t, Ended::Lost)) = self.ended.get(&to) {
                if t == tenant {
                    self.failed_to.insert(to);
                    self.settle_reply(reply, Err(SendError::Lost));
                    return;
                }
            }
        }
        let reliable = delivery == Delivery::Reliable;
        let mut pending = Pending {
            reply,
            body,
            reliable,
            block,
            due: Time::NEVER,
        };
        let window = self.config.credit_window as usize;
        let pair = self.outbound.entry((from, to)).or_insert_with(|| OutPair {
            tenant,
            next: 0,
            inflight: BTreeMap::new(),
            waiting: VecDeque::new(),
            answered: Time::ZERO,
        });
        if pair.waiting.is_empty() && pair.inflight.len() < window {
            self.transmit(from, to, pending);
            return;
        }
        let control = !matches!(pending.body, MailBody::Data(_));
        if control || (block && self.blocked < self.config.max_blocked as usize) {
            if !control {
                pending.due = self.now + self.config.block_timeout;
                self.wait_q.push_back((pending.due, from, to));
            }
            pair.waiting.push_back(pending);
            self.blocked += 1;
        } else {
            self.drop_if_idle(from, to);
            self.settle_reply(reply, Err(SendError::Full));
        }
    }

    // ----- inputs -----

    pub(super) fn handle_message(
        &mut self,
        now: Time,
        from: NodeId,
        msg: MessagingMsg,
        ctx: &Context<'_>,
    ) {
        if !self.removed.is_empty() {
            self.removed.remove(&from);
        }
        match msg {
            MessagingMsg::Deliver(item) => self.on_deliver(from, item, ctx),
            MessagingMsg::Acks(acks) => {
                for ack in acks {
                    // Only the receiver's agent answers for it.
                    if ack.to.origin() == from {
                        self.settle(now, ctx, ack.from, ack.to, ack.seq, ack.outcome);
                    }
                }
            }
            MessagingMsg::Monitor {
                tenant,
                watcher,
                watched,
            } if watcher.origin() == from => self.on_monitor(tenant, watcher, watched),
            MessagingMsg::Demonitor { watcher, watched } if watcher.origin() == from => {
                if let Some(m) = self.mailboxes.get_mut(&watched) {
                    m.watchers.remove(&watcher);
                }
            }
            MessagingMsg::Ping { nonce } => {
                let incarnation = ctx.me.incarnation;
                self.send_msg(from, MessagingMsg::Pong { nonce, incarnation });
            }
            MessagingMsg::Pong { nonce, incarnation } => self.on_pong(from, nonce, incarnation),
            _ => {}
        }
    }

    pub(super) fn handle_api(
        &mut self,
        now: Time,
        request: RequestId,
        call: ApiCall,
        ctx: &Context<'_>,
    ) {
        match call {
            ApiCall::Send {
                tenant,
                from,
                to: Dest::Pid(to),
                data,
                delivery,
                block,
            } => {
                let reply = ReplyTo::Api(request);
                match self.check_send(tenant, from, data.len()) {
                    Ok(()) => {
                        let body = MailBody::Data(data);
                        self.send((tenant, from, to), body, delivery, block, reply);
                    }
                    Err(e) => self.settle_reply(reply, Err(e)),
                }
            }
            ApiCall::Recv {
                tenant,
                pid,
                max,
                wait,
            } => self.on_recv(now, request, tenant, pid, max, wait),
            ApiCall::Monitor {
                tenant,
                watcher,
                watched,
            } => {
                let r = self.start_monitor(tenant, watcher, watched);
                self.reply(request, ApiReply::Monitored(r));
            }
            ApiCall::Demonitor {
                tenant,
                watcher,
                watched,
            } => {
                let r = if self.tenant_of(watcher) == Some(tenant) {
                    self.stop_monitor(watcher, watched);
                    Ok(())
                } else {
                    Err(MonitorError::NoSuchProcess)
                };
                self.reply(request, ApiReply::Monitored(r));
            }
            ApiCall::Distance { tenant, from, to } => {
                let r = if self.tenant_of(from) == Some(tenant) {
                    let class = self.class_of(to.origin(), ctx);
                    Ok(DistanceInfo {
                        class,
                        rtt: self.rtt(class),
                    })
                } else {
                    Err(MsgError::NoSuchProcess)
                };
                self.reply(request, ApiReply::Distance(r));
            }
            other => self.reply(request, super::unsupported(&other)),
        }
    }

    pub(super) fn handle_event(&mut self, event: &ServiceEvent, ctx: &Context<'_>) {
        match *event {
            ServiceEvent::ProcessStarted { pid, tenant, .. }
                if !self.mailboxes.contains_key(&pid) =>
            {
                self.unopened.entry(pid).or_insert(tenant);
            }
            ServiceEvent::ProcessExited { pid, status, .. } => {
                self.end(pid, Ended::Exited, DownReason::Exited(status));
            }
            ServiceEvent::ProcessLost { pid, tenant } => {
                let reason = DownReason::Lost { host: pid.origin() };
                if self.tenant_of(pid).is_some() {
                    self.end(pid, Ended::Lost, reason);
                } else {
                    // Later sends to it fail `Lost` at once.
                    self.remember(pid, tenant, Ended::Lost);
                    self.down_watched(ctx, pid.origin(), Some(pid), reason);
                }
            }
            ServiceEvent::HostRemoved { node, .. } => {
                self.removed.insert(node);
                self.down_watched(ctx, node, None, DownReason::Lost { host: node });
            }
            _ => {}
        }
    }

    pub(super) fn handle_timeout(&mut self, now: Time, ctx: &Context<'_>) {
        while let Some(&(t, from, to, seq)) = self.fate_q.front() {
            if t > now {
                break;
            }
            self.fate_q.pop_front();
            if self
                .flight(from, to, seq)
                .is_some_and(|f| !f.parked && f.deadline == t)
            {
                self.give_up(from, to, seq);
            }
        }
        while let Some(&(t, from, to, seq)) = self.park_q.front() {
            if t > now {
                break;
            }
            self.park_q.pop_front();
            if self
                .flight(from, to, seq)
                .is_some_and(|f| f.parked && f.deadline == t)
            {
                self.give_up(from, to, seq);
            }
        }
        while let Some(&(t, from, to)) = self.wait_q.front() {
            if t > now {
                break;
            }
            self.wait_q.pop_front();
            self.expire_waiting(from, to, now);
        }
        while let Some(&(t, from, to, seq)) = self.resend_q.front() {
            if t > now {
                break;
            }
            self.resend_q.pop_front();
            let base = self.base(from, to);
            let Some(f) = self.flight_mut(from, to, seq) else {
                continue;
            };
            if f.parked {
                continue;
            }
            if let Some(copy) = f.copy.as_ref() {
                f.resent = true;
                let mut item = copy.clone();
                item.base = base;
                self.resend_q
                    .push_back((now + self.config.resend_interval, from, to, seq));
                self.send_msg(to.origin(), MessagingMsg::Deliver(item));
            }
        }
        while let Some(&(t, to, from)) = self.skip_q.front() {
            if t > now {
                break;
            }
            self.skip_q.pop_front();
            self.skip_gaps(to, from, t, ctx);
        }
        while let Some(&(t, pid)) = self.waiters.first() {
            if t > now {
                break;
            }
            self.waiters.pop_first();
            if let Some(w) = self.mailboxes.get_mut(&pid).and_then(|m| m.waiter.take()) {
                self.reply(w.request, ApiReply::Received(Ok(Vec::new())));
            }
        }
        if self.ping_due <= now {
            self.ping_hosts(now, ctx);
        }
        if self.sweep_due <= now {
            self.forget_idle_pairs(now);
        }
        if self.ack_flush.is_some_and(|t| t <= now) {
            self.flush_acks();
        }
        self.compact();
    }

    /// Called at the end of every input: drops the settled heads of the deadline
    /// queues (so that no timer is set for an item already answered), flushes acks
    /// (or schedules their flush).
    pub(super) fn end_of_input(&mut self, now: Time) {
        self.drop_settled_heads();
        if self.acks.is_empty() {
            return;
        }
        if self.config.ack_delay.is_zero() {
            self.flush_acks();
        } else if self.ack_flush.is_none() {
            self.ack_flush = Some(now + self.config.ack_delay);
        }
    }

    #[inline]
    pub(super) fn poll_output(&mut self) -> Option<ServiceOutput<MessagingMsg>> {
        self.outbox.pop_front()
    }

    pub(super) fn next_timeout(&self) -> Option<Time> {
        // Written out: the array, `flatten` and `min` this replaced took three times
        // the instructions, and it runs at the end of every input.
        let mut next = earliest(self.fate_q.front().map(|d| d.0), self.ack_flush);
        next = earliest(next, self.park_q.front().map(|d| d.0));
        next = earliest(next, self.wait_q.front().map(|d| d.0));
        next = earliest(next, self.resend_q.front().map(|d| d.0));
        next = earliest(next, self.skip_q.front().map(|d| d.0));
        next = earliest(next, self.waiters.earliest);
        next = earliest(next, (!self.hosts.is_empty()).then_some(self.ping_due));
        earliest(next, (!self.inbound.is_empty()).then_some(self.sweep_due))
    }

    /// The receiving pairs this agent keeps (see [`MessagingConfig::pair_idle`]).
    #[must_use]
    pub fn inbound_pairs(&self) -> usize {
        self.inbound.len()
    }

    /// Mailboxes within their byte capacity, counters true, and no pair over its
    /// credit (linear in pairs and mailboxes, not in mail).
    pub(super) fn invariants(&self) -> bool {
        let window = self.config.credit_window as usize;
        let inflight: usize = self.outbound.values().map(|p| p.inflight.len()).sum();
        let blocked: usize = self.outbound.values().map(|p| p.waiting.len()).sum();
        inflight == self.inflight
            && blocked == self.blocked
            && self.outbound.values().all(|p| p.inflight.len() <= window)
            && self
                .mailboxes
                .values()
                .all(|m| m.bytes <= self.config.mailbox_bytes)
            && self.ended.len() == self.ended_order.len()
            && self.waiters.earliest == self.waiters.first().map(|w| w.0)
    }

    // ----- sending side -----

    /// The mailbox of the live local process `pid`, made if it has none yet.
    fn open(&mut self, pid: Pid) -> Option<&mut Mailbox> {
        match self.mailboxes.entry(pid) {
            std::collections::btree_map::Entry::Occupied(e) => Some(e.into_mut()),
            std::collections::btree_map::Entry::Vacant(e) => {
                let tenant = self.unopened.remove(&pid)?;
                Some(e.insert(Mailbox::new(tenant)))
            }
        }
    }

    fn flight(&self, from: Pid, to: Pid, seq: u64) -> Option<&Flight> {
        self.outbound.get(&(from, to))?.inflight.get(&seq)
    }

    fn flight_mut(&mut self, from: Pid, to: Pid, seq: u64) -> Option<&mut Flight> {
        self.outbound.get_mut(&(from, to))?.inflight.get_mut(&seq)
    }

    /// The lowest sequence of the pair not settled or given up.
    fn base(&self, from: Pid, to: Pid) -> u64 {
        self.outbound.get(&(from, to)).map_or(0, |p| {
            p.inflight.first_key_value().map_or(p.next, |(s, _)| *s)
        })
    }

    /// Numbers `p` on its pair (which exists and has credit) and sends it.
    fn transmit(&mut self, from: Pid, to: Pid, p: Pending) {
        let now = self.now;
        let (fate, resend) = (self.config.fate_timeout, self.config.resend_interval);
        let local = to.origin() == self.me;
        let Some(pair) = self.outbound.get_mut(&(from, to)) else {
            return;
        };
        let base = pair
            .inflight
            .first_key_value()
            .map_or(pair.next, |(s, _)| *s);
        let seq = pair.next;
        pair.next += 1;
        let item = Item {
            tenant: pair.tenant,
            from,
            to,
            seq,
            base,
            reliable: p.reliable,
            block: p.block,
            body: p.body,
        };
        if !local {
            let deadline = now + fate;
            let copy = p.reliable.then(|| item.clone());
            pair.inflight.insert(
                seq,
                Flight {
                    reply: p.reply,
                    sent_at: now,
                    deadline,
                    parked: false,
                    resent: false,
                    copy,
                },
            );
            self.inflight += 1;
            if p.reliable {
                self.resend_q.push_back((now + resend, from, to, seq));
            }
            self.fate_q.push_back((deadline, from, to, seq));
            self.send_msg(to.origin(), MessagingMsg::Deliver(item));
            return;
        }
        // Same host: straight into the mailbox, no network.
        let outcome = match self.receivable(item.tenant, to) {
            Ok(()) => self.admit(item, None, DistanceClass::SameHost),
            Err(outcome) => outcome,
        };
        if outcome == Outcome::Parked {
            let flight = Flight {
                reply: p.reply,
                sent_at: now,
                deadline: Time::NEVER,
                parked: true,
                resent: false,
                copy: None,
            };
            if let Some(pair) = self.outbound.get_mut(&(from, to)) {
                pair.inflight.insert(seq, flight);
                self.inflight += 1;
            }
        } else {
            self.drop_if_idle(from, to);
            self.settle_reply(p.reply, result_of(outcome));
        }
    }

    /// The outcome of item `seq` of the pair: settle it (or park it) and let the
    /// pair's waiting sends use the credit it frees.
    fn settle(
        &mut self,
        now: Time,
        ctx: &Context<'_>,
        from: Pid,
        to: Pid,
        seq: u64,
        outcome: Outcome,
    ) {
        let park_deadline = now + self.config.block_timeout;
        let remote = to.origin() != self.me;
        let Some(pair) = self.outbound.get_mut(&(from, to)) else {
            return;
        };
        let Some(flight) = pair.inflight.get_mut(&seq) else {
            return;
        };
        pair.answered = now;
        let first_answer = !flight.parked;
        let measured = (first_answer && !flight.resent && remote).then_some(flight.sent_at);
        if outcome == Outcome::Parked {
            if first_answer {
                flight.parked = true;
                flight.deadline = park_deadline;
                self.park_q.push_back((park_deadline, from, to, seq));
            }
        } else if let Some(flight) = pair.inflight.remove(&seq) {
            let waiting = !pair.waiting.is_empty();
            let idle = !waiting && pair.inflight.is_empty();
            self.inflight -= 1;
            if matches!(
                outcome,
                Outcome::NoSuchProcess | Outcome::Exited | Outcome::Lost
            ) {
                self.failed_to.insert(to);
            }
            self.settle_reply(flight.reply, result_of(outcome));
            if waiting {
                self.pump(from, to);
            } else if idle {
                self.drop_if_idle(from, to);
            }
        }
        if let Some(sent_at) = measured {
            self.measure(
                self.class_of(to.origin(), ctx),
                now.saturating_since(sent_at),
            );
        }
    }

    /// No answer in time: the send ends `Unknown` and frees its credit. If nothing
    /// of the pair was answered since it went out, the receiver's host does not
    /// answer at all: the pair's data sends waiting for credit end `Unknown` too,
    /// never sent (control mail waits on). Otherwise each would wait for an item
    /// ahead to fail, a fate timeout per window, far past it. (Before, swarm seed
    /// 580920: a client's requests to a server whose host had crashed queued behind
    /// 256 items failing one timeout at a time, and waited more than 3 s.)
    fn give_up(&mut self, from: Pid, to: Pid, seq: u64) {
        let Some(pair) = self.outbound.get_mut(&(from, to)) else {
            return;
        };
        let Some(f) = pair.inflight.remove(&seq) else {
            return;
        };
        self.inflight -= 1;
        let fate = if self.removed.contains(&to.origin()) {
            SendError::Lost
        } else {
            SendError::Unknown
        };
        let mut failed = vec![f.reply];
        // A parked item was answered (`Parked`): its receiver is slow, not silent.
        let silent = !f.parked && pair.answered < f.sent_at;
        if silent {
            let (control, data) = std::mem::take(&mut pair.waiting)
                .into_iter()
                .partition::<VecDeque<_>, _>(|p| p.due == Time::NEVER);
            pair.waiting = control;
            self.blocked -= data.len();
            failed.extend(data.into_iter().map(|p| p.reply));
        }
        self.failed_to.insert(to);
        for reply in failed {
            self.settle_reply(reply, Err(fate));
        }
        self.pump(from, to);
    }

    /// The pair's blocking sends that waited for credit until `now` fail `Full`: they
    /// were never sent. (Deadlines grow along the queue; control mail stays.)
    fn expire_waiting(&mut self, from: Pid, to: Pid, now: Time) {
        let Some(pair) = self.outbound.get_mut(&(from, to)) else {
            return;
        };
        let (expired, kept) = std::mem::take(&mut pair.waiting)
            .into_iter()
            .partition::<VecDeque<_>, _>(|p| p.due <= now);
        pair.waiting = kept;
        self.blocked -= expired.len();
        for p in expired {
            self.settle_reply(p.reply, Err(SendError::Full));
        }
        self.drop_if_idle(from, to);
    }

    /// Sends the pair's waiting items while it has credit; forgets an idle pair.
    fn pump(&mut self, from: Pid, to: Pid) {
        let window = self.config.credit_window as usize;
        loop {
            let Some(pair) = self.outbound.get_mut(&(from, to)) else {
                return;
            };
            if pair.inflight.len() >= window {
                return;
            }
            let Some(p) = pair.waiting.pop_front() else {
                break;
            };
            self.blocked -= 1;
            self.transmit(from, to, p);
        }
        self.drop_if_idle(from, to);
    }

    /// Forgets the pair once it is idle and its sender is gone (while the sender
    /// lives, the pair keeps its numbering).
    fn drop_if_idle(&mut self, from: Pid, to: Pid) {
        if self.tenant_of(from).is_some() {
            return;
        }
        if self
            .outbound
            .get(&(from, to))
            .is_some_and(|p| p.inflight.is_empty() && p.waiting.is_empty())
        {
            self.outbound.remove(&(from, to));
        }
    }

    /// The remote pids sends failed to reach since the last call.
    pub(super) fn take_failed_to(&mut self) -> BTreeSet<Pid> {
        std::mem::take(&mut self.failed_to)
    }

    fn settle_reply(&mut self, reply: ReplyTo, result: Result<(), SendError>) {
        match reply {
            ReplyTo::Api(request) => {
                let r = result.map(|()| SendReceipt { reached: 1 });
                self.reply(request, ApiReply::Sent(r));
            }
            ReplyTo::Tag(tag) => self.outcomes.push_back((tag, result)),
            ReplyTo::Nobody => {}
        }
    }

    fn measure(&mut self, class: DistanceClass, rtt: Duration) {
        let sample = u64::try_from(rtt.as_nanos()).unwrap_or(u64::MAX);
        let slot = &mut self.rtt[class.index()];
        *slot = Some(slot.map_or(sample, |old| old - old / 8 + sample / 8));
    }

    // ----- receiving side -----

    /// Whether a `tenant` item may go to the local `to`; else the outcome. Another
    /// tenant's process answers as one never seen.
    fn receivable(&self, tenant: TenantId, to: Pid) -> Result<(), Outcome> {
        match self.tenant_of(to) {
            Some(t) if t == tenant => Ok(()),
            Some(_) => Err(Outcome::NoSuchProcess),
            None => Err(match self.ended.get(&to) {
                Some(&(t, Ended::Exited)) if t == tenant => Outcome::Exited,
                Some(&(t, Ended::Lost)) if t == tenant => Outcome::Lost,
                _ => Outcome::NoSuchProcess,
            }),
        }
    }

    fn on_deliver(&mut self, from: NodeId, item: Item, ctx: &Context<'_>) {
        // An agent speaks only for its own processes.
        if item.from.origin() != from || item.to.origin() != self.me {
            return;
        }
        let (to, sender, seq) = (item.to, item.from, item.seq);
        if let Err(outcome) = self.receivable(item.tenant, to) {
            self.ack(from, sender, to, seq, outcome);
            return;
        }
        let window = u64::from(self.config.credit_window);
        let hold = !self.config.reorder_wait.is_zero();
        self.sweep_due = self.sweep_due.min(self.now + self.config.pair_idle);
        let pair = self.inbound.entry((to, sender)).or_default();
        pair.touched = self.now;
        if item.base > pair.next {
            pair.next = item.base;
        }
        if seq < pair.next {
            // Overtaken (its gap was skipped) or a duplicate. An at-most-once
            // duplicate gets no answer: the first copy's answer is its fate.
            let outcome = match pair.outcomes.get(&seq) {
                Some(o) if item.reliable => Some(*o),
                None if item.reliable => Some(Outcome::Delivered),
                Some(Outcome::Late) => Some(Outcome::Late),
                _ => None,
            };
            if let Some(outcome) = outcome {
                self.ack(from, sender, to, seq, outcome);
            }
            return;
        }
        if seq > pair.next && (item.reliable || hold || !pair.early.is_empty()) {
            if seq - pair.next <= window {
                pair.early.entry(seq).or_insert(item);
            }
        } else {
            skip_to(pair, seq, window);
            pair.next = seq + 1;
            self.accept(from, item, ctx);
        }
        self.release(to, sender, ctx);
    }

    /// Delivers the pair's held items that are next in order, then sets (or clears)
    /// its gap-skip deadline.
    fn release(&mut self, to: Pid, sender: Pid, ctx: &Context<'_>) {
        while let Some(pair) = self.inbound.get_mut(&(to, sender)) {
            let Some(entry) = pair.early.first_entry() else {
                break;
            };
            if *entry.key() > pair.next {
                break;
            }
            let item = entry.remove();
            if item.seq < pair.next {
                continue;
            }
            pair.next = item.seq + 1;
            self.accept(item.from.origin(), item, ctx);
        }
        let at = self.now + self.config.reorder_wait;
        let Some(pair) = self.inbound.get_mut(&(to, sender)) else {
            return;
        };
        if pair.early.first_key_value().is_none_or(|(_, i)| i.reliable) {
            pair.skip_at = None;
        } else if pair.skip_at.is_none() {
            pair.skip_at = Some(at);
            self.skip_q.push_back((at, to, sender));
        }
    }

    /// The pair's `reorder_wait` is over (if `due` is still its deadline): the gaps
    /// before its held at-most-once items are skipped and what follows is delivered,
    /// up to the first reliable item still waiting for its gap.
    fn skip_gaps(&mut self, to: Pid, sender: Pid, due: Time, ctx: &Context<'_>) {
        let window = u64::from(self.config.credit_window);
        let Some(pair) = self
            .inbound
            .get_mut(&(to, sender))
            .filter(|p| p.skip_at == Some(due))
        else {
            return;
        };
        pair.skip_at = None;
        loop {
            self.release(to, sender, ctx);
            let Some(pair) = self.inbound.get_mut(&(to, sender)) else {
                return;
            };
            match pair.early.first_key_value() {
                Some((&seq, item)) if !item.reliable => skip_to(pair, seq, window),
                _ => return,
            }
        }
    }

    /// Admits an in-order remote item and queues its ack.
    fn accept(&mut self, from: NodeId, item: Item, ctx: &Context<'_>) {
        let (sender, to, seq, reliable) = (item.from, item.to, item.seq, item.reliable);
        let class = self.class_of(from, ctx);
        let outcome = self.admit(item, Some(from), class);
        if reliable && outcome != Outcome::Delivered {
            let window = u64::from(self.config.credit_window);
            if let Some(pair) = self.inbound.get_mut(&(to, sender)) {
                pair.outcomes.insert(seq, outcome);
                trim(pair, window);
            }
        }
        self.ack(from, sender, to, seq, outcome);
    }

    /// Puts the item in its (live, same-tenant) mailbox, parks it, or refuses it.
    fn admit(&mut self, item: Item, origin: Option<NodeId>, class: DistanceClass) -> Outcome {
        if let MailBody::Down { pid, .. } = item.body {
            if pid == item.from {
                self.watch_ended(item.to, pid);
            }
        }
        let (max_msgs, max_bytes) = (
            self.config.mailbox_messages as usize,
            self.config.mailbox_bytes,
        );
        let max_parked = self.config.max_parked as usize;
        let Some(m) = self.open(item.to) else {
            return Outcome::NoSuchProcess;
        };
        let control = !matches!(item.body, MailBody::Data(_) | MailBody::External { .. });
        let len = data_len(&item.body);
        let room = m.mail.len() < max_msgs && m.bytes.saturating_add(len) <= max_bytes;
        let mail = Mail {
            from: item.from,
            class,
            seq: item.seq,
            body: item.body,
        };
        if m.parked.is_empty() && (room || control) {
            m.bytes += len;
            m.mail.push_back(mail);
            if m.waiter.is_some() {
                self.wake(item.to);
            }
            return Outcome::Delivered;
        }
        if control || (item.block && m.parked.len() < max_parked) {
            m.parked.push_back(Parked {
                mail,
                to: item.to,
                origin,
            });
            Outcome::Parked
        } else {
            Outcome::Full
        }
    }

    fn ack(&mut self, to: NodeId, from: Pid, rcpt: Pid, seq: u64, outcome: Outcome) {
        self.acks.entry(to).or_default().push(Ack {
            from,
            to: rcpt,
            seq,
            outcome,
        });
    }

    fn flush_acks(&mut self) {
        self.ack_flush = None;
        for (node, acks) in std::mem::take(&mut self.acks) {
            for batch in acks.chunks(ACKS_PER_MESSAGE) {
                self.send_msg(node, MessagingMsg::Acks(batch.to_vec()));
            }
        }
    }

    /// Answers the mailbox's waiting receive if it now has mail.
    fn wake(&mut self, pid: Pid) {
        let Some(m) = self.mailboxes.get_mut(&pid) else {
            return;
        };
        if m.mail.is_empty() {
            return;
        }
        if let Some(w) = m.waiter.take() {
            self.waiters.remove(w.deadline, pid);
            let mail = self.take(pid, w.max);
            self.reply(w.request, ApiReply::Received(Ok(mail)));
        }
    }

    /// Takes up to `max` mails, then lets parked items in while there is room.
    fn take(&mut self, pid: Pid, max: u32) -> Vec<Mail> {
        let (max_msgs, max_bytes) = (
            self.config.mailbox_messages as usize,
            self.config.mailbox_bytes,
        );
        let Some(m) = self.mailboxes.get_mut(&pid) else {
            return Vec::new();
        };
        let n = m.mail.len().min(max as usize);
        let out: Vec<Mail> = m.mail.drain(..n).collect();
        m.bytes -= out.iter().map(|x| data_len(&x.body)).sum::<u64>();
        let mut admitted = Vec::new();
        while let Some(p) = m.parked.front() {
            let len = data_len(&p.mail.body);
            let control = !matches!(p.mail.body, MailBody::Data(_));
            if !control && (m.mail.len() >= max_msgs || m.bytes.saturating_add(len) > max_bytes) {
                break;
            }
            let Some(p) = m.parked.pop_front() else {
                break;
            };
            m.bytes += len;
            admitted.push((p.origin, p.mail.from, p.to, p.mail.seq));
            m.mail.push_back(p.mail);
        }
        for (origin, from, to, seq) in admitted {
            self.parked_settled(origin, from, to, seq, Outcome::Delivered);
        }
        out
    }

    /// A parked item's final outcome goes to its sender.
    fn parked_settled(&mut self, origin: Option<NodeId>, from: Pid, to: Pid, seq: u64, o: Outcome) {
        match origin {
            Some(node) => {
                if let Some(pair) = self.inbound.get_mut(&(to, from)) {
                    if o == Outcome::Delivered {
                        pair.outcomes.remove(&seq);
                    } else {
                        pair.outcomes.insert(seq, o);
                    }
                }
                self.ack(node, from, to, seq, o);
            }
            None => {
                if let Some(f) = self
                    .outbound
                    .get_mut(&(from, to))
                    .and_then(|p| p.inflight.remove(&seq))
                {
                    self.inflight -= 1;
                    self.settle_reply(f.reply, result_of(o));
                    self.pump(from, to);
                }
            }
        }
    }

    fn on_recv(
        &mut self,
        now: Time,
        request: RequestId,
        tenant: TenantId,
        pid: Pid,
        max: u32,
        wait: Option<Duration>,
    ) {
        let opened = if self.tenant_of(pid) == Some(tenant) {
            self.open(pid)
        } else {
            None
        };
        let Some(m) = opened else {
            self.reply(request, ApiReply::Received(Err(RecvError::NoSuchProcess)));
            return;
        };
        if m.waiter.is_some() {
            self.reply(request, ApiReply::Received(Err(RecvError::Busy)));
            return;
        }
        match wait {
            Some(wait) if m.mail.is_empty() && max > 0 && !wait.is_zero() => {
                let deadline = now + wait;
                m.waiter = Some(Waiter {
                    request,
                    max,
                    deadline,
                });
                self.waiters.insert(deadline, pid);
            }
            _ => {
                let mail = self.take(pid, max);
                self.reply(request, ApiReply::Received(Ok(mail)));
            }
        }
    }

    /// The client of the receive `request` left: its waiter goes, unanswered, so
    /// the mailbox takes the next receive at once instead of answering `Busy`
    /// until the wait's deadline. A scan of the mailboxes: cancels are rare.
    pub(super) fn cancel(&mut self, request: RequestId) {
        let found = self
            .mailboxes
            .iter_mut()
            .find(|(_, m)| m.waiter.is_some_and(|w| w.request == request));
        if let Some((&pid, m)) = found {
            if let Some(w) = m.waiter.take() {
                self.waiters.remove(w.deadline, pid);
            }
        }
    }

    // ----- process ends, monitors -----

    /// The local process `pid` ended: its mailbox goes (see the module docs).
    fn end(&mut self, pid: Pid, how: Ended, reason: DownReason) {
        let m = match self.mailboxes.remove(&pid) {
            Some(m) => m,
            None => match self.unopened.remove(&pid) {
                Some(tenant) => Mailbox::new(tenant),
                None => return,
            },
        };
        if let Some(w) = m.waiter {
            self.waiters.remove(w.deadline, pid);
            self.reply(w.request, ApiReply::Received(Err(RecvError::NoSuchProcess)));
        }
        let outcome = match how {
            Ended::Exited => Outcome::Exited,
            Ended::Lost => Outcome::Lost,
        };
        for p in m.parked {
            self.parked_settled(p.origin, p.mail.from, p.to, p.mail.seq, outcome);
        }
        self.remember(pid, m.tenant, how);
        // Receiving pairs go with the mailbox.
        let gone: Vec<(Pid, Pid)> = self
            .inbound
            .range((pid, Pid::MIN)..=(pid, Pid::MAX))
            .map(|(k, _)| *k)
            .collect();
        for k in gone {
            self.inbound.remove(&k);
        }
        // Its watchers hear of it behind what it sent them.
        for watcher in m.watchers {
            let body = MailBody::Down { pid, reason };
            self.send(
                (m.tenant, pid, watcher),
                body,
                Delivery::Reliable,
                true,
                ReplyTo::Nobody,
            );
        }
        // The monitors it held.
        let held: Vec<(Pid, Pid)> = self
            .watching
            .range((pid, Pid::MIN)..=(pid, Pid::MAX))
            .copied()
            .collect();
        for (_, watched) in held {
            self.stop_monitor(pid, watched);
        }
        // Its sending pairs stay while they have items in flight.
        let pairs: Vec<(Pid, Pid)> = self
            .outbound
            .range((pid, Pid::MIN)..=(pid, Pid::MAX))
            .map(|(k, _)| *k)
            .collect();
        for (from, to) in pairs {
            self.drop_if_idle(from, to);
        }
    }

    fn remember(&mut self, pid: Pid, tenant: TenantId, how: Ended) {
        if self.ended.insert(pid, (tenant, how)).is_none() {
            self.ended_order.push_back(pid);
        }
        while self.ended_order.len() > self.config.ended_memory as usize {
            if let Some(old) = self.ended_order.pop_front() {
                self.ended.remove(&old);
            }
        }
    }

    fn start_monitor(
        &mut self,
        tenant: TenantId,
        watcher: Pid,
        watched: Pid,
    ) -> Result<(), MonitorError> {
        let max = self.config.max_monitors;
        if self.tenant_of(watcher) != Some(tenant) {
            return Err(MonitorError::NoSuchProcess);
        }
        if self.watching.contains(&(watcher, watched)) {
            return Ok(());
        }
        let m = self.open(watcher).ok_or(MonitorError::NoSuchProcess)?;
        if m.monitors >= max {
            return Err(MonitorError::TooMany);
        }
        m.monitors += 1;
        self.watching.insert((watcher, watched));
        let host = watched.origin();
        if host == self.me {
            self.on_monitor(tenant, watcher, watched);
        } else {
            let first_ping = self.now + self.config.monitor_ping;
            let h = self.hosts.entry(host).or_insert(HostWatch {
                watches: BTreeSet::new(),
                next_ping: first_ping,
                ping: None,
                life: None,
            });
            h.watches.insert((watched, watcher));
            self.ping_due = self.ping_due.min(h.next_ping);
            self.send_msg(
                host,
                MessagingMsg::Monitor {
                    tenant,
                    watcher,
                    watched,
                },
            );
        }
        Ok(())
    }

    /// A host answered a ping: if it is a new life (see the module docs), the
    /// monitors it lost are set there again.
    fn on_pong(&mut self, from: NodeId, nonce: u64, life: Incarnation) {
        let Some(h) = self.hosts.get_mut(&from) else {
            return;
        };
        if h.ping.is_some_and(|(n, _)| n == nonce) {
            h.ping = None;
        }
        let last = h.life.replace(life);
        if last == Some(life) {
            return;
        }
        let lost: Vec<(Pid, Pid)> = h
            .watches
            .iter()
            .filter(|(watched, _)| last.is_some() || watched.incarnation() != life)
            .copied()
            .collect();
        for (watched, watcher) in lost {
            if let Some(tenant) = self.tenant_of(watcher) {
                let again = MessagingMsg::Monitor {
                    tenant,
                    watcher,
                    watched,
                };
                self.send_msg(from, again);
            }
        }
    }

    /// At the watched process's agent: record the watcher, or answer `Down(NoProcess)`.
    fn on_monitor(&mut self, tenant: TenantId, watcher: Pid, watched: Pid) {
        let m = if self.tenant_of(watched) == Some(tenant) {
            self.open(watched)
        } else {
            None
        };
        match m {
            Some(m) => {
                m.watchers.insert(watcher);
            }
            None => {
                let body = MailBody::Down {
                    pid: watched,
                    reason: DownReason::NoProcess,
                };
                self.send(
                    (tenant, watched, watcher),
                    body,
                    Delivery::Reliable,
                    true,
                    ReplyTo::Nobody,
                );
            }
        }
    }

    /// Drops the monitor (watcher, watched) on this side, and tells the other.
    fn stop_monitor(&mut self, watcher: Pid, watched: Pid) {
        if !self.watching.contains(&(watcher, watched)) {
            return;
        }
        self.watch_ended(watcher, watched);
        let host = watched.origin();
        if host == self.me {
            if let Some(m) = self.mailboxes.get_mut(&watched) {
                m.watchers.remove(&watcher);
            }
        } else {
            self.send_msg(host, MessagingMsg::Demonitor { watcher, watched });
        }
    }

    /// The monitor (watcher, watched) has fired: forget it on the watcher's side.
    fn watch_ended(&mut self, watcher: Pid, watched: Pid) {
        if !self.watching.remove(&(watcher, watched)) {
            return;
        }
        if let Some(m) = self.mailboxes.get_mut(&watcher) {
            m.monitors -= 1;
        }
        let host = watched.origin();
        if let Some(h) = self.hosts.get_mut(&host) {
            h.watches.remove(&(watched, watcher));
            if h.watches.is_empty() {
                self.hosts.remove(&host);
            }
        }
    }

    /// Reports `Down(reason)` for the watched processes of the remote `host` (only
    /// `only` if given), at the watcher's agent (their host cannot).
    fn down_watched(
        &mut self,
        ctx: &Context<'_>,
        host: NodeId,
        only: Option<Pid>,
        reason: DownReason,
    ) {
        let Some(h) = self.hosts.get(&host) else {
            return;
        };
        let downs: Vec<(Pid, Pid)> = match only {
            Some(p) => h
                .watches
                .range((p, Pid::MIN)..=(p, Pid::MAX))
                .copied()
                .collect(),
            None => h.watches.iter().copied().collect(),
        };
        for (watched, watcher) in downs {
            self.watch_ended(watcher, watched);
            let class = self.class_of(watched.origin(), ctx);
            self.sweep_due = self.sweep_due.min(self.now + self.config.pair_idle);
            let pair = self.inbound.entry((watcher, watched)).or_default();
            pair.touched = self.now;
            let seq = pair.next;
            pair.next += 1;
            if let Some(m) = self.open(watcher) {
                m.mail.push_back(Mail {
                    from: watched,
                    class,
                    seq,
                    body: MailBody::Down {
                        pid: watched,
                        reason,
                    },
                });
                self.wake(watcher);
            }
        }
    }

    fn ping_hosts(&mut self, now: Time, ctx: &Context<'_>) {
        let mut silent = Vec::new();
        let mut pings = Vec::new();
        for (&node, h) in &mut self.hosts {
            match h.ping {
                Some((_, deadline)) if deadline <= now => silent.push(node),
                None if h.next_ping <= now => {
                    self.nonce += 1;
                    h.ping = Some((self.nonce, now + self.config.fate_timeout));
                    h.next_ping = now + self.config.monitor_ping;
                    pings.push((node, self.nonce));
                }
                _ => {}
            }
        }
        for (node, nonce) in pings {
            self.send_msg(node, MessagingMsg::Ping { nonce });
        }
        for node in silent {
            self.down_watched(ctx, node, None, DownReason::Unreachable);
        }
        self.ping_due = self
            .hosts
            .values()
            .map(|h| h.ping.map_or(h.next_ping, |(_, t)| t))
            .min()
            .unwrap_or(Time::NEVER);
    }

    /// Forgets the receiving pairs that hold nothing (no item waiting for a gap, none
    /// parked) and got no item for `pair_idle`; runs every `pair_idle / 2`. A later
    /// item of the pair starts it again at its `base` (see the module docs).
    fn forget_idle_pairs(&mut self, now: Time) {
        let idle = self.config.pair_idle;
        self.inbound.retain(|_, p| {
            !(p.early.is_empty()
                && now.saturating_since(p.touched) >= idle
                && !p.outcomes.values().any(|o| *o == Outcome::Parked))
        });
        self.sweep_due = if self.inbound.is_empty() {
            Time::NEVER
        } else {
            now + idle / 2
        };
    }

    /// Pops the entries at the front of the fate, resend and park queues whose item
    /// was settled (or moved to another state) since: each is popped once, so this
    /// costs one lookup per entry, and a sender whose sends are all answered has no
    /// deadline left (most sends are answered long before their fate timeout).
    fn drop_settled_heads(&mut self) {
        let outbound = &self.outbound;
        let flight = |d: &Due| outbound.get(&(d.1, d.2)).and_then(|p| p.inflight.get(&d.3));
        // Each test is the negation of what `handle_timeout` acts on.
        while self
            .fate_q
            .front()
            .is_some_and(|d| flight(d).is_none_or(|f| f.parked || f.deadline != d.0))
        {
            self.fate_q.pop_front();
        }
        while self
            .park_q
            .front()
            .is_some_and(|d| flight(d).is_none_or(|f| !f.parked || f.deadline != d.0))
        {
            self.park_q.pop_front();
        }
        while self
            .resend_q
            .front()
            .is_some_and(|d| flight(d).is_none_or(|f| f.parked || f.copy.is_none()))
        {
            self.resend_q.pop_front();
        }
    }

    /// Drops stale deadline entries once a queue holds more than twice the live items
    /// (the waiting sends', for `wait_q`).
    fn compact(&mut self) {
        let live = self.inflight;
        let outbound = &self.outbound;
        let alive = |d: &Due| {
            outbound
                .get(&(d.1, d.2))
                .and_then(|p| p.inflight.get(&d.3))
                .is_some()
        };
        for q in [&mut self.fate_q, &mut self.resend_q, &mut self.park_q] {
            if q.len() > 2 * live + 1024 {
                q.retain(alive);
            }
        }
        // A pair's waiting sends leave from the front (or expire), so an entry is
        // live while the pair's first waiting send with a deadline is not later.
        if self.wait_q.len() > 2 * self.blocked + 1024 {
            self.wait_q.retain(|&(t, from, to)| {
                outbound.get(&(from, to)).is_some_and(|p| {
                    p.waiting
                        .iter()
                        .find(|w| w.due != Time::NEVER)
                        .is_some_and(|w| w.due <= t)
                })
            });
        }
    }
}

/// Moves the pair's next expected sequence to `seq` (at or past it): the items of the
/// gap, should they come later, are late, not delivered.
fn skip_to(pair: &mut InPair, seq: u64, window: u64) {
    let skipped = seq.saturating_sub(pair.next).min(window);
    for late in seq - skipped..seq {
        pair.outcomes.insert(late, Outcome::Late);
    }
    pair.next = pair.next.max(seq);
    if skipped > 0 {
        trim(pair, window);
    }
}

/// Forgets the outcomes of a pair more than `window` behind its next sequence (the
/// sender has no item that old in flight).
fn trim(pair: &mut InPair, window: u64) {
    let keep = pair.next.saturating_sub(window);
    while pair
        .outcomes
        .first_key_value()
        .is_some_and(|(s, _)| *s < keep)
    {
        pair.outcomes.pop_first();
    }
}
