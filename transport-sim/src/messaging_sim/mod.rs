//! Simulated processes that talk by messaging (issue 13), the `[messaging]`
//! workload that creates them, the `messaging` report object, and the messaging
//! invariants, all outside the agents.
//!
//! # How it runs
//!
//! At `start` the workload spawns its processes through placement (`n_spawn` of
//! `spawn_batch` processes of one tenant, from random live hosts), each running to
//! the end of the run. At `start + warmup/2` every process that runs is set up: it
//! posts a blocking `Recv` (answered when mail comes or after `recv_wait`, and
//! posted again at once), and registers its name, joins its group (failover
//! members in rank order, 50 ms apart) or subscribes to its topic. From
//! `start + warmup` to `stop`, each kind of traffic is a Poisson stream: an
//! arrival picks a sender and issues a `Send` on its host; a request/response
//! server answers every request it receives. A process not running at setup (its
//! host was paused, say) is never set up: it never receives, so a client does not
//! send to it as its server by pid (its mailbox would fill, and blocking sends wait
//! for room up to the agents' `block_timeout`, far past `fate_bound`).
//!
//! Every message carries a header ([`HEADER_BYTES`]): its id (one counter for the
//! whole run, so increasing per sender), its send time, the sender's tenant and its
//! kind. That is what the checks below read; they never look inside an agent.
//!
//! # Invariants
//!
//! Checked on every receive (always):
//! - `messaging.fifo`: per (sender, receiver), ids arrive increasing;
//! - `messaging.no_duplicate`: no application receives one message twice;
//! - `messaging.tenant_isolation`: no message reaches a process of another tenant;
//! - `messaging.sender_stamp`: the mail's `from` is the pid that sent it;
//! - `messaging.no_ghost`: no mail is handed to a process that has ended.
//!
//! Checked every check interval, once the cluster is settled:
//! - `messaging.fate_reported`: every send is answered within `fate_bound` (while
//!   its sender's host is up);
//! - `messaging.delivered`: a pid send answered with success reaches its
//!   receiver's application within `fate_bound`, if the receiver still runs;
//! - `messaging.names_unique`: no two running processes hold one name of a tenant
//!   (each `Register` that succeeded counts until a `NameLost` or the process ends),
//!   once the federation first converged `settle` ago too (the trees of the boot
//!   merge as at a heal, and names their roots both granted are decided then).
//!
//! In a run without faults, loss, duplication or reordering (see
//! [`MessagingSim::faultless`]), on every answer:
//! - `messaging.known_fates`: no send ends `Unknown` or `Overtaken` (jitter alone
//!   must not cost a message).
//!
//! And at every check, faults or not, with `reliable`:
//! - `messaging.failover_lossless`: a failover send answered with success reaches
//!   some member's application within `fate_bound`.
//!
//! With `reliable`, in a run without crashes or partitions (loss, duplication and
//! reordering allowed; see [`MessagingSim::without_faults`]), at every check:
//! - `messaging.fanout_reliable`: a publication, multicast or broadcast answered
//!   with success reaches, within `fate_bound`, every process that was a confirmed
//!   subscriber or member (for a broadcast: a process of the tenant, set up) when it
//!   was sent and still runs (with `messaging.no_duplicate` and `messaging.fifo`:
//!   each exactly once, in the sender's order), if it was sent once the federation
//!   had first converged a settle period before: until then the trees of the boot
//!   merge, as at a heal, and one tree's memberships reach the other's leaders only
//!   with the beats. (Swarm seed 442613: trees that merged at 4.75 s, and a
//!   publication at 5.04 s answered `Ok` that missed a subscriber of the other.)
//!
//! Without `reliable`, in a run without faults, loss, duplication or reordering:
//! - `messaging.fanout_told`: a publication, multicast or broadcast answered with
//!   success reaches every such process likewise: one it was not put in (a full
//!   mailbox, see `pubsub.slow_subscribers`) must make the answer
//!   `SendError::Partial`, never a success.

mod config;
mod figures;

pub use config::{
    ExternalWorkload, FailoverWorkload, GroupWorkload, MessagingWorkload, PubSubWorkload,
    RrWorkload,
};
pub use figures::{Histogram, LatencyFigures, MessagingFigures};

use crate::placement_sim::PlacementSim;
use crate::topology::Distance;
use nefele_api::messaging::{
    Delivery, Dest, DistanceClass, Mail, MailBody, Pattern, SendError, SendReceipt,
};
use nefele_core::host::ResourcePolicy;
use nefele_core::messaging::MessagingMsg;
use nefele_core::wire::Message;
use nefele_core::{ApiCall, ApiReply, NodeId, Pid, ProcSpec, TenantId, Time};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rustc_hash::FxHashMap;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

/// The simulator's header at the front of every message.
pub const HEADER_BYTES: usize = 24;

/// Request ids of messaging calls start here (placement's count up from 1).
const REQUEST_BASE: u64 = 1 << 62;

/// Mails taken per `Recv`.
const RECV_MAX: u32 = 256;

/// Whether a wire message carries application data (exempt from the control MTU;
/// bounded by `max_message_bytes` instead).
#[must_use]
pub fn is_data(message: &Message) -> bool {
    match message {
        Message::Messaging(MessagingMsg::Deliver(_)) => true,
        // Fan-out steps and external calls that carry data (`*_data` kinds).
        Message::Messaging(m) => nefele_core::messaging::msg::kind(m).ends_with("_data"),
        _ => false,
    }
}

/// Whether a wire message exists only because of application messages (data and
/// their acks): left out of the control traffic figure.
#[must_use]
pub fn is_user_traffic(message: &Message) -> bool {
    matches!(
        message,
        Message::Messaging(
            MessagingMsg::Deliver(_) | MessagingMsg::Acks(_) | MessagingMsg::External(_)
        )
    )
}

/// What a simulated process does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    RrClient { pair: u32 },
    RrServer { pair: u32 },
    Publisher { topic: u32 },
    Subscriber { topic: u32 },
    GroupMember { group: u32 },
    GroupClient { group: u32 },
    FailoverMember { group: u32, rank: u32 },
    FailoverClient { group: u32 },
    ExternalClient,
}

/// The kind of a message, in its header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Request,
    Response,
    Publish,
    Group,
    Failover,
    External,
}

impl Kind {
    fn code(self) -> u8 {
        self as u8
    }
    fn from_code(c: u8) -> Option<Kind> {
        [
            Kind::Request,
            Kind::Response,
            Kind::Publish,
            Kind::Group,
            Kind::Failover,
            Kind::External,
        ]
        .get(usize::from(c))
        .copied()
    }
}

#[derive(Clone, Debug)]
struct Proc {
    tenant: TenantId,
    role: Role,
    pid: Option<Pid>,
    node: Option<NodeId>,
}

/// A timer of the workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsgTimer {
    /// Spawn the processes.
    Spawn,
    /// Set up the processes that run.
    Setup,
    /// A failover member joins its group.
    Join(u32),
    /// The next arrival of a traffic stream.
    Traffic(Stream),
    /// The hosts of the failover primaries crash.
    CrashPrimaries,
    /// A slow subscriber receives again.
    Recv(u32),
}

/// A traffic stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// Request/response.
    Rr,
    /// Publications.
    PubSub,
    /// Group sends.
    Groups,
    /// Failover sends.
    Failover,
    /// Calls to the external echo service.
    External,
}

