//! The host side of placement: reservations under leases, provisional creation,
//! the process table (the namespace entries this agent is the authority for),
//! pid operations, and the federation-guided search for room
//! (`FindRoom`) that leaders serve.
//!
//! Invariants: `reserved` is the sum of the leases; a request key in `done` is
//! never created again (a duplicated or late `Create` does nothing); processes are
//! created only for a key in `offered` (this host offered room to that request,
//! within `offers_kept_for`), only of the tenant the offer was for, and
//! together no more than the offer's demand (issue 16: a peer holding the cluster
//! key cannot make a host run processes for a request it did not offer to, for
//! another tenant, or larger than offered; the lease itself need not be live, as a
//! big gang commits after its leases ran out); an entry whose request was aborted
//! is hidden from tenants and dropped when it exits.

use super::api::{Demand, DistanceClass, ProcInfo, ProcState, Resource};
use super::msg::{CreateItem, PidAnswer, PidOp, PlacementMsg, ReqKey, Shape};
use super::retained_keys::RetainedKeys;
use super::summary::PlacementSummary;
use super::{Placement, Timer, Want};
use crate::host::{ExitStatus, HostCommand, Usage};
use crate::ids::{Incarnation, NodeId, Pid, TenantId};
use crate::mix::splitmix64;
use crate::service::TreeView;
use crate::service::{ServiceEvent, ServiceOutput, Start};
use crate::time::Time;
use crate::wire::validate::MAX_PEER_DURATION;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// A reservation held for one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Lease {
    pub(super) reserved: Demand,
    pub(super) counts: Vec<u16>,
    pub(super) expires: Time,
}

/// Processes created for a request and not yet confirmed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Provisional {
    pub(super) pids: BTreeMap<u16, Pid>,
    /// When the requester is asked (again).
    pub(super) deadline: Time,
    /// The wait before the next query but one (doubles up to `query_backoff_max`).
    pub(super) backoff: Duration,
    /// Set while the query just sent is to be repeated once at `deadline` (a
    /// `confirm_timeout` after it): the round after that repeat starts then.
    pub(super) repeat_then: Option<Time>,
    /// A service's own spawn (a supervisor's child, [`CreateItem::leased`]): still
    /// unconfirmed then, its processes are killed (see [`LEASED_CONFIRMS`]).
    pub(super) until: Option<Time>,
}

/// How many `confirm_timeout`s a host keeps the unconfirmed processes of a
/// service's own spawn before it kills them. Silence never kills a client's
/// processes (the module doc's point 7), but a supervisor's child whose spawn it
/// saw fail (or whose supervisor's home died meanwhile) would run beside its
/// restart: the supervisor spawns it again only after its lease (3 s by default),
/// by when such processes are gone. A confirmation lost twice costs a restart.
const LEASED_CONFIRMS: u32 = 3;

/// One process this agent hosts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcEntry {
    /// The owner.
    pub tenant: TenantId,
    /// The binary (history is kept per binary).
    pub path: String,
    /// What it reserved.
    pub demand: Demand,
    /// Its life stage.
    pub state: ProcState,
    /// When it was created, or re-adopted by this life of the agent.
    pub created: Time,
    /// Its age when it was re-adopted (zero for processes created in this life).
    pub age_at_adoption: Duration,
    /// The request that created it.
    pub key: ReqKey,
    /// Its request was aborted: invisible to tenants, dropped when it exits.
    pub hidden: bool,
}

impl ProcEntry {
    /// How long it has existed at `now`, at most [`MAX_PEER_DURATION`] (the host
    /// reports any age it read on adoption; the age travels to peers, which accept
    /// no more).
    #[must_use]
    pub fn age(&self, now: Time) -> Duration {
        now.saturating_since(self.created)
            .saturating_add(self.age_at_adoption)
            .min(MAX_PEER_DURATION)
    }

    /// What `info` and `ps` tell about this process, hosted by `host`, at `now`.
    fn info(&self, pid: Pid, host: NodeId, now: Time) -> ProcInfo {
        ProcInfo {
            pid,
            tenant: self.tenant,
            host,
            command: self.path.clone(),
            demand: self.demand,
            state: self.state,
            age: self.age(now),
            distance: DistanceClass::SameHost,
        }
    }
}

