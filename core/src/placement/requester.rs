//! The requester side of placement: a client's spawn request from validation to
//! reply (local attempt, group offers, escalation, commit, confirm or abort), and
//! the client calls on pids (`kill`, `info`, `wait`).
//!
//! Invariant: a request is answered exactly once; after its answer, every host
//! that holds something of it has been sent `Confirm` (success) or `Abort`
//! (failure), and a late `Offer` for it is answered with `Abort`.

use super::api::{
    Demand, DistanceClass, InfoError, KillError, ProcInfo, ProcState, Resource, SpawnError,
    WaitError,
};
use super::msg::{size_of, CreateItem, PidAnswer, PidOp, PlacementMsg, ReqKey, Shape};
use super::msg::{BATCH_BYTES, MAX_SHAPES};
use super::ps::PsFor;
use super::{group_of, Placement, PlacementOutput, Timer, Want};
use crate::agent::{ApiReply, RequestId};
use crate::federation::Federation;
use crate::host::{Affinity, ExitStatus, ProcSpec};
use crate::ids::{NodeId, Pid, TenantId};
use crate::time::Time;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
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
    apart: Option<u32>,
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
    /// This is a later attempt (an earlier one lost to competing requests).
    retried: bool,
    /// When the client asked.
    since: Time,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OpKind {
    Kill,
    Info,
    Wait,
}

#[derive(Debug)]
pub(super) struct Op {
    request: RequestId,
    kind: OpKind,
    tenant: TenantId,
    pid: Pid,
    deadline: Time,
    retries: u32,
    /// A `ps` walk in flight to find out whether the silent host's process is lost.
    resolving: bool,
}

#[derive(Debug, Default)]
pub(super) struct RequesterState {
    pub(super) pending: BTreeMap<u64, Pending>,
    next_seq: u64,
    ops: BTreeMap<u64, Op>,
    next_token: u64,
    /// Requests confirmed, kept so that a host's `Query` can be answered.
    completed: BTreeMap<u64, Time>,
    /// `ps` walks in flight.
    pub(super) ps: BTreeMap<u64, super::ps::PsWalk>,
    /// Hosts the federation removed for silence, until they are heard from again: a
    /// call on one of their pids that stays unanswered ends `Lost`, not `Unreachable`.
    lost_hosts: BTreeSet<NodeId>,
}

/// The most removed hosts remembered (past it, the lowest node id is forgotten first).
const MAX_LOST_HOSTS: usize = 4096;

/// Expands a spawn call into its processes, or says why it is malformed.
fn expand(kind: SpawnKind, max: u16) -> Result<Vec<ProcSpec>, SpawnError> {
    let specs = match kind {
        SpawnKind::Spawn(s) => vec![s],
        SpawnKind::NSpawn(n, s) if n as usize <= usize::from(max) => vec![s; n as usize],
        SpawnKind::NSpawn(n, _) => {
            return Err(SpawnError::Invalid(format!(
                "{n} processes, the most is {max}"
            )))
        }
        SpawnKind::CSpawn(v) => v,
    };
    if specs.is_empty() || specs.len() > usize::from(max) {
        return Err(SpawnError::Invalid(format!(
            "{} processes; a request holds 1..={max}",
            specs.len()
        )));
    }
    for s in &specs {
        if s.path.is_empty() {
            return Err(SpawnError::Invalid("empty path".to_owned()));
        }
        if size_of(s) > BATCH_BYTES - 64 {
            return Err(SpawnError::Invalid(format!(
                "a spec of {} bytes does not fit one message",
                size_of(s)
            )));
        }
    }
    Ok(specs)
}

