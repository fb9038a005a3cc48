//! The requester side of placement: a client's spawn request from validation to
//! reply (local attempt, group offers, escalation, commit, confirm or abort), and
//! the client calls on pids (`kill`, `info`, `wait`).
//!
//! Invariant: a request is answered exactly once; after its answer, every host
//! that holds something of it has been sent `Confirm` (success) or `Abort`
//! (failure), and a late `Offer` for it is answered with `Abort`.
//!
//! The pure decisions live in `planner`; the calls on one pid in `pid_calls`.

mod pid_calls;
mod planner;

use pid_calls::Op;

use planner::{
    aggregate_short, expand, held, may_retry, near_hosts, plan, share, uncovered, units_of, Fit,
    Plan,
};

use super::api::{Demand, Resource, SpawnError};
use super::msg::BATCH_BYTES;
use super::msg::{size_of, CreateItem, PlacementMsg, ReqKey, Shape};
use super::{Placement, Timer, Want};
use crate::agent::{ApiReply, RequestId};
use crate::host::Location;
use crate::host::ProcSpec;
use crate::ids::{NodeId, Pid, TenantId};
use crate::mix::splitmix64;
use crate::service::TreeView;
use crate::service::{ServiceNotice, ServiceOutput};
use crate::time::Time;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

/// Which spawn call a client made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SpawnKind {
    /// One process.
    Spawn(ProcSpec),
    /// `n` identical processes, atomically.
    NSpawn(u32, ProcSpec),
    /// Different processes, atomically.
    CSpawn(Vec<ProcSpec>),
}

/// Processes that must share a host (a `together` tag), placed as one.
#[derive(Clone, Debug)]
struct Unit {
    items: Vec<u16>,
    shape: usize,
    /// The `apart` or `spread` tag, by its index in `Pending::tags`.
    apart: Option<u32>,
    /// The tag is a `spread` one: distinct racks first.
    spread: bool,
    /// How the unit picks among offers (its profile).
    fit: Fit,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting out a backoff before a second attempt.
    Backoff,
    Offers,
    Creating,
}

#[derive(Debug)]
pub(super) struct Pending {
    request: RequestId,
    key: ReqKey,
    tenant: TenantId,
    items: Vec<(ProcSpec, Demand)>,
    units: Vec<Unit>,
    shapes: Vec<Shape>,
    phase: Phase,
    asked: BTreeSet<NodeId>,
    offers: BTreeMap<NodeId, Vec<u16>>,
    /// What each answering host had before it reserved for this request.
    room: BTreeMap<NodeId, Demand>,
    level: u8,
    deadline: Time,
    plan: BTreeMap<NodeId, Vec<u16>>,
    pids: BTreeMap<u16, Pid>,
    group: Vec<NodeId>,
    near: Vec<NodeId>,
    /// Where each host that offered stands.
    at: BTreeMap<NodeId, Location>,
    /// The `apart` and `spread` tags, by the index units carry.
    tags: Vec<String>,
    /// Once planned: the `spread` tags that could not all go to different racks.
    unspread: Vec<String>,
    /// This is a later attempt (an earlier one lost to competing requests).
    retried: bool,
    /// When the client asked.
    since: Time,
    /// While creating: when the request fails if a `Created` is still missing.
    creating_until: Time,
}

impl Pending {
    /// The `Create` messages for `host`'s share of the plan, batched under the MTU,
    /// each with the size of that share.
    fn batches_for(&self, host: NodeId) -> Vec<(Vec<CreateItem>, u16)> {
        let mut batches = Vec::new();
        let mut batch = Vec::new();
        let mut bytes = 0;
        let share = self.plan.get(&host).map_or(&[][..], Vec::as_slice);
        // Item indexes are u16, so a share is at most u16::MAX + 1 long.
        let total = u16::try_from(share.len()).unwrap_or(u16::MAX);
        for &i in share {
            let (spec, demand) = &self.items[usize::from(i)];
            let item = CreateItem {
                index: i,
                tenant: self.tenant,
                demand: *demand,
                spec: spec.clone(),
                leased: crate::service::is_internal(self.request),
            };
            let len = size_of(&item);
            if bytes + len > BATCH_BYTES && !batch.is_empty() {
                batches.push((std::mem::take(&mut batch), total));
                bytes = 0;
            }
            bytes += len;
            batch.push(item);
        }
        batches.push((batch, total));
        batches
    }
}

/// The most failed requests a requester remembers (past it, the oldest is forgotten).
pub const MAX_FAILED: usize = 4096;

