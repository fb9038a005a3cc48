//! Supervision (issue 15): supervisors of tenant processes, as a system service
//! that outlives the host of any child and its own.
//!
//! # What this service owns
//!
//! - **Supervisors run here** (this agent is their *home*): created by
//!   `SpawnSupervised` (the children are spawned through placement with an
//!   internal call, [`ServiceOutput::Call`]), or taken over from a home that left
//!   the group. Each is a [`record::Record`]; the restart decisions are there.
//! - **Watching children.** Every `probe_period` the home sends each child's host
//!   [`SupervisionMsg::Watch`]; the host answers [`SupervisionMsg::Status`] (which
//!   watched processes ended, which it does not know) at once and again as soon as
//!   a watched process ends. A child is *lost* when its host is removed from the
//!   home's level-0 group, when the ledger reports it lost, when its host does not
//!   know it, or when its host has been silent for `lost_after`. A lost or ended
//!   child is restarted by its policy, strategy and intensity: spawned again through
//!   placement (same spec, so the same affinity), with a new pid. Its watchers
//!   through messaging's monitors are told by messaging (the old pid ends or is
//!   lost); names it held do not move to the new pid (not done).
//! - **Copies for the group** (the keepers' side): as the ledger does, a home sends
//!   each of its supervisors' records, on every change and every `refresh`, to its
//!   keepers (its level-0 leader and heir, itself excluded), in fragments under
//!   one datagram. A level-0 leader holding the copy of a home no longer in its
//!   group takes the supervisor over (it becomes the home); the heir holds copies so
//!   that a leader that dies is replaced by one that has them. Non-leaders drop
//!   copies of departed homes after `hold`.
//!
//! A home presumed lost that was only stalled or cut off may still run its
//! supervisors when it comes back: when one of the two homes gets the other's
//! record, the later take-over wins (record versions count take-overs) and the
//! other steps down on `Forget`. A host presumed lost may still
//! run its children: a pid given up as lost is killed when its host answers again
//! (`abandoned`); until then the child runs twice (no lease fences a cut-off host).
//! A home that was stalled gives its children's hosts a fresh `lost_after`. A restart whose spawn was in flight when its home
//! died is spawned again by the new home (placement kills the old request's
//! processes once their requester is gone, after its orphan timeout): until then
//! the child may run twice.
//!
//! Calls: `Supervisors` and `StopSupervisor` answer for the supervisors run by
//! the agent called (a supervisor taken over runs at its group's leader).

pub mod msg;
mod record;

pub use msg::SupervisionMsg;

use crate::agent::Identity;
use crate::ids::{NodeId, Pid};
use crate::service::{
    internal_request, Context, Service, ServiceEvent, ServiceNotice, ServiceOutput, SummaryPart,
};
use crate::time::Time;
use crate::wire::Reject;
use nefele_api::calls::{ApiCall, ApiReply, RequestId};
use nefele_api::spec::{ExitStatus, Signal};
use nefele_api::supervision::{SupervisedSpawn, SupervisionError, SupervisorId, SupervisorState};
use nefele_api::SpawnError;
use record::{Act, Child, Phase, Record};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

/// Supervision's parameters (`supervision = { ... }` in the agent's configuration).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SupervisionConfig {
    /// The federation instance supervision rides.
    pub instance: u8,
    /// How often a home asks its children's hosts about them.
    pub probe_period: Duration,
    /// How long a children's host may stay silent before its children count as lost.
    pub lost_after: Duration,
    /// How long after a failed restart spawn it is tried again.
    pub retry: Duration,
    /// How often a home resends its whole records to its keepers.
    pub refresh: Duration,
    /// How long a keeper that does not lead keeps the copy of a departed home.
    pub hold: Duration,
    /// How many ended local processes a host remembers, to answer a late `Watch`.
    pub ended_memory: u32,
}

impl Default for SupervisionConfig {
    fn default() -> Self {
        SupervisionConfig {
            instance: 0,
            probe_period: Duration::from_millis(300),
            lost_after: Duration::from_millis(1500),
            retry: Duration::from_millis(500),
            refresh: Duration::from_secs(5),
            hold: Duration::from_secs(30),
            ended_memory: 4096,
        }
    }
}

/// Why a supervision configuration is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SupervisionConfigError {
    /// A bound that must be positive is zero.
    #[error("{0} must be positive")]
    Zero(&'static str),
}