/// The larger of `a` and `b` in each quantity.
fn larger(a: Demand, b: Demand) -> Demand {
    Demand {
        cpu_millicores: a.cpu_millicores.max(b.cpu_millicores),
        memory_bytes: a.memory_bytes.max(b.memory_bytes),
        accelerators: a.accelerators.max(b.accelerators),
    }
}

/// What this host offered to one request: processes of `tenant`, together at most
/// `offered` (the largest of its offers to the request), of which `created` exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Offered {
    tenant: TenantId,
    offered: Demand,
    created: Demand,
}

#[derive(Debug, Default)]
pub(super) struct HostState {
    pub(super) leases: BTreeMap<ReqKey, Lease>,
    pub(super) provisional: BTreeMap<ReqKey, Provisional>,
    /// Requests confirmed or aborted here, kept for a while against late duplicates.
    pub(super) done: RetainedKeys<()>,
    /// Requests this host offered room to (a lease, possibly run out since), kept for
    /// `offers_kept_for`: only these may create processes here, within the offer.
    pub(super) offered: RetainedKeys<Offered>,
    pub(super) table: BTreeMap<Pid, ProcEntry>,
    pub(super) waiters: super::waiters::Waiters,
}

impl Placement {
    /// Reserves what this host can take of `shapes` for `key`, processes of
    /// `tenant` (idempotent per key).
    pub(super) fn reserve(
        &mut self,
        now: Time,
        key: ReqKey,
        tenant: TenantId,
        shapes: &[Shape],
    ) -> Vec<u16> {
        if let Some(l) = self.host.leases.get(&key) {
            return l.counts.clone();
        }
        if self.host.done.contains(&key) {
            return vec![0; shapes.len()];
        }
        // One unit of each shape in turn, starting from a shape that depends on this
        // host: hosts asked for more shapes than they can take then cover different
        // shapes between them, instead of all offering the first ones.
        let mut free = self.free();
        let mut total = Demand::default();
        let mut counts = vec![0u16; shapes.len()];
        let start = self.me.0 as usize % shapes.len().max(1);
        let mut more = true;
        while more {
            more = false;
            for i in 0..shapes.len() {
                let k = (start + i) % shapes.len();
                let s = &shapes[k];
                let cap = if s.one_per_host { 1 } else { s.count };
                let fast_enough = s.cpu_class <= self.cpu_class;
                let enforced = s.limits.first_common(self.unenforced).is_none();
                if counts[k] < cap.min(s.count) && fast_enough && enforced && free.covers(s.demand)
                {
                    free = free.minus(s.demand);
                    total = total.plus(s.demand);
                    counts[k] += 1;
                    more = true;
                }
            }
        }
        if counts.iter().any(|c| *c > 0) {
            let until = now + self.config.offers_kept_for();
            let first = Offered {
                tenant,
                offered: total,
                created: Demand::default(),
            };
            let o = self.host.offered.insert(now, key, until, first);
            // Asked again after its lease ran out: the larger offer bounds the request.
            if o.tenant == tenant {
                o.offered = larger(o.offered, total);
            }
            let expires = now + self.config.lease;
            self.reserved = self.reserved.plus(total);
            self.host.leases.insert(
                key,
                Lease {
                    reserved: total,
                    counts: counts.clone(),
                    expires,
                },
            );
            self.set_timer(expires, Timer::Lease(key));
        }
        counts
    }

    pub(super) fn on_offer_req(
        &mut self,
        now: Time,
        from: NodeId,
        key: ReqKey,
        tenant: TenantId,
        shapes: &[Shape],
    ) {
        let counts = self.reserve(now, key, tenant, shapes);
        let free = self.free();
        let at = self.location;
        self.send(
            from,
            PlacementMsg::Offer {
                key,
                counts,
                free,
                at,
            },
        );
    }

    pub(super) fn release(&mut self, key: ReqKey) {
        if let Some(l) = self.host.leases.remove(&key) {
            self.reserved = self.reserved.minus(l.reserved);
        }
    }

    pub(super) fn expire_lease(&mut self, now: Time, key: ReqKey) {
        if self.host.leases.get(&key).is_some_and(|l| l.expires <= now) {
            self.release(key);
        }
    }