/// What the simulator must do for the workload.
#[derive(Debug)]
pub enum MsgAction {
    /// Deliver this client call to the agent of this host now.
    Call(NodeId, u64, Box<ApiCall>),
    /// Fire this timer then.
    At(Time, MsgTimer),
    /// Crash this host (the failover workload's fault).
    Crash(NodeId),
}

/// An outstanding call.
#[derive(Clone, Debug)]
enum Pending {
    Spawn(Vec<u32>),
    Send(u64),
    Recv(u32),
    /// A subscribe or join of this process.
    Member(u32),
    Register(u32, String),
    Whereis(Time),
}

/// A message sent and not yet settled.
#[derive(Clone, Debug)]
struct Flight {
    at: Time,
    from: u32,
    kind: Kind,
    /// The receiver of a pid send.
    to: Option<u32>,
    /// `Some(reached)` once answered with success, `Some(0)` with an error.
    answered: Option<u32>,
    seen: u32,
    flagged: bool,
    /// A reliable fan-out send: the processes it must still reach.
    missing: BTreeSet<u32>,
}

/// The messaging workload of a run.
pub struct MessagingSim {
    cfg: MessagingWorkload,
    end: Time,
    rng: ChaCha8Rng,
    procs: Vec<Proc>,
    by_pid: BTreeMap<Pid, u32>,
    /// Per traffic stream, the processes that send on it.
    senders: BTreeMap<u8, Vec<u32>>,
    /// Calls not answered yet, by request id (looked up on every answer, never
    /// iterated in an order that reaches an output).
    pending: FxHashMap<u64, (NodeId, Pending)>,
    next_request: u64,
    next_id: u64,
    flights: BTreeMap<u64, Flight>,
    /// Per (sender, receiver, path), the last message id received (looked up on
    /// every receive, never iterated).
    last_seen: FxHashMap<(Pid, u32, u8), (u64, Option<Kind>)>,
    /// Per (sender, receiver), the last message id received on any path.
    last_any: FxHashMap<(Pid, u32), u64>,
    names: BTreeMap<(TenantId, String), Vec<u32>>,
    actions: VecDeque<MsgAction>,
    violations: Vec<(&'static str, String)>,
    /// Send-to-receive latency per distance class (index: [`DistanceClass::index`]).
    latency: [Option<Histogram>; 4],
    /// Bytes of messaging on the wire per link class (index: the [`Distance`]).
    bytes_by_link: [u64; 5],
    lookup_latency: Histogram,
    figures: MessagingFigures,
    group_turn: u32,
    /// The run has no fault of any kind: every fate must be a known one.
    faultless: bool,
    /// The run has no crash or partition (the network may lose, duplicate and
    /// reorder): every live member is reachable.
    without_faults: bool,
    /// At the last check, the federation had first converged a settle period
    /// before: fan-out sends made since must reach every member. Earlier ones need
    /// not: the trees of the boot merge as at a heal, and the memberships of one
    /// reach the leaders of the other only with the beats, a period per level.
    merged: bool,
    /// Round-robin sends received, per member.
    round_robin: BTreeMap<u32, u64>,
    /// Failover groups whose takeover was seen.
    takeover: BTreeSet<u32>,
    takeover_latency: Histogram,
    /// A traffic arrival has come.
    in_traffic: bool,
    /// Processes whose subscribe or join succeeded.
    members: BTreeSet<u32>,
    /// Subscribers that receive only every `pubsub.slow_recv_every`.
    slow: BTreeSet<u32>,
    /// The processes a fan-out send may have to reach, by its destination: per
    /// topic name its subscribers, per group name its members, per tenant its
    /// processes (each list in increasing order). Fixed at the start, so a send
    /// looks at its own candidates instead of every process.
    fan_out_index: FanOutIndex,
}

/// See [`MessagingSim::fan_out_index`].
#[derive(Debug, Default)]
struct FanOutIndex {
    topics: BTreeMap<String, Vec<u32>>,
    groups: BTreeMap<String, Vec<u32>>,
    tenants: BTreeMap<TenantId, Vec<u32>>,
}

impl FanOutIndex {
    fn new(procs: &[Proc]) -> Self {
        let mut index = FanOutIndex::default();
        for (ix, p) in procs.iter().enumerate() {
            let ix = ix as u32;
            match p.role {
                Role::Subscriber { topic } => {
                    index
                        .topics
                        .entry(format!("t{topic}"))
                        .or_default()
                        .push(ix);
                }
                Role::GroupMember { group } => {
                    index
                        .groups
                        .entry(format!("g{group}"))
                        .or_default()
                        .push(ix);
                }
                _ => {}
            }
            index.tenants.entry(p.tenant).or_default().push(ix);
        }
        index
    }
}

impl MessagingSim {
    /// The workload `cfg` of a run that ends at `end`, drawing from `seed`.
    #[must_use]
    pub fn new(cfg: MessagingWorkload, end: Time, seed: u64) -> Self {
        let mut procs = Vec::new();
        let tenant = |k: u32| TenantId(k % cfg.tenants);
        let mut slow = BTreeSet::new();
        let mut add = |tenant: TenantId, role: Role| {
            procs.push(Proc {
                tenant,
                role,
                pid: None,
                node: None,
            });
            procs.len() as u32 - 1
        };
        if let Some(rr) = &cfg.rr {
            for pair in 0..rr.pairs {
                add(tenant(pair), Role::RrClient { pair });
            }
            for pair in 0..rr.pairs {
                add(tenant(pair), Role::RrServer { pair });
            }
            for _ in 0..rr.contenders {
                for pair in 0..rr.pairs {
                    add(tenant(pair), Role::RrServer { pair });
                }
            }
        }
        if let Some(p) = &cfg.pubsub {
            for topic in 0..p.topics {
                add(tenant(topic), Role::Publisher { topic });
                let spread = p.fanout_max - p.fanout_min;
                let fanout = p.fanout_min + spread * topic / p.topics.saturating_sub(1).max(1);
                for k in 0..fanout {
                    let ix = add(tenant(topic), Role::Subscriber { topic });
                    if k < p.slow_subscribers {
                        slow.insert(ix);
                    }
                }
            }
        }
        if let Some(g) = &cfg.groups {
            for group in 0..g.groups {
                for _ in 0..g.members {
                    add(tenant(group), Role::GroupMember { group });
                }
                for _ in 0..g.clients {
                    add(tenant(group), Role::GroupClient { group });
                }
            }
        }
        if let Some(f) = &cfg.failover {
            for group in 0..f.groups {
                for rank in 0..f.members {
                    add(tenant(group), Role::FailoverMember { group, rank });
                }
                for _ in 0..f.clients {
                    add(tenant(group), Role::FailoverClient { group });
                }
            }
        }
        if let Some(e) = &cfg.external {
            for client in 0..e.clients {
                add(tenant(client), Role::ExternalClient);
            }
        }
        let figures = MessagingFigures {
            processes: procs.len() as u64,
            ..MessagingFigures::default()
        };
        let mut sim = MessagingSim {
            end,
            rng: rand::SeedableRng::seed_from_u64(seed),
            procs,
            by_pid: BTreeMap::new(),
            senders: BTreeMap::new(),
            pending: FxHashMap::default(),
            next_request: REQUEST_BASE,
            next_id: 0,
            flights: BTreeMap::new(),
            last_seen: FxHashMap::default(),
            last_any: FxHashMap::default(),
            names: BTreeMap::new(),
            actions: VecDeque::new(),
            violations: Vec::new(),
            latency: Default::default(),
            bytes_by_link: [0; 5],
            lookup_latency: Histogram::default(),
            figures,
            group_turn: 0,
            faultless: false,
            without_faults: false,
            merged: false,
            round_robin: BTreeMap::new(),
            takeover: BTreeSet::new(),
            takeover_latency: Histogram::default(),
            in_traffic: false,
            members: BTreeSet::new(),
            slow,
            fan_out_index: FanOutIndex::default(),
            cfg,
        };
        sim.fan_out_index = FanOutIndex::new(&sim.procs);
        let start = Time::ZERO + sim.cfg.start;
        sim.actions.push_back(MsgAction::At(start, MsgTimer::Spawn));
        sim.actions
            .push_back(MsgAction::At(start + sim.cfg.warmup / 2, MsgTimer::Setup));
        if let Some(at) = sim.cfg.failover.as_ref().and_then(|f| f.crash_primaries_at) {
            sim.actions
                .push_back(MsgAction::At(Time::ZERO + at, MsgTimer::CrashPrimaries));
        }
        sim
    }