/// Supervision's part of the federation summaries: empty (nothing climbs the tree
/// yet; it costs one byte per beat, the `Option` tag of its slot).
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupervisionSummary {}

impl SummaryPart for SupervisionSummary {
    const UNKNOWN: Self = SupervisionSummary {};
    fn plus(self, _other: Self) -> Self {
        SupervisionSummary {}
    }
}

/// One take-over in a record's version: a take-over's version is above every
/// version of the record before it, whatever their changes.
const TAKE_OVER: u64 = 1 << 32;

/// A supervisor run here.
#[derive(Debug)]
struct Sup {
    rec: Record,
    /// Its record's version: the take-overs so far in the high 32 bits (see
    /// [`TAKE_OVER`]), changes since the last one below (bumped on every change).
    version: u64,
    /// Changed since last sent to the keepers.
    dirty: bool,
    /// The client's `SpawnSupervised`, until the first spawn answers.
    client: Option<RequestId>,
    /// Pids given up as lost, killed if their host answers again.
    abandoned: BTreeSet<Pid>,
}

/// An internal call in flight.
#[derive(Debug)]
enum Pending {
    /// A spawn of these children of `sup` (of `tenant`, to kill what it spawned if
    /// the supervisor stopped meanwhile).
    Spawn {
        sup: SupervisorId,
        tenant: nefele_api::TenantId,
        children: Vec<u32>,
    },
    /// A kill (its answer matters only as far as the watch says).
    Kill,
}

/// A copy of a supervisor of another home.
#[derive(Debug)]
struct Copy {
    home: NodeId,
    version: u64,
    rec: Record,
    /// Since when its home has been out of this agent's level-0 group.
    away_since: Option<Time>,
}

/// Fragments of a record being received.
#[derive(Debug)]
struct Partial {
    version: u64,
    parts: Vec<Option<Vec<u8>>>,
}

/// The most records one peer may have half-sent to a keeper at once. A record's
/// fragments are sent back to back, so a well-behaved home rarely has more than one
/// in flight; past the bound the peer's oldest half (in id order) is dropped (a
/// refresh sends it again), so a hostile peer can hold at most this many times
/// [`msg::MAX_PARTS`] fragments of memory at a keeper.
const MAX_PARTIAL_PER_PEER: usize = 16;

/// The supervision service of one agent.
#[derive(Debug)]
pub struct Supervision {
    me: Identity,
    config: SupervisionConfig,
    next_sequence: u32,
    next_call: u64,
    sups: BTreeMap<SupervisorId, Sup>,
    calls: BTreeMap<RequestId, Pending>,
    /// Home side: when each host of a watched child last answered.
    heard: BTreeMap<NodeId, Time>,
    /// Host side: live local processes, ended ones (bounded, oldest first), and
    /// who watches which (home, supervisor).
    live: BTreeSet<Pid>,
    ended: BTreeMap<Pid, ExitStatus>,
    ended_order: VecDeque<Pid>,
    watchers: BTreeMap<Pid, (NodeId, SupervisorId)>,
    /// The home of each supervisor watching here, with its take-over epoch.
    owners: BTreeMap<SupervisorId, (u32, NodeId)>,
    /// Keeper side.
    copies: BTreeMap<SupervisorId, Copy>,
    partial: BTreeMap<(NodeId, SupervisorId), Partial>,
    keepers: Vec<NodeId>,
    next_tick: Option<Time>,
    last_refresh: Time,
    outbox: VecDeque<ServiceOutput<SupervisionMsg>>,
}

impl Supervision {
    /// The supervisors run here, as a client of `tenant` sees them (all tenants:
    /// `None`), in id order.
    #[must_use]
    pub fn supervisors(
        &self,
        tenant: Option<nefele_api::TenantId>,
    ) -> Vec<nefele_api::supervision::SupervisorInfo> {
        self.sups
            .values()
            .filter(|s| tenant.is_none_or(|t| s.rec.tenant == t))
            .map(|s| s.rec.info(self.me.node))
            .collect()
    }

    fn send(&mut self, to: NodeId, msg: SupervisionMsg) {
        self.outbox.push_back(ServiceOutput::Send(to, msg));
    }

    fn call(&mut self, call: ApiCall, pending: Pending) {
        let request = internal_request(self.next_call);
        self.next_call += 1;
        self.calls.insert(request, pending);
        self.outbox.push_back(ServiceOutput::Call(request, call));
    }

