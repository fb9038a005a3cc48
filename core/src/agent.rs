//! The agent: one per server, composing the services and routing between them.
//!
//! [`Agent`] is the single entry point of the core (DESIGN.md §3). It owns no
//! socket, thread or clock; the driver (the simulator, or `nefeled`) feeds it
//! inputs with the current time and carries its outputs out.
//!
//! Invariants kept here: outputs leave in the order the services produced them;
//! every message sent carries this agent's id and incarnation; a message from
//! another agent never panics the agent (it was decoded already, it is validated
//! before any service sees it, see [`crate::wire::validate`], and services ignore
//! what does not fit their state).

use crate::discovery::{Discovery, DiscoveryConfig, DiscoveryConfigError, DiscoveryOutput};
use crate::federation::{
    FedMsg, FedNotice, FedOutput, Federation, FederationConfig, FederationConfigError,
};
use crate::host::{ExitStatus, HostCommand, HostEvent, HostResources, ProcSpec, Signal};
use crate::ids::{Incarnation, NodeId, Pid, TenantId};
use crate::incarnations::Incarnations;
use crate::placement::api::{InfoError, KillError, ProcInfo, PsReply, SpawnError, WaitError};
use crate::placement::msg::PidOp;
use crate::placement::validate::PlacementConfigError;
use crate::placement::{Placement, PlacementConfig, PlacementOutput, SpawnKind};
use crate::time::Time;
use crate::wire::{Envelope, Message, Reject};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// Everything an agent is configured with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentConfig {
    /// Neighbour discovery.
    pub discovery: DiscoveryConfig,
    /// Federation instances, each with its own group sizes and timing (e.g. one for
    /// placement with groups of 4..16, another with groups of 16..32). Instance
    /// numbers must be distinct.
    pub federations: Vec<FederationConfig>,
    /// Placement and the namespace. They use the first federation instance.
    #[serde(default)]
    pub placement: PlacementConfig,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            discovery: DiscoveryConfig::default(),
            federations: vec![FederationConfig::default()],
            placement: PlacementConfig::default(),
        }
    }
}

/// Why an agent configuration is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentConfigError {
    /// A federation instance is misconfigured.
    #[error(transparent)]
    Federation(#[from] FederationConfigError),
    /// Two federation instances share a number.
    #[error("two federation instances are numbered {0}")]
    DuplicateInstance(u8),
    /// Discovery is misconfigured.
    #[error(transparent)]
    Discovery(#[from] DiscoveryConfigError),
    /// Placement is misconfigured.
    #[error(transparent)]
    Placement(#[from] PlacementConfigError),
    /// A host would hold back `Created` for longer than the requester waits for it.
    #[error("placement: presence_timeout must be shorter than create_timeout")]
    PresenceTimeout,
}

impl AgentConfig {
    /// Checks every parameter.
    pub fn validate(&self) -> Result<(), AgentConfigError> {
        self.discovery.validate()?;
        self.placement.validate()?;
        let mut seen = std::collections::BTreeSet::new();
        for f in &self.federations {
            f.validate()?;
            if !seen.insert(f.instance) {
                return Err(AgentConfigError::DuplicateInstance(f.instance));
            }
        }
        if self.placement.presence_timeout >= self.placement.create_timeout {
            return Err(AgentConfigError::PresenceTimeout);
        }
        Ok(())
    }
}

/// Who an agent is: its id in the cluster and its current life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Identity {
    /// Unique in the cluster.
    pub node: NodeId,
    /// Bumped by the host on every start, before the agent mints anything.
    pub incarnation: Incarnation,
}

/// A local client's request id, chosen by the driver to match replies to calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RequestId(pub u64);

/// A call from a local client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ApiCall {
    /// The agents this agent currently sees in its broadcast domain.
    Neighbours,
    /// Start one process.
    Spawn {
        /// The caller's tenant.
        tenant: TenantId,
        /// What to run.
        spec: ProcSpec,
    },
    /// Start `n` identical processes, atomically.
    NSpawn {
        /// The caller's tenant.
        tenant: TenantId,
        /// How many.
        n: u32,
        /// What to run.
        spec: ProcSpec,
    },
    /// Start different processes, atomically.
    CSpawn {
        /// The caller's tenant.
        tenant: TenantId,
        /// What to run.
        specs: Vec<ProcSpec>,
    },
    /// Deliver a signal to a process.
    Kill {
        /// The caller's tenant.
        tenant: TenantId,
        /// The process.
        pid: Pid,
        /// What to deliver.
        signal: Signal,
    },
    /// A process's entry.
    Info {
        /// The caller's tenant.
        tenant: TenantId,
        /// The process.
        pid: Pid,
    },
    /// The tenant's processes (those of this agent's level-0 group, for now).
    Ps {
        /// The caller's tenant.
        tenant: TenantId,
    },
    /// Answer when a process exits.
    Wait {
        /// The caller's tenant.
        tenant: TenantId,
        /// The process.
        pid: Pid,
    },
}

