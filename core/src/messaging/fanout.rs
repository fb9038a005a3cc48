//! The fan-out engine shared by groups, topics and broadcast: who is a member where
//! (memberships indexed up the hierarchy), and the walk by which one send reaches
//! every member of a [`Target`] through the federation tree, crossing each tree edge
//! at most once.
//!
//! # Membership, indexed up the hierarchy
//!
//! A membership lives at the member's host only ([`Fanout::join`]): a [`Target`] (a
//! group or a topic of a tenant) maps to the local pids in it, each with its *rank*
//! (the Lamport stamp of its join: a join that happened after its host heard of
//! another ranks after it; ties by pid; clocks travel on every walk and answer). The
//! host's [`MemberFilter`] holds every target it has members of and, if it tracks
//! processes (groups do, for broadcast), every tenant it runs processes of; it is
//! this host's share of messaging's summary part, and leaders or their members'
//! filters up the tree exactly as they sum placement's tenant filter. So the filter
//! of a subtree may hold a target it does not (a false positive costs a visit) but
//! never misses one its beats have carried. Beats climb one federation period per
//! level, so the first member of a target on a host (and, for broadcast, the first
//! process of a tenant) also tells every leader above it at once
//! ([`FanoutMsg::Joined`], naming the member of the leader's group on the way
//! down), and the leader visits that member for the target for [`PIN_PERIODS`]
//! periods whatever its summary says: a send reaches the new member once those
//! messages arrived (one hop after the join, not a period per level; a lost one
//! leaves the beats). A leader that has not heard a member yet visits it. Memberships go with their process.
//!
//! # The walk
//!
//!
//! The sender's agent (the *origin*) sends [`GroupsMsg::Walk`] to the root of its
//! tree (the last of its level-0 view's ancestors). A leader at level `k > 0`
//! forwards the walk to the members of its group whose subtree filters may hold the
//! target (each leads a group at `k - 1`; a member it leads itself is walked
//! without a message); a level-0 leader sends [`GroupsMsg::Visit`] to the member
//! hosts whose filters may hold it. Each leader tells the origin whom it forwarded
//! to ([`GroupsMsg::Expect`]), and each visited host answers the origin directly
//! ([`GroupsMsg::Answer`]): how many of its mailboxes it reached, or, for a member
//! list, its members. The origin visits its own host first, whatever the leaders'
//! summaries say of it yet (its own filter is current: a process started a moment
//! ago is in it); the walk's later visit there is a repeat, neither delivered again
//! nor counted. The origin is done when no walk and no host is outstanding,
//! or at its deadline; the send's receipt counts the mailboxes reached, `NoMembers`
//! if none, and `Unknown` if a part never answered.
//!
//! # A full mailbox
//!
//! Fan-out has no credits and no queue of its own: an at-most-once send that finds
//! a member's mailbox full is not put in it, and a host's answer says how many of
//! its members it reached and how many it missed ([`Missed`]: full, or overtaken
//! by a later send of the same sender, see [`Order`]). A send that missed any
//! member ends `SendError::Partial { reached, full, overtaken }`, never `Ok`: the
//! sender always learns that someone did not get it (it does not learn who). A
//! reliable send waits for room instead (below).
//!
//! So a publication to many subscribers in a remote subtree enters it once, then
//! fans out inside it; no data goes through a leader that is not on the tree path
//! to a member, and there is no broker. Messages for one fan-out: one per tree edge
//! used, one per member host, and the small `Expect`/`Answer` accounting (one per
//! leader and one per host).
//!
//! # Reliable fan-out
//!
//! A send with [`Delivery::Reliable`] reaches every member whose host the walk
//! finds exactly once, in its sender's order, over a network that loses,
//! duplicates and reorders:
//!
//! - *Again where missing.* The origin keeps the data while the walk runs and
//!   sends again what it still waits for, straight to the part that owes it: the
//!   walk to each leader whose `Expect` has not come, the visit to each announced
//!   host whose `Answer` has not. It does so first after [`RESEND_FACTOR`] times
//!   what its reliable walks took lately (each up to the last part it heard from
//!   before it sent anything again; at least [`MIN_RESEND`]), then at doubling
//!   gaps up to `resend_every` (which it uses until a walk has been measured): so
//!   a lost message costs a few walk times, not `resend_every`, and a sender's
//!   throughput (below) does not collapse under loss. A host counts a repeat it
//!   delivered before as reached (its first answer may be the one lost) and does
//!   not deliver it again ([`Order`]); a host with a member's mailbox full does not
//!   answer, so the visit comes again (back-pressure, up to the deadline). At the
//!   deadline (`walk_timeout`) the send ends `Unknown`.
//! - *A member that stopped reading.* A member whose mailbox has stayed full for
//!   half of `walk_timeout` no longer holds its host's answer: the host answers it
//!   missed (full), so the send ends `Partial`, and so do the next reliable sends
//!   that find it full, at once, until a delivery to it succeeds again. (Before,
//!   one process of a tenant that never read made every reliable broadcast of the
//!   tenant wait out its deadline and end `Unknown`, and its sender's later sends
//!   queued behind them past any bound: swarm seed 95728.)
//! - *One at a time per sender.* While a sender's reliable fan-out send runs, its
//!   later fan-out sends (of either mode) wait at the origin, at most
//!   [`MAX_QUEUED`] of them (beyond: `Full`), and start in order when it ends; one
//!   that has waited `walk_timeout` by then fails `Full` instead (its sender sends
//!   faster than its reliable walks carry: before, swarm seed 98699, a client's
//!   sends to four patterns of one group under 5% loss queued for seconds, past
//!   any bound on their answer), so no send waits longer than that for its turn.
//!   So no later send can overtake it at a member, and [`Order`]'s "after the last
//!   one delivered" rule, which drops what comes late, never drops a reliable
//!   send. The cost would be throughput (one walk per send, and a walk that lost
//!   a message takes a few walk times), so:
//! - *Batches.* When a sender's reliable send ends, the reliable sends waiting
//!   right behind it for the same target start as one walk ([`Carry::Data`]
//!   holds up to [`MAX_BATCH`] messages, [`MAX_DATA_BYTES`] in all, at
//!   consecutive positions); a host puts them in each member's mailbox in order,
//!   and a visit that comes again after a full mailbox goes on where the last one
//!   stopped ([`Admit::From`]). Every send of the batch gets the walk's answer. So
//!   a sender's throughput grows with its backlog instead of staying one send per
//!   walk: a publisher faster than its walks (a lossy network, a deep tree) no
//!   longer builds a queue whose sends wait seconds for their turn.
//! - *Limit.* A member is found through its host's filter or a leader's pin
//!   ([`FanoutMsg::Joined`], sent once): a membership whose `Joined` was lost is
//!   reached once the beats carry it up (a few federation periods).
//!
//! Invariants: a walk in flight has exactly one timer; an answer is counted once per
//! host; every peer-sent list is bounded ([`MAX_EXPECT`], [`MAX_ANSWER`]); a sender
//! with sends waiting ([`Fanout`]'s `busy`) has a reliable walk in flight or is
//! about to start its next send.

use super::msg::MAX_DATA_BYTES;
use super::topics::{Admit, Order};
use super::MessagingSummary;
use crate::federation::Summary;
use crate::ids::{NodeId, Pid, TenantId};
use crate::service::walk::WalkProgress;
use crate::service::TreeView;
use crate::time::Time;
use crate::wire::validate::{check_len, MAX_LEVEL};
use crate::wire::Reject;
use nefele_api::calls::{ApiReply, RequestId};
use nefele_api::messaging::{Delivery, DistanceClass, GroupError, SendError, SendReceipt};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

/// The longest group or topic name, in bytes.
pub const MAX_TARGET_BYTES: usize = 64;
/// The most groups (or topics) one process is in.
pub const MAX_PER_PROCESS: u32 = 256;
/// The most memberships one host holds (per engine).
pub const MAX_MEMBERSHIPS: usize = 65_536;
/// The most members a member list keeps.
pub const MAX_LIST_MEMBERS: usize = 4096;
/// The most fan-out sends of one sender waiting behind its reliable one.
pub const MAX_QUEUED: usize = 256;
/// The most reliable sends one walk carries as a batch.
pub const MAX_BATCH: usize = 64;
/// The most reliable fan-out sends one agent runs at once (each holds its data).
pub const MAX_RELIABLE: usize = 1024;
/// The most targets a leader pins for its members.
pub const MAX_PINS: usize = 65_536;
/// A reliable walk's first resend comes after this many times what the origin's
/// recent reliable walks took (see the module documentation).
pub const RESEND_FACTOR: u32 = 4;
/// The shortest gap before a reliable walk's first resend.
pub const MIN_RESEND: Duration = Duration::from_millis(1);
/// How long a leader pins a member's announced target, in federation periods (far
/// longer than the beats carrying it take to climb).
pub const PIN_PERIODS: u32 = 10;

/// What a group send or a publication is addressed to.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Target {
    /// The tenant.
    pub tenant: TenantId,
    /// Which kind of set.
    pub kind: Kind,
    /// Its name (empty for [`Kind::Tenant`]).
    pub name: String,
}

/// The kinds of [`Target`].
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Kind {
    /// A process group.
    Group,
    /// A pub/sub topic.
    Topic,
    /// Every process of the tenant (broadcast).
    Tenant,
}

impl Target {
    /// The group `name` of `tenant`.
    #[must_use]
    pub fn group(tenant: TenantId, name: &str) -> Self {
        Target {
            tenant,
            kind: Kind::Group,
            name: name.to_owned(),
        }
    }

    /// The topic `name` of `tenant`.
    #[must_use]
    pub fn topic(tenant: TenantId, name: &str) -> Self {
        Target {
            tenant,
            kind: Kind::Topic,
            name: name.to_owned(),
        }
    }

    /// Every process of `tenant`.
    #[must_use]
    pub fn tenant(tenant: TenantId) -> Self {
        Target {
            tenant,
            kind: Kind::Tenant,
            name: String::new(),
        }
    }

    /// Whether a peer's target is well formed.
    #[must_use]
    pub fn valid(&self) -> bool {
        match self.kind {
            Kind::Tenant => self.name.is_empty(),
            Kind::Group | Kind::Topic => valid_target_name(&self.name),
        }
    }

    /// The three bits of the target in a [`MemberFilter`]: a SplitMix64 mix of an
    /// FNV-1a hash of its parts (stable across runs and machines, as the wire needs).
    fn bits(&self) -> [u32; 3] {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let kind = match self.kind {
            Kind::Group => 1u8,
            Kind::Topic => 2,
            Kind::Tenant => 3,
        };
        let bytes = self
            .tenant
            .0
            .to_le_bytes()
            .into_iter()
            .chain([kind])
            .chain(self.name.bytes());
        for b in bytes {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        let z = crate::mix::splitmix64(h);
        let bits = FILTER_BITS as u64;
        [
            (z % bits) as u32,
            ((z >> 21) % bits) as u32,
            ((z >> 42) % bits) as u32,
        ]
    }
}

/// Whether `name` may name a group or a topic: 1 to [`MAX_TARGET_BYTES`] bytes.
#[must_use]
pub fn valid_target_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_TARGET_BYTES
}

const FILTER_WORDS: usize = 16;
const FILTER_BITS: usize = FILTER_WORDS * 64;

/// The targets a subtree may hold members of: a 1,024-bit Bloom filter with three
/// bits per target (about 2% false positives with 100 targets in a subtree). It may
/// say a target is there when it is not, never the opposite; the union of two
/// subtrees is the bitwise or.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberFilter([u64; FILTER_WORDS]);

impl MemberFilter {
    /// Every target (what a subtree not heard from yet may hold).
    pub const ALL: MemberFilter = MemberFilter([u64::MAX; FILTER_WORDS]);
    /// No target.
    pub const EMPTY: MemberFilter = MemberFilter([0; FILTER_WORDS]);