/// Groups processes into units (one per `together` tag, one per untagged process)
/// and units into shapes (same demand, same apart-ness).
fn units_of(items: &[(ProcSpec, Demand)]) -> Result<(Vec<Unit>, Vec<Shape>), SpawnError> {
    let mut tags: BTreeMap<&str, usize> = BTreeMap::new();
    let mut apart_ids: BTreeMap<&str, u32> = BTreeMap::new();
    let mut units: Vec<(Vec<u16>, Demand, Option<u32>)> = Vec::new();
    for (i, (spec, demand)) in items.iter().enumerate() {
        let mut apart = None;
        let mut together = None;
        for a in &spec.affinity {
            match a {
                Affinity::Together(t) => together = Some(t.as_str()),
                Affinity::Apart(t) | Affinity::Spread(t) => {
                    let next = apart_ids.len() as u32;
                    apart = Some(*apart_ids.entry(t.as_str()).or_insert(next));
                }
                Affinity::Near(_) => {}
            }
        }
        let at = match together {
            Some(t) => *tags.entry(t).or_insert_with(|| {
                units.push((Vec::new(), Demand::default(), None));
                units.len() - 1
            }),
            None => {
                units.push((Vec::new(), Demand::default(), None));
                units.len() - 1
            }
        };
        let u = &mut units[at];
        if apart.is_some() && u.2.is_some_and(|x| Some(x) == apart) && !u.0.is_empty() {
            return Err(SpawnError::Invalid(
                "processes both together and apart".to_owned(),
            ));
        }
        u.0.push(i as u16);
        u.1 = u.1.plus(*demand);
        u.2 = u.2.or(apart);
    }
    let mut shapes: Vec<Shape> = Vec::new();
    let mut out = Vec::with_capacity(units.len());
    for (items, demand, apart) in units {
        let one = apart.is_some();
        let shape = match shapes
            .iter()
            .position(|s| s.demand == demand && s.one_per_host == one)
        {
            Some(k) => k,
            None => {
                shapes.push(Shape {
                    demand,
                    count: 0,
                    one_per_host: one,
                });
                shapes.len() - 1
            }
        };
        shapes[shape].count += 1;
        out.push(Unit {
            items,
            shape,
            apart,
        });
    }
    if shapes.len() > MAX_SHAPES {
        return Err(SpawnError::Invalid(format!(
            "{} distinct process shapes, the most is {MAX_SHAPES}",
            shapes.len()
        )));
    }
    Ok((out, shapes))
}

/// Whether a request that the search up to the root could not place starts again
/// (releasing everything it holds). A single process does not: the whole tree was
/// searched for it, and it fails fast, which keeps placement latency short and leaves
/// the room to requests that need it on several hosts at once. A gang (several units)
/// does while younger than `patience`: it needs room on many hosts at the same time
/// and loses mostly to transient contention (the leases of competing requests,
/// processes about to exit), so it tries again after a backoff until then; past it,
/// once more unless a unit is larger than any room heard of (`impossible`).
fn may_retry(patience: Duration, now: Time, p: &Pending, impossible: bool) -> bool {
    let gang = p.units.len() > 1;
    gang && (now.saturating_since(p.since) < patience || !(p.retried || impossible))
}

/// When every unit fits some host but the request does not fit: the resource of
/// which the whole request needs more than all the hosts heard from have free, if
/// one does (else it is the packing, `Hosts`).
fn aggregate_short(p: &Pending) -> Option<Resource> {
    let need = p
        .units
        .iter()
        .fold(Demand::default(), |a, u| a.plus(p.shapes[u.shape].demand));
    let room = p.room.values().fold(Demand::default(), |a, r| a.plus(*r));
    room.short_of(need)
}

/// Assigns every unit a host from the offers (this agent first, then its group, then
/// the rest, each in id order; largest units first), or says what is short.
///
/// Units without an `apart` rule take the first host with an offer of their shape.
/// The units of one `apart` tag need distinct hosts: they are matched to hosts
/// (greedily, then by augmenting paths for any unit left over), so the order of
/// the choices never fails a tag that some assignment could place. The two kinds
/// never compete for an offer: `apart` units have shapes of their own.
fn plan(me: NodeId, p: &Pending) -> Result<BTreeMap<NodeId, Vec<u16>>, Resource> {
    let mut avail = p.offers.clone();
    let mut hosts: Vec<NodeId> = avail.keys().copied().collect();
    hosts.sort_by_key(|h| (*h != me, !p.group.contains(h), *h));
    let mut order: Vec<usize> = (0..p.units.len()).collect();
    order.sort_by_key(|u| std::cmp::Reverse(p.shapes[p.units[*u].shape].demand));
    let mut out: BTreeMap<NodeId, Vec<u16>> = BTreeMap::new();
    let mut tags: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for u in order {
        let unit = &p.units[u];
        if let Some(t) = unit.apart {
            tags.entry(t).or_default().push(u);
            continue;
        }
        let Some(h) = hosts.iter().copied().find(|h| avail[h][unit.shape] > 0) else {
            return Err(short_for(p, unit.shape));
        };
        if let Some(c) = avail.get_mut(&h) {
            c[unit.shape] -= 1;
        }
        out.entry(h).or_default().extend(unit.items.iter().copied());
    }
    for units in tags.values() {
        let matched = match_apart(p, &hosts, &avail, units)?;
        for (h, u) in matched {
            let unit = &p.units[u];
            if let Some(c) = avail.get_mut(&h) {
                c[unit.shape] -= 1;
            }
            out.entry(h).or_default().extend(unit.items.iter().copied());
        }
    }
    Ok(out)
}

