//! Placement and the namespace (ARCHITECTURE.md §3 and §5): where
//! processes run, their global pids, and the process table.
//!
//! # What this service owns
//!
//! - As a **host**: the capacity of its server, the reservations it holds for
//!   other agents' requests (each under a lease that runs out by itself), and the
//!   process table entries of the processes it runs (the namespace: the hosting
//!   agent is the authority for an entry). It mints the pids of the processes it
//!   creates, so a pid's origin is its host: `kill`, `info` and `wait` go straight
//!   there, with no directory.
//! - As a **requester**: the requests of its local clients in flight, and the
//!   history of earlier runs of each (tenant, binary), which fills what a spec
//!   leaves out.
//!
//! # The protocol (one request, `n` processes)
//!
//! 1. The requester fills each spec's demand (explicit → tenant default →
//!    history → workload profile → global default) and groups the processes in
//!    *units* (a `together` tag makes one unit) of a few *shapes*.
//! 2. **Local**: if its own server can take every unit, it creates them at once
//!    (no message at all).
//! 3. **Group**: otherwise it sends `OfferReq` to its level-0 group peers. Each
//!    peer reserves what it can take (under a lease of `lease`) and answers
//!    `Offer` (a host asked for several shapes takes them round-robin from a
//!    start of its own, so peers cover different shapes). When all have answered
//!    (or after `offer_timeout`) the requester consolidates.
//! 4. **Escalation**: what is not covered, shape by shape, goes to the leader of
//!    the level-1 group (then level 2, …, up to the root; the view's ancestors
//!    name one leader per level) as `FindRoom`; leaders descend into member
//!    subtrees whose federation summaries show room, and level-0 leaders answer
//!    `Candidates` (hosts whose summaries show room), which the requester then
//!    asks for offers. Room is counted in units of the smallest process by cpu and
//!    memory; a subtree whose average host has no room for one counts for one at
//!    most (its summary is a sum, and fragmented room fits nothing); members are
//!    taken from a start drawn from the request key, not roomiest first, so that
//!    requests escalating together do not all ask the same hosts. When every host
//!    asked has answered (an empty or known `Candidates` counts as an answer) and
//!    the request still does not fit, it goes one level up at once; at the root it
//!    waits out `escalate_timeout` for stragglers. Then a single process fails; a
//!    gang releases everything and starts again after a backoff while younger than
//!    `gang_patience` (and once more after that).
//! 5. **Commit**: once every unit has a host, the requester sends `Create`
//!    (batched under the MTU); hosts create the processes *provisionally*
//!    (idempotently per (request, index)), answer `Created` with the pids (once
//!    a tenant new to the host is registered with the tenant index), and
//!    release what remains of the request's reservation. When every pid is in,
//!    the requester sends `Confirm` and replies to its client. Hosts that
//!    reserved but were not chosen get `Abort`, which frees their lease at once.
//! 6. **Failure**: if the request cannot be covered, it fails with the resource
//!    that is short. A chosen host whose `Created` has not come is sent its
//!    `Create` again every quarter of `create_timeout` (creation is idempotent, so
//!    one lost message does not fail a gang); if it still has not answered
//!    `Created` within `create_timeout`, the requester sends `Abort` everywhere
//!    (hosts kill the request's processes) and replies `Aborted`.
//! 7. **In doubt** (2PC's blocking problem): a host holding provisional processes
//!    unconfirmed after `confirm_timeout` asks the requester (`Query`), and asks
//!    again while it is silent, each wait twice the last, up to
//!    `query_backoff_max`; a wait longer than two `confirm_timeout`s starts with
//!    the same query repeated after one, so that a lost answer on a link that
//!    works costs that short wait, not the whole round. Silence alone never kills: a requester cut off by a
//!    partition may have answered its client `Spawned`. The processes are killed
//!    only when the requester says `Abort` (it failed the request, or it is a
//!    newer life of the requester, which knows none of its earlier life's
//!    requests: the requester is known dead). They are kept when it says
//!    `Confirm`. A removal by the federation (`HostRemoved`) is *not* taken as
//!    death: a partition removes live agents too, and the removed requester may
//!    have answered `Spawned` (the partition property test in `sim-tests` lost
//!    processes of placed gangs that way). The requester answers from what it knows: a request
//!    of its own life still in flight gets no answer yet (its own deadline settles
//!    it); one that failed after its `Create`s were sent gets `Abort`; any other
//!    of its life gets `Confirm` (*presumed commit*: a host holds something of a
//!    request only once `Create` was sent, and such a request either is placed or
//!    is recorded as failed). So a request answered `Spawned` never loses a
//!    process to a partition, however long, and one answered failed loses its
//!    processes as soon as each host can hear the requester again. The one
//!    exception: a service's own spawn (a supervisor's child, `CreateItem::leased`)
//!    still unconfirmed three `confirm_timeout`s after its creation is killed, so
//!    that a child whose spawn failed (or whose supervisor moved) cannot run beside
//!    its restart; its supervisor restarts it if it was placed after all.
//!
//!    Any placement message from the requester shows its link works: the entries
//!    already asked about are asked again within `confirm_timeout`, so an answer
//!    lost on a working link costs one short wait, not `query_backoff_max`.
//!
//!    What bounds the waiting: a provisional entry holds its processes' demand
//!    as committed, so the host's capacity bounds the entries, and each asks at
//!    most twice per `query_backoff_max` while the requester is silent (at most
//!    once per `confirm_timeout` while it is heard). The requester remembers a failed request
//!    for `failed_retention` and at most [`MAX_FAILED`] of them (the oldest is
//!    forgotten first): a host cut off for longer than that from a requester whose
//!    request failed is then told `Confirm`, and the processes run on visibly, as
//!    the tenant's, until they exit or are killed. A requester that dies for good
//!    and whose node never comes back is never known dead: its provisional
//!    processes stay (hidden from nobody, counted against capacity) until they
//!    exit or are killed.
//!
//!    So no process of a failed request stays running once its hosts can hear the
//!    requester, and no reservation outlives its lease.
//!
//! **The tenant index** (the `presence` module): each agent's federation summary
//! carries the tenants of its subtree; the first process of a tenant on a host is
//! registered up the leaders before the host answers `Created`, so `ps(tenant)`
//! (the `ps` module) walks only the subtrees that may hold the tenant, and never
//! misses a process whose spawn has returned.
//!
//! **Lost processes**: each host reports changes of its table to its level-0
//! leader and heir (the `ledger` module); when a host leaves the group (crash),
//! the leader lists its processes as `Lost` in `ps` for `lost_retention`.
//!
//! Affinity: `together(tag)` → one host; `apart(tag)` → distinct hosts;
//! `spread(tag)` → distinct racks when it can (every `Offer` says where its host
//! stands, `HostResources::location`): a plan that puts some spread tag in too few
//! racks escalates like a request that does not fit (the search skips the
//! subtrees already asked and visits first those with racks not offered yet,
//! from the `racks` bitset of the summaries); at the top it is committed with
//! distinct hosts and answered `SpawnedUnspread`, naming those tags;
//! `near(pid)` → the pid's host is asked for an offer first, and hosts are
//! preferred by nearness to it: its host, its rack, its row, then the rest.
//!
//! Heterogeneity: a process may need a cpu speed class (`cpu_class`, or faster)
//! and accelerators; a host offers only shapes it can take, the summaries carry
//! the classes and the most accelerators of each subtree (`summary`), the search
//! descends only into subtrees that have them, and the leader of the top group
//! answers `Absent` when no host of the tree has them at all: the request fails
//! at once with `SpawnError::Unavailable` naming the resource.
//!
//! Profiles: a unit whose profile expects a long run (`long_run` or more) or no
//! end takes the offer with the most room first (spreading); any other unit
//! takes the first in host order (packing, a first fit); locality (this host,
//! its group) comes first in both.
//!
//! Lost hosts: when the federation removes a host for silence (its level-0 group
//! sees the removal), every `wait`, `kill` or `info` waiting on one of its pids ends
//! `Lost`, and later calls on its pids that stay unanswered end `Lost` rather than
//! `Unreachable`, until the host is heard from again.
//!
//! A caller outside the dead host's level-0 group never sees the removal. When the
//! host stays silent, it walks the tree for the tenant as `ps` does (a `kill` or
//! `info` once, a `wait` at its 1st, 2nd, 4th and 8th unanswered poll): if the
//! host's group lists the process `Lost` (the ledger), the call ends `Lost`;
//! otherwise a `kill` or `info` ends `Unreachable`, and a `wait` keeps polling.
//!
//! Invariants (checked in [`Placement::invariants`]): the reservation total equals
//! the sum of the leases; no lease outlives its expiry past the next call; a
//! reservation or a creation never takes more than is free, so committed plus
//! reserved never exceeds capacity by this service's doing. The host may still
//! report less capacity than it runs (adopted processes reported before its
//! capacity, or a capacity that shrank): that is a fact, not a broken invariant;
//! nothing is free then (see [`Placement::free`]). The simulator checks the sum
//! against capacity itself.

pub mod api;
mod host_side;
mod ledger;
pub mod msg;
mod presence;
mod ps;
mod requester;
mod retained_keys;
pub mod summary;
pub mod tenants;
pub mod validate;
mod waiters;

pub use validate::PlacementConfigError;

use crate::agent::Identity;
use crate::host::{HostCommand, HostEvent, HostResources, ProcSpec, Signal};
use crate::ids::{Incarnation, NodeId, Pid, PidMinter, TenantId};
use crate::service::{Context, Service, ServiceEvent, ServiceOutput, TreeView};
use crate::time::Time;
use api::Demand;
use msg::{PlacementMsg, ReqKey};
use nefele_api::calls::{ApiCall, ApiReply, RequestId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;
use summary::PlacementSummary;

pub use host_side::ProcEntry;
pub use requester::SpawnKind;
pub use requester::MAX_FAILED;

/// Partial defaults: each field left `None` falls through to the next source.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PartialDemand {
    /// Cpu, in millicores.
    pub cpu_millicores: Option<u32>,
    /// Memory, in bytes.
    pub memory_bytes: Option<u64>,
    /// Accelerators.
    pub accelerators: Option<u32>,
}