    /// Adds `target`.
    pub fn insert(&mut self, target: &Target) {
        for bit in target.bits() {
            self.0[bit as usize / 64] |= 1 << (bit % 64);
        }
    }

    /// Whether `target` may be in the set (false: it certainly is not).
    #[must_use]
    pub fn may_contain(&self, target: &Target) -> bool {
        target
            .bits()
            .iter()
            .all(|bit| self.0[*bit as usize / 64] & (1 << (bit % 64)) != 0)
    }

    /// The union of two sets.
    #[must_use]
    pub fn union(self, other: MemberFilter) -> MemberFilter {
        let mut words = self.0;
        for (w, o) in words.iter_mut().zip(other.0) {
            *w |= o;
        }
        MemberFilter(words)
    }
}

/// What the fan-out engine needs of the mailboxes of this host.
pub trait Mailboxes {
    /// Puts data from `from` (`key`: tenant, from, to; its `seq`-th send to the target, from a host of
    /// distance `class`) into the mailbox of the local process `to` of `tenant`.
    fn deliver(
        &mut self,
        key: (TenantId, Pid, Pid),
        seq: u64,
        data: &[u8],
        class: DistanceClass,
    ) -> Put;
    /// How many messages wait in the mailbox of the local process `pid`.
    fn depth(&self, pid: Pid) -> u32;
}

/// What became of one delivery into a local mailbox ([`Mailboxes::deliver`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Put {
    /// It is in the mailbox.
    Delivered,
    /// The mailbox is full.
    Full,
    /// No such live process of the tenant here.
    Gone,
}

/// What the engine asks of the part that owns it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FanOut {
    /// A message to another agent (the part wraps it in its own sub-message).
    Send(NodeId, FanoutMsg),
    /// An answer to a local client.
    Reply(RequestId, ApiReply),
    /// The member-list walk `token` for `target` ended with `members` (`None`: no
    /// answer at all).
    Listed {
        /// The walk.
        token: u64,
        /// Its target.
        target: Target,
        /// What the hosts listed.
        members: Option<Vec<Member>>,
    },
}

/// The member filter of a subtree summary (a summary without messaging's part holds
/// nothing).
#[must_use]
pub fn filter_of(summary: &Summary) -> MemberFilter {
    MessagingSummary::of(summary).members
}

/// One agent's memberships of one kind and its walks in flight (see the module
/// documentation).
#[derive(Debug)]
pub struct Fanout {
    me: NodeId,
    /// Lamport clock of joins.
    clock: u64,
    next_token: u64,
    /// How long a walk's origin waits for every part of it.
    walk_timeout: Duration,
    /// The longest gap between a reliable send's resends of what it still waits for.
    resend_every: Duration,
    /// The smoothed time reliable walks took, each up to the last part it heard
    /// from before it sent anything again (`None`: none measured yet).
    walk_time: Option<Duration>,
    /// Local memberships: target → member → rank.
    members: BTreeMap<Target, BTreeMap<Pid, u64>>,
    /// Memberships per local process.
    per_pid: BTreeMap<Pid, u32>,
    /// Live local processes per tenant (only if tracked: see [`Fanout::process_started`]).
    procs: BTreeMap<TenantId, BTreeSet<Pid>>,
    /// The targets and tenants of this host.
    own: MemberFilter,
    order: Order,
    /// Targets announced by `Joined` (level, member, target), with when the pin
    /// ends; at most [`MAX_PINS`].
    pins: BTreeMap<(u8, NodeId, Target), Time>,
    /// The time of the input being handled.
    now: Time,
    /// Local processes whose mailbox a reliable visit found full, and since when
    /// (until a delivery to them succeeds, or they end): see [`Fanout::on_visit`].
    stuck: BTreeMap<Pid, Time>,
    walks: BTreeMap<u64, Walk>,
    /// Walk timers (deadlines, and a reliable walk's next resend).
    timers: BTreeSet<(Time, u64)>,
    /// Senders with a reliable fan-out send in flight, and their later fan-out
    /// sends waiting for it to end (see the module documentation).
    busy: BTreeMap<Pid, VecDeque<Queued>>,
    /// Senders whose reliable send ended: their next waiting send starts at the
    /// end of the input ([`Fanout::start_ready`]).
    ready: Vec<Pid>,
    out: VecDeque<FanOut>,
}

/// A fan-out send waiting for its sender's reliable one.
#[derive(Debug)]
struct Queued {
    request: RequestId,
    target: Target,
    data: Vec<u8>,
    reliable: bool,
    /// When it was asked for (it fails `Full` once it has waited a walk time).
    at: Time,
}

impl Fanout {
    /// The engine of agent `me`; a walk's origin waits `walk_timeout` for its parts,
    /// and sends a reliable walk's missing parts again, at gaps of at most
    /// `resend_every`.
    #[must_use]
    pub fn new(me: NodeId, walk_timeout: Duration, resend_every: Duration) -> Self {
        Fanout {
            me,
            clock: 0,
            next_token: 0,
            walk_timeout,
            resend_every,
            walk_time: None,
            members: BTreeMap::new(),
            per_pid: BTreeMap::new(),
            procs: BTreeMap::new(),
            own: MemberFilter::EMPTY,
            order: Order::default(),
            pins: BTreeMap::new(),
            now: Time::ZERO,
            stuck: BTreeMap::new(),
            walks: BTreeMap::new(),
            timers: BTreeSet::new(),
            busy: BTreeMap::new(),
            ready: Vec::new(),
            out: VecDeque::new(),
        }
    }

    /// This host's share of the summaries.
    #[must_use]
    pub fn own_filter(&self) -> MemberFilter {
        self.own
    }

    /// The next output, if any.
    pub fn poll(&mut self) -> Option<FanOut> {
        self.out.pop_front()
    }

    /// When [`Fanout::handle_timeout`] must be called next.
    #[must_use]
    pub fn next_timeout(&self) -> Option<Time> {
        self.timers.first().map(|(t, _)| *t)
    }

    fn reply(&mut self, request: RequestId, reply: ApiReply) {
        self.out.push_back(FanOut::Reply(request, reply));
    }

    /// The filter of this host's targets and tenants, built from them.
    fn own_targets(&self) -> MemberFilter {
        let mut f = MemberFilter::EMPTY;
        for t in self.members.keys() {
            f.insert(t);
        }
        for t in self.procs.keys() {
            f.insert(&Target::tenant(*t));
        }
        f
    }

    fn refresh_own(&mut self) {
        self.own = self.own_targets();
    }

    /// A process of this host started: it is reached by broadcasts of its tenant
    /// (only the engine that serves broadcast calls this). The first of its tenant
    /// here is announced up the tree as a group's first member is.
    pub fn process_started(&mut self, now: Time, tree: &TreeView<'_>, pid: Pid, tenant: TenantId) {
        match self.procs.entry(tenant) {
            std::collections::btree_map::Entry::Occupied(mut e) => {
                e.get_mut().insert(pid);
            }
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(BTreeSet::from([pid]));
                let target = Target::tenant(tenant);
                self.own.insert(&target);
                self.now = now;
                self.announce(tree, &target);
            }
        }
    }

    /// A process of this host ended: its memberships and its numbering go.
    pub fn process_ended(&mut self, pid: Pid, tenant: TenantId) {
        // The filter is rebuilt only when its targets change: the last process of a
        // tenant, or a member, ended (most processes are neither).
        let mut targets_changed = false;
        if let Some(ps) = self.procs.get_mut(&tenant) {
            ps.remove(&pid);
            if ps.is_empty() {
                self.procs.remove(&tenant);
                targets_changed = true;
            }
        }
        if self.per_pid.remove(&pid).is_some() {
            for m in self.members.values_mut() {
                m.remove(&pid);
            }
            self.members.retain(|_, m| !m.is_empty());
            targets_changed = true;
        }
        self.order.ended(pid);
        self.stuck.remove(&pid);
        // Its waiting sends were never sent; the one in flight runs on.
        if let Some(queue) = self.busy.get_mut(&pid) {
            for q in std::mem::take(queue) {
                self.out.push_back(FanOut::Reply(
                    q.request,
                    ApiReply::Sent(Err(SendError::NotSender)),
                ));
            }
        }
        if targets_changed {
            self.refresh_own();
        }
    }

    /// Adds the local process `pid` to `target`; `local`: `pid` is a live process of
    /// the target's tenant on this host.
    pub fn join(
        &mut self,
        now: Time,
        tree: &TreeView<'_>,
        target: Target,
        pid: Pid,
        local: bool,
    ) -> Result<(), GroupError> {
        self.now = now;
        if !target.valid() || target.kind == Kind::Tenant {
            return Err(GroupError::Invalid);
        }
        if !local {
            return Err(GroupError::NoSuchProcess);
        }
        if self
            .members
            .get(&target)
            .is_some_and(|m| m.contains_key(&pid))
        {
            return Ok(());
        }
        let count = self.per_pid.get(&pid).copied().unwrap_or(0);
        let total: usize = self.members.values().map(BTreeMap::len).sum();
        if count >= MAX_PER_PROCESS || total >= MAX_MEMBERSHIPS {
            return Err(GroupError::TooMany);
        }
        // Peers' clocks are taken as they come: one near `u64::MAX` must not
        // overflow ours.
        self.clock = self.clock.saturating_add(1);
        self.own.insert(&target);
        if !self.members.contains_key(&target) {
            self.announce(tree, &target);
        }
        self.members
            .entry(target)
            .or_default()
            .insert(pid, self.clock);
        self.per_pid.insert(pid, count + 1);
        Ok(())
    }

    /// The first member of `target` on this host: every leader above it pins the
    /// target for the member of its group on the way down to this host.
    fn announce(&mut self, tree: &TreeView<'_>, target: &Target) {
        let Some(view) = tree.group(0).map(|g| g.view()) else {
            return;
        };
        // Level 0: this host itself is the member; level `k + 1` (led by
        // `ancestors[k]`): the leader of level `k` is.
        let leaders = std::iter::once(view.leader).chain(view.ancestors.iter().copied());
        let mut via = self.me;
        for (level, leader) in leaders.enumerate() {
            let Ok(level) = u8::try_from(level) else {
                break;
            };
            if leader == self.me {
                self.pin(tree, level, via, target.clone());
            } else {
                let target = target.clone();
                self.send_msg(leader, FanoutMsg::Joined { level, via, target });
            }
            via = leader;
        }
    }

    /// Pins `target` for `via` in the group this agent leads at `level`.
    fn pin(&mut self, tree: &TreeView<'_>, level: u8, via: NodeId, target: Target) {
        let until = self.now + tree.period() * PIN_PERIODS;
        if self.pins.len() >= MAX_PINS {
            let now = self.now;
            self.pins.retain(|_, t| *t > now);
        }
        if self.pins.len() < MAX_PINS || self.pins.contains_key(&(level, via, target.clone())) {
            self.pins.insert((level, via, target), until);
        }
    }

    /// Serves a client's join (or subscribe; `join`) or leave (or unsubscribe) of
    /// `pid` to `target` and answers it: groups and topics both come here.
    #[allow(clippy::too_many_arguments)]
    pub fn serve_membership(
        &mut self,
        now: Time,
        tree: &TreeView<'_>,
        request: RequestId,
        target: Target,
        pid: Pid,
        join: bool,
        post: &mut super::post::Post,
    ) {
        let result = if join {
            let local = post.tenant_of(pid) == Some(target.tenant);
            self.join(now, tree, target, pid, local)
        } else {
            self.leave(&target, pid)
        };
        post.reply(request, ApiReply::Grouped(result));
    }

    /// Takes `pid` out of `target`.
    pub fn leave(&mut self, target: &Target, pid: Pid) -> Result<(), GroupError> {
        let removed = self
            .members
            .get_mut(target)
            .is_some_and(|m| m.remove(&pid).is_some());
        if !removed {
            return Err(GroupError::NotMember);
        }
        if self.members.get(target).is_some_and(BTreeMap::is_empty) {
            self.members.remove(target);
        }
        if let Some(c) = self.per_pid.get_mut(&pid) {
            *c -= 1;
            if *c == 0 {
                self.per_pid.remove(&pid);
            }
        }
        self.refresh_own();
        Ok(())
    }

    /// Walk timers that came: a walk past its deadline ends, a reliable one before
    /// it sends its missing parts again.
    pub fn handle_timeout(&mut self, now: Time, tree: &TreeView<'_>, boxes: &mut dyn Mailboxes) {
        self.now = now;
        while let Some((t, token)) = self.timers.first().copied() {
            if t > now {
                break;
            }
            let again = self
                .walks
                .get(&token)
                .filter(|w| w.deadline > now)
                .and_then(|w| w.resend.clone());
            match again {
                Some(again) => {
                    let Some(w) = self.walks.get_mut(&token) else {
                        continue;
                    };
                    w.gap = (w.gap * 2).min(self.resend_every);
                    w.resent = true;
                    let next = (now + w.gap).min(w.deadline);
                    w.timer = next;
                    self.timers.remove(&(t, token));
                    self.timers.insert((next, token));
                    self.resend(tree, token, again, boxes);
                }
                None => self.finish(token, false),
            }
        }
        self.start_ready(tree, boxes);
    }

    /// The engine's invariants (see the module documentation).
    #[must_use]
    pub fn invariants(&self) -> bool {
        // Exactly the filter of the current targets: nothing missing, and nothing
        // left of a target gone (refreshes are skipped when the targets stay).
        self.own == self.own_targets()
            && self.timers.len() == self.walks.len()
            && self
                .walks
                .iter()
                .all(|(token, w)| self.timers.contains(&(w.timer, *token)))
            && self.busy.iter().all(|(pid, q)| {
                q.len() <= MAX_QUEUED
                    && (self.ready.contains(pid)
                        || self.walks.values().any(|w| w.holds == Some(*pid)))
            })
            && self.per_pid.values().map(|c| *c as usize).sum::<usize>()
                == self.members.values().map(BTreeMap::len).sum::<usize>()
    }
}