    fn arm(&mut self, now: Time) {
        if self.next_tick.is_none() && (!self.sups.is_empty() || !self.copies.is_empty()) {
            self.next_tick = Some(now + self.config.probe_period);
        }
    }

    /// Carries out what a record's transition asks.
    fn act(&mut self, now: Time, sup: SupervisorId, acts: Vec<Act>) {
        let Some(s) = self.sups.get_mut(&sup) else {
            return;
        };
        s.dirty = true;
        s.version += 1;
        let tenant = s.rec.tenant;
        for act in acts {
            match act {
                Act::Kill(pid) => self.kill(tenant, pid),
                Act::GaveUp(pid) => self
                    .outbox
                    .push_back(ServiceOutput::Notice(ServiceNotice::GaveUp { pid })),
                Act::Spawn(children) => {
                    let Some(s) = self.sups.get(&sup) else {
                        continue;
                    };
                    let specs: Vec<_> = children
                        .iter()
                        .map(|&j| s.rec.specs[s.rec.children[j as usize].spec as usize].clone())
                        .collect();
                    let call = match <[_; 1]>::try_from(specs) {
                        Ok([spec]) => ApiCall::Spawn { tenant, spec },
                        Err(specs) => ApiCall::CSpawn { tenant, specs },
                    };
                    self.call(
                        call,
                        Pending::Spawn {
                            sup,
                            tenant,
                            children,
                        },
                    );
                }
            }
        }
        self.arm(now);
    }

    /// The process `pid` of supervisor `sup` ended (or was lost) as `status`.
    fn on_end(&mut self, now: Time, sup: SupervisorId, pid: Pid, status: ExitStatus) {
        let Some(s) = self.sups.get_mut(&sup) else {
            return;
        };
        if s.abandoned.remove(&pid) {
            return;
        }
        let Some(i) = s.rec.child_of(pid) else {
            return;
        };
        let acts = s.rec.child_ended(now, i, status);
        if status == ExitStatus::Lost {
            s.abandoned.insert(pid);
        }
        self.act(now, sup, acts);
    }

    /// Every child on `host` is lost (its host left or stayed silent).
    fn host_lost(&mut self, now: Time, host: NodeId) {
        self.heard.remove(&host);
        let lost: Vec<(SupervisorId, Pid)> = self
            .sups
            .iter()
            .flat_map(|(id, s)| {
                s.rec
                    .children
                    .iter()
                    .filter_map(|c| c.pid)
                    .filter(|p| p.origin() == host)
                    .map(move |p| (*id, p))
            })
            .collect();
        for (sup, pid) in lost {
            self.on_end(now, sup, pid, ExitStatus::Lost);
        }
    }

    fn new_supervisor(
        &mut self,
        now: Time,
        request: RequestId,
        tenant: nefele_api::TenantId,
        spawn: SupervisedSpawn,
        spec: nefele_api::supervision::SupervisionSpec,
    ) {
        let n = spawn.children();
        if let Err(why) = spec.check(n) {
            let reply = ApiReply::SpawnedSupervised(Err(SpawnError::Invalid(why)));
            return self.outbox.push_back(ServiceOutput::Reply(request, reply));
        }
        let (specs, call) = match spawn {
            SupervisedSpawn::One(s) => (vec![s.clone()], ApiCall::Spawn { tenant, spec: s }),
            SupervisedSpawn::N(n, s) => (vec![s.clone()], ApiCall::NSpawn { tenant, n, spec: s }),
            SupervisedSpawn::C(specs) => (specs.clone(), ApiCall::CSpawn { tenant, specs }),
        };
        let id = SupervisorId {
            origin: self.me.node,
            incarnation: self.me.incarnation,
            sequence: self.next_sequence,
        };
        self.next_sequence += 1;
        let children = (0..n)
            .map(|i| Child {
                spec: if specs.len() == 1 { 0 } else { i as u32 },
                policy: spec
                    .policy(i)
                    .unwrap_or(nefele_api::supervision::RestartPolicy::Permanent),
                pid: None,
                phase: Phase::Spawning,
                restarts: 0,
                recent: Vec::new(),
                cause: None,
            })
            .collect();
        let rec = Record {
            id,
            tenant,
            strategy: spec.strategy,
            intensity: spec.intensity,
            specs,
            children,
            history: Vec::new(),
            state: SupervisorState::Running,
        };
        self.sups.insert(
            id,
            Sup {
                rec,
                version: 0,
                // Copied to the keepers once its children run: a home that dies
                // before leaves its client without an answer and nothing to supervise.
                dirty: false,
                client: Some(request),
                abandoned: BTreeSet::new(),
            },
        );
        let children = (0..n as u32).collect();
        self.call(
            call,
            Pending::Spawn {
                sup: id,
                tenant,
                children,
            },
        );
        self.arm(now);
    }

