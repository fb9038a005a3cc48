//! Groups and broadcast: `join(group, pid)`, `leave`, and sends to a group by any
//! pattern, or to every process of the tenant.
//!
//! Memberships and the walk that reaches every member are the fan-out engine's
//! ([`Fanout`]; this part owns one, which also tracks the tenants' processes for
//! broadcast). Patterns:
//!
//! - **Multicast** and **broadcast** (every member, once): the fan-out walk; the data
//!   goes once down each tree edge towards subtrees whose filters may hold the
//!   target, and each member host delivers to its own members.
//! - **Anycast, round-robin, least-loaded, failover** (one member): the sender's
//!   agent keeps the group's member list (fetched by the same walk, each host
//!   answering with its members, their ranks and mailbox depths; fetched again after
//!   [`LIST_TTL`], the old list serving meanwhile), picks one member and hands the
//!   send to the point-to-point layer as a pid send: one hop, nothing passes through
//!   a leader. Anycast takes the nearest distance class, then the shallowest
//!   mailbox; least-loaded the shallowest mailbox (its reported depth plus what this
//!   agent sent it since); round-robin each member in turn (pid order); failover the
//!   lowest rank (join order). A member known gone (its process ended here or was
//!   reported lost, its host was removed, or a fetch no longer lists it) leaves the
//!   list, so the next in rank takes over.
//!
//! Invariants: the lists are bounded ([`MAX_LISTS`], members and waiters too); a
//! list waits for at most one fetch at a time.

use super::fanout::{class_of, FanOut, Fanout, FanoutMsg, Member, Target, MAX_LIST_MEMBERS};
use super::msg::MessagingMsg;
use super::post::{Post, ReplyTo};
use super::Part;
use crate::ids::{NodeId, Pid};
use crate::service::{Context, ServiceEvent};
use crate::time::Time;
use crate::wire::Reject;
use nefele_api::calls::{ApiCall, ApiReply, RequestId};
use nefele_api::messaging::{
    Delivery, Dest, DistanceClass, MailBody, Pattern, SendError, SendReceipt,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// The most member lists a sender's agent keeps (the one fetched longest ago goes).
pub const MAX_LISTS: usize = 1024;
/// The most sends waiting for one list's first fetch.
pub const MAX_LIST_WAITERS: usize = 256;
/// How long a member list is used before it is fetched again.
pub const LIST_TTL: Duration = Duration::from_millis(500);
/// The most one-member sends an agent follows to try another member if the first
/// fails (beyond it, a send's failure goes straight to its client).
pub const MAX_FOLLOWED: usize = 1024;

/// Groups' wire sub-message.
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupsMsg {
    /// A step of a multicast, broadcast or member-list walk.
    Fanout(FanoutMsg),
}

/// Checks what a peer sent.
pub(super) fn validate(msg: &GroupsMsg) -> Result<(), Reject> {
    match msg {
        GroupsMsg::Fanout(m) => m.validate(),
    }
}

/// A short, stable name of the kind of `msg` (the `_data` kinds carry application
/// data and may exceed the control MTU).
pub(super) fn kind(msg: &GroupsMsg) -> &'static str {
    match msg {
        GroupsMsg::Fanout(m) => match m.kind() {
            "walk_data" => "groups_walk_data",
            "visit_data" => "groups_visit_data",
            "walk" => "groups_walk",
            "visit" => "groups_visit",
            "expect" => "groups_expect",
            "joined" => "groups_joined",
            _ => "groups_answer",
        },
    }
}

/// A group's members as a sender's agent knows them.
#[derive(Debug)]
struct List {
    members: Vec<Member>,
    /// When it was fetched (`None`: never yet).
    fetched: Option<Time>,
    /// The walk fetching it, if one runs.
    fetching: Option<u64>,
    /// Sends waiting for the first fetch.
    waiters: Vec<(RequestId, ApiCall)>,
    /// Round-robin position.
    turn: u64,
    /// Messages sent to each member since the fetch (added to its reported depth).
    sent: BTreeMap<Pid, u32>,
}