/// The most members an `Expect` names (a group is at most 256 members).
pub const MAX_EXPECT: usize = 256;
/// The most members in one `Answer` (28 bytes each: forty fit a datagram).
pub const MAX_ANSWER: usize = 40;
/// The most parts a host's answer comes in.
pub const MAX_PARTS: u16 = 1024;

/// One member as a host reports it in a list.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The process.
    pub pid: Pid,
    /// Its rank (the Lamport stamp of its join).
    pub rank: u64,
    /// Messages waiting in its mailbox when its host answered.
    pub depth: u32,
}

/// What a walk carries.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Carry {
    /// Messages for every member, in order: the `i`-th is `from`'s fan-out send at
    /// position `seq + i` (one message, or a reliable sender's batch: see the
    /// module documentation).
    Data {
        /// The sender.
        from: Pid,
        /// The first message's position among `from`'s fan-out sends (from 1).
        seq: u64,
        /// The messages (1 to [`MAX_BATCH`], at most [`MAX_DATA_BYTES`] in all).
        items: Vec<Vec<u8>>,
        /// Sent with [`Delivery::Reliable`] (see the module documentation).
        reliable: bool,
    },
    /// A request for the members.
    List,
}

/// The fan-out walk's wire messages (inside groups' and topics' own).
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FanoutMsg {
    /// Walk the group this agent leads at `level` towards `target`'s members.
    Walk {
        /// The origin's walk.
        token: u64,
        /// The sender's agent.
        origin: NodeId,
        /// The level of the group to walk.
        level: u8,
        /// Whom it is for.
        target: Target,
        /// What it carries.
        carry: Carry,
        /// The origin's Lamport clock of joins.
        clock: u64,
    },
    /// Deliver to (or list) this host's members of `target`.
    Visit {
        /// The origin's walk.
        token: u64,
        /// The sender's agent.
        origin: NodeId,
        /// Whom it is for.
        target: Target,
        /// What it carries.
        carry: Carry,
        /// The origin's Lamport clock of joins.
        clock: u64,
    },
    /// Leader → origin: the walk of its group at `level` went on at `members`.
    Expect {
        /// The origin's walk.
        token: u64,
        /// The level of the leader's group.
        level: u8,
        /// Level 0: hosts; above: leaders of groups at `level - 1`.
        members: Vec<NodeId>,
    },
    /// Host → the leader of its group at `level`: it now has members of `target`,
    /// in the subtree of `via` (a member of that group): the leader visits `via` for
    /// `target` before the beats carrying it arrive.
    Joined {
        /// The level of the leader's group.
        level: u8,
        /// The member whose subtree holds the host.
        via: NodeId,
        /// The target.
        target: Target,
    },
    /// Host → origin: what it reached (part `part` of `parts`).
    Answer {
        /// The origin's walk.
        token: u64,
        /// Mailboxes reached (data), in this part.
        reached: u32,
        /// Members the data was not put in (data), in this part.
        missed: Missed,
        /// Members (list), in this part.
        members: Vec<Member>,
        /// Parts of the host's answer.
        parts: u16,
        /// The host's Lamport clock of joins.
        clock: u64,
    },
}

impl FanoutMsg {
    /// A short, stable name of the kind, for traces. The two that carry data are
    /// data messages (exempt from the control MTU).
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            FanoutMsg::Walk {
                carry: Carry::Data { .. },
                ..
            } => "walk_data",
            FanoutMsg::Walk { .. } => "walk",
            FanoutMsg::Visit {
                carry: Carry::Data { .. },
                ..
            } => "visit_data",
            FanoutMsg::Visit { .. } => "visit",
            FanoutMsg::Expect { .. } => "expect",
            FanoutMsg::Joined { .. } => "joined",
            FanoutMsg::Answer { .. } => "answer",
        }
    }

    /// Checks a peer's message against the bounds (a batch of 1 to
    /// [`MAX_BATCH`] messages of at most [`MAX_DATA_BYTES`] in all, whose positions
    /// fit, levels, list lengths, parts).
    pub fn validate(&self) -> Result<(), Reject> {
        let target_ok = |t: &Target| {
            t.valid().then_some(()).ok_or(Reject::Malformed {
                what: "fanout target",
            })
        };
        if let FanoutMsg::Walk {
            carry: Carry::Data { seq, items, .. },
            ..
        }
        | FanoutMsg::Visit {
            carry: Carry::Data { seq, items, .. },
            ..
        } = self
        {
            check_len("fanout batch", items.len(), MAX_BATCH)?;
            let bytes = items.iter().map(Vec::len).sum();
            check_len("fanout data", bytes, MAX_DATA_BYTES)?;
            if items.is_empty() || seq.checked_add(items.len() as u64).is_none() {
                return Err(Reject::Malformed {
                    what: "fanout batch",
                });
            }
        }
        match self {
            FanoutMsg::Walk { level, target, .. } => {
                if *level > MAX_LEVEL {
                    return Err(Reject::Level {
                        what: "walk",
                        level: *level,
                        max: MAX_LEVEL,
                    });
                }
                target_ok(target)
            }
            FanoutMsg::Visit { target, .. } => target_ok(target),
            FanoutMsg::Joined { level, target, .. } => {
                if *level > MAX_LEVEL {
                    return Err(Reject::Level {
                        what: "joined",
                        level: *level,
                        max: MAX_LEVEL,
                    });
                }
                target_ok(target)
            }
            FanoutMsg::Expect { level, members, .. } => {
                if *level > MAX_LEVEL {
                    return Err(Reject::Level {
                        what: "expect",
                        level: *level,
                        max: MAX_LEVEL,
                    });
                }
                if members.len() > MAX_EXPECT {
                    return Err(Reject::TooMany {
                        what: "expect",
                        len: members.len(),
                        max: MAX_EXPECT,
                    });
                }
                Ok(())
            }
            FanoutMsg::Answer { members, parts, .. } => {
                if members.len() > MAX_ANSWER {
                    return Err(Reject::TooMany {
                        what: "answer",
                        len: members.len(),
                        max: MAX_ANSWER,
                    });
                }
                if *parts == 0 || *parts > MAX_PARTS {
                    return Err(Reject::Malformed {
                        what: "fanout answer parts",
                    });
                }
                Ok(())
            }
        }
    }
}

/// Whom a walk answers.
#[derive(Debug)]
pub(super) enum Purpose {
    /// A client's send, or a reliable sender's batch of them: reply to each with
    /// the mailboxes reached.
    Send(Vec<RequestId>),
    /// A member list for the sender's agent.
    List(Target),
}

/// One walk in flight at its origin.
#[derive(Debug)]
pub(super) struct Walk {
    purpose: Purpose,
    deadline: Time,
    /// Its entry in the timers: the deadline, or a reliable walk's next resend.
    timer: Time,
    /// When it started.
    started: Time,
    /// A reliable walk's gap before its next resend (doubling, at most
    /// `resend_every`).
    gap: Duration,
    /// Whether it sent anything again.
    resent: bool,
    /// When it last heard from a part before it sent anything again: what a walk
    /// takes, as far as this one shows (a part answering a resend is no measure).
    heard: Option<Time>,
    /// A reliable walk's target and data, to send again.
    resend: Option<(Target, Carry)>,
    /// The sender whose later fan-out sends wait for this (reliable) one.
    holds: Option<Pid>,
    /// What the walk still waits for.
    progress: WalkProgress,
    reached: u32,
    missed: Missed,
    members: Vec<Member>,
}

/// The members a fan-out send's data was not put in (an at-most-once send: a
/// reliable one visits a host with a full member again instead).
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Missed {
    /// Their mailbox was full.
    pub full: u32,
    /// A later fan-out send of the same sender had reached them first (the walks
    /// crossed), so this one was dropped to keep their order.
    pub overtaken: u32,
}

impl Missed {
    fn plus(self, other: Missed) -> Missed {
        Missed {
            full: self.full.saturating_add(other.full),
            overtaken: self.overtaken.saturating_add(other.overtaken),
        }
    }
}

impl Fanout {
    /// The gap before a reliable walk's first resend: [`RESEND_FACTOR`] times what
    /// reliable walks took lately, within [`MIN_RESEND`] and `resend_every`.
    fn first_gap(&self) -> Duration {
        self.walk_time.map_or(self.resend_every, |t| {
            (t * RESEND_FACTOR).clamp(MIN_RESEND, self.resend_every.max(MIN_RESEND))
        })
    }

    fn send_msg(&mut self, to: NodeId, msg: FanoutMsg) {
        self.out.push_back(FanOut::Send(to, msg));
    }

    /// Sends `data` from the local process `from` to every member of `target` (its
    /// sender and size checked already by the messaging service), by `delivery`;
    /// the client's answer follows as a [`FanOut::Reply`]. A send of a sender whose
    /// reliable one is in flight waits for it (see the module documentation).
    #[allow(clippy::too_many_arguments)]
    pub fn send_to_all(
        &mut self,
        now: Time,
        tree: &TreeView<'_>,
        request: RequestId,
        target: Target,
        from: Pid,
        data: Vec<u8>,
        delivery: Delivery,
        boxes: &mut dyn Mailboxes,
    ) {
        self.now = now;
        if !target.valid() {
            return self.reply(request, ApiReply::Sent(Err(SendError::NoMembers)));
        }
        let reliable = delivery == Delivery::Reliable;
        let q = Queued {
            request,
            target,
            data,
            reliable,
            at: now,
        };
        match self.busy.get_mut(&from) {
            Some(queue) if queue.len() >= MAX_QUEUED => {
                self.reply(request, ApiReply::Sent(Err(SendError::Full)));
            }
            Some(queue) => queue.push_back(q),
            None => {
                self.start_send(tree, from, vec![q], boxes);
                self.start_ready(tree, boxes);
            }
        }
    }