    /// Creates `items` for `key` provisionally; `None` if they do not fit (nothing done).
    pub(super) fn create(
        &mut self,
        now: Time,
        key: ReqKey,
        items: Vec<CreateItem>,
        total: u16,
    ) -> Option<Vec<(u16, Pid)>> {
        if self.host.done.contains(&key) {
            return None;
        }
        let known = self.host.provisional.get(&key);
        // New processes only for a request this host offered room to, of the tenant
        // and within the demand it offered (issue 16): any agent could otherwise
        // start processes here by naming itself the requester of a made-up request,
        // or for another tenant, or larger than offered. Items already created are
        // answered again regardless.
        let is_new = |i: &&CreateItem| !known.is_some_and(|p| p.pids.contains_key(&i.index));
        let new_demand = items
            .iter()
            .filter(is_new)
            .fold(Demand::default(), |a, i| a.plus(i.demand));
        let new_tenants: BTreeSet<TenantId> =
            items.iter().filter(is_new).map(|i| i.tenant).collect();
        if !new_tenants.is_empty() {
            let offer = self.host.offered.get(&key)?;
            let within = offer.offered.covers(offer.created.plus(new_demand));
            if new_tenants.iter().any(|t| *t != offer.tenant) || !within {
                return None;
            }
        }
        let lease = self
            .host
            .leases
            .get(&key)
            .map(|l| l.reserved)
            .unwrap_or_default();
        if !self.free().plus(lease).covers(new_demand) {
            return None;
        }
        if let Some(o) = self.host.offered.get_mut(&key) {
            o.created = o.created.plus(new_demand);
        }
        // Take the new processes out of the request's own reservation first.
        let from_lease = Demand {
            cpu_millicores: lease.cpu_millicores.min(new_demand.cpu_millicores),
            memory_bytes: lease.memory_bytes.min(new_demand.memory_bytes),
            accelerators: lease.accelerators.min(new_demand.accelerators),
        };
        if let Some(l) = self.host.leases.get_mut(&key) {
            l.reserved = l.reserved.minus(from_lease);
            self.reserved = self.reserved.minus(from_lease);
        }
        let deadline = now + self.config.confirm_timeout;
        let until = items
            .iter()
            .any(|i| i.leased)
            .then(|| now + self.config.confirm_timeout * LEASED_CONFIRMS);
        let mut created = Vec::with_capacity(items.len());
        let mut fresh = false;
        let prov = self.host.provisional.entry(key).or_insert_with(|| {
            fresh = true;
            super::host_side::Provisional {
                pids: BTreeMap::new(),
                deadline,
                backoff: self.config.confirm_timeout,
                repeat_then: None,
                until,
            }
        });
        let mut starts = Vec::new();
        let before = prov.pids.len();
        for item in items {
            if let Some(pid) = prov.pids.get(&item.index) {
                created.push((item.index, *pid));
                continue;
            }
            let pid = self.minter.mint();
            prov.pids.insert(item.index, pid);
            created.push((item.index, pid));
            self.committed = self.committed.plus(item.demand);
            self.presence.entered(item.tenant);
            self.outbox
                .push_back(ServiceOutput::Event(ServiceEvent::ProcessStarted {
                    pid,
                    tenant: item.tenant,
                    start: if item.leased {
                        Start::Supervised
                    } else {
                        Start::Spawned
                    },
                }));

            self.host.table.insert(
                pid,
                ProcEntry {
                    tenant: item.tenant,
                    path: item.spec.path.clone(),
                    demand: item.demand,
                    state: ProcState::Provisional,
                    created: now,
                    age_at_adoption: Duration::ZERO,
                    key,
                    hidden: false,
                },
            );
            // The host records what placement reserved, not only what the caller said.
            let mut spec = item.spec;
            let r = &mut spec.resources;
            r.cpu_millicores.get_or_insert(item.demand.cpu_millicores);
            r.memory_bytes.get_or_insert(item.demand.memory_bytes);
            r.accelerators.get_or_insert(item.demand.accelerators);
            starts.push(Box::new(HostCommand::Start {
                pid,
                tenant: item.tenant,
                spec,
            }));
        }
        let all_here = before + starts.len() >= usize::from(total);
        if fresh {
            self.set_timer(deadline, Timer::Provisional(key));
        }
        for s in starts {
            self.outbox.push_back(ServiceOutput::Host(s));
        }
        // Every process of this host's share is here: the rest of the reservation
        // goes (see `PlacementMsg::Create`'s `total`).
        if all_here {
            self.release(key);
        }
        Some(created)
    }