impl List {
    fn new() -> Self {
        List {
            members: Vec::new(),
            fetched: None,
            fetching: None,
            waiters: Vec::new(),
            turn: 0,
            sent: BTreeMap::new(),
        }
    }
}

/// A one-member send in flight, kept to try another member if it fails.
#[derive(Debug)]
struct Followed {
    request: RequestId,
    target: Target,
    pattern: Pattern,
    tenant: nefele_api::ids::TenantId,
    from: Pid,
    data: Vec<u8>,
    delivery: Delivery,
    block: bool,
    /// The members tried so far.
    tried: Vec<Pid>,
}

/// This agent's groups: memberships (in the engine) and member lists.
#[derive(Debug)]
pub struct Groups {
    me: NodeId,
    engine: Fanout,
    lists: BTreeMap<Target, List>,
    /// One-member sends in flight, by their tag at the point-to-point layer.
    followed: BTreeMap<u64, Followed>,
    next_tag: u64,
}

impl Groups {
    /// The groups of agent `me`; a multicast waits `fate_timeout` for its parts.
    #[must_use]
    pub fn new(me: NodeId, fate_timeout: Duration, resend_every: Duration) -> Self {
        Groups {
            me,
            engine: Fanout::new(me, fate_timeout, resend_every),
            lists: BTreeMap::new(),
            followed: BTreeMap::new(),
            next_tag: 0,
        }
    }

    /// The engine (memberships, filter), read-only.
    #[must_use]
    pub fn engine(&self) -> &Fanout {
        &self.engine
    }

    /// Moves the engine's outputs to `post`.
    fn flush(&mut self, now: Time, post: &mut Post, ctx: &Context<'_>) {
        while let Some(out) = self.engine.poll() {
            match out {
                FanOut::Send(to, m) => {
                    post.send_msg(to, MessagingMsg::Groups(GroupsMsg::Fanout(m)))
                }
                FanOut::Reply(request, reply) => post.reply(request, reply),
                FanOut::Listed {
                    token,
                    target,
                    members,
                } => self.listed(now, token, &target, members, post, ctx),
            }
        }
    }

    /// A one-member send: pick from the list (fetching it first, or again, if need be).
    fn send_one(
        &mut self,
        now: Time,
        request: RequestId,
        call: ApiCall,
        target: Target,
        post: &mut Post,
        ctx: &Context<'_>,
    ) {
        if !self.lists.contains_key(&target) {
            if self.lists.len() >= MAX_LISTS {
                let oldest = self
                    .lists
                    .iter()
                    .filter(|(_, l)| l.waiters.is_empty() && l.fetching.is_none())
                    .min_by_key(|(t, l)| (l.fetched, (*t).clone()))
                    .map(|(t, _)| t.clone());
                let Some(oldest) = oldest else {
                    return post.reply(request, ApiReply::Sent(Err(SendError::Full)));
                };
                self.lists.remove(&oldest);
            }
            self.lists.insert(target.clone(), List::new());
        }
        let Some(list) = self.lists.get_mut(&target) else {
            return;
        };
        let stale = list
            .fetched
            .is_none_or(|t| now.saturating_since(t) >= LIST_TTL);
        let now_or_later = if list.fetched.is_some() {
            Some(call)
        } else if list.waiters.len() < MAX_LIST_WAITERS {
            list.waiters.push((request, call));
            None
        } else {
            return post.reply(request, ApiReply::Sent(Err(SendError::Full)));
        };
        let fetch = stale && list.fetching.is_none();
        if fetch {
            let token = self
                .engine
                .start_list_walk(now, &ctx.tree, target.clone(), post);
            if let Some(l) = self.lists.get_mut(&target) {
                l.fetching = Some(token);
            }
        }
        if let Some(call) = now_or_later {
            self.pick_and_send(&target, request, call, post, ctx);
        }
    }