/// The answer to an [`ApiCall`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ApiReply {
    /// The live neighbours, in id order, with their incarnations.
    Neighbours(Vec<(NodeId, Incarnation)>),
    /// To `Spawn`, `NSpawn` and `CSpawn`: every pid, in the order of the specs.
    Spawned(Result<Vec<Pid>, SpawnError>),
    /// To `Kill`.
    Killed(Result<(), KillError>),
    /// To `Info`.
    Info(Result<ProcInfo, InfoError>),
    /// To `Wait`: how the process ended.
    Waited(Result<ExitStatus, WaitError>),
    /// To `Ps`.
    Ps(PsReply),
}

/// Something that happened to the agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// A message from another agent (already decoded by the transport driver).
    Message(Envelope),
    /// The time reported by [`Agent::next_timeout`] has come.
    Timeout,
    /// The host reported something.
    Host(HostEvent),
    /// A local client called the API.
    Api {
        /// The driver's id for this call; the reply carries it back.
        request: RequestId,
        /// The call.
        call: ApiCall,
    },
}

/// Something the agent asks the driver to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Send `envelope` to the agent `to`.
    Send {
        /// The destination agent.
        to: NodeId,
        /// The message.
        envelope: Envelope,
    },
    /// Send `envelope` to every agent of this agent's broadcast domain.
    Broadcast {
        /// The message.
        envelope: Envelope,
    },
    /// Answer the local client's call `request`.
    ApiReply {
        /// The call being answered.
        request: RequestId,
        /// The answer.
        reply: ApiReply,
    },
    /// Have the host start or kill a process.
    Host(HostCommand),
    /// Something worth logging happened (the simulator also counts these).
    Notice(Notice),
}

/// Something worth logging.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notice {
    /// A federation instance noticed a suspicion or a removal.
    Federation {
        /// The instance.
        instance: u8,
        /// What it noticed.
        notice: FedNotice,
    },
    /// A message from `from` failed validation and was dropped (see [`Reject`]).
    Rejected {
        /// The sender the envelope names.
        from: NodeId,
        /// Why.
        reason: Reject,
    },
    /// A spawn request was placed.
    Placed {
        /// Its processes.
        processes: u32,
        /// Whether all landed in the requester's level-0 group.
        local: bool,
    },
}

/// One Nefele agent.
///
/// Call order (the driver's loop):
/// 1. [`Agent::new`] at boot, with the boot time;
/// 2. [`Agent::handle`] for every input, with the current time;
/// 3. after each `handle`, drain [`Agent::poll_output`] until `None`;
/// 4. when the time given by [`Agent::next_timeout`] comes, `handle(now, Input::Timeout)`.
///
/// Time must not go backwards between calls.
#[derive(Debug)]
pub struct Agent {
    identity: Identity,
    last_now: Time,
    resources: HostResources,
    discovery: Discovery,
    neighbours_seen: u64,
    federations: Vec<Federation>,
    placement: Placement,
    outputs: VecDeque<Output>,
    /// The newest life of each peer heard from (messages of older lives are dropped).
    incarnations: Incarnations,
    /// The earliest deadline of all services, refreshed at the end of every call.
    next_deadline: Option<Time>,
}