/// The most processes placed on other hosts whose `Ran` a requester waits for (past
/// it, the oldest is forgotten: the history is a hint).
pub(super) const MAX_EXPECTED_RUNS: usize = 16_384;

/// Processes this requester placed on other hosts, with their host, tenant and
/// binary: a `Ran` is taken only from the host of its pid, once, and filed under
/// what was placed, never under what the message says (issue 16).
#[derive(Debug, Default)]
pub(super) struct ExpectedRuns {
    /// In the order they were placed (pids already reported stay until they
    /// fall off the front, which bounds this queue, and so the map, by
    /// [`MAX_EXPECTED_RUNS`]).
    order: VecDeque<Pid>,
    runs: BTreeMap<Pid, (NodeId, TenantId, String)>,
}

impl ExpectedRuns {
    pub(super) fn expect(&mut self, pid: Pid, host: NodeId, tenant: TenantId, path: String) {
        if self.runs.insert(pid, (host, tenant, path)).is_none() {
            self.order.push_back(pid);
        }
        while self.order.len() > MAX_EXPECTED_RUNS {
            if let Some(old) = self.order.pop_front() {
                self.runs.remove(&old);
            }
        }
    }

    /// The tenant and binary of `pid` if `from` is the host it was placed on;
    /// forgets it.
    fn take(&mut self, from: NodeId, pid: Pid) -> Option<(TenantId, String)> {
        if self.runs.get(&pid)?.0 != from {
            return None;
        }
        self.runs
            .remove(&pid)
            .map(|(_, tenant, path)| (tenant, path))
    }
}

/// How many times, at most, the requester sends a host's `Create` within `create_timeout`.
const CREATE_SENDS: u32 = 4;

#[derive(Debug, Default)]
pub(super) struct RequesterState {
    pub(super) pending: BTreeMap<u64, Pending>,
    next_seq: u64,
    ops: BTreeMap<u64, Op>,
    next_token: u64,
    /// Requests of this life that failed after their `Create`s were sent, with when
    /// they are forgotten, so that a host's `Query` is answered `Abort` (see the
    /// module docs of `placement`: any other request is presumed placed).
    failed: BTreeMap<u64, Time>,
    /// `ps` walks in flight.
    pub(super) ps: BTreeMap<u64, super::ps::PsWalk>,
    /// Hosts the federation removed for silence, until they are heard from again: a
    /// call on one of their pids that stays unanswered ends `Lost`, not `Unreachable`.
    lost_hosts: BTreeSet<NodeId>,
    /// Placed processes whose history their host may report.
    pub(super) runs: ExpectedRuns,
}

/// The most removed hosts remembered (past it, the lowest node id is forgotten first).
const MAX_LOST_HOSTS: usize = 4096;

impl Placement {
    /// A client call: `spawn`, `n_spawn` or `c_spawn`.
    pub fn handle_spawn(
        &mut self,
        now: Time,
        tree: &TreeView<'_>,
        request: RequestId,
        tenant: TenantId,
        kind: SpawnKind,
    ) {
        let near: Vec<NodeId> = match &kind {
            SpawnKind::Spawn(s) | SpawnKind::NSpawn(_, s) => near_hosts(s),
            SpawnKind::CSpawn(v) => v.iter().flat_map(near_hosts).collect(),
        };
        let specs = match expand(kind, self.config.max_processes) {
            Ok(s) => s,
            Err(e) => return self.reply(request, ApiReply::Spawned(Err(e))),
        };
        let items: Vec<(ProcSpec, Demand)> = specs
            .into_iter()
            .map(|s| {
                let d = self.demand_of(tenant, &s);
                (s, d)
            })
            .collect();
        let (units, shapes, tags) = match units_of(&items, self.config.long_run) {
            Ok(x) => x,
            Err(e) => return self.reply(request, ApiReply::Spawned(Err(e))),
        };
        let key = self.next_key();
        let p = Pending {
            request,
            key,
            tenant,
            items,
            units,
            shapes,
            phase: Phase::Offers,
            asked: BTreeSet::from([self.me]),
            offers: BTreeMap::new(),
            room: BTreeMap::new(),
            level: 0,
            deadline: now,
            plan: BTreeMap::new(),
            pids: BTreeMap::new(),
            group: tree.local_group(),
            near,
            at: BTreeMap::new(),
            tags,
            unspread: Vec::new(),
            retried: false,
            since: now,
            creating_until: now,
        };
        self.req.pending.insert(key.seq, p);
        self.begin(now, tree, key.seq);
    }