    /// The fetch `token` of `target`'s list ended.
    fn listed(
        &mut self,
        now: Time,
        token: u64,
        target: &Target,
        members: Option<Vec<Member>>,
        post: &mut Post,
        ctx: &Context<'_>,
    ) {
        let Some(l) = self
            .lists
            .get_mut(target)
            .filter(|l| l.fetching == Some(token))
        else {
            return;
        };
        l.fetching = None;
        if let Some(mut members) = members {
            members.sort_by_key(|m| m.pid);
            members.dedup_by_key(|m| m.pid);
            members.truncate(MAX_LIST_MEMBERS);
            l.members = members;
            l.sent.clear();
        }
        l.fetched = Some(now);
        for (request, call) in std::mem::take(&mut l.waiters) {
            self.pick_and_send(target, request, call, post, ctx);
        }
    }

    fn pick_and_send(
        &mut self,
        target: &Target,
        request: RequestId,
        call: ApiCall,
        post: &mut Post,
        ctx: &Context<'_>,
    ) {
        let ApiCall::Send {
            tenant,
            from,
            to: Dest::Group { pattern, .. },
            data,
            delivery,
            block,
        } = call
        else {
            debug_assert!(false, "pick_and_send takes group sends");
            return;
        };
        let f = Followed {
            request,
            target: target.clone(),
            pattern,
            tenant,
            from,
            data,
            delivery,
            block,
            tried: Vec::new(),
        };
        self.try_next(f, SendError::NoMembers, post, ctx);
    }

    /// Sends `f` to the member its pattern picks among those not tried yet, or
    /// answers `last` (the failure of the previous try) if none is left.
    fn try_next(&mut self, mut f: Followed, last: SendError, post: &mut Post, ctx: &Context<'_>) {
        let me = self.me;
        let chosen = self
            .lists
            .get_mut(&f.target)
            .and_then(|l| pick(l, f.pattern, &f.tried, |host| class_of(me, &ctx.tree, host)));
        let Some(pid) = chosen else {
            return post.reply(f.request, ApiReply::Sent(Err(last)));
        };
        if let Some(l) = self.lists.get_mut(&f.target) {
            *l.sent.entry(pid).or_default() += 1;
        }
        f.tried.push(pid);
        let body = MailBody::Data(f.data.clone());
        let key = (f.tenant, f.from, pid);
        if self.followed.len() < MAX_FOLLOWED {
            self.next_tag += 1;
            let tag = self.next_tag;
            let (delivery, block) = (f.delivery, f.block);
            self.followed.insert(tag, f);
            post.send(key, body, delivery, block, ReplyTo::Tag(tag));
        } else {
            post.send(key, body, f.delivery, f.block, ReplyTo::Api(f.request));
        }
    }

    /// The fate of the one-member send `tag`: answered, or tried on the next member
    /// if the one tried is gone (or, for failover, its fate is unknown: its host may
    /// have crashed).
    pub fn on_outcome(
        &mut self,
        _now: Time,
        tag: u64,
        result: Result<(), SendError>,
        post: &mut Post,
        ctx: &Context<'_>,
    ) {
        let Some(f) = self.followed.remove(&tag) else {
            return;
        };
        match result {
            Ok(()) => post.reply(f.request, ApiReply::Sent(Ok(SendReceipt { reached: 1 }))),
            Err(e @ (SendError::NoSuchProcess | SendError::Exited | SendError::Lost)) => {
                if let Some(gone) = f.tried.last().copied() {
                    self.forget(|p| p == gone);
                }
                self.try_next(f, e, post, ctx);
            }
            Err(SendError::Unknown) if f.pattern == Pattern::Failover => {
                self.try_next(f, SendError::Unknown, post, ctx);
            }
            Err(e) => post.reply(f.request, ApiReply::Sent(Err(e))),
        }
    }