    pub(super) fn on_create(
        &mut self,
        now: Time,
        tree: &TreeView<'_>,
        from: NodeId,
        key: ReqKey,
        items: Vec<CreateItem>,
        total: u16,
    ) {
        if from != key.requester {
            return;
        }
        let Some(tenant) = items.first().map(|i| i.tenant) else {
            return;
        };
        match self.create(now, key, items, total) {
            Some(pids) => self.deliver_created(now, tree, tenant, key, pids),
            None if self.host.done.contains(&key) => {}
            None => self.send(from, PlacementMsg::CreateRefused { key }),
        }
    }

    fn mark_done(&mut self, now: Time, key: ReqKey) {
        let until = now + self.config.exit_retention;
        self.host.done.insert(now, key, until, ());
    }

    /// The request is complete: its processes are kept.
    pub(super) fn on_confirm(&mut self, now: Time, key: ReqKey) {
        if let Some(p) = self.host.provisional.remove(&key) {
            for pid in p.pids.values() {
                if let Some(e) = self.host.table.get_mut(pid) {
                    if e.state == ProcState::Provisional {
                        e.state = ProcState::Running;
                    }
                }
                self.ledger_changed(now, *pid);
            }
        }
        self.release(key);
        self.mark_done(now, key);
    }

    /// The request failed: kill its processes here, drop its reservation.
    pub(super) fn on_abort(&mut self, now: Time, key: ReqKey) {
        if let Some(p) = self.host.provisional.remove(&key) {
            for pid in p.pids.into_values() {
                if let Some(e) = self.host.table.get_mut(&pid) {
                    e.hidden = true;
                    if !matches!(e.state, ProcState::Exited(_)) {
                        self.kill_process(pid);
                    }
                }
            }
        }
        self.release(key);
        self.mark_done(now, key);
    }

    /// `requester` was just heard from, so its link works now: its requests this host
    /// has asked about and holds unsettled are asked about again within
    /// `confirm_timeout`, however long their wait had grown. An answer lost on a
    /// link that works would otherwise wait `query_backoff_max` for the next query
    /// (the swarm's seed 389: two `Abort` answers lost in a row at 2% loss left a
    /// failed request's process running 6 s after the partition healed).
    pub(super) fn requester_heard(&mut self, now: Time, requester: NodeId) {
        let first = ReqKey {
            requester,
            incarnation: Incarnation(0),
            seq: 0,
        };
        let (short, soon) = (
            self.config.confirm_timeout,
            now + self.config.confirm_timeout,
        );
        let mut due = Vec::new();
        for (key, p) in self.host.provisional.range_mut(first..) {
            if key.requester != requester {
                break;
            }
            // Only entries already asked about (their wait has doubled) and not due
            // sooner anyway; the wait starts over from the shortest.
            if p.backoff > short && p.deadline > soon {
                p.backoff = short;
                p.deadline = soon;
                p.repeat_then = None;
                due.push(*key);
            }
        }
        for key in due {
            self.set_timer(soon, Timer::Provisional(key));
        }
    }

    pub(super) fn provisional_due(&mut self, now: Time, key: ReqKey) {
        let Some(p) = self.host.provisional.get_mut(&key) else {
            return;
        };
        if p.deadline > now {
            return;
        }
        if p.until.is_some_and(|t| t <= now) {
            return self.on_abort(now, key);
        }
        // Ask (again), waiting longer each round: silence alone never kills (a
        // partitioned requester answers once the partition heals; see the module
        // docs). A round longer than two repeats asks twice, the second time a
        // `confirm_timeout` after the first, so that one answer lost on a link that
        // works costs that short wait, not the whole round.
        let quick = self.config.confirm_timeout;
        p.deadline = match p.repeat_then.take() {
            Some(next_round) => next_round,
            None => {
                p.backoff = (p.backoff * 2).min(self.config.query_backoff_max);
                let next_round = now + p.backoff;
                if p.backoff > quick * 2 && key.requester != self.me {
                    p.repeat_then = Some(next_round);
                    now + quick
                } else {
                    next_round
                }
            }
        };
        if let Some(t) = p.until {
            p.deadline = p.deadline.min(t);
        }
        let at = p.deadline;
        self.set_timer(at, Timer::Provisional(key));
        if key.requester == self.me {
            self.on_query(self.me, key);
        } else {
            self.send(key.requester, PlacementMsg::Query { key });
        }
    }