    fn kill(&mut self, tenant: nefele_api::TenantId, pid: Pid) {
        let call = ApiCall::Kill {
            tenant,
            pid,
            signal: Signal::Kill,
        };
        self.call(call, Pending::Kill);
    }

    /// An internal call was answered.
    fn on_answer(&mut self, now: Time, request: RequestId, reply: &ApiReply) {
        let Some(Pending::Spawn {
            sup,
            tenant,
            children,
        }) = self.calls.remove(&request)
        else {
            return;
        };
        let Some(result) = reply.clone().spawn_result() else {
            return;
        };
        let result = &result;
        let Some(s) = self.sups.get_mut(&sup) else {
            // Stopped meanwhile: what it spawned goes too.
            for &pid in result.iter().flatten() {
                self.kill(tenant, pid);
            }
            return;
        };
        let client = s.client.take();
        match result {
            Ok(pids) => {
                let restarted = s.rec.spawned(&children, pids);
                // A pid no child took (the supervisor stopped meanwhile) is killed.
                let unwanted: Vec<Pid> = pids
                    .iter()
                    .filter(|p| s.rec.child_of(**p).is_none())
                    .copied()
                    .collect();
                s.dirty = true;
                s.version += 1;
                for (pid, since) in restarted {
                    let latency = now.saturating_since(since);
                    let notice = ServiceNotice::Restarted { pid, latency };
                    self.outbox.push_back(ServiceOutput::Notice(notice));
                }
                if let Some(client) = client {
                    let reply = ApiReply::SpawnedSupervised(Ok((sup, pids.clone())));
                    self.outbox.push_back(ServiceOutput::Reply(client, reply));
                }
                for pid in unwanted {
                    self.kill(tenant, pid);
                }
                for pid in pids {
                    self.heard.entry(pid.origin()).or_insert(now);
                }
                self.watch(now, sup);
            }
            Err(e) => {
                if let Some(client) = client {
                    self.sups.remove(&sup);
                    let reply = ApiReply::SpawnedSupervised(Err(e.clone()));
                    self.outbox.push_back(ServiceOutput::Reply(client, reply));
                } else {
                    // Pending again: tried anew at the next tick.
                    s.rec.spawn_failed(&children);
                }
            }
        }
    }

    /// Sends `Watch` for `sup`'s processes to their hosts.
    fn watch(&mut self, now: Time, sup: SupervisorId) {
        let Some(s) = self.sups.get(&sup) else {
            return;
        };
        let epoch = (s.version / TAKE_OVER) as u32;
        let mut by_host: BTreeMap<NodeId, Vec<Pid>> = BTreeMap::new();
        let pids = s
            .rec
            .children
            .iter()
            .filter(|c| matches!(c.phase, Phase::Running | Phase::Stopping))
            .filter_map(|c| c.pid)
            .chain(s.abandoned.iter().copied());
        for pid in pids {
            by_host.entry(pid.origin()).or_default().push(pid);
        }
        for (host, pids) in by_host {
            for chunk in pids.chunks(msg::MAX_PIDS) {
                if host == self.me.node {
                    self.on_watch(now, host, sup, epoch, chunk.to_vec());
                } else {
                    let pids = chunk.to_vec();
                    self.send(host, SupervisionMsg::Watch { sup, epoch, pids });
                }
            }
        }
    }

    /// Host side: a home asks about `pids`. A home of an earlier take-over than
    /// another that watches here (or of the same, from a higher node) is told to step
    /// down.
    fn on_watch(&mut self, now: Time, from: NodeId, sup: SupervisorId, epoch: u32, pids: Vec<Pid>) {
        let owner = *self.owners.entry(sup).or_insert((epoch, from));
        if owner.1 != from {
            if (epoch, std::cmp::Reverse(from)) < (owner.0, std::cmp::Reverse(owner.1)) {
                if from == self.me.node {
                    self.sups.remove(&sup);
                } else {
                    self.send(from, SupervisionMsg::Forget { sup });
                }
                return;
            }
            self.owners.insert(sup, (epoch, from));
        }
        let (mut ended, mut unknown) = (Vec::new(), Vec::new());
        for pid in pids {
            if pid.origin() != self.me.node {
                continue;
            }
            if self.live.contains(&pid) {
                self.watchers.insert(pid, (from, sup));
            } else if let Some(status) = self.ended.get(&pid) {
                ended.push((pid, *status));
            } else {
                unknown.push(pid);
            }
        }
        self.status_to(now, from, sup, true, ended, unknown);
    }