    /// Members that are known gone leave every list.
    fn forget(&mut self, gone: impl Fn(Pid) -> bool) {
        for l in self.lists.values_mut() {
            l.members.retain(|m| !gone(m.pid));
        }
    }

    /// The module's invariants.
    #[must_use]
    pub fn invariants(&self) -> bool {
        self.engine.invariants()
            && self.lists.len() <= MAX_LISTS
            && self
                .lists
                .values()
                .all(|l| l.members.len() <= MAX_LIST_MEMBERS && l.waiters.len() <= MAX_LIST_WAITERS)
    }
}

impl Part for Groups {
    type Msg = GroupsMsg;

    fn handle_message(
        &mut self,
        now: Time,
        from: NodeId,
        msg: GroupsMsg,
        post: &mut Post,
        ctx: &Context<'_>,
    ) {
        let GroupsMsg::Fanout(m) = msg;
        self.engine.handle_message(now, from, m, &ctx.tree, post);
        self.flush(now, post, ctx);
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
            ApiCall::Join {
                tenant,
                ref group,
                pid,
            }
            | ApiCall::Leave {
                tenant,
                ref group,
                pid,
            } => {
                let join = matches!(call, ApiCall::Join { .. });
                let target = Target::group(tenant, group);
                self.engine
                    .serve_membership(now, &ctx.tree, request, target, pid, join, post);
            }
            ApiCall::Send {
                tenant,
                from,
                ref to,
                ref data,
                delivery,
                ..
            } => {
                let target = match to {
                    Dest::Group { group, .. } => Target::group(tenant, group),
                    _ => Target::tenant(tenant),
                };
                let multicast = matches!(
                    to,
                    Dest::Broadcast
                        | Dest::Group {
                            pattern: Pattern::Multicast,
                            ..
                        }
                );
                if let Err(e) = post.check_send(tenant, from, data.len()) {
                    post.reply(request, ApiReply::Sent(Err(e)));
                } else if !target.valid() {
                    post.reply(request, ApiReply::Sent(Err(SendError::NoMembers)));
                } else if multicast {
                    let data = data.clone();
                    self.engine
                        .send_to_all(now, &ctx.tree, request, target, from, data, delivery, post);
                } else {
                    self.send_one(now, request, call, target, post, ctx);
                }
            }
            other => post.reply(request, super::unsupported(&other)),
        }
        self.flush(now, post, ctx);
    }

    fn handle_event(
        &mut self,
        now: Time,
        event: &ServiceEvent,
        post: &mut Post,
        ctx: &Context<'_>,
    ) {
        match *event {
            ServiceEvent::ProcessStarted { pid, tenant, .. } => {
                self.engine.process_started(now, &ctx.tree, pid, tenant)
            }
            ServiceEvent::ProcessExited { pid, tenant, .. } => {
                self.engine.process_ended(pid, tenant);
                self.forget(|p| p == pid);
            }
            ServiceEvent::ProcessLost { pid, .. } => self.forget(|p| p == pid),
            ServiceEvent::HostRemoved { node, .. } => self.forget(|p| p.origin() == node),
            ServiceEvent::Host(_)
            | ServiceEvent::GroupChanged { .. }
            | ServiceEvent::PeerRestarted { .. }
            | ServiceEvent::NamesHeld { .. }
            | ServiceEvent::Answered { .. } => {}
        }
        self.flush(now, post, ctx);
    }

    fn handle_timeout(&mut self, now: Time, post: &mut Post, ctx: &Context<'_>) {
        self.engine.handle_timeout(now, &ctx.tree, post);
        self.flush(now, post, ctx);
    }

    fn next_timeout(&self) -> Option<Time> {
        self.engine.next_timeout()
    }
}

/// Nearer classes rank lower.
fn rank_of(class: DistanceClass) -> u8 {
    match class {
        DistanceClass::SameHost => 0,
        DistanceClass::SameGroup => 1,
        DistanceClass::SameDc => 2,
        DistanceClass::External => 3,
    }
}