    fn next_key(&mut self) -> ReqKey {
        self.req.next_seq += 1;
        ReqKey {
            requester: self.me,
            incarnation: self.incarnation,
            seq: self.req.next_seq,
        }
    }

    /// One attempt: the local host first, then the group (and the hosts of `near` pids).
    fn begin(&mut self, now: Time, tree: &TreeView<'_>, seq: u64) {
        let Some(mut p) = self.req.pending.remove(&seq) else {
            return;
        };
        p.phase = Phase::Offers;
        p.group = tree.local_group();
        let key = p.key;
        let counts = self.reserve(now, key, p.tenant, &p.shapes);
        p.room
            .insert(self.me, self.free().plus(held(&p.shapes, &counts)));
        p.offers.insert(self.me, counts);
        p.at.insert(self.me, self.location);
        // With `near` pids elsewhere, their hosts are asked before this one settles it.
        let near_here = p.near.is_empty() || p.near.contains(&self.me);
        if let Some(chosen) = plan(self.me, &p)
            .ok()
            .filter(|c| near_here && c.is_spread())
        {
            self.req.pending.insert(seq, p);
            return self.commit(now, tree, seq, chosen);
        }
        let peers: Vec<NodeId> = p
            .group
            .iter()
            .chain(p.near.iter())
            .copied()
            .filter(|n| *n != self.me && !p.asked.contains(n))
            .collect();
        let shapes = share(&p, peers.len());
        for n in peers {
            if p.asked.insert(n) {
                let msg = PlacementMsg::OfferReq {
                    key,
                    tenant: p.tenant,
                    shapes: shapes.clone(),
                };
                self.send(n, msg);
            }
        }
        self.req.pending.insert(seq, p);
        if self.req.pending[&seq].asked.len() == 1 {
            self.escalate(now, tree, seq);
        } else {
            self.set_deadline(seq, now + self.config.offer_timeout);
        }
    }

    fn set_deadline(&mut self, seq: u64, at: Time) {
        if let Some(p) = self.req.pending.get_mut(&seq) {
            p.deadline = at;
            self.set_timer(at, Timer::Request(seq));
        }
    }

    fn mine(&self, key: ReqKey) -> bool {
        key.requester == self.me && key.incarnation == self.incarnation
    }

    #[allow(clippy::too_many_arguments)] // the fields of one `Offer`
    pub(super) fn on_offer(
        &mut self,
        now: Time,
        tree: &TreeView<'_>,
        from: NodeId,
        key: ReqKey,
        counts: Vec<u16>,
        free: Demand,
        at: Location,
    ) {
        let reserved_any = counts.iter().any(|c| *c > 0);
        let seq = key.seq;
        let usable = self.mine(key)
            && self.req.pending.get(&seq).is_some_and(|p| {
                p.phase == Phase::Offers
                    && p.asked.contains(&from)
                    && counts.len() == p.shapes.len()
            });
        if !usable {
            // Late or unknown: free what the peer holds for it, unless that may be
            // the request's own: a copy of an offer already counted (the network
            // duplicates), whose host the plan may use, or any offer of a request
            // of this life answered without failing after its `Create`s (a placed
            // one's host may still wait for its `Confirm`). An `Abort` there, taken
            // before the `Create` or `Confirm` it overtook, dropped the host's part of
            // a placed request, or left the `Create` unanswered until the request
            // failed (before, swarm seed 40122). A reservation not aborted ends with
            // its lease.
            let counted = self
                .req
                .pending
                .get(&seq)
                .is_some_and(|p| p.offers.contains_key(&from));
            let answered = !self.req.pending.contains_key(&seq) && self.presumed_placed(key);
            if reserved_any && !counted && !answered {
                self.send(from, PlacementMsg::Abort { key });
            }
            return;
        }
        let Some(p) = self.req.pending.get_mut(&seq) else {
            return;
        };
        p.room.insert(from, free.plus(held(&p.shapes, &counts)));
        p.offers.insert(from, counts);
        p.at.insert(from, at);
        self.settle(now, tree, seq);
    }