/// Placement's parameters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlacementConfig {
    /// The federation instance placement rides: its groups are the offer groups,
    /// its summaries carry placement's part, its removals end waits as lost.
    pub instance: u8,
    /// How long a peer holds a reservation for a request.
    pub lease: Duration,
    /// How long the requester waits for its group's offers.
    pub offer_timeout: Duration,
    /// How long the requester waits for candidates and their offers per escalation level.
    pub escalate_timeout: Duration,
    /// How long the requester waits for every `Created`.
    pub create_timeout: Duration,
    /// How long a gang (a request of several units) that found no room keeps trying
    /// again, from the client's call; a single process is not tried again.
    pub gang_patience: Duration,
    /// How long a host keeps provisional processes unconfirmed before it asks the
    /// requester, and then how often it asks again while the requester is silent.
    pub confirm_timeout: Duration,
    /// The longest a host waits between two queries to a silent requester (the waits
    /// double from `confirm_timeout`). Silence never kills (see the module docs).
    pub query_backoff_max: Duration,
    /// How long a requester remembers a request that failed after its `Create`s were
    /// sent, to answer `Abort` to hosts that ask (any other request is presumed placed).
    pub failed_retention: Duration,
    /// How long `info` and `kill` wait for remote answers.
    pub op_timeout: Duration,
    /// How long `ps` waits for the whole tree.
    pub ps_timeout: Duration,
    /// How often a pending `wait` asks the process's host again.
    pub wait_poll: Duration,
    /// Unanswered `wait` polls before the wait fails as unreachable.
    pub wait_retries: u32,
    /// How long an exited process stays visible to `info`, `wait` and `ps`, and a
    /// host remembers a request it finished with (a late `Create` does nothing).
    pub exit_retention: Duration,
    /// How long a host remembers a request it offered room to, and the offer: a
    /// `Create` for it later than this (from its first offer) creates nothing.
    /// Never less than twice the longest a request may take from its first offer
    /// to its last `Create` (see [`PlacementConfig::offers_kept_for`]).
    pub offer_retention: Duration,
    /// The most processes one request may hold.
    pub max_processes: u16,
    /// What a process reserves when nothing else says.
    pub global_default: Demand,
    /// Per-tenant defaults, consulted before history.
    pub tenant_defaults: Vec<(TenantId, PartialDemand)>,
    /// How soon after a change of its table a host reports it to its level-0
    /// leader and heir (changes within this time go in one report).
    pub ledger_flush: Duration,
    /// How often a host reports changes of its table at the latest.
    pub ledger_period: Duration,
    /// How often a host resends its whole table to them.
    pub ledger_refresh: Duration,
    /// How long the processes of a host that left the group stay listed as lost.
    pub lost_retention: Duration,
    /// How long a host holds back `Created` (and a leader a member's ack) while a
    /// tenant new to its subtree registers with the leaders above (see `presence`).
    /// Keep it well under `create_timeout`.
    pub presence_timeout: Duration,
    /// The profile rule: a process whose profile expects it to run this long or
    /// longer, or until killed, is spread (the offer with the most room first);
    /// any other is packed (the first offer in host order); see `planner::fit_of`.
    pub long_run: Duration,
}

impl Default for PlacementConfig {
    fn default() -> Self {
        PlacementConfig {
            instance: 0,
            lease: Duration::from_millis(300),
            offer_timeout: Duration::from_millis(2),
            escalate_timeout: Duration::from_millis(4),
            create_timeout: Duration::from_millis(50),
            gang_patience: Duration::from_millis(150),
            confirm_timeout: Duration::from_millis(500),
            query_backoff_max: Duration::from_secs(4),
            failed_retention: Duration::from_secs(600),
            op_timeout: Duration::from_millis(50),
            ps_timeout: Duration::from_secs(1),
            wait_poll: Duration::from_secs(2),
            wait_retries: 10,
            exit_retention: Duration::from_secs(60),
            offer_retention: Duration::from_secs(5),
            max_processes: 4096,
            global_default: Demand {
                cpu_millicores: 500,
                memory_bytes: 512 << 20,
                accelerators: 0,
            },
            tenant_defaults: Vec::new(),
            ledger_flush: Duration::from_millis(20),
            ledger_period: Duration::from_secs(1),
            ledger_refresh: Duration::from_secs(30),
            lost_retention: Duration::from_secs(600),
            presence_timeout: Duration::from_millis(20),
            long_run: Duration::from_secs(60),
        }
    }
}

impl PlacementConfig {
    /// How long a host keeps an offer: `offer_retention`, or twice the longest a
    /// request may take from its first offer to its last `Create` if that is
    /// longer (its `Create`s go out within `gang_patience`, and one more try, plus
    /// `create_timeout`; its leases may run out meanwhile). So timeouts raised for
    /// slow networks never make a host refuse a request it offered room to.
    #[must_use]
    pub fn offers_kept_for(&self) -> Duration {
        let longest_request = self.lease + self.gang_patience + self.create_timeout;
        self.offer_retention.max(2 * longest_request)
    }
}

/// What a timer entry is for. Stale entries (whose state moved on) are ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Lease(ReqKey),
    Provisional(ReqKey),
    Request(u64),
    Op(u64),
    Forget(Pid),
    Done(ReqKey),
    Ledger,
    LedgerFlush,
    Presence(u64),
}

/// Observed usage of earlier runs of one binary by one tenant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Estimate {
    cpu_millicores: u32,
    memory_bytes: u64,
    runs: u32,
}

/// The placement and namespace service of one agent.
///
/// Driven through [`Service`] (see its call order); the host's capacity arrives as
/// a [`HostEvent::Resources`].
#[derive(Debug)]
pub struct Placement {
    me: NodeId,
    incarnation: Incarnation,
    config: PlacementConfig,
    minter: PidMinter,
    capacity: Demand,
    /// Where this host stands and its cpu speed class, from its resources.
    location: crate::host::Location,
    cpu_class: u8,
    /// The kinds of limit this host cannot enforce, from its resources.
    unenforced: nefele_api::spec::LimitKinds,
    committed: Demand,
    reserved: Demand,
    host: host_side::HostState,
    req: requester::RequesterState,
    history: BTreeMap<(TenantId, String), Estimate>,
    ledger: ledger::Ledger,
    presence: presence::Presence,
    timers: BTreeSet<(Time, Timer)>,
    /// The first of `timers` (`NEVER` if none): the agent asks for it after every
    /// call, and a tree of thousands of timers is slow to descend.
    next_timer: Time,
    outbox: VecDeque<ServiceOutput<PlacementMsg>>,
}

impl Placement {
    /// The service of agent `me` in its life `incarnation`.
    #[must_use]
    pub fn new(me: NodeId, incarnation: Incarnation, config: PlacementConfig) -> Self {
        Placement {
            me,
            incarnation,
            config,
            minter: PidMinter::new(me, incarnation),
            capacity: Demand::default(),
            location: crate::host::Location::default(),
            cpu_class: 0,
            unenforced: nefele_api::spec::LimitKinds::default(),
            committed: Demand::default(),
            reserved: Demand::default(),
            host: host_side::HostState::default(),
            req: requester::RequesterState::default(),
            history: BTreeMap::new(),
            ledger: ledger::Ledger::default(),
            presence: presence::Presence::default(),
            timers: BTreeSet::new(),
            next_timer: Time::NEVER,
            outbox: VecDeque::new(),
        }
    }

    /// The host's capacity (its commitments are this service's own bookkeeping).
    pub fn set_capacity(&mut self, resources: &HostResources) {
        self.capacity = Demand {
            cpu_millicores: resources.cpu_millicores,
            memory_bytes: resources.memory_bytes,
            accelerators: resources.accelerators,
        };
        self.location = resources.location;
        self.cpu_class = nefele_api::spec::cpu_class_of(resources.cpu_speed);
        self.unenforced = resources.unenforced;
    }

    /// What this host has neither committed nor reserved.
    #[must_use]
    pub fn free(&self) -> Demand {
        self.capacity.minus(self.committed).minus(self.reserved)
    }

    /// Capacity, committed and reserved, for checkers.
    #[must_use]
    pub fn accounting(&self) -> (Demand, Demand, Demand) {
        (self.capacity, self.committed, self.reserved)
    }