    /// Host side: tells `to` about `sup`'s processes here (to itself directly).
    fn status_to(
        &mut self,
        now: Time,
        to: NodeId,
        sup: SupervisorId,
        answer: bool,
        ended: Vec<(Pid, ExitStatus)>,
        unknown: Vec<Pid>,
    ) {
        if to == self.me.node {
            let me = self.me.node;
            self.on_status(now, me, sup, answer, ended, unknown);
        } else {
            let msg = SupervisionMsg::Status {
                sup,
                answer,
                ended,
                unknown,
            };
            self.send(to, msg);
        }
    }

    /// Home side: a host told about `sup`'s processes there.
    fn on_status(
        &mut self,
        now: Time,
        from: NodeId,
        sup: SupervisorId,
        answer: bool,
        ended: Vec<(Pid, ExitStatus)>,
        unknown: Vec<Pid>,
    ) {
        if let Some(t) = self.heard.get_mut(&from) {
            *t = now;
        }
        let Some(s) = self.sups.get_mut(&sup) else {
            return;
        };
        if answer {
            // An abandoned pid its host did not list runs after all: kill it.
            let listed: BTreeSet<Pid> = ended
                .iter()
                .map(|(p, _)| *p)
                .chain(unknown.iter().copied())
                .collect();
            let stale: Vec<Pid> = s
                .abandoned
                .iter()
                .filter(|p| p.origin() == from)
                .copied()
                .collect();
            let tenant = s.rec.tenant;
            for pid in &stale {
                s.abandoned.remove(pid);
            }
            for pid in stale.into_iter().filter(|p| !listed.contains(p)) {
                self.kill(tenant, pid);
            }
        }
        for (pid, status) in ended {
            self.on_end(now, sup, pid, status);
        }
        for pid in unknown {
            self.on_end(now, sup, pid, ExitStatus::Lost);
        }
    }

    /// Host side: a local process ended.
    fn local_ended(&mut self, now: Time, pid: Pid, status: ExitStatus) {
        self.live.remove(&pid);
        if self.ended.insert(pid, status).is_none() {
            self.ended_order.push_back(pid);
        }
        while self.ended_order.len() > self.config.ended_memory as usize {
            if let Some(old) = self.ended_order.pop_front() {
                self.ended.remove(&old);
            }
        }
        if let Some((home, sup)) = self.watchers.remove(&pid) {
            self.status_to(now, home, sup, false, vec![(pid, status)], Vec::new());
        }
    }

    /// The periodic work: probes, silent hosts, retries, copies, take-overs.
    fn tick(&mut self, now: Time, ctx: &Context<'_>) {
        // A tick this late means this agent was stalled: the silence of its
        // children's hosts is its own (it sent no probe), so they get a fresh
        // `lost_after` rather than being found lost all at once.
        if self
            .next_tick
            .is_some_and(|due| now.saturating_since(due) >= self.config.probe_period)
        {
            for t in self.heard.values_mut() {
                *t = now;
            }
        }
        self.next_tick = None;
        // Hosts silent too long: their children are lost.
        let silent: Vec<NodeId> = self
            .heard
            .iter()
            .filter(|(_, t)| now.saturating_since(**t) >= self.config.lost_after)
            .map(|(h, _)| *h)
            .collect();
        for host in silent {
            self.host_lost(now, host);
        }
        let ids: Vec<SupervisorId> = self.sups.keys().copied().collect();
        for sup in ids {
            let acts = self.sups.get_mut(&sup).map(|s| s.rec.spawn_ready());
            if let Some(acts) = acts.filter(|a| !a.is_empty()) {
                self.act(now, sup, acts);
            }
            self.watch(now, sup);
        }
        // Hosts no child runs on any more are not watched.
        let watched: BTreeSet<NodeId> = self
            .sups
            .values()
            .flat_map(|s| {
                s.rec
                    .children
                    .iter()
                    .filter_map(|c| c.pid)
                    .chain(s.abandoned.iter().copied())
                    .map(Pid::origin)
            })
            .collect();
        self.heard.retain(|h, _| watched.contains(h));
        // Host side: owners of supervisors that no longer watch anything here.
        let watching: BTreeSet<SupervisorId> = self.watchers.values().map(|(_, s)| *s).collect();
        self.owners.retain(|s, _| watching.contains(s));
        self.take_over(now, ctx);
        self.replicate(now, ctx);
        self.arm(now);
    }