    /// Everyone asked has answered: commit at once if it fits (with every `spread`
    /// tag across racks), else go one level up at once (candidates still on their
    /// way from this level are asked all the same when they come). At the top,
    /// wait for the deadline: candidates from other subtrees may still come, and
    /// failing there is final (a plan with some `spread` tag in too few racks is
    /// committed there, and the reply says so).
    fn settle(&mut self, now: Time, tree: &TreeView<'_>, seq: u64) {
        let Some(p) = self.req.pending.get(&seq) else {
            return;
        };
        if p.phase != Phase::Offers || p.offers.len() < p.asked.len() {
            return;
        }
        let below_top = usize::from(p.level) < tree.ancestors().len();
        match plan(self.me, p) {
            Ok(chosen) if chosen.is_spread() || !below_top && p.deadline <= now => {
                self.commit(now, tree, seq, chosen);
            }
            _ if below_top || p.deadline <= now => self.escalate(now, tree, seq),
            _ => {}
        }
    }

    /// Asks `hosts` found for `key` for offers; when none is new and everyone asked has
    /// answered, the search settles now rather than at the deadline.
    pub(super) fn add_candidates(
        &mut self,
        now: Time,
        tree: &TreeView<'_>,
        key: ReqKey,
        hosts: &[NodeId],
    ) {
        let Some(p) = self
            .req
            .pending
            .get_mut(&key.seq)
            .filter(|p| p.key == key && p.phase == Phase::Offers)
        else {
            return;
        };
        let fresh: Vec<NodeId> = hosts
            .iter()
            .copied()
            .filter(|h| p.asked.insert(*h))
            .collect();
        if fresh.is_empty() {
            return self.settle(now, tree, key.seq);
        }
        let shapes = share(p, fresh.len());
        let tenant = p.tenant;
        for h in fresh {
            let msg = PlacementMsg::OfferReq {
                key,
                tenant,
                shapes: shapes.clone(),
            };
            self.send(h, msg);
        }
    }

    pub(super) fn on_candidates(
        &mut self,
        now: Time,
        tree: &TreeView<'_>,
        key: ReqKey,
        hosts: &[NodeId],
    ) {
        if self.mine(key) {
            self.add_candidates(now, tree, key, hosts);
        }
    }

    pub(super) fn request_due(&mut self, now: Time, tree: &TreeView<'_>, seq: u64) {
        let Some(p) = self.req.pending.get(&seq) else {
            return;
        };
        if p.deadline > now {
            return;
        }
        match p.phase {
            Phase::Backoff => self.begin(now, tree, seq),
            Phase::Offers => self.consolidate(now, tree, seq),
            Phase::Creating => self.creating_due(now, seq),
        }
    }

    fn consolidate(&mut self, now: Time, tree: &TreeView<'_>, seq: u64) {
        let Some(p) = self.req.pending.get(&seq) else {
            return;
        };
        match plan(self.me, p).ok().filter(Plan::is_spread) {
            Some(chosen) => self.commit(now, tree, seq, chosen),
            None => self.escalate(now, tree, seq),
        }
    }

    /// Asks the next level up for hosts with room, or fails when there is none.
    fn escalate(&mut self, now: Time, tree: &TreeView<'_>, seq: u64) {
        let Some(p) = self.req.pending.get_mut(&seq) else {
            return;
        };
        let view = tree.group(0).map(|g| g.view());
        let ancestors = view.map(|v| v.ancestors.clone()).unwrap_or_default();
        // Ancestors are one per level: the leader of the group at `level` is asked. Past
        // the last level a `u8` counts, there is no one to ask (checked: a peer's view
        // may list any number of ancestors).
        let level = p.level.checked_add(1);
        let Some((level, &target)) =
            level.and_then(|l| Some((l, ancestors.get(usize::from(l) - 1)?)))
        else {
            // At the top: a plan that leaves some `spread` tag in too few racks is
            // the best there is.
            let short = match plan(self.me, p) {
                Ok(chosen) => return self.commit(now, tree, seq, chosen),
                Err(short) => short,
            };
            let impossible = matches!(
                short,
                Resource::Cpu | Resource::Memory | Resource::Accelerators
            );
            if !may_retry(self.config.gang_patience, now, p, impossible) {
                let resource = match short {
                    Resource::Hosts => aggregate_short(p).unwrap_or(Resource::Hosts),
                    single => single,
                };
                return self.fail(now, seq, SpawnError::Short { resource });
            }
            return self.retry(now, seq);
        };
        p.level = level;
        let skip = if level == 1 {
            view.map_or(self.me, |v| v.leader)
        } else {
            ancestors[usize::from(level) - 2]
        };
        let min = p.shapes.iter().map(|s| s.demand).min().unwrap_or_default();
        let (need, missing_units) = uncovered(p);
        // Hosts to look for: one per `apart` unit, and at least one per unit still
        // missing (a host that covers the shortfall in sum may take only a part of it).
        let apart = p.units.iter().filter(|u| u.apart.is_some()).count();
        let hosts = apart.max(missing_units).min(256) as u16;
        let cpu_class = p.shapes.iter().map(|s| s.cpu_class).min().unwrap_or(0);
        let avoid_racks = if p.units.iter().any(|u| u.spread) {
            p.at.values().fold(0u64, |a, l| a | 1 << (l.rack % 64))
        } else {
            0
        };
        let want = Want {
            min,
            need,
            hosts,
            cpu_class,
            avoid_racks,
        };
        let key = p.key;
        // The deadline first: the search may settle before `on_find_room` returns.
        self.set_deadline(seq, now + self.config.escalate_timeout);
        if target == self.me {
            self.on_find_room(now, tree, key, level, want, skip);
        } else {
            let msg = PlacementMsg::FindRoom {
                key,
                level,
                min,
                need,
                hosts,
                skip,
                cpu_class,
                avoid_racks,
            };
            self.send(target, msg);
        }
    }