impl Agent {
    /// A freshly booted agent. Its RNG, and each service's, derive from `seed` alone.
    /// `config` must have passed [`AgentConfig::validate`].
    #[must_use]
    pub fn new(config: AgentConfig, identity: Identity, seed: u64, now: Time) -> Self {
        let mut root = ChaCha8Rng::seed_from_u64(seed);
        let discovery_rng = ChaCha8Rng::seed_from_u64(root.next_u64());
        let placement = Placement::new(identity.node, identity.incarnation, config.placement);
        let federations = config
            .federations
            .into_iter()
            .map(|f| Federation::new(identity.node, f, ChaCha8Rng::seed_from_u64(root.next_u64())))
            .collect();
        let mut agent = Agent {
            identity,
            last_now: now,
            resources: HostResources::default(),
            discovery: Discovery::new(identity.node, config.discovery, discovery_rng),
            neighbours_seen: 0,
            federations,
            placement,
            outputs: VecDeque::new(),
            incarnations: Incarnations::default(),
            next_deadline: None,
        };
        agent.discovery.boot(now);
        for f in &mut agent.federations {
            f.boot(now);
        }
        agent.route_discovery();
        agent.route_federations();
        agent.end_of_call();
        agent
    }

    /// Leaves the cluster cleanly (before a shutdown): hands over what this agent
    /// leads and tells its groups it is gone.
    pub fn leave(&mut self, now: Time) {
        for f in &mut self.federations {
            f.leave(now);
        }
        self.route_federations();
        self.end_of_call();
    }

    /// Reacts to `input` at time `now`.
    pub fn handle(&mut self, now: Time, input: Input) {
        debug_assert!(now >= self.last_now, "time went backwards");
        self.last_now = self.last_now.max(now);
        match input {
            Input::Message(envelope) => self.handle_message(now, envelope),
            Input::Timeout => {
                self.discovery.handle_timeout(now);
                self.route_discovery();
                for f in &mut self.federations {
                    if f.next_timeout().is_some_and(|t| t <= now) {
                        f.handle_timeout(now);
                    }
                }
                self.route_federations();
                if self.placement.next_timeout().is_some_and(|t| t <= now) {
                    self.placement.handle_timeout(now, self.federations.first());
                }
            }
            Input::Host(event) => self.handle_host(now, event),
            Input::Api { request, call } => self.handle_api(now, request, call),
        }
        self.route_placement();
        self.end_of_call();
    }

    fn handle_message(&mut self, now: Time, envelope: Envelope) {
        if let Err(reason) = self.incarnations.admit(&envelope) {
            let from = envelope.from;
            let notice = Notice::Rejected { from, reason };
            return self.outputs.push_back(Output::Notice(notice));
        }
        let Envelope {
            from,
            incarnation,
            body,
        } = envelope;
        match body {
            Message::Discovery(msg) => {
                self.discovery.handle_message(now, from, incarnation, &msg);
                self.route_discovery();
            }
            Message::Federation(FedMsg { instance, body }) => {
                // A message for an instance this agent does not run is ignored.
                if let Some(f) = self
                    .federations
                    .iter_mut()
                    .find(|f| f.config().instance == instance)
                {
                    f.handle_message(now, from, body);
                    self.route_federations();
                }
            }
            Message::Placement(msg) => {
                self.placement
                    .handle_message(now, self.federations.first(), from, msg);
            }
        }
    }

    fn handle_host(&mut self, now: Time, event: HostEvent) {
        // Placement keeps its own account of what its processes commit; the summary the
        // federation carries up is what placement has neither committed nor reserved.
        if let HostEvent::Resources(resources) = &event {
            self.resources = resources.clone();
        }
        self.placement.handle_host(now, event);
    }