    /// The leases held, with their expiry, for checkers.
    pub fn leases(&self) -> impl Iterator<Item = (ReqKey, Time)> + '_ {
        self.host.leases.iter().map(|(k, l)| (*k, l.expires))
    }

    /// The process table entries this agent hosts, for checkers and tests.
    pub fn processes(&self) -> impl Iterator<Item = (&Pid, &ProcEntry)> + '_ {
        self.host.table.iter()
    }

    /// Requests in flight at this agent as requester.
    #[must_use]
    pub fn requests_in_flight(&self) -> usize {
        self.req.pending.len()
    }

    fn on_message(&mut self, now: Time, tree: &TreeView<'_>, from: NodeId, msg: PlacementMsg) {
        self.host_heard(from);
        self.requester_heard(now, from);
        match msg {
            PlacementMsg::OfferReq {
                key,
                tenant,
                shapes,
            } => self.on_offer_req(now, from, key, tenant, &shapes),
            PlacementMsg::Offer {
                key,
                counts,
                free,
                at,
            } => {
                self.on_offer(now, tree, from, key, counts, free, at);
            }
            PlacementMsg::FindRoom {
                key,
                level,
                min,
                need,
                hosts,
                skip,
                cpu_class,
                avoid_racks,
            } => {
                let want = Want {
                    min,
                    need,
                    hosts,
                    cpu_class,
                    avoid_racks,
                };
                self.on_find_room(now, tree, key, level, want, skip);
            }
            PlacementMsg::Absent { key, resource } => self.on_absent(now, key, resource),
            PlacementMsg::Candidates { key, hosts } => self.on_candidates(now, tree, key, &hosts),
            PlacementMsg::Create { key, items, total } => {
                self.on_create(now, tree, from, key, items, total);
            }
            PlacementMsg::Created { key, pids } => self.on_created(now, from, key, &pids),
            PlacementMsg::CreateRefused { key } => self.on_create_refused(now, key),
            // Only a request's requester decides its outcome (issue 16): another
            // agent's word would keep or kill processes that are not its own.
            PlacementMsg::Confirm { key } if from == key.requester => self.on_confirm(now, key),
            PlacementMsg::Abort { key } if from == key.requester => self.on_abort(now, key),
            PlacementMsg::Confirm { .. } | PlacementMsg::Abort { .. } => {}
            PlacementMsg::Query { key } => self.on_query(from, key),
            PlacementMsg::PidReq {
                token,
                tenant,
                pid,
                op,
            } => self.on_pid_req(now, from, token, tenant, pid, op),
            PlacementMsg::PidAns { token, answer } => {
                self.on_pid_answer(tree, from, token, answer);
            }
            PlacementMsg::PsWalk {
                token,
                tenant,
                asker,
                level,
            } => self.on_ps_walk(now, tree, token, tenant, asker, level),
            PlacementMsg::PsExpect {
                token,
                level,
                members,
            } => self.on_ps_expect(tree, from, token, level, &members),
            PlacementMsg::PsReq {
                token,
                tenant,
                asker,
            } => self.on_ps_req(now, tree, token, tenant, asker),
            PlacementMsg::PsAns {
                token,
                entries,
                batches,
            } => self.on_ps_answer(tree, from, token, entries, batches),
            PlacementMsg::Ran {
                pid,
                cpu_millicores,
                memory_bytes,
            } => self.on_ran(from, pid, cpu_millicores, memory_bytes),
            PlacementMsg::Ledger {
                reset,
                present,
                ended,
            } => self.on_ledger(now, from, reset, present, ended),
            PlacementMsg::Present {
                token,
                level,
                tenant,
            } => self.on_present(now, tree, from, token, level, tenant),
            PlacementMsg::PresentAck { token } => self.presence_settled(now, tree, token),
        }
    }

    fn on_host_event(&mut self, now: Time, event: &HostEvent) {
        match event {
            // Entries are made at creation; the host's confirmation changes nothing.
            HostEvent::Started { .. } => {}
            HostEvent::StartFailed { pid, .. } => {
                self.on_exited(now, *pid, crate::host::ExitStatus::Code(127), None);
            }
            HostEvent::Exited { pid, status, usage } => {
                self.on_exited(now, *pid, *status, Some(*usage));
            }
            HostEvent::Adopted {
                pid,
                tenant,
                command,
                cpu_millicores,
                memory_bytes,
                age,
            } => {
                let demand = Demand {
                    cpu_millicores: *cpu_millicores,
                    memory_bytes: *memory_bytes,
                    accelerators: 0,
                };
                self.adopt(now, *pid, *tenant, command.clone(), demand, *age);
            }
            HostEvent::Resources(r) => {
                self.set_capacity(r);
                self.arm_ledger(now);
            }
        }
    }

    fn on_timeout(&mut self, now: Time, tree: &TreeView<'_>) {
        while let Some(&(at, timer)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.pop_first();
            match timer {
                Timer::Lease(key) => self.expire_lease(now, key),
                Timer::Provisional(key) => self.provisional_due(now, key),
                Timer::Request(seq) => self.request_due(now, tree, seq),
                Timer::Op(token) => {
                    self.op_due(now, tree, token);
                    self.ps_due(now, tree, token);
                }
                Timer::Forget(pid) => self.forget(now, pid),
                Timer::Done(key) => self.forget_failed(now, key),
                Timer::Ledger => self.ledger_due(now, tree),
                Timer::LedgerFlush => self.ledger_flush_due(now, tree),
                Timer::Presence(token) => self.presence_settled(now, tree, token),
            }
        }
        self.next_timer = self.timers.first().map_or(Time::NEVER, |(t, _)| *t);
    }

    /// Checks the service's invariants (debug builds and the simulator).
    #[must_use]
    pub fn invariants(&self) -> bool {
        let leased = self
            .host
            .leases
            .values()
            .fold(Demand::default(), |a, l| a.plus(l.reserved));
        // Not `capacity.covers(committed + reserved)`: the host may report less than
        // it runs (see the module docs).
        leased == self.reserved
    }

    fn set_timer(&mut self, at: Time, timer: Timer) {
        self.timers.insert((at, timer));
        self.next_timer = self.next_timer.min(at);
    }

    fn send(&mut self, to: NodeId, msg: PlacementMsg) {
        self.outbox.push_back(ServiceOutput::Send(to, msg));
    }

    fn reply(&mut self, request: RequestId, reply: ApiReply) {
        self.outbox.push_back(ServiceOutput::Reply(request, reply));
    }

    fn event(&mut self, event: ServiceEvent) {
        self.outbox.push_back(ServiceOutput::Event(event));
    }

    fn kill_process(&mut self, pid: Pid) {
        self.outbox
            .push_back(ServiceOutput::Host(Box::new(HostCommand::Kill {
                pid,
                signal: Signal::Kill,
            })));
    }

    /// Fills what `spec` leaves out: tenant defaults, then history, then the workload
    /// profile, then the global defaults.
    fn demand_of(&self, tenant: TenantId, spec: &ProcSpec) -> Demand {
        let tenant_default = self
            .config
            .tenant_defaults
            .iter()
            .find(|(t, _)| *t == tenant)
            .map(|(_, d)| *d)
            .unwrap_or_default();
        let history = self.history.get(&(tenant, spec.path.clone()));
        let profile = spec.profile.as_ref();
        let global = self.config.global_default;
        let r = &spec.resources;
        Demand {
            cpu_millicores: r
                .cpu_millicores
                .or(tenant_default.cpu_millicores)
                .or(history.map(|h| h.cpu_millicores))
                .or(profile.map(|p| p.cpu_millicores))
                .unwrap_or(global.cpu_millicores),
            memory_bytes: r
                .memory_bytes
                .or(tenant_default.memory_bytes)
                .or(history.map(|h| h.memory_bytes))
                .or(profile.map(|p| p.memory_bytes))
                .unwrap_or(global.memory_bytes),
            accelerators: r
                .accelerators
                .or(tenant_default.accelerators)
                .unwrap_or(global.accelerators),
        }
    }

    /// Folds one observed run into the history of (tenant, binary): the estimate is a
    /// moving average of cpu and of peak memory, so it improves as runs complete.
    fn learn(&mut self, tenant: TenantId, path: String, cpu_millicores: u32, memory_bytes: u64) {
        let e = self.history.entry((tenant, path)).or_insert(Estimate {
            cpu_millicores,
            memory_bytes,
            runs: 0,
        });
        let w = u64::from(e.runs.min(7));
        e.cpu_millicores =
            ((u64::from(e.cpu_millicores) * w + u64::from(cpu_millicores)) / (w + 1)) as u32;
        e.memory_bytes = e
            .memory_bytes
            .saturating_mul(w)
            .saturating_add(memory_bytes)
            / (w + 1);
        e.runs = e.runs.saturating_add(1);
    }

    /// The estimate the history holds for (tenant, binary), if any run completed.
    #[must_use]
    pub fn estimate(&self, tenant: TenantId, path: &str) -> Option<Demand> {
        self.history
            .get(&(tenant, path.to_owned()))
            .map(|e| Demand {
                cpu_millicores: e.cpu_millicores,
                memory_bytes: e.memory_bytes,
                accelerators: 0,
            })
    }
}

impl Service for Placement {
    type Msg = PlacementMsg;
    type Config = PlacementConfig;
    type Summary = PlacementSummary;
    type ConfigError = PlacementConfigError;

    fn validate(config: &PlacementConfig) -> Result<(), PlacementConfigError> {
        config.validate()
    }

    fn instance(config: &PlacementConfig) -> u8 {
        config.instance
    }

    fn new(me: Identity, config: PlacementConfig, _seed: u64) -> Self {
        // Placement draws nothing at random: its spreading comes from request keys.
        Placement::new(me.node, me.incarnation, config)
    }

    fn config(&self) -> &PlacementConfig {
        &self.config
    }