    /// Starts the fan-out send `batch` of `from` (one send, or reliable ones to one
    /// target; nothing of `from`'s is in flight reliably).
    fn start_send(
        &mut self,
        tree: &TreeView<'_>,
        from: Pid,
        batch: Vec<Queued>,
        boxes: &mut dyn Mailboxes,
    ) {
        let Some(first) = batch.first() else {
            return;
        };
        let (reliable, target) = (first.reliable, first.target.clone());
        let requests: Vec<RequestId> = batch.iter().map(|q| q.request).collect();
        let reliable_walks = self.walks.values().filter(|w| w.holds.is_some()).count();
        let seq = if reliable && reliable_walks >= MAX_RELIABLE {
            None
        } else {
            self.order.stamp(from, batch.len() as u64)
        };
        let Some(seq) = seq else {
            for request in requests {
                self.reply(request, ApiReply::Sent(Err(SendError::Full)));
            }
            return;
        };
        let carry = Carry::Data {
            from,
            seq,
            items: batch.into_iter().map(|q| q.data).collect(),
            reliable,
        };
        let holds = reliable.then_some(from);
        if holds.is_some() {
            self.busy.entry(from).or_default();
        }
        let purpose = Purpose::Send(requests);
        self.start_walk(self.now, tree, purpose, holds, target, carry, boxes);
    }

    /// Takes the next waiting send of `from`, with the reliable ones to the same
    /// target right behind it if it is reliable: a batch of at most [`MAX_BATCH`]
    /// sends and [`MAX_DATA_BYTES`] (so a sender's throughput grows with its
    /// backlog rather than stay one send per walk).
    /// Sends that already waited `walk_timeout` fail `Full` instead (see the
    /// module documentation).
    fn next_batch(&mut self, from: Pid) -> Vec<Queued> {
        let Some(queue) = self.busy.get_mut(&from) else {
            return Vec::new();
        };
        let (now, patience) = (self.now, self.walk_timeout);
        let mut late = Vec::new();
        while let Some(q) = queue.pop_front() {
            if now.saturating_since(q.at) < patience {
                queue.push_front(q);
                break;
            }
            late.push(q.request);
        }
        for request in late {
            self.reply(request, ApiReply::Sent(Err(SendError::Full)));
        }
        let Some(queue) = self.busy.get_mut(&from) else {
            return Vec::new();
        };
        let Some(first) = queue.pop_front() else {
            return Vec::new();
        };
        let mut bytes = first.data.len();
        let mut batch = vec![first];
        while let Some(next) = queue.front() {
            let joins = batch[0].reliable
                && next.reliable
                && next.target == batch[0].target
                && batch.len() < MAX_BATCH
                && bytes + next.data.len() <= MAX_DATA_BYTES;
            if !joins {
                break;
            }
            bytes += next.data.len();
            batch.extend(queue.pop_front());
        }
        batch
    }

    /// Starts the next waiting send (or batch) of each sender whose reliable send
    /// ended (which may end at once and make its sender ready again).
    fn start_ready(&mut self, tree: &TreeView<'_>, boxes: &mut dyn Mailboxes) {
        while let Some(from) = self.ready.pop() {
            let next = self.next_batch(from);
            match next.first() {
                Some(q) => {
                    let reliable = q.reliable;
                    self.start_send(tree, from, next, boxes);
                    let held = self.walks.values().any(|w| w.holds == Some(from));
                    if !reliable || !held {
                        // Nothing of `from` in flight holds the rest back.
                        self.ready.push(from);
                    }
                }
                None => {
                    self.busy.remove(&from);
                }
            }
        }
    }

    /// Sends the parts reliable walk `token` still waits for again, each straight
    /// to the agent that owes it.
    fn resend(
        &mut self,
        tree: &TreeView<'_>,
        token: u64,
        (target, carry): (Target, Carry),
        boxes: &mut dyn Mailboxes,
    ) {
        let Some((walks, hosts)) = self.walks.get(&token).map(|w| w.progress.awaited_parts())
        else {
            return;
        };
        let (origin, clock) = (self.me, self.clock);
        for (level, leader) in walks {
            if leader == self.me {
                self.on_walk(
                    tree,
                    token,
                    origin,
                    level,
                    target.clone(),
                    carry.clone(),
                    boxes,
                );
            } else {
                let (target, carry) = (target.clone(), carry.clone());
                let msg = FanoutMsg::Walk {
                    token,
                    origin,
                    level,
                    target,
                    carry,
                    clock,
                };
                self.send_msg(leader, msg);
            }
        }
        for host in hosts {
            if host == self.me {
                self.on_visit(tree, token, origin, &target, carry.clone(), boxes);
            } else {
                let (target, carry) = (target.clone(), carry.clone());
                let msg = FanoutMsg::Visit {
                    token,
                    origin,
                    target,
                    carry,
                    clock,
                };
                self.send_msg(host, msg);
            }
        }
    }

    /// Starts fetching `target`'s member list (answered as [`FanOut::Listed`]);
    /// returns the walk's token.
    pub fn start_list_walk(
        &mut self,
        now: Time,
        tree: &TreeView<'_>,
        target: Target,
        boxes: &mut dyn Mailboxes,
    ) -> u64 {
        let purpose = Purpose::List(target.clone());
        self.start_walk(now, tree, purpose, None, target, Carry::List, boxes)
    }

    /// Starts a walk; `holds`: it is a reliable send of that sender.
    #[allow(clippy::too_many_arguments)]
    fn start_walk(
        &mut self,
        now: Time,
        tree: &TreeView<'_>,
        purpose: Purpose,
        holds: Option<Pid>,
        target: Target,
        carry: Carry,
        boxes: &mut dyn Mailboxes,
    ) -> u64 {
        self.now = now;
        let view = tree.group(0).map(|g| g.view());
        let (level, root) = match view {
            Some(v) => match v.ancestors.last() {
                Some(root) => (u8::try_from(v.ancestors.len()).unwrap_or(MAX_LEVEL), *root),
                None => (0, v.leader),
            },
            None => (0, self.me),
        };
        self.next_token += 1;
        let token = self.next_token;
        let deadline = now + self.walk_timeout;
        let gap = self.first_gap();
        let timer = if holds.is_some() {
            (now + gap).min(deadline)
        } else {
            deadline
        };
        let resend = holds.map(|_| (target.clone(), carry.clone()));
        self.walks.insert(
            token,
            Walk {
                purpose,
                deadline,
                timer,
                started: now,
                gap,
                resent: false,
                heard: None,
                resend,
                holds,
                progress: WalkProgress::new(level, root),
                reached: 0,
                missed: Missed::default(),
                members: Vec::new(),
            },
        );
        self.timers.insert((timer, token));
        let origin = self.me;
        // This host's own members first, whatever the leaders' summaries say of it
        // yet (a process started or a member joined a moment ago is in its own
        // filter at once, in its leader's only with its next beat). A later visit
        // through the tree is a repeat: not delivered again, its answer not counted.
        if self.own.may_contain(&target) {
            if let Some(w) = self.walks.get_mut(&token) {
                w.progress.visiting(origin);
            }
            self.on_visit(tree, token, origin, &target, carry.clone(), boxes);
        }
        if root == self.me {
            self.on_walk(tree, token, origin, level, target, carry, boxes);
        } else {
            let clock = self.clock;
            self.send_msg(
                root,
                FanoutMsg::Walk {
                    token,
                    origin,
                    level,
                    target,
                    carry,
                    clock,
                },
            );
        }
        token
    }

    /// A message from `from` (validated).
    pub fn handle_message(
        &mut self,
        now: Time,
        from: NodeId,
        msg: FanoutMsg,
        tree: &TreeView<'_>,
        boxes: &mut dyn Mailboxes,
    ) {
        self.now = now;
        match msg {
            FanoutMsg::Walk {
                token,
                origin,
                level,
                target,
                carry,
                clock,
            } => {
                self.clock = self.clock.max(clock);
                self.on_walk(tree, token, origin, level, target, carry, boxes);
            }
            FanoutMsg::Visit {
                token,
                origin,
                target,
                carry,
                clock,
            } => {
                self.clock = self.clock.max(clock);
                self.on_visit(tree, token, origin, &target, carry, boxes);
            }
            FanoutMsg::Expect {
                token,
                level,
                members,
            } => self.on_expect(from, token, level, &members),
            FanoutMsg::Joined { level, via, target } => {
                let leads = tree
                    .group(level)
                    .is_some_and(|g| g.led_by_me() && g.view().contains(via));
                if leads {
                    self.pin(tree, level, via, target);
                }
            }
            FanoutMsg::Answer {
                token,
                reached,
                missed,
                members,
                parts,
                clock,
            } => {
                self.clock = self.clock.max(clock);
                self.on_answer(from, token, (reached, missed), members, parts);
            }
        }
        self.start_ready(tree, boxes);
    }

    /// A leader walks its group at `level` for `origin`.
    #[allow(clippy::too_many_arguments)]
    fn on_walk(
        &mut self,
        tree: &TreeView<'_>,
        token: u64,
        origin: NodeId,
        level: u8,
        target: Target,
        carry: Carry,
        boxes: &mut dyn Mailboxes,
    ) {
        // A stale walk (this agent no longer leads that group) is not answered: the
        // origin counts it unanswered at its deadline.
        let Some(seat) = tree.group(level).filter(|s| s.led_by_me()) else {
            if level == 0 && !tree.in_tree() && origin == self.me {
                // Outside any tree an agent is a group of one.
                self.expect(origin, token, 0, vec![self.me]);
                self.on_visit(tree, token, origin, &target, carry, boxes);
            }
            return;
        };
        let members = tree.members_to_walk(
            seat,
            level,
            || self.own_filter(),
            filter_of,
            |m, filter| {
                filter.is_none_or(|f| f.may_contain(&target))
                    || self
                        .pins
                        .get(&(level, m, target.clone()))
                        .is_some_and(|until| *until > self.now)
            },
        );
        self.expect(origin, token, level, members.clone());
        let clock = self.clock;
        for m in members {
            match (level, m == self.me) {
                (0, true) => self.on_visit(tree, token, origin, &target, carry.clone(), boxes),
                (0, false) => self.send_msg(
                    m,
                    FanoutMsg::Visit {
                        token,
                        origin,
                        target: target.clone(),
                        carry: carry.clone(),
                        clock,
                    },
                ),
                (_, true) => self.on_walk(
                    tree,
                    token,
                    origin,
                    level - 1,
                    target.clone(),
                    carry.clone(),
                    boxes,
                ),
                (_, false) => self.send_msg(
                    m,
                    FanoutMsg::Walk {
                        token,
                        origin,
                        level: level - 1,
                        target: target.clone(),
                        carry: carry.clone(),
                        clock,
                    },
                ),
            }
        }
    }

    fn expect(&mut self, origin: NodeId, token: u64, level: u8, members: Vec<NodeId>) {
        if origin == self.me {
            let me = self.me;
            self.on_expect(me, token, level, &members);
        } else {
            self.send_msg(
                origin,
                FanoutMsg::Expect {
                    token,
                    level,
                    members,
                },
            );
        }
    }