    fn handle_api(&mut self, now: Time, request: RequestId, call: ApiCall) {
        let fed = self.federations.first();
        let p = &mut self.placement;
        match call {
            ApiCall::Neighbours => {
                let reply = ApiReply::Neighbours(
                    self.discovery
                        .neighbours()
                        .map(|(id, n)| (id, n.incarnation))
                        .collect(),
                );
                self.outputs.push_back(Output::ApiReply { request, reply });
            }
            ApiCall::Spawn { tenant, spec } => {
                p.handle_spawn(now, fed, request, tenant, SpawnKind::Spawn(spec));
            }
            ApiCall::NSpawn { tenant, n, spec } => {
                p.handle_spawn(now, fed, request, tenant, SpawnKind::NSpawn(n, spec));
            }
            ApiCall::CSpawn { tenant, specs } => {
                p.handle_spawn(now, fed, request, tenant, SpawnKind::CSpawn(specs));
            }
            ApiCall::Kill {
                tenant,
                pid,
                signal,
            } => p.handle_pid_call(now, request, tenant, pid, PidOp::Kill(signal)),
            ApiCall::Info { tenant, pid } => {
                p.handle_pid_call(now, request, tenant, pid, PidOp::Info);
            }
            ApiCall::Wait { tenant, pid } => {
                p.handle_pid_call(now, request, tenant, pid, PidOp::Wait);
            }
            ApiCall::Ps { tenant } => p.handle_ps(now, fed, request, tenant),
        }
    }

    fn route_placement(&mut self) {
        while let Some(out) = self.placement.poll_output() {
            let output = match out {
                PlacementOutput::Send(to, msg) => Output::Send {
                    to,
                    envelope: self.envelope(Message::Placement(msg)),
                },
                PlacementOutput::Host(command) => Output::Host(command),
                PlacementOutput::Reply(request, reply) => Output::ApiReply { request, reply },
                PlacementOutput::Placed { processes, local } => {
                    Output::Notice(Notice::Placed { processes, local })
                }
            };
            self.outputs.push_back(output);
        }
        let free = self.placement.free();
        let tenants = self.placement.own_tenants();
        for f in &mut self.federations {
            f.set_own_summary(u64::from(free.cpu_millicores), free.memory_bytes);
            f.set_own_tenants(tenants);
        }
        // Placement walks the first tree: registrations are with its leaders.
        if let Some(f) = self.federations.first_mut() {
            f.set_registered_tenants(self.placement.registered_tenants());
        }
    }

    fn route_discovery(&mut self) {
        while let Some(out) = self.discovery.poll_output() {
            let output = match out {
                DiscoveryOutput::Broadcast(msg) => Output::Broadcast {
                    envelope: self.envelope(Message::Discovery(msg)),
                },
                DiscoveryOutput::Send(to, msg) => Output::Send {
                    to,
                    envelope: self.envelope(Message::Discovery(msg)),
                },
            };
            self.outputs.push_back(output);
        }
        if self.discovery.changes() != self.neighbours_seen {
            self.neighbours_seen = self.discovery.changes();
            let neighbours: Vec<NodeId> = self.discovery.neighbours().map(|(id, _)| id).collect();
            for f in &mut self.federations {
                f.set_neighbours(neighbours.clone());
            }
        }
    }

    fn route_federations(&mut self) {
        for i in 0..self.federations.len() {
            let instance = self.federations[i].config().instance;
            while let Some(out) = self.federations[i].poll_output() {
                let output = match out {
                    FedOutput::Send(to, body) => Output::Send {
                        to,
                        envelope: self.envelope(Message::Federation(FedMsg { instance, body })),
                    },
                    FedOutput::Notice(notice) => {
                        if let FedNotice::Removed { node, level: 0 } = notice {
                            self.placement.host_removed(self.federations.first(), node);
                        }
                        Output::Notice(Notice::Federation { instance, notice })
                    }
                };
                self.outputs.push_back(output);
            }
        }
    }