    /// Takes back the table entry of a process an earlier life of this agent
    /// started and the host re-adopted: it runs here, committed, confirmed long ago.
    pub(super) fn adopt(
        &mut self,
        now: Time,
        pid: Pid,
        tenant: TenantId,
        path: String,
        demand: Demand,
        age: Duration,
    ) {
        if pid.origin() != self.me || self.host.table.contains_key(&pid) {
            return;
        }
        self.committed = self.committed.plus(demand);
        self.presence.entered(tenant);
        self.event(ServiceEvent::ProcessStarted {
            pid,
            tenant,
            start: Start::Adopted,
        });
        self.host.table.insert(
            pid,
            ProcEntry {
                tenant,
                path,
                demand,
                state: ProcState::Running,
                created: now,
                age_at_adoption: age,
                // Its request ended in an earlier life; no requester will ask about it.
                key: ReqKey {
                    requester: self.me,
                    incarnation: pid.incarnation(),
                    seq: 0,
                },
                hidden: false,
            },
        );
        self.ledger_changed(now, pid);
    }

    pub(super) fn on_exited(
        &mut self,
        now: Time,
        pid: Pid,
        status: ExitStatus,
        usage: Option<Usage>,
    ) {
        let Some(e) = self.host.table.get_mut(&pid) else {
            return;
        };
        if matches!(e.state, ProcState::Exited(_)) {
            return;
        }
        e.state = ProcState::Exited(status);
        let (demand, hidden, tenant, requester) = (e.demand, e.hidden, e.tenant, e.key.requester);
        let path = e.path.clone();
        self.committed = self.committed.minus(demand);
        self.event(ServiceEvent::ProcessExited {
            pid,
            tenant,
            status,
        });
        if hidden {
            self.host.table.remove(&pid);
            self.presence_left(tenant);
            return;
        }
        self.ledger_changed(now, pid);
        for (node, token) in self.host.waiters.take(self.me, pid) {
            self.pid_answer_to(node, token, PidAnswer::Exited(status));
        }
        if let Some(u) = usage.filter(|u| !u.wall_time.is_zero()) {
            let cpu = (u.cpu_time.as_secs_f64() / u.wall_time.as_secs_f64() * 1000.0) as u32;
            let mem = u.peak_memory_bytes;
            if requester == self.me {
                self.learn(tenant, path, cpu, mem);
            } else {
                let msg = PlacementMsg::Ran {
                    pid,
                    cpu_millicores: cpu,
                    memory_bytes: mem,
                };
                self.send(requester, msg);
            }
        }
        self.set_timer(now + self.config.exit_retention, Timer::Forget(pid));
    }

    pub(super) fn forget(&mut self, _now: Time, pid: Pid) {
        let Some(tenant) = self
            .host
            .table
            .get(&pid)
            .filter(|e| matches!(e.state, ProcState::Exited(_)))
            .map(|e| e.tenant)
        else {
            return;
        };
        self.host.table.remove(&pid);
        self.host.waiters.take(self.me, pid);
        self.presence_left(tenant);
    }

    /// Answers a pid operation for `tenant`; a wait is registered (`Waiting` for a
    /// remote asker, `None` for this agent's own client).
    pub(super) fn answer_pid(
        &mut self,
        now: Time,
        asker: NodeId,
        token: u64,
        tenant: TenantId,
        pid: Pid,
        op: PidOp,
    ) -> Option<PidAnswer> {
        let adopted = self.host.table.contains_key(&pid);
        if pid.origin() == self.me && pid.incarnation() < self.incarnation && !adopted {
            // Created in an earlier life of this host and not re-adopted: lost with it.
            return Some(PidAnswer::Exited(ExitStatus::Lost));
        }
        let Some(e) = self
            .host
            .table
            .get(&pid)
            .filter(|e| e.tenant == tenant && !e.hidden)
        else {
            return Some(PidAnswer::NoSuch);
        };
        match (op, e.state) {
            (PidOp::Info, _) => Some(PidAnswer::Info(e.info(pid, self.me, now))),
            (PidOp::Unwait, _) => None,
            (_, ProcState::Exited(s)) => Some(PidAnswer::Exited(s)),
            (PidOp::Kill(signal), _) => {
                self.outbox
                    .push_back(ServiceOutput::Host(Box::new(HostCommand::Kill {
                        pid,
                        signal,
                    })));
                Some(PidAnswer::Signalled)
            }
            (PidOp::Wait, _) => {
                // Over its bound, a peer's wait is not registered and not answered.
                let registered = self.host.waiters.add(self.me, pid, asker, token);
                (registered && asker != self.me).then_some(PidAnswer::Waiting)
            }
        }
    }