    /// Sends the creations (batched under the MTU) and frees what is not used.
    fn commit(&mut self, now: Time, tree: &TreeView<'_>, seq: u64, chosen: Plan) {
        let Some(p) = self.req.pending.get_mut(&seq) else {
            return;
        };
        p.phase = Phase::Creating;
        p.plan = chosen.hosts;
        p.unspread = chosen
            .unspread
            .iter()
            .filter_map(|t| p.tags.get(*t as usize).cloned())
            .collect();
        p.creating_until = now + self.config.create_timeout;
        let (key, tenant) = (p.key, p.tenant);
        let unused: Vec<NodeId> = p
            .offers
            .iter()
            .filter(|(h, c)| !p.plan.contains_key(h) && c.iter().any(|n| *n > 0))
            .map(|(h, _)| *h)
            .collect();
        let batches: Vec<(NodeId, Vec<CreateItem>, u16)> = p
            .plan
            .keys()
            .flat_map(|h| p.batches_for(*h).into_iter().map(|(i, l)| (*h, i, l)))
            .collect();
        for h in unused {
            if h == self.me {
                self.release(key);
            } else {
                self.send(h, PlacementMsg::Abort { key });
            }
        }
        self.set_deadline(seq, now + self.create_resend());
        for (host, items, total) in batches {
            if host == self.me {
                match self.create(now, key, items, total) {
                    Some(pids) => self.deliver_created(now, tree, tenant, key, pids),
                    None => return self.fail(now, seq, SpawnError::Aborted),
                }
            } else {
                self.send(host, PlacementMsg::Create { key, items, total });
            }
        }
    }

    /// How long the requester waits for a host's `Created` before it sends that
    /// host's `Create` again (a lost message must not abort a whole gang).
    fn create_resend(&self) -> Duration {
        self.config.create_timeout / CREATE_SENDS
    }

    /// Still creating: sends `Create` again to every chosen host whose `Created` has not
    /// come (creation is idempotent per index), or fails once `create_timeout` is up.
    fn creating_due(&mut self, now: Time, seq: u64) {
        let Some(p) = self.req.pending.get(&seq) else {
            return;
        };
        if now >= p.creating_until {
            return self.fail(now, seq, SpawnError::Aborted);
        }
        let key = p.key;
        let silent: Vec<(NodeId, Vec<CreateItem>, u16)> = p
            .plan
            .iter()
            .filter(|(h, idx)| **h != self.me && idx.iter().any(|i| !p.pids.contains_key(i)))
            .flat_map(|(h, _)| p.batches_for(*h).into_iter().map(|(i, l)| (*h, i, l)))
            .collect();
        let next = (now + self.create_resend()).min(p.creating_until);
        for (host, items, total) in silent {
            self.send(host, PlacementMsg::Create { key, items, total });
        }
        self.set_deadline(seq, next);
    }