    /// Declares the run free of faults, loss, duplication and reordering, which
    /// turns on `messaging.known_fates`.
    #[must_use]
    pub fn faultless(mut self, faultless: bool) -> Self {
        self.faultless = faultless;
        self
    }

    /// Declares the run free of crashes and partitions (not of loss, duplication or
    /// reordering), which turns on `messaging.fanout_reliable` in reliable mode.
    #[must_use]
    pub fn without_faults(mut self, without_faults: bool) -> Self {
        self.without_faults = without_faults;
        self
    }

    /// Whether `request` is one of this workload's calls.
    #[must_use]
    pub fn owns(request: u64) -> bool {
        request >= REQUEST_BASE
    }

    /// The next thing the simulator must do, if any.
    pub fn pop_action(&mut self) -> Option<MsgAction> {
        self.actions.pop_front()
    }

    fn call(&mut self, node: NodeId, pending: Pending, call: ApiCall) {
        self.next_request += 1;
        let request = self.next_request;
        self.pending.insert(request, (node, pending));
        self.actions
            .push_back(MsgAction::Call(node, request, Box::new(call)));
    }

    fn stop(&self) -> Time {
        match self.cfg.stop {
            Some(s) => Time::ZERO + s,
            None => Time::from_nanos(
                self.end
                    .as_nanos()
                    .saturating_sub(Duration::from_secs(5).as_nanos() as u64),
            ),
        }
    }