    fn kind(msg: &PlacementMsg) -> &'static str {
        msg.kind()
    }

    fn validate_msg(msg: &PlacementMsg) -> Result<(), crate::wire::Reject> {
        msg.validate()
    }

    fn handle_message(&mut self, now: Time, from: NodeId, msg: PlacementMsg, ctx: &Context<'_>) {
        self.on_message(now, &ctx.tree, from, msg);
    }

    fn handle_timeout(&mut self, now: Time, ctx: &Context<'_>) {
        self.on_timeout(now, &ctx.tree);
    }

    /// The host's reports, and removals from this agent's level-0 group of its own
    /// instance: only that group keeps this agent's view of a host's liveness, and a
    /// removal in another instance says nothing about it.
    fn wants(&self, event: &ServiceEvent) -> bool {
        match event {
            ServiceEvent::Host(_) => true,
            ServiceEvent::HostRemoved {
                instance, level, ..
            } => *instance == self.config.instance && *level == 0,
            _ => false,
        }
    }

    fn handle_event(&mut self, now: Time, event: &ServiceEvent, ctx: &Context<'_>) {
        match event {
            ServiceEvent::Host(e) => self.on_host_event(now, e),
            ServiceEvent::HostRemoved { node, .. } => self.host_removed(&ctx.tree, *node),
            _ => {}
        }
    }

    fn owns(call: &ApiCall) -> bool {
        !matches!(call, ApiCall::Neighbours) && !call.is_messaging() && !call.is_supervision()
    }

    fn handle_api(&mut self, now: Time, request: RequestId, call: ApiCall, ctx: &Context<'_>) {
        let tree = &ctx.tree;
        match call {
            ApiCall::Spawn { tenant, spec } => {
                self.handle_spawn(now, tree, request, tenant, SpawnKind::Spawn(spec));
            }
            ApiCall::NSpawn { tenant, n, spec } => {
                self.handle_spawn(now, tree, request, tenant, SpawnKind::NSpawn(n, spec));
            }
            ApiCall::CSpawn { tenant, specs } => {
                self.handle_spawn(now, tree, request, tenant, SpawnKind::CSpawn(specs));
            }
            ApiCall::Kill {
                tenant,
                pid,
                signal,
            } => self.start_pid_op(now, request, tenant, pid, msg::PidOp::Kill(signal)),
            ApiCall::Info { tenant, pid } => {
                self.start_pid_op(now, request, tenant, pid, msg::PidOp::Info);
            }
            ApiCall::Wait { tenant, pid } => {
                self.start_pid_op(now, request, tenant, pid, msg::PidOp::Wait);
            }
            ApiCall::Ps { tenant } => self.walk_for(now, tree, ps::PsFor::Reply(request), tenant),
            _ => debug_assert!(false, "not placement's call: {call:?}"),
        }
    }

    #[inline]
    fn poll_output(&mut self) -> Option<ServiceOutput<PlacementMsg>> {
        crate::outbox::take_next(&mut self.outbox)
    }

    fn next_timeout(&self) -> Option<Time> {
        (self.next_timer != Time::NEVER).then_some(self.next_timer)
    }

    fn own_summary(&self) -> PlacementSummary {
        let free = self.free();
        PlacementSummary {
            free_cpu_millicores: u64::from(free.cpu_millicores),
            free_memory_bytes: free.memory_bytes,
            largest_free_cpu_millicores: u64::from(free.cpu_millicores),
            largest_free_memory_bytes: free.memory_bytes,
            tenants: self.presence.own(),
            cpu_classes: 1 << self.cpu_class,
            max_accelerators: self.capacity.accelerators,
            largest_free_accelerators: free.accelerators.min(self.capacity.accelerators),
            racks: 1 << (self.location.rack % 64),
        }
    }

    fn pinned_summary(&self, level: usize) -> Option<PlacementSummary> {
        self.presence
            .pinned()
            .get(level)
            .map(|&tenants| PlacementSummary {
                tenants,
                ..PlacementSummary::default()
            })
    }

    fn invariants(&self) -> bool {
        Placement::invariants(self)
    }
}

/// What a search for room looks for.
#[derive(Clone, Copy, Debug)]
struct Want {
    /// The smallest unit.
    min: Demand,
    /// The uncovered demand.
    need: Demand,
    /// The distinct hosts still needed.
    hosts: u16,
    /// The slowest cpu speed class accepted.
    cpu_class: u8,
    /// Racks (bit `rack % 64`) to visit last (`spread` rules: the racks offered from).
    avoid_racks: u64,
}

#[cfg(test)]
mod tests {
    use super::api::{Resource, SpawnError};
    use super::msg::{CreateItem, Shape, BATCH_BYTES, MAX_SHAPES};
    use super::*;
    use crate::host::{ResourcePolicy, WorkloadProfile};
    use crate::wire::{encoded_len, Envelope, Message, CONTROL_MTU};

    fn solo() -> Placement {
        let mut p = Placement::new(NodeId(1), Incarnation(1), PlacementConfig::default());
        p.set_capacity(&HostResources {
            cores: 4,
            cpu_millicores: 4000,
            memory_bytes: 8 << 30,
            ..HostResources::default()
        });
        p
    }

    fn spec(cpu: Option<u32>) -> ProcSpec {
        ProcSpec {
            path: "/bin/x".into(),
            resources: ResourcePolicy {
                cpu_millicores: cpu,
                ..ResourcePolicy::default()
            },
            ..ProcSpec::default()
        }
    }

    type Out = ServiceOutput<PlacementMsg>;