    /// The pids `from` created for request `key`: taken only for the items planned
    /// on `from`, and only if `from` minted them (a pid names its minting host), so
    /// that no host can hand the client another host's pids, which would point its
    /// sends, waits and kills at processes it does not own.
    pub(super) fn on_created(&mut self, now: Time, from: NodeId, key: ReqKey, pids: &[(u16, Pid)]) {
        if !self.mine(key) || pids.iter().any(|(_, pid)| pid.origin() != from) {
            return;
        }
        let Some(p) = self.req.pending.get_mut(&key.seq) else {
            return;
        };
        let Some(mine) = p.plan.get(&from) else {
            return;
        };
        for (i, pid) in pids {
            if mine.contains(i) {
                p.pids.insert(*i, *pid);
            }
        }
        if p.pids.len() < p.items.len() {
            return;
        }
        let Some(p) = self.req.pending.remove(&key.seq) else {
            return;
        };
        let local = p.plan.keys().all(|h| p.group.contains(h));
        for host in p.plan.keys() {
            if *host == self.me {
                self.on_confirm(now, key);
            } else {
                self.send(*host, PlacementMsg::Confirm { key });
            }
        }
        self.outbox
            .push_back(ServiceOutput::Notice(ServiceNotice::Placed {
                processes: p.items.len() as u32,
                local,
            }));
        for (host, items) in p.plan.iter().filter(|(h, _)| **h != self.me) {
            for i in items {
                if let (Some(pid), Some((spec, _))) = (p.pids.get(i), p.items.get(usize::from(*i)))
                {
                    self.req
                        .runs
                        .expect(*pid, *host, p.tenant, spec.path.clone());
                }
            }
        }
        let pids = p.pids.into_values().collect();
        let reply = if p.unspread.is_empty() {
            ApiReply::Spawned(Ok(pids))
        } else {
            ApiReply::SpawnedUnspread {
                pids,
                tags: p.unspread,
            }
        };
        self.reply(p.request, reply);
    }

    /// What `pid` used, as `from` reports it: learnt only if this agent placed
    /// `pid` on `from` (see [`ExpectedRuns`]).
    pub(super) fn on_ran(
        &mut self,
        from: NodeId,
        pid: Pid,
        cpu_millicores: u32,
        memory_bytes: u64,
    ) {
        if let Some((tenant, path)) = self.req.runs.take(from, pid) {
            self.learn(tenant, path, cpu_millicores, memory_bytes);
        }
    }

    /// The top of the tree says no host has `resource`: the request cannot be
    /// placed, busy hosts or not, and fails now.
    pub(super) fn on_absent(&mut self, now: Time, key: ReqKey, resource: Resource) {
        let searching = self
            .req
            .pending
            .get(&key.seq)
            .is_some_and(|p| p.key == key && p.phase == Phase::Offers);
        if self.mine(key) && searching {
            self.fail(now, key.seq, SpawnError::Unavailable { resource });
        }
    }

    pub(super) fn on_create_refused(&mut self, now: Time, key: ReqKey) {
        if self.mine(key) && self.req.pending.contains_key(&key.seq) {
            self.fail(now, key.seq, SpawnError::Aborted);
        }
    }

    /// Releases everything the request holds and starts it again under a new key after
    /// a backoff drawn from the key (so that two competing requests retry apart).
    fn retry(&mut self, now: Time, seq: u64) {
        let Some(mut p) = self.req.pending.remove(&seq) else {
            return;
        };
        self.release_all(now, &p);
        let key = self.next_key();
        let spread = self.config.offer_timeout.as_nanos().max(1) as u64 * 8;
        let backoff = Duration::from_nanos(
            splitmix64(u64::from(key.requester.0) ^ key.seq.rotate_left(32)) % spread,
        );
        p.key = key;
        p.retried = true;
        p.phase = Phase::Backoff;
        p.offers.clear();
        p.room.clear();
        p.at.clear();
        p.asked = BTreeSet::from([self.me]);
        p.level = 0;
        p.plan.clear();
        p.pids.clear();
        self.req.pending.insert(key.seq, p);
        self.set_deadline(key.seq, now + self.config.offer_timeout + backoff);
    }

    /// Tells every host that may hold something of `p` to drop it.
    fn release_all(&mut self, now: Time, p: &Pending) {
        let holders: BTreeSet<NodeId> = p
            .offers
            .iter()
            .filter(|(_, c)| c.iter().any(|n| *n > 0))
            .map(|(h, _)| *h)
            .chain(p.plan.keys().copied())
            .collect();
        for h in holders {
            if h == self.me {
                self.on_abort(now, p.key);
            } else {
                self.send(h, PlacementMsg::Abort { key: p.key });
            }
        }
    }

    /// Ends a request with `error`: every host that may hold something of it is told.
    fn fail(&mut self, now: Time, seq: u64, error: SpawnError) {
        let Some(p) = self.req.pending.remove(&seq) else {
            return;
        };
        if p.phase == Phase::Creating {
            // Hosts may hold processes of it: remember to answer their queries `Abort`.
            if self.req.failed.len() >= MAX_FAILED {
                self.req.failed.pop_first();
            }
            let until = now + self.config.failed_retention;
            self.req.failed.insert(seq, until);
            self.set_timer(until, Timer::Done(p.key));
        }
        self.release_all(now, &p);
        self.reply(p.request, ApiReply::Spawned(Err(error)));
    }