    fn envelope(&self, body: Message) -> Envelope {
        Envelope {
            from: self.identity.node,
            incarnation: self.identity.incarnation,
            body,
        }
    }

    /// The next output, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When `handle(now, Input::Timeout)` must be called next.
    #[must_use]
    pub fn next_timeout(&self) -> Option<Time> {
        self.next_deadline
    }

    fn refresh_deadline(&mut self) {
        self.next_deadline = self
            .federations
            .iter()
            .filter_map(Federation::next_timeout)
            .chain(self.discovery.next_timeout())
            .chain(self.placement.next_timeout())
            .min();
    }

    /// This agent's id and life.
    #[must_use]
    pub fn identity(&self) -> Identity {
        self.identity
    }

    /// The host capacity last reported.
    #[must_use]
    pub fn resources(&self) -> &HostResources {
        &self.resources
    }

    /// Placement and the namespace, for inspection by checkers and tests.
    #[must_use]
    pub fn placement(&self) -> &Placement {
        &self.placement
    }

    /// Neighbour discovery, for inspection by checkers and tests.
    #[must_use]
    pub fn discovery(&self) -> &Discovery {
        &self.discovery
    }

    /// The federation instances, for inspection by checkers and tests.
    #[must_use]
    pub fn federations(&self) -> &[Federation] {
        &self.federations
    }

    /// Every call ends here: refresh the cached deadline, then check the invariants.
    fn end_of_call(&mut self) {
        self.refresh_deadline();
        debug_assert!(self.placement.invariants(), "placement accounting broken");
        debug_assert!(
            self.discovery
                .neighbours()
                .all(|(id, _)| id != self.identity.node),
            "an agent is never its own neighbour"
        );
        debug_assert!(
            self.next_timeout().is_some(),
            "a booted agent always has a heartbeat pending"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::DiscoveryMsg;

    fn agent(node: u32) -> Agent {
        Agent::new(
            AgentConfig::default(),
            Identity {
                node: NodeId(node),
                incarnation: Incarnation(1),
            },
            7,
            Time::ZERO,
        )
    }

    #[test]
    fn a_presence_timeout_past_the_create_timeout_is_refused() {
        let mut config = AgentConfig::default();
        assert_eq!(config.validate(), Ok(()));
        config.placement.presence_timeout = config.placement.create_timeout;
        assert_eq!(config.validate(), Err(AgentConfigError::PresenceTimeout));
    }

    #[test]
    fn boot_broadcasts_an_announce_with_identity() {
        let mut a = agent(3);
        let out = a.poll_output().unwrap();
        let Output::Broadcast { envelope } = out else {
            panic!("expected a broadcast, got {out:?}")
        };
        assert_eq!(envelope.from, NodeId(3));
        assert_eq!(envelope.incarnation, Incarnation(1));
        assert_eq!(envelope.body, Message::Discovery(DiscoveryMsg::Announce));
        assert!(a.poll_output().is_none());
    }

    #[test]
    fn api_lists_neighbours() {
        let mut a = agent(1);
        while a.poll_output().is_some() {}
        let hb = Envelope {
            from: NodeId(2),
            incarnation: Incarnation(4),
            body: Message::Discovery(DiscoveryMsg::Heartbeat),
        };
        a.handle(Time::from_millis(10), Input::Message(hb));
        a.handle(
            Time::from_millis(11),
            Input::Api {
                request: RequestId(9),
                call: ApiCall::Neighbours,
            },
        );
        assert_eq!(
            a.poll_output(),
            Some(Output::ApiReply {
                request: RequestId(9),
                reply: ApiReply::Neighbours(vec![(NodeId(2), Incarnation(4))]),
            })
        );
    }

    #[test]
    fn same_seed_same_outputs() {
        let run = || {
            let mut a = agent(1);
            let mut log = Vec::new();
            for _ in 0..5 {
                let t = a.next_timeout().unwrap();
                a.handle(t, Input::Timeout);
                log.push(t);
                while a.poll_output().is_some() {}
            }
            log
        };
        assert_eq!(run(), run());
    }
}