    /// Sends changed records to the keepers (all of them to new keepers and at a
    /// refresh).
    fn replicate(&mut self, now: Time, ctx: &Context<'_>) {
        let keepers = ctx.tree.keepers();
        let refresh = now.saturating_since(self.last_refresh) >= self.config.refresh;
        if refresh {
            self.last_refresh = now;
        }
        let new_keepers: Vec<NodeId> = keepers
            .iter()
            .filter(|k| !self.keepers.contains(k))
            .copied()
            .collect();
        let mut sends = Vec::new();
        for (id, s) in &mut self.sups {
            if s.client.is_some() {
                continue;
            }
            let to: &[NodeId] = if refresh || s.dirty {
                &keepers
            } else {
                &new_keepers
            };
            s.dirty = false;
            if to.is_empty() {
                continue;
            }
            let Some(parts) = s.rec.fragments() else {
                continue;
            };
            let count = parts.len() as u16;
            for (i, bytes) in parts.into_iter().enumerate() {
                for &k in to {
                    sends.push((
                        k,
                        SupervisionMsg::Replica {
                            sup: *id,
                            version: s.version,
                            part: i as u16,
                            parts: count,
                            bytes: bytes.clone(),
                        },
                    ));
                }
            }
        }
        for (k, msg) in sends {
            self.send(k, msg);
        }
        self.keepers = keepers;
    }

    /// Keeper side: a fragment of `from`'s record of `sup`.
    fn on_replica(&mut self, now: Time, from: NodeId, msg: SupervisionMsg) {
        let SupervisionMsg::Replica {
            sup,
            version,
            part,
            parts,
            bytes,
        } = msg
        else {
            return;
        };
        if let Some(mine) = self.sups.get(&sup).map(|s| s.version) {
            // Another agent runs it too: one of the two took it over while the other
            // was away (stalled or cut off). The later take-over wins (then the
            // lower node): the other steps down, leaving the children to it.
            let (theirs, mine) = (version / TAKE_OVER, mine / TAKE_OVER);
            if (mine, from) > (theirs, self.me.node) {
                self.send(from, SupervisionMsg::Forget { sup });
                return;
            }
            self.sups.remove(&sup);
        }
        if self
            .copies
            .get(&sup)
            .is_some_and(|c| c.home == from && c.version >= version)
        {
            return;
        }
        if !self.partial.contains_key(&(from, sup)) {
            let mut halves = self.partial.keys().filter(|(home, _)| *home == from);
            if let Some(&oldest) = halves.next() {
                if 1 + halves.count() >= MAX_PARTIAL_PER_PEER {
                    self.partial.remove(&oldest);
                }
            }
        }
        let partial = self.partial.entry((from, sup)).or_insert_with(|| Partial {
            version,
            parts: Vec::new(),
        });
        if partial.version > version {
            return;
        }
        if partial.version < version || partial.parts.len() != usize::from(parts) {
            partial.version = version;
            partial.parts = vec![None; usize::from(parts)];
        }
        partial.parts[usize::from(part)] = Some(bytes);
        if partial.parts.iter().any(Option::is_none) {
            return;
        }
        let parts: Vec<Vec<u8>> = partial.parts.drain(..).flatten().collect();
        self.partial.remove(&(from, sup));
        if let Some(rec) = Record::from_fragments(&parts).filter(|r| r.id == sup) {
            self.copies.insert(
                sup,
                Copy {
                    home: from,
                    version,
                    rec,
                    away_since: None,
                },
            );
            self.arm(now);
        }
    }