    /// Presumed commit: a request of this life, no longer pending, that is not
    /// recorded as failed after its `Create`s was placed (or failed before any
    /// host created anything); an earlier life's requests are all dead.
    fn presumed_placed(&self, key: ReqKey) -> bool {
        self.mine(key) && key.seq <= self.req.next_seq && !self.req.failed.contains_key(&key.seq)
    }

    /// A host asks whether a provisional request is still wanted.
    pub(super) fn on_query(&mut self, from: NodeId, key: ReqKey) {
        if self.mine(key) && self.req.pending.contains_key(&key.seq) {
            return; // Still being decided: the requester's own deadline settles it.
        }
        let confirmed = self.presumed_placed(key);
        let msg = if confirmed {
            PlacementMsg::Confirm { key }
        } else {
            PlacementMsg::Abort { key }
        };
        if from == self.me {
            let now = self
                .host
                .provisional
                .get(&key)
                .map_or(Time::ZERO, |p| p.deadline);
            if confirmed {
                self.on_confirm(now, key);
            } else {
                self.on_abort(now, key);
            }
        } else {
            self.send(from, msg);
        }
    }

    pub(super) fn forget_failed(&mut self, now: Time, key: ReqKey) {
        if self.mine(key) && self.req.failed.get(&key.seq).is_some_and(|t| *t <= now) {
            self.req.failed.remove(&key.seq);
        }
    }