    pub(super) fn on_pid_req(
        &mut self,
        now: Time,
        from: NodeId,
        token: u64,
        tenant: TenantId,
        pid: Pid,
        op: PidOp,
    ) {
        if op == PidOp::Unwait {
            return self.unwait(from, token, pid);
        }
        if let Some(answer) = self.answer_pid(now, from, token, tenant, pid, op) {
            self.send(from, PlacementMsg::PidAns { token, answer });
        }
    }

    /// Forgets `asker`'s wait `token` on `pid` (only the asker's own).
    pub(super) fn unwait(&mut self, asker: NodeId, token: u64, pid: Pid) {
        self.host.waiters.remove(self.me, pid, asker, token);
    }

    fn pid_answer_to(&mut self, node: NodeId, token: u64, answer: PidAnswer) {
        if node == self.me {
            self.finish_op(&TreeView::empty(self.me), token, answer);
        } else {
            self.send(node, PlacementMsg::PidAns { token, answer });
        }
    }

    /// The tenant's visible entries on this host.
    pub(super) fn tenant_entries(&self, now: Time, tenant: TenantId) -> Vec<ProcInfo> {
        let mut entries: Vec<ProcInfo> = self
            .host
            .table
            .iter()
            .filter(|(_, e)| e.tenant == tenant && !e.hidden)
            .map(|(pid, e)| e.info(*pid, self.me, now))
            .collect();
        entries.extend(self.ledger.lost_entries(now, tenant));
        entries
    }

    /// A leader at `level` looks for room in its subtree: at level 0 it names
    /// members whose summaries show room for `min`; higher up it forwards to members
    /// whose subtree summaries show room. Either way it takes enough of them to hold
    /// twice the units still needed and twice the hosts, counting what a summary
    /// holds in units of `min` by cpu *and* memory (a subtree's count is an upper
    /// bound: its summary is a sum).
    ///
    /// The members taken start at a point drawn from the request key rather than at
    /// the roomiest: summaries are a heartbeat old, and requests escalating at the
    /// same time all asked the same roomiest hosts, which only the first of them got.
    pub(super) fn on_find_room(
        &mut self,
        now: Time,
        tree: &TreeView<'_>,
        key: ReqKey,
        level: u8,
        want: Want,
        skip: NodeId,
    ) {
        let Want {
            min,
            need,
            hosts,
            cpu_class,
            avoid_racks,
        } = want;
        let seat = tree.group(level);
        let Some(seat) = seat.filter(|s| s.view().leader == self.me) else {
            self.send_candidates(now, tree, key, Vec::new());
            return;
        };
        if let Some(resource) = absent(tree, level, min, cpu_class) {
            if key.requester == self.me {
                self.on_absent(now, key, resource);
            } else {
                self.send(key.requester, PlacementMsg::Absent { key, resource });
            }
            return;
        }
        let mut roomy: Vec<(u64, u64, NodeId, bool)> = seat
            .summaries()
            .iter()
            .filter(|(m, _)| **m != skip && **m != key.requester)
            // No agent of the subtree has room for the smallest process.
            .map(|(m, s)| (m, s.agents, PlacementSummary::of(s)))
            .filter(|(_, _, s)| {
                s.largest_free_cpu_millicores >= u64::from(min.cpu_millicores)
                    && s.largest_free_memory_bytes >= min.memory_bytes
                    && s.largest_free_accelerators >= min.accelerators
                    && s.has_class(cpu_class)
            })
            .map(|(m, agents_in, s)| {
                let agents = u64::from(agents_in.max(1));
                let units = units_within(s.free_cpu_millicores, s.free_memory_bytes, min);
                // A subtree whose average host has no room for a unit is fragmented
                // for it: only an outlier may fit one, so count it for one at most.
                let per_host = units_within(
                    s.free_cpu_millicores / agents,
                    s.free_memory_bytes / agents,
                    min,
                );
                let units = if per_host == 0 { units.min(1) } else { units };
                let old_racks = s.racks & !avoid_racks == 0;
                (units, u64::from(agents_in), *m, old_racks)
            })
            .filter(|(units, _, _, _)| *units > 0)
            .collect();
        if !roomy.is_empty() {
            let salt = u64::from(key.requester.0) << 40 ^ key.seq << 8 ^ u64::from(level);
            let start = splitmix64(salt) % roomy.len() as u64;
            roomy.rotate_left(start as usize);
        }
        if avoid_racks != 0 {
            // `spread`: subtrees with racks not offered from yet first (stable).
            roomy.sort_by_key(|r| r.3);
        }
        let want_units = units_needed(need, min).saturating_mul(2);
        let want_agents = u64::from(hosts) * 2;
        let (mut units, mut agents) = (0u64, 0u64);
        let chosen: Vec<NodeId> = roomy
            .iter()
            .take_while(|(u, a, _, _)| {
                let more = units < want_units || agents < want_agents;
                units = units.saturating_add(*u);
                agents = agents.saturating_add(*a);
                more
            })
            .take(64)
            .map(|(_, _, n, _)| *n)
            .collect();
        if level == 0 || chosen.is_empty() {
            self.send_candidates(now, tree, key, chosen);
            return;
        }
        for child in chosen {
            if child == self.me {
                self.on_find_room(now, tree, key, level - 1, want, skip);
            } else {
                let msg = PlacementMsg::FindRoom {
                    key,
                    level: level - 1,
                    min,
                    need,
                    hosts,
                    skip,
                    cpu_class,
                    avoid_racks,
                };
                self.send(child, msg);
            }
        }
    }