    /// Keeper side: a leader takes over the supervisors whose home left its group;
    /// other keepers drop such copies after `hold`.
    fn take_over(&mut self, now: Time, ctx: &Context<'_>) {
        let Some(group) = ctx.tree.group(0) else {
            return;
        };
        let view = group.view();
        let leading = group.led_by_me();
        // Copies to take over (as the leader) or drop (past `hold`).
        let mut settle = Vec::new();
        for (id, c) in &mut self.copies {
            if view.contains(c.home) {
                c.away_since = None;
                continue;
            }
            let since = *c.away_since.get_or_insert(now);
            if leading || now.saturating_since(since) >= self.config.hold {
                settle.push(*id);
            }
        }
        self.partial.retain(|(home, _), _| view.contains(*home));
        for id in settle {
            let Some(c) = self.copies.remove(&id) else {
                continue;
            };
            if !leading {
                continue;
            }
            let mut rec = c.rec;
            rec.adopted();
            for pid in rec.children.iter().filter_map(|c| c.pid) {
                self.heard.entry(pid.origin()).or_insert(now);
            }
            self.sups.insert(
                id,
                Sup {
                    rec,
                    version: (c.version / TAKE_OVER + 1) * TAKE_OVER,
                    dirty: true,
                    client: None,
                    abandoned: BTreeSet::new(),
                },
            );
            let acts = self.sups.get_mut(&id).map(|s| s.rec.spawn_ready());
            self.act(now, id, acts.unwrap_or_default());
            self.watch(now, id);
        }
    }

    fn stop(
        &mut self,
        now: Time,
        request: RequestId,
        tenant: nefele_api::TenantId,
        id: SupervisorId,
        ctx: &Context<'_>,
    ) {
        let Some(s) = self.sups.get_mut(&id).filter(|s| s.rec.tenant == tenant) else {
            let reply = ApiReply::SupervisorStopped(Err(SupervisionError::NoSuchSupervisor));
            return self.outbox.push_back(ServiceOutput::Reply(request, reply));
        };
        let acts = s.rec.stop(SupervisorState::Stopped);
        self.act(now, id, acts);
        self.sups.remove(&id);
        for k in ctx.tree.keepers() {
            self.send(k, SupervisionMsg::Forget { sup: id });
        }
        let reply = ApiReply::SupervisorStopped(Ok(()));
        self.outbox.push_back(ServiceOutput::Reply(request, reply));
    }
}

impl Service for Supervision {
    type Msg = SupervisionMsg;
    type Config = SupervisionConfig;
    type Summary = SupervisionSummary;
    type ConfigError = SupervisionConfigError;

    fn validate(config: &SupervisionConfig) -> Result<(), SupervisionConfigError> {
        for (what, d) in [
            ("probe_period", config.probe_period),
            ("lost_after", config.lost_after),
            ("retry", config.retry),
            ("refresh", config.refresh),
        ] {
            if d.is_zero() {
                return Err(SupervisionConfigError::Zero(what));
            }
        }
        if config.ended_memory == 0 {
            return Err(SupervisionConfigError::Zero("ended_memory"));
        }
        Ok(())
    }

    fn instance(config: &SupervisionConfig) -> u8 {
        config.instance
    }

    fn new(me: Identity, config: SupervisionConfig, _seed: u64) -> Self {
        Supervision {
            me,
            config,
            next_sequence: 0,
            next_call: 0,
            sups: BTreeMap::new(),
            calls: BTreeMap::new(),
            heard: BTreeMap::new(),
            live: BTreeSet::new(),
            ended: BTreeMap::new(),
            ended_order: VecDeque::new(),
            watchers: BTreeMap::new(),
            owners: BTreeMap::new(),
            copies: BTreeMap::new(),
            partial: BTreeMap::new(),
            keepers: Vec::new(),
            next_tick: None,
            last_refresh: Time::ZERO,
            outbox: VecDeque::new(),
        }
    }

    fn config(&self) -> &SupervisionConfig {
        &self.config
    }