    fn ctx() -> Context<'static> {
        Context {
            me: Identity {
                node: NodeId(1),
                incarnation: Incarnation(1),
            },
            tree: TreeView::empty(NodeId(1)),
            lives: None,
        }
    }

    /// Every output but the events for other services.
    fn drain(p: &mut Placement) -> Vec<Out> {
        std::iter::from_fn(|| p.poll_output())
            .filter(|o| !matches!(o, ServiceOutput::Event(_)))
            .collect()
    }

    /// The host re-adopted `pid` of `tenant` (running `/bin/sleep`, reserving `cpu`
    /// millicores and `memory` bytes, running for `age`).
    fn adopted(pid: Pid, tenant: TenantId, cpu: u32, memory: u64, age: Duration) -> HostEvent {
        HostEvent::Adopted {
            pid,
            tenant,
            command: "/bin/sleep".into(),
            cpu_millicores: cpu,
            memory_bytes: memory,
            age,
        }
    }

    /// Fires timers until `request` is answered; its reply, if it ever is.
    fn reply_after_timeouts(p: &mut Placement, request: RequestId) -> Option<ApiReply> {
        while let Some(t) = p.next_timeout() {
            p.handle_timeout(t, &ctx());
            let reply = drain(p).into_iter().find_map(|out| match out {
                Out::Reply(r, reply) if r == request => Some(reply),
                _ => None,
            });
            if reply.is_some() {
                return reply;
            }
        }
        None
    }

    /// Regression: a `ps` walk that reached an agent no longer leading that group was
    /// answered with an empty group, so the asker listed nothing of the subtree and
    /// reported every agent answered. It is now left unanswered (counted at the
    /// asker's deadline).
    #[test]
    fn a_stale_ps_walk_is_not_answered_as_an_empty_group() {
        let mut p = solo();
        p.on_ps_walk(
            Time::from_secs(1),
            &ctx().tree,
            7,
            TenantId(1),
            NodeId(9),
            2,
        );
        assert_eq!(drain(&mut p), Vec::new());
    }

    /// One process of 500 millicores and 1 MiB, index 0 of request `key`.
    fn item() -> CreateItem {
        CreateItem {
            index: 0,
            tenant: TenantId(1),
            demand: Demand {
                cpu_millicores: 500,
                memory_bytes: 1 << 20,
                accelerators: 0,
            },
            spec: spec(Some(500)),
            leased: false,
        }
    }

    /// The requester of the host-side tests' requests: another agent.
    const REQUESTER: NodeId = NodeId(2);

    /// Request `seq` of [`REQUESTER`]'s first life.
    fn remote_key(seq: u64) -> ReqKey {
        ReqKey {
            requester: REQUESTER,
            incarnation: Incarnation(1),
            seq,
        }
    }

    /// `host` offers room for `item()` to `key`'s requester, which then creates it:
    /// whether the host started it.
    fn offered_and_created(host: &mut Placement, key: ReqKey) -> bool {
        let shapes = vec![Shape {
            demand: item().demand,
            count: 1,
            one_per_host: false,
            cpu_class: 0,
            limits: Default::default(),
        }];
        let req = PlacementMsg::OfferReq {
            key,
            tenant: item().tenant,
            shapes,
        };
        host.handle_message(Time::ZERO, key.requester, req, &ctx());
        created(host, key, vec![item()])
    }

    /// `key`'s requester asks `host` to create `items`: whether the host started any.
    fn created(host: &mut Placement, key: ReqKey, items: Vec<CreateItem>) -> bool {
        created_at(host, Time::ZERO, key, items)
    }

    /// [`created`], at `now`.
    fn created_at(host: &mut Placement, now: Time, key: ReqKey, items: Vec<CreateItem>) -> bool {
        let create = PlacementMsg::Create {
            key,
            total: u16::try_from(items.len()).unwrap(),
            items,
        };
        host.handle_message(now, key.requester, create, &ctx());
        drain(host)
            .iter()
            .any(|o| matches!(o, Out::Host(c) if matches!(**c, HostCommand::Start { .. })))
    }

    /// `key`'s requester asks `host` for room for `count` of `item()` (tenant 1).
    fn offer_items(host: &mut Placement, key: ReqKey, count: u16) {
        let shapes = vec![Shape {
            demand: item().demand,
            count,
            one_per_host: false,
            cpu_class: 0,
            limits: Default::default(),
        }];
        let req = PlacementMsg::OfferReq {
            key,
            tenant: TenantId(1),
            shapes,
        };
        host.handle_message(Time::ZERO, key.requester, req, &ctx());
        drain(host);
    }

    /// Swarm seed 102898: the network put the `Create` of a host's second batch
    /// ahead of its first. That batch ended the request's reservation here (it
    /// was flagged the last), another request took the room, and the first batch
    /// was refused. The reservation now ends once the whole share is created.
    #[test]
    fn a_later_batch_that_overtakes_an_earlier_one_keeps_the_reservation_it_needs() {
        let mut host = solo();
        let indexed = |index: u16| CreateItem { index, ..item() };
        let create = |host: &mut Placement, key: ReqKey, items: Vec<CreateItem>, total: u16| {
            let create = PlacementMsg::Create { key, items, total };
            host.handle_message(Time::ZERO, key.requester, create, &ctx());
            drain(host)
                .iter()
                .any(|o| matches!(o, Out::Host(c) if matches!(**c, HostCommand::Start { .. })))
        };
        // Request 1 is offered two, then request 2 the rest of the host.
        offer_items(&mut host, remote_key(1), 2);
        offer_items(&mut host, remote_key(2), 6);
        assert!(create(
            &mut host,
            remote_key(2),
            (0..6).map(indexed).collect(),
            6
        ));
        // Request 1's second batch comes first; a third request wants room.
        assert!(create(&mut host, remote_key(1), vec![indexed(1)], 2));
        offer_items(&mut host, remote_key(3), 1);
        assert!(
            !create(&mut host, remote_key(3), vec![indexed(0)], 1),
            "no room"
        );
        assert!(
            create(&mut host, remote_key(1), vec![indexed(0)], 2),
            "the first batch"
        );
        assert!(host.invariants());
    }

    /// Issue 16: a `Create` is held to what its offer was for: the tenant named in
    /// the `OfferReq` and the demand offered. A key holder could otherwise turn any
    /// offer into processes of another tenant, or into more than was offered.
    #[test]
    fn a_create_is_held_to_the_tenant_and_demand_offered() {
        let mut host = solo();
        let offer = |host: &mut Placement, key: ReqKey| offer_items(host, key, 1);
        let other_tenant = CreateItem {
            tenant: TenantId(2),
            ..item()
        };
        offer(&mut host, remote_key(1));
        assert!(
            !created(&mut host, remote_key(1), vec![other_tenant]),
            "another tenant"
        );
        offer(&mut host, remote_key(2));
        let second = CreateItem { index: 1, ..item() };
        assert!(
            !created(&mut host, remote_key(2), vec![item(), second.clone()]),
            "two for one"
        );
        let mut bigger = item();
        bigger.demand.cpu_millicores += 1;
        offer(&mut host, remote_key(3));
        assert!(
            !created(&mut host, remote_key(3), vec![bigger]),
            "larger than offered"
        );
        // Within the offer, batch by batch: the first fits, a second one does not.
        offer(&mut host, remote_key(4));
        assert!(created(&mut host, remote_key(4), vec![item()]));
        assert!(
            !created(&mut host, remote_key(4), vec![second]),
            "beyond the offer"
        );
        let repeat = PlacementMsg::Create {
            key: remote_key(4),
            items: vec![item()],
            total: 1,
        };
        host.handle_message(Time::ZERO, REQUESTER, repeat, &ctx());
        assert!(
            matches!(&drain(&mut host)[..], [Out::Send(_, PlacementMsg::Created { pids, .. })] if pids.len() == 1),
            "a repeat is answered again"
        );
        assert!(host.invariants());
    }

    /// Issue 16: a requester files a `Ran` only when it comes from the host it placed
    /// the pid on, once, under the tenant and binary it placed: any key holder could
    /// otherwise steer the history (and so the reservations) of any tenant's binary.
    #[test]
    fn ran_is_taken_only_from_the_host_of_a_placed_pid_once() {
        let mut p = solo();
        let (host, pid) = (NodeId(3), Pid::new(NodeId(3), Incarnation(1), 7));
        p.req.runs.expect(pid, host, TenantId(1), "/bin/x".into());
        let ran = |cpu| PlacementMsg::Ran {
            pid,
            cpu_millicores: cpu,
            memory_bytes: 1 << 20,
        };
        p.handle_message(Time::ZERO, NodeId(4), ran(900), &ctx());
        assert_eq!(p.estimate(TenantId(1), "/bin/x"), None, "not its host");
        let unplaced = PlacementMsg::Ran {
            pid: Pid::new(host, Incarnation(1), 8),
            cpu_millicores: 900,
            memory_bytes: 1 << 20,
        };
        p.handle_message(Time::ZERO, host, unplaced, &ctx());
        assert_eq!(p.estimate(TenantId(1), "/bin/x"), None, "not placed here");
        p.handle_message(Time::ZERO, host, ran(100), &ctx());
        let learnt = p
            .estimate(TenantId(1), "/bin/x")
            .expect("its host's report");
        assert_eq!(learnt.cpu_millicores, 100);
        p.handle_message(Time::ZERO, host, ran(900), &ctx());
        assert_eq!(p.estimate(TenantId(1), "/bin/x"), Some(learnt), "once");
    }

    /// Issue 16: a host creates processes only for a request it offered room to. Any
    /// agent could make a host start processes by naming itself the requester of a
    /// made-up request.
    #[test]
    fn a_create_needs_an_offer_behind_it() {
        let key = remote_key(1);
        let mut host = solo();
        let create = PlacementMsg::Create {
            key,
            items: vec![item()],
            total: 1,
        };
        host.handle_message(Time::ZERO, NodeId(2), create, &ctx());
        assert_eq!(
            drain(&mut host),
            vec![Out::Send(NodeId(2), PlacementMsg::CreateRefused { key })],
            "no offer"
        );
        let key = ReqKey { seq: 2, ..key };
        assert!(offered_and_created(&mut host, key));
        assert!(host.invariants());
    }

    /// A host forgets an offer `offer_retention` after making it (it kept every
    /// offer for `exit_retention`, 60 s: the offers of place-10k, a few per
    /// request, were never dropped and grew its heap by a fifth); a `Create` after
    /// that creates nothing. The offer is noticed as expired at the host's next
    /// offer, when the set is swept.
    #[test]
    fn an_offer_is_forgotten_after_the_offer_retention() {
        let mut host = solo();
        let retention = host.config.offers_kept_for();
        assert_eq!(retention, host.config.offer_retention);
        let offer = |host: &mut Placement, now: Time, key: ReqKey| {
            let req = PlacementMsg::OfferReq {
                key,
                tenant: item().tenant,
                shapes: vec![Shape {
                    demand: item().demand,
                    count: 1,
                    one_per_host: false,
                    cpu_class: 0,
                    limits: Default::default(),
                }],
            };
            host.handle_message(now, key.requester, req, &ctx());
            drain(host);
        };
        let (early, late) = (remote_key(1), remote_key(2));
        offer(&mut host, Time::ZERO, early);
        offer(&mut host, Time::ZERO, late);
        let just_in_time = Time::ZERO + retention - Duration::from_millis(1);
        offer(&mut host, just_in_time, remote_key(3));
        assert!(created_at(&mut host, just_in_time, early, vec![item()]));
        offer(&mut host, Time::ZERO + retention, remote_key(4));
        assert!(!created_at(
            &mut host,
            Time::ZERO + retention,
            late,
            vec![item()]
        ));
        assert!(host.invariants());
    }

    /// Offers are kept at least twice as long as a request may take, whatever
    /// `offer_retention` says: a configuration for slow networks (nefeled's: 2 s
    /// to create, 3 s of gang patience) keeps them longer than 5 s.
    #[test]
    fn offers_are_kept_twice_as_long_as_a_request_may_take() {
        let config = PlacementConfig {
            create_timeout: Duration::from_secs(2),
            gang_patience: Duration::from_secs(3),
            ..PlacementConfig::default()
        };
        assert_eq!(config.offers_kept_for(), Duration::from_millis(10_600));
        let short = PlacementConfig::default();
        assert_eq!(short.offers_kept_for(), short.offer_retention);
    }

    /// Regression (the swarm's seed 389): a host whose query's answer was lost waited
    /// `query_backoff_max` to ask again even while the requester's other messages
    /// were reaching it, so a failed request's process outlived the check's settle
    /// time. Any message from the requester now brings the next query within
    /// `confirm_timeout`.
    #[test]
    fn hearing_the_requester_brings_the_next_query_forward() {
        let (requester, key) = (REQUESTER, remote_key(1));
        let mut host = solo();
        assert!(offered_and_created(&mut host, key));
        // Queries go unanswered until the wait has grown to its longest.
        let mut now = Time::ZERO;
        while let Some(t) = host.next_timeout().filter(|t| *t <= Time::from_secs(30)) {
            now = t;
            host.handle_timeout(t, &ctx());
            drain(&mut host);
        }
        let next_query = host.next_timeout().expect("the entry asks again");
        assert!(next_query.saturating_since(now) > host.config.confirm_timeout);
        // The requester's link works again: it asks this host for room.
        let shapes = vec![];
        let req = PlacementMsg::OfferReq {
            key: remote_key(2),
            tenant: TenantId(1),
            shapes,
        };
        host.handle_message(now, requester, req, &ctx());
        drain(&mut host);
        let soon = now + host.config.confirm_timeout;
        assert_eq!(host.next_timeout(), Some(soon));
        host.handle_timeout(soon, &ctx());
        assert!(
            drain(&mut host)
                .iter()
                .any(|o| matches!(o, Out::Send(to, PlacementMsg::Query { key: k }) if *to == requester && *k == key)),
            "asked again"
        );
    }

    /// Regression (the swarm's seeds 10341 and 10485): a query whose answer was lost
    /// on a link that works again was asked next only after the whole round,
    /// `query_backoff_max`, when the requester had nothing else to send the host; a
    /// failed request's process outlived the check's settle time. A long round now
    /// repeats its query after `confirm_timeout`, then waits out the rest.
    #[test]
    fn a_long_round_repeats_its_query_once_soon() {
        let (requester, key) = (REQUESTER, remote_key(1));
        let mut host = solo();
        assert!(offered_and_created(&mut host, key));
        let quick = host.config.confirm_timeout;
        // When the requester was asked.
        let mut asked = Vec::new();
        while let Some(t) = host.next_timeout().filter(|t| *t <= Time::from_secs(40)) {
            host.handle_timeout(t, &ctx());
            let query = drain(&mut host).iter().any(
                |o| matches!(o, Out::Send(to, PlacementMsg::Query { key: k }) if *to == requester && *k == key),
            );
            if query {
                asked.push(t);
            }
        }
        let gaps: Vec<Duration> = asked
            .windows(2)
            .map(|w| w[1].saturating_since(w[0]))
            .collect();
        // Once the rounds are long, they alternate: the repeat, then the rest of the round.
        let max = host.config.query_backoff_max;
        let tail = &gaps[gaps.len() - 4..];
        assert_eq!(
            tail,
            [max - quick, quick, max - quick, quick].as_slice(),
            "{gaps:?}"
        );
    }

    /// Regression (issue 15, 2PC's blocking problem): a host killed the unconfirmed
    /// processes of a request once its requester had been silent for
    /// `orphan_timeout`, so a request reported placed lost them after a partition
    /// longer than that. Silence alone now never kills, nor does a removal by the
    /// federation (a partition removes live requesters too): the host asks with a
    /// growing wait (bounded traffic), and kills only when the requester (or its newer
    /// life) answers `Abort`.
    #[test]
    fn a_silent_requester_keeps_its_processes_until_known_dead() {
        let (requester, key) = (REQUESTER, remote_key(1));
        let created = |host: &mut Placement| assert!(offered_and_created(host, key));
        // Queries (and kills) while the timers fire up to `until`.
        let silence = |host: &mut Placement, until: Time| {
            let (mut queries, mut killed) = (0, false);
            while let Some(t) = host.next_timeout().filter(|t| *t <= until) {
                host.handle_timeout(t, &ctx());
                for out in drain(host) {
                    match out {
                        Out::Send(to, PlacementMsg::Query { .. }) if to == requester => {
                            queries += 1;
                        }
                        Out::Host(c) if matches!(*c, HostCommand::Kill { .. }) => killed = true,
                        _ => {}
                    }
                }
            }
            (queries, killed)
        };
        let mut host = solo();
        created(&mut host);
        let hour = Time::from_secs(3600);
        let (queries, killed) = silence(&mut host, hour);
        assert!(!killed, "silence alone killed the processes");
        let most = 2 * 3600 / host.config.query_backoff_max.as_secs() + 8;
        assert!(
            (10..=most).contains(&queries),
            "{queries} queries in an hour"
        );
        // Removed by the federation from this host's group: maybe only cut off.
        let removed = ServiceEvent::HostRemoved {
            instance: 0,
            node: requester,
            level: 0,
        };
        host.handle_event(hour, &removed, &ctx());
        let killed = drain(&mut host)
            .iter()
            .any(|o| matches!(o, Out::Host(c) if matches!(**c, HostCommand::Kill { .. })));
        assert!(!killed, "a removal is not a death");

        // A newer life of the requester (or the requester itself) answers `Abort`.
        let mut host = solo();
        created(&mut host);
        silence(&mut host, hour);
        host.handle_message(hour, requester, PlacementMsg::Abort { key }, &ctx());
        let killed = drain(&mut host)
            .iter()
            .any(|o| matches!(o, Out::Host(c) if matches!(**c, HostCommand::Kill { .. })));
        assert!(killed);
    }

    /// The requester's answers to a host's `Query` (presumed commit): a placed request
    /// is confirmed however late the host asks; a request that failed after its
    /// `Create`s were sent is aborted; a request of an earlier life is aborted.
    #[test]
    fn a_requester_confirms_placed_requests_however_late_it_is_asked() {
        let mut p = solo();
        // Placed locally (no message), asked an hour later by a host.
        let kind = SpawnKind::Spawn(spec(Some(1000)));
        p.handle_spawn(Time::ZERO, &ctx().tree, RequestId(1), TenantId(1), kind);
        drain(&mut p);
        let key = |seq, life| ReqKey {
            requester: NodeId(1),
            incarnation: Incarnation(life),
            seq,
        };
        let hour = Time::from_secs(3600);
        while let Some(t) = p.next_timeout().filter(|t| *t <= hour) {
            p.handle_timeout(t, &ctx());
        }
        drain(&mut p);
        let answer = |p: &mut Placement, k| {
            p.handle_message(hour, NodeId(5), PlacementMsg::Query { key: k }, &ctx());
            drain(p)
        };
        assert_eq!(
            answer(&mut p, key(1, 1)),
            vec![Out::Send(
                NodeId(5),
                PlacementMsg::Confirm { key: key(1, 1) }
            )]
        );
        assert_eq!(
            answer(&mut p, key(1, 0)),
            vec![Out::Send(NodeId(5), PlacementMsg::Abort { key: key(1, 0) })]
        );
        assert_eq!(
            answer(&mut p, key(99, 1)),
            vec![Out::Send(
                NodeId(5),
                PlacementMsg::Abort { key: key(99, 1) }
            )],
            "a request not yet made"
        );
    }

    /// Issue 16: only a request's requester confirms or aborts it. An `Abort` or
    /// `Confirm` from another agent (forged, or misrouted) used to kill or keep the
    /// processes all the same.
    #[test]
    fn only_the_requester_confirms_or_aborts_its_request() {
        let (requester, key) = (REQUESTER, remote_key(1));
        let mut host = solo();
        assert!(offered_and_created(&mut host, key));
        let state = |host: &Placement| host.processes().next().map(|(_, e)| e.state);
        host.handle_message(Time::ZERO, NodeId(3), PlacementMsg::Abort { key }, &ctx());
        host.handle_message(Time::ZERO, NodeId(3), PlacementMsg::Confirm { key }, &ctx());
        assert_eq!(
            drain(&mut host),
            Vec::new(),
            "a third party's word is ignored"
        );
        assert_eq!(state(&host), Some(api::ProcState::Provisional));
        host.handle_message(Time::ZERO, requester, PlacementMsg::Confirm { key }, &ctx());
        assert_eq!(state(&host), Some(api::ProcState::Running));
    }

    /// Issue 16: only the host of a pid answers a call on it. Any agent's `PidAns`
    /// with the right token used to end the call.
    #[test]
    fn only_the_pids_host_answers_a_call_on_it() {
        let mut p = solo();
        let pid = Pid::new(NodeId(5), Incarnation(1), 3);
        let now = Time::from_secs(1);
        p.start_pid_op(
            now,
            RequestId(1),
            TenantId(1),
            pid,
            msg::PidOp::Kill(Signal::Kill),
        );
        let token = drain(&mut p).into_iter().find_map(|o| match o {
            Out::Send(NodeId(5), PlacementMsg::PidReq { token, .. }) => Some(token),
            _ => None,
        });
        let token = token.expect("the pid's host is asked");
        let answer = || PlacementMsg::PidAns {
            token,
            answer: msg::PidAnswer::Signalled,
        };
        p.handle_message(now, NodeId(6), answer(), &ctx());
        assert_eq!(
            drain(&mut p),
            Vec::new(),
            "another host's answer is ignored"
        );
        p.handle_message(now, NodeId(5), answer(), &ctx());
        assert_eq!(
            drain(&mut p),
            vec![Out::Reply(RequestId(1), ApiReply::Killed(Ok(())))]
        );
    }

    /// A restarted agent used to answer `Lost` for every pid of its earlier life, even
    /// for processes its host had re-adopted and that still ran.
    #[test]
    fn processes_readopted_after_a_restart_stay_in_the_table() {
        let mut p = Placement::new(NodeId(1), Incarnation(2), PlacementConfig::default());
        p.set_capacity(&HostResources {
            cpu_millicores: 4000,
            memory_bytes: 8 << 30,
            ..HostResources::default()
        });
        let (tenant, pid) = (TenantId(1), Pid::new(NodeId(1), Incarnation(1), 7));
        let now = Time::from_secs(100);
        p.on_host_event(
            now,
            &adopted(pid, tenant, 500, 1 << 20, Duration::from_secs(40)),
        );
        assert_eq!(
            p.accounting().1.cpu_millicores,
            500,
            "its reservation counts"
        );
        p.start_pid_op(now, RequestId(1), tenant, pid, msg::PidOp::Info);
        let info = match drain(&mut p).pop() {
            Some(Out::Reply(_, ApiReply::Info(Ok(info)))) => info,
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(info.state, api::ProcState::Running);
        assert_eq!(info.command, "/bin/sleep");
        assert_eq!(info.age, Duration::from_secs(40));
        p.start_pid_op(now, RequestId(2), TenantId(9), pid, msg::PidOp::Info);
        assert!(matches!(
            drain(&mut p).pop(),
            Some(Out::Reply(_, ApiReply::Info(Err(_))))
        ));
        p.start_pid_op(now, RequestId(3), tenant, pid, msg::PidOp::Wait);
        assert!(drain(&mut p).is_empty(), "wait answers at the exit");
        let status = crate::host::ExitStatus::Code(3);
        let usage = crate::host::Usage::default();
        p.on_host_event(now, &HostEvent::Exited { pid, status, usage });
        assert_eq!(
            drain(&mut p).pop(),
            Some(Out::Reply(RequestId(3), ApiReply::Waited(Ok(status))))
        );
        assert_eq!(p.accounting().1, Demand::default());
        assert!(p.invariants());
    }

    /// Regression (found by the `agent_inputs` fuzz target): the age a host reports
    /// for an adopted process (read from its state file) was added to the time since
    /// adoption unchecked, so `info` or `ps` on a process adopted with a huge age
    /// panicked, in release builds too. The age is capped at what a peer accepts.
    #[test]
    fn a_huge_adopted_age_is_capped() {
        let mut p = solo();
        let (tenant, pid) = (TenantId(1), Pid::new(NodeId(1), Incarnation(1), 7));
        let now = Time::from_secs(100);
        p.on_host_event(now, &adopted(pid, tenant, 1, 1, Duration::MAX));
        drain(&mut p);
        p.start_pid_op(
            now + Duration::from_secs(1),
            RequestId(1),
            tenant,
            pid,
            msg::PidOp::Info,
        );
        match drain(&mut p).pop() {
            Some(Out::Reply(_, ApiReply::Info(Ok(info)))) => {
                assert_eq!(info.age, crate::wire::validate::MAX_PEER_DURATION);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    /// Regression (found by the `agent_inputs` fuzz target): a host that reports its
    /// adopted processes before its capacity (host-linux's adapter queues `Adopted` at
    /// open, ahead of `Resources`; nefeled happens to send `Resources` first), or whose
    /// capacity is below what it runs (nefeled restarted with a smaller resource
    /// override while its processes run), broke the invariant check, and so panicked
    /// a debug build. The host's word stands: nothing is free, the invariants hold.
    /// A host that cannot enforce a kind of limit (a Linux host without that
    /// cgroup controller) offers nothing to a shape that asks for one, and offers
    /// as before to shapes that do not (it used to take them, and the process
    /// then failed to start, code 127, after its pid was returned).
    #[test]
    fn a_host_offers_nothing_to_a_shape_asking_a_limit_it_cannot_enforce() {
        use nefele_api::spec::LimitKinds;
        let mut p = Placement::new(NodeId(1), Incarnation(2), PlacementConfig::default());
        let now = Time::from_secs(1);
        p.set_capacity(&HostResources {
            cpu_millicores: 4000,
            memory_bytes: 8 << 30,
            unenforced: LimitKinds {
                memory: true,
                ..LimitKinds::default()
            },
            ..HostResources::default()
        });
        let shape = |limits| Shape {
            demand: Demand {
                cpu_millicores: 1000,
                memory_bytes: 1 << 20,
                accelerators: 0,
            },
            count: 2,
            one_per_host: false,
            cpu_class: 0,
            limits,
        };
        let memory = LimitKinds {
            memory: true,
            ..LimitKinds::default()
        };
        let cpu_and_pids = LimitKinds {
            cpu: true,
            pids: true,
            ..LimitKinds::default()
        };
        assert_eq!(
            p.reserve(now, remote_key(1), TenantId(1), &[shape(memory)]),
            vec![0]
        );
        assert_eq!(
            p.reserve(now, remote_key(2), TenantId(1), &[shape(cpu_and_pids)]),
            vec![2]
        );
        assert_eq!(
            p.reserve(
                now,
                remote_key(3),
                TenantId(1),
                &[shape(memory.union(cpu_and_pids))]
            ),
            vec![0]
        );
    }

    #[test]
    fn a_host_running_more_than_its_capacity_breaks_no_invariant() {
        let mut p = Placement::new(NodeId(1), Incarnation(2), PlacementConfig::default());
        let now = Time::from_secs(1);
        p.on_host_event(
            now,
            &adopted(
                Pid::new(NodeId(1), Incarnation(1), 7),
                TenantId(1),
                500,
                1 << 20,
                Duration::ZERO,
            ),
        );
        assert!(p.invariants(), "adopted before the capacity is known");
        assert_eq!(p.free(), Demand::default());
        p.set_capacity(&HostResources {
            cpu_millicores: 4000,
            memory_bytes: 8 << 30,
            ..HostResources::default()
        });
        let shape = Shape {
            demand: Demand {
                cpu_millicores: 1000,
                memory_bytes: 1 << 20,
                accelerators: 0,
            },
            count: 2,
            one_per_host: false,
            cpu_class: 0,
            limits: Default::default(),
        };
        let key = remote_key(1);
        assert_eq!(p.reserve(now, key, TenantId(1), &[shape]), vec![2]);
        p.set_capacity(&HostResources {
            cpu_millicores: 1000,
            memory_bytes: 8 << 30,
            ..HostResources::default()
        });
        assert!(p.invariants(), "capacity shrank below what is held");
        assert_eq!(p.free().cpu_millicores, 0);
    }

    /// Issue 16: a `wait` whose client left lived (and counted against its
    /// tenant) until the process exited. `cancel` forgets it here and at the pid's
    /// host, where only the asker itself can forget its own wait; nothing answers it.
    #[test]
    fn a_cancelled_wait_is_forgotten_here_and_at_the_pids_host() {
        let (mut host, tenant) = (solo(), TenantId(1));
        let key = remote_key(1);
        let shapes = vec![Shape {
            demand: item().demand,
            count: 1,
            one_per_host: false,
            cpu_class: 0,
            limits: Default::default(),
        }];
        let offer_req = PlacementMsg::OfferReq {
            key,
            tenant,
            shapes,
        };
        host.handle_message(Time::ZERO, REQUESTER, offer_req, &ctx());
        drain(&mut host);
        let create = PlacementMsg::Create {
            key,
            items: vec![item()],
            total: 1,
        };
        host.handle_message(Time::ZERO, REQUESTER, create, &ctx());
        let pid = drain(&mut host)
            .into_iter()
            .find_map(|o| match o {
                Out::Host(c) => match *c {
                    HostCommand::Start { pid, .. } => Some(pid),
                    HostCommand::Kill { .. } => None,
                },
                _ => None,
            })
            .expect("created");
        // A local client and another agent's client wait for it.
        host.start_pid_op(Time::ZERO, RequestId(1), tenant, pid, msg::PidOp::Wait);
        let req = |op| PlacementMsg::PidReq {
            token: 7,
            tenant,
            pid,
            op,
        };
        host.handle_message(Time::ZERO, NodeId(3), req(msg::PidOp::Wait), &ctx());
        drain(&mut host);
        host.cancel(RequestId(1));
        host.handle_message(Time::ZERO, NodeId(4), req(msg::PidOp::Unwait), &ctx());
        assert_eq!(drain(&mut host), vec![], "an unwait is never answered");
        let (status, usage) = (
            crate::host::ExitStatus::Code(0),
            crate::host::Usage::default(),
        );
        host.on_host_event(Time::ZERO, &HostEvent::Exited { pid, status, usage });
        let answered: Vec<Out> = drain(&mut host)
            .into_iter()
            .filter(|o| {
                matches!(
                    o,
                    Out::Reply(..) | Out::Send(_, PlacementMsg::PidAns { .. })
                )
            })
            .collect();
        let to_3 = PlacementMsg::PidAns {
            token: 7,
            answer: msg::PidAnswer::Exited(status),
        };
        assert_eq!(
            answered,
            vec![Out::Send(NodeId(3), to_3)],
            "node 4 cannot unwait 3's"
        );
        // A remote wait is forgotten at its host too.
        let remote = Pid::new(NodeId(3), Incarnation(1), 9);
        host.start_pid_op(Time::ZERO, RequestId(2), tenant, remote, msg::PidOp::Wait);
        drain(&mut host);
        host.cancel(RequestId(2));
        let unwait = PlacementMsg::PidReq {
            token: 2,
            tenant,
            pid: remote,
            op: msg::PidOp::Unwait,
        };
        assert!(
            matches!(&drain(&mut host)[..], [Out::Send(NodeId(3), m)] if matches!(m, PlacementMsg::PidReq { op: msg::PidOp::Unwait, pid, .. } if *pid == remote)),
            "expected {unwait:?}"
        );
        // Its poll timer finds nothing to ask or answer.
        let poll = Time::ZERO + host.config.wait_poll;
        host.handle_timeout(poll, &ctx());
        let about_it = drain(&mut host).into_iter().any(|o| {
            matches!(o, Out::Reply(RequestId(2), _))
                || matches!(o, Out::Send(_, PlacementMsg::PidReq { pid, .. }) if pid == remote)
        });
        assert!(!about_it, "a cancelled wait neither polls nor answers");
    }

    /// Issue 16: any peer could register waits on a process here with made-up
    /// tokens, each kept until the process exits. One peer now holds at most
    /// `MAX_WAITS_PER_PEER` waits here: more are neither registered nor answered,
    /// and another peer's waits still are.
    #[test]
    fn one_peer_cannot_register_waits_without_bound() {
        let mut p = solo();
        let (tenant, pid) = (TenantId(1), Pid::new(NodeId(1), Incarnation(1), 7));
        let now = Time::from_secs(1);
        p.on_host_event(now, &adopted(pid, tenant, 1, 1, Duration::from_secs(1)));
        drain(&mut p);
        let wait = |token| PlacementMsg::PidReq {
            token,
            tenant,
            pid,
            op: msg::PidOp::Wait,
        };
        let waiting = |p: &mut Placement| {
            drain(p)
                .iter()
                .filter(|o| {
                    matches!(
                        o,
                        Out::Send(
                            _,
                            PlacementMsg::PidAns {
                                answer: msg::PidAnswer::Waiting,
                                ..
                            }
                        )
                    )
                })
                .count()
        };
        let bound = waiters::MAX_WAITS_PER_PEER as u64;
        for token in 0..bound {
            p.handle_message(now, NodeId(6), wait(token), &ctx());
        }
        assert_eq!(waiting(&mut p), bound as usize);
        p.handle_message(now, NodeId(6), wait(bound), &ctx());
        assert_eq!(waiting(&mut p), 0, "over the bound: not registered");
        p.handle_message(now, NodeId(6), wait(0), &ctx());
        assert_eq!(waiting(&mut p), 1, "a registered wait polled again");
        p.handle_message(now, NodeId(5), wait(bound), &ctx());
        assert_eq!(waiting(&mut p), 1, "another peer is not affected");
        // Once the process exits, the peer has room again.
        let (status, usage) = (
            crate::host::ExitStatus::Code(0),
            crate::host::Usage::default(),
        );
        p.on_host_event(now, &HostEvent::Exited { pid, status, usage });
        let told = drain(&mut p)
            .iter()
            .filter(|o| matches!(o, Out::Send(_, PlacementMsg::PidAns { .. })))
            .count();
        assert_eq!(
            told,
            bound as usize + 1,
            "every registered wait is answered once"
        );
        let other = Pid::new(NodeId(1), Incarnation(1), 8);
        p.on_host_event(now, &adopted(other, tenant, 1, 1, Duration::from_secs(1)));
        drain(&mut p);
        let wait_other = PlacementMsg::PidReq {
            token: bound + 1,
            tenant,
            pid: other,
            op: msg::PidOp::Wait,
        };
        p.handle_message(now, NodeId(6), wait_other, &ctx());
        assert_eq!(waiting(&mut p), 1);
    }

    /// Regression: a `wait` on a process of a crashed host ended `Unreachable` (or hung
    /// through its retries); once the federation removes the host it ends `Lost`, and
    /// a later call on its pids that stays unanswered ends `Lost` too.
    #[test]
    fn calls_on_the_pids_of_a_removed_host_end_lost() {
        let mut p = solo();
        let (tenant, dead) = (TenantId(1), NodeId(5));
        let pid = Pid::new(dead, Incarnation(1), 3);
        let now = Time::from_secs(10);
        p.start_pid_op(now, RequestId(1), tenant, pid, msg::PidOp::Wait);
        let asked = drain(&mut p)
            .iter()
            .any(|o| matches!(o, Out::Send(to, _) if *to == dead));
        assert!(asked, "the wait asks the pid's host");
        p.host_removed(&ctx().tree, dead);
        assert_eq!(
            drain(&mut p),
            vec![Out::Reply(
                RequestId(1),
                ApiReply::Waited(Ok(crate::host::ExitStatus::Lost))
            )]
        );
        p.start_pid_op(
            now,
            RequestId(2),
            tenant,
            pid,
            msg::PidOp::Kill(Signal::Terminate),
        );
        drain(&mut p);
        let reply = reply_after_timeouts(&mut p, RequestId(2));
        assert_eq!(reply, Some(ApiReply::Killed(Err(api::KillError::Lost))));
        p.start_pid_op(now, RequestId(4), tenant, pid, msg::PidOp::Info);
        drain(&mut p);
        p.host_removed(&ctx().tree, dead);
        let state = drain(&mut p).into_iter().find_map(|o| match o {
            Out::Reply(RequestId(4), ApiReply::Info(Ok(i))) => Some(i.state),
            _ => None,
        });
        assert_eq!(state, Some(api::ProcState::Lost));
        // Heard from again (e.g. after a partition): silence means unreachable again.
        p.host_heard(dead);
        p.start_pid_op(now, RequestId(3), tenant, pid, msg::PidOp::Info);
        drain(&mut p);
        let reply = reply_after_timeouts(&mut p, RequestId(3));
        assert_eq!(
            reply,
            Some(ApiReply::Info(Err(api::InfoError::Unreachable)))
        );
    }

    /// Regression: the agent ended placement's waits as `Lost` on a removal in any
    /// federation instance. Only a level-0 removal in the instance placement rides
    /// says a host is gone.
    #[test]
    fn only_a_removal_in_placements_own_instance_ends_waits_as_lost() {
        let mut p = solo();
        let (tenant, dead) = (TenantId(1), NodeId(5));
        let pid = Pid::new(dead, Incarnation(1), 3);
        let now = Time::from_secs(10);
        p.start_pid_op(now, RequestId(1), tenant, pid, msg::PidOp::Wait);
        drain(&mut p);
        let removed = |instance, level| ServiceEvent::HostRemoved {
            instance,
            node: dead,
            level,
        };
        // The agent routes an event only to the services that want it.
        assert!(!p.wants(&removed(1, 0)), "another instance's removal");
        assert!(!p.wants(&removed(0, 1)), "a removal above level 0");
        assert_eq!(drain(&mut p), Vec::new(), "the wait goes on");
        assert!(p.wants(&removed(0, 0)));
        p.handle_event(now, &removed(0, 0), &ctx());
        assert_eq!(
            drain(&mut p),
            vec![Out::Reply(
                RequestId(1),
                ApiReply::Waited(Ok(crate::host::ExitStatus::Lost))
            )]
        );
    }

    /// The other services learn of every process this host starts and ends.
    #[test]
    fn process_starts_and_exits_are_told_to_the_other_services() {
        let mut p = solo();
        let kind = SpawnKind::Spawn(spec(Some(1000)));
        p.handle_spawn(Time::ZERO, &ctx().tree, RequestId(1), TenantId(3), kind);
        let events = |p: &mut Placement| -> Vec<ServiceEvent> {
            std::iter::from_fn(|| p.poll_output())
                .filter_map(|o| match o {
                    ServiceOutput::Event(e) => Some(e),
                    _ => None,
                })
                .collect()
        };
        let started = events(&mut p);
        let [ServiceEvent::ProcessStarted { pid, tenant, .. }] = started[..] else {
            panic!("expected one start, got {started:?}");
        };
        assert_eq!(tenant, TenantId(3));
        let status = crate::host::ExitStatus::Code(0);
        let usage = crate::host::Usage::default();
        p.on_host_event(Time::ZERO, &HostEvent::Exited { pid, status, usage });
        assert_eq!(
            events(&mut p),
            vec![ServiceEvent::ProcessExited {
                pid,
                tenant,
                status
            }]
        );
    }

    /// Regression: `ps` answers were cut into batches sized from the first entry, so a
    /// short first command followed by long ones made `PsAns` messages over the MTU.
    #[test]
    fn ps_answers_with_commands_of_varying_length_stay_under_the_mtu() {
        let mut p = solo();
        let tenant = TenantId(1);
        let now = Time::from_secs(1);
        for seq in 0..40u64 {
            let command = if seq == 0 {
                "/a".to_owned()
            } else {
                format!("/{}", "x".repeat(600 + seq as usize * 10))
            };
            let pid = Pid::new(NodeId(1), Incarnation(1), seq);
            let event = HostEvent::Adopted {
                pid,
                tenant,
                command,
                cpu_millicores: 1,
                memory_bytes: 1,
                age: Duration::ZERO,
            };
            p.on_host_event(now, &event);
        }
        drain(&mut p);
        let ps_req = PlacementMsg::PsReq {
            token: 7,
            tenant,
            asker: NodeId(2),
        };
        p.handle_message(now, NodeId(2), ps_req, &ctx());
        let mut received = 0;
        for out in drain(&mut p) {
            let Out::Send(NodeId(2), m @ PlacementMsg::PsAns { .. }) = out else {
                panic!("unexpected {out:?}");
            };
            if let PlacementMsg::PsAns { entries, .. } = &m {
                received += entries.len();
            }
            let env = Envelope {
                from: NodeId(1),
                incarnation: Incarnation(1),
                body: Message::Placement(m),
            };
            let len = encoded_len(&env);
            assert!(len <= CONTROL_MTU, "a ps answer of {len} bytes");
        }
        assert_eq!(received, 40, "every entry is sent");
    }

    #[test]
    fn a_single_agent_places_locally_without_messages() {
        let mut p = solo();
        let kind = SpawnKind::NSpawn(3, spec(Some(1000)));
        p.handle_spawn(Time::ZERO, &ctx().tree, RequestId(1), TenantId(1), kind);
        let out = drain(&mut p);
        assert!(!out.iter().any(|o| matches!(o, Out::Send(..))));
        let starts = out
            .iter()
            .filter(|o| matches!(o, Out::Host(c) if matches!(**c, HostCommand::Start { .. })))
            .count();
        assert_eq!(starts, 3);
        assert!(matches!(
            out.last(),
            Some(Out::Reply(RequestId(1), ApiReply::Spawned(Ok(pids)))) if pids.len() == 3
        ));
        assert!(p.invariants());
        // One more core is free: two more do not fit (short of cpu, in total), and
        // nothing is left behind.
        let kind = SpawnKind::NSpawn(2, spec(Some(1000)));
        p.handle_spawn(Time::ZERO, &ctx().tree, RequestId(2), TenantId(1), kind);
        let mut out = drain(&mut p);
        // It retries once, after a backoff, in case competing requests held the room.
        while let Some(t) = p.next_timeout().filter(|_| out.is_empty()) {
            p.handle_timeout(t, &ctx());
            out = drain(&mut p);
        }
        assert_eq!(
            out.last(),
            Some(&Out::Reply(
                RequestId(2),
                ApiReply::Spawned(Err(SpawnError::Short {
                    resource: Resource::Cpu
                }))
            ))
        );
        assert_eq!(p.accounting().2, Demand::default(), "no reservation left");
    }

    #[test]
    fn policy_is_filled_from_tenant_defaults_then_history_then_profile_then_global() {
        let mut p = solo();
        p.config.tenant_defaults = vec![(
            TenantId(2),
            PartialDemand {
                memory_bytes: Some(123),
                ..PartialDemand::default()
            },
        )];
        let mut s = spec(None);
        s.profile = Some(WorkloadProfile {
            cpu_millicores: 700,
            memory_bytes: 999,
            duration: None,
        });
        let d = p.demand_of(TenantId(2), &s);
        assert_eq!((d.cpu_millicores, d.memory_bytes), (700, 123));
        p.learn(TenantId(2), "/bin/x".into(), 300, 50);
        let d = p.demand_of(TenantId(2), &s);
        assert_eq!((d.cpu_millicores, d.memory_bytes), (300, 123));
        let d = p.demand_of(TenantId(3), &spec(None));
        assert_eq!(d, p.config.global_default);
        assert_eq!(p.demand_of(TenantId(3), &spec(Some(42))).cpu_millicores, 42);
    }

    #[test]
    fn the_largest_messages_fit_one_datagram() {
        let key = ReqKey {
            requester: NodeId(u32::MAX),
            incarnation: Incarnation(u32::MAX),
            seq: u64::MAX,
        };
        let shape = Shape {
            demand: Demand::default(),
            count: u16::MAX,
            one_per_host: true,
            cpu_class: 0,
            limits: Default::default(),
        };
        let item = CreateItem {
            index: 0,
            tenant: TenantId(0),
            demand: Demand::default(),
            spec: spec(Some(1)),
            leased: false,
        };
        let per = BATCH_BYTES / msg::size_of(&item);
        let big = [
            PlacementMsg::OfferReq {
                key,
                tenant: TenantId(u32::MAX),
                shapes: vec![shape; MAX_SHAPES],
            },
            PlacementMsg::Create {
                key,
                items: vec![item; per],
                total: u16::MAX,
            },
            PlacementMsg::Created {
                key,
                pids: vec![(0, Pid::new(NodeId(1), Incarnation(1), 1)); 60],
            },
            PlacementMsg::Candidates {
                key,
                hosts: vec![NodeId(0); 64],
            },
        ];
        for m in big {
            let env = Envelope {
                from: NodeId(0),
                incarnation: Incarnation(0),
                body: Message::Placement(m),
            };
            let len = encoded_len(&env);
            assert!(len <= CONTROL_MTU, "{} bytes: {:?}", len, env.body.kind());
        }
    }
}