    /// A host delivers to (or lists) its members of `target`, and answers `origin`.
    #[allow(clippy::too_many_arguments)]
    fn on_visit(
        &mut self,
        tree: &TreeView<'_>,
        token: u64,
        origin: NodeId,
        target: &Target,
        carry: Carry,
        boxes: &mut dyn Mailboxes,
    ) {
        let local: Vec<(Pid, u64)> = match target.kind {
            Kind::Tenant => self
                .procs
                .get(&target.tenant)
                .map(|ps| ps.iter().map(|p| (*p, 0)).collect())
                .unwrap_or_default(),
            Kind::Group | Kind::Topic => self
                .members
                .get(target)
                .map(|m| m.iter().map(|(p, r)| (*p, *r)).collect())
                .unwrap_or_default(),
        };
        let mut parts: Vec<(u32, Missed, Vec<Member>)> = Vec::new();
        match carry {
            Carry::Data {
                from,
                seq,
                items,
                reliable,
            } => {
                let mut reached = 0u32;
                let mut missed = Missed::default();
                // Once per (sender, member): a repeat, or one that comes after a later
                // fan-out send of the same sender reached the member, is not delivered
                // to it (FIFO per sender and receiver, across targets). A reliable
                // one counts a repeat as reached, and is recorded only once in the
                // mailbox (so a full one gets it, or the rest of its batch, on the
                // next visit).
                let class = class_of(self.me, tree, from.origin());
                let last = seq.saturating_add(items.len() as u64).saturating_sub(1);
                let patience = self.walk_timeout / 2;
                let mut waiting = 0u32;
                for (pid, _) in local {
                    match self.order.check(from, pid, seq..=last) {
                        Admit::Late => missed.overtaken += 1,
                        Admit::Repeat => reached += u32::from(reliable),
                        Admit::From(next) => {
                            let mut put = Put::Delivered;
                            let fresh = (seq..).zip(&items).filter(|(s, _)| *s >= next);
                            for (s, data) in fresh {
                                put = boxes.deliver((target.tenant, from, pid), s, data, class);
                                if put == Put::Delivered || !reliable {
                                    self.order.record(from, pid, s);
                                }
                                if put != Put::Delivered {
                                    break;
                                }
                            }
                            reached += u32::from(put == Put::Delivered);
                            missed.full += u32::from(put == Put::Full);
                            if put == Put::Delivered {
                                self.stuck.remove(&pid);
                            } else if put == Put::Full && reliable {
                                let since = *self.stuck.entry(pid).or_insert(self.now);
                                waiting += u32::from(self.now.saturating_since(since) < patience);
                            }
                        }
                    }
                }
                if waiting > 0 {
                    // No answer: the origin visits again (back-pressure).
                    return;
                }
                parts.push((reached, missed, Vec::new()));
            }
            Carry::List => {
                let members: Vec<Member> = local
                    .into_iter()
                    .map(|(pid, rank)| Member {
                        pid,
                        rank,
                        depth: boxes.depth(pid),
                    })
                    .collect();
                parts.extend(
                    members
                        .chunks(MAX_ANSWER)
                        .take(usize::from(MAX_PARTS))
                        .map(|c| (0, Missed::default(), c.to_vec())),
                );
                if parts.is_empty() {
                    parts.push((0, Missed::default(), Vec::new()));
                }
            }
        }
        let n = u16::try_from(parts.len()).unwrap_or(MAX_PARTS);
        let clock = self.clock;
        for (reached, missed, members) in parts {
            if origin == self.me {
                let me = self.me;
                self.on_answer(me, token, (reached, missed), members, n);
            } else {
                self.send_msg(
                    origin,
                    FanoutMsg::Answer {
                        token,
                        reached,
                        missed,
                        members,
                        parts: n,
                        clock,
                    },
                );
            }
        }
    }

    fn on_expect(&mut self, from: NodeId, token: u64, level: u8, members: &[NodeId]) {
        let Some(w) = self.walks.get_mut(&token) else {
            return;
        };
        w.progress.announced(level, from, members);
        if !w.resent {
            w.heard = Some(self.now);
        }
        self.finish_if_done(token);
    }

    fn on_answer(
        &mut self,
        from: NodeId,
        token: u64,
        (reached, missed): (u32, Missed),
        members: Vec<Member>,
        parts: u16,
    ) {
        let Some(w) = self.walks.get_mut(&token) else {
            return;
        };
        if w.progress.has_answered(from) {
            return;
        }
        if !w.resent {
            w.heard = Some(self.now);
        }
        w.reached = w.reached.saturating_add(reached);
        w.missed = w.missed.plus(missed);
        // A host answers for its own processes only.
        let room = MAX_LIST_MEMBERS.saturating_sub(w.members.len());
        w.members.extend(
            members
                .into_iter()
                .filter(|m| m.pid.origin() == from)
                .take(room),
        );
        w.progress.part(from, parts);
        self.finish_if_done(token);
    }

    fn finish_if_done(&mut self, token: u64) {
        if self.walks.get(&token).is_some_and(|w| w.progress.done()) {
            self.finish(token, true);
        }
    }

    fn finish(&mut self, token: u64, complete: bool) {
        let Some(w) = self.walks.remove(&token) else {
            return;
        };
        self.timers.remove(&(w.timer, token));
        if let Some(from) = w.holds {
            self.ready.push(from);
            if let Some(heard) = w.heard {
                let took = heard.saturating_since(w.started);
                self.walk_time = Some(self.walk_time.map_or(took, |t| (t * 7 + took) / 8));
            }
        }
        match w.purpose {
            Purpose::Send(requests) => {
                let Missed { full, overtaken } = w.missed;
                let result = match (complete, w.reached) {
                    (false, _) => Err(SendError::Unknown),
                    (true, reached) if full > 0 || overtaken > 0 => Err(SendError::Partial {
                        reached,
                        full,
                        overtaken,
                    }),
                    (true, 0) => Err(SendError::NoMembers),
                    (true, reached) => Ok(SendReceipt { reached }),
                };
                for request in requests {
                    self.reply(request, ApiReply::Sent(result));
                }
            }
            Purpose::List(target) => {
                // An incomplete list is still the best there is, unless it is empty.
                let members = (complete || !w.members.is_empty()).then_some(w.members);
                self.out.push_back(FanOut::Listed {
                    token,
                    target,
                    members,
                });
            }
        }
    }
}

impl Mailboxes for super::post::Post {
    fn deliver(
        &mut self,
        key: (TenantId, Pid, Pid),
        seq: u64,
        data: &[u8],
        class: DistanceClass,
    ) -> Put {
        let body = nefele_api::messaging::MailBody::Data(data.to_vec());
        if self.deliver_local(key, seq, body, class) {
            Put::Delivered
        } else if self.tenant_of(key.2) == Some(key.0) {
            Put::Full
        } else {
            Put::Gone
        }
    }

    fn depth(&self, pid: Pid) -> u32 {
        super::post::Post::depth(self, pid).map_or(0, |d| u32::try_from(d).unwrap_or(u32::MAX))
    }
}