    /// Host `node` crashed: calls waiting on it will never be answered.
    pub fn crash(&mut self, node: NodeId) {
        let mut gone: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, (n, _))| *n == node)
            .map(|(r, _)| *r)
            .collect();
        gone.sort_unstable();
        for r in gone {
            if let Some((_, Pending::Send(id))) = self.pending.remove(&r) {
                self.flights.remove(&id);
            }
        }
    }

    /// Whether process `ix` runs now.
    fn running(&self, ix: u32, placement: &PlacementSim) -> bool {
        let p = &self.procs[ix as usize];
        match (p.pid, p.node) {
            (Some(pid), Some(node)) => placement.host_of(pid) == Some(node),
            _ => false,
        }
    }

    /// A timer of the workload fired; `up` says which hosts are up.
    pub fn on_timer(
        &mut self,
        now: Time,
        timer: MsgTimer,
        placement: &PlacementSim,
        up: &dyn Fn(NodeId) -> bool,
        hosts: u32,
    ) {
        match timer {
            MsgTimer::Spawn => self.spawn(up, hosts),
            MsgTimer::Setup => self.setup(now, placement),
            MsgTimer::Join(ix) => {
                if self.running(ix, placement) {
                    self.join(ix);
                }
            }
            MsgTimer::Traffic(stream) => {
                self.in_traffic = true;
                self.arrival(now, stream, placement);
            }
            MsgTimer::Recv(ix) => {
                if self.running(ix, placement) {
                    self.recv(ix);
                }
            }
            MsgTimer::CrashPrimaries => {
                let mut nodes: Vec<NodeId> = self
                    .procs
                    .iter()
                    .filter(|p| matches!(p.role, Role::FailoverMember { rank: 0, .. }))
                    .filter_map(|p| p.node)
                    .collect();
                nodes.sort_unstable();
                nodes.dedup();
                self.actions.extend(nodes.into_iter().map(MsgAction::Crash));
            }
        }
    }

    fn spawn(&mut self, up: &dyn Fn(NodeId) -> bool, hosts: u32) {
        let mut by_tenant: BTreeMap<TenantId, Vec<u32>> = BTreeMap::new();
        for (ix, p) in self.procs.iter().enumerate() {
            by_tenant.entry(p.tenant).or_default().push(ix as u32);
        }
        let run_ms = self.end.as_nanos() / 1_000_000 + 1_000;
        for (tenant, list) in by_tenant {
            for batch in list.chunks(self.cfg.spawn_batch as usize) {
                let node = (0..16)
                    .map(|_| NodeId(self.rng.gen_range(0..hosts)))
                    .find(|n| up(*n));
                let Some(node) = node else { continue };
                let spec = ProcSpec {
                    path: "/bin/msg".into(),
                    argv: vec!["msg".into()],
                    envp: vec![
                        format!("NEFELE_SIM_RUN_MS={run_ms}"),
                        "NEFELE_SIM_CPU_MC=10".into(),
                        format!("NEFELE_SIM_MEM={}", 1u64 << 20),
                    ],
                    affinity: Vec::new(),
                    resources: ResourcePolicy {
                        cpu_millicores: Some(10),
                        memory_bytes: Some(1 << 20),
                        ..ResourcePolicy::default()
                    },
                    profile: None,
                };
                let n = batch.len() as u32;
                let call = if n == 1 {
                    ApiCall::Spawn { tenant, spec }
                } else {
                    ApiCall::NSpawn { tenant, n, spec }
                };
                self.call(node, Pending::Spawn(batch.to_vec()), call);
            }
        }
    }

    fn setup(&mut self, now: Time, placement: &PlacementSim) {
        for ix in 0..self.procs.len() as u32 {
            let p = &mut self.procs[ix as usize];
            let Some(pid) = p.pid else { continue };
            p.node = placement.host_of(pid);
            let Some(node) = p.node else { continue };
            self.figures.processes_running += 1;
            let (tenant, role) = (p.tenant, p.role);
            self.recv(ix);
            match role {
                Role::RrServer { pair } if self.cfg.rr.as_ref().is_some_and(|r| r.by_name) => {
                    let name = format!("rr{pair}");
                    self.call(
                        node,
                        Pending::Register(ix, name.clone()),
                        ApiCall::Register { tenant, name, pid },
                    );
                }
                Role::Subscriber { topic } => self.call(
                    node,
                    Pending::Member(ix),
                    ApiCall::Subscribe {
                        tenant,
                        topic: format!("t{topic}"),
                        pid,
                    },
                ),
                Role::GroupMember { .. } => self.join(ix),
                Role::FailoverMember { rank, .. } => {
                    let at = now + Duration::from_millis(50) * rank;
                    self.actions
                        .push_back(MsgAction::At(at, MsgTimer::Join(ix)));
                }
                _ => {}
            }
            let stream = match role {
                Role::RrClient { .. } => Some(Stream::Rr),
                Role::Publisher { .. } => Some(Stream::PubSub),
                Role::GroupClient { .. } => Some(Stream::Groups),
                Role::FailoverClient { .. } => Some(Stream::Failover),
                Role::ExternalClient => Some(Stream::External),
                _ => None,
            };
            if let Some(s) = stream {
                self.senders.entry(s as u8).or_default().push(ix);
            }
        }
        let traffic = Time::ZERO + self.cfg.start + self.cfg.warmup;
        let streams = [
            Stream::Rr,
            Stream::PubSub,
            Stream::Groups,
            Stream::Failover,
            Stream::External,
        ];
        for s in streams {
            if self.senders.contains_key(&(s as u8)) {
                self.actions
                    .push_back(MsgAction::At(traffic, MsgTimer::Traffic(s)));
            }
        }
    }

    fn join(&mut self, ix: u32) {
        let p = &self.procs[ix as usize];
        let (Some(pid), Some(node)) = (p.pid, p.node) else {
            return;
        };
        let group = match p.role {
            Role::GroupMember { group } => format!("g{group}"),
            Role::FailoverMember { group, .. } => format!("f{group}"),
            _ => return,
        };
        let tenant = p.tenant;
        self.call(
            node,
            Pending::Member(ix),
            ApiCall::Join { tenant, group, pid },
        );
    }

    fn recv(&mut self, ix: u32) {
        let p = &self.procs[ix as usize];
        let (Some(pid), Some(node)) = (p.pid, p.node) else {
            return;
        };
        let call = ApiCall::Recv {
            tenant: p.tenant,
            pid,
            max: RECV_MAX,
            wait: Some(self.cfg.recv_wait),
        };
        self.call(node, Pending::Recv(ix), call);
    }

    fn rate(&self, stream: Stream) -> f64 {
        match stream {
            Stream::Rr => self.cfg.rr.as_ref().map_or(0.0, |r| r.rate_per_s),
            Stream::PubSub => self.cfg.pubsub.as_ref().map_or(0.0, |r| r.rate_per_s),
            Stream::Groups => self.cfg.groups.as_ref().map_or(0.0, |r| r.rate_per_s),
            Stream::Failover => self.cfg.failover.as_ref().map_or(0.0, |r| r.rate_per_s),
            Stream::External => self.cfg.external.as_ref().map_or(0.0, |r| r.rate_per_s),
        }
    }

    /// The next arrival of `stream`: one send from a random sender of it.
    fn arrival(&mut self, now: Time, stream: Stream, placement: &PlacementSim) {
        let rate = self.rate(stream);
        if now > self.stop() || rate <= 0.0 {
            return;
        }
        let senders = &self.senders[&(stream as u8)];
        let ix = senders[self.rng.gen_range(0..senders.len())];
        if self.running(ix, placement) {
            let p = &self.procs[ix as usize];
            let (dest, kind, to) = match p.role {
                Role::RrClient { pair } => {
                    let rr = self.cfg.rr.clone().unwrap_or_default();
                    let server_ix = self.rr_server(pair);
                    let server = &self.procs[server_ix as usize];
                    let dest = if rr.by_name {
                        Dest::Name(format!("rr{pair}"))
                    } else {
                        // A server not running at setup never receives: no server.
                        match (server.pid, server.node) {
                            (Some(pid), Some(_)) => Dest::Pid(pid),
                            _ => return self.next_arrival(now, stream, rate),
                        }
                    };
                    if rr.by_name && self.rng.gen_bool(rr.lookup_fraction) {
                        // Another server of the same tenant (pairs are dealt to
                        // tenants in turn), so the name exists for this client.
                        let tenants = self.cfg.tenants;
                        let same = (rr.pairs - pair % tenants).div_ceil(tenants);
                        let other = self.rng.gen_range(0..same) * tenants + pair % tenants;
                        self.lookup(now, ix, format!("rr{other}"));
                    }
                    (dest, Kind::Request, Some(server_ix))
                }
                Role::Publisher { topic } => {
                    (Dest::Topic(format!("t{topic}")), Kind::Publish, None)
                }
                Role::GroupClient { group } => {
                    self.group_turn = self.group_turn.wrapping_add(1);
                    let g = self.cfg.groups.as_ref();
                    let broadcast = g.is_some_and(|g| g.broadcast);
                    let patterns = g.map_or(&[][..], |g| &g.patterns[..]);
                    let turn = self.group_turn as usize % (patterns.len() + usize::from(broadcast));
                    let dest = match patterns.get(turn) {
                        Some(&pattern) => Dest::Group {
                            group: format!("g{group}"),
                            pattern,
                        },
                        None => Dest::Broadcast,
                    };
                    (dest, Kind::Group, None)
                }
                Role::FailoverClient { group } => (
                    Dest::Group {
                        group: format!("f{group}"),
                        pattern: Pattern::Failover,
                    },
                    Kind::Failover,
                    None,
                ),
                // The echo comes back to the caller itself.
                Role::ExternalClient => (
                    Dest::External {
                        host: "echo.external".into(),
                        port: 7,
                    },
                    Kind::External,
                    Some(ix),
                ),
                _ => return self.next_arrival(now, stream, rate),
            };
            self.send(now, ix, dest, kind, to, placement);
        }
        self.next_arrival(now, stream, rate);
    }

    fn next_arrival(&mut self, now: Time, stream: Stream, rate: f64) {
        let gap: f64 = -self.rng.gen_range(f64::EPSILON..1.0f64).ln() / rate;
        let at = now + Duration::from_secs_f64(gap);
        self.actions
            .push_back(MsgAction::At(at, MsgTimer::Traffic(stream)));
    }

    /// The server process of request/response pair `pair`.
    fn rr_server(&self, pair: u32) -> u32 {
        self.cfg.rr.as_ref().map_or(0, |r| r.pairs) + pair
    }

    fn lookup(&mut self, now: Time, ix: u32, name: String) {
        let p = &self.procs[ix as usize];
        let Some(node) = p.node else { return };
        let tenant = p.tenant;
        self.call(
            node,
            Pending::Whereis(now),
            ApiCall::Whereis { tenant, name },
        );
    }

    /// Process `ix` sends a message of `kind` to `dest` now.
    #[allow(clippy::too_many_arguments)]
    fn send(
        &mut self,
        now: Time,
        ix: u32,
        dest: Dest,
        kind: Kind,
        to: Option<u32>,
        placement: &PlacementSim,
    ) {
        let p = &self.procs[ix as usize];
        let (Some(pid), Some(node)) = (p.pid, p.node) else {
            return;
        };
        let tenant = p.tenant;
        self.next_id += 1;
        let id = self.next_id;
        let fan_out = matches!(
            dest,
            Dest::Topic(_)
                | Dest::Broadcast
                | Dest::Group {
                    pattern: Pattern::Multicast,
                    ..
                }
        );
        let mut data = payload(self.cfg.payload_bytes as usize, id, now, tenant, kind);
        data[21] = u8::from(fan_out);
        data[22] = u8::from(matches!(
            dest,
            Dest::Group {
                pattern: Pattern::RoundRobin,
                ..
            }
        ));
        let delivery = if self.cfg.reliable {
            Delivery::Reliable
        } else {
            Delivery::AtMostOnce
        };
        let watched = if self.cfg.reliable {
            self.without_faults
        } else {
            self.faultless
        };
        let missing = if watched && fan_out && self.merged {
            self.fan_out_receivers(tenant, &dest, placement)
        } else {
            BTreeSet::new()
        };
        self.flights.insert(
            id,
            Flight {
                at: now,
                from: ix,
                kind,
                to,
                answered: None,
                seen: 0,
                flagged: false,
                missing,
            },
        );
        self.figures.sent += 1;
        let call = ApiCall::Send {
            tenant,
            from: pid,
            to: dest,
            data,
            delivery,
            block: true,
        };
        self.call(node, Pending::Send(id), call);
    }

    /// The processes a fan-out send to `dest` of `tenant` must reach: the confirmed
    /// subscribers or members, or for a broadcast every process of the tenant that
    /// is set up, running now.
    fn fan_out_receivers(
        &self,
        tenant: TenantId,
        dest: &Dest,
        placement: &PlacementSim,
    ) -> BTreeSet<u32> {
        let index = &self.fan_out_index;
        let (candidates, confirmed) = match dest {
            Dest::Topic(t) => (index.topics.get(t), true),
            Dest::Group { group, .. } => (index.groups.get(group), true),
            Dest::Broadcast => (index.tenants.get(&tenant), false),
            _ => (None, false),
        };
        candidates
            .into_iter()
            .flatten()
            .copied()
            .filter(|ix| (!confirmed || self.members.contains(ix)) && self.running(*ix, placement))
            .collect()
    }

    /// The agent of `node` answered `request` now.
    pub fn on_reply(&mut self, now: Time, request: u64, reply: ApiReply, placement: &PlacementSim) {
        let Some((_, pending)) = self.pending.remove(&request) else {
            return;
        };
        match (pending, reply) {
            (Pending::Spawn(batch), ApiReply::Spawned(Ok(pids))) => {
                for (ix, pid) in batch.into_iter().zip(pids) {
                    self.procs[ix as usize].pid = Some(pid);
                    self.by_pid.insert(pid, ix);
                }
            }
            (Pending::Spawn(batch), ApiReply::Spawned(Err(e))) => {
                *self
                    .figures
                    .setup_failed
                    .entry(format!("spawn: {e:?}"))
                    .or_default() += batch.len() as u64;
            }
            (Pending::Register(ix, name), ApiReply::Named(r)) => match r {
                Ok(()) => {
                    let tenant = self.procs[ix as usize].tenant;
                    self.names.entry((tenant, name)).or_default().push(ix);
                }
                Err(e) => self.setup_result("register", Some(format!("{e:?}"))),
            },
            (Pending::Member(ix), ApiReply::Grouped(r)) => {
                let what = match self.procs[ix as usize].role {
                    Role::Subscriber { .. } => "subscribe",
                    _ => "join",
                };
                if r.is_ok() {
                    self.members.insert(ix);
                }
                self.setup_result(what, r.err().map(|e| format!("{e:?}")));
            }
            (Pending::Send(id), ApiReply::Sent(result)) => self.sent(id, result),
            (Pending::Recv(ix), ApiReply::Received(result)) => match result {
                Ok(mails) => {
                    self.received(now, ix, mails, placement);
                    let slow = self.slow.contains(&ix);
                    let every = self.cfg.pubsub.as_ref().map(|p| p.slow_recv_every);
                    match every.filter(|_| slow) {
                        Some(every) => self
                            .actions
                            .push_back(MsgAction::At(now + every, MsgTimer::Recv(ix))),
                        None if self.running(ix, placement) => self.recv(ix),
                        None => {}
                    }
                }
                Err(e) => {
                    if self.running(ix, placement) {
                        self.violations.push((
                            "messaging.recv",
                            format!("recv of running process {ix} failed: {e}"),
                        ));
                    }
                }
            },
            (Pending::Whereis(_), ApiReply::Whereis(Err(e))) => {
                *self
                    .figures
                    .lookups_failed
                    .entry(format!("{e:?}"))
                    .or_default() += 1;
            }
            (Pending::Whereis(at), ApiReply::Whereis(Ok(_))) => {
                let ns = now.saturating_since(at).as_nanos() as u64;
                if ns == 0 {
                    self.figures.lookups_warm += 1;
                } else {
                    self.figures.lookups_cold += 1;
                    self.lookup_latency.record(ns);
                }
            }
            (pending, reply) => self.violations.push((
                "messaging.reply",
                format!("{pending:?} answered with {reply:?}"),
            )),
        }
    }

    fn setup_result(&mut self, what: &'static str, error: Option<String>) {
        if let Some(e) = error {
            *self
                .figures
                .setup_failed
                .entry(format!("{what}: {e}"))
                .or_default() += 1;
        }
    }

    fn sent(&mut self, id: u64, result: Result<SendReceipt, SendError>) {
        let reached = match result {
            Ok(receipt) => {
                self.figures.sent_ok += 1;
                receipt.reached
            }
            Err(SendError::Partial {
                reached,
                full,
                overtaken,
            }) => {
                // The sender was told who it missed: it owes them nothing.
                *self.figures.failed.entry("Partial".into()).or_default() += 1;
                self.figures.partial_full += u64::from(full);
                self.figures.partial_overtaken += u64::from(overtaken);
                if let Some(f) = self.flights.get_mut(&id) {
                    f.missing.clear();
                }
                reached
            }
            Err(e) => {
                *self.figures.failed.entry(format!("{e:?}")).or_default() += 1;
                if self.faultless && matches!(e, SendError::Unknown | SendError::Overtaken) {
                    self.violations.push((
                        "messaging.known_fates",
                        format!("send {id} ended {e:?} in a run without faults"),
                    ));
                }
                0
            }
        };
        let done = self.flights.get_mut(&id).is_some_and(|f| {
            f.answered = Some(reached);
            if reached == 0 {
                // Failed: it owed nothing to anyone.
                f.missing.clear();
            }
            f.seen >= reached && f.missing.is_empty()
        });
        if done {
            self.flights.remove(&id);
        }
    }

    /// Process `ix` received `mails` now.
    fn received(&mut self, now: Time, ix: u32, mails: Vec<Mail>, placement: &PlacementSim) {
        if mails.is_empty() {
            return;
        }
        if !self.running(ix, placement) {
            self.violations.push((
                "messaging.no_ghost",
                format!(
                    "{} mails handed to process {ix}, which has ended",
                    mails.len()
                ),
            ));
        }
        for mail in mails {
            match mail.body {
                MailBody::Data(data) => self.data(now, ix, mail.from, mail.class, &data, placement),
                MailBody::NameLost { name } => {
                    let tenant = self.procs[ix as usize].tenant;
                    if let Some(holders) = self.names.get_mut(&(tenant, name)) {
                        holders.retain(|h| *h != ix);
                    }
                }
                MailBody::External { data, .. } => {
                    self.data(now, ix, mail.from, mail.class, &data, placement);
                }
                MailBody::ExternalClosed { reason, .. } => {
                    // The connection ended with an error the process sees: its
                    // calls whose echo has not come are failed, not lost.
                    *self
                        .figures
                        .failed
                        .entry(format!("ExternalClosed({reason:?})"))
                        .or_default() += 1;
                    for f in self.flights.values_mut() {
                        if f.from == ix && f.kind == Kind::External && f.seen == 0 {
                            f.answered = Some(0);
                        }
                    }
                }
                MailBody::Down { .. } => {}
            }
        }
    }

    fn data(
        &mut self,
        now: Time,
        ix: u32,
        from: Pid,
        class: DistanceClass,
        data: &[u8],
        placement: &PlacementSim,
    ) {
        let Some(header) = data.get(..HEADER_BYTES) else {
            self.violations.push((
                "messaging.payload",
                format!("a {}-byte message", data.len()),
            ));
            return;
        };
        let word = |r: std::ops::Range<usize>| {
            let mut b = [0u8; 8];
            b[..r.len()].copy_from_slice(&header[r]);
            u64::from_le_bytes(b)
        };
        let (id, sent_at, tenant) = (word(0..8), word(8..16), word(16..20) as u32);
        let kind = Kind::from_code(header[20]);
        let path = header[21];
        let round_robin = header[22] == 1;
        let me = &self.procs[ix as usize];
        if TenantId(tenant) != me.tenant {
            self.violations.push((
                "messaging.tenant_isolation",
                format!(
                    "message {id} of tenant {tenant} reached process {ix} of {:?}",
                    me.tenant
                ),
            ));
        }
        let role = me.role;
        let any = self.last_any.entry((from, ix)).or_default();
        if *any > id {
            self.figures.order_violations_across_paths += 1;
        }
        *any = (*any).max(id);
        match self.last_seen.get(&(from, ix, path)) {
            Some(&(last, _)) if last == id => {
                self.figures.duplicates += 1;
                self.violations.push((
                    "messaging.no_duplicate",
                    format!("message {id} from {from} reached process {ix} twice"),
                ));
                return;
            }
            Some(&(last, _)) if last > id && kind == Some(Kind::Failover) => {
                // A failover send retried on this member after its primary died can
                // come after later sends that went straight here: counted, allowed.
                self.figures.failover_reordered += 1;
            }
            Some(&(last, _)) if last > id && kind == Some(Kind::Group) && path == 0 => {
                // The same for a one-member group send (anycast, round-robin,
                // least-loaded) retried on the next member after its first choice
                // turned out gone: counted, allowed.
                self.figures.group_retry_reordered += 1;
            }
            Some(&(last, last_kind)) if last > id => {
                self.figures.order_violations += 1;
                self.violations.push((
                    "messaging.fifo",
                    format!(
                        "message {id} ({kind:?}) from {from} reached process {ix} after {last} ({last_kind:?})"
                    ),
                ));
            }
            _ => {}
        }
        self.last_seen.insert((from, ix, path), (id, kind));
        self.figures.delivered += 1;
        if round_robin && kind == Some(Kind::Group) {
            self.figures.round_robin_received += 1;
            *self.round_robin.entry(ix).or_default() += 1;
        }
        if let (Some(Kind::Failover), Role::FailoverMember { group, rank }) = (kind, role) {
            let crash = self
                .cfg
                .failover
                .as_ref()
                .and_then(|f| f.crash_primaries_at);
            if let Some(crash) = crash
                .map(|c| Time::ZERO + c)
                .filter(|c| rank > 0 && now >= *c)
            {
                if self.takeover.insert(group) {
                    self.takeover_latency
                        .record(now.saturating_since(crash).as_nanos() as u64);
                }
            }
        }
        let ns = now.as_nanos().saturating_sub(sent_at);
        self.latency[class.index()]
            .get_or_insert_with(Histogram::default)
            .record(ns);
        if let Some(f) = self.flights.get_mut(&id) {
            if self.procs[f.from as usize].pid != Some(from) {
                self.violations.push((
                    "messaging.sender_stamp",
                    format!("message {id} stamped from {from}"),
                ));
            }
            f.seen += 1;
            f.missing.remove(&ix);
            if f.answered.is_some_and(|r| f.seen >= r) && f.missing.is_empty() {
                self.flights.remove(&id);
            }
        }
        match (kind, role) {
            (Some(Kind::Request), Role::RrServer { pair }) => {
                // The client of pair `pair` is process `pair`.
                self.send(
                    now,
                    ix,
                    Dest::Pid(from),
                    Kind::Response,
                    Some(pair),
                    placement,
                );
            }
            (Some(Kind::Response), Role::RrClient { .. }) => self.figures.rr_completed += 1,
            _ => {}
        }
    }

    /// The messaging invariants of a check: (name, result, whether it counts only
    /// once the cluster is settled). `merged`: the federation first converged a
    /// settle period ago (names are checked only then, and fan-out sends only if
    /// made after a check that said so).
    pub fn check(
        &mut self,
        now: Time,
        placement: &PlacementSim,
        up: &dyn Fn(NodeId) -> bool,
        merged: bool,
    ) -> Vec<(&'static str, Result<(), String>, bool)> {
        self.merged = merged;
        let mut out: Vec<_> = std::mem::take(&mut self.violations)
            .into_iter()
            .map(|(name, m)| (name, Err(m), false))
            .collect();
        let bound = self.cfg.fate_bound;
        let mut fate = Ok(());
        let mut delivered = Ok(());
        let mut failover = Ok(());
        let mut fan_out = Ok(());
        let mut stale = Vec::new();
        for (&id, f) in &mut self.flights {
            let age = now.saturating_since(f.at);
            if age < bound || f.flagged {
                if age > bound * 20 {
                    stale.push(id);
                }
                continue;
            }
            let sender = &self.procs[f.from as usize];
            if f.answered.is_some_and(|r| r > 0) && !f.missing.is_empty() {
                let procs = &self.procs;
                let runs = |ix: &u32| {
                    let p = &procs[*ix as usize];
                    p.pid
                        .zip(p.node)
                        .is_some_and(|(pid, node)| placement.host_of(pid) == Some(node))
                };
                if let Some(ix) = f.missing.iter().find(|ix| runs(ix)) {
                    f.flagged = true;
                    fan_out = Err(format!(
                        "{:?} send {id} answered ok, not received by running process {ix} after {age:?}",
                        f.kind
                    ));
                    continue;
                }
            }
            match f.answered {
                None if sender.node.is_some_and(up) => {
                    f.flagged = true;
                    fate = Err(format!(
                        "{:?} send {id} from process {} unanswered after {age:?}",
                        f.kind, f.from
                    ));
                }
                Some(r) if r > 0 && f.seen == 0 => {
                    f.flagged = true;
                    let receiver_runs = f.to.is_some_and(|to| {
                        let p = &self.procs[to as usize];
                        p.pid
                            .zip(p.node)
                            .is_some_and(|(pid, node)| placement.host_of(pid) == Some(node))
                    });
                    if f.kind == Kind::Failover {
                        self.figures.failover_lost += 1;
                        if self.cfg.reliable {
                            failover =
                                Err(format!("failover send {id} answered ok, never received"));
                        }
                    } else if receiver_runs {
                        delivered = Err(format!(
                            "send {id} answered ok, not received by running process {:?} after {age:?}",
                            f.to
                        ));
                    }
                }
                _ => {}
            }
        }
        for id in stale {
            self.flights.remove(&id);
        }
        out.push(("messaging.fate_reported", fate, true));
        out.push(("messaging.delivered", delivered, true));
        if self.cfg.reliable && self.cfg.failover.is_some() {
            out.push(("messaging.failover_lossless", failover, false));
        }
        let fan_outs = self.cfg.pubsub.is_some() || self.cfg.groups.is_some();
        if self.cfg.reliable && self.without_faults && fan_outs {
            out.push(("messaging.fanout_reliable", fan_out, false));
        } else if !self.cfg.reliable && self.faultless && fan_outs {
            out.push(("messaging.fanout_told", fan_out, false));
        }
        let mut names = Ok(());
        for ((tenant, name), holders) in &self.names {
            let live = holders
                .iter()
                .filter(|&&h| self.running(h, placement))
                .count();
            if live > 1 {
                names = Err(format!(
                    "{live} running processes of {tenant:?} hold {name:?}"
                ));
            }
        }
        if merged {
            out.push(("messaging.names_unique", names, true));
        }
        out
    }

    /// A wire message of messaging of kind `kind` and `len` bytes crossed a link of
    /// class `distance`.
    pub fn on_wire(&mut self, distance: Distance, len: u32, kind: &'static str) {
        self.figures.wire_messages += 1;
        if self.in_traffic {
            self.figures.wire_messages_in_traffic += 1;
            *self
                .figures
                .wire_in_traffic_by_kind
                .entry(kind)
                .or_default() += 1;
        }
        self.bytes_by_link[distance as usize] += u64::from(len);
    }

    /// The figures so far.
    #[must_use]
    pub fn figures(&self) -> MessagingFigures {
        let mut f = self.figures.clone();
        f.bytes_by_link = DISTANCES
            .iter()
            .zip(self.bytes_by_link)
            .filter(|(_, bytes)| *bytes > 0)
            .map(|(d, bytes)| (distance_name(*d), bytes))
            .collect();
        f.unanswered = self
            .flights
            .values()
            .filter(|f| f.answered.is_none())
            .count() as u64;
        f.latency = DistanceClass::ALL
            .iter()
            .zip(&self.latency)
            .filter_map(|(c, h)| Some((class_name(*c), LatencyFigures::from(h.as_ref()?))))
            .collect();
        f.lookup_cold_latency = LatencyFigures::from(&self.lookup_latency);
        f.round_robin_max_deviation = self.round_robin_deviation();
        f.failover_takeover = LatencyFigures::from(&self.takeover_latency);
        f.failover_takeover_max_ms = self.takeover_latency.quantile_ms(1.0);
        f
    }

    /// Over the groups whose members got round-robin sends, the largest relative
    /// deviation of one member's count from its group's mean (members that got none
    /// count as zero).
    fn round_robin_deviation(&self) -> Option<f64> {
        let mut per_group: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
        for (ix, p) in self.procs.iter().enumerate() {
            if let Role::GroupMember { group } = p.role {
                let n = self.round_robin.get(&(ix as u32)).copied().unwrap_or(0);
                per_group.entry(group).or_default().push(n);
            }
        }
        per_group
            .values()
            .filter(|counts| counts.iter().any(|c| *c > 0))
            .map(|counts| {
                let mean = counts.iter().sum::<u64>() as f64 / counts.len() as f64;
                counts
                    .iter()
                    .map(|c| (*c as f64 / mean - 1.0).abs())
                    .fold(0.0, f64::max)
            })
            .reduce(f64::max)
    }
}