/// The member of `list`, other than `exclude`, that `pattern` picks (`None`: none is
/// left).
fn pick(
    list: &mut List,
    pattern: Pattern,
    exclude: &[Pid],
    class: impl Fn(NodeId) -> DistanceClass,
) -> Option<Pid> {
    let load = |m: &Member| {
        m.depth
            .saturating_add(list.sent.get(&m.pid).copied().unwrap_or(0))
    };
    let members: Vec<&Member> = list
        .members
        .iter()
        .filter(|m| !exclude.contains(&m.pid))
        .collect();
    let chosen = match pattern {
        Pattern::RoundRobin => {
            if members.is_empty() {
                None
            } else {
                let i = (list.turn % members.len() as u64) as usize;
                list.turn = list.turn.wrapping_add(1);
                members.get(i).copied()
            }
        }
        Pattern::LeastLoaded => members.iter().copied().min_by_key(|m| (load(m), m.pid)),
        Pattern::Anycast => members
            .iter()
            .copied()
            .min_by_key(|m| (rank_of(class(m.pid.origin())), load(m), m.pid)),
        Pattern::Failover => members.iter().copied().min_by_key(|m| (m.rank, m.pid)),
        Pattern::Multicast => None,
    };
    chosen.map(|m| m.pid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::Incarnation;
    use proptest::prelude::*;

    fn pid(node: u32, seq: u64) -> Pid {
        Pid::new(NodeId(node), Incarnation(1), seq)
    }

    fn list(members: Vec<Member>) -> List {
        List {
            members,
            ..List::new()
        }
    }

    fn member(node: u32, seq: u64, rank: u64, depth: u32) -> Member {
        Member {
            pid: pid(node, seq),
            rank,
            depth,
        }
    }

    #[test]
    fn patterns_pick_as_documented() {
        let class = |host: NodeId| match host.0 {
            1 => DistanceClass::SameHost,
            2 => DistanceClass::SameGroup,
            _ => DistanceClass::SameDc,
        };
        let mut l = list(vec![
            member(3, 1, 5, 0),
            member(2, 1, 7, 9),
            member(1, 1, 6, 50),
        ]);
        // Anycast: the nearest class first, however loaded.
        assert_eq!(pick(&mut l, Pattern::Anycast, &[], class), Some(pid(1, 1)));
        // Least-loaded: the shallowest mailbox; what this agent sent counts.
        assert_eq!(
            pick(&mut l, Pattern::LeastLoaded, &[], class),
            Some(pid(3, 1))
        );
        l.sent.insert(pid(3, 1), 10);
        assert_eq!(
            pick(&mut l, Pattern::LeastLoaded, &[], class),
            Some(pid(2, 1))
        );
        // Failover: the lowest rank; when it goes, the next.
        assert_eq!(pick(&mut l, Pattern::Failover, &[], class), Some(pid(3, 1)));
        l.members.retain(|m| m.pid != pid(3, 1));
        assert_eq!(pick(&mut l, Pattern::Failover, &[], class), Some(pid(1, 1)));
        l.members.clear();
        assert_eq!(pick(&mut l, Pattern::Failover, &[], class), None);
    }

    proptest! {
        /// Round-robin over equal members is exactly uniform: after `rounds` full
        /// turns every member got `rounds` messages.
        #[test]
        fn round_robin_is_uniform(n in 1usize..50, rounds in 1u64..20) {
            let mut l = list((0..n as u64).map(|i| member(i as u32 + 1, i, i, 0)).collect());
            let mut got: BTreeMap<Pid, u64> = BTreeMap::new();
            for _ in 0..(n as u64 * rounds) {
                *got.entry(pick(&mut l, Pattern::RoundRobin, &[], |_| DistanceClass::SameDc).unwrap()).or_default() += 1;
            }
            prop_assert_eq!(got.len(), n);
            prop_assert!(got.values().all(|c| *c == rounds));
        }
    }
}