    fn send_candidates(&mut self, now: Time, tree: &TreeView<'_>, key: ReqKey, hosts: Vec<NodeId>) {
        if key.requester == self.me {
            self.add_candidates(now, tree, key, &hosts);
        } else {
            self.send(key.requester, PlacementMsg::Candidates { key, hosts });
        }
    }
}

/// How many units of `unit` free cpu and memory hold, counting both.
fn units_within(free_cpu_millicores: u64, free_memory_bytes: u64, unit: Demand) -> u64 {
    let cpu = free_cpu_millicores / u64::from(unit.cpu_millicores.max(1));
    let memory = free_memory_bytes / unit.memory_bytes.max(1);
    cpu.min(memory)
}

/// How many units of `unit` make `need` (at least one), by the scarcer of cpu and memory.
fn units_needed(need: Demand, unit: Demand) -> u64 {
    let cpu = u64::from(need.cpu_millicores).div_ceil(u64::from(unit.cpu_millicores.max(1)));
    let memory = need.memory_bytes.div_ceil(unit.memory_bytes.max(1));
    cpu.max(memory).max(1)
}

/// At the leader of the top group (no ancestors), once every member has
/// reported: the resource no host of the whole tree has, busy or not (a cpu of
/// `cpu_class` or faster, or as many accelerators as the smallest process asks).
fn absent(tree: &TreeView<'_>, level: u8, min: Demand, cpu_class: u8) -> Option<Resource> {
    let seat = tree.group(level)?;
    let view = seat.view();
    let heard = |m: &NodeId| *m == view.leader || seat.summaries().contains_key(m);
    if !view.ancestors.is_empty() || !view.members.iter().all(heard) {
        return None;
    }
    let all = PlacementSummary::of(&tree.group_summary(level)?);
    if !all.has_class(cpu_class) {
        Some(Resource::CpuClass(cpu_class))
    } else if all.max_accelerators < min.accelerators {
        Some(Resource::Accelerators)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Room is counted by the scarcer of cpu and memory: a search that counted cpu
    /// only sent memory-bound requests to hosts with cpu to spare and no memory.
    #[test]
    fn room_is_counted_by_the_scarcer_resource() {
        let unit = Demand {
            cpu_millicores: 8000,
            memory_bytes: 48 << 30,
            accelerators: 0,
        };
        assert_eq!(units_within(325_000, 998 << 30, unit), 20);
        assert_eq!(units_within(64_000, 40 << 30, unit), 0);
        let need = Demand {
            cpu_millicores: 8000,
            memory_bytes: 96 << 30,
            accelerators: 0,
        };
        assert_eq!(units_needed(need, unit), 2);
        assert_eq!(units_needed(Demand::default(), unit), 1);
    }
}