/// What is short for a unit of `shape` that no offer takes.
fn short_for(p: &Pending, shape: usize) -> Resource {
    let demand = p.shapes[shape].demand;
    let best = p.room.values().fold(Demand::default(), |a, r| Demand {
        cpu_millicores: a.cpu_millicores.max(r.cpu_millicores),
        memory_bytes: a.memory_bytes.max(r.memory_bytes),
        accelerators: a.accelerators.max(r.accelerators),
    });
    best.short_of(demand).unwrap_or(Resource::Hosts)
}

/// A host for each of `units` (one `apart` tag), no host twice, each with an offer
/// of its unit's shape: a maximum bipartite matching (Kuhn), started from the greedy
/// choice so that the common case costs one pass.
fn match_apart(
    p: &Pending,
    hosts: &[NodeId],
    avail: &BTreeMap<NodeId, Vec<u16>>,
    units: &[usize],
) -> Result<BTreeMap<NodeId, usize>, Resource> {
    let fits = |h: &NodeId, u: usize| avail[h][p.units[u].shape] > 0;
    let mut taken: BTreeMap<NodeId, usize> = BTreeMap::new();
    let mut left = Vec::new();
    for &u in units {
        match hosts.iter().find(|h| !taken.contains_key(h) && fits(h, u)) {
            Some(h) => {
                taken.insert(*h, u);
            }
            None => left.push(u),
        }
    }
    for u in left {
        let mut seen = BTreeSet::new();
        if !augment(u, hosts, &fits, &mut taken, &mut seen) {
            return Err(short_for(p, p.units[u].shape));
        }
    }
    Ok(taken)
}

/// Finds `u` a host, moving earlier units to other hosts along an augmenting path.
fn augment(
    u: usize,
    hosts: &[NodeId],
    fits: &impl Fn(&NodeId, usize) -> bool,
    taken: &mut BTreeMap<NodeId, usize>,
    seen: &mut BTreeSet<NodeId>,
) -> bool {
    for h in hosts {
        if !fits(h, u) || !seen.insert(*h) {
            continue;
        }
        let free = match taken.get(h) {
            None => true,
            Some(&other) => augment(other, hosts, fits, taken, seen),
        };
        if free {
            taken.insert(*h, u);
            return true;
        }
    }
    false
}

impl Placement {
    /// A client call: `spawn`, `n_spawn` or `c_spawn`.
    pub fn handle_spawn(
        &mut self,
        now: Time,
        fed: Option<&Federation>,
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
        let (units, shapes) = match units_of(&items) {
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
            group: group_of(self.me, fed),
            near,
            retried: false,
            since: now,
        };
        self.req.pending.insert(key.seq, p);
        self.begin(now, fed, key.seq);
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
    fn begin(&mut self, now: Time, fed: Option<&Federation>, seq: u64) {
        let Some(mut p) = self.req.pending.remove(&seq) else {
            return;
        };
        p.phase = Phase::Offers;
        p.group = group_of(self.me, fed);
        let key = p.key;
        let counts = self.reserve(now, key, &p.shapes);
        p.room
            .insert(self.me, self.free().plus(held(&p.shapes, &counts)));
        p.offers.insert(self.me, counts);
        if let Ok(chosen) = plan(self.me, &p) {
            self.req.pending.insert(seq, p);
            return self.commit(now, fed, seq, chosen);
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
                    shapes: shapes.clone(),
                };
                self.send(n, msg);
            }
        }
        self.req.pending.insert(seq, p);
        if self.req.pending[&seq].asked.len() == 1 {
            self.escalate(now, fed, seq);
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

    pub(super) fn on_offer(
        &mut self,
        now: Time,
        fed: Option<&Federation>,
        from: NodeId,
        key: ReqKey,
        counts: Vec<u16>,
        free: Demand,
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
            // Late or unknown: free what the peer holds for it.
            if reserved_any {
                self.send(from, PlacementMsg::Abort { key });
            }
            return;
        }
        let Some(p) = self.req.pending.get_mut(&seq) else {
            return;
        };
        p.room.insert(from, free.plus(held(&p.shapes, &counts)));
        p.offers.insert(from, counts);
        self.settle(now, fed, seq);
    }