/// The distance class of agent `node` from agent `me` in `tree`.
#[must_use]
pub fn class_of(me: NodeId, tree: &TreeView<'_>, node: NodeId) -> DistanceClass {
    if node == me {
        DistanceClass::SameHost
    } else if tree
        .group(0)
        .is_some_and(|g| g.view().members.binary_search(&node).is_ok())
    {
        DistanceClass::SameGroup
    } else {
        DistanceClass::SameDc
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::federation::{FedBody, Federation, FederationConfig};
    use crate::ids::Incarnation;
    use crate::service::Payload;
    use rand::SeedableRng;

    /// Mailboxes that take everything for their live pids (but those in `full`,
    /// and all of them once `room` more deliveries were taken, if set).
    #[derive(Default)]
    struct Boxes {
        live: BTreeSet<Pid>,
        full: BTreeSet<Pid>,
        room: Option<usize>,
        got: Vec<(Pid, Pid, Vec<u8>)>,
    }

    impl Mailboxes for Boxes {
        fn deliver(
            &mut self,
            (_, from, to): (TenantId, Pid, Pid),
            _seq: u64,
            data: &[u8],
            _class: DistanceClass,
        ) -> Put {
            if self.full.contains(&to) || self.room == Some(0) {
                Put::Full
            } else if self.live.contains(&to) {
                self.room = self.room.map(|r| r - 1);
                self.got.push((to, from, data.to_vec()));
                Put::Delivered
            } else {
                Put::Gone
            }
        }
        fn depth(&self, _pid: Pid) -> u32 {
            3
        }
    }

    const RESEND: Duration = Duration::from_millis(100);

    fn pid(node: u32, seq: u64) -> Pid {
        Pid::new(NodeId(node), Incarnation(1), seq)
    }

    fn group(name: &str) -> Target {
        Target::group(TenantId(1), name)
    }

    /// Request `r` of pid (1, 1), one byte, sent reliably to group `target`.
    fn send_reliably(
        e: &mut Fanout,
        tree: &TreeView<'_>,
        boxes: &mut Boxes,
        at: Time,
        r: u64,
        target: &str,
    ) {
        let (to, from) = (group(target), pid(1, 1));
        let data = vec![r as u8];
        e.send_to_all(
            at,
            tree,
            RequestId(r),
            to,
            from,
            data,
            Delivery::Reliable,
            boxes,
        );
    }

    fn drain(e: &mut Fanout) -> Vec<FanOut> {
        std::iter::from_fn(|| e.poll()).collect()
    }

    fn filter_of_targets(targets: &[Target]) -> MemberFilter {
        let mut f = MemberFilter::EMPTY;
        targets.iter().for_each(|t| f.insert(t));
        f
    }

    /// Agent `me` leading a level-0 group with `members`, each of which beat with its
    /// member filter. The federation behind it is leaked.
    fn leader(me: NodeId, members: &[(NodeId, MemberFilter)]) -> TreeView<'static> {
        let rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let mut fed = Federation::new(me, FederationConfig::default(), rng, Payload::default());
        fed.boot(Time::ZERO);
        for ms in 1..=3 {
            fed.handle_timeout(Time::from_secs(ms));
        }
        let t = Time::from_secs(4);
        for (m, _) in members {
            fed.handle_message(
                t,
                *m,
                FedBody::Attach {
                    joiner: *m,
                    level: 0,
                    hops: 0,
                },
            );
        }
        let epoch = fed.seats()[0].view().epoch;
        for (m, f) in members {
            let summary = Box::new(Summary {
                agents: 1,
                group_size: 1,
                payload: Payload {
                    messaging: Some(MessagingSummary {
                        mailboxes: 1,
                        members: *f,
                    }),
                    ..Payload::default()
                },
            });
            fed.handle_message(
                t,
                *m,
                FedBody::Beat {
                    level: 0,
                    epoch,
                    summary,
                    departed: None,
                },
            );
        }
        TreeView::new(me, Some(Box::leak(Box::new(fed))))
    }

    #[test]
    fn memberships_are_bounded_and_go_with_their_process() {
        let mut e = Fanout::new(NodeId(1), Duration::from_secs(1), RESEND);
        let p = pid(1, 1);
        e.process_started(Time::ZERO, &TreeView::empty(NodeId(1)), p, TenantId(1));
        for i in 0..MAX_PER_PROCESS {
            assert_eq!(
                e.join(
                    Time::ZERO,
                    &TreeView::empty(NodeId(1)),
                    group(&format!("g{i}")),
                    p,
                    true
                ),
                Ok(())
            );
        }
        assert_eq!(
            e.join(
                Time::ZERO,
                &TreeView::empty(NodeId(1)),
                group("one-more"),
                p,
                true
            ),
            Err(GroupError::TooMany)
        );
        assert_eq!(
            e.join(Time::ZERO, &TreeView::empty(NodeId(1)), group(""), p, true),
            Err(GroupError::Invalid)
        );
        assert_eq!(
            e.join(
                Time::ZERO,
                &TreeView::empty(NodeId(1)),
                Target::tenant(TenantId(1)),
                p,
                true
            ),
            Err(GroupError::Invalid)
        );
        assert_eq!(
            e.join(
                Time::ZERO,
                &TreeView::empty(NodeId(1)),
                group("x"),
                pid(1, 2),
                false
            ),
            Err(GroupError::NoSuchProcess)
        );
        assert_eq!(e.leave(&group("x"), p), Err(GroupError::NotMember));
        assert!(e.invariants());
        assert!(e.own_filter().may_contain(&group("g7")));
        assert!(e.own_filter().may_contain(&Target::tenant(TenantId(1))));
        e.process_ended(p, TenantId(1));
        assert!(e.members.is_empty() && e.per_pid.is_empty() && e.procs.is_empty());
        assert!(!e.own_filter().may_contain(&group("g7")));
        assert!(e.invariants());
    }

    #[test]
    fn filters_never_miss_a_member_and_rarely_invent_one() {
        let mine: Vec<Target> = (0..100).map(|i| group(&format!("g{i}"))).collect();
        let f = filter_of_targets(&mine);
        assert!(mine.iter().all(|t| f.may_contain(t)));
        let false_positives = (0..10_000)
            .filter(|i| f.may_contain(&Target::topic(TenantId(2), &format!("x{i}"))))
            .count();
        assert!(false_positives < 400, "{false_positives} in 10,000");
        assert!(MemberFilter::ALL.may_contain(&Target::tenant(TenantId(9))));
        assert!(!MemberFilter::EMPTY.may_contain(&Target::tenant(TenantId(9))));
    }

    #[test]
    fn alone_a_multicast_reaches_each_local_member_once_and_says_how_many() {
        let me = NodeId(1);
        let tree = TreeView::empty(me);
        let mut e = Fanout::new(me, Duration::from_secs(1), RESEND);
        let mut boxes = Boxes::default();
        for s in 1..=3 {
            boxes.live.insert(pid(1, s));
            e.process_started(Time::ZERO, &tree, pid(1, s), TenantId(1));
        }
        e.join(
            Time::ZERO,
            &TreeView::empty(NodeId(1)),
            group("g"),
            pid(1, 1),
            true,
        )
        .unwrap();
        e.join(
            Time::ZERO,
            &TreeView::empty(NodeId(1)),
            group("g"),
            pid(1, 2),
            true,
        )
        .unwrap();
        e.join(
            Time::ZERO,
            &TreeView::empty(NodeId(1)),
            group("h"),
            pid(1, 3),
            true,
        )
        .unwrap();
        e.send_to_all(
            Time::ZERO,
            &tree,
            RequestId(7),
            group("g"),
            pid(1, 3),
            b"hi".to_vec(),
            Delivery::AtMostOnce,
            &mut boxes,
        );
        assert_eq!(
            drain(&mut e),
            vec![FanOut::Reply(
                RequestId(7),
                ApiReply::Sent(Ok(SendReceipt { reached: 2 }))
            )]
        );
        assert_eq!(boxes.got.len(), 2);
        e.send_to_all(
            Time::ZERO,
            &tree,
            RequestId(8),
            group("nobody"),
            pid(1, 3),
            b"hi".to_vec(),
            Delivery::AtMostOnce,
            &mut boxes,
        );
        assert_eq!(
            drain(&mut e),
            vec![FanOut::Reply(
                RequestId(8),
                ApiReply::Sent(Err(SendError::NoMembers))
            )]
        );
        // Broadcast: every process of the tenant.
        e.send_to_all(
            Time::ZERO,
            &tree,
            RequestId(9),
            Target::tenant(TenantId(1)),
            pid(1, 3),
            vec![],
            Delivery::AtMostOnce,
            &mut boxes,
        );
        assert_eq!(
            drain(&mut e),
            vec![FanOut::Reply(
                RequestId(9),
                ApiReply::Sent(Ok(SendReceipt { reached: 3 }))
            )]
        );
        assert!(e.invariants());
    }

    /// A publication at most once that finds a subscriber's mailbox full is not
    /// answered with success: the publisher learns how many it reached and how
    /// many were full (before, it was told `reached: 1` and the full one lost it).
    #[test]
    fn a_full_subscriber_makes_the_publication_partial() {
        let me = NodeId(1);
        let tree = TreeView::empty(me);
        let mut e = Fanout::new(me, Duration::from_secs(1), RESEND);
        let mut boxes = Boxes::default();
        let topic = Target::topic(TenantId(1), "t");
        for s in 1..=2 {
            boxes.live.insert(pid(1, s));
            e.join(Time::ZERO, &tree, topic.clone(), pid(1, s), true)
                .unwrap();
        }
        boxes.full.insert(pid(1, 2));
        let publish = |e: &mut Fanout, boxes: &mut Boxes, r| {
            e.send_to_all(
                Time::ZERO,
                &tree,
                RequestId(r),
                topic.clone(),
                pid(1, 3),
                b"news".to_vec(),
                Delivery::AtMostOnce,
                boxes,
            );
            drain(e)
        };
        assert_eq!(
            publish(&mut e, &mut boxes, 1),
            vec![FanOut::Reply(
                RequestId(1),
                ApiReply::Sent(Err(SendError::Partial {
                    reached: 1,
                    full: 1,
                    overtaken: 0
                }))
            )]
        );
        boxes.full.insert(pid(1, 1));
        assert_eq!(
            publish(&mut e, &mut boxes, 2),
            vec![FanOut::Reply(
                RequestId(2),
                ApiReply::Sent(Err(SendError::Partial {
                    reached: 0,
                    full: 2,
                    overtaken: 0
                }))
            )],
            "not NoMembers: there are members, and their mailboxes are full"
        );
        boxes.full.clear();
        assert_eq!(
            publish(&mut e, &mut boxes, 3),
            vec![FanOut::Reply(
                RequestId(3),
                ApiReply::Sent(Ok(SendReceipt { reached: 2 }))
            )]
        );
        assert!(e.invariants());
    }

    #[test]
    fn a_host_delivers_a_repeated_or_late_publication_to_nobody() {
        let me = NodeId(1);
        let tree = TreeView::empty(me);
        let mut e = Fanout::new(me, Duration::from_secs(1), RESEND);
        let mut boxes = Boxes::default();
        boxes.live.insert(pid(1, 1));
        let topic = Target::topic(TenantId(1), "t");
        e.join(
            Time::ZERO,
            &TreeView::empty(NodeId(1)),
            topic.clone(),
            pid(1, 1),
            true,
        )
        .unwrap();
        let visit = |seq| FanoutMsg::Visit {
            token: 1,
            origin: NodeId(2),
            target: topic.clone(),
            carry: Carry::Data {
                from: pid(2, 1),
                seq,
                items: vec![vec![seq as u8]],
                reliable: false,
            },
            clock: 0,
        };
        for seq in [1, 3, 3, 2, 4] {
            e.handle_message(Time::ZERO, NodeId(2), visit(seq), &tree, &mut boxes);
        }
        let delivered: Vec<u8> = boxes.got.iter().map(|(_, _, d)| d[0]).collect();
        assert_eq!(delivered, vec![1, 3, 4]);
        let reached: Vec<u32> = drain(&mut e)
            .into_iter()
            .map(|o| match o {
                FanOut::Send(
                    NodeId(2),
                    FanoutMsg::Answer {
                        reached, parts: 1, ..
                    },
                ) => reached,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(reached, vec![1, 1, 0, 0, 1]);
    }

    #[test]
    fn a_peer_clock_at_its_maximum_does_not_overflow_the_next_join() {
        let me = NodeId(1);
        let tree = TreeView::empty(me);
        let mut e = Fanout::new(me, Duration::from_secs(1), RESEND);
        let mut boxes = Boxes::default();
        let topic = Target::topic(TenantId(1), "t");
        let visit = FanoutMsg::Visit {
            token: 1,
            origin: NodeId(2),
            target: topic.clone(),
            carry: Carry::Data {
                from: pid(2, 1),
                seq: 1,
                items: vec![vec![1]],
                reliable: false,
            },
            clock: u64::MAX,
        };
        e.handle_message(Time::ZERO, NodeId(2), visit, &tree, &mut boxes);
        e.join(Time::ZERO, &tree, topic, pid(1, 1), true).unwrap();
        assert_eq!(e.clock, u64::MAX, "the clock saturates");
    }

    #[test]
    fn a_leader_walks_only_the_members_whose_filters_may_hold_the_target() {
        let me = NodeId(1);
        let g = group("g");
        let tree = leader(
            me,
            &[
                (NodeId(2), filter_of_targets(std::slice::from_ref(&g))),
                (NodeId(3), MemberFilter::EMPTY),
                (NodeId(4), filter_of_targets(&[group("other")])),
            ],
        );
        assert!(
            tree.group(0)
                .is_some_and(|s| s.led_by_me() && s.view().members.len() == 4),
            "the test's leader"
        );
        let mut e = Fanout::new(me, Duration::from_secs(1), RESEND);
        let mut boxes = Boxes::default();
        let walk = FanoutMsg::Walk {
            token: 5,
            origin: NodeId(9),
            level: 0,
            target: g.clone(),
            carry: Carry::Data {
                from: pid(9, 1),
                seq: 1,
                items: vec![vec![1]],
                reliable: false,
            },
            clock: 0,
        };
        e.handle_message(Time::ZERO, NodeId(9), walk, &tree, &mut boxes);
        let out = drain(&mut e);
        let visited: Vec<NodeId> = out
            .iter()
            .filter_map(|o| match o {
                FanOut::Send(to, FanoutMsg::Visit { .. }) => Some(*to),
                _ => None,
            })
            .collect();
        assert_eq!(visited, vec![NodeId(2)], "{out:?}");
        assert!(out.contains(&FanOut::Send(
            NodeId(9),
            FanoutMsg::Expect {
                token: 5,
                level: 0,
                members: vec![NodeId(2)]
            }
        )));
    }

    #[test]
    fn a_join_is_walked_to_before_the_beats_carry_it() {
        // The joining host tells every leader above it which member leads down to it.
        let view = crate::federation::View {
            level: 0,
            leader: NodeId(2),
            epoch: 1,
            members: vec![NodeId(2), NodeId(3)],
            ancestors: vec![NodeId(4), NodeId(5)],
            heirs_above: Vec::new(),
        };
        let member = TreeView::member_of(NodeId(3), view);
        let mut host = Fanout::new(NodeId(3), Duration::from_secs(1), RESEND);
        host.join(Time::ZERO, &member, group("g"), pid(3, 1), true)
            .unwrap();
        host.join(Time::ZERO, &member, group("g"), pid(3, 2), true)
            .unwrap();
        let joined = |level, via| {
            FanOut::Send(
                NodeId(via),
                FanoutMsg::Joined {
                    level,
                    via: NodeId(via),
                    target: group("g"),
                },
            )
        };
        let want: Vec<FanOut> = [(0, 2, 3), (1, 4, 2), (2, 5, 4)]
            .into_iter()
            .map(|(level, to, via)| match joined(level, via) {
                FanOut::Send(_, m) => FanOut::Send(NodeId(to), m),
                other => other,
            })
            .collect();
        assert_eq!(
            drain(&mut host),
            want,
            "once per target, to each leader above"
        );
        // The leader, whose summary of n3 does not hold the target yet, visits it.
        let me = NodeId(1);
        let tree = leader(me, &[(NodeId(3), MemberFilter::EMPTY)]);
        let mut e = Fanout::new(me, Duration::from_secs(1), RESEND);
        let mut boxes = Boxes::default();
        let walk = || FanoutMsg::Walk {
            token: 5,
            origin: NodeId(9),
            level: 0,
            target: group("g"),
            carry: Carry::List,
            clock: 0,
        };
        let visited = |e: &mut Fanout| {
            drain(e)
                .into_iter()
                .filter(|o| matches!(o, FanOut::Send(NodeId(3), FanoutMsg::Visit { .. })))
                .count()
        };
        let t = Time::from_secs(5);
        e.handle_message(t, NodeId(9), walk(), &tree, &mut boxes);
        assert_eq!(visited(&mut e), 0);
        let joined = FanoutMsg::Joined {
            level: 0,
            via: NodeId(3),
            target: group("g"),
        };
        e.handle_message(t, NodeId(3), joined, &tree, &mut boxes);
        e.handle_message(t, NodeId(9), walk(), &tree, &mut boxes);
        assert_eq!(visited(&mut e), 1);
        // The pin ends once the beats have long had time to carry the target.
        let later = t + tree.period() * PIN_PERIODS;
        e.handle_message(later, NodeId(9), walk(), &tree, &mut boxes);
        assert_eq!(visited(&mut e), 0);
    }

    /// Agent n1, a member of a level-0 group led by n2 whose root is n3 (at level 1).
    fn member_of_n2_under_n3() -> (NodeId, TreeView<'static>) {
        let me = NodeId(1);
        let view = crate::federation::View {
            level: 0,
            leader: NodeId(2),
            epoch: 1,
            members: vec![NodeId(1), NodeId(2)],
            ancestors: vec![NodeId(3)],
            heirs_above: Vec::new(),
        };
        (me, TreeView::member_of(me, view))
    }

    #[test]
    fn the_origin_counts_answers_in_any_order_and_times_out_to_unknown() {
        let (me, tree) = member_of_n2_under_n3();
        let mut e = Fanout::new(me, Duration::from_secs(1), RESEND);
        let mut boxes = Boxes::default();
        e.send_to_all(
            Time::ZERO,
            &tree,
            RequestId(1),
            group("g"),
            pid(1, 1),
            vec![0],
            Delivery::AtMostOnce,
            &mut boxes,
        );
        let out = drain(&mut e);
        assert!(
            matches!(
                out.as_slice(),
                [FanOut::Send(
                    NodeId(3),
                    FanoutMsg::Walk {
                        token: 1,
                        level: 1,
                        ..
                    }
                )]
            ),
            "{out:?}"
        );
        let answer = |reached| FanoutMsg::Answer {
            token: 1,
            reached,
            missed: Missed::default(),
            members: vec![],
            parts: 1,
            clock: 0,
        };
        let expect = |level, members| FanoutMsg::Expect {
            token: 1,
            level,
            members,
        };
        // The hosts answer before the leaders announce them.
        e.handle_message(Time::ZERO, NodeId(5), answer(2), &tree, &mut boxes);
        e.handle_message(
            Time::ZERO,
            NodeId(3),
            expect(1, vec![NodeId(4)]),
            &tree,
            &mut boxes,
        );
        e.handle_message(Time::ZERO, NodeId(6), answer(1), &tree, &mut boxes);
        assert!(drain(&mut e).is_empty());
        e.handle_message(
            Time::ZERO,
            NodeId(4),
            expect(0, vec![NodeId(5), NodeId(6)]),
            &tree,
            &mut boxes,
        );
        assert_eq!(
            drain(&mut e),
            vec![FanOut::Reply(
                RequestId(1),
                ApiReply::Sent(Ok(SendReceipt { reached: 3 }))
            )]
        );
        // A walk whose parts never answer ends `Unknown` at its deadline.
        e.send_to_all(
            Time::ZERO,
            &tree,
            RequestId(2),
            group("g"),
            pid(1, 1),
            vec![0],
            Delivery::AtMostOnce,
            &mut boxes,
        );
        drain(&mut e);
        assert_eq!(e.next_timeout(), Some(Time::from_secs(1)));
        e.handle_timeout(Time::from_secs(1), &tree, &mut boxes);
        assert_eq!(
            drain(&mut e),
            vec![FanOut::Reply(
                RequestId(2),
                ApiReply::Sent(Err(SendError::Unknown))
            )]
        );
        assert!(e.invariants());
    }

    /// A reliable send's origin sends again only what it still waits for (here the
    /// visit whose answer was lost), straight to the host; the sender's next
    /// fan-out send waits until the reliable one ends, then goes with the next
    /// position.
    #[test]
    fn a_reliable_walk_sends_its_missing_parts_again_and_holds_the_senders_next_send() {
        let (me, tree) = member_of_n2_under_n3();
        let mut e = Fanout::new(me, Duration::from_secs(1), RESEND);
        let mut boxes = Boxes::default();
        let send = |e: &mut Fanout, boxes: &mut Boxes, r, delivery| {
            e.send_to_all(
                Time::ZERO,
                &tree,
                RequestId(r),
                group("g"),
                pid(1, 1),
                vec![r as u8],
                delivery,
                boxes,
            );
        };
        send(&mut e, &mut boxes, 1, Delivery::Reliable);
        assert_eq!(drain(&mut e).len(), 1, "the walk to the root");
        send(&mut e, &mut boxes, 2, Delivery::AtMostOnce);
        assert!(drain(&mut e).is_empty(), "the second send waits");
        let expect = |level, members| FanoutMsg::Expect {
            token: 1,
            level,
            members,
        };
        let answer = |token, reached| FanoutMsg::Answer {
            token,
            reached,
            missed: Missed::default(),
            members: vec![],
            parts: 1,
            clock: 0,
        };
        let t = Time::ZERO;
        e.handle_message(t, NodeId(3), expect(1, vec![NodeId(4)]), &tree, &mut boxes);
        let hosts = vec![NodeId(5), NodeId(6)];
        e.handle_message(t, NodeId(4), expect(0, hosts), &tree, &mut boxes);
        e.handle_message(t, NodeId(5), answer(1, 2), &tree, &mut boxes);
        assert!(drain(&mut e).is_empty());
        // n6's answer was lost: at the resend, n6 alone is visited again.
        assert_eq!(e.next_timeout(), Some(t + RESEND));
        e.handle_timeout(t + RESEND, &tree, &mut boxes);
        let out = drain(&mut e);
        assert!(
            matches!(
                out.as_slice(),
                [FanOut::Send(
                    NodeId(6),
                    FanoutMsg::Visit {
                        token: 1,
                        carry: Carry::Data {
                            seq: 1,
                            reliable: true,
                            ..
                        },
                        ..
                    }
                )]
            ),
            "{out:?}"
        );
        e.handle_message(t + RESEND, NodeId(6), answer(1, 1), &tree, &mut boxes);
        let out = drain(&mut e);
        assert_eq!(
            out[0],
            FanOut::Reply(RequestId(1), ApiReply::Sent(Ok(SendReceipt { reached: 3 })))
        );
        assert!(
            matches!(
                &out[1..],
                [FanOut::Send(
                    NodeId(3),
                    FanoutMsg::Walk {
                        token: 2,
                        carry: Carry::Data {
                            seq: 2,
                            reliable: false,
                            ..
                        },
                        ..
                    }
                )]
            ),
            "{out:?}"
        );
        assert!(e.busy.is_empty() && e.invariants());
    }

    /// A reliable walk's first resend comes a few walk times after it started, not
    /// after `resend_every`, once the origin measured a walk (up to the last part
    /// it heard from before any resend); then at doubling gaps up to
    /// `resend_every`. Before, every lost message of a walk cost
    /// `resend_every`, and with a few percent loss nearly every walk of a large
    /// fan-out lost one: a sender's reliable sends (one walk at a time) fell behind
    /// a publisher's 20 to 50 a second and waited in its queue for seconds (the
    /// messaging swarm, seeds 10083 and 10084).
    #[test]
    fn a_reliable_walk_is_sent_again_after_a_few_walk_times() {
        let (me, tree) = member_of_n2_under_n3();
        let mut e = Fanout::new(me, Duration::from_secs(1), RESEND);
        let mut boxes = Boxes::default();
        let walk = |e: &mut Fanout, boxes: &mut Boxes, t: Time, token: u64| {
            e.send_to_all(
                t,
                &tree,
                RequestId(token),
                group("g"),
                pid(1, 1),
                vec![1],
                Delivery::Reliable,
                boxes,
            );
            let expect = |level, members| FanoutMsg::Expect {
                token,
                level,
                members,
            };
            e.handle_message(t, NodeId(3), expect(1, vec![NodeId(4)]), &tree, boxes);
            e.handle_message(t, NodeId(4), expect(0, vec![NodeId(5)]), &tree, boxes);
        };
        let answer = |token| FanoutMsg::Answer {
            token,
            reached: 1,
            missed: Missed::default(),
            members: vec![],
            parts: 1,
            clock: 0,
        };
        // Not measured yet: the first resend waits `resend_every`.
        walk(&mut e, &mut boxes, Time::ZERO, 1);
        assert_eq!(e.next_timeout(), Some(Time::ZERO + RESEND));
        let took = Duration::from_millis(2);
        e.handle_message(Time::ZERO + took, NodeId(5), answer(1), &tree, &mut boxes);
        drain(&mut e);
        // Measured (2 ms): n5's answer to the next walk is lost, and n5 is visited
        // again after 8 ms, then 16 ms later, ... at most `resend_every` apart.
        let t = Time::from_secs(1);
        walk(&mut e, &mut boxes, t, 2);
        drain(&mut e);
        let mut at = t;
        let mut gap = took * RESEND_FACTOR;
        for _ in 0..5 {
            at = at + gap;
            assert_eq!(e.next_timeout(), Some(at));
            e.handle_timeout(at, &tree, &mut boxes);
            let out = drain(&mut e);
            assert!(
                matches!(
                    out.as_slice(),
                    [FanOut::Send(NodeId(5), FanoutMsg::Visit { token: 2, .. })]
                ),
                "{out:?}"
            );
            gap = (gap * 2).min(RESEND);
        }
        e.handle_message(at, NodeId(5), answer(2), &tree, &mut boxes);
        assert_eq!(
            drain(&mut e),
            vec![FanOut::Reply(
                RequestId(2),
                ApiReply::Sent(Ok(SendReceipt { reached: 1 }))
            )]
        );
        // What a walk sent again heard before its first resend is the measure (the
        // expects, at once: the measure falls to 7/8 of 2 ms).
        assert_eq!(e.first_gap(), took * 7 / 8 * RESEND_FACTOR);
        assert!(e.invariants());
    }

    /// The engine of n1, alone, whose one member of group `g` (returned) has a
    /// full mailbox.
    fn a_member_with_a_full_mailbox() -> (Fanout, Boxes, TreeView<'static>, Pid) {
        let me = NodeId(1);
        let tree = TreeView::empty(me);
        let mut e = Fanout::new(me, Duration::from_secs(1), RESEND);
        let mut boxes = Boxes::default();
        let member = pid(1, 1);
        boxes.live.insert(member);
        boxes.full.insert(member);
        e.join(Time::ZERO, &tree, group("g"), member, true).unwrap();
        (e, boxes, tree, member)
    }

    /// n2's reliable visit of group `g`, token `seq`, carrying `item` at `seq`
    /// from its process 1.
    fn reliable_visit(seq: u64, item: Vec<u8>) -> FanoutMsg {
        FanoutMsg::Visit {
            token: seq,
            origin: NodeId(2),
            target: group("g"),
            carry: Carry::Data {
                from: pid(2, 1),
                seq,
                items: vec![item],
                reliable: true,
            },
            clock: 0,
        }
    }

    /// At a member's host, a reliable visit finding a full mailbox is not answered
    /// (so it comes again); once delivered, a repeat is answered as reached and not
    /// delivered again.
    #[test]
    fn a_reliable_visit_waits_for_room_and_a_repeat_counts_without_a_second_copy() {
        let (mut e, mut boxes, tree, _) = a_member_with_a_full_mailbox();
        let visit = reliable_visit(1, vec![7]);
        let reached = |e: &mut Fanout| -> Vec<u32> {
            drain(e)
                .into_iter()
                .map(|o| match o {
                    FanOut::Send(NodeId(2), FanoutMsg::Answer { reached, .. }) => reached,
                    other => panic!("{other:?}"),
                })
                .collect()
        };
        e.handle_message(Time::ZERO, NodeId(2), visit.clone(), &tree, &mut boxes);
        assert!(reached(&mut e).is_empty(), "no answer while full");
        boxes.full.clear();
        e.handle_message(Time::ZERO, NodeId(2), visit.clone(), &tree, &mut boxes);
        e.handle_message(Time::ZERO, NodeId(2), visit, &tree, &mut boxes);
        assert_eq!(reached(&mut e), vec![1, 1]);
        assert_eq!(boxes.got.len(), 1, "delivered once");
    }

    /// Regression (swarm seed 95728): a member whose mailbox stays full (its
    /// process stopped reading) holds a reliable visit's answer for half the walk
    /// timeout, then is answered missed (full); the next reliable visit finding it
    /// full is answered at once; once a delivery to it succeeds, a full mailbox
    /// holds the answer again. Before, every reliable send to it waited out its
    /// deadline and ended `Unknown`.
    #[test]
    fn a_member_full_for_half_the_walk_timeout_is_answered_missed() {
        let (mut e, mut boxes, tree, member) = a_member_with_a_full_mailbox();
        let answers = |e: &mut Fanout, at: u64, seq: u64, boxes: &mut Boxes| {
            let at = Time::from_millis(at);
            let visit = reliable_visit(seq, vec![seq as u8]);
            e.handle_message(at, NodeId(2), visit, &tree, boxes);
            drain(e)
                .into_iter()
                .map(|o| match o {
                    FanOut::Send(
                        NodeId(2),
                        FanoutMsg::Answer {
                            reached, missed, ..
                        },
                    ) => (reached, missed.full),
                    other => panic!("{other:?}"),
                })
                .collect::<Vec<_>>()
        };
        assert!(
            answers(&mut e, 0, 1, &mut boxes).is_empty(),
            "waits for room"
        );
        assert!(
            answers(&mut e, 499, 1, &mut boxes).is_empty(),
            "still waits"
        );
        assert_eq!(answers(&mut e, 500, 1, &mut boxes), [(0, 1)], "missed");
        assert_eq!(answers(&mut e, 600, 2, &mut boxes), [(0, 1)], "at once");
        boxes.full.clear();
        assert_eq!(answers(&mut e, 700, 3, &mut boxes), [(1, 0)], "read again");
        boxes.full.insert(member);
        assert!(
            answers(&mut e, 800, 4, &mut boxes).is_empty(),
            "waits again"
        );
        assert_eq!(boxes.got, [(member, pid(2, 1), vec![3])]);
    }

    /// The bug swarm seed 40211 found: a reliable publisher faster than its walks
    /// (5% loss, so nearly every walk of a wide topic waits for a resend) queued
    /// its sends one walk each, and they waited seconds for their turn. The
    /// reliable sends waiting for one target now go as one batch, each answered
    /// with the walk's result; a send to another target waits for the next walk.
    #[test]
    fn reliable_sends_waiting_for_one_target_go_as_one_batch() {
        let (me, tree) = member_of_n2_under_n3();
        let mut e = Fanout::new(me, Duration::from_secs(1), RESEND);
        let mut boxes = Boxes::default();
        let mut send = |e: &mut Fanout, r: u64, target: &str| {
            send_reliably(e, &tree, &mut boxes, Time::ZERO, r, target);
        };
        send(&mut e, 1, "g");
        assert_eq!(drain(&mut e).len(), 1, "the first walk");
        for r in 2..=4 {
            send(&mut e, r, "g");
        }
        send(&mut e, 5, "h");
        assert!(drain(&mut e).is_empty(), "the rest wait");
        // Walk 1 ends (no member anywhere), and walk 2 carries sends 2 to 4.
        let t = Time::ZERO;
        let expect = |token| FanoutMsg::Expect {
            token,
            level: 1,
            members: vec![],
        };
        e.handle_message(t, NodeId(3), expect(1), &tree, &mut boxes);
        let out = drain(&mut e);
        assert_eq!(
            out[0],
            FanOut::Reply(RequestId(1), ApiReply::Sent(Err(SendError::NoMembers)))
        );
        match &out[1..] {
            [FanOut::Send(
                NodeId(3),
                FanoutMsg::Walk {
                    token: 2,
                    target,
                    carry:
                        Carry::Data {
                            seq: 2,
                            items,
                            reliable: true,
                            ..
                        },
                    ..
                },
            )] => {
                assert_eq!(target, &group("g"));
                assert_eq!(items, &vec![vec![2], vec![3], vec![4]]);
            }
            other => panic!("{other:?}"),
        }
        // Walk 2 ends: each of its sends is answered, then send 5 goes, at 5.
        e.handle_message(t, NodeId(3), expect(2), &tree, &mut boxes);
        let out = drain(&mut e);
        let replies: Vec<_> = out
            .iter()
            .filter_map(|o| match o {
                FanOut::Reply(r, _) => Some(r.0),
                _ => None,
            })
            .collect();
        assert_eq!(replies, vec![2, 3, 4]);
        assert!(
            matches!(
                out.last(),
                Some(FanOut::Send(
                    NodeId(3),
                    FanoutMsg::Walk {
                        token: 3,
                        carry: Carry::Data { seq: 5, .. },
                        ..
                    }
                ))
            ),
            "{out:?}"
        );
        assert!(e.invariants());
    }

    /// Regression (swarm seed 98699, `messaging.fate_reported`): a send that has
    /// waited a walk time behind its sender's reliable walk fails `Full` when its
    /// turn comes; a younger one starts. Before, a client sending to four patterns
    /// of a group (no batching: four targets) under 5% loss queued its sends for
    /// seconds.
    #[test]
    fn a_send_that_waited_a_walk_time_for_its_turn_fails_full() {
        let (me, tree) = member_of_n2_under_n3();
        let walk_timeout = Duration::from_secs(1);
        let mut e = Fanout::new(me, walk_timeout, RESEND);
        let mut boxes = Boxes::default();
        let mut send = |e: &mut Fanout, at: Time, r: u64, target: &str| {
            send_reliably(e, &tree, &mut boxes, at, r, target);
        };
        send(&mut e, Time::ZERO, 1, "g");
        assert_eq!(drain(&mut e).len(), 1, "the first walk");
        send(&mut e, Time::ZERO, 2, "h");
        send(&mut e, Time::from_millis(600), 3, "k");
        assert!(drain(&mut e).is_empty(), "the rest wait");
        // Walk 1 ends a walk time after send 2 came: 2 fails, 3 starts.
        let expect = FanoutMsg::Expect {
            token: 1,
            level: 1,
            members: vec![],
        };
        e.handle_message(
            Time::ZERO + walk_timeout,
            NodeId(3),
            expect,
            &tree,
            &mut boxes,
        );
        let out = drain(&mut e);
        let replies: Vec<_> = out
            .iter()
            .filter_map(|o| match o {
                FanOut::Reply(r, ApiReply::Sent(result)) => Some((r.0, *result)),
                _ => None,
            })
            .collect();
        assert_eq!(
            replies,
            vec![(1, Err(SendError::NoMembers)), (2, Err(SendError::Full))]
        );
        assert!(
            matches!(
                out.last(),
                Some(FanOut::Send(NodeId(3), FanoutMsg::Walk { target, .. })) if *target == group("k")
            ),
            "{out:?}"
        );
        assert!(e.invariants());
    }

    /// A host puts a batch in each member's mailbox in order; a mailbox that fills
    /// part way gets the rest when the visit comes again, nothing twice.
    #[test]
    fn a_batch_visit_fills_mailboxes_in_order_and_goes_on_where_it_stopped() {
        let me = NodeId(1);
        let tree = TreeView::empty(me);
        let mut e = Fanout::new(me, Duration::from_secs(1), RESEND);
        let member = pid(1, 1);
        let mut boxes = Boxes {
            room: Some(2),
            ..Boxes::default()
        };
        boxes.live.insert(member);
        e.join(Time::ZERO, &tree, group("g"), member, true).unwrap();
        let visit = FanoutMsg::Visit {
            token: 1,
            origin: NodeId(2),
            target: group("g"),
            carry: Carry::Data {
                from: pid(2, 1),
                seq: 7,
                items: vec![vec![7], vec![8], vec![9]],
                reliable: true,
            },
            clock: 0,
        };
        e.handle_message(Time::ZERO, NodeId(2), visit.clone(), &tree, &mut boxes);
        assert!(drain(&mut e).is_empty(), "no answer while the rest waits");
        boxes.room = None;
        e.handle_message(Time::ZERO, NodeId(2), visit.clone(), &tree, &mut boxes);
        e.handle_message(Time::ZERO, NodeId(2), visit, &tree, &mut boxes);
        let got: Vec<_> = boxes.got.iter().map(|(_, _, d)| d[0]).collect();
        assert_eq!(got, vec![7, 8, 9], "in order, once each");
        let reached: Vec<_> = drain(&mut e)
            .into_iter()
            .map(|o| match o {
                FanOut::Send(NodeId(2), FanoutMsg::Answer { reached, .. }) => reached,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(reached, vec![1, 1], "the rest, then a repeat");
    }

    /// A peer's batch is bounded: not empty, at most `MAX_BATCH` messages and
    /// `MAX_DATA_BYTES` in all, and positions that do not overflow.
    #[test]
    fn a_peers_batch_out_of_bounds_is_rejected() {
        let walk = |seq: u64, items: Vec<Vec<u8>>| FanoutMsg::Walk {
            token: 1,
            origin: NodeId(2),
            level: 0,
            target: group("g"),
            carry: Carry::Data {
                from: pid(2, 1),
                seq,
                items,
                reliable: true,
            },
            clock: 0,
        };
        assert!(walk(1, vec![vec![0; 10]; MAX_BATCH]).validate().is_ok());
        assert!(walk(1, vec![]).validate().is_err());
        assert!(walk(1, vec![vec![0]; MAX_BATCH + 1]).validate().is_err());
        let half = vec![0; MAX_DATA_BYTES / 2 + 1];
        assert!(walk(1, vec![half.clone(), half]).validate().is_err());
        assert!(walk(u64::MAX, vec![vec![0]]).validate().is_err());
    }

    #[test]
    fn a_member_list_holds_each_hosts_own_members_with_rank_and_depth() {
        let me = NodeId(1);
        let tree = TreeView::empty(me);
        let mut e = Fanout::new(me, Duration::from_secs(1), RESEND);
        let mut boxes = Boxes::default();
        e.join(
            Time::ZERO,
            &TreeView::empty(NodeId(1)),
            group("g"),
            pid(1, 2),
            true,
        )
        .unwrap();
        e.join(
            Time::ZERO,
            &TreeView::empty(NodeId(1)),
            group("g"),
            pid(1, 1),
            true,
        )
        .unwrap();
        let token = e.start_list_walk(Time::ZERO, &tree, group("g"), &mut boxes);
        let out = drain(&mut e);
        let [FanOut::Listed {
            token: t,
            members: Some(members),
            ..
        }] = out.as_slice()
        else {
            panic!("{out:?}");
        };
        assert_eq!(*t, token);
        let mut got: Vec<(Pid, u64, u32)> =
            members.iter().map(|m| (m.pid, m.rank, m.depth)).collect();
        got.sort();
        assert_eq!(got, vec![(pid(1, 1), 2, 3), (pid(1, 2), 1, 3)]);
    }
}