    fn kind(msg: &SupervisionMsg) -> &'static str {
        msg::kind(msg)
    }

    fn validate_msg(msg: &SupervisionMsg) -> Result<(), Reject> {
        msg::validate(msg)
    }

    fn handle_message(&mut self, now: Time, from: NodeId, msg: SupervisionMsg, ctx: &Context<'_>) {
        match msg {
            SupervisionMsg::Watch { sup, epoch, pids } => {
                self.on_watch(now, from, sup, epoch, pids);
            }
            SupervisionMsg::Status {
                sup,
                answer,
                ended,
                unknown,
            } => self.on_status(now, from, sup, answer, ended, unknown),
            replica @ SupervisionMsg::Replica { .. } => self.on_replica(now, from, replica),
            SupervisionMsg::Forget { sup } => {
                if self.copies.get(&sup).is_some_and(|c| c.home == from) {
                    self.copies.remove(&sup);
                }
                self.partial.remove(&(from, sup));
                // About a supervisor it runs: `from` runs it too and won (see
                // `on_replica`); this agent steps down, leaving the children to it.
                self.sups.remove(&sup);
            }
        }
        self.replicate(now, ctx);
    }

    fn handle_timeout(&mut self, now: Time, ctx: &Context<'_>) {
        if self.next_tick.is_some_and(|t| t <= now) {
            self.tick(now, ctx);
        }
    }

    fn wants(&self, event: &ServiceEvent) -> bool {
        matches!(
            event,
            ServiceEvent::ProcessStarted { .. }
                | ServiceEvent::ProcessExited { .. }
                | ServiceEvent::ProcessLost { .. }
                | ServiceEvent::HostRemoved { .. }
                | ServiceEvent::GroupChanged { .. }
        ) || matches!(event, ServiceEvent::Answered { request, .. } if self.calls.contains_key(request))
    }

    fn handle_event(&mut self, now: Time, event: &ServiceEvent, ctx: &Context<'_>) {
        match event {
            ServiceEvent::ProcessStarted { pid, .. } => {
                self.live.insert(*pid);
            }
            ServiceEvent::ProcessExited { pid, status, .. } => {
                self.local_ended(now, *pid, *status);
            }
            ServiceEvent::ProcessLost { pid, .. } => {
                let sups: Vec<SupervisorId> = self
                    .sups
                    .iter()
                    .filter(|(_, s)| s.rec.child_of(*pid).is_some())
                    .map(|(id, _)| *id)
                    .collect();
                for sup in sups {
                    self.on_end(now, sup, *pid, ExitStatus::Lost);
                }
            }
            ServiceEvent::HostRemoved {
                instance,
                node,
                level: 0,
            } if *instance == self.config.instance => {
                self.host_lost(now, *node);
                self.take_over(now, ctx);
            }
            ServiceEvent::GroupChanged { instance } if *instance == self.config.instance => {
                self.take_over(now, ctx);
            }
            ServiceEvent::Answered { request, reply } => self.on_answer(now, *request, reply),
            _ => {}
        }
        self.replicate(now, ctx);
    }

    fn owns(call: &ApiCall) -> bool {
        call.is_supervision()
    }

    fn handle_api(&mut self, now: Time, request: RequestId, call: ApiCall, ctx: &Context<'_>) {
        match call {
            ApiCall::SpawnSupervised {
                tenant,
                spawn,
                supervision,
            } => self.new_supervisor(now, request, tenant, spawn, supervision),
            ApiCall::Supervisors { tenant } => {
                let reply = ApiReply::Supervisors(self.supervisors(Some(tenant)));
                self.outbox.push_back(ServiceOutput::Reply(request, reply));
            }
            ApiCall::StopSupervisor { tenant, id } => self.stop(now, request, tenant, id, ctx),
            _ => {}
        }
        self.replicate(now, ctx);
    }

    fn poll_output(&mut self) -> Option<ServiceOutput<SupervisionMsg>> {
        crate::outbox::take_next(&mut self.outbox)
    }

    fn next_timeout(&self) -> Option<Time> {
        self.next_tick
    }

    fn own_summary(&self) -> SupervisionSummary {
        SupervisionSummary {}
    }

    fn pinned_summary(&self, _level: usize) -> Option<SupervisionSummary> {
        None
    }

    fn invariants(&self) -> bool {
        self.sups.values().all(|s| s.rec.consistent())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::Incarnation;

    #[test]
    fn a_peer_holds_a_bounded_number_of_half_sent_records_at_a_keeper() {
        let me = Identity {
            node: NodeId(1),
            incarnation: Incarnation(1),
        };
        let mut keeper = Supervision::new(me, SupervisionConfig::default(), 0);
        let (hostile, other) = (NodeId(2), NodeId(3));
        let half = |sequence| SupervisionMsg::Replica {
            sup: SupervisorId {
                origin: hostile,
                incarnation: Incarnation(1),
                sequence,
            },
            version: 1,
            part: 0,
            parts: 2,
            bytes: vec![0; msg::MAX_FRAGMENT],
        };
        keeper.on_replica(Time::ZERO, other, half(0));
        for sequence in 0..1_000 {
            keeper.on_replica(Time::ZERO, hostile, half(sequence));
        }
        let from = |n: NodeId| keeper.partial.keys().filter(|(h, _)| *h == n).count();
        assert_eq!(from(hostile), MAX_PARTIAL_PER_PEER);
        assert_eq!(from(other), 1, "another peer's half is not evicted");
    }
}