    /// Everyone asked has answered: commit at once if it fits, else go one level up
    /// at once (candidates still on their way from this level are asked all the
    /// same when they come). At the top, wait for the deadline: candidates from
    /// other subtrees may still come, and failing there is final.
    fn settle(&mut self, now: Time, fed: Option<&Federation>, seq: u64) {
        let Some(p) = self.req.pending.get(&seq) else {
            return;
        };
        if p.phase != Phase::Offers || p.offers.len() < p.asked.len() {
            return;
        }
        let levels_above = fed
            .and_then(|f| f.seats().first())
            .map_or(0, |s| s.view().ancestors.len());
        match plan(self.me, p) {
            Ok(chosen) => self.commit(now, fed, seq, chosen),
            Err(_) if usize::from(p.level) < levels_above || p.deadline <= now => {
                self.escalate(now, fed, seq);
            }
            Err(_) => {}
        }
    }

    /// Asks `hosts` found for `key` for offers; when none is new and everyone asked has
    /// answered, the search settles now rather than at the deadline.
    pub(super) fn add_candidates(
        &mut self,
        now: Time,
        fed: Option<&Federation>,
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
            return self.settle(now, fed, key.seq);
        }
        let shapes = share(p, fresh.len());
        for h in fresh {
            let msg = PlacementMsg::OfferReq {
                key,
                shapes: shapes.clone(),
            };
            self.send(h, msg);
        }
    }

    pub(super) fn on_candidates(
        &mut self,
        now: Time,
        fed: Option<&Federation>,
        key: ReqKey,
        hosts: &[NodeId],
    ) {
        if self.mine(key) {
            self.add_candidates(now, fed, key, hosts);
        }
    }

    pub(super) fn request_due(&mut self, now: Time, fed: Option<&Federation>, seq: u64) {
        let Some(p) = self.req.pending.get(&seq) else {
            return;
        };
        if p.deadline > now {
            return;
        }
        match p.phase {
            Phase::Backoff => self.begin(now, fed, seq),
            Phase::Offers => self.consolidate(now, fed, seq),
            Phase::Creating => self.fail(now, seq, SpawnError::Aborted),
        }
    }

    fn consolidate(&mut self, now: Time, fed: Option<&Federation>, seq: u64) {
        let Some(p) = self.req.pending.get(&seq) else {
            return;
        };
        match plan(self.me, p) {
            Ok(chosen) => self.commit(now, fed, seq, chosen),
            Err(_) => self.escalate(now, fed, seq),
        }
    }

    /// Asks the next level up for hosts with room, or fails when there is none.
    fn escalate(&mut self, now: Time, fed: Option<&Federation>, seq: u64) {
        let Some(p) = self.req.pending.get_mut(&seq) else {
            return;
        };
        let view = fed.and_then(|f| f.seats().first()).map(|s| s.view());
        let ancestors = view.map(|v| v.ancestors.clone()).unwrap_or_default();
        // Ancestors are one per level: the leader of the group at `level` is asked. Past
        // the last level a `u8` counts, there is no one to ask (checked: a peer's view
        // may list any number of ancestors).
        let level = p.level.checked_add(1);
        let Some((level, &target)) =
            level.and_then(|l| Some((l, ancestors.get(usize::from(l) - 1)?)))
        else {
            let short = plan(self.me, p).err().unwrap_or(Resource::Hosts);
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
        let key = p.key;
        // The deadline first: the search may settle before `on_find_room` returns.
        self.set_deadline(seq, now + self.config.escalate_timeout);
        if target == self.me {
            self.on_find_room(now, fed, key, level, Want { min, need, hosts }, skip);
        } else {
            let msg = PlacementMsg::FindRoom {
                key,
                level,
                min,
                need,
                hosts,
                skip,
            };
            self.send(target, msg);
        }
    }

    /// Sends the creations (batched under the MTU) and frees what is not used.
    fn commit(
        &mut self,
        now: Time,
        fed: Option<&Federation>,
        seq: u64,
        chosen: BTreeMap<NodeId, Vec<u16>>,
    ) {
        let Some(p) = self.req.pending.get_mut(&seq) else {
            return;
        };
        p.phase = Phase::Creating;
        p.plan = chosen;
        let (key, tenant) = (p.key, p.tenant);
        let unused: Vec<NodeId> = p
            .offers
            .iter()
            .filter(|(h, c)| !p.plan.contains_key(h) && c.iter().any(|n| *n > 0))
            .map(|(h, _)| *h)
            .collect();
        let mut batches: Vec<(NodeId, Vec<CreateItem>, bool)> = Vec::new();
        for (host, idx) in &p.plan {
            let mut batch = Vec::new();
            let mut bytes = 0;
            for &i in idx {
                let (spec, demand) = &p.items[usize::from(i)];
                let item = CreateItem {
                    index: i,
                    tenant: p.tenant,
                    demand: *demand,
                    spec: spec.clone(),
                };
                let len = size_of(&item);
                if bytes + len > BATCH_BYTES && !batch.is_empty() {
                    batches.push((*host, std::mem::take(&mut batch), false));
                    bytes = 0;
                }
                bytes += len;
                batch.push(item);
            }
            batches.push((*host, batch, true));
        }
        for h in unused {
            if h == self.me {
                self.release(key);
            } else {
                self.send(h, PlacementMsg::Abort { key });
            }
        }
        self.set_deadline(seq, now + self.config.create_timeout);
        for (host, items, last) in batches {
            if host == self.me {
                match self.create(now, key, items, last) {
                    Some(pids) => self.deliver_created(now, fed, tenant, key, pids),
                    None => return self.fail(now, seq, SpawnError::Aborted),
                }
            } else {
                self.send(host, PlacementMsg::Create { key, items, last });
            }
        }
    }

    pub(super) fn on_created(&mut self, now: Time, from: NodeId, key: ReqKey, pids: &[(u16, Pid)]) {
        if !self.mine(key) {
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
        // Hosts ask about unconfirmed processes for up to `orphan_timeout`: answer
        // them for longer than that.
        let until = now + self.config.orphan_timeout + self.config.confirm_timeout * 4;
        self.req.completed.insert(key.seq, until);
        self.set_timer(until, Timer::Done(key));
        self.outbox.push_back(PlacementOutput::Placed {
            processes: p.items.len() as u32,
            local,
        });
        let pids = p.pids.into_values().collect();
        self.reply(p.request, ApiReply::Spawned(Ok(pids)));
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
            mix(u64::from(key.requester.0) ^ key.seq.rotate_left(32)) % spread,
        );
        p.key = key;
        p.retried = true;
        p.phase = Phase::Backoff;
        p.offers.clear();
        p.room.clear();
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
        self.release_all(now, &p);
        self.reply(p.request, ApiReply::Spawned(Err(error)));
    }

    /// A host asks whether a provisional request is still wanted.
    pub(super) fn on_query(&mut self, from: NodeId, key: ReqKey) {
        if self.mine(key) && self.req.pending.contains_key(&key.seq) {
            return; // Still being decided: the requester's own deadline settles it.
        }
        let confirmed = self.mine(key) && self.req.completed.contains_key(&key.seq);
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

    pub(super) fn forget_completed(&mut self, now: Time, key: ReqKey) {
        if self.mine(key) && self.req.completed.get(&key.seq).is_some_and(|t| *t <= now) {
            self.req.completed.remove(&key.seq);
        }
    }

    // ---- pid calls and ps -------------------------------------------------

    /// A token no other call of this agent's life has used.
    pub(super) fn next_token(&mut self) -> u64 {
        self.req.next_token += 1;
        self.req.next_token
    }

    fn new_op(&mut self, op: Op) -> u64 {
        let token = self.next_token();
        let deadline = op.deadline;
        self.req.ops.insert(token, op);
        if deadline != Time::NEVER {
            self.set_timer(deadline, Timer::Op(token));
        }
        token
    }

    pub(super) fn start_pid_op(
        &mut self,
        now: Time,
        request: RequestId,
        tenant: TenantId,
        pid: Pid,
        op: PidOp,
    ) {
        let kind = match op {
            PidOp::Info => OpKind::Info,
            PidOp::Kill(_) => OpKind::Kill,
            PidOp::Wait => OpKind::Wait,
        };
        let host = pid.origin();
        let wait = if kind == OpKind::Wait {
            self.config.wait_poll
        } else {
            self.config.op_timeout
        };
        let deadline = if host == self.me {
            Time::NEVER
        } else {
            now + wait
        };
        let token = self.new_op(Op {
            request,
            kind,
            tenant,
            pid,
            deadline,
            retries: 0,
            resolving: false,
        });
        if host == self.me {
            if let Some(answer) = self.answer_pid(now, self.me, token, tenant, pid, op) {
                self.finish_op(None, token, answer);
            }
        } else {
            self.send(
                host,
                PlacementMsg::PidReq {
                    token,
                    tenant,
                    pid,
                    op,
                },
            );
        }
    }

    pub(super) fn on_pid_answer(
        &mut self,
        fed: Option<&Federation>,
        token: u64,
        answer: PidAnswer,
    ) {
        self.finish_op(fed, token, answer);
    }

    /// Completes the call `token` with `answer` (a `Waiting` only resets the wait's retries).
    pub(super) fn finish_op(&mut self, fed: Option<&Federation>, token: u64, answer: PidAnswer) {
        if answer == PidAnswer::Waiting {
            if let Some(op) = self.req.ops.get_mut(&token) {
                op.retries = 0;
            }
            return;
        }
        let Some(op) = self.req.ops.remove(&token) else {
            return;
        };
        let pid = op.pid;
        let reply = match op.kind {
            OpKind::Kill => ApiReply::Killed(match answer {
                PidAnswer::Signalled => Ok(()),
                PidAnswer::Exited(ExitStatus::Lost) => Err(KillError::Lost),
                PidAnswer::Exited(_) => Err(KillError::Exited),
                _ => Err(KillError::NoSuchProcess),
            }),
            OpKind::Info => ApiReply::Info(match answer {
                PidAnswer::Info(mut i) => {
                    i.distance = self.distance(fed, i.host);
                    Ok(i)
                }
                PidAnswer::Exited(s) => Ok(ProcInfo {
                    pid,
                    tenant: op.tenant,
                    host: pid.origin(),
                    command: String::new(),
                    demand: Demand::default(),
                    state: match s {
                        ExitStatus::Lost => ProcState::Lost,
                        s => ProcState::Exited(s),
                    },
                    age: Duration::ZERO,
                    distance: self.distance(fed, pid.origin()),
                }),
                _ => Err(InfoError::NoSuchProcess),
            }),
            OpKind::Wait => ApiReply::Waited(match answer {
                PidAnswer::Exited(s) => Ok(s),
                _ => Err(WaitError::NoSuchProcess),
            }),
        };
        self.reply(op.request, reply);
    }

    /// The federation removed `host`: every call waiting on one of its pids ends `Lost`
    /// now, and later ones end `Lost` when it stays silent.
    pub fn host_removed(&mut self, fed: Option<&Federation>, host: NodeId) {
        if self.req.lost_hosts.len() >= MAX_LOST_HOSTS {
            self.req.lost_hosts.pop_first();
        }
        self.req.lost_hosts.insert(host);
        let tokens: Vec<u64> = self
            .req
            .ops
            .iter()
            .filter(|(_, op)| op.pid.origin() == host)
            .map(|(t, _)| *t)
            .collect();
        for token in tokens {
            self.finish_op(fed, token, PidAnswer::Exited(ExitStatus::Lost));
        }
    }

    /// `host` was heard from: it is no longer taken for lost.
    pub(super) fn host_heard(&mut self, host: NodeId) {
        self.req.lost_hosts.remove(&host);
    }

    pub(super) fn distance(&self, fed: Option<&Federation>, host: NodeId) -> DistanceClass {
        if host == self.me {
            DistanceClass::SameHost
        } else if group_of(self.me, fed).contains(&host) {
            DistanceClass::SameGroup
        } else {
            DistanceClass::SameDc
        }
    }

    /// The host of the call `token` stayed silent until its deadline: a `wait` asks
    /// again (and, at its 1st, 2nd, 4th and 8th silence, also walks the tree to see
    /// whether the process is lost); a `kill` or `info` walks the tree once before it
    /// ends `Unreachable`. A host the federation removed ends the call `Lost` at once.
    pub(super) fn op_due(&mut self, now: Time, fed: Option<&Federation>, token: u64) {
        let Some(op) = self.req.ops.get_mut(&token) else {
            return;
        };
        if op.deadline > now {
            return;
        }
        if self.req.lost_hosts.contains(&op.pid.origin()) {
            self.finish_op(fed, token, PidAnswer::Exited(ExitStatus::Lost));
            return;
        }
        let (tenant, pid) = (op.tenant, op.pid);
        // Outside a tree there is nothing to walk.
        let can_walk = !op.resolving && fed.is_some_and(|f| !f.seats().is_empty());
        if op.kind == OpKind::Wait && op.retries < self.config.wait_retries {
            op.retries += 1;
            op.deadline = now + self.config.wait_poll;
            let walk = can_walk && op.retries.is_power_of_two();
            op.resolving |= walk;
            let at = op.deadline;
            self.set_timer(at, Timer::Op(token));
            let msg = PlacementMsg::PidReq {
                token,
                tenant,
                pid,
                op: PidOp::Wait,
            };
            self.send(pid.origin(), msg);
            if walk {
                self.walk_for(now, fed, PsFor::Resolve { token, pid }, tenant);
            }
            return;
        }
        if op.kind != OpKind::Wait && can_walk {
            op.resolving = true;
            op.deadline = Time::NEVER;
            return self.walk_for(now, fed, PsFor::Resolve { token, pid }, tenant);
        }
        self.op_unreachable(token);
    }

    /// What a walk of the tree found of the silent call `token`'s process: listed
    /// `Lost` (by the level-0 leader of a host that left its group), the call ends
    /// `Lost`; otherwise (listed live, or not listed: its host may not have been
    /// settled as gone yet) a `wait` goes on waiting and the others end `Unreachable`.
    pub(super) fn resolved(
        &mut self,
        fed: Option<&Federation>,
        token: u64,
        found: Option<ProcState>,
    ) {
        let Some(op) = self.req.ops.get_mut(&token) else {
            return;
        };
        op.resolving = false;
        match found {
            Some(ProcState::Lost) => {
                self.finish_op(fed, token, PidAnswer::Exited(ExitStatus::Lost));
            }
            _ if op.kind == OpKind::Wait => {}
            _ => self.op_unreachable(token),
        }
    }

    fn op_unreachable(&mut self, token: u64) {
        let Some(op) = self.req.ops.remove(&token) else {
            return;
        };
        let reply = match op.kind {
            OpKind::Kill => ApiReply::Killed(Err(KillError::Unreachable)),
            OpKind::Info => ApiReply::Info(Err(InfoError::Unreachable)),
            OpKind::Wait => ApiReply::Waited(Err(WaitError::Unreachable)),
        };
        self.reply(op.request, reply);
    }
}

/// What to ask each of `peers` new peers for: the uncovered units of each shape, split
/// between them with a margin of two (so that a gang does not hold a whole group's
/// capacity while it decides, which would starve the requests beside it).
fn share(p: &Pending, peers: usize) -> Vec<Shape> {
    let mut shapes = p.shapes.clone();
    for (k, s) in shapes.iter_mut().enumerate() {
        let uncovered = u32::from(s.count).saturating_sub(offered(p, k)).max(1);
        let per = uncovered.div_ceil(peers.max(1) as u32).saturating_mul(2);
        s.count = per.min(u32::from(s.count)).max(1) as u16;
    }
    shapes
}

/// What the offers so far leave uncovered, shape by shape (an offer of one shape
/// does not cover another), and how many units that is; the whole request when
/// every shape is covered in number but the plan still fails (affinity, or the
/// packing of `together` units).
fn uncovered(p: &Pending) -> (Demand, usize) {
    let missing: Vec<u16> = (0..p.shapes.len())
        .map(|k| {
            let short = u32::from(p.shapes[k].count).saturating_sub(offered(p, k));
            u16::try_from(short).unwrap_or(u16::MAX)
        })
        .collect();
    let units: usize = missing.iter().map(|m| usize::from(*m)).sum();
    if units > 0 {
        return (held(&p.shapes, &missing), units);
    }
    let all: Vec<u16> = p.shapes.iter().map(|s| s.count).collect();
    (held(&p.shapes, &all), p.units.len())
}

/// Units of shape `k` offered so far, by every host together.
fn offered(p: &Pending, k: usize) -> u32 {
    p.offers.values().map(|c| u32::from(c[k])).sum()
}

/// What `counts` of `shapes` reserve together.
fn held(shapes: &[Shape], counts: &[u16]) -> Demand {
    shapes
        .iter()
        .zip(counts)
        .fold(Demand::default(), |a, (s, c)| {
            (0..*c).fold(a, |a, _| a.plus(s.demand))
        })
}

/// The hosts of the pids a spec wants to be near.
fn near_hosts(spec: &ProcSpec) -> Vec<NodeId> {
    spec.affinity
        .iter()
        .filter_map(|a| match a {
            Affinity::Near(pid) => Some(pid.origin()),
            _ => None,
        })
        .collect()
}

/// SplitMix64's finaliser: a stable mix for deriving backoffs from keys.
pub(super) fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::Incarnation;

    fn pending(demands: &[u32]) -> Pending {
        let items: Vec<(ProcSpec, Demand)> = demands
            .iter()
            .map(|&cpu| {
                let demand = Demand {
                    cpu_millicores: cpu,
                    memory_bytes: 1 << 20,
                    accelerators: 0,
                };
                (ProcSpec::default(), demand)
            })
            .collect();
        let (units, shapes) = units_of(&items).expect("valid");
        Pending {
            request: RequestId(1),
            key: ReqKey {
                requester: NodeId(1),
                incarnation: Incarnation(1),
                seq: 1,
            },
            tenant: TenantId(1),
            items,
            units,
            shapes,
            phase: Phase::Offers,
            asked: BTreeSet::new(),
            offers: BTreeMap::new(),
            room: BTreeMap::new(),
            level: 0,
            deadline: Time::ZERO,
            plan: BTreeMap::new(),
            pids: BTreeMap::new(),
            group: Vec::new(),
            near: Vec::new(),
            retried: false,
            since: Time::ZERO,
        }
    }

    /// Regression: `apart` units were given hosts greedily, largest first, so a large
    /// unit could take the only host a smaller one fitted and the request failed
    /// `Short { Hosts }` although an assignment existed.
    #[test]
    fn apart_units_are_matched_not_taken_greedily() {
        let mut p = pending(&[4000, 100]);
        for u in &mut p.units {
            u.apart = Some(0);
        }
        for s in &mut p.shapes {
            s.one_per_host = true;
        }
        let (big, small) = (p.units[0].shape, p.units[1].shape);
        let mut offer = |host: u32, shapes: &[usize]| {
            let mut counts = vec![0; p.shapes.len()];
            for &k in shapes {
                counts[k] = 1;
            }
            p.offers.insert(NodeId(host), counts);
        };
        offer(2, &[big, small]);
        offer(3, &[big]);
        let chosen = plan(NodeId(1), &p).expect("an assignment exists");
        assert_eq!(chosen[&NodeId(2)], p.units[1].items);
        assert_eq!(chosen[&NodeId(3)], p.units[0].items);
    }

    /// Regression: escalation asked for "total minus everything offered", so offers of
    /// one shape hid the shortfall of another; a collection whose small processes were
    /// over-offered escalated asking for nothing, got no candidates and failed
    /// `Short { Hosts }` on a DC with room to spare.
    #[test]
    fn the_shortfall_is_counted_per_shape() {
        let mut p = pending(&[100, 100, 100, 4000]);
        // Two hosts offered three small ones each, nobody the large one.
        p.offers.insert(NodeId(2), vec![3, 0]);
        p.offers.insert(NodeId(3), vec![3, 0]);
        let (need, units) = uncovered(&p);
        assert_eq!((need.cpu_millicores, units), (4000, 1));
        // Everything is covered in number but the plan failed: look for room for all.
        p.offers.insert(NodeId(4), vec![0, 1]);
        let (need, units) = uncovered(&p);
        assert_eq!((need.cpu_millicores, units), (4300, 4));
    }

    /// A single process that the whole tree could not place fails rather than starting
    /// over (it used to retry once); a gang starts over while younger than its patience,
    /// and once more after that.
    #[test]
    fn only_gangs_start_over_and_only_within_their_patience() {
        let patience = Duration::from_millis(150);
        let at = |ms| Time::ZERO + Duration::from_millis(ms);
        let single = pending(&[1000]);
        assert!(!may_retry(patience, at(1), &single, false));
        let mut gang = pending(&[1000, 1000, 1000]);
        assert!(may_retry(patience, at(100), &gang, true));
        gang.retried = true;
        assert!(may_retry(patience, at(149), &gang, false));
        assert!(!may_retry(patience, at(150), &gang, false));
        gang.retried = false;
        assert!(may_retry(patience, at(400), &gang, false));
        assert!(!may_retry(patience, at(400), &gang, true));
    }
}