/// A message of `len` bytes: the header, then zeros.
fn payload(len: usize, id: u64, now: Time, tenant: TenantId, kind: Kind) -> Vec<u8> {
    let mut data = vec![0u8; len.max(HEADER_BYTES)];
    data[0..8].copy_from_slice(&id.to_le_bytes());
    data[8..16].copy_from_slice(&now.as_nanos().to_le_bytes());
    data[16..20].copy_from_slice(&tenant.0.to_le_bytes());
    data[20] = kind.code();
    data
}

fn class_name(class: DistanceClass) -> &'static str {
    match class {
        DistanceClass::SameHost => "same_host",
        DistanceClass::SameGroup => "same_group",
        DistanceClass::SameDc => "same_dc",
        DistanceClass::External => "external",
    }
}

/// Every link class, in the order of its discriminant.
const DISTANCES: [Distance; 5] = [
    Distance::SameHost,
    Distance::SameRack,
    Distance::SameRow,
    Distance::SameDc,
    Distance::External,
];

fn distance_name(d: Distance) -> &'static str {
    match d {
        Distance::SameHost => "same_host",
        Distance::SameRack => "same_rack",
        Distance::SameRow => "same_row",
        Distance::SameDc => "same_dc",
        Distance::External => "external",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nefele_core::host::HostCommand;
    use nefele_core::Incarnation;

    /// The processes of `cfg`, each spawned on its own host (in the order of the
    /// spawn calls) and set up, their subscribes and joins confirmed; returns the
    /// sim, the placement and each process's pending `Recv` request.
    fn started(cfg: MessagingWorkload) -> (MessagingSim, PlacementSim, BTreeMap<u32, u64>) {
        let mut m = MessagingSim::new(cfg, Time::from_secs(60), 1);
        let hosts = m.procs.len() as u32;
        let mut placement = PlacementSim::new(hosts as usize);
        m.actions.clear();
        m.on_timer(
            Time::from_secs(3),
            MsgTimer::Spawn,
            &placement,
            &|_| true,
            hosts,
        );
        let calls: Vec<(NodeId, u64, ApiCall)> = std::iter::from_fn(|| m.pop_action())
            .filter_map(|a| match a {
                MsgAction::Call(n, r, c) => Some((n, r, *c)),
                _ => None,
            })
            .collect();
        assert_eq!(calls.len(), hosts as usize);
        for (i, (_, request, call)) in calls.into_iter().enumerate() {
            let ApiCall::Spawn { tenant, spec } = call else {
                panic!("{call:?}")
            };
            let node = NodeId(i as u32);
            let pid = Pid::new(node, Incarnation(1), 1);
            placement.execute(
                Time::from_secs(3),
                node,
                HostCommand::Start { pid, tenant, spec },
            );
            m.on_reply(
                Time::from_secs(3),
                request,
                ApiReply::Spawned(Ok(vec![pid])),
                &placement,
            );
        }
        m.on_timer(
            Time::from_secs(4),
            MsgTimer::Setup,
            &placement,
            &|_| true,
            hosts,
        );
        let mut recvs = BTreeMap::new();
        while let Some(a) = m.pop_action() {
            let MsgAction::Call(_, request, call) = a else {
                continue;
            };
            match *call {
                ApiCall::Recv { pid, .. } => {
                    recvs.insert(m.by_pid[&pid], request);
                }
                ApiCall::Subscribe { .. } | ApiCall::Join { .. } => {
                    let ok = ApiReply::Grouped(Ok(()));
                    m.on_reply(Time::from_secs(4), request, ok, &placement);
                }
                _ => {}
            }
        }
        (m, placement, recvs)
    }

    /// One request/response pair (processes 0 and 1, tenant 0) running on hosts 0
    /// and 1, set up; returns the sim, the placement and the pending `Recv` requests
    /// of the two processes.
    fn pair() -> (MessagingSim, PlacementSim, [u64; 2]) {
        let (m, placement, recvs) = started(MessagingWorkload {
            rr: Some(RrWorkload {
                pairs: 1,
                ..RrWorkload::default()
            }),
            ..MessagingWorkload::default()
        });
        (m, placement, [recvs[&0], recvs[&1]])
    }

    fn mail(from: Pid, id: u64, tenant: u32) -> Mail {
        Mail {
            from,
            class: DistanceClass::SameDc,
            seq: id,
            body: MailBody::Data(payload(
                64,
                id,
                Time::ZERO,
                TenantId(tenant),
                Kind::Response,
            )),
        }
    }

    fn failures(m: &mut MessagingSim, placement: &PlacementSim) -> Vec<&'static str> {
        m.check(Time::from_secs(5), placement, &|_| true, true)
            .into_iter()
            .filter(|(_, r, _)| r.is_err())
            .map(|(name, _, _)| name)
            .collect()
    }

    #[test]
    fn in_order_mail_of_the_tenant_passes_every_check() {
        let (mut m, placement, recvs) = pair();
        let server = m.procs[1].pid.unwrap();
        let mails = vec![mail(server, 1, 0), mail(server, 2, 0)];
        m.on_reply(
            Time::from_secs(5),
            recvs[0],
            ApiReply::Received(Ok(mails)),
            &placement,
        );
        assert_eq!(failures(&mut m, &placement), Vec::<&str>::new());
        assert_eq!(m.figures().delivered, 2);
    }

    #[test]
    fn reordered_duplicated_and_foreign_mail_are_violations() {
        let (mut m, placement, recvs) = pair();
        let server = m.procs[1].pid.unwrap();
        let mails = vec![
            mail(server, 5, 0),
            mail(server, 5, 0),
            mail(server, 3, 0),
            mail(server, 9, 1),
        ];
        m.on_reply(
            Time::from_secs(5),
            recvs[0],
            ApiReply::Received(Ok(mails)),
            &placement,
        );
        let f = failures(&mut m, &placement);
        for name in [
            "messaging.no_duplicate",
            "messaging.fifo",
            "messaging.tenant_isolation",
        ] {
            assert!(f.contains(&name), "{name} missing from {f:?}");
        }
    }

    #[test]
    fn mail_to_an_ended_process_is_a_ghost_delivery() {
        let (mut m, mut placement, recvs) = pair();
        let client = m.procs[0].pid.unwrap();
        let server = m.procs[1].pid.unwrap();
        placement.end(
            Time::from_secs(5),
            NodeId(0),
            client,
            nefele_core::host::ExitStatus::Code(0),
        );
        let mails = vec![mail(server, 1, 0)];
        m.on_reply(
            Time::from_secs(5),
            recvs[0],
            ApiReply::Received(Ok(mails)),
            &placement,
        );
        assert!(failures(&mut m, &placement).contains(&"messaging.no_ghost"));
    }

    #[test]
    fn an_unanswered_send_fails_fate_reported_after_the_bound() {
        let (mut m, placement, _) = pair();
        m.send(
            Time::from_secs(5),
            0,
            Dest::Pid(m.procs[1].pid.unwrap()),
            Kind::Request,
            Some(1),
            &placement,
        );
        let early = m.check(Time::from_secs(6), &placement, &|_| true, true);
        assert!(early.iter().all(|(_, r, _)| r.is_ok()));
        let late = m.check(Time::from_secs(9), &placement, &|_| true, true);
        assert!(late
            .iter()
            .any(|(n, r, _)| *n == "messaging.fate_reported" && r.is_err()));
    }

    /// Two topics of two subscribers (processes 1, 2 of tenant 0 and 4, 5 of
    /// tenant 1; 0 and 3 publish): a publication must reach its own topic's
    /// confirmed subscribers that run, a broadcast every running process of its
    /// tenant; one answered with success that misses a subscriber is a
    /// `messaging.fanout_told` violation, one answered `Partial` is not.
    #[test]
    fn a_fan_out_send_must_reach_exactly_the_confirmed_receivers_it_was_sent_to() {
        let (m, placement, recvs) = started(MessagingWorkload {
            pubsub: Some(PubSubWorkload {
                topics: 2,
                fanout_min: 2,
                fanout_max: 2,
                ..PubSubWorkload::default()
            }),
            ..MessagingWorkload::default()
        });
        let mut m = m.faultless(true);
        let receivers = |m: &MessagingSim, tenant: u32, dest: Dest| {
            let set = m.fan_out_receivers(TenantId(tenant), &dest, &placement);
            set.into_iter().collect::<Vec<_>>()
        };
        assert_eq!(receivers(&m, 0, Dest::Topic("t0".into())), vec![1, 2]);
        assert_eq!(receivers(&m, 1, Dest::Topic("t1".into())), vec![4, 5]);
        assert_eq!(receivers(&m, 1, Dest::Broadcast), vec![3, 4, 5]);
        assert_eq!(
            receivers(&m, 0, Dest::Topic("t9".into())),
            Vec::<u32>::new()
        );
        m.members.remove(&5);
        assert_eq!(
            receivers(&m, 1, Dest::Topic("t1".into())),
            vec![4],
            "unconfirmed"
        );

        let publisher = m.procs[0].pid.unwrap();
        let publish = |m: &mut MessagingSim, answer: Result<SendReceipt, SendError>| {
            m.send(
                Time::from_secs(5),
                0,
                Dest::Topic("t0".into()),
                Kind::Publish,
                None,
                &placement,
            );
            let id = m.next_id;
            let request = m.pending.keys().copied().max().unwrap();
            m.on_reply(
                Time::from_secs(5),
                request,
                ApiReply::Sent(answer),
                &placement,
            );
            id
        };
        // Sent before the trees of the boot merged: not held to reach everyone.
        let early = publish(&mut m, Ok(SendReceipt { reached: 2 }));
        m.merged = true;
        let id = publish(&mut m, Ok(SendReceipt { reached: 2 }));
        let partial = SendError::Partial {
            reached: 1,
            full: 1,
            overtaken: 0,
        };
        let told = publish(&mut m, Err(partial));
        // Only subscriber 1 gets them.
        let mails = [id, told]
            .into_iter()
            .map(|id| {
                let mut data = payload(64, id, Time::from_secs(5), TenantId(0), Kind::Publish);
                data[21] = 1;
                Mail {
                    from: publisher,
                    class: DistanceClass::SameDc,
                    seq: id,
                    body: MailBody::Data(data),
                }
            })
            .collect();
        let ok = ApiReply::Received(Ok(mails));
        m.on_reply(Time::from_secs(5), recvs[&1], ok, &placement);
        let failed: Vec<_> = m
            .check(Time::from_secs(9), &placement, &|_| true, true)
            .into_iter()
            .filter_map(|(name, r, _)| r.err().map(|e| (name, e)))
            .collect();
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert_eq!(failed[0].0, "messaging.fanout_told");
        assert!(
            failed[0].1.contains(&format!("send {id} answered ok")),
            "{failed:?}"
        );
        assert!(
            m.flights[&early].missing.is_empty(),
            "the early send is not held to reach anyone"
        );
    }
}