    /// A token no other call of this agent's life has used.
    pub(super) fn next_token(&mut self) -> u64 {
        self.req.next_token += 1;
        self.req.next_token
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::HostResources;
    use crate::ids::Incarnation;
    use crate::placement::PlacementConfig;
    use crate::service::Service;

    type Out = ServiceOutput<PlacementMsg>;

    /// A requester whose request for two processes is committed to host 2, creating.
    fn creating() -> (Placement, ReqKey) {
        let mut p = Placement::new(NodeId(1), Incarnation(1), PlacementConfig::default());
        p.set_capacity(&HostResources::default());
        let pending = planner::tests::pending(&[500, 500]);
        let key = pending.key;
        p.req.pending.insert(key.seq, pending);
        let tree = TreeView::empty(NodeId(1));
        let plan = Plan {
            hosts: BTreeMap::from([(NodeId(2), vec![0, 1])]),
            unspread: Vec::new(),
        };
        p.commit(Time::ZERO, &tree, key.seq, plan);
        (p, key)
    }

    /// The key of this requester's first request.
    fn key_of(p: &Placement) -> ReqKey {
        ReqKey {
            requester: p.me,
            incarnation: p.incarnation,
            seq: 1,
        }
    }

    /// The creations sent to host 2 and the reply, as the requester's timers fire up
    /// to `until`.
    fn run(p: &mut Placement, until: Time) -> (usize, Option<ApiReply>) {
        let tree = TreeView::empty(NodeId(1));
        let (mut creates, mut reply) = (0, None);
        loop {
            for out in std::iter::from_fn(|| p.poll_output()) {
                match out {
                    Out::Send(NodeId(2), PlacementMsg::Create { .. }) => creates += 1,
                    Out::Reply(_, r) => reply = Some(r),
                    _ => {}
                }
            }
            match p.next_timeout().filter(|t| *t <= until) {
                Some(t) => p.on_timeout(t, &tree),
                None => return (creates, reply),
            }
        }
    }

    /// Regression (issue 15): one lost `Create` or `Created` failed the whole request
    /// at `create_timeout`, so under 1% loss about a third of the 32-host gangs
    /// failed, and each failure left processes that hosts cut off from the requester
    /// could not be told to kill. The requester now sends `Create` again to a silent
    /// host before it gives up.
    #[test]
    fn a_silent_host_gets_its_create_again_before_the_request_fails() {
        let (mut p, key) = creating();
        let timeout = p.config.create_timeout;
        let (creates, reply) = run(&mut p, Time::ZERO + timeout / 2);
        assert_eq!(reply, None);
        assert!(creates >= 2, "{creates} creates sent in half the timeout");
        let pids = [
            (0, Pid::new(NodeId(2), Incarnation(1), 1)),
            (1, Pid::new(NodeId(2), Incarnation(1), 2)),
        ];
        p.on_created(Time::ZERO + timeout / 2, NodeId(2), key, &pids);
        let (_, reply) = run(&mut p, Time::ZERO + timeout * 2);
        assert!(
            matches!(reply, Some(ApiReply::Spawned(Ok(ref v))) if v.len() == 2),
            "{reply:?}"
        );

        // A host that stays silent still fails the request at `create_timeout`, and
        // no more than `CREATE_SENDS` creations were sent.
        let (mut p, _) = creating();
        let (creates, reply) = run(&mut p, Time::ZERO + timeout * 2);
        assert!(p.req.pending.is_empty());
        assert_eq!(reply, Some(ApiReply::Spawned(Err(SpawnError::Aborted))));
        assert_eq!(creates, CREATE_SENDS as usize);
        // A host asking later about it is told `Abort` (it is recorded as failed).
        let key = key_of(&p);
        assert!(p.req.failed.contains_key(&key.seq), "recorded as failed");
        p.on_query(NodeId(2), key);
        let abort = std::iter::from_fn(|| p.poll_output())
            .any(|o| o == Out::Send(NodeId(2), PlacementMsg::Abort { key }));
        assert!(abort);
    }

    /// Regression (swarm seed 40122, 5% duplication): a copy of an offer the plan
    /// used, arriving once the request was creating, was answered `Abort`; the
    /// host took it before the `Create`, which it then left unanswered (the request
    /// was done there), and the request failed (a supervisor's restart waited a
    /// lease more). Taken after the `Create` or before the `Confirm`, it would have
    /// ended the host's part of a placed request. A copy of a counted offer, or an
    /// offer for a request placed, is not aborted; a late offer of a host the
    /// request never counted still is.
    #[test]
    fn a_duplicated_offer_of_a_host_in_the_plan_is_not_aborted() {
        let (mut p, key) = creating();
        let seq = key.seq;
        p.req.next_seq = seq; // as `handle_spawn` leaves it
        let tree = TreeView::empty(NodeId(1));
        p.req
            .pending
            .get_mut(&seq)
            .expect("creating")
            .offers
            .insert(NodeId(2), vec![1, 1]);
        std::iter::from_fn(|| p.poll_output()).for_each(drop);
        let offer = |p: &mut Placement, from: NodeId| {
            let at = Location::default();
            p.on_offer(
                Time::ZERO,
                &tree,
                from,
                key,
                vec![1, 1],
                Demand::default(),
                at,
            );
            std::iter::from_fn(|| p.poll_output())
                .any(|o| matches!(o, Out::Send(to, PlacementMsg::Abort { .. }) if to == from))
        };
        assert!(!offer(&mut p, NodeId(2)), "a copy of a counted offer");
        assert!(offer(&mut p, NodeId(3)), "a late offer never counted");
        let pids = [
            (0, Pid::new(NodeId(2), Incarnation(1), 1)),
            (1, Pid::new(NodeId(2), Incarnation(1), 2)),
        ];
        p.on_created(Time::ZERO, NodeId(2), key, &pids);
        let timeout = p.config.create_timeout;
        let (_, reply) = run(&mut p, Time::ZERO + timeout);
        assert!(matches!(reply, Some(ApiReply::Spawned(Ok(_)))), "{reply:?}");
        assert!(
            !offer(&mut p, NodeId(2)),
            "placed: its Confirm may be on the way"
        );
    }

    /// Issue 16: the pids of a `Created` must be minted by the host that sends it.
    /// A host could otherwise hand the client pids of processes on other hosts
    /// (another tenant's), which its later sends, waits and kills would then reach.
    #[test]
    fn created_pids_must_be_minted_by_their_sender() {
        let (mut p, key) = creating();
        let timeout = p.config.create_timeout;
        let foreign = [
            (0, Pid::new(NodeId(2), Incarnation(1), 1)),
            (1, Pid::new(NodeId(7), Incarnation(1), 9)),
        ];
        p.on_created(Time::ZERO, NodeId(2), key, &foreign);
        let (_, reply) = run(&mut p, Time::ZERO + timeout / 2);
        assert_eq!(reply, None, "a pid of node 7 from node 2 is not taken");
        let own = [
            (0, Pid::new(NodeId(2), Incarnation(1), 1)),
            (1, Pid::new(NodeId(2), Incarnation(1), 2)),
        ];
        p.on_created(Time::ZERO + timeout / 2, NodeId(2), key, &own);
        let (_, reply) = run(&mut p, Time::ZERO + timeout * 2);
        assert_eq!(
            reply,
            Some(ApiReply::Spawned(Ok(own.iter().map(|(_, p)| *p).collect())))
        );
    }
}
